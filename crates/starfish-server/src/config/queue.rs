//! A collection's `queue` extension field: publish each accepted write as a
//! message, as the reference's queuing plugin does (`QueueConfig`, which the
//! reference sets in code; here it is part of the config, which the reference
//! ignores):
//!
//! ```yaml
//! - name: posts
//!   storagePath: "posts/{postId}"
//!   queue: {topic: posts.changed, subjectParam: postId, includeParams: true,
//!           includeBody: false, includeIdentity: false}
//! ```

use crate::config::PathTemplate;
use serde_json::Value;

/// The reference's default charset for a `subjectParam` value (the whole value):
/// no NATS metacharacter (`.`, `*`, `>`) can reach a subject.
const DEFAULT_SUBJECT_ID: &str = "[a-zA-Z0-9_-]+";

/// How a collection's writes are published.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The subject (the collection's name when not set).
    pub topic: Option<String>,
    /// A path parameter whose value is appended to the subject (`<topic>.<value>`)
    /// when it matches [`Self::subject_id_pattern`] whole.
    pub subject_param: Option<String>,
    /// What a `subject_param` value must match, whole.
    pub subject_id_pattern: regex::Regex,
    /// The message carries the path parameters (`params`).
    pub include_params: bool,
    /// The message carries the pushed data as sent (`body`; JSON writes only).
    pub include_body: bool,
    /// The message carries the writer's identity (`identity`).
    pub include_identity: bool,
}

/// Reads `queue`; an error per rule broken, in `errors`, prefixed with `p`.
pub(crate) fn settings(
    raw: Option<&Value>,
    template: Option<&PathTemplate>,
    p: &str,
    errors: &mut Vec<String>,
) -> Option<QueueSettings> {
    let raw = raw?;
    let Some(obj) = raw.as_object() else {
        errors.push(format!("{p}queue must be an object"));
        return None;
    };
    let known = [
        "topic",
        "subjectParam",
        "subjectIdPattern",
        "includeParams",
        "includeBody",
        "includeIdentity",
    ];
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(format!("{p}queue.{key} is not a queue setting"));
    }
    let text = |name: &str, errors: &mut Vec<String>| match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            errors.push(format!("{p}queue.{name} must be a non-empty string"));
            None
        }
    };
    let flag = |name: &str, errors: &mut Vec<String>| match obj.get(name) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(format!("{p}queue.{name} must be a boolean"));
            false
        }
    };
    let topic = text("topic", errors);
    if let Some(topic) = &topic {
        if !is_subject(topic) {
            errors.push(format!(
                "{p}queue.topic {topic:?} is not a subject (tokens of letters, digits, _ and - joined by .)"
            ));
        }
    }
    let subject_param = text("subjectParam", errors);
    if let (Some(param), Some(template)) = (&subject_param, template) {
        if !template.params().any(|t| t == param) {
            errors.push(format!(
                "{p}queue.subjectParam {param:?} is not a parameter of its storagePath"
            ));
        }
    }
    let pattern = text("subjectIdPattern", errors).unwrap_or_else(|| DEFAULT_SUBJECT_ID.into());
    let subject_id_pattern = match regex::Regex::new(&format!("^(?:{pattern})$")) {
        Ok(re) => re,
        Err(e) => {
            errors.push(format!("{p}queue.subjectIdPattern is not a pattern: {e}"));
            return None;
        }
    };
    Some(QueueSettings {
        topic,
        subject_param,
        subject_id_pattern,
        include_params: flag("includeParams", errors),
        include_body: flag("includeBody", errors),
        include_identity: flag("includeIdentity", errors),
    })
}

/// A NATS subject without wildcards: non-empty tokens of `[a-zA-Z0-9_-]` joined
/// by `.`.
pub(crate) fn is_subject(subject: &str) -> bool {
    subject.split('.').all(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> (Option<QueueSettings>, Vec<String>) {
        let template = PathTemplate::parse("posts/{postId}").unwrap();
        let mut errors = Vec::new();
        let s = settings(Some(&v), Some(&template), "C: ", &mut errors);
        (s, errors)
    }

    #[test]
    fn the_references_fields_are_read_and_checked() {
        let (s, errors) = read(json!({"topic": "posts.changed", "subjectParam": "postId",
                                      "includeParams": true, "includeIdentity": true}));
        assert!(errors.is_empty(), "{errors:?}");
        let s = s.unwrap();
        assert_eq!(s.topic.as_deref(), Some("posts.changed"));
        assert!(s.include_params && s.include_identity && !s.include_body);
        assert!(s.subject_id_pattern.is_match("abc-1_2"));
        assert!(!s.subject_id_pattern.is_match("a.b") && !s.subject_id_pattern.is_match("a\n"));
        for (bad, message) in [
            (json!({"topic": "a.*"}), "is not a subject"),
            (json!({"subjectParam": "nope"}), "is not a parameter"),
            (json!({"includeBody": "yes"}), "must be a boolean"),
            (json!({"subjectIdPattern": "("}), "is not a pattern"),
            (json!({"topics": "x"}), "is not a queue setting"),
            (json!("posts"), "must be an object"),
        ] {
            let (_, errors) = read(bad);
            assert!(errors.iter().any(|e| e.contains(message)), "{errors:?}");
        }
    }
}
