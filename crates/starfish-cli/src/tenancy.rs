//! `starfish serve`'s tenancy settings: isolation, the admin key, per-namespace
//! stores. (`starfish admin`, which calls the admin API, is in `admin.rs`.)

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use starfish_server::store::{DocStore, StoreError};
use starfish_server::{Isolation, SyncConfig, SyncOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// `serve` flags; each also a `STARFISH_*` variable and a key of `server.tenancy`.
#[derive(clap::Args)]
pub(crate) struct TenancyArgs {
    /// Isolation of namespaces that do not set their own: `shared` (the reference's
    /// meaning), `prefixed` (each under its own prefix) or `store` (each in its own
    /// directory under --namespace-store-dir) [default: the config's `isolation`].
    #[arg(long, value_enum, env = "STARFISH_ISOLATION")]
    isolation: Option<IsolationArg>,
    /// With `store` isolation on the filesystem: namespace N lives in DIR/N.
    #[arg(long, env = "STARFISH_NAMESPACE_STORE_DIR", value_name = "DIR")]
    namespace_store_dir: Option<PathBuf>,
    /// A file holding the admin key: turns on the admin API under `/_starfish/admin/`
    /// and API keys. `STARFISH_ADMIN_KEY` gives the key itself.
    #[arg(long, env = "STARFISH_ADMIN_KEY_FILE")]
    admin_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IsolationArg {
    Shared,
    Prefixed,
    Store,
}

impl From<IsolationArg> for Isolation {
    fn from(i: IsolationArg) -> Self {
        match i {
            IsolationArg::Shared => Self::Shared,
            IsolationArg::Prefixed => Self::Prefixed,
            IsolationArg::Store => Self::Store,
        }
    }
}

/// `server.tenancy` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TenancySection {
    isolation: Option<IsolationArg>,
    namespace_store_dir: Option<PathBuf>,
    admin_key_file: Option<PathBuf>,
}

/// The effective tenancy settings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenancySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    isolation: Option<IsolationArg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_store_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_key_file: Option<PathBuf>,
    /// Only whether one is set (printed masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_key: Option<&'static str>,
}

impl TenancySettings {
    /// Flags and environment over the section; `beside` resolves the section's paths.
    pub(crate) fn resolve(
        args: TenancyArgs,
        section: TenancySection,
        beside: impl Fn(PathBuf) -> PathBuf,
    ) -> Self {
        let admin_key_file = args
            .admin_key_file
            .or_else(|| section.admin_key_file.map(&beside));
        let has_env_key = std::env::var_os("STARFISH_ADMIN_KEY").is_some_and(|v| !v.is_empty());
        Self {
            isolation: args.isolation.or(section.isolation),
            namespace_store_dir: args
                .namespace_store_dir
                .or_else(|| section.namespace_store_dir.map(&beside)),
            admin_key: (has_env_key || admin_key_file.is_some()).then_some(crate::mask::MASK),
            admin_key_file,
        }
    }

    /// The admin key: `STARFISH_ADMIN_KEY`, else the file's first line.
    fn admin_key(&self) -> Result<Option<String>, String> {
        if let Some(key) = std::env::var("STARFISH_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty())
        {
            return checked_key(key);
        }
        let Some(path) = &self.admin_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read admin key file {}: {e}", path.display()))?;
        checked_key(text.lines().next().unwrap_or("").trim().to_owned())
    }

    /// `config` with the isolation these settings choose (its warnings follow).
    pub(crate) fn isolate(&self, config: SyncConfig) -> SyncConfig {
        match self.isolation {
            Some(isolation) => config.with_isolation(isolation.into()),
            None => config,
        }
    }

    /// Applies namespace stores and the admin key to `options`.
    pub(crate) fn apply(&self, mut options: SyncOptions) -> Result<SyncOptions, String> {
        if let Some(dir) = self.namespace_store_dir.clone() {
            options = options.with_namespace_stores(Arc::new(
                move |name: &str| -> Result<DocStore, StoreError> { local_store(&dir.join(name)) },
            ));
        }
        if let Some(key) = self.admin_key()? {
            options = options.with_admin_key(key);
        }
        Ok(options)
    }
}

#[cfg(feature = "fs")]
fn local_store(dir: &std::path::Path) -> Result<DocStore, StoreError> {
    DocStore::local(dir)
}

#[cfg(not(feature = "fs"))]
fn local_store(_dir: &std::path::Path) -> Result<DocStore, StoreError> {
    Err(StoreError::KeyConflict(
        "this build lacks the `fs` feature for --namespace-store-dir".into(),
    ))
}

/// An admin key must be long enough not to be guessed.
fn checked_key(key: String) -> Result<Option<String>, String> {
    if key.len() < 16 {
        return Err("the admin key must have at least 16 characters".into());
    }
    Ok(Some(key))
}
