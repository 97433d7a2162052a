//! End-to-end tests of what `cargo test` and nextest users type: each flag
//! with its meaning there, on the `selection` fixture (and the harness
//! binary of `crashy`).
//!
//! The `selection` fixture, and how each of its tests ends:
//!
//! | binary | tests | ends |
//! |---|---|---|
//! | `base` | `tests::parse_one` (prints `parsing one`), `tests::parse_two` | pass |
//! | `base` | `tests::overlap::first`, `::second` (300 ms each; log when they ran to `SELECTION_LOG`) | pass |
//! | `base` | `tests::slow_ignored` | ignored; passes |
//! | `base::api` | `passes` | pass |
//! | `base::api` | `fails_first`, `fails_second`, `fails_third` | fail |
//! | `base::api` | `ignored_passes` | ignored; passes |
//! | `base::example/demo` | `example_test` (built by `--example demo`) | pass |
//! | `base::bench/speed` | `bench_test` (built by `--bench speed`, `--benches`) | pass |
//! | `app` (depends on `base`) | `tests::parse_three` | pass |
//! | `app::flow` | `flow_passes` | pass |
//! | `tool` | `tests::tool_works` | pass |

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use support::{cargo_isolate, describe, json_events, statuses};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use some"
)]
mod support;

/// `cargo isolate ARGS` on the `selection` fixture.
fn selection(args: &[&str]) -> Output {
    cargo_isolate("selection", args)
}

/// The `binary test` lines `cargo isolate list --workspace ARGS` prints.
fn listed(args: &[&str]) -> Vec<String> {
    let mut command = vec!["list", "--workspace"];
    command.extend(args);
    let output = selection(&command);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `pairs` as the map [`statuses`] makes.
fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(test, status)| ((*test).to_owned(), (*status).to_owned()))
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts that `output` ended with exit code `code`, its stderr saying
/// `says`.
fn assert_ended(output: &Output, code: i32, says: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", describe(output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(says),
        "{}",
        describe(output)
    );
}

#[test]
fn max_fail_stops_starting_tests_after_that_many_failures() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "test",
            "-p",
            "base",
            "--test",
            "api",
            "--test-threads",
            "1",
            "--message-format",
            "json",
        ];
        args.extend(extra);
        args.push("fails");
        selection(&args)
    };
    let output = run(&["--max-fail", "1"]);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let events = json_events(&output);
    let by_status = |status: &str| {
        events
            .iter()
            .filter(|event| event["event"] == "test-finished" && event["status"] == status)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_status("failed").len(), 1, "{}", describe(&output));
    let not_run = by_status("not-run");
    assert_eq!(not_run.len(), 2, "{}", describe(&output));
    assert!(
        not_run
            .iter()
            .all(|event| event["message"]
                == "not run: a test failed and --fail-fast stopped the run"),
        "{}",
        describe(&output)
    );

    let output = run(&["--max-fail=2"]);
    let ended = statuses(&output);
    let count = |status: &str| ended.values().filter(|s| *s == status).count();
    assert_eq!(
        (count("failed"), count("not-run")),
        (2, 1),
        "{}",
        describe(&output)
    );
    assert!(
        json_events(&output)
            .iter()
            .any(|event| event["message"]
                == "not run: 2 tests failed and --max-fail stopped the run"),
        "{}",
        describe(&output)
    );

    // The last of --fail-fast and --no-fail-fast holds; `all` is no limit.
    for extra in [
        &["--fail-fast", "--no-fail-fast"][..],
        &["--max-fail", "all"],
        &[],
    ] {
        let output = run(extra);
        assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
        let ended = statuses(&output);
        assert!(
            ended.len() == 3 && ended.values().all(|status| status == "failed"),
            "{extra:?}: {}",
            describe(&output)
        );
    }
    let output = run(&["--no-fail-fast", "--fail-fast"]);
    assert_eq!(statuses(&output).len(), 3, "{}", describe(&output));
    assert!(statuses(&output).values().any(|status| status == "not-run"));
}

/// In a harness binary too, no test starts after `--max-fail` failures:
/// the harness is told how many more the run takes. (Tests already sent
/// to its fork server when the failure ends may still run: it keeps the
/// next test waiting there.)
#[test]
fn max_fail_stops_a_harness_binary_starting_tests() {
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "harnessed",
            "--test-threads",
            "1",
            "--max-fail",
            "1",
            "--message-format",
            "json",
            "--",
            "--skip",
            "hangs",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let ended = statuses(&output);
    let status = |test: &str| ended[&format!("harnessed::deaths {test}")].as_str();
    assert_eq!(ended.len(), 4, "{}", describe(&output));
    assert_eq!(
        status("dies_as_expected"),
        "passed",
        "{}",
        describe(&output)
    );
    assert_eq!(
        status("exits_zero"),
        "exited-early",
        "{}",
        describe(&output)
    );
    // `passes` may have been waiting in the fork server already.
    assert!(
        ["passed", "not-run"].contains(&status("passes")),
        "{}",
        describe(&output)
    );
    assert_eq!(status("segfault"), "not-run", "{}", describe(&output));
    assert!(
        json_events(&output)
            .iter()
            .any(|event| event["name"] == "segfault"
                && event["message"] == "not run: a test failed and --fail-fast stopped the run"),
        "{}",
        describe(&output)
    );
}

#[test]
fn run_ignored_chooses_between_ignored_and_other_tests() {
    let run = |args: &[&str]| {
        let mut command = vec!["test", "-p", "base", "--message-format", "json"];
        command.extend(args);
        let output = selection(&command);
        (output.status.code(), statuses(&output), describe(&output))
    };
    let only = expect(&[
        ("base tests::slow_ignored", "passed"),
        ("base::api ignored_passes", "passed"),
    ]);
    for args in [
        &["--run-ignored", "only"][..],
        &["--", "--ignored"],
        &["--run-ignored=only", "--", "--ignored"],
    ] {
        let (code, statuses, output) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {output}");
        assert_eq!(statuses, only, "{args:?}: {output}");
    }
    for args in [&["--run-ignored", "all"][..], &["--", "--include-ignored"]] {
        let (code, statuses, output) = run(&[&["-E", "not test(fails)"][..], args].concat());
        assert_eq!(code, Some(0), "{args:?}: {output}");
        assert_eq!(statuses.len(), 7, "{args:?}: {output}");
        assert!(
            statuses.values().all(|status| status == "passed"),
            "{args:?}: {output}"
        );
    }
    let (code, statuses, output) = run(&["--run-ignored", "default", "parse", "ignored"]);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        statuses,
        expect(&[
            ("base tests::parse_one", "passed"),
            ("base tests::parse_two", "passed"),
            ("base tests::slow_ignored", "ignored"),
            ("base::api ignored_passes", "ignored"),
        ]),
        "{output}"
    );
}

#[test]
fn no_tests_says_what_a_run_that_selects_none_does() {
    // Ignored tests do not run either.
    for selecting_none in [&["nothing_is_named_so"][..], &["slow_ignored"]] {
        let output = selection(&[&["test", "-p", "base"][..], selecting_none].concat());
        assert_ended(&output, 4, "error: no tests to run");
    }
    let output = selection(&[
        "test",
        "-p",
        "base",
        "--no-tests",
        "fail",
        "nothing_is_named_so",
    ]);
    assert_eq!(output.status.code(), Some(4), "{}", describe(&output));
    let output = selection(&[
        "test",
        "-p",
        "base",
        "--no-tests",
        "warn",
        "nothing_is_named_so",
    ]);
    assert_ended(&output, 0, "warning: no tests to run");
    let output = selection(&["test", "-p", "base", "--no-tests=pass", "-E", "none()"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("no tests to run"),
        "{}",
        describe(&output)
    );
}

#[test]
fn filtersets_select_by_test_package_binary_and_kind() {
    for (args, expected) in [
        (
            &["-E", "test(/^tests::parse_/)"][..],
            &[
                "app tests::parse_three",
                "base tests::parse_one",
                "base tests::parse_two",
            ][..],
        ),
        (&["-E", "test(=passes)"], &["base::api passes"]),
        (
            &["-E", "test(#*parse_t*)"],
            &["app tests::parse_three", "base tests::parse_two"],
        ),
        (
            &["-E", "package(app) and kind(test)"],
            &["app::flow flow_passes"],
        ),
        (
            &["-E", "binary(api) & test(~fails_) - test(/third$/)"],
            &["base::api fails_first", "base::api fails_second"],
        ),
        (
            &["-E", "binary_id(app::*) | package(tool)"],
            &["app::flow flow_passes", "tool tests::tool_works"],
        ),
        (
            &["-E", "not package(base) and not package(app)"],
            &["tool tests::tool_works"],
        ),
        (
            &["-E", "rdeps(base) - package(base)"],
            &["app tests::parse_three", "app::flow flow_passes"],
        ),
        (
            &["-E", "deps(app) and test(parse)"],
            &[
                "app tests::parse_three",
                "base tests::parse_one",
                "base tests::parse_two",
            ],
        ),
        // Several filtersets: either; with name filters: both.
        (
            &["-E", "package(tool)", "--filterset", "test(flow)"],
            &["app::flow flow_passes", "tool tests::tool_works"],
        ),
        (
            &["-E", "package(base)", "parse", "--", "passes"],
            &[
                "base tests::parse_one",
                "base tests::parse_two",
                "base::api ignored_passes (ignored)",
                "base::api passes",
            ],
        ),
        (
            &[
                "-E",
                "kind(lib) and platform(target)",
                "--",
                "--exact",
                "tests::parse_three",
            ],
            &["app tests::parse_three"],
        ),
    ] {
        assert_eq!(listed(args), expected, "{args:?}");
    }
    let output = selection(&[
        "test",
        "--workspace",
        "--message-format",
        "json",
        "-E",
        "test(parse_one) or (package(tool) and kind(lib))",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        statuses(&output),
        expect(&[
            ("base tests::parse_one", "passed"),
            ("tool tests::tool_works", "passed"),
        ])
    );
}

#[test]
fn an_invalid_filterset_is_a_usage_error_that_points_at_the_fault() {
    // On the fixture that does not build: the error comes before the build.
    let output = cargo_isolate(
        "broken",
        &["test", "-E", "test(/parse_/) and not package(slow"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "expected `)` to close the predicate, found the end\n    \
             test(/parse_/) and not package(slow\n                                  ^"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("error[E0308]"), "it built: {stderr}");
    for (expression, message) in [
        (
            "test(a) && test(b)",
            "`&&` is not an operator: write `and` or `&`",
        ),
        ("tset(a)", "unknown predicate `tset`"),
        ("test(/(/)", "invalid regex"),
    ] {
        let output = cargo_isolate("broken", &["list", "-E", expression]);
        assert_ended(&output, 2, message);
    }
}

#[test]
fn example_and_bench_targets_are_tested_as_cargo_test_tests_them() {
    for (args, expected) in [
        (
            &["--example", "demo"][..],
            &[("base::example/demo example_test", "passed")][..],
        ),
        (
            &["--bench", "speed"],
            &[("base::bench/speed bench_test", "passed")],
        ),
        // As cargo's: every target with `bench = true`, the library too.
        (
            &["--benches", "-E", "not test(overlap)"],
            &[
                ("base tests::parse_one", "passed"),
                ("base tests::parse_two", "passed"),
                ("base tests::slow_ignored", "ignored"),
                ("base::bench/speed bench_test", "passed"),
            ],
        ),
    ] {
        let output = selection(
            &[
                &["test", "-p", "base", "--message-format", "json"][..],
                args,
            ]
            .concat(),
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
        assert_eq!(statuses(&output), expect(expected), "{args:?}");
    }
}

#[test]
fn target_dir_is_where_the_tests_are_built_and_run_from() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("selection-target-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = selection(&[
        "test",
        "-p",
        "tool",
        "--message-format",
        "json",
        "--target-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        statuses(&output),
        expect(&[("tool tests::tool_works", "passed")])
    );
    let built = std::fs::read_dir(dir.join("debug/deps"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().starts_with("tool-"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(built, "nothing was built in the target directory");
}

#[test]
fn quiet_shows_only_failures_and_the_summary() {
    for quiet in [
        &["-q"][..],
        &["--quiet"],
        &["--", "-q"],
        &["--", "--format=terse"],
    ] {
        let output = selection(
            &[
                &[
                    "test",
                    "-p",
                    "base",
                    "--color",
                    "never",
                    "parse",
                    "fails_first",
                ][..],
                quiet,
            ]
            .concat(),
        );
        assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
        let text = stdout(&output);
        assert!(
            !text.contains("PASS") && !text.contains("Starting"),
            "{quiet:?}: {text}"
        );
        assert!(
            text.contains("FAIL [") && text.contains("Summary"),
            "{quiet:?}: {text}"
        );
        if quiet[0] != "--" {
            // Nor does cargo say what it builds.
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!stderr.contains("Finished"), "{quiet:?}: {stderr}");
        }
    }
}

#[test]
fn no_run_doc_and_vv_mean_what_they_mean_to_cargo_test() {
    // --no-run builds, names each executable, and runs nothing.
    let output = selection(&["test", "-p", "base", "--no-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("  Executable base (") && stderr.contains("  Executable base::api ("),
        "{}",
        describe(&output)
    );
    assert!(
        !stdout(&output).contains("Starting"),
        "{}",
        describe(&output)
    );

    // Doc-tests are cargo test's to run, and --doc says so.
    let output = selection(&["test", "--doc"]);
    assert_ended(&output, 2, "`cargo test --doc` runs them");

    // -vv is -v: a passing test's output is shown.
    let output = selection(&[
        "test",
        "-p",
        "base",
        "--lib",
        "-vv",
        "--",
        "tests::parse_one",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        stdout(&output).contains("parsing one"),
        "{}",
        describe(&output)
    );
}

#[test]
fn libtest_arguments_after_the_separator_work_for_a_plain_binary() {
    let run = |args: &[&str]| {
        let mut command = vec!["test", "-p", "base", "--lib", "--color", "never", "--"];
        command.extend(args);
        selection(&command)
    };
    // Several name filters.
    let output = run(&["parse_one", "parse_two"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        stdout(&output).matches("PASS [").count(),
        2,
        "{}",
        describe(&output)
    );

    // Output goes to the terminal as the test runs, before its verdict.
    let output = run(&["--nocapture", "--exact", "tests::parse_one"]);
    let text = stdout(&output);
    let streamed = text.find("parsing one").unwrap_or_else(|| panic!("{text}"));
    let verdict = text.find("PASS [").unwrap_or_else(|| panic!("{text}"));
    assert!(streamed < verdict, "{text}");

    // A passing test's captured output is shown.
    let output = run(&["--show-output", "--exact", "tests::parse_one"]);
    let text = stdout(&output);
    assert!(text.contains("parsing one"), "{text}");
    let output = run(&["--exact", "tests::parse_one"]);
    assert!(
        !stdout(&output).contains("parsing one"),
        "{}",
        stdout(&output)
    );

    // --list lists, as `cargo isolate list`, and runs nothing.
    let output = run(&["--list", "parse_one", "parse_two"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let list: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(
        list,
        listed(&["-p", "base", "--lib", "--", "parse_one", "parse_two"])
    );
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(!stdout(&output).contains("PASS"), "{}", describe(&output));

    // -q: no line per passing test.
    let output = run(&["-q", "parse_one"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(!stdout(&output).contains("PASS"), "{}", stdout(&output));

    // One test at a time, then two.
    for (threads, overlap) in [("--test-threads=1", false), ("--test-threads=2", true)] {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "selection-overlap-{}-{threads}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log);
        let output = support::command(
            "selection",
            &["test", "-p", "base", "--lib", "--", threads, "overlap"],
        )
        .env("SELECTION_LOG", &log)
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let mut runs: Vec<(u128, u128)> = text
            .lines()
            .map(|line| {
                let (start, end) = line.split_once(' ').unwrap();
                (start.parse().unwrap(), end.parse().unwrap())
            })
            .collect();
        runs.sort_unstable();
        assert_eq!(runs.len(), 2, "{text}");
        assert_eq!(runs[1].0 < runs[0].1, overlap, "{threads}: {text}");
    }
}

#[test]
fn libtest_arguments_after_the_separator_work_for_a_harness_binary() {
    let run = |args: &[&str]| {
        let mut command = vec![
            "test",
            "-p",
            "harnessed",
            "--color",
            "never",
            "--message-format",
            "json",
            "--",
        ];
        command.extend(args);
        cargo_isolate("crashy", &command)
    };
    let passing = expect(&[
        ("harnessed::deaths dies_as_expected", "passed"),
        ("harnessed::deaths passes", "passed"),
    ]);
    for args in [
        &["passes", "dies_as_expected"][..],
        &["--exact", "passes", "dies_as_expected"],
        &[
            "--test-threads=1",
            "--show-output",
            "passes",
            "dies_as_expected",
        ],
        &[
            "--test-threads",
            "1",
            "-q",
            "passes",
            "--skip",
            "segfault",
            "dies_as_expected",
        ],
    ] {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
        assert_eq!(statuses(&output), passing, "{args:?}");
    }
    // Without capture, the harness's own lines reach the terminal too.
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "harnessed",
            "--color",
            "never",
            "--",
            "--nocapture",
            "passes",
            "dies_as_expected",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains("test passes ... ok") || text.contains("test passes           ... ok"),
        "{text}"
    );
    assert_eq!(text.matches("PASS [").count(), 2, "{text}");
    let output = cargo_isolate(
        "crashy",
        &[
            "test",
            "-p",
            "harnessed",
            "--color",
            "never",
            "--",
            "-q",
            "passes",
            "segfault",
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let text = stdout(&output);
    assert!(!text.contains("PASS") && text.contains("CRASH ["), "{text}");
}
