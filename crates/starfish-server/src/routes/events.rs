//! `GET /[ns/]events?paths=a,b`: live changes of the documents the caller may read,
//! as Server-Sent Events (crate::live), in the shape the official TypeScript client's
//! `subscribeChanges` reads: a signed GET, one `data:` frame per change
//! (`{"namespace","collection","path","hash","timestamp"}`), never the data.
//!
//! `paths` are document paths as in a pull (`users/abc/notes`), comma-separated, at
//! most [`MAX_CANDIDATES`] (checked before anything else: `400 too many
//! candidates`). Each one is routed and authorised exactly as a pull of it would be;
//! one the caller may not read refuses the whole subscription (`403`), so what a
//! subscriber hears about is what it could pull.

use super::endpoint::{Doc, Endpoint};
use super::{admit, allow, authenticate, charge, client_ip, is_public, query, rate_check};
use crate::access::Action;
use crate::app::state::AppState;
use crate::live::bus::{Opening, Position, Subscription};
use crate::routes::error::ApiError;
use crate::tenants::Scope;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::time::Duration;

/// Most documents one subscription may name.
pub(crate) const MAX_CANDIDATES: usize = 64;
/// A comment frame this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// A stream ends after this long (the client reconnects): what was authorised when
/// it opened (a certificate since expired or revoked, a tenant since suspended) is
/// authorised again at least this often.
const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The documents `?paths=` names, each routed as a pull of it would be.
fn candidates(parts: &Parts, scope: &Scope) -> Result<Vec<Doc>, ApiError> {
    let raw = query::param(parts.uri.query(), "paths")
        .filter(|p| !p.is_empty())
        .ok_or(ApiError::MissingPaths)?;
    if raw.split(',').count() > MAX_CANDIDATES {
        return Err(ApiError::TooManyCandidates);
    }
    let mut docs = Vec::new();
    for candidate in raw.split(',') {
        let path = format!("/pull/{candidate}");
        match Endpoint::parse(scope, |_| None, &Method::GET, &path)? {
            Endpoint::Pull(_, doc) => docs.push(doc),
            // A bundle is several documents: name them.
            _ => return Err(ApiError::NotFound),
        }
    }
    Ok(docs)
}

/// The frames of a stream: at once its opening (a `: connected` comment, what it
/// missed since its `Last-Event-ID`, its position), then one frame per change, a
/// keep-alive comment every 20 s, until `lifetime` has passed or the server stops.
fn frames(
    subscription: Subscription,
    lifetime: Duration,
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let now = tokio::time::Instant::now();
    let (first_tick, end_at) = (now + KEEPALIVE, now + lifetime);
    futures::stream::unfold(
        (subscription, None::<Timers>, stopping, true),
        move |(mut sub, mut timers, mut stopping, first)| async move {
            if first {
                let opening = std::mem::take(&mut sub.opening);
                return Some((opening, (sub, timers, stopping, false)));
            }
            // Made at the first frame after the opening, not before: a server may
            // move the stream to another runtime once its opening is written, and
            // a timer belongs to the runtime it is made on. Armed once: a timer is
            // not set and cancelled at every frame.
            let (ticks, end) = timers.get_or_insert_with(|| {
                let ticks = tokio::time::interval_at(first_tick, KEEPALIVE);
                (ticks, Box::pin(tokio::time::sleep_until(end_at)))
            });
            let frame = tokio::select! {
                // A frame waiting is taken without looking at anything else.
                biased;
                // The frame all its listeners share, as it is.
                frame = sub.frames.recv() => Bytes::clone(&*frame?),
                _ = ticks.tick() => Bytes::from_static(b": keep-alive\n\n"),
                // Past its lifetime, or the server is shutting down: the stream ends
                // (at shutdown the bus ends it, or, outside a runtime, `stopping`).
                () = end.as_mut() => return None,
                _ = async { stopping.as_mut()?.wait_for(|stop| *stop).await.ok() },
                    if stopping.is_some() => return None,
            };
            Some((frame, (sub, timers, stopping, false)))
        },
    )
}

/// A stream's keep-alive ticks and the end of its lifetime.
type Timers = (
    tokio::time::Interval,
    std::pin::Pin<Box<tokio::time::Sleep>>,
);

/// The stream's `Last-Event-ID`, when it sent one: `Some(None)` for an id that is
/// not one this server gives (it is told to pull).
fn last_event_id(parts: &Parts) -> Option<Option<Position>> {
    let id = parts.headers.get("last-event-id")?;
    Some(id.to_str().ok().and_then(Position::parse))
}

pub(super) async fn events(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
) -> Result<Response, ApiError> {
    let docs = candidates(parts, scope)?;
    let public = docs.iter().all(|d| is_public(&d.collection, Action::Pull));
    let (caller, _) = authenticate(state, parts, Body::empty(), public, Some(scope)).await?;
    admit(scope, &caller)?;
    charge(state, parts, scope, &caller).await?;
    for doc in &docs {
        allow(state, &caller, scope, doc, Action::Pull).await?;
    }
    // The collections' own pull limits, once per collection named.
    let mut seen = Vec::new();
    for doc in &docs {
        if !seen.contains(&doc.collection.name.as_str()) {
            seen.push(doc.collection.name.as_str());
            rate_check(state, parts, scope, &doc.collection, &caller, Action::Pull).await?;
        }
    }
    let namespace = scope.namespace.as_ref().map_or("", |n| n.as_str());
    let generation = scope.generation.as_deref().unwrap_or("");
    let places = docs
        .iter()
        .map(|d| crate::live::bus::place(namespace, generation, d.key.as_str()))
        .collect();
    let ip = client_ip(state, parts);
    let who = match caller.identity() {
        Some(identity) => identity.to_owned(),
        None => format!("ip:{ip}"),
    };
    // A namespace's subscriptions count against its share of the node's.
    let tenant = scope.namespace.as_ref().map(|_| {
        let share = scope
            .budget
            .as_ref()
            .and_then(|b| b.limits().max_subscriptions)
            .map_or_else(|| state.live.limits().namespace_share(), |n| n as usize);
        (format!("{namespace}\u{0}{generation}"), share)
    });
    let tenant = tenant.as_ref().map(|(key, share)| (key.as_str(), *share));
    let since = last_event_id(parts);
    let resume = since.as_ref().map(Option::as_ref);
    let subscription = state.live.subscribe(&who, &ip, tenant, places, resume)?;
    if let Some(metrics) = &state.metrics {
        match subscription.opened {
            Opening::Fresh => {}
            Opening::Replayed(_) => metrics.resumed("replayed"),
            Opening::Pull => metrics.resumed("pull"),
        }
    }
    // The stream ends after its lifetime, or when the caller's credentials expire.
    let lifetime = caller.expires_ms().map_or(MAX_LIFETIME, |exp| {
        let left = exp.saturating_sub(state.clock.now_ms());
        MAX_LIFETIME.min(std::time::Duration::from_millis(left))
    });
    let frames = frames(subscription, lifetime, state.live.stopping());
    let body = Body::from_stream(futures::StreamExt::map(
        frames,
        Ok::<_, std::convert::Infallible>,
    ));
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}
