//! End-to-end tests of the code the attribute macros generate:
//! `#[remote]` proxies, the options of `#[isolated]` and the crash sites
//! of both, as a caller sees them.

use std::rc::Rc;
use std::time::Duration;

use isolate::buggy;
use isolate_harness::{Error, Isolate, Remote};
use support::{backtrace_functions, terminated};

#[expect(
    dead_code,
    reason = "the helpers of every end-to-end test; these tests use some"
)]
mod support;

/// A tally of named byte strings. Its `Rc` makes it neither serde data nor
/// `Send`: it lives in the child, and only arguments and results cross.
struct Tally {
    total: u64,
    entries: Vec<String>,
    shared: Rc<()>,
}

#[isolate_harness::remote]
impl Tally {
    fn new(start: u64) -> Self {
        Tally {
            total: start,
            entries: Vec::new(),
            shared: Rc::new(()),
        }
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn add(&mut self, amount: u64) -> u64 {
        self.total += amount;
        self.total
    }

    fn record(&mut self, name: &str, data: &[u8], times: u32) -> usize {
        for _ in 0..times {
            self.entries.push(format!("{name}: {data:?}"));
        }
        self.entries.len()
    }

    fn entries(&self) -> Vec<String> {
        self.entries.clone()
    }

    /// Moves `share` of the total to a new tally, left in the child.
    fn split(&mut self, share: u64) -> Self {
        self.total -= share;
        Tally {
            total: share,
            entries: Vec::new(),
            shared: Rc::clone(&self.shared),
        }
    }

    /// The entries, ending the tally.
    fn finish(self) -> Vec<String> {
        self.entries
    }

    fn crash(&self) {
        buggy::dragons_here();
    }

    /// The process the tally lives in.
    fn pid() -> u32 {
        std::process::id()
    }

    /// Adds seventeen amounts: more arguments than serde's widest tuple.
    #[expect(clippy::too_many_arguments, reason = "the point of the method")]
    fn add_seventeen(
        &mut self,
        a: u8,
        b: u8,
        c: u8,
        d: u8,
        e: u8,
        f: u8,
        g: u8,
        h: u8,
        i: u8,
        j: u8,
        k: u8,
        l: u8,
        m: u16,
        n: u32,
        o: u64,
        p: &str,
        q: u64,
    ) -> u64 {
        let small = [a, b, c, d, e, f, g, h, i, j, k, l];
        self.total += small.iter().map(|&x| u64::from(x)).sum::<u64>()
            + u64::from(m)
            + u64::from(n)
            + o
            + p.len() as u64
            + q;
        self.total
    }
}

#[test]
fn a_proxy_builds_its_object_in_the_child_and_runs_its_methods_there() {
    let isolate = Isolate::fork().unwrap();
    let tally = TallyProxy::new(&isolate, 40).unwrap();
    assert_eq!(tally.total().unwrap(), 40);
    assert_eq!(tally.add(2).unwrap(), 42);
    assert_eq!(tally.record("gif", &[71, 73], 3).unwrap(), 3);
    let name = String::from("png");
    assert_eq!(tally.record(&name, b"", 1).unwrap(), 4);
    assert_eq!(
        tally.entries().unwrap(),
        ["gif: [71, 73]", "gif: [71, 73]", "gif: [71, 73]", "png: []"]
    );
    assert_eq!(tally.total().unwrap(), 42);

    let child = TallyProxy::pid(&isolate).unwrap();
    assert_ne!(child, std::process::id());
    assert_eq!(Some(child), isolate.id());
}

#[test]
fn a_method_takes_more_arguments_than_serde_s_widest_tuple() {
    let isolate = Isolate::fork().unwrap();
    let tally = TallyProxy::new(&isolate, 0).unwrap();
    let total = tally
        .add_seventeen(
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, "sixteen", 17,
        )
        .unwrap();
    assert_eq!(total, (1..=15).sum::<u64>() + 7 + 17);
}

#[test]
fn a_method_returning_self_gives_a_proxy_of_a_new_object_in_the_child() {
    let isolate = Isolate::fork().unwrap();
    let tally = TallyProxy::new(&isolate, 10).unwrap();
    let part: TallyProxy = tally.split(3).unwrap();
    assert_eq!(part.total().unwrap(), 3);
    assert_eq!(tally.total().unwrap(), 7);
    part.add(1).unwrap();
    assert_eq!((tally.total().unwrap(), part.total().unwrap()), (7, 4));
    // The objects share what they share in the child.
    let counts = |tally: &mut Tally, ()| Rc::strong_count(&tally.shared);
    assert_eq!(tally.call(counts, ()).unwrap(), 2);
    drop(part);
    assert_eq!(tally.call(counts, ()).unwrap(), 1);
}

#[test]
fn a_method_taking_self_consumes_the_object() {
    let isolate = Isolate::fork().unwrap();
    let tally = TallyProxy::new(&isolate, 0).unwrap();
    tally.record("a", &[1], 2).unwrap();
    assert_eq!(tally.finish().unwrap(), ["a: [1]", "a: [1]"]);
}

#[test]
fn a_proxy_is_its_remote_and_a_remote_its_proxy() {
    let isolate = Isolate::fork().unwrap();
    let tally = TallyProxy::new(&isolate, 5).unwrap();
    // Through `Deref`: a closure on the object, and the isolate.
    assert_eq!(
        tally.call(|tally, by: u64| tally.total * by, 3).unwrap(),
        15
    );
    assert_eq!(tally.isolate().id(), isolate.id());

    let remote: Remote<Tally> = tally.into();
    remote.call(|tally, ()| tally.total += 1, ()).unwrap();
    let tally = TallyProxy::from(remote);
    assert_eq!(tally.total().unwrap(), 6);
}

#[test]
fn a_crash_in_a_method_is_an_error_and_the_caller_lives_on() {
    let isolate = Isolate::fork().unwrap();
    let tally = TallyProxy::new(&isolate, 1).unwrap();
    let termination = terminated(tally.crash());
    assert_eq!(termination.signal().unwrap().name(), "SIGSEGV");
    let functions = backtrace_functions(&termination);
    assert!(
        functions.iter().any(|name| name.ends_with("Tally::crash")),
        "{functions:#?}"
    );
    // The object died with its child, and so did every other: each handle,
    // and the isolate, says how.
    let other = TallyProxy::new(&isolate, 2).unwrap_err();
    for error in [
        tally.total().unwrap_err(),
        other,
        isolate.call(|n: u8| n, 1).unwrap_err(),
    ] {
        assert!(matches!(error, Error::Dead(_)), "{error:?}");
        assert_eq!(error.termination(), Some(&termination), "{error:?}");
    }
    // A fresh child serves new ones.
    isolate.restart().unwrap();
    let tally = TallyProxy::new(&isolate, 2).unwrap();
    assert_eq!(tally.add(1).unwrap(), 3);
}

#[isolate_harness::isolated(timeout = "100ms")]
fn sleep_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn an_isolated_function_with_a_timeout_is_killed_after_it() {
    match sleep_forever() {
        Err(Error::TimedOut(timed_out)) => assert_eq!(timed_out.limit, Duration::from_millis(100)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[isolate_harness::isolated(memory_limit = "64MiB")]
fn allocate(bytes: usize) -> usize {
    std::hint::black_box(vec![1_u8; bytes]).len()
}

#[test]
fn an_isolated_function_with_a_memory_limit_runs_out_of_memory_past_it() {
    assert_eq!(allocate(1 << 20).unwrap(), 1 << 20);
    match allocate(1 << 30) {
        Err(Error::OutOfMemory(out_of_memory)) => assert_eq!(out_of_memory.limit, Some(64 << 20)),
        other => panic!("expected running out of memory, got {other:?}"),
    }
}

#[isolate_harness::isolated]
fn parse_header(header: Vec<u8>, strict: bool) -> usize {
    if strict && header.is_empty() {
        buggy::dragons_here();
    }
    header.len()
}

#[test]
fn the_crash_site_of_an_isolated_function_names_it() {
    assert_eq!(parse_header(b"GIF89a".to_vec(), true).unwrap(), 6);
    let termination = terminated(parse_header(Vec::new(), true));
    let functions = backtrace_functions(&termination);
    assert!(
        functions
            .iter()
            .any(|name| name.ends_with("::parse_header")),
        "{functions:#?}"
    );
    let crash_site = termination.crash().unwrap().backtrace.to_string();
    assert!(crash_site.contains("parse_header"), "{crash_site}");
}
