//! Running the tests: every test in a process of its own, with a global
//! limit on how many run at once.
//!
//! - A libtest binary runs once per test, as `BIN --exact NAME
//!   --test-threads 1 --logfile FILE`, in a process group of its own. Its
//!   verdict comes from libtest's log file, which is open before the test
//!   runs, so a test that closes its stdout still gets one; a test that
//!   exits (even with code 0) before libtest logged a result fails.
//!   Output goes to files, not pipes, so nothing blocks on it.
//! - With `--isolation batch`, a libtest binary runs many tests per
//!   process, one after another. The log says which finished; if the
//!   process dies, the test libtest announced last gets the crash, and the
//!   rest run on in a fresh process. The timeout restarts with each logged
//!   test. Output is split between the tests by libtest's `test NAME ... `
//!   lines; processes left behind are charged to the batch's last test.
//! - An isolate-harness binary runs once, with all the run's threads: its
//!   fork server isolates each test, and its report stream (a pipe on its
//!   descriptor 3, named by `ISOLATE_REPORT_FD`) says how each ended.
//!
//! Timeouts are kept by one watchdog thread. A worker waits for its test's
//! process without reaping it (`WNOWAIT`), so the watchdog never signals a
//! process group whose leader may have been reaped; then it kills what the
//! test left in its group and reaps it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use isolate_harness::Signal;
use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::build::TestBinary;
use crate::guard::Guard;
use crate::list::{BinaryTests, Runner, Selection};

/// Bytes of each output stream kept from its start, and from its end.
const KEPT_OUTPUT: u64 = 16 * 1024;

/// Time between SIGTERM and SIGKILL for a test that ran out of time.
const GRACE_PERIOD: Duration = Duration::from_secs(1);

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
    /// The run was interrupted (Ctrl-C) while it ran, or before.
    Interrupted,
}

impl Status {
    pub(crate) fn is_failure(&self) -> bool {
        !matches!(self, Status::Passed | Status::Ignored)
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
    /// The run starts: this many tests, across this many binaries.
    Started {
        tests: usize,
        binaries: usize,
    },
    Finished(Box<TestOutcome>),
}

/// Options of the run.
pub(crate) struct RunPlan {
    pub(crate) threads: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) fail_fast: bool,
    pub(crate) retries: u32,
    /// Tests write to the terminal instead of being captured.
    pub(crate) nocapture: bool,
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

/// Stops a run from another thread: the first [`Interrupt::stop`] ends the
/// running tests' process groups with SIGTERM and starts no more tests;
/// [`Interrupt::kill`] sends SIGKILL.
#[derive(Default)]
pub(crate) struct Interrupt {
    stopped: AtomicBool,
    watchdog: Mutex<Option<Arc<WatchdogShared>>>,
}

impl Interrupt {
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(watchdog) = &*lock(&self.watchdog) {
            watchdog.signal_all(NixSignal::SIGTERM);
        }
    }

    pub(crate) fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(watchdog) = &*lock(&self.watchdog) {
            watchdog.signal_all(NixSignal::SIGKILL);
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Runs the selected tests of `binaries`, sending an event per test.
pub(crate) fn run(
    binaries: &[BinaryTests],
    selection: &Selection,
    plan: &RunPlan,
    events: &Sender<Event>,
    interrupt: &Interrupt,
) {
    let selected = selection.select(binaries);
    let mut with_tests: Vec<usize> = selected.iter().map(|(binary, _)| *binary).collect();
    with_tests.dedup();
    let _ = events.send(Event::Started {
        tests: selected.len(),
        binaries: with_tests.len(),
    });
    // Processes a test leaves behind become our children when it exits,
    // where they are found, killed and reaped.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let watchdog = Watchdog::start();
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
            .map(|(binary, name)| Unit::Test {
                binary,
                name,
                attempts: 0,
            })
            .collect(),
        Isolation::Batch => batches(plain, plan.threads),
    };
    let stop = |outcome: &TestOutcome| {
        if plan.fail_fast && outcome.status.is_failure() {
            interrupt.stopped.store(true, Ordering::SeqCst);
        }
    };
    // A harness binary runs with every thread, one after another, before
    // the per-test work.
    for (index, names) in harnessed {
        if interrupt.is_stopped() {
            break;
        }
        run_harness(&binaries[index], &names, plan, &watchdog, events, &stop);
    }
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..plan.threads.max(1) {
            scope.spawn(|| {
                while !interrupt.is_stopped() {
                    let Some(unit) = lock(&queue).pop_front() else {
                        return;
                    };
                    let finished = match unit {
                        Unit::Test {
                            binary,
                            name,
                            attempts,
                        } => {
                            let mut outcome =
                                run_libtest(&binaries[binary].binary, &name, plan, &watchdog);
                            outcome.attempts = attempts + 1;
                            outcome.flaky = attempts > 0 && !outcome.status.is_failure();
                            vec![(binary, outcome)]
                        }
                        Unit::Batch { binary, names } => {
                            let (outcomes, rest) =
                                run_batch(&binaries[binary].binary, &names, plan, &watchdog);
                            if !rest.is_empty() {
                                // The batch's process died: the rest go on in a fresh one.
                                lock(&queue).push_front(Unit::Batch {
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
                        if outcome.status.is_failure()
                            && outcome.attempts <= plan.retries
                            && !interrupt.is_stopped()
                        {
                            // Retried in a process of its own.
                            lock(&queue).push_back(Unit::Test {
                                binary,
                                name: outcome.name.clone(),
                                attempts: outcome.attempts,
                            });
                            continue;
                        }
                        stop(&outcome);
                        let _ = events.send(Event::Finished(Box::new(outcome)));
                    }
                }
            });
        }
    });
    watchdog.stop();
}

/// A piece of work for one worker.
enum Unit {
    /// One test in a process of its own; `attempts` it ran before.
    Test {
        binary: usize,
        name: String,
        attempts: u32,
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

/// Where logs and captured output go: memory (`/dev/shm`) where there is
/// one, as three files per test on a disk cost more than the test.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        }
    })
}

/// The environment cargo gives a test, so tests that read it work here.
fn test_command(binary: &TestBinary) -> Command {
    let mut command = Command::new(&binary.path);
    command
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .env("CARGO_PKG_NAME", &binary.package)
        .env("CARGO_CRATE_NAME", binary.target.replace('-', "_"))
        .stdin(Stdio::null())
        .process_group(0);
    command
}

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
fn run_libtest(
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
            format!("could not run the test: {error}"),
        )
    });
    outcome.duration = started.elapsed();
    outcome
}

fn run_libtest_process(
    binary: &TestBinary,
    name: &str,
    plan: &RunPlan,
    watchdog: &Watchdog,
) -> io::Result<TestOutcome> {
    let logfile = tempfile::NamedTempFile::new_in(scratch_dir())?;
    // Output goes to files, read once the test is over; with --nocapture,
    // to the terminal.
    let captured = if plan.nocapture {
        None
    } else {
        Some((
            tempfile::tempfile_in(scratch_dir())?,
            tempfile::tempfile_in(scratch_dir())?,
        ))
    };
    let mut command = libtest_command(binary, [name], logfile.path());
    match &captured {
        Some((stdout, stderr)) => command
            .stdout(stdout.try_clone()?)
            .stderr(stderr.try_clone()?),
        None => command.stdout(Stdio::inherit()).stderr(Stdio::inherit()),
    };
    let mut child = command.spawn()?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    watchdog.watch(pid, plan.timeout);
    wait_unreaped(pid)?;
    let Ended {
        status,
        fired,
        leaked,
    } = reap(&mut child, pid, watchdog)?;
    let log = std::fs::read_to_string(logfile.path()).unwrap_or_default();
    let (status, mut message) = libtest_verdict(&log, name, status, fired, plan.timeout);
    let (stdout, stderr) = captured
        .map(|(stdout, stderr)| {
            (
                without_libtest_lines(&read_kept(stdout), name),
                without_libtest_lines(&read_kept(stderr), name),
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
fn run_batch(
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
                        format!("could not run the batch: {error}"),
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
) -> io::Result<(Vec<TestOutcome>, Vec<String>)> {
    let started = Instant::now();
    let logfile = tempfile::NamedTempFile::new_in(scratch_dir())?;
    let (stdout, stderr) = (
        tempfile::tempfile_in(scratch_dir())?,
        tempfile::tempfile_in(scratch_dir())?,
    );
    let mut child = libtest_command(binary, names, logfile.path())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
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
            Err(error) => return Err(error.into()),
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
    } = reap(&mut child, pid, watchdog)?;
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(logfile.path()).unwrap_or_default();
    let stdout = read_prefix(stdout, BATCH_OUTPUT);
    let stderr = read_prefix(stderr, BATCH_OUTPUT);
    let segments = split_by_test(&stdout, names);
    let mut outcomes = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for line in log.lines() {
        let Some((verdict, name)) = line.split_once(' ') else {
            continue;
        };
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

/// How a libtest test ended, from libtest's log and its process's status.
fn libtest_verdict(
    log: &str,
    name: &str,
    status: ExitStatus,
    fired: Fired,
    timeout: Option<Duration>,
) -> (Status, String) {
    let logged = log.lines().find_map(|line| {
        line.split_once(' ')
            .filter(|(_, test)| *test == name)
            .map(|(verdict, _)| verdict)
    });
    if fired == Fired::Interrupted {
        return (
            Status::Interrupted,
            "stopped by an interruption of the run".to_owned(),
        );
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

/// The processes left in process group `pgid` besides its leader. This
/// runner is a subreaper, so when a test's process exits, whatever it left
/// running becomes a child of ours: they are found in our children lists.
fn leftovers(pgid: Pid) -> Vec<Pid> {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|pid| *pid != pgid.as_raw())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    stat.rfind(')').and_then(|close| {
                        stat[close + 1..]
                            .split_whitespace()
                            .nth(2)?
                            .parse::<i32>()
                            .ok()
                    }) == Some(pgid.as_raw())
                })
        })
        .map(Pid::from_raw)
        .collect()
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

/// The head and tail of a captured stream, as text.
fn read_kept(mut file: File) -> String {
    let size = file.metadata().map_or(0, |metadata| metadata.len());
    let mut read = |offset: u64, len: u64| {
        let mut bytes = Vec::new();
        if file.seek(io::SeekFrom::Start(offset)).is_ok() {
            let _ = (&mut file).take(len).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    if size <= 2 * KEPT_OUTPUT {
        return read(0, size);
    }
    let head = read(0, KEPT_OUTPUT);
    let tail = read(size - KEPT_OUTPUT, KEPT_OUTPUT);
    format!(
        "{head}\n[... {} bytes omitted ...]\n{tail}",
        size - 2 * KEPT_OUTPUT
    )
}

/// Runs an isolate-harness binary for `tests`, reading its report stream,
/// and again for the tests that failed, as `--retries` allows.
fn run_harness(
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
        .env("ISOLATE_REPORT_FD", "3");
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
    for line in BufReader::with_capacity(PIPE_CAPACITY, Batched(reader)).lines() {
        let line = line?;
        match serde_json::from_str::<ReportEvent<'_>>(&line) {
            Ok(ReportEvent::Finished(finished)) => {
                on_outcome(harness_outcome(&binary.binary, finished));
            }
            // A start, or a line of a later version of the stream.
            Ok(ReportEvent::Started) | Err(_) => {}
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

/// How a test's process ended, reaped with what it left behind.
struct Ended {
    status: ExitStatus,
    fired: Fired,
    /// Processes left in its group, killed and reaped.
    leaked: usize,
}

/// Takes `child`, which has exited but is not reaped (so its group id is
/// still ours), off the watchdog; kills and reaps what it left in its
/// group; then reaps it.
fn reap(child: &mut std::process::Child, pid: Pid, watchdog: &Watchdog) -> io::Result<Ended> {
    let fired = watchdog.forget(pid);
    let leftovers = leftovers(pid);
    let _ = killpg(pid, NixSignal::SIGKILL);
    let status = child.wait()?;
    for leftover in &leftovers {
        let _ = nix::sys::wait::waitpid(*leftover, None);
    }
    Ok(Ended {
        status,
        fired,
        leaked: leftovers.len(),
    })
}

/// Waits for `pid` to exit without reaping it: its group id stays ours
/// until the leader is reaped, so nothing signalled meanwhile can reach a
/// stranger.
fn wait_unreaped(pid: Pid) -> io::Result<()> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => {}
            result => return result.map(drop).map_err(io::Error::from),
        }
    }
}

/// An event of a harness's report stream, as far as the runner reads it.
/// (The format is documented in `isolate_harness`'s crate docs.) Strings
/// are borrowed from the line where they have no escapes.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum ReportEvent<'a> {
    Started,
    Finished(#[serde(borrow)] FinishedEvent<'a>),
}

#[derive(Deserialize)]
struct FinishedEvent<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    passed: bool,
    outcome: ReportedOutcome,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    duration_ms: f64,
    #[serde(borrow, default)]
    stdout: Cow<'a, str>,
    #[serde(borrow, default)]
    stderr: Cow<'a, str>,
    #[serde(default)]
    leftovers: Vec<IgnoredAny>,
}

/// How a test ended, by `kind`; the fields the runner reports.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ReportedOutcome {
    Signaled {
        signal: i32,
        #[serde(default)]
        core_dumped: bool,
    },
    OutOfMemory,
    Exited {
        code: i32,
    },
    TimedOut {
        limit_ms: u64,
    },
    Broken,
    /// `returned`, `panicked`, `ignored`, and kinds of later versions.
    #[serde(other)]
    Other,
}

fn harness_outcome(binary: &TestBinary, event: FinishedEvent<'_>) -> TestOutcome {
    let status = if event.passed {
        Status::Passed
    } else {
        match event.outcome {
            ReportedOutcome::Signaled {
                signal,
                core_dumped,
            } => Status::Crashed {
                signal: Signal(signal),
                core_dumped,
            },
            ReportedOutcome::OutOfMemory => Status::Crashed {
                signal: Signal(libc_sigabrt()),
                core_dumped: false,
            },
            ReportedOutcome::Exited { code } => Status::ExitedEarly { code },
            ReportedOutcome::TimedOut { limit_ms } => Status::TimedOut {
                after: Duration::from_millis(limit_ms),
            },
            ReportedOutcome::Broken => Status::Broken,
            ReportedOutcome::Other => Status::Failed,
        }
    };
    TestOutcome {
        binary: binary.clone(),
        name: event.name.into_owned(),
        status,
        message: event.message.map(Cow::into_owned).unwrap_or_default(),
        duration: Duration::from_secs_f64(event.duration_ms / 1000.0),
        stdout: event.stdout.into_owned(),
        stderr: event.stderr.into_owned(),
        leaked: event.leftovers.len(),
        attempts: 1,
        flaky: false,
    }
}

fn libc_sigabrt() -> i32 {
    NixSignal::SIGABRT as i32
}

/// Whether the watchdog signalled a process group, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fired {
    No,
    TimedOut,
    Interrupted,
}

/// The running tests' process groups, and their timeouts, kept by one
/// thread.
struct Watchdog {
    shared: Arc<WatchdogShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Kills the watched groups if this runner dies.
    guard: Option<Guard>,
}

pub(crate) struct WatchdogShared {
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
    fn signal_all(&self, signal: NixSignal) {
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
    fn start() -> Watchdog {
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
        Watchdog {
            shared,
            thread: Some(thread),
            // Without a guard, a run killed outright may leave its tests.
            guard: Guard::start().ok(),
        }
    }

    /// Starts watching the group of `pid`, with a timeout if given.
    fn watch(&self, pid: Pid, timeout: Option<Duration>) {
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
    fn rearm(&self, pid: Pid, timeout: Duration) {
        if let Some(watch) = lock(&self.shared.state).watched.get_mut(&pid)
            && watch.fired == Fired::No
        {
            watch.at = Some(Instant::now() + timeout);
        }
    }

    /// Stops watching `pid`, before it is reaped; says whether and why it
    /// was signalled.
    fn forget(&self, pid: Pid) -> Fired {
        if let Some(guard) = &self.guard {
            guard.release(pid);
        }
        lock(&self.shared.state)
            .watched
            .remove(&pid)
            .map_or(Fired::No, |watch| watch.fired)
    }

    fn stop(mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    fn batches_give_every_thread_work() {
        let tests = (0..5)
            .map(|n| (0, n.to_string()))
            .chain([(1, "x".to_owned())])
            .collect();
        let sizes: Vec<(usize, usize)> = batches(tests, 2)
            .into_iter()
            .map(|unit| match unit {
                Unit::Batch { binary, names } => (binary, names.len()),
                Unit::Test { .. } => panic!("a batch was expected"),
            })
            .collect();
        assert_eq!(sizes, [(0, 3), (0, 2), (1, 1)]);
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
        match serde_json::from_str::<ReportEvent<'_>>(line).expect("a report event") {
            ReportEvent::Finished(finished) => harness_outcome(&binary, finished),
            ReportEvent::Started => panic!("not a finished event: {line}"),
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
                r#"{{"event":"finished","name":"t","passed":false,"outcome":{outcome},"message":"m"}}"#
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
        assert!(matches!(
            serde_json::from_str::<ReportEvent<'_>>(
                r#"{"version":1,"event":"started","name":"t"}"#
            ),
            Ok(ReportEvent::Started)
        ));
    }
}
