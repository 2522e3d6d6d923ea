//! A server's TLS configuration, rebuilt when its files change.
//!
//! [`ServerTls`] holds the current `rustls::ServerConfig` behind a lock; every new handshake takes
//! the config current at that moment ([`ServerTls::config`]), while established connections keep
//! the one they were made with. [`ServerTls::spawn_reloader`] checks the certificate, key and
//! client CA files every `reload_interval` (size, modification time and inode, so an atomic
//! rename or a Kubernetes secret's symlink swap is seen) and swaps in a new config when they
//! changed. A change that does not load (a key written before its certificate, a broken file)
//! keeps the previous config and is retried at the next check.

use super::certs;
use super::settings::{TlsError, TlsServerSettings, TlsVersion};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::SystemTime;

/// Which application protocols a listener offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// HTTP APIs and the web UI: HTTP/2 and HTTP/1.1.
    Http,
}

impl Alpn {
    pub fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Grpc => vec![b"h2".to_vec()],
            Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// The process's one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn protocol_versions(
    versions: &[TlsVersion],
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect()
}

/// What identifies a version of a file: changes on rewrite, rename-over and symlink swap.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

#[derive(Default)]
struct ReloadState {
    /// Stamps of the files the current config was built from.
    loaded: Vec<Option<Stamp>>,
    /// Stamps of the last change that failed to load (warned once).
    failed: Option<Vec<Option<Stamp>>>,
}

/// A listener's TLS configuration, reloadable. Build with [`ServerTls::new`].
pub struct ServerTls {
    settings: TlsServerSettings,
    /// The `tls` block's key path, for errors and logs.
    prefix: String,
    alpn: Alpn,
    current: RwLock<Arc<rustls::ServerConfig>>,
    state: Mutex<ReloadState>,
    reloads: AtomicU64,
    /// Warnings from the last successful load (e.g. an expired certificate).
    warnings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .field("reloads", &self.reloads.load(Ordering::Relaxed))
            .finish()
    }
}

impl ServerTls {
    /// Reads the files and builds the first config. `prefix` is the `tls` block's key path (e.g.
    /// `receivers.otlp.protocols.grpc.tls`); errors name the key and the fix.
    pub fn new(
        settings: TlsServerSettings,
        prefix: &str,
        alpn: Alpn,
    ) -> Result<Arc<Self>, TlsError> {
        settings.check_keys(prefix)?;
        let stamps = file_stamps(&settings);
        let (config, warnings) = build(&settings, prefix, alpn)?;
        Ok(Arc::new(Self {
            settings,
            prefix: prefix.to_string(),
            alpn,
            current: RwLock::new(Arc::new(config)),
            state: Mutex::new(ReloadState {
                loaded: stamps,
                failed: None,
            }),
            reloads: AtomicU64::new(0),
            warnings: Mutex::new(warnings),
        }))
    }

    /// The config for a new handshake.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn settings(&self) -> &TlsServerSettings {
        &self.settings
    }

    /// Whether client certificates are required.
    pub fn requires_client_certificate(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }

    /// How many times the config was rebuilt from changed files.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Warnings about the loaded files (expired or soon-expiring certificate).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds the config if a file changed since the last load: `Ok(true)` when swapped in,
    /// `Ok(false)` when nothing changed, `Err` (the previous config stays) when the changed
    /// files do not load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = file_stamps(&self.settings);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if stamps == state.loaded {
            return Ok(false);
        }
        match build(&self.settings, &self.prefix, self.alpn) {
            Ok((config, warnings)) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                *self.warnings.lock().unwrap_or_else(|e| e.into_inner()) = warnings;
                state.loaded = stamps;
                state.failed = None;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                state.failed = Some(stamps);
                Err(e)
            }
        }
    }

    /// Checks the files every `reload_interval` (unless it is `0s`) for as long as this
    /// `ServerTls` is in use; logs reloads and failures.
    pub fn spawn_reloader(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.settings.reload_every()?;
        let weak: Weak<Self> = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let warned = {
                    let state = this.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.failed.clone()
                };
                match this.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(key = %this.prefix, "TLS certificate files changed: reloaded (new connections use them; open connections continue)");
                        for w in this.warnings() {
                            tracing::warn!("{w}");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let now = file_stamps(&this.settings);
                        if warned.as_ref() != Some(&now) {
                            tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the previous certificate (retrying every {})", humantime::format_duration(every));
                        }
                    }
                }
            }
        }))
    }
}

fn file_stamps(s: &TlsServerSettings) -> Vec<Option<Stamp>> {
    [&s.cert_file, &s.key_file, &s.client_ca_file]
        .into_iter()
        .map(|p| p.as_ref().and_then(stamp))
        .collect()
}

/// Reads the files and builds a `ServerConfig` (aws-lc-rs provider, ALPN per `alpn`); returns
/// warnings that do not stop the listener.
fn build(
    s: &TlsServerSettings,
    prefix: &str,
    alpn: Alpn,
) -> Result<(rustls::ServerConfig, Vec<String>), TlsError> {
    s.check_keys(prefix)?;
    let (Some(cert_file), Some(key_file)) = (&s.cert_file, &s.key_file) else {
        unreachable!("check_keys requires both");
    };
    let cert_key = format!("{prefix}.cert_file");
    let key_key = format!("{prefix}.key_file");
    let chain = certs::load_certs(&cert_key, cert_file)?;
    let key = certs::load_key(&key_key, key_file)?;
    let mut warnings = Vec::new();
    if let Some(w) = certs::expiry_warning(&cert_key, cert_file, &chain[0]) {
        warnings.push(w);
    }
    let provider = provider();
    let versions = protocol_versions(&s.versions(prefix)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::new(format!("{prefix}.min_version"), format!("{e}")))?;
    let builder = match &s.client_ca_file {
        Some(ca) => {
            let ca_key = format!("{prefix}.client_ca_file");
            let roots = certs::load_roots(&ca_key, ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| {
                TlsError::new(
                    &ca_key,
                    format!(
                        "{}: cannot verify client certificates with it ({e}) (fix: the PEM certificate of the CA that signs client certificates)",
                        ca.display()
                    ),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::new(
            &key_key,
            format!(
                "{} is not the private key of the certificate in {} (fix: use the key file generated with this certificate)",
                key_file.display(),
                cert_file.display()
            ),
        ),
        e => TlsError::new(
            &key_key,
            format!(
                "{} cannot be used with the certificate in {} ({e}) (fix: an RSA, ECDSA or Ed25519 key matching the certificate)",
                key_file.display(),
                cert_file.display()
            ),
        ),
    })?;
    config.alpn_protocols = alpn.protocols();
    Ok((config, warnings))
}
