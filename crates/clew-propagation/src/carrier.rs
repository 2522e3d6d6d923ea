//! Carriers: where propagators read (`Extractor`) and write (`Injector`) header fields.
//!
//! Header names are ASCII case-insensitive on read. Every field may occur several times
//! ([`Extractor::get_all`]): `traceparent` must then be rejected, `tracestate` and `baggage`
//! combined.

use std::collections::HashMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Read access to a carrier.
pub trait Extractor {
    /// Every value of the field `key` (case-insensitive), in order of appearance.
    fn get_all(&self, key: &str) -> Vec<&str>;

    /// The first value of the field `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.get_all(key).into_iter().next()
    }

    /// All field names present (used for prefix fields such as `uberctx-*`).
    fn keys(&self) -> Vec<&str>;
}

/// Write access to a carrier. `set` replaces every existing value of the field.
pub trait Injector {
    /// Set `key` to `value`, replacing existing values.
    fn set(&mut self, key: &str, value: String);

    /// Remove every value of `key` (used when egress policy strips headers).
    fn remove(&mut self, key: &str);

    /// Remove every field whose name starts with `prefix` (case-insensitive), e.g. `uberctx-`.
    /// Carriers that cannot enumerate their fields may leave this as a no-op.
    fn remove_prefix(&mut self, _prefix: &str) {}
}

fn has_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Stand-in for a header value that is not valid UTF-8: present, but parses as invalid.
const NOT_UTF8: &str = "\u{fffd}";

impl Extractor for HeaderMap {
    fn get_all(&self, key: &str) -> Vec<&str> {
        // HeaderMap names are lowercase; lookups by &str are case-insensitive only if the
        // argument is lowercase, so normalise.
        let Ok(name) = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()) else {
            return Vec::new();
        };
        HeaderMap::get_all(self, name)
            .iter()
            .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or(NOT_UTF8))
            .collect()
    }

    fn keys(&self) -> Vec<&str> {
        HeaderMap::keys(self).map(|k| k.as_str()).collect()
    }
}

impl Injector for HeaderMap {
    fn set(&mut self, key: &str, value: String) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return;
        };
        self.insert(name, value);
    }

    fn remove(&mut self, key: &str) {
        if let Ok(name) = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()) {
            HeaderMap::remove(self, name);
        }
    }

    fn remove_prefix(&mut self, prefix: &str) {
        let names: Vec<HeaderName> = HeaderMap::keys(self)
            .filter(|k| has_prefix(k.as_str(), prefix))
            .cloned()
            .collect();
        for n in names {
            HeaderMap::remove(self, n);
        }
    }
}

impl Extractor for HashMap<String, String> {
    fn get_all(&self, key: &str) -> Vec<&str> {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn keys(&self) -> Vec<&str> {
        HashMap::keys(self).map(String::as_str).collect()
    }
}

impl Injector for HashMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        Injector::remove(self, key);
        self.insert(key.to_ascii_lowercase(), value);
    }

    fn remove(&mut self, key: &str) {
        self.retain(|k, _| !k.eq_ignore_ascii_case(key));
    }

    fn remove_prefix(&mut self, prefix: &str) {
        self.retain(|k, _| !has_prefix(k, prefix));
    }
}

/// An ordered list of header fields that keeps duplicates, e.g. as received on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, String)>);

impl HeaderList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a field without replacing existing ones.
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// Builder-style [`HeaderList::append`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.append(key, value);
        self
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for HeaderList {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        HeaderList(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Extractor for HeaderList {
    fn get_all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl Injector for HeaderList {
    fn set(&mut self, key: &str, value: String) {
        Injector::remove(self, key);
        self.0.push((key.to_ascii_lowercase(), value));
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    fn remove_prefix(&mut self, prefix: &str) {
        self.0.retain(|(k, _)| !has_prefix(k, prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_lookup_is_case_insensitive_and_keeps_duplicates() {
        let mut h = HeaderMap::new();
        h.append("tracestate", HeaderValue::from_static("a=1"));
        h.append("TraceState", HeaderValue::from_static("b=2"));
        assert_eq!(Extractor::get_all(&h, "TRACESTATE"), vec!["a=1", "b=2"]);
    }

    #[test]
    fn header_map_non_utf8_value_is_present_but_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text is a valid header value"),
        );
        assert_eq!(Extractor::get_all(&h, "traceparent"), vec![NOT_UTF8]);
    }

    #[test]
    fn injector_set_replaces_existing_values() {
        let mut l = HeaderList::new().with("B3", "x").with("b3", "y");
        l.set("b3", "z".into());
        assert_eq!(l.0, vec![("b3".to_string(), "z".to_string())]);
        let mut m = HashMap::new();
        m.insert("Traceparent".to_string(), "old".to_string());
        m.set("traceparent", "new".into());
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("traceparent").map(String::as_str), Some("new"));
    }

    #[test]
    fn remove_prefix_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert("uberctx-a", HeaderValue::from_static("1"));
        h.insert("keep", HeaderValue::from_static("2"));
        Injector::remove_prefix(&mut h, "UberCtx-");
        assert_eq!(h.len(), 1);
        let mut l = HeaderList::new().with("UBERCTX-x", "1").with("u", "2");
        l.remove_prefix("uberctx-");
        assert_eq!(l.0.len(), 1);
        let mut m: HashMap<String, String> = HashMap::new();
        m.insert("uberctx-é".into(), "1".into());
        m.remove_prefix("uberctx-");
        assert!(m.is_empty());
        // a prefix longer than the name, or splitting a multi-byte char, never panics
        let mut m: HashMap<String, String> = HashMap::new();
        m.insert("éé".into(), "1".into());
        m.remove_prefix("\u{e9}x");
        m.remove_prefix("abcdefgh");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn invalid_header_names_are_ignored_not_panicking() {
        let mut h = HeaderMap::new();
        h.set("bad name", "v".into());
        h.set("ok", "bad\nvalue".into());
        assert!(h.is_empty());
        assert!(Extractor::get_all(&h, "bad name").is_empty());
    }
}
