//! Every case of `config-validation.json`: the exact `StartupError` text.

use starfish_server::SyncConfig;

#[test]
fn every_config_validation_vector_gives_the_reference_message() {
    let vectors = starfish_conformance::load("config-validation.json");
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "vector file looks truncated");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = match &case["input"] {
            serde_json::Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        let result = SyncConfig::from_json_str(&text);
        assert_eq!(case["ok"], false, "{name}: only failing cases are expected");
        let err = match result {
            Ok(_) => panic!("{name}: accepted, expected an error"),
            Err(e) => e.to_string(),
        };
        let expected = case["message"].as_str().unwrap();
        const SYNTAX: &str = "Failed to parse sync config as JSON: ";
        if let Some(_v8_text) = expected.strip_prefix(SYNTAX) {
            // The parser's own sentence differs between V8 and serde_json; the prefix,
            // which is what callers match on, is the reference's.
            assert!(err.starts_with(SYNTAX), "{name}: {err}");
        } else {
            assert_eq!(err, expected, "{name}");
        }
    }
}

#[test]
fn yaml_and_json_load_the_same_config() {
    let yaml = r#"
version: 1
collections:
  - name: notes
    storagePath: "users/{identity}/notes"
    readRoles: [self]
    writeRoles: [self]
namespaces:
  acme:
    collections:
      - {name: notes, storagePath: "users/{identity}/notes", readRoles: [self], writeRoles: [self]}
"#;
    let c = SyncConfig::from_yaml_str(yaml).unwrap();
    assert_eq!(
        c.root_storage_paths().collect::<Vec<_>>(),
        ["users/{identity}/notes"]
    );
    assert_eq!(c.namespaces().collect::<Vec<_>>(), [("acme", 1)]);
    let bad = yaml.replace("acme:", "batch:");
    assert_eq!(
        SyncConfig::from_yaml_str(&bad).unwrap_err().to_string(),
        "Invalid sync config:\nNamespace \"batch\": name is reserved and cannot be used as a namespace"
    );
}

#[test]
fn every_reserved_namespace_is_refused_by_name() {
    for name in ["pull", "push", "list", "health", "batch"] {
        let cfg = format!(
            r#"{{"version":1,"namespaces":{{"{name}":{{"collections":[{{"name":"a","storagePath":"a","readRoles":["public"]}}]}}}}}}"#
        );
        let err = SyncConfig::from_json_str(&cfg).unwrap_err().to_string();
        assert!(
            err.contains(&format!("Namespace \"{name}\": name is reserved")),
            "{err}"
        );
    }
}

#[test]
fn unsafe_templates_and_route_conflicts_are_refused_at_load() {
    let err = SyncConfig::from_json_str(
        r#"{"version":1,"collections":[{"name":"a","storagePath":"x/../{id}","readRoles":["public"]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("Invalid sync config:\nCollection \"a\": storagePath segment \"..\""),
        "{err}"
    );

    // Route conflicts and same-scope overlaps are config errors: `check-config` sees them.
    let err = SyncConfig::from_json_str(
        r#"{"version":1,"collections":[
            {"name":"a","storagePath":"x/{id}","readRoles":["public"]},
            {"name":"b","storagePath":"x/{other}","readRoles":["public"]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Collection \"b\": storagePath \"x/{other}\" conflicts"),
        "{err}"
    );
    assert!(
        err.contains("Collection \"a\" and collection \"b\" can address the same objects"),
        "{err}"
    );
    // A literal segment beside a parameter routes fine but shares keys: refused too.
    let err = SyncConfig::from_json_str(
        r#"{"version":1,"namespaces":{"acme":{"collections":[
            {"name":"docs","storagePath":"u/{identity}/{doc}","readRoles":["public"]},
            {"name":"vault","storagePath":"u/{identity}/vault","readRoles":["self"]}]}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Namespace \"acme\": Collection \"docs\" and collection \"vault\" can address the same objects"),
        "{err}"
    );
}

#[test]
fn collections_sharing_storage_across_namespaces_are_reported() {
    let config = SyncConfig::from_json_str(
        r#"{"version":1,"collections":[{"name":"notes","storagePath":"users/{identity}/notes","readRoles":["self"],"writeRoles":["self"]}],
            "namespaces":{"acme":{"collections":[
              {"name":"n","storagePath":"users/{id}/notes","readRoles":["self"],"writeRoles":["self"]},
              {"name":"own","storagePath":"acme/{identity}/notes","readRoles":["self"],"writeRoles":["self"]}]}}}"#,
    )
    .unwrap();
    let shared: Vec<&String> = config
        .warnings()
        .iter()
        .filter(|w| w.contains("namespaces do not prefix"))
        .collect();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert!(
        shared[0].contains("\"notes\" (root) and collection \"n\" (namespace \"acme\")"),
        "{}",
        shared[0]
    );
}
