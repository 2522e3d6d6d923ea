//! [`RequestMetadata`]: the client metadata of the request a batch came in (HTTP headers, gRPC
//! metadata), as kept by the receiver, for processors that copy it into attributes.
//!
//! Names are lowercase. A header sent several times appears once per value, in order. Receivers
//! never keep credentials (`authorization`, `cookie`, ...); what they keep is configured there.
//! Empty metadata is free: no allocation; non-empty metadata is one `Arc` shared by every batch
//! made from the request (clones, splits by the routing connector).

use std::fmt;
use std::sync::Arc;

/// A request's metadata: `(lowercase name, value)` pairs, cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestMetadata(Option<Arc<[(String, String)]>>);

impl RequestMetadata {
    /// From pairs; names are lowercased. No pairs → empty metadata (no allocation).
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        if pairs.is_empty() {
            return Self(None);
        }
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Self(Some(Arc::from(pairs)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|p| p.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.len())
    }

    /// Every `(name, value)` pair, in request order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|p| p.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of `name` (matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of `name` (matched case-insensitively), in request order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Names only: values may be personal data and batches are logged with `{:?}`.
impl fmt::Debug for RequestMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(k, _)| k)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let m = RequestMetadata::new(vec![
            ("X-Client".into(), "a".into()),
            ("x-client".into(), "b".into()),
            ("user-agent".into(), "curl".into()),
        ]);
        assert_eq!(m.get("x-CLIENT"), Some("a"));
        assert_eq!(m.get_all("x-client").collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(m.len(), 3);
        assert!(m.get("absent").is_none());
        assert_eq!(
            format!("{m:?}"),
            r#"["x-client", "x-client", "user-agent"]"#
        );
        let empty = RequestMetadata::new(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty, RequestMetadata::default());
    }
}
