//! The config loader: JSON or YAML text -> `SyncConfig` (parse, validate, build the
//! route tables), then everything built from a valid config (the OpenAPI document,
//! the router). Nothing may panic; a refused config is an `Err`.
//!
//! Input: the first byte picks the format (even: JSON, odd: YAML), the rest is the
//! text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router, openapi_document};

fuzz_target!(|data: &[u8]| {
    let Some((&format, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let loaded = if format % 2 == 0 {
        SyncConfig::from_json_str(text)
    } else {
        SyncConfig::from_yaml_str(text)
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            // Every refusal renders.
            let _ = e.to_string();
            return;
        }
    };
    let _ = config.warnings();
    let _ = config.namespaces().count();
    let _ = config.root_storage_paths().count();
    for (_, collection) in config.all_collections() {
        let _ = collection.storage_path.params().count();
    }
    let document = openapi_document(&config);
    assert!(document.is_object(), "the OpenAPI document is an object");
    // A loaded config always builds a router with the default options.
    let options = SyncOptions::new(config, DocStore::memory());
    if let Err(e) = create_sync_router(options) {
        panic!("a config that loaded did not build a router: {e}");
    }
});
