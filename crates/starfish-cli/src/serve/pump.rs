//! The writing of an open stream's body, once its head is out: [`Pump`], a future
//! written by hand rather than an `async fn`. It lives as long as the stream, one
//! per subscriber, so its size is most of what a subscriber costs: about 300 bytes,
//! where the `async fn` it replaced (a `select!` over the body, the client's end
//! and a stall timer, and a write future with its own) held 1,120.

use axum::body::Bytes;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body, and no header saying so (`1xx`, `204`, `304`).
    Empty,
    /// `content-length` (known in advance).
    Length(u64),
    /// `transfer-encoding: chunked` (HTTP/1.1, length unknown).
    Chunked,
    /// Until the connection closes (HTTP/1.0, length unknown).
    Close,
}

pin_project_lite::pin_project! {
    /// Writes `body` framed as `framing` until it ends (true: close cleanly), fails,
    /// stalls, or the client goes or speaks (false: drop). At shutdown the router's
    /// live bus ends every stream's body, and so this.
    ///
    /// Each piece of the body goes out in one vectored write (its chunk size line,
    /// the bytes, the chunk's end), from where the last write stopped. What it waits
    /// on is set up once for the stream: one timer for stalls, re-armed only when it
    /// fires (every write that moves bytes notes when), and the socket's read
    /// readiness for the client's end of the connection.
    pub(super) struct Pump<'s, B> {
        stream: &'s mut TcpStream,
        body: B,
        framing: Framing,
        // Bytes the head announced and not yet written (for `Framing::Length`).
        left: u64,
        // The piece being written.
        out: Option<Piece>,
        // The body ended: done once `out` is.
        ended: bool,
        #[pin]
        stall: Stall,
    }
}

impl<'s, B: hyper::body::Body<Data = Bytes> + Unpin> Pump<'s, B> {
    /// The rest of `body` after `sent` bytes went with the head; `ended`: the body
    /// ended already (with the head).
    pub(super) fn new(
        stream: &'s mut TcpStream,
        body: B,
        framing: Framing,
        (sent, ended): (u64, bool),
        stall_limit: std::time::Duration,
    ) -> Self {
        let left = match framing {
            Framing::Length(n) => n.saturating_sub(sent),
            _ => 0,
        };
        let mut pump = Self {
            stream,
            body,
            framing,
            left,
            out: None,
            ended: false,
            // As on hyper's connections: a response that moves no byte for this
            // long is cut off (a stream's keep-alive comments move some every 20 s).
            stall: Stall::new(stall_limit),
        };
        if ended {
            pump.ended = true;
            pump.out = Piece::last(framing);
        }
        pump
    }
}

impl<B: hyper::body::Body<Data = Bytes> + Unpin> Future for Pump<'_, B> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut this = self.project();
        if *this.framing == Framing::Empty {
            return Poll::Ready(true);
        }
        loop {
            // A piece under way: nothing else until it is out, unless it stalls.
            if let Some(piece) = this.out.as_mut() {
                let before = piece.written;
                let written = piece.poll_write(this.stream, cx);
                // Bytes that moved, a whole piece or part of one, hold the stall off.
                if piece.written > before {
                    this.stall.as_mut().moved();
                }
                match written {
                    Poll::Ready(Ok(())) => *this.out = None,
                    Poll::Ready(Err(())) => return Poll::Ready(false),
                    Poll::Pending => {
                        ready!(this.stall.poll_stalled(cx));
                        return Poll::Ready(false);
                    }
                }
            }
            if *this.ended {
                return Poll::Ready(match *this.framing {
                    // Fewer than announced: the client must not take it for the whole.
                    Framing::Length(_) => *this.left == 0,
                    _ => true,
                });
            }
            // The body first, then the client, then the timer.
            if let Poll::Ready(next) = Pin::new(&mut *this.body).poll_frame(cx) {
                match next {
                    None => {
                        *this.ended = true;
                        *this.out = Piece::last(*this.framing);
                    }
                    Some(Err(_)) => return Poll::Ready(false),
                    Some(Ok(frame)) => {
                        // Trailers and empty pieces are skipped.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if let Framing::Length(_) = this.framing {
                            // More than announced: the answer is broken, the connection too.
                            let Some(rest) = this.left.checked_sub(data.len() as u64) else {
                                return Poll::Ready(false);
                            };
                            *this.left = rest;
                        }
                        if !data.is_empty() {
                            *this.out = Some(Piece::of(data, *this.framing));
                        }
                    }
                }
                continue;
            }
            // The client closed, or sent bytes a stream never answers.
            match this.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    match this.stream.try_read(&mut probe) {
                        // Not ready after all (its readiness is cleared): wait again.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        _ => return Poll::Ready(false),
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            ready!(this.stall.poll_stalled(cx));
            return Poll::Ready(false);
        }
    }
}

/// A piece of the body on its way out: its chunk size line (when chunked), its
/// bytes, its chunk end, and how many of all of them are written.
pub(super) struct Piece {
    size: [u8; 18],
    /// Where the size line starts in `size` (18: none).
    size_at: u8,
    data: Bytes,
    /// The chunk's end, `\r\n` (or the last chunk's) when chunked.
    tail: &'static [u8],
    written: usize,
}

impl Piece {
    /// `data` as a piece of the body framed as `framing` (a chunk when chunked).
    pub(super) fn of(data: Bytes, framing: Framing) -> Self {
        let mut size = [0u8; 18];
        let (size_at, tail) = if framing == Framing::Chunked {
            let at = 18 - chunk_size(data.len(), &mut size).len();
            (at as u8, &b"\r\n"[..])
        } else {
            (18, &b""[..])
        };
        Self {
            size,
            size_at,
            data,
            tail,
            written: 0,
        }
    }

    /// What ends a body framed as `framing`: the last chunk, when chunked.
    fn last(framing: Framing) -> Option<Self> {
        (framing == Framing::Chunked).then(|| Self {
            size: [0; 18],
            size_at: 18,
            data: Bytes::new(),
            tail: b"0\r\n\r\n",
            written: 0,
        })
    }

    /// The whole piece on the wire, in three slices (some of them empty).
    pub(super) fn slices(&self) -> [IoSlice<'_>; 3] {
        [
            IoSlice::new(&self.size[usize::from(self.size_at)..]),
            IoSlice::new(&self.data),
            IoSlice::new(self.tail),
        ]
    }

    /// Writes what is left of it, in one vectored write at a time.
    fn poll_write(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        loop {
            let all = self.slices();
            let total: usize = all.iter().map(|s| s.len()).sum();
            if self.written == total {
                return Poll::Ready(Ok(()));
            }
            let mut slices = all;
            let mut left: &mut [IoSlice<'_>] = &mut slices;
            IoSlice::advance_slices(&mut left, self.written);
            match ready!(Pin::new(&mut *stream).poll_write_vectored(cx, left)) {
                Ok(n) if n > 0 => self.written += n,
                _ => return Poll::Ready(Err(())),
            }
        }
    }
}

/// `n` in hex and CRLF, a chunk's first line, written at the end of `buf` (no
/// allocation: this runs once per frame per subscriber).
fn chunk_size(n: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 16;
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[at..]
}

pin_project_lite::pin_project! {
    /// A stream's stall timer: armed once, and when it fires, armed again for the
    /// time bytes last moved plus the limit, unless that has passed.
    struct Stall {
        #[pin]
        timer: tokio::time::Sleep,
        moved: Instant,
        limit: std::time::Duration,
    }
}

impl Stall {
    fn new(limit: std::time::Duration) -> Self {
        Self {
            timer: tokio::time::sleep(limit),
            moved: Instant::now(),
            limit,
        }
    }

    /// Bytes moved now.
    fn moved(self: Pin<&mut Self>) {
        *self.project().moved = Instant::now();
    }

    /// Ready once nothing moved for the limit; when the timer fires earlier than
    /// that, it is armed again for then.
    fn poll_stalled(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let due = *this.moved + *this.limit;
            if Instant::now() >= due {
                return Poll::Ready(());
            }
            this.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A body of `frames`, then its end, a failure, or nothing ever again.
    struct Frames {
        frames: std::collections::VecDeque<Frame<Bytes>>,
        then: Then,
    }

    #[derive(Clone, Copy)]
    enum Then {
        End,
        Fail,
        Wait,
    }

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match (self.frames.pop_front(), self.then) {
                (Some(frame), _) => Poll::Ready(Some(Ok(frame))),
                (None, Then::End) => Poll::Ready(None),
                (None, Then::Fail) => Poll::Ready(Some(Err(std::io::Error::other("failed")))),
                (None, Then::Wait) => Poll::Pending,
            }
        }
    }

    fn body(pieces: &[&str], then: Then) -> Frames {
        let mut frames: std::collections::VecDeque<_> = pieces
            .iter()
            .map(|p| Frame::data(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        // Trailers, skipped.
        frames.push_back(Frame::trailers(axum::http::HeaderMap::new()));
        Frames { frames, then }
    }

    /// A connected pair: ours, the client's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    /// What the pump says and what the client read, the pump's end closing ours.
    async fn pumped(body: Frames, framing: Framing, sent: u64) -> (bool, Vec<u8>) {
        let (mut ours, mut client) = pair().await;
        let reading = tokio::spawn(async move {
            let mut read = Vec::new();
            let _ = client.read_to_end(&mut read).await;
            read
        });
        let clean = Pump::new(
            &mut ours,
            body,
            framing,
            (sent, false),
            Duration::from_secs(5),
        )
        .await;
        drop(ours);
        (clean, reading.await.unwrap())
    }

    /// Each framing writes what it should and says whether the answer is whole:
    /// chunks and the last chunk, bytes as they are, a length met, short or passed.
    #[tokio::test]
    async fn each_framing_writes_its_pieces_and_judges_the_end() {
        let cases: [(&[&str], Framing, u64, bool, &str); 7] = [
            (
                &["a", "", "bcd"],
                Framing::Chunked,
                0,
                true,
                "1\r\na\r\n3\r\nbcd\r\n0\r\n\r\n",
            ),
            (&[], Framing::Chunked, 0, true, "0\r\n\r\n"),
            (&["ab", "c"], Framing::Close, 0, true, "abc"),
            (&["ab", "c"], Framing::Length(3), 0, true, "abc"),
            (&["c"], Framing::Length(3), 2, true, "c"),
            (&["ab"], Framing::Length(3), 0, false, "ab"),
            (&["ab", "cd"], Framing::Length(3), 0, false, "ab"),
        ];
        for (pieces, framing, sent, whole, wire) in cases {
            let (clean, read) = pumped(body(pieces, Then::End), framing, sent).await;
            assert_eq!(
                (clean, String::from_utf8(read).unwrap().as_str()),
                (whole, wire),
                "{pieces:?} {framing:?}"
            );
        }
        let (clean, read) = pumped(body(&["a"], Then::Fail), Framing::Chunked, 0).await;
        assert_eq!(
            (clean, read),
            (false, b"1\r\na\r\n".to_vec()),
            "a failed body is no whole answer"
        );
    }

    /// A body that ended with the head: the last chunk alone, or the length judged.
    #[tokio::test]
    async fn a_body_that_ended_with_the_head_is_finished_at_once() {
        for (framing, sent, whole, wire) in [
            (Framing::Chunked, 5, true, "0\r\n\r\n"),
            (Framing::Length(5), 5, true, ""),
            (Framing::Length(5), 3, false, ""),
            (Framing::Close, 5, true, ""),
        ] {
            let (mut ours, mut client) = pair().await;
            let reading = tokio::spawn(async move {
                let mut read = Vec::new();
                let _ = client.read_to_end(&mut read).await;
                read
            });
            let limit = Duration::from_secs(5);
            let pump = Pump::new(
                &mut ours,
                body(&[], Then::Wait),
                framing,
                (sent, true),
                limit,
            );
            assert_eq!(pump.await, whole, "{framing:?} {sent}");
            drop(ours);
            assert_eq!(reading.await.unwrap(), wire.as_bytes(), "{framing:?}");
        }
    }

    /// A client reading a large piece slowly but steadily is not cut off, however
    /// long the piece takes, as long as bytes keep moving within the stall limit.
    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut_off() {
        let big = "z".repeat(8 * 1024 * 1024);
        let (mut ours, mut client) = pair().await;
        let reading = tokio::spawn(async move {
            let mut read = 0;
            let mut buf = [0u8; 256 * 1024];
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return read,
                    Ok(n) => read += n,
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        // A limit shorter than the whole piece takes (about 1.3 s at this pace).
        let limit = Duration::from_millis(400);
        let started = Instant::now();
        let pump = Pump::new(
            &mut ours,
            body(&[&big], Then::End),
            Framing::Close,
            (0, false),
            limit,
        );
        assert!(pump.await, "cut off after {:?}", started.elapsed());
        assert!(started.elapsed() > limit);
        drop(ours);
        assert_eq!(reading.await.unwrap(), big.len());
    }

    /// A piece larger than the socket takes at once goes out whole, in order, to a
    /// client that reads slowly (the pump resumes each write where it stopped).
    #[tokio::test]
    async fn a_large_piece_goes_out_whole_to_a_slow_reader() {
        let big: String = (0..4 * 1024 * 1024)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let (mut ours, mut client) = pair().await;
        let reading = tokio::spawn(async move {
            let mut read = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return read,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        });
        let pieces = [big.as_str(), "tail"];
        let limit = Duration::from_secs(30);
        assert!(
            Pump::new(
                &mut ours,
                body(&pieces, Then::End),
                Framing::Close,
                (0, false),
                limit
            )
            .await
        );
        drop(ours);
        let read = reading.await.unwrap();
        assert_eq!(read.len(), big.len() + 4);
        assert!(read.starts_with(big.as_bytes()) && read.ends_with(b"tail"));
    }

    /// A stream that waits for changes ends when its client closes, or sends bytes
    /// (which a stream never answers), or stops reading for the stall limit.
    #[tokio::test]
    async fn a_waiting_stream_ends_with_its_client_or_a_stall() {
        for client_does in ["closes", "speaks"] {
            let (mut ours, mut client) = pair().await;
            let pump = Pump::new(
                &mut ours,
                body(&["x"], Then::Wait),
                Framing::Chunked,
                (0, false),
                Duration::from_secs(30),
            );
            let acting = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match client_does {
                    "closes" => drop(client),
                    _ => client.write_all(b"hello").await.unwrap(),
                }
            };
            let (clean, ()) =
                tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(pump, acting) })
                    .await
                    .expect("the stream ends");
            assert!(!clean, "{client_does}");
        }
        // A client that never reads: the writes stall, and the stream is cut off.
        let (mut ours, _client) = pair().await;
        let big = "y".repeat(64 * 1024 * 1024);
        let started = Instant::now();
        let stalled = Pump::new(
            &mut ours,
            body(&[&big], Then::Wait),
            Framing::Chunked,
            (0, false),
            Duration::from_millis(300),
        );
        let clean = tokio::time::timeout(Duration::from_secs(10), stalled)
            .await
            .expect("cut off");
        assert!(!clean);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0u8; 18];
        for n in [0usize, 1, 15, 16, 255, 4096, 0xdead_beef, usize::MAX] {
            assert_eq!(chunk_size(n, &mut buf), format!("{n:x}\r\n").as_bytes());
        }
    }

    /// What a subscriber's writing holds for its whole life stays small: the pump
    /// under 400 bytes (the `async fn` it replaced held 1,120).
    #[tokio::test]
    async fn a_pump_is_small() {
        let (mut ours, _client) = pair().await;
        let body = axum::body::Body::empty();
        let limit = Duration::from_secs(1);
        let pump = Pump::new(&mut ours, body, Framing::Chunked, (0, false), limit);
        assert!(
            std::mem::size_of_val(&pump) < 400,
            "{}",
            std::mem::size_of_val(&pump)
        );
    }
}
