//! What making and unpacking an archive of a 2000-test suite costs
//! (`cargo isolate archive`, then `--archive-file`), against `tar` with
//! zstd on the same files.
//!
//! The bench generates a workspace under `target/isolate-bench-archive/`
//! shaped as the harness bench's: two packages, each with a test target
//! `suite` of 2000 tests, `isolated` run by `isolate-harness` and `plain`
//! by libtest. It builds this workspace's `cargo-isolate` in release mode
//! and, through a first `cargo isolate archive` of each (not measured), the
//! suites in the `dev` profile (with debug information, as CI archives
//! them, about 10 MiB a binary) and in the `release` profile. Then it
//! measures, side by side in one run, for each profile, the median of 5
//! runs (after a warm-up run) of:
//!
//! - packing: `cargo-isolate isolate archive [--release] --offline
//!   --manifest-path <generated>/Cargo.toml --workspace --archive-file
//!   <work>/isolate-<profile>.tar.zst`, its build a no-op; the time is the
//!   one the command reports for the packing alone, from the end of the
//!   build to the archive's rename into place, so that cargo's no-op build
//!   check (hundreds of milliseconds) is not counted;
//! - unpacking: `cargo-isolate isolate list --archive-file
//!   <work>/isolate-<profile>.tar.zst --extract-to <work>/isolate`, the
//!   time the command reports for unpacking the archive and reading its
//!   manifest (not the listing of the tests after it);
//! - `tar --zstd -cf <work>/tar-<profile>.tar.zst -C <target> FILES...` of
//!   the same files (those the archive holds, but for its manifest) and
//!   `tar --zstd -xf <work>/tar-<profile>.tar.zst -C <work>/tar`, wall
//!   time of the whole command.
//!
//! Goal: packing and unpacking together take at most 2x `tar`'s packing
//! and unpacking, in each profile.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench archive
//! ```

#[expect(
    dead_code,
    reason = "what the benches that time whole runs share; this one times archives and uses some"
)]
mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use support::{Bench, Sample, comparison_row, format_duration, median};

/// Tests in each suite.
const TESTS: usize = 2000;
/// Measured runs of each command, after one warm-up run.
const RUNS: usize = 5;
/// Longest a measured command may run before it is killed (the first
/// archive of each profile builds the suites).
const TIMEOUT: Duration = Duration::from_secs(900);

/// The generated workspace, the bench's files and the `cargo-isolate` that
/// archives it.
struct Workspace {
    root: PathBuf,
    target: PathBuf,
    /// Where the archives are written and unpacked.
    work: PathBuf,
    logs: PathBuf,
    cargo_isolate: PathBuf,
}

/// A cargo profile the suites are built in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Dev,
    Release,
}

impl Profile {
    const ALL: [Profile; 2] = [Profile::Dev, Profile::Release];

    fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        }
    }
}

/// What is measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `cargo isolate archive`, its packing.
    Pack,
    /// `--archive-file`, its unpacking.
    Unpack,
    /// `tar --zstd -cf`.
    TarPack,
    /// `tar --zstd -xf`.
    TarUnpack,
}

impl Step {
    const ALL: [Step; 4] = [Step::Pack, Step::Unpack, Step::TarPack, Step::TarUnpack];

    fn name(self) -> &'static str {
        match self {
            Step::Pack => "cargo isolate archive (packing)",
            Step::Unpack => "--archive-file (unpacking)",
            Step::TarPack => "tar --zstd -cf",
            Step::TarUnpack => "tar --zstd -xf",
        }
    }

    fn log_name(self) -> &'static str {
        match self {
            Step::Pack => "pack",
            Step::Unpack => "unpack",
            Step::TarPack => "tar-pack",
            Step::TarUnpack => "tar-unpack",
        }
    }
}

/// The times of one step in one profile.
struct Case {
    profile: Profile,
    step: Step,
    times: Vec<Duration>,
}

fn main() {
    let mut bench = Bench::start("archive bench", TIMEOUT);
    let target_dir = support::target_dir();
    let root = target_dir.join("isolate-bench-archive");
    bench.say(format_args!("generating {}", root.display()));
    generate(&root);
    let cargo_isolate = bench.build_cargo_isolate(&target_dir);
    let workspace = Workspace {
        target: root.join("target"),
        work: root.join("work"),
        logs: root.join("logs"),
        root,
        cargo_isolate,
    };
    for dir in [&workspace.work, &workspace.logs] {
        fs::create_dir_all(dir).expect("create the bench's directories");
    }
    let mut files = Vec::new();
    for profile in Profile::ALL {
        bench.say(format_args!(
            "building the suites ({}) and archiving them",
            profile.name()
        ));
        let log = workspace.logs.join(format!("build-{}.log", profile.name()));
        let command = command(&workspace, profile, Step::Pack);
        bench.run("build", "cargo isolate archive", command, &log);
        let archived = archived_files(&bench, &workspace, profile);
        bench.say(format_args!(
            "the {} archive holds {} files: {}",
            profile.name(),
            archived.len(),
            archived.join(" ")
        ));
        files.push((profile, archived));
    }

    let mut cases: Vec<Case> = Profile::ALL
        .into_iter()
        .flat_map(|profile| {
            Step::ALL.into_iter().map(move |step| Case {
                profile,
                step,
                times: Vec::new(),
            })
        })
        .collect();
    for (round, measured) in support::rounds(RUNS) {
        for case in &mut cases {
            for unpacked in ["isolate", "tar"] {
                let _ = fs::remove_dir_all(workspace.work.join(unpacked));
            }
            fs::create_dir_all(workspace.work.join("tar")).expect("create the tar directory");
            let log = workspace.logs.join(format!("{}.log", case.step.log_name()));
            let mut command = command(&workspace, case.profile, case.step);
            if case.step == Step::TarPack {
                let (_, archived) = files
                    .iter()
                    .find(|(profile, _)| *profile == case.profile)
                    .expect("each profile was archived");
                command.args(archived);
            }
            let label = format!("{} ({})", case.step.name(), case.profile.name());
            let Sample { wall, .. } = bench.run(&round, &label, command, &log);
            let time = match case.step {
                Step::Pack => reported_time(&bench, &log, "Archived "),
                Step::Unpack => reported_time(&bench, &log, "Extracted "),
                Step::TarPack | Step::TarUnpack => wall,
            };
            if measured {
                case.times.push(time);
            }
        }
    }
    report(&workspace, &cases);
    bench.finish();
}

/// Prints the medians and ratios, with the goal, to stdout.
fn report(workspace: &Workspace, cases: &[Case]) {
    println!();
    println!(
        "Archives of two suites of {TESTS} tests, median of {RUNS} runs (packing and unpacking \
         as cargo-isolate reports them, tar's whole commands):"
    );
    println!();
    support::comparison_header("measured");
    for profile in Profile::ALL {
        let time = |step: Step| {
            let case = cases
                .iter()
                .find(|case| case.profile == profile && case.step == step)
                .expect("every step is measured");
            median(case.times.clone())
        };
        let name = |what: &str| format!("{what} ({})", profile.name());
        comparison_row(
            &name("cargo isolate: pack + unpack"),
            time(Step::Pack) + time(Step::Unpack),
            &name("tar: pack + unpack"),
            Some(time(Step::TarPack) + time(Step::TarUnpack)),
            Some(2.0),
        );
        for (ours, theirs) in [(Step::Pack, Step::TarPack), (Step::Unpack, Step::TarUnpack)] {
            comparison_row(
                &name(ours.name()),
                time(ours),
                &name(theirs.name()),
                Some(time(theirs)),
                None,
            );
        }
    }
    println!();
    for profile in Profile::ALL {
        let size = |name: String| {
            fs::metadata(workspace.work.join(name)).map_or(0, |metadata| metadata.len()) as f64
                / f64::from(1 << 20)
        };
        println!(
            "{}: archives of {:.1} MiB (cargo isolate) and {:.1} MiB (tar).",
            profile.name(),
            size(format!("isolate-{}.tar.zst", profile.name())),
            size(format!("tar-{}.tar.zst", profile.name())),
        );
    }
    println!();
    for case in cases {
        let times: Vec<String> = case
            .times
            .iter()
            .map(|time| format_duration(*time))
            .collect();
        println!(
            "- {} ({}): {}",
            case.step.name(),
            case.profile.name(),
            times.join(", ")
        );
    }
}

/// The command that takes `step` in `profile` (for [`Step::TarPack`],
/// without the files to pack).
fn command(workspace: &Workspace, profile: Profile, step: Step) -> Command {
    let archive = workspace
        .work
        .join(format!("isolate-{}.tar.zst", profile.name()));
    let tarball = workspace
        .work
        .join(format!("tar-{}.tar.zst", profile.name()));
    let mut command = match step {
        Step::Pack => {
            let mut command = Command::new(&workspace.cargo_isolate);
            command.args(["isolate", "archive", "--offline", "--workspace"]);
            if profile == Profile::Release {
                command.arg("--release");
            }
            command
                .arg("--manifest-path")
                .arg(workspace.root.join("Cargo.toml"))
                .arg("--archive-file")
                .arg(&archive);
            command
        }
        Step::Unpack => {
            let mut command = Command::new(&workspace.cargo_isolate);
            command
                .args(["isolate", "list", "--archive-file"])
                .arg(&archive)
                .arg("--extract-to")
                .arg(workspace.work.join("isolate"));
            command
        }
        Step::TarPack => {
            let mut command = Command::new("tar");
            command
                .arg("--zstd")
                .arg("-cf")
                .arg(&tarball)
                .arg("-C")
                .arg(&workspace.target);
            command
        }
        Step::TarUnpack => {
            let mut command = Command::new("tar");
            command
                .arg("--zstd")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(workspace.work.join("tar"));
            command
        }
    };
    command.env("CARGO_TARGET_DIR", &workspace.target);
    command
}

/// The files of `profile`'s archive but its manifest, relative to the target
/// directory, as `tar -t` lists them.
fn archived_files(bench: &Bench, workspace: &Workspace, profile: Profile) -> Vec<String> {
    let output = Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(
            workspace
                .work
                .join(format!("isolate-{}.tar.zst", profile.name())),
        )
        .output()
        .unwrap_or_else(|error| bench.fail(format_args!("tar -t: {error}")));
    if !output.status.success() {
        bench.fail(format_args!(
            "tar -t failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("target/"))
        .filter(|line| !line.ends_with('/'))
        .map(str::to_owned)
        .collect()
}

/// The time a line of `log` that starts with `prefix` (after spaces) ends
/// with: `... in 0.123s`.
fn reported_time(bench: &Bench, log: &Path, prefix: &str) -> Duration {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with(prefix))
        .find_map(|line| {
            let (_, seconds) = line.rsplit_once(" in ")?;
            let seconds: f64 = seconds.strip_suffix('s')?.parse().ok()?;
            Some(Duration::from_secs_f64(seconds))
        })
        .unwrap_or_else(|| {
            bench.fail(format_args!(
                "no `{prefix}... in Ns` line in {}",
                log.display()
            ))
        })
}

/// Writes the generated workspace under `root`, rewriting only the files
/// whose content changed, so that a second run does not rebuild.
fn generate(root: &Path) {
    let harness = support::manifest_dir()
        .join("isolate-harness")
        .canonicalize()
        .expect("find isolate-harness");
    let harness = harness.to_str().expect("a UTF-8 path");
    assert!(
        !harness.contains(['"', '\\']),
        "the path {harness} needs escaping in TOML"
    );
    support::write_if_changed(
        &root.join("Cargo.toml"),
        "# Generated by benches/archive.rs of the isolate workspace.\n\
         [workspace]\nmembers = [\"isolated\", \"plain\"]\nresolver = \"3\"\n",
    );
    let lock =
        fs::read_to_string(support::manifest_dir().join("Cargo.lock")).expect("read Cargo.lock");
    support::write_if_changed(&root.join("Cargo.lock"), &lock);
    for (package, extra, attribute, footer) in [
        (
            "isolated",
            format!(
                "harness = false\n\n[dev-dependencies]\nisolate-harness = {{ path = \"{harness}\" }}\n"
            ),
            "#[isolate_harness::test]",
            "isolate_harness::main!();\n",
        ),
        ("plain", String::new(), "#[test]", ""),
    ] {
        support::write_if_changed(
            &root.join(package).join("Cargo.toml"),
            &format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [lib]\ntest = false\ndoctest = false\n\n\
                 [[test]]\nname = \"suite\"\npath = \"tests/suite.rs\"\n{extra}"
            ),
        );
        support::write_if_changed(
            &root.join(package).join("src/lib.rs"),
            "//! Empty: the tests are in `tests/suite.rs`.\n",
        );
        let mut suite = format!("//! {TESTS} tests, generated by benches/archive.rs.\n\n");
        for index in 1..=TESTS {
            suite.push_str(&format!(
                "{attribute}\nfn test_{index:04}() {{\n    assert_eq!(std::hint::black_box({index}_u32) % 7, {});\n}}\n",
                index % 7
            ));
        }
        suite.push_str(footer);
        support::write_if_changed(&root.join(package).join("tests/suite.rs"), &suite);
    }
}
