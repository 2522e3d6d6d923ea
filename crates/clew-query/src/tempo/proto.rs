//! Tempo's `tempopb` messages that Clew serves, mirrored by hand from the vendored
//! `proto/tempopb/tempo.proto` (Apache-2.0, see `proto/NOTICE`): prost for the protobuf bodies
//! (`/api/traces/{id}`, `/api/v2/traces/{id}` with `Accept: application/protobuf`) and serde for
//! the proto3 JSON mapping of the search and tag responses (lowerCamel names as written in the
//! .proto, 64-bit integers as strings, defaults emitted).
//!
//! Hand-written rather than generated: no `protoc` here, and `protox` + `prost-build` would cost
//! more compile time than these dozen structs. The unit test below parses the vendored .proto and
//! checks every mirrored field's number, wire type, and JSON name against it, so a drift fails.
//! `tempopb.trace.v1` / `tempopb.common.v1` are Tempo's copies of the OTLP messages, so the OTLP
//! types of `clew_model::otlp` stand in for them.

use clew_model::otlp::common::KeyValue;
use clew_model::otlp::trace::ResourceSpans;
use serde::{Deserialize, Serialize};

/// `tempopb.Trace`: the `/api/traces/{id}` protobuf body.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    #[serde(rename = "resourceSpans", default)]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.PartialStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PartialStatus {
    Complete = 0,
    Partial = 1,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    #[serde(rename = "inspectedBytes", with = "u64_string", default)]
    pub inspected_bytes: u64,
}

/// `tempopb.TraceByIDResponse`: the `/api/v2/traces/{id}` protobuf body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<Trace>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
    #[prost(enumeration = "PartialStatus", tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `tempopb.SearchResponse`: `/api/search`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchResponse {
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub traces: Vec<TraceSearchMetadata>,
    #[prost(message, optional, tag = "2")]
    #[serde(default)]
    pub metrics: Option<SearchMetrics>,
}

/// `tempopb.TraceSearchMetadata`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct TraceSearchMetadata {
    #[prost(string, tag = "1")]
    #[serde(rename = "traceID", default)]
    pub trace_id: String,
    #[prost(string, tag = "2")]
    #[serde(rename = "rootServiceName", default)]
    pub root_service_name: String,
    #[prost(string, tag = "3")]
    #[serde(rename = "rootTraceName", default)]
    pub root_trace_name: String,
    #[prost(uint64, tag = "4")]
    #[serde(rename = "startTimeUnixNano", with = "u64_string", default)]
    pub start_time_unix_nano: u64,
    #[prost(uint32, tag = "5")]
    #[serde(rename = "durationMs", default)]
    pub duration_ms: u32,
    /// Deprecated in Tempo in favour of `spanSets`, still filled (the first spanset) for older
    /// Grafana versions that read only this.
    #[prost(message, optional, tag = "6")]
    #[serde(rename = "spanSet", default, skip_serializing_if = "Option::is_none")]
    pub span_set: Option<SpanSet>,
    #[prost(message, repeated, tag = "7")]
    #[serde(rename = "spanSets", default)]
    pub span_sets: Vec<SpanSet>,
}

/// `tempopb.SpanSet`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SpanSet {
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub spans: Vec<Span>,
    #[prost(uint32, tag = "2")]
    #[serde(default)]
    pub matched: u32,
    #[prost(message, repeated, tag = "3")]
    #[serde(default)]
    pub attributes: Vec<KeyValue>,
}

/// `tempopb.Span` (a search result's span, not the OTLP span).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Span {
    #[prost(string, tag = "1")]
    #[serde(rename = "spanID", default)]
    pub span_id: String,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub name: String,
    #[prost(uint64, tag = "3")]
    #[serde(rename = "startTimeUnixNano", with = "u64_string", default)]
    pub start_time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    #[serde(rename = "durationNanos", with = "u64_string", default)]
    pub duration_nanos: u64,
    #[prost(message, repeated, tag = "5")]
    #[serde(default)]
    pub attributes: Vec<KeyValue>,
}

/// `tempopb.SearchMetrics`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchMetrics {
    #[prost(uint32, tag = "1")]
    #[serde(rename = "inspectedTraces", default)]
    pub inspected_traces: u32,
    #[prost(uint64, tag = "2")]
    #[serde(rename = "inspectedBytes", with = "u64_string", default)]
    pub inspected_bytes: u64,
    #[prost(uint32, tag = "3")]
    #[serde(rename = "totalBlocks", default)]
    pub total_blocks: u32,
    #[prost(uint32, tag = "4")]
    #[serde(rename = "completedJobs", default)]
    pub completed_jobs: u32,
    #[prost(uint32, tag = "5")]
    #[serde(rename = "totalJobs", default)]
    pub total_jobs: u32,
    #[prost(uint64, tag = "6")]
    #[serde(rename = "totalBlockBytes", with = "u64_string", default)]
    pub total_block_bytes: u64,
    #[prost(uint64, tag = "7")]
    #[serde(rename = "inspectedSpans", with = "u64_string", default)]
    pub inspected_spans: u64,
}

/// `tempopb.SearchTagsResponse`: `/api/search/tags`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchTagsResponse {
    #[prost(string, repeated, tag = "1")]
    #[serde(rename = "tagNames", default)]
    pub tag_names: Vec<String>,
}

/// `tempopb.SearchTagsV2Response`: `/api/v2/search/tags`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchTagsV2Response {
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub scopes: Vec<SearchTagsV2Scope>,
}

/// `tempopb.SearchTagsV2Scope`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchTagsV2Scope {
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `tempopb.SearchTagValuesResponse`: `/api/search/tag/{tag}/values`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchTagValuesResponse {
    #[prost(string, repeated, tag = "1")]
    #[serde(rename = "tagValues", default)]
    pub tag_values: Vec<String>,
}

/// `tempopb.TagValue`: a typed value (`string`, `int`, `float`, `bool`, `duration`, `status`,
/// `kind`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message, Serialize, Deserialize)]
pub struct TagValue {
    #[prost(string, tag = "1")]
    #[serde(rename = "type", default)]
    pub r#type: String,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub value: String,
}

/// `tempopb.SearchTagValuesV2Response`: `/api/v2/search/tag/{scope.tag}/values`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SearchTagValuesV2Response {
    #[prost(message, repeated, tag = "1")]
    #[serde(rename = "tagValues", default)]
    pub tag_values: Vec<TagValue>,
}

/// proto3 JSON for `uint64`: written as a decimal string, read from a string or a number.
pub mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(u64),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(n),
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The mirror against the vendored .proto: for every mirrored message, a value with every
    //! field set is encoded; each field number must be one the .proto declares, with the wire type
    //! its declared type has, and every declared field must appear. The JSON keys must be the
    //! declared field names (proto3 JSON keeps names that are already lowerCamel).
    use super::*;
    use clew_model::otlp::common::{any_value::Value, AnyValue};
    use prost::Message;
    use std::collections::BTreeMap;

    const PROTO: &str = include_str!("../../proto/tempopb/tempo.proto");

    /// `message NAME { … }` → field number → (declared type, name, repeated). Top-level messages
    /// only; nested messages/enums are skipped by brace depth.
    fn parse_proto(text: &str) -> BTreeMap<String, BTreeMap<u32, (String, String, bool)>> {
        let mut out = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut depth = 0usize;
        for raw in text.lines() {
            let line = raw.split("//").next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if depth == 0 {
                if let Some(rest) = line.strip_prefix("message ") {
                    let name = rest.trim_end_matches('{').trim().to_string();
                    out.insert(name.clone(), BTreeMap::new());
                    current = Some(name);
                }
            } else if depth == 1 {
                if let (Some(msg), Some((decl, num))) = (&current, line.split_once('=')) {
                    let num: String = num
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    let words: Vec<&str> = decl.split_whitespace().collect();
                    if let (Ok(num), true) = (num.parse::<u32>(), words.len() >= 2) {
                        let repeated = words[0] == "repeated";
                        let ty = words[words.len() - 2].to_string();
                        let name = words[words.len() - 1].to_string();
                        if let Some(fields) = out.get_mut(msg) {
                            fields.insert(num, (ty, name, repeated));
                        }
                    }
                }
            }
            depth += line.matches('{').count();
            depth = depth.saturating_sub(line.matches('}').count());
            if depth == 0 {
                current = None;
            }
        }
        out
    }

    /// Top-level (field number, wire type) pairs of an encoded message.
    fn wire_fields(mut buf: &[u8]) -> Vec<(u32, u8)> {
        fn varint(buf: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = buf[0];
                *buf = &buf[1..];
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            v
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf);
            let (num, wt) = ((key >> 3) as u32, (key & 7) as u8);
            match wt {
                0 => {
                    varint(&mut buf);
                }
                1 => buf = &buf[8..],
                2 => {
                    let len = varint(&mut buf) as usize;
                    buf = &buf[len..];
                }
                5 => buf = &buf[4..],
                other => panic!("unexpected wire type {other}"),
            }
            out.push((num, wt));
        }
        out
    }

    fn wire_type_of(proto_type: &str) -> u8 {
        match proto_type {
            "uint32" | "uint64" | "int32" | "int64" | "bool" | "PartialStatus" => 0,
            "double" | "fixed64" => 1,
            "float" | "fixed32" => 5,
            _ => 2, // string, bytes, messages
        }
    }

    fn check(
        protos: &BTreeMap<String, BTreeMap<u32, (String, String, bool)>>,
        message: &str,
        encoded: Vec<u8>,
        json: Option<serde_json::Value>,
    ) {
        let declared = protos
            .get(message)
            .unwrap_or_else(|| panic!("{message} is not in the vendored tempo.proto"));
        let seen = wire_fields(&encoded);
        for (num, wt) in &seen {
            let (ty, name, _) = declared
                .get(num)
                .unwrap_or_else(|| panic!("{message}: field {num} is not declared"));
            assert_eq!(*wt, wire_type_of(ty), "{message}.{name} ({ty}) = {num}");
        }
        for (num, (ty, name, repeated)) in declared {
            assert!(
                seen.iter().any(|(n, _)| n == num),
                "{message}.{name} ({ty} = {num}) is not mirrored"
            );
            let count = seen.iter().filter(|(n, _)| n == num).count();
            assert!(
                *repeated || count == 1,
                "{message}.{name}: not repeated, encoded {count} times"
            );
        }
        if let Some(json) = json {
            let keys: Vec<&String> = json.as_object().expect("an object").keys().collect();
            for (_, name, _) in declared.values() {
                assert!(
                    keys.contains(&name),
                    "{message}: JSON has no key {name:?} ({keys:?})"
                );
            }
            assert_eq!(
                keys.len(),
                declared.len(),
                "{message}: extra JSON keys {keys:?}"
            );
        }
    }

    fn kv() -> KeyValue {
        KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("v".into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn mirrored_messages_match_the_vendored_proto() {
        let protos = parse_proto(PROTO);
        let trace = Trace {
            resource_spans: vec![ResourceSpans::default(), ResourceSpans::default()],
        };
        check(
            &protos,
            "Trace",
            trace.encode_to_vec(),
            Some(serde_json::to_value(&trace).unwrap()),
        );
        let metrics = TraceByIdMetrics { inspected_bytes: 7 };
        check(
            &protos,
            "TraceByIDMetrics",
            metrics.encode_to_vec(),
            Some(serde_json::to_value(&metrics).unwrap()),
        );
        check(
            &protos,
            "TraceByIDResponse",
            TraceByIdResponse {
                trace: Some(trace.clone()),
                metrics: Some(metrics),
                status: PartialStatus::Partial as i32,
                message: "m".into(),
            }
            .encode_to_vec(),
            None,
        );
        let span = Span {
            span_id: "01".into(),
            name: "n".into(),
            start_time_unix_nano: 1,
            duration_nanos: 2,
            attributes: vec![kv()],
        };
        check(
            &protos,
            "Span",
            span.encode_to_vec(),
            Some(serde_json::to_value(&span).unwrap()),
        );
        let set = SpanSet {
            spans: vec![span],
            matched: 3,
            attributes: vec![kv()],
        };
        check(
            &protos,
            "SpanSet",
            set.encode_to_vec(),
            Some(serde_json::to_value(&set).unwrap()),
        );
        let meta = TraceSearchMetadata {
            trace_id: "ab".into(),
            root_service_name: "s".into(),
            root_trace_name: "r".into(),
            start_time_unix_nano: 1,
            duration_ms: 2,
            span_set: Some(set.clone()),
            span_sets: vec![set],
        };
        check(
            &protos,
            "TraceSearchMetadata",
            meta.encode_to_vec(),
            Some(serde_json::to_value(&meta).unwrap()),
        );
        let sm = SearchMetrics {
            inspected_traces: 1,
            inspected_bytes: 2,
            total_blocks: 3,
            completed_jobs: 4,
            total_jobs: 5,
            total_block_bytes: 6,
            inspected_spans: 7,
        };
        let smj = serde_json::to_value(&sm).unwrap();
        assert_eq!(smj["inspectedSpans"], "7", "uint64 as a string");
        assert_eq!(smj["inspectedTraces"], 1, "uint32 as a number");
        check(&protos, "SearchMetrics", sm.encode_to_vec(), Some(smj));
        let resp = SearchResponse {
            traces: vec![meta],
            metrics: Some(sm),
        };
        check(
            &protos,
            "SearchResponse",
            resp.encode_to_vec(),
            Some(serde_json::to_value(&resp).unwrap()),
        );
        let tags = SearchTagsResponse {
            tag_names: vec!["a".into()],
        };
        check(
            &protos,
            "SearchTagsResponse",
            tags.encode_to_vec(),
            Some(serde_json::to_value(&tags).unwrap()),
        );
        let scope = SearchTagsV2Scope {
            name: "span".into(),
            tags: vec!["a".into()],
        };
        check(
            &protos,
            "SearchTagsV2Scope",
            scope.encode_to_vec(),
            Some(serde_json::to_value(&scope).unwrap()),
        );
        let v2 = SearchTagsV2Response {
            scopes: vec![scope],
        };
        check(
            &protos,
            "SearchTagsV2Response",
            v2.encode_to_vec(),
            Some(serde_json::to_value(&v2).unwrap()),
        );
        let values = SearchTagValuesResponse {
            tag_values: vec!["x".into()],
        };
        check(
            &protos,
            "SearchTagValuesResponse",
            values.encode_to_vec(),
            Some(serde_json::to_value(&values).unwrap()),
        );
        let tv = TagValue {
            r#type: "string".into(),
            value: "x".into(),
        };
        check(
            &protos,
            "TagValue",
            tv.encode_to_vec(),
            Some(serde_json::to_value(&tv).unwrap()),
        );
        let tvs = SearchTagValuesV2Response {
            tag_values: vec![tv],
        };
        check(
            &protos,
            "SearchTagValuesV2Response",
            tvs.encode_to_vec(),
            Some(serde_json::to_value(&tvs).unwrap()),
        );
        // The enum's values as declared.
        assert!(PROTO.contains("COMPLETE = 0;") && PROTO.contains("PARTIAL = 1;"));
    }

    #[test]
    fn u64_strings_read_both_forms() {
        let m: SearchMetrics =
            serde_json::from_str(r#"{"inspectedBytes":"12","inspectedSpans":3}"#).unwrap();
        assert_eq!((m.inspected_bytes, m.inspected_spans), (12, 3));
        assert!(serde_json::from_str::<SearchMetrics>(r#"{"inspectedBytes":"x"}"#).is_err());
    }
}
