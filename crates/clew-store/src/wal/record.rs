//! WAL record framing: `[len: u32 LE][crc32: u32 LE][body]`, body =
//! `[version: u8][tenant_len: u16 LE][tenant][ExportTraceServiceRequest protobuf]`.
//! The CRC (IEEE, crc32fast) covers the body, so a torn or bit-flipped record is detected.

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use clew_model::{SpanBatch, Tenant};

pub const HEADER_LEN: usize = 8;
const VERSION: u8 = 1;
/// A record larger than this is treated as corruption on replay.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record length {0} exceeds the limit")]
    TooLarge(usize),
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("record body malformed: {0}")]
    Malformed(String),
}

/// Encodes one batch as a framed record.
pub fn encode(batch: &SpanBatch) -> Vec<u8> {
    let tenant = batch.tenant.as_str().as_bytes();
    // Field 1 of ExportTraceServiceRequest (`repeated ResourceSpans resource_spans`), encoded from
    // the borrowed batch: the same bytes as building the request, without copying every span first.
    let proto_len: usize = batch
        .resource_spans
        .iter()
        .map(|rs| prost::encoding::message::encoded_len(1, rs))
        .sum();
    let body_len = 1 + 2 + tenant.len() + proto_len;
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant);
    for rs in &batch.resource_spans {
        prost::encoding::message::encode(1, rs, &mut out);
    }
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the record at the start of `buf`, returning the batch and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(SpanBatch, usize), RecordError> {
    if buf.len() < HEADER_LEN {
        return Err(RecordError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge(len));
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Err(RecordError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[HEADER_LEN..total];
    if crc32fast::hash(body) != crc {
        return Err(RecordError::Checksum);
    }
    if body.len() < 3 {
        return Err(RecordError::Malformed(
            "body shorter than its header".into(),
        ));
    }
    if body[0] != VERSION {
        return Err(RecordError::Version(body[0]));
    }
    let tlen = u16::from_le_bytes([body[1], body[2]]) as usize;
    let tenant_bytes = body
        .get(3..3 + tlen)
        .ok_or_else(|| RecordError::Malformed("tenant cut short".into()))?;
    let tenant = std::str::from_utf8(tenant_bytes)
        .ok()
        .and_then(|t| Tenant::new(t).ok())
        .ok_or_else(|| RecordError::Malformed("invalid tenant".into()))?;
    let req = ExportTraceServiceRequest::decode(&body[3 + tlen..])
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    Ok((SpanBatch::new(tenant, req.resource_spans), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};

    fn batch() -> SpanBatch {
        SpanBatch::new(
            Tenant::new("acme").unwrap(),
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "op".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        )
    }

    #[test]
    fn body_is_a_plain_export_request() {
        let rec = encode(&batch());
        let tenant_len = "acme".len();
        let proto = &rec[HEADER_LEN + 3 + tenant_len..];
        let expected = ExportTraceServiceRequest {
            resource_spans: batch().resource_spans,
        }
        .encode_to_vec();
        assert_eq!(proto, expected.as_slice());
    }

    #[test]
    fn round_trip() {
        let rec = encode(&batch());
        let (b, n) = decode(&rec).unwrap();
        assert_eq!(n, rec.len());
        assert_eq!(b.tenant.as_str(), "acme");
        assert_eq!(b.resource_spans, batch().resource_spans);
    }

    #[test]
    fn every_truncation_is_detected() {
        let rec = encode(&batch());
        for cut in 0..rec.len() {
            assert!(
                matches!(decode(&rec[..cut]), Err(RecordError::Truncated { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let rec = encode(&batch());
        for i in 4..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn garbage_and_huge_lengths() {
        assert!(decode(&[0xff; 64]).is_err());
        let mut huge = vec![0u8; 16];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::TooLarge(_))));
    }
}
