//! Live changes (`GET /events`): the node's bus of subscribers (`bus.rs`) and the
//! feed that carries changes between nodes (`feed.rs`, with `NatsFeed` over NATS).

pub(crate) mod bus;
pub use bus::LiveLimits;
mod feed;

pub use feed::*;
