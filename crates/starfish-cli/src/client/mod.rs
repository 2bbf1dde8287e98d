//! A minimal Starfish client on `starfish-protocol`: `starfish identity new`, and
//! signed `pull`, `push`, `append` and `watch` against any Starfish server (this one
//! or the reference).
//!
//! ```text
//! starfish identity new me.json
//! starfish push 'users/{identity}/notes' '{"title":"hi"}' --identity me.json
//! starfish pull 'users/{identity}/notes' --identity me.json
//! ```
//!
//! `{identity}` in a path is the identity's user id. A request is signed when an
//! identity is given (`--identity` or `STARFISH_IDENTITY`), anonymous otherwise.

pub(crate) mod http;

use clap::{Args, Subcommand};
use http::ServerUrl;
use serde_json::{Value, json};
use starfish_protocol::author::APPEND_AUTHOR_DOMAIN;
use starfish_protocol::identity::{Identity, fresh_nonce};
use starfish_protocol::signing::SignedRequest;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where requests go and who signs them.
#[derive(Args, Debug, Clone)]
pub(crate) struct Remote {
    /// The identity that signs requests (`starfish identity new FILE`); without one,
    /// requests are anonymous.
    #[arg(long, env = "STARFISH_IDENTITY")]
    identity: Option<PathBuf>,
    /// The server: `http://host[:port][/base-path]`.
    #[arg(long, env = "STARFISH_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A namespace: requests go to `/<namespace>/...`.
    #[arg(long, env = "STARFISH_NAMESPACE")]
    namespace: Option<String>,
}

/// `starfish identity ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum IdentityCommand {
    /// Make a new identity (a root key, a device key and its 30-day device
    /// certificate) and write it to FILE, readable by you alone (0600). Never
    /// overwrites a file.
    New {
        /// Where to write it.
        file: PathBuf,
    },
    /// Print an identity's user id and when its certificate expires.
    Show {
        /// The identity file.
        file: PathBuf,
    },
}

/// The document commands: `pull`, `push`, `append`, `watch`.
#[derive(Subcommand, Debug)]
pub(crate) enum DocCommand {
    /// Pull a document: print the server's answer (`data`, `hash`, `timestamp`).
    Pull {
        /// The document's path, as its collection's `storagePath` resolves it
        /// (`users/{identity}/notes`), not the collection's name; a query may
        /// follow (`?last=10` for an append-only log).
        path: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Push a document's data. Without `--base-hash`, the current hash is pulled
    /// first, so the push replaces what is stored (a write in between is a `409`).
    Push {
        /// The document's path.
        path: String,
        /// The data: a JSON object, `@FILE`, or `-` for standard input.
        data: String,
        /// The hash the push is based on (`""` or `null` for a new document).
        #[arg(long)]
        base_hash: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Append an element to an append-only log, signed as its author by the
    /// identity's device key.
    Append {
        /// The log's path.
        path: String,
        /// The element: a JSON object, `@FILE`, or `-` for standard input.
        data: String,
        /// The element's timestamp in ms (default: the server's clock).
        #[arg(long)]
        ts: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow live changes of documents (`GET /events`): print one JSON line per
    /// change, reconnecting when the stream ends.
    Watch {
        /// The documents' paths.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs `starfish identity ...`.
pub(crate) fn identity(command: IdentityCommand) -> Result<(), String> {
    match command {
        IdentityCommand::New { file } => {
            let identity = Identity::generate(now_ms() / 1000).map_err(|e| e.to_string())?;
            write_private(&file, &identity.to_json())?;
            println!("{}", identity.user_id());
            eprintln!(
                "wrote {} (keep it private: it holds your keys)",
                file.display()
            );
            Ok(())
        }
        IdentityCommand::Show { file } => {
            let identity = read_identity(&file)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "userId": identity.user_id(),
                    "certExpires": identity.cert_expiry(),
                }))
                .map_err(|e| e.to_string())?
            );
            Ok(())
        }
    }
}

/// Runs a document command on a runtime of its own.
pub(crate) fn run(command: DocCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async move {
        match command {
            DocCommand::Pull { path, remote } => {
                let client = Client::new(&remote)?;
                let answer = client.pull(&path).await?;
                print_json(&answer)
            }
            DocCommand::Push {
                path,
                data,
                base_hash,
                remote,
            } => {
                let client = Client::new(&remote)?;
                let answer = client.push(&path, read_data(&data)?, base_hash).await?;
                print_json(&answer)
            }
            DocCommand::Append {
                path,
                data,
                ts,
                remote,
            } => {
                let client = Client::new(&remote)?;
                let answer = client.append(&path, read_data(&data)?, ts).await?;
                print_json(&answer)
            }
            DocCommand::Watch {
                paths,
                count,
                remote,
            } => Client::new(&remote)?.watch(&paths, count).await,
        }
    })
}

/// A server, a namespace and an identity.
struct Client {
    server: ServerUrl,
    namespace: Option<String>,
    identity: Option<Identity>,
}

impl Client {
    fn new(remote: &Remote) -> Result<Self, String> {
        let identity = remote.identity.as_deref().map(read_identity).transpose()?;
        let identity = identity.map(fresh_cert).transpose()?;
        Ok(Self {
            server: ServerUrl::parse(&remote.url)?,
            namespace: remote.namespace.clone(),
            identity,
        })
    }

    /// `{identity}` replaced by the identity's user id; no leading `/`.
    fn document_path(&self, path: &str) -> Result<String, String> {
        let path = path.trim_start_matches('/');
        if !path.contains("{identity}") {
            return Ok(path.to_owned());
        }
        let identity = self
            .identity
            .as_ref()
            .ok_or("the path names {identity}: give --identity")?;
        Ok(path.replace("{identity}", &identity.user_id()))
    }

    /// `<base>[/<namespace>]/<action>`.
    fn route(&self, action: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{action}", self.server.base),
            None => format!("{}/{action}", self.server.base),
        }
    }

    /// Sends a request, signed when there is an identity.
    async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        self.send_with(method, path_and_query, &[], body).await
    }

    /// [`Client::send`] with `extra` headers (not signed: the signature covers the
    /// method, path, body, host and time).
    async fn send_with(
        &self,
        method: &str,
        path_and_query: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let signed = match &self.identity {
            None => None,
            Some(identity) => {
                let nonce = fresh_nonce().map_err(|e| e.to_string())?;
                let ts = i64::try_from(now_ms()).map_err(|e| e.to_string())?;
                Some(identity.sign(&SignedRequest {
                    method,
                    path_and_query,
                    body: &body,
                    host: &self.server.authority,
                    ts,
                    nonce: &nonce,
                }))
            }
        };
        let mut headers: Vec<(&str, &str)> = signed.iter().flat_map(|h| h.pairs()).collect();
        headers.extend_from_slice(extra);
        http::send(&self.server, method, path_and_query, &headers, body).await
    }

    /// Sends a request and reads its whole JSON answer; a status other than 2xx is
    /// an error with the server's body.
    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<Value, String> {
        let response = self.send(method, path_and_query, body).await?;
        let (status, bytes) = http::whole(response).await?;
        let text = String::from_utf8_lossy(&bytes);
        if !(200..300).contains(&status) {
            return Err(format!("{status}: {}", text.trim()));
        }
        serde_json::from_slice(&bytes).map_err(|_| format!("{status}: not JSON: {}", text.trim()))
    }

    async fn pull(&self, path: &str) -> Result<Value, String> {
        let path = self.document_path(path)?;
        self.call("GET", &format!("{}/{path}", self.route("pull")), Vec::new())
            .await
    }

    async fn push(
        &self,
        path: &str,
        data: Value,
        base_hash: Option<String>,
    ) -> Result<Value, String> {
        let base_hash = match base_hash {
            Some(hash) if hash == "null" => Value::Null,
            Some(hash) => Value::String(hash),
            None => self.pull(path).await?["hash"].clone(),
        };
        let path = self.document_path(path)?;
        let body = json!({"data": data, "baseHash": base_hash});
        self.call(
            "POST",
            &format!("{}/{path}", self.route("push")),
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn append(&self, path: &str, item: Value, ts: Option<u64>) -> Result<Value, String> {
        let path = self.document_path(path)?;
        let mut body = json!({"data": item});
        if let Some(ts) = ts {
            body["ts"] = json!(ts);
        }
        if let Some(identity) = &self.identity {
            let (key, signature) =
                identity.author_proof(APPEND_AUTHOR_DOMAIN, &body["data"], &path);
            body["authorPubkey"] = json!(key);
            body["authorSignature"] = json!(signature);
        }
        self.call(
            "POST",
            &format!("{}/{path}", self.route("push")),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Follows `/events` for `paths`: prints each change's JSON on a line of its
    /// own; reconnects (1 s, doubling to 30 s) when the stream ends or the server
    /// is busy, with `Last-Event-ID` (the changes made meanwhile come first; further
    /// behind than the server remembers, a `{"pull":true}` line says to pull);
    /// stops on a refusal (`4xx` but `429`) or after `count` changes.
    async fn watch(&self, paths: &[String], count: Option<u64>) -> Result<(), String> {
        let paths: Vec<String> = paths
            .iter()
            .map(|p| self.document_path(p))
            .collect::<Result<_, _>>()?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("paths", &paths.join(","))
            .finish();
        let target = format!("{}?{query}", self.route("events"));
        let mut seen = 0u64;
        let mut events = SseReader::default();
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.follow(&target, count, &mut seen, &mut events).await {
                Ok(Followed::Done) => return Ok(()),
                Ok(Followed::Ended) => backoff = Duration::from_secs(1),
                Err(Refused::Finally(message)) => return Err(message),
                Err(Refused::ForNow(message)) => eprintln!("{message}; reconnecting"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One stream of `/events`, printed until it ends.
    async fn follow(
        &self,
        target: &str,
        count: Option<u64>,
        seen: &mut u64,
        events: &mut SseReader,
    ) -> Result<Followed, Refused> {
        events.pending.clear();
        let last = events.last_id.clone();
        let resume: Vec<(&str, &str)> = last
            .iter()
            .map(|id| ("last-event-id", id.as_str()))
            .collect();
        let response = self
            .send_with("GET", target, &resume, Vec::new())
            .await
            .map_err(Refused::ForNow)?;
        let status = response.status().as_u16();
        if status != 200 {
            let (_, body) = http::whole(response).await.map_err(Refused::ForNow)?;
            let message = format!("{status}: {}", String::from_utf8_lossy(&body).trim());
            return Err(if status == 429 || status >= 500 {
                Refused::ForNow(message)
            } else {
                Refused::Finally(message)
            });
        }
        let mut body = response.into_body();
        while let Some(chunk) = http::next_chunk(&mut body).await.map_err(Refused::ForNow)? {
            for data in events.push(&chunk) {
                println!("{data}");
                let _ = std::io::stdout().flush();
                *seen += 1;
                if count.is_some_and(|c| *seen >= c) {
                    return Ok(Followed::Done);
                }
            }
        }
        Ok(Followed::Ended)
    }
}

/// How a stream of changes ended.
enum Followed {
    /// The count asked for was reached.
    Done,
    /// The server ended it (it does every 15 minutes, and at shutdown).
    Ended,
}

/// Why a stream could not be followed.
enum Refused {
    /// Try again later: unreachable, busy (`429`) or failing (`5xx`).
    ForNow(String),
    /// The server refused the subscription (`4xx`): trying again would not help.
    Finally(String),
}

/// Server-Sent Events read from pieces of a body: the `data` of each event, and
/// the last `id` the server gave (sent back as `Last-Event-ID` on reconnecting).
#[derive(Default)]
struct SseReader {
    pending: String,
    last_id: Option<String>,
}

impl SseReader {
    /// Adds `chunk`; returns the data of every event it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending
            .push_str(&String::from_utf8_lossy(chunk).replace("\r\n", "\n"));
        let mut out = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let event: String = self.pending.drain(..end + 2).collect();
            let id = event.lines().rev().find_map(|l| l.strip_prefix("id:"));
            if let Some(id) = id {
                self.last_id = Some(id.strip_prefix(' ').unwrap_or(id).to_owned());
            }
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

/// Milliseconds since the epoch, by the system clock.
fn now_ms() -> u64 {
    use starfish_server::auth::Clock as _;
    starfish_server::auth::SystemClock.now_ms()
}

/// An identity whose certificate is good for at least ten more minutes: an
/// expired one is reissued (in memory) by its root key.
fn fresh_cert(mut identity: Identity) -> Result<Identity, String> {
    if identity.cert_expiry() < now_ms() / 1000 + 600 {
        identity
            .reissue(now_ms() / 1000)
            .map_err(|e| e.to_string())?;
    }
    Ok(identity)
}

pub(crate) fn read_identity(file: &Path) -> Result<Identity, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the identity {}: {e}", file.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
    Identity::from_json(&value).map_err(|e| format!("{}: {e}", file.display()))
}

/// Writes `value` to a new file only its owner may read.
fn write_private(file: &Path, value: &Value) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; not overwriting it", file.display())
        } else {
            format!("cannot write {}: {e}", file.display())
        }
    })?;
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    out.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// The data argument: JSON text, `@FILE` or `-` (standard input); an object.
fn read_data(arg: &str) -> Result<Value, String> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else if let Some(file) = arg.strip_prefix('@') {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    } else {
        arg.to_owned()
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("the data is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("the data must be a JSON object".into());
    }
    Ok(value)
}

fn print_json(value: &Value) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_and_comments_are_skipped() {
        let mut sse = SseReader::default();
        assert!(sse.push(b": connected\n\ndata: {\"a\"").is_empty());
        assert_eq!(sse.push(b":1}\n\n: keep-alive\n\n"), ["{\"a\":1}"]);
        assert_eq!(sse.push(b"id: 7\r\ndata: x\r\n\r\ndata: y\n\n"), ["x", "y"]);
        assert_eq!(sse.last_id.as_deref(), Some("7"));
        assert!(sse.push(b": connected\nid: 9-1-ab\n\n").is_empty());
        assert_eq!(sse.last_id.as_deref(), Some("9-1-ab"));
    }

    #[test]
    fn data_must_be_an_object() {
        assert!(read_data("{\"a\":1}").is_ok());
        assert!(read_data("[1]").is_err());
        assert!(read_data("nope").is_err());
    }
}
