//! What a node remembers of the changes it heard, for streams that reconnect with
//! `Last-Event-ID`: each namespace's last changes apart. A node remembers
//! [`LiveLimits::replay`](super::LiveLimits::replay) changes in all; when it must
//! forget one, it is the oldest of the namespace holding the most (of two holding
//! as many, the one whose oldest is older). A namespace that writes much so pushes
//! out its own history, not a quieter one's, and whether a stream can be told
//! everything it missed depends on its own namespace's changes: another tenant's
//! burst does not make its clients pull (unless the burst pushed out every change
//! of a namespace sharing its floor: one in [`GONE_FLOORS`]).

use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// The last changes a node heard, by namespace, and what it no longer holds.
#[derive(Debug)]
pub(super) struct Heard {
    /// This run of the node (random at start), in every id it gives.
    pub(super) epoch: Arc<str>,
    /// True when other nodes' changes reach this one (a feed): an id another
    /// node gave can be resumed from by time.
    pub(super) across: bool,
    /// Each namespace's last changes.
    rings: HashMap<Arc<str>, Ring>,
    /// The namespaces by the changes they hold, then by the age of their oldest:
    /// the last gives one up first.
    by_size: BTreeSet<(usize, Reverse<u64>, Arc<str>)>,
    /// Changes held in all.
    held: usize,
    /// The latest time given to a frame (times never go back, whatever the clock).
    newest_ms: u64,
    /// The number of the last change heard.
    last: u64,
    /// Any change numbered up to `floor`, or heard up to `floor_ms`, may be gone
    /// (changes lost on the way, or none kept).
    floor: u64,
    floor_ms: u64,
    /// The same for namespaces whose every change was pushed out (they hold no
    /// ring), by the namespace's hash ([`GONE_FLOORS`] of them): what a namespace
    /// without a ring may have lost, and what a new ring starts from.
    gone: Vec<(u64, u64)>,
}

/// How many floors namespaces without a ring share (by their name's hash): a
/// namespace pushed out entirely makes the others of its floor pull, not all.
const GONE_FLOORS: usize = 256;

/// One namespace's last changes, oldest first, and what it no longer holds.
#[derive(Debug)]
struct Ring {
    /// Its namespace (the map's key, shared).
    name: Arc<str>,
    frames: VecDeque<Frame>,
    /// This namespace's changes numbered up to `floor` (heard up to `floor_ms`)
    /// may be gone.
    floor: u64,
    floor_ms: u64,
}

/// A change as its subscribers get it.
#[derive(Debug)]
struct Frame {
    seq: u64,
    at_ms: u64,
    /// The place's hash, compared before the place itself.
    key: u64,
    place: Arc<str>,
    bytes: Bytes,
}

/// A place's hash, to find a subscription's places among many frames quickly.
fn key(place: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    place.hash(&mut hasher);
    hasher.finish()
}

/// The namespace of a place (`bus::place`: namespace, generation, key).
fn namespace_of(place: &str) -> &str {
    place.split('\u{0}').next().unwrap_or_default()
}

/// Which of the [`GONE_FLOORS`] a namespace shares.
fn gone_floor(namespace: &str) -> usize {
    (key(namespace) % GONE_FLOORS as u64) as usize
}

/// Random bytes naming a run of a node.
const EPOCH_BYTES: usize = 8;

/// A stream resumed from another node's id is replayed what this node heard from
/// this long before that id's time: a change reaches the nodes within it (through
/// the feed, clocks in step), so what the first node sent after the id reached this
/// one after the id's time less this. A few changes may come twice; none is missed.
pub(crate) const ACROSS_NODES: u64 = 5_000;

/// Where a reconnecting stream was: the `Last-Event-ID` it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(super) at_ms: u64,
    pub(super) seq: u64,
    pub(super) epoch: String,
}

impl Position {
    /// Reads an id this bus gave (`<ms>-<seq>-<epoch>`); `None` for anything else.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let mut parts = id.splitn(3, '-');
        let at_ms = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let epoch = parts.next()?;
        let hex = epoch.len() == EPOCH_BYTES * 2 && epoch.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| Self {
            at_ms,
            seq,
            epoch: epoch.to_owned(),
        })
    }
}

impl Heard {
    pub(super) fn new(now_ms: u64) -> Self {
        let mut epoch = [0u8; EPOCH_BYTES];
        if getrandom::fill(&mut epoch).is_err() {
            // Without randomness, the time and the process: still another run.
            let mixed = now_ms ^ (u64::from(std::process::id()) << 40);
            epoch = mixed.to_be_bytes();
        }
        Self {
            epoch: hex::encode(epoch).into(),
            across: false,
            rings: HashMap::new(),
            by_size: BTreeSet::new(),
            held: 0,
            newest_ms: now_ms,
            last: 0,
            floor: 0,
            floor_ms: now_ms,
            gone: vec![(0, now_ms); GONE_FLOORS],
        }
    }

    /// The time of a frame heard at `now_ms`: never before an earlier one's.
    fn time(&mut self, now_ms: u64) -> u64 {
        self.newest_ms = self.newest_ms.max(now_ms);
        self.newest_ms
    }

    /// The id of the last change heard, at `now_ms`.
    pub(super) fn position(&mut self, now_ms: u64) -> String {
        let at = self.time(now_ms);
        format!("{at}-{}-{}", self.last, self.epoch)
    }

    /// Forgets every change heard (some may be missing): a stream resumed from
    /// before now is told to pull.
    pub(super) fn forget(&mut self, now_ms: u64) {
        self.rings.clear();
        self.by_size.clear();
        self.held = 0;
        // A number for the gap: every position given before it is behind it.
        self.last += 1;
        self.floor = self.last;
        self.floor_ms = self.time(now_ms);
    }

    /// Numbers the change of `place` whose `data:` is `data`, and remembers up to
    /// `keep` changes in all: the frame every listener gets.
    pub(super) fn hear(&mut self, place: &Arc<str>, data: &str, now_ms: u64, keep: usize) -> Bytes {
        let at_ms = self.time(now_ms);
        self.last += 1;
        // One frame, shared by every listener and the memory of the node.
        let bytes = Bytes::from(format!(
            "id: {at_ms}-{}-{}\ndata: {data}\n\n",
            self.last, self.epoch
        ));
        if keep == 0 {
            self.floor = self.last;
            self.floor_ms = at_ms;
            return bytes;
        }
        while self.held >= keep {
            self.push_out_one();
        }
        let namespace = namespace_of(place);
        if !self.rings.contains_key(namespace) {
            // A namespace new here, or back: it may have lost what a namespace
            // pushed out entirely (of its floor) lost.
            let (floor, floor_ms) = self.gone[gone_floor(namespace)];
            let name: Arc<str> = Arc::from(namespace);
            let ring = Ring {
                name: name.clone(),
                frames: VecDeque::new(),
                floor,
                floor_ms,
            };
            self.rings.insert(name, ring);
        }
        let Some(ring) = self.rings.get_mut(namespace) else {
            debug_assert!(false, "a ring was just made");
            return bytes;
        };
        let before = ring.frames.len();
        if let Some(oldest) = ring.frames.front() {
            self.by_size
                .remove(&(before, Reverse(oldest.seq), ring.name.clone()));
        }
        ring.frames.push_back(Frame {
            seq: self.last,
            at_ms,
            key: key(place),
            place: place.clone(),
            bytes: bytes.clone(),
        });
        let oldest = ring.frames.front().map_or(self.last, |f| f.seq);
        self.by_size
            .insert((before + 1, Reverse(oldest), ring.name.clone()));
        self.held += 1;
        bytes
    }

    /// Forgets the oldest change of the namespace holding the most.
    fn push_out_one(&mut self) {
        let Some((size, _, namespace)) = self.by_size.pop_last() else {
            debug_assert_eq!(self.held, 0, "every change held is in a ring");
            self.held = 0;
            return;
        };
        let Some(ring) = self.rings.get_mut(&namespace) else {
            debug_assert!(false, "a namespace counted holds a ring");
            return;
        };
        if let Some(old) = ring.frames.pop_front() {
            ring.floor = old.seq;
            ring.floor_ms = old.at_ms;
            self.held -= 1;
        }
        match ring.frames.front() {
            Some(oldest) => {
                let oldest = oldest.seq;
                // What a burst grew is given back as the ring shrinks.
                if ring.frames.capacity() > 64 && ring.frames.len() < ring.frames.capacity() / 4 {
                    ring.frames.shrink_to(ring.frames.len() * 2);
                }
                self.by_size.insert((size - 1, Reverse(oldest), namespace));
            }
            None => {
                // Its floor stays with the namespaces of its hash that hold no ring.
                let gone = &mut self.gone[gone_floor(&namespace)];
                *gone = (gone.0.max(ring.floor), gone.1.max(ring.floor_ms));
                self.rings.remove(&namespace);
            }
        }
    }

    /// The frames after `since` of `places` (sorted), at most `max`, in the order
    /// they were heard; `None` when this node cannot tell them all.
    pub(super) fn since(
        &self,
        since: &Position,
        places: &[Arc<str>],
        max: usize,
    ) -> Option<Vec<Bytes>> {
        let same_run = since.epoch == *self.epoch;
        if same_run && since.seq > self.last {
            return None;
        }
        // Another node's id: only when this one hears the others, and from a time
        // it has reached (an id from the future, or from clocks far apart, cannot
        // be matched).
        let from_ms = if same_run {
            None
        } else {
            let from_ms = since.at_ms.checked_sub(ACROSS_NODES)?;
            if !self.across || from_ms > self.newest_ms {
                return None;
            }
            Some(from_ms)
        };
        let mut keys: Vec<(u64, &str)> = places.iter().map(|p| (key(p), &**p)).collect();
        keys.sort_unstable();
        let mut namespaces: Vec<&str> = places.iter().map(|p| namespace_of(p)).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut missed = Vec::new();
        for namespace in namespaces {
            let ring = self.rings.get(namespace);
            let gone = self.gone[gone_floor(namespace)];
            let (floor, floor_ms) = ring.map_or(gone, |r| (r.floor, r.floor_ms));
            let (floor, floor_ms) = (floor.max(self.floor), floor_ms.max(self.floor_ms));
            match from_ms {
                None if since.seq < floor => return None,
                Some(from_ms) if from_ms <= floor_ms => return None,
                _ => {}
            }
            let Some(ring) = ring else { continue };
            let from = match from_ms {
                None => ring.frames.partition_point(|f| f.seq <= since.seq),
                Some(from_ms) => ring.frames.partition_point(|f| f.at_ms < from_ms),
            };
            for frame in ring.frames.range(from..) {
                let at = keys.partition_point(|(k, _)| *k < frame.key);
                let named = keys[at..]
                    .iter()
                    .take_while(|(k, _)| *k == frame.key)
                    .any(|(_, place)| *place == &*frame.place);
                if named {
                    if missed.len() == max {
                        return None;
                    }
                    missed.push((frame.seq, frame.bytes.clone()));
                }
            }
        }
        // Several namespaces' changes (a root stream naming several): in order.
        missed.sort_unstable_by_key(|(seq, _)| *seq);
        Some(missed.into_iter().map(|(_, bytes)| bytes).collect())
    }

    /// The times of the changes remembered, in the order heard (tests).
    #[cfg(test)]
    pub(super) fn times(&self) -> Vec<u64> {
        let mut frames: Vec<&Frame> = self.rings.values().flat_map(|r| &r.frames).collect();
        frames.sort_unstable_by_key(|f| f.seq);
        frames.iter().map(|f| f.at_ms).collect()
    }

    /// The frame of the last change remembered (tests).
    #[cfg(test)]
    pub(super) fn last_frame(&self) -> Option<Bytes> {
        self.rings
            .values()
            .filter_map(|r| r.frames.back())
            .max_by_key(|f| f.seq)
            .map(|f| f.bytes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document's place in `namespace` (as `bus::place` makes it).
    fn place(namespace: &str, _: &str, key: &str) -> Arc<str> {
        format!("{namespace}\u{0}\u{0}{key}").into()
    }

    /// Where a stream that heard up to change `seq` of this run is.
    fn at(heard: &Heard, seq: u64) -> Position {
        Position {
            at_ms: 0,
            seq,
            epoch: heard.epoch.to_string(),
        }
    }

    /// The `data:` of frames.
    fn data(frames: Option<Vec<Bytes>>) -> Option<Vec<String>> {
        frames.map(|frames| {
            let text = |f: &Bytes| String::from_utf8_lossy(f).into_owned();
            let data = |t: String| {
                t.lines()
                    .find_map(|l| l.strip_prefix("data: ").map(str::to_owned))
            };
            frames.iter().map(text).filter_map(data).collect()
        })
    }

    #[test]
    fn a_namespace_that_writes_much_pushes_out_its_own_history_not_a_quieter_ones() {
        let mut heard = Heard::new(0);
        let (quiet, noisy) = (place("quiet", "", "doc"), place("noisy", "", "doc"));
        heard.hear(&quiet, "q1", 1, 8);
        for n in 0..20 {
            heard.hear(&noisy, &format!("n{n}"), 2, 8);
            if n == 10 {
                heard.hear(&quiet, "q2", 2, 8);
            }
        }
        // The quiet namespace's stream, away since the start, is told all it missed.
        let missed = heard.since(&at(&heard, 0), std::slice::from_ref(&quiet), 256);
        assert_eq!(data(missed), Some(vec!["q1".to_owned(), "q2".to_owned()]));
        // The noisy one's, away as long, lost changes: pull.
        assert_eq!(
            heard.since(&at(&heard, 0), std::slice::from_ref(&noisy), 256),
            None
        );
        // Its last six are still told (eight held in all, two of them the quiet one's).
        let recent = heard.since(&at(&heard, 16), std::slice::from_ref(&noisy), 256);
        assert_eq!(data(recent).map(|d| d.len()), Some(6));
    }

    #[test]
    fn a_namespace_back_after_losing_everything_cannot_claim_a_full_history() {
        let mut heard = Heard::new(0);
        let (q, n) = (place("q", "", "doc"), place("n", "", "doc"));
        // One change held in all: each pushes the last one out, its namespace's only.
        heard.hear(&q, "q1", 1, 1);
        heard.hear(&n, "n1", 1, 1);
        heard.hear(&q, "q2", 1, 1);
        // From before q1 (lost): pull, not just q2.
        assert_eq!(
            heard.since(&at(&heard, 0), std::slice::from_ref(&q), 256),
            None
        );
        // From after everything lost: q2.
        let missed = heard.since(&at(&heard, 2), std::slice::from_ref(&q), 256);
        assert_eq!(data(missed), Some(vec!["q2".to_owned()]));
    }

    #[test]
    fn a_stream_naming_places_of_several_namespaces_hears_them_in_order() {
        let mut heard = Heard::new(0);
        let (a, b) = (place("", "", "a"), place("t1", "", "b"));
        for n in 0..3 {
            heard.hear(&a, &format!("a{n}"), 1, 16);
            heard.hear(&b, &format!("b{n}"), 1, 16);
        }
        let missed = heard.since(&at(&heard, 1), &[a, b], 256);
        let order = ["b0", "a1", "b1", "a2", "b2"].map(str::to_owned).to_vec();
        assert_eq!(data(missed), Some(order));
    }

    #[test]
    fn of_two_namespaces_holding_as_many_the_one_whose_oldest_is_older_forgets() {
        let mut heard = Heard::new(0);
        let (a, z, b) = (
            place("a", "", "d"),
            place("z", "", "d"),
            place("b", "", "d"),
        );
        heard.hear(&a, "a1", 1, 2);
        heard.hear(&z, "z2", 1, 2);
        heard.hear(&b, "b3", 1, 2);
        // a1, the oldest, went: z's stream from before z2 is told it.
        let missed = heard.since(&at(&heard, 1), std::slice::from_ref(&z), 256);
        assert_eq!(data(missed), Some(vec!["z2".to_owned()]));
        assert_eq!(
            heard.since(&at(&heard, 0), std::slice::from_ref(&a), 256),
            None
        );
    }

    /// A reproducible stream of numbers (xorshift).
    struct Numbers(u64);

    impl Numbers {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The numbers (`seq`) of frames.
    fn seqs(frames: &[Bytes]) -> Vec<u64> {
        let seq = |f: &Bytes| {
            let id = String::from_utf8_lossy(f)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            id.split('-').nth(1).unwrap_or_default().parse().unwrap()
        };
        frames.iter().map(seq).collect()
    }

    /// The bookkeeping agrees with the rings: every change held counted once, each
    /// namespace at its size and oldest, no empty ring, frames in order above the
    /// floors.
    fn consistent(heard: &Heard) {
        let held: usize = heard.rings.values().map(|r| r.frames.len()).sum();
        assert_eq!(heard.held, held);
        let by_size: BTreeSet<(usize, Reverse<u64>, Arc<str>)> = heard
            .rings
            .values()
            .map(|r| (r.frames.len(), Reverse(r.frames[0].seq), r.name.clone()))
            .collect();
        assert_eq!(heard.by_size, by_size);
        for ring in heard.rings.values() {
            let in_order = ring.frames.iter().zip(ring.frames.iter().skip(1));
            assert!(
                in_order
                    .into_iter()
                    .all(|(a, b)| a.seq < b.seq && a.at_ms <= b.at_ms)
            );
            assert!(
                ring.frames
                    .iter()
                    .all(|f| f.seq > ring.floor && f.at_ms >= ring.floor_ms)
            );
        }
    }

    /// Random changes to a few namespaces, gaps (`forget`), a clock stepping back,
    /// and resumes by number and by time (another node's id), against a log of
    /// everything heard: a resume told anything is told exactly what it missed.
    #[test]
    fn a_resume_is_told_exactly_what_it_missed_or_to_pull_whatever_happened() {
        let (mut told, mut asked) = (0, 0);
        for seed in 1..400u64 {
            let mut numbers = Numbers(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let start = 10_000;
            let mut heard = Heard::new(start);
            heard.across = true;
            let namespaces = 1 + numbers.below(5);
            let places: Vec<Arc<str>> = (0..namespaces * 2)
                .map(|n| place(&format!("ns{}", n / 2), "", &format!("k{n}")))
                .collect();
            let (mut log, mut gaps) = (Vec::new(), Vec::new());
            let (mut now, keep) = (start, 1 + numbers.below(8) as usize);
            for _ in 0..200 {
                match numbers.below(100) {
                    0 => {
                        heard.forget(now);
                        gaps.push((heard.last, heard.newest_ms));
                    }
                    1..=4 => now = now.saturating_sub(numbers.below(3_000)),
                    5..=59 => {
                        // Most changes to the first namespace.
                        let n = if numbers.below(3) == 0 {
                            numbers.below(places.len() as u64)
                        } else {
                            numbers.below(2)
                        };
                        let place = places[n as usize].clone();
                        heard.hear(&place, "x", now, keep);
                        log.push((heard.last, heard.newest_ms, place));
                        now += numbers.below(4_000);
                    }
                    _ => {
                        // A stream names one place at least.
                        let first = numbers.below(places.len() as u64) as usize;
                        let asks: Vec<Arc<str>> = (places.iter().enumerate())
                            .filter(|(n, _)| *n == first || numbers.below(3) == 0)
                            .map(|(_, place)| place.clone())
                            .collect();
                        let by_time = numbers.below(2) == 0;
                        let position = if by_time {
                            let at_ms = numbers.below(heard.newest_ms + 10_000);
                            let epoch = "f".repeat(16);
                            Position {
                                at_ms,
                                seq: 0,
                                epoch,
                            }
                        } else {
                            at(&heard, numbers.below(heard.last + 3))
                        };
                        asked += 1;
                        let Some(frames) = heard.since(&position, &asks, 256) else {
                            continue;
                        };
                        told += 1;
                        let from = if by_time {
                            position.at_ms - ACROSS_NODES
                        } else {
                            position.seq
                        };
                        let gapless = gaps
                            .iter()
                            .all(|&(seq, at)| if by_time { at < from } else { seq <= from });
                        assert!(gapless, "seed {seed}: told across a gap");
                        let missed: Vec<u64> = log
                            .iter()
                            .filter(|(seq, at, _)| if by_time { *at >= from } else { *seq > from })
                            .filter(|e| asks.contains(&e.2))
                            .map(|e| e.0)
                            .collect();
                        assert_eq!(seqs(&frames), missed, "seed {seed}");
                    }
                }
                consistent(&heard);
            }
        }
        // Both answers happen: the test is not passed by pulling always.
        assert!(told > asked / 20 && told < asked, "{told} of {asked}");
    }
}
