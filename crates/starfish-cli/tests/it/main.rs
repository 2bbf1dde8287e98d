//! The binary's tests, one test binary (one link instead of twelve): each module is
//! one subject, and each starts the `starfish` binary it tests.

#[path = "../common/mod.rs"]
mod common;

mod browsers;
mod cli;
mod client;
mod crash;
mod early_answers;
mod migrate;
mod observe;
mod openapi;
mod projections;
mod rotate;
mod slow_clients;
mod streams;
mod tenancy;
mod webhooks;
