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

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use support::{
    Bench, Sample, comparison_row, format_duration, median, median_wall, ratio, usage, verdict,
};

/// Tests of each kind in each suite.
const TESTS: usize = 2000;
/// Measured runs of each command, after one warm-up run.
const RUNS: usize = 5;
/// Threads every runner is given (the machine has 2 cores).
const THREADS: &str = "2";
/// Longest a measured command may run before it is killed.
const TIMEOUT: Duration = Duration::from_secs(180);

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
    /// The same with a configuration of overrides (by filterset) and a
    /// test group: what per-test settings cost the scheduler.
    CargoIsolateConfigured,
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
    const ALL: [Runner; 8] = [
        Runner::Isolated,
        Runner::Plain,
        Runner::Nextest,
        Runner::CargoIsolatePlain,
        Runner::CargoIsolateConfigured,
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
            Runner::CargoIsolateConfigured => "cargo-isolate plain, configured",
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
            Runner::CargoIsolatePlain
            | Runner::CargoIsolateConfigured
            | Runner::CargoIsolateBatch
            | Runner::CargoTestIsolated => suite == Suite::Trivial,
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

/// Samples of one runner on one suite.
struct Case {
    suite: Suite,
    runner: Runner,
    samples: Vec<Sample>,
}

fn main() {
    let mut bench = Bench::start("harness bench", TIMEOUT);
    let target_dir = support::target_dir();
    let root = target_dir.join("isolate-bench");
    bench.say(format_args!("generating {}", root.display()));
    generate(&root);
    let cargo_isolate = bench.build_cargo_isolate(&target_dir);
    let workspace = build(&bench, root, cargo_isolate);
    let nextest = support::nextest_available();
    if !nextest {
        bench.say("`cargo nextest --version` failed; nextest is left out");
    }
    bench.say(format_args!(
        "work() takes {:.3} ms here",
        calibrate().as_secs_f64() * 1e3
    ));

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
    for (round, measured) in support::rounds(RUNS) {
        for case in &mut cases {
            let label = format!("{} {}", case.runner.name(), case.suite.name());
            let command = command(&workspace, case.runner, case.suite);
            let log = workspace.logs.join(format!(
                "{}-{}.log",
                case.runner.name().replace(' ', "-"),
                case.suite.name()
            ));
            let sample = bench.run(&round, &label, command, &log);
            if measured {
                case.samples.push(sample);
            }
        }
        let fork = bare_forks(TESTS);
        bench.say(format_args!(
            "{round}: {TESTS} bare forks: {}",
            format_duration(fork.wall)
        ));
        if measured {
            forks.push(fork);
        }
    }
    report(&cases, &forks, nextest);
    bench.finish();
}

/// Prints the table of medians and ratios, with the goals, to stdout.
fn report(cases: &[Case], forks: &[Sample], nextest: bool) {
    let median_of = |suite: Suite, runner: Runner| -> Option<Duration> {
        cases
            .iter()
            .find(|case| case.suite == suite && case.runner == runner)
            .map(|case| median_wall(&case.samples))
    };

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
    let fork = median_wall(forks).as_secs_f64() / TESTS as f64;
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

    report_cargo_isolate(&median_of);

    println!();
    println!(
        "CPU time (user + sys) and minor page faults of each command's process tree \
         (of the bench and its children for the bare forks), medians:"
    );
    println!();
    support::usage_table(
        cases
            .iter()
            .map(|case| {
                (
                    format!("{} {}", case.runner.name(), case.suite.name()),
                    &case.samples[..],
                )
            })
            .chain([(format!("{TESTS} bare forks (parent + children)"), forks)]),
        TESTS,
    );
    if !nextest {
        println!();
        println!("nextest is not installed: its columns are n/a.");
    }
}

/// Prints the table of `cargo isolate test` against the runners it stands
/// in for, on the trivial suites (and the harness binary on the cpu suite).
fn report_cargo_isolate(median_of: &dyn Fn(Suite, Runner) -> Option<Duration>) {
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
    support::comparison_header("cargo isolate test");
    let plain = time(Runner::Plain);
    comparison_row(
        "-p plain",
        by_plain,
        "cargo nextest run -p plain",
        median_of(Suite::Trivial, Runner::Nextest),
        Some(0.5),
    );
    comparison_row("-p plain", by_plain, "plain binary", Some(plain), None);
    comparison_row(
        "-p plain, with overrides and a test group",
        time(Runner::CargoIsolateConfigured),
        "-p plain",
        Some(by_plain),
        Some(1.05),
    );
    comparison_row(
        "-p plain --isolation batch",
        time(Runner::CargoIsolateBatch),
        "plain binary",
        Some(plain),
        Some(2.0),
    );
    comparison_row(
        "-p isolated",
        by_isolated,
        "isolated binary",
        Some(time(Runner::Isolated)),
        Some(1.2),
    );
    comparison_row(
        "-p isolated, cpu suite",
        median_of(Suite::Cpu, Runner::CargoIsolateIsolated).expect("measured on the cpu suite"),
        "isolated binary, cpu suite",
        median_of(Suite::Cpu, Runner::Isolated),
        Some(1.2),
    );
    comparison_row(
        "-p isolated",
        by_isolated,
        "cargo test -p isolated --test suite (the same build check)",
        Some(time(Runner::CargoTestIsolated)),
        None,
    );
}

/// Writes the generated workspace under `root`, rewriting only the files
/// whose content changed, so that a second run does not rebuild.
/// The configuration file of [`Runner::CargoIsolateConfigured`], in the
/// generated workspace.
const CONFIGURATION: &str = "overrides.toml";

/// Overrides by filterset for half the tests, and a test group that
/// limits nothing at the bench's thread count: per-test settings to
/// resolve and places to take, not waits.
const OVERRIDES: &str = r#"# Generated by benches/harness.rs of the isolate workspace.
[[profile.default.overrides]]
filter = 'test(/^trivial_1/)'
test-group = "ones"

[[profile.default.overrides]]
filter = 'test(/^trivial_0[0-4]/) | package(nothing)'
retries = 1
slow-timeout = "30s"

[test-groups.ones]
max-threads = 2
"#;

fn generate(root: &Path) {
    let harness = support::manifest_dir()
        .join("isolate-harness")
        .canonicalize()
        .expect("find isolate-harness");
    let harness = harness.to_str().expect("a UTF-8 path");
    assert!(
        !harness.contains(['"', '\\']),
        "the path {harness} needs escaping in TOML"
    );
    support::write_if_changed(&root.join(CONFIGURATION), OVERRIDES);
    support::write_if_changed(
        &root.join("Cargo.toml"),
        "# Generated by benches/harness.rs of the isolate workspace.\n\
         [workspace]\nmembers = [\"isolated\", \"plain\"]\nresolver = \"3\"\n",
    );
    let lock =
        fs::read_to_string(support::manifest_dir().join("Cargo.lock")).expect("read Cargo.lock");
    support::write_if_changed(&root.join("Cargo.lock"), &lock);

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
        support::write_if_changed(
            &root.join(package).join("Cargo.toml"),
            &format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\ntest = false\ndoctest = false\n\n\
                 [[test]]\nname = \"suite\"\npath = \"tests/suite.rs\"\n{harness_line}\n\
                 {dependency}"
            ),
        );
        support::write_if_changed(
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
        support::write_if_changed(&root.join(package).join("tests/suite.rs"), &suite);
    }
}

/// Builds both suites in release mode and finds their executables.
fn build(bench: &Bench, root: PathBuf, cargo_isolate: PathBuf) -> Workspace {
    let target = root.join("target");
    let [isolated, plain] = bench.build_tests(
        &root,
        &target,
        [
            (root.join("isolated/Cargo.toml"), "suite"),
            (root.join("plain/Cargo.toml"), "suite"),
        ],
    );
    let logs = root.join("logs");
    fs::create_dir_all(&logs).expect("create the log directory");
    Workspace {
        root,
        target,
        logs,
        isolated,
        plain,
        cargo_isolate,
    }
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
            let mut command = support::cargo();
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
            let mut command = support::cargo();
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
        Runner::CargoIsolatePlain
        | Runner::CargoIsolateConfigured
        | Runner::CargoIsolateIsolated
        | Runner::CargoIsolateBatch => {
            let (package, isolation) = match runner {
                Runner::CargoIsolateIsolated => ("isolated", "process"),
                Runner::CargoIsolateBatch => ("plain", "batch"),
                _ => ("plain", "process"),
            };
            let mut command =
                support::cargo_isolate_test(&workspace.cargo_isolate, &workspace.root);
            command
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
            if runner == Runner::CargoIsolateConfigured {
                command
                    .arg("--config-file")
                    .arg(workspace.root.join(CONFIGURATION));
            }
            command
        }
    }
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
