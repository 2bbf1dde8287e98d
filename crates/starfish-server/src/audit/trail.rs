//! What one request tells its audit record as it goes: the pipeline's steps note
//! who asked, what was touched and why it was refused into a task-local [`Trail`],
//! which the dispatcher turns into one record when the answer is known.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// What a request's steps noted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Trail {
    pub(crate) identity: Option<String>,
    pub(crate) api_key_id: Option<String>,
    pub(crate) collection: Option<String>,
    pub(crate) document_key: Option<String>,
    pub(crate) params: Option<BTreeMap<String, String>>,
    pub(crate) reason: Option<String>,
    /// Namespaces keep trails of their own: note where.
    pub(crate) keep_tenant: bool,
    /// The namespace and the part of the store its own trail is kept in.
    pub(crate) tenant: Option<(
        starfish_protocol::names::NamespaceName,
        crate::store::NsStore,
    )>,
}

tokio::task_local! {
    /// The trail of the request this task serves, while it is audited.
    pub(crate) static TRAIL: RefCell<Trail>;
}

/// Notes into the current request's trail; nothing when it is not audited.
pub(crate) fn note(f: impl FnOnce(&mut Trail)) {
    let _ = TRAIL.try_with(|trail| f(&mut trail.borrow_mut()));
}
