//! Live changes on one node: the in-process bus behind `GET /events`.
//!
//! Every accepted write is published under its document's place (namespace,
//! generation, key); a subscription lists the places it was authorised to read and
//! receives one frame per write to any of them: which document changed and its new
//! hash, never the data. Each subscriber has a bounded buffer: one that does not keep
//! up is dropped (its stream ends; the client reconnects and pulls), never buffered
//! without bound. Subscriptions are bounded per caller and in all.
//!
//! Every frame carries an SSE `id` (`<ms>-<seq>-<epoch>`: when this node heard
//! the change, its number here, and this node's run). The node remembers the last
//! [`LiveLimits::replay`] changes it heard (its own and, with a feed, the other
//! nodes'): a stream that reconnects with `Last-Event-ID` gets what it missed from
//! them, exactly when it was this node's (the same run), and from a little before
//! its id's time (`heard::ACROSS_NODES`) when it was another node's; past what the node
//! remembers, it gets an `event: pull` frame (pull what you hold).

use super::frames;
use super::heard::Heard;
pub(crate) use super::heard::Position;
use bytes::Bytes;
use starfish_store::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A subscription refused: the node, the caller or the address holds as many
/// as it may (`429`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySubscriptions;

/// Frames a subscriber may have waiting before it is dropped; also the most a
/// reconnecting stream is replayed (further behind, it is told to pull).
pub(crate) const BUFFER: usize = 256;
/// How far the first listener woken moves from one change to the next (a large
/// odd number: the starts spread over any number of listeners).
const WAKE_STRIDE: usize = 2_654_435_761;
/// The most changes a node may be set to remember ([`LiveLimits::replay`]): a
/// resume scans at most this many under the bus's lock.
pub(crate) const MAX_REPLAY: usize = 65_536;

/// How many live-change subscriptions a node holds open at once: in all, per
/// caller, per address, and per namespace. Past any of them a new one gets `429`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveLimits {
    /// Subscriptions on the node (keep it under the accept loop's connection
    /// limit, so streams never take every connection).
    pub total: usize,
    /// Subscriptions one caller (identity, API key, or address when anonymous)
    /// may hold.
    pub per_caller: usize,
    /// Subscriptions from one client address (behind the trusted proxies),
    /// whatever identities it presents: anyone can mint identities.
    pub per_ip: usize,
    /// A namespace's share of the node's subscriptions, unless its limits set
    /// `maxSubscriptions`; `None`: half of `total`.
    pub per_namespace: Option<usize>,
    /// Changes the node remembers for streams that reconnect with
    /// `Last-Event-ID` (about 300 bytes each, plus the document's path; at most
    /// 65,536).
    pub replay: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            total: 10_000,
            per_caller: 8,
            per_ip: 256,
            per_namespace: None,
            replay: 4096,
        }
    }
}

impl LiveLimits {
    /// `total` in all, the other bounds as by default.
    pub fn with_total(total: usize) -> Self {
        Self {
            total,
            ..Self::default()
        }
    }

    /// A namespace's share when its limits do not set one.
    pub(crate) fn namespace_share(&self) -> usize {
        self.per_namespace.unwrap_or(self.total / 2).max(1)
    }
}

/// The subscribers of one node, by the places they listen to.
#[derive(Debug)]
pub(crate) struct Bus {
    state: Mutex<Subscribers>,
    limits: LiveLimits,
    clock: Arc<dyn Clock>,
    /// True once the server is shutting down: every stream ends.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The sender of `stopping` when nobody else holds one (it never turns true).
    _never: Option<tokio::sync::watch::Sender<bool>>,
    /// True when a task of the bus ends every stream at shutdown (then a stream
    /// need not watch `stopping` itself, which costs a lock on a shared list at
    /// each of its frames).
    watched: std::sync::atomic::AtomicBool,
    /// The runtime the streams are written on, when they have one of their own:
    /// a fan-out's listeners are woken from there ([`frames::wake`]).
    wakes_on: Option<tokio::runtime::Handle>,
}

impl Default for Bus {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Self {
            state: Mutex::new(Subscribers::new(&starfish_store::SystemClock)),
            limits: LiveLimits::default(),
            clock: Arc::new(starfish_store::SystemClock),
            stopping: rx,
            _never: Some(tx),
            watched: std::sync::atomic::AtomicBool::new(false),
            wakes_on: None,
        }
    }
}

/// A subscription's places, and the counts it holds a place in.
type Held = (Vec<Arc<str>>, Vec<Arc<str>>);

#[derive(Debug)]
struct Subscribers {
    /// The sending end of each subscription's buffer, by place and subscription.
    /// (A frame travels as an `Arc`: 8 bytes a slot of each subscriber's buffer
    /// rather than a `Bytes`'s 32; a buffer grows as frames wait, and gives the
    /// room back once read: `frames.rs`.)
    by_place: HashMap<Arc<str>, HashMap<u64, frames::Sender>>,
    /// Each subscription's places and the counts it holds a place in (its caller's
    /// and its IP's).
    subs: HashMap<u64, Held>,
    /// Subscriptions per caller (`caller:` keys) and per IP (`ip:` keys).
    held: HashMap<Arc<str>, usize>,
    next: u64,
    /// Changes published: where the waking of the next one starts.
    published: usize,
    /// The changes this node heard last, for streams that reconnect.
    heard: Heard,
    /// The server is shutting down: a new stream ends at once.
    stopped: bool,
}

/// What a stream hears first, before live frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A new stream (no `Last-Event-ID`): its position, nothing else.
    Fresh,
    /// The frames it missed since its `Last-Event-ID` (maybe none).
    Replayed(usize),
    /// It missed more than this node remembers (or its id is not one of ours):
    /// an `event: pull` frame.
    Pull,
}

impl Subscribers {
    fn new(clock: &dyn Clock) -> Self {
        Self {
            by_place: HashMap::new(),
            subs: HashMap::new(),
            held: HashMap::new(),
            next: 0,
            published: 0,
            heard: Heard::new(clock.now_ms()),
            stopped: false,
        }
    }

    fn remove(&mut self, id: u64) {
        let Some((places, counts)) = self.subs.remove(&id) else {
            return;
        };
        for place in places {
            if let Some(listeners) = self.by_place.get_mut(&place) {
                listeners.remove(&id);
                if listeners.is_empty() {
                    self.by_place.remove(&place);
                }
            }
        }
        for key in counts {
            if let Some(n) = self.held.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.held.remove(&key);
                }
            }
        }
    }
}

/// One subscription: `opening` first, then frames arrive on `frames`; dropping it
/// unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    bus: Arc<Bus>,
    id: u64,
    /// What the stream sends first: `: connected`, what it missed (or `event:
    /// pull`), and its position.
    pub(crate) opening: Bytes,
    /// What [`Subscription::opening`] holds.
    pub(crate) opened: Opening,
    pub(crate) frames: frames::Receiver,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.id);
    }
}

/// The place of a document: its namespace (empty at the root), the namespace's
/// generation (a re-created runtime namespace is another place) and its key.
pub(crate) fn place(namespace: &str, generation: &str, key: &str) -> Arc<str> {
    format!("{namespace}\u{0}{generation}\u{0}{key}").into()
}

/// The first bytes of a stream at `position`, with what it missed
/// (`Some(None)`: more than can be told).
fn opening(position: &str, missed: Option<Option<Vec<Bytes>>>) -> (Bytes, Opening) {
    match missed {
        None => (
            Bytes::from(format!(": connected\nid: {position}\n\n")),
            Opening::Fresh,
        ),
        Some(None) => (
            Bytes::from(format!(
                ": connected\n\nevent: pull\nid: {position}\ndata: {{\"pull\":true}}\n\n"
            )),
            Opening::Pull,
        ),
        Some(Some(frames)) => {
            let mut out = b": connected\n\n".to_vec();
            for frame in &frames {
                out.extend_from_slice(frame);
            }
            out.extend_from_slice(format!("id: {position}\n\n").as_bytes());
            (Bytes::from(out), Opening::Replayed(frames.len()))
        }
    }
}

impl Bus {
    /// A bus whose streams end when `stopping` turns true.
    pub(crate) fn new(stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            state: Mutex::new(Subscribers::new(&starfish_store::SystemClock)),
            limits: LiveLimits::default(),
            clock: Arc::new(starfish_store::SystemClock),
            stopping,
            _never: None,
            watched: std::sync::atomic::AtomicBool::new(false),
            wakes_on: None,
        }
    }

    /// This bus waking a fan-out's listeners from `runtime`, the one its streams
    /// are written on.
    pub(crate) fn with_wakes_on(mut self, runtime: Option<tokio::runtime::Handle>) -> Self {
        self.wakes_on = runtime;
        self
    }

    /// This bus with `limits`.
    pub(crate) fn with_limits(mut self, limits: LiveLimits) -> Self {
        self.limits = LiveLimits {
            replay: limits.replay.min(MAX_REPLAY),
            ..limits
        };
        self
    }

    /// This bus hearing other nodes' changes through a feed: a stream resumed
    /// from another node's id is replayed from its time.
    pub(crate) fn across_nodes(self) -> Self {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .heard
            .across = true;
        self
    }

    /// This bus reading time from `clock`.
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let across = self.state.get_mut().is_ok_and(|s| s.heard.across);
        self.state = Mutex::new(Subscribers::new(&*clock));
        if across {
            self = self.across_nodes();
        }
        self.clock = clock;
        self
    }

    /// Its limits.
    pub(crate) fn limits(&self) -> &LiveLimits {
        &self.limits
    }

    /// What a stream must watch to end at shutdown: nothing when the bus ends
    /// its streams itself ([`Bus::end_at_shutdown`]).
    pub(crate) fn stopping(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        let watched = self.watched.load(std::sync::atomic::Ordering::Acquire);
        (!watched).then(|| self.stopping.clone())
    }

    /// Ends every stream, and every one opened later at once, when the server
    /// shuts down: a task on the current runtime waits for it. `false` (streams
    /// then watch for it themselves) outside a runtime.
    pub(crate) fn end_at_shutdown(self: &Arc<Self>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let mut stopping = self.stopping.clone();
        let bus = Arc::downgrade(self);
        runtime.spawn(async move {
            // Err: the sender is gone without a shutdown (the bus itself, dropped).
            if stopping.wait_for(|stop| *stop).await.is_ok() {
                if let Some(bus) = bus.upgrade() {
                    bus.end_for_good();
                }
            }
        });
        self.watched
            .store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// Ends every stream, and refuses the ones to come (they end at once).
    fn end_for_good(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopped = true;
        self.end_all();
    }

    /// Subscribes `caller`, from `ip`, to `places` (each once, however often
    /// named); `namespace` (its name and generation) with its share, when the
    /// places are a namespace's. `resume`: the stream's `Last-Event-ID`, read or
    /// not (`Some(None)`: an id that is not one of ours).
    ///
    /// # Errors
    /// `429 Too many concurrent requests` when the node, the caller, its address or
    /// its namespace holds as many subscriptions as [`LiveLimits`] allows.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        caller: &str,
        ip: &str,
        namespace: Option<(&str, usize)>,
        mut places: Vec<Arc<str>>,
        resume: Option<Option<&Position>>,
    ) -> Result<Subscription, TooManySubscriptions> {
        places.sort_unstable();
        places.dedup();
        let mut counts: Vec<(Arc<str>, usize)> = vec![
            (format!("caller:{caller}").into(), self.limits.per_caller),
            (format!("ip:{ip}").into(), self.limits.per_ip),
        ];
        if let Some((name, share)) = namespace {
            counts.push((format!("ns:{name}").into(), share));
        }
        let now_ms = self.clock.now_ms();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let full = |(key, max): &(Arc<str>, usize)| s.held.get(key).copied().unwrap_or(0) >= *max;
        if s.subs.len() >= self.limits.total || counts.iter().any(full) {
            return Err(TooManySubscriptions);
        }
        // Under the lock that publishing takes: nothing heard between what is
        // replayed and what the buffer gets, nothing twice.
        let missed = resume.map(|since| since.and_then(|p| s.heard.since(p, &places, BUFFER)));
        let position = s.heard.position(now_ms);
        let counts: Vec<Arc<str>> = counts.into_iter().map(|(key, _)| key).collect();
        let (tx, rx) = frames::channel(BUFFER);
        if s.stopped {
            // Shutting down: the stream has its opening, then ends.
            drop(s);
            drop(tx);
            let (opening, opened) = opening(&position, missed);
            return Ok(Subscription {
                bus: self.clone(),
                id: u64::MAX,
                opening,
                opened,
                frames: rx,
            });
        }
        let id = s.next;
        s.next += 1;
        for place in &places {
            s.by_place
                .entry(place.clone())
                .or_default()
                .insert(id, tx.clone());
        }
        for key in &counts {
            *s.held.entry(key.clone()).or_default() += 1;
        }
        s.subs.insert(id, (places, counts));
        drop(s);
        let (opening, opened) = opening(&position, missed);
        Ok(Subscription {
            bus: self.clone(),
            id,
            opening,
            opened,
            frames: rx,
        })
    }

    /// Numbers the change of `place` whose `data:` is `data`, remembers it, and
    /// hands it to every subscriber of `place`; one whose buffer is full is dropped.
    pub(crate) fn publish(&self, place: Arc<str>, data: &str) {
        let now_ms = self.clock.now_ms();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = Arc::new(s.heard.hear(&place, data, now_ms, self.limits.replay));
        let Some(listeners) = s.by_place.get(&place) else {
            return;
        };
        // Queued under the lock (nothing replayed twice or missed), woken after it.
        let mut to_wake = Vec::with_capacity(listeners.len());
        let mut slow = Vec::new();
        for (id, tx) in listeners {
            match tx.push(bytes.clone()) {
                Ok(wake) => to_wake.extend(wake),
                Err(frames::Full) => slow.push(*id),
            }
        }
        for id in slow {
            s.remove(id);
        }
        // Woken from a different one each time: the same ones are not always last.
        s.published = s.published.wrapping_add(1);
        let start = s.published.wrapping_mul(WAKE_STRIDE);
        drop(s);
        frames::wake(to_wake, start, self.wakes_on.as_ref());
    }

    /// Hands `change` to the subscribers of its document.
    pub(crate) fn publish_change(&self, change: &crate::live::Change) {
        let place = place(
            change.namespace.as_deref().unwrap_or(""),
            &change.generation,
            &change.path,
        );
        self.publish(place, &change.frame());
    }

    /// Ends every stream on this node, at once: its subscribers may have missed
    /// changes (the feed between nodes lost some), and a stream that stays open
    /// must never have a silent gap. Each client reconnects and pulls; one that
    /// resumes from before now is told to pull. Returns how many streams it ended.
    pub(crate) fn end_all(&self) -> usize {
        let now_ms = self.clock.now_ms();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = s.subs.len();
        // Dropping every sender ends every stream; the subscriptions' own drops then
        // find nothing left to remove.
        s.by_place.clear();
        s.subs.clear();
        s.held.clear();
        s.heard.forget(now_ms);
        ended
    }

    /// Subscriptions open on this node.
    pub(crate) fn subscribers(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subs
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `data:` of a frame.
    fn data(frame: Option<Arc<Bytes>>) -> String {
        let frame = String::from_utf8(frame.expect("a frame").to_vec()).unwrap();
        let line = frame.lines().find_map(|l| l.strip_prefix("data: "));
        line.expect("a data line").to_owned()
    }

    #[tokio::test]
    async fn frames_reach_their_places_and_slow_subscribers_are_dropped() {
        let bus = Arc::new(Bus::default());
        let a = place("acme", "", "notes/a");
        let b = place("acme", "", "notes/b");
        let mut one = bus
            .subscribe("alice", "1.1.1.1", None, vec![a.clone()], None)
            .unwrap();
        let mut both = bus
            .subscribe(
                "bob",
                "1.1.1.2",
                None,
                vec![a.clone(), b.clone(), a.clone()],
                None,
            )
            .unwrap();
        bus.publish(b.clone(), "B");
        bus.publish(a.clone(), "A");
        assert_eq!(data(both.frames.recv().await), "B");
        assert_eq!(data(both.frames.recv().await), "A");
        assert!(
            both.frames.try_recv().is_err(),
            "a place named twice hears once"
        );
        assert_eq!(data(one.frames.recv().await), "A");
        // `one` stops reading: past its buffer it is dropped, its stream ends.
        for _ in 0..=BUFFER {
            bus.publish(a.clone(), "x");
            let _ = both.frames.try_recv();
        }
        assert_eq!(bus.subscribers(), 1);
        for _ in 0..BUFFER {
            assert!(one.frames.recv().await.is_some());
        }
        assert!(one.frames.recv().await.is_none(), "the stream ends");
        drop(both);
        assert_eq!(bus.subscribers(), 0);
        // The caller's count came back with its subscriptions.
        let held: Vec<_> = (0..bus.limits().per_caller)
            .map(|_| {
                bus.subscribe("carol", "1.1.1.3", None, vec![a.clone()], None)
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            bus.subscribe("carol", "1.1.1.3", None, vec![a.clone()], None),
            Err(TooManySubscriptions)
        ));
        drop(held);
        assert!(
            bus.subscribe("carol", "1.1.1.3", None, vec![a.clone()], None)
                .is_ok()
        );
        // Many identities from one address: bounded by the address.
        let minted: Vec<_> = (0..bus.limits().per_ip)
            .map(|i| {
                bus.subscribe(
                    &format!("minted{i}"),
                    "6.6.6.6",
                    None,
                    vec![a.clone()],
                    None,
                )
                .unwrap()
            })
            .collect();
        assert!(matches!(
            bus.subscribe("minted-more", "6.6.6.6", None, vec![a], None),
            Err(TooManySubscriptions)
        ));
        drop(minted);
    }

    #[tokio::test]
    async fn a_namespace_holds_at_most_its_share_and_the_node_its_total() {
        let limits = LiveLimits {
            total: 6,
            per_namespace: Some(4),
            ..LiveLimits::default()
        };
        let bus = Arc::new(Bus::default().with_limits(limits));
        let a = place("acme", "", "notes/a");
        let acme = Some(("acme\u{0}", limits.namespace_share()));
        let held: Vec<_> = (0..4)
            .map(|i| {
                bus.subscribe(
                    &format!("u{i}"),
                    &format!("10.0.0.{i}"),
                    acme,
                    vec![a.clone()],
                    None,
                )
                .unwrap()
            })
            .collect();
        // acme has its four: a fifth caller of acme is refused, another tenant is not.
        assert!(
            bus.subscribe("u9", "10.0.0.9", acme, vec![a.clone()], None)
                .is_err()
        );
        let other = Some(("other\u{0}", limits.namespace_share()));
        let theirs: Vec<_> = (0..2)
            .map(|i| {
                bus.subscribe(
                    &format!("o{i}"),
                    &format!("10.0.1.{i}"),
                    other,
                    vec![a.clone()],
                    None,
                )
                .unwrap()
            })
            .collect();
        // The node holds its six.
        assert!(
            bus.subscribe("o9", "10.0.1.9", other, vec![a.clone()], None)
                .is_err()
        );
        drop(held);
        assert!(bus.subscribe("u9", "10.0.0.9", acme, vec![a], None).is_ok());
        drop(theirs);
    }

    #[tokio::test]
    async fn ending_every_stream_ends_each_one_and_frees_its_counts() {
        let bus = Arc::new(Bus::default());
        let a = place("acme", "", "notes/a");
        let mut subs: Vec<_> = (0..bus.limits().per_caller)
            .map(|_| {
                bus.subscribe("alice", "1.1.1.1", None, vec![a.clone()], None)
                    .unwrap()
            })
            .collect();
        bus.publish(a.clone(), "before");
        assert_eq!(bus.end_all(), bus.limits().per_caller);
        for sub in &mut subs {
            // What was sent before still arrives; then the stream ends.
            assert_eq!(data(sub.frames.recv().await), "before");
            assert!(sub.frames.recv().await.is_none());
        }
        // The caller may subscribe again at once (its old streams are ending).
        let mut again = bus
            .subscribe("alice", "1.1.1.1", None, vec![a.clone()], None)
            .unwrap();
        drop(subs);
        bus.publish(a.clone(), "after");
        assert_eq!(data(again.frames.recv().await), "after");
        assert_eq!(bus.subscribers(), 1);
    }

    /// The `id` an opening ends with.
    fn position(sub: &Subscription) -> Position {
        let text = std::str::from_utf8(&sub.opening).unwrap();
        let id = text.lines().rev().find_map(|l| l.strip_prefix("id: "));
        Position::parse(id.expect("an id")).expect("one of ours")
    }

    /// The `data:` lines of an opening.
    fn replayed(sub: &Subscription) -> Vec<&str> {
        let text = std::str::from_utf8(&sub.opening).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect()
    }

    #[tokio::test]
    async fn a_stream_resumed_on_its_node_hears_exactly_what_it_missed() {
        let bus = Arc::new(Bus::default());
        let (a, b) = (place("", "", "a"), place("", "", "b"));
        let first = bus
            .subscribe("u", "1.1.1.1", None, vec![a.clone()], None)
            .unwrap();
        assert_eq!(first.opened, Opening::Fresh);
        let at = position(&first);
        drop(first);
        for n in 0..5 {
            bus.publish(a.clone(), &format!("a{n}"));
            bus.publish(b.clone(), &format!("b{n}"));
        }
        let mut back = bus
            .subscribe("u", "1.1.1.1", None, vec![a.clone()], Some(Some(&at)))
            .unwrap();
        assert_eq!(back.opened, Opening::Replayed(5));
        assert_eq!(replayed(&back), ["a0", "a1", "a2", "a3", "a4"]);
        // Its new position: after everything heard; what comes next arrives live, once.
        let now = position(&back);
        bus.publish(a.clone(), "a5");
        assert_eq!(data(back.frames.recv().await), "a5");
        let again = bus
            .subscribe("u", "1.1.1.1", None, vec![a.clone(), b], Some(Some(&now)))
            .unwrap();
        assert_eq!(replayed(&again), ["a5"]);
        // Each frame's own id resumes after it.
        let a5 = bus.state.lock().unwrap().heard.last_frame().unwrap();
        let id = std::str::from_utf8(&a5).unwrap().lines().next().unwrap();
        let id = Position::parse(id.strip_prefix("id: ").unwrap()).unwrap();
        let after = bus
            .subscribe("u", "1.1.1.1", None, vec![a], Some(Some(&id)))
            .unwrap();
        assert_eq!(after.opened, Opening::Replayed(0));
    }

    #[tokio::test]
    async fn a_stream_further_behind_than_the_node_remembers_is_told_to_pull() {
        let limits = LiveLimits {
            replay: 4,
            ..LiveLimits::default()
        };
        let bus = Arc::new(Bus::default().with_limits(limits));
        let a = place("", "", "a");
        let at = position(
            &bus.subscribe("u", "1.1.1.1", None, vec![a.clone()], None)
                .unwrap(),
        );
        let resume = |since: Option<&Position>| {
            bus.subscribe("u", "1.1.1.1", None, vec![a.clone()], Some(since))
                .unwrap()
        };
        for n in 0..4 {
            bus.publish(a.clone(), &format!("a{n}"));
        }
        assert_eq!(resume(Some(&at)).opened, Opening::Replayed(4));
        // A fifth change pushes the first out: the stream cannot be told all.
        bus.publish(a.clone(), "a4");
        let told = resume(Some(&at));
        assert_eq!(told.opened, Opening::Pull);
        let text = std::str::from_utf8(&told.opening).unwrap();
        assert!(text.contains("event: pull\n"), "{text}");
        assert!(replayed(&told) == [r#"{"pull":true}"#], "{text}");
        // Its position is current: from there it resumes exactly.
        assert_eq!(resume(Some(&position(&told))).opened, Opening::Replayed(0));
        // An id not ours, or one from the future: pull.
        assert_eq!(resume(None).opened, Opening::Pull);
        let ahead = Position { seq: 99, ..at };
        assert_eq!(resume(Some(&ahead)).opened, Opening::Pull);
        assert_eq!(Position::parse("12-3-zz"), None);
        assert_eq!(Position::parse("12-3"), None);
        // More missed than a buffer holds: pull (cheaper than replaying it all).
        let big = Arc::new(Bus::default());
        let at = position(
            &big.subscribe("u", "1.1.1.1", None, vec![a.clone()], None)
                .unwrap(),
        );
        for _ in 0..=BUFFER {
            big.publish(a.clone(), "x");
        }
        let far = big.subscribe("u", "1.1.1.1", None, vec![a.clone()], Some(Some(&at)));
        assert_eq!(far.unwrap().opened, Opening::Pull);
        // Changes lost on the way (the feed was cut): every earlier position pulls.
        let now = position(&resume(None));
        bus.end_all();
        assert_eq!(resume(Some(&now)).opened, Opening::Pull);
    }

    #[tokio::test]
    async fn a_stream_resumed_on_another_node_hears_what_that_node_heard_since_its_time() {
        let clock = starfish_store::ManualClock::new(1_000_000);
        let node = || {
            let bus = Bus::default().with_clock(Arc::new(clock.clone()));
            Arc::new(bus.across_nodes())
        };
        let (one, two) = (node(), node());
        let a = place("", "", "a");
        // Both nodes hear every change (through the feed), a little apart.
        let both = |data: &str| {
            one.publish(a.clone(), data);
            two.publish(a.clone(), data);
        };
        both("old");
        clock.set(1_020_000);
        both("seen");
        let on_one = one.subscribe("u", "1.1.1.1", None, vec![a.clone()], None);
        let at = position(&on_one.unwrap());
        clock.set(1_021_000);
        both("missed");
        let resumed = two
            .subscribe("u", "1.1.1.1", None, vec![a.clone()], Some(Some(&at)))
            .unwrap();
        // From a little before its time: what it saw may come again, never less.
        assert_eq!(replayed(&resumed), ["seen", "missed"]);
        // A node that started after that time cannot tell: pull.
        clock.set(1_030_000);
        let late = node();
        let resumed = late.subscribe("u", "1.1.1.1", None, vec![a.clone()], Some(Some(&at)));
        assert_eq!(resumed.unwrap().opened, Opening::Pull);
        // An id from further ahead than this node has reached: pull, not nothing.
        let ahead = Position {
            at_ms: 1_040_000,
            ..at.clone()
        };
        let resumed = two.subscribe("u", "1.1.1.1", None, vec![a.clone()], Some(Some(&ahead)));
        assert_eq!(resumed.unwrap().opened, Opening::Pull);
        // Without a feed a node never heard the others' changes: pull.
        let alone = Arc::new(Bus::default().with_clock(Arc::new(clock.clone())));
        alone.publish(a.clone(), "x");
        clock.set(1_040_000);
        let since = Position {
            at_ms: 1_039_000,
            ..at
        };
        let resumed = alone.subscribe("u", "1.1.1.1", None, vec![a], Some(Some(&since)));
        assert_eq!(resumed.unwrap().opened, Opening::Pull);
    }

    #[tokio::test]
    async fn times_never_go_back_and_the_ring_stays_in_order() {
        let clock = starfish_store::ManualClock::new(2_000_000);
        let bus = Arc::new(
            Bus::default()
                .with_clock(Arc::new(clock.clone()))
                .across_nodes(),
        );
        let a = place("", "", "a");
        bus.publish(a.clone(), "first");
        // The clock steps back ten seconds: the next frame keeps the later time.
        clock.set(1_990_000);
        bus.publish(a, "second");
        let s = bus.state.lock().unwrap();
        let times = s.heard.times();
        assert_eq!(times, [2_000_000, 2_000_000]);
    }
}
