//! Flags for slow and many clients: the HTTP server's connection limits (header
//! read, idle keep-alive, connection count) and the router's request limits (request
//! timeout, requests in flight).

use crate::serve::ServeLimits;
use serde::{Deserialize, Serialize, Serializer};
use starfish_server::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT, SyncOptions};
use std::str::FromStr;
use std::time::Duration;

/// The default `limits.headerReadTimeout`, in seconds.
const DEFAULT_HEADER_READ_TIMEOUT: f64 = 10.0;
/// The default `limits.idleTimeout`, in seconds.
const DEFAULT_IDLE_TIMEOUT: f64 = 60.0;
/// The default `limits.maxConnections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default `limits.streamsNice`.
const DEFAULT_STREAMS_NICE: u8 = 0;
/// The lowest priority a thread can take (`nice` 19).
const MAX_NICE: u8 = 19;
/// More connections than a semaphore holds, with room to spare.
const MAX_CONNECTIONS_BOUND: usize = 1 << 32;

/// Slow and many clients. Like every `serve` option, each is also a `STARFISH_*`
/// variable and a `server:` key (under `limits:`, in camelCase).
#[derive(clap::Args)]
#[command(next_help_heading = "Slow and many clients")]
pub(crate) struct LimitsArgs {
    /// Seconds a client has to send a request's line and headers, counted from the
    /// connection's accept or from the first byte of a request on a kept-alive
    /// connection; past it the connection is closed [default: 10].
    #[arg(long, env = "STARFISH_HEADER_READ_TIMEOUT", value_name = "SECONDS")]
    header_read_timeout: Option<Seconds>,
    /// Seconds a kept-alive connection may stay idle between requests before it is
    /// closed [default: 60].
    #[arg(long, env = "STARFISH_IDLE_TIMEOUT", value_name = "SECONDS")]
    idle_timeout: Option<Seconds>,
    /// Connections served at once; past it, new connections wait in the listen
    /// backlog until one closes [default: 10000].
    #[arg(long, env = "STARFISH_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a whole request (body included) may take; past it, 408 [default: 30].
    #[arg(long, env = "STARFISH_REQUEST_TIMEOUT", value_name = "SECONDS")]
    request_timeout: Option<Seconds>,
    /// Requests handled at once; past it, 503 at once, never queued [default: 1024].
    #[arg(long, env = "STARFISH_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Option<usize>,
    /// Live-change subscriptions open at once on this node; past it, 429 [default:
    /// from memory, a quarter of it at 64 KiB each, 1000 to 100000, under
    /// --max-connections].
    #[arg(long, env = "STARFISH_MAX_SUBSCRIPTIONS", value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Subscriptions one caller may hold [default: 8].
    #[arg(long, env = "STARFISH_MAX_SUBSCRIPTIONS_PER_CALLER", value_name = "N")]
    max_subscriptions_per_caller: Option<usize>,
    /// Subscriptions from one client address (behind the trusted proxies)
    /// [default: 256].
    #[arg(long, env = "STARFISH_MAX_SUBSCRIPTIONS_PER_IP", value_name = "N")]
    max_subscriptions_per_ip: Option<usize>,
    /// A namespace's share of the node's subscriptions, unless its limits set
    /// maxSubscriptions [default: half of --max-subscriptions].
    #[arg(
        long,
        env = "STARFISH_MAX_SUBSCRIPTIONS_PER_NAMESPACE",
        value_name = "N"
    )]
    max_subscriptions_per_namespace: Option<usize>,
    /// How much lower the priority of the threads that write open live-change
    /// streams is than the server's, in `nice` steps (0 to 19; `nice` stops at
    /// 19): requests arriving while a change fans out to thousands of streams get
    /// the cores first, the fan-out takes longer while requests keep them busy,
    /// and a push waits longer on the streams (Linux; elsewhere ignored)
    /// [default: 0, the same as requests'].
    #[arg(long, env = "STARFISH_STREAMS_NICE", value_name = "NICE")]
    streams_nice: Option<u8>,
}

/// The `server.limits` section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LimitsSection {
    header_read_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    max_connections: Option<usize>,
    request_timeout: Option<f64>,
    max_in_flight: Option<usize>,
    max_subscriptions: Option<usize>,
    max_subscriptions_per_caller: Option<usize>,
    max_subscriptions_per_ip: Option<usize>,
    max_subscriptions_per_namespace: Option<usize>,
    streams_nice: Option<u8>,
}

/// A positive number of seconds (fractions allowed), at least a millisecond.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Seconds(f64);

impl Seconds {
    fn new(secs: f64) -> Result<Self, String> {
        if secs.is_finite() && (0.001..=u32::MAX as f64).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(format!(
                "{secs} is not a number of seconds between 0.001 and {}",
                u32::MAX
            ))
        }
    }

    pub(crate) fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        Self::new(secs)
    }
}

impl Serialize for Seconds {
    /// Whole seconds print as integers (`10`, not `10.0`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 {
            serializer.serialize_u64(self.0 as u64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

/// The effective limits.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Limits {
    header_read_timeout: Seconds,
    idle_timeout: Seconds,
    max_connections: usize,
    request_timeout: Seconds,
    max_in_flight: usize,
    max_subscriptions: usize,
    max_subscriptions_per_caller: usize,
    max_subscriptions_per_ip: usize,
    max_subscriptions_per_namespace: usize,
    streams_nice: u8,
}

/// Subscriptions by default: a quarter of the machine's memory at 64 KiB each
/// (a stream's socket buffers and state, generously), 1000 to 100000, and under
/// the connection limit.
fn default_subscriptions(max_connections: usize) -> usize {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(4 << 30, |kib| kib.saturating_mul(1024));
    (memory / 4 / (64 << 10))
        .clamp(1_000, 100_000)
        .min(max_connections.saturating_mul(9) / 10)
        .max(1)
}

/// The flag's value, else the section's (checked and named `server.limits.KEY`).
fn seconds(
    flag: Option<Seconds>,
    section: Option<f64>,
    key: &str,
    default: f64,
) -> Result<Seconds, String> {
    match (flag, section) {
        (Some(s), _) => Ok(s),
        (None, Some(secs)) => Seconds::new(secs).map_err(|e| format!("server.limits.{key}: {e}")),
        (None, None) => Seconds::new(default),
    }
}

/// The flag's value, else the section's, else the default; at least 1 and at most
/// `max`.
fn count(
    flag: Option<usize>,
    section: Option<usize>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    let n = flag.or(section).unwrap_or(default);
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{name} must be between 1 and {max}, got {n}"))
    }
}

impl Limits {
    /// Flags and environment (`args`) over the section over the defaults.
    pub(crate) fn resolve(args: LimitsArgs, section: LimitsSection) -> Result<Self, String> {
        Ok(Self {
            header_read_timeout: seconds(
                args.header_read_timeout,
                section.header_read_timeout,
                "headerReadTimeout",
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            idle_timeout: seconds(
                args.idle_timeout,
                section.idle_timeout,
                "idleTimeout",
                DEFAULT_IDLE_TIMEOUT,
            )?,
            max_connections: count(
                args.max_connections,
                section.max_connections,
                "--max-connections (limits.maxConnections)",
                DEFAULT_MAX_CONNECTIONS,
                MAX_CONNECTIONS_BOUND,
            )?,
            request_timeout: seconds(
                args.request_timeout,
                section.request_timeout,
                "requestTimeout",
                DEFAULT_REQUEST_TIMEOUT.as_secs_f64(),
            )?,
            max_in_flight: count(
                args.max_in_flight,
                section.max_in_flight,
                "--max-in-flight (limits.maxInFlight)",
                DEFAULT_MAX_IN_FLIGHT,
                MAX_CONNECTIONS_BOUND,
            )?,
            streams_nice: match args.streams_nice.or(section.streams_nice) {
                Some(nice) if nice > MAX_NICE => {
                    return Err(format!(
                        "--streams-nice (limits.streamsNice) must be between 0 and {MAX_NICE}, got {nice}"
                    ));
                }
                nice => nice.unwrap_or(DEFAULT_STREAMS_NICE),
            },
            ..Self::subscriptions(&args, &section)?
        })
    }

    /// The `nice` of the threads that write open streams.
    pub(crate) fn streams_nice(&self) -> u8 {
        self.streams_nice
    }

    /// The subscription bounds (the rest of the value is a placeholder).
    fn subscriptions(args: &LimitsArgs, section: &LimitsSection) -> Result<Self, String> {
        let connections = args
            .max_connections
            .or(section.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let defaults = starfish_server::live::LiveLimits::default();
        let total = count(
            args.max_subscriptions,
            section.max_subscriptions,
            "--max-subscriptions (limits.maxSubscriptions)",
            default_subscriptions(connections),
            MAX_CONNECTIONS_BOUND,
        )?;
        Ok(Self {
            max_subscriptions: total,
            max_subscriptions_per_caller: count(
                args.max_subscriptions_per_caller,
                section.max_subscriptions_per_caller,
                "--max-subscriptions-per-caller (limits.maxSubscriptionsPerCaller)",
                defaults.per_caller.min(total),
                total,
            )?,
            max_subscriptions_per_ip: count(
                args.max_subscriptions_per_ip,
                section.max_subscriptions_per_ip,
                "--max-subscriptions-per-ip (limits.maxSubscriptionsPerIp)",
                defaults.per_ip.min(total),
                total,
            )?,
            max_subscriptions_per_namespace: count(
                args.max_subscriptions_per_namespace,
                section.max_subscriptions_per_namespace,
                "--max-subscriptions-per-namespace (limits.maxSubscriptionsPerNamespace)",
                (total / 2).max(1),
                total,
            )?,
            header_read_timeout: Seconds(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: Seconds(DEFAULT_IDLE_TIMEOUT),
            max_connections: connections,
            request_timeout: Seconds(DEFAULT_REQUEST_TIMEOUT.as_secs_f64()),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            streams_nice: DEFAULT_STREAMS_NICE,
        })
    }

    /// `options` with the router's limits (request timeout, requests in flight).
    pub(crate) fn apply(&self, options: SyncOptions) -> SyncOptions {
        let mut live = starfish_server::live::LiveLimits::with_total(self.max_subscriptions);
        live.per_caller = self.max_subscriptions_per_caller;
        live.per_ip = self.max_subscriptions_per_ip;
        live.per_namespace = Some(self.max_subscriptions_per_namespace);
        options
            .with_request_timeout(self.request_timeout.duration())
            .with_max_in_flight(self.max_in_flight)
            .with_live_limits(live)
    }

    /// The HTTP server's limits, its open streams written on `streams`.
    pub(crate) fn serve_limits(&self, streams: Option<tokio::runtime::Handle>) -> ServeLimits {
        ServeLimits {
            header_read_timeout: self.header_read_timeout.duration(),
            idle_timeout: self.idle_timeout.duration(),
            max_connections: self.max_connections,
            request_timeout: self.request_timeout.duration(),
            streams,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_positive_and_print_whole_when_whole() {
        assert_eq!(
            "1.5".parse::<Seconds>().unwrap().duration().as_millis(),
            1500
        );
        for bad in ["0", "-1", "nan", "inf", "x", "0.0001"] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad}");
        }
        let printed = serde_json::to_string(&("10".parse::<Seconds>().unwrap(), Seconds(0.5)));
        assert_eq!(printed.unwrap(), "[10,0.5]");
    }

    fn no_flags() -> LimitsArgs {
        LimitsArgs {
            header_read_timeout: None,
            idle_timeout: None,
            max_connections: None,
            request_timeout: None,
            max_in_flight: None,
            max_subscriptions: None,
            max_subscriptions_per_caller: None,
            max_subscriptions_per_ip: None,
            max_subscriptions_per_namespace: None,
            streams_nice: None,
        }
    }

    #[test]
    fn flags_beat_the_section_which_beats_the_defaults() {
        let args = LimitsArgs {
            header_read_timeout: Some(Seconds(2.0)),
            ..no_flags()
        };
        let section = LimitsSection {
            header_read_timeout: Some(5.0),
            idle_timeout: Some(7.0),
            max_connections: Some(3),
            ..LimitsSection::default()
        };
        let limits = Limits::resolve(args, section).unwrap().serve_limits(None);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(limits.max_connections, 3);
        assert_eq!(limits.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn subscription_bounds_resolve_under_the_connection_limit() {
        let section = LimitsSection {
            max_connections: Some(100),
            max_subscriptions_per_ip: Some(5),
            ..LimitsSection::default()
        };
        let limits = Limits::resolve(no_flags(), section).unwrap();
        // From memory, but under 9 in 10 of the connections.
        assert_eq!(limits.max_subscriptions, 90);
        assert_eq!(limits.max_subscriptions_per_ip, 5);
        assert_eq!(limits.max_subscriptions_per_namespace, 45);
        assert_eq!(limits.max_subscriptions_per_caller, 8);
        let args = LimitsArgs {
            max_subscriptions: Some(10),
            max_subscriptions_per_caller: Some(11),
            ..no_flags()
        };
        let err = Limits::resolve(args, LimitsSection::default()).unwrap_err();
        assert!(err.contains("--max-subscriptions-per-caller"), "{err}");
    }

    #[test]
    fn the_streams_nice_comes_from_the_flag_else_the_section_and_is_at_most_19() {
        let from = |flag: Option<u8>, section: Option<u8>| {
            let args = LimitsArgs {
                streams_nice: flag,
                ..no_flags()
            };
            let section = LimitsSection {
                streams_nice: section,
                ..LimitsSection::default()
            };
            Limits::resolve(args, section).map(|l| l.streams_nice())
        };
        assert_eq!(from(None, None), Ok(0));
        assert_eq!(from(None, Some(10)), Ok(10));
        assert_eq!(from(Some(19), Some(0)), Ok(19));
        let err = from(Some(20), None).unwrap_err();
        assert!(err.contains("--streams-nice"), "{err}");
        let err = from(None, Some(40)).unwrap_err();
        assert!(err.contains("limits.streamsNice"), "{err}");
    }

    #[test]
    fn zero_counts_and_bad_durations_are_refused() {
        let args = LimitsArgs {
            max_in_flight: Some(0),
            ..no_flags()
        };
        let err = Limits::resolve(args, LimitsSection::default()).unwrap_err();
        assert!(err.contains("--max-in-flight"), "{err}");
        let section = LimitsSection {
            idle_timeout: Some(-1.0),
            ..LimitsSection::default()
        };
        let err = Limits::resolve(no_flags(), section).unwrap_err();
        assert!(err.starts_with("server.limits.idleTimeout:"), "{err}");
    }
}
