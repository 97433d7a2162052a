//! The filterset parser: recursive descent over the text, one function per
//! level of precedence, and errors that point at where the text went
//! wrong.

use std::ops::Range;
use std::sync::OnceLock;

use super::{Expr, Matcher, Platform, Predicate};

/// Why a text is not a filterset, and where.
#[derive(Debug, thiserror::Error)]
#[error("{kind}\n{}{}", self.pointer(), self.detail())]
pub(crate) struct ParseError {
    text: String,
    /// The bytes of `text` the error is about; empty at its end.
    span: Range<usize>,
    kind: ErrorKind,
}

/// What is wrong with a filterset.
#[derive(Debug, thiserror::Error)]
enum ErrorKind {
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error(
        "unknown predicate `{0}`: expected test, package, deps, rdeps, kind, binary, binary_id, \
         platform, all or none"
    )]
    UnknownPredicate(String),
    #[error("`{found}` is not an operator: write `{instead}`")]
    Operator {
        found: &'static str,
        instead: &'static str,
    },
    #[error("unmatched `)`")]
    Unmatched,
    #[error("`{0}()` takes no argument")]
    NoArgument(&'static str),
    #[error("a predicate takes one argument (a comma in a name is written `\\,`)")]
    Comma,
    #[error(
        "invalid escape `{0}`: `\\)`, `\\,`, `\\/`, `\\\\`, `\\n`, `\\r`, `\\t`, `\\u{{..}}` are"
    )]
    Escape(String),
    /// The regex's own error, with a pointer into the regex, comes after
    /// the pointer into the filterset.
    #[error("invalid regex")]
    Regex(regex::Error),
    #[error("invalid glob: {0}")]
    Glob(globset::Error),
}

impl ParseError {
    /// The text, with a caret under the span, each line indented.
    fn pointer(&self) -> String {
        // Line breaks and tabs are shown as spaces, so that the text is one
        // line and the caret stands under what it points at.
        let line: String = self
            .text
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        let column = self.text[..self.span.start].chars().count();
        let width = self.text[self.span.clone()].chars().count().max(1);
        format!(
            "    {line}\n    {}{}",
            " ".repeat(column),
            "^".repeat(width)
        )
    }

    /// More on the error, after the pointer.
    fn detail(&self) -> String {
        match &self.kind {
            ErrorKind::Regex(error) => format!("\n{error}"),
            _ => String::new(),
        }
    }
}

/// Parses `text` as a filterset.
pub(super) fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser { text, at: 0 };
    let expr = parser.or_expr()?;
    parser.skip_space();
    if parser.at < text.len() {
        if parser.rest().starts_with(')') {
            return Err(parser.error(parser.at..parser.at + 1, ErrorKind::Unmatched));
        }
        return Err(parser.expected("`and`, `or` or the end of the expression"));
    }
    Ok(expr)
}

/// The default matcher of a predicate, for a bare argument.
#[derive(Clone, Copy)]
enum MatchKind {
    Equal,
    Contains,
    Glob,
}

struct Parser<'a> {
    text: &'a str,
    /// The byte the parser is at.
    at: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Takes `token` if the text goes on with it; a word only where no
    /// identifier character follows (`notall()` is not `not all()`).
    fn eat(&mut self, token: &str) -> bool {
        let rest = self.rest();
        let Some(after) = rest.strip_prefix(token) else {
            return false;
        };
        let word = token.chars().all(|c| c.is_ascii_alphabetic());
        if word && after.starts_with(is_identifier_char) {
            return false;
        }
        self.at += token.len();
        true
    }

    /// Fails where operator `found`, which is no operator, is next.
    fn refuse(&mut self, found: &'static str, instead: &'static str) -> Result<(), ParseError> {
        let start = self.at;
        if self.eat(found) {
            return Err(self.error(start..self.at, ErrorKind::Operator { found, instead }));
        }
        Ok(())
    }

    fn error(&self, span: Range<usize>, kind: ErrorKind) -> ParseError {
        ParseError {
            text: self.text.to_owned(),
            span,
            kind,
        }
    }

    /// An error for `expected` at the parser's place, naming what is there.
    fn expected(&self, expected: &'static str) -> ParseError {
        let rest = self.rest();
        let length = match rest.chars().next() {
            None => 0,
            Some(c) if is_identifier_char(c) => rest
                .find(|c: char| !is_identifier_char(c))
                .unwrap_or(rest.len()),
            Some(c) => c.len_utf8(),
        };
        let found = if length == 0 {
            "the end".to_owned()
        } else {
            format!("`{}`", &rest[..length])
        };
        self.error(
            self.at..self.at + length,
            ErrorKind::Expected { expected, found },
        )
    }

    /// `or`, `|`, `+`: the loosest binding.
    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and_expr()?;
        loop {
            self.skip_space();
            self.refuse("||", "or` or `|")?;
            self.refuse("OR", "or")?;
            if !(self.eat("or") || self.eat("|") || self.eat("+")) {
                return Ok(left);
            }
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
    }

    /// `and`, `&`, and `-` (difference).
    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            self.skip_space();
            self.refuse("&&", "and` or `&")?;
            self.refuse("AND", "and")?;
            let difference = if self.eat("and") || self.eat("&") {
                false
            } else if self.eat("-") {
                true
            } else {
                return Ok(left);
            };
            let mut right = self.unary()?;
            if difference {
                right = Expr::Not(Box::new(right));
            }
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    /// `not`, `!`: the tightest binding.
    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        self.refuse("NOT", "not")?;
        if self.eat("not") || self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    /// A parenthesized expression or a predicate.
    fn primary(&mut self) -> Result<Expr, ParseError> {
        let open = self.at;
        if self.eat("(") {
            let expr = self.or_expr()?;
            self.skip_space();
            if !self.eat(")") {
                return Err(self.unclosed(open, "`)` to close this `(`"));
            }
            return Ok(expr);
        }
        let name_length = self
            .rest()
            .find(|c: char| !is_identifier_char(c))
            .unwrap_or(self.rest().len());
        let name = &self.rest()[..name_length];
        if name.is_empty() || ["and", "or", "not"].contains(&name) {
            return Err(self.expected("an expression"));
        }
        let name_span = self.at..self.at + name_length;
        let default = match name {
            "test" => MatchKind::Contains,
            "kind" => MatchKind::Equal,
            "package" | "deps" | "rdeps" | "binary" | "binary_id" => MatchKind::Glob,
            "all" | "none" | "platform" => MatchKind::Equal,
            _ => {
                return Err(self.error(name_span, ErrorKind::UnknownPredicate(name.to_owned())));
            }
        };
        self.at += name_length;
        self.skip_space();
        let open = self.at;
        if !self.eat("(") {
            return Err(self.expected("`(` after the predicate's name"));
        }
        let predicate = match name {
            "all" | "none" => {
                self.skip_space();
                if !self.rest().starts_with(')') {
                    let end = self
                        .rest()
                        .find(')')
                        .map_or(self.text.len(), |end| self.at + end);
                    let name = if name == "all" { "all" } else { "none" };
                    return Err(self.error(self.at..end, ErrorKind::NoArgument(name)));
                }
                if name == "all" {
                    Predicate::All
                } else {
                    Predicate::None
                }
            }
            "platform" => {
                self.skip_space();
                let start = self.at;
                match self.text()?.trim() {
                    "host" => Predicate::Platform(Platform::Host),
                    "target" => Predicate::Platform(Platform::Target),
                    other => {
                        return Err(self.error(
                            start..self.at,
                            ErrorKind::Expected {
                                expected: "`host` or `target`",
                                found: format!("`{other}`"),
                            },
                        ));
                    }
                }
            }
            _ => {
                let matcher = self.matcher(default)?;
                match name {
                    "test" => Predicate::Test(matcher),
                    "package" => Predicate::Package(matcher),
                    "deps" => Predicate::Deps(matcher, OnceLock::new()),
                    "rdeps" => Predicate::Rdeps(matcher, OnceLock::new()),
                    "kind" => Predicate::Kind(matcher),
                    "binary" => Predicate::Binary(matcher),
                    _ => Predicate::BinaryId(matcher),
                }
            }
        };
        self.skip_space();
        if self.rest().starts_with(',') {
            return Err(self.error(self.at..self.at + 1, ErrorKind::Comma));
        }
        if !self.eat(")") {
            return Err(self.unclosed(open, "`)` to close the predicate"));
        }
        Ok(Expr::Predicate(predicate))
    }

    /// An error for a `(` at `open` that is not closed where the parser
    /// is: at the end of the text, it points at the `(`.
    fn unclosed(&self, open: usize, expected: &'static str) -> ParseError {
        let mut error = self.expected(expected);
        if self.at == self.text.len() {
            error.span = open..open + 1;
        }
        error
    }

    /// A predicate's argument: a matcher, or text for `default`.
    fn matcher(&mut self, default: MatchKind) -> Result<Matcher, ParseError> {
        self.skip_space();
        let start = self.at;
        let kind = if self.eat("=") {
            MatchKind::Equal
        } else if self.eat("~") {
            MatchKind::Contains
        } else if self.eat("#") {
            MatchKind::Glob
        } else if self.eat("/") {
            let pattern = self.regex(start)?;
            return regex::Regex::new(&pattern)
                .map(Matcher::Regex)
                .map_err(|error| self.error(start..self.at, ErrorKind::Regex(error)));
        } else {
            default
        };
        let text = self.text()?;
        Ok(match kind {
            MatchKind::Equal => Matcher::Equal(text),
            MatchKind::Contains => Matcher::Contains(text),
            MatchKind::Glob => globset::GlobBuilder::new(&text)
                // As nextest: `\` is not an escape (`[*]` is), and
                // `{a,}` matches `a` and nothing.
                .backslash_escape(false)
                .empty_alternates(true)
                .build()
                .map(|glob| Matcher::Glob(glob.compile_matcher()))
                .map_err(|error| self.error(start..self.at, ErrorKind::Glob(error)))?,
        })
    }

    /// The text of an argument, up to an unescaped `)` or `,`, escapes
    /// replaced; never empty.
    fn text(&mut self) -> Result<String, ParseError> {
        let mut text = String::new();
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { break };
            if c == ')' || c == ',' {
                break;
            }
            if c != '\\' {
                text.push(c);
                self.at += c.len_utf8();
                continue;
            }
            let (escaped, length) = unescape(&rest[1..]).ok_or_else(|| {
                let length = 1 + rest[1..].chars().next().map_or(0, char::len_utf8);
                self.error(
                    self.at..self.at + length,
                    ErrorKind::Escape(rest[..length].to_owned()),
                )
            })?;
            text.push(escaped);
            self.at += 1 + length;
        }
        if text.is_empty() {
            return Err(self.expected("a name to match"));
        }
        Ok(text)
    }

    /// A regex after its opening `/` at `open`, up to the closing one
    /// (`\/` stands for `/`, other escapes are the regex's).
    fn regex(&mut self, open: usize) -> Result<String, ParseError> {
        let mut pattern = String::new();
        loop {
            let rest = self.rest();
            let mut chars = rest.chars();
            match chars.next() {
                None => {
                    return Err(self.error(
                        open..self.at,
                        ErrorKind::Expected {
                            expected: "a `/` to end the regex",
                            found: "the end".to_owned(),
                        },
                    ));
                }
                Some('/') => {
                    self.at += 1;
                    return Ok(pattern);
                }
                Some('\\') if chars.next() == Some('/') => {
                    pattern.push('/');
                    self.at += 2;
                }
                Some(c) => {
                    pattern.push(c);
                    self.at += c.len_utf8();
                }
            }
        }
    }
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The character an escape stands for, given what follows its `\`, and
/// how many bytes of that it takes.
fn unescape(after: &str) -> Option<(char, usize)> {
    let c = after.chars().next()?;
    let simple = match c {
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        '\\' | '/' | ')' | ',' => Some(c),
        _ => None,
    };
    if let Some(simple) = simple {
        return Some((simple, 1));
    }
    let hex = after.strip_prefix("u{")?;
    let end = hex.find('}')?;
    let code = u32::from_str_radix(&hex[..end], 16).ok()?;
    Some((char::from_u32(code)?, 2 + end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An expression with every operation in parentheses and every
    /// matcher explicit: how the parser read it.
    fn show(expr: &Expr) -> String {
        match expr {
            Expr::Not(expr) => format!("not {}", show(expr)),
            Expr::And(left, right) => format!("({} and {})", show(left), show(right)),
            Expr::Or(left, right) => format!("({} or {})", show(left), show(right)),
            Expr::Predicate(predicate) => {
                let (name, matcher) = match predicate {
                    Predicate::All => return "all()".to_owned(),
                    Predicate::None => return "none()".to_owned(),
                    Predicate::Platform(platform) => {
                        return format!("platform({platform:?})");
                    }
                    Predicate::Test(matcher) => ("test", matcher),
                    Predicate::Package(matcher) => ("package", matcher),
                    Predicate::Deps(matcher, _) => ("deps", matcher),
                    Predicate::Rdeps(matcher, _) => ("rdeps", matcher),
                    Predicate::Kind(matcher) => ("kind", matcher),
                    Predicate::Binary(matcher) => ("binary", matcher),
                    Predicate::BinaryId(matcher) => ("binary_id", matcher),
                };
                let matcher = match matcher {
                    Matcher::Equal(value) => format!("={value}"),
                    Matcher::Contains(value) => format!("~{value}"),
                    Matcher::Glob(glob) => format!("#{}", glob.glob()),
                    Matcher::Regex(regex) => format!("/{regex}/"),
                };
                format!("{name}({matcher})")
            }
        }
    }

    fn read(text: &str) -> String {
        show(&parse(text).unwrap_or_else(|error| panic!("{text}: {error}")))
    }

    #[test]
    fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
        for (text, read_as) in [
            ("test(a)", "test(~a)"),
            (
                "test(a) or test(b) and test(c)",
                "(test(~a) or (test(~b) and test(~c)))",
            ),
            (
                "test(a) and test(b) or test(c)",
                "((test(~a) and test(~b)) or test(~c))",
            ),
            ("not test(a) and test(b)", "(not test(~a) and test(~b))"),
            ("not (test(a) and test(b))", "not (test(~a) and test(~b))"),
            ("!!test(a)", "not not test(~a)"),
            (
                "test(a) - test(b) - test(c)",
                "((test(~a) and not test(~b)) and not test(~c))",
            ),
            (
                "test(a) | test(b) + test(c)",
                "((test(~a) or test(~b)) or test(~c))",
            ),
            (
                "test(a) & (test(b) | test(c))",
                "(test(~a) and (test(~b) or test(~c)))",
            ),
            ("test(a)-test(b)", "(test(~a) and not test(~b))"),
            (
                "  test( a)\n  and\tnot package(slow)  ",
                "(test(~a) and not package(#slow))",
            ),
            ("not(test(a))", "not test(~a)"),
        ] {
            assert_eq!(read(text), read_as, "{text}");
        }
    }

    #[test]
    fn each_predicate_has_nextest_s_default_matcher() {
        for (text, read_as) in [
            ("test(x)", "test(~x)"),
            ("package(x)", "package(#x)"),
            ("deps(x)", "deps(#x)"),
            ("rdeps(x)", "rdeps(#x)"),
            ("kind(lib)", "kind(=lib)"),
            ("binary(x)", "binary(#x)"),
            ("binary_id(p::t)", "binary_id(#p::t)"),
            ("platform(host)", "platform(Host)"),
            ("platform( target)", "platform(Target)"),
            ("all()", "all()"),
            ("none( )", "none()"),
            ("test(=x)", "test(=x)"),
            ("package(~x)", "package(~x)"),
            ("test(#x*)", "test(#x*)"),
            ("test(/^x$/)", "test(/^x$/)"),
            ("test( /a\\/b/ )", "test(/a/b/)"),
            ("test(a\\)b\\,c\\\\d\\u{e9})", "test(~a)b,c\\dé)"),
            ("test(trailing )", "test(~trailing )"),
        ] {
            assert_eq!(read(text), read_as, "{text}");
        }
    }

    /// The message and the pointer of the error parsing `text` gives.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(expr) => panic!("{text} parsed as {}", show(&expr)),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_point_at_it() {
        for (text, message) in [
            ("", "expected an expression, found the end\n    \n    ^"),
            (
                "test(a) and",
                "expected an expression, found the end\n    test(a) and\n               ^",
            ),
            (
                "and test(a)",
                "expected an expression, found `and`\n    and test(a)\n    ^^^",
            ),
            (
                "test(a",
                "expected `)` to close the predicate, found the end\n    test(a\n        ^",
            ),
            (
                "(test(a) or test(b)",
                "expected `)` to close this `(`, found the end\n    (test(a) or test(b)\n    ^",
            ),
            ("test(a))", "unmatched `)`\n    test(a))\n           ^"),
            (
                "test(a) test(b)",
                "expected `and`, `or` or the end of the expression, found `test`\n    test(a) test(b)\n            ^^^^",
            ),
            (
                "tset(a)",
                "unknown predicate `tset`: expected test, package, deps, rdeps, kind, binary, \
                 binary_id, platform, all or none\n    tset(a)\n    ^^^^",
            ),
            (
                "test a",
                "expected `(` after the predicate's name, found `a`\n    test a\n         ^",
            ),
            (
                "test()",
                "expected a name to match, found `)`\n    test()\n         ^",
            ),
            (
                "test(a) && test(b)",
                "`&&` is not an operator: write `and` or `&`\n    test(a) && test(b)\n            ^^",
            ),
            (
                "test(a) || test(b)",
                "`||` is not an operator: write `or` or `|`\n    test(a) || test(b)\n            ^^",
            ),
            (
                "NOT test(a)",
                "`NOT` is not an operator: write `not`\n    NOT test(a)\n    ^^^",
            ),
            (
                "test(a, b)",
                "a predicate takes one argument (a comma in a name is written `\\,`)\n    test(a, b)\n          ^",
            ),
            ("all(x)", "`all()` takes no argument\n    all(x)\n        ^"),
            (
                "platform(moon)",
                "expected `host` or `target`, found `moon`\n    platform(moon)\n             ^^^^",
            ),
            (
                "test(a\\qb)",
                "invalid escape `\\q`: `\\)`, `\\,`, `\\/`, `\\\\`, `\\n`, `\\r`, `\\t`, `\\u{..}` \
                 are\n    test(a\\qb)\n          ^^",
            ),
            (
                "test(/abc)",
                "expected a `/` to end the regex, found the end\n    test(/abc)\n         ^^^^^",
            ),
        ] {
            assert_eq!(error(text), message, "{text}");
        }
    }

    #[test]
    fn a_bad_regex_or_glob_is_pointed_at_with_the_reason() {
        let regex = error("test(/(/) or test(x)");
        assert!(
            regex.starts_with(
                "invalid regex\n    test(/(/) or test(x)\n         ^^^\nregex parse error:"
            ),
            "{regex}"
        );
        assert!(regex.ends_with("unclosed group"), "{regex}");
        let glob = error("package(#a[)");
        assert!(glob.starts_with("invalid glob: "), "{glob}");
        assert!(
            glob.ends_with("    package(#a[)\n            ^^^"),
            "{glob}"
        );
    }

    #[test]
    fn keywords_end_at_word_boundaries() {
        assert_eq!(
            error("notall()"),
            "unknown predicate `notall`: expected test, package, deps, rdeps, kind, binary, \
             binary_id, platform, all or none\n    notall()\n    ^^^^^^"
        );
        assert_eq!(read("not all()"), "not all()");
        assert_eq!(read("test(a)or test(b)"), "(test(~a) or test(~b))");
    }
}
