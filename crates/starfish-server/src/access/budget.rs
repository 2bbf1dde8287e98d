//! A namespace's request limits at run time ([`crate::config::NamespaceLimits`]):
//! a permit per request in flight, taken before anything else is done for it (so a
//! tenant that saturates the server holds at most its share of it), a request count
//! per window for the whole namespace, charged before authentication, and one per
//! caller, charged once the caller is known.
//!
//! The namespace-wide count lives here, one counter per namespace (never evicted by
//! other counters); per-caller counts live in the router's bounded rate limiter,
//! whatever identities an attacker mints. Both are per node, or kept for all nodes
//! in shared counters ([`super::SharedLimits`]) when the router has them.

use super::Refusal;
use super::rate::{RateLimiter, RateSubject};
use crate::config::{Bucket, NamespaceLimits, RateRule, RateWindow};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One namespace's limits and counters on this node.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: NamespaceLimits,
    /// When, in µs, the namespace-wide count is back to empty (its theoretical
    /// arrival time).
    next: Mutex<u64>,
    in_flight: Option<Arc<Semaphore>>,
}

/// Holds one of the namespace's in-flight places until dropped.
pub(crate) struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Budget {
    pub(crate) fn new(limits: NamespaceLimits) -> Self {
        Self {
            limits,
            next: Mutex::new(0),
            in_flight: limits
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        }
    }

    /// The limits this budget enforces.
    pub(crate) fn limits(&self) -> &NamespaceLimits {
        &self.limits
    }

    /// A place among the namespace's requests in flight.
    ///
    /// # Errors
    /// `429 Too many concurrent requests` when every place is taken.
    pub(crate) fn permit(&self) -> Result<Permit, Refusal> {
        match &self.in_flight {
            None => Ok(Permit(None)),
            Some(places) => places
                .clone()
                .try_acquire_owned()
                .map(|p| Permit(Some(p)))
                .map_err(|_| Refusal::TooManyConcurrent),
        }
    }

    /// Counts one request in the namespace-wide count, before anything else is
    /// done for it: a namespace over its count is refused before its requests cost a
    /// signature verification, so a flood aimed at one namespace leaves the server
    /// to the others.
    ///
    /// The count is spread over the window (a cell rate: one request every
    /// `windowMs / maxRequests`, in bursts of at most a tenth of `maxRequests`), so a
    /// namespace at its limit never lands all of a window's requests at once.
    ///
    /// With shared counters (`rate`), the count is kept for all nodes under `key()`
    /// (made only then) as well; when they do not answer, on this node alone.
    ///
    /// # Errors
    /// `429 Rate limit exceeded` with `Retry-After` when the namespace is over its
    /// count.
    pub(crate) async fn charge_namespace(
        &self,
        rate: &RateLimiter,
        key: impl FnOnce() -> String,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let Some(max) = self.limits.max_requests else {
            return Ok(());
        };
        let window_us = self.limits.window_ms.max(1).saturating_mul(1000);
        if max == 0 {
            return Err(Refusal::RateLimited {
                retry_after: window_us.div_ceil(1_000_000).max(1),
            });
        }
        let interval = (window_us / max).max(1);
        let tolerance = interval.saturating_mul((max / 10).max(1) - 1);
        let refused = |wait_us: u64| Refusal::RateLimited {
            retry_after: wait_us.div_ceil(1_000_000).max(1),
        };
        // This node's own count first: over it, refused without a round trip (the
        // count of all nodes is at least as high). Then all nodes' count.
        {
            let now = now_ms.saturating_mul(1000);
            let mut tat = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let due = (*tat).max(now);
            if due - now > tolerance {
                return Err(refused(due - now - tolerance));
            }
            *tat = due.saturating_add(interval);
        }
        if !rate.is_shared() {
            return Ok(());
        }
        match rate.pace_shared(&key(), interval, tolerance, now_ms).await {
            Some(0) | None => Ok(()),
            Some(wait_us) => Err(refused(wait_us)),
        }
    }

    /// Counts one request of `subject` (a known caller) in namespace bucket `scope`.
    ///
    /// # Errors
    /// `429 Rate limit exceeded` with `Retry-After` when the caller is over its
    /// count for the window.
    pub(crate) async fn charge(
        &self,
        rate: &RateLimiter,
        scope: &str,
        subject: RateSubject<'_>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let window_ms = self.limits.window_ms.max(1);
        if let Some(max) = self.limits.max_requests_per_identity {
            let rule = RateRule::Single {
                window: RateWindow {
                    window_ms: NonZeroU64::new(window_ms).unwrap_or(NonZeroU64::MIN),
                    max_requests: NonZeroU64::new(max).unwrap_or(NonZeroU64::MIN),
                },
                bucket: Bucket::Identity,
            };
            rate.check(scope, &rule, subject, now_ms)
                .await
                .map_err(|retry_after| Refusal::RateLimited { retry_after })?;
        }
        Ok(())
    }
}
