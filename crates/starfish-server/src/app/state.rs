//! `AppState`: the validated config, the route table, the store and the clock,
//! behind one cheap `Clone` handle built once by `create_sync_router`.

use crate::access::{Authorize, DEFAULT_MAX_BUCKETS, Gate, RateLimiter, RoleEnricher};
use crate::auth::AdminKey;
use crate::auth::{Authenticator, CapAuthOptions, CapCertAuthenticator, Clock, SystemClock};
use crate::browser::CorsSettings;
use crate::browser::headers::SecurityHeaders;
use crate::config::{ConfigError, SyncConfig};
use crate::config::{Isolation, MAX_ISOLATED_NAME_BYTES, Namespace};
use crate::hooks::AfterWrite;
use crate::store::{DocStore, NamespaceStores, NsStore};
use crate::tenants::Scope;
use crate::tenants::keys::ApiKeys;
use crate::tenants::{TenantOptions, Tenants};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Default bound on a whole request, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on requests handled at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Default bound on the log elements one pull returns (see
/// [`SyncOptions::max_append_pull_elements`]); the reference's own fallback ceiling
/// for a batch entry.
pub const DEFAULT_MAX_APPEND_PULL_ELEMENTS: u64 = 1000;
/// Default bound on a single-document (non-segmented) log, in bytes (see
/// [`SyncOptions::max_single_log_bytes`]).
pub const DEFAULT_MAX_SINGLE_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// Default bound on how long an authenticator may take (the reference's
/// `roleResolverTimeout`); past it the request gets 503.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `create_sync_router` needs: [`SyncOptions::new`], then `with_*`.
#[derive(Clone)]
#[non_exhaustive]
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
    /// Extra roles per access.
    pub role_enricher: Option<Arc<dyn RoleEnricher>>,
    /// The embedder's last word on each access.
    pub authorize: Option<Arc<dyn Authorize>>,
    /// Told about every accepted write.
    pub after_write: Option<Arc<dyn AfterWrite>>,
    /// Server plugins, in order ([`crate::hooks::plugin`]).
    pub plugins: Vec<Arc<dyn crate::hooks::Plugin>>,
    /// Webhook ingress routes (`POST /webhook/<id>`).
    pub webhooks: crate::webhooks::Webhooks,
    /// How many live-change subscriptions the node holds open.
    pub live_limits: crate::live::LiveLimits,
    /// The runtime open live-change streams are written on, when the server moves
    /// them to one of their own (`starfish serve` does): a change's listeners are
    /// then woken from a task there.
    pub streams_runtime: Option<tokio::runtime::Handle>,
    /// Projections kept as their sources are written ([`crate::projections`]).
    pub projections: crate::projections::Projections,
    /// Where the queue messages of collections with a `queue` setting go.
    pub queue: Option<Arc<dyn crate::queue::QueueSink>>,
    /// Where audit records go, and how reads are sampled.
    pub audit: Option<crate::audit::AuditOptions>,
    /// Bound on authentication time.
    pub auth_timeout: Duration,
    /// Turns true when the server shuts down: open live-change streams end, so a
    /// graceful shutdown is not held by them.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// Wraps the data keys of namespaces with `encryptAtRest` (the master key, or a
    /// KMS).
    pub key_wrap: Option<Arc<dyn crate::store::KeyWrap>>,
    /// Most documents one batch pull may ask for (names and param sets).
    pub max_collections_per_batch: usize,
    /// Batch pulls refuse keys equal to or ending in `/<suffix>` (owner-only siblings).
    pub batch_key_deny_suffixes: Vec<String>,
    /// Most log elements one batch pull may ask for (`appendParams` budget).
    pub max_batch_append_elements: u64,
    /// Most log elements one pull returns when the collection sets no
    /// `appendOnly.maxPullLimit` (default 1000): a `last`/`limit` is clamped to it, and
    /// a pull without one (`checkpoint` only, or `full`) gets the oldest elements
    /// after its checkpoint with `"hasMore": true`, so the client pulls again from the
    /// last one. Also each batch entry's bound.
    pub max_append_pull_elements: u64,
    /// Largest a single-document (non-segmented) log may grow to, in bytes (default
    /// 4 MiB): an append past it is refused with `409 append_limit_exceeded` (and
    /// `maxBytes`) and writes nothing. Logs with `chunkSize` have no such cap.
    pub max_single_log_bytes: u64,
    /// Reverse proxies in front of the server: the client IP is the N-th
    /// `X-Forwarded-For` entry from the right. 0 (default): the socket address, and
    /// `X-Forwarded-For` is ignored (it is client-controlled).
    pub trusted_proxy_hops: usize,
    /// Most rate-limit counters kept at once.
    pub max_rate_buckets: usize,
    /// Rate limits and namespace request counts kept for all nodes (Redis), instead
    /// of per node.
    pub shared_limits: Option<Arc<dyn crate::access::SharedLimits>>,
    /// Carries live changes between nodes (NATS), so that every node's `GET
    /// /events` subscribers hear of every node's writes.
    pub change_feed: Option<Arc<dyn crate::live::ChangeFeed>>,
    /// Serve `GET /config` (off: 404, as in the reference).
    pub config_endpoint: Option<ConfigEndpoint>,
    /// Headers added to every response.
    pub security_headers: SecurityHeaders,
    /// Cross-origin access for browsers (off: no CORS headers, as in the reference).
    pub cors: Option<CorsSettings>,
    /// Compress JSON responses with gzip or brotli when `Accept-Encoding` asks (on by
    /// default; blobs never).
    pub compression: bool,
    /// Longest a request may take, body included: past it, `408` (default 30 s).
    pub request_timeout: Duration,
    /// Requests handled at once; past it, `503 {"error":"Server busy"}` at once
    /// (default 1024).
    pub max_in_flight: usize,
    /// Serve `GET /openapi.json` ([`crate::openapi::openapi_document`] of the config; off: 404).
    pub openapi_endpoint: bool,
    /// Opens the stores of namespaces in `store` isolation.
    pub namespace_stores: Option<Arc<dyn NamespaceStores>>,
    /// Namespaces created at runtime from the config's `namespaceTemplates`.
    pub tenants: TenantOptions,
    /// The admin API's key (off without one).
    pub admin_key: Option<String>,
    /// Prometheus metrics (requests, auth failures, store latency, gauges).
    pub metrics: Option<crate::metrics::Metrics>,
    /// Dependencies `GET /health/ready` checks besides the store, by name.
    pub readiness_checks: Vec<(String, Arc<dyn crate::hooks::ReadinessCheck>)>,
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
            .field("authorize", &self.authorize.is_some())
            .field("after_write", &self.after_write.is_some())
            .field(
                "plugins",
                &self.plugins.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("cors", &self.cors)
            .field("compression", &self.compression)
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
            authorize: None,
            after_write: None,
            plugins: Vec::new(),
            webhooks: crate::webhooks::Webhooks::new(),
            live_limits: crate::live::LiveLimits::default(),
            streams_runtime: None,
            projections: crate::projections::Projections::new(),
            queue: None,
            audit: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            shutdown: None,
            key_wrap: None,
            max_collections_per_batch: 100,
            batch_key_deny_suffixes: vec!["_keyring".into(), "_members".into()],
            max_batch_append_elements: 5000,
            max_append_pull_elements: DEFAULT_MAX_APPEND_PULL_ELEMENTS,
            max_single_log_bytes: DEFAULT_MAX_SINGLE_LOG_BYTES,
            trusted_proxy_hops: 0,
            max_rate_buckets: DEFAULT_MAX_BUCKETS,
            shared_limits: None,
            change_feed: None,
            config_endpoint: None,
            security_headers: SecurityHeaders::default(),
            cors: None,
            compression: true,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            openapi_endpoint: false,
            namespace_stores: None,
            tenants: TenantOptions::default(),
            admin_key: None,
            metrics: None,
            readiness_checks: Vec::new(),
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

    /// Wraps the data keys of namespaces with `encryptAtRest` with `wrap` (a
    /// [`crate::store::MasterKey`], or a KMS).
    #[must_use]
    pub fn with_key_wrap(mut self, wrap: Arc<dyn crate::store::KeyWrap>) -> Self {
        self.key_wrap = Some(wrap);
        self
    }

    /// Ends open live-change streams (`GET /events`) when `shutdown` turns true, so
    /// that a graceful shutdown is not held by them.
    #[must_use]
    pub fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
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

    /// Serves `GET /openapi.json`: the [`crate::openapi::openapi_document`] of the config.
    #[must_use]
    pub fn with_openapi_endpoint(mut self) -> Self {
        self.openapi_endpoint = true;
        self
    }

    /// Adds roles per access after authentication.
    #[must_use]
    pub fn with_role_enricher(mut self, enricher: Arc<dyn RoleEnricher>) -> Self {
        self.role_enricher = Some(enricher);
        self
    }

    /// Asks `hook` about every access the built-in rules allow.
    #[must_use]
    pub fn with_authorize(mut self, hook: Arc<dyn Authorize>) -> Self {
        self.authorize = Some(hook);
        self
    }

    /// Bounds a whole request, body included (`408` past it).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Bounds the requests handled at once (`503` past it, never queued).
    #[must_use]
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Replaces the security headers (see [`SecurityHeaders`]).
    #[must_use]
    pub fn with_security_headers(mut self, headers: SecurityHeaders) -> Self {
        self.security_headers = headers;
        self
    }

    /// Answers browsers' CORS preflights and adds CORS headers, as `cors` says
    /// (checked by `create_sync_router`).
    #[must_use]
    pub fn with_cors(mut self, cors: CorsSettings) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Turns compression of JSON responses on or off.
    #[must_use]
    pub fn with_compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Opens the store of each namespace in `store` isolation with `stores`.
    #[must_use]
    pub fn with_namespace_stores(mut self, stores: Arc<dyn NamespaceStores>) -> Self {
        self.namespace_stores = Some(stores);
        self
    }

    /// Serves the admin API under `/_starfish/admin/` to callers presenting
    /// `Authorization: Bearer <key>`: namespaces created from the config's
    /// `namespaceTemplates`, listed, suspended and deleted (`docs/namespaces.md`).
    #[must_use]
    pub fn with_admin_key(mut self, key: impl Into<String>) -> Self {
        self.admin_key = Some(key.into());
        self
    }

    /// Counts requests, refused credentials and store calls into `metrics`
    /// ([`crate::metrics::Metrics::router`] serves them).
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Keeps rate limits and namespace request counts in `limits`, for all nodes
    /// together ([`crate::access::RedisLimits`]): a limit of N per window is N for
    /// the cluster, not N per node.
    #[must_use]
    pub fn with_shared_limits(mut self, limits: Arc<dyn crate::access::SharedLimits>) -> Self {
        self.shared_limits = Some(limits);
        self
    }

    /// Carries live changes between nodes through `feed`
    /// ([`crate::live::NatsFeed`]): a subscriber on any node hears of a write
    /// accepted by any other.
    #[must_use]
    pub fn with_change_feed(mut self, feed: Arc<dyn crate::live::ChangeFeed>) -> Self {
        self.change_feed = Some(feed);
        self
    }

    /// Adds `check` (named `name`) to what `GET /health/ready` waits for.
    #[must_use]
    pub fn with_readiness_check(
        mut self,
        name: impl Into<String>,
        check: Arc<dyn crate::hooks::ReadinessCheck>,
    ) -> Self {
        self.readiness_checks.push((name.into(), check));
        self
    }

    /// Changes how runtime namespaces are looked up.
    #[must_use]
    pub fn with_tenant_options(mut self, options: TenantOptions) -> Self {
        self.tenants = options;
        self
    }

    /// Records every decision on data (pulls, pushes, lists, allowed or denied)
    /// and every admin action in an audit trail ([`crate::audit`]).
    #[must_use]
    pub fn with_audit(mut self, audit: crate::audit::AuditOptions) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Publishes a message to `sink` for every accepted write to a collection
    /// with a `queue` setting (the reference's queuing plugin; `queue::NatsQueue`
    /// with the `nats` feature).
    #[must_use]
    pub fn with_queue(mut self, sink: Arc<dyn crate::queue::QueueSink>) -> Self {
        self.queue = Some(sink);
        self
    }

    /// Tells `hook` about every accepted write.
    #[must_use]
    pub fn with_after_write(mut self, hook: Arc<dyn AfterWrite>) -> Self {
        self.after_write = Some(hook);
        self
    }

    /// Adds `plugin` after those already added: its certificate validators join
    /// the authenticator's, its hooks run at their places, in order
    /// ([`crate::hooks::plugin`]).
    #[must_use]
    pub fn with_plugin(mut self, plugin: Arc<dyn crate::hooks::Plugin>) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Serves `webhooks` at `POST /webhook/<id>` ([`crate::webhooks`]); a config
    /// namespace may then not be named `webhook`.
    #[must_use]
    pub fn with_webhooks(mut self, webhooks: crate::webhooks::Webhooks) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Bounds the live-change subscriptions this node holds open.
    #[must_use]
    pub fn with_live_limits(mut self, limits: crate::live::LiveLimits) -> Self {
        self.live_limits = limits;
        self
    }

    /// Names the runtime open live-change streams are written on, when the server
    /// moves them to one of their own after their head (as `starfish serve` does):
    /// a change's listeners are woken from a task there, so the request that
    /// published it does not wake thousands of tasks across runtimes.
    #[must_use]
    pub fn with_streams_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.streams_runtime = Some(runtime);
        self
    }

    /// Keeps `projections` as their source collections are written
    /// ([`crate::projections`]).
    #[must_use]
    pub fn with_projections(mut self, projections: crate::projections::Projections) -> Self {
        self.projections = projections;
        self
    }
}

pub(crate) struct Inner {
    pub(crate) config: SyncConfig,
    pub(crate) root: Scope,
    pub(crate) namespaces: HashMap<String, Scope>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) gate: Gate,
    pub(crate) after_write: Option<Arc<dyn AfterWrite>>,
    /// The plugins, in order.
    pub(crate) plugins: crate::hooks::Plugins,
    /// Webhook ingress, when it has routes.
    pub(crate) webhooks: Arc<crate::webhooks::Ingress>,
    /// The projections.
    pub(crate) projections: crate::projections::Projections,
    /// The after-write hook, a plugin or a queue wants pushed bodies ([`AfterWrite::wants_body`],
    /// a collection's `queue.includeBody`).
    pub(crate) keep_bodies: bool,
    /// Where queue messages go.
    pub(crate) queue: Option<Arc<dyn crate::queue::QueueSink>>,
    /// The audit trail, when on.
    pub(crate) audit: Option<crate::audit::Auditor>,
    pub(crate) auth_timeout: Duration,
    pub(crate) max_collections_per_batch: usize,
    pub(crate) batch_key_deny_suffixes: Vec<String>,
    pub(crate) max_batch_append_elements: u64,
    pub(crate) log_limits: crate::sync::LogLimits,
    pub(crate) trusted_proxy_hops: usize,
    pub(crate) rate: RateLimiter,
    pub(crate) config_endpoint: Option<ConfigEndpoint>,
    /// The OpenAPI document, serialised once, when served.
    pub(crate) openapi: Option<bytes::Bytes>,
    /// Namespaces created at runtime.
    pub(crate) tenants: Tenants,
    /// The admin API's key, when it is on.
    pub(crate) admin_key: Option<AdminKey>,
    /// API keys (on with the admin API).
    pub(crate) keys: Option<ApiKeys>,
    /// Migrations of `shared` config namespaces to `prefixed` (`starfish migrate`).
    pub(crate) migrations: crate::migrate::Migrations,
    pub(crate) metrics: Option<crate::metrics::Metrics>,
    /// Subscribers to live changes on this node (`GET /events`).
    pub(crate) live: Arc<crate::live::bus::Bus>,
    /// Carries this node's changes to the others, and theirs to `live`.
    pub(crate) change_feed: Option<Arc<dyn crate::live::ChangeFeed>>,
    pub(crate) readiness_checks: Vec<(String, Arc<dyn crate::hooks::ReadinessCheck>)>,
    pub(crate) readiness: ReadyCache,
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
    pub(crate) fn new(mut options: SyncOptions) -> Result<Self, ConfigError> {
        if let Some(metrics) = &options.metrics {
            options.store = options.store.metered(Arc::new(metrics.clone()));
        }
        let openapi = options.openapi_endpoint.then(|| {
            crate::openapi::openapi_document(&options.config)
                .to_string()
                .into()
        });
        let root = Scope::root(
            options.config.routes.clone(),
            NsStore::whole(options.store.clone()),
        );
        let mut namespaces = HashMap::new();
        for ns in &options.config.namespaces {
            let scope = namespace_scope(&options, &options.config, ns)?;
            namespaces.insert(ns.name.to_string(), scope);
        }
        let webhooks = webhook_ingress(&mut options)?;
        let auth = authenticator(&mut options)?;
        let tenants = runtime_tenants(&options)?;
        let keys = api_keys(&options)?;
        let migrations = crate::migrate::Migrations::new(
            &options.config,
            &options.store,
            &mut namespaces,
            options.tenants.refresh,
            options.clock.clone(),
        );
        let live = live_bus(&options);
        let keep_bodies = keeps_bodies(&options);
        let audit = options.audit.take().map(crate::audit::Auditor::new);
        let plugins = crate::hooks::Plugins::new(std::mem::take(&mut options.plugins));
        let gate = Gate {
            restrictions: options.config.restrictions.clone(),
            enricher: options.role_enricher,
            hook: authorize_hook(options.authorize, &plugins),
        };
        let state = Self(Arc::new(Inner {
            metrics: options.metrics.clone(),
            live,
            change_feed: options.change_feed,
            readiness_checks: options.readiness_checks,
            readiness: tokio::sync::Mutex::new(None),
            migrations,
            keys,
            tenants,
            admin_key: options.admin_key.as_deref().map(AdminKey::new),
            config: options.config,
            root,
            namespaces,
            clock: options.clock,
            auth,
            gate,
            keep_bodies,
            queue: options.queue,
            audit,
            after_write: options.after_write,
            plugins,
            webhooks,
            projections: std::mem::take(&mut options.projections),
            auth_timeout: options.auth_timeout,
            max_collections_per_batch: options.max_collections_per_batch,
            batch_key_deny_suffixes: options.batch_key_deny_suffixes,
            max_batch_append_elements: options.max_batch_append_elements,
            log_limits: crate::sync::LogLimits {
                pull_elements: options.max_append_pull_elements.max(1),
                single_log_bytes: options.max_single_log_bytes,
            },
            trusted_proxy_hops: options.trusted_proxy_hops,
            rate: RateLimiter::new(options.max_rate_buckets)
                .with_shared(options.shared_limits)
                .with_metrics(options.metrics.clone()),
            config_endpoint: options.config_endpoint,
            openapi,
        }));
        state.watch_gauges();
        Ok(state)
    }

    /// Hands the metrics the gauges they read from this state: rate buckets, replay
    /// entries, cached tenants, live subscribers.
    fn watch_gauges(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        // Weak: the metrics outlive no router, and keep none alive.
        let gauge = |read: fn(&Inner) -> usize| {
            let weak = Arc::downgrade(&self.0);
            Box::new(move || {
                weak.upgrade()
                    .map_or(0, |inner| i64::try_from(read(&inner)).unwrap_or(i64::MAX))
            }) as Box<dyn Fn() -> i64 + Send + Sync>
        };
        metrics.watch(
            gauge(|s| s.rate.len()),
            gauge(|s| s.auth.replay_entries().unwrap_or(0)),
            gauge(|s| s.tenants.cached()),
            gauge(|s| s.live.subscribers()),
        );
    }
}

/// The scope of config namespace `ns`: its store handle (with its quota's ledger,
/// and sealed at rest when it says so), routes, restrictions and limits.
fn namespace_scope(
    options: &SyncOptions,
    config: &SyncConfig,
    ns: &Namespace,
) -> Result<Scope, ConfigError> {
    let isolation = config.isolation_of(ns);
    let invalid = |why: &str| {
        ConfigError::Invalid(vec![format!(
            "Namespace \"{}\": {why} needs isolation \"prefixed\" or \"store\" (in \"shared\" its keys are not its own)",
            ns.name
        )])
    };
    let mut store = namespace_store(
        &options.store,
        options.namespace_stores.as_deref(),
        ns,
        isolation,
    )?;
    if let Some(quota) = ns.quota {
        if isolation == Isolation::Shared {
            return Err(invalid("a quota"));
        }
        let ledger = crate::store::Ledger::for_config(
            &options.store,
            &ns.name,
            store.clone(),
            quota,
            options.clock.clone(),
        );
        store = store.with_quota(Arc::new(ledger));
    }
    let sealed = if ns.encrypt_at_rest {
        if isolation == Isolation::Shared {
            return Err(invalid("encryptAtRest"));
        }
        let Some(wrap) = options.key_wrap.clone() else {
            return Err(ConfigError::Invalid(vec![format!(
                "Namespace \"{}\": encryptAtRest needs a master key (STARFISH_MASTER_KEY or STARFISH_MASTER_KEY_FILE)",
                ns.name
            )]));
        };
        let ring = crate::store::Keyring::for_config(
            &options.store,
            &ns.name,
            wrap,
            options.clock.clone(),
        );
        Some(store.sealed(Arc::new(ring)))
    } else {
        None
    };
    Ok(Scope {
        namespace: Some(ns.name.clone()),
        routes: ns.routes.clone(),
        restrictions: ns.restrictions.clone(),
        store,
        trusted_roots: ns.trusted_roots.clone(),
        suspended: false,
        generation: None,
        budget: ns.limits.map(|l| Arc::new(crate::access::Budget::new(l))),
        sealed,
    })
}

/// The embedder's authenticator, or the cap-cert one on the options' settings.
fn authenticator(options: &mut SyncOptions) -> Result<Arc<dyn Authenticator>, ConfigError> {
    if let Some(custom) = options.authenticator.take() {
        return Ok(custom);
    }
    let mut settings = std::mem::take(&mut options.cap_auth);
    for validator in options.plugins.iter().flat_map(|p| p.cap_validators()) {
        settings.validators.add(validator);
    }
    settings
        .check()
        .map_err(|e| ConfigError::Invalid(vec![e]))?;
    Ok(Arc::new(CapCertAuthenticator::new(
        settings,
        options.clock.clone(),
    )))
}

/// The runtime namespaces' registry, checked against the config.
fn runtime_tenants(options: &SyncOptions) -> Result<Tenants, ConfigError> {
    let tenants = Tenants::new(
        &options.config,
        options.store.clone(),
        options.namespace_stores.clone(),
        &options.tenants,
        options.key_wrap.clone(),
        options.clock.clone(),
    );
    tenants.check().map_err(|e| ConfigError::Invalid(vec![e]))?;
    Ok(tenants)
}

/// The API keys, kept when an admin key turns the admin API on.
fn api_keys(options: &SyncOptions) -> Result<Option<ApiKeys>, ConfigError> {
    if options.admin_key.as_ref().is_some_and(|k| k.len() < 16) {
        return Err(ConfigError::Invalid(vec![
            "the admin key must have at least 16 characters".into(),
        ]));
    }
    Ok(options.admin_key.is_some().then(|| {
        ApiKeys::new(
            options.store.clone(),
            options.tenants.cache_entries,
            u64::try_from(options.tenants.refresh.as_millis()).unwrap_or(u64::MAX),
            options.tenants.unknown_lookups_per_second,
            options.clock.clone(),
        )
    }))
}

/// The node's bus of live subscribers, ended with the server, and fed by the
/// change feed from the other nodes.
fn live_bus(options: &SyncOptions) -> Arc<crate::live::bus::Bus> {
    let bus = match options.shutdown.clone() {
        Some(stopping) => crate::live::bus::Bus::new(stopping),
        None => crate::live::bus::Bus::default(),
    };
    let bus = bus
        .with_limits(options.live_limits)
        .with_clock(options.clock.clone())
        .with_wakes_on(options.streams_runtime.clone());
    // With a feed, every node hears every change: a stream may resume on another.
    let live = Arc::new(match options.change_feed {
        Some(_) => bus.across_nodes(),
        None => bus,
    });
    live.end_at_shutdown();
    if let Some(feed) = &options.change_feed {
        feed.attach(crate::live::ChangeSink::new(&live, options.metrics.clone()));
    }
    live
}

/// The store handle of namespace `ns` in `isolation`.
pub(crate) fn namespace_store(
    store: &DocStore,
    stores: Option<&dyn NamespaceStores>,
    ns: &Namespace,
    isolation: Isolation,
) -> Result<NsStore, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(vec![format!("Namespace \"{}\": {m}", ns.name)]);
    if isolation != Isolation::Shared && ns.name.as_str().len() > MAX_ISOLATED_NAME_BYTES {
        return Err(invalid(format!(
            "an isolated namespace's name has at most {MAX_ISOLATED_NAME_BYTES} bytes"
        )));
    }
    Ok(match isolation {
        Isolation::Shared => NsStore::whole(store.clone()),
        Isolation::Prefixed => NsStore::prefixed(store.clone(), &ns.name),
        Isolation::Store => {
            let stores = stores.ok_or_else(|| {
                invalid("isolation \"store\" needs SyncOptions::with_namespace_stores".into())
            })?;
            let own = stores
                .open(ns.name.as_str())
                .map_err(|e| invalid(format!("cannot open its store: {e}")))?;
            NsStore::whole(own)
        }
    })
}

/// The webhook routes with the replay cache and signing host of the cap-cert
/// settings (read before the authenticator takes them); namespaces' own routes
/// (created through the admin API) go through it too.
fn webhook_ingress(
    options: &mut SyncOptions,
) -> Result<Arc<crate::webhooks::Ingress>, ConfigError> {
    let named_webhook = options
        .config
        .namespaces
        .iter()
        .any(|n| n.name.as_str() == "webhook");
    if !options.webhooks.is_empty() && named_webhook {
        return Err(ConfigError::Invalid(vec![
            "a namespace named webhook hides the webhook routes (POST /webhook/<id>)".into(),
        ]));
    }
    Ok(Arc::new(crate::webhooks::Ingress::new(
        std::mem::take(&mut options.webhooks),
        options.cap_auth.shared_replay.clone(),
        options.cap_auth.host_override.as_deref(),
    )))
}

/// The access gate's last word: the embedder's authorize hook, then the plugins'.
fn authorize_hook(
    first: Option<Arc<dyn Authorize>>,
    plugins: &crate::hooks::Plugins,
) -> Option<Arc<dyn Authorize>> {
    if plugins.is_empty() {
        return first;
    }
    Some(Arc::new(crate::hooks::plugin::ChainedAuthorize {
        first,
        plugins: plugins.clone(),
    }))
}

/// The last readiness answer and when it was given.
pub(crate) type ReadyCache =
    tokio::sync::Mutex<Option<(u64, (axum::http::StatusCode, axum::Json<serde_json::Value>))>>;

/// True when the pushed data must be kept for after the write: the hook asks for
/// it, or a queue publishes it.
fn keeps_bodies(options: &SyncOptions) -> bool {
    options.after_write.as_ref().is_some_and(|h| h.wants_body())
        || options.plugins.iter().any(|p| p.wants_body())
        || (options.queue.is_some() && queue_wants_bodies(&options.config))
}

/// True when a collection of the config (at the root, in a namespace or a template)
/// publishes its pushed data (`queue.includeBody`).
fn queue_wants_bodies(config: &SyncConfig) -> bool {
    let scopes = std::iter::once(&config.collections)
        .chain(config.namespaces.iter().map(|n| &n.collections))
        .chain(config.templates.iter().map(|t| &t.collections));
    scopes
        .flatten()
        .any(|c| c.queue.as_ref().is_some_and(|q| q.include_body))
}
