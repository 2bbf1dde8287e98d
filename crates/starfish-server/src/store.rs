//! The store: [`DocStore`] over any `object_store`, with compare-and-swap, and what
//! it needs to be opened ([`Capabilities`], [`NamespaceStores`], [`MasterKey`] and
//! [`KeyWrap`] for sealing at rest, `S3Settings` with `aws`). The `starfish-store`
//! crate, re-exported: the server uses the rest of it by these paths too.

#[cfg(feature = "aws")]
pub use starfish_store::S3Settings;
pub use starfish_store::{Capabilities, DocStore, KeyWrap, MasterKey, NamespaceStores, StoreError};

pub(crate) use starfish_store::{
    AppendFailure, AppendOp, BlobBody, BlobError, CasError, Copied, DocLayout, KeyError, Keyring,
    Ledger, MAX_PARAM_BYTES, META_SUFFIX, NsStore, ObjectKey, PathParams, Resealed, StoreCalls,
    etag,
};
