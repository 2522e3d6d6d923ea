//! A compact, analysis-friendly view of a span: the few fields the doctor looks at, extracted once.

use clew_model::attrs;
use clew_model::otlp::common::KeyValue;
use clew_model::otlp::trace::{span::SpanKind, status::StatusCode};
use clew_model::FlatSpan;

pub(crate) const KIND_INTERNAL: i32 = SpanKind::Internal as i32;
pub(crate) const KIND_SERVER: i32 = SpanKind::Server as i32;
pub(crate) const KIND_CLIENT: i32 = SpanKind::Client as i32;
pub(crate) const KIND_PRODUCER: i32 = SpanKind::Producer as i32;
pub(crate) const KIND_CONSUMER: i32 = SpanKind::Consumer as i32;

/// Lower-case name of an OTLP span kind, as the doctor reports it.
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        KIND_INTERNAL => "internal",
        KIND_SERVER => "server",
        KIND_CLIENT => "client",
        KIND_PRODUCER => "producer",
        KIND_CONSUMER => "consumer",
        _ => "unspecified",
    }
}

/// The 8-byte span id, or `None` for an absent / all-zero / malformed id.
pub(crate) fn span_id(bytes: &[u8]) -> Option<[u8; 8]> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    (arr != [0u8; 8]).then_some(arr)
}

pub(crate) fn trace_id(bytes: &[u8]) -> Option<[u8; 16]> {
    let arr: [u8; 16] = bytes.try_into().ok()?;
    (arr != [0u8; 16]).then_some(arr)
}

pub(crate) fn hex8(id: &[u8; 8]) -> String {
    hex_lower(id)
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Trace id text as the Jaeger API renders it (16 digits when the high half is zero).
pub(crate) fn trace_id_text(id: &[u8; 16]) -> String {
    if id[..8] == [0u8; 8] {
        hex_lower(&id[8..])
    } else {
        hex_lower(id)
    }
}

pub(crate) fn is_error(fs: &FlatSpan) -> bool {
    fs.span.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32)
}

/// Where a span ran: `host.name`, else `service.name` + `service.instance.id`, else the service.
/// Spans with the same host key share a clock.
pub(crate) fn host_key(fs: &FlatSpan) -> String {
    let r = &fs.resource.attributes;
    if let Some(h) = attrs::get_str(r, "host.name").filter(|s| !s.is_empty()) {
        return format!("host:{h}");
    }
    instance_key(fs)
}

/// The service instance: `service.name` + (`service.instance.id` or `host.name`).
pub(crate) fn instance_key(fs: &FlatSpan) -> String {
    let r = &fs.resource.attributes;
    let inst = attrs::get_str(r, "service.instance.id")
        .filter(|s| !s.is_empty())
        .or_else(|| attrs::get_str(r, "host.name").filter(|s| !s.is_empty()))
        .unwrap_or("");
    format!("{}\u{1f}{inst}", fs.service_name())
}

fn str_attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs::get_str(a, key).filter(|s| !s.is_empty())
}

fn int_attr(a: &[KeyValue], key: &str) -> Option<i64> {
    use clew_model::otlp::common::any_value::Value;
    match attrs::get(a, key)?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

/// `(host, port)` of a URL such as `http://cart:8080/x?y`; host lower-cased, brackets kept off.
pub(crate) fn url_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    host_port(authority)
}

/// Splits `host[:port]` (or `[v6]:port`).
pub(crate) fn host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((h.to_ascii_lowercase(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_ascii_lowercase(), p.parse().ok())),
        _ => Some((authority.to_ascii_lowercase(), None)),
    }
}

fn push_host(out: &mut Vec<String>, host: &str, port: Option<u16>, bare_too: bool) {
    let host = host.to_ascii_lowercase();
    if !bare_too {
        // The client side: a host name often is the service name (Kubernetes, Compose).
        out.push(format!("svc:{host}"));
    }
    match port {
        Some(p) => {
            out.push(format!("{host}:{p}"));
            if bare_too {
                out.push(host);
            }
        }
        None => out.push(host),
    }
}

/// Names under which the client side of a call (CLIENT / PRODUCER span) addresses its peer.
/// With a known port only `host:port` is used, so two services on one host are told apart.
pub(crate) fn peer_names(fs: &FlatSpan) -> Vec<String> {
    let a = &fs.span.attributes;
    let mut out = Vec::new();
    if let Some(p) = str_attr(a, "peer.service") {
        out.push(format!("svc:{}", p.to_ascii_lowercase()));
    }
    for (hk, pk) in [
        ("server.address", "server.port"),
        ("net.peer.name", "net.peer.port"),
    ] {
        if let Some(h) = str_attr(a, hk) {
            let port = int_attr(a, pk).and_then(|p| u16::try_from(p).ok());
            push_host(&mut out, h, port, false);
        }
    }
    for key in ["url.full", "http.url"] {
        if let Some((h, port)) = str_attr(a, key).and_then(url_host_port) {
            push_host(&mut out, &h, port, false);
        }
    }
    if let Some(d) = messaging_destination(fs) {
        out.push(format!("dest:{d}"));
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn messaging_destination(fs: &FlatSpan) -> Option<String> {
    let a = &fs.span.attributes;
    str_attr(a, "messaging.destination.name")
        .or_else(|| str_attr(a, "messaging.destination"))
        .map(|d| d.to_ascii_lowercase())
}

/// Names under which the receiving side (a SERVER / CONSUMER root span) can be addressed: its
/// service name, the host it was called on (`server.address`, `net.host.name`, `http.host`, URL
/// host — with and without port) and the messaging destination it consumes from.
pub(crate) fn own_names(fs: &FlatSpan) -> Vec<String> {
    let a = &fs.span.attributes;
    let mut out = vec![format!("svc:{}", fs.service_name().to_ascii_lowercase())];
    for (hk, pk) in [
        ("server.address", "server.port"),
        ("net.host.name", "net.host.port"),
    ] {
        if let Some(h) = str_attr(a, hk) {
            let port = int_attr(a, pk).and_then(|p| u16::try_from(p).ok());
            push_host(&mut out, h, port, true);
        }
    }
    if let Some((h, port)) = str_attr(a, "http.host").and_then(host_port) {
        let port =
            port.or_else(|| int_attr(a, "net.host.port").and_then(|p| u16::try_from(p).ok()));
        push_host(&mut out, &h, port, true);
    }
    for key in ["url.full", "http.url"] {
        if let Some((h, port)) = str_attr(a, key).and_then(url_host_port) {
            push_host(&mut out, &h, port, true);
        }
    }
    if let Some(d) = messaging_destination(fs) {
        out.push(format!("dest:{d}"));
    }
    out.sort();
    out.dedup();
    out
}

/// The name of the uninstrumented peer a CLIENT / PRODUCER span talks to, for a virtual node:
/// `peer.service`, then `db.system.name` / `db.system`, then `server.address` / `net.peer.name` /
/// URL host, then the messaging destination.
pub(crate) fn virtual_peer(a: &[KeyValue]) -> Option<(String, &'static str)> {
    if let Some(p) = str_attr(a, "peer.service") {
        return Some((p.to_string(), "virtual_node"));
    }
    if let Some(db) = str_attr(a, "db.system.name").or_else(|| str_attr(a, "db.system")) {
        return Some((db.to_string(), "database"));
    }
    if let Some(h) = str_attr(a, "server.address").or_else(|| str_attr(a, "net.peer.name")) {
        return Some((h.to_string(), "virtual_node"));
    }
    for key in ["url.full", "http.url"] {
        if let Some((h, _)) = str_attr(a, key).and_then(url_host_port) {
            return Some((h, "virtual_node"));
        }
    }
    if let Some(sys) = str_attr(a, "messaging.system") {
        return Some((sys.to_string(), "messaging_system"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_authorities() {
        assert_eq!(
            url_host_port("http://Cart:8080/x?y=1"),
            Some(("cart".into(), Some(8080)))
        );
        assert_eq!(
            url_host_port("https://u:p@example.com/a"),
            Some(("example.com".into(), None))
        );
        assert_eq!(
            url_host_port("http://[::1]:9/"),
            Some(("::1".into(), Some(9)))
        );
        assert_eq!(url_host_port("no-scheme"), None);
        assert_eq!(
            host_port("127.0.0.1:80"),
            Some(("127.0.0.1".into(), Some(80)))
        );
        assert_eq!(host_port(""), None);
        assert_eq!(trace_id_text(&[0; 16]), "0000000000000000");
    }
}
