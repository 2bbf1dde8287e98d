//! Binary collections (§7): raw bytes in and out, streamed both ways.

use super::endpoint::Doc;
use super::{RequestBody, render};
use crate::browser::AsStored;
use crate::browser::headers;
use crate::routes::error::ApiError;
use crate::store::BlobBody;
use crate::store::NsStore;
use crate::store::etag;
use crate::sync::write::{Written, put_blob};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

pub(super) async fn push(
    store: &NsStore,
    parts: &Parts,
    doc: &Doc,
    body: RequestBody,
    now: u64,
) -> Result<Written, ApiError> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let written = match body {
        RequestBody::Streaming(body) => {
            put_blob(
                store,
                doc.as_ref(),
                content_type,
                body.into_data_stream(),
                now,
            )
            .await
        }
        RequestBody::Buffered(bytes) => {
            let once =
                futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
            put_blob(store, doc.as_ref(), content_type, once.boxed(), now).await
        }
    };
    Ok(written?)
}

pub(super) async fn pull(
    store: &NsStore,
    doc: &Doc,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some(blob) = store.get_blob(&doc.key).await? else {
        // The reference answers a missing blob with an empty 404.
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    Ok(render::cached(
        etag(&blob.sha256),
        &doc.collection,
        request,
        || {
            let body = match blob.body {
                BlobBody::Bytes(bytes) => Body::from(bytes),
                BlobBody::Stream(result) => Body::from_stream(result.into_stream()),
            };
            let mut response = Response::new(body);
            let content_type = HeaderValue::from_str(&blob.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, content_type);
            // Stored bytes never run as active content on this origin.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            );
            if !headers::inline_safe(&blob.content_type) {
                h.insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment"),
                );
            }
            // Stored media goes out as stored: never re-encoded on the way.
            response.extensions_mut().insert(AsStored);
            response
        },
    ))
}
