//! Moving a config namespace from `shared` keys to `prefixed` keys while the servers
//! keep serving it (`starfish migrate`, docs/namespaces.md).
//!
//! A migration is a record in the store, `_starfish/migrations/state`, one entry per
//! namespace, changed only by compare-and-swap. Servers read it (at most once per
//! [`crate::tenants::TenantOptions::refresh`], never per request) and serve a `shared` config
//! namespace by its entry:
//!
//! - **copying**: as before, from the shared keys. The copier copies every object of
//!   the namespace to `_starfish/ns/<name>/`, saving its position as it goes (a
//!   restarted copy resumes there), then copies again what changed meanwhile.
//! - **frozen**: reads as before; writes answer `503 Namespace is being migrated` with
//!   `Retry-After`. The copier waits [`MigrateOptions::grace`] (every server has seen
//!   the freeze, every write admitted before it has landed), then copies what still
//!   differs. Writes are refused for about the grace plus this last pass.
//! - **done**: from the prefixed keys, for reads and writes. Final: the shared keys
//!   are left as they were (another scope may share them), and are no longer read.
//!
//! Every copy is conditional on what the destination held when it was read, and
//! nothing writes the destination before the entry is done but the copier.

use crate::config::template::Segment;
use crate::config::{Isolation, MAX_ISOLATED_NAME_BYTES, Namespace, SyncConfig};
use crate::store::{CasError, Copied, DocStore, META_SUFFIX, NsStore, ObjectKey, StoreError};
use crate::tenants::Scope;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The record's area of the store: `_starfish/migrations/state`.
const AREA: &str = "migrations";
/// The record's name in its area.
const RECORD: &str = "state";
/// Default for [`MigrateOptions::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Where a namespace's migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Being copied; served from the shared keys.
    Copying,
    /// Writes refused while the last pass copies what still differs.
    Frozen,
    /// Served from the prefixed keys.
    Done,
}

/// One namespace's entry in the migration record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MigrationEntry {
    /// Where it stands.
    pub phase: Phase,
    /// When it started (ms since the epoch).
    pub started_at: u64,
    /// When writes were frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_at: Option<u64>,
    /// When it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<u64>,
    /// The last key the first pass copied (where an interrupted copy resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The migration record.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    #[serde(default)]
    namespaces: BTreeMap<String, MigrationEntry>,
}

/// Why a migration did not run or did not finish. What was copied stays copied, and
/// running it again goes on from where it stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The config has no such namespace.
    #[error("the config has no namespace {0:?}")]
    UnknownNamespace(String),
    /// Only a `shared` namespace can be migrated to `prefixed`.
    #[error("namespace {0:?} is not in shared isolation; nothing to migrate")]
    NotShared(String),
    /// An isolated namespace's name is at most 63 bytes.
    #[error("namespace {0:?} is too long a name to be prefixed")]
    NameTooLong(String),
    /// The namespace was migrated already.
    #[error("namespace {0:?} has been migrated already")]
    AlreadyDone(String),
    /// There is no migration to abort.
    #[error("namespace {0:?} has no migration under way")]
    NotStarted(String),
    /// The migration was aborted by another process.
    #[error("the migration of {0:?} was aborted")]
    Aborted(String),
    /// The progress callback asked to stop.
    #[error("stopped; run again to go on")]
    Stopped,
    /// Another process is writing the same record or destination.
    #[error("another process is migrating this namespace; retry")]
    Contended,
    /// The record cannot be read.
    #[error("the migration record is not valid: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CasError<MigrateError>> for MigrateError {
    fn from(e: CasError<MigrateError>) -> Self {
        match e {
            CasError::Rejected(e) => e,
            CasError::Contended => Self::Contended,
            CasError::Store(e) => Self::Store(e),
        }
    }
}

/// How a migration runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// How long writes are frozen before the last pass: at least the servers'
    /// [`crate::tenants::TenantOptions::refresh`] plus the longest write a server admits (its
    /// request timeout bounds it).
    pub grace: Duration,
    /// The first pass saves its position every this many objects.
    pub checkpoint_every: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            checkpoint_every: 100,
        }
    }
}

impl MigrateOptions {
    /// These options with `grace`.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// These options saving the position every `objects` objects (at least 1).
    #[must_use]
    pub fn with_checkpoint_every(mut self, objects: usize) -> Self {
        self.checkpoint_every = objects.max(1);
        self
    }
}

/// What a migration has done so far in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Where it stands.
    pub phase: Phase,
    /// Objects of the namespace looked at (over all passes).
    pub examined: u64,
    /// Objects written at the prefixed keys.
    pub copied: u64,
    /// Objects the prefixed keys already held, or unchanged since the last pass.
    pub unchanged: u64,
}

fn registry_store(store: &DocStore) -> NsStore {
    NsStore::system(store.clone(), AREA)
}

fn now_ms() -> u64 {
    use crate::auth::Clock as _;
    crate::auth::SystemClock.now_ms()
}

async fn read_registry(registry: &NsStore) -> Result<Registry, MigrateError> {
    match registry.get(&ObjectKey::fixed(RECORD)).await? {
        None => Ok(Registry::default()),
        Some(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| MigrateError::Corrupt(e.to_string()))
        }
    }
}

/// Changes the record with compare-and-swap; returns what `change` returned.
async fn update<T>(
    registry: &NsStore,
    mut change: impl FnMut(&mut Registry) -> Result<T, MigrateError>,
) -> Result<T, MigrateError> {
    let out = registry
        .compare_and_swap(&ObjectKey::fixed(RECORD), |current| {
            let mut record: Registry = match current {
                None => Registry::default(),
                Some(b) => {
                    serde_json::from_slice(b).map_err(|e| MigrateError::Corrupt(e.to_string()))?
                }
            };
            let out = change(&mut record)?;
            let bytes =
                serde_json::to_vec(&record).map_err(|e| MigrateError::Corrupt(e.to_string()))?;
            Ok((bytes, out))
        })
        .await?;
    Ok(out)
}

/// Every namespace's migration entry, by name.
///
/// # Errors
/// [`MigrateError::Store`] or [`MigrateError::Corrupt`].
pub async fn migration_status(
    store: &DocStore,
) -> Result<BTreeMap<String, MigrationEntry>, MigrateError> {
    Ok(read_registry(&registry_store(store)).await?.namespaces)
}

/// Abandons the migration of `namespace` (copying or frozen): servers go back to its
/// shared keys, which were never changed; what was copied stays unread under the
/// prefix, and a later migration compares it again.
///
/// # Errors
/// [`MigrateError::NotStarted`], [`MigrateError::AlreadyDone`] (a done migration is
/// final), or a store failure.
pub async fn abort_migration(store: &DocStore, namespace: &str) -> Result<(), MigrateError> {
    update(&registry_store(store), |record| {
        match record.namespaces.get(namespace).map(|e| e.phase) {
            None => Err(MigrateError::NotStarted(namespace.to_owned())),
            Some(Phase::Done) => Err(MigrateError::AlreadyDone(namespace.to_owned())),
            Some(_) => {
                record.namespaces.remove(namespace);
                Ok(())
            }
        }
    })
    .await
}

/// True when `key` is an object of `namespace`'s collections as the shared layout
/// stores them: a document, a bundle member or keyring below it, a log's chunks
/// (`<key>__seg/…`), or a blob's sidecar (`<key>.__meta__`).
fn belongs(namespace: &Namespace, key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    namespace.collections.iter().any(|c| {
        let segments = c.storage_path.segments();
        let Some((last, head)) = segments.split_last() else {
            return false;
        };
        if parts.len() < segments.len() {
            return false;
        }
        let head_matches = head.iter().zip(&parts).all(|(s, p)| match s {
            Segment::Static(text) => text == p,
            Segment::Param(_) => true,
        });
        let part = parts[head.len()];
        head_matches
            && match last {
                Segment::Param(_) => true,
                Segment::Static(text) => part
                    .strip_prefix(text.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest == "__seg" || rest == META_SUFFIX),
            }
    })
}

/// Copies config namespace `namespace` of `config` from its shared keys to its
/// prefixed keys in `store`, while servers serve it (module docs), and records it
/// done. `progress` hears about every object and phase; `ControlFlow::Break` stops
/// the run (its position is saved, and a later run goes on from there).
///
/// # Errors
/// [`MigrateError`]; what was copied stays copied.
pub async fn migrate_to_prefixed(
    config: &SyncConfig,
    store: &DocStore,
    namespace: &str,
    options: &MigrateOptions,
    progress: impl FnMut(&MigrateReport) -> ControlFlow<()>,
) -> Result<MigrateReport, MigrateError> {
    let ns = config
        .namespaces
        .iter()
        .find(|n| n.name.as_str() == namespace)
        .ok_or_else(|| MigrateError::UnknownNamespace(namespace.to_owned()))?;
    if config.isolation_of(ns) != Isolation::Shared {
        return Err(MigrateError::NotShared(namespace.to_owned()));
    }
    if namespace.len() > MAX_ISOLATED_NAME_BYTES {
        return Err(MigrateError::NameTooLong(namespace.to_owned()));
    }
    let registry = registry_store(store);
    let entry = update(&registry, |record| {
        let entry = record
            .namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| MigrationEntry {
                phase: Phase::Copying,
                started_at: now_ms(),
                frozen_at: None,
                done_at: None,
                cursor: None,
            });
        if entry.phase == Phase::Done {
            return Err(MigrateError::AlreadyDone(namespace.to_owned()));
        }
        Ok(entry.clone())
    })
    .await?;
    let mut copier = Copier {
        namespace: ns,
        source: NsStore::whole(store.clone()),
        dest: NsStore::prefixed(store.clone(), &ns.name),
        registry,
        options,
        report: MigrateReport {
            phase: entry.phase,
            examined: 0,
            copied: 0,
            unchanged: 0,
        },
        progress,
    };
    copier.run(entry).await
}

/// One run of a migration.
struct Copier<'a, P> {
    namespace: &'a Namespace,
    source: NsStore,
    dest: NsStore,
    registry: NsStore,
    options: &'a MigrateOptions,
    report: MigrateReport,
    progress: P,
}

/// The source version each key was copied or compared at.
type Seen = HashMap<String, Option<String>>;

impl<P: FnMut(&MigrateReport) -> ControlFlow<()>> Copier<'_, P> {
    async fn run(&mut self, entry: MigrationEntry) -> Result<MigrateReport, MigrateError> {
        let mut known = None;
        let mut frozen_at = entry.frozen_at;
        if entry.phase == Phase::Copying {
            self.tell()?;
            let first = self.pass(entry.cursor.as_deref(), None, true).await?;
            // What changed while the first pass ran, so the frozen pass is short.
            let second = self.pass(None, Some(&first), false).await?;
            let at = now_ms();
            self.set_phase(Phase::Copying, |e| {
                e.phase = Phase::Frozen;
                e.frozen_at = Some(at);
                e.cursor = None;
            })
            .await?;
            frozen_at = Some(at);
            known = Some(second);
            self.report.phase = Phase::Frozen;
            self.tell()?;
        }
        // Every server sees the freeze within its refresh; every write admitted
        // before it lands within its timeout.
        let waited = Duration::from_millis(now_ms().saturating_sub(frozen_at.unwrap_or(0)));
        if let Some(rest) = self.options.grace.checked_sub(waited) {
            tokio::time::sleep(rest).await;
        }
        self.pass(None, known.as_ref(), false).await?;
        let at = now_ms();
        self.set_phase(Phase::Frozen, |e| {
            e.phase = Phase::Done;
            e.done_at = Some(at);
        })
        .await?;
        self.report.phase = Phase::Done;
        // Done is final: a stop asked for now changes nothing.
        let _ = (self.progress)(&self.report);
        Ok(self.report.clone())
    }

    fn tell(&mut self) -> Result<(), MigrateError> {
        match (self.progress)(&self.report) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(MigrateError::Stopped),
        }
    }

    /// Copies every object of the namespace after `resume_after` whose source
    /// version is not the one in `known`; with `checkpoint`, saves the position.
    async fn pass(
        &mut self,
        resume_after: Option<&str>,
        known: Option<&Seen>,
        checkpoint: bool,
    ) -> Result<Seen, MigrateError> {
        let listed = self.source.objects().await?;
        let mut seen = Seen::new();
        // A blob copied again needs its sidecar rewritten for the copy's version.
        let mut forced: HashSet<String> = HashSet::new();
        let mut since_checkpoint = 0usize;
        for item in listed {
            if !belongs(self.namespace, &item.key)
                || resume_after.is_some_and(|cursor| item.key.as_str() <= cursor)
            {
                continue;
            }
            self.report.examined += 1;
            let same = item.e_tag.is_some()
                && known.and_then(|k| k.get(&item.key)) == Some(&item.e_tag)
                && !forced.contains(&item.key);
            if same {
                self.report.unchanged += 1;
                seen.insert(item.key, item.e_tag);
            } else {
                match self.source.copy_into(&self.dest, &item.key).await? {
                    Copied::Written(version) => {
                        self.report.copied += 1;
                        forced.insert(format!("{}{META_SUFFIX}", item.key));
                        seen.insert(item.key.clone(), version);
                    }
                    Copied::Unchanged(version) => {
                        self.report.unchanged += 1;
                        seen.insert(item.key.clone(), version);
                    }
                    Copied::Gone => {}
                    Copied::Raced => return Err(MigrateError::Contended),
                }
            }
            since_checkpoint += 1;
            let stop = (self.progress)(&self.report).is_break();
            if checkpoint && (stop || since_checkpoint >= self.options.checkpoint_every) {
                let cursor = seen_cursor(&seen, resume_after);
                self.set_phase(Phase::Copying, |e| e.cursor.clone_from(&cursor))
                    .await?;
                since_checkpoint = 0;
            }
            if stop {
                return Err(MigrateError::Stopped);
            }
        }
        Ok(seen)
    }

    /// Changes this namespace's entry, which must be in `expected`.
    async fn set_phase(
        &self,
        expected: Phase,
        change: impl Fn(&mut MigrationEntry),
    ) -> Result<(), MigrateError> {
        let name = self.namespace.name.as_str();
        update(&self.registry, |record| {
            let entry = record
                .namespaces
                .get_mut(name)
                .filter(|e| e.phase == expected)
                .ok_or_else(|| MigrateError::Aborted(name.to_owned()))?;
            change(entry);
            Ok(())
        })
        .await
    }
}

/// The greatest key of the pass so far (keys come in order).
fn seen_cursor(seen: &Seen, resume_after: Option<&str>) -> Option<String> {
    seen.keys()
        .map(String::as_str)
        .chain(resume_after)
        .max()
        .map(str::to_owned)
}

/// What the servers know of migrations: which `shared` config namespaces are frozen
/// or moved, read from the record at most once per refresh.
pub(crate) struct Migrations {
    registry: NsStore,
    /// The `shared` config namespaces, with their scope while frozen and once moved.
    watched: HashMap<String, Variants>,
    snapshot: Mutex<Option<Snapshot>>,
    loading: tokio::sync::Mutex<()>,
    refresh_ms: u64,
    clock: Arc<dyn crate::auth::Clock>,
}

struct Variants {
    frozen: Scope,
    moved: Scope,
    /// Shared with the namespace's own scope's store handle: set once frozen or done.
    moving: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Snapshot {
    at_ms: u64,
    phases: Arc<HashMap<String, Phase>>,
}

impl Migrations {
    /// Watches the `shared` namespaces of `config`; their scopes in `scopes` get a
    /// store handle that refuses writes once the migration is frozen.
    pub(crate) fn new(
        config: &SyncConfig,
        store: &DocStore,
        scopes: &mut HashMap<String, Scope>,
        refresh: Duration,
        clock: Arc<dyn crate::auth::Clock>,
    ) -> Self {
        let watched = config
            .namespaces
            .iter()
            .filter(|ns| {
                config.isolation_of(ns) == Isolation::Shared
                    && ns.name.as_str().len() <= MAX_ISOLATED_NAME_BYTES
            })
            .filter_map(|ns| {
                let scope = scopes.get_mut(ns.name.as_str())?;
                let moving = Arc::new(AtomicBool::new(false));
                scope.store = scope.store.watched(moving.clone());
                let variants = Variants {
                    moving,
                    frozen: Scope {
                        store: scope.store.read_only(),
                        ..scope.clone()
                    },
                    moved: Scope {
                        store: NsStore::prefixed(store.clone(), &ns.name),
                        ..scope.clone()
                    },
                };
                Some((ns.name.to_string(), variants))
            })
            .collect();
        Self {
            registry: registry_store(store),
            watched,
            snapshot: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            refresh_ms: u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX),
            clock,
        }
    }

    /// The scope config namespace `name` is served by while a migration is frozen or
    /// done; `None`: its own.
    ///
    /// # Errors
    /// When the record was never read and cannot be.
    pub(crate) async fn scope(&self, name: &str) -> Result<Option<&Scope>, StoreError> {
        let Some(variants) = self.watched.get(name) else {
            return Ok(None);
        };
        // Boxed: only a namespace being migrated pays for the record read's future.
        Ok(match Box::pin(self.phases()).await?.get(name) {
            Some(Phase::Frozen) => Some(&variants.frozen),
            Some(Phase::Done) => Some(&variants.moved),
            Some(Phase::Copying) | None => None,
        })
    }

    fn cached(&self) -> Option<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn fresh(&self, snapshot: Option<&Snapshot>) -> bool {
        snapshot.is_some_and(|s| self.clock.now_ms().saturating_sub(s.at_ms) < self.refresh_ms)
    }

    async fn phases(&self) -> Result<Arc<HashMap<String, Phase>>, StoreError> {
        let cached = self.cached();
        if let Some(s) = cached.as_ref().filter(|s| self.fresh(Some(s))) {
            return Ok(s.phases.clone());
        }
        // One request reads the record; the others serve the last answer meanwhile
        // (or wait, when there is none yet).
        let _guard = match (self.loading.try_lock(), &cached) {
            (Ok(guard), _) => guard,
            (Err(_), Some(stale)) => return Ok(stale.phases.clone()),
            (Err(_), None) => self.loading.lock().await,
        };
        if let Some(s) = self.cached().filter(|s| self.fresh(Some(s))) {
            return Ok(s.phases);
        }
        match read_registry(&self.registry).await {
            Ok(record) => {
                let phases: Arc<HashMap<String, Phase>> = Arc::new(
                    record
                        .namespaces
                        .into_iter()
                        .filter(|(name, _)| self.watched.contains_key(name))
                        .map(|(name, entry)| (name, entry.phase))
                        .collect(),
                );
                for (name, variants) in &self.watched {
                    let moving = matches!(phases.get(name), Some(Phase::Frozen | Phase::Done));
                    variants.moving.store(moving, Ordering::Release);
                }
                *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Snapshot {
                    at_ms: self.clock.now_ms(),
                    phases: phases.clone(),
                });
                Ok(phases)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the migration record");
                match cached {
                    Some(stale) => Ok(stale.phases),
                    None => Err(match e {
                        MigrateError::Store(e) => e,
                        other => StoreError::Backend(object_store::Error::Generic {
                            store: "migrations",
                            source: Box::new(other),
                        }),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_a_namespace_are_told_apart() {
        let config = SyncConfig::from_json_str(
            r#"{"version":1,"collections":[],"namespaces":{"acme":{"collections":[
                {"name":"notes","storagePath":"acme/{identity}/notes","readRoles":["public"],"writeRoles":["public"]},
                {"name":"files","storagePath":"files/{id}","readRoles":["public"],"writeRoles":["public"]}
            ]}}}"#,
        )
        .unwrap();
        let ns = &config.namespaces[0];
        for key in [
            "acme/u1/notes",
            "acme/u1/notes/_keyring",
            "acme/u1/notes__seg/0000000001",
            "files/a",
            "files/a.__meta__",
        ] {
            assert!(belongs(ns, key), "{key}");
        }
        for key in [
            "acme/u1",
            "acme/u1/other",
            "acme/u1/notesx",
            "other/u1/notes",
            "files",
        ] {
            assert!(!belongs(ns, key), "{key}");
        }
    }
}
