//! The store of the [Starfish](https://github.com/Drakkar-Software/Starfish)
//! document-sync server (`starfish-server`): documents over any `object_store`, with
//! compare-and-swap, in the reference's layout.
//!
//! - [`DocStore`]: documents over any [`ObjectStore`] ([`Capabilities`] say what it
//!   can do), in memory, on the filesystem (`fs`: with a write journal, or durable),
//!   on S3 (`aws`: `S3Settings`), with a read cache; [`StoreError`].
//! - [`ObjectKey`] and [`PathParams`]: the only keys the store accepts, resolved from
//!   a collection's template and checked parameters ([`KeyError`]).
//! - [`NsStore`]: a namespace's part of a store (its prefix, or a store of its own
//!   from [`NamespaceStores`]), with compare-and-swap ([`CasError`]), append-only
//!   logs ([`AppendOp`]), streamed blobs ([`BlobBody`]), listing, and copies for a
//!   migration ([`Copied`]).
//! - [`DocLayout`]: where a cached document's parts lie (kept in the read cache's
//!   [`Memo`]), and its [`etag`].
//! - [`Quota`] and the [`Ledger`] that keeps a namespace within it.
//! - Sealing at rest: a namespace's [`Keyring`] of data keys wrapped by a
//!   [`KeyWrap`] (a [`MasterKey`]), and [`Resealed`] objects after a rotation.
//! - [`StoreCalls`]: where a metered store reports the time of each call.
//! - [`Clock`]: wall-clock time behind a trait ([`SystemClock`], [`ManualClock`]).
//!
//! Compare-and-swap rests on the store wherever the store can do it: a write that
//! creates a document uses `PutMode::Create`, and a write that replaces one uses
//! `PutMode::Update` with the version that was read, so two server processes sharing
//! one bucket can never both win. `LocalFileSystem` supports `Create` (a hard link) but
//! not `Update`; for it, replacing writes are serialised per key inside this process
//! and land atomically (object_store writes a staging file and renames it). Several
//! nodes must therefore share a store with conditional writes (S3, or any store whose
//! [`Capabilities::conditional_update`] is true), not one directory.
//!
//! # Features
//!
//! - `fs` (default): `DocStore::local` and `DocStore::local_durable`, a directory in
//!   the reference's layout.
//! - `aws`: `DocStore::s3`, `DocStore::s3_from_env` and `S3Settings`, an
//!   S3-compatible bucket with conditional writes.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod append;
mod blob;
mod cache;
mod clock;
mod copy;
mod datakeys;
#[cfg(feature = "fs")]
mod durable;
#[cfg(all(feature = "fs", unix))]
mod journal;
mod key;
mod layout;
mod list;
mod metered;
mod quota;
mod reseal;
#[cfg(feature = "aws")]
mod s3;
mod seal;
mod tenant;
pub mod text;

pub use append::{AppendFailure, AppendOp, LogRead};
pub use blob::{Blob, BlobBody, BlobError, META_SUFFIX};
use cache::Cached;
pub use cache::Memo;
pub use clock::{Clock, ManualClock, SystemClock};
pub use copy::{Copied, Listed};
pub use datakeys::{KeyWrap, Keyring, MasterKey};
pub use key::{KeyError, MAX_PARAM_BYTES, ObjectKey, PathParams};
pub use layout::{DocLayout, etag};
pub use metered::StoreCalls;
pub use quota::{Ledger, Quota, UsageReport};
pub use reseal::Resealed;
#[cfg(feature = "aws")]
pub use s3::S3Settings;
pub use tenant::NsStore;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use std::hash::BuildHasher;
use std::sync::Arc;

/// Opens the store of a namespace in `store` isolation (the server's
/// `Isolation::Store`): its own bucket, prefix or directory. Any
/// `Fn(&str) -> Result<DocStore, StoreError>` is one.
pub trait NamespaceStores: Send + Sync {
    /// The store of namespace `name` (called once per namespace, when its routes are
    /// built).
    ///
    /// # Errors
    /// When the store cannot be opened; the router is not built.
    fn open(&self, name: &str) -> Result<DocStore, StoreError>;
}

impl<F> NamespaceStores for F
where
    F: Fn(&str) -> Result<DocStore, StoreError> + Send + Sync,
{
    fn open(&self, name: &str) -> Result<DocStore, StoreError> {
        self(name)
    }
}

/// How many times a write re-reads and retries after losing a race in the store.
const CAS_ATTEMPTS: u32 = 32;
/// The longest wait between two attempts after a lost race.
const CAS_BACKOFF_CAP_MS: u64 = 64;

/// Waits before attempt `attempt` (from 1) of a compare-and-swap that lost a race:
/// a random time up to 1 ms doubled per attempt, capped at [`CAS_BACKOFF_CAP_MS`]
/// ("full jitter"), so writers that collided spread out instead of colliding again.
/// [`CAS_ATTEMPTS`] of them wait at most about two seconds in all.
async fn contention_backoff(attempt: u32) {
    let ceiling_us = (1000u64 << attempt.min(16)).min(CAS_BACKOFF_CAP_MS * 1000);
    let mut random = [0u8; 4];
    // Without randomness the wait is the ceiling: still bounded, only less spread.
    let draw =
        getrandom::fill(&mut random).map_or(u64::MAX, |()| u64::from(u32::from_le_bytes(random)));
    let wait_us = draw % (ceiling_us + 1);
    tokio::time::sleep(std::time::Duration::from_micros(wait_us)).await;
}
/// Lock stripes for stores without conditional updates.
const LOCK_STRIPES: usize = 256;

/// What the backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Update` works (memory, S3). Without it, replacing writes are
    /// serialised per key in this process only.
    pub conditional_update: bool,
    /// Object attributes (content type) can be stored.
    pub attributes: bool,
}

/// A store error that is not part of the protocol: always a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    /// A key built from validated parts was still refused by the store.
    #[error("invalid object key: {0}")]
    Key(#[from] object_store::path::Error),
    /// In the filesystem layout a key cannot be a document and a folder of other
    /// documents at once (`a/b` beside `a/b/c`): the write is refused, nothing stored.
    #[error("key conflicts with another document: {0}")]
    KeyConflict(String),
    /// The namespace is frozen for the last pass of a migration: writes wait.
    #[error("the namespace is being migrated")]
    ReadOnly,
    /// The write would take the namespace past its quota; nothing was written.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// A record kept changing under a compare-and-swap.
    #[error("the store is busy")]
    Contended,
}

impl StoreError {
    /// True when a sealed object failed its integrity check (`seal.rs`).
    pub fn is_integrity(&self) -> bool {
        let Self::Backend(e) = self else {
            return false;
        };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(seal::SealError::Integrity(_)) = s.downcast_ref::<seal::SealError>() {
                return true;
            }
            source = s.source();
        }
        false
    }

    /// A backend error on a write, with filesystem path clashes told apart.
    pub(crate) fn on_write(e: object_store::Error) -> Self {
        if io_kind(&e).is_some_and(|k| {
            matches!(
                k,
                std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory
            )
        }) {
            Self::KeyConflict(e.to_string())
        } else {
            Self::Backend(e)
        }
    }
}

/// The kind of the first I/O error in `e`'s source chain.
fn io_kind(e: &object_store::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// Why a compare-and-swap did not write.
#[derive(Debug, thiserror::Error)]
pub enum CasError<E> {
    /// The caller's check refused the current value.
    #[error("rejected")]
    Rejected(E),
    /// Another writer kept winning the race; nothing was written.
    #[error("contended")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// True when `e` means "no such object": not found, or (in the filesystem layout) a
/// path whose parent is a document, not a folder.
pub(crate) fn is_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
        || io_kind(e) == Some(std::io::ErrorKind::NotADirectory)
}

/// What a conditional write expects to find.
enum Expect {
    /// Nothing: the write creates.
    Absent,
    /// The version that was read, and its length in bytes.
    Version(UpdateVersion, usize),
}

/// Documents over an `object_store`. A cheap `Clone`.
#[derive(Debug, Clone)]
pub struct DocStore {
    inner: Arc<dyn ObjectStore>,
    caps: Capabilities,
    /// Documents as stored, when this process is the store's only writer.
    cache: Option<Arc<cache::ReadCache>>,
    locks: Arc<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    /// The filesystem store's journal, when it keeps one.
    #[cfg(all(feature = "fs", unix))]
    journal: Option<Arc<journal::Journaled>>,
}

impl DocStore {
    /// Wraps `inner`, whose abilities are `caps`.
    pub fn new(inner: Arc<dyn ObjectStore>, caps: Capabilities) -> Self {
        Self {
            inner,
            caps,
            cache: None,
            locks: (0..2 * LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            #[cfg(all(feature = "fs", unix))]
            journal: None,
        }
    }

    /// An in-memory store (conditional writes supported).
    pub fn memory() -> Self {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            Capabilities {
                conditional_update: true,
                attributes: true,
            },
        )
    }

    /// A store of files under `dir`, in the reference's layout (`dir/users/abc/notes`).
    ///
    /// On Unix, writes of up to 256 KiB go through a journal first
    /// (`dir/.starfish-journal#<n>`): one appended record each, served from memory,
    /// written to the documents' files about once a second and when the store is
    /// dropped, and replayed by the next open after a crash. A killed process loses
    /// nothing; files trail the acknowledged state by about a second
    /// ([`DocStore::flush`] writes them now). docs/operations.md has the details.
    ///
    /// # Errors
    /// When `dir` cannot be created or opened, or a journal left by a crash cannot be
    /// replayed.
    #[cfg(feature = "fs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })
        })?;
        let fs = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir)?
                .with_automatic_cleanup(true),
        );
        #[cfg(unix)]
        let journal = match journal::Journaled::open(dir, fs.clone()) {
            Ok(journal) => journal,
            Err(e) => {
                return Err(StoreError::Backend(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                }));
            }
        };
        #[cfg(unix)]
        let fs: Arc<dyn ObjectStore> = match &journal {
            Some(journal) => journal.clone(),
            None => fs,
        };
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut store = Self::new(
            fs,
            Capabilities {
                conditional_update: false,
                attributes: false,
            },
        );
        #[cfg(unix)]
        {
            store.journal = journal;
        }
        Ok(store)
    }

    /// [`DocStore::local`] that fsyncs: a write is acknowledged only once the file
    /// and its directory (and any directory it created) are on stable storage, so an
    /// acknowledged write survives a power loss. Every write pays for the fsyncs
    /// (docs/operations.md has the measured cost).
    ///
    /// # Errors
    /// When `dir` cannot be created or opened.
    #[cfg(feature = "fs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
    pub fn local_durable(dir: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        durable::local(dir.as_ref())
    }

    /// This store with every call timed into `calls` (the same in-process write
    /// locks: a clone, not a second store).
    pub fn metered(&self, calls: Arc<dyn StoreCalls>) -> Self {
        Self {
            inner: Arc::new(metered::Metered::new(self.inner.clone(), calls)),
            ..self.clone()
        }
    }

    /// This store sealing what it writes and opening what it reads with the data
    /// keys of `keys` (the same in-process write locks and read cache, which hold
    /// plaintext: a clone, not a second store).
    pub(crate) fn sealed(&self, keys: Arc<Keyring>) -> Self {
        Self {
            inner: Arc::new(seal::Sealed::new(self.inner.clone(), keys)),
            ..self.clone()
        }
    }

    /// This store with a write-through cache of documents of at most `bytes`: pulls
    /// are answered from memory, and never with a document older than the last write
    /// this process acknowledged. **Only for a store this process alone writes** (the
    /// filesystem store, the memory store); with several nodes over one bucket, another
    /// node's writes would not be seen. 0 turns it off. The server's own records
    /// (`_starfish/<area>`) are never cached.
    #[must_use]
    pub fn with_read_cache(mut self, bytes: u64) -> Self {
        self.cache = (bytes > 0).then(|| Arc::new(cache::ReadCache::new(bytes, false)));
        self
    }

    /// This store with a cache of documents of at most `bytes` for a store other
    /// processes write too (several nodes over one bucket): every hit is confirmed
    /// with a conditional read (`If-None-Match` on its ETag), which the store answers
    /// without the bytes when they did not change. So a pull is never older than
    /// what the store holds, and costs a round trip but not a transfer. 0 turns it
    /// off.
    #[must_use]
    pub fn with_revalidated_read_cache(mut self, bytes: u64) -> Self {
        self.cache = (bytes > 0).then(|| Arc::new(cache::ReadCache::new(bytes, true)));
        self
    }

    /// Writes what the filesystem store's journal holds to the files now (for a
    /// backup by copying files, or a test that reads them); other stores have
    /// nothing to do. The journal does it by itself within a second.
    ///
    /// # Errors
    /// When a document's file cannot be written (it stays in the journal).
    pub async fn flush(&self) -> Result<(), StoreError> {
        #[cfg(all(feature = "fs", unix))]
        if let Some(journal) = &self.journal {
            return journal.flush().await.map_err(|e| {
                StoreError::Backend(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })
            });
        }
        Ok(())
    }

    /// Entries and bytes the read cache holds, when there is one.
    pub fn read_cache_usage(&self) -> Option<(usize, u64)> {
        self.cache.as_ref().map(|c| c.usage())
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn get_versioned(
        &self,
        key: &Path,
    ) -> Result<Option<(Bytes, UpdateVersion)>, StoreError> {
        match self.inner.get(key).await {
            Ok(res) => {
                let version = UpdateVersion {
                    e_tag: res.meta.e_tag.clone(),
                    version: res.meta.version.clone(),
                };
                Ok(Some((res.bytes().await?, version)))
            }
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes JSON `bytes` at `path` if the object is still as read (`expect`):
    /// the new version, or `Ok(None)` when another writer won. Without conditional updates the caller
    /// holds the key's in-process lock and the write replaces.
    async fn put_if(
        &self,
        path: &Path,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Option<UpdateVersion>, StoreError> {
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::Version(v, _) if self.caps.conditional_update => PutMode::Update(v),
            Expect::Version(..) => PutMode::Overwrite,
        };
        let mut opts = PutOptions::from(mode);
        #[cfg(all(feature = "fs", unix))]
        opts.extensions.insert(journal::Journal);
        if self.caps.attributes {
            opts.attributes = Attributes::from_iter([(
                Attribute::ContentType,
                object_store::AttributeValue::from("application/json"),
            )]);
        }
        match self
            .inner
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(put) => Ok(Some(UpdateVersion {
                e_tag: put.e_tag,
                version: put.version,
            })),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(None),
            Err(e) => Err(StoreError::on_write(e)),
        }
    }

    /// `key`'s lock: from the first half of the stripes for documents, the second for
    /// the server's own `records` ([`NsStore::write_lock`]).
    fn lock_for(&self, key: &Path, records: bool) -> &tokio::sync::Mutex<()> {
        let h = self.hasher.hash_one(key.as_ref());
        &self.locks[(h as usize) % LOCK_STRIPES + usize::from(records) * LOCK_STRIPES]
    }
}

impl NsStore {
    /// [`DocStore::put_if`] within the namespace's quota, if it has one: the growth
    /// is set aside first (refused with [`StoreError::QuotaExceeded`], nothing
    /// written) and what the write changed is counted after it. `document`: a new
    /// object here counts as a document (not a log's chunk).
    async fn put_counted(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        expect: Expect,
        document: bool,
    ) -> Result<bool, StoreError> {
        let bytes = Bytes::from(bytes);
        let Some(ledger) = &self.quota else {
            return self.put_cached(path, bytes, expect).await;
        };
        let (old, creating) = match &expect {
            Expect::Absent => (0, true),
            Expect::Version(_, len) => (*len, false),
        };
        let new = bytes.len();
        let documents = u64::from(creating && document);
        let reservation = ledger
            .reserve(new.saturating_sub(old) as u64, documents)
            .await?;
        let written = self.put_cached(path, bytes, expect).await;
        let (grown, counted) = match written {
            // A store error may come after the write took effect (its answer was
            // lost): counted as made, so the quota is never passed (the record may
            // then overcount by what was not made).
            Ok(true) | Err(_) => (new as i64 - old as i64, documents as i64),
            Ok(false) => (0, 0),
        };
        ledger.settle(reservation, grown, counted).await;
        written
    }

    /// [`DocStore::put_if`], keeping the read cache in step: the new bytes once they
    /// are stored, no entry when the write lost or failed.
    async fn put_cached(
        &self,
        path: &Path,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let written = self.docs.put_if(path, bytes.clone(), expect).await;
        match &written {
            Ok(Some(version)) => self.wrote(path, Some(Cached::present(bytes, version.clone()))),
            _ => self.wrote(path, None),
        }
        written.map(|v| v.is_some())
    }

    /// The read cache, when this handle uses it.
    fn cache(&self) -> Option<&cache::ReadCache> {
        if self.cached {
            self.docs.cache.as_deref()
        } else {
            None
        }
    }

    /// Reads `path` (from the cache when it has it) with its version.
    ///
    /// # Errors
    /// [`StoreError`] for anything but "not found".
    pub(crate) async fn read(
        &self,
        path: &Path,
    ) -> Result<Option<(Bytes, UpdateVersion)>, StoreError> {
        let Some(cache) = self.cache() else {
            return self.docs.get_versioned(path).await;
        };
        let hit = match cache.get(path) {
            Some(hit) if !cache.revalidate => return Ok(hit.into_read()),
            other => other,
        };
        let epoch = cache.epoch(path);
        let etag = match hit {
            Some(Cached::Present(bytes, version, _)) => {
                version.e_tag.clone().map(|etag| (bytes, version, etag))
            }
            _ => None,
        };
        if let Some((bytes, version, etag)) = etag {
            let options = object_store::GetOptions {
                if_none_match: Some(etag),
                ..Default::default()
            };
            match self.docs.inner.get_opts(path, options).await {
                Err(object_store::Error::NotModified { .. }) => {
                    return Ok(Some((bytes, Arc::unwrap_or_clone(version))));
                }
                Ok(res) => {
                    let version = UpdateVersion {
                        e_tag: res.meta.e_tag.clone(),
                        version: res.meta.version.clone(),
                    };
                    let read = Some((res.bytes().await?, version));
                    cache.fill(path, epoch, Cached::of(&read));
                    return Ok(read);
                }
                Err(e) if is_missing(&e) => {
                    cache.fill(path, epoch, Cached::Absent);
                    return Ok(None);
                }
                // A store that does not take the condition: read it whole.
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. },
                ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let read = self.docs.get_versioned(path).await?;
        cache.fill(path, epoch, Cached::of(&read));
        Ok(read)
    }

    /// Tells the read cache about a write to `path` (`None`: what is stored now is
    /// not known here).
    pub(crate) fn wrote(&self, path: &Path, stored: Option<Cached>) {
        if let Some(cache) = self.cache() {
            cache.wrote(path, stored);
        }
    }

    /// Reads an object; `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError`] for anything but "not found".
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        Ok(self.read(&self.path(key)).await?.map(|(bytes, _)| bytes))
    }

    /// [`NsStore::get`], with the cache entry's [`Memo`] when the bytes came
    /// from a cache that needs no confirming.
    ///
    /// # Errors
    /// [`StoreError`] for anything but "not found".
    pub async fn get_memo(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<(Bytes, Option<cache::Memo>)>, StoreError> {
        if let Some(cache) = self.cache().filter(|c| !c.revalidate) {
            // A hit needs no `Path` built.
            match cache.get_text(&self.path_text(key)) {
                Some(Cached::Absent) => return Ok(None),
                Some(Cached::Present(bytes, _, memo)) => return Ok(Some((bytes, Some(memo)))),
                None => {}
            }
        }
        // Boxed: the read's future is large, and a hit should not carry (and copy) it.
        Ok(Box::pin(self.read(&self.path(key)))
            .await?
            .map(|(bytes, _)| (bytes, None)))
    }

    /// Reads `key`, lets `decide` compute the replacement from the current bytes, and
    /// writes it only if nobody wrote in between; on a lost race it reads again and
    /// asks `decide` again, a bounded number of times.
    ///
    /// # Errors
    /// [`CasError::Rejected`] with `decide`'s error, [`CasError::Contended`] when every
    /// attempt lost a race, [`CasError::Store`] when the store fails.
    pub async fn compare_and_swap<T, E>(
        &self,
        key: &ObjectKey,
        decide: impl FnMut(Option<&[u8]>) -> Result<(Vec<u8>, T), E>,
    ) -> Result<T, CasError<E>> {
        self.cas_with(key, decide, |path, bytes, expect| async move {
            self.put_counted(&path, bytes, expect, true).await
        })
        .await
    }

    /// [`NsStore::compare_and_swap`] outside any quota: for the quota's own record
    /// (whose writes must not go through the quota they keep).
    pub(crate) async fn compare_and_swap_uncounted<T, E>(
        &self,
        key: &ObjectKey,
        decide: impl FnMut(Option<&[u8]>) -> Result<(Vec<u8>, T), E>,
    ) -> Result<T, CasError<E>> {
        self.cas_with(key, decide, |path, bytes, expect| async move {
            self.docs
                .put_if(&path, Bytes::from(bytes), expect)
                .await
                .map(|v| v.is_some())
        })
        .await
    }

    async fn cas_with<T, E, F>(
        &self,
        key: &ObjectKey,
        mut decide: impl FnMut(Option<&[u8]>) -> Result<(Vec<u8>, T), E>,
        put: impl Fn(Path, Vec<u8>, Expect) -> F,
    ) -> Result<T, CasError<E>>
    where
        F: std::future::Future<Output = Result<bool, StoreError>>,
    {
        self.writable()?;
        let key = &self.path(key);
        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 0 {
                contention_backoff(attempt).await;
            }
            // Without conditional updates, serialise in-process (documented above).
            let _guard = if self.docs.caps.conditional_update {
                None
            } else {
                Some(self.write_lock(key).lock().await)
            };
            let current = self.read(key).await?;
            let (bytes, out) =
                decide(current.as_ref().map(|(b, _)| b.as_ref())).map_err(CasError::Rejected)?;
            let creating = current.is_none();
            let expect = current.map_or(Expect::Absent, |(b, v)| Expect::Version(v, b.len()));
            if put(key.clone(), bytes, expect).await? {
                return Ok(out);
            }
            if creating && _guard.is_some() {
                // Nothing to read, nobody else writing (we hold the key), and still
                // the create failed: the path is another document's folder.
                return Err(StoreError::KeyConflict(format!("{key} is a folder")).into());
            }
        }
        Err(CasError::Contended)
    }
}

/// The crate README's example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
