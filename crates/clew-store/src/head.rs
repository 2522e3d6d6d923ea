//! The head: spans that are in the WAL but not yet in blocks, held in memory per tenant and indexed
//! by trace id, so a span is queryable the moment its export is acknowledged.
//!
//! Generations: the WAL thread inserts into the active generation; on rotation it seals it. Sealed
//! generations stay queryable until the flusher has written their blocks and releases them.

use crate::api::{SearchQuery, TraceHit};
use crate::catalog::Catalog;
use crate::matcher::{Matcher, SpanView, Val};
use crate::tags::TagCatalog;
use crate::StoreError;
use clew_model::flat::flatten;
use clew_model::{attrs, FlatSpan, SpanBatch, Tenant, TraceId};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub struct TenantHead {
    pub spans: Vec<FlatSpan>,
    by_trace: HashMap<TraceId, Vec<u32>>,
}

impl TenantHead {
    fn push(&mut self, span: FlatSpan) {
        // Validated upstream; a span with a bad id is still kept in the list, just not indexed.
        if let Ok(id) = TraceId::from_bytes(&span.span.trace_id) {
            self.by_trace
                .entry(id)
                .or_default()
                .push(self.spans.len() as u32);
        }
        self.spans.push(span);
    }
}

pub struct HeadGen {
    pub tenants: HashMap<Tenant, TenantHead>,
    pub created: Instant,
    pub span_count: usize,
    /// Tag catalogs of a sealed (immutable) generation, per tenant, built on first use.
    tag_cache: parking_lot::Mutex<HashMap<Tenant, Arc<TagCatalog>>>,
}

impl Default for HeadGen {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            created: Instant::now(),
            span_count: 0,
            tag_cache: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

impl HeadGen {
    fn trace_into(&self, tenant: &Tenant, id: &TraceId, out: &mut Vec<FlatSpan>) {
        if let Some(th) = self.tenants.get(tenant) {
            if let Some(idx) = th.by_trace.get(id) {
                out.extend(idx.iter().map(|&i| th.spans[i as usize].clone()));
            }
        }
    }

    fn search_into(&self, tenant: &Tenant, m: &Matcher, hits: &mut HashMap<TraceId, u64>) {
        let Some(th) = self.tenants.get(tenant) else {
            return;
        };
        for s in &th.spans {
            if m.matches(&FlatView(s)) {
                if let Ok(id) = TraceId::from_bytes(&s.span.trace_id) {
                    let e = hits.entry(id).or_insert(0);
                    *e = (*e).max(s.span.start_time_unix_nano);
                }
            }
        }
    }
}

/// A [`SpanView`] over a [`FlatSpan`].
pub struct FlatView<'a>(pub &'a FlatSpan);

impl SpanView for FlatView<'_> {
    fn service(&self) -> &str {
        self.0.service_name()
    }
    fn name(&self) -> &str {
        &self.0.span.name
    }
    fn start_unix_nano(&self) -> u64 {
        self.0.span.start_time_unix_nano
    }
    fn end_unix_nano(&self) -> u64 {
        self.0.span.end_time_unix_nano
    }
    fn kind(&self) -> i32 {
        self.0.span.kind
    }
    fn status_code(&self) -> i32 {
        self.0.span.status.as_ref().map(|s| s.code).unwrap_or(0)
    }
    fn attr_text(&self, key: &str) -> Option<String> {
        attrs::get(&self.0.span.attributes, key)
            .or_else(|| attrs::get(&self.0.resource.attributes, key))
            .map(attrs::to_text)
    }
    fn status_message(&self) -> &str {
        self.0
            .span
            .status
            .as_ref()
            .map(|s| s.message.as_str())
            .unwrap_or("")
    }
    fn span_attr(&self, key: &str) -> Option<Val<'_>> {
        typed(&self.0.span.attributes, key)
    }
    fn resource_attr(&self, key: &str) -> Option<Val<'_>> {
        typed(&self.0.resource.attributes, key)
    }
}

/// The first attribute named `key`, typed. A key without a value is present (as `Other`), as it
/// is once written to a block (every value column null).
pub fn typed<'a>(list: &'a [clew_model::otlp::common::KeyValue], key: &str) -> Option<Val<'a>> {
    list.iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_ref().map_or(Val::Other, Val::of))
}

fn gen_catalog(g: &HeadGen, tenant: &Tenant, range: Option<(u64, u64)>) -> TagCatalog {
    let mut b = crate::tags::CatalogBuilder::default();
    if let Some(th) = g.tenants.get(tenant) {
        // Resources are deduplicated by address: every span of the generation is alive here.
        for s in &th.spans {
            let t = s.span.start_time_unix_nano;
            if range.is_some_and(|(lo, hi)| t < lo || t > hi) {
                continue;
            }
            b.add_span_attributes(&s.span.attributes);
            b.add_resource(&s.resource);
        }
    }
    b.finish()
}

pub struct Head {
    active: RwLock<HeadGen>,
    sealed: RwLock<Vec<Arc<HeadGen>>>,
    catalog: Arc<Catalog>,
    total_spans: AtomicUsize,
}

impl Head {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self {
            active: RwLock::new(HeadGen::default()),
            sealed: RwLock::default(),
            catalog,
            total_spans: AtomicUsize::new(0),
        }
    }

    /// Adds durable batches. Called by the WAL thread after fsync, and by replay.
    pub fn insert(&self, batches: Vec<SpanBatch>) {
        // Flatten outside the lock; only the pushes hold it.
        let flat: Vec<(Tenant, Vec<FlatSpan>)> = batches
            .into_iter()
            .map(|b| (b.tenant, flatten(b.resource_spans)))
            .collect();
        for (tenant, spans) in &flat {
            self.catalog.add(
                tenant,
                spans
                    .iter()
                    .map(|s| (s.service_name(), s.span.name.as_str(), s.span.kind)),
            );
        }
        let mut added = 0;
        let mut active = self.active.write();
        for (tenant, spans) in flat {
            added += spans.len();
            let th = active.tenants.entry(tenant).or_default();
            for s in spans {
                th.push(s);
            }
        }
        active.span_count += added;
        self.total_spans.fetch_add(added, Ordering::Relaxed);
    }

    /// Seals the active generation (kept queryable until [`Head::release`]).
    pub fn seal(&self) -> Arc<HeadGen> {
        let gen = Arc::new(std::mem::take(&mut *self.active.write()));
        self.sealed.write().push(gen.clone());
        gen
    }

    /// Forgets a sealed generation once its blocks are registered.
    pub fn release(&self, gen: &Arc<HeadGen>) {
        self.sealed.write().retain(|g| !Arc::ptr_eq(g, gen));
        self.total_spans
            .fetch_sub(gen.span_count, Ordering::Relaxed);
    }

    pub fn span_count(&self) -> usize {
        self.total_spans.load(Ordering::Relaxed)
    }

    pub fn active_span_count(&self) -> usize {
        self.active.read().span_count
    }

    pub fn active_age(&self) -> std::time::Duration {
        self.active.read().created.elapsed()
    }

    pub fn trace(&self, tenant: &Tenant, id: &TraceId) -> Vec<FlatSpan> {
        let mut out = Vec::new();
        self.active.read().trace_into(tenant, id, &mut out);
        for g in self.sealed.read().iter() {
            g.trace_into(tenant, id, &mut out);
        }
        out
    }

    /// All matching traces in the head with their latest matching start time.
    pub fn search(&self, tenant: &Tenant, q: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        Ok(self.search_matcher(tenant, &Matcher::new(q)?))
    }

    /// [`Head::search`] with the query already compiled.
    pub fn search_matcher(&self, tenant: &Tenant, m: &Matcher) -> Vec<TraceHit> {
        let mut hits = HashMap::new();
        self.active.read().search_into(tenant, m, &mut hits);
        for g in self.sealed.read().iter() {
            g.search_into(tenant, m, &mut hits);
        }
        hits.into_iter()
            .map(|(trace_id, start_unix_nano)| TraceHit {
                trace_id,
                start_unix_nano,
            })
            .collect()
    }

    /// Tag catalogs of the head's spans of a tenant (started in `range`, if given), one per
    /// generation: the active one is scanned at query time (it changes with every batch, and
    /// holds at most `flush_max_spans`), a sealed one's unranged catalog is kept once built.
    pub fn tag_catalogs(&self, tenant: &Tenant, range: Option<(u64, u64)>) -> Vec<Arc<TagCatalog>> {
        let mut out = vec![Arc::new(gen_catalog(&self.active.read(), tenant, range))];
        for g in self.sealed.read().iter() {
            if range.is_some() {
                out.push(Arc::new(gen_catalog(g, tenant, range)));
                continue;
            }
            let cached = g.tag_cache.lock().get(tenant).cloned();
            out.push(match cached {
                Some(c) => c,
                None => {
                    let c = Arc::new(gen_catalog(g, tenant, None));
                    g.tag_cache.lock().insert(tenant.clone(), c.clone());
                    c
                }
            });
        }
        out
    }

    /// Visits every head span of a tenant.
    pub fn for_each_span(&self, tenant: &Tenant, mut f: impl FnMut(&FlatSpan)) {
        let visit = |g: &HeadGen, f: &mut dyn FnMut(&FlatSpan)| {
            if let Some(th) = g.tenants.get(tenant) {
                th.spans.iter().for_each(f);
            }
        };
        visit(&self.active.read(), &mut f);
        for g in self.sealed.read().iter() {
            visit(g, &mut f);
        }
    }
}
