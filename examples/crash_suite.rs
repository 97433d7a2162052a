//! A test suite that survives its crashes: run it with
//! `cargo run --example crash_suite`. Each test runs in its own forked
//! child; the segfault, the abort, the `exit(0)` and the hang each fail
//! alone, with their diagnosis, and the death tests pass because their
//! child dies the way they expect. (In a crate, this file would be a
//! `harness = false` test target run by `cargo test`.)

use isolate::buggy;

#[isolate_harness::test]
fn adds_up() {
    let two = std::hint::black_box(2);
    assert_eq!(two + two, 4);
}

#[isolate_harness::test]
fn dereferences_null() {
    buggy::dragons_here();
}

#[isolate_harness::test]
fn aborts() {
    buggy::abort();
}

#[isolate_harness::test]
fn exits_early_with_success() {
    buggy::exit(0);
}

#[isolate_harness::test(timeout = "500ms")]
fn hangs() {
    loop {
        std::thread::park();
    }
}

#[isolate_harness::test(expect_signal = "SIGSEGV")]
fn null_input_crashes_as_documented() {
    buggy::dragons_here();
}

#[isolate_harness::test(expect_exit = 3)]
fn fatal_error_exits_with_three() {
    buggy::exit(3);
}

#[isolate_harness::test(should_panic = "overflow")]
fn checked_arithmetic_panics() {
    let big = std::hint::black_box(u64::MAX);
    let _ = big.checked_add(1).expect("overflow");
}

isolate_harness::main!();
