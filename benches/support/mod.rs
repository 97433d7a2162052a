//! What the benches that time whole test runs share: building this
//! workspace's `cargo-isolate` and a generated workspace's tests, running a
//! command in its own process group with a timeout while this process, a
//! child subreaper, finds and kills whatever the command leaves behind, and
//! printing medians and ratios as Markdown tables.
//!
//! It does not generate a workspace: each bench writes its own, with
//! [`write_if_changed`] so that a second run does not rebuild it.

use std::{
    ffi::OsString,
    fmt::Display,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// How long processes a command leaves behind may take to exit on their
/// own before they are reported and killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// One bench run: its name, which prefixes what it prints, the longest a
/// command may run, and the processes commands left behind so far.
pub(crate) struct Bench {
    name: &'static str,
    timeout: Duration,
    started: Instant,
    leftovers: Vec<String>,
}

/// One run of a command: wall time, and the CPU time and minor page faults
/// of the whole process tree (from `getrusage(RUSAGE_CHILDREN)`).
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    pub(crate) cpu: Duration,
    pub(crate) faults: libc::c_long,
}

impl Bench {
    /// Starts the bench `name`, whose commands are killed after `timeout`,
    /// and makes this process the reaper of every orphan among its
    /// descendants, so that what a command leaves behind can be found.
    pub(crate) fn start(name: &'static str, timeout: Duration) -> Self {
        // SAFETY: `PR_SET_CHILD_SUBREAPER` only sets a flag of this
        // process; the unused arguments are zero.
        let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            result,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
        Self {
            name,
            timeout,
            started: Instant::now(),
            leftovers: Vec::new(),
        }
    }

    /// Prints `message` to stderr, after the bench's name.
    pub(crate) fn say(&self, message: impl Display) {
        eprintln!("{}: {message}", self.name);
    }

    /// Reports `message` and exits with a failure.
    pub(crate) fn fail(&self, message: impl Display) -> ! {
        self.say(message);
        std::process::exit(1);
    }

    /// Ends the bench: says how long it took, and fails if any command left
    /// a process behind.
    pub(crate) fn finish(self) {
        self.say(format_args!(
            "done in {:.0} s",
            self.started.elapsed().as_secs_f64()
        ));
        if !self.leftovers.is_empty() {
            self.say("processes were left behind (killed):");
            for leftover in &self.leftovers {
                eprintln!("  {leftover}");
            }
            std::process::exit(1);
        }
    }

    /// Builds this workspace's `cargo-isolate` in release mode, in
    /// `target_dir`, and returns its executable.
    pub(crate) fn build_cargo_isolate(&self, target_dir: &Path) -> PathBuf {
        self.say("building cargo-isolate (release)");
        let status = cargo()
            .args(["build", "--release", "-p", "cargo-isolate"])
            .current_dir(manifest_dir())
            .env("CARGO_TARGET_DIR", target_dir)
            .stdin(Stdio::null())
            .status()
            .expect("run cargo build -p cargo-isolate");
        if !status.success() {
            self.fail(format_args!("building cargo-isolate failed: {status}"));
        }
        let executable = target_dir.join("release/cargo-isolate");
        if !executable.is_file() {
            self.fail(format_args!("no cargo-isolate at {}", executable.display()));
        }
        executable
    }

    /// Builds the tests of the workspace at `root` in release mode, in
    /// `target`, and returns the executables of `targets`, each a test
    /// target named by its package's manifest and its name.
    pub(crate) fn build_tests<const N: usize>(
        &self,
        root: &Path,
        target: &Path,
        targets: [(PathBuf, &str); N],
    ) -> [PathBuf; N] {
        self.say("building the suites (release)");
        let output = cargo()
            .args([
                "test",
                "--release",
                "--no-run",
                "--offline",
                "--message-format",
                "json",
            ])
            .current_dir(root)
            .env("CARGO_TARGET_DIR", target)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo test --no-run");
        if !output.status.success() {
            self.fail(format_args!(
                "building the suites failed: {}",
                output.status
            ));
        }
        let artifacts: Vec<(PathBuf, String, PathBuf)> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["reason"] == "compiler-artifact")
            .filter_map(|message| {
                Some((
                    PathBuf::from(message["manifest_path"].as_str()?),
                    message["target"]["name"].as_str()?.to_owned(),
                    PathBuf::from(message["executable"].as_str()?),
                ))
            })
            .collect();
        targets.map(|(manifest, name)| {
            artifacts
                .iter()
                .find(|artifact| artifact.0 == manifest && artifact.1 == name)
                .map(|artifact| artifact.2.clone())
                .unwrap_or_else(|| {
                    self.fail(format_args!(
                        "cargo reported no executable for the test target {name} of {}",
                        manifest.display()
                    ))
                })
        })
    }

    /// Runs `command` in its own process group, its output to `log`, and
    /// checks that it passed and left nothing running. Prints its time,
    /// after `round` and `label`, and warns when its output shows that
    /// cargo compiled something in it: the build checks of the commands
    /// that run cargo are meant to be no-ops.
    pub(crate) fn run(
        &mut self,
        round: &str,
        label: &str,
        mut command: Command,
        log: &Path,
    ) -> Sample {
        use std::os::unix::process::CommandExt;

        let log_file = File::create(log).expect("create the log");
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log"))
            .stderr(log_file)
            .process_group(0);
        let before = usage(libc::RUSAGE_CHILDREN);
        let start = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| self.fail(format_args!("{label}: could not start: {error}")));
        let group = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        let (done, finished) = mpsc::channel::<()>();
        let timeout = self.timeout;
        let watchdog = thread::spawn(move || {
            if finished.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
                // SAFETY: `kill` has no memory-safety preconditions; the
                // group is that of the command, which has not been reaped
                // yet.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                true
            } else {
                false
            }
        });
        let status = child.wait().expect("wait for the command");
        let wall = start.elapsed();
        let _ = done.send(());
        let timed_out = watchdog.join().expect("the watchdog does not panic");
        let left = clean_up_leftovers();
        let after = usage(libc::RUSAGE_CHILDREN);
        for leftover in &left {
            self.say(format_args!(
                "{label} left a process behind (killed): {leftover}"
            ));
        }
        self.leftovers.extend(
            left.into_iter()
                .map(|leftover| format!("{label}: {leftover}")),
        );
        if timed_out || !status.success() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for line in tail.iter().rev() {
                eprintln!("  | {line}");
            }
            let why = if timed_out {
                format!("timed out after {:?}", self.timeout)
            } else {
                status.to_string()
            };
            self.fail(format_args!(
                "{label} failed ({why}); full output in {}",
                log.display()
            ));
        }
        self.say(format_args!("{round}: {label}: {}", format_duration(wall)));
        if fs::read_to_string(log).is_ok_and(|text| text.contains("   Compiling ")) {
            self.say(format_args!(
                "warning: {label} rebuilt the suites in this run; its time includes the build"
            ));
        }
        Sample {
            wall,
            cpu: after.0.saturating_sub(before.0),
            faults: after.1 - before.1,
        }
    }
}

/// The rounds of a measurement: a warm-up round, whose samples are
/// dropped, then `runs` measured ones. Yields each round's name, and
/// whether it is measured.
pub(crate) fn rounds(runs: usize) -> impl Iterator<Item = (String, bool)> {
    (0..=runs).map(move |round| match round {
        0 => ("warm-up".to_owned(), false),
        round => (format!("run {round}/{runs}"), true),
    })
}

/// This workspace's root.
pub(crate) fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// This workspace's target directory: `CARGO_TARGET_DIR` if set (relative
/// to the workspace root), `target` otherwise.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest_dir().join(dir),
        None => manifest_dir().join("target"),
    }
}

/// Writes `contents` to `path` unless it already holds them.
pub(crate) fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return;
    }
    fs::create_dir_all(path.parent().expect("a file in a directory")).expect("create directory");
    fs::write(path, contents).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}

/// `cargo-isolate isolate test --release --offline --manifest-path
/// ROOT/Cargo.toml`, with `cargo_isolate` the executable: the start of
/// every `cargo isolate` command the benches time.
pub(crate) fn cargo_isolate_test(cargo_isolate: &Path, root: &Path) -> Command {
    let mut command = Command::new(cargo_isolate);
    command
        .args([
            "isolate",
            "test",
            "--release",
            "--offline",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"));
    command
}

/// `cargo`, the one running this bench when there is one.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Whether `cargo nextest --version` succeeds.
pub(crate) fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Reaps the descendants of a finished command that were reparented to
/// this process. Those still running after `LEFTOVER_GRACE` are killed,
/// reaped, and returned, described.
fn clean_up_leftovers() -> Vec<String> {
    let deadline = Instant::now() + LEFTOVER_GRACE;
    loop {
        reap_exited();
        let children = own_children();
        if children.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return children
                .into_iter()
                .map(|pid| {
                    let command = fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                        .unwrap_or_default();
                    // SAFETY: `kill` has no memory-safety preconditions;
                    // `pid` is a child of this process, not reaped yet.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let mut status = 0;
                    // SAFETY: as above, and `status` is a valid out-pointer.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    format!("pid {pid}: {}", command.trim_end())
                })
                .collect();
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reaps every child of this process that has exited.
fn reap_exited() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; only children that have
        // exited are reaped, and no `Child` handle is waited on meanwhile.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// The children of this process, from `/proc`.
fn own_children() -> Vec<libc::pid_t> {
    let mut pids = Vec::new();
    for task in fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let Ok(task) = task else { continue };
        if let Ok(children) = fs::read_to_string(task.path().join("children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<libc::pid_t>().ok()),
            );
        }
    }
    pids
}

/// CPU time (user + system) and minor page faults so far of `who`:
/// `RUSAGE_SELF` or `RUSAGE_CHILDREN` (the reaped descendants).
pub(crate) fn usage(who: libc::c_int) -> (Duration, libc::c_long) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is valid for writes of a `rusage`.
    let result = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    assert_eq!(result, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: `getrusage` succeeded, so it filled `usage` in.
    let usage = unsafe { usage.assume_init() };
    let time = |time: libc::timeval| {
        Duration::from_secs(u64::try_from(time.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(time.tv_usec).unwrap_or(0))
    };
    (time(usage.ru_utime) + time(usage.ru_stime), usage.ru_minflt)
}

/// The median of `values` (the upper one of an even count).
pub(crate) fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values[values.len() / 2]
}

/// The median wall time of `samples`.
pub(crate) fn median_wall(samples: &[Sample]) -> Duration {
    median(samples.iter().map(|sample| sample.wall).collect())
}

/// `a / b`.
pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// `met` or `not met`.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

/// `1.23 s` or `456.7 ms`.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.2} s", duration.as_secs_f64())
    } else {
        format!("{:.1} ms", duration.as_secs_f64() * 1e3)
    }
}

/// Prints the header of a table of comparisons, whose first column holds
/// what is `measured`: see [`comparison_row`].
pub(crate) fn comparison_header(measured: &str) {
    println!("| {measured} | time | against | its time | ratio | goal | |");
    println!("|---|---|---|---|---|---|---|");
}

/// Prints one row of a comparison table: `command`'s time against
/// `other`'s (n/a when that was not measured), and the ratio against its
/// goal, a maximum, if any.
pub(crate) fn comparison_row(
    command: &str,
    measured: Duration,
    other: &str,
    other_time: Option<Duration>,
    goal: Option<f64>,
) {
    let goal_text = goal.map_or_else(|| "none".to_owned(), |goal| format!("≤ {goal}x"));
    let (other_time, ratio_text, met) = match other_time {
        Some(other_time) => {
            let over = ratio(measured, other_time);
            let precision = if over >= 10.0 { 1 } else { 2 };
            (
                format_duration(other_time),
                format!("{over:.precision$}x"),
                goal.map_or("", |goal| verdict(over <= goal)),
            )
        }
        None => ("n/a".to_owned(), "n/a".to_owned(), "n/a"),
    };
    println!(
        "| {command} | {} | {other} | {other_time} | {ratio_text} | {goal_text} | {met} |",
        format_duration(measured),
    );
}

/// Prints a table of the median wall time, CPU time and minor page faults
/// of each named set of samples, and the last two per test of `tests`.
pub(crate) fn usage_table<'a>(
    rows: impl IntoIterator<Item = (String, &'a [Sample])>,
    tests: usize,
) {
    println!("| command | wall | CPU | minor faults | CPU per test | faults per test |");
    println!("|---|---|---|---|---|---|");
    for (name, samples) in rows {
        let cpu = median(samples.iter().map(|sample| sample.cpu).collect());
        let faults = median(samples.iter().map(|sample| sample.faults).collect());
        println!(
            "| {name} | {} | {} | {faults} | {:.1} µs | {:.1} |",
            format_duration(median_wall(samples)),
            format_duration(cpu),
            cpu.as_secs_f64() * 1e6 / tests as f64,
            faults as f64 / tests as f64,
        );
    }
}
