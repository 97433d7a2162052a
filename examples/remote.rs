//! Remote objects: values that live in an isolated child, used from here.
//!
//! First the Python library's first example, through a remote `Stdout`:
//!
//! ```python
//! sys = import_isolated('sys')
//! sys.stdout.write('Hello world\n')
//! ```
//!
//! Then a stateful decoder, living in a child behind a proxy that
//! `#[isolate_harness::remote]` makes: a bad frame crashes it, the parent
//! says how, replaces it with a fresh child, and decodes the rest.
//!
//! Run it with `cargo run --example remote`.

use std::io::Write;

use isolate::buggy;
use isolate_harness::{Error, Isolate};

/// A decoder of a made-up format: a frame is a length byte and that many
/// bytes. Its state (the frames so far) stays in the child.
struct Decoder {
    frames: Vec<Vec<u8>>,
}

#[isolate_harness::remote]
impl Decoder {
    fn new() -> Self {
        Decoder { frames: Vec::new() }
    }

    /// Decodes one frame and keeps it; returns how many it holds. Trusts
    /// the length byte, as C code might: a frame marked 0xff writes
    /// through a null pointer.
    fn decode(&mut self, frame: &[u8]) -> usize {
        match frame.split_first() {
            Some((0xff, _)) => buggy::dragons_here(),
            Some((&length, rest)) => self.frames.push(rest[..usize::from(length)].to_vec()),
            None => {}
        }
        self.frames.len()
    }

    /// The bytes of every frame decoded so far.
    fn total_bytes(&self) -> usize {
        self.frames.iter().map(Vec::len).sum()
    }
}

fn main() -> Result<(), Error> {
    // sys = import_isolated('sys'); sys.stdout.write('Hello world\n')
    let sys = Isolate::fork()?;
    let stdout = sys.spawn(|()| std::io::stdout(), ())?;
    stdout.call(
        |stdout, text: String| stdout.write_all(text.as_bytes()).is_ok(),
        "Hello world\n".to_owned(),
    )?;

    // A decoder in a child of its own; a bad frame takes only the child.
    let isolate = Isolate::fork()?;
    let mut decoder = DecoderProxy::new(&isolate)?;
    let frames: [&[u8]; 4] = [
        &[2, b'h', b'i'],
        &[0xff, 0],
        &[1, b'!'],
        &[3, b'a', b'b', b'c'],
    ];
    for frame in frames {
        match decoder.decode(frame) {
            Ok(count) => println!("decoded {frame:?}: {count} frame(s) in the decoder"),
            Err(error) if error.termination().is_some() => {
                println!("decoding {frame:?} took the decoder down: {error}");
                // Every handle of the dead child says the same now.
                println!("  and then: {}", decoder.total_bytes().unwrap_err());
                isolate.restart()?;
                decoder = DecoderProxy::new(&isolate)?;
                println!("  a fresh decoder in child {}", isolate.id().unwrap_or(0));
            }
            Err(error) => return Err(error),
        }
    }
    println!("{} bytes decoded after the crash", decoder.total_bytes()?);
    Ok(())
}
