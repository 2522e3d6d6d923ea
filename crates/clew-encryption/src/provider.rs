//! The [`KeyProvider`] trait.

use zeroize::Zeroizing;

use crate::{DataKey, Envelope, KeyError};

/// A source of key-encryption keys that wraps and unwraps data keys.
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync {
    /// `"local"` or `"aws_kms"` (the envelope's `provider`).
    fn name(&self) -> &'static str;

    /// A fresh random 32-byte data key for `tenant`, wrapped under the tenant's current KEK.
    async fn generate(&self, tenant: &str) -> Result<DataKey, KeyError>;

    /// Unwrap an envelope written by this provider.
    async fn unwrap(&self, envelope: &Envelope) -> Result<Zeroizing<[u8; 32]>, KeyError>;

    /// Re-wrap the same data key under the tenant's *current* KEK (version or key id). `None`
    /// when the envelope is already current. No data is re-encrypted (`clew keys rotate`).
    async fn rewrap(&self, envelope: &Envelope) -> Result<Option<Envelope>, KeyError>;

    /// Start-up probe: keyring readable / KMS reachable, credentials valid, keys enabled.
    async fn check(&self) -> Result<(), KeyError>;
}
