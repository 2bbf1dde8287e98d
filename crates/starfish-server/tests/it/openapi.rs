//! The OpenAPI document: OpenAPI 3.1 in shape, every route the router serves (the
//! expected list is derived here from the config file itself, not from the
//! generator), every path parameter declared, known answers, and the endpoint.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::Value;
use starfish_server::store::DocStore;
use starfish_server::{
    ConfigEndpoint, SyncConfig, SyncOptions, create_sync_router, openapi_document,
};
use std::collections::BTreeSet;

const SAMPLE: &str = include_str!("../../../../examples/serve-yaml/starfish.yaml");
const SCHEMATHESIS: &str = include_str!("../../../../tests/openapi/starfish.yaml");

/// Namespaces, bundles (one member pull-only, one push-only), logs, blobs, listable
/// collections, pull-only and push-only collections, a static path and rate limits.
const RICH: &str = r#"
version: 1
collections:
  - {name: notes, storagePath: "users/{identity}/notes", readRoles: [self], writeRoles: [self]}
  - {name: feed, storagePath: feed, readRoles: [public], writeRoles: ["device:root"], pullOnly: true}
  - {name: inbox, storagePath: "inbox/{id}", readRoles: [public], writeRoles: [public], pushOnly: true}
  - {name: events, storagePath: "logs/{identity}/events", readRoles: [self], writeRoles: [self],
     appendOnly: {type: by_timestamp, maxItems: 10}, rateLimit: {push: {windowMs: 1000, maxRequests: 2}}}
  - {name: avatars, storagePath: "avatars/{identity}", readRoles: [public], writeRoles: [self],
     allowedMimeTypes: ["image/*", "application/pdf"]}
  - {name: days, storagePath: "diary/{identity}/{day}", readRoles: [self], writeRoles: [self], listable: true}
  - {name: profile, storagePath: "p/{identity}", bundle: user, readRoles: [public], writeRoles: [self]}
  - {name: settings, storagePath: "p/{identity}", bundle: user, readRoles: [self], writeRoles: [self], pullOnly: true}
  - {name: drafts, storagePath: "p/{identity}", bundle: user, readRoles: [self], writeRoles: [self], pushOnly: true}
namespaces:
  acme:
    collections:
      - {name: board, storagePath: "acme/board/{topic}", readRoles: [public], writeRoles: [public], listable: true}
      - {name: files, storagePath: "acme/files/{id}", readRoles: [public], writeRoles: [public], allowedMimeTypes: ["*/*"]}
  beta:
    collections:
      - {name: log, storagePath: "b/{id}", readRoles: [public], writeRoles: [public],
         appendOnly: {type: by_timestamp, requireAuthorSignature: false}}
"#;

type Route = (&'static str, String);

/// The routes the config file asks for, read from the file itself: per scope the
/// batch pull, then pull/push (a bundle member pushes under its name, the bundle is
/// pulled at its path), and the parent path of a listable collection.
fn expected_routes(yaml: &str) -> BTreeSet<Route> {
    let raw: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let mut routes: BTreeSet<Route> = ["/health", "/config", "/openapi.json"]
        .into_iter()
        .map(|p| ("get", p.to_owned()))
        .collect();
    let mut scopes = vec![(String::new(), raw["collections"].clone())];
    if let Some(namespaces) = raw["namespaces"].as_mapping() {
        for (name, ns) in namespaces {
            let name = name.as_str().unwrap();
            scopes.push((format!("/{name}"), ns["collections"].clone()));
        }
    }
    for (prefix, collections) in scopes {
        routes.insert(("get", format!("{prefix}/batch/pull")));
        routes.insert(("get", format!("{prefix}/events")));
        for c in collections.as_sequence().into_iter().flatten() {
            let flag = |k: &str| c[k].as_bool().unwrap_or(false);
            let path = c["storagePath"].as_str().unwrap();
            let name = c["name"].as_str().unwrap();
            if c["bundle"].is_string() {
                if !flag("pullOnly") {
                    routes.insert(("post", format!("{prefix}/push/{path}/{name}")));
                }
                if !flag("pushOnly") {
                    routes.insert(("get", format!("{prefix}/pull/{path}")));
                }
            } else {
                if !flag("pushOnly") {
                    routes.insert(("get", format!("{prefix}/pull/{path}")));
                }
                if !flag("pullOnly") {
                    routes.insert(("post", format!("{prefix}/push/{path}")));
                }
            }
            if flag("listable") {
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                routes.insert(("get", format!("{prefix}/list/{parent}")));
            }
        }
    }
    routes
}

fn documented_routes(doc: &Value) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = match method.as_str() {
                "get" => "get",
                "post" => "post",
                other => panic!("unexpected method {other} on {path}"),
            };
            out.insert((method, path.clone()));
        }
    }
    out
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// OpenAPI 3.1 in shape: version, info, operations with unique ids, described
/// responses keyed by status, resolvable `$ref`s, declared security schemes.
fn assert_openapi_shape(doc: &Value) {
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for name in ["cap", "starfishSig", "starfishTs", "starfishNonce"] {
        assert_eq!(schemes[name]["type"], "apiKey", "{name}");
        assert_eq!(schemes[name]["in"], "header", "{name}");
    }
    assert_eq!(schemes["cap"]["name"], "Authorization");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, r) in responses {
                let code: u16 = status.parse().unwrap();
                assert!((200..600).contains(&code), "{status}");
                assert!(r["description"].is_string(), "{method} {path} {status}");
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{scheme}");
                }
            }
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "{r}");
    }
}

/// Every `{param}` of every path is declared as a required path parameter with the
/// protocol's rule, and nothing else is declared in the path.
fn assert_path_params(doc: &Value) {
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let declared: Vec<&Value> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .collect();
            let names: BTreeSet<&str> = declared
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, in_path, "{method} {path}");
            for p in declared {
                assert_eq!(p["required"], true);
                assert_eq!(p["schema"]["pattern"], "^[a-zA-Z0-9._:@-]+$");
                assert_eq!(p["schema"]["maxLength"], 200);
            }
        }
    }
}

/// The router answers each documented route with something other than "no route".
async fn assert_router_serves(config: SyncConfig, routes: &BTreeSet<Route>) {
    let options = SyncOptions::new(config, DocStore::memory())
        .with_config_endpoint(ConfigEndpoint::Public)
        .with_openapi_endpoint();
    let app = create_sync_router(options).unwrap();
    for (method, path) in routes {
        let uri: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "v1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let uri = if uri.ends_with("/batch/pull") {
            format!("{uri}?collections=x")
        } else {
            uri
        };
        let req = match *method {
            "get" => get(&uri),
            _ => push(&uri, &serde_json::json!({ "data": {} })),
        };
        let res = send(&app, req).await;
        let status = res.status();
        let body = body_bytes(res).await;
        assert_ne!(
            body, b"404 Not Found",
            "{method} {uri}: no route ({status})"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
    }
}

async fn check_config(yaml: &str) -> Value {
    let config = SyncConfig::from_yaml_str(yaml).unwrap();
    let doc = openapi_document(&config);
    assert_openapi_shape(&doc);
    assert_path_params(&doc);
    let expected = expected_routes(yaml);
    assert_eq!(documented_routes(&doc), expected);
    assert_router_serves(config, &expected).await;
    doc
}

#[tokio::test]
async fn the_sample_config_is_documented_route_for_route() {
    let doc = check_config(SAMPLE).await;
    assert_eq!(documented_routes(&doc).len(), 15);
}

#[tokio::test]
async fn a_config_with_namespaces_bundles_logs_blobs_and_lists_is_documented() {
    check_config(RICH).await;
    check_config(SCHEMATHESIS).await;
}

fn statuses(op: &Value) -> BTreeSet<String> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn known_answers() {
    let doc = openapi_document(&SyncConfig::from_yaml_str(RICH).unwrap());
    let paths = &doc["paths"];
    // A push to a `self` collection.
    let notes = &paths["/push/users/{identity}/notes"]["post"];
    for s in [
        "200", "400", "401", "403", "408", "409", "413", "415", "503",
    ] {
        assert!(statuses(notes).contains(s), "{s}");
    }
    assert_eq!(
        notes["security"].as_array().unwrap().len(),
        1,
        "credentials required"
    );
    assert_eq!(notes["x-starfish-collection"]["publicWrite"], false);
    let envelope = &notes["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(envelope["required"], serde_json::json!(["data"]));
    assert_eq!(
        envelope["properties"]["baseHash"]["type"],
        serde_json::json!(["string", "null"])
    );
    assert!(!statuses(notes).contains("429"), "no push rate limit");
    // A public pull: credentials optional, 304 without a body, the plain-text 404.
    let inbox = &paths["/push/inbox/{id}"]["post"];
    assert_eq!(inbox["security"][0], serde_json::json!({}));
    let board = &paths["/acme/pull/acme/board/{topic}"]["get"];
    assert!(board["responses"]["304"].get("content").is_none());
    assert_eq!(
        board["responses"]["404"]["content"]["text/plain"]["schema"]["const"],
        "404 Not Found"
    );
    assert!(
        board["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "withKeyring")
    );
    // A log: bounds in the query, the append envelope, append_limit_exceeded, 429.
    let pull = &paths["/pull/logs/{identity}/events"]["get"];
    let names: BTreeSet<&str> = pull["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for q in ["checkpoint", "last", "limit", "full"] {
        assert!(names.contains(q), "{q}");
    }
    let append = &paths["/push/logs/{identity}/events"]["post"];
    let body = &append["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        body["required"],
        serde_json::json!(["data", "authorPubkey", "authorSignature"])
    );
    // `ts: null` is an omitted `ts` (the server picks one), as in the reference.
    assert_eq!(
        body["properties"]["ts"]["type"],
        serde_json::json!(["integer", "null"])
    );
    assert!(
        append["responses"]["409"]
            .to_string()
            .contains("AppendLimitError")
    );
    assert!(append["responses"]["429"]["headers"]["Retry-After"].is_object());
    // A blob: its media types in, 415 and an empty 404 out.
    let blob = &paths["/push/avatars/{identity}"]["post"];
    let types: BTreeSet<&String> = blob["requestBody"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        types.into_iter().cloned().collect::<Vec<_>>(),
        ["application/pdf", "image/*"]
    );
    assert!(statuses(blob).contains("415"));
    assert!(
        paths["/pull/avatars/{identity}"]["get"]["responses"]["404"]
            .get("content")
            .is_none()
    );
    // The batch pull and the 503 body.
    let batch = &paths["/beta/batch/pull"]["get"];
    assert!(
        batch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "appendParams")
    );
    assert!(
        paths["/pull/feed"]["get"]["responses"]["503"]["description"]
            .as_str()
            .unwrap()
            .contains("Storage unavailable")
    );
    // A bundle pull, public only when every readable member is.
    let bundle = &paths["/pull/p/{identity}"]["get"];
    assert_eq!(
        bundle["x-starfish-collection"]["members"],
        serde_json::json!(["profile", "settings"])
    );
    assert_eq!(bundle["x-starfish-collection"]["publicRead"], false);
}

#[tokio::test]
async fn the_endpoint_is_off_by_default_and_serves_the_document_when_on() {
    let config = || SyncConfig::from_yaml_str(SAMPLE).unwrap();
    let req = || Request::get("/openapi.json").body(Body::empty()).unwrap();
    let off = create_sync_router(SyncOptions::new(config(), DocStore::memory())).unwrap();
    let res = send(&off, req()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_bytes(res).await, b"404 Not Found");
    let on =
        create_sync_router(SyncOptions::new(config(), DocStore::memory()).with_openapi_endpoint())
            .unwrap();
    let res = send(&on, req()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(json_body(res).await, openapi_document(&config()));
}
