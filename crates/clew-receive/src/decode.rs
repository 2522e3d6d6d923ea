//! HTTP body handling shared by the HTTP receivers: content-type and content-encoding negotiation,
//! reading the body under a size cap, and gzip decompression under the same cap (so a small
//! compressed body cannot expand into an unbounded allocation).

use crate::errors::Rejection;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::io::Read;

/// The payload encodings an OTLP/HTTP request can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaType {
    Protobuf,
    Json,
}

impl MediaType {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            MediaType::Protobuf => "application/x-protobuf",
            MediaType::Json => "application/json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    Identity,
    Gzip,
}

/// The media type of the `Content-Type` header without parameters, lowercased; `None` when absent.
fn essence(headers: &HeaderMap) -> Result<Option<String>, Rejection> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Rejection::UnsupportedMediaType("Content-Type is not visible ASCII".into()))?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(Some(essence))
}

/// OTLP/HTTP: `application/x-protobuf` or `application/json`; anything else (or nothing) is 415.
pub(crate) fn otlp_media_type(headers: &HeaderMap) -> Result<MediaType, Rejection> {
    match essence(headers)?.as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => Ok(MediaType::Protobuf),
        Some("application/json") => Ok(MediaType::Json),
        Some(other) => Err(Rejection::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: use application/x-protobuf or application/json"
        ))),
        None => Err(Rejection::UnsupportedMediaType(
            "missing Content-Type: use application/x-protobuf or application/json".into(),
        )),
    }
}

/// Zipkin v2: JSON only. A missing Content-Type is taken as JSON, as Zipkin's own server does.
pub(crate) fn zipkin_media_type(headers: &HeaderMap) -> Result<(), Rejection> {
    match essence(headers)?.as_deref() {
        None | Some("application/json") | Some("") => Ok(()),
        Some("application/x-protobuf") | Some("application/protobuf") => Err(Rejection::UnsupportedMediaType(
            "Zipkin protobuf (proto3) is not supported: send Zipkin v2 JSON as application/json".into(),
        )),
        Some(other) => Err(Rejection::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: send Zipkin v2 JSON as application/json"
        ))),
    }
}

pub(crate) fn content_encoding(headers: &HeaderMap) -> Result<ContentEncoding, Rejection> {
    let mut encoding = ContentEncoding::Identity;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| {
            Rejection::UnsupportedMediaType("Content-Encoding is not visible ASCII".into())
        })?;
        // A list of codings is applied in order; we support at most one real coding.
        for coding in text
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
        {
            match (coding.as_str(), encoding) {
                ("identity", _) => {}
                ("gzip" | "x-gzip", ContentEncoding::Identity) => encoding = ContentEncoding::Gzip,
                ("gzip" | "x-gzip", ContentEncoding::Gzip) => {
                    return Err(Rejection::UnsupportedMediaType(
                        "gzip applied twice is not supported".into(),
                    ))
                }
                (other, _) => {
                    return Err(Rejection::UnsupportedMediaType(format!(
                        "unsupported Content-Encoding {other:?}: use gzip or identity"
                    )))
                }
            }
        }
    }
    Ok(encoding)
}

/// Reads the body as sent, refusing more than `max` bytes (early, from `Content-Length`, when the
/// client declares it).
pub(crate) async fn read_capped(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Bytes, Rejection> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(Rejection::TooLarge { limit: max });
        }
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Rejection::Malformed(format!("failed to read request body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(Rejection::TooLarge { limit: max });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Decompresses a gzip body, refusing output larger than `max` bytes. Concatenated gzip members
/// are one stream (RFC 1952); a truncated or corrupt stream is a malformed request.
pub(crate) fn gunzip_capped(data: &[u8], max: usize) -> Result<Vec<u8>, Rejection> {
    // An empty body labelled gzip (some clients compress only non-empty payloads but always set
    // the header) is an empty payload, not a truncated stream.
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let decoder = flate2::read::MultiGzDecoder::new(data);
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    // Read one byte past the cap so "exactly max" and "more than max" can be told apart without
    // ever holding more than max + 1 bytes.
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    match decoder.take(cap).read_to_end(&mut out) {
        Ok(_) if out.len() > max => Err(Rejection::TooLarge { limit: max }),
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Rejection::Malformed("truncated gzip body".into()))
        }
        Err(e) => Err(Rejection::Malformed(format!("invalid gzip body: {e}"))),
    }
}

/// Reads the body and removes its content encoding; both sizes are capped at `max`.
pub(crate) async fn read_decoded(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Bytes, Rejection> {
    let encoding = content_encoding(headers)?;
    let raw = read_capped(headers, body, max).await?;
    match encoding {
        ContentEncoding::Identity => Ok(raw),
        ContentEncoding::Gzip => {
            // Inflating up to `max` bytes is CPU work; keep it off the async workers.
            tokio::task::spawn_blocking(move || gunzip_capped(&raw, max).map(Bytes::from))
                .await
                .map_err(|e| Rejection::Misconfigured(format!("decompression task failed: {e}")))?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn media_types() {
        assert_eq!(
            otlp_media_type(&headers(&[("content-type", "application/x-protobuf")])).unwrap(),
            MediaType::Protobuf
        );
        assert_eq!(
            otlp_media_type(&headers(&[(
                "content-type",
                "Application/JSON; charset=utf-8"
            )]))
            .unwrap(),
            MediaType::Json
        );
        assert!(otlp_media_type(&headers(&[("content-type", "text/plain")])).is_err());
        assert!(otlp_media_type(&HeaderMap::new())
            .unwrap_err()
            .message()
            .contains("missing"));
        assert!(zipkin_media_type(&HeaderMap::new()).is_ok());
        assert!(zipkin_media_type(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(
            zipkin_media_type(&headers(&[("content-type", "application/x-protobuf")])).is_err()
        );
        assert!(zipkin_media_type(&headers(&[("content-type", "application/x-thrift")])).is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(
            content_encoding(&HeaderMap::new()).unwrap(),
            ContentEncoding::Identity
        );
        assert_eq!(
            content_encoding(&headers(&[("content-encoding", "identity")])).unwrap(),
            ContentEncoding::Identity
        );
        assert_eq!(
            content_encoding(&headers(&[("content-encoding", "GZIP")])).unwrap(),
            ContentEncoding::Gzip
        );
        assert!(content_encoding(&headers(&[("content-encoding", "br")])).is_err());
        assert!(content_encoding(&headers(&[("content-encoding", "gzip, gzip")])).is_err());
    }

    #[test]
    fn gunzip_round_trip_and_exact_limit() {
        let data = vec![7u8; 1000];
        assert_eq!(gunzip_capped(&gzip(&data), 1000).unwrap(), data);
        assert!(matches!(
            gunzip_capped(&gzip(&data), 999),
            Err(Rejection::TooLarge { limit: 999 })
        ));
        let mut two = gzip(b"ab");
        two.extend(gzip(b"cd"));
        assert_eq!(
            gunzip_capped(&two, 10).unwrap(),
            b"abcd",
            "concatenated members"
        );
    }

    #[test]
    fn gunzip_bomb_is_capped() {
        // 64 MiB of zeros compress to ~64 KiB; the cap stops inflation at 1 MiB + 1 bytes.
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        assert!(matches!(
            gunzip_capped(&bomb, 1024 * 1024),
            Err(Rejection::TooLarge { .. })
        ));
    }

    #[test]
    fn gunzip_garbage_and_truncation() {
        let full = gzip(b"hello world, hello world, hello world");
        for cut in 1..full.len() {
            let err = gunzip_capped(&full[..cut], 1000).unwrap_err();
            assert!(
                matches!(err, Rejection::Malformed(_)),
                "cut at {cut}: {err:?}"
            );
        }
        assert!(gunzip_capped(&full[..full.len() - 4], 1000)
            .unwrap_err()
            .message()
            .contains("truncated"));
        assert!(matches!(
            gunzip_capped(b"definitely not gzip", 1000),
            Err(Rejection::Malformed(_))
        ));
        let mut corrupt = full.clone();
        corrupt[12] ^= 0xff;
        assert!(gunzip_capped(&corrupt, 1000).is_err());
        assert_eq!(
            gunzip_capped(b"", 1000).unwrap(),
            b"",
            "empty body is an empty stream"
        );
    }

    #[tokio::test]
    async fn read_caps_declared_and_streamed_length() {
        let h = headers(&[("content-length", "100")]);
        assert!(matches!(
            read_capped(&h, Body::from(vec![0u8; 100]), 99).await,
            Err(Rejection::TooLarge { .. })
        ));
        // No Content-Length: the streamed size is counted.
        let stream = futures::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 10]))),
        );
        let r = read_capped(&HeaderMap::new(), Body::from_stream(stream), 99).await;
        assert!(matches!(r, Err(Rejection::TooLarge { .. })));
        let ok = read_capped(&HeaderMap::new(), Body::from(vec![1u8; 99]), 99)
            .await
            .unwrap();
        assert_eq!(ok.len(), 99);
    }
}
