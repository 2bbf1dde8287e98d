//! Pull and push of JSON documents over HTTP: every status with its exact body.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::json;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;

const EMPTY_HASH: &str = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

#[tokio::test]
async fn missing_document_pulls_as_empty_without_etag() {
    let app = router(DocStore::memory());
    let res = send(&app, get("/pull/docs/a")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("etag").is_none());
    assert_eq!(res.headers()["cache-control"], "max-age=60");
    assert_eq!(
        json_body(res).await,
        json!({"data": {}, "hash": "", "timestamp": T0})
    );
}

#[tokio::test]
async fn push_then_pull_round_trips_with_etag_and_304() {
    let store = DocStore::memory();
    let app = router(store.clone());
    let (status, body) = push_doc(&app, "/push/docs/a", json!({"title": "hello"}), None).await;
    assert_eq!(status, StatusCode::OK);
    let hash = "cf6c63ce25116b04e3b776a2957606e18d8ac798dde21e3ec30882ac2dfbe0cb";
    assert_eq!(body, json!({"hash": hash, "timestamp": T0}));
    assert_eq!(
        stored(&store, "docs/a").await.unwrap(),
        json!({"v": 1, "data": {"title": "hello"}, "ts": T0, "hash": hash})
    );

    let res = send(&app, get("/pull/docs/a")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = format!("\"{hash}\"");
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert_eq!(
        json_body(res).await,
        json!({"data": {"title": "hello"}, "hash": hash, "timestamp": T0})
    );

    let res = send(
        &app,
        Request::get("/pull/docs/a")
            .header("if-none-match", &etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(body_bytes(res).await.is_empty());

    // A weak or different validator is not a match.
    let res = send(
        &app,
        Request::get("/pull/docs/a")
            .header("if-none-match", format!("W/{etag}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn update_with_base_hash_and_conflicts_leave_store_unchanged() {
    let store = DocStore::memory();
    let app = router(store.clone());
    let (_, first) = push_doc(&app, "/push/docs/a", json!({"n": 1}), None).await;
    let h1 = first["hash"].as_str().unwrap().to_owned();
    let before = stored(&store, "docs/a").await;

    // Create over an existing document.
    let (status, body) = push_doc(&app, "/push/docs/a", json!({"n": 2}), None).await;
    assert_eq!(
        (status, body),
        (StatusCode::CONFLICT, json!({"error": "hash_mismatch"}))
    );
    // Stale base hash.
    let (status, body) = push_doc(&app, "/push/docs/a", json!({"n": 2}), Some(EMPTY_HASH)).await;
    assert_eq!(
        (status, body),
        (StatusCode::CONFLICT, json!({"error": "hash_mismatch"}))
    );
    assert_eq!(stored(&store, "docs/a").await, before);

    let (status, body) = push_doc(&app, "/push/docs/a", json!({"n": 2}), Some(&h1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body["hash"].as_str().unwrap(), h1);
    assert_eq!(
        stored(&store, "docs/a").await.unwrap()["data"],
        json!({"n": 2})
    );
}

#[tokio::test]
async fn empty_base_hash_creates_a_missing_document() {
    let app = router(DocStore::memory());
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"n": 1}), Some("")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_protocol_message_and_store_nothing() {
    let store = DocStore::memory();
    let app = router(store.clone());
    let cases = [
        ("not json", "Body must be a JSON object"),
        ("[1,2]", "Body must be a JSON object"),
        (r#"{"data":[1]}"#, "Missing or invalid data"),
        (r#"{"nodata":{}}"#, "Missing or invalid data"),
        (
            r#"{"data":{},"baseHash":7}"#,
            "baseHash must be a string or null",
        ),
        (
            r#"{"data":{},"authorPubkey":"ab"}"#,
            "author proof requires authorPubkey and authorSignature",
        ),
    ];
    for (body, message) in cases {
        let res = send(&app, push_raw("/push/docs/a", body)).await;
        assert_error(res, StatusCode::BAD_REQUEST, message).await;
    }
    let deep = format!("{{\"data\":{}1{}}}", "[".repeat(70), "]".repeat(70));
    let res = send(&app, push_raw("/push/shared/counter", deep)).await;
    assert_error(res, StatusCode::BAD_REQUEST, "Body nesting too deep").await;
    assert_eq!(stored(&store, "docs/a").await, None);
    assert_eq!(stored(&store, "shared/counter").await, None);
}

#[tokio::test]
async fn unsafe_keys_are_stripped_before_hashing() {
    let store = DocStore::memory();
    let app = router(store.clone());
    let (status, body) = push_doc(
        &app,
        "/push/docs/a",
        json!({"title": "hello", "__proto__": {"x": 1}, "constructor": 1}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["hash"],
        "cf6c63ce25116b04e3b776a2957606e18d8ac798dde21e3ec30882ac2dfbe0cb"
    );
    assert_eq!(
        stored(&store, "docs/a").await.unwrap()["data"],
        json!({"title": "hello"})
    );
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = router(DocStore::memory());
    let req = Request::post("/push/docs/a")
        .header("content-type", "text/plain")
        .header("content-length", "11")
        .body(Body::from(r#"{"data":{}}"#))
        .unwrap();
    assert_error(
        send(&app, req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type must be application/json",
    )
    .await;
    let req = Request::post("/push/docs/a")
        .body(Body::from(r#"{"data":{}}"#))
        .unwrap();
    assert_error(
        send(&app, req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type must be application/json",
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let store = DocStore::memory();
    let app = router(store.clone());
    let big = json!({"data": {"blob": "x".repeat(400)}}).to_string();

    // Declared length over the collection's maxBodyBytes (256).
    let res = send(&app, push_raw("/push/docs/a", big.clone())).await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").await;

    // Chunked: no Content-Length, the stream is cut off once it passes the limit.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(50)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let req = Request::post("/push/docs/a")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert!(req.headers().get("content-length").is_none());
    let res = send(&app, req).await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").await;

    // A lying Content-Length smaller than the body is caught by the same limit.
    let req = Request::post("/push/docs/a")
        .header("content-type", "application/json")
        .header("content-length", "10")
        .body(Body::from(big))
        .unwrap();
    let res = send(&app, req).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let req = Request::post("/push/docs/a")
        .header("content-type", "application/json")
        .header("content-length", "-5")
        .body(Body::from("{}"))
        .unwrap();
    assert_error(
        send(&app, req).await,
        StatusCode::BAD_REQUEST,
        "Invalid Content-Length",
    )
    .await;
    assert_eq!(stored(&store, "docs/a").await, None);

    // A small chunked body is accepted.
    let req = Request::post("/push/docs/a")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(vec![
            Ok::<_, std::io::Error>(r#"{"data":"#.to_owned()),
            Ok(r#"{"a":1}}"#.to_owned()),
        ])))
        .unwrap();
    assert_eq!(send(&app, req).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn traversal_and_bad_parameters_are_400_and_touch_nothing() {
    let store = DocStore::memory();
    let app = router(store.clone());
    for uri in [
        "/pull/docs/..",
        "/pull/docs/%2e%2e",
        "/pull/docs/a%2Fb",
        "/pull/docs/a%00b",
        "/pull/docs/a%20b",
        "/pull/docs/%zz",
        "/pull/docs/a..b",
        "/pull/users/%2e%2e/notes",
    ] {
        let res = send(&app, get(uri)).await;
        assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    }
    let res = send(&app, push("/push/docs/..", &json!({"data": {}}))).await;
    assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    let res = send(&app, push("/push/docs/%2E%2E", &json!({"data": {}}))).await;
    assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    use futures::StreamExt;
    assert_eq!(store.inner().list(None).count().await, 0);
    // Allowed punctuation passes.
    let (status, _) = push_doc(&app, "/push/docs/a.b:c@d-e_f", json!({}), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn anonymous_callers_are_forbidden_on_self_collections() {
    let app = router(DocStore::memory());
    let res = send(&app, get("/pull/users/abc/notes")).await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    let res = send(&app, push("/push/users/abc/notes", &json!({"data": {}}))).await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_plain_404() {
    let app = router(DocStore::memory());
    for req in [
        get("/nope"),
        get("/pull/inbox/a"), // pushOnly
        get("/pull/docs"),
        get("/pull/docs/a/b"),
        get("/push/docs/a"),
        Request::post("/pull/docs/a").body(Body::empty()).unwrap(),
        get("/acme/pull/nothing/here"),
        get("/other/pull/docs/a"),
        get("/"),
    ] {
        let uri = req.uri().clone();
        let res = send(&app, req).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(res.headers()["content-type"], "text/plain; charset=UTF-8");
        assert_eq!(body_bytes(res).await, b"404 Not Found");
    }
}

#[tokio::test]
async fn health_reports_the_clock() {
    let app = router(DocStore::memory());
    let res = send(&app, get("/health")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await, json!({"ok": true, "ts": T0}));
}

#[tokio::test]
async fn namespaces_share_storage_keys_with_the_root() {
    let store = DocStore::memory();
    let app = router(store.clone());
    let (status, body) = push_doc(&app, "/acme/push/docs/x", json!({"a": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stored(&store, "docs/x").await.is_some());
    let res = send(&app, get("/pull/docs/x")).await;
    assert_eq!(json_body(res).await["hash"], body["hash"]);
    let (status, _) = push_doc(&app, "/push/docs/x", json!({"a": 2}), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn router_mounts_under_a_prefix() {
    let app = axum::Router::new().nest("/v1", router(DocStore::memory()));
    let (status, _) = push_doc(&app, "/v1/push/docs/a", json!({"a": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let res = send(&app, get("/v1/acme/pull/docs/a")).await;
    assert_eq!(json_body(res).await["data"], json!({"a": 1}));
    assert_eq!(send(&app, get("/v1/health")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, get("/pull/docs/a")).await.status(),
        StatusCode::NOT_FOUND
    );
    let res = send(&app, get("/v1/nope")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// Merged into an app, the sync routes behave as any axum routes: the app's own
/// fallback answers only what no route matches, and `route_layer` wraps sync requests.
#[tokio::test]
async fn router_merges_like_any_routes() {
    let tag = axum::middleware::map_response(|mut res: axum::response::Response| async move {
        res.headers_mut()
            .insert("x-app", axum::http::HeaderValue::from_static("1"));
        res
    });
    let app = axum::Router::new()
        .route("/mine", axum::routing::get(|| async { "mine" }))
        .merge(router(DocStore::memory()))
        .fallback(|| async { StatusCode::IM_A_TEAPOT })
        .route_layer(tag);
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"a": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let res = send(&app, get("/pull/docs/a")).await;
    assert_eq!(res.headers()["x-app"], "1");
    assert_eq!(json_body(res).await["data"], json!({"a": 1}));
    let res = send(&app, get("/health")).await;
    assert_eq!(
        (res.status(), &res.headers()["x-app"]),
        (StatusCode::OK, &"1".parse().unwrap())
    );
    assert_eq!(send(&app, get("/mine")).await.status(), StatusCode::OK);
    assert_eq!(send(&app, get("/")).await.status(), StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn expired_documents_read_as_empty() {
    let clock = ManualClock::new(T0);
    let app = router_with(DocStore::memory(), &clock);
    push_doc(&app, "/push/board/a", json!({"msg": "hi"}), None).await;
    clock.advance(1000);
    let res = send(&app, get("/pull/board/a")).await;
    assert_eq!(json_body(res).await["data"], json!({"msg": "hi"}));
    clock.advance(1);
    let res = send(&app, get("/pull/board/a")).await;
    assert!(res.headers().get("etag").is_none());
    assert_eq!(res.headers()["cache-control"], "max-age=5");
    assert_eq!(
        json_body(res).await,
        json!({"data": {}, "hash": "", "timestamp": T0 + 1001})
    );
}

#[tokio::test]
async fn corrupt_stored_document_reads_empty_and_blocks_create() {
    let store = DocStore::memory();
    store
        .inner()
        .put(&Path::from("docs/c"), "garbage".into())
        .await
        .unwrap();
    let app = router(store);
    let res = send(&app, get("/pull/docs/c")).await;
    assert_eq!(
        json_body(res).await,
        json!({"data": {}, "hash": "", "timestamp": T0})
    );
    let (status, _) = push_doc(&app, "/push/docs/c", json!({}), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = push_doc(&app, "/push/docs/c", json!({}), Some("")).await;
    assert_eq!(status, StatusCode::OK);
}
