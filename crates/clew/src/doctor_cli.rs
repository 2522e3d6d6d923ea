//! `clew doctor`: asks a running Clew what silently breaks its traces (`/api/doctor/findings`).

use anyhow::{bail, Context};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// How far back to look, e.g. 15m, 1h, 2d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Base URL of Clew's query API.
    #[arg(
        long,
        visible_alias = "query",
        default_value = "http://127.0.0.1:16686",
        env = "CLEW_QUERY_URL"
    )]
    pub endpoint: String,
    /// Tenant to examine (sent as the tenant header).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Tenant header name.
    #[arg(long, default_value = "X-Scope-OrgID")]
    pub tenant_header: String,
    /// Maximum number of traces to examine (server default 2000).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Traces with a span newer than this are not judged yet (server default 30s).
    #[arg(long)]
    pub grace: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls_args::ClientTlsArgs,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    humantime::parse_duration(&args.since).with_context(|| format!("--since {:?}", args.since))?;
    if let Some(g) = &args.grace {
        humantime::parse_duration(g).with_context(|| format!("--grace {g:?}"))?;
    }
    let mut params: Vec<(&str, String)> = vec![("since", args.since.clone())];
    if let Some(l) = args.limit {
        params.push(("limit", l.to_string()));
    }
    if let Some(g) = &args.grace {
        params.push(("grace", g.clone()));
    }
    let client = args.tls.http_client(&args.endpoint)?;
    let mut req = client
        .get(format!(
            "{}/api/doctor/findings",
            args.endpoint.trim_end_matches('/')
        ))
        .query(&params);
    if let Some(t) = &args.tenant {
        req = req.header(args.tenant_header.as_str(), t);
    }
    let started = Instant::now();
    let send = req.send();
    tokio::pin!(send);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let resp = loop {
        tokio::select! {
            r = &mut send => break r,
            _ = tick.tick() => eprintln!(
                "clew doctor: still examining traces of the last {} ({}s)...",
                args.since,
                started.elapsed().as_secs()
            ),
        }
    }
    .with_context(|| format!("cannot reach Clew at {}", args.endpoint))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "doctor query failed ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&body).context("the server's answer is not JSON")?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", render_text(&report, &args.since)),
    }
    Ok(())
}

fn render_text(report: &serde_json::Value, since: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let examined = report["traces_examined"].as_u64().unwrap_or(0);
    let recent = report["traces_too_recent"].as_u64().unwrap_or(0);
    let in_window = report["traces_in_window"].as_u64().unwrap_or(examined);
    let coverage = report["coverage"].as_f64().unwrap_or(1.0);
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "examined {examined} of ~{in_window} traces of the last {since} ({:.1}% coverage){}",
        coverage * 100.0,
        if recent > 0 {
            format!(", {recent} still receiving spans")
        } else {
            String::new()
        }
    );
    if findings.is_empty() {
        let _ = writeln!(out, "no problems found");
        return out;
    }
    let _ = writeln!(out, "{} problem(s):", findings.len());
    for f in findings {
        let _ = writeln!(
            out,
            "\n* [{}] {}",
            f["kind"].as_str().unwrap_or("?"),
            f["message"].as_str().unwrap_or("")
        );
        let examples: Vec<&str> = f["example_trace_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if !examples.is_empty() {
            let _ = writeln!(out, "  example traces: {}", examples.join(", "));
        }
        let new: Vec<&str> = f["example_new_trace_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if !new.is_empty() {
            let _ = writeln!(
                out,
                "  traces started without the context: {}",
                new.join(", ")
            );
        }
        if let Some(r) = f["remedy"].as_str().filter(|r| !r.is_empty()) {
            let _ = writeln!(out, "  what to do: {r}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rendering() {
        let r = serde_json::json!({"findings": [{"kind": "context_lost_between_services", "message": "context lost from a to b on GET /x: 2 occurrences", "example_trace_ids": ["ab"], "example_new_trace_ids": ["cd"], "remedy": "inject traceparent"}], "traces_examined": 7, "traces_in_window": 28, "coverage": 0.25});
        let t = render_text(&r, "1h");
        assert!(
            t.starts_with(
                "examined 7 of ~28 traces of the last 1h (25.0% coverage)\n1 problem(s):"
            ),
            "{t}"
        );
        assert!(t.contains("what to do: inject traceparent"), "{t}");
        assert!(t.contains("* [context_lost_between_services] context lost from a to b on GET /x"));
        assert!(t.contains("example traces: ab"));
        let empty = render_text(
            &serde_json::json!({"findings": [], "traces_examined": 0}),
            "5m",
        );
        assert!(empty.contains("no problems found"));
    }
}
