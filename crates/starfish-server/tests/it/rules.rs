//! Collection rules: objectSchema, fieldPermissions, author proofs on documents,
//! pullOnly, and the /config endpoint.

use crate::common;

use axum::http::StatusCode;
use common::*;
use ed25519_dalek::Signer;
use serde_json::json;
use starfish_protocol::author::{DOC_AUTHOR_DOMAIN, author_signing_input};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{ConfigEndpoint, SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "typed", "storagePath": "typed/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "objectSchema": {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}, "required": ["n"]}},
    {"name": "profile", "storagePath": "profile/{identity}", "readRoles": ["public"], "writeRoles": ["self"],
     "fieldPermissions": {"email": {"readRoles": ["self"]}, "badge": {"writeRoles": ["device:root"]}}},
    {"name": "notes", "storagePath": "notes/{identity}", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "catalog", "storagePath": "catalog", "readRoles": ["public"], "writeRoles": [], "pullOnly": true,
     "ttlMs": 5000, "forceFullFetch": true}
  ],
  "namespaces": {"acme": {"collections": [
    {"name": "team", "storagePath": "team/{id}", "readRoles": ["cap:read:team"], "writeRoles": ["cap:write:team"]}
  ]}}
}"#;

fn app_with(endpoint: Option<ConfigEndpoint>) -> axum::Router {
    let config = SyncConfig::from_json_str(CONFIG).unwrap();
    let mut options =
        SyncOptions::new(config, DocStore::memory()).with_clock(Arc::new(ManualClock::new(T0)));
    if let Some(e) = endpoint {
        options = options.with_config_endpoint(e);
    }
    create_sync_router(options).unwrap()
}

#[tokio::test]
async fn object_schema_failures_name_the_path_and_keyword_and_store_nothing() {
    let app = app_with(None);
    let res = send(&app, push("/push/typed/a", &json!({"data": {"n": "x"}}))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(res).await,
        json!({"error": "Schema validation failed: must be number", "path": ["n"], "validator": "type"})
    );
    let res = send(&app, push("/push/typed/a", &json!({"data": {}}))).await;
    assert_eq!(json_body(res).await["validator"], "required");
    let res = send(&app, push("/push/typed/a", &json!({"data": {"n": -1}}))).await;
    assert_eq!(
        json_body(res).await["error"],
        "Schema validation failed: must be >= 0"
    );
    assert_eq!(
        json_body(send(&app, get("/pull/typed/a")).await).await["hash"],
        ""
    );
    let (status, _) = push_doc(&app, "/push/typed/a", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_invalid_schema_is_refused_at_load() {
    let err = SyncConfig::from_json_str(
        r#"{"version":1,"collections":[{"name":"t","storagePath":"t","readRoles":["public"],"objectSchema":{"type":12}}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Collection \"t\": objectSchema is not a valid JSON Schema"),
        "{err}"
    );
}

#[tokio::test]
async fn field_permissions_hide_and_protect_fields() {
    let app = app_with(None);
    let a = user(1);
    let uri = format!("/push/profile/{}", a.id);
    let res = send(
        &app,
        Signed::push(&uri, &a, &json!({"data": {"name": "Ann", "badge": "gold"}})).build(),
    )
    .await;
    assert_error(
        res,
        StatusCode::FORBIDDEN,
        "Field 'badge' is not writable with your roles",
    )
    .await;
    let res = send(
        &app,
        Signed::push(&uri, &a, &json!({"data": {"name": "Ann", "email": "a@x"}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let pull = format!("/pull/profile/{}", a.id);
    let own = json_body(send(&app, Signed::get(&pull, &a).build()).await).await;
    assert_eq!(own["data"], json!({"name": "Ann", "email": "a@x"}));
    let public = json_body(send(&app, get(&pull)).await).await;
    assert_eq!(
        public["data"],
        json!({"name": "Ann"}),
        "the email is not public"
    );
    assert_eq!(
        public["hash"], own["hash"],
        "the hash covers the whole document"
    );
    // The root device may set the badge.
    let root = root_cap(&a);
    let mut s = Signed::new("POST", &uri, root, &a.root);
    s.body = Some(
        json!({"data": {"name": "Ann", "badge": "gold"}, "baseHash": own["hash"]}).to_string(),
    );
    assert_eq!(send(&app, s.build()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn document_author_proofs_are_verified_and_echoed() {
    let app = app_with(None);
    let a = user(1);
    let key = format!("notes/{}", a.id);
    let data = json!({"t": "signed"});
    let sig = b64(&a
        .device
        .sign(author_signing_input(DOC_AUTHOR_DOMAIN, &data, &key).as_bytes())
        .to_bytes());
    let body = json!({"data": data, "authorPubkey": pub_hex(&a.device), "authorSignature": sig});
    let mut bad = body.clone();
    bad["data"] = json!({"t": "other"});
    let res = send(
        &app,
        Signed::push(&format!("/push/{key}"), &a, &bad).build(),
    )
    .await;
    assert_error(
        res,
        StatusCode::FORBIDDEN,
        "invalid document author signature",
    )
    .await;
    let mut other = body.clone();
    other["authorPubkey"] = json!(pub_hex(&a.root));
    let res = send(
        &app,
        Signed::push(&format!("/push/{key}"), &a, &other).build(),
    )
    .await;
    assert_error(
        res,
        StatusCode::FORBIDDEN,
        "document author must be the request presenter",
    )
    .await;
    assert_eq!(
        send(
            &app,
            Signed::push(&format!("/push/{key}"), &a, &body).build()
        )
        .await
        .status(),
        StatusCode::OK
    );
    let pulled =
        json_body(send(&app, Signed::get(&format!("/pull/{key}"), &a).build()).await).await;
    assert_eq!(pulled["authorSignature"], sig.as_str());
    assert_eq!(pulled["authorPubkey"], pub_hex(&a.device));
}

#[tokio::test]
async fn pull_only_collections_have_no_push_route() {
    let app = app_with(None);
    let res = send(&app, push("/push/catalog", &json!({"data": {}}))).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        send(&app, get("/pull/catalog")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_config_endpoint_is_off_by_default_and_filters_by_role() {
    assert_eq!(
        send(&app_with(None), get("/config")).await.status(),
        StatusCode::NOT_FOUND
    );
    let public =
        json_body(send(&app_with(Some(ConfigEndpoint::Public)), get("/config")).await).await;
    let names: Vec<&str> = public["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["typed", "profile", "notes", "catalog"]);
    assert_eq!(
        public["collections"][3],
        json!({"name": "catalog", "allowedMimeTypes": ["application/json"], "pullOnly": true, "ttlMs": 5000, "forceFullFetch": true})
    );
    assert_eq!(
        public["namespaces"]["acme"]["collections"][0]["name"],
        "team"
    );

    let filtered = app_with(Some(ConfigEndpoint::RoleFiltered));
    let anon = json_body(send(&filtered, get("/config")).await).await;
    let names: Vec<&str> = anon["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["typed", "profile", "catalog"],
        "collections with a public role"
    );
    assert_eq!(anon["namespaces"]["acme"]["collections"], json!([]));
    let a = user(1);
    let team_cap = scoped_cap(&a, json!({"ops": ["read"], "collections": ["team"]}));
    let s = Signed::new("GET", "/config", team_cap, &a.device);
    let body = json_body(send(&filtered, s.build()).await).await;
    assert_eq!(body["namespaces"]["acme"]["collections"][0]["name"], "team");
}
