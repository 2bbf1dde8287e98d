//! `ApiError`: every error a request can end with, one variant per protocol error,
//! and the only place a status code and an error body are chosen.

use crate::auth::AuthError;
use crate::store::StoreError;
use crate::sync::{ProofKind, SyncError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answered to the client, with the protocol's status and body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No route: the framework's plain-text 404, as the reference answers it.
    #[error("not found")]
    NotFound,
    /// A path parameter or resolved key broke the character or length rules.
    #[error("Invalid path parameter")]
    InvalidPathParameter,
    /// `Content-Length` is not a non-negative integer.
    #[error("Invalid Content-Length")]
    InvalidContentLength,
    /// The request body could not be read.
    #[error("Invalid request body")]
    InvalidBody,
    /// A log pull's `checkpoint` is not a canonical integer.
    #[error("Invalid checkpoint")]
    InvalidCheckpoint,
    /// A log pull's `limit` is not a canonical integer.
    #[error("Invalid limit")]
    InvalidLimit,
    /// A log pull's `last` is not a canonical integer.
    #[error("Invalid last")]
    InvalidLast,
    /// A list's `limit` is not an integer from 1 to 1000.
    #[error("Invalid limit parameter")]
    InvalidListLimit,
    /// A list's `include` is not `values`, or asks a log's or a blob's values.
    #[error("Invalid include parameter")]
    InvalidInclude,
    /// A batch pull without `collections`.
    #[error("Missing collections parameter")]
    MissingCollections,
    /// A batch pull over `maxCollectionsPerBatch`.
    #[error("Too many collections")]
    TooManyCollections,
    /// A batch pull's `params` is malformed.
    #[error("Invalid params parameter")]
    InvalidParams,
    /// A batch pull's `appendParams` is malformed.
    #[error("Invalid appendParams parameter")]
    InvalidAppendParams,
    /// A batch pull's `appendParams` asks for a whole log.
    #[error("appendParams[\"{0}\"]: full is not allowed in batch pull")]
    AppendParamsFull(String),
    /// `appendParams` and `params` differ in length for a collection.
    #[error("appendParams length mismatch: must equal params length for each collection")]
    AppendParamsLengthMismatch,
    /// A batch pull asks for more log elements than `maxBatchAppendElements`.
    #[error("Batch append element budget exceeded")]
    BatchAppendBudget,
    /// Authentication failed; the reason is logged, never sent.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The authenticator did not answer in time.
    #[error("authentication timed out")]
    AuthTimeout,
    /// A role enricher or authorize hook failed.
    #[error("Authorization error")]
    AuthorizationError,
    /// The caller may not touch this object.
    #[error("Forbidden")]
    Forbidden,
    /// The body is over the collection's limit.
    #[error("Payload too large")]
    PayloadTooLarge,
    /// A JSON collection was sent something other than `application/json`.
    #[error("Content-Type must be application/json")]
    JsonMediaTypeRequired,
    /// Over a rate limit; `Retry-After` says when the window ends.
    #[error("Rate limit exceeded")]
    RateLimited {
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// The sync core refused the pull or write.
    #[error(transparent)]
    Sync(SyncError),
    /// The store failed. Logged; the client sees `503 Storage unavailable`.
    #[error(transparent)]
    Store(StoreError),
    /// The request took longer than the router's `request_timeout`.
    #[error("Request timeout")]
    RequestTimeout,
    /// More requests in flight than the router's `max_in_flight`.
    #[error("Server busy")]
    Busy,
    /// The key is taken by another document's folder, or lies under a document.
    #[error("Key conflicts with another document")]
    KeyConflict,
    /// The namespace is frozen for the last pass of a migration (`starfish migrate`):
    /// reads are served, writes wait a few seconds (`Retry-After`).
    #[error("Namespace is being migrated")]
    Migrating,
    /// The write would take the namespace past its quota; nothing was written.
    #[error("Quota exceeded")]
    QuotaExceeded,
    /// The namespace has as many requests in flight as its limits allow.
    #[error("Too many concurrent requests")]
    TooManyConcurrent,
    /// `GET /events` without `paths`.
    #[error("Missing paths parameter")]
    MissingPaths,
    /// `GET /events` naming more documents than one subscription may.
    #[error("too many candidates")]
    TooManyCandidates,
    /// A sealed object failed its integrity check (tampered or truncated in the
    /// store): logged, never served.
    #[error("Stored data failed its integrity check")]
    Integrity,
    /// A plugin refused the request with a status of its choosing (a status
    /// outside 4xx and 5xx answers 500).
    #[error("{error}")]
    PluginRefused {
        /// The status the plugin chose.
        status: StatusCode,
        /// Its error.
        error: String,
    },
    /// A plugin's hook failed: logged with its name.
    #[error("Internal Server Error")]
    PluginFailed,
}

impl From<crate::hooks::plugin::Refusal> for ApiError {
    fn from(refusal: crate::hooks::plugin::Refusal) -> Self {
        tracing::error!(plugin = %refusal.plugin, error = %refusal.error.0, "plugin hook failed");
        Self::PluginFailed
    }
}

/// Seconds a write refused during a migration's last pass is asked to wait.
const MIGRATING_RETRY_AFTER: u64 = 2;

impl From<crate::access::Refusal> for ApiError {
    fn from(refusal: crate::access::Refusal) -> Self {
        match refusal {
            crate::access::Refusal::TooManyConcurrent => Self::TooManyConcurrent,
            crate::access::Refusal::RateLimited { retry_after } => {
                Self::RateLimited { retry_after }
            }
        }
    }
}

impl From<crate::live::bus::TooManySubscriptions> for ApiError {
    fn from(_: crate::live::bus::TooManySubscriptions) -> Self {
        Self::TooManyConcurrent
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::KeyConflict(e) => {
                tracing::debug!(error = %e, "key conflict in the store");
                Self::KeyConflict
            }
            StoreError::ReadOnly => Self::Migrating,
            StoreError::QuotaExceeded => Self::QuotaExceeded,
            other if other.is_integrity() => {
                tracing::error!(error = %other, "stored object refused");
                Self::Integrity
            }
            other => Self::Store(other),
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(e) => e.into(),
            other => Self::Sync(other),
        }
    }
}

fn sync_status(e: &SyncError) -> StatusCode {
    match e {
        SyncError::HashMismatch
        | SyncError::NonMonotonicTimestamp
        | SyncError::AppendLimitExceeded { .. } => StatusCode::CONFLICT,
        SyncError::Envelope(_)
        | SyncError::AppendEnvelope(_)
        | SyncError::TimestampInFuture
        | SyncError::Schema(_)
        | SyncError::Bound(_)
        | SyncError::Body => StatusCode::BAD_REQUEST,
        SyncError::FieldNotWritable(_)
        | SyncError::AuthorNotPresenter(_)
        | SyncError::InvalidAuthorSignature(_) => StatusCode::FORBIDDEN,
        SyncError::MediaTypeNotAllowed { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        SyncError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        SyncError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The protocol's body for a sync error.
fn sync_body(e: &SyncError) -> Value {
    let proof = |kind: &ProofKind| match kind {
        ProofKind::Document => "document",
        ProofKind::Append => "append",
    };
    let message = match e {
        SyncError::AppendLimitExceeded { limit, max_bytes } => {
            let mut body = json!({ "error": "append_limit_exceeded", "limit": limit });
            if let Some(max) = max_bytes {
                body["maxBytes"] = json!(max);
            }
            return body;
        }
        SyncError::Schema(v) => {
            return json!({
                "error": format!("Schema validation failed: {}", v.message),
                "path": v.path,
                "validator": v.validator,
            });
        }
        SyncError::AuthorNotPresenter(kind) => {
            format!("{} author must be the request presenter", proof(kind))
        }
        SyncError::InvalidAuthorSignature(kind) => {
            format!("invalid {} author signature", proof(kind))
        }
        SyncError::MediaTypeNotAllowed {
            content_type,
            allowed,
        } => {
            let allowed = serde_json::to_string(allowed).unwrap_or_default();
            format!("Content-Type '{content_type}' is not allowed. Allowed: {allowed}")
        }
        SyncError::Store(_) => "Storage unavailable".to_owned(),
        other => other.to_string(),
    };
    json!({ "error": message })
}

impl ApiError {
    /// The status code for this error. Exhaustive on purpose: a new variant must choose.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidPathParameter
            | Self::InvalidContentLength
            | Self::InvalidBody
            | Self::InvalidCheckpoint
            | Self::InvalidLimit
            | Self::InvalidLast
            | Self::InvalidListLimit
            | Self::InvalidInclude
            | Self::MissingCollections
            | Self::TooManyCollections
            | Self::InvalidParams
            | Self::InvalidAppendParams
            | Self::AppendParamsFull(_)
            | Self::AppendParamsLengthMismatch
            | Self::BatchAppendBudget
            | Self::MissingPaths
            | Self::TooManyCandidates => StatusCode::BAD_REQUEST,
            Self::Auth(AuthError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Forbidden(_)) | Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Auth(AuthError::BodyTooLarge(_)) | Self::PayloadTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::AuthTimeout | Self::Auth(AuthError::ReplayUnavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::AuthorizationError | Self::Integrity | Self::PluginFailed => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::PluginRefused { status, .. }
                if status.is_client_error() || status.is_server_error() =>
            {
                *status
            }
            Self::PluginRefused { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            // The store is a dependency: its failure is ours to retry, not the client's.
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::JsonMediaTypeRequired => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::KeyConflict => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Busy | Self::Migrating => StatusCode::SERVICE_UNAVAILABLE,
            // RFC 4918: the server cannot store what the request needs stored.
            Self::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
            Self::RateLimited { .. } | Self::TooManyConcurrent => StatusCode::TOO_MANY_REQUESTS,
            Self::Sync(e) => sync_status(e),
        }
    }

    /// The JSON body (`None` for the plain-text 404).
    fn body(&self) -> Option<Value> {
        let message = match self {
            Self::NotFound => return None,
            Self::Auth(e) => {
                // The exact reason is for operators only.
                tracing::debug!(reason = %e, "authentication refused");
                match e {
                    AuthError::Unauthorized(_) => "Unauthorized".to_owned(),
                    AuthError::Forbidden(_) => "Forbidden".to_owned(),
                    AuthError::BodyTooLarge(message) => (*message).to_owned(),
                    AuthError::ReplayUnavailable(_) => {
                        tracing::error!(reason = %e, "signed request refused");
                        "Replay cache unavailable".to_owned()
                    }
                }
            }
            Self::AuthTimeout => "Unauthorized".to_owned(),
            Self::Sync(e) => return Some(sync_body(e)),
            Self::Store(e) => {
                tracing::error!(error = %e, "store failure");
                "Storage unavailable".to_owned()
            }
            other => other.to_string(),
        };
        Some(json!({ "error": message }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let Some(body) = self.body() else {
            return (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=UTF-8"),
                )],
                "404 Not Found",
            )
                .into_response();
        };
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response();
        let retry_after = match self {
            Self::RateLimited { retry_after } => Some(retry_after),
            Self::Migrating => Some(MIGRATING_RETRY_AFTER),
            Self::TooManyConcurrent => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
