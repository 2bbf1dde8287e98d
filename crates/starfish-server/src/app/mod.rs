//! The options the router is built from ([`state::SyncOptions`]) and the state
//! every request reads ([`state::AppState`]).

pub(crate) mod state;
