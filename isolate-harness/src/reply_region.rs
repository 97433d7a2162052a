//! The way a test child's result reaches its fork server: a shared memory
//! region, stamped with the pid of the process that wrote it.
//!
//! A result sent on a descriptor can be lost or forged by the test: a test
//! that closes every descriptor it holds (or `dup2`s over them) would cut
//! it, and any process that inherited the descriptor (a copy the test
//! forked, a process an earlier test left behind) could write a result
//! there in the test's name. A shared mapping is neither: it is not a
//! descriptor, so closing descriptors cannot cut it, and the server takes
//! what is in it only when the stamp names the pid of the test child it
//! forked, the one process whose end it then reads from `waitid`.
//!
//! A server has one region per test it runs at once, each reused test
//! after test. The test child appends frames to its region (its reply,
//! encoded in place, or its crash handler's report); once the child has
//! exited, the server takes them, which empties the region for the next
//! test. A region is a `MAP_SHARED | MAP_ANONYMOUS` mapping: a fork does
//! not copy its page tables, and its pages are made only where written, so
//! a region costs a test child one page fault for a small result.
//!
//! Appending bytes is async-signal-safe (atomics and copies into memory
//! already mapped), since the crash handler appends too. Only the process
//! [`crate::child`] set up as the test (its *owner*) writes: a forked copy
//! of it writes nothing, so a copy that returns from the test where the
//! test itself then crashes cannot make the crash a pass.
//!
//! A test child unmaps the server's other regions before the test runs,
//! so that it cannot write a result in another test's name; a server that
//! runs one test at a time has no other.
//!
//! What this does not do: stop a test from writing into its own region
//! through a pointer of its own. The verdict is safe against that where it
//! matters: a result counts only when the test process then exited with
//! code 0, and a process that dies by a signal is a crash whatever it
//! wrote.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;

use crate::child;
use crate::ipc::{HEADER_LEN, Kind};

/// Bytes of a region, header included: room for a result whose panic
/// message and error text are kept as head and tail, and for a crash
/// report. Only the pages a test writes are ever made.
pub(crate) const REGION_SIZE: usize = 1024 * 1024;

/// The start of a region: who wrote it, and how much.
#[repr(C)]
struct Header {
    /// The pid of the process that wrote the frames; 0 while empty.
    writer: AtomicU32,
    /// Bytes of frames after the header, published after they are written.
    len: AtomicU32,
}

const HEADER_SIZE: usize = std::mem::size_of::<Header>();

/// The bytes a region holds after its header.
const CAPACITY: usize = REGION_SIZE - HEADER_SIZE;

/// A region, owned by the fork server, which unmaps it when dropped.
pub(crate) struct Region {
    start: NonNull<u8>,
}

impl Region {
    /// Maps a fresh region, empty.
    ///
    /// # Errors
    ///
    /// When `mmap` fails (out of memory or of mappings).
    pub(crate) fn create() -> std::io::Result<Region> {
        // SAFETY: an anonymous mapping at an address of the kernel's
        // choosing touches no existing memory.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = NonNull::new(start.cast()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Region { start })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a `Header`-sized, suitably
        // aligned (page-aligned) area of zeroes or of values written
        // through these atomics, and lives as long as `self`.
        unsafe { self.start.cast::<Header>().as_ref() }
    }

    /// Makes this region the one the calling child appends to: called in a
    /// just-forked test child. Async-signal-safe.
    pub(crate) fn write_here(&self) {
        child::reply_region().store(self.start.as_ptr(), Ordering::SeqCst);
    }

    /// Where the region starts, for [`unmap`] in a test child that must
    /// not hold it.
    pub(crate) fn address(&self) -> usize {
        self.start.as_ptr() as usize
    }

    /// Moves the frames `writer` appended to the end of `into`, and empties
    /// the region for the next test. Frames any other process wrote are
    /// dropped; so are frames that claim more than the region holds.
    pub(crate) fn take(&self, writer: u32, into: &mut Vec<u8>) {
        let header = self.header();
        let stamped = header.writer.load(Ordering::Acquire);
        let len = header.len.load(Ordering::Acquire) as usize;
        if stamped == writer && len <= CAPACITY {
            // SAFETY: `len` bytes after the header lie inside the mapping;
            // the writer is dead, so nothing writes them meanwhile (and a
            // process that still could would only change the bytes read,
            // never their bounds).
            let frames =
                unsafe { std::slice::from_raw_parts(self.start.as_ptr().add(HEADER_SIZE), len) };
            into.extend_from_slice(frames);
        }
        header.len.store(0, Ordering::Release);
        header.writer.store(0, Ordering::Release);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `create` with this size and is
        // not used after this.
        unsafe { libc::munmap(self.start.as_ptr().cast(), REGION_SIZE) };
    }
}

/// Unmaps, in a just-forked test child, the region at `address`: another
/// test's, which this one must not be able to write its result into.
/// Async-signal-safe.
pub(crate) fn unmap(address: usize) {
    // SAFETY: `address` starts a region of `REGION_SIZE` bytes that the
    // forking server mapped; the child never uses it (the server's
    // `Region`, copied into the child, is never dropped there: the child
    // ends with `_exit`).
    unsafe {
        libc::syscall(
            libc::SYS_munmap,
            address as libc::c_long,
            REGION_SIZE as libc::c_long,
        );
    }
}

/// Whether this process writes its frames to a region.
pub(crate) fn is_set() -> bool {
    !child::reply_region().load(Ordering::SeqCst).is_null()
}

/// This process's region and its header, once stamped with its pid,
/// emptied if another process wrote it before: `None` when this process
/// is not the owner of its region (a copy forked by the test), or has no
/// region. Async-signal-safe.
fn claim() -> Option<(*mut u8, &'static Header)> {
    let start = child::reply_region().load(Ordering::SeqCst);
    let pid = child::own_pid();
    if start.is_null() || !child::is_owner_pid(pid) {
        return None;
    }
    // SAFETY: a region set with `write_here` is a live mapping of
    // `REGION_SIZE` bytes, its header at the start, page-aligned; it is
    // never unmapped in the process that writes it.
    let header = unsafe { &*start.cast::<Header>() };
    if header.writer.load(Ordering::Acquire) != pid {
        header.len.store(0, Ordering::Release);
        header.writer.store(pid, Ordering::Release);
    }
    Some((start, header))
}

/// Appends `parts`, one after another, to this process's region, stamped
/// with its pid, and says whether they are in. Nothing is appended when
/// this process is not the owner of its region (a copy forked by the
/// test), when no region is set, or when the parts do not fit (the server
/// then has no result: the test fails as one that exited without one).
/// Async-signal-safe.
pub(crate) fn append(parts: &[&[u8]]) -> bool {
    let Some((start, header)) = claim() else {
        return false;
    };
    let len = header.len.load(Ordering::Acquire) as usize;
    let total: usize = parts.iter().map(|part| part.len()).sum();
    if total > CAPACITY - len {
        return false;
    }
    let mut at = HEADER_SIZE + len;
    for part in parts {
        // SAFETY: `at + part.len()` stays within the mapping, checked
        // above; the source is a valid slice that does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), start.add(at), part.len()) };
        at += part.len();
    }
    // Published after the bytes: a reader never sees a length whose bytes
    // are not there.
    header.len.store((len + total) as u32, Ordering::Release);
    true
}

/// Appends one reply frame of `kind` to call `call`, its payload the call
/// id and then `value` encoded, as [`append`] appends, and says whether it
/// is in. The frame is encoded in the region itself: a test child writes
/// its reply with no buffer of its own, whose page would cost it a fault,
/// and the header and call id are fixed-size copies, made in place, not
/// by libc's `memcpy`, whose code a fork leaves unmapped. Nothing is
/// appended where `append` appends nothing, or when `value` cannot be
/// encoded in the room left. Not async-signal-safe: `value` may be
/// encoded by code of its own.
pub(crate) fn append_frame<T: Serialize + ?Sized>(kind: Kind, call: u64, value: &T) -> bool {
    /// Where the value starts: after the length, the kind and the call id.
    const VALUE_AT: usize = HEADER_LEN + 1 + 8;
    let Some((start, header)) = claim() else {
        return false;
    };
    let len = header.len.load(Ordering::Acquire) as usize;
    // SAFETY: the bytes after the region's `len` are inside the mapping,
    // and nothing else in this process refers to them.
    let room =
        unsafe { std::slice::from_raw_parts_mut(start.add(HEADER_SIZE + len), CAPACITY - len) };
    if room.len() < VALUE_AT {
        return false;
    }
    let Ok(encoded) = postcard::to_slice(value, &mut room[VALUE_AT..]).map(|value| value.len())
    else {
        return false;
    };
    let body = VALUE_AT - HEADER_LEN + encoded;
    let Ok(body_len) = u32::try_from(body) else {
        return false;
    };
    room[..HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    room[HEADER_LEN] = kind as u8;
    room[HEADER_LEN + 1..VALUE_AT].copy_from_slice(&call.to_le_bytes());
    header
        .len
        .store((len + HEADER_LEN + body) as u32, Ordering::Release);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for everything that writes: the region this process
    /// appends to is one per process.
    #[test]
    fn the_owner_s_frames_are_taken_once_and_only_what_fits() {
        child::become_owner();
        let region = Region::create().unwrap();
        region.write_here();
        assert!(append(&[b"one", b"two"]));
        assert!(append(&[b"three"]));
        assert!(!append(&[&vec![1_u8; CAPACITY]]), "too big to fit");
        let mut taken = b"head".to_vec();
        region.take(child::own_pid(), &mut taken);
        assert_eq!(taken, b"headonetwothree");
        taken.clear();
        region.take(child::own_pid(), &mut taken);
        assert!(taken.is_empty(), "a region is emptied when taken");
        // A frame encoded in the region is the frame a builder makes.
        let value: Result<(), String> = Err("boom".to_owned());
        assert!(append_frame(Kind::Returned, 9, &value));
        assert!(
            !append_frame(Kind::Returned, 9, &"x".repeat(CAPACITY)),
            "too big to fit"
        );
        region.take(child::own_pid(), &mut taken);
        let built = crate::ipc::FrameBuilder::appending(Kind::Returned, Vec::new())
            .push(&9_u64.to_le_bytes())
            .encode(&value)
            .unwrap()
            .finish();
        assert_eq!(taken, built);
        child::reply_region().store(std::ptr::null_mut(), Ordering::SeqCst);
        assert!(!append(&[b"x"]), "no region, nothing appended");
        assert!(!append_frame(Kind::Returned, 0, &()), "nor a frame");
    }

    #[test]
    fn frames_of_another_process_are_dropped() {
        let region = Region::create().unwrap();
        let header = region.header();
        header.writer.store(child::own_pid() + 1, Ordering::Release);
        header.len.store(3, Ordering::Release);
        let mut taken = Vec::new();
        region.take(child::own_pid(), &mut taken);
        assert!(taken.is_empty());
        // A length past the region is dropped too, never read.
        header.writer.store(7, Ordering::Release);
        header.len.store(u32::MAX, Ordering::Release);
        region.take(7, &mut taken);
        assert!(taken.is_empty());
    }
}
