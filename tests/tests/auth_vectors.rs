//! `cap-certs.json`, `request-signing.json`, `scope-paths.json` and
//! `author-signatures.json`: byte-exact signing inputs and the reference's verdicts.

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use starfish_protocol::author::{
    APPEND_AUTHOR_DOMAIN, DOC_AUTHOR_DOMAIN, author_signing_input, verify_author,
};
use starfish_protocol::capcert::{CapCert, user_id_from_pub_hex, verify_cap_cert};
use starfish_protocol::scope::{match_scope_path, path_glob_match};
use starfish_protocol::signing::SignedRequest;
use starfish_protocol::stable_stringify;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn signing_key(priv_hex: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(priv_hex, &mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

#[test]
fn keys_and_user_ids() {
    let v = starfish_conformance::load("cap-certs.json");
    for (_, key) in v["keys"].as_object().unwrap() {
        let sk = signing_key(key["edPriv"].as_str().unwrap());
        assert_eq!(
            hex::encode(sk.verifying_key().as_bytes()),
            key["edPub"].as_str().unwrap()
        );
        assert_eq!(
            user_id_from_pub_hex(key["edPub"].as_str().unwrap()).unwrap(),
            key["userId"].as_str().unwrap()
        );
    }
}

#[test]
fn every_cap_cert_vector() {
    let v = starfish_conformance::load("cap-certs.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cert = &case["cert"];
        // The Authorization header is "Cap " + base64(stableStringify(cert)).
        assert_eq!(
            case["authorizationHeader"].as_str().unwrap(),
            format!("Cap {}", b64(stable_stringify(cert).as_bytes())),
            "{name}"
        );
        if let Ok(parsed) = CapCert::parse(cert) {
            assert_eq!(
                parsed.signing_input(),
                case["canonicalSigningInput"].as_str(),
                "{name}"
            );
        }
        let result = verify_cap_cert(cert, case["verifyAt"].as_f64().unwrap());
        let expected = &case["verifyCapCertResult"];
        if expected["ok"] == true {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            assert_eq!(
                result.unwrap_err().reason(),
                expected["reason"].as_str().unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn every_request_signing_vector() {
    let v = starfish_conformance::load("request-signing.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = &case["input"];
        let body = input["body"].as_str().unwrap_or("");
        let req = SignedRequest {
            method: input["method"].as_str().unwrap(),
            path_and_query: input["pathAndQuery"].as_str().unwrap(),
            body: body.as_bytes(),
            host: input["host"].as_str().unwrap(),
            ts: input["ts"].as_i64().unwrap(),
            nonce: input["nonce"].as_str().unwrap(),
        };
        let canonical = req.signing_input();
        assert_eq!(canonical, case["canonicalInput"].as_str().unwrap());
        // Ed25519 is deterministic: our signature over our input is the reference's.
        let sk = signing_key(input["signerPrivHex"].as_str().unwrap());
        let sig = b64(&sk.sign(canonical.as_bytes()).to_bytes());
        assert_eq!(sig, case["headers"]["X-Starfish-Sig"].as_str().unwrap());
        assert_eq!(
            case["headers"]["X-Starfish-Ts"].as_str().unwrap(),
            input["ts"].to_string()
        );
    }
}

#[test]
fn every_scope_path_vector() {
    let v = starfish_conformance::load("scope-paths.json");
    for case in v["pathGlobMatch"].as_array().unwrap() {
        let (glob, target) = (
            case["glob"].as_str().unwrap(),
            case["target"].as_str().unwrap(),
        );
        assert_eq!(
            path_glob_match(glob, target),
            case["match"] == true,
            "{glob} ~ {target}"
        );
    }
    for case in v["matchScopePath"].as_array().unwrap() {
        let paths: Option<Vec<String>> = match &case["scopePaths"] {
            Value::Null => None,
            list => Some(
                list.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect(),
            ),
        };
        let path = case["requestPath"].as_str().unwrap();
        assert_eq!(
            match_scope_path(path, paths.as_deref()),
            case["allowed"] == true,
            "{path} in {paths:?}"
        );
    }
}

#[test]
fn every_author_signature_vector() {
    let v = starfish_conformance::load("author-signatures.json");
    let sk = signing_key(v["signer"]["privHex"].as_str().unwrap());
    for case in v["cases"].as_array().unwrap() {
        let domain = if case["kind"] == "append" {
            APPEND_AUTHOR_DOMAIN
        } else {
            DOC_AUTHOR_DOMAIN
        };
        let key = case["documentKey"].as_str().unwrap();
        let input = author_signing_input(domain, &case["data"], key);
        assert_eq!(input, case["canonicalInput"].as_str().unwrap());
        let sig = case["authorSignature"].as_str().unwrap();
        assert_eq!(b64(&sk.sign(input.as_bytes()).to_bytes()), sig);
        assert!(verify_author(
            domain,
            &case["data"],
            key,
            case["authorPubkey"].as_str().unwrap(),
            sig
        ));
    }
}
