//! `starfish openapi --config FILE` prints the library's document for that config.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_starfish");
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/serve-yaml/starfish.yaml"
);

#[test]
fn prints_the_document_of_the_config() {
    let out = Command::new(BIN)
        .args(["openapi", "--config", SAMPLE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let config =
        starfish_server::SyncConfig::from_yaml_str(&std::fs::read_to_string(SAMPLE).unwrap())
            .unwrap();
    assert_eq!(printed, starfish_server::openapi_document(&config));
    assert!(printed["paths"]["/acme/push/acme/board/{topic}"]["post"].is_object());
}

#[test]
fn a_bad_config_is_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "{").unwrap();
    let out = Command::new(BIN)
        .args(["openapi", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("starfish: error: "));
}
