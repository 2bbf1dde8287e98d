//! Namespaces created at runtime: a registry in the object store, and the lookup
//! that turns a request's first path segment into a tenant's [`Scope`].
//!
//! Each tenant is one record, `_starfish/tenants/<name>`, written only by
//! compare-and-swap: a creation is a conditional create, so of two concurrent
//! creations of one name (on any nodes sharing the store) exactly one succeeds, and a
//! suspension or deletion replaces the version it read. Nothing holds the list of
//! tenants: a node looks a tenant up by name when a request names it, and keeps the
//! answer (found or not) for [`TenantOptions::refresh`]. So a tenant created on one
//! node is served by every node within that bound, a suspended or deleted one stops
//! being served within it, and a request never scans the tenants.

pub(crate) mod keys;
mod registry;
mod scope;

pub(crate) use scope::Scope;

use crate::auth::Clock;
use crate::config::names::SYSTEM_ROOT;
use crate::config::{Isolation, MAX_ISOLATED_NAME_BYTES, Namespace, NamespaceName, SyncConfig};
use crate::store::{CasError, DocStore, NamespaceStores, NsStore, ObjectKey, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The registry's area of the store: `_starfish/tenants/<name>`.
const REGISTRY_AREA: &str = "tenants";
/// Default for how long a node trusts what it looked up.
pub(crate) const DEFAULT_TENANT_REFRESH: Duration = Duration::from_secs(1);
/// Default bound on looked-up tenants kept in memory.
pub(crate) const DEFAULT_TENANT_CACHE: usize = 100_000;
/// Default for [`TenantOptions::unknown_lookups_per_second`].
pub(crate) const DEFAULT_UNKNOWN_LOOKUPS: u32 = 100;

/// Settings of namespaces created at runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TenantOptions {
    /// How long a node serves what it looked up about a tenant (found, suspended or
    /// missing) before it reads the record again: the bound on how long a change made
    /// on another node takes to be seen here.
    pub refresh: Duration,
    /// Most tenants whose lookup is kept in memory at once.
    pub cache_entries: usize,
    /// Most registry reads per second, on this node, for names not known to be
    /// tenants (never looked up, or missing when last looked up). A flood of made-up
    /// namespace names costs the store at most this; past it, such a name answers
    /// 404 without a read until the next second. Known tenants are refreshed as usual.
    /// API key ids not known to exist are capped alike (401 past it).
    pub unknown_lookups_per_second: u32,
}

impl Default for TenantOptions {
    fn default() -> Self {
        Self {
            refresh: DEFAULT_TENANT_REFRESH,
            cache_entries: DEFAULT_TENANT_CACHE,
            unknown_lookups_per_second: DEFAULT_UNKNOWN_LOOKUPS,
        }
    }
}

/// The state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TenantState {
    /// Served.
    Active,
    /// Its routes answer 403; its data is kept.
    Suspended,
    /// Being deleted: its routes answer 404, its data is being removed.
    Deleting,
}

/// A tenant's registry record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenantRecord {
    pub(crate) name: String,
    pub(crate) template: String,
    pub(crate) state: TenantState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trusted_roots: Option<Vec<String>>,
    pub(crate) created_at: u64,
    /// Random, new for every creation of the name: where its data lives, and what an
    /// API key granted this tenant is bound to.
    pub(crate) generation: String,
    /// Request limits set through the admin API (over the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limits: Option<crate::config::NamespaceLimits>,
}

/// A fresh generation id (16 hex digits).
pub(crate) fn new_generation() -> Result<String, TenantError> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|_| TenantError::Contended)?;
    Ok(hex::encode(random))
}

/// What a node knows about one name.
#[derive(Clone)]
struct Known {
    scope: Option<Arc<Scope>>,
    at_ms: u64,
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TenantError {
    #[error("invalid namespace name")]
    InvalidName,
    #[error("unknown namespace template")]
    UnknownTemplate,
    #[error("namespace exists")]
    Exists,
    #[error("namespace is defined in the config")]
    InConfig,
    #[error("no such namespace")]
    Missing,
    #[error("the registry is busy, retry")]
    Contended,
    #[error("the namespace's store cannot be opened")]
    StoreUnopenable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E: Into<TenantError>> From<CasError<E>> for TenantError {
    fn from(e: CasError<E>) -> Self {
        match e {
            CasError::Rejected(e) => e.into(),
            CasError::Contended => Self::Contended,
            CasError::Store(e) => Self::Store(e),
        }
    }
}

/// A per-second cap on store reads an unauthenticated request can cause (lookups of
/// names or key ids nobody has shown to exist): past it, the name is treated as
/// unknown without a read until the next second.
pub(crate) struct ReadBudget {
    /// The current second and how many reads it has had.
    window: std::sync::Mutex<(u64, u32)>,
    per_second: u32,
}

impl ReadBudget {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            window: std::sync::Mutex::new((0, 0)),
            per_second: per_second.max(1),
        }
    }

    /// True when one more read fits the second of `now_ms` (and counts it).
    pub(crate) fn take(&self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= self.per_second {
            return false;
        }
        window.1 += 1;
        true
    }
}

/// The runtime tenants of one router.
pub(crate) struct Tenants {
    registry: NsStore,
    root: DocStore,
    stores: Option<Arc<dyn NamespaceStores>>,
    templates: HashMap<String, Namespace>,
    /// Names taken by the config's own namespaces.
    static_names: std::collections::HashSet<String>,
    isolation: Isolation,
    known: quick_cache::sync::Cache<Box<str>, Known>,
    /// Stores opened for `store` tenants, kept apart from `known` so that a refresh
    /// never swaps a tenant's store (its in-process write locks) under its writers.
    opened: quick_cache::sync::Cache<Box<str>, DocStore>,
    /// Quota ledgers of tenants whose template has a quota, by `name/generation`:
    /// kept across refreshes, as a node's lease lives in them.
    ledgers: quick_cache::sync::Cache<Box<str>, Arc<crate::store::Ledger>>,
    /// Request limits of tenants, by `name/generation`: kept across refreshes, as
    /// their counters and in-flight places live in them.
    budgets: quick_cache::sync::Cache<Box<str>, Arc<crate::access::Budget>>,
    /// Wraps the data keys of tenants whose template has `encryptAtRest`.
    key_wrap: Option<Arc<dyn crate::store::KeyWrap>>,
    /// Keyrings of those tenants, by `name/generation`: kept across refreshes, as
    /// their unwrapped keys live in them.
    keyrings: quick_cache::sync::Cache<Box<str>, Arc<crate::store::Keyring>>,
    refresh_ms: u64,
    clock: Arc<dyn Clock>,
    /// Reads of the registry for names not known to be tenants.
    unknown: ReadBudget,
}

impl Tenants {
    pub(crate) fn new(
        config: &SyncConfig,
        root: DocStore,
        stores: Option<Arc<dyn NamespaceStores>>,
        options: &TenantOptions,
        key_wrap: Option<Arc<dyn crate::store::KeyWrap>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            registry: NsStore::system(root.clone(), REGISTRY_AREA),
            root,
            stores,
            templates: config
                .templates
                .iter()
                .map(|t| (t.name.to_string(), t.clone()))
                .collect(),
            static_names: config
                .namespaces
                .iter()
                .map(|n| n.name.to_string())
                .collect(),
            // A tenant made from a template never shares keys with another one.
            isolation: match config.isolation {
                Isolation::Shared => Isolation::Prefixed,
                other => other,
            },
            known: quick_cache::sync::Cache::new(options.cache_entries.max(1)),
            opened: quick_cache::sync::Cache::new(options.cache_entries.max(1)),
            ledgers: quick_cache::sync::Cache::new(options.cache_entries.max(1)),
            budgets: quick_cache::sync::Cache::new(options.cache_entries.max(1)),
            key_wrap,
            keyrings: quick_cache::sync::Cache::new(options.cache_entries.max(1)),
            refresh_ms: u64::try_from(options.refresh.as_millis()).unwrap_or(u64::MAX),
            clock,
            unknown: ReadBudget::new(options.unknown_lookups_per_second),
        }
    }

    /// How many names this node keeps looked up.
    pub(crate) fn cached(&self) -> usize {
        self.known.len()
    }

    /// True when the config has templates, so runtime tenants can exist.
    pub(crate) fn enabled(&self) -> bool {
        !self.templates.is_empty()
    }

    /// A name a runtime tenant may take: the config's rules, at most 63 bytes, no
    /// upper case (two names differing in case would share a folder on a
    /// case-insensitive filesystem), not `_starfish`.
    pub(crate) fn valid_name(&self, name: &str) -> Option<NamespaceName> {
        if name.len() > MAX_ISOLATED_NAME_BYTES
            || name == SYSTEM_ROOT
            || name.bytes().any(|b| b.is_ascii_uppercase())
        {
            return None;
        }
        NamespaceName::parse(name).ok()
    }

    /// Checks that every template can be served (a `store` template needs a way to
    /// open stores).
    pub(crate) fn check(&self) -> Result<(), String> {
        for t in self.templates.values() {
            if t.isolation.unwrap_or(self.isolation) == Isolation::Store && self.stores.is_none() {
                return Err(format!(
                    "Namespace template \"{}\": isolation \"store\" needs SyncOptions::with_namespace_stores",
                    t.name
                ));
            }
            if t.encrypt_at_rest && self.key_wrap.is_none() {
                return Err(format!(
                    "Namespace template \"{}\": encryptAtRest needs a master key (STARFISH_MASTER_KEY or STARFISH_MASTER_KEY_FILE)",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// The keyring of tenant `name` in `generation`, when its template seals at rest
    /// (record `_starfish/datakeys/t/<name>/<generation>`).
    pub(crate) fn keyring_of(
        &self,
        name: &NamespaceName,
        generation: &str,
        template: &Namespace,
    ) -> Option<Arc<crate::store::Keyring>> {
        if !template.encrypt_at_rest {
            return None;
        }
        let wrap = self.key_wrap.clone()?;
        let id = format!("{name}/{generation}");
        if let Some(ring) = self.keyrings.get(id.as_str()) {
            return Some(ring);
        }
        let ring = Arc::new(crate::store::Keyring::for_runtime(
            &self.root,
            name,
            generation,
            wrap,
            self.clock.clone(),
        ));
        self.keyrings.insert(id.into(), ring.clone());
        Some(ring)
    }

    /// The scope of tenant `name`, from memory if fresh, else from its record.
    ///
    /// # Errors
    /// [`StoreError`] when the record cannot be read.
    pub(crate) async fn lookup(&self, name: &str) -> Result<Option<Arc<Scope>>, StoreError> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(valid) = self.valid_name(name) else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let known = self.known.get(name);
        if let Some(known) = &known {
            if now.saturating_sub(known.at_ms) < self.refresh_ms {
                return Ok(known.scope.clone());
            }
        }
        let tenant = known.is_some_and(|k| k.scope.is_some());
        if !tenant && !self.unknown.take(now) {
            tracing::debug!(
                namespace = name,
                "over the budget for unknown names; not looked up"
            );
            return Ok(None);
        }
        // Boxed: a store read's future is large, and a fresh answer from memory
        // (nearly every request) should not carry it.
        let scope = match Box::pin(self.read(&valid)).await? {
            Some(record) if record.state != TenantState::Deleting => {
                self.scope(&valid, &record).map(Arc::new)
            }
            _ => None,
        };
        self.known.insert(
            name.into(),
            Known {
                scope: scope.clone(),
                at_ms: now,
            },
        );
        Ok(scope)
    }

    /// Forgets what this node knows about `name` (after changing it here).
    fn forget(&self, name: &str) {
        self.known.remove(name);
    }

    /// The record of `name`, if any.
    async fn read(&self, name: &NamespaceName) -> Result<Option<TenantRecord>, StoreError> {
        let Some(bytes) = self.registry.get(&ObjectKey::named(name)).await? else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(record) => Ok(Some(record)),
            Err(e) => {
                tracing::warn!(namespace = %name, error = %e, "unreadable tenant record; not served");
                Ok(None)
            }
        }
    }

    /// The store handle of tenant `record` made from `template`.
    pub(crate) fn store_of(
        &self,
        name: &NamespaceName,
        generation: &str,
        template: &Namespace,
    ) -> Result<NsStore, TenantError> {
        let docs = match template.isolation.unwrap_or(self.isolation) {
            Isolation::Store => {
                let stores = self.stores.as_ref().ok_or(TenantError::StoreUnopenable)?;
                match self.opened.get(name.as_str()) {
                    Some(store) => store,
                    None => {
                        let store = stores.open(name.as_str()).map_err(|e| {
                            tracing::warn!(namespace = %name, error = %e, "cannot open the tenant's store");
                            TenantError::StoreUnopenable
                        })?;
                        self.opened.insert(name.as_str().into(), store.clone());
                        store
                    }
                }
            }
            Isolation::Shared | Isolation::Prefixed => self.root.clone(),
        };
        let store = NsStore::runtime(docs, name, generation);
        let Some(quota) = template.quota else {
            return Ok(store);
        };
        let id = format!("{name}/{generation}");
        let ledger = match self.ledgers.get(id.as_str()) {
            Some(ledger) => ledger,
            None => {
                let ledger = Arc::new(crate::store::Ledger::for_runtime(
                    &self.root,
                    name,
                    generation,
                    store.clone(),
                    quota,
                    self.clock.clone(),
                ));
                self.ledgers.insert(id.into(), ledger.clone());
                ledger
            }
        };
        Ok(store.with_quota(ledger))
    }

    /// The request limits tenant `record` is served with.
    pub(crate) fn limits_of(
        &self,
        record: &TenantRecord,
    ) -> Option<crate::config::NamespaceLimits> {
        record
            .limits
            .or_else(|| self.templates.get(&record.template)?.limits)
    }

    /// The quota ledger of tenant `record`, when its template has a quota.
    pub(crate) fn ledger_of(&self, record: &TenantRecord) -> Option<Arc<crate::store::Ledger>> {
        let name = self.valid_name(&record.name)?;
        let template = self.templates.get(&record.template)?;
        self.store_of(&name, &record.generation, template)
            .ok()?
            .quota()
            .cloned()
    }

    /// The request limits of tenant `record` (its own, else its template's), the same
    /// counters across refreshes while the limits stay the same.
    fn budget_of(
        &self,
        name: &NamespaceName,
        record: &TenantRecord,
        template: &Namespace,
    ) -> Option<Arc<crate::access::Budget>> {
        let limits = record.limits.or(template.limits)?;
        let id = format!("{name}/{}", record.generation);
        if let Some(budget) = self.budgets.get(id.as_str()) {
            if *budget.limits() == limits {
                return Some(budget);
            }
        }
        let budget = Arc::new(crate::access::Budget::new(limits));
        self.budgets.insert(id.into(), budget.clone());
        Some(budget)
    }

    fn scope(&self, name: &NamespaceName, record: &TenantRecord) -> Option<Scope> {
        let Some(template) = self.templates.get(&record.template) else {
            tracing::warn!(namespace = %name, template = %record.template, "tenant's template is not in the config; not served");
            return None;
        };
        let store = self.store_of(name, &record.generation, template).ok()?;
        let sealed = self
            .keyring_of(name, &record.generation, template)
            .map(|ring| store.sealed(ring));
        Some(Scope {
            namespace: Some(name.clone()),
            routes: template.routes.clone(),
            restrictions: template.restrictions.clone(),
            store,
            trusted_roots: record
                .trusted_roots
                .clone()
                .map(Into::into)
                .or_else(|| template.trusted_roots.clone()),
            suspended: record.state == TenantState::Suspended,
            generation: Some(record.generation.as_str().into()),
            budget: self.budget_of(name, record, template),
            sealed,
        })
    }
}
