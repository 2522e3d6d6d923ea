//! # clew-encryption — the encryption-at-rest room
//!
//! Envelope encryption for everything Clew writes: a fresh data key per block and per WAL key
//! epoch, wrapped by a key-encryption key from a key provider (a local keyring file or AWS KMS),
//! and the sealed-file and sealed-record formats (AES-256-GCM on aws-lc-rs).
//!
//! May depend on: crypto (aws-lc-rs), HTTP client and SigV4 signing crates. Must not depend on any
//! other Clew crate: the store calls it, never the other way round.
//!
//! ## API
//!
//! * [`DataKey`] `{ plaintext: Zeroizing<[u8; 32]>, envelope }` and [`Envelope`] (serde; the
//!   store writes it as `key.json` next to each block: `{format: 1, provider: "local"|"aws_kms",
//!   tenant, kek_id, kek_version, wrapped (base64), created_unix}` — no tenant data but its name).
//! * [`KeyProvider`] (`name`, `generate`, `unwrap`, `rewrap`, `check`) with two implementations:
//!   [`local::Keyring`] (`provider: local`; also the `clew keys` CLI functions `create`,
//!   `rotate`, `retire`, `destroy`, `list`) and [`kms::KmsProvider`] (`provider: aws_kms`,
//!   configured by [`kms::KmsConfig`]). [`EncryptionConfig::build`] builds either from config.
//! * [`KeyError`]: `Unavailable` (retryable), `KeyGone` (crypto-shredded / unknown key),
//!   `AccessDenied`, `Corrupt`, `Config`.
//! * [`sealed`]: the block file format with random-access ranges — [`sealed::seal`],
//!   [`sealed::open`], [`sealed::sealed_len`], [`sealed::plain_len`], [`sealed::ciphertext_range`],
//!   [`sealed::open_range`], [`sealed::SealedReader`]; and [`sealed::record`] for WAL records
//!   ([`seal_record`], [`open_record`], [`sealed::record::RecordKey`]). Errors are [`SealError`].
//! * [`sealed_record`]: the framed record codec the WAL and the exporters' sending queue share
//!   (`[len][crc32][version | tenant | …]`: plaintext, sealed and key-declaration records,
//!   [`sealed_record::Layout`], [`sealed_record::frame`]). Errors are
//!   [`sealed_record::RecordError`].
//! * [`dir_lock`]: the exclusive `flock` (with the holder's PID) on a data directory that both
//!   logs take, so a second process on the same directory fails at start-up.
//! * [`KeyManager`]: what the store holds — `new_file_key(tenant)` (one provider call per block),
//!   `open(&Envelope)` (bounded, TTL'd cache of unwrapped keys), `wal_key(tenant)` /
//!   `roll_wal_keys()` (one WAL key per tenant per segment), `rewrap`, `check`, `register`
//!   (Prometheus counters).
//! * [`secrets::SecretStore`]: named, versioned 32-byte secrets (the redaction processor's HMAC
//!   keys with `hash_key_source: key_provider`), stored only as envelopes wrapped for the reserved
//!   tenant [`secrets::SECRETS_TENANT`].
//! * `testkit` (feature `testkit`): a real moto server on loopback for KMS/S3 tests.
//!
//! ## Typical store use
//!
//! ```no_run
//! # async fn f(km: &clew_encryption::KeyManager, parquet: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use clew_encryption::sealed;
//! let dk = km.new_file_key("acme").await?;
//! let path = "tenants/acme/2026-01-01/blk/data.parquet";
//! let bytes = sealed::seal(&dk.plaintext, path.as_bytes(), parquet);
//! let key_json = dk.envelope.to_json();             // write next to the block as key.json
//! // reading back:
//! let env = clew_encryption::Envelope::from_json(&key_json)?;
//! let key = km.open(&env).await?;
//! let plain = sealed::open(&key, path.as_bytes(), &bytes)?;
//! # let _ = plain; Ok(()) }
//! ```

pub mod config;
pub mod dir_lock;
mod envelope;
mod error;
pub mod kms;
pub mod local;
mod manager;
mod provider;
pub mod sealed;
pub mod sealed_record;
pub mod secrets;
pub mod segment_files;
mod sigv4;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use config::{EncryptionConfig, LocalConfig};
pub use envelope::{DataKey, Envelope, ProviderKind, ENVELOPE_FORMAT};
pub use error::{KeyError, SealError};
pub use manager::{KeyManager, WalKey, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL};
pub use provider::KeyProvider;
pub use sealed::record::{open_record, seal_record};
pub use sigv4::{parse_credentials_file, AwsCredentials};
pub use zeroize::Zeroizing;
#[cfg(test)]
mod tests;
