//! [`NatsAudit`]: audit records on NATS, one subject per namespace
//! (`<prefix>.<namespace>`, `~` for the root), so each tenant's consumer
//! subscribes to its own; published from a bounded buffer (core NATS, at most
//! once), dropped and counted when it is full.

use super::{AuditEntry, AuditRecord, AuditSink};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Records waiting to be published.
const BUFFER: usize = 16_384;

/// Publishes audit records on NATS.
pub struct NatsAudit {
    buffer: mpsc::Sender<(String, Bytes)>,
    prefix: String,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for NatsAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAudit")
            .field("prefix", &self.prefix)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl NatsAudit {
    /// Connects to `url`; records go to `<prefix>.<namespace>` (`starfish.audit`
    /// when `None`). Must run inside a Tokio runtime, which carries the
    /// publishing task.
    ///
    /// # Errors
    /// The URL is invalid or the first connection fails.
    pub async fn connect(url: &str, prefix: Option<&str>) -> Result<Self, String> {
        let client = async_nats::ConnectOptions::new()
            .name("starfish-audit")
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| format!("audit nats: {e}"))?;
        let (buffer, mut queued) = mpsc::channel::<(String, Bytes)>(BUFFER);
        tokio::spawn(async move {
            while let Some((subject, payload)) = queued.recv().await {
                if let Err(e) = client.publish(subject, payload).await {
                    tracing::warn!(error = %e, "an audit record could not be sent to NATS");
                }
            }
        });
        Ok(Self {
            buffer,
            prefix: prefix.unwrap_or("starfish.audit").to_owned(),
            dropped: Arc::default(),
        })
    }

    /// Records dropped so far, the buffer full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AuditSink for NatsAudit {
    fn record(&self, record: &AuditRecord) {
        record.with_entry(|entry| self.record_entry(entry));
    }

    fn record_entry(&self, record: &AuditEntry<'_>) {
        let namespace = record
            .namespace
            .map_or_else(|| "~".to_owned(), crate::live::token);
        let subject = format!("{}.{namespace}", self.prefix);
        let mut line = Vec::with_capacity(256);
        super::line::write(record, &mut line);
        let payload = Bytes::from(line);
        if self.buffer.try_send((subject, payload)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
