//! An OpenAPI 3.1 description of the routes one [`SyncConfig`] produces: every scope
//! (the root and each namespace), every collection's pull, push and list routes, the
//! bundles and batch pulls, with the statuses and bodies `routes/error.rs` answers with.
//! Built from the same route rules as `config/routes.rs`.

mod components;
mod ops;

use crate::config::{Collection, SyncConfig};
use components::{schemas, security_schemes};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// An OpenAPI 3.1 document of the routes `config` produces, as mounted at the root
/// (prefix every path with the mount point when the router is nested).
///
/// Every namespace and collection appears with its path parameters, query
/// parameters, request bodies (the push and append envelopes, blob media types) and
/// every status it can answer with; `x-starfish-collection` on each operation tells
/// whether the collection is public. Serve it with
/// [`SyncOptions::with_openapi_endpoint`](crate::app::state::SyncOptions::with_openapi_endpoint).
///
/// ```
/// let config = starfish_server::SyncConfig::from_yaml_str(
///     "collections:\n  - {name: notes, storagePath: 'notes/{id}', readRoles: [public], writeRoles: [public]}",
/// ).unwrap();
/// let doc = starfish_server::openapi_document(&config);
/// assert_eq!(doc["openapi"], "3.1.0");
/// assert!(doc["paths"]["/push/notes/{id}"]["post"].is_object());
/// ```
pub fn openapi_document(config: &SyncConfig) -> Value {
    let mut paths = Map::new();
    paths.insert("/health".into(), json!({ "get": ops::health() }));
    paths.insert("/config".into(), json!({ "get": ops::client_config() }));
    paths.insert("/openapi.json".into(), json!({ "get": ops::openapi() }));
    let mut tags = Vec::new();
    scope_paths(&mut paths, &mut tags, None, &config.collections);
    for ns in &config.namespaces {
        scope_paths(
            &mut paths,
            &mut tags,
            Some(ns.name.as_str()),
            &ns.collections,
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Starfish document sync",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The routes of one Starfish sync config (starfish-rs). Requests are \
                authenticated with a capability certificate and a request signature (see the \
                security schemes); operations whose collection is public also accept anonymous \
                callers. Every response carries `X-Content-Type-Options: nosniff`. An \
                embedder's authorisation hook that fails answers `500 {\"error\": \"Authorization error\"}`; \
                the `starfish` binary installs none.",
        },
        "tags": tags,
        "paths": paths,
        "components": { "schemas": schemas(), "securitySchemes": security_schemes() },
    })
}

/// One scope's routes: the batch pull, then each collection's, then the bundles'.
fn scope_paths(
    paths: &mut Map<String, Value>,
    tags: &mut Vec<Value>,
    namespace: Option<&str>,
    collections: &[Arc<Collection>],
) {
    let scope = ops::Scope { namespace };
    let prefix = scope.prefix();
    paths.insert(
        format!("{prefix}/batch/pull"),
        json!({ "get": ops::batch(&scope) }),
    );
    paths.insert(
        format!("{prefix}/events"),
        json!({ "get": ops::events(&scope) }),
    );
    let mut bundles: Vec<(&str, Vec<&Collection>)> = Vec::new();
    for c in collections {
        tags.push(json!({ "name": scope.tag(c), "description": scope.describe(c) }));
        let pattern = c.storage_path.route_pattern();
        match &c.bundle {
            Some(bundle) => {
                match bundles.iter_mut().find(|(b, _)| b == bundle) {
                    Some((_, members)) => members.push(c),
                    None => bundles.push((bundle, vec![c])),
                }
                if !c.pull_only {
                    let path = format!("{prefix}/push{pattern}/{}", c.name);
                    paths.insert(path, json!({ "post": ops::push(&scope, c) }));
                }
            }
            None => {
                if !c.push_only {
                    let path = format!("{prefix}/pull{pattern}");
                    paths.insert(path, json!({ "get": ops::pull(&scope, c) }));
                }
                if !c.pull_only {
                    let path = format!("{prefix}/push{pattern}");
                    paths.insert(path, json!({ "post": ops::push(&scope, c) }));
                }
            }
        }
        if c.listable {
            let parent = c.storage_path.parent_route_pattern();
            let path = format!("{prefix}/list{parent}");
            paths.insert(path, json!({ "get": ops::list(&scope, c) }));
        }
    }
    for (bundle, members) in bundles {
        let readable: Vec<&Collection> = members.into_iter().filter(|m| !m.push_only).collect();
        if let Some(first) = readable.first() {
            let path = format!("{prefix}/pull{}", first.storage_path.route_pattern());
            paths.insert(
                path,
                json!({ "get": ops::bundle(&scope, bundle, &readable) }),
            );
        }
    }
}
