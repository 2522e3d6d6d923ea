//! The AWS KMS provider (`provider: aws_kms`): the KMS JSON 1.1 API over reqwest, signed with
//! SigV4 (service `kms`).
//!
//! Config (YAML, under `encryption.aws_kms`):
//!
//! ```yaml
//! endpoint: http://127.0.0.1:4566   # optional; default https://kms.{region}.amazonaws.com
//! region: eu-west-1                  # optional; else AWS_REGION / AWS_DEFAULT_REGION
//! key_id: alias/clew                 # default KEK: key id, ARN or alias/...
//! tenant_keys:                       # optional per-tenant KEKs (crypto-shred a tenant by
//!   acme: arn:aws:kms:...:key/...    #   scheduling deletion of its key)
//! timeout: 10s                       # per request (humantime), default 10s
//! ```
//!
//! Data keys: `GenerateDataKey` (KeySpec AES_256, EncryptionContext `{"clew:tenant": T}`); the
//! envelope's `kek_id` is the key ARN KMS reports. Unwrap: `Decrypt` with the same context and
//! `KeyId`. Rewrap: `ReEncrypt` to the tenant's configured key when its ARN differs. Check:
//! `DescribeKey` of every configured key, which must be `Enabled`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::envelope::{now_unix, unb64, ENVELOPE_FORMAT};
use crate::sigv4::{sign_headers, AwsCredentials};
use crate::{DataKey, Envelope, KeyError, KeyProvider, ProviderKind};

/// The encryption-context key binding a data key to its tenant.
pub const TENANT_CONTEXT_KEY: &str = "clew:tenant";
const PROVIDER: &str = "aws_kms";
const RESOLVE_TTL: Duration = Duration::from_secs(60);

/// `encryption.aws_kms` configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// KMS endpoint URL; default `https://kms.{region}.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// AWS region; default from `AWS_REGION`, then `AWS_DEFAULT_REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Default KEK for tenants not in `tenant_keys`: key id, key ARN or `alias/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Per-tenant KEKs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenant_keys: BTreeMap<String, String>,
    /// Per-request timeout, e.g. `5s` (default 10s).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s)
                .map_err(|e| serde::de::Error::custom(format!("timeout: {e} (use e.g. \"10s\")")))
        })
        .transpose()
    }
}

/// The `aws_kms` [`KeyProvider`].
pub struct KmsProvider {
    config: KmsConfig,
    region: String,
    endpoint: String,
    creds: AwsCredentials,
    http: reqwest::Client,
    /// The runtime the provider was built on: requests run there whichever runtime asks (the
    /// store's compactor has one of its own), because a pooled connection is driven by the
    /// runtime that opened it and would stall while that runtime's thread is busy.
    io: Option<tokio::runtime::Handle>,
    /// configured key id → (key ARN, resolved at)
    resolved: Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for KmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsProvider")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a failing call was about (to fill [`KeyError::KeyGone`]).
struct Ctx<'a> {
    op: &'a str,
    tenant: &'a str,
    kek_id: &'a str,
}

impl KmsProvider {
    /// Build from config with credentials from the environment ([`AwsCredentials::from_env`]).
    pub fn new(config: KmsConfig) -> Result<Self, KeyError> {
        let creds = AwsCredentials::from_env()?;
        Self::with_credentials(config, creds)
    }

    /// Build from config with explicit credentials.
    pub fn with_credentials(config: KmsConfig, creds: AwsCredentials) -> Result<Self, KeyError> {
        let region = config
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|s| !s.is_empty()))
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok().filter(|s| !s.is_empty()))
            .ok_or_else(|| {
                KeyError::Config(
                    "encryption.aws_kms.region: not set; set it (e.g. eu-west-1) or export AWS_REGION".into(),
                )
            })?;
        if config.key_id.as_deref().is_none_or(str::is_empty) && config.tenant_keys.is_empty() {
            return Err(KeyError::Config(
                "encryption.aws_kms.key_id: not set; set the default KMS key (key id, ARN or alias/...) \
                 or map every tenant in encryption.aws_kms.tenant_keys"
                    .into(),
            ));
        }
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(KeyError::Config(format!(
                "encryption.aws_kms.endpoint: {endpoint:?} is not an http(s) URL; use e.g. https://kms.{region}.amazonaws.com"
            )));
        }
        let timeout = config.timeout.unwrap_or(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| KeyError::Config(format!("encryption.aws_kms: HTTP client: {e}")))?;
        Ok(KmsProvider {
            config,
            region,
            endpoint,
            creds,
            http,
            io: tokio::runtime::Handle::try_current().ok(),
            resolved: Mutex::new(HashMap::new()),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The configured KEK of a tenant.
    pub fn key_for(&self, tenant: &str) -> Result<&str, KeyError> {
        self.config
            .tenant_keys
            .get(tenant)
            .map(String::as_str)
            .or(self.config.key_id.as_deref().filter(|k| !k.is_empty()))
            .ok_or_else(|| {
                KeyError::Config(format!(
                    "encryption.aws_kms.tenant_keys: tenant {tenant:?} has no KMS key and no default \
                     encryption.aws_kms.key_id is set; add one of them"
                ))
            })
    }

    async fn call(&self, target: &str, body: Value, ctx: &Ctx<'_>) -> Result<Value, KeyError> {
        let body = serde_json::to_vec(&body)
            .map_err(|e| KeyError::Config(format!("KMS request JSON: {e}")))?;
        let url = format!("{}/", self.endpoint);
        let amz_target = format!("TrentService.{target}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", amz_target.as_str()),
        ];
        let signed = sign_headers(
            &self.creds,
            &self.region,
            "kms",
            "POST",
            &url,
            &headers,
            &body,
            false,
        )?;
        let mut req = self.http.post(&url).body(body);
        for (k, v) in headers.iter() {
            req = req.header(*k, *v);
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let (t, endpoint) = (target.to_string(), self.endpoint.clone());
        let exchange = async move {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{t} to {endpoint}: {}", error_chain(&e)))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| format!("{t}: reading response: {}", error_chain(&e)))?;
            Ok::<_, String>((status, text))
        };
        let result = match &self.io {
            Some(io) => io
                .spawn(exchange)
                .await
                .unwrap_or_else(|e| Err(format!("{target}: request task: {e}"))),
            None => exchange.await,
        };
        let (status, text) = result.map_err(|message| KeyError::Unavailable {
            provider: PROVIDER.into(),
            message,
        })?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                KeyError::Corrupt(format!("KMS {target} returned invalid JSON: {e}"))
            });
        }
        Err(map_error(status.as_u16(), &text, ctx))
    }

    async fn resolve_arn(&self, key_id: &str) -> Result<String, KeyError> {
        if let Some((arn, at)) = self.resolved.lock().get(key_id) {
            if at.elapsed() < RESOLVE_TTL {
                return Ok(arn.clone());
            }
        }
        let meta = self.describe(key_id, "").await?;
        let arn = meta
            .get("Arn")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                KeyError::Corrupt("DescribeKey response without KeyMetadata.Arn".into())
            })?
            .to_string();
        self.resolved
            .lock()
            .insert(key_id.to_string(), (arn.clone(), Instant::now()));
        Ok(arn)
    }

    async fn describe(&self, key_id: &str, tenant: &str) -> Result<Value, KeyError> {
        let ctx = Ctx {
            op: "DescribeKey",
            tenant,
            kek_id: key_id,
        };
        let resp = self
            .call("DescribeKey", json!({ "KeyId": key_id }), &ctx)
            .await?;
        resp.get("KeyMetadata")
            .cloned()
            .ok_or_else(|| KeyError::Corrupt("DescribeKey response without KeyMetadata".into()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn xml_tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(&text[start..end])
}

/// Map a KMS error response to a [`KeyError`].
fn map_error(status: u16, body: &str, ctx: &Ctx<'_>) -> KeyError {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let code = json
        .as_ref()
        .and_then(|v| v.get("__type").or_else(|| v.get("code")))
        .and_then(Value::as_str)
        .map(|s| s.rsplit('#').next().unwrap_or(s).to_string())
        .or_else(|| xml_tag(body, "Code").map(str::to_string))
        .unwrap_or_default();
    let message = json
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| xml_tag(body, "Message").map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    let detail = format!("{} failed: HTTP {status} {code}: {message}", ctx.op);
    match code.as_str() {
        "AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException"
        | "IncompleteSignature" | "MissingAuthenticationToken" | "SignatureDoesNotMatch" | "InvalidClientTokenId"
        | "ExpiredTokenException" | "AccessDenied" | "NotAuthorizedException" => {
            KeyError::AccessDenied { provider: PROVIDER.into(), message: detail }
        }
        "NotFoundException" | "DisabledException" | "KMSInvalidStateException" => {
            KeyError::KeyGone {
                tenant: ctx.tenant.to_string(),
                kek_id: ctx.kek_id.to_string(),
                kek_version: None,
                reason: detail,
            }
        }
        "InvalidCiphertextException" | "IncorrectKeyException" => KeyError::Corrupt(detail),
        "ThrottlingException" | "LimitExceededException" | "KMSInternalException" | "DependencyTimeoutException"
        | "KeyUnavailableException" | "ServiceUnavailableException" | "InternalFailure" => {
            KeyError::Unavailable { provider: PROVIDER.into(), message: detail }
        }
        _ if status >= 500 || status == 429 => KeyError::Unavailable { provider: PROVIDER.into(), message: detail },
        _ if status == 401 || status == 403 => KeyError::AccessDenied { provider: PROVIDER.into(), message: detail },
        _ => KeyError::Config(format!(
            "encryption.aws_kms: KMS rejected the request ({detail}); check key_id/tenant_keys and region"
        )),
    }
}

fn context(tenant: &str) -> Value {
    json!({ TENANT_CONTEXT_KEY: tenant })
}

fn plaintext_key(resp: &Value, op: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let b64 = resp
        .get("Plaintext")
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Corrupt(format!("KMS {op} response without Plaintext")))?;
    let bytes = Zeroizing::new(
        unb64(b64).map_err(|e| KeyError::Corrupt(format!("KMS {op} Plaintext: {e}")))?,
    );
    if bytes.len() != 32 {
        return Err(KeyError::Corrupt(format!(
            "KMS {op} returned a {}-byte key, expected 32",
            bytes.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn str_field(resp: &Value, field: &str, op: &str) -> Result<String, KeyError> {
    resp.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| KeyError::Corrupt(format!("KMS {op} response without {field}")))
}

fn check_provider(env: &Envelope) -> Result<(), KeyError> {
    if env.provider != ProviderKind::AwsKms {
        return Err(KeyError::Config(format!(
            "encryption.provider: envelope was written by provider {:?} but the configured provider is aws_kms",
            env.provider.as_str()
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl KeyProvider for KmsProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn generate(&self, tenant: &str) -> Result<DataKey, KeyError> {
        let key_id = self.key_for(tenant)?;
        let ctx = Ctx {
            op: "GenerateDataKey",
            tenant,
            kek_id: key_id,
        };
        let resp = self
            .call(
                "GenerateDataKey",
                json!({ "KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": context(tenant) }),
                &ctx,
            )
            .await?;
        let plaintext = plaintext_key(&resp, "GenerateDataKey")?;
        let wrapped = str_field(&resp, "CiphertextBlob", "GenerateDataKey")?;
        let kek_id = resp
            .get("KeyId")
            .and_then(Value::as_str)
            .unwrap_or(key_id)
            .to_string();
        Ok(DataKey {
            plaintext,
            envelope: Envelope {
                format: ENVELOPE_FORMAT,
                provider: ProviderKind::AwsKms,
                tenant: tenant.to_string(),
                kek_id,
                kek_version: None,
                wrapped,
                created_unix: now_unix(),
            },
        })
    }

    async fn unwrap(&self, env: &Envelope) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        check_provider(env)?;
        env.wrapped_bytes()?;
        let ctx = Ctx {
            op: "Decrypt",
            tenant: &env.tenant,
            kek_id: &env.kek_id,
        };
        let resp = self
            .call(
                "Decrypt",
                json!({ "CiphertextBlob": env.wrapped, "EncryptionContext": context(&env.tenant), "KeyId": env.kek_id }),
                &ctx,
            )
            .await?;
        plaintext_key(&resp, "Decrypt")
    }

    async fn rewrap(&self, env: &Envelope) -> Result<Option<Envelope>, KeyError> {
        check_provider(env)?;
        env.wrapped_bytes()?;
        let target = self.key_for(&env.tenant)?;
        let target_arn = self.resolve_arn(target).await?;
        if env.kek_id == target_arn || env.kek_id == target {
            return Ok(None);
        }
        let ctx = Ctx {
            op: "ReEncrypt",
            tenant: &env.tenant,
            kek_id: &env.kek_id,
        };
        let resp = self
            .call(
                "ReEncrypt",
                json!({
                    "CiphertextBlob": env.wrapped,
                    "SourceEncryptionContext": context(&env.tenant),
                    "SourceKeyId": env.kek_id,
                    "DestinationKeyId": target,
                    "DestinationEncryptionContext": context(&env.tenant),
                }),
                &ctx,
            )
            .await?;
        let wrapped = str_field(&resp, "CiphertextBlob", "ReEncrypt")?;
        let kek_id = resp
            .get("KeyId")
            .and_then(Value::as_str)
            .unwrap_or(&target_arn)
            .to_string();
        Ok(Some(Envelope {
            format: ENVELOPE_FORMAT,
            provider: ProviderKind::AwsKms,
            tenant: env.tenant.clone(),
            kek_id,
            kek_version: None,
            wrapped,
            created_unix: now_unix(),
        }))
    }

    async fn check(&self) -> Result<(), KeyError> {
        let mut keys: Vec<(String, &str)> = Vec::new();
        if let Some(k) = self.config.key_id.as_deref().filter(|k| !k.is_empty()) {
            keys.push(("encryption.aws_kms.key_id".into(), k));
        }
        for (tenant, k) in &self.config.tenant_keys {
            keys.push((
                format!("encryption.aws_kms.tenant_keys.{tenant}"),
                k.as_str(),
            ));
        }
        for (setting, key_id) in keys {
            let tenant = setting
                .strip_prefix("encryption.aws_kms.tenant_keys.")
                .unwrap_or("");
            let meta = self.describe(key_id, tenant).await.map_err(|e| match e {
                KeyError::KeyGone {
                    tenant,
                    kek_id,
                    kek_version,
                    reason,
                } => KeyError::KeyGone {
                    tenant,
                    kek_id,
                    kek_version,
                    reason: format!(
                        "{setting} = {key_id:?}: KMS key not found ({reason}); fix {setting}"
                    ),
                },
                other => other,
            })?;
            let state = meta.get("KeyState").and_then(Value::as_str).unwrap_or("");
            if state != "Enabled" {
                return Err(KeyError::KeyGone {
                    tenant: tenant.to_string(),
                    kek_id: key_id.to_string(),
                    kek_version: None,
                    reason: format!(
                        "{setting} = {key_id:?}: KMS key state is {state:?}, not Enabled; enable the key \
                         (aws kms enable-key) or point {setting} at an enabled key"
                    ),
                });
            }
            if let Some(arn) = meta.get("Arn").and_then(Value::as_str) {
                self.resolved
                    .lock()
                    .insert(key_id.to_string(), (arn.to_string(), Instant::now()));
            }
        }
        Ok(())
    }
}
