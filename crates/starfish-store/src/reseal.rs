//! Re-sealing one object under a namespace's current data key, for `rotate-keys` (the
//! server's `rotate`): read as stored, opened with the version it names, sealed again
//! with a conditional write on the version read, so a write that lands in between is
//! never overwritten (the writer sealed with the current key already).

use super::blob::META_SUFFIX;
use super::datakeys::{KeySource, Keyring};
use super::{NsStore, StoreError, seal};
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::sync::Arc;

/// What [`NsStore::reseal`] did with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resealed {
    /// Sealed again under the current version.
    Done,
    /// Already under the current version.
    Current,
    /// Not sealed (a delegated collection's object): left as it is.
    Plain,
    /// Gone since it was listed.
    Gone,
    /// Looks sealed but does not open (damaged, or a delegated collection's object
    /// that happens to start like a sealed one): left as it is, and reported.
    Unopenable,
    /// Written by someone else between our read and our write: theirs stands.
    Raced,
}

impl NsStore {
    /// Re-seals the object at `key` (as [`NsStore::objects`] lists it) of this
    /// handle (the namespace's store as stored, unsealed) under `version`, the
    /// current version of `ring`, through `sealed` (this namespace's sealing handle).
    /// A blob's sidecar that recorded the blob's version is made to record the new
    /// one, so pulls keep trusting the recorded hash.
    ///
    /// # Errors
    /// [`StoreError`]; an object that does not open is an integrity error.
    pub async fn reseal(
        &self,
        sealed: &NsStore,
        ring: &Arc<Keyring>,
        key: &str,
        version: u32,
    ) -> Result<Resealed, StoreError> {
        let path = self.path_of(key)?;
        let Some((stored, read, attributes)) = self.raw(&path).await? else {
            return Ok(Resealed::Gone);
        };
        match seal::sealed_version(&stored) {
            None => return Ok(Resealed::Plain),
            Some(v) if v == version => return Ok(Resealed::Current),
            Some(_) => {}
        }
        let keys: Arc<dyn KeySource> = ring.clone();
        let plain = match seal::open_all(keys, &path, stored).await {
            Ok(plain) => plain,
            Err(e) if seal::is_seal_error(&e) => {
                tracing::warn!(path = %path, error = %e, "not re-sealed: it does not open");
                return Ok(Resealed::Unopenable);
            }
            Err(e) => return Err(e.into()),
        };
        let Some(written) = sealed
            .put_sealed(&path, plain, read.clone(), attributes)
            .await?
        else {
            return Ok(Resealed::Raced);
        };
        if let Some(old) = read.e_tag {
            self.follow_sidecar(sealed, key, &old, written.e_tag)
                .await?;
        }
        Ok(Resealed::Done)
    }

    /// The object at `path` as stored, its version and attributes.
    async fn raw(
        &self,
        path: &object_store::path::Path,
    ) -> Result<Option<(Bytes, UpdateVersion, object_store::Attributes)>, StoreError> {
        match self.docs.inner.get(path).await {
            Ok(result) => {
                let version = UpdateVersion {
                    e_tag: result.meta.e_tag.clone(),
                    version: result.meta.version.clone(),
                };
                let attributes = result.attributes.clone();
                Ok(Some((result.bytes().await?, version, attributes)))
            }
            Err(e) if super::is_missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `plain` at `path` through this (sealing) handle if the object is still
    /// at `expected`: the new version, or `None` when another write came first.
    async fn put_sealed(
        &self,
        path: &object_store::path::Path,
        plain: Vec<u8>,
        expected: UpdateVersion,
        attributes: object_store::Attributes,
    ) -> Result<Option<UpdateVersion>, StoreError> {
        self.writable()?;
        // Without conditional updates the caller made sure nobody else writes
        // (the server's `rotate::RotateOptions::offline`).
        let mode = if self.docs.caps.conditional_update {
            PutMode::Update(expected)
        } else {
            PutMode::Overwrite
        };
        let mut opts = PutOptions::from(mode);
        if self.docs.caps.attributes {
            opts.attributes = attributes;
        }
        let written = self
            .docs
            .inner
            .put_opts(path, PutPayload::from(plain), opts)
            .await;
        self.wrote(path, None);
        match written {
            Ok(put) => Ok(Some(UpdateVersion {
                e_tag: put.e_tag,
                version: put.version,
            })),
            Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(StoreError::on_write(e)),
        }
    }

    /// When `key` is a blob whose sidecar records version `old`, records `new`.
    async fn follow_sidecar(
        &self,
        sealed: &NsStore,
        key: &str,
        old: &str,
        new: Option<String>,
    ) -> Result<(), StoreError> {
        let meta_path = self.path_of(&format!("{key}{META_SUFFIX}"))?;
        let Some((bytes, read)) = sealed.docs.get_versioned(&meta_path).await? else {
            return Ok(());
        };
        let Ok(mut meta) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(());
        };
        if meta.get("eTag").and_then(|v| v.as_str()) != Some(old) {
            return Ok(());
        }
        meta["eTag"] = new.into();
        let attributes = object_store::Attributes::new();
        // A sidecar rewritten in between (a new upload) describes that upload.
        sealed
            .put_sealed(&meta_path, meta.to_string().into_bytes(), read, attributes)
            .await
            .map(|_| ())
    }
}
