//! The command line, as cargo hands it to a subcommand: `cargo isolate …`
//! runs `cargo-isolate isolate …`, so the first argument is the
//! subcommand's own name.
//!
//! Parsing makes no system calls: it only fills these structs. What they
//! mean for cargo is in [`CargoOptions::to_cargo_args`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::list::Partition;
use crate::run::Isolation;

/// Cargo's view of this binary.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", version, propagate_version = true)]
pub(crate) enum Cargo {
    /// Run every test of a workspace in its own process, so that a crash
    /// fails one test instead of the whole run.
    #[command(subcommand)]
    Isolate(Command),
}

/// The subcommands of `cargo isolate`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build the tests and run each one in a process of its own.
    ///
    /// Plain libtest tests run one process per test; binaries that use
    /// isolate-harness run once, their fork server isolating each test.
    /// A test passes only when its harness reported it passed: a test that
    /// calls exit(0) fails. Doc-tests are not run (use `cargo test --doc`).
    ///
    /// Exit status: 0 when every test passed, 100 when a test failed, 101
    /// when the build failed, 2 for a usage error, 130 when interrupted
    /// (Ctrl-C: the first stops the running tests and writes the reports,
    /// a second kills at once), 1 when the runner itself failed.
    Test(TestArgs),
    /// Build the tests and list them, one `binary test` pair per line.
    List(ListArgs),
    /// The guard process a run starts (see the `guard` module).
    #[command(hide = true)]
    Guard,
}

/// The arguments of `cargo isolate test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    #[command(flatten)]
    pub(crate) cargo: CargoOptions,
    #[command(flatten)]
    pub(crate) run: RunOptions,
    #[command(flatten)]
    pub(crate) report: ReportOptions,
    /// Run only tests whose name contains one of these strings.
    pub(crate) filters: Vec<String>,
    /// Arguments after `--`: `--exact`, `--skip NAME`, `--ignored`,
    /// `--include-ignored`, as libtest takes them.
    #[arg(last = true)]
    pub(crate) harness_args: Vec<String>,
}

/// The arguments of `cargo isolate list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) cargo: CargoOptions,
    /// List only tests whose name contains one of these strings.
    pub(crate) filters: Vec<String>,
    /// Arguments after `--`, as for `cargo isolate test`.
    #[arg(last = true)]
    pub(crate) harness_args: Vec<String>,
    /// List one shard of the tests, as `cargo isolate test --partition`.
    #[arg(long, value_name = "count:K/N|hash:K/N", value_parser = Partition::parse)]
    pub(crate) partition: Option<Partition>,
}

/// Options passed on to `cargo test --no-run`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Package selection, features and build")]
pub(crate) struct CargoOptions {
    /// Package(s) to test.
    #[arg(short, long = "package", value_name = "SPEC")]
    pub(crate) packages: Vec<String>,
    /// Test all packages in the workspace.
    #[arg(long)]
    pub(crate) workspace: bool,
    /// Exclude packages from the test.
    #[arg(long, value_name = "SPEC")]
    pub(crate) exclude: Vec<String>,
    /// Test only this package's library.
    #[arg(long)]
    pub(crate) lib: bool,
    /// Test all binaries.
    #[arg(long)]
    pub(crate) bins: bool,
    /// Test only the named binary.
    #[arg(long = "bin", value_name = "NAME")]
    pub(crate) bin: Vec<String>,
    /// Test all test targets.
    #[arg(long)]
    pub(crate) tests: bool,
    /// Test only the named test target.
    #[arg(long = "test", value_name = "NAME")]
    pub(crate) test: Vec<String>,
    /// Test all examples.
    #[arg(long)]
    pub(crate) examples: bool,
    /// Test all targets (doc-tests excepted).
    #[arg(long)]
    pub(crate) all_targets: bool,
    /// Space or comma separated list of features to activate.
    #[arg(short = 'F', long, value_name = "FEATURES")]
    pub(crate) features: Vec<String>,
    /// Activate all available features.
    #[arg(long)]
    pub(crate) all_features: bool,
    /// Do not activate the `default` feature.
    #[arg(long)]
    pub(crate) no_default_features: bool,
    /// Build in release mode.
    #[arg(short, long)]
    pub(crate) release: bool,
    /// Build with the given profile.
    #[arg(long, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// Build for the target triple.
    #[arg(long, value_name = "TRIPLE")]
    pub(crate) target: Option<String>,
    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest_path: Option<PathBuf>,
    /// Assert that `Cargo.lock` will remain unchanged.
    #[arg(long)]
    pub(crate) locked: bool,
    /// Run without accessing the network.
    #[arg(long)]
    pub(crate) offline: bool,
    /// Equivalent to both --locked and --offline.
    #[arg(long)]
    pub(crate) frozen: bool,
    /// Number of parallel build jobs.
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<u32>,
}

impl CargoOptions {
    /// The arguments for `cargo test --no-run` that these options stand for.
    pub(crate) fn to_cargo_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.to_owned());
            }
        };
        flag(self.workspace, "--workspace");
        flag(self.lib, "--lib");
        flag(self.bins, "--bins");
        flag(self.tests, "--tests");
        flag(self.examples, "--examples");
        flag(self.all_targets, "--all-targets");
        flag(self.all_features, "--all-features");
        flag(self.no_default_features, "--no-default-features");
        flag(self.release, "--release");
        flag(self.locked, "--locked");
        flag(self.offline, "--offline");
        flag(self.frozen, "--frozen");
        let lists = [
            ("--package", &self.packages),
            ("--exclude", &self.exclude),
            ("--bin", &self.bin),
            ("--test", &self.test),
            ("--features", &self.features),
        ];
        for (name, values) in lists {
            for value in values {
                args.extend([name.to_owned(), value.clone()]);
            }
        }
        let options = [
            ("--profile", self.profile.clone()),
            ("--target", self.target.clone()),
            (
                "--manifest-path",
                self.manifest_path
                    .as_ref()
                    .map(|path| path.display().to_string()),
            ),
            ("--jobs", self.jobs.map(|jobs| jobs.to_string())),
        ];
        for (name, value) in options {
            if let Some(value) = value {
                args.extend([name.to_owned(), value]);
            }
        }
        args
    }
}

/// How tests are run.
#[derive(Debug, Args)]
#[command(next_help_heading = "Running")]
pub(crate) struct RunOptions {
    /// Number of tests to run at once, across all binaries [default: the
    /// number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) test_threads: Option<u16>,
    /// Kill a test that runs longer than this (SIGTERM to its process
    /// group, SIGKILL a second later), such as `30s`, `500ms` or `2m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Stop starting tests after the first failure [default: run them all].
    #[arg(long)]
    pub(crate) fail_fast: bool,
    /// Run a failing test up to N more times; one that then passes is
    /// reported flaky.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) retries: u32,
    /// Run one shard of the tests, to spread a suite over machines:
    /// `count:K/N` takes every Nth selected test from the Kth on, `hash:K/N`
    /// the tests whose name hashes to shard K (stable as tests come and go).
    #[arg(long, value_name = "count:K/N|hash:K/N", value_parser = Partition::parse)]
    pub(crate) partition: Option<Partition>,
    /// Let tests write to the terminal as they run instead of capturing
    /// their output; runs one test at a time.
    #[arg(long)]
    pub(crate) nocapture: bool,
    /// How many libtest tests share a process. `process`: one each.
    /// `batch`: a process runs many in sequence, and when it dies the test
    /// that was running gets the crash while the rest go on in a fresh
    /// process; faster, but tests of a batch share state (statics, files
    /// left open, a heap corrupted by an earlier test). isolate-harness
    /// binaries always isolate every test.
    #[arg(long, value_enum, default_value_t = Isolation::Process)]
    pub(crate) isolation: Isolation,
}

/// Where and how results are reported.
#[derive(Debug, Args)]
#[command(next_help_heading = "Reporting")]
pub(crate) struct ReportOptions {
    /// The format of what is printed on stdout.
    #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
    pub(crate) message_format: MessageFormat,
    /// Also write a JUnit XML report to this file.
    #[arg(long, value_name = "PATH")]
    pub(crate) junit: Option<PathBuf>,
    /// Coloring of human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
    /// Show every test's captured output, not only failing ones'.
    #[arg(short, long)]
    pub(crate) verbose: bool,
}

/// The formats of `--message-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MessageFormat {
    /// Lines for people, a summary at the end.
    Human,
    /// One JSON object per line per event (see the README).
    Json,
}

/// The choices of `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// Color when stdout is a terminal.
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

/// Parses `500ms`, `30s`, `2m` or `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 30s, 500ms or 2m"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("a timeout must be longer than zero".to_owned());
    }
    Ok(duration)
}

impl Cargo {
    /// Parses the command line; on bad input, `--help` or `--version`, clap
    /// prints and exits (2 for a usage error, 0 otherwise).
    pub(crate) fn parse_args() -> Cargo {
        Cargo::parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cargo::command().debug_assert();
    }

    #[test]
    fn runs_as_a_cargo_subcommand() {
        let error = Cargo::try_parse_from(["cargo-isolate", "isolate", "--version"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayVersion);
        let error = Cargo::try_parse_from(["cargo-isolate", "test"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn cargo_options_pass_through() {
        let Cargo::Isolate(Command::Test(args)) = Cargo::try_parse_from([
            "cargo-isolate",
            "isolate",
            "test",
            "-p",
            "one",
            "--release",
            "--features",
            "a,b",
            "--manifest-path",
            "x/Cargo.toml",
            "-j",
            "3",
            "crash",
            "--",
            "--exact",
        ])
        .unwrap() else {
            panic!("not a test command");
        };
        assert_eq!(
            args.cargo.to_cargo_args(),
            [
                "--release",
                "--package",
                "one",
                "--features",
                "a,b",
                "--manifest-path",
                "x/Cargo.toml",
                "--jobs",
                "3"
            ]
        );
        assert_eq!(args.filters, ["crash"]);
        assert_eq!(args.harness_args, ["--exact"]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }
}
