//! `document-hash.json` and the hash part of `python-crosscheck.json`.

use starfish_protocol::{compute_hash, stable_stringify};

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

#[test]
fn numbers_print_as_javascript_prints_them() {
    // What `String(x)` gives in JavaScript (node), for doubles at the edges of each
    // notation, and integers around 2^53 and u64::MAX.
    for (raw, js) in [
        ("0.30000000000000004", "0.30000000000000004"),
        ("123456789012345680000", "123456789012345680000"),
        ("1e21", "1e+21"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("5e-324", "5e-324"),
        ("0.000001", "0.000001"),
        ("0.0000001", "1e-7"),
        ("-1.5e-7", "-1.5e-7"),
        ("-123.456", "-123.456"),
        ("9007199254740993", "9007199254740992"),
        ("9007199254740995", "9007199254740996"),
        ("-9007199254740993", "-9007199254740992"),
        ("18446744073709551615", "18446744073709552000"),
        ("-9223372036854775808", "-9223372036854776000"),
        ("100", "100"),
        ("-0.0", "0"),
        ("1e100", "1e+100"),
        ("12345678901234567890123", "1.2345678901234568e+22"),
    ] {
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(stable_stringify(&v), js, "{raw}");
    }
    // Strings: the short escapes, \u00xx for other controls, everything else as is.
    let v = serde_json::json!("a\"b\\c\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}/é😀");
    assert_eq!(
        stable_stringify(&v),
        "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}/é😀\""
    );
}
