//! `objectSchema` (§5.5): a JSON Schema compiled at load time, and failures reported
//! the way the reference (ajv) words them.

use serde_json::Value;
use std::sync::Arc;

/// A compiled `objectSchema`. Remote `$ref`s are never fetched.
#[derive(Clone)]
pub struct ObjectSchema {
    schema: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for ObjectSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ObjectSchema").field(&self.schema).finish()
    }
}

/// The first failure of a document against its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// ajv's message (`must be number`).
    pub message: String,
    /// The instance path, segment by segment.
    pub path: Vec<Value>,
    /// The failing keyword (`type`).
    pub validator: String,
}

impl ObjectSchema {
    /// Compiles `schema`.
    ///
    /// # Errors
    /// The compiler's message when `schema` is not a valid JSON Schema.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
        Ok(Self {
            schema: Arc::new(schema.clone()),
            validator: Arc::new(validator),
        })
    }

    /// The schema as configured.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks `data`.
    ///
    /// # Errors
    /// The first [`SchemaViolation`].
    pub fn validate(&self, data: &Value) -> Result<(), SchemaViolation> {
        let Err(error) = self.validator.validate(data) else {
            return Ok(());
        };
        let pointer = error.instance_path().to_string();
        let path = pointer
            .split('/')
            .skip(1)
            .map(|seg| Value::from(seg.replace("~1", "/").replace("~0", "~")))
            .collect();
        Err(SchemaViolation {
            message: ajv_message(error.kind()),
            path,
            validator: error.kind().keyword().to_owned(),
        })
    }
}

fn type_name(t: &jsonschema::JsonType) -> String {
    t.to_string()
}

/// ajv's English message for the common keywords; the validator's own text otherwise.
fn ajv_message(kind: &jsonschema::error::ValidationErrorKind) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    match kind {
        K::Type {
            kind: TypeKind::Single(t),
        } => format!("must be {}", type_name(t)),
        K::Type {
            kind: TypeKind::Multiple(set),
        } => {
            let names: Vec<String> = set.iter().map(|t| type_name(&t)).collect();
            format!("must be {}", names.join(","))
        }
        K::Required { property } => {
            format!(
                "must have required property '{}'",
                property.as_str().unwrap_or_default()
            )
        }
        K::Minimum { limit } => format!("must be >= {limit}"),
        K::Maximum { limit } => format!("must be <= {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be > {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be < {limit}"),
        K::MinLength { limit } => format!("must NOT have fewer than {limit} characters"),
        K::MaxLength { limit } => format!("must NOT have more than {limit} characters"),
        K::MinItems { limit } => format!("must NOT have fewer than {limit} items"),
        K::MaxItems { limit } => format!("must NOT have more than {limit} items"),
        K::MinProperties { limit } => format!("must NOT have fewer than {limit} properties"),
        K::MaxProperties { limit } => format!("must NOT have more than {limit} properties"),
        K::Pattern { pattern } => format!("must match pattern \"{pattern}\""),
        K::Format { format } => format!("must match format \"{format}\""),
        K::Enum { .. } => "must be equal to one of the allowed values".into(),
        K::Constant { .. } => "must be equal to constant".into(),
        K::AdditionalProperties { .. } => "must NOT have additional properties".into(),
        K::UniqueItems => "must NOT have duplicate items".into(),
        K::AnyOf { .. } => "must match a schema in anyOf".into(),
        K::OneOfNotValid { .. } | K::OneOfMultipleValid { .. } => {
            "must match exactly one schema in oneOf".into()
        }
        K::Not { .. } => "must NOT be valid".into(),
        K::FalseSchema => "boolean schema is false".into(),
        other => other.keyword().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_read_like_ajv() {
        let s = ObjectSchema::compile(&json!({
            "type": "object",
            "properties": {"n": {"type": "number"}, "s": {"type": "string", "maxLength": 2}},
            "required": ["n"]
        }))
        .unwrap();
        assert!(s.validate(&json!({"n": 1})).is_ok());
        let e = s.validate(&json!({"n": "x"})).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.path.clone(), e.validator.as_str()),
            ("must be number", vec![json!("n")], "type")
        );
        let e = s.validate(&json!({})).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.validator.as_str()),
            ("must have required property 'n'", "required")
        );
        let e = s.validate(&json!({"n": 1, "s": "abc"})).unwrap_err();
        assert_eq!(e.message, "must NOT have more than 2 characters");
        assert!(ObjectSchema::compile(&json!({"type": 5})).is_err());
    }
}
