//! Live changes (`GET /events`): the node's bus of subscribers (`bus.rs`), each
//! subscriber's buffer of frames (`frames.rs`), and the feed that carries changes
//! between nodes (`feed.rs`, with `NatsFeed` over NATS).

pub(crate) mod bus;
mod frames;
mod heard;
pub use bus::LiveLimits;
mod feed;

pub use feed::*;
