//! TLS flags of the client commands (`clew demo`, `clew trace`, `clew search`, `clew doctor`):
//! an `https://` URL turns TLS on; these flags set the CA, the client certificate (mutual TLS) and
//! the name to verify.

use anyhow::Context;
use clew_security::tls::{grpc_endpoint, reqwest_tls, TlsClientSettings};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// CA certificate(s) (PEM) that the server's certificate must chain to, for an https:// URL
    /// (default: the system's trust store).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// gRPC only: verify the server's certificate against this name (and send it as SNI) instead
    /// of the URL's host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Accept any server certificate. For tests only: anyone on the path can read and change
    /// the traffic.
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

impl ClientTlsArgs {
    pub fn settings(&self) -> TlsClientSettings {
        TlsClientSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            server_name_override: self.server_name.clone(),
            ..TlsClientSettings::default()
        }
    }

    /// An HTTP client for `url` (`http://` or `https://`) with these TLS settings.
    pub fn http_client(&self, url: &str) -> anyhow::Result<reqwest::Client> {
        let builder = reqwest::Client::builder();
        let builder = match reqwest_tls(url, &self.settings(), "")? {
            Some(config) => builder.tls_backend_preconfigured(config),
            None => builder,
        };
        builder.build().context("cannot set up the HTTP client")
    }

    /// A gRPC channel to `url` (`http://` or `https://HOST:PORT`) with these TLS settings.
    pub async fn grpc_channel(
        &self,
        url: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let (endpoint, connector) = grpc_endpoint(url, &self.settings(), "")?;
        endpoint
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .connect_with_connector(connector)
            .await
            .with_context(|| format!("cannot connect to {url}"))
    }
}
