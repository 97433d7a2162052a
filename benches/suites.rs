//! What `cargo isolate test` costs against `cargo nextest run` and `cargo
//! test` on a suite shaped like real ones: many `should_panic` tests run
//! with `RUST_BACKTRACE=1`, and one test that floods stderr.
//!
//! The bench generates a one-package workspace under
//! `target/isolate-bench-suites/` whose test target `suite` holds 1001
//! libtest tests:
//!
//! - 700 ordinary tests (`ordinary_0001`...), each a little arithmetic and
//!   an `assert_eq!`;
//! - 300 `#[should_panic(expected = "...")]` tests (`panicking_0001`...),
//!   each panicking three calls deep, so that a backtrace has frames to
//!   symbolize;
//! - `loud_stderr`, which writes 100 MB to stderr in 2.86 million lines of
//!   35 bytes.
//!
//! It builds this workspace's `cargo-isolate` and the suite once in release
//! mode, then measures, side by side in one run, the median wall time of 3
//! runs (after a warm-up run) of these commands, each with
//! `RUST_BACKTRACE=1` and `CARGO_TARGET_DIR` the generated workspace's (so
//! that each one's build check is a no-op, counted in its time):
//!
//! - `cargo-isolate isolate test --release --offline --manifest-path
//!   <generated>/Cargo.toml --test-threads 2`: a process per test;
//! - the same with `--isolation batch`: many tests per process;
//! - `cargo nextest run --release --offline --test-threads 2`, when nextest
//!   is installed (it captures each test's output);
//! - `cargo test --release --offline -- --test-threads 2` (libtest's own
//!   capture).
//!
//! Goals:
//!
//! - `cargo isolate test` at most 0.3x `cargo nextest run`;
//! - `cargo isolate test` at most 2x `cargo test`;
//! - `cargo isolate test --isolation batch` at most 1.3x `cargo test`.
//!
//! Every command must pass (a `should_panic` test passes by panicking);
//! each runs in its own process group with a timeout, and any process it
//! leaves behind is reported and killed. Results are recorded in
//! `BENCHMARKS.md`.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench suites
//! ```
//!
//! `ISOLATE_BENCH_SCALE`, a fraction, scales the suite down for a quick
//! check that the bench works (`ISOLATE_BENCH_SCALE=0.05` runs 35 ordinary
//! tests, 15 `should_panic` tests and 5 MB of output); the goals are set
//! for the full size.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use support::{Bench, Sample, comparison_row, median_wall};

/// Ordinary tests in the full-size suite.
const ORDINARY: usize = 700;
/// `should_panic` tests in the full-size suite.
const PANICKING: usize = 300;
/// Bytes the loud test writes to stderr in the full-size suite.
const OUTPUT_BYTES: usize = 100_000_000;
/// Measured runs of each command, after one warm-up run.
const RUNS: usize = 3;
/// Threads every runner is given (the machine has 2 cores).
const THREADS: &str = "2";
/// Longest a measured command may run before it is killed.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Helpers of the generated tests: the arithmetic of the ordinary ones,
/// and the three calls the panicking ones panic under.
const HELPERS: &str = r#"/// The sum of the squares of `1..=n`.
#[inline(never)]
fn sum_of_squares(n: u64) -> u64 {
    (1..=n).map(|i| i * i).sum()
}

/// Reads a value from `reading`, and panics: no value is in range.
#[inline(never)]
fn parse(reading: u64) -> u64 {
    validate(std::hint::black_box(reading).wrapping_mul(3)) + 1
}

#[inline(never)]
fn validate(value: u64) -> u64 {
    reject(value ^ 0x5A) + 1
}

#[inline(never)]
fn reject(value: u64) -> u64 {
    panic!("reading {value} is out of range")
}
"#;

/// What the panicking tests expect their panic message to contain.
const EXPECTED_PANIC: &str = "is out of range";

/// The format of one line of the loud test's output: its `{line:010}` is
/// the line's number.
const LOUD_LINE: &str = "stderr line {line:010} of the test";
/// The bytes of one line of [`LOUD_LINE`] as written: 35, its ten digits
/// and its newline included.
const LOUD_LINE_BYTES: usize = LOUD_LINE.len() - "{line:010}".len() + 10 + 1;

/// The size of the generated suite.
#[derive(Clone, Copy)]
struct Size {
    ordinary: usize,
    panicking: usize,
    lines: usize,
}

impl Size {
    /// The full-size suite scaled by `scale`, with at least one test of
    /// each kind and one line of output.
    fn scaled(scale: f64) -> Self {
        let scaled = |count: usize| ((count as f64 * scale).round() as usize).max(1);
        Self {
            ordinary: scaled(ORDINARY),
            panicking: scaled(PANICKING),
            lines: scaled(OUTPUT_BYTES / LOUD_LINE_BYTES),
        }
    }

    /// Tests in the suite, the loud one included.
    fn tests(self) -> usize {
        self.ordinary + self.panicking + 1
    }

    /// Megabytes the loud test writes.
    fn megabytes(self) -> f64 {
        (self.lines * LOUD_LINE_BYTES) as f64 / 1e6
    }
}

/// What runs the suite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// `cargo isolate test`: a process per test.
    CargoIsolate,
    /// `cargo isolate test --isolation batch`: many tests per process.
    CargoIsolateBatch,
    /// `cargo nextest run`.
    Nextest,
    /// `cargo test`.
    CargoTest,
}

impl Runner {
    const ALL: [Runner; 4] = [
        Runner::CargoIsolate,
        Runner::CargoIsolateBatch,
        Runner::Nextest,
        Runner::CargoTest,
    ];

    fn name(self) -> &'static str {
        match self {
            Runner::CargoIsolate => "cargo isolate test",
            Runner::CargoIsolateBatch => "cargo isolate test --isolation batch",
            Runner::Nextest => "cargo nextest run",
            Runner::CargoTest => "cargo test",
        }
    }

    /// The name of its log file, without the extension.
    fn log_name(self) -> &'static str {
        match self {
            Runner::CargoIsolate => "cargo-isolate",
            Runner::CargoIsolateBatch => "cargo-isolate-batch",
            Runner::Nextest => "nextest",
            Runner::CargoTest => "cargo-test",
        }
    }
}

/// The generated workspace and the `cargo-isolate` that runs it.
struct Workspace {
    root: PathBuf,
    target: PathBuf,
    logs: PathBuf,
    /// This workspace's `cargo-isolate`, built in release mode.
    cargo_isolate: PathBuf,
}

/// Samples of one runner.
struct Case {
    runner: Runner,
    samples: Vec<Sample>,
}

fn main() {
    let mut bench = Bench::start("suites bench", TIMEOUT);
    let scale = match std::env::var("ISOLATE_BENCH_SCALE") {
        Ok(text) => match text.parse::<f64>() {
            Ok(scale) if scale > 0.0 && scale.is_finite() => scale,
            _ => bench.fail(format_args!(
                "ISOLATE_BENCH_SCALE={text:?} is not a positive number"
            )),
        },
        Err(_) => 1.0,
    };
    let size = Size::scaled(scale);
    let target_dir = support::target_dir();
    let root = target_dir.join("isolate-bench-suites");
    bench.say(format_args!("generating {}", root.display()));
    generate(&root, size);
    let cargo_isolate = bench.build_cargo_isolate(&target_dir);
    let target = root.join("target");
    bench.build_tests(&root, &target, [(root.join("Cargo.toml"), "suite")]);
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).expect("create the log directory");
    let workspace = Workspace {
        root,
        target,
        logs,
        cargo_isolate,
    };
    let nextest = support::nextest_available();
    if !nextest {
        bench.say("`cargo nextest --version` failed; nextest is left out");
    }

    let mut cases: Vec<Case> = Runner::ALL
        .into_iter()
        .filter(|&runner| nextest || runner != Runner::Nextest)
        .map(|runner| Case {
            runner,
            samples: Vec::new(),
        })
        .collect();
    for case in &cases {
        bench.say(format_args!(
            "{}: {:?}",
            case.runner.name(),
            command(&workspace, case.runner)
        ));
    }
    for (round, measured) in support::rounds(RUNS) {
        for case in &mut cases {
            let log = workspace
                .logs
                .join(format!("{}.log", case.runner.log_name()));
            let command = command(&workspace, case.runner);
            let sample = bench.run(&round, case.runner.name(), command, &log);
            if measured {
                case.samples.push(sample);
            }
        }
    }
    report(&cases, size, scale);
    bench.finish();
}

/// Prints the table of medians and ratios, with the goals, to stdout.
fn report(cases: &[Case], size: Size, scale: f64) {
    let median_of = |runner: Runner| -> Option<Duration> {
        cases
            .iter()
            .find(|case| case.runner == runner)
            .map(|case| median_wall(&case.samples))
    };
    let measured = |runner| median_of(runner).expect("cargo isolate and cargo test are measured");
    let by_process = measured(Runner::CargoIsolate);
    let by_batch = measured(Runner::CargoIsolateBatch);
    let cargo_test = measured(Runner::CargoTest);

    println!();
    println!(
        "Suites: {} ordinary tests, {} should_panic tests and one writing {:.1} MB to stderr, \
         RUST_BACKTRACE=1, median of {RUNS} runs, {THREADS} test threads (each command's no-op \
         build check included)",
        size.ordinary,
        size.panicking,
        size.megabytes(),
    );
    if scale != 1.0 {
        println!();
        println!("Scaled by {scale}: the goals are set for the full-size suite.");
    }
    println!();
    support::comparison_header("command");
    comparison_row(
        "cargo isolate test",
        by_process,
        "cargo nextest run",
        median_of(Runner::Nextest),
        Some(0.3),
    );
    comparison_row(
        "cargo isolate test",
        by_process,
        "cargo test",
        Some(cargo_test),
        Some(2.0),
    );
    comparison_row(
        "cargo isolate test --isolation batch",
        by_batch,
        "cargo test",
        Some(cargo_test),
        Some(1.3),
    );
    if let Some(nextest) = median_of(Runner::Nextest) {
        comparison_row(
            "cargo nextest run",
            nextest,
            "cargo test",
            Some(cargo_test),
            None,
        );
    }

    println!();
    println!(
        "CPU time (user + sys) and minor page faults of each command's process tree, medians:"
    );
    println!();
    support::usage_table(
        cases
            .iter()
            .map(|case| (case.runner.name().to_owned(), &case.samples[..])),
        size.tests(),
    );
    if median_of(Runner::Nextest).is_none() {
        println!();
        println!("nextest is not installed: its columns are n/a.");
    }
}

/// Writes the generated workspace under `root`, rewriting only the files
/// whose content changed, so that a second run does not rebuild.
fn generate(root: &Path, size: Size) {
    assert!(
        HELPERS.contains(&format!("{EXPECTED_PANIC}\")")),
        "the helpers panic with the message the tests expect"
    );
    support::write_if_changed(
        &root.join("Cargo.toml"),
        "# Generated by benches/suites.rs of the isolate workspace.\n\
         [package]\nname = \"suites\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [lib]\ntest = false\ndoctest = false\n\n\
         [[test]]\nname = \"suite\"\npath = \"tests/suite.rs\"\n\n\
         [workspace]\n",
    );
    support::write_if_changed(
        &root.join("src/lib.rs"),
        "//! Empty: the tests are in `tests/suite.rs`.\n",
    );
    let mut suite = format!(
        "//! {} ordinary tests, {} `should_panic` tests and one writing {} lines to stderr, \
         generated by benches/suites.rs.\n\n{HELPERS}\n",
        size.ordinary, size.panicking, size.lines,
    );
    for index in 1..=size.ordinary {
        let n = 10 + index as u64 % 90;
        let expected = n * (n + 1) * (2 * n + 1) / 6;
        suite.push_str(&format!(
            "#[test]\nfn ordinary_{index:04}() {{\n    \
             assert_eq!(sum_of_squares(std::hint::black_box({n})), {expected});\n}}\n\n"
        ));
    }
    for index in 1..=size.panicking {
        suite.push_str(&format!(
            "#[test]\n#[should_panic(expected = \"{EXPECTED_PANIC}\")]\nfn panicking_{index:04}() {{\n    \
             parse({index});\n}}\n\n"
        ));
    }
    suite.push_str(&format!(
        "#[test]\nfn loud_stderr() {{\n    for line in 0..{lines}_u64 {{\n        \
         eprintln!(\"{LOUD_LINE}\");\n    }}\n}}\n",
        lines = size.lines,
    ));
    support::write_if_changed(&root.join("tests/suite.rs"), &suite);
}

/// The command that runs the suite with `runner`, with `RUST_BACKTRACE=1`.
fn command(workspace: &Workspace, runner: Runner) -> Command {
    let mut command = match runner {
        Runner::CargoIsolate | Runner::CargoIsolateBatch => {
            let mut command =
                support::cargo_isolate_test(&workspace.cargo_isolate, &workspace.root);
            command.args(["--test-threads", THREADS]);
            if runner == Runner::CargoIsolateBatch {
                command.args(["--isolation", "batch"]);
            }
            command
        }
        Runner::Nextest => {
            let mut command = support::cargo();
            command.args([
                "nextest",
                "run",
                "--release",
                "--offline",
                "--test-threads",
                THREADS,
            ]);
            command
        }
        Runner::CargoTest => {
            let mut command = support::cargo();
            command.args([
                "test",
                "--release",
                "--offline",
                "--",
                "--test-threads",
                THREADS,
            ]);
            command
        }
    };
    command
        .current_dir(&workspace.root)
        .env("CARGO_TARGET_DIR", &workspace.target)
        .env("RUST_BACKTRACE", "1");
    command
}
