//! The fatal-signal handler a child runs, and what the parent makes of its
//! report.
//!
//! When a child dies of SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT, the wait
//! status alone says which signal, not where. So every child has a handler
//! for those signals (installed after `fork`, or inherited from the fork
//! server, which installs it once), on an alternate stack (a stack overflow
//! leaves no room on the thread's own), that:
//!
//! 1. arms a watchdog (`alarm`), so that if anything below hangs, the child
//!    still dies of the original signal two seconds later;
//! 2. writes a `Crash` frame to the parent: signal, `si_code`, fault address,
//!    program counter, and whether the address lies at the edge of the
//!    thread's stack (a stack overflow). Only async-signal-safe work happens
//!    up to here: atomics, arithmetic on the stack, `write(2)`;
//! 3. walks the stack and writes a `Backtrace` frame of raw instruction
//!    addresses. The unwinder is not async-signal-safe in the letter of
//!    POSIX; that is why it runs after the fault report is out and under the
//!    watchdog;
//! 4. restores the default action and re-raises the signal, so the child
//!    dies with its real wait status, core dump included where enabled.
//!
//! The parent turns the addresses into function names and source lines: the
//! child is a fork of the parent's own image, so every code address means the
//! same in both. Symbolizing there keeps the handler small.
//!
//! Stack overflow is recognized here because this handler replaces the one
//! the Rust runtime installs for the same purpose.

use std::borrow::Cow;
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use crate::ipc::{HEADER_LEN, Kind, ProtocolError};
use crate::{child, reply_region};

/// The signals the handler reports.
pub(crate) const FATAL_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// How many frames of a crash backtrace are sent at most.
const MAX_FRAMES: usize = 128;

/// Seconds the handler may spend before the watchdog ends the child.
const WATCHDOG_SECONDS: libc::c_uint = 2;

/// How far from the low end of the stack a fault still counts as a stack
/// overflow: the guard area below it and the probe distance above it.
const STACK_GUARD_WINDOW: usize = 256 * 1024;

/// Bytes of the alternate signal stack; unwinding needs more than
/// `SIGSTKSZ`.
const ALT_STACK_SIZE: usize = 256 * 1024;

/// The alternate stack of every child. It lives in `.bss`, so it costs no
/// memory until a signal is handled on it, and nothing is allocated to set
/// it up after `fork`.
struct AltStack(UnsafeCell<[u8; ALT_STACK_SIZE]>);

// SAFETY: the buffer is never read or written by Rust code; it is handed to
// the kernel as the signal stack of the one thread a child has.
unsafe impl Sync for AltStack {}

static ALT_STACK: AltStack = AltStack(UnsafeCell::new([0; ALT_STACK_SIZE]));

/// Where the handler reports, unless this process has a
/// [`reply_region`]: a descriptor, or -1 for nowhere.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// Set once a report has been started, so a fault inside the handler does
/// not report again.
static REPORTED: AtomicBool = AtomicBool::new(false);
/// Whether [`install`] ran in this process or in the process it was forked
/// from (a child inherits the handlers and this flag alike).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The low end of the stack of the thread that serves calls.
static STACK_LOW: AtomicUsize = AtomicUsize::new(0);
/// The signal being handled, for the watchdog.
static HANDLED_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The low end of the calling thread's stack, to be found before forking
/// (for the main thread glibc reads `/proc/self/maps`, which a freshly
/// forked child must not). A thread's stack does not move, so it is looked
/// up once per thread.
pub(crate) fn current_stack_low() -> usize {
    thread_local! {
        static THIS_THREAD: usize = find_stack_low();
    }
    THIS_THREAD.with(|low| *low)
}

fn find_stack_low() -> usize {
    // SAFETY: `attr` is initialized by `pthread_getattr_np` before it is read
    // and destroyed once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let found = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if found { addr as usize } else { 0 }
    }
}

/// Installs the alternate stack and the fatal-signal handlers. They report
/// nowhere until [`report_to`] names a descriptor: until then a fatal
/// signal kills the process as it would without them.
///
/// A child inherits both across `fork`, so a process that forks many
/// children (the fork server) installs them once, in itself, and a child
/// of a process that has them does not install them again.
///
/// # Safety
///
/// Only in a process that forks children for isolation (a child just
/// forked, or the fork server) before any user code runs in it: it
/// replaces the process's handlers for [`FATAL_SIGNALS`] and its alternate
/// stack.
///
/// Inlined where it is called: a child that inherited them runs only the
/// two comparisons, and a call to code on a page of its own would cost
/// each test child a fault, a fork leaving code unmapped until used.
#[inline]
pub(crate) unsafe fn install(stack_low: usize) {
    // Read before written, here and in `report_to`: a child forked from a
    // process that has them set already writes nothing, since a write to
    // a static costs a forked child a copy of its page, a fault per test.
    if STACK_LOW.load(Ordering::SeqCst) != stack_low {
        STACK_LOW.store(stack_low, Ordering::SeqCst);
    }
    if !INSTALLED.load(Ordering::SeqCst) {
        // SAFETY: as this function's.
        unsafe { install_handlers() };
    }
}

/// The work of [`install`] in a process that has no handlers yet.
///
/// # Safety
///
/// As [`install`].
unsafe fn install_handlers() {
    INSTALLED.store(true, Ordering::SeqCst);
    let stack = libc::stack_t {
        ss_sp: ALT_STACK.0.get().cast(),
        ss_flags: 0,
        ss_size: ALT_STACK_SIZE,
    };
    // SAFETY: the stack is a static buffer that nothing else uses; the
    // handler is an `extern "C"` function of the signature SA_SIGINFO expects.
    unsafe {
        // Through `syscall`, as `child::prepare_child` explains.
        libc::syscall(
            libc::SYS_sigaltstack,
            &stack,
            std::ptr::null_mut::<libc::stack_t>(),
        );
        for signal in FATAL_SIGNALS {
            set_handler(signal, on_fatal_signal as *const () as usize);
        }
    }
}

/// Makes the handlers [`install`]ed report a crash to `report_fd`, which
/// must stay open for the life of the process, or nowhere for -1. A process
/// with a [`reply_region`] reports there instead.
pub(crate) fn report_to(report_fd: RawFd) {
    if REPORT_FD.load(Ordering::SeqCst) != report_fd {
        REPORT_FD.store(report_fd, Ordering::SeqCst);
    }
}

/// Sends `bytes` where this process reports. Async-signal-safe.
fn report(fd: RawFd, bytes: &[u8]) {
    if reply_region::is_set() {
        reply_region::append(&[bytes]);
    } else {
        write_all_raw(fd, bytes);
    }
}

/// Points `signal` at `handler`, with SA_SIGINFO and the alternate stack.
///
/// # Safety
///
/// `handler` must be an `extern "C" fn(c_int, *mut siginfo_t, *mut c_void)`
/// that does only async-signal-safe work, or `SIG_DFL`.
unsafe fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction is valid; the caller vouches for `handler`.
    unsafe {
        // Zeroed, `sa_mask` is the empty set.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

/// Writes all of `bytes` to `fd` with `write(2)`, retrying on EINTR; gives
/// up silently on any other error (the parent then sees only the wait
/// status). Async-signal-safe.
fn write_all_raw(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid slice for the length passed.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written > 0 {
            bytes = &bytes[written as usize..];
        } else if written < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {
            continue;
        } else {
            return;
        }
    }
}

/// Layout of the `Crash` payload: signal (i32), si_code (i32), fault
/// address (u64), program counter (u64), flags (u8).
const CRASH_PAYLOAD_LEN: usize = 4 + 4 + 8 + 8 + 1;
const FLAG_HAS_ADDRESS: u8 = 1;
const FLAG_STACK_OVERFLOW: u8 = 2;

extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut c_void,
) {
    let fd = REPORT_FD.load(Ordering::SeqCst);
    // Only the process the parent set up reports: a copy it forked that
    // crashes must not lend its crash to the test or call.
    if (fd >= 0 || reply_region::is_set())
        && child::is_owner()
        && !REPORTED.swap(true, Ordering::SeqCst)
    {
        HANDLED_SIGNAL.store(signal, Ordering::SeqCst);
        // SAFETY: `watchdog` has the SA_SIGINFO signature and is
        // async-signal-safe; `alarm` is async-signal-safe.
        unsafe {
            set_handler(libc::SIGALRM, watchdog as *const () as usize);
            libc::alarm(WATCHDOG_SECONDS);
        }
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        // Kernel-generated faults (si_code > 0) carry an address; a signal
        // sent with kill(2) or raise(3) does not.
        let has_address = code > 0 && signal != libc::SIGABRT;
        let stack_low = STACK_LOW.load(Ordering::SeqCst);
        let stack_overflow = has_address
            && matches!(signal, libc::SIGSEGV | libc::SIGBUS)
            && stack_low != 0
            && address.abs_diff(stack_low) < STACK_GUARD_WINDOW;
        let pc = program_counter(context);

        let mut frame = [0_u8; HEADER_LEN + 1 + CRASH_PAYLOAD_LEN];
        frame[..4].copy_from_slice(&(1 + CRASH_PAYLOAD_LEN as u32).to_le_bytes());
        frame[4] = Kind::Crash as u8;
        frame[5..9].copy_from_slice(&signal.to_le_bytes());
        frame[9..13].copy_from_slice(&code.to_le_bytes());
        frame[13..21].copy_from_slice(&(address as u64).to_le_bytes());
        frame[21..29].copy_from_slice(&(pc as u64).to_le_bytes());
        frame[29] = u8::from(has_address) * FLAG_HAS_ADDRESS
            + u8::from(stack_overflow) * FLAG_STACK_OVERFLOW;
        report(fd, &frame);

        write_backtrace(fd);
    }
    // A library child takes what it started down with it.
    child::kill_own_descendants();
    // SAFETY: restoring the default action and raising are async-signal-safe;
    // the signal stays blocked until this handler returns, then kills the
    // process with its real status.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Unwinds from inside the handler and writes the `Backtrace` frame.
fn write_backtrace(fd: RawFd) {
    let mut frame = [0_u8; HEADER_LEN + 1 + 4 + 8 * MAX_FRAMES];
    let mut count = 0;
    // SAFETY: this process has one thread, so nothing unwinds concurrently.
    unsafe {
        backtrace::trace_unsynchronized(|step| {
            let at = HEADER_LEN + 1 + 4 + 8 * count;
            frame[at..at + 8].copy_from_slice(&(step.ip() as u64).to_le_bytes());
            count += 1;
            count < MAX_FRAMES
        });
    }
    let body_len = 1 + 4 + 8 * count;
    frame[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    frame[4] = Kind::Backtrace as u8;
    frame[5..9].copy_from_slice(&(count as u32).to_le_bytes());
    report(fd, &frame[..HEADER_LEN + body_len]);
}

/// Ends a child whose crash handler hung: the original signal, now with its
/// default action and unblocked, kills it with the status it would have had.
extern "C" fn watchdog(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut c_void) {
    let signal = HANDLED_SIGNAL.load(Ordering::SeqCst);
    // SAFETY: all async-signal-safe; the set is a valid local.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// The interrupted program counter, read from the signal context.
fn program_counter(context: *mut c_void) -> usize {
    let context = context.cast::<libc::ucontext_t>();
    if context.is_null() {
        return 0;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    return unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    // SAFETY: as above.
    return unsafe { (*context).uc_mcontext.pc as usize };
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    return 0;
}

/// What the crash handler of a child reported before it died.
///
/// Its `Debug` shows addresses in hex, as the `Display` of a
/// [`Termination`](crate::Termination) does, and the backtrace as
/// [`Backtrace`]'s `Debug` does.
#[derive(Clone, PartialEq, Eq)]
pub struct Crash {
    /// The address that faulted, for faults the kernel raised (none for a
    /// signal sent by `kill` or `raise`, nor for SIGABRT).
    pub fault_address: Option<usize>,
    /// Whether the fault was at the edge of the stack: a stack overflow.
    pub stack_overflow: bool,
    /// The stack of the crash site, innermost frame first.
    pub backtrace: Backtrace,
    /// The interrupted program counter, where the backtrace starts.
    program_counter: usize,
}

impl Crash {
    /// Parses a `Crash` payload; the backtrace is added by
    /// [`Crash::add_backtrace`] when its frame arrives.
    pub(crate) fn parse(payload: &[u8]) -> Result<Crash, ProtocolError> {
        let payload: &[u8; CRASH_PAYLOAD_LEN] = payload
            .try_into()
            .map_err(|_| ProtocolError::Malformed("crash"))?;
        let address = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        let pc = u64::from_le_bytes(payload[16..24].try_into().expect("8 bytes"));
        let flags = payload[24];
        Ok(Crash {
            fault_address: (flags & FLAG_HAS_ADDRESS != 0).then_some(address as usize),
            stack_overflow: flags & FLAG_STACK_OVERFLOW != 0,
            backtrace: Backtrace::default(),
            program_counter: pc as usize,
        })
    }

    /// Parses a `Backtrace` payload and resolves it from the interrupted
    /// program counter on (dropping the handler's own frames).
    pub(crate) fn add_backtrace(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let (count, addresses) = payload
            .split_first_chunk::<4>()
            .ok_or(ProtocolError::Malformed("backtrace"))?;
        let count = u32::from_le_bytes(*count) as usize;
        if count > MAX_FRAMES || addresses.len() != 8 * count {
            return Err(ProtocolError::Malformed("backtrace"));
        }
        let mut ips: Vec<usize> = addresses
            .chunks_exact(8)
            .map(|ip| u64::from_le_bytes(ip.try_into().expect("8 bytes")) as usize)
            .collect();
        if let Some(start) = ips.iter().position(|&ip| ip == self.program_counter) {
            ips.drain(..start);
        }
        self.backtrace = Backtrace::resolve(&ips).short();
        Ok(())
    }

    /// Whether the crash is Rust's reaction to a failed allocation (it
    /// aborts from its allocation-error handler).
    pub(crate) fn is_allocation_failure(&self) -> bool {
        self.backtrace.frames.iter().any(|frame| {
            frame.function.as_deref().is_some_and(|name| {
                name.contains("handle_alloc_error")
                    || name.contains("rust_oom")
                    || name.contains("__rg_oom")
                    || name.contains("__rdl_oom")
            })
        })
    }
}

impl fmt::Debug for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// An address, shown in hex.
        struct Hex(usize);
        impl fmt::Debug for Hex {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
        f.debug_struct("Crash")
            .field("fault_address", &self.fault_address.map(Hex))
            .field("stack_overflow", &self.stack_overflow)
            .field("backtrace", &self.backtrace)
            .field("program_counter", &Hex(self.program_counter))
            .finish()
    }
}

/// A resolved stack trace.
///
/// Shown (by `Display` and `Debug` alike), a run of consecutive frames of
/// one function, such as the frames of a recursion that overflowed the
/// stack, is cut to its first three frames and one line that says how many
/// more there were: ``… 117 more frames of `recurse` ``. The frames
/// themselves are all kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Backtrace {
    /// The frames, innermost first.
    pub frames: Vec<Frame>,
}

/// One frame of a [`Backtrace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The instruction address.
    pub ip: usize,
    /// The demangled function name, when symbols are available.
    pub function: Option<String>,
    /// The source file and line, when debug information is available.
    pub location: Option<(String, u32)>,
}

impl Backtrace {
    /// Captures the instruction addresses of the calling thread's stack,
    /// innermost first, to be resolved by the parent with
    /// [`Backtrace::resolve`].
    pub(crate) fn capture_addresses() -> Vec<u64> {
        let mut ips = Vec::new();
        // SAFETY: on Linux the unwinder is thread-safe; the "unsynchronized"
        // variant only skips the crate's global lock, which a parent thread
        // may have held when this child was forked.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                ips.push(frame.ip() as u64);
                ips.len() < MAX_FRAMES
            });
        }
        ips
    }

    /// Resolves instruction addresses of this process's image.
    pub(crate) fn resolve(ips: &[usize]) -> Backtrace {
        let mut frames = Vec::with_capacity(ips.len());
        for &ip in ips {
            let mut resolved = false;
            backtrace::resolve(ip as *mut c_void, |symbol| {
                resolved = true;
                frames.push(Frame {
                    ip,
                    function: symbol.name().map(|name| format!("{name:#}")),
                    location: symbol
                        .filename()
                        .zip(symbol.lineno())
                        .map(|(file, line)| (file.display().to_string(), line)),
                });
            });
            if !resolved {
                frames.push(Frame {
                    ip,
                    function: None,
                    location: None,
                });
            }
        }
        Backtrace { frames }
    }

    /// Keeps the frames above the first frame of this crate's machinery: the
    /// crash site and the user's code that led to it, as Rust's short
    /// backtraces do.
    pub(crate) fn short(mut self) -> Backtrace {
        if let Some(end) = self
            .frames
            .iter()
            .skip(1)
            .position(|frame| frame.function_starts_with("isolate_harness::"))
        {
            self.frames.truncate(end + 1);
            // And the glue that called the user's function: closures the
            // attribute macros generate, `Fn` and `Box<dyn Fn>` calls.
            while self.frames.len() > 1
                && self.frames.last().is_some_and(|frame| {
                    frame.function.as_deref().is_none_or(|name| {
                        name.starts_with("core::ops::function::")
                            || name
                                .starts_with("<alloc::boxed::Box<F,A> as core::ops::function::Fn")
                            || name.contains("::__ISOLATE_TEST_")
                    })
                })
            {
                self.frames.pop();
            }
        }
        self
    }

    /// Drops the frames of the panic machinery, up to the user's code: all
    /// frames through the panic entry point (`rust_begin_unwind`, or
    /// `__rust_end_short_backtrace`), then the `core::panicking` and
    /// `std::panicking` frames that called it.
    pub(crate) fn skip_panic_machinery(mut self) -> Backtrace {
        let entry = self.frames.iter().position(|frame| {
            frame.function.as_deref().is_some_and(|name| {
                name.ends_with("rust_begin_unwind") || name.ends_with("__rust_end_short_backtrace")
            })
        });
        if let Some(entry) = entry {
            self.frames.drain(..=entry);
            let callers = self
                .frames
                .iter()
                .take_while(|frame| {
                    frame.function_starts_with("core::panicking::")
                        || frame.function_starts_with("std::panicking::")
                })
                .count();
            self.frames.drain(..callers);
        }
        self
    }

    /// Whether the handler got no frames at all.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl Frame {
    fn function_starts_with(&self, prefix: &str) -> bool {
        self.function
            .as_deref()
            .is_some_and(|name| name.starts_with(prefix))
    }

    /// The function's name, or the instruction address when it has none.
    fn name(&self) -> Cow<'_, str> {
        match &self.function {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("{:#x}", self.ip)),
        }
    }

    /// Whether both frames are of the same function (of the same address,
    /// for frames without a name).
    fn same_function(&self, other: &Frame) -> bool {
        match (&self.function, &other.function) {
            (Some(name), Some(other_name)) => name == other_name,
            (None, None) => self.ip == other.ip,
            _ => false,
        }
    }
}

/// How many frames of a run of one function a backtrace shows; the rest of
/// the run is summed up in one line. A run at most one frame longer is shown
/// whole: a line in place of one frame would save nothing.
const SHOWN_OF_A_RUN: usize = 3;

/// One entry of a backtrace as it is shown.
enum Shown<'a> {
    /// A frame, with its index in the backtrace.
    Frame(usize, &'a Frame),
    /// The frames of a run left out after its first [`SHOWN_OF_A_RUN`].
    Omitted {
        /// How many.
        count: usize,
        /// The first frame of the run, which names the function.
        of: &'a Frame,
    },
}

impl Backtrace {
    /// The entries to show, innermost first, each long run of frames of one
    /// function collapsed: the one place that decides what is shown.
    fn shown(&self) -> Vec<Shown<'_>> {
        let mut shown = Vec::new();
        let mut index = 0;
        for run in self.frames.chunk_by(Frame::same_function) {
            let kept = if run.len() > SHOWN_OF_A_RUN + 1 {
                SHOWN_OF_A_RUN
            } else {
                run.len()
            };
            shown.extend(
                run[..kept]
                    .iter()
                    .enumerate()
                    .map(|(offset, frame)| Shown::Frame(index + offset, frame)),
            );
            if kept < run.len() {
                shown.push(Shown::Omitted {
                    count: run.len() - kept,
                    of: &run[0],
                });
            }
            index += run.len();
        }
        shown
    }
}

impl fmt::Display for Shown<'_> {
    /// One line: `name at file:line`, or ``… 117 more frames of `name` ``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Frame(_, frame) => {
                f.write_str(&frame.name())?;
                match &frame.location {
                    Some((file, line)) => write!(f, " at {file}:{line}"),
                    None => Ok(()),
                }
            }
            Shown::Omitted { count, of } => {
                write!(f, "… {count} more frames of `{}`", of.name())
            }
        }
    }
}

impl fmt::Display for Backtrace {
    /// One numbered line per frame, with its source location indented below
    /// it, as Rust prints a panic's backtrace; long runs of one function
    /// collapsed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for shown in self.shown() {
            match shown {
                Shown::Frame(index, frame) => {
                    writeln!(f, "{index:4}: {}", frame.name())?;
                    if let Some((file, line)) = &frame.location {
                        writeln!(f, "             at {file}:{line}")?;
                    }
                }
                Shown::Omitted { .. } => writeln!(f, "      {shown}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Backtrace {
    /// `Backtrace { frames: [name at file:line, …] }`, an entry per frame,
    /// long runs of one function collapsed, rather than every field of
    /// every frame.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// The entries as a list of unquoted lines.
        struct Entries<'a>(Vec<Shown<'a>>);
        impl fmt::Debug for Entries<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for shown in &self.0 {
                    list.entry(&format_args!("{shown}"));
                }
                list.finish()
            }
        }
        f.debug_struct("Backtrace")
            .field("frames", &Entries(self.shown()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backtrace of frames of `functions`, each with an address of its
    /// own; an empty name is a frame without symbols, at address 0x1.
    fn backtrace(functions: &[&str]) -> Backtrace {
        Backtrace {
            frames: functions
                .iter()
                .enumerate()
                .map(|(index, function)| Frame {
                    ip: if function.is_empty() {
                        1
                    } else {
                        0x100 + index
                    },
                    function: (!function.is_empty()).then(|| (*function).to_owned()),
                    location: None,
                })
                .collect(),
        }
    }

    /// `count` frames of `function`.
    fn run(function: &'static str, count: usize) -> Vec<&'static str> {
        vec![function; count]
    }

    #[test]
    fn a_run_in_the_middle_is_collapsed_and_the_indices_go_on() {
        let frames = [vec!["top"], run("recurse", 120), vec!["main"]].concat();
        assert_eq!(
            backtrace(&frames).to_string(),
            "   0: top\n   1: recurse\n   2: recurse\n   3: recurse\n      … 117 more frames of `recurse`\n 121: main\n"
        );
    }

    #[test]
    fn a_run_at_the_end_is_collapsed() {
        let frames = [vec!["top"], run("recurse", 10)].concat();
        assert_eq!(
            backtrace(&frames).to_string(),
            "   0: top\n   1: recurse\n   2: recurse\n   3: recurse\n      … 7 more frames of `recurse`\n"
        );
    }

    #[test]
    fn each_run_is_collapsed_on_its_own() {
        let frames = [run("a", 6), run("b", 5), vec!["c"], run("", 9)].concat();
        assert_eq!(
            backtrace(&frames).to_string(),
            "   0: a\n   1: a\n   2: a\n      … 3 more frames of `a`\n   \
             6: b\n   7: b\n   8: b\n      … 2 more frames of `b`\n  \
             11: c\n  12: 0x1\n  13: 0x1\n  14: 0x1\n      … 6 more frames of `0x1`\n"
        );
    }

    #[test]
    fn short_runs_and_different_functions_are_shown_whole() {
        let frames = [
            vec!["top"],
            run("recurse", 4),
            vec!["a", "b", "c", "d", "e"],
        ]
        .concat();
        let shown = backtrace(&frames).to_string();
        assert_eq!(shown.lines().count(), frames.len(), "{shown}");
        assert!(!shown.contains("more frames"), "{shown}");
    }

    #[test]
    fn locations_are_shown_under_their_frame_and_on_its_line_in_debug() {
        let mut backtrace = backtrace(&[vec!["top"], run("recurse", 5)].concat());
        for frame in &mut backtrace.frames {
            frame.location = Some(("src/lib.rs".to_owned(), 7));
        }
        assert_eq!(
            backtrace.to_string(),
            "   0: top\n             at src/lib.rs:7\n   1: recurse\n             at src/lib.rs:7\n   \
             2: recurse\n             at src/lib.rs:7\n   3: recurse\n             at src/lib.rs:7\n      \
             … 2 more frames of `recurse`\n"
        );
        assert_eq!(
            format!("{backtrace:?}"),
            "Backtrace { frames: [top at src/lib.rs:7, recurse at src/lib.rs:7, \
             recurse at src/lib.rs:7, recurse at src/lib.rs:7, … 2 more frames of `recurse`] }"
        );
        assert_eq!(format!("{:#?}", backtrace).lines().count(), 9);
    }
}
