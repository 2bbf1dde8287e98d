//! Copying objects between two namespaces' parts of a store, for a migration (the
//! server's `migrate`): byte for byte, with the content type, and with a blob's
//! sidecar made to describe the copy.

use super::blob::META_SUFFIX;
use super::{NsStore, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use starfish_protocol::names::SYSTEM_ROOT;

/// One listed object, relative to the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key, such as `users/abc/notes`.
    pub key: String,
    /// Its version as listed (`None` when the store has no ETags).
    pub e_tag: Option<String>,
}

/// What [`NsStore::copy_into`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// Written at the destination; the source version that was copied.
    Written(Option<String>),
    /// The destination already held these bytes; the source version.
    Unchanged(Option<String>),
    /// The source is gone.
    Gone,
    /// Someone else wrote the destination between our read and our write.
    Raced,
}

impl NsStore {
    /// Every object of this namespace, sorted by key. For a handle over the whole
    /// store, the server's own area (`_starfish/`) is left out.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn objects(&self) -> Result<Vec<Listed>, StoreError> {
        let mut listing = self.docs.inner.list(self.root.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let Some(key) = self.relative(&meta.location) else {
                continue;
            };
            if self.root.is_none() && key.split('/').next() == Some(SYSTEM_ROOT) {
                continue;
            }
            out.push(Listed {
                key: key.to_owned(),
                e_tag: meta.e_tag,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Copies the object at `key` (as [`NsStore::objects`] lists it) from this
    /// namespace into `to`, unless `to` already holds the same bytes. The write is
    /// conditional on what `to` held when it was read (created if absent, replaced if
    /// unchanged), so a copy never overwrites a write it did not see. A blob's sidecar
    /// that described the source blob is rewritten to describe the copy (its ETag), so
    /// pulls of the copy still trust the recorded hash.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn copy_into(&self, to: &NsStore, key: &str) -> Result<Copied, StoreError> {
        to.writable()?;
        let from_path = self.path_of(key)?;
        let source = match self.docs.inner.get(&from_path).await {
            Ok(result) => result,
            Err(e) if super::is_missing(&e) => return Ok(Copied::Gone),
            Err(e) => return Err(e.into()),
        };
        let version = source.meta.e_tag.clone();
        let attributes = source.attributes.clone();
        let mut bytes = source.bytes().await?;
        if let Some(blob) = key.strip_suffix(META_SUFFIX) {
            bytes = self.sidecar_for(to, blob, bytes).await?;
        }
        let to_path = to.path_of(key)?;
        let current = to.read(&to_path).await?;
        if current.as_ref().is_some_and(|(held, _)| *held == bytes) {
            return Ok(Copied::Unchanged(version));
        }
        let mode = match current {
            None => PutMode::Create,
            Some((_, v)) if to.docs.caps.conditional_update => PutMode::Update(v),
            // Without conditional updates the copier is the destination's only
            // writer until the migration is done (docs/namespaces.md).
            Some(_) => PutMode::Overwrite,
        };
        let mut opts = PutOptions::from(mode);
        if to.docs.caps.attributes {
            opts.attributes = attributes;
        }
        let written = to
            .docs
            .inner
            .put_opts(&to_path, PutPayload::from(bytes), opts)
            .await;
        to.wrote(&to_path, None);
        match written {
            Ok(_) => Ok(Copied::Written(version)),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(Copied::Raced),
            Err(e) => Err(StoreError::on_write(e)),
        }
    }

    /// The sidecar `bytes` of blob `blob`, as it must read in `to`: when it describes
    /// the source blob's current version, it is made to describe `to`'s copy.
    async fn sidecar_for(
        &self,
        to: &NsStore,
        blob: &str,
        bytes: Bytes,
    ) -> Result<Bytes, StoreError> {
        let Ok(mut meta) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(bytes);
        };
        let source = self.head_of(&self.path_of(blob)?).await?;
        let copy = to.head_of(&to.path_of(blob)?).await?;
        let recorded = meta.get("eTag").and_then(|v| v.as_str());
        match (source, copy) {
            (Some(source), Some(copy))
                if source.e_tag.is_some() && recorded == source.e_tag.as_deref() =>
            {
                meta["eTag"] = copy.e_tag.into();
                Ok(Bytes::from(meta.to_string()))
            }
            _ => Ok(bytes),
        }
    }

    async fn head_of(&self, path: &Path) -> Result<Option<UpdateVersion>, StoreError> {
        match self.docs.inner.head(path).await {
            Ok(meta) => Ok(Some(UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            })),
            Err(e) if super::is_missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
