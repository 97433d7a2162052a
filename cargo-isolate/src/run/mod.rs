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

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use isolate_harness::Signal;

use crate::build::{PackageGraph, TestBinary};
use crate::config::{Leak, MemoryLimit, Platforms, Profile, RetryPolicy};
use crate::list::{BinaryTests, Runner, Selection};
use harness::{HarnessPlace, run_harness};
use libtest::{run_batch, run_libtest};
pub(crate) use watchdog::{Confinement, Limits};
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
    /// How many times it may run: once, and once per retry its settings
    /// allow.
    pub(crate) max_attempts: u32,
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
    /// Tests write to the terminal instead of being captured.
    pub(crate) nocapture: bool,
    /// What passing tests print is kept, for a report that shows it.
    pub(crate) passing_output: bool,
    /// Each test's settings, and the run's: `isolation`, `fail-fast`,
    /// `leak`, with the command line's flags applied.
    pub(crate) profile: Arc<Profile>,
    /// The platforms the overrides' `platform` keys are matched against.
    pub(crate) platforms: Platforms,
    /// The machine's cores, for `"num-cpus"` in the profile.
    pub(crate) cores: usize,
}

impl RunPlan {
    /// What test `name` of `binary` runs with, in a workspace shaped as
    /// `graph`. Tests that no override sets apart share one value.
    fn settings(
        &self,
        plain: &Arc<TestSettings>,
        binary: &TestBinary,
        name: &str,
        graph: &PackageGraph,
    ) -> Arc<TestSettings> {
        if self.profile.overrides.is_empty() {
            return Arc::clone(plain);
        }
        let settings = self.profile.settings(
            binary,
            name,
            graph,
            &self.platforms,
            self.threads,
            self.cores,
        );
        if settings == **plain {
            Arc::clone(plain)
        } else {
            Arc::new(settings)
        }
    }

    /// `outcome`, failed if it left processes behind and the profile's
    /// `leak` says that fails a test.
    fn judge_leaks(&self, mut outcome: TestOutcome) -> TestOutcome {
        if self.profile.leak.value == Leak::Fail
            && outcome.leaked > 0
            && outcome.status == Status::Passed
        {
            outcome.status = Status::Failed;
            outcome.message = format!(
                "it left {} behind, and leak = \"fail\" fails a test for it",
                match outcome.leaked {
                    1 => "a process".to_owned(),
                    count => format!("{count} processes"),
                }
            );
        }
        outcome
    }

    /// The most tests of each group that run at once.
    fn group_limits(&self) -> HashMap<Arc<str>, usize> {
        self.profile
            .test_groups
            .keys()
            .map(|group| {
                let limit = self.profile.group_limit(group, self.threads, self.cores);
                (Arc::clone(group), limit)
            })
            .collect()
    }
}

/// What one test runs with, from the profile and its overrides.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TestSettings {
    pub(crate) retries: RetryPolicy,
    pub(crate) limits: Limits,
    /// Its test group, whose `max-threads` bounds how many of its tests
    /// run at once across all binaries.
    pub(crate) group: Option<Arc<str>>,
    /// How many of the run's threads it takes (at least one, at most all).
    pub(crate) threads_required: usize,
    /// The address space its process may have.
    pub(crate) memory_limit: Option<MemoryLimit>,
}

/// How many libtest tests share a process (`--isolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    let watchdog = Watchdog::start(confinement, events.clone());
    watchdog.confinement.containment.enter(threads);
    let _ = events.send(Event::Started {
        tests: runs,
        binaries: with_tests.len(),
        skipped: listed - runs,
        containment: watchdog.confinement.containment.describe(),
    });
    *lock(&interrupt.watchdog) = Some(Arc::clone(&watchdog.shared));
    let plain_settings = Arc::new(plan.profile.plain_settings(threads, plan.cores));
    let mut plain: Vec<(usize, String, Arc<TestSettings>)> = Vec::new();
    // Each harness binary's tests, by the settings they share: a harness
    // process runs with one timeout, retry policy and thread count.
    let mut harnessed: Vec<(usize, Arc<TestSettings>, Vec<String>)> = Vec::new();
    for (index, test) in selected {
        let binary = &binaries[index].binary;
        if !selection.runs(test) {
            let ignored = outcome(binary, &test.name, Status::Ignored, String::new());
            let _ = events.send(Event::Finished(Box::new(ignored)));
            continue;
        }
        let settings = plan.settings(&plain_settings, binary, &test.name, selection.packages());
        match binaries[index].runner {
            Runner::Libtest => plain.push((index, test.name.clone(), settings)),
            Runner::IsolateHarness => {
                match harnessed
                    .iter_mut()
                    .find(|(other, shared, _)| *other == index && *shared == settings)
                {
                    Some((_, _, names)) => names.push(test.name.clone()),
                    None => harnessed.push((index, settings, vec![test.name.clone()])),
                }
            }
        }
    }
    let units: VecDeque<Unit> = match plan.profile.isolation.value {
        Isolation::Process => plain
            .into_iter()
            .map(|(binary, name, settings)| Unit::new(binary, settings, Work::Test(name)))
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
        plan.profile
            .max_fail
            .value
            .is_some_and(|max| failures.load(Ordering::SeqCst) >= max.get())
    };
    let stopped = || interrupt.is_interrupted() || failed_enough();
    let group_limits = plan.group_limits();
    let mut not_started: Vec<(usize, String)> = Vec::new();
    // A harness binary runs alone, before the per-test work, with every
    // thread its tests' settings allow: as many as the threads each
    // requires fit, and no more than their group's limit.
    // The run's last process may be a harness binary's, when no test
    // runs in a process of its own after them.
    let harness_sets = harnessed.len();
    for (set, (index, settings, names)) in harnessed.into_iter().enumerate() {
        if stopped() {
            not_started.extend(names.into_iter().map(|name| (index, name)));
            continue;
        }
        let mut threads = threads / settings.threads_required;
        if let Some(group) = &settings.group {
            threads = threads.min(group_limits.get(group).copied().unwrap_or(threads));
        }
        let place = HarnessPlace {
            last: units.is_empty() && set + 1 == harness_sets,
            max_fail: plan.profile.max_fail.value.map(|max| {
                let failed = failures.load(Ordering::SeqCst);
                (max.get().saturating_sub(failed), not_run_failed(max))
            }),
        };
        run_harness(
            &binaries[index],
            &names,
            &settings,
            threads.max(1),
            &place,
            plan,
            &watchdog,
            events,
            &stop,
            &stopped,
        );
    }
    let queue = Queue {
        state: Mutex::new(QueueState {
            units,
            busy: 0,
            groups: HashMap::new(),
        }),
        changed: Condvar::new(),
        threads,
        group_limits,
    };
    let (queue, watched, stopped) = (&queue, &watchdog, &stopped);
    // A worker: runs the queue's units until it is empty or the run stops.
    let work = move |lane: usize| {
        let watchdog = watched;
        watchdog.confinement.containment.enter(lane);
        // Attempt `attempts + 1` at test `name` of `binary`.
        let attempt = |binary: usize, name: &str, settings: &TestSettings, attempts: u32| {
            let mut outcome = run_libtest(&binaries[binary].binary, name, settings, plan, watchdog);
            outcome.attempts = attempts + 1;
            outcome.max_attempts = settings.retries.count + 1;
            outcome.flaky = attempts > 0 && !outcome.status.is_failure();
            vec![plan.judge_leaks(outcome)]
        };
        while let Some(unit) = queue.take(stopped) {
            let (binary, settings) = (unit.binary, Arc::clone(&unit.settings));
            let mut requeued = Vec::new();
            let finished = match &unit.work {
                Work::Test(name) => attempt(binary, name, &settings, 0),
                Work::Retry(last) => {
                    let (name, attempts) = (last.name.clone(), last.attempts);
                    let _ = events.send(Event::Retried(last.clone()));
                    attempt(binary, &name, &settings, attempts)
                }
                Work::Batch(names) => {
                    let (outcomes, rest) =
                        run_batch(&binaries[binary].binary, names, &settings, plan, watchdog);
                    if !rest.is_empty() {
                        // The batch's process died: the rest go on in a fresh one.
                        requeued.push((
                            true,
                            Unit::new(binary, Arc::clone(&settings), Work::Batch(rest)),
                        ));
                    }
                    outcomes
                        .into_iter()
                        .map(|mut outcome| {
                            outcome.max_attempts = settings.retries.count + 1;
                            plan.judge_leaks(outcome)
                        })
                        .collect()
                }
            };
            for outcome in finished {
                let retries = settings.retries;
                if outcome.status.is_failure() && outcome.attempts <= retries.count && !stopped() {
                    // Retried in a process of its own, after its delay.
                    let mut retry = Unit::new(
                        binary,
                        Arc::clone(&settings),
                        Work::Retry(Box::new(outcome)),
                    );
                    let delay = retries.delay(retry.attempts());
                    if !delay.is_zero() {
                        retry.not_before = Instant::now().checked_add(delay);
                    }
                    requeued.push((false, retry));
                    continue;
                }
                stop(&outcome);
                let _ = events.send(Event::Finished(Box::new(outcome)));
            }
            queue.done(&unit, requeued);
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
    let left = std::mem::take(&mut lock(&queue.state).units);
    for unit in left {
        match unit.work {
            Work::Test(name) => not_started.push((unit.binary, name)),
            Work::Retry(last) => {
                let _ = events.send(Event::Finished(last));
            }
            Work::Batch(names) => {
                not_started.extend(names.into_iter().map(|name| (unit.binary, name)));
            }
        }
    }
    let why = match plan.profile.max_fail.value {
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

/// A piece of work for one worker, with what it runs with.
struct Unit {
    binary: usize,
    settings: Arc<TestSettings>,
    /// Not started before then: a retry waits out its backoff.
    not_before: Option<Instant>,
    work: Work,
}

enum Work {
    /// One test in a process of its own.
    Test(String),
    /// A test that failed, to run again in a process of its own, with how
    /// it ended the last time.
    Retry(Box<TestOutcome>),
    /// Several tests of one binary in one process, one after another.
    Batch(Vec<String>),
}

impl Unit {
    fn new(binary: usize, settings: Arc<TestSettings>, work: Work) -> Unit {
        Unit {
            binary,
            settings,
            not_before: None,
            work,
        }
    }

    /// For a retry, which retry it is (1 for the first).
    fn attempts(&self) -> u32 {
        match &self.work {
            Work::Retry(last) => last.attempts,
            Work::Test(_) | Work::Batch(_) => 0,
        }
    }
}

/// The units left to run, and what the running ones take: threads, and
/// places in their test groups. Workers take the first unit that fits.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a unit ends or is queued.
    changed: Condvar,
    threads: usize,
    /// The most tests of each group at once.
    group_limits: HashMap<Arc<str>, usize>,
}

struct QueueState {
    units: VecDeque<Unit>,
    /// The threads the running units take.
    busy: usize,
    /// The running units of each group.
    groups: HashMap<Arc<str>, usize>,
}

/// How long a worker that waits for a unit to fit sleeps at most, to see
/// that the run was stopped.
const QUEUE_PATIENCE: Duration = Duration::from_millis(50);

impl Queue {
    /// The next unit to run, once one fits, taking what it needs; `None`
    /// once the queue is empty or the run `stopped`.
    ///
    /// The first unit that fits is taken, in order, past those whose
    /// group is full or whose retry is not due; but not past one that
    /// waits for threads, so that a test that needs many is not starved by
    /// the small ones behind it.
    fn take(&self, stopped: &impl Fn() -> bool) -> Option<Unit> {
        let mut state = lock(&self.state);
        loop {
            if stopped() || state.units.is_empty() {
                return None;
            }
            let now = Instant::now();
            let mut wake = now + QUEUE_PATIENCE;
            let mut found = None;
            for (index, unit) in state.units.iter().enumerate() {
                if let Some(at) = unit.not_before.filter(|at| *at > now) {
                    wake = wake.min(at);
                    continue;
                }
                if let Some(group) = &unit.settings.group {
                    let limit = self
                        .group_limits
                        .get(group)
                        .copied()
                        .unwrap_or(self.threads);
                    if state.groups.get(group).copied().unwrap_or(0) >= limit {
                        continue;
                    }
                }
                if state.busy + unit.settings.threads_required > self.threads {
                    break;
                }
                found = Some(index);
                break;
            }
            if let Some(unit) = found.and_then(|index| state.units.remove(index)) {
                state.busy += unit.settings.threads_required;
                if let Some(group) = &unit.settings.group {
                    *state.groups.entry(Arc::clone(group)).or_default() += 1;
                }
                return Some(unit);
            }
            state = self
                .changed
                .wait_timeout(state, wake.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Gives back what `unit`, which has ended, took, and queues what
    /// follows from it: each `(first, unit)` at the front of the queue, or
    /// at its back.
    fn done(&self, unit: &Unit, follow: Vec<(bool, Unit)>) {
        let mut state = lock(&self.state);
        state.busy -= unit.settings.threads_required;
        if let Some(group) = &unit.settings.group
            && let Some(running) = state.groups.get_mut(group)
        {
            *running -= 1;
        }
        for (first, unit) in follow {
            if first {
                state.units.push_front(unit);
            } else {
                state.units.push_back(unit);
            }
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// The batches of `--isolation batch`: each binary's tests, cut where
/// their settings differ, into as many batches as there are threads, so
/// that every thread has one.
fn batches(tests: Vec<(usize, String, Arc<TestSettings>)>, threads: usize) -> VecDeque<Unit> {
    let mut runs: Vec<(usize, Arc<TestSettings>, Vec<String>)> = Vec::new();
    for (binary, name, settings) in tests {
        match runs.last_mut() {
            Some((last, shared, names)) if *last == binary && *shared == settings => {
                names.push(name);
            }
            _ => runs.push((binary, settings, vec![name])),
        }
    }
    runs.into_iter()
        .flat_map(|(binary, settings, names)| {
            let size = names.len().div_ceil(threads.max(1)).max(1);
            names
                .chunks(size)
                .map(|chunk| Unit::new(binary, Arc::clone(&settings), Work::Batch(chunk.to_vec())))
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
        max_attempts: 1,
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
        let settings = Arc::new(Profile::built_in().plain_settings(2, 2));
        let tests = (0..5)
            .map(|n| (0, n.to_string(), Arc::clone(&settings)))
            .chain([(1, "x".to_owned(), Arc::clone(&settings))])
            .collect();
        let sizes: Vec<(usize, usize)> = batches(tests, 2)
            .into_iter()
            .map(|unit| match unit.work {
                Work::Batch(names) => (unit.binary, names.len()),
                Work::Test(_) | Work::Retry(_) => panic!("a batch was expected"),
            })
            .collect();
        assert_eq!(sizes, [(0, 3), (0, 2), (1, 1)]);
    }
}
