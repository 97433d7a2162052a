//! End-to-end tests of the configuration file: `.config/isolate.toml`, or
//! `.config/nextest.toml` without it, or the file `--config-file` names;
//! its profiles (`-P`, `--config-profile`, `ISOLATE_PROFILE`), per-test
//! overrides, test groups and cargo isolate's own keys; that the command
//! line wins over it; and `cargo isolate show-config`.
//!
//! The `configured` fixture (`tests/fixtures/configured`) passes under
//! `cargo test` and `cargo nextest run`; what makes each of its tests end
//! otherwise:
//!
//! | binary | tests | ends |
//! |---|---|---|
//! | `scheduling`, `limits` | `serial_one`, `serial_two`; `serial_three`, `serial_four` (200 ms each) | fail if two run at once: the `serial` test group keeps them apart |
//! | `scheduling` | `threads_needs_two` (300 ms) | fails beside a `threads_companion_` test: its `threads-required = 2` keeps it alone on the profile's two threads |
//! | `scheduling` | `threads_companion_short`, `threads_companion_long` (300, 900 ms) | fail beside `threads_needs_two` |
//! | `limits` | `hangs` (ignored) | sleeps a minute: its `slow-timeout` ends it after two periods of one second |
//! | `limits` | `takes_three_seconds` | passes: the `hangs` override is not its own |
//! | `limits` | `flaky`, `flaky_retried` | fail on their first attempt when `CONFIGURED_FLAKY_DIR` names a new directory; the override of `flaky_retried` retries it once, the `ci` profile every test twice |
//! | `limits` | `hog` (256 MiB), `allocates_128_mib` | pass, but for `hog` under its 64 MiB override in `configs/isolate.toml` |
//! | `limits` | `leaves_a_process` | passes, but under `leak = "fail"` |
//! | both | `passes` | pass |
//!
//! `.config/nextest.toml` has a `default` profile (two threads, the
//! overrides, the `serial` group, the unknown key `retry`) and a `ci`
//! profile (`retries = 2`, JUnit to `junit.xml`). `configs/isolate.toml`,
//! for `--config-file`, has the keys of cargo isolate alone
//! (`memory-limit = "512MiB"` with a `64MiB` override for `hog`,
//! `leak = "fail"`, `default-timeout = "3s"`, `isolation`).
//!
//! The `serial_` tests and the `threads_` tests are each selected by one
//! test here alone: they find one another through lock files beside the
//! test binaries, and every run of these tests builds into one target
//! directory.

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use some"
)]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use support::{
    cargo_isolate, command, command_at, describe, finished, fixture, json_events, statuses,
};

/// `cargo isolate ARGS` on the `configured` fixture.
fn configured(args: &[&str]) -> Output {
    cargo_isolate("configured", args)
}

/// `cargo isolate test --message-format json ARGS` on the fixture, with
/// `CONFIGURED_FLAKY_DIR` a new directory and the variables `env`.
fn run_json(args: &[&str], env: &[(&str, &str)]) -> Output {
    let flaky = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    command(
        "configured",
        &[&["test", "--message-format", "json"][..], args].concat(),
    )
    .env("CONFIGURED_FLAKY_DIR", flaky.path())
    .envs(env.iter().copied())
    .output()
    .unwrap()
}

/// `pairs` as the map [`statuses`] makes.
fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(test, status)| ((*test).to_owned(), (*status).to_owned()))
        .collect()
}

/// The event that ended test `name` of `binary`.
fn ended<'a>(events: &'a BTreeMap<String, Value>, binary: &str, name: &str) -> &'a Value {
    events
        .get(&format!("configured::{binary} {name}"))
        .unwrap_or_else(|| panic!("no result for {binary} {name}: {events:#?}"))
}

/// How long a finished test ran, in milliseconds.
fn duration_ms(event: &Value) -> f64 {
    event["duration_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no duration: {event}"))
}

/// Checks that `hog` ended out of its memory limit, `64MiB`, as a failure
/// of its own (a crash, as the abort it ends in, will do), and returns
/// the statuses of the other tests.
fn hog_out_of_memory(output: &Output) -> BTreeMap<String, String> {
    let events = finished(output);
    let hog = ended(&events, "limits", "hog");
    assert!(
        hog["status"] == "failed" || hog["status"] == "crashed",
        "{hog}"
    );
    let message = hog["message"].as_str().unwrap();
    assert!(
        message.contains("out of memory") && message.contains("64MiB"),
        "{message}"
    );
    let mut others = statuses(output);
    others.remove("configured::limits hog");
    others
}

/// The lines of stderr that warn.
fn warnings(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains("warning:"))
        .map(str::to_owned)
        .collect()
}

/// What `show-config` printed after `key =` on each line for `key`.
fn settings(output: &Output, key: &str) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(key)?;
            Some(rest.trim_start().strip_prefix('=')?.trim().to_owned())
        })
        .collect()
}

/// Whether `show-config` printed `key` with `value` (quotes aside), and a
/// source that contains each of `words`.
fn shows(output: &Output, key: &str, value: &str, words: &[&str]) -> bool {
    settings(output, key).iter().any(|setting| {
        let shown = setting.split_whitespace().next().unwrap_or_default();
        shown.trim_matches('"') == value && words.iter().all(|word| setting.contains(word))
    })
}

/// The fixture's directory.
fn fixture_dir() -> PathBuf {
    fixture("configured").parent().unwrap().to_owned()
}

/// The target directory [`command`] builds the fixture in.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixture-configured")
}

#[test]
fn a_test_group_runs_its_tests_one_at_a_time_across_binaries() {
    let output = run_json(
        &[
            "--test-threads",
            "4",
            "-E",
            "test(/^serial_/) | test(=passes)",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        statuses(&output),
        expect(&[
            ("configured::limits passes", "passed"),
            ("configured::limits serial_four", "passed"),
            ("configured::limits serial_three", "passed"),
            ("configured::scheduling passes", "passed"),
            ("configured::scheduling serial_one", "passed"),
            ("configured::scheduling serial_two", "passed"),
        ]),
        "{}",
        describe(&output)
    );
    // Four tests of 200 ms, one after the other.
    let run = json_events(&output).pop().unwrap();
    assert_eq!(run["event"], "run-finished", "{}", describe(&output));
    assert!(
        run["duration_ms"].as_f64().unwrap() >= 800.0,
        "{}",
        describe(&output)
    );
}

#[test]
fn a_test_that_requires_every_thread_runs_alone_and_an_unknown_key_only_warns() {
    // Two threads, from the profile.
    let output = run_json(&["-E", "test(/^threads_/)"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        statuses(&output),
        expect(&[
            ("configured::scheduling threads_companion_long", "passed"),
            ("configured::scheduling threads_companion_short", "passed"),
            ("configured::scheduling threads_needs_two", "passed"),
        ]),
        "{}",
        describe(&output)
    );
    let warnings = warnings(&output);
    assert_eq!(warnings.len(), 1, "{}", describe(&output));
    assert!(
        warnings[0].contains("profile.default.retry"),
        "{}",
        describe(&output)
    );
}

#[test]
fn overrides_apply_to_the_tests_their_filter_matches_and_to_no_other() {
    let output = run_json(
        &[
            "--run-ignored",
            "all",
            "-E",
            "test(=hangs) | test(=takes_three_seconds) | test(/^flaky/)",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    assert_eq!(
        statuses(&output),
        expect(&[
            ("configured::limits flaky", "failed"),
            ("configured::limits flaky_retried", "passed"),
            ("configured::limits hangs", "timed-out"),
            ("configured::limits takes_three_seconds", "passed"),
        ]),
        "{}",
        describe(&output)
    );
    let events = finished(&output);

    // Slow after a period of one second, ended after two.
    let hangs = ended(&events, "limits", "hangs");
    assert_eq!(hangs["timeout_ms"], 2000, "{hangs}");
    // Less the slack of where each clock is read.
    assert!((1_900.0..30_000.0).contains(&duration_ms(hangs)), "{hangs}");
    assert!(
        json_events(&output)
            .iter()
            .any(|event| event["event"] == "test-slow" && event["name"] == "hangs"),
        "{}",
        describe(&output)
    );

    // Retried by its override, where the profile retries no test.
    let retried = ended(&events, "limits", "flaky_retried");
    assert_eq!(retried["attempts"], 2, "{retried}");
    assert_eq!(retried["flaky"], true, "{retried}");
    let flaky = ended(&events, "limits", "flaky");
    assert_eq!(flaky["attempts"], 1, "{flaky}");
    assert_eq!(flaky["flaky"], false, "{flaky}");
}

#[test]
fn a_profile_is_chosen_by_flag_or_environment_and_the_command_line_wins() {
    let junit = target_dir().join("isolate/ci/junit.xml");
    let flaky_in_ci = |output: &Output| {
        assert_eq!(output.status.code(), Some(0), "{}", describe(output));
        let events = finished(output);
        let flaky = ended(&events, "limits", "flaky");
        assert_eq!(flaky["status"], "passed", "{}", describe(output));
        assert_eq!(flaky["attempts"], 2, "{flaky}");
        assert_eq!(flaky["flaky"], true, "{flaky}");
        let report = std::fs::read_to_string(&junit)
            .unwrap_or_else(|error| panic!("{}: {error}", junit.display()));
        assert!(
            report.contains("name=\"configured-ci\"")
                && report.contains("<testcase name=\"flaky\"")
                && report.contains("<flakyFailure"),
            "{report}"
        );
    };
    for choice in [&["-P", "ci"][..], &["--config-profile=ci"]] {
        let _ = std::fs::remove_file(&junit);
        flaky_in_ci(&run_json(&[choice, &["-E", "test(=flaky)"]].concat(), &[]));
    }
    let _ = std::fs::remove_file(&junit);
    flaky_in_ci(&run_json(
        &["-E", "test(=flaky)"],
        &[("ISOLATE_PROFILE", "ci")],
    ));

    let output = run_json(&["-P", "ci", "--retries", "0", "-E", "test(=flaky)"], &[]);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = finished(&output);
    let flaky = ended(&events, "limits", "flaky");
    assert_eq!(flaky["status"], "failed", "{}", describe(&output));
    assert_eq!(flaky["attempts"], 1, "{}", describe(&output));
}

#[test]
fn an_unknown_profile_is_a_usage_error() {
    // A filter, for a run that would go on: it keeps away from the tests
    // other runs share files with.
    for args in [
        &["test", "-P", "no-such-profile", "-E", "test(=passes)"][..],
        &["show-config", "--config-profile", "no-such-profile"],
    ] {
        let output = configured(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("no-such-profile"),
            "{args:?}: {}",
            describe(&output)
        );
    }
    let output = command("configured", &["test", "-E", "test(=passes)"])
        .env("ISOLATE_PROFILE", "no-such-profile")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

#[test]
fn show_config_says_each_setting_and_where_it_came_from() {
    let output = configured(&["show-config", "-P", "ci"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        shows(
            &output,
            "retries",
            "2",
            &["profile.ci", ".config/nextest.toml"]
        ) && shows(
            &output,
            "test-threads",
            "2",
            &["profile.default", ".config/nextest.toml"]
        ) && settings(&output, "memory-limit")
            .iter()
            .any(|setting| setting.contains("(built-in default)")),
        "{}",
        describe(&output)
    );
    // The JUnit path, the overrides and the test group.
    let text = String::from_utf8_lossy(&output.stdout);
    for listed in [
        "junit.xml",
        "test(/^serial_/)",
        "test(=hangs)",
        "max-threads = 1",
    ] {
        assert!(text.contains(listed), "{listed}: {}", describe(&output));
    }

    let file = fixture_dir().join("configs/isolate.toml");
    let output = configured(&["show-config", "--config-file", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    for (key, value) in [
        ("isolation", "process"),
        ("memory-limit", "512MiB"),
        ("leak", "fail"),
        ("default-timeout", "3s"),
    ] {
        assert!(
            shows(
                &output,
                key,
                value,
                &["profile.default", "configs/isolate.toml"]
            ),
            "{key}: {}",
            describe(&output)
        );
    }
    // `.config/nextest.toml` is not read: none of its settings, nor its
    // unknown key.
    assert!(
        settings(&output, "retries")
            .iter()
            .all(|setting| setting.contains("(built-in default)"))
            && warnings(&output).is_empty(),
        "{}",
        describe(&output)
    );
}

#[test]
fn isolate_toml_is_read_before_nextest_toml() {
    let workspace = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = workspace.path();
    for (path, text) in [
        (
            "Cargo.toml",
            "[workspace]\n\n[package]\nname = \"both\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
        ),
        ("src/lib.rs", ""),
        (".config/nextest.toml", "[profile.default]\nretries = 1\n"),
        (".config/isolate.toml", "[profile.default]\nretries = 3\n"),
    ] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let show = || {
        let output = command_at(
            &root.join("Cargo.toml"),
            "fixture-configured",
            &["show-config"],
        )
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        output
    };
    let output = show();
    assert!(
        shows(&output, "retries", "3", &[".config/isolate.toml"])
            && !shows(&output, "retries", "1", &[]),
        "{}",
        describe(&output)
    );
    std::fs::remove_file(root.join(".config/isolate.toml")).unwrap();
    let output = show();
    assert!(
        shows(&output, "retries", "1", &[".config/nextest.toml"]),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_memory_limit_from_the_command_line_fails_the_test_that_allocates_past_it() {
    let output = run_json(
        &[
            "--memory-limit",
            "64MiB",
            "-E",
            "test(=hog) | test(=passes)",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    assert_eq!(
        hog_out_of_memory(&output),
        expect(&[
            ("configured::limits passes", "passed"),
            ("configured::scheduling passes", "passed"),
        ]),
        "{}",
        describe(&output)
    );
}

#[test]
fn the_keys_of_cargo_isolate_limit_memory_fail_leaks_and_end_every_test() {
    let file = fixture_dir().join("configs/isolate.toml");
    let output = run_json(
        &[
            "--config-file",
            file.to_str().unwrap(),
            "--run-ignored",
            "all",
            "-E",
            "test(=hog) | test(=allocates_128_mib) | test(=leaves_a_process) \
             | test(=hangs) | test(=passes)",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    // The override's limit for `hog`, the profile's for the others.
    assert_eq!(
        hog_out_of_memory(&output),
        expect(&[
            ("configured::limits allocates_128_mib", "passed"),
            ("configured::limits hangs", "timed-out"),
            ("configured::limits leaves_a_process", "failed"),
            ("configured::limits passes", "passed"),
            ("configured::scheduling passes", "passed"),
        ]),
        "{}",
        describe(&output)
    );
    let events = finished(&output);

    let leaker = ended(&events, "limits", "leaves_a_process");
    assert!(leaker["leaked"].as_u64().unwrap() >= 1, "{leaker}");

    let hangs = ended(&events, "limits", "hangs");
    assert_eq!(hangs["timeout_ms"], 3000, "{hangs}");
    assert!((2_900.0..30_000.0).contains(&duration_ms(hangs)), "{hangs}");
}
