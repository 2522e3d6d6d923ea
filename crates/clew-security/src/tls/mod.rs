//! TLS and mutual TLS for every listener and every outgoing connection, on rustls with the
//! aws-lc-rs provider (the only crypto provider compiled: no ring).
//!
//! * [`settings`]: the `tls:` keys of the OpenTelemetry Collector's `configtls`
//!   ([`TlsServerSettings`], [`TlsClientSettings`]), with errors naming the key and the fix.
//! * [`ServerTls`]: a listener's `rustls::ServerConfig`, rebuilt when the certificate, key or
//!   client CA files change; new handshakes use the new files, open connections continue.
//!   `client_ca_file` ⇒ a client certificate signed by that CA is required.
//! * [`Listener`]: the one listener type (plaintext or TLS; handshakes in their own tasks with a
//!   timeout) for axum ([`serve_router`]) and tonic ([`Listener::into_incoming`]). Every request
//!   it serves carries a [`PeerIdentity`](crate::PeerIdentity) in its extensions — for
//!   plaintext connections too, with only the address — read with [`peer_identity`].
//! * [`client_config`], [`grpc_endpoint`], [`reqwest_tls`]: outgoing TLS (CA, client
//!   certificate, `insecure_skip_verify`, `server_name_override`).

pub mod certs;
mod client;
mod listener;
mod server;
pub mod settings;

pub use client::{client_config, grpc_endpoint, reqwest_tls, ClientIo, GrpcConnector, GrpcIo};
pub use listener::{
    serve_router, Listener, PeerService, ServerStream, WithPeerIdentity, HANDSHAKE_TIMEOUT,
    MAX_CONCURRENT_HANDSHAKES,
};
pub use server::{provider, Alpn, ServerTls};
pub use settings::{
    TlsClientSettings, TlsError, TlsServerSettings, TlsVersion, DEFAULT_RELOAD_INTERVAL,
};

use crate::PeerIdentity;

/// The caller's [`PeerIdentity`] from a request's extensions: present on every request served
/// through a [`Listener`] (axum and tonic alike; plaintext connections carry only the address).
///
/// ```ignore
/// // axum handler or middleware:
/// let peer = clew_security::peer_identity(request.extensions());
/// // tonic service:
/// let peer = clew_security::peer_identity(request.extensions()); // tonic::Request::extensions()
/// ```
pub fn peer_identity(extensions: &http::Extensions) -> Option<&PeerIdentity> {
    extensions.get::<PeerIdentity>().or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<PeerIdentity>>()
            .map(|c| &c.0)
    })
}

#[cfg(test)]
mod tests;
