//! Noisy neighbour: tenant A floods the server with signed pulls over many
//! connections while tenant B runs a steady signed workload (an open loop at a fixed
//! rate); B's latency alone, under A's flood without limits, and under A's flood with
//! A's `maxConcurrent` set. The server runs over TCP on a 2-worker runtime with the
//! filesystem store (as `starfish serve`), the clients on a runtime of their own, all
//! on the same machine.
//!
//! `cargo bench -p starfish-server --bench noisy`

mod support;

use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use starfish_server::auth::{CapAuthOptions, NonceCacheLimits};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{HOST, Keys, cap_header_at, keys_from, signed_headers};

/// B's steady rate, requests per second.
const B_RATE: u64 = 300;
/// How long each measured phase lasts.
const PHASE: Duration = Duration::from_secs(5);
/// A's connections, each with one request in flight at a time.
const FLOODERS: usize = 64;
/// Requests each of A's connections has signed beforehand (more than it can send in
/// a phase).
const A_SIGNED: usize = 6_000;

fn now_ms() -> u64 {
    use starfish_server::auth::Clock as _;
    starfish_server::auth::SystemClock.now_ms()
}

fn router(dir: &std::path::Path, limits_on_a: Option<Value>) -> Router {
    let collections = json!([{"name": "notes", "storagePath": "users/{identity}/notes",
                               "readRoles": ["self"], "writeRoles": ["self"]}]);
    let mut a = json!({"collections": collections, "isolation": "prefixed"});
    if let Some(l) = limits_on_a {
        a["limits"] = l;
    }
    let config = SyncConfig::from_value(json!({
        "version": 1, "collections": [],
        "namespaces": {"a": a, "b": {"collections": collections, "isolation": "prefixed"}}
    }))
    .unwrap();
    create_sync_router(
        SyncOptions::new(config, DocStore::local(dir).unwrap()).with_cap_auth(CapAuthOptions {
            nonce_limits: NonceCacheLimits {
                window_ms: 600_000,
                max_entries: 4_000_000,
                per_signer: 4_000_000,
            },
            ..CapAuthOptions::default()
        }),
    )
    .unwrap()
}

/// Pins the calling thread to `cpu` (best effort: the figures say whether it held).
fn place(cpu: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

/// Serves `app` on a one-worker runtime pinned to CPU 0 (kept alive by the returned
/// value): the server has one core to itself, and the clients the other.
fn serve(app: Router) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| place(0))
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rt)
}

type Conn = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Conn {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A signed pull of `k`'s notes in namespace `ns`.
fn signed_pull(k: &Keys, cap: &str, ns: &str) -> Request<Empty<Bytes>> {
    let path = format!("/{ns}/pull/users/{}/notes", k.id);
    let mut req = Request::get(&path).body(Empty::new()).unwrap();
    *req.headers_mut() = signed_headers(k, cap, &path, now_ms());
    debug_assert_eq!(req.headers()["host"], HOST);
    req
}

/// Sends `req` on `conn`: the status.
async fn send(conn: &mut Conn, req: Request<Empty<Bytes>>) -> u16 {
    conn.ready().await.unwrap();
    let res = conn.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(matches!(status, 200 | 429), "unexpected {status}: {body:?}");
    status
}

/// B's latencies (µs) over one phase, at [`B_RATE`], on a pool of connections.
async fn steady(addr: SocketAddr, k: &Arc<Keys>, cap: &Arc<String>) -> Vec<u64> {
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / B_RATE));
    let end = Instant::now() + PHASE;
    let mut jobs = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let (pool, k, cap) = (pool.clone(), k.clone(), cap.clone());
        jobs.push(tokio::spawn(async move {
            let started = Instant::now();
            let pooled = pool.lock().unwrap().pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => connect(addr).await,
            };
            let status = send(&mut conn, signed_pull(&k, &cap, "b")).await;
            let took = started.elapsed().as_micros() as u64;
            assert_eq!(status, 200, "B is never refused");
            pool.lock().unwrap().push(conn);
            took
        }));
    }
    let mut out = Vec::new();
    for j in jobs {
        out.push(j.await.unwrap());
    }
    out.sort_unstable();
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Floods namespace `a` until `stop` with requests signed beforehand (so the
/// flooder's own signing does not take the machine); counts (served, refused with 429).
async fn flood(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let served = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let k = keys_from(9);
    let cap = cap_header_at(&k, 0, now_ms() / 1000);
    let batches: Vec<Vec<_>> = (0..FLOODERS)
        .map(|_| (0..A_SIGNED).map(|_| signed_pull(&k, &cap, "a")).collect())
        .collect();
    let mut tasks = Vec::new();
    for signed in batches {
        let mut conn = connect(addr).await;
        let stop = stop.clone();
        let (served, refused) = (served.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for req in signed {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match send(&mut conn, req).await {
                    200 => served.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    other => panic!("A got {other}"),
                };
            }
            assert!(stop.load(Ordering::Relaxed), "A ran out of signed requests");
        }));
    }
    (served, refused, tasks)
}

/// A client runtime of one thread on CPU 1.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || place(1))
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    // A and B each on a thread of their own: B's latency is the server's, not the
    // time B's client waits behind A's tasks.
    let (a_rt, b_rt) = (runtime(), runtime());
    println!(
        "| A's limits | phase | B p50 ms | B p99 ms | B p99 / baseline | A served/s | A 429/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, limits) in [
        ("none", None),
        ("maxConcurrent 4", Some(json!({"maxConcurrent": 4}))),
        (
            "maxRequests 100 per 100 ms",
            Some(json!({"windowMs": 100, "maxRequests": 100})),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _server) = serve(router(dir.path(), limits));
        let b = Arc::new(keys_from(7));
        let b_cap = Arc::new(cap_header_at(&b, 0, now_ms() / 1000));
        {
            let alone = b_rt.block_on(steady(addr, &b, &b_cap));
            let base_p99 = percentile(&alone, 0.99);
            println!(
                "| {label} | B alone | {:.2} | {:.2} | 1.00 | | |",
                percentile(&alone, 0.5),
                base_p99
            );
            let stop = Arc::new(AtomicBool::new(false));
            let (served, refused, tasks) = a_rt.block_on(flood(addr, &stop));
            b_rt.block_on(tokio::time::sleep(Duration::from_millis(500)));
            let (s0, r0) = (
                served.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
            );
            let started = Instant::now();
            let under = b_rt.block_on(steady(addr, &b, &b_cap));
            let secs = started.elapsed().as_secs_f64();
            let (s1, r1) = (
                served.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
            );
            stop.store(true, Ordering::Relaxed);
            a_rt.block_on(async {
                for t in tasks {
                    t.await.unwrap();
                }
            });
            let p99 = percentile(&under, 0.99);
            println!(
                "| {label} | A flooding | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
                percentile(&under, 0.5),
                p99,
                p99 / base_p99,
                (s1 - s0) as f64 / secs,
                (r1 - r0) as f64 / secs
            );
        }
    }
}
