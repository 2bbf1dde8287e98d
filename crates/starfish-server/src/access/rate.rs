//! Fixed-window rate limiting per collection, action and bucket (§8.4), over a
//! bounded map: a flood of distinct buckets (many IPs, many identities) evicts the
//! oldest windows instead of growing memory without end.

use super::SharedLimits;
use crate::config::{Bucket, RateRule, RateWindow};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest a shared count may take before this node counts alone.
pub(crate) const SHARED_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// How long this node counts alone after the shared counters failed.
pub(crate) const SHARED_BACKOFF_MS: u64 = 5_000;

/// Counters kept at most; past it the oldest windows are dropped first.
pub(crate) const DEFAULT_MAX_BUCKETS: usize = 100_000;

/// Who is asking, for bucketing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateSubject<'a> {
    /// The caller's identity (`None` when anonymous).
    pub(crate) identity: Option<&'a str>,
    /// The client IP, as decided by the proxy-hop setting (`"anonymous"` when unknown).
    pub(crate) ip: &'a str,
}

#[derive(Default)]
struct State {
    /// key -> (window end ms, count)
    counters: HashMap<String, (u64, u64)>,
    /// (window end, key) in creation order, for expiry and eviction.
    order: VecDeque<(u64, String)>,
}

/// The rate limiter of one router.
pub(crate) struct RateLimiter {
    max_buckets: usize,
    state: Mutex<State>,
    /// Counters shared with other nodes, when configured.
    shared: Option<Arc<dyn SharedLimits>>,
    /// When the shared counters' failure was last logged.
    warned_ms: AtomicU64,
    /// Until when the shared counters are not asked (they failed).
    down_until_ms: AtomicU64,
    /// Counts the shared counters' failures.
    metrics: Option<crate::metrics::Metrics>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("max_buckets", &self.max_buckets)
            .field("buckets", &self.len())
            .field("shared", &self.shared)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter holding at most `max_buckets` live counters.
    pub(crate) fn new(max_buckets: usize) -> Self {
        Self {
            max_buckets: max_buckets.max(1),
            state: Mutex::new(State::default()),
            shared: None,
            warned_ms: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            metrics: None,
        }
    }

    /// This limiter counting its shared counters' failures in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Option<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// This limiter counting with `shared` (other nodes' requests too).
    pub(crate) fn with_shared(mut self, shared: Option<Arc<dyn SharedLimits>>) -> Self {
        self.shared = shared;
        self
    }

    /// Live counters.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.counters.len())
    }

    /// Counts one request under `scope` (collection and action) and `rule`; returns
    /// `Err(retry_after_secs)` when it is over the limit. Refused requests count too.
    ///
    /// This node's own count comes first and always counts: a request it refuses is
    /// refused without a round trip (the count of all nodes is at least as high),
    /// and it is the count that holds while the shared counters are away. Then, with
    /// shared counters, the count of all nodes (one round trip, at most
    /// [`SHARED_TIMEOUT`]); when they fail or are slow, this node's count alone for
    /// [`SHARED_BACKOFF_MS`] before they are asked again.
    ///
    /// # Errors
    /// The seconds until the fullest window ends.
    pub(crate) async fn check(
        &self,
        scope: &str,
        rule: &RateRule,
        subject: RateSubject<'_>,
        now_ms: u64,
    ) -> Result<(), u64> {
        let counters = counters(scope, rule, subject);
        let shared = self.shared_now(now_ms);
        let keys: Vec<(String, u64, u64)> = match shared {
            Some(_) => counters
                .iter()
                .map(|(k, w)| (k.clone(), w.window_ms.get(), w.max_requests.get()))
                .collect(),
            None => Vec::new(),
        };
        self.check_local(counters, now_ms)?;
        let Some(shared) = shared else {
            return Ok(());
        };
        let windows: Vec<(String, u64)> = keys.iter().map(|(k, w, _)| (k.clone(), *w)).collect();
        match tokio::time::timeout(SHARED_TIMEOUT, shared.count(&windows)).await {
            Ok(Ok(counts)) => verdict(
                keys.iter()
                    .zip(counts)
                    .map(|((_, _, max), (count, left_ms))| (*max, count, now_ms + left_ms)),
                now_ms,
            ),
            Ok(Err(e)) => {
                self.fallback(&e, now_ms);
                Ok(())
            }
            Err(_) => {
                self.fallback("no answer in time", now_ms);
                Ok(())
            }
        }
    }

    /// Counts one request in the cell rate `key` of all nodes: `None` without shared
    /// counters or when they do not answer in time (the caller then counts on its
    /// own), otherwise `Some(wait_us)`, 0 when admitted.
    pub(crate) async fn pace_shared(
        &self,
        key: &str,
        interval_us: u64,
        tolerance_us: u64,
        now_ms: u64,
    ) -> Option<u64> {
        let shared = self.shared_now(now_ms)?;
        match tokio::time::timeout(SHARED_TIMEOUT, shared.pace(key, interval_us, tolerance_us))
            .await
        {
            Ok(Ok(wait)) => Some(wait),
            Ok(Err(e)) => {
                self.fallback(&e, now_ms);
                None
            }
            Err(_) => {
                self.fallback("no answer in time", now_ms);
                None
            }
        }
    }

    /// True when this limiter has shared counters.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared counters, unless they failed in the last [`SHARED_BACKOFF_MS`].
    fn shared_now(&self, now_ms: u64) -> Option<&Arc<dyn SharedLimits>> {
        let shared = self.shared.as_ref()?;
        (now_ms >= self.down_until_ms.load(Ordering::Relaxed)).then_some(shared)
    }

    /// The shared counters failed: this node counts alone for a while, and says so
    /// (at most every ten seconds).
    fn fallback(&self, error: &str, now_ms: u64) {
        self.down_until_ms
            .store(now_ms.saturating_add(SHARED_BACKOFF_MS), Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.shared_fallback();
        }
        let last = self.warned_ms.load(Ordering::Relaxed);
        if now_ms >= last.saturating_add(10_000)
            && self
                .warned_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error,
                "shared rate limits unavailable: each node counts on its own meanwhile"
            );
        }
    }

    fn check_local(&self, counters: Vec<(String, RateWindow)>, now_ms: u64) -> Result<(), u64> {
        let Ok(mut st) = self.state.lock() else {
            return Err(1);
        };
        let hits: Vec<(u64, u64, u64)> = counters
            .into_iter()
            .map(|(key, window)| {
                let (count, end) = self.hit(&mut st, key, window.window_ms.get(), now_ms);
                (window.max_requests.get(), count, end)
            })
            .collect();
        drop(st);
        verdict(hits.into_iter(), now_ms)
    }

    /// Increments `key`'s counter; returns (count, window end).
    fn hit(&self, st: &mut State, key: String, window_ms: u64, now_ms: u64) -> (u64, u64) {
        while let Some((end, k)) = st.order.front() {
            if *end > now_ms && st.counters.len() < self.max_buckets {
                break;
            }
            // Expired, or the map is full: the oldest window goes first.
            let (end, k) = (*end, k.clone());
            st.order.pop_front();
            if st.counters.get(&k).is_some_and(|(e, _)| *e == end) {
                st.counters.remove(&k);
            }
        }
        match st.counters.get_mut(&key) {
            Some((end, count)) if *end > now_ms => {
                *count += 1;
                (*count, *end)
            }
            _ => {
                let end = now_ms.saturating_add(window_ms);
                st.counters.insert(key.clone(), (end, 1));
                st.order.push_back((end, key));
                (1, end)
            }
        }
    }
}

/// The counters `rule` charges for `subject` under `scope`.
fn counters(scope: &str, rule: &RateRule, subject: RateSubject<'_>) -> Vec<(String, RateWindow)> {
    let anon_ip = || subject.ip.to_owned();
    match rule {
        RateRule::Single { window, bucket } => {
            let b = match bucket {
                Bucket::Identity => subject.identity.map_or_else(anon_ip, str::to_owned),
                Bucket::Ip => subject.ip.to_owned(),
                Bucket::IdentityIp => {
                    format!("{}|{}", subject.identity.unwrap_or("anonymous"), subject.ip)
                }
            };
            vec![(format!("{scope}s:{b}"), *window)]
        }
        RateRule::Split { identity, ip } => {
            let mut v = Vec::new();
            if let Some(w) = identity {
                let b = subject.identity.map_or_else(anon_ip, str::to_owned);
                v.push((format!("{scope}i:{b}"), *w));
            }
            if let Some(w) = ip {
                v.push((format!("{scope}p:{}", subject.ip), *w));
            }
            v
        }
    }
}

/// Over the limit when any (max, count, window end) counter is over its max: the
/// seconds until the fullest such window ends.
fn verdict(hits: impl Iterator<Item = (u64, u64, u64)>, now_ms: u64) -> Result<(), u64> {
    let mut retry = None;
    for (max, count, end) in hits {
        if count > max {
            let secs = end.saturating_sub(now_ms).div_ceil(1000).max(1);
            retry = Some(retry.map_or(secs, |r: u64| r.max(secs)));
        }
    }
    retry.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU64;

    impl RateLimiter {
        fn check_now(
            &self,
            scope: &str,
            rule: &RateRule,
            subject: RateSubject<'_>,
            now_ms: u64,
        ) -> Result<(), u64> {
            self.check_local(counters(scope, rule, subject), now_ms)
        }
    }

    fn rule(max: u64, bucket: Bucket) -> RateRule {
        RateRule::Single {
            window: RateWindow {
                window_ms: NonZeroU64::new(1000).unwrap(),
                max_requests: NonZeroU64::new(max).unwrap(),
            },
            bucket,
        }
    }

    #[test]
    fn a_fixed_window_counts_refusals_and_resets() {
        let l = RateLimiter::new(10);
        let who = RateSubject {
            identity: Some("a"),
            ip: "1.1.1.1",
        };
        let r = rule(2, Bucket::Identity);
        assert_eq!(l.check_now("c:push:", &r, who, 0), Ok(()));
        assert_eq!(l.check_now("c:push:", &r, who, 10), Ok(()));
        assert_eq!(l.check_now("c:push:", &r, who, 500), Err(1));
        // Another identity has its own bucket; anonymous callers are bucketed by IP.
        assert_eq!(
            l.check_now(
                "c:push:",
                &r,
                RateSubject {
                    identity: Some("b"),
                    ip: "1.1.1.1"
                },
                500
            ),
            Ok(())
        );
        assert_eq!(
            l.check_now("c:push:", &r, who, 1000),
            Ok(()),
            "a new window"
        );
    }

    #[test]
    fn a_flood_of_buckets_stays_bounded() {
        let l = RateLimiter::new(100);
        let r = rule(1, Bucket::Ip);
        for i in 0..10_000 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            let _ = l.check_now(
                "c:pull:",
                &r,
                RateSubject {
                    identity: None,
                    ip: &ip,
                },
                0,
            );
        }
        assert_eq!(l.len(), 100);
    }

    /// Shared counters that never answer (Redis down).
    #[derive(Debug)]
    struct Down;

    impl SharedLimits for Down {
        fn count<'a>(
            &'a self,
            _: &'a [(String, u64)],
        ) -> futures::future::BoxFuture<'a, Result<Vec<(u64, u64)>, String>> {
            Box::pin(async { Err("connection refused".to_owned()) })
        }
        fn pace<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: u64,
        ) -> futures::future::BoxFuture<'a, Result<u64, String>> {
            Box::pin(async { Err("connection refused".to_owned()) })
        }
    }

    #[tokio::test]
    async fn without_its_shared_counters_a_node_counts_on_its_own() {
        let l = RateLimiter::new(10).with_shared(Some(Arc::new(Down)));
        let who = RateSubject {
            identity: Some("a"),
            ip: "1.1.1.1",
        };
        let r = rule(2, Bucket::Identity);
        assert_eq!(l.check("c:pull:", &r, who, 0).await, Ok(()));
        assert_eq!(l.check("c:pull:", &r, who, 1).await, Ok(()));
        assert_eq!(l.check("c:pull:", &r, who, 2).await, Err(1));
        assert_eq!(l.pace_shared("ns:a/", 1000, 0, 2).await, None);
    }

    /// Shared counters that admit everything, counting how often they are asked.
    #[derive(Debug, Default)]
    struct Lenient(std::sync::atomic::AtomicUsize);

    impl SharedLimits for Lenient {
        fn count<'a>(
            &'a self,
            c: &'a [(String, u64)],
        ) -> futures::future::BoxFuture<'a, Result<Vec<(u64, u64)>, String>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move { Ok(c.iter().map(|_| (1, 1000)).collect()) })
        }
        fn pace<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: u64,
        ) -> futures::future::BoxFuture<'a, Result<u64, String>> {
            Box::pin(async { Ok(0) })
        }
    }

    #[tokio::test]
    async fn a_request_this_node_refuses_costs_no_round_trip() {
        let shared = Arc::new(Lenient::default());
        let l = RateLimiter::new(10).with_shared(Some(shared.clone()));
        let who = RateSubject {
            identity: Some("a"),
            ip: "1.1.1.1",
        };
        let r = rule(2, Bucket::Identity);
        for t in 0..2 {
            assert_eq!(l.check("c:pull:", &r, who, t).await, Ok(()));
        }
        for t in 2..100 {
            assert_eq!(l.check("c:pull:", &r, who, t).await, Err(1));
        }
        assert_eq!(
            shared.0.load(Ordering::Relaxed),
            2,
            "asked for admitted ones only"
        );
    }

    #[tokio::test]
    async fn after_a_failure_the_shared_counters_rest() {
        let metrics = crate::metrics::Metrics::new();
        let l = RateLimiter::new(10)
            .with_shared(Some(Arc::new(Down)))
            .with_metrics(Some(metrics.clone()));
        assert!(l.shared_now(0).is_some());
        assert_eq!(l.pace_shared("ns:a/", 1000, 0, 10).await, None);
        assert!(
            metrics
                .render()
                .contains("starfish_shared_limits_fallbacks_total 1\n")
        );
        assert!(l.shared_now(10 + SHARED_BACKOFF_MS - 1).is_none());
        assert!(l.shared_now(10 + SHARED_BACKOFF_MS).is_some());
    }
}
