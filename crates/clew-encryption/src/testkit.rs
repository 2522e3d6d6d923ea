//! Test helpers (feature `testkit`): a real `moto_server` (S3 + KMS + IAM) on loopback.
//!
//! ```no_run
//! # async fn t() {
//! use clew_encryption::testkit::Moto;
//! let moto = Moto::start();                           // any credentials accepted
//! let key_id = moto.create_kms_key("clew test").await;
//! let provider = moto.kms_provider(moto.kms_config(&key_id));
//! let (moto2, good_creds) = Moto::start_with_signature_checks().await; // 403 on bad signatures
//! # }
//! ```
//!
//! The binary comes from `CLEW_MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`
//! (installed by `scripts/setup-test-deps`). The server is killed when the [`Moto`] is dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::kms::{KmsConfig, KmsProvider};
use crate::sigv4::{sign_headers, AwsCredentials};

/// Moto's region.
pub const REGION: &str = "us-east-1";

/// A running moto server.
pub struct Moto {
    child: Child,
    port: u16,
    creds: Mutex<AwsCredentials>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Path of the moto_server binary.
pub fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CLEW_MOTO_SERVER") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Moto {
    /// Start moto; any credentials are accepted.
    pub fn start() -> Moto {
        Self::spawn(None)
    }

    fn spawn(no_auth_count: Option<u32>) -> Moto {
        let bin = moto_binary();
        if !bin.exists() {
            panic!(
                "moto_server not found at {} — run scripts/setup-test-deps (or set CLEW_MOTO_SERVER)",
                bin.display()
            );
        }
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .env("AWS_DEFAULT_REGION", REGION)
                .env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
            if let Some(n) = no_auth_count {
                cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => panic!(
                    "cannot start {}: {e} — run scripts/setup-test-deps",
                    bin.display()
                ),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!("moto_server exited with {status}");
                    break;
                }
                if http_ready(port) {
                    return Moto {
                        child,
                        port,
                        creds: Mutex::new(AwsCredentials::new("testing", "testing", None)),
                        http: reqwest::Client::new(),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "moto_server did not answer within 30s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start moto_server: {last_err}");
    }

    /// Start moto so that, after an IAM user with an allow-all policy and an access key are
    /// created (3 unauthenticated actions, `INITIAL_NO_AUTH_ACTION_COUNT=3`), every request must
    /// be signed with that key: a wrong secret gets 403. Returns the server (whose helpers now use
    /// the good credentials) and the good credentials.
    pub async fn start_with_signature_checks() -> (Moto, AwsCredentials) {
        let moto = Self::spawn(Some(3));
        let user = "clew-test";
        moto.iam(&[("Action", "CreateUser"), ("UserName", user)])
            .await;
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
        })
        .to_string();
        moto.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", user),
            ("PolicyName", "allow-all"),
            ("PolicyDocument", &policy),
        ])
        .await;
        let xml = moto
            .iam(&[("Action", "CreateAccessKey"), ("UserName", user)])
            .await;
        let ak = xml_tag(&xml, "AccessKeyId").expect("CreateAccessKey: AccessKeyId");
        let sk = xml_tag(&xml, "SecretAccessKey").expect("CreateAccessKey: SecretAccessKey");
        let creds = AwsCredentials::new(ak, sk, None);
        *moto.creds.lock() = creds.clone();
        (moto, creds)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The credentials the helpers sign with.
    pub fn credentials(&self) -> AwsCredentials {
        self.creds.lock().clone()
    }

    /// A [`KmsConfig`] pointing at this server with `key_id` as the default key.
    pub fn kms_config(&self, key_id: &str) -> KmsConfig {
        KmsConfig {
            endpoint: Some(self.endpoint()),
            region: Some(REGION.into()),
            key_id: Some(key_id.into()),
            tenant_keys: Default::default(),
            timeout: Some(Duration::from_secs(10)),
        }
    }

    /// A provider for `config` using this server's credentials.
    pub fn kms_provider(&self, config: KmsConfig) -> KmsProvider {
        KmsProvider::with_credentials(config, self.credentials()).expect("KmsProvider for moto")
    }

    async fn send(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        s3: bool,
    ) -> (u16, String) {
        let url = format!("{}{}", self.endpoint(), path);
        let creds = self.credentials();
        let signed =
            sign_headers(&creds, REGION, service, method, &url, headers, &body, s3).expect("sign");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, &url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request to moto");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// A KMS JSON call; panics on error.
    pub async fn kms(&self, op: &str, body: Value) -> Value {
        let target = format!("TrentService.{op}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let (status, text) = self
            .send(
                "kms",
                "POST",
                "/",
                &headers,
                body.to_string().into_bytes(),
                false,
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "KMS {op} failed: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            form.append_pair(k, v);
        }
        form.append_pair("Version", "2010-05-08");
        let body = form.finish().into_bytes();
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let (status, text) = self.send("iam", "POST", "/", &headers, body, false).await;
        assert!(
            (200..300).contains(&status),
            "IAM {params:?} failed: {status} {text}"
        );
        text
    }

    /// Create a symmetric KMS key; returns its KeyId.
    pub async fn create_kms_key(&self, description: &str) -> String {
        let v = self
            .kms("CreateKey", json!({"Description": description, "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT"}))
            .await;
        v["KeyMetadata"]["KeyId"]
            .as_str()
            .expect("CreateKey KeyId")
            .to_string()
    }

    /// Create `alias` (must start with `alias/`) for `key_id`.
    pub async fn create_alias(&self, alias: &str, key_id: &str) {
        self.kms(
            "CreateAlias",
            json!({"AliasName": alias, "TargetKeyId": key_id}),
        )
        .await;
    }

    /// Disable a KMS key (moto does not enforce it on use; `check` must catch it).
    pub async fn disable_key(&self, key_id: &str) {
        self.kms("DisableKey", json!({"KeyId": key_id})).await;
    }

    /// Create an S3 bucket (path style).
    pub async fn create_bucket(&self, name: &str) {
        let (status, text) = self
            .send("s3", "PUT", &format!("/{name}"), &[], Vec::new(), true)
            .await;
        assert!(
            (200..300).contains(&status),
            "S3 CreateBucket {name} failed: {status} {text}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_ready(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && buf.starts_with(b"HTTP/"))
}

fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(text[start..end].to_string())
}
