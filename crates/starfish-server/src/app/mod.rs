//! The router's state and options: what `create_sync_router` is built from.

pub(crate) mod state;
