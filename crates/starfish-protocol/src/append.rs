//! Append-only logs (§4.7, §5.6): elements, hashes, timestamps and the stored head,
//! in the reference's layouts (one document, or a head plus chunks). Pure.

use crate::canonical::compute_hash;
use crate::document::AuthorProof;
use serde_json::{Map, Value};

/// Chunks live under `<documentKey>__seg/`.
pub const SEG_SUFFIX: &str = "__seg/";
/// Width of the zero-padded first-element timestamp in a chunk key.
pub const SEG_TS_WIDTH: usize = 16;
/// Chunk size of a segmented log whose head does not say.
pub const DEFAULT_CHUNK_SIZE: u64 = 10_000;
/// How far in the future a client-chosen `ts` may be, in ms.
pub const MAX_FUTURE_MS: u64 = 300_000;

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// `ts` not after the last element: 409 `non_monotonic_timestamp`.
    #[error("non_monotonic_timestamp")]
    NonMonotonic,
    /// The log holds `maxItems` already: 409 `append_limit_exceeded`.
    #[error("append_limit_exceeded")]
    LimitExceeded(u64),
    /// A single-document log holding `held` elements would grow past `max_bytes`:
    /// 409 `append_limit_exceeded` with `maxBytes`.
    #[error("append_limit_exceeded")]
    TooLarge {
        /// Elements the log holds.
        held: u64,
        /// The cap, in bytes.
        max_bytes: u64,
    },
}

/// The prefix of a log's chunk keys.
pub fn seg_prefix(document_key: &str) -> String {
    format!("{document_key}{SEG_SUFFIX}")
}

/// The key of the chunk whose first element has timestamp `first_ts`.
pub fn chunk_key(document_key: &str, first_ts: u64) -> String {
    format!(
        "{}{first_ts:0width$}",
        seg_prefix(document_key),
        width = SEG_TS_WIDTH
    )
}

/// The timestamp in a chunk key, if it is one.
pub fn chunk_key_ts(document_key: &str, key: &str) -> Option<u64> {
    key.strip_prefix(&seg_prefix(document_key))?.parse().ok()
}

/// One stored element: `{ts, data[, authorPubkey, authorSignature]}`.
pub fn element(ts: u64, item: &Map<String, Value>, author: Option<&AuthorProof>) -> Value {
    let mut e = Map::new();
    e.insert("ts".into(), Value::from(ts));
    e.insert("data".into(), Value::Object(item.clone()));
    if let Some(a) = author {
        a.write_to(&mut e);
    }
    Value::Object(e)
}

/// The `ts` of an element (`-1` for a malformed one, as the reference reads it).
pub fn element_ts(e: &Value) -> i64 {
    e.get("ts").and_then(Value::as_f64).map_or(-1, |t| t as i64)
}

/// The log hash after an append: `sha256(stableStringify({n, last: item}))`.
pub fn append_hash(n: u64, item: &Map<String, Value>) -> String {
    let mut m = Map::new();
    m.insert("n".into(), Value::from(n));
    m.insert("last".into(), Value::Object(item.clone()));
    compute_hash(&Value::Object(m))
}

/// The element's timestamp: the client's (strictly after `latest`) or
/// `max(now, latest + 1)`.
///
/// # Errors
/// [`AppendError::NonMonotonic`].
pub fn next_ts(provided: Option<u64>, latest: i64, now: u64) -> Result<u64, AppendError> {
    match provided {
        Some(ts) if (ts as i64) > latest => Ok(ts),
        Some(_) => Err(AppendError::NonMonotonic),
        None => Ok(now.max((latest + 1).max(0) as u64)),
    }
}

/// What is stored at a log's key.
#[derive(Debug, Clone, PartialEq)]
pub enum LogHead {
    /// One document: `{"v":1,"data":{…,"<field>":[elements]},"ts","hash"}`.
    Single {
        /// All of `data`, the element array included.
        data: Map<String, Value>,
        /// The stored hash.
        hash: String,
    },
    /// A head plus chunks: `{"v":1,"seg":true,"data":{other fields},"n","sealedN","ts","hash","chunkSize","tailKey"}`.
    Segmented {
        /// `data` without the element array.
        data: Map<String, Value>,
        /// Elements in all chunks, as the head last knew.
        n: u64,
        /// Elements in sealed chunks (all but the tail).
        sealed_n: u64,
        /// Timestamp of the last element, as the head last knew.
        ts: i64,
        /// The stored hash.
        hash: String,
        /// Elements per chunk.
        chunk_size: u64,
        /// The open chunk.
        tail_key: Option<String>,
    },
}

impl LogHead {
    /// Parses a stored head; `None` when the bytes are not a JSON object.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(bytes) else {
            return None;
        };
        let data = match doc.get("data") {
            Some(Value::Object(d)) => d.clone(),
            _ => Map::new(),
        };
        let hash = doc
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if doc.get("seg") == Some(&Value::Bool(true)) {
            let num = |k: &str| doc.get(k).and_then(Value::as_u64);
            let n = num("n").unwrap_or(0);
            Some(Self::Segmented {
                data,
                n,
                sealed_n: num("sealedN").unwrap_or(0),
                ts: doc
                    .get("ts")
                    .and_then(Value::as_f64)
                    .map_or(-1, |t| t as i64),
                hash,
                chunk_size: num("chunkSize")
                    .filter(|c| *c > 0)
                    .unwrap_or(DEFAULT_CHUNK_SIZE),
                tail_key: doc
                    .get("tailKey")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        } else {
            Some(Self::Single { data, hash })
        }
    }
}

/// Bytes of a single-document log.
pub fn single_doc_bytes(data: &Map<String, Value>, ts: u64, hash: &str) -> Vec<u8> {
    let mut doc = Map::new();
    doc.insert("v".into(), Value::from(1));
    doc.insert("data".into(), Value::Object(data.clone()));
    doc.insert("ts".into(), Value::from(ts));
    doc.insert("hash".into(), Value::from(hash));
    Value::Object(doc).to_string().into_bytes()
}

/// Bytes of a segmented head.
pub fn seg_head_bytes(
    data: &Map<String, Value>,
    n: u64,
    sealed_n: u64,
    ts: i64,
    hash: &str,
    chunk_size: u64,
    tail_key: &str,
) -> Vec<u8> {
    let mut doc = Map::new();
    doc.insert("v".into(), Value::from(1));
    doc.insert("seg".into(), Value::Bool(true));
    doc.insert("data".into(), Value::Object(data.clone()));
    doc.insert("n".into(), Value::from(n));
    doc.insert("sealedN".into(), Value::from(sealed_n));
    doc.insert("ts".into(), Value::from(ts));
    doc.insert("hash".into(), Value::from(hash));
    doc.insert("chunkSize".into(), Value::from(chunk_size));
    doc.insert("tailKey".into(), Value::from(tail_key));
    Value::Object(doc).to_string().into_bytes()
}

/// Which elements a pull wants (§4.7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogRange {
    /// Only elements with `ts` strictly greater.
    pub checkpoint: Option<u64>,
    /// Only the last `n` (after the checkpoint filter).
    pub last: Option<u64>,
    /// Without `last`: only the first `n` (after the checkpoint filter), the server's
    /// bound on a pull that names none.
    pub first: Option<u64>,
}

impl LogRange {
    /// The checkpoint as an element timestamp; `None` when it filters nothing.
    pub fn after(&self) -> Option<i64> {
        // Past i64::MAX a checkpoint is newer than every element.
        self.checkpoint
            .filter(|c| *c > 0)
            .map(|cp| i64::try_from(cp).unwrap_or(i64::MAX))
    }

    /// Applies the range to elements in order; `true` when elements after the
    /// checkpoint were left out by `first` (the client should pull again from the
    /// last one returned).
    pub fn apply(&self, mut elements: Vec<Value>) -> (Vec<Value>, bool) {
        if let Some(cp) = self.after() {
            let start = elements.partition_point(|e| element_ts(e) <= cp);
            elements.drain(..start);
        }
        let mut more = false;
        if let Some(last) = self.last {
            let keep = usize::try_from(last)
                .unwrap_or(usize::MAX)
                .min(elements.len());
            elements.drain(..elements.len() - keep);
        } else if let Some(first) = self.first {
            let keep = usize::try_from(first).unwrap_or(usize::MAX);
            more = elements.len() > keep;
            elements.truncate(keep);
        }
        (elements, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn append_hash_matches_the_reference_vector() {
        let item = json!({"msg": "first"}).as_object().unwrap().clone();
        assert_eq!(
            append_hash(1, &item),
            "0f66dae7d0cca59dfe1f1da892fa67434b7b3ea1c83ecc605669c302b6dc54e8"
        );
    }

    #[test]
    fn timestamps_increase_strictly() {
        assert_eq!(next_ts(None, -1, 100), Ok(100));
        assert_eq!(next_ts(None, 200, 100), Ok(201));
        assert_eq!(next_ts(Some(5), 4, 100), Ok(5));
        assert_eq!(next_ts(Some(4), 4, 100), Err(AppendError::NonMonotonic));
    }

    #[test]
    fn chunk_keys_sort_chronologically() {
        assert_eq!(chunk_key("l", 42), "l__seg/0000000000000042");
        assert_eq!(chunk_key_ts("l", "l__seg/0000000000000042"), Some(42));
        assert!(chunk_key("l", 99) < chunk_key("l", 100));
    }

    #[test]
    fn ranges_filter_then_take_the_tail() {
        let els: Vec<Value> = (1..=5).map(|t| json!({"ts": t, "data": {}})).collect();
        let r = LogRange {
            checkpoint: Some(2),
            last: Some(2),
            first: Some(1),
        };
        assert_eq!(
            r.apply(els.clone())
                .0
                .iter()
                .map(element_ts)
                .collect::<Vec<_>>(),
            [4, 5]
        );
        let r = LogRange {
            checkpoint: Some(0),
            ..LogRange::default()
        };
        assert_eq!(r.apply(els.clone()).0.len(), 5);
        let r = LogRange {
            last: Some(0),
            ..LogRange::default()
        };
        assert!(r.apply(els).0.is_empty());
    }

    #[test]
    fn without_a_tail_the_first_elements_after_the_checkpoint_are_kept() {
        let els: Vec<Value> = (1..=5).map(|t| json!({"ts": t, "data": {}})).collect();
        let range = |checkpoint, first| LogRange {
            checkpoint,
            last: None,
            first,
        };
        let ts = |(els, more): (Vec<Value>, bool)| {
            (els.iter().map(element_ts).collect::<Vec<_>>(), more)
        };
        assert_eq!(
            ts(range(Some(1), Some(2)).apply(els.clone())),
            (vec![2, 3], true)
        );
        assert_eq!(
            ts(range(Some(3), Some(2)).apply(els.clone())),
            (vec![4, 5], false)
        );
        assert_eq!(
            ts(range(None, Some(5)).apply(els.clone())),
            (vec![1, 2, 3, 4, 5], false)
        );
        assert_eq!(ts(range(Some(9), Some(1)).apply(els)), (vec![], false));
    }
}
