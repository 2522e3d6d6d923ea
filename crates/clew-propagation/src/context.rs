//! The propagated context ([`Context`]) and the per-thread "current context".
//!
//! [`Context::current`] reads a thread-local slot; [`Context::attach`] sets it until the
//! returned guard drops. Spawned tasks and threads do **not** inherit it — use the helpers in
//! [`crate::task`] for that.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::baggage::Baggage;
use crate::ids::SpanContext;

/// A sampling decision carried by formats that can express one without span ids
/// (B3 `b3: 0`, `X-B3-Flags: 1`, Jaeger debug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Do not sample (B3 `0`).
    Deny,
    /// Sample (B3 `1`).
    Accept,
    /// Debug: sample and force recording (B3 `d`); implies sampled.
    Debug,
}

/// What propagators extract and inject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The remote (or current) span, if any.
    pub span: Option<SpanContext>,
    /// Baggage.
    pub baggage: Baggage,
    /// An explicit sampling decision, when the format carried one.
    pub sampling: Option<Sampling>,
}

thread_local! {
    static CURRENT: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a span context.
    pub fn with_span(mut self, span: SpanContext) -> Self {
        self.span = Some(span);
        self
    }

    /// With baggage.
    pub fn with_baggage(mut self, baggage: Baggage) -> Self {
        self.baggage = baggage;
        self
    }

    /// The context attached to this thread (empty if none).
    pub fn current() -> Context {
        CURRENT.with(|c| c.borrow().last().map(|a| (**a).clone()).unwrap_or_default())
    }

    /// The context attached to this thread, shared (cheap to clone and re-attach).
    pub fn current_shared() -> Arc<Context> {
        CURRENT.with(|c| c.borrow().last().cloned().unwrap_or_default())
    }

    /// Make `self` the current context of this thread until the guard drops.
    #[must_use = "the context is detached when the guard drops"]
    pub fn attach(self) -> ContextGuard {
        Self::attach_shared(Arc::new(self))
    }

    /// Make a shared context current until the guard drops.
    #[must_use = "the context is detached when the guard drops"]
    pub fn attach_shared(cx: Arc<Context>) -> ContextGuard {
        CURRENT.with(|c| c.borrow_mut().push(cx));
        ContextGuard {
            _not_send: PhantomData,
        }
    }
}

/// Restores the previous current context on drop. Not `Send`: it belongs to its thread.
pub struct ContextGuard {
    _not_send: PhantomData<*const ()>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SpanContext;

    #[test]
    fn attach_nests_and_restores() {
        assert!(Context::current().span.is_none());
        let a = Context::new().with_span(SpanContext::new_root(true));
        let g1 = a.clone().attach();
        assert_eq!(Context::current(), a);
        {
            let b = Context::new().with_span(SpanContext::new_root(false));
            let _g2 = b.clone().attach();
            assert_eq!(Context::current(), b);
        }
        assert_eq!(Context::current(), a);
        drop(g1);
        assert!(Context::current().span.is_none());
    }
}
