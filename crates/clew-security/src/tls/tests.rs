//! Settings validation, reload, the listener (handshake refusals, peer identity) and the client
//! side, with certificates made by rcgen at test time.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// (certificate PEM, key PEM).
    fn leaf(&self, cn: &str, sans: &[&str], client: bool, expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

struct Files {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: Ca,
    settings: TlsServerSettings,
}

fn server_files(mtls: bool) -> Files {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = Ca::new("Test CA");
    let (cert, key) = ca.leaf("localhost", &["localhost", "127.0.0.1"], false, false);
    let settings = TlsServerSettings {
        cert_file: Some(write(&dir, "server.pem", &cert)),
        key_file: Some(write(&dir, "server-key.pem", &key)),
        client_ca_file: mtls.then(|| write(&dir, "ca.pem", &ca.pem)),
        reload_interval: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    Files {
        _dir: tmp,
        dir,
        ca,
        settings,
    }
}

fn err_of(s: &TlsServerSettings) -> TlsError {
    ServerTls::new(s.clone(), "query.tls", Alpn::Http).unwrap_err()
}

#[test]
fn settings_parse_collector_keys() {
    let s: TlsServerSettings = serde_json::from_str(
        r#"{"cert_file":"a.pem","key_file":"k.pem","client_ca_file":"ca.pem","min_version":"1.3","reload_interval":"5s"}"#,
    )
    .unwrap();
    assert_eq!(s.min_version, Some(TlsVersion::V1_3));
    assert_eq!(s.reload_every(), Some(Duration::from_secs(5)));
    let s: TlsServerSettings =
        serde_json::from_str(r#"{"cert_file":"a","key_file":"b","min_version":1.2}"#).unwrap();
    assert_eq!(s.min_version, Some(TlsVersion::V1_2));
    assert_eq!(s.reload_every(), Some(DEFAULT_RELOAD_INTERVAL));
    let s: TlsServerSettings =
        serde_json::from_str(r#"{"cert_file":"a","key_file":"b","reload_interval":"0s"}"#).unwrap();
    assert_eq!(s.reload_every(), None);

    let e = serde_json::from_str::<TlsServerSettings>(r#"{"min_version":"1.1"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not supported") && e.contains("fix:"), "{e}");
    let e = serde_json::from_str::<TlsServerSettings>(r#"{"reload_interval":"often"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fix:"), "{e}");
    let e = serde_json::from_str::<TlsServerSettings>(r#"{"certfile":"x"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");

    let mut s = TlsServerSettings {
        cert_file: Some("certs/a.pem".into()),
        key_file: Some("/abs/k.pem".into()),
        ..Default::default()
    };
    s.resolve_paths(Path::new("/etc/clew"));
    assert_eq!(s.cert_file.unwrap(), PathBuf::from("/etc/clew/certs/a.pem"));
    assert_eq!(s.key_file.unwrap(), PathBuf::from("/abs/k.pem"));
}

#[test]
fn validation_names_the_key_and_the_fix() {
    let f = server_files(true);
    ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();

    let mut s = f.settings.clone();
    s.cert_file = None;
    let e = err_of(&s);
    assert_eq!(e.key, "query.tls.cert_file");
    assert!(e.message.contains("missing") && e.message.contains("fix:"));

    let mut s = f.settings.clone();
    s.key_file = None;
    assert_eq!(err_of(&s).key, "query.tls.key_file");

    let mut s = f.settings.clone();
    s.cert_file = Some(f.dir.join("nope.pem"));
    let e = err_of(&s);
    assert_eq!(e.key, "query.tls.cert_file");
    assert!(
        e.message.contains("cannot read") && e.message.contains("fix:"),
        "{e}"
    );

    let mut s = f.settings.clone();
    s.cert_file = Some(write(&f.dir, "garbage.pem", "hello\n"));
    let e = err_of(&s);
    assert_eq!(e.key, "query.tls.cert_file");
    assert!(e.message.contains("no certificate"), "{e}");

    let mut s = f.settings.clone();
    s.cert_file = Some(write(
        &f.dir,
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ));
    assert_eq!(err_of(&s).key, "query.tls.cert_file");

    // A private key where the certificate should be.
    let mut s = f.settings.clone();
    s.cert_file = s.key_file.clone();
    assert_eq!(err_of(&s).key, "query.tls.cert_file");

    let mut s = f.settings.clone();
    s.key_file = s.cert_file.clone();
    let e = err_of(&s);
    assert_eq!(e.key, "query.tls.key_file");
    assert!(e.message.contains("no private key"), "{e}");

    // A key of another certificate.
    let (_, other_key) = f.ca.leaf("other", &["other"], false, false);
    let mut s = f.settings.clone();
    s.key_file = Some(write(&f.dir, "other-key.pem", &other_key));
    let e = err_of(&s);
    assert_eq!(e.key, "query.tls.key_file");
    assert!(e.message.contains("is not the private key"), "{e}");

    let mut s = f.settings.clone();
    s.client_ca_file = Some(f.dir.join("missing-ca.pem"));
    assert_eq!(err_of(&s).key, "query.tls.client_ca_file");

    let mut s = f.settings.clone();
    s.ca_file = Some(f.dir.join("ca.pem"));
    let e = err_of(&s);
    assert_eq!(e.key, "query.tls.ca_file");
    assert!(e.message.contains("client_ca_file"), "{e}");

    let mut s = f.settings.clone();
    s.min_version = Some(TlsVersion::V1_3);
    s.max_version = Some(TlsVersion::V1_2);
    assert_eq!(err_of(&s).key, "query.tls.min_version");
    assert!(err_of(&s)
        .to_string()
        .starts_with("key `query.tls.min_version`: "));
}

#[test]
fn expired_server_certificate_is_a_warning() {
    let f = server_files(false);
    let (cert, key) = f.ca.leaf("localhost", &["localhost"], false, true);
    let mut s = f.settings.clone();
    s.cert_file = Some(write(&f.dir, "old.pem", &cert));
    s.key_file = Some(write(&f.dir, "old-key.pem", &key));
    let tls = ServerTls::new(s, "query.tls", Alpn::Http).unwrap();
    let w = tls.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("query.tls.cert_file") && w[0].contains("expired"),
        "{w:?}"
    );
    assert!(ServerTls::new(f.settings.clone(), "q", Alpn::Http)
        .unwrap()
        .warnings()
        .is_empty());
}

#[test]
fn reload_swaps_the_config_only_when_files_change_and_load() {
    let f = server_files(false);
    let tls = ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();
    let first = tls.config();
    assert_eq!(tls.reload_if_changed(), Ok(false));
    assert!(Arc::ptr_eq(&first, &tls.config()));

    // Half-way through a rotation: new certificate, old key → refused, old config kept.
    let (cert, key) = f.ca.leaf("localhost", &["localhost"], false, false);
    std::fs::write(f.settings.cert_file.as_ref().unwrap(), &cert).unwrap();
    let e = tls.reload_if_changed().unwrap_err();
    assert_eq!(e.key, "query.tls.key_file");
    assert!(Arc::ptr_eq(&first, &tls.config()));
    assert_eq!(tls.reloads(), 0);

    // The key arrives: swapped.
    std::fs::write(f.settings.key_file.as_ref().unwrap(), &key).unwrap();
    assert_eq!(tls.reload_if_changed(), Ok(true));
    assert!(!Arc::ptr_eq(&first, &tls.config()));
    assert_eq!(tls.reloads(), 1);
    assert_eq!(tls.reload_if_changed(), Ok(false));
    assert_eq!(tls.config().alpn_protocols, Alpn::Http.protocols());
}

fn client(ca: Option<&str>, cert: Option<(&str, &str)>, dir: &Path) -> rustls::ClientConfig {
    let s = TlsClientSettings {
        ca_file: ca.map(|c| write(dir, "client-trust.pem", c)),
        cert_file: cert.map(|(c, _)| write(dir, "client.pem", c)),
        key_file: cert.map(|(_, k)| write(dir, "client-key.pem", k)),
        ..Default::default()
    };
    client_config(&s, "", &[b"http/1.1"]).unwrap()
}

/// Connects, writes `ping` and reads the echo: Ok(peer identity as echoed) or the error.
async fn exchange(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
    name: &str,
) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    s.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

/// A TLS echo server on a [`Listener`]; sends every accepted peer identity.
async fn echo_server(
    tls: Arc<ServerTls>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<crate::PeerIdentity>,
) {
    let mut l = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    let addr = l.local_addr();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let mut s = l.next().await;
            let _ = tx.send(s.peer().clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                    let _ = s.flush().await;
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn mtls_refuses_missing_wrong_and_expired_client_certificates() {
    let f = server_files(true);
    let tls = ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();
    assert!(tls.requires_client_certificate());
    let (addr, mut peers) = echo_server(tls).await;
    let dir = f.dir.clone();

    // No client certificate.
    assert!(
        exchange(addr, client(Some(&f.ca.pem), None, &dir), "localhost")
            .await
            .is_err()
    );
    // Signed by another CA.
    let wrong = Ca::new("Wrong CA");
    let (c, k) = wrong.leaf("mallory", &["mallory.example"], true, false);
    assert!(exchange(
        addr,
        client(Some(&f.ca.pem), Some((&c, &k)), &dir),
        "localhost"
    )
    .await
    .is_err());
    // Expired.
    let (c, k) = f.ca.leaf("old-client", &["old.example"], true, true);
    assert!(exchange(
        addr,
        client(Some(&f.ca.pem), Some((&c, &k)), &dir),
        "localhost"
    )
    .await
    .is_err());
    // The server's certificate from the client's side: a client trusting another CA refuses.
    let (c, k) =
        f.ca.leaf("checkout", &["checkout.shop.internal"], true, false);
    assert!(exchange(
        addr,
        client(Some(&wrong.pem), Some((&c, &k)), &dir),
        "localhost"
    )
    .await
    .is_err());
    // A good certificate: accepted, and its names reach the connection's identity.
    let mut good = CertificateParams::new(vec!["checkout.shop.internal".to_string()]).unwrap();
    good.distinguished_name.push(DnType::CommonName, "checkout");
    good.subject_alt_names
        .push(SanType::URI("spiffe://shop/checkout".try_into().unwrap()));
    good.subject_alt_names
        .push(SanType::Rfc822Name("ops@shop.example".try_into().unwrap()));
    good.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = good.signed_by(&key, &f.ca.issuer).unwrap();
    exchange(
        addr,
        client(
            Some(&f.ca.pem),
            Some((&cert.pem(), &key.serialize_pem())),
            &dir,
        ),
        "localhost",
    )
    .await
    .unwrap();
    let peer = tokio::time::timeout(Duration::from_secs(5), peers.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.common_name.as_deref(), Some("checkout"));
    assert_eq!(peer.dns_names, vec!["checkout.shop.internal"]);
    assert_eq!(peer.uri_names, vec!["spiffe://shop/checkout"]);
    assert_eq!(peer.email_names, vec!["ops@shop.example"]);
    assert!(peer.has_certificate());
    assert!(peer.remote_addr.unwrap().ip().is_loopback());
    // The refused handshakes produced no connection.
    assert!(peers.try_recv().is_err());
}

#[tokio::test]
async fn a_silent_client_does_not_block_others() {
    let f = server_files(false);
    let tls = ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();
    let (addr, _peers) = echo_server(tls).await;
    // Opens TCP and never says hello.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        exchange(addr, client(Some(&f.ca.pem), None, &f.dir), "localhost"),
    )
    .await
    .expect("a handshake waiting on a silent client blocked the next one")
    .unwrap();
}

#[tokio::test]
async fn reloaded_certificate_is_used_for_new_connections_only() {
    let f = server_files(false);
    let tls = ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();
    let _reloader = tls.spawn_reloader().unwrap();
    let (addr, _peers) = echo_server(tls.clone()).await;
    let dir = f.dir.clone();

    // An open connection made with the first certificate.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut open = tokio_rustls::TlsConnector::from(Arc::new(client(Some(&f.ca.pem), None, &dir)))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();

    // Rotate to a certificate from a new CA (the old CA no longer verifies new handshakes).
    let ca2 = Ca::new("Second CA");
    let (cert, key) = ca2.leaf("localhost", &["localhost"], false, false);
    let tmp_cert = write(&dir, "new.pem.tmp", &cert);
    let tmp_key = write(&dir, "new-key.pem.tmp", &key);
    std::fs::rename(&tmp_key, f.settings.key_file.as_ref().unwrap()).unwrap();
    std::fs::rename(&tmp_cert, f.settings.cert_file.as_ref().unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tls.reloads() == 0 {
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exchange(addr, client(Some(&ca2.pem), None, &dir), "localhost")
        .await
        .unwrap();
    assert!(
        exchange(addr, client(Some(&f.ca.pem), None, &dir), "localhost")
            .await
            .is_err()
    );
    // The open connection still works.
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn plaintext_listener_carries_the_address() {
    let mut l = Listener::bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    assert!(!l.is_tls());
    let addr = l.local_addr();
    let c = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await.unwrap() });
    let s = l.next().await;
    let client = c.await.unwrap();
    assert_eq!(s.peer().remote_addr, Some(client.local_addr().unwrap()));
    assert!(!s.peer().has_certificate() && !s.is_tls());
}

#[test]
fn peer_identity_reads_both_extension_forms() {
    let p = crate::PeerIdentity {
        common_name: Some("a".into()),
        ..Default::default()
    };
    let mut e = http::Extensions::new();
    assert!(peer_identity(&e).is_none());
    e.insert(axum::extract::ConnectInfo(p.clone()));
    assert_eq!(peer_identity(&e), Some(&p));
    let mut e = http::Extensions::new();
    e.insert(p.clone());
    assert_eq!(peer_identity(&e), Some(&p));
}

#[test]
fn client_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (c, k) = ca.leaf("me", &["me"], true, false);
    let s = TlsClientSettings {
        ca_file: Some(write(tmp.path(), "ca.pem", &ca.pem)),
        cert_file: Some(write(tmp.path(), "c.pem", &c)),
        key_file: None,
        ..Default::default()
    };
    let e = client_config(&s, "", &[]).unwrap_err();
    assert_eq!(e.key, "--key-file");
    assert!(reqwest_tls("http://127.0.0.1:1", &s, "")
        .unwrap_err()
        .message
        .contains("https://"));
    assert!(reqwest_tls("http://x", &TlsClientSettings::default(), "")
        .unwrap()
        .is_none());
    let s = TlsClientSettings {
        key_file: Some(write(tmp.path(), "k.pem", &k)),
        ..s
    };
    let cfg = reqwest_tls("https://127.0.0.1:1", &s, "").unwrap().unwrap();
    assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(grpc_endpoint("http://127.0.0.1:4317", &s, "").is_err());
    let (ep, _) = grpc_endpoint("https://localhost:4317", &s, "").unwrap();
    assert_eq!(ep.uri().to_string(), "http://localhost:4317/");
    assert!(grpc_endpoint("localhost:4317", &TlsClientSettings::default(), "").is_err());
    // No CA file: the system's trust store.
    client_config(&TlsClientSettings::default(), "", &[b"h2"]).unwrap();
}

/// A route answering the caller's identity as the server sees it in the request's extensions.
fn whoami() -> axum::Router {
    axum::Router::new().route(
        "/whoami",
        axum::routing::get(|req: axum::extract::Request| async move {
            match peer_identity(req.extensions()) {
                Some(p) => format!(
                    "{}|{}|{}",
                    p.remote_addr
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default(),
                    p.common_name.clone().unwrap_or_default(),
                    p.dns_names.join(",")
                ),
                None => "none".to_string(),
            }
        }),
    )
}

/// GET /whoami over `channel` (HTTP/2, what tonic's client speaks).
async fn ask_whoami(channel: &mut tonic::transport::Channel) -> String {
    use tower::{Service, ServiceExt};
    let req = http::Request::get("http://localhost/whoami")
        .body(tonic::body::Body::empty())
        .unwrap();
    let resp = channel.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

fn mtls_client_settings(f: &Files, cn: &str) -> TlsClientSettings {
    let (c, k) =
        f.ca.leaf(cn, &[&format!("{cn}.shop.internal")], true, false);
    TlsClientSettings {
        ca_file: Some(write(&f.dir, "trust.pem", &f.ca.pem)),
        cert_file: Some(write(&f.dir, &format!("{cn}.pem"), &c)),
        key_file: Some(write(&f.dir, &format!("{cn}-key.pem"), &k)),
        ..Default::default()
    }
}

#[tokio::test]
async fn axum_handlers_see_the_peer_identity() {
    let f = server_files(true);
    let tls = ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    let addr = listener.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_router(listener, whoami(), async {
        let _ = stopped.await;
    }));
    // HTTP/2 (ALPN h2), through the gRPC connector.
    let s = mtls_client_settings(&f, "cart");
    let (ep, conn) = grpc_endpoint(&format!("https://localhost:{}", addr.port()), &s, "").unwrap();
    let mut ch = ep.connect_with_connector(conn).await.unwrap();
    assert_eq!(
        ask_whoami(&mut ch).await,
        "127.0.0.1|cart|cart.shop.internal"
    );
    // HTTP/1.1 through reqwest with a preconfigured rustls config.
    let cfg = reqwest_tls(&format!("https://localhost:{}", addr.port()), &s, "")
        .unwrap()
        .unwrap();
    let c = reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap();
    let r = c
        .get(format!("https://localhost:{}/whoami", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_11);
    assert_eq!(r.text().await.unwrap(), "127.0.0.1|cart|cart.shop.internal");
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // Plaintext: the address only.
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(serve_router(listener, whoami(), std::future::pending()));
    let body = reqwest::get(format!("http://127.0.0.1:{}/whoami", addr.port()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "127.0.0.1||");
}

#[tokio::test]
async fn tonic_services_see_the_peer_identity() {
    let f = server_files(true);
    let tls = ServerTls::new(f.settings.clone(), "grpc.tls", Alpn::Grpc).unwrap();
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    let addr = listener.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(whoami()))
            .serve_with_incoming_shutdown(listener.into_incoming(), async {
                let _ = stopped.await;
            }),
    );
    let s = mtls_client_settings(&f, "payment");
    let (ep, conn) = grpc_endpoint(&format!("https://localhost:{}", addr.port()), &s, "").unwrap();
    let mut ch = ep.connect_with_connector(conn).await.unwrap();
    assert_eq!(
        ask_whoami(&mut ch).await,
        "127.0.0.1|payment|payment.shop.internal"
    );
    // Plaintext gRPC: the address only.
    let plain = Listener::bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let paddr = plain.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(whoami()))
            .serve_with_incoming(plain.into_incoming()),
    );
    let (ep, conn) = grpc_endpoint(
        &format!("http://127.0.0.1:{}", paddr.port()),
        &TlsClientSettings::default(),
        "",
    )
    .unwrap();
    let mut ch2 = ep.connect_with_connector(conn).await.unwrap();
    assert_eq!(ask_whoami(&mut ch2).await, "127.0.0.1||");
    let _ = stop.send(());
    drop(ch);
    server.await.unwrap().unwrap();
}

/// An OIDC provider whose JWKS is served over HTTPS by a private CA: `oidc.tls.ca_file` trusts
/// it; without it the fetch fails (the system's trust store does not know the CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_fetches_jwks_over_tls_with_a_private_ca() {
    use crate::auth::testkit::{claims, jwks, SigningKey};
    use crate::auth::{AuthError, Oidc, OidcConfig};
    let f = server_files(false);
    let key = SigningKey::es256("k1");
    let body = jwks(&[&key]).to_string();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let b = body.clone();
            async move { b }
        }),
    );
    let tls = ServerTls::new(f.settings.clone(), "query.tls", Alpn::Http).unwrap();
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    let port = listener.local_addr().port();
    tokio::spawn(serve_router(listener, app, std::future::pending()));
    let ca = write(&f.dir, "jwks-ca.pem", &f.ca.pem);
    let iss = "https://idp.test";
    let token = key.sign(&claims(iss, "clew", "alice", &["team-a"], 600));

    let with_ca: OidcConfig = serde_yaml::from_str(&format!(
        "{{issuer: \"{iss}\", audience: clew, jwks_url: \"https://localhost:{port}/jwks\", tenant_claim: tenants, tls: {{ca_file: {}}}}}",
        ca.display()
    ))
    .unwrap();
    let id = Oidc::new(&with_ca).unwrap().verify(&token).await.unwrap();
    assert_eq!(id.subject, "alice");

    let without: OidcConfig = serde_yaml::from_str(&format!(
        "{{issuer: \"{iss}\", audience: clew, jwks_url: \"https://localhost:{port}/jwks\", tenant_claim: tenants}}"
    ))
    .unwrap();
    assert!(matches!(
        Oidc::new(&without).unwrap().verify(&token).await,
        Err(AuthError::Unavailable(_))
    ));
    // TLS settings with a plaintext URL are refused at start-up.
    let plain: OidcConfig = serde_yaml::from_str(&format!(
        "{{issuer: \"{iss}\", audience: clew, jwks_url: \"http://localhost:{port}/jwks\", tenant_claim: tenants, tls: {{ca_file: {}}}}}",
        ca.display()
    ))
    .unwrap();
    assert!(Oidc::new(&plain).is_err());
}
