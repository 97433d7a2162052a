//! Framing, codec and protocol messages between a parent and the child it
//! forked.
//!
//! Parent and child are the same binary, so they speak the compact binary
//! codec: [`postcard`] over serde. The codec is used only through this
//! module ([`encode_into`], [`decode`], [`value_frames`], [`decode_value`]),
//! so changing it is a change to this module alone.
//!
//! One type skips the codec: a `Vec<u8>` argument or result travels as the
//! payload of a `Bytes` frame of its own, sent from the vector where it lies
//! and read straight into the vector the other side gets. Serde would hand
//! its bytes over one at a time (a 100 MiB vector took 20 times as long as
//! the raw copy), and a byte string in the frame buffer would still be
//! copied once more on each side.
//!
//! # Frames
//!
//! Every message is one frame: a little-endian `u32` body length, then the
//! body, whose first byte is the message [`Kind`] and whose rest is the
//! payload. A frame longer than the channel's cap is refused from its length
//! alone, before anything is allocated for it; a frame body is read into a
//! buffer that grows with the bytes that actually arrive, so a corrupt length
//! never makes the reader allocate what it claims.
//!
//! # Messages
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `Hello` | child → parent, first frame | 8-byte magic, `u32` protocol version |
//! | `Bytes` | either way | raw bytes: the `Vec<u8>` value of the `Call` or `Returned` frame that follows, whose own value part is then empty |
//! | `Call` | parent → child | trampoline and function addresses and the call's id (`u64` each), then the postcard-encoded argument |
//! | `Returned` | child → parent | the id of the call it answers (`u64`), then the postcard-encoded return value |
//! | `Panicked` | child → parent | the call's id, then a postcard-encoded panic message: text (head and tail when long), location, backtrace addresses |
//! | `CallFailed` | child → parent | the call's id, then a postcard-encoded `String`: the call could not be made |
//! | `Crash` | child → parent | fixed layout, written by the fatal-signal handler (see [`crate::crash`]) |
//! | `Backtrace` | child → parent | fixed layout, written by the fatal-signal handler |
//! | `Run` | harness → fork server | a postcard-encoded run request: the test (its index in the registry or among the tests added by hand), its memory limit, its timeout and grace period |
//! | `Reply` | fork server → harness | the frames a test child wrote (`Returned` or `Panicked`, or `Crash` and `Backtrace`), as they were, in a frame of their own |
//! | `Exited` | fork server → harness | a postcard-encoded test exit: wait status, whether the timeout stopped it, its duration, captured output, leftover processes |
//!
//! A call's id is chosen by the parent, anew for every call and starting
//! from a random number: a reply whose id is not that of the call in
//! flight (a frame a function wrote onto the channel itself, one a copy of
//! the child sent) is [`ProtocolError::StrayReply`], never a result.
//!
//! A test child of the fork server writes its `Returned` or `Panicked`
//! frame (with id 0), or its `Crash` and `Backtrace` frames, to a shared
//! region stamped with its pid (see [`crate::reply_region`]); once it has
//! reaped the child, the server writes them in a `Reply` frame, then
//! `Exited`, on the lane that asked for the test, so the harness reads one
//! ordered stream per test; however the child's frames are broken, they
//! fail that test alone, and the lane stays in step.
//!
//! End of file on the channel means the child is gone: the caller then asks
//! [`crate::child`] how it ended.

use std::any::{Any, TypeId};
use std::io::{self, IoSlice, Read, Write};

use serde::{Serialize, de::DeserializeOwned};

/// The version of the messages above. The child announces it in its `Hello`
/// frame and the parent refuses to talk to a child that announces another.
pub(crate) const PROTOCOL_VERSION: u32 = 3;

/// Opens every `Hello` payload, so that a peer that is not an isolate child
/// at all is told apart from one of another version.
const HELLO_MAGIC: [u8; 8] = *b"isolate\0";

/// The default cap on one frame: large enough for big arguments and results,
/// small enough that a corrupt length cannot exhaust memory.
pub(crate) const DEFAULT_MAX_FRAME: usize = 256 * 1024 * 1024;

/// Bytes in a frame header: the `u32` body length.
pub(crate) const HEADER_LEN: usize = 4;

/// The kind of a message: the first byte of a frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Hello = 1,
    Call = 2,
    Returned = 3,
    Panicked = 4,
    CallFailed = 5,
    Crash = 6,
    Backtrace = 7,
    Run = 8,
    // 9 was a request to signal a test's group, before the fork server
    // took over timeouts.
    Exited = 10,
    Bytes = 11,
    Reply = 12,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        [
            Kind::Hello,
            Kind::Call,
            Kind::Returned,
            Kind::Panicked,
            Kind::CallFailed,
            Kind::Crash,
            Kind::Backtrace,
            Kind::Run,
            Kind::Exited,
            Kind::Bytes,
            Kind::Reply,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == byte)
    }

    /// The message's name, for errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Call => "call",
            Kind::Returned => "returned",
            Kind::Panicked => "panicked",
            Kind::CallFailed => "call-failed",
            Kind::Crash => "crash",
            Kind::Backtrace => "backtrace",
            Kind::Run => "run",
            Kind::Exited => "exited",
            Kind::Bytes => "bytes",
            Kind::Reply => "reply",
        }
    }
}

/// What went wrong with the bytes a peer sent.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame announced a body larger than the channel accepts.
    #[error("frame of {len} bytes exceeds the cap of {cap} bytes")]
    FrameTooLarge {
        /// The length the frame announced.
        len: u64,
        /// The cap in force.
        cap: usize,
    },
    /// The peer closed the channel in the middle of a frame.
    #[error("channel closed in the middle of a frame ({received} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame should have had, header included.
        expected: usize,
        /// Bytes that arrived.
        received: usize,
    },
    /// A frame body was empty, so it had no message kind.
    #[error("empty frame")]
    EmptyFrame,
    /// The first byte of a frame body names no message.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// A message arrived where the protocol does not allow it.
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    /// The child's first frame was not a `Hello` from an isolate child.
    #[error("the child did not open with a valid handshake")]
    BadHandshake,
    /// The child speaks another version of the protocol.
    #[error("the child speaks protocol version {theirs}, this process speaks {ours}")]
    VersionMismatch {
        /// The version of this process.
        ours: u32,
        /// The version the child announced.
        theirs: u32,
    },
    /// A fixed-layout payload had the wrong length.
    #[error("malformed {0} payload")]
    Malformed(&'static str),
    /// A reply answered another call than the one in flight: written onto
    /// the channel by the called function itself, or left over.
    #[error("a reply to call {got:#x} arrived while call {expected:#x} was waiting")]
    StrayReply {
        /// The id of the call in flight.
        expected: u64,
        /// The id the reply carried.
        got: u64,
    },
    /// A payload could not be decoded.
    #[error("undecodable payload")]
    Decode(#[source] postcard::Error),
}

/// Encodes `value` with the codec, appending to `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: Vec<u8>,
) -> Result<Vec<u8>, postcard::Error> {
    postcard::serialize_with_flavor(value, AppendToVec(out))
}

/// A postcard output that appends to a `Vec` it owns, a byte with `push`
/// and a run of bytes with `extend_from_slice` (postcard's own `to_extend`
/// goes through `Extend` for every byte). It holds less than 4 GiB, which
/// a frame's `u32` length can say: a value that encodes larger fails to
/// encode, where it would otherwise make a frame that cannot be sent.
struct AppendToVec(Vec<u8>);

impl AppendToVec {
    /// Whether `more` bytes still fit.
    fn fits(&self, more: usize) -> postcard::Result<()> {
        match self.0.len().checked_add(more) {
            Some(total) if u32::try_from(total).is_ok() => Ok(()),
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }
}

impl postcard::ser_flavors::Flavor for AppendToVec {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.fits(data.len())?;
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.fits(1)?;
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes a whole payload with the codec.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    postcard::from_bytes(bytes).map_err(ProtocolError::Decode)
}

/// A frame being built: the header is reserved up front and patched in
/// [`FrameBuilder::finish`], so a payload is encoded once, in place.
pub(crate) struct FrameBuilder {
    bytes: Vec<u8>,
    /// Where this frame's header starts in `bytes`.
    start: usize,
}

impl FrameBuilder {
    pub(crate) fn new(kind: Kind) -> FrameBuilder {
        FrameBuilder::reusing(kind, Vec::with_capacity(64))
    }

    /// A frame built in `buffer`, whose contents are dropped and whose
    /// capacity is kept: a sender of large frames reuses one warm buffer.
    pub(crate) fn reusing(kind: Kind, mut buffer: Vec<u8>) -> FrameBuilder {
        buffer.clear();
        FrameBuilder::appending(kind, buffer)
    }

    /// A frame built after what `buffer` holds already, so that several
    /// frames go out in one write.
    pub(crate) fn appending(kind: Kind, mut buffer: Vec<u8>) -> FrameBuilder {
        let start = buffer.len();
        buffer.extend_from_slice(&[0; HEADER_LEN]);
        buffer.push(kind as u8);
        FrameBuilder {
            bytes: buffer,
            start,
        }
    }

    pub(crate) fn push(mut self, bytes: &[u8]) -> FrameBuilder {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Lets `write` append the payload's bytes to the frame's buffer.
    pub(crate) fn extend(mut self, write: impl FnOnce(&mut Vec<u8>)) -> FrameBuilder {
        write(&mut self.bytes);
        self
    }

    pub(crate) fn encode<T: Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<FrameBuilder, postcard::Error> {
        Ok(FrameBuilder {
            bytes: encode_into(value, self.bytes)?,
            start: self.start,
        })
    }

    /// Patches the length into the header and returns the frame's bytes.
    ///
    /// # Panics
    ///
    /// If the body is 4 GiB or more, which the `u32` header cannot express.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let header = self.start..self.start + HEADER_LEN;
        let body =
            u32::try_from(self.bytes.len() - header.end).expect("a frame body is less than 4 GiB");
        self.bytes[header].copy_from_slice(&body.to_le_bytes());
        self.bytes
    }
}

/// Appends the `Hello` frame a child opens with to `buffer`.
pub(crate) fn hello_frame(buffer: Vec<u8>) -> Vec<u8> {
    FrameBuilder::appending(Kind::Hello, buffer)
        .push(&HELLO_MAGIC)
        .push(&PROTOCOL_VERSION.to_le_bytes())
        .finish()
}

/// Checks the payload of a `Hello` frame.
pub(crate) fn check_hello(payload: &[u8]) -> Result<(), ProtocolError> {
    let (magic, version) = payload
        .split_first_chunk::<8>()
        .ok_or(ProtocolError::BadHandshake)?;
    let version: [u8; 4] = version
        .try_into()
        .map_err(|_| ProtocolError::BadHandshake)?;
    if *magic != HELLO_MAGIC {
        return Err(ProtocolError::BadHandshake);
    }
    match u32::from_le_bytes(version) {
        PROTOCOL_VERSION => Ok(()),
        theirs => Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        }),
    }
}

/// Frames ready to send, and the payload of a `Bytes` frame among them,
/// which is sent from where it lies instead of being copied into the frame
/// buffer. It keeps track of how much has been sent.
pub(crate) struct Outgoing {
    /// The encoded frames.
    frames: Vec<u8>,
    /// The payload of the `Bytes` frame whose header ends `frames[..at]`;
    /// empty when there is none. Freed once everything is sent, unless
    /// lent.
    bytes: Vec<u8>,
    at: usize,
    /// Whether `bytes` is lent (the very value of an object that stays
    /// where it was), to be given back once sent: see [`Outgoing::lend`].
    lent: bool,
    /// How many bytes have been sent, and how many there are in all.
    sent: usize,
    total: usize,
}

impl Outgoing {
    fn new(frames: Vec<u8>, bytes: Vec<u8>, at: usize) -> Outgoing {
        Outgoing {
            total: frames.len() + bytes.len(),
            frames,
            bytes,
            at,
            lent: false,
            sent: 0,
        }
    }

    /// Marks the bytes payload as lent: it is kept once sent, for
    /// [`Outgoing::take_lent`], instead of being freed.
    pub(crate) fn lend(mut self) -> Outgoing {
        self.lent = true;
        self
    }

    /// The lent bytes payload, if there is one and it was not taken yet.
    pub(crate) fn take_lent(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.lent).then(|| std::mem::take(&mut self.bytes))
    }

    /// Frames that are all in one buffer.
    pub(crate) fn frames(frames: Vec<u8>) -> Outgoing {
        let at = frames.len();
        Outgoing::new(frames, Vec::new(), at)
    }

    /// What is left to send, in order, as slices for a vectored write.
    pub(crate) fn unsent(&self) -> [IoSlice<'_>; 3] {
        let (before, after) = self.frames.split_at(self.at);
        let mut skip = self.sent;
        [before, &self.bytes, after].map(|part| {
            let skipped = skip.min(part.len());
            skip -= skipped;
            IoSlice::new(&part[skipped..])
        })
    }

    /// The body length of the largest frame: what a reader's cap must
    /// allow for all of it to be read. The same before and after sending.
    pub(crate) fn largest_body(&self) -> usize {
        let mut largest = 0;
        let mut at = 0;
        while let Some(header) = self.frames.get(at..at + HEADER_LEN) {
            let body = u32::from_le_bytes(header.try_into().expect("a header")) as usize;
            largest = largest.max(body);
            // The `Bytes` frame's header and kind end where its payload,
            // which lies apart (and is freed once sent), would start.
            at += HEADER_LEN
                + if at + HEADER_LEN + 1 == self.at {
                    1
                } else {
                    body
                };
        }
        largest
    }

    /// Whether everything has been sent.
    pub(crate) fn is_sent(&self) -> bool {
        self.sent == self.total
    }

    /// Records that `count` more bytes went out. Once all have, the bytes
    /// payload is freed: the other side has it, and a large one is better
    /// unmapped while the other side works than after it answers.
    pub(crate) fn advance(&mut self, count: usize) {
        self.sent += count;
        if self.is_sent() && !self.lent {
            self.bytes = Vec::new();
        }
    }

    /// Sends everything on a blocking channel.
    pub(crate) fn write_to(&mut self, writer: &mut impl Write) -> io::Result<()> {
        while !self.is_sent() {
            match writer.write_vectored(&self.unsent()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(sent) => self.advance(sent),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The frame buffer, to build the next frames in.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.frames
    }
}

/// Appends to `buffer` a frame of `kind` whose payload is `prefix` and then
/// `value`: encoded, or, for a `Vec<u8>`, nothing, with the vector going
/// ahead as the payload of a `Bytes` frame.
pub(crate) fn value_frames<T: Serialize + 'static>(
    kind: Kind,
    prefix: &[u8],
    value: T,
    buffer: Vec<u8>,
) -> Result<Outgoing, postcard::Error> {
    match into_bytes(value) {
        Ok(bytes) => {
            let mut frames = buffer;
            let body =
                u32::try_from(1 + bytes.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
            frames.extend_from_slice(&body.to_le_bytes());
            frames.push(Kind::Bytes as u8);
            let at = frames.len();
            let frames = FrameBuilder::appending(kind, frames).push(prefix).finish();
            Ok(Outgoing::new(frames, bytes, at))
        }
        Err(value) => Ok(Outgoing::frames(
            FrameBuilder::appending(kind, buffer)
                .push(prefix)
                .encode(&value)?
                .finish(),
        )),
    }
}

/// The vector itself when `value` is a `Vec<u8>`, else `value` back.
fn into_bytes<T: 'static>(value: T) -> Result<Vec<u8>, T> {
    let mut slot = Some(value);
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>()
        && let Some(bytes) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>()
    {
        return Ok(bytes.take().expect("the slot was just filled"));
    }
    Err(slot.expect("the slot is still filled"))
}

/// Splits the id of the call a reply answers from the rest of its payload.
///
/// # Errors
///
/// When the payload is too short to hold one.
pub(crate) fn split_call_id(payload: &[u8]) -> Result<(u64, &[u8]), ProtocolError> {
    let (id, rest) = payload
        .split_first_chunk::<8>()
        .ok_or(ProtocolError::Malformed("reply"))?;
    Ok((u64::from_le_bytes(*id), rest))
}

/// Decodes the value of a frame from its `payload` (what follows any
/// prefix) and the `Bytes` payload that came before it, if any.
pub(crate) fn decode_value<T: DeserializeOwned + 'static>(
    payload: &[u8],
    bytes: Option<Vec<u8>>,
) -> Result<T, ProtocolError> {
    let Some(bytes) = bytes else {
        return decode(payload);
    };
    let mut slot = Some(bytes);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(value) if payload.is_empty() => Ok(value.take().expect("the slot was just filled")),
        _ => Err(ProtocolError::Unexpected(Kind::Bytes.name())),
    }
}

/// One whole frame, as received.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: Kind,
    payload: Vec<u8>,
}

impl Frame {
    /// The frame's payload: its body after the kind byte.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The frame's payload, owned.
    pub(crate) fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

/// What one call to [`FrameReader::read_from`] found.
#[derive(Debug)]
pub(crate) enum Received {
    /// A whole frame.
    Frame(Frame),
    /// The reader would block: no whole frame yet.
    Pending,
    /// The peer closed the channel between frames.
    Closed,
}

/// An incremental frame decoder. It works on blocking and non-blocking
/// readers alike; partial frames are kept between calls.
pub(crate) struct FrameReader {
    max_frame: usize,
    /// The body length and then the kind byte, as they arrive.
    header: [u8; HEADER_LEN + 1],
    header_len: usize,
    /// The payload being read, once the header and kind are in.
    body: Option<Body>,
    /// The buffer of a frame handed back with [`FrameReader::recycle`], to
    /// read the next payload into without allocating and faulting in fresh
    /// pages.
    spare: Vec<u8>,
}

/// A frame payload being read.
struct Body {
    kind: Kind,
    /// The payload length the header announced.
    len: usize,
    /// What has arrived of it. Bytes are read into its spare capacity,
    /// which grows with what arrives, so nothing is zeroed first.
    payload: Vec<u8>,
}

/// The first allocation for a payload; later ones double with what arrived.
const FIRST_CHUNK: usize = 64 * 1024;

impl FrameReader {
    pub(crate) fn new(max_frame: usize) -> FrameReader {
        FrameReader {
            max_frame,
            header: [0; HEADER_LEN + 1],
            header_len: 0,
            body: None,
            spare: Vec::new(),
        }
    }

    /// Hands back a frame that has been dealt with, so that its buffer
    /// takes the next payload. The reader thus keeps up to the largest frame
    /// it has read (at most its cap) allocated.
    pub(crate) fn recycle(&mut self, frame: Frame) {
        if frame.payload.capacity() > self.spare.capacity() {
            self.spare = frame.payload;
        }
    }

    /// The announced body length, once the header is in.
    fn body_len(&self) -> usize {
        let length: [u8; HEADER_LEN] = self.header[..HEADER_LEN]
            .try_into()
            .expect("the header has its length");
        u32::from_le_bytes(length) as usize
    }

    /// Reads from `reader` until a whole frame is in, the reader would
    /// block, or the channel is closed.
    ///
    /// # Errors
    ///
    /// [`ReadError::Protocol`] for an oversized, empty, unknown or truncated
    /// frame, [`ReadError::Io`] for a failed read.
    pub(crate) fn read_from(&mut self, reader: &mut impl Read) -> Result<Received, ReadError> {
        loop {
            if let Some(body) = &mut self.body {
                let missing = body.len - body.payload.len();
                if missing == 0 {
                    let body = self.body.take().expect("the payload is being read");
                    self.header_len = 0;
                    return Ok(Received::Frame(Frame {
                        kind: body.kind,
                        payload: body.payload,
                    }));
                }
                // The buffer doubles, from a first chunk, but never past
                // the announced length: a sender's claim is not allocated
                // up front, and a whole payload takes no more than itself.
                // Once a large part has arrived, the rest is reserved at
                // once and backed by huge pages (see `prefer_huge_pages`).
                let received = body.payload.len();
                if received < HUGE_FROM {
                    body.payload
                        .reserve_exact(missing.min(received.max(FIRST_CHUNK)));
                } else if body.payload.capacity() < body.len {
                    body.payload.reserve_exact(missing);
                    prefer_huge_pages(&mut body.payload);
                }
                let room = missing.min(body.payload.capacity() - received);
                // `read_to_end` reads into spare capacity without zeroing
                // it, and keeps what it read when the reader would block;
                // limited to the room there is, it never grows the buffer.
                let read = reader
                    .by_ref()
                    .take(room as u64)
                    .read_to_end(&mut body.payload);
                match read {
                    // The reader ended before the payload did.
                    Ok(read) if read < room => {
                        return Err(self.truncated().expect("a payload is begun").into());
                    }
                    Ok(_) => {}
                    Err(error) => return would_block(error),
                }
            } else {
                // The length and the kind in one read: a body is never
                // empty, so the kind byte is always this frame's.
                match retry_interrupted(|| reader.read(&mut self.header[self.header_len..])) {
                    Ok(0) if self.header_len == 0 => return Ok(Received::Closed),
                    Ok(0) => return Err(self.truncated().expect("a frame is begun").into()),
                    Ok(n) => self.header_len += n,
                    Err(error) => return would_block(error),
                }
                if self.header_len >= HEADER_LEN {
                    let len = self.body_len();
                    if len > self.max_frame {
                        return Err(ProtocolError::FrameTooLarge {
                            len: len as u64,
                            cap: self.max_frame,
                        }
                        .into());
                    }
                    if len == 0 {
                        return Err(ProtocolError::EmptyFrame.into());
                    }
                }
                if self.header_len == HEADER_LEN + 1 {
                    let byte = self.header[HEADER_LEN];
                    let kind = Kind::from_byte(byte).ok_or(ProtocolError::UnknownKind(byte))?;
                    let mut payload = std::mem::take(&mut self.spare);
                    payload.clear();
                    self.body = Some(Body {
                        kind,
                        len: self.body_len() - 1,
                        payload,
                    });
                }
            }
        }
    }

    /// The error for the partial frame this reader holds, if any: what a
    /// peer that is gone left unfinished. (A copy of the peer's end of the
    /// channel in another process can keep the channel from ever reading
    /// end of file.)
    pub(crate) fn truncated(&self) -> Option<ProtocolError> {
        match &self.body {
            Some(body) => Some(ProtocolError::Truncated {
                expected: HEADER_LEN + 1 + body.len,
                received: HEADER_LEN + 1 + body.payload.len(),
            }),
            None if self.header_len >= HEADER_LEN => Some(ProtocolError::Truncated {
                expected: HEADER_LEN + self.body_len(),
                received: self.header_len,
            }),
            None if self.header_len > 0 => Some(ProtocolError::Truncated {
                expected: HEADER_LEN,
                received: self.header_len,
            }),
            None => None,
        }
    }

    /// Reads one whole frame from a blocking reader.
    ///
    /// # Errors
    ///
    /// As [`FrameReader::read_from`]; a closed channel is `Ok(None)`.
    pub(crate) fn read_blocking(
        &mut self,
        reader: &mut impl Read,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            match self.read_from(reader)? {
                Received::Frame(frame) => return Ok(Some(frame)),
                Received::Closed => return Ok(None),
                Received::Pending => {}
            }
        }
    }
}

/// How much of a payload must have arrived before the rest of its announced
/// length is reserved in one step, with huge pages.
const HUGE_FROM: usize = 2 << 20;

/// The size of a huge page on x86-64 and aarch64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the unwritten capacity of a large receive buffer
/// with huge pages (`MADV_HUGEPAGE`), where transparent huge pages are
/// allowed on request, as they are by default.
///
/// A large payload lands in fresh memory, and every 4 KiB page of it is a
/// fault, zeroed, before the bytes are copied in: that costs three times the
/// copy itself. A 2 MiB page is one fault for 512 of them. Only whole huge
/// pages inside the capacity are advised, so the buffer takes no more memory
/// than it would; the advice is a hint, and its failure (a kernel without
/// transparent huge pages) changes nothing.
///
/// The buffer must not grow after this: the advice splits its mapping, and
/// an allocator cannot then grow it in place with `mremap` but copies it.
/// [`FrameReader::read_from`] advises only the final reservation.
fn prefer_huge_pages(buffer: &mut Vec<u8>) {
    let unwritten = buffer.spare_capacity_mut();
    let start = unwritten.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + unwritten.len()) / HUGE_PAGE * HUGE_PAGE;
    if first < end {
        // SAFETY: `[first, end)` lies inside the buffer's allocation, in
        // capacity that holds no value yet; `MADV_HUGEPAGE` changes how its
        // pages will be backed, never their contents or the mapping.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

fn would_block(error: io::Error) -> Result<Received, ReadError> {
    if error.kind() == io::ErrorKind::WouldBlock {
        Ok(Received::Pending)
    } else {
        Err(ReadError::Io(error))
    }
}

/// Runs `op` again for as long as it is interrupted by a signal.
pub(crate) fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(any(test, fuzzing))]
pub mod fuzz;
#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = u32::try_from(payload.len() + 1)
            .unwrap()
            .to_le_bytes()
            .to_vec();
        bytes.push(kind);
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A reader that hands out its bytes a few at a time, like a socket.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn an_encoding_stops_short_of_what_a_frame_length_cannot_say() {
        use postcard::ser_flavors::Flavor;
        let mut out = AppendToVec(vec![0; 16]);
        let most = u32::MAX as usize - 16;
        assert!(out.fits(most).is_ok());
        for more in [most + 1, usize::MAX] {
            assert!(matches!(
                out.fits(more),
                Err(postcard::Error::SerializeBufferFull)
            ));
        }
        assert!(out.try_push(1).is_ok());
        assert_eq!(out.finalize().unwrap().len(), 17);
    }

    #[test]
    fn reads_frames_split_across_reads() {
        let mut bytes = frame(Kind::Returned as u8, b"first");
        bytes.extend(frame(Kind::Panicked as u8, b"second"));
        let mut reader = FrameReader::new(1024);
        let mut input = Trickle(&bytes);
        let one = reader.read_blocking(&mut input).unwrap().unwrap();
        let two = reader.read_blocking(&mut input).unwrap().unwrap();
        assert_eq!((one.kind, one.payload()), (Kind::Returned, &b"first"[..]));
        assert_eq!((two.kind, two.payload()), (Kind::Panicked, &b"second"[..]));
        assert!(reader.read_blocking(&mut input).unwrap().is_none());
    }

    #[test]
    fn builder_and_reader_agree() {
        let bytes = FrameBuilder::new(Kind::Returned)
            .encode(&("value", 7_u64))
            .unwrap()
            .finish();
        let frame = FrameReader::new(1024)
            .read_blocking(&mut &bytes[..])
            .unwrap()
            .unwrap();
        assert_eq!(frame.kind, Kind::Returned);
        let value: (String, u64) = decode(frame.payload()).unwrap();
        assert_eq!(value, ("value".to_owned(), 7));
    }

    /// Reads every frame in `bytes`.
    fn read_all(bytes: &[u8]) -> Vec<Frame> {
        let mut reader = FrameReader::new(1024);
        let mut input = Trickle(bytes);
        std::iter::from_fn(|| reader.read_blocking(&mut input).unwrap()).collect()
    }

    fn sent(mut frames: Outgoing) -> Vec<u8> {
        let mut bytes = Vec::new();
        frames.write_to(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_byte_vector_goes_ahead_in_a_bytes_frame() {
        let frames = value_frames(Kind::Call, b"ab", vec![1_u8, 2, 3], Vec::new()).unwrap();
        let [bytes, call] = read_all(&sent(frames)).try_into().unwrap();
        assert_eq!((bytes.kind, bytes.payload()), (Kind::Bytes, &[1, 2, 3][..]));
        assert_eq!((call.kind, call.payload()), (Kind::Call, &b"ab"[..]));
        let value: Vec<u8> =
            decode_value(&call.payload()[2..], Some(bytes.into_payload())).unwrap();
        assert_eq!(value, [1, 2, 3]);
    }

    #[test]
    fn the_largest_frame_is_found_with_or_without_bytes() {
        let mut frames = value_frames(Kind::Call, b"ab", vec![1_u8; 300], Vec::new()).unwrap();
        assert_eq!(frames.largest_body(), 301);
        frames.write_to(&mut Vec::new()).unwrap();
        assert_eq!(frames.largest_body(), 301, "once sent, and its bytes freed");
        let frames = value_frames(Kind::Call, &[0; 24], vec![1_u8; 3], Vec::new()).unwrap();
        assert_eq!(frames.largest_body(), 25);
        let frames = value_frames(Kind::Returned, &[0; 8], "x".repeat(500), Vec::new()).unwrap();
        assert_eq!(frames.largest_body(), 1 + 8 + 2 + 500);
    }

    #[test]
    fn other_values_are_encoded_in_their_frame() {
        let frames = value_frames(Kind::Returned, &[], vec![1_u16, 2], Vec::new()).unwrap();
        let [returned] = read_all(&sent(frames)).try_into().unwrap();
        assert_eq!(returned.kind, Kind::Returned);
        let value: Vec<u16> = decode_value(returned.payload(), None).unwrap();
        assert_eq!(value, [1, 2]);
        assert!(matches!(
            decode_value::<Vec<u16>>(&[], Some(vec![1, 2])),
            Err(ProtocolError::Unexpected("bytes"))
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        let error = FrameReader::new(1024)
            .read_blocking(&mut &bytes[..])
            .unwrap_err();
        assert!(
            matches!(
                error,
                ReadError::Protocol(ProtocolError::FrameTooLarge { len, cap: 1024 })
                    if len == u64::from(u32::MAX)
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_claimed_length_is_not_allocated_up_front() {
        // Claims 200 MiB (under the cap) but sends 10 bytes, then closes.
        let mut bytes = (200_u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[Kind::Returned as u8; 10]);
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
        let error = reader.read_blocking(&mut &bytes[..]).unwrap_err();
        assert!(
            matches!(
                error,
                ReadError::Protocol(ProtocolError::Truncated { expected, received: 14 })
                    if expected == (200 << 20) + 4
            ),
            "{error:?}"
        );
        let body = reader.body.as_ref().unwrap();
        assert!(
            body.payload.capacity() <= FIRST_CHUNK,
            "{}",
            body.payload.capacity()
        );
    }

    #[test]
    fn a_whole_payload_takes_no_more_than_its_length() {
        let payload = vec![7_u8; 3 * FIRST_CHUNK + 5];
        let bytes = frame(Kind::Returned as u8, &payload);
        let frame = FrameReader::new(DEFAULT_MAX_FRAME)
            .read_blocking(&mut &bytes[..])
            .unwrap()
            .expect("a frame");
        assert_eq!(frame.payload, payload);
        assert_eq!(frame.payload.capacity(), payload.len());
    }

    #[test]
    fn a_large_payload_is_reserved_once_past_the_threshold() {
        // Bytes arrive 256 KiB at a time, as from a socket: the buffer
        // doubles up to the threshold, then takes the rest of the announced
        // length in one step (the one backed by huge pages), and no more.
        struct Chunks<'a>(&'a [u8]);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(256 << 10);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let payload: Vec<u8> = (0..3 * HUGE_FROM + 12_345).map(|i| i as u8).collect();
        let bytes = frame(Kind::Returned as u8, &payload);
        let frame = FrameReader::new(DEFAULT_MAX_FRAME)
            .read_blocking(&mut Chunks(&bytes))
            .unwrap()
            .expect("a frame");
        assert!(frame.payload == payload, "the payload arrives intact");
        assert_eq!(frame.payload.capacity(), payload.len());
    }

    #[test]
    fn truncated_header_is_an_error() {
        let error = FrameReader::new(1024)
            .read_blocking(&mut &[5_u8, 0][..])
            .unwrap_err();
        assert!(matches!(
            error,
            ReadError::Protocol(ProtocolError::Truncated {
                expected: 4,
                received: 2
            })
        ));
    }

    #[test]
    fn garbage_kind_is_an_error() {
        let bytes = frame(0xee, b"garbage");
        let error = FrameReader::new(1024)
            .read_blocking(&mut &bytes[..])
            .unwrap_err();
        assert!(matches!(
            error,
            ReadError::Protocol(ProtocolError::UnknownKind(0xee))
        ));
    }

    #[test]
    fn empty_frame_is_an_error() {
        let error = FrameReader::new(1024)
            .read_blocking(&mut &[0_u8, 0, 0, 0][..])
            .unwrap_err();
        assert!(matches!(
            error,
            ReadError::Protocol(ProtocolError::EmptyFrame)
        ));
    }

    #[test]
    fn handshake_checks_magic_and_version() {
        let hello = hello_frame(Vec::new());
        let frame = FrameReader::new(1024)
            .read_blocking(&mut &hello[..])
            .unwrap()
            .unwrap();
        check_hello(frame.payload()).unwrap();

        let mut other = HELLO_MAGIC.to_vec();
        other.extend_from_slice(&99_u32.to_le_bytes());
        assert!(matches!(
            check_hello(&other),
            Err(ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            })
        ));
        assert!(matches!(
            check_hello(b"not an isolate child"),
            Err(ProtocolError::BadHandshake)
        ));
    }

    #[test]
    fn undecodable_payload_is_an_error() {
        assert!(matches!(
            decode::<String>(&[0xff, 0xff, 0xff]),
            Err(ProtocolError::Decode(_))
        ));
    }
}
