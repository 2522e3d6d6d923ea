//! [`KeyManager`]: what the store talks to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use zeroize::Zeroizing;

use crate::{DataKey, Envelope, KeyError, KeyProvider};

/// Default bound of the unwrapped-key cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Default lifetime of a cached unwrapped key (so a destroyed or retired key stops working for
/// a running server within this time).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

/// The tenant's current WAL data key.
pub struct WalKey {
    /// Random 16-byte id the store writes in each segment/record header to find the key again.
    pub id: [u8; 16],
    pub key: Zeroizing<[u8; 32]>,
    /// Persist this next to the WAL segment; replay unwraps it with [`KeyManager::open`].
    pub envelope: Envelope,
}

impl std::fmt::Debug for WalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalKey")
            .field("id", &hex::encode(self.id))
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    provider: String,
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailLabels {
    provider: String,
    op: String,
    kind: String,
}

#[derive(Clone, Default)]
struct Metrics {
    calls: Family<OpLabels, Counter>,
    failures: Family<FailLabels, Counter>,
    cache_hits: Counter,
}

struct CacheEntry {
    key: Arc<Zeroizing<[u8; 32]>>,
    at: Instant,
}

struct Cache {
    map: HashMap<String, CacheEntry>,
    order: VecDeque<String>,
    capacity: usize,
    ttl: Duration,
}

impl Cache {
    fn get(&mut self, k: &str) -> Option<Arc<Zeroizing<[u8; 32]>>> {
        match self.map.get(k) {
            Some(e) if e.at.elapsed() < self.ttl => Some(e.key.clone()),
            Some(_) => {
                self.map.remove(k);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, k: String, key: Arc<Zeroizing<[u8; 32]>>) {
        if self.capacity == 0 {
            return;
        }
        if self
            .map
            .insert(
                k.clone(),
                CacheEntry {
                    key,
                    at: Instant::now(),
                },
            )
            .is_none()
        {
            self.order.push_back(k);
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        // Drop stale order entries (keys already removed by TTL) so `order` stays bounded.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

fn cache_key(env: &Envelope) -> String {
    format!(
        "{}\0{}\0{}\0{:?}\0{}",
        env.provider.as_str(),
        env.tenant,
        env.kek_id,
        env.kek_version,
        env.wrapped
    )
}

/// Wraps a [`KeyProvider`] with an unwrapped-key cache, per-tenant WAL keys and metrics.
pub struct KeyManager {
    provider: Arc<dyn KeyProvider>,
    cache: Mutex<Cache>,
    wal: Mutex<HashMap<String, Arc<WalKey>>>,
    metrics: Metrics,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self::with_cache(provider, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL)
    }

    /// A manager whose unwrapped-key cache holds at most `capacity` keys for at most `ttl`.
    pub fn with_cache(provider: Arc<dyn KeyProvider>, capacity: usize, ttl: Duration) -> Self {
        KeyManager {
            provider,
            cache: Mutex::new(Cache {
                map: HashMap::new(),
                order: VecDeque::new(),
                capacity,
                ttl,
            }),
            wal: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
        }
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// Register `clew_encryption_provider_calls_total{provider,op}`,
    /// `clew_encryption_provider_failures_total{provider,op,kind}` and
    /// `clew_encryption_key_cache_hits_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clew_encryption_provider_calls",
            "Key provider calls by operation",
            self.metrics.calls.clone(),
        );
        registry.register(
            "clew_encryption_provider_failures",
            "Failed key provider calls by operation and error kind",
            self.metrics.failures.clone(),
        );
        registry.register(
            "clew_encryption_key_cache_hits",
            "Envelope unwraps served from the in-memory key cache",
            self.metrics.cache_hits.clone(),
        );
    }

    fn count<T>(&self, op: &str, r: &Result<T, KeyError>) {
        let provider = self.provider.name().to_string();
        self.metrics
            .calls
            .get_or_create(&OpLabels {
                provider: provider.clone(),
                op: op.into(),
            })
            .inc();
        if let Err(e) = r {
            self.metrics
                .failures
                .get_or_create(&FailLabels {
                    provider,
                    op: op.into(),
                    kind: e.kind().into(),
                })
                .inc();
        }
    }

    /// A fresh data key for one block (one provider call). Write `envelope` as the block's `key.json`.
    pub async fn new_file_key(&self, tenant: &str) -> Result<DataKey, KeyError> {
        let r = self.provider.generate(tenant).await;
        self.count("generate", &r);
        let dk = r?;
        self.cache.lock().insert(
            cache_key(&dk.envelope),
            Arc::new(Zeroizing::new(*dk.plaintext)),
        );
        Ok(dk)
    }

    /// Unwrap an envelope, from the cache when possible.
    pub async fn open(&self, envelope: &Envelope) -> Result<Arc<Zeroizing<[u8; 32]>>, KeyError> {
        let ck = cache_key(envelope);
        if let Some(k) = self.cache.lock().get(&ck) {
            self.metrics.cache_hits.inc();
            return Ok(k);
        }
        let r = self.provider.unwrap(envelope).await;
        self.count("unwrap", &r);
        let key = Arc::new(r?);
        self.cache.lock().insert(ck, key.clone());
        Ok(key)
    }

    /// The tenant's current WAL key, generated on first use and kept until [`Self::roll_wal_keys`].
    /// Fails (typically [`KeyError::Unavailable`]) only when no current key exists and the
    /// provider cannot make one.
    pub async fn wal_key(&self, tenant: &str) -> Result<Arc<WalKey>, KeyError> {
        if let Some(k) = self.wal.lock().get(tenant) {
            return Ok(k.clone());
        }
        let dk = self.new_file_key(tenant).await?;
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).expect("system random number generator failed");
        let fresh = Arc::new(WalKey {
            id,
            key: dk.plaintext,
            envelope: dk.envelope,
        });
        // If another task raced us, keep the first key so all records of the segment share it.
        Ok(self
            .wal
            .lock()
            .entry(tenant.to_string())
            .or_insert(fresh)
            .clone())
    }

    /// Forget all current WAL keys (call at each WAL segment rotation); the next
    /// [`Self::wal_key`] generates new ones.
    pub fn roll_wal_keys(&self) {
        self.wal.lock().clear();
    }

    /// Re-wrap an envelope under the tenant's current KEK (`clew keys rotate`); `None` when current.
    pub async fn rewrap(&self, envelope: &Envelope) -> Result<Option<Envelope>, KeyError> {
        let r = self.provider.rewrap(envelope).await;
        self.count("rewrap", &r);
        r
    }

    /// The provider's start-up probe.
    pub async fn check(&self) -> Result<(), KeyError> {
        let r = self.provider.check().await;
        self.count("check", &r);
        r
    }

    /// Drop all cached unwrapped keys (e.g. after a tenant was crypto-shredded).
    pub fn clear_cache(&self) {
        let mut c = self.cache.lock();
        c.map.clear();
        c.order.clear();
    }
}
