//! Capturing a child's stdout and stderr.
//!
//! A captured child writes to two pipes; the parent keeps their read ends
//! non-blocking and drains them from the same `poll` loop that waits for the
//! child's reply, so a child writing far more than a pipe holds never blocks
//! on a full pipe while the parent waits for it.
//!
//! What this does not do: tell apart output written between calls from the
//! output of the next call, or keep the relative order of stdout and stderr.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::{fmt, io};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::ipc::retry_interrupted;
use crate::report_stream::{KEPT_TEXT, head_and_tail};

/// What a child wrote to stdout and stderr.
///
/// Its `Debug` shows both as text (bytes that are not UTF-8 replaced by
/// `U+FFFD`), a long one cut to its head and tail as the report stream
/// keeps free text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Bytes written to stdout.
    pub stdout: Vec<u8>,
    /// Bytes written to stderr.
    pub stderr: Vec<u8>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text =
            |bytes: &[u8]| head_and_tail(&String::from_utf8_lossy(bytes), KEPT_TEXT).into_owned();
        f.debug_struct("Output")
            .field("stdout", &text(&self.stdout))
            .field("stderr", &text(&self.stderr))
            .finish()
    }
}

/// The pipes of one captured child.
pub(crate) struct Pipes {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The child's ends of [`Pipes`], to be closed in the parent once forked.
pub(crate) struct ChildEnds {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl ChildEnds {
    /// The raw descriptors, for [`crate::child::ChildSetup::output`].
    pub(crate) fn raw(&self) -> (RawFd, RawFd) {
        (self.stdout.as_raw_fd(), self.stderr.as_raw_fd())
    }
}

impl Pipes {
    /// Opens both pipes, close-on-exec, the parent's ends non-blocking.
    ///
    /// # Errors
    ///
    /// When `pipe2` or `fcntl` fails (out of descriptors, say).
    pub(crate) fn open() -> io::Result<(Pipes, ChildEnds)> {
        let (stdout, stdout_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (stderr, stderr_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        for fd in [&stdout, &stderr] {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        Ok((
            Pipes { stdout, stderr },
            ChildEnds {
                stdout: stdout_child,
                stderr: stderr_child,
            },
        ))
    }

    /// The read ends, for polling.
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.stdout.as_fd(), self.stderr.as_fd()]
    }

    /// Reads whatever the pipes hold now into `output`, without blocking.
    ///
    /// # Errors
    ///
    /// When a read fails other than by being empty.
    pub(crate) fn drain(&self, output: &mut Output) -> io::Result<()> {
        drain_one(&self.stdout, &mut output.stdout)?;
        drain_one(&self.stderr, &mut output.stderr)
    }
}

fn drain_one(fd: &OwnedFd, into: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0_u8; 64 * 1024];
    loop {
        match retry_interrupted(|| Ok(nix::unistd::read(fd, &mut chunk)?)) {
            Ok(0) => return Ok(()),
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_output_as_text() {
        let output = Output {
            stdout: b"hello\nworld\n".to_vec(),
            stderr: b"not \xff utf-8".to_vec(),
        };
        assert_eq!(
            format!("{output:?}"),
            r#"Output { stdout: "hello\nworld\n", stderr: "not � utf-8" }"#
        );
    }

    #[test]
    fn debug_cuts_long_output_to_its_head_and_tail() {
        let output = Output {
            stdout: [b"first".as_slice(), &[b'x'; 1 << 20], b"last"].concat(),
            stderr: Vec::new(),
        };
        let shown = format!("{output:?}");
        assert!(shown.len() < 3 * KEPT_TEXT, "{} bytes", shown.len());
        assert!(
            shown.starts_with(r#"Output { stdout: "first"#),
            "{shown:.40}"
        );
        assert!(shown.contains("bytes omitted"));
        assert!(shown.ends_with(r#"last", stderr: "" }"#));
    }
}
