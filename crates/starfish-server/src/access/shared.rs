//! Request counts shared by several nodes: [`SharedLimits`], with a Redis backend
//! ([`RedisLimits`], feature `redis`). Each check is one atomic round trip (a script
//! run by Redis), timed by Redis's clock, so a limit of N per window holds for all
//! nodes together, not N per node.
//!
//! If the shared store does not answer, each node falls back to its own counters
//! (the limit is then per node, at most as many times looser as there are nodes)
//! and says so in its log: a rate limit is a bound on cost, not a security
//! decision, so an outage of Redis does not refuse every request. The replay cache
//! ([`crate::auth::ReplayStore`]) fails closed instead.

use futures::future::BoxFuture;

/// Counters kept for all nodes.
pub trait SharedLimits: Send + Sync + std::fmt::Debug + 'static {
    /// Adds one to each fixed-window counter `(key, window_ms)`, all at once, and
    /// returns for each its count in the current window and the milliseconds until
    /// that window ends. A window starts at a counter's first request.
    ///
    /// # Errors
    /// When the store cannot answer (the node then counts on its own).
    fn count<'a>(
        &'a self,
        counters: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, String>>;

    /// A cell rate (GCRA) on `key`: one request every `interval_us` microseconds,
    /// `tolerance_us` of burst. `Ok(0)` when the request is admitted (and counted),
    /// otherwise the microseconds to wait (nothing counted).
    ///
    /// # Errors
    /// When the store cannot answer (the node then counts on its own).
    fn pace<'a>(
        &'a self,
        key: &'a str,
        interval_us: u64,
        tolerance_us: u64,
    ) -> BoxFuture<'a, Result<u64, String>>;
}

/// [`SharedLimits`] in Redis: each check is one `EVALSHA` of a short script, so it
/// is atomic and costs one round trip. Keys start with a prefix and expire with
/// their window.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Clone)]
pub struct RedisLimits {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    count: std::sync::Arc<redis::Script>,
    pace: std::sync::Arc<redis::Script>,
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The largest window (ms) and pacing interval or burst (µs) sent to Redis: a fixed
/// window of up to 285 years (Redis takes at most an i64 of milliseconds), a pacing
/// interval of up to 104 days (the script's microseconds must stay exact in a Lua
/// double, 2^53). Longer ones are kept as this long.
#[cfg(feature = "redis")]
const MAX_WINDOW_MS: u64 = 9_000_000_000_000;

/// Fixed windows: INCR each key, start its window on the first request, answer
/// (count, ms left) pairs.
#[cfg(feature = "redis")]
const COUNT_SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if n == 1 or ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[i])
    ttl = tonumber(ARGV[i])
  end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out
";

/// GCRA on Redis's clock (µs): the key holds the theoretical arrival time.
#[cfg(feature = "redis")]
const PACE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local due = math.max(tat, now)
if due - now > tolerance then
  return due - now - tolerance
end
local next = due + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.floor((next - now) / 1000) + 1)
return 0
";

#[cfg(feature = "redis")]
impl RedisLimits {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`
    /// (`starfish:rate:` when `None`). The connection is re-established when lost.
    ///
    /// # Errors
    /// When the URL is invalid or the first connection fails.
    pub async fn connect(url: &str, prefix: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            conn: crate::auth::redis_connection(url).await?,
            prefix: prefix.unwrap_or("starfish:rate:").to_owned(),
            count: std::sync::Arc::new(redis::Script::new(COUNT_SCRIPT)),
            pace: std::sync::Arc::new(redis::Script::new(PACE_SCRIPT)),
        })
    }
}

#[cfg(feature = "redis")]
impl SharedLimits for RedisLimits {
    fn count<'a>(
        &'a self,
        counters: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.count.prepare_invoke();
            for (key, window_ms) in counters {
                call.key(format!("{}{key}", self.prefix))
                    .arg((*window_ms).clamp(1, MAX_WINDOW_MS));
            }
            let flat: Vec<i64> = call
                .invoke_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            if flat.len() != counters.len() * 2 {
                return Err("redis: unexpected answer to the count script".into());
            }
            Ok(flat
                .chunks_exact(2)
                .map(|p| {
                    (
                        u64::try_from(p[0]).unwrap_or(0),
                        u64::try_from(p[1]).unwrap_or(0),
                    )
                })
                .collect())
        })
    }

    fn pace<'a>(
        &'a self,
        key: &'a str,
        interval_us: u64,
        tolerance_us: u64,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let wait: i64 = self
                .pace
                .key(format!("{}{key}", self.prefix))
                .arg(interval_us.clamp(1, MAX_WINDOW_MS))
                .arg(tolerance_us.min(MAX_WINDOW_MS))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(u64::try_from(wait).unwrap_or(0))
        })
    }
}
