//! Fault injection: `cargo isolate` and isolate-harness binaries when the
//! machine says no. `fork` fails (`RLIMIT_NPROC`), descriptors run out
//! (`RLIMIT_NOFILE`), no scratch file can be created, a test binary is
//! deleted or loses its execute permission between the build and the run.
//! Each must be a clear error that loses no verdict: every test the run
//! selected ends exactly once in every report, a failure naming the real
//! cause; the run ends with a documented exit code; nothing panics or
//! hangs.
//!
//! The workspaces are generated: a libtest one in a directory of its own
//! for each run that damages its binaries (it has no dependencies, and
//! builds in seconds), and an isolate-harness one in one place, whose
//! target directory its runs share.
//!
//! `fork` fails for real only for a user other than root: root's
//! processes are not held to `RLIMIT_NPROC`. The tests that need it run
//! the process under test as a user who has no process (root may become
//! any), with a limit that its first processes reach, one test at a time;
//! they say that they are skipped, on stderr, when not run as root. This
//! needs nothing of the machine but root, where a cgroup's `pids.max`
//! needs the pids controller delegated (containers seldom have it, and
//! cgroup v1 and v2 differ), and would be undone by the runner's own
//! cgroups. Descriptors are limited with `RLIMIT_NOFILE`, which any user
//! may lower.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, setrlimit};
use serde_json::Value;
use support::{clean_environment, describe, json_events};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test of cargo isolate; this one uses some"
)]
mod support;

/// How long a run of `cargo isolate`, build included, may take before it
/// counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// How long a harness binary run directly may take.
const HARNESS_LIMIT: Duration = Duration::from_secs(120);

/// What `fork` fails with when a user has as many processes as they may.
const FORK_REFUSED: &str = "Resource temporarily unavailable (os error 11)";

/// What opening a descriptor fails with when a process has all it may.
const NO_DESCRIPTORS: &str = "Too many open files (os error 24)";

/// `cargo isolate test ARGS` on the workspace of `manifest`, building into
/// `target`.
fn cargo_isolate_test(manifest: &Path, target: &Path, args: &[&str]) -> Command {
    let mut command = clean_environment(env!("CARGO_BIN_EXE_cargo-isolate"));
    command
        .env("CARGO_TARGET_DIR", target)
        .args(["isolate", "test", "--manifest-path"])
        .arg(manifest)
        .args(args);
    command
}

/// Runs `command` to its end, which must come within `limit`: a run that
/// hangs is killed, and fails the test.
fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to spawn {command:?}: {error}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} hung: it still ran after {limit:?}, and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The outcome of each test of a run in JSON, by binary and name: each
/// test must have exactly one, and the run must have said how many tests
/// it selected.
fn outcomes(output: &Output) -> BTreeMap<(String, String), Value> {
    let events = json_events(output);
    let mut outcomes = BTreeMap::new();
    for event in events
        .iter()
        .filter(|event| event["event"] == "test-finished")
    {
        let key = (
            event["binary"].as_str().unwrap().to_owned(),
            event["name"].as_str().unwrap().to_owned(),
        );
        let again = outcomes.insert(key.clone(), event.clone());
        assert!(
            again.is_none(),
            "two outcomes for {key:?}\n{}",
            describe(output)
        );
    }
    let started = events
        .iter()
        .find(|event| event["event"] == "run-started")
        .unwrap_or_else(|| panic!("the run did not start\n{}", describe(output)));
    assert_eq!(
        started["tests"],
        outcomes.len(),
        "tests selected, and outcomes\n{}",
        describe(output)
    );
    outcomes
}

/// The test cases of a JUnit report, by class name (the binary) and name,
/// each with the text of its element.
fn junit_cases(path: &Path) -> BTreeMap<(String, String), String> {
    let report = std::fs::read_to_string(path).unwrap();
    // The value of attribute `key` of a case's opening tag.
    let attribute = |case: &str, key: &str| {
        let tag = format!(" {}", &case[..case.find('>').unwrap()]);
        let start = tag
            .find(&format!(" {key}=\""))
            .unwrap_or_else(|| panic!("no {key} in {tag}"))
            + key.len()
            + 3;
        tag[start..start + tag[start..].find('"').unwrap()].to_owned()
    };
    let mut cases = BTreeMap::new();
    for case in report.split("<testcase ").skip(1) {
        let end = case.find("</testcase>").unwrap_or(case.len());
        let case = &case[..end];
        let key = (attribute(case, "classname"), attribute(case, "name"));
        let again = cases.insert(key.clone(), case.to_owned());
        assert!(again.is_none(), "two test cases for {key:?}\n{report}");
    }
    cases
}

/// Asserts that test `name` of `binary` is broken in a JSON run and in its
/// JUnit report, with a message that contains each of `causes`.
fn assert_broken(
    output: &Output,
    outcomes: &BTreeMap<(String, String), Value>,
    junit: &BTreeMap<(String, String), String>,
    (binary, name): (&str, &str),
    causes: &[&str],
) {
    let key = (binary.to_owned(), name.to_owned());
    let outcome = &outcomes[&key];
    assert_eq!(outcome["status"], "broken", "{binary} {name}: {outcome}");
    let message = outcome["message"].as_str().unwrap();
    let case = &junit[&key];
    assert!(case.contains("<error"), "{binary} {name}: {case}");
    assert!(case.contains(r#"type="broken""#), "{binary} {name}: {case}");
    for cause in causes {
        assert!(
            message.contains(cause),
            "{binary} {name}: {message:?} does not say {cause:?}\n{}",
            describe(output)
        );
        assert!(case.contains(cause), "{binary} {name}: {case}");
    }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}

/// Says on stderr, past libtest's capture, that test `test` is skipped
/// and why: a skip must not pass for a pass unseen.
fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "faults: {test}: SKIPPED: {reason}");
}

/// Held by each test that runs a process as [`unprivileged_user`]: two at
/// once would count each other's processes.
static UNPRIVILEGED: Mutex<()> = Mutex::new(());

/// A user whom this process can run `binary` as, and who has no process
/// of its own, so that `RLIMIT_NPROC` counts only the processes a test
/// starts as that user; or why there is none.
fn unprivileged_user(binary: &Path) -> Result<u32, String> {
    if !is_root() {
        return Err("only root can run a process as a user of no other process".to_owned());
    }
    let uid = unused_uid().ok_or("every user id tried has a process")?;
    let mut command = Command::new(binary);
    command.arg("--list").current_dir("/");
    as_user_with_few_processes(&mut command, uid, 2);
    match command.output() {
        Ok(output) if output.status.success() => Ok(uid),
        Ok(output) => Err(format!(
            "{} --list failed as user {uid}\n{}",
            binary.display(),
            describe(&output)
        )),
        Err(error) => Err(format!(
            "cannot run {} as user {uid}: {error}",
            binary.display()
        )),
    }
}

/// A user id that no running process has.
fn unused_uid() -> Option<u32> {
    let mut used = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        used.extend(real);
    }
    (60_000..65_534).rev().find(|uid| !used.contains(uid))
}

/// `binary`, or a copy of it where any user can run it (the checkout may
/// not be open to every user), and the directory of the copy.
fn runnable_by_anyone(binary: &Path) -> (PathBuf, Option<tempfile::TempDir>) {
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode();
    let open = mode(binary) & 0o005 == 0o005
        && binary
            .ancestors()
            .skip(1)
            .filter(|dir| !dir.as_os_str().is_empty())
            .all(|dir| mode(dir) & 0o001 != 0);
    if open {
        return (binary.to_owned(), None);
    }
    let dir = tempfile::Builder::new()
        .prefix("faults-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join(binary.file_name().unwrap());
    std::fs::copy(binary, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (copy, Some(dir))
}

/// Makes the process that `command` starts a process of user `uid`, with
/// no groups, who may have at most `processes` processes.
fn as_user_with_few_processes(command: &mut Command, uid: u32, processes: u64) {
    // SAFETY: the hook makes only system calls, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NPROC, processes, processes)?;
            if nix::libc::setgroups(0, std::ptr::null()) != 0
                || nix::libc::setgid(uid) != 0
                || nix::libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Holds the process that `command` starts to `descriptors` descriptors.
fn with_few_descriptors(command: &mut Command, descriptors: u64) {
    // SAFETY: the hook makes one system call, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, descriptors, descriptors)?;
            Ok(())
        });
    }
}

/// Writes `contents` to `path` unless it holds them already: a rewrite
/// would make cargo build again.
fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// A libtest workspace whose first binary damages its second: `a_first`'s
/// test takes the execute permission of `b_second`'s executable, or
/// deletes it, as `FAULTS_HOW` says (`chmod` or `delete`). With one test
/// at a time, `a_first` runs first: binaries run in the order of their
/// names. In a directory of its own, with its own target directory.
struct Vanishing {
    dir: tempfile::TempDir,
}

impl Vanishing {
    fn new() -> Vanishing {
        let dir = tempfile::Builder::new()
            .prefix("faults-vanishing-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let write = |path: &str, contents: &str| write_if_changed(&dir.path().join(path), contents);
        write(
            "Cargo.toml",
            "[workspace]\n\n[package]\nname = \"vanishing\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n",
        );
        write(
            "tests/a_first.rs",
            r#"use std::os::unix::fs::PermissionsExt;

#[test]
fn damages_the_second() {
    let how = std::env::var("FAULTS_HOW").unwrap();
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_owned();
    let mut damaged = 0;
    for entry in std::fs::read_dir(deps).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("b_second-") || path.extension().is_some() {
            continue;
        }
        match how.as_str() {
            "delete" => std::fs::remove_file(&path).unwrap(),
            _ => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap(),
        }
        damaged += 1;
    }
    assert_eq!(damaged, 1);
}

#[test]
fn passes() {}
"#,
        );
        write(
            "tests/b_second.rs",
            "#[test]\nfn one() {}\n\n#[test]\nfn two() {}\n",
        );
        Vanishing { dir }
    }

    /// `cargo isolate test` on it with one test at a time, `FAULTS_HOW`
    /// set to `how`, and `args`.
    fn run(&self, how: &str, args: &[&str]) -> Output {
        let mut command = cargo_isolate_test(
            &self.dir.path().join("Cargo.toml"),
            &self.dir.path().join("target"),
            &[&["--test-threads", "1"], args].concat(),
        );
        output_within(command.env("FAULTS_HOW", how), RUN_LIMIT)
    }

    fn junit(&self) -> PathBuf {
        self.dir.path().join("junit.xml")
    }
}

/// Runs [`Vanishing`] with `how` and `isolation`, in JSON and JUnit, and
/// checks that `b_second`'s tests failed as broken for `cause`.
fn assert_second_binary_broken(how: &str, isolation: &str, cause: &str) {
    let workspace = Vanishing::new();
    let junit = workspace.junit();
    let output = workspace.run(
        how,
        &[
            "--isolation",
            isolation,
            "--message-format",
            "json",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let outcomes = outcomes(&output);
    let junit = junit_cases(&junit);
    assert_eq!(outcomes.len(), 4, "{}", describe(&output));
    assert_eq!(junit.len(), 4, "{junit:?}");
    for name in ["damages_the_second", "passes"] {
        let outcome = &outcomes[&("vanishing::a_first".to_owned(), name.to_owned())];
        assert_eq!(outcome["status"], "passed", "{outcome}");
    }
    let could_not = match isolation {
        "batch" => "could not run the batch: failed to spawn ",
        _ => "could not run the test: failed to spawn ",
    };
    for name in ["one", "two"] {
        assert_broken(
            &output,
            &outcomes,
            &junit,
            ("vanishing::b_second", name),
            &[could_not, "/deps/b_second-", cause],
        );
    }
}

#[test]
fn a_test_binary_deleted_before_it_runs_fails_each_of_its_tests_as_broken() {
    assert_second_binary_broken(
        "delete",
        "process",
        "No such file or directory (os error 2)",
    );
}

#[test]
fn a_test_binary_that_lost_its_execute_permission_fails_each_of_its_tests_as_broken() {
    // No execute bit at all: root may run a file any of whose bits allow.
    assert_second_binary_broken("chmod", "process", "Permission denied (os error 13)");
}

#[test]
fn a_batch_whose_binary_was_deleted_fails_each_of_its_tests_as_broken() {
    assert_second_binary_broken("delete", "batch", "No such file or directory (os error 2)");
}

#[test]
fn people_read_which_binary_could_not_run_and_why() {
    let workspace = Vanishing::new();
    let output = workspace.run("delete", &[]);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for name in ["one", "two"] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&format!("BROKEN vanishing::b_second {name}: ")))
            .unwrap_or_else(|| panic!("no failure for {name}\n{}", describe(&output)));
        assert!(
            line.contains("could not run the test: failed to spawn ")
                && line.contains("/deps/b_second-")
                && line.ends_with(": No such file or directory (os error 2)"),
            "{line}"
        );
    }
}

/// The isolate-harness workspace, in one place, built into one target
/// directory. Its targets:
///
/// - `limited` (isolate-harness): `passes`, and the death test
///   `dies_as_expected`. With `FAULTS_UID` set, its setup makes the
///   harness a process of that user, who may have `FAULTS_NPROC`
///   processes (`RLIMIT_NPROC` is resource `FAULTS_RLIMIT_NPROC`): the
///   harness and its fork server take them all, and no test can be forked.
/// - `plain` (libtest): `passes`, and `prints_where_its_output_goes`.
/// - `h_first` and `h_second` (isolate-harness): with `FAULTS_DELETE` set,
///   `h_first`'s test deletes `h_second`'s executable, which runs after it.
struct Harnessed {
    manifest: PathBuf,
    target: PathBuf,
}

fn harnessed() -> &'static Harnessed {
    static WORKSPACE: OnceLock<Harnessed> = OnceLock::new();
    WORKSPACE.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("faults-harnessed");
        let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../isolate-harness");
        let harness = harness.canonicalize().unwrap();
        let mut manifest = format!(
            "[workspace]\n\n[package]\nname = \"faults-harnessed\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dev-dependencies]\nisolate-harness = {{ path = {:?} }}\n",
            harness.to_str().unwrap()
        );
        for target in ["limited", "h_first", "h_second"] {
            manifest.push_str(&format!(
                "\n[[test]]\nname = \"{target}\"\nharness = false\n"
            ));
        }
        write_if_changed(&dir.join("Cargo.toml"), &manifest);
        // The versions the fixtures build with: no registry is asked.
        if !dir.join("Cargo.lock").exists() {
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/crashy/Cargo.lock");
            std::fs::copy(fixture, dir.join("Cargo.lock")).unwrap();
        }
        write_if_changed(
            &dir.join("tests/limited.rs"),
            r#"//! With `FAULTS_UID` set, no test can be forked: see the setup.

use std::ffi::c_int;

#[repr(C)]
struct Rlimit {
    current: u64,
    maximum: u64,
}

extern "C" {
    fn setgroups(size: usize, list: *const u32) -> c_int;
    fn setgid(gid: u32) -> c_int;
    fn setuid(uid: u32) -> c_int;
    fn setrlimit(resource: c_int, limit: *const Rlimit) -> c_int;
}

fn var(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Makes this process one of user `FAULTS_UID`, who may have
/// `FAULTS_NPROC` processes.
fn become_unprivileged() {
    let (Some(uid), Some(resource), Some(processes)) = (
        var("FAULTS_UID"),
        var("FAULTS_RLIMIT_NPROC"),
        var("FAULTS_NPROC"),
    ) else {
        return;
    };
    let uid = uid as u32;
    let limit = Rlimit {
        current: processes,
        maximum: processes,
    };
    // SAFETY: each call takes plain values, or no list of groups.
    unsafe {
        assert_eq!(setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(setgid(uid), 0, "setgid");
        assert_eq!(setuid(uid), 0, "setuid");
        assert_eq!(setrlimit(resource as c_int, &limit), 0, "setrlimit");
    }
}

#[isolate_harness::test]
fn passes() {}

#[isolate_harness::test(expect_signal = "SIGABRT")]
fn dies_as_expected() {
    std::process::abort();
}

fn main() {
    isolate_harness::Harness::new()
        .setup(become_unprivileged)
        .run()
}
"#,
        );
        write_if_changed(
            &dir.join("tests/plain.rs"),
            r#"#[test]
fn passes() {}

#[test]
fn prints_where_its_output_goes() {
    println!("{}", std::fs::read_link("/proc/self/fd/1").unwrap().display());
}
"#,
        );
        write_if_changed(
            &dir.join("tests/h_first.rs"),
            r#"#[isolate_harness::test]
fn deletes_the_second() {
    if std::env::var_os("FAULTS_DELETE").is_none() {
        return;
    }
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_owned();
    for entry in std::fs::read_dir(deps).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("h_second-") && path.extension().is_none() {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

isolate_harness::main!();
"#,
        );
        write_if_changed(
            &dir.join("tests/h_second.rs"),
            "#[isolate_harness::test]\nfn one() {}\n\n#[isolate_harness::test]\nfn two() {}\n\nisolate_harness::main!();\n",
        );
        Harnessed {
            manifest: dir.join("Cargo.toml"),
            target: tmp.join("faults-harnessed-target"),
        }
    })
}

impl Harnessed {
    /// `cargo isolate test ARGS` on it.
    fn cargo_isolate(&self, args: &[&str]) -> Command {
        cargo_isolate_test(&self.manifest, &self.target, args)
    }

    /// Builds test target `name` and returns its executable.
    fn executable(&self, name: &str) -> PathBuf {
        let mut command = clean_environment("cargo");
        command
            .env("CARGO_TARGET_DIR", &self.target)
            .args([
                "test",
                "--no-run",
                "--message-format",
                "json",
                "--test",
                name,
            ])
            .arg("--manifest-path")
            .arg(&self.manifest);
        let output = output_within(&mut command, RUN_LIMIT);
        assert!(output.status.success(), "{}", describe(&output));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|message| message["target"]["name"] == name && message["executable"].is_string())
            .map(|message| PathBuf::from(message["executable"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("no executable for {name}\n{}", describe(&output)))
    }

    fn junit(&self, name: &str) -> PathBuf {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{name}.xml"))
    }
}

#[test]
fn a_test_the_fork_server_cannot_fork_fails_as_broken_with_the_cause() {
    let (binary, _copy) = runnable_by_anyone(&harnessed().executable("limited"));
    let _alone = UNPRIVILEGED.lock().unwrap_or_else(PoisonError::into_inner);
    let uid = match unprivileged_user(&binary) {
        Ok(uid) => uid,
        Err(reason) => {
            skip(
                "a_test_the_fork_server_cannot_fork_fails_as_broken_with_the_cause",
                &reason,
            );
            return;
        }
    };
    // The harness and its one fork server (one test at a time) are all
    // the processes its user may have.
    let mut command = clean_environment(&binary);
    command.args(["--test-threads", "1"]).current_dir("/");
    as_user_with_few_processes(&mut command, uid, 2);
    let output = output_within(&mut command, HARNESS_LIMIT);
    assert_eq!(output.status.code(), Some(101), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cause = format!("the fork server could not start the test: {FORK_REFUSED}");
    for failure in [
        format!("---- passes ----\nthe test could not be run: {cause}"),
        format!(
            "---- dies_as_expected ----\nexpected to die by SIGABRT, but could not be run: {cause}"
        ),
    ] {
        assert!(
            stdout.contains(&failure),
            "{failure}\n{}",
            describe(&output)
        );
    }
    assert!(
        stdout.contains("test result: FAILED. 0 passed; 2 failed"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_harness_that_cannot_fork_its_tests_reports_each_as_broken() {
    let workspace = harnessed();
    let (binary, _copy) = runnable_by_anyone(&workspace.executable("limited"));
    let junit = workspace.junit("cannot-fork");
    let _alone = UNPRIVILEGED.lock().unwrap_or_else(PoisonError::into_inner);
    let uid = match unprivileged_user(&binary) {
        Ok(uid) => uid,
        Err(reason) => {
            skip(
                "a_harness_that_cannot_fork_its_tests_reports_each_as_broken",
                &reason,
            );
            return;
        }
    };
    let mut command = workspace.cargo_isolate(&[
        "--test",
        "limited",
        "--test-threads",
        "1",
        "--message-format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    command
        .env("FAULTS_UID", uid.to_string())
        .env("FAULTS_NPROC", "2")
        .env("FAULTS_RLIMIT_NPROC", nix::libc::RLIMIT_NPROC.to_string());
    let output = output_within(&mut command, RUN_LIMIT);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let outcomes = outcomes(&output);
    let junit = junit_cases(&junit);
    assert_eq!(outcomes.len(), 2, "{}", describe(&output));
    assert_eq!(junit.len(), 2, "{junit:?}");
    for name in ["passes", "dies_as_expected"] {
        assert_broken(
            &output,
            &outcomes,
            &junit,
            ("faults-harnessed::limited", name),
            &[&format!(
                "the fork server could not start the test: {FORK_REFUSED}"
            )],
        );
    }
}

#[test]
fn a_harness_short_of_descriptors_fails_each_test_clearly_or_says_why_it_cannot_start() {
    let binary = harnessed().executable("limited");
    let no_server = format!("isolate: failed to start the fork server: {NO_DESCRIPTORS}");
    let mut seen = std::collections::BTreeSet::new();
    // From too few for the fork server's channels, through too few for a
    // test's output files, to enough (one test at a time needs a dozen).
    for descriptors in 4..=16 {
        let mut command = clean_environment(&binary);
        command.args(["--test-threads", "1"]);
        with_few_descriptors(&mut command, descriptors);
        let output = output_within(&mut command, HARNESS_LIMIT);
        let context = format!("with {descriptors} descriptors\n{}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        if String::from_utf8_lossy(&output.stderr).contains(&no_server) {
            assert_eq!(output.status.code(), Some(101), "{context}");
            seen.insert("no fork server");
            continue;
        }
        let mut verdicts: Vec<(&str, &str)> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("test ")?.split_once(" ... "))
            .map(|(name, verdict)| (name.trim_end(), verdict))
            .collect();
        verdicts.sort_unstable();
        let names: Vec<&str> = verdicts.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["dies_as_expected", "passes"], "{context}");
        for (name, verdict) in &verdicts {
            if *verdict == "ok" {
                continue;
            }
            assert_eq!(*verdict, "FAILED", "{context}");
            let failure = stdout
                .split(&format!("---- {name} ----\n"))
                .nth(1)
                .and_then(|failure| failure.lines().next())
                .unwrap_or_else(|| panic!("no failure of {name} {context}"));
            assert!(
                failure.contains(&format!("could not be run: the fork server could not start the test: failed to create its output files: {NO_DESCRIPTORS}")),
                "{failure} {context}"
            );
            seen.insert("a test not started");
        }
        if verdicts.iter().all(|(_, verdict)| *verdict == "ok") {
            assert_eq!(output.status.code(), Some(0), "{context}");
            seen.insert("every test run");
        } else {
            assert_eq!(output.status.code(), Some(101), "{context}");
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a test not started", "every test run", "no fork server"]
    );
}

#[test]
fn a_run_with_few_descriptors_gives_every_test_one_outcome_with_the_cause() {
    let workspace = harnessed();
    let junit = workspace.junit("few-descriptors");
    // Enough for the runner, its build and its libtest tests; too few for
    // the harness's fork server, whose channels for 32 tests at once need
    // more than 64.
    let mut command = workspace.cargo_isolate(&[
        "--test",
        "limited",
        "--test",
        "plain",
        "--test-threads",
        "32",
        "--message-format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    with_few_descriptors(&mut command, 64);
    let output = output_within(&mut command, RUN_LIMIT);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let outcomes = outcomes(&output);
    let junit = junit_cases(&junit);
    assert_eq!(outcomes.len(), 4, "{}", describe(&output));
    assert_eq!(junit.len(), 4, "{junit:?}");
    // The harness's own words reach each of its tests.
    for name in ["passes", "dies_as_expected"] {
        assert_broken(
            &output,
            &outcomes,
            &junit,
            ("faults-harnessed::limited", name),
            &[
                "the harness exited with code 101 without reporting this test",
                &format!("isolate: failed to start the fork server: {NO_DESCRIPTORS}"),
            ],
        );
    }
    for name in ["passes", "prints_where_its_output_goes"] {
        let outcome = &outcomes[&("faults-harnessed::plain".to_owned(), name.to_owned())];
        let message = outcome["message"].as_str().unwrap();
        assert!(
            outcome["status"] == "passed"
                || outcome["status"] == "broken" && message.contains(NO_DESCRIPTORS),
            "{outcome}"
        );
    }
}

#[test]
fn a_harness_binary_deleted_before_it_runs_fails_each_of_its_tests_as_broken() {
    let workspace = harnessed();
    let junit = workspace.junit("deleted-harness");
    let mut command = workspace.cargo_isolate(&[
        "--test",
        "h_first",
        "--test",
        "h_second",
        "--test-threads",
        "1",
        "--message-format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let output = output_within(command.env("FAULTS_DELETE", "1"), RUN_LIMIT);
    assert_eq!(output.status.code(), Some(100), "{}", describe(&output));
    let outcomes = outcomes(&output);
    let junit = junit_cases(&junit);
    assert_eq!(outcomes.len(), 3, "{}", describe(&output));
    assert_eq!(junit.len(), 3, "{junit:?}");
    let first = &outcomes[&(
        "faults-harnessed::h_first".to_owned(),
        "deletes_the_second".to_owned(),
    )];
    assert_eq!(first["status"], "passed", "{first}");
    for name in ["one", "two"] {
        assert_broken(
            &output,
            &outcomes,
            &junit,
            ("faults-harnessed::h_second", name),
            &[
                "could not run the harness binary: failed to spawn ",
                "/deps/h_second-",
                "No such file or directory (os error 2)",
            ],
        );
    }
}

#[test]
fn an_unusable_scratch_directory_fails_the_run_before_the_build() {
    let workspace = Vanishing::new();
    let mut command = cargo_isolate_test(
        &workspace.dir.path().join("Cargo.toml"),
        &workspace.dir.path().join("target"),
        &[],
    );
    // Not even root can create a file there.
    command.env("ISOLATE_SCRATCH_DIR", "/proc/isolate-scratch");
    let output = output_within(&mut command, RUN_LIMIT);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: failed to create a scratch file in /proc/isolate-scratch, which ISOLATE_SCRATCH_DIR names\n  caused by: "
        ),
        "{}",
        describe(&output)
    );
    assert!(!workspace.dir.path().join("target").exists(), "it built");
    assert!(output.stdout.is_empty(), "{}", describe(&output));
}

#[test]
fn scratch_files_go_where_isolate_scratch_dir_says() {
    let workspace = harnessed();
    let scratch = tempfile::Builder::new()
        .prefix("faults-scratch-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let mut command = workspace.cargo_isolate(&[
        "--test",
        "plain",
        "--message-format",
        "json",
        "--",
        "--exact",
        "prints_where_its_output_goes",
    ]);
    command.env("ISOLATE_SCRATCH_DIR", scratch.path());
    let output = output_within(&mut command, RUN_LIMIT);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let outcomes = outcomes(&output);
    let printed = outcomes[&(
        "faults-harnessed::plain".to_owned(),
        "prints_where_its_output_goes".to_owned(),
    )]["stdout"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        printed.starts_with(scratch.path().to_str().unwrap()),
        "{printed}\n{}",
        describe(&output)
    );
}
