//! Tenants: every stored object belongs to exactly one. Names become path segments in the store, so
//! the grammar is strict.

use std::fmt;
use thiserror::Error;

pub const DEFAULT_TENANT: &str = "single-tenant";
pub const MAX_TENANT_LEN: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_TENANT_LEN} characters")]
    TooLong,
    #[error("tenant id {0:?} may only contain ASCII letters, digits, '-', '_' and '.' (and not be '.' or '..')")]
    BadChars(String),
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    pub fn new(name: &str) -> Result<Self, TenantError> {
        if name.is_empty() {
            return Err(TenantError::Empty);
        }
        if name.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong);
        }
        let ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok || name == "." || name == ".." {
            return Err(TenantError::BadChars(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn grammar() {
        assert!(Tenant::new("acme-prod_1.eu").is_ok());
        assert_eq!(Tenant::new(""), Err(TenantError::Empty));
        assert!(Tenant::new("../etc").is_err());
        assert!(Tenant::new("..").is_err());
        assert!(Tenant::new("a/b").is_err());
        assert_eq!(Tenant::new(&"a".repeat(65)), Err(TenantError::TooLong));
    }
}
