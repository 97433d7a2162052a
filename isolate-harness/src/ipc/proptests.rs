//! Property tests of the frame reader on random, built and mutated input,
//! split across reads at random: the reader's promises themselves are
//! checked by [`read_checked`], for every input here.

use proptest::prelude::*;
use proptest::sample::Index;

use super::fuzz::{self, Reading, read_checked};
use super::{FIRST_CHUNK, FrameBuilder, HEADER_LEN, Kind, ProtocolError, ReadError, value_frames};

/// Every kind there is.
fn kinds() -> Vec<Kind> {
    (0..=u8::MAX).filter_map(Kind::from_byte).collect()
}

/// Steps for [`read_checked`]: none (every read hands out what it is
/// asked for), or a few of any kind.
fn steps() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}

/// Caps from none at all to one no frame here reaches.
fn cap() -> impl Strategy<Value = usize> {
    prop_oneof![0..64_usize, 0..1024_usize, Just(super::DEFAULT_MAX_FRAME)]
}

/// Bytes that look like frames: small lengths, kinds mostly real, and
/// payloads that may not match the length.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        3 => prop::sample::select(kinds()).prop_map(|kind| kind as u8),
        1 => any::<u8>(),
    ];
    let piece = (0..48_u32, kind, prop::collection::vec(any::<u8>(), 0..48));
    prop::collection::vec(piece, 0..6).prop_map(|pieces| {
        let mut bytes = Vec::new();
        for (len, kind, payload) in pieces {
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.push(kind);
            bytes.extend_from_slice(&payload);
        }
        bytes
    })
}

/// Frames as [`FrameBuilder`] builds them.
fn built() -> impl Strategy<Value = Vec<(Kind, Vec<u8>)>> {
    let frame = (
        prop::sample::select(kinds()),
        prop::collection::vec(any::<u8>(), 0..200),
    );
    prop::collection::vec(frame, 0..8)
}

/// `frames` one after the other, and where each ends.
fn concatenate(frames: &[(Kind, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for (kind, payload) in frames {
        bytes = FrameBuilder::appending(*kind, bytes).push(payload).finish();
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// The largest frame body among `frames`.
fn largest(frames: &[(Kind, Vec<u8>)]) -> usize {
    frames
        .iter()
        .map(|(_, payload)| payload.len() + 1)
        .max()
        .unwrap_or(0)
}

/// One change to a stream.
#[derive(Debug, Clone)]
enum Mutation {
    /// One byte with some of its bits flipped (those set in the mask).
    Flip(Index, u8),
    /// The stream cut short.
    Truncate(Index),
    /// Bytes inserted.
    Extend(Index, Vec<u8>),
}

impl Mutation {
    /// Applies the change, and returns where it starts: bytes before it
    /// are as they were.
    fn apply(&self, bytes: &mut Vec<u8>) -> usize {
        match self {
            Mutation::Flip(at, mask) => {
                if bytes.is_empty() {
                    return 0;
                }
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
                at
            }
            Mutation::Truncate(at) => {
                let at = at.index(bytes.len() + 1);
                bytes.truncate(at);
                at
            }
            Mutation::Extend(at, extra) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, extra.iter().copied());
                at
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=u8::MAX).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, extra)| Mutation::Extend(at, extra)),
    ]
}

/// A value of one of the types that travel differently.
#[derive(Debug, Clone)]
enum Value {
    Bytes(Vec<u8>),
    Text(String),
    Numbers(Vec<u16>),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600).prop_map(Value::Bytes),
        ".{0,200}".prop_map(Value::Text),
        prop::collection::vec(any::<u16>(), 0..300).prop_map(Value::Numbers),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_read_as_a_whole_reading_does(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), frame_like()],
        cap in cap(),
        steps in steps(),
    ) {
        if let Err(error) = read_checked(&bytes, cap, &steps).end {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn the_fuzz_target_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::frames(&data);
    }

    #[test]
    fn built_frames_round_trip(frames in built(), steps in steps()) {
        let (bytes, _) = concatenate(&frames);
        let reading = read_checked(&bytes, largest(&frames), &steps);
        prop_assert!(reading.end.is_ok(), "{:?}", reading.end);
        prop_assert_eq!(reading.frames, frames);
    }

    #[test]
    fn mutated_frames_keep_what_comes_before_the_change(
        frames in built(),
        mutation in mutation(),
        steps in steps(),
    ) {
        let (mut bytes, ends) = concatenate(&frames);
        let at = mutation.apply(&mut bytes);
        let intact = ends.iter().filter(|end| **end <= at).count();
        let Reading { frames: read, .. } = read_checked(&bytes, largest(&frames).max(1), &steps);
        prop_assert!(read.len() >= intact, "{} of {intact} intact frames read", read.len());
        prop_assert_eq!(&read[..intact], &frames[..intact]);
    }

    #[test]
    fn largest_body_is_the_largest_frame_read(
        before in built(),
        kind in prop::sample::select(kinds()),
        prefix in prop::collection::vec(any::<u8>(), 0..24),
        value in value(),
        steps in steps(),
    ) {
        let (buffer, _) = concatenate(&before);
        let mut outgoing = match value {
            Value::Bytes(value) => value_frames(kind, &prefix, value, buffer),
            Value::Text(value) => value_frames(kind, &prefix, value, buffer),
            Value::Numbers(value) => value_frames(kind, &prefix, value, buffer),
        }
        .unwrap();
        let body = outgoing.largest_body();
        let mut bytes = Vec::new();
        outgoing.write_to(&mut bytes).unwrap();

        let reading = read_checked(&bytes, body, &steps);
        prop_assert!(reading.end.is_ok(), "{:?}", reading.end);
        prop_assert_eq!(largest(&reading.frames), body);

        let end = read_checked(&bytes, body - 1, &steps).end;
        prop_assert!(
            matches!(end, Err(ReadError::Protocol(ProtocolError::FrameTooLarge { .. }))),
            "{:?}",
            end
        );
    }
}

proptest! {
    // Up to a few hundred KiB each: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_claimed_length_is_allocated_as_it_arrives(
        claimed in 1..8 * FIRST_CHUNK,
        arrived in 0..5 * FIRST_CHUNK,
        kind in prop::sample::select(kinds()),
        steps in steps(),
    ) {
        let len = u32::try_from(claimed).unwrap();
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.push(kind as u8);
        bytes.resize(HEADER_LEN + 1 + arrived, 7);
        read_checked(&bytes, claimed, &steps);
    }
}
