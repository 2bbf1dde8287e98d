//! Response rendering shared by the routes: ETag with `If-None-Match`, and
//! `Cache-Control` from the collection's `cacheDurationMs`.

use crate::config::Collection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `Cache-Control` for a collection with `cacheDurationMs`.
fn cache_control(collection: &Collection) -> Option<HeaderValue> {
    let secs = collection.cache_duration_ms? / 1000;
    let value = if collection.read_roles.is_public() {
        format!("max-age={secs}")
    } else {
        format!("private, max-age={secs}")
    };
    HeaderValue::from_str(&value).ok()
}

/// A `200` of JSON text already written, as `axum::Json` would answer it.
pub(super) fn json_bytes(body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    // Room for what the layers add (ETag, security headers, request id, ...) at once.
    headers.reserve(12);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `304 Not Modified` when the request's `If-None-Match` is `etag` (see
/// [`etag`](crate::store::etag)); otherwise `build()` with `ETag` (when
/// there is one) and `Cache-Control` added.
pub(super) fn cached(
    etag: Option<HeaderValue>,
    collection: &Collection,
    request: &HeaderMap,
    build: impl FnOnce() -> Response,
) -> Response {
    if let Some(etag) = &etag {
        if request
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
    let mut response = build();
    let h = response.headers_mut();
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    if let Some(cc) = cache_control(collection) {
        h.insert(header::CACHE_CONTROL, cc);
    }
    response
}
