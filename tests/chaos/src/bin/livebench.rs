//! Live changes at scale, measured (run by hand, not in CI; docs/performance.md):
//! starts `starfish serve` (memory store, one public document), opens N
//! subscriptions to it from many loopback source addresses, pushes changes, and
//! reports subscriptions accepted and refused, the server's resident memory per
//! subscriber, the open rate, the fan-out latency of each change to every
//! subscriber (p50, p99, max) and the frames missed.
//!
//! ```sh
//! cargo build --release -p starfish-cli -p starfish-chaos
//! target/release/livebench --bin target/release/starfish --subscribers 10000 --changes 20
//! ```
//!
//! With `--load SECS`, pulls on 8 kept-alive connections and a push every 100 ms run
//! for SECS before the streams open and again while they are open (every push a
//! fan-out): their rates and p50/p99, side by side.
//!
//! With `--signed`, each subscription is a signed request of an identity of its
//! own (minted and signed before the clock starts) naming the public board and the
//! identity's own notes: the server verifies a device certificate and a request
//! signature per open, as for a fresh client.
//!
//! With `--reuse`, each subscription is asked on a connection that first pulled the
//! board (kept alive, as `fetch` reuses one): what a client that reads, then
//! subscribes, costs.
//!
//! The process needs a file descriptor per subscription (`ulimit -n`), and so does
//! the server.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const CONFIG: &str = r#"{"version": 1, "collections": [{"name": "board", "storagePath": "board/{id}",
  "readRoles": ["public"], "writeRoles": ["public"]},
  {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]}]}"#;

struct Args {
    bin: String,
    subscribers: usize,
    changes: usize,
    signed: bool,
    /// Each subscription's connection pulls the board first.
    reuse: bool,
    /// Seconds of pulls (and a push every 100 ms) before the streams open and
    /// again while they are open; 0: none.
    load: f64,
}

fn args() -> Args {
    let mut args = Args {
        bin: "target/release/starfish".into(),
        subscribers: 1000,
        changes: 20,
        signed: false,
        reuse: false,
        load: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--signed" || flag == "--reuse" {
            args.signed |= flag == "--signed";
            args.reuse |= flag == "--reuse";
            continue;
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--bin" => args.bin = value,
            "--subscribers" => args.subscribers = value.parse().expect("--subscribers N"),
            "--changes" => args.changes = value.parse().expect("--changes N"),
            "--load" => args.load = value.parse().expect("--load SECS"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// The server's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user and system) of process `pid` (`self` for this one) so far.
fn cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (which may hold spaces), from the third on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // Clock ticks of 10 ms (`getconf CLK_TCK` is 100 on Linux).
    Duration::from_millis(ticks * 10)
}

/// The `n`-th loopback source address (127.1.0.1, 127.1.0.2, ...).
fn source(n: usize) -> SocketAddr {
    let n = u32::try_from(n).unwrap_or(0);
    let ip = Ipv4Addr::from(0x7f01_0001 + n);
    SocketAddr::from((ip, 0))
}

/// The request that opens subscription `n`: anonymous, or signed by an identity of
/// its own.
fn subscription_head(signed: bool) -> String {
    if !signed {
        return "GET /events?paths=board/b1 HTTP/1.1\r\nHost: bench\r\n\r\n".into();
    }
    use starfish_server::auth::Clock as _;
    let now = Duration::from_millis(starfish_server::auth::SystemClock.now_ms());
    let identity =
        starfish_protocol::identity::Identity::generate(now.as_secs()).expect("identity");
    let path = format!("/events?paths=board/b1,users/{}/notes", identity.user_id());
    let nonce = starfish_protocol::identity::fresh_nonce().expect("nonce");
    let request = starfish_protocol::signing::SignedRequest {
        method: "GET",
        path_and_query: &path,
        body: b"",
        host: "bench",
        ts: i64::try_from(now.as_millis()).expect("ms"),
        nonce: &nonce,
    };
    let headers: String = identity
        .sign(&request)
        .pairs()
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n")
}

/// Opens one subscription from source address `n` with `head`; `None` when refused.
async fn subscribe(port: u16, n: usize, head: String, reuse: bool) -> Option<BufReader<TcpStream>> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(source(n)).ok()?;
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    let mut reader = BufReader::new(stream);
    if reuse {
        pull_on(&mut reader).await?;
    }
    reader.get_mut().write_all(head.as_bytes()).await.ok()?;
    let mut status = String::new();
    reader.read_line(&mut status).await.ok()?;
    if !status.contains(" 200 ") {
        return None;
    }
    // Headers, then the stream's first comment (the subscription is in place).
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.starts_with(": connected") {
            return Some(reader);
        }
    }
}

/// Pulls the board on `reader`'s connection, kept alive: the whole answer is read.
async fn pull_on(reader: &mut BufReader<TcpStream>) -> Option<()> {
    let pull = "GET /pull/board/b1 HTTP/1.1\r\nHost: bench\r\n\r\n";
    reader.get_mut().write_all(pull.as_bytes()).await.ok()?;
    let mut line = String::new();
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = n.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(())
}

/// The board's current hash, for the next push's `baseHash`.
async fn current_hash(port: u16) -> String {
    let pulled = request(port, "GET /pull/board/b1 HTTP/1.1", "").await;
    let hash = pulled.split("\"hash\":\"").nth(1);
    hash.and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_owned()
}

/// One plain HTTP request on a fresh connection; the answer's body.
async fn request(port: u16, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let text = format!(
        "{head}\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

/// [`load`] on a runtime of its own (two threads): its clients wait in no queue
/// behind the subscribers' readers, which have the main runtime (the cores are
/// shared all the same).
async fn load_apart(port: u16, clients: usize, secs: f64) -> (Vec<Duration>, Vec<Duration>) {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(load(port, clients, secs))
    })
    .await
    .expect("load")
}

/// Pulls `board/b1` over `clients` kept-alive connections for `secs`, while a
/// push goes in every 100 ms: the pulls' and the pushes' latencies, sorted.
async fn load(port: u16, clients: usize, secs: f64) -> (Vec<Duration>, Vec<Duration>) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let pullers: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(pull_until(port, until)))
        .collect();
    let mut pushes = Vec::new();
    while Instant::now() < until {
        let base = current_hash(port).await;
        let body = format!(
            r#"{{"data":{{"load":{}}},"baseHash":"{base}"}}"#,
            pushes.len()
        );
        let t0 = Instant::now();
        request(port, "POST /push/board/b1 HTTP/1.1", &body).await;
        pushes.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pulls = Vec::new();
    for puller in pullers {
        pulls.extend(puller.await.expect("puller"));
    }
    pulls.sort_unstable();
    pushes.sort_unstable();
    (pulls, pushes)
}

/// One kept-alive connection pulling `board/b1` until `until`: each latency.
async fn pull_until(port: u16, until: Instant) -> Vec<Duration> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut reader = BufReader::new(stream);
    let mut latencies = Vec::new();
    let mut line = String::new();
    while Instant::now() < until {
        let t0 = Instant::now();
        let head = b"GET /pull/board/b1 HTTP/1.1\r\nHost: bench\r\n\r\n";
        reader.get_mut().write_all(head).await.expect("send");
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line).await.expect("read");
            let lower = line.to_ascii_lowercase();
            if let Some(n) = lower.strip_prefix("content-length:") {
                length = n.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await.expect("body");
        latencies.push(t0.elapsed());
    }
    latencies
}

/// "rate/s, p50, p99" of `sorted` latencies over `secs`.
fn summary(sorted: &[Duration], secs: f64) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        sorted.len() as f64 / secs,
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// Starts the server over `config`, sized for `n` subscriptions; it and its port.
async fn start(bin: &str, config: &std::path::Path, n: usize) -> (tokio::process::Child, u16) {
    let mut server = tokio::process::Command::new(bin)
        .args(["serve", "--store", "memory", "--port", "0", "--config"])
        .arg(config)
        .args(["--max-subscriptions", &(n + 10).to_string()])
        .args(["--max-subscriptions-per-ip", "8"])
        .args(["--max-connections", &(n + 100).to_string()])
        .env("RUST_LOG", "warn,starfish=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let mut log = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let port: u16 = loop {
        let line = log.next_line().await.expect("log").expect("server exited");
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            break digits.parse().expect("port");
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (server, port)
}

/// Opens the subscriptions `heads` name, at most 64 opening at once (a new one
/// starts as soon as one is open): those accepted, how many were refused, and the
/// seconds it took.
async fn open_all(
    port: u16,
    heads: Vec<String>,
    reuse: bool,
) -> (Vec<BufReader<TcpStream>>, usize, f64) {
    let n = heads.len();
    let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, head) in heads.into_iter().enumerate() {
        let permit = opening.clone().acquire_owned().await.expect("open");
        tasks.push(tokio::spawn(async move {
            let opened = subscribe(port, i, head, reuse).await;
            drop(permit);
            opened
        }));
    }
    let mut opened = Vec::with_capacity(n);
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Some(reader) => opened.push(reader),
            None => refused += 1,
        }
    }
    (opened, refused, started.elapsed().as_secs_f64())
}

/// Each subscriber reads its frames; the instants they arrived come out here.
fn listen(opened: Vec<BufReader<TcpStream>>) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    for mut reader in opened {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line.starts_with("data:") {
                    let _ = tx.send(Instant::now());
                }
            }
        });
    }
    rx
}

/// Pushes `changes` changes, waiting (at most 10 s each) for each to reach the
/// `accepted` subscribers: the latencies, sorted, and the frames missed.
async fn fan_out(
    port: u16,
    changes: usize,
    accepted: usize,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(accepted * changes);
    let mut missed = 0;
    for change in 0..changes {
        let base = current_hash(port).await;
        let body = format!(r#"{{"data":{{"n":{change}}},"baseHash":"{base}"}}"#);
        let t0 = Instant::now();
        request(port, "POST /push/board/b1 HTTP/1.1", &body).await;
        let mut got = 0;
        let deadline = t0 + Duration::from_secs(10);
        while got < accepted {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some(at)) => {
                    got += 1;
                    latencies.push(at - t0);
                }
                _ => break,
            }
        }
        missed += accepted - got;
    }
    latencies.sort_unstable();
    (latencies, missed)
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = std::env::temp_dir().join(format!("livebench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("config.json");
    std::fs::write(&config, CONFIG).expect("config");
    let n = args.subscribers;
    let (mut server, port) = start(&args.bin, &config, n).await;
    let pid = server.id().expect("pid");
    let first = r#"{"data":{"n":0},"baseHash":null}"#;
    request(port, "POST /push/board/b1 HTTP/1.1", first).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Pulls and pushes before any stream is open, to compare with below.
    let quiet = if args.load > 0.0 {
        Some(load_apart(port, 8, args.load).await)
    } else {
        None
    };
    let rss_before = rss_kib(pid);
    // Minted and signed before the clock starts.
    let heads: Vec<String> = (0..n).map(|_| subscription_head(args.signed)).collect();
    let (opened, refused, open_secs) = open_all(port, heads, args.reuse).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_kib(pid);
    let accepted = opened.len();
    let mut rx = listen(opened);
    let (server_cpu, own_cpu) = (cpu(&pid.to_string()), cpu("self"));
    let (latencies, missed) = fan_out(port, args.changes, accepted, &mut rx).await;
    let per_change = |total: Duration| total.as_secs_f64() * 1000.0 / args.changes.max(1) as f64;
    let server_cpu = per_change(cpu(&pid.to_string()).saturating_sub(server_cpu));
    let own_cpu = per_change(cpu("self").saturating_sub(own_cpu));
    if let Some((pulls, pushes)) = quiet {
        // The frames of the pushes below are read, and dropped.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let (busy_pulls, busy_pushes) = load_apart(port, 8, args.load).await;
        println!(
            "pulls on 8 connections: {} without streams, {} with {accepted} open and a change every 100 ms",
            summary(&pulls, args.load),
            summary(&busy_pulls, args.load),
        );
        println!(
            "pushes (one every 100 ms): p99 {:.2} ms without streams, {:.2} ms with them",
            percentile(&pushes, 0.99).as_secs_f64() * 1000.0,
            percentile(&busy_pushes, 0.99).as_secs_f64() * 1000.0,
        );
    }
    let per_sub = if accepted > 0 {
        (rss_open.saturating_sub(rss_before) as f64) / accepted as f64
    } else {
        0.0
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "subscribers {n}: accepted {accepted}, refused {refused}; RSS {rss_before} -> {rss_open} KiB ({per_sub:.1} KiB per subscriber); opened at {:.0}/s; fan-out of {} changes p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; frames missed {missed}",
        accepted as f64 / open_secs,
        args.changes,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    println!(
        "CPU per change during the fan-outs: server {server_cpu:.1} ms, this client {own_cpu:.1} ms"
    );
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
