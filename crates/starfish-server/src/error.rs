//! `ApiError`: every error a handler returns, and the only place a status code and
//! an error body are chosen.

use crate::auth::AuthError;
use crate::protocol::EnvelopeError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

/// An error answered to the client, with the protocol's status and body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route: the framework's plain-text 404, as the reference answers it.
    #[error("not found")]
    NotFound,
    /// A path parameter or resolved key broke the character rules.
    #[error("Invalid path parameter")]
    InvalidPathParameter,
    /// A malformed request, with the protocol's message.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// The push body was refused.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Authentication failed; the reason is logged, never sent.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The authenticator did not answer in time.
    #[error("authentication timed out")]
    AuthTimeout,
    /// A role enricher failed.
    #[error("Authorization error")]
    AuthorizationError,
    /// The caller lacks the role.
    #[error("Forbidden")]
    Forbidden,
    /// A 403 whose message the protocol spells out (author proofs, field permissions).
    #[error("{0}")]
    ForbiddenMessage(&'static str),
    /// A 403 with a message built from the request (the field name).
    #[error("{0}")]
    ForbiddenText(String),
    /// A 409 whose message the protocol spells out (`non_monotonic_timestamp`).
    #[error("{0}")]
    ConflictText(Cow<'static, str>),
    /// `409 {"error":"append_limit_exceeded","limit":N}`.
    #[error("append_limit_exceeded")]
    AppendLimitExceeded {
        /// The collection's `maxItems`.
        limit: u64,
    },
    /// `400 {"error":"Schema validation failed: …","path":[…],"validator":"…"}`.
    #[error("Schema validation failed: {message}")]
    Schema {
        /// The validator's message.
        message: String,
        /// Where in `data`.
        path: Vec<serde_json::Value>,
        /// The failing keyword.
        validator: String,
    },
    /// `baseHash` does not match the stored document.
    #[error("hash_mismatch")]
    HashMismatch,
    /// The body is over a limit; the message is the protocol's.
    #[error("{0}")]
    PayloadTooLarge(Cow<'static, str>),
    /// The media type is not accepted; the message is the protocol's.
    #[error("{0}")]
    UnsupportedMediaType(Cow<'static, str>),
    /// Over a rate limit; `Retry-After` says when the window ends.
    #[error("Rate limit exceeded")]
    RateLimited {
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// The store failed. Logged; the client sees a generic message.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The status code for this error. Exhaustive on purpose: a new variant must choose.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidPathParameter | Self::BadRequest(_) | Self::Envelope(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Auth(AuthError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Forbidden(_)) => StatusCode::FORBIDDEN,
            Self::Auth(AuthError::BodyTooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::AuthTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::AuthorizationError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Forbidden | Self::ForbiddenMessage(_) | Self::ForbiddenText(_) => {
                StatusCode::FORBIDDEN
            }
            Self::ConflictText(_) | Self::AppendLimitExceeded { .. } => StatusCode::CONFLICT,
            Self::Schema { .. } => StatusCode::BAD_REQUEST,
            Self::HashMismatch => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `{"error": message}` with `Content-Type: application/json`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    json_body(status, &serde_json::json!({ "error": message }))
}

fn json_body(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::NotFound => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=UTF-8"),
                )],
                "404 Not Found",
            )
                .into_response(),
            Self::Auth(e) => {
                // The exact reason is for operators only.
                tracing::debug!(reason = %e, "authentication refused");
                match e {
                    AuthError::Unauthorized(_) => json_error(status, "Unauthorized"),
                    AuthError::Forbidden(_) => json_error(status, "Forbidden"),
                    AuthError::BodyTooLarge(message) => json_error(status, message),
                }
            }
            Self::AuthTimeout => json_error(status, "Unauthorized"),
            Self::AppendLimitExceeded { limit } => json_body(
                status,
                &serde_json::json!({ "error": "append_limit_exceeded", "limit": limit }),
            ),
            Self::Schema {
                message,
                path,
                validator,
            } => json_body(
                status,
                &serde_json::json!({
                    "error": format!("Schema validation failed: {message}"),
                    "path": path,
                    "validator": validator,
                }),
            ),
            Self::RateLimited { retry_after } => {
                let mut res = json_error(status, "Rate limit exceeded");
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                res
            }
            Self::Store(e) => {
                tracing::error!(error = %e, "store failure");
                json_error(status, "Internal error")
            }
            other => json_error(status, &other.to_string()),
        }
    }
}
