//! `starfish serve`'s observability settings: Prometheus metrics on a listener of
//! their own, the log format, and a request id on every request and log line.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use starfish_server::{Metrics, SyncOptions};
use std::pin::Pin;

/// `serve` flags; each also a `STARFISH_*` variable and a key of `server.observe`.
#[derive(clap::Args)]
pub(crate) struct ObserveArgs {
    /// Serve Prometheus metrics at `http://ADDR/metrics`, apart from the sync routes
    /// (namespace names never reach the public port) [default: off].
    #[arg(long, env = "STARFISH_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Log lines as text or as JSON objects (one per line) [default: text].
    #[arg(long, value_enum, env = "STARFISH_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, ValueEnum, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `server.observe` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ObserveSection {
    metrics_addr: Option<String>,
    log_format: Option<LogFormat>,
}

/// The effective observability settings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObserveSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metrics_addr: Option<String>,
    pub(crate) log_format: LogFormat,
}

impl ObserveSettings {
    /// Flags and environment over the section.
    pub(crate) fn resolve(args: ObserveArgs, section: ObserveSection) -> Self {
        Self {
            metrics_addr: args.metrics_addr.or(section.metrics_addr),
            log_format: args.log_format.or(section.log_format).unwrap_or_default(),
        }
    }

    /// The metrics to count into, when they are served.
    pub(crate) fn metrics(&self) -> Option<Metrics> {
        self.metrics_addr.as_ref().map(|_| Metrics::new())
    }

    /// `options` counting into `metrics`.
    pub(crate) fn apply(options: SyncOptions, metrics: Option<&Metrics>) -> SyncOptions {
        match metrics {
            Some(m) => options.with_metrics(m.clone()),
            None => options,
        }
    }

    /// Starts the log subscriber in the chosen format, filtered by `RUST_LOG`; what
    /// it returns tells [`request_layers`] how to give request spans their fields.
    pub(crate) fn init_logs(&self) -> SpanFields {
        // Unset, empty (or only commas) and not understood: `info`.
        let directives = std::env::var("RUST_LOG").unwrap_or_default();
        let filter = match tracing_subscriber::EnvFilter::try_new(&directives) {
            Ok(filter) if directives.split(',').any(|d| !d.trim().is_empty()) => filter,
            _ => "info".into(),
        };
        // Colours only for a terminal: escape codes cost time and clutter log files.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let max =
            tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&filter);
        let fields = SpanFields::for_directives(&directives, max);
        let dispatch = dispatch(self.log_format, ansi, filter, std::io::stdout);
        tracing::dispatcher::set_global_default(dispatch)
            .expect("the log subscriber is set once, at start");
        fields
    }
}

/// How a request gets its `request` span (id, method, path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanFields {
    /// A span made for every request, with its fields: `RUST_LOG` selects on span
    /// fields (`[request{...}]`), or lets `debug` lines through, which every request
    /// writes and which may come from spans entered inside the request.
    Eager,
    /// A span made only for a request that writes a line ([`Spanless`]), at the first
    /// one: most requests write none, and making, entering and closing a span was
    /// about a tenth of a cached pull's work.
    Spanless,
}

impl SpanFields {
    /// Spanless when `directives` name no spans or fields (in brackets or braces,
    /// which is when a filter looks at a span's fields) and let through nothing
    /// finer than `info` (`max`, the filter's hint): no span is then entered inside
    /// a request, so the request's span, made at its first line, is the outermost.
    fn for_directives(directives: &str, max: Option<tracing::level_filters::LevelFilter>) -> Self {
        let coarse = max.is_some_and(|max| max <= tracing::level_filters::LevelFilter::INFO);
        if directives.contains(['[', '{']) || !coarse {
            Self::Eager
        } else {
            Self::Spanless
        }
    }
}

/// The log subscriber: `filter`, then the formatter writing to `writer`, under
/// [`Spanless`] (which does nothing for [`SpanFields::Eager`]).
fn dispatch<W>(
    format: LogFormat,
    ansi: bool,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    let logs = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    // One arm per format, since the subscriber's type depends on the format.
    match format {
        LogFormat::Text if !ansi => {
            tracing::Dispatch::new(Spanless::new(logs.with(layer.fmt_fields(PlainFields))))
        }
        LogFormat::Text => tracing::Dispatch::new(Spanless::new(logs.with(layer))),
        LogFormat::Json => tracing::Dispatch::new(Spanless::new(
            logs.with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
        )),
    }
}

/// A request's span, not made yet (see [`Spanless`]): lent to [`POLLED`] while the
/// request is polled (or dropped) on a thread.
struct Pending {
    id: axum::http::HeaderValue,
    method: axum::http::Method,
    uri: axum::http::Uri,
    /// The span, once a line inside the request made it, and the subscriber that
    /// made it (which closes it when this is dropped, with the request).
    span: Option<(tracing::span::Id, tracing::Dispatch)>,
}

impl Pending {
    /// The request's span, made through `logs` (which is `me`'s) when there is none
    /// yet: `None` when the filter turns request spans off (`RUST_LOG=warn`).
    fn span(
        &mut self,
        logs: &impl tracing::Subscriber,
        me: &std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
    ) -> Option<tracing::span::Id> {
        let metadata = request_callsite();
        if self.span.is_none() && logs.enabled(metadata) {
            let me = me.get()?.upgrade()?;
            // Made now, the span is the child of whatever is entered: nothing, unless
            // something enters a span of `info` or above inside a request.
            debug_assert!(
                logs.current_span().id().is_none(),
                "a span entered inside a spanless request would end up outside its span"
            );
            let fields = metadata.fields();
            if let (Some(id_field), Some(method_field), Some(path_field)) = (
                fields.field("id"),
                fields.field("method"),
                fields.field("path"),
            ) {
                // As `RequestIds::call` gives them to an eager span.
                let id = tracing::field::display(self.id.to_str().unwrap_or_default());
                let method = tracing::field::display(&self.method);
                let path = self.uri.path();
                let values: [(&tracing::field::Field, Option<&dyn tracing::Value>); 3] = [
                    (&id_field, Some(&id)),
                    (&method_field, Some(&method)),
                    (&path_field, Some(&path)),
                ];
                let values = fields.value_set(&values);
                let attributes = tracing::span::Attributes::new(metadata, &values);
                self.span = Some((logs.new_span(&attributes), me));
            }
        }
        Some(self.span.as_ref()?.0.clone())
    }
}

impl Drop for Pending {
    /// Closes the request's span, if a line made one, through the subscriber that
    /// made it (whichever is the default by now, on whatever thread).
    fn drop(&mut self) {
        if let Some((span, logs)) = self.span.take() {
            logs.try_close(span);
        }
    }
}

thread_local! {
    /// The request being polled on this thread, for [`Spanless`].
    static POLLED: std::cell::RefCell<Option<Box<Pending>>> = const { std::cell::RefCell::new(None) };
}

/// [`Pending`] lent to [`POLLED`] for as long as this lives (panics included), then
/// taken back, and whatever was lent before restored. With nothing to lend, it
/// leaves [`POLLED`] alone (an outer request's stays where it is).
struct Lent<'a> {
    slot: &'a mut Option<Box<Pending>>,
    before: Option<Box<Pending>>,
    lending: bool,
}

impl<'a> Lent<'a> {
    fn new(slot: &'a mut Option<Box<Pending>>) -> Self {
        let mut lent = slot.take();
        let mut before = None;
        let mut lending = false;
        if lent.is_some() {
            // Without the thread-local (a thread being torn down) it stays put.
            let _ = POLLED.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    before = std::mem::replace(&mut *p, lent.take());
                    lending = true;
                }
            });
            if !lending {
                *slot = lent;
            }
        }
        Self {
            slot,
            before,
            lending,
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if self.lending {
            let before = self.before.take();
            if let Ok(Ok(back)) = POLLED.try_with(|p| {
                p.try_borrow_mut()
                    .map(|mut p| std::mem::replace(&mut *p, before))
            }) {
                *self.slot = back;
            }
        }
    }
}

/// The log subscriber `S`, where a request polled on a thread ([`POLLED`]) has its
/// span made at the first line written inside it, and entered around each such
/// line: the line reads as if the span had been made when the request came in, in
/// every format, and a request that writes nothing (most) costs no span at all.
///
/// The request's span is the one polled on the line's thread: a line written from
/// another task or thread (a task the request spawned) is outside it, as it would be
/// outside a span made eagerly, which nothing hands on either. A span entered
/// inside the request would end up outside the request's: [`SpanFields::Spanless`]
/// is chosen only when no such span can be on (nothing finer than `info`).
///
/// It must be the outermost subscriber: it cannot pass on `downcast_raw` (an
/// `unsafe fn`), so nothing above it could find the registry, and a
/// `Dispatch::downcast_ref` finds only `Spanless` itself.
struct Spanless<S> {
    logs: S,
    /// The dispatch this is in, for the spans it makes (see [`Pending::span`]).
    me: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S> Spanless<S> {
    fn new(logs: S) -> Self {
        Self {
            logs,
            me: std::sync::OnceLock::new(),
        }
    }
}

/// A span entered in `logs` until dropped (a line that panics included).
struct Inside<'a, S: tracing::Subscriber>(&'a S, tracing::span::Id);

impl<S: tracing::Subscriber> Drop for Inside<'_, S> {
    fn drop(&mut self) {
        self.0.exit(&self.1);
    }
}

impl<S: tracing::Subscriber> tracing::Subscriber for Spanless<S> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.me.set(subscriber.downgrade());
        self.logs.on_register_dispatch(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.logs.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        self.logs.enabled(metadata)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.logs.max_level_hint()
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.logs.new_span(span)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.logs.record(span, values);
    }

    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        self.logs.record_follows_from(span, follows);
    }

    fn event_enabled(&self, event: &tracing::Event<'_>) -> bool {
        self.logs.event_enabled(event)
    }

    fn event(&self, event: &tracing::Event<'_>) {
        // Only a line that takes its span from where it is written; the borrow ends
        // before the line is written (formatting it may write another).
        let span = event
            .is_contextual()
            .then(|| {
                POLLED.try_with(|polled| {
                    let mut polled = polled.try_borrow_mut().ok()?;
                    polled.as_mut()?.span(&self.logs, &self.me)
                })
            })
            .and_then(Result::ok)
            .flatten();
        let _inside = span.map(|span| {
            self.logs.enter(&span);
            Inside(&self.logs, span)
        });
        self.logs.event(event);
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.logs.enter(span);
    }

    fn exit(&self, span: &tracing::span::Id) {
        self.logs.exit(span);
    }

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.logs.clone_span(id)
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.logs.try_close(id)
    }

    fn current_span(&self) -> tracing_core::span::Current {
        self.logs.current_span()
    }
}

/// Text log fields without colours, as the default formatter writes them (`message`
/// first, then `name=value` with values in debug form, strings quoted), without its
/// styling machinery: the request span's fields are written on every request.
struct PlainFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        // Written into a buffer on the stack first, then at once: the span's fields go
        // into a fresh `String` on every request, which would otherwise grow by steps.
        let mut writer = writer;
        let mut staged = Staged {
            bytes: [0; 256],
            len: 0,
            out: &mut writer,
            through: false,
        };
        let mut visitor = PlainVisitor {
            writer: tracing_subscriber::fmt::format::Writer::new(&mut staged),
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        staged.finish()
    }
}

/// Text staged on the stack for `out`, up to 256 bytes; past that, what is staged and
/// everything after goes straight to `out`.
struct Staged<'a, W: std::fmt::Write> {
    bytes: [u8; 256],
    len: usize,
    out: &'a mut W,
    through: bool,
}

impl<W: std::fmt::Write> Staged<'_, W> {
    /// Writes what is still staged.
    fn finish(self) -> std::fmt::Result {
        if self.through {
            Ok(())
        } else {
            // Only whole `str` pieces are copied in.
            let text = std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default();
            self.out.write_str(text)
        }
    }
}

impl<W: std::fmt::Write> std::fmt::Write for Staged<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.through {
            return self.out.write_str(s);
        }
        if let Some(room) = self.bytes.get_mut(self.len..self.len + s.len()) {
            room.copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        self.through = true;
        let staged = std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default();
        self.out.write_str(staged)?;
        self.out.write_str(s)
    }
}

/// The visitor of [`PlainFields`].
struct PlainVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for PlainVisitor<'_> {
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        /// The error and its sources, as a list.
        struct Sources<'a>(&'a (dyn std::error::Error + 'static));
        impl std::fmt::Display for Sources<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut list = f.debug_list();
                let mut next = Some(self.0);
                while let Some(error) = next {
                    list.entry(&format_args!("{error}"));
                    next = error.source();
                }
                list.finish()
            }
        }
        let mut text = String::new();
        let written = match value.source() {
            Some(source) => std::fmt::write(
                &mut Escaping(&mut text),
                format_args!("{value} {}.sources={}", field.name(), Sources(source)),
            ),
            None => std::fmt::write(&mut Escaping(&mut text), format_args!("{value}")),
        };
        if written.is_ok() {
            self.record_debug(field, &format_args!("{text}"));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            // What `{value:?}` writes for such a string, without its escaping machinery
            // (the request span's path, on every request).
            self.record_with(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_with(field, |w| write!(w, "{value:?}"));
    }
}

impl PlainVisitor<'_> {
    /// Writes `field` with the value `write` writes (in debug form), as the default
    /// formatter would.
    fn record_with(
        &mut self,
        field: &tracing::field::Field,
        write: impl FnOnce(&mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result,
    ) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Fields the `log` bridge adds are the formatter's business, not the line's.
        if name.starts_with("log.") {
            return;
        }
        let gap = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            // Control characters a terminal would act on are written escaped, as the
            // default formatter does: a message may quote client text.
            self.writer.write_str(gap).and_then(|()| {
                let mut escaped = Escaping(&mut self.writer);
                write(&mut tracing_subscriber::fmt::format::Writer::new(
                    &mut escaped,
                ))
            })
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            let w = &mut self.writer;
            w.write_str(gap)
                .and_then(|()| w.write_str(name))
                .and_then(|()| w.write_char('='))
                .and_then(|()| write(w))
        };
    }
}

/// Writes through to `.0` with terminal control characters (ESC, BEL, BS, FF, DEL and
/// the C1 range) written as escapes.
struct Escaping<'a, W>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        }) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            if c < '\u{80}' {
                write!(self.0, "\\x{:02x}", u32::from(c))?;
            } else {
                write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Every request gets an `x-request-id` (the client's, if it sent a sane one, see
/// [`sane_id`], else a fresh one), echoed in the response, and a `request` span
/// carrying it, its method and its path, so every log line of the request names it
/// (made at the request's first line, for [`SpanFields::Spanless`]). A `5xx` answer
/// is logged at `error`; start and end of every request at `debug`.
///
/// One service around the whole router (`Router::layer` would box each layer per
/// request), doing what tower-http's request-id and trace layers did together.
pub(crate) fn request_layers<S>(app: S, fields: SpanFields) -> RequestIds<S> {
    let mut seed = [0u8; 8];
    // Without randomness the ids are still unique within the process.
    let _ = getrandom::fill(&mut seed);
    if fields == SpanFields::Spanless {
        // Registered now, before any request: the filters know it when a line comes.
        request_callsite();
    }
    RequestIds {
        inner: app,
        fields,
        ids: Sequential {
            prefix: u64::from_le_bytes(seed),
            next: std::sync::Arc::default(),
        },
    }
}

/// The callsite of request spans made at a request's first line (as the eager ones'
/// `info_span!` would declare it), registered with the log subscribers.
fn request_callsite() -> &'static tracing::Metadata<'static> {
    use tracing_core::callsite::{Callsite as _, DefaultCallsite};
    static CALLSITE: DefaultCallsite = DefaultCallsite::new(&METADATA);
    static METADATA: tracing::Metadata<'static> = tracing::Metadata::new(
        "request",
        module_path!(),
        tracing::Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        tracing_core::field::FieldSet::new(
            &["id", "method", "path"],
            tracing_core::identify_callsite!(&CALLSITE),
        ),
        tracing_core::metadata::Kind::SPAN,
    );
    // Registered at the first call (what `info_span!` does at its first use).
    CALLSITE.interest();
    CALLSITE.metadata()
}

/// The request id header.
const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// Whether a client's request id is kept: 1 to 64 letters, digits and `-_.:` (UUIDs,
/// ULIDs, trace ids). Anything else is replaced, so that log lines hold no client
/// text that could pass for another field, and stay short.
fn sane_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// A random prefix drawn once per process, then a counter: unique ids without a
/// system call per request.
#[derive(Clone)]
struct Sequential {
    prefix: u64,
    next: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Sequential {
    /// The next id: 24 lowercase hex digits.
    fn id(&self) -> axum::http::HeaderValue {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut text = [0u8; 24];
        let digits = (u128::from(self.prefix) << 32) | u128::from(n);
        for (i, b) in text.iter_mut().enumerate() {
            let nibble = (digits >> (4 * (23 - i))) & 0xf;
            *b = b"0123456789abcdef"[nibble as usize];
        }
        axum::http::HeaderValue::from_bytes(&text).expect("hex digits are a header value")
    }
}

/// The service of [`request_layers`].
#[derive(Clone)]
pub(crate) struct RequestIds<S> {
    inner: S,
    fields: SpanFields,
    ids: Sequential,
}

impl<S, B> tower::Service<axum::http::Request<axum::body::Body>> for RequestIds<S>
where
    S: tower::Service<
            axum::http::Request<axum::body::Body>,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        >,
{
    type Response = axum::http::Response<B>;
    type Error = std::convert::Infallible;
    type Future = Identified<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<axum::body::Body>) -> Self::Future {
        let id = match request.headers().get(&REQUEST_ID) {
            Some(id) if sane_id(id.as_bytes()) => id.clone(),
            _ => {
                let id = self.ids.id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        // The id displayed (a sane one holds nothing to escape); the path quoted and
        // escaped, since it may hold quotes, braces and any character above 0x7f.
        let (span, mut pending) = match self.fields {
            SpanFields::Eager => {
                let span = tracing::info_span!(
                    "request",
                    id = %id.to_str().unwrap_or_default(),
                    method = %request.method(),
                    path = request.uri().path(),
                );
                (span, None)
            }
            SpanFields::Spanless => {
                let pending = Pending {
                    id: id.clone(),
                    method: request.method().clone(),
                    uri: request.uri().clone(),
                    span: None,
                };
                // Boxed: it moves into the thread-local and back at every poll.
                (tracing::Span::none(), Some(Box::new(pending)))
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let _entered = span.enter();
            let _lent = Lent::new(&mut pending);
            tracing::debug!("started processing request");
        }
        Identified {
            inner: Some(self.inner.call(request)),
            span,
            pending,
            id: Some(id),
            start: std::time::Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way out of [`RequestIds`]: gets the id, and is logged. The
    /// inner future runs, and is dropped, inside the request span (as `Instrumented`
    /// does); a finished one is dropped while the span is entered for its last poll,
    /// so that dropping the response future does not enter the span again.
    pub(crate) struct Identified<F> {
        #[pin]
        inner: Option<F>,
        // The request's span (none for `SpanFields::Spanless`)...
        span: tracing::Span,
        // ... or what makes it at the first line (see `Spanless`).
        pending: Option<Box<Pending>>,
        id: Option<axum::http::HeaderValue>,
        start: std::time::Instant,
    }

    impl<F> PinnedDrop for Identified<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.inner.is_some() {
                let _entered = this.span.enter();
                let _lent = Lent::new(this.pending);
                this.inner.set(None);
            }
        }
    }
}

impl<F, B> std::future::Future for Identified<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<B>, std::convert::Infallible>>,
{
    type Output = F::Output;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        let lent = Lent::new(this.pending);
        let entered = this.span.enter();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("`Identified` polled after it finished");
        };
        let Ok(mut response) = std::task::ready!(inner.poll(cx));
        this.inner.set(None);
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        let status = response.status().as_u16();
        // The latency is worked out only for a line that is written.
        let latency_ms = || this.start.elapsed().as_secs_f64() * 1000.0;
        if response.status().is_server_error() {
            tracing::error!(status, latency_ms = latency_ms(), "response failed");
        } else {
            tracing::debug!(
                status,
                latency_ms = latency_ms(),
                "finished processing request"
            );
        }
        drop((entered, lent));
        std::task::Poll::Ready(Ok(response))
    }
}
/// Serves `metrics` at `http://addr/metrics` until the process ends.
///
/// # Errors
/// When `addr` cannot be bound.
pub(crate) async fn serve_metrics(addr: &str, metrics: &Metrics) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the metrics address: {e}"))?;
    tracing::info!("metrics on http://{local}/metrics");
    let app = metrics.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `work` under the subscriber `starfish serve` sets (in `format`, `ansi`,
    /// filtered by `directives`), on a runtime of its own; its output and the lines.
    fn logged<T>(
        format: LogFormat,
        ansi: bool,
        directives: &str,
        work: impl std::future::Future<Output = T>,
    ) -> (T, String) {
        let logs = Captured::default();
        let writer = logs.clone();
        let filter = tracing_subscriber::EnvFilter::try_new(directives).unwrap();
        let subscriber = dispatch(format, ansi, filter, move || writer.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = tracing::dispatcher::with_default(&subscriber, || runtime.block_on(work));
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    const BOTH: [SpanFields; 2] = [SpanFields::Eager, SpanFields::Spanless];

    fn app_with(fields: SpanFields) -> impl crate::serve::App {
        let router = axum::Router::new()
            .route(
                "/boom/{x}",
                axum::routing::get(|| async {
                    tracing::warn!("inside the handler");
                    StatusCode::INTERNAL_SERVER_ERROR
                }),
            )
            .route("/quiet", axum::routing::get(|| async { StatusCode::OK }));
        request_layers(router, fields)
    }

    async fn id_of(app: impl crate::serve::App, sent: Option<&str>) -> String {
        let mut request = Request::get("/boom/1");
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The lines of a few requests (fixed ids; a hostile path), in `format` and
    /// `ansi`, filtered by `directives`, without what differs from run to run (times).
    fn lines_of(
        format: LogFormat,
        ansi: bool,
        directives: &str,
        fields: SpanFields,
    ) -> Vec<String> {
        let requests = async {
            for (path, id) in [("/boom/1", "id-1"), ("/boom/a}\"b\u{85}c", "id-2")] {
                let request = Request::get(path)
                    .header("x-request-id", id)
                    .body(Body::empty())
                    .unwrap();
                let _ = app_with(fields).oneshot(request).await.unwrap();
            }
        };
        let ((), text) = logged(format, ansi, directives, requests);
        text.lines()
            .map(|line| match format {
                LogFormat::Json => {
                    let mut line: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(line).unwrap();
                    line.remove("timestamp");
                    line.remove("latency_ms");
                    serde_json::Value::Object(line).to_string()
                }
                LogFormat::Text => {
                    let line = line.split_once(' ').unwrap().1;
                    match line.find("latency_ms") {
                        Some(at) => line[..at].to_owned(),
                        None => line.to_owned(),
                    }
                }
            })
            .collect()
    }

    /// The lines of a request whose span is made at its first line read exactly as
    /// those of one whose span was made with it, in every format, at every level.
    #[test]
    fn spanless_lines_are_the_eager_ones() {
        for (format, ansi) in [
            (LogFormat::Text, false),
            (LogFormat::Text, true),
            (LogFormat::Json, false),
        ] {
            for directives in ["info", "debug", "warn"] {
                let eager = lines_of(format, ansi, directives, SpanFields::Eager);
                let spanless = lines_of(format, ansi, directives, SpanFields::Spanless);
                assert_eq!(spanless, eager, "{format:?} ansi={ansi} {directives}");
                // At `warn` the (info) request span is off, in both.
                let named = eager.iter().filter(|l| l.contains("id-2")).count();
                let spans = directives != "warn";
                assert!(named >= 2 || !spans, "{format:?} {directives}: {eager:#?}");
            }
        }
        // The debug lines name the request too.
        let debug = lines_of(LogFormat::Text, false, "debug", SpanFields::Spanless);
        assert!(
            debug
                .iter()
                .any(|l| l.contains("started processing request") && l.contains("id=id-1")),
            "{debug:#?}"
        );
    }

    /// Span directives select on the request's fields, and `debug` lets through
    /// spans that may be entered inside a request: requests then get their span
    /// when they come in (one made later would never match, or would be inside).
    #[test]
    fn span_directives_and_fine_levels_make_spans_eagerly() {
        let fields = |directives: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(directives).unwrap();
            let max =
                tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&filter);
            SpanFields::for_directives(directives, max)
        };
        for directives in ["info", "", "warn", "off", "warn,starfish=info"] {
            assert_eq!(fields(directives), SpanFields::Spanless, "{directives}");
        }
        for directives in [
            "[request{id=id-2}]=debug",
            "info,[{path}]=trace",
            "[request]=info",
            "debug",
            "warn,starfish_store=debug",
            "trace",
        ] {
            assert_eq!(fields(directives), SpanFields::Eager, "{directives}");
        }
    }

    /// A [`Pending`] told apart by its request id.
    fn pending(id: u64) -> Option<Box<Pending>> {
        Some(Box::new(Pending {
            id: axum::http::HeaderValue::from(id),
            method: axum::http::Method::GET,
            uri: axum::http::Uri::from_static("/x"),
            span: None,
        }))
    }

    fn span_of(pending: &Option<Box<Pending>>) -> Option<u64> {
        pending.as_ref()?.id.to_str().ok()?.parse().ok()
    }

    fn polled() -> Option<u64> {
        POLLED.with(|p| span_of(&p.borrow()))
    }

    /// Lending nests: an inner request's fields are lent over the outer's and the
    /// outer's restored; one with none to lend leaves the outer's where they are.
    #[test]
    fn lent_fields_nest() {
        let (mut outer, mut inner, mut none) = (pending(1), pending(2), None);
        {
            let _outer = Lent::new(&mut outer);
            assert_eq!(polled(), Some(1));
            {
                let _inner = Lent::new(&mut inner);
                assert_eq!(polled(), Some(2));
            }
            assert_eq!(polled(), Some(1));
            {
                let _none = Lent::new(&mut none);
                assert_eq!(polled(), Some(1));
            }
            assert_eq!(polled(), Some(1));
        }
        assert_eq!(polled(), None);
        assert_eq!(
            (span_of(&outer), span_of(&inner), span_of(&none)),
            (Some(1), Some(2), None)
        );
    }

    /// Logs when dropped.
    struct LogsOnDrop(&'static str);

    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::warn!("dropped {}", self.0);
        }
    }

    /// A response future that keeps a [`LogsOnDrop`] until it is itself dropped.
    struct Holding {
        _guard: LogsOnDrop,
        ready: bool,
    }

    impl std::future::Future for Holding {
        type Output = Result<axum::response::Response, std::convert::Infallible>;

        fn poll(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            if self.ready {
                std::task::Poll::Ready(Ok(axum::response::Response::new(Body::empty())))
            } else {
                std::task::Poll::Pending
            }
        }
    }

    /// A response future is dropped inside its request's span, whether it finished
    /// (dropped at its last poll) or not (dropped with the request, a client gone).
    #[test]
    fn a_response_future_is_dropped_inside_the_request_span() {
        for fields in BOTH {
            dropped_inside_the_request_span(fields);
        }
    }

    fn dropped_inside_the_request_span(fields: SpanFields) {
        let work = async {
            let app = |name: &'static str, ready: bool| {
                let inner = tower::service_fn(move |_: Request<Body>| Holding {
                    _guard: LogsOnDrop(name),
                    ready,
                });
                request_layers(inner, fields)
            };
            let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();
            let done = app("finished", true)
                .oneshot(request("/done"))
                .await
                .unwrap();
            assert!(done.headers().contains_key("x-request-id"));
            let mut waiting = std::pin::pin!(app("unfinished", false).oneshot(request("/wait")));
            let once = std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx)));
            assert!(once.await.is_pending());
        };
        let ((), text) = logged(LogFormat::Text, false, "info", work);
        let line = |what: &str| text.lines().find(|l| l.contains(what)).unwrap_or_default();
        for (what, path) in [
            ("dropped finished", "/done"),
            ("dropped unfinished", "/wait"),
        ] {
            let line = line(what);
            assert!(
                line.contains("request{id=") && line.contains(&format!("path=\"{path}\"")),
                "{fields:?} {what}: {text}"
            );
        }
    }

    /// The lines [`PlainFields`] writes are the default formatter's without colours.
    #[test]
    fn plain_fields_write_what_the_default_formatter_writes() {
        let emit = || {
            let span =
                tracing::info_span!("request", id = %"abc-1", method = %"GET", path = "/p/q");
            let _entered = span.enter();
            tracing::warn!(
                status = 500,
                text = "quote \" and\nline",
                r#type = "t",
                "it {} happened",
                1
            );
            tracing::info!(error = %std::io::Error::other("boom"), latency_ms = 1.5, ok = true);
            tracing::info!("just a message");
            // Strings written plainly, and those Debug escapes.
            tracing::info!(
                a = "/plain/path-1_~!$&'()*+,;=:@%20",
                b = "",
                c = "back\\slash",
                d = "tab\there",
                e = "del\u{7f}",
                f = "é",
                g = "\u{1}"
            );
            // Longer than the stack buffer.
            tracing::info!(long = %"x".repeat(300), "a long one, é");
            // A long value is formatted once, as by the default formatter.
            struct Once(std::cell::Cell<bool>);
            impl std::fmt::Display for Once {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    assert!(!self.0.replace(true), "formatted twice");
                    f.write_str(&"y".repeat(300))
                }
            }
            tracing::info!(once = %Once(std::cell::Cell::new(false)), "formatted once");
            #[derive(Debug)]
            struct Outer(std::io::Error);
            impl std::fmt::Display for Outer {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("outer \x1b[1m")
                }
            }
            impl std::error::Error for Outer {
                fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                    Some(&self.0)
                }
            }
            let nested = Outer(std::io::Error::other("inner"));
            tracing::error!(error = &nested as &dyn std::error::Error, "failed");
            tracing::warn!(
                "terminal \x1b[31mred\x07 \u{9b}c\u{7f} é {}",
                "\x1b]0;title"
            );
        };
        let lines = |plain: bool| {
            let logs = Captured::default();
            let writer = logs.clone();
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .without_time()
                .with_writer(move || writer.clone());
            if plain {
                tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), emit);
            } else {
                tracing::subscriber::with_default(builder.finish(), emit);
            }
            String::from_utf8(logs.0.lock().unwrap().clone()).unwrap()
        };
        let (plain, default) = (lines(true), lines(false));
        assert_eq!(plain.lines().count(), 8, "{plain}");
        assert!(!plain.contains('\x1b'), "{plain}");
        assert_eq!(plain, default);
    }

    /// Counts the `request` spans made and closed.
    #[derive(Clone, Default)]
    struct Counted(Arc<Mutex<(usize, usize)>>);

    impl<S> tracing_subscriber::Layer<S> for Counted
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().name() == "request" {
                self.0.lock().unwrap().0 += 1;
            }
        }

        fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
            if ctx.metadata(&id).is_some_and(|m| m.name() == "request") {
                self.0.lock().unwrap().1 += 1;
            }
        }
    }

    /// Without span directives, a request gets a span only when it writes a line,
    /// one however many it writes, and the span is closed with the request, whether
    /// it finished or was dropped (an eager request's span is counted alike).
    #[test]
    fn only_requests_that_write_a_line_get_a_span_and_it_is_closed() {
        use tracing_subscriber::layer::SubscriberExt as _;
        for (fields, made) in [(SpanFields::Spanless, 3), (SpanFields::Eager, 6)] {
            let counted = Counted::default();
            let logs = Captured::default();
            let writer = logs.clone();
            let subscriber = Spanless::new(
                tracing_subscriber::registry()
                    .with(tracing_subscriber::EnvFilter::new("info"))
                    .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()))
                    .with(counted.clone()),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let work = async {
                let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();
                for path in ["/quiet", "/boom/1", "/quiet", "/boom/2", "/quiet"] {
                    let _ = app_with(fields).oneshot(request(path)).await.unwrap();
                }
                // One that writes a line when dropped unfinished.
                let inner = tower::service_fn(|_: Request<Body>| Holding {
                    _guard: LogsOnDrop("unfinished"),
                    ready: false,
                });
                let mut waiting =
                    std::pin::pin!(request_layers(inner, fields).oneshot(request("/wait")));
                let once =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx)));
                assert!(once.await.is_pending());
            };
            tracing::subscriber::with_default(subscriber, || runtime.block_on(work));
            let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text.lines().count(), 5, "{text}");
            assert_eq!(
                *counted.0.lock().unwrap(),
                (made, made),
                "{fields:?}: {text}"
            );
        }
    }

    /// Two requests taking turns on one thread (each writes a line, waits, writes
    /// another): every line names its own request, in both modes.
    #[test]
    fn requests_taking_turns_on_a_thread_each_name_their_own_lines() {
        for fields in BOTH {
            let app = || {
                let router = axum::Router::new().route(
                    "/turns/{x}",
                    axum::routing::get(
                        |axum::extract::Path(x): axum::extract::Path<String>| async move {
                            tracing::warn!("before {x}");
                            tokio::task::yield_now().await;
                            tracing::warn!("after {x}");
                            StatusCode::OK
                        },
                    ),
                );
                request_layers(router, fields)
            };
            let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();
            let work = async {
                let (a, b) = tokio::join!(
                    app().oneshot(request("/turns/a")),
                    app().oneshot(request("/turns/b"))
                );
                assert_eq!(
                    (a.unwrap().status(), b.unwrap().status()),
                    (StatusCode::OK, StatusCode::OK)
                );
            };
            let ((), text) = logged(LogFormat::Text, false, "info", work);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 4, "{fields:?}: {text}");
            // They did take turns: a's second line after b's first.
            let at = |what: &str| lines.iter().position(|l| l.ends_with(what)).unwrap();
            assert!(at("before b") < at("after a"), "{fields:?}: {text}");
            for line in lines {
                let x = line.rsplit(' ').next().unwrap();
                assert!(
                    line.contains(&format!("path=\"/turns/{x}\"")),
                    "{fields:?}: {line}"
                );
            }
        }
    }

    /// A request whose line made its span, dropped under another subscriber, closes
    /// the span through the subscriber that made it (the other has no such span).
    #[test]
    fn a_span_is_closed_by_the_subscriber_that_made_it() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let counted = Counted::default();
        let maker = tracing::Dispatch::new(Spanless::new(
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(counted.clone()),
        ));
        let inner = tower::service_fn(|_: Request<Body>| async {
            tracing::warn!("a line inside");
            std::future::pending::<Result<axum::response::Response, std::convert::Infallible>>()
                .await
        });
        let request = Request::get("/wait").body(Body::empty()).unwrap();
        let mut service = request_layers(inner, SpanFields::Spanless);
        let mut waiting = Box::pin(tower::Service::call(&mut service, request));
        tracing::dispatcher::with_default(&maker, || {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
        });
        assert_eq!(*counted.0.lock().unwrap(), (1, 0), "made at the line");
        let other = tracing::Dispatch::new(tracing_subscriber::registry());
        tracing::dispatcher::with_default(&other, || drop(waiting));
        assert_eq!(*counted.0.lock().unwrap(), (1, 1), "closed by its maker");
    }

    /// Every log line of a request names its id, method and path; a sane client id is
    /// kept, anything else replaced by a fresh one; a `5xx` is logged.
    #[test]
    fn log_lines_of_a_request_name_it() {
        for fields in BOTH {
            lines_name_the_request(fields);
        }
    }

    fn lines_name_the_request(fields: SpanFields) {
        let app = || app_with(fields);
        let work = async {
            let fresh = [id_of(app(), None).await, id_of(app(), None).await];
            let kept = id_of(app(), Some("trace-me-42")).await;
            let uuid = id_of(app(), Some("3f2b8c1e-7a4d-4e2b-9c1d-0a1b2c3d4e5f")).await;
            let spoof = id_of(app(), Some("x path=/evil")).await;
            let long = id_of(app(), Some(&"a".repeat(65))).await;
            // A path with a quote, a brace and a C1 control character.
            let hostile = Request::get("/boom/a}\"b\u{85}c")
                .body(Body::empty())
                .unwrap();
            let _ = app().oneshot(hostile).await.unwrap();
            (fresh, kept, uuid, spoof, long)
        };
        let (ids, text) = logged(LogFormat::Text, false, "info", work);
        let (fresh, kept, uuid, spoof, long) = ids;
        let hex = |id: &str| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(
            hex(&fresh[0]) && hex(&fresh[1]) && fresh[0] != fresh[1],
            "{fresh:?}"
        );
        assert_eq!(kept, "trace-me-42");
        assert_eq!(uuid, "3f2b8c1e-7a4d-4e2b-9c1d-0a1b2c3d4e5f");
        assert!(hex(&spoof), "{spoof}");
        assert!(hex(&long), "{long}");

        let lines: Vec<&str> = text.lines().collect();
        let named = |id: &str, what: &str| {
            lines.iter().any(|l| {
                l.contains(what)
                    && l.contains(&format!("id={id}"))
                    && l.contains("method=GET")
                    && l.contains("path=\"/boom/1\"")
            })
        };
        for id in [&fresh[0], &fresh[1], &kept, &uuid, &spoof, &long] {
            assert!(named(id, "inside the handler"), "{id} in {text}");
            assert!(named(id, "response failed"), "{id} in {text}");
        }
        assert!(!text.contains("evil"), "{text}");
        assert!(
            text.contains(r#"path="/boom/a}\"b\u{85}c""#) && !text.contains('\u{85}'),
            "{text}"
        );
        assert!(lines.iter().any(|l| l.contains("status=500")), "{text}");
    }
}
