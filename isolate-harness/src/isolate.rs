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
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
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
use crate::remote::IsolatePool;
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
    /// The isolate's child ended before this call: the error that said so
    /// first, returned by every call (and every [`Remote`] of the isolate)
    /// until [`Isolate::restart`] forks a fresh child.
    #[error("the isolate's child ended earlier: {0}; Isolate::restart forks a fresh one")]
    Dead(Arc<Error>),
    /// A [`Remote`] made in an earlier child of its isolate, which was
    /// restarted since: its object ended with that child.
    #[error(
        "the remote `{object}` lived in an earlier child of its isolate, which was restarted since; \
         make the object again in the new child"
    )]
    Stale {
        /// The type of the object.
        object: &'static str,
    },
    /// The isolate (or its [`Remote`], [`IsolatePool`] or
    /// [`JoinHandle`]) was made by another process, of which this one is a
    /// forked copy: a test forked from a harness's shared setup, or a child
    /// of another isolate. Its child serves that process alone; talking to
    /// it from here would mix this process's calls with the owner's, so
    /// nothing is sent, signalled or closed.
    #[error(
        "this isolate belongs to process {owner}, and process {this} is a forked copy of it: \
         only process {owner} can use its child; make an isolate in this process instead"
    )]
    ForkedCopy {
        /// The process that made the isolate.
        owner: u32,
        /// This process.
        this: u32,
    },
}

impl Error {
    /// How the child ended, for the errors that ended it.
    pub fn termination(&self) -> Option<&Termination> {
        match self {
            Error::Terminated(termination) => Some(termination),
            Error::TimedOut(timed_out) => Some(&timed_out.termination),
            Error::OutOfMemory(out_of_memory) => Some(&out_of_memory.termination),
            Error::Dead(first) => first.termination(),
            _ => None,
        }
    }

    /// A copy, kept as the first error of a child that ended. (An I/O
    /// error is copied as its kind and text.)
    fn duplicate(&self) -> Error {
        match self {
            Error::Terminated(termination) => Error::Terminated(termination.clone()),
            Error::Panicked(report) => Error::Panicked(report.clone()),
            Error::TimedOut(timed_out) => Error::TimedOut(timed_out.clone()),
            Error::OutOfMemory(out_of_memory) => Error::OutOfMemory(out_of_memory.clone()),
            Error::CallFailed(reason) => Error::CallFailed(reason.clone()),
            Error::Encode(error) => Error::Encode(error.clone()),
            Error::Spawn(error) => Error::Spawn(io::Error::new(error.kind(), error.to_string())),
            Error::Io(error) => Error::Io(io::Error::new(error.kind(), error.to_string())),
            Error::Protocol(error) => Error::Protocol(error.clone()),
            Error::Dead(first) => Error::Dead(Arc::clone(first)),
            Error::Stale { object } => Error::Stale { object },
            Error::ForkedCopy { owner, this } => Error::ForkedCopy {
                owner: *owner,
                this: *this,
            },
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

impl Config {
    /// When a call starting now runs out of time.
    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|timeout| Instant::now() + timeout)
    }
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
        let child = start_child(&self.config, &mut output)?;
        Ok(Isolate {
            shared: Arc::new(Shared {
                owner: std::process::id(),
                current: Mutex::new(child.current()),
                config: self.config,
                state: Mutex::new(State {
                    child: Ok(child),
                    lives: 1,
                    output,
                    request_buffer: Vec::new(),
                    next_call: random_call_id(),
                }),
            }),
        })
    }

    /// Forks a pool of `size` children with these options: see
    /// [`IsolatePool`].
    ///
    /// # Errors
    ///
    /// As [`IsolateBuilder::fork`], for the first child that fails.
    pub fn pool(self, size: usize) -> Result<IsolatePool, Error> {
        IsolatePool::with_builder(self, size)
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
        self.start(f, arg)?.join()
    }

    /// Starts `f(arg)` in a fresh child with these options, and returns at
    /// once: the call runs while this thread goes on, and
    /// [`JoinHandle::join`] waits for its result. The timeout counts from
    /// here.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the child cannot be started.
    pub fn start<A, R: Serialize + DeserializeOwned + 'static>(
        &self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<JoinHandle<R>, Error> {
        let reply_buffer = Vec::with_capacity(server::REPLY_BUFFER);
        let call = random_call_id();
        let deadline = self.config.deadline();
        let connection = Connection::spawn_one_shot(&self.config, move |file| {
            server::run_once(file, f, arg, reply_buffer, call)
        })?;
        Ok(JoinHandle {
            started: Box::new(Started {
                owner: std::process::id(),
                connection: Some(connection),
                config: self.config.clone(),
                call,
                deadline,
            }),
            result: std::marker::PhantomData,
        })
    }
}

/// A call running in a fresh child, started by [`start`] or
/// [`IsolateBuilder::start`]: the handle of `procspawn` and of
/// `std::thread`, for a process.
///
/// ```
/// use std::time::Duration;
///
/// fn slow(seconds: u64) -> u64 {
///     std::thread::sleep(Duration::from_secs(seconds));
///     seconds
/// }
///
/// let quick = isolate_harness::start(slow, 0)?;
/// assert_eq!(quick.join()?, 0);
///
/// let handle = isolate_harness::start(slow, 60)?;
/// match handle.join_timeout(Duration::from_millis(50)) {
///     Ok(result) => println!("done early: {result:?}"),
///     // Still running: given back, to wait again or to kill.
///     Err(handle) => handle.kill(),
/// }
/// # Ok::<(), isolate_harness::Error>(())
/// ```
///
/// Dropping a handle that was not joined kills the child and what it
/// started, as [`JoinHandle::kill`] does: nothing a call starts outlives
/// its handle. Output, when captured, is dropped.
#[must_use = "dropping a JoinHandle kills its call"]
pub struct JoinHandle<R> {
    started: Box<Started>,
    result: std::marker::PhantomData<fn() -> R>,
}

/// A started call, as its [`JoinHandle`] keeps it.
struct Started {
    /// The process that started the call, the only one that may wait for
    /// its child or kill it.
    owner: u32,
    /// The child, until it has been waited for.
    connection: Option<Connection>,
    config: Config,
    call: u64,
    /// When the call's timeout ends it.
    deadline: Option<Instant>,
}

impl<R: DeserializeOwned + 'static> JoinHandle<R> {
    /// Waits for the call to end, and returns its result.
    ///
    /// # Errors
    ///
    /// As [`Isolate::call`].
    pub fn join(mut self) -> Result<R, Error> {
        self.wait(None)
            .unwrap_or_else(|| unreachable!("a wait without patience ends"))
    }

    /// Waits at most `timeout` for the call to end: its result if it did
    /// (`Ok`), or this handle back if it still runs (`Err`), to wait
    /// again or to [`kill`](JoinHandle::kill). The call's own timeout, if
    /// it has one, ends it meanwhile as it would under [`join`](JoinHandle::join).
    pub fn join_timeout(mut self, timeout: Duration) -> Result<Result<R, Error>, JoinHandle<R>> {
        match self.wait(Some(Instant::now() + timeout)) {
            Some(result) => Ok(result),
            None => Err(self),
        }
    }

    /// Kills the child and everything it started, and reaps it (as
    /// dropping the handle does).
    pub fn kill(self) {
        drop(self);
    }

    /// Waits for the call's end until `patience` runs out (`None` when it
    /// does), then ends the child and decodes its reply.
    fn wait(&mut self, patience: Option<Instant>) -> Option<Result<R, Error>> {
        if let Err(error) = owned_by(self.started.owner) {
            std::mem::forget(self.started.connection.take());
            return Some(Err(error));
        }
        let connection = self.started.connection.as_mut()?;
        let mut output = Output::default();
        let reply = match connection.exchange_until(
            None,
            self.started.deadline,
            patience,
            &self.started.config,
            &mut output,
        ) {
            Ok(None) => return None,
            Ok(Some(hello)) => connection
                .check_hello(hello.frame, &mut output)
                .and_then(|()| {
                    connection.exchange(
                        None,
                        self.started.deadline,
                        &self.started.config,
                        &mut output,
                    )
                }),
            Err(died) => Err(died),
        };
        if let Some(connection) = self.started.connection.take() {
            connection.end_one_shot();
        }
        Some(
            reply
                .map_err(|(error, _)| error)
                .and_then(|reply| decode_reply(&reply.frame, reply.bytes, self.started.call)),
        )
    }
}

impl<R> JoinHandle<R> {
    /// The process id of the child, while it runs.
    pub fn id(&self) -> Option<u32> {
        owned_by(self.started.owner).ok()?;
        let connection = self.started.connection.as_ref()?;
        Some(connection.child.pid().as_raw().unsigned_abs())
    }
}

impl<R> Drop for JoinHandle<R> {
    fn drop(&mut self) {
        let connection = self.started.connection.take();
        // The child is not a forked copy's to kill, nor its descriptors
        // (closed, or reused for other files) to close.
        if owned_by(self.started.owner).is_err() {
            std::mem::forget(connection);
        } else if let Some(connection) = connection {
            connection.end_one_shot();
        }
    }
}

impl<R> std::fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("pid", &self.id())
            .finish_non_exhaustive()
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
/// isolate dead: every later call returns [`Error::Dead`], which holds the
/// error that said how the child ended, until [`Isolate::restart`] forks a
/// fresh child.
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
/// # Forked copies of this process
///
/// An isolate's child serves the process that made the isolate, and no
/// other. A copy of the isolate in a forked copy of that process (a test
/// of a harness whose shared setup made it, a child of another isolate
/// that finds it in a static) refuses every call with
/// [`Error::ForkedCopy`] and leaves the child alone; make the isolate in
/// the process that uses it.
///
/// # Forking a threaded process
///
/// The child holds only a copy of the thread that forked it. If another
/// thread held a lock at that moment (inside the allocator, stdout, a mutex
/// of the program), it stays locked in the child forever, and a call that
/// needs it hangs. The first fork of a process with more than one thread
/// prints a warning saying so. Fork before starting threads where you can.
///
/// # When this process dies
///
/// A child forked on the main thread is killed when this process dies
/// (`PR_SET_PDEATHSIG`). That signal follows the *thread* that forked, not
/// the process, so a child forked on another thread (which may end while
/// the isolate, shared, lives on) goes without it: if this process dies,
/// such a child ends when it next reads its closed channel, after the
/// call it is making, if any.
///
/// A child killed with this process, by a `SIGKILL` no code of it sees,
/// cannot end the processes its calls started, which outlive it: end the
/// isolate (drop it) before this process ends where they must not.
pub struct Isolate {
    shared: Arc<Shared>,
}

/// What an isolate and its [`Remote`]s share: the child lives as long as
/// any of them.
struct Shared {
    /// The process that made the isolate, the only one its child serves.
    owner: u32,
    config: Config,
    state: Mutex<State>,
    /// The current child, if one was started: its pid, and whether it has
    /// exited, for [`Isolate::id`] and [`Isolate::is_alive`] to read while a
    /// call on another thread holds `state`.
    current: Mutex<Option<Current>>,
}

/// An isolate's current child, as read without its connection.
struct Current {
    pid: u32,
    pidfd: OwnedFd,
}

impl Current {
    /// The child's pid, unless its pidfd says it has exited (a failed
    /// poll counts as exited).
    fn serving(&self) -> Option<u32> {
        let exited = child::pidfd_exited(self.pidfd.as_fd(), PollTimeout::ZERO);
        (!exited.unwrap_or(true)).then_some(self.pid)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A forked copy leaves the child alone: it is not the copy's to
        // kill, and the copy's channel descriptor may be closed, or reused
        // for another file.
        if let Err(error) = owned_by(self.owner) {
            let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
            let child = std::mem::replace(&mut state.child, Err(Arc::new(error)));
            std::mem::forget(child);
            let current = self
                .current
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::forget(current.take());
        }
    }
}

/// Whether this process is `owner`, the one that made an isolate or
/// started a call, or a forked copy of it ([`Error::ForkedCopy`]). A copy
/// is told by its process id, which differs from its owner's while the
/// owner lives (short of a new PID namespace, which nothing here makes).
fn owned_by(owner: u32) -> Result<(), Error> {
    let this = std::process::id();
    if this == owner {
        Ok(())
    } else {
        Err(Error::ForkedCopy { owner, this })
    }
}

struct State {
    /// The child serving calls, or the error that first said how it
    /// ended.
    child: Result<Connection, Arc<Error>>,
    /// How many children the isolate has forked: the number of the
    /// current one, which its remote objects carry.
    lives: u64,
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
    /// Both must be owned types: a function of a `&str` takes a `String`
    /// here (the `&str` could not outlive the frame it was read from).
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] when `f` panics (the child lives on);
    /// [`Error::Terminated`], [`Error::TimedOut`] or [`Error::OutOfMemory`]
    /// when the child ends (then every later call returns [`Error::Dead`]
    /// until [`Isolate::restart`]); the other variants when the machinery
    /// fails.
    pub fn call<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R, Error>
    where
        A: Argument,
        R: Serialize + DeserializeOwned + 'static,
    {
        let trampoline = server::trampoline::<A, R>;
        self.request(None, trampoline, f as usize, 0, arg)
            .map(|(result, _)| result)
    }

    /// Sends one call (`trampoline` with `function` and `arg`, on
    /// `object` of the child's table, 0 for none) to the current child and
    /// returns its result with the number of the child that made it.
    ///
    /// With `life`, the call is for an object of that child: if the
    /// isolate has been restarted since, it fails with [`Error::Stale`].
    pub(crate) fn request<A: Serialize + 'static, R: DeserializeOwned + 'static>(
        &self,
        life: Option<(u64, &'static str)>,
        trampoline: server::Trampoline,
        function: usize,
        object: u64,
        arg: A,
    ) -> Result<(R, u64), Error> {
        self.check_owner()?;
        let state = &mut *self.lock();
        let lives = state.lives;
        if let Some((life, object)) = life
            && life != lives
        {
            return Err(Error::Stale { object });
        }
        let connection = match &mut state.child {
            Ok(connection) => connection,
            Err(first) => return Err(Error::Dead(Arc::clone(first))),
        };
        let config = &self.shared.config;
        let buffer = std::mem::take(&mut state.request_buffer);
        let call = state.next_call;
        state.next_call = call.wrapping_add(1);
        let mut request = server::call_frame(trampoline, function, call, object, arg, buffer)
            .map_err(Error::Encode)?;
        // The child would refuse it and stop serving: refused here, the
        // call fails and the child serves on.
        let body = request.largest_body();
        if body > config.max_frame {
            state.request_buffer = request.into_buffer();
            return Err(Error::Protocol(ProtocolError::FrameTooLarge {
                len: body as u64,
                cap: config.max_frame,
            }));
        }
        let reply = connection.exchange(
            Some(&mut request),
            config.deadline(),
            config,
            &mut state.output,
        );
        state.request_buffer = request.into_buffer();
        let result = match reply {
            Ok(reply) => {
                let result = decode_reply(&reply.frame, reply.bytes, call);
                connection.reader.recycle(reply.frame);
                match result {
                    // The channel is out of step with the calls: nothing
                    // more it says can be trusted.
                    Err(stray @ Error::Protocol(ProtocolError::StrayReply { .. })) => {
                        Err(connection.abandon(stray, &mut state.output).0)
                    }
                    result => return result.map(|result| (result, lives)),
                }
            }
            Err((error, _)) => Err(error),
        };
        result.inspect_err(|error| {
            state.child = Err(Arc::new(error.duplicate()));
        })
    }

    /// Ends the current child, if it is still running, and forks a fresh
    /// one with the same options (the setup hook runs again). The remote
    /// objects of the old child end with it: using one returns
    /// [`Error::Stale`].
    ///
    /// Takes `&self`, so that an isolate shared between threads (in an
    /// `Arc`, or through its [`Remote`]s) can be restarted; a call made
    /// meanwhile on another thread finishes first.
    ///
    /// # Errors
    ///
    /// As [`IsolateBuilder::fork`]; the isolate is then dead, and calls
    /// return that error as [`Error::Dead`] until a restart succeeds.
    pub fn restart(&self) -> Result<(), Error> {
        self.check_owner()?;
        let state = &mut *self.lock();
        state.lives += 1;
        // The old child ends before the new one is forked, which would
        // otherwise hold a copy of its channel.
        if let Ok(old) = &mut state.child {
            let _ = old.child.kill();
        }
        let started = start_child(&self.shared.config, &mut state.output);
        *self.current() = started.as_ref().ok().and_then(Connection::current);
        match started {
            Ok(connection) => {
                state.child = Ok(connection);
                Ok(())
            }
            Err(error) => {
                state.child = Err(Arc::new(error.duplicate()));
                Err(error)
            }
        }
    }

    /// The process id of the child, while it is serving calls (until it
    /// has exited). Never waits for a call another thread is making.
    pub fn id(&self) -> Option<u32> {
        self.check_owner().ok()?;
        self.current().as_ref()?.serving()
    }

    /// Whether the child is serving calls: false once it has ended, in a
    /// call or while idle (killed from outside, say). A child found to
    /// have ended is reaped, and how it ended is what later calls return.
    /// Never waits for a call another thread is making: its child is
    /// alive until it has exited.
    pub fn is_alive(&self) -> bool {
        if self.check_owner().is_err() {
            return false;
        }
        let mut state = match self.shared.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return self.id().is_some(),
        };
        let state = &mut *state;
        let Ok(connection) = &mut state.child else {
            return false;
        };
        if !connection.child.has_exited() {
            return true;
        }
        let error = connection.ended_while_idle(&self.shared.config, &mut state.output);
        state.child = Err(Arc::new(error));
        false
    }

    /// Takes what the child has written to stdout and stderr so far, when
    /// output is captured ([`IsolateBuilder::capture_output`]); empty
    /// otherwise. Output of a child that died is kept until taken.
    pub fn take_output(&self) -> Output {
        if self.check_owner().is_err() {
            return Output::default();
        }
        std::mem::take(&mut self.lock().output)
    }

    /// Fails with [`Error::ForkedCopy`] in a forked copy of the process
    /// that made the isolate. Checked before the lock is taken: in a copy,
    /// a lock another thread of the owner held at the fork stays locked.
    pub(crate) fn check_owner(&self) -> Result<(), Error> {
        owned_by(self.shared.owner)
    }

    /// Another handle to this isolate, for a [`Remote`] to keep.
    pub(crate) fn share(&self) -> Isolate {
        Isolate {
            shared: Arc::clone(&self.shared),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Isolate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolate")
            .field("pid", &self.id())
            .finish_non_exhaustive()
    }
}

/// What an argument of [`Isolate::call`] (and of a [`Remote`]'s calls)
/// must be: serde data that owns what it holds, since the child decodes
/// it from a frame that ends with the call.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to an isolate's child: an argument must be owned serde data",
    label = "not owned serde data",
    note = "take an owned type in the function (`String` for `&str`, `Vec<T>` for `&[T]`, `PathBuf` for `&Path`) and pass that; a borrowed argument can go to `isolate_harness::run`, whose child is forked holding it"
)]
pub trait Argument: Serialize + DeserializeOwned + 'static {}

impl<T: Serialize + DeserializeOwned + 'static> Argument for T {}

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

/// Starts `f(arg)` in a fresh child process and returns at once, with a
/// handle to wait for its result with, or to kill it: see [`JoinHandle`].
///
/// # Errors
///
/// [`Error::Spawn`] when the child cannot be started.
pub fn start<A, R: Serialize + DeserializeOwned + 'static>(
    f: fn(A) -> R,
    arg: A,
) -> Result<JoinHandle<R>, Error> {
    Isolate::builder().start(f, arg)
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

/// Forks a child that serves calls, and waits for its hello.
fn start_child(config: &Config, output: &mut Output) -> Result<Connection, Error> {
    let setup = config.setup.clone();
    let max_frame = config.max_frame;
    let mut connection = Connection::spawn(config, move |mut channel| {
        server::start(&mut channel, setup.as_deref());
        server::serve(channel, max_frame)
    })?;
    let deadline = config.deadline();
    let hello = connection.exchange(None, deadline, config, output);
    hello
        .and_then(|hello| connection.check_hello(hello.frame, output))
        .map_err(|(error, _)| error)?;
    Ok(connection)
}

/// How a child exits when its own machinery panicked, as a Rust program
/// whose `main` panicked does.
const PANICKED_EXIT_CODE: i32 = 101;

/// The parent's side of one child.
struct Connection {
    child: Child,
    /// Whether the child has been seen to exit (it is not reaped yet).
    exited: bool,
    /// The parent's end of the channel, as listed for other children to
    /// close; dropped (unlisted) before the channel is closed.
    _listed: Option<ParentEnd>,
    transport: Transport,
    reader: FrameReader,
    pipes: Option<Pipes>,
}

/// The parent's ends of the channels of every isolate of this process.
/// Each new child closes them all: a serving child ends when it reads end
/// of file on its channel, which it would never do while a sibling held a
/// copy of the parent's end (a child forked off the main thread has no
/// other way to learn that this process died).
static PARENT_ENDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn parent_ends() -> std::sync::MutexGuard<'static, Vec<RawFd>> {
    PARENT_ENDS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A channel end listed in [`PARENT_ENDS`], unlisted when dropped.
struct ParentEnd(RawFd);

impl ParentEnd {
    fn register(channels: &mut Vec<RawFd>, fd: RawFd) -> ParentEnd {
        channels.push(fd);
        ParentEnd(fd)
    }
}

impl Drop for ParentEnd {
    fn drop(&mut self) {
        let mut channels = parent_ends();
        if let Some(at) = channels.iter().position(|fd| *fd == self.0) {
            channels.swap_remove(at);
        }
    }
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
        // The parent-death signal follows the forking thread: a child forked
        // on another thread would die with it, while its isolate or handle,
        // shared, lives on (see "When this process dies" on `Isolate`).
        if !child::on_main_thread() {
            setup.death_signal = None;
        }
        // What a call starts stays below the child, which kills it as it
        // ends, or where ending the isolate finds and kills it.
        setup.subreaper = true;
        setup.kill_descendants_at_end = true;
        setup.output = pipes.as_ref().map(|(_, ends)| ends.raw());
        if let Some(limit) = config.memory_limit {
            setup.address_space_limit = Some(child::address_space_size().saturating_add(limit));
        }
        // Held across the fork: no other thread may close (and reuse) a
        // channel's number between this list and the fork.
        let mut channels = parent_ends();
        match child::fork(&setup, &channels).map_err(Error::Spawn)? {
            Forked::Child => {
                // The fork closed the channels listed: their numbers are
                // free here, for descriptors an isolate made in this child
                // may take, and which a fork of it must not close. Its only
                // thread is the one that locked the list.
                channels.clear();
                drop(channels);
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
                // Whatever happens, the child never returns into the code
                // that forked it, which it would run as if it were this
                // process. (Its serving replies to panics itself.)
                if std::panic::catch_unwind(AssertUnwindSafe(|| child_main(child_end))).is_err() {
                    child::exit_child(PANICKED_EXIT_CODE);
                }
                child::exit_child(0)
            }
            Forked::Parent(child) => {
                drop(child_end);
                let listed = match &transport {
                    Transport::Channel(channel) => {
                        Some(ParentEnd::register(&mut channels, channel.as_raw_fd()))
                    }
                    Transport::File(_) => None,
                };
                drop(channels);
                Ok(Connection {
                    child,
                    exited: false,
                    _listed: listed,
                    transport,
                    reader: FrameReader::new(config.max_frame),
                    pipes: pipes.map(|(pipes, _)| pipes),
                })
            }
        }
    }

    /// The child, to read without the connection: its pid, and a pidfd of
    /// its own.
    fn current(&self) -> Option<Current> {
        Some(Current {
            pid: self.child.pid().as_raw().unsigned_abs(),
            pidfd: self.child.pidfd().ok()?.try_clone_to_owned().ok()?,
        })
    }

    /// Kills and reaps a one-shot child, if it is not reaped yet, and keeps
    /// its reply file for the next one.
    fn end_one_shot(mut self) {
        let _ = self.child.kill();
        if let Transport::File(reader) = self.transport {
            reply_file::keep(reader.into_inner().file);
        }
    }

    /// Checks that `frame`, the child's first, is its `Hello`.
    fn check_hello(&mut self, frame: Frame, output: &mut Output) -> Result<(), Died> {
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
        request: Option<&mut Outgoing>,
        deadline: Option<Instant>,
        config: &Config,
        output: &mut Output,
    ) -> Result<Reply, Died> {
        self.exchange_until(request, deadline, None, config, output)
            .map(|reply| reply.unwrap_or_else(|| unreachable!("a wait without patience ends")))
    }

    /// As [`Connection::exchange`], but gives up waiting at `patience`
    /// (returning `None`), leaving the child running. Only for a one-shot
    /// child, whose frames are read once it has exited: giving up then
    /// loses nothing read.
    fn exchange_until(
        &mut self,
        mut request: Option<&mut Outgoing>,
        deadline: Option<Instant>,
        patience: Option<Instant>,
        config: &Config,
        output: &mut Output,
    ) -> Result<Option<Reply>, Died> {
        debug_assert!(patience.is_none() || matches!(self.transport, Transport::File(_)));
        let mut crash: Option<Crash> = None;
        let mut bytes = None;
        let mut closed = false;
        loop {
            // A one-shot child's file is complete once it has exited; a
            // serving child answers once it has the whole request.
            let readable = self.exited
                || (matches!(self.transport, Transport::Channel(_))
                    && request.as_deref().is_none_or(Outgoing::is_sent));
            if !closed && readable {
                match self.read_frames(&mut crash, &mut bytes) {
                    Ok(Incoming::Frame(frame)) => {
                        self.drain(output);
                        return Ok(Some(Reply { frame, bytes }));
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
            let now = Instant::now();
            if deadline.is_some_and(|deadline| deadline <= now) {
                return Err(self.time_out(config, crash, output));
            }
            if patience.is_some_and(|patience| patience <= now) {
                return Ok(None);
            }
            let timeout = match deadline.into_iter().chain(patience).min() {
                None => PollTimeout::NONE,
                Some(until) => PollTimeout::try_from(
                    until
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1)),
                )
                .unwrap_or(PollTimeout::MAX),
            };
            let waited = match (&self.transport, &self.pipes, timeout) {
                // Nothing but the exit to wait for: a plain wait.
                (Transport::File(_), None, PollTimeout::NONE) => self.child.wait_exit(None),
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

    /// The child was found to have exited between calls: reads what it
    /// wrote (a crash report), reaps it, and says how it ended.
    fn ended_while_idle(&mut self, config: &Config, output: &mut Output) -> Error {
        self.exited = true;
        match self.exchange(None, None, config, output) {
            Err((error, _)) => error,
            // A frame no call asked for.
            Ok(reply) => {
                let unasked = Error::Protocol(ProtocolError::Unexpected(reply.frame.kind.name()));
                self.abandon(unasked, output).0
            }
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
        connection.exchange(None, None, &config, &mut output)
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
        let hello = connection
            .exchange(None, None, &config, &mut output)
            .unwrap();
        let error = connection
            .check_hello(hello.frame, &mut output)
            .unwrap_err()
            .0;
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
