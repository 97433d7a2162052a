//! What the isolate test harness costs over plain libtest, and how it
//! compares with `cargo nextest`, on suites of 2000 tests.
//!
//! The bench generates a small cargo workspace under
//! `target/isolate-bench/` with two packages, each with one test target
//! `suite` holding 2000 trivial tests (`trivial_0001`, an empty body) and
//! 2000 CPU tests (`cpu_0001`, about 1 ms of arithmetic each, the same
//! function in both):
//!
//! - `isolated`: a `harness = false` target run by `isolate-harness`, every
//!   test in its own child forked from the fork server;
//! - `plain`: ordinary `#[test]` functions run by libtest.
//!
//! It builds both once in release mode, then measures, side by side in one
//! run, the median wall time of 5 runs (after a warm-up run) of:
//!
//! - the `isolated` binary, `--test-threads 2 -q trivial_` (then `cpu_`);
//! - the `plain` binary with the same arguments;
//! - `cargo nextest run --release --offline -p plain --test-threads 2
//!   -E 'test(/^trivial_/)'` (then `cpu_`), when nextest is installed;
//! - 2000 bare `fork()`, `_exit(0)` in the child, `waitpid` in the parent,
//!   in the bench process itself;
//! - on the trivial suites, `cargo isolate test` (the `cargo-isolate`
//!   binary of this workspace, which the bench builds in release mode
//!   first): `cargo-isolate isolate test --release --offline
//!   --manifest-path <generated>/Cargo.toml -p plain --test-threads 2
//!   trivial_` (a process per libtest test), and the same with `-p
//!   isolated` (one run of the harness binary, on the cpu suite too:
//!   `cpu_`). `CARGO_TARGET_DIR` is the generated workspace's, so its
//!   `cargo test --no-run` is a no-op build check, counted in its time as
//!   nextest's is in nextest's. For scale, also `cargo test --release
//!   --offline -p isolated --test suite -- --test-threads 2 -q trivial_`:
//!   the same build check and binary, with cargo running it.
//!
//! Goals:
//!
//! - trivial suite: isolated at most 3x plain, and at least 15x faster
//!   than nextest;
//! - per-test overhead of the isolated harness, (isolated trivial - plain
//!   trivial) / 2000, at most 1.5x a bare fork + `_exit` + `waitpid`;
//! - cpu suite: isolated at most 1.2x plain;
//! - `cargo isolate test -p plain` at most 0.5x nextest (and, with no goal,
//!   its ratio to the plain binary run directly);
//! - `cargo isolate test -p isolated` at most 1.2x the isolated binary run
//!   directly, on both suites.
//!
//! Every command must pass; each runs in its own process group with a
//! timeout, and this process is a child subreaper, so that any process a
//! command leaves behind is found, reported and killed. Results are recorded
//! in `BENCHMARKS.md`.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench harness
//! ```

use std::{
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// Tests of each kind in each suite.
const TESTS: usize = 2000;
/// Measured runs of each command, after one warm-up run.
const RUNS: usize = 5;
/// Threads every runner is given (the machine has 2 cores).
const THREADS: &str = "2";
/// Longest a measured command may run before it is killed.
const TIMEOUT: Duration = Duration::from_secs(180);
/// How long processes a command leaves behind may take to exit on their
/// own before they are reported and killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Defines the items it is given, and `SHARED_SOURCE`, their source text,
/// which is pasted into both generated suites: the bench calibrates the
/// same code that the tests run.
macro_rules! shared_source {
    ($($item:item)*) => {
        $($item)*
        /// The source of the items above, for the generated suites.
        const SHARED_SOURCE: &str = stringify!($($item)*);
    };
}

shared_source! {
    /// About 1 ms of CPU work in release mode on the 2-core VM this bench
    /// was written on: a chain of dependent multiply-adds that the optimizer
    /// can neither fold nor vectorize.
    #[inline(never)]
    fn work() -> u64 {
        let mut x: u64 = std::hint::black_box(0x9E37_79B9_7F4A_7C15);
        for i in 0..std::hint::black_box(900_000_u64) {
            x = std::hint::black_box(x.wrapping_mul(0x5851_F42D_4C95_7F2D).wrapping_add(i));
        }
        x
    }
}

/// The two kinds of tests, selected by name prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Suite {
    Trivial,
    Cpu,
}

impl Suite {
    const ALL: [Suite; 2] = [Suite::Trivial, Suite::Cpu];

    fn prefix(self) -> &'static str {
        match self {
            Suite::Trivial => "trivial_",
            Suite::Cpu => "cpu_",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Suite::Trivial => "trivial",
            Suite::Cpu => "cpu",
        }
    }
}

/// What runs a suite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// The `isolated` binary, run directly.
    Isolated,
    /// The `plain` binary, run directly.
    Plain,
    /// `cargo nextest run -p plain`.
    Nextest,
    /// `cargo isolate test -p plain`: a process per test.
    CargoIsolatePlain,
    /// `cargo isolate test -p isolated`: one run of the harness binary.
    CargoIsolateIsolated,
    /// `cargo isolate test -p plain --isolation batch`: many tests per
    /// process.
    CargoIsolateBatch,
    /// `cargo test -p isolated --test suite`: the same no-op build check as
    /// `cargo isolate test -p isolated`, then the same test binary, run by
    /// cargo.
    CargoTestIsolated,
}

impl Runner {
    const ALL: [Runner; 7] = [
        Runner::Isolated,
        Runner::Plain,
        Runner::Nextest,
        Runner::CargoIsolatePlain,
        Runner::CargoIsolateIsolated,
        Runner::CargoIsolateBatch,
        Runner::CargoTestIsolated,
    ];

    fn name(self) -> &'static str {
        match self {
            Runner::Isolated => "isolated",
            Runner::Plain => "plain",
            Runner::Nextest => "nextest",
            Runner::CargoIsolatePlain => "cargo-isolate plain",
            Runner::CargoIsolateIsolated => "cargo-isolate isolated",
            Runner::CargoIsolateBatch => "cargo-isolate batch",
            Runner::CargoTestIsolated => "cargo-test isolated",
        }
    }

    /// Whether this runner is measured on `suite`: `cargo isolate` on the
    /// trivial suite, where its own cost shows most, and on the cpu suite
    /// too for the harness binary, whose goal is set for a harness suite.
    fn measures(self, suite: Suite) -> bool {
        match self {
            Runner::CargoIsolatePlain | Runner::CargoIsolateBatch | Runner::CargoTestIsolated => {
                suite == Suite::Trivial
            }
            Runner::CargoIsolateIsolated | Runner::Isolated | Runner::Plain | Runner::Nextest => {
                true
            }
        }
    }
}

/// The generated workspace and what was built in it.
struct Workspace {
    root: PathBuf,
    target: PathBuf,
    logs: PathBuf,
    isolated: PathBuf,
    plain: PathBuf,
    /// This workspace's `cargo-isolate`, built in release mode.
    cargo_isolate: PathBuf,
}

/// One run of a command: wall time, and the CPU time and minor page faults
/// of the whole process tree (from `getrusage(RUSAGE_CHILDREN)`).
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    faults: libc::c_long,
}

/// Samples of one runner on one suite.
struct Case {
    suite: Suite,
    runner: Runner,
    samples: Vec<Sample>,
}

fn main() {
    let started = Instant::now();
    become_subreaper();
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest_dir.join(dir),
        None => manifest_dir.join("target"),
    };
    let root = target_dir.join("isolate-bench");
    eprintln!("harness bench: generating {}", root.display());
    generate(&root, manifest_dir);
    eprintln!("harness bench: building cargo-isolate (release)");
    let cargo_isolate = build_cargo_isolate(manifest_dir, &target_dir);
    eprintln!("harness bench: building the suites (release)");
    let workspace = build(root, cargo_isolate);
    let nextest = nextest_available();
    if !nextest {
        eprintln!("harness bench: `cargo nextest --version` failed; nextest is left out");
    }
    eprintln!(
        "harness bench: work() takes {:.3} ms here",
        calibrate().as_secs_f64() * 1e3
    );

    let mut cases: Vec<Case> = Suite::ALL
        .iter()
        .flat_map(|&suite| {
            Runner::ALL
                .iter()
                .filter(move |&&runner| {
                    runner.measures(suite) && (nextest || runner != Runner::Nextest)
                })
                .map(move |&runner| Case {
                    suite,
                    runner,
                    samples: Vec::new(),
                })
        })
        .collect();
    let mut forks = Vec::new();
    let mut leftovers = Vec::new();
    for round in 0..=RUNS {
        let round_name = match round {
            0 => "warm-up".to_owned(),
            round => format!("run {round}/{RUNS}"),
        };
        for case in &mut cases {
            let label = format!("{} {}", case.runner.name(), case.suite.name());
            let command = command(&workspace, case.runner, case.suite);
            let log = workspace.logs.join(format!(
                "{}-{}.log",
                case.runner.name().replace(' ', "-"),
                case.suite.name()
            ));
            let sample = run(&label, command, &log, &mut leftovers);
            eprintln!(
                "harness bench: {round_name}: {label}: {}",
                format_duration(sample.wall)
            );
            if matches!(
                case.runner,
                Runner::CargoIsolatePlain
                    | Runner::CargoIsolateIsolated
                    | Runner::CargoIsolateBatch
                    | Runner::CargoTestIsolated
            ) && fs::read_to_string(&log).is_ok_and(|text| text.contains("   Compiling "))
            {
                // Its build check is meant to be a no-op: something (an
                // edit of isolate-harness) made it rebuild.
                eprintln!(
                    "harness bench: warning: {label} rebuilt the suites in this run; \
                     its time includes the build"
                );
            }
            if round > 0 {
                case.samples.push(sample);
            }
        }
        let fork = bare_forks(TESTS);
        eprintln!(
            "harness bench: {round_name}: {TESTS} bare forks: {}",
            format_duration(fork.wall)
        );
        if round > 0 {
            forks.push(fork);
        }
    }
    report(&cases, &forks, nextest);
    eprintln!(
        "harness bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !leftovers.is_empty() {
        eprintln!("harness bench: processes were left behind (killed):");
        for leftover in &leftovers {
            eprintln!("  {leftover}");
        }
        std::process::exit(1);
    }
}

/// Prints the table of medians and ratios, with the goals, to stdout.
fn report(cases: &[Case], forks: &[Sample], nextest: bool) {
    let median_of = |suite: Suite, runner: Runner| -> Option<Duration> {
        cases
            .iter()
            .find(|case| case.suite == suite && case.runner == runner)
            .map(|case| median(case.samples.iter().map(|sample| sample.wall).collect()))
    };
    let verdict = |met: bool| if met { "met" } else { "not met" };

    println!();
    println!("Harness: {TESTS} tests per suite, median of {RUNS} runs, {THREADS} test threads");
    println!();
    println!(
        "| suite | isolated | plain | nextest | isolated/plain | goal | | nextest/isolated | goal | |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for suite in Suite::ALL {
        let isolated = median_of(suite, Runner::Isolated).expect("isolated was measured");
        let plain = median_of(suite, Runner::Plain).expect("plain was measured");
        let over_plain = ratio(isolated, plain);
        let plain_goal = match suite {
            Suite::Trivial => 3.0,
            Suite::Cpu => 1.2,
        };
        // The 15x goal is the trivial suite's: on 1 ms tests, nextest's
        // cost per test is diluted by the tests' own.
        let nextest_goal = match suite {
            Suite::Trivial => "≥ 15x",
            Suite::Cpu => "none",
        };
        let (nextest_time, nextest_ratio, nextest_verdict) = match median_of(suite, Runner::Nextest)
        {
            Some(time) if suite == Suite::Trivial => {
                let speedup = ratio(time, isolated);
                (
                    format_duration(time),
                    format!("{speedup:.1}x"),
                    verdict(speedup >= 15.0),
                )
            }
            Some(time) => (
                format_duration(time),
                format!("{:.1}x", ratio(time, isolated)),
                "",
            ),
            None => ("n/a".to_owned(), "n/a".to_owned(), "n/a"),
        };
        println!(
            "| {} | {} | {} | {nextest_time} | {over_plain:.2}x | ≤ {plain_goal}x | {} | {nextest_ratio} | {nextest_goal} | {nextest_verdict} |",
            suite.name(),
            format_duration(isolated),
            format_duration(plain),
            verdict(over_plain <= plain_goal),
        );
    }

    let isolated = median_of(Suite::Trivial, Runner::Isolated).expect("measured");
    let plain = median_of(Suite::Trivial, Runner::Plain).expect("measured");
    let overhead = (isolated.as_secs_f64() - plain.as_secs_f64()) / TESTS as f64;
    let fork =
        median(forks.iter().map(|sample| sample.wall).collect()).as_secs_f64() / TESTS as f64;
    let fork_ratio = overhead / fork;
    println!();
    println!(
        "| per-test overhead of isolated, (isolated - plain trivial) / {TESTS} | bare fork + _exit + waitpid | ratio | goal | |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {:.1} µs | {:.1} µs | {fork_ratio:.2}x | ≤ 1.5x | {} |",
        overhead * 1e6,
        fork * 1e6,
        verdict(fork_ratio <= 1.5),
    );

    report_cargo_isolate(&median_of, verdict);

    println!();
    println!(
        "CPU time (user + sys) and minor page faults of each command's process tree \
         (of the bench and its children for the bare forks), medians:"
    );
    println!();
    println!("| command | wall | CPU | minor faults | CPU per test | faults per test |");
    println!("|---|---|---|---|---|---|");
    let rows = cases
        .iter()
        .map(|case| {
            (
                format!("{} {}", case.runner.name(), case.suite.name()),
                &case.samples[..],
            )
        })
        .chain([(format!("{TESTS} bare forks (parent + children)"), forks)]);
    for (name, samples) in rows {
        let wall = median(samples.iter().map(|sample| sample.wall).collect());
        let cpu = median(samples.iter().map(|sample| sample.cpu).collect());
        let mut faults: Vec<libc::c_long> = samples.iter().map(|sample| sample.faults).collect();
        faults.sort_unstable();
        let faults = faults[faults.len() / 2];
        println!(
            "| {name} | {} | {} | {faults} | {:.1} µs | {:.1} |",
            format_duration(wall),
            format_duration(cpu),
            cpu.as_secs_f64() * 1e6 / TESTS as f64,
            faults as f64 / TESTS as f64,
        );
    }
    if !nextest {
        println!();
        println!("nextest is not installed: its columns are n/a.");
    }
}

/// Prints the table of `cargo isolate test` against the runners it stands
/// in for, on the trivial suites (and the harness binary on the cpu suite).
fn report_cargo_isolate(
    median_of: &dyn Fn(Suite, Runner) -> Option<Duration>,
    verdict: fn(bool) -> &'static str,
) {
    let time = |runner| median_of(Suite::Trivial, runner).expect("measured on the trivial suite");
    let by_plain = time(Runner::CargoIsolatePlain);
    let by_isolated = time(Runner::CargoIsolateIsolated);
    println!();
    println!(
        "cargo isolate: {TESTS} trivial tests (or cpu tests where marked), median of {RUNS} runs, \
         {THREADS} test threads (its no-op build check and the listing included, as in \
         nextest's time)"
    );
    println!();
    println!("| cargo isolate test | time | against | its time | ratio | goal | |");
    println!("|---|---|---|---|---|---|---|");
    // One row: `command`'s time against `other`'s, and the ratio against
    // its goal, a maximum, if any.
    let row = |command: &str,
               measured: Duration,
               other: &str,
               other_time: Option<Duration>,
               goal: Option<f64>| {
        let goal_text = goal.map_or_else(|| "none".to_owned(), |goal| format!("≤ {goal}x"));
        let (other_time, ratio_text, met) = match other_time {
            Some(other_time) => {
                let over = ratio(measured, other_time);
                let precision = if over >= 10.0 { 1 } else { 2 };
                (
                    format_duration(other_time),
                    format!("{over:.precision$}x"),
                    goal.map_or("", |goal| verdict(over <= goal)),
                )
            }
            None => ("n/a".to_owned(), "n/a".to_owned(), "n/a"),
        };
        println!(
            "| {command} | {} | {other} | {other_time} | {ratio_text} | {goal_text} | {met} |",
            format_duration(measured),
        );
    };
    let plain = time(Runner::Plain);
    row(
        "-p plain",
        by_plain,
        "cargo nextest run -p plain",
        median_of(Suite::Trivial, Runner::Nextest),
        Some(0.5),
    );
    row("-p plain", by_plain, "plain binary", Some(plain), None);
    row(
        "-p plain --isolation batch",
        time(Runner::CargoIsolateBatch),
        "plain binary",
        Some(plain),
        Some(2.0),
    );
    row(
        "-p isolated",
        by_isolated,
        "isolated binary",
        Some(time(Runner::Isolated)),
        Some(1.2),
    );
    row(
        "-p isolated, cpu suite",
        median_of(Suite::Cpu, Runner::CargoIsolateIsolated).expect("measured on the cpu suite"),
        "isolated binary, cpu suite",
        median_of(Suite::Cpu, Runner::Isolated),
        Some(1.2),
    );
    row(
        "-p isolated",
        by_isolated,
        "cargo test -p isolated --test suite (the same build check)",
        Some(time(Runner::CargoTestIsolated)),
        None,
    );
}

/// Writes the generated workspace under `root`, rewriting only the files
/// whose content changed, so that a second run does not rebuild.
fn generate(root: &Path, manifest_dir: &Path) {
    let harness = manifest_dir
        .join("isolate-harness")
        .canonicalize()
        .expect("find isolate-harness");
    let harness = harness.to_str().expect("a UTF-8 path");
    assert!(
        !harness.contains(['"', '\\']),
        "the path {harness} needs escaping in TOML"
    );
    write_if_changed(
        &root.join("Cargo.toml"),
        "# Generated by benches/harness.rs of the isolate workspace.\n\
         [workspace]\nmembers = [\"isolated\", \"plain\"]\nresolver = \"3\"\n",
    );
    let lock = fs::read_to_string(manifest_dir.join("Cargo.lock")).expect("read Cargo.lock");
    write_if_changed(&root.join("Cargo.lock"), &lock);

    for (package, dependency, attribute, footer) in [
        (
            "isolated",
            format!("[dev-dependencies]\nisolate-harness = {{ path = \"{harness}\" }}\n"),
            "#[isolate_harness::test]",
            "isolate_harness::main!();\n",
        ),
        ("plain", String::new(), "#[test]", ""),
    ] {
        let harness_line = if package == "isolated" {
            "harness = false\n"
        } else {
            ""
        };
        write_if_changed(
            &root.join(package).join("Cargo.toml"),
            &format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\ntest = false\ndoctest = false\n\n\
                 [[test]]\nname = \"suite\"\npath = \"tests/suite.rs\"\n{harness_line}\n\
                 {dependency}"
            ),
        );
        write_if_changed(
            &root.join(package).join("src/lib.rs"),
            "//! Empty: the tests are in `tests/suite.rs`.\n",
        );
        let mut suite = format!(
            "//! {TESTS} trivial and {TESTS} CPU tests, generated by benches/harness.rs.\n\n{SHARED_SOURCE}\n\n"
        );
        for index in 1..=TESTS {
            suite.push_str(&format!("{attribute}\nfn trivial_{index:04}() {{}}\n"));
        }
        for index in 1..=TESTS {
            suite.push_str(&format!(
                "{attribute}\nfn cpu_{index:04}() {{\n    std::hint::black_box(work());\n}}\n"
            ));
        }
        suite.push_str(footer);
        write_if_changed(&root.join(package).join("tests/suite.rs"), &suite);
    }
}

/// Writes `contents` to `path` unless it already holds them.
fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return;
    }
    fs::create_dir_all(path.parent().expect("a file in a directory")).expect("create directory");
    fs::write(path, contents).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}

/// `cargo`, the one running this bench when there is one.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Builds this workspace's `cargo-isolate` in release mode, in
/// `target_dir`, and returns its executable.
fn build_cargo_isolate(manifest_dir: &Path, target_dir: &Path) -> PathBuf {
    let status = cargo()
        .args(["build", "--release", "-p", "cargo-isolate"])
        .current_dir(manifest_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build -p cargo-isolate");
    if !status.success() {
        fail(&format!("building cargo-isolate failed: {status}"));
    }
    let executable = target_dir.join("release/cargo-isolate");
    if !executable.is_file() {
        fail(&format!("no cargo-isolate at {}", executable.display()));
    }
    executable
}

/// Builds both suites in release mode and finds their executables.
fn build(root: PathBuf, cargo_isolate: PathBuf) -> Workspace {
    let target = root.join("target");
    let output = cargo()
        .args([
            "test",
            "--release",
            "--no-run",
            "--offline",
            "--message-format",
            "json",
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo test --no-run");
    if !output.status.success() {
        fail(&format!("building the suites failed: {}", output.status));
    }
    let mut isolated = None;
    let mut plain = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(executable), Some(manifest)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["target"]["name"] != "suite" {
            continue;
        }
        let manifest = Path::new(manifest);
        if manifest == root.join("isolated/Cargo.toml") {
            isolated = Some(PathBuf::from(executable));
        } else if manifest == root.join("plain/Cargo.toml") {
            plain = Some(PathBuf::from(executable));
        }
    }
    let logs = root.join("logs");
    fs::create_dir_all(&logs).expect("create the log directory");
    Workspace {
        isolated: isolated
            .unwrap_or_else(|| fail("cargo reported no executable for isolated's suite")),
        plain: plain.unwrap_or_else(|| fail("cargo reported no executable for plain's suite")),
        root,
        target,
        logs,
        cargo_isolate,
    }
}

/// Whether `cargo nextest --version` succeeds.
fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The command that runs `suite` with `runner`.
fn command(workspace: &Workspace, runner: Runner, suite: Suite) -> Command {
    let test_binary = |binary: &Path, package: &str| {
        let mut command = Command::new(binary);
        command
            .args(["--test-threads", THREADS, "-q", suite.prefix()])
            .current_dir(workspace.root.join(package));
        command
    };
    match runner {
        Runner::Isolated => test_binary(&workspace.isolated, "isolated"),
        Runner::Plain => test_binary(&workspace.plain, "plain"),
        Runner::Nextest => {
            let mut command = cargo();
            command
                .args([
                    "nextest",
                    "run",
                    "--release",
                    "--offline",
                    "-p",
                    "plain",
                    "--test-threads",
                    THREADS,
                    "-E",
                    &format!("test(/^{}/)", suite.prefix()),
                ])
                .current_dir(&workspace.root)
                .env("CARGO_TARGET_DIR", &workspace.target);
            command
        }
        Runner::CargoTestIsolated => {
            let mut command = cargo();
            command
                .args([
                    "test",
                    "--release",
                    "--offline",
                    "-p",
                    "isolated",
                    "--test",
                    "suite",
                    "--",
                    "--test-threads",
                    THREADS,
                    "-q",
                    suite.prefix(),
                ])
                .current_dir(&workspace.root)
                .env("CARGO_TARGET_DIR", &workspace.target);
            command
        }
        Runner::CargoIsolatePlain | Runner::CargoIsolateIsolated | Runner::CargoIsolateBatch => {
            let (package, isolation) = match runner {
                Runner::CargoIsolateIsolated => ("isolated", "process"),
                Runner::CargoIsolateBatch => ("plain", "batch"),
                _ => ("plain", "process"),
            };
            let mut command = Command::new(&workspace.cargo_isolate);
            command
                .args([
                    "isolate",
                    "test",
                    "--release",
                    "--offline",
                    "--manifest-path",
                ])
                .arg(workspace.root.join("Cargo.toml"))
                .args([
                    "-p",
                    package,
                    "--isolation",
                    isolation,
                    "--test-threads",
                    THREADS,
                    suite.prefix(),
                ])
                .current_dir(&workspace.root)
                .env("CARGO_TARGET_DIR", &workspace.target);
            command
        }
    }
}

/// Runs `command` in its own process group, its output to `log`, and
/// checks that it passed and left nothing running.
fn run(label: &str, mut command: Command, log: &Path, leftovers: &mut Vec<String>) -> Sample {
    use std::os::unix::process::CommandExt;

    let log_file = File::create(log).expect("create the log");
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log"))
        .stderr(log_file)
        .process_group(0);
    let before = usage(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| fail(&format!("{label}: could not start: {error}")));
    let group = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished.recv_timeout(TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: `kill` has no memory-safety preconditions; the group
            // is that of the command, which has not been reaped yet.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            true
        } else {
            false
        }
    });
    let status = child.wait().expect("wait for the command");
    let wall = start.elapsed();
    let _ = done.send(());
    let timed_out = watchdog.join().expect("the watchdog does not panic");
    let left = clean_up_leftovers();
    let after = usage(libc::RUSAGE_CHILDREN);
    for leftover in &left {
        eprintln!("harness bench: {label} left a process behind (killed): {leftover}");
    }
    leftovers.extend(
        left.into_iter()
            .map(|leftover| format!("{label}: {leftover}")),
    );
    if timed_out || !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("  | {line}");
        }
        let why = if timed_out {
            format!("timed out after {TIMEOUT:?}")
        } else {
            status.to_string()
        };
        fail(&format!(
            "{label} failed ({why}); full output in {}",
            log.display()
        ));
    }
    Sample {
        wall,
        cpu: after.0.saturating_sub(before.0),
        faults: after.1 - before.1,
    }
}

/// Reports `message` and exits with a failure.
fn fail(message: &str) -> ! {
    eprintln!("harness bench: {message}");
    std::process::exit(1);
}

/// `count` times: `fork()`, `_exit(0)` in the child, `waitpid` in the
/// parent. Returns the wall time of the loop, and the CPU time and minor
/// faults of this process and its children during it.
fn bare_forks(count: usize) -> Sample {
    let before = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
    let start = Instant::now();
    for _ in 0..count {
        // SAFETY: no other thread runs now (every watchdog was joined), so
        // the child is a complete copy of a single-threaded process, and it
        // only calls `_exit`.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                // SAFETY: `_exit` ends the child at once, without running
                // the exit handlers or destructors it inherited.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: `pid` is a child of this process not reaped yet,
                // and `status` is a valid out-pointer.
                let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
                assert_eq!(reaped, pid, "waitpid: {}", std::io::Error::last_os_error());
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "bare child ended with status {status:#x}"
                );
            }
        }
    }
    let wall = start.elapsed();
    let after = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
    Sample {
        wall,
        cpu: (after.0.0 + after.1.0).saturating_sub(before.0.0 + before.1.0),
        faults: (after.0.1 + after.1.1) - (before.0.1 + before.1.1),
    }
}

/// Median time of one call of `work`, over 5 batches of 100 calls.
fn calibrate() -> Duration {
    let batches = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..100 {
                std::hint::black_box(work());
            }
            start.elapsed() / 100
        })
        .collect();
    median(batches)
}

/// Makes this process the reaper of every orphan among its descendants, so
/// that what a command leaves behind can be found.
fn become_subreaper() {
    // SAFETY: `PR_SET_CHILD_SUBREAPER` only sets a flag of this process;
    // the unused arguments are zero.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        result,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
}

/// Reaps the descendants of a finished command that were reparented to
/// this process. Those still running after `LEFTOVER_GRACE` are killed,
/// reaped, and returned, described.
fn clean_up_leftovers() -> Vec<String> {
    let deadline = Instant::now() + LEFTOVER_GRACE;
    loop {
        reap_exited();
        let children = own_children();
        if children.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return children
                .into_iter()
                .map(|pid| {
                    let command = fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                        .unwrap_or_default();
                    // SAFETY: `kill` has no memory-safety preconditions;
                    // `pid` is a child of this process, not reaped yet.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let mut status = 0;
                    // SAFETY: as above, and `status` is a valid out-pointer.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    format!("pid {pid}: {}", command.trim_end())
                })
                .collect();
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reaps every child of this process that has exited.
fn reap_exited() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; only children that have
        // exited are reaped, and no `Child` handle is waited on meanwhile.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// The children of this process, from `/proc`.
fn own_children() -> Vec<libc::pid_t> {
    let mut pids = Vec::new();
    for task in fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let Ok(task) = task else { continue };
        if let Ok(children) = fs::read_to_string(task.path().join("children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<libc::pid_t>().ok()),
            );
        }
    }
    pids
}

/// CPU time (user + system) and minor page faults so far of `who`:
/// `RUSAGE_SELF` or `RUSAGE_CHILDREN` (the reaped descendants).
fn usage(who: libc::c_int) -> (Duration, libc::c_long) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is valid for writes of a `rusage`.
    let result = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    assert_eq!(result, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: `getrusage` succeeded, so it filled `usage` in.
    let usage = unsafe { usage.assume_init() };
    let time = |time: libc::timeval| {
        Duration::from_secs(u64::try_from(time.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(time.tv_usec).unwrap_or(0))
    };
    (time(usage.ru_utime) + time(usage.ru_stime), usage.ru_minflt)
}

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

/// `a / b`.
fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// `1.23 s` or `456.7 ms`.
fn format_duration(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.2} s", duration.as_secs_f64())
    } else {
        format!("{:.1} ms", duration.as_secs_f64() * 1e3)
    }
}
