//! `clew fsck [--repair] [--config F | --data-dir D]`: checks every WAL segment and every block
//! of a data dir (and the bucket, with `storage.s3` in the config) and prints one line per file:
//! `OK`, `DAMAGED: why` or `SKIPPED: why`. Exit status 1 when something is damaged (and, with
//! `--repair`, was not repaired). `--repair` does what start-up does: damaged blocks to
//! `{storage.path}/quarantine/`, WAL segments rewritten without their damaged regions (a copy
//! quarantined first). Reading is safe next to a running server; `--repair` takes the data dir's
//! lock, so it refuses to run while Clew does. Progress goes to stderr.

use anyhow::{bail, Context};
use clew_store::fsck::{self, FileKind, FsckOptions, Status};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_DATA_DIR: &str = "./clew-data";

#[derive(clap::Args)]
pub struct FsckArgs {
    /// Quarantine damaged blocks and cut damaged records out of WAL segments (as start-up does).
    #[arg(long)]
    repair: bool,
    /// The Clew configuration: `storage.path`, `storage.s3` (the bucket tier) and
    /// `storage.encryption` (to check sealed blocks).
    #[arg(long, short, env = "CLEW_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (overrides `storage.path`; default ./clew-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print damaged and skipped files only.
    #[arg(long, short)]
    quiet: bool,
}

pub async fn run(args: FsckArgs) -> anyhow::Result<()> {
    let (data_dir, remote, keys) = match &args.config {
        Some(path) => {
            let mut cfg = crate::config::Config::load(path)?;
            if let Some(d) = &args.data_dir {
                cfg.storage.path = d.clone();
            }
            let keys = match &cfg.storage.encryption {
                Some(enc) => {
                    let provider = enc
                        .build()
                        .map_err(|e| anyhow::anyhow!("key `storage.{e}`"))?;
                    Some(Arc::new(clew_encryption::KeyManager::new(provider)))
                }
                None => None,
            };
            let remote = match &cfg.storage.s3 {
                Some(s3) => Some(
                    clew_store::storage::Storage::s3(s3)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                ),
                None => None,
            };
            (cfg.storage.path.clone(), remote, keys)
        }
        None => (
            args.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            None,
            None,
        ),
    };
    if !data_dir.is_dir() {
        bail!(
            "no data directory at {} (fix: --data-dir DIR or --config FILE)",
            data_dir.display()
        );
    }
    let opts = FsckOptions {
        data_dir: data_dir.clone(),
        remote,
        keys,
        repair: args.repair,
    };
    let started = Instant::now();
    let mut last = Instant::now();
    // A line every 2 s on stderr, as `clew doctor` does: stdout stays the report.
    let mut progress = |done: usize, total: usize, name: &str| {
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            eprintln!(
                "clew fsck: {done}/{total} checked ({}s), now {name}",
                started.elapsed().as_secs()
            );
        }
    };
    let report = fsck::fsck(&opts, &mut progress)
        .await
        .with_context(|| format!("cannot check {}", data_dir.display()))?;
    let (mut segments, mut blocks) = (0, 0);
    for f in &report.files {
        match f.kind {
            FileKind::WalSegment => segments += 1,
            FileKind::Block => blocks += 1,
        }
        let line = match &f.status {
            Status::Ok if args.quiet => continue,
            Status::Ok => format!("OK       {}", f.name),
            Status::Damaged(why) => format!("DAMAGED  {}: {why}", f.name),
            Status::Skipped(why) => format!("SKIPPED  {}: {why}", f.name),
        };
        println!("{line}");
        if let Some(done) = &f.repaired {
            println!("REPAIRED {}: {done}", f.name);
        }
    }
    let damaged = report.damaged();
    println!(
        "{} WAL segment(s), {} block(s) checked in {:.1}s: {damaged} damaged{}",
        segments,
        blocks,
        started.elapsed().as_secs_f64(),
        if args.repair {
            format!(", {} repaired", damaged - report.unrepaired())
        } else {
            String::new()
        }
    );
    let bad = if args.repair {
        report.unrepaired()
    } else {
        damaged
    };
    if bad > 0 {
        bail!(
            "{bad} damaged file(s) in {}{}",
            data_dir.display(),
            if args.repair {
                ""
            } else {
                " (fix: clew fsck --repair, with Clew stopped)"
            }
        );
    }
    Ok(())
}
