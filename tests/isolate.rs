//! End-to-end tests of isolated calls: every way a call can end, seen as the
//! caller sees it.

use std::path::Path;
use std::time::Duration;

use isolate::buggy;
use isolate_harness::{Error, Isolate, ProtocolError, Termination};
use support::{backtrace_functions, is_running, stops_running, terminated, within};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test; these tests use some"
)]
mod support;

fn add_one(n: u64) -> u64 {
    n + 1
}

#[test]
fn a_call_returns_its_value_and_the_child_keeps_serving() {
    let isolate = Isolate::fork().unwrap();
    assert_eq!(isolate.call(add_one, 41).unwrap(), 42);
    assert_eq!(
        isolate
            .call(
                |words: Vec<String>| words.join(" "),
                vec!["a".into(), "b".into()]
            )
            .unwrap(),
        "a b"
    );
    assert_eq!(isolate_harness::run(add_one, 1).unwrap(), 2);
}

#[test]
fn fresh_children_on_one_thread_each_answer_for_themselves() {
    // Each one-shot child of a thread writes to the file the one before it
    // wrote to: a large reply, a crash, and what came before must not leak
    // into the next call's reply.
    let large = isolate_harness::run(|n: usize| vec![9_u8; n], 1 << 20).unwrap();
    assert_eq!(large.len(), 1 << 20);
    assert_eq!(isolate_harness::run(add_one, 1).unwrap(), 2);
    let termination = terminated(isolate_harness::run(|(): ()| buggy::dragons_here(), ()));
    assert_eq!(termination.signal().map(|signal| signal.number()), Some(11));
    assert_eq!(isolate_harness::run(add_one, 2).unwrap(), 3);
    // A child forked from here runs fresh children of its own.
    let isolate = Isolate::fork().unwrap();
    let nested = isolate
        .call(|n: u64| isolate_harness::run(add_one, n).unwrap(), 40)
        .unwrap();
    assert_eq!(nested, 41);
    assert_eq!(isolate_harness::run(add_one, 3).unwrap(), 4);
}

#[test]
fn a_child_starts_with_no_signal_blocked() {
    use nix::sys::signal::{SigSet, Signal};
    // The fork server blocks SIGTERM, which a timeout sends to the test:
    // a child must not inherit a blocked signal.
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    blocked.thread_block().unwrap();
    let in_child = isolate_harness::run(
        |(): ()| {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status
                .lines()
                .find(|line| line.starts_with("SigBlk:"))
                .unwrap();
            line.split_whitespace().nth(1).unwrap().to_owned()
        },
        (),
    );
    blocked.thread_unblock().unwrap();
    assert_eq!(in_child.unwrap(), "0000000000000000");
}

/// Answers with the bytes reversed, and their sum.
fn reverse_bytes(mut bytes: Vec<u8>) -> (Vec<u8>, u64) {
    bytes.reverse();
    let sum = bytes.iter().map(|&byte| u64::from(byte)).sum();
    (bytes, sum)
}

fn reverse_only(bytes: Vec<u8>) -> Vec<u8> {
    reverse_bytes(bytes).0
}

#[test]
fn byte_vectors_cross_both_ways_as_they_are() {
    let isolate = Isolate::fork().unwrap();
    // Bytes of every value, and more than a socket buffer holds.
    let bytes: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 251) as u8).collect();
    let mut reversed = bytes.clone();
    reversed.reverse();
    assert_eq!(isolate.call(reverse_only, bytes.clone()).unwrap(), reversed);
    assert_eq!(
        isolate.call(reverse_only, Vec::new()).unwrap(),
        Vec::<u8>::new()
    );
    // Inside another type, the bytes are encoded with the rest.
    let sum = bytes.iter().map(|&byte| u64::from(byte)).sum();
    assert_eq!(
        isolate.call(reverse_bytes, bytes.clone()).unwrap(),
        (reversed.clone(), sum)
    );
    assert_eq!(isolate.call(|n: usize| vec![7_u8; n], 5).unwrap(), [7; 5]);
    assert_eq!(isolate_harness::run(reverse_only, bytes).unwrap(), reversed);
}

/// The resident memory of the calling process, in bytes.
fn resident_bytes((): ()) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_serving_child_keeps_the_memory_a_call_freed_for_the_next() {
    const LEN: usize = 32 << 20;
    let isolate = Isolate::fork().unwrap();
    let before = isolate.call(resident_bytes, ()).unwrap();
    // The argument arrives in memory the child faults in, and `len` frees
    // it; the pages stay, so the next large argument lands on them.
    assert_eq!(
        isolate
            .call(|bytes: Vec<u8>| bytes.len(), vec![1; LEN])
            .unwrap(),
        LEN
    );
    let after = isolate.call(resident_bytes, ()).unwrap();
    assert!(
        after >= before + LEN as u64 * 9 / 10,
        "resident memory went from {before} to {after} bytes"
    );
}

#[test]
fn a_call_runs_in_another_process() {
    let isolate = Isolate::fork().unwrap();
    let child = isolate.call(|(): ()| std::process::id(), ()).unwrap();
    assert_ne!(child, std::process::id());
    assert_eq!(Some(child), isolate.id());
}

fn panics(message: String) -> u8 {
    panic!("{message}");
}

#[test]
fn a_panic_is_reported_and_the_child_lives_on() {
    let isolate = Isolate::fork().unwrap();
    let Err(Error::Panicked(report)) = isolate.call(panics, "dragons".to_owned()) else {
        panic!("expected a panic");
    };
    assert_eq!(report.message, "dragons");
    let location = report.location.as_deref().unwrap();
    assert!(location.starts_with("tests/isolate.rs:"), "{location}");
    assert!(isolate.is_alive());
    assert_eq!(isolate.call(add_one, 1).unwrap(), 2);
}

/// A value whose encoding panics.
#[derive(serde::Deserialize)]
struct EncodingBomb;

impl serde::Serialize for EncodingBomb {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("encoding the bomb");
    }
}

/// A value that encodes, and whose decoding panics.
#[derive(serde::Serialize)]
struct DecodingBomb;

impl<'de> serde::Deserialize<'de> for DecodingBomb {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<DecodingBomb, D::Error> {
        panic!("decoding the bomb");
    }
}

/// A value that encodes, then panics as it is dropped.
#[derive(serde::Serialize, serde::Deserialize)]
struct DropBomb(u8);

impl Drop for DropBomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropping the bomb");
        }
    }
}

#[test]
fn a_panic_outside_the_function_is_the_call_s_and_never_runs_the_caller_s_code() {
    let directory = tempfile::tempdir().unwrap();
    let panicked = |result: Result<u8, Error>| match result {
        Err(Error::Panicked(report)) => report.message,
        other => panic!("expected a panic, got {other:?}"),
    };
    let isolate = Isolate::fork().unwrap();
    let encoding = isolate.call(|(): ()| EncodingBomb, ()).map(|_| 0);
    assert_eq!(panicked(encoding), "encoding the bomb");
    let decoding = isolate.call(|_: DecodingBomb| 0_u8, DecodingBomb);
    assert_eq!(panicked(decoding), "decoding the bomb");
    let dropping = isolate.call(|n: u8| DropBomb(n), 1).map(|_| 0);
    assert_eq!(panicked(dropping), "dropping the bomb");
    assert_eq!(isolate.call(add_one, 1).unwrap(), 2, "the child serves on");
    let once = isolate_harness::run(|(): ()| EncodingBomb, ()).map(|_| 0);
    assert_eq!(panicked(once), "encoding the bomb");
    // A child that unwound into this function would run the rest of it:
    // only this process leaves its mark.
    std::fs::write(directory.path().join(std::process::id().to_string()), "").unwrap();
    let marks = std::fs::read_dir(directory.path()).unwrap().count();
    assert_eq!(marks, 1, "a child ran the caller's code");
}

/// Calls `add_one(n)` in an isolate of its own, then in a fresh child.
fn add_one_nested(n: u64) -> (u64, u64) {
    let inner = Isolate::fork().unwrap();
    let called = inner.call(add_one, n).unwrap();
    (called, isolate_harness::run(add_one, n).unwrap())
}

/// The first byte of the file `fd` names.
fn first_byte(fd: i32) -> u8 {
    let mut byte = [0_u8];
    // SAFETY: `byte` is a valid buffer of one byte.
    let read = unsafe { libc::pread(fd, byte.as_mut_ptr().cast(), 1, 0) };
    assert_eq!(read, 1, "{}", std::io::Error::last_os_error());
    byte[0]
}

/// Opens `path` and reads its first byte in a fresh child, by descriptor.
fn first_byte_nested(path: std::path::PathBuf) -> u8 {
    let file = std::fs::File::open(path).unwrap();
    isolate_harness::run(first_byte, std::os::fd::AsRawFd::as_raw_fd(&file)).unwrap()
}

#[test]
fn isolates_nest_in_a_child_of_any_kind() {
    // The parent has an isolate of its own: its channel is closed in each
    // child, and must stay closed, never another descriptor that took its
    // number.
    let outer = Isolate::fork().unwrap();
    assert_eq!(outer.call(add_one_nested, 1).unwrap(), (2, 2));
    assert_eq!(isolate_harness::run(add_one_nested, 2).unwrap(), (3, 3));
    assert_eq!(outer.call(add_one_nested, 3).unwrap(), (4, 4));
    // A descriptor the child opened, where the parent's channel was, is
    // the nested child's to use.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "x").unwrap();
    assert_eq!(
        outer
            .call(first_byte_nested, file.path().to_owned())
            .unwrap(),
        b'x'
    );
}

/// Moves this process out of its own process group, into its parent's,
/// then sleeps for `millis`.
fn leave_the_group_and_sleep(millis: u64) -> u8 {
    // SAFETY: plain system calls on this process.
    unsafe { libc::setpgid(0, libc::getpgid(libc::getppid())) };
    std::thread::sleep(Duration::from_millis(millis));
    0
}

#[test]
fn a_child_that_left_its_process_group_is_still_killed() {
    within(Duration::from_secs(60), || {
        let timed = Isolate::builder()
            .timeout(Duration::from_millis(200))
            .fork()
            .unwrap();
        let result = timed.call(leave_the_group_and_sleep, 3_600_000);
        assert!(matches!(result, Err(Error::TimedOut(_))), "{result:?}");
        // Out of its group and idle, dropped with its isolate.
        let isolate = Isolate::fork().unwrap();
        let pid = isolate.id().unwrap();
        assert_eq!(isolate.call(leave_the_group_and_sleep, 0).unwrap(), 0);
        drop(isolate);
        assert!(stops_running(pid));
    });
}

#[test]
fn a_segfault_names_the_signal_the_address_and_the_crash_site() {
    let termination = terminated(isolate_harness::run(|(): ()| buggy::dragons_here(), ()));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    assert_eq!(termination.crash().unwrap().fault_address, Some(0));
    assert!(!termination.crash().unwrap().stack_overflow);
    assert_eq!(
        termination.to_string(),
        "killed by signal 11 (SIGSEGV: invalid memory reference) at address 0x0"
    );
    let functions = backtrace_functions(&termination);
    assert!(
        functions
            .iter()
            .any(|name| name == "isolate::buggy::dragons_here"),
        "{functions:#?}"
    );
}

#[test]
fn an_abort_is_a_sigabrt_with_a_backtrace_and_no_address() {
    let termination = terminated(isolate_harness::run(|(): ()| buggy::abort(), ()));
    assert_eq!(termination.signal().unwrap().name(), "SIGABRT");
    assert_eq!(termination.crash().unwrap().fault_address, None);
    let functions = backtrace_functions(&termination);
    assert!(
        functions.iter().any(|name| name.contains("buggy::abort")),
        "{functions:#?}"
    );
}

#[test]
fn hardware_faults_are_named() {
    type Case = (fn(()), &'static str);
    let cases: [Case; 3] = [
        (|()| buggy::bus_error(), "SIGBUS"),
        (|()| buggy::illegal_instruction(), "SIGILL"),
        (|()| buggy::divide_by_zero(), "SIGFPE"),
    ];
    for (crash, name) in cases {
        let termination = terminated(isolate_harness::run(crash, ()));
        assert_eq!(termination.signal().unwrap().name(), name, "{termination}");
        let crash = termination.crash().expect("the crash handler reported");
        assert!(crash.fault_address.is_some(), "{termination}");
        assert!(!crash.backtrace.is_empty(), "{termination}");
    }
}

#[test]
fn sigkill_is_named_without_a_crash_report() {
    let termination = terminated(isolate_harness::run(buggy::raise, libc_sigkill()));
    assert_eq!(
        termination.to_string(),
        "killed by signal 9 (SIGKILL: killed)"
    );
    assert!(termination.crash().is_none());
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

#[test]
fn a_stack_overflow_is_recognized() {
    let termination = terminated(isolate_harness::run(buggy::overflow_stack, 0));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    assert!(
        termination.crash().unwrap().stack_overflow,
        "{termination:?}"
    );
    assert!(
        termination
            .to_string()
            .starts_with("stack overflow: killed by signal 11"),
        "{termination}"
    );
}

#[test]
fn a_stack_overflow_s_error_reads_in_a_few_lines() {
    let error = isolate_harness::run(buggy::overflow_stack, 0).unwrap_err();
    let pretty = format!("{error:#?}");
    assert!(
        pretty.contains("more frames of `isolate::buggy::overflow_stack`"),
        "{pretty}"
    );
    assert!(pretty.lines().count() < 40, "{pretty}");
    let line = format!("{error:?}");
    assert!(line.len() < 2000, "{line}");
    assert!(line.contains("fault_address: Some(0x"), "{line}");
    let termination = error.termination().unwrap();
    let backtrace = &termination.crash().unwrap().backtrace;
    assert!(backtrace.frames.len() > 100, "{backtrace}");
    assert!(backtrace.to_string().lines().count() < 20, "{backtrace}");
}

#[test]
fn an_exit_without_a_reply_is_an_error_even_with_code_zero() {
    for code in [0, 3] {
        let termination = terminated(isolate_harness::run(buggy::exit, code));
        assert_eq!(termination, Termination::Exited { code });
        assert_eq!(
            termination.to_string(),
            format!("exited with code {code} before replying")
        );
    }
}

/// Starts a daemon that leaves its session, through a shell that exits at
/// once, and returns the daemon's pid.
fn spawn_detached_daemon(_: ()) -> u32 {
    let output = std::process::Command::new("sh")
        .args(["-c", "setsid sleep 20 </dev/null >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_detached_daemon_dies_with_its_isolate() {
    let isolate = Isolate::fork().unwrap();
    let daemon = isolate.call(spawn_detached_daemon, ()).unwrap();
    assert!(is_running(daemon));
    drop(isolate);
    assert!(stops_running(daemon), "the daemon outlived its isolate");

    // After a restart too, and after a timeout.
    let isolate = Isolate::builder()
        .timeout(Duration::from_millis(300))
        .grace_period(Duration::from_millis(100))
        .fork()
        .unwrap();
    let daemon = isolate.call(spawn_detached_daemon, ()).unwrap();
    isolate.restart().unwrap();
    assert!(stops_running(daemon), "the daemon outlived a restart");
    let daemon = isolate.call(spawn_detached_daemon, ()).unwrap();
    assert!(matches!(isolate.call(hang, ()), Err(Error::TimedOut(_))));
    assert!(stops_running(daemon), "the daemon outlived a timeout");

    // And when the child ends by itself: a one-shot call that returns, a
    // crash, an `exit`.
    let daemon = isolate_harness::run(spawn_detached_daemon, ()).unwrap();
    assert!(stops_running(daemon), "the daemon outlived run()");
    let crash: fn(()) = |()| buggy::dragons_here();
    let exit: fn(()) = |()| buggy::exit(0);
    for end in [crash, exit] {
        let isolate = Isolate::fork().unwrap();
        let daemon = isolate.call(spawn_detached_daemon, ()).unwrap();
        let ended = isolate.call(end, ());
        assert!(matches!(ended, Err(Error::Terminated(_))), "{ended:?}");
        assert!(
            stops_running(daemon),
            "the daemon outlived a child that ended"
        );
    }
}

fn hang(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_hung_call_times_out_and_its_process_group_is_killed() {
    let isolate = Isolate::builder()
        .timeout(Duration::from_millis(300))
        .grace_period(Duration::from_millis(200))
        .fork()
        .unwrap();
    let grandchild = isolate.call(spawn_sleeper, ()).unwrap();
    assert!(is_running(grandchild));
    let Err(Error::TimedOut(timed_out)) = isolate.call(hang, ()) else {
        panic!("expected a timeout");
    };
    assert_eq!(timed_out.limit, Duration::from_millis(300));
    assert_eq!(timed_out.termination.signal().unwrap().name(), "SIGTERM");
    assert!(
        stops_running(grandchild),
        "the grandchild outlived the timeout"
    );
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    fn ignore_sigterm_and_hang(_: ()) {
        // SAFETY: SIG_IGN is a valid disposition for SIGTERM.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let Err(Error::TimedOut(timed_out)) = Isolate::builder()
        .timeout(Duration::from_millis(100))
        .grace_period(Duration::from_millis(100))
        .run(ignore_sigterm_and_hang, ())
    else {
        panic!("expected a timeout");
    };
    assert_eq!(timed_out.termination.signal().unwrap().name(), "SIGKILL");
}

#[test]
fn the_memory_limit_turns_a_failed_allocation_into_out_of_memory() {
    let limited = Isolate::builder().memory_limit(64 << 20);
    assert_eq!(limited.run(buggy::allocate, 8 << 20).unwrap(), 8 << 20);
    let Err(Error::OutOfMemory(out_of_memory)) = limited.run(buggy::allocate, 512 << 20) else {
        panic!("expected out of memory");
    };
    assert_eq!(out_of_memory.limit, Some(64 << 20));
    assert_eq!(
        out_of_memory.termination.signal().unwrap().name(),
        "SIGABRT"
    );
    assert!(
        out_of_memory
            .to_string()
            .starts_with("child ran out of memory")
    );
}

/// Writes to a standard stream's descriptor. Inside a libtest test,
/// `print!` writes to the test thread's capture buffer, of which the child
/// has only a copy; and the stdout lock may have been held by another
/// thread when the child was forked.
fn write_fd(fd: impl std::os::fd::AsFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(&fd, bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(error) => panic!("write failed: {error}"),
        }
    }
}

fn write_lots(megabytes: usize) -> usize {
    let line = [b'x'; 1024];
    for _ in 0..megabytes * 1024 {
        write_fd(std::io::stdout(), &line);
    }
    write_fd(std::io::stderr(), b"done");
    megabytes
}

#[test]
fn fifty_megabytes_of_captured_output_do_not_deadlock() {
    let isolate = Isolate::builder().capture_output(true).fork().unwrap();
    assert_eq!(isolate.call(write_lots, 50).unwrap(), 50);
    let output = isolate.take_output();
    assert_eq!(output.stdout.len(), 50 << 20);
    assert_eq!(output.stderr, b"done");
    assert!(isolate.take_output().stdout.is_empty());
}

#[test]
fn output_written_before_a_crash_is_kept() {
    let isolate = Isolate::builder().capture_output(true).fork().unwrap();
    let termination = terminated(isolate.call(
        |(): ()| {
            write_fd(std::io::stdout(), b"last words\n");
            buggy::dragons_here();
        },
        (),
    ));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    assert_eq!(isolate.take_output().stdout, b"last words\n");
}

/// Leaves a grandchild running, in the child's process group, for the
/// isolate's clean-up to find.
#[expect(
    clippy::zombie_processes,
    reason = "the grandchild is left behind on purpose"
)]
fn spawn_sleeper(_: ()) -> u32 {
    let child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    child.id()
}

#[test]
fn dropping_an_isolate_leaves_no_process_behind() {
    let isolate = Isolate::fork().unwrap();
    let child = isolate.id().unwrap();
    let grandchild = isolate.call(spawn_sleeper, ()).unwrap();
    assert!(is_running(child) && is_running(grandchild));
    drop(isolate);
    assert!(
        !Path::new(&format!("/proc/{child}")).exists(),
        "the child was not reaped"
    );
    assert!(
        stops_running(grandchild),
        "the grandchild outlived the isolate"
    );
}

/// The first error of a child that ended, as a later call returns it.
fn dead<R: std::fmt::Debug>(result: Result<R, Error>) -> std::sync::Arc<Error> {
    match result {
        Err(Error::Dead(first)) => first,
        other => panic!("expected the child to be dead already, got {other:?}"),
    }
}

#[test]
fn a_dead_isolate_returns_the_same_termination_until_restarted() {
    let isolate = Isolate::fork().unwrap();
    let first = terminated(isolate.call(|(): ()| buggy::dragons_here(), ()));
    assert!(!isolate.is_alive());
    for n in 1..3 {
        let error = isolate.call(add_one, n).unwrap_err();
        assert_eq!(error.termination(), Some(&first));
        assert!(matches!(&error, Error::Dead(dead) if matches!(**dead, Error::Terminated(_))));
        let text = error.to_string();
        assert!(
            text.contains("SIGSEGV") && text.contains("Isolate::restart"),
            "{text}"
        );
    }

    isolate.restart().unwrap();
    assert_eq!(isolate.call(add_one, 1).unwrap(), 2);
    let second = terminated(isolate.call(|(): ()| buggy::abort(), ()));
    assert_eq!(second.signal().unwrap().name(), "SIGABRT");
}

#[test]
fn two_crashes_in_a_row_are_both_reported() {
    for _ in 0..2 {
        let termination = terminated(isolate_harness::run(|(): ()| buggy::dragons_here(), ()));
        assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    }
}

#[test]
fn many_isolates_at_once_from_several_threads() {
    let threads: Vec<_> = (0..8_u64)
        .map(|thread| {
            std::thread::spawn(move || {
                let isolate = Isolate::fork().unwrap();
                for n in 0..20 {
                    assert_eq!(
                        isolate.call(add_one, thread * 100 + n).unwrap(),
                        thread * 100 + n + 1
                    );
                }
                let termination =
                    terminated(isolate_harness::run(|(): ()| buggy::dragons_here(), ()));
                assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
                isolate.id().unwrap()
            })
        })
        .collect();
    for thread in threads {
        let child = thread.join().unwrap();
        assert!(
            !Path::new(&format!("/proc/{child}")).exists(),
            "child {child} left behind"
        );
    }
}

static LOADED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[test]
fn the_setup_hook_runs_in_the_child_before_it_serves() {
    use std::sync::atomic::Ordering;
    let isolate = Isolate::builder()
        .setup(|| LOADED.store(7, Ordering::SeqCst))
        .fork()
        .unwrap();
    assert_eq!(
        isolate
            .call(|(): ()| LOADED.load(Ordering::SeqCst), ())
            .unwrap(),
        7
    );
    assert_eq!(
        LOADED.load(Ordering::SeqCst),
        0,
        "the hook ran in the parent"
    );
}

#[test]
fn a_panicking_setup_hook_fails_the_fork() {
    let error = Isolate::builder()
        .setup(|| panic!("no library"))
        .fork()
        .err()
        .unwrap();
    assert!(
        matches!(&error, Error::Panicked(report) if report.message == "no library"),
        "{error:?}"
    );
}

#[test]
fn a_crashing_setup_hook_fails_the_fork() {
    let error = Isolate::builder()
        .setup(buggy::dragons_here)
        .fork()
        .err()
        .unwrap();
    assert_eq!(
        terminated::<()>(Err(error)).signal().unwrap().name(),
        "SIGSEGV"
    );
}

#[test]
fn an_oversized_result_fails_the_call_and_the_child_serves_on() {
    let isolate = Isolate::builder().max_frame_size(1024).fork().unwrap();
    let error = isolate.call(|n: usize| vec![0_u8; n], 4096).unwrap_err();
    assert!(
        matches!(&error, Error::CallFailed(reason) if reason.contains("exceeds the frame cap of 1024 bytes")),
        "{error:?}"
    );
    assert_eq!(isolate.call(|n: u32| n + 1, 1).unwrap(), 2);
}

#[test]
fn an_oversized_argument_fails_the_call_and_the_child_serves_on() {
    let isolate = Isolate::builder().max_frame_size(1024).fork().unwrap();
    let error = isolate
        .call(|bytes: Vec<u8>| bytes.len(), vec![7_u8; 4096])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Protocol(ProtocolError::FrameTooLarge { cap: 1024, .. })
        ),
        "{error:?}"
    );
    let error = isolate.call(|text: String| text.len(), "x".repeat(4096));
    assert!(
        matches!(
            &error,
            Err(Error::Protocol(ProtocolError::FrameTooLarge {
                cap: 1024,
                ..
            }))
        ),
        "{error:?}"
    );
    assert!(isolate.is_alive());
    assert_eq!(isolate.call(|n: u32| n + 1, 1).unwrap(), 2);
}

/// Writes a well-formed reply, for call 0, onto every socket the child
/// holds, then returns.
fn forge_a_reply(_: ()) -> u32 {
    // A `Returned` frame of call 0 whose value is the `u32` 7.
    let frame = [10_u8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    for fd in 3..1024 {
        // SAFETY: fstat and write get valid buffers; a descriptor that is
        // not open fails harmlessly.
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                libc::write(fd, frame.as_ptr().cast(), frame.len());
            }
        }
    }
    1
}

#[test]
fn a_reply_a_call_forges_on_its_channel_never_shifts_results() {
    let isolate = Isolate::fork().unwrap();
    let error = isolate.call(forge_a_reply, ()).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Protocol(ProtocolError::StrayReply { got: 0, .. })
        ),
        "{error:?}"
    );
    // The channel is out of step, so the child is gone: no later call gets
    // the value the forged or the real reply carried.
    assert!(!isolate.is_alive());
    let later = dead(isolate.call(|n: u32| n, 5));
    assert!(matches!(
        *later,
        Error::Protocol(ProtocolError::StrayReply { .. })
    ));
}

/// Forks; the copy returns too, with its own pid.
fn fork_and_return_pid(_: ()) -> u32 {
    // SAFETY: the test forks on purpose; both sides only return.
    unsafe { libc::fork() };
    std::process::id()
}

#[test]
fn a_copy_a_call_forks_does_not_answer_for_it() {
    let isolate = Isolate::fork().unwrap();
    for _ in 0..3 {
        assert_eq!(
            isolate.call(fork_and_return_pid, ()).unwrap(),
            isolate.id().unwrap()
        );
    }
    assert_eq!(isolate.call(|n: u32| n * 2, 21).unwrap(), 42);
}

/// Forks; the copy returns at once, and the process the caller started
/// crashes once the copy is gone.
fn copy_returns_then_crash(_: ()) {
    // SAFETY: the test forks on purpose; the copy only returns.
    match unsafe { libc::fork() } {
        0 => {}
        copy => {
            // SAFETY: waits for the copy just forked.
            unsafe { libc::waitpid(copy, std::ptr::null_mut(), 0) };
            buggy::dragons_here();
        }
    }
}

#[test]
fn a_crash_after_a_copy_returned_is_a_crash() {
    let termination = terminated(isolate_harness::run(copy_returns_then_crash, ()));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    let isolate = Isolate::fork().unwrap();
    let termination = terminated(isolate.call(copy_returns_then_crash, ()));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
}

#[isolate_harness::isolated]
fn parse_digits(text: String, radix: u32) -> u64 {
    if text.is_empty() {
        buggy::dragons_here();
    }
    u64::from_str_radix(&text, radix).unwrap()
}

#[isolate_harness::isolated]
fn touch_nothing() {}

#[test]
fn isolated_functions_run_each_call_in_a_fresh_child() {
    assert_eq!(parse_digits("ff".to_owned(), 16).unwrap(), 255);
    let termination = terminated(parse_digits(String::new(), 10));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    assert!(matches!(
        parse_digits("zz".to_owned(), 10),
        Err(Error::Panicked(_))
    ));
    touch_nothing().unwrap();
}

/// The inodes of the sockets process `pid` holds.
fn sockets_of(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

#[test]
fn no_child_holds_another_isolate_s_channel() {
    let before = sockets_of("self");
    let first = Isolate::fork().unwrap();
    // The sockets this process gained: the parent's end of `first`'s
    // channel (and whatever another test opened meanwhile).
    let gained: Vec<String> = sockets_of("self")
        .into_iter()
        .filter(|socket| !before.contains(socket))
        .collect();
    assert!(!gained.is_empty());
    let second = Isolate::fork().unwrap();
    // A one-shot child, looked at once it runs its call, past its setup.
    let ready = std::env::temp_dir().join(format!("isolate-ready-{}", std::process::id()));
    let one_shot = isolate_harness::start(
        |ready: std::path::PathBuf| {
            std::fs::write(ready, b"").unwrap();
            std::thread::sleep(Duration::from_secs(30));
        },
        ready.clone(),
    )
    .unwrap();
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_file(&ready).unwrap();
    for pid in [second.id().unwrap(), one_shot.id().unwrap()] {
        let held = sockets_of(&pid.to_string());
        assert!(
            gained.iter().all(|socket| !held.contains(socket)),
            "child {pid} holds {held:?}, among them the parent's end of another isolate's channel ({gained:?})"
        );
    }
    assert_eq!(first.call(add_one, 1).unwrap(), 2);
    assert_eq!(second.call(add_one, 2).unwrap(), 3);
}
