//! Run function calls, and soon tests, in forked child processes, so that a
//! segfault, an abort, a stack overflow, a stray `exit()` or a hang ends one
//! call with a clear diagnosis instead of the whole process.
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
//! Three ways in, over one core:
//!
//! - [`Isolate`]: a forked child that serves calls; [`Isolate::call`] sends
//!   it a function and an argument and returns the result, or an [`Error`]
//!   that says how the child died.
//! - [`run`]: one call in a fresh child.
//! - [`#[isolated]`](isolated): a function every call of which runs in a
//!   fresh child and returns `Result<T, Error>`.
//!
//! # How it works
//!
//! The child is a `fork()` of the calling process, so it starts with all of
//! its state: a call crosses the boundary as a code address (valid in both,
//! since no `exec` happens) and a serde-encoded argument. Parent and child
//! talk over a `socketpair` in length-prefixed frames. A fatal-signal
//! handler in the child reports the fault address and a backtrace of the
//! crash site before the child dies; the parent reads how the child ended
//! through a pidfd. Each child leads its own process group, which a timeout
//! or the end of the isolate kills whole.
//!
//! # Platforms
//!
//! Linux only (5.4 or later: pidfds, `waitid(P_PIDFD)`,
//! `PR_SET_PDEATHSIG`). On other systems the crate does not compile.
//!
//! # Limitations
//!
//! - Forking a multi-threaded process copies only the calling thread: see
//!   [`Isolate`]. A one-time warning says so when it happens.
//! - Functions are sent as code addresses, so [`Isolate::call`] takes plain
//!   `fn` items and closures that capture nothing.
//! - With `panic = "abort"`, a panic in a call kills the child with SIGABRT
//!   and is reported as a termination.
//! - Inside a libtest `#[test]` run without `--nocapture`, `print!` and
//!   `eprint!` in a child write to libtest's capture buffer of the test
//!   thread, which the child holds only a copy of: that output is lost.
//!   Writing to `std::io::stdout()` directly reaches the child's stdout.
//! - A program that ignores `SIGCHLD` has its children reaped by the kernel;
//!   their exit status is then lost.

#![cfg(target_os = "linux")]

extern crate self as isolate_harness;

mod capture;
mod child;
mod crash;
mod fork_server;
mod harness;
mod ipc;
mod isolate;
mod server;

pub use capture::Output;
pub use child::{Signal, Termination};
pub use crash::{Backtrace, Crash, Frame};
#[doc(hidden)]
pub use harness::__private;
pub use harness::{Harness, TestOptions, TestResult};
pub use ipc::ProtocolError;
pub use isolate::{Error, Isolate, IsolateBuilder, OutOfMemory, TimedOut, run};
pub use isolate_harness_macros::{isolated, test};
pub use server::PanicReport;
