//! Compile-time tests of the attribute macros: each shape they cannot
//! handle is an error that points at it and says why, and a proxy used as
//! documented compiles and runs. The expected errors are in
//! `tests/ui/fail/*.stderr`; `TRYBUILD=overwrite` rewrites them.

#[test]
fn the_macros_refuse_what_they_cannot_handle_and_say_why() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
