//! What a webhook's payload becomes, declared, not coded: the document's data and
//! the target path's parameters, each the value at a JSON pointer (RFC 6901) into
//! the payload.

use serde_json::{Map, Value};

/// The data (the value at one pointer, or an object of fields each at its pointer)
/// and the target's `{name}` parameters (each at its pointer). Every pointer must
/// find a value, or the webhook is refused (`400 rejected_by_transform`).
#[derive(Debug, Clone)]
pub struct Transform {
    data: Data,
    params: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Data {
    /// The value at this pointer (`""`: the whole payload), an object.
    At(String),
    /// An object: each field the value at its pointer.
    Fields(Vec<(String, String)>),
}

fn pointer(p: &str) -> Result<String, String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(p.to_owned())
    } else {
        Err(format!(
            "{p:?} is not a JSON pointer (\"\" or starting with /)"
        ))
    }
}

impl Transform {
    /// The data is the object at `at` (`""`: the whole payload).
    ///
    /// # Errors
    /// Not a JSON pointer.
    pub fn whole(at: &str) -> Result<Self, String> {
        Ok(Self {
            data: Data::At(pointer(at)?),
            params: Vec::new(),
        })
    }

    /// The data is an object of these fields, each the value at its pointer.
    ///
    /// # Errors
    /// A pointer that is not one, or no fields.
    pub fn fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let fields = fields
            .into_iter()
            .map(|(name, at)| Ok((name.to_owned(), pointer(at)?)))
            .collect::<Result<Vec<_>, String>>()?;
        if fields.is_empty() {
            return Err("a transform needs at least one field".into());
        }
        Ok(Self {
            data: Data::Fields(fields),
            params: Vec::new(),
        })
    }

    /// `{name}` in the target is the value at `at`: a string or an integer that
    /// passes the path parameter rules.
    ///
    /// # Errors
    /// Not a JSON pointer.
    pub fn with_param(mut self, name: &str, at: &str) -> Result<Self, String> {
        self.params.push((name.to_owned(), pointer(at)?));
        Ok(self)
    }

    /// The config's form: `{"data": "/pointer" | {"field": "/pointer", …},
    /// "params": {"name": "/pointer", …}}`.
    ///
    /// # Errors
    /// Any other shape.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("transform: an object with data (and params)".into());
        };
        if let Some(other) = map.keys().find(|k| *k != "data" && *k != "params") {
            return Err(format!("transform: unknown key {other:?}"));
        }
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .ok_or("transform: pointers are strings")
        };
        let mut transform = match map.get("data") {
            Some(Value::String(at)) => Self::whole(at)?,
            Some(Value::Object(fields)) => {
                let fields = fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), text(v)?)))
                    .collect::<Result<Vec<_>, &str>>()?;
                Self::fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))?
            }
            _ => return Err("transform: data is a pointer or an object of pointers".into()),
        };
        if let Some(params) = map.get("params") {
            let Value::Object(params) = params else {
                return Err("transform: params is an object of pointers".into());
            };
            for (name, at) in params {
                transform = transform.with_param(name, &text(at)?)?;
            }
        }
        Ok(transform)
    }

    /// The data and the parameters `payload` gives; `None` when a pointer finds
    /// nothing, the data is no object, or a parameter is no string or integer.
    pub(crate) fn apply(&self, payload: &Value) -> Option<(Value, Vec<(String, String)>)> {
        let data = match &self.data {
            Data::At(at) => payload.pointer(at).filter(|v| v.is_object())?.clone(),
            Data::Fields(fields) => {
                let mut map = Map::new();
                for (name, at) in fields {
                    map.insert(name.clone(), payload.pointer(at)?.clone());
                }
                Value::Object(map)
            }
        };
        let mut params = Vec::with_capacity(self.params.len());
        for (name, at) in &self.params {
            let value = match payload.pointer(at)? {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
                _ => return None,
            };
            params.push((name.clone(), value));
        }
        Some((data, params))
    }

    fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }
}

/// The path's `{name}` segments.
fn placeholders(target: &str) -> impl Iterator<Item = &str> {
    target
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// `target` is `/push/…` or `/<namespace>/push/…`, and the transform fills each
/// of its `{name}` segments.
pub(super) fn check_target(target: &str, transform: &Transform) -> Result<(), String> {
    let segments: Vec<&str> = target.split('/').collect();
    let push_at = segments.iter().position(|s| *s == "push");
    if !target.starts_with('/')
        || !matches!(push_at, Some(1 | 2))
        || segments.len() <= push_at.unwrap_or(0) + 1
    {
        return Err(format!(
            "webhook target {target:?} is not /push/<path> or /<namespace>/push/<path>"
        ));
    }
    // The payload fills the storage path, never the namespace or the verb.
    let push_at = push_at.unwrap_or(0);
    if segments[..=push_at].iter().any(|s| s.starts_with('{')) {
        return Err(format!(
            "webhook target {target:?}: a parameter before push/"
        ));
    }
    let literal = target.replace(['{', '}'], "");
    if literal.parse::<axum::http::Uri>().is_err() || literal.contains(['?', '#', '%']) {
        return Err(format!("webhook target {target:?} is not a plain path"));
    }
    for name in placeholders(target) {
        if !transform.param_names().any(|p| p == name) {
            return Err(format!(
                "webhook target {target:?}: the transform gives no {{{name}}}"
            ));
        }
    }
    if segments
        .iter()
        .any(|s| s.is_empty() && !std::ptr::eq(*s, segments[0]))
    {
        return Err(format!("webhook target {target:?} has an empty segment"));
    }
    Ok(())
}

/// `target` with its `{name}` segments filled from `params`; `None` when a value
/// breaks the path parameter rules.
pub(super) fn fill(target: &str, params: &[(String, String)]) -> Option<String> {
    let mut out = String::with_capacity(target.len() + 32);
    for (n, segment) in target.split('/').enumerate() {
        if n > 0 {
            out.push('/');
        }
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let (_, value) = params.iter().find(|(p, _)| p == name)?;
                if value == "." || value == ".." {
                    return None;
                }
                crate::store::PathParams::checked([(name, value.clone())]).ok()?;
                out.push_str(value);
            }
            None => out.push_str(segment),
        }
    }
    Some(out)
}

/// The storage key a push to `target` writes: the path after `push/`.
pub(super) fn document_key(target: &str) -> &str {
    target.split_once("/push/").map_or(target, |(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_params_come_from_pointers_and_all_must_be_found() {
        let t = Transform::from_value(&json!({
            "data": {"text": "/text", "who": "/sender/login"},
            "params": {"id": "/delivery/id"}
        }))
        .unwrap();
        let payload = json!({"text": "hi", "sender": {"login": "ann"}, "delivery": {"id": 42}});
        let (data, params) = t.apply(&payload).unwrap();
        assert_eq!(data, json!({"text": "hi", "who": "ann"}));
        assert_eq!(params, [("id".to_owned(), "42".to_owned())]);
        assert!(
            t.apply(&json!({"text": "hi", "delivery": {"id": 1}}))
                .is_none()
        );
        assert!(
            t.apply(&json!({"text": "hi", "sender": {"login": "a"}, "delivery": {"id": [1]}}))
                .is_none()
        );
        let whole = Transform::whole("/event").unwrap();
        assert_eq!(
            whole.apply(&json!({"event": {"a": 1}})).unwrap().0,
            json!({"a": 1})
        );
        assert!(whole.apply(&json!({"event": "text"})).is_none());
        assert!(Transform::from_value(&json!({"data": "text"})).is_err());
        assert!(Transform::from_value(&json!({"data": {}, "x": 1})).is_err());
    }

    #[test]
    fn targets_are_push_paths_filled_only_with_parameter_values() {
        let t = Transform::whole("")
            .unwrap()
            .with_param("id", "/id")
            .unwrap();
        assert!(check_target("/push/events/{id}", &t).is_ok());
        assert!(check_target("/acme/push/events/{id}", &t).is_ok());
        assert!(check_target("/pull/events/{id}", &t).is_err());
        assert!(check_target("/push/events/{other}", &t).is_err());
        assert!(check_target("/push//x", &t).is_err());
        assert!(check_target("/{id}/push/events/x", &t).is_err());
        assert!(check_target("/push/events/{id}?x=1", &t).is_err());
        let params = [("id".to_owned(), "d-1".to_owned())];
        assert_eq!(
            fill("/push/events/{id}", &params).unwrap(),
            "/push/events/d-1"
        );
        for bad in ["..", "a/b", "a b", "_starfish", ""] {
            let params = [("id".to_owned(), bad.to_owned())];
            assert!(fill("/push/events/{id}", &params).is_none(), "{bad:?}");
        }
        assert_eq!(document_key("/acme/push/events/d-1"), "events/d-1");
    }
}
