//! The replay cache: each (signer, nonce) is accepted once within its window. Bounded
//! in total and per signer; when a bound is reached it refuses new nonces rather than
//! forgetting old ones (a forgotten nonce could be replayed).

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Limits of the in-memory nonce cache. Defaults are the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceCacheLimits {
    /// How long a nonce is remembered, in ms (default 10 minutes).
    pub window_ms: u64,
    /// Live nonces across all signers (default 100 000).
    pub max_entries: usize,
    /// Live nonces per signer (default 4096).
    pub per_signer: usize,
}

impl Default for NonceCacheLimits {
    fn default() -> Self {
        Self {
            window_ms: 10 * 60 * 1000,
            max_entries: 100_000,
            per_signer: 4096,
        }
    }
}

/// A (signer, nonce) pair as 16 bytes of SHA-256: fixed size whatever the client
/// sends, so a live entry costs tens of bytes, not hundreds. A collision (2^-64 even
/// across billions of entries) could only refuse a request, never admit a replay.
type Fingerprint = [u8; 16];

fn fingerprint(signer: &str, nonce: &str) -> Fingerprint {
    let mut h = Sha256::new();
    h.update((signer.len() as u64).to_be_bytes());
    h.update(signer.as_bytes());
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[derive(Default)]
struct State {
    /// fingerprint -> expiry ms.
    seen: HashMap<Fingerprint, u64>,
    /// Insertion order; expiries are non-decreasing as long as the clock is.
    order: VecDeque<(u64, Fingerprint, Arc<str>)>,
    /// Live entries per signer; the key is shared with `order`.
    per_signer: HashMap<Arc<str>, usize>,
}

/// A bounded in-memory replay cache.
pub struct NonceCache {
    limits: NonceCacheLimits,
    state: Mutex<State>,
}

impl std::fmt::Debug for NonceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceCache")
            .field("limits", &self.limits)
            .field("len", &self.len())
            .finish()
    }
}

impl NonceCache {
    /// An empty cache with these limits.
    pub fn new(limits: NonceCacheLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Live entries (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.seen.len())
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `nonce` for `signer` at `now_ms`. False when it was already seen within
    /// its window, or when a bound is reached (fail closed).
    pub fn check_and_remember(&self, signer: &str, nonce: &str, now_ms: u64) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        // Drop expired entries from the front (bounded work: each entry leaves once).
        while let Some((expiry, _, _)) = st.order.front() {
            if *expiry >= now_ms {
                break;
            }
            if let Some((expiry, key, signer)) = st.order.pop_front() {
                if st.seen.get(&key) == Some(&expiry) {
                    st.seen.remove(&key);
                }
                if let Some(count) = st.per_signer.get_mut(&signer) {
                    *count -= 1;
                    if *count == 0 {
                        st.per_signer.remove(&signer);
                    }
                }
            }
        }
        let key = fingerprint(signer, nonce);
        if let Some(expiry) = st.seen.get(&key) {
            if *expiry >= now_ms {
                return false;
            }
        }
        if st.per_signer.get(signer).copied().unwrap_or(0) >= self.limits.per_signer
            || st.seen.len() >= self.limits.max_entries
        {
            return false;
        }
        let expiry = now_ms.saturating_add(self.limits.window_ms);
        let signer: Arc<str> = match st.per_signer.get_key_value(signer) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(signer),
        };
        *st.per_signer.entry(signer.clone()).or_insert(0) += 1;
        st.order.push_back((expiry, key, signer));
        // An expired entry for the same key may still sit in `order`; it is dropped
        // from `seen` only if its expiry matches, and counted off its signer either way.
        st.seen.insert(key, expiry);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> NonceCache {
        NonceCache::new(NonceCacheLimits {
            window_ms: 1000,
            max_entries: 50,
            per_signer: 10,
        })
    }

    #[test]
    fn a_nonce_is_accepted_once_per_window() {
        let c = small();
        assert!(c.check_and_remember("a", "n1", 0));
        assert!(!c.check_and_remember("a", "n1", 1000));
        assert!(c.check_and_remember("b", "n1", 0), "nonces are per signer");
        assert!(
            c.check_and_remember("a", "n1", 1001),
            "expired entries are forgotten"
        );
    }

    #[test]
    fn a_flood_of_distinct_nonces_stays_bounded_and_is_refused_not_forgotten() {
        let c = small();
        let mut accepted = 0;
        for signer in 0..20 {
            for n in 0..100 {
                if c.check_and_remember(&format!("s{signer}"), &format!("n{n}"), 5) {
                    accepted += 1;
                }
            }
        }
        assert_eq!(c.len(), 50);
        assert_eq!(accepted, 50);
        // Earlier nonces are still remembered: a replay is refused.
        assert!(!c.check_and_remember("s0", "n0", 5));
        // Per-signer bound: one signer alone cannot fill the cache.
        let c = small();
        let ok = (0..100)
            .filter(|n| c.check_and_remember("x", &format!("{n}"), 0))
            .count();
        assert_eq!(ok, 10);
        assert!(c.check_and_remember("y", "0", 0));
        // Room comes back once the window passes.
        assert!(c.check_and_remember("x", "new", 1001));
    }
}
