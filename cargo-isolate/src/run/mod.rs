//! Running the tests: every test in a process of its own, with a global
//! limit on how many run at once. Every process starts as `cargo test`
//! starts a test binary: through the target runner, in the package's
//! directory, with cargo's environment (see [`crate::environment`]).
//!
//! - A libtest binary runs once per test, as `BIN --exact NAME
//!   --test-threads 1 --logfile FILE`, in a process group of its own. Its
//!   verdict comes from libtest's log file, which is open before the test
//!   runs, so a test that closes its stdout still gets one; a test that
//!   exits (even with code 0) before libtest logged a result fails.
//!   Output goes to files, not pipes, so nothing blocks on it.
//! - With `--isolation batch`, a libtest binary runs many tests per
//!   process, one after another. The log, read as it grows, says which
//!   finished and when; if the process dies, the test libtest announced
//!   last gets the crash, and the rest run on in a fresh process. The
//!   timeout and the slow clock restart with each logged test. Output
//!   (stdout and stderr in one file) is split between the tests by
//!   libtest's `test NAME ... ` lines; processes left behind are charged
//!   to the batch's last test.
//! - An isolate-harness binary runs once, with all the run's threads: its
//!   fork server isolates each test, and its report stream (a pipe on its
//!   descriptor 3, named by `ISOLATE_REPORT_FD`) says how each ended.
//!
//! Timeouts, and the clocks that tell of slow tests, are kept by one
//! watchdog thread. A worker waits for its test's process without reaping
//! it (`WNOWAIT`), so the watchdog never signals a process group whose
//! leader may have been reaped; then it kills what the test left in its
//! group and reaps it.
//!
//! # Interruptions
//!
//! The first [`Interrupt::stop`] (Ctrl-C, SIGTERM) starts no more tests
//! and ends the running ones as a timeout does: SIGTERM to each test's
//! process group, SIGKILL after the grace period. An isolate-harness
//! binary dies of its SIGTERM, and its fork servers, which get SIGTERM
//! when it dies, kill their tests. Then every test has an outcome: those
//! that ended first keep theirs, those it ended are
//! [`Status::Interrupted`], the rest [`Status::NotRun`]; the reports are
//! written as after any run. [`Interrupt::kill`] kills at once, and the
//! runner exits without reports.
//!
//! This module schedules; the rooms beside it run: [`libtest`] plain
//! libtest processes and batches, [`harness`] isolate-harness binaries and
//! their report stream, [`watchdog`] timeouts, interruptions and reaping,
//! [`capture`] the scratch files output goes to and what of it is kept.

mod capture;
mod contain;
mod harness;
mod libtest;
mod watchdog;

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isolate_harness::Signal;

use crate::build::TestBinary;
use crate::list::{BinaryTests, Runner, Selection};
use harness::run_harness;
use libtest::{run_batch, run_libtest};
pub(crate) use watchdog::Confinement;
use watchdog::{Watchdog, WatchdogShared};

pub(crate) use capture::choose_scratch_dir;

/// How a test ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Status {
    Passed,
    /// The test's harness reported a failure: a panic, an error, a death
    /// test that did not die as expected.
    Failed,
    /// A signal killed the test's process.
    Crashed {
        signal: Signal,
        core_dumped: bool,
    },
    /// It ran past the timeout and was killed.
    TimedOut {
        after: Duration,
    },
    /// Its process exited before the harness reported a result.
    ExitedEarly {
        code: i32,
    },
    /// Not run: ignored.
    Ignored,
    /// The runner could not run it.
    Broken,
    /// The run was interrupted (Ctrl-C, SIGTERM) while it ran.
    Interrupted,
    /// Not run: the run was interrupted, or `--max-fail` stopped it,
    /// before it started.
    NotRun,
}

impl Status {
    pub(crate) fn is_failure(&self) -> bool {
        !matches!(self, Status::Passed | Status::Ignored | Status::NotRun)
    }
}

/// The message of a test that the run's interruption ended.
const INTERRUPTED_WHILE_RUNNING: &str = "interrupted while it ran";

/// The message of a test that did not start because the run was
/// interrupted.
const NOT_RUN_INTERRUPTED: &str = "not run: the run was interrupted";

/// The message of a test that did not start because `max` tests failed
/// (`--max-fail`, `--fail-fast`).
fn not_run_failed(max: NonZeroU32) -> String {
    if max == NonZeroU32::MIN {
        "not run: a test failed and --fail-fast stopped the run".to_owned()
    } else {
        format!("not run: {max} tests failed and --max-fail stopped the run")
    }
}

/// One test's result.
#[derive(Clone, Debug)]
pub(crate) struct TestOutcome {
    pub(crate) binary: TestBinary,
    pub(crate) name: String,
    pub(crate) status: Status,
    /// What went wrong, for people: the diagnosis of a failure.
    pub(crate) message: String,
    pub(crate) duration: Duration,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Processes the test left running, killed when it ended.
    pub(crate) leaked: usize,
    /// How many times it ran: more than once after `--retries`.
    pub(crate) attempts: u32,
    /// Whether it failed, then passed on a retry.
    pub(crate) flaky: bool,
}

/// What the runner tells the reporter.
pub(crate) enum Event {
    /// The run starts: this many tests, across this many binaries, with
    /// this containment of what they leave behind; `skipped` tests of the
    /// binaries do not run (filtered out, ignored, in another partition).
    Started {
        tests: usize,
        binaries: usize,
        skipped: usize,
        containment: String,
    },
    /// A test has run this long, a whole number of slow periods, and runs
    /// on.
    Slow {
        /// Its binary's id.
        binary: String,
        name: String,
        elapsed: Duration,
    },
    /// An attempt at a test failed, and the test runs again (`--retries`).
    Retried(Box<TestOutcome>),
    Finished(Box<TestOutcome>),
    /// The run is over; this many processes that tests left, and that
    /// their own ends did not find, were killed.
    Swept(usize),
}

/// Options of the run.
pub(crate) struct RunPlan {
    pub(crate) threads: usize,
    /// How long a test may run before it is killed.
    pub(crate) timeout: Option<Duration>,
    /// How long a test runs before it is reported slow, and again each
    /// time as long again has passed.
    pub(crate) slow_timeout: Duration,
    /// How many failed tests stop the run from starting more (`None`: no
    /// limit).
    pub(crate) max_fail: Option<NonZeroU32>,
    pub(crate) retries: u32,
    /// Tests write to the terminal instead of being captured.
    pub(crate) nocapture: bool,
    /// What passing tests print is kept, for a report that shows it.
    pub(crate) passing_output: bool,
    pub(crate) isolation: Isolation,
}

/// How many libtest tests share a process (`--isolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Isolation {
    /// Every test in a process of its own.
    Process,
    /// A process runs many tests in sequence; when it dies, the test that
    /// was running gets the crash and the rest go on in a fresh process.
    /// Faster; weaker: tests of a batch share process state.
    Batch,
}

/// Interrupts a run from another thread (see *Interruptions* in the
/// module's docs).
#[derive(Default)]
pub(crate) struct Interrupt {
    interrupted: AtomicBool,
    watchdog: Mutex<Option<Arc<WatchdogShared>>>,
}

impl Interrupt {
    /// Starts no more tests, and ends the running ones: SIGTERM to their
    /// process groups, SIGKILL after the grace period.
    pub(crate) fn stop(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        if let Some(watchdog) = &*lock(&self.watchdog) {
            watchdog.interrupt();
        }
    }

    /// Kills the running tests' process groups at once (SIGKILL). Their
    /// outcomes are not waited for: the caller exits.
    pub(crate) fn kill(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        if let Some(watchdog) = &*lock(&self.watchdog) {
            watchdog.kill_all();
        }
    }

    /// Whether the run was interrupted.
    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// Runs the selected tests of `binaries`, sending an event per test.
pub(crate) fn run(
    binaries: &[BinaryTests],
    selection: &Selection,
    plan: &RunPlan,
    confinement: Confinement,
    events: &Sender<Event>,
    interrupt: &Interrupt,
) -> Confinement {
    let selected = selection.select(binaries);
    // The binary of each test that runs; what does not run is skipped.
    let mut with_tests: Vec<usize> = selected
        .iter()
        .filter(|(_, test)| selection.runs(test))
        .map(|(binary, _)| *binary)
        .collect();
    let runs = with_tests.len();
    with_tests.dedup();
    let listed: usize = binaries.iter().map(|binary| binary.tests.len()).sum();
    // Processes a test leaves behind become our children when it exits,
    // where they are found, killed and reaped. Each worker thread starts
    // its tests from a lane of its own, and this thread its harness
    // binaries from the last.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let threads = plan.threads.max(1);
    let watchdog = Watchdog::start(confinement, plan, events.clone());
    watchdog.confinement.containment.enter(threads);
    let _ = events.send(Event::Started {
        tests: runs,
        binaries: with_tests.len(),
        skipped: listed - runs,
        containment: watchdog.confinement.containment.describe(),
    });
    *lock(&interrupt.watchdog) = Some(Arc::clone(&watchdog.shared));
    let mut plain: Vec<(usize, String)> = Vec::new();
    let mut harnessed: Vec<(usize, Vec<String>)> = Vec::new();
    for (index, test) in selected {
        if !selection.runs(test) {
            let ignored = outcome(
                &binaries[index].binary,
                &test.name,
                Status::Ignored,
                String::new(),
            );
            let _ = events.send(Event::Finished(Box::new(ignored)));
            continue;
        }
        let group = match binaries[index].runner {
            Runner::Libtest => {
                plain.push((index, test.name.clone()));
                continue;
            }
            Runner::IsolateHarness => &mut harnessed,
        };
        match group.last_mut() {
            Some((last, names)) if *last == index => names.push(test.name.clone()),
            _ => group.push((index, vec![test.name.clone()])),
        }
    }
    let queue: VecDeque<Unit> = match plan.isolation {
        Isolation::Process => plain
            .into_iter()
            .map(|(binary, name)| Unit::Test { binary, name })
            .collect(),
        Isolation::Batch => batches(plain, plan.threads),
    };
    // `--max-fail` starts no more tests after that many failures, as an
    // interruption does, but lets the running ones finish.
    let failures = AtomicU32::new(0);
    let stop = |outcome: &TestOutcome| {
        if outcome.status.is_failure() {
            failures.fetch_add(1, Ordering::SeqCst);
        }
    };
    let failed_enough = || {
        plan.max_fail
            .is_some_and(|max| failures.load(Ordering::SeqCst) >= max.get())
    };
    let stopped = || interrupt.is_interrupted() || failed_enough();
    let mut not_started: Vec<(usize, String)> = Vec::new();
    // A harness binary runs with every thread, one after another, before
    // the per-test work.
    for (index, names) in harnessed {
        if stopped() {
            not_started.extend(names.into_iter().map(|name| (index, name)));
            continue;
        }
        run_harness(
            &binaries[index],
            &names,
            plan,
            &watchdog,
            events,
            &stop,
            &stopped,
        );
    }
    let shared_queue = Mutex::new(queue);
    let (queue, watched, stopped) = (&shared_queue, &watchdog, &stopped);
    // A worker: runs the queue's units until it is empty or the run stops.
    let work = move |lane: usize| {
        let watchdog = watched;
        watchdog.confinement.containment.enter(lane);
        // Attempt `attempts + 1` at test `name` of `binary`.
        let attempt = |binary: usize, name: &str, attempts: u32| {
            let mut outcome = run_libtest(&binaries[binary].binary, name, plan, watchdog);
            outcome.attempts = attempts + 1;
            outcome.flaky = attempts > 0 && !outcome.status.is_failure();
            vec![(binary, outcome)]
        };
        while !stopped() {
            let Some(unit) = lock(queue).pop_front() else {
                return;
            };
            let finished = match unit {
                Unit::Test { binary, name } => attempt(binary, &name, 0),
                Unit::Retry { binary, last } => {
                    let (name, attempts) = (last.name.clone(), last.attempts);
                    let _ = events.send(Event::Retried(last));
                    attempt(binary, &name, attempts)
                }
                Unit::Batch { binary, names } => {
                    let (outcomes, rest) =
                        run_batch(&binaries[binary].binary, &names, plan, watchdog);
                    if !rest.is_empty() {
                        // The batch's process died: the rest go on in a fresh one.
                        lock(queue).push_front(Unit::Batch {
                            binary,
                            names: rest,
                        });
                    }
                    outcomes
                        .into_iter()
                        .map(|outcome| (binary, outcome))
                        .collect()
                }
            };
            for (binary, outcome) in finished {
                if outcome.status.is_failure() && outcome.attempts <= plan.retries && !stopped() {
                    // Retried in a process of its own.
                    lock(queue).push_back(Unit::Retry {
                        binary,
                        last: Box::new(outcome),
                    });
                    continue;
                }
                stop(&outcome);
                let _ = events.send(Event::Finished(Box::new(outcome)));
            }
        }
    };

    std::thread::scope(|scope| {
        // As many workers as threads can be made (a process limit may
        // allow fewer), and at least this thread.
        let started = (0..threads)
            .take_while(|&lane| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || work(lane))
                    .is_ok()
            })
            .count();
        if started < threads {
            eprintln!(
                "cargo isolate: warning: {started} of {threads} test threads could be started"
            );
        }
        if started == 0 {
            work(0);
        }
    });
    // What is left did not start: the run stopped first. A test waiting
    // for a retry keeps how it ended last.
    for unit in shared_queue
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        match unit {
            Unit::Test { binary, name } => not_started.push((binary, name)),
            Unit::Retry { last, .. } => {
                let _ = events.send(Event::Finished(last));
            }
            Unit::Batch { binary, names } => {
                not_started.extend(names.into_iter().map(|name| (binary, name)));
            }
        }
    }
    let why = match plan.max_fail {
        Some(max) if !interrupt.is_interrupted() => not_run_failed(max),
        _ => NOT_RUN_INTERRUPTED.to_owned(),
    };
    for (binary, name) in not_started {
        let outcome = outcome(&binaries[binary].binary, &name, Status::NotRun, why.clone());
        let _ = events.send(Event::Finished(Box::new(outcome)));
    }
    let (swept, confinement) = watchdog.stop();
    if swept > 0 {
        let _ = events.send(Event::Swept(swept));
    }
    confinement
}

/// A piece of work for one worker.
enum Unit {
    /// One test in a process of its own.
    Test { binary: usize, name: String },
    /// A test that failed, to run again in a process of its own; `last`
    /// is how it ended the last time.
    Retry {
        binary: usize,
        last: Box<TestOutcome>,
    },
    /// Several tests of one binary in one process, one after another.
    Batch { binary: usize, names: Vec<String> },
}

/// The batches of `--isolation batch`: each binary's tests cut into as many
/// batches as there are threads, so that every thread has one.
fn batches(tests: Vec<(usize, String)>, threads: usize) -> VecDeque<Unit> {
    let mut per_binary: Vec<(usize, Vec<String>)> = Vec::new();
    for (binary, name) in tests {
        match per_binary.last_mut() {
            Some((last, names)) if *last == binary => names.push(name),
            _ => per_binary.push((binary, vec![name])),
        }
    }
    per_binary
        .into_iter()
        .flat_map(|(binary, names)| {
            let size = names.len().div_ceil(threads.max(1)).max(1);
            names
                .chunks(size)
                .map(|chunk| Unit::Batch {
                    binary,
                    names: chunk.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn outcome(binary: &TestBinary, name: &str, status: Status, message: String) -> TestOutcome {
    TestOutcome {
        binary: binary.clone(),
        name: name.to_owned(),
        status,
        message,
        duration: Duration::ZERO,
        stdout: String::new(),
        stderr: String::new(),
        leaked: 0,
        attempts: 1,
        flaky: false,
    }
}

/// `error` and its causes, each after the one it explains: the text of a
/// test's failure when the machinery failed.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The command of a test process: `binary` started as `cargo test` starts
/// it (see [`TestBinary::command`]), with no input, in a process group of
/// its own.
fn test_command(binary: &TestBinary) -> Command {
    let mut command = binary.command();
    command.stdin(Stdio::null()).process_group(0);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_give_every_thread_work() {
        let tests = (0..5)
            .map(|n| (0, n.to_string()))
            .chain([(1, "x".to_owned())])
            .collect();
        let sizes: Vec<(usize, usize)> = batches(tests, 2)
            .into_iter()
            .map(|unit| match unit {
                Unit::Batch { binary, names } => (binary, names.len()),
                Unit::Test { .. } | Unit::Retry { .. } => panic!("a batch was expected"),
            })
            .collect();
        assert_eq!(sizes, [(0, 3), (0, 2), (1, 1)]);
    }
}
