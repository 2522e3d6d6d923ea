//! Reading PEM files (`rustls-pki-types` `PemObject`) and reading what a certificate says
//! (`x509-parser`): names for [`PeerIdentity`], validity for warnings.

use super::settings::TlsError;
use crate::PeerIdentity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Warn when a server certificate expires within this long.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

fn read(key: &str, path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError::new(
            key,
            format!(
                "cannot read {what} {} ({e}) (fix: point `{}` at a readable PEM file)",
                path.display(),
                key.rsplit('.').next().unwrap_or(key)
            ),
        )
    })
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(key, path, "the certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                key,
                format!(
                    "{} is not a readable PEM certificate file ({e}) (fix: a file of `-----BEGIN CERTIFICATE-----` blocks)",
                    path.display()
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            format!(
                "{} holds no certificate (fix: a file of `-----BEGIN CERTIFICATE-----` blocks; a private key belongs in key_file)",
                path.display()
            ),
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c) {
            return Err(TlsError::new(
                key,
                format!(
                    "certificate #{} in {} is not a valid X.509 certificate ({e}) (fix: re-export it as PEM)",
                    i + 1,
                    path.display()
                ),
            ));
        }
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(key, path, "the private key file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no private key".to_string(),
            e => format!("is not a readable PEM private key ({e})"),
        };
        TlsError::new(
            key,
            format!(
                "{} {why} (fix: a `-----BEGIN PRIVATE KEY-----` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY` block, unencrypted)",
                path.display()
            ),
        )
    })
}

/// CA certificates as a root store.
pub fn load_roots(key: &str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = load_certs(key, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| {
            TlsError::new(
                key,
                format!(
                    "{} holds a certificate that cannot be a trust anchor ({e}) (fix: the CA's certificate in PEM)",
                    path.display()
                ),
            )
        })?;
    }
    Ok(roots)
}

/// Seconds since the epoch when the certificate stops being valid.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(c.validity().not_after.timestamp())
}

/// A warning when the certificate has expired, or expires within [`EXPIRY_WARNING`].
pub fn expiry_warning(key: &str, path: &Path, cert: &CertificateDer<'_>) -> Option<String> {
    let end = not_after(cert)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if end < now {
        Some(format!(
            "key `{key}`: the certificate in {} expired {} ago: clients will refuse it (fix: renew it; Clew picks up the new files without a restart)",
            path.display(),
            humantime::format_duration(Duration::from_secs((now - end) as u64))
        ))
    } else if end - now < EXPIRY_WARNING.as_secs() as i64 {
        Some(format!(
            "key `{key}`: the certificate in {} expires in {} (fix: renew it; Clew picks up the new files without a restart)",
            path.display(),
            humantime::format_duration(Duration::from_secs((end - now) as u64))
        ))
    } else {
        None
    }
}

/// Fills the certificate names of `peer` from a verified client certificate.
pub fn fill_identity(peer: &mut PeerIdentity, cert: &CertificateDer<'_>) {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return;
    };
    peer.common_name = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    if let Ok(Some(san)) = c.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) => peer.dns_names.push(s.to_string()),
                GeneralName::URI(s) => peer.uri_names.push(s.to_string()),
                GeneralName::RFC822Name(s) => peer.email_names.push(s.to_string()),
                _ => {}
            }
        }
    }
}
