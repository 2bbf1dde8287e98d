//! `starfish admin`: calls the admin API of a running server (`/_starfish/admin/`),
//! one HTTP request per command, and prints the answer's JSON. `admin rotate-keys`
//! works on the store itself instead (`rotate.rs`).

use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// `starfish admin`: calls the admin API of a running server.
#[derive(clap::Args)]
pub(crate) struct AdminArgs {
    /// The server, with its mount prefix (`http://127.0.0.1:8080/v1`). Plain HTTP
    /// only: run it on the server's host or through a tunnel.
    #[arg(long, env = "STARFISH_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A file holding the admin key (or an admin API key); `STARFISH_ADMIN_KEY` gives
    /// the key itself.
    #[arg(long, env = "STARFISH_ADMIN_KEY_FILE")]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Namespaces: list, create, show, suspend, resume, delete.
    #[command(subcommand)]
    Namespaces(NamespaceCommand),
    /// API keys: create, show, revoke.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// A new data key for a namespace with `encryptAtRest`, and its objects sealed
    /// again under it (works on the store directly, as `serve` finds it; no admin key).
    RotateKeys(Box<crate::rotate::RotateArgs>),
    /// Projects COLLECTION's documents in NAMESPACE (`~`: the root) into their
    /// projections again (`server: projections:`), a page at a time until done;
    /// resumable with `--after` (the last key a page printed).
    Reproject {
        namespace: String,
        collection: String,
        /// Start after this source key.
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Subcommand)]
enum NamespaceCommand {
    /// One page of namespaces.
    List {
        /// Include objects and bytes per namespace (reads each namespace's listing).
        #[arg(long)]
        usage: bool,
        /// Start after this name.
        #[arg(long)]
        after: Option<String>,
    },
    /// Create NAME from a template of the config.
    Create {
        name: String,
        #[arg(long)]
        template: String,
        /// Only certificates from this root (public key hex or userId) act in it.
        #[arg(long = "trusted-root")]
        trusted_roots: Vec<String>,
    },
    /// One namespace with what it holds.
    Show { name: String },
    /// Its routes answer 403 until resumed.
    Suspend { name: String },
    /// Serve it again.
    Resume { name: String },
    /// Delete its data and itself.
    Delete { name: String },
    /// Set its quota (a limit left out: its template's).
    Quota {
        name: String,
        /// Most bytes it may hold.
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Most documents it may hold.
        #[arg(long)]
        max_documents: Option<u64>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// A new key; its token is printed once.
    Create {
        /// `NAMESPACE=RIGHT[,RIGHT]` (rights: read, write, list; `*` for every
        /// namespace). Repeat for several namespaces.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// May manage the namespaces it names and their keys.
        #[arg(long)]
        admin: bool,
        /// Expiry, ms since the epoch.
        #[arg(long)]
        expires_at: Option<u64>,
        #[arg(long)]
        label: Option<String>,
    },
    /// A key's grants, state and uses.
    Show { id: String },
    /// Revoke it.
    Revoke { id: String },
}

/// One call of the admin API.
struct AdminRequest {
    /// The HTTP method.
    method: &'static str,
    /// The path under the server's mount prefix, with its query.
    path: String,
    /// The JSON body, if the call has one.
    body: Option<Value>,
}

impl AdminRequest {
    /// A call without a body.
    fn new(method: &'static str, path: String) -> Self {
        Self {
            method,
            path,
            body: None,
        }
    }

    /// A call with a JSON body.
    fn with_body(method: &'static str, path: String, body: Value) -> Self {
        Self {
            method,
            path,
            body: Some(body),
        }
    }
}

/// Runs `starfish admin`; prints the answer's JSON.
pub(crate) fn run(args: AdminArgs) -> Result<(), String> {
    let request = match args.command {
        AdminCommand::RotateKeys(rotate) => return crate::rotate::run(*rotate),
        AdminCommand::Reproject {
            namespace,
            collection,
            after,
        } => {
            let key = admin_key(args.key_file.as_deref())?;
            return reproject(&args.url, &key, &namespace, &collection, after);
        }
        AdminCommand::Namespaces(command) => Ok(namespace_request(command)),
        AdminCommand::Keys(command) => key_request(command),
    };
    // The key is looked for first: without it no command can be sent.
    let key = admin_key(args.key_file.as_deref())?;
    let request = request?;
    let (status, text) = http(&args.url, &request, &key)?;
    print_answer(status, text)
}

/// Calls the reproject endpoint until it says done, printing each page's report
/// (the last key done, to resume from after an interruption).
fn reproject(
    url: &str,
    key: &str,
    namespace: &str,
    collection: &str,
    mut after: Option<String>,
) -> Result<(), String> {
    let mut errors = 0;
    loop {
        let query = after
            .as_deref()
            .map_or(String::new(), |a| format!("?after={a}"));
        let path = format!("/_starfish/admin/namespaces/{namespace}/reproject/{collection}{query}");
        let (status, text) = http(url, &AdminRequest::new("POST", path), key)?;
        if !(200..300).contains(&status) {
            return print_answer(status, text);
        }
        let report: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        println!("{report}");
        errors += report["errors"].as_array().map_or(0, Vec::len);
        if report["done"] == true {
            break;
        }
        after = report["after"].as_str().map(str::to_owned);
        if after.is_none() {
            break;
        }
    }
    if errors > 0 {
        return Err(format!(
            "{errors} documents were not projected (see the reports)"
        ));
    }
    Ok(())
}

/// The admin key: `STARFISH_ADMIN_KEY`, else the first line of `--key-file`.
fn admin_key(key_file: Option<&Path>) -> Result<String, String> {
    if let Some(key) = std::env::var("STARFISH_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        return Ok(key);
    }
    let path = key_file.ok_or("give the admin key: --key-file or STARFISH_ADMIN_KEY")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// The call of `starfish admin namespaces ...`.
fn namespace_request(command: NamespaceCommand) -> AdminRequest {
    let ns = |n: &str| format!("/_starfish/admin/namespaces/{n}");
    match command {
        NamespaceCommand::List { usage, after } => {
            let mut q = format!("?usage={usage}");
            if let Some(a) = after {
                q.push_str(&format!("&after={a}"));
            }
            AdminRequest::new("GET", format!("/_starfish/admin/namespaces{q}"))
        }
        NamespaceCommand::Create {
            name,
            template,
            trusted_roots,
        } => {
            let mut body = json!({"name": name, "template": template});
            if !trusted_roots.is_empty() {
                body["trustedRoots"] = json!(trusted_roots);
            }
            AdminRequest::with_body("POST", "/_starfish/admin/namespaces".to_owned(), body)
        }
        NamespaceCommand::Show { name } => AdminRequest::new("GET", ns(&name)),
        NamespaceCommand::Suspend { name } => AdminRequest::new("POST", ns(&name) + "/suspend"),
        NamespaceCommand::Resume { name } => AdminRequest::new("POST", ns(&name) + "/resume"),
        NamespaceCommand::Delete { name } => AdminRequest::new("DELETE", ns(&name)),
        NamespaceCommand::Quota {
            name,
            max_bytes,
            max_documents,
        } => AdminRequest::with_body(
            "PUT",
            ns(&name) + "/quota",
            json!({"maxBytes": max_bytes, "maxDocuments": max_documents}),
        ),
    }
}

/// The call of `starfish admin keys ...`; fails on a malformed `--grant`.
fn key_request(command: KeyCommand) -> Result<AdminRequest, String> {
    Ok(match command {
        KeyCommand::Create {
            grants: specs,
            admin,
            expires_at,
            label,
        } => {
            let body = json!({"grants": grants(&specs)?, "admin": admin,
                              "expiresAt": expires_at, "label": label});
            AdminRequest::with_body("POST", "/_starfish/admin/keys".to_owned(), body)
        }
        KeyCommand::Show { id } => AdminRequest::new("GET", format!("/_starfish/admin/keys/{id}")),
        KeyCommand::Revoke { id } => {
            AdminRequest::new("POST", format!("/_starfish/admin/keys/{id}/revoke"))
        }
    })
}

/// `--grant NAMESPACE=RIGHT[,RIGHT]` specs as the API's `grants` object.
fn grants(specs: &[String]) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for spec in specs {
        let (ns, rights) = spec
            .split_once('=')
            .ok_or_else(|| format!("--grant {spec:?}: expected NAMESPACE=RIGHT[,RIGHT]"))?;
        let rights: Vec<&str> = rights.split(',').filter(|r| !r.is_empty()).collect();
        out.insert(ns.to_owned(), json!(rights));
    }
    Ok(Value::Object(out))
}

/// Prints the answer (its JSON pretty-printed when it is JSON) on success; an answer
/// outside 2xx is the command's error.
fn print_answer(status: u16, text: String) -> Result<(), String> {
    let shown = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if (200..300).contains(&status) {
        println!("{shown}");
        Ok(())
    } else {
        Err(format!("{status}: {shown}"))
    }
}

/// One request with the admin key (the client subcommands' HTTP: hyper's client
/// connection, so a chunked answer reads as one): its status and body as text.
fn http(url: &str, request: &AdminRequest, key: &str) -> Result<(u16, String), String> {
    let server = crate::client::http::ServerUrl::parse(url)?;
    let AdminRequest { method, path, body } = request;
    let body = body
        .as_ref()
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    let authorization = format!("Bearer {key}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let path = format!("{}{path}", server.base);
        let headers = [("authorization", authorization.as_str())];
        let response = crate::client::http::send(&server, method, &path, &headers, body).await?;
        let (status, bytes) = crate::client::http::whole(response).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    })
}
