//! Quarantine: where damaged data goes instead of being deleted or stopping the server.
//!
//! A block that fails its start-up check (`meta.json` does not parse or does not fit,
//! `bloom.bin` malformed or off its checksum, `data.parquet` of the wrong size or without a
//! readable footer) or that a query or `clew fsck` finds damaged is moved, every file of it, to
//! `{data_dir}/quarantine/blocks/{tier}/{tenant}/{day}/{block}/` with a `reason.txt` (the reason
//! and the time), then removed from where it was. A WAL segment with a damaged record is copied
//! whole to `{data_dir}/quarantine/wal/{segment}.wal` (with `{segment}.wal.reason.txt`) before
//! replay cuts the damage out. Nothing damaged is ever deleted silently: an operator can inspect
//! it, salvage it, or delete it.

use crate::block::META_FILE;
use crate::storage::Storage;
use crate::StoreError;
use object_store::path::Path as ObjPath;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The quarantine directory under the data dir.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The file naming why something was quarantined.
pub const REASON_FILE: &str = "reason.txt";

/// Which file of a block was found damaged: the `reason` label of
/// `clew_store_quarantined_blocks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DamagedFile {
    Meta,
    Bloom,
    Data,
    Key,
    Other,
}

impl DamagedFile {
    pub fn as_str(self) -> &'static str {
        match self {
            DamagedFile::Meta => "meta",
            DamagedFile::Bloom => "bloom",
            DamagedFile::Data => "data",
            DamagedFile::Key => "key",
            DamagedFile::Other => "other",
        }
    }

    /// The damaged file named by an error's `what` (a path ending in the file name).
    pub fn of_error(e: &StoreError) -> Self {
        let StoreError::Corrupt { what, .. } = e else {
            return DamagedFile::Other;
        };
        let name = what.rsplit('/').next().unwrap_or("");
        match name {
            META_FILE => DamagedFile::Meta,
            crate::block::BLOOM_FILE => DamagedFile::Bloom,
            crate::block::DATA_FILE => DamagedFile::Data,
            crate::sealed_block::KEY_FILE => DamagedFile::Key,
            _ => DamagedFile::Other,
        }
    }
}

/// A block moved to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedBlock {
    /// The block directory it was in (`tenants/{tenant}/{day}/{block}`).
    pub dir: String,
    /// `local` or `remote`.
    pub tier: String,
    pub file: DamagedFile,
    pub reason: String,
    /// Where its files are now.
    pub moved_to: PathBuf,
}

/// The quarantine of one data dir.
#[derive(Debug, Clone)]
pub struct Quarantine {
    root: PathBuf,
    /// `{data_dir}/blocks`: local blocks there are renamed rather than copied (a compacted
    /// `data.parquet` can be large).
    local_blocks: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = crate::block::day_of(secs.saturating_mul(1_000_000_000));
    let t = secs % 86_400;
    format!("{day}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

/// Writes a file and makes it durable.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Quarantine {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join(QUARANTINE_DIR),
            local_blocks: data_dir.join("blocks"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh destination under the quarantine: `base`, or `base.N` if something of that name
    /// was quarantined before (the same block found damaged in both tiers, a segment twice).
    fn fresh(base: PathBuf) -> PathBuf {
        if !base.exists() {
            return base;
        }
        (1..)
            .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
            .find(|p| !p.exists())
            .unwrap_or(base)
    }

    /// Moves every file of the block directory `dir` of `storage` into the quarantine with a
    /// `reason.txt`, then deletes it from `storage` (`meta.json` first, so a crash midway leaves
    /// an incomplete block that start-up removes — its files are already safe here).
    pub async fn block(
        &self,
        storage: &Storage,
        dir: &ObjPath,
        err: &StoreError,
    ) -> Result<QuarantinedBlock, StoreError> {
        let tier = storage.tier().as_str();
        let dest = Self::fresh(self.root.join("blocks").join(tier).join(dir.as_ref()));
        fs::create_dir_all(&dest).map_err(io_err(&dest))?;
        let files = storage.list_dir(dir).await?;
        let mut names = Vec::with_capacity(files.len());
        for f in &files {
            let name = f.filename().unwrap_or("unnamed").to_string();
            let target = dest.join(&name);
            let local = self.local_blocks.join(f.as_ref());
            let renamed = storage.tier() == crate::storage::Tier::Local
                && local.is_file()
                && fs::rename(&local, &target).is_ok();
            if !renamed {
                let bytes = storage.get(f).await?;
                write_synced(&target, &bytes)?;
            }
            names.push(name);
        }
        let file = DamagedFile::of_error(err);
        let reason = err.to_string();
        let text = format!(
            "quarantined: {}\nblock: {dir}\ntier: {tier}\ndamaged file: {}\nreason: {reason}\nfiles: {}\n",
            now_rfc3339(),
            file.as_str(),
            names.join(", ")
        );
        write_synced(&dest.join(REASON_FILE), text.as_bytes())?;
        sync_dir(&dest)?;
        // Meta first: without it the directory is an incomplete block to every reader.
        let mut order: Vec<&ObjPath> = files
            .iter()
            .filter(|p| p.filename() == Some(META_FILE))
            .collect();
        order.extend(files.iter().filter(|p| p.filename() != Some(META_FILE)));
        for f in order {
            storage.delete(f).await?;
        }
        // The object store leaves the emptied local directory behind.
        if storage.tier() == crate::storage::Tier::Local {
            let _ = fs::remove_dir(self.local_blocks.join(dir.as_ref()));
        }
        tracing::error!(block = %dir, tier, file = file.as_str(), reason = %reason,
            moved_to = %dest.display(), "damaged block quarantined; the rest of the data is served");
        Ok(QuarantinedBlock {
            dir: dir.to_string(),
            tier: tier.to_string(),
            file,
            reason,
            moved_to: dest,
        })
    }

    /// Copies a WAL segment whole into the quarantine, with `{name}.reason.txt`, before replay or
    /// repair changes it.
    pub fn wal_segment(&self, segment: &Path, reason: &str) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("wal");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let name = segment
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "segment.wal".into());
        let dest = Self::fresh(dir.join(&name));
        let bytes = fs::read(segment).map_err(io_err(segment))?;
        write_synced(&dest, &bytes)?;
        let reason_path = PathBuf::from(format!("{}.reason.txt", dest.display()));
        let text = format!(
            "quarantined: {}\nsegment: {}\nreason: {reason}\n",
            now_rfc3339(),
            segment.display()
        );
        write_synced(&reason_path, text.as_bytes())?;
        sync_dir(&dir)?;
        Ok(dest)
    }

    /// Blocks in quarantine with their reasons (for `clew fsck` and tests).
    pub fn list_blocks(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.join("blocks")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().is_some_and(|n| n == REASON_FILE) {
                    let text = fs::read_to_string(&p).unwrap_or_default();
                    out.push((d.clone(), text));
                }
            }
        }
        out.sort();
        out
    }
}
