//! Fixed-window rate limiting per collection, action and bucket (§8.4), over a
//! bounded map: a flood of distinct buckets (many IPs, many identities) evicts the
//! oldest windows instead of growing memory without end.

use super::SharedLimits;
use crate::config::{Bucket, RateRule, RateWindow};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
        }
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
    /// With shared counters, the count is the one of all nodes (one round trip); when
    /// they do not answer, this node's own.
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
        if let Some(shared) = &self.shared {
            let keys: Vec<(String, u64)> = counters
                .iter()
                .map(|(k, w)| (k.clone(), w.window_ms.get()))
                .collect();
            match shared.count(&keys).await {
                Ok(counts) => {
                    let windows = counters.iter().map(|(_, w)| w.max_requests.get());
                    return verdict(
                        windows
                            .zip(counts)
                            .map(|(max, (count, left_ms))| (max, count, now_ms + left_ms)),
                        now_ms,
                    );
                }
                Err(e) => self.fallback(&e, now_ms),
            }
        }
        self.check_local(counters, now_ms)
    }

    /// Counts one request in the cell rate `key` of all nodes: `None` without shared
    /// counters or when they do not answer (the caller then counts on its own),
    /// otherwise `Some(wait_us)`, 0 when admitted.
    pub(crate) async fn pace_shared(
        &self,
        key: &str,
        interval_us: u64,
        tolerance_us: u64,
        now_ms: u64,
    ) -> Option<u64> {
        let shared = self.shared.as_ref()?;
        match shared.pace(key, interval_us, tolerance_us).await {
            Ok(wait) => Some(wait),
            Err(e) => {
                self.fallback(&e, now_ms);
                None
            }
        }
    }

    /// Says (at most every ten seconds) that the shared counters did not answer.
    fn fallback(&self, error: &str, now_ms: u64) {
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
}
