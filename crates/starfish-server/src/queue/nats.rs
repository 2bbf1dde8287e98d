//! [`NatsQueue`]: queue messages on NATS. Core NATS by default (at most once, as
//! the reference's `NatsQueue`); with [`JetStreamSettings`], into a JetStream
//! stream: each message is published until the server acknowledges it (through a
//! NATS outage too), with a `Nats-Msg-Id` the stream de-duplicates on, so a
//! consumer gets each write once.

use super::QueueSink;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages waiting to be published; past it, new ones are dropped (and counted).
const BUFFER: usize = 8192;
/// The first wait before publishing again after a failure; doubled up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// A JetStream stream to publish into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamSettings {
    /// The stream's name (created when missing, with `subjects`).
    pub stream: String,
    /// The subjects it holds (`posts`, `posts.>`, …): every topic the config's
    /// collections publish on.
    pub subjects: Vec<String>,
}

/// One message, with the id JetStream de-duplicates it by.
struct Message {
    subject: String,
    payload: Bytes,
    id: String,
}

/// Publishes queue messages on NATS from a bounded buffer.
pub struct NatsQueue {
    buffer: mpsc::Sender<Message>,
    client: async_nats::Client,
    /// This process's id and its next message number: message ids unique across
    /// nodes and restarts.
    node: String,
    next: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("node", &self.node)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl NatsQueue {
    /// Connects to `url`; with `jetstream`, makes sure its stream exists. Must run
    /// inside a Tokio runtime, which carries the publishing task.
    ///
    /// # Errors
    /// The URL is invalid, the first connection fails, or the stream cannot be
    /// made.
    pub async fn connect(url: &str, jetstream: Option<JetStreamSettings>) -> Result<Self, String> {
        let client = async_nats::ConnectOptions::new()
            .name("starfish-queue")
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|e| format!("queue nats: {e}"))?;
        let (buffer, queued) = mpsc::channel(BUFFER);
        match jetstream {
            None => {
                tokio::spawn(publish_core(client.clone(), queued));
            }
            Some(settings) => {
                let context = async_nats::jetstream::new(client.clone());
                context
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: settings.stream.clone(),
                        subjects: settings.subjects.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("queue jetstream stream {}: {e}", settings.stream))?;
                tokio::spawn(publish_acknowledged(context, queued));
            }
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("queue: no node id: {e}"))?;
        Ok(Self {
            buffer,
            client,
            node: hex::encode(id),
            next: AtomicU64::new(0),
            dropped: Arc::default(),
        })
    }

    /// Messages dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True while the connection to NATS is up (for `/health/ready`).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl QueueSink for NatsQueue {
    fn publish(&self, subject: String, payload: Bytes) -> bool {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let message = Message {
            subject,
            payload,
            id: format!("{}-{n}", self.node),
        };
        if self.buffer.try_send(message).is_ok() {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Core NATS: each message sent once (what the client cannot send is lost).
async fn publish_core(client: async_nats::Client, mut queued: mpsc::Receiver<Message>) {
    while let Some(message) = queued.recv().await {
        if let Err(e) = client.publish(message.subject, message.payload).await {
            tracing::warn!(error = %e, "a queue message could not be sent to NATS");
        }
    }
}

/// JetStream: each message published until the stream acknowledges it, waiting
/// out an outage; its `Nats-Msg-Id` makes a repeat (an acknowledgement lost on
/// the way) a duplicate the stream drops.
async fn publish_acknowledged(
    context: async_nats::jetstream::Context,
    mut queued: mpsc::Receiver<Message>,
) {
    while let Some(message) = queued.recv().await {
        let mut wait = FIRST_RETRY;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", message.id.as_str());
            let sent = context
                .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "queue message not acknowledged; publishing again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
            }
        }
    }
}
