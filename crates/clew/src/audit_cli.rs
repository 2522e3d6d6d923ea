//! `clew audit`: check and read the hash-chained audit log (`clew-audit`). `verify` walks the
//! chain and the `.head` anchor and names the first line where it breaks (exit status 1);
//! `show` prints records readably. Both only read: run them against a live server's log freely.

use anyhow::bail;
use clew_audit::{ReadLine, Record};
use std::path::{Path, PathBuf};

const DEFAULT_DATA_DIR: &str = "./clew-data";

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Args)]
struct LogFile {
    /// The audit log (default: ./clew-data/audit/audit.log).
    #[arg(conflicts_with = "data_dir")]
    file: Option<PathBuf>,
    /// Clew's data directory: the log is DIR/audit/audit.log.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl LogFile {
    fn path(&self) -> PathBuf {
        match (&self.file, &self.data_dir) {
            (Some(file), _) => file.clone(),
            (None, Some(dir)) => log_in(dir),
            (None, None) => log_in(Path::new(DEFAULT_DATA_DIR)),
        }
    }
}

fn log_in(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("audit.log")
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain; names the first edited, deleted, inserted or reordered record.
    /// Exit status 1 when broken.
    Verify(LogFile),
    /// Print the records readably (no verification: use `verify` for that).
    Show {
        #[command(flatten)]
        log: LogFile,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Verify(log) => verify(&log.path()),
        AuditCommand::Show { log, last } => show(&log.path(), last),
    }
}

fn verify(path: &Path) -> anyhow::Result<()> {
    let report = clew_audit::verify(path).map_err(|e| explain(path, e))?;
    match &report.break_at {
        None => println!(
            "ok: {} records, chain intact (last hash {})",
            report.records, report.last_hash
        ),
        Some(b) => {
            let seq = b.seq.map_or_else(|| "?".to_string(), |s| s.to_string());
            println!("BROKEN at line {} (seq {seq}): {}", b.line, b.reason);
            println!(
                "  {} record(s) verified before the break (last good hash {})",
                report.records, report.last_hash
            );
        }
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    if report.break_at.is_some() {
        bail!("the audit log {} is broken", path.display());
    }
    Ok(())
}

fn show(path: &Path, last: Option<usize>) -> anyhow::Result<()> {
    let lines = clew_audit::read(path).map_err(|e| explain(path, e))?;
    let skip = last.map_or(0, |n| lines.len().saturating_sub(n));
    for ReadLine { line, record } in &lines[skip..] {
        match record {
            Ok(r) => println!("{}", describe(r)),
            Err(e) => println!("line {line}: unparsable: {e}"),
        }
    }
    if lines.is_empty() {
        println!("(no records in {})", path.display());
    }
    Ok(())
}

fn explain(path: &Path, e: clew_audit::AuditError) -> anyhow::Error {
    match &e {
        clew_audit::AuditError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            anyhow::anyhow!(
                "no audit log at {} (fix: give the file, or --data-dir DIR for DIR/audit/audit.log)",
                path.display()
            )
        }
        _ => anyhow::anyhow!("{e}"),
    }
}

/// `#12  2026-11-30T18:13:37.123Z  oidc:alice  hold.add  tenant=team-a  {"trace_id":"…"}`
fn describe(r: &Record) -> String {
    let mut s = format!(
        "#{:<5} {}  {}  {}",
        r.seq,
        r.time,
        r.actor.as_deref().unwrap_or("-"),
        r.action
    );
    if let Some(t) = &r.tenant {
        s.push_str("  tenant=");
        s.push_str(t);
    }
    if !r.details.is_null() {
        s.push_str("  ");
        s.push_str(&r.details.to_string());
    }
    s
}
