//! SigV4 signing of reqwest requests (shared by the KMS provider and the testkit).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use zeroize::Zeroizing;

use crate::KeyError;

/// AWS credentials (the secret is zeroized on drop and never printed).
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AwsCredentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        AwsCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: session_token.map(Zeroizing::new),
        }
    }

    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the shared credentials
    /// file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile `AWS_PROFILE` or `default`).
    pub fn from_env() -> Result<Self, KeyError> {
        Self::resolve(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`AwsCredentials::from_env`] with an injectable environment (for tests).
    pub fn resolve(env: impl Fn(&str) -> Option<String>) -> Result<Self, KeyError> {
        if let (Some(ak), Some(sk)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(AwsCredentials::new(ak, sk, env("AWS_SESSION_TOKEN")));
        }
        let path = match env("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => std::path::PathBuf::from(p),
            None => match env("HOME") {
                Some(h) => std::path::Path::new(&h).join(".aws").join("credentials"),
                None => {
                    return Err(KeyError::Config(
                        "encryption.aws_kms: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         or AWS_SHARED_CREDENTIALS_FILE"
                            .into(),
                    ))
                }
            },
        };
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            KeyError::Config(format!(
                "encryption.aws_kms: no AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and \
                 the shared credentials file {} cannot be read ({e}); set one of them",
                path.display()
            ))
        })?);
        parse_credentials_file(&text, &profile).ok_or_else(|| {
            KeyError::Config(format!(
                "encryption.aws_kms: profile [{profile}] in {} has no aws_access_key_id/aws_secret_access_key; \
                 fix the file or set AWS_PROFILE",
                path.display()
            ))
        })
    }
}

/// Parse an AWS shared credentials file (INI) and return the keys of `profile`.
pub fn parse_credentials_file(text: &str, profile: &str) -> Option<AwsCredentials> {
    let mut in_profile = false;
    let (mut ak, mut sk, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.trim_end_matches(']').trim();
            let name = name.strip_prefix("profile ").unwrap_or(name).trim();
            in_profile = name == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => ak = Some(v),
                "aws_secret_access_key" => sk = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(AwsCredentials::new(ak?, sk?, token))
}

/// Sign a request and return the headers to add (`authorization`, `x-amz-date`, …).
/// `headers` must include every header that will be sent and should be signed (content-type,
/// x-amz-target). `s3` adds `x-amz-content-sha256` as S3 requires.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_headers(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    s3: bool,
) -> Result<Vec<(String, String)>, KeyError> {
    let identity: Identity = Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.as_str(),
        creds.session_token.as_ref().map(|t| t.to_string()),
        None,
        "clew",
    )
    .into();
    let mut settings = SigningSettings::default();
    if s3 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode =
            aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
        settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| KeyError::Config(format!("SigV4 signing parameters: {e}")))?
        .into();
    let req = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| {
        KeyError::Config(format!(
            "encryption.aws_kms.endpoint: cannot sign a request to {url}: {e}"
        ))
    })?;
    let (instructions, _sig) = sign(req, &params)
        .map_err(|e| KeyError::Config(format!("SigV4 signing failed: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
