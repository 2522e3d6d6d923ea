//! Ties the app's outgoing calls to the incoming request they serve. The app knows nothing of
//! tracing, so the proxy relies on what it does carry: the request id it was given (most legacy
//! apps log it and pass it on), or, when exactly one request is in flight, that one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clew_propagation::Context;
use parking_lot::Mutex;

/// How an outgoing call was tied to its incoming request (recorded on the CLIENT span as
/// `clew.proxy.correlation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correlation {
    /// The app sent a valid context header itself.
    Header,
    /// The request id it echoed belongs to a request in flight.
    RequestId,
    /// No request id; the only request in flight.
    SingleInFlight,
    /// No way to tell: the call starts a trace of its own.
    None,
}

impl Correlation {
    pub fn as_str(self) -> &'static str {
        match self {
            Correlation::Header => "header",
            Correlation::RequestId => "request_id",
            Correlation::SingleInFlight => "single_in_flight",
            Correlation::None => "none",
        }
    }
}

/// Hashes the registry's own ids (a counter, never client data, so no flooding to defend
/// against) with one multiplication instead of SipHash: two map operations per request.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing: consecutive ids spread over the high bits the table probes by.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct State {
    /// Request id → (registration, context), newest last (a client may reuse an id). Keys come
    /// from clients: the default (keyed) hasher stays.
    by_request_id: HashMap<String, Vec<(u64, Arc<Context>)>>,
    all: HashMap<u64, Arc<Context>, BuildHasherDefault<IdHasher>>,
}

/// The incoming requests in flight, shared by the ingress and egress listeners.
#[derive(Default)]
pub struct InFlight {
    state: Mutex<State>,
    next: AtomicU64,
}

/// Removes the registration when the incoming request is done (response body finished or
/// dropped).
pub struct Registration {
    owner: Arc<InFlight>,
    id: u64,
    request_id: Option<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.owner.state.lock();
        st.all.remove(&self.id);
        if let Some(rid) = &self.request_id {
            if let Some(v) = st.by_request_id.get_mut(rid) {
                v.retain(|(id, _)| *id != self.id);
                if v.is_empty() {
                    st.by_request_id.remove(rid);
                }
            }
        }
    }
}

impl InFlight {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers an incoming request with the context its outgoing calls should continue.
    pub fn register(self: &Arc<Self>, request_id: Option<String>, cx: Context) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cx = Arc::new(cx);
        let mut st = self.state.lock();
        st.all.insert(id, cx.clone());
        if let Some(rid) = &request_id {
            st.by_request_id
                .entry(rid.clone())
                .or_default()
                .push((id, cx));
        }
        Registration {
            owner: self.clone(),
            id,
            request_id,
        }
    }

    /// The context for an outgoing call carrying `request_id` (if any), and how it was found.
    pub fn lookup(
        &self,
        request_id: Option<&str>,
        single_in_flight: bool,
    ) -> (Option<Arc<Context>>, Correlation) {
        let st = self.state.lock();
        if let Some(rid) = request_id {
            if let Some(cx) = st.by_request_id.get(rid).and_then(|v| v.last()) {
                return (Some(cx.1.clone()), Correlation::RequestId);
            }
        }
        if single_in_flight && st.all.len() == 1 {
            if let Some(cx) = st.all.values().next() {
                return (Some(cx.clone()), Correlation::SingleInFlight);
            }
        }
        (None, Correlation::None)
    }

    pub fn len(&self) -> usize {
        self.state.lock().all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_propagation::SpanContext;

    fn cx() -> Context {
        Context::new().with_span(SpanContext::new_root(true))
    }

    #[test]
    fn request_id_then_single_candidate_then_none() {
        let f = InFlight::new();
        assert_eq!(f.lookup(None, true).1, Correlation::None);
        let a = cx();
        let ra = f.register(Some("r-a".into()), a.clone());
        let (got, how) = f.lookup(None, true);
        assert_eq!(
            (got.as_deref(), how),
            (Some(&a), Correlation::SingleInFlight)
        );
        assert_eq!(f.lookup(None, false).1, Correlation::None);
        let b = cx();
        let rb = f.register(Some("r-b".into()), b.clone());
        // Two candidates: no guessing.
        assert_eq!(f.lookup(None, true).1, Correlation::None);
        assert_eq!(f.lookup(Some("unknown"), true).1, Correlation::None);
        let (got, how) = f.lookup(Some("r-b"), true);
        assert_eq!((got.as_deref(), how), (Some(&b), Correlation::RequestId));
        drop(rb);
        assert_eq!(f.lookup(Some("r-b"), true).1, Correlation::SingleInFlight);
        drop(ra);
        assert!(f.is_empty());
        assert!(f.state.lock().by_request_id.is_empty());
    }

    #[test]
    fn reused_request_id_takes_the_newest() {
        let f = InFlight::new();
        let _a = f.register(Some("same".into()), cx());
        let b = cx();
        let rb = f.register(Some("same".into()), b.clone());
        assert_eq!(f.lookup(Some("same"), false).0.as_deref(), Some(&b));
        drop(rb);
        assert!(f.lookup(Some("same"), false).0.is_some());
    }
}
