//! Serves the sample `starfish.yaml` (embedded at build time) on 127.0.0.1:8080 with
//! an in-memory store. The same file is what `starfish serve --config` reads.

use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};

/// The sample config shipped beside this example.
const SAMPLE: &str = include_str!("../starfish.yaml");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = SyncConfig::from_yaml_str(SAMPLE)?;
    let app = create_sync_router(SyncOptions::new(config, DocStore::memory()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!(
        "serving the sample config on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_loads_and_builds_a_router() {
        let config = SyncConfig::from_yaml_str(SAMPLE).unwrap();
        assert_eq!(config.root_collections(), 3);
        assert_eq!(
            config.namespaces().next().map(|(name, _)| name),
            Some("acme")
        );
        // The public write role is deliberate here, and flagged.
        assert!(config.warnings().iter().any(|w| w.contains("guestbook")));
        let _router = create_sync_router(SyncOptions::new(config, DocStore::memory())).unwrap();
    }
}
