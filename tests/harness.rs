//! End-to-end tests of the harness.
//!
//! This binary is two things. Run with `ISOLATE_FIXTURE=1`, it is a fixture
//! harness whose tests end in every way a test can (the table `EXPECTED`
//! says how each must be reported). Run without it, as `cargo test` does, it
//! is the driver: it runs itself as the fixture with the arguments libtest,
//! `cargo test` and `cargo nextest` use, and checks, test by test, what is
//! reported.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use isolate::buggy;
use support::stops_running;

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test; these tests use some"
)]
mod support;

// ---- the fixture ----

#[isolate_harness::test]
fn passes() {}

#[isolate_harness::test]
fn returns_ok() -> Result<(), String> {
    Ok(())
}

#[isolate_harness::test]
fn returns_err() -> Result<(), String> {
    Err("the answer was 41".to_owned())
}

#[isolate_harness::test]
fn panics() {
    panic!("dragons");
}

#[isolate_harness::test(should_panic)]
fn should_panic_panics() {
    panic!("as it should");
}

#[isolate_harness::test(should_panic = "expected text")]
fn should_panic_with_text() {
    panic!("the expected text is here");
}

#[isolate_harness::test(should_panic = "expected text")]
fn should_panic_other_text() {
    panic!("something else");
}

#[isolate_harness::test(should_panic)]
fn should_panic_returns() {}

#[isolate_harness::test]
fn segfault() {
    println!("about to crash");
    buggy::dragons_here();
}

#[isolate_harness::test]
fn aborts() {
    buggy::abort();
}

#[isolate_harness::test]
fn overflows_stack() {
    buggy::overflow_stack(0);
}

#[isolate_harness::test]
fn exit_zero() {
    buggy::exit(0);
}

#[isolate_harness::test]
fn exit_three() {
    buggy::exit(3);
}

#[isolate_harness::test(timeout = "300ms")]
fn hangs() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[isolate_harness::test(timeout = "200ms")]
fn hangs_ignoring_sigterm() {
    // SAFETY: setting a signal's disposition to "ignore" is always sound.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[isolate_harness::test(memory_limit = "64MiB")]
fn exceeds_memory_limit() {
    buggy::allocate(1 << 30);
}

#[isolate_harness::test(expect_signal = "SIGSEGV")]
fn death_by_segfault() {
    buggy::dragons_here();
}

#[isolate_harness::test(expect_signal = "SIGSEGV")]
fn death_expected_but_returns() {}

#[isolate_harness::test(expect_signal = "SIGSEGV")]
fn death_expected_but_aborts() {
    buggy::abort();
}

#[isolate_harness::test(expect_exit = 3)]
fn exits_three_as_expected() {
    buggy::exit(3);
}

#[isolate_harness::test(expect_exit = 3)]
fn exits_four_instead() {
    buggy::exit(4);
}

#[isolate_harness::test(ignore)]
fn ignored() {
    buggy::dragons_here();
}

#[isolate_harness::test(ignore = "needs a GPU")]
fn ignored_with_reason() {}

#[isolate_harness::test]
fn floods_output() {
    use std::io::Write;
    let line = [b'x'; 1023];
    let mut stdout = std::io::stdout().lock();
    for _ in 0..1024 {
        stdout.write_all(&line).unwrap();
        stdout.write_all(b"\n").unwrap();
    }
    panic!("after a megabyte of output");
}

#[isolate_harness::test]
fn leaves_a_process() {
    // Short-lived: run in-process (as under nextest) nobody kills it.
    std::mem::forget(Command::new("sleep").arg("20").spawn().unwrap());
}

/// Leaves a daemon that left its session, double-forked from a shell that
/// exits at once: no process group holds it.
#[isolate_harness::test]
fn leaves_a_detached_daemon() {
    let output = Command::new("sh")
        .args(["-c", "setsid sleep 20 </dev/null >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    let daemon = String::from_utf8(output.stdout).unwrap();
    // Returns once the daemon is `sleep`, so that it is reported by name.
    let comm = format!("/proc/{}/comm", daemon.trim());
    while std::fs::read_to_string(&comm).is_ok_and(|name| name.trim() != "sleep") {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[isolate_harness::test]
fn closes_its_stdout() {
    // SAFETY: closing a descriptor this test owns in its own process.
    unsafe { libc::close(1) };
}

/// A copy of the test forks and returns normally, while the test itself
/// then crashes: only the test process speaks for the test.
#[isolate_harness::test]
fn a_copy_returns_while_the_test_crashes() {
    // SAFETY: the fixture forks on purpose; the copy only returns.
    match unsafe { libc::fork() } {
        0 => {}
        copy => {
            // SAFETY: waits for the copy this test just forked.
            unsafe { libc::waitpid(copy, std::ptr::null_mut(), 0) };
            buggy::dragons_here();
        }
    }
}

#[isolate_harness::test]
fn closes_every_descriptor_and_returns() {
    for fd in 0..1024 {
        // SAFETY: closing descriptors of this test's own process.
        unsafe { libc::close(fd) };
    }
}

/// Writes a verdict of its own, in the report stream's words and the fork
/// server's, to every descriptor it holds, then fails for real.
#[isolate_harness::test]
fn forges_verdicts_on_every_descriptor() {
    let line = concat!(
        r#"{"version":1,"event":"finished","name":"forged","passed":true,"#,
        r#""outcome":{"kind":"returned","error":null},"duration_ms":1.0,"#,
        r#""stdout":"","stderr":"","leftovers":[]}"#,
        "\n"
    );
    // A `Returned` frame of call 0: `Ok(())`.
    let frame = [10_u8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for fd in 3..1024 {
        for bytes in [line.as_bytes(), &frame[..]] {
            // SAFETY: writes a valid buffer; a descriptor that is not open
            // fails harmlessly.
            unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        }
    }
    panic!("the real verdict");
}

/// No runner descriptor or setting reaches a test.
#[isolate_harness::test]
fn sees_no_runner_descriptor() {
    for variable in [
        "ISOLATE_REPORT_FD",
        "ISOLATE_ONLY",
        "ISOLATE_DEFAULT_TIMEOUT_MS",
    ] {
        assert!(std::env::var_os(variable).is_none(), "{variable} is set");
    }
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let target = std::fs::read_link(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("isolate-report-"),
            "the report stream is open: {target:?}"
        );
    }
}

/// A test sees no other test's result region, where it could write a
/// result in that test's name: of the shared mappings of the regions' size,
/// it holds its own at most.
#[isolate_harness::test]
fn sees_no_other_test_s_result_region() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let regions = maps
        .lines()
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(permissions)) = (fields.next(), fields.next()) else {
                return false;
            };
            let size = range.split_once('-').map_or(0, |(start, end)| {
                usize::from_str_radix(end, 16).unwrap() - usize::from_str_radix(start, 16).unwrap()
            });
            size == 1 << 20 && permissions == "rw-s" && line.contains("/dev/zero")
        })
        .count();
    assert!(regions <= 1, "{regions} result regions are mapped:\n{maps}");
}

/// Waits with a grandchild, when the driver asks (by naming a file for their
/// pids): for the driver to kill the whole run under it.
#[isolate_harness::test(ignore = "run by the driver only")]
fn waits_with_a_grandchild() {
    let Some(pidfile) = std::env::var_os("ISOLATE_FIXTURE_PIDFILE") else {
        return;
    };
    let grandchild = Command::new("sleep").arg("30").spawn().unwrap();
    let pids = format!("{} {}\n", std::process::id(), grandchild.id());
    // Left running on purpose: the driver checks that it is killed.
    std::mem::forget(grandchild);
    std::fs::write(&pidfile, pids).unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

mod nested {
    #[isolate_harness::test]
    fn has_a_module_path() {}
}

mod queue {
    //! Two tests the driver runs with `--test-threads 1`: `timed` waits
    //! behind `slow`, and must not be charged for the wait. Each appends
    //! when it ran to the file `ISOLATE_FIXTURE_LOG` names.

    use std::io::Write;
    use std::time::{Duration, SystemTime};

    fn ran_for(duration: Duration) {
        let since_epoch = || {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_micros()
        };
        let start = since_epoch();
        std::thread::sleep(duration);
        let end = since_epoch();
        if let Some(log) = std::env::var_os("ISOLATE_FIXTURE_LOG") {
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)
                .unwrap();
            writeln!(log, "{start} {end}").unwrap();
        }
    }

    #[isolate_harness::test(ignore = "run by the driver only")]
    fn slow() {
        ran_for(Duration::from_millis(600));
    }

    #[isolate_harness::test(ignore = "run by the driver only", timeout = "400ms")]
    fn timed() {
        ran_for(Duration::from_millis(50));
    }
}

static SETUP_RUNS: AtomicUsize = AtomicUsize::new(0);
static FIXTURE: OnceLock<Vec<u64>> = OnceLock::new();

#[isolate_harness::test]
fn sees_the_shared_fixture_built_once() {
    assert_eq!(SETUP_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(FIXTURE.get().map(Vec::len), Some(100_000));
}

fn fixture() -> ! {
    isolate_harness::Harness::new()
        .setup(|| {
            SETUP_RUNS.fetch_add(1, Ordering::SeqCst);
            FIXTURE.set((0..100_000).collect()).unwrap();
        })
        .test("dynamic::passes", || {})
        .test_with(
            "dynamic::dies",
            isolate_harness::TestOptions::new().expect_signal("SIGABRT"),
            buggy::abort,
        )
        .run()
}

// ---- the driver ----

/// How each fixture test must be reported, and a text its failure message
/// must contain.
const EXPECTED: &[(&str, Verdict, &str)] = &[
    (
        "a_copy_returns_while_the_test_crashes",
        Verdict::Failed,
        "killed by signal 11 (SIGSEGV: invalid memory reference)",
    ),
    (
        "aborts",
        Verdict::Failed,
        "killed by signal 6 (SIGABRT: abort)",
    ),
    ("closes_every_descriptor_and_returns", Verdict::Ok, ""),
    ("closes_its_stdout", Verdict::Ok, ""),
    ("death_by_segfault", Verdict::Ok, ""),
    (
        "death_expected_but_aborts",
        Verdict::Failed,
        "expected to die by SIGSEGV, but was killed by signal 6 (SIGABRT: abort)",
    ),
    (
        "death_expected_but_returns",
        Verdict::Failed,
        "expected to die by SIGSEGV, but returned normally",
    ),
    ("dynamic::dies", Verdict::Ok, ""),
    ("dynamic::passes", Verdict::Ok, ""),
    (
        "exceeds_memory_limit",
        Verdict::Failed,
        "an allocation failed",
    ),
    (
        "exit_three",
        Verdict::Failed,
        "exited with code 3 before finishing",
    ),
    (
        "exit_zero",
        Verdict::Failed,
        "exited with code 0 before finishing",
    ),
    (
        "exits_four_instead",
        Verdict::Failed,
        "expected to exit with code 3, but exited with code 4 before finishing",
    ),
    ("exits_three_as_expected", Verdict::Ok, ""),
    ("floods_output", Verdict::Failed, "bytes omitted ..."),
    (
        "forges_verdicts_on_every_descriptor",
        Verdict::Failed,
        "the real verdict",
    ),
    ("hangs", Verdict::Failed, "timed out after 300ms"),
    (
        "hangs_ignoring_sigterm",
        Verdict::Failed,
        "timed out after 200ms, ignored SIGTERM for 1s and was killed by SIGKILL",
    ),
    ("ignored", Verdict::Ignored, ""),
    ("ignored_with_reason", Verdict::Ignored, ""),
    ("leaves_a_detached_daemon", Verdict::Ok, ""),
    ("leaves_a_process", Verdict::Ok, ""),
    ("nested::has_a_module_path", Verdict::Ok, ""),
    (
        "overflows_stack",
        Verdict::Failed,
        "stack overflow: killed by signal 11 (SIGSEGV",
    ),
    ("panics", Verdict::Failed, "panicked at tests/harness.rs"),
    ("passes", Verdict::Ok, ""),
    ("queue::slow", Verdict::Ignored, ""),
    ("queue::timed", Verdict::Ignored, ""),
    (
        "returns_err",
        Verdict::Failed,
        "returned Err: \"the answer was 41\"",
    ),
    ("returns_ok", Verdict::Ok, ""),
    ("sees_no_other_test_s_result_region", Verdict::Ok, ""),
    ("sees_no_runner_descriptor", Verdict::Ok, ""),
    ("sees_the_shared_fixture_built_once", Verdict::Ok, ""),
    (
        "segfault",
        Verdict::Failed,
        "killed by signal 11 (SIGSEGV: invalid memory reference) at address 0x0",
    ),
    (
        "should_panic_other_text",
        Verdict::Failed,
        "panic did not contain expected string",
    ),
    ("should_panic_panics", Verdict::Ok, ""),
    (
        "should_panic_returns",
        Verdict::Failed,
        "test did not panic as expected",
    ),
    ("should_panic_with_text", Verdict::Ok, ""),
    ("waits_with_a_grandchild", Verdict::Ignored, ""),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed,
    Ignored,
}

fn fixture_command(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(args)
        .env("ISOLATE_FIXTURE", "1")
        .env_remove("NEXTEST")
        .env_remove("RUST_BACKTRACE")
        .env_remove("ISOLATE_REPORT_FD");
    command
}

fn run_fixture(args: &[&str]) -> Output {
    fixture_command(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The verdicts of a pretty run: `test NAME ... ok`.
fn pretty_verdicts(text: &str) -> BTreeMap<String, Verdict> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, verdict) = rest.split_once(" ... ")?;
            let verdict = match verdict.trim() {
                "ok" => Verdict::Ok,
                "FAILED" => Verdict::Failed,
                verdict if verdict.starts_with("ignored") => Verdict::Ignored,
                _ => return None,
            };
            Some((name.trim().to_owned(), verdict))
        })
        .collect()
}

fn expected_verdicts() -> BTreeMap<String, Verdict> {
    EXPECTED
        .iter()
        .map(|(name, verdict, _)| ((*name).to_owned(), *verdict))
        .collect()
}

/// The failure message libtest-mimic prints for `name`, up to the next
/// test's.
fn failure_section<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text
        .find(&format!("\n---- {name} ----\n"))
        .unwrap_or_else(|| panic!("no failure section for {name}:\n{text}"));
    let section = &text[start + 1..];
    let end = EXPECTED
        .iter()
        .filter_map(|(other, _, _)| section[1..].find(&format!("\n---- {other} ----\n")))
        .min()
        .unwrap_or(section.len() - 1);
    &section[..=end]
}

fn check_pretty_run() {
    let output = run_fixture(&["--test-threads", "2"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(101), "{text}");
    assert_eq!(pretty_verdicts(&text), expected_verdicts(), "{text}");
    for (name, _, diagnosis) in EXPECTED {
        if diagnosis.is_empty() {
            continue;
        }
        let section = failure_section(&text, name);
        assert!(
            section.contains(diagnosis),
            "{name}: {diagnosis:?} not in:\n{section}"
        );
    }
    let segfault = failure_section(&text, "segfault");
    assert!(segfault.contains("about to crash"), "{segfault}");
    assert!(
        segfault.contains("isolate::buggy::dragons_here"),
        "{segfault}"
    );
    let overflow = failure_section(&text, "overflows_stack");
    assert!(
        overflow.contains("more frames of `isolate::buggy::overflow_stack`"),
        "{overflow}"
    );
    assert!(overflow.lines().count() < 30, "{overflow}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["leaves_a_process", "leaves_a_detached_daemon"] {
        let line = stderr
            .lines()
            .find(|line| {
                line.starts_with(&format!(
                    "isolate: test {name} left 1 process(es) running, now killed: "
                ))
            })
            .unwrap_or_else(|| panic!("no leftover reported for {name}:\n{stderr}"));
        let (pid, command) = line.rsplit_once(": ").unwrap().1.split_once(' ').unwrap();
        assert_eq!(command, "(sleep)", "{line}");
        // Killed and reaped: the pid names no process, or another one.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{name}'s leftover lives: {stat}");
    }
}

/// Runs the fixture with `args` and a report stream, and returns what it
/// printed and the stream's lines.
fn run_with_report_stream(args: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let path = std::env::temp_dir().join(format!("isolate-report-{}.jsonl", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let fd = file.as_raw_fd();
    // Let the fixture inherit the descriptor: this driver has one thread.
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let output = fixture_command(args)
        .env("ISOLATE_REPORT_FD", fd.to_string())
        .output()
        .unwrap();
    drop(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let events = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (output, events)
}

fn check_json_report_stream() {
    let (output, events) = run_with_report_stream(&["--test-threads", "2"]);
    assert_eq!(output.status.code(), Some(101));
    let finished: BTreeMap<String, &serde_json::Value> = events
        .iter()
        .filter(|event| event["event"] == "finished")
        .map(|event| (event["name"].as_str().unwrap().to_owned(), event))
        .collect();
    let started = events
        .iter()
        .filter(|event| event["event"] == "started")
        .count();
    assert_eq!(started, finished.len());
    // One result per test, and none for a test that does not exist.
    let results = events
        .iter()
        .filter(|event| event["event"] == "finished")
        .count();
    assert_eq!(results, finished.len(), "a test has two results");
    assert!(!finished.contains_key("forged"), "a forged test appeared");
    assert!(events.iter().all(|event| event["version"] == 1));
    for (name, verdict, _) in EXPECTED {
        if *verdict == Verdict::Ignored {
            assert!(!finished.contains_key(*name), "{name} ran");
            continue;
        }
        let event = finished
            .get(*name)
            .unwrap_or_else(|| panic!("no event for {name}"));
        assert_eq!(event["passed"], *verdict == Verdict::Ok, "{name}: {event}");
    }
    let segfault = &finished["segfault"]["outcome"];
    assert_eq!(segfault["kind"], "signaled");
    assert_eq!(segfault["signal"], 11);
    assert_eq!(segfault["signal_name"], "SIGSEGV");
    assert_eq!(segfault["fault_address"], 0);
    assert_eq!(finished["segfault"]["stdout"], "about to crash\n");
    assert_eq!(finished["exit_zero"]["outcome"]["kind"], "exited");
    assert_eq!(finished["exit_zero"]["outcome"]["code"], 0);
    assert_eq!(finished["hangs"]["outcome"]["kind"], "timed_out");
    assert_eq!(
        finished["overflows_stack"]["outcome"]["stack_overflow"],
        true
    );
    assert_eq!(
        finished["exceeds_memory_limit"]["outcome"]["kind"],
        "out_of_memory"
    );
    assert_eq!(finished["panics"]["outcome"]["kind"], "panicked");
    assert_eq!(finished["panics"]["outcome"]["message"], "dragons");
    assert_eq!(
        finished["leaves_a_process"]["leftovers"][0]["command"],
        "sleep"
    );
}

fn check_libtest_json_format() {
    let output = run_fixture(&[
        "--format",
        "json",
        "-Z",
        "unstable-options",
        "--test-threads",
        "2",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(101), "{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let verdicts: BTreeMap<String, Verdict> = events
        .iter()
        .filter(|event| event["type"] == "test")
        .filter_map(|event| {
            let verdict = match event["event"].as_str()? {
                "ok" => Verdict::Ok,
                "failed" => Verdict::Failed,
                "ignored" => Verdict::Ignored,
                _ => return None,
            };
            Some((event["name"].as_str()?.to_owned(), verdict))
        })
        .collect();
    assert_eq!(verdicts, expected_verdicts());
}

fn check_list() {
    let text = stdout(&run_fixture(&["--list", "--format", "terse"]));
    let mut expected: Vec<String> = EXPECTED
        .iter()
        .map(|(name, _, _)| format!("{name}: test"))
        .collect();
    expected.sort();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    let ignored = stdout(&run_fixture(&["--list", "--format", "terse", "--ignored"]));
    assert_eq!(
        ignored,
        "ignored: test\nignored_with_reason: test\nqueue::slow: test\nqueue::timed: test\nwaits_with_a_grandchild: test\n"
    );
}

fn check_filters() {
    let output = run_fixture(&["--exact", "passes"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(pretty_verdicts(&stdout(&output)).len(), 1);

    let output = run_fixture(&["should_panic", "--skip", "other", "--skip", "returns"]);
    let verdicts = pretty_verdicts(&stdout(&output));
    assert_eq!(
        verdicts.keys().collect::<Vec<_>>(),
        ["should_panic_panics", "should_panic_with_text"]
    );
    assert_eq!(output.status.code(), Some(0));

    let output = run_fixture(&["--ignored", "--exact", "ignored"]);
    assert_eq!(
        pretty_verdicts(&stdout(&output))["ignored"],
        Verdict::Failed
    );

    // Several name filters, as libtest takes them: any of them.
    let output = run_fixture(&["returns_ok", "should_panic_returns"]);
    assert_eq!(
        pretty_verdicts(&stdout(&output)).keys().collect::<Vec<_>>(),
        ["returns_ok", "should_panic_returns"]
    );
    let output = run_fixture(&["--exact", "passes", "panics", "should_panic"]);
    assert_eq!(
        pretty_verdicts(&stdout(&output)).keys().collect::<Vec<_>>(),
        ["panics", "passes"]
    );
    let output = run_fixture(&["--list", "--format", "terse", "--exact", "passes", "panics"]);
    assert_eq!(
        stdout(&output).lines().collect::<Vec<_>>(),
        ["panics: test", "passes: test"]
    );
}

/// With `--test-threads 1`, tests run one at a time, even though the
/// harness hands the next one to the fork server early; and a test's
/// timeout counts from when it starts, not from when it was handed over.
fn check_one_test_at_a_time() {
    let log = std::env::temp_dir().join(format!("isolate-queue-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let output = fixture_command(&["--ignored", "--test-threads", "1", "queue::"])
        .env("ISOLATE_FIXTURE_LOG", &log)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let verdicts = pretty_verdicts(&stdout(&output));
    assert_eq!(
        verdicts.values().collect::<Vec<_>>(),
        [&Verdict::Ok, &Verdict::Ok],
        "{}",
        stdout(&output)
    );
    let mut runs: Vec<(u128, u128)> = text
        .lines()
        .map(|line| {
            let (start, end) = line.split_once(' ').unwrap();
            (start.parse().unwrap(), end.parse().unwrap())
        })
        .collect();
    runs.sort_unstable();
    assert_eq!(runs.len(), 2, "{text}");
    assert!(runs[0].1 <= runs[1].0, "the two tests overlapped: {text}");
}

/// The tests after a slow one run while it does, and the report stream
/// tells of each end as it happens; the verdicts still print in list order.
fn check_runs_past_a_slow_test() {
    let (output, events) = run_with_report_stream(&["--ignored", "--test-threads", "2", "queue::"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let ends: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "finished")
        .map(|event| event["name"].as_str().unwrap())
        .collect();
    assert_eq!(ends, ["queue::timed", "queue::slow"]);
    let text = stdout(&output);
    let printed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("test ")?.split_once(" ... ok"))
        .map(|(name, _)| name.trim_end())
        .collect();
    assert_eq!(printed, ["queue::slow", "queue::timed"], "{text}");
}

fn check_nocapture() {
    let output = run_fixture(&["--exact", "segfault", "--nocapture"]);
    assert!(stdout(&output).contains("about to crash"));
    assert_eq!(output.status.code(), Some(101));
}

/// Kills the harness with SIGKILL while a test runs with a grandchild:
/// the fork server, the test's child and its grandchild must all go.
fn check_nothing_outlives_a_killed_runner() {
    let pidfile = std::env::temp_dir().join(format!("isolate-pids-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let mut runner = fixture_command(&["--ignored", "--exact", "waits_with_a_grandchild"])
        .env("ISOLATE_FIXTURE_PIDFILE", &pidfile)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pids: Vec<u32> = loop {
        let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
        if text.ends_with('\n') {
            break text
                .split_whitespace()
                .map(|pid| pid.parse().unwrap())
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the test never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::fs::remove_file(&pidfile).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap();
    let server: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(
        server,
        runner.id(),
        "the test ran in the runner's own child"
    );
    runner.kill().unwrap();
    runner.wait().unwrap();
    for (what, pid) in [
        ("fork server", server),
        ("test child", pids[0]),
        ("grandchild", pids[1]),
    ] {
        assert!(stops_running(pid), "the {what} ({pid}) outlived the runner");
    }
}

/// Runs the fixture as `cargo nextest run` does: list with `--list --format
/// terse`, then each test alone with `--exact NAME --nocapture` and
/// `NEXTEST` set, its verdict read from the exit code.
fn check_as_nextest_runs_it() {
    let list = stdout(&run_fixture(&["--list", "--format", "terse"]));
    let ignored = stdout(&run_fixture(&["--list", "--format", "terse", "--ignored"]));
    let mut verdicts = BTreeMap::new();
    for line in list.lines() {
        let name = line.strip_suffix(": test").unwrap();
        if ignored.lines().any(|ignored| ignored == line) {
            verdicts.insert(name.to_owned(), Verdict::Ignored);
            continue;
        }
        // Each test in a process group of its own, killed afterwards: a
        // test run in-process may leave a process behind, as nextest
        // would see it do.
        let mut child = fixture_command(&["--exact", name, "--nocapture"])
            .env("NEXTEST", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let status = child.wait().unwrap();
        let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let verdict = match status.code() {
            Some(0) => Verdict::Ok,
            _ => Verdict::Failed,
        };
        verdicts.insert(name.to_owned(), verdict);
    }
    assert_eq!(verdicts, expected_verdicts());
}

/// Runs `cargo nextest run` itself on the fixture, in the workspace that
/// `workspace` names.
fn check_under_real_nextest(workspace: &str) {
    let target = std::env::temp_dir().join(format!("isolate-nextest-{}", std::process::id()));
    let output = Command::new("cargo")
        .args([
            "nextest",
            "run",
            "--test",
            "harness",
            "--no-fail-fast",
            "--message-format",
            "libtest-json-plus",
            "--run-ignored",
            "all",
        ])
        .current_dir(workspace)
        .env("ISOLATE_FIXTURE", "1")
        .env("NEXTEST_EXPERIMENTAL_LIBTEST_JSON", "1")
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&target);
    let text = stdout(&output);
    let verdicts: BTreeMap<String, Verdict> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "test")
        .filter_map(|event| {
            let verdict = match event["event"].as_str()? {
                "ok" => Verdict::Ok,
                "failed" => Verdict::Failed,
                _ => return None,
            };
            let name = event["name"].as_str()?;
            let name = name.rsplit_once('$').map_or(name, |(_, name)| name);
            Some((name.to_owned(), verdict))
        })
        .collect();
    let mut expected = expected_verdicts();
    // `--run-ignored all` runs the ignored tests: `ignored` segfaults.
    expected.insert("ignored".to_owned(), Verdict::Failed);
    expected.insert("ignored_with_reason".to_owned(), Verdict::Ok);
    expected.insert("waits_with_a_grandchild".to_owned(), Verdict::Ok);
    expected.insert("queue::slow".to_owned(), Verdict::Ok);
    expected.insert("queue::timed".to_owned(), Verdict::Ok);
    assert_eq!(
        verdicts,
        expected,
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn main() {
    if std::env::var_os("ISOLATE_FIXTURE").is_some() {
        fixture();
    }
    let checks: [(&str, fn()); 10] = [
        (
            "every_test_s_verdict_and_diagnosis_in_the_pretty_format",
            check_pretty_run,
        ),
        ("the_structured_report_stream", check_json_report_stream),
        ("libtest_s_json_format", check_libtest_json_format),
        ("list_in_the_terse_format", check_list),
        ("several_filters_exact_skip_and_ignored", check_filters),
        ("nocapture_streams_output", check_nocapture),
        (
            "one_test_thread_runs_one_test_at_a_time_timed_from_its_start",
            check_one_test_at_a_time,
        ),
        (
            "tests_after_a_slow_one_run_meanwhile_and_verdicts_print_in_order",
            check_runs_past_a_slow_test,
        ),
        (
            "verdicts_as_nextest_runs_each_test",
            check_as_nextest_runs_it,
        ),
        (
            "nothing_outlives_a_killed_runner",
            check_nothing_outlives_a_killed_runner,
        ),
    ];
    let mut trials = support::trials(checks);
    // Where cargo started this driver (which says where the workspace is)
    // and cargo-nextest is installed, it runs the fixture too.
    let workspace = std::env::var("CARGO_MANIFEST_DIR").ok();
    let has_nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    let runnable = has_nextest && workspace.is_some();
    trials.push(
        libtest_mimic::Trial::test("verdicts_under_cargo_nextest_run", move || {
            check_under_real_nextest(&workspace.unwrap_or_default());
            Ok(())
        })
        .with_ignored_flag(!runnable),
    );
    let mut args = libtest_mimic::Arguments::from_args();
    // The checks time what they run: one at a time unless asked otherwise.
    args.test_threads.get_or_insert(1);
    libtest_mimic::run(&args, trials).exit();
}
