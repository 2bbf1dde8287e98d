//! The one read path: single pulls, bundle members and batch entries all come here,
//! so `ttlMs`, log bounds and `fieldPermissions` hold in each of them.

use super::{BoundError, DocRef, LogLimits, LogQuery, SyncError};
use crate::access::holds_any;
use crate::auth::Caller;
use crate::config::AppendOnly;
use crate::store::{DocLayout, etag};
use crate::store::{NsStore, ObjectKey};
use axum::http::HeaderValue;
use serde_json::{Map, Value};
use starfish_protocol::StoredDoc;
use starfish_protocol::append::LogRange;
use starfish_protocol::document::pull_body;

/// What one key holds, as the caller may see it.
#[derive(Debug)]
pub(crate) enum Read {
    /// A regular document; `None` when missing, corrupt or expired.
    Document(Option<StoredDoc>),
    /// An append-only log's elements in the asked range, inside the document's other fields.
    Log(LogView),
}

/// A log as a pull returns it.
#[derive(Debug)]
pub(crate) struct LogView {
    /// The document's fields, with the elements under the collection's field.
    pub(crate) data: Map<String, Value>,
    /// The log hash (`""` when there is no log).
    pub(crate) hash: String,
    /// Elements after the checkpoint were left out by the server's bound: the
    /// response says `"hasMore": true`.
    pub(crate) more: bool,
}

/// Reads `doc` for `caller`. A log needs bounds (`log`): the same rule for a single
/// pull's query string and a batch entry's `appendParams`; `limits` bound what it
/// returns.
///
/// # Errors
/// [`SyncError::Bound`] for a log read without acceptable bounds; store failures.
pub(crate) async fn read(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    log: LogQuery,
    limits: &LogLimits,
    now: u64,
) -> Result<Read, SyncError> {
    match &doc.collection.append_only {
        // A queue-only collection stores nothing: every pull reads as a document
        // never written, whatever its bounds (as the reference answers).
        Some(config) if !config.persist => Ok(Read::Document(None)),
        Some(config) => {
            let range = bounded_range(log, config, limits.pull_cap(config), now)?;
            read_log(store, doc, caller, config, range)
                .await
                .map(Read::Log)
        }
        None => read_document(store, doc, caller, now)
            .await
            .map(Read::Document),
    }
}

/// The bound rules of a log pull. At most `cap` elements are returned: a `last` is
/// clamped to it (the newest), and a pull without one (a checkpoint alone, or
/// `full`) gets the oldest `cap` after its checkpoint.
fn bounded_range(
    q: LogQuery,
    config: &AppendOnly,
    cap: u64,
    now: u64,
) -> Result<LogRange, BoundError> {
    if q.checkpoint.is_none() && q.last.is_none() && !q.full {
        return Err(BoundError::Required);
    }
    if q.full && (q.checkpoint.is_some() || q.last.is_some()) {
        return Err(BoundError::FullWithBounds);
    }
    if q.full && !config.allow_full {
        return Err(BoundError::FullNotAllowed);
    }
    if let (Some(cp), Some(age)) = (q.checkpoint, config.max_checkpoint_age_ms) {
        if cp < now.saturating_sub(age.get()) {
            return Err(BoundError::CheckpointTooOld);
        }
    }
    let last = q.last.map(|l| l.min(cap));
    Ok(LogRange {
        checkpoint: q.checkpoint,
        last,
        first: last.is_none().then_some(cap),
    })
}

async fn read_log(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    config: &AppendOnly,
    range: LogRange,
) -> Result<LogView, SyncError> {
    let log = store.read_log(doc.key, &config.field, range).await?;
    let (mut data, elements, hash, more) = match log {
        Some(l) => (l.data, l.elements, l.hash, l.more),
        None => (Map::new(), Vec::new(), String::new(), false),
    };
    filter_fields(&mut data, doc, caller);
    let elements = elements
        .into_iter()
        .map(|mut e| {
            if let Some(Value::Object(d)) = e.get_mut("data") {
                filter_fields(d, doc, caller);
            }
            e
        })
        .collect();
    data.insert(config.field.clone(), Value::Array(elements));
    Ok(LogView { data, hash, more })
}

/// A regular document: `None` when missing, corrupt, empty or expired (`ttlMs`);
/// fields the caller may not read removed (the hash still covers the whole
/// document, as in the reference).
async fn read_document(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    now: u64,
) -> Result<Option<StoredDoc>, SyncError> {
    let Some(stored) = read_stored(store, doc.key).await? else {
        return Ok(None);
    };
    Ok(visible(stored, doc, caller, now))
}

/// `stored` as `caller` sees it at `now`: `None` when expired or empty, without the
/// fields it may not read.
fn visible(mut stored: StoredDoc, doc: DocRef<'_>, caller: &Caller, now: u64) -> Option<StoredDoc> {
    if expired(doc, stored.ts, now) || (stored.hash.is_empty() && stored.data.is_empty()) {
        return None;
    }
    filter_fields(&mut stored.data, doc, caller);
    Some(stored)
}

/// Whether a document written at `ts` has outlived its collection's `ttlMs`.
fn expired(doc: DocRef<'_>, ts: u64, now: u64) -> bool {
    doc.collection
        .ttl_ms
        .is_some_and(|ttl| ts != 0 && now.saturating_sub(ts) > ttl.get())
}

/// The body of a pull of the document `doc` (not a log) and the ETag of its hash: the body of
/// [`pull_body`], without the author proof unless `author` (a batch entry has none).
/// A document in the plain stored layout (which has no author proof), in a collection without
/// field read permissions, is served with its `data` as stored, without building it
/// and writing it again; any other goes through [`StoredDoc`].
///
/// # Errors
/// Store failures.
pub(crate) async fn read_document_body(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    now: u64,
    author: bool,
) -> Result<(Vec<u8>, Option<HeaderValue>), SyncError> {
    let found = store.get_memo(doc.key).await?;
    let whole = doc
        .collection
        .field_permissions
        .iter()
        .all(|(_, perm)| perm.read.is_empty());
    if let (true, Some((bytes, memo))) = (whole, &found) {
        // A cached document's layout is worked out once, by its first pull.
        let computed;
        let layout = match memo {
            Some(memo) => memo.get_or_init(|| DocLayout::of(bytes)).as_ref(),
            None => {
                computed = DocLayout::of(bytes);
                computed.as_ref()
            }
        };
        if let Some(layout) = layout {
            let gone = expired(doc, layout.ts.unwrap_or(0), now)
                || (layout.hash().is_empty() && layout.data_is_empty());
            if !gone {
                return Ok((layout.pull_body(bytes, now), layout.etag()));
            }
            return Ok((pull_body_bytes(None, now), None));
        }
    }
    let bytes = found.map(|(bytes, _)| bytes);
    let stored = bytes
        .as_deref()
        .and_then(StoredDoc::parse)
        .and_then(|stored| visible(stored, doc, caller, now));
    let mut stored = stored;
    if !author {
        if let Some(d) = &mut stored {
            d.author = None;
        }
    }
    let tag = stored.as_ref().and_then(|d| etag(&d.hash));
    Ok((pull_body_bytes(stored.as_ref(), now), tag))
}

/// [`pull_body`] as JSON text.
fn pull_body_bytes(stored: Option<&StoredDoc>, now: u64) -> Vec<u8> {
    // Writing a value into a vector cannot fail.
    serde_json::to_vec(&pull_body(stored, now)).unwrap_or_default()
}

/// The stored document at `key`, unfiltered; `None` when missing or not a document.
///
/// # Errors
/// Store failures.
pub(crate) async fn read_stored(
    store: &NsStore,
    key: &ObjectKey,
) -> Result<Option<StoredDoc>, SyncError> {
    Ok(store.get(key).await?.as_deref().and_then(StoredDoc::parse))
}

/// Removes the top-level fields whose `fieldPermissions` readRoles the caller lacks.
fn filter_fields(data: &mut Map<String, Value>, doc: DocRef<'_>, caller: &Caller) {
    for (field, perm) in &doc.collection.field_permissions {
        if !perm.read.is_empty() && !holds_any(caller, &[], &perm.read, doc.params) {
            data.remove(field);
        }
    }
}
