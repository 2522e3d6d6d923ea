//! One listener type for every port Clew opens, plaintext or TLS.
//!
//! [`Listener`] accepts TCP connections; with TLS, each handshake runs in its own task under
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up the accept loop, and only
//! completed handshakes come out. Every accepted [`ServerStream`] carries the caller's
//! [`PeerIdentity`] (address; certificate names with mutual TLS), and both servers put it into
//! every request's `http::Extensions`:
//!
//! * axum: serve with [`serve_router`] (or `axum::serve(listener, WithPeerIdentity::new(router))`);
//!   `Listener` implements `axum::serve::Listener`.
//! * tonic: `Server::builder()…serve_with_incoming_shutdown(listener.into_incoming(), signal)`;
//!   `ServerStream` implements `tonic::transport::server::Connected` with `PeerIdentity` as the
//!   connect info, which tonic inserts into each request's extensions.
//!
//! Read it with [`crate::peer_identity`] (`http::Extensions` of an `http::Request` or
//! `tonic::Request::extensions()`).

use super::certs;
use super::server::ServerTls;
use crate::PeerIdentity;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// A TLS handshake not finished within this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; further connections wait to start theirs.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// A bound listener, plaintext or TLS. Make it with [`Listener::bind`] or [`Listener::from_tcp`].
pub struct Listener {
    local_addr: SocketAddr,
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Tls {
        ready: mpsc::Receiver<ServerStream>,
        tls: Arc<ServerTls>,
        /// The accept loop; aborted (closing the socket) when the listener is dropped.
        accept_loop: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Inner::Tls { accept_loop, .. } = &self.inner {
            accept_loop.abort();
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.is_tls())
            .finish()
    }
}

impl Listener {
    /// Binds `addr`; with `tls`, every connection is a TLS connection using its current config.
    pub async fn bind(addr: SocketAddr, tls: Option<Arc<ServerTls>>) -> io::Result<Self> {
        Self::from_tcp(TcpListener::bind(addr).await?, tls)
    }

    /// Wraps a bound socket. Must be called inside a tokio runtime.
    pub fn from_tcp(tcp: TcpListener, tls: Option<Arc<ServerTls>>) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let inner = match tls {
            None => Inner::Plain(tcp),
            Some(tls) => {
                let (tx, rx) = mpsc::channel(64);
                let accept_loop = tokio::spawn(accept_tls(tcp, tls.clone(), tx));
                Inner::Tls {
                    ready: rx,
                    tls,
                    accept_loop,
                }
            }
        };
        Ok(Self { local_addr, inner })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls { .. })
    }

    /// The TLS configuration, when this is a TLS listener.
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        match &self.inner {
            Inner::Tls { tls, .. } => Some(tls),
            Inner::Plain(_) => None,
        }
    }

    /// The next connection (for TLS: with its handshake done). Accept errors (e.g. out of file
    /// descriptors) are logged and retried after a short pause.
    pub async fn next(&mut self) -> ServerStream {
        loop {
            match &mut self.inner {
                Inner::Plain(tcp) => match tcp.accept().await {
                    Ok((s, addr)) => {
                        let _ = s.set_nodelay(true);
                        return ServerStream {
                            io: Io::Plain(s),
                            peer: PeerIdentity {
                                remote_addr: Some(addr),
                                ..PeerIdentity::default()
                            },
                        };
                    }
                    Err(e) => accept_error(e).await,
                },
                Inner::Tls { ready, .. } => match ready.recv().await {
                    Some(s) => return s,
                    // The accept loop ended (it never does unless aborted): wait forever, as a
                    // listener that accepts nothing.
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// The listener as a stream of connections, for tonic's `serve_with_incoming*`.
    pub fn into_incoming(
        self,
    ) -> impl futures::Stream<Item = Result<ServerStream, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let s = l.next().await;
            Some((Ok(s), l))
        })
    }
}

async fn accept_error(e: io::Error) {
    // As axum does: connection-level errors are the peer's; others (EMFILE…) need a pause.
    let connection_error = matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    );
    if !connection_error {
        tracing::error!(error = %e, "accept failed; retrying in 1s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn accept_tls(tcp: TcpListener, tls: Arc<ServerTls>, ready: mpsc::Sender<ServerStream>) {
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let (socket, addr) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => {
                    let mut peer = PeerIdentity {
                        remote_addr: Some(addr),
                        ..PeerIdentity::default()
                    };
                    if let Some(cert) = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                    {
                        certs::fill_identity(&mut peer, cert);
                    }
                    let _ = ready
                        .send(ServerStream {
                            io: Io::Tls(Box::new(stream)),
                            peer,
                        })
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                }
            }
        });
    }
}

/// An accepted connection and who is on the other end.
pub struct ServerStream {
    io: Io,
    peer: PeerIdentity,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ServerStream {
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// The negotiated ALPN protocol (`h2`, `http/1.1`), for TLS connections.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.io {
            Io::Tls(s) => s.get_ref().1.alpn_protocol(),
            Io::Plain(_) => None,
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for ServerStream {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl axum::serve::Listener for Listener {
    type Io = ServerStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ServerStream, SocketAddr) {
        let s = self.next().await;
        let addr = s.peer.remote_addr.unwrap_or(self.local_addr);
        (s, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// axum's make-service for a [`Listener`]: every request of a connection gets the connection's
/// [`PeerIdentity`] in its extensions (and as `ConnectInfo<PeerIdentity>`).
#[derive(Clone)]
pub struct WithPeerIdentity<S> {
    inner: S,
}

impl<S> WithPeerIdentity<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<'a, S: Clone> tower::Service<axum::serve::IncomingStream<'a, Listener>>
    for WithPeerIdentity<S>
{
    type Response = PeerService<S>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<PeerService<S>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: axum::serve::IncomingStream<'a, Listener>) -> Self::Future {
        std::future::ready(Ok(PeerService {
            inner: self.inner.clone(),
            peer: stream.io().peer.clone(),
        }))
    }
}

/// A service with one connection's [`PeerIdentity`], added to each request.
#[derive(Clone)]
pub struct PeerService<S> {
    inner: S,
    peer: PeerIdentity,
}

impl<S, B> tower::Service<http::Request<B>> for PeerService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        let ext = req.extensions_mut();
        ext.insert(axum::extract::ConnectInfo(self.peer.clone()));
        ext.insert(self.peer.clone());
        self.inner.call(req)
    }
}

/// Serves an axum router on `listener` until `shutdown` resolves, then finishes in-flight
/// requests. Every request carries the caller's [`PeerIdentity`].
pub async fn serve_router(
    listener: Listener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, WithPeerIdentity::new(router))
        .with_graceful_shutdown(shutdown)
        .await
}
