//! The test harness: tests marked `#[isolate_harness::test]` or added to a
//! [`Harness`], each run by libtest-mimic in a child of the fork server, and
//! the verdict on how each ended.
//!
//! The report stream's lines are [`crate::report_stream`]'s; this module
//! writes them, in batches, to the runner's descriptor.

use std::collections::HashSet;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches};
use libtest_mimic::{Arguments, Conclusion, Failed, Trial};
use serde::Serialize;

use crate::child::{Signal, Termination};
use crate::fork_server::{
    CapturedStream, Ending, ForkServer, Function, RunRequest, TestFunction, TestId, TestRun,
    TestTable, broken,
};
use crate::report_stream::{self, Finished, Line, Started};
use crate::server;

/// Options of one test: what `#[isolate_harness::test(...)]` takes, or
/// [`Harness::test_with`] for a dynamic test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct TestOptions {
    ignore: Option<Option<&'static str>>,
    should_panic: Option<Option<&'static str>>,
    timeout: Option<Duration>,
    memory_limit: Option<u64>,
    expect: Expect,
}

/// How a test is expected to end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Expect {
    /// By returning (or panicking, with `should_panic`).
    #[default]
    Return,
    /// By the named signal.
    Signal(&'static str),
    /// By exiting with this code.
    Exit(i32),
}

impl TestOptions {
    /// No options: the test must return `()` or `Ok`.
    pub const fn new() -> TestOptions {
        TestOptions {
            ignore: None,
            should_panic: None,
            timeout: None,
            memory_limit: None,
            expect: Expect::Return,
        }
    }

    /// Skip the test unless `--ignored` or `--include-ignored` is given.
    pub const fn ignore(mut self, reason: Option<&'static str>) -> TestOptions {
        self.ignore = Some(reason);
        self
    }

    /// The test passes only if it panics, with `expected` in the message
    /// when given.
    pub const fn should_panic(mut self, expected: Option<&'static str>) -> TestOptions {
        self.should_panic = Some(expected);
        self
    }

    /// Kill the test after `timeout` (SIGTERM to its process group, then
    /// SIGKILL after a grace period of a second).
    pub const fn timeout(mut self, timeout: Duration) -> TestOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Let the test's address space grow by at most `bytes`.
    pub const fn memory_limit(mut self, bytes: u64) -> TestOptions {
        self.memory_limit = Some(bytes);
        self
    }

    /// A death test: passes only if the test's process dies by the signal
    /// named `signal` (such as `"SIGSEGV"`).
    pub const fn expect_signal(mut self, signal: &'static str) -> TestOptions {
        self.expect = Expect::Signal(signal);
        self
    }

    /// A death test: passes only if the test's process exits with `code`.
    pub const fn expect_exit(mut self, code: i32) -> TestOptions {
        self.expect = Expect::Exit(code);
        self
    }

    /// Whether the test needs a process of its own for its options to
    /// mean anything, even where each test already runs alone.
    fn needs_fork(&self) -> bool {
        self.timeout.is_some() || self.memory_limit.is_some() || self.expect != Expect::Return
    }
}

/// What a test function may return: `()`, or `Result<(), E>` with
/// `E: Debug`, whose `Err` fails the test as in libtest.
pub trait TestResult {
    /// The result, with an error as its debug text.
    ///
    /// # Errors
    ///
    /// When the test returned an error.
    fn into_test_result(self) -> Result<(), String>;
}

impl TestResult for () {
    fn into_test_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> TestResult for Result<(), E> {
    fn into_test_result(self) -> Result<(), String> {
        self.map_err(|error| format!("{error:?}"))
    }
}

#[doc(hidden)]
pub mod __private {
    //! What `#[isolate_harness::test]` expands to. Not a public API.

    pub use super::TestResult as IntoTestResult;
    pub use linkme;

    /// A test registered by the attribute.
    pub struct TestCase {
        pub module_path: &'static str,
        pub name: &'static str,
        pub function: fn() -> Result<(), String>,
        pub options: super::TestOptions,
    }

    /// Every test of the binary, as a function that describes it.
    ///
    /// A function rather than the description itself: a description holds
    /// pointers (its name, its function), which the loader of a
    /// position-independent binary writes at start-up, so a list of
    /// descriptions would be private memory that every fork of a fork
    /// server copies the page tables of (about 140 bytes a test), while a
    /// function builds its description in code, leaving one pointer per
    /// test in data.
    #[linkme::distributed_slice]
    pub static TESTS: [fn() -> TestCase];
}

/// A test added to the harness by hand.
struct AddedTest {
    name: String,
    function: Box<TestFunction>,
    options: TestOptions,
}

/// One test of the run: its name and options, and where the fork server
/// finds its function.
struct TestEntry {
    name: String,
    id: TestId,
    options: TestOptions,
}

/// The harness of a `harness = false` test target.
///
/// [`main!`](crate::main) is `Harness::new().run()`. Build one yourself to
/// add tests at run time or a shared setup:
///
/// ```no_run
/// use std::sync::OnceLock;
///
/// static FIXTURE: OnceLock<Vec<u32>> = OnceLock::new();
///
/// fn main() {
///     isolate_harness::Harness::new()
///         // Runs once, before the fork server starts: every test sees
///         // the fixture, copy-on-write, without building it again.
///         .setup(|| {
///             FIXTURE.set((0..1000).collect()).unwrap();
///         })
///         .test("fixture_is_loaded", || assert_eq!(FIXTURE.get().unwrap().len(), 1000))
///         .run()
/// }
/// ```
#[must_use]
pub struct Harness {
    added: Vec<AddedTest>,
    setup: Vec<Box<dyn FnOnce()>>,
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Harness {
    /// A harness with every test marked `#[isolate_harness::test]` in this
    /// binary.
    pub fn new() -> Harness {
        Harness {
            added: Vec::new(),
            setup: Vec::new(),
        }
    }

    /// Adds a test named `name`.
    pub fn test<R: TestResult>(
        self,
        name: impl Into<String>,
        test: impl Fn() -> R + Send + Sync + 'static,
    ) -> Harness {
        self.test_with(name, TestOptions::new(), test)
    }

    /// Adds a test named `name` with options.
    ///
    /// # Panics
    ///
    /// If `name` contains a control character (a line break, a NUL, a
    /// terminal escape) or starts with `-`: a runner reads test names one
    /// per line and passes them back as arguments, and such a name would
    /// read as two tests, as none, or as an option. A name that two tests
    /// share fails the harness when it runs (see [`Harness::run`]).
    pub fn test_with<R: TestResult>(
        mut self,
        name: impl Into<String>,
        options: TestOptions,
        test: impl Fn() -> R + Send + Sync + 'static,
    ) -> Harness {
        let name = name.into();
        assert!(
            !name.contains(char::is_control) && !name.starts_with('-'),
            "isolate: the test name {name:?} contains a control character or starts with `-`, \
             which no runner can pass back: name tests with one line of plain text"
        );
        self.added.push(AddedTest {
            name,
            function: Box::new(move || test().into_test_result()),
            options,
        });
        self
    }

    /// Runs `setup` once, in this process, before the fork server starts:
    /// whatever it builds (in statics, in files) every test sees, shared
    /// copy-on-write. It does not run for `--list`.
    pub fn setup(mut self, setup: impl FnOnce() + 'static) -> Harness {
        self.setup.push(Box::new(setup));
        self
    }

    /// Runs the tests as the command line asks and exits: 0 when all
    /// passed, 101 otherwise. The command line is libtest's, with as many
    /// name filters as libtest takes (a test runs if its name contains any
    /// of them, or with `--exact` is one of them).
    ///
    /// # Panics
    ///
    /// If two tests have the same name: a verdict could not say which it
    /// is on.
    pub fn run(self) -> ! {
        let (args, filters) = arguments(std::env::args_os());
        self.run_named(&args, &filters).exit()
    }

    /// Runs the tests with `args`, and returns the conclusion.
    pub fn run_with(self, args: &Arguments) -> Conclusion {
        let mut args = args.clone();
        let filters: Vec<String> = args.filter.take().into_iter().collect();
        self.run_named(&args, &filters)
    }

    /// Runs the tests `filters` name (see [`Harness::run`]) with `args`,
    /// whose own filter is not used.
    fn run_named(mut self, args: &Arguments, filters: &[String]) -> Conclusion {
        let named = |name: &str| {
            filters.is_empty()
                || filters.iter().any(|filter| {
                    if args.exact {
                        name == filter
                    } else {
                        name.contains(filter.as_str())
                    }
                })
        };
        let (added, functions): (Vec<_>, Vec<_>) = self
            .added
            .into_iter()
            .map(|test| ((test.name, test.options), test.function))
            .unzip();
        if args.list {
            report_stream::answer_handshake();
            let trials = test_list(added, None, named).iter().map(listed).collect();
            return libtest_mimic::run(args, trials);
        }
        // What a runner says in the environment is read, and taken out of
        // it, before anything is forked: no test may see the report
        // stream's descriptor, nor hand the runner's settings on to a
        // harness it runs itself.
        let runner = RunnerSettings::take_from_env();
        let report = runner.report.map(Arc::new);
        for setup in self.setup.drain(..) {
            setup();
        }
        let capture = !args.nocapture;
        let in_process = std::env::var_os("NEXTEST").is_some();
        // Under nextest, which runs one test per process, one server with
        // one test at a time is all a test that needs a fork can use.
        let (threads, servers) = if in_process {
            (1, 1)
        } else {
            let threads = args
                .test_threads
                .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
                .unwrap_or(1);
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            (threads, cores)
        };
        let table = Arc::new(TestTable { added: functions });
        // The list of tests is built after the servers are forked, so that
        // they do not carry it (see `TestTable`), and so is the set of the
        // tests a runner named. Whether any test will run in a server is
        // found out first: a runner names only tests that run; otherwise
        // the tests are asked one name at a time.
        let needs_server = match &runner.only {
            Some(names) => !names.is_empty(),
            None => any_test(&added, |name, options| {
                let trial =
                    Trial::test(name, || Ok(())).with_ignored_flag(options.ignore.is_some());
                named(trial.name())
                    && !args.is_filtered_out(&trial)
                    && !args.is_ignored(&trial)
                    && (!in_process || options.needs_fork())
            }),
        };
        let harness_fds: Vec<RawFd> = report.iter().map(|report| report.raw_fd()).collect();
        let server = if needs_server {
            match ForkServer::start(&table, threads, servers, capture, &harness_fds) {
                Ok(server) => Some(server),
                Err(error) => {
                    eprintln!("isolate: failed to start the fork server: {error}");
                    std::process::exit(101);
                }
            }
        } else {
            None
        };
        let only: Option<HashSet<String>> = runner
            .only
            .map(|names| names.lines().map(str::to_owned).collect());
        let tests = test_list(added, only.as_ref(), named);
        let (default_timeout, default_memory_limit, grace_period) = (
            runner.default_timeout,
            runner.default_memory_limit,
            runner.grace_period,
        );
        // Which tests run in a child of a fork server, and of those, the
        // ones that run, in the order libtest-mimic asks for their
        // verdicts: those it does not filter out or ignore.
        let has_server = server.is_some();
        let forked = |options: &TestOptions| has_server && (!in_process || options.needs_fork());
        let mut jobs = Vec::new();
        let positions: Vec<Option<usize>> = tests
            .iter()
            .map(|test| {
                let trial = listed(test);
                let runs = !args.is_filtered_out(&trial) && !args.is_ignored(&trial);
                (forked(&test.options) && runs).then(|| {
                    jobs.push(Job {
                        name: test.name.clone(),
                        request: RunRequest {
                            test: test.id,
                            memory_limit: test.options.memory_limit.or(default_memory_limit),
                            timeout: test.options.timeout.or(default_timeout),
                            grace_period,
                        },
                        options: test.options,
                    });
                    jobs.len() - 1
                })
            })
            .collect();
        let max_fail = runner.max_fail;
        let scheduler = server.map(|server| {
            Arc::new(Mutex::new(Scheduler::new(
                server,
                jobs,
                report.clone(),
                max_fail,
            )))
        });
        let trials = tests
            .into_iter()
            .zip(positions)
            .map(|(TestEntry { name, id, options }, position)| {
                let scheduler = scheduler.clone().filter(|_| forked(&options));
                let table = Arc::clone(&table);
                let report = report.clone();
                let trial_name = name.clone();
                Trial::test(name, move || match (&scheduler, position) {
                    (Some(scheduler), Some(position)) => scheduler
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .verdict(position),
                    (Some(_), None) => Err(Failed::from(
                        "could not be run: the harness did not expect to run it",
                    )),
                    (None, _) => {
                        if let Some(report) = &report {
                            report.started(&trial_name);
                            report.flush();
                        }
                        let function = table
                            .function(id)
                            .expect("every listed test is in the table");
                        let outcome = conclude(
                            &trial_name,
                            &options,
                            &run_in_process(function),
                            report.as_deref(),
                        );
                        if let Some(report) = &report {
                            report.flush();
                        }
                        outcome
                    }
                })
                .with_ignored_flag(options.ignore.is_some())
            })
            .collect();
        let conclusion = match &scheduler {
            // One thread asks for the verdicts, in order; the scheduler keeps
            // the servers busy with the tests that come next.
            Some(_) => {
                let mut args = args.clone();
                args.test_threads = Some(1);
                libtest_mimic::run(&args, trials)
            }
            None => libtest_mimic::run(args, trials),
        };
        if let Some(report) = &report {
            report.flush();
        }
        conclusion
    }
}

/// Why a test did not run after `ISOLATE_MAX_FAIL` failures. It is not
/// reported: the runner says so itself.
const NOT_RUN_FAILED_ENOUGH: &str = "not run: enough tests failed (ISOLATE_MAX_FAIL)";

/// A test the fork servers run, as the scheduler keeps it.
struct Job {
    name: String,
    request: RunRequest,
    options: TestOptions,
}

/// Runs the tests of the fork servers ahead of libtest-mimic.
///
/// libtest-mimic runs the trials on one thread, in order, and each trial of
/// a forked test asks the scheduler for its verdict. Meanwhile the
/// scheduler keeps every lane of the servers busy with the tests that come
/// next, and weighs each test as it ends (writing its report line then, not
/// when its verdict is asked for). So the run keeps `--test-threads` tests
/// running, while the harness has one thread, which sleeps only when no
/// test has ended: with a worker thread per test in flight, handing each
/// test and verdict between threads cost more than the rest of the harness.
///
/// The verdicts come out in list order: a slow test holds back the lines of
/// the tests after it (which run meanwhile), as under `--test-threads 1`.
struct Scheduler {
    server: ForkServer,
    jobs: Vec<Job>,
    /// The next job to send.
    next: usize,
    /// The job each lane carries.
    lanes: Vec<Option<usize>>,
    /// The verdicts of the jobs that ended and were not asked for yet.
    verdicts: Vec<Option<Result<(), Failed>>>,
    report: Option<Arc<ReportStream>>,
    /// After this many failures, no job is sent any more.
    max_fail: Option<u64>,
    /// How many jobs failed.
    failures: u64,
}

impl Scheduler {
    fn new(
        server: ForkServer,
        jobs: Vec<Job>,
        report: Option<Arc<ReportStream>>,
        max_fail: Option<u64>,
    ) -> Scheduler {
        Scheduler {
            lanes: vec![None; server.lanes()],
            verdicts: std::iter::repeat_with(|| None).take(jobs.len()).collect(),
            server,
            jobs,
            next: 0,
            report,
            max_fail,
            failures: 0,
        }
    }

    /// Whether enough jobs failed that no more are sent.
    fn failed_enough(&self) -> bool {
        self.max_fail.is_some_and(|max| self.failures >= max)
    }

    /// The verdict of job `position`, once it has run.
    fn verdict(&mut self, position: usize) -> Result<(), Failed> {
        loop {
            if let Some(verdict) = self.verdicts.get_mut(position).and_then(Option::take) {
                return verdict;
            }
            self.send();
            if !self.server.busy() {
                if self.failed_enough() {
                    return Err(Failed::from(NOT_RUN_FAILED_ENOUGH));
                }
                if self.server.broken() {
                    return Err(Failed::from(
                        "could not be run: no channel to the fork server is left",
                    ));
                }
                return Err(Failed::from("could not be run: it was never scheduled"));
            }
            if let Some(report) = &self.report {
                report.flush();
            }
            for (lane, run) in self.server.wait() {
                if let Some(job) = self.lanes[lane].take() {
                    self.ended(job, &run);
                }
            }
        }
    }

    /// Sends the next jobs on every idle lane.
    fn send(&mut self) {
        while self.next < self.jobs.len()
            && !self.failed_enough()
            && let Some(lane) = self.server.idle_lane()
        {
            let position = self.next;
            self.next += 1;
            let job = &self.jobs[position];
            if let Some(report) = &self.report {
                report.started(&job.name);
            }
            match self.server.send(lane, job.request) {
                Ok(()) => self.lanes[lane] = Some(position),
                Err(reason) => self.ended(position, &broken(Instant::now(), reason)),
            }
        }
    }

    /// Weighs job `position`, which ended with `run`.
    fn ended(&mut self, position: usize, run: &TestRun) {
        let job = &self.jobs[position];
        let verdict = conclude(&job.name, &job.options, run, self.report.as_deref());
        self.failures += u64::from(verdict.is_err());
        self.verdicts[position] = Some(verdict);
    }
}

/// Weighs how test `name` ended against its `options`, says what it left
/// running, and reports it: the trial's outcome.
fn conclude(
    name: &str,
    options: &TestOptions,
    run: &TestRun,
    report: Option<&ReportStream>,
) -> Result<(), Failed> {
    let verdict = verdict(run, options);
    if !run.leftovers.is_empty() {
        eprintln!(
            "isolate: test {name} left {} process(es) running, now killed: {}",
            run.leftovers.len(),
            leftover_list(run)
        );
    }
    if let Some(report) = report {
        report.finished(name, run, &verdict);
    }
    verdict.map_err(|message| Failed::from(with_output(message, run)))
}

/// The tests of the run: the registry's and those `added` by hand (name
/// and options, in the order they were added), sorted by name as libtest
/// sorts them, only those named in `ISOLATE_ONLY` if it is set, and only
/// those `named` selects.
fn test_list(
    added: Vec<(String, TestOptions)>,
    only: Option<&HashSet<String>>,
    named: impl Fn(&str) -> bool,
) -> Vec<TestEntry> {
    let registered = __private::TESTS.iter().zip(0..).map(|(describe, index)| {
        let case = describe();
        TestEntry {
            name: registered_name(&case),
            id: TestId::Registered(index),
            options: case.options,
        }
    });
    let added = added
        .into_iter()
        .zip(0..)
        .map(|((name, options), index)| TestEntry {
            name,
            id: TestId::Added(index),
            options,
        });
    let mut tests: Vec<TestEntry> = registered.chain(added).collect();
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = tests.windows(2).find(|pair| pair[0].name == pair[1].name) {
        panic!(
            "isolate: two tests are named {:?}, and a verdict could not say which it is on: \
             give each test a name of its own",
            pair[0].name
        );
    }
    tests.retain(|test| only.is_none_or(|only| only.contains(&test.name)) && named(&test.name));
    tests
}

/// libtest's command line, parsed by libtest-mimic's own parser but for
/// the name filters: libtest-mimic takes one, libtest any number, which
/// are returned apart.
fn arguments(args: impl IntoIterator<Item = std::ffi::OsString>) -> (Arguments, Vec<String>) {
    let mut matches = Arguments::command()
        .mut_arg("filter", |filter| {
            filter.action(clap::ArgAction::Append).num_args(1..)
        })
        .get_matches_from(args);
    let filters = matches
        .remove_many::<String>("filter")
        .map(Iterator::collect)
        .unwrap_or_default();
    let args = Arguments::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| error.exit());
    (args, filters)
}

/// The name of a registered test: libtest names a test by its path
/// without the crate's name.
fn registered_name(case: &__private::TestCase) -> String {
    match case.module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{}", case.name),
        None => case.name.to_owned(),
    }
}

/// Whether `runs` holds for any test of the binary, asked one name at a
/// time: before the fork servers start, no list of every test may be
/// built (see `TestTable`).
fn any_test(
    added: &[(String, TestOptions)],
    mut runs: impl FnMut(String, &TestOptions) -> bool,
) -> bool {
    __private::TESTS.iter().any(|describe| {
        let case = describe();
        runs(registered_name(&case), &case.options)
    }) || added
        .iter()
        .any(|(name, options)| runs(name.clone(), options))
}

/// What a runner tells the harness in the environment.
struct RunnerSettings {
    /// `ISOLATE_REPORT_FD`: where to write the report stream.
    report: Option<ReportStream>,
    /// `ISOLATE_ONLY`: the file that names the tests a runner asked for,
    /// one per line, as read. A runner that picked the tests itself passes
    /// them this way rather than as thousands of `--skip` arguments. (Made
    /// a set only once the fork servers are forked: a set of thousands of
    /// names, each allocated, would cost every fork; the text is a few
    /// pages.)
    only: Option<String>,
    /// `ISOLATE_DEFAULT_TIMEOUT_MS`: the timeout of every test that sets
    /// none (`cargo isolate test --timeout`).
    default_timeout: Option<Duration>,
    /// `ISOLATE_DEFAULT_MEMORY_LIMIT`: the memory limit, in bytes, of every
    /// test that sets none (`cargo isolate test --memory-limit`).
    default_memory_limit: Option<u64>,
    /// `ISOLATE_GRACE_PERIOD_MS`: the time between a timed-out test's
    /// SIGTERM and its SIGKILL (a profile's `slow-timeout.grace-period`);
    /// [`GRACE_PERIOD`] without it.
    grace_period: Duration,
    /// `ISOLATE_MAX_FAIL`: after this many tests failed, start no more
    /// (`cargo isolate test --max-fail`, what of it the run has left); the
    /// tests that run finish, and the rest are not reported.
    max_fail: Option<u64>,
}

/// The variables of [`RunnerSettings`].
const RUNNER_VARIABLES: [&str; 6] = [
    report_stream::REPORT_FD_VAR,
    "ISOLATE_ONLY",
    "ISOLATE_DEFAULT_TIMEOUT_MS",
    "ISOLATE_DEFAULT_MEMORY_LIMIT",
    "ISOLATE_GRACE_PERIOD_MS",
    "ISOLATE_MAX_FAIL",
];

impl RunnerSettings {
    /// Reads the settings and removes their variables from the environment,
    /// so that no test sees them: a test that runs a harness of its own
    /// must not hand it this run's descriptor or choice of tests.
    fn take_from_env() -> RunnerSettings {
        let settings = RunnerSettings {
            report: ReportStream::from_env(),
            only: only_tests(),
            default_timeout: positive_number("ISOLATE_DEFAULT_TIMEOUT_MS")
                .map(Duration::from_millis),
            default_memory_limit: positive_number("ISOLATE_DEFAULT_MEMORY_LIMIT"),
            grace_period: positive_number("ISOLATE_GRACE_PERIOD_MS")
                .map_or(GRACE_PERIOD, Duration::from_millis),
            max_fail: positive_number("ISOLATE_MAX_FAIL"),
        };
        for name in RUNNER_VARIABLES {
            // SAFETY: the harness runs at the start of `main`, before it
            // starts a thread (the fork rule requires as much), so no other
            // thread reads the environment meanwhile.
            unsafe { std::env::remove_var(name) };
        }
        settings
    }
}

/// The text of the file `ISOLATE_ONLY` names, read before a shared setup
/// may drop the privileges to read it.
fn only_tests() -> Option<String> {
    let path = std::env::var_os("ISOLATE_ONLY")?;
    match std::fs::read_to_string(&path) {
        Ok(names) => Some(names),
        Err(error) => {
            eprintln!(
                "isolate: cannot read ISOLATE_ONLY ({}): {error}",
                path.to_string_lossy()
            );
            std::process::exit(101);
        }
    }
}

/// The number above zero in the variable `name`, if it holds one.
fn positive_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()?
        .parse()
        .ok()
        .filter(|number| *number > 0)
}

/// The time a timed-out test has between SIGTERM and SIGKILL.
const GRACE_PERIOD: Duration = Duration::from_secs(1);

fn listed(test: &TestEntry) -> Trial {
    Trial::test(test.name.clone(), || Ok(())).with_ignored_flag(test.options.ignore.is_some())
}

/// Whether a test runs on a thread of this process now, for [`exit_trap`].
static RUNNING_IN_PROCESS: AtomicBool = AtomicBool::new(false);

/// Runs when the process exits: if a test running in this process called
/// `exit`, that is a failure, even `exit(0)`, which would otherwise read as
/// a pass.
extern "C" fn exit_trap() {
    if RUNNING_IN_PROCESS.load(Ordering::SeqCst) {
        let message = b"isolate: the test exited the process before finishing\n";
        // SAFETY: write and _exit take valid arguments; this ends the
        // process with libtest's failure code instead of the test's.
        unsafe {
            libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len());
            libc::_exit(101);
        }
    }
}

/// Runs a test on the calling thread: under nextest, which runs every test
/// in a process of its own already.
fn run_in_process(function: Function<'_>) -> TestRun {
    static TRAP: std::sync::Once = std::sync::Once::new();
    // SAFETY: `exit_trap` is an `extern "C" fn()` that stays valid for the
    // life of the process.
    TRAP.call_once(|| unsafe {
        libc::atexit(exit_trap);
    });
    let started = std::time::Instant::now();
    server::prepare_to_fork();
    RUNNING_IN_PROCESS.store(true, Ordering::SeqCst);
    let ending = match server::catch(|| function.call()) {
        Ok(result) => Ending::Returned(result),
        Err(message) => Ending::Panicked(message.into_report()),
    };
    RUNNING_IN_PROCESS.store(false, Ordering::SeqCst);
    TestRun {
        ending,
        stdout: CapturedStream::default(),
        stderr: CapturedStream::default(),
        leftovers: Vec::new(),
        duration: started.elapsed(),
    }
}

/// Weighs how a test ended against how it was expected to end: `Err` holds
/// the failure message.
fn verdict(run: &TestRun, options: &TestOptions) -> Result<(), String> {
    match options.expect {
        Expect::Return => expect_return(run, options),
        Expect::Signal(expected) => match &run.ending {
            Ending::Died(termination)
                if termination
                    .signal()
                    .is_some_and(|signal| signal.name() == expected) =>
            {
                Ok(())
            }
            ending => Err(format!(
                "expected to die by {expected}, but {}",
                describe_ending(ending)
            )),
        },
        Expect::Exit(expected) => match &run.ending {
            Ending::Died(Termination::Exited { code }) if *code == expected => Ok(()),
            ending => Err(format!(
                "expected to exit with code {expected}, but {}",
                describe_ending(ending)
            )),
        },
    }
}

fn expect_return(run: &TestRun, options: &TestOptions) -> Result<(), String> {
    match (&run.ending, options.should_panic) {
        (Ending::Returned(Ok(())), None) => Ok(()),
        (Ending::Returned(Ok(())), Some(_)) => Err("test did not panic as expected".to_owned()),
        (Ending::Returned(Err(error)), _) => Err(format!("returned Err: {error}")),
        (Ending::Panicked(_), Some(None)) => Ok(()),
        (Ending::Panicked(report), Some(Some(expected))) if report.message.contains(expected) => {
            Ok(())
        }
        (Ending::Panicked(report), Some(Some(expected))) => Err(format!(
            "panic did not contain expected string\n      panic message: {:?}\n expected substring: {expected:?}",
            report.message
        )),
        (panicked @ Ending::Panicked(_), None) => Err(describe_ending(panicked)),
        (ending, _) => Err(format!("the test {}", describe_ending(ending))),
    }
}

/// How a test ended, as a phrase that reads after "the test" or "but".
fn describe_ending(ending: &Ending) -> String {
    match ending {
        Ending::Returned(Ok(())) => "returned normally".to_owned(),
        Ending::Returned(Err(error)) => format!("returned Err: {error}"),
        Ending::Panicked(report) => {
            let mut text = report.to_string();
            if let Some(backtrace) = &report.backtrace {
                text.push_str(&format!("\nstack backtrace:\n{backtrace}"));
            }
            text
        }
        Ending::Died(termination) => describe_termination(termination),
        Ending::TimedOut {
            limit,
            grace_period,
            termination,
        } => match termination.signal().map(Signal::number) {
            Some(libc::SIGKILL) => format!(
                "timed out after {limit:?}, ignored SIGTERM for {grace_period:?} and was killed by SIGKILL"
            ),
            _ => format!("timed out after {limit:?} and was {termination}"),
        },
        Ending::Broken(reason) => format!("could not be run: {reason}"),
    }
}

fn describe_termination(termination: &Termination) -> String {
    let mut text = match termination {
        Termination::Exited { code } => format!("exited with code {code} before finishing"),
        _ => format!("was {termination}"),
    };
    if let Some(crash) = termination.crash() {
        if crash.is_allocation_failure() {
            text.push_str(": an allocation failed (out of memory, or over its memory limit)");
        }
        if !crash.backtrace.is_empty() {
            text.push_str(&format!("\ncrash site:\n{}", crash.backtrace));
        }
    }
    text
}

fn with_output(mut message: String, run: &TestRun) -> String {
    for (name, stream) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        if !stream.is_empty() {
            message.push_str(&format!("\n---- {name} ----\n{}", stream.to_text()));
        }
    }
    message
}

fn leftover_list(run: &TestRun) -> String {
    run.leftovers
        .iter()
        .map(|leftover| format!("{} ({})", leftover.pid, leftover.command))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The JSON lines written to `ISOLATE_REPORT_FD`.
///
/// Lines are added as tests start and end, and written together whenever
/// the harness is about to wait (for a test to end, or for its own exit):
/// a reader has every line before the harness sleeps, in one write per
/// wake-up of the harness rather than one per line, and wakes as seldom.
struct ReportStream {
    /// The descriptor, and the lines not written yet.
    out: Mutex<(File, Vec<u8>)>,
}

impl ReportStream {
    fn from_env() -> Option<ReportStream> {
        let fd: i32 = std::env::var(report_stream::REPORT_FD_VAR)
            .ok()?
            .parse()
            .ok()?;
        // The descriptor must be open, and not one of the standard streams.
        if fd <= 2
            || nix::fcntl::fcntl(
                // SAFETY: only borrowed for the check; validity is what is checked.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_GETFD,
            )
            .is_err()
        {
            return None;
        }
        // SAFETY: the runner that set the variable handed this descriptor
        // to the harness, which takes it over for the rest of the run.
        let file = unsafe { File::from_raw_fd(fd) };
        // Nothing the harness or a test executes inherits it.
        let _ = nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Some(ReportStream {
            out: Mutex::new((file, Vec::new())),
        })
    }

    /// The stream's descriptor, to be closed in the fork servers.
    fn raw_fd(&self) -> RawFd {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .as_raw_fd()
    }

    /// Adds `line` and a newline to the lines not written yet.
    fn add(&self, line: &impl Serialize) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let buffer = &mut out.1;
        let start = buffer.len();
        match serde_json::to_writer(&mut *buffer, line) {
            Ok(()) => buffer.push(b'\n'),
            Err(_) => buffer.truncate(start),
        }
    }

    /// Writes the lines added since the last flush.
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, buffer) = &mut *out;
        if !buffer.is_empty() {
            let _ = file.write_all(buffer);
            buffer.clear();
        }
    }

    fn started(&self, name: &str) {
        self.add(&Line::Started(Started::new(name)));
    }

    fn finished(&self, name: &str, run: &TestRun, verdict: &Result<(), String>) {
        self.add(&Line::Finished(Finished::new(name, run, verdict)));
    }
}

/// The `main` of a `harness = false` test target: runs every test marked
/// `#[isolate_harness::test]` in the binary.
#[macro_export]
macro_rules! main {
    () => {
        fn main() {
            $crate::Harness::new().run()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of the panic `run` ends in.
    fn panic_of(run: impl FnOnce() + std::panic::UnwindSafe) -> String {
        std::panic::catch_unwind(run)
            .err()
            .and_then(|payload| payload.downcast::<String>().ok())
            .map_or_else(|| "no panic".to_owned(), |message| *message)
    }

    #[test]
    fn a_test_name_a_runner_cannot_pass_back_is_refused() {
        for name in [
            "two\nlines",
            "carriage\rreturn",
            "nul\0byte",
            "an \u{1b}[2J escape",
            "-looks-like-an-option",
        ] {
            let message = panic_of(|| drop(Harness::new().test(name, || {})));
            assert!(
                message.contains("contains a control character or starts with `-`"),
                "{name:?}: {message}"
            );
        }
        assert_eq!(Harness::new().test("one - line", || {}).added.len(), 1);
    }

    #[test]
    fn two_tests_of_one_name_are_refused() {
        let added = vec![
            ("twice".to_owned(), TestOptions::new()),
            ("once".to_owned(), TestOptions::new()),
            ("twice".to_owned(), TestOptions::new()),
        ];
        let message = panic_of(|| drop(test_list(added, None, |_| true)));
        assert!(
            message.contains("two tests are named \"twice\""),
            "{message}"
        );
    }
}
