//! Cost as tenants grow: N namespaces created through the admin API (N = 10, 1 000,
//! 10 000), each looked up once; then signed-free pulls in random tenants. Reports
//! the memory a node spends per tenant it serves (RSS growth while every tenant is
//! looked up, the registry itself being in the store) and the p50/p99 latency of a
//! pull, which must stay flat: no request scans the tenants.
//!
//! `cargo bench -p starfish-server --bench tenants`

use axum::body::Body;
use axum::http::Request;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const KEY: &str = "bench-admin-key-0123456789";
const PULLS: usize = 20_000;

fn config() -> SyncConfig {
    SyncConfig::from_json_str(
        r#"{"version":1,"collections":[],"namespaceTemplates":{"team":{"collections":[
        {"name":"board","storagePath":"board","readRoles":["public"],"writeRoles":["public"]},
        {"name":"notes","storagePath":"users/{identity}/notes","readRoles":["self"],"writeRoles":["self"]}]}}}"#,
    )
    .unwrap()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |app: &axum::Router, req: Request<Body>| {
        let res = rt.block_on(app.clone().oneshot(req)).unwrap();
        res.status().as_u16()
    };
    println!("tenants | node memory per tenant served | pull p50 | pull p99");
    for n in [10usize, 1_000, 10_000] {
        let store = DocStore::memory();
        let admin =
            create_sync_router(SyncOptions::new(config(), store.clone()).with_admin_key(KEY))
                .unwrap();
        for i in 0..n {
            let body = format!(r#"{{"name":"t{i}","template":"team"}}"#);
            let req = Request::post("/_starfish/admin/namespaces")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            assert_eq!(send(&admin, req), 201);
            let doc = r#"{"data":{"title":"hello"}}"#;
            let req = Request::post(format!("/t{i}/push/board"))
                .header("content-type", "application/json")
                .header("content-length", doc.len())
                .body(Body::from(doc))
                .unwrap();
            assert_eq!(send(&admin, req), 200);
        }
        // A second node over the same store: what serving every tenant once costs it
        // (the registry and documents are in the store, not counted).
        let node = create_sync_router(SyncOptions::new(config(), store)).unwrap();
        let pull = |t: u64| {
            Request::get(format!("/t{t}/pull/board"))
                .body(Body::empty())
                .unwrap()
        };
        let before = rss_bytes();
        for t in 0..n as u64 {
            assert_eq!(send(&node, pull(t)), 200);
        }
        let per_tenant = rss_bytes().saturating_sub(before) / n as u64;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut latencies = Vec::with_capacity(PULLS);
        for _ in 0..PULLS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let req = pull(seed % n as u64);
            let start = Instant::now();
            let status = send(&node, req);
            latencies.push(start.elapsed());
            assert_eq!(status, 200);
        }
        latencies.sort();
        println!(
            "{n:>7} | {per_tenant:>6} B | {:>8.1?} | {:>8.1?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
    }
}
