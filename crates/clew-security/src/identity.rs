//! What Clew knows about a caller.

use clew_model::Tenant;

/// What the TLS handshake proved about the peer: the client certificate's subject names (empty
/// when the connection is plaintext or the client sent no certificate). Inserted into every
/// request's extensions by the TLS listener (axum `ConnectInfo` and tonic alike).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's socket address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// Subject common name of the verified client certificate.
    pub common_name: Option<String>,
    /// Subject alternative names of the verified client certificate.
    pub dns_names: Vec<String>,
    pub uri_names: Vec<String>,
    pub email_names: Vec<String>,
}

impl PeerIdentity {
    /// Whether a verified client certificate was presented.
    pub fn has_certificate(&self) -> bool {
        self.common_name.is_some()
            || !self.dns_names.is_empty()
            || !self.uri_names.is_empty()
            || !self.email_names.is_empty()
    }
}

/// The tenants an authenticated identity may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Any tenant (an administrator, or auth off).
    Any,
    /// These tenants; the first is used when a request names none.
    Only(Vec<Tenant>),
}

impl TenantScope {
    pub fn allows(&self, t: &Tenant) -> bool {
        match self {
            TenantScope::Any => true,
            TenantScope::Only(list) => list.contains(t),
        }
    }
}

/// An authenticated caller, inserted into the request's extensions by the tenant gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who it is, for logs and the audit trail (token name, certificate name, JWT `sub`).
    pub subject: String,
    pub tenants: TenantScope,
}
