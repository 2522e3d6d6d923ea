//! The administrative API on the query port (`/api/admin/...`), behind the same tenant gate as
//! every other API: legal holds, erasure, retention and key rotation, each scoped to the request's
//! tenant and recorded in the audit log with the caller's identity.
//!
//! * `GET    /api/admin/retention`                — the tenant's retention and current cutoff
//! * `GET    /api/admin/holds`                    — the tenant's holds
//! * `PUT    /api/admin/holds/tenant`             — hold the whole tenant (`{"reason": "..."}`)
//! * `DELETE /api/admin/holds/tenant`
//! * `PUT    /api/admin/holds/traces/{trace_id}`  — hold one trace
//! * `DELETE /api/admin/holds/traces/{trace_id}`
//! * `POST   /api/admin/erase`                    — `{"trace_ids": [...]}` or `{"query": "user.id=42"}`

// Handlers return early with a ready `Response` as their error: large, but never on a hot path.
#![allow(clippy::result_large_err)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use clew_audit::{actions, AuditLog, Event};
use clew_model::{Tenant, TraceId};
use clew_store::erase::{EraseError, EraseTarget};
use clew_store::{SearchQuery, Store};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub audit: Arc<AuditLog>,
    /// Encryption at rest, when configured (key rotation).
    pub keys: Option<crate::serve::Keys>,
    pub tenant_header: Arc<str>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/admin/retention", get(retention))
        .route("/api/admin/holds", get(list_holds))
        .route(
            "/api/admin/holds/tenant",
            put(hold_tenant).delete(release_tenant),
        )
        .route(
            "/api/admin/holds/traces/{trace_id}",
            put(hold_trace).delete(release_trace),
        )
        .route("/api/admin/erase", post(erase))
        .route("/api/admin/keys/rotate", post(rotate_keys))
        .with_state(state)
}

/// The authenticated caller (`None` without `auth:`).
type Caller = Option<Extension<clew_security::Identity>>;

fn actor(caller: &Caller) -> Option<String> {
    caller.as_ref().map(|Extension(i)| i.subject.clone())
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({"error": message.to_string()})),
    )
        .into_response()
}

fn tenant(state: &AdminState, headers: &HeaderMap) -> Result<Tenant, Response> {
    clew_doctor::tenant_from_headers(headers, &state.tenant_header)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

fn trace_id(hex_id: &str) -> Result<TraceId, Response> {
    TraceId::from_hex(hex_id).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid trace id {hex_id:?}: {e}"),
        )
    })
}

fn audit(
    state: &AdminState,
    action: &str,
    tenant: &Tenant,
    caller: &Caller,
    details: serde_json::Value,
) {
    let event = Event::new(action)
        .with_actor(actor(caller))
        .with_tenant(Some(tenant.to_string()))
        .with_details(details);
    if let Err(e) = state.audit.append(event) {
        tracing::error!(error = %e, action, "cannot write the audit log");
    }
}

async fn retention(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    Json(serde_json::json!({
        "tenant": t.as_str(),
        "retention_seconds": s.store.retention_of(&t).as_secs(),
        "cutoff_unix_nano": s.store.retention_cutoff(&t).to_string(),
        "tenant_held": s.store.holds().is_tenant_held(t.as_str()),
    }))
    .into_response()
}

async fn list_holds(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let all = s.store.holds().list();
    Json(serde_json::json!({
        "tenant": t.as_str(),
        "tenant_hold": all.tenants.iter().find(|h| h.tenant == t.as_str()),
        "traces": all.traces.iter().filter(|h| h.tenant == t.as_str()).collect::<Vec<_>>(),
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    #[serde(default)]
    reason: String,
}

fn hold_body(body: Option<Json<HoldBody>>) -> String {
    body.map(|Json(b)| b.reason).unwrap_or_default()
}

fn hold_result(changed: Result<bool, clew_store::StoreError>) -> Response {
    match changed {
        Ok(changed) => Json(serde_json::json!({"changed": changed})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn hold_tenant(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    body: Option<Json<HoldBody>>,
) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let reason = hold_body(body);
    let r = s
        .store
        .holds()
        .hold_tenant(t.as_str(), &reason, actor(&caller).as_deref());
    if matches!(r, Ok(true)) {
        audit(
            &s,
            actions::HOLD_ADD,
            &t,
            &caller,
            serde_json::json!({"scope": "tenant", "reason": reason}),
        );
    }
    hold_result(r)
}

async fn release_tenant(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let r = s.store.holds().release_tenant(t.as_str());
    if matches!(r, Ok(true)) {
        audit(
            &s,
            actions::HOLD_RELEASE,
            &t,
            &caller,
            serde_json::json!({"scope": "tenant"}),
        );
    }
    hold_result(r)
}

async fn hold_trace(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<HoldBody>>,
) -> Response {
    let (t, id) = match tenant(&s, &headers).and_then(|t| Ok((t, trace_id(&id)?))) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let reason = hold_body(body);
    let r = s
        .store
        .holds()
        .hold_trace(t.as_str(), &id.0, &reason, actor(&caller).as_deref());
    if matches!(r, Ok(true)) {
        audit(
            &s,
            actions::HOLD_ADD,
            &t,
            &caller,
            serde_json::json!({"scope": "trace", "trace_id": hex::encode(id.0), "reason": reason}),
        );
    }
    hold_result(r)
}

async fn release_trace(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (t, id) = match tenant(&s, &headers).and_then(|t| Ok((t, trace_id(&id)?))) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = s.store.holds().release_trace(t.as_str(), &id.0);
    if matches!(r, Ok(true)) {
        audit(
            &s,
            actions::HOLD_RELEASE,
            &t,
            &caller,
            serde_json::json!({"scope": "trace", "trace_id": hex::encode(id.0)}),
        );
    }
    hold_result(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    #[serde(default)]
    trace_ids: Vec<String>,
    #[serde(default)]
    query: Option<String>,
}

/// `key=value` pairs separated by spaces (values may be double-quoted): every pair must hold on
/// one span (its span or resource attributes), as in the Jaeger UI's tag search.
pub fn parse_erase_query(q: &str) -> Result<SearchQuery, String> {
    let mut attributes = Vec::new();
    let mut rest = q.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("expected key=value in {rest:?} (fix: e.g. user.id=42)"))?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("invalid key {key:?} (fix: e.g. user.id=42)"));
        }
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("unterminated quote after {key}="))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        attributes.push((key.to_string(), value.to_string()));
        rest = next.trim_start();
    }
    if attributes.is_empty() {
        return Err("empty query (fix: e.g. user.id=42)".into());
    }
    Ok(SearchQuery {
        attributes,
        ..Default::default()
    })
}

async fn erase(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<EraseBody>,
) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let target = match (&body.query, body.trace_ids.is_empty()) {
        (Some(q), true) => match parse_erase_query(q) {
            Ok(q) => EraseTarget::Query(q),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {e}")),
        },
        (None, false) => {
            let mut ids = Vec::new();
            for h in &body.trace_ids {
                match trace_id(h) {
                    Ok(id) => ids.push(id),
                    Err(r) => return r,
                }
            }
            EraseTarget::Traces(ids)
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of `trace_ids` (non-empty) and `query`",
            )
        }
    };
    match s.store.erase(&t, target, actor(&caller).as_deref()).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ EraseError::TenantHeld(_)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    all_tenants: bool,
}

/// `clew keys rotate`: with the local keyring, a new key version for the tenant (or every tenant);
/// with KMS, the key the configuration names now. Then every block's data key is re-wrapped under
/// the current version — `key.json` files only, no data rewritten — and the rotation is audited.
async fn rotate_keys(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    body: Option<Json<RotateBody>>,
) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(keys) = &s.keys else {
        return error(
            StatusCode::CONFLICT,
            "encryption at rest is not configured (storage.encryption)",
        );
    };
    let all = body.map(|Json(b)| b.all_tenants).unwrap_or(false);
    if all {
        if let Some(Extension(id)) = &caller {
            if !matches!(id.tenants, clew_security::TenantScope::Any) {
                return error(
                    StatusCode::FORBIDDEN,
                    "all_tenants needs an identity allowed every tenant",
                );
            }
        }
    }
    let mut rotated = Vec::new();
    if let Some(keyring) = &keys.keyring {
        match keyring.rotate((!all).then_some(t.as_str())) {
            Ok(r) => rotated = r,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
        // Unwrapped keys are cached by their wrapped form; nothing to drop. New data keys use the
        // new version at once (WAL keys from the next segment).
        keys.manager.roll_wal_keys();
    }
    let report = match s.store.rewrap_keys().await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let rotated: Vec<serde_json::Value> = rotated
        .iter()
        .map(|(tenant, version)| serde_json::json!({"tenant": tenant, "version": version}))
        .collect();
    let details = serde_json::json!({
        "all_tenants": all,
        "rotated": rotated,
        "rewrapped": report.rewrapped,
        "already_current": report.already_current,
        "plaintext": report.plaintext,
        "failed": report.failed,
    });
    audit(&s, actions::KEYS_ROTATE, &t, &caller, details.clone());
    for e in &report.errors {
        tracing::warn!(error = %e, "block key not re-wrapped");
    }
    Json(details).into_response()
}

/// The store's own actions (retention deletions, erasures) into the audit log.
#[derive(Debug)]
pub struct AuditEvents(pub Arc<AuditLog>);

impl clew_store::retention::StoreEvents for AuditEvents {
    fn record(&self, action: &str, tenant: Option<&str>, mut details: serde_json::Value) {
        // The erase's caller travels in its details; it belongs in `actor`.
        let actor = details
            .as_object_mut()
            .and_then(|d| d.remove("actor"))
            .and_then(|a| a.as_str().map(str::to_string));
        let event = Event::new(action)
            .with_actor(actor)
            .with_tenant(tenant.map(str::to_string))
            .with_details(details);
        if let Err(e) = self.0.append(event) {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erase_queries() {
        let q = parse_erase_query("user.id=42").unwrap();
        assert_eq!(q.attributes, vec![("user.id".into(), "42".into())]);
        let q = parse_erase_query(r#" user.id=42  email="a b@x.org" "#).unwrap();
        assert_eq!(
            q.attributes,
            vec![
                ("user.id".into(), "42".into()),
                ("email".into(), "a b@x.org".into())
            ]
        );
        for bad in ["", "user.id", "=4", "a b=c", "x=\"open"] {
            assert!(parse_erase_query(bad).is_err(), "{bad}");
        }
    }
}
