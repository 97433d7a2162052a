//! Helpers shared by the end-to-end tests.

use std::time::{Duration, Instant};

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
