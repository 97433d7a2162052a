//! The exit codes of `cargo isolate`, in one place.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every test that ran passed (or none was selected, under `--no-tests pass` or `warn`) |
//! | 1 | the runner itself failed: no scratch file could be created (before the build), a test binary could not be listed, a report could not be written, an archive could not be written, or read and unpacked (missing, damaged, of an unknown format version, lacking a binary its manifest lists, an extraction directory that cannot be written, a `--workspace-remap` that names no directory) |
//! | 2 | usage error: bad options (clap exits with this code itself) |
//! | 4 | no test was selected to run, under `--no-tests fail` (the default), as nextest |
//! | 100 | at least one test failed, crashed, timed out or exited early |
//! | 101 | the build failed |
//! | 130 | the run was interrupted (Ctrl-C or SIGTERM): the reports say how far each test got; a second interruption kills the tests and exits at once, without them |

/// Every test that ran passed.
pub(crate) const SUCCESS: i32 = 0;
/// The runner itself failed.
pub(crate) const RUNNER_FAILED: i32 = 1;
/// Bad options.
pub(crate) const USAGE: i32 = 2;
/// No test was selected to run.
pub(crate) const NO_TESTS: i32 = 4;
/// A test failed.
pub(crate) const TESTS_FAILED: i32 = 100;
/// The build failed.
pub(crate) const BUILD_FAILED: i32 = 101;
/// The run was interrupted.
pub(crate) const INTERRUPTED: i32 = 130;
