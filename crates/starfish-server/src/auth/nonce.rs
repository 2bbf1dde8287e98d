//! The replay cache: each signed request (signer, nonce and the signed timestamp) is
//! accepted once while it could still be accepted. Bounded in total and per signer,
//! and a full cache never turns into a lockout: it evicts the entries with the oldest
//! request timestamps and remembers the newest timestamp it evicted (a high-water
//! mark). A request whose timestamp is not newer than that mark is refused, so an
//! evicted nonce can never be replayed, while everyone whose clock is current keeps
//! being served. Requests signed more than about a second ahead of the server's clock
//! share a quarter of the cache, so a flood of them, newer than every current
//! request, cannot fill it.
//!
//! The timestamp is part of what is signed, so a captured request replays with the
//! same timestamp: the cache keys an entry by signer, nonce and timestamp, and looks
//! for it only among the entries of that timestamp. The same nonce under another
//! timestamp is another signed request, which only the signer can make.
//!
//! Layout, about 12 bytes per live nonce: entries are grouped by their request
//! timestamp in slots of 2^8 ms. A slot takes inserts in a hash map until the clock has
//! passed it; then it is sealed into one sorted array of 8-byte keys and one of their
//! 4-byte signers, searched by bisection (a late request signed in a sealed slot goes
//! to that slot's small map). Expiry drops whole slots; eviction takes the oldest
//! milliseconds of the oldest slot.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
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

/// A signer as 4 bytes: a hash of its key under this process's random key, so a
/// count costs 28 bytes less than with the key itself, and nobody can choose keys
/// that share another signer's count (two signers that happen to share an id, about
/// one pair among 100,000 signers, share their per-signer bound, nothing more).
type SignerId = u32;

/// A signed request in the local cache: 56 bits of SipHash of signer, nonce and
/// timestamp under this process's random key, then the timestamp's offset in its slot
/// (8 bits). A collision, about n in 2^56 per request with n live nonces in the same
/// millisecond, could only refuse a request,
/// never admit a replay, and nobody without the key can aim one. (The shared cache
/// uses [`fingerprint`]: every node must compute the same key.)
type LocalKey = u64;

/// Request timestamps are grouped by 2^8 ms: expiry and eviction work a slot at a
/// time.
const SLOT_SHIFT: u32 = 8;

/// The slot of request timestamp `ts`.
fn slot_of(ts: i64) -> i64 {
    ts >> SLOT_SHIFT
}

/// The offset of request timestamp `ts` in its slot.
fn offset_of(ts: i64) -> u8 {
    (ts & 0xFF) as u8
}

/// The request timestamp at `offset` in `slot`.
fn ts_of(slot: i64, offset: u8) -> i64 {
    slot.saturating_mul(1 << SLOT_SHIFT)
        .saturating_add(i64::from(offset))
}

/// The local key of a request whose signer, nonce and timestamp hash to `hash`.
fn local_key(hash: u64, ts: i64) -> LocalKey {
    (hash & !0xFF) | u64::from(offset_of(ts))
}

/// The offset of the request timestamp in `key`.
fn key_offset(key: LocalKey) -> u8 {
    (key & 0xFF) as u8
}

/// The last request timestamp of `slot`.
fn slot_end(slot: i64) -> i64 {
    slot.saturating_add(1)
        .saturating_mul(1 << SLOT_SHIFT)
        .saturating_sub(1)
}

/// A request signed more than this ahead of the server's clock is *ahead*: its
/// entry would be newer than every current request for that long, so a full cache
/// of them would refuse current requests. Ahead entries share a quarter of the cache.
const AHEAD_MS: i64 = 1 << 10;

/// The maps' hasher: their keys are keyed hashes already, only spread over all 64
/// bits (a local key's low byte is its millisecond, a signer id has 32 bits; hashbrown
/// takes its bucket from the low bits and its tag from the top seven).
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
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
}

type OpenKeys = HashMap<LocalKey, SignerId, BuildHasherDefault<Prehashed>>;
type SignerCounts = HashMap<SignerId, u32, BuildHasherDefault<Prehashed>>;

/// Takes one entry of `signer` off its count.
fn give_back(per_signer: &mut SignerCounts, signer: SignerId) {
    if let Some(count) = per_signer.get_mut(&signer) {
        *count -= 1;
        if *count == 0 {
            per_signer.remove(&signer);
        }
    }
}

/// The live nonces whose request timestamps fall in one slot.
#[derive(Default)]
struct Slot {
    /// Sorted; filled when the clock has passed the slot.
    sealed: Box<[LocalKey]>,
    /// The signer of each sealed key, at the same index.
    sealed_signers: Box<[SignerId]>,
    /// Keys not sealed, and their signers: all of them while the slot is current,
    /// requests signed earlier than they arrive after.
    open: OpenKeys,
    /// The offset of the oldest live entry.
    oldest: u8,
}

impl Slot {
    fn contains(&self, key: LocalKey) -> bool {
        self.sealed.binary_search(&key).is_ok() || self.open.contains_key(&key)
    }

    fn len(&self) -> usize {
        self.sealed.len() + self.open.len()
    }

    /// Every entry's signer.
    fn signers(&self) -> impl Iterator<Item = SignerId> + '_ {
        self.sealed_signers
            .iter()
            .chain(self.open.values())
            .copied()
    }

    /// Evicts the oldest entries, at least a sixteenth of the slot and none with an
    /// offset above `limit` (at least the oldest's): all those with an offset up to
    /// some threshold, given back to their signers' counts. Returns how many left
    /// and the threshold.
    fn evict_oldest(&mut self, limit: u8, per_signer: &mut SignerCounts) -> (usize, u8) {
        let mut counts = [0usize; 256];
        for key in self.sealed.iter().chain(self.open.keys()) {
            counts[usize::from(key_offset(*key))] += 1;
        }
        let target = (self.len() / 16).max(1);
        let mut evicted = 0;
        let mut threshold = limit;
        for (offset, n) in counts.iter().enumerate().take(usize::from(limit) + 1) {
            evicted += n;
            if evicted >= target {
                threshold = offset as u8;
                break;
            }
        }
        if evicted > 0 {
            let mut keys = Vec::with_capacity(self.sealed.len());
            let mut signers = Vec::with_capacity(self.sealed.len());
            for (key, signer) in self.sealed.iter().zip(self.sealed_signers.iter()) {
                if key_offset(*key) > threshold {
                    keys.push(*key);
                    signers.push(*signer);
                } else {
                    give_back(per_signer, *signer);
                }
            }
            self.sealed = keys.into_boxed_slice();
            self.sealed_signers = signers.into_boxed_slice();
            self.open.retain(|key, signer| {
                let keep = key_offset(*key) > threshold;
                if !keep {
                    give_back(per_signer, *signer);
                }
                keep
            });
        }
        if let Some(next) = (usize::from(threshold) + 1..256).find(|o| counts[*o] > 0) {
            self.oldest = next as u8;
        }
        (evicted, threshold)
    }

    /// Moves the open keys into the sorted arrays.
    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let mut entries = Vec::with_capacity(self.len());
        entries.extend(
            self.sealed
                .iter()
                .copied()
                .zip(self.sealed_signers.iter().copied()),
        );
        entries.extend(std::mem::take(&mut self.open));
        entries.sort_unstable_by_key(|(key, _)| *key);
        self.sealed = entries.iter().map(|(key, _)| *key).collect();
        self.sealed_signers = entries.iter().map(|(_, signer)| *signer).collect();
    }
}

struct State {
    /// Live entries by slot, oldest first.
    slots: BTreeMap<i64, Slot>,
    /// Live entries per signer.
    per_signer: SignerCounts,
    /// Live entries.
    len: usize,
    /// The newest request timestamp forgotten, evicted to make room or expired;
    /// requests not newer are refused.
    high_water: Option<i64>,
    /// Every slot up to this one has been sealed once.
    swept: Option<i64>,
    /// Slots after this one hold ahead entries (it only moves forward).
    ahead_after: i64,
    /// Live entries in slots after `ahead_after`.
    ahead: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            slots: BTreeMap::new(),
            per_signer: SignerCounts::default(),
            len: 0,
            high_water: None,
            swept: None,
            ahead_after: i64::MIN,
            ahead: 0,
        }
    }
}

impl State {
    /// Raises the high-water mark to `ts`.
    fn raise(&mut self, ts: i64) {
        self.high_water = Some(self.high_water.map_or(ts, |hw| hw.max(ts)));
    }

    /// Drops the oldest slot and raises the mark to its end.
    fn drop_oldest(&mut self) {
        let Some((number, slot)) = self.slots.pop_first() else {
            return;
        };
        self.len -= slot.len();
        if number > self.ahead_after {
            self.ahead -= slot.len();
        }
        for signer in slot.signers() {
            give_back(&mut self.per_signer, signer);
        }
        self.raise(slot_end(number));
    }

    /// Evicts the oldest entries, all older than `ts`, and raises the mark to the
    /// newest request timestamp evicted; `false` when no entry is older than `ts`.
    fn evict_oldest(&mut self, ts: i64) -> bool {
        let Some(mut first) = self.slots.first_entry() else {
            return false;
        };
        let number = *first.key();
        let slot = first.get_mut();
        if ts_of(number, slot.oldest) >= ts {
            return false;
        }
        let limit = if number == slot_of(ts) {
            offset_of(ts) - 1
        } else {
            u8::MAX
        };
        let (evicted, threshold) = slot.evict_oldest(limit, &mut self.per_signer);
        self.len -= evicted;
        if number > self.ahead_after {
            self.ahead -= evicted;
        }
        if slot.len() == 0 {
            self.slots.pop_first();
        }
        self.raise(ts_of(number, threshold));
        true
    }

    /// Drops every slot whose request timestamps are all before `horizon` (an entry
    /// is remembered up to one slot longer than its window). The mark rises past
    /// them, so a caller whose clock steps back cannot get them accepted again.
    fn expire(&mut self, horizon: i64) {
        while self
            .slots
            .first_key_value()
            .is_some_and(|(number, _)| slot_end(*number) < horizon)
        {
            self.drop_oldest();
        }
    }

    /// Moves the boundary of ahead entries to `now_ms`: the slots it passes stop
    /// counting as ahead (each slot once).
    fn catch_up(&mut self, now_ms: i64) {
        let boundary = slot_of(now_ms.saturating_add(AHEAD_MS));
        if boundary <= self.ahead_after {
            return;
        }
        let passed: usize = self
            .slots
            .range(self.ahead_after.saturating_add(1)..=boundary)
            .map(|(_, slot)| slot.len())
            .sum();
        self.ahead -= passed;
        self.ahead_after = boundary;
    }

    /// Seals the slots the clock has passed since the last call: each slot once.
    fn sweep(&mut self, now_ms: i64) {
        let past = slot_of(now_ms).saturating_sub(2);
        let from = match self.swept {
            Some(swept) if swept >= past => return,
            Some(swept) => swept.saturating_add(1),
            None => i64::MIN,
        };
        for (_, slot) in self.slots.range_mut(from..=past) {
            slot.seal();
        }
        self.swept = Some(past);
    }

    fn insert(&mut self, ts: i64, key: LocalKey, signer: SignerId) {
        let number = slot_of(ts);
        let swept = self.swept.is_some_and(|swept| number <= swept);
        let slot = self.slots.entry(number).or_default();
        slot.oldest = if slot.len() == 0 {
            key_offset(key)
        } else {
            slot.oldest.min(key_offset(key))
        };
        slot.open.insert(key, signer);
        // A request signed in a slot sealed already: its set is merged again once it
        // holds an eighth of the slot, so each insert pays for a bounded share of a
        // merge.
        if swept && slot.open.len() > slot.sealed.len() / 8 + 64 {
            slot.seal();
        }
        *self.per_signer.entry(signer).or_insert(0) += 1;
        self.len += 1;
        if number > self.ahead_after {
            self.ahead += 1;
        }
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
    /// Signed ahead of the server's clock while the share of such requests is full.
    AheadFull,
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
        self.state.lock().map_or(0, |s| s.len)
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
        let key = local_key(
            std::hash::BuildHasher::hash_one(&self.ids, (signer, nonce, ts)),
            ts,
        );
        let id = std::hash::BuildHasher::hash_one(&self.ids, signer) as SignerId;
        let Ok(mut st) = self.state.lock() else {
            return Err(NonceRefusal::Replay);
        };
        // Forget entries whose request can no longer be accepted (bounded work: each
        // slot leaves once).
        let horizon = (now_ms as i64).saturating_sub((self.limits.window_ms / 2) as i64);
        st.expire(horizon);
        st.sweep(now_ms as i64);
        st.catch_up(now_ms as i64);
        let number = slot_of(ts);
        if st.slots.get(&number).is_some_and(|slot| slot.contains(key)) {
            return Err(NonceRefusal::Replay);
        }
        if st.high_water.is_some_and(|hw| ts <= hw) {
            return Err(NonceRefusal::BelowHighWater);
        }
        if st.per_signer.get(&id).copied().unwrap_or(0) as usize >= self.limits.per_signer {
            return Err(NonceRefusal::SignerFull);
        }
        if slot_of(ts) > st.ahead_after && st.ahead >= (self.limits.max_entries / 4).max(1) {
            return Err(NonceRefusal::AheadFull);
        }
        if st.len >= self.limits.max_entries.max(1) {
            // Full: this request would be the oldest, or the oldest make room.
            if !st.evict_oldest(ts) {
                st.raise(ts);
                return Err(NonceRefusal::BelowHighWater);
            }
        }
        st.insert(ts, key, id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(window_ms: u64, max_entries: usize, per_signer: usize) -> NonceCache {
        NonceCache::new(NonceCacheLimits {
            window_ms,
            max_entries,
            per_signer,
        })
    }

    fn signer(n: u8) -> SignerKey {
        [n; 32]
    }

    /// A clock after every timestamp of the tests that use it, so none is ahead.
    const NOW: u64 = 10_000;

    #[test]
    fn a_nonce_is_accepted_once_while_its_request_is_valid() {
        let c = cache(2000, 50, 10);
        assert!(c.check_and_remember(&signer(1), "n1", 0, 0).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "n1", 0, 1000),
            Err(NonceRefusal::Replay)
        );
        assert!(
            c.check_and_remember(&signer(2), "n1", 0, 0).is_ok(),
            "nonces are per signer"
        );
        assert_eq!(
            c.check_and_remember(&signer(1), "n1", 0, 1255),
            Err(NonceRefusal::Replay),
            "remembered until its slot (0 to 255 ms) is outside the window"
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.check_and_remember(&signer(1), "n1", 0, 1256),
            Err(NonceRefusal::BelowHighWater),
            "forgotten once the request is outside the window, and refused by the mark"
        );
        assert_eq!(c.len(), 0);
    }

    /// The caller's clock may step back (a wall clock, or a request that read it
    /// before another took the lock): what expired stays refused.
    #[test]
    fn a_clock_stepping_back_does_not_bring_back_an_expired_nonce() {
        let c = cache(2000, 50, 10);
        assert!(c.check_and_remember(&signer(1), "n", 255, 255).is_ok());
        assert!(c.check_and_remember(&signer(2), "x", 1256, 1256).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "n", 255, 1255),
            Err(NonceRefusal::BelowHighWater)
        );
    }

    /// Negative timestamps fall in slots like the others.
    #[test]
    fn negative_timestamps_are_remembered_and_evicted_in_order() {
        let c = cache(1_000_000_000, 2, 10);
        assert!(c.check_and_remember(&signer(1), "a", -300, 0).is_ok());
        assert!(c.check_and_remember(&signer(1), "b", -1, 0).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "b", -1, 0),
            Err(NonceRefusal::Replay)
        );
        assert!(c.check_and_remember(&signer(1), "c", 10, 0).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "a", -300, 0),
            Err(NonceRefusal::BelowHighWater)
        );
        assert_eq!(
            c.check_and_remember(&signer(1), "b", -1, 0),
            Err(NonceRefusal::Replay)
        );
        assert_eq!(
            c.check_and_remember(&signer(1), "d", -299, 0),
            Err(NonceRefusal::BelowHighWater),
            "older than every live entry of a full cache"
        );
    }

    /// The timestamp is signed: a replay carries the same one.
    #[test]
    fn the_same_nonce_under_another_timestamp_is_another_request() {
        let c = cache(600_000, 50, 10);
        assert!(c.check_and_remember(&signer(1), "n", 1000, 1000).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "n", 1000, 1000),
            Err(NonceRefusal::Replay)
        );
        assert!(c.check_and_remember(&signer(1), "n", 1001, 1001).is_ok());
        assert_eq!(c.len(), 2);
    }

    /// A full cache evicts the oldest request timestamps first, whatever the arrival
    /// order and whichever slots they fall in; expiry drops the slots entirely before
    /// the horizon.
    #[test]
    fn eviction_and_expiry_follow_request_timestamps() {
        let c = cache(1_000_000_000, 4, 100);
        // Slots of 256 ms: 3000 is in slot 11, 10 in 0, 2050 in 8, 1500 in 5.
        for (nonce, ts) in [("a", 3000), ("b", 10), ("c", 2050), ("d", 1500)] {
            assert!(c.check_and_remember(&signer(1), nonce, ts, NOW).is_ok());
        }
        assert!(c.check_and_remember(&signer(1), "e", 4000, NOW).is_ok());
        assert!(c.check_and_remember(&signer(1), "f", 5000, NOW).is_ok());
        assert_eq!(c.len(), 4);
        for (held, ts) in [("a", 3000), ("c", 2050), ("e", 4000), ("f", 5000)] {
            assert_eq!(
                c.check_and_remember(&signer(1), held, ts, NOW),
                Err(NonceRefusal::Replay),
                "{held}"
            );
        }
        for (evicted, ts) in [("d", 1500), ("b", 10), ("x", 2049)] {
            assert_eq!(
                c.check_and_remember(&signer(1), evicted, ts, NOW),
                Err(NonceRefusal::BelowHighWater),
                "{evicted}: b (10) and d (1500) were the oldest, c (2050) is now"
            );
        }
        assert_eq!(c.len(), 4);

        // Within one slot (2048 to 2303 ms) too: a flood that fills the cache inside
        // a slot locks out nobody whose clock is current.
        let c = cache(1_000_000_000, 4, 100);
        for (nonce, ts) in [("p", 2100), ("q", 2060), ("r", 2200), ("s", 2150)] {
            assert!(c.check_and_remember(&signer(1), nonce, ts, NOW).is_ok());
        }
        assert!(c.check_and_remember(&signer(1), "t", 2300, NOW).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "q", 2060, NOW),
            Err(NonceRefusal::BelowHighWater)
        );
        for (held, ts) in [("p", 2100), ("r", 2200), ("s", 2150), ("t", 2300)] {
            assert_eq!(
                c.check_and_remember(&signer(1), held, ts, NOW),
                Err(NonceRefusal::Replay),
                "{held}"
            );
        }
        assert_eq!(
            c.check_and_remember(&signer(1), "u", 2099, NOW),
            Err(NonceRefusal::BelowHighWater),
            "older than every live entry"
        );
        assert!(c.check_and_remember(&signer(1), "v", 2101, NOW).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "p", 2100, NOW),
            Err(NonceRefusal::BelowHighWater)
        );

        // Eviction takes at least a sixteenth of the slot at once.
        let c = cache(1_000_000_000, 64, 1000);
        for i in 0..64 {
            assert!(
                c.check_and_remember(&signer(1), &format!("n{i}"), i, NOW)
                    .is_ok()
            );
        }
        assert!(c.check_and_remember(&signer(1), "new", 100, NOW).is_ok());
        assert_eq!(c.len(), 61);
        assert_eq!(
            c.check_and_remember(&signer(1), "n3", 3, NOW),
            Err(NonceRefusal::BelowHighWater)
        );
        assert_eq!(
            c.check_and_remember(&signer(1), "n4", 4, NOW),
            Err(NonceRefusal::Replay)
        );

        let c = cache(2000, 50, 10); // a 2 s window: the horizon is now - 1 s
        for (nonce, ts) in [("w", 100), ("x", 1500), ("y", 1100), ("z", 2100)] {
            assert!(c.check_and_remember(&signer(2), nonce, ts, 0).is_ok());
        }
        assert!(
            c.check_and_remember(&signer(2), "fresh", 2350, 2400)
                .is_ok()
        );
        assert_eq!(c.len(), 3, "w (slot 0) and y (slot 4) expired at 2400");
        assert_eq!(
            c.check_and_remember(&signer(2), "x", 1500, 2400),
            Err(NonceRefusal::Replay),
            "x's slot 5 ends at 1535, after the horizon"
        );
        assert_eq!(
            c.check_and_remember(&signer(2), "y", 1100, 2400),
            Err(NonceRefusal::BelowHighWater),
            "expired: below the mark"
        );
    }

    /// An eviction in the slot of the incoming request stops before its timestamp,
    /// even when that leaves less than a sixteenth of the slot evicted.
    #[test]
    fn eviction_never_reaches_the_incoming_request() {
        const S: i64 = 10 * 256; // a slot's start
        let c = cache(1_000_000_000, 32, 100);
        assert!(c.check_and_remember(&signer(1), "first", S, NOW).is_ok());
        for i in 0..31 {
            assert!(
                c.check_and_remember(&signer(1), &format!("n{i}"), S + 200, NOW)
                    .is_ok()
            );
        }
        assert!(
            c.check_and_remember(&signer(1), "mid", S + 100, NOW)
                .is_ok()
        );
        assert_eq!(c.len(), 32);
        assert_eq!(
            c.check_and_remember(&signer(1), "x", S + 99, NOW),
            Err(NonceRefusal::BelowHighWater)
        );
        assert!(
            c.check_and_remember(&signer(1), "later", S + 150, NOW)
                .is_ok(),
            "the mark stayed below 150"
        );
        assert_eq!(
            c.check_and_remember(&signer(1), "n0", S + 200, NOW),
            Err(NonceRefusal::Replay)
        );
        // At offset 0 of the oldest slot nothing is older: refused.
        let c = cache(1_000_000_000, 2, 100);
        assert!(c.check_and_remember(&signer(1), "a", S, NOW).is_ok());
        assert!(c.check_and_remember(&signer(1), "b", S + 5, NOW).is_ok());
        assert_eq!(
            c.check_and_remember(&signer(1), "c", S, NOW),
            Err(NonceRefusal::BelowHighWater)
        );
        assert_eq!(c.len(), 2);
    }

    /// Sealed entries give their signers' shares back when evicted, each to its own
    /// signer.
    #[test]
    fn sealed_entries_give_back_their_own_signers_shares() {
        let c = cache(1_000_000_000, 16, 100);
        assert!(c.check_and_remember(&signer(1), "a", 0, 0).is_ok());
        for i in 0..15 {
            assert!(
                c.check_and_remember(&signer(2), &format!("b{i}"), 200, 0)
                    .is_ok()
            );
        }
        // The clock moves on: slot 0 is sealed, then the cache is full and evicts a.
        assert!(c.check_and_remember(&signer(3), "c", 900, 1000).is_ok());
        let st = c.state.lock().unwrap();
        assert_eq!(st.slots[&0].sealed.len(), 15);
        let id = |n: u8| std::hash::BuildHasher::hash_one(&c.ids, signer(n)) as SignerId;
        assert_eq!(st.per_signer.get(&id(1)), None);
        assert_eq!(st.per_signer.get(&id(2)), Some(&15));
        assert_eq!(st.per_signer.get(&id(3)), Some(&1));
    }

    /// An ahead slot that expires before the boundary passes it leaves the count.
    #[test]
    fn an_expired_ahead_slot_leaves_the_ahead_count() {
        let c = cache(4000, 8, 100);
        assert!(c.check_and_remember(&signer(1), "a", 1500, 0).is_ok());
        assert!(
            c.check_and_remember(&signer(2), "b", 11_500, 10_000)
                .is_ok()
        );
        assert!(
            c.check_and_remember(&signer(3), "c", 11_600, 10_000)
                .is_ok()
        );
        assert_eq!(c.state.lock().unwrap().ahead, 2);
    }

    /// Requests signed far ahead of the clock would be newer than every current
    /// request; they get a quarter of the cache, so a flood of them cannot fill it.
    #[test]
    fn a_flood_signed_ahead_of_the_clock_locks_out_nobody() {
        let now = 100_000;
        let c = cache(600_000, 8, 1);
        let key = |n: u32| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_le_bytes());
            key
        };
        let ahead = (0..20)
            .filter(|n| {
                c.check_and_remember(&key(*n), "f", now + 290_000, now as u64)
                    .is_ok()
            })
            .count();
        assert_eq!(ahead, 2, "a quarter of 8");
        assert_eq!(
            c.check_and_remember(&key(99), "f", now + 2000, now as u64),
            Err(NonceRefusal::AheadFull)
        );
        // Current requests keep being served, evicting each other oldest first.
        for t in 0..100 {
            assert!(
                c.check_and_remember(&key(1000 + t), "h", now + i64::from(t), now as u64 + 1)
                    .is_ok(),
                "{t}"
            );
        }
        assert_eq!(c.len(), 8);
        // A client whose clock is a little fast is not ahead.
        assert!(
            c.check_and_remember(&key(5000), "s", now + 500, now as u64 + 1)
                .is_ok()
        );
        // Once the clock has moved on, those entries are current and the share is
        // free again.
        let later = (now + 289_000) as u64;
        assert!(
            c.check_and_remember(&key(6000), "f", now + 295_000, later)
                .is_ok()
        );
        assert_eq!(c.state.lock().unwrap().ahead, 1);
    }

    /// Evicted entries give their signers' shares back at once, so the counts never
    /// outgrow the live entries however a flood refills the oldest slot.
    #[test]
    fn evicted_entries_give_back_their_signers_shares() {
        const S: i64 = 10 * 256;
        let c = cache(1_000_000_000, 8, 100);
        let mut n = 0u32;
        let mut fresh = |ts: i64| {
            n += 1;
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_le_bytes());
            c.check_and_remember(&key, "n", ts, NOW)
        };
        assert!(fresh(S + 255).is_ok());
        for offset in 0..200 {
            for _ in 0..8 {
                let _ = fresh(S + offset);
            }
        }
        let st = c.state.lock().unwrap();
        assert_eq!(st.len, 8);
        assert!(st.per_signer.len() <= 8, "{}", st.per_signer.len());
        assert_eq!(st.per_signer.values().sum::<u32>(), 8);
    }

    /// Slots the clock has passed are sealed into sorted arrays; they still refuse
    /// their replays, and take requests signed earlier than they arrive.
    #[test]
    fn sealed_slots_refuse_replays_and_take_late_requests() {
        let c = cache(600_000, 10_000, 10_000);
        for i in 0..300i64 {
            let ts = 10 * i;
            assert!(
                c.check_and_remember(&signer(1), &format!("n{i}"), ts, ts as u64)
                    .is_ok()
            );
        }
        // The clock moves on: every slot so far is sealed at the next request.
        assert!(
            c.check_and_remember(&signer(1), "now", 10_000, 10_000)
                .is_ok()
        );
        {
            let st = c.state.lock().unwrap();
            let slot = &st.slots[&0];
            assert_eq!((slot.sealed.len(), slot.open.len()), (26, 0));
        }
        for i in 0..300i64 {
            assert_eq!(
                c.check_and_remember(&signer(1), &format!("n{i}"), 10 * i, 10_000),
                Err(NonceRefusal::Replay),
                "n{i}"
            );
        }
        // 200 requests signed in slot 0 arrive late: the slot's set is merged into
        // its array once it holds more than 64 + an eighth of it.
        for i in 0..200i64 {
            assert!(
                c.check_and_remember(&signer(2), &format!("late{i}"), i, 10_000)
                    .is_ok()
            );
        }
        {
            let st = c.state.lock().unwrap();
            let slot = &st.slots[&0];
            assert_eq!(slot.len(), 226);
            assert!(slot.sealed.len() > 26 && slot.open.len() < 100);
        }
        for i in 0..200i64 {
            assert_eq!(
                c.check_and_remember(&signer(2), &format!("late{i}"), i, 10_000),
                Err(NonceRefusal::Replay),
                "late{i}"
            );
        }
        assert_eq!(c.len(), 501);
    }

    #[test]
    fn a_flood_evicts_the_oldest_and_locks_out_nobody_else() {
        let c = cache(1_000_000, 50, 10);
        // 20 self-issued keys x 10 nonces, each request signed 100 ms later.
        let mut ts = 0;
        for s in 0..20 {
            for n in 0..10 {
                ts += 100;
                assert!(
                    c.check_and_remember(&signer(s), &format!("n{n}"), ts, ts as u64)
                        .is_ok()
                );
            }
        }
        assert!(c.len() <= 50, "bounded");
        // A user whose clock is current is served.
        assert!(
            c.check_and_remember(&signer(99), "fresh", ts, ts as u64)
                .is_ok()
        );
        // An evicted nonce cannot be replayed: its timestamp is below the mark.
        assert_eq!(
            c.check_and_remember(&signer(0), "n0", 100, ts as u64),
            Err(NonceRefusal::BelowHighWater)
        );
        // A nonce still held is refused as a replay.
        assert_eq!(
            c.check_and_remember(&signer(19), "n9", 20_000, ts as u64),
            Err(NonceRefusal::Replay)
        );
        // One signer cannot hold more than its share.
        let c = cache(2000, 50, 10);
        let ok = (0..100)
            .filter(|n| {
                c.check_and_remember(&signer(7), &format!("{n}"), 10, 10)
                    .is_ok()
            })
            .count();
        assert_eq!(ok, 10);
        assert!(c.check_and_remember(&signer(8), "0", 10, 10).is_ok());
        // Its share comes back when its slot expires.
        assert!(
            c.check_and_remember(&signer(7), "later", 1300, 1300)
                .is_ok()
        );
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
        // 20 requests per ms, as from a busy server's clients, each arriving 50 ms
        // after it was signed.
        let n = 200_000u64;
        for i in 0..n {
            let signer = [(i % 64) as u8; 32];
            let ts = i / 20;
            c.check_and_remember(&signer, &format!("{i:032x}"), ts as i64, ts + 50)
                .unwrap();
        }
        let per_nonce = resident_kib().saturating_sub(before) * 1024 / n;
        eprintln!("{per_nonce} bytes per live nonce");
        assert!(per_nonce < 20, "{per_nonce} bytes per live nonce");
    }
}
