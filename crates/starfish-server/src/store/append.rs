//! Append-only logs over the store, safe with several writers on several nodes.
//!
//! Single-document logs are one compare-and-swap of the whole document. Segmented
//! logs (`chunkSize`) keep the reference's layout, a head plus chunk objects under
//! `<key>__seg/<first ts>`, and commit an element with a conditional write **of the
//! tail chunk**: two writers that read the same tail cannot both win, and the loser
//! re-reads and appends after the winner. Opening a new chunk is a conditional write
//! of the head that points at the (still empty) new chunk first, so no chunk exists
//! that the head did not name. The head's count and hash are brought up to date after
//! the element is committed; a head that lags one append behind is repaired by the
//! next one, and readers take elements from the chunks, never from the head.

use super::{DocStore, ObjectKey, StoreError};
use crate::protocol::AuthorProof;
use crate::protocol::append::{
    AppendError, LogHead, LogRange, append_hash, chunk_key, chunk_key_ts, element, element_ts,
    next_ts, seg_head_bytes, seg_prefix, single_doc_bytes,
};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde_json::{Map, Value};

/// Attempts before an append gives up under contention (409 for the client).
const APPEND_ATTEMPTS: usize = 32;

/// Waits a little before retrying a lost race: exponential (1 ms, doubling, up to
/// 32 ms) with full jitter, so racing writers spread out instead of colliding again.
async fn backoff(attempt: usize) {
    use std::hash::BuildHasher;
    let cap_us = 1000u64 << attempt.min(5);
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % cap_us;
    tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
}

/// One append.
#[derive(Debug, Clone)]
pub(crate) struct AppendOp<'a> {
    /// The log's document key.
    pub key: &'a ObjectKey,
    /// The field of `data` holding the elements.
    pub field: &'a str,
    /// The sanitised item.
    pub item: &'a Map<String, Value>,
    /// A client-chosen timestamp.
    pub ts: Option<u64>,
    /// A verified author proof to store with the element.
    pub author: Option<&'a AuthorProof>,
    /// `maxItems`.
    pub max_items: Option<u64>,
    /// `chunkSize`: segmented layout.
    pub chunk_size: Option<u64>,
    /// The server clock.
    pub now: u64,
}

/// Why an append did not land.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendFailure {
    /// A protocol refusal.
    #[error(transparent)]
    Refused(#[from] AppendError),
    /// Other writers kept winning.
    #[error("contended")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A log as a pull sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogRead {
    /// `data` without the elements.
    pub data: Map<String, Value>,
    /// The selected elements, oldest first.
    pub elements: Vec<Value>,
    /// The stored hash.
    pub hash: String,
}

enum Expect {
    Absent,
    Version(UpdateVersion),
}

fn parse_chunk(bytes: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

impl DocStore {
    async fn read_versioned_key(
        &self,
        key: &str,
    ) -> Result<Option<(Bytes, UpdateVersion)>, StoreError> {
        self.get_versioned(&Path::parse(key)?).await
    }

    /// Writes `bytes` if the object is still as read; `false` when another writer won.
    async fn put_if(&self, key: &str, bytes: Vec<u8>, expect: Expect) -> Result<bool, StoreError> {
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::Version(v) if self.caps.conditional_update => PutMode::Update(v),
            // Serialised by the per-key lock the caller holds (see `append`).
            Expect::Version(_) => PutMode::Overwrite,
        };
        let path = Path::parse(key)?;
        match self
            .inner
            .put_opts(
                &path,
                PutPayload::from(Bytes::from(bytes)),
                PutOptions::from(mode),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends one element. Returns the new log hash and the element's timestamp.
    ///
    /// # Errors
    /// [`AppendFailure`]; nothing is written on a refusal.
    pub(crate) async fn append(&self, op: &AppendOp<'_>) -> Result<(String, u64), AppendFailure> {
        let key = op.key.as_str();
        let head_path = op.key.path();
        // Stores without conditional updates: one writer per log in this process.
        let _guard = if self.caps.conditional_update {
            None
        } else {
            Some(self.lock_for(&head_path).lock().await)
        };
        for attempt in 0..APPEND_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let head = self.read_versioned_key(key).await?;
            let parsed = head.as_ref().and_then(|(b, _)| LogHead::parse(b));
            let segmented = matches!(parsed, Some(LogHead::Segmented { .. }));
            let expect = || match &head {
                Some((_, v)) => Expect::Version(v.clone()),
                None => Expect::Absent,
            };
            if !segmented && op.chunk_size.is_none() {
                // One document: read, append, compare-and-swap.
                let mut data = match &parsed {
                    Some(LogHead::Single { data, .. }) => data.clone(),
                    _ => Map::new(),
                };
                let mut items = match data.remove(op.field) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                if let Some(max) = op.max_items {
                    if items.len() as u64 >= max {
                        return Err(AppendError::LimitExceeded(max).into());
                    }
                }
                let latest = items.last().map_or(-1, element_ts);
                let ts = next_ts(op.ts, latest, op.now)?;
                items.push(element(ts, op.item, op.author));
                let n = items.len() as u64;
                let hash = append_hash(n, op.item);
                data.insert(op.field.to_owned(), Value::Array(items));
                if self
                    .put_if(key, single_doc_bytes(&data, ts, &hash), expect())
                    .await?
                {
                    return Ok((hash, ts));
                }
                continue;
            }
            let chunk_size = match &parsed {
                Some(LogHead::Segmented { chunk_size, .. }) => *chunk_size,
                _ => op
                    .chunk_size
                    .unwrap_or(crate::protocol::append::DEFAULT_CHUNK_SIZE),
            }
            .max(1);
            let (data, sealed_n, head_ts, head_hash, tail_key) = match parsed {
                Some(LogHead::Segmented {
                    data,
                    sealed_n,
                    ts,
                    hash,
                    tail_key,
                    ..
                }) => (data, sealed_n, ts, hash, tail_key),
                Some(LogHead::Single { mut data, hash }) => {
                    // A single-document log becomes segmented on its first append
                    // under `chunkSize`; chunks are a function of the head just read,
                    // so racing migrators write the same bytes.
                    let items = match data.remove(op.field) {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    };
                    let mut sealed = 0u64;
                    let mut last_ts = -1;
                    let mut tail = None;
                    for chunk in items.chunks(chunk_size as usize) {
                        let first = element_ts(&chunk[0]).max(0) as u64;
                        let key = chunk_key(key, first);
                        let path = Path::parse(key.as_str()).map_err(StoreError::from)?;
                        let bytes = Value::Array(chunk.to_vec()).to_string();
                        self.inner
                            .put(&path, PutPayload::from(bytes))
                            .await
                            .map_err(StoreError::from)?;
                        last_ts = element_ts(&chunk[chunk.len() - 1]);
                        if chunk.len() as u64 == chunk_size {
                            sealed += chunk.len() as u64;
                        } else {
                            tail = Some(key);
                        }
                    }
                    let tail = tail.unwrap_or_else(|| chunk_key(key, (last_ts + 1).max(0) as u64));
                    let n = items.len() as u64;
                    let bytes = seg_head_bytes(&data, n, sealed, last_ts, &hash, chunk_size, &tail);
                    self.put_if(key, bytes, expect()).await?;
                    continue; // re-read the migrated head
                }
                None => (Map::new(), 0, -1, String::new(), None),
            };
            // The open chunk, as stored now.
            let tail = match &tail_key {
                Some(k) => self.read_versioned_key(k).await?,
                None => None,
            };
            let tail_items = tail
                .as_ref()
                .map(|(b, _)| parse_chunk(b))
                .unwrap_or_default();
            let count = sealed_n + tail_items.len() as u64;
            if let Some(max) = op.max_items {
                if count >= max {
                    return Err(AppendError::LimitExceeded(max).into());
                }
            }
            // Never before the head's last element nor before the chunk's own key, so
            // chunk keys stay in timestamp order whatever the writers' clocks say.
            let key_floor = tail_key
                .as_deref()
                .and_then(|k| chunk_key_ts(key, k))
                .map_or(-1, |t| t as i64 - 1);
            let latest = tail_items
                .last()
                .map_or(-1, element_ts)
                .max(head_ts)
                .max(key_floor);
            let ts = next_ts(op.ts, latest, op.now)?;
            let Some(tail_key) = tail_key.filter(|_| (tail_items.len() as u64) < chunk_size) else {
                // Open a new chunk: first point the head at it, then fill it.
                let new_key = chunk_key(key, ts);
                let bytes = seg_head_bytes(
                    &data, count, count, head_ts, &head_hash, chunk_size, &new_key,
                );
                self.put_if(key, bytes, expect()).await?;
                continue;
            };
            let mut items = tail_items;
            items.push(element(ts, op.item, op.author));
            let tail_expect = match tail {
                Some((_, v)) => Expect::Version(v),
                None => Expect::Absent,
            };
            if !self
                .put_if(
                    &tail_key,
                    Value::Array(items.clone()).to_string().into_bytes(),
                    tail_expect,
                )
                .await?
            {
                continue;
            }
            // Committed. Bring the head's count and hash up to date unless a later
            // append already did.
            let n = sealed_n + items.len() as u64;
            let hash = append_hash(n, op.item);
            for _ in 0..APPEND_ATTEMPTS {
                let current = self.read_versioned_key(key).await?;
                let (head_n, head_tail) =
                    match current.as_ref().and_then(|(b, _)| LogHead::parse(b)) {
                        Some(LogHead::Segmented { n, tail_key, .. }) => (n, tail_key),
                        _ => (0, None),
                    };
                if head_n >= n || head_tail.as_deref() != Some(tail_key.as_str()) {
                    break;
                }
                let expect = match current {
                    Some((_, v)) => Expect::Version(v),
                    None => Expect::Absent,
                };
                let bytes =
                    seg_head_bytes(&data, n, sealed_n, ts as i64, &hash, chunk_size, &tail_key);
                if self.put_if(key, bytes, expect).await? {
                    break;
                }
            }
            return Ok((hash, ts));
        }
        Err(AppendFailure::Contended)
    }

    /// Reads the elements of a log in `range`; `None` when there is no log.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) async fn read_log(
        &self,
        key: &ObjectKey,
        field: &str,
        range: LogRange,
    ) -> Result<Option<LogRead>, StoreError> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(None);
        };
        let Some(head) = LogHead::parse(&bytes) else {
            return Ok(None);
        };
        match head {
            LogHead::Single { mut data, hash } => {
                let items = match data.remove(field) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                Ok(Some(LogRead {
                    data,
                    elements: range.apply(items),
                    hash,
                }))
            }
            LogHead::Segmented {
                data,
                hash,
                chunk_size,
                ..
            } => {
                let elements = if range.last == Some(0) {
                    Vec::new()
                } else {
                    let chunks = self.chunks_for(key.as_str(), range, chunk_size).await?;
                    range.apply(chunks)
                };
                Ok(Some(LogRead {
                    data,
                    elements,
                    hash,
                }))
            }
        }
    }

    /// Elements of the chunks a range can need, in order (the reference's selection).
    async fn chunks_for(
        &self,
        key: &str,
        range: LogRange,
        chunk_size: u64,
    ) -> Result<Vec<Value>, StoreError> {
        let prefix = seg_prefix(key);
        let prefix_path = Path::parse(prefix.trim_end_matches('/'))?;
        let mut keys: Vec<String> = Vec::new();
        let mut listing = self.inner.list(Some(&prefix_path));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let k = meta.location.to_string();
            if chunk_key_ts(key, &k).is_some() {
                keys.push(k);
            }
        }
        keys.sort();
        let mut start = 0;
        if let Some(cp) = range.checkpoint.filter(|c| *c > 0) {
            let cp_key = chunk_key(key, cp);
            start = keys.partition_point(|k| *k <= cp_key).saturating_sub(1);
        }
        let mut needed = &keys[start..];
        if let Some(last) = range.last.filter(|l| *l > 0) {
            let max_chunks = (last.div_ceil(chunk_size) + 1) as usize;
            if needed.len() > max_chunks {
                needed = &needed[needed.len() - max_chunks..];
            }
        }
        let reads = needed.iter().map(|k| async move {
            let path = Path::parse(k.as_str())?;
            self.get_versioned(&path)
                .await
                .map(|read| read.map(|(bytes, _)| bytes))
        });
        let chunks = futures::future::try_join_all(reads).await?;
        Ok(chunks
            .into_iter()
            .flatten()
            .flat_map(|b| parse_chunk(&b))
            .collect())
    }
}
