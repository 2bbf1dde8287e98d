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

use super::{Expect, NsStore, ObjectKey, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use object_store::UpdateVersion;
use serde_json::{Map, Value};
use starfish_protocol::AuthorProof;
use starfish_protocol::append::{
    AppendError, DEFAULT_CHUNK_SIZE, LogHead, LogRange, append_hash, chunk_key, chunk_key_ts,
    element, element_ts, next_ts, seg_head_bytes, seg_prefix, single_doc_bytes,
};

/// Chunks of one log read at once by a pull.
const CHUNK_READS_IN_FLIGHT: usize = 4;
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
pub struct AppendOp<'a> {
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
    /// Largest a single-document log may grow to, in bytes.
    pub max_single_bytes: u64,
    /// The server clock.
    pub now: u64,
}

/// Why an append did not land.
#[derive(Debug, thiserror::Error)]
pub enum AppendFailure {
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
pub struct LogRead {
    /// `data` without the elements.
    pub data: Map<String, Value>,
    /// The selected elements, oldest first.
    pub elements: Vec<Value>,
    /// The stored hash.
    pub hash: String,
    /// Elements after the checkpoint were left out by the range's `first`.
    pub more: bool,
}

fn parse_chunk(bytes: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// The elements under `field`, taken out of a log document.
fn take_items(data: &mut Map<String, Value>, field: &str) -> Vec<Value> {
    match data.remove(field) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

fn expect_of(read: Option<(Bytes, UpdateVersion)>) -> Expect {
    read.map_or(Expect::Absent, |(b, v)| Expect::Version(v, b.len()))
}

/// A log's head as last read: its bytes' version and what it says.
struct Head {
    version: Option<(Bytes, UpdateVersion)>,
    parsed: Option<LogHead>,
}

impl Head {
    fn expect(&self) -> Expect {
        expect_of(self.version.clone())
    }
}

/// One attempt's outcome: done, or another writer won and the log must be re-read.
enum Step {
    Done(String, u64),
    Retry,
}

/// The segmented head's fields an append works with.
struct Segments {
    data: Map<String, Value>,
    sealed_n: u64,
    head_ts: i64,
    head_hash: String,
    tail_key: Option<String>,
    chunk_size: u64,
}

impl Segments {
    /// The head's fields (a new log when there is no head yet).
    fn of(parsed: Option<LogHead>, chunk_size: Option<u64>) -> Self {
        let default_size = chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        match parsed {
            Some(LogHead::Segmented {
                data,
                sealed_n,
                ts,
                hash,
                tail_key,
                chunk_size,
                ..
            }) => Self {
                data,
                sealed_n,
                head_ts: ts,
                head_hash: hash,
                tail_key,
                chunk_size: chunk_size.max(1),
            },
            _ => Self {
                data: Map::new(),
                sealed_n: 0,
                head_ts: -1,
                head_hash: String::new(),
                tail_key: None,
                chunk_size: default_size.max(1),
            },
        }
    }

    /// The head's bytes with these counters.
    fn head_bytes(&self, n: u64, sealed_n: u64, ts: i64, hash: &str, tail_key: &str) -> Vec<u8> {
        seg_head_bytes(&self.data, n, sealed_n, ts, hash, self.chunk_size, tail_key)
    }
}

impl NsStore {
    async fn read_versioned_key(
        &self,
        key: &str,
    ) -> Result<Option<(Bytes, UpdateVersion)>, StoreError> {
        self.read(&self.path_of(key)?).await
    }

    async fn put_key_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let document = super::quota::is_document(key);
        self.put_counted(&self.path_of(key)?, bytes, expect, document)
            .await
    }

    /// Appends one element. Returns the new log hash and the element's timestamp.
    ///
    /// # Errors
    /// [`AppendFailure`]; nothing is written on a refusal.
    pub async fn append(&self, op: &AppendOp<'_>) -> Result<(String, u64), AppendFailure> {
        // Stores without conditional updates: one writer per log in this process.
        let _guard = if self.docs.caps.conditional_update {
            None
        } else {
            Some(self.write_lock(&self.path(op.key)).lock().await)
        };
        for attempt in 0..APPEND_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let version = self.read_versioned_key(op.key.as_str()).await?;
            let parsed = version.as_ref().and_then(|(b, _)| LogHead::parse(b));
            let head = Head { version, parsed };
            let step = match head.parsed {
                Some(LogHead::Segmented { .. }) => self.append_segmented(op, head).await?,
                _ if op.chunk_size.is_none() => self.append_single(op, head).await?,
                Some(LogHead::Single { .. }) => self.migrate(op, head).await?,
                None => self.append_segmented(op, head).await?,
            };
            if let Step::Done(hash, ts) = step {
                return Ok((hash, ts));
            }
        }
        Err(AppendFailure::Contended)
    }

    /// A single-document log: read, append, compare-and-swap.
    async fn append_single(&self, op: &AppendOp<'_>, head: Head) -> Result<Step, AppendFailure> {
        let mut data = match &head.parsed {
            Some(LogHead::Single { data, .. }) => data.clone(),
            _ => Map::new(),
        };
        let mut items = take_items(&mut data, op.field);
        if let Some(max) = op.max_items {
            if items.len() as u64 >= max {
                return Err(AppendError::LimitExceeded(max).into());
            }
        }
        let latest = items.last().map_or(-1, element_ts);
        let ts = next_ts(op.ts, latest, op.now)?;
        items.push(element(ts, op.item, op.author));
        let held = items.len() as u64 - 1;
        let hash = append_hash(items.len() as u64, op.item);
        data.insert(op.field.to_owned(), Value::Array(items));
        let bytes = single_doc_bytes(&data, ts, &hash);
        // Every append rewrites the whole document: past the cap, nothing is written.
        if bytes.len() as u64 > op.max_single_bytes {
            return Err(AppendError::TooLarge {
                held,
                max_bytes: op.max_single_bytes,
            }
            .into());
        }
        Ok(
            if self
                .put_key_if(op.key.as_str(), bytes, head.expect())
                .await?
            {
                Step::Done(hash, ts)
            } else {
                Step::Retry
            },
        )
    }

    /// A single-document log becomes segmented on its first append under `chunkSize`.
    /// Chunks are a function of the head just read, so racing migrators write the
    /// same bytes; the head is then swapped and the append retried on it.
    async fn migrate(&self, op: &AppendOp<'_>, head: Head) -> Result<Step, AppendFailure> {
        let expect = head.expect();
        let Some(LogHead::Single { mut data, hash }) = head.parsed else {
            return Ok(Step::Retry);
        };
        let key = op.key.as_str();
        let chunk_size = op.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE).max(1);
        let items = take_items(&mut data, op.field);
        let (mut sealed, mut last_ts, mut tail) = (0u64, -1, None);
        for chunk in items.chunks(chunk_size as usize) {
            let first = chunk.first().map_or(0, |e| element_ts(e).max(0) as u64);
            let chunk_key = chunk_key(key, first);
            // Created, never overwritten: racing migrators write the same bytes, and
            // a chunk that exists already is one of them.
            let bytes = Value::Array(chunk.to_vec()).to_string().into_bytes();
            self.put_key_if(&chunk_key, bytes, Expect::Absent).await?;
            last_ts = chunk.last().map_or(last_ts, element_ts);
            if chunk.len() as u64 == chunk_size {
                sealed += chunk.len() as u64;
            } else {
                tail = Some(chunk_key);
            }
        }
        let tail = tail.unwrap_or_else(|| chunk_key(key, (last_ts + 1).max(0) as u64));
        let n = items.len() as u64;
        let bytes = seg_head_bytes(&data, n, sealed, last_ts, &hash, chunk_size, &tail);
        self.put_key_if(key, bytes, expect).await?;
        Ok(Step::Retry) // re-read the migrated head
    }

    /// A segmented log: a conditional write of the tail chunk commits the element.
    async fn append_segmented(&self, op: &AppendOp<'_>, head: Head) -> Result<Step, AppendFailure> {
        let key = op.key.as_str();
        let expect = head.expect();
        let mut seg = Segments::of(head.parsed, op.chunk_size);
        // A head names its own chunks only: a tail key elsewhere is never written to.
        seg.tail_key = seg.tail_key.filter(|k| chunk_key_ts(key, k).is_some());
        // The open chunk, as stored now.
        let tail = match &seg.tail_key {
            Some(k) => self.read_versioned_key(k).await?,
            None => None,
        };
        let mut items = tail
            .as_ref()
            .map(|(b, _)| parse_chunk(b))
            .unwrap_or_default();
        let count = seg.sealed_n + items.len() as u64;
        if let Some(max) = op.max_items {
            if count >= max {
                return Err(AppendError::LimitExceeded(max).into());
            }
        }
        // Never before the head's last element nor before the chunk's own key, so
        // chunk keys stay in timestamp order whatever the writers' clocks say.
        let key_floor = seg
            .tail_key
            .as_deref()
            .and_then(|k| chunk_key_ts(key, k))
            .map_or(-1, |t| t as i64 - 1);
        let latest = items
            .last()
            .map_or(-1, element_ts)
            .max(seg.head_ts)
            .max(key_floor);
        let ts = next_ts(op.ts, latest, op.now)?;
        let open = seg
            .tail_key
            .as_deref()
            .filter(|_| (items.len() as u64) < seg.chunk_size);
        let Some(tail_key) = open else {
            // Open a new chunk: first point the head at it, then fill it.
            let new_key = chunk_key(key, ts);
            let bytes = seg.head_bytes(count, count, seg.head_ts, &seg.head_hash, &new_key);
            self.put_key_if(key, bytes, expect).await?;
            return Ok(Step::Retry);
        };
        items.push(element(ts, op.item, op.author));
        let n = seg.sealed_n + items.len() as u64;
        let chunk = Value::Array(items).to_string().into_bytes();
        if !self.put_key_if(tail_key, chunk, expect_of(tail)).await? {
            return Ok(Step::Retry);
        }
        let hash = append_hash(n, op.item);
        self.catch_up_head(key, &seg, tail_key, n, ts, &hash)
            .await?;
        Ok(Step::Done(hash, ts))
    }

    /// After a committed append: bring the head's count and hash up to date unless a
    /// later append already did.
    async fn catch_up_head(
        &self,
        key: &str,
        seg: &Segments,
        tail_key: &str,
        n: u64,
        ts: u64,
        hash: &str,
    ) -> Result<(), StoreError> {
        for _ in 0..APPEND_ATTEMPTS {
            let current = self.read_versioned_key(key).await?;
            let (head_n, head_tail) = match current.as_ref().and_then(|(b, _)| LogHead::parse(b)) {
                Some(LogHead::Segmented { n, tail_key, .. }) => (n, tail_key),
                _ => (0, None),
            };
            if head_n >= n || head_tail.as_deref() != Some(tail_key) {
                break;
            }
            let bytes = seg.head_bytes(n, seg.sealed_n, ts as i64, hash, tail_key);
            if self.put_key_if(key, bytes, expect_of(current)).await? {
                break;
            }
        }
        Ok(())
    }

    /// Reads the elements of a log in `range`; `None` when there is no log.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn read_log(
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
                let (elements, more) = range.apply(items);
                Ok(Some(LogRead {
                    data,
                    elements,
                    hash,
                    more,
                }))
            }
            LogHead::Segmented {
                data,
                hash,
                chunk_size,
                ..
            } => {
                let (elements, more) = if range.last == Some(0) {
                    (Vec::new(), false)
                } else {
                    let chunks = self.chunks_for(key.as_str(), range, chunk_size).await?;
                    range.apply(chunks)
                };
                Ok(Some(LogRead {
                    data,
                    elements,
                    hash,
                    more,
                }))
            }
        }
    }

    /// Elements of the chunks a range can need, in order (the reference's selection);
    /// with `first`, only until more than `first` elements after the checkpoint are in
    /// hand.
    async fn chunks_for(
        &self,
        key: &str,
        range: LogRange,
        chunk_size: u64,
    ) -> Result<Vec<Value>, StoreError> {
        let prefix = seg_prefix(key);
        let prefix_path = self.path_of(prefix.trim_end_matches('/'))?;
        let mut keys: Vec<String> = Vec::new();
        let mut listing = self.docs.inner.list(Some(&prefix_path));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let Some(k) = self.relative(&meta.location) else {
                continue;
            };
            if chunk_key_ts(key, k).is_some() {
                keys.push(k.to_owned());
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
            let max_chunks =
                usize::try_from(last.div_ceil(chunk_size).saturating_add(1)).unwrap_or(usize::MAX);
            if needed.len() > max_chunks {
                needed = &needed[needed.len() - max_chunks..];
            }
        }
        // Enough for `first`: one element past it says there is more.
        let enough = match (range.last, range.first) {
            (None, Some(first)) => usize::try_from(first)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
            _ => usize::MAX,
        };
        let after = range.after();
        let mut elements = Vec::new();
        let mut wanted = 0usize;
        // A few chunk reads in flight at once, in order, whatever the log's length.
        for batch in needed.chunks(CHUNK_READS_IN_FLIGHT) {
            let reads = batch.iter().map(|k| self.read_versioned_key(k));
            let read = futures::future::try_join_all(reads).await?;
            for (bytes, _) in read.into_iter().flatten() {
                let chunk = parse_chunk(&bytes);
                wanted += chunk
                    .iter()
                    .filter(|e| after.is_none_or(|cp| element_ts(e) > cp))
                    .count();
                elements.extend(chunk);
            }
            if wanted >= enough {
                break;
            }
        }
        Ok(elements)
    }
}
