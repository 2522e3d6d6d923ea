//! [`DataKey`] and [`Envelope`]: a data key and its wrapped, storable form.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Current envelope format number.
pub const ENVELOPE_FORMAT: u32 = 1;

/// Which provider wrapped a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// The local keyring file ([`crate::local::Keyring`]).
    Local,
    /// AWS KMS ([`crate::kms::KmsProvider`]).
    AwsKms,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::AwsKms => "aws_kms",
        }
    }
}

/// A wrapped data key, stored in plaintext next to the data it protects (`key.json`).
///
/// Contains no tenant data except the tenant name. JSON shape:
/// `{"format":1,"provider":"local","tenant":"acme","kek_id":"…","kek_version":2,"wrapped":"<base64>","created_unix":1700000000}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: u32,
    pub provider: ProviderKind,
    pub tenant: String,
    /// Local: the keyring id. KMS: the key ARN that wrapped the data key.
    pub kek_id: String,
    /// Local: the tenant key version. KMS: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_version: Option<u32>,
    /// Base64 (standard, padded) of the provider's wrapped key blob.
    pub wrapped: String,
    pub created_unix: u64,
}

impl Envelope {
    /// Serialize as pretty JSON (the content of `key.json`).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parse `key.json`; a malformed file is [`crate::KeyError::Corrupt`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::KeyError> {
        let env: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| crate::KeyError::Corrupt(format!("envelope JSON: {e}")))?;
        if env.format != ENVELOPE_FORMAT {
            return Err(crate::KeyError::Corrupt(format!(
                "unsupported envelope format {} (this build reads {ENVELOPE_FORMAT})",
                env.format
            )));
        }
        Ok(env)
    }

    /// The wrapped blob, decoded.
    pub fn wrapped_bytes(&self) -> Result<Vec<u8>, crate::KeyError> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(self.wrapped.as_bytes())
            .map_err(|e| {
                crate::KeyError::Corrupt(format!("envelope wrapped key is not base64: {e}"))
            })
    }
}

/// A plaintext data key (zeroized on drop) and its envelope.
pub struct DataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub envelope: Envelope,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("envelope", &self.envelope)
            .finish()
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s.as_bytes())
}
