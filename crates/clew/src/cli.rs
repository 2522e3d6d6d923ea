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

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
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
