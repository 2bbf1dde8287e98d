//! Fixed-window rate limiting per collection, action and bucket (§8.4), over a
//! bounded map: a flood of distinct buckets (many IPs, many identities) evicts the
//! oldest windows instead of growing memory without end.

use crate::config::{Bucket, RateRule, RateWindow};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

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
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("max_buckets", &self.max_buckets)
            .field("buckets", &self.len())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter holding at most `max_buckets` live counters.
    pub(crate) fn new(max_buckets: usize) -> Self {
        Self {
            max_buckets: max_buckets.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Live counters.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.counters.len())
    }

    /// Counts one request under `scope` (collection and action) and `rule`; returns
    /// `Err(retry_after_secs)` when it is over the limit. Refused requests count too.
    ///
    /// # Errors
    /// The seconds until the fullest window ends.
    pub(crate) fn check(
        &self,
        scope: &str,
        rule: &RateRule,
        subject: RateSubject<'_>,
        now_ms: u64,
    ) -> Result<(), u64> {
        let anon_ip = || subject.ip.to_owned();
        let counters: Vec<(String, RateWindow)> = match rule {
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
        };
        let Ok(mut st) = self.state.lock() else {
            return Err(1);
        };
        let mut retry = None;
        for (key, window) in counters {
            let count = self.hit(&mut st, key, window.window_ms.get(), now_ms);
            if count.0 > window.max_requests.get() {
                let secs = count.1.saturating_sub(now_ms).div_ceil(1000).max(1);
                retry = Some(retry.map_or(secs, |r: u64| r.max(secs)));
            }
        }
        retry.map_or(Ok(()), Err)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU64;

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
        assert_eq!(l.check("c:push:", &r, who, 0), Ok(()));
        assert_eq!(l.check("c:push:", &r, who, 10), Ok(()));
        assert_eq!(l.check("c:push:", &r, who, 500), Err(1));
        // Another identity has its own bucket; anonymous callers are bucketed by IP.
        assert_eq!(
            l.check(
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
        assert_eq!(l.check("c:push:", &r, who, 1000), Ok(()), "a new window");
    }

    #[test]
    fn a_flood_of_buckets_stays_bounded() {
        let l = RateLimiter::new(100);
        let r = rule(1, Bucket::Ip);
        for i in 0..10_000 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            let _ = l.check(
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
}
