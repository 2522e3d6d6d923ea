//! Legal holds: a tenant, or one trace of a tenant, that retention and erasure must not delete.
//!
//! Kept in one small JSON file, replaced atomically (temp file, fsync, rename, fsync of the
//! directory) on every change:
//!
//! ```text
//! {"version":1,
//!  "tenants":{"team-a":{"reason":"case 7","actor":"oidc:alice","since_unix":1764525217}},
//!  "traces":{"team-b":{"4bf92f3577b34da6a3ce929d0e0e4736":{"reason":"…","actor":null,"since_unix":…}}}}
//! ```
//!
//! Reads (`is_tenant_held`, `is_trace_held`) take a read lock on an in-memory copy; changes are
//! serialized, written to disk first and published only once durable, so readers never wait for
//! an fsync and never see a hold that a crash would lose.

use crate::StoreError;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const VERSION: u32 = 1;

/// One hold: why, who placed it, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    /// The authenticated identity that placed it (`oidc:alice`), if any.
    pub actor: Option<String>,
    pub since_unix: u64,
}

/// A tenant-wide hold, for [`Holds::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantHold {
    pub tenant: String,
    #[serde(flatten)]
    pub hold: Hold,
}

/// A hold on one trace, for [`Holds::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceHold {
    pub tenant: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    #[serde(flatten)]
    pub hold: Hold,
}

/// Every hold, sorted by tenant (then trace id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct HoldsSnapshot {
    pub tenants: Vec<TenantHold>,
    pub traces: Vec<TraceHold>,
}

#[derive(Debug, Clone, Default)]
struct State {
    tenants: HashMap<String, Hold>,
    traces: HashMap<String, HashMap<[u8; 16], Hold>>,
}

/// On-disk form (sorted maps, so the file is stable and diffable).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    version: u32,
    #[serde(default)]
    tenants: BTreeMap<String, Hold>,
    #[serde(default)]
    traces: BTreeMap<String, BTreeMap<String, Hold>>,
}

/// The legal holds of every tenant. Thread-safe; cheap to read.
#[derive(Debug)]
pub struct Holds {
    path: PathBuf,
    state: RwLock<State>,
    /// Serializes changes (copy, persist, publish) without blocking readers during the fsync.
    write: Mutex<()>,
}

impl Holds {
    /// Loads the holds at `path`; a missing file means no holds (it is created at the first
    /// change). A file that cannot be parsed is an error — never silently treated as "no holds".
    pub fn open(path: impl AsRef<Path>) -> Result<Holds, StoreError> {
        let path = path.as_ref().to_path_buf();
        let state = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&path, e)),
        };
        Ok(Holds {
            path,
            state: RwLock::new(state),
            write: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Places a hold on the whole tenant. `Ok(false)` if it was already held (the existing hold,
    /// with its reason and time, is kept).
    pub fn hold_tenant(
        &self,
        tenant: &str,
        reason: &str,
        actor: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.change(|s| {
            if s.tenants.contains_key(tenant) {
                return false;
            }
            s.tenants
                .insert(tenant.to_string(), new_hold(reason, actor));
            true
        })
    }

    /// Releases the tenant-wide hold. `Ok(false)` if there was none. Trace holds stay.
    pub fn release_tenant(&self, tenant: &str) -> Result<bool, StoreError> {
        self.change(|s| s.tenants.remove(tenant).is_some())
    }

    /// Places a hold on one trace. `Ok(false)` if it was already held.
    pub fn hold_trace(
        &self,
        tenant: &str,
        trace_id: &[u8; 16],
        reason: &str,
        actor: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.change(|s| {
            let traces = s.traces.entry(tenant.to_string()).or_default();
            if traces.contains_key(trace_id) {
                return false;
            }
            traces.insert(*trace_id, new_hold(reason, actor));
            true
        })
    }

    /// Releases a hold on one trace. `Ok(false)` if there was none.
    pub fn release_trace(&self, tenant: &str, trace_id: &[u8; 16]) -> Result<bool, StoreError> {
        self.change(|s| {
            let Some(traces) = s.traces.get_mut(tenant) else {
                return false;
            };
            let removed = traces.remove(trace_id).is_some();
            if traces.is_empty() {
                s.traces.remove(tenant);
            }
            removed
        })
    }

    /// Whether the whole tenant is held.
    pub fn is_tenant_held(&self, tenant: &str) -> bool {
        self.state.read().tenants.contains_key(tenant)
    }

    /// Whether this trace must be kept: it is held itself, or its whole tenant is.
    pub fn is_trace_held(&self, tenant: &str, trace_id: &[u8; 16]) -> bool {
        let s = self.state.read();
        s.tenants.contains_key(tenant)
            || s.traces
                .get(tenant)
                .is_some_and(|traces| traces.contains_key(trace_id))
    }

    /// Whether the tenant has any hold at all (tenant-wide or on some trace): retention can skip
    /// per-trace checks for tenants without one.
    pub fn has_any_hold(&self, tenant: &str) -> bool {
        let s = self.state.read();
        s.tenants.contains_key(tenant) || s.traces.contains_key(tenant)
    }

    /// The trace ids held individually in `tenant` (sorted; not including a tenant-wide hold).
    pub fn held_traces(&self, tenant: &str) -> Vec<[u8; 16]> {
        let mut ids: Vec<[u8; 16]> = self
            .state
            .read()
            .traces
            .get(tenant)
            .map(|traces| traces.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Every hold, for the admin API.
    pub fn list(&self) -> HoldsSnapshot {
        let s = self.state.read();
        let mut tenants: Vec<TenantHold> = s
            .tenants
            .iter()
            .map(|(tenant, hold)| TenantHold {
                tenant: tenant.clone(),
                hold: hold.clone(),
            })
            .collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let mut traces: Vec<TraceHold> = s
            .traces
            .iter()
            .flat_map(|(tenant, traces)| {
                traces.iter().map(move |(id, hold)| TraceHold {
                    tenant: tenant.clone(),
                    trace_id: hex::encode(id),
                    hold: hold.clone(),
                })
            })
            .collect();
        traces.sort_by(|a, b| (&a.tenant, &a.trace_id).cmp(&(&b.tenant, &b.trace_id)));
        HoldsSnapshot { tenants, traces }
    }

    /// Applies `f` to a copy; if it changed something, persists the copy, then publishes it.
    fn change(&self, f: impl FnOnce(&mut State) -> bool) -> Result<bool, StoreError> {
        let _serial = self.write.lock();
        let mut next = self.state.read().clone();
        if !f(&mut next) {
            return Ok(false);
        }
        persist(&self.path, &next)?;
        *self.state.write() = next;
        Ok(true)
    }
}

fn new_hold(reason: &str, actor: Option<&str>) -> Hold {
    Hold {
        reason: reason.to_string(),
        actor: actor.map(str::to_string),
        since_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        what: format!("legal holds file {}", path.display()),
        detail,
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<State, StoreError> {
    let form: FileForm = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e.to_string()))?;
    if form.version != VERSION {
        return Err(corrupt(
            path,
            format!("expected version {VERSION}, found version {}", form.version),
        ));
    }
    let mut traces: HashMap<String, HashMap<[u8; 16], Hold>> = HashMap::new();
    for (tenant, held) in form.traces {
        let mut ids = HashMap::with_capacity(held.len());
        for (id, hold) in held {
            ids.insert(
                parse_trace_id(&id)
                    .map_err(|d| corrupt(path, format!("tenant {tenant:?}: {d}")))?,
                hold,
            );
        }
        if !ids.is_empty() {
            traces.insert(tenant, ids);
        }
    }
    Ok(State {
        tenants: form.tenants.into_iter().collect(),
        traces,
    })
}

fn parse_trace_id(s: &str) -> Result<[u8; 16], String> {
    let well_formed = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let mut id = [0u8; 16];
    match hex::decode_to_slice(s, &mut id) {
        Ok(()) if well_formed => Ok(id),
        _ => Err(format!(
            "expected a trace id of 32 lowercase hex digits, found {s:?}"
        )),
    }
}

fn persist(path: &Path, state: &State) -> Result<(), StoreError> {
    let form = FileForm {
        version: VERSION,
        tenants: state
            .tenants
            .iter()
            .map(|(t, h)| (t.clone(), h.clone()))
            .collect(),
        traces: state
            .traces
            .iter()
            .map(|(t, ids)| {
                (
                    t.clone(),
                    ids.iter()
                        .map(|(id, h)| (hex::encode(id), h.clone()))
                        .collect(),
                )
            })
            .collect(),
    };
    let mut body = serde_json::to_vec_pretty(&form)
        .map_err(|e| StoreError::Internal(format!("serializing legal holds: {e}")))?;
    body.push(b'\n');

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [0xab; 16];
    const B: [u8; 16] = [0x01; 16];

    #[test]
    fn holds_change_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds").join("holds.json");
        let holds = Holds::open(&path).unwrap();
        assert!(!holds.is_tenant_held("team-a"));
        assert!(!path.exists(), "nothing written before the first change");

        assert!(holds
            .hold_tenant("team-a", "case 7", Some("oidc:alice"))
            .unwrap());
        assert!(!holds.hold_tenant("team-a", "again", None).unwrap());
        assert!(holds.hold_trace("team-b", &A, "case 9", None).unwrap());
        assert!(holds
            .hold_trace("team-b", &B, "case 9", Some("token:ci"))
            .unwrap());
        assert!(!holds.hold_trace("team-b", &A, "dup", None).unwrap());

        assert!(holds.is_tenant_held("team-a"));
        assert!(
            holds.is_trace_held("team-a", &A),
            "tenant-wide hold covers every trace"
        );
        assert!(holds.is_trace_held("team-b", &A));
        assert!(!holds.is_tenant_held("team-b"));
        assert!(!holds.is_trace_held("team-c", &A));
        assert!(holds.has_any_hold("team-b") && !holds.has_any_hold("team-c"));
        assert_eq!(holds.held_traces("team-b"), vec![B, A]);
        assert!(holds.held_traces("team-a").is_empty());

        let reopened = Holds::open(&path).unwrap();
        assert_eq!(reopened.list(), holds.list());
        let list = reopened.list();
        assert_eq!(list.tenants.len(), 1);
        assert_eq!(list.tenants[0].tenant, "team-a");
        assert_eq!(list.tenants[0].hold.reason, "case 7", "first hold kept");
        assert_eq!(list.tenants[0].hold.actor.as_deref(), Some("oidc:alice"));
        assert!(list.tenants[0].hold.since_unix > 1_700_000_000);
        assert_eq!(list.traces.len(), 2);
        assert_eq!(list.traces[0].trace_id, "01010101010101010101010101010101");
        assert_eq!(list.traces[1].trace_id, hex::encode(A));

        assert!(reopened.release_tenant("team-a").unwrap());
        assert!(!reopened.release_tenant("team-a").unwrap());
        assert!(reopened.release_trace("team-b", &A).unwrap());
        assert!(!reopened.release_trace("team-b", &A).unwrap());
        assert!(!reopened.release_trace("team-x", &A).unwrap());

        let again = Holds::open(&path).unwrap();
        assert!(!again.is_tenant_held("team-a"));
        assert!(!again.is_trace_held("team-b", &A));
        assert!(again.is_trace_held("team-b", &B));
        assert!(again.release_trace("team-b", &B).unwrap());
        assert!(
            !again.has_any_hold("team-b"),
            "empty tenant entries are dropped"
        );
        let empty = Holds::open(&path).unwrap();
        assert_eq!(empty.list(), HoldsSnapshot::default());
        assert!(!dir.path().join("holds").join("holds.json.tmp").exists());
    }

    #[test]
    fn file_format_is_stable_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds.json");
        let holds = Holds::open(&path).unwrap();
        holds.hold_trace("t", &A, "r", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["tenants"], serde_json::json!({}));
        let hold = &v["traces"]["t"][hex::encode(A)];
        assert_eq!(hold["reason"], "r");
        assert_eq!(hold["actor"], serde_json::Value::Null);
        assert!(hold["since_unix"].as_u64().unwrap() > 0);
        let listed = serde_json::to_value(holds.list()).unwrap();
        assert_eq!(listed["traces"][0]["trace_id"], hex::encode(A));
        assert_eq!(listed["traces"][0]["reason"], "r");
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds.json");
        for bad in [
            "{not json",
            r#"{"version":2,"tenants":{},"traces":{}}"#,
            r#"{"version":1,"traces":{"t":{"XYZ":{"reason":"r","actor":null,"since_unix":1}}}}"#,
            r#"{"version":1,"traces":{"t":{"ABABABABABABABABABABABABABABABAB":{"reason":"r","actor":null,"since_unix":1}}}}"#,
            r#"{"version":1,"tenants":{"t":{"reason":"r"}}}"#,
            r#"{"version":1,"extra":true}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = Holds::open(&path).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { what, .. } if what.contains("holds.json")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn failed_write_leaves_state_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let holds = Holds::open(sub.join("holds.json")).unwrap();
        // The parent "directory" turns out to be a file: persisting fails.
        std::fs::write(&sub, "").unwrap();
        let err = holds.hold_tenant("t", "r", None).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(!holds.is_tenant_held("t"));
    }

    #[test]
    fn concurrent_changes_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds.json");
        let holds = std::sync::Arc::new(Holds::open(&path).unwrap());
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let holds = holds.clone();
                std::thread::spawn(move || {
                    for i in 0..10u8 {
                        let mut id = [0u8; 16];
                        id[0] = t;
                        id[1] = i;
                        assert!(holds.hold_trace("t", &id, "r", None).unwrap());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(holds.held_traces("t").len(), 40);
        assert_eq!(Holds::open(&path).unwrap().held_traces("t").len(), 40);
    }
}
