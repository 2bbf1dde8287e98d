//! A webhook signature is accepted once: claimed in the router's shared replay
//! cache (Redis) when it has one, or remembered by this node, per route. A claim
//! whose push failed is released, so that the sender's retry is taken.

use crate::auth::ReplayStore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Signatures this node remembers per route at most. A live one is never
/// forgotten to make room: past it, the route's new deliveries are refused (503)
/// until the oldest expire.
const MAX_REMEMBERED: usize = 50_000;
/// Routes this node remembers signatures of at most.
const MAX_ROUTES: usize = 1024;

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The first time.
    First,
    /// A replay.
    Again,
    /// Cannot be known: the shared cache did not answer, this node's memory for
    /// the route is full, or the shared cache forgot claims made after `signed_ms`.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct Signatures {
    shared: Option<Arc<dyn ReplayStore>>,
    local: Mutex<HashMap<String, Local>>,
}

#[derive(Debug, Default)]
struct Local {
    until: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

/// The fingerprint of `signature` on route `id`.
pub(crate) fn fingerprint(id: &str, signature: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(b"starfish-webhook\n")
        .chain_update(id.as_bytes())
        .chain_update(b"\n")
        .chain_update(signature.as_bytes())
        .finalize();
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&digest[..16]);
    fingerprint
}

impl Signatures {
    pub(crate) fn new(shared: Option<Arc<dyn ReplayStore>>) -> Self {
        Self {
            shared,
            local: Mutex::default(),
        }
    }

    /// Claims `fingerprint` on route `id` for `ttl_ms`; `signed_ms` is when the
    /// sender signed it, when it says (a timestamp header).
    pub(crate) async fn claim(
        &self,
        id: &str,
        fingerprint: [u8; 16],
        ttl_ms: u64,
        now_ms: u64,
        signed_ms: Option<u64>,
    ) -> Seen {
        if let Some(shared) = &self.shared {
            return match shared.claim(fingerprint, ttl_ms, now_ms).await {
                Err(e) => {
                    tracing::error!(error = %e, "webhook refused: the replay cache did not answer");
                    Seen::Unknown
                }
                // The cache lost what it held since then: a delivery signed before
                // may have been taken in a memory it no longer has.
                // (Without a timestamp, when it was signed is not known: such a
                // route is only protected within its window, as documented.)
                Ok(claim) if signed_ms.is_some_and(|s| s < claim.remembers_since_ms) => {
                    Seen::Unknown
                }
                Ok(claim) if claim.first => Seen::First,
                Ok(_) => Seen::Again,
            };
        }
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if local.len() >= MAX_ROUTES && !local.contains_key(id) {
            // Routes come and go (a namespace's own): forget those with nothing live.
            local.retain(|_, route| route.live(now_ms));
            if local.len() >= MAX_ROUTES {
                return Seen::Unknown;
            }
        }
        let route = local.entry(id.to_owned()).or_default();
        route.claim(fingerprint, now_ms.saturating_add(ttl_ms), now_ms)
    }

    /// Forgets a claim (its push failed: the sender may retry).
    pub(crate) async fn release(&self, id: &str, fingerprint: [u8; 16]) {
        if let Some(shared) = &self.shared {
            shared.release(fingerprint).await;
            return;
        }
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(route) = local.get_mut(id) {
            route.until.remove(&fingerprint);
        }
    }
}

impl Local {
    /// True while it remembers a signature that has not expired.
    fn live(&self, now: u64) -> bool {
        self.until.values().any(|&until| until > now)
    }

    fn claim(&mut self, fingerprint: [u8; 16], until: u64, now: u64) -> Seen {
        while let Some(&(old, expires)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.until.get(&old) == Some(&expires) {
                self.until.remove(&old);
            }
        }
        if self.until.get(&fingerprint).is_some_and(|&u| u > now) {
            return Seen::Again;
        }
        if self.until.len() >= MAX_REMEMBERED {
            return Seen::Unknown;
        }
        self.until.insert(fingerprint, until);
        self.order.push_back((fingerprint, until));
        Seen::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signature_is_accepted_once_within_its_window_per_route() {
        let seen = Signatures::new(None);
        let sig = fingerprint("a", "sig");
        assert_eq!(seen.claim("a", sig, 1_000, 0, None).await, Seen::First);
        assert_eq!(seen.claim("a", sig, 1_000, 500, None).await, Seen::Again);
        let other = fingerprint("b", "sig");
        assert_eq!(seen.claim("b", other, 1_000, 500, None).await, Seen::First);
        assert_eq!(seen.claim("a", sig, 1_000, 1_001, None).await, Seen::First);
        seen.release("a", sig).await;
        assert_eq!(seen.claim("a", sig, 1_000, 1_002, None).await, Seen::First);
    }

    #[test]
    fn a_full_route_refuses_rather_than_forgets_a_live_signature() {
        let mut local = Local::default();
        for n in 0..MAX_REMEMBERED as u64 {
            let mut f = [0u8; 16];
            f[..8].copy_from_slice(&n.to_le_bytes());
            assert_eq!(local.claim(f, 1_000, 0), Seen::First);
        }
        assert_eq!(local.claim([0xff; 16], 1_000, 0), Seen::Unknown);
        // The first is still remembered.
        assert_eq!(local.claim([0; 16], 1_000, 1), Seen::Again);
        // Once they expire, there is room again.
        assert_eq!(local.claim([0xff; 16], 2_000, 1_000), Seen::First);
    }
}
