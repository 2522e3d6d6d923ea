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
//! `tracestate`. Baggage is propagated too. It listens only on loopback addresses.

use std::net::SocketAddr;

mod service;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".to_string())
        .parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("refusing to listen on non-loopback address {addr}").into());
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("w3c_harness listening on http://{addr}/test");
    axum::serve(listener, service::router()?).await?;
    Ok(())
}
