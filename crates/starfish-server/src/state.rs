//! `AppState`: the validated config, the route table, the store and the clock,
//! behind one cheap `Clone` handle built once by `create_sync_router`.

use crate::access::RoleEnricher;
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

    /// Adds roles per collection after authentication.
    #[must_use]
    pub fn with_role_enricher(mut self, enricher: Arc<dyn RoleEnricher>) -> Self {
        self.role_enricher = Some(enricher);
        self
    }
}

/// What a matched route leads to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) collection: Arc<Collection>,
    /// For bundle members, the member name appended to the resolved storage path.
    pub(crate) key_suffix: Option<String>,
}

/// The routes of one scope (the root, or one namespace).
#[derive(Default)]
pub(crate) struct Scope {
    pub(crate) pull: matchit::Router<Target>,
    pub(crate) push: matchit::Router<Target>,
}

impl Scope {
    fn build(collections: &[Arc<Collection>], label: &str, errors: &mut Vec<String>) -> Self {
        let mut scope = Self::default();
        for c in collections {
            let pattern = c.storage_path.route_pattern();
            let (pull_pattern, push_pattern, key_suffix) = match &c.bundle {
                // Bundle members are pulled together (issue: bundles) and pushed one by one.
                Some(_) => (
                    None,
                    Some(format!("{pattern}/{}", c.name)),
                    Some(c.name.to_string()),
                ),
                None => (Some(pattern.clone()), Some(pattern), None),
            };
            let target = Target {
                collection: c.clone(),
                key_suffix,
            };
            let mut insert = |router: &mut matchit::Router<Target>, pattern: String| {
                if let Err(e) = router.insert(pattern, target.clone()) {
                    errors.push(format!(
                        "{label}Collection \"{}\": storagePath \"{}\" conflicts with another route ({e})",
                        c.name, c.storage_path
                    ));
                }
            };
            if let Some(p) = pull_pattern.filter(|_| !c.push_only) {
                insert(&mut scope.pull, p);
            }
            if let Some(p) = push_pattern.filter(|_| !c.pull_only) {
                insert(&mut scope.push, p);
            }
        }
        scope
    }
}

pub(crate) struct Inner {
    #[expect(
        dead_code,
        reason = "read by the /config and bundle routes, still to come"
    )]
    pub(crate) config: SyncConfig,
    pub(crate) root: Scope,
    pub(crate) namespaces: HashMap<String, Scope>,
    pub(crate) store: DocStore,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) enricher: Option<Arc<dyn RoleEnricher>>,
    pub(crate) auth_timeout: Duration,
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
        let root = Scope::build(&options.config.collections, "", &mut errors);
        let namespaces = options
            .config
            .namespaces
            .iter()
            .map(|ns| {
                let label = format!("Namespace \"{}\": ", ns.name);
                (
                    ns.name.to_string(),
                    Scope::build(&ns.collections, &label, &mut errors),
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
        })))
    }
}
