use crate::local::Keyring;
use crate::{Envelope, KeyError, KeyProvider, ProviderKind};

fn keyring() -> (tempfile::TempDir, Keyring) {
    let dir = tempfile::tempdir().unwrap();
    let kr = Keyring::create(dir.path().join("keyring.yaml")).unwrap();
    (dir, kr)
}

#[tokio::test]
async fn generate_unwrap_round_trip() {
    let (_d, kr) = keyring();
    assert_eq!(kr.name(), "local");
    let dk = kr.generate("acme").await.unwrap();
    assert_eq!(dk.envelope.provider, ProviderKind::Local);
    assert_eq!(dk.envelope.tenant, "acme");
    assert_eq!(dk.envelope.kek_version, Some(1));
    assert_eq!(dk.envelope.kek_id, kr.id().unwrap());
    let key = kr.unwrap(&dk.envelope).await.unwrap();
    assert_eq!(*key, *dk.plaintext);
    // envelope JSON round trip, and no key material in it
    let json = dk.envelope.to_json();
    let back = Envelope::from_json(&json).unwrap();
    assert_eq!(back, dk.envelope);
    let text = String::from_utf8(json).unwrap();
    assert!(text.contains("\"provider\": \"local\""), "{text}");
    // a second key for the same tenant reuses version 1 but is a different data key
    let dk2 = kr.generate("acme").await.unwrap();
    assert_eq!(dk2.envelope.kek_version, Some(1));
    assert_ne!(*dk2.plaintext, *dk.plaintext);
    kr.check().await.unwrap();
}

#[tokio::test]
async fn tampered_envelopes() {
    let (_d, kr) = keyring();
    let dk = kr.generate("acme").await.unwrap();
    // wrong tenant on the envelope: tenant has no keys → KeyGone; other tenant with keys → Corrupt
    let mut e = dk.envelope.clone();
    e.tenant = "other".into();
    assert!(matches!(kr.unwrap(&e).await, Err(KeyError::KeyGone { .. })));
    kr.generate("other").await.unwrap();
    assert!(matches!(kr.unwrap(&e).await, Err(KeyError::Corrupt(_))));
    let mut e = dk.envelope.clone();
    e.wrapped = "not base64!".into();
    assert!(matches!(kr.unwrap(&e).await, Err(KeyError::Corrupt(_))));
    let mut e = dk.envelope.clone();
    let mut raw = e.wrapped_bytes().unwrap();
    raw[20] ^= 1;
    e.wrapped = crate::envelope::b64(&raw);
    assert!(matches!(kr.unwrap(&e).await, Err(KeyError::Corrupt(_))));
    let mut e = dk.envelope.clone();
    e.kek_id = "someotherkeyring".into();
    assert!(matches!(kr.unwrap(&e).await, Err(KeyError::KeyGone { .. })));
    let mut e = dk.envelope.clone();
    e.provider = ProviderKind::AwsKms;
    assert!(matches!(kr.unwrap(&e).await, Err(KeyError::Config(_))));
    assert!(Envelope::from_json(b"{\"format\":2}").is_err());
    assert!(Envelope::from_json(b"garbage").is_err());
}

#[tokio::test]
async fn rotate_rewrap_retire() {
    let (_d, kr) = keyring();
    let old = kr.generate("acme").await.unwrap();
    let rotated = kr.rotate(Some("acme")).unwrap();
    assert_eq!(rotated, vec![("acme".to_string(), 2)]);
    let new = kr.generate("acme").await.unwrap();
    assert_eq!(new.envelope.kek_version, Some(2));
    // old envelopes still unwrap
    assert_eq!(*kr.unwrap(&old.envelope).await.unwrap(), *old.plaintext);
    // rewrap moves to v2, same data key; current envelopes are left alone
    let moved = kr.rewrap(&old.envelope).await.unwrap().expect("rewrapped");
    assert_eq!(moved.kek_version, Some(2));
    assert_eq!(*kr.unwrap(&moved).await.unwrap(), *old.plaintext);
    assert!(kr.rewrap(&moved).await.unwrap().is_none());
    assert!(kr.rewrap(&new.envelope).await.unwrap().is_none());
    // cannot retire the current version
    assert!(matches!(kr.retire("acme", 2), Err(KeyError::Config(_))));
    kr.retire("acme", 1).unwrap();
    match kr.unwrap(&old.envelope).await {
        Err(KeyError::KeyGone {
            tenant,
            kek_version,
            ..
        }) => {
            assert_eq!(tenant, "acme");
            assert_eq!(kek_version, Some(1));
        }
        other => panic!("expected KeyGone, got {other:?}"),
    }
    assert_eq!(*kr.unwrap(&moved).await.unwrap(), *old.plaintext);
    assert!(matches!(kr.retire("acme", 1), Err(KeyError::Config(_))));
    // rotate all tenants
    kr.generate("beta").await.unwrap();
    let all = kr.rotate(None).unwrap();
    assert_eq!(all, vec![("acme".to_string(), 3), ("beta".to_string(), 2)]);
    let list = kr.list().unwrap();
    assert_eq!(list[0].tenant, "acme");
    assert_eq!(list[0].versions, vec![2, 3]);
    assert_eq!(list[0].current, Some(3));
    assert_eq!(list[0].next_version, 4);
}

#[tokio::test]
async fn destroy_is_crypto_shredding() {
    let (_d, kr) = keyring();
    let a = kr.generate("acme").await.unwrap();
    kr.rotate(Some("acme")).unwrap();
    let a2 = kr.generate("acme").await.unwrap();
    let b = kr.generate("beta").await.unwrap();
    assert_eq!(kr.destroy("acme").unwrap(), 2);
    assert!(matches!(
        kr.unwrap(&a.envelope).await,
        Err(KeyError::KeyGone { .. })
    ));
    assert!(matches!(
        kr.unwrap(&a2.envelope).await,
        Err(KeyError::KeyGone { .. })
    ));
    assert!(matches!(
        kr.rewrap(&a2.envelope).await,
        Err(KeyError::KeyGone { .. })
    ));
    // other tenants unaffected
    assert_eq!(*kr.unwrap(&b.envelope).await.unwrap(), *b.plaintext);
    // new data gets a fresh, never-used version
    let fresh = kr.generate("acme").await.unwrap();
    assert_eq!(fresh.envelope.kek_version, Some(3));
    assert_eq!(*kr.unwrap(&fresh.envelope).await.unwrap(), *fresh.plaintext);
    // old data is still gone (version 1/2 are not recreated)
    assert!(matches!(
        kr.unwrap(&a.envelope).await,
        Err(KeyError::KeyGone { .. })
    ));
    assert!(matches!(kr.destroy("nobody"), Err(KeyError::Config(_))));
}

#[cfg(unix)]
#[tokio::test]
async fn file_mode_is_0600_and_check_rejects_open_modes() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, kr) = keyring();
    kr.generate("acme").await.unwrap();
    kr.rotate(None).unwrap();
    let mode = std::fs::metadata(kr.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(kr.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = kr.check().await.unwrap_err();
    assert!(
        matches!(err, KeyError::Config(ref m) if m.contains("chmod 600")),
        "{err}"
    );
    // the next write restores 0600
    kr.rotate(Some("acme")).unwrap();
    let mode = std::fs::metadata(kr.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // no temp files left behind
    let names: Vec<_> = std::fs::read_dir(kr.path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
}

#[tokio::test]
async fn reloads_after_external_change() {
    let (_d, server) = keyring();
    let dk = server.generate("acme").await.unwrap();
    // another process (the CLI) opens the same file and rotates
    let cli = Keyring::open(server.path()).unwrap();
    cli.rotate(Some("acme")).unwrap();
    let after = server.generate("acme").await.unwrap();
    assert_eq!(
        after.envelope.kek_version,
        Some(2),
        "server must see the CLI's rotation"
    );
    assert_eq!(
        *cli.unwrap(&after.envelope).await.unwrap(),
        *after.plaintext
    );
    // CLI retires v1 after rewrapping; the server notices
    let moved = cli.rewrap(&dk.envelope).await.unwrap().unwrap();
    cli.retire("acme", 1).unwrap();
    assert!(matches!(
        server.unwrap(&dk.envelope).await,
        Err(KeyError::KeyGone { .. })
    ));
    assert_eq!(*server.unwrap(&moved).await.unwrap(), *dk.plaintext);
    // a server-side auto-generated tenant is not lost by a CLI write on a stale copy
    server.generate("beta").await.unwrap();
    cli.rotate(Some("gamma")).unwrap();
    let tenants: Vec<String> = server
        .list()
        .unwrap()
        .into_iter()
        .map(|t| t.tenant)
        .collect();
    assert_eq!(tenants, vec!["acme", "beta", "gamma"]);
}

#[tokio::test]
async fn open_errors_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    match Keyring::open(&missing) {
        Err(KeyError::Config(m)) => assert!(m.contains("encryption.local.keyring"), "{m}"),
        other => panic!("{other:?}"),
    }
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "format: 1\nid: x\ntenants: [1,2]\n").unwrap();
    assert!(matches!(Keyring::open(&bad), Err(KeyError::Config(_))));
    let kr = Keyring::create(dir.path().join("k.yaml")).unwrap();
    assert!(matches!(
        Keyring::create(kr.path()),
        Err(KeyError::Config(_))
    ));
    assert!(matches!(kr.generate("").await, Err(KeyError::Config(_))));
}

#[tokio::test]
async fn config_builds_local_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    Keyring::create(&path).unwrap();
    let yaml = format!("provider: local\nlocal:\n  keyring: {}\n", path.display());
    let cfg: crate::EncryptionConfig = serde_yaml::from_str(&yaml).unwrap();
    let p = cfg.build().unwrap();
    let dk = p.generate("t").await.unwrap();
    assert_eq!(*p.unwrap(&dk.envelope).await.unwrap(), *dk.plaintext);
    assert!(
        serde_yaml::from_str::<crate::EncryptionConfig>("provider: local\nbogus: 1\n").is_err()
    );
    let cfg: crate::EncryptionConfig = serde_yaml::from_str("provider: aws_kms\n").unwrap();
    assert!(matches!(cfg.build(), Err(KeyError::Config(_))));
}
