//! What browsers need from the server: CORS ([`CorsSettings`]) and compressed JSON
//! responses. Both are layers around the whole router, applied by
//! `create_sync_router`: CORS outside compression (a preflight never reaches a
//! route), and only the security headers outside CORS.

pub(crate) mod headers;

use crate::config::ConfigError;
use crate::sync::write::media_type_is;
use axum::body::Body;
use axum::http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
    header,
};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_http::compression::ResponseFuture as CompressionFuture;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::{Compression, CompressionBody};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser must see allowed before it sends an authenticated
/// request: the official client's `CORS_ALLOW_HEADERS` (Starfish protocol constants),
/// plus `Accept` and `If-None-Match` for conditional pulls.
pub(crate) const ALLOW_HEADERS: [&str; 9] = [
    "authorization",
    "content-type",
    "accept",
    "if-none-match",
    "x-starfish-sig",
    "x-starfish-ts",
    "x-starfish-nonce",
    "x-starfish-pub",
    "x-requested-with",
];

/// Response headers the official client reads that are not CORS-safelisted.
pub(crate) const EXPOSE_HEADERS: [&str; 2] = ["etag", "retry-after"];

/// Cross-origin access for browser clients: which origins may call, how long a
/// browser may cache a preflight answer, and whether credentials are allowed.
///
/// Methods `GET`, `POST`, `OPTIONS` and the Starfish signing headers are always
/// allowed, `ETag` and `Retry-After` always exposed. A request from an origin not in
/// the list gets no `Access-Control-Allow-Origin`, so the browser refuses it.
///
/// ```
/// use starfish_server::CorsSettings;
/// use std::time::Duration;
///
/// let cors = CorsSettings::origins(["https://app.example.com"])
///     .with_max_age(Duration::from_secs(600));
/// # let _ = cors;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CorsSettings {
    /// Origins allowed to call (`https://app.example.com`, no path), or `["*"]` for
    /// any origin.
    pub origins: Vec<String>,
    /// `Access-Control-Max-Age`: how long a browser may reuse a preflight answer.
    pub max_age: Duration,
    /// `Access-Control-Allow-Credentials: true`. Refused with the `*` origin.
    pub credentials: bool,
}

impl CorsSettings {
    /// The reference's default `Access-Control-Max-Age`: one day.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(86_400);

    /// Allows exactly these origins (`scheme://host[:port]`), without credentials.
    /// `"*"` alone allows any origin. Checked by `create_sync_router`.
    pub fn origins<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            origins: origins.into_iter().map(Into::into).collect(),
            max_age: Self::DEFAULT_MAX_AGE,
            credentials: false,
        }
    }

    /// Allows any origin (`Access-Control-Allow-Origin: *`), without credentials.
    pub fn any_origin() -> Self {
        Self::origins(["*"])
    }

    /// Sets `Access-Control-Max-Age`.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sends `Access-Control-Allow-Credentials: true` (only with explicit origins).
    #[must_use]
    pub fn with_credentials(mut self, credentials: bool) -> Self {
        self.credentials = credentials;
        self
    }

    /// The layer, or why these settings cannot work.
    pub(crate) fn layer(&self) -> Result<CorsLayer, ConfigError> {
        let refuse = |why: String| Err(ConfigError::Cors(format!("CORS misconfiguration: {why}")));
        let wildcard = self.origins.iter().any(|o| o == "*");
        let allow_origin = if wildcard {
            if self.origins.len() > 1 {
                return refuse("the wildcard origin '*' must be the only origin".into());
            }
            if self.credentials {
                // The reference's StartupError, word for word.
                return refuse(
                    "credentials cannot be used with wildcard origin '*'. Specify explicit \
                     origins."
                        .into(),
                );
            }
            AllowOrigin::any()
        } else {
            if self.origins.is_empty() {
                return refuse("no origin allowed (give origins, or '*' for any)".into());
            }
            let mut values = Vec::with_capacity(self.origins.len());
            for origin in &self.origins {
                match origin_value(origin) {
                    Some(value) => values.push(value),
                    None => {
                        return refuse(format!(
                            "{origin:?} is not an origin (scheme://host[:port], no path)"
                        ));
                    }
                }
            }
            AllowOrigin::list(values)
        };
        Ok(CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
            .max_age(self.max_age)
            .allow_credentials(self.credentials))
    }
}

/// `origin` as browsers send it in `Origin` (lower-cased scheme and host), when it
/// is one: `scheme://authority` with no path, query or fragment.
fn origin_value(origin: &str) -> Option<HeaderValue> {
    let (scheme, authority) = origin.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '@'));
    if !(scheme_ok && authority_ok) {
        return None;
    }
    HeaderValue::from_str(&origin.to_ascii_lowercase()).ok()
}

/// Marks a response whose body must go out as stored (a blob): never compressed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsStored;

/// Smallest body worth compressing.
const MIN_COMPRESS_BYTES: u16 = 256;

/// gzip or brotli, as `Accept-Encoding` asks, for JSON bodies of at least
/// [`MIN_COMPRESS_BYTES`]; never for blobs, whatever their type. `ETag` is left
/// as is: it names the document, not the encoding. A request without
/// `Accept-Encoding` skips the compression layer (and its body wrapper) and only gets
/// the `Vary: accept-encoding` the layer would have added.
pub(crate) fn compression<S: Clone>(inner: S) -> Negotiated<S, impl Predicate> {
    fn json_not_blob(_: StatusCode, _: Version, headers: &HeaderMap, ext: &Extensions) -> bool {
        ext.get::<AsStored>().is_none()
            && headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| media_type_is(ct, "application/json"))
    }
    let predicate = SizeAbove::new(MIN_COMPRESS_BYTES).and(json_not_blob);
    let layer = CompressionLayer::new()
        .quality(CompressionLevel::Default)
        .compress_when(predicate);
    Negotiated {
        compressing: tower::Layer::layer(&layer, inner.clone()),
        plain: inner,
        predicate,
    }
}

/// The service of [`compression`].
#[derive(Clone)]
pub(crate) struct Negotiated<S, P> {
    plain: S,
    compressing: Compression<S, P>,
    predicate: P,
}

type Compressed = Response<CompressionBody<Body>>;

impl<S, P> tower::Service<Request<Body>> for Negotiated<S, P>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    P: Predicate,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::Either<
        futures::future::MapOk<CompressionFuture<S::Future, P>, fn(Compressed) -> Response<Body>>,
        Plain<S::Future, P>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        std::task::ready!(self.plain.poll_ready(cx))?;
        self.compressing.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        use futures::TryFutureExt as _;
        if request.headers().contains_key(header::ACCEPT_ENCODING) {
            let boxed: fn(Compressed) -> Response<Body> = |r| r.map(Body::new);
            futures::future::Either::Left(self.compressing.call(request).map_ok(boxed))
        } else {
            futures::future::Either::Right(Plain {
                inner: self.plain.call(request),
                predicate: self.predicate.clone(),
            })
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer to a request without `Accept-Encoding`: as it is, with the `Vary`
    /// the compression layer adds to what it would compress for another request.
    pub(crate) struct Plain<F, P> {
        #[pin]
        inner: F,
        predicate: P,
    }
}

impl<F, P> std::future::Future for Plain<F, P>
where
    F: std::future::Future<Output = Result<Response<Body>, Infallible>>,
    P: Predicate,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        let headers = response.headers();
        let varies = !headers.contains_key(header::CONTENT_ENCODING)
            && !headers.contains_key(header::CONTENT_RANGE)
            && this.predicate.should_compress(&response)
            && !headers.get_all(header::VARY).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
                })
            });
        if varies {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(
            CorsSettings::origins(["http://127.0.0.1:5173"])
                .layer()
                .is_ok()
        );
        assert!(CorsSettings::origins(["tauri://localhost"]).layer().is_ok());
        assert!(CorsSettings::any_origin().layer().is_ok());
        for bad in [
            "127.0.0.1:5173",
            "http://app.example.com/",
            "http://app.example.com/x",
            "http://",
            "null",
            "http://a b",
        ] {
            assert!(
                matches!(
                    CorsSettings::origins([bad]).layer(),
                    Err(ConfigError::Cors(_))
                ),
                "{bad}"
            );
        }
        let none: [&str; 0] = [];
        assert!(CorsSettings::origins(none).layer().is_err());
        assert!(
            CorsSettings::origins(["*", "http://a.example"])
                .layer()
                .is_err()
        );
    }

    #[test]
    fn wildcard_with_credentials_is_the_references_error() {
        let err = CorsSettings::any_origin()
            .with_credentials(true)
            .layer()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CORS misconfiguration: credentials cannot be used with wildcard origin '*'. \
             Specify explicit origins."
        );
        assert!(
            CorsSettings::origins(["https://app.example.com"])
                .with_credentials(true)
                .layer()
                .is_ok()
        );
    }
}
