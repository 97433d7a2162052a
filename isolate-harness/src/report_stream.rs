//! The report stream: the JSON lines an isolate-harness binary writes for
//! the runner that started it (such as `cargo isolate`), and the handshake
//! by which a runner learns that a binary speaks it. Both directions live
//! here, so that the harness's writer and a runner's reader cannot drift
//! apart.
//!
//! A runner and a harness binary may be built against different versions of
//! this crate, so:
//!
//! - every line carries its [`VERSION`], and a runner learns the binary's
//!   version before running it, from the [handshake](handshake_answer);
//! - the reader is bounded and lenient: a line longer than its limit
//!   ([`MAX_LINE`] by default) is skipped without being kept, a line that is
//!   not a report event is skipped and said to be ([`Skipped`]), and an
//!   event or outcome kind of a later version reads as [`Line::Other`] or
//!   [`Outcome::Other`];
//! - the writer keeps free text (messages, panics, backtraces) as its head
//!   and tail, [`KEPT_TEXT`] bytes of each, so a test that panics with 50 MB
//!   of text costs a line of a few kilobytes.
//!
//! The format itself is described in the [crate docs](crate#the-report-stream).
//!
//! What this does not do: choose the descriptor, or decide what a runner
//! makes of a test the stream never reports (it must fail it: only a
//! `finished` line says that a test passed).

use std::borrow::Cow;
use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

use crate::child::Termination;
use crate::fork_server::{Ending, TestRun};

/// The version of the stream's lines, in each line's `version`.
pub const VERSION: u32 = 1;

/// The environment variable that names the descriptor a harness writes
/// the stream to.
pub const REPORT_FD_VAR: &str = "ISOLATE_REPORT_FD";

/// The environment variable a runner sets, to a nonce, when it lists a
/// binary's tests (`--list`): a harness binary answers with
/// [`handshake_answer`] on its stderr.
pub const HANDSHAKE_VAR: &str = "ISOLATE_HANDSHAKE";

/// The longest line [`LineReader::new`] keeps, in bytes, newline excluded.
/// A writer's line is far shorter: its free text is cut to [`KEPT_TEXT`].
pub const MAX_LINE: usize = 1024 * 1024;

/// Bytes of each free-text field the writer keeps from its start, and as
/// many from its end ([`head_and_tail`]).
pub const KEPT_TEXT: usize = 8 * 1024;

/// The words an answer to the handshake starts with, in every version.
const HANDSHAKE_PREFIX: &str = "isolate-harness report stream v";

/// The line an isolate-harness binary writes to its stderr when it is asked
/// for `--list` with [`HANDSHAKE_VAR`] set to `nonce`:
/// `isolate-harness report stream v1: NONCE`. Its form stays the same in
/// every version, so that a runner can tell which version a binary speaks.
///
/// A nonce no binary can know in advance makes the handshake one that no
/// other binary answers by accident, as a binary that merely contains these
/// words (or prints them) would.
pub fn handshake_answer(nonce: &str) -> String {
    format!("{HANDSHAKE_PREFIX}{VERSION}: {nonce}")
}

/// The version of the report stream a binary speaks, if `stderr`, what it
/// wrote when listed with [`HANDSHAKE_VAR`] set to `nonce`, holds its
/// [answer](handshake_answer). `None` for a binary that does not speak the
/// stream, such as a libtest one.
pub fn handshake_version(stderr: &str, nonce: &str) -> Option<u32> {
    stderr.lines().find_map(|line| {
        let (version, answered) = line.strip_prefix(HANDSHAKE_PREFIX)?.split_once(": ")?;
        if answered == nonce {
            version.parse().ok()
        } else {
            None
        }
    })
}

/// Answers the handshake, if the runner that asked for `--list` set
/// [`HANDSHAKE_VAR`].
pub(crate) fn answer_handshake() {
    if let Some(nonce) = std::env::var_os(HANDSHAKE_VAR) {
        eprintln!("{}", handshake_answer(&nonce.to_string_lossy()));
    }
}

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Line<'a> {
    /// A test was handed to a fork server.
    Started(#[serde(borrow)] Started<'a>),
    /// A test ended.
    Finished(#[serde(borrow)] Finished<'a>),
    /// An event of a later version: never written, only read.
    #[serde(other)]
    Other,
}

impl Line<'_> {
    /// The line's version, if it has one (every event of this version
    /// does).
    pub fn version(&self) -> Option<u32> {
        match self {
            Line::Started(started) => Some(started.version),
            Line::Finished(finished) => Some(finished.version),
            Line::Other => None,
        }
    }
}

/// The line of a test that starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Started<'a> {
    /// [`VERSION`].
    pub version: u32,
    /// The test's name, as libtest names it.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

impl<'a> Started<'a> {
    /// The line of test `name`, which starts.
    pub(crate) fn new(name: &'a str) -> Started<'a> {
        Started {
            version: VERSION,
            name: Cow::Borrowed(name),
        }
    }
}

/// The line of a test that ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finished<'a> {
    /// [`VERSION`].
    pub version: u32,
    /// The test's name, as libtest names it.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The verdict, after the test's expectations (`should_panic`,
    /// `expect_signal`, `expect_exit`).
    pub passed: bool,
    /// How the test's process ended.
    #[serde(borrow)]
    pub outcome: Outcome<'a>,
    /// The failure message shown to people, when it failed.
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
    /// How long it ran, in milliseconds.
    #[serde(default)]
    pub duration_ms: f64,
    /// What it wrote to stdout (head and tail).
    #[serde(borrow, default)]
    pub stdout: Cow<'a, str>,
    /// What it wrote to stderr (head and tail).
    #[serde(borrow, default)]
    pub stderr: Cow<'a, str>,
    /// Processes it left running, killed when it ended.
    #[serde(borrow, default)]
    pub leftovers: Vec<Leftover<'a>>,
}

impl<'a> Finished<'a> {
    /// The line of test `name`, which ended with `run` and was weighed as
    /// `verdict` (`Err` holds the failure message). Free text is cut to
    /// its head and tail; nothing else is copied.
    pub(crate) fn new(
        name: &'a str,
        run: &'a TestRun,
        verdict: &'a Result<(), String>,
    ) -> Finished<'a> {
        Finished {
            version: VERSION,
            name: Cow::Borrowed(name),
            passed: verdict.is_ok(),
            outcome: Outcome::of(&run.ending),
            message: verdict
                .as_ref()
                .err()
                .map(|message| head_and_tail(message, KEPT_TEXT)),
            duration_ms: run.duration.as_secs_f64() * 1000.0,
            // Captured output is kept as head and tail already.
            stdout: Cow::Owned(run.stdout.to_text()),
            stderr: Cow::Owned(run.stderr.to_text()),
            leftovers: run
                .leftovers
                .iter()
                .map(|leftover| Leftover {
                    pid: leftover.pid,
                    command: Cow::Borrowed(&leftover.command),
                })
                .collect(),
        }
    }
}

/// A process a test left running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Leftover<'a> {
    /// Its process id.
    pub pid: u32,
    /// Its command name.
    #[serde(borrow)]
    pub command: Cow<'a, str>,
}

/// How a test's process ended, by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// The test function returned.
    Returned {
        /// The error's debug text, when it returned `Err`.
        #[serde(borrow, default)]
        error: Option<Cow<'a, str>>,
    },
    /// It panicked.
    Panicked {
        /// The panic message.
        #[serde(borrow)]
        message: Cow<'a, str>,
        /// `file:line:column` of the panic, when known.
        #[serde(borrow, default)]
        location: Option<Cow<'a, str>>,
        /// The backtrace from the panic site, when one was asked for.
        #[serde(borrow, default)]
        backtrace: Option<Cow<'a, str>>,
    },
    /// A signal killed its process.
    Signaled {
        /// The signal's number.
        signal: i32,
        /// The signal's name, such as `SIGSEGV`.
        #[serde(borrow, default)]
        signal_name: Option<Cow<'a, str>>,
        /// The death, for people: `killed by signal 11 (SIGSEGV: invalid
        /// memory reference) at address 0x0`.
        #[serde(borrow, default)]
        description: Cow<'a, str>,
        /// Whether the kernel wrote a core dump.
        #[serde(default)]
        core_dumped: bool,
        /// The faulting address, for the signals that have one.
        #[serde(default)]
        fault_address: Option<usize>,
        /// Whether the fault was a stack overflow.
        #[serde(default)]
        stack_overflow: bool,
        /// The functions of the crash site, innermost first, when the crash
        /// handler got to run.
        ///
        /// Every frame is kept, a recursion's long run of one function
        /// included: each entry is a function's name for a program to read,
        /// which a line such as `… 117 more frames` in its place would not
        /// be, and the crash handler sends 128 frames at most, so the line
        /// stays small. The failure `message` is what people read, and it
        /// shows the backtrace with such runs collapsed.
        #[serde(borrow, default)]
        backtrace: Option<Vec<Cow<'a, str>>>,
    },
    /// Its process exited with a code before the test finished.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// It ran past its timeout and was killed.
    TimedOut {
        /// The timeout, in milliseconds.
        limit_ms: u64,
        /// The time it had between SIGTERM and SIGKILL, in milliseconds.
        #[serde(default)]
        grace_ms: u64,
        /// The signal that ended it.
        #[serde(borrow, default)]
        signal_name: Option<Cow<'a, str>>,
    },
    /// An allocation failed: out of memory, or over its memory limit.
    OutOfMemory {
        /// The death, for people.
        #[serde(borrow, default)]
        description: Cow<'a, str>,
    },
    /// The machinery failed: the test could not be run, or its end could
    /// not be learnt.
    Broken {
        /// What failed.
        #[serde(borrow, default)]
        reason: Cow<'a, str>,
    },
    /// A kind of a later version: never written, only read.
    #[serde(other)]
    Other,
}

impl Outcome<'_> {
    fn of(ending: &Ending) -> Outcome<'_> {
        match ending {
            Ending::Returned(result) => Outcome::Returned {
                error: result
                    .as_ref()
                    .err()
                    .map(|error| head_and_tail(error, KEPT_TEXT)),
            },
            Ending::Panicked(report) => Outcome::Panicked {
                message: head_and_tail(&report.message, KEPT_TEXT),
                location: report.location.as_deref().map(Cow::Borrowed),
                backtrace: report.backtrace.as_ref().map(|backtrace| {
                    Cow::Owned(head_and_tail(&backtrace.to_string(), KEPT_TEXT).into_owned())
                }),
            },
            Ending::Died(termination) => Outcome::of_death(termination),
            Ending::TimedOut {
                limit,
                grace_period,
                termination,
            } => Outcome::TimedOut {
                limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                grace_ms: u64::try_from(grace_period.as_millis()).unwrap_or(u64::MAX),
                signal_name: termination.signal().map(|signal| Cow::Owned(signal.name())),
            },
            Ending::Broken(reason) => Outcome::Broken {
                reason: head_and_tail(reason, KEPT_TEXT),
            },
        }
    }

    fn of_death(termination: &Termination) -> Outcome<'_> {
        let (signal, core_dumped, crash) = match termination {
            Termination::Exited { code } => return Outcome::Exited { code: *code },
            Termination::Signaled {
                signal,
                core_dumped,
                crash,
            } => (signal, *core_dumped, crash.as_deref()),
        };
        if crash.is_some_and(crate::crash::Crash::is_allocation_failure) {
            return Outcome::OutOfMemory {
                description: Cow::Owned(termination.to_string()),
            };
        }
        Outcome::Signaled {
            signal: signal.number(),
            signal_name: Some(Cow::Owned(signal.name())),
            description: Cow::Owned(termination.to_string()),
            core_dumped,
            fault_address: crash.and_then(|crash| crash.fault_address),
            stack_overflow: crash.is_some_and(|crash| crash.stack_overflow),
            backtrace: crash.map(|crash| {
                crash
                    .backtrace
                    .frames
                    .iter()
                    .filter_map(|frame| frame.function.as_deref().map(Cow::Borrowed))
                    .collect()
            }),
        }
    }
}

/// `text` cut to its first and last `kept` bytes (at character
/// boundaries), with a line between them that says how many bytes were
/// left out; `text` itself when it is no longer than twice `kept`.
pub fn head_and_tail(text: &str, kept: usize) -> Cow<'_, str> {
    if text.len() <= kept.saturating_mul(2) {
        return Cow::Borrowed(text);
    }
    let mut head = kept;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - kept;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    Cow::Owned(join_head_and_tail(
        &text[..head],
        (tail - head) as u64,
        &text[tail..],
    ))
}

/// A head and a tail joined by the line that says how many bytes between
/// them were left out: how every report shows what it kept of a long
/// text.
pub fn join_head_and_tail(head: &str, omitted: u64, tail: &str) -> String {
    format!("{head}\n[... {omitted} bytes omitted ...]\n{tail}")
}

/// Why [`LineReader`] skipped a line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Skipped {
    /// The line was longer than the reader's limit; it was read to its
    /// newline and dropped, never held whole.
    #[error("a line of {length} bytes, over the limit of {limit}")]
    TooLong {
        /// Its length in bytes, newline excluded.
        length: u64,
        /// The reader's limit.
        limit: usize,
    },
    /// The line was not UTF-8.
    #[error("a line that is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The line was not the JSON of a report event.
    #[error("a line that is not a report event")]
    NotAnEvent(#[source] serde_json::Error),
    /// The line was an event of another version.
    #[error("an event of version {version}, where {VERSION} was expected")]
    OtherVersion {
        /// The line's version.
        version: u32,
    },
}

/// What [`LineReader::next_line`] read.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one lives for one line, matched at once: a box would cost an allocation a line"
)]
pub enum Received<'a> {
    /// A line, parsed; its strings borrow from the reader where they can.
    Line(Line<'a>),
    /// A line that was skipped, and why.
    Skipped(Skipped),
}

/// Reads the stream a line at a time, holding at most its limit of one
/// line in memory (besides `source`'s own buffer), whatever it is fed.
///
/// A last line without a newline (the harness died while writing) is read
/// as a line. What this does not do: time out; the stream ends when every
/// process holding its write end has closed it.
#[derive(Debug)]
pub struct LineReader<R> {
    source: R,
    limit: usize,
    /// The line being read, or the last line read.
    line: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    /// A reader of `source` that skips lines longer than [`MAX_LINE`].
    pub fn new(source: R) -> LineReader<R> {
        LineReader::with_limit(source, MAX_LINE)
    }

    /// A reader of `source` that skips lines longer than `limit` bytes.
    pub fn with_limit(source: R, limit: usize) -> LineReader<R> {
        LineReader {
            source,
            limit,
            line: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of the stream.
    ///
    /// # Errors
    ///
    /// When reading `source` fails (other than by an interruption, which is
    /// retried). A line the reader cannot use is not an error but
    /// [`Received::Skipped`].
    pub fn next_line(&mut self) -> io::Result<Option<Received<'_>>> {
        self.line.clear();
        // Bytes of the line so far, kept or not; whether any was read.
        let mut length: u64 = 0;
        let mut read_any = false;
        loop {
            let available = match self.source.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            read_any = true;
            let newline = available.iter().position(|byte| *byte == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            length += chunk.len() as u64;
            if length <= self.limit as u64 {
                keep(&mut self.line, chunk, self.limit);
            } else {
                self.line.clear();
            }
            let used = newline.map_or(chunk.len(), |end| end + 1);
            self.source.consume(used);
            if newline.is_some() {
                break;
            }
        }
        if length > self.limit as u64 {
            return Ok(Some(Received::Skipped(Skipped::TooLong {
                length,
                limit: self.limit,
            })));
        }
        Ok(Some(parse(&self.line)))
    }
}

/// Appends `chunk` to `line`, growing it to at most `limit` bytes of
/// capacity (where a `Vec` left to itself would double past it).
fn keep(line: &mut Vec<u8>, chunk: &[u8], limit: usize) {
    let needed = line.len() + chunk.len();
    if needed > line.capacity() {
        let capacity = needed.max(line.capacity() * 2).min(limit);
        line.reserve_exact(capacity - line.len());
    }
    line.extend_from_slice(chunk);
}

/// A whole line, parsed.
fn parse(line: &[u8]) -> Received<'_> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(error) => return Received::Skipped(Skipped::NotUtf8(error)),
    };
    match serde_json::from_str::<Line<'_>>(text) {
        Ok(line) => match line.version() {
            Some(version) if version != VERSION => {
                Received::Skipped(Skipped::OtherVersion { version })
            }
            _ => Received::Line(line),
        },
        Err(error) => Received::Skipped(Skipped::NotAnEvent(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use super::*;
    use crate::child::Signal;
    use crate::crash::{Backtrace, Crash, Frame};
    use crate::fork_server::CapturedStream;
    use crate::server::PanicReport;

    /// Every line `bytes` holds, as the reader gives them: a line as its
    /// JSON value, a skipped one as why.
    fn read_all(bytes: &[u8], limit: usize) -> Vec<Result<serde_json::Value, String>> {
        let mut reader = LineReader::with_limit(Cursor::new(bytes), limit);
        let mut lines = Vec::new();
        while let Some(received) = reader.next_line().unwrap() {
            lines.push(match received {
                Received::Line(line) => Ok(serde_json::to_value(line).unwrap()),
                Received::Skipped(skipped) => Err(skipped.to_string()),
            });
            assert!(reader.line.capacity() <= limit);
        }
        lines
    }

    #[test]
    fn a_started_line_reads_back_borrowing_its_name() {
        let mut stream = serde_json::to_vec(&Line::Started(Started::new("module::test"))).unwrap();
        stream.push(b'\n');
        let mut reader = LineReader::new(Cursor::new(&stream[..]));
        let Some(Received::Line(Line::Started(started))) = reader.next_line().unwrap() else {
            panic!("a started line");
        };
        assert_eq!(started.version, VERSION);
        // Strings without escapes are borrowed from the reader's line.
        assert!(matches!(started.name, Cow::Borrowed("module::test")));
        assert!(reader.next_line().unwrap().is_none());
    }

    /// A finished test's run, ended by `ending`, as the fork server
    /// reports it.
    fn run(ending: Ending) -> TestRun {
        TestRun {
            ending,
            stdout: CapturedStream {
                head: b"out\n".to_vec(),
                omitted: 0,
                tail: Vec::new(),
            },
            stderr: CapturedStream::default(),
            leftovers: vec![crate::fork_server::Leftover {
                pid: 7,
                command: "sleep".to_owned(),
            }],
            duration: Duration::from_micros(1500),
        }
    }

    /// A crash report whose backtrace holds `functions`.
    fn crash(functions: &[&str]) -> Box<Crash> {
        let mut crash = Crash::parse(&[0; 25]).expect("a crash payload");
        crash.fault_address = Some(0);
        crash.backtrace = Backtrace {
            frames: functions
                .iter()
                .map(|function| Frame {
                    ip: 0,
                    function: Some((*function).to_owned()),
                    location: None,
                })
                .collect(),
        };
        Box::new(crash)
    }

    #[test]
    fn what_the_writer_writes_for_every_outcome_the_reader_reads() {
        let signaled = |signal, crash| {
            Ending::Died(Termination::Signaled {
                signal: Signal(signal),
                core_dumped: false,
                crash,
            })
        };
        let endings = [
            (Ending::Returned(Ok(())), Ok(()), "returned"),
            (
                Ending::Returned(Err("\"no\"".to_owned())),
                Err("returned Err: \"no\"".to_owned()),
                "returned",
            ),
            (
                Ending::Panicked(PanicReport {
                    message: "dragons".to_owned(),
                    location: Some("src/lib.rs:3:5".to_owned()),
                    backtrace: Some(Backtrace::default()),
                }),
                Err("panicked".to_owned()),
                "panicked",
            ),
            (
                signaled(11, Some(crash(&["crash::site"]))),
                Err("was killed".to_owned()),
                "signaled",
            ),
            (signaled(9, None), Err("was killed".to_owned()), "signaled"),
            (
                Ending::Died(Termination::Exited { code: 3 }),
                Err("exited".to_owned()),
                "exited",
            ),
            (
                Ending::TimedOut {
                    limit: Duration::from_millis(300),
                    grace_period: Duration::from_secs(1),
                    termination: Termination::Signaled {
                        signal: Signal(15),
                        core_dumped: false,
                        crash: None,
                    },
                },
                Err("timed out".to_owned()),
                "timed_out",
            ),
            (
                signaled(6, Some(crash(&["alloc::alloc::handle_alloc_error"]))),
                Err("out of memory".to_owned()),
                "out_of_memory",
            ),
            (
                Ending::Broken("no channel".to_owned()),
                Err("could not be run".to_owned()),
                "broken",
            ),
        ];
        for (ending, verdict, kind) in endings {
            let run = run(ending);
            let written = Line::Finished(Finished::new("module::test", &run, &verdict));
            let mut stream = serde_json::to_vec(&written).unwrap();
            stream.push(b'\n');
            let mut reader = LineReader::new(Cursor::new(&stream[..]));
            let Some(Received::Line(read)) = reader.next_line().unwrap() else {
                panic!("{kind}: not read back");
            };
            assert_eq!(read, written, "{kind}");
            assert_eq!(
                serde_json::to_value(&read).unwrap()["outcome"]["kind"],
                kind
            );
            let Line::Finished(finished) = read else {
                panic!("{kind}: not a finished line");
            };
            assert_eq!(finished.passed, verdict.is_ok(), "{kind}");
            assert_eq!(finished.stdout, "out\n");
            assert_eq!(finished.duration_ms, 1.5);
            assert_eq!(finished.leftovers.len(), 1);
        }
    }

    #[test]
    fn a_fifty_megabyte_panic_is_written_as_a_short_line() {
        let message = "p".repeat(50 * 1024 * 1024);
        let run = run(Ending::Panicked(PanicReport {
            message: message.clone(),
            location: None,
            backtrace: None,
        }));
        let verdict = Err(format!("panicked: {message}"));
        let line = serde_json::to_vec(&Line::Finished(Finished::new("t", &run, &verdict))).unwrap();
        assert!(line.len() < 5 * KEPT_TEXT, "{} bytes", line.len());
        let mut reader = LineReader::new(Cursor::new(&line[..]));
        assert!(matches!(
            reader.next_line().unwrap(),
            Some(Received::Line(Line::Finished(_)))
        ));
    }

    #[test]
    fn the_documented_example_reads() {
        let line = br#"{"version":1,"event":"finished","name":"crashes::null_deref","passed":false,"outcome":{"kind":"signaled","signal":11,"signal_name":"SIGSEGV","description":"killed by signal 11 (SIGSEGV: invalid memory reference) at address 0x0","core_dumped":false,"fault_address":0,"stack_overflow":false,"backtrace":["fixture::crash"]},"message":"m","duration_ms":3.1,"stdout":"","stderr":"","leftovers":[]}"#;
        let mut reader = LineReader::new(Cursor::new(&line[..]));
        let read = reader.next_line().unwrap();
        assert!(
            matches!(
                read,
                Some(Received::Line(Line::Finished(Finished {
                    outcome: Outcome::Signaled { signal: 11, .. },
                    ..
                })))
            ),
            "{read:?}"
        );
    }

    #[test]
    fn events_and_kinds_of_later_versions_read_as_other() {
        let read = read_all(
            b"{\"version\":1,\"event\":\"paused\",\"name\":\"t\"}\n{\"version\":1,\"event\":\"finished\",\"name\":\"t\",\"passed\":false,\"outcome\":{\"kind\":\"vanished\"}}\n",
            MAX_LINE,
        );
        assert_eq!(read[0], Ok(serde_json::json!({"event": "other"})));
        assert_eq!(read[1].as_ref().unwrap()["outcome"]["kind"], "other");
    }

    #[test]
    fn lines_it_cannot_use_are_skipped_and_the_next_read() {
        let good: &[u8] = b"{\"version\":1,\"event\":\"started\",\"name\":\"t\"}";
        let stream = [
            good,
            b"\n\xff\xfe\n{not json\n\n",
            b"{\"version\":2,\"event\":\"started\",\"name\":\"t\"}\n",
            good,
        ]
        .concat();
        let read = read_all(&stream, MAX_LINE);
        let skipped: Vec<&str> = read
            .iter()
            .filter_map(|line| line.as_ref().err().map(String::as_str))
            .collect();
        assert_eq!(
            skipped,
            [
                "a line that is not UTF-8",
                "a line that is not a report event",
                "a line that is not a report event",
                "an event of version 2, where 1 was expected"
            ]
        );
        assert_eq!(read.iter().filter(|line| line.is_ok()).count(), 2);
    }

    #[test]
    fn a_twenty_megabyte_line_is_skipped_without_being_kept() {
        let mut stream = vec![b'x'; 20 * 1024 * 1024];
        stream.extend_from_slice(b"\n{\"version\":1,\"event\":\"started\",\"name\":\"t\"}\n");
        // The bytes of the long line without a newline at all, too.
        stream.extend(std::iter::repeat_n(b'y', 3 * 1024 * 1024));
        let read = read_all(&stream, MAX_LINE);
        assert_eq!(
            read,
            [
                Err("a line of 20971520 bytes, over the limit of 1048576".to_owned()),
                Ok(serde_json::to_value(Line::Started(Started::new("t"))).unwrap()),
                Err("a line of 3145728 bytes, over the limit of 1048576".to_owned()),
            ]
        );
    }

    #[test]
    fn free_text_is_kept_as_head_and_tail() {
        assert_eq!(head_and_tail("short", 4), "short");
        assert_eq!(head_and_tail("12345678", 4), "12345678");
        assert_eq!(
            head_and_tail("123456789", 4),
            "1234\n[... 1 bytes omitted ...]\n6789"
        );
        // Never inside a character.
        assert_eq!(head_and_tail("ééééé", 3), "é\n[... 6 bytes omitted ...]\né");
        let huge = "p".repeat(50 * 1024 * 1024);
        assert!(head_and_tail(&huge, KEPT_TEXT).len() < 3 * KEPT_TEXT);
    }

    #[test]
    fn the_handshake_is_answered_only_with_the_nonce() {
        let answer = handshake_answer("c0ffee");
        assert_eq!(answer, "isolate-harness report stream v1: c0ffee");
        assert_eq!(
            handshake_version(&format!("warning: x\n{answer}\n"), "c0ffee"),
            Some(VERSION)
        );
        assert_eq!(handshake_version(&answer, "decaf"), None);
        assert_eq!(
            handshake_version("isolate-harness report stream v1", "c0ffee"),
            None
        );
        assert_eq!(
            handshake_version("isolate-harness report stream v2: c0ffee", "c0ffee"),
            Some(2)
        );
    }

    /// Properties of the reader, whatever it is fed.
    mod properties {
        use std::io::BufReader;

        use proptest::prelude::*;

        use super::*;

        /// What a reader with `limit` made of `bytes`, fed `chunk` bytes at
        /// a time: a line as its JSON value, a skipped line as `None`.
        fn read_in_chunks(
            bytes: &[u8],
            limit: usize,
            chunk: usize,
        ) -> Vec<Option<serde_json::Value>> {
            let source = BufReader::with_capacity(chunk, Cursor::new(bytes));
            let mut reader = LineReader::with_limit(source, limit);
            let mut read = Vec::new();
            while let Some(received) = reader.next_line().unwrap() {
                read.push(match received {
                    Received::Line(line) => Some(serde_json::to_value(line).unwrap()),
                    Received::Skipped(_) => None,
                });
                // No more than a line's limit is ever held.
                assert!(reader.line.capacity() <= limit);
            }
            read
        }

        /// The lines of `bytes`, as the reader must see them: a last line
        /// without a newline counts.
        fn line_count(bytes: &[u8]) -> usize {
            let newlines = bytes.iter().filter(|byte| **byte == b'\n').count();
            newlines + usize::from(bytes.last().is_some_and(|byte| *byte != b'\n'))
        }

        /// A line the writer could write: a start, or an end of each kind.
        fn written_line() -> impl Strategy<Value = Vec<u8>> {
            let name = "[a-z:_ \"\\\\é\n]{0,24}";
            let text = "[ -~é\n\t]{0,40}";
            let outcome = prop_oneof![
                proptest::option::of(text).prop_map(|error| Outcome::Returned {
                    error: error.map(Cow::Owned)
                }),
                (text, proptest::option::of(text)).prop_map(|(message, location)| {
                    Outcome::Panicked {
                        message: Cow::Owned(message),
                        location: location.map(Cow::Owned),
                        backtrace: None,
                    }
                }),
                (1..64_i32, any::<bool>()).prop_map(|(signal, core_dumped)| Outcome::Signaled {
                    signal,
                    signal_name: None,
                    description: Cow::Borrowed("killed"),
                    core_dumped,
                    fault_address: None,
                    stack_overflow: false,
                    backtrace: Some(vec![Cow::Borrowed("f")]),
                }),
                any::<i32>().prop_map(|code| Outcome::Exited { code }),
                any::<u64>().prop_map(|limit_ms| Outcome::TimedOut {
                    limit_ms,
                    grace_ms: 1000,
                    signal_name: None,
                }),
                text.prop_map(|reason| Outcome::Broken {
                    reason: Cow::Owned(reason)
                }),
            ];
            prop_oneof![
                name.prop_map(|name| Line::Started(Started {
                    version: VERSION,
                    name: Cow::Owned(name),
                })),
                (name, any::<bool>(), outcome, text).prop_map(|(name, passed, outcome, out)| {
                    Line::Finished(Finished {
                        version: VERSION,
                        name: Cow::Owned(name),
                        passed,
                        outcome,
                        message: None,
                        duration_ms: 2.5,
                        stdout: Cow::Owned(out),
                        stderr: Cow::Borrowed(""),
                        leftovers: Vec::new(),
                    })
                }),
            ]
            .prop_map(|line| serde_json::to_vec(&line).unwrap())
        }

        /// What becomes of a written line in the stream.
        #[derive(Clone, Debug)]
        enum Fate {
            Intact,
            /// A byte is replaced (by a newline, maybe).
            Flipped {
                at: usize,
                byte: u8,
            },
            /// Cut short, with its newline.
            Truncated {
                at: usize,
            },
            /// Replaced by this many bytes of `{`, over the limit.
            Huge {
                extra: usize,
            },
        }

        fn fate() -> impl Strategy<Value = Fate> {
            prop_oneof![
                3 => Just(Fate::Intact),
                1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Fate::Flipped { at, byte }),
                1 => any::<usize>().prop_map(|at| Fate::Truncated { at }),
                1 => (1..300_usize).prop_map(|extra| Fate::Huge { extra }),
            ]
        }

        proptest! {
            #[test]
            fn random_bytes_never_panic_nor_grow_past_the_limit(
                bytes in proptest::collection::vec(
                    prop_oneof![4 => any::<u8>(), 1 => Just(b'\n')],
                    0..2048,
                ),
                limit in 1..300_usize,
                chunk in 1..64_usize,
            ) {
                let read = read_in_chunks(&bytes, limit, chunk);
                prop_assert_eq!(read.len(), line_count(&bytes));
            }

            #[test]
            fn intact_lines_read_back_whatever_surrounds_them(
                lines in proptest::collection::vec((written_line(), fate()), 0..16),
                limit in 300..2048_usize,
                chunk in 1..128_usize,
                cut_last_newline in any::<bool>(),
            ) {
                let mut stream = Vec::new();
                // Per line of the stream: the value it must read as, if
                // known.
                let mut expected = Vec::new();
                for (line, fate) in &lines {
                    let (bytes, known) = match fate {
                        Fate::Intact if line.len() <= limit => {
                            let value: serde_json::Value = serde_json::from_slice(line).unwrap();
                            (line.clone(), Some(Some(value)))
                        }
                        Fate::Intact => (line.clone(), Some(None)),
                        Fate::Flipped { at, byte } => {
                            let mut flipped = line.clone();
                            if !flipped.is_empty() {
                                let at = at % flipped.len();
                                flipped[at] = *byte;
                            }
                            (flipped, None)
                        }
                        Fate::Truncated { at } => {
                            let at = at % (line.len() + 1);
                            (line[..at].to_vec(), None)
                        }
                        Fate::Huge { extra } => (vec![b'{'; limit + extra], Some(None)),
                    };
                    // A flipped byte may be a newline, which splits the line
                    // (into an empty last piece, when it was the last byte).
                    match known {
                        Some(known) => expected.push(Some(known)),
                        None => {
                            let newlines = bytes.iter().filter(|byte| **byte == b'\n').count();
                            expected.extend(std::iter::repeat_n(None, newlines + 1));
                        }
                    }
                    stream.extend_from_slice(&bytes);
                    stream.push(b'\n');
                }
                if cut_last_newline {
                    stream.pop();
                }
                let read = read_in_chunks(&stream, limit, chunk);
                prop_assert_eq!(read.len(), line_count(&stream));
                for (read, expected) in read.iter().zip(&expected) {
                    if let Some(expected) = expected {
                        prop_assert_eq!(read, expected);
                    }
                }
            }
        }
    }
}
