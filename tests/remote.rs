//! End-to-end tests of remote objects, the pool and calls started without
//! waiting: each behaviour as a caller sees it, crashes included.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use isolate::buggy;
use isolate_harness::{Error, Isolate, IsolatePool, Remote};
use support::{is_running, stops_running, terminated};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test; these tests use some"
)]
mod support;

/// A decoder whose state is not serde data and not `Send`.
struct Decoder {
    seen: Rc<RefCell<Vec<u8>>>,
    label: String,
}

fn new_decoder(label: String) -> Decoder {
    Decoder {
        seen: Rc::new(RefCell::new(Vec::new())),
        label,
    }
}

fn feed(decoder: &mut Decoder, bytes: Vec<u8>) -> usize {
    if bytes.first() == Some(&0xff) {
        buggy::dragons_here();
    }
    decoder.seen.borrow_mut().extend(bytes);
    decoder.seen.borrow().len()
}

fn describe(decoder: &mut Decoder, (): ()) -> String {
    format!("{}: {:?}", decoder.label, decoder.seen.borrow())
}

#[test]
fn an_object_that_is_neither_serde_nor_send_lives_and_changes_in_the_child() {
    let isolate = Isolate::fork().unwrap();
    let decoder = isolate.spawn(new_decoder, "gif".to_owned()).unwrap();
    assert_eq!(decoder.call(feed, vec![1, 2]).unwrap(), 2);
    assert_eq!(decoder.call(feed, vec![3]).unwrap(), 3);
    assert_eq!(decoder.call(describe, ()).unwrap(), "gif: [1, 2, 3]");
    // Where it lives: the child's pid, not ours.
    let pid = decoder.call(|_, ()| std::process::id(), ()).unwrap();
    assert_eq!(Some(pid), isolate.id());
    assert_ne!(pid, std::process::id());
}

#[test]
fn fetch_copies_the_object_after_it_changed_and_into_inner_moves_it_out() {
    let isolate = Isolate::fork().unwrap();
    let list = isolate
        .spawn(|n: u32| (0..n).collect::<Vec<u32>>(), 3)
        .unwrap();
    list.call(|list, more: u32| list.push(more), 10).unwrap();
    assert_eq!(list.fetch().unwrap(), [0, 1, 2, 10]);
    // A copy: the object stays, and changes on.
    list.call(|list, ()| list.clear(), ()).unwrap();
    assert_eq!(list.fetch().unwrap(), Vec::<u32>::new());
    list.call(|list, x: u32| list.push(x), 7).unwrap();
    assert_eq!(list.into_inner().unwrap(), [7]);
}

#[test]
fn a_byte_vector_comes_back_whole_and_stays_in_the_child() {
    let isolate = Isolate::fork().unwrap();
    let bytes = isolate
        .spawn(
            |n: usize| (0..n).map(|i| i as u8).collect::<Vec<u8>>(),
            8 << 20,
        )
        .unwrap();
    for _ in 0..2 {
        let copy = bytes.fetch().unwrap();
        assert_eq!(copy.len(), 8 << 20);
        assert!(copy.iter().enumerate().all(|(i, byte)| *byte == i as u8));
    }
    assert_eq!(bytes.call(|bytes, ()| bytes.len(), ()).unwrap(), 8 << 20);
}

#[test]
fn an_object_too_large_to_fetch_fails_the_call_and_stays_whole() {
    let isolate = Isolate::builder().max_frame_size(1 << 20).fork().unwrap();
    let bytes = isolate.spawn(|n: usize| vec![5_u8; n], 2 << 20).unwrap();
    let error = bytes.fetch().unwrap_err();
    assert!(
        matches!(&error, Error::CallFailed(reason) if reason.contains("frame cap")),
        "{error:?}"
    );
    assert_eq!(
        bytes
            .call(|bytes, ()| (bytes.len(), bytes.iter().all(|b| *b == 5)), ())
            .unwrap(),
        (2 << 20, true)
    );
}

#[test]
fn call_remote_leaves_results_in_the_child_chain_after_chain() {
    let isolate = Isolate::fork().unwrap();
    let text = isolate.spawn(|s: String| s, "a,b;c,d".to_owned()).unwrap();
    let parts: Remote<Vec<String>> = text
        .call_remote(
            |text, sep: char| text.split(sep).map(str::to_owned).collect(),
            ';',
        )
        .unwrap();
    let first: Remote<String> = parts
        .call_remote(|parts, i: usize| parts[i].clone(), 1)
        .unwrap();
    let upper = first.call_remote(|s, ()| s.to_uppercase(), ()).unwrap();
    assert_eq!(upper.fetch().unwrap(), "C,D");
    assert_eq!(parts.call(|parts, ()| parts.len(), ()).unwrap(), 2);
}

/// Objects whose `Drop` ran, in this process.
static DROPPED: AtomicU64 = AtomicU64::new(0);

struct CountsDrops;

impl Drop for CountsDrops {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn dropped_in_child(_: ()) -> u64 {
    DROPPED.load(Ordering::SeqCst)
}

#[test]
fn dropping_a_remote_runs_its_drop_in_the_child() {
    let isolate = Isolate::fork().unwrap();
    let before = DROPPED.load(Ordering::SeqCst);
    let objects: Vec<_> = (0..3)
        .map(|_| isolate.spawn(|(): ()| CountsDrops, ()).unwrap())
        .collect();
    assert_eq!(isolate.call(dropped_in_child, ()).unwrap(), 0);
    drop(objects);
    assert_eq!(isolate.call(dropped_in_child, ()).unwrap(), 3);
    // Moved out by a method that takes it: dropped there, once.
    let one = isolate.spawn(|(): ()| CountsDrops, ()).unwrap();
    one.call_once(|object, ()| drop(object), ()).unwrap();
    assert_eq!(isolate.call(dropped_in_child, ()).unwrap(), 4);
    assert_eq!(DROPPED.load(Ordering::SeqCst), before, "no Drop ran here");
}

/// The child's resident memory, in pages.
fn resident_pages(_: ()) -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn spawning_and_dropping_many_objects_leaves_the_child_flat() {
    const CYCLES: usize = 100_000;
    let isolate = Isolate::fork().unwrap();
    let kept = isolate.spawn(|(): ()| CountsDrops, ()).unwrap();
    let warm = |count: usize| {
        for _ in 0..count {
            drop(isolate.spawn(|n: usize| vec![1_u8; n], 4096).unwrap());
        }
    };
    warm(1000);
    let before = isolate.call(resident_pages, ()).unwrap();
    warm(CYCLES);
    let after = isolate.call(resident_pages, ()).unwrap();
    // 100 000 objects of 4 KiB kept would be 100 000 pages; a table that
    // grew by a slot for each, about 600.
    assert!(
        after <= before + 64,
        "resident pages grew from {before} to {after}"
    );
    assert!(
        kept.call(|_, ()| (), ()).is_ok(),
        "the first object is still there"
    );
}

#[test]
fn a_remote_after_a_restart_is_stale_never_another_object() {
    let isolate = Isolate::fork().unwrap();
    let old = isolate.spawn(|n: u32| n, 1).unwrap();
    isolate.restart().unwrap();
    // The new child's first object takes the slot the old one had.
    let new = isolate.spawn(|n: u32| n, 2).unwrap();
    let error = old.fetch().unwrap_err();
    assert!(matches!(error, Error::Stale { object: "u32" }), "{error:?}");
    assert!(error.to_string().contains("restarted"), "{error}");
    assert_eq!(new.fetch().unwrap(), 2);
    drop(old);
    assert_eq!(
        new.fetch().unwrap(),
        2,
        "dropping a stale handle touches nothing"
    );
}

#[test]
fn remotes_of_two_isolates_each_reach_their_own_child() {
    let first = Isolate::fork().unwrap();
    let second = Isolate::fork().unwrap();
    let a = first.spawn(|n: u32| n, 1).unwrap();
    let b = second.spawn(|n: u32| n, 2).unwrap();
    assert_eq!((a.fetch().unwrap(), b.fetch().unwrap()), (1, 2));
    let pid = |remote: &Remote<u32>| remote.call(|_, ()| std::process::id(), ()).unwrap();
    assert_eq!(Some(pid(&a)), first.id());
    assert_eq!(Some(pid(&b)), second.id());
    assert_eq!(a.isolate().id(), first.id());
    assert_eq!(b.isolate().id(), second.id());
}

#[test]
fn a_crash_in_one_object_fails_every_handle_with_that_termination() {
    let isolate = Isolate::fork().unwrap();
    let decoder = isolate.spawn(new_decoder, "png".to_owned()).unwrap();
    let other = isolate.spawn(|n: u32| n, 5).unwrap();
    let termination = terminated(decoder.call(feed, vec![0xff]));
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    for error in [
        decoder.call(describe, ()).unwrap_err(),
        other.fetch().unwrap_err(),
        isolate.call(|n: u32| n, 1).unwrap_err(),
        isolate.spawn(|n: u32| n, 1).unwrap_err(),
    ] {
        assert_eq!(error.termination(), Some(&termination), "{error:?}");
        assert!(error.to_string().contains("Isolate::restart"), "{error}");
    }
    // A fresh child, with fresh objects; the old handles are stale.
    isolate.restart().unwrap();
    assert!(matches!(other.fetch(), Err(Error::Stale { .. })));
    let decoder = isolate.spawn(new_decoder, "png".to_owned()).unwrap();
    assert_eq!(decoder.call(feed, vec![1]).unwrap(), 1);
}

#[test]
fn a_panic_in_a_method_leaves_the_object_serving() {
    let isolate = Isolate::fork().unwrap();
    let list = isolate.spawn(|(): ()| vec![1_u8], ()).unwrap();
    let error = list.call(|list, i: usize| list[i], 9).unwrap_err();
    assert!(
        matches!(&error, Error::Panicked(report) if report.message.contains("index out of bounds"))
    );
    assert_eq!(list.fetch().unwrap(), [1]);
    let error = isolate
        .spawn(|(): ()| -> Vec<u8> { panic!("no") }, ())
        .unwrap_err();
    assert!(matches!(error, Error::Panicked(_)));
}

#[test]
fn after_a_timeout_later_calls_report_the_timeout() {
    let isolate = Isolate::builder()
        .timeout(Duration::from_millis(200))
        .grace_period(Duration::from_millis(100))
        .fork()
        .unwrap();
    let sleeper = isolate.spawn(|(): ()| 0_u8, ()).unwrap();
    let first = sleeper
        .call(|_, ()| std::thread::sleep(Duration::from_secs(60)), ())
        .unwrap_err();
    assert!(matches!(first, Error::TimedOut(_)), "{first:?}");
    for later in [
        sleeper.fetch().unwrap_err(),
        isolate.call(|n: u8| n, 1).unwrap_err(),
    ] {
        assert!(
            matches!(&later, Error::Dead(dead) if matches!(**dead, Error::TimedOut(_))),
            "{later:?}"
        );
        assert!(later.to_string().contains("timed out"), "{later}");
    }
}

#[test]
fn is_alive_sees_a_child_killed_while_idle_and_calls_then_say_how() {
    let isolate = Isolate::fork().unwrap();
    let pid = isolate.id().unwrap();
    assert!(isolate.is_alive());
    // SAFETY: none needed: `kill` is a plain system call on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(stops_running(pid));
    assert!(!isolate.is_alive());
    let error = isolate.call(|n: u8| n, 1).unwrap_err();
    let termination = error.termination().expect("how it ended");
    assert_eq!(termination.signal().unwrap().name(), "SIGKILL");
    assert!(matches!(error, Error::Dead(_)));
}

/// Leaves a file at `path`, then sleeps for an hour.
fn mark_and_sleep(path: std::path::PathBuf) {
    std::fs::write(path, "").unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

#[test]
fn is_alive_and_id_answer_at_once_while_another_thread_makes_a_call() {
    let isolate = Isolate::fork().unwrap();
    let pid = isolate.id().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let mark = directory.path().join("calling");
    let isolate = &isolate;
    std::thread::scope(|scope| {
        let call = scope.spawn(|| isolate.call(mark_and_sleep, mark.clone()));
        while !mark.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Asked on a thread of its own, so that an answer that waited for
        // the hour-long call fails the test instead of hanging it.
        let ask = || {
            let (answer, answered) = std::sync::mpsc::channel();
            scope.spawn(move || answer.send((isolate.is_alive(), isolate.id())).unwrap());
            answered
                .recv_timeout(Duration::from_secs(30))
                .expect("answered without waiting for the call")
        };
        assert_eq!(ask(), (true, Some(pid)));
        // SAFETY: none needed: `kill` is a plain system call on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(stops_running(pid));
        assert_eq!(ask(), (false, None));
        let error = call.join().unwrap().unwrap_err();
        assert_eq!(
            terminated(Err::<(), _>(error)).signal().unwrap().name(),
            "SIGKILL"
        );
    });
    assert!(!isolate.is_alive());
}

#[test]
fn a_shared_isolate_is_restarted_from_any_thread() {
    let isolate = Arc::new(Isolate::fork().unwrap());
    let first = isolate.id().unwrap();
    let shared = Arc::clone(&isolate);
    std::thread::spawn(move || shared.restart().unwrap())
        .join()
        .unwrap();
    let second = isolate.id().unwrap();
    assert_ne!(first, second);
    assert!(stops_running(first), "the old child ended");
    assert_eq!(isolate.call(|n: u8| n + 1, 1).unwrap(), 2);
}

#[test]
fn eight_threads_share_one_remote_of_an_object_that_is_not_send() {
    let isolate = Isolate::fork().unwrap();
    let decoder: Remote<Decoder> = isolate.spawn(new_decoder, "shared".into()).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    decoder.call(feed, vec![1]).unwrap();
                }
            });
        }
    });
    assert_eq!(decoder.call(feed, Vec::new()).unwrap(), 400);
}

#[test]
fn the_child_lives_while_a_remote_does() {
    let isolate = Isolate::fork().unwrap();
    let pid = isolate.id().unwrap();
    let object = isolate.spawn(|n: u32| n, 3).unwrap();
    drop(isolate);
    assert_eq!(object.fetch().unwrap(), 3);
    assert!(is_running(pid));
    drop(object);
    assert!(stops_running(pid), "the child outlived its last handle");
}

fn spin(millis: u64) -> u32 {
    let until = std::time::Instant::now() + Duration::from_millis(millis);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    std::process::id()
}

#[test]
fn a_pool_serves_eight_threads_with_its_children() {
    let pool = IsolatePool::new(2).unwrap();
    assert_eq!(pool.size(), 2);
    let children = pool.ids();
    let pids: Vec<u32> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..10)
                        .map(|_| pool.call(spin, 1).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        calls
            .into_iter()
            .flat_map(|call| call.join().unwrap())
            .collect()
    });
    assert_eq!(pids.len(), 80);
    assert!(
        pids.iter().all(|pid| children.contains(pid)),
        "{pids:?} {children:?}"
    );
    assert!(
        children.iter().all(|child| pids.contains(child)),
        "both children served"
    );
}

/// Leaves a mark for this call in `directory`, and waits (10 s at most)
/// until there are `calls` marks: whether that many calls ran at once.
fn meet(&(ref directory, calls): &(std::path::PathBuf, usize)) -> bool {
    std::fs::write(directory.join(std::process::id().to_string()), "").unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        if std::fs::read_dir(directory).unwrap().count() == calls {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn a_pool_of_two_runs_two_calls_at_once() {
    let pool = IsolatePool::new(2).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let meeting = (directory.path().to_owned(), 2);
    let met = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| pool.call(|m: (_, _)| meet(&m), meeting.clone())))
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().unwrap().unwrap())
            .collect::<Vec<bool>>()
    });
    assert_eq!(met, [true, true], "each call waited for the other");
}

#[test]
fn a_pool_replaces_a_child_that_died_while_idle_before_its_next_call() {
    let pool = IsolatePool::new(1).unwrap();
    let [pid] = pool.ids()[..] else {
        panic!("one child")
    };
    // SAFETY: none needed: `kill` is a plain system call on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(stops_running(pid));
    let served = pool.call(spin, 0).unwrap();
    assert_ne!(served, pid, "a fresh child made the call");
}

#[test]
fn a_pool_replaces_a_child_that_crashed() {
    let pool = IsolatePool::new(1).unwrap();
    let before = pool.ids();
    let error = pool.call(|(): ()| buggy::dragons_here(), ()).unwrap_err();
    assert!(matches!(error, Error::Terminated(_)), "{error:?}");
    let pid = pool.call(spin, 0).unwrap();
    assert_eq!(pool.ids(), [pid]);
    assert_ne!(pool.ids(), before, "a fresh child");
}

#[test]
fn a_started_call_runs_while_the_caller_goes_on() {
    let handle = isolate_harness::start(spin, 200).unwrap();
    let pid = handle.id().unwrap();
    assert!(is_running(pid));
    let handle = match handle.join_timeout(Duration::from_millis(10)) {
        Err(handle) => handle,
        Ok(result) => panic!("a 200 ms call ended within 10 ms: {result:?}"),
    };
    assert_eq!(handle.join().unwrap(), pid);
    assert!(stops_running(pid));

    let quick = isolate_harness::start(|n: u32| n * 2, 21).unwrap();
    assert_eq!(
        quick
            .join_timeout(Duration::from_secs(10))
            .ok()
            .unwrap()
            .unwrap(),
        42
    );
}

#[test]
fn a_started_call_can_be_killed_and_is_killed_when_dropped() {
    let sleep = |(): ()| std::thread::sleep(Duration::from_secs(60));
    let handle = isolate_harness::start(sleep, ()).unwrap();
    let pid = handle.id().unwrap();
    handle.kill();
    assert!(stops_running(pid));
    let dropped = isolate_harness::start(sleep, ()).unwrap();
    let pid = dropped.id().unwrap();
    drop(dropped);
    assert!(stops_running(pid));
}

#[test]
fn a_started_call_keeps_its_own_timeout_and_reports_crashes() {
    let handle = Isolate::builder()
        .timeout(Duration::from_millis(100))
        .grace_period(Duration::from_millis(50))
        .start(|(): ()| std::thread::sleep(Duration::from_secs(60)), ())
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    // Past its timeout already: joining ends it at once.
    let error = handle
        .join_timeout(Duration::from_secs(30))
        .ok()
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::TimedOut(_)), "{error:?}");
    let crashed = isolate_harness::start(|(): ()| buggy::dragons_here(), ()).unwrap();
    assert!(matches!(crashed.join(), Err(Error::Terminated(_))));
}

/// What this process holds from before it was forked: an isolate, an
/// object in its child, a pool and a started call.
type Inherited = (
    Isolate,
    Remote<u64>,
    IsolatePool,
    isolate_harness::JoinHandle<u32>,
);

static INHERITED: std::sync::Mutex<Option<Inherited>> = std::sync::Mutex::new(None);

/// In a forked copy: uses everything inherited, then drops it, and says
/// how each use failed.
fn use_inherited((): ()) -> Vec<String> {
    let (isolate, remote, pool, started) = INHERITED.lock().unwrap().take().unwrap();
    let mut errors = vec![
        isolate.call(|n: u8| n, 1).unwrap_err(),
        isolate.restart().unwrap_err(),
        remote.fetch().unwrap_err(),
        remote.call(|n, by: u64| *n += by, 1).unwrap_err(),
        pool.call(|n: u8| n, 1).unwrap_err(),
    ];
    assert!(!isolate.is_alive() && isolate.id().is_none() && pool.ids().is_empty());
    assert!(started.id().is_none());
    errors.push(started.join().unwrap_err());
    drop((isolate, remote, pool));
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn a_forked_copy_cannot_use_or_end_what_its_parent_made() {
    let isolate = Isolate::fork().unwrap();
    let remote = isolate.spawn(|n: u64| n, 41).unwrap();
    let pool = IsolatePool::new(1).unwrap();
    let started = isolate_harness::start(spin, 300).unwrap();
    let children = [isolate.id().unwrap(), pool.ids()[0], started.id().unwrap()];
    *INHERITED.lock().unwrap() = Some((isolate, remote, pool, started));
    let errors = isolate_harness::run(use_inherited, ()).unwrap();
    assert_eq!(errors.len(), 6);
    for error in &errors {
        assert!(error.contains("is a forked copy of it"), "{errors:#?}");
    }
    // Nothing the copy did reached the children, which serve on (and the
    // started call, killed, would have failed).
    let (isolate, remote, pool, started) = INHERITED.lock().unwrap().take().unwrap();
    assert!(children[..2].iter().all(|&pid| is_running(pid)));
    remote.call(|n, by: u64| *n += by, 1).unwrap();
    assert_eq!(remote.fetch().unwrap(), 42);
    assert_eq!(isolate.call(|n: u8| n + 1, 1).unwrap(), 2);
    assert_eq!(pool.call(|n: u8| n + 2, 1).unwrap(), 3);
    assert_eq!(started.join().unwrap(), children[2]);
}

#[test]
fn the_remote_example_tells_both_stories() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["run", "--quiet", "--offline", "--example", "remote"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.starts_with("Hello world\n"), "{stdout}");
    assert!(
        stdout.contains("took the decoder down: child killed by signal 11 (SIGSEGV"),
        "{stdout}"
    );
    assert!(stdout.contains("Isolate::restart"), "{stdout}");
    assert!(
        stdout.ends_with("4 bytes decoded after the crash\n"),
        "{stdout}"
    );
}
