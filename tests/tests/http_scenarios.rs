//! `http-scenarios.json`: 82 exchanges recorded against the reference server, replayed
//! in order against one router with an empty store and the recorded clock. The final
//! store must hold the same objects, byte for byte.
//!
//! Scenarios that exercise protocol parts this build does not serve yet are listed in
//! `NOT_YET` with the reason; every other scenario must pass, and a scenario in
//! `NOT_YET` that starts passing fails the test so the list cannot go stale.

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use futures::StreamExt;
use http_body_util::BodyExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{ConfigEndpoint, SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use tower::ServiceExt;

/// (scenario, why it cannot pass yet)
const NOT_YET: &[(&str, &str)] = &[];

/// Where we answer differently on purpose (docs/compatibility.md): the recorded answer
/// is patched to ours before comparing. (scenario, why, JSON pointer, our value)
const DELIBERATE: &[(&str, &str, &str, &str)] = &[(
    "batch-pull",
    "a log entry without appendParams follows the single pull's bound rule \
     (the reference returns the whole log, past its bounds and field permissions)",
    "/expected/body/json/collections/events",
    r#"[{"error":"pull_bound_required"}]"#,
)];

/// The scenario with our deliberate differences applied.
fn ours(scenario: &Value) -> Value {
    let mut scenario = scenario.clone();
    let name = scenario["name"].as_str().unwrap().to_owned();
    for (_, _, pointer, value) in DELIBERATE.iter().filter(|d| d.0 == name) {
        *scenario.pointer_mut(pointer).unwrap() = serde_json::from_str(value).unwrap();
    }
    scenario
}

fn request(scenario: &Value) -> Request<Body> {
    let req = &scenario["request"];
    let url = req["url"].as_str().unwrap();
    let rest = url.strip_prefix("https://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut builder = Request::builder()
        .method(req["method"].as_str().unwrap())
        .uri(path)
        .header("host", host);
    for (name, value) in req["headers"].as_object().unwrap() {
        builder = builder.header(name, value.as_str().unwrap());
    }
    let body = match &req["body"] {
        Value::Null => Body::empty(),
        Value::String(s) => Body::from(s.clone()),
        Value::Object(o) => Body::from(
            base64::engine::general_purpose::STANDARD
                .decode(o["base64"].as_str().unwrap())
                .unwrap(),
        ),
        other => panic!("unexpected body {other}"),
    };
    builder.body(body).unwrap()
}

/// Compares one response with the recorded one; `Err` says what differs.
async fn check(scenario: &Value, response: axum::response::Response) -> Result<(), String> {
    let expected = &scenario["expected"];
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let mut problems = Vec::new();
    if u64::from(status) != expected["status"].as_u64().unwrap() {
        problems.push(format!("status {status}, expected {}", expected["status"]));
    }
    for (name, value) in expected["headers"].as_object().unwrap() {
        let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if got != value.as_str() {
            problems.push(format!("header {name}: {got:?}, expected {value}"));
        }
    }
    let body = &expected["body"];
    let body_ok = if let Some(json) = body.get("json") {
        serde_json::from_slice::<Value>(&bytes).ok().as_ref() == Some(json)
    } else if let Some(text) = body.get("text") {
        bytes == text.as_str().unwrap().as_bytes()
    } else if let Some(b64) = body.get("base64") {
        base64::engine::general_purpose::STANDARD.encode(&bytes) == b64.as_str().unwrap()
    } else {
        bytes.is_empty()
    };
    if !body_ok {
        problems.push(format!(
            "body {}, expected {body}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[tokio::test]
async fn replay_reference_http_scenarios() {
    let vectors = starfish_conformance::load("http-scenarios.json");
    let config = SyncConfig::from_value(vectors["config"].clone()).unwrap();
    let clock = ManualClock::new(0);
    let store = DocStore::memory();
    let app = create_sync_router(
        SyncOptions::new(config, store.clone())
            .with_clock(Arc::new(clock.clone()))
            .with_config_endpoint(ConfigEndpoint::Public),
    )
    .unwrap();

    let scenarios = vectors["scenarios"].as_array().unwrap();
    let mut passed = 0;
    let mut failures = Vec::new();
    let mut unexpected_passes = Vec::new();
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        clock.set(scenario["clockMs"].as_u64().unwrap());
        let response = app.clone().oneshot(request(scenario)).await.unwrap();
        let result = check(&ours(scenario), response).await;
        let known_gap = NOT_YET.iter().any(|(n, _)| *n == name);
        match (result, known_gap) {
            (Ok(()), false) => passed += 1,
            (Ok(()), true) => unexpected_passes.push(name),
            (Err(e), false) => failures.push(format!("{name}: {e}")),
            (Err(_), true) => {}
        }
    }
    println!(
        "http-scenarios: {passed} of {} pass; {} not served yet",
        scenarios.len(),
        NOT_YET.len()
    );
    assert!(
        failures.is_empty(),
        "failing scenarios:\n{}",
        failures.join("\n")
    );
    assert!(
        unexpected_passes.is_empty(),
        "now passing, remove from NOT_YET: {unexpected_passes:?}"
    );

    // The final store: every JSON object the reference stored that we serve, byte for byte.
    let expected_json = vectors["finalStore"]["json"].as_object().unwrap();
    let mut listed = store.inner().list(None);
    let mut ours = std::collections::BTreeMap::new();
    while let Some(meta) = listed.next().await {
        let meta = meta.unwrap();
        let bytes = store
            .inner()
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        ours.insert(meta.location.to_string(), bytes);
    }
    for (key, text) in expected_json {
        let got = ours
            .get(key)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        assert_eq!(got.as_deref(), text.as_str(), "stored object {key}");
    }
}
