//! Limits on the requests themselves: a whole request (body included) gets at most
//! `request_timeout` (`408`), and at most `max_in_flight` requests are handled at once
//! (`503` at once past it, never queued), so slow or many clients cannot hold the
//! server.

use crate::routes::error::ApiError;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The limits of one router.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) in_flight: Arc<InFlight>,
}

impl Limits {
    pub(crate) fn new(timeout: Duration, max_in_flight: usize) -> Self {
        Self {
            timeout,
            in_flight: Arc::new(InFlight {
                now: AtomicUsize::new(0),
                max: max_in_flight.max(1),
            }),
        }
    }
}

/// How many requests are in flight, of at most `max`: a count, not a semaphore,
/// since nothing ever waits for a place (a semaphore's release takes a lock).
pub(crate) struct InFlight {
    now: AtomicUsize,
    max: usize,
}

impl InFlight {
    /// A place, or none when all `max` are taken (never more, even for a moment).
    fn take(self: &Arc<Self>) -> Option<Place> {
        self.now
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |now| {
                (now < self.max).then_some(now + 1)
            })
            .ok()
            .map(|_| Place(Arc::clone(self)))
    }
}

/// A request's place in flight, given back when dropped.
pub(crate) struct Place(Arc<InFlight>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Release);
    }
}

/// `inner` within [`Limits`]: a service of its own rather than a `from_fn` middleware,
/// which clones and boxes the rest of the stack on every request.
#[derive(Clone)]
pub(crate) struct Limited<S> {
    inner: S,
    limits: Limits,
}

impl<S> Limited<S> {
    pub(crate) fn new(inner: S, limits: Limits) -> Self {
        Self { inner, limits }
    }
}

impl<S> tower::Service<Request> for Limited<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LimitedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.limits.in_flight.take() {
            Some(place) => LimitedFuture::Running {
                inner: self.inner.call(request),
                timeout: self.limits.timeout,
                deadline: None,
                place: Some(place),
            },
            None => LimitedFuture::Busy,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Limited`]: the request's, `503` at once past the in-flight
    /// limit, or `408` past the timeout. The in-flight place is held until then.
    ///
    /// The timeout runs from the first time the request waits: one answered at its
    /// first poll (a cached pull) reads no clock and sets no timer, and one that waits
    /// (for its body, for the store) gets its timer then, as a rule right after it
    /// came (the work of its first poll, and any wait for it, is not counted).
    /// The timer is polled outside the task's budget, as `tokio::time::timeout`'s:
    /// a request that spends its budget on every poll still times out.
    #[project = LimitedProj]
    pub(crate) enum LimitedFuture<F> {
        Busy,
        Running {
            #[pin]
            inner: F,
            timeout: Duration,
            #[pin]
            deadline: Option<tokio::task::Unconstrained<tokio::time::Sleep>>,
            place: Option<Place>,
        },
    }
}

impl<F> Future for LimitedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProj::Busy => Poll::Ready(Ok(ApiError::Busy.into_response())),
            LimitedProj::Running {
                inner,
                timeout,
                mut deadline,
                place,
            } => {
                if let Poll::Ready(answer) = inner.poll(cx) {
                    place.take();
                    return Poll::Ready(answer);
                }
                if deadline.is_none() {
                    let sleep = tokio::time::sleep(*timeout);
                    deadline.set(Some(tokio::task::unconstrained(sleep)));
                }
                match deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
                    Some(Poll::Ready(())) => {
                        place.take();
                        Poll::Ready(Ok(ApiError::RequestTimeout.into_response()))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::{Service as _, ServiceExt as _};

    fn request() -> Request {
        Request::new(Body::empty())
    }

    /// Tens of clients at once on two threads: never more requests inside than the
    /// limit, every one either served or refused with 503, the limit reached, and
    /// every place given back.
    #[test]
    fn requests_in_flight_never_exceed_the_limit_under_concurrent_clients() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let limits = Limits::new(Duration::from_secs(30), 5);
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let inner = {
            let most = most.clone();
            tower::service_fn(move |_: Request| {
                let (inside, most) = (inside.clone(), most.clone());
                async move {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(StatusCode::OK.into_response())
                }
            })
        };
        let service = Limited::new(inner, limits.clone());
        let statuses = runtime.block_on(async {
            let clients = (0..40).map(|_| {
                let service = service.clone();
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _ in 0..50 {
                        let answer = service.clone().oneshot(request()).await.unwrap();
                        statuses.push(answer.status());
                    }
                    statuses
                })
            });
            let mut all = Vec::new();
            for client in clients.collect::<Vec<_>>() {
                all.extend(client.await.unwrap());
            }
            all
        });
        let served = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
            .count();
        assert_eq!(served + refused, 2_000, "only 200 or 503");
        assert!(
            served > 0 && refused > 0,
            "{served} served, {refused} refused"
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            5,
            "at most, and up to, the limit"
        );
        assert_eq!(
            limits.in_flight.now.load(Ordering::SeqCst),
            0,
            "every place back"
        );
    }

    /// A request that waits gets 408 once the timeout has passed since it began to
    /// wait; its place is held until then, and given back.
    #[test]
    fn a_waiting_request_times_out_and_gives_its_place_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let inner = tower::service_fn(|_: Request| {
                std::future::pending::<Result<Response, Infallible>>()
            });
            let mut service = Limited::new(inner, Limits::new(Duration::from_secs(3), 1));
            let started = tokio::time::Instant::now();
            let waiting = tokio::spawn(service.call(request()));
            tokio::task::yield_now().await;
            let busy = service.call(request()).await.unwrap();
            assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
            let timed_out = waiting.await.unwrap().unwrap();
            assert_eq!(timed_out.status(), StatusCode::REQUEST_TIMEOUT);
            assert_eq!(started.elapsed(), Duration::from_secs(3));
            // The place is free again: the next request waits in turn.
            let next = tokio::spawn(service.call(request()));
            tokio::task::yield_now().await;
            assert!(!next.is_finished());
            next.abort();
        });
    }

    /// A request that spends its whole budget on every poll (its timer would then
    /// never be polled within budget) still gets 408 after the timeout.
    #[test]
    fn a_request_that_spends_its_budget_on_every_poll_still_times_out() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let inner = tower::service_fn(|_: Request| async {
                loop {
                    tokio::task::consume_budget().await;
                }
            });
            let mut service = Limited::new(inner, Limits::new(Duration::from_millis(50), 1));
            let spinning = tokio::spawn(service.call(request()));
            let answer = tokio::time::timeout(Duration::from_secs(10), spinning)
                .await
                .expect("the request times out")
                .unwrap()
                .unwrap();
            assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        });
    }

    /// A request dropped before its answer (its client gone) gives its place back.
    #[test]
    fn a_dropped_request_gives_its_place_back() {
        let limits = Limits::new(Duration::from_secs(3), 2);
        let inner =
            tower::service_fn(|_: Request| std::future::pending::<Result<Response, Infallible>>());
        let mut service = Limited::new(inner, limits.clone());
        let held: Vec<_> = (0..2).map(|_| service.call(request())).collect();
        assert!(matches!(service.call(request()), LimitedFuture::Busy));
        drop(held);
        assert_eq!(limits.in_flight.now.load(Ordering::SeqCst), 0);
        assert!(matches!(
            service.call(request()),
            LimitedFuture::Running { .. }
        ));
    }

    /// A request answered at its first poll sets no timer: it is served on a runtime
    /// without timers, where making one would panic.
    #[test]
    fn a_request_answered_at_once_sets_no_timer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = tower::service_fn(|_: Request| async {
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let service = Limited::new(inner, Limits::new(Duration::from_secs(3), 1));
        let answer = runtime.block_on(service.oneshot(request())).unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
}
