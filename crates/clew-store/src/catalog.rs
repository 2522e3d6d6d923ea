//! Services and operations seen per tenant, kept in memory so listing them never scans data.

use crate::api::Operation;
use clew_model::Tenant;
use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// service → (operation name, span kind).
type ServiceOps = BTreeMap<String, BTreeSet<(String, i32)>>;

#[derive(Default)]
pub struct Catalog {
    tenants: RwLock<HashMap<Tenant, ServiceOps>>,
}

impl Catalog {
    pub fn add<'a>(&self, tenant: &Tenant, ops: impl IntoIterator<Item = (&'a str, &'a str, i32)>) {
        let mut guard = self.tenants.write();
        let services = guard.entry(tenant.clone()).or_default();
        for (service, name, kind) in ops {
            let set = match services.get_mut(service) {
                Some(s) => s,
                None => services.entry(service.to_string()).or_default(),
            };
            if !set.contains(&(name.to_string(), kind)) {
                set.insert((name.to_string(), kind));
            }
        }
    }

    pub fn services(&self, tenant: &Tenant) -> Vec<String> {
        self.tenants
            .read()
            .get(tenant)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn operations(&self, tenant: &Tenant, service: Option<&str>) -> Vec<Operation> {
        let guard = self.tenants.read();
        let Some(services) = guard.get(tenant) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (svc, ops) in services {
            if service.is_some_and(|s| s != svc) {
                continue;
            }
            out.extend(ops.iter().map(|(name, kind)| Operation {
                service: svc.clone(),
                name: name.clone(),
                span_kind: *kind,
            }));
        }
        out.sort();
        out
    }
}
