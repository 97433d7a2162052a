//! The report-stream reader of `isolate-harness` on arbitrary bytes: the
//! first byte sets the longest line kept, the rest is the stream. It fails
//! when the reader panics, errs on bytes it only has to skip, or gives
//! more items than the stream has lines. (That it never holds more than its
//! limit of one line is a property test beside the reader.)

#![no_main]

use isolate_harness::report_stream::LineReader;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((limit, stream)) = data.split_first() else {
        return;
    };
    let lines = stream.split(|byte| *byte == b'\n').count();
    let mut reader = LineReader::with_limit(stream, usize::from(*limit) + 1);
    let mut items = 0;
    while let Some(_item) = reader.next_line().expect("reading a slice never fails") {
        items += 1;
        assert!(items <= lines, "{items} items from {lines} lines");
    }
});
