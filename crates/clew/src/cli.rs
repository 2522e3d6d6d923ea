//! Client subcommands that talk to a running Clew over its query API: `clew trace`, `clew search`.

use anyhow::{bail, Context};
use clew_model::flat::flatten;
use clew_model::otlp_json;

#[derive(Debug, clap::Args)]
pub struct QueryTarget {
    /// Base URL of Clew's query API.
    #[arg(long, default_value = "http://127.0.0.1:16686", env = "CLEW_QUERY_URL")]
    pub query: String,
    /// Tenant to query (sent as the tenant header).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Tenant header name.
    #[arg(long, default_value = "X-Scope-OrgID")]
    pub tenant_header: String,
    /// Bearer token, when the query port has `auth: {bearer_tokens: ...}` or OIDC.
    #[arg(long, env = "CLEW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls_args::ClientTlsArgs,
}

impl QueryTarget {
    /// An HTTP client for the query URL (`https://` with the TLS flags).
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        self.tls.http_client(&self.query)
    }

    fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.request(client, reqwest::Method::GET, path)
    }

    /// A request to `path` on the query API with the tenant header and the token.
    pub fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let mut req = client.request(
            method,
            format!("{}{}", self.query.trim_end_matches('/'), path),
        );
        if let Some(t) = &self.tenant {
            req = req.header(self.tenant_header.as_str(), t);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Trace id (hex, up to 32 characters).
    pub trace_id: String,
    #[command(flatten)]
    pub target: QueryTarget,
}

pub async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let resp = args
        .target
        .get(&client, &format!("/api/v3/traces/{}", args.trace_id))
        .send()
        .await
        .with_context(|| format!("cannot reach Clew at {}", args.target.query))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        bail!("trace {} not found", args.trace_id);
    }
    if !status.is_success() {
        bail!(
            "query failed ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).context("the server's answer is not JSON")?;
    let result = value
        .get("result")
        .context("the server's answer has no `result`")?;
    let req = otlp_json::decode_request(result.to_string().as_bytes())
        .context("the server's trace is not OTLP JSON")?;
    let spans = flatten(req.resource_spans);
    print!("{}", clew_query::render_trace_tree(&spans));
    Ok(())
}

/// `clew search -q`: a TraceQL search through the Tempo API, one line per matching trace.
async fn search_traceql(args: &SearchArgs, traceql: &str) -> anyhow::Result<()> {
    let since = humantime::parse_duration(&args.since)
        .with_context(|| format!("--since {:?}", args.since))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    // Tempo takes start and end in Unix seconds.
    let end = now.as_secs() + 1;
    let start = now.saturating_sub(since).as_secs();
    let params = [
        ("q", traceql.to_string()),
        ("limit", args.limit.to_string()),
        ("start", start.to_string()),
        ("end", end.to_string()),
    ];
    let client = args.target.client()?;
    let resp = args
        .target
        .get(&client, "/tempo/api/search")
        .query(&params)
        .send()
        .await
        .with_context(|| format!("cannot reach Clew at {}", args.target.query))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        // Tempo answers errors as plain text; accept a JSON `{"error": …}` as well.
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("error")
                    .or_else(|| v.get("message"))
                    .and_then(|m| m.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| text.trim().to_string());
        if status == reqwest::StatusCode::BAD_REQUEST {
            bail!("{message}");
        }
        bail!("search failed ({status}): {message}");
    }
    let body: serde_json::Value =
        serde_json::from_slice(&body).context("the server's answer is not JSON")?;
    let traces = body["traces"].as_array().cloned().unwrap_or_default();
    if traces.is_empty() {
        println!("no traces found");
        return Ok(());
    }
    println!(
        "{:<32}  {:<20}  {:<30}  {:<24}  {:>10}  {:>7}",
        "TRACE ID", "ROOT SERVICE", "ROOT NAME", "START", "DURATION", "MATCHED"
    );
    for t in traces {
        // Tempo sends startTimeUnixNano as a string; accept a number too.
        let start_nanos = match &t["startTimeUnixNano"] {
            serde_json::Value::String(s) => s.parse::<u64>().unwrap_or(0),
            v => v.as_u64().unwrap_or(0),
        };
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(start_nanos);
        let duration_ms = t["durationMs"].as_u64().unwrap_or(0);
        let sets = t["spanSets"]
            .as_array()
            .cloned()
            .or_else(|| t.get("spanSet").map(|s| vec![s.clone()]))
            .unwrap_or_default();
        let matched: u64 = sets.iter().filter_map(|s| s["matched"].as_u64()).sum();
        println!(
            "{:<32}  {:<20}  {:<30}  {:<24}  {:>10}  {:>7}",
            t["traceID"].as_str().unwrap_or("?"),
            t["rootServiceName"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(20)
                .collect::<String>(),
            t["rootTraceName"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(30)
                .collect::<String>(),
            humantime::format_rfc3339_millis(start).to_string(),
            clew_query::format_duration_nanos(duration_ms.saturating_mul(1_000_000)),
            matched
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// A TraceQL query, e.g. `{ resource.service.name = "cart" && status = error }`, run by the
    /// server's Tempo API (`/tempo/api/search` on the query port). The long form is `--traceql`
    /// because `--query` is the query API's URL, as in every other client subcommand.
    #[arg(short = 'q', long = "traceql", value_name = "TRACEQL",
          conflicts_with_all = ["service", "operation", "attrs", "min_duration", "max_duration"])]
    pub traceql: Option<String>,
    #[arg(long)]
    pub service: Option<String>,
    /// Span name.
    #[arg(long)]
    pub operation: Option<String>,
    /// Attribute equality, `key=value` (repeatable; all must match one span).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// e.g. 100ms, 1.5s
    #[arg(long)]
    pub min_duration: Option<String>,
    #[arg(long)]
    pub max_duration: Option<String>,
    /// How far back to look, e.g. 1h, 2d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub target: QueryTarget,
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    if let Some(q) = &args.traceql {
        return search_traceql(&args, q).await;
    }
    let mut params: Vec<(String, String)> = Vec::new();
    if let Some(s) = &args.service {
        params.push(("service".into(), s.clone()));
    }
    if let Some(o) = &args.operation {
        params.push(("operation".into(), o.clone()));
    }
    let mut tags = serde_json::Map::new();
    for a in &args.attrs {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--attr {a:?}: expected KEY=VALUE"))?;
        tags.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    if !tags.is_empty() {
        params.push(("tags".into(), serde_json::Value::Object(tags).to_string()));
    }
    if let Some(d) = &args.min_duration {
        params.push(("minDuration".into(), d.clone()));
    }
    if let Some(d) = &args.max_duration {
        params.push(("maxDuration".into(), d.clone()));
    }
    let since = humantime::parse_duration(&args.since)
        .with_context(|| format!("--since {:?}", args.since))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    params.push((
        "start".into(),
        (now.saturating_sub(since).as_micros()).to_string(),
    ));
    params.push(("end".into(), now.as_micros().to_string()));
    params.push(("limit".into(), args.limit.to_string()));

    let client = args.target.client()?;
    let resp = args
        .target
        .get(&client, "/api/traces")
        .query(&params)
        .send()
        .await
        .with_context(|| format!("cannot reach Clew at {}", args.target.query))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if !status.is_success() {
        bail!("search failed ({status}): {}", body["errors"]);
    }
    let traces = body["data"].as_array().cloned().unwrap_or_default();
    if traces.is_empty() {
        println!("no traces found");
        return Ok(());
    }
    println!(
        "{:<32}  {:<40}  {:>10}  {:>5}  {:>6}",
        "TRACE ID", "ROOT", "DURATION", "SPANS", "ERRORS"
    );
    for t in traces {
        let spans = t["spans"].as_array().cloned().unwrap_or_default();
        let start = spans
            .iter()
            .filter_map(|s| s["startTime"].as_u64())
            .min()
            .unwrap_or(0);
        let end = spans
            .iter()
            .filter_map(|s| Some(s["startTime"].as_u64()? + s["duration"].as_u64()?))
            .max()
            .unwrap_or(start);
        let root = spans
            .iter()
            .find(|s| s["references"].as_array().is_none_or(|r| r.is_empty()))
            .or(spans.first());
        let root_name = root
            .map(|r| {
                let svc = t["processes"][r["processID"].as_str().unwrap_or("")]["serviceName"]
                    .as_str()
                    .unwrap_or("?");
                format!("{svc}: {}", r["operationName"].as_str().unwrap_or("?"))
            })
            .unwrap_or_default();
        let errors = spans
            .iter()
            .filter(|s| {
                s["tags"].as_array().is_some_and(|tags| {
                    tags.iter()
                        .any(|tg| tg["key"] == "error" && tg["value"] == true)
                })
            })
            .count();
        println!(
            "{:<32}  {:<40}  {:>10}  {:>5}  {:>6}",
            t["traceID"].as_str().unwrap_or("?"),
            root_name.chars().take(40).collect::<String>(),
            clew_query::format_duration_nanos(end.saturating_sub(start) * 1000),
            spans.len(),
            errors
        );
    }
    Ok(())
}
