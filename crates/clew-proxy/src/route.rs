//! Route templates for `http.route`: the app does not report its routes, so they are configured
//! (`/users/{id}`, `/static/*`) and matched against the request path, first match wins. A path
//! no template matches gets no `http.route` (semantic conventions: never the raw path, whose
//! cardinality is unbounded).

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// A final `*`: the rest of the path (zero or more segments).
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    text: String,
    segs: Vec<Seg>,
}

/// Limits a template may not exceed (a template is configuration, not data).
const MAX_TEMPLATE_LEN: usize = 1024;
const MAX_SEGMENTS: usize = 64;

impl RouteTemplate {
    /// Parses `/a/{id}/b`, `/static/*`. Errors end with a fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(format!(
                "longer than {MAX_TEMPLATE_LEN} bytes (fix: shorten it or use a `*` suffix)"
            ));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} does not start with `/` (fix: e.g. \"/users/{{id}}\")"
            ));
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        if parts.len() > MAX_SEGMENTS {
            return Err(format!(
                "more than {MAX_SEGMENTS} segments (fix: use a `*` suffix)"
            ));
        }
        let mut segs = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let seg = if *p == "*" {
                if i + 1 != parts.len() {
                    return Err(format!(
                        "{text:?}: `*` is only allowed as the last segment (fix: e.g. \"/static/*\")"
                    ));
                }
                Seg::Rest
            } else if let Some(name) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(format!(
                        "{text:?}: parameter segment {p:?} needs a name (fix: e.g. \"{{id}}\")"
                    ));
                }
                Seg::Param
            } else if p.contains(['{', '}', '*']) {
                return Err(format!(
                    "{text:?}: segment {p:?} mixes text and a parameter (fix: a whole segment is either text, \"{{name}}\" or a final \"*\")"
                ));
            } else {
                Seg::Literal((*p).to_string())
            };
            segs.push(seg);
        }
        Ok(Self {
            text: text.to_string(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut parts = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect::<Vec<_>>()
        };
        // A trailing slash is the same route (`/users/` as `/users`).
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let mut i = 0;
        for seg in &self.segs {
            match seg {
                Seg::Rest => return true,
                Seg::Param => match parts.get(i) {
                    Some(p) if !p.is_empty() => i += 1,
                    _ => return false,
                },
                Seg::Literal(l) => match parts.get(i) {
                    Some(p) if p == l => i += 1,
                    _ => return false,
                },
            }
        }
        i == parts.len()
    }
}

/// The configured templates in order.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<RouteTemplate>);

impl Routes {
    pub fn parse(templates: &[String]) -> Result<Self, String> {
        templates
            .iter()
            .map(|t| RouteTemplate::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map(Routes)
    }

    /// The first template matching `path`.
    pub fn route_for(&self, path: &str) -> Option<&str> {
        self.0.iter().find(|t| t.matches(path)).map(|t| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_first_wins() {
        let r = Routes::parse(&[
            "/users/{id}".into(),
            "/users/{id}/orders/{order}".into(),
            "/static/*".into(),
            "/".into(),
        ])
        .unwrap();
        assert_eq!(r.route_for("/users/42"), Some("/users/{id}"));
        assert_eq!(r.route_for("/users/42/"), Some("/users/{id}"));
        assert_eq!(
            r.route_for("/users/42/orders/7"),
            Some("/users/{id}/orders/{order}")
        );
        assert_eq!(r.route_for("/users"), None);
        assert_eq!(r.route_for("/users//orders/7"), None);
        assert_eq!(r.route_for("/static/a/b.css"), Some("/static/*"));
        assert_eq!(r.route_for("/static"), Some("/static/*"));
        assert_eq!(r.route_for("/"), Some("/"));
        assert_eq!(r.route_for("/other"), None);
    }

    #[test]
    fn bad_templates_are_refused_with_a_fix() {
        for bad in ["users", "/a/*/b", "/a/{}", "/a/x{id}", "/a/{i{d}}"] {
            let e = RouteTemplate::parse(bad).unwrap_err();
            assert!(e.contains("fix"), "{bad}: {e}");
        }
        let long = format!("/{}", "a/".repeat(600));
        assert!(RouteTemplate::parse(&long).is_err());
        let many = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(RouteTemplate::parse(&many).is_err());
    }
}
