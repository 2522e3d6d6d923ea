//! `clew-bench proxy`: what the tracing sidecar (`clew proxy`) adds to a request, side by side
//! with Debian's nginx doing the same reverse proxying, in one run (issue 19, item 4).
//!
//! Three paths to one backend, measured alternately round by round:
//! * `direct` — client → backend;
//! * `clew` — client → `clew proxy` ingress → backend (a SERVER span per request, W3C context
//!   forwarded, spans batched and exported over OTLP/HTTP to a sink in this process);
//! * `nginx` — client → nginx (`proxy_pass`, upstream keep-alive, access log off) → backend.
//!
//! Latency: open loop at `--rate` requests/s spread over `--connections` keep-alive connections,
//! small bodies (POST 128 B, response 128 B); each latency is from the send, or from the moment
//! the request was due when the previous answer held it back by more than 3 ms (no coordinated
//! omission), p50/p99/p99.9; "added" = the proxy's percentile minus the direct path's in the same round.
//! Throughput per CPU: closed loop, as fast as answers come, for `--max-duration`; the proxy
//! process's CPU time from /proc (nginx runs one worker with `master_process off`, so one pid
//! holds all of its CPU).
//!
//! The client, the backend and the span sink are raw HTTP/1.1 on tokio in this process, the same
//! for all three paths.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::proc_stat::ProcCpu;
use crate::servers::{free_port, wait_for_port};

#[derive(clap::Args)]
pub struct ProxyArgs {
    #[arg(long, default_value = "target/release/clew")]
    pub clew_bin: PathBuf,
    /// nginx binary (Debian: /usr/sbin/nginx; `scripts/bench proxy` installs it). Missing:
    /// the nginx column is skipped with a warning.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: PathBuf,
    /// Requests per second of the latency runs.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    #[arg(long, default_value = "20s", value_parser = crate::humantime_secs)]
    pub duration: Duration,
    #[arg(long, default_value = "3s", value_parser = crate::humantime_secs)]
    pub warmup: Duration,
    /// Rounds of (direct, clew, nginx), alternating.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Closed-loop throughput run per proxy.
    #[arg(long, default_value = "10s", value_parser = crate::humantime_secs)]
    pub max_duration: Duration,
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
    #[arg(long, default_value = "target/bench-data/proxy")]
    pub work_dir: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Count mode, for profiling by instruction counts (callgrind) rather than seconds: instead
    /// of the side-by-side run, send exactly this many requests through `clew proxy` only
    /// (closed loop, spread over `--connections`), then stop it gracefully (SIGTERM) and wait
    /// for it to exit, so a profiler wrapping it writes its output. Two runs with different
    /// counts give the cost per request without start-up and shutdown:
    /// (I(n2) - I(n1)) / (n2 - n1).
    #[arg(long)]
    pub requests: Option<u64>,
    /// A command prefix `clew proxy` runs under, split on whitespace, e.g.
    /// `"valgrind --tool=callgrind --callgrind-out-file=cg.out"` or `"strace -f -c -o s.txt"`.
    #[arg(long)]
    pub clew_wrapper: Option<String>,
}

const BODY: usize = 128;

/// A send later than this past its due time was held back by the previous answer (timer
/// lateness alone stays below it).
const LATE: Duration = Duration::from_millis(3);

/// One HTTP/1.1 message read from `s` into `buf` (headers + Content-Length body); returns the
/// bytes of the request/response head. Enough for the fixed messages of this benchmark.
async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
    buf.clear();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut tmp).await?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Ok(true);
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A keep-alive HTTP/1.1 server answering every request with `response`.
async fn raw_server(response: Arc<Vec<u8>>) -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(8192);
                while let Ok(true) = read_message(&mut s, &mut buf).await {
                    if s.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn request(port: u16) -> Vec<u8> {
    let mut r = format!(
        "POST /orders/42 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: clew-bench\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', BODY));
    r
}

#[derive(Default, Clone, serde::Serialize)]
struct Latency {
    requests: usize,
    errors: usize,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)])
}

/// Open loop: each connection sends on its own schedule; latency from the due time.
async fn latency_run(
    port: u16,
    rate: u64,
    conns: usize,
    warmup: Duration,
    dur: Duration,
) -> anyhow::Result<Latency> {
    let interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + dur;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let req = request(port);
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(8192);
            let mut lat: Vec<u32> = Vec::new();
            let mut errors = 0usize;
            let mut due = start + interval.mul_f64(c as f64 / conns as f64);
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let ok = s.write_all(&req).await.is_ok()
                    && matches!(read_message(&mut s, &mut buf).await, Ok(true))
                    && buf.starts_with(b"HTTP/1.1 200");
                let done = Instant::now();
                // From the send, not the due time: tokio's timer wakes up to ~1 ms late, which
                // is the client's lateness, not the proxy's. A send held back by the previous
                // answer on this connection (more than LATE past due) counts from the due time,
                // so a stalled proxy is not hidden (no coordinated omission).
                let from = if sent.duration_since(due) > LATE { due } else { sent };
                if due >= measure_from {
                    if ok {
                        lat.push(done.duration_since(from).as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    s = TcpStream::connect(("127.0.0.1", port)).await?;
                    s.set_nodelay(true)?;
                }
                due += interval;
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    Ok(Latency {
        requests: all.len(),
        errors,
        p50_us: pct(&all, 0.50),
        p99_us: pct(&all, 0.99),
        p999_us: pct(&all, 0.999),
    })
}

/// Closed loop for `dur`: requests completed.
async fn max_run(port: u16, conns: usize, dur: Duration) -> anyhow::Result<u64> {
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let req = request(port);
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(8192);
            let mut n = 0u64;
            while Instant::now() < end {
                let ok = s.write_all(&req).await.is_ok()
                    && matches!(read_message(&mut s, &mut buf).await, Ok(true));
                if ok {
                    n += 1;
                } else {
                    // The proxy closed the connection (a keep-alive limit): reconnect.
                    s = TcpStream::connect(("127.0.0.1", port)).await?;
                    s.set_nodelay(true)?;
                }
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

struct Proc {
    child: Child,
}

impl Proc {
    /// SIGTERM, then waits up to `within` for a graceful exit (a profiler writes its output
    /// at exit); past that, kills. Returns whether it exited by itself.
    fn stop(mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already reaped (after `stop`): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_clew(
    bin: &Path,
    wrapper: Option<&str>,
    dir: &Path,
    backend: u16,
    sink: u16,
) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            "service: {{name: bench-legacy}}\ningress:\n  endpoint: 127.0.0.1:{port}\n  upstream: {{endpoint: \"http://127.0.0.1:{backend}\"}}\n  routes: [\"/orders/{{id}}\"]\nexporters:\n  otlphttp: {{endpoint: \"http://127.0.0.1:{sink}\", compression: none}}\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("proxy.log"))?;
    let mut words = wrapper.unwrap_or("").split_whitespace();
    let mut cmd = match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(["proxy", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "clew proxy")?;
    Ok((Proc { child }, port))
}

fn start_nginx(bin: &Path, dir: &Path, backend: u16) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    // One worker, no master: one pid holds all of nginx's CPU. Upstream keep-alive and no
    // access log: the configuration a platform team would use for a sidecar.
    std::fs::write(
        &conf,
        format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream app {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#
        ),
    )?;
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "nginx")?;
    Ok((Proc { child }, port))
}

#[derive(serde::Serialize)]
struct Throughput {
    requests_per_second: f64,
    cpu_seconds: f64,
    requests_per_cpu_second: f64,
}

async fn throughput(
    p: &Proc,
    port: u16,
    conns: usize,
    dur: Duration,
) -> anyhow::Result<Throughput> {
    let before = ProcCpu::read(p.child.id())?;
    let n = max_run(port, conns, dur).await?;
    let after = ProcCpu::read(p.child.id())?;
    let cpu = after.cpu_seconds - before.cpu_seconds;
    Ok(Throughput {
        requests_per_second: n as f64 / dur.as_secs_f64(),
        cpu_seconds: cpu,
        requests_per_cpu_second: if cpu > 0.0 { n as f64 / cpu } else { f64::NAN },
    })
}

/// Closed loop: exactly `n` requests over `conns` connections (the remainder on the first
/// ones); every answer must be a 200.
async fn count_run(port: u16, conns: usize, n: u64) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    let conns = conns as u64;
    for c in 0..conns {
        let mine = n / conns + u64::from(c < n % conns);
        let req = request(port);
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(8192);
            for i in 0..mine {
                s.write_all(&req).await?;
                if !read_message(&mut s, &mut buf).await? || !buf.starts_with(b"HTTP/1.1 200") {
                    bail!("request {i} on connection {c}: no 200 answer");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// `--requests N`: N requests through `clew proxy` only, then a graceful stop.
async fn count_mode(
    a: &ProxyArgs,
    n: u64,
    work: &Path,
    backend: u16,
    sink: u16,
) -> anyhow::Result<()> {
    let (clew, port) = start_clew(&a.clew_bin, a.clew_wrapper.as_deref(), work, backend, sink)?;
    let t0 = Instant::now();
    count_run(port, a.connections, n).await?;
    let took = t0.elapsed();
    // Under valgrind the final span export and exit take seconds.
    let exited = tokio::task::spawn_blocking(move || clew.stop(Duration::from_secs(120))).await?;
    println!(
        "{n} requests over {} connections in {:.2} s; clew proxy {}",
        a.connections,
        took.as_secs_f64(),
        if exited {
            "exited"
        } else {
            "was killed (no graceful exit within 120 s)"
        }
    );
    Ok(())
}

pub async fn run(a: ProxyArgs) -> anyhow::Result<()> {
    if !a.clew_bin.exists() {
        bail!(
            "{} missing (fix: cargo build --release -p clew, or pass --clew-bin)",
            a.clew_bin.display()
        );
    }
    if a.rate == 0 || a.connections == 0 {
        bail!("--rate and --connections must be above 0");
    }
    crate::fresh_dir(&a.work_dir)?;
    let work = a.work_dir.canonicalize()?;
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    )
    .into_bytes();
    resp.extend(std::iter::repeat_n(b'y', BODY));
    let backend = raw_server(Arc::new(resp)).await?;
    let sink = raw_server(Arc::new(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    ))
    .await?;
    if let Some(n) = a.requests {
        let r = count_mode(&a, n, &work, backend, sink).await;
        std::fs::remove_dir_all(&work).ok();
        return r;
    }
    let (clew, clew_port) =
        start_clew(&a.clew_bin, a.clew_wrapper.as_deref(), &work, backend, sink)?;
    let nginx = if a.nginx_bin.exists() {
        Some(start_nginx(&a.nginx_bin, &work, backend)?)
    } else {
        eprintln!(
            "warning: {} missing: no nginx column (fix: `scripts/bench proxy` installs it, or apt-get install nginx)",
            a.nginx_bin.display()
        );
        None
    };
    let mut rows: Vec<(String, usize, Latency)> = Vec::new();
    for round in 0..a.rounds {
        let mut targets = vec![("direct", backend), ("clew", clew_port)];
        if let Some((_, p)) = &nginx {
            targets.push(("nginx", *p));
        }
        for (name, port) in targets {
            let l = latency_run(port, a.rate, a.connections, a.warmup, a.duration).await?;
            eprintln!(
                "round {round} {name:6}: {} req, {} errors, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
                l.requests, l.errors, l.p50_us, l.p99_us, l.p999_us
            );
            rows.push((name.to_string(), round, l));
        }
    }
    let clew_tp = throughput(&clew, clew_port, a.max_connections, a.max_duration).await?;
    eprintln!(
        "clew proxy : {:.0} req/s, {:.2} CPU-s, {:.0} req per CPU-second",
        clew_tp.requests_per_second, clew_tp.cpu_seconds, clew_tp.requests_per_cpu_second
    );
    let nginx_tp = match &nginx {
        Some((p, port)) => {
            let t = throughput(p, *port, a.max_connections, a.max_duration).await?;
            eprintln!(
                "nginx      : {:.0} req/s, {:.2} CPU-s, {:.0} req per CPU-second",
                t.requests_per_second, t.cpu_seconds, t.requests_per_cpu_second
            );
            Some(t)
        }
        None => None,
    };
    // Added latency: each proxy's percentile minus the direct path's, per round; the worst round.
    let mut summary = serde_json::Map::new();
    for name in ["clew", "nginx"] {
        let mut worst_p50: f64 = f64::NAN;
        let mut worst_p99: f64 = f64::NAN;
        for round in 0..a.rounds {
            let get = |n: &str| rows.iter().find(|r| r.0 == n && r.1 == round).map(|r| &r.2);
            if let (Some(d), Some(p)) = (get("direct"), get(name)) {
                worst_p50 = worst_p50.max(p.p50_us - d.p50_us);
                worst_p99 = worst_p99.max(p.p99_us - d.p99_us);
            }
        }
        if !worst_p99.is_nan() {
            println!(
                "{name}: added latency at {} req/s (worst round): p50 +{worst_p50:.0} µs, p99 +{worst_p99:.0} µs",
                a.rate
            );
            summary.insert(
                name.into(),
                serde_json::json!({"added_p50_us": worst_p50, "added_p99_us": worst_p99}),
            );
        }
    }
    println!(
        "throughput per CPU-second: clew proxy {:.0}{}",
        clew_tp.requests_per_cpu_second,
        nginx_tp
            .as_ref()
            .map(|t| format!(", nginx {:.0}", t.requests_per_cpu_second))
            .unwrap_or_default()
    );
    let report = serde_json::json!({
        "rate": a.rate,
        "connections": a.connections,
        "duration_s": a.duration.as_secs_f64(),
        "runs": rows.iter().map(|(n, r, l)| serde_json::json!({"target": n, "round": r, "latency": l})).collect::<Vec<_>>(),
        "added": summary,
        "throughput": {"clew": clew_tp, "nginx": nginx_tp},
    });
    crate::write_json(&a.json, report)?;
    drop(clew);
    drop(nginx);
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}
