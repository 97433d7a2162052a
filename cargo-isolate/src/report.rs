//! Reports of a run, all read from the one stream of [`Event`]s: lines for
//! people, JSON lines for programs, and JUnit XML for CI.
//!
//! # JSON lines (`--message-format json`)
//!
//! One object per line, each with `"version": 1` and an `"event"`:
//! `run-started`, `test-slow`, `test-attempt-failed`, `test-finished`,
//! `leftovers-swept`, `run-finished`. Their fields, and those of `cargo
//! isolate list --message-format json` ([`listing_json`]), are documented
//! in `JSON.md` at the root of the repository, with the rules of the
//! version: a change to a field there is a change to that file.
//!
//! # An interrupted run
//!
//! A run interrupted once (Ctrl-C, SIGTERM) reports every test: those that
//! ended first as they ended, those it stopped as `interrupted`, and those
//! that never started as `not-run` (in JUnit, skipped; for people, counted
//! in the summary but listed only with `--verbose`). The summary and the
//! JUnit report are written at the end of the run; a second interruption
//! exits at once without them. It leaves no JUnit report, or an existing
//! one as it was: the report is written beside its path and renamed onto
//! it.
//!
//! # For people
//!
//! A line per test as it ends (`PASS`, `FAIL`, `CRASH`, ...), a `SLOW`
//! line each `--slow-timeout` period a test runs on, and under
//! `--retries` a `TRY N` line per attempt, with the diagnosis of each
//! failed one; after the summary, a `FLAKY N/M` line per test that passed
//! on attempt N of M, as nextest prints them.
//!
//! # Rerun commands
//!
//! Human output ends with a command per failure that runs that test again,
//! alone, under the run's conditions (see [`Rerun`]), quoted for a POSIX
//! shell so that it runs as printed whatever the test's name or the
//! workspace's path holds.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use indicatif::{ProgressBar, ProgressStyle};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};
use serde_json::json;

use crate::build::TestBinary;
use crate::cli::{ColorChoice, MessageFormat, Rerun};
use crate::list::{BinaryTests, ListedTest, Runner};
use crate::run::{Event, Status, TestOutcome};

/// The version of the JSON lines.
const JSON_VERSION: u32 = 1;

/// Counts of a run, by how tests ended.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) crashed: usize,
    pub(crate) timed_out: usize,
    pub(crate) exited_early: usize,
    pub(crate) broken: usize,
    pub(crate) ignored: usize,
    pub(crate) interrupted: usize,
    pub(crate) not_run: usize,
    pub(crate) leaked: usize,
    pub(crate) flaky: usize,
}

impl Summary {
    fn count(&mut self, outcome: &TestOutcome) {
        let count = match outcome.status {
            Status::Passed => &mut self.passed,
            Status::Failed => &mut self.failed,
            Status::Crashed { .. } => &mut self.crashed,
            Status::TimedOut { .. } => &mut self.timed_out,
            Status::ExitedEarly { .. } => &mut self.exited_early,
            Status::Broken => &mut self.broken,
            Status::Ignored => &mut self.ignored,
            Status::Interrupted => &mut self.interrupted,
            Status::NotRun => &mut self.not_run,
        };
        *count += 1;
        if outcome.leaked > 0 {
            self.leaked += 1;
        }
        if outcome.flaky {
            self.flaky += 1;
        }
    }

    /// Whether any test did not pass.
    pub(crate) fn has_failures(&self) -> bool {
        self.failed
            + self.crashed
            + self.timed_out
            + self.exited_early
            + self.broken
            + self.interrupted
            > 0
    }

    fn run(&self) -> usize {
        self.passed
            + self.failed
            + self.crashed
            + self.timed_out
            + self.exited_early
            + self.broken
            + self.interrupted
    }
}

/// Everything the reporter was asked to do.
pub(crate) struct ReportSettings<'a> {
    pub(crate) format: MessageFormat,
    pub(crate) color: ColorChoice,
    pub(crate) verbose: bool,
    /// Human output has only the failures and the summary (`-q`).
    pub(crate) quiet: bool,
    pub(crate) junit: Option<Junit<'a>>,
    /// What the rerun commands repeat of the run.
    pub(crate) rerun: &'a Rerun,
}

/// The JUnit report to write: where, its name, and whose output it keeps.
pub(crate) struct Junit<'a> {
    pub(crate) path: &'a Path,
    /// The name of its `testsuites` element.
    pub(crate) report_name: &'a str,
    /// Whether passing tests' output is kept (nextest's
    /// `store-success-output`).
    pub(crate) success_output: bool,
    /// Whether failing tests' output is kept (`store-failure-output`).
    pub(crate) failure_output: bool,
}

/// Reads events until the run ends, writing the reports; returns the
/// counts.
///
/// # Errors
///
/// When the JUnit report cannot be written.
pub(crate) fn report(
    events: std::sync::mpsc::Receiver<Event>,
    settings: &ReportSettings<'_>,
) -> std::io::Result<Summary> {
    let started = std::time::Instant::now();
    let choice = match settings.color {
        ColorChoice::Auto => anstream::ColorChoice::Auto,
        ColorChoice::Always => anstream::ColorChoice::Always,
        ColorChoice::Never => anstream::ColorChoice::Never,
    };
    let mut out = anstream::AutoStream::new(std::io::stdout(), choice);
    // On a terminal, a bar under the lines counts the tests done; a log
    // or a pipe gets the lines alone.
    let progress = (settings.format == MessageFormat::Human && std::io::stdout().is_terminal())
        .then(|| {
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tests",
                )
                .expect("the template is valid"),
            )
        });
    let mut summary = Summary::default();
    let mut outcomes = Vec::new();
    // The failed attempts of each test that ran again, for JUnit.
    let mut attempts: HashMap<(String, String), Vec<TestOutcome>> = HashMap::new();
    let human = settings.format == MessageFormat::Human;
    // The tests of the binaries that do not run, for libtest's summary.
    let mut filtered_out = 0;
    for event in events {
        if settings.format == MessageFormat::LibtestJson {
            write_libtest_event(&mut out, &event);
            match event {
                Event::Started { skipped, .. } => filtered_out = skipped,
                Event::Finished(outcome) => {
                    summary.count(&outcome);
                    outcomes.push(*outcome);
                }
                Event::Retried(attempt) => attempts
                    .entry((attempt.binary.id.clone(), attempt.name.clone()))
                    .or_default()
                    .push(*attempt),
                Event::Swept(_) | Event::Slow { .. } => {}
            }
            continue;
        }
        match event {
            Event::Started {
                tests,
                binaries,
                skipped,
                containment,
            } if human => {
                if let Some(progress) = &progress {
                    progress.set_length(tests as u64);
                }
                let mut line = format!(
                    "    Starting {} across {}",
                    counted(tests, "test", "tests"),
                    counted(binaries, "binary", "binaries")
                );
                if skipped > 0 {
                    line.push_str(&format!(" ({skipped} skipped)"));
                }
                if !settings.quiet {
                    let _ = writeln!(out, "{}", styled(BOLD_GREEN, &line));
                }
                if settings.verbose {
                    let _ = writeln!(out, " Containment {containment}");
                }
            }
            Event::Started {
                tests,
                binaries,
                skipped,
                containment,
            } => {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"version": JSON_VERSION, "event": "run-started", "tests": tests, "binaries": binaries, "skipped": skipped, "containment": containment})
                );
            }
            Event::Swept(processes) => {
                let message = format!(
                    "{} that tests left outside their process groups {} found after the run, and killed",
                    counted(processes, "process", "processes"),
                    if processes == 1 { "was" } else { "were" }
                );
                if human {
                    let _ = writeln!(
                        out,
                        "{}",
                        styled(BOLD_YELLOW, &format!("     Leftover {message}"))
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "{}",
                        json!({"version": JSON_VERSION, "event": "leftovers-swept", "processes": processes})
                    );
                }
            }
            Event::Slow {
                binary,
                name,
                elapsed,
            } => {
                if human {
                    above_progress(progress.as_ref(), || {
                        let _ = writeln!(
                            out,
                            "{} [>{:>7.3}s] {binary} {name}",
                            styled(BOLD_YELLOW, &format!("{:>12}", "SLOW")),
                            elapsed.as_secs_f64()
                        );
                    });
                } else {
                    let _ = writeln!(
                        out,
                        "{}",
                        json!({
                            "version": JSON_VERSION,
                            "event": "test-slow",
                            "binary": binary,
                            "name": name,
                            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                        })
                    );
                }
            }
            Event::Retried(attempt) => {
                if !human {
                    let mut value = outcome_json(&attempt);
                    value["event"] = json!("test-attempt-failed");
                    let _ = writeln!(out, "{value}");
                } else if !settings.quiet {
                    // Quiet, only the last attempt's failure is shown.
                    above_progress(progress.as_ref(), || {
                        print_test_line(&mut out, &attempt, true, settings.verbose);
                        for line in attempt.message.lines() {
                            let _ = writeln!(out, "    {line}");
                        }
                        print_output(&mut out, &attempt);
                    });
                }
                attempts
                    .entry((attempt.binary.id.clone(), attempt.name.clone()))
                    .or_default()
                    .push(*attempt);
            }
            Event::Finished(outcome) => {
                summary.count(&outcome);
                // Tests that did not run are counted, not listed, unless
                // asked: an interruption may leave thousands.
                // Quiet, only failures are.
                let listed = if settings.quiet {
                    outcome.status.is_failure()
                } else {
                    settings.verbose || outcome.status != Status::NotRun
                };
                if human {
                    if listed {
                        above_progress(progress.as_ref(), || {
                            print_test_line(
                                &mut out,
                                &outcome,
                                outcome.attempts > 1,
                                settings.verbose,
                            );
                        });
                    }
                    // The bar counts the tests that run.
                    if let Some(progress) = &progress
                        && outcome.status != Status::Ignored
                    {
                        progress.inc(1);
                    }
                } else {
                    let _ = writeln!(out, "{}", outcome_json(&outcome));
                }
                outcomes.push(*outcome);
            }
        }
    }
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    let elapsed = started.elapsed();
    match settings.format {
        MessageFormat::Human => print_summary(&mut out, &summary, &outcomes, settings, elapsed),
        MessageFormat::Json => {
            let _ = writeln!(
                out,
                "{}",
                json!({
                    "version": JSON_VERSION,
                    "event": "run-finished",
                    "passed": summary.passed,
                    "failed": summary.failed,
                    "crashed": summary.crashed,
                    "timed_out": summary.timed_out,
                    "exited_early": summary.exited_early,
                    "broken": summary.broken,
                    "interrupted": summary.interrupted,
                    "not_run": summary.not_run,
                    "flaky": summary.flaky,
                    "ignored": summary.ignored,
                    "leaked": summary.leaked,
                    "duration_ms": elapsed.as_secs_f64() * 1000.0,
                })
            );
        }
        MessageFormat::LibtestJson => {
            let failed = summary.failed
                + summary.crashed
                + summary.timed_out
                + summary.exited_early
                + summary.broken
                + summary.interrupted;
            let _ = writeln!(
                out,
                "{}",
                json!({
                    "type": "suite",
                    "event": if failed == 0 { "ok" } else { "failed" },
                    "passed": summary.passed,
                    "failed": failed,
                    "ignored": summary.ignored,
                    "measured": 0,
                    "filtered_out": filtered_out,
                    "exec_time": elapsed.as_secs_f64(),
                })
            );
        }
    }
    if let Some(junit) = &settings.junit {
        write_junit(junit, &outcomes, &attempts, elapsed)?;
    }
    Ok(summary)
}

const BOLD_GREEN: Style = AnsiColor::Green.on_default().bold();
const BOLD_RED: Style = AnsiColor::Red.on_default().bold();
const BOLD_YELLOW: Style = AnsiColor::Yellow.on_default().bold();
const BOLD_MAGENTA: Style = AnsiColor::Magenta.on_default().bold();

fn styled(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// `count` and the noun that goes with it: `1 test`, `2 tests`.
fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Runs `print` with the progress bar, if any, out of its way.
fn above_progress(progress: Option<&ProgressBar>, print: impl FnOnce()) {
    match progress {
        Some(progress) => progress.suspend(print),
        None => print(),
    }
}

/// The label and colour of a status in human output.
fn label(status: &Status) -> (&'static str, Style) {
    match status {
        Status::Passed => ("PASS", BOLD_GREEN),
        Status::Failed => ("FAIL", BOLD_RED),
        Status::Crashed { .. } => ("CRASH", BOLD_MAGENTA),
        Status::TimedOut { .. } => ("TIMEOUT", BOLD_RED),
        Status::ExitedEarly { .. } => ("EXIT", BOLD_RED),
        Status::Ignored => ("IGNORED", BOLD_YELLOW),
        Status::Broken => ("BROKEN", BOLD_RED),
        Status::Interrupted => ("STOPPED", BOLD_YELLOW),
        Status::NotRun => ("NOT RUN", BOLD_YELLOW),
    }
}

/// The line of a test that ended, or of an attempt at it: `tried` says
/// which attempt it was, as `TRY N`.
fn print_test_line(out: &mut impl Write, outcome: &TestOutcome, tried: bool, verbose: bool) {
    let (label, style) = label(&outcome.status);
    let label = if tried {
        format!("TRY {} {label}", outcome.attempts)
    } else {
        label.to_owned()
    };
    let mut line = format!(
        "{} [{:>8.3}s] {} {}",
        styled(style, &format!("{label:>12}")),
        outcome.duration.as_secs_f64(),
        outcome.binary.id,
        outcome.name
    );
    if let Status::Crashed { signal, .. } = &outcome.status {
        line.push_str(&format!(" ({})", signal.name()));
    }
    if outcome.leaked > 0 {
        line.push_str(&styled(
            BOLD_YELLOW,
            &format!(
                " [leaked {}, killed]",
                counted(outcome.leaked, "process", "processes")
            ),
        ));
    }
    let _ = writeln!(out, "{line}");
    if verbose && !outcome.status.is_failure() {
        print_output(out, outcome);
    }
}

fn print_output(out: &mut impl Write, outcome: &TestOutcome) {
    for (name, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        if !text.is_empty() {
            let _ = writeln!(
                out,
                "--- {name} of {} {} ---\n{}",
                outcome.binary.id,
                outcome.name,
                text.trim_end()
            );
        }
    }
}

fn print_summary(
    out: &mut impl Write,
    summary: &Summary,
    outcomes: &[TestOutcome],
    settings: &ReportSettings<'_>,
    elapsed: Duration,
) {
    let failures: Vec<&TestOutcome> = outcomes
        .iter()
        .filter(|outcome| outcome.status.is_failure())
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\n{}", styled(BOLD_RED, "failures:"));
    }
    for outcome in &failures {
        let (label, style) = label(&outcome.status);
        let _ = writeln!(
            out,
            "\n{} {} {}: {}",
            styled(style, label),
            outcome.binary.id,
            outcome.name,
            first_line(&outcome.message)
        );
        for line in outcome.message.lines().skip(1) {
            let _ = writeln!(out, "    {line}");
        }
        print_output(out, outcome);
        if let Some(command) = rerun_command(settings.rerun, &outcome.binary, &outcome.name) {
            let _ = writeln!(out, "    rerun: {command}");
        }
    }
    let mut parts = vec![format!("{} passed", summary.passed)];
    for (count, name) in [
        (summary.failed, "failed"),
        (summary.crashed, "crashed"),
        (summary.timed_out, "timed out"),
        (summary.exited_early, "exited early"),
        (summary.broken, "could not run"),
        (summary.interrupted, "stopped"),
        (summary.not_run, "not run"),
        (summary.flaky, "flaky"),
        (summary.leaked, "left processes behind"),
        (summary.ignored, "ignored"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {name}"));
        }
    }
    let style = if summary.has_failures() {
        BOLD_RED
    } else {
        BOLD_GREEN
    };
    let _ = writeln!(
        out,
        "\n{} [{:>8.3}s] {} run: {}",
        styled(style, "     Summary"),
        elapsed.as_secs_f64(),
        counted(summary.run(), "test", "tests"),
        parts.join(", ")
    );
    for outcome in outcomes.iter().filter(|outcome| outcome.flaky) {
        let label = format!("FLAKY {}/{}", outcome.attempts, outcome.max_attempts);
        let _ = writeln!(
            out,
            "{} [{:>8.3}s] {} {}",
            styled(BOLD_YELLOW, &format!("{label:>12}")),
            outcome.duration.as_secs_f64(),
            outcome.binary.id,
            outcome.name
        );
    }
}

/// The command that runs the test `name` of `binary` again, alone, with
/// what [`Rerun`] repeats of the run, quoted for a POSIX shell. `None` for
/// a name that no shell can take: one with a NUL byte.
fn rerun_command(rerun: &Rerun, binary: &TestBinary, name: &str) -> Option<String> {
    let mut words = vec!["cargo", "isolate", "test"];
    words.extend(rerun.options.iter().map(String::as_str));
    let by_id = format!("binary_id(={})", binary.id);
    if rerun.from_archive {
        words.extend(["-E", &by_id]);
    } else {
        words.extend(["-p", &binary.package]);
        // The selector is a flag and, but for `--lib`, the target's name.
        match binary.selector.split_once(' ') {
            Some((flag, target)) => words.extend([flag, target]),
            None => words.push(&binary.selector),
        }
    }
    words.extend(["--", "--exact", name]);
    words.extend(rerun.harness_args.iter().map(String::as_str));
    shlex::try_join(words).ok()
}

fn status_name(status: &Status) -> &'static str {
    match status {
        Status::Passed => "passed",
        Status::Failed => "failed",
        Status::Crashed { .. } => "crashed",
        Status::TimedOut { .. } => "timed-out",
        Status::ExitedEarly { .. } => "exited-early",
        Status::Ignored => "ignored",
        Status::Broken => "broken",
        Status::Interrupted => "interrupted",
        Status::NotRun => "not-run",
    }
}

/// Writes `event` as libtest's JSON events say it (`--format json` of a
/// libtest binary): the suite's start, and each test's start and end as it
/// ends. libtest has no words for slow tests, retries or what tests left
/// behind; a test that did not run is not told. A test is named
/// `BINARY$NAME`, as nextest names it in this format, so that the names
/// of a run over many binaries stay apart.
fn write_libtest_event(out: &mut impl Write, event: &Event) {
    match event {
        Event::Started { tests, .. } => {
            let _ = writeln!(
                out,
                "{}",
                json!({"type": "suite", "event": "started", "test_count": tests})
            );
        }
        Event::Finished(outcome) if outcome.status != Status::NotRun => {
            let name = format!("{}${}", outcome.binary.id, outcome.name);
            let _ = writeln!(
                out,
                "{}",
                json!({"type": "test", "event": "started", "name": name})
            );
            let mut value = json!({
                "type": "test",
                "name": name,
                "event": match outcome.status {
                    Status::Passed => "ok",
                    Status::Ignored => "ignored",
                    _ => "failed",
                },
            });
            if outcome.status != Status::Ignored {
                value["exec_time"] = json!(outcome.duration.as_secs_f64());
            }
            if outcome.status.is_failure() {
                // libtest gives a failure's captured output, in `stdout`.
                let told: Vec<&str> = [&outcome.stdout, &outcome.stderr, &outcome.message]
                    .into_iter()
                    .map(|text| text.trim_end_matches('\n'))
                    .filter(|text| !text.is_empty())
                    .collect();
                value["stdout"] = json!(told.join("\n"));
                value["message"] = json!(outcome.message);
            }
            let _ = writeln!(out, "{value}");
        }
        Event::Finished(_) | Event::Retried(_) | Event::Swept(_) | Event::Slow { .. } => {}
    }
}

fn outcome_json(outcome: &TestOutcome) -> serde_json::Value {
    let mut value = json!({
        "version": JSON_VERSION,
        "event": "test-finished",
        "binary": outcome.binary.id,
        "name": outcome.name,
        "status": status_name(&outcome.status),
        "message": outcome.message,
        "duration_ms": outcome.duration.as_secs_f64() * 1000.0,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "leaked": outcome.leaked,
        "attempts": outcome.attempts,
        "flaky": outcome.flaky,
    });
    match &outcome.status {
        Status::Crashed {
            signal,
            core_dumped,
        } => {
            value["signal"] = json!(signal.number());
            value["signal_name"] = json!(signal.name());
            value["core_dumped"] = json!(core_dumped);
        }
        Status::ExitedEarly { code } => value["exit_code"] = json!(code),
        Status::TimedOut { after } => {
            value["timeout_ms"] = json!(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        }
        _ => {}
    }
    value
}

/// Why the JUnit report cannot be written where `--junit` asks.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JunitPathError {
    /// Its directory is missing and cannot be made.
    #[error("failed to create {}, the directory of the JUnit report", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file cannot be opened for writing in its directory.
    #[error("failed to open the JUnit report {} for writing in the directory {}", path.display(), dir.display())]
    File {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `cargo isolate list --message-format json`: one object, with the
/// binaries and, in each, the `selected` tests (as the selection gives
/// them: by binary, in order).
pub(crate) fn listing_json(binaries: &[BinaryTests], selected: &[(usize, &ListedTest)]) -> String {
    let listed: Vec<serde_json::Value> = binaries
        .iter()
        .enumerate()
        .map(|(index, listed)| {
            let binary = &listed.binary;
            let tests: Vec<serde_json::Value> = selected
                .iter()
                .filter(|(of, _)| *of == index)
                .map(|(_, test)| json!({"name": test.name, "ignored": test.ignored}))
                .collect();
            json!({
                "id": binary.id,
                "package": binary.package,
                "target": binary.target,
                "kind": binary.kind.as_str(),
                "path": binary.path,
                "harness": match listed.runner {
                    Runner::Libtest => "libtest",
                    Runner::IsolateHarness => "isolate-harness",
                },
                "tests": tests,
            })
        })
        .collect();
    json!({
        "version": JSON_VERSION,
        "tests": selected.len(),
        "binaries": listed,
    })
    .to_string()
}

/// Makes sure that the JUnit report can be written to `path`, before the
/// build, so that a bad path costs nothing and not a whole run's report.
///
/// Missing directories on the way are created, as nextest creates the
/// directory of its JUnit report: a CI job names `reports/junit.xml`
/// without a step to make `reports/` first. The report is written to a
/// file beside `path` and renamed onto it (see [`write_junit`]), so that
/// is what is tried, with a file that is removed again; an existing report
/// is left as it is until the run ends and replaces it.
///
/// # Errors
///
/// When a directory cannot be created or the file cannot be written
/// (a directory in its place, no permission, a read-only file system).
pub(crate) fn prepare_junit(path: &Path) -> Result<(), JunitPathError> {
    let dir = junit_dir(path);
    std::fs::create_dir_all(dir).map_err(|source| JunitPathError::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let file_error = |source| JunitPathError::File {
        path: path.to_owned(),
        dir: dir.to_owned(),
        source,
    };
    if path.is_dir() {
        return Err(file_error(io::Error::new(
            io::ErrorKind::IsADirectory,
            "a directory is in its place",
        )));
    }
    junit_scratch(dir).map(drop).map_err(file_error)
}

/// The directory of the JUnit report at `path`.
fn junit_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A new file in `dir` for the JUnit report to be written to before it is
/// renamed into place, with the permissions a new report would get.
fn junit_scratch(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".junit-")
        .suffix(".xml.partial")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// The JUnit report: one test suite per binary. A crash's `<failure>` has
/// the signal's name as its type, timeouts and early exits have types of
/// their own, a test that did not run is skipped, and captured output goes
/// to `system-out` and `system-err`. The failed attempts of a test that
/// ran again (`attempts`, by binary and name) are its `flakyFailure`s when
/// it passed in the end, its `rerunFailure`s when it did not.
///
/// It is written to a file beside `path`, then renamed onto it: a runner
/// killed while it writes (a second Ctrl-C) leaves no half a report at
/// `path` (only, beside it, the file it was writing).
fn write_junit(
    junit: &Junit<'_>,
    outcomes: &[TestOutcome],
    attempts: &HashMap<(String, String), Vec<TestOutcome>>,
    elapsed: Duration,
) -> std::io::Result<()> {
    let path = junit.path;
    let mut report = Report::new(junit.report_name);
    report.set_time(elapsed);
    let mut suites: Vec<TestSuite> = Vec::new();
    for outcome in outcomes {
        let index = match suites
            .iter()
            .position(|suite| suite.name.as_str() == outcome.binary.id)
        {
            Some(index) => index,
            None => {
                suites.push(TestSuite::new(outcome.binary.id.clone()));
                suites.len() - 1
            }
        };
        let mut status = match &outcome.status {
            Status::Passed => TestCaseStatus::success(),
            Status::Ignored => TestCaseStatus::skipped(),
            Status::NotRun => {
                let mut skipped = TestCaseStatus::skipped();
                skipped.set_message(outcome.message.clone());
                skipped
            }
            status => {
                let (kind, failure_type) = junit_failure(status);
                let mut failure = TestCaseStatus::non_success(kind);
                failure.set_type(failure_type);
                failure.set_message(first_line(&outcome.message));
                failure.set_description(outcome.message.clone());
                failure
            }
        };
        let earlier = attempts
            .get(&(outcome.binary.id.clone(), outcome.name.clone()))
            .map_or(&[][..], Vec::as_slice);
        status.add_reruns(earlier.iter().map(|attempt| {
            let (kind, failure_type) = junit_failure(&attempt.status);
            let mut rerun = TestRerun::new(kind);
            rerun
                .set_type(failure_type)
                .set_message(first_line(&attempt.message))
                .set_description(attempt.message.clone())
                .set_time(attempt.duration);
            if junit.failure_output {
                if !attempt.stdout.is_empty() {
                    rerun.set_system_out(attempt.stdout.clone());
                }
                if !attempt.stderr.is_empty() {
                    rerun.set_system_err(attempt.stderr.clone());
                }
            }
            rerun
        }));
        let mut case = TestCase::new(outcome.name.clone(), status);
        case.set_classname(outcome.binary.id.clone());
        case.set_time(outcome.duration);
        let keep = if outcome.status.is_failure() {
            junit.failure_output
        } else {
            junit.success_output
        };
        if keep {
            if !outcome.stdout.is_empty() {
                case.set_system_out(outcome.stdout.clone());
            }
            if !outcome.stderr.is_empty() {
                case.set_system_err(outcome.stderr.clone());
            }
        }
        suites[index].add_test_case(case);
    }
    report.add_test_suites(suites);
    let mut file = io::BufWriter::new(junit_scratch(junit_dir(path))?);
    report.serialize(&mut file).map_err(io::Error::other)?;
    let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.persist(path).map(drop).map_err(|error| error.error)
}

/// The kind and type of a JUnit `<failure>` or `<error>` for a test that
/// ended as `status`: the machinery's failures and interruptions are
/// errors, the rest the test's failures.
fn junit_failure(status: &Status) -> (NonSuccessKind, String) {
    let kind = if matches!(status, Status::Broken | Status::Interrupted) {
        NonSuccessKind::Error
    } else {
        NonSuccessKind::Failure
    };
    let failure_type = match status {
        Status::Crashed { signal, .. } => signal.name(),
        Status::TimedOut { .. } => "timeout".to_owned(),
        Status::ExitedEarly { .. } => "exit".to_owned(),
        Status::Broken => "broken".to_owned(),
        Status::Interrupted => "interrupted".to_owned(),
        _ => "test failure".to_owned(),
    };
    (kind, failure_type)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(selector: &str) -> TestBinary {
        TestBinary {
            id: "pkg::target".to_owned(),
            package: "pkg".to_owned(),
            target: "target".to_owned(),
            kind: crate::build::BinaryKind::Test,
            selector: selector.to_owned(),
            path: PathBuf::from("/nonexistent"),
            launch: Default::default(),
        }
    }

    /// The words a POSIX shell makes of `line`.
    fn shell_words(line: &str) -> Vec<String> {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {line}"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{line}: {output:?}");
        let mut words: Vec<String> = output
            .stdout
            .split(|byte| *byte == 0)
            .map(|word| String::from_utf8(word.to_vec()).unwrap())
            .collect();
        assert_eq!(words.pop().as_deref(), Some(""));
        words
    }

    #[test]
    fn rerun_commands_run_as_printed_in_a_shell() {
        let rerun = Rerun {
            options: [
                "--manifest-path",
                "/tmp/it's a \"dir\" $HOME/Cargo.toml",
                "--timeout",
                "90s",
                "--isolation",
                "batch",
            ]
            .map(str::to_owned)
            .to_vec(),
            harness_args: vec!["--include-ignored".to_owned()],
            from_archive: false,
        };
        for name in [
            "tests::plain",
            "with spaces",
            "it's a \"quoted\" name",
            "costs $5 or ${HOME} or $(date) or `date`",
            "back\\slash",
            "new\nline and\ttab",
            "*?[glob]",
            "~tilde",
            "#hash",
            "{brace,expansion}",
            "a;b|c&d>e<f",
            "",
            "π ü",
        ] {
            let line = rerun_command(&rerun, &binary("--test target"), name).unwrap();
            let mut expected = vec!["cargo", "isolate", "test"];
            expected.extend(rerun.options.iter().map(String::as_str));
            expected.extend(["-p", "pkg", "--test", "target", "--", "--exact", name]);
            expected.push("--include-ignored");
            assert_eq!(shell_words(&line), expected, "{line}");
            assert_eq!(shlex::split(&line).unwrap(), expected, "{line}");
        }
    }

    #[test]
    fn a_plain_rerun_command_reads_as_typed() {
        let line = rerun_command(&Rerun::default(), &binary("--lib"), "tests::adds").unwrap();
        assert_eq!(
            line,
            "cargo isolate test -p pkg --lib -- --exact tests::adds"
        );
        assert_eq!(
            rerun_command(&Rerun::default(), &binary("--lib"), "nul\0name"),
            None
        );
    }

    #[test]
    fn a_rerun_from_an_archive_names_the_binary_by_a_filterset() {
        let rerun = Rerun {
            options: ["--archive-file", "tests.tar.zst"]
                .map(str::to_owned)
                .to_vec(),
            from_archive: true,
            ..Rerun::default()
        };
        let line = rerun_command(&rerun, &binary("--test target"), "adds").unwrap();
        assert_eq!(
            line,
            "cargo isolate test --archive-file tests.tar.zst -E 'binary_id(=pkg::target)' -- --exact adds"
        );
    }

    #[test]
    fn a_junit_path_is_prepared_before_the_run() {
        let dir = tempfile::tempdir().unwrap();
        // Missing directories are made; no file is left behind.
        let nested = dir.path().join("a/b/junit.xml");
        prepare_junit(&nested).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert!(!nested.exists());
        // An existing report is left as it is.
        std::fs::write(&nested, "old").unwrap();
        prepare_junit(&nested).unwrap();
        assert_eq!(std::fs::read_to_string(&nested).unwrap(), "old");
        // A file where a directory should be.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let error = prepare_junit(&file.join("junit.xml")).unwrap_err();
        assert!(
            matches!(&error, JunitPathError::Directory { dir, .. } if *dir == file),
            "{error:?}"
        );
        assert!(error.to_string().contains(&file.display().to_string()));
        // A directory where the file should be.
        let error = prepare_junit(dir.path()).unwrap_err();
        assert!(matches!(error, JunitPathError::File { .. }), "{error:?}");
    }
}
