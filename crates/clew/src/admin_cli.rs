//! `clew erase` and `clew hold`: thin clients of the administrative API (`admin.rs`) of a running
//! Clew, so every change goes through the server's tenant gate and lands in its audit log.

use crate::cli::QueryTarget;
use anyhow::{bail, Context};
use reqwest::Method;

/// Where the admin commands send their requests. Like [`QueryTarget`], but the URL is `--url`:
/// `clew erase --query` is the erase filter.
#[derive(Debug, clap::Args)]
pub struct AdminTarget {
    /// Base URL of Clew's query API.
    #[arg(long, default_value = "http://127.0.0.1:16686", env = "CLEW_QUERY_URL")]
    pub url: String,
    /// Tenant to act on (sent as the tenant header; with auth, one the token may use).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Tenant header name.
    #[arg(long, default_value = "X-Scope-OrgID")]
    pub tenant_header: String,
    /// Bearer token, when the query port has `auth:`.
    #[arg(long, env = "CLEW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls_args::ClientTlsArgs,
}

impl AdminTarget {
    fn query_target(&self) -> QueryTarget {
        QueryTarget {
            query: self.url.clone(),
            tenant: self.tenant.clone(),
            tenant_header: self.tenant_header.clone(),
            token: self.token.clone(),
            tls: self.tls.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// Trace ids to erase (hex).
    #[arg(
        long = "trace-id",
        value_name = "ID",
        conflicts_with = "query",
        required_unless_present = "query"
    )]
    pub trace_ids: Vec<String>,
    /// Erase every trace with a span matching all `key=value` pairs (span or resource
    /// attributes), e.g. 'user.id=42'.
    #[arg(long)]
    pub query: Option<String>,
    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    #[command(subcommand)]
    pub command: HoldCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum HoldCommand {
    /// Hold the tenant (`--tenant`), or one trace of it with `--trace-id`.
    Add {
        #[arg(long = "trace-id", value_name = "ID")]
        trace_id: Option<String>,
        /// Why (recorded with the hold and in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Release a hold.
    Release {
        #[arg(long = "trace-id", value_name = "ID")]
        trace_id: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List the tenant's holds.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
}

pub async fn call(
    target: &AdminTarget,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let target = target.query_target();
    let client = target.client()?;
    let mut req = target.request(&client, method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach Clew at {}", target.query))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = value
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or(text);
        bail!("{status}: {msg}");
    }
    Ok(value)
}

pub async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let body = match &args.query {
        Some(q) => serde_json::json!({ "query": q }),
        None => serde_json::json!({ "trace_ids": args.trace_ids }),
    };
    let r = call(&args.target, Method::POST, "/api/admin/erase", Some(body)).await?;
    println!(
        "erased {} trace(s): {} span(s) from blocks, {} from the head; {} block(s) rewritten, {} deleted",
        r["traces"], r["block_spans"], r["head_spans"], r["blocks_rewritten"], r["blocks_deleted"]
    );
    if let Some(held) = r["held"].as_array().filter(|h| !h.is_empty()) {
        println!(
            "kept {} trace(s) under legal hold: {}",
            held.len(),
            held.iter()
                .filter_map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

pub async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    let path = |trace_id: &Option<String>| match trace_id {
        Some(id) => format!("/api/admin/holds/traces/{id}"),
        None => "/api/admin/holds/tenant".to_string(),
    };
    match args.command {
        HoldCommand::Add {
            trace_id,
            reason,
            target,
        } => {
            let r = call(
                &target,
                Method::PUT,
                &path(&trace_id),
                Some(serde_json::json!({ "reason": reason })),
            )
            .await?;
            let what = trace_id.map_or("tenant".to_string(), |id| format!("trace {id}"));
            if r["changed"] == true {
                println!("hold added on {what}");
            } else {
                println!("{what} was already held");
            }
        }
        HoldCommand::Release { trace_id, target } => {
            let r = call(&target, Method::DELETE, &path(&trace_id), None).await?;
            let what = trace_id.map_or("tenant".to_string(), |id| format!("trace {id}"));
            if r["changed"] == true {
                println!("hold released on {what}");
            } else {
                println!("{what} was not held");
            }
        }
        HoldCommand::List { target } => {
            let r = call(&target, Method::GET, "/api/admin/holds", None).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
    }
    Ok(())
}
