//! The `tls:` blocks of the configuration, with the OpenTelemetry Collector's `configtls` key names.
//!
//! Server side (under every listener's endpoint):
//!
//! ```yaml
//! tls:
//!   cert_file: certs/server.pem        # required: the certificate chain, leaf first (PEM)
//!   key_file: certs/server-key.pem     # required: its private key (PKCS#8, PKCS#1 or SEC1 PEM)
//!   client_ca_file: certs/ca.pem       # optional: require client certificates signed by these CAs (mTLS)
//!   min_version: "1.2"                 # optional: "1.2" (default) or "1.3"
//!   max_version: "1.3"                 # optional
//!   reload_interval: 30s               # optional: how often the files are checked for changes; "0s" = never
//! ```
//!
//! Client side (`clew demo`, `clew trace`/`search`/`doctor`, and anything else Clew connects to):
//! `ca_file`, `cert_file`, `key_file`, `insecure_skip_verify`, `server_name_override`,
//! `min_version`, `max_version`.
//!
//! Relative paths are resolved by the caller ([`TlsServerSettings::resolve_paths`]) against the
//! folder of the config file that names them.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often certificate files are checked for changes when `reload_interval` is absent.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// A TLS problem, naming the configuration key it comes from and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// Full key path, e.g. `receivers.otlp.protocols.grpc.tls.cert_file`.
    pub key: String,
    /// What is wrong, ending with `(fix: …)`.
    pub message: String,
}

impl TlsError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.starts_with("--") {
            write!(f, "{}: {}", self.key, self.message)
        } else {
            write!(f, "key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for TlsError {}

/// A TLS protocol version (rustls implements 1.2 and 1.3 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s
            .trim()
            .trim_start_matches("TLS")
            .trim_start_matches("tls")
            .trim()
        {
            "1.2" | "1_2" => Ok(Self::V1_2),
            "1.3" | "1_3" => Ok(Self::V1_3),
            "1.0" | "1.1" | "1" => Err(format!(
                "TLS {s} is not supported: it is obsolete and insecure (fix: \"1.2\" or \"1.3\")"
            )),
            _ => Err(format!(
                "{s:?} is not a TLS version (fix: \"1.2\" or \"1.3\")"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        }
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML reads `min_version: 1.2` (unquoted) as a number; accept both.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            F(f64),
        }
        let s = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::F(f) => format!("{f}"),
        };
        TlsVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"30s\", \"5m\", or \"0s\" to never reload"
        ))
    })
}

/// `tls:` under a listener's endpoint (the Collector's `configtls.ServerConfig` keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerSettings {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to. Set ⇒ every client must
    /// present a valid certificate (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// Accepted so that a Collector configuration gives a clear error rather than silently no
    /// client verification: on a server, the Collector's `ca_file` verifies nothing.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Lowest TLS version accepted (default 1.2).
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version accepted (default 1.3).
    pub max_version: Option<TlsVersion>,
    /// How often the certificate, key and client CA files are checked for changes (default 30s;
    /// `0s` turns reloading off).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub reload_interval: Option<Duration>,
}

impl TlsServerSettings {
    /// The reload period, `None` when reloading is off.
    pub fn reload_every(&self) -> Option<Duration> {
        match self.reload_interval {
            None => Some(DEFAULT_RELOAD_INTERVAL),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }

    /// The TLS versions to offer, lowest first.
    pub fn versions(&self, prefix: &str) -> Result<Vec<TlsVersion>, TlsError> {
        versions(self.min_version, self.max_version, prefix)
    }

    /// Makes relative file paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
            &mut self.ca_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Checks the keys without touching the files (`prefix` is the `tls` block's key path, e.g.
    /// `query.tls`). [`crate::tls::ServerTls::new`] reads and checks the files.
    pub fn check_keys(&self, prefix: &str) -> Result<(), TlsError> {
        if self.ca_file.is_some() {
            return Err(TlsError::new(
                format!("{prefix}.ca_file"),
                "a server does not use `ca_file` (fix: to require client certificates signed by this CA, name it `client_ca_file`; otherwise remove it)",
            ));
        }
        match (&self.cert_file, &self.key_file) {
            (None, _) => Err(TlsError::new(
                format!("{prefix}.cert_file"),
                "missing: a TLS listener needs its certificate (fix: set `cert_file` to a PEM certificate chain, and `key_file` to its private key)",
            )),
            (_, None) => Err(TlsError::new(
                format!("{prefix}.key_file"),
                "missing: a TLS listener needs the private key of `cert_file` (fix: set `key_file` to a PEM private key)",
            )),
            _ => {
                self.versions(prefix)?;
                Ok(())
            }
        }
    }
}

/// Outgoing TLS (the Collector's `configtls.ClientConfig` keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientSettings {
    /// CA certificates (PEM) that the server's certificate must chain to; the system's trust
    /// store when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for servers that require one (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: anyone on the path can read and change the
    /// traffic.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to verify the server's certificate against (and send as SNI) instead of the
    /// host of the URL.
    pub server_name_override: Option<String>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

impl TlsClientSettings {
    /// Whether anything is set (a plain `http://` target must not have TLS settings).
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Makes relative file paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.cert_file, &mut self.key_file, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    pub fn versions(&self, prefix: &str) -> Result<Vec<TlsVersion>, TlsError> {
        versions(self.min_version, self.max_version, prefix)
    }
}

fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
    prefix: &str,
) -> Result<Vec<TlsVersion>, TlsError> {
    let min = min.unwrap_or(TlsVersion::V1_2);
    let max = max.unwrap_or(TlsVersion::V1_3);
    if min > max {
        return Err(TlsError::new(
            format!("{prefix}.min_version"),
            format!(
                "min_version {} is above max_version {} (fix: lower min_version or raise max_version)",
                min.as_str(),
                max.as_str()
            ),
        ));
    }
    Ok([TlsVersion::V1_2, TlsVersion::V1_3]
        .into_iter()
        .filter(|v| (min..=max).contains(v))
        .collect())
}
