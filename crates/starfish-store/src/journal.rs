//! The filesystem store's write journal ([`DocStore::local`](super::DocStore::local)).
//!
//! Writing a document as a file costs a new inode and a rename each time (a staging
//! file renamed over the old one): measured, that was 70 % of a push's CPU, most of
//! it in the kernel. So a replacing write of up to [`MAX_JOURNALED`] bytes is
//! appended to a journal instead (one `write` of one record, on a blocking thread),
//! held in memory, and answered from there, and a background thread writes the
//! latest version of each such document to its file in the reference's layout about
//! once a second ([`INTERVAL`]), then deletes the journal segments it has covered.
//! A document rewritten a thousand times in that second is written to its file once.
//!
//! What a write promises does not change. A killed process loses nothing: the
//! journal is in the page cache, and the next open replays it (only the last record
//! of each key counts, and a record that does not pass its CRC ends its segment). A
//! power loss may lose the last writes, as before, but never leaves a torn
//! document: files are still replaced by staging file and rename, and a torn
//! journal tail is dropped. Files on disk trail the acknowledged state by about a
//! second while the process runs.
//!
//! Every other change to a key (a write the document store does not mark, a large
//! one, a delete, a copy, a rename, a multipart upload) goes to the directory
//! directly, and then a *forget* record for the key says that what the journal held
//! for it is gone: a crash in between replays the last acknowledged version, never
//! an older one over a newer. Per-key locks order a key's journal writes, its flush
//! and those direct changes, and a section holding one runs to its end even if its
//! request is dropped. One process journals a directory at a time (an exclusive
//! `flock` on the lock file), every store the process opens on it sharing that
//! journal; a second process opening it writes to the files directly.
//!
//! Reserved names at the root of the directory: `.starfish-journal#<n>`, hidden
//! from listings as staging files are, and the key `.starfish-journal`, refused.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions,
};
use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often the journal's documents are written to their files.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// Larger writes go to their file directly (blobs, mostly).
pub(crate) const MAX_JOURNALED: usize = 256 * 1024;
/// Bytes of documents held in memory before writers wait for the flush.
const MAX_DIRTY: usize = 64 * 1024 * 1024;
const STRIPES: usize = 256;
const NAME: &str = ".starfish-journal";
const PUT: u8 = 1;
const FORGET: u8 = 2;

/// Put in a write's `PutOptions::extensions` by the document store: this write may
/// go through the journal. Others (blobs, the server's records) go to their file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Journal;

/// The filesystem store with its journal.
#[derive(Debug)]
pub(crate) struct Journaled {
    shared: Arc<Shared>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held (`flock`) while this process journals the directory; released when
    /// the last handle goes, even if an upload still holds the shared state.
    lock: Option<File>,
    /// The directory, as this process's registry of open journals knows it.
    key: PathBuf,
}

/// Directories this process journals: every open of one shares its journal (two
/// would each write the files behind the other's back).
static OPEN: Mutex<Vec<(PathBuf, std::sync::Weak<Journaled>)>> = Mutex::new(Vec::new());
/// Told when a journal of this process has closed.
static CLOSED: Condvar = Condvar::new();

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    interval: Duration,
    inner: Arc<LocalFileSystem>,
    state: Mutex<State>,
    /// Wakes the flusher (time, pressure or shutdown).
    work: Condvar,
    /// Wakes writers waiting for room.
    room: tokio::sync::Notify,
    /// Random per open: ETags of journaled versions are never reused across opens.
    epoch: u64,
    stripes: Box<[Arc<tokio::sync::Mutex<()>>]>,
    hasher: std::collections::hash_map::RandomState,
    checkpointing: Mutex<()>,
}

#[derive(Debug)]
struct State {
    seq: u64,
    segment: File,
    segment_no: u64,
    segment_len: u64,
    /// The oldest segment not yet covered by a checkpoint.
    oldest: u64,
    /// The segment's last write failed: a partial record may end it, so the next
    /// record starts a new segment.
    broken: bool,
    /// The journaled version of each key, by key.
    dirty: HashMap<String, Dirty>,
    dirty_bytes: usize,
    /// How many journaled keys each folder holds (at any depth): a key that is one
    /// of these cannot be a file.
    dirs: HashMap<String, usize>,
    /// Keys being written to the directory directly, and how many times.
    direct: HashMap<String, usize>,
    closing: bool,
    #[cfg(test)]
    crashed: bool,
}

#[derive(Debug, Clone)]
struct Dirty {
    location: Path,
    seq: u64,
    bytes: Bytes,
    modified: DateTime<Utc>,
}

/// The folders `key` is in: `a`, `a/b` for `a/b/c`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').map(move |(i, _)| &key[..i])
}

impl State {
    /// Nothing to write out, no segment to remove.
    fn idle(&self) -> bool {
        self.segment_len == 0 && self.dirty.is_empty() && self.oldest == self.segment_no
    }

    fn begin_direct(&mut self, key: &str) {
        *self.direct.entry(key.to_owned()).or_default() += 1;
        for folder in ancestors(key) {
            *self.dirs.entry(folder.to_owned()).or_default() += 1;
        }
    }

    fn end_direct(&mut self, key: &str) {
        if let Some(n) = self.direct.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.direct.remove(key);
            }
        }
        self.leave_folders(key);
    }

    fn leave_folders(&mut self, key: &str) {
        for folder in ancestors(key) {
            if let Some(n) = self.dirs.get_mut(folder) {
                *n -= 1;
                if *n == 0 {
                    self.dirs.remove(folder);
                }
            }
        }
    }

    fn insert(&mut self, d: Dirty) {
        let len = d.bytes.len();
        if let Some(old) = self.dirty.get_mut(d.location.as_ref()) {
            self.dirty_bytes = self.dirty_bytes + len - old.bytes.len();
            *old = d;
            return;
        }
        let key: String = d.location.as_ref().to_owned();
        for folder in ancestors(&key) {
            *self.dirs.entry(folder.to_owned()).or_default() += 1;
        }
        self.dirty_bytes += len;
        self.dirty.insert(key, d);
    }

    fn remove(&mut self, key: &str) -> Option<Dirty> {
        let d = self.dirty.remove(key)?;
        self.dirty_bytes -= d.bytes.len();
        self.leave_folders(key);
        Some(d)
    }

    /// Why `key` (file `path`) cannot be written as a file: a folder it is in is a
    /// document, or it is a folder of documents, in the journal or on disk (the
    /// error the directory would give when the file is written). With
    /// `create`, also when it exists.
    fn refuses(
        &self,
        key: &str,
        path: &std::path::Path,
        create: bool,
    ) -> Option<object_store::Error> {
        let conflict = |kind: ErrorKind| {
            Some(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::new(
                    kind,
                    format!("{key} conflicts with another document"),
                )),
            })
        };
        if ancestors(key)
            .any(|folder| self.dirty.contains_key(folder) || self.direct.contains_key(folder))
        {
            return conflict(ErrorKind::NotADirectory);
        }
        if self.dirs.contains_key(key) {
            return conflict(ErrorKind::IsADirectory);
        }
        let exists = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => return conflict(ErrorKind::IsADirectory),
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotADirectory => {
                return conflict(ErrorKind::NotADirectory);
            }
            Err(_) => false,
        };
        if create && (exists || self.dirty.contains_key(key)) {
            return Some(object_store::Error::AlreadyExists {
                path: key.to_owned(),
                source: "it exists".into(),
            });
        }
        None
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn segment_path(root: &std::path::Path, n: u64) -> PathBuf {
    root.join(format!("{NAME}#{n}"))
}

fn io_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

fn e_tag(epoch: u64, seq: u64) -> String {
    format!("\"j{epoch:x}-{seq:x}\"")
}

/// One record: body length and CRC-32 of the body (little-endian u32s), then the
/// body: kind, key length (u32), key, data.
fn encode(kind: u8, key: &str, data: &[u8]) -> Vec<u8> {
    let body_len = 1 + 4 + key.len() + data.len();
    let mut out = Vec::with_capacity(8 + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The records of one segment, up to the first that is incomplete or corrupt.
fn decode(buf: &[u8]) -> Vec<(u8, String, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(body) = rest.get(8..8 + len) else {
            break;
        };
        if len < 5 || crc32fast::hash(body) != crc {
            break;
        }
        let key_len = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(key) = body
            .get(5..5 + key_len)
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            break;
        };
        out.push((body[0], key.to_owned(), &body[5 + key_len..]));
        rest = &rest[8 + len..];
    }
    out
}

/// Writes `bytes` as the file at `path`: a staging file `path#<n>`, renamed over it.
fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut n = 1u32;
    let mut made_dirs = 0;
    loop {
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match File::options().write(true).create_new(true).open(&staging) {
            Ok(mut f) => {
                let written = f.write_all(bytes).and_then(|()| {
                    drop(f);
                    std::fs::rename(&staging, path)
                });
                if written.is_err() {
                    let _ = std::fs::remove_file(&staging);
                }
                return written;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            // A delete may remove an emptied directory between two tries.
            Err(e) if e.kind() == ErrorKind::NotFound && made_dirs < 3 => {
                made_dirs += 1;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs blocking file work off the async runtime when there is one. A job the
/// runtime dropped before it ran (it was shutting down) is an error; a job that
/// panicked panics here.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> object_store::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            }),
        },
        Err(_) => f(),
    }
}

/// Runs a section that holds a key's lock to its end even when the request that
/// started it is dropped (a timeout, a closed connection): a blocking job it queued
/// must not outlive the lock.
async fn uncancellable<T: Send + 'static>(
    section: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
) -> object_store::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.spawn(section).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            }),
        },
        Err(_) => section.await,
    }
}

impl Journaled {
    /// Replays what a previous process left in `root`'s journal into the files,
    /// then journals the directory: `None` when another process journals it.
    pub(crate) fn open(
        root: &std::path::Path,
        inner: Arc<LocalFileSystem>,
    ) -> std::io::Result<Option<Arc<Self>>> {
        Self::open_with(root, inner, INTERVAL)
    }

    fn open_with(
        root: &std::path::Path,
        inner: Arc<LocalFileSystem>,
        interval: Duration,
    ) -> std::io::Result<Option<Arc<Self>>> {
        let key = root.canonicalize()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(pos) = open.iter().position(|(p, _)| *p == key) {
            if let Some(journal) = open[pos].1.upgrade() {
                return Ok(Some(journal));
            }
            // This process is closing its journal of the directory: wait for it.
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            open = CLOSED
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let Some(lock_file) = take_lock(root)? else {
            return Ok(None);
        };
        replay(root, &inner)?;
        let segment = File::options()
            .append(true)
            .create(true)
            .truncate(false)
            .open(segment_path(root, 1))?;
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            inner,
            interval,
            state: Mutex::new(State {
                seq: 0,
                segment,
                segment_no: 1,
                segment_len: 0,
                oldest: 1,
                broken: false,
                dirty: HashMap::new(),
                dirty_bytes: 0,
                dirs: HashMap::new(),
                direct: HashMap::new(),
                closing: false,
                #[cfg(test)]
                crashed: false,
            }),
            work: Condvar::new(),
            room: tokio::sync::Notify::new(),
            epoch: std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                0u8,
            ),
            stripes: (0..STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            checkpointing: Mutex::new(()),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("starfish-journal".into())
                .spawn(move || shared.run())?
        };
        let journal = Arc::new(Self {
            shared,
            flusher: Mutex::new(Some(flusher)),
            lock: Some(lock_file),
            key: key.clone(),
        });
        open.retain(|(p, _)| *p != key);
        open.push((key, Arc::downgrade(&journal)));
        Ok(Some(journal))
    }

    /// Test hook: stops as a killed process would, writing no file.
    #[cfg(test)]
    fn crash(self: Arc<Self>) {
        lock(&self.shared.state).crashed = true;
        drop(self);
    }

    /// Writes every journaled document to its file now (on a thread of its own:
    /// a checkpoint waits for keys' locks, which must not tie up the runtime's
    /// blocking pool).
    pub(crate) async fn flush(&self) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("starfish-journal-flush".into())
            .spawn(move || {
                let _ = done.send(shared.checkpoint());
            })?;
        result
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the flush thread stopped")))
    }

    #[cfg(test)]
    async fn flush_now(&self) {
        self.flush().await.unwrap();
    }
}

impl Drop for Journaled {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.work.notify_all();
        let handle = self
            .flusher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        drop(self.lock.take());
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|(p, journal)| *p != self.key || journal.strong_count() > 0);
        CLOSED.notify_all();
    }
}

/// The directory's journal lock, unless another process holds it.
fn take_lock(root: &std::path::Path) -> std::io::Result<Option<File>> {
    let lock_file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(segment_path(root, 0))?;
    match rustix::fs::flock(
        &lock_file,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(Some(lock_file)),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            tracing::warn!(
                dir = %root.display(),
                "another process journals this directory: writing files directly"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// For a store that does not journal (the durable one): writes what a journaling
/// process left in `root`'s journal to the files first.
pub(crate) fn recover(root: &std::path::Path, inner: &LocalFileSystem) -> std::io::Result<()> {
    match take_lock(root)? {
        Some(_lock) => replay(root, inner),
        None => Ok(()),
    }
}

/// Puts the last journaled version of every key back in its file, then removes the
/// segments.
fn replay(root: &std::path::Path, inner: &LocalFileSystem) -> std::io::Result<()> {
    let mut segments: Vec<u64> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(NAME)?.strip_prefix('#')?;
            n.parse::<u64>().ok().filter(|n| *n > 0)
        })
        .collect();
    segments.sort_unstable();
    let mut last: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for n in &segments {
        let mut buf = Vec::new();
        File::open(segment_path(root, *n))?.read_to_end(&mut buf)?;
        for (kind, key, data) in decode(&buf) {
            last.insert(key, (kind == PUT).then(|| data.to_vec()));
        }
    }
    let mut unwritten = 0usize;
    for (key, data) in &last {
        let Some(data) = data else { continue };
        let written = Path::parse(key)
            .map_err(std::io::Error::other)
            .and_then(|p| {
                inner
                    .path_to_filesystem(&p)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .and_then(|path| write_file(&path, data));
        if let Err(e) = written {
            unwritten += 1;
            tracing::error!(key = %key, error = %e, "journal: a replayed document cannot be written");
        }
    }
    if !last.is_empty() {
        tracing::info!(documents = last.len(), "journal replayed");
    }
    for n in segments {
        if unwritten > 0 {
            // Kept for the operator, no longer replayed.
            let kept = root.join(format!(
                "{NAME}-unwritten#{}{n:06}",
                Utc::now().timestamp_millis()
            ));
            std::fs::rename(segment_path(root, n), kept)?;
        } else {
            std::fs::remove_file(segment_path(root, n))?;
        }
    }
    Ok(())
}

/// Waits while the journal holds more than [`MAX_DIRTY`] bytes, asynchronously and
/// under no key's lock (the flusher takes those).
async fn wait_for_room(shared: &Shared) {
    loop {
        let notified = shared.room.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        {
            let st = lock(&shared.state);
            if st.dirty_bytes <= MAX_DIRTY || st.closing {
                return;
            }
        }
        shared.work.notify_all();
        notified.await;
    }
}

/// A write going to the directory directly, registered so that no journaled write
/// is accepted meanwhile that its file would conflict with.
struct Direct {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for Direct {
    fn drop(&mut self) {
        lock(&self.shared.state).end_direct(&self.key);
    }
}

/// Registers a direct write of `location` (see [`State::refuses`]).
async fn begin_direct(
    shared: &Arc<Shared>,
    location: &Path,
    create: bool,
) -> object_store::Result<Direct> {
    let path = shared.inner.path_to_filesystem(location)?;
    let (s, key) = (shared.clone(), location.as_ref().to_owned());
    blocking(move || {
        let mut st = lock(&s.state);
        if let Some(e) = st.refuses(&key, &path, create) {
            return Err(e);
        }
        st.begin_direct(&key);
        drop(st);
        Ok(Direct { shared: s, key })
    })
    .await
}

/// Drops `key`'s journaled version, with a record saying so: what the journal held
/// for it before is not replayed (the key's lock held). Whether there was one.
async fn forget(shared: &Arc<Shared>, key: &Path) -> object_store::Result<bool> {
    let (s, k) = (shared.clone(), key.clone());
    blocking(move || s.forget(&k)).await
}

/// Writes `key`'s journaled version to its file, if it has one (its lock held).
async fn flush_key(shared: &Arc<Shared>, key: &Path) -> object_store::Result<()> {
    let Some(dirty) = shared.dirty(key) else {
        return Ok(());
    };
    let (s, k) = (shared.clone(), key.clone());
    blocking(move || s.flush_one(&k, dirty.seq, &dirty.bytes)).await
}

impl Shared {
    fn meta(&self, d: &Dirty) -> ObjectMeta {
        ObjectMeta {
            location: d.location.clone(),
            last_modified: d.modified,
            size: d.bytes.len() as u64,
            e_tag: Some(e_tag(self.epoch, d.seq)),
            version: None,
        }
    }

    fn stripe_index(&self, key: &Path) -> usize {
        (self.hasher.hash_one(key.as_ref()) as usize) % STRIPES
    }

    fn stripe(&self, key: &Path) -> &Arc<tokio::sync::Mutex<()>> {
        &self.stripes[self.stripe_index(key)]
    }

    fn dirty(&self, key: &Path) -> Option<Dirty> {
        lock(&self.state).dirty.get(key.as_ref()).cloned()
    }

    /// Appends `record` to the current segment: its sequence number.
    fn write_record(&self, st: &mut State, record: &[u8]) -> object_store::Result<u64> {
        if st.broken {
            self.rotate(st).map_err(io_error)?;
        }
        if st.idle() {
            self.work.notify_all();
        }
        if let Err(e) = st.segment.write_all(record) {
            st.broken = true;
            return Err(io_error(e));
        }
        st.segment_len += record.len() as u64;
        st.seq += 1;
        Ok(st.seq)
    }

    /// Journals `bytes` as `location`'s new version (blocking), unless the file
    /// `path` could not be written (or, with `create`, exists). Its sequence number.
    fn append_put(
        &self,
        location: &Path,
        path: &std::path::Path,
        bytes: Bytes,
        create: bool,
    ) -> object_store::Result<u64> {
        let record = encode(PUT, location.as_ref(), &bytes);
        let mut st = lock(&self.state);
        if let Some(e) = st.refuses(location.as_ref(), path, create) {
            return Err(e);
        }
        let seq = self.write_record(&mut st, &record)?;
        st.insert(Dirty {
            location: location.clone(),
            seq,
            bytes,
            modified: Utc::now(),
        });
        Ok(seq)
    }

    /// Drops `location`'s journaled version (blocking), with a record saying so.
    /// Whether there was one.
    fn forget(&self, location: &Path) -> object_store::Result<bool> {
        let record = encode(FORGET, location.as_ref(), &[]);
        let mut st = lock(&self.state);
        self.write_record(&mut st, &record)?;
        let was = st.remove(location.as_ref()).is_some();
        if was {
            self.room.notify_waiters();
        }
        Ok(was)
    }

    /// Starts the next segment; the ones before it stay until a checkpoint covers them.
    fn rotate(&self, st: &mut State) -> std::io::Result<()> {
        let next = st.segment_no + 1;
        st.segment = File::options()
            .append(true)
            .create(true)
            .truncate(false)
            .open(segment_path(&self.root, next))?;
        st.segment_no = next;
        st.segment_len = 0;
        st.broken = false;
        Ok(())
    }

    /// Writes version `seq` of `key` to its file and drops it from memory, unless a
    /// newer one came in meanwhile (the key's lock held).
    fn flush_one(&self, key: &Path, seq: u64, bytes: &[u8]) -> object_store::Result<()> {
        let path = self.inner.path_to_filesystem(key)?;
        write_file(&path, bytes).map_err(io_error)?;
        let mut st = lock(&self.state);
        if st.dirty.get(key.as_ref()).is_some_and(|d| d.seq == seq) {
            st.remove(key.as_ref());
            self.room.notify_waiters();
        }
        Ok(())
    }

    /// The flusher thread: asleep while the journal is empty; once a record comes
    /// in, a checkpoint [`INTERVAL`] later (sooner under memory pressure), and a
    /// last one when the store is dropped.
    fn run(&self) {
        loop {
            let closing = {
                let mut st = lock(&self.state);
                while st.idle() && !st.closing {
                    st = self
                        .work
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                let (st, _) = self
                    .work
                    .wait_timeout_while(st, self.interval, |s| {
                        !s.closing && s.dirty_bytes <= MAX_DIRTY
                    })
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                #[cfg(test)]
                if st.crashed {
                    return;
                }
                st.closing
            };
            let _ = self.checkpoint();
            if closing {
                // Leave no empty segment behind (the lock file stays).
                let st = lock(&self.state);
                if st.idle() {
                    let _ = std::fs::remove_file(segment_path(&self.root, st.segment_no));
                }
                return;
            }
        }
    }

    /// Starts a new segment, writes every journaled document to its file, and, when
    /// all were written, removes the segments before the new one.
    fn checkpoint(&self) -> std::io::Result<()> {
        let _one_at_a_time = self
            .checkpointing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (first, last, pending) = {
            let mut st = lock(&self.state);
            if st.idle() {
                return Ok(());
            }
            let last = st.segment_no;
            if let Err(e) = self.rotate(&mut st) {
                tracing::warn!(error = %e, "journal: cannot start a segment");
                return Err(e);
            }
            let pending: Vec<(Path, u64, Bytes)> = st
                .dirty
                .values()
                .map(|d| (d.location.clone(), d.seq, d.bytes.clone()))
                .collect();
            (st.oldest, last, pending)
        };
        let mut failed = 0usize;
        for (key, seq, bytes) in pending {
            let _guard = self.stripe(&key).blocking_lock();
            if lock(&self.state).dirty.get(key.as_ref()).map(|d| d.seq) != Some(seq) {
                continue;
            }
            if let Err(e) = self.flush_one(&key, seq, &bytes) {
                failed += 1;
                tracing::warn!(key = %key, error = %e, "journal: cannot write a document's file");
                // Carried into the new segment, so the old ones can go.
                let record = encode(PUT, key.as_ref(), &bytes);
                let mut st = lock(&self.state);
                if st.dirty.get(key.as_ref()).map(|d| d.seq) == Some(seq) {
                    self.write_record(&mut st, &record)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                }
            }
        }
        for n in first..=last {
            match std::fs::remove_file(segment_path(&self.root, n)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    // Replayed at the next open: not to be counted as covered.
                    lock(&self.state).oldest = n;
                    return Err(e);
                }
            }
        }
        lock(&self.state).oldest = last + 1;
        if failed > 0 {
            return Err(std::io::Error::other(format!(
                "{failed} journaled documents could not be written to their files"
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for Journaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journaled({})", self.shared.inner)
    }
}

fn reserved(location: &Path) -> bool {
    location.as_ref() == NAME
}

/// The key of the journal's own files: a conflict with another object (a 409 for a
/// client whose template makes it, never a 500).
fn invalid(location: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(std::io::Error::new(
            ErrorKind::IsADirectory,
            format!("{location} is reserved for the journal"),
        )),
    }
}

#[async_trait::async_trait]
impl ObjectStore for Journaled {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if reserved(location) {
            return Err(invalid(location));
        }
        if matches!(opts.mode, PutMode::Update(_)) || !opts.attributes.is_empty() {
            // Not supported by the directory either: its error.
            return self.shared.inner.put_opts(location, payload, opts).await;
        }
        let create = matches!(opts.mode, PutMode::Create);
        let journaled =
            opts.extensions.get::<Journal>().is_some() && payload.content_length() <= MAX_JOURNALED;
        let (shared, location) = (self.shared.clone(), location.clone());
        if !journaled {
            // The file first, then a record that the journal's version (if any) is
            // gone: a crash in between replays that version, the last acknowledged.
            return uncancellable(async move {
                let _guard = shared.stripe(&location).lock().await;
                let _direct = begin_direct(&shared, &location, create).await?;
                let put = shared.inner.put_opts(&location, payload, opts).await?;
                forget(&shared, &location).await?;
                Ok(put)
            })
            .await;
        }
        let path = shared.inner.path_to_filesystem(&location)?;
        wait_for_room(&shared).await;
        uncancellable(async move {
            let _guard = shared.stripe(&location).lock().await;
            let bytes = Bytes::from(payload);
            let (s, key) = (shared.clone(), location.clone());
            let seq = blocking(move || s.append_put(&key, &path, bytes, create)).await?;
            Ok(PutResult {
                e_tag: Some(e_tag(shared.epoch, seq)),
                version: None,
                extensions: Default::default(),
            })
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if reserved(location) {
            return Err(invalid(location));
        }
        let (shared, key) = (self.shared.clone(), location.clone());
        let direct = uncancellable(async move {
            let _guard = shared.stripe(&key).lock().await;
            begin_direct(&shared, &key, false).await
        })
        .await?;
        let inner = self.shared.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(Upload {
            inner,
            location: location.clone(),
            direct,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if let Some(d) = self.shared.dirty(location) {
            let meta = self.shared.meta(&d);
            let tag = meta.e_tag.as_deref().unwrap_or_default();
            if options
                .if_match
                .as_ref()
                .is_some_and(|want| want != tag && want != "*")
            {
                let want = options.if_match.as_deref().unwrap_or_default();
                return Err(object_store::Error::Precondition {
                    path: location.to_string(),
                    source: format!("{tag} does not match {want}").into(),
                });
            }
            if options
                .if_none_match
                .as_ref()
                .is_some_and(|want| want == tag || want == "*")
            {
                let want = options.if_none_match.as_deref().unwrap_or_default();
                return Err(object_store::Error::NotModified {
                    path: location.to_string(),
                    source: format!("{tag} matches {want}").into(),
                });
            }
            let plain = options.if_modified_since.is_none()
                && options.if_unmodified_since.is_none()
                && options.range.is_none()
                && options.version.is_none();
            if plain {
                let range = 0..meta.size;
                let body = if options.head { Bytes::new() } else { d.bytes };
                return Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(body) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes: Default::default(),
                    extensions: Default::default(),
                });
            }
            // Checked against the journal's version above; the file's ETag differs.
            let mut options = options;
            options.if_match = None;
            options.if_none_match = None;
            let (shared, key) = (self.shared.clone(), location.clone());
            uncancellable(async move {
                let _guard = shared.stripe(&key).lock().await;
                flush_key(&shared, &key).await
            })
            .await?;
            return self.shared.inner.get_opts(location, options).await;
        }
        self.shared.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.shared.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    uncancellable(async move {
                        let _guard = this.stripe(&location).lock().await;
                        // The file first: a crash before the record replays the
                        // journal's version, and the delete was not acknowledged.
                        let journaled = this.dirty(&location).is_some();
                        match this.inner.delete(&location).await {
                            Ok(()) => {}
                            Err(object_store::Error::NotFound { .. }) if journaled => {}
                            Err(e) => return Err(e),
                        }
                        forget(&this, &location).await?;
                        Ok(location)
                    })
                    .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.merged(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.merged(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let keys: Vec<Path> = lock(&self.shared.state)
            .dirty
            .values()
            .map(|d| d.location.clone())
            .collect();
        for key in keys {
            let shared = self.shared.clone();
            uncancellable(async move {
                let _guard = shared.stripe(&key).lock().await;
                flush_key(&shared, &key).await
            })
            .await?;
        }
        self.shared.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        transfer(&self.shared, from, to, Transfer::Copy(options)).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        transfer(&self.shared, from, to, Transfer::Rename(options)).await
    }
}

enum Transfer {
    Copy(CopyOptions),
    Rename(RenameOptions),
}

/// A copy or a rename in the directory, under both keys' locks: the source's
/// journaled version goes to its file first, and the journal forgets what it held
/// for the keys the change replaced.
async fn transfer(
    shared: &Arc<Shared>,
    from: &Path,
    to: &Path,
    how: Transfer,
) -> object_store::Result<()> {
    if reserved(to) {
        return Err(invalid(to));
    }
    let (shared, from, to) = (shared.clone(), from.clone(), to.clone());
    uncancellable(async move {
        let _locks = lock_two(&shared, &from, &to).await;
        let _direct = begin_direct(&shared, &to, false).await?;
        flush_key(&shared, &from).await?;
        match how {
            Transfer::Copy(options) => shared.inner.copy_opts(&from, &to, options).await?,
            Transfer::Rename(options) => {
                shared.inner.rename_opts(&from, &to, options).await?;
                forget(&shared, &from).await?;
            }
        }
        forget(&shared, &to).await?;
        Ok(())
    })
    .await
}

/// Holds the locks of two keys, taken in a fixed order (one when they share it).
async fn lock_two<'a>(
    shared: &'a Shared,
    a: &Path,
    b: &Path,
) -> (
    tokio::sync::MutexGuard<'a, ()>,
    Option<tokio::sync::MutexGuard<'a, ()>>,
) {
    let (x, y) = (shared.stripe_index(a), shared.stripe_index(b));
    let (first, second) = match x.cmp(&y) {
        std::cmp::Ordering::Equal => (x, None),
        std::cmp::Ordering::Less => (x, Some(y)),
        std::cmp::Ordering::Greater => (y, Some(x)),
    };
    let first = shared.stripes[first].lock().await;
    let second = match second {
        Some(i) => Some(shared.stripes[i].lock().await),
        None => None,
    };
    (first, second)
}

/// A multipart upload to the directory: on completion, under the key's lock, a
/// version journaled meanwhile is handed over first, so the upload is the newest.
#[derive(Debug)]
struct Upload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    direct: Direct,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("key", &self.key).finish()
    }
}

#[async_trait::async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        // Under the key's lock, the upload lands and then a version journaled
        // while it ran is dropped: the upload is the newest.
        let shared = self.direct.shared.clone();
        let guard = shared.stripe(&self.location).clone().lock_owned().await;
        let put = self.inner.complete().await?;
        let location = self.location.clone();
        uncancellable(async move {
            let _guard = guard;
            forget(&shared, &location).await
        })
        .await?;
        Ok(put)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

impl Journaled {
    /// The directory's listing with the journaled documents in it: their metadata
    /// where the file is older, and those with no file yet at the end.
    fn merged(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let extra: HashMap<Path, ObjectMeta> = lock(&self.shared.state)
            .dirty
            .values()
            .filter(|d| prefix.is_none_or(|p| d.location.prefix_matches(p) && d.location != *p))
            .filter(|d| offset.is_none_or(|o| d.location > *o))
            .map(|d| (d.location.clone(), self.shared.meta(d)))
            .collect();
        let listing = match offset {
            Some(o) => self.shared.inner.list_with_offset(prefix, o),
            None => self.shared.inner.list(prefix),
        };
        let extra = Arc::new(Mutex::new(extra));
        let rest = extra.clone();
        listing
            .map_ok(move |meta| {
                match extra
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&meta.location)
                {
                    Some(newer) => newer,
                    None => meta,
                }
            })
            .chain(
                futures::stream::once(async move {
                    let left: Vec<_> = rest
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .drain()
                        .map(|(_, m)| Ok(m))
                        .collect();
                    futures::stream::iter(left)
                })
                .flatten(),
            )
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    const NEVER: Duration = Duration::from_secs(3600);

    fn open(dir: &std::path::Path) -> Arc<Journaled> {
        let fs = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
        Journaled::open_with(dir, fs, NEVER).unwrap().unwrap()
    }

    async fn read(store: &Journaled, key: &str) -> Option<Bytes> {
        match store.get(&Path::from(key)).await {
            Ok(r) => Some(r.bytes().await.unwrap()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Options of a write the document store sends (journaled when small).
    fn doc(mode: PutMode) -> PutOptions {
        let mut opts = PutOptions::from(mode);
        opts.extensions.insert(Journal);
        opts
    }

    async fn jput(
        store: &Journaled,
        key: &str,
        body: PutPayload,
    ) -> object_store::Result<PutResult> {
        store
            .put_opts(&Path::from(key), body, doc(PutMode::Overwrite))
            .await
    }

    async fn put(store: &Journaled, key: &str, body: &'static str) {
        jput(store, key, PutPayload::from_static(body.as_bytes()))
            .await
            .unwrap();
    }

    fn file(dir: &std::path::Path, key: &str) -> Option<Vec<u8>> {
        std::fs::read(dir.join(key)).ok()
    }

    async fn listed(store: &Journaled, prefix: Option<&str>) -> Vec<(String, u64)> {
        let prefix = prefix.map(Path::from);
        let mut out: Vec<(String, u64)> = store
            .list(prefix.as_ref())
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .unwrap();
        out.sort();
        out
    }

    /// Journaled writes are read, headed and listed (once each, with their new size)
    /// before any file is written, and a checkpoint writes exactly them to the files.
    #[tokio::test]
    async fn writes_are_served_from_the_journal_then_land_in_their_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("users/b")).unwrap();
        std::fs::write(dir.path().join("users/b/doc"), b"old").unwrap();
        let store = open(dir.path());
        put(&store, "users/a/doc", "first").await;
        put(&store, "users/b/doc", "second!").await;
        put(&store, "users/b/doc", "third").await;
        assert_eq!(read(&store, "users/a/doc").await.unwrap(), "first");
        assert_eq!(read(&store, "users/b/doc").await.unwrap(), "third");
        let head = store.head(&Path::from("users/b/doc")).await.unwrap();
        assert_eq!(head.size, 5);
        assert_eq!(file(dir.path(), "users/a/doc"), None, "not written yet");
        assert_eq!(file(dir.path(), "users/b/doc").unwrap(), b"old");
        let want = vec![("users/a/doc".to_owned(), 5), ("users/b/doc".to_owned(), 5)];
        assert_eq!(listed(&store, None).await, want);
        assert_eq!(listed(&store, Some("users/b")).await, want[1..]);
        let offset: Vec<String> = store
            .list_with_offset(None, &Path::from("users/a/doc"))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(offset, ["users/b/doc"]);

        store.flush_now().await;
        assert_eq!(file(dir.path(), "users/a/doc").unwrap(), b"first");
        assert_eq!(file(dir.path(), "users/b/doc").unwrap(), b"third");
        assert_eq!(
            listed(&store, None).await,
            want,
            "the journal is not listed"
        );
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_str().unwrap().starts_with(NAME)
            })
            .count();
        assert_eq!(
            segments, 2,
            "the lock and the new segment; covered ones removed"
        );
        // A conditional read goes to the file, which is current.
        let options = GetOptions {
            range: Some((1..3).into()),
            ..Default::default()
        };
        let r = store.get_opts(&Path::from("users/b/doc"), options).await;
        assert_eq!(r.unwrap().bytes().await.unwrap(), "hi");
    }

    /// A process killed before any checkpoint loses no acknowledged write: the next
    /// open replays the journal (the last record of each key, a delete included) and
    /// drops a torn record at the end.
    #[tokio::test]
    async fn a_killed_process_loses_nothing_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", "1").await;
        put(&store, "a", "2").await;
        put(&store, "gone", "x").await;
        store.flush_now().await;
        put(&store, "b/c", "3").await;
        put(&store, "a", "4").await;
        store.delete(&Path::from("gone")).await.unwrap();
        put(&store, "d", "5").await;
        store.delete(&Path::from("d")).await.unwrap();
        store.crash();
        assert_eq!(file(dir.path(), "a").unwrap(), b"2", "only the checkpoint");
        assert_eq!(file(dir.path(), "b/c"), None);
        // A record cut short by the crash.
        let torn = encode(PUT, "a", b"never acknowledged");
        let mut segment = File::options()
            .append(true)
            .open(segment_path(dir.path(), 2))
            .unwrap();
        segment.write_all(&torn[..torn.len() - 3]).unwrap();

        let store = open(dir.path());
        assert_eq!(file(dir.path(), "a").unwrap(), b"4", "replayed");
        assert_eq!(file(dir.path(), "b/c").unwrap(), b"3");
        assert_eq!(file(dir.path(), "gone"), None);
        assert_eq!(
            file(dir.path(), "d"),
            None,
            "a forgotten key is not replayed"
        );
        assert_eq!(read(&store, "a").await.unwrap(), "4");
        assert_eq!(read(&store, "d").await, None);
        assert!(
            !segment_path(dir.path(), 2).exists(),
            "replayed segments removed"
        );
    }

    /// The durable store (no journal of its own) first writes out what a killed
    /// journaling process left.
    #[tokio::test]
    async fn the_durable_store_replays_a_journal_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a/b", "journaled").await;
        store.crash();
        assert_eq!(file(dir.path(), "a/b"), None);
        let durable = super::super::durable::local(dir.path()).unwrap();
        assert_eq!(file(dir.path(), "a/b").unwrap(), b"journaled");
        let read = durable.inner().get(&Path::from("a/b")).await.unwrap();
        assert_eq!(read.bytes().await.unwrap(), "journaled");
    }

    /// A create is refused when the journal holds the key, and when its file
    /// exists; a delete of a key only in the journal succeeds; one process journals
    /// a directory at a time.
    #[tokio::test]
    async fn creates_deletes_and_a_second_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let key = Path::from("k");
        let create = || doc(PutMode::Create);
        let body = || PutPayload::from_static(b"v");
        store.put_opts(&key, body(), create()).await.unwrap();
        let again = store.put_opts(&key, body(), create()).await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        store.delete(&key).await.unwrap();
        assert_eq!(read(&store, "k").await, None);
        store.put_opts(&key, body(), create()).await.unwrap();
        store.flush_now().await;
        let again = store.put_opts(&key, body(), create()).await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        let reserved = jput(&store, NAME, body()).await.unwrap_err();
        assert!(
            matches!(
                super::super::StoreError::on_write(reserved),
                super::super::StoreError::KeyConflict(_)
            ),
            "a 409, not a 500"
        );

        let fs = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        // A second open in this process shares the journal (two would each write
        // the files behind the other's back).
        put(&store, "shared", "journaled").await;
        let again = Journaled::open_with(dir.path(), fs.clone(), NEVER)
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&store, &again));
        assert_eq!(read(&again, "shared").await.unwrap(), "journaled");
        drop((store, again));
        // Closed: the next open is a new journal, after the last one's flush.
        let reopened = Journaled::open_with(dir.path(), fs, NEVER)
            .unwrap()
            .unwrap();
        assert_eq!(file(dir.path(), "shared").unwrap(), b"journaled");
        assert_eq!(read(&reopened, "shared").await.unwrap(), "journaled");
    }

    /// A document cannot be a folder of documents nor sit in one, whether the
    /// other is in the journal or on disk, and whether the write is journaled or
    /// direct: the directory's own errors, so the file can always be written later.
    #[tokio::test]
    async fn a_document_and_a_folder_of_the_same_name_conflict() {
        fn kind(e: &object_store::Error) -> ErrorKind {
            let io = std::error::Error::source(e).unwrap();
            io.downcast_ref::<std::io::Error>().unwrap().kind()
        }
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "docs/d", "file").await;
        put(&store, "docs/x/n", "nested").await;
        let big = || PutPayload::from(vec![b'x'; MAX_JOURNALED + 1]);
        for (key, want) in [
            ("docs/d/n", ErrorKind::NotADirectory),
            ("docs/d/n/m", ErrorKind::NotADirectory),
            ("docs/x", ErrorKind::IsADirectory),
            ("docs", ErrorKind::IsADirectory),
        ] {
            let small = jput(&store, key, PutPayload::from_static(b"1")).await;
            assert_eq!(kind(&small.unwrap_err()), want, "{key}");
            let direct = store.put(&Path::from(key), big()).await;
            assert_eq!(kind(&direct.unwrap_err()), want, "{key}, direct");
        }
        store.flush_now().await;
        let on_disk = jput(&store, "docs/d/n", PutPayload::from_static(b"1")).await;
        assert_eq!(kind(&on_disk.unwrap_err()), ErrorKind::NotADirectory);
        let on_disk = jput(&store, "docs/x", PutPayload::from_static(b"1")).await;
        assert_eq!(kind(&on_disk.unwrap_err()), ErrorKind::IsADirectory);
        // Once the document is gone, the folder may be made.
        put(&store, "docs/y", "file").await;
        store.delete(&Path::from("docs/y")).await.unwrap();
        put(&store, "docs/y/n", "now a folder").await;
        store.flush_now().await;
        assert_eq!(file(dir.path(), "docs/y/n").unwrap(), b"now a folder");
        assert_eq!(file(dir.path(), "docs/d").unwrap(), b"file");
    }

    /// A direct change never sets a key back: an aborted upload leaves the last
    /// acknowledged (journaled) version, a completed one wins over a version journaled
    /// while it ran, and while it runs no journaled key may sit under it. Only
    /// writes the document store marks are journaled.
    #[tokio::test]
    async fn direct_writes_hand_over_and_block_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), b"v1").unwrap();
        let store = open(dir.path());
        put(&store, "k", "v2").await;
        let mut upload = store.put_multipart(&Path::from("k")).await.unwrap();
        upload
            .put_part(PutPayload::from_static(b"never"))
            .await
            .unwrap();
        upload.abort().await.unwrap();
        drop(upload);
        assert_eq!(read(&store, "k").await.unwrap(), "v2", "still journaled");

        let mut upload = store.put_multipart(&Path::from("k")).await.unwrap();
        let under = jput(&store, "k/x", PutPayload::from_static(b"1")).await;
        assert!(under.is_err(), "k is being written as a file");
        put(&store, "k", "v3").await;
        upload
            .put_part(PutPayload::from_static(b"upload"))
            .await
            .unwrap();
        upload.complete().await.unwrap();
        drop(upload);
        assert_eq!(read(&store, "k").await.unwrap(), "upload");
        store.flush_now().await;
        assert_eq!(file(dir.path(), "k").unwrap(), b"upload");

        // Unmarked writes (blobs, records) go to their file at once.
        store
            .put(&Path::from("blob"), PutPayload::from_static(b"b"))
            .await
            .unwrap();
        assert_eq!(file(dir.path(), "blob").unwrap(), b"b");
        store.crash();
        let store = open(dir.path());
        assert_eq!(
            read(&store, "k").await.unwrap(),
            "upload",
            "not replayed over"
        );
    }

    /// ETags of journaled versions differ across opens, and conditional reads are
    /// answered from the journal.
    #[tokio::test]
    async fn journaled_etags_are_unique_and_answer_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let first = jput(&store, "k", PutPayload::from_static(b"a"))
            .await
            .unwrap();
        let tag = first.e_tag.clone().unwrap();
        let not_modified = store
            .get_opts(
                &Path::from("k"),
                GetOptions {
                    if_none_match: Some(tag.clone()),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(
            not_modified,
            Err(object_store::Error::NotModified { .. })
        ));
        let precondition = store
            .get_opts(
                &Path::from("k"),
                GetOptions {
                    if_match: Some("\"other\"".into()),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(
            precondition,
            Err(object_store::Error::Precondition { .. })
        ));
        assert_eq!(
            file(dir.path(), "k"),
            None,
            "answered without writing the file"
        );
        store.crash();
        let store = open(dir.path());
        let again = jput(&store, "k", PutPayload::from_static(b"b"))
            .await
            .unwrap();
        assert_ne!(again.e_tag.unwrap(), tag);
        // A listing under a prefix does not hold the document of that name.
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/q"), b"file").unwrap();
        let _ = jput(&store, "p", PutPayload::from_static(b"doc")).await;
        put(&store, "r", "doc").await;
        assert!(listed(&store, Some("r")).await.is_empty());
    }

    /// A request dropped in the middle of a change (a timeout, a closed
    /// connection) does not leave half of it to run later without the key's lock:
    /// the change runs to its end.
    #[tokio::test]
    async fn a_dropped_request_finishes_its_change_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "k", "v1").await;
        let dropped =
            tokio::time::timeout(Duration::from_nanos(1), store.delete(&Path::from("k"))).await;
        if dropped.is_ok() {
            return; // finished before the timeout: nothing was cut short
        }
        let mut gone = false;
        for _ in 0..10_000 {
            if read(&store, "k").await.is_none() {
                gone = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            gone,
            "the delete ran to its end after its request was dropped"
        );
        put(&store, "k", "v2").await;
        store.flush_now().await;
        assert_eq!(read(&store, "k").await.unwrap(), "v2");
        assert_eq!(file(dir.path(), "k").unwrap(), b"v2");
    }

    /// File work that a shut-down runtime drops instead of running is an error for
    /// whoever waits on it, not a panic (a store used from a task that outlives its
    /// runtime, as at an embedder's shutdown).
    #[test]
    fn file_work_dropped_by_a_shut_down_runtime_is_an_error() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        rt.shutdown_background();
        let mut job = Box::pin(blocking(|| Ok(1)));
        let first = {
            let _inside = handle.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            job.as_mut().poll(&mut cx)
        };
        let result = match first {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(job),
        };
        assert!(
            matches!(result, Err(object_store::Error::Generic { .. })),
            "{result:?}"
        );
    }

    /// A copy or a rename takes the source's journaled version, replaces the
    /// destination's, and a replay keeps the result.
    #[tokio::test]
    async fn copies_and_renames_see_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", "journaled a").await;
        put(&store, "b", "old b").await;
        store
            .copy(&Path::from("a"), &Path::from("b"))
            .await
            .unwrap();
        assert_eq!(read(&store, "b").await.unwrap(), "journaled a");
        put(&store, "c", "old c").await;
        store
            .rename(&Path::from("b"), &Path::from("c"))
            .await
            .unwrap();
        assert_eq!(read(&store, "b").await, None);
        assert_eq!(read(&store, "c").await.unwrap(), "journaled a");
        store.crash();
        let store = open(dir.path());
        assert_eq!(read(&store, "a").await.unwrap(), "journaled a");
        assert_eq!(read(&store, "b").await, None);
        assert_eq!(read(&store, "c").await.unwrap(), "journaled a");
    }

    /// Writers and checkpoints interleaved: every key ends at its last write, in
    /// memory, in its file, and after a replay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_racing_checkpoints_end_at_the_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = Path::from(format!("w/{w}"));
                    for i in 0..=200u32 {
                        let body = PutPayload::from(i.to_string().into_bytes());
                        store
                            .put_opts(&key, body, doc(PutMode::Overwrite))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let flusher = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    store.flush_now().await;
                    tokio::task::yield_now().await;
                }
            })
        };
        for w in writers {
            w.await.unwrap();
        }
        flusher.await.unwrap();
        for w in 0..4 {
            assert_eq!(read(&store, &format!("w/{w}")).await.unwrap(), "200");
        }
        store.crash();
        let _store = open(dir.path());
        for w in 0..4 {
            assert_eq!(file(dir.path(), &format!("w/{w}")).unwrap(), b"200");
        }
    }
}
