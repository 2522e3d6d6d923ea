//! Cross-implementation driver: reads JSON lines on stdin, answers with JSON lines on stdout.
//!
//! Used by `tests/python/test_propagation_interop.py` to check that headers made by other
//! OpenTelemetry SDKs are parsed by Clew, and that Clew's are accepted by theirs.
//!
//! Request (one per line):
//!
//! ```json
//! {"op": "extract", "format": "w3c"|"b3"|"b3multi"|"jaeger", "headers": {"name": "value", ...}}
//! {"op": "inject",  "format": ..., "context": CONTEXT}
//! ```
//!
//! `CONTEXT` (also what `extract` answers):
//!
//! ```json
//! {"span": null | {"trace_id": "<32 hex>", "span_id": "<16 hex>", "flags": 1, "sampled": true,
//!                  "tracestate": [["key", "value"], ...]},
//!  "sampling": null | "deny" | "accept" | "debug",
//!  "baggage": [{"key": "k", "value": "decoded value", "properties": [["p", "v" | null], ...]}]}
//! ```
//!
//! Answers: `{"ok": true, "context": CONTEXT}` for `extract`, `{"ok": true, "headers": {...}}` for
//! `inject` (header names lowercase), `{"ok": false, "error": "..."}` for a bad request. The
//! `w3c` format is traceparent + tracestate + baggage; the others carry baggage too where the
//! format has it (Jaeger `uberctx-*`).

use std::collections::HashMap;
use std::io::{self, BufRead, Write};

use clew_propagation::baggage::BaggageProperty;
use clew_propagation::{
    B3Encoding, B3Propagator, Baggage, BaggagePropagator, CompositePropagator, Context,
    JaegerPropagator, Propagator, Sampling, SpanContext, SpanId, TraceContextPropagator,
    TraceFlags, TraceId, TraceState,
};
use serde_json::{json, Map, Value};

fn propagator(format: &str) -> Result<Box<dyn Propagator>, String> {
    Ok(match format {
        "w3c" => Box::new(CompositePropagator::w3c()),
        "tracecontext" => Box::new(TraceContextPropagator::new()),
        "baggage" => Box::new(BaggagePropagator::new()),
        "b3" => Box::new(B3Propagator::with_encoding(B3Encoding::Single)),
        "b3multi" => Box::new(B3Propagator::with_encoding(B3Encoding::Multi)),
        "jaeger" => Box::new(JaegerPropagator::new()),
        other => return Err(format!("unknown format {other:?}")),
    })
}

fn sampling_name(s: Option<Sampling>) -> Value {
    match s {
        None => Value::Null,
        Some(Sampling::Deny) => json!("deny"),
        Some(Sampling::Accept) => json!("accept"),
        Some(Sampling::Debug) => json!("debug"),
    }
}

fn context_to_json(cx: &Context) -> Value {
    let span = match &cx.span {
        None => Value::Null,
        Some(sc) => json!({
            "trace_id": sc.trace_id.to_string(),
            "span_id": sc.span_id.to_string(),
            "flags": sc.flags.bits(),
            "sampled": sc.flags.is_sampled(),
            "tracestate": sc.trace_state.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        }),
    };
    let baggage: Vec<Value> = cx
        .baggage
        .iter()
        .map(|e| {
            json!({
                "key": e.key,
                "value": e.value,
                "properties": e.properties.iter().map(|p| json!([p.key, p.value])).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"span": span, "sampling": sampling_name(cx.sampling), "baggage": baggage})
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field {name:?}"))
}

fn context_from_json(v: &Value) -> Result<Context, String> {
    let mut cx = Context::new();
    if let Some(span) = v.get("span").filter(|s| !s.is_null()) {
        let trace_id =
            TraceId::from_hex_lower(str_field(span, "trace_id")?).map_err(|e| e.to_string())?;
        let span_id =
            SpanId::from_hex_lower(str_field(span, "span_id")?).map_err(|e| e.to_string())?;
        let flags = match span.get("flags").and_then(Value::as_u64) {
            Some(f) => TraceFlags::new(u8::try_from(f).map_err(|e| e.to_string())?),
            None => TraceFlags::default().with_sampled(
                span.get("sampled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
        };
        let mut sc = SpanContext::new(trace_id, span_id, flags);
        if let Some(members) = span.get("tracestate").and_then(Value::as_array) {
            let mut ts = TraceState::new();
            // `insert` puts a key at the left, so insert right-to-left to keep the order.
            for m in members.iter().rev() {
                let k = m
                    .get(0)
                    .and_then(Value::as_str)
                    .ok_or("bad tracestate member")?;
                let val = m
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or("bad tracestate member")?;
                ts.insert(k, val).map_err(|e| e.to_string())?;
            }
            sc.trace_state = ts;
        }
        cx.span = Some(sc);
    }
    cx.sampling = match v.get("sampling").and_then(Value::as_str) {
        None => None,
        Some("deny") => Some(Sampling::Deny),
        Some("accept") => Some(Sampling::Accept),
        Some("debug") => Some(Sampling::Debug),
        Some(other) => return Err(format!("unknown sampling {other:?}")),
    };
    if let Some(entries) = v.get("baggage").and_then(Value::as_array) {
        let mut b = Baggage::new();
        for e in entries {
            let props = match e.get("properties").and_then(Value::as_array) {
                None => Vec::new(),
                Some(ps) => ps
                    .iter()
                    .map(|p| {
                        Ok(BaggageProperty {
                            key: p
                                .get(0)
                                .and_then(Value::as_str)
                                .ok_or("bad baggage property")?
                                .to_string(),
                            value: p.get(1).and_then(Value::as_str).map(str::to_string),
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            };
            b.insert_with_properties(str_field(e, "key")?, str_field(e, "value")?, props)
                .map_err(|e| e.to_string())?;
        }
        cx.baggage = b;
    }
    Ok(cx)
}

fn answer(line: &str) -> Result<Value, String> {
    let req: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    let p = propagator(str_field(&req, "format")?)?;
    match str_field(&req, "op")? {
        "extract" => {
            let mut headers: Vec<(String, String)> = Vec::new();
            if let Some(h) = req.get("headers").and_then(Value::as_object) {
                for (k, v) in h {
                    // A list value is a field received several times.
                    match v {
                        Value::String(s) => headers.push((k.clone(), s.clone())),
                        Value::Array(vs) => {
                            for s in vs.iter().filter_map(Value::as_str) {
                                headers.push((k.clone(), s.to_string()));
                            }
                        }
                        _ => return Err(format!("header {k:?}: not a string")),
                    }
                }
            }
            let carrier = clew_propagation::HeaderList(headers);
            let cx = p.extract_new(&carrier);
            Ok(json!({"ok": true, "context": context_to_json(&cx)}))
        }
        "inject" => {
            let cx = context_from_json(req.get("context").unwrap_or(&Value::Null))?;
            let mut out: HashMap<String, String> = HashMap::new();
            p.inject(&cx, &mut out);
            let headers: Map<String, Value> = out
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v)))
                .collect();
            Ok(json!({"ok": true, "headers": headers}))
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

fn main() -> io::Result<()> {
    let stdin = io::stdin();
    let mut out = io::BufWriter::new(io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v = answer(&line).unwrap_or_else(|e| json!({"ok": false, "error": e}));
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(())
}
