//! An `#[isolate_harness::test]` where libtest is the harness (a unit-test
//! module, a `[[test]]` without `harness = false`) fails there, saying
//! why, instead of compiling to nothing and passing.

use support::{clean_command, describe, fixture};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use some"
)]
mod support;

/// What the failure of each misplaced test says.
const WHY: &str = "which runs only in a test target with `harness = false`";

#[test]
fn cargo_test_fails_each_misplaced_test_saying_why() {
    let output = clean_command("cargo", "fixture-misplaced")
        .args(["test", "--offline", "--no-fail-fast", "--manifest-path"])
        .arg(fixture("misplaced"))
        .output()
        .unwrap();
    let text = describe(&output);
    assert_eq!(output.status.code(), Some(101), "{text}");
    for test in [
        "tests::in_a_unit_test_module::in_a_unit_test_module ... FAILED",
        "in_a_libtest_target::in_a_libtest_target ... FAILED",
        "tests::doubles ... ok",
    ] {
        assert!(text.contains(test), "no `{test}` in:\n{text}");
    }
    assert_eq!(text.matches(WHY).count(), 2, "{text}");
}

#[test]
fn cargo_isolate_fails_each_misplaced_test_saying_why() {
    let output = support::command("misplaced", &["test"]).output().unwrap();
    let text = describe(&output);
    assert_eq!(output.status.code(), Some(100), "{text}");
    assert!(text.contains(WHY), "{text}");
    assert!(text.contains("in_a_unit_test_module"), "{text}");
    assert!(text.contains("in_a_libtest_target"), "{text}");
}
