//! Starting and stopping the processes under test (clew, rotel) on free loopback ports.

use anyhow::{bail, Context};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub grpc: String,
    pub http: String,
    pub query: Option<String>,
    /// The Tempo HTTP API (`/api/search?q=` TraceQL searches).
    pub tempo: Option<String>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (clew flushes its head into blocks on SIGTERM).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("{} exited with {status}", self.name);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not stop within 300 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// A server still running when its handle is dropped (an error on the way) is killed, so no
    /// benchmark leaves processes behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of an unlabelled metric (`clew_compaction_running`) on the `/metrics` of the query
/// API at `query` (host:port); `None` when it cannot be read or there is no such metric.
pub async fn metric(client: &reqwest::Client, query: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("http://{query}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn wait_for_port(addr: &str, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(s) = child.try_wait()? {
            bail!("{name} exited during start-up ({s})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} did not listen on {addr} within 60 s")
}

/// `clew serve` with its own data dir and config, on fresh ports.
pub fn start_clew(
    bin: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    log: &Path,
) -> anyhow::Result<Server> {
    start_clew_env(bin, data_dir, config, log, &[])
}

/// [`start_clew`] with extra environment variables (e.g. S3 credentials).
pub fn start_clew_env(
    bin: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let (g, h, z, q, sp, tp) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--otlp-grpc-endpoint")
        .arg(format!("127.0.0.1:{g}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{h}"))
        .arg("--zipkin-endpoint")
        .arg(format!("127.0.0.1:{z}"))
        .arg("--query-endpoint")
        .arg(format!("127.0.0.1:{q}"))
        .arg("--sampling-endpoint")
        .arg(format!("127.0.0.1:{sp}"))
        .arg("--tempo-endpoint")
        .arg(format!("127.0.0.1:{tp}"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.envs(env.iter().copied());
    let logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let query = format!("127.0.0.1:{q}");
    wait_for_port(&query, &mut child, "clew")?;
    wait_for_port(&format!("127.0.0.1:{g}"), &mut child, "clew")?;
    Ok(Server {
        name: "clew",
        child,
        grpc: format!("127.0.0.1:{g}"),
        http: format!("127.0.0.1:{h}"),
        query: Some(query),
        tempo: Some(format!("127.0.0.1:{tp}")),
    })
}

/// rotel with its blackhole exporter (receives, batches, discards).
pub fn start_rotel(bin: &Path, log: &Path) -> anyhow::Result<Server> {
    let (g, h) = (free_port()?, free_port()?);
    let logf = std::fs::File::create(log)?;
    let mut child = Command::new(bin)
        .args([
            "start",
            "--exporter",
            "blackhole",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{g}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{h}"),
        ])
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    wait_for_port(&format!("127.0.0.1:{g}"), &mut child, "rotel")?;
    wait_for_port(&format!("127.0.0.1:{h}"), &mut child, "rotel")?;
    Ok(Server {
        name: "rotel",
        child,
        grpc: format!("127.0.0.1:{g}"),
        http: format!("127.0.0.1:{h}"),
        query: None,
        tempo: None,
    })
}

/// The process's resident memory (VmRSS from /proc), 0 once it is gone.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            l["VmRSS:".len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The process's open file descriptors (entries of /proc/PID/fd), 0 once it is gone.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Total size of the regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Block directories (those holding a meta.json) under `dir`.
pub fn block_count(dir: &Path) -> usize {
    files_named(dir, "meta.json")
}

/// Files called `name` anywhere under `dir` (e.g. `key.json`: sealed blocks).
pub fn files_named(dir: &Path, name: &str) -> usize {
    let mut n = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| f == name) {
                n += 1;
            }
        }
    }
    n
}
