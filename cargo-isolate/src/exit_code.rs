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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cargo;

    const CODES: [i32; 7] = [
        SUCCESS,
        RUNNER_FAILED,
        USAGE,
        NO_TESTS,
        TESTS_FAILED,
        BUILD_FAILED,
        INTERRUPTED,
    ];

    /// The numbers written in `text`.
    fn numbers(text: &str) -> BTreeSet<i32> {
        text.split(|c: char| !c.is_ascii_digit())
            .filter_map(|number| number.parse().ok())
            .collect()
    }

    /// The part of `text` from `start` to the first `end` after it.
    fn part<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text
            .find(start)
            .unwrap_or_else(|| panic!("{start:?} in {text}"));
        let rest = &text[from..];
        rest.find(end).map_or(rest, |to| &rest[..to])
    }

    #[test]
    fn the_table_the_help_and_the_readme_give_every_exit_code_and_no_other() {
        let codes = BTreeSet::from(CODES);
        let table: String = include_str!("exit_code.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! | "))
            .filter_map(|row| row.split(" |").next())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(numbers(&table), codes, "{table}");

        let mut cargo = Cargo::command();
        let help = cargo
            .find_subcommand_mut("isolate")
            .and_then(|isolate| isolate.find_subcommand_mut("test"))
            .expect("cargo isolate test")
            .render_long_help()
            .to_string();
        let status = part(&help, "Exit status:", "\n\n");
        assert_eq!(numbers(status), codes, "{status}");

        let readme = part(include_str!("../../README.md"), "- Exit codes:", "\n- ");
        assert_eq!(numbers(readme), codes, "{readme}");
    }
}
