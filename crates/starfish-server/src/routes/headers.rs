//! Response headers on every answer: `X-Content-Type-Options: nosniff` always, and the
//! reference's security headers (frame options, referrer policy, HSTS when the
//! deployment is behind TLS), configurable through [`crate::SecurityHeaders`].

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

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
