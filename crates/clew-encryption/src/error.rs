//! Error types: [`KeyError`] for key providers and the key manager, [`SealError`] for the sealed
//! file and record formats.

/// Why a key operation failed. Callers branch on the variant:
///
/// * [`KeyError::Unavailable`] — retryable (network error, timeout, 5xx, throttling). The store
///   refuses ingest retryably; it never falls back to writing plaintext.
/// * [`KeyError::KeyGone`] — the key-encryption key is destroyed, retired, disabled or unknown:
///   data wrapped under it is unreadable (crypto-shredding). Report it, never crash.
/// * [`KeyError::AccessDenied`] — bad credentials or signature, or the principal may not use the key.
/// * [`KeyError::Corrupt`] — the wrapped key failed authentication or the envelope is malformed.
/// * [`KeyError::Config`] — a configuration problem; the message names the config key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key provider unavailable ({provider}): {message}")]
    Unavailable { provider: String, message: String },
    #[error("key gone for tenant {tenant:?} (kek {kek_id}{}): {reason}", .kek_version.map(|v| format!(" v{v}")).unwrap_or_default())]
    KeyGone {
        tenant: String,
        kek_id: String,
        kek_version: Option<u32>,
        reason: String,
    },
    #[error("access denied by key provider ({provider}): {message}")]
    AccessDenied { provider: String, message: String },
    #[error("corrupt wrapped key or envelope: {0}")]
    Corrupt(String),
    #[error("encryption config error: {0}")]
    Config(String),
}

impl KeyError {
    /// True for errors worth retrying later (only [`KeyError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, KeyError::Unavailable { .. })
    }

    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyError::Unavailable { .. } => "unavailable",
            KeyError::KeyGone { .. } => "key_gone",
            KeyError::AccessDenied { .. } => "access_denied",
            KeyError::Corrupt(_) => "corrupt",
            KeyError::Config(_) => "config",
        }
    }
}

/// Why opening a sealed file, range or record failed. All variants mean "do not trust these bytes".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The header is not a Clew sealed-file header (bad magic, version or chunk size).
    #[error("not a sealed file: {0}")]
    BadHeader(String),
    /// The input length is impossible for the format (truncated or extended).
    #[error("bad sealed length: {0}")]
    BadLength(String),
    /// Authentication failed: wrong key, wrong AAD, flipped byte, reordered or truncated chunks.
    #[error("authentication failed (wrong key/context or tampered data)")]
    Auth,
    /// The requested plaintext range is outside the file or the fetched bytes do not match it.
    #[error("bad range: {0}")]
    BadRange(String),
}
