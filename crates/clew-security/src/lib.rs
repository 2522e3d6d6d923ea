//! Clew's security room: everything between a socket and a handler that decides *who* is calling
//! and *which tenant* they may touch.
//!
//! * [`identity`]: what a connection and a request prove about the caller ([`PeerIdentity`] from a
//!   client certificate, [`Identity`] after authentication).
//! * `tls`: server and client TLS from the OpenTelemetry Collector's `configtls` keys, on rustls
//!   with the aws-lc-rs provider; certificates reload without dropping connections.
//! * [`auth`]: authenticators (bearer tokens, mTLS, OIDC, a trusted proxy's header) and the
//!   tenant gate, a tower layer in front of every listener (HTTP and gRPC alike) that
//!   authenticates, chooses the tenant among those the identity may use, and rewrites the tenant
//!   header so every handler downstream sees only the authorized tenant.
//! * [`limits`]: per-tenant limits (Tempo's *overrides*): ingestion rates, attribute and per-trace
//!   limits, enforced by the receivers after validation; the per-tenant file is live-reloaded.
//!
//! May depend on `clew-model` (tenants), HTTP/tower and crypto crates. Must not depend on the
//! receivers, the store or the query crates: they call this room, never the other way round.

pub mod auth;
pub mod identity;
pub mod limits;
pub mod tls;

pub use identity::{Identity, PeerIdentity, TenantScope};
pub use tls::peer_identity;
