//! Untrusted bytes through a [`FrameReader`], and a check of what the
//! reader promises about them: the one driver behind the property tests and
//! the `frames` fuzz target, built only for those (`cfg(fuzzing)` is set by
//! `cargo fuzz`).
//!
//! Whatever the bytes, however they are split across reads and whichever
//! reads would block or are interrupted, the reader must not panic; it must
//! return the frames that a reading of the whole input at once finds, then
//! `Closed` or the error that reading stops at; it must hold no frame longer
//! than its cap; and it must not allocate for a payload more than the
//! payload's announced length, nor, while the payload arrives, more than
//! twice what has arrived or a first chunk past it (a buffer handed back
//! with [`FrameReader::recycle`] is reused as it is).

use std::io::{self, Read};

use super::{FIRST_CHUNK, FrameReader, HEADER_LEN, Kind, ProtocolError, ReadError, Received};

/// The entry point of the `frames` fuzz target: `data` is a cap (`u32`,
/// little-endian), a count of steps (one byte), that many steps (see
/// [`Chunked`]), and the stream to read. Data too short for the cap and
/// the count is ignored.
///
/// # Panics
///
/// When the reader breaks one of its promises (see the module docs).
pub fn frames(data: &[u8]) {
    let Some((cap, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Some((&count, rest)) = rest.split_first() else {
        return;
    };
    let (steps, input) = rest.split_at(usize::from(count).min(rest.len()));
    read_checked(input, u32::from_le_bytes(*cap) as usize, steps);
}

/// What a reader made of a stream.
#[derive(Debug)]
pub(crate) struct Reading {
    /// The frames read, in order: their kinds and payloads.
    pub(crate) frames: Vec<(Kind, Vec<u8>)>,
    /// `Ok` when the stream closed between frames, else the error that
    /// stopped the reading.
    pub(crate) end: Result<(), ReadError>,
}

/// Reads `input` to its end or first error with a reader capped at `cap`,
/// the bytes handed out as `steps` say (see [`Chunked`]), and every other
/// frame handed back to the reader once read.
///
/// # Panics
///
/// When the reader breaks one of its promises (see the module docs).
pub(crate) fn read_checked(input: &[u8], cap: usize, steps: &[u8]) -> Reading {
    let mut reader = FrameReader::new(cap);
    let mut chunked = Chunked {
        input,
        steps,
        next: 0,
        failed: false,
    };
    // Bounds the capacity of a buffer handed back to the reader.
    let mut recycled = 0;
    let mut frames = Vec::new();
    // A call reads at least a byte or the end of the stream, unless its
    // first read would block or a read that would block ended the call
    // before it; such calls are never two in a row and never the last.
    let mut calls = 0;
    let end = loop {
        calls += 1;
        assert!(
            calls <= 2 * (input.len() + 1),
            "the reader makes no progress"
        );
        let received = reader.read_from(&mut chunked);
        if let Some(body) = &reader.body {
            let arrived = body.payload.len();
            assert!(body.len < cap, "a payload of {} bytes is begun", body.len);
            assert!(
                body.payload.capacity()
                    <= recycled.max(body.len.min(arrived + arrived.max(FIRST_CHUNK))),
                "{} bytes allocated for {arrived} of {} bytes",
                body.payload.capacity(),
                body.len,
            );
        }
        match received {
            Ok(Received::Frame(frame)) => {
                let payload = frame.payload();
                assert!(payload.len() < cap, "a payload of {} bytes", payload.len());
                assert!(
                    frame.payload.capacity() <= recycled.max(payload.len()),
                    "{} bytes allocated for a payload of {}",
                    frame.payload.capacity(),
                    payload.len(),
                );
                frames.push((frame.kind, payload.to_vec()));
                if frames.len() % 2 == 0 {
                    recycled = recycled.max(frame.payload.capacity());
                    reader.recycle(frame);
                }
            }
            Ok(Received::Pending) => {}
            Ok(Received::Closed) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    let reading = Reading { frames, end };
    let expected = expected(input, cap);
    assert_eq!(
        reading.frames, expected.frames,
        "frames differ from a reading of the whole input",
    );
    assert_eq!(
        format!("{:?}", reading.end),
        format!("{:?}", expected.end),
        "the end differs from a reading of the whole input",
    );
    reading
}

/// What reading all of `input` at once finds: its frames, then the end of
/// the stream or the error that stops the reading.
fn expected(mut input: &[u8], cap: usize) -> Reading {
    let mut frames = Vec::new();
    let end = loop {
        if input.is_empty() {
            break Ok(());
        }
        let Some((header, rest)) = input.split_first_chunk::<HEADER_LEN>() else {
            break Err(ProtocolError::Truncated {
                expected: HEADER_LEN,
                received: input.len(),
            });
        };
        let len = u32::from_le_bytes(*header) as usize;
        if len > cap {
            break Err(ProtocolError::FrameTooLarge {
                len: len as u64,
                cap,
            });
        }
        if len == 0 {
            break Err(ProtocolError::EmptyFrame);
        }
        let Some((&kind, rest)) = rest.split_first() else {
            break Err(ProtocolError::Truncated {
                expected: HEADER_LEN + len,
                received: HEADER_LEN,
            });
        };
        let Some(kind) = Kind::from_byte(kind) else {
            break Err(ProtocolError::UnknownKind(kind));
        };
        let Some((payload, rest)) = rest.split_at_checked(len - 1) else {
            break Err(ProtocolError::Truncated {
                expected: HEADER_LEN + len,
                received: HEADER_LEN + 1 + rest.len(),
            });
        };
        frames.push((kind, payload.to_vec()));
        input = rest;
    };
    Reading {
        frames,
        end: end.map_err(ReadError::Protocol),
    }
}

/// A reader that hands out its input as its steps say, taking them in turn
/// and starting over when they run out. A step's low six bits are the most
/// bytes a read hands out, less one, or no limit when all are set; a read
/// whose step has bit 7 set would block instead, one with bit 6 set is
/// interrupted instead, unless the read before it failed: every other read
/// makes progress. With no steps, every read hands out what it is asked for.
struct Chunked<'a> {
    input: &'a [u8],
    steps: &'a [u8],
    /// The step of the next read.
    next: usize,
    /// Whether the last read failed.
    failed: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let step = self.steps.get(self.next).copied().unwrap_or(0x3f);
        self.next = (self.next + 1) % self.steps.len().max(1);
        if !std::mem::replace(&mut self.failed, false) {
            if step & 0x80 != 0 {
                self.failed = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if step & 0x40 != 0 {
                self.failed = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
        }
        let limit = match step & 0x3f {
            0x3f => usize::MAX,
            most => usize::from(most) + 1,
        };
        let n = buf.len().min(self.input.len()).min(limit);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}
