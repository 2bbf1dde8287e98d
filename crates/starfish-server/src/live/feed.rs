//! Live changes between nodes: every node's `GET /events` subscribers hear of the
//! writes accepted by any node. A [`ChangeFeed`] carries each accepted write's
//! [`Change`] (which document, its new hash and timestamp, never the data) from the
//! node that accepted it to the others; [`NatsFeed`] (feature `nats`) is one over
//! NATS, one subject per namespace and collection. Without a feed, changes reach
//! the subscribers of the node that accepted the write only.
//!
//! A feed is a hint, not a log: a change published while the broker is away is
//! lost (NATS core delivers at most once), so a client pulls when its stream
//! (re)opens, as the official client does. A loss is never silent: when a feed may
//! have lost changes (its connection dropped, or a node's changes arrive with a gap
//! in their numbers) it ends every stream of the node ([`ChangeSink::lost`]), and
//! the clients reconnect and pull.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Weak};

/// One accepted write, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Change {
    /// The namespace, `None` at the root.
    pub namespace: Option<String>,
    /// The namespace's generation (a runtime namespace deleted and created again
    /// is another place), empty for config namespaces.
    #[serde(default)]
    pub generation: String,
    /// The collection's name.
    pub collection: String,
    /// The object key written.
    pub path: String,
    /// The new hash.
    pub hash: String,
    /// The write's timestamp in ms.
    pub timestamp: u64,
}

impl Change {
    /// The change of the document at `path` in `collection` of `namespace`.
    pub fn new(
        namespace: Option<&str>,
        generation: &str,
        collection: &str,
        path: &str,
        hash: &str,
        timestamp: u64,
    ) -> Self {
        Self {
            namespace: namespace.map(str::to_owned),
            generation: generation.to_owned(),
            collection: collection.to_owned(),
            path: path.to_owned(),
            hash: hash.to_owned(),
            timestamp,
        }
    }

    /// The subject this change is published under:
    /// `<prefix>.<namespace>.<collection>`, `~` standing for the root namespace
    /// and any `.`, `*`, `>`, `%` or space in a name written `%XX`.
    pub fn subject(&self, prefix: &str) -> String {
        format!(
            "{prefix}.{}.{}",
            self.namespace.as_deref().map_or("~".into(), token),
            token(&self.collection)
        )
    }

    /// True when every field is of a size a real change has (a message from the
    /// broker is checked before any subscriber hears of it).
    pub fn is_plausible(&self) -> bool {
        let short = |s: &str, max: usize| !s.is_empty() && s.len() <= max;
        self.namespace.as_deref().is_none_or(|n| short(n, 128))
            && self.generation.len() <= 128
            && short(&self.collection, 256)
            && short(&self.path, 2048)
            && short(&self.hash, 128)
            && self.hash.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// The `data:` frame subscribers get: never the data, nor the generation.
    pub(crate) fn frame(&self) -> Arc<str> {
        serde_json::json!({
            "namespace": self.namespace,
            "collection": self.collection,
            "path": self.path,
            "hash": self.hash,
            "timestamp": self.timestamp,
        })
        .to_string()
        .into()
    }
}

/// A name as one subject token.
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '.' | '*' | '>' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_whitespace() || c.is_control() => {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() { "%00".into() } else { out }
}

/// Where a feed hands other nodes' changes: one router's subscribers.
#[derive(Debug, Clone)]
pub struct ChangeSink {
    bus: Weak<crate::live::bus::Bus>,
    metrics: Option<crate::metrics::Metrics>,
}

impl ChangeSink {
    pub(crate) fn new(
        bus: &Arc<crate::live::bus::Bus>,
        metrics: Option<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            bus: Arc::downgrade(bus),
            metrics,
        }
    }

    /// Hands `change` to the router's subscribers of its document. `false` once
    /// the router is gone (the feed may forget this sink).
    pub fn deliver(&self, change: &Change) -> bool {
        let Some(bus) = self.bus.upgrade() else {
            return false;
        };
        if let Some(metrics) = &self.metrics {
            metrics.change("received");
        }
        bus.publish_change(change);
        true
    }

    /// Says that changes may have been lost on the way (the feed was cut, or
    /// skipped some): every stream of the router ends, so that its clients reconnect
    /// and pull instead of waiting for a change that will never come. `false` once
    /// the router is gone.
    pub fn lost(&self) -> bool {
        let Some(bus) = self.bus.upgrade() else {
            return false;
        };
        let ended = bus.end_all();
        if ended > 0 {
            tracing::warn!(
                streams = ended,
                "changes from other nodes may have been missed: every live stream ended (clients reconnect and pull)"
            );
        }
        true
    }
}

/// Carries changes between nodes.
pub trait ChangeFeed: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `change` (a write this node accepted) to the other nodes. It must not
    /// wait: queue it, and drop it if the queue is full. `false` when dropped.
    fn publish(&self, change: &Change) -> bool;

    /// From now on, hands the changes of other nodes to `sink` (once per router
    /// built with this feed).
    fn attach(&self, sink: ChangeSink);
}

#[cfg(feature = "nats")]
pub use nats::NatsFeed;

#[cfg(feature = "nats")]
mod nats {
    use super::{Change, ChangeFeed, ChangeSink};
    use futures::StreamExt;
    use serde::{Deserialize, Serialize};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use tokio::sync::mpsc;

    /// Publishers whose last number a node remembers; past it, it forgets them all
    /// (a node restarted takes a new id, so old ones pile up).
    const PUBLISHERS: usize = 1024;

    /// A change as published: numbered per publishing node, so that a receiver
    /// sees a change that never came as a gap in the numbers.
    #[derive(Serialize, Deserialize)]
    struct Numbered {
        #[serde(flatten)]
        change: Change,
        /// The publishing node's id (random per start) and the change's number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    }

    /// Tells every sink that changes may have been lost.
    fn lost(sinks: &Mutex<Vec<ChangeSink>>) {
        sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(ChangeSink::lost);
    }

    /// Changes waiting to be sent to NATS; past it, new ones are dropped.
    const QUEUE: usize = 10_000;
    /// The largest message taken for a change.
    const MAX_MESSAGE: usize = 4096;

    /// A [`ChangeFeed`] over NATS: each change published under
    /// [`Change::subject`] (`starfish.changes.<namespace>.<collection>` by default),
    /// every node subscribed to all of them. The connection is kept by the client
    /// (reconnects, re-subscribes); a node never hears its own changes back (`no
    /// echo`), it hands them to its subscribers itself. So give each router a feed
    /// of its own: two routers sharing one feed would not hear each other's writes.
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    #[derive(Debug, Clone)]
    pub struct NatsFeed {
        client: async_nats::Client,
        prefix: String,
        queue: mpsc::Sender<(String, bytes::Bytes)>,
        sinks: Arc<Mutex<Vec<ChangeSink>>>,
        /// This node's id in the numbers it gives its changes, and the last number.
        node: Arc<str>,
        seq: Arc<AtomicU64>,
    }

    impl NatsFeed {
        /// Connects to `url` (`nats://host:4222`) and subscribes to
        /// `<prefix>.>` (`starfish.changes` when `None`); must run inside a Tokio
        /// runtime, which carries the feed's two tasks.
        ///
        /// # Errors
        /// When the URL is invalid or the first connection fails.
        pub async fn connect(url: &str, prefix: Option<&str>) -> Result<Self, String> {
            let sinks: Arc<Mutex<Vec<ChangeSink>>> = Arc::default();
            let client = connect_client(url, sinks.clone()).await?;
            let prefix = prefix.unwrap_or("starfish.changes").to_owned();
            let subscriber = client
                .subscribe(format!("{prefix}.>"))
                .await
                .map_err(|e| format!("nats: {e}"))?;
            // One round trip, so that the server has the subscription before this
            // node says it is ready: a request nobody answers comes back "no
            // responders" once the server has read everything sent before it.
            let probe = format!("{prefix}-probe.{}", client.server_info().client_id);
            match client.request(probe, bytes::Bytes::new()).await {
                Ok(_) => {}
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
                Err(e) => return Err(format!("nats: {e}")),
            }
            tokio::spawn(hear(subscriber, sinks.clone(), prefix.clone()));
            let (queue, mut queued) = mpsc::channel::<(String, bytes::Bytes)>(QUEUE);
            let sender = client.clone();
            tokio::spawn(async move {
                while let Some((subject, payload)) = queued.recv().await {
                    if let Err(e) = sender.publish(subject, payload).await {
                        tracing::warn!(error = %e, "a change could not be sent to NATS");
                    }
                }
            });
            let mut id = [0u8; 8];
            getrandom::fill(&mut id).map_err(|e| format!("nats: no node id: {e}"))?;
            Ok(Self {
                client,
                prefix,
                queue,
                sinks,
                node: hex::encode(id).into(),
                seq: Arc::default(),
            })
        }

        /// True while the connection to NATS is up (for `/health/ready`).
        pub fn is_connected(&self) -> bool {
            self.client.connection_state() == async_nats::connection::State::Connected
        }
    }

    /// The NATS connection. While it is down, other nodes' changes are lost; a slow
    /// consumer's are dropped by the client: every stream ends, at the cut and
    /// again once back (streams opened meanwhile missed changes too).
    async fn connect_client(
        url: &str,
        cut: Arc<Mutex<Vec<ChangeSink>>>,
    ) -> Result<async_nats::Client, String> {
        async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let cut = cut.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected
                        | async_nats::Event::Connected
                        | async_nats::Event::SlowConsumer(_) => {
                            tracing::debug!(%event, "NATS");
                            lost(&cut);
                        }
                        _ => {}
                    }
                }
            })
            .no_echo()
            .name("starfish")
            .connection_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| format!("nats: {e}"))
    }

    /// Hands the other nodes' changes to `sinks`: only what a node could have sent
    /// (a change of plausible size under the subject its namespace and collection
    /// give), and every stream ends on a gap in a node's numbered changes.
    async fn hear(
        mut subscriber: async_nats::Subscriber,
        sinks: Arc<Mutex<Vec<ChangeSink>>>,
        prefix: String,
    ) {
        let mut last: HashMap<String, u64> = HashMap::new();
        while let Some(message) = subscriber.next().await {
            let numbered = (message.payload.len() <= MAX_MESSAGE)
                .then(|| serde_json::from_slice::<Numbered>(&message.payload).ok())
                .flatten()
                .filter(|n| {
                    n.change.is_plausible() && n.change.subject(&prefix) == *message.subject
                });
            let Some(Numbered { change, node, seq }) = numbered else {
                tracing::debug!(subject = %message.subject, "not a change, ignored");
                continue;
            };
            if let (Some(node), Some(seq)) = (node, seq) {
                if last.len() >= PUBLISHERS && !last.contains_key(&node) {
                    last.clear();
                }
                let before = last.insert(node, seq);
                if before.is_some_and(|b| seq != b + 1) {
                    // A change of that node never came: a silent gap otherwise.
                    lost(&sinks);
                }
            }
            sinks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|sink| sink.deliver(&change));
        }
    }

    impl ChangeFeed for NatsFeed {
        fn publish(&self, change: &Change) -> bool {
            // Numbered before it is queued: one dropped below, or lost on the way,
            // leaves a gap the other nodes see.
            let numbered = Numbered {
                change: change.clone(),
                node: Some(self.node.to_string()),
                seq: Some(self.seq.fetch_add(1, Ordering::Relaxed) + 1),
            };
            let Ok(payload) = serde_json::to_vec(&numbered) else {
                return false;
            };
            let sent = self
                .queue
                .try_send((change.subject(&self.prefix), payload.into()));
            if sent.is_err() {
                tracing::warn!("the queue of changes to NATS is full: a change was dropped");
            }
            sent.is_ok()
        }

        fn attach(&self, sink: ChangeSink) {
            self.sinks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_one_token_per_name() {
        let c = Change::new(Some("acme"), "", "notes", "n/1", "h", 1);
        assert_eq!(c.subject("starfish.changes"), "starfish.changes.acme.notes");
        let c = Change::new(None, "", "a.b*c>d%e f", "k", "h", 1);
        assert_eq!(c.subject("p"), "p.~.a%2Eb%2Ac%3Ed%25e%20f");
    }

    #[test]
    fn implausible_changes_are_told_apart() {
        assert!(Change::new(Some("acme"), "g1", "notes", "n/1", "ab12", 1).is_plausible());
        assert!(!Change::new(None, "", "notes", "n/1", "<script>", 1).is_plausible());
        assert!(!Change::new(None, "", "notes", &"x".repeat(3000), "ab", 1).is_plausible());
        assert!(!Change::new(None, "", "", "n/1", "ab", 1).is_plausible());
    }
}
