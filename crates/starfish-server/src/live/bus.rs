//! Live changes on one node: the in-process bus behind `GET /events`.
//!
//! Every accepted write is published under its document's place (namespace,
//! generation, key); a subscription lists the places it was authorised to read and
//! receives one frame per write to any of them: which document changed and its new
//! hash, never the data. Each subscriber has a bounded buffer: one that does not keep
//! up is dropped (its stream ends; the client reconnects and pulls), never buffered
//! without bound. Subscriptions are bounded per caller and in all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// A subscription refused: the node, the caller or the address holds as many
/// as it may (`429`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySubscriptions;

/// Frames a subscriber may have waiting before it is dropped.
pub(crate) const BUFFER: usize = 256;

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
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            total: 10_000,
            per_caller: 8,
            per_ip: 256,
            per_namespace: None,
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
    /// True once the server is shutting down: every stream ends.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The sender of `stopping` when nobody else holds one (it never turns true).
    _never: Option<tokio::sync::watch::Sender<bool>>,
}

impl Default for Bus {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Self {
            state: Mutex::default(),
            limits: LiveLimits::default(),
            stopping: rx,
            _never: Some(tx),
        }
    }
}

/// A subscription's places, and the counts it holds a place in.
type Held = (Vec<Arc<str>>, Vec<Arc<str>>);

#[derive(Debug, Default)]
struct Subscribers {
    /// The sending end of each subscription's buffer, by place and subscription.
    by_place: HashMap<Arc<str>, HashMap<u64, mpsc::Sender<Arc<str>>>>,
    /// Each subscription's places and the counts it holds a place in (its caller's
    /// and its IP's).
    subs: HashMap<u64, Held>,
    /// Subscriptions per caller (`caller:` keys) and per IP (`ip:` keys).
    held: HashMap<Arc<str>, usize>,
    next: u64,
}

impl Subscribers {
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

/// One subscription: frames arrive on `frames`; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    bus: Arc<Bus>,
    id: u64,
    pub(crate) frames: mpsc::Receiver<Arc<str>>,
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

impl Bus {
    /// A bus whose streams end when `stopping` turns true.
    pub(crate) fn new(stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            state: Mutex::default(),
            limits: LiveLimits::default(),
            stopping,
            _never: None,
        }
    }

    /// This bus with `limits`.
    pub(crate) fn with_limits(mut self, limits: LiveLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Its limits.
    pub(crate) fn limits(&self) -> &LiveLimits {
        &self.limits
    }

    /// What says the server is shutting down.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// Subscribes `caller`, from `ip`, to `places` (each once, however often
    /// named); `namespace` (its name and generation) with its share, when the
    /// places are a namespace's.
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
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let full = |(key, max): &(Arc<str>, usize)| s.held.get(key).copied().unwrap_or(0) >= *max;
        if s.subs.len() >= self.limits.total || counts.iter().any(full) {
            return Err(TooManySubscriptions);
        }
        let counts: Vec<Arc<str>> = counts.into_iter().map(|(key, _)| key).collect();
        let (tx, rx) = mpsc::channel(BUFFER);
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
        Ok(Subscription {
            bus: self.clone(),
            id,
            frames: rx,
        })
    }

    /// Hands the frame `make` builds (only when someone listens) to every
    /// subscriber of `place`; one whose buffer is full is dropped.
    pub(crate) fn publish(&self, place: &str, make: impl FnOnce() -> Arc<str>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(listeners) = s.by_place.get(place) else {
            return;
        };
        let frame = make();
        let slow: Vec<u64> = listeners
            .iter()
            .filter(|(_, tx)| tx.try_send(frame.clone()).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in slow {
            s.remove(id);
        }
    }

    /// Hands `change` to the subscribers of its document.
    pub(crate) fn publish_change(&self, change: &crate::live::Change) {
        let place = place(
            change.namespace.as_deref().unwrap_or(""),
            &change.generation,
            &change.path,
        );
        self.publish(&place, || change.frame());
    }

    /// Ends every stream on this node, at once: its subscribers may have missed
    /// changes (the feed between nodes lost some), and a stream that stays open
    /// must never have a silent gap. Each client reconnects and pulls. Returns how
    /// many streams it ended.
    pub(crate) fn end_all(&self) -> usize {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = s.subs.len();
        // Dropping every sender ends every stream; the subscriptions' own drops then
        // find nothing left to remove.
        *s = Subscribers {
            next: s.next,
            ..Subscribers::default()
        };
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

    #[tokio::test]
    async fn frames_reach_their_places_and_slow_subscribers_are_dropped() {
        let bus = Arc::new(Bus::default());
        let a = place("acme", "", "notes/a");
        let b = place("acme", "", "notes/b");
        let mut one = bus
            .subscribe("alice", "1.1.1.1", None, vec![a.clone()])
            .unwrap();
        let mut both = bus
            .subscribe(
                "bob",
                "1.1.1.2",
                None,
                vec![a.clone(), b.clone(), a.clone()],
            )
            .unwrap();
        bus.publish(&b, || Arc::from("B"));
        bus.publish(&a, || Arc::from("A"));
        assert_eq!(&*both.frames.recv().await.unwrap(), "B");
        assert_eq!(&*both.frames.recv().await.unwrap(), "A");
        assert!(
            both.frames.try_recv().is_err(),
            "a place named twice hears once"
        );
        assert_eq!(&*one.frames.recv().await.unwrap(), "A");
        // `one` stops reading: past its buffer it is dropped, its stream ends.
        for _ in 0..=BUFFER {
            bus.publish(&a, || Arc::from("x"));
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
                bus.subscribe("carol", "1.1.1.3", None, vec![a.clone()])
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            bus.subscribe("carol", "1.1.1.3", None, vec![a.clone()]),
            Err(TooManySubscriptions)
        ));
        drop(held);
        assert!(
            bus.subscribe("carol", "1.1.1.3", None, vec![a.clone()])
                .is_ok()
        );
        // Many identities from one address: bounded by the address.
        let minted: Vec<_> = (0..bus.limits().per_ip)
            .map(|i| {
                bus.subscribe(&format!("minted{i}"), "6.6.6.6", None, vec![a.clone()])
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            bus.subscribe("minted-more", "6.6.6.6", None, vec![a]),
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
                )
                .unwrap()
            })
            .collect();
        // acme has its four: a fifth caller of acme is refused, another tenant is not.
        assert!(
            bus.subscribe("u9", "10.0.0.9", acme, vec![a.clone()])
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
                )
                .unwrap()
            })
            .collect();
        // The node holds its six.
        assert!(
            bus.subscribe("o9", "10.0.1.9", other, vec![a.clone()])
                .is_err()
        );
        drop(held);
        assert!(bus.subscribe("u9", "10.0.0.9", acme, vec![a]).is_ok());
        drop(theirs);
    }

    #[tokio::test]
    async fn ending_every_stream_ends_each_one_and_frees_its_counts() {
        let bus = Arc::new(Bus::default());
        let a = place("acme", "", "notes/a");
        let mut subs: Vec<_> = (0..bus.limits().per_caller)
            .map(|_| {
                bus.subscribe("alice", "1.1.1.1", None, vec![a.clone()])
                    .unwrap()
            })
            .collect();
        bus.publish(&a, || Arc::from("before"));
        assert_eq!(bus.end_all(), bus.limits().per_caller);
        for sub in &mut subs {
            // What was sent before still arrives; then the stream ends.
            assert_eq!(sub.frames.recv().await.as_deref(), Some("before"));
            assert!(sub.frames.recv().await.is_none());
        }
        // The caller may subscribe again at once (its old streams are ending).
        let mut again = bus
            .subscribe("alice", "1.1.1.1", None, vec![a.clone()])
            .unwrap();
        drop(subs);
        bus.publish(&a, || Arc::from("after"));
        assert_eq!(again.frames.recv().await.as_deref(), Some("after"));
        assert_eq!(bus.subscribers(), 1);
    }
}
