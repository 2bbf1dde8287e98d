//! An existing axum app that mounts Starfish under `/v1`, next to its own routes.
//! Documents go to `./example-data` in the reference server's file layout.

use axum::Router;
use axum::routing::get;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "settings", "storagePath": "users/{identity}/settings",
     "readRoles": ["self"], "writeRoles": ["self"], "maxBodyBytes": 65536},
    {"name": "news", "storagePath": "news/{day}", "readRoles": ["public"],
     "writeRoles": ["device:root"], "cacheDurationMs": 60000}
  ]
}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = SyncConfig::from_json_str(CONFIG)?;
    let store = DocStore::local("./example-data")?;
    let sync = create_sync_router(SyncOptions::new(config, store))?;

    let app = Router::new()
        .route("/", get(|| async { "my app" }))
        .nest("/v1", sync);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("app on http://{}/ , sync on /v1", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
