//! WAL records: the shared sealed-record codec ([`clew_encryption::sealed_record`], with no clear
//! fields and compact envelope JSON) around the WAL's payload, a span batch as an
//! `ExportTraceServiceRequest` protobuf:
//!
//! * `1` — plaintext batch: `[len][crc32][1][tenant_len: u16 LE][tenant][protobuf]`. Written by
//!   stores without `storage.encryption` (and by older Clew); always replayed.
//! * `2` — sealed batch: `[len][crc32][2][tenant_len][tenant][key id: 16][sealed]`, `sealed` =
//!   [`clew_encryption::seal_record`]`(data key, aad = the clear body before it, protobuf)`, so a
//!   record moved to another tenant or key does not open.
//! * `3` — key declaration: `[len][crc32][3][tenant_len][tenant][key id: 16][envelope JSON]`: the
//!   wrapped data key of `key id`. The WAL thread writes one before the first sealed record of
//!   each key in each segment, so a segment replays on its own.
//!
//! Framing, versions, sealing and the declaration's tenant check live in the codec (shared with
//! the exporters' sending queue); this module turns payloads into [`SpanBatch`]es and tenants
//! into [`Tenant`]s.

use clew_encryption::sealed::record::RecordKey;
use clew_encryption::sealed_record::{self as codec, Body, EnvelopeJson, Layout, SealedBody};
use clew_encryption::Envelope;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use clew_model::{SpanBatch, Tenant};

pub use codec::{
    frame, KeyId, RecordError, HEADER_LEN, KEY_ID_LEN, MAX_RECORD_BYTES, VERSION_KEY,
    VERSION_PLAIN, VERSION_SEALED,
};

/// The WAL's layout: no clear fields; declarations in compact JSON (as the WAL always wrote).
const LAYOUT: Layout<0> = Layout::new(EnvelopeJson::Compact);

/// One decoded record.
#[derive(Debug)]
pub enum Record<'a> {
    /// Version 1: a plaintext batch.
    Plain(SpanBatch),
    /// Version 2: a sealed batch; open it with its key.
    Sealed(SealedRecord<'a>),
    /// Version 3: a key declaration.
    Key(KeyDecl),
}

/// A sealed batch record, not yet opened.
#[derive(Debug)]
pub struct SealedRecord<'a> {
    pub tenant: Tenant,
    pub key_id: KeyId,
    body: SealedBody<'a, 0>,
}

impl SealedRecord<'_> {
    /// Decrypts and decodes the batch.
    pub fn open(&self, data_key: &[u8; 32]) -> Result<SpanBatch, RecordError> {
        let proto = self.body.open(&RecordKey::new(data_key))?;
        batch(self.tenant.clone(), &proto)
    }
}

/// A key declaration: the wrapped data key `key_id` of `tenant`.
#[derive(Debug, Clone)]
pub struct KeyDecl {
    pub tenant: Tenant,
    pub key_id: KeyId,
    pub envelope: Envelope,
}

fn tenant(name: &str) -> Result<Tenant, RecordError> {
    Tenant::new(name).map_err(|e| RecordError::Malformed(format!("invalid tenant: {e}")))
}

fn batch(tenant: Tenant, proto: &[u8]) -> Result<SpanBatch, RecordError> {
    let req = ExportTraceServiceRequest::decode(proto)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    Ok(SpanBatch::new(tenant, req.resource_spans))
}

fn proto_len(batch: &SpanBatch) -> usize {
    batch
        .resource_spans
        .iter()
        .map(|rs| prost::encoding::message::encoded_len(1, rs))
        .sum()
}

/// Field 1 of ExportTraceServiceRequest (`repeated ResourceSpans resource_spans`), encoded from
/// the borrowed batch: the same bytes as building the request, without copying every span first.
fn encode_proto(batch: &SpanBatch, out: &mut Vec<u8>) {
    for rs in &batch.resource_spans {
        prost::encoding::message::encode(1, rs, out);
    }
}

/// Encodes one batch as a plaintext (version 1) record.
pub fn encode_plain(batch: &SpanBatch) -> Vec<u8> {
    LAYOUT.encode_plain_with(batch.tenant.as_str(), &[], proto_len(batch), |out| {
        encode_proto(batch, out)
    })
}

/// Encodes one batch as a sealed (version 2) record under `data_key`, named `key_id`.
pub fn encode_sealed(batch: &SpanBatch, key_id: &KeyId, data_key: &[u8; 32]) -> Vec<u8> {
    let mut proto = Vec::with_capacity(proto_len(batch));
    encode_proto(batch, &mut proto);
    LAYOUT.encode_sealed(
        batch.tenant.as_str(),
        &[],
        key_id,
        &RecordKey::new(data_key),
        &proto,
    )
}

/// Encodes a key declaration (version 3): the envelope of `key_id`, no key material.
pub fn encode_key(tenant: &str, key_id: &KeyId, envelope: &Envelope) -> Vec<u8> {
    LAYOUT.encode_key(tenant, key_id, envelope)
}

/// Parses a checked body (from [`frame`]).
pub fn parse(body: &[u8]) -> Result<Record<'_>, RecordError> {
    Ok(match LAYOUT.parse(body)? {
        Body::Plain {
            tenant: t, payload, ..
        } => Record::Plain(batch(tenant(t)?, payload)?),
        Body::Sealed(s) => Record::Sealed(SealedRecord {
            tenant: tenant(s.tenant)?,
            key_id: s.key_id,
            body: s,
        }),
        Body::Key(k) => Record::Key(KeyDecl {
            tenant: tenant(k.tenant)?,
            key_id: k.key_id,
            envelope: k.envelope,
        }),
    })
}

/// Decodes the record at the start of `buf`, returning it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), RecordError> {
    let (body, used) = frame(buf)?;
    Ok((parse(body)?, used))
}

/// One piece of a segment as a reader walks it: a record whose frame checks, or a damaged region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A framed record (checksum verified) at `offset`, `len` bytes with its header.
    Record { offset: usize, len: usize },
    /// Bytes that frame no record, from `offset` to the next record that does (or to the end).
    Damaged {
        offset: usize,
        len: usize,
        error: RecordError,
        /// Whether a good record follows: a damaged region in the middle (skipped), not a tail
        /// (cut off).
        resynced: bool,
    },
}

/// Whether a damaged tail looks like an interrupted write (a record cut short by the end of
/// the file, or zeros a crash left in a preallocated tail) rather than damage to written data.
pub fn is_torn_tail(data: &[u8], offset: usize, error: &RecordError) -> bool {
    matches!(error, RecordError::Truncated { .. })
        || data
            .get(offset..)
            .is_some_and(|t| t.iter().all(|&b| b == 0))
}

/// Cheap plausibility of a record header at `at` before its checksum is computed: a length that
/// fits, a known version and a tenant name of valid length and characters. It keeps resync from
/// hashing megabytes at every byte of a damaged region.
fn plausible(data: &[u8], at: usize) -> bool {
    let Some(h) = data.get(at..at + HEADER_LEN + 3) else {
        return false;
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if !(3..=MAX_RECORD_BYTES).contains(&len) || at + HEADER_LEN + len > data.len() {
        return false;
    }
    if !matches!(h[8], VERSION_PLAIN | VERSION_SEALED | VERSION_KEY) {
        return false;
    }
    let tlen = u16::from_le_bytes([h[9], h[10]]) as usize;
    if tlen == 0 || tlen > clew_model::tenant::MAX_TENANT_LEN || 3 + tlen > len {
        return false;
    }
    data[at + HEADER_LEN + 3..at + HEADER_LEN + 3 + tlen]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Where the next record whose frame checks starts, after damage at `offset`. First where the
/// damaged record's own length says it ends (a flipped byte in its body leaves the length
/// intact), then every following byte. A false match needs a plausible header and a CRC-32 match
/// (odds about 2^-32 per candidate that passes the header test).
pub fn resync(data: &[u8], offset: usize) -> Option<usize> {
    let try_at = |p: usize| plausible(data, p) && frame(&data[p..]).is_ok();
    if let Some(h) = data.get(offset..offset + HEADER_LEN) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let next = offset.saturating_add(HEADER_LEN).saturating_add(len);
        if len > 0 && next < data.len() && try_at(next) {
            return Some(next);
        }
    }
    (offset + 1..data.len().saturating_sub(HEADER_LEN)).find(|&p| try_at(p))
}

/// Splits a segment into records and damaged regions. Replay uses it to skip a damaged record
/// in the middle of a segment (the acknowledged records after it stay) and to cut a damaged tail;
/// `clew fsck` to report both.
pub fn walk(data: &[u8]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        match frame(&data[offset..]) {
            Ok((_, used)) => {
                out.push(Piece::Record { offset, len: used });
                offset += used;
            }
            Err(error) => match resync(data, offset) {
                Some(next) => {
                    out.push(Piece::Damaged {
                        offset,
                        len: next - offset,
                        error,
                        resynced: true,
                    });
                    offset = next;
                }
                None => {
                    out.push(Piece::Damaged {
                        offset,
                        len: data.len() - offset,
                        error,
                        resynced: false,
                    });
                    break;
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_encryption::{ProviderKind, SealError};
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};

    const KEY: [u8; 32] = [7; 32];
    const KEY_ID: KeyId = [9; 16];

    fn batch() -> SpanBatch {
        batch_of("acme")
    }

    fn batch_of(tenant: &str) -> SpanBatch {
        SpanBatch::new(
            Tenant::new(tenant).unwrap(),
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "secret-op".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        )
    }

    fn envelope(tenant: &str) -> Envelope {
        Envelope {
            format: clew_encryption::ENVELOPE_FORMAT,
            provider: ProviderKind::Local,
            tenant: tenant.into(),
            kek_id: "ring".into(),
            kek_version: Some(1),
            wrapped: "d3JhcHBlZA==".into(),
            created_unix: 1_700_000_000,
        }
    }

    fn plain_of(rec: &[u8]) -> SpanBatch {
        match decode(rec).unwrap().0 {
            Record::Plain(b) => b,
            other => panic!("not a plain record: {other:?}"),
        }
    }

    fn open_sealed(rec: &[u8], key: &[u8; 32]) -> Result<SpanBatch, RecordError> {
        match decode(rec)?.0 {
            Record::Sealed(s) => s.open(key),
            other => panic!("not a sealed record: {other:?}"),
        }
    }

    /// A record framed by hand from its body (`len | crc32 | body`), not by the codec.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut rec = (body.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        rec.extend_from_slice(body);
        rec
    }

    /// The record's body behind a recomputed frame.
    fn finish(rec: Vec<u8>) -> Vec<u8> {
        framed(&rec[HEADER_LEN..])
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn plain_body_is_a_plain_export_request() {
        let rec = encode_plain(&batch());
        let tenant_len = "acme".len();
        assert_eq!(rec[HEADER_LEN], VERSION_PLAIN);
        let proto = &rec[HEADER_LEN + 3 + tenant_len..];
        let expected = ExportTraceServiceRequest {
            resource_spans: batch().resource_spans,
        }
        .encode_to_vec();
        assert_eq!(proto, expected.as_slice());
    }

    /// The v1 layout as older Clew wrote it, byte for byte (built by hand, not by the encoder).
    #[test]
    fn v1_records_written_by_older_builds_still_decode() {
        let proto = ExportTraceServiceRequest {
            resource_spans: batch().resource_spans,
        }
        .encode_to_vec();
        let mut body = vec![1u8, 4, 0];
        body.extend_from_slice(b"acme");
        body.extend_from_slice(&proto);
        let rec = framed(&body);
        assert_eq!(rec, encode_plain(&batch()));
        let b = plain_of(&rec);
        assert_eq!(b.tenant.as_str(), "acme");
        assert_eq!(b.resource_spans, batch().resource_spans);
    }

    #[test]
    fn plain_round_trip() {
        let rec = encode_plain(&batch());
        let (r, n) = decode(&rec).unwrap();
        assert_eq!(n, rec.len());
        let Record::Plain(b) = r else {
            panic!("not plain")
        };
        assert_eq!(b.tenant.as_str(), "acme");
        assert_eq!(b.resource_spans, batch().resource_spans);
    }

    #[test]
    fn sealed_round_trip_and_no_plaintext() {
        let rec = encode_sealed(&batch(), &KEY_ID, &KEY);
        assert!(!contains(&rec, b"secret-op"));
        let (r, n) = decode(&rec).unwrap();
        assert_eq!(n, rec.len());
        let Record::Sealed(s) = r else {
            panic!("not sealed")
        };
        assert_eq!(s.tenant.as_str(), "acme");
        assert_eq!(s.key_id, KEY_ID);
        let b = s.open(&KEY).unwrap();
        assert_eq!(b.tenant.as_str(), "acme");
        assert_eq!(b.resource_spans, batch().resource_spans);
        // Two seals of the same batch differ (random nonce).
        assert_ne!(rec, encode_sealed(&batch(), &KEY_ID, &KEY));
    }

    #[test]
    fn key_declaration_round_trip_holds_no_key() {
        let rec = encode_key("acme", &KEY_ID, &envelope("acme"));
        let (r, n) = decode(&rec).unwrap();
        assert_eq!(n, rec.len());
        let Record::Key(k) = r else {
            panic!("not a key")
        };
        assert_eq!(k.tenant.as_str(), "acme");
        assert_eq!(k.key_id, KEY_ID);
        assert_eq!(k.envelope, envelope("acme"));
        assert!(!contains(&rec, &KEY));
    }

    #[test]
    fn key_declaration_for_another_tenant_is_malformed() {
        let rec = encode_key("acme", &KEY_ID, &envelope("other"));
        assert!(matches!(decode(&rec), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn wrong_key_or_moved_record_does_not_open() {
        let rec = encode_sealed(&batch(), &KEY_ID, &KEY);
        assert!(matches!(
            open_sealed(&rec, &[8; 32]),
            Err(RecordError::Seal(SealError::Auth))
        ));

        // Same ciphertext under another tenant's header (CRC recomputed): the AAD differs.
        let (body, _) = frame(&rec).unwrap();
        let sealed_part = &body[3 + 4 + KEY_ID_LEN..];
        let reframe = |tenant: &str, key_id: &KeyId| {
            let mut body = vec![VERSION_SEALED, tenant.len() as u8, 0];
            body.extend_from_slice(tenant.as_bytes());
            body.extend_from_slice(key_id);
            body.extend_from_slice(sealed_part);
            framed(&body)
        };
        assert!(matches!(
            open_sealed(&reframe("evil", &KEY_ID), &KEY),
            Err(RecordError::Seal(SealError::Auth))
        ));
        // Same tenant, another key id.
        assert!(matches!(
            open_sealed(&reframe("acme", &[1; 16]), &KEY),
            Err(RecordError::Seal(SealError::Auth))
        ));
        // The untouched reframe opens (the helper itself is sound).
        assert!(open_sealed(&reframe("acme", &KEY_ID), &KEY).is_ok());
    }

    fn all_kinds() -> Vec<Vec<u8>> {
        vec![
            encode_plain(&batch()),
            encode_sealed(&batch(), &KEY_ID, &KEY),
            encode_key("acme", &KEY_ID, &envelope("acme")),
        ]
    }

    #[test]
    fn every_truncation_is_detected() {
        for rec in all_kinds() {
            for cut in 0..rec.len() {
                assert!(
                    matches!(decode(&rec[..cut]), Err(RecordError::Truncated { .. })),
                    "version {} cut at {cut}",
                    rec[HEADER_LEN]
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        for rec in all_kinds() {
            for i in 0..rec.len() {
                for bit in [0x01u8, 0x10, 0x80] {
                    let mut bad = rec.clone();
                    bad[i] ^= bit;
                    let detected = match decode(&bad) {
                        Err(_) => true,
                        Ok((Record::Sealed(s), _)) => s.open(&KEY).is_err(),
                        Ok(_) => false,
                    };
                    assert!(detected, "version {} flip {bit:#x} at {i}", rec[HEADER_LEN]);
                }
            }
        }
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let mut rec = encode_plain(&batch());
        rec[HEADER_LEN] = 4;
        let rec = finish(rec);
        assert_eq!(decode(&rec).unwrap_err(), RecordError::Version(4));
        assert!(!RecordError::Version(4).is_framing());
        assert!(RecordError::Checksum.is_framing());
    }

    #[test]
    fn garbage_and_huge_lengths() {
        assert!(decode(&[0xff; 64]).is_err());
        // A zero-filled tail (length 0) is a framing error: replay cuts it off.
        assert_eq!(decode(&[0; 8]).unwrap_err(), RecordError::TooLarge(0));
        assert!(RecordError::TooLarge(0).is_framing());
        let mut huge = vec![0u8; 16];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::TooLarge(_))));
    }
}
