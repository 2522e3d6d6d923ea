//! Streaming bodies that count what passes (for `http.*.body.size`) and end the span when the
//! response body ends: nothing is buffered, frames go through as they come.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A small body of our own (error pages).
pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Called once when a counted body ends, fails or is dropped: (bytes seen, completed).
pub type OnEnd = Box<dyn FnOnce(u64, bool) + Send>;

/// Counts data bytes of `B`; `on_end` runs once at the end of the stream, on an error, or when
/// the body is dropped unfinished (client went away).
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>, on_end: Option<OnEnd>) -> Self {
        Self {
            inner,
            count,
            on_end,
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f(self.count.load(Ordering::Relaxed), complete);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::sync::Mutex;

    #[tokio::test]
    async fn counts_streamed_frames_and_reports_once() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"defg"))),
        ];
        let stream = StreamBody::new(futures::stream::iter(chunks));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let count = Arc::new(AtomicU64::new(0));
        let body = Counted::new(
            stream,
            count.clone(),
            Some(Box::new(move |n, done| s2.lock().unwrap().push((n, done)))),
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abcdefg");
        assert_eq!(*seen.lock().unwrap(), vec![(7, true)]);
    }

    #[tokio::test]
    async fn dropped_unfinished_reports_incomplete() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let body = Counted::new(
            Full::new(Bytes::from_static(b"x")),
            Arc::new(AtomicU64::new(0)),
            Some(Box::new(move |n, done| s2.lock().unwrap().push((n, done)))),
        );
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![(0, false)]);
    }
}
