//! End-to-end tests of `cargo isolate`: the real binary on the fixture
//! workspaces under `tests/fixtures/`, built into a directory of their own.

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use most"
)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Stdio};

use support::{
    as_printed, cargo_isolate, clean_command, command, command_at, describe, fixture, json_events,
    processes_with,
};

/// How each test of the `crashy` fixture must end: its binary, its name,
/// the JSON status and, for crashes, the signal's name.
const EXPECTED: &[(&str, &str, &str, Option<&str>)] = &[
    ("crashy", "tests::adds", "passed", None),
    ("crashy::outcomes", "aborts", "crashed", Some("SIGABRT")),
    ("crashy::outcomes", "closes_its_stdout", "passed", None),
    ("crashy::outcomes", "exits_three", "exited-early", None),
    ("crashy::outcomes", "exits_zero", "exited-early", None),
    ("crashy::outcomes", "fails_once", "passed", None),
    ("crashy::outcomes", "hangs", "timed-out", None),
    ("crashy::outcomes", "ignored_crasher", "ignored", None),
    ("crashy::outcomes", "leaks_a_process", "passed", None),
    (
        "crashy::outcomes",
        "overflows_stack",
        "crashed",
        Some("SIGABRT"),
    ),
    ("crashy::outcomes", "panics", "failed", None),
    ("crashy::outcomes", "passes", "passed", None),
    ("crashy::outcomes", "prints_fifty_megabytes", "passed", None),
    (
        "crashy::outcomes",
        "raises_sigbus",
        "crashed",
        Some("SIGBUS"),
    ),
    (
        "crashy::outcomes",
        "raises_sigfpe",
        "crashed",
        Some("SIGFPE"),
    ),
    (
        "crashy::outcomes",
        "raises_sigill",
        "crashed",
        Some("SIGILL"),
    ),
    (
        "crashy::outcomes",
        "raises_sigkill",
        "crashed",
        Some("SIGKILL"),
    ),
    (
        "crashy::outcomes",
        "raises_sigterm",
        "crashed",
        Some("SIGTERM"),
    ),
    ("crashy::outcomes", "segfault", "crashed", Some("SIGSEGV")),
    ("harnessed::deaths", "dies_as_expected", "passed", None),
    ("harnessed::deaths", "exits_zero", "exited-early", None),
    ("harnessed::deaths", "hangs", "timed-out", None),
    ("harnessed::deaths", "passes", "passed", None),
    ("harnessed::deaths", "segfault", "crashed", Some("SIGSEGV")),
];

/// Starts a run of the fixture's hanging test, with `env` set, and waits
/// for its `run-started` line; the rest of its JSON lines are returned.
fn start_hanging_run(
    env: (&str, &str),
) -> (std::process::Child, std::io::Lines<BufReader<ChildStdout>>) {
    let mut child = command(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--test",
            "outcomes",
            "--message-format",
            "json",
            "--",
            "--exact",
            "hangs",
        ],
    )
    .env(env.0, env.1)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines.next().unwrap().unwrap();
    assert!(started.contains("run-started"), "{started}");
    (child, lines)
}

#[test]
fn every_verdict_in_json_junit_and_human_output() {
    let junit = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crashy-junit.xml");
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "--workspace",
            "--timeout",
            "2s",
            "--test-threads",
            "2",
            "--message-format",
            "json",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    assert!(events.iter().all(|event| event["version"] == 1));
    assert_eq!(events[0]["event"], "run-started");
    // The ignored test is skipped.
    assert_eq!(events[0]["tests"], EXPECTED.len() - 1);
    assert_eq!(events[0]["skipped"], 1);
    let finished = support::finished(&output);
    for (binary, name, status, signal) in EXPECTED {
        let event = finished
            .get(&format!("{binary} {name}"))
            .unwrap_or_else(|| panic!("no result for {binary} {name}\n{}", describe(&output)));
        assert_eq!(event["status"], *status, "{binary} {name}: {event}");
        if let Some(signal) = signal {
            assert_eq!(event["signal_name"], *signal, "{binary} {name}: {event}");
        }
    }
    assert_eq!(finished.len(), EXPECTED.len());
    let key = |binary: &str, name: &str| format!("{binary} {name}");
    let segfault = &finished[&key("crashy::outcomes", "segfault")];
    assert_eq!(
        segfault["message"],
        "killed by signal 11 (SIGSEGV: invalid memory reference)"
    );
    assert_eq!(segfault["stdout"], "about to crash");
    assert_eq!(
        finished[&key("crashy::outcomes", "exits_zero")]["exit_code"],
        0
    );
    assert_eq!(
        finished[&key("crashy::outcomes", "exits_three")]["exit_code"],
        3
    );
    // A process in its group, and with cgroups a daemon out of it too.
    let leaked = &finished[&key("crashy::outcomes", "leaks_a_process")]["leaked"];
    assert!(*leaked == 1 || *leaked == 2, "{leaked}");
    assert!(
        finished[&key("crashy::outcomes", "panics")]["message"]
            .as_str()
            .unwrap()
            .starts_with("panicked at tests/outcomes.rs:")
    );
    assert!(
        finished[&key("harnessed::deaths", "segfault")]["message"]
            .as_str()
            .unwrap()
            .contains("at address 0x0")
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "run-finished");
    assert_eq!(summary["crashed"], 9);
    assert_eq!(summary["exited_early"], 3);
    assert_eq!(summary["timed_out"], 2);
    assert_eq!(summary["ignored"], 1);

    let junit = std::fs::read_to_string(junit).unwrap();
    assert!(
        junit.contains(r#"<testsuite name="crashy::outcomes""#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"type="SIGSEGV""#)
            && junit
                .contains(r#"message="killed by signal 11 (SIGSEGV: invalid memory reference)""#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"type="timeout""#) && junit.contains(r#"type="exit""#),
        "{junit}"
    );
    assert!(
        junit.contains("<system-out>about to crash</system-out>"),
        "{junit}"
    );
    assert!(junit.contains("<skipped"), "{junit}");
}

#[test]
fn human_output_names_each_failure_and_how_to_rerun_it() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--test",
            "outcomes",
            "--color",
            "never",
            "seg",
            "exits_zero",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Starting 2 tests across 1 binary (16 skipped)"),
        "{text}"
    );
    assert!(
        text.contains("CRASH [") && text.contains("crashy::outcomes segfault (SIGSEGV)"),
        "{text}"
    );
    assert!(
        text.contains(
            "EXIT crashy::outcomes exits_zero: exited with code 0 before libtest reported a result"
        ),
        "{text}"
    );
    let manifest = fixture("crashy");
    let rerun = format!(
        "rerun: cargo isolate test --manifest-path {} -p crashy --test outcomes -- --exact segfault",
        shlex::try_quote(manifest.to_str().unwrap()).unwrap()
    );
    assert!(text.contains(&rerun), "{text}");
    assert!(
        text.contains("2 tests run: 0 passed, 1 crashed, 1 exited early"),
        "{text}"
    );
}

#[test]
fn passing_selection_exits_zero() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--",
            "--exact",
            "passes",
            "tests::adds",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}

#[test]
fn fail_fast_stops_starting_tests() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--test",
            "outcomes",
            "--test-threads",
            "1",
            "--fail-fast",
            "--message-format",
            "json",
            "raises",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let ran = events
        .iter()
        .filter(|event| event["event"] == "test-finished" && event["status"] != "not-run")
        .count();
    assert_eq!(ran, 1, "{}", describe(&output));
    // The other four did not start, and say why.
    let not_run = events.iter().filter(|event| {
        event["status"] == "not-run"
            && event["message"] == "not run: a test failed and --fail-fast stopped the run"
    });
    assert_eq!(not_run.count(), 4, "{}", describe(&output));
    assert_eq!(events.last().unwrap()["not_run"], 4);
}

#[test]
fn list_names_every_test() {
    let output = cargo_isolate("crashy", &["list", "--workspace"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for (binary, name, status, _) in EXPECTED {
        let ignored = if *status == "ignored" {
            " (ignored)"
        } else {
            ""
        };
        assert!(
            text.lines()
                .any(|line| line == format!("{binary} {name}{ignored}")),
            "{binary} {name}: {text}"
        );
    }
}

#[test]
fn list_in_json_names_binaries_packages_kinds_harnesses_and_tests() {
    let output = cargo_isolate(
        "crashy",
        &["list", "--workspace", "--message-format", "json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listing["version"], 1);
    let binaries = listing["binaries"].as_array().unwrap();
    let binary = |id: &str| {
        binaries
            .iter()
            .find(|binary| binary["id"] == id)
            .unwrap_or_else(|| panic!("no binary {id}: {listing}"))
    };
    let deaths = binary("harnessed::deaths");
    assert_eq!(
        (&deaths["package"], &deaths["kind"], &deaths["harness"]),
        (
            &"harnessed".into(),
            &"test".into(),
            &"isolate-harness".into()
        )
    );
    assert!(Path::new(deaths["path"].as_str().unwrap()).is_file());
    assert_eq!(binary("crashy")["kind"], "lib");
    let mut tests = 0;
    for (binary_id, name, status, _) in EXPECTED {
        let listed = binary(binary_id)["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|test| test["name"] == *name)
            .unwrap_or_else(|| panic!("no {binary_id} {name}: {listing}"));
        assert_eq!(listed["ignored"], *status == "ignored", "{listed}");
        tests += 1;
    }
    let listed: usize = binaries
        .iter()
        .map(|binary| binary["tests"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        (listed, listing["tests"].as_u64().unwrap() as usize),
        (tests, tests)
    );
}

#[test]
fn a_build_failure_exits_101_with_cargo_s_diagnostics() {
    let output = cargo_isolate("broken", &["test"]);
    assert_eq!(output.status.code(), Some(101), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error[E0308]: mismatched types"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let output = cargo_isolate("crashy", &["test", "--timeout", "soon"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let output = cargo_isolate("crashy", &["test", "--", "--frobnicate"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

/// Runs `cargo isolate ARGS` on the fixture that does not build: a usage
/// error must come before the build (whose failure would exit 101).
fn assert_usage_error_before_the_build(args: &[&str], message: &str) {
    let output = cargo_isolate("broken", args);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}\n{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(message), "{args:?}: {stderr}");
    assert!(!stderr.contains("error[E0308]"), "{args:?} built: {stderr}");
}

#[test]
fn values_out_of_range_fail_before_the_build() {
    for (args, message) in [
        (
            &["test", "--timeout", "18446744073709551615s"][..],
            "a duration must be at most a year (8760h)",
        ),
        (
            &["test", "--timeout", "18446744073709551615h"],
            "a duration must be at most a year (8760h)",
        ),
        (
            &["test", "--timeout", "8761h"],
            "a duration must be at most a year (8760h)",
        ),
        (
            &["test", "--timeout", "0ms"],
            "a duration must be longer than zero",
        ),
        (
            &["test", "--test-threads", "0"],
            "expected a count (negative: the cores less that many) or \"num-cpus\", not \"0\"",
        ),
        (
            &["test", "--test-threads", "70000"],
            "at most 1024, not 70000",
        ),
        (&["test", "--retries", "101"], "101 is not in 0..=100"),
        (&["test", "-j", "0"], "jobs may not be 0"),
        (&["list", "-j", "0"], "jobs may not be 0"),
        (
            &["list", "--partition", "count:1/0"],
            "expected count:K/N, hash:K/N or slice:K/N",
        ),
    ] {
        assert_usage_error_before_the_build(args, message);
    }
}

#[test]
fn a_junit_report_s_directory_is_made_and_a_bad_one_fails_before_the_build() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("junit-directories-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // A file stands where the report's directory should be.
    let file = base.join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let junit = file.join("junit.xml");
    assert_usage_error_before_the_build(
        &["test", "--junit", junit.to_str().unwrap()],
        &format!("failed to create {}", file.display()),
    );
    // A directory stands where the report should be.
    assert_usage_error_before_the_build(
        &["test", "--junit", base.to_str().unwrap()],
        &format!(
            "in the directory {}",
            Path::new(env!("CARGO_TARGET_TMPDIR")).display()
        ),
    );
    // Missing directories are made.
    let junit = base.join("reports/ci/junit.xml");
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--junit",
            junit.to_str().unwrap(),
            "--",
            "--exact",
            "passes",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(report.contains(r#"<testcase name="passes""#), "{report}");
    std::fs::remove_dir_all(&base).unwrap();
}

/// A workspace of one package whose directory's name needs quoting in a
/// shell, with a test that fails; its manifest.
fn workspace_with_a_shell_hostile_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rerun it's a \"dir\" of $HOME & `co`");
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[workspace]\n\n[package]\nname = \"rerun-me\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/outcomes.rs"),
        "#[test]\nfn fails() {\n    panic!(\"on purpose\");\n}\n\n#[test]\nfn passes() {}\n",
    )
    .unwrap();
    dir.join("Cargo.toml")
}

#[test]
fn a_rerun_command_runs_as_printed_with_the_run_s_conditions() {
    let manifest = workspace_with_a_shell_hostile_path();
    let output = command_at(
        &manifest,
        "rerun",
        &[
            "test",
            "--timeout",
            "90s",
            "--isolation",
            "batch",
            "--color",
            "never",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let reruns: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("rerun: "))
        .collect();
    let [rerun] = reruns[..] else {
        panic!("not one rerun command: {text}");
    };
    let manifest = manifest.to_str().unwrap();
    assert_eq!(
        shlex::split(rerun).unwrap(),
        [
            "cargo",
            "isolate",
            "test",
            "--manifest-path",
            manifest,
            "--timeout",
            "90s",
            "--isolation",
            "batch",
            "-p",
            "rerun-me",
            "--test",
            "outcomes",
            "--",
            "--exact",
            "fails",
        ],
        "{rerun}"
    );
    let output = run_as_printed(rerun, "rerun");
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "FAIL rerun-me::outcomes fails: panicked at tests/outcomes.rs:3:5: on purpose"
        ),
        "{text}"
    );
    assert!(text.contains("1 test run: 0 passed, 1 failed"), "{text}");
}

#[test]
fn the_readme_s_rerun_line_runs_from_where_the_readme_runs_its_commands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let reruns: Vec<&str> = readme
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("rerun: "))
        .collect();
    let [rerun] = reruns[..] else {
        panic!("not one rerun line in the README: {reruns:?}");
    };
    // The fixture's own target directory, as its other tests build it.
    let mut shell = clean_command("sh", "fixture-crashy");
    shell.current_dir(&root);
    let output = support::as_printed(shell, rerun).output().unwrap();
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    // The failure the README shows above the line, and the same line again.
    let shown = readme
        .lines()
        .find(|line| line.starts_with("CRASH "))
        .expect("the README shows a crash");
    assert!(text.contains(shown), "{shown:?} not in\n{text}");
    assert!(text.contains(&format!("rerun: {rerun}")), "{text}");
    assert!(text.contains("1 test run: 0 passed, 1 crashed"), "{text}");
}

#[test]
fn shards_cover_the_suite_exactly_once() {
    let full = cargo_isolate("crashy", &["list", "--workspace"]);
    let full: Vec<String> = String::from_utf8_lossy(&full.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    for kind in ["count", "hash", "slice"] {
        let mut seen = Vec::new();
        for shard in 1..=3 {
            let partition = format!("{kind}:{shard}/3");
            let output = cargo_isolate(
                "crashy",
                &["list", "--workspace", "--partition", &partition],
            );
            assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
            seen.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
        seen.sort();
        let mut expected = full.clone();
        expected.sort();
        assert_eq!(seen, expected, "{kind}");
    }
    let output = cargo_isolate("crashy", &["test", "--partition", "count:4/3"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

/// `cargo isolate test -p crashy --test outcomes ARGS` with `RUST_BACKTRACE`
/// as `backtrace` says, where `fails_once` fails the first time it runs
/// (it leaves a marker, fresh for this run, named after `marker`); with
/// whether it left the marker.
fn run_fails_once(marker: &str, args: &[&str], backtrace: &str) -> (std::process::Output, bool) {
    let marker =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{marker}-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let mut command_line = vec!["test", "-p", "crashy", "--test", "outcomes"];
    command_line.extend(args);
    let output = command("crashy", &command_line)
        .env("CRASHY_FLAKY_MARKER", &marker)
        .env("RUST_BACKTRACE", backtrace)
        .output()
        .unwrap();
    let ran = std::fs::metadata(&marker).is_ok();
    let _ = std::fs::remove_file(&marker);
    (output, ran)
}

#[test]
fn a_test_that_passes_on_a_retry_is_flaky() {
    let junit = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flaky-junit.xml");
    let args = [
        "--retries",
        "2",
        "--message-format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
        "fails_once",
        "passes",
    ];
    // Retried whether or not its failure runs again for a backtrace.
    for backtrace in ["0", "1"] {
        let (output, _) = run_fails_once("flaky-marker", &args, backtrace);
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let events = json_events(&output);
        let flaky = finished(&events, "crashy::outcomes", "fails_once");
        assert_eq!(flaky["status"], "passed", "{backtrace}: {flaky}");
        assert_eq!(flaky["flaky"], true, "{backtrace}: {flaky}");
        assert_eq!(flaky["attempts"], 2, "{backtrace}: {flaky}");
        assert_eq!(events.last().unwrap()["flaky"], 1);
        let junit = std::fs::read_to_string(&junit).unwrap();
        assert!(junit.contains("<flakyFailure"), "{junit}");
    }
}

#[test]
fn a_test_that_fails_then_passes_when_run_again_for_its_backtrace_has_failed() {
    let (output, ran) = run_fails_once(
        "fails-once-backtrace",
        &["--message-format", "json", "fails_once"],
        "1",
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    assert!(ran, "the first run left its marker");
    let events = json_events(&output);
    let failed = finished(&events, "crashy::outcomes", "fails_once");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["flaky"], false, "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("panicked at") && message.contains("first attempt"),
        "{failed}"
    );
    assert!(
        message.ends_with("(run again to show the backtraces asked for; that run passed)"),
        "{failed}"
    );
    // The output is the failing run's.
    assert!(
        failed["stdout"].as_str().unwrap().contains("first attempt"),
        "{failed}"
    );
}

#[test]
fn ctrl_c_stops_running_tests_and_still_reports() {
    let (mut child, lines) = start_hanging_run(("ISOLATE_E2E_RUN", "ctrl-c"));
    // Let the test start, then press Ctrl-C.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<serde_json::Value> = lines
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let hangs = rest
        .iter()
        .find(|event| event["name"] == "hangs")
        .expect("the interrupted test is reported");
    assert_eq!(hangs["status"], "interrupted");
    assert_eq!(rest.last().unwrap()["event"], "run-finished");
}

/// What an interrupted run of the `interrupted` fixture left to check.
#[derive(Debug)]
struct InterruptedRun {
    /// Its exit status.
    status: std::process::ExitStatus,
    /// From the first signal to its exit.
    after_signal: std::time::Duration,
    /// Its JSON lines, after `run-started`.
    events: Vec<serde_json::Value>,
    /// Its JUnit report, if it wrote one.
    junit: Option<String>,
    /// Its stderr.
    stderr: String,
}

impl InterruptedRun {
    /// The `test-finished` event of test `name`.
    fn finished(&self, name: &str) -> &serde_json::Value {
        self.events
            .iter()
            .find(|event| event["event"] == "test-finished" && event["name"] == name)
            .unwrap_or_else(|| panic!("no result for {name}: {self:#?}"))
    }
}

/// Runs the tests of the `interrupted` fixture's binary `target` with one
/// thread, and once its test that ignores SIGTERM runs, sends the runner
/// `signals`: the first at once, each other once the runner said it was
/// interrupted. Checks that nothing of the run is left running after it.
fn interrupt_run(target: &str, signals: &[nix::sys::signal::Signal]) -> InterruptedRun {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let tag = format!("{target}-{}-{}", signals.len(), std::process::id());
    let running = scratch.join(format!("interrupted-running-{tag}"));
    let junit = scratch.join(format!("interrupted-junit-{tag}.xml"));
    let _ = std::fs::remove_file(&running);
    let _ = std::fs::remove_file(&junit);
    let mut runner = command(
        "interrupted",
        &[
            "test",
            "--test",
            target,
            "--test-threads",
            "1",
            "--message-format",
            "json",
            "--junit",
            junit.to_str().unwrap(),
        ],
    )
    .env("INTERRUPTED_RUNNING", &running)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The fixture builds first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !running.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the test never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Its stderr is read as it comes, so that it never fills.
    let (lines, stderr) = std::sync::mpsc::channel();
    let reader = BufReader::new(runner.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(runner.id()).unwrap());
    let signalled = std::time::Instant::now();
    let mut said = String::new();
    for (index, signal) in signals.iter().enumerate() {
        if index > 0 {
            loop {
                let line = stderr
                    .recv()
                    .unwrap_or_else(|_| panic!("the runner ended first: {said}"));
                said.push_str(&line);
                said.push('\n');
                if line.contains("again to kill them at once") {
                    break;
                }
            }
        }
        nix::sys::signal::kill(pid, *signal).unwrap();
    }
    let stdout = BufReader::new(runner.stdout.take().unwrap());
    let events = stdout
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .skip_while(|event: &serde_json::Value| event["event"] != "run-started")
        .skip(1)
        .collect();
    let status = runner.wait().unwrap();
    let after_signal = signalled.elapsed();
    said.extend(stderr.iter().map(|line| line + "\n"));
    let _ = std::fs::remove_file(&running);
    let report = std::fs::read_to_string(&junit).ok();
    let _ = std::fs::remove_file(&junit);
    let run = InterruptedRun {
        status,
        after_signal,
        events,
        junit: report,
        stderr: said,
    };
    // Every process of the run had the variable in its environment.
    let marker = format!("INTERRUPTED_RUNNING={}", running.display());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left running: {left:?}\n{run:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run
}

/// How long an interrupted run may take, from the signal: the grace period
/// and a wide margin for a loaded machine. The test that ignores SIGTERM
/// would otherwise run for a minute.
const INTERRUPTED_RUN_ENDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// The `<testcase>` element of test `name` in a JUnit report.
fn junit_case<'a>(junit: &'a str, name: &str) -> &'a str {
    let start = junit
        .find(&format!(r#"<testcase name="{name}""#))
        .unwrap_or_else(|| panic!("no {name}: {junit}"));
    let case = &junit[start..];
    let end = case
        .find("</testcase>")
        .or_else(|| case.find("/>"))
        .unwrap_or(case.len());
    &case[..end]
}

#[test]
fn sigterm_ends_a_test_that_ignores_it_after_the_grace_period_and_reports_every_test() {
    let run = interrupt_run("plain", &[nix::sys::signal::Signal::SIGTERM]);
    assert_eq!(run.status.code(), Some(130), "{run:#?}");
    assert!(run.after_signal < INTERRUPTED_RUN_ENDS_WITHIN, "{run:#?}");
    assert!(
        run.stderr
            .contains("interrupted: ending the running tests (again to kill them at once)"),
        "{run:#?}"
    );
    // The tests that ended first keep their verdicts.
    assert_eq!(run.finished("fails")["status"], "failed");
    assert_eq!(run.finished("finishes")["status"], "passed");
    let stubborn = run.finished("ignores_sigterm");
    assert_eq!(stubborn["status"], "interrupted");
    assert_eq!(
        stubborn["message"],
        "interrupted while it ran: it did not end on SIGTERM and was killed by SIGKILL after 1s"
    );
    let not_reached = run.finished("not_reached");
    assert_eq!(not_reached["status"], "not-run");
    assert_eq!(not_reached["message"], "not run: the run was interrupted");
    let summary = run.events.last().unwrap();
    assert_eq!(summary["event"], "run-finished", "{run:#?}");
    assert_eq!(
        (
            &summary["passed"],
            &summary["failed"],
            &summary["interrupted"],
            &summary["not_run"]
        ),
        (&1.into(), &1.into(), &1.into(), &1.into()),
        "{summary}"
    );
    let junit = run.junit.as_deref().expect("the JUnit report is written");
    assert!(
        junit_case(junit, "ignores_sigterm").contains(r#"type="interrupted""#),
        "{junit}"
    );
    assert!(
        junit_case(junit, "not_reached").contains("<skipped"),
        "{junit}"
    );
    assert!(junit_case(junit, "fails").contains("<failure"), "{junit}");
}

#[test]
fn an_interrupted_harness_s_tests_keep_the_verdicts_it_reported() {
    let run = interrupt_run("harnessed", &[nix::sys::signal::Signal::SIGTERM]);
    assert_eq!(run.status.code(), Some(130), "{run:#?}");
    assert!(run.after_signal < INTERRUPTED_RUN_ENDS_WITHIN, "{run:#?}");
    assert_eq!(run.finished("fails")["status"], "failed");
    assert_eq!(run.finished("finishes")["status"], "passed");
    let stubborn = run.finished("ignores_sigterm");
    assert_eq!(stubborn["status"], "interrupted");
    assert_eq!(stubborn["message"], "interrupted while it ran");
    // The harness hands the fork server the next test before a thread is
    // free for it: that one may count as started.
    let next = run.finished("then_one");
    assert!(
        next["status"] == "not-run" || next["message"] == "interrupted while it ran",
        "{next}"
    );
    let last = run.finished("then_two");
    assert_eq!(last["status"], "not-run");
    assert_eq!(last["message"], "not run: the run was interrupted");
    assert_eq!(run.events.last().unwrap()["event"], "run-finished");
    let junit = run.junit.as_deref().expect("the JUnit report is written");
    assert!(
        junit_case(junit, "then_two").contains("<skipped"),
        "{junit}"
    );
}

#[test]
fn a_second_interruption_kills_at_once_and_writes_no_report() {
    use nix::sys::signal::Signal;
    let run = interrupt_run("plain", &[Signal::SIGTERM, Signal::SIGINT]);
    assert_eq!(run.status.code(), Some(130), "{run:#?}");
    assert!(run.after_signal < INTERRUPTED_RUN_ENDS_WITHIN, "{run:#?}");
    // It did not wait for the test to end: no verdict on it, no summary,
    // no JUnit report.
    assert!(
        run.events
            .iter()
            .all(|event| event["event"] != "run-finished" && event["name"] != "ignores_sigterm"),
        "{run:#?}"
    );
    assert_eq!(run.junit, None, "{run:#?}");
}

#[test]
fn nocapture_streams_output() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--test",
            "outcomes",
            "--nocapture",
            "--color",
            "never",
            "--",
            "--exact",
            "segfault",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let streamed = text
        .find("about to crash")
        .unwrap_or_else(|| panic!("{text}"));
    let verdict = text.find("CRASH [").unwrap_or_else(|| panic!("{text}"));
    assert!(streamed < verdict, "{text}");
}

/// `leaks_a_process` leaves a process in its group and a daemon that left
/// its session: with cgroups, both are its leftovers; without, the daemon
/// is found after the run. Either way nothing is left running.
#[test]
fn nothing_is_left_running_after_a_run() {
    for containment in ["auto", "process-groups"] {
        let marker = format!(
            "ISOLATE_E2E_RUN=nothing-left-{containment}-{}",
            std::process::id()
        );
        let (key, value) = marker.split_once('=').unwrap();
        let output = command(
            "crashy",
            &[
                "test",
                "--workspace",
                "--timeout",
                "1s",
                "--message-format",
                "json",
            ],
        )
        .env(key, value)
        .env("ISOLATE_CONTAINMENT", containment)
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
        let events = json_events(&output);
        let in_force = events[0]["containment"].as_str().unwrap();
        let leaked = events
            .iter()
            .find(|event| event["name"] == "leaks_a_process")
            .unwrap();
        let swept = events
            .iter()
            .find(|event| event["event"] == "leftovers-swept")
            .map_or(0, |event| event["processes"].as_u64().unwrap());
        if in_force.starts_with("cgroup") {
            assert_eq!((&leaked["leaked"], swept), (&2.into(), 0), "{in_force}");
        } else {
            assert_eq!((&leaked["leaked"], swept), (&1.into(), 1), "{in_force}");
        }
        if containment == "process-groups" {
            assert!(in_force.starts_with("process groups"), "{in_force}");
        }
        assert_eq!(processes_with(&marker), Vec::<String>::new());
    }
}

#[test]
fn batch_isolation_gives_every_test_its_own_verdict() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "crashy",
            "--test",
            "outcomes",
            "--isolation",
            "batch",
            "--timeout",
            "2s",
            "--message-format",
            "json",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    for (binary, name, status, signal) in EXPECTED
        .iter()
        .filter(|(binary, ..)| *binary == "crashy::outcomes")
    {
        let event = events
            .iter()
            .find(|event| event["event"] == "test-finished" && event["name"] == *name)
            .unwrap_or_else(|| panic!("no result for {binary} {name}\n{}", describe(&output)));
        assert_eq!(event["status"], *status, "{name}: {event}");
        if let Some(signal) = signal {
            assert_eq!(event["signal_name"], *signal, "{name}: {event}");
        }
    }
    let segfault = events
        .iter()
        .find(|event| event["name"] == "segfault")
        .unwrap();
    assert_eq!(segfault["stdout"], "about to crash");
    let panics = events
        .iter()
        .find(|event| event["name"] == "panics")
        .unwrap();
    assert_eq!(
        panics["message"],
        "panicked at tests/outcomes.rs:27:5: dragons"
    );
}

#[test]
fn nothing_outlives_a_runner_killed_outright() {
    let marker = format!("ISOLATE_E2E_RUN=killed-runner-{}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let (mut runner, _lines) = start_hanging_run((key, value));
    // The hanging test runs; then the runner is killed without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with(&marker)
        .iter()
        .any(|cmdline| cmdline.contains("hangs"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the test never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The runner hands the test's group to its guard just after spawning
    // it: give it that moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    runner.kill().unwrap();
    runner.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left running: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How each test of the `misbehaving` fixture must end: its binary, its
/// name, the JSON status, and words its message must hold.
const MISBEHAVING: &[(&str, &str, &str, &str)] = &[
    ("misbehaving::killed", "passes", "passed", ""),
    (
        "misbehaving::killed",
        "runs_until_its_harness_is_killed",
        "broken",
        "the harness was killed by signal 9 (SIGKILL: killed) before reporting this test",
    ),
    (
        "misbehaving::looks_like_a_harness",
        "holds_the_harness_words",
        "passed",
        "",
    ),
    (
        "misbehaving::setup_panics",
        "never_runs",
        "broken",
        "the harness exited with code 101 without reporting this test\n\
         ---- harness stderr ----\n\
         thread 'main'",
    ),
];

/// The children of process `parent`, with their command lines.
fn children_of(parent: u32) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (ppid == parent).then(|| (pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

#[test]
fn a_harness_that_dies_or_misses_tests_fails_them_and_a_look_alike_runs_as_libtest() {
    let running = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("harness-running-{}", std::process::id()));
    let _ = std::fs::remove_file(&running);
    let runner = command(
        "misbehaving",
        &["test", "--test-threads", "2", "--message-format", "json"],
    )
    .env("MISBEHAVING_RUNNING", &running)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Once the test runs (after the fixture's build), its harness, a child
    // of the runner, is killed; the test it reported before has a moment to
    // be written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !running.exists() {
        assert!(std::time::Instant::now() < deadline, "the test never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let harness = children_of(runner.id())
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains("/killed-") && !cmdline.contains("--list"))
        .expect("the harness runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(harness.0),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let output = runner.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&running);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    for (binary, name, status, message) in MISBEHAVING {
        let event = events
            .iter()
            .find(|event| {
                event["event"] == "test-finished"
                    && event["binary"] == *binary
                    && event["name"] == *name
            })
            .unwrap_or_else(|| panic!("no result for {binary} {name}\n{}", describe(&output)));
        assert_eq!(event["status"], *status, "{binary} {name}: {event}");
        let text = event["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{binary} {name}: {text}");
    }
    let setup = events
        .iter()
        .find(|event| event["name"] == "never_runs")
        .unwrap();
    assert!(
        setup["message"]
            .as_str()
            .unwrap()
            .contains("the fixture database is missing"),
        "{setup}"
    );
    let finished = events
        .iter()
        .filter(|event| event["event"] == "test-finished")
        .count();
    assert_eq!(finished, MISBEHAVING.len(), "{}", describe(&output));
}

/// The lines `output` printed, without their leading spaces.
fn printed_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim_start().to_owned())
        .collect()
}

/// Whether a line of `lines` starts with `label` and ends with `test`.
fn has_line(lines: &[String], label: &str, test: &str) -> bool {
    lines
        .iter()
        .any(|line| line.starts_with(label) && line.ends_with(test))
}

/// The `test-finished` event of test `name` of `binary` in `events`.
fn finished<'a>(
    events: &'a [serde_json::Value],
    binary: &str,
    name: &str,
) -> &'a serde_json::Value {
    events
        .iter()
        .find(|event| {
            event["event"] == "test-finished" && event["binary"] == binary && event["name"] == name
        })
        .unwrap_or_else(|| panic!("no result for {binary} {name}: {events:#?}"))
}

#[test]
fn a_slow_test_is_reported_each_period_and_terminate_after_ends_it() {
    let output = cargo_isolate(
        "everyday",
        &[
            "test",
            "--slow-timeout",
            "300ms",
            "--terminate-after",
            "3",
            "--message-format",
            "json",
            "--",
            "--ignored",
            "--exact",
            "runs_long",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    for binary in ["everyday::plain", "everyday::harnessed"] {
        // A line each period, none once the limit ends the test.
        let slow: Vec<&serde_json::Value> = events
            .iter()
            .filter(|event| event["event"] == "test-slow" && event["binary"] == binary)
            .map(|event| &event["elapsed_ms"])
            .collect();
        assert_eq!(slow, [300, 600], "{binary}: {}", describe(&output));
        let ended = finished(&events, binary, "runs_long");
        assert_eq!(ended["status"], "timed-out", "{ended}");
        assert!(
            ended["message"]
                .as_str()
                .unwrap()
                .contains("timed out after 900ms"),
            "{ended}"
        );
    }
}

#[test]
fn a_timed_out_test_s_rerun_line_carries_its_limits_and_runs_as_printed() {
    let output = cargo_isolate(
        "everyday",
        &[
            "test",
            "-p",
            "everyday",
            "--test",
            "plain",
            "--timeout",
            "1s",
            "--slow-timeout",
            "400ms",
            "--terminate-after",
            "5",
            "--color",
            "never",
            "--",
            "--ignored",
            "--exact",
            "runs_long",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let lines = printed_lines(&output);
    let test = "everyday::plain runs_long";
    for label in ["SLOW [>  0.400s]", "SLOW [>  0.800s]", "TIMEOUT ["] {
        assert!(has_line(&lines, label, test), "{label}: {lines:#?}");
    }
    let reruns: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("rerun: "))
        .collect();
    let [rerun] = reruns[..] else {
        panic!("not one rerun command: {lines:#?}");
    };
    let words = shlex::split(rerun).unwrap();
    let options = "--timeout 1s --slow-timeout 400ms --terminate-after 5";
    assert!(words.join(" ").contains(options), "{rerun}");
    // Pasted into a shell, it ends with the same timeout.
    let started = std::time::Instant::now();
    let again = run_as_printed(rerun, "fixture-everyday");
    assert_eq!(again.status.code(), Some(100), "{}", describe(&again));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    let lines = printed_lines(&again);
    assert!(has_line(&lines, "TIMEOUT [", test), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("rerun: ") && line.contains(options)),
        "{lines:#?}"
    );
}

#[test]
fn retries_show_each_attempt_and_the_tests_that_were_flaky() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let flaky = scratch.join(format!("everyday-flaky-{}", std::process::id()));
    let junit = scratch.join(format!("everyday-flaky-{}.xml", std::process::id()));
    let _ = std::fs::remove_dir_all(&flaky);
    std::fs::create_dir_all(&flaky).unwrap();
    let output = command(
        "everyday",
        &[
            "test",
            "--retries",
            "2",
            "--color",
            "never",
            "--junit",
            junit.to_str().unwrap(),
            "fails_",
        ],
    )
    .env("EVERYDAY_FLAKY_DIR", &flaky)
    .output()
    .unwrap();
    let _ = std::fs::remove_dir_all(&flaky);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let lines = printed_lines(&output);
    for test in [
        "everyday::plain fails_once",
        "everyday::harnessed fails_once",
    ] {
        for label in ["TRY 1 FAIL [", "TRY 2 PASS ["] {
            assert!(has_line(&lines, label, test), "{label} {test}: {lines:#?}");
        }
    }
    for label in ["TRY 1 FAIL [", "TRY 2 FAIL [", "TRY 3 FAIL ["] {
        let test = "everyday::plain fails_with_output";
        assert!(has_line(&lines, label, test), "{label} {test}: {lines:#?}");
    }
    // The failed attempt's diagnosis follows its line.
    let first = lines
        .iter()
        .position(|line| line.starts_with("TRY 1 FAIL [") && line.ends_with("plain fails_once"))
        .unwrap();
    assert!(
        lines[first + 1].starts_with("panicked at tests/plain.rs:")
            && lines[first + 1].ends_with(": first attempt"),
        "{lines:#?}"
    );
    // After the summary, the tests that passed on a retry.
    let summary = lines
        .iter()
        .position(|line| line.starts_with("Summary ["))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        lines[summary].ends_with("3 tests run: 2 passed, 1 failed, 2 flaky"),
        "{lines:#?}"
    );
    for test in [
        "everyday::plain fails_once",
        "everyday::harnessed fails_once",
    ] {
        assert!(
            has_line(&lines[summary..], "FLAKY 2/3 [", test),
            "{test}: {lines:#?}"
        );
    }
    let junit = std::fs::read_to_string(&junit).unwrap();
    let flaky_case = junit_case(&junit, "fails_once");
    assert!(
        flaky_case.contains("<flakyFailure") && flaky_case.contains(": first attempt"),
        "{junit}"
    );
    let failing_case = junit_case(&junit, "fails_with_output");
    assert_eq!(failing_case.matches("<rerunFailure").count(), 2, "{junit}");
}

#[test]
fn every_report_says_what_a_test_returned_or_libtest_said_and_keeps_no_libtest_warning() {
    let junit = Path::new(env!("CARGO_TARGET_TMPDIR")).join("everyday-junit.xml");
    let output = cargo_isolate(
        "everyday",
        &[
            "test",
            "--message-format",
            "json",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    // Two tests that run for ten minutes and one ignored test are skipped.
    assert_eq!(
        (&events[0]["tests"], &events[0]["skipped"]),
        (&13.into(), &3.into())
    );
    for binary in ["everyday::plain", "everyday::harnessed"] {
        assert_eq!(
            finished(&events, binary, "returns_err")["message"],
            "returned Err: \"the answer was 41\""
        );
    }
    let plain = |name| finished(&events, "everyday::plain", name);
    let message = |name| plain(name)["message"].as_str().unwrap().to_owned();
    assert!(
        message("does_not_panic").starts_with("test did not panic as expected at tests/plain.rs:"),
        "{}",
        plain("does_not_panic")
    );
    assert!(
        message("panics_with_other_words").starts_with("panic did not contain expected string"),
        "{}",
        plain("panics_with_other_words")
    );
    // libtest captures what a test prints, both streams in one, as
    // `cargo test` shows it.
    let with_output = plain("fails_with_output");
    assert!(
        with_output["stdout"]
            .as_str()
            .unwrap()
            .starts_with("to stdout\nto stderr\n"),
        "{with_output}"
    );
    for event in &events {
        for stream in ["stdout", "stderr"] {
            assert!(
                !event[stream]
                    .as_str()
                    .unwrap_or_default()
                    .contains("--logfile"),
                "{event}"
            );
        }
    }
    let junit = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(
        junit
            .matches(r#"message="returned Err: &quot;the answer was 41&quot;""#)
            .count(),
        2,
        "{junit}"
    );
    assert!(!junit.contains("--logfile"), "{junit}");
    // And for people, with counts in the singular.
    let output = cargo_isolate(
        "everyday",
        &[
            "test",
            "-p",
            "everyday",
            "--test",
            "plain",
            "--color",
            "never",
            "returns_err",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let lines = printed_lines(&output);
    for expected in [
        "Starting 1 test across 1 binary (9 skipped)",
        "FAIL everyday::plain returns_err: returned Err: \"the answer was 41\"",
    ] {
        assert!(
            lines.iter().any(|line| line == expected),
            "{expected}: {lines:#?}"
        );
    }
    assert!(
        lines.iter().any(|line| line.starts_with("Summary [")
            && line.ends_with("1 test run: 0 passed, 1 failed")),
        "{lines:#?}"
    );
}

#[test]
fn a_batch_times_each_test_and_keeps_each_failure_s_output() {
    let output = cargo_isolate(
        "everyday",
        &[
            "test",
            "-p",
            "everyday",
            "--test",
            "plain",
            "--isolation",
            "batch",
            "--test-threads",
            "1",
            "--message-format",
            "json",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let plain = |name| finished(&events, "everyday::plain", name);
    let duration = |name| plain(name)["duration_ms"].as_f64().unwrap();
    assert!(
        duration("sleeps_300ms") >= 250.0 && duration("passes") < duration("sleeps_300ms") - 150.0,
        "{} {}",
        plain("sleeps_300ms"),
        plain("passes")
    );
    // A test's stdout and stderr, in the order written.
    let with_output = plain("fails_with_output");
    assert_eq!(
        with_output["message"],
        "panicked at tests/plain.rs:17:5: on purpose"
    );
    assert!(
        with_output["stdout"]
            .as_str()
            .unwrap()
            .starts_with("to stdout\nto stderr\n"),
        "{with_output}"
    );
    assert_eq!(
        plain("returns_err")["message"],
        "returned Err: \"the answer was 41\""
    );
    assert!(
        plain("does_not_panic")["message"]
            .as_str()
            .unwrap()
            .starts_with("test did not panic as expected"),
        "{}",
        plain("does_not_panic")
    );
    for event in &events {
        assert!(
            !event["stdout"]
                .as_str()
                .unwrap_or_default()
                .contains("--logfile"),
            "{event}"
        );
    }
}

/// A harness of its own on libtest-mimic writes its whole report, verdicts
/// and failures, to the file `--logfile` names, in the pretty format: each
/// test still gets its verdict, and a failure its message.
///
/// It takes one name filter: under `--isolation batch`, where a batch
/// would name several, each test runs alone, with the same verdicts.
#[test]
fn a_libtest_mimic_harness_gets_its_verdicts_and_failure_messages() {
    for isolation in ["process", "batch"] {
        let output = command(
            "everyday",
            &[
                "test",
                "-p",
                "everyday",
                "--test",
                "mimic",
                "--message-format",
                "json",
                "--test-threads",
                "1",
                "--isolation",
                isolation,
            ],
        )
        .env("EVERYDAY_MIMIC_FAIL", "1")
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
        let finished = support::finished(&output);
        let event = |name: &str| &finished[&format!("everyday::mimic {name}")];
        assert_eq!(
            event("mimic_passes")["status"],
            "passed",
            "{isolation}: {}",
            describe(&output)
        );
        assert_eq!(event("mimic_can_fail")["status"], "failed", "{isolation}");
        assert_eq!(event("mimic_can_fail")["message"], "asked to fail");
    }
}

#[test]
fn backtraces_are_made_for_failures_only() {
    let output = command(
        "everyday",
        &[
            "test",
            "--message-format",
            "json",
            "--test",
            "plain",
            "--",
            "fails_with_output",
            "panics_as_it_should",
        ],
    )
    .env("RUST_BACKTRACE", "1")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let failed = finished(&events, "everyday::plain", "fails_with_output");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["message"],
        "panicked at tests/plain.rs:17:5: on purpose"
    );
    // The failure's output, from the run made again with backtraces.
    let stderr = failed["stderr"].as_str().unwrap();
    assert!(stderr.contains("stack backtrace:"), "{failed}");
    assert!(
        failed["stdout"].as_str().unwrap().contains("to stdout"),
        "{failed}"
    );
    // A panic that was expected made no backtrace, and ran once.
    let expected = finished(&events, "everyday::plain", "panics_as_it_should");
    assert_eq!(expected["status"], "passed", "{expected}");
    let printed = expected["stdout"].as_str().unwrap();
    assert!(printed.contains("before the panic"), "{expected}");
    assert!(!printed.contains("stack backtrace"), "{expected}");
}

/// Runs a rerun line as printed, through a shell, with the target
/// directory named `target_name`; `cargo isolate` dispatches to this
/// binary as cargo would.
fn run_as_printed(rerun: &str, target_name: &str) -> std::process::Output {
    as_printed(clean_command("sh", target_name), rerun)
        .output()
        .unwrap()
}

#[test]
fn libtest_json_is_one_stream_of_libtest_s_events() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "--workspace",
            "--timeout",
            "5s",
            "--message-format",
            "libtest-json",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    // Read back as libtest's format is read: a suite that starts, tests
    // that each start and then end, a suite that ends with the counts.
    let (first, last) = (&events[0], &events[events.len() - 1]);
    assert_eq!(
        (&first["type"], &first["event"]),
        (&"suite".into(), &"started".into())
    );
    let mut started = std::collections::HashSet::new();
    let mut ended: BTreeMap<String, String> = BTreeMap::new();
    for event in &events[1..events.len() - 1] {
        assert_eq!(event["type"], "test", "{event}");
        let name = event["name"].as_str().unwrap().to_owned();
        match event["event"].as_str().unwrap() {
            "started" => assert!(started.insert(name.clone()), "{name} started twice"),
            verdict @ ("ok" | "failed" | "ignored") => {
                assert!(started.contains(&name), "{name} ended before it started");
                assert!(ended.insert(name, verdict.to_owned()).is_none());
            }
            other => panic!("not a libtest event: {other}"),
        }
    }
    assert_eq!(started.len(), ended.len());
    let count = |verdict: &str| ended.values().filter(|ended| *ended == verdict).count();
    // The count is of the tests that run.
    assert_eq!(
        first["test_count"].as_u64().unwrap() as usize,
        ended.len() - count("ignored")
    );
    assert_eq!(last["type"], "suite");
    assert_eq!(last["event"], "failed");
    for (field, verdict) in [
        ("passed", "ok"),
        ("failed", "failed"),
        ("ignored", "ignored"),
    ] {
        assert_eq!(
            last[field].as_u64().unwrap() as usize,
            count(verdict),
            "{field}: {last}"
        );
    }
    for (binary, name, status, _) in EXPECTED {
        let verdict = match *status {
            "passed" => "ok",
            "ignored" => "ignored",
            _ => "failed",
        };
        assert_eq!(
            ended[&format!("{binary}${name}")],
            verdict,
            "{binary} {name}"
        );
    }
    let segfault = events
        .iter()
        .find(|event| event["name"] == "crashy::outcomes$segfault" && event["event"] == "failed")
        .unwrap();
    assert!(
        segfault["stdout"]
            .as_str()
            .unwrap()
            .contains("about to crash"),
        "{segfault}"
    );
}
