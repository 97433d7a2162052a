//! The configuration file: `.config/isolate.toml` at the workspace's root,
//! or, where there is none, `.config/nextest.toml`, so that a project that
//! runs nextest keeps its settings (or the file `--config-file` names).
//!
//! The schema is nextest's for everything the two runners share:
//!
//! ```toml
//! [profile.default]
//! test-threads = 4                      # or "num-cpus", or -1 (cores minus one)
//! retries = 2                           # or { backoff = "exponential", count = 3, delay = "1s", jitter = true, max-delay = "10s" }
//! slow-timeout = { period = "30s", terminate-after = 4, grace-period = "5s" }
//! fail-fast = false                     # or { max-fail = 3 }
//! default-filter = 'not test(/^slow_/)' # what runs without --ignore-default-filter
//! archive.include = [{ path = "fixtures", relative-to = "target", depth = 2, on-missing = "warn" }]
//! junit = { path = "junit.xml", report-name = "suite", store-success-output = false, store-failure-output = true }
//!
//! [[profile.default.overrides]]
//! filter = 'test(/^serial_/)'           # a filterset
//! platform = 'cfg(target_os = "linux")' # or { host = "..", target = ".." }
//! test-group = "serial"
//! threads-required = 2                  # or "num-cpus", "num-test-threads"
//! retries = 3
//! slow-timeout = "2m"
//!
//! [test-groups.serial]
//! max-threads = 1                       # or "num-cpus"
//! ```
//!
//! and isolate's own keys, in a profile: `isolation` (`process`, `batch`),
//! `memory-limit` (`"256MiB"`, also per override), `leak` (`pass`: a test
//! that leaves processes behind passes, they are killed and reported;
//! `fail`: it fails), `default-timeout` (a duration: a test running longer
//! is killed, as with `--timeout`).
//!
//! A profile is picked by `-P`/`--config-profile`, else `ISOLATE_PROFILE`,
//! else `default`. It inherits, key by key, from the profile its `inherits`
//! names, or else from `default`, which inherits from the built-in
//! defaults. For one test, the first override that matches it and sets a
//! key wins, the selected profile's overrides before those it inherits;
//! then the profile's own value. Command-line flags beat the file, the
//! overrides included. A JUnit `path` is relative to
//! `<target-dir>/isolate/<profile>/`, as nextest's is to
//! `target/nextest/<profile>/`.
//!
//! A key that is not understood (a nextest key that means nothing here,
//! such as `status-level`, or a typo) is named in one warning, and the run
//! goes on: a nextest configuration works unchanged. A value of the wrong
//! form is an error that names its key. Where isolate differs from nextest
//! by default: `fail-fast` is off (a crash here ends one test, not the
//! run), and the grace period after SIGTERM is one second.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cargo_metadata::cargo_platform::{Cfg, Platform};
use serde::Deserialize;

use crate::archive::ArchiveInclude;
use crate::build::{BinaryKind, PackageGraph, TestBinary};
use crate::cli::{MAX_RETRIES, format_duration, parse_duration};
use crate::environment::RustcAnswer;
use crate::filterset::Filterset;
use crate::run::{Isolation, Limits, TestSettings};

/// Where the configuration is looked for, under the workspace's root, in
/// order.
const CONFIG_FILES: [&str; 2] = [".config/isolate.toml", ".config/nextest.toml"];

/// The profile used when none is picked.
pub(crate) const DEFAULT_PROFILE: &str = "default";

/// The variable that picks a profile when `-P` does not.
pub(crate) const PROFILE_VAR: &str = "ISOLATE_PROFILE";

/// The built-in period after which a test is reported slow.
const SLOW_PERIOD: Duration = Duration::from_secs(60);

/// The built-in time between a timed-out test's SIGTERM and its SIGKILL.
const GRACE_PERIOD: Duration = Duration::from_secs(1);

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {key}: {message}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("no profile {name:?} in {} (profiles: {known})", path.as_deref().map_or("the built-in configuration".into(), |path| path.display().to_string()))]
    NoProfile {
        name: String,
        path: Option<PathBuf>,
        known: String,
    },
    #[error("failed to find the workspace's root: {0}")]
    Workspace(String),
    #[error("failed to ask rustc what platform the tests are built for: {0}")]
    Rustc(String),
}

/// How the configuration is chosen: `-P`, `--config-file`.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Configuration")]
pub(crate) struct ConfigArgs {
    /// The profile of the configuration file to use [default: $ISOLATE_PROFILE, else default].
    #[arg(short = 'P', long, value_name = "NAME")]
    pub(crate) config_profile: Option<String>,
    /// The configuration file [default: .config/isolate.toml at the
    /// workspace's root, else .config/nextest.toml].
    #[arg(long, value_name = "PATH")]
    pub(crate) config_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// The file, as written.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default)]
    profile: BTreeMap<String, ProfileTable>,
    #[serde(default)]
    test_groups: BTreeMap<String, GroupTable>,
    /// nextest's: the nextest version the file needs; not ours to check.
    #[serde(default, rename = "nextest-version")]
    _nextest_version: Option<toml::Value>,
    /// nextest's experimental features; none of them is a setting here.
    #[serde(default, rename = "experimental")]
    _experimental: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ProfileTable {
    inherits: Option<String>,
    test_threads: Option<toml::Value>,
    retries: Option<toml::Value>,
    slow_timeout: Option<toml::Value>,
    fail_fast: Option<toml::Value>,
    threads_required: Option<toml::Value>,
    junit: Option<JunitTable>,
    #[serde(default)]
    overrides: Vec<OverrideTable>,
    default_filter: Option<String>,
    archive: Option<ArchiveTable>,
    isolation: Option<Isolation>,
    memory_limit: Option<String>,
    leak: Option<Leak>,
    default_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct JunitTable {
    path: Option<PathBuf>,
    report_name: Option<String>,
    store_success_output: Option<bool>,
    store_failure_output: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ArchiveTable {
    #[serde(default)]
    include: Vec<ArchiveInclude>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct OverrideTable {
    filter: Option<String>,
    platform: Option<toml::Value>,
    retries: Option<toml::Value>,
    slow_timeout: Option<toml::Value>,
    test_group: Option<String>,
    threads_required: Option<toml::Value>,
    memory_limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct GroupTable {
    max_threads: toml::Value,
}

// ---------------------------------------------------------------------------
// Resolved settings.

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    BuiltIn,
    /// A profile of the configuration file (its path as shown).
    File {
        profile: String,
        file: Arc<str>,
    },
    /// A command-line flag, or a variable of the environment.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built-in default"),
            Source::File { profile, file } => write!(f, "profile.{profile} in {file}"),
            Source::Flag(flag) => f.write_str(flag),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

impl<T> Setting<T> {
    fn built_in(value: T) -> Setting<T> {
        Setting {
            value,
            source: Source::BuiltIn,
        }
    }

    /// Replaces the value with a flag's, if the flag was given.
    pub(crate) fn flag(&mut self, flag: &'static str, value: Option<T>) {
        if let Some(value) = value {
            *self = Setting {
                value,
                source: Source::Flag(flag),
            };
        }
    }
}

/// How many tests run at once: `test-threads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TestThreads {
    Count(usize),
    /// The cores, less this many (at least one).
    CoresLess(usize),
    Cores,
}

impl TestThreads {
    /// A count as `test-threads` takes it: positive, that many tests at
    /// once; negative, the cores less that many; never zero.
    pub(crate) fn from_count(count: i64) -> Option<TestThreads> {
        let magnitude = usize::try_from(count.unsigned_abs()).ok()?;
        match count {
            1.. => Some(TestThreads::Count(magnitude)),
            ..0 => Some(TestThreads::CoresLess(magnitude)),
            0 => None,
        }
    }

    pub(crate) fn resolve(self, cores: usize) -> usize {
        match self {
            TestThreads::Count(count) => count,
            TestThreads::CoresLess(less) => cores.saturating_sub(less).max(1),
            TestThreads::Cores => cores,
        }
    }
}

impl fmt::Display for TestThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestThreads::Count(count) => write!(f, "{count}"),
            TestThreads::CoresLess(less) => write!(f, "-{less}"),
            TestThreads::Cores => f.write_str("\"num-cpus\""),
        }
    }
}

/// How many of the run's threads a test takes: `threads-required`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadsRequired {
    Count(usize),
    Cores,
    /// All the run's test threads: the test runs alone.
    TestThreads,
}

impl ThreadsRequired {
    /// How many of `threads` it takes, on a machine of `cores`: at least
    /// one, at most all.
    fn resolve(self, threads: usize, cores: usize) -> usize {
        let wanted = match self {
            ThreadsRequired::Count(count) => count,
            ThreadsRequired::Cores => cores,
            ThreadsRequired::TestThreads => threads,
        };
        wanted.clamp(1, threads.max(1))
    }
}

impl fmt::Display for ThreadsRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadsRequired::Count(count) => write!(f, "{count}"),
            ThreadsRequired::Cores => f.write_str("\"num-cpus\""),
            ThreadsRequired::TestThreads => f.write_str("\"num-test-threads\""),
        }
    }
}

/// How often, and after how long, a failing test runs again: `retries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct RetryPolicy {
    pub(crate) count: u32,
    pub(crate) backoff: Backoff,
}

/// The wait before a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Backoff {
    /// None: the retry runs as soon as a thread is free.
    #[default]
    None,
    Fixed {
        delay: Duration,
        jitter: bool,
    },
    /// `delay`, doubled with each retry, up to `max_delay`.
    Exponential {
        delay: Duration,
        jitter: bool,
        max_delay: Option<Duration>,
    },
}

impl RetryPolicy {
    /// The policy of `count` retries, run at once.
    pub(crate) fn immediate(count: u32) -> RetryPolicy {
        RetryPolicy {
            count,
            backoff: Backoff::None,
        }
    }

    /// The wait before retry `retry` (1 for the first). With jitter, a
    /// random part of up to half of it is taken off, so that retries of
    /// tests that failed together spread out.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let (delay, jitter) = match self.backoff {
            Backoff::None => return Duration::ZERO,
            Backoff::Fixed { delay, jitter } => (delay, jitter),
            Backoff::Exponential {
                delay,
                jitter,
                max_delay,
            } => {
                let doubled = delay.saturating_mul(1 << retry.saturating_sub(1).min(31));
                (max_delay.map_or(doubled, |max| doubled.min(max)), jitter)
            }
        };
        if !jitter {
            return delay;
        }
        // Uniform enough for spreading retries; not for anything secret.
        let random = std::collections::hash_map::RandomState::new();
        let fraction = std::hash::BuildHasher::hash_one(&random, retry) % 1000;
        delay.saturating_sub(delay / 2 * u32::try_from(fraction).unwrap_or(0) / 1000)
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count;
        match self.backoff {
            Backoff::None => write!(f, "{count}"),
            Backoff::Fixed { delay, jitter } => write!(
                f,
                "{{ backoff = \"fixed\", count = {count}, delay = \"{}\", jitter = {jitter} }}",
                format_duration(delay)
            ),
            Backoff::Exponential {
                delay,
                jitter,
                max_delay,
            } => {
                write!(
                    f,
                    "{{ backoff = \"exponential\", count = {count}, delay = \"{}\", jitter = {jitter}",
                    format_duration(delay)
                )?;
                if let Some(max) = max_delay {
                    write!(f, ", max-delay = \"{}\"", format_duration(max))?;
                }
                f.write_str(" }")
            }
        }
    }
}

/// When a test is slow, and when it is ended: `slow-timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlowTimeout {
    pub(crate) period: Duration,
    /// After how many periods the test is killed.
    pub(crate) terminate_after: Option<NonZeroU32>,
    /// Between its SIGTERM and its SIGKILL.
    pub(crate) grace_period: Duration,
}

impl Default for SlowTimeout {
    fn default() -> SlowTimeout {
        SlowTimeout {
            period: SLOW_PERIOD,
            terminate_after: None,
            grace_period: GRACE_PERIOD,
        }
    }
}

impl fmt::Display for SlowTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{ period = \"{}\"", format_duration(self.period))?;
        if let Some(periods) = self.terminate_after {
            write!(f, ", terminate-after = {periods}")?;
        }
        write!(
            f,
            ", grace-period = \"{}\" }}",
            format_duration(self.grace_period)
        )
    }
}

/// A limit on a test process's address space: `memory-limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemoryLimit {
    pub(crate) bytes: u64,
    /// As it was written, for messages.
    pub(crate) text: String,
}

impl MemoryLimit {
    /// Parses `256MiB`, `1GiB`, `512KiB`, `100MB`, `4096B` (or a bare
    /// count of bytes).
    pub(crate) fn parse(text: &str) -> Result<MemoryLimit, String> {
        let expected = || format!("expected a size such as 256MiB, 1GiB or 512KiB, not {text:?}");
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number.parse().map_err(|_| expected())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(expected()),
        };
        let bytes = number
            .checked_mul(scale)
            .filter(|bytes| *bytes > 0)
            .ok_or_else(expected)?;
        Ok(MemoryLimit {
            bytes,
            text: trimmed.to_owned(),
        })
    }
}

/// What a test that leaves processes behind gets: `leak`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Leak {
    /// Its verdict: the processes are killed and reported.
    #[default]
    Pass,
    /// A failure, whatever else it did.
    Fail,
}

/// A platform an override is for: `platform`.
#[derive(Clone, Debug)]
struct PlatformSpec {
    host: Option<Platform>,
    target: Option<Platform>,
}

/// The settings an override gives the tests it matches.
#[derive(Clone, Debug)]
pub(crate) struct Override {
    filter: Option<(String, Filterset)>,
    platform: Option<(String, PlatformSpec)>,
    retries: Option<RetryPolicy>,
    slow_timeout: Option<SlowTimeout>,
    test_group: Option<Arc<str>>,
    threads_required: Option<ThreadsRequired>,
    memory_limit: Option<MemoryLimit>,
    source: Source,
}

/// The platforms the tests are built for, as overrides' `platform` asks.
#[derive(Debug, Default)]
pub(crate) struct Platforms {
    host: Option<(String, Vec<Cfg>)>,
    target: Option<(String, Vec<Cfg>)>,
}

/// The profile in force: every setting, and where it came from.
#[derive(Debug)]
pub(crate) struct Profile {
    pub(crate) name: String,
    /// What picked it: `-P`, `ISOLATE_PROFILE`, or nothing.
    pub(crate) picked_by: Source,
    /// The file read, as shown.
    pub(crate) file: Option<Arc<str>>,
    /// `None`: a test per core.
    pub(crate) test_threads: Setting<Option<TestThreads>>,
    pub(crate) retries: Setting<RetryPolicy>,
    pub(crate) slow_timeout: Setting<SlowTimeout>,
    pub(crate) max_fail: Setting<Option<NonZeroU32>>,
    pub(crate) threads_required: Setting<ThreadsRequired>,
    /// The tests that run unless `--ignore-default-filter`: those it
    /// matches (with its text).
    pub(crate) default_filter: Setting<Option<(String, Filterset)>>,
    /// What `cargo isolate archive` packs besides the binaries.
    pub(crate) archive_include: Setting<Vec<ArchiveInclude>>,
    pub(crate) junit_path: Setting<Option<PathBuf>>,
    pub(crate) junit_report_name: Setting<String>,
    pub(crate) junit_store_success_output: Setting<bool>,
    pub(crate) junit_store_failure_output: Setting<bool>,
    pub(crate) isolation: Setting<Isolation>,
    pub(crate) memory_limit: Setting<Option<MemoryLimit>>,
    pub(crate) leak: Setting<Leak>,
    pub(crate) default_timeout: Setting<Option<Duration>>,
    /// The selected profile's overrides, then those it inherits.
    pub(crate) overrides: Vec<Override>,
    /// `[test-groups]`: each group's most tests at once.
    pub(crate) test_groups: BTreeMap<Arc<str>, TestThreads>,
    /// Keys of the file that were not understood, by their dotted path.
    pub(crate) unknown_keys: Vec<String>,
}

/// The root of the workspace of the package at `manifest_path` (else of
/// the current directory's), where the configuration is looked for.
///
/// Found as cargo finds it, without starting cargo (which would cost each
/// run some tens of milliseconds): the nearest manifest at or above the
/// start, then, unless it holds a `[workspace]` itself, the nearest
/// manifest above it with a `[workspace]` that does not `exclude` it. A
/// package that names its workspace (`package.workspace`) is asked of
/// `cargo locate-project`.
pub(crate) fn workspace_root(manifest_path: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let start = match manifest_path {
        Some(path) => std::path::absolute(path)
            .map_err(|error| ConfigError::Workspace(error.to_string()))?
            .parent()
            .map_or_else(PathBuf::new, Path::to_owned),
        None => {
            std::env::current_dir().map_err(|error| ConfigError::Workspace(error.to_string()))?
        }
    };
    let manifest = |dir: &Path| -> Option<toml::Table> {
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        text.parse().ok()
    };
    let Some((package_dir, package)) = start
        .ancestors()
        .find_map(|dir| manifest(dir).map(|table| (dir.to_owned(), table)))
    else {
        return locate_project(manifest_path);
    };
    if package.contains_key("workspace") {
        return Ok(package_dir);
    }
    let names_its_workspace = package
        .get("package")
        .and_then(|table| table.get("workspace"))
        .is_some();
    if names_its_workspace {
        return locate_project(manifest_path);
    }
    for dir in package_dir.ancestors().skip(1) {
        let Some(workspace) = manifest(dir).and_then(|mut table| table.remove("workspace")) else {
            continue;
        };
        let excluded = workspace
            .get("exclude")
            .and_then(toml::Value::as_array)
            .is_some_and(|excluded| {
                excluded
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .any(|path| package_dir.starts_with(dir.join(path)))
            });
        return Ok(if excluded {
            package_dir
        } else {
            dir.to_owned()
        });
    }
    Ok(package_dir)
}

/// The workspace's root, as `cargo locate-project --workspace` says.
fn locate_project(manifest_path: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let mut command = Command::new(crate::build::cargo_path());
    command.args(["locate-project", "--workspace", "--message-format", "plain"]);
    if let Some(path) = manifest_path {
        command.arg("--manifest-path").arg(path);
    }
    let output = command
        .output()
        .map_err(|error| ConfigError::Workspace(error.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(ConfigError::Workspace(stderr.trim().to_owned()));
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned))
}

/// Loads the profile `args` picks, from the file of the workspace rooted
/// at `root` (or the one `args` names).
pub(crate) fn load(root: &Path, args: &ConfigArgs) -> Result<Profile, ConfigError> {
    let path = match &args.config_file {
        Some(path) => Some(path.clone()),
        None => CONFIG_FILES
            .iter()
            .map(|name| root.join(name))
            .find(|path| path.is_file()),
    };
    let (file, shown, unknown_keys) = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let (file, unknown) = parse_file(&text).map_err(|message| ConfigError::Parse {
                path: path.clone(),
                message,
            })?;
            let shown = path
                .strip_prefix(root)
                .unwrap_or(path)
                .display()
                .to_string();
            (file, Some(Arc::from(shown)), unknown)
        }
        None => (ConfigFile::default(), None, Vec::new()),
    };
    let from_env = || {
        std::env::var(PROFILE_VAR)
            .ok()
            .filter(|name| !name.is_empty())
    };
    let (name, picked_by) = match (&args.config_profile, from_env()) {
        (Some(name), _) => (name.clone(), Source::Flag("--config-profile")),
        (None, Some(name)) => (name, Source::Flag(PROFILE_VAR)),
        (None, None) => (DEFAULT_PROFILE.to_owned(), Source::BuiltIn),
    };
    let mut profile = resolve(&file, &name, shown, path.as_deref())?;
    profile.picked_by = picked_by;
    profile.unknown_keys.splice(0..0, unknown_keys);
    Ok(profile)
}

/// Parses a configuration file, and lists the keys it did not understand.
fn parse_file(text: &str) -> Result<(ConfigFile, Vec<String>), String> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| error.to_string())?;
    let mut unknown = Vec::new();
    // An optional table's keys come with a `?` for the `Some` between.
    let file = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(path.to_string().replace(".?", ""));
    })
    .map_err(|error: toml::de::Error| error.to_string())?;
    Ok((file, unknown))
}

/// The profiles `name` inherits from, itself first, `default` last.
fn chain<'a>(
    file: &'a ConfigFile,
    name: &str,
    path: Option<&Path>,
) -> Result<Vec<(&'a str, &'a ProfileTable)>, ConfigError> {
    let mut chain: Vec<(&str, &ProfileTable)> = Vec::new();
    let mut next = Some(name.to_owned());
    while let Some(current) = next {
        let Some((key, table)) = file.profile.get_key_value(&current) else {
            if current == DEFAULT_PROFILE {
                break;
            }
            return Err(ConfigError::NoProfile {
                name: current,
                path: path.map(Path::to_owned),
                known: std::iter::once(DEFAULT_PROFILE)
                    .chain(
                        file.profile
                            .keys()
                            .map(String::as_str)
                            .filter(|known| *known != DEFAULT_PROFILE),
                    )
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if chain.iter().any(|(seen, _)| *seen == key) {
            return Err(value_error(
                path,
                format!("profile.{current}.inherits"),
                "profiles inherit from each other in a circle".to_owned(),
            ));
        }
        chain.push((key, table));
        next = match (&table.inherits, current.as_str()) {
            (Some(parent), _) => Some(parent.clone()),
            (None, DEFAULT_PROFILE) => None,
            (None, _) => Some(DEFAULT_PROFILE.to_owned()),
        };
    }
    Ok(chain)
}

fn value_error(path: Option<&Path>, key: String, message: String) -> ConfigError {
    ConfigError::Value {
        path: path.map_or_else(PathBuf::new, Path::to_owned),
        key,
        message,
    }
}

/// Resolves profile `name` of `file`.
fn resolve(
    file: &ConfigFile,
    name: &str,
    shown: Option<Arc<str>>,
    path: Option<&Path>,
) -> Result<Profile, ConfigError> {
    let chain = chain(file, name, path)?;
    let source = |profile: &str| Source::File {
        profile: profile.to_owned(),
        file: shown.clone().unwrap_or_else(|| Arc::from("")),
    };
    let error = |key: String, message: String| value_error(path, key, message);
    let mut unknown_keys = Vec::new();
    let test_threads = first_set(
        &chain,
        "test-threads",
        None,
        |table| table.test_threads.as_ref(),
        &mut |value, _| test_threads(value).map(Some),
        &source,
        &error,
    )?;
    let retries = first_set(
        &chain,
        "retries",
        RetryPolicy::default(),
        |table| table.retries.as_ref(),
        &mut |value, key| retry_policy(value, key, &mut unknown_keys),
        &source,
        &error,
    )?;
    let max_fail = first_set(
        &chain,
        "fail-fast",
        None,
        |table| table.fail_fast.as_ref(),
        &mut |value, key| fail_fast(value, key, &mut unknown_keys),
        &source,
        &error,
    )?;
    let slow_timeout = first_set(
        &chain,
        "slow-timeout",
        SlowTimeout::default(),
        |table| table.slow_timeout.as_ref(),
        &mut |value, key| slow_timeout(value, key, &mut unknown_keys),
        &source,
        &error,
    )?;
    let threads_required = first_set(
        &chain,
        "threads-required",
        ThreadsRequired::Count(1),
        |table| table.threads_required.as_ref(),
        &mut |value, _| threads_required(value),
        &source,
        &error,
    )?;
    let isolation = first_set(
        &chain,
        "isolation",
        Isolation::Process,
        |table| table.isolation.as_ref(),
        &mut |value, _| Ok(*value),
        &source,
        &error,
    )?;
    let leak = first_set(
        &chain,
        "leak",
        Leak::Pass,
        |table| table.leak.as_ref(),
        &mut |value, _| Ok(*value),
        &source,
        &error,
    )?;
    let memory_limit = first_set(
        &chain,
        "memory-limit",
        None,
        |table| table.memory_limit.as_deref(),
        &mut |value, _| MemoryLimit::parse(value).map(Some),
        &source,
        &error,
    )?;
    let default_timeout = first_set(
        &chain,
        "default-timeout",
        None,
        |table| table.default_timeout.as_deref(),
        &mut |value, _| parse_duration(value).map(Some),
        &source,
        &error,
    )?;
    let default_filter = first_set(
        &chain,
        "default-filter",
        None,
        |table| table.default_filter.as_deref(),
        &mut |text: &str, _| {
            Filterset::parse(text)
                .map(|filterset| Some((text.to_owned(), filterset)))
                .map_err(|error| error.to_string())
        },
        &source,
        &error,
    )?;
    let archive_include = first_set(
        &chain,
        "archive.include",
        Vec::new(),
        |table| table.archive.as_ref(),
        &mut |archive: &ArchiveTable, _| Ok(archive.include.clone()),
        &source,
        &error,
    )?;
    fn junit(table: &ProfileTable) -> Option<&JunitTable> {
        table.junit.as_ref()
    }
    let junit_path = first_set(
        &chain,
        "junit.path",
        None,
        |table| junit(table)?.path.as_deref(),
        &mut |value: &Path, _| Ok(Some(value.to_owned())),
        &source,
        &error,
    )?;
    let junit_report_name = first_set(
        &chain,
        "junit.report-name",
        "cargo-isolate".to_owned(),
        |table| junit(table)?.report_name.as_deref(),
        &mut |value: &str, _| Ok(value.to_owned()),
        &source,
        &error,
    )?;
    let flag = |key, default, field: fn(&JunitTable) -> Option<bool>| {
        first_set(
            &chain,
            key,
            default,
            |table| junit(table).and_then(|junit| field(junit).map(|_| junit)),
            &mut |junit, _| Ok(field(junit).unwrap_or(default)),
            &source,
            &error,
        )
    };
    let junit_store_success_output = flag("junit.store-success-output", false, |junit| {
        junit.store_success_output
    })?;
    let junit_store_failure_output = flag("junit.store-failure-output", true, |junit| {
        junit.store_failure_output
    })?;
    let mut overrides = Vec::new();
    for (profile, table) in &chain {
        for (index, table) in table.overrides.iter().enumerate() {
            let key = |name: &str| format!("profile.{profile}.overrides.{index}.{name}");
            overrides.push(
                resolve_override(table, key, source(profile), &mut unknown_keys)
                    .map_err(|(key, message)| error(key, message))?,
            );
        }
    }
    let mut test_groups = BTreeMap::new();
    for (group, table) in &file.test_groups {
        let key = format!("test-groups.{group}.max-threads");
        if group.starts_with('@') || group.is_empty() {
            return Err(error(
                key,
                format!("{group:?} is not a group's name: a name may not be empty or start with @"),
            ));
        }
        let max = self::test_threads(&table.max_threads).map_err(|message| error(key, message))?;
        test_groups.insert(Arc::from(group.as_str()), max);
    }
    for (index, over) in overrides.iter().enumerate() {
        if let Some(group) = &over.test_group
            && !test_groups.contains_key(group)
        {
            return Err(error(
                format!("override {} ({}): test-group", index + 1, over.source),
                format!("no group {group:?} in [test-groups]"),
            ));
        }
    }
    Ok(Profile {
        name: name.to_owned(),
        picked_by: Source::BuiltIn,
        file: shown,
        test_threads,
        retries,
        slow_timeout,
        max_fail,
        threads_required,
        default_filter,
        archive_include,
        junit_path,
        junit_report_name,
        junit_store_success_output,
        junit_store_failure_output,
        isolation,
        memory_limit,
        leak,
        default_timeout,
        overrides,
        test_groups,
        unknown_keys,
    })
}

/// The value of `key` from the first profile of `chain` whose `field` is
/// set, converted by `convert` (given the key's dotted path), else
/// `default`; a conversion's error names the key.
fn first_set<V: ?Sized, T>(
    chain: &[(&str, &ProfileTable)],
    key: &str,
    default: T,
    field: impl Fn(&ProfileTable) -> Option<&V>,
    convert: &mut dyn FnMut(&V, &str) -> Result<T, String>,
    source: &impl Fn(&str) -> Source,
    error: &impl Fn(String, String) -> ConfigError,
) -> Result<Setting<T>, ConfigError> {
    for (profile, table) in chain {
        if let Some(value) = field(table) {
            let key = format!("profile.{profile}.{key}");
            return match convert(value, &key) {
                Ok(value) => Ok(Setting {
                    value,
                    source: source(profile),
                }),
                Err(message) => Err(error(key, message)),
            };
        }
    }
    Ok(Setting::built_in(default))
}

fn resolve_override(
    table: &OverrideTable,
    key: impl Fn(&str) -> String,
    source: Source,
    unknown_keys: &mut Vec<String>,
) -> Result<Override, (String, String)> {
    let filter = table
        .filter
        .as_ref()
        .map(|text| {
            Filterset::parse(text)
                .map(|filterset| (text.clone(), filterset))
                .map_err(|error| (key("filter"), error.to_string()))
        })
        .transpose()?;
    let platform = table
        .platform
        .as_ref()
        .map(|value| platform_spec(value).map_err(|message| (key("platform"), message)))
        .transpose()?;
    if filter.is_none() && platform.is_none() {
        return Err((
            key("filter"),
            "an override needs a filter, a platform or both".to_owned(),
        ));
    }
    let retries = table
        .retries
        .as_ref()
        .map(|value| retry_policy(value, &key("retries"), unknown_keys))
        .transpose()
        .map_err(|message| (key("retries"), message))?;
    let slow = table
        .slow_timeout
        .as_ref()
        .map(|value| slow_timeout(value, &key("slow-timeout"), unknown_keys))
        .transpose()
        .map_err(|message| (key("slow-timeout"), message))?;
    let threads_required = table
        .threads_required
        .as_ref()
        .map(threads_required)
        .transpose()
        .map_err(|message| (key("threads-required"), message))?;
    let memory_limit = table
        .memory_limit
        .as_deref()
        .map(MemoryLimit::parse)
        .transpose()
        .map_err(|message| (key("memory-limit"), message))?;
    Ok(Override {
        filter,
        platform,
        retries,
        slow_timeout: slow,
        test_group: table.test_group.as_deref().map(Arc::from),
        threads_required,
        memory_limit,
        source,
    })
}

// ---------------------------------------------------------------------------
// Values of more than one form.

/// `value`, for a message that says it is not what was expected.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Datetime(datetime) => datetime.to_string(),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

fn test_threads(value: &toml::Value) -> Result<TestThreads, String> {
    match value {
        toml::Value::Integer(count) if let Some(threads) = TestThreads::from_count(*count) => {
            Ok(threads)
        }
        toml::Value::String(text) if text == "num-cpus" => Ok(TestThreads::Cores),
        other => Err(format!("{TEST_THREADS_EXPECTED}, not {}", shown(other))),
    }
}

/// What `test-threads` and `--test-threads` take.
pub(crate) const TEST_THREADS_EXPECTED: &str =
    "expected a count (negative: the cores less that many) or \"num-cpus\"";

fn threads_required(value: &toml::Value) -> Result<ThreadsRequired, String> {
    match value {
        toml::Value::Integer(count) if *count > 0 => usize::try_from(*count)
            .map(ThreadsRequired::Count)
            .map_err(|error| error.to_string()),
        toml::Value::String(text) if text == "num-cpus" => Ok(ThreadsRequired::Cores),
        toml::Value::String(text) if text == "num-test-threads" => Ok(ThreadsRequired::TestThreads),
        other => Err(format!(
            "expected a count of at least 1, \"num-cpus\" or \"num-test-threads\", not {}",
            shown(other)
        )),
    }
}

/// The keys of `table`, each taken once by `take`, and those left over
/// noted as not understood (under `key`).
struct Table<'a> {
    table: &'a toml::map::Map<String, toml::Value>,
    taken: Vec<&'static str>,
}

impl<'a> Table<'a> {
    fn new(table: &'a toml::map::Map<String, toml::Value>) -> Table<'a> {
        Table {
            table,
            taken: Vec::new(),
        }
    }

    fn take(&mut self, name: &'static str) -> Option<&'a toml::Value> {
        self.taken.push(name);
        self.table.get(name)
    }

    fn duration(&mut self, name: &'static str) -> Result<Option<Duration>, String> {
        self.take(name)
            .map(|value| match value {
                toml::Value::String(text) => {
                    parse_duration(text).map_err(|message| format!("{name}: {message}"))
                }
                other => Err(format!(
                    "{name}: expected a duration such as \"30s\", not {}",
                    shown(other)
                )),
            })
            .transpose()
    }

    fn finish(self, key: &str, unknown_keys: &mut Vec<String>) {
        unknown_keys.extend(
            self.table
                .keys()
                .filter(|name| !self.taken.contains(&name.as_str()))
                .map(|name| format!("{key}.{name}")),
        );
    }
}

fn retry_policy(
    value: &toml::Value,
    key: &str,
    unknown_keys: &mut Vec<String>,
) -> Result<RetryPolicy, String> {
    let count = |value: &toml::Value| match value {
        toml::Value::Integer(count) if (0..=i64::from(MAX_RETRIES)).contains(count) => {
            Ok(u32::try_from(*count).unwrap_or(MAX_RETRIES))
        }
        other => Err(format!(
            "expected a count from 0 to {MAX_RETRIES}, not {}",
            shown(other)
        )),
    };
    let toml::Value::Table(table) = value else {
        return count(value).map(RetryPolicy::immediate);
    };
    let mut table = Table::new(table);
    let retries = table
        .take("count")
        .map(count)
        .transpose()?
        .ok_or("a retry policy needs a count")?;
    let delay = table.duration("delay")?;
    let jitter = match table.take("jitter") {
        None => false,
        Some(toml::Value::Boolean(jitter)) => *jitter,
        Some(other) => {
            return Err(format!(
                "jitter: expected true or false, not {}",
                shown(other)
            ));
        }
    };
    let backoff = match table.take("backoff").and_then(toml::Value::as_str) {
        Some("fixed") => Backoff::Fixed {
            delay: delay.unwrap_or_default(),
            jitter,
        },
        Some("exponential") => Backoff::Exponential {
            delay: delay.ok_or("an exponential backoff needs a delay")?,
            jitter,
            max_delay: table.duration("max-delay")?,
        },
        _ => return Err("backoff: expected \"fixed\" or \"exponential\"".to_owned()),
    };
    table.finish(key, unknown_keys);
    Ok(RetryPolicy {
        count: retries,
        backoff,
    })
}

fn slow_timeout(
    value: &toml::Value,
    key: &str,
    unknown_keys: &mut Vec<String>,
) -> Result<SlowTimeout, String> {
    let table = match value {
        toml::Value::String(text) => {
            return parse_duration(text).map(|period| SlowTimeout {
                period,
                ..SlowTimeout::default()
            });
        }
        toml::Value::Table(table) => table,
        other => {
            return Err(format!(
                "expected a duration such as \"60s\" or {{ period = \"60s\", terminate-after = 2 }}, not {}",
                shown(other)
            ));
        }
    };
    let mut table = Table::new(table);
    let period = table
        .duration("period")?
        .ok_or("a slow-timeout needs a period")?;
    let terminate_after = match table.take("terminate-after") {
        None => None,
        Some(toml::Value::Integer(periods)) => Some(
            u32::try_from(*periods)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    format!("terminate-after: expected a count of at least 1, not {periods}")
                })?,
        ),
        Some(other) => {
            return Err(format!(
                "terminate-after: expected a count, not {}",
                shown(other)
            ));
        }
    };
    let grace_period = table.duration("grace-period")?.unwrap_or(GRACE_PERIOD);
    table.finish(key, unknown_keys);
    Ok(SlowTimeout {
        period,
        terminate_after,
        grace_period,
    })
}

fn fail_fast(
    value: &toml::Value,
    key: &str,
    unknown_keys: &mut Vec<String>,
) -> Result<Option<NonZeroU32>, String> {
    match value {
        toml::Value::Boolean(true) => Ok(Some(NonZeroU32::MIN)),
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::Table(table) => {
            let mut table = Table::new(table);
            let max = match table.take("max-fail") {
                None => None,
                Some(toml::Value::String(all)) if all == "all" => None,
                Some(toml::Value::Integer(count)) => Some(
                    u32::try_from(*count)
                        .ok()
                        .and_then(NonZeroU32::new)
                        .ok_or_else(|| {
                            format!(
                                "max-fail: expected a count of at least 1 or \"all\", not {count}"
                            )
                        })?,
                ),
                Some(other) => {
                    return Err(format!(
                        "max-fail: expected a count or \"all\", not {}",
                        shown(other)
                    ));
                }
            };
            // How a run stops after its last allowed failure: here the
            // running tests always finish.
            table.take("terminate");
            table.finish(key, unknown_keys);
            Ok(max)
        }
        other => Err(format!(
            "expected true, false or {{ max-fail = N }}, not {}",
            shown(other)
        )),
    }
}

fn platform_spec(value: &toml::Value) -> Result<(String, PlatformSpec), String> {
    let parse = |text: &str| {
        text.parse::<Platform>()
            .map_err(|error| format!("{text:?}: {error}"))
    };
    match value {
        toml::Value::String(text) => Ok((
            text.clone(),
            PlatformSpec {
                host: None,
                target: Some(parse(text)?),
            },
        )),
        toml::Value::Table(table) => {
            let get = |name: &str| match table.get(name) {
                None => Ok(None),
                Some(toml::Value::String(text)) => parse(text).map(Some),
                Some(other) => Err(format!(
                    "{name}: expected a triple or cfg(..), not {}",
                    shown(other)
                )),
            };
            Ok((
                format!(
                    "{{ {} }}",
                    table
                        .iter()
                        .map(|(key, value)| format!("{key} = {}", shown(value)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                PlatformSpec {
                    host: get("host")?,
                    target: get("target")?,
                },
            ))
        }
        other => Err(format!(
            "expected a triple, a cfg(..) expression or {{ host = .., target = .. }}, not {}",
            shown(other)
        )),
    }
}

// ---------------------------------------------------------------------------
// Per test.

impl Profile {
    /// The built-in profile, as if there were no configuration file.
    #[cfg(test)]
    pub(crate) fn built_in() -> Profile {
        resolve(&ConfigFile::default(), DEFAULT_PROFILE, None, None)
            .expect("the built-in profile resolves")
    }

    /// Whether an override names a platform, so that the platforms must be
    /// known (see [`Platforms::ask_rustc`]).
    pub(crate) fn needs_platforms(&self) -> bool {
        self.overrides.iter().any(|over| over.platform.is_some())
    }

    /// The most tests of `group` that run at once, of `threads`.
    pub(crate) fn group_limit(&self, group: &str, threads: usize, cores: usize) -> usize {
        self.test_groups
            .get(group)
            .map_or(threads, |max| max.resolve(cores).max(1))
    }

    /// What test `name` of `binary` runs with: the first matching
    /// override's value of each key, else the profile's; then the kill
    /// timeout, the earlier of `default-timeout` and `terminate-after`
    /// periods.
    pub(crate) fn settings(
        &self,
        binary: &TestBinary,
        name: &str,
        graph: &PackageGraph,
        platforms: &Platforms,
        threads: usize,
        cores: usize,
    ) -> TestSettings {
        let mut retries = None;
        let mut slow = None;
        let mut group = None;
        let mut required = None;
        let mut memory_limit = None;
        for over in &self.overrides {
            let matches = over
                .filter
                .as_ref()
                .is_none_or(|(_, filter)| filter.matches(binary, name, graph))
                && over
                    .platform
                    .as_ref()
                    .is_none_or(|(_, spec)| platforms.matches(spec, binary.kind));
            if !matches {
                continue;
            }
            retries = retries.or(over.retries);
            slow = slow.or(over.slow_timeout);
            group = group.or_else(|| over.test_group.clone());
            required = required.or(over.threads_required);
            memory_limit = memory_limit.or_else(|| over.memory_limit.clone());
        }
        self.finish(
            flag_first(&self.retries, retries),
            flag_first(&self.slow_timeout, slow),
            group,
            flag_first(&self.threads_required, required).resolve(threads, cores),
            flag_first(&self.memory_limit, memory_limit.map(Some)),
        )
    }

    /// The settings of a test that no override matches.
    pub(crate) fn plain_settings(&self, threads: usize, cores: usize) -> TestSettings {
        self.finish(
            self.retries.value,
            self.slow_timeout.value,
            None,
            self.threads_required.value.resolve(threads, cores),
            self.memory_limit.value.clone(),
        )
    }

    fn finish(
        &self,
        retries: RetryPolicy,
        slow: SlowTimeout,
        group: Option<Arc<str>>,
        threads_required: usize,
        memory_limit: Option<MemoryLimit>,
    ) -> TestSettings {
        let periods = slow.terminate_after.map(|periods| {
            slow.period
                .saturating_mul(periods.get())
                .min(crate::cli::MAX_TIMEOUT)
        });
        let timeout = match (self.default_timeout.value, periods) {
            (Some(timeout), Some(periods)) => Some(timeout.min(periods)),
            (timeout, periods) => timeout.or(periods),
        };
        TestSettings {
            retries,
            limits: Limits {
                slow: slow.period,
                timeout,
                grace: slow.grace_period,
            },
            group,
            threads_required,
            memory_limit,
        }
    }

    /// The settings, one per line, each with its source: what
    /// `cargo isolate show-config` prints.
    pub(crate) fn describe(&self) -> String {
        let file = self.file.as_deref().unwrap_or("none");
        let mut lines = vec![format!(
            "profile = {:?}    ({}; configuration: {file})",
            self.name, self.picked_by
        )];
        let mut line = |key: &str, value: String, source: &Source| {
            lines.push(format!("{key} = {value}    ({source})"));
        };
        line(
            "test-threads",
            self.test_threads
                .value
                .map_or_else(|| "\"num-cpus\"".to_owned(), |threads| threads.to_string()),
            &self.test_threads.source,
        );
        line(
            "retries",
            self.retries.value.to_string(),
            &self.retries.source,
        );
        line(
            "slow-timeout",
            self.slow_timeout.value.to_string(),
            &self.slow_timeout.source,
        );
        line(
            "fail-fast",
            match self.max_fail.value {
                None => "false".to_owned(),
                Some(max) if max == NonZeroU32::MIN => "true".to_owned(),
                Some(max) => format!("{{ max-fail = {max} }}"),
            },
            &self.max_fail.source,
        );
        line(
            "threads-required",
            self.threads_required.value.to_string(),
            &self.threads_required.source,
        );
        line(
            "default-filter",
            self.default_filter
                .value
                .as_ref()
                .map_or_else(|| "\"all()\"".to_owned(), |(text, _)| format!("{text:?}")),
            &self.default_filter.source,
        );
        line(
            "junit.path",
            self.junit_path.value.as_ref().map_or_else(
                || "none".to_owned(),
                |path| format!("{:?}", path.display().to_string()),
            ),
            &self.junit_path.source,
        );
        line(
            "junit.report-name",
            format!("{:?}", self.junit_report_name.value),
            &self.junit_report_name.source,
        );
        line(
            "junit.store-success-output",
            self.junit_store_success_output.value.to_string(),
            &self.junit_store_success_output.source,
        );
        line(
            "junit.store-failure-output",
            self.junit_store_failure_output.value.to_string(),
            &self.junit_store_failure_output.source,
        );
        line(
            "isolation",
            format!("\"{:?}\"", self.isolation.value).to_lowercase(),
            &self.isolation.source,
        );
        line(
            "memory-limit",
            self.memory_limit
                .value
                .as_ref()
                .map_or_else(|| "none".to_owned(), |limit| format!("{:?}", limit.text)),
            &self.memory_limit.source,
        );
        line(
            "leak",
            format!("\"{:?}\"", self.leak.value).to_lowercase(),
            &self.leak.source,
        );
        line(
            "default-timeout",
            self.default_timeout.value.map_or_else(
                || "none".to_owned(),
                |timeout| format!("{:?}", format_duration(timeout)),
            ),
            &self.default_timeout.source,
        );
        line(
            "archive.include",
            format!(
                "[{}]",
                self.archive_include
                    .value
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &self.archive_include.source,
        );
        for (index, over) in self.overrides.iter().enumerate() {
            let mut when = Vec::new();
            if let Some((text, _)) = &over.filter {
                when.push(format!("filter = {text:?}"));
            }
            if let Some((text, _)) = &over.platform {
                when.push(format!("platform = {text}"));
            }
            let mut sets = Vec::new();
            if let Some(retries) = over.retries {
                sets.push(format!("retries = {retries}"));
            }
            if let Some(slow) = over.slow_timeout {
                sets.push(format!("slow-timeout = {slow}"));
            }
            if let Some(group) = &over.test_group {
                sets.push(format!("test-group = {group:?}"));
            }
            if let Some(required) = over.threads_required {
                sets.push(format!("threads-required = {required}"));
            }
            if let Some(limit) = &over.memory_limit {
                sets.push(format!("memory-limit = {:?}", limit.text));
            }
            lines.push(format!(
                "override {} = {{ {} }}: {}    ({})",
                index + 1,
                when.join(", "),
                sets.join(", "),
                over.source
            ));
        }
        for (group, max) in &self.test_groups {
            lines.push(format!(
                "test-groups.{group}.max-threads = {max}    (in {file})"
            ));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// The setting's value where a flag gave it, else the override's, else
/// the profile's.
fn flag_first<T: Clone>(setting: &Setting<T>, from_override: Option<T>) -> T {
    match (&setting.source, from_override) {
        (Source::Flag(_), _) | (_, None) => setting.value.clone(),
        (_, Some(value)) => value,
    }
}

impl Platforms {
    /// Asks rustc (`rustc`, for `target`, `None` for the host) for the
    /// triples and `cfg` of the host and the target, as the cargo test
    /// environment asks it (see [`RustcAnswer`]).
    pub(crate) fn ask_rustc(
        rustc: &std::ffi::OsStr,
        target: Option<&str>,
    ) -> Result<Platforms, ConfigError> {
        let ask = |target| {
            RustcAnswer::ask(rustc, target)
                .map(|answer| (answer.triple, answer.cfg))
                .map_err(|error| ConfigError::Rustc(error.to_string()))
        };
        let host = ask(None)?;
        let target = match target {
            Some(target) => ask(Some(target))?,
            None => host.clone(),
        };
        Ok(Platforms {
            host: Some(host),
            target: Some(target),
        })
    }

    /// Whether a binary of `kind` runs on a platform `spec` names: a
    /// proc-macro's tests run on the host, the others on the target.
    fn matches(&self, spec: &PlatformSpec, kind: BinaryKind) -> bool {
        let check = |platform: &Option<Platform>, on: &Option<(String, Vec<Cfg>)>| {
            platform.as_ref().is_none_or(|platform| {
                on.as_ref()
                    .is_some_and(|(triple, cfg)| platform.matches(triple, cfg))
            })
        };
        let on = if kind == BinaryKind::ProcMacro {
            &self.host
        } else {
            &self.target
        };
        check(&spec.host, &self.host) && check(&spec.target, on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(text: &str, name: &str) -> Result<Profile, ConfigError> {
        let (file, unknown) = parse_file(text).map_err(|message| ConfigError::Parse {
            path: PathBuf::from("nextest.toml"),
            message,
        })?;
        let mut profile = resolve(&file, name, Some(Arc::from("nextest.toml")), None)?;
        profile.unknown_keys.splice(0..0, unknown);
        Ok(profile)
    }

    const NEXTEST: &str = r#"
        nextest-version = "0.9.60"

        [profile.default]
        retries = 1
        slow-timeout = { period = "30s", terminate-after = 4 }
        status-level = "all"

        [profile.default.junit]
        report-name = "everything"

        [[profile.default.overrides]]
        filter = 'test(/^serial_/)'
        test-group = "serial"

        [profile.ci]
        retries = { backoff = "exponential", count = 3, delay = "1s", max-delay = "3s", jitter = false }
        fail-fast = { max-fail = 5 }
        test-threads = -1
        memory-limit = "64MiB"

        [profile.ci.junit]
        path = "junit.xml"

        [profile.ci.archive]
        include = [{ path = "data", relative-to = "target", recursive = true }]

        [[profile.ci.overrides]]
        filter = 'test(slow)'
        slow-timeout = "2m"
        retries = 0
        no-such-key = 1

        [test-groups.serial]
        max-threads = 1
    "#;

    #[test]
    fn a_profile_inherits_from_default_key_by_key() {
        let ci = profile(NEXTEST, "ci").unwrap();
        assert_eq!(ci.retries.value.count, 3);
        assert_eq!(ci.retries.value.delay(1), Duration::from_secs(1));
        assert_eq!(ci.retries.value.delay(2), Duration::from_secs(2));
        assert_eq!(ci.retries.value.delay(5), Duration::from_secs(3));
        assert_eq!(ci.slow_timeout.value.period, Duration::from_secs(30));
        assert_eq!(
            ci.slow_timeout.source.to_string(),
            "profile.default in nextest.toml"
        );
        assert_eq!(ci.max_fail.value, NonZeroU32::new(5));
        assert_eq!(ci.test_threads.value, Some(TestThreads::CoresLess(1)));
        assert_eq!(ci.junit_report_name.value, "everything");
        assert_eq!(ci.junit_path.value, Some(PathBuf::from("junit.xml")));
        assert_eq!(ci.archive_include.value.len(), 1);
        assert_eq!(
            ci.memory_limit.value.map(|limit| limit.bytes),
            Some(64 << 20)
        );
        // Its own overrides first, then default's.
        assert_eq!(ci.overrides.len(), 2);
        assert_eq!(
            ci.unknown_keys,
            [
                "profile.ci.archive.include.0.recursive",
                "profile.ci.overrides.0.no-such-key",
                "profile.default.status-level"
            ]
        );
        let default = profile(NEXTEST, "default").unwrap();
        assert_eq!(default.retries.value, RetryPolicy::immediate(1));
        assert_eq!(default.junit_path.value, None);
        assert_eq!(default.overrides.len(), 1);
    }

    #[test]
    fn bad_values_name_their_key_and_an_unknown_profile_lists_the_known() {
        let bad = [
            ("[profile.default]\nretries = -1", "profile.default.retries"),
            (
                "[profile.default]\ntest-threads = 0",
                "profile.default.test-threads",
            ),
            (
                "[profile.default]\nslow-timeout = { period = \"soon\" }",
                "profile.default.slow-timeout",
            ),
            (
                "[[profile.default.overrides]]\nfilter = 'test('",
                "profile.default.overrides.0.filter",
            ),
            (
                "[[profile.default.overrides]]\nfilter = 'all()'\ntest-group = \"nope\"",
                "test-group",
            ),
            (
                "[profile.a]\ninherits = \"b\"\n[profile.b]\ninherits = \"a\"",
                "inherits",
            ),
        ];
        for (text, key) in bad {
            let name = if text.contains("profile.a") {
                "a"
            } else {
                "default"
            };
            let error = profile(text, name).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
        let error = profile(NEXTEST, "nightly").unwrap_err().to_string();
        assert!(
            error.contains("\"nightly\"") && error.contains("default, ci"),
            "{error}"
        );
        assert!(profile("[profile", "default").is_err());
        // No file, and no profile in it: the built-in defaults.
        assert_eq!(profile("", "default").unwrap().retries.value.count, 0);
    }

    #[test]
    fn a_flag_beats_the_file_and_its_overrides() {
        let mut ci = profile(NEXTEST, "ci").unwrap();
        let binary = TestBinary::for_tests("app", "suite", BinaryKind::Test);
        let graph = PackageGraph::default();
        let platforms = Platforms::default();
        let slow = ci.settings(&binary, "slow_one", &graph, &platforms, 4, 4);
        assert_eq!(slow.retries.count, 0);
        assert_eq!(slow.limits.slow, Duration::from_secs(120));
        let serial = ci.settings(&binary, "serial_one", &graph, &platforms, 4, 4);
        assert_eq!(serial.group.as_deref(), Some("serial"));
        assert_eq!(serial.retries.count, 3);
        // Four periods of 30 s.
        assert_eq!(serial.limits.timeout, Some(Duration::from_secs(120)));
        ci.retries
            .flag("--retries", Some(RetryPolicy::immediate(7)));
        let slow = ci.settings(&binary, "slow_one", &graph, &platforms, 4, 4);
        assert_eq!(slow.retries.count, 7);
        assert!(ci.describe().contains("retries = 7    (--retries)"));
    }

    #[test]
    fn a_platform_override_applies_where_rustc_says_the_tests_run() {
        let profile = profile(
            r#"
            [[profile.default.overrides]]
            platform = 'cfg(unix)'
            retries = 1
            [[profile.default.overrides]]
            platform = 'cfg(windows)'
            retries = 2
            [[profile.default.overrides]]
            platform = { host = 'cfg(windows)' }
            slow-timeout = "5s"
            "#,
            "default",
        )
        .unwrap();
        assert!(profile.needs_platforms());
        let platforms = Platforms::ask_rustc(std::ffi::OsStr::new("rustc"), None).unwrap();
        let binary = TestBinary::for_tests("app", "suite", BinaryKind::Test);
        let settings = profile.settings(&binary, "t", &PackageGraph::default(), &platforms, 1, 1);
        // The tests of this project run on Linux.
        assert_eq!(settings.retries.count, 1);
        assert_eq!(settings.limits.slow, SLOW_PERIOD);
        // Without the platforms known, no platform matches.
        let unknown = profile.settings(
            &binary,
            "t",
            &PackageGraph::default(),
            &Platforms::default(),
            1,
            1,
        );
        assert_eq!(unknown.retries.count, 0);
    }

    #[test]
    fn memory_limits_parse() {
        assert_eq!(MemoryLimit::parse("256MiB").unwrap().bytes, 256 << 20);
        assert_eq!(MemoryLimit::parse("1GB").unwrap().bytes, 1_000_000_000);
        assert_eq!(MemoryLimit::parse("4096").unwrap().bytes, 4096);
        for bad in ["", "MiB", "0MiB", "12 parsecs", "99999999999999TiB"] {
            assert!(MemoryLimit::parse(bad).is_err(), "{bad}");
        }
    }
}
