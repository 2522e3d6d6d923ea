//! W3C Trace Context test-suite service.
//!
//! ```text
//! cargo run --release -p clew-propagation --example w3c_harness -- 127.0.0.1:PORT
//! ```
//!
//! Accepts `POST /test` with a JSON array of `{"url": ..., "arguments": ...}`. For each element it
//! POSTs `arguments` (as JSON) to `url`, carrying the context propagated from the incoming request:
//! same trace id, a new parent id per outgoing call, flags (incl. the Level 2 random flag) and
//! `tracestate` per the spec. An invalid or missing `traceparent` starts a new trace and drops
//! `tracestate`. Baggage is propagated too. Only loopback addresses are accepted for listening.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use clew_propagation::{CompositePropagator, Context, Propagator, SpanContext};
use serde_json::{json, Value};

#[derive(Clone)]
struct App {
    client: reqwest::Client,
}

fn propagator() -> CompositePropagator {
    CompositePropagator::w3c()
}

async fn test(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let p = propagator();
    let incoming = p.extract_new(&headers);
    // The server span: continue the incoming trace, or start a new one.
    let server = match &incoming.span {
        Some(remote) => remote.child(),
        None => SpanContext::new_root(false),
    };
    let actions = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(a)) => a,
        Ok(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    let mut results = Vec::new();
    for action in actions {
        let Some(url) = action.get("url").and_then(Value::as_str) else {
            results.push(json!({"error": "missing url"}));
            continue;
        };
        let arguments = action.get("arguments").cloned().unwrap_or(Value::Null);
        // One client span per outgoing call: new parent id each time.
        let cx = Context {
            span: Some(server.child()),
            baggage: incoming.baggage.clone(),
            sampling: None,
        };
        let mut out = HeaderMap::new();
        p.inject(&cx, &mut out);
        let res = app
            .client
            .post(url)
            .headers(out)
            .json(&arguments)
            .send()
            .await;
        results.push(match res {
            Ok(r) => json!({"url": url, "status": r.status().as_u16()}),
            Err(e) => json!({"url": url, "error": e.to_string()}),
        });
    }
    Json(json!({"results": results}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".to_string())
        .parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("refusing to listen on non-loopback address {addr}").into());
    }
    let app = App {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?,
    };
    let router = Router::new().route("/test", post(test)).with_state(app);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("w3c_harness listening on http://{addr}/test");
    axum::serve(listener, router).await?;
    Ok(())
}
