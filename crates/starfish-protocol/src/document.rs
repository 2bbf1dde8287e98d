//! Regular JSON documents: the push envelope, sanitising, the stored layout and the
//! pull response. Pure functions; the store and HTTP layers call them.

use crate::canonical::{compute_hash, non_negative_integer};
use serde_json::{Map, Number, Value};

/// Deepest nesting a push body may have (objects and arrays both count; the body
/// itself is level 1), as the reference's `MAX_DOC_DEPTH`.
pub const MAX_DOC_DEPTH: usize = 64;

/// Keys removed from every object before hashing and storing (prototype-pollution guards
/// of the reference; kept so stored documents and hashes agree with it).
pub const UNSAFE_KEYS: [&str; 5] = [
    "__proto__",
    "constructor",
    "prototype",
    "__class__",
    "__dict__",
];

/// Why a push body was refused; each maps to one protocol error string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not JSON or not an object.
    #[error("Body must be a JSON object")]
    NotAnObject,
    /// The body nests deeper than [`MAX_DOC_DEPTH`].
    #[error("Body nesting too deep")]
    TooDeep,
    /// `data` is missing or not an object.
    #[error("Missing or invalid data")]
    MissingData,
    /// `baseHash` is neither a string nor null.
    #[error("baseHash must be a string or null")]
    BadBaseHash,
    /// Only one of the two author-proof fields, or one that is not a string.
    #[error("author proof requires authorPubkey and authorSignature")]
    PartialAuthorProof,
}

/// An author proof carried by a push (§5.4): both fields, still unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorProof {
    /// Hex Ed25519 public key of the author.
    pub pubkey: String,
    /// Base64 signature over the author signing input.
    pub signature: String,
}

/// A parsed, sanitised push request for a regular JSON collection.
#[derive(Debug, Clone, PartialEq)]
pub struct PushEnvelope {
    /// The document, with unsafe keys removed and numbers normalised.
    pub data: Map<String, Value>,
    /// `None` means "create": the document must not exist yet.
    pub base_hash: Option<String>,
    /// Optional document author proof.
    pub author: Option<AuthorProof>,
}

/// Parses a push body. Checks run in the reference's order: JSON object, depth, `data`,
/// `baseHash`, author fields.
///
/// # Errors
/// The [`EnvelopeError`] the reference would answer with.
#[cfg(test)]
fn parse_push_body(body: &[u8]) -> Result<PushEnvelope, EnvelopeError> {
    PushEnvelope::from_body(parse_body_object(body)?)
}

/// Parses a push body as a JSON object no deeper than [`MAX_DOC_DEPTH`].
///
/// # Errors
/// [`EnvelopeError::NotAnObject`] or [`EnvelopeError::TooDeep`].
pub fn parse_body_object(body: &[u8]) -> Result<Map<String, Value>, EnvelopeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json stops at 128 levels; the reference would call that "too deep".
        if e.to_string().contains("recursion limit exceeded") {
            EnvelopeError::TooDeep
        } else {
            EnvelopeError::NotAnObject
        }
    })?;
    let Value::Object(body) = value else {
        return Err(EnvelopeError::NotAnObject);
    };
    if !depth_within(&body, MAX_DOC_DEPTH) {
        return Err(EnvelopeError::TooDeep);
    }
    Ok(body)
}

impl PushEnvelope {
    /// The envelope of a regular push from its parsed body.
    ///
    /// # Errors
    /// The [`EnvelopeError`] the reference would answer with.
    pub fn from_body(mut body: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let data = match body.remove("data") {
            Some(Value::Object(data)) => data,
            _ => return Err(EnvelopeError::MissingData),
        };
        let base_hash = match body.remove("baseHash") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(EnvelopeError::BadBaseHash),
        };
        let author = parse_author(&mut body)?;
        Ok(PushEnvelope {
            data: sanitize_object(data),
            base_hash,
            author,
        })
    }
}

/// Why an append body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendEnvelopeError {
    /// `data` missing or not an object.
    #[error("Missing or invalid data")]
    MissingData,
    /// `ts` is not a non-negative integer.
    #[error("ts must be a non-negative integer")]
    BadTs,
    /// An author proof is required and missing (or half there).
    #[error("append requires authorPubkey and authorSignature")]
    AuthorRequired,
}

/// A parsed append body: `{"data", "ts"?, "authorPubkey"?, "authorSignature"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendEnvelope {
    /// The sanitised item.
    pub item: Map<String, Value>,
    /// A client-chosen timestamp.
    pub ts: Option<u64>,
    /// The author proof, if complete.
    pub author: Option<AuthorProof>,
}

impl AppendEnvelope {
    /// Parses an append body; `baseHash` is ignored, as in the reference.
    ///
    /// # Errors
    /// [`AppendEnvelopeError`].
    pub fn from_body(
        mut body: Map<String, Value>,
        require_author: bool,
    ) -> Result<Self, AppendEnvelopeError> {
        let item = match body.remove("data") {
            Some(Value::Object(data)) => sanitize_object(data),
            _ => return Err(AppendEnvelopeError::MissingData),
        };
        let author = match AuthorProof::take(&mut body) {
            AuthorFields::Proof(proof) => Some(proof),
            AuthorFields::Absent if !require_author => None,
            AuthorFields::Absent | AuthorFields::Partial => {
                return Err(AppendEnvelopeError::AuthorRequired);
            }
        };
        let ts = match body.remove("ts") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_f64()
                    .and_then(non_negative_integer)
                    .ok_or(AppendEnvelopeError::BadTs)?,
            ),
            Some(_) => return Err(AppendEnvelopeError::BadTs),
        };
        Ok(Self { item, ts, author })
    }
}

fn parse_author(body: &mut Map<String, Value>) -> Result<Option<AuthorProof>, EnvelopeError> {
    match AuthorProof::take(body) {
        AuthorFields::Absent => Ok(None),
        AuthorFields::Proof(proof) => Ok(Some(proof)),
        AuthorFields::Partial => Err(EnvelopeError::PartialAuthorProof),
    }
}

/// The author-proof fields an object carried.
pub enum AuthorFields {
    /// Neither field.
    Absent,
    /// Both, as strings.
    Proof(AuthorProof),
    /// One of them, or one that is not a string.
    Partial,
}

impl AuthorProof {
    /// Takes `authorPubkey` and `authorSignature` out of `map`.
    pub fn take(map: &mut Map<String, Value>) -> AuthorFields {
        match (map.remove("authorPubkey"), map.remove("authorSignature")) {
            (None, None) => AuthorFields::Absent,
            (Some(Value::String(pubkey)), Some(Value::String(signature))) => {
                AuthorFields::Proof(AuthorProof { pubkey, signature })
            }
            _ => AuthorFields::Partial,
        }
    }

    /// Writes the two fields into `map`.
    pub fn write_to(&self, map: &mut Map<String, Value>) {
        map.insert("authorPubkey".into(), Value::String(self.pubkey.clone()));
        map.insert(
            "authorSignature".into(),
            Value::String(self.signature.clone()),
        );
    }
}

/// True when `body` nests at most `limit` levels (the body object is level 1).
/// Iterative, so hostile input cannot overflow the stack.
fn depth_within(body: &Map<String, Value>, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = body.values().map(|v| (v, 2)).collect();
    while let Some((node, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match node {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        if depth > limit {
            return false;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    true
}

/// Removes [`UNSAFE_KEYS`] from `map` and from every nested object reached through
/// objects (the reference does not descend into arrays), and normalises numbers.
pub fn sanitize_object(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(key, _)| !UNSAFE_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key, sanitize_value(value)))
        .collect()
}

fn sanitize_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(sanitize_object(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_numbers).collect()),
        other => normalize_numbers(other),
    }
}

/// Rewrites every number as the double the reference would hold (`2.0` -> `2`,
/// `-0` -> `0`, integers past 2^53 rounded), so what we store and echo is what the
/// reference stores and echoes, and the stored hash covers exactly that.
fn normalize_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::Number(js_number(&n)),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

fn js_number(n: &Number) -> Number {
    if let Some(i) = n.as_i64() {
        if (i as f64).abs() <= MAX_SAFE {
            return n.clone();
        }
    }
    let x = n.as_f64().unwrap_or(0.0);
    if x.fract() == 0.0 && x.abs() <= MAX_SAFE {
        return Number::from(x as i64);
    }
    Number::from_f64(x).unwrap_or_else(|| Number::from(0))
}

/// A stored regular document (§10): `{"v":1,"data":…,"ts":…,"hash":…[,author]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    /// The document body.
    pub data: Map<String, Value>,
    /// Write time in ms since the epoch (0 when absent).
    pub ts: u64,
    /// The hash stored with the document (`""` when absent).
    pub hash: String,
    /// Author proof stored with the document.
    pub author: Option<AuthorProof>,
}

impl StoredDoc {
    /// Builds the document a successful push stores.
    pub fn new(data: Map<String, Value>, ts: u64, author: Option<AuthorProof>) -> Self {
        let hash = compute_hash(&Value::Object(data.clone()));
        Self {
            data,
            ts,
            hash,
            author,
        }
    }

    /// Parses stored bytes; `None` for anything that is not a JSON object (the
    /// reference reads such a document as empty).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(bytes) else {
            return None;
        };
        let data = match doc.remove("data") {
            Some(Value::Object(d)) => d,
            _ => Map::new(),
        };
        let ts = doc.get("ts").and_then(Value::as_u64).unwrap_or(0);
        let hash = match doc.remove("hash") {
            Some(Value::String(h)) => h,
            _ => String::new(),
        };
        let author = match AuthorProof::take(&mut doc) {
            AuthorFields::Proof(proof) => Some(proof),
            AuthorFields::Absent | AuthorFields::Partial => None,
        };
        Some(Self {
            data,
            ts,
            hash,
            author,
        })
    }

    /// The stored bytes, in the reference's key order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut doc = Map::new();
        doc.insert("v".into(), Value::from(1));
        doc.insert("data".into(), Value::Object(self.data.clone()));
        doc.insert("ts".into(), Value::from(self.ts));
        doc.insert("hash".into(), Value::String(self.hash.clone()));
        if let Some(author) = &self.author {
            author.write_to(&mut doc);
        }
        Value::Object(doc).to_string().into_bytes()
    }
}

/// JSON that would parse into a [`Value`], checked without building one: the same
/// parser, so the same nesting limit, number range and string escapes (a lone
/// surrogate, `1e400` or 200 levels fail here as they fail there).
struct Parses;

impl<'de> serde::Deserialize<'de> for Parses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParsesVisitor)
    }
}

struct ParsesVisitor;

impl<'de> serde::de::Visitor<'de> for ParsesVisitor {
    type Value = Parses;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_str<E>(self, _: &str) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_unit<E>(self) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_none<E>(self) -> Result<Parses, E> {
        Ok(Parses)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Parses, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parses, A::Error> {
        while seq.next_element::<Parses>()?.is_some() {}
        Ok(Parses)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Parses, A::Error> {
        while map.next_entry::<Parses, Parses>()?.is_some() {}
        Ok(Parses)
    }
}

/// A stored document read without building its `data`: the stored text of `data`, to
/// be served as it is. Only the plain layout (`v`, `data` an object, `ts` an unsigned
/// integer, `hash` a string, each at most once, nothing else) reads this way, and only
/// when it would parse into a [`Value`] too; anything else (an author proof, a
/// duplicate or unexpected field, another type, what the parser refuses) is `None`,
/// and the caller takes [`StoredDoc::parse`], which decides as before. (Duplicate
/// keys inside `data` are served as stored, where a parse keeps the last: the same
/// values for clients that read JSON as JavaScript does; this server never stores
/// them.)
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoredDoc<'a> {
    #[serde(default, rename = "v")]
    _version: Option<Parses>,
    /// `data` as stored, unparsed.
    #[serde(borrow)]
    pub data: Option<&'a serde_json::value::RawValue>,
    /// `ts`, when present.
    #[serde(default)]
    pub ts: Option<u64>,
    #[serde(default, borrow)]
    hash: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> RawStoredDoc<'a> {
    /// Reads the plain layout; `None` for anything else.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        // An object, not an array (which would fill the fields in order).
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let doc: Self = serde_json::from_slice(bytes).ok()?;
        if let Some(data) = doc.data {
            if !data.get().starts_with('{') || serde_json::from_str::<Parses>(data.get()).is_err() {
                return None;
            }
        }
        Some(doc)
    }

    /// The stored hash (`""` when absent).
    pub fn hash(&self) -> &str {
        self.hash.as_deref().unwrap_or_default()
    }

    /// Whether `data` is absent or has no field.
    pub fn data_is_empty(&self) -> bool {
        self.data.is_none_or(|d| {
            let text = d.get();
            text.get(1..text.len() - 1)
                .is_none_or(|inner| inner.trim().is_empty())
        })
    }
}

/// The body of a regular pull: `{"data","hash","timestamp"[,author]}`.
pub fn pull_body(doc: Option<&StoredDoc>, now_ms: u64) -> Value {
    let mut out = Map::new();
    match doc {
        Some(doc) => {
            out.insert("data".into(), Value::Object(doc.data.clone()));
            out.insert("hash".into(), Value::String(doc.hash.clone()));
            out.insert("timestamp".into(), Value::from(now_ms));
            if let Some(author) = &doc.author {
                author.write_to(&mut out);
            }
        }
        None => {
            out.insert("data".into(), Value::Object(Map::new()));
            out.insert("hash".into(), Value::String(String::new()));
            out.insert("timestamp".into(), Value::from(now_ms));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The pull body with `data` as stored is the body built from the parsed document,
    /// byte for byte for what this server stores; layouts it does not read are left to
    /// [`StoredDoc::parse`].
    #[test]
    fn a_raw_pull_body_is_the_parsed_one() {
        let data = json!({
            "text": "quote \" backslash \\ newline \n control \u{1} emoji \u{1F600} é",
            "n": [1, -2.5, 1e300, 12345678901234567u64, 0.1],
            "nested": {"deep": {"z": null, "a": true}},
            "empty": {}
        });
        let Value::Object(data) = data else {
            unreachable!()
        };
        let ours = [
            StoredDoc::new(data, 1_767_225_600_000, None).to_bytes(),
            StoredDoc::new(Map::new(), 5, None).to_bytes(),
            br#"{"v":1,"data":{},"ts":5,"hash":""}"#.to_vec(),
            br#"{"data":{"a":1}}"#.to_vec(),
            br#"{"v":1,"data":null,"ts":null,"hash":"h"}"#.to_vec(),
            br#"{"hash":"h\u00e9\"","data":{"b":[]},"v":"anything","ts":7}"#.to_vec(),
        ];
        for bytes in &ours {
            let raw = RawStoredDoc::parse(bytes).expect("plain layout");
            let parsed = StoredDoc::parse(bytes).unwrap();
            let empty = parsed.hash.is_empty() && parsed.data.is_empty();
            assert_eq!(raw.hash().is_empty() && raw.data_is_empty(), empty);
            assert_eq!(raw.hash(), parsed.hash);
            assert_eq!(raw.ts.unwrap_or(0), parsed.ts);
        }
        // Another writer's spacing: the same document once parsed.
        let spaced = br#" { "v" : 1 , "data" : { "a" : [ 1 , 2 ] } , "ts" : 3 , "hash" : "h" } "#;
        assert_eq!(RawStoredDoc::parse(spaced).unwrap().hash(), "h");
        let blank = br#"{"data":{  },"hash":""}"#;
        assert!(RawStoredDoc::parse(blank).unwrap().data_is_empty());

        let deep = format!(
            r#"{{"data":{{"a":{}1{}}},"hash":"h"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let deep_v = format!(
            r#"{{"v":{}1{},"data":{{}},"hash":"h"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let refused: [&[u8]; 5] = [
            br#"{"v":1,"data":{"s":"\ud800"},"ts":1,"hash":"h"}"#,
            br#"{"v":1,"data":{"n":1e400},"ts":1,"hash":"h"}"#,
            br#"{"v":1e400,"data":{"n":1},"ts":1,"hash":"h"}"#,
            deep.as_bytes(),
            deep_v.as_bytes(),
        ];
        for bytes in refused {
            assert!(StoredDoc::parse(bytes).is_none(), "the parser refuses it");
            assert!(
                RawStoredDoc::parse(bytes).is_none(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let nested_ok = format!(
            r#"{{"data":{{"a":{}1{}}},"hash":"h"}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(StoredDoc::parse(nested_ok.as_bytes()).is_some());
        assert!(RawStoredDoc::parse(nested_ok.as_bytes()).is_some());

        let others: [&[u8]; 10] = [
            br#"{"v":1,"data":{},"ts":1,"hash":"h","authorPubkey":"a","authorSignature":"s"}"#,
            br#"{"data":{"a":1},"data":{"b":2},"hash":"h"}"#,
            br#"{"data":{},"ts":1.5,"hash":"h"}"#,
            br#"{"data":{},"ts":-1,"hash":"h"}"#,
            br#"{"data":[1],"hash":"h"}"#,
            br#"{"data":"text","hash":"h"}"#,
            br#"[1,{"a":1},2,"h"]"#,
            br#"{"data":{},"hash":5}"#,
            br#"{"data":{},"hash":"h","extra":1}"#,
            br#"{"data":{},"hash":"h"} trailing"#,
        ];
        for bytes in others {
            assert!(
                RawStoredDoc::parse(bytes).is_none(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn envelope_errors_follow_reference_order() {
        assert_eq!(parse_push_body(b"[1]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(parse_push_body(b"{"), Err(EnvelopeError::NotAnObject));
        assert_eq!(
            parse_push_body(br#"{"data":[1]}"#),
            Err(EnvelopeError::MissingData)
        );
        assert_eq!(
            parse_push_body(br#"{"data":{},"baseHash":5}"#),
            Err(EnvelopeError::BadBaseHash)
        );
        assert_eq!(
            parse_push_body(br#"{"data":{},"authorPubkey":"ab"}"#),
            Err(EnvelopeError::PartialAuthorProof)
        );
        let ok = parse_push_body(br#"{"data":{"a":1},"baseHash":null}"#).unwrap();
        assert_eq!(ok.base_hash, None);
    }

    #[test]
    fn depth_limit_is_64_levels_counting_the_body() {
        let nest = |levels: usize| {
            // body {"data": {...}} : the body is level 1, data level 2, ...
            let mut s = String::from("{\"data\":");
            for _ in 0..levels - 2 {
                s.push_str("{\"a\":");
            }
            s.push_str("{}");
            for _ in 0..levels - 2 {
                s.push('}');
            }
            s.push('}');
            s
        };
        assert!(parse_push_body(nest(64).as_bytes()).is_ok());
        assert_eq!(
            parse_push_body(nest(65).as_bytes()),
            Err(EnvelopeError::TooDeep)
        );
        assert_eq!(
            parse_push_body(nest(500).as_bytes()),
            Err(EnvelopeError::TooDeep)
        );
    }

    #[test]
    fn unsafe_keys_are_dropped_but_not_inside_arrays() {
        let env = parse_push_body(
            br#"{"data":{"__proto__":{"x":1},"a":{"constructor":1,"b":2},"arr":[{"prototype":1}],"n":2.0}}"#,
        )
        .unwrap();
        assert_eq!(
            Value::Object(env.data),
            json!({"a":{"b":2},"arr":[{"prototype":1}],"n":2})
        );
    }

    #[test]
    fn stored_doc_round_trips_in_reference_layout() {
        let doc = StoredDoc::new(json!({"t":"x"}).as_object().unwrap().clone(), 5, None);
        let bytes = doc.to_bytes();
        assert!(
            String::from_utf8_lossy(&bytes)
                .starts_with("{\"v\":1,\"data\":{\"t\":\"x\"},\"ts\":5,\"hash\":\"")
        );
        assert_eq!(StoredDoc::parse(&bytes), Some(doc));
        assert_eq!(StoredDoc::parse(b"not json"), None);
    }
}
