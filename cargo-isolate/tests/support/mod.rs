//! Helpers shared by the end-to-end tests of `cargo isolate`: running the
//! real binary on a fixture workspace in a clean environment, reading what
//! it printed, and finding what a run left running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The manifest of fixture workspace `name`, under `tests/fixtures/`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .join("Cargo.toml")
}

/// `program`, in an environment cleaned of what the outer cargo (or an
/// outer runner: this crate's, nextest) set.
pub(crate) fn clean_environment(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("ISOLATE_")
            || key.starts_with("NEXTEST")
            || key == "RUSTFLAGS"
            || key == "RUST_BACKTRACE"
        {
            command.env_remove(key);
        }
    }
    command
}

/// [`clean_environment`], with the target directory named `target_name`.
pub(crate) fn clean_command(program: impl AsRef<std::ffi::OsStr>, target_name: &str) -> Command {
    let mut command = clean_environment(program);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(target_name);
    command.env("CARGO_TARGET_DIR", target);
    command
}

/// `shell`, a POSIX shell, made to run `line` as printed (a rerun
/// command), with `cargo isolate` dispatched to this crate's binary as
/// cargo would.
pub(crate) fn as_printed(mut shell: Command, line: &str) -> Command {
    shell
        .arg("-c")
        .arg(format!(
            "cargo() {{ \"$ISOLATE_E2E_BINARY\" \"$@\"; }}\n{line}"
        ))
        .env("ISOLATE_E2E_BINARY", env!("CARGO_BIN_EXE_cargo-isolate"));
    shell
}

/// `cargo isolate ARGS` on the workspace of `manifest`, in a clean
/// environment (see [`clean_command`]).
pub(crate) fn command_at(manifest: &Path, target_name: &str, args: &[&str]) -> Command {
    let mut command = clean_command(env!("CARGO_BIN_EXE_cargo-isolate"), target_name);
    let (subcommand, rest) = args.split_first().expect("a subcommand");
    command
        .args(["isolate", subcommand, "--manifest-path"])
        .arg(manifest)
        .args(rest);
    command
}

/// `cargo isolate ARGS` on a fixture, in a clean environment, with the
/// fixture's own target directory.
pub(crate) fn command(fixture_name: &str, args: &[&str]) -> Command {
    command_at(
        &fixture(fixture_name),
        &format!("fixture-{fixture_name}"),
        args,
    )
}

/// Runs [`command`] to the end.
pub(crate) fn cargo_isolate(fixture_name: &str, args: &[&str]) -> Output {
    command(fixture_name, args).output().unwrap()
}

/// The status and output of a command, for a failure message.
pub(crate) fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The JSON lines a command printed, each parsed.
pub(crate) fn json_events(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("not JSON: {line}\n{}", describe(output)))
        })
        .collect()
}

/// Processes whose environment holds `marker`: everything a run started,
/// since its tests and what they spawn inherit the environment.
pub(crate) fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read(entry.path().join("environ")).is_ok_and(|environ| {
                environ
                    .split(|byte| *byte == 0)
                    .any(|var| var == marker.as_bytes())
            })
        })
        .map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        })
        .collect()
}

/// The `test-finished` event of each test a JSON run finished, by
/// `binary name`.
pub(crate) fn finished(output: &Output) -> BTreeMap<String, serde_json::Value> {
    json_events(output)
        .into_iter()
        .filter(|event| event["event"] == "test-finished")
        .map(|event| {
            let test = format!(
                "{} {}",
                event["binary"].as_str().unwrap(),
                event["name"].as_str().unwrap()
            );
            (test, event)
        })
        .collect()
}

/// The status of each test a JSON run finished, by `binary name`.
pub(crate) fn statuses(output: &Output) -> BTreeMap<String, String> {
    finished(output)
        .into_iter()
        .map(|(test, event)| (test, event["status"].as_str().unwrap().to_owned()))
        .collect()
}
