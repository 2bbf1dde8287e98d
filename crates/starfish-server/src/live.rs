//! Live changes on one node: the in-process bus behind `GET /events`.
//!
//! Every accepted write is published under its document's place (namespace,
//! generation, key); a subscription lists the places it was authorised to read and
//! receives one frame per write to any of them: which document changed and its new
//! hash, never the data. Each subscriber has a bounded buffer: one that does not keep
//! up is dropped (its stream ends; the client reconnects and pulls), never buffered
//! without bound. Subscriptions are bounded per caller and in all.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// Frames a subscriber may have waiting before it is dropped.
pub(crate) const BUFFER: usize = 256;
/// Subscriptions one caller (identity, API key, or IP) may hold at once.
pub(crate) const PER_CALLER: usize = 8;
/// Subscriptions on one node.
pub(crate) const TOTAL: usize = 10_000;

/// The subscribers of one node, by the places they listen to.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    state: Mutex<Subscribers>,
}

/// A subscription's id and the sending end of its buffer.
type Listener = (u64, mpsc::Sender<Arc<str>>);

#[derive(Debug, Default)]
struct Subscribers {
    by_place: HashMap<Arc<str>, Vec<Listener>>,
    /// Each subscription's places and caller.
    subs: HashMap<u64, (Vec<Arc<str>>, Arc<str>)>,
    per_caller: HashMap<Arc<str>, usize>,
    next: u64,
}

impl Subscribers {
    fn remove(&mut self, id: u64) {
        let Some((places, caller)) = self.subs.remove(&id) else {
            return;
        };
        for place in places {
            if let Some(list) = self.by_place.get_mut(&place) {
                list.retain(|(sub, _)| *sub != id);
                if list.is_empty() {
                    self.by_place.remove(&place);
                }
            }
        }
        if let Some(n) = self.per_caller.get_mut(&caller) {
            *n -= 1;
            if *n == 0 {
                self.per_caller.remove(&caller);
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
    /// Subscribes `caller` to `places`.
    ///
    /// # Errors
    /// `429 Too many concurrent requests` when the caller holds [`PER_CALLER`]
    /// subscriptions already, or the node [`TOTAL`].
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        caller: &str,
        places: Vec<Arc<str>>,
    ) -> Result<Subscription, ApiError> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.subs.len() >= TOTAL || s.per_caller.get(caller).copied().unwrap_or(0) >= PER_CALLER {
            return Err(ApiError::TooManyConcurrent);
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let id = s.next;
        s.next += 1;
        for place in &places {
            s.by_place
                .entry(place.clone())
                .or_default()
                .push((id, tx.clone()));
        }
        let caller: Arc<str> = caller.into();
        *s.per_caller.entry(caller.clone()).or_default() += 1;
        s.subs.insert(id, (places, caller));
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
        let Some(list) = s.by_place.get(place) else {
            return;
        };
        let frame = make();
        let slow: Vec<u64> = list
            .iter()
            .filter(|(_, tx)| tx.try_send(frame.clone()).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in slow {
            s.remove(id);
        }
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
        let mut one = bus.subscribe("alice", vec![a.clone()]).unwrap();
        let mut both = bus.subscribe("bob", vec![a.clone(), b.clone()]).unwrap();
        bus.publish(&b, || Arc::from("B"));
        bus.publish(&a, || Arc::from("A"));
        assert_eq!(&*both.frames.recv().await.unwrap(), "B");
        assert_eq!(&*both.frames.recv().await.unwrap(), "A");
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
        let held: Vec<_> = (0..PER_CALLER)
            .map(|_| bus.subscribe("carol", vec![a.clone()]).unwrap())
            .collect();
        assert!(matches!(
            bus.subscribe("carol", vec![a.clone()]),
            Err(ApiError::TooManyConcurrent)
        ));
        drop(held);
        assert!(bus.subscribe("carol", vec![a]).is_ok());
    }
}
