//! Carrying the current context across async and thread boundaries.
//!
//! [`Context::current`] (and OpenTelemetry's current context) live in thread-locals:
//! `tokio::spawn`, `spawn_blocking`, `std::thread::spawn` and thread pools start without them.
//! These helpers capture the context at the call site and attach it where the work runs:
//!
//! * [`FutureExt::with_context`] / [`FutureExt::with_current_context`]: attach on every poll;
//! * [`spawn`], [`spawn_blocking`] (feature `tokio`), [`thread_spawn`];
//! * [`wrap`] / [`wrap_fn`] for any executor or pool (`rayon::spawn(wrap(f))`,
//!   `par_iter().map(wrap_fn(f))`), and [`rayon_spawn`] / [`rayon_install`] (feature `rayon`).
//!
//! With feature `otel`, the OpenTelemetry current context is carried along too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::context::Context;

/// Everything captured at a call site.
#[derive(Clone)]
struct Captured {
    cx: Arc<Context>,
    #[cfg(feature = "otel")]
    otel: opentelemetry::Context,
}

impl Captured {
    fn current() -> Self {
        Captured {
            cx: Context::current_shared(),
            #[cfg(feature = "otel")]
            otel: opentelemetry::Context::current(),
        }
    }

    fn from(cx: Context) -> Self {
        Captured {
            cx: Arc::new(cx),
            #[cfg(feature = "otel")]
            otel: opentelemetry::Context::current(),
        }
    }

    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = Context::attach_shared(self.cx.clone());
        #[cfg(feature = "otel")]
        let _o = self.otel.clone().attach();
        f()
    }
}

/// A future that runs with a context attached on every poll.
pub struct WithContext<F> {
    inner: Pin<Box<F>>,
    captured: Captured,
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let captured = &this.captured;
        let inner = &mut this.inner;
        captured.run(|| inner.as_mut().poll(cx))
    }
}

/// Attach a context to a future.
pub trait FutureExt: Future + Sized {
    /// Run this future with `cx` as the current context.
    fn with_context(self, cx: Context) -> WithContext<Self> {
        WithContext {
            inner: Box::pin(self),
            captured: Captured::from(cx),
        }
    }

    /// Run this future with the caller's current context.
    fn with_current_context(self) -> WithContext<Self> {
        WithContext {
            inner: Box::pin(self),
            captured: Captured::current(),
        }
    }
}

impl<F: Future> FutureExt for F {}

/// `tokio::spawn` that carries the current context into the task.
#[cfg(feature = "tokio")]
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut.with_current_context())
}

/// `tokio::task::spawn_blocking` that carries the current context.
#[cfg(feature = "tokio")]
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(wrap(f))
}

/// `std::thread::spawn` that carries the current context.
pub fn thread_spawn<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(wrap(f))
}

/// Wrap a closure so it runs with the caller's current context, wherever it runs.
pub fn wrap<F, R>(f: F) -> impl FnOnce() -> R + Send + 'static
where
    F: FnOnce() -> R + Send + 'static,
{
    let captured = Captured::current();
    move || captured.run(f)
}

/// Wrap an `Fn` (e.g. for `par_iter().map(..)`) so every call runs with the caller's context.
pub fn wrap_fn<A, R, F>(f: F) -> impl Fn(A) -> R + Send + Sync
where
    F: Fn(A) -> R + Send + Sync,
{
    let captured = Captured::current();
    move |a| captured.run(|| f(a))
}

/// `rayon::spawn` that carries the current context.
#[cfg(feature = "rayon")]
pub fn rayon_spawn<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    rayon::spawn(wrap(f))
}

/// `ThreadPool::install` that carries the current context onto the pool thread.
#[cfg(feature = "rayon")]
pub fn rayon_install<F, R>(pool: &rayon::ThreadPool, f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let captured = Captured::current();
    pool.install(move || captured.run(f))
}

// `Captured` holds an `opentelemetry::Context`, which is Send + Sync.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Captured>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SpanContext;

    fn sample() -> Context {
        let mut cx = Context::new().with_span(SpanContext::new_root(true));
        let _ = cx.baggage.insert("k", "v");
        cx
    }

    fn seen() -> Option<SpanContext> {
        Context::current().span
    }

    #[test]
    fn std_thread_loses_context_without_helper_and_keeps_it_with() {
        let cx = sample();
        let _g = cx.clone().attach();
        let lost = std::thread::spawn(seen).join().ok().flatten();
        assert!(lost.is_none());
        let kept = thread_spawn(seen).join().ok().flatten();
        assert_eq!(kept, cx.span);
        let kept_bag = thread_spawn(|| Context::current().baggage).join().ok();
        assert_eq!(
            kept_bag.and_then(|b| b.get("k").map(str::to_string)),
            Some("v".into())
        );
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokio_spawn_loses_context_without_helper_and_keeps_it_with() {
        let cx = sample();
        let _g = cx.clone().attach();
        let lost = tokio::spawn(async { seen() }).await.ok().flatten();
        assert!(lost.is_none());
        let kept = spawn(async {
            tokio::task::yield_now().await;
            seen()
        })
        .await
        .ok()
        .flatten();
        assert_eq!(kept, cx.span);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_blocking_loses_context_without_helper_and_keeps_it_with() {
        let cx = sample();
        let _g = cx.clone().attach();
        let lost = tokio::task::spawn_blocking(seen).await.ok().flatten();
        assert!(lost.is_none());
        let kept = spawn_blocking(seen).await.ok().flatten();
        assert_eq!(kept, cx.span);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_context_attaches_across_awaits_and_detaches_after() {
        let cx = sample();
        let fut = async {
            tokio::task::yield_now().await;
            seen()
        }
        .with_context(cx.clone());
        let got = tokio::spawn(fut).await.ok().flatten();
        assert_eq!(got, cx.span);
        assert!(seen().is_none());
    }

    #[cfg(feature = "otel")]
    #[test]
    fn otel_context_is_carried_too() {
        use opentelemetry::trace::TraceContextExt;
        let sc = crate::otel::to_otel_span_context(&SpanContext::new_root(true));
        let ocx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
        let _g = ocx.attach();
        let lost = std::thread::spawn(|| {
            opentelemetry::Context::current()
                .span()
                .span_context()
                .clone()
        })
        .join()
        .ok();
        assert!(lost.is_some_and(|s| !s.is_valid()));
        let kept = thread_spawn(|| {
            opentelemetry::Context::current()
                .span()
                .span_context()
                .clone()
        })
        .join()
        .ok();
        assert_eq!(kept, Some(sc));
    }

    #[test]
    fn wrap_fn_carries_context_to_pool_threads() {
        let cx = sample();
        let _g = cx.clone().attach();
        let f = Arc::new(wrap_fn(|_: u8| seen()));
        let f2 = f.clone();
        let got = std::thread::spawn(move || f2(0)).join().ok().flatten();
        assert_eq!(got, cx.span);
    }

    #[cfg(feature = "rayon")]
    #[test]
    fn rayon_loses_context_without_helper_and_keeps_it_with() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let cx = sample();
        let _g = cx.clone().attach();
        assert!(pool.install(seen).is_none());
        assert_eq!(rayon_install(&pool, seen), cx.span);
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        rayon::spawn(move || {
            let _ = tx2.send(seen());
        });
        rayon_spawn(move || {
            let _ = tx.send(seen());
        });
        let mut got: Vec<_> = rx.iter().take(2).collect();
        got.sort_by_key(|s| s.is_some());
        assert_eq!(got, vec![None, cx.span]);
    }
}
