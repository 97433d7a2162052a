//! End-to-end tests of the environment a test runs in: the `environment`
//! fixture (`tests/fixtures/environment`), whose tests assert what `cargo
//! test` gives a test process (its package's variables, `CARGO`, the
//! working directory, the library path of a `-C prefer-dynamic` build,
//! `[env]` with `relative` and `force`, the target runner), passes under
//! `cargo test`, `cargo nextest run` and `cargo isolate test` alike; and
//! the target runner, from cargo's configuration or from
//! `CARGO_TARGET_<TRIPLE>_RUNNER`, starts every listing and every test;
//! and with no runner configured, the `-C prefer-dynamic` binaries still
//! find `libstd` through the library path cargo isolate gives them.

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use some"
)]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{clean_command, describe, fixture, json_events};

/// The fixture's tests: one in each of its binaries.
const TESTS: &[(&str, &str)] = &[
    ("environment", "tests::unit_test"),
    ("environment::harnessed", "harnessed_test"),
    ("environment::plain", "integration_test"),
];

/// The fixture's directory.
fn fixture_dir() -> PathBuf {
    fixture("environment").parent().unwrap().to_owned()
}

/// `program ARGS`, run from the fixture's directory (where cargo finds its
/// `.cargo/config.toml`) in a clean environment, with the variables its
/// tests expect of the caller, and its runner noting each command in
/// `log`.
fn in_fixture(program: impl AsRef<std::ffi::OsStr>, args: &[&str], log: &Path) -> Command {
    let mut command = clean_command(program, "fixture-environment");
    command
        .args(args)
        .current_dir(fixture_dir())
        .env("ENVIRONMENT_OVERRIDDEN", "from-caller")
        .env("ENVIRONMENT_FORCED", "from-caller")
        .env("ENVIRONMENT_RUNNER_LOG", log);
    command
}

/// The cargo that runs these tests.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A file for the runner's notes, new for each test.
fn runner_log() -> tempfile::TempPath {
    tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .into_temp_path()
}

/// `cargo isolate test ARGS` on the fixture, in JSON, checked to have
/// passed every test of the fixture.
fn cargo_isolate_passes(args: &[&str], log: &Path, env: &[(&str, &str)]) {
    let mut command = in_fixture(
        env!("CARGO_BIN_EXE_cargo-isolate"),
        &["isolate", "test", "--message-format", "json"],
        log,
    );
    command.args(args).envs(env.iter().copied());
    passes_every_test(&mut command);
}

/// Runs `command`, a `cargo isolate test` of the fixture in JSON, and
/// checks that it passed every test of the fixture.
fn passes_every_test(command: &mut Command) {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let passed: BTreeSet<(String, String)> = json_events(&output)
        .iter()
        .filter(|event| event["event"] == "test-finished")
        .map(|event| {
            assert_eq!(event["status"], "passed", "{event}\n{}", describe(&output));
            (
                event["binary"].as_str().unwrap().to_owned(),
                event["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = TESTS
        .iter()
        .map(|(binary, name)| ((*binary).to_owned(), (*name).to_owned()))
        .collect();
    assert_eq!(passed, expected, "{}", describe(&output));
}

/// What the runner noted, as (label, binary's file name without its hash,
/// whether it was a listing) for each command.
fn wrapped(log: &Path) -> BTreeSet<(String, String, bool)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            let label = words.next().unwrap().to_owned();
            let binary = Path::new(words.next().unwrap()).file_name().unwrap();
            let stem = binary.to_str().unwrap().rsplit_once('-').unwrap().0;
            (label, stem.to_owned(), line.contains(" --list"))
        })
        .collect()
}

/// Every binary of the fixture, listed and run, by the runner `label`.
fn every_binary_listed_and_run_by(label: &str) -> BTreeSet<(String, String, bool)> {
    ["environment", "harnessed", "plain"]
        .into_iter()
        .flat_map(|binary| {
            [true, false].map(|listing| (label.to_owned(), binary.to_owned(), listing))
        })
        .collect()
}

fn passes(output: &Output) {
    assert!(output.status.success(), "{}", describe(output));
}

#[test]
fn the_fixture_passes_under_cargo_test() {
    let log = runner_log();
    passes(&in_fixture(cargo(), &["test"], &log).output().unwrap());
}

#[test]
fn the_fixture_passes_under_cargo_nextest() {
    let log = runner_log();
    passes(
        &in_fixture(cargo(), &["nextest", "run"], &log)
            .output()
            .unwrap(),
    );
}

#[test]
fn the_fixture_passes_under_cargo_isolate_with_each_isolation() {
    for isolation in ["process", "batch"] {
        let log = runner_log();
        cargo_isolate_passes(&["--isolation", isolation], &log, &[]);
        assert_eq!(wrapped(&log), every_binary_listed_and_run_by("config"));
    }
}

#[test]
fn a_runner_from_the_environment_wins_over_the_configured_one() {
    let host = Command::new("rustc")
        .args(["--print", "host-tuple"])
        .output()
        .unwrap();
    let host = String::from_utf8(host.stdout).unwrap();
    let variable = format!(
        "CARGO_TARGET_{}_RUNNER",
        host.trim().to_uppercase().replace('-', "_")
    );
    let runner = format!(
        "{} environment",
        fixture_dir().join("scripts/runner.sh").display()
    );
    let log = runner_log();
    cargo_isolate_passes(
        &[],
        &log,
        &[
            (&variable, &runner),
            ("ENVIRONMENT_EXPECTED_RUNNER", "environment"),
        ],
    );
    assert_eq!(wrapped(&log), every_binary_listed_and_run_by("environment"));
}

#[test]
fn without_a_runner_a_prefer_dynamic_binary_finds_libstd() {
    // Run from a directory of its own, cargo reads its configuration
    // there: the fixture's, without the runner and with the relative
    // value made absolute.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = std::fs::read_to_string(fixture_dir().join(".cargo/config.toml")).unwrap();
    let (config, _runner) = config
        .split_once("\n[target.")
        .expect("the fixture's configuration ends with its runner");
    let data = fixture_dir().canonicalize().unwrap().join("data");
    let config = config.replace(
        "value = \"data\"",
        &format!("value = {:?}", data.to_str().unwrap()),
    );
    std::fs::create_dir(dir.path().join(".cargo")).unwrap();
    std::fs::write(dir.path().join(".cargo/config.toml"), config).unwrap();
    let log = runner_log();
    let mut command = in_fixture(
        env!("CARGO_BIN_EXE_cargo-isolate"),
        &["isolate", "test", "--message-format", "json"],
        &log,
    );
    command
        .arg("--manifest-path")
        .arg(fixture_dir().join("Cargo.toml"))
        .current_dir(dir.path())
        // Only cargo isolate may lead the tests to the toolchain's
        // libraries.
        .env_remove("LD_LIBRARY_PATH")
        .env("ENVIRONMENT_RUNNER", "none")
        .env("ENVIRONMENT_EXPECTED_RUNNER", "none");
    passes_every_test(&mut command);
    assert!(wrapped(&log).is_empty());
}
