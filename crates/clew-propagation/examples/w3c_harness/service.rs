//! The W3C harness service (shared by the `w3c_harness` example and `tests/w3c_harness.rs`).

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

/// The router: `POST /test`.
pub fn router() -> Result<Router, reqwest::Error> {
    let app = App {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?,
    };
    Ok(Router::new().route("/test", post(test)).with_state(app))
}

async fn test(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let p = CompositePropagator::w3c();
    let incoming = p.extract_new(&headers);
    // The server span: continue the incoming trace, or start a new one (tracestate dropped).
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
        // One client span per outgoing call: a new parent id each time.
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
