use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::local::Keyring;
use crate::sealed;
use crate::testkit::Moto;
use crate::{KeyError, KeyManager, KeyProvider};

#[tokio::test]
async fn file_keys_cache_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let kr = Arc::new(Keyring::create(dir.path().join("k.yaml")).unwrap());
    let km = KeyManager::new(kr.clone());
    let mut reg = Registry::default();
    km.register(&mut reg);
    let dk = km.new_file_key("acme").await.unwrap();
    let path = b"tenants/acme/d/b/data.parquet";
    let sealed_bytes = sealed::seal(&dk.plaintext, path, b"parquet bytes");
    let env = crate::Envelope::from_json(&dk.envelope.to_json()).unwrap();
    let key = km.open(&env).await.unwrap();
    assert_eq!(
        sealed::open(&key, path, &sealed_bytes).unwrap(),
        b"parquet bytes"
    );
    // cached: works even after the keyring destroys the tenant, until clear_cache
    kr.destroy("acme").unwrap();
    assert!(km.open(&env).await.is_ok());
    km.clear_cache();
    assert!(matches!(km.open(&env).await, Err(KeyError::KeyGone { .. })));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
    assert!(
        out.contains("clew_encryption_provider_calls_total{provider=\"local\",op=\"generate\"} 1"),
        "{out}"
    );
    assert!(out.contains("op=\"unwrap\",kind=\"key_gone\"} 1"), "{out}");
    assert!(
        out.contains("clew_encryption_key_cache_hits_total 2"),
        "{out}"
    );
}

#[tokio::test]
async fn cache_is_bounded_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let kr = Arc::new(Keyring::create(dir.path().join("k.yaml")).unwrap());
    let km = KeyManager::with_cache(kr.clone(), 2, Duration::from_millis(200));
    let mut envs = Vec::new();
    for _ in 0..3 {
        envs.push(kr.generate("acme").await.unwrap().envelope);
    }
    for e in &envs {
        km.open(e).await.unwrap();
    }
    kr.destroy("acme").unwrap();
    // capacity 2: the first one was evicted
    assert!(km.open(&envs[0]).await.is_err());
    assert!(km.open(&envs[2]).await.is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(km.open(&envs[2]).await.is_err(), "expired");
}

#[tokio::test]
async fn wal_keys_survive_a_kms_outage_until_rolled() {
    let moto = Moto::start();
    let key = moto.create_kms_key("wal").await;
    let km = KeyManager::new(Arc::new(moto.kms_provider(moto.kms_config(&key))));
    km.check().await.unwrap();
    let w1 = km.wal_key("acme").await.unwrap();
    let w1b = km.wal_key("acme").await.unwrap();
    assert_eq!(w1.id, w1b.id);
    let rec = sealed::record::RecordKey::new(&w1.key).seal(b"seg1", b"span batch");
    let w2 = km.wal_key("beta").await.unwrap();
    assert_ne!(w1.id, w2.id);
    assert_ne!(*w1.key, *w2.key);
    // replay path: the envelope opens to the same key
    assert_eq!(**km.open(&w1.envelope).await.unwrap(), *w1.key);
    km.roll_wal_keys();
    let w3 = km.wal_key("acme").await.unwrap();
    assert_ne!(w3.id, w1.id);

    drop(moto); // KMS outage
    let still = km.wal_key("acme").await.unwrap();
    assert_eq!(
        still.id, w3.id,
        "current key keeps working during an outage"
    );
    assert_eq!(
        crate::open_record(&w1.key, b"seg1", &rec).unwrap(),
        b"span batch"
    );
    let err = km.new_file_key("acme").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    km.roll_wal_keys();
    assert!(matches!(
        km.wal_key("acme").await,
        Err(KeyError::Unavailable { .. })
    ));
    assert!(km.provider().name() == "aws_kms");
}
