//! The real binary with `storage.s3` pointed at a real S3-compatible server (moto_server on
//! loopback): blocks are written to the bucket and trace-by-id via the Jaeger API is answered
//! from them, also after a restart with an empty local cache.

mod common;
#[path = "../../clew-store/tests/common/moto.rs"]
mod moto;

use common::{clew, Server};
use std::path::Path;
use std::time::{Duration, Instant};

const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
    ("AWS_REGION", moto::REGION),
];

fn count_files(dir: &Path, name: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    count_files(&p, name)
                } else {
                    usize::from(e.file_name() == name)
                }
            })
            .sum()
    })
}

/// `GET /api/traces/{id}` on the Jaeger API: the number of spans returned.
fn jaeger_span_count(server: &Server, id: &str) -> usize {
    let port: u16 = server
        .query
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let (status, body) = moto::http(port, "GET", &format!("/api/traces/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(id), "{body}");
    body.matches("\"spanID\"").count()
}

#[test]
fn serve_writes_blocks_to_the_bucket_and_reads_them_back() {
    let moto = moto::Moto::start();
    moto.create_bucket("clew-e2e");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("clew.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  block:\n    max_age: 1s\n  s3:\n    bucket: clew-e2e\n    prefix: e2e\n    endpoint: {}\n    region: us-east-1\n    force_path_style: true\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let server = Server::start_with_env(&data, Some(&config), &AWS_ENV);
    let demo = clew(&[
        "demo",
        "--endpoint",
        &server.grpc,
        "--traces",
        "10",
        "--rate",
        "0",
        "--seed",
        "3",
    ]);
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let id = String::from_utf8_lossy(&demo.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("example trace:")
                .map(|s| s.trim().to_string())
        })
        .expect("demo prints an example trace id");

    // The head is flushed after `max_age` into blocks in the bucket.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !moto
        .keys("clew-e2e", "e2e/")
        .iter()
        .any(|k| k.ends_with("/meta.json"))
    {
        assert!(Instant::now() < deadline, "no block reached the bucket");
        std::thread::sleep(Duration::from_millis(200));
    }
    let keys = moto.keys("clew-e2e", "e2e/");
    assert!(
        keys.iter().all(|k| k.starts_with("e2e/tenants/")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with("/data.parquet")));
    assert_eq!(
        count_files(&data.join("blocks"), "data.parquet"),
        0,
        "no local blocks"
    );
    let spans = jaeger_span_count(&server, &id);
    assert!(spans > 1, "{spans}");
    assert_eq!(server.terminate().code(), Some(0));

    // After a restart (and without the local cache) the trace comes from the bucket alone. This
    // time the credentials come from a shared credentials file and a profile.
    std::fs::remove_dir_all(data.join("cache")).unwrap();
    let creds = dir.path().join("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[clew]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            moto::ACCESS_KEY,
            moto::SECRET_KEY
        ),
    )
    .unwrap();
    let creds = creds.to_string_lossy().to_string();
    let server = Server::start_with_env(
        &data,
        Some(&config),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", &creds),
            ("AWS_PROFILE", "clew"),
            ("AWS_REGION", moto::REGION),
        ],
    );
    assert_eq!(jaeger_span_count(&server, &id), spans);
    assert!(
        count_files(&data.join("cache"), "meta.json") >= 1,
        "cache refilled"
    );
    assert_eq!(server.terminate().code(), Some(0));

    // A missing bucket stops start-up with the key and the fix.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "storage:\n  s3:\n    bucket: nope\n    endpoint: {}\n    force_path_style: true\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .envs(AWS_ENV)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.s3.bucket") && err.contains("does not exist") && err.contains("fix:"),
        "{err}"
    );
}
