//! A write-through cache of documents as stored (bytes and version), for a process
//! that is the only writer of its store (the filesystem store is, by design): a pull
//! is answered without touching the store, and never with a document older than the
//! last write this process acknowledged.
//!
//! Every write through a namespace's handle updates (or drops) its entry before the
//! write is acknowledged. A read that missed fills the entry only if no write to that
//! key began since the read did: each key's stripe has an epoch, bumped by every
//! write under the stripe's lock, and a fill checks it under the same lock. So a slow
//! read can never put back a value a write has replaced. Bounded in bytes; the
//! server's own records (`_starfish/<area>`, which other processes write) are never
//! cached.
//!
//! When other processes write the store too (several nodes over one bucket), a
//! revalidating cache confirms every hit with a conditional read (`If-None-Match` on
//! the cached ETag): unchanged, the store answers "not modified" without the bytes;
//! changed, the new bytes replace the entry. Never older than what the store holds.

use super::DocLayout;
use bytes::Bytes;
use object_store::UpdateVersion;
use object_store::path::Path;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Stripes of write epochs.
const STRIPES: usize = 256;
/// What an entry costs beyond its key and bytes: the map's bookkeeping (96) and the
/// [`Memo`] once worked out: its `Arc` and layout (about 150), and on the heap the
/// hash three times (as text, as JSON and as the ETag, about 70 bytes each for a
/// SHA-256 in hex) with the allocator's overhead and the ETag's shared block; and the
/// shared version (its `Arc` and the store's ETag text, about 80 with overhead).
const ENTRY_OVERHEAD: u64 = 96 + 448 + 80;

/// What is worked out once from a cached object's bytes, for as long as the entry
/// lives: the layout of a plain document (`None` inside: not one).
pub type Memo = Arc<OnceLock<Option<DocLayout>>>;

/// A key's cached state.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// No object.
    Absent,
    /// The stored bytes, their version, and what is worked out from them. The version
    /// is shared: a hit copies the entry, and a pull does not need its text.
    Present(Bytes, Arc<UpdateVersion>, Memo),
}

impl Cached {
    pub(crate) fn present(bytes: Bytes, version: UpdateVersion) -> Self {
        Self::Present(bytes, Arc::new(version), Memo::default())
    }

    pub(crate) fn of(read: &Option<(Bytes, UpdateVersion)>) -> Self {
        match read {
            None => Self::Absent,
            Some((bytes, version)) => Self::present(bytes.clone(), version.clone()),
        }
    }

    pub(crate) fn into_read(self) -> Option<(Bytes, UpdateVersion)> {
        match self {
            Self::Absent => None,
            Self::Present(bytes, version, _) => Some((bytes, Arc::unwrap_or_clone(version))),
        }
    }
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Box<str>, Cached> for Weight {
    fn weight(&self, key: &Box<str>, value: &Cached) -> u64 {
        let bytes = match value {
            Cached::Absent => 0,
            Cached::Present(b, _, _) => b.len() as u64,
        };
        key.len() as u64 + bytes + ENTRY_OVERHEAD
    }
}

/// The read cache of one store (shared by every handle made from it).
pub(crate) struct ReadCache {
    /// Every hit is confirmed with the store (other processes write it too).
    pub(crate) revalidate: bool,
    entries: quick_cache::sync::Cache<Box<str>, Cached, Weight>,
    epochs: Box<[Mutex<u64>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("revalidate", &self.revalidate)
            .field("entries", &self.entries.len())
            .field("bytes", &self.entries.weight())
            .finish()
    }
}

impl ReadCache {
    /// A cache of at most `bytes` (keys, documents and bookkeeping).
    pub(crate) fn new(bytes: u64, revalidate: bool) -> Self {
        let estimated_items = usize::try_from(bytes / 1024).unwrap_or(usize::MAX).max(16);
        Self {
            revalidate,
            entries: quick_cache::sync::Cache::with_weighter(estimated_items, bytes, Weight),
            epochs: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn stripe(&self, path: &Path) -> &Mutex<u64> {
        let h = self.hasher.hash_one(path.as_ref());
        &self.epochs[(h as usize) % self.epochs.len()]
    }

    /// The cached state of `path`.
    pub(crate) fn get(&self, path: &Path) -> Option<Cached> {
        self.get_text(path.as_ref())
    }

    /// [`ReadCache::get`] by the path's text.
    pub(crate) fn get_text(&self, path: &str) -> Option<Cached> {
        self.entries.get(path)
    }

    /// The write epoch of `path`'s stripe, to pass to [`ReadCache::fill`].
    pub(crate) fn epoch(&self, path: &Path) -> u64 {
        *self
            .stripe(path)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches what a read that started at `epoch` found, unless a write began since.
    pub(crate) fn fill(&self, path: &Path, epoch: u64, found: Cached) {
        let current = self
            .stripe(path)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *current == epoch {
            self.entries.insert(path.as_ref().into(), found);
        }
    }

    /// Records a write to `path`: what it stored (`None`: unknown, drop the entry).
    pub(crate) fn wrote(&self, path: &Path, stored: Option<Cached>) {
        let mut epoch = self
            .stripe(path)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *epoch += 1;
        match stored {
            Some(value) => self.entries.insert(path.as_ref().into(), value),
            None => {
                self.entries.remove(path.as_ref());
            }
        }
    }

    /// Entries and bytes held.
    pub(crate) fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.entries.weight())
    }
}
