//! Appends 100 000 elements to one segmented log through the router (over
//! `InMemory`) and reports the mean time per append over the first and the last
//! 1 000 appends, to show that an append costs the same at element 100 000 as at 10.
//! The single-document layout is measured too, over 10 000 appends, for contrast.
//!
//! `cargo bench -p starfish-server --bench append`

use axum::body::Body;
use axum::http::Request;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const CONFIG: &str = r#"{"version":1,"collections":[
  {"name":"seg","storagePath":"seg/{id}","readRoles":["public"],"writeRoles":["public"],
   "appendOnly":{"requireAuthorSignature":false,"chunkSize":1000}},
  {"name":"seg100","storagePath":"seg100/{id}","readRoles":["public"],"writeRoles":["public"],
   "appendOnly":{"requireAuthorSignature":false,"chunkSize":100}},
  {"name":"single","storagePath":"single/{id}","readRoles":["public"],"writeRoles":["public"],
   "appendOnly":{"requireAuthorSignature":false}}]}"#;

const WINDOW: usize = 1000;

fn run(rt: &tokio::runtime::Runtime, app: &axum::Router, uri: &str, total: usize) -> Vec<Duration> {
    let body = r#"{"data":{"event":"click","x":12,"y":34,"tag":"some short payload"}}"#;
    let mut windows = Vec::new();
    let mut start = Instant::now();
    for i in 1..=total {
        let req = Request::post(uri)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Body::from(body))
            .unwrap();
        let res = rt.block_on(app.clone().oneshot(req)).unwrap();
        assert_eq!(res.status(), 200);
        if i % WINDOW == 0 {
            windows.push(start.elapsed() / WINDOW as u32);
            start = Instant::now();
        }
    }
    windows
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = SyncConfig::from_json_str(CONFIG).unwrap();
    let clock = ManualClock::new(1_767_225_600_000);
    let app = create_sync_router(
        SyncOptions::new(config, DocStore::memory()).with_clock(Arc::new(clock)),
    )
    .unwrap();

    let seg = run(&rt, &app, "/push/seg/log", 100_000);
    println!(
        "segmented (chunkSize 1000): appends 1-1000: {:?}/append; appends 99001-100000: {:?}/append",
        seg[0],
        seg[seg.len() - 1]
    );
    let seg100 = run(&rt, &app, "/push/seg100/log", 100_000);
    println!(
        "segmented (chunkSize 100): appends 1-1000: {:?}/append; appends 99001-100000: {:?}/append",
        seg100[0],
        seg100[seg100.len() - 1]
    );
    let single = run(&rt, &app, "/push/single/log", 10_000);
    println!(
        "single document: appends 1-1000: {:?}/append; appends 9001-10000: {:?}/append",
        single[0],
        single[single.len() - 1]
    );
}
