//! The `memory_limiter` processor, in the OpenTelemetry Collector's shape.
//!
//! Keys as in the Collector: `check_interval`, `limit_mib`, `spike_limit_mib`, `limit_percentage`,
//! `spike_limit_percentage`. The hard limit is `limit_mib` (or `limit_percentage` of the cgroup's
//! memory limit, else of the machine's memory); the soft limit is the hard limit minus the spike
//! limit (default 20 % of the hard limit). A checker thread reads the process's resident memory
//! every `check_interval`; above the soft limit every batch is refused retryably
//! ([`SinkError::Overloaded`]: gRPC `UNAVAILABLE` + `RetryInfo`, HTTP 503 + `Retry-After`) until
//! usage is back below it. Clients retry, so refusing is lossless back-pressure; accepting past
//! the limit would end in the OOM killer and lose everything unflushed.
//!
//! Where the Collector (a Go process) forces a garbage collection above the hard limit, there is
//! nothing to collect here, but glibc's allocator keeps freed pages (a flushed head, finished
//! requests) in its arenas, so resident memory would stay above the soft limit after the load
//! that raised it is gone and refusals would never end. So while refusing, each check hands free
//! heap pages back to the OS (`malloc_trim(0)`, glibc only) before the next reading.
//!
//! Most of what an ingesting Clew holds is the store's in-memory head, which is released only
//! when it is written to blocks (every `storage.block.max_age`, 30 s by default). Waiting for that
//! would keep refusing long after the load is gone, so a [`PressureHook`] (the server passes one
//! that flushes the head) runs when memory crosses the soft limit, and again at most every
//! [`PRESSURE_HOOK_PERIOD`] while it stays above.

use clew_model::{SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// `processors.memory_limiter`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often resident memory is read, e.g. `1s` (required, as in the Collector).
    pub check_interval: Option<String>,
    /// Hard limit in MiB; takes precedence over `limit_percentage`.
    pub limit_mib: u64,
    /// Headroom below the hard limit: soft limit = limit − spike. Default 20 % of the limit.
    pub spike_limit_mib: u64,
    /// Hard limit as a share of the cgroup's memory limit (of the machine's memory without one).
    pub limit_percentage: u64,
    pub spike_limit_percentage: u64,
}

/// A configuration mistake: the key (below the processor) and the message with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct MemoryLimiterConfigError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> MemoryLimiterConfigError {
    MemoryLimiterConfigError {
        key,
        message: message.into(),
    }
}

/// The limits in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub check_interval: Duration,
    pub hard: u64,
    pub soft: u64,
}

/// `500ms`, `1s`, `2m`: the forms a check interval takes.
fn parse_interval(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

impl MemoryLimiterConfig {
    /// Checks the keys and computes the limits; `total_memory` is what the percentages apply to
    /// ([`total_memory`] in production).
    pub fn limits(&self, total_memory: Option<u64>) -> Result<Limits, MemoryLimiterConfigError> {
        let check_interval = match &self.check_interval {
            None => return Err(err("check_interval", "required (fix: e.g. `1s`)")),
            Some(s) => parse_interval(s).ok_or_else(|| {
                err(
                    "check_interval",
                    format!("{s:?} is not a duration (fix: e.g. `1s` or `500ms`)"),
                )
            })?,
        };
        if check_interval.is_zero() {
            return Err(err("check_interval", "must be above 0 (fix: e.g. `1s`)"));
        }
        if self.limit_mib > 0 {
            let hard = self.limit_mib << 20;
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib << 20
            } else {
                hard / 5
            };
            if spike >= hard {
                return Err(err(
                    "spike_limit_mib",
                    format!(
                        "must be below limit_mib ({}) (fix: e.g. {})",
                        self.limit_mib,
                        self.limit_mib / 5
                    ),
                ));
            }
            return Ok(Limits {
                check_interval,
                hard,
                soft: hard - spike,
            });
        }
        if self.limit_percentage == 0 {
            return Err(err(
                "limit_mib",
                "set limit_mib or limit_percentage (fix: e.g. `limit_mib: 1500` or `limit_percentage: 80`)",
            ));
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return Err(err(
                "limit_percentage",
                "percentages must be at most 100 (fix: e.g. 80 and 25)",
            ));
        }
        let spike_pct = if self.spike_limit_percentage > 0 {
            self.spike_limit_percentage
        } else {
            self.limit_percentage / 5
        };
        if spike_pct >= self.limit_percentage {
            return Err(err(
                "spike_limit_percentage",
                format!(
                    "must be below limit_percentage ({}) (fix: e.g. {})",
                    self.limit_percentage,
                    self.limit_percentage / 4
                ),
            ));
        }
        let total = total_memory.ok_or_else(|| {
            err(
                "limit_percentage",
                "cannot read the memory limit (no cgroup limit, no /proc/meminfo) (fix: use limit_mib)",
            )
        })?;
        let hard = total / 100 * self.limit_percentage;
        let spike = total / 100 * spike_pct;
        Ok(Limits {
            check_interval,
            hard,
            soft: hard - spike,
        })
    }
}

/// Resident memory of this process in bytes (`VmRSS` of /proc/self/status).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_line(&status, "VmRSS:")
}

fn parse_kib_line(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// What `limit_percentage` applies to: the cgroup's memory limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), else the machine's memory (`MemTotal`).
pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_kib_line(&m, "MemTotal:"));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|s| s.trim().parse::<u64>().ok());
    // cgroup v1 reports "no limit" as a huge number: the machine's memory is the real bound.
    match (cgroup, meminfo) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    }
}

const NORMAL: u8 = 0;
const SOFT: u8 = 1;
const HARD: u8 = 2;

/// Metrics of every `memory_limiter` processor (one process, one RSS).
#[derive(Clone, Default)]
pub struct MemoryLimiterMetrics {
    rss: Gauge,
    state: Gauge,
    refused_spans: Counter,
    refused_batches: Counter,
}

impl MemoryLimiterMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_memory_limiter_resident_bytes",
            "Resident memory of the process at the last check",
            self.rss.clone(),
        );
        r.register(
            "clew_memory_limiter_state",
            "0 below the soft limit, 1 above it (refusing), 2 above the hard limit (refusing)",
            self.state.clone(),
        );
        r.register(
            "clew_memory_limiter_refused_spans",
            "Spans refused (retryably) because memory was above the soft limit",
            self.refused_spans.clone(),
        );
        r.register(
            "clew_memory_limiter_refused_batches",
            "Batches refused (retryably) because memory was above the soft limit",
            self.refused_batches.clone(),
        );
    }
}

/// Called from the checker thread when memory is above the soft limit (see the module docs). It
/// must return at once (start the work elsewhere) and tolerate being called while earlier work
/// is still running.
pub type PressureHook = Arc<dyn Fn() + Send + Sync>;

/// Least time between two calls of the pressure hook while memory stays above the soft limit.
pub const PRESSURE_HOOK_PERIOD: Duration = Duration::from_secs(2);

struct Shared {
    state: AtomicU8,
    /// The latest reading of resident memory in bytes; 0 before the first.
    rss: AtomicU64,
    hook: std::sync::Mutex<Option<PressureHook>>,
}

/// The room a limiter leaves under its soft limit, for work that allocates without passing
/// through it (the store's compaction merges). The soft limit, not the hard one: such work is
/// planned, and planned work that crossed the soft limit would make the limiter refuse ingest
/// (measured: merges sized against the hard limit did, ~100 ms at a time); the spike headroom
/// above it stays for what is not planned. Holds the limiter weakly: once the processor is gone
/// it knows no limit.
#[derive(Clone)]
pub struct MemoryHeadroom {
    shared: Weak<Shared>,
    soft: u64,
}

impl MemoryHeadroom {
    /// Bytes left below the soft limit at the latest reading (0 above it); `None` before the
    /// first reading or after the limiter has stopped.
    pub fn room_bytes(&self) -> Option<u64> {
        let shared = self.shared.upgrade()?;
        match shared.rss.load(Ordering::Acquire) {
            0 => None,
            rss => Some(self.soft.saturating_sub(rss)),
        }
    }
}

pub struct MemoryLimiter {
    name: String,
    limits: Limits,
    shared: Arc<Shared>,
    metrics: MemoryLimiterMetrics,
}

impl MemoryLimiter {
    /// Checks the configuration and starts the checker thread (it ends with the processor).
    pub fn new(
        name: String,
        cfg: &MemoryLimiterConfig,
        metrics: MemoryLimiterMetrics,
    ) -> Result<Self, MemoryLimiterConfigError> {
        let limits = cfg.limits(total_memory())?;
        Self::with_reader(name, limits, metrics, resident_bytes)
    }

    /// As [`Self::new`] with given limits and a given memory reading (tests).
    pub fn with_reader(
        name: String,
        limits: Limits,
        metrics: MemoryLimiterMetrics,
        read: fn() -> Option<u64>,
    ) -> Result<Self, MemoryLimiterConfigError> {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(NORMAL),
            rss: AtomicU64::new(0),
            hook: std::sync::Mutex::new(None),
        });
        check(&shared, &limits, &metrics, read, &name);
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let (l, m, n) = (limits, metrics.clone(), name.clone());
        // A plain thread, not a task: the check must run even when the runtime is saturated by
        // the very load it protects against.
        std::thread::Builder::new()
            .name("memory-limiter".into())
            .spawn(move || {
                let mut last_hook: Option<std::time::Instant> = None;
                loop {
                    std::thread::sleep(l.check_interval);
                    let Some(shared) = weak.upgrade() else { return };
                    check(&shared, &l, &m, read, &n);
                    let above = shared.state.load(Ordering::Acquire) != NORMAL;
                    if !above {
                        last_hook = None;
                    } else if last_hook.is_none_or(|t| t.elapsed() >= PRESSURE_HOOK_PERIOD) {
                        let hook = shared
                            .hook
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone();
                        if let Some(hook) = hook {
                            last_hook = Some(std::time::Instant::now());
                            hook();
                        }
                    }
                }
            })
            .map_err(|e| err("check_interval", format!("cannot start the checker: {e}")))?;
        tracing::info!(processor = %name, hard_limit_mib = limits.hard >> 20, soft_limit_mib = limits.soft >> 20,
            interval = ?limits.check_interval, "memory limiter on");
        Ok(Self {
            name,
            limits,
            shared,
            metrics,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets what to run when memory is above the soft limit (the server: flush the head).
    pub fn with_pressure_hook(self, hook: PressureHook) -> Self {
        *self.shared.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
        self
    }

    /// What is left under the soft limit, for the store's compaction (see [`MemoryHeadroom`]).
    pub fn headroom(&self) -> MemoryHeadroom {
        MemoryHeadroom {
            shared: Arc::downgrade(&self.shared),
            soft: self.limits.soft,
        }
    }

    /// 0 normal, 1 above the soft limit, 2 above the hard limit.
    pub fn state(&self) -> u8 {
        self.shared.state.load(Ordering::Acquire)
    }
}

fn check(
    shared: &Shared,
    limits: &Limits,
    metrics: &MemoryLimiterMetrics,
    read: fn() -> Option<u64>,
    name: &str,
) {
    let Some(rss) = read() else {
        // No reading (no /proc): keep the last state rather than refuse or accept blindly.
        return;
    };
    metrics.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
    shared.rss.store(rss.max(1), Ordering::Release);
    let state = if rss >= limits.hard {
        HARD
    } else if rss >= limits.soft {
        SOFT
    } else {
        NORMAL
    };
    if state != NORMAL {
        trim_heap();
    }
    let old = shared.state.swap(state, Ordering::AcqRel);
    metrics.state.set(i64::from(state));
    if old != state {
        match state {
            NORMAL => {
                tracing::info!(processor = %name, rss_mib = rss >> 20, "memory back below the soft limit: accepting data")
            }
            SOFT => {
                tracing::warn!(processor = %name, rss_mib = rss >> 20, soft_limit_mib = limits.soft >> 20, "memory above the soft limit: refusing data (retryably)")
            }
            _ => {
                tracing::warn!(processor = %name, rss_mib = rss >> 20, hard_limit_mib = limits.hard >> 20, "memory above the hard limit: refusing data (retryably)")
            }
        }
    }
}

/// Returns free heap pages to the OS (see the module docs).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Processor for MemoryLimiter {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        let state = self.shared.state.load(Ordering::Acquire);
        if state == NORMAL {
            return Ok(ProcessOutcome::Forward(batch));
        }
        self.metrics.refused_batches.inc();
        self.metrics.refused_spans.inc_by(batch.span_count() as u64);
        Err(SinkError::Overloaded {
            // About when the next check may have seen memory drop.
            retry_after: self.limits.check_interval.max(Duration::from_secs(1)),
            reason: format!(
                "memory above the {} limit of processor {}",
                if state == HARD { "hard" } else { "soft" },
                self.name
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(limit: u64, spike: u64) -> MemoryLimiterConfig {
        MemoryLimiterConfig {
            check_interval: Some("10ms".into()),
            limit_mib: limit,
            spike_limit_mib: spike,
            ..Default::default()
        }
    }

    #[test]
    fn limits_follow_the_collector() {
        let l = cfg(1000, 200).limits(None).unwrap();
        assert_eq!((l.hard, l.soft), (1000 << 20, 800 << 20));
        // Spike defaults to 20 % of the limit.
        let l = cfg(1000, 0).limits(None).unwrap();
        assert_eq!(l.soft, (1000u64 << 20) - (1000u64 << 20) / 5);
        let pct = MemoryLimiterConfig {
            check_interval: Some("1s".into()),
            limit_percentage: 80,
            spike_limit_percentage: 25,
            ..Default::default()
        };
        let l = pct.limits(Some(1000 << 20)).unwrap();
        assert_eq!(l.hard, (1000u64 << 20) / 100 * 80);
        assert_eq!(l.soft, (1000u64 << 20) / 100 * 55);
        assert_eq!(l.check_interval, Duration::from_secs(1));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let no_interval = MemoryLimiterConfig {
            limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(no_interval.limits(None).unwrap_err().key, "check_interval");
        let mut bad = cfg(100, 0);
        bad.check_interval = Some("soon".into());
        assert_eq!(bad.limits(None).unwrap_err().key, "check_interval");
        assert_eq!(
            cfg(100, 100).limits(None).unwrap_err().key,
            "spike_limit_mib"
        );
        assert_eq!(cfg(0, 0).limits(None).unwrap_err().key, "limit_mib");
        let pct = MemoryLimiterConfig {
            check_interval: Some("1s".into()),
            limit_percentage: 50,
            spike_limit_percentage: 60,
            ..Default::default()
        };
        assert_eq!(
            pct.limits(Some(1 << 30)).unwrap_err().key,
            "spike_limit_percentage"
        );
    }

    #[test]
    fn reads_real_process_memory() {
        let rss = resident_bytes().expect("/proc/self/status has VmRSS on Linux");
        assert!(rss > 1 << 20, "a test process uses more than 1 MiB: {rss}");
        assert!(total_memory().is_some_and(|t| t > rss));
    }

    static FAKE_RSS: AtomicU64 = AtomicU64::new(0);

    fn fake() -> Option<u64> {
        Some(FAKE_RSS.load(Ordering::Relaxed))
    }

    fn batch() -> SpanBatch {
        use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
        SpanBatch::new(
            clew_model::Tenant::default(),
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        )
    }

    #[test]
    fn refuses_retryably_above_the_soft_limit_and_recovers() {
        FAKE_RSS.store(10 << 20, Ordering::Relaxed);
        let metrics = MemoryLimiterMetrics::default();
        let limits = cfg(100, 20).limits(None).unwrap();
        let p = MemoryLimiter::with_reader("memory_limiter".into(), limits, metrics.clone(), fake)
            .unwrap();
        assert!(matches!(p.process(batch()), Ok(ProcessOutcome::Forward(_))));
        let wait_for = |want: u8| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while p.state() != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "state {want} never came"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        FAKE_RSS.store(90 << 20, Ordering::Relaxed);
        wait_for(SOFT);
        match p.process(batch()) {
            Err(SinkError::Overloaded { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
        }
        FAKE_RSS.store(200 << 20, Ordering::Relaxed);
        wait_for(HARD);
        assert!(p.process(batch()).is_err());
        FAKE_RSS.store(10 << 20, Ordering::Relaxed);
        wait_for(NORMAL);
        assert!(p.process(batch()).is_ok());
        assert_eq!(metrics.refused_batches.get(), 2);
        assert_eq!(metrics.refused_spans.get(), 2);
    }

    /// A limiter of `limit` / `spike` MiB that reads `read` every 10 ms.
    fn checking_every_10ms(limit: u64, spike: u64, read: fn() -> Option<u64>) -> MemoryLimiter {
        let mut limits = cfg(limit, spike).limits(None).unwrap();
        limits.check_interval = Duration::from_millis(10);
        MemoryLimiter::with_reader(
            "memory_limiter".into(),
            limits,
            MemoryLimiterMetrics::default(),
            read,
        )
        .unwrap()
    }

    static HOOK_RSS: AtomicU64 = AtomicU64::new(10 << 20);
    fn hook_reader() -> Option<u64> {
        Some(HOOK_RSS.load(Ordering::Relaxed))
    }

    #[test]
    fn pressure_hook_runs_above_the_soft_limit_at_most_every_period() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let p = checking_every_10ms(100, 20, hook_reader).with_pressure_hook(Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(calls.load(Ordering::Relaxed), 0, "below the soft limit");
        HOOK_RSS.store(90 << 20, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while calls.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "hook never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Dozens of checks later, still once: the period holds it back.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_ne!(p.state(), NORMAL);
        // Back below and above again: it runs again at once.
        HOOK_RSS.store(10 << 20, Ordering::Relaxed);
        while p.state() != NORMAL {
            assert!(std::time::Instant::now() < deadline, "never recovered");
            std::thread::sleep(Duration::from_millis(5));
        }
        HOOK_RSS.store(90 << 20, Ordering::Relaxed);
        while calls.load(Ordering::Relaxed) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "hook did not run again"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    static HEADROOM_RSS: AtomicU64 = AtomicU64::new(300 << 20);
    fn headroom_reader() -> Option<u64> {
        Some(HEADROOM_RSS.load(Ordering::Relaxed))
    }

    #[test]
    fn headroom_is_what_the_latest_reading_leaves_under_the_soft_limit() {
        let p = checking_every_10ms(512, 128, headroom_reader);
        let headroom = p.headroom();
        // The constructor's first check has read 300 MiB; the soft limit is 512 − 128 MiB.
        assert_eq!(headroom.room_bytes(), Some(84 << 20));
        // Between the soft and the hard limit there is no room.
        HEADROOM_RSS.store(400 << 20, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while headroom.room_bytes() != Some(0) {
            assert!(std::time::Instant::now() < deadline, "new reading not seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Once the limiter is gone (its checker lets go of it at its next tick), no limit is
        // known.
        drop(p);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while headroom.room_bytes().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the limiter outlived its drop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
