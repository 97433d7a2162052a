//! Nothing outlives the runner: a guard process that kills the process
//! group of every test still running if the runner dies, even by SIGKILL.
//!
//! The guard is this same binary, started once (`cargo-isolate isolate
//! guard`, a hidden subcommand) in a process group of its own, so a Ctrl-C
//! at the terminal does not reach it. The runner tells it on a pipe which
//! groups to protect (`+PGID`) and which are done (`-PGID`, sent before the
//! group's leader is reaped, so the guard never holds a group id that may
//! have been reused), and the run's cgroup where there is one (`cPATH`,
//! and `r` once the runner has left and removed it). When the pipe closes,
//! whether the runner finished or died, the guard kills what is left (in
//! the cgroup: every process but the runner, however it detached), removes
//! the cgroup once the runner is gone, and exits.
//!
//! Tests are spawned with `posix_spawn` this way: a death signal set in
//! each child (`PR_SET_PDEATHSIG`) would need a hook between fork and exec,
//! which makes the standard library fork the whole runner instead.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::procfs::{listed_ids, thread_group};

/// The runner's side of the guard.
pub(crate) struct Guard {
    /// The guard's stdin; closing it ends the guard.
    pipe: Mutex<Option<ChildStdin>>,
    process: Child,
}

impl Guard {
    /// Starts the guard.
    ///
    /// # Errors
    ///
    /// When this binary cannot be started again.
    pub(crate) fn start() -> io::Result<Guard> {
        let mut process = Command::new(std::env::current_exe()?)
            .args(["isolate", "guard"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = process.stdin.take();
        Ok(Guard {
            pipe: Mutex::new(pipe),
            process,
        })
    }

    /// Has the guard kill `pgid` if the runner dies.
    pub(crate) fn protect(&self, pgid: Pid) {
        self.tell(&format!("+{pgid}"));
    }

    /// `pgid` is done: its leader is about to be reaped.
    pub(crate) fn release(&self, pgid: Pid) {
        self.tell(&format!("-{pgid}"));
    }

    /// Has the guard kill every process in the cgroups under `path`, and
    /// remove them once the runner is gone, if the runner dies.
    pub(crate) fn contain(&self, path: &Path) {
        self.tell(&format!("c{}", path.display()));
    }

    /// The runner removed its cgroups itself.
    pub(crate) fn release_cgroups(&self) {
        self.tell("r");
    }

    /// The guard's pid.
    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.process.id()).unwrap_or(i32::MAX))
    }

    fn tell(&self, line: &str) {
        let mut pipe = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pipe) = pipe.as_mut() {
            // If the guard is gone, the run goes on unguarded.
            let _ = writeln!(pipe, "{line}");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Every group was released: closing the pipe ends the guard.
        drop(
            self.pipe
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let _ = self.process.wait();
    }
}

/// The guard process: reads the runner's pipe until it closes, then kills
/// every group still protected.
pub(crate) fn serve() -> i32 {
    let runner = nix::unistd::getppid();
    let mut protected = HashSet::new();
    let mut cgroup: Option<PathBuf> = None;
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, rest) = line.split_at(line.len().min(1));
        match sign {
            "c" => cgroup = Some(PathBuf::from(rest)),
            "r" => cgroup = None,
            "+" | "-" => {
                let Ok(pgid) = rest.parse::<i32>() else {
                    continue;
                };
                if sign == "+" {
                    protected.insert(pgid);
                } else {
                    protected.remove(&pgid);
                }
            }
            _ => {}
        }
    }
    for pgid in protected {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    if let Some(cgroup) = cgroup {
        empty_cgroups(&cgroup, runner);
    }
    0
}

/// Kills every process in the cgroup `path` and the cgroups below it but
/// the `runner`, which is dead or dying, and removes them once they are
/// empty. (Their parent, the runner, is gone or going: whoever inherits
/// them reaps them.)
fn empty_cgroups(path: &Path, runner: Pid) {
    let mut cgroups = vec![path.to_owned()];
    if let Ok(entries) = std::fs::read_dir(path) {
        cgroups.extend(
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_dir()),
        );
    }
    let deadline = Instant::now() + CLEAN_UP;
    while Instant::now() < deadline {
        for cgroup in &cgroups {
            // A threaded cgroup lists threads; a SIGKILL to any thread
            // kills its whole process.
            for tid in listed_ids(&cgroup.join("cgroup.threads")) {
                if thread_group(tid) != Some(runner) {
                    let _ = nix::sys::signal::kill(tid, Signal::SIGKILL);
                }
            }
        }
        // A cgroup goes once it is empty, the runner's last thread gone.
        for cgroup in cgroups.iter().rev() {
            let _ = std::fs::remove_dir(cgroup);
        }
        if !path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long the guard waits for the run's cgroups to empty.
const CLEAN_UP: Duration = Duration::from_secs(10);
