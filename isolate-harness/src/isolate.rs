//! The public library API: [`Isolate`], [`run`] and [`Error`].
//!
//! An [`Isolate`] is a forked child that serves calls; [`run`] forks a fresh
//! child for a single call. Both wait for the child's answer in one `poll`
//! loop over the child's pidfd, its channel and, when output is captured,
//! its pipes, so that a reply, a crash, a timeout and a flood of output are
//! all noticed while the parent waits, and nothing blocks on a full buffer.
//! (A child of [`run`] with no timeout and no capture has only its exit to
//! wait for, and is waited for with a plain `waitid`.)
//!
//! The two talk to their child differently (see [`Transport`]): an isolate
//! over a `socketpair`, since it sends requests; the child of [`run`], which
//! needs none, writes its frames to a file that the parent reads once it
//! has exited. A reply on a socket wakes the parent, which then sleeps
//! again until the exit; a file lets it wake once, as `waitpid` would.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal as NixSignal;
use nix::sys::socket::{MsgFlags, sendmsg};
use serde::{Serialize, de::DeserializeOwned};

use crate::capture::{Output, Pipes};
use crate::child::{self, Child, ChildSetup, ExitStatus, Forked, Termination};
use crate::crash::Crash;
use crate::ipc::{
    self, DEFAULT_MAX_FRAME, Frame, FrameReader, Kind, Outgoing, ProtocolError, ReadError, Received,
};
use crate::server::{self, PanicReport};

/// Why an isolated call did not return a value.
///
/// The first four variants are outcomes of the code that ran in the child;
/// the rest mean the machinery itself failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child died, or exited, before replying.
    #[error("child {0}")]
    Terminated(Termination),
    /// The call panicked; the child caught it and keeps serving.
    #[error("child {0}")]
    Panicked(PanicReport),
    /// The call ran past its timeout and the child was killed.
    #[error("{0}")]
    TimedOut(TimedOut),
    /// An allocation failed in the child, which aborted.
    #[error("{0}")]
    OutOfMemory(OutOfMemory),
    /// The child could not make the call: its argument could not be decoded
    /// or its result encoded.
    #[error("the call could not be made: {0}")]
    CallFailed(String),
    /// The argument could not be encoded.
    #[error("failed to encode the argument")]
    Encode(#[source] postcard::Error),
    /// The child could not be started.
    #[error("failed to start the child process")]
    Spawn(#[source] io::Error),
    /// Talking to the child failed; the child was killed.
    #[error("failed to talk to the child process")]
    Io(#[source] io::Error),
    /// The child sent bytes that break the protocol; the child was killed.
    #[error("the child process broke the protocol")]
    Protocol(#[source] ProtocolError),
}

impl Error {
    /// How the child ended, for the errors that ended it.
    pub fn termination(&self) -> Option<&Termination> {
        match self {
            Error::Terminated(termination) => Some(termination),
            Error::TimedOut(timed_out) => Some(&timed_out.termination),
            Error::OutOfMemory(out_of_memory) => Some(&out_of_memory.termination),
            _ => None,
        }
    }
}

/// A call that ran past its timeout.
#[derive(Clone, Debug, thiserror::Error)]
#[error("child timed out after {limit:?} and was {termination}")]
pub struct TimedOut {
    /// The timeout in force.
    pub limit: Duration,
    /// How long the child had between SIGTERM and SIGKILL.
    pub grace_period: Duration,
    /// How the child ended.
    pub termination: Termination,
}

/// A child whose allocation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("child ran out of memory{}: {termination}", limit_text(*.limit))]
pub struct OutOfMemory {
    /// The memory limit in force: bytes of address space beyond what the
    /// child started with.
    pub limit: Option<u64>,
    /// How the child ended.
    pub termination: Termination,
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(String::new, |limit| {
        format!(" (limit: {limit} bytes beyond its size at fork)")
    })
}

/// The default time a timed-out child has between SIGTERM and SIGKILL.
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(1);

/// The options of an [`Isolate`] (and of [`IsolateBuilder::run`]).
#[derive(Clone)]
struct Config {
    timeout: Option<Duration>,
    grace_period: Duration,
    memory_limit: Option<u64>,
    capture: bool,
    max_frame: usize,
    setup: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// Builds an [`Isolate`] with options; [`Isolate::builder`] makes one.
#[derive(Clone)]
#[must_use]
pub struct IsolateBuilder {
    config: Config,
}

impl IsolateBuilder {
    /// Each call may take at most `timeout`; then the child's process group
    /// gets SIGTERM, and SIGKILL after the grace period. Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// The time between SIGTERM and SIGKILL for a timed-out child.
    /// Default: one second.
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.config.grace_period = grace_period;
        self
    }

    /// Limits the child's address space (`RLIMIT_AS`) to `bytes` beyond its
    /// size when it was forked: a fork starts with all of its parent's
    /// mappings, so a limit counted from zero would depend on the parent.
    /// An allocation past it fails, and the call ends in
    /// [`Error::OutOfMemory`].
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.config.memory_limit = Some(bytes);
        self
    }

    /// Captures the child's stdout and stderr instead of sharing the
    /// parent's (the default); read them with [`Isolate::take_output`].
    pub fn capture_output(mut self, capture: bool) -> Self {
        self.config.capture = capture;
        self
    }

    /// The largest frame (encoded argument or result) accepted, in bytes.
    /// Default: 256 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.max_frame = bytes;
        self
    }

    /// A hook the child runs once, right after it is forked and before it
    /// serves calls: to load a library, open a connection, set up state
    /// that calls then use. It runs again in the fresh child of
    /// [`Isolate::restart`].
    pub fn setup(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.config.setup = Some(Arc::new(hook));
        self
    }

    /// Forks the child and waits for it to be ready.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the child cannot be started; the outcome of the
    /// setup hook when it panics or kills the child.
    pub fn fork(self) -> Result<Isolate, Error> {
        let mut output = Output::default();
        let life = Life::start(&self.config, &mut output);
        let isolate = Isolate {
            config: self.config,
            state: Mutex::new(State {
                life,
                output,
                request_buffer: Vec::new(),
                next_call: random_call_id(),
            }),
        };
        if let Some(error) = isolate.lock().life.startup_error.take() {
            return Err(error);
        }
        Ok(isolate)
    }

    /// Runs `f(arg)` in a fresh child with these options, and ends the child.
    ///
    /// The child is forked holding `arg` already, so the argument is not
    /// encoded at all: only the result crosses back.
    ///
    /// # Errors
    ///
    /// As [`Isolate::call`]. Output, when captured, is dropped.
    pub fn run<A, R: Serialize + DeserializeOwned + 'static>(
        &self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<R, Error> {
        let mut output = Output::default();
        let reply_buffer = Vec::with_capacity(server::REPLY_BUFFER);
        let call = random_call_id();
        let mut connection = Connection::spawn_one_shot(&self.config, move |file| {
            server::run_once(file, f, arg, reply_buffer, call)
        })?;
        let reply = connection
            .expect_hello(&self.config, &mut output)
            .and_then(|()| connection.exchange(None, &self.config, &mut output))
            .map_err(|(error, _)| error);
        connection.end_one_shot();
        reply.and_then(|reply| decode_reply(&reply.frame, reply.bytes, call))
    }
}

/// A forked child process that serves calls: the Rust form of
/// `import_isolated`.
///
/// ```
/// use isolate_harness::{Error, Isolate};
///
/// fn divide((a, b): (i32, i32)) -> i32 {
///     a / b
/// }
///
/// let isolate = Isolate::fork()?;
/// assert_eq!(isolate.call(divide, (12, 4))?, 3);
/// // The panic happens in the child, which keeps serving.
/// assert!(matches!(isolate.call(divide, (1, 0)), Err(Error::Panicked(_))));
/// assert_eq!(isolate.call(divide, (9, 3))?, 3);
/// # Ok::<(), Error>(())
/// ```
///
/// A call that kills the child (a signal, an `exit`, a timeout) leaves the
/// isolate dead: every later call returns [`Error::Terminated`] with the
/// same termination, until [`Isolate::restart`] forks a fresh child.
///
/// Dropping an `Isolate` kills its child and everything left in the child's
/// process group, and reaps it.
///
/// # Memory
///
/// The child keeps the memory its calls free for the calls that follow,
/// up to [`max_frame_size`](IsolateBuilder::max_frame_size) bytes free at the top
/// of its heap (with glibc's allocator): a large argument then lands on
/// pages the child already has instead of being faulted in anew, which
/// makes a 100 MiB `Vec<u8>` about three times faster to send. A child that
/// freed a large buffer therefore stays that large until it reuses the
/// memory or ends.
///
/// # Forking a threaded process
///
/// The child holds only a copy of the thread that forked it. If another
/// thread held a lock at that moment (inside the allocator, stdout, a mutex
/// of the program), it stays locked in the child forever, and a call that
/// needs it hangs. The first fork of a process with more than one thread
/// prints a warning saying so. Fork before starting threads where you can.
///
/// The child is also killed when the *thread* that forked it exits
/// (`PR_SET_PDEATHSIG`), so fork on a thread that outlives the isolate.
pub struct Isolate {
    config: Config,
    state: Mutex<State>,
}

struct State {
    life: Life,
    output: Output,
    /// The buffer the last request was encoded in, reused for the next.
    request_buffer: Vec<u8>,
    /// The id of the next call: every reply must carry its call's.
    next_call: u64,
}

impl Isolate {
    /// Forks a child with the default options: no timeout, no memory limit,
    /// output shared with this process.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the child cannot be started.
    pub fn fork() -> Result<Isolate, Error> {
        Isolate::builder().fork()
    }

    /// Options for a child: timeout, memory limit, output capture, setup.
    pub fn builder() -> IsolateBuilder {
        IsolateBuilder {
            config: Config {
                timeout: None,
                grace_period: DEFAULT_GRACE_PERIOD,
                memory_limit: None,
                capture: false,
                max_frame: DEFAULT_MAX_FRAME,
                setup: None,
            },
        }
    }

    /// Calls `f(arg)` in the child and returns its result.
    ///
    /// The argument and result cross the process boundary encoded with
    /// serde, except a `Vec<u8>`, whose bytes are sent as they are; `f`
    /// must be a plain function (or a closure that captures nothing).
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] when `f` panics (the child lives on);
    /// [`Error::Terminated`], [`Error::TimedOut`] or [`Error::OutOfMemory`]
    /// when the child ends (it stays dead: see [`Isolate::restart`]);
    /// the other variants when the machinery fails.
    pub fn call<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R, Error>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let state = &mut *self.lock();
        let connection = match &mut state.life.connection {
            Ok(connection) => connection,
            Err(termination) => return Err(Error::Terminated(termination.clone())),
        };
        let buffer = std::mem::take(&mut state.request_buffer);
        let trampoline = server::trampoline::<A, R>;
        let call = state.next_call;
        state.next_call = call.wrapping_add(1);
        let mut request =
            server::call_frame(trampoline, f as usize, call, arg, buffer).map_err(Error::Encode)?;
        // The child would refuse it and stop serving: refused here, the
        // call fails and the child serves on.
        let body = request.largest_body();
        if body > self.config.max_frame {
            state.request_buffer = request.into_buffer();
            return Err(Error::Protocol(ProtocolError::FrameTooLarge {
                len: body as u64,
                cap: self.config.max_frame,
            }));
        }
        let reply = connection.exchange(Some(&mut request), &self.config, &mut state.output);
        state.request_buffer = request.into_buffer();
        match reply {
            Ok(reply) => {
                let result = decode_reply(&reply.frame, reply.bytes, call);
                connection.reader.recycle(reply.frame);
                if let Err(stray @ Error::Protocol(ProtocolError::StrayReply { .. })) = result {
                    // The channel is out of step with the calls: nothing
                    // more it says can be trusted.
                    let (error, termination) = connection.abandon(stray, &mut state.output);
                    state.life.connection = Err(termination);
                    return Err(error);
                }
                result
            }
            Err((error, termination)) => {
                state.life.connection = Err(termination);
                Err(error)
            }
        }
    }

    /// Ends the current child, if it is still running, and forks a fresh
    /// one with the same options (the setup hook runs again).
    ///
    /// # Errors
    ///
    /// As [`IsolateBuilder::fork`]; the isolate then stays dead.
    pub fn restart(&mut self) -> Result<(), Error> {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        state.life = Life::start(&self.config, &mut state.output);
        match state.life.startup_error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The process id of the child, while it is serving calls.
    pub fn id(&self) -> Option<u32> {
        let state = self.lock();
        let connection = state.life.connection.as_ref().ok()?;
        Some(connection.child.pid().as_raw().unsigned_abs())
    }

    /// Whether the child is still serving calls.
    pub fn is_alive(&self) -> bool {
        self.lock().life.connection.is_ok()
    }

    /// Takes what the child has written to stdout and stderr so far, when
    /// output is captured ([`IsolateBuilder::capture_output`]); empty
    /// otherwise. Output of a child that died is kept until taken.
    pub fn take_output(&self) -> Output {
        std::mem::take(&mut self.lock().output)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls `f(arg)` in a fresh child process, which ends with the call.
///
/// ```
/// fn crash(_: ()) {
///     // SAFETY: none; this is the point of the example.
///     unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
/// }
///
/// let error = isolate_harness::run(crash, ()).unwrap_err();
/// assert!(error.to_string().contains("SIGSEGV"));
/// ```
///
/// # Errors
///
/// As [`Isolate::call`].
pub fn run<A, R: Serialize + DeserializeOwned + 'static>(
    f: fn(A) -> R,
    arg: A,
) -> Result<R, Error> {
    Isolate::builder().run(f, arg)
}

/// A fresh, unpredictable starting point for call ids, so that a reply
/// cannot answer a call by chance.
fn random_call_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The result of call `call` from its reply frame and the `Bytes` payload
/// that came before it, if any.
fn decode_reply<R: DeserializeOwned + 'static>(
    frame: &Frame,
    bytes: Option<Vec<u8>>,
    call: u64,
) -> Result<R, Error> {
    if !matches!(
        frame.kind,
        Kind::Returned | Kind::Panicked | Kind::CallFailed
    ) {
        return Err(Error::Protocol(ProtocolError::Unexpected(
            frame.kind.name(),
        )));
    }
    let (id, payload) = ipc::split_call_id(frame.payload()).map_err(Error::Protocol)?;
    if id != call {
        return Err(Error::Protocol(ProtocolError::StrayReply {
            expected: call,
            got: id,
        }));
    }
    match frame.kind {
        Kind::Returned => ipc::decode_value(payload, bytes).map_err(Error::Protocol),
        Kind::Panicked => Err(ipc::decode(payload)
            .map_or_else(Error::Protocol, |message: server::PanicMessage| {
                Error::Panicked(message.into_report())
            })),
        _ => Err(ipc::decode(payload).map_or_else(Error::Protocol, Error::CallFailed)),
    }
}

/// A child serving calls, or how it ended.
struct Life {
    connection: Result<Connection, Termination>,
    /// Why the child did not become ready, until the caller takes it.
    startup_error: Option<Error>,
}

impl Life {
    /// Forks a child that serves calls, and waits for its hello.
    fn start(config: &Config, output: &mut Output) -> Life {
        let setup = config.setup.clone();
        let max_frame = config.max_frame;
        let spawned = Connection::spawn(config, move |mut channel| {
            server::start(&mut channel, setup.as_deref());
            server::serve(channel, max_frame)
        });
        let mut connection = match spawned {
            Ok(connection) => connection,
            Err(error) => {
                return Life {
                    connection: Err(Termination::new(ExitStatus::Code(-1), None)),
                    startup_error: Some(error),
                };
            }
        };
        match connection.expect_hello(config, output) {
            Ok(()) => Life {
                connection: Ok(connection),
                startup_error: None,
            },
            Err((error, termination)) => Life {
                connection: Err(termination),
                startup_error: Some(error),
            },
        }
    }
}

/// The parent's side of one child.
struct Connection {
    child: Child,
    /// Whether the child has been seen to exit (it is not reaped yet).
    exited: bool,
    transport: Transport,
    reader: FrameReader,
    pipes: Option<Pipes>,
}

/// How a child's frames reach the parent.
enum Transport {
    /// A `socketpair` (non-blocking on this side), both ways: for a child
    /// that serves requests.
    Channel(UnixStream),
    /// A `memfd` the child writes its frames to, and the parent reads from
    /// the start once the child has exited: for a one-shot child. A file
    /// never fills, so the child cannot block on it, and writing it wakes
    /// no one. (Its crash handler writes there too.) Read through a buffer,
    /// so a small reply takes one system call, not one per frame part.
    File(BufReader<FromStart>),
}

/// Reads a file from its start, without moving the file offset (which the
/// child's descriptor shares).
struct FromStart {
    file: File,
    /// How many bytes have been read so far.
    read: u64,
}

impl Read for FromStart {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.read)?;
        self.read += read as u64;
        Ok(read)
    }
}

/// A failed exchange: the error to return and how the child, now reaped,
/// ended.
type Died = (Error, Termination);

impl Connection {
    /// Forks a child that runs `child_main` on its end of a channel.
    fn spawn(config: &Config, child_main: impl FnOnce(UnixStream)) -> Result<Connection, Error> {
        let (channel, child_channel) = UnixStream::pair().map_err(Error::Spawn)?;
        channel.set_nonblocking(true).map_err(Error::Spawn)?;
        Connection::fork(
            config,
            Transport::Channel(channel),
            child_channel,
            child_main,
        )
    }

    /// Forks a one-shot child that runs `child_main` on the file it writes
    /// its frames to. End it with [`Connection::end_one_shot`].
    fn spawn_one_shot(config: &Config, child_main: impl FnOnce(File)) -> Result<Connection, Error> {
        let file = reply_file::take().map_err(Error::Spawn)?;
        let child_file = file.try_clone().map_err(Error::Spawn)?;
        Connection::fork(
            config,
            Transport::File(BufReader::with_capacity(
                server::REPLY_BUFFER,
                FromStart { file, read: 0 },
            )),
            child_file,
            child_main,
        )
    }

    /// Forks a child that runs `child_main` on `child_end`, its side of
    /// `transport`.
    fn fork<E: AsRawFd>(
        config: &Config,
        transport: Transport,
        child_end: E,
        child_main: impl FnOnce(E),
    ) -> Result<Connection, Error> {
        let threaded = child::warn_if_threaded();
        server::prepare_to_fork();
        // Whatever this process has buffered must not be written a second
        // time by the child.
        let _ = io::stdout().flush();
        let pipes = config
            .capture
            .then(Pipes::open)
            .transpose()
            .map_err(Error::Spawn)?;
        let mut setup = ChildSetup::new(child_end.as_raw_fd());
        // What a call starts stays below the child, which kills it as it
        // ends, or where ending the isolate finds and kills it.
        setup.subreaper = true;
        setup.kill_descendants_at_end = true;
        setup.output = pipes.as_ref().map(|(_, ends)| ends.raw());
        if let Some(limit) = config.memory_limit {
            setup.address_space_limit = Some(child::address_space_size().saturating_add(limit));
        }
        match child::fork(&setup, &[]).map_err(Error::Spawn)? {
            Forked::Child => {
                // The parent's end of a channel must be closed here, or the
                // child would not see end of file when the parent goes. A
                // one-shot child's file is left alone: the child is about
                // to exit, and closing it and freeing its read buffer would
                // cost faults on pages the child has not touched so far.
                match transport {
                    Transport::Channel(channel) => drop(channel),
                    Transport::File(file) => std::mem::forget(file),
                }
                drop(pipes);
                server::set_flush_stdout(!threaded);
                child_main(child_end);
                child::exit_child(0)
            }
            Forked::Parent(child) => {
                drop(child_end);
                Ok(Connection {
                    child,
                    exited: false,
                    transport,
                    reader: FrameReader::new(config.max_frame),
                    pipes: pipes.map(|(pipes, _)| pipes),
                })
            }
        }
    }

    /// Kills and reaps a one-shot child, if it is not reaped yet, and keeps
    /// its reply file for the next one.
    fn end_one_shot(mut self) {
        let _ = self.child.kill();
        if let Transport::File(reader) = self.transport {
            reply_file::keep(reader.into_inner().file);
        }
    }

    /// Waits for the child's `Hello`.
    fn expect_hello(&mut self, config: &Config, output: &mut Output) -> Result<(), Died> {
        let Reply { frame, .. } = self.exchange(None, config, output)?;
        let checked = match frame.kind {
            Kind::Hello => ipc::check_hello(frame.payload()).map_err(Error::Protocol),
            // A setup hook that panicked replies as call 0.
            _ => decode_reply::<()>(&frame, None, 0)
                .and(Err(Error::Protocol(ProtocolError::BadHandshake))),
        };
        checked.map_err(|error| self.abandon(error, output))
    }

    /// Sends `request` (which may be empty) and waits for the next frame
    /// that is neither a crash report nor a `Bytes` frame, draining output
    /// meanwhile.
    ///
    /// # Errors
    ///
    /// When the child ends first, runs out of time, or breaks the protocol;
    /// the child is then reaped.
    fn exchange(
        &mut self,
        mut request: Option<&mut Outgoing>,
        config: &Config,
        output: &mut Output,
    ) -> Result<Reply, Died> {
        let deadline = config.timeout.map(|timeout| Instant::now() + timeout);
        let mut crash: Option<Crash> = None;
        let mut bytes = None;
        let mut closed = false;
        loop {
            // A one-shot child's file is complete once it has exited.
            let readable = matches!(self.transport, Transport::Channel(_)) || self.exited;
            if !closed && readable {
                match self.read_frames(&mut crash, &mut bytes) {
                    Ok(Incoming::Frame(frame)) => {
                        self.drain(output);
                        return Ok(Reply { frame, bytes });
                    }
                    Ok(Incoming::Pending) => {}
                    Ok(Incoming::Closed) => closed = true,
                    Err(ReadError::Io(error)) if error.kind() == io::ErrorKind::ConnectionReset => {
                        closed = true;
                    }
                    Err(ReadError::Io(error)) => return Err(self.abandon(Error::Io(error), output)),
                    Err(ReadError::Protocol(error)) => {
                        return Err(self.abandon(Error::Protocol(error), output));
                    }
                }
            }
            if self.exited {
                if let Some(truncated) = self.reader.truncated() {
                    let termination = Termination::new(self.reap(output), crash);
                    return Err((Error::Protocol(truncated), termination));
                }
                return Err(self.ended(config, crash, output));
            }
            if let Some(unsent) = request.as_deref_mut().filter(|request| !request.is_sent())
                && let Transport::Channel(channel) = &self.transport
                && !closed
            {
                match sendmsg::<()>(
                    channel.as_raw_fd(),
                    &unsent.unsent(),
                    &[],
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Ok(sent) => unsent.advance(sent),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    // The child is gone; its pidfd says how.
                    Err(_) => request = None,
                }
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.time_out(config, crash, output));
                    }
                    PollTimeout::try_from(left.max(Duration::from_millis(1)))
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let waited = match (&self.transport, &self.pipes, deadline) {
                // Nothing but the exit to wait for: a plain wait.
                (Transport::File(_), None, None) => self.child.wait_exit(None),
                _ => self.poll(request.as_deref(), closed, timeout),
            };
            match waited {
                Ok(exited) => self.exited = exited,
                Err(error) => return Err(self.abandon(Error::Io(error), output)),
            }
            self.drain(output);
        }
    }

    /// Waits up to `timeout` for the child to exit or for its channel (to
    /// send `request` or to read) or its capture pipes to be ready. Returns
    /// whether it has exited.
    fn poll(
        &self,
        request: Option<&Outgoing>,
        closed: bool,
        timeout: PollTimeout,
    ) -> io::Result<bool> {
        let sending = request.is_some_and(|request| !request.is_sent());
        let pidfd = self.child.pidfd()?;
        let mut fds: [_; 4] = std::array::from_fn(|_| PollFd::new(pidfd, PollFlags::POLLIN));
        let mut watched = 1;
        if let Transport::Channel(channel) = &self.transport
            && !closed
        {
            let events = if sending {
                PollFlags::POLLIN | PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            fds[watched] = PollFd::new(channel.as_fd(), events);
            watched += 1;
        }
        if let Some(pipes) = &self.pipes {
            for fd in pipes.fds() {
                fds[watched] = PollFd::new(fd, PollFlags::POLLIN);
                watched += 1;
            }
        }
        match poll(&mut fds[..watched], timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(fds[0].any().unwrap_or(false)),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads the frames that have arrived, keeping crash reports and a
    /// `Bytes` payload aside, until a frame of another kind.
    fn read_frames(
        &mut self,
        crash: &mut Option<Crash>,
        bytes: &mut Option<Vec<u8>>,
    ) -> Result<Incoming, ReadError> {
        loop {
            let received = match &mut self.transport {
                Transport::Channel(channel) => self.reader.read_from(&mut &*channel)?,
                Transport::File(file) => self.reader.read_from(file)?,
            };
            let frame = match received {
                Received::Frame(frame) => frame,
                Received::Pending => return Ok(Incoming::Pending),
                Received::Closed => return Ok(Incoming::Closed),
            };
            match (frame.kind, crash.as_mut()) {
                (Kind::Crash, _) => *crash = Some(Crash::parse(frame.payload())?),
                (Kind::Backtrace, Some(crash)) => crash.add_backtrace(frame.payload())?,
                (Kind::Backtrace, None) => {
                    return Err(ProtocolError::Unexpected("backtrace without a crash").into());
                }
                (Kind::Bytes, _) if bytes.is_none() => *bytes = Some(frame.into_payload()),
                (Kind::Bytes, _) => {
                    return Err(ProtocolError::Unexpected("second bytes").into());
                }
                _ => return Ok(Incoming::Frame(frame)),
            }
        }
    }

    /// Moves what the capture pipes hold into `output`.
    fn drain(&self, output: &mut Output) {
        if let Some(pipes) = &self.pipes {
            // A failed read of a pipe loses output, not the call's outcome.
            let _ = pipes.drain(output);
        }
    }

    /// The child has exited: reap it and say how it ended.
    fn ended(&mut self, config: &Config, crash: Option<Crash>, output: &mut Output) -> Died {
        let status = self.reap(output);
        let termination = Termination::new(status, crash);
        let error = match termination.crash() {
            Some(crash) if crash.is_allocation_failure() => Error::OutOfMemory(OutOfMemory {
                limit: config.memory_limit,
                termination: termination.clone(),
            }),
            _ => Error::Terminated(termination.clone()),
        };
        (error, termination)
    }

    /// The call ran out of time: SIGTERM to the group, the grace period,
    /// then SIGKILL.
    fn time_out(&mut self, config: &Config, crash: Option<Crash>, output: &mut Output) -> Died {
        // What the call started outside the group gets the same grace,
        // and is held to be killed after it even once the child is gone.
        let below = child::Descendants::of(&self.child);
        self.child.signal_group(NixSignal::SIGTERM);
        below.signal(NixSignal::SIGTERM);
        if !self
            .child
            .wait_exit(Some(config.grace_period))
            .unwrap_or(false)
        {
            self.child.kill_all();
        }
        below.signal(NixSignal::SIGKILL);
        let termination = Termination::new(self.reap(output), crash);
        let error = Error::TimedOut(TimedOut {
            limit: config.timeout.unwrap_or_default(),
            grace_period: config.grace_period,
            termination: termination.clone(),
        });
        (error, termination)
    }

    /// Gives up on a child that broke the protocol or could not be talked
    /// to: kills and reaps it.
    fn abandon(&mut self, error: Error, output: &mut Output) -> Died {
        self.child.kill_all();
        let termination = Termination::new(self.reap(output), None);
        (error, termination)
    }

    /// Reaps the child, keeping the last of its output.
    fn reap(&mut self, output: &mut Output) -> ExitStatus {
        let status = self.child.wait();
        self.drain(output);
        // `waitid` on our own child fails only if SIGCHLD is ignored, when
        // the kernel reaps for us and keeps no status.
        status.unwrap_or(ExitStatus::Code(-1))
    }
}

mod reply_file {
    //! The file a one-shot child writes its frames to: a `memfd`, kept from
    //! one child to the next on the same thread. Making a `memfd` and
    //! tearing it down cost about as much as the rest of a small call's
    //! system calls together; emptying one costs two cheap ones.
    //!
    //! A kept file is handed to the next child only once the last one and
    //! its process group are dead, so no child of this library writes to
    //! it any more. A process that left the group (with `setsid`) and kept
    //! the descriptor could still write to it, as it could to an
    //! [`Isolate`](super::Isolate)'s channel: the library does not handle
    //! processes that leave their group.

    use std::cell::Cell;
    use std::fs::File;
    use std::io::{self, Seek};

    use nix::sys::memfd::{MFdFlags, memfd_create};

    thread_local! {
        /// This thread's kept file, and the pid of the process that kept
        /// it: a forked child inherits the variable, but must not share the
        /// file with its parent.
        static KEPT: Cell<Option<(File, u32)>> = const { Cell::new(None) };
    }

    /// This thread's kept file, if this process kept it, or a new one.
    pub(super) fn take() -> io::Result<File> {
        match KEPT.take() {
            Some((file, owner)) if owner == std::process::id() => Ok(file),
            _ => Ok(File::from(memfd_create(
                "isolate-reply",
                MFdFlags::MFD_CLOEXEC,
            )?)),
        }
    }

    /// Keeps `file`, emptied, for the next child; closes it if it cannot
    /// be emptied.
    pub(super) fn keep(mut file: File) {
        if file.set_len(0).is_ok() && file.rewind().is_ok() {
            KEPT.set(Some((file, std::process::id())));
        }
    }
}

/// A reply frame, and the `Bytes` payload that came before it.
#[derive(Debug)]
struct Reply {
    frame: Frame,
    bytes: Option<Vec<u8>>,
}

/// What [`Connection::read_frames`] found.
enum Incoming {
    Frame(Frame),
    Pending,
    Closed,
}

#[cfg(test)]
mod tests {
    //! A child that breaks the protocol: forked with the real machinery,
    //! but sending bytes of the test's choosing instead of serving.

    use super::*;

    fn config() -> Config {
        Isolate::builder().max_frame_size(1024).config
    }

    /// Forks a child that writes `bytes` on its channel and exits, and
    /// returns what the parent makes of it as the child's first reply.
    fn reply_to(bytes: &'static [u8]) -> Result<Reply, Died> {
        let config = config();
        let mut output = Output::default();
        let mut connection = Connection::spawn(&config, move |mut channel| {
            let _ = channel.write_all(bytes);
        })
        .unwrap();
        connection.exchange(None, &config, &mut output)
    }

    fn protocol_error(bytes: &'static [u8]) -> ProtocolError {
        match reply_to(bytes) {
            Err((Error::Protocol(error), _)) => error,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn oversized_frame_is_a_protocol_error() {
        assert!(matches!(
            protocol_error(&[0xff, 0xff, 0xff, 0x7f, 3]),
            ProtocolError::FrameTooLarge {
                len: 0x7fff_ffff,
                cap: 1024
            }
        ));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(matches!(
            protocol_error(&[4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]),
            ProtocolError::UnknownKind(0xde)
        ));
    }

    #[test]
    fn child_closing_mid_frame_is_a_protocol_error() {
        assert!(matches!(
            protocol_error(&[100, 0, 0, 0, Kind::Returned as u8, 1, 2]),
            ProtocolError::Truncated {
                expected: 104,
                received: 7
            }
        ));
    }

    #[test]
    fn truncated_header_is_a_protocol_error() {
        assert!(matches!(
            protocol_error(&[100, 0]),
            ProtocolError::Truncated {
                expected: 4,
                received: 2
            }
        ));
    }

    #[test]
    fn malformed_crash_report_is_a_protocol_error() {
        assert!(matches!(
            protocol_error(&[3, 0, 0, 0, Kind::Crash as u8, 1, 2]),
            ProtocolError::Malformed("crash")
        ));
    }

    #[test]
    fn bad_handshake_is_refused() {
        let config = config();
        let mut output = Output::default();
        let mut connection = Connection::spawn(&config, |mut channel| {
            let _ = channel.write_all(&[2, 0, 0, 0, Kind::Hello as u8, 9]);
        })
        .unwrap();
        let error = connection.expect_hello(&config, &mut output).unwrap_err().0;
        assert!(
            matches!(error, Error::Protocol(ProtocolError::BadHandshake)),
            "{error:?}"
        );
    }

    #[test]
    fn undecodable_reply_is_a_protocol_error() {
        let reply = reply_to(&[
            11,
            0,
            0,
            0,
            Kind::Returned as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
        ])
        .unwrap();
        let error = decode_reply::<String>(&reply.frame, reply.bytes, 0).unwrap_err();
        assert!(
            matches!(error, Error::Protocol(ProtocolError::Decode(_))),
            "{error:?}"
        );
    }

    /// A `Bytes` frame of three bytes, then a `Returned` frame for call 5
    /// with no value of its own.
    const BYTES_REPLY: &[u8] = &[
        4,
        0,
        0,
        0,
        Kind::Bytes as u8,
        7,
        8,
        9,
        9,
        0,
        0,
        0,
        Kind::Returned as u8,
        5,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];

    #[test]
    fn bytes_frame_is_the_vec_u8_result() {
        let reply = reply_to(BYTES_REPLY).unwrap();
        let value: Vec<u8> = decode_reply(&reply.frame, reply.bytes, 5).unwrap();
        assert_eq!(value, [7, 8, 9]);
    }

    #[test]
    fn bytes_frame_for_another_type_is_a_protocol_error() {
        let reply = reply_to(BYTES_REPLY).unwrap();
        let error = decode_reply::<String>(&reply.frame, reply.bytes, 5).unwrap_err();
        assert!(
            matches!(error, Error::Protocol(ProtocolError::Unexpected("bytes"))),
            "{error:?}"
        );
    }

    #[test]
    fn a_reply_to_another_call_is_a_stray_reply() {
        let reply = reply_to(BYTES_REPLY).unwrap();
        let error = decode_reply::<Vec<u8>>(&reply.frame, reply.bytes, 6).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Protocol(ProtocolError::StrayReply {
                    expected: 6,
                    got: 5
                })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn two_bytes_frames_in_a_row_are_a_protocol_error() {
        assert!(matches!(
            protocol_error(&[1, 0, 0, 0, Kind::Bytes as u8, 1, 0, 0, 0, Kind::Bytes as u8]),
            ProtocolError::Unexpected("second bytes")
        ));
    }

    #[test]
    fn silent_exit_is_a_termination() {
        match reply_to(&[]) {
            Err((Error::Terminated(termination), _)) => {
                assert_eq!(termination, Termination::Exited { code: 0 });
            }
            other => panic!("expected a termination, got {other:?}"),
        }
    }
}
