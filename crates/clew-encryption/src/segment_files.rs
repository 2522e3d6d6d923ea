//! The numbered segment files of an append-only log (`{n:016}.<ext>`): the store's WAL (`.wal`),
//! the exporters' sending queue (`.seg`) and the tail sampler's log (`.slog`) list theirs the same way.

use std::io;
use std::path::Path;

/// Segment numbers of the files in `dir` named `<number><suffix>`, ascending; other files are
/// ignored.
pub fn list(dir: &Path, suffix: &str) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_string_lossy()
            .strip_suffix(suffix)
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_numbered_files_in_order_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "0000000000000010.wal",
            "0000000000000002.wal",
            "x.wal",
            "0000000000000003.seg",
            ".lock",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(super::list(dir.path(), ".wal").unwrap(), vec![2, 10]);
        assert_eq!(super::list(dir.path(), ".seg").unwrap(), vec![3]);
        assert!(super::list(&dir.path().join("missing"), ".wal").is_err());
    }
}
