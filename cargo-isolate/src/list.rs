//! Listing the tests of each binary and choosing which to run.
//!
//! Every binary is asked with `--list --format terse`, and again with
//! `--ignored`, as libtest answers both, started as for its tests (through
//! the target runner, with cargo's environment: see
//! [`crate::environment`]). A binary that runs
//! `isolate-harness` is told apart by the handshake of its report stream:
//! listed with a nonce in `ISOLATE_HANDSHAKE`, it names the nonce on its
//! stderr, which libtest never does (a binary that merely contains the
//! harness's words does not), and no process more is started for that.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::sync::OnceLock;

use isolate_harness::report_stream;

use crate::build::{PackageGraph, TestBinary};
use crate::cli::SelectOptions;
use crate::filterset::Filterset;

/// How a binary runs its tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Runner {
    /// libtest, or any harness that speaks its command line: one process
    /// per test.
    Libtest,
    /// isolate-harness: one process per binary, which isolates each test
    /// itself and reports on the structured stream.
    IsolateHarness,
}

/// A binary and its tests.
#[derive(Debug)]
pub(crate) struct BinaryTests {
    pub(crate) binary: TestBinary,
    pub(crate) runner: Runner,
    pub(crate) tests: Vec<ListedTest>,
}

/// A test as the binary listed it.
#[derive(Clone, Debug)]
pub(crate) struct ListedTest {
    pub(crate) name: String,
    pub(crate) ignored: bool,
}

/// Why a binary's tests could not be listed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListError {
    #[error("failed to run {binary} to list its tests")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("{binary} failed to list its tests ({status}):\n{stderr}")]
    Failed {
        binary: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(
        "{binary} speaks version {version} of the isolate-harness report stream, which this \
         cargo-isolate cannot read (it reads version {})",
        report_stream::VERSION
    )]
    StreamVersion { binary: String, version: u32 },
}

/// Lists the tests of `binary`.
///
/// # Errors
///
/// When the binary cannot run or its listing fails.
pub(crate) fn list(binary: TestBinary) -> Result<BinaryTests, ListError> {
    // The two listings at once, where a thread can be made for one.
    let (all, ignored) = std::thread::scope(|scope| {
        let ignored =
            std::thread::Builder::new().spawn_scoped(scope, || list_with(&binary, &["--ignored"]));
        let all = list_with(&binary, &[]);
        let ignored = match ignored {
            Ok(listing) => listing.join().expect("listing does not panic"),
            Err(_) => list_with(&binary, &["--ignored"]),
        };
        (all, ignored)
    });
    let (all, ignored) = (all?, ignored?);
    let runner = match report_stream::handshake_version(&all.stderr, nonce()) {
        None => Runner::Libtest,
        Some(report_stream::VERSION) => Runner::IsolateHarness,
        Some(version) => {
            return Err(ListError::StreamVersion {
                binary: binary.id,
                version,
            });
        }
    };
    let ignored: HashSet<String> = ignored.names.into_iter().collect();
    let tests = all
        .names
        .into_iter()
        .map(|name| ListedTest {
            ignored: ignored.contains(&name),
            name,
        })
        .collect();
    Ok(BinaryTests {
        binary,
        runner,
        tests,
    })
}

/// What a binary's `--list` said.
struct Listing {
    /// The tests it listed.
    names: Vec<String>,
    /// Its stderr, where an isolate-harness binary answers the handshake.
    stderr: String,
}

/// The handshake's nonce, new for each run of `cargo isolate`: no binary
/// knows it before it is asked.
fn nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| {
        // Each `RandomState` has keys of its own, the first from the
        // operating system's randomness.
        let random = || RandomState::new().hash_one(std::process::id());
        format!("{:016x}{:016x}", random(), random())
    })
}

fn list_with(binary: &TestBinary, extra: &[&str]) -> Result<Listing, ListError> {
    let output = binary
        .command()
        .args(["--list", "--format", "terse"])
        .args(extra)
        .env(report_stream::HANDSHAKE_VAR, nonce())
        .output()
        .map_err(|source| ListError::Spawn {
            binary: binary.id.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(ListError::Failed {
            binary: binary.id.clone(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(Listing {
        names: String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_suffix(": test"))
            .map(str::to_owned)
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Which tests to run: the name filters (with the libtest options given
/// after `--`), the filtersets, the ignored tests and the shard.
///
/// A test runs if it matches a name filter (or none is given) and a
/// filterset (or none is given), as in nextest, and no `--skip`.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    filtersets: Vec<Filterset>,
    /// The profile's `default-filter`, unless `--ignore-default-filter`.
    default_filter: Option<Filterset>,
    /// The workspace, for the filtersets.
    packages: PackageGraph,
    ignored: RunIgnored,
    partition: Option<Partition>,
}

/// One shard of a suite (`--partition`), as nextest's: each kind applies
/// after every other filter, to the tests selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Partition {
    /// In each binary, every `total`th selected test, from the `shard`th
    /// on (1-based): the binaries count apart, so a binary's tests spread
    /// over the shards whatever the others hold.
    Count { shard: u64, total: u64 },
    /// The tests whose binary and name hash to `shard`: a test stays in its
    /// shard as others come and go.
    Hash { shard: u64, total: u64 },
    /// Every `total`th selected test of the whole run, counted across the
    /// binaries, from the `shard`th on: shards of even sizes.
    Slice { shard: u64, total: u64 },
}

/// Where a selected test stands, for [`Partition::includes`].
#[derive(Clone, Copy, Debug)]
struct Place {
    /// Among the selected tests of the run (0-based).
    in_run: u64,
    /// Among the selected tests of its binary (0-based).
    in_binary: u64,
}

impl Partition {
    /// Parses `count:K/N`, `hash:K/N` or `slice:K/N`, with 1 <= K <= N.
    ///
    /// # Errors
    ///
    /// For anything else, saying what was expected.
    pub(crate) fn parse(text: &str) -> Result<Partition, String> {
        let expected =
            || format!("expected count:K/N, hash:K/N or slice:K/N with 1 <= K <= N, not {text:?}");
        let (kind, shards) = text.split_once(':').ok_or_else(expected)?;
        let (shard, total) = shards.split_once('/').ok_or_else(expected)?;
        let shard: u64 = shard.parse().map_err(|_| expected())?;
        let total: u64 = total.parse().map_err(|_| expected())?;
        if shard == 0 || shard > total {
            return Err(expected());
        }
        match kind {
            "count" => Ok(Partition::Count { shard, total }),
            "hash" => Ok(Partition::Hash { shard, total }),
            "slice" => Ok(Partition::Slice { shard, total }),
            _ => Err(expected()),
        }
    }

    /// Whether the selected test at `place`, `name` of `binary`, is in
    /// this shard.
    fn includes(self, place: Place, binary: &str, name: &str) -> bool {
        match self {
            Partition::Count { shard, total } => place.in_binary % total == shard - 1,
            Partition::Hash { shard, total } => fnv1a(binary, name) % total == shard - 1,
            Partition::Slice { shard, total } => place.in_run % total == shard - 1,
        }
    }
}

/// The 64-bit FNV-1a hash of `binary`, a NUL and `name`: stable across
/// machines and Rust versions, as shards must be.
fn fnv1a(binary: &str, name: &str) -> u64 {
    binary
        .bytes()
        .chain([0])
        .chain(name.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Which tests run, ignored or not (`--run-ignored`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RunIgnored {
    /// Those not ignored; ignored tests are reported as such.
    #[default]
    Default,
    /// Only the ignored ones (libtest's `--ignored`).
    Only,
    /// Both (libtest's `--include-ignored`).
    All,
}

impl Selection {
    /// The selection that `select` describes, within the profile's
    /// `default_filter` (unless `select` ignores it), of the shard
    /// `partition`, in the workspace of `packages`.
    pub(crate) fn new(
        select: &SelectOptions,
        default_filter: Option<&Filterset>,
        partition: Option<Partition>,
        packages: PackageGraph,
    ) -> Selection {
        let libtest = &select.libtest;
        Selection {
            filters: [&select.filters, &libtest.filters]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            skip: libtest.skip.clone(),
            exact: libtest.exact,
            filtersets: select.filtersets.clone(),
            default_filter: default_filter
                .filter(|_| !select.ignore_default_filter)
                .cloned(),
            packages,
            ignored: select.run_ignored(),
            partition,
        }
    }

    fn matches(&self, pattern: &str, name: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    /// The tests of `binaries` in the run (ignored or not), as (binary
    /// index, test) pairs in order: those the filters select, then those of
    /// the shard.
    pub(crate) fn select<'a>(&self, binaries: &'a [BinaryTests]) -> Vec<(usize, &'a ListedTest)> {
        let mut selected = Vec::new();
        let mut in_run = 0;
        for (index, binary) in binaries.iter().enumerate() {
            let tests = binary
                .tests
                .iter()
                .filter(|test| self.selects(&binary.binary, test));
            for (in_binary, test) in (0..).zip(tests) {
                let place = Place { in_run, in_binary };
                in_run += 1;
                if self.partition.is_none_or(|partition| {
                    partition.includes(place, &binary.binary.id, &test.name)
                }) {
                    selected.push((index, test));
                }
            }
        }
        selected
    }

    /// Whether `test` of `binary` passes the filters (ignored or not).
    fn selects(&self, binary: &TestBinary, test: &ListedTest) -> bool {
        (self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|filter| self.matches(filter, &test.name)))
            && (self.filtersets.is_empty()
                || self
                    .filtersets
                    .iter()
                    .any(|filterset| filterset.matches(binary, &test.name, &self.packages)))
            && self
                .default_filter
                .as_ref()
                .is_none_or(|filterset| filterset.matches(binary, &test.name, &self.packages))
            && !self.skip.iter().any(|skip| self.matches(skip, &test.name))
            && (self.ignored != RunIgnored::Only || test.ignored)
    }

    /// The workspace's packages and their dependencies.
    pub(crate) fn packages(&self) -> &PackageGraph {
        &self.packages
    }

    /// Whether a selected `test` runs, rather than being reported ignored.
    pub(crate) fn runs(&self, test: &ListedTest) -> bool {
        !test.ignored || self.ignored != RunIgnored::Default
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::build::BinaryKind;

    fn test(name: &str, ignored: bool) -> ListedTest {
        ListedTest {
            name: name.to_owned(),
            ignored,
        }
    }

    fn binary() -> TestBinary {
        TestBinary {
            id: "package::suite".to_owned(),
            package: "package".to_owned(),
            target: "suite".to_owned(),
            kind: BinaryKind::Test,
            selector: "--test suite".to_owned(),
            path: PathBuf::from("suite"),
            launch: Default::default(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn filters_skip_and_exact() {
        let selection = Selection {
            filters: names(&["crash", "hang"]),
            skip: names(&["abort"]),
            ..Selection::default()
        };
        let selects = |name| selection.selects(&binary(), &test(name, false));
        assert!(selects("crash::segfault") && selects("hangs"));
        assert!(!selects("crash::abort") && !selects("passes"));

        let exact = Selection {
            filters: names(&["passes"]),
            exact: true,
            ..Selection::default()
        };
        assert!(exact.selects(&binary(), &test("passes", false)));
        assert!(!exact.selects(&binary(), &test("passes_too", false)));
    }

    #[test]
    fn a_test_must_match_a_name_filter_and_a_filterset() {
        let filterset = |text| Filterset::parse(text).unwrap();
        let selection = Selection {
            filters: names(&["parse"]),
            filtersets: vec![filterset("test(one)"), filterset("test(two)")],
            ..Selection::default()
        };
        let selects = |name| selection.selects(&binary(), &test(name, false));
        assert!(selects("parse_one") && selects("parse_two"));
        assert!(!selects("parse_three") && !selects("print_one"));
    }

    /// Binaries `a` of 4 tests and `b` of 2, as listed.
    fn two_binaries() -> Vec<BinaryTests> {
        let binary_of = |id: &str, count: usize| BinaryTests {
            binary: TestBinary {
                id: id.to_owned(),
                ..binary()
            },
            runner: Runner::Libtest,
            tests: (1..=count)
                .map(|number| test(&format!("t{number}"), false))
                .collect(),
        };
        vec![binary_of("a", 4), binary_of("b", 2)]
    }

    /// The tests of shard `text` of [`two_binaries`], as `binary test`.
    fn shard(text: &str) -> Vec<String> {
        let binaries = two_binaries();
        let selection = Selection {
            partition: Some(Partition::parse(text).unwrap()),
            ..Selection::default()
        };
        selection
            .select(&binaries)
            .into_iter()
            .map(|(index, test)| format!("{} {}", binaries[index].binary.id, test.name))
            .collect()
    }

    #[test]
    fn count_counts_in_each_binary_and_slice_across_them_as_nextest() {
        assert_eq!(shard("count:1/2"), ["a t1", "a t3", "b t1"]);
        assert_eq!(shard("count:2/2"), ["a t2", "a t4", "b t2"]);
        assert_eq!(shard("slice:1/4"), ["a t1", "b t1"]);
        assert_eq!(shard("slice:2/4"), ["a t2", "b t2"]);
        assert_eq!(shard("slice:3/4"), ["a t3"]);
        // Every test is in exactly one shard, whatever the kind.
        for kind in ["count", "hash", "slice"] {
            let mut all: Vec<String> = (1..=3)
                .flat_map(|shard| self::shard(&format!("{kind}:{shard}/3")))
                .collect();
            all.sort();
            assert_eq!(
                all,
                ["a t1", "a t2", "a t3", "a t4", "b t1", "b t2"],
                "{kind}"
            );
        }
        for bad in [
            "slice:0/2",
            "slice:3/2",
            "slices:1/2",
            "slice:1",
            "hash:a/b",
        ] {
            assert!(Partition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_filter_bounds_the_selection_unless_ignored() {
        let default_filter = Filterset::parse("not test(/^slow_/)").unwrap();
        let select = |args: SelectOptions| {
            let selection =
                Selection::new(&args, Some(&default_filter), None, PackageGraph::default());
            ["slow_one", "fast_one", "fast_two"]
                .into_iter()
                .filter(|name| selection.selects(&binary(), &test(name, false)))
                .collect::<Vec<_>>()
        };
        assert_eq!(select(SelectOptions::default()), ["fast_one", "fast_two"]);
        // Name filters choose within it.
        let named = SelectOptions {
            filters: names(&["one"]),
            ..SelectOptions::default()
        };
        assert_eq!(select(named), ["fast_one"]);
        let everything = SelectOptions {
            ignore_default_filter: true,
            ..SelectOptions::default()
        };
        assert_eq!(select(everything), ["slow_one", "fast_one", "fast_two"]);
    }

    #[test]
    fn ignored_tests() {
        let with = |ignored| Selection {
            ignored,
            ..Selection::default()
        };
        let default = with(RunIgnored::Default);
        assert!(
            default.selects(&binary(), &test("slow", true)) && !default.runs(&test("slow", true))
        );
        let only = with(RunIgnored::Only);
        assert!(!only.selects(&binary(), &test("fast", false)));
        assert!(only.runs(&test("slow", true)));
        let all = with(RunIgnored::All);
        assert!(all.selects(&binary(), &test("fast", false)) && all.runs(&test("slow", true)));
    }
}
