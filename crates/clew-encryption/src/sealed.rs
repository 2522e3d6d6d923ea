//! The sealed-file format (`data.parquet`, `bloom.bin`, `meta.json` of a block) with
//! random-access range decryption.
//!
//! Layout:
//!
//! ```text
//! header (32 bytes): "CLEWENC1" | version u8 = 1 | 3 zero bytes | chunk size u32 LE | salt [16]
//! chunk 0 .. chunk n-1: AES-256-GCM(ciphertext of CHUNK_SIZE plaintext bytes | tag 16)
//!                       (the last chunk may be shorter; an empty file is one empty last chunk)
//! ```
//!
//! Every chunk is sealed under the per-file subkey `HKDF-SHA256(ikm = data key, salt = header
//! salt, info = "clew sealed file v1")` with nonce `00 00 00 | chunk index u64 BE | last flag`
//! (the STREAM construction: reordering, truncation and extension are detected) and
//! AAD = `header | caller context` (the store passes the object path), so a file copied to another
//! path, or a tampered header, does not open.
//!
//! Range reads: [`ciphertext_range`] maps a plaintext range to the file byte range of the chunks
//! covering it; [`SealedReader::open_range`] decrypts those bytes and returns exactly the requested
//! plaintext. The reader needs the 32-byte header once per file: fetch `0..HEADER_LEN` together
//! with the first data range (e.g. `object_store::get_ranges`, which coalesces), keep the
//! [`SealedReader`] next to the cached Parquet metadata, and every later range costs one GET.
//! [`plain_len`] gives the plaintext length from the object size alone (no GET).

use std::ops::Range;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf;

use crate::SealError;

/// File magic.
pub const MAGIC: &[u8; 8] = b"CLEWENC1";
/// Sealed-file format version.
pub const FORMAT_VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: u64 = 32;
/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: u64 = 64 * 1024;
/// AES-GCM tag length.
pub const TAG_LEN: u64 = 16;
const SEALED_CHUNK: u64 = CHUNK_SIZE + TAG_LEN;
const HKDF_INFO: &[u8] = b"clew sealed file v1";

/// Sealed length of a plaintext of `plain_len` bytes.
pub fn sealed_len(plain_len: u64) -> u64 {
    HEADER_LEN + plain_len + chunk_count(plain_len) * TAG_LEN
}

/// Plaintext length of a sealed file of `sealed_len` bytes (e.g. the object size). Errors when no
/// plaintext length seals to exactly that size.
pub fn plain_len(sealed_len: u64) -> Result<u64, SealError> {
    let body = sealed_len.checked_sub(HEADER_LEN).ok_or_else(|| {
        SealError::BadLength(format!("{sealed_len} bytes is shorter than the header"))
    })?;
    let full = body / SEALED_CHUNK;
    let rem = body % SEALED_CHUNK;
    let plain = if rem == 0 {
        if full == 0 {
            return Err(SealError::BadLength("no chunks after the header".into()));
        }
        full * CHUNK_SIZE
    } else {
        // A partial last chunk: needs a tag, and is non-empty unless it is the only chunk.
        if rem < TAG_LEN || (rem == TAG_LEN && full > 0) {
            return Err(SealError::BadLength(format!(
                "{sealed_len} bytes is not a valid sealed length"
            )));
        }
        full * CHUNK_SIZE + (rem - TAG_LEN)
    };
    Ok(plain)
}

/// Number of chunks for a plaintext length (at least one).
pub fn chunk_count(plain_len: u64) -> u64 {
    if plain_len == 0 {
        1
    } else {
        plain_len.div_ceil(CHUNK_SIZE)
    }
}

fn chunk_plain_len(index: u64, plain_len: u64) -> u64 {
    let start = index * CHUNK_SIZE;
    (plain_len - start.min(plain_len)).min(CHUNK_SIZE)
}

/// The absolute file byte range (header excluded) holding the chunks that cover `plain_range`
/// of a file whose plaintext is `plain_len` bytes. An empty plaintext range maps to an empty
/// byte range.
pub fn ciphertext_range(plain_range: Range<u64>, plain_len: u64) -> Result<Range<u64>, SealError> {
    check_range(&plain_range, plain_len)?;
    if plain_range.start == plain_range.end {
        return Ok(HEADER_LEN..HEADER_LEN);
    }
    let first = plain_range.start / CHUNK_SIZE;
    let last = (plain_range.end - 1) / CHUNK_SIZE;
    let start = HEADER_LEN + first * SEALED_CHUNK;
    let end = HEADER_LEN + last * SEALED_CHUNK + chunk_plain_len(last, plain_len) + TAG_LEN;
    Ok(start..end)
}

fn check_range(r: &Range<u64>, plain_len: u64) -> Result<(), SealError> {
    if r.start > r.end || r.end > plain_len {
        return Err(SealError::BadRange(format!(
            "{}..{} is outside a {plain_len}-byte plaintext",
            r.start, r.end
        )));
    }
    Ok(())
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn subkey(data_key: &[u8; 32], salt: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(data_key);
    // expand() only fails when the requested length exceeds 255 * 32 bytes; 32 never does.
    let okm = prk
        .expand(&[HKDF_INFO], &AES_256_GCM)
        .expect("HKDF-SHA256 expand to 32 bytes");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG failing is not recoverable; never fall back to a predictable value.
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator failed");
    b
}

/// Seal `plaintext` under `data_key`, binding `aad` (the object path) into every chunk.
pub fn seal(data_key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let plain_len = plaintext.len() as u64;
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8] = FORMAT_VERSION;
    header[12..16].copy_from_slice(&(CHUNK_SIZE as u32).to_le_bytes());
    header[16..32].copy_from_slice(&random_bytes::<16>());
    let key = subkey(data_key, &header[16..32]);
    let mut full_aad = Vec::with_capacity(header.len() + aad.len());
    full_aad.extend_from_slice(&header);
    full_aad.extend_from_slice(aad);

    let mut out = Vec::with_capacity(sealed_len(plain_len) as usize);
    out.extend_from_slice(&header);
    let n = chunk_count(plain_len);
    for i in 0..n {
        let start = (i * CHUNK_SIZE) as usize;
        let end = start + chunk_plain_len(i, plain_len) as usize;
        let pos = out.len();
        out.extend_from_slice(&plaintext[start..end]);
        let tag = key
            .seal_in_place_separate_tag(
                nonce(i, i + 1 == n),
                Aad::from(&full_aad[..]),
                &mut out[pos..],
            )
            .expect("AES-GCM seal of a chunk within limits");
        out.extend_from_slice(tag.as_ref());
    }
    out
}

/// Open a whole sealed file.
pub fn open(data_key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let reader = SealedReader::new(data_key, aad, sealed)?;
    let plain = plain_len(sealed.len() as u64)?;
    // Authenticate every chunk, including the empty last chunk of an empty file.
    reader.open_chunks(
        &sealed[HEADER_LEN as usize..],
        0,
        chunk_count(plain) - 1,
        plain,
    )
}

/// Decrypt a range of a sealed file, given the header bytes and the bytes at
/// [`ciphertext_range`]`(plain_range, plain_len)`.
pub fn open_range(
    data_key: &[u8; 32],
    aad: &[u8],
    header: &[u8],
    fetched: &[u8],
    plain_range: Range<u64>,
    plain_len: u64,
) -> Result<Vec<u8>, SealError> {
    SealedReader::new(data_key, aad, header)?.open_range(fetched, plain_range, plain_len)
}

/// A parsed header with the derived per-file key: build once per file, then open any ranges.
pub struct SealedReader {
    key: LessSafeKey,
    aad: Vec<u8>,
}

impl std::fmt::Debug for SealedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedReader").finish_non_exhaustive()
    }
}

impl SealedReader {
    /// Parse the header (the first [`HEADER_LEN`] bytes of `header`; more bytes are ignored).
    pub fn new(data_key: &[u8; 32], aad: &[u8], header: &[u8]) -> Result<Self, SealError> {
        let header = header.get(..HEADER_LEN as usize).ok_or_else(|| {
            SealError::BadHeader(format!("{} bytes is shorter than the header", header.len()))
        })?;
        if &header[..8] != MAGIC {
            return Err(SealError::BadHeader("bad magic (not CLEWENC1)".into()));
        }
        if header[8] != FORMAT_VERSION || header[9..12] != [0, 0, 0] {
            return Err(SealError::BadHeader(format!(
                "unsupported format version {}",
                header[8]
            )));
        }
        let mut cs = [0u8; 4];
        cs.copy_from_slice(&header[12..16]);
        let chunk = u32::from_le_bytes(cs);
        if u64::from(chunk) != CHUNK_SIZE {
            return Err(SealError::BadHeader(format!(
                "unsupported chunk size {chunk}"
            )));
        }
        let mut full_aad = Vec::with_capacity(header.len() + aad.len());
        full_aad.extend_from_slice(header);
        full_aad.extend_from_slice(aad);
        Ok(SealedReader {
            key: subkey(data_key, &header[16..32]),
            aad: full_aad,
        })
    }

    /// Decrypt `fetched` (the bytes at [`ciphertext_range`]`(plain_range, plain_len)`) and return
    /// exactly `plain_range` of the plaintext. `plain_len` must come from [`plain_len`] of the
    /// object size; a wrong value makes the last-chunk check fail.
    pub fn open_range(
        &self,
        fetched: &[u8],
        plain_range: Range<u64>,
        plain_len: u64,
    ) -> Result<Vec<u8>, SealError> {
        let ct = ciphertext_range(plain_range.clone(), plain_len)?;
        if fetched.len() as u64 != ct.end - ct.start {
            return Err(SealError::BadRange(format!(
                "expected {} ciphertext bytes for {}..{}, got {}",
                ct.end - ct.start,
                plain_range.start,
                plain_range.end,
                fetched.len()
            )));
        }
        if plain_range.start == plain_range.end {
            return Ok(Vec::new());
        }
        let first = plain_range.start / CHUNK_SIZE;
        let last = (plain_range.end - 1) / CHUNK_SIZE;
        let out = self.open_chunks(fetched, first, last, plain_len)?;
        let skip = (plain_range.start - first * CHUNK_SIZE) as usize;
        let take = (plain_range.end - plain_range.start) as usize;
        Ok(out[skip..skip + take].to_vec())
    }

    /// Decrypt chunks `first..=last` from `fetched` (exactly those sealed chunks).
    fn open_chunks(
        &self,
        fetched: &[u8],
        first: u64,
        last: u64,
        plain_len: u64,
    ) -> Result<Vec<u8>, SealError> {
        let n = chunk_count(plain_len);
        if last >= n || first > last {
            return Err(SealError::BadRange(format!(
                "chunks {first}..={last} of {n}"
            )));
        }
        let mut out = Vec::with_capacity(((last - first + 1) * CHUNK_SIZE).min(plain_len) as usize);
        let mut pos = 0usize;
        for i in first..=last {
            let len = (chunk_plain_len(i, plain_len) + TAG_LEN) as usize;
            let sealed_chunk = fetched
                .get(pos..pos + len)
                .ok_or_else(|| SealError::BadRange("fetched bytes too short".into()))?;
            pos += len;
            let mut buf = sealed_chunk.to_vec();
            let plain = self
                .key
                .open_in_place(nonce(i, i + 1 == n), Aad::from(&self.aad[..]), &mut buf)
                .map_err(|_| SealError::Auth)?;
            out.extend_from_slice(plain);
        }
        if pos != fetched.len() {
            return Err(SealError::BadRange(
                "fetched bytes longer than the chunks".into(),
            ));
        }
        Ok(out)
    }
}

/// Sealed records (WAL records): `0x01 | nonce [12] | AES-256-GCM ciphertext | tag [16]`, sealed
/// directly under the data key with a random 96-bit nonce and AAD = `"clew record v1" | caller aad`.
/// Keep one key per WAL segment (see [`crate::KeyManager::wal_key`]), far below 2^32 records.
pub mod record {
    use super::*;

    const VERSION: u8 = 1;
    const DOMAIN: &[u8] = b"clew record v1";
    /// Bytes added to a record by sealing (version + nonce + tag).
    pub const OVERHEAD: usize = 1 + 12 + 16;

    /// A data key ready to seal and open many records (avoids re-expanding the AES key).
    pub struct RecordKey {
        key: LessSafeKey,
    }

    impl std::fmt::Debug for RecordKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecordKey").finish_non_exhaustive()
        }
    }

    impl RecordKey {
        pub fn new(data_key: &[u8; 32]) -> Self {
            let unbound = UnboundKey::new(&AES_256_GCM, data_key).expect("32-byte AES-256 key");
            RecordKey {
                key: LessSafeKey::new(unbound),
            }
        }

        pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
            let nonce_bytes = random_bytes::<12>();
            let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
            out.push(VERSION);
            out.extend_from_slice(&nonce_bytes);
            out.extend_from_slice(plaintext);
            let full_aad = [DOMAIN, aad].concat();
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce_bytes),
                    Aad::from(&full_aad[..]),
                    &mut out[13..],
                )
                .expect("AES-GCM seal of a record within limits");
            out.extend_from_slice(tag.as_ref());
            out
        }

        pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
            if sealed.len() < OVERHEAD {
                return Err(SealError::BadLength(format!(
                    "{}-byte record is too short",
                    sealed.len()
                )));
            }
            if sealed[0] != VERSION {
                return Err(SealError::BadHeader(format!(
                    "unsupported record version {}",
                    sealed[0]
                )));
            }
            let mut n = [0u8; 12];
            n.copy_from_slice(&sealed[1..13]);
            let mut buf = sealed[13..].to_vec();
            let full_aad = [DOMAIN, aad].concat();
            let plain = self
                .key
                .open_in_place(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(&full_aad[..]),
                    &mut buf,
                )
                .map_err(|_| SealError::Auth)?;
            Ok(plain.to_vec())
        }
    }

    /// Seal one record.
    pub fn seal_record(data_key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        RecordKey::new(data_key).seal(aad, plaintext)
    }

    /// Open one record.
    pub fn open_record(
        data_key: &[u8; 32],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        RecordKey::new(data_key).open(aad, sealed)
    }
}
