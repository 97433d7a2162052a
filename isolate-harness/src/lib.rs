//! Run each test, or any function call, in a forked child process, so that
//! a segfault, an abort, a stack overflow, a stray `exit()` or a hang fails
//! that one test, with a clear diagnosis, and the run goes on.
//!
//! # As a test harness
//!
//! ```toml
//! [[test]]
//! name = "crashy"
//! harness = false
//!
//! [dev-dependencies]
//! isolate-harness = "0.1"
//! ```
//!
//! ```ignore
//! // tests/crashy.rs
//! #[isolate_harness::test]
//! fn parses_the_header() {
//!     assert_eq!(unsafe { ffi::parse_header(b"GIF89a".as_ptr()) }, 0);
//! }
//!
//! // A death test: passes only if the child dies by SIGSEGV.
//! #[isolate_harness::test(expect_signal = "SIGSEGV")]
//! fn null_input_crashes() {
//!     unsafe { ffi::parse_header(std::ptr::null()) };
//! }
//!
//! #[isolate_harness::test(timeout = "2s", memory_limit = "256MiB")]
//! fn terminates_within_limits() {
//!     unsafe { ffi::decode_all(INPUT.as_ptr(), INPUT.len()) };
//! }
//!
//! isolate_harness::main!();
//! ```
//!
//! `cargo test` and `cargo nextest run` run it like any test target, with
//! libtest's options (filters, `--exact`, `--skip`, `--list`, `--ignored`,
//! `--include-ignored`, `--test-threads`, `--format pretty|terse|json`,
//! `--nocapture`, `--color`, `-q`) and exit code 101 on failure. A test that
//! crashes fails alone:
//!
//! ```text
//! test null_deref ... FAILED
//! ---- null_deref ----
//! was killed by signal 11 (SIGSEGV: invalid memory reference) at address 0x0
//! crash site:
//!    0: mylib::parse
//!              at src/lib.rs:10
//!    1: crashy::null_deref
//!              at tests/crashy.rs:4
//! ```
//!
//! Options of [`#[test]`](test): `ignore`, `ignore = "reason"`,
//! `should_panic`, `should_panic = "text"`, `timeout = "2s"`,
//! `memory_limit = "256MiB"`, `expect_signal = "SIGSEGV"`, `expect_exit = 3`.
//! [`Harness`] adds tests at run time and a shared setup that runs once,
//! before any test, and whose result every test sees copy-on-write.
//!
//! ## How the harness runs tests
//!
//! At the start of `main`, after the shared setup and while the process
//! still has one thread, the harness forks a *fork server* per core (one
//! under nextest, and none when no test would run in one).
//! The harness asks them for each test; a server forks a child per test (a
//! copy of itself, so of every test and of the setup's result), in a
//! process group of its own, and enforces its timeout. At most
//! `--test-threads` tests run at once, and twice as many are asked for, so
//! that a server has the next test at hand when one ends. libtest-mimic
//! runs on one thread and prints the verdicts in list order, while the
//! tests after the one it waits for already run. A test's stdout and
//! stderr go to memory files, kept as head and tail.
//! Under nextest, which runs each test in a process of its own already,
//! tests that need no process for their options run in it directly.
//!
//! ## Who speaks for a test, and what it leaves behind
//!
//! A verdict comes only from the test's own child and from how it ended.
//! No test child holds a descriptor of the harness or of the fork server
//! (the report stream, the server's channels, other tests' files are
//! closed in it, and the runner's variables are not in its environment);
//! its result travels in shared memory stamped with its pid, so closing
//! every descriptor does not cut it, and neither a copy the test forked
//! nor a process an earlier test left can answer in its name; a child that
//! answered and then died by a signal crashed.
//!
//! Every process a test starts is found when the test ends, killed,
//! reaped and reported as that test's leftover, however it detached
//! (`setsid`, a double fork, a process group of its own, a subreaper of
//! its own): test children and fork servers are subreapers, so a test's
//! orphans stay below its child while it runs and pass to the server the
//! moment it ends. (A process that two tests ending at the same moment
//! both left, outside both their process groups, is charged to the first
//! reaped.)
//!
//! ## For runners: choosing tests, and the structured report stream
//!
//! A runner that has chosen the tests to run itself can name them, one
//! per line, in a file whose path it puts in `ISOLATE_ONLY`; the harness
//! then runs those alone (before its own filters). `ISOLATE_DEFAULT_TIMEOUT_MS`
//! gives every test without a `timeout` of its own one, in milliseconds;
//! `ISOLATE_DEFAULT_MEMORY_LIMIT` a `memory_limit`, in bytes;
//! `ISOLATE_GRACE_PERIOD_MS` the time between a timed-out test's SIGTERM
//! and its SIGKILL (one second without it); and `ISOLATE_MAX_FAIL` how many
//! tests may fail before the harness starts no more (those it had queued in
//! a fork server still run; the others are not reported).
//!
//! ### The report stream
//!
//! When the environment variable `ISOLATE_REPORT_FD` names an open file
//! descriptor, the harness also writes one JSON object per line to it: one
//! when a test starts (is handed to a fork server, which may first finish
//! the test before it) and one when it ends, in the order they happen.
//! Every line has `"version": 1`. The lines are written in batches, each
//! whole, before the harness waits for anything: a reader has each line
//! as soon as the harness could have nothing more to say for a while.
//!
//! ```json
//! {"event":"started","version":1,"name":"crashes::null_deref"}
//! {"event":"finished","version":1,"name":"crashes::null_deref","passed":false,
//!  "outcome":{"kind":"signaled","signal":11,"signal_name":"SIGSEGV",
//!  "description":"killed by signal 11 (SIGSEGV: invalid memory reference) at address 0x0",
//!  "core_dumped":false,"fault_address":0,"stack_overflow":false,"backtrace":["fixture::crash"]},
//!  "message":"…","duration_ms":3.1,"stdout":"…","stderr":"…","leftovers":[]}
//! ```
//!
//! `outcome.kind` is one of `returned` (with `error` when the test returned
//! `Err`), `panicked` (`message`, `location`, `backtrace`), `signaled` (as
//! above), `exited` (`code`), `timed_out` (`limit_ms`, `grace_ms`,
//! `signal_name`), `out_of_memory` (`description`) and `broken` (`reason`:
//! the machinery failed). `passed` is the verdict after the test's
//! expectations (`should_panic`, `expect_signal`, `expect_exit`), and
//! `message` the failure message shown to people. Free text (messages,
//! panics, backtraces, output) is kept as its first and last 8 KiB, so a
//! line stays a few kilobytes long whatever the test did. A reader skips
//! events and kinds it does not know; a test without a `finished` line did
//! not pass.
//!
//! A runner learns that a binary speaks the stream, and which version,
//! before running it: when it lists the tests (`--list`) with
//! `ISOLATE_HANDSHAKE` set to a nonce, the harness writes
//! `isolate-harness report stream v1: NONCE` to stderr. A binary that does
//! not run this harness ignores the variable.
//!
//! [`report_stream`] holds the lines' types, with both the writer's
//! serialization and a bounded reader, for runners.
//!
//! # As a library
//!
//! ```no_run
//! use isolate_harness::{Error, Isolate};
//!
//! fn dragons_here(_: ()) {
//!     // SAFETY: none: this dereferences null on purpose.
//!     unsafe { std::ptr::null_mut::<u32>().write_volatile(0) };
//! }
//!
//! let buggy = Isolate::fork()?;
//! match buggy.call(dragons_here, ()) {
//!     Err(Error::Terminated(termination)) => println!("There be dragons! The child was {termination}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok::<(), Error>(())
//! ```
//!
//! - [`Isolate`]: a forked child that serves calls; [`Isolate::call`] sends
//!   it a function and an argument and returns the result, or an [`Error`]
//!   that says how the child died.
//! - [`run`]: one call in a fresh child.
//! - [`#[isolated]`](isolated): a function every call of which runs in a
//!   fresh child and returns `Result<T, Error>`.
//! - [`start`]: one call in a fresh child, without waiting for it.
//!
//! The child is a `fork()` of the calling process, so it starts with all of
//! its state: a call crosses the boundary as a code address (valid in both,
//! since no `exec` happens) and a serde-encoded argument (a `Vec<u8>` goes
//! as its bytes). Parent and child talk over a `socketpair` in
//! length-prefixed frames; the one-shot child of [`run`] writes its frames
//! to a `memfd` instead, read once it has exited. A fatal-signal
//! handler in the child reports the fault address and a backtrace of the
//! crash site before the child dies; the parent reads how the child ended
//! with `waitid`, and polls a pidfd where it must wait for more than the
//! exit. Each child leads its own process group, which a timeout
//! or the end of the isolate kills whole.
//!
//! Only the child the parent forked answers a call, and every answer
//! carries the id of its call: a copy a call forks ends without a word,
//! and a frame a call writes onto its own channel is a protocol error
//! ([`ProtocolError::StrayReply`]), never the result of this call or of
//! the next. A child is a subreaper, so what a call starts stays below it
//! however it detaches, and is killed when the child ends: by the isolate
//! when it is dropped, restarted or timed out, and by the child itself
//! when it returns from [`run`], exits, or dies of a signal its crash
//! handler catches.
//!
//! ## Remote objects
//!
//! The Python library's proxies: an object that lives in the child, whose
//! methods run there, and whose crash is an error here.
//!
//! ```
//! use isolate_harness::{Error, Isolate};
//!
//! struct Tokenizer {
//!     separator: char,
//!     seen: usize,
//! }
//!
//! #[isolate_harness::remote]
//! impl Tokenizer {
//!     fn new(separator: char) -> Self {
//!         Tokenizer { separator, seen: 0 }
//!     }
//!
//!     fn split(&mut self, text: &str) -> Vec<String> {
//!         self.seen += 1;
//!         text.split(self.separator).map(str::to_owned).collect()
//!     }
//!
//!     fn seen(&self) -> usize {
//!         self.seen
//!     }
//! }
//!
//! let isolate = Isolate::fork()?;
//! let tokenizer = TokenizerProxy::new(&isolate, ',')?;
//! assert_eq!(tokenizer.split("a,b")?, ["a", "b"]);
//! assert_eq!(tokenizer.seen()?, 1);
//! # Ok::<(), Error>(())
//! ```
//!
//! - [`Isolate::spawn`] builds an object in the child and returns a
//!   [`Remote<T>`]; `T` needs no serde and need not be `Send`.
//! - [`Remote::call`] runs a function on the object there; arguments and
//!   results cross as serde values. [`Remote::call_remote`] leaves the
//!   result in the child as another `Remote`; [`Remote::fetch`] copies the
//!   object back, [`Remote::into_inner`] moves it out. Dropping a `Remote`
//!   drops the object in the child.
//! - [`#[remote]`](remote) on an `impl` block makes a typed proxy of these.
//! - After a call ends the child, every call of the isolate, on any of its
//!   objects, returns that first error ([`Error::Dead`]) until
//!   [`Isolate::restart`]; an object of the old child is then
//!   [`Error::Stale`], never another object.
//!
//! ## Cookbook
//!
//! **Which to use.**
//!
//! | you want | use |
//! |---|---|
//! | one call whose crash must not take you down, state and all from a fresh copy of this process | [`run`], or [`#[isolated]`](isolated) on the function |
//! | the same without waiting | [`start`]: a [`JoinHandle`] with `join`, `join_timeout`, `kill` |
//! | many calls to code that keeps state between them (a loaded library, a cache, a connection) | an [`Isolate`] and [`Isolate::call`]; the state in statics of the child, or better, in a [`Remote`] |
//! | an object with methods, living in the child | [`Isolate::spawn`] and [`Remote`], or a proxy from [`#[remote]`](remote) |
//! | calls from several threads at once, each in a child | an [`IsolatePool`] |
//!
//! **State in the child.** A child keeps what its calls leave in it: an
//! [`Isolate`]'s statics live on from call to call, and a setup hook
//! ([`IsolateBuilder::setup`]) runs once in each fresh child. A [`Remote`]
//! is the typed way: the state is the object.
//!
//! **What isolation means here.** A child is a copy of your process,
//! with its rights: a crash, an `exit`, a hang or a runaway allocation in
//! it is an error, not the end of your process. It is not a sandbox: code
//! in the child that sets out to do harm can (it can write to the
//! descriptors it inherited, the channel among them, signal its parent, or
//! start processes that leave its process group and outlive it).
//!
//! **Isolates and forks.** An isolate serves the process that made it, and
//! only that one. The tests of a harness are forked from its shared
//! setup, so an isolate the setup made refuses them
//! ([`Error::ForkedCopy`]), as it refuses the child of a [`run`] or of
//! another isolate that finds it in a static: make the isolate where it is
//! used, in the test.
//!
//! **A closure that captures.** [`Isolate::call`] sends a code address, so
//! it takes only functions and closures that capture nothing. [`run`] and
//! [`start`] fork a child that already holds their argument, which needs
//! no serde: a boxed closure can be the argument.
//!
//! ```
//! let limit = 10_u64;
//! let job: Box<dyn FnOnce() -> u64> = Box::new(move || (1..=limit).sum());
//! let sum = isolate_harness::run(|job: Box<dyn FnOnce() -> u64>| job(), job)?;
//! assert_eq!(sum, 55);
//! # Ok::<(), isolate_harness::Error>(())
//! ```
//!
//! **Borrowed arguments.** What [`Isolate::call`] and a [`Remote`] send
//! must be owned serde data: the child decodes it from a frame that ends
//! with the call, so a function of a `&str` takes a `String` there. (A
//! `&str` argument is refused at compile time, with serde's "implementation
//! of `Deserialize` is not general enough".) [`run`] takes borrowed
//! arguments as they are; the methods of a [`#[remote]`](remote) proxy
//! take them borrowed and send them owned.
//!
//! ```compile_fail
//! fn length(text: &str) -> usize {
//!     text.len()
//! }
//! let isolate = isolate_harness::Isolate::fork().unwrap();
//! isolate.call(length, "refused: not owned").unwrap();
//! ```
//!
//! ```
//! # fn length(text: &str) -> usize {
//! #     text.len()
//! # }
//! assert_eq!(isolate_harness::run(length, "fine: forked holding it")?, 23);
//! # Ok::<(), isolate_harness::Error>(())
//! ```
//!
//! # Platforms
//!
//! Linux only (5.3 or later: pidfds, `PR_SET_PDEATHSIG`, `memfd_create`).
//! On other systems the crate does not compile.
//!
//! # Limitations
//!
//! - Forking a multi-threaded process copies only the calling thread: see
//!   [`Isolate`]. A one-time warning says so when it happens. The harness
//!   forks its server before any thread starts, so its tests are not
//!   affected; a shared setup that starts threads should not leave them
//!   holding locks.
//! - Functions are sent as code addresses, so [`Isolate::call`] takes plain
//!   `fn` items and closures that capture nothing.
//! - With `panic = "abort"`, a panic kills the child with SIGABRT and is
//!   reported as that signal.
//! - Inside a libtest `#[test]` run without `--nocapture`, `print!` and
//!   `eprint!` in an isolate's child write to libtest's capture buffer of
//!   the test thread, which the child holds only a copy of: that output is
//!   lost. Writing to `std::io::stdout()` directly reaches the child's
//!   stdout. (The harness has no such problem.)
//! - What a call started escapes when its child is killed by a signal no
//!   handler sees (SIGKILL, or a SIGTERM it does not handle outside a
//!   timeout): by then the child cannot kill it, and it has been handed to
//!   the nearest subreaper above the calling program, or to init.
//! - Under nextest, a test that runs in-process and leaves a process behind
//!   is nextest's to report, as a leak.
//! - A program that ignores `SIGCHLD` has its children reaped by the kernel;
//!   their exit status is then lost.
//! - The harness prints verdicts in list order: a slow test holds back the
//!   lines of the tests after it, which run meanwhile and show at once when
//!   it ends. (`cargo isolate` reads each test's end as it happens.)

#![cfg(target_os = "linux")]

extern crate self as isolate_harness;

mod capture;
mod child;
mod crash;
mod fork_server;
mod harness;
mod ipc;
mod isolate;
mod remote;
mod reply_region;
pub mod report_stream;
mod server;

pub use capture::Output;
pub use child::{Signal, Termination};
pub use crash::{Backtrace, Crash, Frame};
#[doc(hidden)]
pub use harness::__private;
pub use harness::{Harness, TestOptions, TestResult};
pub use ipc::ProtocolError;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub use ipc::fuzz as __fuzz;
pub use isolate::{
    Argument, Error, Isolate, IsolateBuilder, JoinHandle, OutOfMemory, TimedOut, run, start,
};
pub use isolate_harness_macros::{isolated, remote, test};
pub use remote::{IsolatePool, Remote};
pub use server::PanicReport;
