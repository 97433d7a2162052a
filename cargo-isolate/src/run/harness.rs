//! isolate-harness binaries: one process per binary, whose fork server
//! isolates each test, and whose report stream says how each ended.
//!
//! An interrupted harness dies of its SIGTERM (its fork servers then kill
//! their tests): the tests it reported keep their outcomes, a test it said
//! started was interrupted while it ran, and the others did not run.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use isolate_harness::Signal;
use isolate_harness::report_stream::{self, Finished, Line, LineReader, Outcome, Received};
use nix::sys::signal::Signal as NixSignal;
use nix::unistd::Pid;

use super::capture::{ScratchFileError, kept, named_scratch_file, output_file, read_kept};
use super::watchdog::{Fired, Watchdog, reap, wait_unreaped};
use super::with_causes;
use super::{
    Event, INTERRUPTED_WHILE_RUNNING, Limits, NOT_RUN_INTERRUPTED, RunPlan, Status, TestOutcome,
    TestSettings, outcome, test_command,
};
use crate::build::TestBinary;
use crate::list::BinaryTests;

/// Runs an isolate-harness binary for `tests`, which share `settings`,
/// with `threads` test threads, reading its report stream; and again for
/// the tests that failed, as their retries allow and unless the run is
/// `stopped` by then. Each final outcome is shown to `stop`, then sent.
/// Where the binary stands in the run is its `place`.
#[expect(clippy::too_many_arguments, reason = "the run's parts, each its own")]
pub(super) fn run_harness(
    binary: &BinaryTests,
    tests: &[String],
    settings: &TestSettings,
    threads: usize,
    place: &HarnessPlace,
    plan: &RunPlan,
    watchdog: &Watchdog,
    events: &Sender<Event>,
    stop: &impl Fn(&TestOutcome),
    stopped: &impl Fn() -> bool,
) {
    let send = |outcome: TestOutcome| {
        stop(&outcome);
        let _ = events.send(Event::Finished(Box::new(outcome)));
    };
    let retries = settings.retries;
    let mut pending = tests.to_vec();
    for round in 0..=retries.count {
        if round > 0 {
            std::thread::sleep(retries.delay(round));
        }
        let mut failed = Vec::new();
        // Only a last round's failures are final, and count against
        // `--max-fail`.
        let final_round = round == retries.count;
        let run = HarnessRun {
            settings,
            threads,
            last: place.last && final_round,
            max_fail: place
                .max_fail
                .as_ref()
                .filter(|_| final_round)
                .map(|(left, why)| (*left, why.as_str())),
            plan,
            watchdog,
        };
        run_harness_once(binary, &pending, &run, |outcome| {
            let mut outcome = plan.judge_leaks(outcome);
            outcome.attempts = round + 1;
            outcome.max_attempts = retries.count + 1;
            outcome.flaky = round > 0 && !outcome.status.is_failure();
            if outcome.status.is_failure() && round < retries.count {
                failed.push(outcome);
                return;
            }
            send(outcome);
        });
        if failed.is_empty() {
            return;
        }
        if stopped() {
            // Not run again: each ended as it did this time.
            failed.into_iter().for_each(send);
            return;
        }
        pending = failed.iter().map(|outcome| outcome.name.clone()).collect();
        for outcome in failed {
            let _ = events.send(Event::Retried(Box::new(outcome)));
        }
    }
}

/// Bytes of a harness's own stderr shown, from its start and from its end,
/// with each test it did not report: room for a panic and its backtrace,
/// little enough to repeat for thousands of tests.
const HARNESS_STDERR_KEPT: usize = 4 * 1024;

/// Where a harness binary stands in the run.
pub(super) struct HarnessPlace {
    /// Whether the run starts no process after this binary's.
    pub(super) last: bool,
    /// How many more failures `--max-fail` lets the run take, and what
    /// the tests it then keeps from starting are told.
    pub(super) max_fail: Option<(u32, String)>,
}

/// How a harness process runs: its tests' settings, its thread count, the
/// run's plan and watchdog.
struct HarnessRun<'a> {
    settings: &'a TestSettings,
    threads: usize,
    /// Whether the run starts no process after this one.
    last: bool,
    /// After how many failures the harness starts no more tests, and what
    /// the tests it did not start are told.
    max_fail: Option<(u32, &'a str)>,
    plan: &'a RunPlan,
    watchdog: &'a Watchdog,
}

/// Runs an isolate-harness binary once for `tests`. Every test gets one
/// outcome: the first the stream reports for it or, if the stream never
/// does, one from how the harness ended (see [`Unreported`]).
fn run_harness_once(
    binary: &BinaryTests,
    tests: &[String],
    run: &HarnessRun<'_>,
    mut on_outcome: impl FnMut(TestOutcome),
) {
    let started = Instant::now();
    let mut stream = StreamRead::default();
    let mut failed = 0_u32;
    let mut counted = |outcome: TestOutcome| {
        failed += u32::from(outcome.status.is_failure());
        on_outcome(outcome);
    };
    let ended = run_harness_process(binary, tests, run, &mut stream, &mut counted);
    if let Some(first) = &stream.first_unusable {
        eprintln!(
            "warning: {}: {} line(s) of its report stream could not be used, the first: {first}",
            binary.binary.id, stream.unusable
        );
    }
    if stream.reported.len() == tests.len() {
        return;
    }
    let mut why = unreported_reason(ended, &stream);
    if let Some((max, stopped)) = run.max_fail
        && failed >= max
    {
        why = Unreported::FailedEnough(Box::new(why), stopped.to_owned());
    }
    for outcome in unreported(&binary.binary, tests, &stream, &why, started) {
        on_outcome(outcome);
    }
}

/// How a harness process ended, reaped.
struct HarnessEnd {
    status: ExitStatus,
    fired: Fired,
    /// Its stderr, where it was captured.
    stderr: Option<File>,
}

/// Why a harness process could not be run, or waited for.
#[derive(Debug, thiserror::Error)]
enum HarnessError {
    #[error("failed to create the pipe of its report stream")]
    Pipe(#[source] io::Error),
    #[error(transparent)]
    Scratch(#[from] ScratchFileError),
    #[error("failed to write the names of its tests to {}", path.display())]
    Names {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to spawn {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to wait for its process")]
    Wait(#[source] io::Error),
}

fn run_harness_process(
    binary: &BinaryTests,
    tests: &[String],
    run: &HarnessRun<'_>,
    stream: &mut StreamRead,
    on_outcome: &mut impl FnMut(TestOutcome),
) -> Result<HarnessEnd, HarnessError> {
    let HarnessRun {
        settings,
        threads,
        last,
        max_fail,
        plan,
        watchdog,
    } = *run;
    let (reader, writer) = io::pipe().map_err(HarnessError::Pipe)?;
    let mut command = test_command(&binary.binary);
    command
        .args(["--test-threads", &threads.to_string(), "--include-ignored"])
        .env(report_stream::REPORT_FD_VAR, "3");
    // Its stderr is kept, to show if it fails without reporting its tests
    // (a setup that panics, a harness out of descriptors).
    let stderr = if plan.nocapture {
        command.arg("--nocapture");
        None
    } else {
        let (stderr, stderr_writer) = output_file()?;
        // Its own report, unread, in the cheapest form: a line per test
        // would cost a harness of trivial tests a tenth of its time.
        command
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(stderr_writer);
        Some(stderr)
    };
    // The tests to run, by name, in a file the harness reads: a --skip per
    // other test would cost the harness a comparison per pair.
    let only = named_scratch_file()?;
    let mut names = io::BufWriter::new(only.as_file());
    tests
        .iter()
        .try_for_each(|test| writeln!(names, "{test}"))
        .and_then(|()| names.flush())
        .map_err(|source| HarnessError::Names {
            path: only.path().to_owned(),
            source,
        })?;
    command.env("ISOLATE_ONLY", only.path());
    // Defaults for the tests that set none of their own.
    if let Some(timeout) = settings.limits.timeout {
        command.env(
            "ISOLATE_DEFAULT_TIMEOUT_MS",
            timeout.as_millis().to_string(),
        );
    }
    if let Some(limit) = &settings.memory_limit {
        command.env("ISOLATE_DEFAULT_MEMORY_LIMIT", limit.bytes.to_string());
    }
    command.env(
        "ISOLATE_GRACE_PERIOD_MS",
        settings.limits.grace.as_millis().to_string(),
    );
    if let Some((max, _)) = max_fail {
        command.env("ISOLATE_MAX_FAIL", max.to_string());
    }
    let spawn_error = |source| HarnessError::Spawn {
        path: binary.binary.path.clone(),
        source,
    };
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: writer.into(),
            child_fd: 3,
        }])
        .map_err(|collision| spawn_error(io::Error::other(collision)))?;
    // Our copy of the pipe's write end goes with the command, dropped once
    // it is spawned, so the stream ends when the harness does.
    let spawned = if last {
        watchdog.spawn_last(command)
    } else {
        watchdog.spawn(command)
    };
    let mut child = spawned.map_err(spawn_error)?;
    let pid = i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|error| HarnessError::Wait(io::Error::other(error)))?;
    // The harness ends its tests at their timeouts; the watchdog keeps
    // their clocks, and ends the harness only when the run is interrupted.
    let limits = settings.limits;
    watchdog.watch(
        pid,
        Limits {
            timeout: None,
            ..limits
        },
        None,
    );
    let asked: HashSet<&str> = tests.iter().map(String::as_str).collect();
    read_stream(
        BufReader::with_capacity(PIPE_CAPACITY, Batched(reader)),
        &binary.binary,
        &asked,
        stream,
        &mut |name| watchdog.time(pid, &binary.binary, name, limits),
        &mut |outcome| {
            watchdog.untime(pid, &outcome.name);
            on_outcome(outcome);
        },
    );
    wait_unreaped(pid).map_err(HarnessError::Wait)?;
    let ended = reap(&mut child, pid, watchdog).map_err(HarnessError::Wait)?;
    Ok(HarnessEnd {
        status: ended.status,
        fired: ended.fired,
        stderr,
    })
}

/// What a harness's report stream said, besides the outcomes.
#[derive(Debug, Default)]
struct StreamRead {
    /// The tests it reported, each once.
    reported: HashSet<String>,
    /// The tests it said started and did not report yet, with when the
    /// start was read.
    started: HashMap<String, Instant>,
    /// How many lines could not be used, and why the first could not.
    unusable: usize,
    first_unusable: Option<String>,
    /// Why the stream could not be read to its end.
    error: Option<io::Error>,
}

impl StreamRead {
    fn unusable(&mut self, why: impl FnOnce() -> String) {
        self.unusable += 1;
        if self.first_unusable.is_none() {
            self.first_unusable = Some(why());
        }
    }
}

/// Reads a report stream to its end, and sends the outcome of each test of
/// `asked` it reports, the first time it does; a line for another test,
/// and a later line for the same one, are counted unusable, as are lines
/// the reader skips. `on_started` hears of each test of `asked` that it
/// says started before its outcome. The reader keeps at most a line's
/// limit in memory.
fn read_stream(
    source: impl BufRead,
    binary: &TestBinary,
    asked: &HashSet<&str>,
    stream: &mut StreamRead,
    on_started: &mut impl FnMut(&str),
    on_outcome: &mut impl FnMut(TestOutcome),
) {
    let mut lines = LineReader::new(source);
    loop {
        match lines.next_line() {
            Ok(None) => return,
            Err(error) => {
                // Dropping the read end lets the harness write on, in vain,
                // and end.
                stream.error = Some(error);
                return;
            }
            Ok(Some(Received::Line(Line::Finished(finished)))) => {
                let name = finished.name.as_ref();
                if !asked.contains(name) {
                    stream.unusable(|| "a verdict on a test it was not asked to run".to_owned());
                } else if stream.reported.contains(name) {
                    stream.unusable(|| format!("a second verdict on {name}"));
                } else {
                    stream.started.remove(name);
                    stream.reported.insert(name.to_owned());
                    on_outcome(harness_outcome(binary, finished));
                }
            }
            Ok(Some(Received::Line(Line::Started(started)))) => {
                let name = started.name.as_ref();
                if asked.contains(name)
                    && !stream.reported.contains(name)
                    && !stream.started.contains_key(name)
                {
                    stream.started.insert(name.to_owned(), Instant::now());
                    on_started(name);
                }
            }
            // An event of a later version.
            Ok(Some(Received::Line(_))) => {}
            Ok(Some(Received::Skipped(skipped))) => stream.unusable(|| skipped.to_string()),
        }
    }
}

/// What becomes of the tests a harness did not report: never a pass.
#[derive(Debug)]
enum Unreported {
    /// Each ends with this status and message.
    Failed(Status, String),
    /// The run was interrupted: a test the stream said started was
    /// interrupted while it ran, the others did not run.
    Interrupted,
    /// The harness started no more tests after enough failed: a test the
    /// stream said started ends as the first says, the others did not run,
    /// and are told why.
    FailedEnough(Box<Unreported>, String),
}

/// What becomes of the tests a harness did not report, from how it ended.
fn unreported_reason(ended: Result<HarnessEnd, HarnessError>, stream: &StreamRead) -> Unreported {
    let end = match ended {
        Ok(end) => end,
        Err(error) => {
            return Unreported::Failed(
                Status::Broken,
                format!("could not run the harness binary: {}", with_causes(&error)),
            );
        }
    };
    if end.fired == Fired::Interrupted {
        return Unreported::Interrupted;
    }
    let mut reason = match (end.status.signal(), end.status.code()) {
        (Some(signal), _) => format!(
            "the harness was killed by {} before reporting this test",
            Signal(signal)
        ),
        (None, Some(code @ (0 | 101))) => {
            format!("the harness exited with code {code} without reporting this test")
        }
        (None, Some(code)) => {
            format!("the harness exited with code {code} before reporting this test")
        }
        (None, None) => format!(
            "the harness ended ({}) before reporting this test",
            end.status
        ),
    };
    if let Some(error) = &stream.error {
        reason.push_str(&format!("; its report stream could not be read: {error}"));
    }
    if let Some(first) = &stream.first_unusable {
        reason.push_str(&format!(
            "; {} line(s) of its report stream could not be used, the first: {first}",
            stream.unusable
        ));
    }
    let stderr = end
        .stderr
        .map(|stderr| read_kept(stderr, HARNESS_STDERR_KEPT))
        .unwrap_or_default();
    let stderr = stderr.trim_start_matches('\n').trim_end();
    if !stderr.is_empty() {
        reason.push_str("\n---- harness stderr ----\n");
        reason.push_str(stderr);
    }
    Unreported::Failed(Status::Broken, reason)
}

/// An outcome, as `why` says, for each test of `tests` that `stream` did
/// not report, from a harness that started at `started`. A failure lasted
/// as long as the harness, an interrupted test from its start on.
fn unreported<'a>(
    binary: &'a TestBinary,
    tests: &'a [String],
    stream: &'a StreamRead,
    why: &'a Unreported,
    started: Instant,
) -> impl Iterator<Item = TestOutcome> + 'a {
    let now = Instant::now();
    tests
        .iter()
        .filter(|name| !stream.reported.contains(*name))
        .map(move |name| unreported_outcome(binary, name, stream, why, started, now))
}

/// The outcome of test `name`, which the harness did not report, for
/// `why`; the harness started at `started` and ended by `now`.
fn unreported_outcome(
    binary: &TestBinary,
    name: &str,
    stream: &StreamRead,
    why: &Unreported,
    started: Instant,
    now: Instant,
) -> TestOutcome {
    match why {
        Unreported::Failed(status, reason) => TestOutcome {
            duration: now.saturating_duration_since(started),
            ..outcome(binary, name, status.clone(), reason.clone())
        },
        Unreported::Interrupted => match stream.started.get(name) {
            Some(started) => TestOutcome {
                duration: now.saturating_duration_since(*started),
                ..outcome(
                    binary,
                    name,
                    Status::Interrupted,
                    INTERRUPTED_WHILE_RUNNING.to_owned(),
                )
            },
            None => outcome(binary, name, Status::NotRun, NOT_RUN_INTERRUPTED.to_owned()),
        },
        Unreported::FailedEnough(ended, stopped) => {
            if stream.started.contains_key(name) {
                unreported_outcome(binary, name, stream, ended, started, now)
            } else {
                outcome(binary, name, Status::NotRun, stopped.clone())
            }
        }
    }
}

/// The capacity of a pipe on Linux, unless someone changed it: what the
/// harness can write to its report stream without blocking.
const PIPE_CAPACITY: usize = 64 * 1024;

/// How long [`Batched`] pauses after a read.
const REPORT_BATCH: Duration = Duration::from_millis(2);

/// A report stream reader that pauses a moment after each read, so that
/// the events a harness writes microseconds apart are read in batches, not
/// with a wake-up each: on a machine whose cores all run tests, each
/// wake-up of this process takes a core from them. (2000 trivial tests
/// wrote 4000 events in a third of a second; reading them one by one cost
/// about 15% of the run.) A harness writes far less than a pipe holds in a
/// pause, so it is not held up.
struct Batched<R>(R);

impl<R: Read> Read for Batched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.0.read(buf)?;
        if read > 0 {
            std::thread::sleep(REPORT_BATCH);
        }
        Ok(read)
    }
}

/// The outcome of a test's `finished` line.
fn harness_outcome(binary: &TestBinary, finished: Finished<'_>) -> TestOutcome {
    let status = if finished.passed {
        Status::Passed
    } else {
        match finished.outcome {
            Outcome::Signaled {
                signal,
                core_dumped,
                ..
            } => Status::Crashed {
                signal: Signal(signal),
                core_dumped,
            },
            Outcome::OutOfMemory { .. } => Status::Crashed {
                signal: Signal(libc_sigabrt()),
                core_dumped: false,
            },
            Outcome::Exited { code } => Status::ExitedEarly { code },
            Outcome::TimedOut { limit_ms, .. } => Status::TimedOut {
                after: Duration::from_millis(limit_ms),
            },
            Outcome::Broken { .. } => Status::Broken,
            // `returned` or `panicked` without passing, and kinds of later
            // versions.
            _ => Status::Failed,
        }
    };
    TestOutcome {
        binary: binary.clone(),
        name: finished.name.into_owned(),
        status,
        // Cut again, whatever the writer did.
        message: finished.message.as_deref().map(kept).unwrap_or_default(),
        // Whatever the line says: a negative or absurd duration is none.
        duration: Duration::try_from_secs_f64(finished.duration_ms / 1000.0).unwrap_or_default(),
        stdout: kept(&finished.stdout),
        stderr: kept(&finished.stderr),
        leaked: finished.leftovers.len(),
        attempts: 1,
        flaky: false,
        max_attempts: 1,
    }
}

fn libc_sigabrt() -> i32 {
    NixSignal::SIGABRT as i32
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn binary() -> TestBinary {
        TestBinary {
            id: "package::suite".to_owned(),
            package: "package".to_owned(),
            target: "suite".to_owned(),
            kind: crate::build::BinaryKind::Test,
            selector: "--test suite".to_owned(),
            path: PathBuf::from("suite"),
            launch: Default::default(),
        }
    }

    /// The outcome of a `finished` line of a harness's report stream.
    fn reported(line: &str) -> TestOutcome {
        match serde_json::from_str::<Line<'_>>(line).expect("a report event") {
            Line::Finished(finished) => harness_outcome(&binary(), finished),
            _ => panic!("not a finished event: {line}"),
        }
    }

    /// A `finished` line for test `name`.
    fn finished_line(name: &str, passed: bool) -> String {
        format!(
            r#"{{"version":1,"event":"finished","name":"{name}","passed":{passed},"outcome":{{"kind":"returned"}}}}"#
        )
    }

    /// The outcomes `bytes` give the tests `asked`, as (name, status).
    fn read(bytes: &[u8], asked: &[&str]) -> (Vec<(String, Status)>, StreamRead) {
        let asked: HashSet<&str> = asked.iter().copied().collect();
        let mut stream = StreamRead::default();
        let mut outcomes = Vec::new();
        read_stream(
            bytes,
            &binary(),
            &asked,
            &mut stream,
            &mut |_| {},
            &mut |outcome: TestOutcome| {
                outcomes.push((outcome.name, outcome.status));
            },
        );
        (outcomes, stream)
    }

    #[test]
    fn the_first_verdict_on_a_test_asked_for_wins() {
        let stream = [
            finished_line("a", true),
            "not json".to_owned(),
            finished_line("stranger", true),
            finished_line("b", false),
            finished_line("a", false),
            "{\"version\":1,\"event\":\"started\",\"name\":\"c\"}".to_owned(),
        ]
        .join("\n");
        let (outcomes, stream) = read(stream.as_bytes(), &["a", "b", "c"]);
        assert_eq!(
            outcomes,
            [
                ("a".to_owned(), Status::Passed),
                ("b".to_owned(), Status::Failed)
            ]
        );
        assert_eq!(stream.unusable, 3);
        assert_eq!(
            stream.first_unusable.as_deref(),
            Some("a line that is not a report event")
        );
        assert_eq!(
            stream.reported,
            HashSet::from(["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn a_long_line_and_bytes_that_are_not_text_are_skipped() {
        let mut stream = vec![b'{'; 3 * report_stream::MAX_LINE];
        stream.extend_from_slice(b"\n\xff\xfe\x00\n");
        stream.extend_from_slice(finished_line("a", true).as_bytes());
        let (outcomes, stream) = read(&stream, &["a"]);
        assert_eq!(outcomes, [("a".to_owned(), Status::Passed)]);
        assert_eq!(stream.unusable, 2);
    }

    /// How a harness that reported nothing ended, as its tests read.
    fn unreported_because(status: ExitStatus, stderr: &str) -> (Status, String) {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(stderr.as_bytes()).unwrap();
        let end = HarnessEnd {
            status,
            fired: Fired::No,
            stderr: Some(file),
        };
        match unreported_reason(Ok(end), &StreamRead::default()) {
            Unreported::Failed(status, message) => (status, message),
            other => panic!("the harness ended by itself, not {other:?}"),
        }
    }

    #[test]
    fn a_test_the_harness_did_not_report_fails_with_how_it_ended() {
        let (status, message) = unreported_because(ExitStatus::from_raw(9), "");
        assert_eq!(status, Status::Broken);
        assert_eq!(
            message,
            "the harness was killed by signal 9 (SIGKILL: killed) before reporting this test"
        );
        for code in [0, 101] {
            let (status, message) = unreported_because(ExitStatus::from_raw(code << 8), "");
            assert_eq!(status, Status::Broken);
            assert_eq!(
                message,
                format!("the harness exited with code {code} without reporting this test")
            );
        }
        let (_, message) = unreported_because(
            ExitStatus::from_raw(101 << 8),
            "thread 'main' panicked at tests/suite.rs:3:5:\nno database\n",
        );
        assert!(
            message.ends_with(
                "\n---- harness stderr ----\nthread 'main' panicked at tests/suite.rs:3:5:\nno database"
            ),
            "{message}"
        );
        let (_, message) = unreported_because(
            ExitStatus::from_raw(3 << 8),
            &"e".repeat(10 * HARNESS_STDERR_KEPT),
        );
        assert!(message.starts_with("the harness exited with code 3 before reporting"));
        assert!(message.len() < 3 * HARNESS_STDERR_KEPT, "{}", message.len());
    }

    #[test]
    fn an_interrupted_harness_s_tests_keep_their_verdicts_or_say_how_far_they_got() {
        let stream = [
            r#"{"version":1,"event":"started","name":"a"}"#.to_owned(),
            finished_line("a", false),
            r#"{"version":1,"event":"started","name":"b"}"#.to_owned(),
        ]
        .join("\n");
        let tests = ["a", "b", "c"].map(str::to_owned);
        let (outcomes, read) = read(stream.as_bytes(), &["a", "b", "c"]);
        assert_eq!(outcomes, [("a".to_owned(), Status::Failed)]);
        let end = HarnessEnd {
            status: ExitStatus::from_raw(NixSignal::SIGTERM as i32),
            fired: Fired::Interrupted,
            stderr: None,
        };
        let why = unreported_reason(Ok(end), &read);
        let rest: Vec<(String, Status, String)> =
            unreported(&binary(), &tests, &read, &why, Instant::now())
                .map(|outcome| (outcome.name, outcome.status, outcome.message))
                .collect();
        assert_eq!(
            rest,
            [
                (
                    "b".to_owned(),
                    Status::Interrupted,
                    "interrupted while it ran".to_owned()
                ),
                (
                    "c".to_owned(),
                    Status::NotRun,
                    "not run: the run was interrupted".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn report_stream_events_become_outcomes() {
        let passed = reported(
            r#"{"version":1,"event":"finished","name":"a\"b","passed":true,"outcome":{"kind":"returned","error":null},"message":null,"duration_ms":1.5,"stdout":"out\n","stderr":"","leftovers":[]}"#,
        );
        assert_eq!(passed.name, "a\"b");
        assert_eq!(passed.status, Status::Passed);
        assert_eq!(passed.stdout, "out\n");
        assert_eq!(passed.duration, Duration::from_micros(1500));
        let crashed = reported(
            r#"{"version":1,"event":"finished","name":"c","passed":false,"outcome":{"kind":"signaled","signal":11,"signal_name":"SIGSEGV","core_dumped":false,"fault_address":0,"stack_overflow":false,"backtrace":[]},"message":"killed","duration_ms":2.0,"stdout":"","stderr":"","leftovers":[{"pid":7,"command":"sleep"}]}"#,
        );
        assert_eq!(
            crashed.status,
            Status::Crashed {
                signal: Signal(11),
                core_dumped: false
            }
        );
        assert_eq!((crashed.message.as_str(), crashed.leaked), ("killed", 1));
        let finished = |outcome: &str| {
            reported(&format!(
                r#"{{"version":1,"event":"finished","name":"t","passed":false,"outcome":{outcome},"message":"m"}}"#
            ))
            .status
        };
        assert_eq!(
            finished(r#"{"kind":"exited","code":3}"#),
            Status::ExitedEarly { code: 3 }
        );
        assert_eq!(
            finished(
                r#"{"kind":"timed_out","limit_ms":300,"grace_ms":1000,"signal_name":"SIGTERM"}"#
            ),
            Status::TimedOut {
                after: Duration::from_millis(300)
            }
        );
        assert!(matches!(
            finished(r#"{"kind":"out_of_memory","limit":64}"#),
            Status::Crashed { .. }
        ));
        assert_eq!(
            finished(r#"{"kind":"broken","reason":"r"}"#),
            Status::Broken
        );
        assert_eq!(
            finished(r#"{"kind":"panicked","message":"p","location":"l"}"#),
            Status::Failed
        );
        assert_eq!(finished(r#"{"kind":"of_a_later_version"}"#), Status::Failed);
        for duration in ["-1", "1e300"] {
            let line = format!(
                r#"{{"version":1,"event":"finished","name":"t","passed":true,"outcome":{{"kind":"returned"}},"duration_ms":{duration}}}"#
            );
            assert_eq!(reported(&line).duration, Duration::ZERO, "{duration}");
        }
    }

    /// Properties of reading a stream, whatever the harness wrote.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// The tests asked for: `t0`, `t1`, ...
        const ASKED: usize = 6;

        /// A piece of a report stream, each ended by a newline.
        #[derive(Clone, Debug)]
        enum Piece {
            /// A verdict on asked test `test`.
            Verdict { test: usize, passed: bool },
            /// A start of asked test `test`.
            Started { test: usize },
            /// A verdict on a test not asked for.
            Stranger { name: String },
            /// A verdict on asked test `test` with a byte replaced.
            Flipped { test: usize, at: usize, byte: u8 },
            /// Random bytes.
            Garbage(Vec<u8>),
            /// A line over the reader's limit.
            Huge { extra: usize },
        }

        fn piece() -> impl Strategy<Value = Piece> {
            prop_oneof![
                4 => (0..ASKED, any::<bool>()).prop_map(|(test, passed)| Piece::Verdict { test, passed }),
                1 => (0..ASKED).prop_map(|test| Piece::Started { test }),
                1 => "[a-z0-9 ]{0,12}".prop_map(|name| Piece::Stranger { name }),
                1 => (0..ASKED, any::<usize>(), any::<u8>())
                    .prop_map(|(test, at, byte)| Piece::Flipped { test, at, byte }),
                1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Garbage),
                1 => (1..4096_usize).prop_map(|extra| Piece::Huge { extra }),
            ]
        }

        fn name(test: usize) -> String {
            format!("t{test}")
        }

        impl Piece {
            fn bytes(&self) -> Vec<u8> {
                match self {
                    Piece::Verdict { test, passed } => {
                        finished_line(&name(*test), *passed).into_bytes()
                    }
                    Piece::Started { test } => format!(
                        r#"{{"version":1,"event":"started","name":"{}"}}"#,
                        name(*test)
                    )
                    .into_bytes(),
                    Piece::Stranger { name } => {
                        finished_line(&format!("x{name}"), true).into_bytes()
                    }
                    Piece::Flipped { test, at, byte } => {
                        let mut line = finished_line(&name(*test), true).into_bytes();
                        let at = at % line.len();
                        line[at] = *byte;
                        line
                    }
                    Piece::Garbage(bytes) => bytes.clone(),
                    Piece::Huge { extra } => vec![b'"'; report_stream::MAX_LINE + extra],
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn every_test_asked_for_ends_with_exactly_one_outcome(
                pieces in proptest::collection::vec(piece(), 0..24),
                cut in proptest::option::of(any::<usize>()),
                interrupted in any::<bool>(),
            ) {
                let mut stream: Vec<u8> = pieces
                    .iter()
                    .flat_map(|piece| {
                        let mut bytes = piece.bytes();
                        bytes.push(b'\n');
                        bytes
                    })
                    .collect();
                // The harness may die in the middle of a line.
                if let Some(cut) = cut {
                    stream.truncate(cut % (stream.len() + 1));
                }
                let tests: Vec<String> = (0..ASKED).map(name).collect();
                let asked: HashSet<&str> = tests.iter().map(String::as_str).collect();
                let mut read = StreamRead::default();
                let mut outcomes = Vec::new();
                let mut on_outcome = |outcome| outcomes.push(outcome);
                read_stream(&stream[..], &binary(), &asked, &mut read, &mut |_| {}, &mut on_outcome);
                prop_assert!(read.error.is_none());
                let why = if interrupted {
                    Unreported::Interrupted
                } else {
                    Unreported::Failed(Status::Broken, "unreported".to_owned())
                };
                outcomes.extend(unreported(&binary(), &tests, &read, &why, Instant::now()));
                let mut names: Vec<&str> = outcomes.iter().map(|outcome| outcome.name.as_str()).collect();
                names.sort_unstable();
                prop_assert_eq!(names, tests.iter().map(String::as_str).collect::<Vec<_>>());
                // The first verdict on a test stands, where no line that
                // might be one came before it, and it was written whole.
                let mut end = 0;
                let mut doubtful = false;
                let mut first: [Option<bool>; ASKED] = [None; ASKED];
                let mut decided = [false; ASKED];
                for piece in &pieces {
                    end += piece.bytes().len() + 1;
                    match piece {
                        Piece::Verdict { test, passed } if !decided[*test] => {
                            decided[*test] = true;
                            if !doubtful && end - 1 <= stream.len() {
                                first[*test] = Some(*passed);
                            }
                        }
                        Piece::Flipped { .. } | Piece::Garbage(_) => doubtful = true,
                        _ => {}
                    }
                }
                for (test, passed) in first.iter().enumerate() {
                    if let Some(passed) = passed {
                        let outcome = outcomes.iter().find(|outcome| outcome.name == name(test)).unwrap();
                        let expected = if *passed { Status::Passed } else { Status::Failed };
                        prop_assert_eq!(&outcome.status, &expected);
                    }
                }
            }
        }
    }
}
