//! `starfish-chaos`: the fault campaign (docs/reliability.md).
//!
//! Starts three `starfish serve` nodes over one S3-compatible store (moto, behind a
//! fault proxy of our own), Redis and NATS, all on loopback and stopped by PID;
//! runs concurrent clients through every node while faults are injected on a seeded
//! schedule; records every operation; heals; reads the final state; checks the
//! history (the library's [`starfish_chaos::check`]) and prints a verdict table.
//! A failing run keeps its folder (history, seed, node logs) to be replayed.
//!
//! ```text
//! starfish-chaos --bin target/release/starfish --moto-python PY --moto-script moto_serial.py
//!                [--seconds 60] [--seed N|random] [--faults all|process|services|store|none]
//!                [--clients 12] [--work DIR]
//! ```

use base64::Engine;
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use starfish_chaos::rng::Rng;
use starfish_chaos::{Event, Op, Outcome, PROPERTIES, check, write_hash};
use starfish_protocol::capcert::user_id_from_pub_hex;
use starfish_protocol::{sha256_hex, stable_stringify};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const NODES: usize = 3;
const ADMIN_KEY: &str = "chaos-admin-key-0123456789";
const BUCKET: &str = "chaos";
/// Documents per user that clients race on.
const DOCS: u64 = 4;
const LOGS: u64 = 3;
/// Blobs per user.
const BLOBS: u64 = 2;
const QUOTA: u64 = 5;
/// Namespaces with a quota that creates go to (a fresh one every few seconds).
const QUOTA_EVERY: Duration = Duration::from_secs(6);
/// No answer within this long: the outcome is unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The last part of a run is fault-free, so that everything heals before the final reads.
const HEAL: Duration = Duration::from_secs(6);

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "users/{identity}/docs/{id}",
     "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "log", "storagePath": "users/{identity}/log/{id}",
     "readRoles": ["self"], "writeRoles": ["self"],
     "appendOnly": {"requireAuthorSignature": false, "chunkSize": 8}},
    {"name": "files", "storagePath": "users/{identity}/files/{id}",
     "readRoles": ["self"], "writeRoles": ["self"],
     "allowedMimeTypes": ["application/octet-stream"], "maxBodyBytes": 65536}
  ],
  "namespaceTemplates": {
    "team": {
      "collections": [{"name": "docs", "storagePath": "docs/{id}",
                       "readRoles": ["public"], "writeRoles": ["public"]}],
      "quota": {"maxDocuments": 5}
    },
    "open": {
      "collections": [{"name": "docs", "storagePath": "docs/{id}",
                       "readRoles": ["public"], "writeRoles": ["public"]}]
    }
  }
}"#;

fn main() {
    // `--check FILE`: the checker again, on the history a run kept.
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == "--check" {
        let text = std::fs::read_to_string(&argv[2]).unwrap_or_else(|e| usage(&e.to_string()));
        let history: Vec<Op> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| usage(&e.to_string())))
            .collect();
        let kills = history
            .iter()
            .filter(|o| matches!(&o.event, Event::Fault { kind } if kind == "node-kill"))
            .count() as u64;
        let failed = print_verdict(&check(&history, NODES as u64 + kills));
        std::process::exit(i32::from(failed));
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = runtime.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

#[derive(Debug, Clone)]
struct Args {
    bin: PathBuf,
    moto_python: PathBuf,
    moto_script: PathBuf,
    seconds: u64,
    seed: u64,
    faults: String,
    clients: u32,
    work: Option<PathBuf>,
}

impl Args {
    fn parse() -> Self {
        let mut a = Self {
            bin: PathBuf::from("target/release/starfish"),
            moto_python: PathBuf::from("python3"),
            moto_script: PathBuf::from("tests/s3/moto_serial.py"),
            seconds: 60,
            seed: 1,
            faults: "all".into(),
            clients: 12,
            work: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--bin" => a.bin = value.into(),
                "--moto-python" => a.moto_python = value.into(),
                "--moto-script" => a.moto_script = value.into(),
                "--seconds" => a.seconds = value.parse().unwrap_or_else(|_| usage("--seconds")),
                "--seed" if value == "random" => {
                    let mut b = [0u8; 8];
                    getrandom::fill(&mut b).expect("randomness");
                    a.seed = u64::from_le_bytes(b) >> 16;
                }
                "--seed" => a.seed = value.parse().unwrap_or_else(|_| usage("--seed")),
                "--faults" => a.faults = value,
                "--clients" => a.clients = value.parse().unwrap_or_else(|_| usage("--clients")),
                "--work" => a.work = Some(value.into()),
                other => usage(&format!("unknown flag {other}")),
            }
        }
        if !["all", "process", "services", "store", "none"].contains(&a.faults.as_str()) {
            usage("--faults: all, process, services, store or none");
        }
        a
    }
}

fn usage(what: &str) -> ! {
    eprintln!("starfish-chaos: {what} (see the top of tests/chaos/src/main.rs)");
    std::process::exit(2);
}

// ---- processes -------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn log_file(work: &std::path::Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join(format!("{name}.log")))
        .expect("log file")
}

fn spawn(mut cmd: Command, work: &std::path::Path, name: &str) -> Child {
    let log = log_file(work, name);
    cmd.stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to `pid`.
async fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await;
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, up: impl Fn() -> F) {
    for _ in 0..300 {
        if up().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not come up");
}

async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

struct Services {
    work: PathBuf,
    args: Args,
    moto: Child,
    store_port: u16,
    redis: Option<Child>,
    redis_port: u16,
    nats: Option<Child>,
    nats_port: u16,
    nodes: Vec<Option<Child>>,
    ports: Vec<u16>,
    proxy: Arc<Proxy>,
}

impl Services {
    async fn start(args: &Args, work: &std::path::Path) -> Self {
        let moto_port = free_port();
        let mut cmd = Command::new(&args.moto_python);
        cmd.arg(&args.moto_script)
            .arg("127.0.0.1")
            .arg(moto_port.to_string());
        let moto = spawn(cmd, work, "moto");
        wait_until("moto", || port_open(moto_port)).await;
        let proxy = Arc::new(Proxy::new(moto_port));
        let store_port = proxy.clone().listen().await;
        let created = request(store_port, "PUT", &format!("/{BUCKET}"), &[], None).await;
        assert_eq!(created.map(|r| r.0), Some(200), "bucket");
        let mut s = Self {
            work: work.to_owned(),
            args: args.clone(),
            moto,
            store_port,
            redis: None,
            redis_port: free_port(),
            nats: None,
            nats_port: free_port(),
            nodes: (0..NODES).map(|_| None).collect(),
            ports: (0..NODES).map(|_| free_port()).collect(),
            proxy,
        };
        s.start_redis().await;
        s.start_nats().await;
        std::fs::write(work.join("chaos.json"), CONFIG).expect("config");
        for n in 0..NODES {
            s.start_node(n).await;
        }
        s
    }

    async fn start_redis(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &self.redis_port.to_string(),
        ])
        .args(["--save", "", "--appendonly", "no"]);
        self.redis = Some(spawn(cmd, &self.work, "redis"));
        let port = self.redis_port;
        wait_until("redis", || port_open(port)).await;
    }

    async fn start_nats(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &self.nats_port.to_string()]);
        self.nats = Some(spawn(cmd, &self.work, "nats"));
        let port = self.nats_port;
        wait_until("nats", || port_open(port)).await;
    }

    async fn start_node(&mut self, n: usize) {
        let mut cmd = Command::new(&self.args.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(self.work.join("chaos.json"))
            .args(["--port", &self.ports[n].to_string()])
            .args(["--store", "s3", "--s3-bucket", BUCKET])
            .args([
                "--s3-endpoint",
                &format!("http://127.0.0.1:{}", self.store_port),
            ])
            .args([
                "--redis",
                &format!("redis://127.0.0.1:{}/0", self.redis_port),
            ])
            .args(["--nats", &format!("nats://127.0.0.1:{}", self.nats_port)])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .env("STARFISH_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "warn");
        self.nodes[n] = Some(spawn(cmd, &self.work, &format!("node-{n}")));
        let port = self.ports[n];
        wait_until("a node", || async move {
            request(port, "GET", "/health/live", &[], None)
                .await
                .is_some_and(|r| r.0 == 200)
        })
        .await;
    }

    fn pid(child: &Option<Child>) -> Option<u32> {
        child.as_ref().and_then(Child::id)
    }

    async fn kill(child: &mut Option<Child>) {
        if let Some(mut c) = child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    async fn stop_all(&mut self) {
        for n in 0..NODES {
            if let Some(pid) = Self::pid(&self.nodes[n]) {
                signal(pid, "CONT").await;
            }
            Self::kill(&mut self.nodes[n]).await;
        }
        Self::kill(&mut self.redis).await;
        Self::kill(&mut self.nats).await;
        let _ = self.moto.kill().await;
        let _ = self.moto.wait().await;
    }

    /// Injects fault `kind` (on `node` for the nodes' faults), holds it for `hold`
    /// (half of it for a restart of Redis or NATS) and heals it.
    async fn inject(&mut self, kind: &str, node: usize, hold: Duration, rng: &mut Rng) {
        match kind {
            "node-kill" => {
                if let Some(pid) = Self::pid(&self.nodes[node]) {
                    signal(pid, "KILL").await;
                }
                Self::kill(&mut self.nodes[node]).await;
                tokio::time::sleep(hold).await;
                self.start_node(node).await;
            }
            "node-pause" => {
                if let Some(pid) = Self::pid(&self.nodes[node]) {
                    signal(pid, "STOP").await;
                    tokio::time::sleep(hold).await;
                    signal(pid, "CONT").await;
                }
            }
            "redis-restart" => {
                Self::kill(&mut self.redis).await;
                tokio::time::sleep(hold / 2).await;
                self.start_redis().await;
            }
            "nats-restart" => {
                Self::kill(&mut self.nats).await;
                tokio::time::sleep(hold / 2).await;
                self.start_nats().await;
            }
            "store-delay" => {
                self.proxy.set(Mode::Delay, rng.between(50, 400));
                tokio::time::sleep(hold).await;
                self.proxy.set(Mode::Pass, 0);
            }
            "store-reset" => {
                self.proxy.set(Mode::Reset, 0);
                tokio::time::sleep(hold).await;
                self.proxy.set(Mode::Pass, 0);
            }
            "store-5xx" => {
                self.proxy.set(Mode::Unavailable, 0);
                tokio::time::sleep(hold).await;
                self.proxy.set(Mode::Pass, 0);
            }
            _ => unreachable!("a fault of the list"),
        }
    }
}

// ---- the store's fault proxy -------------------------------------------------------

/// What the proxy does to the store's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Pass = 0,
    /// Each connection waits before its bytes go on.
    Delay = 1,
    /// The request reaches the store, and the connection is cut before its answer:
    /// written, but the node does not know.
    Reset = 2,
    /// Answered `503` without reaching the store.
    Unavailable = 3,
}

/// A TCP proxy in front of the store. A change of mode cuts the connections open
/// under the old one (keep-alive connections would otherwise never see it).
struct Proxy {
    upstream: u16,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    fn new(upstream: u16) -> Self {
        Self {
            upstream,
            mode: AtomicU8::new(Mode::Pass as u8),
            delay_ms: AtomicU64::new(0),
            generation: tokio::sync::watch::channel(0).0,
        }
    }

    fn set(&self, mode: Mode, delay_ms: u64) {
        self.delay_ms.store(delay_ms, Ordering::SeqCst);
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Delay,
            2 => Mode::Reset,
            3 => Mode::Unavailable,
            _ => Mode::Pass,
        }
    }

    async fn listen(self: Arc<Self>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy");
        let port = listener.local_addr().expect("proxy").port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let proxy = self.clone();
                tokio::spawn(async move {
                    let mut changed = proxy.generation.subscribe();
                    tokio::select! {
                        () = proxy.serve(client) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        port
    }

    async fn serve(&self, mut client: TcpStream) {
        match self.mode() {
            Mode::Pass => {}
            Mode::Delay => {
                let ms = self.delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Mode::Unavailable => {
                let mut head = [0u8; 4096];
                let _ = client.read(&mut head).await;
                let _ = client
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
            Mode::Reset => {
                // Forward what the client sends; cut both sides at the store's first
                // answer byte (the request was whole by then).
                let Ok(mut store) = TcpStream::connect(("127.0.0.1", self.upstream)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = store.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let mut first = [0u8; 1];
                tokio::select! {
                    _ = up => {}
                    _ = sr.read(&mut first) => {}
                }
                let _ = cw.shutdown().await;
                return;
            }
        }
        let Ok(mut store) = TcpStream::connect(("127.0.0.1", self.upstream)).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut client, &mut store).await;
    }
}

// ---- HTTP --------------------------------------------------------------------------

/// One request on a connection of its own: the status and body, `None` when there
/// was no answer within [`CLIENT_TIMEOUT`].
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<Bytes>,
) -> Option<(u16, Bytes)> {
    let attempt = async {
        let res = respond(port, method, path, headers, body).await?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.ok()?.to_bytes();
        Some((status, bytes))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// Sends one request on a connection of its own: the response with its body still
/// to read, `None` when it could not be sent or got no answer.
async fn respond(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<Bytes>,
) -> Option<hyper::Response<hyper::body::Incoming>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_io::Io(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        req = req.header(k.as_str(), v.as_str());
    }
    if !has_host {
        req = req.header("host", format!("127.0.0.1:{port}"));
    }
    let req = req.body(Full::new(body.unwrap_or_default())).ok()?;
    sender.send_request(req).await.ok()
}

/// hyper's IO traits over a tokio stream (what hyper-util's `TokioIo` does).
mod hyper_io {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Io(pub(crate) tokio::net::TcpStream);

    impl hyper::rt::Read for Io {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            mut buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            let filled = {
                // Read into a buffer of our own and copy (no unsafe code).
                let mut tmp = [0u8; 8192];
                let mut rb = tokio::io::ReadBuf::new(&mut tmp);
                match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut rb) {
                    Poll::Ready(Ok(())) => rb.filled().to_vec(),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            buf.put_slice(&filled);
            Poll::Ready(Ok(()))
        }
    }

    impl hyper::rt::Write for Io {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
        }
    }
}

// ---- identities and signing ----------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now_ms() -> u64 {
    use starfish_server::auth::Clock;
    starfish_server::auth::SystemClock.now_ms()
}

/// A user's paired device, as one client holds it.
struct Device {
    /// The user's id: the documents' paths name it.
    user: String,
    key: SigningKey,
    cap_header: String,
}

impl Device {
    fn new(user_seed: u8, device_seed: u8) -> Self {
        let root = SigningKey::from_bytes(&[user_seed; 32]);
        let key = SigningKey::from_bytes(&[device_seed; 32]);
        let root_hex = hex::encode(root.verifying_key().as_bytes());
        let user = user_id_from_pub_hex(&root_hex).expect("user id");
        let now = now_ms() / 1000;
        let mut cert = json!({
            "v": 1, "kind": "device",
            "iss": root_hex, "issUserId": user,
            "sub": hex::encode(key.verifying_key().as_bytes()), "subKem": "00".repeat(32),
            "scope": {"ops": ["read", "list", "write"], "collections": ["*"], "paths": ["**"]},
            "nbf": now - 60, "exp": now + 86_400,
            "nonce": b64(&[device_seed; 16]),
        });
        let input = format!("starfish-capcert-v1\n{}", stable_stringify(&cert));
        cert["sig"] = json!(b64(&root.sign(input.as_bytes()).to_bytes()));
        Self {
            user,
            key,
            cap_header: format!("Cap {}", b64(stable_stringify(&cert).as_bytes())),
        }
    }

    /// The headers of a signed request to `port`.
    fn sign(&self, port: u16, method: &str, path: &str, body: &[u8]) -> Vec<(String, String)> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("randomness");
        let nonce = b64(&nonce);
        let ts = now_ms();
        let host = format!("127.0.0.1:{port}");
        let input = format!(
            "starfish-req-v1\n{}",
            stable_stringify(&json!({
                "b": sha256_hex(body), "h": host, "m": method,
                "nonce": nonce, "p": path, "ts": ts,
            }))
        );
        let mut h = vec![
            ("host".to_owned(), host),
            ("authorization".to_owned(), self.cap_header.clone()),
            (
                "x-starfish-sig".to_owned(),
                b64(&self.key.sign(input.as_bytes()).to_bytes()),
            ),
            ("x-starfish-ts".to_owned(), ts.to_string()),
            ("x-starfish-nonce".to_owned(), nonce),
        ];
        if method == "POST" {
            h.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        h
    }
}

// ---- the run -------------------------------------------------------------------------

/// A signed request that was accepted, kept to be sent again.
#[derive(Clone)]
struct Sent {
    op: u64,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
}

struct Shared {
    start: Instant,
    ports: Vec<u16>,
    next_op: AtomicU64,
    next_value: AtomicU64,
    history: Mutex<Vec<Op>>,
    accepted: Mutex<Vec<Sent>>,
    /// The namespace creates go to now.
    quota_ns: Mutex<String>,
    namespaces: Mutex<Vec<String>>,
    deadline: Instant,
}

impl Shared {
    /// The run's shared state, its clock starting now and its clients stopping
    /// `seconds` later; the nodes listen on `ports`.
    fn new(ports: Vec<u16>, seconds: u64) -> Self {
        let start = Instant::now();
        Self {
            start,
            ports,
            next_op: AtomicU64::new(1),
            next_value: AtomicU64::new(1),
            history: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
            quota_ns: Mutex::new(String::new()),
            namespaces: Mutex::new(Vec::new()),
            deadline: start + Duration::from_secs(seconds),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn record(
        &self,
        client: u32,
        node: usize,
        invoke: u64,
        outcome: Outcome,
        status: u16,
        event: Event,
    ) -> u64 {
        let id = self.next_op.fetch_add(1, Ordering::SeqCst);
        let op = Op {
            id,
            client,
            node,
            invoke,
            complete: self.now(),
            outcome,
            status,
            event,
        };
        self.history.lock().expect("history").push(op);
        id
    }

    fn keep(&self, sent: Sent, rng: &mut Rng) {
        let mut accepted = self.accepted.lock().expect("accepted");
        if accepted.len() < 512 {
            accepted.push(sent);
        } else {
            let at = rng.below(accepted.len() as u64) as usize;
            accepted[at] = sent;
        }
    }
}

fn outcome_of_write(status: Option<u16>, refusal: u16) -> Outcome {
    match status {
        Some(200) => Outcome::Ok,
        Some(s) if s == refusal => Outcome::Fail,
        Some(401 | 403 | 400 | 404 | 413 | 415 | 429) => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

async fn client(shared: Arc<Shared>, id: u32, mut rng: Rng) {
    let user_seed = 1 + (id % 2) as u8;
    let device = Device::new(user_seed, 100 + id as u8);
    let user = format!("u{user_seed}");
    while Instant::now() < shared.deadline {
        let node = rng.below(NODES as u64) as usize;
        let pick = rng.below(100);
        if pick < 36 {
            // Pull, then push on top of what was read, to another node.
            let doc = rng.below(DOCS);
            let path = format!("/pull/users/{}/docs/d{doc}", device.user);
            let key = format!("{user}/d{doc}");
            let Some(hash) = read_doc(&shared, &device, id, node, &path, &key).await else {
                continue;
            };
            let node = (node + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
            write_doc(&shared, &device, id, node, doc, &key, hash, &mut rng).await;
        } else if pick < 48 {
            let doc = rng.below(DOCS);
            let path = format!("/pull/users/{}/docs/d{doc}", device.user);
            read_doc(&shared, &device, id, node, &path, &format!("{user}/d{doc}")).await;
        } else if pick < 63 {
            create(&shared, id, node).await;
        } else if pick < 76 {
            append(&shared, &device, id, node, &user, &mut rng).await;
        } else if pick < 86 {
            let blob = rng.below(BLOBS);
            if rng.below(2) == 0 {
                upload(&shared, &device, id, node, &user, blob).await;
            } else {
                let _ = read_blob(&shared, &device, id, node, &user, blob, false).await;
            }
        } else {
            replay(&shared, id, &mut rng).await;
        }
    }
}

/// Pulls a document: its hash (`""` when there is none), `None` when the read failed.
async fn read_doc(
    shared: &Shared,
    device: &Device,
    client: u32,
    node: usize,
    path: &str,
    key: &str,
) -> Option<String> {
    let port = shared.ports[node];
    let headers = device.sign(port, "GET", path, b"");
    let invoke = shared.now();
    let res = request(port, "GET", path, &headers, None).await;
    let status = res.as_ref().map_or(0, |r| r.0);
    let hash = res
        .as_ref()
        .filter(|r| r.0 == 200)
        .and_then(|r| serde_json::from_slice::<Value>(&r.1).ok())
        .and_then(|v| v["hash"].as_str().map(str::to_owned));
    let outcome = if hash.is_some() {
        Outcome::Ok
    } else {
        Outcome::Fail
    };
    shared.record(
        client,
        node,
        invoke,
        outcome,
        status,
        Event::DocRead {
            doc: key.to_owned(),
            hash: hash.clone().unwrap_or_default(),
        },
    );
    hash
}

#[allow(clippy::too_many_arguments)]
async fn write_doc(
    shared: &Shared,
    device: &Device,
    client: u32,
    node: usize,
    doc: u64,
    key: &str,
    base: String,
    rng: &mut Rng,
) {
    let port = shared.ports[node];
    let write = shared.next_value.fetch_add(1, Ordering::SeqCst);
    let base = (!base.is_empty()).then_some(base);
    let body = Bytes::from(json!({"data": {"w": write}, "baseHash": base}).to_string());
    let path = format!("/push/users/{}/docs/d{doc}", device.user);
    let headers = device.sign(port, "POST", &path, &body);
    let invoke = shared.now();
    let res = request(port, "POST", &path, &headers, Some(body.clone())).await;
    let status = res.as_ref().map(|r| r.0);
    let outcome = outcome_of_write(status, 409);
    if outcome == Outcome::Ok {
        let acked: Value = res
            .as_ref()
            .and_then(|r| serde_json::from_slice(&r.1).ok())
            .unwrap_or_default();
        assert_eq!(
            acked["hash"].as_str(),
            Some(write_hash(write).as_str()),
            "the server hashes {{\"w\":{write}}} as the checker does"
        );
    }
    let op = shared.record(
        client,
        node,
        invoke,
        outcome,
        status.unwrap_or(0),
        Event::DocWrite {
            doc: key.to_owned(),
            write,
            base,
            hash: write_hash(write),
        },
    );
    if outcome == Outcome::Ok {
        shared.keep(
            Sent {
                op,
                method: "POST",
                path,
                headers,
                body: Some(body),
            },
            rng,
        );
    }
}

async fn create(shared: &Shared, client: u32, node: usize) {
    let ns = shared.quota_ns.lock().expect("ns").clone();
    let n = shared.next_value.fetch_add(1, Ordering::SeqCst);
    let path = format!("/{ns}/push/docs/c{n}");
    let body = Bytes::from(json!({"data": {"c": n}, "baseHash": null}).to_string());
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let invoke = shared.now();
    let res = request(shared.ports[node], "POST", &path, &headers, Some(body)).await;
    let status = res.as_ref().map(|r| r.0);
    shared.record(
        client,
        node,
        invoke,
        outcome_of_write(status, 507),
        status.unwrap_or(0),
        Event::Create {
            namespace: ns,
            quota: QUOTA,
        },
    );
}

async fn append(
    shared: &Shared,
    device: &Device,
    client: u32,
    node: usize,
    user: &str,
    rng: &mut Rng,
) {
    let port = shared.ports[node];
    let log = rng.below(LOGS);
    let element = shared.next_value.fetch_add(1, Ordering::SeqCst);
    let body = Bytes::from(json!({"data": {"e": element}}).to_string());
    let path = format!("/push/users/{}/log/l{log}", device.user);
    let headers = device.sign(port, "POST", &path, &body);
    let invoke = shared.now();
    let res = request(port, "POST", &path, &headers, Some(body.clone())).await;
    let status = res.as_ref().map(|r| r.0);
    let outcome = outcome_of_write(status, 409);
    let op = shared.record(
        client,
        node,
        invoke,
        outcome,
        status.unwrap_or(0),
        Event::Append {
            log: format!("{user}/l{log}"),
            element,
        },
    );
    if outcome == Outcome::Ok {
        shared.keep(
            Sent {
                op,
                method: "POST",
                path,
                headers,
                body: Some(body),
            },
            rng,
        );
    }
}

async fn upload(shared: &Shared, device: &Device, client: u32, node: usize, user: &str, blob: u64) {
    let port = shared.ports[node];
    let n = shared.next_value.fetch_add(1, Ordering::SeqCst);
    let body = Bytes::from(starfish_chaos::blob_bytes(n));
    let path = format!("/push/users/{}/files/f{blob}", device.user);
    // Binary uploads are signed over an empty body (the protocol's rule).
    let mut headers = device.sign(port, "POST", &path, b"");
    headers.retain(|(k, _)| k != "content-type");
    headers.push((
        "content-type".to_owned(),
        "application/octet-stream".to_owned(),
    ));
    let invoke = shared.now();
    let res = request(port, "POST", &path, &headers, Some(body)).await;
    let status = res.as_ref().map(|r| r.0);
    shared.record(
        client,
        node,
        invoke,
        outcome_of_write(status, 409),
        status.unwrap_or(0),
        Event::BlobWrite {
            blob: format!("{user}/f{blob}"),
            upload: n,
        },
    );
}

/// Pulls a blob: which upload it returned (`None`: no blob); records it.
async fn read_blob(
    shared: &Shared,
    device: &Device,
    client: u32,
    node: usize,
    user: &str,
    blob: u64,
    last: bool,
) -> Option<u64> {
    let port = shared.ports[node];
    let path = format!("/pull/users/{}/files/f{blob}", device.user);
    let headers = device.sign(port, "GET", &path, b"");
    let invoke = shared.now();
    let res = request(port, "GET", &path, &headers, None).await;
    let status = res.as_ref().map_or(0, |r| r.0);
    let upload = match &res {
        Some((200, bytes)) => starfish_chaos::which_upload(bytes).or(Some(starfish_chaos::TORN)),
        _ => None,
    };
    let blob = format!("{user}/f{blob}");
    let (outcome, event) = if last {
        (Outcome::Ok, Event::BlobFinal { blob, upload })
    } else {
        let known = matches!(status, 200 | 404);
        (
            if known { Outcome::Ok } else { Outcome::Fail },
            Event::BlobRead { blob, upload },
        )
    };
    shared.record(client, node, invoke, outcome, status, event);
    upload
}

/// Sends an accepted signed request again, byte for byte, to the node it was signed
/// for or to another (the Host it names is kept, as behind one load balancer).
async fn replay(shared: &Shared, client: u32, rng: &mut Rng) {
    let sent = {
        let accepted = shared.accepted.lock().expect("accepted");
        if accepted.is_empty() {
            return;
        }
        accepted[rng.below(accepted.len() as u64) as usize].clone()
    };
    let node = rng.below(NODES as u64) as usize;
    let invoke = shared.now();
    let res = request(
        shared.ports[node],
        sent.method,
        &sent.path,
        &sent.headers,
        sent.body.clone(),
    )
    .await;
    let status = res.as_ref().map_or(0, |r| r.0);
    shared.record(
        client,
        node,
        invoke,
        if status == 200 {
            Outcome::Ok
        } else {
            Outcome::Fail
        },
        status,
        Event::Replay { original: sent.op },
    );
}

async fn admin(port: u16, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
    let mut headers = vec![("authorization".to_owned(), format!("Bearer {ADMIN_KEY}"))];
    if body.is_some() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    let res = request(
        port,
        method,
        path,
        &headers,
        body.map(|b| Bytes::from(b.to_string())),
    )
    .await?;
    Some((res.0, serde_json::from_slice(&res.1).unwrap_or(Value::Null)))
}

/// Creates a fresh namespace with a quota every [`QUOTA_EVERY`], for the creates.
async fn namespaces(shared: Arc<Shared>) {
    let mut n = 0;
    while Instant::now() < shared.deadline {
        let name = format!("q{n}");
        let port = shared.ports[n % NODES];
        let made = admin(
            port,
            "POST",
            "/_starfish/admin/namespaces",
            Some(json!({"name": name, "template": "team"})),
        )
        .await;
        // 409: an earlier try made it and its answer was lost: it exists all the same.
        let made = made.map(|m| m.0);
        if matches!(made, Some(201 | 409)) {
            shared.namespaces.lock().expect("ns").push(name.clone());
            *shared.quota_ns.lock().expect("ns") = name;
            n += 1;
        }
        tokio::time::sleep(if made.is_some_and(|m| m == 201 || m == 409) {
            QUOTA_EVERY
        } else {
            Duration::from_millis(500)
        })
        .await;
    }
}

/// How long subscribers stay after the clients stop, to hear the last writes.
const LISTEN_AFTER: Duration = Duration::from_secs(3);

/// A live-changes subscriber on one user's documents: opens `GET /events` on a
/// random node, records what it hears, and opens another when the server ends it.
async fn subscriber(shared: Arc<Shared>, user_seed: u8, mut rng: Rng) {
    let device = Device::new(user_seed, 200 + user_seed);
    let docs: Vec<String> = (0..DOCS).map(|d| format!("u{user_seed}/d{d}")).collect();
    let paths: Vec<String> = (0..DOCS)
        .map(|d| format!("users/{}/docs/d{d}", device.user))
        .collect();
    let path = format!("/events?paths={}", paths.join(","));
    let until = shared.deadline + LISTEN_AFTER;
    while Instant::now() < until {
        let node = rng.below(NODES as u64) as usize;
        let port = shared.ports[node];
        let headers = device.sign(port, "GET", &path, b"");
        let invoke = shared.now();
        match listen(port, &path, &headers, until).await {
            Listened::Refused(status) => {
                shared.record(
                    u32::MAX - 2,
                    node,
                    invoke,
                    Outcome::Fail,
                    status,
                    Event::Stream {
                        docs: docs.clone(),
                        heard: Vec::new(),
                        ended: true,
                    },
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Listened::Stream {
                opened,
                heard,
                ended,
            } => {
                let heard = heard
                    .into_iter()
                    .filter_map(|(p, h)| {
                        let d = paths.iter().position(|x| *x == p)?;
                        Some((docs[d].clone(), h))
                    })
                    .collect();
                let op = Op {
                    id: shared.next_op.fetch_add(1, Ordering::SeqCst),
                    client: u32::MAX - 2,
                    node,
                    invoke: opened.duration_since(shared.start).as_micros() as u64,
                    complete: shared.now(),
                    outcome: Outcome::Ok,
                    status: 200,
                    event: Event::Stream {
                        docs: docs.clone(),
                        heard,
                        ended,
                    },
                };
                shared.history.lock().expect("history").push(op);
                if ended {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

enum Listened {
    Refused(u16),
    Stream {
        opened: Instant,
        heard: Vec<(String, String)>,
        /// The server ended it (not this client, at `until`).
        ended: bool,
    },
}

/// Holds a live-changes stream open until `until` or until the server ends it.
async fn listen(port: u16, path: &str, headers: &[(String, String)], until: Instant) -> Listened {
    let opened = respond(port, "GET", path, headers, None);
    let Ok(Some(res)) = tokio::time::timeout(CLIENT_TIMEOUT, opened).await else {
        return Listened::Refused(0);
    };
    if res.status() != 200 {
        return Listened::Refused(res.status().as_u16());
    }
    let mut body = res.into_body();
    let mut text = String::new();
    let mut heard = Vec::new();
    let mut opened: Option<Instant> = None;
    let until = tokio::time::Instant::from_std(until);
    let ended = loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            () = tokio::time::sleep_until(until) => break false,
        };
        let Some(Ok(frame)) = frame else {
            break true;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find(
            "

",
        ) {
            let event: String = text.drain(..end + 2).collect();
            for line in event.lines() {
                if line.starts_with(": connected") {
                    opened.get_or_insert_with(Instant::now);
                }
                if let Some(json) = line.strip_prefix("data: ") {
                    let change: Value = serde_json::from_str(json).unwrap_or_default();
                    if let (Some(p), Some(h)) = (change["path"].as_str(), change["hash"].as_str()) {
                        heard.push((p.to_owned(), h.to_owned()));
                    }
                }
            }
        }
    };
    match opened {
        Some(opened) => Listened::Stream {
            opened,
            heard,
            ended,
        },
        None => Listened::Refused(0),
    }
}

/// Sends `path` to a random node, `token` as a Bearer key if given.
async fn probe_request(
    shared: &Shared,
    rng: &mut Rng,
    path: &str,
    token: Option<&str>,
) -> (usize, Option<(u16, Bytes)>) {
    let node = rng.below(NODES as u64) as usize;
    let headers: Vec<(String, String)> = token
        .map(|t| vec![("authorization".to_owned(), format!("Bearer {t}"))])
        .unwrap_or_default();
    let res = request(shared.ports[node], "GET", path, &headers, None).await;
    (node, res)
}

/// An admin change, on a random node: its operation id when acknowledged.
async fn change(
    shared: &Shared,
    rng: &mut Rng,
    method: &str,
    path: &str,
    target: &str,
    kind: &str,
) -> Option<u64> {
    let node = rng.below(NODES as u64) as usize;
    let invoke = shared.now();
    let res = admin(shared.ports[node], method, path, None).await;
    let status = res.as_ref().map_or(0, |r| r.0);
    let outcome = if status == 200 || status == 204 {
        Outcome::Ok
    } else if status == 0 || status == 503 {
        Outcome::Unknown
    } else {
        Outcome::Fail
    };
    let id = shared.record(
        u32::MAX - 1,
        node,
        invoke,
        outcome,
        if status == 204 { 200 } else { status },
        Event::Change {
            target: target.to_owned(),
            change: kind.to_owned(),
        },
    );
    (outcome == Outcome::Ok).then_some(id)
}

/// Probes `change` for a while after it: every node must refuse within the bound.
async fn probes(
    shared: &Shared,
    rng: &mut Rng,
    change: u64,
    what: &str,
    path: &str,
    token: Option<&str>,
) {
    let until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < until {
        let invoke = shared.now();
        let (node, res) = probe_request(shared, rng, path, token).await;
        let status = res.as_ref().map_or(0, |r| r.0);
        shared.record(
            u32::MAX - 1,
            node,
            invoke,
            Outcome::Ok,
            status,
            Event::Probe {
                change,
                what: what.to_owned(),
                stale: false,
            },
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runtime namespaces and API keys through their lives while the faults go on:
/// create a namespace and a key for it, write with the key, then revoke the key,
/// suspend the namespace or delete it (then create it again under its name), and
/// probe every node after each change.
async fn lifecycle(shared: Arc<Shared>, mut rng: Rng) {
    let mut n = 0u64;
    while Instant::now() < shared.deadline {
        n += 1;
        let Some(life) = Life::begin(&shared, &mut rng, n).await else {
            continue;
        };
        if !life.write(&shared, &mut rng).await {
            continue;
        }
        match rng.below(3) {
            0 => life.revoke(&shared, &mut rng).await,
            1 => life.suspend(&shared, &mut rng).await,
            _ => life.delete_and_recreate(&shared, &mut rng).await,
        }
    }
}

/// One runtime namespace of [`lifecycle`], the `generation`-th, and the API key made
/// for it.
struct Life {
    generation: u64,
    ns: String,
    /// The key's id, that the admin API revokes it by.
    key_id: String,
    /// The key itself, sent as a Bearer token.
    token: String,
    /// The path that pulls the namespace's one document.
    doc: String,
}

impl Life {
    /// Creates namespace `l{generation}` and a key that reads and writes it, both on
    /// one random node; `None` when either was not made (after a pause when the
    /// namespace was not).
    async fn begin(shared: &Shared, rng: &mut Rng, generation: u64) -> Option<Self> {
        let ns = format!("l{generation}");
        let node = rng.below(NODES as u64) as usize;
        let made = admin(
            shared.ports[node],
            "POST",
            "/_starfish/admin/namespaces",
            Some(json!({"name": ns, "template": "open"})),
        )
        .await;
        if !matches!(made, Some((201, _))) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return None;
        }
        let key = admin(
            shared.ports[node],
            "POST",
            "/_starfish/admin/keys",
            Some(json!({"grants": {ns.clone(): ["read", "write"]}})),
        )
        .await;
        let Some((201, key)) = key else {
            return None;
        };
        let (Some(id), Some(token)) = (key["id"].as_str(), key["key"].as_str()) else {
            return None;
        };
        let doc = format!("/{ns}/pull/docs/x");
        Some(Self {
            generation,
            ns,
            key_id: id.to_owned(),
            token: token.to_owned(),
            doc,
        })
    }

    /// Writes the namespace's one document, naming its generation, with the key on a
    /// random node: true when it was acknowledged.
    async fn write(&self, shared: &Shared, rng: &mut Rng) -> bool {
        let ns = &self.ns;
        let body = Bytes::from(
            json!({"data": {"generation": self.generation}, "baseHash": null}).to_string(),
        );
        let headers = vec![
            ("authorization".to_owned(), format!("Bearer {}", self.token)),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let wrote = request(
            shared.ports[rng.below(NODES as u64) as usize],
            "POST",
            &format!("/{ns}/push/docs/x"),
            &headers,
            Some(body),
        )
        .await;
        matches!(wrote, Some((200, _)))
    }

    /// Revokes the key, then probes the document with it.
    async fn revoke(&self, shared: &Shared, rng: &mut Rng) {
        let id = &self.key_id;
        let path = format!("/_starfish/admin/keys/{id}/revoke");
        if let Some(c) = change(shared, rng, "POST", &path, id, "revoke").await {
            probes(
                shared,
                rng,
                c,
                "revoke",
                &self.doc,
                Some(self.token.as_str()),
            )
            .await;
        }
    }

    /// Suspends the namespace, then probes the document anonymously.
    async fn suspend(&self, shared: &Shared, rng: &mut Rng) {
        let ns = &self.ns;
        let path = format!("/_starfish/admin/namespaces/{ns}/suspend");
        if let Some(c) = change(shared, rng, "POST", &path, ns, "suspend").await {
            probes(shared, rng, c, "suspend", &self.doc, None).await;
        }
    }

    /// Deletes the namespace and probes the document anonymously; then creates a
    /// namespace under its name again and probes that neither the old document nor
    /// the old key comes back in it.
    async fn delete_and_recreate(&self, shared: &Shared, rng: &mut Rng) {
        let ns = &self.ns;
        let path = format!("/_starfish/admin/namespaces/{ns}");
        let Some(c) = change(shared, rng, "DELETE", &path, ns, "delete").await else {
            return;
        };
        probes(shared, rng, c, "delete", &self.doc, None).await;
        // The name again: a new namespace, empty, that the old key cannot reach.
        let again = admin(
            shared.ports[rng.below(NODES as u64) as usize],
            "POST",
            "/_starfish/admin/namespaces",
            Some(json!({"name": ns, "template": "open"})),
        )
        .await;
        if !matches!(again, Some((201, _))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        for _ in 0..6 {
            self.probe_recreated(shared, rng, c).await;
        }
    }

    /// One round of probes of the namespace created again after deletion `change`:
    /// the document anonymously (did the old generation's data come back?), then with
    /// the old key.
    async fn probe_recreated(&self, shared: &Shared, rng: &mut Rng, change: u64) {
        let invoke = shared.now();
        let (node, res) = probe_request(shared, rng, &self.doc, None).await;
        let status = res.as_ref().map_or(0, |r| r.0);
        let stale = res
            .as_ref()
            .and_then(|r| serde_json::from_slice::<Value>(&r.1).ok())
            .is_some_and(|v| v["data"]["generation"] == json!(self.generation));
        shared.record(
            u32::MAX - 1,
            node,
            invoke,
            Outcome::Ok,
            status,
            Event::Probe {
                change,
                what: "recreated-data".to_owned(),
                stale,
            },
        );
        let invoke = shared.now();
        let (node, res) = probe_request(shared, rng, &self.doc, Some(self.token.as_str())).await;
        shared.record(
            u32::MAX - 1,
            node,
            invoke,
            Outcome::Ok,
            res.map_or(0, |r| r.0),
            Event::Probe {
                change,
                what: "recreated-key".to_owned(),
                stale: false,
            },
        );
    }
}

/// Faults of one mix, on the schedule `rng` gives, until the healing time; returns
/// how many of each it injected.
async fn faults(
    shared: Arc<Shared>,
    services: Arc<tokio::sync::Mutex<Services>>,
    mix: String,
    mut rng: Rng,
) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let kinds = fault_kinds(&mix);
    if kinds.is_empty() {
        return counts;
    }
    let stop_at = shared.deadline - HEAL;
    // Every kind once per round, in an order the seed shuffles.
    let mut round: Vec<&'static str> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.between(1_000, 3_000))).await;
        if Instant::now() >= stop_at {
            break;
        }
        let kind = next_fault(&mut round, kinds, &mut rng);
        let node = rng.below(NODES as u64) as usize;
        let hold = Duration::from_millis(rng.between(500, 3_000));
        let invoke = shared.now();
        services
            .lock()
            .await
            .inject(kind, node, hold, &mut rng)
            .await;
        let fault_node = if kind.starts_with("node") { node } else { 0 };
        shared.record(
            u32::MAX,
            fault_node,
            invoke,
            Outcome::Unknown,
            0,
            Event::Fault {
                kind: kind.to_owned(),
            },
        );
        *counts.entry(kind).or_insert(0) += 1;
    }
    counts
}

/// The kinds of fault of `mix` (`--faults`).
fn fault_kinds(mix: &str) -> &'static [&'static str] {
    match mix {
        "process" => &["node-kill", "node-pause"],
        "services" => &["redis-restart", "nats-restart"],
        "store" => &["store-delay", "store-reset", "store-5xx"],
        "none" => &[],
        _ => &[
            "node-kill",
            "node-pause",
            "redis-restart",
            "nats-restart",
            "store-delay",
            "store-reset",
            "store-5xx",
        ],
    }
}

/// The next fault of `round`, which starts again as `kinds` in an order `rng`
/// shuffles when it is empty.
fn next_fault(
    round: &mut Vec<&'static str>,
    kinds: &[&'static str],
    rng: &mut Rng,
) -> &'static str {
    if round.is_empty() {
        *round = kinds.to_vec();
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    round.pop().expect("a round")
}

/// The final state, read once everything is healed.
async fn final_reads(shared: &Shared) {
    for user_seed in 1..=2u8 {
        let device = Device::new(user_seed, 250 - user_seed);
        let user = format!("u{user_seed}");
        for doc in 0..DOCS {
            for node in 0..NODES {
                final_doc(shared, &device, &user, doc, node).await;
            }
        }
        for blob in 0..BLOBS {
            for node in 0..NODES {
                read_blob(shared, &device, u32::MAX, node, &user, blob, true).await;
            }
        }
        for log in 0..LOGS {
            final_log(shared, &device, &user, log).await;
        }
    }
    final_usage(shared).await;
}

/// Pulls document `doc` of `user` from `node` and records the hash it answered.
async fn final_doc(shared: &Shared, device: &Device, user: &str, doc: u64, node: usize) {
    let path = format!("/pull/users/{}/docs/d{doc}", device.user);
    let port = shared.ports[node];
    let invoke = shared.now();
    let res = request(
        port,
        "GET",
        &path,
        &device.sign(port, "GET", &path, b""),
        None,
    )
    .await;
    let status = res.as_ref().map_or(0, |r| r.0);
    let hash = res
        .as_ref()
        .and_then(|r| serde_json::from_slice::<Value>(&r.1).ok())
        .and_then(|v| v["hash"].as_str().map(str::to_owned))
        .unwrap_or_default();
    shared.record(
        u32::MAX,
        node,
        invoke,
        Outcome::Ok,
        status,
        Event::DocFinal {
            doc: format!("{user}/d{doc}"),
            hash,
        },
    );
}

/// Pulls the whole of `user`'s log `log` from node 0 and records its elements.
async fn final_log(shared: &Shared, device: &Device, user: &str, log: u64) {
    let port = shared.ports[0];
    let invoke = shared.now();
    let (status, elements) = whole_log(device, port, log).await;
    shared.record(
        u32::MAX,
        0,
        invoke,
        Outcome::Ok,
        status,
        Event::LogFinal {
            log: format!("{user}/l{log}"),
            elements: (status == 200).then_some(elements),
        },
    );
}

/// Pulls log `log` from `port` page by page, each from the last checkpoint, until a
/// page is empty: `200` and its elements in order, or the status of the page that
/// failed (0: no answer) and the elements read before it.
async fn whole_log(device: &Device, port: u16, log: u64) -> (u16, Vec<u64>) {
    let mut elements = Vec::new();
    let mut checkpoint = 0u64;
    let mut status = 200;
    loop {
        let path = format!(
            "/pull/users/{}/log/l{log}?checkpoint={checkpoint}",
            device.user
        );
        let res = request(
            port,
            "GET",
            &path,
            &device.sign(port, "GET", &path, b""),
            None,
        )
        .await;
        let page = res
            .as_ref()
            .filter(|r| r.0 == 200)
            .and_then(|r| serde_json::from_slice::<Value>(&r.1).ok());
        let Some(page) = page else {
            status = res.map_or(0, |r| r.0);
            break;
        };
        let items = page["data"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for item in &items {
            elements.push(item["data"]["e"].as_u64().unwrap_or(u64::MAX));
            checkpoint = item["ts"].as_u64().unwrap_or(checkpoint);
        }
    }
    (status, elements)
}

/// Reads each quota namespace's usage from node 0: documents in the store and in
/// its usage record.
async fn final_usage(shared: &Shared) {
    let names = shared.namespaces.lock().expect("ns").clone();
    for ns in names {
        let invoke = shared.now();
        let res = admin(
            shared.ports[0],
            "GET",
            &format!("/_starfish/admin/namespaces/{ns}?usage=1"),
            None,
        )
        .await;
        let (status, item) = res.unwrap_or((0, Value::Null));
        shared.record(
            u32::MAX,
            0,
            invoke,
            Outcome::Ok,
            status,
            Event::NamespaceFinal {
                namespace: ns,
                quota: QUOTA,
                stored: item["objects"].as_u64().unwrap_or(0),
                recorded: item["quota"]["documents"].as_u64().unwrap_or(0),
            },
        );
    }
}

/// The whole campaign: the services, the workload with its faults, the final reads,
/// the check; true when it passed.
async fn run(args: Args) -> bool {
    let work = work_folder(&args);
    println!(
        "chaos: seed {} faults {} for {} s with {} clients (replay: --seed {} --faults {} --seconds {}); folder {}",
        args.seed,
        args.faults,
        args.seconds,
        args.clients,
        args.seed,
        args.faults,
        args.seconds,
        work.display()
    );
    let services = Services::start(&args, &work).await;
    let shared = Arc::new(Shared::new(services.ports.clone(), args.seconds));
    let services = Arc::new(tokio::sync::Mutex::new(services));
    let injected = workload(&shared, &services, &args).await;
    // Healed: every node up, the store passing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    final_reads(&shared).await;
    services.lock().await.stop_all().await;

    let history = std::mem::take(&mut *shared.history.lock().expect("history"));
    let kills = injected.get("node-kill").copied().unwrap_or(0);
    let report = check(&history, NODES as u64 + kills);
    write_history(&work, &history);

    print_summary(&history, &injected);
    let failed = print_verdict(&report);
    conclude(&args, &work, failed);
    !failed
}

/// The run's folder: `--work`, or a fresh one in the temporary folder named for the
/// seed and this process; created.
fn work_folder(args: &Args) -> PathBuf {
    match &args.work {
        Some(w) => {
            std::fs::create_dir_all(w).expect("work folder");
            w.clone()
        }
        None => {
            let w = std::env::temp_dir().join(format!(
                "starfish-chaos-{}-{}",
                args.seed,
                std::process::id()
            ));
            std::fs::create_dir_all(&w).expect("work folder");
            w
        }
    }
}

/// Runs the workload with its faults until the deadline: the quota namespaces, the
/// namespaces' and keys' lives, the subscribers, then (once the first quota namespace
/// exists) the clients and the faults, each on its own fork of the seed; waits for
/// all of them and returns how many faults of each kind were injected.
async fn workload(
    shared: &Arc<Shared>,
    services: &Arc<tokio::sync::Mutex<Services>>,
    args: &Args,
) -> BTreeMap<&'static str, u64> {
    let seed = Rng::new(args.seed);
    let ns = tokio::spawn(namespaces(shared.clone()));
    let lives = tokio::spawn(lifecycle(shared.clone(), seed.fork(2_000_000)));
    let listeners: Vec<_> = (1..=2u8)
        .map(|u| {
            tokio::spawn(subscriber(
                shared.clone(),
                u,
                seed.fork(3_000_000 + u64::from(u)),
            ))
        })
        .collect();
    // The first namespace exists before clients create in it.
    while shared.quota_ns.lock().expect("ns").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        tasks.push(tokio::spawn(client(
            shared.clone(),
            c,
            seed.fork(u64::from(c)),
        )));
    }
    let injected = tokio::spawn(faults(
        shared.clone(),
        services.clone(),
        args.faults.clone(),
        seed.fork(1_000_000),
    ));
    for t in tasks {
        let _ = t.await;
    }
    let _ = ns.await;
    let _ = lives.await;
    for l in listeners {
        let _ = l.await;
    }
    injected.await.unwrap_or_default()
}

/// Writes the history to `history.jsonl` in `work`, one operation a line.
fn write_history(work: &std::path::Path, history: &[Op]) {
    let mut lines = String::new();
    for op in history {
        lines.push_str(&serde_json::to_string(op).expect("op"));
        lines.push('\n');
    }
    std::fs::write(work.join("history.jsonl"), lines).expect("history");
}

/// Prints how the run ended: a failed one keeps its folder to be replayed, a passed
/// one removes it unless it was given (`--work`).
fn conclude(args: &Args, work: &std::path::Path, failed: bool) {
    if failed {
        println!(
            "chaos: FAILED (seed {}, faults {}); history and logs kept in {}",
            args.seed,
            args.faults,
            work.display()
        );
    } else {
        println!("chaos: passed (seed {})", args.seed);
        if args.work.is_none() {
            let _ = std::fs::remove_dir_all(work);
        }
    }
}

/// Prints the verdict table and the first findings; true when anything failed.
fn print_verdict(report: &starfish_chaos::Report) -> bool {
    let mut failed = false;
    println!("{:<34} {:>9} {:>10}", "property", "checked", "violations");
    for p in PROPERTIES.iter().chain([&starfish_chaos::ANSWERS]) {
        let v = &report[p];
        println!("{:<34} {:>9} {:>10}", p, v.checked, v.violations.len());
        failed |= !v.violations.is_empty();
    }
    for (p, v) in report {
        for line in v.violations.iter().take(20) {
            println!("  {p}: {line}");
        }
    }
    failed
}

fn print_summary(history: &[Op], injected: &BTreeMap<&'static str, u64>) {
    let mut ops: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for op in history {
        let kind = match op.event {
            Event::DocWrite { .. } => "push",
            Event::DocRead { .. } => "pull",
            Event::Create { .. } => "create",
            Event::Append { .. } => "append",
            Event::Replay { .. } => "replay",
            Event::Change { .. } => "change",
            Event::Probe { .. } => "probe",
            Event::Stream { .. } => "stream",
            Event::BlobWrite { .. } => "upload",
            Event::BlobRead { .. } => "blob",
            _ => continue,
        };
        *ops.entry((kind, op.status.to_string())).or_insert(0) += 1;
    }
    println!("operations (kind, status: count):");
    for ((kind, status), n) in &ops {
        println!("  {kind:<7} {status:>3}: {n}");
    }
    println!("faults injected:");
    for (kind, n) in injected {
        println!("  {kind:<14} {n}");
    }
}
