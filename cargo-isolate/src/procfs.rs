//! What `/proc` and cgroup files say about processes, for the containment
//! of a run and for its guard: the runner's children, a process's state
//! and group, the process a thread belongs to, the ids a cgroup lists.

use std::fs;
use std::path::Path;

use nix::unistd::Pid;

/// The process that thread `tid` belongs to, while it is there to ask.
pub(crate) fn thread_group(tid: Pid) -> Option<Pid> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let tgid = status.lines().find_map(|line| line.strip_prefix("Tgid:"))?;
    Some(Pid::from_raw(tgid.trim().parse().ok()?))
}

/// The pids (or thread ids) a cgroup file such as `cgroup.threads` lists.
pub(crate) fn listed_ids(path: &Path) -> Vec<Pid> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok().map(Pid::from_raw))
        .collect()
}

/// This process's children, of all its threads.
pub(crate) fn own_children() -> Vec<Pid> {
    let Ok(threads) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok().map(Pid::from_raw))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The state letter (`Z` for a zombie) and the process group of `pid`,
/// from `/proc/PID/stat`; `None` once it is gone.
pub(crate) fn state_and_group(pid: Pid) -> Option<(char, Pid)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, Pid::from_raw(group)))
}
