//! WAL record framing: `[len: u32 LE][crc32: u32 LE][body]`. The CRC (IEEE, crc32fast) covers the
//! body as stored (for sealed records: over the ciphertext), so a torn or bit-flipped record is
//! detected before anything else looks at it. The body's first byte is its version:
//!
//! * `1` — plaintext batch: `[1][tenant_len: u16 LE][tenant][ExportTraceServiceRequest protobuf]`.
//!   Written by stores without `storage.encryption` (and by older Clew); always replayed.
//! * `2` — sealed batch: `[2][tenant_len: u16 LE][tenant][key id: 16][sealed]`, where `sealed` is
//!   [`clew_encryption::seal_record`]`(data key, aad, protobuf)` (`0x01 | nonce | AES-256-GCM
//!   ciphertext | tag`) and `aad` is the clear header before it (`[2][tenant_len][tenant][key id]`),
//!   so a record moved to another tenant or key does not open.
//! * `3` — key declaration: `[3][tenant_len: u16 LE][tenant][key id: 16][envelope JSON]`: the
//!   wrapped data key of `key id` (no plaintext key, no span data). The WAL thread writes one
//!   before the first sealed record of each key in each segment, so a segment replays on its own.
//!
//! The tenant name stays in clear: it picks the key and is not span data.

use clew_encryption::{Envelope, SealError};
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use clew_model::{SpanBatch, Tenant};

pub const HEADER_LEN: usize = 8;
/// Body version of a plaintext batch record.
pub const VERSION_PLAIN: u8 = 1;
/// Body version of a sealed batch record.
pub const VERSION_SEALED: u8 = 2;
/// Body version of a key declaration.
pub const VERSION_KEY: u8 = 3;
/// Length of a WAL key id.
pub const KEY_ID_LEN: usize = 16;
/// A record larger than this is treated as corruption on replay.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// The random id naming a WAL data key ([`clew_encryption::WalKey::id`]).
pub type KeyId = [u8; KEY_ID_LEN];

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
    #[error("sealed record does not open: {0}")]
    Seal(#[from] SealError),
}

impl RecordError {
    /// True for errors of the framing (a torn or corrupt tail: replay truncates there), false for
    /// records whose checksum matched but whose content this build cannot use.
    pub fn is_framing(&self) -> bool {
        matches!(
            self,
            RecordError::Truncated { .. } | RecordError::Checksum | RecordError::TooLarge(_)
        )
    }
}

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
    /// The clear header (`[2][tenant_len][tenant][key id]`): the record's AAD.
    aad: &'a [u8],
    sealed: &'a [u8],
}

impl SealedRecord<'_> {
    /// Decrypts and decodes the batch.
    pub fn open(&self, data_key: &[u8; 32]) -> Result<SpanBatch, RecordError> {
        let proto = clew_encryption::open_record(data_key, self.aad, self.sealed)?;
        let req = ExportTraceServiceRequest::decode(proto.as_slice())
            .map_err(|e| RecordError::Malformed(e.to_string()))?;
        Ok(SpanBatch::new(self.tenant.clone(), req.resource_spans))
    }
}

/// A key declaration: the wrapped data key `key_id` of `tenant`.
#[derive(Debug, Clone)]
pub struct KeyDecl {
    pub tenant: Tenant,
    pub key_id: KeyId,
    pub envelope: Envelope,
}

/// `[len][crc]` placeholder + `[version][tenant_len][tenant]`.
fn start(version: u8, tenant: &str, capacity: usize) -> Vec<u8> {
    let tenant = tenant.as_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + 3 + tenant.len() + capacity);
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(version);
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant);
    out
}

/// Fills in `[len][crc]` once the body is complete.
fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let body_len = (out.len() - HEADER_LEN) as u32;
    out[..4].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
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
    let mut out = start(VERSION_PLAIN, batch.tenant.as_str(), proto_len(batch));
    encode_proto(batch, &mut out);
    finish(out)
}

/// Encodes one batch as a sealed (version 2) record under `data_key`, named `key_id`.
pub fn encode_sealed(batch: &SpanBatch, key_id: &KeyId, data_key: &[u8; 32]) -> Vec<u8> {
    let mut proto = Vec::with_capacity(proto_len(batch));
    encode_proto(batch, &mut proto);
    let mut out = start(
        VERSION_SEALED,
        batch.tenant.as_str(),
        KEY_ID_LEN + proto.len() + clew_encryption::sealed::record::OVERHEAD,
    );
    out.extend_from_slice(key_id);
    let sealed = clew_encryption::seal_record(data_key, &out[HEADER_LEN..], &proto);
    out.extend_from_slice(&sealed);
    finish(out)
}

/// Encodes a key declaration (version 3): the envelope of `key_id`, no key material.
pub fn encode_key(tenant: &str, key_id: &KeyId, envelope: &Envelope) -> Vec<u8> {
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(envelope).unwrap_or_default();
    let mut out = start(VERSION_KEY, tenant, KEY_ID_LEN + json.len());
    out.extend_from_slice(key_id);
    out.extend_from_slice(&json);
    finish(out)
}

/// Checks the frame at the start of `buf`: returns the body (checksum verified) and the bytes
/// the record takes.
pub fn frame(buf: &[u8]) -> Result<(&[u8], usize), RecordError> {
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
    if body.is_empty() {
        return Err(RecordError::Malformed("empty body".into()));
    }
    Ok((body, total))
}

/// `[tenant_len][tenant]` after the version byte; returns the tenant and where the rest starts.
fn tenant_of(body: &[u8]) -> Result<(Tenant, usize), RecordError> {
    let len_bytes = body
        .get(1..3)
        .ok_or_else(|| RecordError::Malformed("body shorter than its header".into()))?;
    let tlen = u16::from_le_bytes([len_bytes[0], len_bytes[1]]) as usize;
    let tenant_bytes = body
        .get(3..3 + tlen)
        .ok_or_else(|| RecordError::Malformed("tenant cut short".into()))?;
    let tenant = std::str::from_utf8(tenant_bytes)
        .ok()
        .and_then(|t| Tenant::new(t).ok())
        .ok_or_else(|| RecordError::Malformed("invalid tenant".into()))?;
    Ok((tenant, 3 + tlen))
}

fn key_id_at(body: &[u8], at: usize) -> Result<KeyId, RecordError> {
    body.get(at..at + KEY_ID_LEN)
        .and_then(|b| KeyId::try_from(b).ok())
        .ok_or_else(|| RecordError::Malformed("key id cut short".into()))
}

/// Parses a checked body (from [`frame`]).
pub fn parse(body: &[u8]) -> Result<Record<'_>, RecordError> {
    let version = *body
        .first()
        .ok_or_else(|| RecordError::Malformed("empty body".into()))?;
    match version {
        VERSION_PLAIN => {
            let (tenant, at) = tenant_of(body)?;
            let req = ExportTraceServiceRequest::decode(&body[at..])
                .map_err(|e| RecordError::Malformed(e.to_string()))?;
            Ok(Record::Plain(SpanBatch::new(tenant, req.resource_spans)))
        }
        VERSION_SEALED => {
            let (tenant, at) = tenant_of(body)?;
            let key_id = key_id_at(body, at)?;
            let split = at + KEY_ID_LEN;
            Ok(Record::Sealed(SealedRecord {
                tenant,
                key_id,
                aad: &body[..split],
                sealed: &body[split..],
            }))
        }
        VERSION_KEY => {
            let (tenant, at) = tenant_of(body)?;
            let key_id = key_id_at(body, at)?;
            let envelope = Envelope::from_json(&body[at + KEY_ID_LEN..])
                .map_err(|e| RecordError::Malformed(e.to_string()))?;
            if envelope.tenant != tenant.as_str() {
                return Err(RecordError::Malformed(format!(
                    "key declaration of tenant {:?} holds an envelope of tenant {:?}",
                    tenant.as_str(),
                    envelope.tenant
                )));
            }
            Ok(Record::Key(KeyDecl {
                tenant,
                key_id,
                envelope,
            }))
        }
        v => Err(RecordError::Version(v)),
    }
}

/// Decodes the record at the start of `buf`, returning it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), RecordError> {
    let (body, used) = frame(buf)?;
    Ok((parse(body)?, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_encryption::ProviderKind;
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
        let mut rec = (body.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
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
            let mut out = start(VERSION_SEALED, tenant, 0);
            out.extend_from_slice(key_id);
            out.extend_from_slice(sealed_part);
            finish(out)
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

    /// Flips behind a recomputed CRC (a bug or tampering, not a torn write): the AEAD still
    /// catches every one of them in a sealed record.
    #[test]
    fn sealed_record_tampering_behind_a_valid_crc_is_detected() {
        let rec = encode_sealed(&batch(), &KEY_ID, &KEY);
        for i in HEADER_LEN + 1..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x04;
            let bad = finish(bad);
            match decode(&bad) {
                Err(_) => {}
                Ok((Record::Sealed(s), _)) => assert!(s.open(&KEY).is_err(), "flip at {i}"),
                Ok((other, _)) => panic!("flip at {i} decoded as {other:?}"),
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
        let mut huge = vec![0u8; 16];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::TooLarge(_))));
    }

    /// Random bodies behind a valid frame, for every version byte: errors, never panics.
    #[test]
    fn garbage_behind_a_valid_frame_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = body.first_mut() {
                *b = (round % 5) as u8;
            }
            if len >= 3 && round % 2 == 0 {
                // A plausible tenant header, so the parsers get past it.
                body[1] = 4.min(len as u8 - 3);
                body[2] = 0;
            }
            let mut rec = start(0, "", 0);
            rec.truncate(HEADER_LEN);
            rec.extend_from_slice(&body);
            let rec = finish(rec);
            if let Ok((Record::Sealed(s), _)) = decode(&rec) {
                let _ = s.open(&KEY);
            }
        }
    }
}
