//! The OTLP/JSON mapping (hex ids, lowerCamelCase, enums as integers, 64-bit integers as strings or
//! numbers), through the serde support of `opentelemetry-proto`.

use crate::otlp::collector::ExportTraceServiceRequest;
use crate::otlp::trace::ResourceSpans;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("invalid OTLP JSON at line {line} column {column}: {message}")]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonError> {
    serde_json::from_slice(body).map_err(|e| JsonError {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Encodes resource spans as an OTLP/JSON `TracesData`-shaped object (`{"resourceSpans": [...]}`).
pub fn encode_resource_spans(resource_spans: &[ResourceSpans]) -> serde_json::Value {
    serde_json::json!({ "resourceSpans": resource_spans })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::common::any_value::Value;

    const SPEC_EXAMPLE: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0"},
          "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "kind": 2,
            "attributes": [
              {"key": "my.span.attr", "value": {"stringValue": "some value"}},
              {"key": "n", "value": {"intValue": "42"}},
              {"key": "d", "value": {"doubleValue": 1.5}},
              {"key": "b", "value": {"boolValue": true}}
            ],
            "status": {"code": 2, "message": "boom"}
          }]
        }]
      }]
    }"#;

    #[test]
    fn decodes_spec_example() {
        let req = decode_request(SPEC_EXAMPLE.as_bytes()).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        assert_eq!(span.end_time_unix_nano, 1544712661000000000);
        assert_eq!(span.kind, 2);
        assert_eq!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(Value::IntValue(42))
        );
        assert_eq!(span.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn round_trips_through_encoder() {
        let req = decode_request(SPEC_EXAMPLE.as_bytes()).unwrap();
        let json = encode_resource_spans(&req.resource_spans).to_string();
        let again = decode_request(json.as_bytes()).unwrap();
        assert_eq!(again, req);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(decode_request(b"not json").is_err());
        assert!(decode_request(&SPEC_EXAMPLE.as_bytes()[..100]).is_err());
        assert!(decode_request(
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#
        )
        .is_err());
    }
}
