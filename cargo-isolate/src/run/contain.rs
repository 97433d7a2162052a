//! Containment: finding every process a test started when the test ends,
//! however it detached, and killing it.
//!
//! A test's process runs in a process group of its own, and this runner is
//! a subreaper: what the test leaves in its group becomes a child of ours
//! when its process exits, and is found among our children by its group.
//! A process that leaves the group (`setsid`, a daemon that forks twice)
//! is not found that way. Where the machine allows it, cgroups find it:
//!
//! - **cgroup v2** (where this runner may create cgroups below its own, as
//!   root or with a delegated subtree): the runner moves itself into a
//!   cgroup of its own for the run, with one *threaded* child cgroup, a
//!   *lane*, per worker thread (and one for the thread that runs harness
//!   binaries), and a thread of its own in each lane, its *spawner*. A
//!   process is born in the cgroup of the thread that starts it, so a
//!   worker starts its tests in its lane: every test, and everything that
//!   test starts, however it detaches, lands in the lane. When the test
//!   ends, what is left in the lane besides the runner is exactly what the
//!   test left: it is killed and reaped, round after round until the lane
//!   holds only the runner.
//!
//!   The first move of a process or thread into a cgroup after a while
//!   waits for the kernel to sync with RCU, 10 to 20 ms here, where the
//!   moves that follow it closely cost microseconds. So the runner's own
//!   moves are made at once, at the start of `cargo isolate test`, on a
//!   thread of its own while cargo checks the build, before any worker
//!   exists. (A cgroup per test would cost such a move per test.) A worker
//!   that enters its lane is moved into it by the run's *mover* thread,
//!   without waiting; until it is there, the lane's spawner starts its
//!   tests for it, a hand-off between two threads per test, which on a
//!   loaded machine costs a test the wait for the spawner to be scheduled
//!   (5% of a run of 2000 trivial tests). For the same reason the runner
//!   moves back on a thread of its own: as soon as it has started the last
//!   process of the run, where it can tell (see [`Containment::spawn_last`]),
//!   so that the wait passes while that process runs; else at the end,
//!   while the reports are written.
//! - **fallback** (no cgroup v2, or not ours to write, or
//!   `ISOLATE_CONTAINMENT=process-groups` in the environment, for a machine
//!   whose cgroups are managed by something that would not welcome ours):
//!   a test's leftovers
//!   are found by its process group when it ends; a process that left the
//!   group is found among our children at the end of the run, killed,
//!   reaped and reported then, since while tests run at once it cannot be
//!   told whose it is (and may be serving a test that still runs).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::procfs::{listed_ids, own_children, state_and_group, thread_group};

/// How many times a cgroup is read again for processes that the last
/// round's kills had not ended yet, or that they handed on.
const ROUNDS: usize = 1000;

/// The pause between two rounds: a killed process takes a moment to exit.
const ROUND_PAUSE: Duration = Duration::from_millis(1);

/// How this run finds what tests leave behind.
pub(super) enum Containment {
    Cgroups(RunCgroups),
    /// The fallback, and why.
    ProcessGroups(String),
}

/// The cgroups of a run.
pub(super) struct RunCgroups {
    /// The cgroup the runner came from, to go back to.
    home: PathBuf,
    /// The run's cgroup, a threaded domain holding the runner.
    run: PathBuf,
    /// One threaded cgroup per lane.
    lanes: Vec<PathBuf>,
    /// The spawner of each lane: it takes a command and hands back the
    /// process it started, born in the lane.
    spawners: Vec<Mutex<Sender<SpawnRequest>>>,
    /// The thread moving the runner back where it came from, once the run
    /// has started its last process.
    leaving: Mutex<Option<JoinHandle<()>>>,
    /// The mover: it moves each thread that enters a lane into it.
    mover: Mutex<Sender<MoveRequest>>,
}

/// A thread for the mover to move, into which lane's `cgroup.threads`, and
/// what to set once it is there.
type MoveRequest = (Pid, PathBuf, Arc<AtomicBool>);

/// A command for a spawner, and where to hand back what it started.
type SpawnRequest = (Command, SyncSender<io::Result<Child>>);

/// The lane a thread entered.
struct Entered {
    lane: usize,
    /// Whether the thread is in it: set by the mover, once it has moved it
    /// there.
    moved: Arc<AtomicBool>,
}

thread_local! {
    /// The lane the calling thread entered.
    static ENTERED: std::cell::RefCell<Option<Entered>> = const { std::cell::RefCell::new(None) };
}

/// The lane the calling thread entered, and whether it is in it.
fn entered() -> Option<(usize, bool)> {
    ENTERED.with_borrow(|entered| {
        entered
            .as_ref()
            .map(|entered| (entered.lane, entered.moved.load(Ordering::Acquire)))
    })
}

impl Containment {
    /// Sets up the strongest containment the machine allows for `lanes`
    /// threads that start tests.
    pub(super) fn start(lanes: usize) -> Containment {
        if std::env::var_os("ISOLATE_CONTAINMENT").is_some_and(|choice| choice == "process-groups")
        {
            return Containment::ProcessGroups("ISOLATE_CONTAINMENT asks for it".to_owned());
        }
        match RunCgroups::create(lanes) {
            Ok(cgroups) => Containment::Cgroups(cgroups),
            Err(error) => Containment::ProcessGroups(format!("no cgroup v2 to write to: {error}")),
        }
    }

    /// What is in force, for `cargo isolate test -v`.
    pub(super) fn describe(&self) -> String {
        match self {
            Containment::Cgroups(cgroups) => format!(
                "cgroup v2 (a threaded cgroup per worker under {}): every process a test starts \
                 is killed when it ends",
                cgroups.run.display()
            ),
            Containment::ProcessGroups(why) => format!(
                "process groups and a subreaper ({why}): a process that leaves its test's \
                 process group is killed at the end of the run"
            ),
        }
    }

    /// Makes lane `lane` the calling thread's: every process it starts
    /// with [`Containment::spawn`] from now on is born there. The thread is
    /// moved into the lane in the background (see the module's docs).
    pub(super) fn enter(&self, lane: usize) {
        if let Containment::Cgroups(cgroups) = self
            && lane < cgroups.lanes.len()
        {
            let moved = Arc::new(AtomicBool::new(false));
            ENTERED.set(Some(Entered {
                lane,
                moved: Arc::clone(&moved),
            }));
            let threads = cgroups.lanes[lane].join("cgroup.threads");
            // Without the mover, the spawner goes on starting its tests.
            let _ = super::lock(&cgroups.mover).send((nix::unistd::gettid(), threads, moved));
        }
    }

    /// Starts `command`: in the calling thread's lane, where there are
    /// lanes: by the thread itself once it is there, else by the lane's
    /// spawner.
    ///
    /// # Errors
    ///
    /// As [`Command::spawn`]; and when the lane's spawner is gone.
    pub(super) fn spawn(&self, mut command: Command) -> io::Result<Child> {
        let (Containment::Cgroups(cgroups), Some((lane, moved))) = (self, entered()) else {
            return command.spawn();
        };
        debug_assert!(
            super::lock(&cgroups.leaving).is_none(),
            "a process started after the run's last"
        );
        if moved {
            return command.spawn();
        }
        let (reply, started) = sync_channel(1);
        let gone = || io::Error::other("the spawner of the run's cgroup is gone");
        super::lock(&cgroups.spawners[lane])
            .send((command, reply))
            .map_err(|_| gone())?;
        started.recv().map_err(|_| gone())?
    }

    /// Starts `command` as [`Containment::spawn`] does, as the last process
    /// of the run: nothing is started after it. The runner then moves back
    /// where it came from, on a thread of its own, while that process runs
    /// (the move waits for the kernel); what the process and its
    /// descendants start is still born in its lane.
    ///
    /// # Errors
    ///
    /// As [`Containment::spawn`].
    pub(super) fn spawn_last(&self, command: Command) -> io::Result<Child> {
        let child = self.spawn(command);
        if let Containment::Cgroups(cgroups) = self {
            cgroups.leave_early();
        }
        child
    }

    /// Kills and reaps what the test whose process (exited, not reaped,
    /// and among the `known` processes that are no leftovers) led group
    /// `group` left: in the calling thread's lane, or in that group.
    /// Returns how many processes it found.
    pub(super) fn collect(&self, group: Pid, known: &HashSet<Pid>) -> usize {
        match (self, entered().map(|(lane, _)| lane)) {
            (Containment::Cgroups(cgroups), Some(lane)) => cgroups.collect(lane),
            _ => collect_group(group, known),
        }
    }

    /// Kills and reaps whatever tests left that is still around (in the
    /// fallback, what left its group), returns how many, and undoes the
    /// cgroups.
    pub(super) fn finish(&self, known: &HashSet<Pid>) -> usize {
        // A leftover killed here hands its own children to this subreaper
        // as it dies: they are the next round's, until none is left.
        let mut running = 0;
        for _ in 0..SWEEP_ROUNDS {
            let leftovers: Vec<Pid> = own_children()
                .into_iter()
                .filter(|pid| !known.contains(pid))
                .collect();
            if leftovers.is_empty() {
                break;
            }
            running += kill_and_reap(leftovers.into_iter());
        }
        running
    }
}

impl RunCgroups {
    /// The run's cgroup.
    pub(super) fn path(&self) -> &Path {
        &self.run
    }

    fn create(lanes: usize) -> io::Result<RunCgroups> {
        let home = own_cgroup()?;
        let run = home.join(format!("isolate-run-{}", std::process::id()));
        fs::create_dir(&run)?;
        let mut cgroups = RunCgroups {
            home: home.clone(),
            run,
            lanes: Vec::new(),
            spawners: Vec::new(),
            leaving: Mutex::new(None),
            mover: Mutex::new(start_mover()?),
        };
        let made = (|| {
            for lane in 0..lanes {
                let path = cgroups.run.join(format!("lane-{lane}"));
                fs::create_dir(&path)?;
                cgroups.lanes.push(path);
                fs::write(cgroups.lanes[lane].join("cgroup.type"), "threaded")?;
            }
            // Every move at once, the first of which waits for the kernel.
            fs::write(
                cgroups.run.join("cgroup.procs"),
                std::process::id().to_string(),
            )?;
            for lane in &cgroups.lanes {
                cgroups.spawners.push(Mutex::new(start_spawner(lane)?));
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok(cgroups),
            Err(error) => {
                // The runner goes back where it came from, if it moved.
                go_back(&home);
                cgroups.remove();
                Err(error)
            }
        }
    }

    /// Kills and reaps every process of lane `lane` but this runner, and
    /// returns how many there were.
    ///
    /// A threaded cgroup lists threads (`cgroup.threads`), not processes:
    /// the runner's own thread there is skipped, and a SIGKILL sent to
    /// any thread of a process kills the whole process.
    fn collect(&self, lane: usize) -> usize {
        let threads = self.lanes[lane].join("cgroup.threads");
        let mut found = HashSet::new();
        for _ in 0..ROUNDS {
            let others: Vec<Pid> = listed_ids(&threads)
                .into_iter()
                .filter(|tid| !Path::new(&format!("/proc/self/task/{tid}")).exists())
                .collect();
            if others.is_empty() {
                break;
            }
            for tid in others {
                // Its process, asked before it dies (the thread id itself
                // once it is gone: a process of one thread).
                found.insert(thread_group(tid).unwrap_or(tid));
                let _ = kill(tid, NixSignal::SIGKILL);
            }
            std::thread::sleep(ROUND_PAUSE);
        }
        // All are dead now, each reaped by a parent it outlived or handed,
        // as a zombie, to this subreaper: a process leaves its cgroup a
        // moment before its children are handed on, so one not ours yet
        // is asked again shortly. Only these are reaped: any other dead
        // child may be a test another worker has yet to reap.
        for pid in &found {
            reap_when_handed(*pid);
        }
        found.len()
    }

    /// Starts moving the runner back where it came from, on a thread of
    /// its own. Its every thread goes, the spawners' too: no process may be
    /// started in a lane after this. (Where no thread can be started, the
    /// move waits for [`RunCgroups::leave`].)
    fn leave_early(&self) {
        let mut leaving = super::lock(&self.leaving);
        if leaving.is_none() {
            let home = self.home.clone();
            *leaving = std::thread::Builder::new()
                .name("isolate-leave".to_owned())
                .spawn(move || go_back(&home))
                .ok();
        }
    }

    /// Moves the runner back where it came from, unless it is on its way
    /// already, and removes the cgroups. The spawners end first: each holds
    /// its end of a channel the run drops here.
    pub(super) fn leave(self) {
        let leaving = super::lock(&self.leaving).take();
        match leaving {
            Some(thread) => {
                let _ = thread.join();
            }
            None => go_back(&self.home),
        }
        self.remove();
    }

    /// Removes the cgroups, which must hold no process.
    fn remove(self) {
        for lane in self.lanes.iter().rev() {
            let _ = fs::remove_dir(lane);
        }
        let _ = fs::remove_dir(&self.run);
    }
}

/// Starts the mover: a thread that moves each thread it is sent into its
/// lane, and says so, until the run drops its end of the channel. A move
/// that fails (the runner left its cgroups meanwhile) says nothing: that
/// thread's tests go on being started by its lane's spawner.
fn start_mover() -> io::Result<Sender<MoveRequest>> {
    let (requests, incoming): (Sender<MoveRequest>, Receiver<MoveRequest>) = channel();
    std::thread::Builder::new()
        .name("isolate-mover".to_owned())
        .spawn(move || {
            for (tid, threads, moved) in incoming {
                if fs::write(&threads, tid.to_string()).is_ok() {
                    moved.store(true, Ordering::Release);
                }
            }
        })?;
    Ok(requests)
}

/// Moves this whole process, every thread of it, into the cgroup `home`.
fn go_back(home: &Path) {
    let _ = fs::write(home.join("cgroup.procs"), std::process::id().to_string());
}

/// Starts the spawner of lane `lane`: a thread that moves itself into the
/// lane, then starts each command it is sent, until the run drops its
/// end of the channel.
fn start_spawner(lane: &Path) -> io::Result<Sender<SpawnRequest>> {
    let (requests, incoming): (Sender<SpawnRequest>, Receiver<SpawnRequest>) = channel();
    let (placed, moved) = sync_channel(1);
    let threads = lane.join("cgroup.threads");
    std::thread::Builder::new()
        .name("isolate-spawner".to_owned())
        .spawn(move || {
            let entered = fs::write(&threads, nix::unistd::gettid().to_string());
            let ready = entered.is_ok();
            let _ = placed.send(entered);
            if ready {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            }
        })?;
    moved
        .recv()
        .map_err(|_| io::Error::other("the spawner thread died"))??;
    Ok(requests)
}

/// The directory of this process's cgroup v2.
fn own_cgroup() -> io::Result<PathBuf> {
    let unsupported = || io::Error::new(io::ErrorKind::Unsupported, "no cgroup v2");
    let cgroup = fs::read_to_string("/proc/self/cgroup")?;
    let path = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(unsupported)?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    // Field 5 is the mount point; the file system type follows " - ".
    let mount = mounts
        .lines()
        .find_map(|line| {
            let (fields, filesystem) = line.split_once(" - ")?;
            filesystem
                .starts_with("cgroup2 ")
                .then(|| fields.split(' ').nth(4))
                .flatten()
        })
        .ok_or_else(unsupported)?;
    Ok(Path::new(mount).join(path.trim_start_matches('/')))
}

/// How many generations of leftovers the end of a run kills, one a round.
const SWEEP_ROUNDS: usize = 64;

/// How long a dead leftover may take to be handed to this subreaper.
const HANDING: Duration = Duration::from_millis(20);

/// Reaps `pid`, a killed leftover, once it is a dead child of ours; gives
/// up after [`HANDING`] when it is not (its parent, another leftover,
/// reaped it before it died itself), leaving it to the end of the run.
fn reap_when_handed(pid: Pid) {
    let deadline = std::time::Instant::now() + HANDING;
    loop {
        let pending = matches!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD) | Ok(nix::sys::wait::WaitStatus::StillAlive)
        );
        if !pending || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Kills and reaps the children of ours in process group `group` but
/// `known` ones: what the test that led it left in it, handed to this
/// subreaper when its process exited.
fn collect_group(group: Pid, known: &HashSet<Pid>) -> usize {
    kill_and_reap(own_children().into_iter().filter(|pid| {
        !known.contains(pid) && state_and_group(*pid).is_some_and(|(_, of)| of == group)
    }))
}

/// Kills and reaps `children` of ours, and returns how many of them were
/// still running: a zombie (a process of a harness that died, handed to
/// this subreaper after its end) was left running by no one.
fn kill_and_reap(children: impl Iterator<Item = Pid>) -> usize {
    children
        .filter(|pid| {
            let running = state_and_group(*pid).is_some_and(|(state, _)| state != 'Z');
            let _ = kill(*pid, NixSignal::SIGKILL);
            let _ = waitpid(*pid, None);
            running
        })
        .count()
}
