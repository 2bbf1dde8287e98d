//! Prometheus metrics of a router ([`Metrics`]), and the store wrapper that times
//! every store call (with a tracing span around it).
//!
//! A [`Metrics`] is given to [`crate::app::state::SyncOptions::with_metrics`] and served where the
//! operator chooses: [`Metrics::router`] gives `GET /metrics` for a separate listener
//! (the binary's `--metrics-addr`), so namespace names never reach the public port.
//! Label values come only from routed scopes and the config (a namespace that exists,
//! a collection of it), never from raw input, so the number of series is bounded by
//! the config and the tenants.

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tracing::Instrument;

/// One request, as counted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The namespace (empty: the root, or not routed).
    namespace: String,
    /// The collection (empty when the route has none: batch, bundle, config).
    collection: String,
    /// pull, push, append, blob, list, bundle, batch, config, admin, other.
    action: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
    outcome: &'static str,
}

/// A gauge read when the metrics are rendered.
type Source = Box<dyn Fn() -> i64 + Send + Sync>;

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    store_seconds: Family<OpLabels, Histogram>,
    changes: Family<OutcomeLabels, Counter>,
    shared_fallbacks: Counter,
    sources: Mutex<Vec<(Gauge, Source)>>,
    gauges: Gauges,
}

/// Gauges the router keeps up to date.
struct Gauges {
    rate_buckets: Gauge,
    replay_entries: Gauge,
    tenants_cached: Gauge,
    subscribers: Gauge,
    in_flight: Gauge,
}

/// The metrics of one or more routers (a cheap `Clone`). Every router built with the
/// same `Metrics` adds to the same series.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn store_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Metrics {
    /// Empty metrics, every series registered under `starfish_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("starfish");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by namespace, collection, action and status",
            requests.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused credentials by reason class",
            auth_failures.clone(),
        );
        let store_seconds =
            Family::<OpLabels, Histogram>::new_with_constructor(store_histogram as fn() -> _);
        registry.register(
            "store_request_seconds",
            "Latency of object store calls by operation and outcome",
            store_seconds.clone(),
        );
        let changes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "live_changes",
            "Changes carried between nodes: sent (queued for the feed), dropped (its queue was full), received (from other nodes)",
            changes.clone(),
        );
        let shared_fallbacks = Counter::default();
        registry.register(
            "shared_limits_fallbacks",
            "Times the shared rate-limit counters failed or were slow and this node counted alone",
            shared_fallbacks.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let gauges = Gauges {
            rate_buckets: gauge(
                &mut registry,
                "rate_limit_buckets",
                "Rate-limit counters held in memory",
            ),
            replay_entries: gauge(
                &mut registry,
                "replay_cache_entries",
                "Nonces held by the replay cache",
            ),
            tenants_cached: gauge(
                &mut registry,
                "tenants_cached",
                "Runtime namespaces looked up and kept in memory",
            ),
            subscribers: gauge(
                &mut registry,
                "live_subscribers",
                "Open subscriptions to live changes (GET /events)",
            ),
            in_flight: gauge(&mut registry, "requests_in_flight", "Requests being served"),
        };
        Self(Arc::new(Inner {
            registry,
            requests,
            auth_failures,
            store_seconds,
            changes,
            shared_fallbacks,
            sources: Mutex::new(Vec::new()),
            gauges,
        }))
    }

    /// The metrics in the Prometheus text format (OpenMetrics).
    pub fn render(&self) -> String {
        for (gauge, source) in self
            .0
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            gauge.set(source());
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// `GET /metrics`, for a listener of its own.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
    }

    pub(crate) fn request(
        &self,
        namespace: &str,
        collection: &str,
        action: &'static str,
        status: u16,
    ) {
        self.0
            .requests
            .get_or_create(&RequestLabels {
                namespace: namespace.to_owned(),
                collection: collection.to_owned(),
                action,
                status,
            })
            .inc();
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.0
            .auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One change carried between nodes: `sent`, `dropped` or `received`.
    pub(crate) fn change(&self, outcome: &'static str) {
        self.0
            .changes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The shared rate-limit counters failed or were slow.
    pub(crate) fn shared_fallback(&self) {
        self.0.shared_fallbacks.inc();
    }

    fn store_call(&self, op: &'static str, outcome: &'static str, started: Instant) {
        self.0
            .store_seconds
            .get_or_create(&OpLabels { op, outcome })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Requests being served: +1 now, -1 when the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.0.gauges.in_flight.inc();
        InFlight(self.0.gauges.in_flight.clone())
    }

    /// Reads the router's gauges from these sources at every render.
    pub(crate) fn watch(
        &self,
        rate_buckets: Source,
        replay_entries: Source,
        tenants_cached: Source,
        subscribers: Source,
    ) {
        let g = &self.0.gauges;
        let mut sources = self
            .0
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sources.push((g.rate_buckets.clone(), rate_buckets));
        sources.push((g.replay_entries.clone(), replay_entries));
        sources.push((g.tenants_cached.clone(), tenants_cached));
        sources.push((g.subscribers.clone(), subscribers));
    }
}

/// Decrements the in-flight gauge when dropped.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The reason class of a refused credential (its message is for logs only).
pub(crate) fn auth_reason(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("replay") || m.contains("nonce already") || m.contains("seen") {
        "replay"
    } else if m.contains("revoked") {
        "revoked"
    } else if m.contains("expired") {
        "expired"
    } else if m.contains("skew") {
        "clock_skew"
    } else if m.contains("missing") {
        "missing"
    } else if m.contains("signature") {
        "bad_signature"
    } else if m.contains("malformed")
        || m.contains("invalid")
        || m.contains("too long")
        || m.contains("too-large")
    {
        "malformed"
    } else {
        "other"
    }
}

/// An `ObjectStore` that times every call into [`Metrics`] and wraps it in a
/// `store` tracing span (op and key), so store latency shows in metrics and traces.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn ObjectStore>,
    metrics: Metrics,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        location: &Path,
        call: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = Instant::now();
        let span = tracing::debug_span!("store", op, key = %location);
        let out = call.instrument(span).await;
        // "Not found" and a lost compare-and-swap are answers, not failures; "not
        // modified" (a revalidated cache entry still current) is told apart.
        let outcome = match &out {
            Ok(_) => "ok",
            Err(object_store::Error::NotModified { .. }) => "not_modified",
            Err(
                object_store::Error::NotFound { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => "ok",
            Err(_) => "error",
        };
        self.metrics.store_call(op, outcome, started);
        out
    }
}

impl std::fmt::Display for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.timed(
            "put",
            location,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.timed(
            "put_multipart",
            location,
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = match (options.head, &options.if_none_match) {
            (true, _) => "head",
            // A cached document confirmed with the store.
            (false, Some(_)) => "revalidate",
            (false, None) => "get",
        };
        self.timed(op, location, self.inner.get_opts(location, options))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let location = prefix.cloned().unwrap_or_default();
        self.timed(
            "list_with_delimiter",
            &location,
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.timed("copy", to, self.inner.copy_opts(from, to, options))
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.timed("rename", to, self.inner.rename_opts(from, to, options))
            .await
    }
}
