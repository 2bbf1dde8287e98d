//! The entitlements enricher (the reference's `createEntitlementRoleEnricher`):
//! `entitlement:<slug>` for each slug in the caller's own entitlement document
//! (`users/{identity}/entitlements`, `{"features": ["premium", …]}`), so a
//! collection can admit `readRoles: ["entitlement:premium"]`. Lookups are cached
//! per namespace and identity for `cache_ttl_ms` (bounded in entries); a document
//! of another shape, or none, is no entitlement.

use crate::access::{AccessRequest, HookError, RoleEnricher};
use crate::auth::Clock;
use crate::config::PathTemplate;
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

/// Identities whose entitlements are kept at once.
const CACHED_IDENTITIES: usize = 10_000;

/// A cached lookup: the roles, and until when (ms) they hold.
type Cached = (Arc<[Arc<str>]>, u64);

/// The entitlements enricher.
pub struct EntitlementEnricher {
    path: PathTemplate,
    field: String,
    role_prefix: String,
    cache_ttl_ms: u64,
    clock: Arc<dyn Clock>,
    /// (namespace, identity) → (roles, until when, ms).
    cache: quick_cache::sync::Cache<(String, String), Cached>,
}

impl std::fmt::Debug for EntitlementEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntitlementEnricher")
            .field("field", &self.field)
            .field("role_prefix", &self.role_prefix)
            .field("cache_ttl_ms", &self.cache_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl EntitlementEnricher {
    /// Entitlements read from `path` (a template with `{identity}`; the reference's
    /// default is `users/{identity}/entitlements`), the slugs under `field`
    /// (`features`), roles `<role_prefix>:<slug>` (`entitlement`), cached
    /// `cache_ttl_ms` (60 000; 0: not cached).
    ///
    /// # Errors
    /// The path is not a template with `{identity}`.
    pub fn new(
        path: &str,
        field: impl Into<String>,
        role_prefix: impl Into<String>,
        cache_ttl_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let template = PathTemplate::parse(path).map_err(|e| format!("path {path:?}: {e}"))?;
        if !template.params().any(|p| p == "identity") {
            return Err(format!("path {path:?} has no {{identity}}"));
        }
        Ok(Self {
            path: template,
            field: field.into(),
            role_prefix: role_prefix.into(),
            cache_ttl_ms,
            clock,
            cache: quick_cache::sync::Cache::new(CACHED_IDENTITIES),
        })
    }

    /// The roles of the slugs under `field` in `data` (none when `data` holds no
    /// list there).
    fn roles_of(&self, data: Option<&serde_json::Map<String, Value>>) -> Arc<[Arc<str>]> {
        let slugs = data
            .and_then(|d| d.get(&self.field))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        let mut roles: Vec<Arc<str>> = slugs
            .map(|slug| Arc::from(format!("{}:{slug}", self.role_prefix)))
            .collect();
        roles.sort();
        roles.dedup();
        roles.into()
    }
}

impl RoleEnricher for EntitlementEnricher {
    fn enrich<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, HookError>> {
        Box::pin(async move {
            // Anonymous callers have no entitlement document.
            let Some(identity) = request.caller().identity() else {
                return Ok(Vec::new());
            };
            let key = (
                request.namespace().unwrap_or("").to_owned(),
                identity.to_owned(),
            );
            let now = self.clock.now_ms();
            if let Some((roles, until)) = self.cache.get(&key) {
                if now < until {
                    return Ok(roles.to_vec());
                }
            }
            let data = request
                .read_data(&self.path, &[("identity", identity)])
                .await?;
            let roles = self.roles_of(data.as_ref());
            if self.cache_ttl_ms > 0 {
                self.cache
                    .insert(key, (roles.clone(), now.saturating_add(self.cache_ttl_ms)));
            }
            Ok(roles.to_vec())
        })
    }
}
