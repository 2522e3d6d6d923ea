use rand::{Rng, RngCore, SeedableRng};

use crate::sealed::{
    self, ciphertext_range, plain_len, sealed_len, SealedReader, CHUNK_SIZE, HEADER_LEN, TAG_LEN,
};
use crate::{open_record, seal_record, SealError};

const KEY: [u8; 32] = [7u8; 32];
const AAD: &[u8] = b"tenants/acme/2026-01-01/blk/data.parquet";

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

const SIZES: &[usize] = &[0, 1, 100, 65535, 65536, 65537, 131072, 200_000, 300_001];

#[test]
fn round_trip_and_lengths() {
    for &n in SIZES {
        let plain = data(n, n as u64);
        let s = sealed::seal(&KEY, AAD, &plain);
        assert_eq!(s.len() as u64, sealed_len(n as u64), "len {n}");
        assert_eq!(plain_len(s.len() as u64).unwrap(), n as u64);
        assert_eq!(sealed::open(&KEY, AAD, &s).unwrap(), plain, "len {n}");
    }
}

#[test]
fn sealing_is_randomized() {
    let a = sealed::seal(&KEY, AAD, b"same");
    let b = sealed::seal(&KEY, AAD, b"same");
    assert_ne!(a, b);
}

#[test]
fn plain_len_rejects_impossible_sizes() {
    assert!(plain_len(0).is_err());
    assert!(plain_len(HEADER_LEN).is_err());
    assert!(plain_len(HEADER_LEN + TAG_LEN - 1).is_err());
    assert_eq!(plain_len(HEADER_LEN + TAG_LEN).unwrap(), 0);
    // a full chunk followed by an empty final chunk is never produced
    assert!(plain_len(HEADER_LEN + CHUNK_SIZE + TAG_LEN + TAG_LEN).is_err());
    // every length either maps back consistently or errors
    for s in 0..(HEADER_LEN + 3 * (CHUNK_SIZE + TAG_LEN) + 40) {
        if let Ok(p) = plain_len(s) {
            assert_eq!(sealed_len(p), s);
        }
    }
}

#[test]
fn random_ranges_match_plaintext() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for &n in SIZES {
        let plain = data(n, 1000 + n as u64);
        let s = sealed::seal(&KEY, AAD, &plain);
        let reader = SealedReader::new(&KEY, AAD, &s[..HEADER_LEN as usize]).unwrap();
        let pl = plain_len(s.len() as u64).unwrap();
        let mut ranges = vec![(0u64, pl), (0, 0), (pl, pl)];
        for _ in 0..40 {
            let a = rng.random_range(0..=pl);
            let b = rng.random_range(a..=pl);
            ranges.push((a, b));
        }
        if pl > 0 {
            ranges.push((pl - 1, pl));
            ranges.push((CHUNK_SIZE.min(pl) - 1, (CHUNK_SIZE + 1).min(pl)));
        }
        for (a, b) in ranges {
            let ct = ciphertext_range(a..b, pl).unwrap();
            assert!(ct.start >= HEADER_LEN && ct.end <= s.len() as u64);
            let fetched = &s[ct.start as usize..ct.end as usize];
            let got = reader.open_range(fetched, a..b, pl).unwrap();
            assert_eq!(
                got,
                &plain[a as usize..b as usize],
                "size {n} range {a}..{b}"
            );
            // free-function form, header passed separately
            let got2 = sealed::open_range(&KEY, AAD, &s[..32], fetched, a..b, pl).unwrap();
            assert_eq!(got2, got);
        }
        assert!(ciphertext_range(0..pl + 1, pl).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = ciphertext_range(2..1, pl);
        assert!(backwards.is_err());
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    // 2 chunks + a bit, flip bytes at a stride plus all header bytes
    let plain = data(2 * CHUNK_SIZE as usize + 10, 5);
    let s = sealed::seal(&KEY, AAD, &plain);
    let mut positions: Vec<usize> = (0..HEADER_LEN as usize).collect();
    positions.extend((HEADER_LEN as usize..s.len()).step_by(997));
    positions.push(s.len() - 1);
    for pos in positions {
        let mut t = s.clone();
        t[pos] ^= 0x01;
        assert!(
            sealed::open(&KEY, AAD, &t).is_err(),
            "flip at {pos} not detected"
        );
    }
}

#[test]
fn wrong_key_or_aad_fails() {
    let s = sealed::seal(&KEY, AAD, b"hello world");
    assert_eq!(sealed::open(&[8u8; 32], AAD, &s), Err(SealError::Auth));
    assert_eq!(
        sealed::open(&KEY, b"tenants/other/x/data.parquet", &s),
        Err(SealError::Auth)
    );
    assert_eq!(sealed::open(&KEY, b"", &s), Err(SealError::Auth));
}

#[test]
fn truncation_and_extension_are_detected() {
    let n = 3 * CHUNK_SIZE as usize;
    let plain = data(n, 9);
    let s = sealed::seal(&KEY, AAD, &plain);
    // cut at chunk boundaries (a valid-looking length) and elsewhere
    let sealed_chunk = (CHUNK_SIZE + TAG_LEN) as usize;
    for cut in [
        HEADER_LEN as usize + sealed_chunk,
        HEADER_LEN as usize + 2 * sealed_chunk,
        s.len() - 1,
        s.len() - 17,
        10,
        0,
    ] {
        assert!(
            sealed::open(&KEY, AAD, &s[..cut]).is_err(),
            "truncation to {cut} not detected"
        );
    }
    // reading the last chunk of a truncated file through the range API also fails
    let short = &s[..HEADER_LEN as usize + 2 * sealed_chunk];
    let pl = plain_len(short.len() as u64).unwrap();
    let r = ciphertext_range(pl - 1..pl, pl).unwrap();
    let reader = SealedReader::new(&KEY, AAD, short).unwrap();
    assert_eq!(
        reader.open_range(&short[r.start as usize..r.end as usize], pl - 1..pl, pl),
        Err(SealError::Auth)
    );
    // appending a copy of a chunk
    let mut ext = s.clone();
    ext.extend_from_slice(&s[HEADER_LEN as usize..HEADER_LEN as usize + sealed_chunk]);
    assert!(sealed::open(&KEY, AAD, &ext).is_err());
}

#[test]
fn chunk_swap_is_detected() {
    let plain = data(3 * CHUNK_SIZE as usize, 11);
    let s = sealed::seal(&KEY, AAD, &plain);
    let c = (CHUNK_SIZE + TAG_LEN) as usize;
    let h = HEADER_LEN as usize;
    let mut t = s.clone();
    t[h..h + c].copy_from_slice(&s[h + c..h + 2 * c]);
    t[h + c..h + 2 * c].copy_from_slice(&s[h..h + c]);
    assert_eq!(sealed::open(&KEY, AAD, &t), Err(SealError::Auth));
    // a chunk from another file sealed with the same key (different salt) does not fit either
    let other = sealed::seal(&KEY, AAD, &plain);
    let mut t2 = s.clone();
    t2[h..h + c].copy_from_slice(&other[h..h + c]);
    assert_eq!(sealed::open(&KEY, AAD, &t2), Err(SealError::Auth));
    // header of another file
    let mut t3 = s.clone();
    t3[..h].copy_from_slice(&other[..h]);
    assert_eq!(sealed::open(&KEY, AAD, &t3), Err(SealError::Auth));
}

#[test]
fn range_with_wrong_fetched_length_errors() {
    let plain = data(100_000, 3);
    let s = sealed::seal(&KEY, AAD, &plain);
    let reader = SealedReader::new(&KEY, AAD, &s).unwrap();
    let r = ciphertext_range(10..20, 100_000).unwrap();
    let fetched = &s[r.start as usize..r.end as usize - 1];
    assert!(matches!(
        reader.open_range(fetched, 10..20, 100_000),
        Err(SealError::BadRange(_))
    ));
    // wrong plain_len: a 3-chunk file presented as exactly 2 full chunks (a truncation at a
    // chunk boundary) — chunk 1 now claims to be last and the STREAM flag does not match
    let big = sealed::seal(&KEY, AAD, &data(3 * CHUNK_SIZE as usize, 4));
    let reader = SealedReader::new(&KEY, AAD, &big).unwrap();
    let pl = 2 * CHUNK_SIZE;
    let r2 = ciphertext_range(CHUNK_SIZE..CHUNK_SIZE + 10, pl).unwrap();
    let fetched = &big[r2.start as usize..r2.end as usize];
    assert_eq!(
        reader.open_range(fetched, CHUNK_SIZE..CHUNK_SIZE + 10, pl),
        Err(SealError::Auth)
    );
    // the same bytes with the true length open fine
    let r3 = ciphertext_range(CHUNK_SIZE..CHUNK_SIZE + 10, 3 * CHUNK_SIZE).unwrap();
    assert_eq!(r3, r2);
    assert!(reader
        .open_range(fetched, CHUNK_SIZE..CHUNK_SIZE + 10, 3 * CHUNK_SIZE)
        .is_ok());
    // an empty file's tag is authenticated by open()
    let empty = sealed::seal(&KEY, AAD, b"");
    let mut t = empty.clone();
    t[40] ^= 1;
    assert_eq!(sealed::open(&KEY, AAD, &t), Err(SealError::Auth));
    assert_eq!(sealed::open(&KEY, b"other", &empty), Err(SealError::Auth));
}

#[test]
fn garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let valid = sealed::seal(&KEY, AAD, &data(70_000, 1));
    for i in 0..300 {
        let len = rng.random_range(0..600);
        let mut g = data(len, i);
        if i % 3 == 0 && g.len() >= 8 {
            g[..8].copy_from_slice(sealed::MAGIC);
        }
        let _ = sealed::open(&KEY, AAD, &g);
        let _ = SealedReader::new(&KEY, AAD, &g);
        let _ = open_record(&KEY, AAD, &g);
        let cut = rng.random_range(0..valid.len());
        let _ = sealed::open(&KEY, AAD, &valid[..cut]);
        let _ = plain_len(rng.random());
        let a: u64 = rng.random();
        let b: u64 = rng.random();
        let _ = ciphertext_range(a.min(b)..a.max(b), rng.random());
    }
    assert!(matches!(
        SealedReader::new(&KEY, AAD, b"CLEWENC"),
        Err(SealError::BadHeader(_))
    ));
    let mut bad_version = valid[..32].to_vec();
    bad_version[8] = 2;
    assert!(matches!(
        SealedReader::new(&KEY, AAD, &bad_version),
        Err(SealError::BadHeader(_))
    ));
}

#[test]
fn records_round_trip_and_tamper() {
    for n in [0usize, 1, 17, 4096, 100_000] {
        let p = data(n, n as u64);
        let s = seal_record(&KEY, b"wal/acme/000001", &p);
        assert_eq!(s.len(), n + sealed::record::OVERHEAD);
        assert_eq!(open_record(&KEY, b"wal/acme/000001", &s).unwrap(), p);
        assert_eq!(
            open_record(&KEY, b"wal/acme/000002", &s),
            Err(SealError::Auth)
        );
        assert_eq!(
            open_record(&[1u8; 32], b"wal/acme/000001", &s),
            Err(SealError::Auth)
        );
        for pos in (0..s.len()).step_by(1 + s.len() / 50) {
            let mut t = s.clone();
            t[pos] ^= 0x80;
            assert!(
                open_record(&KEY, b"wal/acme/000001", &t).is_err(),
                "flip at {pos}"
            );
        }
        for cut in [0, 1, 12, 28, s.len() - 1] {
            assert!(open_record(&KEY, b"wal/acme/000001", &s[..cut.min(s.len())]).is_err());
        }
    }
    let a = seal_record(&KEY, b"", b"x");
    let b = seal_record(&KEY, b"", b"x");
    assert_ne!(a, b, "random nonce");
    let rk = sealed::record::RecordKey::new(&KEY);
    assert_eq!(rk.open(b"ctx", &rk.seal(b"ctx", b"abc")).unwrap(), b"abc");
}
