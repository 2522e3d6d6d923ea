//! Which request headers (HTTP) and metadata entries (gRPC) a receiver keeps as the batch's
//! [`RequestMetadata`], for processors that copy them into attributes (the `attributes`
//! processor's `from_context: metadata.<name>`).
//!
//! Off by default: nothing is kept and nothing is allocated. [`ReceiverConfig::include_metadata`]
//! keeps every header; [`ReceiverConfig::metadata_keys`] keeps only the listed ones (and implies
//! `include_metadata`). Credentials are never kept, whatever is configured: `authorization`,
//! `proxy-authorization`, `cookie`, `set-cookie`, the reverse-proxy identity headers
//! (`x-forwarded-user`, `x-forwarded-tenants`), and any name containing `token`, `secret`,
//! `password`, `api-key`/`apikey`, `auth` or `cookie`; nor gRPC binary (`-bin`) and reserved
//! (`grpc-`) entries, nor values that are not visible ASCII. At most [`MAX_ENTRIES`] entries of at
//! most [`MAX_VALUE_BYTES`] bytes each are kept (longer values are skipped, not cut).

use crate::errors::ReceiveError;
use crate::ReceiverConfig;
use axum::http::HeaderMap;
use clew_model::RequestMetadata;

/// Most metadata entries kept per request.
pub const MAX_ENTRIES: usize = 64;
/// Longest metadata value kept, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

const DENIED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-forwarded-user",
    "x-forwarded-tenants",
];
const DENIED_PARTS: &[&str] = &[
    "token", "secret", "password", "api-key", "apikey", "api_key", "auth", "cookie",
];

/// Whether a (lowercase) header name may never be kept.
pub fn is_denied(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    DENIED.contains(&name.as_str())
        || DENIED_PARTS.iter().any(|p| name.contains(p))
        || name.starts_with("grpc-")
        || name.ends_with("-bin")
}

/// Connection context a processor may ask for (`from_context: client.address` / `auth.subject`),
/// kept under these reserved names — `:` cannot start an HTTP header or gRPC metadata name, so
/// no client can forge them. Only these: the peer's IP address, and the authenticated identity's
/// subject (a name, never the credential it was proven with).
pub const CONTEXT_KEYS: [&str; 2] = [CLIENT_ADDRESS, AUTH_SUBJECT];
/// The peer's IP address (no port), from the connection.
pub const CLIENT_ADDRESS: &str = ":client.address";
/// `clew_security::Identity::subject` of the authenticated caller (token name, certificate
/// name, JWT `sub`).
pub const AUTH_SUBJECT: &str = ":auth.subject";

#[derive(Debug, Clone)]
pub(crate) enum MetadataFilter {
    Off,
    All,
    Keys(Vec<String>),
}

impl MetadataFilter {
    pub(crate) fn new(cfg: &ReceiverConfig) -> Result<Self, ReceiveError> {
        if !cfg.metadata_keys.is_empty() {
            let mut keys = Vec::with_capacity(cfg.metadata_keys.len());
            for k in &cfg.metadata_keys {
                let lower = k.to_ascii_lowercase();
                if lower.starts_with(':') {
                    if !CONTEXT_KEYS.contains(&lower.as_str()) {
                        return Err(ReceiveError::Config(format!(
                            "metadata_keys: {k:?} is not a connection context key (known: {})",
                            CONTEXT_KEYS.join(", ")
                        )));
                    }
                    keys.push(lower);
                    continue;
                }
                if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    return Err(ReceiveError::Config(format!(
                        "metadata_keys: {k:?} is not a valid header name"
                    )));
                }
                if is_denied(&lower) {
                    return Err(ReceiveError::Config(format!(
                        "metadata_keys: {k:?} may carry credentials and is never kept"
                    )));
                }
                keys.push(lower);
            }
            return Ok(Self::Keys(keys));
        }
        Ok(if cfg.include_metadata {
            Self::All
        } else {
            Self::Off
        })
    }

    fn wanted(&self, name: &str) -> bool {
        match self {
            Self::Off => false,
            Self::All => !is_denied(name),
            Self::Keys(keys) => keys.iter().any(|k| k == name),
        }
    }

    pub(crate) fn collect<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> RequestMetadata {
        if matches!(self, Self::Off) {
            return RequestMetadata::default();
        }
        let mut out = Vec::new();
        for (name, value) in entries {
            if out.len() >= MAX_ENTRIES {
                break;
            }
            if value.len() > MAX_VALUE_BYTES || !self.wanted(name) {
                continue;
            }
            // Visible ASCII (and spaces/tabs) only, as `HeaderValue::to_str` accepts.
            let Ok(text) = std::str::from_utf8(value) else {
                continue;
            };
            if !text
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                continue;
            }
            out.push((name.to_string(), text.to_string()));
        }
        RequestMetadata::new(out)
    }

    pub(crate) fn of_http(&self, headers: &HeaderMap) -> RequestMetadata {
        self.collect(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
    }

    /// [`Self::of_http`] plus the connection context keys asked for by name (never with `All`:
    /// `include_metadata` alone keeps headers only).
    pub(crate) fn of_http_request(
        &self,
        headers: &HeaderMap,
        extensions: &axum::http::Extensions,
    ) -> RequestMetadata {
        let m = self.of_http(headers);
        self.with_context(m, extensions)
    }

    /// [`Self::of_grpc`] plus the connection context keys asked for by name.
    pub(crate) fn of_grpc_request<T>(&self, request: &tonic::Request<T>) -> RequestMetadata {
        let m = self.of_grpc(request.metadata());
        self.with_context(m, request.extensions())
    }

    fn with_context(
        &self,
        metadata: RequestMetadata,
        extensions: &axum::http::Extensions,
    ) -> RequestMetadata {
        let Self::Keys(keys) = self else {
            return metadata;
        };
        let mut extra = Vec::new();
        for k in keys.iter().filter(|k| k.starts_with(':')) {
            let value = match k.as_str() {
                CLIENT_ADDRESS => clew_security::peer_identity(extensions)
                    .and_then(|p| p.remote_addr)
                    .map(|a| a.ip().to_string()),
                AUTH_SUBJECT => extensions
                    .get::<clew_security::Identity>()
                    .map(|i| i.subject.clone()),
                _ => None,
            };
            if let Some(v) = value.filter(|v| v.len() <= MAX_VALUE_BYTES) {
                extra.push((k.clone(), v));
            }
        }
        if extra.is_empty() {
            return metadata;
        }
        let mut pairs: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pairs.extend(extra);
        RequestMetadata::new(pairs)
    }

    pub(crate) fn of_grpc(&self, metadata: &tonic::metadata::MetadataMap) -> RequestMetadata {
        if matches!(self, Self::Off) {
            return RequestMetadata::default();
        }
        self.collect(metadata.iter().filter_map(|e| match e {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str(), v.as_bytes())),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer x"),
            ("cookie", "a=b"),
            ("x-api-key", "k"),
            ("x-auth-token", "t"),
            ("x-forwarded-user", "alice"),
            ("x-client-id", "web"),
            ("user-agent", "curl/8"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h.append("x-client-id", HeaderValue::from_static("second"));
        h.append("x-bad", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        h
    }

    #[test]
    fn context_keys_only_when_asked_for_by_name_and_never_forged() {
        let mut ext = axum::http::Extensions::new();
        ext.insert(clew_security::PeerIdentity {
            remote_addr: Some("127.0.0.1:5555".parse().unwrap()),
            common_name: None,
            dns_names: Vec::new(),
            uri_names: Vec::new(),
            email_names: Vec::new(),
        });
        ext.insert(clew_security::Identity {
            subject: "ingest-bot".into(),
            tenants: clew_security::TenantScope::Any,
        });
        let keys = MetadataFilter::new(&ReceiverConfig {
            metadata_keys: vec![
                ":client.address".into(),
                ":Auth.Subject".into(),
                "x-client-id".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        let m = keys.of_http_request(&headers(), &ext);
        assert_eq!(m.get(CLIENT_ADDRESS), Some("127.0.0.1"), "ip only, no port");
        assert_eq!(m.get(AUTH_SUBJECT), Some("ingest-bot"));
        assert_eq!(m.get("x-client-id"), Some("web"));
        // Nothing in the request's extensions: nothing kept (no placeholder).
        let bare = keys.of_http_request(&headers(), &axum::http::Extensions::new());
        assert_eq!(bare.get(CLIENT_ADDRESS), None);
        // `include_metadata` alone keeps headers only.
        let all = MetadataFilter::new(&ReceiverConfig {
            include_metadata: true,
            ..Default::default()
        })
        .unwrap();
        let m = all.of_http_request(&headers(), &ext);
        assert!(m.iter().all(|(k, _)| !k.starts_with(':')));
        // Unknown reserved names are configuration errors.
        let err = MetadataFilter::new(&ReceiverConfig {
            metadata_keys: vec![":auth.token".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains(":auth.token"), "{err}");
    }

    #[test]
    fn off_keeps_nothing_all_keeps_no_credentials() {
        let off = MetadataFilter::new(&ReceiverConfig::default()).unwrap();
        assert!(off.of_http(&headers()).is_empty());
        let all = MetadataFilter::new(&ReceiverConfig {
            include_metadata: true,
            ..Default::default()
        })
        .unwrap();
        let m = all.of_http(&headers());
        let names: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["x-client-id", "x-client-id", "user-agent"]);
        assert_eq!(
            m.get_all("x-client-id").collect::<Vec<_>>(),
            ["web", "second"]
        );
    }

    #[test]
    fn keys_keep_only_those_and_refuse_credentials() {
        let f = MetadataFilter::new(&ReceiverConfig {
            metadata_keys: vec!["X-Client-Id".into()],
            ..Default::default()
        })
        .unwrap();
        let m = f.of_http(&headers());
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("x-client-id"), Some("web"));
        for bad in ["Authorization", "x-session-token", "bad name"] {
            let e = MetadataFilter::new(&ReceiverConfig {
                metadata_keys: vec![bad.into()],
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn grpc_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("x-client-id", "web".parse().unwrap());
        md.insert("authorization", "Bearer x".parse().unwrap());
        md.insert_bin(
            "trace-proto-bin",
            tonic::metadata::MetadataValue::from_bytes(b"\x00\x01"),
        );
        let all = MetadataFilter::All.of_grpc(&md);
        assert_eq!(all.iter().collect::<Vec<_>>(), vec![("x-client-id", "web")]);
    }
}
