//! Prometheus metrics of a router ([`Metrics`]), the store's call timings among them
//! (the store times its calls and reports them through [`StoreCalls`]).
//!
//! A [`Metrics`] is given to [`crate::app::state::SyncOptions::with_metrics`] and served where the
//! operator chooses: [`Metrics::router`] gives `GET /metrics` for a separate listener
//! (the binary's `--metrics-addr`), so namespace names never reach the public port.
//! Label values come only from routed scopes and the config (a namespace that exists,
//! a collection of it), never from raw input, so the number of series is bounded by
//! the config and the tenants.

use crate::store::StoreCalls;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

impl Gauges {
    /// The node's gauges, registered.
    fn new(registry: &mut Registry) -> Self {
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        Gauges {
            rate_buckets: gauge(
                registry,
                "rate_limit_buckets",
                "Rate-limit counters held in memory",
            ),
            replay_entries: gauge(
                registry,
                "replay_cache_entries",
                "Nonces held by the replay cache",
            ),
            tenants_cached: gauge(
                registry,
                "tenants_cached",
                "Runtime namespaces looked up and kept in memory",
            ),
            subscribers: gauge(
                registry,
                "live_subscribers",
                "Open subscriptions to live changes (GET /events)",
            ),
            in_flight: gauge(registry, "requests_in_flight", "Requests being served"),
        }
    }
}

/// `metric`, registered as `name`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// A counter by outcome, registered as `name`.
fn outcomes(registry: &mut Registry, name: &str, help: &str) -> Family<OutcomeLabels, Counter> {
    registered(registry, name, help, Family::default())
}

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
    queued: Family<OutcomeLabels, Counter>,
    resumes: Family<OutcomeLabels, Counter>,
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
        let requests: Family<RequestLabels, Counter> = registered(
            &mut registry,
            "requests",
            "Requests by namespace, collection, action and status",
            Family::default(),
        );
        let auth_failures: Family<ReasonLabels, Counter> = registered(
            &mut registry,
            "auth_failures",
            "Refused credentials by reason class",
            Family::default(),
        );
        let store_seconds =
            Family::<OpLabels, Histogram>::new_with_constructor(store_histogram as fn() -> _);
        registry.register(
            "store_request_seconds",
            "Latency of object store calls by operation and outcome",
            store_seconds.clone(),
        );
        let changes = outcomes(
            &mut registry,
            "live_changes",
            "Changes carried between nodes: sent (queued for the feed), dropped (its queue was full), received (from other nodes)",
        );
        let queued = outcomes(
            &mut registry,
            "queue_messages",
            "Queue messages handed to the queue (outcome=sent) or dropped, its buffer full (outcome=dropped)",
        );
        let resumes = outcomes(
            &mut registry,
            "live_resumes",
            "Live streams reopened with Last-Event-ID: replayed (what they missed, maybe nothing) or pull (told to pull: further behind than the node remembers)",
        );
        let shared_fallbacks = Counter::default();
        registry.register(
            "shared_limits_fallbacks",
            "Times the shared rate-limit counters failed or were slow and this node counted alone",
            shared_fallbacks.clone(),
        );
        let gauges = Gauges::new(&mut registry);
        Self(Arc::new(Inner {
            registry,
            requests,
            auth_failures,
            store_seconds,
            changes,
            queued,
            resumes,
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

    /// One live stream reopened with `Last-Event-ID`: `replayed` or `pull`.
    pub(crate) fn resumed(&self, outcome: &'static str) {
        self.0
            .resumes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One queue message handed to the queue (`sent`) or dropped, its buffer full.
    pub(crate) fn queued(&self, outcome: &'static str) {
        self.0
            .queued
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The shared rate-limit counters failed or were slow.
    pub(crate) fn shared_fallback(&self) {
        self.0.shared_fallbacks.inc();
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

/// The store's calls, timed by the store ([`crate::store::DocStore::metered`]), go to
/// `starfish_store_request_seconds`.
impl StoreCalls for Metrics {
    fn store_call(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        self.0
            .store_seconds
            .get_or_create(&OpLabels { op, outcome })
            .observe(elapsed.as_secs_f64());
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
