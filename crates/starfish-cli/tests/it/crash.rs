//! Crash safety: the real `starfish serve` on the filesystem store is SIGKILLed in the
//! middle of a stream of pushes, appends and blob uploads, several times over the same
//! data directory. After each restart every acknowledged write is there as it was
//! acknowledged (document hash and content, log element and timestamp, blob bytes and
//! ETag), a write in flight at the kill is either wholly there or wholly absent, and
//! every object in the store reads back without a 5xx.
//!
//! SIGKILL ends the process, not the kernel: the page cache survives, so this checks
//! that writes are atomic and the store consistent, not that they reach the disk (that
//! is `--fsync`'s job, for power losses; every other round here runs with it on).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common;
use common::*;

const CONFIG: &str = r#"version: 1
collections:
  - {name: docs, storagePath: "docs/{id}", readRoles: [public], writeRoles: [public]}
  - {name: log, storagePath: "log/{id}", readRoles: [public], writeRoles: [public],
     appendOnly: {requireAuthorSignature: false, chunkSize: 4}}
  - {name: files, storagePath: "files/{id}", readRoles: [public], writeRoles: [public],
     allowedMimeTypes: [application/octet-stream], maxBodyBytes: 8000000}
"#;

const ROUNDS: usize = 3;
const DOC_WRITERS: usize = 3;
const APPENDERS: usize = 2;
const UPLOADERS: usize = 2;
const IDS_PER_WRITER: usize = 4;
/// Every this many uploads one is past 5 MiB: a multipart upload in the store (the
/// first of each uploader in each round, then every sixth).
const LARGE_EVERY: u64 = 6;

/// One HTTP/1.0 request (so no chunked answer) on its own connection: the status, the
/// lower-cased headers and the body; an error when the server is gone.
fn call(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("truncated response"))?;
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let body = response[end + 4..].to_vec();
    // A response cut short by the kill is no acknowledgement.
    let declared = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n != body.len()) {
        return Err(std::io::Error::other("truncated body"));
    }
    Ok((status, head, body))
}

fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    call(port, "GET", path, "application/json", b"").expect("the server answers")
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}

/// Non-repeating bytes for upload `n` of uploader `w` in `round`.
fn blob_bytes(w: usize, round: usize, n: u64) -> Vec<u8> {
    let len = if n % LARGE_EVERY == 0 {
        5 * 1024 * 1024 + 300_000
    } else {
        1000 + (n as usize * 7919) % 60_000
    };
    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ ((w as u64) << 48) ^ ((round as u64) << 32) ^ n;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What clients were told, and what was in flight when the server died.
#[derive(Default)]
struct Ledger {
    /// Document: the acknowledged hash and data, and the data of a push in flight.
    docs: BTreeMap<String, DocState>,
    /// Log: acknowledged elements (writer, number) with their timestamps, and the
    /// elements in flight.
    logs: BTreeMap<String, LogState>,
    /// Blob: the acknowledged SHA-256, and that of an upload in flight.
    blobs: BTreeMap<String, BlobState>,
    acknowledged: usize,
    /// Acknowledged uploads past 5 MiB (multipart in the store).
    multipart: usize,
}

#[derive(Default, Clone)]
struct DocState {
    acked: Option<(String, Value)>,
    in_flight: Option<Value>,
}

#[derive(Default)]
struct LogState {
    acked: BTreeMap<(u64, u64), u64>,
    in_flight: BTreeSet<(u64, u64)>,
}

#[derive(Default, Clone)]
struct BlobState {
    acked: Option<String>,
    in_flight: Option<String>,
}

/// The ledger, and a signal for each acknowledged write.
#[derive(Default)]
struct Book {
    ledger: Mutex<Ledger>,
    acked: Condvar,
}

impl Book {
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Ledger>> {
        self.ledger.lock()
    }

    /// Waits until `n` more writes than `before` were acknowledged, a multipart
    /// upload among them.
    fn wait_for(&self, before: usize, n: usize) {
        let guard = self.lock().unwrap();
        let multipart = guard.multipart;
        let (guard, timeout) = self
            .acked
            .wait_timeout_while(guard, Duration::from_secs(120), |l| {
                l.acknowledged < before + n || l.multipart == multipart
            })
            .unwrap();
        drop(guard);
        assert!(
            !timeout.timed_out(),
            "{n} writes and a multipart upload acknowledged in 2 minutes"
        );
    }
}

type Shared = Arc<Book>;

fn doc_writer(port: u16, w: usize, round: usize, ledger: Shared, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("d{w}-{}", n as usize % IDS_PER_WRITER);
        let data = json!({"w": w, "round": round, "n": n, "pad": "x".repeat(200 + (n as usize % 7) * 300)});
        let base = ledger
            .lock()
            .unwrap()
            .docs
            .get(&id)
            .and_then(|d| d.acked.clone());
        let body = json!({"data": data, "baseHash": base.map(|(h, _)| h)});
        ledger
            .lock()
            .unwrap()
            .docs
            .entry(id.clone())
            .or_default()
            .in_flight = Some(data.clone());
        match call(
            port,
            "POST",
            &format!("/push/docs/{id}"),
            "application/json",
            body.to_string().as_bytes(),
        ) {
            Ok((200, _, answer)) => {
                let hash = json_of(&answer)["hash"].as_str().unwrap().to_owned();
                let mut l = ledger.lock().unwrap();
                l.docs.insert(
                    id,
                    DocState {
                        acked: Some((hash, data)),
                        in_flight: None,
                    },
                );
                l.acknowledged += 1;
                ledger.acked.notify_all();
            }
            Ok((status, _, answer)) => {
                panic!("push {id}: {status} {}", String::from_utf8_lossy(&answer))
            }
            Err(_) => return, // killed: the push stays in flight
        }
        n += 1;
    }
}

fn appender(port: u16, w: usize, round: usize, ledger: Shared, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    let writer = (round * APPENDERS + w) as u64;
    while !stop.load(Ordering::Relaxed) {
        // Its own log, and one all appenders share.
        let log = if i % 2 == 0 {
            format!("l{w}")
        } else {
            "shared".to_owned()
        };
        let element = (writer, i);
        ledger
            .lock()
            .unwrap()
            .logs
            .entry(log.clone())
            .or_default()
            .in_flight
            .insert(element);
        let body = json!({"data": {"writer": writer, "i": i}});
        match call(
            port,
            "POST",
            &format!("/push/log/{log}"),
            "application/json",
            body.to_string().as_bytes(),
        ) {
            Ok((200, _, answer)) => {
                let ts = json_of(&answer)["timestamp"].as_u64().unwrap();
                let mut l = ledger.lock().unwrap();
                let state = l.logs.get_mut(&log).unwrap();
                state.in_flight.remove(&element);
                state.acked.insert(element, ts);
                l.acknowledged += 1;
                ledger.acked.notify_all();
            }
            Ok((status, _, answer)) => panic!(
                "append to {log}: {status} {}",
                String::from_utf8_lossy(&answer)
            ),
            Err(_) => return,
        }
        i += 1;
    }
}

fn uploader(port: u16, w: usize, round: usize, ledger: Shared, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("b{w}-{}", n as usize % IDS_PER_WRITER);
        let bytes = blob_bytes(w, round, n);
        let sha = sha256_hex(&bytes);
        ledger
            .lock()
            .unwrap()
            .blobs
            .entry(id.clone())
            .or_default()
            .in_flight = Some(sha.clone());
        match call(
            port,
            "POST",
            &format!("/push/files/{id}"),
            "application/octet-stream",
            &bytes,
        ) {
            Ok((200, _, answer)) => {
                assert_eq!(json_of(&answer)["hash"], sha.as_str());
                let mut l = ledger.lock().unwrap();
                l.blobs.insert(
                    id,
                    BlobState {
                        acked: Some(sha),
                        in_flight: None,
                    },
                );
                l.multipart += usize::from(bytes.len() > 5 * 1024 * 1024);
                l.acknowledged += 1;
                ledger.acked.notify_all();
            }
            Ok((status, _, answer)) => {
                panic!("upload {id}: {status} {}", String::from_utf8_lossy(&answer))
            }
            Err(_) => return,
        }
        n += 1;
    }
}

/// After a restart: every acknowledged write is there as acknowledged, a write in
/// flight at the kill wholly there or wholly absent. Settles the ledger (what is
/// there now is what the next round builds on); returns how many writes in flight
/// had landed.
fn verify(port: u16, ledger: &mut Ledger) -> usize {
    let mut landed = 0;
    for (id, state) in &mut ledger.docs {
        let (status, _, body) = get(port, &format!("/pull/docs/{id}"));
        assert_eq!(status, 200, "pull docs/{id}");
        let doc = json_of(&body);
        let hash = doc["hash"].as_str().unwrap().to_owned();
        let data = doc["data"].clone();
        let is_acked = state
            .acked
            .as_ref()
            .is_some_and(|(h, d)| *h == hash && *d == data);
        let is_in_flight = state.in_flight.as_ref() == Some(&data);
        let never_acked = state.acked.is_none() && hash.is_empty();
        landed += usize::from(is_in_flight && !is_acked);
        assert!(
            is_acked || is_in_flight || never_acked,
            "docs/{id}: found {hash} {data}, acknowledged {:?}",
            state.acked
        );
        state.acked = (!hash.is_empty()).then_some((hash, data));
        state.in_flight = None;
    }
    for (log, state) in &mut ledger.logs {
        let (status, _, body) = get(port, &format!("/pull/log/{log}?checkpoint=0"));
        assert_eq!(status, 200, "pull log/{log}");
        let pulled = json_of(&body);
        let items = match pulled["data"]["items"].as_array() {
            Some(items) => items.clone(),
            None => {
                assert!(state.acked.is_empty(), "log/{log}: no items in {pulled}");
                Vec::new()
            }
        };
        let mut seen = BTreeSet::new();
        let mut last_ts = 0;
        for item in &items {
            let ts = item["ts"].as_u64().unwrap();
            assert!(ts > last_ts, "log/{log}: timestamps strictly increase");
            last_ts = ts;
            let element = (
                item["data"]["writer"].as_u64().unwrap(),
                item["data"]["i"].as_u64().unwrap(),
            );
            assert!(seen.insert(element), "log/{log}: {element:?} twice");
            match state.acked.get(&element) {
                Some(&acked_ts) => assert_eq!(ts, acked_ts, "log/{log}: {element:?}"),
                None => {
                    assert!(
                        state.in_flight.contains(&element),
                        "log/{log}: {element:?} was never sent"
                    );
                    landed += 1;
                }
            }
        }
        for element in state.acked.keys() {
            assert!(
                seen.contains(element),
                "log/{log}: acknowledged {element:?} lost"
            );
        }
        // An in-flight element that landed is as good as acknowledged now.
        for item in &items {
            let element = (
                item["data"]["writer"].as_u64().unwrap(),
                item["data"]["i"].as_u64().unwrap(),
            );
            let ts = item["ts"].as_u64().unwrap();
            state.acked.entry(element).or_insert(ts);
        }
        state.in_flight.clear();
    }
    for (id, state) in &mut ledger.blobs {
        let (status, head, body) = get(port, &format!("/pull/files/{id}"));
        if status == 404 {
            assert!(state.acked.is_none(), "files/{id}: acknowledged blob lost");
            state.in_flight = None;
            continue;
        }
        assert_eq!(status, 200, "pull files/{id}");
        let sha = sha256_hex(&body);
        assert!(
            head.contains(&format!("etag: \"{sha}\"")),
            "files/{id}: the ETag is the bytes' hash\n{head}"
        );
        let is_acked = state.acked.as_ref() == Some(&sha);
        let is_in_flight = state.in_flight.as_ref() == Some(&sha);
        assert!(
            is_acked || is_in_flight,
            "files/{id}: found {sha}, acknowledged {:?}",
            state.acked
        );
        landed += usize::from(is_in_flight && !is_acked);
        state.acked = Some(sha);
        state.in_flight = None;
    }
    landed
}

/// Every object in the data directory reads back through the server without a 5xx;
/// returns the staging files killed writes left behind.
fn every_object_reads_back(port: u16, data: &Path) -> usize {
    let mut staging = 0;
    let mut pulls = BTreeSet::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(data)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative.contains('#') {
                staging += 1; // LocalFileSystem's staging file: never listed nor read
                continue;
            }
            let mut parts = relative.splitn(2, '/');
            let (collection, rest) = (parts.next().unwrap(), parts.next().unwrap());
            let id = rest.split(['/', '.']).next().unwrap();
            let id = id.strip_suffix("__seg").unwrap_or(id);
            pulls.insert(match collection {
                "docs" => format!("/pull/docs/{id}"),
                "log" => format!("/pull/log/{id}?checkpoint=0"),
                "files" => format!("/pull/files/{id}"),
                other => panic!("unexpected object {other}/{rest}"),
            });
        }
    }
    assert!(!pulls.is_empty());
    for path in pulls {
        let (status, head, body) = get(port, &path);
        assert_eq!(status, 200, "{path}: {head}");
        if !path.starts_with("/pull/files/") {
            json_of(&body);
        }
    }
    staging
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crash.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let ledger: Shared = Arc::default();
    for round in 0..ROUNDS {
        // Odd rounds with --fsync: the durable mode takes the same kills.
        let flags: &[&str] = if round % 2 == 1 { &["--fsync"] } else { &[] };
        let mut server = Server::start_with(&config, &data, flags);
        let port = server.port;
        let landed = verify(port, &mut ledger.lock().unwrap());
        if round > 0 {
            eprintln!(
                "  restarted: every acknowledged write there, {landed} of those in flight landed"
            );
        }
        let before = ledger.lock().unwrap().acknowledged;

        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for w in 0..DOC_WRITERS {
            let (l, s) = (ledger.clone(), stop.clone());
            clients.push(std::thread::spawn(move || doc_writer(port, w, round, l, s)));
        }
        for w in 0..APPENDERS {
            let (l, s) = (ledger.clone(), stop.clone());
            clients.push(std::thread::spawn(move || appender(port, w, round, l, s)));
        }
        for w in 0..UPLOADERS {
            let (l, s) = (ledger.clone(), stop.clone());
            clients.push(std::thread::spawn(move || uploader(port, w, round, l, s)));
        }
        // Let writes flow, then kill: at a different point of the stream each round.
        ledger.wait_for(before, 100 + 50 * round);
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("a client saw a wrong answer");
        }
        let l = ledger.lock().unwrap();
        let in_flight = l.docs.values().filter(|d| d.in_flight.is_some()).count()
            + l.logs.values().map(|g| g.in_flight.len()).sum::<usize>()
            + l.blobs.values().filter(|b| b.in_flight.is_some()).count();
        eprintln!(
            "round {round}{}: {} writes acknowledged, {in_flight} in flight at the kill",
            if flags.is_empty() { "" } else { " (--fsync)" },
            l.acknowledged - before,
        );
        assert!(l.acknowledged > before, "round {round} acknowledged writes");
    }
    let multipart = ledger.lock().unwrap().multipart;
    let server = Server::start_with(&config, &data, &[]);
    let landed = verify(server.port, &mut ledger.lock().unwrap());
    let staging = every_object_reads_back(server.port, &data);
    eprintln!(
        "  restarted: every acknowledged write there, {landed} of those in flight landed; \
         every object reads back; {staging} staging files left behind; \
         {multipart} multipart uploads acknowledged in all"
    );
    assert!(server.terminate().success());
}
