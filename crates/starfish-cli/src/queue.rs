//! `starfish serve`'s queue settings: where the queue messages of collections with
//! a `queue` setting go (the reference's queuing plugin with its `NatsQueue`).
//!
//! ```yaml
//! server:
//!   queue:
//!     nats: nats://127.0.0.1:4222   # --queue-nats, STARFISH_QUEUE_NATS
//!     stream: STARFISH_QUEUE        # --queue-stream: JetStream, acknowledged, de-duplicated
//! ```
//!
//! Without `stream`, messages go on core NATS (at most once, as the reference). With
//! it, into that JetStream stream (created when missing, over every subject the
//! config's collections publish on): each message until acknowledged, so a
//! consumer misses nothing across a NATS restart.

use serde::{Deserialize, Serialize};
use starfish_server::{SyncConfig, SyncOptions};

/// The `server: queue:` section, and its flags.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct QueueSection {
    /// The NATS server queue messages are published on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nats: Option<String>,
    /// A JetStream stream to publish into (acknowledged, de-duplicated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream: Option<String>,
}

impl QueueSection {
    /// The flags over the section.
    pub(crate) fn with_flags(mut self, nats: Option<String>, stream: Option<String>) -> Self {
        if nats.is_some() {
            self.nats = nats;
        }
        if stream.is_some() {
            self.stream = stream;
        }
        self
    }

    /// `options` with the queue connected; a warning for each queue-only
    /// collection whose writes would go nowhere.
    ///
    /// # Errors
    /// The NATS server cannot be reached, or the stream cannot be made.
    pub(crate) fn apply(
        &self,
        options: SyncOptions,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<SyncOptions, String> {
        warn_queue_only(&options.config, self.nats.is_some());
        let Some(url) = &self.nats else {
            return Ok(options);
        };
        let stream = self
            .stream
            .as_ref()
            .map(|stream| (stream.clone(), subjects(&options.config)));
        let queue = runtime.block_on(nats_queue(url, stream))?;
        Ok(options.with_queue(queue))
    }
}

/// Queue messages on NATS at `url`, into the JetStream `stream` (name, subjects)
/// when one is set.
#[cfg(feature = "nats")]
async fn nats_queue(
    url: &str,
    stream: Option<(String, Vec<String>)>,
) -> Result<std::sync::Arc<dyn starfish_server::queue::QueueSink>, String> {
    let jetstream = stream
        .map(|(stream, subjects)| starfish_server::queue::JetStreamSettings { stream, subjects });
    let queue = starfish_server::queue::NatsQueue::connect(url, jetstream)
        .await
        .map_err(|e| format!("cannot reach NATS (--queue-nats): {e}"))?;
    Ok(std::sync::Arc::new(queue))
}

#[cfg(not(feature = "nats"))]
async fn nats_queue(
    _url: &str,
    _stream: Option<(String, Vec<String>)>,
) -> Result<std::sync::Arc<dyn starfish_server::queue::QueueSink>, String> {
    Err("this build lacks the `nats` feature (--queue-nats)".into())
}

/// Every subject the config's collections publish on (the root's, the config
/// namespaces' and the templates' runtime namespaces are made from): each topic,
/// and below it when a parameter is appended.
fn subjects(config: &SyncConfig) -> Vec<String> {
    let mut out = Vec::new();
    let collections = config
        .all_collections()
        .map(|(_, c)| c)
        .chain(config.template_collections());
    for c in collections {
        let Some(queue) = &c.queue else { continue };
        let topic = queue.topic.clone().unwrap_or_else(|| c.name.to_string());
        if queue.subject_param.is_some() {
            out.push(format!("{topic}.>"));
        }
        out.push(topic);
    }
    out.sort();
    out.dedup();
    out
}

/// As the reference warns: a queue-only collection (`appendOnly.persist: false`)
/// whose writes are neither stored nor published.
fn warn_queue_only(config: &SyncConfig, queue: bool) {
    for (_, c) in config.all_collections() {
        let queue_only = c.append_only.as_ref().is_some_and(|a| !a.persist);
        if queue_only && (!queue || c.queue.is_none()) {
            tracing::warn!(
                collection = %c.name,
                "appendOnly.persist=false but no queue publishes this collection (a `queue` setting and --queue-nats): its pushes will be neither stored nor published"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_holds_every_topic_templates_included() {
        let config = SyncConfig::from_yaml_str(
            r#"
version: 1
collections:
  - {name: posts, storagePath: "posts/{id}", readRoles: [public], writeRoles: [public],
     queue: {topic: posts.changed, subjectParam: id}}
  - {name: quiet, storagePath: "quiet/{id}", readRoles: [public], writeRoles: [public]}
namespaceTemplates:
  team:
    collections:
      - {name: orders, storagePath: "orders/{id}", readRoles: [public], writeRoles: [public],
         queue: {}}
"#,
        )
        .unwrap();
        assert_eq!(
            subjects(&config),
            ["orders", "posts.changed", "posts.changed.>"]
        );
    }
}
