//! A namespace's request limits at run time ([`crate::config::NamespaceLimits`]):
//! a permit per request in flight, taken before anything else is done for it (so a
//! tenant that saturates the server holds at most its share of it), and request
//! counts per window for the whole namespace and per caller, charged once the caller
//! is known.
//!
//! The namespace-wide count lives here, one counter per namespace (never evicted by
//! other counters); per-caller counts live in the router's bounded rate limiter,
//! whatever identities an attacker mints. Both are per node.

use super::rate::{RateLimiter, RateSubject};
use crate::config::{Bucket, NamespaceLimits, RateRule, RateWindow};
use crate::error::ApiError;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One namespace's limits and counters on this node.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: NamespaceLimits,
    /// The end of the current window and the requests counted in it.
    window: Mutex<(u64, u64)>,
    in_flight: Option<Arc<Semaphore>>,
}

/// Holds one of the namespace's in-flight places until dropped.
pub(crate) struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Budget {
    pub(crate) fn new(limits: NamespaceLimits) -> Self {
        Self {
            limits,
            window: Mutex::new((0, 0)),
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
    pub(crate) fn permit(&self) -> Result<Permit, ApiError> {
        match &self.in_flight {
            None => Ok(Permit(None)),
            Some(places) => places
                .clone()
                .try_acquire_owned()
                .map(|p| Permit(Some(p)))
                .map_err(|_| ApiError::TooManyConcurrent),
        }
    }

    /// Counts one request of `subject` in namespace bucket `scope`.
    ///
    /// # Errors
    /// `429 Rate limit exceeded` with `Retry-After` when the namespace or the caller
    /// is over its count for the window.
    pub(crate) fn charge(
        &self,
        rate: &RateLimiter,
        scope: &str,
        subject: RateSubject<'_>,
        now_ms: u64,
    ) -> Result<(), ApiError> {
        let window_ms = self.limits.window_ms.max(1);
        if let Some(max) = self.limits.max_requests {
            let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            if now_ms >= w.0 {
                *w = (now_ms.saturating_add(window_ms), 0);
            }
            if w.1 >= max {
                let retry_after = w.0.saturating_sub(now_ms).div_ceil(1000).max(1);
                return Err(ApiError::RateLimited { retry_after });
            }
            w.1 += 1;
        }
        if let Some(max) = self.limits.max_requests_per_identity {
            let rule = RateRule::Single {
                window: RateWindow {
                    window_ms: NonZeroU64::new(window_ms).unwrap_or(NonZeroU64::MIN),
                    max_requests: NonZeroU64::new(max).unwrap_or(NonZeroU64::MIN),
                },
                bucket: Bucket::Identity,
            };
            rate.check(scope, &rule, subject, now_ms)
                .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        }
        Ok(())
    }
}
