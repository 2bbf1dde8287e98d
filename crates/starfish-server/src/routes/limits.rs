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
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one router.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) in_flight: Arc<Semaphore>,
}

impl Limits {
    pub(crate) fn new(timeout: Duration, max_in_flight: usize) -> Self {
        Self {
            timeout,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
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
        match self.limits.in_flight.clone().try_acquire_owned() {
            Ok(permit) => LimitedFuture::Running {
                inner: tokio::time::timeout(self.limits.timeout, self.inner.call(request)),
                permit: Some(permit),
            },
            Err(_) => LimitedFuture::Busy,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Limited`]: the request's, `503` at once past the in-flight
    /// limit, or `408` past the timeout. The in-flight place is held until then.
    #[project = LimitedProj]
    pub(crate) enum LimitedFuture<F> {
        Busy,
        Running {
            #[pin]
            inner: tokio::time::Timeout<F>,
            permit: Option<OwnedSemaphorePermit>,
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
            LimitedProj::Running { inner, permit } => {
                let answer = match std::task::ready!(inner.poll(cx)) {
                    Ok(result) => result,
                    Err(_) => Ok(ApiError::RequestTimeout.into_response()),
                };
                permit.take();
                Poll::Ready(answer)
            }
        }
    }
}
