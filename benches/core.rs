//! What the isolate machinery costs over the bare system calls it is made
//! of, measured side by side in one run, three pairs:
//!
//! - `round_trip`: one [`Isolate::call`] of a `u64 -> u64` function on an
//!   isolate forked once, against a raw 8-byte ping-pong with a child over a
//!   `socketpair`. Goal: at most 2x the raw time.
//! - `fresh_child`: [`isolate_harness::run`] of the same function, against a
//!   raw `fork()`, `_exit(0)` in the child and `waitpid` in the parent. Goal:
//!   at most 1.5x the raw time.
//! - `throughput`: a 100 MiB `Vec<u8>` through [`Isolate::call`] (the child
//!   returns its length), against 100 MiB written one way over a raw
//!   `socketpair` and an 8-byte acknowledgement back. Goal: at least 40% of
//!   the raw throughput, that is at most 2.5x the raw time. The raw child
//!   reads into one buffer it keeps; the isolate's child gets a fresh vector
//!   each call, which the function then frees, as a function taking a
//!   `Vec<u8>` by value must.
//!
//! - `remote_call`: one method call of a `#[remote]` proxy with a small
//!   argument, against `round_trip::raw`. Goal: at most 1.5x the raw time.
//! - `fetch`: [`Remote::fetch`] of a 100 MiB `Vec<u8>` living in the child,
//!   against `throughput::raw`. Goal: at least 50% of the raw throughput,
//!   that is at most 2x the raw time. Beside it, `fetch::raw_fresh`: the
//!   same bytes from a raw child into a fresh vector each time, as any call
//!   that returns a new `Vec<u8>` must receive them.
//! - `pool`: 10 000 calls of 1 ms of work each, from two threads, made by
//!   an [`IsolatePool`] of 2 against one [`Isolate`]. Goal: at least 1.8x
//!   the throughput on 2 cores, that is at most 0.56x the time.
//!
//! Every child forked here, by the library or by the raw benches, is reaped
//! before its bench returns. Results are recorded in `BENCHMARKS.md`.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench core
//! ```

use std::{
    hint::black_box,
    io::{Read, Write},
    net::Shutdown,
    os::unix::net::UnixStream,
};

use divan::{Bencher, counter::BytesCount};
use isolate_harness::{Isolate, IsolatePool, Remote};

fn main() {
    divan::main();
}

/// The function every small call runs.
fn add_one(x: u64) -> u64 {
    x + 1
}

/// A raw child on the other end of a `socketpair`: the parent's end of the
/// channel, and the pid to reap.
struct RawPeer {
    channel: UnixStream,
    pid: libc::pid_t,
}

impl RawPeer {
    /// Forks a child that runs `serve` on its end of a fresh `socketpair`
    /// and then `_exit`s with the code `serve` returns.
    fn spawn(serve: fn(UnixStream) -> i32) -> RawPeer {
        let (channel, child_channel) = UnixStream::pair().expect("socketpair");
        // SAFETY: divan runs these benches on the main thread and starts no
        // other thread, so the child is a complete copy of a single-threaded
        // process; it runs `serve`, which only reads, writes and allocates,
        // and leaves through `_exit` without returning into the bench.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                drop(channel);
                let code = serve(child_channel);
                // SAFETY: `_exit` ends the child at once, without running the
                // exit handlers or destructors it inherited from the parent.
                unsafe { libc::_exit(code) }
            }
            pid => {
                drop(child_channel);
                RawPeer { channel, pid }
            }
        }
    }
}

impl Drop for RawPeer {
    /// Closes the channel, which the child sees as end of file and exits
    /// on, then reaps it.
    fn drop(&mut self) {
        let _ = self.channel.shutdown(Shutdown::Both);
        reap(self.pid);
    }
}

/// Waits for the child `pid` and checks that it exited with code 0.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: `pid` is a child of this process not reaped yet, and
        // `status` is a valid out-pointer.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "waitpid: {error}"
        );
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "raw child ended with status {status:#x}"
    );
}

mod round_trip {
    //! One small call on a child forked once, outside the timed loop.

    use super::*;

    /// `Isolate::call(add_one, u64)`.
    #[divan::bench(sample_count = 1000)]
    fn isolate(bencher: Bencher) {
        let isolate = Isolate::fork().expect("fork an isolate");
        bencher.bench_local(|| {
            let result = isolate.call(add_one, black_box(41_u64)).expect("call");
            assert_eq!(result, 42);
        });
    }

    /// 8 bytes to a raw child over a `socketpair`, 8 bytes back.
    #[divan::bench(sample_count = 1000)]
    fn raw(bencher: Bencher) {
        let mut peer = RawPeer::spawn(echo);
        bencher.bench_local(|| {
            peer.channel
                .write_all(&41_u64.to_le_bytes())
                .expect("write");
            let mut reply = [0; 8];
            peer.channel.read_exact(&mut reply).expect("read");
            assert_eq!(u64::from_le_bytes(reply), 42);
        });
    }

    /// In the raw child: reads 8 bytes and answers with them plus one, until
    /// end of file.
    fn echo(mut channel: UnixStream) -> i32 {
        let mut request = [0; 8];
        loop {
            match channel.read_exact(&mut request) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return 0,
                Err(_) => return 1,
            }
            let reply = (u64::from_le_bytes(request) + 1).to_le_bytes();
            if channel.write_all(&reply).is_err() {
                return 1;
            }
        }
    }
}

mod fresh_child {
    //! One child per call, forked, run and reaped inside the timed loop.

    use super::*;

    /// `isolate_harness::run(add_one, u64)`.
    #[divan::bench(sample_count = 500)]
    fn isolate(bencher: Bencher) {
        bencher.bench_local(|| {
            let result = isolate_harness::run(add_one, black_box(41_u64)).expect("run");
            assert_eq!(result, 42);
        });
    }

    /// `fork()`, `_exit(0)` in the child, `waitpid` in the parent.
    #[divan::bench(sample_count = 500)]
    fn raw(bencher: Bencher) {
        bencher.bench_local(|| {
            // SAFETY: the process is single-threaded (see `RawPeer::spawn`),
            // and the child does nothing but `_exit`.
            match unsafe { libc::fork() } {
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                // SAFETY: `_exit` ends the child at once, without running the
                // exit handlers or destructors it inherited from the parent.
                0 => unsafe { libc::_exit(0) },
                pid => reap(pid),
            }
        });
    }
}

mod throughput {
    //! 100 MiB one way, an 8-byte answer back.

    use super::*;

    /// The bytes sent per iteration.
    const LEN: usize = 100 * 1024 * 1024;

    /// The function the isolate runs on the 100 MiB argument.
    fn len(bytes: Vec<u8>) -> u64 {
        bytes.len() as u64
    }

    /// `Isolate::call(len, Vec<u8>)` with 100 MiB. Each iteration gets a
    /// fresh vector, made outside the timed part, because the call takes its
    /// argument by value.
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn isolate(bencher: Bencher) {
        let isolate = Isolate::fork().expect("fork an isolate");
        bencher
            .counter(BytesCount::new(LEN))
            .with_inputs(|| vec![1_u8; LEN])
            .bench_local_values(|bytes| {
                let received = isolate.call(len, bytes).expect("call");
                assert_eq!(received, LEN as u64);
            });
    }

    /// 100 MiB written to a raw child over a `socketpair`, which reads them
    /// into a buffer it reuses and answers with an 8-byte count.
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn raw(bencher: Bencher) {
        let bytes = vec![1_u8; LEN];
        let mut peer = RawPeer::spawn(sink);
        bencher.counter(BytesCount::new(LEN)).bench_local(|| {
            peer.channel.write_all(&bytes).expect("write");
            let mut ack = [0; 8];
            peer.channel.read_exact(&mut ack).expect("read");
            assert_eq!(u64::from_le_bytes(ack), LEN as u64);
        });
    }

    /// In the raw child: reads `LEN` bytes and acknowledges them with their
    /// count, until end of file.
    fn sink(mut channel: UnixStream) -> i32 {
        let mut buffer = vec![0_u8; LEN];
        loop {
            let mut filled = 0;
            while filled < LEN {
                match channel.read(&mut buffer[filled..]) {
                    Ok(0) if filled == 0 => return 0,
                    Ok(0) => return 1,
                    Ok(n) => filled += n,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return 1,
                }
            }
            if channel.write_all(&(LEN as u64).to_le_bytes()).is_err() {
                return 1;
            }
        }
    }
}

mod remote_call {
    //! One method call of a proxy, on an object that lives in a child
    //! forked once, outside the timed loop.

    use super::*;

    /// A counter, living in the child.
    struct Counter {
        total: u64,
    }

    #[isolate_harness::remote]
    impl Counter {
        fn new() -> Self {
            Counter { total: 0 }
        }

        fn add(&mut self, amount: u64) -> u64 {
            self.total += amount;
            self.total
        }
    }

    /// `CounterProxy::add(u64)`: against `round_trip::raw`.
    #[divan::bench(sample_count = 1000)]
    fn proxy(bencher: Bencher) {
        let isolate = Isolate::fork().expect("fork an isolate");
        let counter = CounterProxy::new(&isolate).expect("spawn the counter");
        bencher.bench_local(|| {
            let total = counter.add(black_box(1)).expect("call");
            assert!(total > 0);
        });
    }
}

mod fetch {
    //! A copy of a 100 MiB object that lives in the child, which keeps it.

    use super::*;

    const LEN: usize = 100 * 1024 * 1024;

    /// `Remote::<Vec<u8>>::fetch()` of 100 MiB: against `throughput::raw`.
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn remote(bencher: Bencher) {
        let isolate = Isolate::fork().expect("fork an isolate");
        let bytes: Remote<Vec<u8>> = isolate
            .spawn(|len: usize| vec![1_u8; len], LEN)
            .expect("spawn the bytes");
        bencher.counter(BytesCount::new(LEN)).bench_local(|| {
            let copy = bytes.fetch().expect("fetch");
            assert_eq!(copy.len(), LEN);
        });
    }

    /// 100 MiB from a raw child, asked with 8 bytes, read into a fresh
    /// vector each time, as a call that returns a new `Vec<u8>` must: the
    /// raw cost of what `fetch` does, where `throughput::raw` reuses both
    /// buffers.
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn raw_fresh(bencher: Bencher) {
        let mut peer = RawPeer::spawn(source);
        bencher.counter(BytesCount::new(LEN)).bench_local(|| {
            peer.channel.write_all(&[0; 8]).expect("write");
            let mut copy = Vec::with_capacity(LEN);
            (&mut peer.channel)
                .take(LEN as u64)
                .read_to_end(&mut copy)
                .expect("read");
            assert_eq!(copy.len(), LEN);
        });
    }

    /// In the raw child: answers each 8-byte request with `LEN` bytes from
    /// one buffer it keeps, until end of file.
    fn source(mut channel: UnixStream) -> i32 {
        let bytes = vec![1_u8; LEN];
        let mut request = [0; 8];
        loop {
            match channel.read_exact(&mut request) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return 0,
                Err(_) => return 1,
            }
            if channel.write_all(&bytes).is_err() {
                return 1;
            }
        }
    }
}

mod pool {
    //! Throughput of calls that each take 1 ms of CPU, made from two
    //! threads: a pool of two children against one.

    use super::*;

    /// Calls per iteration, split between the two calling threads.
    const CALLS: usize = 10_000;

    /// 1 ms of work in the child.
    fn work(millis: u64) -> u64 {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(millis);
        let mut spins = 0_u64;
        while std::time::Instant::now() < until {
            spins = black_box(spins + 1);
        }
        spins
    }

    /// Runs `CALLS` calls of `call`, half from each of two threads.
    fn from_two_threads(call: &(dyn Fn() -> u64 + Sync)) {
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..CALLS / 2 {
                        assert!(call() > 0);
                    }
                });
            }
        });
    }

    /// One isolate, which serves the two threads in turn.
    #[divan::bench(sample_count = 1, sample_size = 1)]
    fn one_isolate(bencher: Bencher) {
        let isolate = Isolate::fork().expect("fork an isolate");
        bencher.bench_local(|| from_two_threads(&|| isolate.call(work, 1).expect("call")));
    }

    /// An `IsolatePool` of two children.
    #[divan::bench(sample_count = 1, sample_size = 1)]
    fn pool_of_two(bencher: Bencher) {
        let pool = IsolatePool::new(2).expect("fork a pool");
        bencher.bench_local(|| from_two_threads(&|| pool.call(work, 1).expect("call")));
    }
}
