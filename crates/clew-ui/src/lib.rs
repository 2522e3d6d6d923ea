//! # clew-ui — the UI room
//!
//! The web UI served next to the Jaeger API on the query port: search, trace waterfall (virtualized,
//! critical path, find, warnings, statistics) and flame graph, structural trace comparison, the
//! service graph, the Monitor page (per-service/operation RED metrics from `/api/metrics/*`) and the
//! Doctor page (`/api/doctor/findings`).
//!
//! **There is no build step.** The UI is plain hand-written ES modules, CSS and HTML under
//! `assets/`; those files *are* what the binary serves. They are embedded at compile time with
//! `include_bytes!` into a static table (path → content type, bytes, ETag), so `cargo build` alone
//! gives a working UI, nothing is fetched from a CDN or the network at runtime, and there is no
//! generated bundle that could drift from the sources. To change the UI, edit a file under
//! `assets/` and rebuild; a new file must also be added to [`ASSETS`] (a unit test fails otherwise).
//!
//! Responses carry a strong `ETag` (FNV-1a hash of the content, computed at compile time) and
//! `Cache-Control: no-cache`, so browsers revalidate cheaply (`304 Not Modified`) and never run a
//! stale UI against a newer server.
//!
//! May depend on: HTTP crates only. Talks to the rest of Clew exclusively through the public HTTP
//! APIs (Jaeger `/api/...`, `/api/v3/...`, `/api/doctor/...`) from the browser.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path relative to `assets/` (`index.html`, `static/app.css`, ...).
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// Strong ETag (quoted), from the content hash.
    pub etag: &'static str,
}

/// FNV-1a, 64 bit; `const` so that ETags cost nothing at runtime.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, built at compile time.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    let h = fnv1a(bytes);
    let hex = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = hex[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {{
        const BYTES: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path));
        const TAG: [u8; 18] = etag_bytes(BYTES);
        Asset {
            path: $path,
            content_type: $ct,
            bytes: BYTES,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("etag is ascii"),
            },
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the UI serves. `index.html` is served for the page routes; the rest under `/static/`.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("static/app.css", "text/css; charset=utf-8"),
    asset!("static/favicon.svg", "image/svg+xml"),
    asset!("static/js/main.js", JS),
    asset!("static/js/util.js", JS),
    asset!("static/js/model.js", JS),
    asset!("static/js/search.js", JS),
    asset!("static/js/traceql.js", JS),
    asset!("static/js/trace.js", JS),
    asset!("static/js/compare.js", JS),
    asset!("static/js/graph.js", JS),
    asset!("static/js/doctor.js", JS),
    asset!("static/js/monitor.js", JS),
    asset!("static/js/flame.js", JS),
];

/// The embedded asset at `path` (relative to `assets/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_static(asset.etag);
    let cache = HeaderValue::from_static("no-cache");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    match asset("index.html") {
        Some(a) => serve(a, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn index_with_id(_id: Path<String>, headers: HeaderMap) -> Response {
    index(headers).await
}

async fn static_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match asset(&format!("static/{path}")) {
        Some(a) => serve(a, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such UI asset",
        )
            .into_response(),
    }
}

/// Routes of the UI: `/`, `/search`, `/trace/{id}`, `/compare`, `/graph`, `/doctor`, `/monitor` (all the single-page app's
/// `index.html`) and `/static/{*path}` (embedded assets). Nothing under `/api`, `/metrics`, `/ready`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/search", get(index))
        .route("/trace/{id}", get(index_with_id))
        .route("/compare", get(index))
        .route("/graph", get(index))
        .route("/doctor", get(index))
        .route("/monitor", get(index))
        .route("/static/{*path}", get(static_file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    async fn get(uri: &str, inm: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().uri(uri);
        if let Some(tag) = inm {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = router()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, body.to_vec())
    }

    /// `/static/...` references in HTML/CSS (`src=`, `href=`) and relative ES module imports.
    fn references(asset: &Asset) -> Vec<String> {
        let text = std::str::from_utf8(asset.bytes).expect("text asset");
        let mut out = Vec::new();
        for quote in ['"', '\''] {
            for part in text.split(quote).skip(1).step_by(2) {
                if part.starts_with("/static/")
                    && !part.contains(' ')
                    && part.rsplit('/').next().is_some_and(|f| f.contains('.'))
                {
                    out.push(part.trim_start_matches('/').to_string());
                } else if asset.path.ends_with(".js")
                    && part.starts_with("./")
                    && part.ends_with(".js")
                {
                    let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
                    out.push(format!("{dir}/{}", &part[2..]));
                }
            }
        }
        out
    }

    #[test]
    fn etags_are_content_hashes() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let tags: BTreeSet<_> = ASSETS.iter().map(|a| a.etag).collect();
        assert_eq!(tags.len(), ASSETS.len(), "distinct contents, distinct tags");
        for a in ASSETS {
            assert_eq!(a.etag.len(), 18);
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        }
    }

    #[test]
    fn every_file_under_assets_is_embedded_and_vice_versa() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut BTreeSet<String>) {
            for e in std::fs::read_dir(dir).expect("assets dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    let rel = p.strip_prefix(base).expect("under base");
                    out.insert(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = BTreeSet::new();
        walk(&base, &base, &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        assert_eq!(on_disk, embedded, "add new asset files to ASSETS");
    }

    #[tokio::test]
    async fn every_referenced_asset_is_embedded_and_served_with_its_type() {
        let index = asset("index.html").expect("index embedded");
        let mut todo: Vec<String> = references(index);
        assert!(
            todo.iter().any(|p| p.ends_with(".js")) && todo.iter().any(|p| p.ends_with(".css")),
            "index.html references a script and a stylesheet: {todo:?}"
        );
        let mut seen = BTreeSet::new();
        while let Some(path) = todo.pop() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let a = asset(&path).unwrap_or_else(|| panic!("{path} is referenced but not embedded"));
            let (status, headers, body) = get(&format!("/{path}"), None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], a.content_type, "{path}");
            let expected = match path.rsplit_once('.').map(|(_, e)| e) {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                Some("svg") => "image/svg+xml",
                other => panic!("unexpected extension {other:?}"),
            };
            assert!(a.content_type.starts_with(expected), "{path}");
            assert_eq!(body, a.bytes, "{path}");
            assert_eq!(headers[header::ETAG], a.etag);
            todo.extend(references(a));
        }
        // main.js pulls in every page module.
        for m in [
            "search.js",
            "trace.js",
            "compare.js",
            "graph.js",
            "model.js",
            "util.js",
        ] {
            assert!(
                seen.contains(&format!("static/js/{m}")),
                "{m} not reachable: {seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn page_routes_serve_index_and_revalidate() {
        let index = asset("index.html").expect("index");
        for uri in [
            "/",
            "/search?service=a",
            "/trace/0123abcd",
            "/compare?a=1&b=2",
            "/graph",
        ] {
            let (status, headers, body) = get(uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            assert_eq!(body, index.bytes);
        }
        let (status, headers, body) = get("/", Some(index.etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[header::ETAG], index.etag);
        assert!(body.is_empty());
        let (status, _, _) = get("/static/js/main.js", Some("\"0000000000000000\"")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = get("/static/nope.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get("/api/services", None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "the UI owns nothing under /api"
        );
    }
}
