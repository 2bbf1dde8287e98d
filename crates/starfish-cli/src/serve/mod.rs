//! The HTTP server of `starfish serve`: an accept loop of HTTP/1.1 connections over
//! hyper, with the limits that belong to connections rather than to the router.
//! Live-change streams (`GET /events`) are served off hyper, with the same limits
//! (`stream.rs`): a connection that only writes needs no buffers of its own.
//!
//! - **Header read.** A client has `header_read_timeout` to send a request's line and
//!   headers, counted from the connection's accept, or on a kept-alive connection from
//!   the first byte of the next request; past it the connection is dropped.
//! - **Idle keep-alive.** A connection on which nothing arrives for `idle_timeout`
//!   after a response is closed.
//! - **Stalled transfer.** While a request is in flight (handler running, body moving
//!   either way), a connection on which no byte moves for `request_timeout +
//!   idle_timeout` is dropped: the router answers every request within
//!   `request_timeout` (`408` past it), so such silence is a client that stopped reading
//!   its response.
//! - **Connections.** At most `max_connections` are served at once. Past it the loop
//!   stops accepting: new connections wait in the kernel's listen backlog (and beyond
//!   it, the kernel drops their SYNs, which clients retry) until a connection closes.
//!   The loop waits on a semaphore, so it never spins.
//! - **Lingering close.** A response sent before its request's body was read (a `413`,
//!   `401`, `403`, `408`, `415`, `429` or `507` the router decides from the head or the
//!   first bytes) ends the connection while the client may still be sending. Closed at
//!   once, with unread bytes in its buffer, the socket would send a reset, and the
//!   client (whose answer is still in flight) would see a broken pipe instead of the
//!   answer. So, as nginx does, the connection sends its end of stream, then reads and
//!   discards what arrives for at most [`LINGER_TIME`] and [`LINGER_BYTES`], and closes
//!   when the client does or a bound is reached. It keeps its connection slot
//!   meanwhile, so lingering connections count against `max_connections`.
//!
//! hyper's own `header_read_timeout` is not used: its timer also runs while a kept-alive
//! connection waits idle for its next request, so it would close idle connections
//! after the header timeout and leave no room for a longer idle timeout.
//!
//! The router's limits (`request_timeout`: 408; `max_in_flight`: 503) are the
//! library's, set on `SyncOptions`. Each request carries the peer's `ConnectInfo`
//! (rate limits key on it). On shutdown the loop stops accepting, idle connections
//! are closed, in-flight requests finish, and `serve` returns once every connection
//! is done.

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

mod pump;
mod stream;

/// The connection limits of [`serve`].
#[derive(Debug, Clone)]
pub(crate) struct ServeLimits {
    /// Longest wait for a request's line and headers.
    pub(crate) header_read_timeout: Duration,
    /// Longest idle time of a kept-alive connection between requests.
    pub(crate) idle_timeout: Duration,
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// The router's request timeout (a request in flight answers within it).
    pub(crate) request_timeout: Duration,
    /// Where open live-change streams are written: a runtime of their own in
    /// `starfish serve`, so that a request arriving while a change fans out to
    /// thousands of streams is not queued behind their writes (the kernel shares
    /// the cores between the two runtimes' threads); `None`: the runtime that
    /// served the stream's request.
    pub(crate) streams: Option<tokio::runtime::Handle>,
}

/// How often accept errors other than a client's reset are logged and retried.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// At most one "connection limit reached" warning per this long.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);
/// Longest a connection lingers after an answer sent before its body was read.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes a lingering connection reads and discards.
pub(crate) const LINGER_BYTES: usize = 1024 * 1024;

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then
/// finishes the requests in flight and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: impl App,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut builder = http1::Builder::new();
    // Ours, not hyper's (see the module documentation).
    builder.header_read_timeout(None);
    let mut shutdown = pin!(shutdown);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= FULL_WARNING_EVERY) {
                    tracing::warn!(
                        "connection limit reached ({}): new connections wait to be accepted",
                        limits.max_connections
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => {
                        permit.expect("the connection semaphore is never closed")
                    }
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to close.
                    tracing::error!("accept error: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY for {peer}: {e}");
        }
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            limits.clone(),
            builder.clone(),
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    // Every connection task holds a receiver: tell them, then wait until all are gone.
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
}

/// What `serve` serves: the router with its request layers around it, as one
/// service (no box per layer).
pub(crate) trait App:
    tower::Service<
        Request<Body>,
        Response = axum::http::Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The response body.
    type Body: ResponseBody;
}

impl<S, B> App for S
where
    S: tower::Service<
            Request<Body>,
            Response = axum::http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    B: ResponseBody,
{
    type Body = B;
}

/// A response body `serve` can write.
pub(crate) trait ResponseBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + 'static
{
}

impl<B> ResponseBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// Errors from `accept` that are one client's business, not the listener's.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A request handed to the app: called on the connection's copy, or waiting, on the
/// copy that said it was not ready, for it to be.
enum Answer<S: App> {
    /// The app was ready and was called.
    Called(S::Future),
    /// The app was not ready: the request waits on the copy that said so.
    Waiting(Pin<Box<tower::util::Oneshot<S, Request<Body>>>>),
}

/// Serves one connection until it ends, a limit cuts it off, or (after shutdown is
/// signalled) its in-flight request is done.
async fn connection<S: App>(
    stream: TcpStream,
    peer: SocketAddr,
    app: S,
    limits: ServeLimits,
    builder: http1::Builder,
    mut stop: watch::Receiver<()>,
    slot: OwnedSemaphorePermit,
) {
    // The request head is due within the header-read timeout of the accept, whoever
    // serves it. A live-change stream is served off hyper (`stream.rs`), lighter.
    let accepted = Instant::now();
    let head_due = accepted + limits.header_read_timeout;
    match stream::opens_stream(&stream, head_due, &mut stop).await {
        None => return,
        Some(true) => {
            let opening = Vec::with_capacity(1024);
            return stream::serve(stream, opening, peer, app, limits, head_due, (stop, slot)).await;
        }
        Some(false) => {}
    }
    let activity = Arc::new(Activity::since(accepted));
    let back = std::sync::Mutex::new(None);
    let hyper = Hyper {
        peer,
        limits: &limits,
        builder: &builder,
        activity: &activity,
    };
    let handed = hyper.serve(stream, app, &back, &mut stop).await;
    // A stream asked on the kept-alive connection leaves hyper (and its buffers),
    // served by the app hyper gave back.
    let app = back
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let (Some((stream, opening)), Some(app)) = (handed, app) {
        // Due as hyper's heads are: from the accept for the connection's first,
        // else from its first bytes, just read.
        let head_due = match activity.head_started.load(Ordering::Relaxed) {
            NONE => Instant::now() + limits.header_read_timeout,
            started => activity.at(started, limits.header_read_timeout),
        };
        stream::serve(stream, opening, peer, app, limits, head_due, (stop, slot)).await;
    }
}

/// What a connection served by hyper needs besides its socket and its app.
struct Hyper<'a> {
    peer: SocketAddr,
    limits: &'a ServeLimits,
    builder: &'a http1::Builder,
    activity: &'a Arc<Activity>,
}

/// The connection's copy of the app, as hyper's service holds it: given back (into
/// `back`) when hyper drops the service, for a stream handed over after it.
struct Kept<'a, S> {
    app: std::cell::RefCell<Option<S>>,
    back: &'a std::sync::Mutex<Option<S>>,
}

impl<S> Drop for Kept<'_, S> {
    fn drop(&mut self) {
        if let Some(app) = self.app.get_mut().take() {
            *self
                .back
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(app);
        }
    }
}

impl Hyper<'_> {
    /// Serves a connection's requests with hyper until it ends, a limit cuts it
    /// off, or (after shutdown is signalled) its in-flight request is done; the
    /// socket and the head's first bytes when a request between two others opens a
    /// live-change stream (see [`Tracked`]): hyper has then closed its side
    /// cleanly, nothing was lost. `app` is given back into `back`.
    async fn serve<S: App>(
        &self,
        stream: TcpStream,
        app: S,
        back: &std::sync::Mutex<Option<S>>,
        stop: &mut watch::Receiver<()>,
    ) -> Option<(TcpStream, Vec<u8>)> {
        let Self {
            peer,
            limits,
            builder,
            activity,
        } = *self;
        let io = TokioIo::new(Tracked {
            stream: Some(stream),
            activity: activity.clone(),
            linger: None,
            opening: None,
            flushed: true,
        });
        let requests = activity.clone();
        // The connection's own copy of the app serves its requests: a copy per request
        // (the whole stack's handles, counted up and down) is made only when the app says
        // it is not ready.
        let kept = Kept {
            app: std::cell::RefCell::new(Some(app)),
            back,
        };
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = InFlight::start(requests.clone());
            let request = app_request(request, peer, &requests);
            let mut app = kept.app.borrow_mut();
            let app = app
                .as_mut()
                .expect("the app is kept until the connection ends");
            let answer = hand_to_app(app, request);
            async move {
                let response = match answer {
                    Answer::Called(call) => call.await?,
                    Answer::Waiting(call) => call.await?,
                };
                Ok::<_, Infallible>(response.map(|body| Guarded {
                    body,
                    _guard: guard,
                }))
            }
        });
        let mut conn = pin!(builder.serve_connection(io, service));
        let mut stopped = pin!(stopped(stop));
        let mut stopping = false;
        let tick = timer_tick(limits);
        let first = activity.deadline(limits).0;
        let mut timer = pin!(tokio::time::sleep_until(first.min(Instant::now() + tick)));
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    match result {
                        Ok(()) if !stopping => return activity.take_handed(),
                        Ok(()) => {}
                        Err(e) => tracing::debug!("connection from {peer}: {e}"),
                    }
                    return None;
                }
                _ = stopped.as_mut(), if !stopping => {
                    // Closes it if idle; otherwise the response in progress is its last.
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
                () = timer.as_mut() => {
                    let (deadline, why) = activity.deadline(limits);
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::debug!("closing the connection from {peer}: {why}");
                        return None;
                    }
                    timer.as_mut().reset(deadline.min(now + tick));
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The accept loop's stop signal as a connection waits for it, at each of its
    /// wakes (each request): polled for real the first time, which registers the
    /// connection's task with the channel, and then only once the channel has
    /// changed. Polling it for real takes the lock of a list every connection
    /// shares; looking at the channel's version takes none.
    struct Stopped<F> {
        #[pin]
        changed: F,
        probe: watch::Receiver<()>,
        polled: bool,
    }
}

/// The wait for `stop` to change, as a connection's [`Stopped`].
fn stopped(
    stop: &mut watch::Receiver<()>,
) -> Stopped<impl Future<Output = Result<(), watch::error::RecvError>> + '_> {
    let probe = stop.clone();
    Stopped {
        changed: stop.changed(),
        probe,
        polled: false,
    }
}

impl<F: Future> Future for Stopped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Still registered from the first poll, with this task's waker (a task's
        // waker does not change): nothing to do until the channel changes.
        if *this.polled && !this.probe.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        *this.polled = true;
        this.changed.poll(cx)
    }
}

/// A request as hyper read it, as the app takes it: with the peer's `ConnectInfo`
/// (rate limits key on it), and its body watched for bytes moving and for being
/// dropped before its end.
fn app_request(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    activity: &Arc<Activity>,
) -> Request<Body> {
    request.extensions_mut().insert(ConnectInfo(peer));
    // A request without a body (most: pulls) gets an empty one, which takes no
    // allocation; hyper's stream is boxed only when there is something to read.
    request.map(|body| {
        if hyper::body::Body::is_end_stream(&body) {
            Body::empty()
        } else {
            Body::new(Watched {
                body,
                ended: false,
                activity: activity.clone(),
            })
        }
    })
}

/// Hands `request` to the connection's copy of the app if it is ready; otherwise the
/// request waits on that copy and the connection keeps a fresh one.
fn hand_to_app<S: App>(app: &mut S, request: Request<Body>) -> Answer<S> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match app.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => Answer::Called(app.call(request)),
        Poll::Ready(Err(never)) => match never {},
        // Waited for on the copy just asked (whatever it reserved, a place in
        // a queue say, is kept and woken); the connection takes a fresh one.
        Poll::Pending => {
            let fresh = app.clone();
            let asked = std::mem::replace(app, fresh);
            Answer::Waiting(Box::pin(asked.oneshot(request)))
        }
    }
}

/// How far ahead a connection's timer is armed. The timer is armed at most `tick`
/// ahead and set again when it fires, never per request: every deadline is an
/// event's time plus at least `tick`, so one that an event after the arming sets is
/// never earlier than the timer (see `Activity`).
fn timer_tick(limits: &ServeLimits) -> Duration {
    limits
        .idle_timeout
        .min(limits.header_read_timeout)
        .max(Duration::from_millis(10))
}

/// "No time yet" in the millisecond fields of [`Activity`].
const NONE: u64 = u64::MAX;

/// What a connection is doing, for its deadlines; times are milliseconds since the
/// connection was accepted. hyper polls the socket and calls the service from the
/// connection's own task, so these never change behind the deadline check's back.
///
/// Every deadline is the time of an event that starts its state (a byte moved during
/// a request, which a request's start counts as; a response ended; a request head
/// began) plus a timeout of at least `min(idle, header read)`. So no event can set a
/// deadline earlier than that long after it happens, and the connection's timer,
/// armed at most that far ahead, needs no wake-up when the state changes.
struct Activity {
    start: Instant,
    /// The last byte read or written.
    last_io: AtomicU64,
    /// The first byte of the request head being read (`NONE`: none is being read).
    /// A fresh connection starts at 0: its first request is due at once.
    head_started: AtomicU64,
    /// The end of the last response.
    idle_since: AtomicU64,
    /// Requests whose response is not done.
    in_flight: AtomicUsize,
    /// The last request's body was dropped before its end: if the connection closes
    /// now, it lingers.
    body_unread: AtomicBool,
    /// The socket and a stream's first bytes, once hyper closed its side of a
    /// connection whose next request opens a live-change stream (see [`Tracked`]).
    handed: std::sync::Mutex<Option<(TcpStream, Vec<u8>)>>,
}

impl Activity {
    /// A connection accepted at `start`.
    fn since(start: Instant) -> Self {
        Self {
            start,
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            body_unread: AtomicBool::new(false),
            handed: std::sync::Mutex::new(None),
        }
    }

    /// What [`Tracked`] handed over, if it did.
    fn take_handed(&self) -> Option<(TcpStream, Vec<u8>)> {
        self.handed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64, after: Duration) -> Instant {
        self.start + Duration::from_millis(ms) + after
    }

    fn on_read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            // Bytes between requests: the next request's head has begun.
            let _ =
                self.head_started
                    .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// When the connection is cut off if nothing changes, and why.
    fn deadline(&self, limits: &ServeLimits) -> (Instant, &'static str) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            let silence = limits.request_timeout + limits.idle_timeout;
            let last = self.last_io.load(Ordering::Relaxed);
            return (self.at(last, silence), "no byte moved during a request");
        }
        match self.head_started.load(Ordering::Relaxed) {
            NONE => (
                self.at(self.idle_since.load(Ordering::Relaxed), limits.idle_timeout),
                "idle keep-alive timeout",
            ),
            started => (
                self.at(started, limits.header_read_timeout),
                "request head not received in time",
            ),
        }
    }
}

/// One request from the service call to the end of its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_started.store(NONE, Ordering::Relaxed);
        activity.body_unread.store(false, Ordering::Relaxed);
        // The request's silence is counted from its start at the earliest: from
        // the read of its head's last bytes, just now (no clock read here: this is
        // once per request).
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            // Idle since the response's last bytes went out, just before.
            let last_io = self.0.last_io.load(Ordering::Relaxed);
            self.0.idle_since.store(last_io, Ordering::Relaxed);
        }
    }
}

/// A response body that ends its request's [`InFlight`] when hyper drops it (after
/// its last byte, or when the connection goes).
struct Guarded<B> {
    body: B,
    _guard: InFlight,
}

impl<B: ResponseBody> hyper::body::Body for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request's body, noting whether it was read to its end before it was dropped.
struct Watched {
    body: Incoming,
    ended: bool,
    activity: Arc<Activity>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !hyper::body::Body::is_end_stream(self) {
            self.activity.body_unread.store(true, Ordering::Relaxed);
        }
    }
}

/// The socket, noting when bytes move; it lingers when closed after an answer sent
/// before its request's body was read (see the module documentation).
///
/// A request read between two others (none in flight) that opens a live-change
/// stream is not given to hyper: its bytes are kept (`opening`), hyper reads the
/// end of the connection instead and closes its side (after what it still had to
/// write), and the close hands the socket and those bytes over
/// ([`Activity::handed`]) to be served as `stream.rs` serves a connection's first
/// request: without hyper's 16 KiB of buffers for the stream's whole life.
struct Tracked {
    /// `None` once handed over.
    stream: Option<TcpStream>,
    activity: Arc<Activity>,
    /// Set once a lingering close has begun.
    linger: Option<Linger>,
    /// A stream's request, read and kept from hyper.
    opening: Option<Vec<u8>>,
    /// Everything hyper wrote has been flushed (no write since the last flush).
    flushed: bool,
}

/// The error of a socket handed over: hyper has nothing more to do with it.
fn handed_over() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "handed over to a live-change stream",
    )
}

/// A lingering close under way: what may still be discarded, and until when.
struct Linger {
    left: usize,
    until: Pin<Box<tokio::time::Sleep>>,
}

impl Linger {
    /// Reads and discards until the client closes, errs, or a bound is reached.
    fn poll_done(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        let mut buf = [0u8; 8192];
        loop {
            if self.left == 0 || self.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    self.left = self.left.saturating_sub(read.filled().len());
                }
                // The client's end of stream, or its reset: nothing more will come.
                Poll::Ready(_) => return Poll::Ready(()),
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut().filter(|_| this.opening.is_none()) else {
            // What hyper reads of a connection handed over: its end.
            return Poll::Ready(Ok(()));
        };
        let before = buf.filled().len();
        let poll = Pin::new(stream).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            // Between two requests for sure: no request in flight, hyper's answer
            // all out (a body's last chunk is dropped before it is written), and no
            // body of the last request left to drain (bytes read now may be its).
            let between = this.flushed
                && this.activity.in_flight.load(Ordering::Relaxed) == 0
                && !this.activity.body_unread.load(Ordering::Relaxed);
            if between && stream::is_stream(read) {
                this.opening = Some(read.to_vec());
                buf.set_filled(before);
                return Poll::Ready(Ok(()));
            }
            this.activity.on_read();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(handed_over()));
        };
        this.flushed = false;
        let poll = Pin::new(stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(handed_over()));
        };
        this.flushed = false;
        let poll = Pin::new(stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    /// hyper flushes the socket once its own buffer is all written.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let poll = Pin::new(stream).poll_flush(cx);
        if matches!(poll, Poll::Ready(Ok(()))) {
            this.flushed = true;
        }
        poll
    }

    /// hyper's close: the end of stream is sent, then, when an answer went out before
    /// its request's body was read, the connection lingers before it is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(opening) = this.opening.take() {
            // Not closed: handed over, with the stream's first bytes.
            let handed = this.stream.take().map(|stream| (stream, opening));
            *this
                .activity
                .handed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = handed;
            return Poll::Ready(Ok(()));
        }
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
            if !this.activity.body_unread.swap(false, Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Linger {
                left: LINGER_BYTES,
                until: Box::pin(tokio::time::sleep(LINGER_TIME)),
            });
        }
        match &mut this.linger {
            Some(linger) => linger.poll_done(stream, cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair of sockets: ours (wrapped) and the client's.
    async fn tracked_pair() -> (Tracked, TcpStream, Arc<Activity>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let activity = Arc::new(Activity::since(Instant::now()));
        let tracked = Tracked {
            stream: Some(ours),
            activity: activity.clone(),
            linger: None,
            opening: None,
            flushed: true,
        };
        (tracked, client, activity)
    }

    /// A stream's request is kept from hyper only between two requests for sure:
    /// none in flight, hyper's writes flushed, no unread body of the last request to
    /// drain (bytes read then are its body). Otherwise hyper reads the bytes.
    #[tokio::test]
    async fn a_stream_request_is_kept_from_hyper_only_between_requests() {
        const STREAM: &[u8] = b"GET /events?paths=a/b HTTP/1.1\r\nHost: x\r\n\r\n";
        type Setup = fn(&mut Tracked, &Activity);
        let cases: [(&str, Setup, bool); 4] = [
            ("between requests", |_, _| {}, true),
            (
                "a request in flight",
                |_, a| {
                    a.in_flight.store(1, Ordering::Relaxed);
                },
                false,
            ),
            ("an answer not flushed", |t, _| t.flushed = false, false),
            (
                "a body left unread",
                |_, a| {
                    a.body_unread.store(true, Ordering::Relaxed);
                },
                false,
            ),
        ];
        for (case, setup, kept) in cases {
            let (mut tracked, mut client, activity) = tracked_pair().await;
            setup(&mut tracked, &activity);
            client.write_all(STREAM).await.unwrap();
            let mut buf = [0u8; 256];
            let n = tracked.read(&mut buf).await.unwrap();
            if kept {
                assert_eq!(n, 0, "{case}: hyper reads the end");
                assert_eq!(tracked.opening.as_deref(), Some(STREAM), "{case}");
                // Closed by hyper: handed over, not shut down.
                tracked.shutdown().await.unwrap();
                let (stream, opening) = activity.take_handed().expect(case);
                assert_eq!(opening, STREAM);
                drop(stream);
            } else {
                assert_eq!(&buf[..n], STREAM, "{case}: hyper reads the request");
                assert!(tracked.opening.is_none(), "{case}");
            }
        }
        // A write since the last flush holds it back; the flush lets it through.
        let (mut tracked, mut client, _) = tracked_pair().await;
        tracked.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert!(!tracked.flushed);
        tracked.flush().await.unwrap();
        client.write_all(STREAM).await.unwrap();
        assert_eq!(tracked.read(&mut [0u8; 256]).await.unwrap(), 0);
    }

    /// An app that echoes the path, counts its copies, and (with `pending_every`) says
    /// it is not ready on every n-th look, waking its caller at once.
    struct Echo {
        copies: Arc<AtomicUsize>,
        looks: Arc<AtomicUsize>,
        pending_every: Option<usize>,
    }

    impl Clone for Echo {
        fn clone(&self) -> Self {
            self.copies.fetch_add(1, Ordering::SeqCst);
            Self {
                copies: self.copies.clone(),
                looks: self.looks.clone(),
                pending_every: self.pending_every,
            }
        }
    }

    impl tower::Service<Request<Body>> for Echo {
        type Response = axum::http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            let look = self.looks.fetch_add(1, Ordering::SeqCst);
            if self.pending_every.is_some_and(|n| look % n == 0) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let path = request.uri().path().to_owned();
            std::future::ready(Ok(axum::http::Response::new(Body::from(path))))
        }
    }

    /// Serves `app` on a loopback port until the sender is used or dropped.
    async fn start(
        app: impl App,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        start_with(app, None).await
    }

    /// [`start`], open streams written on `streams`.
    async fn start_with(
        app: impl App,
        streams: Option<tokio::runtime::Handle>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServeLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4,
            request_timeout: Duration::from_secs(30),
            streams,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    /// Serves `app`, sends `paths` on one kept-alive connection, and returns the
    /// bodies of the answers.
    async fn serve_paths(app: Echo, paths: &[&str]) -> Vec<String> {
        let (addr, stop, server) = start(app).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut bodies = Vec::new();
        for path in paths {
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let mut byte = [0u8; 1];
            // Head, then a body as long as the path.
            while !answer.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                answer.push(byte[0]);
            }
            let mut body = vec![0u8; path.len()];
            stream.read_exact(&mut body).await.unwrap();
            bodies.push(String::from_utf8(body).unwrap());
        }
        drop(stream);
        let _ = stop.send(());
        server.await.unwrap();
        bodies
    }

    fn echo(pending_every: Option<usize>) -> (Echo, Arc<AtomicUsize>) {
        let copies = Arc::new(AtomicUsize::new(0));
        let app = Echo {
            copies: copies.clone(),
            looks: Arc::default(),
            pending_every,
        };
        (app, copies)
    }

    /// A request's body reaches the app whole, however it is sent; a request without
    /// one (which is given an empty body, not hyper's stream) reads as empty.
    /// Reads from `stream` until `want` has arrived; what was read.
    async fn read_until(stream: &mut TcpStream, want: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(want) {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("in time")
                .unwrap();
            assert!(
                n > 0,
                "ended before {want:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_stream_is_written_on_the_streams_runtime_and_ends_with_the_server() {
        let config = r#"{"version": 1, "collections": [{"name": "board",
            "storagePath": "board/{id}", "readRoles": ["public"], "writeRoles": ["public"]}]}"#;
        let (stopping, stop_streams) = tokio::sync::watch::channel(false);
        let options = starfish_server::SyncOptions::new(
            starfish_server::SyncConfig::from_json_str(config).unwrap(),
            starfish_server::store::DocStore::memory(),
        )
        .with_shutdown(stop_streams);
        let app = starfish_server::create_sync_service(options).unwrap();
        let streams = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, stop, server) = start_with(app, Some(streams.handle().clone())).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let ask = "GET /events?paths=board/b1 HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(ask.as_bytes()).await.unwrap();
        read_until(&mut stream, ": connected").await;
        // Its writing task is the streams' runtime's only one.
        assert_eq!(streams.metrics().num_alive_tasks(), 1);
        // A push on another connection reaches it, through the bus, across runtimes.
        let mut pusher = TcpStream::connect(addr).await.unwrap();
        let body = r#"{"data": {"n": 1}, "baseHash": null}"#;
        let push = format!(
            "POST /push/board/b1 HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        pusher.write_all(push.as_bytes()).await.unwrap();
        read_until(&mut pusher, "200 OK").await;
        read_until(&mut stream, "board/b1").await;
        // Shutdown ends it (its last chunk), and the server waits for it.
        stop.send(()).unwrap();
        stopping.send(true).unwrap();
        drop(pusher);
        read_until(&mut stream, "0\r\n\r\n").await;
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops once its stream is done")
            .unwrap();
        // The task is counted until its runtime has finished with it, a moment after
        // its last drop (which let the server stop): it must be gone soon after.
        let gone = async {
            while streams.metrics().num_alive_tasks() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the stream's task is done");
        streams.shutdown_background();
    }

    #[tokio::test]
    async fn bodies_reach_the_app() {
        let app = axum::Router::new().fallback(|body: Bytes| async move { body });
        let (addr, stop, server) = start(app).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let sent: [(&str, &[u8]); 5] = [
            ("POST", b"Content-Length: 5\r\n\r\nhello"),
            (
                "POST",
                b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
            ),
            ("GET", b"\r\n"),
            ("POST", b"Content-Length: 0\r\n\r\n"),
            ("GET", b"Content-Length: 3\r\n\r\nxyz"),
        ];
        let mut echoed = Vec::new();
        for (method, rest) in sent {
            let mut request = format!("{method} /x HTTP/1.1\r\nHost: x\r\n").into_bytes();
            request.extend_from_slice(rest);
            stream.write_all(&request).await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await.unwrap();
            echoed.push(String::from_utf8(body).unwrap());
        }
        assert_eq!(echoed, ["hello", "abcd", "", "", "xyz"]);
        drop(stream);
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// A ready app is called on the connection's copy: one copy per connection, none
    /// per request.
    #[tokio::test]
    async fn a_ready_app_is_not_copied_per_request() {
        let (app, copies) = echo(None);
        let paths = ["/a", "/bb", "/ccc", "/dddd"];
        assert_eq!(serve_paths(app, &paths).await, paths);
        assert_eq!(copies.load(Ordering::SeqCst), 1);
    }

    /// One request at a time, as `tower::limit::ConcurrencyLimit` does it: readiness
    /// queues for the permit inside the copy asked; `/hold` waits for `release`.
    struct OneAtATime {
        permits: Arc<tokio::sync::Semaphore>,
        waiting: Option<Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>>,
        permit: Option<OwnedSemaphorePermit>,
        looks: Arc<AtomicUsize>,
        held: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    }

    impl Clone for OneAtATime {
        fn clone(&self) -> Self {
            Self {
                permits: self.permits.clone(),
                waiting: None,
                permit: None,
                looks: self.looks.clone(),
                held: self.held.clone(),
                release: self.release.clone(),
            }
        }
    }

    impl tower::Service<Request<Body>> for OneAtATime {
        type Response = axum::http::Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.looks.fetch_add(1, Ordering::SeqCst);
            if self.permit.is_none() {
                let permits = self.permits.clone();
                let waiting = self.waiting.get_or_insert_with(|| {
                    Box::pin(async move { permits.acquire_owned().await.unwrap() })
                });
                let permit = std::task::ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
                self.permit = Some(permit);
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let permit = self.permit.take();
            let (held, release) = (self.held.clone(), self.release.clone());
            let path = request.uri().path().to_owned();
            Box::pin(async move {
                if path == "/hold" {
                    held.notify_one();
                    release.notified().await;
                }
                drop(permit);
                Ok(axum::http::Response::new(Body::from(path)))
            })
        }
    }

    /// A request the app is not ready for waits on the copy that said so: whatever
    /// that copy reserved (here its place in the permit's queue) is woken when ready,
    /// not left behind in the connection's copy while the request queues again.
    #[tokio::test]
    async fn a_request_waits_where_the_app_reserved_its_place() {
        let looks = Arc::new(AtomicUsize::new(0));
        let (held, release) = (Arc::default(), Arc::new(tokio::sync::Notify::new()));
        let app = OneAtATime {
            permits: Arc::new(tokio::sync::Semaphore::new(1)),
            waiting: None,
            permit: None,
            looks: looks.clone(),
            held: Arc::clone(&held),
            release: release.clone(),
        };
        let (addr, stop, server) = start(app).await;
        let send = |path: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            stream
        };
        let first = send("/hold").await;
        held.notified().await;
        let looks_before = looks.load(Ordering::SeqCst);
        let second = send("/b").await;
        // Until the second request has been looked at twice (the connection's copy,
        // then the copy it waits on): it is queued for the permit.
        while looks.load(Ordering::SeqCst) < looks_before + 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.notify_one();
        let answer = |mut stream: TcpStream| async move {
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        };
        assert!(answer(first).await.ends_with("/hold"));
        let second = tokio::time::timeout(Duration::from_secs(20), answer(second))
            .await
            .expect("the waiting request is answered once the permit is free");
        assert!(second.ends_with("/b"), "{second}");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// An app that is not ready is waited for (on a copy), and every request is
    /// answered in order.
    #[tokio::test]
    async fn an_app_that_is_not_ready_is_waited_for() {
        let (app, copies) = echo(Some(2));
        let paths = ["/a", "/bb", "/ccc", "/dddd"];
        assert_eq!(serve_paths(app, &paths).await, paths);
        assert!(copies.load(Ordering::SeqCst) > 1, "waited on copies");
    }
}
