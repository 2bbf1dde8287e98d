//! Queue messages, as the reference's queuing plugin publishes them: after each
//! accepted write to a collection with a `queue` setting (`config/queue.rs`), one
//! message on the subject `<topic>[.<subjectParam value>]`:
//!
//! ```json
//! {"collection":"posts","hash":"…","timestamp":1767225600000,
//!  "params":{"postId":"p1"},"body":{…},"identity":"…","namespace":"acme"}
//! ```
//!
//! `params`, `body` and `identity` only when the collection asks for them;
//! `namespace` (our extension, which a reference consumer ignores) for a write in
//! a namespace. A [`QueueSink`] carries the messages: [`NatsQueue`] (feature
//! `nats`) publishes them on NATS, or on JetStream with acknowledgements and
//! de-duplication. A write never waits on the queue: messages go through a bounded
//! buffer, and what does not fit is dropped and counted.

#[cfg(feature = "nats")]
mod nats;

#[cfg(feature = "nats")]
pub use nats::{JetStreamSettings, NatsQueue};

use crate::config::queue::QueueSettings;
use crate::hooks::WriteEvent;
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// Where queue messages go.
pub trait QueueSink: Send + Sync + 'static {
    /// Hands one message on without waiting; `false` when it was dropped (a full
    /// buffer).
    fn publish(&self, subject: String, payload: Bytes) -> bool;
}

/// The subject and payload of the message for `event` under `settings`.
pub(crate) fn message(settings: &QueueSettings, event: &WriteEvent) -> (String, Bytes) {
    let mut subject = settings
        .topic
        .clone()
        .unwrap_or_else(|| event.collection.to_string());
    if let Some(param) = &settings.subject_param {
        // Re-checked here whatever the route allowed: a subject never carries a
        // value outside the pattern (no `.`, `*` or `>` by default).
        if let Some(value) = event
            .param(param)
            .filter(|v| settings.subject_id_pattern.is_match(v))
        {
            subject.push('.');
            subject.push_str(value);
        }
    }
    let mut payload = Map::new();
    payload.insert("collection".into(), json!(&*event.collection));
    payload.insert("hash".into(), json!(event.hash));
    payload.insert("timestamp".into(), json!(event.timestamp));
    if settings.include_params && !event.params.is_empty() {
        let params: Map<String, Value> = event
            .params
            .iter()
            .map(|(n, v)| (n.to_string(), json!(&**v)))
            .collect();
        payload.insert("params".into(), Value::Object(params));
    }
    if settings.include_body {
        match &event.body {
            Some(body) => {
                payload.insert("body".into(), Value::Object((**body).clone()));
            }
            None => tracing::warn!(
                collection = %event.collection,
                "includeBody is on but the write has no JSON data (a blob): body left out"
            ),
        }
    }
    if let (true, Some(identity)) = (settings.include_identity, &event.identity) {
        payload.insert("identity".into(), json!(&**identity));
    }
    if let Some(namespace) = &event.namespace {
        payload.insert("namespace".into(), json!(&**namespace));
    }
    let bytes = serde_json::to_vec(&Value::Object(payload)).unwrap_or_default();
    (subject, Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::WriteAction;
    use std::sync::Arc;

    fn event(params: &[(&str, &str)], body: Option<Value>) -> WriteEvent {
        WriteEvent {
            namespace: None,
            collection: "posts".into(),
            key: "posts/p1".into(),
            hash: "h".into(),
            timestamp: 7,
            action: WriteAction::Push,
            identity: Some("alice".into()),
            params: params
                .iter()
                .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
                .collect(),
            body: body.and_then(|b| b.as_object().cloned()).map(Arc::new),
            stored: true,
        }
    }

    fn settings(v: Value) -> QueueSettings {
        let template = crate::config::PathTemplate::parse("posts/{postId}").unwrap();
        let mut errors = Vec::new();
        let s = crate::config::queue::settings(Some(&v), Some(&template), "", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        s.unwrap()
    }

    #[test]
    fn the_subject_and_payload_are_the_references() {
        let bare = settings(json!({}));
        let (subject, payload) = message(&bare, &event(&[("postId", "p1")], None));
        assert_eq!(subject, "posts");
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            payload,
            json!({"collection": "posts", "hash": "h", "timestamp": 7})
        );

        let full = settings(json!({"topic": "posts.changed", "subjectParam": "postId",
            "includeParams": true, "includeBody": true, "includeIdentity": true}));
        let (subject, payload) = message(&full, &event(&[("postId", "p1")], Some(json!({"t": 1}))));
        assert_eq!(subject, "posts.changed.p1");
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            payload,
            json!({"collection": "posts", "hash": "h", "timestamp": 7,
                   "params": {"postId": "p1"}, "body": {"t": 1}, "identity": "alice"})
        );
    }

    #[test]
    fn a_parameter_outside_the_pattern_never_reaches_the_subject() {
        let s = settings(json!({"subjectParam": "postId"}));
        for value in ["a.b", "a*", ">", "a b"] {
            let (subject, _) = message(&s, &event(&[("postId", value)], None));
            assert_eq!(subject, "posts", "{value}");
        }
    }
}
