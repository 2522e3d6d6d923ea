//! Parameters of Tempo's search API: the logfmt `tags`, and the TraceQL query Clew builds from
//! `tags`/`minDuration`/`maxDuration` when no `q` is given, so one path (TraceQL) answers every
//! search.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TagsError {
    #[error("tags: expected `key=value` at byte {at}")]
    MissingValue { at: usize },
    #[error("tags: empty key at byte {at}")]
    EmptyKey { at: usize },
    #[error("tags: unterminated quoted value starting at byte {at}")]
    Unterminated { at: usize },
    #[error("tags: invalid escape `\\{ch}` at byte {at}")]
    BadEscape { ch: char, at: usize },
    #[error("tags: unexpected `\"` at byte {at} (quote the whole value)")]
    StrayQuote { at: usize },
}

/// Parses logfmt as Tempo's `tags` parameter carries it: `service.name=cart http.status_code=500
/// msg="a b"`. Values may be double-quoted with `\"`, `\\`, `\n`, `\t` escapes; pairs are
/// separated by whitespace. A key without `=value`, an empty key or a broken quote is an error (a
/// 400), not a silently ignored term.
pub fn parse_logfmt(text: &str) -> Result<Vec<(String, String)>, TagsError> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            if b[i] == b'"' {
                return Err(TagsError::StrayQuote { at: i });
            }
            i += 1;
        }
        if i == key_start {
            return Err(TagsError::EmptyKey { at: i });
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(TagsError::MissingValue { at: key_start });
        }
        // Slicing at ASCII bytes keeps UTF-8 boundaries.
        let key = text[key_start..i].to_string();
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            let quote_at = i;
            i += 1;
            let mut v = String::new();
            loop {
                let Some(c) = text[i..].chars().next() else {
                    return Err(TagsError::Unterminated { at: quote_at });
                };
                i += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let Some(e) = text[i..].chars().next() else {
                            return Err(TagsError::Unterminated { at: quote_at });
                        };
                        v.push(match e {
                            '"' => '"',
                            '\\' => '\\',
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => {
                                return Err(TagsError::BadEscape {
                                    ch: other,
                                    at: i - 1,
                                })
                            }
                        });
                        i += e.len_utf8();
                    }
                    c => v.push(c),
                }
            }
            if i < b.len() && !b[i].is_ascii_whitespace() {
                return Err(TagsError::StrayQuote { at: i });
            }
            v
        } else {
            let start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'"' {
                    return Err(TagsError::StrayQuote { at: i });
                }
                i += 1;
            }
            text[start..i].to_string()
        };
        out.push((key, value));
    }
    Ok(out)
}

/// A TraceQL string literal: double-quoted, `"` and `\` escaped.
pub fn traceql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An unscoped TraceQL attribute reference for a tag key: `.http.method`, or `."odd key"` when the
/// key has characters TraceQL's attribute syntax does not allow.
fn traceql_attr(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
    if plain {
        format!(".{key}")
    } else {
        format!(".{}", traceql_string(key))
    }
}

/// One tag as a TraceQL condition. Tempo's tag search compares values as text whatever the
/// attribute's type, while TraceQL is typed; so a value that reads as a number or a boolean
/// matches the typed attribute or its text form (`(.k = 500 || .k = "500")`). `name`,
/// `status` and `service.name` map to the intrinsics / the resource attribute Tempo means.
fn tag_condition(key: &str, value: &str) -> String {
    match key {
        "name" => return format!("name = {}", traceql_string(value)),
        "status" | "status.code" if matches!(value, "ok" | "error" | "unset") => {
            return format!("status = {value}")
        }
        "service.name" => return format!("resource.service.name = {}", traceql_string(value)),
        _ => {}
    }
    let attr = traceql_attr(key);
    let text = format!("{attr} = {}", traceql_string(value));
    // Literals TraceQL writes the same way: `-?[0-9]+`, `-?[0-9]+.[0-9]+`, `true`, `false`
    // (not `+5`, `1e5`, `inf`).
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    let unsigned = value.strip_prefix('-').unwrap_or(value);
    let number = match unsigned.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac),
        None => digits(unsigned) && value.parse::<i64>().is_ok(),
    };
    let typed = number || matches!(value, "true" | "false");
    if typed {
        format!("({attr} = {value} || {text})")
    } else {
        text
    }
}

/// The largest duration TraceQL can write, in nanoseconds: the largest f64 below 2^63 (its parser
/// rejects 2^63 and up, and every integer up to this one reads as at most this one).
const MAX_TRACEQL_DURATION_NANOS: u64 = (1 << 63) - 1024;

/// The TraceQL query equivalent to a tag search: every tag on the same span, trace duration
/// bounds (Tempo's `minDuration`/`maxDuration` bound the trace, in nanoseconds here). No
/// condition at all is `{}`, every trace.
pub fn tags_to_traceql(
    tags: &[(String, String)],
    min_duration_nanos: Option<u64>,
    max_duration_nanos: Option<u64>,
) -> String {
    let mut conds: Vec<String> = tags.iter().map(|(k, v)| tag_condition(k, v)).collect();
    // TraceQL reads durations as f64 nanoseconds below 2^63; the last ~1 µs of Go's range (which
    // `minDuration`/`maxDuration` accept) would not parse, so bounds are clamped (292 years: no
    // trace is that long either way).
    if let Some(min) = min_duration_nanos {
        let min = min.min(MAX_TRACEQL_DURATION_NANOS);
        conds.push(format!("traceDuration >= {min}ns"));
    }
    if let Some(max) = max_duration_nanos {
        let max = max.min(MAX_TRACEQL_DURATION_NANOS);
        conds.push(format!("traceDuration <= {max}ns"));
    }
    if conds.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", conds.join(" && "))
    }
}

/// The one cheap narrowing of tag values by a TraceQL `q` that Clew does: a query that pins
/// `resource.service.name` (or `.service.name`) to one string, e.g. Grafana's
/// `{resource.service.name="cart"}` while completing `name`. Anything else returns `None` and the
/// values are not narrowed.
pub fn pinned_service(q: &str) -> Option<String> {
    let inner = q.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    let (lhs, rhs) = inner.split_once('=')?;
    if !matches!(
        lhs.trim(),
        "resource.service.name" | ".service.name" | "service.name"
    ) {
        return None;
    }
    let rhs = rhs.trim();
    // `=~` or a compound condition: not a plain pin.
    let body = rhs.strip_prefix('"')?.strip_suffix('"')?;
    if body.contains('"') || body.contains('\\') {
        return None;
    }
    Some(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn logfmt_plain_quoted_and_escaped() {
        assert_eq!(parse_logfmt(""), Ok(vec![]));
        assert_eq!(parse_logfmt("   "), Ok(vec![]));
        assert_eq!(
            parse_logfmt("service.name=cart  http.status_code=500"),
            Ok(pairs(&[
                ("service.name", "cart"),
                ("http.status_code", "500")
            ]))
        );
        assert_eq!(
            parse_logfmt(r#"msg="a b" q="say \"hi\" \\ \n" e="""#),
            Ok(pairs(&[
                ("msg", "a b"),
                ("q", "say \"hi\" \\ \n"),
                ("e", "")
            ]))
        );
        assert_eq!(parse_logfmt("k= x=1"), Ok(pairs(&[("k", ""), ("x", "1")])));
        assert_eq!(parse_logfmt("k=é→"), Ok(pairs(&[("k", "é→")])));
        assert_eq!(parse_logfmt("k=\"é\""), Ok(pairs(&[("k", "é")])));
    }

    #[test]
    fn logfmt_garbage_is_an_error() {
        assert_eq!(
            parse_logfmt("lonely"),
            Err(TagsError::MissingValue { at: 0 })
        );
        assert_eq!(
            parse_logfmt("a=1 b"),
            Err(TagsError::MissingValue { at: 4 })
        );
        assert_eq!(parse_logfmt("=v"), Err(TagsError::EmptyKey { at: 0 }));
        assert_eq!(
            parse_logfmt("k=\"open"),
            Err(TagsError::Unterminated { at: 2 })
        );
        assert_eq!(
            parse_logfmt("k=\"open\\"),
            Err(TagsError::Unterminated { at: 2 })
        );
        assert!(matches!(
            parse_logfmt(r#"k="\q""#),
            Err(TagsError::BadEscape { ch: 'q', .. })
        ));
        assert!(matches!(
            parse_logfmt(r#"k="a"b"#),
            Err(TagsError::StrayQuote { .. })
        ));
        assert!(matches!(
            parse_logfmt(r#"k=a"b"#),
            Err(TagsError::StrayQuote { .. })
        ));
        assert!(matches!(
            parse_logfmt(r#"k"=v"#),
            Err(TagsError::StrayQuote { .. })
        ));
    }

    #[test]
    fn tags_become_one_spanset_filter() {
        assert_eq!(tags_to_traceql(&[], None, None), "{}");
        assert_eq!(
            tags_to_traceql(
                &pairs(&[
                    ("service.name", "cart"),
                    ("http.status_code", "500"),
                    ("name", "GET /"),
                    ("status", "error"),
                    ("msg", "say \"hi\""),
                    ("ok", "true"),
                    ("ratio", "0.5"),
                    ("odd key", "v"),
                ]),
                Some(100_000_000),
                Some(2_000_000_000)
            ),
            "{ resource.service.name = \"cart\" && (.http.status_code = 500 || .http.status_code = \"500\") \
             && name = \"GET /\" && status = error && .msg = \"say \\\"hi\\\"\" && (.ok = true || .ok = \"true\") \
             && (.ratio = 0.5 || .ratio = \"0.5\") && .\"odd key\" = \"v\" \
             && traceDuration >= 100000000ns && traceDuration <= 2000000000ns }"
        );
        // Things Rust parses as numbers but TraceQL writes otherwise stay strings.
        assert_eq!(
            tags_to_traceql(
                &pairs(&[
                    ("x", "inf"),
                    ("y", "NaN"),
                    ("z", "1e5"),
                    ("p", "+5"),
                    ("d", "1.")
                ]),
                None,
                None
            ),
            "{ .x = \"inf\" && .y = \"NaN\" && .z = \"1e5\" && .p = \"+5\" && .d = \"1.\" }"
        );
        assert_eq!(
            tags_to_traceql(
                &pairs(&[("n", "-7"), ("big", "99999999999999999999")]),
                None,
                None
            ),
            "{ (.n = -7 || .n = \"-7\") && .big = \"99999999999999999999\" }"
        );
        assert_eq!(
            tags_to_traceql(&[], Some(5), None),
            "{ traceDuration >= 5ns }"
        );
    }

    /// Found by the `tempo_params` fuzz target: `maxDuration=9223372036854775807ns` is a valid Go
    /// duration, but the TraceQL written for it did not parse (TraceQL's limit is below 2^63 ns).
    #[test]
    fn duration_bounds_at_the_end_of_gos_range_still_parse() {
        for d in [
            i64::MAX as u64,
            (1 << 63) - 1,
            (1 << 63) - 513,
            MAX_TRACEQL_DURATION_NANOS,
        ] {
            let q = tags_to_traceql(&pairs(&[("k", "v")]), Some(d), Some(d));
            clew_traceql::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        assert_eq!(
            tags_to_traceql(&[], None, Some(i64::MAX as u64)),
            "{ traceDuration <= 9223372036854774784ns }"
        );
        // Below the limit nothing changes.
        assert_eq!(
            tags_to_traceql(&[], None, Some(MAX_TRACEQL_DURATION_NANOS - 1)),
            "{ traceDuration <= 9223372036854774783ns }"
        );
    }

    #[test]
    fn pinned_service_only_for_a_plain_equality() {
        assert_eq!(
            pinned_service(r#"{resource.service.name="cart"}"#),
            Some("cart".into())
        );
        assert_eq!(
            pinned_service(r#"{ .service.name = "a-b" }"#),
            Some("a-b".into())
        );
        for q in [
            "{}",
            r#"{resource.service.name=~"c.*"}"#,
            r#"{resource.service.name!="cart"}"#,
            r#"{resource.service.name="a" && name="b"}"#,
            r#"{span.x="cart"}"#,
            "",
        ] {
            assert_eq!(pinned_service(q), None, "{q}");
        }
    }
}
