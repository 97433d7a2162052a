//! Plain libtest binaries: a test per process, or a batch of tests per
//! process (`--isolation batch`); their verdicts, from libtest's log and the
//! process's status, and their output, split between tests and freed of
//! libtest's framing.
//!
//! libtest on stable Rust says how each test ended in two places: its
//! human output, which a test can write too, and the log file of
//! `--logfile` (deprecated, but the only record of its verdicts that it
//! writes apart from the test's output; its JSON output is unstable).
//! The log is read; the warning libtest prints for `--logfile`, glued to
//! the start of its stderr, is taken out of the test's output.
//!
//! In a batch, a test's stdout and stderr go to one file, in the order they
//! were written, so that libtest's `test NAME ... ` line before each test
//! splits both exactly between the tests; a test's output in a batch is
//! that one stream, reported as its stdout (as libtest's own capture keeps
//! a test's output). Each test's duration is measured from the moment its
//! log record is seen (within [`BATCH_POLL`]) to the next's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use isolate_harness::Signal;
use nix::sys::signal::Signal as NixSignal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::capture::{
    KEPT_OUTPUT, ScratchFileError, kept, named_scratch_file, output_file, read_kept,
};
use super::watchdog::{Ended, Fired, Watchdog, reap, wait_unreaped};
use super::with_causes;
use super::{
    INTERRUPTED_WHILE_RUNNING, RunPlan, Status, TestOutcome, TestSettings, outcome, test_command,
};
use crate::build::TestBinary;
use crate::config::MemoryLimit;

/// libtest running `names` one after another, each as it would run alone:
/// ignored or not, its output taken as `capture` says, and every result
/// logged to `logfile`; within the memory limit of `settings`.
fn libtest_command<S: AsRef<std::ffi::OsStr>>(
    binary: &TestBinary,
    names: impl IntoIterator<Item = S>,
    settings: &TestSettings,
    logfile: &Path,
    capture: Capture,
) -> Command {
    let mut command = test_command(binary);
    if let Some(limit) = &settings.memory_limit {
        limit_memory(&mut command, limit);
    }
    command
        .arg("--exact")
        .args(names)
        .args(["--test-threads", "1", "--include-ignored"])
        .args(match capture {
            Capture::Libtest { passing: true } => Some("--show-output"),
            Capture::Libtest { passing: false } => None,
            Capture::Streamed => Some("--nocapture"),
        })
        .arg("--logfile")
        .arg(logfile);
    command
}

/// Limits the address space (`RLIMIT_AS`) of the process `command` starts
/// to `limit`, from before it runs: set in the child between `fork` and
/// `exec`, so that no allocation of the test comes first (a limit set
/// from here once the process runs would race it). The process is the
/// target runner where there is one. Past the limit, an allocation fails:
/// Rust's allocator then aborts with a message, read as out of memory by
/// [`libtest_verdict`].
#[expect(
    unsafe_code,
    reason = "a limit reaches a process before it runs only from between fork and exec"
)]
fn limit_memory(command: &mut Command, limit: &MemoryLimit) {
    use nix::sys::resource::{Resource, setrlimit};
    use std::os::unix::process::CommandExt;
    let bytes = limit.bytes;
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe functions may be called: it makes one system
    // call, setrlimit(2), and neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_AS, bytes, bytes).map_err(io::Error::from)
        });
    }
}

/// How a libtest process's output is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    /// libtest captures what the test prints (`print!`, `eprint!`, its
    /// panic) in memory, and writes it in one block once the test is over,
    /// for a failure, and for a pass too where `passing` asks for it
    /// (`--show-output`): a test that prints a hundred megabytes in short
    /// lines costs what it costs under `cargo test`, where each line
    /// written as it comes would be a system call. What the test writes to
    /// its descriptors itself still goes to them as it comes. A process
    /// that dies takes the block with it.
    Libtest {
        /// Whether a passing test's block is written too.
        passing: bool,
    },
    /// Everything written as it comes (`--nocapture`): to files, or to the
    /// terminal with `--no-capture`.
    Streamed,
}

/// Runs one test of a libtest binary in a process of its own.
pub(super) fn run_libtest(
    binary: &TestBinary,
    name: &str,
    settings: &TestSettings,
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> TestOutcome {
    let started = Instant::now();
    let mut outcome =
        run_libtest_process(binary, name, settings, plan, watchdog).unwrap_or_else(|error| {
            outcome(
                binary,
                name,
                Status::Broken,
                format!("could not run the test: {}", with_causes(&error)),
            )
        });
    outcome.duration = started.elapsed();
    outcome
}

/// Why a libtest process could not be run, or waited for.
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Scratch(#[from] ScratchFileError),
    #[error("failed to give its stdout and stderr one file")]
    Output(#[source] io::Error),
    #[error("failed to spawn {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to wait for its process")]
    Wait(#[source] io::Error),
}

/// Spawns `command`, the process of `binary`, where the watchdog contains
/// the calling thread's tests, and returns it with its pid.
fn spawn(
    command: Command,
    binary: &TestBinary,
    watchdog: &Watchdog,
) -> Result<(Child, Pid), ProcessError> {
    let child = watchdog
        .spawn(command)
        .map_err(|source| ProcessError::Spawn {
            path: binary.path.clone(),
            source,
        })?;
    let pid =
        i32::try_from(child.id()).map_err(|error| ProcessError::Wait(io::Error::other(error)))?;
    Ok((child, Pid::from_raw(pid)))
}

fn run_libtest_process(
    binary: &TestBinary,
    name: &str,
    settings: &TestSettings,
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> Result<TestOutcome, ProcessError> {
    if plan.nocapture {
        return Ok(attempt(binary, name, settings, plan, watchdog, Capture::Streamed)?.outcome);
    }
    let first = attempt(
        binary,
        name,
        settings,
        plan,
        watchdog,
        Capture::Libtest {
            passing: plan.passing_output,
        },
    )?;
    let failed = matches!(
        first.outcome.status,
        Status::Failed | Status::Crashed { .. } | Status::ExitedEarly { .. }
    );
    // Run again, its output written as it comes, when the first run could
    // not tell all: a failure whose backtrace was not made, or a death
    // that took what libtest had captured with it.
    if !failed || !(first.quieted || first.logged.is_none()) {
        return Ok(first.outcome);
    }
    let second = attempt(binary, name, settings, plan, watchdog, Capture::Streamed)?;
    Ok(after_second_run(
        first.outcome,
        second.outcome,
        first.quieted,
    ))
}

/// One run of a libtest test in a process of its own, and libtest's
/// verdict on it, if it logged one.
struct Attempt {
    outcome: TestOutcome,
    logged: Option<Logged>,
    /// Whether it ran without the backtraces its environment asked for.
    quieted: bool,
}

/// The environment variables that ask Rust for backtraces.
const BACKTRACE_VARIABLES: [&str; 2] = ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"];

/// The value of `variable` in the environment of `command`: set by the
/// command, else inherited from this process.
fn variable(command: &Command, variable: &str) -> Option<std::ffi::OsString> {
    command
        .get_envs()
        .find(|(key, _)| *key == variable)
        .map_or_else(
            || std::env::var_os(variable),
            |(_, value)| value.map(Into::into),
        )
}

/// Whether the test `command` would run with backtraces asked for: a
/// backtrace variable set to anything but `0`.
fn backtraces_asked(command: &Command) -> bool {
    BACKTRACE_VARIABLES
        .into_iter()
        .any(|name| variable(command, name).is_some_and(|value| value != "0"))
}

/// Runs the test without backtraces on panics: `RUST_BACKTRACE=0`, with
/// `RUST_LIB_BACKTRACE` set to what `RUST_BACKTRACE` said where it was not
/// set, so that a backtrace the test captures itself
/// (`std::backtrace::Backtrace::capture`) is made as it would be.
fn without_panic_backtraces(command: &mut Command) {
    if variable(command, "RUST_LIB_BACKTRACE").is_none()
        && let Some(value) = variable(command, "RUST_BACKTRACE")
    {
        command.env("RUST_LIB_BACKTRACE", value);
    }
    command.env("RUST_BACKTRACE", "0");
}

/// A failure told by a second run (see [`run_libtest_process`]). The
/// first run's verdict stands, whatever the second does: a test that
/// failed once failed (only retries make a test flaky). The second gives
/// the output: the backtraces the first ran without (`quiet_backtraces`),
/// or what the first printed before a death took libtest's capture with
/// it. Where the second ended otherwise, the message says how, and a first
/// run that was only quieted keeps its own output.
fn after_second_run(
    first: TestOutcome,
    second: TestOutcome,
    quiet_backtraces: bool,
) -> TestOutcome {
    let leaked = first.leaked + second.leaked;
    let same = second.status == first.status;
    let message = if same {
        first.message
    } else {
        let again = if second.status == Status::Passed {
            "passed".to_owned()
        } else {
            second.message
        };
        let why = if quiet_backtraces {
            "run again to show the backtraces asked for"
        } else {
            "what it printed is from a second run, since libtest's capture died with the first"
        };
        format!("{} ({why}; that run {again})", first.message)
    };
    let (stdout, stderr) = if same || !quiet_backtraces {
        (second.stdout, second.stderr)
    } else {
        (first.stdout, first.stderr)
    };
    TestOutcome {
        message,
        stdout,
        stderr,
        leaked,
        ..first
    }
}

fn attempt(
    binary: &TestBinary,
    name: &str,
    settings: &TestSettings,
    plan: &RunPlan,
    watchdog: &Watchdog,
    capture: Capture,
) -> Result<Attempt, ProcessError> {
    let logfile = named_scratch_file()?;
    let mut command = libtest_command(binary, [name], settings, logfile.path(), capture);
    // A backtrace is made (symbolized, in a fresh process, at some tens of
    // milliseconds) for every panic, the expected ones of `should_panic`
    // tests included, and shown only for a failure: under libtest's
    // capture, the test runs without, and again with them if it fails (see
    // `run_libtest_process`).
    let quieted = matches!(capture, Capture::Libtest { .. }) && backtraces_asked(&command);
    if quieted {
        without_panic_backtraces(&mut command);
    }
    // Output goes to files, read once the test is over; with --nocapture,
    // to the terminal.
    let captured = if plan.nocapture {
        command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        None
    } else {
        let (stdout, stdout_writer) = output_file()?;
        let (stderr, stderr_writer) = output_file()?;
        command.stdout(stdout_writer).stderr(stderr_writer);
        Some((stdout, stderr))
    };
    let (mut child, pid) = spawn(command, binary, watchdog)?;
    watchdog.watch(pid, settings.limits, Some((binary, name)));
    wait_unreaped(pid).map_err(ProcessError::Wait)?;
    let Ended {
        status,
        fired,
        leaked,
    } = reap(&mut child, pid, watchdog).map_err(ProcessError::Wait)?;
    let mut log = Log::new([name]);
    let mut bytes = Vec::new();
    read_log(logfile.as_file(), &mut bytes);
    let logged = libtest_s_record(log.read(&bytes)).map(|logged| match logged {
        Logged::Failed(None) => Logged::Failed(reported_failure(&bytes, name)),
        logged => logged,
    });
    let (stdout, stderr, told) = captured
        .map(|(stdout, stderr)| {
            let stdout = read_kept(stdout, KEPT_OUTPUT);
            let stderr = without_libtest_lines(&read_kept(stderr, KEPT_OUTPUT), name);
            match capture {
                // The failure is told in the captured block.
                Capture::Libtest { .. } => {
                    let (written, block) = split_captured(&stdout, name);
                    let told = format!("{block}{stderr}");
                    (
                        join_output(&without_libtest_lines(written, name), block),
                        stderr,
                        told,
                    )
                }
                Capture::Streamed => {
                    let told = stderr.clone();
                    (without_libtest_lines(&stdout, name), stderr, told)
                }
            }
        })
        .unwrap_or_default();
    let (status, message) = libtest_verdict(logged.as_ref(), &told, name, status, fired, settings);
    Ok(Attempt {
        outcome: TestOutcome {
            binary: binary.clone(),
            name: name.to_owned(),
            status,
            message,
            duration: Duration::ZERO,
            stdout,
            stderr,
            leaked,
            attempts: 1,
            flaky: false,
            max_attempts: 1,
        },
        logged,
        quieted,
    })
}

/// libtest's stdout for test `name` run alone with `--show-output`, split
/// into what the test wrote to the descriptor itself while it ran (with
/// libtest's lines around it) and the block libtest captured, which it
/// writes in its summary under `---- NAME stdout ----` and before the list
/// of the tests that passed or failed.
fn split_captured<'t>(stdout: &'t str, name: &str) -> (&'t str, &'t str) {
    let header = format!("\n---- {name} stdout ----\n");
    let (written, block) = match stdout.find(&header) {
        Some(start) => {
            let block = &stdout[start + header.len()..];
            let end = ["successes", "failures"]
                .iter()
                .filter_map(|list| block.rfind(&format!("\n\n{list}:\n    {name}\n")))
                .max()
                .unwrap_or(block.len());
            (&stdout[..start], &block[..end])
        }
        None => (
            stdout
                .rfind("\ntest result: ")
                .map_or(stdout, |end| &stdout[..end]),
            "",
        ),
    };
    // The summary's headings that come before the block, or before the
    // result when there is none.
    let mut written = written;
    loop {
        let body = written.trim_end_matches('\n');
        let line = body.rsplit('\n').next().unwrap_or_default();
        let heading =
            matches!(line, "successes:" | "failures:") || line.strip_prefix("    ") == Some(name);
        if body.is_empty() || !heading {
            break (written, block);
        }
        written = &body[..body.len() - line.len()];
    }
}

/// What a test wrote itself, then what libtest captured of it.
fn join_output(written: &str, captured: &str) -> String {
    match (written.is_empty(), captured.is_empty()) {
        (_, true) => written.to_owned(),
        (true, false) => captured.to_owned(),
        (false, false) if written.ends_with('\n') => format!("{written}{captured}"),
        (false, false) => format!("{written}\n{captured}"),
    }
}

/// Bytes of a batch's output read to split it between its tests.
const BATCH_OUTPUT: usize = 16 * 1024 * 1024;

/// How often a batch's log is read while it runs.
const BATCH_POLL: Duration = Duration::from_millis(5);

/// Runs `names` of a libtest binary in one process, in sequence. Returns
/// the outcomes of the tests that ran and, if the process died mid-way,
/// the names that are left.
pub(super) fn run_batch(
    binary: &TestBinary,
    names: &[String],
    settings: &TestSettings,
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> (Vec<TestOutcome>, Vec<String>) {
    let started = Instant::now();
    match run_batch_process(binary, names, settings, plan, watchdog) {
        Ok(ran) => ran,
        Err(error) => {
            let outcomes = names
                .iter()
                .map(|name| {
                    let mut outcome = outcome(
                        binary,
                        name,
                        Status::Broken,
                        format!("could not run the batch: {}", with_causes(&error)),
                    );
                    outcome.duration = started.elapsed();
                    outcome
                })
                .collect();
            (outcomes, Vec::new())
        }
    }
}

fn run_batch_process(
    binary: &TestBinary,
    names: &[String],
    settings: &TestSettings,
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> Result<(Vec<TestOutcome>, Vec<String>), ProcessError> {
    let logfile = named_scratch_file()?;
    let (output, stdout_writer) = output_file()?;
    let stderr_writer = stdout_writer.try_clone().map_err(ProcessError::Output)?;
    let capture = Capture::Libtest {
        passing: plan.passing_output,
    };
    let mut command = libtest_command(binary, names, settings, logfile.path(), capture);
    command.stdout(stdout_writer).stderr(stderr_writer);
    let mut batch = Batch::new(names, Instant::now());
    let (mut child, pid) = spawn(command, binary, watchdog)?;
    watchdog.watch(
        pid,
        settings.limits,
        batch.running().map(|first| (binary, first)),
    );
    // The log is read as it grows: each test's end starts the next one's
    // clock and timeout.
    let mut log = Log::new(names.iter().map(String::as_str));
    let mut bytes = Vec::new();
    loop {
        let exited = match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
        ) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => false,
            Ok(_) => true,
            Err(error) => return Err(ProcessError::Wait(error.into())),
        };
        bytes.clear();
        read_log(logfile.as_file(), &mut bytes);
        let running = batch.running();
        batch.logged(log.read(&bytes), Instant::now());
        if exited {
            break;
        }
        if batch.running() != running {
            if let Some(ended) = running {
                watchdog.untime(pid, ended);
            }
            if let Some(next) = batch.running() {
                watchdog.time(pid, binary, next, settings.limits);
            }
            if let Some(timeout) = settings.limits.timeout {
                watchdog.rearm(pid, timeout);
            }
        }
        std::thread::sleep(BATCH_POLL);
    }
    let Ended {
        status,
        fired,
        leaked,
    } = reap(&mut child, pid, watchdog).map_err(ProcessError::Wait)?;
    let ended = Instant::now();
    let output = read_kept(output, BATCH_OUTPUT);
    // A harness that takes one name filter (libtest-mimic's) refuses a
    // batch outright, before any test: each test runs alone instead.
    if names.len() > 1
        && batch.order.is_empty()
        && status.code() == Some(2)
        && output.contains("unexpected argument")
    {
        let alone = names
            .iter()
            .map(|name| run_libtest(binary, name, settings, plan, watchdog))
            .collect();
        return Ok((alone, Vec::new()));
    }
    let segments = split_by_test(&output, names);
    let blocks = captured_blocks(&output[segments.summary..], names);
    let text = |name: &str| {
        let written = segments.get(name).map_or("", String::as_str);
        kept(&join_output(
            written,
            blocks.get(name).copied().unwrap_or_default(),
        ))
    };
    // A process that died took what libtest had captured of the tests
    // before with it.
    let died = !batch.waiting.is_empty();
    let mut outcomes = Vec::new();
    for (name, logged) in &batch.order {
        let output = text(name);
        let (status, message) = match logged {
            Logged::Passed => (Status::Passed, String::new()),
            Logged::Failed(note) => {
                let mut message = failure_message(note.as_deref(), &output, name);
                if died && !blocks.contains_key(name) {
                    message.push_str(
                        " (what it printed went with the batch's process, which died in a later \
                         test)",
                    );
                }
                (Status::Failed, message)
            }
        };
        let mut outcome = outcome(binary, name, status, message);
        outcome.stdout = output;
        outcome.duration = batch.durations.get(name).copied().unwrap_or_default();
        outcomes.push(outcome);
    }
    let mut rest: Vec<String> = batch
        .waiting
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    if !rest.is_empty() {
        // The test that was running when the process died: the last one
        // libtest announced, else the first of the rest in libtest's order.
        let running = segments
            .order
            .iter()
            .rev()
            .find(|name| batch.waiting.contains(name.as_str()))
            .cloned()
            .unwrap_or_else(|| rest[0].clone());
        rest.retain(|name| *name != running);
        let output = text(&running);
        let (status, message) = libtest_verdict(None, &output, &running, status, fired, settings);
        let mut outcome = outcome(binary, &running, status, message);
        outcome.stdout = output;
        outcome.duration = ended.saturating_duration_since(batch.last_end);
        // What it printed went with it: run alone again, as it comes.
        if matches!(
            outcome.status,
            Status::Crashed { .. } | Status::ExitedEarly { .. }
        ) {
            let second = attempt(
                binary,
                &running,
                settings,
                plan,
                watchdog,
                Capture::Streamed,
            )?;
            outcome = after_second_run(outcome, second.outcome, false);
        }
        outcomes.push(outcome);
    }
    if let Some(last) = outcomes.last_mut() {
        last.leaked = leaked;
    }
    Ok((outcomes, rest))
}

/// What a batch's log said so far: each test's verdict, and how long each
/// test took, from when the log was read.
struct Batch<'a> {
    /// The tests not logged yet, in the order libtest runs them: by name.
    waiting: BTreeSet<&'a str>,
    /// The tests logged, in the order of their first record, each with
    /// its last verdict.
    order: Vec<(&'a str, Logged)>,
    durations: HashMap<&'a str, Duration>,
    /// When the log was last read.
    last_read: Instant,
    /// When the last test logged was seen to end.
    last_end: Instant,
}

impl<'a> Batch<'a> {
    /// A batch of `names`, started at `started`.
    fn new(names: &'a [String], started: Instant) -> Batch<'a> {
        Batch {
            waiting: names.iter().map(String::as_str).collect(),
            order: Vec::new(),
            durations: HashMap::new(),
            last_read: started,
            last_end: started,
        }
    }

    /// The test that runs now, as far as the log says.
    fn running(&self) -> Option<&'a str> {
        self.waiting.first().copied()
    }

    /// Takes the `records` read from the log at `now`. A test whose first
    /// record they are ended since the log was last read: the first such
    /// test ran from the end of the one before, and what time passed since
    /// the last read is shared between them all.
    fn logged(&mut self, records: Vec<(&'a str, Logged)>, now: Instant) {
        let mut ended = Vec::new();
        for (name, logged) in records {
            if self.waiting.remove(name) {
                ended.push(name);
                self.order.push((name, logged));
            } else if let Some((_, last)) = self.order.iter_mut().find(|(done, _)| *done == name) {
                // A later record for the same test: the last is libtest's.
                *last = logged;
            }
        }
        if let Ok(count) = u32::try_from(ended.len())
            && count > 0
        {
            let share = now.saturating_duration_since(self.last_read) / count;
            let before = self.last_read.saturating_duration_since(self.last_end);
            for (index, name) in ended.into_iter().enumerate() {
                let duration = if index == 0 { before + share } else { share };
                self.durations.insert(name, duration);
            }
            self.last_end = now;
        }
        self.last_read = now;
    }
}

/// A batch's output cut into the output of each of its tests, and the
/// order libtest announced them in (`test NAME ... ` starts each).
struct Segments {
    order: Vec<String>,
    text: HashMap<String, String>,
    /// Where libtest's summary starts.
    summary: usize,
}

impl Segments {
    fn get(&self, name: &str) -> Option<&String> {
        self.text.get(name)
    }
}

/// The name of the test that libtest's `line` announces, and what follows
/// on the line: `test NAME ... `, or `test NAME - should panic ... `.
fn announced(line: &str) -> Option<(&str, &str)> {
    let (name, rest) = line.strip_prefix("test ")?.split_once(" ... ")?;
    Some((name.strip_suffix(" - should panic").unwrap_or(name), rest))
}

fn split_by_test(output: &str, names: &[String]) -> Segments {
    let mut segments = Segments {
        order: Vec::new(),
        text: HashMap::new(),
        summary: output.len(),
    };
    let mut current: Option<String> = None;
    let mut at = 0;
    for line in output.split_inclusive('\n') {
        // Once the tests are over, libtest prints its summary.
        if matches!(line.trim_end(), "successes:" | "failures:")
            || line.starts_with("test result: ")
        {
            segments.summary = at;
            break;
        }
        at += line.len();
        let started =
            announced(line).filter(|(name, _)| names.iter().any(|candidate| candidate == name));
        let text = match started {
            Some((name, rest)) => {
                segments.order.push(name.to_owned());
                current = Some(name.to_owned());
                rest
            }
            None => line,
        };
        if let Some(name) = &current {
            segments
                .text
                .entry(name.clone())
                .or_default()
                .push_str(text);
        }
    }
    for text in segments.text.values_mut() {
        *text = without_verdict(text).trim_start_matches('\n').to_owned();
    }
    segments
}

/// The blocks libtest captured of tests `names`, from its `summary`: each
/// under `---- NAME stdout ----`, up to the next or to the lists of the
/// tests that passed and failed, with the newline libtest adds after each.
fn captured_blocks<'t, 'n>(summary: &'t str, names: &'n [String]) -> HashMap<&'n str, &'t str> {
    let headers: Vec<(usize, usize, &str)> = summary
        .match_indices("---- ")
        .filter(|(at, _)| *at == 0 || summary.as_bytes()[at - 1] == b'\n')
        .filter_map(|(at, _)| {
            let line = summary[at..].split('\n').next()?;
            let name = line.strip_prefix("---- ")?.strip_suffix(" stdout ----")?;
            let name = names.iter().find(|candidate| *candidate == name)?;
            Some((at, at + line.len() + 1, name.as_str()))
        })
        .collect();
    let mut blocks = HashMap::new();
    for (index, (_, start, name)) in headers.iter().enumerate() {
        let rest = &summary[(*start).min(summary.len())..];
        // The next block, or the list that ends this section.
        let end = headers
            .get(index + 1)
            .map(|(next, _, _)| next - start)
            .into_iter()
            .chain(
                ["successes", "failures"]
                    .iter()
                    .filter_map(|list| rest.find(&format!("\n\n{list}:\n    ")))
                    .map(|list| list + 1),
            )
            .min()
            .unwrap_or(rest.len());
        let block = &rest[..end.min(rest.len())];
        blocks.insert(*name, block.strip_suffix('\n').unwrap_or(block));
    }
    blocks
}

/// A test's output without the verdict libtest writes after it.
fn without_verdict(text: &str) -> &str {
    let trimmed = text.trim_end();
    trimmed
        .strip_suffix("ok")
        .or_else(|| trimmed.strip_suffix("FAILED"))
        .map_or(trimmed, str::trim_end)
}

/// libtest's verdict on a test, as its log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Logged {
    Passed,
    /// Failed, with libtest's own message where it gave one: a
    /// `should_panic` test that did not panic as it should.
    Failed(Option<String>),
}

/// libtest's verdict among the records of a one-test log: the first (see
/// [`Log`]).
fn libtest_s_record(records: Vec<(&str, Logged)>) -> Option<Logged> {
    records.into_iter().next().map(|(_, logged)| logged)
}

/// The most of a log read at once: far more than libtest writes for a
/// batch's worth of tests, and little enough that a test that makes its
/// log huge (a sparse file costs it nothing) costs the runner no more.
const LOG_READ_LIMIT: u64 = 8 << 20;

/// The most a log line may hold and still be read: a longer one is not
/// libtest's, and is dropped rather than kept whole.
const LONGEST_LOG_LINE: usize = 1 << 20;

/// Reads what `log` holds past where the last read ended, at most
/// [`LOG_READ_LIMIT`] bytes of it, into `bytes`.
fn read_log(log: &std::fs::File, bytes: &mut Vec<u8>) {
    let _ = log.take(LOG_READ_LIMIT).read_to_end(bytes);
}

/// libtest's log, read as it grows. A test that ends gets a record
/// `VERDICT NAME`: `ok`, `failed`, or `failed: MESSAGE`, whose message may
/// take several lines. Only whole lines are read (libtest writes the
/// newline apart), and only records of the tests asked for are kept: a
/// line that is neither the start of a record (`ok`, `failed`, `ignored`)
/// nor the continuation of one is skipped.
///
/// A harness built on libtest-mimic takes `--logfile` as where its whole
/// report goes instead of stdout: there a test's verdict is its pretty
/// line, `test NAME ... ok` or `test NAME ... FAILED`, read as the same
/// record.
///
/// The test runs in the process that writes the log and holds the file
/// open, so a test can write records of its own. libtest writes its one
/// record from the start of the file, once the test has returned: over
/// what the test wrote there before, ahead of what it wrote further on.
/// So a test's first record is libtest's, and is the one taken (only what
/// the test's process does after libtest, from an `atexit` handler say,
/// could still forge it).
struct Log<'a> {
    names: HashSet<&'a str>,
    /// Bytes after the last whole line.
    partial: Vec<u8>,
    /// A record whose name has not come yet: a failure's message goes on.
    record: Option<String>,
}

impl<'a> Log<'a> {
    fn new(names: impl IntoIterator<Item = &'a str>) -> Log<'a> {
        Log {
            names: names.into_iter().collect(),
            partial: Vec::new(),
            record: None,
        }
    }

    /// Reads `bytes`, the next of the log; returns the records they end,
    /// in order.
    fn read(&mut self, bytes: &[u8]) -> Vec<(&'a str, Logged)> {
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|byte| *byte == b'\n') else {
            if self.partial.len() > LONGEST_LOG_LINE {
                self.partial.clear();
            }
            return Vec::new();
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let mut records = Vec::new();
        for line in String::from_utf8_lossy(&whole[..end]).split('\n') {
            if let Some((name, logged)) = self.pretty_verdict(line) {
                self.record = None;
                records.push((name, logged));
                continue;
            }
            let starts = matches!(
                line.split([' ', ':']).next(),
                Some("ok" | "failed" | "ignored")
            );
            match &mut self.record {
                _ if starts => self.record = Some(line.to_owned()),
                Some(record) => {
                    record.push('\n');
                    record.push_str(line);
                }
                None => continue,
            }
            // The record ends with the name of a test asked for.
            let name = line
                .match_indices(' ')
                .find_map(|(space, _)| self.names.get(&line[space + 1..]).copied());
            if let Some(name) = name
                && let Some(record) = self.record.take()
            {
                let verdict = &record[..record.len() - name.len() - 1];
                let logged = match verdict {
                    "ok" => Logged::Passed,
                    "failed" | "failed (time limit exceeded)" => Logged::Failed(None),
                    _ => match verdict.strip_prefix("failed: ") {
                        Some(message) => Logged::Failed(Some(message.to_owned())),
                        None => continue,
                    },
                };
                records.push((name, logged));
            }
        }
        records
    }

    /// The verdict a pretty report's `line` gives a test asked for:
    /// `test NAME ... ok` or `test NAME ... FAILED`.
    fn pretty_verdict(&self, line: &str) -> Option<(&'a str, Logged)> {
        let (name, verdict) = line.strip_prefix("test ")?.rsplit_once(" ... ")?;
        let name = self.names.get(name).copied()?;
        match verdict {
            "ok" => Some((name, Logged::Passed)),
            "FAILED" => Some((name, Logged::Failed(None))),
            _ => None,
        }
    }
}

/// How a libtest test ended, from libtest's verdict in its log, its
/// `output` (where its failure is told) and its process's status.
fn libtest_verdict(
    logged: Option<&Logged>,
    output: &str,
    name: &str,
    status: ExitStatus,
    fired: Fired,
    settings: &TestSettings,
) -> (Status, String) {
    let grace = settings.limits.grace;
    if fired == Fired::Interrupted {
        let mut message = INTERRUPTED_WHILE_RUNNING.to_owned();
        if status.signal() == Some(NixSignal::SIGKILL as i32) {
            message.push_str(&format!(
                ": it did not end on SIGTERM and was killed by SIGKILL after {grace:?}"
            ));
        }
        return (Status::Interrupted, message);
    }
    if fired == Fired::TimedOut {
        let after = settings.limits.timeout.unwrap_or_default();
        return (
            Status::TimedOut { after },
            format!(
                "timed out after {after:?} and was killed (SIGTERM, then SIGKILL after {grace:?})"
            ),
        );
    }
    if let Some(signal) = status.signal() {
        let signal = Signal(signal);
        let core_dumped = status.core_dumped();
        let mut message = format!("killed by {signal}");
        if core_dumped {
            message.push_str(" (core dumped)");
        }
        // Rust's allocation failure: a message, then abort().
        if let Some(limit) = &settings.memory_limit
            && signal.0 == NixSignal::SIGABRT as i32
            && let Some(failed) = output
                .lines()
                .find(|line| line.starts_with("memory allocation of "))
        {
            message = format!(
                "out of memory: {failed}, over its memory limit of {} (killed by {signal})",
                limit.text
            );
        }
        return (
            Status::Crashed {
                signal,
                core_dumped,
            },
            message,
        );
    }
    match (logged, status.code()) {
        (Some(Logged::Passed), Some(0)) => (Status::Passed, String::new()),
        (Some(Logged::Failed(note)), _) => (
            Status::Failed,
            failure_message(note.as_deref(), output, name),
        ),
        (Some(Logged::Passed), Some(code)) => (
            Status::ExitedEarly { code },
            format!("libtest reported the test passed, but its process exited with code {code}"),
        ),
        (None, Some(code)) => (
            Status::ExitedEarly { code },
            format!("exited with code {code} before libtest reported a result"),
        ),
        (_, None) => (Status::Broken, format!("ended with {status}")),
    }
}

/// Why libtest failed test `name`, from its `output`: libtest's own
/// `note` (a `should_panic` test that did not panic as it should), else
/// the panic of the test's thread, else the error the test returned, else
/// another thread's panic.
fn failure_message(note: Option<&str>, output: &str, name: &str) -> String {
    note.map(str::to_owned)
        .or_else(|| thread_panic(output, name))
        .or_else(|| returned_err(output))
        .or_else(|| panic_message(output))
        .unwrap_or_else(|| "the test failed".to_owned())
}

/// Why a pretty report in the log (a libtest-mimic harness's, see [`Log`])
/// says test `name` failed: the block under `---- NAME ----` in its
/// failures, up to the next block, the list of failed tests or the result.
fn reported_failure(log: &[u8], name: &str) -> Option<String> {
    let log = String::from_utf8_lossy(log);
    let header = format!("\n---- {name} ----\n");
    let start = log.find(&header)? + header.len();
    let block = &log[start..];
    let end = ["\nfailures:\n", "\n---- ", "\ntest result: "]
        .into_iter()
        .filter_map(|next| block.find(next))
        .min()
        .unwrap_or(block.len());
    let message = block[..end].trim();
    (!message.is_empty()).then(|| message.to_owned())
}

/// The panic of test `name` in its output, by its thread's name.
fn thread_panic(output: &str, name: &str) -> Option<String> {
    let header = format!("thread '{name}'");
    let start = output.find(&header)?;
    panic_message(&output[start..])
}

/// The error a test returned, from the last line libtest started with
/// `Error: ` (it prints the error's debug text so, once the test has
/// returned) to the end, as `returned Err: …`.
fn returned_err(output: &str) -> Option<String> {
    const PREFIX: &str = "Error: ";
    let start = output
        .rfind(&format!("\n{PREFIX}"))
        .map(|newline| newline + 1)
        .or_else(|| output.starts_with(PREFIX).then_some(0))?;
    Some(format!(
        "returned Err: {}",
        output[start + PREFIX.len()..].trim_end()
    ))
}

/// The panic Rust's hook printed, as `panicked at FILE:LINE:COLUMN: MESSAGE`.
fn panic_message(output: &str) -> Option<String> {
    let mut lines = output.lines();
    let header = lines
        .by_ref()
        .find(|line| line.starts_with("thread '") && line.contains(" panicked at "))?;
    let location = header.split(" panicked at ").nth(1)?.trim_end_matches(':');
    let text: Vec<&str> = lines
        .take_while(|line| !line.starts_with("note: ") && !line.starts_with("stack backtrace:"))
        .collect();
    Some(format!("panicked at {location}: {}", text.join("\n")))
}

/// What libtest prints on stderr for `--logfile`, with no newline after
/// it: the test's own stderr follows on the same line.
const LOGFILE_WARNING: &str = "warning: `--logfile` is deprecated";

/// A test's output without what libtest adds around it when it runs one
/// test with `--nocapture`: the `--logfile` warning, and its own lines.
/// The test's own output is what is left.
fn without_libtest_lines(text: &str, name: &str) -> String {
    let text = text.strip_prefix(LOGFILE_WARNING).unwrap_or(text);
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        // After a failure, libtest's summary follows the test's output.
        if bare == "failures:" {
            break;
        }
        let framing = bare == "running 1 test"
            || bare.starts_with("test result: ")
            || bare.trim().is_empty() && kept.is_empty();
        if framing {
            continue;
        }
        // libtest writes `test NAME ... ` before the test's first output
        // and the verdict after its last.
        let own = match announced(line) {
            Some((announced, rest)) if announced == name => rest,
            _ => line,
        };
        kept.push_str(own);
    }
    without_verdict(&kept).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtest's stdout for `t::passes`, which wrote `direct out` to its
    /// descriptor and printed two lines, run with `--show-output`.
    const PASSED: &str = "\nrunning 1 test\ntest t::passes ... direct out\nok\n\nsuccesses:\n\n---- t::passes stdout ----\nout line\nerr line\n\n\nsuccesses:\n    t::passes\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.00s\n\n";

    /// The same for `t::fails`, which printed and panicked.
    const FAILED: &str = "\nrunning 1 test\ntest t::fails ... FAILED\n\nsuccesses:\n\nsuccesses:\n\nfailures:\n\n---- t::fails stdout ----\nout before\n\nthread 't::fails' (12873) panicked at src/lib.rs:7:42:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\nfailures:\n    t::fails\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.08s\n\n";

    /// The same for `t::silent`, which printed nothing.
    const SILENT: &str = "\nrunning 1 test\ntest t::silent ... ok\n\nsuccesses:\n\nsuccesses:\n    t::silent\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.00s\n\n";

    #[test]
    fn the_captured_block_and_what_the_test_wrote_itself_are_told_apart() {
        let (written, block) = split_captured(PASSED, "t::passes");
        assert_eq!(block, "out line\nerr line\n");
        assert_eq!(without_libtest_lines(written, "t::passes"), "direct out");
        let (written, block) = split_captured(FAILED, "t::fails");
        assert!(
            block.starts_with("out before\n\nthread 't::fails'"),
            "{block:?}"
        );
        assert!(block.ends_with("display a backtrace\n"), "{block:?}");
        assert_eq!(without_libtest_lines(written, "t::fails"), "");
        let message = failure_message(None, block, "t::fails");
        assert_eq!(message, "panicked at src/lib.rs:7:42: boom");
        let (written, block) = split_captured(SILENT, "t::silent");
        assert_eq!(
            (without_libtest_lines(written, "t::silent").as_str(), block),
            ("", "")
        );
    }

    /// libtest's stdout for a batch of five tests run with
    /// `--show-output`: two failures, a silent test, a test that wrote to
    /// its descriptors itself, an expected panic.
    const BATCH: &str = "\nrunning 5 tests\ntest m::err ... FAILED\ntest m::silent ... ok\ntest t::fails ... FAILED\ntest t::passes ... direct err\ndirect out\nok\ntest t::sp - should panic ... ok\n\nsuccesses:\n\n---- t::passes stdout ----\nout line\nerr line\n\n---- t::sp stdout ----\n\nthread 't::sp' (30534) panicked at src/lib.rs:10:15:\nx\n\n\nsuccesses:\n    m::silent\n    t::passes\n    t::sp\n\nfailures:\n\n---- m::err stdout ----\nError: \"bad\"\n\n---- t::fails stdout ----\nout before\n\nthread 't::fails' (30532) panicked at src/lib.rs:7:42:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\nfailures:\n    m::err\n    t::fails\n\ntest result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.00s\n\n";

    #[test]
    fn a_batch_s_captured_output_is_split_between_its_tests() {
        let names: Vec<String> = ["m::err", "m::silent", "t::fails", "t::passes", "t::sp"]
            .map(str::to_owned)
            .to_vec();
        let segments = split_by_test(BATCH, &names);
        assert_eq!(segments.get("t::passes").unwrap(), "direct err\ndirect out");
        let blocks = captured_blocks(&BATCH[segments.summary..], &names);
        assert_eq!(blocks["t::passes"], "out line\nerr line\n");
        assert_eq!(
            blocks["t::sp"],
            "\nthread 't::sp' (30534) panicked at src/lib.rs:10:15:\nx\n"
        );
        assert_eq!(blocks["m::err"], "Error: \"bad\"\n");
        assert_eq!(
            failure_message(None, blocks["t::fails"], "t::fails"),
            "panicked at src/lib.rs:7:42: boom"
        );
        assert!(!blocks.contains_key("m::silent"));
        assert_eq!(blocks.len(), 4);
    }

    #[test]
    fn a_block_that_looks_like_libtest_s_summary_is_kept_whole() {
        let tricky = PASSED.replace(
            "out line\n",
            "successes:\n    t::passes\n\nfailures:\nout line\n",
        );
        let (_, block) = split_captured(&tricky, "t::passes");
        assert_eq!(
            block,
            "successes:\n    t::passes\n\nfailures:\nout line\nerr line\n"
        );
    }

    #[test]
    fn backtraces_are_asked_for_unless_zero() {
        let mut command = Command::new("test");
        command
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "0");
        assert!(backtraces_asked(&command));
        command.env("RUST_BACKTRACE", "0");
        assert!(!backtraces_asked(&command));
        let mut quiet = Command::new("test");
        quiet
            .env("RUST_BACKTRACE", "full")
            .env_remove("RUST_LIB_BACKTRACE");
        without_panic_backtraces(&mut quiet);
        let envs: Vec<_> = quiet.get_envs().collect();
        assert!(envs.contains(&("RUST_BACKTRACE".as_ref(), Some("0".as_ref()))));
        assert!(envs.contains(&("RUST_LIB_BACKTRACE".as_ref(), Some("full".as_ref()))));
    }

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    /// The records `log` holds on `names`, read at once.
    #[test]
    fn a_libtest_mimic_report_in_the_log_gives_the_verdicts() {
        let report = "\nrunning 3 tests\ntest a ... ok\ntest b::c ... FAILED\ntest d ... ignored\n\n\
                      failures:\n\n---- b::c ----\nboom\n\ntest result: FAILED. 1 passed; 1 failed\n";
        assert_eq!(
            records(report, &["a", "b::c", "d"]),
            [("a", Logged::Passed), ("b::c", Logged::Failed(None))]
        );
        // Only the tests asked for.
        assert_eq!(records(report, &["x"]), []);
        assert_eq!(
            reported_failure(report.as_bytes(), "b::c").as_deref(),
            Some("boom")
        );
        assert_eq!(reported_failure(report.as_bytes(), "a"), None);
    }

    fn records<'a>(log: &str, names: &[&'a str]) -> Vec<(&'a str, Logged)> {
        Log::new(names.iter().copied()).read(log.as_bytes())
    }

    /// The verdict on `t` of a process that ended with `status`, after
    /// libtest logged `log`.
    fn verdict(log: &str, status: ExitStatus) -> (Status, String) {
        let logged = libtest_s_record(records(log, &["t"]));
        libtest_verdict(logged.as_ref(), "", "t", status, Fired::No, &settings(None))
    }

    /// The settings of a test with no override, and `memory_limit`.
    fn settings(memory_limit: Option<&str>) -> TestSettings {
        let mut settings = crate::config::Profile::built_in().plain_settings(1, 1);
        settings.memory_limit = memory_limit.map(|limit| MemoryLimit::parse(limit).unwrap());
        settings
    }

    #[test]
    fn a_batch_s_output_is_split_between_its_tests() {
        let names = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let output = "warning: `--logfile` is deprecated\nrunning 3 tests\ntest a ... one\ntwo\nok\n\
                      test b - should panic ... ok\ntest c ... three\nthread 'c' panicked\nFAILED\n\n\
                      failures:\n    c\n";
        let segments = split_by_test(output, &names);
        assert_eq!(segments.order, names);
        assert_eq!(segments.get("a").map(String::as_str), Some("one\ntwo"));
        assert_eq!(segments.get("b").map(String::as_str), Some(""));
        assert_eq!(
            segments.get("c").map(String::as_str),
            Some("three\nthread 'c' panicked")
        );
    }

    #[test]
    fn failures_are_told_from_the_output() {
        let stderr = "thread 'panics' (1234) panicked at tests/outcomes.rs:20:5:\ndragons\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("panicked at tests/outcomes.rs:20:5: dragons")
        );
        assert_eq!(panic_message("nothing here"), None);
        // The test's own thread's panic, then the error it returned, then
        // any panic.
        let spawned = "\nthread '<unnamed>' (7) panicked at src/lib.rs:1:1:\ninner\n";
        assert_eq!(
            failure_message(None, &format!("{spawned}Error: \"outer\"\n"), "t"),
            "returned Err: \"outer\""
        );
        assert_eq!(
            failure_message(
                None,
                &format!("{spawned}\nthread 't' (8) panicked at a.rs:2:3:\nmine\n"),
                "t"
            ),
            "panicked at a.rs:2:3: mine"
        );
        assert_eq!(
            failure_message(None, spawned, "t"),
            "panicked at src/lib.rs:1:1: inner"
        );
        assert_eq!(
            failure_message(None, "Error: Custom {\n    kind: Other,\n}\n", "t"),
            "returned Err: Custom {\n    kind: Other,\n}"
        );
        assert_eq!(
            failure_message(
                Some("test did not panic as expected at a.rs:1:1"),
                spawned,
                "t"
            ),
            "test did not panic as expected at a.rs:1:1"
        );
        assert_eq!(failure_message(None, "", "t"), "the test failed");
    }

    #[test]
    fn libtest_framing_is_removed_from_output() {
        let stdout =
            "\nrunning 1 test\ntest t ... about to crash\nmore\nok\n\ntest result: ok. 1 passed\n";
        assert_eq!(without_libtest_lines(stdout, "t"), "about to crash\nmore");
        assert_eq!(
            without_libtest_lines("\nrunning 1 test\ntest t ... ", "t"),
            ""
        );
        assert_eq!(
            without_libtest_lines(
                "\nrunning 1 test\ntest t - should panic ... said\nFAILED\n",
                "t"
            ),
            "said"
        );
        // libtest writes its warning with no newline: the test's first
        // line follows it.
        assert_eq!(
            without_libtest_lines("warning: `--logfile` is deprecatedreal error\n", "t"),
            "real error"
        );
        assert_eq!(
            without_libtest_lines(
                "warning: `--logfile` is deprecated\nthread 't' panicked at a.rs:1:1:\nboom\n",
                "t"
            ),
            "thread 't' panicked at a.rs:1:1:\nboom"
        );
    }

    #[test]
    fn the_log_holds_a_record_per_test_that_ended() {
        assert_eq!(
            records(
                "ok a\nfailed: panic did not contain expected string\n      panic message: \"y\"\n \
                 expected substring: \"x\" b\nfailed: test did not panic as expected at s.rs:3:4 c\n\
                 failed d\nignored e\nok stranger\n",
                &["a", "b", "c", "d", "e"]
            ),
            [
                ("a", Logged::Passed),
                (
                    "b",
                    Logged::Failed(Some(
                        "panic did not contain expected string\n      panic message: \"y\"\n \
                         expected substring: \"x\""
                            .to_owned()
                    ))
                ),
                (
                    "c",
                    Logged::Failed(Some(
                        "test did not panic as expected at s.rs:3:4".to_owned()
                    ))
                ),
                ("d", Logged::Failed(None)),
            ]
        );
        // Lines come whole, however the bytes are cut.
        let mut log = Log::new(["a", "ab"]);
        assert_eq!(log.read(b"ok a"), []);
        assert_eq!(log.read(b"b\nfail"), [("ab", Logged::Passed)]);
        assert_eq!(log.read(b"ed a\n"), [("a", Logged::Failed(None))]);
        // A line that is no record is skipped, and so is one glued to it.
        assert_eq!(
            records("garbage\nok tfailed t\nfailed t\n", &["t"]),
            [("t", Logged::Failed(None))]
        );
    }

    #[test]
    fn a_huge_log_costs_a_bounded_read() {
        // A sparse file: what a test that made its log huge costs itself.
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 30).unwrap();
        let mut bytes = Vec::new();
        read_log(&file, &mut bytes);
        assert_eq!(bytes.len() as u64, LOG_READ_LIMIT);
        // None of it is a line; it is dropped, and a record after it read.
        let mut log = Log::new(["t"]);
        assert!(log.read(&bytes).is_empty());
        assert!(log.partial.is_empty());
        assert_eq!(log.read(b"\nok t\n"), [("t", Logged::Passed)]);
    }

    #[test]
    fn a_test_s_own_log_line_gives_way_to_libtest_s() {
        // The test wrote a record, after padding, from the start of the
        // log; libtest then wrote its own from the start, over the padding.
        let forged = format!("failed t\n{}\nok t\n", " ".repeat(4096));
        assert_eq!(verdict(&forged, exit(101)).0, Status::Failed);
        // An `atexit` handler that made the exit code 0 changes nothing.
        assert_eq!(verdict(&forged, exit(0)).0, Status::Failed);
        let names = ["a".to_owned(), "b".to_owned()];
        let mut batch = Batch::new(&names, Instant::now());
        batch.logged(records("ok b\n", &["a", "b"]), Instant::now());
        batch.logged(records("failed b\n", &["a", "b"]), Instant::now());
        assert_eq!(batch.order, [("b", Logged::Failed(None))]);
        assert_eq!(batch.running(), Some("a"));
    }

    #[test]
    fn a_batch_s_tests_take_the_time_between_their_records() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let names = ["a", "b", "c", "d"].map(str::to_owned);
        let mut batch = Batch::new(&names, start);
        let log = |text| records(text, &["a", "b", "c", "d"]);
        batch.logged(Vec::new(), at(5));
        batch.logged(log("ok a\n"), at(10));
        assert_eq!(batch.running(), Some("b"));
        for read in (15..=300).step_by(5) {
            batch.logged(Vec::new(), at(read));
        }
        // b ran 300 ms; c and d ended within the same 5 ms.
        batch.logged(log("ok b\nok c\nok d\n"), at(305));
        let duration = |name| batch.durations[name];
        assert_eq!(duration("a"), Duration::from_millis(10));
        assert_eq!(
            duration("b"),
            Duration::from_millis(290) + Duration::from_millis(5) / 3
        );
        assert_eq!(duration("c"), Duration::from_millis(5) / 3);
        assert_eq!(batch.running(), None);
    }

    #[test]
    fn only_a_logged_pass_with_a_clean_exit_passes() {
        assert_eq!(verdict("ok t\n", exit(0)).0, Status::Passed);
        assert_eq!(verdict("", exit(0)).0, Status::ExitedEarly { code: 0 });
        assert_eq!(verdict("failed t\n", exit(101)).0, Status::Failed);
        assert_eq!(
            verdict("ok t\n", exit(3)).0,
            Status::ExitedEarly { code: 3 }
        );
        let (status, message) = verdict("", ExitStatus::from_raw(11));
        assert_eq!(
            status,
            Status::Crashed {
                signal: Signal(11),
                core_dumped: false
            }
        );
        assert_eq!(
            message,
            "killed by signal 11 (SIGSEGV: invalid memory reference)"
        );
        let mut timed = settings(None);
        timed.limits.timeout = Some(Duration::from_secs(1));
        assert!(matches!(
            libtest_verdict(
                None,
                "",
                "t",
                ExitStatus::from_raw(15),
                Fired::TimedOut,
                &timed
            )
            .0,
            Status::TimedOut { .. }
        ));
    }

    #[test]
    fn an_allocation_failure_under_a_memory_limit_is_out_of_memory() {
        let output = "running 1 test\nmemory allocation of 536870912 bytes failed\n";
        let aborted = ExitStatus::from_raw(6);
        let (status, message) = libtest_verdict(
            None,
            output,
            "t",
            aborted,
            Fired::No,
            &settings(Some("64MiB")),
        );
        assert!(matches!(status, Status::Crashed { .. }));
        assert_eq!(
            message,
            "out of memory: memory allocation of 536870912 bytes failed, over its memory limit \
             of 64MiB (killed by signal 6 (SIGABRT: abort))"
        );
        // Without a limit, an abort is an abort.
        let (_, message) = libtest_verdict(None, output, "t", aborted, Fired::No, &settings(None));
        assert!(message.starts_with("killed by signal 6"), "{message}");
    }
}
