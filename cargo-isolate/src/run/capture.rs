//! Captured output: the scratch files a test's output and logs go to, and
//! the part of them that is kept for the report.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use isolate_harness::report_stream;

/// Bytes of each output stream kept from its start, and from its end.
pub(super) const KEPT_OUTPUT: usize = 16 * 1024;

/// Where logs and captured output go: memory (`/dev/shm`) where there is
/// one, as three files per test on a disk cost more than the test.
pub(super) fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        }
    })
}

/// The first and last `kept` bytes of a captured stream, as text.
pub(super) fn read_kept(mut file: File, kept: usize) -> String {
    let kept = kept as u64;
    let size = file.metadata().map_or(0, |metadata| metadata.len());
    let mut read = |offset: u64, len: u64| {
        let mut bytes = Vec::new();
        if file.seek(io::SeekFrom::Start(offset)).is_ok() {
            let _ = (&mut file).take(len).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    if size <= 2 * kept {
        return read(0, size);
    }
    let head = read(0, kept);
    let tail = read(size - kept, kept);
    report_stream::join_head_and_tail(&head, size - 2 * kept, &tail)
}
