//! Captured output: the scratch files a test's output and logs go to, and
//! the part of them that is kept for the report.
//!
//! # The scratch directory
//!
//! Scratch files go to the directory `ISOLATE_SCRATCH_DIR` names, if it is
//! set, and only there. Otherwise they go to memory, `/dev/shm`, if a file
//! can be created there (three files per test on a disk cost more than
//! the test), else to the temporary directory (`TMPDIR`, else `/tmp`).
//! The directory is chosen once, before the build, by creating a file in
//! it ([`choose_scratch_dir`]): when none can be, the run fails there,
//! naming the directory and the cause, rather than every test with it.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use isolate_harness::report_stream;
use tempfile::NamedTempFile;

/// Bytes of each output stream kept from its start, and from its end.
pub(super) const KEPT_OUTPUT: usize = 16 * 1024;

/// The variable that names the scratch directory.
const SCRATCH_DIR_VAR: &str = "ISOLATE_SCRATCH_DIR";

/// Memory, where the machine has it as a file system.
const SHARED_MEMORY: &str = "/dev/shm";

/// The scratch directory, once chosen.
static SCRATCH_DIR: OnceLock<PathBuf> = OnceLock::new();

/// No scratch file could be created where the run would keep them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScratchDirError {
    #[error("failed to create a scratch file in {}, which {SCRATCH_DIR_VAR} names", dir.display())]
    Named {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to create a scratch file in {} or in the temporary directory {} \
         (set {SCRATCH_DIR_VAR} to a directory where files can be created)",
        memory.display(),
        dir.display()
    )]
    Default {
        memory: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Chooses the directory every scratch file of the run goes to (see the
/// module's docs), by creating a file there, and returns it.
///
/// # Errors
///
/// When no file can be created in the directory `ISOLATE_SCRATCH_DIR`
/// names or, without it, in `/dev/shm` nor in the temporary directory.
pub(crate) fn choose_scratch_dir() -> Result<&'static Path, ScratchDirError> {
    if let Some(dir) = SCRATCH_DIR.get() {
        return Ok(dir);
    }
    let named = std::env::var_os(SCRATCH_DIR_VAR)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from);
    let dir = choose(named, [PathBuf::from(SHARED_MEMORY), std::env::temp_dir()])?;
    Ok(SCRATCH_DIR.get_or_init(|| dir))
}

/// The directory `named`, if given, else the first of `defaults` where a
/// file can be created; as an absolute path, since the tests, which run
/// elsewhere, are handed paths in it.
fn choose(named: Option<PathBuf>, defaults: [PathBuf; 2]) -> Result<PathBuf, ScratchDirError> {
    let absolute = |dir: PathBuf| std::path::absolute(&dir).unwrap_or(dir);
    if let Some(dir) = named.map(absolute) {
        return match NamedTempFile::new_in(&dir) {
            Ok(_) => Ok(dir),
            Err(source) => Err(ScratchDirError::Named { dir, source }),
        };
    }
    let [memory, temporary] = defaults.map(absolute);
    if NamedTempFile::new_in(&memory).is_ok() {
        return Ok(memory);
    }
    match NamedTempFile::new_in(&temporary) {
        Ok(_) => Ok(temporary),
        Err(source) => Err(ScratchDirError::Default {
            memory,
            dir: temporary,
            source,
        }),
    }
}

/// Where scratch files go: the directory [`choose_scratch_dir`] chose, or
/// the temporary directory if none was chosen.
fn scratch_dir() -> &'static Path {
    SCRATCH_DIR.get_or_init(std::env::temp_dir)
}

/// A scratch file could not be created.
#[derive(Debug, thiserror::Error)]
#[error("failed to create a scratch file in {}", dir.display())]
pub(super) struct ScratchFileError {
    dir: PathBuf,
    #[source]
    source: io::Error,
}

impl ScratchFileError {
    fn new(source: io::Error) -> ScratchFileError {
        ScratchFileError {
            dir: scratch_dir().to_owned(),
            source,
        }
    }
}

/// A scratch file with no name, gone once closed, for a process's output:
/// the file to read it from, and a descriptor of it for the process.
pub(super) fn output_file() -> Result<(File, File), ScratchFileError> {
    let file = tempfile::tempfile_in(scratch_dir()).map_err(ScratchFileError::new)?;
    let writer = file.try_clone().map_err(ScratchFileError::new)?;
    Ok((file, writer))
}

/// A scratch file with a name, to hand to a test; removed when dropped.
pub(super) fn named_scratch_file() -> Result<NamedTempFile, ScratchFileError> {
    NamedTempFile::new_in(scratch_dir()).map_err(ScratchFileError::new)
}

/// The head and tail of a text, as the runner keeps output.
pub(super) fn kept(text: &str) -> String {
    report_stream::head_and_tail(text, KEPT_OUTPUT).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_preferred_then_the_temporary_directory_then_an_error() {
        let usable = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let unusable = PathBuf::from("/proc/no-scratch-files-here");
        let also_unusable = PathBuf::from("/proc/nor-here");
        let chosen = choose(None, [usable.path().to_owned(), other.path().to_owned()]);
        assert_eq!(chosen.unwrap(), usable.path());
        let chosen = choose(None, [unusable.clone(), other.path().to_owned()]);
        assert_eq!(chosen.unwrap(), other.path());
        let error = choose(None, [unusable, also_unusable]).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "failed to create a scratch file in /proc/no-scratch-files-here or in the \
                 temporary directory /proc/nor-here (set ISOLATE_SCRATCH_DIR"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_named_directory_is_the_only_one_tried() {
        let usable = tempfile::tempdir().unwrap();
        let unusable = PathBuf::from("/proc/no-scratch-files-here");
        let error = choose(
            Some(unusable.clone()),
            [usable.path().to_owned(), usable.path().to_owned()],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to create a scratch file in /proc/no-scratch-files-here, which ISOLATE_SCRATCH_DIR names"
        );
        assert!(std::error::Error::source(&error).is_some());
        let chosen = choose(Some(usable.path().to_owned()), [unusable.clone(), unusable]);
        assert_eq!(chosen.unwrap(), usable.path());
    }
}
