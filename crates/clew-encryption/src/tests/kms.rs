use std::collections::BTreeMap;
use std::time::Duration;

use crate::kms::{KmsConfig, KmsProvider};
use crate::testkit::{free_port, Moto};
use crate::{parse_credentials_file, AwsCredentials, KeyError, KeyProvider, ProviderKind};

#[tokio::test]
async fn generate_unwrap_and_wrong_context() {
    let moto = Moto::start();
    let key = moto.create_kms_key("clew default").await;
    let p = moto.kms_provider(moto.kms_config(&key));
    assert_eq!(p.name(), "aws_kms");
    p.check().await.unwrap();
    let dk = p.generate("acme").await.unwrap();
    assert_eq!(dk.envelope.provider, ProviderKind::AwsKms);
    assert!(
        dk.envelope.kek_id.contains(&key),
        "kek_id is the ARN: {}",
        dk.envelope.kek_id
    );
    assert_eq!(dk.envelope.kek_version, None);
    assert_eq!(*p.unwrap(&dk.envelope).await.unwrap(), *dk.plaintext);
    // the tenant is bound through the encryption context
    let mut other = dk.envelope.clone();
    other.tenant = "evil".into();
    let err = p.unwrap(&other).await.unwrap_err();
    assert!(matches!(err, KeyError::Corrupt(_)), "{err:?}");
    // garbage ciphertext
    let mut bad = dk.envelope.clone();
    bad.wrapped = crate::envelope::b64(b"definitely not a kms blob");
    assert!(matches!(p.unwrap(&bad).await, Err(KeyError::Corrupt(_))));
    // an already current envelope is not rewrapped
    assert!(p.rewrap(&dk.envelope).await.unwrap().is_none());
}

#[tokio::test]
async fn per_tenant_keys_alias_and_rewrap() {
    let moto = Moto::start();
    let default_key = moto.create_kms_key("default").await;
    let acme_key = moto.create_kms_key("acme").await;
    moto.create_alias("alias/clew-acme", &acme_key).await;
    let mut cfg = moto.kms_config(&default_key);
    cfg.tenant_keys
        .insert("acme".into(), "alias/clew-acme".into());
    let p = moto.kms_provider(cfg.clone());
    p.check().await.unwrap();
    let a = p.generate("acme").await.unwrap();
    let b = p.generate("beta").await.unwrap();
    assert!(
        a.envelope.kek_id.contains(&acme_key),
        "{}",
        a.envelope.kek_id
    );
    assert!(
        b.envelope.kek_id.contains(&default_key),
        "{}",
        b.envelope.kek_id
    );
    assert_eq!(*p.unwrap(&a.envelope).await.unwrap(), *a.plaintext);
    assert_eq!(*p.unwrap(&b.envelope).await.unwrap(), *b.plaintext);
    assert!(
        p.rewrap(&a.envelope).await.unwrap().is_none(),
        "alias resolves to the same ARN"
    );

    // move beta to a new key: rewrap re-encrypts under it, same data key
    let beta_key = moto.create_kms_key("beta v2").await;
    cfg.tenant_keys.insert("beta".into(), beta_key.clone());
    let p2 = moto.kms_provider(cfg);
    let moved = p2.rewrap(&b.envelope).await.unwrap().expect("rewrapped");
    assert!(moved.kek_id.contains(&beta_key), "{}", moved.kek_id);
    assert_eq!(moved.tenant, "beta");
    assert_eq!(*p2.unwrap(&moved).await.unwrap(), *b.plaintext);
    assert!(p2.rewrap(&moved).await.unwrap().is_none());
    // the old envelope still opens (old key still exists)
    assert_eq!(*p2.unwrap(&b.envelope).await.unwrap(), *b.plaintext);
}

#[tokio::test]
async fn check_fails_for_unknown_and_disabled_keys() {
    let moto = Moto::start();
    let key = moto.create_kms_key("k").await;
    let unknown = moto.kms_provider(moto.kms_config("11111111-2222-3333-4444-555555555555"));
    let err = unknown.check().await.unwrap_err();
    match &err {
        KeyError::KeyGone { reason, .. } => {
            assert!(reason.contains("encryption.aws_kms.key_id"), "{reason}")
        }
        other => panic!("expected KeyGone, got {other:?}"),
    }
    assert!(matches!(
        unknown.generate("t").await,
        Err(KeyError::KeyGone { .. })
    ));

    let mut cfg = moto.kms_config(&key);
    let tenant_key = moto.create_kms_key("acme").await;
    cfg.tenant_keys.insert("acme".into(), tenant_key.clone());
    let p = moto.kms_provider(cfg);
    p.check().await.unwrap();
    moto.disable_key(&tenant_key).await;
    let err = p.check().await.unwrap_err();
    match &err {
        KeyError::KeyGone { tenant, reason, .. } => {
            assert_eq!(tenant, "acme");
            assert!(
                reason.contains("Disabled") && reason.contains("tenant_keys.acme"),
                "{reason}"
            );
        }
        other => panic!("expected KeyGone, got {other:?}"),
    }
    assert!(err.to_string().contains("Disabled"));
}

#[tokio::test]
async fn signature_checks_wrong_secret_is_access_denied() {
    let (moto, good) = Moto::start_with_signature_checks().await;
    let key = moto.create_kms_key("signed").await;
    let cfg = moto.kms_config(&key);
    let ok = KmsProvider::with_credentials(cfg.clone(), good.clone()).unwrap();
    ok.check().await.unwrap();
    let dk = ok.generate("acme").await.unwrap();
    assert_eq!(*ok.unwrap(&dk.envelope).await.unwrap(), *dk.plaintext);

    let wrong = AwsCredentials::new(good.access_key_id.clone(), "not-the-secret", None);
    let bad = KmsProvider::with_credentials(cfg.clone(), wrong).unwrap();
    let err = bad.generate("acme").await.unwrap_err();
    assert!(matches!(err, KeyError::AccessDenied { .. }), "{err:?}");
    assert!(matches!(
        bad.check().await,
        Err(KeyError::AccessDenied { .. })
    ));
    assert!(matches!(
        bad.unwrap(&dk.envelope).await,
        Err(KeyError::AccessDenied { .. })
    ));
    let unknown_ak =
        KmsProvider::with_credentials(cfg, AwsCredentials::new("AKIAUNKNOWN000000000", "x", None))
            .unwrap();
    assert!(matches!(
        unknown_ak.generate("acme").await,
        Err(KeyError::AccessDenied { .. })
    ));
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    let port = free_port(); // nothing listens here
    let cfg = KmsConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        key_id: Some("alias/x".into()),
        tenant_keys: BTreeMap::new(),
        timeout: Some(Duration::from_secs(2)),
    };
    let p = KmsProvider::with_credentials(cfg, AwsCredentials::new("testing", "testing", None))
        .unwrap();
    let err = p.generate("acme").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(p.check().await, Err(KeyError::Unavailable { .. })));
}

#[tokio::test]
async fn timeout_is_unavailable() {
    // a listener that accepts and never answers
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let cfg = KmsConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        key_id: Some("alias/x".into()),
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let p = KmsProvider::with_credentials(cfg, AwsCredentials::new("testing", "testing", None))
        .unwrap();
    let err = p.generate("acme").await.unwrap_err();
    assert!(matches!(err, KeyError::Unavailable { .. }), "{err:?}");
    drop(l);
}

#[test]
fn config_yaml_and_errors() {
    let cfg: KmsConfig = serde_yaml::from_str(
        "endpoint: http://127.0.0.1:1\nregion: eu-west-1\nkey_id: alias/clew\ntenant_keys:\n  acme: k1\ntimeout: 3s\n",
    )
    .unwrap();
    assert_eq!(cfg.timeout, Some(Duration::from_secs(3)));
    assert_eq!(cfg.tenant_keys["acme"], "k1");
    assert!(serde_yaml::from_str::<KmsConfig>("key_id: a\nkeyid: b\n").is_err());
    assert!(serde_yaml::from_str::<KmsConfig>("timeout: soon\n").is_err());
    let creds = AwsCredentials::new("a", "b", None);
    let no_key = KmsConfig {
        region: Some("eu-west-1".into()),
        ..Default::default()
    };
    match KmsProvider::with_credentials(no_key, creds.clone()) {
        Err(KeyError::Config(m)) => assert!(m.contains("encryption.aws_kms.key_id"), "{m}"),
        other => panic!("{other:?}"),
    }
    // default endpoint derives from the region
    let p = KmsProvider::with_credentials(
        KmsConfig {
            region: Some("eu-west-1".into()),
            key_id: Some("k".into()),
            ..Default::default()
        },
        creds.clone(),
    )
    .unwrap();
    assert_eq!(p.endpoint(), "https://kms.eu-west-1.amazonaws.com");
    let only_tenants = KmsProvider::with_credentials(
        KmsConfig {
            region: Some("eu-west-1".into()),
            tenant_keys: [("acme".to_string(), "k".to_string())].into(),
            ..Default::default()
        },
        creds,
    )
    .unwrap();
    assert_eq!(only_tenants.key_for("acme").unwrap(), "k");
    assert!(matches!(
        only_tenants.key_for("other"),
        Err(KeyError::Config(_))
    ));
}

#[test]
fn credentials_resolution() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let c = AwsCredentials::resolve(env(&[
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "SK"),
        ("AWS_SESSION_TOKEN", "TOK"),
    ]))
    .unwrap();
    assert_eq!(c.access_key_id, "AK");
    assert_eq!(c.secret_access_key.as_str(), "SK");
    assert_eq!(c.session_token.as_deref().map(|s| s.as_str()), Some("TOK"));
    assert!(!format!("{c:?}").contains("SK\""));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = DEFSECRET\n\n[profile ci]\naws_access_key_id=CI\naws_secret_access_key=CISECRET\naws_session_token = T\n",
    )
    .unwrap();
    let p = path.to_string_lossy().into_owned();
    let p2 = p.clone();
    let c =
        AwsCredentials::resolve(move |k| (k == "AWS_SHARED_CREDENTIALS_FILE").then(|| p.clone()))
            .unwrap();
    assert_eq!(c.access_key_id, "DEF");
    let c = AwsCredentials::resolve(move |k| match k {
        "AWS_SHARED_CREDENTIALS_FILE" => Some(p2.clone()),
        "AWS_PROFILE" => Some("ci".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.access_key_id, "CI");
    assert!(c.session_token.is_some());
    assert!(parse_credentials_file("[default]\naws_access_key_id=x\n", "default").is_none());
    let home = dir.path().to_string_lossy().into_owned();
    assert!(matches!(
        AwsCredentials::resolve(move |k| (k == "HOME").then(|| home.clone())),
        Err(KeyError::Config(_))
    ));
}

#[tokio::test]
async fn testkit_creates_buckets() {
    let moto = Moto::start();
    moto.create_bucket("clew-blocks").await;
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}
