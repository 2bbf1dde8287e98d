//! Response headers on every answer: `X-Content-Type-Options: nosniff` always, and the
//! reference's security headers (frame options, referrer policy, HSTS when the
//! deployment is behind TLS), configurable through [`crate::browser::headers::SecurityHeaders`].

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use std::convert::Infallible;
use std::task::{Context, Poll};

/// Security headers added to every response. `X-Content-Type-Options: nosniff` is
/// always sent; the rest follow the reference's defaults, HSTS only when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecurityHeaders {
    /// `X-Frame-Options` (default `DENY`); `None` leaves it out.
    pub frame_options: Option<String>,
    /// `Referrer-Policy` (default `strict-origin-when-cross-origin`).
    pub referrer_policy: Option<String>,
    /// `Strict-Transport-Security`; `None` by default, see [`Self::behind_tls`].
    pub strict_transport_security: Option<String>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            frame_options: Some("DENY".into()),
            referrer_policy: Some("strict-origin-when-cross-origin".into()),
            strict_transport_security: None,
        }
    }
}

impl SecurityHeaders {
    /// The defaults plus HSTS (`max-age=31536000; includeSubDomains`), for a server
    /// reached only over TLS (directly or through a proxy).
    pub fn behind_tls() -> Self {
        Self {
            strict_transport_security: Some("max-age=31536000; includeSubDomains".into()),
            ..Self::default()
        }
    }

    /// The headers as values, checked once at router build.
    pub(crate) fn compile(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )];
        for (name, value) in [
            (header::X_FRAME_OPTIONS, &self.frame_options),
            (header::REFERRER_POLICY, &self.referrer_policy),
            (
                header::STRICT_TRANSPORT_SECURITY,
                &self.strict_transport_security,
            ),
        ] {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                out.push((name, v));
            }
        }
        out
    }
}

/// Adds `headers` to `response`.
pub(crate) fn apply(headers: &[(HeaderName, HeaderValue)], mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    response
}

/// The outermost service of the sync routes: adds `headers` to every answer, and
/// answers a HEAD with the headers of its GET (the fixed routes run a HEAD as a GET)
/// and no body, as axum does for a handler's own route: `Content-Length` when the
/// body's size is known, then the body dropped.
#[derive(Clone)]
pub(crate) struct Finished<S> {
    inner: S,
    headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
    /// Whether a HEAD is answered here (not when an axum method router above does).
    answer_head: bool,
}

impl<S> Finished<S> {
    pub(crate) fn new(
        inner: S,
        headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
        answer_head: bool,
    ) -> Self {
        Self {
            inner,
            headers,
            answer_head,
        }
    }
}

impl<S> tower::Service<axum::extract::Request> for Finished<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FinishedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        FinishedFuture {
            head: self.answer_head && request.method() == axum::http::Method::HEAD,
            inner: self.inner.call(request),
            headers: self.headers.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Finished`].
    pub(crate) struct FinishedFuture<F> {
        #[pin]
        inner: F,
        headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
        head: bool,
    }
}

impl<F> std::future::Future for FinishedFuture<F>
where
    F: std::future::Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let mut response = apply(this.headers, response);
        if *this.head {
            let size = axum::body::HttpBody::size_hint(response.body()).exact();
            if let (Some(size), false) = (
                size,
                response.headers().contains_key(header::CONTENT_LENGTH),
            ) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            }
            *response.body_mut() = axum::body::Body::empty();
        }
        Poll::Ready(Ok(response))
    }
}

/// Media types a browser may show inline without running anything: raster images,
/// audio, video, plain text. Everything else (SVG, HTML, XML, PDF, ...) is served as
/// an attachment, and every blob under `Content-Security-Policy: sandbox`.
pub(crate) fn inline_safe(media_type: &str) -> bool {
    let media = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.split_once('/') {
        Some(("image", sub)) => !sub.contains("svg") && !sub.contains("xml"),
        Some(("audio" | "video", _)) => true,
        _ => media == "text/plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_content_is_never_inline() {
        for safe in [
            "image/png",
            "image/JPEG",
            "video/mp4",
            "text/plain; charset=utf-8",
        ] {
            assert!(inline_safe(safe), "{safe}");
        }
        for active in [
            "image/svg+xml",
            "text/html",
            "application/xhtml+xml",
            "application/pdf",
            "text/xml",
            "",
        ] {
            assert!(!inline_safe(active), "{active}");
        }
    }
}
