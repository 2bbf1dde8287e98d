//! A replay cache shared by several nodes: [`ReplayStore`], with a Redis backend
//! ([`RedisReplay`], feature `redis`). Each (signer, nonce) is claimed with one
//! atomic command and forgotten when its request could no longer be accepted, so a
//! request accepted by one node and replayed to another is refused. If the store
//! cannot answer, signed requests are refused with `503` (fail closed): nothing is
//! ever accepted twice.

use futures::future::BoxFuture;

/// Remembers claimed nonces for all nodes.
pub trait ReplayStore: Send + Sync + std::fmt::Debug + 'static {
    /// Claims `fingerprint` (16 bytes standing for a signer and a nonce) for
    /// `ttl_ms`: `Ok(true)` the first time, `Ok(false)` when it was claimed already.
    ///
    /// # Errors
    /// When the store cannot answer (the request is then refused with `503`).
    fn claim<'a>(
        &'a self,
        fingerprint: [u8; 16],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, String>>;

    /// True when the store answers now (for `/health/ready`).
    fn ping(&self) -> BoxFuture<'_, bool>;
}

/// A [`ReplayStore`] in Redis: `SET <prefix><hex> 1 NX PX <ttl>`.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Clone)]
pub struct RedisReplay {
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for RedisReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplay")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "redis")]
impl RedisReplay {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`
    /// (`starfish:nonce:` when `None`). The connection is re-established when lost.
    ///
    /// A Redis that may evict keys (`maxmemory-policy` other than `noeviction`)
    /// could forget a claimed nonce and let its replay through: refused. When the
    /// policy cannot be read (`CONFIG` disabled, as on managed services), a warning
    /// says to check it.
    ///
    /// # Errors
    /// When the URL is invalid, the first connection fails, or Redis evicts keys.
    pub async fn connect(url: &str, prefix: Option<&str>) -> Result<Self, String> {
        let mut conn = connection(url).await?;
        let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await;
        match policy.as_deref() {
            Ok([_, policy]) if policy != "noeviction" => {
                return Err(format!(
                    "Redis may evict keys (maxmemory-policy {policy}): a claimed nonce could vanish and its replay be accepted; set maxmemory-policy noeviction"
                ));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "cannot read Redis's maxmemory-policy: make sure it is noeviction"
            ),
        }
        Ok(Self {
            conn,
            prefix: prefix.unwrap_or("starfish:nonce:").to_owned(),
        })
    }
}

/// A connection to the Redis at `url` that is re-established when lost; a command
/// gets 2 s.
///
/// # Errors
/// When the URL is invalid or the first connection fails.
#[cfg(feature = "redis")]
pub(crate) async fn connection(url: &str) -> Result<redis::aio::ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis URL: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(2)))
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_number_of_retries(1);
    redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("redis: {e}"))
}

#[cfg(feature = "redis")]
impl ReplayStore for RedisReplay {
    fn claim<'a>(
        &'a self,
        fingerprint: [u8; 16],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let key = format!("{}{}", self.prefix, hex::encode(fingerprint));
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(1).arg("NX").arg("PX").arg(ttl_ms.max(1));
            // After an outage the first command meets the failed connection (refused:
            // never sent) and starts a new one: asked once more, it gets through
            // as soon as Redis is back. A command that may have been sent is never
            // repeated (it would find its own claim and refuse the request).
            let set: Option<String> = match cmd.query_async(&mut conn).await {
                Err(e) if e.is_connection_refusal() => cmd.query_async(&mut conn).await,
                other => other,
            }
            .map_err(|e| format!("redis: {e}"))?;
            Ok(set.is_some())
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        })
    }
}
