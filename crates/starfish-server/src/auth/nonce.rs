//! The replay cache: each (signer, nonce) is accepted once while its request could
//! still be accepted. Bounded in total and per signer, and a full cache never turns
//! into a lockout: it evicts the entries with the oldest request timestamps and
//! remembers the newest timestamp it evicted (a high-water mark). A request whose
//! timestamp is not newer than that mark is refused, so an evicted nonce can never be
//! replayed, while everyone whose clock is current keeps being served.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// Limits of the in-memory nonce cache. Defaults are the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceCacheLimits {
    /// How long a nonce is remembered, in ms, centred on its request timestamp
    /// (default 10 minutes). Must be at least twice the allowed clock skew, so a
    /// nonce is remembered as long as its request could be accepted.
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
/// sends. A collision (2^-64 even across billions of entries) could only refuse a
/// request, never admit a replay.
type Fingerprint = [u8; 16];

/// A signer: the raw bytes of its Ed25519 public key, so two spellings of one key
/// (hex case) are one signer.
pub(crate) type SignerKey = [u8; 32];

pub(crate) fn fingerprint(signer: &SignerKey, nonce: &str) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(signer);
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A signer as 4 bytes: a hash of its key under this process's random key, so an
/// entry costs 28 bytes less than with the key itself, and nobody can choose keys
/// that share another signer's count (two signers that happen to share an id, about
/// one pair among 100,000 signers, share their per-signer bound, nothing more).
type SignerId = u32;

/// A (signer, nonce) pair in the local cache: 8 bytes of SipHash under this
/// process's random key. A collision, about N in 2^64 per request with N live
/// nonces (one in 10^13 at two million), could only refuse a request, never admit
/// a replay, and nobody without the key can aim one. (The shared cache uses
/// [`fingerprint`]: every node must compute the same key.)
type LocalKey = u64;

/// Request timestamps are grouped by 2^10 ms.
const BUCKET_SHIFT: u32 = 10;

/// One live nonce: 16 bytes in its slot, 9 (and the table's slack) in the set.
#[derive(Clone, Copy)]
struct Entry {
    key: LocalKey,
    signer: SignerId,
    /// The request timestamp within its slot (below 2^10).
    offset: u16,
}

/// The slot of request timestamp `ts`, and the offset in it.
fn slot_of(ts: i64) -> (i64, u16) {
    let slot = ts >> BUCKET_SHIFT;
    (slot, (ts - (slot << BUCKET_SHIFT)) as u16)
}

fn ts_of(slot: i64, offset: u16) -> i64 {
    (slot << BUCKET_SHIFT) + i64::from(offset)
}

/// The live nonces whose request timestamps fall in one 2^10 ms slot.
#[derive(Default)]
struct Bucket {
    entries: Vec<Entry>,
    /// Newest first (so the oldest leaves from the end): sorted when the bucket is
    /// the oldest and an entry must leave, not on every insert.
    sorted: bool,
}

impl Bucket {
    fn sort(&mut self) {
        if !self.sorted {
            self.entries
                .sort_unstable_by_key(|e| std::cmp::Reverse(e.offset));
            self.sorted = true;
        }
    }
}

/// The set's hasher: its keys are keyed hashes already.
#[derive(Default, Clone, Copy)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct State {
    /// Live keys.
    seen: HashSet<LocalKey, std::hash::BuildHasherDefault<Prehashed>>,
    /// Live entries by request-timestamp slot, oldest slot first.
    buckets: BTreeMap<i64, Bucket>,
    /// Live entries per signer.
    per_signer: HashMap<SignerId, u32>,
    /// The newest request timestamp evicted to make room; requests not newer are
    /// refused.
    high_water: Option<i64>,
    /// The newest slot inserted into.
    newest_slot: i64,
}

/// Drops `e` from the set and its signer's count.
fn forget(
    seen: &mut HashSet<LocalKey, std::hash::BuildHasherDefault<Prehashed>>,
    per_signer: &mut HashMap<SignerId, u32>,
    e: Entry,
) {
    seen.remove(&e.key);
    if let Some(count) = per_signer.get_mut(&e.signer) {
        *count -= 1;
        if *count == 0 {
            per_signer.remove(&e.signer);
        }
    }
}

impl State {
    /// The oldest live request timestamp.
    fn oldest_ts(&mut self) -> Option<i64> {
        let mut first = self.buckets.first_entry()?;
        let slot = *first.key();
        let bucket = first.get_mut();
        bucket.sort();
        bucket.entries.last().map(|e| ts_of(slot, e.offset))
    }

    /// Drops the oldest entry; returns its request timestamp.
    fn pop_oldest(&mut self) -> Option<i64> {
        let mut first = self.buckets.first_entry()?;
        let slot = *first.key();
        let bucket = first.get_mut();
        bucket.sort();
        let e = bucket.entries.pop()?;
        if bucket.entries.is_empty() {
            first.remove();
        }
        forget(&mut self.seen, &mut self.per_signer, e);
        Some(ts_of(slot, e.offset))
    }

    /// Drops every entry whose request timestamp is before `horizon`: whole slots
    /// without sorting them, then the oldest of the slot the horizon falls in.
    fn expire(&mut self, horizon: i64) {
        while let Some(mut first) = self.buckets.first_entry() {
            let end = (*first.key() << BUCKET_SHIFT).saturating_add(1 << BUCKET_SHIFT);
            if end <= horizon {
                for e in first.remove().entries {
                    forget(&mut self.seen, &mut self.per_signer, e);
                }
                continue;
            }
            let slot = *first.key();
            let bucket = first.get_mut();
            bucket.sort();
            while bucket
                .entries
                .last()
                .is_some_and(|e| ts_of(slot, e.offset) < horizon)
            {
                if let Some(e) = bucket.entries.pop() {
                    forget(&mut self.seen, &mut self.per_signer, e);
                }
            }
            if bucket.entries.is_empty() {
                first.remove();
            }
            return;
        }
    }

    fn insert(&mut self, ts: i64, key: LocalKey, signer: SignerId) {
        self.seen.insert(key);
        let (slot, offset) = slot_of(ts);
        if slot > self.newest_slot {
            // The previous slot takes few inserts from now on: give back its
            // spare capacity.
            if let Some(previous) = self.buckets.get_mut(&self.newest_slot) {
                previous.entries.shrink_to_fit();
            }
            self.newest_slot = slot;
        }
        let bucket = self.buckets.entry(slot).or_default();
        bucket.sorted = bucket.sorted
            && bucket
                .entries
                .last()
                .is_none_or(|last| last.offset >= offset);
        bucket.entries.push(Entry {
            key,
            signer,
            offset,
        });
        *self.per_signer.entry(signer).or_insert(0) += 1;
    }
}

/// Why a nonce was refused (for the operator's log only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceRefusal {
    /// Seen already within its window.
    Replay,
    /// Not newer than the newest timestamp evicted from a full cache.
    BelowHighWater,
    /// The signer holds its share of the cache already.
    SignerFull,
}

/// A bounded in-memory replay cache.
pub(crate) struct NonceCache {
    limits: NonceCacheLimits,
    state: Mutex<State>,
    ids: std::collections::hash_map::RandomState,
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
    pub(crate) fn new(limits: NonceCacheLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
            ids: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Live entries (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.seen.len())
    }

    /// Records `nonce` of `signer` for a request signed at `ts`, at `now_ms`.
    ///
    /// # Errors
    /// The [`NonceRefusal`] when the request must be refused.
    pub(crate) fn check_and_remember(
        &self,
        signer: &SignerKey,
        nonce: &str,
        ts: i64,
        now_ms: u64,
    ) -> Result<(), NonceRefusal> {
        let Ok(mut st) = self.state.lock() else {
            return Err(NonceRefusal::Replay);
        };
        // Forget entries whose request can no longer be accepted (bounded work: each
        // entry leaves once).
        let horizon = (now_ms as i64).saturating_sub((self.limits.window_ms / 2) as i64);
        st.expire(horizon);
        let key: LocalKey = std::hash::BuildHasher::hash_one(&self.ids, (signer, nonce));
        let id = std::hash::BuildHasher::hash_one(&self.ids, signer) as SignerId;
        if st.seen.contains(&key) {
            return Err(NonceRefusal::Replay);
        }
        if st.high_water.is_some_and(|hw| ts <= hw) {
            return Err(NonceRefusal::BelowHighWater);
        }
        if st.per_signer.get(&id).copied().unwrap_or(0) as usize >= self.limits.per_signer {
            return Err(NonceRefusal::SignerFull);
        }
        if st.seen.len() >= self.limits.max_entries.max(1) {
            // Full: this request would be the oldest, or the oldest makes room.
            if st.oldest_ts().is_some_and(|t| ts <= t) {
                st.high_water = Some(st.high_water.map_or(ts, |hw| hw.max(ts)));
                return Err(NonceRefusal::BelowHighWater);
            }
            if let Some(evicted) = st.pop_oldest() {
                st.high_water = Some(st.high_water.map_or(evicted, |hw| hw.max(evicted)));
            }
        }
        st.insert(ts, key, id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> NonceCache {
        NonceCache::new(NonceCacheLimits {
            window_ms: 2000,
            max_entries: 50,
            per_signer: 10,
        })
    }

    fn signer(n: u8) -> SignerKey {
        [n; 32]
    }

    #[test]
    fn a_nonce_is_accepted_once_while_its_request_is_valid() {
        let c = small();
        assert!(c.check_and_remember(&signer(1), "n1", 0, 0).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "n1", 0, 1000),
            Err(NonceRefusal::Replay)
        );
        assert!(
            c.check_and_remember(&signer(2), "n1", 0, 0).is_ok(),
            "nonces are per signer"
        );
        assert!(
            c.check_and_remember(&signer(1), "n1", 0, 1001).is_ok(),
            "forgotten once the request is outside the window"
        );
    }

    /// Eviction takes the oldest request timestamps whatever the arrival order and
    /// whichever 2^10 ms slots they fall in, and expiry drops whole slots and the
    /// older part of the slot the horizon falls in.
    #[test]
    fn eviction_and_expiry_follow_request_timestamps() {
        let c = NonceCache::new(NonceCacheLimits {
            window_ms: 1_000_000_000,
            max_entries: 4,
            per_signer: 100,
        });
        for (nonce, ts) in [("a", 3000), ("b", 10), ("c", 2050), ("d", 1500)] {
            assert!(c.check_and_remember(&signer(1), nonce, ts, 0).is_ok());
        }
        assert!(c.check_and_remember(&signer(1), "e", 4000, 0).is_ok());
        assert!(c.check_and_remember(&signer(1), "f", 5000, 0).is_ok());
        assert_eq!(c.len(), 4);
        for held in ["a", "c", "e", "f"] {
            assert_eq!(
                c.check_and_remember(&signer(1), held, 6000, 0),
                Err(NonceRefusal::Replay),
                "{held}"
            );
        }
        assert_eq!(
            c.check_and_remember(&signer(1), "d", 1500, 0),
            Err(NonceRefusal::BelowHighWater),
            "d (1500) and b (10) were the oldest"
        );
        assert!(c.check_and_remember(&signer(1), "b", 2000, 0).is_err());

        let c = small(); // a 2 s window: the horizon is now - 1 s
        for (nonce, ts) in [("w", 100), ("x", 1500), ("y", 1100), ("z", 2100)] {
            assert!(c.check_and_remember(&signer(2), nonce, ts, 0).is_ok());
        }
        assert!(
            c.check_and_remember(&signer(2), "fresh", 2150, 2200)
                .is_ok()
        );
        assert_eq!(c.len(), 3, "w and y expired at 2200");
        assert_eq!(
            c.check_and_remember(&signer(2), "x", 1500, 2200),
            Err(NonceRefusal::Replay)
        );
        assert!(c.check_and_remember(&signer(2), "y", 1100, 2200).is_ok());
    }

    #[test]
    fn a_flood_evicts_the_oldest_and_locks_out_nobody_else() {
        let c = small();
        // 20 self-issued keys x 10 nonces, each request signed a little later.
        let mut ts = 0;
        for s in 0..20 {
            for n in 0..10 {
                ts += 1;
                assert!(
                    c.check_and_remember(&signer(s), &format!("n{n}"), ts, 300)
                        .is_ok()
                );
            }
        }
        assert_eq!(c.len(), 50, "bounded");
        // A user whose clock is current is served.
        assert!(c.check_and_remember(&signer(99), "fresh", 300, 300).is_ok());
        // An evicted nonce cannot be replayed: its timestamp is below the mark.
        assert_eq!(
            c.check_and_remember(&signer(0), "n0", 1, 300),
            Err(NonceRefusal::BelowHighWater)
        );
        // A nonce still held is refused as a replay.
        assert_eq!(
            c.check_and_remember(&signer(19), "n9", 200, 300),
            Err(NonceRefusal::Replay)
        );
        // One signer cannot hold more than its share.
        let c = small();
        let ok = (0..100)
            .filter(|n| {
                c.check_and_remember(&signer(7), &format!("{n}"), 10, 10)
                    .is_ok()
            })
            .count();
        assert_eq!(ok, 10);
        assert!(c.check_and_remember(&signer(8), "0", 10, 10).is_ok());
    }
}

/// The memory a live nonce costs, measured (`cargo test --release -p starfish-server
/// --lib nonce_memory -- --ignored --nocapture`): the process's resident memory before
/// and after 200,000 nonces of 64 signers. Ignored by default: it reads the whole
/// process's memory, which tests running beside it would disturb.
#[cfg(test)]
mod nonce_memory {
    use super::*;

    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    #[ignore = "measures the process's memory: run alone, in release"]
    fn bytes_per_live_nonce() {
        let c = NonceCache::new(NonceCacheLimits {
            window_ms: 600_000,
            max_entries: 2_000_000,
            per_signer: 1_000_000,
        });
        let before = resident_kib();
        let n = 200_000u64;
        for i in 0..n {
            let signer = [(i % 64) as u8; 32];
            let ts = i64::try_from(i / 20).unwrap();
            c.check_and_remember(&signer, &format!("{i:032x}"), ts, 0)
                .unwrap();
        }
        let per_nonce = resident_kib().saturating_sub(before) * 1024 / n;
        eprintln!("{per_nonce} bytes per live nonce");
        assert!(per_nonce < 60, "{per_nonce} bytes per live nonce");
    }
}
