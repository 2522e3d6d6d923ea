//! Where the store's "now" comes from. Retention and tiering compare data ages with it; tests use a
//! [`ManualClock`] to move time forward by days without waiting.

use std::sync::atomic::{AtomicU64, Ordering};

pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Unix time in nanoseconds.
    fn now_unix_nano(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nano(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(unix_nano: u64) -> Self {
        Self(AtomicU64::new(unix_nano))
    }
    pub fn set(&self, unix_nano: u64) {
        self.0.store(unix_nano, Ordering::SeqCst);
    }
    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_nano(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
