//! The shared record codec, in both layouts Clew uses: the WAL's (no clear fields, compact
//! envelope JSON) and the sending queue's (a 4-byte span count in clear, pretty JSON).

use crate::sealed::record::{RecordKey, OVERHEAD};
use crate::sealed_record::{
    body_len, frame, Body, EnvelopeJson, KeyId, Layout, RecordError, HEADER_LEN, KEY_ID_LEN,
    MAX_RECORD_BYTES, VERSION_KEY, VERSION_PLAIN, VERSION_SEALED,
};
use crate::{open_record, Envelope, ProviderKind, SealError, ENVELOPE_FORMAT};

const KEY: [u8; 32] = [7; 32];
const KEY_ID: KeyId = [9; 16];
const WAL: Layout<0> = Layout::new(EnvelopeJson::Compact);
const QUEUE: Layout<4> = Layout::new(EnvelopeJson::Pretty);
const SPANS: [u8; 4] = 5u32.to_le_bytes();
const PAYLOAD: &[u8] = b"secret-op span batch";

fn envelope(tenant: &str) -> Envelope {
    Envelope {
        format: ENVELOPE_FORMAT,
        provider: ProviderKind::Local,
        tenant: tenant.into(),
        kek_id: "ring".into(),
        kek_version: Some(1),
        wrapped: "d3JhcHBlZA==".into(),
        created_unix: 1_700_000_000,
    }
}

fn key() -> RecordKey {
    RecordKey::new(&KEY)
}

/// A record framed by hand from its body, as the format document says (not by the encoder).
fn framed(body: &[u8]) -> Vec<u8> {
    let mut rec = (body.len() as u32).to_le_bytes().to_vec();
    rec.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    rec.extend_from_slice(body);
    rec
}

/// The same body behind a recomputed frame (a bug or tampering, not a torn write).
fn reframe(rec: &[u8]) -> Vec<u8> {
    framed(&rec[HEADER_LEN..])
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every record kind of both layouts, with the layout's clear width.
fn all_kinds() -> Vec<(Vec<u8>, usize)> {
    vec![
        (WAL.encode_plain("acme", &[], PAYLOAD), 0),
        (WAL.encode_sealed("acme", &[], &KEY_ID, &key(), PAYLOAD), 0),
        (WAL.encode_key("acme", &KEY_ID, &envelope("acme")), 0),
        (QUEUE.encode_plain("acme", &SPANS, PAYLOAD), 4),
        (
            QUEUE.encode_sealed("acme", &SPANS, &KEY_ID, &key(), PAYLOAD),
            4,
        ),
        (QUEUE.encode_key("acme", &KEY_ID, &envelope("acme")), 4),
    ]
}

/// Decodes with the layout of the given clear width; a sealed record is opened with [`KEY`].
fn decode_any(rec: &[u8], clear: usize) -> Result<Vec<u8>, RecordError> {
    fn payload<const C: usize>(l: Layout<C>, rec: &[u8]) -> Result<Vec<u8>, RecordError> {
        match l.decode(rec)?.0 {
            Body::Plain { payload, .. } => Ok(payload.to_vec()),
            Body::Sealed(s) => s.open(&key()),
            Body::Key(k) => Ok(k.envelope.to_json()),
        }
    }
    if clear == 0 {
        payload(WAL, rec)
    } else {
        payload(QUEUE, rec)
    }
}

#[test]
fn layouts_byte_for_byte() {
    // v1: [1][len 4][acme][clear][payload].
    let mut body = vec![VERSION_PLAIN, 4, 0];
    body.extend_from_slice(b"acme");
    body.extend_from_slice(PAYLOAD);
    assert_eq!(WAL.encode_plain("acme", &[], PAYLOAD), framed(&body));
    let mut body = vec![VERSION_PLAIN, 4, 0];
    body.extend_from_slice(b"acme");
    body.extend_from_slice(&SPANS);
    body.extend_from_slice(PAYLOAD);
    assert_eq!(QUEUE.encode_plain("acme", &SPANS, PAYLOAD), framed(&body));

    // v3: compact JSON in the WAL, pretty in the queue.
    let env = envelope("acme");
    for (rec, json) in [
        (
            WAL.encode_key("acme", &KEY_ID, &env),
            serde_json::to_vec(&env).unwrap(),
        ),
        (QUEUE.encode_key("acme", &KEY_ID, &env), env.to_json()),
    ] {
        let mut body = vec![VERSION_KEY, 4, 0];
        body.extend_from_slice(b"acme");
        body.extend_from_slice(&KEY_ID);
        body.extend_from_slice(&json);
        assert_eq!(rec, framed(&body));
    }

    // v2: [2][len][acme][clear][key id] is the AAD of the seal that follows.
    for (rec, clear) in [
        (
            WAL.encode_sealed("acme", &[], &KEY_ID, &key(), PAYLOAD),
            &[][..],
        ),
        (
            QUEUE.encode_sealed("acme", &SPANS, &KEY_ID, &key(), PAYLOAD),
            &SPANS[..],
        ),
    ] {
        let mut aad = vec![VERSION_SEALED, 4, 0];
        aad.extend_from_slice(b"acme");
        aad.extend_from_slice(clear);
        aad.extend_from_slice(&KEY_ID);
        assert_eq!(&rec[HEADER_LEN..HEADER_LEN + aad.len()], &aad[..]);
        let sealed = &rec[HEADER_LEN + aad.len()..];
        assert_eq!(sealed.len(), PAYLOAD.len() + OVERHEAD);
        assert_eq!(open_record(&KEY, &aad, sealed).unwrap(), PAYLOAD);
        assert_eq!(rec, framed(&rec[HEADER_LEN..]), "the frame is len | crc32");
        assert!(!contains(&rec, b"secret-op"));
    }
}

#[test]
fn round_trips() {
    for (rec, clear) in all_kinds() {
        let got = decode_any(&rec, clear).unwrap();
        if rec[HEADER_LEN] == VERSION_KEY {
            assert_eq!(got, envelope("acme").to_json());
        } else {
            assert_eq!(got, PAYLOAD);
        }
    }
    let rec = QUEUE.encode_sealed("acme", &SPANS, &KEY_ID, &key(), PAYLOAD);
    let (Body::Sealed(s), used) = QUEUE.decode(&rec).unwrap() else {
        panic!("not sealed")
    };
    assert_eq!(
        (s.tenant, s.clear, s.key_id, used),
        ("acme", SPANS, KEY_ID, rec.len())
    );
    // Two seals of the same payload differ (random nonce).
    assert_ne!(
        rec,
        QUEUE.encode_sealed("acme", &SPANS, &KEY_ID, &key(), PAYLOAD)
    );
}

#[test]
fn wrong_key_tenant_key_id_or_clear_field_does_not_open() {
    let rec = QUEUE.encode_sealed("acme", &SPANS, &KEY_ID, &key(), PAYLOAD);
    let (Body::Sealed(s), _) = QUEUE.decode(&rec).unwrap() else {
        panic!("not sealed")
    };
    assert_eq!(
        s.open(&RecordKey::new(&[8; 32])),
        Err(RecordError::Seal(SealError::Auth))
    );
    // The same sealed bytes behind another clear header (CRC recomputed).
    let moved = |tenant: &str, spans: u32, key_id: &KeyId| {
        let mut body = vec![VERSION_SEALED, tenant.len() as u8, 0];
        body.extend_from_slice(tenant.as_bytes());
        body.extend_from_slice(&spans.to_le_bytes());
        body.extend_from_slice(key_id);
        body.extend_from_slice(s.sealed());
        let rec = framed(&body);
        let (Body::Sealed(m), _) = QUEUE.decode(&rec).unwrap() else {
            panic!("not sealed")
        };
        m.open(&key())
    };
    assert_eq!(
        moved("evil", 5, &KEY_ID),
        Err(RecordError::Seal(SealError::Auth))
    );
    assert_eq!(
        moved("acme", 6, &KEY_ID),
        Err(RecordError::Seal(SealError::Auth))
    );
    assert_eq!(
        moved("acme", 5, &[1; 16]),
        Err(RecordError::Seal(SealError::Auth))
    );
    // The untouched reframe opens (the helper itself is sound).
    assert_eq!(moved("acme", 5, &KEY_ID).unwrap(), PAYLOAD);
}

#[test]
fn declaration_for_another_tenant_is_refused() {
    for rec in [
        WAL.encode_key("acme", &KEY_ID, &envelope("other")),
        QUEUE.encode_key("acme", &KEY_ID, &envelope("other")),
    ] {
        let err = decode_any(&rec, 0).unwrap_err();
        assert!(
            matches!(&err, RecordError::Malformed(m) if m.contains("envelope of tenant")),
            "{err}"
        );
        assert!(!err.is_framing());
    }
    let rec = WAL.encode_key("acme", &KEY_ID, &envelope("acme"));
    assert!(!contains(&rec, &KEY), "a declaration holds no key material");
}

#[test]
fn every_truncation_is_detected() {
    for (rec, clear) in all_kinds() {
        for cut in 0..rec.len() {
            let err = decode_any(&rec[..cut], clear).unwrap_err();
            assert!(
                matches!(err, RecordError::Truncated { .. }) && err.is_framing(),
                "version {} cut at {cut}: {err}",
                rec[HEADER_LEN]
            );
        }
    }
}

#[test]
fn every_bit_flip_is_detected() {
    for (rec, clear) in all_kinds() {
        for i in 0..rec.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut bad = rec.clone();
                bad[i] ^= bit;
                assert!(
                    decode_any(&bad, clear).is_err(),
                    "version {} flip {bit:#x} at {i}",
                    rec[HEADER_LEN]
                );
            }
        }
    }
}

/// Flips behind a recomputed CRC: the AEAD still catches every one of them in a sealed record.
#[test]
fn sealed_tampering_behind_a_valid_crc_is_detected() {
    for (rec, clear) in all_kinds() {
        if rec[HEADER_LEN] != VERSION_SEALED {
            continue;
        }
        for i in HEADER_LEN + 1..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x04;
            assert!(decode_any(&reframe(&bad), clear).is_err(), "flip at {i}");
        }
    }
}

#[test]
fn framing_errors_are_typed() {
    let rec = WAL.encode_plain("acme", &[], PAYLOAD);
    let mut flipped = rec.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(frame(&flipped), Err(RecordError::Checksum));
    assert_eq!(
        frame(&rec[..5]),
        Err(RecordError::Truncated {
            need: HEADER_LEN,
            have: 5
        })
    );
    assert_eq!(
        frame(&rec[..rec.len() - 1]),
        Err(RecordError::Truncated {
            need: rec.len(),
            have: rec.len() - 1
        })
    );
    // A zero-filled tail and an impossible length.
    assert_eq!(frame(&[0; 8]), Err(RecordError::TooLarge(0)));
    assert_eq!(
        frame(&[0xff; 64]),
        Err(RecordError::TooLarge(u32::MAX as usize))
    );
    let mut huge = [0u8; HEADER_LEN];
    huge[..4].copy_from_slice(&(MAX_RECORD_BYTES as u32 + 1).to_le_bytes());
    assert!(matches!(body_len(&huge), Err(RecordError::TooLarge(_))));
    huge[..4].copy_from_slice(&(MAX_RECORD_BYTES as u32).to_le_bytes());
    assert_eq!(body_len(&huge), Ok(MAX_RECORD_BYTES));
    for e in [
        RecordError::Checksum,
        RecordError::TooLarge(0),
        RecordError::Truncated { need: 1, have: 0 },
    ] {
        assert!(e.is_framing());
    }
}

#[test]
fn unknown_version_and_short_bodies_are_typed() {
    let mut body = vec![4u8, 4, 0];
    body.extend_from_slice(b"acme");
    assert_eq!(
        WAL.decode(&framed(&body)).unwrap_err(),
        RecordError::Version(4)
    );
    assert!(!RecordError::Version(4).is_framing());
    // Bodies cut inside the tenant, the clear fields or the key id are malformed, not panics.
    let rec = QUEUE.encode_sealed("acme", &SPANS, &KEY_ID, &key(), PAYLOAD);
    for cut in 1..3 + 4 + 4 + KEY_ID_LEN {
        let body = &rec[HEADER_LEN..HEADER_LEN + cut];
        assert!(
            matches!(QUEUE.parse(body), Err(RecordError::Malformed(_))),
            "cut {cut}"
        );
    }
    // A tenant that is not UTF-8, and a declaration whose envelope is not JSON.
    let bad_tenant = framed(&[VERSION_PLAIN, 2, 0, 0xff, 0xfe]);
    assert!(matches!(
        WAL.decode(&bad_tenant),
        Err(RecordError::Malformed(_))
    ));
    let mut decl = vec![VERSION_KEY, 4, 0];
    decl.extend_from_slice(b"acme");
    decl.extend_from_slice(&KEY_ID);
    decl.extend_from_slice(b"{not json");
    assert!(matches!(
        QUEUE.decode(&framed(&decl)),
        Err(RecordError::Malformed(_))
    ));
}

/// Random bodies behind a valid frame, for every version byte and both layouts: errors, never
/// panics.
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
        let rec = framed(&body);
        let _ = decode_any(&rec, 0);
        let _ = decode_any(&rec, 4);
    }
}
