//! Grafana Tempo's search parameters: `/api/search?q=…&tags=<logfmt>&minDuration=…&start=…` as
//! the handler reads them (`clew_query::tempo::search_request`), the logfmt `tags` parser, the
//! tag references of `/api/v2/search/tag/{tag}/values`, and `pinned_service`. Errors are fine,
//! panics are not. The TraceQL Clew writes for a tag search must parse: a tag value is user text
//! and has to come out as a string literal, never as query syntax.
#![no_main]

use clew_query::params::QueryParams;
use clew_query::tempo::{self, params};
use clew_query::MAX_TRACES_PER_SEARCH;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let q = QueryParams::parse(Some(text));
    if let Ok(req) = tempo::search_request(&q) {
        assert!((1..=MAX_TRACES_PER_SEARCH).contains(&req.limit));
        assert!(req.spans_per_spanset >= 1);
        if let (Some(s), Some(e)) = (req.start_unix_nano, req.end_unix_nano) {
            assert!(s <= e);
        }
        // Without `q`, the query is Clew's own translation of `tags`/durations.
        if q.get("q")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .is_none()
        {
            if let Err(e) = clew_traceql::parse(&req.query) {
                panic!("generated TraceQL {:?} does not parse: {e}", req.query);
            }
        }
    }
    // The raw text as a `tags` value.
    if let Ok(tags) = params::parse_logfmt(text) {
        let query = params::tags_to_traceql(&tags, Some(1), Some(i64::MAX as u64));
        if let Err(e) = clew_traceql::parse(&query) {
            panic!("generated TraceQL {query:?} does not parse: {e}");
        }
    }
    let literal = format!("{{ .k = {} }}", params::traceql_string(text));
    if let Err(e) = clew_traceql::parse(&literal) {
        panic!("string literal {literal:?} does not parse: {e}");
    }
    let _ = params::pinned_service(text);
    let _ = tempo::parse_tag_ref(text);
});
