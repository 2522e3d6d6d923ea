//! Free-space watermarks for the data directory (`storage.disk`).
//!
//! A full disk must never be found by a failing write: a torn WAL append is refused and truncated
//! (see `wal/mod.rs`), but a block or compaction output cut short wastes space and work. So the
//! store stops accepting spans *before* the filesystem fills: below the stop watermark every
//! append is refused retryably ([`crate::StoreError::Overloaded`] → gRPC `UNAVAILABLE` with
//! `RetryInfo`, HTTP 503 + `Retry-After`), and only once free space is back above the (higher)
//! resume watermark are appends accepted again — hysteresis, so ingest does not flap at the line.
//! While below the resume watermark the flusher writes the head out early (blocks are several
//! times smaller than the WAL that held the same spans, and the WAL segments go once they are in
//! blocks), and compaction skips a round whose output might not fit.
//!
//! Free space comes from `statvfs` (`f_bavail`: what an unprivileged writer may use), read at
//! most every [`CHECK_INTERVAL`], never per request.

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How stale the free-space reading may be.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// `storage.disk`: when to stop and resume accepting spans. Each watermark is the *smaller* of
/// its MiB and percent values, so the MiB values govern large disks and the percentages keep a
/// small disk (a 48 MiB test filesystem, a small volume) usable instead of refusing everything.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// `false` turns the watermarks off (writes then fail only when the disk is really full).
    pub enabled: bool,
    /// Stop accepting spans below this much free space…
    pub min_free_mib: u64,
    /// …or below this share of the filesystem, whichever is smaller.
    pub min_free_percent: f64,
    /// Accept again once free space is back above this much…
    pub resume_free_mib: u64,
    /// …or this share of the filesystem, whichever is smaller.
    pub resume_free_percent: f64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_free_mib: 256,
            min_free_percent: 5.0,
            resume_free_mib: 512,
            resume_free_percent: 10.0,
        }
    }
}

/// A configuration mistake: the key under `storage.disk` and the message with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `storage.disk.{key}`: {message}")]
pub struct DiskConfigError {
    pub key: &'static str,
    pub message: String,
}

impl DiskConfig {
    pub fn validate(&self) -> Result<(), DiskConfigError> {
        for (key, v) in [
            ("min_free_percent", self.min_free_percent),
            ("resume_free_percent", self.resume_free_percent),
        ] {
            if !(0.0..100.0).contains(&v) {
                return Err(DiskConfigError {
                    key,
                    message: format!("{v} is not a percentage below 100 (fix: e.g. 5)"),
                });
            }
        }
        if self.resume_free_mib <= self.min_free_mib {
            return Err(DiskConfigError {
                key: "resume_free_mib",
                message: format!(
                    "must be above min_free_mib ({}), or ingest would flap at the watermark (fix: e.g. {})",
                    self.min_free_mib,
                    self.min_free_mib.saturating_mul(2).max(1)
                ),
            });
        }
        if self.resume_free_percent <= self.min_free_percent {
            return Err(DiskConfigError {
                key: "resume_free_percent",
                message: format!(
                    "must be above min_free_percent ({}), or ingest would flap at the watermark (fix: e.g. {})",
                    self.min_free_percent,
                    (self.min_free_percent * 2.0).clamp(1.0, 99.0)
                ),
            });
        }
        Ok(())
    }

    /// The stop and resume watermarks in bytes for a filesystem of `total` bytes.
    pub fn watermarks(&self, total: u64) -> (u64, u64) {
        let pick = |mib: u64, pct: f64| (mib << 20).min((total as f64 * pct / 100.0) as u64);
        (
            pick(self.min_free_mib, self.min_free_percent),
            pick(self.resume_free_mib, self.resume_free_percent),
        )
    }
}

/// One `statvfs` reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    pub total: u64,
}

/// Reads the free space of the filesystem holding `path`.
pub fn statvfs(path: &Path) -> std::io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a properly sized out-parameter that
    // statvfs fills completely on success (we read it only then).
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut buf) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = buf.f_frsize as u64;
    Ok(Space {
        free: (buf.f_bavail as u64).saturating_mul(frsize),
        total: (buf.f_blocks as u64).saturating_mul(frsize),
    })
}

/// The watermark state of one data directory, shared by the store's append path, flusher and
/// compactor. Cheap to ask: a reading is reused for [`CHECK_INTERVAL`].
pub struct DiskGuard {
    cfg: DiskConfig,
    path: PathBuf,
    started: Instant,
    /// Milliseconds since `started` of the last reading (+1, so 0 means "never").
    last_check: AtomicU64,
    refreshing: Mutex<()>,
    refusing: AtomicBool,
    free: AtomicU64,
    total: AtomicU64,
    free_gauge: Gauge,
    refusing_gauge: Gauge,
    refused_requests: Counter,
    refused_spans: Counter,
    skipped_compactions: Counter,
}

impl std::fmt::Debug for DiskGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskGuard")
            .field("cfg", &self.cfg)
            .field("path", &self.path)
            .field("refusing", &self.refusing.load(Ordering::Relaxed))
            .field("free", &self.free.load(Ordering::Relaxed))
            .finish()
    }
}

impl DiskGuard {
    /// A guard for the filesystem holding `path` (the data directory; created by the caller).
    pub fn new(cfg: DiskConfig, path: impl Into<PathBuf>) -> Self {
        let g = Self {
            cfg,
            path: path.into(),
            started: Instant::now(),
            last_check: AtomicU64::new(0),
            refreshing: Mutex::new(()),
            refusing: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            total: AtomicU64::new(0),
            free_gauge: Gauge::default(),
            refusing_gauge: Gauge::default(),
            refused_requests: Counter::default(),
            refused_spans: Counter::default(),
            skipped_compactions: Counter::default(),
        };
        g.refresh();
        g
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_storage_disk_free_bytes",
            "Free bytes on the data directory's filesystem (statvfs f_bavail)",
            self.free_gauge.clone(),
        );
        r.register(
            "clew_storage_disk_refusing",
            "1 while appends are refused because free space fell below storage.disk.min_free_*",
            self.refusing_gauge.clone(),
        );
        r.register(
            "clew_storage_disk_refused_requests",
            "Append requests refused (retryably) for lack of free disk space",
            self.refused_requests.clone(),
        );
        r.register(
            "clew_storage_disk_refused_spans",
            "Spans refused (retryably) for lack of free disk space",
            self.refused_spans.clone(),
        );
        r.register(
            "clew_storage_disk_skipped_compactions",
            "Compaction merges skipped because their output might not fit on the disk",
            self.skipped_compactions.clone(),
        );
    }

    /// Reads free space now and updates the state (stop below the stop watermark, resume above
    /// the resume watermark).
    pub fn refresh(&self) -> Space {
        let _one = self.refreshing.lock();
        self.refresh_locked()
    }

    /// [`Self::refresh`] with `refreshing` held by the caller.
    fn refresh_locked(&self) -> Space {
        let space = match statvfs(&self.path) {
            Ok(s) => s,
            Err(e) => {
                // Unknown free space must not stop ingest on its own: a failing write still
                // fails safely (the WAL refuses and truncates).
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read free disk space");
                Space {
                    free: u64::MAX,
                    total: 0,
                }
            }
        };
        self.apply(space);
        self.last_check.store(
            self.started.elapsed().as_millis() as u64 + 1,
            Ordering::Release,
        );
        space
    }

    fn apply(&self, space: Space) {
        self.free.store(space.free, Ordering::Relaxed);
        self.total.store(space.total, Ordering::Relaxed);
        self.free_gauge
            .set(i64::try_from(space.free).unwrap_or(i64::MAX));
        if !self.cfg.enabled || space.total == 0 {
            self.set_refusing(false, space);
            return;
        }
        let (stop, resume) = self.cfg.watermarks(space.total);
        let refusing = self.refusing.load(Ordering::Relaxed);
        if !refusing && space.free < stop {
            self.set_refusing(true, space);
        } else if refusing && space.free >= resume {
            self.set_refusing(false, space);
        }
    }

    fn set_refusing(&self, on: bool, space: Space) {
        if self.refusing.swap(on, Ordering::AcqRel) != on {
            let (stop, resume) = self.cfg.watermarks(space.total);
            if on {
                tracing::warn!(free_bytes = space.free, stop_below = stop, resume_above = resume, path = %self.path.display(),
                    "disk almost full: refusing new spans (retryably) until free space is back above the resume watermark");
            } else {
                tracing::info!(free_bytes = space.free, path = %self.path.display(), "free disk space is back: accepting spans again");
            }
        }
        self.refusing_gauge.set(i64::from(on));
    }

    /// Refreshes the reading if it is older than [`CHECK_INTERVAL`]; one caller does, the others
    /// use the previous reading.
    fn maybe_refresh(&self) {
        let last = self.last_check.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        if last != 0 && now.saturating_sub(last) < CHECK_INTERVAL.as_millis() as u64 {
            return;
        }
        let Some(_one) = self.refreshing.try_lock() else {
            return;
        };
        self.refresh_locked();
    }

    /// May an append of `spans` spans go ahead? `Err(reason)` is retryable.
    pub fn admit(&self, spans: u64) -> Result<(), String> {
        self.maybe_refresh();
        if !self.refusing.load(Ordering::Acquire) {
            return Ok(());
        }
        self.refused_requests.inc();
        self.refused_spans.inc_by(spans);
        let free = self.free.load(Ordering::Relaxed);
        Err(format!(
            "the data directory's disk is almost full ({} MiB free); retry later",
            free >> 20
        ))
    }

    /// True while appends are refused.
    pub fn refusing(&self) -> bool {
        self.maybe_refresh();
        self.refusing.load(Ordering::Acquire)
    }

    /// True while free space is below the resume watermark: the flusher then writes the head out
    /// at once (its blocks are smaller than the WAL it frees).
    pub fn low(&self) -> bool {
        self.maybe_refresh();
        let total = self.total.load(Ordering::Relaxed);
        if !self.cfg.enabled || total == 0 {
            return false;
        }
        let (_, resume) = self.cfg.watermarks(total);
        self.free.load(Ordering::Relaxed) < resume
    }

    /// Would writing `bytes` more still leave the stop watermark free? Reads free space now (a
    /// compaction is rare and long; a stale reading is not worth the risk).
    pub fn has_room_for(&self, bytes: u64) -> bool {
        let space = self.refresh();
        if !self.cfg.enabled || space.total == 0 {
            return true;
        }
        let (stop, _) = self.cfg.watermarks(space.total);
        space.free >= bytes.saturating_add(stop)
    }

    /// Counts a compaction merge skipped for lack of space.
    pub fn compaction_skipped(&self) {
        self.skipped_compactions.inc();
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(cfg: DiskConfig) -> DiskGuard {
        let dir = tempfile::tempdir().unwrap();
        DiskGuard::new(cfg, dir.path())
    }

    #[test]
    fn watermarks_take_the_smaller_value() {
        let c = DiskConfig::default();
        // 48 MiB: the percentages (2.4 / 4.8 MiB) govern.
        let (stop, resume) = c.watermarks(48 << 20);
        assert_eq!(stop, ((48u64 << 20) as f64 * 0.05) as u64);
        assert_eq!(resume, ((48u64 << 20) as f64 * 0.10) as u64);
        // 1 TiB: the MiB values govern.
        assert_eq!(c.watermarks(1 << 40), (256 << 20, 512 << 20));
    }

    #[test]
    fn validation_names_the_key() {
        assert!(DiskConfig::default().validate().is_ok());
        let bad = DiskConfig {
            resume_free_mib: 100,
            ..DiskConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "resume_free_mib");
        assert!(e.to_string().contains("storage.disk.resume_free_mib"));
        let bad = DiskConfig {
            min_free_percent: 120.0,
            ..DiskConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "min_free_percent");
        let bad = DiskConfig {
            resume_free_percent: 5.0,
            ..DiskConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "resume_free_percent");
    }

    #[test]
    fn refuses_below_stop_and_resumes_only_above_resume() {
        let g = guard(DiskConfig::default());
        let total = 100 << 20;
        // 100 MiB: stop below 5 MiB, resume at 10 MiB.
        g.apply(Space {
            free: 20 << 20,
            total,
        });
        assert!(!g.refusing.load(Ordering::Relaxed));
        g.apply(Space {
            free: 4 << 20,
            total,
        });
        assert!(g.refusing.load(Ordering::Relaxed));
        // Between the watermarks: still refusing (hysteresis).
        g.apply(Space {
            free: 7 << 20,
            total,
        });
        assert!(g.refusing.load(Ordering::Relaxed));
        g.apply(Space {
            free: 11 << 20,
            total,
        });
        assert!(!g.refusing.load(Ordering::Relaxed));
        // Between the watermarks again, coming from above: accepting.
        g.apply(Space {
            free: 7 << 20,
            total,
        });
        assert!(!g.refusing.load(Ordering::Relaxed));
    }

    #[test]
    fn disabled_never_refuses() {
        let g = guard(DiskConfig {
            enabled: false,
            ..DiskConfig::default()
        });
        g.apply(Space {
            free: 0,
            total: 100 << 20,
        });
        assert!(!g.refusing.load(Ordering::Relaxed));
    }

    #[test]
    fn statvfs_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let s = statvfs(dir.path()).unwrap();
        assert!(s.total > 0 && s.free <= s.total);
        assert!(statvfs(Path::new("/definitely/not/here")).is_err());
    }
}
