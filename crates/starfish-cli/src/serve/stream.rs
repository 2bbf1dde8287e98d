//! Live-change streams (`GET /events?…`, `GET /<namespace>/events?…`) served off
//! hyper. A stream is one response that lasts minutes and only writes; hyper keeps
//! an 8 KiB read buffer and an 8 KiB write buffer for every connection for its
//! whole life, which made a subscriber cost 17 KiB. A connection whose first bytes
//! are such a request is served here instead: its head is read (at most
//! [`MAX_HEAD`] bytes, within the header-read timeout) and parsed with `httparse`,
//! handed to the same app (every layer, `ConnectInfo` included), and the answer
//! written as it comes, each frame in one vectored write, nothing buffered between
//! frames. The connection then closes (`connection: close`): a stream is the last
//! request of its connection. Such a request read later on a kept-alive connection,
//! between two others, is handed over from hyper the same way (`Tracked` in the
//! module above). Anything else (another route, a request line split across
//! packets, TLS) goes to hyper as before.
//!
//! The connection limits hold as for hyper's connections: the head within
//! `header_read_timeout`, no write stalled for longer than `request_timeout +
//! idle_timeout`, the connection's slot held until it closes, and at shutdown the
//! stream ends (the router ends it). Bytes a client sends after its request (nothing
//! a stream answers) close the connection, as does the client's end of stream.
//!
//! Once its head is written, a stream still open is written from a task on the
//! streams' runtime when `ServeLimits::streams` names one (`starfish serve` does),
//! its socket moved to that runtime's poller.

use super::pump::{Framing, Piece, Pump};
use super::{App, ServeLimits};
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request, Version, header};
use http_body_util::BodyExt;
use starfish_protocol::names::{RESERVED_NAMESPACES, RESERVED_RUNTIME_NAMES};
use std::io::IoSlice;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

/// Most bytes of a stream's request head (hyper's 431 past its own limit).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Most header lines of a stream's request.
const MAX_HEADERS: usize = 64;

/// Waits for a connection's first bytes (until `head_due`, its accept plus the
/// header-read timeout; or until the server stops) and tells
/// whether they open a stream, leaving them unread; `None`: the client went, or
/// sent nothing in time.
pub(super) async fn opens_stream(
    stream: &TcpStream,
    head_due: Instant,
    stop: &mut watch::Receiver<()>,
) -> Option<bool> {
    let mut first = [0u8; 256];
    tokio::select! {
        peeked = tokio::time::timeout_at(head_due, stream.peek(&mut first)) => match peeked {
            Ok(Ok(n)) if n > 0 => Some(is_stream(&first[..n])),
            _ => None,
        },
        // Shutting down: a connection that sent nothing yet is closed at once.
        _ = stop.changed() => None,
    }
}

/// Whether `first` (the first bytes a connection sent) is the start of a
/// live-change subscription: a `GET` whose path (before its query) ends in
/// `/events`: `/events`, `/<namespace>/events`, under a base path too
/// (`/v1/acme/events`). Never when the first segment is one of the router's own
/// (`/pull/notes/events` is a pull, kept on its kept-alive connection; were a
/// request taken here anyway, the app would answer it the same, and the
/// connection close after it).
pub(super) fn is_stream(first: &[u8]) -> bool {
    let Some(path) = first.strip_prefix(b"GET /") else {
        return false;
    };
    let Some(end) = path.iter().position(|&b| b == b'?' || b == b' ') else {
        return false;
    };
    let path = &path[..end];
    if path == b"events" {
        return true;
    }
    // Every request on a kept-alive connection is looked at: the cheap test first.
    let events = path
        .strip_suffix(b"/events")
        .is_some_and(|before| !before.is_empty() && !before.ends_with(b"/"));
    if !events || path.starts_with(b"/") {
        return false;
    }
    let first_segment = path.split(|&b| b == b'/').next().unwrap_or_default();
    let routes = first_segment.starts_with(b"_")
        || RESERVED_NAMESPACES
            .iter()
            .chain(&RESERVED_RUNTIME_NAMES)
            .any(|r| r.as_bytes() == first_segment);
    !routes
}

/// What a connection holds until it closes: the accept loop's stop signal (the loop
/// waits for every receiver to go) and the connection's slot.
type Held = (watch::Receiver<()>, tokio::sync::OwnedSemaphorePermit);

/// Serves the stream `stream` opened: reads its head, asks `app`, then writes the
/// answer until it ends, the client goes, or the server stops, and closes. The
/// writing goes on in a task of its own, which holds only the socket and the body:
/// the connection's task (sized for hyper's connection and the app's call) ends.
/// `opening`: the head's first bytes when they were read already (the stream
/// asked on a kept-alive connection, handed over from hyper).
pub(super) async fn serve<S: App>(
    mut stream: TcpStream,
    opening: Vec<u8>,
    peer: SocketAddr,
    app: S,
    limits: ServeLimits,
    head_due: Instant,
    mut held: Held,
) {
    let request = match read_head(&mut stream, opening, peer, head_due, &mut held.0).await {
        Ok(request) => request,
        Err(Refusal::Gone) => return,
        Err(Refusal::Answer(status)) => {
            let head =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if write_within(&mut stream, &limits, &[IoSlice::new(head.as_bytes())])
                .await
                .is_ok()
            {
                linger(&mut stream).await;
            }
            return;
        }
    };
    let http10 = request.version() == Version::HTTP_10;
    let Ok(response) = app.oneshot(request).await;
    let (parts, mut body) = response.into_parts();
    let framing = Framing::of(parts.status, &body, http10);
    let head = response_head(&parts, framing);
    // The body's first bytes when they are there already (a stream's opening
    // comment is): written with the head, in one write.
    let first = match framing {
        Framing::Empty => None,
        _ => ready_now(next_data(&mut body)),
    };
    let mut sent = 0;
    let piece = match &first {
        Some(Next::Data(data)) => {
            if let Framing::Length(n) = framing {
                if data.len() as u64 > n {
                    // More than announced: the answer is broken.
                    return;
                }
            }
            sent = data.len() as u64;
            Some(Piece::of(data.clone(), framing))
        }
        _ => None,
    };
    let none = IoSlice::new(&[]);
    let [size, data, tail] = piece.as_ref().map_or([none; 3], Piece::slices);
    let pieces = [IoSlice::new(&head), size, data, tail];
    if write_within(&mut stream, &limits, &pieces).await.is_err() {
        return;
    }
    drop(piece);
    // What the body said already, when not bytes: its end, or its failure.
    let said = match first {
        Some(Next::End) => Some(true),
        Some(Next::Failed) => Some(false),
        _ => None,
    };
    drop(head);
    let open = Open {
        body,
        framing,
        progress: (sent, said),
        limits,
        held,
    };
    open.write_rest(stream);
}

/// An open stream's answer, its head written: what is left to write.
struct Open<B> {
    body: B,
    framing: Framing,
    /// Bytes of the body written, and how it ended when it has.
    progress: (u64, Option<bool>),
    limits: ServeLimits,
    /// Held until the stream is done: the accept loop waits for it at shutdown.
    held: Held,
}

impl<B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static> Open<B> {
    /// Writes the rest from a task of its own: a stream still open on the
    /// streams' runtime (its socket moved to that runtime's poller), an answer
    /// whose end is known on this one.
    fn write_rest(self, stream: TcpStream) {
        let open_ended = self.progress.1.is_none() && !matches!(self.framing, Framing::Empty);
        let streams = self.limits.streams.clone().filter(|_| open_ended);
        let Some(streams) = streams else {
            tokio::spawn(self.write_out(Ok(stream)));
            return;
        };
        let Ok(stream) = stream.into_std() else {
            tracing::debug!("a stream's socket could not leave this runtime: closed");
            return;
        };
        streams.spawn(self.write_out(Err(stream)));
    }

    /// Writes the rest to `stream` (one of this runtime, or one to join it).
    async fn write_out(self, stream: Result<TcpStream, std::net::TcpStream>) {
        let mut stream = match stream.or_else(TcpStream::from_std) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("a stream's socket could not join the streams' runtime: {e}");
                return;
            }
        };
        let Self {
            body,
            framing,
            progress: (sent, said),
            limits,
            held,
        } = self;
        let _held = held;
        let clean = match said {
            Some(false) => false,
            _ => {
                let stall = limits.request_timeout + limits.idle_timeout;
                let ended = said.is_some();
                Pump::new(&mut stream, body, framing, (sent, ended), stall).await
            }
        };
        if clean {
            let _ = tokio::time::timeout(limits.idle_timeout, stream.shutdown()).await;
        }
    }
}

/// Ends the connection after a refusal sent while the client may still be sending
/// (a body it announced): our end first, then what arrives is read and discarded
/// for a while, so that the client reads the answer rather than a reset.
async fn linger(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let mut left = super::LINGER_BYTES;
    let until = Instant::now() + super::LINGER_TIME;
    while left > 0 {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Why a head was not handed to the app.
enum Refusal {
    /// The client went, or was too slow: close.
    Gone,
    /// Answer with this status line's code and reason, then close.
    Answer(&'static str),
}

/// Reads and parses the request head (its first bytes `opening`, when read
/// already), by `head_due` (the connection's accept, or the head's first bytes, plus
/// the header-read timeout) and unless the server stops.
async fn read_head(
    stream: &mut TcpStream,
    opening: Vec<u8>,
    peer: SocketAddr,
    head_due: Instant,
    stop: &mut watch::Receiver<()>,
) -> Result<Request<Body>, Refusal> {
    let mut head = opening;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => return request(&parsed, peer),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refusal::Answer("431 Request Header Fields Too Large"));
            }
            Err(_) => return Err(Refusal::Answer("400 Bad Request")),
        }
        if head.len() >= MAX_HEAD {
            return Err(Refusal::Answer("431 Request Header Fields Too Large"));
        }
        head.reserve(1024.min(MAX_HEAD - head.len()));
        let room = (MAX_HEAD - head.len()).min(head.capacity() - head.len());
        let mut limited = (&mut *stream).take(room as u64);
        tokio::select! {
            read = tokio::time::timeout_at(head_due, limited.read_buf(&mut head)) => match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(Refusal::Gone),
            },
            _ = stop.changed() => return Err(Refusal::Gone),
        }
    }
}

/// The request the app gets: what the client sent, no body, and its address.
fn request(parsed: &httparse::Request<'_, '_>, peer: SocketAddr) -> Result<Request<Body>, Refusal> {
    let bad = || Refusal::Answer("400 Bad Request");
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(bad()),
    };
    let mut request = Request::builder()
        .method(parsed.method.ok_or_else(bad)?)
        .uri(parsed.path.ok_or_else(bad)?)
        .version(version)
        .body(Body::empty())
        .map_err(|_| bad())?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad())?;
        // A stream's request has no body: one announced is not read, so refused.
        let has_body = (name == header::CONTENT_LENGTH && h.value != b"0")
            || name == header::TRANSFER_ENCODING;
        if has_body {
            return Err(bad());
        }
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad())?;
        request.headers_mut().append(name, value);
    }
    if version == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
        return Err(bad());
    }
    request.extensions_mut().insert(ConnectInfo(peer));
    Ok(request)
}

impl Framing {
    fn of<B: hyper::body::Body>(status: axum::http::StatusCode, body: &B, http10: bool) -> Self {
        let bodiless = status.is_informational()
            || status == axum::http::StatusCode::NO_CONTENT
            || status == axum::http::StatusCode::NOT_MODIFIED;
        if bodiless {
            return Self::Empty;
        }
        if body.is_end_stream() {
            return Self::Length(0);
        }
        match body.size_hint().exact() {
            Some(n) => Self::Length(n),
            None if http10 => Self::Close,
            None => Self::Chunked,
        }
    }
}

/// The status line and headers of the answer, with its framing, a `date`, and
/// `connection: close`.
fn response_head(parts: &axum::http::response::Parts, framing: Framing) -> Vec<u8> {
    let status = parts.status;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        let framing_header = name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION;
        if !framing_header {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        let date = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH + now());
        head.extend_from_slice(format!("date: {date}\r\n").as_bytes());
    }
    match framing {
        Framing::Length(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Close | Framing::Empty => {}
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// The time since the epoch, by the server's clock.
fn now() -> std::time::Duration {
    use starfish_server::auth::Clock as _;
    std::time::Duration::from_millis(starfish_server::auth::SystemClock.now_ms())
}

/// What a response body gave next.
enum Next {
    Data(Bytes),
    End,
    Failed,
}

/// The body's next bytes (trailers and empty pieces skipped).
async fn next_data<B: hyper::body::Body<Data = Bytes> + Unpin>(body: &mut B) -> Next {
    loop {
        match body.frame().await {
            None => return Next::End,
            Some(Err(_)) => return Next::Failed,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Next::Data(data);
                    }
                }
            }
        }
    }
}

/// `future`'s output if it is ready at once (polled once, without a waker to
/// wake: whatever it waits on is asked again by the next poll).
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Writes every byte of `pieces`.
async fn write_all<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    pieces: &[IoSlice<'_>],
) -> Result<(), ()> {
    let mut storage: Vec<IoSlice<'_>> = pieces.to_vec();
    let mut left: &mut [IoSlice<'_>] = &mut storage;
    while !left.is_empty() {
        match writer.write_vectored(left).await {
            Ok(n) if n > 0 => IoSlice::advance_slices(&mut left, n),
            _ => return Err(()),
        }
    }
    Ok(())
}

/// Writes every byte of `pieces`, unless it takes `request_timeout +
/// idle_timeout` (a client that stopped reading) or the connection fails.
async fn write_within(
    stream: &mut TcpStream,
    limits: &ServeLimits,
    pieces: &[IoSlice<'_>],
) -> Result<(), ()> {
    let stall = limits.request_timeout + limits.idle_timeout;
    match tokio::time::timeout(stall, write_all(stream, pieces)).await {
        Ok(done) => done,
        Err(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_event_stream_requests_are_taken_off_hyper() {
        for yes in [
            &b"GET /events?paths=a HTTP/1.1\r\n"[..],
            b"GET /acme/events?paths=a HTTP/1.1\r\n",
            b"GET /events HTTP/1.1\r\n",
        ] {
            assert!(is_stream(yes), "{}", String::from_utf8_lossy(yes));
        }
        assert!(is_stream(b"GET /v1/acme/events?paths=a HTTP/1.1\r\n"));
        for no in [
            &b"GET /config/events?x HTTP/1.1\r\n"[..],
            b"GET /events/events?x HTTP/1.1\r\n",
            b"GET /_starfish/events?x HTTP/1.1\r\n",
            &b"GET /pull/events?x HTTP/1.1\r\n"[..],
            b"GET /pull/a/events?x HTTP/1.1\r\n",
            b"GET /a//events?x HTTP/1.1\r\n",
            b"GET //events?x HTTP/1.1\r\n",
            b"GET /eventsx?x HTTP/1.1\r\n",
            b"POST /events?paths=a HTTP/1.1\r\n",
            b"GET /even",
            b"GET /events",
            b"",
        ] {
            assert!(!is_stream(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn a_head_is_framed_by_us_whatever_the_app_set() {
        let response = axum::http::Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .header("content-length", "999")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let head = String::from_utf8(response_head(&parts, Framing::Length(30))).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        assert!(head.contains("content-type: application/json\r\n"));
        assert!(head.contains("content-length: 30\r\n") && !head.contains("999"));
        assert!(head.contains("\r\ndate: ") && !head.contains("keep-alive"));
        assert!(head.ends_with("connection: close\r\n\r\n"));
    }
}
