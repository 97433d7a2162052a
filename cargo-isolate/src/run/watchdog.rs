//! The watchdog, which keeps the running tests' timeouts and signals their
//! process groups, and tells of tests that run long; and the reaping of a
//! test's process with whatever it left behind (see [`super::contain`]).
//!
//! A test that runs out of time and a run that is interrupted end a test
//! the same way: SIGTERM to its process group, then SIGKILL after its
//! grace period (see [`Limits`]) if the group's leader is still there. A
//! second interruption kills at once.
//!
//! Each running test has a clock, started where the runner learns that it
//! started (its process spawned; the next test of a batch once libtest
//! logged the one before; a harness's `started` event), and an
//! [`Event::Slow`] is sent each time it has run another slow period.

use std::collections::{HashMap, HashSet};
use std::io;
use std::process::ExitStatus;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::contain::Containment;
use super::{Event, lock};
use crate::build::TestBinary;
use crate::guard::Guard;

/// The clocks of a test: when it is slow, when it is ended, and how long
/// it has between its SIGTERM and its SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The period after which, and after each again, it is slow.
    pub(crate) slow: Duration,
    /// When it is killed, if ever.
    pub(crate) timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL, when it runs out of time or the run is
    /// interrupted.
    pub(crate) grace: Duration,
}

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
    let leaked = watchdog.confinement.containment.collect(pid, &known);
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
    /// The guard, which kills the watched groups if this runner dies, and
    /// how what tests leave behind is found.
    pub(super) confinement: Confinement,
}

pub(super) struct WatchdogShared {
    state: Mutex<WatchdogState>,
    changed: Condvar,
}

#[derive(Default)]
struct WatchdogState {
    /// Process groups of running tests. Only these are signalled, with
    /// the lock held: a worker forgets its test's pid before it reaps the
    /// group's leader, so no group id signalled can have been reused.
    watched: HashMap<Pid, Watch>,
    /// The clocks of the tests running in each watched group.
    clocks: HashMap<Pid, Vec<Clock>>,
    /// When the watchdog wakes next, unless woken: a clock due later
    /// needs no wake-up.
    wakes_at: Option<Instant>,
    /// The run was interrupted: a group watched from now on is ended at
    /// once.
    interrupted: bool,
    stopping: bool,
}

/// A running test's clock, for its SLOW events.
struct Clock {
    /// Its binary's id.
    binary: String,
    name: String,
    started: Instant,
    /// Its slow period, and its timeout (at which it is ended, not slow).
    slow: Duration,
    timeout: Option<Duration>,
    /// How many slow periods it has been reported for.
    periods: u32,
}

impl Clock {
    /// The clock of test `name` of `binary`, with `limits`, started at
    /// `started`.
    fn new(binary: &TestBinary, name: &str, limits: Limits, started: Instant) -> Clock {
        Clock {
            binary: binary.id.clone(),
            name: name.to_owned(),
            started,
            slow: limits.slow,
            timeout: limits.timeout,
            periods: 0,
        }
    }

    /// When it has run one more slow period than it was reported for;
    /// `None` past the end of time.
    fn next(&self) -> Option<Instant> {
        self.slow
            .checked_mul(self.periods.checked_add(1)?)
            .and_then(|elapsed| self.started.checked_add(elapsed))
    }
}

struct Watch {
    /// When to signal the group next: at its timeout, SIGTERM; once it
    /// got SIGTERM, SIGKILL.
    at: Option<Instant>,
    fired: Fired,
    /// Between its SIGTERM and its SIGKILL.
    grace: Duration,
}

impl Watch {
    /// Starts to end the group of `pid`, because of `why`: SIGTERM now,
    /// SIGKILL once the grace period is over.
    fn terminate(&mut self, pid: Pid, why: Fired, now: Instant) {
        let _ = killpg(pid, NixSignal::SIGTERM);
        self.fired = why;
        self.at = now.checked_add(self.grace).or(Some(now));
    }
}

impl WatchdogShared {
    /// Interrupts the run: ends every running test's group, and every
    /// group watched from now on, as a timeout does (SIGTERM, then SIGKILL
    /// after the grace period). A test already timing out goes on to its
    /// SIGKILL, and stays timed out.
    pub(super) fn interrupt(&self) {
        let mut state = lock(&self.state);
        state.interrupted = true;
        let now = Instant::now();
        for (pid, watch) in &mut state.watched {
            if watch.fired == Fired::No {
                watch.terminate(*pid, Fired::Interrupted, now);
            }
        }
        drop(state);
        // The watchdog has a SIGKILL to send before it would wake.
        self.changed.notify_one();
    }

    /// Kills every running test's group at once: a second interruption,
    /// after which the runner exits without waiting for them.
    pub(super) fn kill_all(&self) {
        let mut state = lock(&self.state);
        for (pid, watch) in &mut state.watched {
            let _ = killpg(*pid, NixSignal::SIGKILL);
            if watch.fired == Fired::No {
                watch.fired = Fired::Interrupted;
            }
            watch.at = None;
        }
    }
}

/// What keeps a run's processes from outliving it or escaping it: the
/// guard, and the containment of what tests leave behind. Made before the
/// build, on a thread of its own (see [`super::contain`]: its cgroups cost
/// a wait the build hides).
pub(crate) struct Confinement {
    guard: Option<Guard>,
    pub(super) containment: Containment,
}

impl Confinement {
    /// The guard, and the containment of `lanes` threads that start tests.
    pub(crate) fn prepare(lanes: usize) -> Confinement {
        // Without a guard, a run killed outright may leave its tests. It
        // starts before the containment, outside the run's cgroups, which
        // it removes once the runner has exited.
        let guard = Guard::start().ok();
        let containment = Containment::start(lanes);
        if let (Some(guard), Containment::Cgroups(cgroups)) = (&guard, &containment) {
            guard.contain(cgroups.path());
        }
        Confinement { guard, containment }
    }

    /// Undoes what [`Confinement::prepare`] made, once the run is over
    /// (or did not happen): the runner leaves its cgroups and removes
    /// them, and the guard ends.
    pub(crate) fn release(self) {
        drop(self);
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        let over = Containment::ProcessGroups("the run is over".to_owned());
        if let Containment::Cgroups(cgroups) = std::mem::replace(&mut self.containment, over) {
            cgroups.leave();
            if let Some(guard) = &self.guard {
                guard.release_cgroups();
            }
        }
    }
}

impl Watchdog {
    /// Starts the watchdog, within `confinement`; it sends an
    /// [`Event::Slow`] to `events` each slow period a test runs, short of
    /// its timeout (which ends it instead).
    pub(super) fn start(confinement: Confinement, events: Sender<Event>) -> Watchdog {
        let shared = Arc::new(WatchdogShared {
            state: Mutex::new(WatchdogState::default()),
            changed: Condvar::new(),
        });
        let keeper = Arc::clone(&shared);
        let thread = std::thread::Builder::new().spawn(move || {
            let mut state = lock(&keeper.state);
            while !state.stopping {
                let now = Instant::now();
                for (pid, watch) in &mut state.watched {
                    if watch.at.is_some_and(|at| at <= now) {
                        if watch.fired == Fired::No {
                            watch.terminate(*pid, Fired::TimedOut, now);
                        } else {
                            // The grace period is over.
                            let _ = killpg(*pid, NixSignal::SIGKILL);
                            watch.at = None;
                        }
                    }
                }
                let WatchdogState {
                    watched, clocks, ..
                } = &mut *state;
                // A test being ended is slow no more.
                clocks.retain(|pid, _| {
                    watched
                        .get(pid)
                        .is_none_or(|watch| watch.fired == Fired::No)
                });
                for clock in clocks.values_mut().flatten() {
                    // Once a period, even where this thread woke late.
                    let periods = now.saturating_duration_since(clock.started).as_nanos()
                        / clock.slow.as_nanos().max(1);
                    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
                    if periods <= clock.periods {
                        continue;
                    }
                    clock.periods = periods;
                    let elapsed = clock.slow.saturating_mul(periods);
                    if clock.timeout.is_none_or(|limit| elapsed < limit) {
                        let _ = events.send(Event::Slow {
                            binary: clock.binary.clone(),
                            name: clock.name.clone(),
                            elapsed,
                        });
                    }
                }
                let next = state
                    .watched
                    .values()
                    .filter_map(|watch| watch.at)
                    .chain(state.clocks.values().flatten().filter_map(Clock::next))
                    .min();
                let now = Instant::now();
                let wait = next.map_or(Duration::from_secs(3600), |at| {
                    at.saturating_duration_since(now)
                });
                state.wakes_at = now.checked_add(wait);
                state = keeper
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                eprintln!(
                    "cargo isolate: warning: cannot start the watchdog thread ({error}): \
                     timeouts and interruptions will not end tests"
                );
                None
            }
        };
        Watchdog {
            shared,
            thread,
            confinement,
        }
    }

    /// Starts `command` where the calling thread's tests are contained.
    ///
    /// # Errors
    ///
    /// As [`std::process::Command::spawn`].
    pub(super) fn spawn(&self, command: std::process::Command) -> io::Result<std::process::Child> {
        self.confinement.containment.spawn(command)
    }

    /// Starts `command` as [`Watchdog::spawn`] does, as the last process of
    /// the run (see [`super::contain::Containment::spawn_last`]).
    ///
    /// # Errors
    ///
    /// As [`std::process::Command::spawn`].
    pub(super) fn spawn_last(
        &self,
        command: std::process::Command,
    ) -> io::Result<std::process::Child> {
        self.confinement.containment.spawn_last(command)
    }

    /// The processes of ours that are no test's leftovers: the running
    /// tests' and the guard.
    pub(super) fn known(&self) -> HashSet<Pid> {
        let mut known: HashSet<Pid> = lock(&self.shared.state).watched.keys().copied().collect();
        known.extend(self.confinement.guard.as_ref().map(Guard::pid));
        known
    }

    /// Starts watching the group of `pid`, ended at the timeout of
    /// `limits` if it has one, and the clock of the test `running` in it
    /// (its binary and name), if given. Once the run is interrupted, a
    /// test that started as it was is ended at once.
    pub(super) fn watch(&self, pid: Pid, limits: Limits, running: Option<(&TestBinary, &str)>) {
        if let Some(guard) = &self.confinement.guard {
            guard.protect(pid);
        }
        let now = Instant::now();
        let mut watch = Watch {
            at: limits.timeout.map(|timeout| now + timeout),
            fired: Fired::No,
            grace: limits.grace,
        };
        let mut state = lock(&self.shared.state);
        if state.interrupted {
            watch.terminate(pid, Fired::Interrupted, now);
        }
        state.watched.insert(pid, watch);
        if let Some((binary, name)) = running {
            state
                .clocks
                .insert(pid, vec![Clock::new(binary, name, limits, now)]);
        }
        drop(state);
        self.shared.changed.notify_one();
    }

    /// Starts the clock of test `name` of `binary`, with `limits`, which
    /// starts now in the watched group of `pid`.
    pub(super) fn time(&self, pid: Pid, binary: &TestBinary, name: &str, limits: Limits) {
        let now = Instant::now();
        let clock = Clock::new(binary, name, limits, now);
        let due = clock.next();
        let mut state = lock(&self.shared.state);
        state.clocks.entry(pid).or_default().push(clock);
        // Woken only if it would sleep past the clock's first period.
        let wake = due.is_some_and(|due| state.wakes_at.is_none_or(|at| due < at));
        drop(state);
        if wake {
            self.shared.changed.notify_one();
        }
    }

    /// Stops the clock of test `name` in the group of `pid`: it ended.
    pub(super) fn untime(&self, pid: Pid, name: &str) {
        if let Some(clocks) = lock(&self.shared.state).clocks.get_mut(&pid) {
            clocks.retain(|clock| clock.name != name);
        }
    }

    /// Gives `pid` a fresh `timeout`, unless it was signalled already.
    pub(super) fn rearm(&self, pid: Pid, timeout: Duration) {
        if let Some(watch) = lock(&self.shared.state).watched.get_mut(&pid)
            && watch.fired == Fired::No
        {
            watch.at = Some(Instant::now() + timeout);
        }
    }

    /// Stops watching `pid`, and the clocks of its tests, before it is
    /// reaped; says whether and why it was signalled.
    pub(super) fn forget(&self, pid: Pid) -> Fired {
        if let Some(guard) = &self.confinement.guard {
            guard.release(pid);
        }
        let mut state = lock(&self.shared.state);
        state.clocks.remove(&pid);
        state
            .watched
            .remove(&pid)
            .map_or(Fired::No, |watch| watch.fired)
    }

    /// Stops the watchdog, kills and reaps whatever tests left that is
    /// still around, and returns how many processes that was, and the
    /// confinement, to be released.
    pub(super) fn stop(mut self) -> (usize, Confinement) {
        lock(&self.shared.state).stopping = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let known = self.known();
        let swept = self.confinement.containment.finish(&known);
        (swept, self.confinement)
    }
}
