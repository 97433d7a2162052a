//! The command line, as cargo hands it to a subcommand: `cargo isolate …`
//! runs `cargo-isolate isolate …`, so the first argument is the
//! subcommand's own name.
//!
//! Parsing makes no system calls: it only fills these structs. What they
//! mean for cargo is in [`CargoOptions::to_cargo_args`].
//!
//! Every value is checked here, so that bad input is a usage error (exit
//! code 2) before anything is built: a count or a duration that is
//! accepted is one every later stage can use as it is. A timeout is at
//! most [`MAX_TIMEOUT`], so a deadline computed from it cannot overflow.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigArgs, Leak, MemoryLimit, Profile, RetryPolicy, TestThreads};
use crate::filterset::Filterset;
use crate::list::{Partition, RunIgnored};
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
    /// Build the tests (or take them from an archive: --archive-file) and
    /// run each one in a process of its own.
    ///
    /// Plain libtest tests run one process per test; binaries that use
    /// isolate-harness run once, their fork server isolating each test.
    /// A test passes only when its harness reported it passed: a test that
    /// calls exit(0) fails. Doc-tests are not run (use `cargo test --doc`).
    ///
    /// Exit status: 0 when every test passed, 100 when a test failed, 101
    /// when the build failed, 4 when no test was selected to run (see
    /// --no-tests), 2 for a usage error, 130 when interrupted (Ctrl-C: the
    /// first stops the running tests and writes the reports, a second
    /// kills at once), 1 when the runner itself failed.
    Test(TestArgs),
    /// Build the tests and list them, one `binary test` pair per line.
    List(ListArgs),
    /// Print the settings of the configuration profile in force, each with
    /// where it came from: the file (`.config/isolate.toml`, else
    /// `.config/nextest.toml`), or the built-in default.
    ShowConfig(ShowConfigArgs),
    /// Build the tests and pack them into an archive, to run them
    /// elsewhere with `cargo isolate test --archive-file`, without cargo.
    ///
    /// The archive, a zstd-compressed tar, holds the test binaries, the
    /// shared libraries of the build they need, and a manifest of how
    /// each one is started (runner, directory, environment); the
    /// workspace's sources are not in it.
    Archive(ArchiveArgs),
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
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    pub(crate) archive: FromArchive,
    #[command(flatten)]
    pub(crate) run: RunOptions,
    #[command(flatten)]
    pub(crate) report: ReportOptions,
    #[command(flatten)]
    pub(crate) select: SelectOptions,
}

/// The arguments of `cargo isolate show-config`.
#[derive(Debug, Args)]
pub(crate) struct ShowConfigArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest_path: Option<PathBuf>,
}

/// The arguments of `cargo isolate list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) cargo: CargoOptions,
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    pub(crate) archive: FromArchive,
    #[command(flatten)]
    pub(crate) select: SelectOptions,
    /// List one shard of the tests, as `cargo isolate test --partition`.
    #[arg(long, value_name = "count:K/N|hash:K/N|slice:K/N", value_parser = Partition::parse)]
    pub(crate) partition: Option<Partition>,
    /// `human`: a line per test; `json`: one JSON object, the binaries
    /// with their packages, kinds, paths and harnesses, and the tests
    /// selected, ignored or not (see JSON.md).
    #[arg(long, value_enum, default_value_t = ListFormat::Human)]
    pub(crate) message_format: ListFormat,
}

/// The arguments of `cargo isolate archive`.
#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    #[command(flatten)]
    pub(crate) cargo: CargoOptions,
    /// The profile's `archive.include` says what else goes in.
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// The archive to write, a zstd-compressed tar (`tests.tar.zst`); an
    /// existing file is replaced once the new archive is whole.
    #[arg(long, value_name = "PATH")]
    pub(crate) archive_file: PathBuf,
}

/// The options of `cargo isolate test` and `list` that build nothing:
/// every one of [`CargoOptions`] that only a build gives a meaning to
/// conflicts with `--archive-file`.
const BUILD_ONLY: [&str; 25] = [
    "packages",
    "workspace",
    "exclude",
    "lib",
    "bins",
    "bin",
    "tests",
    "test",
    "example",
    "examples",
    "bench",
    "benches",
    "all_targets",
    "features",
    "all_features",
    "no_default_features",
    "release",
    "profile",
    "target",
    "target_dir",
    "manifest_path",
    "locked",
    "offline",
    "frozen",
    "jobs",
];

/// Where the tests come from when they are not built: an archive of
/// `cargo isolate archive`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Running from an archive")]
pub(crate) struct FromArchive {
    /// Run the tests of this archive (made by `cargo isolate archive`)
    /// instead of building them: cargo is not run. The options of a build
    /// (package and target selection, features, profile, target...) are
    /// refused with it: select tests with filters and -E, such as
    /// `-E 'package(app)'` or `-E 'binary_id(app::flow)'`.
    #[arg(long, value_name = "PATH", conflicts_with_all = BUILD_ONLY)]
    pub(crate) archive_file: Option<PathBuf>,
    /// Where the workspace's sources are now, which tests find through
    /// `CARGO_MANIFEST_DIR` and run in [default: where they were built].
    #[arg(long, value_name = "DIR", requires = "archive_file")]
    pub(crate) workspace_remap: Option<PathBuf>,
    /// Unpack the archive into this directory, and keep it [default: a
    /// temporary directory, removed at the end].
    #[arg(long, value_name = "DIR", requires = "archive_file")]
    pub(crate) extract_to: Option<PathBuf>,
}

/// Which tests run: names, filtersets, ignored tests, and what libtest
/// takes after `--`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Test selection")]
pub(crate) struct SelectOptions {
    /// Run only the tests a nextest filterset selects, such as
    /// `test(/^parse_/) and not package(slow)`: `test()`, `package()`,
    /// `deps()`, `rdeps()`, `kind()`, `binary()`, `binary_id()`,
    /// `platform()`, `all()`, `none()`, with `not`, `and`, `or`, `-` and
    /// matchers `=exact`, `~contains`, `/regex/`, `#glob`. Several are
    /// or'ed; with name filters too, a test must match both.
    #[arg(short = 'E', long = "filterset", value_name = "EXPR", value_parser = Filterset::parse)]
    pub(crate) filtersets: Vec<Filterset>,
    /// Which tests run: `default` those not marked `#[ignore]`, `only` the
    /// ignored ones, `all` both [default: default]. libtest's `--ignored`
    /// and `--include-ignored` after `--` say the same.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub(crate) run_ignored: Option<RunIgnored>,
    /// Run the tests the profile's `default-filter` leaves out too.
    #[arg(long)]
    pub(crate) ignore_default_filter: bool,
    /// Run only tests whose name contains one of these strings.
    pub(crate) filters: Vec<String>,
    /// After `--`, libtest's arguments, as `cargo test -- ARGS` takes them:
    /// name filters, `--exact`, `--skip NAME`, `--ignored`,
    /// `--include-ignored`, and `--nocapture`, `--test-threads N`,
    /// `--show-output` (as -v), `-q`, `--color WHEN`, `--format
    /// pretty|terse` for the options of the same meaning here (where both
    /// give a count or a color, the one before `--` holds), and `--list`,
    /// which lists the tests as `cargo isolate list` does.
    #[arg(last = true, value_name = "LIBTEST_ARGS")]
    pub(crate) harness_args: Vec<String>,
    /// `harness_args`, parsed (see [`Cargo::try_parse_args`]).
    #[arg(skip)]
    pub(crate) libtest: LibtestArgs,
}

impl SelectOptions {
    /// Parses the arguments after `--` of `cargo isolate SUBCOMMAND`, and
    /// checks that they agree with the options before.
    fn parse_libtest_args(&mut self, subcommand: &str) -> Result<(), clap::Error> {
        let usage_error = |kind, message: String| {
            let mut cargo = Cargo::command();
            // Built, so that its usage line names `cargo isolate SUBCOMMAND`.
            cargo.build();
            match cargo
                .find_subcommand_mut("isolate")
                .and_then(|isolate| isolate.find_subcommand_mut(subcommand))
            {
                Some(command) => command.error(kind, message),
                None => cargo.error(kind, message),
            }
        };
        self.libtest = LibtestArgs::try_parse_from(&self.harness_args).map_err(|error| {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let what = first.strip_prefix("error: ").unwrap_or(first);
            let mut message = format!("after `--`: {what}");
            if error.kind() == clap::error::ErrorKind::UnknownArgument {
                message.push_str(
                    "\n  (cargo isolate takes libtest's name filters, --exact, --skip NAME, \
                     --ignored, --include-ignored, --nocapture, --show-output, --test-threads N, \
                     -q, --color WHEN, --format pretty|terse and --list there)",
                );
            }
            usage_error(error.kind(), message)
        })?;
        if let (Some(option), Some(libtest)) = (self.run_ignored, self.libtest.run_ignored())
            && option != libtest
        {
            return Err(usage_error(
                clap::error::ErrorKind::ArgumentConflict,
                "--run-ignored says otherwise than --ignored or --include-ignored after `--`"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Which tests run, ignored or not.
    pub(crate) fn run_ignored(&self) -> RunIgnored {
        self.run_ignored
            .or(self.libtest.run_ignored())
            .unwrap_or_default()
    }
}

/// libtest's arguments, as `cargo test -- ARGS` hands them to a test
/// binary; what `cargo isolate` makes of them is in
/// [`SelectOptions::harness_args`]'s help.
#[derive(Debug, Default, Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
pub(crate) struct LibtestArgs {
    #[arg(long)]
    pub(crate) exact: bool,
    #[arg(long, value_name = "NAME")]
    pub(crate) skip: Vec<String>,
    #[arg(long, conflicts_with = "include_ignored")]
    ignored: bool,
    #[arg(long)]
    include_ignored: bool,
    #[arg(long, visible_alias = "no-capture")]
    nocapture: bool,
    #[arg(long)]
    show_output: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_TEST_THREADS))
    )]
    test_threads: Option<u16>,
    #[arg(long, value_enum, value_name = "WHEN")]
    color: Option<ColorChoice>,
    #[arg(long, value_enum)]
    format: Option<LibtestFormat>,
    #[arg(long)]
    pub(crate) list: bool,
    pub(crate) filters: Vec<String>,
}

/// The formats of libtest's `--format` that have a meaning here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LibtestFormat {
    /// A line per test: the human report.
    Pretty,
    /// Less: as -q.
    Terse,
}

impl LibtestArgs {
    /// What `--ignored` or `--include-ignored` says, if either is given.
    fn run_ignored(&self) -> Option<RunIgnored> {
        if self.ignored {
            Some(RunIgnored::Only)
        } else if self.include_ignored {
            Some(RunIgnored::All)
        } else {
            None
        }
    }
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
    /// Test only the named example.
    #[arg(long = "example", value_name = "NAME")]
    pub(crate) example: Vec<String>,
    /// Test all examples.
    #[arg(long)]
    pub(crate) examples: bool,
    /// Test only the named bench target (its #[test]s, as `cargo test
    /// --bench`).
    #[arg(long = "bench", value_name = "NAME")]
    pub(crate) bench: Vec<String>,
    /// Test all bench targets.
    #[arg(long)]
    pub(crate) benches: bool,
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
    /// Build with the given cargo profile, as `cargo test --profile` (not
    /// a profile of test-run settings, as nextest's --profile is).
    #[arg(long, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// Build for the target triple.
    #[arg(long, value_name = "TRIPLE")]
    pub(crate) target: Option<String>,
    /// Directory for all generated artifacts, as for cargo; the tests are
    /// run from there.
    #[arg(long, value_name = "DIR")]
    pub(crate) target_dir: Option<PathBuf>,
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
    /// Number of parallel build jobs, as `cargo test -j` (tests run at
    /// once are --test-threads); a negative N is the number of cores minus
    /// |N|.
    #[arg(short, long, value_name = "N", allow_negative_numbers = true, value_parser = parse_jobs)]
    pub(crate) jobs: Option<i32>,
    /// No output from cargo as it builds, and from the run only failures
    /// and the summary.
    #[arg(short, long, help_heading = "Reporting")]
    pub(crate) quiet: bool,
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
        flag(self.benches, "--benches");
        flag(self.all_targets, "--all-targets");
        flag(self.all_features, "--all-features");
        flag(self.no_default_features, "--no-default-features");
        flag(self.release, "--release");
        flag(self.locked, "--locked");
        flag(self.offline, "--offline");
        flag(self.frozen, "--frozen");
        flag(self.quiet, "--quiet");
        let lists = [
            ("--package", &self.packages),
            ("--exclude", &self.exclude),
            ("--bin", &self.bin),
            ("--test", &self.test),
            ("--example", &self.example),
            ("--bench", &self.bench),
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
                "--target-dir",
                self.target_dir
                    .as_ref()
                    .map(|path| path.display().to_string()),
            ),
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
    /// Number of tests to run at once, across all binaries, at most 1024:
    /// a count, a negative count (the cores less that many), or
    /// `num-cpus`, as nextest takes it [default: the number of cores].
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = parse_test_threads
    )]
    pub(crate) test_threads: Option<TestThreads>,
    /// Kill a test that runs longer than this (SIGTERM to its process
    /// group, SIGKILL a second later), such as `30s`, `500ms` or `2m`;
    /// longer than zero and at most a year.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Print a SLOW line for a test still running after this long, and
    /// again each time as long again has passed, as nextest does
    /// [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) slow_timeout: Option<Duration>,
    /// Kill a test once it has run N --slow-timeout periods, as nextest's
    /// `terminate-after` does: `--slow-timeout 30s --terminate-after 4`
    /// kills a test after 2 minutes, as `--timeout 2m` would (with both,
    /// the earlier limit holds).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(crate) terminate_after: Option<u32>,
    /// Start no more tests after the first failure, as --max-fail 1
    /// [default: run them all].
    #[arg(long, overrides_with = "no_fail_fast")]
    pub(crate) fail_fast: bool,
    /// Run every test whatever fails, the default: unlike `cargo test`
    /// (which stops after a failing binary) and nextest (after a failing
    /// test), since a crash here ends one test, not the run.
    #[arg(long, overrides_with = "fail_fast")]
    pub(crate) no_fail_fast: bool,
    /// Start no more tests once N have failed (`all`: no limit); the rest
    /// are reported not run. The tests of an isolate-harness binary that
    /// has started all run.
    #[arg(
        long,
        value_name = "N|all",
        value_parser = MaxFail::parse,
        conflicts_with_all = ["fail_fast", "no_fail_fast"]
    )]
    pub(crate) max_fail: Option<MaxFail>,
    /// What a run that selects no test to run does: `pass`, `warn`, or
    /// `fail` with exit code 4, as nextest.
    #[arg(long, value_enum, value_name = "pass|warn|fail", default_value_t = NoTests::Fail)]
    pub(crate) no_tests: NoTests,
    /// Run a failing test up to N more times (at most 100); one that then
    /// passes is reported flaky.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(..=i64::from(MAX_RETRIES))
    )]
    pub(crate) retries: Option<u32>,
    /// Run one shard of the tests, to spread a suite over machines, as
    /// nextest: `count:K/N` takes every Nth selected test of each binary
    /// from its Kth on, `slice:K/N` every Nth of the whole run (shards of
    /// even sizes), `hash:K/N` the tests whose binary and name hash to
    /// shard K (stable as tests come and go).
    #[arg(long, value_name = "count:K/N|hash:K/N|slice:K/N", value_parser = Partition::parse)]
    pub(crate) partition: Option<Partition>,
    /// Let tests write to the terminal as they run instead of capturing
    /// their output; runs one test at a time, as nextest.
    #[arg(long = "no-capture", visible_alias = "nocapture")]
    pub(crate) no_capture: bool,
    /// Build the tests and run none, as `cargo test --no-run`: prints
    /// each test executable.
    #[arg(long, conflicts_with = "archive_file")]
    pub(crate) no_run: bool,
    /// Doc-tests are not run here: `cargo test --doc` runs them. (Taken
    /// only to say so.)
    #[arg(long, hide = true)]
    pub(crate) doc: bool,
    /// How many libtest tests share a process. `process`: one each.
    /// `batch`: a process runs many in sequence, and when it dies the test
    /// that was running gets the crash while the rest go on in a fresh
    /// process; faster, but tests of a batch share state (statics, files
    /// left open, a heap corrupted by an earlier test), and a test's
    /// stdout and stderr are one stream. isolate-harness binaries always
    /// isolate every test [default: process].
    #[arg(long, value_enum)]
    pub(crate) isolation: Option<Isolation>,
    /// Limit the address space of each plain libtest test's process (its
    /// RLIMIT_AS, the binary and its libraries included), such as `256MiB`
    /// or `2GiB`; a test that allocates past it fails, reported out of
    /// memory. isolate-harness tests get it as their default
    /// `memory_limit`.
    #[arg(long, value_name = "SIZE", value_parser = MemoryLimit::parse)]
    pub(crate) memory_limit: Option<MemoryLimit>,
    /// What a test that leaves processes behind gets: `pass`, its verdict
    /// (they are killed and reported), or `fail` [default: pass].
    #[arg(long, value_enum, value_name = "pass|fail")]
    pub(crate) leak: Option<Leak>,
}

impl RunOptions {
    /// How many failures stop the run from starting tests, where a flag
    /// says (`Some(None)`: no limit); `None` where none does, and the
    /// profile's `fail-fast` holds.
    pub(crate) fn max_fail(&self) -> Option<Option<NonZeroU32>> {
        match (self.fail_fast, self.no_fail_fast, self.max_fail) {
            (true, _, _) => Some(Some(NonZeroU32::MIN)),
            (false, true, _) | (false, false, Some(MaxFail::All)) => Some(None),
            (false, false, Some(MaxFail::Count(count))) => Some(Some(count)),
            (false, false, None) => None,
        }
    }
}

/// `--max-fail`: how many failures end the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MaxFail {
    Count(NonZeroU32),
    All,
}

impl MaxFail {
    /// Parses `N` (at least 1) or `all`.
    fn parse(text: &str) -> Result<MaxFail, String> {
        if text == "all" {
            return Ok(MaxFail::All);
        }
        text.parse()
            .map(MaxFail::Count)
            .map_err(|_| format!("expected a count of at least 1 or `all`, not {text:?}"))
    }
}

/// The choices of `--no-tests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum NoTests {
    /// Exit 0, as `cargo test` does.
    Pass,
    /// Say so, and exit 0.
    Warn,
    /// Say so, and exit 4.
    Fail,
}

/// Where and how results are reported.
#[derive(Debug, Args)]
#[command(next_help_heading = "Reporting")]
pub(crate) struct ReportOptions {
    /// The format of what is printed on stdout.
    #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
    pub(crate) message_format: MessageFormat,
    /// Also write a JUnit XML report to this file; missing directories on
    /// its path are made, and a path that cannot be written is an error
    /// before the build.
    #[arg(long, value_name = "PATH")]
    pub(crate) junit: Option<PathBuf>,
    /// Coloring of human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
    /// Show every test's captured output, not only failing ones' (`-vv`
    /// says no more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// The formats of `--message-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MessageFormat {
    /// Lines for people, a summary at the end.
    Human,
    /// One JSON object per line per event (see JSON.md).
    Json,
    /// libtest's own JSON events, as IDEs and test collectors read them:
    /// one stream for the whole run, each test named `BINARY$NAME`.
    LibtestJson,
}

/// The formats of `cargo isolate list --message-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    /// A line per test.
    Human,
    /// One JSON object (see JSON.md).
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

/// The longest `--timeout`: a year. A test that may run longer has no
/// timeout worth the name; and the cap keeps everything computed from a
/// timeout (a deadline of `Instant::now() + timeout`, the milliseconds
/// handed to a harness binary) far from overflow.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most tests `--test-threads` runs at once. Each is a worker thread
/// here and a process group of its own; past this, a machine runs out of
/// processes long before the run gets faster.
const MAX_TEST_THREADS: u16 = 1024;

/// The most `--retries`: a test that fails a hundred times in a row is not
/// flaky, and the cap keeps attempt counts far from overflow.
pub(crate) const MAX_RETRIES: u32 = 100;

/// Parses `--test-threads`: `num-cpus`, or a count as
/// [`TestThreads::from_count`] takes it, at most [`MAX_TEST_THREADS`] either
/// way.
fn parse_test_threads(text: &str) -> Result<TestThreads, String> {
    if text == "num-cpus" {
        return Ok(TestThreads::Cores);
    }
    let expected = || format!("{}, not {text:?}", crate::config::TEST_THREADS_EXPECTED);
    let count: i64 = text.parse().map_err(|_| expected())?;
    if count.unsigned_abs() > u64::from(MAX_TEST_THREADS) {
        return Err(format!("at most {MAX_TEST_THREADS}, not {text}"));
    }
    TestThreads::from_count(count).ok_or_else(expected)
}

/// The units of a duration on the command line, largest first, in
/// milliseconds.
const DURATION_UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];

/// Parses a duration: `500ms`, `30s`, `2m`, `1h`, or parts of those in a
/// row (`1m30s`, `1m 30s`), longer than zero and at most [`MAX_TIMEOUT`].
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let too_long = || {
        format!(
            "a duration must be at most a year ({})",
            format_duration(MAX_TIMEOUT)
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("a duration may not be empty: write 30s, 500ms or 2m".to_owned());
    }
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        if number.is_empty() {
            return Err(format!("{text:?} does not start with a number"));
        }
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!("{text:?} has no unit: write 30s, 500ms or 2m"));
        }
        let (_, unit_millis) = DURATION_UNITS
            .into_iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(|| format!("unknown unit {unit:?}: use ms, s, m or h"))?;
        // A number of digits that does not fit in a u64 is too long too.
        millis = number
            .parse::<u64>()
            .ok()
            .and_then(|number| number.checked_mul(unit_millis))
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    let duration = Duration::from_millis(millis);
    if duration > MAX_TIMEOUT {
        return Err(too_long());
    }
    if duration.is_zero() {
        return Err("a duration must be longer than zero".to_owned());
    }
    Ok(duration)
}

/// Writes `duration` as `--timeout` takes it, in the largest unit that
/// holds it whole; below a millisecond is dropped.
pub(crate) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let (unit, unit_millis) = DURATION_UNITS
        .into_iter()
        .find(|(_, unit_millis)| millis.is_multiple_of(u128::from(*unit_millis)))
        .unwrap_or(("ms", 1));
    format!("{}{unit}", millis / u128::from(unit_millis))
}

/// Parses `--jobs` as cargo takes it: a count, or a negative number for
/// that many fewer than the cores; never zero.
fn parse_jobs(text: &str) -> Result<i32, String> {
    match text.parse::<i32>() {
        Ok(0) => Err("jobs may not be 0".to_owned()),
        Ok(jobs) => Ok(jobs),
        Err(error) => Err(error.to_string()),
    }
}

/// What a command that runs one test of a run again repeats of the run,
/// so that the test runs under the same conditions.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rerun {
    /// Options before the test's package and target: where the workspace
    /// is, how it is built, the time a test may take and the isolation.
    pub(crate) options: Vec<String>,
    /// Harness arguments after the test's name: `--include-ignored` when
    /// the run ran ignored tests, so that an ignored test that failed runs.
    pub(crate) harness_args: Vec<String>,
    /// Whether the run's tests came from an archive, which takes no
    /// package and target selection: the test's binary is named by a
    /// filterset instead.
    pub(crate) from_archive: bool,
}

impl TestArgs {
    /// What `cargo test -- --list` asks for: the tests these arguments
    /// select, listed as `cargo isolate list` lists them.
    pub(crate) fn into_listing(self) -> ListArgs {
        ListArgs {
            cargo: self.cargo,
            config: self.config,
            archive: self.archive,
            select: self.select,
            partition: self.run.partition,
            message_format: ListFormat::Human,
        }
    }

    /// Whether tests write to the terminal as they run: `--no-capture`,
    /// or libtest's after `--`.
    pub(crate) fn no_capture(&self) -> bool {
        self.run.no_capture || self.select.libtest.nocapture
    }

    /// Gives `profile` the settings the flags give, which beat the file's.
    pub(crate) fn apply_to(&self, profile: &mut Profile) {
        let run = &self.run;
        let libtest = self.select.libtest.test_threads;
        let threads = run
            .test_threads
            .or(libtest.map(|threads| TestThreads::Count(threads.into())));
        profile
            .test_threads
            .flag("--test-threads", threads.map(Some));
        profile
            .retries
            .flag("--retries", run.retries.map(RetryPolicy::immediate));
        let flag = match (run.slow_timeout, run.terminate_after) {
            (None, None) => None,
            (Some(_), None) => Some("--slow-timeout"),
            (None, Some(_)) => Some("--terminate-after"),
            (Some(_), Some(_)) => Some("--slow-timeout --terminate-after"),
        };
        if let Some(flag) = flag {
            let mut slow = profile.slow_timeout.value;
            slow.period = run.slow_timeout.unwrap_or(slow.period);
            slow.terminate_after = run
                .terminate_after
                .and_then(NonZeroU32::new)
                .or(slow.terminate_after);
            profile.slow_timeout.flag(flag, Some(slow));
        }
        let fail_flag = if run.fail_fast {
            "--fail-fast"
        } else if run.no_fail_fast {
            "--no-fail-fast"
        } else {
            "--max-fail"
        };
        profile.max_fail.flag(fail_flag, run.max_fail());
        profile.isolation.flag("--isolation", run.isolation);
        profile
            .memory_limit
            .flag("--memory-limit", run.memory_limit.clone().map(Some));
        profile.leak.flag("--leak", run.leak);
        profile
            .default_timeout
            .flag("--timeout", run.timeout.map(Some));
    }

    /// How many tests run at once: one without capture, so that their
    /// output does not interleave, as nextest; else the profile's
    /// `test-threads` (which `--test-threads`, or libtest's after `--`,
    /// beat), else a test per core.
    pub(crate) fn test_threads(&self, profile: &Profile, cores: usize) -> usize {
        if self.no_capture() {
            return 1;
        }
        profile
            .test_threads
            .value
            .map_or(cores, |threads| threads.resolve(cores))
            .clamp(1, usize::from(MAX_TEST_THREADS))
    }

    /// Whether the human report has only failures and the summary: `-q`,
    /// or libtest's `-q` or `--format terse` after `--`.
    pub(crate) fn quiet(&self) -> bool {
        let libtest = &self.select.libtest;
        self.cargo.quiet || libtest.quiet || libtest.format == Some(LibtestFormat::Terse)
    }

    /// Whether the report shows every test's output: `-v`, or libtest's
    /// `--show-output` after `--`.
    pub(crate) fn verbose(&self) -> bool {
        self.report.verbose > 0 || self.select.libtest.show_output
    }

    /// Whether a report shows or keeps what passing tests printed: `-v`
    /// shows it, JSON lines carry it, and a JUnit report (`--junit`, or
    /// the profile's `junit.path`) where the profile's
    /// `junit.store-success-output` is on. (Else libtest is not even asked
    /// to write it.)
    pub(crate) fn passing_output(&self, profile: &Profile) -> bool {
        let junit = self.report.junit.is_some() || profile.junit_path.value.is_some();
        self.verbose()
            || self.report.message_format == MessageFormat::Json
            || (junit && profile.junit_store_success_output.value)
    }

    /// The coloring of human output: `--color`, else libtest's after
    /// `--`.
    pub(crate) fn color(&self) -> ColorChoice {
        match (self.report.color, self.select.libtest.color) {
            (ColorChoice::Auto, Some(libtest)) => libtest,
            (color, _) => color,
        }
    }

    /// What a command rerunning one test of this run must repeat of it.
    /// The package and target selection is not repeated (the rerun names
    /// its own), nor options that do not change how a test runs (`-j`,
    /// `--locked`, the reports). The configuration is read again, so its
    /// profile is named where it is not `default`.
    pub(crate) fn rerun(&self, profile: &Profile) -> Rerun {
        let cargo = &self.cargo;
        let mut options = Vec::new();
        let archive = &self.archive;
        for (name, path) in [
            ("--archive-file", &archive.archive_file),
            ("--workspace-remap", &archive.workspace_remap),
        ] {
            if let Some(path) = path {
                options.extend([name.to_owned(), path.display().to_string()]);
            }
        }
        if let Some(path) = &cargo.manifest_path {
            options.extend(["--manifest-path".to_owned(), path.display().to_string()]);
        }
        for (on, flag) in [
            (cargo.release, "--release"),
            (cargo.all_features, "--all-features"),
            (cargo.no_default_features, "--no-default-features"),
        ] {
            if on {
                options.push(flag.to_owned());
            }
        }
        for features in &cargo.features {
            options.extend(["--features".to_owned(), features.clone()]);
        }
        for (name, value) in [("--profile", &cargo.profile), ("--target", &cargo.target)] {
            if let Some(value) = value {
                options.extend([name.to_owned(), value.clone()]);
            }
        }
        if let Some(dir) = &cargo.target_dir {
            options.extend(["--target-dir".to_owned(), dir.display().to_string()]);
        }
        if let Some(path) = &self.config.config_file {
            options.extend(["--config-file".to_owned(), path.display().to_string()]);
        }
        if profile.name != crate::config::DEFAULT_PROFILE {
            options.extend(["--config-profile".to_owned(), profile.name.clone()]);
        }
        let run = &self.run;
        if let Some(timeout) = run.timeout {
            options.extend(["--timeout".to_owned(), format_duration(timeout)]);
        }
        // The slow period ends a test only after terminate-after periods.
        if let Some(period) = run.slow_timeout
            && profile.slow_timeout.value.terminate_after.is_some()
        {
            options.extend(["--slow-timeout".to_owned(), format_duration(period)]);
        }
        if let Some(periods) = run.terminate_after {
            options.extend(["--terminate-after".to_owned(), periods.to_string()]);
        }
        let values = [
            (
                "--isolation",
                run.isolation.and_then(|value| value.to_possible_value()),
            ),
            (
                "--leak",
                run.leak.and_then(|value| value.to_possible_value()),
            ),
        ];
        for (flag, value) in values {
            if let Some(value) = value {
                options.extend([flag.to_owned(), value.get_name().to_owned()]);
            }
        }
        if let Some(limit) = &run.memory_limit {
            options.extend(["--memory-limit".to_owned(), limit.text.clone()]);
        }
        if self.select.ignore_default_filter {
            options.push("--ignore-default-filter".to_owned());
        }
        let ignored = self.select.run_ignored() != RunIgnored::Default;
        Rerun {
            options,
            harness_args: if ignored {
                vec!["--include-ignored".to_owned()]
            } else {
                Vec::new()
            },
            from_archive: archive.archive_file.is_some(),
        }
    }
}

impl Cargo {
    /// Parses the command line; on bad input, `--help` or `--version`, clap
    /// prints and exits (2 for a usage error, 0 otherwise).
    pub(crate) fn parse_args() -> Cargo {
        Cargo::try_parse_args(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// Parses `args`, the arguments after `--` included.
    fn try_parse_args(
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> Result<Cargo, clap::Error> {
        let mut cargo = Cargo::try_parse_from(args)?;
        let Cargo::Isolate(command) = &mut cargo;
        match command {
            Command::Test(args) if args.run.doc => {
                let mut cargo = Cargo::command();
                return Err(cargo.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "cargo isolate does not run doc-tests: `cargo test --doc` runs them",
                ));
            }
            Command::Test(args) => args.select.parse_libtest_args("test")?,
            Command::List(args) => args.select.parse_libtest_args("list")?,
            Command::ShowConfig(_) | Command::Archive(_) | Command::Guard => {}
        }
        Ok(cargo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let Cargo::Isolate(Command::Test(args)) = Cargo::try_parse_args([
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
        assert_eq!(args.select.filters, ["crash"]);
        assert_eq!(args.select.harness_args, ["--exact"]);
        assert!(args.select.libtest.exact);
    }

    /// The arguments of `cargo isolate test ARGS`, or clap's error.
    fn parse_test(args: &[&str]) -> Result<TestArgs, clap::Error> {
        let command = ["cargo-isolate", "isolate", "test"].iter().chain(args);
        match Cargo::try_parse_args(command)? {
            Cargo::Isolate(Command::Test(args)) => Ok(args),
            other => panic!("not a test command: {other:?}"),
        }
    }

    #[test]
    fn target_selection_and_quiet_pass_to_cargo() {
        let args = parse_test(&[
            "--example",
            "demo",
            "--bench",
            "speed",
            "--benches",
            "--target-dir",
            "out dir",
            "-q",
            "--profile",
            "bench",
            "-j",
            "1",
        ])
        .unwrap();
        // `--profile` and `-j` are cargo's: the build profile and jobs.
        assert_eq!(
            args.cargo.to_cargo_args(),
            [
                "--benches",
                "--quiet",
                "--example",
                "demo",
                "--bench",
                "speed",
                "--profile",
                "bench",
                "--target-dir",
                "out dir",
                "--jobs",
                "1"
            ]
        );
        assert!(args.quiet());
        assert_eq!(
            args.rerun(&default_profile()).options,
            ["--profile", "bench", "--target-dir", "out dir"].map(str::to_owned)
        );
    }

    #[test]
    fn libtest_s_arguments_after_the_separator_mean_what_they_mean_to_libtest() {
        let args = parse_test(&[
            "--",
            "--nocapture",
            "--test-threads=3",
            "--show-output",
            "-q",
            "--color",
            "never",
            "one",
            "two",
            "--exact",
            "--skip",
            "three",
            "--include-ignored",
        ])
        .unwrap();
        let libtest = &args.select.libtest;
        assert_eq!(libtest.filters, ["one", "two"]);
        assert!(libtest.exact);
        assert_eq!(libtest.skip, ["three"]);
        assert!(args.no_capture() && args.quiet() && args.verbose());
        // Without capture, one test at a time, whatever the count.
        assert_eq!(threads_of(&args), 1);
        assert_eq!(args.color(), ColorChoice::Never);
        assert_eq!(args.select.run_ignored(), RunIgnored::All);
        assert_eq!(
            args.rerun(&default_profile()).harness_args,
            ["--include-ignored"]
        );

        let threads = parse_test(&["--", "--test-threads", "3", "--format", "terse"]).unwrap();
        assert_eq!(threads_of(&threads), 3);
        assert!(threads.quiet());
        // Before `--`, the option holds.
        let both = parse_test(&[
            "--test-threads",
            "2",
            "--color",
            "always",
            "--",
            "--test-threads=3",
            "--color=never",
        ])
        .unwrap();
        assert_eq!((threads_of(&both), both.color()), (2, ColorChoice::Always));
        let alias = parse_test(&["--nocapture", "--", "--no-capture"]).unwrap();
        assert!(alias.no_capture());
        assert!(!parse_test(&[]).unwrap().no_capture());
    }

    /// The message of the usage error `cargo isolate test ARGS` is.
    fn usage_error(args: &[&str]) -> String {
        let error = parse_test(args).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        error.to_string()
    }

    #[test]
    fn what_libtest_would_refuse_or_cargo_isolate_cannot_do_is_a_usage_error() {
        let message = usage_error(&["--", "--frobnicate"]);
        assert!(
            message.contains(
                "after `--`: unexpected argument '--frobnicate' found\n  (cargo isolate takes libtest's"
            ),
            "{message}"
        );
        for bad in [
            &["--", "--test-threads", "0"][..],
            &["--", "--format", "json"],
            &["--", "--ignored", "--include-ignored"],
            &["--", "--skip"],
            &["--", "--logfile", "x"],
        ] {
            assert!(usage_error(bad).contains("after `--`"), "{bad:?}");
        }
        assert!(
            usage_error(&["--run-ignored", "only", "--", "--include-ignored"])
                .contains("--run-ignored says otherwise")
        );
        let agree = parse_test(&["--run-ignored", "only", "--", "--ignored"]).unwrap();
        assert_eq!(agree.select.run_ignored(), RunIgnored::Only);
        assert_eq!(
            parse_test(&[]).unwrap().select.run_ignored(),
            RunIgnored::Default
        );
    }

    #[test]
    fn failures_stop_the_run_as_max_fail_fail_fast_and_no_fail_fast_say() {
        let max_fail = |args: &[&str]| {
            parse_test(args)
                .unwrap()
                .run
                .max_fail()
                .map(|max| max.map(NonZeroU32::get))
        };
        // No flag: the profile's fail-fast holds.
        assert_eq!(max_fail(&[]), None);
        assert_eq!(max_fail(&["--fail-fast"]), Some(Some(1)));
        assert_eq!(max_fail(&["--max-fail", "3"]), Some(Some(3)));
        assert_eq!(max_fail(&["--max-fail=all"]), Some(None));
        assert_eq!(max_fail(&["--no-fail-fast"]), Some(None));
        // The last of the two switches holds, as in nextest.
        assert_eq!(max_fail(&["--no-fail-fast", "--fail-fast"]), Some(Some(1)));
        assert_eq!(max_fail(&["--fail-fast", "--no-fail-fast"]), Some(None));
        assert!(
            usage_error(&["--max-fail", "0"]).contains("expected a count of at least 1 or `all`")
        );
        assert!(usage_error(&["--max-fail", "2", "--fail-fast"]).contains("cannot be used with"));
        assert_eq!(parse_test(&[]).unwrap().run.no_tests, NoTests::Fail);
    }

    #[test]
    fn an_invalid_filterset_is_a_usage_error_that_points_at_the_fault() {
        let message = usage_error(&["-E", "test(a) and", "--filterset", "package(x)"]);
        assert!(
            message.contains(
                "expected an expression, found the end\n    test(a) and\n               ^"
            ),
            "{message}"
        );
        let args = parse_test(&["-E", "test(a)", "--filterset", "kind(lib)"]).unwrap();
        assert_eq!(args.select.filtersets.len(), 2);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("8760h"), Ok(MAX_TIMEOUT));
        for bad in [
            "5",
            "s",
            "0s",
            "0ms",
            "-1s",
            "5 fortnights",
            "1.5s",
            "8761h",
            "18446744073709551615s",
            "18446744073709551615h",
            "99999999999999999999999ms",
            "",
            "1m 30",
            "8760h 1ms",
            "1s2x",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Err("a duration must be at most a year (8760h)".to_owned())
        );
    }

    #[test]
    fn every_timeout_accepted_makes_a_deadline_and_milliseconds() {
        // What the run does with a timeout: a deadline, with a grace
        // period after it, and a count of milliseconds for a harness.
        let longest = parse_duration(&format_duration(MAX_TIMEOUT)).unwrap();
        let deadline = std::time::Instant::now().checked_add(longest);
        assert!(
            deadline
                .and_then(|deadline| deadline.checked_add(Duration::from_secs(3600)))
                .is_some()
        );
        assert!(u64::try_from(longest.as_millis()).is_ok());
    }

    #[test]
    fn durations_are_written_as_they_parse() {
        for (duration, text) in [
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (MAX_TIMEOUT, "8760h"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }

    #[test]
    fn counts_out_of_range_are_usage_errors() {
        for bad in [
            &["--test-threads", "0"][..],
            &["--test-threads", "1025"],
            &["--test-threads=-1025"],
            &["--test-threads", "many"],
            &["--retries", "101"],
            &["--retries=-1"],
            &["--retries", "18446744073709551616"],
            &["-j", "0"],
            &["-j", "99999999999"],
            &["--timeout", "0s"],
            &["--timeout", "18446744073709551615s"],
            &["--slow-timeout", "0s"],
            &["--terminate-after", "0"],
            &["--terminate-after", "4294967296"],
        ] {
            let error = parse_test(bad).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
            assert_eq!(error.exit_code(), 2);
        }
        let args = parse_test(&["--test-threads", "1024", "--retries", "100", "-j", "-2"]).unwrap();
        assert_eq!(threads_of(&args), 1024);
        // As nextest takes it, on 8 cores.
        for (threads, resolved) in [("num-cpus", 8), ("-1", 7), ("-20", 1), ("3", 3)] {
            let args = parse_test(&["--test-threads", threads]).unwrap();
            assert_eq!(threads_of(&args), resolved, "{threads}");
        }
        assert_eq!(args.run.retries, Some(100));
        assert_eq!(args.cargo.to_cargo_args(), ["--jobs", "-2"]);
    }

    #[test]
    fn a_rerun_repeats_the_run_s_conditions() {
        let args = parse_test(&[
            "--manifest-path",
            "my dir/Cargo.toml",
            "-p",
            "one",
            "--workspace",
            "--release",
            "-F",
            "a b",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--timeout",
            "90s",
            "--slow-timeout",
            "500ms",
            "--terminate-after",
            "3",
            "--isolation",
            "batch",
            "--memory-limit",
            "1GiB",
            "--retries",
            "2",
            "-j",
            "4",
            "--",
            "--include-ignored",
        ])
        .unwrap();
        let mut profile = default_profile();
        args.apply_to(&mut profile);
        assert_eq!(
            args.rerun(&profile),
            Rerun {
                options: [
                    "--manifest-path",
                    "my dir/Cargo.toml",
                    "--release",
                    "--features",
                    "a b",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                    "--timeout",
                    "90s",
                    "--slow-timeout",
                    "500ms",
                    "--terminate-after",
                    "3",
                    "--isolation",
                    "batch",
                    "--memory-limit",
                    "1GiB",
                ]
                .map(str::to_owned)
                .to_vec(),
                harness_args: vec!["--include-ignored".to_owned()],
                from_archive: false,
            }
        );
        assert_eq!(
            parse_test(&[]).unwrap().rerun(&default_profile()),
            Rerun::default()
        );
        // The slow timeout alone changes no test's end: it is not repeated.
        let slow = parse_test(&["--slow-timeout", "2s"]).unwrap();
        assert_eq!(slow.rerun(&default_profile()), Rerun::default());
        // A profile other than the default is named, to be read again.
        let mut ci = default_profile();
        ci.name = "ci".to_owned();
        assert_eq!(
            parse_test(&[]).unwrap().rerun(&ci).options,
            ["--config-profile", "ci"]
        );
    }

    fn default_profile() -> Profile {
        Profile::built_in()
    }

    /// How many tests run at once on a machine of 8 cores, with `args`.
    fn threads_of(args: &TestArgs) -> usize {
        let mut profile = default_profile();
        args.apply_to(&mut profile);
        args.test_threads(&profile, 8)
    }

    #[test]
    fn a_rerun_from_an_archive_repeats_where_the_archive_and_workspace_are() {
        let args = parse_test(&[
            "--archive-file",
            "tests.tar.zst",
            "--workspace-remap",
            ".",
            "--extract-to",
            "unpacked",
            "--timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            args.rerun(&default_profile()),
            Rerun {
                options: [
                    "--archive-file",
                    "tests.tar.zst",
                    "--workspace-remap",
                    ".",
                    "--timeout",
                    "5s"
                ]
                .map(str::to_owned)
                .to_vec(),
                harness_args: Vec::new(),
                from_archive: true,
            }
        );
        for build_only in [&["-p", "x"][..], &["--release"], &["-j", "2"], &["--lib"]] {
            let mut args = vec!["--archive-file", "tests.tar.zst"];
            args.extend(build_only);
            assert!(
                usage_error(&args).contains("cannot be used with"),
                "{args:?}"
            );
        }
        assert!(usage_error(&["--extract-to", "dir"]).contains("--archive-file"));
    }

    #[test]
    fn a_test_is_killed_at_the_earlier_of_its_limits() {
        let kill_after = |args: &[&str]| {
            let mut profile = default_profile();
            parse_test(args).unwrap().apply_to(&mut profile);
            profile.plain_settings(1, 1).limits.timeout
        };
        assert_eq!(kill_after(&[]), None);
        // Slow lines alone kill nothing.
        assert_eq!(kill_after(&["--slow-timeout", "1s"]), None);
        assert_eq!(
            kill_after(&["--terminate-after", "2"]),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            kill_after(&["--slow-timeout", "300ms", "--terminate-after", "2"]),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            kill_after(&[
                "--slow-timeout",
                "1s",
                "--terminate-after",
                "5",
                "--timeout",
                "2s"
            ]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            kill_after(&["--slow-timeout", "8760h", "--terminate-after", "4000000000"]),
            Some(MAX_TIMEOUT)
        );
        assert_eq!(
            default_profile().plain_settings(1, 1).limits.slow,
            Duration::from_secs(60)
        );
    }
}
