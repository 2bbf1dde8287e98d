//! A webhook signature is accepted once: claimed in the router's shared replay
//! cache (Redis) when it has one, or remembered by this node.

use crate::auth::ReplayStore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Signatures this node remembers at most; past it, the oldest are forgotten
/// (a replay then needs to be older than the 100,000 webhooks since).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Seen {
    shared: Option<Arc<dyn ReplayStore>>,
    local: Mutex<Local>,
}

#[derive(Debug, Default)]
struct Local {
    until: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl Seen {
    pub(crate) fn new(shared: Option<Arc<dyn ReplayStore>>) -> Self {
        Self {
            shared,
            local: Mutex::default(),
        }
    }

    /// True the first time `signature` is seen on webhook `id` within `ttl_ms`;
    /// `Err` when the shared cache does not answer (refused: fail closed).
    pub(crate) async fn first(
        &self,
        id: &str,
        signature: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, ()> {
        let digest = Sha256::new()
            .chain_update(b"starfish-webhook\n")
            .chain_update(id.as_bytes())
            .chain_update(b"\n")
            .chain_update(signature.as_bytes())
            .finalize();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&digest[..16]);
        if let Some(shared) = &self.shared {
            let claim = shared
                .claim(fingerprint, ttl_ms, now_ms)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "webhook refused: the replay cache did not answer");
                })?;
            return Ok(claim.first);
        }
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(local.first(fingerprint, now_ms.saturating_add(ttl_ms), now_ms))
    }
}

impl Local {
    fn first(&mut self, fingerprint: [u8; 16], until: u64, now: u64) -> bool {
        while let Some(&(old, expires)) = self.order.front() {
            if expires > now && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            if self.until.get(&old) == Some(&expires) {
                self.until.remove(&old);
            }
        }
        if self.until.get(&fingerprint).is_some_and(|&u| u > now) {
            return false;
        }
        self.until.insert(fingerprint, until);
        self.order.push_back((fingerprint, until));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signature_is_accepted_once_within_its_window() {
        let seen = Seen::new(None);
        assert_eq!(seen.first("a", "sig", 1_000, 0).await, Ok(true));
        assert_eq!(seen.first("a", "sig", 1_000, 500).await, Ok(false));
        assert_eq!(seen.first("b", "sig", 1_000, 500).await, Ok(true));
        assert_eq!(seen.first("a", "sig", 1_000, 1_001).await, Ok(true));
    }
}
