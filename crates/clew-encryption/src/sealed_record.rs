//! The sealed-record codec: the one on-disk record format of Clew's two append-only logs of span
//! batches — the store's write-ahead log (`clew-store`, `wal/record.rs`) and the exporters' durable
//! sending queue (`clew-export`, `queue.rs`). Both frame, seal and check their records here; what
//! differs between them (segment files, the queue's cursor, what a payload is, the span count the
//! queue keeps in clear) stays with them.
//!
//! ```text
//! record = [len: u32 LE][crc32: u32 LE][body]        CRC (IEEE) over the body as stored
//! body   = [version: u8][tenant_len: u16 LE][tenant] then, by version:
//!   1  plaintext batch   [clear][payload]
//!   2  sealed batch      [clear][key id: 16][RecordKey::seal(aad = the body before it, payload)]
//!   3  key declaration   [key id: 16][envelope JSON]      (the envelope's tenant = the record's)
//! ```
//!
//! `clear` is a fixed number of caller bytes kept in clear in batch records ([`Layout`]'s `C`):
//! none in the WAL, the span count (`u32 LE`) in the queue. Everything before the sealed bytes
//! is the AAD of the seal ([`crate::sealed::record`]: `0x01 | nonce | AES-256-GCM | tag`), so a
//! record moved to another tenant or key, or with another clear field, does not open. A key
//! declaration holds the data key wrapped by the tenant's key-encryption key (no key material);
//! writers put one before the first record of each key in each segment, so a segment reads on
//! its own.
//!
//! The CRC catches torn writes and bit flips before anything else reads a record
//! ([`RecordError::is_framing`]: readers cut a segment's tail there); a checksummed record of an
//! unknown version is [`RecordError::Version`], which readers refuse rather than drop. The tenant
//! name and the clear fields are not span data: they pick the key and size reports.

use crate::sealed::record::{RecordKey, OVERHEAD};
use crate::{Envelope, SealError};

/// `[len][crc]`.
pub const HEADER_LEN: usize = 8;
/// Body version of a plaintext batch record.
pub const VERSION_PLAIN: u8 = 1;
/// Body version of a sealed batch record.
pub const VERSION_SEALED: u8 = 2;
/// Body version of a key declaration.
pub const VERSION_KEY: u8 = 3;
/// Length of a data key's id.
pub const KEY_ID_LEN: usize = 16;
/// A record body larger than this is treated as corruption when read.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// The random id naming a record data key in its declaration and in every record sealed with it.
pub type KeyId = [u8; KEY_ID_LEN];

/// Why a record cannot be used. Framing errors ([`RecordError::is_framing`]) mean a torn or
/// corrupt tail; the others, a checksummed record this build cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("record checksum mismatch")]
    Checksum,
    /// The length field is over [`MAX_RECORD_BYTES`], or 0 (no record has an empty body: a
    /// zero-filled tail reads as this).
    #[error("record length {0} is outside 1..={MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("record body malformed: {0}")]
    Malformed(String),
    #[error("sealed record does not open: {0}")]
    Seal(#[from] SealError),
}

impl RecordError {
    /// True for errors of the framing (a torn or corrupt tail: readers truncate there), false for
    /// records whose checksum matched but whose content this build cannot use.
    pub fn is_framing(&self) -> bool {
        matches!(
            self,
            RecordError::Truncated { .. } | RecordError::Checksum | RecordError::TooLarge(_)
        )
    }
}

/// How a key declaration writes its envelope. Both logs read either; each writes the form it
/// always has, so its records stay byte-for-byte what older builds wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeJson {
    /// `serde_json::to_vec` (the WAL).
    Compact,
    /// [`Envelope::to_json`], pretty-printed (the sending queue).
    Pretty,
}

/// One log's record layout: `C` clear bytes in batch records, and its envelope JSON form.
#[derive(Debug, Clone, Copy)]
pub struct Layout<const C: usize> {
    envelope_json: EnvelopeJson,
}

/// A checked body, parsed (borrows the record).
#[derive(Debug)]
pub enum Body<'a, const C: usize> {
    /// Version 1.
    Plain {
        tenant: &'a str,
        clear: [u8; C],
        payload: &'a [u8],
    },
    /// Version 2: open it with the key named `key_id`.
    Sealed(SealedBody<'a, C>),
    /// Version 3.
    Key(KeyDecl<'a>),
}

/// A sealed batch record, not yet opened.
#[derive(Debug)]
pub struct SealedBody<'a, const C: usize> {
    pub tenant: &'a str,
    pub clear: [u8; C],
    pub key_id: KeyId,
    /// The clear body before the sealed bytes: the seal's AAD.
    aad: &'a [u8],
    sealed: &'a [u8],
}

impl<const C: usize> SealedBody<'_, C> {
    /// Decrypts the payload; a wrong key, or a record moved to another tenant, key id or clear
    /// field, is [`RecordError::Seal`]`(`[`SealError::Auth`]`)`.
    pub fn open(&self, key: &RecordKey) -> Result<Vec<u8>, RecordError> {
        Ok(key.open(self.aad, self.sealed)?)
    }

    /// The AAD the payload was sealed with (the clear body before the sealed bytes).
    pub fn aad(&self) -> &[u8] {
        self.aad
    }

    /// The sealed bytes (`0x01 | nonce | ciphertext | tag`).
    pub fn sealed(&self) -> &[u8] {
        self.sealed
    }
}

/// A key declaration: the wrapped data key `key_id` of `tenant` (checked to be the envelope's).
#[derive(Debug, Clone)]
pub struct KeyDecl<'a> {
    pub tenant: &'a str,
    pub key_id: KeyId,
    pub envelope: Envelope,
}

/// `[len][crc]` placeholder + `[version][tenant_len][tenant]`, with room for `rest` more bytes.
fn start(version: u8, tenant: &str, rest: usize) -> Vec<u8> {
    // Tenant names are at most 64 bytes (clew-model's `Tenant`); a longer one could not be
    // framed, so the length and the bytes written are cut to the same 65,535 bytes.
    let tenant = &tenant.as_bytes()[..tenant.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(HEADER_LEN + 3 + tenant.len() + rest);
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

impl<const C: usize> Layout<C> {
    pub const fn new(envelope_json: EnvelopeJson) -> Self {
        Layout { envelope_json }
    }

    /// A plaintext (version 1) record whose payload (`payload_len` bytes, a capacity hint)
    /// `write_payload` appends in place: the WAL encodes its protobuf straight into the record.
    pub fn encode_plain_with(
        &self,
        tenant: &str,
        clear: &[u8; C],
        payload_len: usize,
        write_payload: impl FnOnce(&mut Vec<u8>),
    ) -> Vec<u8> {
        let mut out = start(VERSION_PLAIN, tenant, C + payload_len);
        out.extend_from_slice(clear);
        write_payload(&mut out);
        finish(out)
    }

    /// A plaintext (version 1) record.
    pub fn encode_plain(&self, tenant: &str, clear: &[u8; C], payload: &[u8]) -> Vec<u8> {
        self.encode_plain_with(tenant, clear, payload.len(), |out| {
            out.extend_from_slice(payload)
        })
    }

    /// A sealed (version 2) record under `key`, named `key_id`.
    pub fn encode_sealed(
        &self,
        tenant: &str,
        clear: &[u8; C],
        key_id: &KeyId,
        key: &RecordKey,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = start(
            VERSION_SEALED,
            tenant,
            C + KEY_ID_LEN + payload.len() + OVERHEAD,
        );
        out.extend_from_slice(clear);
        out.extend_from_slice(key_id);
        let sealed = key.seal(&out[HEADER_LEN..], payload);
        out.extend_from_slice(&sealed);
        finish(out)
    }

    /// A key declaration (version 3): the envelope of `key_id`, no key material.
    pub fn encode_key(&self, tenant: &str, key_id: &KeyId, envelope: &Envelope) -> Vec<u8> {
        let json = match self.envelope_json {
            // Serializing a struct of strings and integers cannot fail.
            EnvelopeJson::Compact => serde_json::to_vec(envelope).unwrap_or_default(),
            EnvelopeJson::Pretty => envelope.to_json(),
        };
        let mut out = start(VERSION_KEY, tenant, KEY_ID_LEN + json.len());
        out.extend_from_slice(key_id);
        out.extend_from_slice(&json);
        finish(out)
    }

    /// Parses a checked body (from [`frame`]) of any known version.
    pub fn parse<'a>(&self, body: &'a [u8]) -> Result<Body<'a, C>, RecordError> {
        let version = *body
            .first()
            .ok_or_else(|| RecordError::Malformed("empty body".into()))?;
        match version {
            VERSION_PLAIN => {
                let (tenant, at) = tenant_of(body)?;
                let clear = clear_at(body, at)?;
                Ok(Body::Plain {
                    tenant,
                    clear,
                    payload: &body[at + C..],
                })
            }
            VERSION_SEALED => {
                let (tenant, at) = tenant_of(body)?;
                let clear = clear_at(body, at)?;
                let key_id = key_id_at(body, at + C)?;
                let split = at + C + KEY_ID_LEN;
                Ok(Body::Sealed(SealedBody {
                    tenant,
                    clear,
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
                // A declaration must not hand one tenant's records another tenant's key.
                if envelope.tenant != tenant {
                    return Err(RecordError::Malformed(format!(
                        "key declaration of tenant {tenant:?} holds an envelope of tenant {:?}",
                        envelope.tenant
                    )));
                }
                Ok(Body::Key(KeyDecl {
                    tenant,
                    key_id,
                    envelope,
                }))
            }
            v => Err(RecordError::Version(v)),
        }
    }

    /// Frames and parses the record at the start of `buf`: the body and the bytes it takes.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<(Body<'a, C>, usize), RecordError> {
        let (body, used) = frame(buf)?;
        Ok((self.parse(body)?, used))
    }
}

/// The body length a record header announces, checked against the limits (for readers that read
/// the header first, then the body).
pub fn body_len(header: &[u8; HEADER_LEN]) -> Result<usize, RecordError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 || len > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge(len));
    }
    Ok(len)
}

/// Checks the frame at the start of `buf`: the body (checksum verified, never empty) and the
/// bytes the record takes.
pub fn frame(buf: &[u8]) -> Result<(&[u8], usize), RecordError> {
    let header: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(RecordError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        })?;
    let total = HEADER_LEN + body_len(header)?;
    let body = buf.get(HEADER_LEN..total).ok_or(RecordError::Truncated {
        need: total,
        have: buf.len(),
    })?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if crc32fast::hash(body) != crc {
        return Err(RecordError::Checksum);
    }
    Ok((body, total))
}

/// `[tenant_len][tenant]` after the version byte: the tenant and where the rest starts.
fn tenant_of(body: &[u8]) -> Result<(&str, usize), RecordError> {
    let len = body
        .get(1..3)
        .ok_or_else(|| RecordError::Malformed("body shorter than its header".into()))?;
    let tlen = u16::from_le_bytes([len[0], len[1]]) as usize;
    let raw = body
        .get(3..3 + tlen)
        .ok_or_else(|| RecordError::Malformed("tenant cut short".into()))?;
    let tenant = std::str::from_utf8(raw)
        .map_err(|e| RecordError::Malformed(format!("tenant is not UTF-8: {e}")))?;
    Ok((tenant, 3 + tlen))
}

fn clear_at<const C: usize>(body: &[u8], at: usize) -> Result<[u8; C], RecordError> {
    body.get(at..at + C)
        .and_then(|b| <[u8; C]>::try_from(b).ok())
        .ok_or_else(|| RecordError::Malformed("clear fields cut short".into()))
}

fn key_id_at(body: &[u8], at: usize) -> Result<KeyId, RecordError> {
    body.get(at..at + KEY_ID_LEN)
        .and_then(|b| KeyId::try_from(b).ok())
        .ok_or_else(|| RecordError::Malformed("key id cut short".into()))
}
