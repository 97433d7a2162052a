//! Child processes: the one `fork()` call site, what a child sets up before
//! any user code runs, and waiting for and killing it without races.
//!
//! # The fork rule
//!
//! After `fork()` the child has one thread; any lock another thread of the
//! parent held stays locked. So between `fork()` and the return of
//! [`fork`] in the child, only async-signal-safe calls are made: the system
//! calls `getpid`, `setpgid`, `rt_sigprocmask`, `prctl`, `getppid`, `dup3`,
//! `close`, `setrlimit` and `sigaltstack` (through libc's `syscall`, which
//! takes no lock), and `sigaction`. Everything they need is prepared before
//! forking, in a [`ChildSetup`] and the list of descriptors to close.
//!
//! # Who is the child
//!
//! A child records its own pid as it starts: it is the *owner* of what its
//! parent set up for it (its channel, its result region, its crash report).
//! A process the child forks is a copy with the same memory but another
//! pid, and [`is_owner`] tells it apart: a copy that returns from the
//! test or call it was forked in sends no result and no crash report, so
//! no process but the one the parent started speaks for the test.
//!
//! # Waiting and killing
//!
//! A pid can be reused once it is reaped, so signalling a pid that may have
//! been reaped can hit a stranger. [`Child`] holds an explicit state: while
//! it is `Running` (not reaped) its pid and its process group (whose id is
//! its pid) are ours, to wait for and to signal; [`Child::wait`] first
//! waits *without* reaping (`WNOWAIT`), so the zombie still pins the group
//! id, kills whatever the child left in its group, and only then reaps and
//! moves to `Exited`. No signal is sent after that.
//!
//! A pidfd, which polls readable when the child exits, is opened only for
//! a child whose exit must be polled for together with other descriptors or
//! with a timeout: a plain wait is a `waitid` on the pid, which costs a
//! one-shot child a good part less (no descriptor to make and close, and
//! one wake-up path instead of two).
//!
//! What this does not do: find processes that left the child's group (with
//! `setsid` or `setpgid`). A child made a subreaper
//! ([`ChildSetup::subreaper`]) keeps them below it; finding them there is
//! the caller's part (see [`crate::fork_server`] and [`kill_subtree`]).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::unistd::Pid;

use crate::crash::{self, Crash};

/// What a child sets up right after `fork()`, prepared by the parent.
#[derive(Clone, Copy)]
pub(crate) struct ChildSetup {
    /// The pid of the parent, to notice if it died before `PR_SET_PDEATHSIG`
    /// took effect.
    pub(crate) parent: Pid,
    /// The child's end of its channel, where crash reports go.
    pub(crate) report_fd: RawFd,
    /// Write ends of the capture pipes, to become stdout and stderr.
    pub(crate) output: Option<(RawFd, RawFd)>,
    /// The `RLIMIT_AS` to set, in bytes.
    pub(crate) address_space_limit: Option<u64>,
    /// The low end of the forking thread's stack, for stack-overflow
    /// detection.
    pub(crate) stack_low: usize,
    /// The signal the child gets when the thread that forked it exits, if
    /// any.
    pub(crate) death_signal: Option<NixSignal>,
    /// Whether the child is a subreaper: a process it starts that loses
    /// its parent (a daemon that double-forked, a `setsid` escapee) is
    /// reparented to the child rather than to whoever is above it, so that
    /// everything it started stays below it while it lives.
    pub(crate) subreaper: bool,
    /// Whether the child kills what it started before it ends, whichever
    /// way it ends but SIGKILL (see [`kill_own_descendants`]): for a child
    /// whose parent is no subreaper to collect it afterwards.
    pub(crate) kill_descendants_at_end: bool,
}

impl ChildSetup {
    /// A setup for a child of this process reporting on `report_fd`.
    pub(crate) fn new(report_fd: RawFd) -> ChildSetup {
        ChildSetup {
            parent: nix::unistd::getpid(),
            report_fd,
            output: None,
            address_space_limit: None,
            stack_low: crash::current_stack_low(),
            death_signal: Some(NixSignal::SIGKILL),
            subreaper: false,
            kill_descendants_at_end: false,
        }
    }
}

/// Whether the calling thread is the process's main thread, whose end is
/// the process's.
pub(crate) fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// Which side of a fork this is.
pub(crate) enum Forked {
    Parent(Child),
    Child,
}

/// Forks, and in the child performs `setup` and closes the descriptors in
/// `close` before returning.
///
/// The child is the leader of a new process group, is killed when the
/// parent thread that forked it exits (`PR_SET_PDEATHSIG`, when
/// [`ChildSetup::death_signal`] names one), has stdout and
/// stderr on the capture pipes if asked, its address space limited if
/// asked, the crash handler installed, and none of the descriptors of
/// `close` (the forking process's own: channels to other children, its
/// report stream), so that no child can write where only its parent may.
/// Descriptors 0 to 2 are never closed.
///
/// # Errors
///
/// When `fork` fails.
pub(crate) fn fork(setup: &ChildSetup, close: &[RawFd]) -> io::Result<Forked> {
    static RESOLVE: std::sync::Once = std::sync::Once::new();
    RESOLVE.call_once(resolve_child_calls);
    // SAFETY: in the child, only async-signal-safe calls follow until
    // `prepare_child` returns (see the module docs); the child never returns
    // into code that assumes other threads exist.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: this is the freshly forked child, before user code.
            unsafe { prepare_child(setup, close) };
            Ok(Forked::Child)
        }
        pid => {
            let pid = Pid::from_raw(pid);
            // Both sides set the group, so it is in place whichever runs
            // first; EACCES/ESRCH only mean the child got there or is gone.
            let _ = nix::unistd::setpgid(pid, pid);
            Ok(Forked::Parent(Child {
                pid,
                pidfd: OnceLock::new(),
                state: State::Running,
            }))
        }
    }
}

/// Calls, harmlessly, each libc function a child calls after `fork`:
/// `syscall` and `sigaction`.
///
/// Where symbols are bound lazily, the first call of a function resolves
/// it and writes the result into the process's own table. Done in a child,
/// that costs every child a symbol lookup and a copy-on-write fault, and is
/// lost when the child exits; done once here, every child inherits it.
fn resolve_child_calls() {
    // SAFETY: `getpid` has no arguments, and `sigaction` with no new action
    // only reads the current one into a valid local.
    unsafe {
        libc::syscall(libc::SYS_getpid);
        let mut action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut action);
    }
}

/// Sets up a just-forked child.
///
/// Each step but the signal handlers is made through libc's `syscall`,
/// which [`exit_child`] needs anyway, rather than through its own libc
/// wrapper: a fork starts without the parent's code mapped, and faults in
/// every page of code it runs, while the wrappers lie on pages of their
/// own. (`sigaction` keeps its wrapper, which supplies the return
/// trampoline the kernel needs.)
///
/// # Safety
///
/// Only in a child just forked, before any user code.
unsafe fn prepare_child(setup: &ChildSetup, close: &[RawFd]) {
    become_owner();
    // SAFETY: every call below is async-signal-safe and points only to
    // valid locals; integers go as `c_long`, which is what `syscall` reads
    // each argument as; the descriptors were opened by the parent for this
    // child, and those closed are the parent's own.
    unsafe {
        libc::syscall(libc::SYS_setpgid, 0 as libc::c_long, 0 as libc::c_long);
        // A forking process may block signals (the fork server blocks
        // SIGTERM); a child starts with none blocked, so a timeout's
        // SIGTERM reaches it. (A zeroed set is the empty set; the kernel's
        // set is 8 bytes.)
        let unblocked: libc::sigset_t = std::mem::zeroed();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::c_long::from(libc::SIG_SETMASK),
            &unblocked,
            std::ptr::null_mut::<libc::sigset_t>(),
            8 as libc::c_long,
        );
        if let Some(signal) = setup.death_signal {
            libc::syscall(
                libc::SYS_prctl,
                libc::c_long::from(libc::PR_SET_PDEATHSIG),
                signal as libc::c_long,
            );
        }
        // Written only where it changes (see `crash::install`).
        if KILL_DESCENDANTS_AT_END.load(Ordering::SeqCst) != setup.kill_descendants_at_end {
            KILL_DESCENDANTS_AT_END.store(setup.kill_descendants_at_end, Ordering::SeqCst);
        }
        if setup.subreaper {
            libc::syscall(
                libc::SYS_prctl,
                libc::c_long::from(libc::PR_SET_CHILD_SUBREAPER),
                1 as libc::c_long,
            );
        }
        if libc::syscall(libc::SYS_getppid) != libc::c_long::from(setup.parent.as_raw()) {
            // The parent died before PR_SET_PDEATHSIG was in place.
            exit_child(1);
        }
        if let Some((stdout, stderr)) = setup.output {
            for (from, to) in [(stdout, libc::STDOUT_FILENO), (stderr, libc::STDERR_FILENO)] {
                // `dup3` rather than `dup2`, which not every architecture
                // has; it refuses `from == to`, where there is nothing to do.
                libc::syscall(
                    libc::SYS_dup3,
                    libc::c_long::from(from),
                    libc::c_long::from(to),
                    0 as libc::c_long,
                );
            }
        }
        close_all(close);
        if let Some(limit) = setup.address_space_limit {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::syscall(libc::SYS_setrlimit, libc::RLIMIT_AS as libc::c_long, &limit);
        }
        // Where the forking process has them (the fork server), the child
        // inherited them, and this does nothing.
        crash::install(setup.stack_low);
        crash::report_to(setup.report_fd);
    }
}

/// Closes the descriptors of `close` above stderr: each run of
/// consecutive ones (`close` sorted makes the longest) with one
/// `close_range`, or one by one where the kernel has no `close_range`
/// (before Linux 5.9). Async-signal-safe.
///
/// # Safety
///
/// As [`prepare_child`]: the descriptors are the forking process's own,
/// and nothing in this process uses them.
unsafe fn close_all(close: &[RawFd]) {
    let mut rest = close;
    while let Some((&first, after)) = rest.split_first() {
        let run = after
            .iter()
            .zip(1..)
            .take_while(|&(&fd, step)| Some(fd) == first.checked_add(step))
            .count();
        let last = first + run as RawFd;
        rest = &after[run..];
        if last <= libc::STDERR_FILENO {
            continue;
        }
        let first = first.max(libc::STDERR_FILENO + 1);
        // SAFETY: closing descriptors this process does not use.
        let closed = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                libc::c_long::from(first),
                libc::c_long::from(last),
                0 as libc::c_long,
            )
        };
        if closed != 0 {
            for fd in first..=last {
                // SAFETY: as above.
                unsafe { libc::syscall(libc::SYS_close, libc::c_long::from(fd)) };
            }
        }
    }
}

/// What a child records about itself as it starts. One static rather than
/// two, so that its writes cost the child one copied page: two statics may
/// lie on two pages, and a test child is forked from a process that has
/// them, a copy-on-write fault per page written.
struct Identity {
    /// The pid of the process a child was set up as; 0 in a process that
    /// is no child of this library.
    owner: AtomicU32,
    /// The start of the region the child appends its result to, if any
    /// (see [`crate::reply_region`]).
    reply_region: AtomicPtr<u8>,
}

static IDENTITY: Identity = Identity {
    owner: AtomicU32::new(0),
    reply_region: AtomicPtr::new(std::ptr::null_mut()),
};

/// Where this process's reply region starts, null if it has none: kept
/// with its owner's pid, which every child writes too.
pub(crate) fn reply_region() -> &'static AtomicPtr<u8> {
    &IDENTITY.reply_region
}

/// The pid of the calling process, from the kernel (never cached).
/// Async-signal-safe.
pub(crate) fn own_pid() -> u32 {
    // SAFETY: getpid takes no arguments and cannot fail.
    let pid = unsafe { libc::syscall(libc::SYS_getpid) };
    pid as u32
}

/// Makes the calling process the owner of what its parent set up for the
/// child it forked. Async-signal-safe.
pub(crate) fn become_owner() {
    IDENTITY.owner.store(own_pid(), Ordering::SeqCst);
}

/// Whether the calling process is the child its parent forked and set up,
/// rather than a copy that child forked. Async-signal-safe.
pub(crate) fn is_owner() -> bool {
    is_owner_pid(own_pid())
}

/// Whether `pid`, the calling process's, is the pid of the child its
/// parent forked and set up: [`is_owner`] for a caller that has its pid.
/// Async-signal-safe.
pub(crate) fn is_owner_pid(pid: u32) -> bool {
    IDENTITY.owner.load(Ordering::SeqCst) == pid
}

/// Ends the calling child at once, without running the parent's exit
/// handlers or flushing the stdio buffers it inherited: `_exit`, made as
/// the system call itself, which [`resolve_child_calls`] has bound already.
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: exit_group ends the process and does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, libc::c_long::from(code)) };
    unreachable!("exit_group returned")
}

/// The address space this process maps now, in bytes (`VmSize`): what a
/// child forked now starts with, and what its memory limit counts from.
pub(crate) fn address_space_size() -> u64 {
    let kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmSize:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    kib * 1024
}

/// Warns, once per process, when forking a process that has more threads
/// than the one forking, and says whether it has.
pub(crate) fn warn_if_threaded() -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let threads = thread_count();
    if threads > 1 && !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "isolate: warning: forking a process that runs {threads} threads. The child \
             gets a copy of the calling thread only; a lock another thread held at that \
             moment (in the allocator, on stdout, a mutex of yours) stays locked in the \
             child, and a call that needs it hangs. Fork before starting threads where you can."
        );
    }
    threads > 1
}

/// The number of threads of this process: the link count of
/// `/proc/self/task` is two plus one per thread, and costs one `stat`.
fn thread_count() -> u64 {
    std::fs::metadata("/proc/self/task").map_or(1, |task| task.nlink().saturating_sub(2))
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; PIDFD_NONBLOCK is not asked for.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::c_long::from(pid.as_raw()),
            0 as libc::c_long,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    // pidfds are always close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits up to `timeout` for the process of `pidfd` to exit; returns
/// whether it has.
pub(crate) fn pidfd_exited(pidfd: BorrowedFd<'_>, timeout: PollTimeout) -> io::Result<bool> {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, timeout) {
            Ok(ready) => return Ok(ready > 0),
            Err(nix::errno::Errno::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// A child process of ours, not reaped until it has ended.
pub(crate) struct Child {
    pid: Pid,
    /// Opened at the first [`Child::pidfd`].
    pidfd: OnceLock<OwnedFd>,
    state: State,
}

enum State {
    /// Not reaped: the pid and the group id are ours to signal.
    Running,
    /// Known to have exited, and not reaped: a zombie, whose pid and group
    /// id are still ours.
    Ended,
    /// Reaped; nothing may be signalled any more.
    Exited(ExitStatus),
}

/// How a child process ended, as `waitid` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ExitStatus {
    Code(i32),
    Signal { signal: Signal, core_dumped: bool },
}

impl Child {
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// A descriptor that polls readable once the child has exited, opened
    /// at the first call.
    ///
    /// # Errors
    ///
    /// When `pidfd_open` fails, or the child has been reaped (its pid may
    /// name another process by now).
    pub(crate) fn pidfd(&self) -> io::Result<BorrowedFd<'_>> {
        if let Some(pidfd) = self.pidfd.get() {
            return Ok(pidfd.as_fd());
        }
        if let State::Exited(_) = self.state {
            return Err(io::Error::other("the child has been reaped"));
        }
        let pidfd = pidfd_open(self.pid)?;
        Ok(self.pidfd.get_or_init(|| pidfd).as_fd())
    }

    /// Sends `signal` to the child's process group, if it is not reaped,
    /// and to the child itself if it has moved to another group (which
    /// the group's signal would miss, and its reaper wait for forever).
    pub(crate) fn signal_group(&self, signal: NixSignal) {
        if !matches!(self.state, State::Exited(_)) {
            // ESRCH: the whole group is gone already.
            let _ = killpg(self.pid, signal);
            if nix::unistd::getpgid(Some(self.pid)) != Ok(self.pid) {
                let _ = nix::sys::signal::kill(self.pid, signal);
            }
        }
    }

    /// Whether the child has exited (and is not reaped yet, or is). A
    /// failed check counts as exited: the child is not ours to wait for.
    pub(crate) fn has_exited(&mut self) -> bool {
        if let State::Running = self.state {
            match waitid(self.pid, libc::WNOHANG | libc::WNOWAIT) {
                Ok(None) => return false,
                Ok(Some(_)) => self.state = State::Ended,
                Err(_) => {}
            }
        }
        true
    }

    /// Waits up to `timeout` (forever for `None`) for the child to exit,
    /// without reaping it. Returns whether it has exited.
    pub(crate) fn wait_exit(&self, timeout: Option<Duration>) -> io::Result<bool> {
        if !matches!(self.state, State::Running) {
            return Ok(true);
        }
        let Some(timeout) = timeout else {
            wait_until_exited(self.pid, libc::WNOWAIT)?;
            return Ok(true);
        };
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        pidfd_exited(self.pidfd()?, timeout)
    }

    /// Waits for the child to exit, kills whatever it left in its process
    /// group, then reaps it.
    ///
    /// # Errors
    ///
    /// When `waitid` fails, which only a bug or a `SIGCHLD` set to ignore
    /// (the kernel then reaps children itself) can cause.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        match self.state {
            State::Exited(status) => return Ok(status),
            State::Running => {
                wait_until_exited(self.pid, libc::WNOWAIT)?;
            }
            State::Ended => {}
        }
        // The zombie leader still holds the group id, so this reaches only
        // what the child left behind.
        self.signal_group(NixSignal::SIGKILL);
        let status = wait_until_exited(self.pid, 0)?;
        self.state = State::Exited(status);
        Ok(status)
    }

    /// Kills everything below the child, if it still runs, then the child
    /// and its group, without reaping: see [`kill_subtree`]. (Below a child
    /// that has exited there is nothing left to walk: its orphans went to
    /// whoever reaps above it. Asking costs one `waitid`, where the walk
    /// reads `/proc`.)
    pub(crate) fn kill_all(&mut self) {
        if !self.has_exited() {
            kill_subtree(self.pid);
        }
        self.signal_group(NixSignal::SIGKILL);
    }

    /// Kills the child, everything below it and its group at once, and
    /// reaps it. Every process in the group has its SIGKILL before the
    /// leader is reaped, and a process with a SIGKILL pending can no
    /// longer fork, so, unlike [`Child::wait`], this need not signal the
    /// group again.
    ///
    /// # Errors
    ///
    /// As [`Child::wait`].
    pub(crate) fn kill(&mut self) -> io::Result<ExitStatus> {
        if let State::Exited(status) = self.state {
            return Ok(status);
        }
        self.kill_all();
        let status = wait_until_exited(self.pid, 0)?;
        self.state = State::Exited(status);
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Whether this process, a child, kills its descendants when it ends.
static KILL_DESCENDANTS_AT_END: AtomicBool = AtomicBool::new(false);

/// Kills everything below this process, if it is a child that is to, and
/// reaps what it can: called as it ends, by returning, by `exit`, or by a
/// fatal signal its crash handler caught. Async-signal-safe: system calls
/// and a buffer on the stack.
///
/// The process is a subreaper, so what it started is below it; what a
/// process it kills had started is handed to it in turn, and killed in the
/// next round. Only the children of its first thread are found, which is
/// where orphans are handed: a process a thread of the caller's started
/// itself, and that has not lost its parent, is not.
pub(crate) fn kill_own_descendants() {
    if !KILL_DESCENDANTS_AT_END.load(Ordering::SeqCst) || !is_owner() || !has_children() {
        return;
    }
    let mut path = [0_u8; 48];
    let Some(path) = children_path(own_pid(), &mut path) else {
        return;
    };
    for _ in 0..SUBTREE_ROUNDS {
        let mut list = [0_u8; 1024];
        // SAFETY: `path` is NUL-terminated; `list` is a valid buffer of
        // its length; the descriptor is closed before leaving.
        let read = unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return;
            }
            let read = libc::read(fd, list.as_mut_ptr().cast(), list.len());
            libc::close(fd);
            read
        };
        let Ok(read) = usize::try_from(read) else {
            return;
        };
        let mut killed = false;
        for pid in listed_pids(&list[..read]) {
            killed = true;
            // SAFETY: `pid` is a child of this process, not reaped: its
            // pid is its own until this `wait4` reaps it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, std::ptr::null_mut(), 0, std::ptr::null_mut());
            }
        }
        if !killed {
            return;
        }
    }
}

/// Whether this process has a child, running or not reaped: one system
/// call, where most calls start no process at all. Async-signal-safe.
fn has_children() -> bool {
    // SAFETY: a zeroed siginfo is valid, and `waitid` only fills it in;
    // WNOWAIT reaps nothing.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

/// Writes `/proc/self/task/TID/children` and a NUL into `buffer`.
fn children_path(tid: u32, buffer: &mut [u8; 48]) -> Option<&[u8]> {
    let mut digits = [0_u8; 10];
    let mut start = digits.len();
    let mut rest = tid;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let parts: [&[u8]; 4] = [b"/proc/self/task/", &digits[start..], b"/children", b"\0"];
    let mut at = 0;
    for part in parts {
        buffer.get_mut(at..at + part.len())?.copy_from_slice(part);
        at += part.len();
    }
    Some(&buffer[..at])
}

/// The pids in `text`, a read of a `children` file, each followed by a
/// space there: a read that filled its buffer may end in the middle of a
/// pid, whose first digits are another pid. Without allocating.
fn listed_pids(text: &[u8]) -> impl Iterator<Item = i32> + '_ {
    let whole = text
        .iter()
        .rposition(u8::is_ascii_whitespace)
        .map_or(0, |last| last + 1);
    text[..whole]
        .split(u8::is_ascii_whitespace)
        .filter_map(parse_pid)
}

/// A decimal pid, without allocating.
fn parse_pid(text: &[u8]) -> Option<i32> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0_i32, |pid, byte| {
        byte.is_ascii_digit()
            .then(|| pid.checked_mul(10)?.checked_add(i32::from(byte - b'0')))
            .flatten()
    })
}

/// The processes below a child, each held by a pidfd: to be signalled
/// again once the child is gone (and they, reparented, are out of reach of
/// [`kill_subtree`]) without ever hitting a process that took a pid of
/// theirs.
pub(crate) struct Descendants(Vec<OwnedFd>);

impl Descendants {
    /// The processes below `child` now, if it still runs.
    pub(crate) fn of(child: &Child) -> Descendants {
        let mut found = Vec::new();
        if let State::Running = child.state {
            let mut below = children_of(child.pid.as_raw());
            while let Some(process) = below.pop() {
                if let Ok(pidfd) = pidfd_open(Pid::from_raw(process)) {
                    found.push(pidfd);
                    below.extend(children_of(process));
                }
            }
        }
        Descendants(found)
    }

    /// Sends `signal` to each that still runs.
    pub(crate) fn signal(&self, signal: NixSignal) {
        for pidfd in &self.0 {
            // SAFETY: pidfd_send_signal takes a pidfd, a signal, no
            // siginfo and no flags.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    libc::c_long::from(pidfd.as_raw_fd()),
                    signal as libc::c_long,
                    std::ptr::null::<libc::siginfo_t>(),
                    0 as libc::c_long,
                );
            }
        }
    }
}

/// How many times [`kill_subtree`] walks the tree again for processes it
/// has not seen die yet, and [`kill_own_descendants`] reads its children
/// again.
const SUBTREE_ROUNDS: usize = 256;

/// Kills every process below `pid`, a child of ours that still runs.
///
/// A child made a subreaper keeps below it every process it started,
/// however they detached (a daemon that forked twice, a `setsid`
/// escapee): while it lives, they are its descendants, listed in
/// `/proc/PID/task/TID/children`. This walks that tree and kills each
/// process in it, and walks again until only the dead are left (a process
/// killed there may hand its children to the subreaper first). The child
/// itself is left alive, for its caller to kill and reap. Once the child
/// has died, its orphans are beyond reach: they went to whoever is the
/// subreaper above it, or to init.
pub(crate) fn kill_subtree(pid: Pid) {
    for _ in 0..SUBTREE_ROUNDS {
        let mut alive = false;
        let mut below = children_of(pid.as_raw());
        while let Some(process) = below.pop() {
            if is_dead(process) {
                continue;
            }
            alive = true;
            let _ = nix::sys::signal::kill(Pid::from_raw(process), NixSignal::SIGKILL);
            below.extend(children_of(process));
        }
        if !alive {
            return;
        }
        std::thread::yield_now();
    }
}

/// The children of process `pid`, of all its threads.
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Whether process `pid` is gone or a zombie.
fn is_dead(pid: i32) -> bool {
    process_stat(pid).is_none_or(|stat| matches!(stat.state, 'Z' | 'X'))
}

/// What `/proc/PID/stat` says of a process.
pub(crate) struct ProcessStat {
    pub(crate) command: String,
    /// Its state letter: `R`, `S`, `T` (stopped), `Z` (zombie)...
    pub(crate) state: char,
    pub(crate) group: i32,
    /// Whether it can still start a process: neither stopped nor dead.
    pub(crate) runs: bool,
}

/// What `/proc/PID/stat` says of process `pid`; `None` once it is gone.
pub(crate) fn process_stat(pid: i32) -> Option<ProcessStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some(ProcessStat {
        command: stat[open + 1..close].to_owned(),
        state,
        group,
        runs: !matches!(state, 'T' | 't' | 'Z' | 'X'),
    })
}

/// Waits for our child `pid` to exit, which must not be reaped yet (so
/// the pid is still its own): `waitid` with `WEXITED` and `flags`. With
/// `WNOHANG`, `None` while the child runs.
fn waitid(pid: Pid, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: a zeroed siginfo is valid, and `waitid` fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; P_PID takes a pid.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw() as libc::id_t,
                &mut info,
                libc::WEXITED | flags,
            )
        };
        if result == -1 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        // SAFETY: `waitid` succeeded, so `info` is filled in: zeroed where
        // no child had exited (WNOHANG), with the status fields set where
        // one had.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Code(status),
            code => ExitStatus::Signal {
                signal: Signal(status),
                core_dumped: code == libc::CLD_DUMPED,
            },
        }));
    }
}

/// [`waitid`] without `WNOHANG`: blocks until the child has exited.
fn wait_until_exited(pid: Pid, flags: libc::c_int) -> io::Result<ExitStatus> {
    waitid(pid, flags)?.ok_or_else(|| io::Error::other("waitid found no exited child"))
}

/// A signal number, shown with its name and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Signal(pub i32);

impl Signal {
    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The signal's name, such as `SIGSEGV`; real-time signals read
    /// `SIGRTMIN+n`.
    pub fn name(self) -> String {
        match NixSignal::try_from(self.0) {
            Ok(signal) => signal.as_str().to_owned(),
            Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&self.0) => {
                format!("SIGRTMIN+{}", self.0 - libc::SIGRTMIN())
            }
            Err(_) => format!("signal {}", self.0),
        }
    }

    /// What the signal means, in the words of signal(7).
    pub fn description(self) -> &'static str {
        match self.0 {
            libc::SIGHUP => "hangup",
            libc::SIGINT => "interrupt from keyboard",
            libc::SIGQUIT => "quit from keyboard",
            libc::SIGILL => "illegal instruction",
            libc::SIGTRAP => "trace or breakpoint trap",
            libc::SIGABRT => "abort",
            libc::SIGBUS => "bus error (bad memory access)",
            libc::SIGFPE => "floating-point exception",
            libc::SIGKILL => "killed",
            libc::SIGUSR1 => "user-defined signal 1",
            libc::SIGSEGV => "invalid memory reference",
            libc::SIGUSR2 => "user-defined signal 2",
            libc::SIGPIPE => "broken pipe: write to pipe with no readers",
            libc::SIGALRM => "timer signal from alarm",
            libc::SIGTERM => "termination signal",
            libc::SIGSTKFLT => "stack fault on coprocessor",
            libc::SIGCHLD => "child stopped or terminated",
            libc::SIGCONT => "continue if stopped",
            libc::SIGSTOP => "stop process",
            libc::SIGTSTP => "stop typed at terminal",
            libc::SIGTTIN => "terminal input for background process",
            libc::SIGTTOU => "terminal output for background process",
            libc::SIGURG => "urgent condition on socket",
            libc::SIGXCPU => "CPU time limit exceeded",
            libc::SIGXFSZ => "file size limit exceeded",
            libc::SIGVTALRM => "virtual alarm clock",
            libc::SIGPROF => "profiling timer expired",
            libc::SIGWINCH => "window resize signal",
            libc::SIGIO => "I/O now possible",
            libc::SIGPWR => "power failure",
            libc::SIGSYS => "bad system call",
            _ => "real-time signal",
        }
    }
}

impl fmt::Display for Signal {
    /// `signal 11 (SIGSEGV: invalid memory reference)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signal {} ({}: {})",
            self.0,
            self.name(),
            self.description()
        )
    }
}

/// How a child ended without replying to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Termination {
    /// It exited with a code (`exit(0)` included) instead of replying.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal killed it.
    Signaled {
        /// The signal.
        signal: Signal,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
        /// What the crash handler reported, for the signals it handles
        /// (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) when it got to run.
        crash: Option<Box<Crash>>,
    },
}

impl Termination {
    /// Joins a wait status with what the crash handler reported.
    pub(crate) fn new(status: ExitStatus, crash: Option<Crash>) -> Termination {
        match status {
            ExitStatus::Code(code) => Termination::Exited { code },
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => Termination::Signaled {
                signal,
                core_dumped,
                crash: crash.map(Box::new),
            },
        }
    }

    /// The signal that killed the child, if one did.
    pub fn signal(&self) -> Option<Signal> {
        match self {
            Termination::Signaled { signal, .. } => Some(*signal),
            Termination::Exited { .. } => None,
        }
    }

    /// The exit code, if the child exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Termination::Exited { code } => Some(*code),
            Termination::Signaled { .. } => None,
        }
    }

    /// What the crash handler reported, if it ran.
    pub fn crash(&self) -> Option<&Crash> {
        match self {
            Termination::Signaled { crash, .. } => crash.as_deref(),
            Termination::Exited { .. } => None,
        }
    }
}

impl fmt::Display for Termination {
    /// One line, such as `killed by signal 11 (SIGSEGV: invalid memory
    /// reference) at address 0x0`; the backtrace is in [`Termination::crash`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited { code } => write!(f, "exited with code {code} before replying"),
            Termination::Signaled {
                signal,
                core_dumped,
                crash,
            } => {
                if crash.as_ref().is_some_and(|crash| crash.stack_overflow) {
                    write!(f, "stack overflow: ")?;
                }
                write!(f, "killed by {signal}")?;
                if let Some(address) = crash.as_ref().and_then(|crash| crash.fault_address) {
                    write!(f, " at address {address:#x}")?;
                }
                if *core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_descriptors_are_closed_and_the_standard_ones_never() {
        use std::os::fd::IntoRawFd;
        // Ten descriptors of this process's own, most of them in a run.
        let opened: Vec<RawFd> = (0..10)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into_raw_fd())
            .collect();
        let is_open = |fd: RawFd| {
            // SAFETY: F_GETFD only asks about a descriptor.
            unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
        };
        let (closed, kept) = opened.split_at(7);
        // Out of order, with stdout and stderr among them.
        let mut close = vec![libc::STDOUT_FILENO, libc::STDERR_FILENO];
        close.extend(closed.iter().rev());
        // SAFETY: the descriptors closed are this test's own, used by
        // nothing else; 1 and 2 are never closed.
        unsafe { close_all(&close) };
        assert!(closed.iter().all(|fd| !is_open(*fd)));
        assert!(kept.iter().all(|fd| is_open(*fd)));
        assert!(is_open(libc::STDOUT_FILENO) && is_open(libc::STDERR_FILENO));
        for fd in kept {
            // SAFETY: this test's own descriptor.
            unsafe { libc::close(*fd) };
        }
    }

    #[test]
    fn pids_and_paths_are_made_without_allocating() {
        let mut buffer = [0_u8; 48];
        assert_eq!(
            children_path(4_194_304, &mut buffer).unwrap(),
            b"/proc/self/task/4194304/children\0"
        );
        assert_eq!(
            children_path(0, &mut buffer).unwrap(),
            b"/proc/self/task/0/children\0"
        );
        assert_eq!(parse_pid(b"1234"), Some(1234));
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"12a"), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }

    #[test]
    fn a_read_cut_in_the_middle_of_a_pid_lists_only_whole_ones() {
        let pids = |text: &[u8]| listed_pids(text).collect::<Vec<_>>();
        assert_eq!(pids(b"12 2000 "), [12, 2000]);
        // The buffer filled after "2" of "2000": pid 2 is not listed.
        assert_eq!(pids(b"12 2"), [12]);
        assert_eq!(pids(b"2"), [] as [i32; 0]);
        assert_eq!(pids(b""), [] as [i32; 0]);
    }

    #[test]
    fn signals_read_as_people_name_them() {
        assert_eq!(
            Signal(libc::SIGSEGV).to_string(),
            "signal 11 (SIGSEGV: invalid memory reference)"
        );
        assert_eq!(Signal(libc::SIGKILL).name(), "SIGKILL");
        assert_eq!(Signal(libc::SIGRTMIN() + 2).name(), "SIGRTMIN+2");
    }

    #[test]
    fn terminations_read_as_one_line() {
        let crash = Crash::parse(&{
            let mut payload = [0_u8; 25];
            payload[0..4].copy_from_slice(&libc::SIGSEGV.to_le_bytes());
            payload[24] = 1;
            payload
        })
        .unwrap();
        let segfault = Termination::new(
            ExitStatus::Signal {
                signal: Signal(libc::SIGSEGV),
                core_dumped: false,
            },
            Some(crash),
        );
        assert_eq!(
            segfault.to_string(),
            "killed by signal 11 (SIGSEGV: invalid memory reference) at address 0x0"
        );
        assert_eq!(
            Termination::new(ExitStatus::Code(0), None).to_string(),
            "exited with code 0 before replying"
        );
        let dumped = Termination::new(
            ExitStatus::Signal {
                signal: Signal(libc::SIGABRT),
                core_dumped: true,
            },
            None,
        );
        assert_eq!(
            dumped.to_string(),
            "killed by signal 6 (SIGABRT: abort) (core dumped)"
        );
    }
}
