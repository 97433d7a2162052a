//! The frame reader of `isolate-harness` on arbitrary bytes: a cap, a way
//! of splitting the bytes across reads, and the stream itself. It fails
//! when the reader panics, holds a frame over its cap, allocates more for
//! a payload than the payload's length or than has arrived of it, or reads
//! other frames or another error than a reading of the whole stream at
//! once (see `isolate_harness::__fuzz::frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isolate_harness::__fuzz::frames(data));
