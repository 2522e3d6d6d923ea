//! `encryption:` configuration and provider construction.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::kms::{KmsConfig, KmsProvider};
use crate::local::Keyring;
use crate::{KeyError, KeyProvider, ProviderKind};

/// ```yaml
/// encryption:
///   provider: local            # or aws_kms
///   local:
///     keyring: /var/lib/clew/keyring.yaml
///   aws_kms:                   # see KmsConfig
///     key_id: alias/clew
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    pub provider: ProviderKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<KmsConfig>,
}

/// `encryption.local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Path of the keyring file (created by `clew keys init` / [`Keyring::create`]).
    pub keyring: PathBuf,
}

impl EncryptionConfig {
    /// Build the configured provider (credentials for KMS from the environment).
    pub fn build(&self) -> Result<Arc<dyn KeyProvider>, KeyError> {
        match self.provider {
            ProviderKind::Local => {
                let local = self.local.as_ref().ok_or_else(|| {
                    KeyError::Config(
                        "encryption.local.keyring: required when encryption.provider is local"
                            .into(),
                    )
                })?;
                Ok(Arc::new(Keyring::open(&local.keyring)?))
            }
            ProviderKind::AwsKms => {
                let cfg = self.aws_kms.clone().ok_or_else(|| {
                    KeyError::Config(
                        "encryption.aws_kms: required when encryption.provider is aws_kms (at least key_id)".into(),
                    )
                })?;
                Ok(Arc::new(KmsProvider::new(cfg)?))
            }
        }
    }
}
