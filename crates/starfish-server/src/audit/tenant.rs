//! A tenant's own trail: the audit records of a namespace, kept in that
//! namespace's part of the store (so isolated with it, counted in its quota,
//! sealed with its key when it seals, deleted with it), in batches of about a
//! second (`_starfish/audit/<namespace>/<ms>-<node>-<n>`, one JSON line per
//! record), and read back by its admin: `GET /_starfish/admin/namespaces/<name>/audit`.
//!
//! A crash loses the batch not yet written: at most about a second of records.
//! Batches older than the retention are deleted as new ones are written.

use super::AuditEntry;
use crate::store::{NsStore, ObjectKey, StoreError};
use starfish_protocol::names::NamespaceName;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How often buffered records are written.
const FLUSH_MS: u64 = 1_000;
/// Records buffered for one namespace before a write, whatever the time.
const BATCH: usize = 1_000;
/// Records buffered in all; past it, new ones are dropped (a store that does not
/// answer must not fill the memory).
const MAX_BUFFERED: usize = 100_000;

/// One namespace's records waiting to be written.
struct Pending {
    store: NsStore,
    lines: Vec<u8>,
    count: usize,
}

/// The tenants' trails of one node.
pub(crate) struct TenantTrails {
    node: String,
    retention_ms: u64,
    pending: Mutex<HashMap<NamespaceName, Pending>>,
    buffered: AtomicU64,
    last_flush: AtomicU64,
    next: AtomicU64,
    dropped: AtomicU64,
}

impl TenantTrails {
    pub(crate) fn new(node: &str, retention_ms: u64) -> Self {
        Self {
            node: node
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect(),
            retention_ms,
            pending: Mutex::default(),
            buffered: AtomicU64::new(0),
            last_flush: AtomicU64::new(0),
            next: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Buffers `record` for `namespace`, stored through `store`; writes what is
    /// due when a second has passed (on a task of its own).
    pub(crate) fn push(
        self: &std::sync::Arc<Self>,
        namespace: &NamespaceName,
        store: &NsStore,
        record: &AuditEntry<'_>,
    ) {
        let now_ms = record.timestamp;
        if self.buffered.load(Ordering::Relaxed) >= MAX_BUFFERED as u64 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut line = Vec::with_capacity(256);
        super::line::write(record, &mut line);
        line.push(b'\n');
        let full = {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = pending.entry(namespace.clone()).or_insert_with(|| Pending {
                store: store.clone(),
                lines: Vec::new(),
                count: 0,
            });
            entry.lines.extend_from_slice(&line);
            entry.count += 1;
            entry.count >= BATCH
        };
        self.buffered.fetch_add(1, Ordering::Relaxed);
        let last = self.last_flush.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= FLUSH_MS;
        if (due || full)
            && self
                .last_flush
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let trails = self.clone();
            tokio::spawn(async move { trails.flush(now_ms).await });
        }
    }

    /// Writes every buffered batch, and deletes what is past the retention.
    pub(crate) async fn flush(&self, now_ms: u64) {
        let batches: Vec<(NamespaceName, Pending)> = {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.drain().collect()
        };
        for (namespace, batch) in batches {
            self.buffered
                .fetch_sub(batch.count as u64, Ordering::Relaxed);
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let name = format!("{now_ms:013}-{}-{n}", self.node);
            let key = ObjectKey::audit_batch(&namespace, &name);
            let bytes = batch.lines;
            let written = batch
                .store
                .compare_and_swap(&key, |_| Ok::<_, StoreError>((bytes.clone(), ())))
                .await;
            if let Err(e) = written {
                self.dropped
                    .fetch_add(batch.count as u64, Ordering::Relaxed);
                tracing::warn!(namespace = %namespace, error = ?e, "an audit batch was not written");
            }
            if let Err(e) = self.expire(&batch.store, &namespace, now_ms).await {
                tracing::debug!(namespace = %namespace, error = %e, "old audit batches not deleted");
            }
        }
    }

    /// Deletes the namespace's batches older than the retention.
    async fn expire(
        &self,
        store: &NsStore,
        namespace: &NamespaceName,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let folder = ObjectKey::audit_folder(namespace);
        let (names, _) = store.list_page(&folder, None, 1000).await?;
        for name in names
            .iter()
            .filter(|n| batch_time(n).is_some_and(|t| t < cutoff))
        {
            store
                .remove(&ObjectKey::audit_batch(namespace, name))
                .await?;
        }
        Ok(())
    }

    /// The namespace's records from `since` (ms) on, oldest first, at most `limit`,
    /// and whether more follow. Batches still buffered on this node are written
    /// first.
    pub(crate) async fn read(
        &self,
        store: &NsStore,
        namespace: &NamespaceName,
        since: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<serde_json::Value>, bool), StoreError> {
        self.flush(now_ms).await;
        let folder = ObjectKey::audit_folder(namespace);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (names, more) = store.list_page(&folder, after.as_deref(), 1000).await?;
            for name in &names {
                // A batch holds records of the second before it was written.
                if batch_time(name).is_some_and(|t| t.saturating_add(FLUSH_MS) < since) {
                    continue;
                }
                let Some(bytes) = store.get(&ObjectKey::audit_batch(namespace, name)).await? else {
                    continue;
                };
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let Ok(record) = serde_json::from_slice::<serde_json::Value>(line) else {
                        continue;
                    };
                    if record["timestamp"].as_u64().unwrap_or(0) < since {
                        continue;
                    }
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(record);
                }
            }
            after = names.last().cloned();
            if !more || after.is_none() {
                return Ok((out, false));
            }
        }
    }
}

/// The time a batch name starts with.
fn batch_time(name: &str) -> Option<u64> {
    name.split('-').next()?.parse().ok()
}
