//! A replay cache shared by several nodes: [`ReplayStore`], with a Redis backend
//! ([`RedisReplay`], feature `redis`). Each (signer, nonce) is claimed with one
//! atomic command and forgotten when its request could no longer be accepted, so a
//! request accepted by one node and replayed to another is refused. If the store
//! cannot answer, signed requests are refused with `503` (fail closed): nothing is
//! ever accepted twice.
//!
//! A store can also *forget*: a Redis without persistence that restarts, or is
//! flushed, comes back empty, and a request it had claimed could be claimed again.
//! So every claim also answers since when the store remembers
//! ([`Claim::remembers_since_ms`]), and a request signed before that is refused
//! with `503`: it may have been accepted in the memory that was lost. The official
//! clients sign again with the current time when they retry, and those requests pass.

use futures::future::BoxFuture;

/// What a [`ReplayStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// True the first time the fingerprint is claimed.
    pub first: bool,
    /// Since when (milliseconds since the epoch, by the clock of the node that first
    /// found the store empty) the store remembers every claim made: a request
    /// signed before this is refused, since it may have been accepted in a memory the
    /// store lost. `0` for a store that never forgets.
    pub remembers_since_ms: u64,
}

/// Remembers claimed nonces for all nodes.
pub trait ReplayStore: Send + Sync + std::fmt::Debug + 'static {
    /// Claims `fingerprint` (16 bytes standing for a signer and a nonce) for
    /// `ttl_ms`, at `now_ms` by this node's clock; says whether it was the first
    /// claim and since when the store remembers claims. A store that finds it has
    /// lost its memory (a marker missing) starts remembering from `now_ms`.
    ///
    /// # Errors
    /// When the store cannot answer (the request is then refused with `503`).
    fn claim<'a>(
        &'a self,
        fingerprint: [u8; 16],
        ttl_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, String>>;

    /// True when the store answers now (for `/health/ready`).
    fn ping(&self) -> BoxFuture<'_, bool>;

    /// Forgets a claim, so that the same fingerprint may be claimed again (a
    /// webhook whose push failed, retried by its sender). By default nothing is
    /// forgotten.
    fn release(&self, _fingerprint: [u8; 16]) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A [`ReplayStore`] in Redis: one script per claim, atomically, counts the claim
/// (`INCR <prefix>count`), reads the marker `<prefix>since`, and runs
/// `SET <prefix><hex> 1 NX PX <ttl>`.
///
/// Redis may lose all it held (a restart without persistence: the marker is gone)
/// or only its latest writes (a replica promoted after a failover, a restart from a
/// snapshot or an `everysec` append-only file): then the count goes back below what
/// this node saw before. Either way the marker is set to the node's time, and
/// requests signed before it are refused from then on, by every node.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Clone)]
pub struct RedisReplay {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    script: std::sync::Arc<redis::Script>,
    /// The highest count this node has seen.
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// KEYS: the nonce's key, the marker, the count. ARGV: the nonce's time to live
/// (ms), the node's time (ms), the highest count the node saw. Returns {1 when
/// first claimed else 0, the marker's time, the count}.
#[cfg(feature = "redis")]
const CLAIM_SCRIPT: &str = r"
local since = redis.call('GET', KEYS[2])
local n = redis.call('INCR', KEYS[3])
local seen = tonumber(ARGV[3])
if (not since) or n <= seen then
  if n <= seen then
    n = seen + 1
    redis.call('SET', KEYS[3], n)
  end
  if (not since) or tonumber(since) < tonumber(ARGV[2]) then
    since = ARGV[2]
    redis.call('SET', KEYS[2], since)
  end
end
local first = 0
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then first = 1 end
return {first, tonumber(since), n}
";

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
            script: std::sync::Arc::new(redis::Script::new(CLAIM_SCRIPT)),
            seen: std::sync::Arc::default(),
        })
    }

    /// Starts the cache's memory at `now_ms` if it has none (the marker is missing):
    /// a node calls this once it is connected, before serving, so that on a new
    /// Redis the first requests are not refused as signed before the memory began.
    /// Any moment after Redis lost its data is a safe start: nothing was claimed in
    /// the new memory before it. Returns since when the cache remembers.
    ///
    /// # Errors
    /// When Redis does not answer.
    pub async fn start_memory(&self, now_ms: u64) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let key = format!("{}since", self.prefix);
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(now_ms)
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let since: u64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        Ok(since)
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
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.script.prepare_invoke();
            let seen = self.seen.load(std::sync::atomic::Ordering::Acquire);
            call.key(format!("{}{}", self.prefix, hex::encode(fingerprint)))
                .key(format!("{}since", self.prefix))
                .key(format!("{}count", self.prefix))
                .arg(ttl_ms.max(1))
                .arg(now_ms)
                .arg(seen);
            // After an outage the first command meets the failed connection (refused:
            // never sent) and starts a new one: asked once more, it gets through
            // as soon as Redis is back. A command that may have been sent is never
            // repeated (it would find its own claim and refuse the request). A
            // restarted Redis has also forgotten the script: `invoke` loads it again.
            let (first, since, count): (i64, i64, i64) = match call.invoke_async(&mut conn).await {
                Err(e) if e.is_connection_refusal() => call.invoke_async(&mut conn).await,
                other => other,
            }
            .map_err(|e| format!("redis: {e}"))?;
            self.seen.fetch_max(
                u64::try_from(count).unwrap_or(0),
                std::sync::atomic::Ordering::AcqRel,
            );
            Ok(Claim {
                first: first == 1,
                remembers_since_ms: u64::try_from(since).unwrap_or(u64::MAX),
            })
        })
    }

    fn release(&self, fingerprint: [u8; 16]) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let key = format!("{}{}", self.prefix, hex::encode(fingerprint));
            if let Err(e) = redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
            {
                tracing::warn!(error = %e, "a replay claim was not released");
            }
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
