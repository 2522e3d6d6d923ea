//! Attribute helpers: lookups and the text rendering used for search and Jaeger tags.

use crate::otlp::common::{any_value::Value, AnyValue, KeyValue};
use crate::otlp::resource::Resource;

pub const SERVICE_NAME: &str = "service.name";
pub const UNKNOWN_SERVICE: &str = "unknown_service";

pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attrs, key)?.value.as_ref()? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    }
}

/// `service.name` of a resource, or `unknown_service` as the OTel SDKs default to.
pub fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|r| get_str(&r.attributes, SERVICE_NAME))
        .filter(|s| !s.is_empty())
        .unwrap_or(UNKNOWN_SERVICE)
}

/// Renders a value as text: strings as-is, numbers and booleans in their usual form, bytes as
/// base64, arrays and maps as JSON. Search compares against this form.
pub fn to_text(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(Value::ArrayValue(_)) | Some(Value::KvlistValue(_)) => to_json(value).to_string(),
        // Only the profiles signal uses string-table indexes; traces never should.
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

/// Plain JSON form of a value (not the OTLP JSON mapping): used inside text renderings.
pub fn to_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.value {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or(J::Null),
        Some(Value::BytesValue(_)) | Some(Value::StringValueStrindex(_)) => {
            J::String(to_text(value))
        }
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map(to_json).unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
    }
}

pub fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.into())),
    }
}

pub fn kv(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn kv_str(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub fn kv_int(key: impl Into<String>, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::common::ArrayValue;

    #[test]
    fn text_rendering() {
        assert_eq!(
            to_text(&AnyValue {
                value: Some(Value::IntValue(42))
            }),
            "42"
        );
        assert_eq!(
            to_text(&AnyValue {
                value: Some(Value::BoolValue(true))
            }),
            "true"
        );
        let arr = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    string_value("a"),
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                ],
            })),
        };
        assert_eq!(to_text(&arr), r#"["a",1]"#);
    }

    #[test]
    fn service_name_defaults() {
        assert_eq!(service_name(None), UNKNOWN_SERVICE);
        let r = Resource {
            attributes: vec![kv_str(SERVICE_NAME, "cart")],
            ..Default::default()
        };
        assert_eq!(service_name(Some(&r)), "cart");
    }
}
