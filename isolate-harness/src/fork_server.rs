//! The fork server (zygote) of the harness: a child forked at the start of
//! `main`, while the process has one thread, that forks one grandchild per
//! test on request.
//!
//! The harness may not fork once libtest-mimic runs (see [`crate::child`]),
//! and a threaded process must not. So the harness never forks a test: it
//! holds *lanes* to the server (each a `socketpair`), and on each idle
//! lane sends `Run` naming a test by where its function is (see
//! [`TestTable`]). The server, single-threaded, forks a test child (a copy
//! of the process after shared setup), which runs the test, writes its
//! result to the lane's reply region (see [`crate::reply_region`]) and
//! exits. The server notices the exit
//! by its `SIGCHLD`, read from a signalfd (a pidfd per test cost the server
//! more: opening one is far dearer than reading a signal), kills whatever
//! the test left in its process group, reaps it, and writes the result and
//! `Exited` (the wait status and captured output) on the lane in one write.
//! The harness reads one ordered stream per test, and one thread waits on
//! every lane at once.
//!
//! The server also owns the test's timeout, counted from the fork: it alone
//! knows when the test started and whether its child is reaped yet (a
//! reaped child's group id may name someone else's processes).
//!
//! A server runs at most its share of `--test-threads` tests at once, but
//! has twice as many lanes: when a test ends, the next request is already
//! there, and the server forks it before it even reaps the test that
//! ended. Without that, a core sat idle each time while the result went to
//! the harness and the harness's next request came back (on a 2-core
//! machine, 2000 trivial tests kept 1.3 of the 2 cores busy).
//!
//! Captured output goes to two `memfd`s per test rather than pipes: a file
//! never fills, so a test writing 100 MB cannot block, and nobody has to
//! drain it while the test runs. The server keeps the head and the tail.
//!
//! # What a test leaves behind
//!
//! Every process a test starts is found when the test ends, killed, reaped
//! and reported as that test's leftover, however it detached. Test
//! children and the server are both subreapers: while a test runs, a
//! process of its that loses its parent (a daemon that forked twice, a
//! `setsid` escapee) is reparented to the test's child, not to the server,
//! so everything the test started stays below its child; when the child
//! exits, the kernel hands all of it to the server before the exit is
//! reported. So the server's children, when it sees a test's child exit
//! and before it starts the next test, are the tests it runs and what
//! that test left. It stops those and everything below them (see
//! [`collect_leftovers`]), kills them and reaps them: a stopped process
//! starts no other and hands none over, so no other test's leftovers join
//! them, even while other tests run and end.
//!
//! Why not a cgroup or a PID namespace per test: moving a process into a
//! cgroup cost about 100 µs on the machine this was measured on (the write
//! lock the kernel takes syncs with RCU), and a PID namespace needs an
//! init process besides the test, a second fork: either would double
//! what a trivial test costs. The subreapers cost one `prctl` per test.
//! What they leave open: when two tests of one server end at the same
//! moment, a process one of them left outside both their process groups
//! is charged to the one reaped first.
//!
//! If the harness dies, the server gets SIGTERM (`PR_SET_PDEATHSIG`), kills
//! every running test's group and exits; test children die with the server.
//!
//! # Who speaks for a test
//!
//! The verdict on a test comes from its child alone, and from how that
//! child ended. A test child holds none of the runner's descriptors: the
//! harness's report stream is closed in the servers, and the server's own
//! (its channels, its signalfd, the output files of other tests) are
//! closed in each test child before the test runs. Its result goes to a
//! region stamped with its pid, which a copy the test forked, or a process
//! an earlier test left, cannot write in its name. And a result counts
//! only when the child then exited with code 0: a test child that replied
//! and then died by a signal crashed.

use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::signalfd::SignalFd;
use serde::{Deserialize, Serialize};

use crate::child::{self, Child, ChildSetup, ExitStatus, Forked, Termination};
use crate::crash::Crash;
use crate::ipc::{
    self, DEFAULT_MAX_FRAME, FrameBuilder, FrameReader, Kind, ProtocolError, Received,
};
use crate::reply_region::{self, Region};
use crate::server::{self, PanicMessage, PanicReport};

/// Lanes (channels) per test a server may run at once: one whose test
/// runs, one whose request waits.
const LANES_PER_TEST: usize = 2;

/// The read buffer of a lane: room for a test's result and its `Exited`
/// unless the test printed much.
const LANE_BUFFER: usize = 4096;

/// The read buffer of a server's channel: room for a request.
const SLOT_BUFFER: usize = 256;

/// Bytes of each captured stream kept from its start, and from its end.
pub(crate) const KEPT_OUTPUT: usize = 8 * 1024;

/// The capacity past which the server lets go of the buffer it builds
/// messages in, rather than keep a large one that every later fork would
/// copy the page tables of.
const MESSAGE_BUFFER_KEPT: usize = 64 * 1024;

/// A test function.
pub(crate) type TestFunction = dyn Fn() -> Result<(), String> + Send + Sync;

/// Which test to run, by where its function is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum TestId {
    /// The test at this index of the binary's registry of
    /// `#[isolate_harness::test]` functions.
    Registered(u32),
    /// The test at this index of the tests added to the harness by hand.
    Added(u32),
}

/// The test functions a fork server can find.
///
/// The servers are forked before the harness builds its list of tests (names,
/// options, libtest-mimic trials): a fork costs about 30 µs more per MiB the
/// forking process has touched, and that list is several hundred KiB for a
/// few thousand tests. So a server knows only what it must: the registry,
/// which is static, and the functions of the tests added by hand, which
/// exist before it is forked. A request names each test by a [`TestId`].
pub(crate) struct TestTable {
    pub(crate) added: Vec<Box<TestFunction>>,
}

impl TestTable {
    /// The function of test `id`.
    pub(crate) fn function(&self, id: TestId) -> Option<Function<'_>> {
        match id {
            TestId::Registered(index) => crate::harness::__private::TESTS
                .get(index as usize)
                .map(|describe| Function::Registered(describe().function)),
            TestId::Added(index) => self
                .added
                .get(index as usize)
                .map(|function| Function::Added(&**function)),
        }
    }
}

/// A test's function, as a [`TestTable`] finds it.
#[derive(Clone, Copy)]
pub(crate) enum Function<'a> {
    /// A registered test's.
    Registered(fn() -> Result<(), String>),
    /// A test's added by hand.
    Added(&'a TestFunction),
}

impl Function<'_> {
    /// Runs the test.
    pub(crate) fn call(self) -> Result<(), String> {
        match self {
            Function::Registered(function) => function(),
            Function::Added(function) => function(),
        }
    }
}

/// The payload of a `Run` frame.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct RunRequest {
    pub(crate) test: TestId,
    /// At most this many bytes of address space beyond the size at fork.
    pub(crate) memory_limit: Option<u64>,
    /// When to stop the test: SIGTERM to its group at `timeout`, SIGKILL
    /// `grace_period` later.
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace_period: Duration,
}

/// What a stream of a test's output kept: all of it, or its head and tail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CapturedStream {
    /// The first bytes (all of them when nothing was omitted).
    pub(crate) head: Vec<u8>,
    /// How many bytes between head and tail were left out.
    pub(crate) omitted: u64,
    /// The last bytes, when some were left out.
    pub(crate) tail: Vec<u8>,
}

impl CapturedStream {
    /// Whether the test wrote nothing to this stream.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }

    /// The text, with a line in place of what was left out.
    pub(crate) fn to_text(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        if self.omitted == 0 {
            return head.into_owned();
        }
        crate::report_stream::join_head_and_tail(
            &head,
            self.omitted,
            &String::from_utf8_lossy(&self.tail),
        )
    }
}

/// A process a test left running, killed when the test ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Leftover {
    /// Its process id.
    pub(crate) pid: u32,
    /// Its command name.
    pub(crate) command: String,
}

/// The `Exited` payload.
#[derive(Debug, Serialize, Deserialize)]
struct TestExit {
    /// Why the server could not start the test (fork it, or make what it
    /// needs), if it could not: then no child ran, and the other fields
    /// say nothing.
    not_started: Option<String>,
    status: ExitStatus,
    stdout: CapturedStream,
    stderr: CapturedStream,
    leftovers: Vec<Leftover>,
    /// Whether the test's timeout signalled it.
    timed_out: bool,
    /// From the fork to the exit.
    duration: Duration,
}

/// How one test run ended, as the harness saw it.
#[derive(Debug)]
pub(crate) struct TestRun {
    pub(crate) ending: Ending,
    pub(crate) stdout: CapturedStream,
    pub(crate) stderr: CapturedStream,
    pub(crate) leftovers: Vec<Leftover>,
    pub(crate) duration: Duration,
}

/// The end of a test, before it is weighed against what was expected.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The test function returned (`Err` with the error's debug text).
    Returned(Result<(), String>),
    /// It panicked.
    Panicked(PanicReport),
    /// Its child ended without a result: a signal or an exit code.
    Died(Termination),
    /// It ran past its timeout and was killed.
    TimedOut {
        limit: Duration,
        grace_period: Duration,
        termination: Termination,
    },
    /// The machinery failed for this test.
    Broken(String),
}

/// The harness's handle on its fork servers: a lane per channel, each
/// carrying one test at a time.
///
/// One thread drives every lane (see the harness's `Scheduler`): it sends
/// a request on each idle lane and waits on all of them at once, so no
/// thread sleeps per test and nothing is handed from thread to thread.
pub(crate) struct ForkServer {
    /// The server processes, kept to be killed and reaped when the
    /// harness drops this.
    _processes: Vec<Child>,
    lanes: Vec<Lane>,
}

/// One channel to a server, and the test it carries.
struct Lane {
    /// The share of `--test-threads` of the lane's server: how many tests
    /// it runs at once.
    server_limit: usize,
    /// Which server the lane goes to.
    server: usize,
    /// Read through a buffer: a test's result and its `Exited` usually
    /// arrive together, and come out of one read. `None` once the channel
    /// broke.
    channel: Option<BufReader<UnixStream>>,
    reader: FrameReader,
    test: Option<Sent>,
}

/// A test sent on a lane, and what has come back for it so far.
struct Sent {
    request: RunRequest,
    started: Instant,
    /// How the test function ended, if it said.
    returned: Option<Ending>,
    /// The report of its crash handler, if it crashed.
    crash: Option<Crash>,
}

impl ForkServer {
    /// Forks `servers` servers that run at most `threads` tests at once
    /// between them. One server forks one test at a time, and a fork costs
    /// far more than anything else a test of a few microseconds does, so a
    /// machine with several cores wants several servers.
    ///
    /// Each server gets two lanes per test it may run, so that it always
    /// has the next request at hand when a test ends. The descriptors of
    /// `harness_fds` (the report stream) are closed in the servers, so no
    /// test can reach them.
    ///
    /// # Errors
    ///
    /// When the channels or a server cannot be created.
    pub(crate) fn start(
        tests: &TestTable,
        threads: usize,
        servers: usize,
        capture: bool,
        harness_fds: &[RawFd],
    ) -> io::Result<ForkServer> {
        let threads = threads.max(1);
        let servers = servers.clamp(1, threads);
        let mut ours = Vec::with_capacity(LANES_PER_TEST * threads);
        // Each server's share of the tests that may run at once, and its
        // ends of the channels.
        let mut theirs: Vec<(usize, Vec<UnixStream>)> = (0..servers)
            .map(|server| {
                let limit = threads / servers + usize::from(server < threads % servers);
                (limit, Vec::new())
            })
            .collect();
        for (limit, channels) in &mut theirs {
            for _ in 0..LANES_PER_TEST * *limit {
                let (parent_end, server_end) = UnixStream::pair()?;
                parent_end.set_nonblocking(true)?;
                ours.push(parent_end);
                channels.push(server_end);
            }
        }
        let _ = io::stdout().flush();
        // The harness forks before libtest-mimic starts; only a shared
        // setup that started threads of its own makes this warn.
        child::warn_if_threaded();
        server::prepare_to_fork();
        let lanes = ours
            .into_iter()
            .zip(
                theirs
                    .iter()
                    .enumerate()
                    .flat_map(|(server, (limit, channels))| {
                        std::iter::repeat_n((server, *limit), channels.len())
                    }),
            )
            .map(|(channel, (server, server_limit))| Lane {
                server,
                server_limit,
                channel: Some(BufReader::with_capacity(LANE_BUFFER, channel)),
                reader: FrameReader::new(DEFAULT_MAX_FRAME),
                test: None,
            })
            .collect();
        let mut processes = Vec::with_capacity(servers);
        while let Some((limit, own)) = theirs.pop() {
            let mut setup = ChildSetup::new(own[0].as_raw_fd());
            setup.death_signal = Some(NixSignal::SIGTERM);
            match child::fork(&setup, harness_fds)? {
                Forked::Child => {
                    drop((lanes, theirs));
                    // The servers forked before this one are not this
                    // one's to kill: forget the handles without dropping.
                    std::mem::forget(processes);
                    serve(tests, own, limit, capture)
                }
                Forked::Parent(process) => processes.push(process),
            }
        }
        Ok(ForkServer {
            _processes: processes,
            lanes,
        })
    }

    /// How many lanes there are.
    pub(crate) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// A lane that can take a test now: one to the server with the least
    /// work for its share of the tests, so that no server queues a test
    /// while another has room to run it.
    pub(crate) fn idle_lane(&self) -> Option<usize> {
        let load = |server: usize| {
            self.lanes
                .iter()
                .filter(|lane| lane.server == server && lane.test.is_some())
                .count()
        };
        self.lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| lane.channel.is_some() && lane.test.is_none())
            // The fewest tests sent per test the server may run: a/b < c/d
            // as a*d < c*b.
            .min_by(|(_, a), (_, b)| {
                (load(a.server) * b.server_limit).cmp(&(load(b.server) * a.server_limit))
            })
            .map(|(index, _)| index)
    }

    /// Whether a test is on its way.
    pub(crate) fn busy(&self) -> bool {
        self.lanes.iter().any(|lane| lane.test.is_some())
    }

    /// Whether no lane is left: every channel broke.
    pub(crate) fn broken(&self) -> bool {
        self.lanes.iter().all(|lane| lane.channel.is_none())
    }

    /// Asks for `request` to run in a fresh child of the server on `lane`,
    /// which must be idle; `Err` says why it could not be sent.
    pub(crate) fn send(&mut self, lane: usize, request: RunRequest) -> Result<(), String> {
        let started = Instant::now();
        let frame = FrameBuilder::new(Kind::Run)
            .encode(&request)
            .expect("a run request always encodes")
            .finish();
        let lane = &mut self.lanes[lane];
        let sent = match &lane.channel {
            Some(channel) => write_all_nonblocking(channel.get_ref(), &frame),
            None => Err(io::Error::other("the lane is closed")),
        };
        if let Err(error) = sent {
            lane.channel = None;
            return Err(format!(
                "failed to ask the fork server for the test: {error}"
            ));
        }
        lane.test = Some(Sent {
            request,
            started,
            returned: None,
            crash: None,
        });
        Ok(())
    }

    /// Waits until at least one test ends (or a signal interrupts), and
    /// returns each test that ended with its lane.
    pub(crate) fn wait(&mut self) -> Vec<(usize, TestRun)> {
        let mut fds = Vec::new();
        let mut lanes = Vec::new();
        for (index, lane) in self.lanes.iter().enumerate() {
            if let (Some(channel), Some(_)) = (&lane.channel, &lane.test) {
                fds.push(PollFd::new(channel.get_ref().as_fd(), PollFlags::POLLIN));
                lanes.push(index);
            }
        }
        let ready: Vec<usize> = match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => lanes
                .into_iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.any().unwrap_or(true))
                .map(|(index, _)| index)
                .collect(),
            Err(nix::errno::Errno::EINTR) => Vec::new(),
            // Polling valid descriptors fails only when the process is out
            // of memory: every test on its way fails rather than hang.
            Err(error) => {
                return lanes
                    .into_iter()
                    .map(|index| {
                        let reason = format!("failed to wait for the test: {error}");
                        (index, self.lanes[index].fail(reason))
                    })
                    .collect();
            }
        };
        ready
            .into_iter()
            .filter_map(|index| Some((index, self.lanes[index].read()?)))
            .collect()
    }
}

impl Lane {
    /// Reads what has arrived for the lane's test: its run once `Exited`
    /// is in.
    fn read(&mut self) -> Option<TestRun> {
        loop {
            let channel = self.channel.as_mut()?;
            let frame = match self.reader.read_from(channel) {
                Ok(Received::Frame(frame)) => frame,
                Ok(Received::Pending) => return None,
                Ok(Received::Closed) => return Some(self.fail("the fork server died".to_owned())),
                Err(error) => {
                    return Some(self.fail(format!("the test broke the protocol: {error}")));
                }
            };
            let test = self.test.as_mut()?;
            match frame.kind {
                // What the test child wrote, in a frame of its own: however
                // broken, it cannot put the lane out of step.
                Kind::Reply => test.read_reply(frame.payload()),
                Kind::Exited => {
                    return Some(match ipc::decode::<TestExit>(frame.payload()) {
                        Ok(exit) => {
                            let test = self.test.take().expect("the lane carries a test");
                            test.ended(exit)
                        }
                        Err(error) => {
                            self.fail(format!("the fork server broke the protocol: {error}"))
                        }
                    });
                }
                kind => {
                    let unexpected = ProtocolError::Unexpected(kind.name());
                    return Some(
                        self.fail(format!("the fork server broke the protocol: {unexpected}")),
                    );
                }
            }
            self.reader.recycle(frame);
        }
    }

    /// Closes the lane, which can carry no other test, and gives its test
    /// the run of one that could not be run.
    fn fail(&mut self, reason: String) -> TestRun {
        self.channel = None;
        let started = self
            .test
            .take()
            .map_or_else(Instant::now, |test| test.started);
        broken(started, reason)
    }
}

impl Sent {
    /// Takes in the frames the test's child wrote: its result, or its crash
    /// report. Frames that do not parse make the test broken, with why.
    fn read_reply(&mut self, mut frames: &[u8]) {
        let mut reader = FrameReader::new(reply_region::REGION_SIZE);
        loop {
            let frame = match reader.read_blocking(&mut frames) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(error) => {
                    self.returned = Some(Ending::Broken(format!(
                        "its result could not be read: {error}"
                    )));
                    return;
                }
            };
            let parsed: Result<(), ProtocolError> = match (frame.kind, self.crash.as_mut()) {
                (Kind::Returned, _) => ipc::split_call_id(frame.payload())
                    .and_then(|(_, payload)| ipc::decode(payload))
                    .map(|result| self.returned = Some(Ending::Returned(result))),
                (Kind::Panicked, _) => ipc::split_call_id(frame.payload())
                    .and_then(|(_, payload)| ipc::decode::<PanicMessage>(payload))
                    .map(|message| {
                        self.returned = Some(Ending::Panicked(message.into_report()));
                    }),
                (Kind::Crash, _) => {
                    Crash::parse(frame.payload()).map(|parsed| self.crash = Some(parsed))
                }
                (Kind::Backtrace, Some(crash)) => crash.add_backtrace(frame.payload()),
                (kind, _) => Err(ProtocolError::Unexpected(kind.name())),
            };
            if let Err(error) = parsed {
                self.returned = Some(Ending::Broken(format!(
                    "its result could not be read: {error}"
                )));
                return;
            }
        }
    }

    /// The run of the test, now that its `Exited` is in. What the test
    /// said counts only if its child then exited with code 0: one that
    /// died by a signal after replying crashed, and one that exited with
    /// another code exited. A test the server could not start is broken,
    /// with the cause.
    fn ended(self, exit: TestExit) -> TestRun {
        if let Some(reason) = exit.not_started {
            return broken(
                self.started,
                format!("the fork server could not start the test: {reason}"),
            );
        }
        let termination = Termination::new(exit.status, self.crash);
        let ending = match (exit.timed_out, self.returned, exit.status) {
            (true, _, _) => Ending::TimedOut {
                limit: self.request.timeout.unwrap_or_default(),
                grace_period: self.request.grace_period,
                termination,
            },
            (false, Some(ending), ExitStatus::Code(0)) => ending,
            (false, _, _) => Ending::Died(termination),
        };
        TestRun {
            ending,
            stdout: exit.stdout,
            stderr: exit.stderr,
            leftovers: exit.leftovers,
            duration: exit.duration,
        }
    }
}

/// The run of a test that could not be run.
pub(crate) fn broken(started: Instant, reason: String) -> TestRun {
    TestRun {
        ending: Ending::Broken(reason),
        stdout: CapturedStream::default(),
        stderr: CapturedStream::default(),
        leftovers: Vec::new(),
        duration: started.elapsed(),
    }
}

/// Writes all of `bytes` to a non-blocking socket, waiting for room.
fn write_all_nonblocking(mut channel: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match channel.write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A test the server is running.
struct Running {
    child: Child,
    /// The index of the region its child writes its result to.
    region: usize,
    started: Instant,
    /// When its timeout next acts: at the limit SIGTERM to its group, then,
    /// after the grace period, SIGKILL.
    deadline: Option<Instant>,
    grace_period: Duration,
    /// Whether its timeout has signalled it.
    timed_out: bool,
}

impl Running {
    /// Signals the test's group if its deadline has passed.
    fn enforce_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline.filter(|deadline| *deadline <= now) else {
            return;
        };
        if self.timed_out {
            self.child.signal_group(NixSignal::SIGKILL);
            self.deadline = None;
        } else {
            self.child.signal_group(NixSignal::SIGTERM);
            self.timed_out = true;
            self.deadline = Some(deadline + self.grace_period);
        }
    }
}

/// The files a channel's tests write their stdout and stderr to, made once
/// per channel and emptied after each test. They are opened `O_APPEND`, so
/// that once emptied the next test writes from the start.
struct OutputFiles {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// A `memfd` opened `O_APPEND`: once emptied, the next writer writes from
/// its start, wherever the last one left its offset.
fn append_only_memfd(name: &str) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
    )?;
    Ok(fd)
}

impl OutputFiles {
    fn create() -> io::Result<OutputFiles> {
        Ok(OutputFiles {
            stdout: append_only_memfd("stdout")?,
            stderr: append_only_memfd("stderr")?,
        })
    }

    /// Takes what the last test wrote and empties the files.
    fn take(&self) -> (CapturedStream, CapturedStream) {
        (
            take_kept(self.stdout.as_fd()),
            take_kept(self.stderr.as_fd()),
        )
    }
}

/// The server's loop. Never returns: the server ends when every channel is
/// closed, or when the harness dies.
fn serve(tests: &TestTable, channels: Vec<UnixStream>, limit: usize, capture: bool) -> ! {
    // SAFETY: prctl takes an option and integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    // SIGTERM ends the server; SIGCHLD says a test child (or something a
    // test left) exited. Both are read from a signalfd.
    let mut handled = SigSet::empty();
    handled.add(NixSignal::SIGTERM);
    handled.add(NixSignal::SIGCHLD);
    let signals = handled
        .thread_block()
        .and_then(|()| SignalFd::new(&handled));
    let Ok(signals) = signals else {
        child::exit_child(2);
    };
    // The server is a child made by `child::fork`, which installed the
    // crash handlers in it: its test children inherit them, and only say
    // where they report.
    // They report to the test's reply region, and keep what they start
    // below them.
    let mut child_setup = ChildSetup::new(-1);
    child_setup.subreaper = true;
    // What the test children set up of the crash handlers is set here
    // first, so that they inherit it and write nothing (see
    // `crash::install`): a child that writes a static copies its page.
    // SAFETY: the server is a child of this library, setting up before it
    // serves; the handlers it has are the library's own.
    unsafe { crate::crash::install(child_setup.stack_low) };
    crate::crash::report_to(child_setup.report_fd);
    // The signals, and a channel per slot.
    let descriptors = 1 + channels.len();
    let mut server = Server {
        tests,
        slots: channels.into_iter().map(Slot::new).collect(),
        message: Vec::new(),
        regions: Vec::new(),
        free_regions: Vec::new(),
        capture,
        child_setup,
        waiting: VecDeque::new(),
        limit: limit.max(1),
        children: Children::open(),
        signals: signals.as_fd().as_raw_fd(),
        held: Held::default(),
    };
    loop {
        if server
            .slots
            .iter()
            .all(|slot| slot.channel.is_none() && slot.test.is_none())
        {
            child::exit_child(0);
        }
        let mut poll_set = PollSet::with_capacity(descriptors);
        poll_set.add(signals.as_fd(), Source::Signals);
        // With as many tests running as it may, the server waits only for
        // them and for their own channels (to kill a test whose harness is
        // gone); the other requests are read when a test ends, without a
        // wake-up of their own.
        let full = server.running() >= server.limit;
        for (index, slot) in server.slots.iter().enumerate() {
            if let Some(channel) = &slot.channel
                && (!full || slot.test.is_some())
            {
                poll_set.add(channel.get_ref().as_fd(), Source::Channel(index));
            }
        }
        let timeout = server
            .slots
            .iter()
            .filter_map(|slot| slot.test.as_ref()?.deadline)
            .min()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let Ok(ready) = poll_set.poll(timeout) else {
            child::exit_child(2);
        };
        for source in ready {
            match source {
                Source::Signals => match signals.read_signal() {
                    Ok(Some(signal)) if signal.ssi_signo == NixSignal::SIGCHLD as u32 => {
                        server.finish_exited();
                    }
                    // SIGTERM: the harness is gone.
                    _ => {
                        for test in server.slots.iter().filter_map(|slot| slot.test.as_ref()) {
                            test.child.signal_group(NixSignal::SIGKILL);
                        }
                        child::exit_child(0);
                    }
                },
                Source::Channel(index) => server.read_channel(index),
            }
        }
        let now = Instant::now();
        for test in server
            .slots
            .iter_mut()
            .filter_map(|slot| slot.test.as_mut())
        {
            test.enforce_timeout(now);
        }
    }
}

/// A fork server's state.
///
/// It runs at most `limit` tests at once. It has more channels than that
/// (two lanes per test it may run), so that when a test ends, the next
/// request is already waiting: the server forks the next test at once,
/// instead of leaving its core idle while the result travels to the harness
/// and the harness's next request travels back.
struct Server<'a> {
    tests: &'a TestTable,
    slots: Vec<Slot>,
    /// The bytes of the last `Exited` message and the reply before it,
    /// kept to build the next.
    message: Vec<u8>,
    /// The regions test children write their results to: one per test
    /// running at once, made as needed, so never more than `limit`. A
    /// region goes with a running test, not with a channel: a server that
    /// runs one test at a time has one region, and its children no other
    /// to give up (see [`Held`]).
    regions: Vec<Region>,
    /// The regions no running test holds.
    free_regions: Vec<usize>,
    capture: bool,
    /// What every test child sets up, but for its descriptors and limit.
    child_setup: ChildSetup,
    /// Requests waiting for a running test to end, oldest first.
    waiting: VecDeque<(usize, RunRequest)>,
    limit: usize,
    children: Children,
    /// The signalfd, to be closed in test children.
    signals: RawFd,
    /// What the server holds that a test child must not, listed before
    /// each fork (kept to reuse its memory).
    held: Held,
}

/// What a server has for one channel.
struct Slot {
    /// Non-blocking, and read through a buffer: a request comes out of one
    /// read. `None` once the harness closed it, or broke it.
    channel: Option<BufReader<UnixStream>>,
    reader: FrameReader,
    /// Made at the channel's first test, when output is captured.
    output: Option<OutputFiles>,
    /// The channel's running test.
    test: Option<Running>,
}

impl Slot {
    fn new(channel: UnixStream) -> Slot {
        Slot {
            channel: channel
                .set_nonblocking(true)
                .is_ok()
                .then(|| BufReader::with_capacity(SLOT_BUFFER, channel)),
            reader: FrameReader::new(64),
            output: None,
            test: None,
        }
    }
}

impl Server<'_> {
    /// Whether `pid` is the child of a test the server runs.
    fn runs(&self, pid: i32) -> bool {
        self.slots
            .iter()
            .filter_map(|slot| slot.test.as_ref())
            .any(|test| test.child.pid().as_raw() == pid)
    }

    /// How many tests are running.
    fn running(&self) -> usize {
        self.slots.iter().filter(|slot| slot.test.is_some()).count()
    }

    /// Reads a request from channel `index`, if one has arrived.
    fn read_channel(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(channel) = slot.channel.as_mut() else {
            return;
        };
        let request = match slot.reader.read_from(channel) {
            Ok(Received::Frame(frame)) if frame.kind == Kind::Run => {
                let request = ipc::decode::<RunRequest>(frame.payload());
                slot.reader.recycle(frame);
                request
            }
            Ok(Received::Pending) => return,
            // Anything else breaks the protocol; end of file or an error
            // means the harness closed the channel, or broke it.
            _ => {
                self.close(index);
                return;
            }
        };
        match request {
            // A request never starts ahead of one already waiting.
            Ok(request) if self.running() < self.limit && self.waiting.is_empty() => {
                self.start(index, request);
            }
            Ok(request) => self.waiting.push_back((index, request)),
            Err(_) => self.close(index),
        }
    }

    /// Forks the test `request` names, for channel `index`.
    fn start(&mut self, index: usize, request: RunRequest) {
        let slot = &mut self.slots[index];
        let Some(function) = self.tests.function(request.test) else {
            self.close(index);
            return;
        };
        // Made at the channel's first test. A test whose output cannot
        // be captured, or whose result has nowhere to go, is not started.
        if self.capture && slot.output.is_none() {
            match OutputFiles::create() {
                Ok(output) => slot.output = Some(output),
                Err(error) => {
                    self.not_started(index, format!("failed to create its output files: {error}"));
                    return;
                }
            }
        }
        // Its test child writes its result (or its crash handler a crash
        // report) to a region, and the server sends it on with `Exited`, so
        // that the harness wakes once per test rather than once for the
        // result and once for the exit.
        let region = match self.free_regions.pop() {
            Some(region) => region,
            None => match Region::create() {
                Ok(region) => {
                    self.regions.push(region);
                    self.regions.len() - 1
                }
                Err(error) => {
                    self.not_started(index, format!("failed to map its result's region: {error}"));
                    return;
                }
            },
        };
        let held = &mut self.held;
        held.fds.clear();
        held.regions.clear();
        held.fds.push(self.signals);
        held.fds.extend(self.children.fd());
        for slot in &self.slots {
            held.fds.extend(
                slot.channel
                    .as_ref()
                    .map(|channel| channel.get_ref().as_raw_fd()),
            );
            if let Some(output) = &slot.output {
                held.fds
                    .extend([output.stdout.as_raw_fd(), output.stderr.as_raw_fd()]);
            }
        }
        held.regions.extend(
            (self.regions.iter().enumerate())
                .filter(|(other, _)| *other != region)
                .map(|(_, other)| other.address()),
        );
        // Sorted, the child closes them in a few `close_range` calls.
        held.fds.sort_unstable();
        let slot = &self.slots[index];
        let started = start_test(
            function,
            self.child_setup,
            request.memory_limit,
            &self.regions[region],
            slot.output.as_ref(),
            &self.held,
        );
        let slot = &mut self.slots[index];
        match started {
            Ok(child) => {
                let started = Instant::now();
                slot.test = Some(Running {
                    child,
                    region,
                    started,
                    deadline: request.timeout.map(|timeout| started + timeout),
                    grace_period: request.grace_period,
                    timed_out: false,
                });
            }
            Err(error) => {
                self.free_regions.push(region);
                self.not_started(index, error.to_string());
            }
        }
    }

    /// Tells the harness that the test of channel `index` could not be
    /// started, and why: it fails as broken, and the channel carries the
    /// next.
    fn not_started(&mut self, index: usize, reason: String) {
        let exit = TestExit {
            not_started: Some(reason),
            // No child ran.
            status: ExitStatus::Code(-1),
            stdout: CapturedStream::default(),
            stderr: CapturedStream::default(),
            leftovers: Vec::new(),
            timed_out: false,
            duration: Duration::ZERO,
        };
        self.message.clear();
        if let Some(channel) = &self.slots[index].channel {
            send_exit(channel.get_ref(), &exit, &mut self.message);
        }
    }

    /// Finishes every test whose child has exited. (One `SIGCHLD` may
    /// stand for several exits, or for none of a test's: a process a test
    /// left, reparented to the server, exiting.)
    fn finish_exited(&mut self) {
        for index in 0..self.slots.len() {
            if self.slots[index]
                .test
                .as_mut()
                .is_some_and(|test| test.child.has_exited())
            {
                self.finish(index);
            }
        }
    }

    /// The test of channel `index` has exited: takes its result, starts
    /// the next waiting request, then reaps the test and sends its
    /// `Exited`.
    fn finish(&mut self, index: usize) {
        let was_full = self.running() >= self.limit;
        let Some(test) = self.slots[index].test.take() else {
            return;
        };
        if was_full {
            self.read_requests();
        }
        // What the test left was handed to the server as its child exited:
        // taken now, before the next test starts and can hand over its own.
        let pid = test.child.pid().as_raw();
        let orphans = self
            .children
            .orphans(|child| child == pid || self.runs(child));
        // Its result too, and its region freed for the next test: its
        // process has exited, so it writes there no more.
        let mut message = std::mem::take(&mut self.message);
        message.clear();
        let region = &self.regions[test.region];
        let mut message = FrameBuilder::appending(Kind::Reply, message)
            .extend(|bytes| region.take(pid.unsigned_abs(), bytes))
            .finish();
        self.free_regions.push(test.region);
        while self.running() < self.limit
            && let Some((next, request)) = self.waiting.pop_front()
        {
            self.start(next, request);
        }
        let exit = self.reap(test, index, orphans);
        if let Some(channel) = &self.slots[index].channel {
            send_exit(channel.get_ref(), &exit, &mut message);
        }
        self.message = if message.capacity() > MESSAGE_BUFFER_KEPT {
            Vec::new()
        } else {
            message
        };
    }

    /// Reaps the test of channel `index`: kills and reaps what it left
    /// behind (`orphans`, as the server found them when the test ended),
    /// then its group, reaps it, and collects its output.
    fn reap(&self, mut test: Running, index: usize, orphans: Vec<i32>) -> TestExit {
        let group = test.child.pid().as_raw();
        // Collected while the test's child, not reaped yet, keeps its group
        // id, and before the group is killed: a member killed first would
        // be dead when looked at, and not reported. An orphan in the group
        // of another test that ended meanwhile is that test's, collected
        // when it is reaped.
        let leftovers = collect_leftovers(orphans, |pgid| pgid != group && self.runs(pgid));
        let status = test.child.wait().unwrap_or(ExitStatus::Code(-1));
        let duration = test.started.elapsed();
        let (stdout, stderr) = self.slots[index]
            .output
            .as_ref()
            .map(OutputFiles::take)
            .unwrap_or_default();
        TestExit {
            not_started: None,
            status,
            stdout,
            stderr,
            leftovers,
            timed_out: test.timed_out,
            duration,
        }
    }

    /// Reads the requests that have arrived on the channels the server did
    /// not poll while it was full: a read that finds nothing costs no more
    /// than a poll that says so.
    fn read_requests(&mut self) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.channel.is_some()
                && slot.test.is_none()
                && !self.waiting.iter().any(|(waiting, _)| *waiting == index)
            {
                self.read_channel(index);
            }
        }
    }

    /// Closes channel `index`: its waiting request goes, its test is killed.
    fn close(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.channel = None;
        if let Some(test) = &slot.test {
            test.child.signal_group(NixSignal::SIGKILL);
        }
        self.waiting.retain(|(waiting, _)| *waiting != index);
    }
}

/// The descriptors of one `poll`, and what each is.
struct PollSet<'fd> {
    fds: Vec<PollFd<'fd>>,
    sources: Vec<Source>,
}

/// What became ready in the server's poll.
#[derive(Clone, Copy)]
enum Source {
    Signals,
    Channel(usize),
}

impl<'fd> PollSet<'fd> {
    fn with_capacity(capacity: usize) -> PollSet<'fd> {
        PollSet {
            fds: Vec::with_capacity(capacity),
            sources: Vec::with_capacity(capacity),
        }
    }

    /// Adds `fd`, to be polled for input, as `source`.
    fn add(&mut self, fd: BorrowedFd<'fd>, source: Source) {
        self.fds.push(PollFd::new(fd, PollFlags::POLLIN));
        self.sources.push(source);
    }

    /// Waits until a descriptor is ready or `timeout` (at least a
    /// millisecond, unless zero) has passed, and returns what is ready (or
    /// hung up, or broken), in the order it was added. An interruption by
    /// a signal counts as nothing ready.
    fn poll(mut self, timeout: Option<Duration>) -> nix::Result<Vec<Source>> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(Duration::ZERO) => PollTimeout::ZERO,
            Some(timeout) => PollTimeout::try_from(timeout.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut self.fds, timeout) {
            Ok(_) => Ok(self
                .sources
                .into_iter()
                .zip(&self.fds)
                .filter(|(_, fd)| fd.any().unwrap_or(false))
                .map(|(source, _)| source)
                .collect()),
            Err(nix::errno::Errno::EINTR) => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }
}

/// What a server holds that a test child gives up before the test runs.
#[derive(Default)]
struct Held {
    /// Descriptors: the server's channels and signalfd, other tests'
    /// output files.
    fds: Vec<RawFd>,
    /// The addresses of the regions of the other tests running, and of
    /// those no test holds now.
    regions: Vec<usize>,
}

/// Forks the child for one test, its result going to `reply` and its
/// output to `outputs` if given, without what the server `held`.
fn start_test(
    function: Function<'_>,
    mut setup: ChildSetup,
    memory_limit: Option<u64>,
    reply: &Region,
    outputs: Option<&OutputFiles>,
    held: &Held,
) -> io::Result<Child> {
    setup.output = outputs.map(|files| (files.stdout.as_raw_fd(), files.stderr.as_raw_fd()));
    if let Some(limit) = memory_limit {
        setup.address_space_limit = Some(child::address_space_size().saturating_add(limit));
    }
    match child::fork(&setup, &held.fds)? {
        Forked::Child => {
            held.regions.iter().copied().for_each(reply_region::unmap);
            reply.write_here();
            let outcome =
                server::catch(|| function.call()).map(|result| result.map_err(server::kept_text));
            server::exit_unless_owner();
            server::flush_stdio();
            // A reply too large for the region is not written: the test
            // fails as one that exited without a result. (Its panic message
            // is kept as head and tail, well within it.)
            match &outcome {
                Ok(value) => reply_region::append_frame(Kind::Returned, 0, value),
                Err(report) => reply_region::append_frame(Kind::Panicked, 0, report),
            };
            child::exit_child(0)
        }
        Forked::Parent(child) => Ok(child),
    }
}

/// The server's list of its children, kept open to be read again after each
/// test: a subreaper inherits what its tests leave behind.
struct Children {
    list: Option<std::fs::File>,
}

impl Children {
    /// Its descriptor, if the list could be opened.
    fn fd(&self) -> Option<RawFd> {
        self.list.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn open() -> Children {
        let tid = nix::unistd::gettid();
        Children {
            list: std::fs::File::open(format!("/proc/self/task/{tid}/children")).ok(),
        }
    }

    /// The pids the list holds now. The list usually holds a pid or two,
    /// and fits on the stack; each page the server writes after a fork
    /// costs it a fault.
    fn pids(&self, mut each: impl FnMut(i32)) {
        let Some(list) = &self.list else {
            return;
        };
        let mut chunk = [0_u8; 256];
        let read = list.read_at(&mut chunk, 0).unwrap_or(0);
        let mut longer = Vec::new();
        let text = if read < chunk.len() {
            &chunk[..read]
        } else {
            // Read again whole, in one read from the start: the list
            // changes as processes end, and two reads at two offsets of a
            // changed list could cut a pid in two and join the halves into
            // the pid of a stranger.
            loop {
                longer.resize(longer.len().max(chunk.len()) * 4, 0);
                let read = list.read_at(&mut longer, 0).unwrap_or(0);
                if read < longer.len() {
                    longer.truncate(read);
                    break;
                }
            }
            &longer[..]
        };
        text.split(u8::is_ascii_whitespace)
            .filter_map(|pid| std::str::from_utf8(pid).ok()?.parse::<i32>().ok())
            .for_each(&mut each);
    }

    /// The server's children now that are no test (`is_test`): what tests
    /// that ended left, handed to the server as each test's child exited.
    /// Allocates nothing when there is none, which is most of the time.
    fn orphans(&self, is_test: impl Fn(i32) -> bool) -> Vec<i32> {
        let mut orphans = Vec::new();
        self.pids(|pid| {
            if !is_test(pid) {
                orphans.push(pid);
            }
        });
        orphans
    }
}

/// Kills and reaps the trees of `orphans` (but an orphan in another test's
/// process group, by `elsewhere`, which is that test's), and returns the
/// processes in them that were running: what a test left behind.
///
/// Every process of the trees is stopped (SIGSTOP, which no process can
/// catch) before its children are read, and the trees are read again
/// until they hold nothing new and every process has stopped: a stopped
/// process starts no other, and hands none to the server. Then all are
/// killed at once and reaped as they are handed over. So what the test
/// left is exactly what it is charged with, even while other tests run and
/// end: none of theirs joins these trees.
fn collect_leftovers(orphans: Vec<i32>, elsewhere: impl Fn(i32) -> bool) -> Vec<Leftover> {
    let mut seen: Vec<i32> = Vec::new();
    let mut leftovers = Vec::new();
    let mut found: Vec<i32> = orphans
        .into_iter()
        .filter(|pid| child::process_stat(*pid).is_some_and(|stat| !elsewhere(stat.group)))
        .collect();
    for _ in 0..MAX_COLLECTION_ROUNDS {
        if found.is_empty()
            && seen
                .iter()
                .all(|pid| !child::process_stat(*pid).is_some_and(|stat| stat.runs))
        {
            break;
        }
        for pid in found.drain(..) {
            if seen.contains(&pid) {
                continue;
            }
            let Some(stat) = child::process_stat(pid) else {
                continue;
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), NixSignal::SIGSTOP);
            seen.push(pid);
            if stat.state != 'Z' {
                leftovers.push(Leftover {
                    pid: pid.unsigned_abs(),
                    command: stat.command,
                });
            }
        }
        for &pid in &seen {
            found.extend(child::children_of(pid));
        }
        found.retain(|pid| !seen.contains(pid));
        if found.is_empty() {
            std::thread::yield_now();
        }
    }
    for &pid in &seen {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), NixSignal::SIGKILL);
    }
    for &pid in &seen {
        reap_when_handed(nix::unistd::Pid::from_raw(pid));
    }
    leftovers
}

/// How many times [`collect_leftovers`] reads the trees again: each round
/// reaches one generation deeper, or waits for a stop to take effect.
const MAX_COLLECTION_ROUNDS: usize = 256;

/// How long a killed leftover may take to be handed to the server.
const HANDING: Duration = Duration::from_millis(20);

/// Reaps `pid`, a killed leftover, once it is a dead child of the server:
/// its parent, killed too, hands it over as it dies. Gives up after
/// [`HANDING`] (its parent reaped it first).
fn reap_when_handed(pid: nix::unistd::Pid) {
    let deadline = Instant::now() + HANDING;
    loop {
        let pending = matches!(
            nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD) | Ok(nix::sys::wait::WaitStatus::StillAlive)
        );
        if !pending || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The head and tail of a captured stream, which is then emptied. (Most
/// tests write nothing: an empty file costs one `fstat`.)
fn take_kept(fd: BorrowedFd<'_>) -> CapturedStream {
    let size = nix::sys::stat::fstat(fd).map_or(0, |stat| stat.st_size.max(0) as u64);
    if size == 0 {
        return CapturedStream::default();
    }
    let read_at = |offset: u64, len: usize| {
        let mut bytes = vec![0; len];
        let read = nix::sys::uio::pread(fd, &mut bytes, offset as i64).unwrap_or(0);
        bytes.truncate(read);
        bytes
    };
    let kept = KEPT_OUTPUT as u64;
    let stream = if size <= 2 * kept {
        CapturedStream {
            head: read_at(0, size as usize),
            omitted: 0,
            tail: Vec::new(),
        }
    } else {
        CapturedStream {
            head: read_at(0, KEPT_OUTPUT),
            omitted: size - 2 * kept,
            tail: read_at(size - kept, KEPT_OUTPUT),
        }
    };
    let _ = nix::unistd::ftruncate(fd, 0);
    stream
}

/// Sends `Exited` after what `message` holds already (the test's reply),
/// in one write, keeping the buffer in `message` for the next.
fn send_exit(channel: &UnixStream, exit: &TestExit, message: &mut Vec<u8>) {
    let Ok(frame) = FrameBuilder::appending(Kind::Exited, std::mem::take(message)).encode(exit)
    else {
        return;
    };
    *message = frame.finish();
    let _ = write_all_nonblocking(channel, message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::Signal;

    fn sent_with(returned: Ending) -> Sent {
        Sent {
            request: RunRequest {
                test: TestId::Registered(0),
                memory_limit: None,
                timeout: None,
                grace_period: Duration::from_secs(1),
            },
            started: Instant::now(),
            returned: Some(returned),
            crash: None,
        }
    }

    fn exit(status: ExitStatus) -> TestExit {
        TestExit {
            not_started: None,
            status,
            stdout: CapturedStream::default(),
            stderr: CapturedStream::default(),
            leftovers: Vec::new(),
            timed_out: false,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn a_broken_reply_fails_its_test_alone() {
        let mut garbage = sent_with(Ending::Returned(Ok(())));
        garbage.returned = None;
        garbage.read_reply(&[200, 0, 0, 0, Kind::Returned as u8, 1]);
        let run = garbage.ended(exit(ExitStatus::Code(0)));
        assert!(
            matches!(&run.ending, Ending::Broken(reason) if reason.contains("could not be read")),
            "{:?}",
            run.ending
        );
        let mut returned = sent_with(Ending::Returned(Ok(())));
        returned.returned = None;
        let panicked = server::catch(|| -> () { panic!("boom") });
        let frames = server::reply_frame(panicked, Vec::new(), 0);
        returned.read_reply(&frames.into_buffer());
        let run = returned.ended(exit(ExitStatus::Code(0)));
        assert!(
            matches!(&run.ending, Ending::Panicked(report) if report.message == "boom"),
            "{:?}",
            run.ending
        );
    }

    #[test]
    fn a_result_counts_only_when_its_child_then_exits_cleanly() {
        let passed = sent_with(Ending::Returned(Ok(()))).ended(exit(ExitStatus::Code(0)));
        assert!(matches!(passed.ending, Ending::Returned(Ok(()))));
        let crashed = sent_with(Ending::Returned(Ok(()))).ended(exit(ExitStatus::Signal {
            signal: Signal(libc::SIGSEGV),
            core_dumped: false,
        }));
        assert!(
            matches!(&crashed.ending, Ending::Died(termination) if termination.signal() == Some(Signal(libc::SIGSEGV))),
            "{:?}",
            crashed.ending
        );
        let exited = sent_with(Ending::Returned(Ok(()))).ended(exit(ExitStatus::Code(3)));
        assert!(matches!(
            exited.ending,
            Ending::Died(Termination::Exited { code: 3 })
        ));
    }

    #[test]
    fn a_test_the_server_could_not_start_is_broken_with_the_cause() {
        let mut sent = sent_with(Ending::Returned(Ok(())));
        sent.returned = None;
        let mut exit = exit(ExitStatus::Code(-1));
        exit.not_started = Some("Resource temporarily unavailable (os error 11)".to_owned());
        let run = sent.ended(exit);
        assert!(
            matches!(
                &run.ending,
                Ending::Broken(reason) if reason
                    == "the fork server could not start the test: Resource temporarily unavailable (os error 11)"
            ),
            "{:?}",
            run.ending
        );
        assert!(run.stderr.is_empty());
    }
}
