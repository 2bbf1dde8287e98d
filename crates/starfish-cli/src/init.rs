//! `starfish init`: a commented starter config.

use std::io::Write;
use std::path::Path;

/// The starter config: a public guestbook, per-user notes, and a `server:` section.
pub(crate) const TEMPLATE: &str = r#"# A Starfish sync config, written by `starfish init`.
#
#   starfish check-config FILE      validate it (and print its warnings)
#   starfish serve --config FILE    serve it on http://127.0.0.1:8080
#
# `version`, `collections` and `namespaces` are the reference server's SyncConfig
# (docs/configuration.md): clients and the reference server read them as they are.
# `server:` holds the starfish binary's own settings (docs/operations.md); the
# reference ignores it. Every server setting may also be given as a flag or as a
# STARFISH_* environment variable, which win over this file:
#   flag (--port 9000) > environment (STARFISH_PORT=9000) > server: section > default.
version: 1
collections:
  # A public guestbook: anyone may read and sign a room, without credentials.
  #   curl -X POST http://127.0.0.1:8080/push/guestbook/lobby \
  #        -H 'content-type: application/json' -d '{"data":{"msg":"hi"},"baseHash":null}'
  #   curl http://127.0.0.1:8080/pull/guestbook/lobby
  # (check-config warns about the public write role: that is a guestbook's point.)
  - name: guestbook
    storagePath: "guestbook/{room}"
    readRoles: [public]
    writeRoles: [public]
    maxBodyBytes: 16384     # bytes per document
    cacheDurationMs: 5000   # Cache-Control max-age on pulls

  # Each user's own notes: only a caller whose capability certificate is bound to
  # {identity} may read or write /pull|push/users/<identity>/notes.
  - name: notes
    storagePath: "users/{identity}/notes"
    readRoles: [self]
    writeRoles: [self]
    maxBodyBytes: 65536

server:
  host: 127.0.0.1           # 0.0.0.0 to listen on every interface
  port: 8080                # 0 picks a free port
  store: fs                 # fs | memory | s3
  data: ./data              # the fs store's directory, relative to this file
  fsync: false              # true: each write on disk before it is acknowledged (slower)
  # basePath: /v1           # mount the routes under a prefix (or a list of them)
  # configEndpoint: public  # serve GET /config (public | role-filtered)
  # openapiEndpoint: true   # serve GET /openapi.json
  # trustedProxyHops: 1     # behind one reverse proxy: client IP from X-Forwarded-For
  #
  # With `store: s3`: any S3-compatible bucket. Unset keys fall back to the standard
  # AWS_* variables; credentials come from the AWS chain (AWS_ACCESS_KEY_ID and
  # AWS_SECRET_ACCESS_KEY, web identity, container or instance credentials) and
  # never belong in this file.
  # s3:
  #   bucket: my-starfish-documents
  #   endpoint: http://127.0.0.1:9000   # MinIO, say (http:// allows plain HTTP); omit for AWS
  #   region: us-east-1
  #   pathStyle: true                   # false: virtual-hosted-style requests
  #
  # Capability-certificate authentication; these are the reference's defaults.
  auth:
    noAnonymous: false        # true: 401 for requests without Authorization: Cap
    maxSkewMs: 300000         # allowed client clock skew
    maxSignedBodyBytes: 65536 # largest signed JSON write
    # publicHost: sync.example.com   # verify signatures against this host (proxies)
  #
  # Slow and many clients (docs/operations.md); durations in seconds.
  limits:
    headerReadTimeout: 10     # to send a request's line and headers
    idleTimeout: 60           # a kept-alive connection idle longer is closed
    maxConnections: 10000     # past it, new connections wait to be accepted
    requestTimeout: 30        # a whole request, body included (408 past it)
    maxInFlight: 1024         # requests handled at once (503 past it)
"#;

/// Writes the starter config to `path`; never replaces an existing file.
pub(crate) fn init(path: &Path) -> Result<(), String> {
    if path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
    {
        return Err(format!(
            "{}: init writes YAML; give the file a .yaml name",
            path.display()
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} already exists; not overwriting it (remove it or name another file)",
                path.display()
            ),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    file.write_all(TEMPLATE.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let shown = path.display();
    println!("Wrote {shown}: a public guestbook, per-user notes, and a server: section.");
    println!();
    println!("  starfish check-config {shown}       # validate it");
    println!("  starfish serve --config {shown}     # serve it on http://127.0.0.1:8080");
    println!();
    println!("Then sign the guestbook and read it back:");
    println!(
        "  curl -s -X POST http://127.0.0.1:8080/push/guestbook/lobby -H 'content-type: application/json' -d '{{\"data\":{{\"msg\":\"hello\"}},\"baseHash\":null}}'"
    );
    println!("  curl -s http://127.0.0.1:8080/pull/guestbook/lobby");
    Ok(())
}
