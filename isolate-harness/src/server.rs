//! The request loop a forked child runs.
//!
//! A child opens with a `Hello` frame, then answers `Call` frames one at a
//! time until its channel closes, and ends with `_exit`: never with
//! `std::process::exit`, which would run the parent's exit handlers and
//! flush the stdio buffers it inherited.
//!
//! A call crosses the boundary as two code addresses, the user's function
//! and a [`trampoline`] monomorphized for its argument and return types,
//! plus the encoded argument. The trampoline decodes, calls, catches a
//! panic, and encodes the reply. Sending code addresses is sound only because
//! the child is a fork of the same process image, never an exec'd program.
//!
//! Every reply carries the id of the call it answers, which the parent
//! checks: a frame that answers another call (one a function wrote onto
//! the channel itself, one left over from an earlier call) is a protocol
//! error, never the result of this call or of the next. Only the child the
//! parent forked replies: a copy that a call forked and that returns from
//! it ends without a word (see [`crate::child::is_owner`]).
//!
//! Panics are caught in the child, which keeps serving. Their message,
//! location and backtrace (when `RUST_BACKTRACE` asks for one) come from a
//! panic hook installed once in the parent before its first fork; it records
//! a panic only in a child running a call and passes every other panic on to
//! the hook that was there before.

use std::any::Any;
use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::child::{self, exit_child};
use crate::crash::Backtrace;
use crate::ipc::{self, FrameBuilder, FrameReader, Kind, Outgoing};
use crate::remote::Objects;
use crate::report_stream;

/// A panic caught in a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicReport {
    /// The panic message.
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
    /// The backtrace from the panic site, when `RUST_BACKTRACE` (or
    /// `RUST_LIB_BACKTRACE`) asked for one.
    pub backtrace: Option<Backtrace>,
}

/// A [`PanicReport`] as it crosses the channel: the backtrace as raw
/// addresses, resolved by the parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PanicMessage {
    message: String,
    location: Option<String>,
    backtrace: Option<Vec<u64>>,
}

impl PanicMessage {
    /// Resolves the backtrace, in the parent.
    pub(crate) fn into_report(self) -> PanicReport {
        PanicReport {
            message: self.message,
            location: self.location,
            backtrace: self.backtrace.map(|ips| {
                let ips: Vec<usize> = ips.into_iter().map(|ip| ip as usize).collect();
                Backtrace::resolve(&ips).skip_panic_machinery().short()
            }),
        }
    }
}

impl std::fmt::Display for PanicReport {
    /// `panicked at src/lib.rs:3:5: the message`, as Rust's own hook says it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(location) => write!(f, "panicked at {location}: {}", self.message),
            None => write!(f, "panicked: {}", self.message),
        }
    }
}

thread_local! {
    /// Set while a child runs a call; where the hook leaves its report.
    static CAUGHT: RefCell<Option<Option<PanicMessage>>> = const { RefCell::new(None) };
}

/// Whether panics in children carry a backtrace, decided once in the parent
/// as `std::backtrace::Backtrace::capture` decides, so that no child reads
/// the environment (whose lock a parent thread may hold).
static WANT_BACKTRACE: AtomicBool = AtomicBool::new(false);

/// Readies the calling thread of the parent to fork a child that serves:
/// installs the recording panic hook and an exit handler, once per
/// process, so no child has to take the hook lock; and initializes this thread's report slot, whose
/// first use registers a destructor (a symbol lookup and several page
/// copies if every child had to do it).
pub(crate) fn prepare_to_fork() {
    CAUGHT.with(|_| {});
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `end_by_exit` is an `extern "C" fn()` that stays valid
        // for the life of the process.
        unsafe { libc::atexit(end_by_exit) };
        let wanted = |name| std::env::var_os(name).map(|value| value != "0");
        let want = wanted("RUST_LIB_BACKTRACE")
            .or_else(|| wanted("RUST_BACKTRACE"))
            .unwrap_or(false);
        WANT_BACKTRACE.store(want, Ordering::Relaxed);
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let recorded = CAUGHT.with(|caught| match &mut *caught.borrow_mut() {
                Some(slot) => {
                    *slot = Some(report(info));
                    true
                }
                None => false,
            });
            if !recorded {
                previous(info);
            }
        }));
    });
}

fn report(info: &PanicHookInfo<'_>) -> PanicMessage {
    PanicMessage {
        message: kept_message(info.payload()),
        location: info.location().map(ToString::to_string),
        backtrace: WANT_BACKTRACE
            .load(Ordering::Relaxed)
            .then(Backtrace::capture_addresses),
    }
}

/// A panic's message, as head and tail when long: only what is kept is
/// copied, so a panic of 300 MiB does not need as much again.
fn kept_message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.as_str()
    } else {
        "Box<dyn Any>"
    };
    report_stream::head_and_tail(text, KEPT_TEXT).into_owned()
}

/// Runs `call`, turning a panic into its report. Inlined, as the test
/// child's other steps are, so that its code is on a page the child has
/// faulted in already.
#[inline]
pub(crate) fn catch<R>(call: impl FnOnce() -> R) -> Result<R, PanicMessage> {
    CAUGHT.with(|caught| *caught.borrow_mut() = Some(None));
    let result = panic::catch_unwind(AssertUnwindSafe(call));
    let recorded = CAUGHT.with(|caught| caught.borrow_mut().take().flatten());
    result.map_err(|payload| {
        recorded.unwrap_or_else(|| PanicMessage {
            message: kept_message(&*payload),
            location: None,
            backtrace: None,
        })
    })
}

/// Bytes of a panic message or an error text kept from its start, and from
/// its end: a message of 300 MiB must not cost its reader that much.
pub(crate) const KEPT_TEXT: usize = 8 * 1024;

/// `text` whole when short, else its first and last [`KEPT_TEXT`] bytes
/// (cut at character boundaries) around a line saying what was left out.
pub(crate) fn kept_text(text: String) -> String {
    match report_stream::head_and_tail(&text, KEPT_TEXT) {
        Cow::Borrowed(_) => text,
        Cow::Owned(kept) => kept,
    }
}

/// Appends the reply frames for the outcome of call `call` to `buffer`.
/// If the result cannot be encoded, the reply is a `CallFailed` frame
/// alone.
pub(crate) fn reply_frame<R: Serialize + 'static>(
    outcome: Result<R, PanicMessage>,
    buffer: Vec<u8>,
    call: u64,
) -> Outgoing {
    let id = call.to_le_bytes();
    let encoded = match outcome {
        Ok(value) => ipc::value_frames(Kind::Returned, &id, value, buffer),
        Err(report) => FrameBuilder::appending(Kind::Panicked, buffer)
            .push(&id)
            .encode(&report)
            .map(|frame| Outgoing::frames(frame.finish())),
    };
    encoded.unwrap_or_else(|error| {
        call_failed_frame(&format!("could not encode the result: {error}"), call)
    })
}

fn call_failed_frame(reason: &str, call: u64) -> Outgoing {
    Outgoing::frames(
        FrameBuilder::new(Kind::CallFailed)
            .push(&call.to_le_bytes())
            .encode(reason)
            .expect("a string always encodes")
            .finish(),
    )
}

/// A trampoline: decodes the argument (from the `Call` payload, or the
/// `Bytes` payload that came before it), makes the call (on an object of
/// the child's table, for a remote object's), and encodes the reply.
pub(crate) type Trampoline =
    fn(objects: &mut Objects, request: CallRequest<'_>, bytes: Option<Vec<u8>>) -> Outgoing;

/// The trampoline for functions `fn(A) -> R`.
pub(crate) fn trampoline<A: DeserializeOwned + 'static, R: Serialize + 'static>(
    _: &mut Objects,
    request: CallRequest<'_>,
    bytes: Option<Vec<u8>>,
) -> Outgoing {
    answer(|| {
        let argument: A = request.argument(bytes)?;
        // SAFETY: `function` is the address of an `fn(A) -> R` that the
        // parent sent together with this very trampoline, monomorphized for
        // the same `A` and `R`; the child is a fork of the parent's image,
        // so the address names the same code here.
        let function: fn(A) -> R =
            unsafe { std::mem::transmute::<usize, fn(A) -> R>(request.function) };
        Ok(reply_frame(
            catch(|| function(argument)),
            Vec::new(),
            request.call,
        ))
    })
}

/// The reply of a trampoline, which may stop early with the reply that
/// says why the call could not be made.
pub(crate) fn answer(reply: impl FnOnce() -> Result<Outgoing, Outgoing>) -> Outgoing {
    reply().unwrap_or_else(|failed| failed)
}

/// The frames of a call (built in `buffer`, whose contents are dropped):
/// the trampoline, the function's address, the call's id and the object
/// it is made on (0 for none), then the argument.
pub(crate) fn call_frame<A: Serialize + 'static>(
    trampoline: Trampoline,
    function: usize,
    call: u64,
    object: u64,
    argument: A,
    mut buffer: Vec<u8>,
) -> Result<Outgoing, postcard::Error> {
    let mut prefix = [0; 32];
    prefix[..8].copy_from_slice(&(trampoline as usize as u64).to_le_bytes());
    prefix[8..16].copy_from_slice(&(function as u64).to_le_bytes());
    prefix[16..24].copy_from_slice(&call.to_le_bytes());
    prefix[24..].copy_from_slice(&object.to_le_bytes());
    buffer.clear();
    ipc::value_frames(Kind::Call, &prefix, argument, buffer)
}

/// A `Call` payload, split.
pub(crate) struct CallRequest<'a> {
    trampoline: Trampoline,
    /// The address of the function to call.
    pub(crate) function: usize,
    /// The id the reply must carry.
    pub(crate) call: u64,
    /// The object of the child's table the call is made on.
    pub(crate) object: u64,
    argument: &'a [u8],
}

impl CallRequest<'_> {
    /// Decodes the argument, from the payload or from the `Bytes` payload
    /// that came before it; when it cannot be, the reply that says so.
    pub(crate) fn argument<A: DeserializeOwned + 'static>(
        &self,
        bytes: Option<Vec<u8>>,
    ) -> Result<A, Outgoing> {
        ipc::decode_value(self.argument, bytes)
            .map_err(|error| self.failed(&format!("could not decode the argument: {error}")))
    }

    /// The reply that says the call could not be made, and why.
    pub(crate) fn failed(&self, reason: &str) -> Outgoing {
        call_failed_frame(reason, self.call)
    }
}

/// Splits a `Call` payload.
fn parse_call(payload: &[u8]) -> Option<CallRequest<'_>> {
    let (trampoline, rest) = payload.split_first_chunk::<8>()?;
    let (function, rest) = rest.split_first_chunk::<8>()?;
    let (call, rest) = rest.split_first_chunk::<8>()?;
    let (object, argument) = rest.split_first_chunk::<8>()?;
    let trampoline = u64::from_le_bytes(*trampoline) as usize;
    // SAFETY: the address was produced by `call_frame` in the parent from a
    // `Trampoline`, and this child is a fork of the parent's image.
    let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(trampoline) };
    Some(CallRequest {
        trampoline,
        function: u64::from_le_bytes(*function) as usize,
        call: u64::from_le_bytes(*call),
        object: u64::from_le_bytes(*object),
        argument,
    })
}

/// Ends the calling process without a word if it is a copy that a call or
/// test forked rather than the child its parent set up: only that child
/// may reply.
pub(crate) fn exit_unless_owner() {
    if !child::is_owner() {
        exit_child(0);
    }
}

/// Writes frames to the parent; if the parent is gone there is no one left
/// to serve, so the child ends.
fn send(channel: &mut impl Write, frames: &mut Outgoing) {
    exit_unless_owner();
    flush_stdio();
    if frames.write_to(channel).is_err() {
        exit_child(0);
    }
}

/// Whether this child may take the stdout lock to flush: only when the
/// process it was forked from had a single thread, since another thread may
/// have held that lock at the fork, and it would then never be released.
static FLUSH_STDOUT: AtomicBool = AtomicBool::new(true);

/// Says, in a just-forked child, whether it may flush stdout.
pub(crate) fn set_flush_stdout(flush: bool) {
    FLUSH_STDOUT.store(flush, Ordering::Relaxed);
}

/// Output written during a call reaches its pipe or terminal before the
/// reply, so it is attributed to that call. (stderr is unbuffered.)
pub(crate) fn flush_stdio() {
    if FLUSH_STDOUT.load(Ordering::Relaxed) {
        let _ = std::io::stdout().flush();
    }
}

/// The reply of call `call`, made by `reply`; a panic outside the called
/// function (in decoding its argument, or in encoding or dropping its
/// result, where user code runs too) is the call's panic, its frame
/// appended to what `start` makes. It never unwinds out of the child's
/// serving, into the code that forked the child, which the child would
/// then run as if it were its parent.
fn answer_panic(
    call: u64,
    start: impl FnOnce() -> Vec<u8>,
    reply: impl FnOnce() -> Outgoing,
) -> Outgoing {
    catch(reply).unwrap_or_else(|report| reply_frame::<()>(Err(report), start(), call))
}

/// Opens the conversation in a just-forked child: runs the setup hook,
/// then says hello. A panicking hook is reported and ends the child.
pub(crate) fn start(channel: &mut UnixStream, setup: Option<&(dyn Fn() + Send + Sync)>) {
    if let Some(setup) = setup
        && let Err(report) = catch(setup)
    {
        send(channel, &mut reply_frame::<()>(Err(report), Vec::new(), 0));
        exit_child(0);
    }
    send(channel, &mut Outgoing::frames(ipc::hello_frame(Vec::new())));
}

/// Serves calls until the channel closes, then ends the child.
pub(crate) fn serve(mut channel: UnixStream, max_frame: usize) -> ! {
    keep_freed_memory(max_frame);
    let mut reader = FrameReader::new(max_frame);
    let mut objects = Objects::default();
    let mut bytes = None;
    loop {
        let frame = match reader.read_blocking(&mut channel) {
            Ok(Some(frame)) => frame,
            Ok(None) => end_child(0),
            Err(_) => end_child(2),
        };
        if frame.kind == Kind::Bytes && bytes.is_none() {
            bytes = Some(frame.into_payload());
            continue;
        }
        let mut reply = match (frame.kind, parse_call(frame.payload())) {
            (Kind::Call, Some(request)) => {
                let call = request.call;
                let arrived = bytes.take();
                let mut reply = answer_panic(call, Vec::new, || {
                    (request.trampoline)(&mut objects, request, arrived)
                });
                // A result the parent would refuse fails the call, and the
                // child serves on.
                match reply.largest_body() {
                    body if body > max_frame => {
                        objects.settle(&mut reply);
                        call_failed_frame(
                            &format!(
                                "the result ({body} bytes) exceeds the frame cap of {max_frame} bytes"
                            ),
                            call,
                        )
                    }
                    _ => reply,
                }
            }
            _ => call_failed_frame("the child expected a call", 0),
        };
        reader.recycle(frame);
        send(&mut channel, &mut reply);
        objects.settle(&mut reply);
    }
}

/// Runs when a process exits through `exit`: a library child that a call
/// made exit takes what it started down with it (in any other process,
/// this does nothing).
extern "C" fn end_by_exit() {
    child::kill_own_descendants();
}

/// Ends a child that served calls, with what it started.
fn end_child(code: i32) -> ! {
    child::kill_own_descendants();
    exit_child(code)
}

/// Tells the C allocator of a serving child to keep, for its next calls,
/// the memory its calls free, up to `max_frame` bytes at the top of its
/// heap.
///
/// A call that takes a large buffer gets it in fresh memory, and the
/// function usually frees it before returning. By default glibc serves
/// such a block with `mmap` and unmaps it when freed, so every call pays
/// for faulting its pages in anew: for 100 MiB, about three times the copy
/// itself. With `mmap` off, large blocks come from the heap, and the heap
/// is trimmed only when more than `max_frame` bytes (the largest argument
/// a call can bring) lie free at its top, so the next call's buffer lands
/// on pages already there. The cost: memory a call freed stays with the
/// child until it is reused, the child ends, or the free top grows past
/// `max_frame`. Only glibc's allocator reads these settings; a program
/// with its own global allocator keeps that allocator's behaviour.
fn keep_freed_memory(max_frame: usize) {
    #[cfg(target_env = "gnu")]
    {
        let trim_threshold = libc::c_int::try_from(max_frame).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only changes two tuning values of glibc's
        // allocator, under the allocator's own lock; any value is valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
        }
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = max_frame;
}

/// Bytes a parent allocates, before forking, for the reply of a child that
/// runs one call or one test: enough for small results without an
/// allocation in the child. Kept small on purpose: glibc frees a block this
/// size to a per-thread cache, while freeing a larger one writes to its
/// neighbours and to the allocator's state, and each page the parent
/// writes after a fork costs it a fault.
pub(crate) const REPLY_BUFFER: usize = 512;

/// Runs one call on a value the child already holds (it was forked with
/// it), replies with the hello and the reply in one write, and ends the
/// child. `buffer` was allocated by the parent before forking, so the child
/// need not allocate (each page a child writes costs it a copy).
pub(crate) fn run_once<A, R: Serialize + 'static>(
    mut channel: impl Write,
    function: fn(A) -> R,
    argument: A,
    buffer: Vec<u8>,
    call: u64,
) -> ! {
    let hello = || ipc::hello_frame(Vec::new());
    let mut frames = answer_panic(call, hello, || {
        reply_frame(catch(|| function(argument)), ipc::hello_frame(buffer), call)
    });
    send(&mut channel, &mut frames);
    child::kill_own_descendants();
    // The reply is not freed: that would write to heap pages the child has
    // not touched so far, each one a copy-on-write fault, just before exit.
    exit_child(0)
}
