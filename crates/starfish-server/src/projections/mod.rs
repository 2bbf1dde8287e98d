//! Projections, as the reference's `starfish-projection`: a source collection's
//! documents kept as entries of a target document (an index a client reads in one
//! pull), upserted or removed as the sources change.
//!
//! Where the reference folds each write's event into the list, a projection here
//! derives an entry from the source document **as it is stored** when it is
//! projected, and writes the target by compare-and-swap on the bytes it read before
//! it read the source. So concurrent writers on several nodes converge: whichever
//! projection commits last read the source after every projection it replaced, and
//! re-projecting any document (after a crash, a config change, a deleted target:
//! `starfish admin reproject`) gives the same target. Entries are kept sorted by
//! their source's key, and show only what any reader of the source collection sees.

use crate::config::Collection;
use crate::store::{CasError, NsStore, ObjectKey, PathParams, StoreError};
use serde_json::{Map, Value, json};
use starfish_protocol::document::StoredDoc;
use starfish_protocol::template::{PathTemplate, Segment};
use std::sync::Arc;

/// Entries a target holds at most, unless the projection says otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 1000;
/// Rounds of read-then-swap before a projection gives up (logged).
const MAX_ROUNDS: usize = 16;
/// The largest target written, bytes: past it, new entries are refused as past
/// `max_items` (every push to its sources rewrites it whole).
const MAX_TARGET_BYTES: usize = 1 << 20;

/// A projection: which collection's documents it follows, where each one's entry
/// goes, and what the entry is.
pub trait Projection: Send + Sync + std::fmt::Debug + 'static {
    /// The source collection's name (in every scope that has one: the root and
    /// each namespace, each projected into its own part of the store).
    fn source(&self) -> &str;

    /// The target document's key for a source document with these parameters;
    /// `None`: not projected.
    fn target(&self, params: &PathParams) -> Option<String>;

    /// The entry of a stored source document (`key` is its object key), without
    /// its `id` and `key`; `None`: the document has no entry (removed).
    fn entry(&self, key: &str, source: &StoredDoc) -> Option<Map<String, Value>>;

    /// Entries a target holds at most: past it, new entries are refused (logged,
    /// reported by `starfish admin reproject`).
    fn max_items(&self) -> usize {
        DEFAULT_MAX_ITEMS
    }
}

/// The declarative projection: for each document of `source`, an entry
/// `{id, key, hash, timestamp, <fields>}` in the document at `target` (a storage
/// path template filled from the source's parameters; `id` is the source's last
/// parameter).
#[derive(Debug, Clone)]
pub struct IndexProjection {
    source: String,
    target: PathTemplate,
    fields: Vec<String>,
    max_items: usize,
}

impl IndexProjection {
    /// Entries of `source`'s documents in `target`, with these top-level fields of
    /// each document's data.
    ///
    /// # Errors
    /// A target that is not a storage path template.
    pub fn new(source: &str, target: &str, fields: Vec<String>) -> Result<Self, String> {
        Ok(Self {
            source: source.to_owned(),
            target: PathTemplate::parse(target)?,
            fields,
            max_items: DEFAULT_MAX_ITEMS,
        })
    }

    /// At most `n` entries per target.
    #[must_use]
    pub fn with_max_items(mut self, n: usize) -> Self {
        self.max_items = n;
        self
    }
}

impl Projection for IndexProjection {
    fn source(&self) -> &str {
        &self.source
    }

    fn target(&self, params: &PathParams) -> Option<String> {
        self.target.resolve(|name| params.get(name))
    }

    fn entry(&self, _key: &str, source: &StoredDoc) -> Option<Map<String, Value>> {
        let mut entry = Map::new();
        for field in &self.fields {
            if let Some(value) = source.data.get(field) {
                entry.insert(field.clone(), value.clone());
            }
        }
        // The document's own, whatever its fields are named.
        entry.insert("hash".into(), json!(source.hash));
        entry.insert("timestamp".into(), json!(source.ts));
        Some(entry)
    }

    fn max_items(&self) -> usize {
        self.max_items
    }
}

/// The router's projections.
#[derive(Debug, Clone, Default)]
pub struct Projections(Vec<Arc<dyn Projection>>);

impl Projections {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `projection`.
    #[must_use]
    pub fn with(mut self, projection: Arc<dyn Projection>) -> Self {
        self.0.push(projection);
        self
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The projections of `collection`.
    pub(crate) fn of<'a>(
        &'a self,
        collection: &'a str,
    ) -> impl Iterator<Item = &'a Arc<dyn Projection>> {
        self.0.iter().filter(move |p| p.source() == collection)
    }
}

/// Why a document was not projected.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The target holds its `max_items` entries.
    #[error("projection target {target} is full ({max} entries, or 1 MiB): {key} not added")]
    Full {
        /// The target's key.
        target: String,
        /// Its bound.
        max: usize,
        /// The source document left out.
        key: String,
    },
    /// The target's key breaks the key rules.
    #[error("projection target {0:?} is not a valid key")]
    Target(String),
    /// Other writers kept changing the target.
    #[error("projection target {0} kept changing: not updated")]
    Contended(String),
    /// The store failed (a quota past its limit included).
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Projects the source document at `key` (of `collection`, with `params`) into
/// each of its projections' targets, in `store` (the collection's part of the
/// store: sealed when it is).
///
/// # Errors
/// The first projection that failed (the others are still tried).
pub(crate) async fn project(
    projections: &Projections,
    store: &NsStore,
    collection: &Collection,
    key: &ObjectKey,
    params: &PathParams,
    now: u64,
) -> Result<(), ProjectionError> {
    let mut first = Ok(());
    for projection in projections.of(collection.name.as_str()) {
        let done = project_one(projection.as_ref(), store, collection, key, params, now).await;
        if let Err(e) = done {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

async fn project_one(
    projection: &dyn Projection,
    store: &NsStore,
    collection: &Collection,
    key: &ObjectKey,
    params: &PathParams,
    now: u64,
) -> Result<(), ProjectionError> {
    let Some(target) = projection.target(params) else {
        return Ok(());
    };
    let target_key = fixed_key(&target).ok_or_else(|| ProjectionError::Target(target.clone()))?;
    let id = params
        .iter()
        .last()
        .map_or(key.as_str(), |(_, v)| v)
        .to_owned();
    for _ in 0..MAX_ROUNDS {
        // The target first, then the source: a swap on these bytes commits an
        // entry read after every entry it replaces.
        let before = store.get(&target_key).await?;
        let source = store.get(key).await?;
        let entry = source
            .as_deref()
            .and_then(StoredDoc::parse)
            .and_then(|doc| readable(collection, doc, now))
            .and_then(|doc| projection.entry(key.as_str(), &doc));
        let mut items = items_of(before.as_deref());
        if !fold(&mut items, &id, key.as_str(), entry) {
            return Ok(());
        }
        let count = items.len();
        let mut data = Map::new();
        data.insert("items".into(), Value::Array(items));
        let bytes = StoredDoc::new(data, now, None).to_bytes();
        if count > projection.max_items() || bytes.len() > MAX_TARGET_BYTES {
            return Err(ProjectionError::Full {
                target,
                max: projection.max_items(),
                key: key.as_str().to_owned(),
            });
        }
        let swapped = store
            .compare_and_swap(&target_key, |current| {
                if current == before.as_deref() {
                    Ok((bytes.clone(), ()))
                } else {
                    Err(())
                }
            })
            .await;
        match swapped {
            Ok(()) => return Ok(()),
            Err(CasError::Rejected(()) | CasError::Contended) => {}
            Err(CasError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ProjectionError::Contended(target))
}

/// The source as any reader of the collection sees it: fields with read roles of
/// their own left out (an index is read by whoever reads its collection), and
/// nothing for an expired or empty document (its entry is removed).
fn readable(collection: &Collection, mut doc: StoredDoc, now: u64) -> Option<StoredDoc> {
    if let Some(ttl) = collection.ttl_ms {
        if doc.ts.saturating_add(ttl.get()) <= now {
            return None;
        }
    }
    for (field, permission) in &collection.field_permissions {
        if !permission.read.is_empty() {
            doc.data.remove(field);
        }
    }
    (!doc.data.is_empty()).then_some(doc)
}

/// The entries of a stored target (none when absent or not one).
fn items_of(bytes: Option<&[u8]>) -> Vec<Value> {
    bytes
        .and_then(StoredDoc::parse)
        .and_then(|doc| match doc.data.get("items") {
            Some(Value::Array(items)) => Some(items.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Puts `entry` (or its absence) for `key` into `items`, sorted by key; false when
/// nothing changed.
fn fold(items: &mut Vec<Value>, id: &str, key: &str, entry: Option<Map<String, Value>>) -> bool {
    // By the source's whole key: two sources with the same last parameter never
    // share an entry.
    let at = items.binary_search_by(|item| item["key"].as_str().unwrap_or("").cmp(key));
    match (at, entry) {
        (Ok(i), None) => {
            items.remove(i);
            true
        }
        (Err(_), None) => false,
        (at, Some(mut entry)) => {
            entry.insert("id".into(), json!(id));
            entry.insert("key".into(), json!(key));
            let entry = Value::Object(entry);
            match at {
                Ok(i) if items[i] == entry => false,
                Ok(i) => {
                    items[i] = entry;
                    true
                }
                Err(i) => {
                    items.insert(i, entry);
                    true
                }
            }
        }
    }
}

/// What one call of reproject did (`POST /_starfish/admin/namespaces/<name>/reproject/<collection>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Reprojected {
    /// Source documents projected.
    pub projected: usize,
    /// The last source key done: call again with it to go on.
    pub after: Option<String>,
    /// True when every source document has been projected.
    pub done: bool,
    /// Documents that could not be projected, and why.
    pub errors: Vec<String>,
}

/// Projects again up to `limit` documents of `collection` after `after`, in key
/// order: call again with the answer's `after` until `done` (resumable: each step
/// is idempotent).
///
/// # Errors
/// The store failed while listing.
pub(crate) async fn reproject(
    projections: &Projections,
    store: &NsStore,
    collection: &Collection,
    after: Option<&str>,
    limit: usize,
    now: u64,
) -> Result<Reprojected, StoreError> {
    let template = &collection.storage_path;
    let fixed: Vec<&str> = template
        .segments()
        .iter()
        .map_while(|s| match s {
            Segment::Static(text) => Some(text.as_str()),
            Segment::Param(_) => None,
        })
        .collect();
    let mut report = Reprojected::default();
    if projections.of(collection.name.as_str()).next().is_none() {
        report.done = true;
        return Ok(report);
    }
    let Some(prefix) = fixed_key(&fixed.join("/")) else {
        report.done = true;
        report
            .errors
            .push("a storage path that starts with a parameter cannot be listed".into());
        return Ok(report);
    };
    let (keys, more) = store.list_deep_page(&prefix, after, limit).await?;
    for key in &keys {
        let Some((object, params)) = matching(template, key) else {
            continue;
        };
        if let Err(e) = project(projections, store, collection, &object, &params, now).await {
            report.errors.push(e.to_string());
        }
        report.projected += 1;
    }
    report.after = keys.last().cloned();
    report.done = !more;
    Ok(report)
}

/// `key`'s parameters when it is a document of `template`.
fn matching(template: &PathTemplate, key: &str) -> Option<(ObjectKey, PathParams)> {
    let parts: Vec<&str> = key.split('/').collect();
    let segments = template.segments();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        match segment {
            Segment::Static(text) if text == part => {}
            Segment::Static(_) => return None,
            Segment::Param(name) => params.push((name.clone(), (*part).to_owned())),
        }
    }
    let params = PathParams::checked(params).ok()?;
    let key = ObjectKey::resolve(template, segments.len(), &params, None).ok()?;
    Some((key, params))
}

/// `text` as a key, when it is a storage path without parameters that keeps the
/// key rules.
fn fixed_key(text: &str) -> Option<ObjectKey> {
    let template = PathTemplate::parse(text).ok()?;
    let n = template.segments().len();
    ObjectKey::resolve(&template, n, &PathParams::default(), None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_sorted_by_id_and_unchanged_entries_write_nothing() {
        let mut items = Vec::new();
        let entry = |n: u64| {
            let mut m = Map::new();
            m.insert("n".into(), json!(n));
            Some(m)
        };
        assert!(fold(&mut items, "b", "x/b", entry(1)));
        assert!(fold(&mut items, "a", "x/a", entry(1)));
        assert!(!fold(&mut items, "a", "x/a", entry(1)));
        assert!(fold(&mut items, "a", "x/a", entry(2)));
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(fold(&mut items, "a", "x/a", None));
        assert!(!fold(&mut items, "zz", "x/zz", None));
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn two_sources_with_the_same_last_parameter_have_two_entries() {
        let mut items = Vec::new();
        assert!(fold(&mut items, "x", "users/a/notes/x", Some(Map::new())));
        assert!(fold(&mut items, "x", "users/b/notes/x", Some(Map::new())));
        assert_eq!(items.len(), 2);
        assert!(fold(&mut items, "x", "users/a/notes/x", None));
        assert_eq!(items[0]["key"], "users/b/notes/x");
    }

    #[test]
    fn an_entry_shows_what_any_reader_sees_and_nothing_once_expired() {
        let config = crate::config::SyncConfig::from_value(json!({
            "version": 1,
            "collections": [{"name": "cards", "storagePath": "cards/{id}", "readRoles": ["public"],
                "writeRoles": ["public"], "ttlMs": 1000,
                "fieldPermissions": {"secret": {"readRoles": ["cap:read:secret"]}}}]
        }))
        .unwrap();
        let cards = config.routes.by_name["cards"].clone();
        let mut data = Map::new();
        data.insert("title".into(), json!("t"));
        data.insert("secret".into(), json!("s"));
        let doc = StoredDoc::new(data, 5_000, None);
        let seen = readable(&cards, doc.clone(), 5_500).unwrap();
        assert!(seen.data.contains_key("title") && !seen.data.contains_key("secret"));
        assert!(readable(&cards, doc, 6_000).is_none());
        let index =
            IndexProjection::new("cards", "index", vec!["secret".into(), "hash".into()]).unwrap();
        let mut data = Map::new();
        data.insert("hash".into(), json!("forged"));
        let entry = index
            .entry("cards/a", &StoredDoc::new(data, 1, None))
            .unwrap();
        assert_ne!(entry["hash"], "forged");
    }

    #[test]
    fn keys_match_their_template() {
        let t = PathTemplate::parse("boards/{board}/cards/{id}").unwrap();
        let (key, params) = matching(&t, "boards/b1/cards/c1").unwrap();
        assert_eq!(key.as_str(), "boards/b1/cards/c1");
        assert_eq!(params.get("board"), Some("b1"));
        assert!(matching(&t, "boards/b1/notes/c1").is_none());
        assert!(matching(&t, "boards/b1/cards/c1/x").is_none());
    }
}
