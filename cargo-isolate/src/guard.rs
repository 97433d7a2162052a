//! Nothing outlives the runner: a guard process that kills the process
//! group of every test still running if the runner dies, even by SIGKILL.
//!
//! The guard is this same binary, started once (`cargo-isolate isolate
//! guard`, a hidden subcommand) in a process group of its own, so a Ctrl-C
//! at the terminal does not reach it. The runner tells it on a pipe which
//! groups to protect (`+PGID`) and which are done (`-PGID`, sent before the
//! group's leader is reaped, so the guard never holds a group id that may
//! have been reused). When the pipe closes, whether the runner finished or
//! died, the guard kills what is left and exits.
//!
//! Tests are spawned with `posix_spawn` this way: a death signal set in
//! each child (`PR_SET_PDEATHSIG`) would need a hook between fork and exec,
//! which makes the standard library fork the whole runner instead.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
        self.tell('+', pgid);
    }

    /// `pgid` is done: its leader is about to be reaped.
    pub(crate) fn release(&self, pgid: Pid) {
        self.tell('-', pgid);
    }

    fn tell(&self, sign: char, pgid: Pid) {
        let mut pipe = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pipe) = pipe.as_mut() {
            // If the guard is gone, the run goes on unguarded.
            let _ = writeln!(pipe, "{sign}{pgid}");
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
    let mut protected = HashSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, pgid) = line.split_at(line.len().min(1));
        let Ok(pgid) = pgid.parse::<i32>() else {
            continue;
        };
        match sign {
            "+" => protected.insert(pgid),
            "-" => protected.remove(&pgid),
            _ => continue,
        };
    }
    for pgid in protected {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    0
}
