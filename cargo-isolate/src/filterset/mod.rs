//! Filtersets (`-E`/`--filterset`): nextest's language for choosing tests,
//! such as `test(/^parse_/) and not package(slow)`.
//!
//! An expression is parsed when the command line is (see [`parse`]), so
//! that a bad one is a usage error before anything is built, and matched
//! against each listed test once the build has said what the workspace
//! holds: its packages, binaries and the dependencies between them.
//!
//! The grammar is nextest's, with its predicates and defaults:
//!
//! | predicate | matches | default matcher |
//! |---|---|---|
//! | `test(M)` | the test's name | contains |
//! | `package(M)` | the package the test's binary is in | glob |
//! | `deps(M)` | tests of the packages matching `M` and of everything they depend on | glob |
//! | `rdeps(M)` | tests of the packages matching `M` and of everything that depends on them | glob |
//! | `kind(M)` | the binary's kind: `lib`, `test`, `bench`, `example`, `bin`, `proc-macro` | equal |
//! | `binary(M)` | the binary's name: its target's | glob |
//! | `binary_id(M)` | the binary's id, as reports name it (`package::target`) | glob |
//! | `platform(host\|target)` | what the binary is built for (proc-macro tests run on the host) | |
//! | `all()`, `none()` | every test, no test | |
//!
//! A matcher `M` is `=exact`, `~contains`, `/regex/` (unanchored), or
//! `#glob` (whole name; `*` crosses `::`), or bare text for the
//! predicate's default. In text, `\)` and `\,` stand for `)` and `,`, and
//! `\n`, `\t`, `\\`, `\/`, `\u{..}` as in Rust; in a regex, `\/` for `/`.
//! `not`/`!` binds tightest, then `and`/`&` and `-` (`a - b` is `a and
//! not b`), then `or`/`|`/`+`; parentheses group.
//!
//! Written here rather than taken from nextest's `nextest-filtering`
//! crate: that crate wants a full `guppy` package graph (a resolved `cargo
//! metadata`, `petgraph`) even to parse an expression, and brings `miette`,
//! `nextest-metadata` and some forty crates more; `deps()` here follows
//! the path dependencies between the workspace's own packages, which is
//! where its tests are. `regex` and `globset` do the matching.

mod parse;

use std::collections::{HashSet, VecDeque};
use std::sync::OnceLock;

use crate::build::{BinaryKind, PackageGraph, TestBinary};

pub(crate) use parse::ParseError;

/// A parsed filterset.
#[derive(Clone, Debug)]
pub(crate) struct Filterset(Expr);

impl Filterset {
    /// Parses `text`, nextest's filterset grammar.
    ///
    /// # Errors
    ///
    /// Where `text` is not a filterset, saying where and why.
    pub(crate) fn parse(text: &str) -> Result<Filterset, ParseError> {
        parse::parse(text).map(Filterset)
    }

    /// Whether test `name` of `binary`, in a workspace shaped as `graph`,
    /// is in the set.
    pub(crate) fn matches(&self, binary: &TestBinary, name: &str, graph: &PackageGraph) -> bool {
        self.0.matches(&Query {
            binary,
            name,
            graph,
        })
    }
}

/// A filterset, or a part of one.
#[derive(Clone, Debug)]
enum Expr {
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Predicate(Predicate),
}

/// What a predicate asks of a test.
#[derive(Clone, Debug)]
enum Predicate {
    All,
    None,
    Test(Matcher),
    Package(Matcher),
    /// The packages it stands for are found the first time it is matched,
    /// once the workspace is known.
    Deps(Matcher, OnceLock<HashSet<String>>),
    Rdeps(Matcher, OnceLock<HashSet<String>>),
    Kind(Matcher),
    Binary(Matcher),
    BinaryId(Matcher),
    Platform(Platform),
}

/// Where a test binary runs: `platform()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Platform {
    Host,
    Target,
}

/// How a predicate matches a name.
#[derive(Clone, Debug)]
enum Matcher {
    Equal(String),
    Contains(String),
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl Matcher {
    fn is_match(&self, text: &str) -> bool {
        match self {
            Matcher::Equal(value) => text == value,
            Matcher::Contains(value) => text.contains(value.as_str()),
            Matcher::Glob(glob) => glob.is_match(text),
            Matcher::Regex(regex) => regex.is_match(text),
        }
    }
}

/// A test, as predicates ask about it.
struct Query<'a> {
    binary: &'a TestBinary,
    name: &'a str,
    graph: &'a PackageGraph,
}

impl Expr {
    fn matches(&self, query: &Query<'_>) -> bool {
        match self {
            Expr::Not(expr) => !expr.matches(query),
            Expr::And(left, right) => left.matches(query) && right.matches(query),
            Expr::Or(left, right) => left.matches(query) || right.matches(query),
            Expr::Predicate(predicate) => predicate.matches(query),
        }
    }
}

impl Predicate {
    fn matches(&self, query: &Query<'_>) -> bool {
        let binary = query.binary;
        match self {
            Predicate::All => true,
            Predicate::None => false,
            Predicate::Test(matcher) => matcher.is_match(query.name),
            Predicate::Package(matcher) => matcher.is_match(&binary.package),
            Predicate::Deps(matcher, packages) => packages
                .get_or_init(|| related(query.graph, matcher, PackageGraph::dependencies))
                .contains(&binary.package),
            Predicate::Rdeps(matcher, packages) => packages
                .get_or_init(|| related(query.graph, matcher, PackageGraph::dependents))
                .contains(&binary.package),
            Predicate::Kind(matcher) => matcher.is_match(binary.kind.as_str()),
            Predicate::Binary(matcher) => matcher.is_match(&binary.target),
            Predicate::BinaryId(matcher) => matcher.is_match(&binary.id),
            Predicate::Platform(platform) => {
                let host = binary.kind == BinaryKind::ProcMacro;
                *platform
                    == if host {
                        Platform::Host
                    } else {
                        Platform::Target
                    }
            }
        }
    }
}

/// The packages whose names `matcher` matches, and every package `next`
/// leads to from them, however far.
fn related(
    graph: &PackageGraph,
    matcher: &Matcher,
    next: impl Fn(&PackageGraph, &str) -> Vec<String>,
) -> HashSet<String> {
    let mut found: HashSet<String> = graph
        .packages()
        .filter(|package| matcher.is_match(package))
        .map(str::to_owned)
        .collect();
    let mut queue: VecDeque<String> = found.iter().cloned().collect();
    while let Some(package) = queue.pop_front() {
        for other in next(graph, &package) {
            if found.insert(other.clone()) {
                queue.push_back(other);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(package: &str, target: &str, kind: BinaryKind) -> TestBinary {
        TestBinary::for_tests(package, target, kind)
    }

    /// `app` depends on `core`, which depends on `base`; `tool` stands
    /// alone.
    fn graph() -> PackageGraph {
        PackageGraph::from_dependencies([
            ("app", vec!["core"]),
            ("core", vec!["base"]),
            ("base", vec![]),
            ("tool", vec![]),
        ])
    }

    /// Whether `expression` selects test `name` of `binary`.
    fn selects(expression: &str, binary: &TestBinary, name: &str) -> bool {
        Filterset::parse(expression)
            .unwrap_or_else(|error| panic!("{expression}: {error}"))
            .matches(binary, name, &graph())
    }

    #[test]
    fn predicates_ask_about_the_test_its_binary_and_its_package() {
        let lib = binary("core", "core", BinaryKind::Lib);
        let suite = binary("app", "api_suite", BinaryKind::Test);
        let example = binary("tool", "demo", BinaryKind::Example);
        let derive = binary("base", "base_derive", BinaryKind::ProcMacro);
        for (expression, binary, name, expected) in [
            ("test(parse)", &lib, "tests::parse_one", true),
            ("test(=parse)", &lib, "tests::parse_one", false),
            ("test(=tests::parse_one)", &lib, "tests::parse_one", true),
            ("test(/^tests::parse_/)", &lib, "tests::parse_one", true),
            ("test(/^parse_/)", &lib, "tests::parse_one", false),
            ("test(#*parse_*)", &lib, "tests::parse_one", true),
            ("test(#parse_*)", &lib, "tests::parse_one", false),
            ("package(co*)", &lib, "x", true),
            ("package(~or)", &lib, "x", true),
            ("package(cor)", &lib, "x", false),
            ("kind(lib)", &lib, "x", true),
            ("kind(test)", &suite, "x", true),
            ("kind(te)", &suite, "x", false),
            ("kind(example)", &example, "x", true),
            ("kind(proc-macro)", &derive, "x", true),
            ("binary(api_*)", &suite, "x", true),
            ("binary(app)", &suite, "x", false),
            ("binary_id(app::api_suite)", &suite, "x", true),
            ("binary_id(tool::example/*)", &example, "x", true),
            ("platform(host)", &derive, "x", true),
            ("platform(target)", &derive, "x", false),
            ("platform(target)", &suite, "x", true),
            ("all()", &lib, "x", true),
            ("none()", &lib, "x", false),
        ] {
            assert_eq!(
                selects(expression, binary, name),
                expected,
                "{expression} on {} {name}",
                binary.id
            );
        }
    }

    #[test]
    fn deps_and_rdeps_follow_the_workspace_s_dependencies() {
        let in_package = |package: &str| binary(package, package, BinaryKind::Lib);
        let set = |expression: &str| -> Vec<&str> {
            ["app", "base", "core", "tool"]
                .into_iter()
                .filter(|package| selects(expression, &in_package(package), "t"))
                .collect()
        };
        assert_eq!(set("deps(app)"), ["app", "base", "core"]);
        assert_eq!(set("deps(core)"), ["base", "core"]);
        assert_eq!(set("rdeps(base)"), ["app", "base", "core"]);
        assert_eq!(set("rdeps(core) - package(core)"), ["app"]);
        assert_eq!(set("rdeps(tool) | deps(=base)"), ["base", "tool"]);
        assert_eq!(set("deps(nothing)"), Vec::<&str>::new());
    }

    #[test]
    fn operators_combine_predicates() {
        let lib = binary("core", "core", BinaryKind::Lib);
        for (expression, expected) in [
            ("test(parse) and not package(slow)", true),
            ("test(parse) & !package(core)", false),
            ("test(parse) - kind(lib)", false),
            ("test(nope) or kind(lib)", true),
            ("test(nope) | test(also_nope) + package(core)", true),
            ("not (test(parse) and kind(lib))", false),
            ("not test(nope) and kind(lib)", true),
        ] {
            assert_eq!(
                selects(expression, &lib, "parse_one"),
                expected,
                "{expression}"
            );
        }
    }
}
