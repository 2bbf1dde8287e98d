//! One page of the keys under a prefix, in order, with an exclusive cursor.

use super::{NsStore, ObjectKey, StoreError};
use futures::StreamExt;
use std::collections::BTreeSet;

/// Names that are store bookkeeping (or a filesystem staging file), not documents.
fn is_bookkeeping(item: &str) -> bool {
    starfish_protocol::names::is_reserved(item) || item.contains('#')
}

impl NsStore {
    /// The names directly under `prefix/` (relative to it) after `after`, at most `limit` of
    /// them, and whether more follow. Memory stays bounded by the page size, whatever
    /// the backend's listing order.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_page(
        &self,
        prefix: &ObjectKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let prefix_path = self.path(prefix);
        let prefix_text = format!("{prefix_path}/");
        let mut listing = self.listing(&prefix_path, after);
        let mut smallest = Smallest::new(limit);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let Some(item) = meta.location.as_ref().strip_prefix(&prefix_text) else {
                continue;
            };
            // One level: deeper keys belong to other templates.
            if item.contains('/') || is_bookkeeping(item) || after.is_some_and(|a| item <= a) {
                continue;
            }
            smallest.keep(item.to_owned());
        }
        Ok(smallest.page())
    }

    /// Every key under `prefix/`, at any depth (relative to the namespace, as
    /// `prefix/...`), after `after`, at most `limit` of them, and whether more
    /// follow; bookkeeping objects left out. Memory stays bounded by the page size.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_deep_page(
        &self,
        prefix: &ObjectKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let prefix_path = self.path(prefix);
        let prefix_text = format!("{prefix_path}/");
        // Keys after `after` only: each page lists from where the last one ended.
        let from = after.and_then(|a| a.strip_prefix(&format!("{}/", prefix.as_str())));
        let mut listing = self.listing(&prefix_path, from);
        let mut smallest = Smallest::new(limit);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let Some(rest) = meta.location.as_ref().strip_prefix(&prefix_text) else {
                continue;
            };
            let key = format!("{}/{rest}", prefix.as_str());
            if rest.split('/').any(is_bookkeeping) || after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            smallest.keep(key);
        }
        Ok(smallest.page())
    }
}

impl NsStore {
    /// What the backend holds under `prefix_path`, from after `after` (a name
    /// relative to it) when given.
    fn listing<'a>(
        &'a self,
        prefix_path: &'a object_store::path::Path,
        after: Option<&str>,
    ) -> futures::stream::BoxStream<'a, object_store::Result<object_store::ObjectMeta>> {
        match after {
            Some(after) => {
                let offset = object_store::path::Path::from_iter(
                    prefix_path
                        .parts()
                        .chain(object_store::path::Path::from(after).parts()),
                );
                self.docs.inner.list_with_offset(Some(prefix_path), &offset)
            }
            None => self.docs.inner.list(Some(prefix_path)),
        }
    }
}

/// The `limit` smallest names seen, and whether there were more: memory bounded by
/// the page size, whatever order the backend lists in.
struct Smallest {
    names: BTreeSet<String>,
    limit: usize,
}

impl Smallest {
    fn new(limit: usize) -> Self {
        Self {
            names: BTreeSet::new(),
            limit,
        }
    }

    fn keep(&mut self, name: String) {
        self.names.insert(name);
        if self.names.len() > self.limit + 1 {
            self.names.pop_last();
        }
    }

    /// The page, and whether more follow it.
    fn page(self) -> (Vec<String>, bool) {
        let has_more = self.names.len() > self.limit;
        (self.names.into_iter().take(self.limit).collect(), has_more)
    }
}
