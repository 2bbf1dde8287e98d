//! What browsers need: CORS (preflights, allowed and refused origins, exposed
//! headers, the credentials-with-`*` startup error) and compressed JSON responses
//! that leave ETags and blobs alone.

use crate::common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use starfish_protocol::sha256_hex;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{ConfigError, CorsSettings, SyncConfig, SyncOptions, create_sync_router};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

const PAGE: &str = "http://127.0.0.1:5173";
const OTHER: &str = "http://evil.example";

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "files", "storagePath": "files/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["image/*", "application/*"], "maxBodyBytes": 65536}
  ]
}"#;

fn options() -> SyncOptions {
    SyncOptions::new(
        SyncConfig::from_json_str(CONFIG).unwrap(),
        DocStore::memory(),
    )
    .with_clock(Arc::new(ManualClock::new(T0)))
}

fn app(options: SyncOptions) -> axum::Router {
    create_sync_router(options).unwrap()
}

/// A router allowing [`PAGE`] with a ten-minute preflight cache.
fn cors_app() -> axum::Router {
    app(options().with_cors(CorsSettings::origins([PAGE]).with_max_age(Duration::from_secs(600))))
}

fn preflight(origin: &str, method: &str, headers: &str) -> Request<Body> {
    Request::builder()
        .method("OPTIONS")
        .uri("/push/users/someone/notes")
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .body(Body::empty())
        .unwrap()
}

fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

/// The comma-separated values of `name`, lower-cased.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

const SIGNING: [&str; 6] = [
    "authorization",
    "content-type",
    "x-starfish-sig",
    "x-starfish-ts",
    "x-starfish-nonce",
    "x-starfish-pub",
];

#[tokio::test]
async fn preflight_from_an_allowed_origin_allows_the_signing_headers() {
    let app = cors_app();
    let res = send(&app, preflight(PAGE, "POST", &SIGNING.join(","))).await;
    assert!(res.status().is_success(), "{}", res.status());
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], PAGE);
    let methods = list(h, "access-control-allow-methods");
    for m in ["get", "post", "options"] {
        assert!(methods.contains(&m.to_owned()), "{methods:?}");
    }
    let allowed = list(h, "access-control-allow-headers");
    for name in SIGNING.iter().chain(&["accept", "x-requested-with"]) {
        assert!(
            allowed.contains(&name.to_string()),
            "{name} not in {allowed:?}"
        );
    }
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h.get("access-control-allow-credentials").is_none());
    assert!(list(h, "vary").contains(&"origin".to_owned()));
    // The security headers sit outside CORS: a preflight carries them too.
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_allow_origin() {
    let app = cors_app();
    // Preflight and a plain request from the page: allowed.
    let ok = send(&app, preflight(PAGE, "GET", "authorization")).await;
    assert_eq!(ok.headers()["access-control-allow-origin"], PAGE);
    let ok = send(&app, get_with("/pull/docs/a", &[("origin", PAGE)])).await;
    assert_eq!(ok.headers()["access-control-allow-origin"], PAGE);
    // From anywhere else: no Access-Control-Allow-Origin, so the browser refuses.
    for origin in [OTHER, "http://127.0.0.1:5174", "HTTP://127.0.0.1:5173.evil"] {
        let res = send(&app, preflight(origin, "GET", "authorization")).await;
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let res = send(&app, get_with("/pull/docs/a", &[("origin", origin)])).await;
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn etag_is_exposed_on_a_pull() {
    let app = cors_app();
    let (status, pushed) = push_doc(&app, "/push/docs/a", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let res = send(&app, get_with("/pull/docs/a", &[("origin", PAGE)])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], PAGE);
    assert_eq!(
        h["etag"],
        format!("\"{}\"", pushed["hash"].as_str().unwrap()).as_str()
    );
    let exposed = list(h, "access-control-expose-headers");
    assert!(exposed.contains(&"etag".to_owned()), "{exposed:?}");
    assert!(exposed.contains(&"retry-after".to_owned()), "{exposed:?}");

    // A blob pull too: the client reads its ETag as the hash.
    let png = vec![0x89, b'P', b'N', b'G', 9, 9];
    let res = send(&app, upload("/push/files/p", "image/png", png.clone())).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(&app, get_with("/pull/files/p", &[("origin", PAGE)])).await;
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    assert!(list(res.headers(), "access-control-expose-headers").contains(&"etag".to_owned()));
    assert_eq!(
        res.headers()["etag"],
        format!("\"{}\"", sha256_hex(&png)).as_str()
    );
}

#[tokio::test]
async fn any_origin_answers_star() {
    let app = app(options().with_cors(CorsSettings::any_origin()));
    let res = send(&app, get_with("/pull/docs/a", &[("origin", OTHER)])).await;
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let res = send(&app, preflight(OTHER, "POST", "x-starfish-sig")).await;
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        res.headers()["access-control-max-age"],
        CorsSettings::DEFAULT_MAX_AGE.as_secs().to_string().as_str()
    );
}

#[tokio::test]
async fn credentials_are_allowed_for_listed_origins() {
    let app = app(options().with_cors(CorsSettings::origins([PAGE]).with_credentials(true)));
    let res = send(&app, preflight(PAGE, "GET", "authorization")).await;
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let res = send(&app, get_with("/pull/docs/a", &[("origin", PAGE)])).await;
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
}

#[test]
fn wildcard_with_credentials_is_refused_at_build() {
    let options = options().with_cors(CorsSettings::any_origin().with_credentials(true));
    match create_sync_router(options) {
        Err(ConfigError::Cors(message)) => assert_eq!(
            message,
            "CORS misconfiguration: credentials cannot be used with wildcard origin '*'. \
             Specify explicit origins."
        ),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("credentials with `*` were accepted"),
    }
    let bad = options_with_origin("app.example.com");
    assert!(matches!(create_sync_router(bad), Err(ConfigError::Cors(_))));
}

fn options_with_origin(origin: &str) -> SyncOptions {
    options().with_cors(CorsSettings::origins([origin]))
}

fn upload(uri: &str, content_type: &str, bytes: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .header("content-length", bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

/// A document large enough to be worth compressing.
fn big_doc() -> Value {
    let items: Vec<Value> = (0..40)
        .map(|i| json!({"id": i, "title": format!("item number {i}"), "done": i % 3 == 0}))
        .collect();
    json!({ "items": items })
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn a_json_pull_is_gzipped_when_asked_and_plain_otherwise() {
    let app = app(options());
    let (status, pushed) = push_doc(&app, "/push/docs/big", big_doc(), None).await;
    assert_eq!(status, StatusCode::OK);
    let etag = format!("\"{}\"", pushed["hash"].as_str().unwrap());

    let plain = send(&app, get("/pull/docs/big")).await;
    assert!(plain.headers().get("content-encoding").is_none());
    // The plain answer varies with `Accept-Encoding` too (a shared cache must not
    // serve it for a request that asked for gzip).
    assert!(list(plain.headers(), "vary").contains(&"accept-encoding".to_owned()));
    assert_eq!(plain.headers()["etag"], etag.as_str());
    let plain = body_bytes(plain).await;
    let expected: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(expected["data"], big_doc());

    let res = send(
        &app,
        get_with("/pull/docs/big", &[("accept-encoding", "gzip")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.headers()["etag"],
        etag.as_str(),
        "the ETag names the document"
    );
    assert!(list(res.headers(), "vary").contains(&"accept-encoding".to_owned()));
    let compressed = body_bytes(res).await;
    assert!(compressed.len() < plain.len());
    let decoded = gunzip(&compressed);
    assert_eq!(serde_json::from_slice::<Value>(&decoded).unwrap(), expected);

    // The same ETag still answers 304 to a compressed client.
    let res = send(
        &app,
        get_with(
            "/pull/docs/big",
            &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

/// A HEAD on a route of its own (here the OpenAPI document) gets the headers its GET
/// gets, compression included, and no body.
#[tokio::test]
async fn a_head_gets_the_headers_of_its_get() {
    let routed = app(options().with_openapi_endpoint());
    let service = starfish_server::create_sync_service(options().with_openapi_endpoint()).unwrap();
    for app in [routed, axum::Router::new().fallback_service(service)] {
        head_like_get(&app).await;
    }
}

async fn head_like_get(app: &axum::Router) {
    let gzip = [("accept-encoding", "gzip")];
    let get = send(app, get_with("/openapi.json", &gzip)).await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["content-encoding"], "gzip");
    let head = Request::head("/openapi.json")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let head = send(app, head).await;
    assert_eq!(head.status(), StatusCode::OK);
    for name in ["content-encoding", "content-type", "vary"] {
        assert_eq!(head.headers().get(name), get.headers().get(name), "{name}");
    }
    assert!(head.headers().get("content-length").is_none());
    assert!(body_bytes(head).await.is_empty());
}

#[tokio::test]
async fn brotli_when_preferred() {
    let app = app(options());
    push_doc(&app, "/push/docs/big", big_doc(), None).await;
    let res = send(
        &app,
        get_with(
            "/pull/docs/big",
            &[("accept-encoding", "br;q=1, gzip;q=0.5")],
        ),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "br");
    let compressed = body_bytes(res).await;
    let mut decoded = Vec::new();
    brotli::Decompressor::new(&compressed[..], 4096)
        .read_to_end(&mut decoded)
        .unwrap();
    let got: Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(got["data"], big_doc());
}

#[tokio::test]
async fn blobs_are_never_compressed_even_json_ones() {
    let app = app(options());
    let blob = serde_json::to_vec(&big_doc()).unwrap();
    let res = send(
        &app,
        upload("/push/files/j", "application/json", blob.clone()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(
        &app,
        get_with("/pull/files/j", &[("accept-encoding", "gzip, br")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.headers()["etag"],
        format!("\"{}\"", sha256_hex(&blob)).as_str()
    );
    assert_eq!(body_bytes(res).await, blob);
    // …while a JSON document of the same bytes is.
    push_doc(&app, "/push/docs/big", big_doc(), None).await;
    let res = send(
        &app,
        get_with("/pull/docs/big", &[("accept-encoding", "gzip, br")]),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_some());
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let app = app(options().with_compression(false));
    push_doc(&app, "/push/docs/big", big_doc(), None).await;
    let res = send(
        &app,
        get_with("/pull/docs/big", &[("accept-encoding", "gzip")]),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());
    let got: Value = json_body(res).await;
    assert_eq!(got["data"], big_doc());
}
