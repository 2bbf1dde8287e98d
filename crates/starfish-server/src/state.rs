//! `AppState`: the validated config, the route table, the store and the clock,
//! behind one cheap `Clone` handle built once by `create_sync_router`.

use crate::access::{DEFAULT_MAX_BUCKETS, RateLimiter, RoleEnricher};
use crate::auth::{Authenticator, CapAuthOptions, CapCertAuthenticator, Clock, SystemClock};
use crate::config::{Collection, ConfigError, SyncConfig};
use crate::store::DocStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Default bound on how long an authenticator may take (the reference's
/// `roleResolverTimeout`); past it the request gets 503.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `create_sync_router` needs.
#[derive(Clone)]
pub struct SyncOptions {
    /// The validated config.
    pub config: SyncConfig,
    /// Where documents live.
    pub store: DocStore,
    /// The wall clock (a [`crate::auth::ManualClock`] in tests).
    pub clock: Arc<dyn Clock>,
    /// Settings of the default cap-cert authenticator.
    pub cap_auth: CapAuthOptions,
    /// A replacement for the cap-cert authenticator.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Extra roles per collection.
    pub role_enricher: Option<Arc<dyn RoleEnricher>>,
    /// Bound on authentication time.
    pub auth_timeout: Duration,
    /// Most documents one batch pull may ask for (names and param sets).
    pub max_collections_per_batch: usize,
    /// Batch pulls refuse keys equal to or ending in `/<suffix>` (owner-only siblings).
    pub batch_key_deny_suffixes: Vec<String>,
    /// Most log elements one batch pull may ask for (`appendParams` budget).
    pub max_batch_append_elements: u64,
    /// Reverse proxies in front of the server: the client IP is the N-th
    /// `X-Forwarded-For` entry from the right. 0 (default): the socket address, and
    /// `X-Forwarded-For` is ignored (it is client-controlled).
    pub trusted_proxy_hops: usize,
    /// Most rate-limit counters kept at once.
    pub max_rate_buckets: usize,
    /// Serve `GET /config` (off: 404, as in the reference).
    pub config_endpoint: Option<ConfigEndpoint>,
}

/// Who `GET /config` describes collections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigEndpoint {
    /// Every collection, to anyone.
    Public,
    /// Collections whose readRoles or writeRoles the caller holds (`public` included).
    RoleFiltered,
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("cap_auth", &self.cap_auth)
            .field("custom_authenticator", &self.authenticator.is_some())
            .field("role_enricher", &self.role_enricher.is_some())
            .finish_non_exhaustive()
    }
}

impl SyncOptions {
    /// Options with the system clock and the reference's cap-cert auth defaults.
    pub fn new(config: SyncConfig, store: DocStore) -> Self {
        Self {
            config,
            store,
            clock: Arc::new(SystemClock),
            cap_auth: CapAuthOptions::default(),
            authenticator: None,
            role_enricher: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_collections_per_batch: 100,
            batch_key_deny_suffixes: vec!["_keyring".into(), "_members".into()],
            max_batch_append_elements: 5000,
            trusted_proxy_hops: 0,
            max_rate_buckets: DEFAULT_MAX_BUCKETS,
            config_endpoint: None,
        }
    }

    /// Replaces the clock (used by auth checks and document timestamps).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Changes the cap-cert authenticator's settings.
    #[must_use]
    pub fn with_cap_auth(mut self, options: CapAuthOptions) -> Self {
        self.cap_auth = options;
        self
    }

    /// Replaces cap-cert authentication with `authenticator`.
    #[must_use]
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Serves `GET /config` to `who`.
    #[must_use]
    pub fn with_config_endpoint(mut self, who: ConfigEndpoint) -> Self {
        self.config_endpoint = Some(who);
        self
    }

    /// Adds roles per collection after authentication.
    #[must_use]
    pub fn with_role_enricher(mut self, enricher: Arc<dyn RoleEnricher>) -> Self {
        self.role_enricher = Some(enricher);
        self
    }
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub(crate) enum TargetKind {
    /// One document (or blob, or log) of `collection`.
    Document,
    /// Every member of a bundle, pulled together.
    Bundle(Arc<[Arc<Collection>]>),
    /// Keys under the template without its last segment.
    List,
}

/// What a matched route leads to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The collection (for a bundle pull, its first member: they share the template).
    pub(crate) collection: Arc<Collection>,
    /// For bundle members, the member name appended to the resolved storage path.
    pub(crate) key_suffix: Option<String>,
    pub(crate) kind: TargetKind,
}

/// The routes of one scope (the root, or one namespace).
#[derive(Default)]
pub(crate) struct Scope {
    /// `None` at the root.
    pub(crate) namespace: Option<String>,
    pub(crate) pull: matchit::Router<Target>,
    pub(crate) push: matchit::Router<Target>,
    pub(crate) list: matchit::Router<Target>,
    /// Collections by name, for batch pulls.
    pub(crate) by_name: HashMap<String, Arc<Collection>>,
}

impl Scope {
    fn build(
        namespace: Option<String>,
        collections: &[Arc<Collection>],
        label: &str,
        errors: &mut Vec<String>,
    ) -> Self {
        let mut scope = Self {
            namespace,
            ..Self::default()
        };
        let mut insert = |router: &mut matchit::Router<Target>, pattern: String, target: Target| {
            let name = target.collection.name.clone();
            let path = target.collection.storage_path.clone();
            if let Err(e) = router.insert(pattern, target) {
                errors.push(format!(
                    "{label}Collection \"{name}\": storagePath \"{path}\" conflicts with another route ({e})"
                ));
            }
        };
        let mut bundles: Vec<(String, Vec<Arc<Collection>>)> = Vec::new();
        for c in collections {
            scope.by_name.insert(c.name.to_string(), c.clone());
            let pattern = c.storage_path.route_pattern();
            let document = |key_suffix: Option<String>| Target {
                collection: c.clone(),
                key_suffix,
                kind: TargetKind::Document,
            };
            match &c.bundle {
                Some(bundle) => {
                    match bundles.iter_mut().find(|(b, _)| b == bundle) {
                        Some((_, members)) => members.push(c.clone()),
                        None => bundles.push((bundle.clone(), vec![c.clone()])),
                    }
                    if !c.pull_only {
                        let member = c.name.to_string();
                        insert(
                            &mut scope.push,
                            format!("{pattern}/{member}"),
                            document(Some(member)),
                        );
                    }
                }
                None => {
                    if !c.push_only {
                        insert(&mut scope.pull, pattern.clone(), document(None));
                    }
                    if !c.pull_only {
                        insert(&mut scope.push, pattern, document(None));
                    }
                }
            }
            if c.listable {
                let target = Target {
                    collection: c.clone(),
                    key_suffix: None,
                    kind: TargetKind::List,
                };
                insert(
                    &mut scope.list,
                    c.storage_path.parent_route_pattern(),
                    target,
                );
            }
        }
        for (_, members) in bundles {
            let Some(first) = members.first().cloned() else {
                continue;
            };
            let readable: Arc<[Arc<Collection>]> =
                members.into_iter().filter(|m| !m.push_only).collect();
            let target = Target {
                collection: first.clone(),
                key_suffix: None,
                kind: TargetKind::Bundle(readable),
            };
            insert(&mut scope.pull, first.storage_path.route_pattern(), target);
        }
        scope
    }
}

pub(crate) struct Inner {
    pub(crate) config: SyncConfig,
    pub(crate) root: Scope,
    pub(crate) namespaces: HashMap<String, Scope>,
    pub(crate) store: DocStore,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) enricher: Option<Arc<dyn RoleEnricher>>,
    pub(crate) auth_timeout: Duration,
    pub(crate) max_collections_per_batch: usize,
    pub(crate) batch_key_deny_suffixes: Vec<String>,
    pub(crate) max_batch_append_elements: u64,
    pub(crate) trusted_proxy_hops: usize,
    pub(crate) rate: RateLimiter,
    pub(crate) config_endpoint: Option<ConfigEndpoint>,
}

/// Shared state of the router; clone = refcount bump.
#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(options: SyncOptions) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let root = Scope::build(None, &options.config.collections, "", &mut errors);
        let namespaces = options
            .config
            .namespaces
            .iter()
            .map(|ns| {
                let label = format!("Namespace \"{}\": ", ns.name);
                (
                    ns.name.to_string(),
                    Scope::build(
                        Some(ns.name.to_string()),
                        &ns.collections,
                        &label,
                        &mut errors,
                    ),
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        let auth = options.authenticator.unwrap_or_else(|| {
            Arc::new(CapCertAuthenticator::new(
                options.cap_auth,
                options.clock.clone(),
            ))
        });
        Ok(Self(Arc::new(Inner {
            config: options.config,
            root,
            namespaces,
            store: options.store,
            clock: options.clock,
            auth,
            enricher: options.role_enricher,
            auth_timeout: options.auth_timeout,
            max_collections_per_batch: options.max_collections_per_batch,
            batch_key_deny_suffixes: options.batch_key_deny_suffixes,
            max_batch_append_elements: options.max_batch_append_elements,
            trusted_proxy_hops: options.trusted_proxy_hops,
            rate: RateLimiter::new(options.max_rate_buckets),
            config_endpoint: options.config_endpoint,
        })))
    }
}
