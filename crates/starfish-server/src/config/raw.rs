//! Serde mirror of the config file. Only `validate.rs` reads these types.
//!
//! Unknown fields are dropped, as the reference's `parseCollection` drops them.
//! Fields whose shape the reference checks with its own messages (rate limits,
//! restrictions, `appendOnly`) stay as JSON values until `validate.rs` looks at them.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawConfig {
    pub(crate) version: Option<Value>,
    #[serde(default)]
    pub(crate) collections: Vec<RawCollection>,
    pub(crate) rate_limit: Option<Value>,
    pub(crate) restrictions: Option<Value>,
    /// Extension: the default isolation of namespaces.
    pub(crate) isolation: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawNamespace {
    #[serde(default)]
    pub(crate) collections: Vec<RawCollection>,
    pub(crate) restrictions: Option<Value>,
    /// Extension: this namespace's isolation.
    pub(crate) isolation: Option<Value>,
    /// Extension: the roots whose certificates act here.
    pub(crate) trusted_roots: Option<Value>,
    /// Extension: most bytes and documents it may hold.
    pub(crate) quota: Option<Value>,
    /// Extension: requests per window and in flight.
    pub(crate) limits: Option<Value>,
    /// Extension: seal its objects at rest.
    pub(crate) encrypt_at_rest: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawCollection {
    pub(crate) name: String,
    pub(crate) storage_path: String,
    #[serde(default)]
    pub(crate) read_roles: Vec<String>,
    #[serde(default)]
    pub(crate) write_roles: Vec<String>,
    pub(crate) encryption: Option<String>,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) rate_limit: Option<Value>,
    pub(crate) cache_duration_ms: Option<u64>,
    pub(crate) object_schema: Option<Value>,
    pub(crate) allowed_mime_types: Option<Vec<String>>,
    pub(crate) pull_only: Option<bool>,
    pub(crate) push_only: Option<bool>,
    pub(crate) force_full_fetch: Option<bool>,
    pub(crate) bundle: Option<String>,
    pub(crate) append_only: Option<Value>,
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) field_permissions: Option<BTreeMap<String, RawFieldPermission>>,
    pub(crate) keyring_path: Option<String>,
    pub(crate) listable: Option<bool>,
    pub(crate) root_only: Option<bool>,
    pub(crate) restrictions: Option<Value>,
    /// Our extension: publish each write (`config/queue.rs`).
    pub(crate) queue: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawFieldPermission {
    #[serde(default)]
    pub(crate) read_roles: Vec<String>,
    #[serde(default)]
    pub(crate) write_roles: Vec<String>,
}
