//! `clew fsck`: checks every WAL segment and every block of a data dir (and of the bucket, if
//! given), file by file, and with `repair` fixes what start-up would fix: damaged blocks go to
//! the quarantine, WAL segments lose their damaged regions (copied to the quarantine first) or
//! torn tails.
//!
//! WAL segments: every record's frame (length, CRC-32), its version and body; damaged regions
//! are reported with their offsets. Sealed records are checked by frame only (no key needed).
//! Blocks: `meta.json` parses and fits its directory and `bloom.bin`; `bloom.bin` parses (and
//! matches its checksum in `meta.json`); `data.parquet` has the recorded size and checksum, a
//! readable footer whose row groups are the meta's, and every row's trace id sorted, in its row
//! group's range and in the bloom filter, inside the meta's time range, with the meta's span and
//! trace counts ([`Block::check_full`]). Sealed blocks need the key provider (`keys` of the
//! storage); without it they are reported as skipped, not damaged.

use crate::block::{self, Block};
use crate::quarantine::Quarantine;
use crate::storage::Storage;
use crate::wal::{self, record};
use crate::StoreError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What kind of file a report line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    WalSegment,
    Block,
}

/// The verdict on one file (a WAL segment) or block directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Damaged: why.
    Damaged(String),
    /// Not checked: why (a sealed block without the key provider, a crypto-shredded tenant).
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub kind: FileKind,
    /// The segment's path, or the block directory (`{tier}:tenants/{tenant}/{day}/{block}`).
    pub name: String,
    pub status: Status,
    /// With `repair`: what was done about the damage.
    pub repaired: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub files: Vec<FileReport>,
}

impl FsckReport {
    pub fn damaged(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.status, Status::Damaged(_)))
            .count()
    }

    /// Damaged files that `repair` did not fix.
    pub fn unrepaired(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.status, Status::Damaged(_)) && f.repaired.is_none())
            .count()
    }
}

/// What to check.
pub struct FsckOptions {
    /// `storage.path`: `wal/`, `blocks/` (the local tier) and `quarantine/` are under it.
    pub data_dir: PathBuf,
    /// The bucket tier, if configured.
    pub remote: Option<Storage>,
    /// The key provider for sealed blocks (`storage.encryption`).
    pub keys: Option<std::sync::Arc<clew_encryption::KeyManager>>,
    pub repair: bool,
}

/// Block directories of a tier with their files and sizes.
type Listing = BTreeMap<String, Vec<(object_store::path::Path, u64)>>;

/// Progress for long runs: called before each file with (done, total, name).
pub type Progress<'a> = &'a mut (dyn FnMut(usize, usize, &str) + Send);

/// Checks (and with `repair`, repairs) a data dir. With `repair` the data dir is locked like a
/// running store locks it: fsck never repairs under a live server.
pub async fn fsck(opts: &FsckOptions, progress: Progress<'_>) -> Result<FsckReport, StoreError> {
    let _lock = if opts.repair {
        Some(crate::dir_lock::lock_data_dir(&opts.data_dir)?)
    } else {
        None
    };
    let quarantine = Quarantine::new(&opts.data_dir);
    let mut report = FsckReport::default();
    let wal_dir = opts.data_dir.join("wal");
    let segments = if wal_dir.is_dir() {
        wal::list_segments(&wal_dir)?
    } else {
        Vec::new()
    };
    let blocks_dir = opts.data_dir.join("blocks");
    // A check creates nothing: no `blocks/`, no local tier to list.
    let local = if blocks_dir.is_dir() {
        Some(Storage::local(blocks_dir)?.with_keys(opts.keys.clone()))
    } else {
        None
    };
    let remote = opts.remote.clone().map(|r| r.with_keys(opts.keys.clone()));
    let mut tiers: Vec<(Storage, Listing)> = Vec::new();
    for storage in local.into_iter().chain(remote) {
        let mut dirs = Listing::new();
        for (path, size) in storage.list_all().await? {
            if let Some((dir, _)) = path.as_ref().rsplit_once('/') {
                if dir.starts_with("tenants/") {
                    dirs.entry(dir.to_string()).or_default().push((path, size));
                }
            }
        }
        tiers.push((storage, dirs));
    }
    let total = segments.len() + tiers.iter().map(|(_, d)| d.len()).sum::<usize>();
    let mut done = 0;
    for n in segments {
        let path = wal_dir.join(format!("{n:016}.wal"));
        progress(done, total, &path.display().to_string());
        done += 1;
        report
            .files
            .push(check_segment(&path, opts.repair, &quarantine)?);
    }
    for (storage, dirs) in &tiers {
        for (dir, files) in dirs {
            let name = format!("{}:{dir}", storage.tier().as_str());
            progress(done, total, &name);
            done += 1;
            report
                .files
                .push(check_block(storage, dir, files, &name, opts.repair, &quarantine).await?);
        }
    }
    Ok(report)
}

/// Checks one WAL segment; with `repair`, fixes it as replay would.
pub fn check_segment(
    path: &Path,
    repair: bool,
    quarantine: &Quarantine,
) -> Result<FileReport, StoreError> {
    let data = std::fs::read(path).map_err(|source| StoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut keep = Vec::new();
    let mut problems = Vec::new();
    // Only a torn tail: start-up cuts it without a copy, nothing acknowledged was in it.
    let mut only_torn = true;
    let mut unknown_version = false;
    for piece in record::walk(&data) {
        match piece {
            record::Piece::Record { offset, len } => {
                match record::parse(&data[offset + record::HEADER_LEN..offset + len]) {
                    Ok(_) => keep.push((offset, len)),
                    Err(record::RecordError::Version(v)) => {
                        // Not damage this build may cut: a newer Clew wrote it.
                        unknown_version = true;
                        keep.push((offset, len));
                        problems.push(format!(
                            "record at offset {offset} has unknown version {v} (written by a newer Clew?)"
                        ));
                        only_torn = false;
                    }
                    Err(e) => {
                        problems.push(format!("record at offset {offset} ({len} bytes): {e}"));
                        only_torn = false;
                    }
                }
            }
            record::Piece::Damaged {
                offset,
                len,
                error,
                resynced,
            } => {
                let torn = !resynced && record::is_torn_tail(&data, offset, &error);
                let what = if resynced {
                    "damaged region"
                } else if torn {
                    "torn tail"
                } else {
                    "damaged tail"
                };
                problems.push(format!("{what} of {len} bytes at offset {offset}: {error}"));
                only_torn &= torn;
            }
        }
    }
    let name = path.display().to_string();
    if problems.is_empty() {
        return Ok(FileReport {
            kind: FileKind::WalSegment,
            name,
            status: Status::Ok,
            repaired: None,
        });
    }
    let reason = problems.join("; ");
    let repaired = if repair && !unknown_version {
        let mut done = String::new();
        if !only_torn {
            let copy = quarantine.wal_segment(path, &reason)?;
            done = format!("copied to {}; ", copy.display());
        }
        wal::rewrite_segment(path, &data, &keep)?;
        let kept: usize = keep.iter().map(|(_, l)| l).sum();
        Some(format!(
            "{done}rewritten with {} good records ({} bytes removed)",
            keep.len(),
            data.len() - kept
        ))
    } else {
        None
    };
    Ok(FileReport {
        kind: FileKind::WalSegment,
        name,
        status: Status::Damaged(reason),
        repaired,
    })
}

/// Checks one block directory; with `repair`, quarantines it if damaged.
async fn check_block(
    storage: &Storage,
    dir: &str,
    files: &[(object_store::path::Path, u64)],
    name: &str,
    repair: bool,
    quarantine: &Quarantine,
) -> Result<FileReport, StoreError> {
    let obj_dir = object_store::path::Path::from(dir);
    let paths: Vec<object_store::path::Path> = files.iter().map(|(p, _)| p.clone()).collect();
    let (has_meta, has_key) = crate::sealed_block::listed_files(&paths);
    let data_size = files
        .iter()
        .find(|(p, _)| p.filename() == Some(block::DATA_FILE))
        .map(|(_, s)| *s);
    let verdict: Result<(), StoreError> = if !has_meta {
        Err(StoreError::Corrupt {
            what: format!("{dir}/{}", block::META_FILE),
            detail: "missing: an interrupted write (start-up removes such a directory)".into(),
        })
    } else {
        match Block::load_listed(storage, &obj_dir, Some(has_key)).await {
            Ok(b) => match data_size {
                None => Err(StoreError::Corrupt {
                    what: format!("{dir}/{}", block::DATA_FILE),
                    detail: "missing".into(),
                }),
                Some(size) => b.check_full(Some(size)).await,
            },
            Err(e) => Err(e),
        }
    };
    let (status, damage) = match verdict {
        Ok(()) => (Status::Ok, None),
        Err(StoreError::KeyGone { reason, .. }) => (
            Status::Skipped(format!("its encryption key is gone ({reason})")),
            None,
        ),
        Err(StoreError::Config { message, .. }) => (Status::Skipped(message), None),
        Err(e) if block::is_damage(&e) => (Status::Damaged(e.to_string()), Some(e)),
        Err(e) => return Err(e),
    };
    let repaired = match (repair, damage) {
        (true, Some(e)) => {
            let q = quarantine.block(storage, &obj_dir, &e).await?;
            Some(format!("moved to {}", q.moved_to.display()))
        }
        _ => None,
    };
    Ok(FileReport {
        kind: FileKind::Block,
        name: name.to_string(),
        status,
        repaired,
    })
}
