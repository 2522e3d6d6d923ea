//! The exclusive lock of a data directory, shared (like [`crate::sealed_record`]) by Clew's two
//! append-only logs: the store's data dir (`<storage.path>/.lock`, `clew-store`) and the
//! exporters' sending queue (`<queue dir>/lock`, `clew-export`). Two processes appending to one
//! log interleave records and overwrite each other's cursors, so the second one must not start.
//!
//! The lock is an advisory `flock` on a file in the directory, held for as long as the returned
//! [`DirLock`] lives. The kernel drops it when the file is closed — also when the process is
//! killed (`kill -9`), so a crash never leaves a stale lock behind. The holder writes its PID into
//! the file, only to name it in the error the next process gets; the PID is never trusted for
//! anything else (a stale PID in an unlocked file is simply overwritten).
//!
//! `flock` locks belong to the open file description: a second [`DirLock::acquire`] of the same
//! directory conflicts even within one process.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another open file description (another process, usually) holds the lock.
    #[error("{} is locked by another process{}", dir.display(), holder_text(*pid))]
    Locked {
        dir: PathBuf,
        /// The holder's PID as written in the lock file, if it is readable.
        pid: Option<u32>,
    },
    /// The directory or the lock file cannot be created, opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (PID {pid})"),
        None => String::new(),
    }
}

/// A held directory lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` (and its parents) if needed and takes the exclusive lock on
    /// `dir/<file_name>` without waiting, writing this process's PID into the file.
    pub fn acquire(dir: &Path, file_name: &str) -> Result<DirLock, DirLockError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DirLockError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(file_name);
        // Never truncate on open: the file may be another process's, holding its PID.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DirLockError::Locked {
                    dir: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        // Ours now: replace whatever PID a previous (dead) holder left.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(io_err(&path))?;
        Ok(DirLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open lock file (the lock lives as long as it is open).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// The PID a holder wrote, if the file holds one (it may be empty for a moment while the holder
/// is still writing it, or written by a Clew that did not write PIDs).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("data");
        let first = DirLock::acquire(&sub, ".lock").unwrap();
        assert_eq!(
            fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        let err = DirLock::acquire(&sub, ".lock").unwrap_err();
        match &err {
            DirLockError::Locked { dir, pid } => {
                assert_eq!(dir, &sub);
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&sub.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = DirLock::acquire(&sub, ".lock").unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_pid_left_in_an_unlocked_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // A longer stale PID than ours: the file must not keep its tail.
        fs::write(dir.path().join(".lock"), "4294967295999\n").unwrap();
        let lock = DirLock::acquire(dir.path(), ".lock").unwrap();
        assert_eq!(
            fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn an_unreadable_pid_is_left_out_of_the_message() {
        let err = DirLockError::Locked {
            dir: PathBuf::from("/x"),
            pid: None,
        };
        assert_eq!(err.to_string(), "/x is locked by another process");
    }
}
