//! The exclusive lock on the store's data dir (`<storage.path>/.lock`), taken when the store
//! opens: two Clew processes on one `storage.path` would interleave WAL appends, flush the same
//! head twice and delete each other's blocks. The second process fails at start-up with an error
//! naming the directory, the holder's PID and the fix.
//!
//! The lock itself is the sending queue's ([`clew_encryption::dir_lock`]: `flock`, released by
//! the kernel when the holder exits, even on `kill -9`). One difference: within one process the
//! lock is shared — every open of the same directory holds the same [`DataDirLock`], and the
//! file is unlocked when the last one is dropped. A [`crate::Store`]'s background tasks keep it
//! alive until [`crate::Store::shutdown`], so tests (and tools) that reopen a directory in the same
//! process, as after a crash, would otherwise lock themselves out; the hazard this guards against
//! is another process.

use crate::StoreError;
use clew_encryption::dir_lock::{DirLock, DirLockError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = ".lock";

/// The configuration key named in the error.
const CONFIG_KEY: &str = "storage.path";

/// A held data dir lock; the directory stays locked while any clone lives.
#[derive(Debug, Clone)]
pub struct DataDirLock {
    _held: Arc<DirLock>,
}

/// Data dirs this process holds (canonical path → the lock), so a second open shares the lock.
static HELD: Mutex<Option<HashMap<PathBuf, Weak<DirLock>>>> = Mutex::new(None);

/// Creates `data_dir` if needed and locks it for this process.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, StoreError> {
    let io = |source| StoreError::Io {
        path: data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    // Canonical, so `./data` and `/abs/data` are one entry.
    let key = data_dir.canonicalize().map_err(io)?;
    // A poisoned map is still a valid map (every update is a single insert/remove).
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    let held = held.get_or_insert_with(HashMap::new);
    if let Some(lock) = held.get(&key).and_then(Weak::upgrade) {
        return Ok(DataDirLock { _held: lock });
    }
    let lock = Arc::new(DirLock::acquire(&key, LOCK_FILE).map_err(|e| error(data_dir, e))?);
    held.retain(|_, w| w.strong_count() > 0);
    held.insert(key, Arc::downgrade(&lock));
    Ok(DataDirLock { _held: lock })
}

fn error(data_dir: &Path, e: DirLockError) -> StoreError {
    match e {
        DirLockError::Locked { pid, .. } => {
            let holder = match pid {
                Some(pid) => format!("another process (PID {pid})"),
                None => "another process".to_string(),
            };
            StoreError::Config {
                key: CONFIG_KEY.into(),
                message: format!(
                    "the data dir {} is in use by {holder}: two Clew processes on one data dir \
                     corrupt each other's WAL and blocks (fix: stop the other process, or give \
                     this one its own {CONFIG_KEY})",
                    data_dir.display()
                ),
            }
        }
        DirLockError::Io { path, source } => StoreError::Io {
            path: path.display().to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_one_process_share_the_lock_and_another_holder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_data_dir(dir.path()).unwrap();
        // The same directory through another spelling: the same lock, no conflict.
        let b = lock_data_dir(&dir.path().join(".")).unwrap();
        assert!(Arc::ptr_eq(&a._held, &b._held));
        // Another open file description (what another process has) conflicts.
        let other = DirLock::acquire(dir.path(), LOCK_FILE).unwrap_err();
        assert!(matches!(other, DirLockError::Locked { .. }), "{other}");
        let msg = error(dir.path(), other).to_string();
        assert!(msg.starts_with("storage.path: the data dir "), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("fix: stop the other process"), "{msg}");
        // Released only when the last holder is gone.
        drop(a);
        assert!(DirLock::acquire(dir.path(), LOCK_FILE).is_err());
        drop(b);
        let again = DirLock::acquire(dir.path(), LOCK_FILE).unwrap();
        // Held elsewhere now: this process's next open is refused like any other.
        assert!(lock_data_dir(dir.path()).is_err());
        drop(again);
        lock_data_dir(dir.path()).unwrap();
    }
}
