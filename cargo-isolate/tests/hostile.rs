//! End-to-end tests on tests that attack the runner that runs them: the
//! `hostile` fixture (`tests/fixtures/hostile`) run by `cargo isolate
//! test`, with the strongest containment the machine allows and with
//! process groups alone, and its harness binaries run directly, as `cargo
//! test` runs them.
//!
//! [`expected`] says how each test must end. Besides: every test gets one
//! verdict, and no name that does not exist gets one; what a test leaves
//! running is reported and killed, and nothing of a run is left after it,
//! zombies included (see the `hygiene` module); a run takes a bounded
//! time; and the runner's memory stays far below what its tests write.

mod hygiene;
#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use some"
)]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{clean_command, command, describe, fixture, json_events, processes_with};

const HARNESSED: &str = "hostile::harnessed";
const PLAIN: &str = "hostile::plain";
const KILLS_ITS_FORK_SERVER: &str = "hostile::kills_its_fork_server";
const KILLS_ITS_HARNESS: &str = "hostile::kills_its_harness";

/// Where a test leaves processes running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaves {
    Nothing,
    /// One, in the test's process group.
    InItsGroup,
    /// This many, out of the test's process group: in a session or a
    /// group of their own, or a daemon.
    OutOfItsGroup(u64),
}

impl Leaves {
    /// How many processes.
    fn count(self) -> u64 {
        match self {
            Leaves::Nothing => 0,
            Leaves::InItsGroup => 1,
            Leaves::OutOfItsGroup(count) => count,
        }
    }
}

/// How a test of the fixture must end.
#[derive(Clone, Debug)]
struct Expected {
    /// Its binary, as `cargo isolate` names it.
    binary: &'static str,
    name: String,
    /// Its status in `cargo isolate`'s JSON.
    status: &'static str,
    /// Words its message must hold.
    message: &'static [&'static str],
    /// Words its stdout must hold.
    stdout: &'static [&'static str],
    leaves: Leaves,
}

const SEGFAULT: &[&str] = &["killed by signal 11 (SIGSEGV: invalid memory reference)"];
const FORGED: &[&str] = &["the verdict on this test is this panic, whatever it forged"];
const PANIC_A: &[&str] = &[
    "panicked at src/lib.rs:",
    ": HEAD OF THE 300 MiB PANIC a panic text",
    " bytes omitted ...]\n",
    " TAIL OF THE 300 MiB PANIC a",
];
const PANIC_B: &[&str] = &[
    "panicked at src/lib.rs:",
    ": HEAD OF THE 300 MiB PANIC b panic text",
    " bytes omitted ...]\n",
    " TAIL OF THE 300 MiB PANIC b",
];
const A_GIB: &[&str] = &[
    "START OF A GIB WITHOUT A NEWLINE yyyy",
    " bytes omitted ...]\n",
    "yyyy END OF A GIB WITHOUT A NEWLINE",
];
const IN_LINES: &[&str] = &[
    "START OF 100 MB IN LINES\nzzzz",
    " bytes omitted ...]\n",
    "zzzz\nEND OF 100 MB IN LINES",
];
const HARNESS_KILLED: &[&str] =
    &["the harness was killed by signal 9 (SIGKILL: killed) before reporting this test"];

/// The tests of the fixture but its 300 small ones per target: binary,
/// name, status, words of the message, words of stdout, what it leaves.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Leaves,
);

const NAMED: &[Row] = &[
    (
        HARNESSED,
        "a_copy_returns_then_the_test_segfaults",
        "crashed",
        SEGFAULT,
        &[],
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "forges_results_on_every_descriptor_then_panics",
        "failed",
        FORGED,
        &[],
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "closes_every_descriptor_and_returns",
        "passed",
        &[],
        &[],
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "holds_no_runner_descriptor_nor_variable",
        "passed",
        &[],
        &[],
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "leaves_a_setsid_sleep",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(1),
    ),
    (
        HARNESSED,
        "leaves_a_setsid_sleep_with_a_child",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(2),
    ),
    (
        HARNESSED,
        "leaves_a_double_forked_daemon",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(1),
    ),
    (
        HARNESSED,
        "leaves_a_child_in_its_own_process_group",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(1),
    ),
    (
        HARNESSED,
        "becomes_a_subreaper_and_leaves_a_grandchild",
        "passed",
        &[],
        &[],
        Leaves::InItsGroup,
    ),
    (
        HARNESSED,
        "panics_with_300_mib_a",
        "failed",
        PANIC_A,
        &[],
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "panics_with_300_mib_b",
        "failed",
        PANIC_B,
        &[],
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "prints_a_gib_without_a_newline",
        "passed",
        &[],
        A_GIB,
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "prints_100_mb_in_lines",
        "passed",
        &[],
        IN_LINES,
        Leaves::Nothing,
    ),
    (
        HARNESSED,
        "ignores_sigterm_and_hangs",
        "timed-out",
        &["timed out after 1s, ignored SIGTERM for 1s and was killed by SIGKILL"],
        &[],
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "a_copy_returns_then_the_test_segfaults",
        "crashed",
        SEGFAULT,
        &[],
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "forges_results_on_every_descriptor_then_panics",
        "failed",
        FORGED,
        &[],
        Leaves::Nothing,
    ),
    // libtest's log is among the descriptors closed: libtest cannot say
    // the test passed, and exits with 101.
    (
        PLAIN,
        "closes_every_descriptor_and_returns",
        "exited-early",
        &["exited with code 101 before libtest reported a result"],
        &[],
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "holds_no_runner_descriptor_nor_variable",
        "passed",
        &[],
        &[],
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "leaves_a_setsid_sleep",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(1),
    ),
    (
        PLAIN,
        "leaves_a_setsid_sleep_with_a_child",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(2),
    ),
    (
        PLAIN,
        "leaves_a_double_forked_daemon",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(1),
    ),
    (
        PLAIN,
        "leaves_a_child_in_its_own_process_group",
        "passed",
        &[],
        &[],
        Leaves::OutOfItsGroup(1),
    ),
    (
        PLAIN,
        "becomes_a_subreaper_and_leaves_a_grandchild",
        "passed",
        &[],
        &[],
        Leaves::InItsGroup,
    ),
    (
        PLAIN,
        "panics_with_300_mib_a",
        "failed",
        PANIC_A,
        &[],
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "panics_with_300_mib_b",
        "failed",
        PANIC_B,
        &[],
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "prints_a_gib_without_a_newline",
        "passed",
        &[],
        A_GIB,
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "prints_100_mb_in_lines",
        "passed",
        &[],
        IN_LINES,
        Leaves::Nothing,
    ),
    (
        PLAIN,
        "ignores_sigterm_and_hangs",
        "timed-out",
        &["timed out after 5s and was killed (SIGTERM, then SIGKILL after 1s)"],
        &[],
        Leaves::Nothing,
    ),
    (
        KILLS_ITS_FORK_SERVER,
        "kills_its_fork_server",
        "broken",
        &["could not be run: the fork server died"],
        &[],
        Leaves::Nothing,
    ),
    (
        KILLS_ITS_HARNESS,
        "kills_its_harness",
        "broken",
        HARNESS_KILLED,
        &[],
        Leaves::Nothing,
    ),
    // Its process dies with its group when the harness's death ends the
    // test: killed, not left.
    (
        KILLS_ITS_HARNESS,
        "runs_when_its_harness_dies",
        "broken",
        HARNESS_KILLED,
        &[],
        Leaves::Nothing,
    ),
];

/// How every test of the fixture must end: [`NAMED`], and in the harness
/// and plain targets, 300 small tests that each pass and leave a process
/// in their group.
fn expected() -> Vec<Expected> {
    let named = NAMED.iter().map(
        |&(binary, name, status, message, stdout, leaves)| Expected {
            binary,
            name: name.to_owned(),
            status,
            message,
            stdout,
            leaves,
        },
    );
    let small = [HARNESSED, PLAIN].into_iter().flat_map(|binary| {
        (0..300).map(move |index| Expected {
            binary,
            name: format!(
                "small::h{}::t{}::u{}::leaves_a_process",
                index / 100,
                index / 10 % 10,
                index % 10
            ),
            status: "passed",
            message: &[],
            stdout: &[],
            leaves: Leaves::InItsGroup,
        })
    });
    named.chain(small).collect()
}

/// The longest a run may take: the slowest test (5 s and a second of grace)
/// and the rest take about 10 s on two cores; this leaves room for a
/// loaded machine.
const RUN_TIME: Duration = Duration::from_secs(90);

/// When a run that takes too long is killed.
const KILLED_AFTER: Duration = Duration::from_secs(300);

/// The most the runner, and any process of the run, may hold in memory
/// (the peak resident set) when no test itself uses much: tests write 1 GiB
/// and 100 MB of output, which the runner keeps only the head and tail of.
const RUNNER_MEMORY_KIB: i64 = 200 * 1024;

/// The most bytes a kept message or output may have: a head and a tail of
/// some KiB each.
const KEPT: usize = 64 * 1024;

/// The fixture's test executables by target name, built once by `cargo
/// test --no-run` into the target directory the runs use, so that their
/// own build is a no-op.
fn executables() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = clean_command(cargo, "fixture-hostile")
            .args([
                "test",
                "--no-run",
                "--message-format",
                "json",
                "--manifest-path",
            ])
            .arg(fixture("hostile"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| message["reason"] == "compiler-artifact")
            .filter_map(|artifact| {
                let name = artifact["target"]["name"].as_str()?.to_owned();
                Some((name, PathBuf::from(artifact["executable"].as_str()?)))
            })
            .collect()
    })
}

/// A marker for the environment of a run's processes, `KEY=VALUE`.
fn marker(run: &str) -> String {
    format!("ISOLATE_E2E_RUN=hostile-{run}-{}", std::process::id())
}

/// `cargo isolate test` on the fixture, every test of it but those the
/// harness arguments skip, with `containment` and `marker`.
fn hostile_run(containment: &str, marker: &str, harness_args: &[&str]) -> Command {
    hostile_run_of(&[], containment, marker, harness_args)
}

/// `cargo isolate test` on the fixture's `targets` (cargo's selection,
/// such as `--test NAME`; all when empty), as [`hostile_run`].
fn hostile_run_of(
    targets: &[&str],
    containment: &str,
    marker: &str,
    harness_args: &[&str],
) -> Command {
    let mut args = vec!["test"];
    args.extend(targets);
    args.extend([
        "--timeout",
        "5s",
        "--test-threads",
        "2",
        "--message-format",
        "json",
    ]);
    if !harness_args.is_empty() {
        args.push("--");
        args.extend(harness_args);
    }
    let mut command = command("hostile", &args);
    let (key, value) = marker.split_once('=').unwrap();
    command
        .env("ISOLATE_CONTAINMENT", containment)
        .env(key, value);
    command
}

/// Fails unless nothing of the run marked `marker` runs any more and
/// nothing of it was handed to this process, alive or as a zombie.
fn assert_nothing_left(marker: &str) {
    let running = processes_with(marker);
    let handed = hygiene::children();
    assert!(
        running.is_empty() && handed.is_empty(),
        "left running: {running:?}; handed to the test process: {}",
        hygiene::list(&handed)
    );
}

/// Fails unless, within ten seconds, nothing of the run marked `marker`
/// runs any more and what of it was handed to this process has died; then
/// reaps it. For a run whose runner died before its processes: they end
/// after it, of its death.
fn assert_nothing_left_running(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = processes_with(marker);
        let handed: Vec<hygiene::Process> = hygiene::children()
            .into_iter()
            .filter(|child| !child.is_zombie())
            .collect();
        if running.is_empty() && handed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running: {running:?}; handed to the test process: {}",
            hygiene::list(&handed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_zombies();
}

/// Reaps the zombies among this process's children: the processes of a
/// run whose parent died before them.
fn reap_zombies() {
    for zombie in hygiene::children().iter().filter(|child| child.is_zombie()) {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(zombie.pid), None);
    }
}

/// What is wrong with the verdicts of a `cargo isolate` run, against
/// `expected`: each a line.
fn check_events(events: &[Value], expected: &[Expected]) -> Vec<String> {
    let mut problems = Vec::new();
    let started = &events[0];
    if started["event"] != "run-started" || started["tests"] != expected.len() {
        problems.push(format!(
            "the run started with {started}, not {} tests",
            expected.len()
        ));
    }
    let cgroups = started["containment"]
        .as_str()
        .is_some_and(|containment| containment.starts_with("cgroup"));
    let mut finished: BTreeMap<(&str, &str), Vec<&Value>> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|event| event["event"] == "test-finished")
    {
        let key = (
            event["binary"].as_str().unwrap_or_default(),
            event["name"].as_str().unwrap_or_default(),
        );
        finished.entry(key).or_default().push(event);
    }
    for ((binary, name), verdicts) in &finished {
        if !expected
            .iter()
            .any(|test| test.binary == *binary && test.name == *name)
        {
            problems.push(format!("a verdict on {binary} {name}, which is no test"));
        }
        if verdicts.len() != 1 {
            problems.push(format!("{} verdicts on {binary} {name}", verdicts.len()));
        }
    }
    // What each harness binary's tests left, and what they reported.
    let mut harness_leftovers: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for test in expected {
        let Some(event) = finished
            .get(&(test.binary, test.name.as_str()))
            .and_then(|verdicts| verdicts.first())
        else {
            problems.push(format!("no verdict on {} {}", test.binary, test.name));
            continue;
        };
        let what = format!("{} {}", test.binary, test.name);
        if event["status"] != test.status {
            problems.push(format!(
                "{what}: {} where {} was expected",
                event["status"], test.status
            ));
        }
        if test.status == "crashed" && event["signal_name"] != "SIGSEGV" {
            problems.push(format!(
                "{what}: killed by {}, not SIGSEGV",
                event["signal_name"]
            ));
        }
        for (field, words) in [("message", test.message), ("stdout", test.stdout)] {
            let text = event[field].as_str().unwrap_or_default();
            if let Some(missing) = words.iter().find(|word| !text.contains(*word)) {
                problems.push(format!("{what}: its {field} lacks {missing:?}: {text:?}"));
            }
            if text.len() > KEPT {
                problems.push(format!("{what}: its {field} holds {} bytes", text.len()));
            }
        }
        let leaked = event["leaked"].as_u64().unwrap_or(u64::MAX);
        let leaves = test.leaves.count();
        if test.binary == PLAIN {
            // Out of its group, a plain test's process is found by its
            // cgroup, or else after the run.
            let found = match test.leaves {
                Leaves::OutOfItsGroup(_) if !cgroups => 0,
                _ => leaves,
            };
            if leaked != found {
                problems.push(format!("{what}: {leaked} processes left, not {found}"));
            }
        } else {
            // A fork server charges what a test left out of its group to the
            // test it reaps when the process reaches it, which is another
            // when tests end back to back: per binary, the sum is exact.
            if test.leaves == Leaves::InItsGroup && leaked == 0 {
                problems.push(format!("{what}: its process in its group was not reported"));
            }
            let sums = harness_leftovers.entry(test.binary).or_default();
            sums.0 += leaves;
            sums.1 = sums.1.saturating_add(leaked);
        }
    }
    for (binary, (left, reported)) in harness_leftovers {
        if left != reported {
            problems.push(format!(
                "{binary}: its tests left {left} processes, {reported} were reported"
            ));
        }
    }
    let swept = events
        .iter()
        .find(|event| event["event"] == "leftovers-swept")
        .map_or(0, |event| event["processes"].as_u64().unwrap_or(u64::MAX));
    let detached = expected
        .iter()
        .filter(|test| test.binary == PLAIN && matches!(test.leaves, Leaves::OutOfItsGroup(_)))
        .map(|test| test.leaves.count())
        .sum::<u64>();
    let should_sweep = if cgroups { 0 } else { detached };
    if swept != should_sweep {
        problems.push(format!(
            "{swept} processes swept after the run, not {should_sweep}"
        ));
    }
    if events.last().map(|event| &event["event"]) != Some(&"run-finished".into()) {
        problems.push("the last event is not run-finished".to_owned());
    }
    problems
}

/// What is wrong with what a run of `cargo isolate` wrote to stderr: a
/// line of a report stream it could not use would mean that a test
/// reached the stream.
fn check_stderr(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains("of its report stream could not be used"))
        .map(|line| format!("a test reached a report stream: {line}"))
        .collect()
}

/// Fails with every problem of `problems`, and the run's stderr.
fn assert_no_problems(problems: &[String], output: &Output) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n--- stderr ---\n{}",
        problems.len(),
        problems.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn hostile_tests_end_as_the_table_says_with_the_strongest_containment() {
    let _turn = hygiene::one_run_at_a_time();
    executables();
    let marker = marker("strongest");
    let (output, took) = hygiene::run_to_end(hostile_run("auto", &marker, &[]), KILLED_AFTER);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let mut problems = check_events(&events, &expected());
    problems.extend(check_stderr(&output));
    assert_no_problems(&problems, &output);
    eprintln!("{}: the run took {took:?}", events[0]["containment"]);
    assert!(took < RUN_TIME, "the run took {took:?}");
    assert_nothing_left(&marker);
}

/// A harness binary alone is the run's last process: the runner leaves
/// its cgroups while the harness runs (see the runner's containment), and
/// what the harness's tests leave, in their lane, is still found.
#[test]
fn a_harness_binary_run_alone_has_its_leftovers_found_after_the_runner_left_its_cgroups() {
    let _turn = hygiene::one_run_at_a_time();
    executables();
    let marker = marker("harness-alone");
    let runner = hostile_run_of(&["--test", "harnessed"], "auto", &marker, &[]);
    let (output, took) = hygiene::run_to_end(runner, KILLED_AFTER);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let expected: Vec<Expected> = expected()
        .into_iter()
        .filter(|test| test.binary == HARNESSED)
        .collect();
    let mut problems = check_events(&events, &expected);
    problems.extend(check_stderr(&output));
    assert_no_problems(&problems, &output);
    eprintln!("{}: the run took {took:?}", events[0]["containment"]);
    assert!(took < RUN_TIME, "the run took {took:?}");
    assert_nothing_left(&marker);
}

#[test]
fn hostile_tests_end_as_the_table_says_with_process_groups_in_bounded_memory() {
    let _turn = hygiene::one_run_at_a_time();
    executables();
    let marker = marker("process-groups");
    // The tests that panic with 300 MiB need that much themselves, and
    // end the same whatever the containment: left out here, where the
    // peak memory of every process of the run is the runner's bound.
    let runner = hostile_run(
        "process-groups",
        &marker,
        &["--skip", "panics_with_300_mib"],
    );
    let (output, took, peak_kib) = run_measured(runner);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let containment = events[0]["containment"].as_str().unwrap_or_default();
    assert!(containment.starts_with("process groups"), "{containment}");
    let expected: Vec<Expected> = expected()
        .into_iter()
        .filter(|test| !test.name.starts_with("panics_with_300_mib"))
        .collect();
    let mut problems = check_events(&events, &expected);
    problems.extend(check_stderr(&output));
    assert_no_problems(&problems, &output);
    eprintln!("process groups: the run took {took:?}; its largest process held {peak_kib} KiB");
    assert!(took < RUN_TIME, "the run took {took:?}");
    assert!(
        peak_kib < RUNNER_MEMORY_KIB,
        "the run's largest process held {peak_kib} KiB"
    );
    assert_nothing_left(&marker);
}

/// The verdicts of libtest's JSON format (`ok`, `failed`), each with its
/// test's name and its captured stdout (the failure message).
fn libtest_verdicts(output: &Output) -> Vec<(String, String, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["type"] == "test" && event["event"] != "started")
        .map(|event| {
            let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
            (text("name"), text("event"), text("stdout"))
        })
        .collect()
}

/// Runs the fixture's harness binary `target` as `cargo test` runs it,
/// with libtest's JSON format and `marker` in its environment.
fn run_directly(target: &str, marker: &str) -> (Output, Duration) {
    let manifest = fixture("hostile");
    let package = manifest.parent().unwrap();
    let mut command = clean_command(&executables()[target], "fixture-hostile");
    let (key, value) = marker.split_once('=').unwrap();
    command
        .args(["--format", "json", "-Z", "unstable-options"])
        .current_dir(package)
        .env("CARGO_MANIFEST_DIR", package)
        .env("CARGO_PKG_NAME", "hostile")
        .env("CARGO_CRATE_NAME", target)
        .env(key, value);
    hygiene::run_to_end(command, KILLED_AFTER)
}

/// What is wrong with the verdicts a harness binary printed, against the
/// tests of `binary` in `expected`: each a line.
fn check_libtest_verdicts(output: &Output, binary: &str, expected: &[Expected]) -> Vec<String> {
    let mut problems = Vec::new();
    let verdicts = libtest_verdicts(output);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _, _) in &verdicts {
        *seen.entry(name).or_default() += 1;
    }
    for (name, count) in &seen {
        if !expected
            .iter()
            .any(|test| test.binary == binary && test.name == *name)
        {
            problems.push(format!("a verdict on {name}, which is no test"));
        }
        if *count != 1 {
            problems.push(format!("{count} verdicts on {name}"));
        }
    }
    for test in expected.iter().filter(|test| test.binary == binary) {
        let Some((_, verdict, stdout)) = verdicts.iter().find(|(name, ..)| *name == test.name)
        else {
            problems.push(format!("no verdict on {}", test.name));
            continue;
        };
        let wanted = if test.status == "passed" {
            "ok"
        } else {
            "failed"
        };
        if verdict != wanted {
            problems.push(format!(
                "{}: {verdict} where {wanted} was expected",
                test.name
            ));
        }
        if let Some(missing) = test.message.iter().find(|word| !stdout.contains(*word)) {
            problems.push(format!(
                "{}: its message lacks {missing:?}: {stdout:?}",
                test.name
            ));
        }
    }
    problems
}

/// The processes a harness said its tests left, from its stderr.
fn reported_leftovers(output: &Output) -> u64 {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.strip_prefix("isolate: test ")?.split_once(" left ")?;
            rest.split_once(" process(es) running")?
                .0
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn hostile_harness_binaries_run_directly_end_as_the_table_says() {
    let _turn = hygiene::one_run_at_a_time();
    let expected = expected();

    let marker = marker("direct");
    let (output, took) = run_directly("harnessed", &marker);
    assert_eq!(output.status.code(), Some(101), "{}", describe(&output));
    assert_no_problems(
        &check_libtest_verdicts(&output, HARNESSED, &expected),
        &output,
    );
    let left = expected
        .iter()
        .filter(|test| test.binary == HARNESSED)
        .map(|test| test.leaves.count())
        .sum::<u64>();
    assert_eq!(reported_leftovers(&output), left, "{}", describe(&output));
    assert!(took < RUN_TIME, "the harness took {took:?}");
    assert_nothing_left(&marker);

    // A test that kills its fork server, or its harness: the processes of
    // the run that die after their parent are handed to this process, as
    // they would be to init, which reaps them.
    let (output, _) = run_directly("kills_its_fork_server", &marker);
    assert_eq!(output.status.code(), Some(101), "{}", describe(&output));
    assert_no_problems(
        &check_libtest_verdicts(&output, KILLS_ITS_FORK_SERVER, &expected),
        &output,
    );
    assert_nothing_left_running(&marker);

    // The harness dies by its test's SIGKILL: no verdict, and no exit 0.
    let (output, _) = run_directly("kills_its_harness", &marker);
    assert_eq!(output.status.signal(), Some(9), "{}", describe(&output));
    assert_eq!(libtest_verdicts(&output), [], "{}", describe(&output));
    assert_nothing_left_running(&marker);
}

/// The variable that names the directory [`peak_memory_probe`] works in.
const PROBE: &str = "ISOLATE_E2E_PEAK_MEMORY_PROBE";

/// Runs `runner` from [`peak_memory_probe`], in a process of its own, and
/// returns its output, how long the probe ran, and the peak resident set of
/// the largest process of the run (the runner and every process it waited
/// for, which were in turn waited for by theirs), in KiB.
fn run_measured(runner: Command) -> (Output, Duration, i64) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let argv: Vec<String> = std::iter::once(runner.get_program())
        .chain(runner.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    std::fs::write(dir.join("command.json"), serde_json::to_vec(&argv).unwrap()).unwrap();
    let mut probe = Command::new(std::env::current_exe().unwrap());
    probe.args([
        "--exact",
        "peak_memory_probe",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    for (key, value) in runner.get_envs() {
        match value {
            Some(value) => probe.env(key, value),
            None => probe.env_remove(key),
        };
    }
    probe.env(PROBE, &dir);
    let (ran, took) = hygiene::run_to_end(probe, KILLED_AFTER);
    assert!(ran.status.success(), "the probe failed: {}", describe(&ran));
    let result: Value =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    let wait_status = i32::try_from(result["wait_status"].as_i64().unwrap()).unwrap();
    let output = Output {
        status: ExitStatus::from_raw(wait_status),
        stdout: std::fs::read(dir.join("stdout")).unwrap(),
        stderr: std::fs::read(dir.join("stderr")).unwrap(),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    (output, took, result["peak_kib"].as_i64().unwrap())
}

/// Not a test: [`run_measured`] runs it in a process of its own, where it
/// runs the command its directory names and records how it ended and the
/// peak memory of its processes (`getrusage(RUSAGE_CHILDREN)`, which counts
/// only what this process waited for: the command, and what it waited for).
#[test]
#[ignore = "a helper the hostile tests run in a process of its own"]
fn peak_memory_probe() {
    let Some(dir) = std::env::var_os(PROBE).map(PathBuf::from) else {
        return;
    };
    let argv: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.join("command.json")).unwrap()).unwrap();
    let mut runner = Command::new(&argv[0]);
    runner
        .args(&argv[1..])
        .env_remove(PROBE)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout")).unwrap())
        .stderr(File::create(dir.join("stderr")).unwrap());
    hygiene::without_stray_descriptors(&mut runner);
    let status = runner.status().unwrap();
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let result = serde_json::json!({
        "wait_status": status.into_raw(),
        "peak_kib": usage.max_rss(),
    });
    std::fs::write(dir.join("result.json"), result.to_string()).unwrap();
}
