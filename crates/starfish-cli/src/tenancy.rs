//! `starfish serve`'s tenancy settings (isolation, the admin key, per-namespace
//! stores) and the `starfish admin` subcommands, which call the admin API.

use clap::{Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use starfish_server::store::{DocStore, StoreError};
use starfish_server::{Isolation, SyncConfig, SyncOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// `serve` flags; each also a `STARFISH_*` variable and a key of `server.tenancy`.
#[derive(clap::Args)]
pub(crate) struct TenancyArgs {
    /// Isolation of namespaces that do not set their own: `shared` (the reference's
    /// meaning), `prefixed` (each under its own prefix) or `store` (each in its own
    /// directory under --namespace-store-dir) [default: the config's `isolation`].
    #[arg(long, value_enum, env = "STARFISH_ISOLATION")]
    isolation: Option<IsolationArg>,
    /// With `store` isolation on the filesystem: namespace N lives in DIR/N.
    #[arg(long, env = "STARFISH_NAMESPACE_STORE_DIR", value_name = "DIR")]
    namespace_store_dir: Option<PathBuf>,
    /// A file holding the admin key: turns on the admin API under `/_starfish/admin/`
    /// and API keys. `STARFISH_ADMIN_KEY` gives the key itself.
    #[arg(long, env = "STARFISH_ADMIN_KEY_FILE")]
    admin_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IsolationArg {
    Shared,
    Prefixed,
    Store,
}

impl From<IsolationArg> for Isolation {
    fn from(i: IsolationArg) -> Self {
        match i {
            IsolationArg::Shared => Self::Shared,
            IsolationArg::Prefixed => Self::Prefixed,
            IsolationArg::Store => Self::Store,
        }
    }
}

/// `server.tenancy` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TenancySection {
    isolation: Option<IsolationArg>,
    namespace_store_dir: Option<PathBuf>,
    admin_key_file: Option<PathBuf>,
}

/// The effective tenancy settings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenancySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    isolation: Option<IsolationArg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_store_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_key_file: Option<PathBuf>,
    /// Only whether one is set (printed masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_key: Option<&'static str>,
}

impl TenancySettings {
    /// Flags and environment over the section; `beside` resolves the section's paths.
    pub(crate) fn resolve(
        args: TenancyArgs,
        section: TenancySection,
        beside: impl Fn(PathBuf) -> PathBuf,
    ) -> Self {
        let admin_key_file = args
            .admin_key_file
            .or_else(|| section.admin_key_file.map(&beside));
        let has_env_key = std::env::var_os("STARFISH_ADMIN_KEY").is_some_and(|v| !v.is_empty());
        Self {
            isolation: args.isolation.or(section.isolation),
            namespace_store_dir: args
                .namespace_store_dir
                .or_else(|| section.namespace_store_dir.map(&beside)),
            admin_key: (has_env_key || admin_key_file.is_some()).then_some(crate::settings::MASK),
            admin_key_file,
        }
    }

    /// The admin key: `STARFISH_ADMIN_KEY`, else the file's first line.
    fn admin_key(&self) -> Result<Option<String>, String> {
        if let Some(key) = std::env::var("STARFISH_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty())
        {
            return checked_key(key);
        }
        let Some(path) = &self.admin_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read admin key file {}: {e}", path.display()))?;
        checked_key(text.lines().next().unwrap_or("").trim().to_owned())
    }

    /// `config` with the isolation these settings choose (its warnings follow).
    pub(crate) fn isolate(&self, config: SyncConfig) -> SyncConfig {
        match self.isolation {
            Some(isolation) => config.with_isolation(isolation.into()),
            None => config,
        }
    }

    /// Applies namespace stores and the admin key to `options`.
    pub(crate) fn apply(&self, mut options: SyncOptions) -> Result<SyncOptions, String> {
        if let Some(dir) = self.namespace_store_dir.clone() {
            options = options.with_namespace_stores(Arc::new(
                move |name: &str| -> Result<DocStore, StoreError> { local_store(&dir.join(name)) },
            ));
        }
        if let Some(key) = self.admin_key()? {
            options = options.with_admin_key(key);
        }
        Ok(options)
    }
}

#[cfg(feature = "fs")]
fn local_store(dir: &std::path::Path) -> Result<DocStore, StoreError> {
    DocStore::local(dir)
}

#[cfg(not(feature = "fs"))]
fn local_store(_dir: &std::path::Path) -> Result<DocStore, StoreError> {
    Err(StoreError::KeyConflict(
        "this build lacks the `fs` feature for --namespace-store-dir".into(),
    ))
}

/// An admin key must be long enough not to be guessed.
fn checked_key(key: String) -> Result<Option<String>, String> {
    if key.len() < 16 {
        return Err("the admin key must have at least 16 characters".into());
    }
    Ok(Some(key))
}

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

/// Runs `starfish admin`; prints the answer's JSON.
pub(crate) fn admin(args: AdminArgs) -> Result<(), String> {
    let command = match args.command {
        AdminCommand::RotateKeys(rotate) => return crate::rotate::run(*rotate),
        other => other,
    };
    let key = match std::env::var("STARFISH_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(k) => k,
        None => {
            let path = args
                .key_file
                .as_ref()
                .ok_or("give the admin key: --key-file or STARFISH_ADMIN_KEY")?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            text.lines().next().unwrap_or("").trim().to_owned()
        }
    };
    let ns = |n: &str| format!("/_starfish/admin/namespaces/{n}");
    let (method, path, body) = match command {
        AdminCommand::Namespaces(c) => match c {
            NamespaceCommand::List { usage, after } => {
                let mut q = format!("?usage={usage}");
                if let Some(a) = after {
                    q.push_str(&format!("&after={a}"));
                }
                ("GET", format!("/_starfish/admin/namespaces{q}"), None)
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
                ("POST", "/_starfish/admin/namespaces".to_owned(), Some(body))
            }
            NamespaceCommand::Show { name } => ("GET", ns(&name), None),
            NamespaceCommand::Suspend { name } => ("POST", ns(&name) + "/suspend", None),
            NamespaceCommand::Resume { name } => ("POST", ns(&name) + "/resume", None),
            NamespaceCommand::Delete { name } => ("DELETE", ns(&name), None),
            NamespaceCommand::Quota {
                name,
                max_bytes,
                max_documents,
            } => (
                "PUT",
                ns(&name) + "/quota",
                Some(json!({"maxBytes": max_bytes, "maxDocuments": max_documents})),
            ),
        },
        AdminCommand::RotateKeys(_) => unreachable!("handled above"),
        AdminCommand::Keys(c) => match c {
            KeyCommand::Create {
                grants: specs,
                admin,
                expires_at,
                label,
            } => {
                let body = json!({"grants": grants(&specs)?, "admin": admin,
                                  "expiresAt": expires_at, "label": label});
                ("POST", "/_starfish/admin/keys".to_owned(), Some(body))
            }
            KeyCommand::Show { id } => ("GET", format!("/_starfish/admin/keys/{id}"), None),
            KeyCommand::Revoke { id } => {
                ("POST", format!("/_starfish/admin/keys/{id}/revoke"), None)
            }
        },
    };
    let (status, text) = http(&args.url, method, &path, &key, body.as_ref())?;
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

/// One HTTP/1.1 request over plain TCP, `Connection: close`.
fn http(
    url: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = std::net::TcpStream::connect(&addr)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {base}{path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP answer")?;
    Ok((status, body.to_owned()))
}
