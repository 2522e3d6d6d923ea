//! `redaction-cost`: what the full `redaction` rule set costs Clew's ingest, measured from the
//! outside like everything else here. The same load runs against `clew serve` without any
//! processor and with the full rule set (every built-in pattern, blocked keys, a hashed custom
//! pattern, SQL literals, span names), alternating which goes first in each round so drift on a
//! shared machine hits both alike; server CPU comes from /proc. CPU per span is
//! 1 / (spans per CPU-second), so the extra cost is `plain / redaction - 1`.
//!
//! Each redaction run also reads `clew_redaction_values_total` from the server's `/metrics`,
//! so a run where the rules never fired (a config that did not load) cannot pass as cheap.

use crate::load::{self, Protocol};
use crate::proc_stat;
use crate::servers;
use crate::workload::Pool;
use crate::{fresh_dir, median, print_load, DriveArgs};
use anyhow::{bail, Context};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// `examples/config/redaction.yaml`'s `redaction/pii` processor (its other processors need
/// their own secrets and are not redaction), plus `span_names: true` so every rule kind runs.
const FULL_RULE_SET: &str = "processors:
  redaction/pii:
    allow_all_keys: true
    ignored_keys: [http.route, user.id]
    blocked_key_patterns: ['(?i)password|secret|token|authorization|api[_.-]?key|cookie']
    patterns: [email, credit_card, iban, phone, ipv4, ipv6, jwt, bearer_token, aws_access_key,
               gcp_api_key, github_token, slack_token, stripe_key, private_key, url_password]
    custom_patterns:
      - {name: customer_id, regex: 'CUST-[0-9]{8}', action: hash}
    hash_key_env: CLEW_REDACTION_KEY
    sql: true
    span_names: true
    summary: info
service:
  pipelines:
    traces:
      processors: [redaction/pii]
      exporters: [clew_store]
";

/// The HMAC key of the benchmark's server (a fixed bench value, not a secret).
const BENCH_KEY: (&str, &str) = (
    "CLEW_REDACTION_KEY",
    "clew-bench-redaction-key-0123456789abcdef",
);

pub struct RedactionCostArgs {
    pub clew_bin: PathBuf,
    pub rounds: usize,
    pub protocols: Vec<Protocol>,
    pub work_dir: PathBuf,
    pub drive: DriveArgs,
}

/// The sum of `clew_redaction_values_total` over all its label sets.
async fn redacted_values(query_addr: &str) -> anyhow::Result<f64> {
    let body = reqwest::get(format!("http://{query_addr}/metrics"))
        .await
        .context("GET /metrics")?
        .text()
        .await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("clew_redaction_values_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub async fn redaction_cost(
    args: RedactionCostArgs,
    pool: Arc<Pool>,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(&args.work_dir)?;
    let config = args.work_dir.join("redaction.yaml");
    std::fs::write(&config, FULL_RULE_SET)
        .with_context(|| format!("writing {}", config.display()))?;
    let load_before = proc_stat::load_average();
    println!("load average before: {load_before}");
    let mut runs = Vec::new();
    let mut summary = Vec::new();
    for &protocol in &args.protocols {
        let (mut plain_rates, mut redaction_rates) = (Vec::new(), Vec::new());
        // (spans, CPU-seconds) summed over every run of a mode: one noisy run moves this less
        // than it moves a median of three.
        let (mut plain_sum, mut redaction_sum) = ((0u64, 0.0f64), (0u64, 0.0f64));
        for round in 0..args.rounds {
            // Alternate which goes first so drift on a shared machine hits both alike.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for with_redaction in order {
                let name = if with_redaction { "redact" } else { "plain" };
                let log = args.work_dir.join(format!("clew-{name}.log"));
                let data = args.work_dir.join("clew-data");
                fresh_dir(&data)?;
                let server = if with_redaction {
                    servers::start_clew_env(
                        &args.clew_bin,
                        &data,
                        Some(&config),
                        &log,
                        &[BENCH_KEY],
                    )?
                } else {
                    servers::start_clew(&args.clew_bin, &data, None, &log)?
                };
                let endpoint = match protocol {
                    Protocol::Grpc => server.grpc.clone(),
                    Protocol::Http => server.http.clone(),
                };
                let spec = args.drive.spec(protocol, endpoint, Some(server.pid()));
                let r = load::run(spec, pool.clone()).await?;
                let redacted = match (&server.query, with_redaction) {
                    (Some(q), true) => Some(redacted_values(q).await?),
                    _ => None,
                };
                server.stop()?;
                print_load(name, &r);
                if r.requests_failed > 0 || r.spans_acked == 0 {
                    bail!(
                        "{name}: {} failed exports, {} spans acknowledged (see {})",
                        r.requests_failed,
                        r.spans_acked,
                        log.display()
                    );
                }
                if let Some(n) = redacted {
                    println!("       values changed by redaction rules: {n:.0}");
                    if n == 0.0 {
                        bail!(
                            "the redaction rules never fired: is the config loaded? (see {})",
                            log.display()
                        );
                    }
                }
                let per_cpu = r.spans_per_cpu_second.unwrap_or(0.0);
                let cpu = r.server_cpu_seconds.unwrap_or(0.0);
                let sum = if with_redaction {
                    redaction_rates.push(per_cpu);
                    &mut redaction_sum
                } else {
                    plain_rates.push(per_cpu);
                    &mut plain_sum
                };
                sum.0 += r.spans_acked;
                sum.1 += cpu;
                runs.push(
                    json!({"mode": name, "round": round, "redacted_values": redacted, "result": r}),
                );
            }
        }
        let (p, t) = (median(plain_rates), median(redaction_rates));
        let extra = if t > 0.0 { p / t - 1.0 } else { 0.0 };
        println!(
            "==> {protocol:?}: no processor {p:.0} vs full redaction {t:.0} spans per CPU-second (median of {}); redaction costs {:+.1} % CPU per span (target <= 20 %: {})",
            args.rounds,
            extra * 100.0,
            if extra <= 0.20 { "met" } else { "not met" }
        );
        let pooled = |(spans, cpu): (u64, f64)| if cpu > 0.0 { spans as f64 / cpu } else { 0.0 };
        let (pp, pt) = (pooled(plain_sum), pooled(redaction_sum));
        let pooled_extra = if pt > 0.0 { pp / pt - 1.0 } else { 0.0 };
        println!(
            "    pooled over all runs (all spans / all server CPU): {pp:.0} vs {pt:.0}, {:+.1} % CPU per span",
            pooled_extra * 100.0
        );
        summary.push(json!({
            "protocol": format!("{protocol:?}").to_lowercase(),
            "plain_spans_per_cpu_second": p,
            "redaction_spans_per_cpu_second": t,
            "redaction_extra_cpu_per_span": extra,
            "pooled_plain_spans_per_cpu_second": pp,
            "pooled_redaction_spans_per_cpu_second": pt,
            "pooled_redaction_extra_cpu_per_span": pooled_extra,
        }));
    }
    let load_after = proc_stat::load_average();
    println!("load average after: {load_after}");
    Ok(json!({
        "summary": summary,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "runs": runs,
    }))
}
