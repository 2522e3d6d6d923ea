//! Every tamper case `clew audit verify` must catch, crash recovery on open, and concurrency.

use clew_audit::{actions, anchor_path, verify, AuditLog, Event, Record, GENESIS_HASH};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn log_with(n: u64) -> (tempfile::TempDir, PathBuf, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit").join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    let mut records = Vec::new();
    for i in 0..n {
        let event = Event::new(if i % 2 == 0 {
            actions::HOLD_ADD
        } else {
            actions::HOLD_RELEASE
        })
        .with_actor(Some(format!("oidc:user{i}")))
        .with_tenant(Some("team-a".into()))
        .with_details(serde_json::json!({"trace_id": format!("{i:032x}"), "reason": "case 7"}));
        records.push(log.append(event).unwrap());
    }
    (dir, path, records)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    if !lines.is_empty() {
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn intact_chain_verifies() {
    let (_d, path, records) = log_with(5);
    let report = verify(&path).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 5);
    assert_eq!(report.last_seq, 5);
    assert_eq!(report.last_hash, records[4].hash);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(records[0].prev, GENESIS_HASH);
    for w in records.windows(2) {
        assert_eq!(w[1].prev, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    // Each line is exactly the serialized record, and the hash is over it minus `hash`.
    for (line, record) in lines(&path).iter().zip(&records) {
        assert_eq!(*line, serde_json::to_string(record).unwrap());
        assert_eq!(record.compute_hash().unwrap(), record.hash);
        assert!(record.time.ends_with('Z'), "{}", record.time);
    }
    let anchor = std::fs::read_to_string(anchor_path(&path)).unwrap();
    assert_eq!(
        anchor,
        format!("{{\"seq\":5,\"hash\":\"{}\"}}\n", records[4].hash)
    );
}

#[test]
fn empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    drop(AuditLog::open(&path).unwrap());
    let report = verify(&path).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 0);
    assert_eq!(report.last_hash, GENESIS_HASH);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn edited_field_is_detected() {
    let (_d, path, _) = log_with(5);
    let mut l = lines(&path);
    assert!(l[2].contains("oidc:user2"));
    l[2] = l[2].replace("oidc:user2", "oidc:mallory");
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (3, Some(3)));
    assert!(b.reason.contains("record modified"), "{}", b.reason);
    assert!(b.reason.contains("hashes to"), "{}", b.reason);
}

#[test]
fn edited_record_with_recomputed_hash_breaks_the_next_link() {
    let (_d, path, records) = log_with(5);
    let mut forged = records[2].clone();
    forged.tenant = Some("team-b".into());
    let (line, hash) = forged.sealed_line().unwrap();
    let mut l = lines(&path);
    l[2] = line;
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (4, Some(4)));
    assert!(
        b.reason.contains(&format!("expected prev {hash}")),
        "{}",
        b.reason
    );
    assert!(b.reason.contains(&records[2].hash), "{}", b.reason);
}

#[test]
fn whitespace_change_is_detected() {
    let (_d, path, _) = log_with(3);
    let mut l = lines(&path);
    l[1] = l[1].replacen("\"seq\":2", "\"seq\": 2", 1);
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (2, Some(2)));
}

#[test]
fn deleted_middle_record_is_detected() {
    let (_d, path, _) = log_with(5);
    let mut l = lines(&path);
    l.remove(2);
    write_lines(&path, &l);
    let report = verify(&path).unwrap();
    let b = report.break_at.expect("break");
    assert_eq!((b.line, b.seq), (3, Some(4)));
    assert!(
        b.reason.contains("expected seq 3, found seq 4"),
        "{}",
        b.reason
    );
    assert_eq!(report.records, 2);
}

#[test]
fn deleted_first_record_is_detected() {
    let (_d, path, _) = log_with(3);
    let mut l = lines(&path);
    l.remove(0);
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (1, Some(2)));
    assert!(b.reason.contains("expected seq 1"), "{}", b.reason);
}

#[test]
fn deleted_last_record_is_detected_by_the_anchor() {
    let (_d, path, records) = log_with(5);
    let mut l = lines(&path);
    l.pop();
    write_lines(&path, &l);
    let report = verify(&path).unwrap();
    let b = report.break_at.expect("break");
    assert_eq!((b.line, b.seq), (5, Some(5)));
    assert!(
        b.reason.contains("expected the log to end at seq 5"),
        "{}",
        b.reason
    );
    assert!(b.reason.contains(&records[4].hash), "{}", b.reason);
    assert!(
        b.reason.contains("found it ending at seq 4"),
        "{}",
        b.reason
    );
    assert_eq!(report.records, 4);
}

#[test]
fn deleted_everything_is_detected_by_the_anchor() {
    let (_d, path, _) = log_with(2);
    write_lines(&path, &[]);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (1, Some(1)));
    assert!(b.reason.contains("(empty)"), "{}", b.reason);
}

#[test]
fn missing_anchor_is_a_warning_not_a_break() {
    let (_d, path, _) = log_with(5);
    let mut l = lines(&path);
    l.pop();
    write_lines(&path, &l);
    std::fs::remove_file(anchor_path(&path)).unwrap();
    let report = verify(&path).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 4);
    assert_eq!(report.warnings.len(), 1);
    assert!(
        report.warnings[0].contains("missing"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn corrupt_anchor_is_a_break() {
    let (_d, path, _) = log_with(2);
    std::fs::write(anchor_path(&path), "nope").unwrap();
    let b = verify(&path).unwrap().break_at.expect("break");
    assert!(b.reason.contains("unparsable"), "{}", b.reason);
}

#[test]
fn rewritten_tail_is_detected_by_the_anchor_hash() {
    // Drop the last record and forge a different, correctly chained one in its place.
    let (_d, path, records) = log_with(3);
    let mut forged = records[2].clone();
    forged.action = actions::HOLD_ADD.into();
    forged.details = serde_json::json!({"forged": true});
    let (line, _) = forged.sealed_line().unwrap();
    let mut l = lines(&path);
    l[2] = line;
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (3, Some(3)));
    assert!(b.reason.contains("anchor"), "{}", b.reason);
}

#[test]
fn inserted_record_with_a_correct_own_hash_is_detected() {
    let (_d, path, records) = log_with(5);
    let forged = Record {
        seq: 3,
        time: records[1].time.clone(),
        actor: Some("oidc:mallory".into()),
        action: actions::HOLD_RELEASE.into(),
        tenant: Some("team-a".into()),
        details: serde_json::json!({}),
        prev: records[1].hash.clone(),
        hash: String::new(),
    };
    let (line, hash) = forged.sealed_line().unwrap();
    let mut l = lines(&path);
    l.insert(2, line);
    write_lines(&path, &l);
    let report = verify(&path).unwrap();
    let b = report.break_at.expect("break");
    // The forged line itself chains; the original seq 3 after it does not.
    assert_eq!((b.line, b.seq), (4, Some(3)));
    assert!(
        b.reason.contains("expected seq 4, found seq 3"),
        "{}",
        b.reason
    );
    assert_eq!(report.records, 3);
    assert_eq!(report.last_hash, hash);
}

#[test]
fn appended_forgery_after_the_anchor_is_a_warning() {
    let (_d, path, records) = log_with(2);
    let forged = Record {
        seq: 3,
        time: records[1].time.clone(),
        actor: None,
        action: actions::ERASE.into(),
        tenant: None,
        details: serde_json::Value::Null,
        prev: records[1].hash.clone(),
        hash: String::new(),
    };
    let mut l = lines(&path);
    l.push(forged.sealed_line().unwrap().0);
    write_lines(&path, &l);
    let report = verify(&path).unwrap();
    assert!(report.is_intact());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("after the anchor")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn swapped_records_are_detected() {
    let (_d, path, _) = log_with(5);
    let mut l = lines(&path);
    l.swap(1, 2);
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (2, Some(3)));
    assert!(
        b.reason.contains("expected seq 2, found seq 3"),
        "{}",
        b.reason
    );
}

#[test]
fn renumbered_swap_is_detected_by_prev() {
    // Swap two records and fix their seqs and own hashes: the prev links still give it away.
    let (_d, path, records) = log_with(4);
    let mut a = records[2].clone();
    let mut b = records[1].clone();
    a.seq = 2;
    b.seq = 3;
    let mut l = lines(&path);
    l[1] = a.sealed_line().unwrap().0;
    l[2] = b.sealed_line().unwrap().0;
    write_lines(&path, &l);
    let brk = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((brk.line, brk.seq), (2, Some(2)));
    assert!(
        brk.reason
            .contains(&format!("expected prev {}", records[0].hash)),
        "{}",
        brk.reason
    );
}

#[test]
fn garbage_line_is_detected() {
    let (_d, path, _) = log_with(3);
    let mut l = lines(&path);
    l.insert(1, "this is not json".into());
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (2, None));
    assert!(b.reason.contains("unparsable"), "{}", b.reason);

    let (_d2, path2, _) = log_with(3);
    let mut l = lines(&path2);
    l.insert(1, String::new());
    write_lines(&path2, &l);
    let b = verify(&path2).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (2, None));
    assert!(b.reason.contains("empty line"), "{}", b.reason);
}

#[test]
fn hash_member_moved_is_detected() {
    let (_d, path, records) = log_with(2);
    let r = &records[1];
    let moved = format!(
        "{{\"hash\":\"{}\",\"seq\":{},\"time\":\"{}\",\"actor\":{},\"action\":\"{}\",\"tenant\":\"team-a\",\"details\":{},\"prev\":\"{}\"}}",
        r.hash,
        r.seq,
        r.time,
        serde_json::to_string(&r.actor).unwrap(),
        r.action,
        r.details,
        r.prev
    );
    let mut l = lines(&path);
    l[1] = moved;
    write_lines(&path, &l);
    let b = verify(&path).unwrap().break_at.expect("break");
    assert_eq!((b.line, b.seq), (2, Some(2)));
    assert!(
        b.reason.contains("expected the line to end with"),
        "{}",
        b.reason
    );
}

#[test]
fn torn_tail_is_truncated_on_open_and_the_chain_continues() {
    let (_d, path, records) = log_with(3);
    let full = std::fs::read(&path).unwrap();
    let mut torn = full.clone();
    let fragment = b"{\"seq\":4,\"time\":\"2026-";
    torn.extend_from_slice(fragment);
    std::fs::write(&path, &torn).unwrap();

    // Read-only verify: a warning, not a break.
    let report = verify(&path).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("incomplete line")),
        "{:?}",
        report.warnings
    );

    let log = AuditLog::open(&path).unwrap();
    let t = log.open_report().truncated.clone().expect("truncated");
    assert_eq!(t.offset, full.len() as u64);
    assert_eq!(t.bytes, fragment.len() as u64);
    assert!(t.preview.starts_with("{\"seq\":4"));
    assert!(log.open_report().problem.is_none());
    assert_eq!(std::fs::read(&path).unwrap(), full);
    let r = log.append(Event::new(actions::KEYS_ROTATE)).unwrap();
    assert_eq!(r.seq, 4);
    assert_eq!(r.prev, records[2].hash);
    let report = verify(&path).unwrap();
    assert!(
        report.is_intact() && report.warnings.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.records, 4);
}

#[test]
fn unparsable_final_line_is_truncated_on_open() {
    let (_d, path, _) = log_with(2);
    let full = std::fs::read(&path).unwrap();
    let mut torn = full.clone();
    torn.extend_from_slice(b"\0\0\0\0\n");
    std::fs::write(&path, &torn).unwrap();
    let log = AuditLog::open(&path).unwrap();
    let t = log.open_report().truncated.clone().expect("truncated");
    assert!(t.reason.contains("unparsable final line"), "{}", t.reason);
    assert_eq!(t.bytes, 5);
    assert!(log.open_report().problem.is_none());
    assert_eq!(std::fs::read(&path).unwrap(), full);
    assert_eq!(log.append(Event::new("x")).unwrap().seq, 3);
    assert!(verify(&path).unwrap().is_intact());
}

#[test]
fn a_break_in_the_middle_is_reported_on_open_not_fixed() {
    let (_d, path, records) = log_with(4);
    let mut l = lines(&path);
    l[1] = l[1].replace("oidc:user1", "oidc:mallory");
    write_lines(&path, &l);
    let edited = std::fs::read(&path).unwrap();

    let log = AuditLog::open(&path).unwrap();
    let report = log.open_report().clone();
    let problem = report.problem.expect("problem");
    assert_eq!((problem.line, problem.seq), (2, Some(2)));
    assert!(report.truncated.is_none());
    // Untouched, plus one record stating the finding, chained after the last line.
    let after = std::fs::read(&path).unwrap();
    assert!(after.starts_with(&edited));
    let r = log.append(Event::new(actions::ADMIN_REQUEST)).unwrap();
    assert_eq!(r.seq, 6);
    let l = lines(&path);
    let note: Record = serde_json::from_str(&l[4]).unwrap();
    assert_eq!(note.action, actions::CHAIN_BROKEN);
    assert_eq!(note.seq, 5);
    assert_eq!(note.prev, records[3].hash);
    assert_eq!(note.details["line"], 2);

    drop(log);
    // Reopening does not record the same finding again.
    let log = AuditLog::open(&path).unwrap();
    assert!(log.open_report().problem.is_some());
    assert_eq!(log.last().0, 6);
    let v = verify(&path).unwrap();
    let b = v.break_at.expect("still broken");
    assert_eq!((b.line, b.seq), (2, Some(2)));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("found the chain broken")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn tail_deletion_found_on_open_is_recorded_in_the_log() {
    let (_d, path, records) = log_with(4);
    let mut l = lines(&path);
    l.pop();
    write_lines(&path, &l);
    let log = AuditLog::open(&path).unwrap();
    let problem = log.open_report().problem.clone().expect("problem");
    assert_eq!((problem.line, problem.seq), (4, Some(4)));
    let (seq, _) = log.last();
    assert_eq!(seq, 4, "the chain_broken record takes seq 4 after seq 3");
    drop(log);
    let v = verify(&path).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("found the chain broken") && w.contains(&records[3].hash)),
        "{:?}",
        v.warnings
    );
}

#[test]
fn reopen_continues_the_chain_and_restores_a_missing_anchor() {
    let (_d, path, records) = log_with(3);
    std::fs::remove_file(anchor_path(&path)).unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert!(log.open_report().problem.is_none());
    assert_eq!(log.open_report().warnings.len(), 1);
    assert_eq!(log.open_report().lines, 3);
    assert!(anchor_path(&path).exists());
    assert_eq!(log.last(), (3, records[2].hash.clone()));
    let r = log.append(Event::new(actions::CONFIG_LOADED)).unwrap();
    assert_eq!((r.seq, r.prev.as_str()), (4, records[2].hash.as_str()));
    assert_eq!(r.actor, None);
    drop(log);
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(
        *log.open_report(),
        clew_audit::OpenReport {
            lines: 4,
            ..Default::default()
        }
    );
    let v = verify(&path).unwrap();
    assert!(v.is_intact() && v.warnings.is_empty(), "{v:?}");
}

#[test]
fn anchor_behind_after_a_crash_is_refreshed_on_open() {
    // Crash between fsyncing a record and replacing the anchor: the anchor is one behind.
    let (_d, path, records) = log_with(3);
    let stale = format!("{{\"seq\":2,\"hash\":\"{}\"}}\n", records[1].hash);
    std::fs::write(anchor_path(&path), stale).unwrap();
    let v = verify(&path).unwrap();
    assert!(v.is_intact());
    assert_eq!(v.warnings.len(), 1);
    let log = AuditLog::open(&path).unwrap();
    assert!(log.open_report().problem.is_none());
    drop(log);
    let v = verify(&path).unwrap();
    assert!(v.is_intact() && v.warnings.is_empty(), "{v:?}");
}

#[test]
fn concurrent_appends_keep_the_chain_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| {
                        log.append(
                            Event::new(actions::ADMIN_REQUEST)
                                .with_actor(Some(format!("token:t{t}")))
                                .with_details(serde_json::json!({"i": i})),
                        )
                        .unwrap()
                        .seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
    let v = verify(&path).unwrap();
    assert!(v.is_intact() && v.warnings.is_empty(), "{v:?}");
    assert_eq!(v.records, 120);
    assert_eq!(v.last_hash, log.last().1);
}

#[test]
fn read_lists_records_and_unparsable_lines() {
    let (_d, path, records) = log_with(2);
    let mut l = lines(&path);
    l.push("junk".into());
    write_lines(&path, &l);
    let read = clew_audit::read(&path).unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].record.as_ref().unwrap(), &records[0]);
    assert_eq!(read[2].line, 3);
    assert!(read[2].record.is_err());
}

#[test]
fn verify_of_a_missing_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&dir.path().join("nope.log")).unwrap_err();
    assert!(matches!(err, clew_audit::AuditError::Io { .. }), "{err}");
}
