//! # clew-ui — the UI room
//!
//! The web UI served next to the Jaeger API on the query port. Assets are plain files under
//! `assets/`, embedded into the binary at compile time (no CDN, no network at runtime).
//!
//! May depend on: HTTP crates only. Talks to the rest of Clew exclusively through the public HTTP
//! APIs (Jaeger `/api/...`, `/api/v3/...`, `/api/doctor/...`) from the browser.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Routes of the UI: `/`, `/search`, `/trace/{id}`, `/compare`, `/graph` and static assets.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/search", get(|| async { Html(INDEX_HTML) }))
}
