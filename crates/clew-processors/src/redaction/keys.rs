//! HMAC keys held by the key provider (`hash_key_source: key_provider`).
//!
//! The secret is not in the configuration: the `clew` binary keeps a random 32-byte secret per
//! processor name, generated once by `storage.encryption`'s key provider (local keyring or AWS
//! KMS) and stored only wrapped (`clew_encryption::secrets::SecretStore`, under
//! `{storage.path}/keys/secrets/`), unwraps every version at start-up and hands them here as raw
//! bytes with their version numbers ([`provider_keys`]); this crate never talks to the provider.
//! Version `n` hashes as `hmac:kp<n>:…` ([`provider_key_id`]); the highest version is current, the
//! others stay loaded so [`Redaction::pseudonyms`] still computes the old forms after a rotation
//! (`clew keys rotate-secret <processor>`, applied at the next start).
//!
//! [`Redaction::validate`] checks such a configuration without its secret (config loading).

use super::config::{ConfigError, HashKeyOrigin, RedactionConfig};
use super::processor::{HashKey, Redaction, RedactionMetrics};

/// The key id of provider-held version `version`: written into every hash it makes.
pub fn provider_key_id(version: u32) -> String {
    format!("kp{version}")
}

/// The processor's hash keys from the provider-held secret's versions, current (highest) first
/// — the order [`Redaction::with_hash_keys`] expects, whatever order they are given in.
pub fn provider_keys<'a>(
    versions: impl IntoIterator<Item = (u32, &'a [u8])>,
) -> Result<Vec<HashKey>, ConfigError> {
    let mut versions: Vec<(u32, &[u8])> = versions.into_iter().collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    if versions.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(ConfigError::new(
            "hash_key_source",
            "the key provider returned one secret version twice",
        ));
    }
    versions
        .into_iter()
        .map(|(v, secret)| {
            HashKey::new(provider_key_id(v), secret)
                .map_err(|m| ConfigError::new("hash_key_source", m))
        })
        .collect()
}

/// Key settings that contradict `hash_key_source: key_provider`, as an error naming them.
fn conflicting(cfg: &RedactionConfig) -> Option<ConfigError> {
    let set = [
        ("hash_key_file", cfg.hash_key_file.is_some()),
        ("hash_key_env", cfg.hash_key_env.is_some()),
        ("hash_key_id", cfg.hash_key_id.is_some()),
        ("hash_keys", !cfg.hash_keys.is_empty()),
    ];
    set.iter().find(|(_, on)| *on).map(|(key, _)| {
        ConfigError::new(
            *key,
            "given together with `hash_key_source: key_provider` (fix: remove it — the key provider holds the key — or remove `hash_key_source`)",
        )
    })
}

/// What [`Redaction::new`] says for `hash_key_source: key_provider`: the keys must be handed in.
pub(crate) fn not_in_config(cfg: &RedactionConfig) -> ConfigError {
    conflicting(cfg).unwrap_or_else(|| {
        ConfigError::new(
            "hash_key_source",
            "`key_provider`: the keys come from storage.encryption's key provider and are resolved by Clew at start-up (build with `Redaction::with_hash_keys`, check with `Redaction::validate`)",
        )
    })
}

impl Redaction {
    /// Checks a configuration as [`Redaction::new`] does, except that with
    /// `hash_key_source: key_provider` the (not yet available) secret is stood in for by a
    /// fixed placeholder key: every other setting is checked, and the processor is discarded.
    pub fn validate(name: String, cfg: RedactionConfig) -> Result<(), ConfigError> {
        let metrics = RedactionMetrics::default();
        if cfg.hash_key_source != HashKeyOrigin::KeyProvider {
            return Redaction::new(name, cfg, &metrics).map(|_| ());
        }
        if let Some(e) = conflicting(&cfg) {
            return Err(e);
        }
        // The processor built here is dropped unused, so the stand-in need not be secret.
        let stand_in = [0x5a_u8; 32];
        let keys = provider_keys([(1, &stand_in[..])])?;
        Redaction::with_hash_keys(name, cfg, &metrics, keys).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> RedactionConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    const HASHING: &str =
        "{allow_all_keys: true, patterns: [email], action: hash, hash_key_source: key_provider}";

    #[test]
    fn provider_keys_are_current_first_and_named_by_version() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let keys = provider_keys([(1, &a[..]), (2, &b[..])]).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id()).collect::<Vec<_>>(),
            vec!["kp2", "kp1"]
        );
        assert!(keys[0].pseudonym("x").starts_with("hmac:kp2:"));
        assert_ne!(keys[0].pseudonym("x")[9..], keys[1].pseudonym("x")[9..]);
        assert!(provider_keys([(1, &a[..]), (1, &b[..])]).is_err());
        assert!(provider_keys([(1, &a[..8])]).is_err(), "too short a secret");
    }

    #[test]
    fn new_refuses_and_validate_accepts_a_key_provider_source() {
        let c = cfg(HASHING);
        let err = Redaction::new("r".into(), c.clone(), &RedactionMetrics::default())
            .err()
            .unwrap();
        assert_eq!(err.key, "hash_key_source");
        Redaction::validate("r".into(), c).unwrap();
        // Other mistakes are still found.
        let bad = cfg("{action: hash, hash_key_source: key_provider, custom_patterns: [{name: x, regex: '('}]}");
        assert!(Redaction::validate("r".into(), bad).is_err());
        // Contradicting key settings name the key.
        let both = cfg("{action: hash, hash_key_source: key_provider, hash_key_env: K}");
        let err = Redaction::validate("r".into(), both).unwrap_err();
        assert_eq!(err.key, "hash_key_env");
        assert!(err.message.contains("key_provider"), "{}", err.message);
        assert!(serde_yaml::from_str::<RedactionConfig>("{hash_key_source: nope}").is_err());
    }

    #[test]
    fn the_same_secret_hashes_alike_and_old_versions_stay_searchable() {
        let (v1, v2) = ([5u8; 32], [6u8; 32]);
        let m = RedactionMetrics::default();
        let before = Redaction::with_hash_keys(
            "r".into(),
            cfg(HASHING),
            &m,
            provider_keys([(1, &v1[..])]).unwrap(),
        )
        .unwrap();
        let after = Redaction::with_hash_keys(
            "r".into(),
            cfg(HASHING),
            &m,
            provider_keys([(2, &v2[..]), (1, &v1[..])]).unwrap(),
        )
        .unwrap();
        let old = before.pseudonyms("ann@example.com");
        let now = after.pseudonyms("ann@example.com");
        assert_eq!(old.len(), 1);
        assert_eq!(now.len(), 2);
        assert!(now[0].starts_with("hmac:kp2:"));
        assert_eq!(now[1], old[0], "the old form is still computed");
    }
}
