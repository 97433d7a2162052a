//! The watchdog, which keeps the running tests' timeouts and signals their
//! process groups, and the reaping of a test's process with whatever it
//! left behind (see [`super::contain`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::contain::Containment;
use super::lock;
use crate::guard::Guard;

/// Time between SIGTERM and SIGKILL for a test that ran out of time.
pub(super) const GRACE_PERIOD: Duration = Duration::from_secs(1);

/// How a test's process ended, reaped with what it left behind.
pub(super) struct Ended {
    pub(super) status: ExitStatus,
    pub(super) fired: Fired,
    /// Processes it left running, killed and reaped.
    pub(super) leaked: usize,
}

/// Takes `child`, which has exited but is not reaped (so its group id is
/// still ours), off the watchdog; kills and reaps what it left behind, and
/// its group; then reaps it.
pub(super) fn reap(
    child: &mut std::process::Child,
    pid: Pid,
    watchdog: &Watchdog,
) -> io::Result<Ended> {
    let fired = watchdog.forget(pid);
    // Counted while they all still run; then the group goes, with any
    // process that joined it since.
    let mut known = watchdog.known();
    known.insert(pid);
    let leaked = watchdog.containment.collect(pid, &known);
    let _ = killpg(pid, NixSignal::SIGKILL);
    let status = child.wait()?;
    Ok(Ended {
        status,
        fired,
        leaked,
    })
}

/// Waits for `pid` to exit without reaping it: its group id stays ours
/// until the leader is reaped, so nothing signalled meanwhile can reach a
/// stranger.
pub(super) fn wait_unreaped(pid: Pid) -> io::Result<()> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => {}
            result => return result.map(drop).map_err(io::Error::from),
        }
    }
}

/// Whether the watchdog signalled a process group, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fired {
    No,
    TimedOut,
    Interrupted,
}

/// The running tests' process groups, and their timeouts, kept by one
/// thread.
pub(super) struct Watchdog {
    pub(super) shared: Arc<WatchdogShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Kills the watched groups if this runner dies.
    guard: Option<Guard>,
    /// How what tests leave behind is found.
    pub(super) containment: Containment,
}

pub(super) struct WatchdogShared {
    state: Mutex<WatchdogState>,
    changed: Condvar,
}

#[derive(Default)]
struct WatchdogState {
    /// Process groups of running tests.
    watched: HashMap<Pid, Watch>,
    stopping: bool,
}

struct Watch {
    /// When to signal the group next, if it has a timeout.
    at: Option<Instant>,
    fired: Fired,
}

impl WatchdogShared {
    /// Signals every running test's group (an interruption of the run).
    pub(super) fn signal_all(&self, signal: NixSignal) {
        let mut state = lock(&self.state);
        for (pid, watch) in &mut state.watched {
            // The worker forgets the pid before reaping it, and cannot
            // while this lock is held.
            let _ = killpg(*pid, signal);
            watch.fired = Fired::Interrupted;
            watch.at = None;
        }
    }
}

impl Watchdog {
    /// Starts the watchdog, the guard, and the containment of `lanes`
    /// threads that start tests.
    pub(super) fn start(lanes: usize) -> Watchdog {
        let shared = Arc::new(WatchdogShared {
            state: Mutex::new(WatchdogState::default()),
            changed: Condvar::new(),
        });
        let keeper = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let mut state = lock(&keeper.state);
            while !state.stopping {
                let now = Instant::now();
                for (pid, watch) in &mut state.watched {
                    if watch.at.is_some_and(|at| at <= now) {
                        let signal = match watch.fired {
                            Fired::No => NixSignal::SIGTERM,
                            _ => NixSignal::SIGKILL,
                        };
                        let _ = killpg(*pid, signal);
                        watch.fired = Fired::TimedOut;
                        watch.at = (signal == NixSignal::SIGTERM).then_some(now + GRACE_PERIOD);
                    }
                }
                let next = state.watched.values().filter_map(|watch| watch.at).min();
                let wait = next.map_or(Duration::from_secs(3600), |at| {
                    at.saturating_duration_since(Instant::now())
                });
                state = keeper
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        });
        // Without a guard, a run killed outright may leave its tests. It
        // starts before the containment, outside the run's cgroups.
        let guard = Guard::start().ok();
        let containment = Containment::start(lanes);
        if let (Some(guard), Containment::Cgroups(cgroups)) = (&guard, &containment) {
            guard.contain(cgroups.path());
        }
        Watchdog {
            shared,
            thread: Some(thread),
            guard,
            containment,
        }
    }

    /// The processes of ours that are no test's leftovers: the running
    /// tests' and the guard.
    pub(super) fn known(&self) -> HashSet<Pid> {
        let mut known: HashSet<Pid> = lock(&self.shared.state).watched.keys().copied().collect();
        known.extend(self.guard.as_ref().map(Guard::pid));
        known
    }

    /// Starts watching the group of `pid`, with a timeout if given.
    pub(super) fn watch(&self, pid: Pid, timeout: Option<Duration>) {
        if let Some(guard) = &self.guard {
            guard.protect(pid);
        }
        lock(&self.shared.state).watched.insert(
            pid,
            Watch {
                at: timeout.map(|timeout| Instant::now() + timeout),
                fired: Fired::No,
            },
        );
        self.shared.changed.notify_one();
    }

    /// Gives `pid` a fresh `timeout`, unless it was signalled already.
    pub(super) fn rearm(&self, pid: Pid, timeout: Duration) {
        if let Some(watch) = lock(&self.shared.state).watched.get_mut(&pid)
            && watch.fired == Fired::No
        {
            watch.at = Some(Instant::now() + timeout);
        }
    }

    /// Stops watching `pid`, before it is reaped; says whether and why it
    /// was signalled.
    pub(super) fn forget(&self, pid: Pid) -> Fired {
        if let Some(guard) = &self.guard {
            guard.release(pid);
        }
        lock(&self.shared.state)
            .watched
            .remove(&pid)
            .map_or(Fired::No, |watch| watch.fired)
    }

    /// Stops the watchdog, kills and reaps whatever tests left that is
    /// still around, and returns how many processes that was.
    pub(super) fn stop(mut self) -> usize {
        lock(&self.shared.state).stopping = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let known = self.known();
        let swept = self.containment.finish(&known);
        if let Some(guard) = &self.guard {
            guard.release_cgroups();
        }
        swept
    }
}
