//! What a run leaves behind, seen from the test process that started it,
//! shared by the hostile and soak tests.
//!
//! The test process makes itself a subreaper: a process of a run that
//! outlives its parent is handed to it, alive or as a zombie, rather than
//! to init, where nothing would show it. Once a run is over, [`children`]
//! lists what it left. Runs take turns ([`one_run_at_a_time`]), so that
//! what is found is the run's, and its time and memory its own.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Waits for the runs of other tests of this binary to end, and makes this
/// process a subreaper; the run may start when the guard is returned.
pub(crate) fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    static RUNS: Mutex<()> = Mutex::new(());
    let turn = RUNS.lock().unwrap_or_else(PoisonError::into_inner);
    nix::sys::prctl::set_child_subreaper(true).expect("become a subreaper");
    turn
}

/// A process, as `/proc/PID/stat` shows it.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) pid: i32,
    pub(crate) parent: i32,
    /// `R`, `S`, `Z`...
    pub(crate) state: char,
    /// Its command name.
    pub(crate) name: String,
}

impl Process {
    /// Process `pid`, if it is there.
    pub(crate) fn read(pid: i32) -> Option<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let mut fields = stat[close + 1..].split_whitespace();
        Some(Process {
            pid,
            state: fields.next()?.chars().next()?,
            parent: fields.next()?.parse().ok()?,
            name: stat[open + 1..close].to_owned(),
        })
    }

    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, state {}, child of {})",
            self.pid, self.name, self.state, self.parent
        )
    }
}

/// `processes`, one after another, for a message.
pub(crate) fn list(processes: &[Process]) -> String {
    let listed: Vec<String> = processes.iter().map(ToString::to_string).collect();
    format!("[{}]", listed.join(", "))
}

/// The children of process `pid`, of all its threads.
pub(crate) fn children_of(pid: u32) -> Vec<Process> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| Process::read(child.parse().ok()?))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The children of this process, alive or zombie: once the runs it
/// started are over and reaped, whatever they left behind.
pub(crate) fn children() -> Vec<Process> {
    children_of(std::process::id())
}

/// Marks every descriptor above 2 close-on-exec in the process `command`
/// starts, just before it runs its program: what this process inherited
/// from whoever started it does not reach the run, so that a descriptor a
/// test finds it should not hold is the runner's.
pub(crate) fn without_stray_descriptors(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec, where it makes only
    // `fcntl` calls, which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            for fd in 3..1024 {
                nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    command
}

/// Runs `command` to its end, without stray descriptors and in a process
/// group of its own, with its output captured; returns it and how long the
/// command ran. Panics if it runs longer than `limit` (after killing its
/// group), or if something it left holds its output open.
pub(crate) fn run_to_end(mut command: Command, limit: Duration) -> (Output, Duration) {
    without_stray_descriptors(&mut command)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {command:?}: {error}"));
    let (sender, received) = mpsc::channel();
    let readers = [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn Read + Send>),
    ];
    for (index, reader) in readers.into_iter().enumerate() {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut reader) = reader {
                let _ = reader.read_to_end(&mut bytes);
            }
            let _ = sender.send((index, bytes));
        });
    }
    let group = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    let deadline = started + limit;
    let (status, took): (ExitStatus, Duration) = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break (status, started.elapsed());
        }
        if Instant::now() > deadline {
            let _ = killpg(group, Signal::SIGKILL);
            let status = child.wait().expect("wait for the command");
            panic!("{command:?} ran longer than {limit:?} and was killed ({status})");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut output = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    for _ in 0..2 {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(10));
        let (index, bytes) = received.recv_timeout(wait).unwrap_or_else(|_| {
            panic!(
                "{command:?} ended ({status}), but something holds its output open: {}",
                list(&children())
            )
        });
        if index == 0 {
            output.stdout = bytes;
        } else {
            output.stderr = bytes;
        }
    }
    (output, took)
}
