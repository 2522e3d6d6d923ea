//! Shared harness for the real-binary tests: `clew serve` on free loopback ports, the CLI, and
//! clean shutdown. Each test file uses part of it.
#![allow(dead_code)]

pub mod certs;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_clew");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `clew serve`; killed on drop unless [`Server::terminate`]d.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` of the query API.
    pub query: String,
    /// `http://127.0.0.1:PORT` of the OTLP/gRPC receiver.
    pub grpc: String,
    /// `http://127.0.0.1:PORT` of the OTLP/HTTP receiver.
    pub http: String,
    /// `http://127.0.0.1:PORT` of Jaeger remote sampling (on by default).
    pub sampling: String,
    /// `http://127.0.0.1:PORT` of the Zipkin receiver.
    pub zipkin: String,
    /// `http://127.0.0.1:PORT` of the Tempo HTTP API (`tempo.endpoint`).
    pub tempo: String,
}

impl Server {
    pub fn start(data: &Path) -> Self {
        Self::start_with(data, None)
    }

    /// Starts with `--config` when given; logs append to `<data>.log` (restarts keep history).
    /// A server that exits at once because another process took one of its free ports between
    /// our probe and its bind (tests run in parallel) is started again on new ports.
    pub fn start_with(data: &Path, config: Option<&Path>) -> Self {
        Self::start_with_env(data, config, &[])
    }

    /// Starts again with the OTLP/gRPC port of an earlier run (`http://127.0.0.1:PORT`), e.g. as
    /// the target of another server's exporter.
    pub fn start_on(data: &Path, grpc: &str) -> Self {
        let port: u16 = grpc
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a grpc URL with a port");
        for _ in 0..20 {
            if let Some(s) = Self::try_start_ports(data, None, &[], Some(port)) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("server did not start on gRPC port {port}");
    }

    /// [`Server::start_with`] with extra environment variables for the server process.
    pub fn start_with_env(data: &Path, config: Option<&Path>, envs: &[(&str, &str)]) -> Self {
        for _ in 0..3 {
            if let Some(s) = Self::try_start(data, config, envs) {
                return s;
            }
        }
        panic!(
            "server did not start; log: {}",
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
    }

    /// `None` when the server exited during start-up on a port already in use.
    fn try_start(data: &Path, config: Option<&Path>, envs: &[(&str, &str)]) -> Option<Self> {
        Self::try_start_ports(data, config, envs, None)
    }

    fn try_start_ports(
        data: &Path,
        config: Option<&Path>,
        envs: &[(&str, &str)],
        grpc: Option<u16>,
    ) -> Option<Self> {
        // Six different ports: the OS may hand the same free port out twice in a row, and the
        // server refuses two listeners on one port.
        let mut ports: Vec<u16> = grpc.into_iter().collect();
        while ports.len() < 6 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let (g, h, z, q, sp, t) = (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").envs(envs.iter().copied());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(data)
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{g}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{h}")])
            .args(["--zipkin-endpoint", &format!("127.0.0.1:{z}")])
            .args(["--query-endpoint", &format!("127.0.0.1:{q}")])
            .args(["--sampling-endpoint", &format!("127.0.0.1:{sp}")])
            .args(["--tempo-endpoint", &format!("127.0.0.1:{t}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Server {
            child,
            query: format!("http://127.0.0.1:{q}"),
            grpc: format!("http://127.0.0.1:{g}"),
            http: format!("http://127.0.0.1:{h}"),
            sampling: format!("http://127.0.0.1:{sp}"),
            zipkin: format!("http://127.0.0.1:{z}"),
            tempo: format!("http://127.0.0.1:{t}"),
        };
        let mut s = s;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", q)).is_ok() {
                return Some(s);
            }
            if let Some(status) = s.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                // The whole log: with RUST_BACKTRACE set, the error's backtrace pushes the
                // message itself out of the tail shown below.
                if log.contains("Address already in use") || log.contains("address in use") {
                    return None;
                }
                // The error itself comes before its backtrace: show it, then the tail.
                let error = log
                    .find("Error: ")
                    .map(|i| log.get(i..(i + 2000).min(log.len())).unwrap_or(&log[i..]))
                    .unwrap_or("");
                let tail = &log[log.len().saturating_sub(4000)..];
                panic!(
                    "server exited during start-up ({status}); error: {error}\n…log tail: {tail}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server did not start within 60 s; log: {}",
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
    }

    /// The server's process id (for /proc readings: RSS, open files).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for the exit (the server flushes its head first).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `clew` CLI.
pub fn clew(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// An export request of `spans`, all of one resource with `service.name` = `service`.
pub fn one_service_request(
    service: &str,
    spans: Vec<clew_model::otlp::trace::Span>,
) -> clew_model::otlp::collector::ExportTraceServiceRequest {
    use clew_model::otlp::resource::Resource;
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans};
    clew_model::otlp::collector::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![clew_model::attrs::kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
