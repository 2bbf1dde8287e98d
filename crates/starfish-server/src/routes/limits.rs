//! Limits on the requests themselves: a whole request (body included) gets at most
//! `request_timeout` (`408`), and at most `max_in_flight` requests are handled at once
//! (`503` at once past it, never queued), so slow or many clients cannot hold the
//! server.

use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

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

/// The middleware applying [`Limits`].
pub(crate) async fn enforce(limits: Limits, request: Request, next: Next) -> Response {
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        return ApiError::Busy.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}
