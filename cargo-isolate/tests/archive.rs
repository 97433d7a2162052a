//! End-to-end tests of archives: `cargo isolate archive` on the `archived`
//! fixture, and runs and listings from the archive (`--archive-file`)
//! elsewhere, without cargo and without the build's target directory.
//!
//! The CI recipe of the README is run as written: its `cargo isolate` lines
//! are read from the README itself.

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; these tests use some"
)]
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use support::{as_printed, clean_environment, describe, json_events};

/// How each test of the `archived` fixture must end: its binary, its name
/// and its verdict (`passed`, `failed`, `crashed` or `ignored`, as the JSON
/// report says it; JUnit tells them apart the same way).
const EXPECTED: &[(&str, &str, &str)] = &[
    ("archived", "tests::loads_the_dynamic_library", "passed"),
    ("archived", "tests::reads_its_sources", "passed"),
    ("archived::harnessed", "aborts", "crashed"),
    ("archived::harnessed", "passes", "passed"),
    ("archived::shards", "fails_on_purpose", "failed"),
    ("archived::shards", "ignored", "ignored"),
    ("archived::shards", "shard_01", "passed"),
    ("archived::shards", "shard_02", "passed"),
    ("archived::shards", "shard_03", "passed"),
    ("archived::shards", "shard_04", "passed"),
    ("archived::shards", "shard_05", "passed"),
    ("archived::shards", "shard_06", "passed"),
    ("archived::shards", "shard_07", "passed"),
    ("archived::shards", "shard_08", "passed"),
];

/// The shards the recipe runs.
const SHARDS: usize = 3;

/// Where these tests work: kept between runs, so that the fixture's build
/// is a no-op after the first.
fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("archive-e2e")
}

/// The fixture's build directory: a copy of the fixture, built in its own
/// `target/`. Held while a test moves it away, or needs it.
fn build_dir() -> (PathBuf, MutexGuard<'static, ()>) {
    static BUILD_DIR: Mutex<()> = Mutex::new(());
    let guard = BUILD_DIR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    (scratch().join("build"), guard)
}

/// The archive of the fixture, made once for all the tests of this file by
/// the README's own `cargo isolate archive` line, in the build directory,
/// and moved out of it.
fn archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let (build, _guard) = build_dir();
        copy_sources(&fixture_dir(), &build);
        let [archive_line] = &recipe_lines("With GitHub Actions:", "cargo isolate archive")[..]
        else {
            panic!("the GitHub recipe has one `cargo isolate archive` line");
        };
        let output = run_line(archive_line, &build, clean_environment(binary()));
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("Archived "), "{}", describe(&output));
        let made = scratch().join("made");
        fs::create_dir_all(&made).unwrap();
        let archive = made.join("tests.tar.zst");
        fs::rename(build.join("tests.tar.zst"), &archive).unwrap();
        archive
    })
}

/// The fixture's sources.
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/archived")
}

/// This crate's binary.
fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cargo-isolate")
}

/// Copies the sources of the workspace at `from` to `to`, without its
/// `target/`, leaving files that are already the same alone (so that a
/// build there stays fresh), with the fixture's path to `isolate-harness`
/// made absolute.
fn copy_sources(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let (source, destination) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&source, &destination);
            continue;
        }
        let mut contents = fs::read(&source).unwrap();
        if name == "Cargo.toml" {
            let harness = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../isolate-harness")
                .canonicalize()
                .unwrap();
            contents = String::from_utf8(contents)
                .unwrap()
                .replace("../../../isolate-harness", harness.to_str().unwrap())
                .into_bytes();
        }
        if fs::read(&destination).ok().as_ref() != Some(&contents) {
            fs::write(&destination, contents).unwrap();
        }
    }
}

/// A fresh copy of the fixture's sources at `dir`, as a CI job checks them
/// out: no `target/`.
fn checkout(dir: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    copy_sources(&fixture_dir(), dir);
    assert!(!dir.join("target").exists());
    dir.to_owned()
}

/// The lines of the README's YAML block after the line `heading` that
/// start (after `- run: ` or `- `) with `command`.
fn recipe_lines(heading: &str, command: &str) -> Vec<String> {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let after = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in the README"))
        .1;
    let block = after
        .split_once("```yaml\n")
        .and_then(|(_, block)| block.split_once("```"))
        .unwrap_or_else(|| panic!("no YAML block after {heading:?}"))
        .0;
    block
        .lines()
        .map(str::trim_start)
        .filter_map(|line| {
            line.strip_prefix("- run: ")
                .or_else(|| line.strip_prefix("- "))
        })
        .filter(|line| line.starts_with(command))
        .map(str::to_owned)
        .collect()
}

/// Runs `line`, a `cargo isolate` command line of the recipe, in `dir`
/// with `command` (this crate's binary, set up), as cargo would dispatch
/// it.
fn run_line(line: &str, dir: &Path, mut command: Command) -> Output {
    let words = shlex::split(line).unwrap();
    assert_eq!(words[..2], ["cargo", "isolate"], "{line}");
    command
        .arg("isolate")
        .args(&words[2..])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// An environment in which cargo and rustc cannot run: `CARGO` and
/// `RUSTC` are `/bin/false`, and the `PATH` an empty directory.
fn without_cargo(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let empty = scratch().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let mut command = clean_environment(program);
    command
        .env("CARGO", "/bin/false")
        .env("RUSTC", "/bin/false")
        .env("PATH", empty);
    command
}

/// Moves the build directory away until dropped: nothing of the build but
/// the archive is left where a test could find it.
struct BuildMovedAway {
    build: PathBuf,
    away: PathBuf,
    _guard: MutexGuard<'static, ()>,
}

impl BuildMovedAway {
    fn new() -> BuildMovedAway {
        let (build, guard) = build_dir();
        let away = scratch().join("build-moved-away");
        fs::rename(&build, &away).unwrap();
        BuildMovedAway {
            build,
            away,
            _guard: guard,
        }
    }
}

impl Drop for BuildMovedAway {
    fn drop(&mut self) {
        fs::rename(&self.away, &self.build).unwrap();
    }
}

/// The test cases of a JUnit report, as (binary, name, verdict).
fn junit_cases(path: &Path) -> Vec<(String, String, String)> {
    let xml = fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("no JUnit report at {}: {error}", path.display()));
    let attribute = |tag: &str, name: &str| {
        let tag = format!(" {tag}");
        let start = tag
            .find(&format!(" {name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {tag}"))
            + name.len()
            + 3;
        tag[start..][..tag[start..].find('"').unwrap()].to_owned()
    };
    xml.split("<testcase ")
        .skip(1)
        .map(|case| {
            let case = case.split("</testcase>").next().unwrap();
            let tag = case.split('>').next().unwrap();
            let verdict = if let Some(failure) = case.split_once("<failure ") {
                match attribute(failure.1, "type").as_str() {
                    "SIGABRT" => "crashed",
                    _ => "failed",
                }
            } else if case.contains("<skipped") {
                "ignored"
            } else {
                "passed"
            };
            (
                attribute(tag, "classname"),
                attribute(tag, "name"),
                verdict.to_owned(),
            )
        })
        .collect()
}

/// [`EXPECTED`], owned and in order.
fn expected() -> Vec<(String, String, String)> {
    EXPECTED
        .iter()
        .map(|(binary, name, verdict)| {
            (
                (*binary).to_owned(),
                (*name).to_owned(),
                (*verdict).to_owned(),
            )
        })
        .collect()
}

/// Runs the recipe's `cargo isolate test` line under `heading`, with
/// `shard` for the shard's number and `total` for the count where the
/// recipe writes its CI's variables, in `dir`, without cargo.
fn run_shard(heading: &str, shard: usize, dir: &Path) -> (String, Output) {
    let [line] = &recipe_lines(heading, "cargo isolate test")[..] else {
        panic!("the recipe {heading:?} has one `cargo isolate test` line");
    };
    let line = line
        .replace("${{ matrix.shard }}", &shard.to_string())
        .replace("${CI_NODE_INDEX}", &shard.to_string())
        .replace("${CI_NODE_TOTAL}", &SHARDS.to_string());
    assert!(
        line.ends_with(&format!("--junit junit/shard-{shard}.xml")),
        "{line}"
    );
    let output = run_line(&line, dir, without_cargo(binary()));
    (line, output)
}

#[test]
fn the_ci_recipes_run_as_written_each_test_once_across_three_shards() {
    let archive = archive();
    let moved = BuildMovedAway::new();
    assert!(!moved.build.exists());
    for (heading, name) in [
        ("With GitHub Actions:", "github"),
        ("With GitLab CI:", "gitlab"),
    ] {
        // The test job: a checkout, and the build job's artifact in it.
        let dir = checkout(&scratch().join(format!("checkout-{name}")));
        fs::copy(archive, dir.join("tests.tar.zst")).unwrap();
        let mut seen = Vec::new();
        let mut rerun = None;
        for shard in 1..=SHARDS {
            let (line, output) = run_shard(heading, shard, &dir);
            let cases = junit_cases(&dir.join(format!("junit/shard-{shard}.xml")));
            let fails = cases
                .iter()
                .any(|(_, _, verdict)| verdict == "failed" || verdict == "crashed");
            let code = if fails { 100 } else { 0 };
            assert_eq!(
                output.status.code(),
                Some(code),
                "{line}\n{}",
                describe(&output)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            rerun = rerun.or_else(|| {
                stdout
                    .lines()
                    .filter_map(|line| line.trim().strip_prefix("rerun: "))
                    .find(|line| line.contains("fails_on_purpose"))
                    .map(str::to_owned)
            });
            seen.extend(cases);
        }
        seen.sort();
        let mut expected = expected();
        expected.sort();
        assert_eq!(seen, expected, "{heading}");

        // The command printed for a failure runs as printed, in the job.
        let rerun = rerun.expect("a rerun command for fails_on_purpose");
        assert!(
            rerun.contains("--archive-file tests.tar.zst --workspace-remap . -E"),
            "{rerun}"
        );
        let output = as_printed(without_cargo("/bin/sh"), &rerun)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(100),
            "{rerun}\n{}",
            describe(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("1 test run: 0 passed, 1 failed"),
            "{stdout}"
        );
    }
    drop(moved);
}

#[test]
fn an_archive_runs_and_lists_from_another_directory_without_a_target() {
    let archive = archive();
    let root = scratch().join("elsewhere");
    let sources = checkout(&root.join("sources"));
    let cwd = root.join("cwd");
    let unpacked = root.join("unpacked");
    fs::create_dir_all(&cwd).unwrap();
    let _ = fs::remove_dir_all(&unpacked);
    let run = |args: &[&str]| {
        without_cargo(binary())
            .arg("isolate")
            .args(args)
            .arg("--archive-file")
            .arg(archive)
            .arg("--workspace-remap")
            .arg(&sources)
            .current_dir(&cwd)
            .output()
            .unwrap()
    };
    let output = run(&[
        "test",
        "--message-format",
        "json",
        "--extract-to",
        unpacked.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let mut seen: Vec<(String, String, String)> = json_events(&output)
        .iter()
        .filter(|event| event["event"] == "test-finished")
        .map(|event| {
            let text = |key: &str| event[key].as_str().unwrap().to_owned();
            (text("binary"), text("name"), text("status"))
        })
        .collect();
    seen.sort();
    assert_eq!(seen, expected());
    // Kept where it was told: the binaries and the dynamic library they
    // load, the build's; not the toolchain's `libstd`.
    let deps = unpacked.join("target/debug/deps");
    let names: BTreeSet<String> = fs::read_dir(&deps)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|name| name.starts_with("shards-")),
        "{names:?}"
    );
    let libraries: Vec<&String> = names.iter().filter(|name| name.ends_with(".so")).collect();
    let uplifted = unpacked.join("target/debug/libshared.so").is_file();
    assert!(
        uplifted || libraries == ["libshared.so"],
        "{libraries:?} in {}",
        deps.display()
    );
    assert!(!cwd.join("target").exists() && !sources.join("target").exists());

    let output = run(&["list", "--message-format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listing["tests"], EXPECTED.len(), "{listing}");
    let binaries = listing["binaries"].as_array().unwrap();
    let ids: Vec<&str> = binaries
        .iter()
        .map(|binary| binary["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["archived", "archived::harnessed", "archived::shards"]);
    for binary in binaries {
        let path = binary["path"].as_str().unwrap();
        assert!(
            !path.starts_with(scratch().join("build").to_str().unwrap()),
            "{binary}"
        );
        assert!(path.contains("/target/debug/deps/"), "{binary}");
    }
    let harness: Vec<&str> = binaries
        .iter()
        .map(|binary| binary["harness"].as_str().unwrap())
        .collect();
    assert_eq!(harness, ["libtest", "isolate-harness", "libtest"]);

    // Filtersets see the packages the manifest recorded.
    let output = run(&["list", "-E", "rdeps(shared)"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        EXPECTED.len()
    );
}

/// Writes a zstd-compressed tar at `file` whose one member is a manifest
/// saying `manifest`.
fn write_manifest_only(file: &Path, manifest: &str) {
    let encoder = zstd::Encoder::new(fs::File::create(file).unwrap(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "isolate-archive.json", manifest.as_bytes())
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn an_archive_that_cannot_be_used_is_a_clear_error() {
    let archive = archive();
    let dir = scratch().join("bad");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        without_cargo(binary())
            .arg("isolate")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let fails_with = |args: &[&str], code: i32, message: &str| {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}\n{}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(message),
            "{args:?}: {message:?}\n{}",
            describe(&output)
        );
    };
    fails_with(
        &["test", "--archive-file", "missing.tar.zst"],
        1,
        "error: failed to open the archive missing.tar.zst\n  caused by: No such file",
    );
    fs::write(dir.join("garbage.tar.zst"), "not an archive").unwrap();
    fails_with(
        &["list", "--archive-file", "garbage.tar.zst"],
        1,
        "error: failed to read the archive garbage.tar.zst: it is damaged, or not a zstd-compressed tar",
    );
    let whole = fs::read(archive).unwrap();
    fs::write(dir.join("truncated.tar.zst"), &whole[..whole.len() / 2]).unwrap();
    fails_with(
        &["test", "--archive-file", "truncated.tar.zst"],
        1,
        "error: failed to ",
    );
    write_manifest_only(
        &dir.join("future.tar.zst"),
        r#"{"format-version": 2, "something": "new"}"#,
    );
    fails_with(
        &["test", "--archive-file", "future.tar.zst"],
        1,
        "error: the archive future.tar.zst is of format version 2, and this cargo-isolate reads version 1 only",
    );
    fs::write(dir.join("a-file"), "").unwrap();
    fails_with(
        &[
            "test",
            "--archive-file",
            archive.to_str().unwrap(),
            "--extract-to",
            "a-file/below",
        ],
        1,
        "error: failed to unpack the archive",
    );
    fails_with(
        &[
            "test",
            "--archive-file",
            archive.to_str().unwrap(),
            "--workspace-remap",
            "nowhere",
        ],
        1,
        "error: the workspace directory nowhere (--workspace-remap) cannot be used",
    );
    // The options of a build have no meaning for an archive.
    for build_only in [
        &["-p", "archived"][..],
        &["--release"],
        &["--features", "x"],
        &["--manifest-path", "Cargo.toml"],
        &["--target", "x86_64-unknown-linux-gnu"],
    ] {
        let mut args = vec!["test", "--archive-file", "tests.tar.zst"];
        args.extend(build_only);
        fails_with(&args, 2, "cannot be used with");
    }
    fails_with(&["list", "--workspace-remap", "."], 2, "--archive-file");
    // An archive that cannot be written is an error too, and leaves none.
    let (build, _guard) = build_dir();
    let output = clean_environment(binary())
        .args([
            "isolate",
            "archive",
            "--archive-file",
            "no/such/dir/tests.tar.zst",
        ])
        .current_dir(&build)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("error: failed to write the archive no/such/dir/tests.tar.zst"),
        "{}",
        describe(&output)
    );
}
