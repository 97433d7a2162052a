//! Plain libtest binaries: a test per process, or a batch of tests per
//! process (`--isolation batch`); their verdicts, from libtest's log and the
//! process's status, and their output, split between tests and freed of
//! libtest's framing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use isolate_harness::Signal;
use nix::sys::signal::Signal as NixSignal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::capture::{KEPT_OUTPUT, ScratchFileError, named_scratch_file, output_file, read_kept};
use super::watchdog::{Ended, Fired, GRACE_PERIOD, Watchdog, reap, wait_unreaped};
use super::with_causes;
use super::{INTERRUPTED_WHILE_RUNNING, RunPlan, Status, TestOutcome, outcome, test_command};
use crate::build::TestBinary;

/// libtest running `names` one after another, each as it would run alone:
/// ignored or not, output uncaptured (it goes where the runner says), and
/// every result logged to `logfile`.
fn libtest_command<S: AsRef<std::ffi::OsStr>>(
    binary: &TestBinary,
    names: impl IntoIterator<Item = S>,
    logfile: &Path,
) -> Command {
    let mut command = test_command(binary);
    command
        .arg("--exact")
        .args(names)
        .args([
            "--test-threads",
            "1",
            "--include-ignored",
            "--nocapture",
            "--logfile",
        ])
        .arg(logfile);
    command
}

/// Runs one test of a libtest binary in a process of its own.
pub(super) fn run_libtest(
    binary: &TestBinary,
    name: &str,
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> TestOutcome {
    let started = Instant::now();
    let mut outcome = run_libtest_process(binary, name, plan, watchdog).unwrap_or_else(|error| {
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
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> Result<TestOutcome, ProcessError> {
    let logfile = named_scratch_file()?;
    let mut command = libtest_command(binary, [name], logfile.path());
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
    watchdog.watch(pid, plan.timeout);
    wait_unreaped(pid).map_err(ProcessError::Wait)?;
    let Ended {
        status,
        fired,
        leaked,
    } = reap(&mut child, pid, watchdog).map_err(ProcessError::Wait)?;
    let log = std::fs::read_to_string(logfile.path()).unwrap_or_default();
    let (status, mut message) = libtest_verdict(&log, name, status, fired, plan.timeout);
    let (stdout, stderr) = captured
        .map(|(stdout, stderr)| {
            (
                without_libtest_lines(&read_kept(stdout, KEPT_OUTPUT), name),
                without_libtest_lines(&read_kept(stderr, KEPT_OUTPUT), name),
            )
        })
        .unwrap_or_default();
    if status == Status::Failed
        && let Some(panic) = panic_message(&stderr)
    {
        message = panic;
    }
    Ok(TestOutcome {
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
    })
}

/// Bytes of a batch's output read to split it between its tests.
const BATCH_OUTPUT: u64 = 16 * 1024 * 1024;

/// Runs `names` of a libtest binary in one process, in sequence. Returns
/// the outcomes of the tests that ran and, if the process died mid-way,
/// the names that are left.
pub(super) fn run_batch(
    binary: &TestBinary,
    names: &[String],
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> (Vec<TestOutcome>, Vec<String>) {
    let started = Instant::now();
    match run_batch_process(binary, names, plan, watchdog) {
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
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> Result<(Vec<TestOutcome>, Vec<String>), ProcessError> {
    let started = Instant::now();
    let logfile = named_scratch_file()?;
    let (stdout, stdout_writer) = output_file()?;
    let (stderr, stderr_writer) = output_file()?;
    let mut command = libtest_command(binary, names, logfile.path());
    command.stdout(stdout_writer).stderr(stderr_writer);
    let (mut child, pid) = spawn(command, binary, watchdog)?;
    watchdog.watch(pid, plan.timeout);
    // The timeout is per test: it starts again whenever libtest logs one.
    let mut logged = 0;
    loop {
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
        ) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => break,
            Err(error) => return Err(ProcessError::Wait(error.into())),
        }
        if let Some(timeout) = plan.timeout {
            let length = std::fs::metadata(logfile.path()).map_or(0, |metadata| metadata.len());
            if length != logged {
                logged = length;
                watchdog.rearm(pid, timeout);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Ended {
        status,
        fired,
        leaked,
    } = reap(&mut child, pid, watchdog).map_err(ProcessError::Wait)?;
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(logfile.path()).unwrap_or_default();
    let stdout = read_prefix(stdout, BATCH_OUTPUT);
    let stderr = read_prefix(stderr, BATCH_OUTPUT);
    let segments = split_by_test(&stdout, names);
    let mut outcomes = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for (name, verdict) in logged_verdicts(&log) {
        let Some(name) = names.iter().find(|candidate| *candidate == name) else {
            continue;
        };
        let (status, message) = match verdict {
            "ok" => (Status::Passed, String::new()),
            "failed" => (
                Status::Failed,
                thread_panic(&stderr, name).unwrap_or_else(|| "the test failed".to_owned()),
            ),
            _ => continue,
        };
        done.push(name);
        let mut outcome = outcome(binary, name, status, message);
        outcome.stdout = segments.get(name.as_str()).cloned().unwrap_or_default();
        outcomes.push(outcome);
    }
    let mut rest: Vec<String> = names
        .iter()
        .filter(|name| !done.contains(&name.as_str()))
        .cloned()
        .collect();
    if !rest.is_empty() {
        // The test that was running when the process died: the last one
        // libtest announced, else the first of the rest in libtest's order.
        let running = segments
            .order
            .iter()
            .rev()
            .find(|name| !done.contains(&name.as_str()))
            .cloned()
            .unwrap_or_else(|| rest.iter().min().cloned().unwrap_or_default());
        rest.retain(|name| *name != running);
        let (status, message) = libtest_verdict("", &running, status, fired, plan.timeout);
        let mut outcome = outcome(binary, &running, status, message);
        outcome.stdout = segments.get(running.as_str()).cloned().unwrap_or_default();
        outcome.stderr = stderr;
        outcomes.push(outcome);
    }
    if let Some(last) = outcomes.last_mut() {
        last.leaked = leaked;
    }
    let each = elapsed / u32::try_from(outcomes.len().max(1)).unwrap_or(u32::MAX);
    for outcome in &mut outcomes {
        outcome.duration = each;
    }
    Ok((outcomes, rest))
}

/// A batch's stdout cut into the output of each of its tests, and the
/// order libtest announced them in (`test NAME ... ` starts each).
struct Segments {
    order: Vec<String>,
    text: HashMap<String, String>,
}

impl Segments {
    fn get(&self, name: &str) -> Option<&String> {
        self.text.get(name)
    }
}

fn split_by_test(stdout: &str, names: &[String]) -> Segments {
    let mut segments = Segments {
        order: Vec::new(),
        text: HashMap::new(),
    };
    let mut current: Option<String> = None;
    for line in stdout.split_inclusive('\n') {
        // Once the tests are over, libtest prints its summary.
        if line.trim_end() == "failures:" || line.starts_with("test result: ") {
            break;
        }
        let started = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
            .filter(|(name, _)| names.iter().any(|candidate| candidate == name));
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
        let trimmed = text.trim_end();
        let trimmed = trimmed
            .strip_suffix("ok")
            .or_else(|| trimmed.strip_suffix("FAILED"))
            .unwrap_or(trimmed);
        *text = trimmed.trim_end().to_owned();
    }
    segments
}

/// The panic of test `name` in a batch's stderr, by its thread's name.
fn thread_panic(stderr: &str, name: &str) -> Option<String> {
    let header = format!("thread '{name}'");
    let start = stderr.find(&header)?;
    panic_message(&stderr[start..])
}

/// The first `limit` bytes of a captured stream, as text.
fn read_prefix(mut file: File, limit: u64) -> String {
    let mut bytes = Vec::new();
    // The test shared this file's offset, and left it at the end.
    if file.rewind().is_ok() {
        let _ = file.take(limit).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The verdicts in libtest's log, `(name, verdict)`, one per test: the
/// last line for it, in the order of those lines. The test runs in the
/// process that writes the log and holds the file open, so a test can
/// write a line of its own in its name, but only before libtest writes
/// the real one, once the test has returned: the last line is libtest's.
fn logged_verdicts(log: &str) -> Vec<(&str, &str)> {
    let mut lines: Vec<Option<(&str, &str)>> = Vec::new();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (verdict, name) in log.lines().filter_map(|line| line.split_once(' ')) {
        if let Some(earlier) = last.insert(name, lines.len()) {
            lines[earlier] = None;
        }
        lines.push(Some((name, verdict)));
    }
    lines.into_iter().flatten().collect()
}

/// How a libtest test ended, from libtest's log and its process's status.
fn libtest_verdict(
    log: &str,
    name: &str,
    status: ExitStatus,
    fired: Fired,
    timeout: Option<Duration>,
) -> (Status, String) {
    let logged = logged_verdicts(log)
        .into_iter()
        .find_map(|(test, verdict)| (test == name).then_some(verdict));
    if fired == Fired::Interrupted {
        let mut message = INTERRUPTED_WHILE_RUNNING.to_owned();
        if status.signal() == Some(NixSignal::SIGKILL as i32) {
            message.push_str(&format!(
                ": it did not end on SIGTERM and was killed by SIGKILL after {GRACE_PERIOD:?}"
            ));
        }
        return (Status::Interrupted, message);
    }
    if fired == Fired::TimedOut {
        let after = timeout.unwrap_or_default();
        return (
            Status::TimedOut { after },
            format!(
                "timed out after {after:?} and was killed (SIGTERM, then SIGKILL after {GRACE_PERIOD:?})"
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
        return (
            Status::Crashed {
                signal,
                core_dumped,
            },
            message,
        );
    }
    match (logged, status.code()) {
        (Some("ok"), Some(0)) => (Status::Passed, String::new()),
        (Some("failed"), _) => (Status::Failed, "the test failed".to_owned()),
        (Some("ok"), Some(code)) => (
            Status::ExitedEarly { code },
            format!("libtest reported the test passed, but its process exited with code {code}"),
        ),
        (_, Some(code)) => (
            Status::ExitedEarly { code },
            format!("exited with code {code} before libtest reported a result"),
        ),
        (_, None) => (Status::Broken, format!("ended with {status}")),
    }
}

/// The panic Rust's hook printed, as `panicked at FILE:LINE:COLUMN: MESSAGE`.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let header = lines
        .by_ref()
        .find(|line| line.starts_with("thread '") && line.contains(" panicked at "))?;
    let location = header.split(" panicked at ").nth(1)?.trim_end_matches(':');
    let text: Vec<&str> = lines
        .take_while(|line| !line.starts_with("note: ") && !line.starts_with("stack backtrace:"))
        .collect();
    Some(format!("panicked at {location}: {}", text.join("\n")))
}

/// A test's output without the lines libtest adds around it when it runs
/// one test with `--nocapture`: the test's own output is what is left.
fn without_libtest_lines(text: &str, name: &str) -> String {
    let start = format!("test {name} ... ");
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        // After a failure, libtest's summary follows the test's output.
        if bare == "failures:" {
            break;
        }
        let framing = bare == "running 1 test"
            || bare == "warning: `--logfile` is deprecated"
            || bare.starts_with("test result: ")
            || bare.trim().is_empty() && kept.is_empty();
        if framing {
            continue;
        }
        // libtest writes `test NAME ... ` before the test's first output
        // and the verdict after its last.
        kept.push_str(line.strip_prefix(start.as_str()).unwrap_or(line));
    }
    let trimmed = kept.trim_end();
    let trimmed = trimmed
        .strip_suffix("ok")
        .or_else(|| trimmed.strip_suffix("FAILED"))
        .map_or(trimmed, str::trim_end);
    trimmed.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_batch_s_output_is_split_between_its_tests() {
        let names = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let stdout = "\nrunning 3 tests\ntest a ... one\ntwo\nok\ntest b ... ok\ntest c ... three\nFAILED\n\nfailures:\n    c\n";
        let segments = split_by_test(stdout, &names);
        assert_eq!(segments.order, names);
        assert_eq!(segments.get("a").map(String::as_str), Some("one\ntwo"));
        assert_eq!(segments.get("b").map(String::as_str), Some(""));
        assert_eq!(segments.get("c").map(String::as_str), Some("three"));
    }

    #[test]
    fn panics_are_read_from_stderr() {
        let stderr = "thread 'panics' (1234) panicked at tests/outcomes.rs:20:5:\ndragons\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("panicked at tests/outcomes.rs:20:5: dragons")
        );
        assert_eq!(panic_message("nothing here"), None);
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
            without_libtest_lines("warning: `--logfile` is deprecated\nreal error\n", "t"),
            "real error"
        );
    }

    #[test]
    fn a_test_s_own_log_line_gives_way_to_libtest_s() {
        assert_eq!(
            logged_verdicts("ok a\nok b\nfailed a\nok c\n"),
            [("b", "ok"), ("a", "failed"), ("c", "ok")]
        );
        assert_eq!(
            libtest_verdict("ok t\nfailed t\n", "t", exit(101), Fired::No, None).0,
            Status::Failed
        );
    }

    #[test]
    fn only_a_logged_pass_with_a_clean_exit_passes() {
        assert_eq!(
            libtest_verdict("ok t\n", "t", exit(0), Fired::No, None).0,
            Status::Passed
        );
        assert_eq!(
            libtest_verdict("", "t", exit(0), Fired::No, None).0,
            Status::ExitedEarly { code: 0 }
        );
        assert_eq!(
            libtest_verdict("failed t\n", "t", exit(101), Fired::No, None).0,
            Status::Failed
        );
        assert_eq!(
            libtest_verdict("ok t\n", "t", exit(3), Fired::No, None).0,
            Status::ExitedEarly { code: 3 }
        );
        let (status, message) = libtest_verdict("", "t", ExitStatus::from_raw(11), Fired::No, None);
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
        assert!(matches!(
            libtest_verdict(
                "",
                "t",
                ExitStatus::from_raw(15),
                Fired::TimedOut,
                Some(Duration::from_secs(1))
            )
            .0,
            Status::TimedOut { .. }
        ));
    }
}
