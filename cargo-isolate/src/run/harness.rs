//! isolate-harness binaries: one process per binary, whose fork server
//! isolates each test, and whose report stream says how each ended.

use std::collections::HashSet;
use std::io::{self, BufReader, Read, Write};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use isolate_harness::Signal;
use isolate_harness::report_stream::{self, Finished, Line, LineReader, Outcome, Received};
use nix::sys::signal::Signal as NixSignal;
use nix::unistd::Pid;

use super::capture::scratch_dir;
use super::watchdog::{Fired, Watchdog, reap, wait_unreaped};
use super::{Event, RunPlan, Status, TestOutcome, outcome, test_command};
use crate::build::TestBinary;
use crate::list::BinaryTests;

/// Runs an isolate-harness binary for `tests`, reading its report stream,
/// and again for the tests that failed, as `--retries` allows.
pub(super) fn run_harness(
    binary: &BinaryTests,
    tests: &[String],
    plan: &RunPlan,
    watchdog: &Watchdog,
    events: &Sender<Event>,
    stop: &impl Fn(&TestOutcome),
) {
    let mut pending = tests.to_vec();
    for round in 0..=plan.retries {
        let mut failed = Vec::new();
        run_harness_once(binary, &pending, plan, watchdog, |mut outcome| {
            outcome.attempts = round + 1;
            outcome.flaky = round > 0 && !outcome.status.is_failure();
            if outcome.status.is_failure() && round < plan.retries {
                failed.push(outcome.name.clone());
                return;
            }
            stop(&outcome);
            let _ = events.send(Event::Finished(Box::new(outcome)));
        });
        if failed.is_empty() {
            return;
        }
        pending = failed;
    }
}

/// Runs an isolate-harness binary once for `tests`; every test gets an
/// outcome, from the stream or, if the stream missed it, as broken.
fn run_harness_once(
    binary: &BinaryTests,
    tests: &[String],
    plan: &RunPlan,
    watchdog: &Watchdog,
    mut on_outcome: impl FnMut(TestOutcome),
) {
    let started = Instant::now();
    // A set: a harness binary may run thousands of tests.
    let mut reported = HashSet::new();
    let result = run_harness_process(binary, tests, plan, watchdog, |outcome| {
        reported.insert(outcome.name.clone());
        on_outcome(outcome);
    });
    let (status, reason) = match result {
        Ok((_, Fired::Interrupted)) => (Status::Interrupted, "stopped before it ran".to_owned()),
        Ok((status, _)) if status.success() || status.code() == Some(101) => (
            Status::Broken,
            "the harness did not report this test".to_owned(),
        ),
        Ok((status, _)) => (
            Status::Broken,
            format!("the harness binary ended ({status}) before reporting this test"),
        ),
        Err(error) => (
            Status::Broken,
            format!("could not run the harness binary: {error}"),
        ),
    };
    for name in tests.iter().filter(|name| !reported.contains(*name)) {
        let mut outcome = outcome(&binary.binary, name, status.clone(), reason.clone());
        outcome.duration = started.elapsed();
        on_outcome(outcome);
    }
}

fn run_harness_process(
    binary: &BinaryTests,
    tests: &[String],
    plan: &RunPlan,
    watchdog: &Watchdog,
    mut on_outcome: impl FnMut(TestOutcome),
) -> io::Result<(ExitStatus, Fired)> {
    let (reader, writer) = io::pipe()?;
    let mut command = test_command(&binary.binary);
    command
        .args([
            "--test-threads",
            &plan.threads.to_string(),
            "--include-ignored",
        ])
        .env(report_stream::REPORT_FD_VAR, "3");
    if plan.nocapture {
        command.arg("--nocapture");
    } else {
        // Its own report, unread, in the cheapest form: a line per test
        // would cost a harness of trivial tests a tenth of its time.
        command
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    // The tests to run, by name, in a file the harness reads: a --skip per
    // other test would cost the harness a comparison per pair.
    let only = tempfile::NamedTempFile::new_in(scratch_dir())?;
    let mut names = io::BufWriter::new(only.as_file());
    for test in tests {
        writeln!(names, "{test}")?;
    }
    names.flush()?;
    command.env("ISOLATE_ONLY", only.path());
    if let Some(timeout) = plan.timeout {
        command.env(
            "ISOLATE_DEFAULT_TIMEOUT_MS",
            timeout.as_millis().to_string(),
        );
    }
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: writer.into(),
            child_fd: 3,
        }])
        .map_err(io::Error::other)?;
    let mut child = command.spawn()?;
    // Our copy of the pipe's write end goes with the command, so the
    // stream ends when the harness does.
    drop(command);
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    watchdog.watch(pid, None);
    let mut lines = LineReader::new(BufReader::with_capacity(PIPE_CAPACITY, Batched(reader)));
    while let Some(received) = lines.next_line()? {
        match received {
            Received::Line(Line::Finished(finished)) => {
                on_outcome(harness_outcome(&binary.binary, finished));
            }
            // A start, an event of a later version, or a line skipped.
            Received::Line(_) | Received::Skipped(_) => {}
        }
    }
    wait_unreaped(pid)?;
    let ended = reap(&mut child, pid, watchdog)?;
    Ok((ended.status, ended.fired))
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
        message: finished.message.map(String::from).unwrap_or_default(),
        // Whatever the line says: a negative or absurd duration is none.
        duration: Duration::try_from_secs_f64(finished.duration_ms / 1000.0).unwrap_or_default(),
        stdout: finished.stdout.into_owned(),
        stderr: finished.stderr.into_owned(),
        leaked: finished.leftovers.len(),
        attempts: 1,
        flaky: false,
    }
}

fn libc_sigabrt() -> i32 {
    NixSignal::SIGABRT as i32
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The outcome of a `finished` line of a harness's report stream.
    fn reported(line: &str) -> TestOutcome {
        let binary = TestBinary {
            id: "package::suite".to_owned(),
            package: "package".to_owned(),
            target: "suite".to_owned(),
            selector: "--test suite".to_owned(),
            path: PathBuf::from("suite"),
            package_dir: PathBuf::from("."),
        };
        match serde_json::from_str::<Line<'_>>(line).expect("a report event") {
            Line::Finished(finished) => harness_outcome(&binary, finished),
            _ => panic!("not a finished event: {line}"),
        }
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
}
