//! Helpers shared by the end-to-end tests.

use std::time::{Duration, Instant};

use isolate_harness::{Error, Termination};
use libtest_mimic::Trial;

/// Whether process `pid` runs: a zombie does not, and a reaped process has
/// no `/proc` entry.
pub(crate) fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => false,
    }
}

/// Whether `pid` stops running within ten seconds: SIGKILL is sent at once,
/// but a killed process takes a moment to exit.
pub(crate) fn stops_running(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// What `what` returns, run on a thread of its own; a failure, not a hung
/// test, if it takes longer than `limit`.
pub(crate) fn within<R: Send + 'static>(
    limit: Duration,
    what: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(what()));
    finished
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not end within {limit:?}"))
}

/// The termination of a call that should have ended its child.
pub(crate) fn terminated<R: std::fmt::Debug>(result: Result<R, Error>) -> Termination {
    match result {
        Err(Error::Terminated(termination)) => termination,
        other => panic!("expected the child to be terminated, got {other:?}"),
    }
}

/// The names of the functions in a crash's backtrace.
pub(crate) fn backtrace_functions(termination: &Termination) -> Vec<String> {
    let crash = termination.crash().expect("the crash handler reported");
    crash
        .backtrace
        .frames
        .iter()
        .filter_map(|frame| frame.function.clone())
        .collect()
}

/// Each `(name, check)` as a libtest-mimic trial, which passes when its
/// check returns.
pub(crate) fn trials(checks: impl IntoIterator<Item = (&'static str, fn())>) -> Vec<Trial> {
    checks
        .into_iter()
        .map(|(name, check)| {
            Trial::test(name, move || {
                check();
                Ok(())
            })
        })
        .collect()
}
