//! Reading a certificate's JSON within bounds: counts are checked while the JSON is
//! read, so a certificate stuffed with entries (a scope repeating `"read"` hundreds of
//! times, say) is refused after its first entry past a bound, before the rest is read
//! or anything is built from it. Refusing a request then costs about the same
//! whatever its certificate holds within the header's 8 KiB.

use crate::capcert::{MAX_SCOPE_ENTRIES, MAX_SCOPE_ENTRY_BYTES};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// Most JSON values (objects, arrays, strings, numbers...) in one certificate. The
/// largest the shape checks accept holds about 220 (64 entries in each of
/// `scope.collections`, `scope.paths` and `aud`, three ops, a dozen fields).
pub const MAX_CERT_VALUES: usize = 256;
/// Deepest nesting of a certificate (the scope's arrays are at depth 3).
const MAX_CERT_DEPTH: usize = 8;

/// Why a certificate's JSON was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertJsonError {
    /// It is not JSON (as far as it was read).
    Syntax,
    /// It breaks a bound (see [`read_cert_json`]).
    Bounds,
}

/// A certificate's JSON text as a value.
///
/// # Errors
/// [`CertJsonError::Syntax`] when it is not JSON, [`CertJsonError::Bounds`] at the
/// first value past a bound: more than [`MAX_CERT_VALUES`] values, nesting deeper
/// than 8, an array of more than [`MAX_SCOPE_ENTRIES`] entries, more than the three
/// ops in `scope.ops`, or a scope entry longer than [`MAX_SCOPE_ENTRY_BYTES`].
pub fn read_cert_json(bytes: &[u8]) -> Result<Value, CertJsonError> {
    let budget = Cell::new(MAX_CERT_VALUES);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let seed = Bounded {
        budget: &budget,
        depth: 0,
        place: Place::Root,
    };
    let value = seed
        .deserialize(&mut reader)
        .and_then(|value| reader.end().map(|()| value));
    value.map_err(|e| match e.classify() {
        // The only data errors are the bounds': a visitor that takes any value
        // refuses no type.
        serde_json::error::Category::Data => CertJsonError::Bounds,
        _ => CertJsonError::Syntax,
    })
}

/// Where a value sits, for the bounds that depend on it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The certificate itself.
    Root,
    /// The certificate's `scope`.
    Scope,
    /// `scope.ops`.
    Ops,
    /// `scope.collections` or `scope.paths`.
    ScopeList,
    /// An entry of one of the scope's lists.
    ScopeEntry,
    /// Anywhere else.
    Other,
}

impl Place {
    /// The place of the value under `key` in an object at `self`.
    fn of_field(self, key: &str) -> Self {
        match (self, key) {
            (Self::Root, "scope") => Self::Scope,
            (Self::Scope, "ops") => Self::Ops,
            (Self::Scope, "collections" | "paths") => Self::ScopeList,
            _ => Self::Other,
        }
    }

    /// The place of an array's entries, and how many it may hold.
    fn entries(self) -> (Self, usize) {
        match self {
            Self::Ops => (Self::ScopeEntry, 3),
            Self::ScopeList => (Self::ScopeEntry, MAX_SCOPE_ENTRIES),
            _ => (Self::Other, MAX_SCOPE_ENTRIES),
        }
    }
}

/// Reads one value, spending one unit of the shared budget per value.
struct Bounded<'b> {
    budget: &'b Cell<usize>,
    depth: usize,
    place: Place,
}

impl Bounded<'_> {
    /// Takes one value from the budget.
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom("certificate holds too many values")),
        }
    }

    /// The reader of a value inside this one, at `place`.
    fn inner<E: de::Error>(&self, place: Place) -> Result<Bounded<'_>, E> {
        if self.depth >= MAX_CERT_DEPTH {
            return Err(E::custom("certificate nested too deep"));
        }
        Ok(Bounded {
            budget: self.budget,
            depth: self.depth + 1,
            place,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a certificate within bounds")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend()?;
        // JSON holds no NaN or infinity, so the number always exists.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend()?;
        if self.place == Place::ScopeEntry && v.len() > MAX_SCOPE_ENTRY_BYTES {
            return Err(E::custom("scope entry too long"));
        }
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend()?;
        let (place, max) = self.place.entries();
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element_seed(self.inner(place)?)? {
            if entries.len() == max {
                return Err(de::Error::custom("certificate array too long"));
            }
            entries.push(entry);
        }
        Ok(Value::Array(entries))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.spend()?;
            let value = map.next_value_seed(self.inner(self.place.of_field(&key))?)?;
            // As serde_json does: a repeated key's last value wins.
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: &Value) -> Result<Value, CertJsonError> {
        read_cert_json(value.to_string().as_bytes())
    }

    fn cert(scope: Value) -> Value {
        json!({
            "v": 1, "kind": "device", "iss": "ab".repeat(32), "issUserId": "cd".repeat(16),
            "sub": "ab".repeat(32), "subKem": "00".repeat(32), "scope": scope,
            "nbf": 1_767_225_540, "exp": 1.5e9, "nonce": "AQEBAQEBAQEBAQEBAQEBAQ==",
            "sig": "x", "ext": {"a": [true, null, -1, "s"]},
        })
    }

    /// What it reads is what serde_json reads, up to the largest scope the shape
    /// checks accept.
    #[test]
    fn reads_what_serde_json_reads() {
        let entries: Vec<String> = (0..MAX_SCOPE_ENTRIES).map(|i| format!("c{i}")).collect();
        for scope in [
            json!({"ops": ["read"], "collections": ["*"]}),
            json!({"ops": ["read", "write", "list"], "collections": entries, "paths": entries}),
        ] {
            let value = cert(scope);
            assert_eq!(read(&value), Ok(value));
        }
        let text = r#"{"a":1,"a":[2],"b":"\u00e9"}"#;
        assert_eq!(
            read_cert_json(text.as_bytes()),
            Ok(serde_json::from_str(text).unwrap())
        );
    }

    /// Counts are refused at the first value past a bound.
    #[test]
    fn refuses_what_breaks_a_bound() {
        let many = |n: usize, entry: &str| vec![entry.to_owned(); n];
        for scope in [
            json!({"ops": many(4, "read"), "collections": ["*"]}),
            json!({"ops": many(300, "read"), "collections": many(400, "")}),
            json!({"ops": ["read"], "collections": many(MAX_SCOPE_ENTRIES + 1, "c")}),
            json!({"ops": ["read"], "collections": ["*"], "paths": many(MAX_SCOPE_ENTRIES + 1, "p")}),
            json!({"ops": ["read"], "collections": ["x".repeat(MAX_SCOPE_ENTRY_BYTES + 1)]}),
        ] {
            assert_eq!(
                read(&cert(scope.clone())),
                Err(CertJsonError::Bounds),
                "{scope}"
            );
        }
        // Past the number of values, in fields the shape checks do not read.
        let mut value = cert(json!({"ops": ["read"], "collections": ["*"]}));
        for i in 0..MAX_CERT_VALUES / 2 {
            value[format!("x{i}")] = json!(i);
        }
        assert_eq!(read(&value), Err(CertJsonError::Bounds));
        // Nested too deep.
        let mut deep = json!(1);
        for _ in 0..MAX_CERT_DEPTH + 1 {
            deep = json!([deep]);
        }
        assert_eq!(read(&deep), Err(CertJsonError::Bounds));
        // Not JSON, or followed by more.
        assert_eq!(read_cert_json(b"{\"a\":"), Err(CertJsonError::Syntax));
        assert_eq!(read_cert_json(b"{} {}"), Err(CertJsonError::Syntax));
        assert_eq!(read_cert_json(b"[1, x]"), Err(CertJsonError::Syntax));
    }
}
