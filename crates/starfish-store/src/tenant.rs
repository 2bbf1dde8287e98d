//! [`NsStore`]: the store as one namespace sees it.
//!
//! The sync core never holds a [`DocStore`]; it holds the `NsStore` of the scope the
//! request was routed to. An [`ObjectKey`] is relative (`users/abc/notes`), and only
//! the handle turns it into a location, by putting its own root in front. So a key
//! can only ever reach the namespace whose handle it is used with: there is no way to
//! spell namespace A's location through namespace B's handle, whatever the key says.

use super::{DocStore, ObjectKey, StoreError};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::{Path, PathPart};
use starfish_protocol::names::{NamespaceName, SYSTEM_ROOT};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the config's isolated namespaces live: `_starfish/ns/<name>/…`. `_starfish`
/// is a reserved name (no parameter value or template segment can be it), so no key of
/// the root or of a `shared` namespace can ever land here.
const NAMESPACES_DIR: &str = "ns";
/// Where namespaces created at runtime live: `_starfish/t/<name>/<generation>/…`, apart
/// from the config's (a config namespace named like a runtime one never shares its
/// keys), and a new generation for every creation of a name (a re-created namespace
/// never sees what a deleted one left behind).
const TENANTS_DIR: &str = "t";

/// One namespace's part of a store. A cheap `Clone`.
#[derive(Debug, Clone)]
pub struct NsStore {
    pub(super) docs: DocStore,
    /// Put before every key; `None` when keys are exactly as the storagePath says.
    pub(super) root: Option<Path>,
    /// Writes are refused ([`StoreError::ReadOnly`]): a namespace frozen for the last
    /// pass of a migration (the server's `migrate`).
    read_only: bool,
    /// Set while a migration of this namespace is frozen or done (the server's
    /// `migrate`): a write admitted before the freeze was seen is refused when it
    /// reaches the store.
    moving: Option<Arc<AtomicBool>>,
    /// The namespace's quota, when it has one.
    pub(super) quota: Option<Arc<super::Ledger>>,
    /// Reads go through the store's read cache, if it has one (documents; never the
    /// server's own records, which other processes write).
    pub(super) cached: bool,
    /// The server's own records (`NsStore::system`): their in-process write locks
    /// are a set apart from documents' ([`NsStore::write_lock`]).
    records: bool,
}

impl NsStore {
    /// Keys exactly as their storagePath says: the root scope, a `shared` namespace
    /// (the reference's meaning), or a namespace with a store of its own.
    pub fn whole(docs: DocStore) -> Self {
        Self {
            docs,
            root: None,
            read_only: false,
            moving: None,
            quota: None,
            cached: true,
            records: false,
        }
    }

    /// Every key under `_starfish/ns/<name>/`: a `prefixed` namespace.
    pub fn prefixed(docs: DocStore, namespace: &NamespaceName) -> Self {
        let root = Path::from_iter([SYSTEM_ROOT, NAMESPACES_DIR, namespace.as_str()]);
        Self {
            docs,
            root: Some(root),
            read_only: false,
            moving: None,
            quota: None,
            cached: true,
            records: false,
        }
    }

    /// Every key under `_starfish/t/<name>/<generation>/`: a namespace created at
    /// runtime.
    pub fn runtime(docs: DocStore, namespace: &NamespaceName, generation: &str) -> Self {
        let root = Path::from_iter([SYSTEM_ROOT, TENANTS_DIR, namespace.as_str(), generation]);
        Self {
            docs,
            root: Some(root),
            read_only: false,
            moving: None,
            quota: None,
            cached: true,
            records: false,
        }
    }

    /// The handle of the server's own objects (`_starfish/<area>/…`) in `docs`.
    pub fn system(docs: DocStore, area: &str) -> Self {
        Self {
            docs,
            root: Some(Path::from_iter([SYSTEM_ROOT, area])),
            read_only: false,
            moving: None,
            quota: None,
            cached: false,
            records: true,
        }
    }

    /// This handle, refusing every write with [`StoreError::ReadOnly`].
    pub fn read_only(&self) -> Self {
        Self {
            read_only: true,
            ..self.clone()
        }
    }

    /// This handle, sealing at rest with `keys`' data keys (the same root, quota and
    /// flags).
    pub fn sealed(&self, keys: Arc<super::Keyring>) -> Self {
        Self {
            docs: self.docs.sealed(keys),
            ..self.clone()
        }
    }

    /// The in-process lock that orders writes of `key` on a store without conditional
    /// updates. A document's write holds its lock while its quota reserves through the
    /// usage record, which takes its own: records and documents draw from two sets, so
    /// a write never waits on a lock it holds, and no two writes on each other.
    pub(super) fn write_lock(&self, key: &Path) -> &tokio::sync::Mutex<()> {
        self.docs.lock_for(key, self.records)
    }

    /// True when the store can replace an object only if it is still as read.
    pub fn conditional_update(&self) -> bool {
        self.docs.caps.conditional_update
    }

    /// This handle, writing within `ledger`'s quota.
    pub fn with_quota(&self, ledger: Arc<super::Ledger>) -> Self {
        Self {
            quota: Some(ledger),
            ..self.clone()
        }
    }

    /// The namespace's quota, when it has one.
    pub fn quota(&self) -> Option<&Arc<super::Ledger>> {
        self.quota.as_ref()
    }

    /// This handle, refusing writes from the moment `moving` is set.
    pub fn watched(&self, moving: Arc<AtomicBool>) -> Self {
        Self {
            moving: Some(moving),
            ..self.clone()
        }
    }

    /// `Ok` unless this handle refuses writes.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`].
    pub(super) fn writable(&self) -> Result<(), StoreError> {
        if self.read_only
            || self
                .moving
                .as_ref()
                .is_some_and(|m| m.load(Ordering::Acquire))
        {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// `Ok` when the store answers (a `head` of a key that need not exist).
    ///
    /// # Errors
    /// The store's error, as text.
    pub async fn answers(&self) -> Result<(), String> {
        let probe = Path::from_iter([SYSTEM_ROOT, "ready"]);
        match self.docs.inner().head(&probe).await {
            Ok(_) => Ok(()),
            Err(e) if super::is_missing(&e) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// How many objects this namespace holds, and their bytes (bookkeeping included).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn usage(&self) -> Result<(u64, u64), StoreError> {
        let mut listing = self.docs.inner().list(self.root.as_ref());
        let (mut objects, mut bytes) = (0u64, 0u64);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            objects += 1;
            bytes += meta.size;
        }
        Ok((objects, bytes))
    }

    /// Deletes every object of this namespace; returns how many.
    ///
    /// # Errors
    /// [`StoreError`]; what was deleted stays deleted, and a retry finishes the job.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        self.writable()?;
        let locations: Vec<Path> = self
            .docs
            .inner()
            .list(self.root.as_ref())
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let mut deleted = 0;
        for location in locations {
            let result = self.docs.inner().delete(&location).await;
            self.wrote(&location, None);
            match result {
                Ok(()) => deleted += 1,
                Err(e) if super::is_missing(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }

    /// Deletes `key`'s object (nothing when it is missing).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn remove(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.writable()?;
        let path = self.path(key);
        let result = self.docs.inner().delete(&path).await;
        self.wrote(&path, None);
        match result {
            Err(e) if !super::is_missing(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The location of `key` in this namespace.
    pub(crate) fn path(&self, key: &ObjectKey) -> Path {
        self.join(key.as_str().split('/').map(PathPart::from))
    }

    /// [`NsStore::path`] as text, without building the path when no part of the key
    /// would be encoded (letters, digits, `-`, `_`, `.`, no empty, `.` or `..` part):
    /// the read cache's key for a lookup.
    pub(crate) fn path_text<'k>(&self, key: &'k ObjectKey) -> std::borrow::Cow<'k, str> {
        let text = key.as_str();
        let plain = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
            && super::text::split_ascii(text, b'/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        match (&self.root, plain) {
            (None, true) => text.into(),
            (Some(root), true) => format!("{}/{text}", root.as_ref()).into(),
            (_, false) => String::from(self.path(key)).into(),
        }
    }

    /// The location of a key the store derived itself (a log chunk), as text.
    ///
    /// # Errors
    /// When `relative` is not a valid path.
    pub(super) fn path_of(&self, relative: &str) -> Result<Path, StoreError> {
        let parsed = Path::parse(relative)?;
        Ok(self.join(parsed.parts()))
    }

    fn join<'a>(&'a self, parts: impl Iterator<Item = PathPart<'a>>) -> Path {
        match &self.root {
            None => Path::from_iter(parts),
            Some(root) => Path::from_iter(root.parts().chain(parts)),
        }
    }

    /// `location` (a listed object) relative to this namespace; `None` outside it.
    pub(super) fn relative<'a>(&self, location: &'a Path) -> Option<&'a str> {
        let text = location.as_ref();
        match &self.root {
            None => Some(text),
            Some(root) => text
                .strip_prefix(root.as_ref())
                .and_then(|rest| rest.strip_prefix('/')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of a key's location is the location's, whatever the key holds.
    #[test]
    fn path_text_is_the_path() {
        let keys = [
            "docs/a",
            "users/Ab-9_x.y/notes",
            "a",
            "a.b/c..d",
            "sp ace/x",
            "per%cent/y",
            "brace{}/q",
            "uni/é",
            "tilde~/x",
            "hash#/x",
        ];
        for root in [None, Some(Path::from("ns/org-acme"))] {
            let mut store = NsStore::whole(DocStore::memory());
            store.root = root.clone();
            for key in keys {
                let key = ObjectKey::fixed(key);
                assert_eq!(
                    store.path_text(&key),
                    store.path(&key).as_ref(),
                    "{}",
                    key.as_str()
                );
            }
        }
    }
}
