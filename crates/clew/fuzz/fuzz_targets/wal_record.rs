//! Records of Clew's two append-only logs — the store's WAL (`clew_store::wal::record`) and the
//! exporters' sending queue (`clew_encryption::sealed_record` with the queue's layout: a 4-byte
//! clear span count, pretty envelope JSON) — as replay reads them after a crash: errors are fine,
//! panics are not, and whatever parses encodes back to a record that parses to the same thing.
//!
//! The input is a record body (what `frame` hands on once the CRC matched), so mutations are not
//! all stopped by the checksum; the framed form is decoded too. Sealed records open with one fixed
//! test key (`KEY`, the key the seeds were sealed with), so the open path runs as well.
#![no_main]

use clew_encryption::sealed::record::RecordKey;
use clew_encryption::sealed_record::{self as codec, Body, EnvelopeJson, Layout};
use clew_store::wal::record::{self, Record};
use libfuzzer_sys::fuzz_target;

/// The data key the sealed seeds were made with (`seeds/make_seeds.py`).
const KEY: [u8; 32] = [7; 32];
/// The sending queue's layout (`clew-export`'s `queue.rs`).
const QUEUE: Layout<4> = Layout::new(EnvelopeJson::Pretty);

fuzz_target!(|data: &[u8]| {
    // Framed: header, length limits, CRC. Whatever frames is a body the parsers below get.
    if let Ok((body, used)) = codec::frame(data) {
        assert!(used <= data.len() && body.len() < used);
    }
    let _ = record::decode(data);
    wal(data);
    queue(data);
});

/// The WAL: span batches (protobuf) and key declarations.
fn wal(body: &[u8]) {
    let Ok(rec) = record::parse(body) else {
        return;
    };
    match rec {
        Record::Plain(batch) => {
            let bytes = record::encode_plain(&batch);
            let again = plain_batch(&bytes);
            // Protobuf drops unknown fields on the first decode; from then on the bytes are fixed.
            assert_eq!(record::encode_plain(&again), bytes);
        }
        Record::Sealed(sealed) => {
            let Ok(batch) = sealed.open(&KEY) else {
                return;
            };
            let bytes = record::encode_sealed(&batch, &sealed.key_id, &KEY);
            let (again, used) = record::decode(&bytes).expect("a sealed record we wrote decodes");
            assert_eq!(used, bytes.len());
            let Record::Sealed(again) = again else {
                panic!("a sealed record decoded as another kind");
            };
            assert_eq!(again.tenant, sealed.tenant);
            assert_eq!(again.key_id, sealed.key_id);
            let reopened = again.open(&KEY).expect("a sealed record we wrote opens");
            assert_eq!(
                record::encode_plain(&reopened),
                record::encode_plain(&batch)
            );
        }
        Record::Key(decl) => {
            let bytes = record::encode_key(decl.tenant.as_str(), &decl.key_id, &decl.envelope);
            let (again, _) = record::decode(&bytes).expect("a key declaration we wrote decodes");
            let Record::Key(again) = again else {
                panic!("a key declaration decoded as another kind");
            };
            assert_eq!(again.tenant, decl.tenant);
            assert_eq!(again.key_id, decl.key_id);
            assert_eq!(again.envelope, decl.envelope);
        }
    }
}

fn plain_batch(bytes: &[u8]) -> clew_model::SpanBatch {
    let (rec, used) = record::decode(bytes).expect("a plaintext record we wrote decodes");
    assert_eq!(used, bytes.len());
    match rec {
        Record::Plain(batch) => batch,
        other => panic!("a plaintext record decoded as {other:?}"),
    }
}

/// The sending queue's layout: the codec alone (the payload stays bytes), so the round trip is
/// exact.
fn queue(body: &[u8]) {
    let Ok(parsed) = QUEUE.parse(body) else {
        return;
    };
    match parsed {
        Body::Plain {
            tenant,
            clear,
            payload,
        } => {
            let bytes = QUEUE.encode_plain(tenant, &clear, payload);
            let (again, used) = QUEUE
                .decode(&bytes)
                .expect("a queue record we wrote decodes");
            assert_eq!(used, bytes.len());
            assert_eq!(
                &bytes[codec::HEADER_LEN..],
                body,
                "plaintext records re-encode exactly"
            );
            let Body::Plain {
                tenant: t2,
                clear: c2,
                payload: p2,
            } = again
            else {
                panic!("a plaintext queue record decoded as another kind");
            };
            assert_eq!((t2, c2, p2), (tenant, clear, payload));
        }
        Body::Sealed(sealed) => {
            let key = RecordKey::new(&KEY);
            let Ok(payload) = sealed.open(&key) else {
                return;
            };
            let bytes =
                QUEUE.encode_sealed(sealed.tenant, &sealed.clear, &sealed.key_id, &key, &payload);
            let (again, _) = QUEUE
                .decode(&bytes)
                .expect("a sealed queue record we wrote decodes");
            let Body::Sealed(again) = again else {
                panic!("a sealed queue record decoded as another kind");
            };
            assert_eq!(
                again.aad(),
                sealed.aad(),
                "same tenant, clear field and key id"
            );
            assert_eq!(
                again.open(&key).expect("a sealed record we wrote opens"),
                payload
            );
        }
        Body::Key(decl) => {
            let bytes = QUEUE.encode_key(decl.tenant, &decl.key_id, &decl.envelope);
            let (again, _) = QUEUE
                .decode(&bytes)
                .expect("a queue key declaration we wrote decodes");
            let Body::Key(again) = again else {
                panic!("a queue key declaration decoded as another kind");
            };
            assert_eq!(
                (again.tenant, again.key_id, &again.envelope),
                (decl.tenant, decl.key_id, &decl.envelope)
            );
        }
    }
}
