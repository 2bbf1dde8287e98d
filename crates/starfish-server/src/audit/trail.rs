//! What one request tells its audit record as it goes: the pipeline's steps note
//! who asked, what was touched and why it was refused into a task-local [`Trail`],
//! which the dispatcher turns into one record when the answer is known.

use std::cell::RefCell;

/// What a request's steps noted: only what the endpoint and the answer do not say
/// (what was touched is the endpoint's), so that it stays small: the scoped
/// future moves it in and out of the thread at every poll.
#[derive(Debug, Default, Clone)]
pub(crate) struct Trail {
    pub(crate) identity: Option<String>,
    pub(crate) api_key_id: Option<String>,
    pub(crate) reason: Option<String>,
}

tokio::task_local! {
    /// The trail of the request this task serves, while it is audited.
    pub(crate) static TRAIL: RefCell<Trail>;
}

/// Notes into the current request's trail; nothing when it is not audited.
pub(crate) fn note(f: impl FnOnce(&mut Trail)) {
    let _ = TRAIL.try_with(|trail| f(&mut trail.borrow_mut()));
}
