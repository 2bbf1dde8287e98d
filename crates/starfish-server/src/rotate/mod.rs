//! `rotate-keys`: a new data key for a namespace with `encryptAtRest`, and every
//! object sealed under an older key sealed again under it, while servers run.
//!
//! 1. A new version is added to the namespace's keyring and made current, with a
//!    mark that re-sealing under it is under way (one compare-and-swap).
//! 2. A grace period: every node re-reads the current version within
//!    [`crate::store`]'s refresh (5 s), after which new writes use the new key.
//! 3. Passes over the namespace's objects: each one sealed under another version is
//!    opened and sealed again under the new one, with a conditional write on the
//!    version read (a write landing in between stands: it used the new key). Passes
//!    repeat until one finds nothing to do, which is the check that only the new
//!    version remains.
//! 4. The mark is cleared.
//!
//! An object that looks sealed but does not open (damaged, or a delegated
//! collection's object that happens to start like a sealed one) is left as it is,
//! logged and counted: it cannot hold the rotation up. Each object is held in memory
//! while it is re-sealed and written back in one request (so on S3, objects up to
//! 5 GiB).
//!
//! Interrupted, the command resumes: the mark says which version it was re-sealing
//! under, and no new version is added. Old versions stay in the keyring (nothing
//! uses them afterwards; a slow node that sealed with one would still be read).

use crate::app::state::SyncOptions;
use crate::app::state::namespace_store;
use crate::config::ConfigError;
use crate::config::{Isolation, Namespace};
use crate::store::{KeyWrap, Keyring, NsStore, Resealed, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Most passes before giving up (each one after the first only meets objects
/// written with an old key by a node that had not seen the rotation yet).
const MAX_PASSES: u32 = 5;

/// Unopenable objects named in a report.
pub const LISTED: usize = 20;

/// Why a rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No such config namespace, or it does not seal at rest.
    #[error("{0}")]
    Namespace(String),
    /// The options do not build (the namespace's store, a missing master key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keyring could not be read, unwrapped or changed.
    #[error("keyring: {0}")]
    Keyring(String),
    /// The store failed; run the command again to resume.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Objects kept being written under an old key.
    #[error("objects under old keys remain after {MAX_PASSES} passes; run it again")]
    Unfinished,
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RotateReport {
    /// The version everything is now sealed under.
    pub version: u32,
    /// True when an interrupted rotation was finished (no version added).
    pub resumed: bool,
    /// Objects sealed again.
    pub resealed: u64,
    /// Objects already under the new version.
    pub current: u64,
    /// Objects that are not sealed (delegated collections), left as they are.
    pub plain: u64,
    /// Objects written by someone else while being re-sealed (theirs stands).
    pub raced: u64,
    /// Objects that look sealed but do not open (damaged, or a delegated
    /// collection's object that starts like a sealed one): left as they are, logged.
    pub unopenable: u64,
    /// The first of them (at most [`LISTED`]).
    pub unopenable_keys: Vec<String>,
    /// Passes over the namespace's objects.
    pub passes: u32,
}

/// How a rotation runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotateOptions {
    /// The wait after adding the version: more than the servers' keyring refresh
    /// (5 s) plus their longest write.
    pub grace: Duration,
    /// No server writes the store meanwhile: allowed on a store without conditional
    /// writes (the filesystem), where re-sealing replaces objects unconditionally.
    pub offline: bool,
}

/// Rotates the data key of config namespace `namespace` (which must have
/// `encryptAtRest`) in the store of `options`; `progress` is told after each object
/// with the report so far.
///
/// # Errors
/// [`RotateError`]; what was re-sealed stays re-sealed, and running it again resumes.
pub async fn rotate_keys(
    options: &SyncOptions,
    namespace: &str,
    how: RotateOptions,
    mut progress: impl FnMut(&RotateReport),
) -> Result<RotateReport, RotateError> {
    let (ns, isolation, wrap) = rotatable(options, namespace)?;
    let raw = namespace_store(
        &options.store,
        options.namespace_stores.as_deref(),
        ns,
        isolation,
    )?;
    if !raw.conditional_update() && !how.offline {
        return Err(RotateError::Namespace(
            "the store has no conditional writes (the filesystem): stop the server and rotate offline"
                .into(),
        ));
    }
    let ring = Arc::new(Keyring::for_config(
        &options.store,
        &ns.name,
        wrap,
        options.clock.clone(),
    ));
    let sealed = raw.sealed(ring.clone());
    let mut report = RotateReport::default();
    match ring.resealing().await.map_err(RotateError::Keyring)? {
        Some(version) => {
            report.version = version;
            report.resumed = true;
        }
        None => report.version = ring.rotate().await.map_err(RotateError::Keyring)?,
    }
    // Resumed too: nodes may not have seen the version yet if the first run stopped
    // early, and the last pass must not end while they can still seal with an old one.
    tokio::time::sleep(how.grace).await;
    loop {
        if report.passes == MAX_PASSES {
            return Err(RotateError::Unfinished);
        }
        report.passes += 1;
        let changed = reseal_pass(&raw, &sealed, &ring, &mut report, &mut progress).await?;
        if changed == 0 {
            break;
        }
    }
    ring.resealed(report.version)
        .await
        .map_err(RotateError::Keyring)?;
    Ok(report)
}

/// The config namespace `namespace`, if its keys can be rotated: it seals at rest,
/// is isolated, and there is a master key.
fn rotatable<'a>(
    options: &'a SyncOptions,
    namespace: &str,
) -> Result<(&'a Namespace, Isolation, Arc<dyn KeyWrap>), RotateError> {
    let config = &options.config;
    let ns = config
        .namespaces
        .iter()
        .find(|n| n.name.as_str() == namespace)
        .ok_or_else(|| RotateError::Namespace(format!("no config namespace \"{namespace}\"")))?;
    if !ns.encrypt_at_rest {
        return Err(RotateError::Namespace(format!(
            "namespace \"{namespace}\" does not have encryptAtRest"
        )));
    }
    let isolation = config.isolation_of(ns);
    if isolation == Isolation::Shared {
        return Err(RotateError::Namespace(format!(
            "namespace \"{namespace}\" is shared"
        )));
    }
    let wrap = options.key_wrap.clone().ok_or_else(|| {
        RotateError::Namespace(
            "no master key (STARFISH_MASTER_KEY or STARFISH_MASTER_KEY_FILE)".into(),
        )
    })?;
    Ok((ns, isolation, wrap))
}

/// One pass over the namespace's objects: each sealed with an older version is
/// sealed again with `report.version`. Returns how many changed (re-sealed, or
/// raced by a writer); the first pass also counts what it leaves as it is.
async fn reseal_pass(
    raw: &NsStore,
    sealed: &NsStore,
    ring: &Arc<Keyring>,
    report: &mut RotateReport,
    progress: &mut impl FnMut(&RotateReport),
) -> Result<usize, RotateError> {
    let mut changed = 0;
    let first = report.passes == 1;
    for listed in raw.objects().await? {
        match raw
            .reseal(sealed, ring, &listed.key, report.version)
            .await?
        {
            Resealed::Done => {
                report.resealed += 1;
                changed += 1;
            }
            Resealed::Raced => {
                report.raced += 1;
                changed += 1;
            }
            Resealed::Current if first => report.current += 1,
            Resealed::Plain if first => report.plain += 1,
            Resealed::Unopenable if first => {
                report.unopenable += 1;
                if report.unopenable_keys.len() < LISTED {
                    report.unopenable_keys.push(listed.key.clone());
                }
            }
            Resealed::Current | Resealed::Plain | Resealed::Unopenable | Resealed::Gone => {}
        }
        progress(report);
    }
    Ok(changed)
}
