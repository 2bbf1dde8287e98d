//! Reading a request body under a byte limit, whether or not it declares its length.

use crate::routes::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// The declared `Content-Length`: `Ok(None)` when absent.
///
/// # Errors
/// `400 Invalid Content-Length` when it is not a non-negative integer.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or(ApiError::InvalidContentLength)
}

/// Reads at most `limit` bytes. A declared length over the limit is refused before
/// anything is read; a body without one (chunked) is cut off as soon as it passes it.
///
/// # Errors
/// `413 Payload too large`.
pub(crate) async fn read_limited(
    body: Body,
    declared: Option<u64>,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge;
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => {
            tracing::debug!(error = %e, "request body read failed");
            Err(ApiError::InvalidBody)
        }
    }
}
