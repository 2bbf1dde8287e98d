//! The filesystem store in durable mode ([`DocStore::local_durable`]): every write is
//! on stable storage before it is acknowledged.
//!
//! `object_store`'s `LocalFileSystem` does the work with `with_fsync(true)`, in the
//! order that makes it safe: the staging file's contents are fsynced **before** it is
//! renamed (or hard-linked, for a create) over the final name, then the final name's
//! directory is fsynced, and so is every directory the write had to create, up to the
//! first one that existed. Multipart uploads (blobs past 5 MiB) do the same on
//! completion. So after a power loss a key holds either its previous acknowledged
//! version or the new one, never a torn or empty file, and an acknowledged write is
//! there. (Fsyncing the final file after an unsynced rename, as a wrapper around the
//! store could, would leave a window in which a power loss replaces the previous
//! version with an empty file on filesystems that do not order the two, XFS among
//! them.)
//!
//! Not covered: deletes (the tenant admin API's namespace removal) are not fsynced,
//! so after a power loss a deleted object may come back. Without durable mode a
//! write is atomic (staging file and rename) but sits in the page cache for a while:
//! a killed process loses nothing, a power loss may lose recent writes.

use super::{Capabilities, DocStore, StoreError};
use std::sync::Arc;

/// A filesystem store under `dir` that fsyncs files and directories on every write.
pub(super) fn local(dir: &std::path::Path) -> Result<DocStore, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Backend(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })
    })?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?
        .with_automatic_cleanup(true)
        .with_fsync(true);
    // What a process without `--fsync` left in the journal comes first.
    #[cfg(unix)]
    super::journal::recover(dir, &fs).map_err(|e| {
        StoreError::Backend(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })
    })?;
    Ok(DocStore::new(
        Arc::new(fs),
        Capabilities {
            conditional_update: false,
            attributes: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutMode, PutPayload, WriteMultipart};

    /// The durable store behaves as the plain one: creates (with new nested
    /// directories), overwrites, refused second creates and multipart uploads.
    #[tokio::test]
    async fn writes_land_as_in_the_plain_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path()).unwrap();
        let fs = store.inner();
        let key = Path::from("users/abc/notes");
        fs.put_opts(&key, PutPayload::from_static(b"1"), PutMode::Create.into())
            .await
            .unwrap();
        let again = fs
            .put_opts(&key, PutPayload::from_static(b"2"), PutMode::Create.into())
            .await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        fs.put(&key, PutPayload::from_static(b"3")).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("users/abc/notes")).unwrap(),
            b"3"
        );

        let blob = Path::from("files/big");
        let mut upload = WriteMultipart::new(fs.put_multipart(&blob).await.unwrap());
        upload.write(&[7u8; 100]);
        upload.write(&[8u8; 100]);
        upload.finish().await.unwrap();
        let bytes = std::fs::read(dir.path().join("files/big")).unwrap();
        assert_eq!(bytes.len(), 200);
        let listed: Vec<_> = fs.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 2, "no staging file left behind");
    }
}
