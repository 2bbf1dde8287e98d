//! Loads the reference's test vectors (`tests/vectors/*.json`, produced by running the
//! reference packages; see `tests/vectors/README.md`). The folder is `vectors/` in this
//! crate, or `$STARFISH_VECTORS`.

use serde_json::Value;
use std::path::PathBuf;

/// The folder holding the vector files.
pub fn vectors_dir() -> PathBuf {
    std::env::var_os("STARFISH_VECTORS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors"),
        PathBuf::from,
    )
}

/// Parses one vector file.
///
/// # Panics
/// When the file is missing or not JSON: a conformance run without its vectors
/// must fail, not pass vacuously.
pub fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
