//! The compact trace shape the embedded web UI loads (`/api/ui/traces/{id}`): the same content as
//! the Jaeger JSON of [`crate::jaeger_json::to_jaeger_trace_with_warnings`] (doctor warnings and
//! clock-skew adjustment included), but with repeated strings interned and spans as arrays, so a
//! 50,000-span trace is ~5× smaller and much cheaper for the browser to parse.
//!
//! ```text
//! {
//!   "v": 1, "traceID": "...", "base": <µs since epoch, earliest span start>,
//!   "warnings": null | ["..."],
//!   "processes": [[service (string index), tags], ...],
//!   "spans": [[spanID, parent, process index, operation (string index), start - base (µs),
//!              duration (µs), tags, logs?, warnings?, links?], ...],
//!   "strings": ["...", ...]
//! }
//! ```
//!
//! * `parent`: `-1` for a span without parent, the index in `spans` of the parent (its first
//!   occurrence) when it is in the trace, else the parent span id as a string.
//! * `tags` (and log fields): a flat array `[k, v, k, v, ...]`; `k >= 0` → key `strings[k]` and a
//!   string value `strings[v]`; `k < 0` → key `strings[-k - 1]` and `v` the JSON value itself
//!   (number, boolean). Tag types are not carried (the UI shows values only).
//! * trailing optional fields: `logs` = `[[timestamp - base, fields], ...]`, `warnings` =
//!   `["..."]`, `links` = `[[traceID, spanID, refType], ...]` (every reference but the parent);
//!   `0` where an earlier one is empty and a later one is not.

use crate::jaeger_json::{RefType, Tag, Trace};
use serde_json::Value as J;
use std::collections::HashMap;
use std::io::Write;

struct Interner<'a> {
    index: HashMap<&'a str, u32>,
    list: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn new() -> Self {
        Self {
            index: HashMap::with_capacity(1024),
            list: Vec::with_capacity(1024),
        }
    }

    fn get(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.index.insert(s, i);
        self.list.push(s);
        i
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_tags<'a>(out: &mut Vec<u8>, tags: &'a [Tag], strings: &mut Interner<'a>) {
    out.push(b'[');
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let k = i64::from(strings.get(&t.key));
        match &t.value {
            J::String(s) => {
                let v = strings.get(s);
                let _ = write!(out, "{k},{v}");
            }
            other => {
                let _ = write!(out, "{},", -k - 1);
                let _ = serde_json::to_writer(&mut *out, other);
            }
        }
    }
    out.push(b']');
}

/// Renders `trace` (as served by the Jaeger API) in the compact UI shape described above.
pub fn to_ui_json(trace: &Trace) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + trace.spans.len() * 120);
    let mut strings = Interner::new();
    let base = trace.spans.iter().map(|s| s.start_time).min().unwrap_or(0);
    out.extend_from_slice(b"{\"v\":1,\"traceID\":");
    json_str(&mut out, &trace.trace_id);
    let _ = write!(out, ",\"base\":{base},\"warnings\":");
    let _ = serde_json::to_writer(&mut out, &trace.warnings);

    // Processes in the order of their ids' numbers (p1, p2, ...), whatever their sort order.
    let mut procs: Vec<(&String, &crate::jaeger_json::Process)> = trace.processes.iter().collect();
    procs.sort_by_key(|(id, _)| {
        id.strip_prefix('p')
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let mut proc_index: HashMap<&str, usize> = HashMap::with_capacity(procs.len());
    out.extend_from_slice(b",\"processes\":[");
    for (i, (id, p)) in procs.iter().enumerate() {
        proc_index.insert(id.as_str(), i);
        if i > 0 {
            out.push(b',');
        }
        let svc = strings.get(&p.service_name);
        let _ = write!(out, "[{svc},");
        write_tags(&mut out, &p.tags, &mut strings);
        out.push(b']');
    }
    out.push(b']');

    let mut first: HashMap<&str, usize> = HashMap::with_capacity(trace.spans.len());
    for (i, s) in trace.spans.iter().enumerate() {
        first.entry(s.span_id.as_str()).or_insert(i);
    }

    out.extend_from_slice(b",\"spans\":[");
    for (i, s) in trace.spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        json_str(&mut out, &s.span_id);
        out.push(b',');
        // The parent: the first CHILD_OF reference of the same trace, as the UI has always read it.
        let parent = s
            .references
            .iter()
            .position(|r| r.ref_type == RefType::ChildOf && r.trace_id == s.trace_id);
        match parent {
            None => out.extend_from_slice(b"-1"),
            Some(pi) => {
                let pid = s.references[pi].span_id.as_str();
                match first.get(pid) {
                    Some(&idx) => {
                        let _ = write!(out, "{idx}");
                    }
                    None => json_str(&mut out, pid),
                }
            }
        }
        let proc = proc_index
            .get(s.process_id.as_str())
            .copied()
            .map_or(-1, |p| p as i64);
        let op = strings.get(&s.operation_name);
        let _ = write!(
            out,
            ",{proc},{op},{},{},",
            s.start_time.saturating_sub(base),
            s.duration
        );
        write_tags(&mut out, &s.tags, &mut strings);

        let warnings = s.warnings.as_ref().filter(|w| !w.is_empty());
        let links = s
            .references
            .iter()
            .enumerate()
            .filter(|(ri, _)| Some(*ri) != parent)
            .map(|(_, r)| r);
        let has_links = s.references.len() > usize::from(parent.is_some());
        let n_extra = if has_links {
            3
        } else if warnings.is_some() {
            2
        } else if !s.logs.is_empty() {
            1
        } else {
            0
        };
        if n_extra >= 1 {
            out.push(b',');
            if s.logs.is_empty() {
                out.push(b'0');
            } else {
                out.push(b'[');
                for (li, l) in s.logs.iter().enumerate() {
                    if li > 0 {
                        out.push(b',');
                    }
                    let ts = i128::from(l.timestamp) - i128::from(base);
                    let _ = write!(out, "[{ts},");
                    write_tags(&mut out, &l.fields, &mut strings);
                    out.push(b']');
                }
                out.push(b']');
            }
        }
        if n_extra >= 2 {
            out.push(b',');
            match warnings {
                Some(w) => {
                    let _ = serde_json::to_writer(&mut out, w);
                }
                None => out.push(b'0'),
            }
        }
        if n_extra >= 3 {
            out.extend_from_slice(b",[");
            for (li, r) in links.enumerate() {
                if li > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                json_str(&mut out, &r.trace_id);
                out.push(b',');
                json_str(&mut out, &r.span_id);
                out.extend_from_slice(match r.ref_type {
                    RefType::ChildOf => b",\"CHILD_OF\"]",
                    RefType::FollowsFrom => b",\"FOLLOWS_FROM\"]",
                });
            }
            out.push(b']');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"],\"strings\":");
    let _ = serde_json::to_writer(&mut out, &strings.list);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jaeger_json::to_jaeger_trace_with_warnings;
    use clew_model::attrs::{kv_int, kv_str};
    use clew_model::otlp::common::InstrumentationScope;
    use clew_model::otlp::resource::Resource;
    use clew_model::otlp::trace::{span, Span, Status};
    use clew_model::FlatSpan;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn flat(resource: &Arc<Resource>, span: Span) -> FlatSpan {
        FlatSpan {
            resource: resource.clone(),
            resource_schema_url: Arc::from(""),
            scope: Arc::new(InstrumentationScope {
                name: "lib".into(),
                version: "1.0".into(),
                ..Default::default()
            }),
            scope_schema_url: Arc::from(""),
            span,
        }
    }

    /// Decodes flat tags back to Jaeger's `{key, value}` (types are not carried).
    fn tags(flat: &Value, s: &[Value]) -> Value {
        let a = flat.as_array().expect("tags array");
        let mut out = Vec::new();
        for kv in a.chunks(2) {
            let k = kv[0].as_i64().expect("key index");
            if k >= 0 {
                let v = kv[1].as_u64().expect("string index") as usize;
                out.push(json!({"key": s[k as usize], "value": s[v]}));
            } else {
                out.push(json!({"key": s[(-k - 1) as usize], "value": kv[1]}));
            }
        }
        Value::Array(out)
    }

    fn jaeger_tags(t: &[Tag]) -> Value {
        Value::Array(
            t.iter()
                .map(|t| json!({"key": t.key, "value": t.value}))
                .collect(),
        )
    }

    #[test]
    fn same_content_as_the_jaeger_json() {
        let tid = vec![0xab; 16];
        let a = Arc::new(Resource {
            attributes: vec![kv_str("service.name", "a"), kv_str("host.name", "h1")],
            ..Default::default()
        });
        let b = Arc::new(Resource {
            attributes: vec![kv_str("service.name", "b"), kv_str("host.name", "h2")],
            ..Default::default()
        });
        let root = Span {
            trace_id: tid.clone(),
            span_id: vec![1; 8],
            name: "GET /x".into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_100_000_000,
            attributes: vec![kv_str("http.route", "/x"), kv_int("n", 7)],
            ..Default::default()
        };
        // b's clock is 50 ms behind; it has an event, a link and an error status.
        let skewed = Span {
            trace_id: tid.clone(),
            span_id: vec![2; 8],
            parent_span_id: vec![1; 8],
            name: "serve".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 950_000_000,
            end_time_unix_nano: 1_030_000_000,
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            events: vec![span::Event {
                time_unix_nano: 960_000_000,
                name: "exception".into(),
                attributes: vec![kv_str("exception.type", "E")],
                ..Default::default()
            }],
            links: vec![span::Link {
                trace_id: vec![0xcd; 16],
                span_id: vec![5; 8],
                ..Default::default()
            }],
            ..Default::default()
        };
        let orphan = Span {
            trace_id: tid.clone(),
            span_id: vec![3; 8],
            parent_span_id: vec![9; 8],
            name: "GET /x".into(),
            start_time_unix_nano: 1_010_000_000,
            end_time_unix_nano: 1_020_000_000,
            ..Default::default()
        };
        let spans = vec![flat(&a, root), flat(&b, skewed), flat(&a, orphan)];
        let jt = to_jaeger_trace_with_warnings(&spans).expect("trace");
        let ui: Value = serde_json::from_slice(&to_ui_json(&jt)).expect("valid JSON");
        let s: Vec<Value> = ui["strings"].as_array().expect("strings").clone();
        assert_eq!(ui["v"], 1);
        assert_eq!(ui["traceID"], jt.trace_id);
        assert_eq!(ui["warnings"], Value::Null);
        let base = ui["base"].as_u64().expect("base");
        assert_eq!(
            base,
            jt.spans.iter().map(|s| s.start_time).min().unwrap_or(0)
        );
        // Processes in p1, p2 order.
        let procs = ui["processes"].as_array().expect("processes");
        assert_eq!(procs.len(), jt.processes.len());
        for (i, p) in procs.iter().enumerate() {
            let jp = &jt.processes[&format!("p{}", i + 1)];
            assert_eq!(s[p[0].as_u64().unwrap_or(0) as usize], jp.service_name);
            assert_eq!(tags(&p[1], &s), jaeger_tags(&jp.tags));
        }
        let rows = ui["spans"].as_array().expect("spans");
        assert_eq!(rows.len(), 3);
        for (r, js) in rows.iter().zip(&jt.spans) {
            assert_eq!(r[0], js.span_id);
            assert_eq!(
                format!("p{}", r[2].as_u64().unwrap_or(0) + 1),
                js.process_id
            );
            assert_eq!(s[r[3].as_u64().unwrap_or(0) as usize], js.operation_name);
            assert_eq!(r[4].as_u64().map(|x| x + base), Some(js.start_time));
            assert_eq!(r[5], js.duration);
            assert_eq!(tags(&r[6], &s), jaeger_tags(&js.tags));
        }
        // Parents: none, index 0, and an id that is not in the trace.
        assert_eq!(rows[0][1], -1);
        assert_eq!(rows[1][1], 0);
        assert_eq!(rows[2][1], "0909090909090909");
        // Row 0 has no extras; row 1 has logs, the skew warning (its start shifted like the Jaeger
        // JSON's) and the link; row 2 has no logs but a warning.
        assert_eq!(rows[0].as_array().map(Vec::len), Some(7));
        let r1 = &rows[1];
        let log = &r1[7][0];
        assert_eq!(
            log[0].as_u64().map(|x| x + base),
            Some(jt.spans[1].logs[0].timestamp)
        );
        assert_eq!(tags(&log[1], &s), jaeger_tags(&jt.spans[1].logs[0].fields));
        assert_eq!(r1[8], json!(jt.spans[1].warnings));
        assert!(r1[8][0].as_str().unwrap_or("").starts_with("clock skew"));
        assert_eq!(
            r1[9],
            json!([["cd".repeat(16), "0505050505050505", "FOLLOWS_FROM"]])
        );
        assert_eq!(rows[2][7], 0);
        assert_eq!(rows[2][8], json!(jt.spans[2].warnings));
        assert_eq!(rows[2].as_array().map(Vec::len), Some(9));
        // error=true is carried as a boolean, not interned.
        assert!(tags(&r1[6], &s)
            .as_array()
            .is_some_and(|t| t.contains(&json!({"key": "error", "value": true}))));
    }
}
