//! Outgoing TLS: [`TlsClientSettings`] → `rustls::ClientConfig`, and connectors for what Clew
//! connects to (gRPC through tonic, HTTP through reqwest).
//!
//! * HTTP (reqwest): [`reqwest_tls`] gives a config for `ClientBuilder::use_preconfigured_tls`
//!   (ALPN http/1.1), or `None` to keep reqwest's defaults (the system's trust store).
//! * gRPC (tonic): [`grpc_endpoint`] turns `http://` or `https://HOST:PORT` into a tonic
//!   `Endpoint` and a [`GrpcConnector`] that does TCP, then TLS for `https://`; connect with
//!   `endpoint.connect_with_connector(connector)`.

use super::certs;
use super::server::{protocol_versions, provider};
use super::settings::{TlsClientSettings, TlsError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Builds a client config: trust `ca_file` (else the system's trust store), present
/// `cert_file`/`key_file` when set, offer `alpn`. `prefix` names the settings in errors (a config
/// key path, or the command line flags' `--` prefix).
pub fn client_config(
    s: &TlsClientSettings,
    prefix: &str,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let key = |k: &str| {
        if prefix.is_empty() {
            format!("--{}", k.replace('_', "-"))
        } else {
            format!("{prefix}.{k}")
        }
    };
    let provider = provider();
    let versions = protocol_versions(&s.versions(prefix)?);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::new(key("min_version"), e.to_string()))?;
    let builder = if s.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else if let Some(ca) = &s.ca_file {
        let roots = certs::load_roots(&key("ca_file"), ca)?;
        builder.with_root_certificates(roots)
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|e| {
            TlsError::new(
                key("ca_file"),
                format!("cannot use the system's trust store ({e}) (fix: name the server's CA with ca_file)"),
            )
        })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let mut config = match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => {
            let chain = certs::load_certs(&key("cert_file"), c)?;
            let pk = certs::load_key(&key("key_file"), k)?;
            builder.with_client_auth_cert(chain, pk).map_err(|e| {
                TlsError::new(
                    key("key_file"),
                    format!(
                        "{} does not fit the certificate in {} ({e}) (fix: the key generated with this certificate)",
                        k.display(),
                        c.display()
                    ),
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(TlsError::new(
                key("key_file"),
                "missing: a client certificate needs its private key (fix: set key_file too)",
            ))
        }
        (None, Some(_)) => {
            return Err(TlsError::new(
                key("cert_file"),
                "missing: key_file is set without its certificate (fix: set cert_file too)",
            ))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// For reqwest: `Some(config)` when `settings` say anything (pass it to
/// `ClientBuilder::use_preconfigured_tls`), `None` for reqwest's own defaults. Refuses TLS settings
/// with an `http://` URL, which would silently send in clear text.
pub fn reqwest_tls(
    url: &str,
    s: &TlsClientSettings,
    prefix: &str,
) -> Result<Option<rustls::ClientConfig>, TlsError> {
    let https = url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://");
    if !s.is_set() {
        return Ok(None);
    }
    if !https {
        return Err(plaintext_with_tls(url, prefix));
    }
    if s.server_name_override.is_some() {
        return Err(TlsError::new(
            if prefix.is_empty() {
                "--server-name".to_string()
            } else {
                format!("{prefix}.server_name_override")
            },
            "not supported for HTTP targets (fix: use a URL whose host is the certificate's name)",
        ));
    }
    client_config(s, prefix, &[b"http/1.1"]).map(Some)
}

fn plaintext_with_tls(url: &str, prefix: &str) -> TlsError {
    TlsError::new(
        if prefix.is_empty() {
            "--ca-file".to_string()
        } else {
            prefix.to_string()
        },
        format!("TLS settings are given but {url} is not an https:// URL: the connection would be clear text (fix: use https://)"),
    )
}

/// A tonic endpoint and the connector that makes its connections: `url` is `http://HOST:PORT`
/// (plaintext) or `https://HOST:PORT` (TLS with `settings`, ALPN h2).
pub fn grpc_endpoint(
    url: &str,
    settings: &TlsClientSettings,
    prefix: &str,
) -> Result<(tonic::transport::Endpoint, GrpcConnector), TlsError> {
    let bad = |why: &str| {
        TlsError::new(
            if prefix.is_empty() {
                "--endpoint".to_string()
            } else {
                format!("{prefix}.endpoint")
            },
            format!(
                "{url:?} {why} (fix: e.g. http://127.0.0.1:4317 or https://clew.example.com:4317)"
            ),
        )
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("does not start with http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| bad("has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if !https && settings.is_set() {
        return Err(plaintext_with_tls(url, prefix));
    }
    let tls = if https {
        let name = settings
            .server_name_override
            .clone()
            .unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            TlsError::new(
                "server_name_override",
                format!("{name:?} is not a DNS name or IP address"),
            )
        })?;
        let config = client_config(settings, prefix, &[b"h2"])?;
        Some((Arc::new(config), server_name))
    } else {
        None
    };
    // tonic sees plain http://: TLS is this connector's job (whatever tonic's own features).
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|_| bad("is not a valid endpoint"))?;
    Ok((endpoint, GrpcConnector { host, port, tls }))
}

/// Opens connections for tonic: TCP to the endpoint's host and port, then TLS when configured.
#[derive(Clone)]
pub struct GrpcConnector {
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// Any byte stream a [`GrpcConnector`] opens (TCP, or TLS over TCP).
pub trait ClientIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ClientIo for T {}

/// A connection made by [`GrpcConnector`].
pub type GrpcIo = hyper_util::rt::TokioIo<Pin<Box<dyn ClientIo>>>;

impl tower::Service<http::Uri> for GrpcConnector {
    type Response = GrpcIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<GrpcIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (host, port, tls) = (self.host.clone(), self.port, self.tls.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let io: Pin<Box<dyn ClientIo>> = match tls {
                None => Box::pin(tcp),
                Some((config, name)) => {
                    let s = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    Box::pin(s)
                }
            };
            Ok(hyper_util::rt::TokioIo::new(io))
        })
    }
}

/// `insecure_skip_verify`: accepts any certificate, but still checks the handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
