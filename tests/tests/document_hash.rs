//! `document-hash.json` and the hash part of `python-crosscheck.json`.

use starfish_server::internals::{compute_hash, stable_stringify};

#[test]
fn every_document_hash_vector_matches() {
    let vectors = starfish_conformance::load("document-hash.json");
    let cases = vectors["vectors"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = &case["input"];
        assert_eq!(
            stable_stringify(input),
            case["canonical"].as_str().unwrap(),
            "{input}"
        );
        assert_eq!(
            compute_hash(input),
            case["sha256_hex"].as_str().unwrap(),
            "{input}"
        );
    }
}

#[test]
fn number_edge_cases_from_raw_json_text() {
    // The vector file's JSON already went through a JS parser; these are the raw forms.
    let raw = r#"{"f":0.1,"g":1e-7,"h":1e21,"i":1.5,"j":-0,"k":2.0,"l":9007199254740993}"#;
    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
    assert_eq!(
        stable_stringify(&v),
        r#"{"f":0.1,"g":1e-7,"h":1e+21,"i":1.5,"j":0,"k":2,"l":9007199254740992}"#
    );
    assert_eq!(
        compute_hash(&v),
        "063ad6f597d7974dce533d8a6e1f330f6c1d1ef50e24bfae99fbeb986cc12694"
    );
}
