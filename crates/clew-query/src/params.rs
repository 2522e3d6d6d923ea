//! Parsing of query-string values shared by both APIs: Go-syntax durations, RFC 3339 times,
//! epoch-unit integers, trace ids and attribute (tag) filters. Everything here takes untrusted text
//! and returns an error rather than panicking; callers add the parameter name to the message.

use clew_model::TraceId;
use std::borrow::Cow;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("invalid duration {0:?}")]
    Duration(String),
    #[error("duration {0:?} is out of range")]
    DurationRange(String),
    #[error("negative duration {0:?} is not allowed")]
    NegativeDuration(String),
    #[error("invalid RFC 3339 time {0:?}")]
    Time(String),
    #[error("time {0:?} is before 1970 or too far in the future")]
    TimeRange(String),
    #[error("not a non-negative integer: {0:?}")]
    Integer(String),
    #[error("invalid trace id {0:?}: expected 1 to 32 hex characters, not all zero")]
    TraceId(String),
    #[error("expecting key:value, received: {0:?}")]
    Tag(String),
    #[error("cannot parse JSON object of string values: {0}")]
    TagsJson(String),
}

/// Keeps echoed input short: error messages quote the offending value.
fn quote(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses a Go `time.ParseDuration` string (`300ms`, `1.5h`, `2h45m`, `-1.5s`, `0`) into signed
/// nanoseconds. Units: `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`.
pub fn parse_go_duration(text: &str) -> Result<i64, ParamError> {
    let err = || ParamError::Duration(quote(text));
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    // Accumulate in i128 so that overflow is detected instead of wrapping.
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        let range = || ParamError::DurationRange(quote(text));
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<i128>().map_err(|_| range())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(range)?;
        // Fractional digits beyond nanosecond precision are dropped, as Go does.
        let mut place = scale;
        for d in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            value += i128::from(d - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(range)?;
        if total > i128::from(i64::MAX) {
            return Err(range());
        }
    }
    let signed = if negative { -total } else { total };
    i64::try_from(signed).map_err(|_| ParamError::DurationRange(quote(text)))
}

/// A Go duration that must not be negative, in nanoseconds.
pub fn parse_duration_nanos(text: &str) -> Result<u64, ParamError> {
    let n = parse_go_duration(text)?;
    u64::try_from(n).map_err(|_| ParamError::NegativeDuration(quote(text)))
}

/// A non-negative decimal integer (`start`, `end`, `limit`, ...).
pub fn parse_u64(text: &str) -> Result<u64, ParamError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::Integer(quote(text)));
    }
    text.parse::<u64>()
        .map_err(|_| ParamError::Integer(quote(text)))
}

/// Microseconds since the epoch (Jaeger's `start`/`end`) to Unix nanoseconds.
pub fn parse_epoch_micros(text: &str) -> Result<u64, ParamError> {
    parse_u64(text)?
        .checked_mul(1_000)
        .ok_or_else(|| ParamError::Integer(quote(text)))
}

/// Milliseconds since the epoch (Jaeger's `endTs`) to Unix nanoseconds.
pub fn parse_epoch_millis(text: &str) -> Result<u64, ParamError> {
    parse_u64(text)?
        .checked_mul(1_000_000)
        .ok_or_else(|| ParamError::Integer(quote(text)))
}

/// A Jaeger trace id: 1 to 32 hex characters, left-padded with zeros.
pub fn parse_trace_id(text: &str) -> Result<TraceId, ParamError> {
    TraceId::from_hex(text).map_err(|_| ParamError::TraceId(quote(text)))
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.123+02:00`) into Unix
/// nanoseconds. Lower-case `t`/`z` and a space separator are accepted, as Go's parser does for
/// `T`/`Z` only; being slightly more lenient costs nothing here.
pub fn parse_rfc3339_nanos(text: &str) -> Result<u64, ParamError> {
    let err = || ParamError::Time(quote(text));
    let b = text.as_bytes();
    if b.len() < 20 || !text.is_ascii() {
        return Err(err());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, ParamError> {
        let s = &text[range];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        s.parse::<i64>().map_err(|_| err())
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(err());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(err());
    }
    // Go rejects leap seconds (60) too.
    if hour > 23 || minute > 59 || second > 59 {
        return Err(err());
    }
    let mut pos = 19;
    let mut frac_nanos: i64 = 0;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &text[start..pos];
        if digits.is_empty() {
            return Err(err());
        }
        let mut place = 100_000_000i64;
        for d in digits.bytes() {
            frac_nanos += i64::from(d - b'0') * place;
            place /= 10;
        }
    }
    let offset_secs: i64 = match &text[pos..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':' =>
        {
            let h = num(pos + 1..pos + 3)?;
            let m = num(pos + 4..pos + 6)?;
            if h > 23 || m > 59 {
                return Err(err());
            }
            let off = h * 3600 + m * 60;
            if zone.starts_with('-') {
                -off
            } else {
                off
            }
        }
        _ => return Err(err()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let range = || ParamError::TimeRange(quote(text));
    let nanos = i128::from(secs) * 1_000_000_000 + i128::from(frac_nanos);
    u64::try_from(nanos).map_err(|_| range())
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses one Jaeger `tag=key:value` parameter (split at the first colon; the value may contain
/// colons, e.g. URLs).
pub fn parse_tag(text: &str) -> Result<(String, String), ParamError> {
    match text.split_once(':') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ParamError::Tag(quote(text))),
    }
}

/// Parses a JSON object of tag filters (`{"http.status_code":"500","error":"true"}`). Numbers and
/// booleans are accepted as their text form, since that is what search compares against; nested
/// values are rejected. Keys come out sorted (serde_json's map), which keeps queries deterministic.
pub fn parse_tags_json(text: &str) -> Result<Vec<(String, String)>, ParamError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ParamError::TagsJson(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ParamError::TagsJson("expected a JSON object".into()));
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(ParamError::TagsJson(format!(
                    "value of {:?} must be a string",
                    quote(&k)
                )))
            }
        };
        out.push((k, text));
    }
    Ok(out)
}

/// Adds attribute filters, a later key replacing an earlier one (Jaeger merges them into a map).
pub fn merge_attributes(into: &mut Vec<(String, String)>, more: Vec<(String, String)>) {
    for (k, v) in more {
        if let Some(existing) = into.iter_mut().find(|(ek, _)| *ek == k) {
            existing.1 = v;
        } else {
            into.push((k, v));
        }
    }
}

/// The decoded query string, keeping repeated keys (Jaeger uses `tag=` and `traceID=` repeatedly).
#[derive(Debug, Default, Clone)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v): (Cow<'_, str>, Cow<'_, str>)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self { pairs }
    }

    /// The first non-empty value of `key`: an empty value counts as absent, as in Go's `FormValue`
    /// checks that Jaeger uses.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value under any of `keys`, with the key it was found under.
    pub fn get_any<'a>(&self, keys: &[&'a str]) -> Option<(&'a str, &str)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("100ms"), Ok(100 * MS));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500 * MS));
        assert_eq!(parse_go_duration("1m"), Ok(60 * S));
        assert_eq!(parse_go_duration("2h45m"), Ok((2 * 3600 + 45 * 60) * S));
        assert_eq!(
            parse_go_duration("1h1m1s1ms1us1ns"),
            Ok(3661 * S + MS + 1_000 + 1)
        );
        assert_eq!(parse_go_duration("5µs"), Ok(5_000));
        assert_eq!(parse_go_duration("5μs"), Ok(5_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500 * MS));
        assert_eq!(parse_go_duration("1.s"), Ok(S));
        assert_eq!(parse_go_duration("-1.5s"), Ok(-1_500 * MS));
        assert_eq!(parse_go_duration("+3ns"), Ok(3));
        assert_eq!(
            parse_go_duration("1.0000000009s"),
            Ok(S),
            "sub-ns digits dropped"
        );
        assert_eq!(parse_go_duration("2562047h"), Ok(2_562_047 * 3600 * S));
    }

    #[test]
    fn go_duration_garbage() {
        for bad in [
            "", "-", "+", "ms", "10", "1.5", "1x", "1 s", "s1", ".s", "1..5s", "1e3ms", "1sm",
            "1ms ", " 1ms", "１s", "1hh", "💥", "0.", "-0x",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(matches!(
            parse_go_duration("9999999999999999999h"),
            Err(ParamError::DurationRange(_))
        ));
        assert!(matches!(
            parse_go_duration("2562048h"),
            Err(ParamError::DurationRange(_))
        ));
        assert!(matches!(
            parse_go_duration(&"9".repeat(100)),
            Err(ParamError::Duration(_))
        ));
        assert!(matches!(
            parse_go_duration(&format!("{}s", "9".repeat(100))),
            Err(ParamError::DurationRange(_))
        ));
        assert!(matches!(
            parse_duration_nanos("-1s"),
            Err(ParamError::NegativeDuration(_))
        ));
        assert_eq!(parse_duration_nanos("1ms"), Ok(1_000_000));
    }

    #[test]
    fn integers_and_epochs() {
        assert_eq!(parse_u64("42"), Ok(42));
        assert_eq!(
            parse_epoch_micros("1700000000000000"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_epoch_millis("1700000000000"),
            Ok(1_700_000_000_000_000_000)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "abc",
            " 1",
            "99999999999999999999999",
        ] {
            assert!(parse_u64(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_epoch_micros("18446744073709551615").is_err(),
            "overflow on scaling"
        );
    }

    #[test]
    fn trace_ids() {
        assert_eq!(
            parse_trace_id("abc").map(|t| t.to_hex()),
            Ok(format!("{:0>32}", "abc"))
        );
        assert!(parse_trace_id(&"f".repeat(32)).is_ok());
        for bad in ["", "0", "xyz", &"a".repeat(33), "0x12", "12 "] {
            assert!(parse_trace_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_nanos("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000 * S as u64)
        );
        assert_eq!(
            parse_rfc3339_nanos("2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2023-11-14T22:13:20.123456789Z"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("2023-11-15T00:13:20+02:00"),
            Ok(1_700_000_000 * S as u64)
        );
        assert_eq!(
            parse_rfc3339_nanos("2023-11-14T20:13:20-02:00"),
            Ok(1_700_000_000 * S as u64)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800 * S as u64)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0200",
            "2023-13-14T22:13:20Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:60Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14X22:13:20Z",
            "20a3-11-14T22:13:20Z",
            "2023-11-14T22:13:20Zjunk",
            "2023-11-14T22:13:20ééZ",
            "1700000000",
        ] {
            assert!(parse_rfc3339_nanos(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_rfc3339_nanos("1969-12-31T23:59:59Z"),
            Err(ParamError::TimeRange(_))
        ));
    }

    #[test]
    fn tags() {
        assert_eq!(
            parse_tag("http.url:http://x:8080/a"),
            Ok(("http.url".into(), "http://x:8080/a".into()))
        );
        assert_eq!(parse_tag("k:"), Ok(("k".into(), String::new())));
        assert!(parse_tag("novalue").is_err());
        assert!(parse_tag(":v").is_err());
        assert_eq!(
            parse_tags_json(r#"{"error":"true","n":500,"b":false}"#),
            Ok(vec![
                ("b".into(), "false".into()),
                ("error".into(), "true".into()),
                ("n".into(), "500".into())
            ])
        );
        assert!(parse_tags_json("[1]").is_err());
        assert!(parse_tags_json("{").is_err());
        assert!(parse_tags_json(r#"{"a":{"b":1}}"#).is_err());
        assert!(parse_tags_json(r#"{"a":null}"#).is_err());
        let mut attrs = vec![("a".to_string(), "1".to_string())];
        merge_attributes(
            &mut attrs,
            vec![("b".into(), "2".into()), ("a".into(), "3".into())],
        );
        assert_eq!(
            attrs,
            vec![("a".into(), "3".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn query_params_keep_repeats_and_skip_empty() {
        let q = QueryParams::parse(Some("tag=a%3A1&tag=b:2&service=&service=cart&x=%ZZ"));
        assert_eq!(q.all("tag").collect::<Vec<_>>(), vec!["a:1", "b:2"]);
        assert_eq!(q.get("service"), Some("cart"));
        assert_eq!(q.get("missing"), None);
        assert_eq!(q.get_any(&["nope", "service"]), Some(("service", "cart")));
        assert_eq!(QueryParams::parse(None).get("a"), None);
    }
}
