//! The router and library tests, one binary (one link instead of thirty): each
//! module is one subject. The tests that need a service (`s3`, `redis`, `nats`) or
//! a process of their own (`encryption_memory`, which measures its peak memory)
//! stay binaries of their own beside this one.

#[path = "../common/mod.rs"]
mod common;

mod api_keys;
mod append;
mod audit;
mod auth_http;
mod blobs;
mod bookkeeping;
mod browser;
mod budgets;
mod collections;
mod concurrency;
mod encryption;
mod hardening;
mod hooks;
mod list_values;
mod live;
mod migrate;
mod no_500;
mod observability;
mod openapi;
mod pipeline_holes;
mod plugins;
mod projections;
mod pull_push;
mod queue;
mod quota_races;
mod quotas;
mod read_cache;
mod rules;
mod sharing;
mod slow_clients;
mod store_faults;
mod tenancy;
mod tenant_lifecycle;
mod tenants_runtime;
mod webhooks;
