//! The proxy's own HTTP/1.1 client: the request head is written straight onto the upstream
//! socket (its body, if any, after it: [`Outgoing`]), the answer's head parsed with
//! `httparse` into the response handed to the public connection, and the answer's body read
//! off the socket by that body itself ([`UpBody`]), so it is all done in the public
//! connection's own task.
//!
//! Why not hyper's client: its connection runs a second dispatcher, with channels for the
//! request and for every body between it and the caller, and that machinery was about a
//! third of the proxy's instructions per small request (callgrind, bench/NOTES.md).
//! Upgrades (WebSocket) still go through hyper's client (`super::Upstream`).
//!
//! Everything the upstream sends is bounded: the head (at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] headers), each chunk-size line and the trailers. A connection is kept
//! for the next request only when its answer ended exactly where its framing said.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head accepted (hyper's client default is about 400 KiB; a dev server's
/// heads are a few hundred bytes).
pub const MAX_HEAD: usize = 64 << 10;
/// Most response headers accepted (hyper's default).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) and most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4 << 10;
const MAX_TRAILERS: usize = 16 << 10;
/// First read size; doubled after every read that filled it, up to [`MAX_READ`].
const MIN_READ: usize = 8 << 10;
const MAX_READ: usize = 256 << 10;

/// One upstream connection.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    next_read: usize,
    /// Which `super::Upstream` it goes to.
    pub upstream: u64,
    /// `super::POOL_GENERATION` when it was made.
    pub generation: u64,
    /// When its last answer ended (or when it was made).
    pub last_used: Instant,
    /// Whether it has carried an answer before (only then can a close be a keep-alive race).
    pub reused: bool,
}

/// Why a request failed.
pub enum Error {
    /// The connection was closed or reset before any byte of an answer.
    Closed(String),
    /// Anything else (a bad answer, a close in the middle of one).
    Other(String),
}

impl Conn {
    /// A fresh connection on `tcp`.
    pub fn new(io: TcpStream, upstream: u64, generation: u64) -> Self {
        Conn { io, buf: BytesMut::new(), next_read: MIN_READ, upstream, generation, last_used: Instant::now(), reused: false }
    }

    /// Whether the idle connection is still open: nothing arrived on it (no close, no stray
    /// bytes). Costs no system call unless the socket became readable.
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.still_open(&mut cx)
    }

    /// [`Conn::is_open`], registering `cx` to be woken when the upstream closes it.
    pub fn still_open(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return true,
                Poll::Ready(Err(_)) => return false,
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    match self.io.try_read(&mut probe) {
                        // Readiness was stale (and is now cleared): ask again, which registers `cx`.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        // A close, an error, or bytes nobody asked for: not usable.
                        _ => return false,
                    }
                }
            }
        }
    }

    /// Reads more of the answer into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.next_read / 2 {
            self.buf.reserve(self.next_read);
        }
        let room = self.buf.capacity() - self.buf.len();
        // tokio's `poll_read` (not `try_read`): a read that leaves room in the buffer clears
        // the socket's readiness, so `still_open` costs no system call afterwards.
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n == room && self.next_read < MAX_READ {
            self.next_read *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Sends `head` (a complete request head) and `body` (framed as the head says), and
    /// reads the answer's head. The body is written while the answer is awaited, and after
    /// the answer's head has come, while its body is read ([`UpBody`]); the connection is
    /// kept only if the request body was all written before the answer ended.
    /// `head_request`: the request is a `HEAD` (its answer has no body whatever it says).
    pub async fn send(mut self, head: &[u8], body: Option<Outgoing>, head_request: bool) -> Result<(axum::http::response::Parts, UpBody), Error> {
        if let Err(e) = self.io.write_all(head).await {
            return Err(if closed(&e) { Error::Closed(e.to_string()) } else { Error::Other(e.to_string()) });
        }
        let mut out = body;
        let mut write_failed: Option<io::Error> = None;
        let mut got_bytes = false;
        let (parts, keep_alive) = std::future::poll_fn(|cx| {
            match Outgoing::push(&mut out, cx, &mut self.io) {
                // Written no further; the answer may still be there to read.
                Some(OutError::Write(e)) => write_failed = Some(e),
                Some(OutError::Body(e)) => return Poll::Ready(Err(Error::Other(format!("request body: {e}")))),
                None => {}
            }
            loop {
                if !self.buf.is_empty() {
                    got_bytes = true;
                    match parse_head(&mut self.buf) {
                        Ok(Some(Head::Informational)) => continue,
                        Ok(Some(Head::Final(parts, keep_alive))) => return Poll::Ready(Ok((parts, keep_alive))),
                        Ok(None) if self.buf.len() > MAX_HEAD => return Poll::Ready(Err(Error::Other(format!("response head over {MAX_HEAD} bytes")))),
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                let why = match ready!(self.poll_fill(cx)) {
                    Ok(0) if got_bytes => Error::Other("upstream closed the connection in the middle of a response head".into()),
                    Ok(0) => Error::Closed("upstream closed the connection before answering".into()),
                    Ok(_) => continue,
                    Err(e) if !got_bytes && closed(&e) => Error::Closed(e.to_string()),
                    Err(e) => Error::Other(e.to_string()),
                };
                return Poll::Ready(Err(match (&write_failed, why) {
                    (Some(w), Error::Closed(_)) => Error::Other(format!("sending the request body: {w}")),
                    (_, why) => why,
                }));
            }
        })
        .await?;
        let framing = framing(&parts.headers, parts.status, head_request)?;
        let keep_alive = keep_alive && write_failed.is_none() && !matches!(framing, Framing::Close);
        // The rest of the request body (an upstream may answer first, then read on: a
        // streaming echo, a proxy) is written while the answer's body is read.
        Ok((parts, UpBody { conn: Some(self), out, framing, keep_alive, home: None }))
    }
}

/// Whether `e` is the peer closing or resetting the connection.
fn closed(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | BrokenPipe | UnexpectedEof | ConnectionAborted)
}

/// A request body on its way upstream, as raw bytes (the head has its `Content-Length`) or chunked.
pub struct Outgoing {
    body: axum::body::Body,
    chunked: bool,
    /// Bytes taken from the body and not yet written (a chunk's size line, its data, its CRLF).
    pieces: std::collections::VecDeque<Bytes>,
    /// The body has no more frames (and the last chunk is queued).
    ended: bool,
}

/// Why a request body stopped.
enum OutError {
    /// Writing to the upstream failed.
    Write(io::Error),
    /// Reading the body from the client failed.
    Body(axum::Error),
}

impl Outgoing {
    /// `body`, chunked or not (as its head says).
    pub fn new(body: axum::body::Body, chunked: bool) -> Self {
        Outgoing { body, chunked, pieces: Default::default(), ended: false }
    }

    /// Writes what of `out` can be written now; `out` becomes `None` once it is all
    /// written or has failed (the failure is returned).
    fn push(out: &mut Option<Self>, cx: &mut Context<'_>, io: &mut TcpStream) -> Option<OutError> {
        let result = match out.as_mut()?.poll_write(cx, io) {
            Poll::Pending => return None,
            Poll::Ready(r) => r.err(),
        };
        *out = None;
        result
    }

    /// Writes what can be written now; ready once the whole body is written.
    fn poll_write(&mut self, cx: &mut Context<'_>, io: &mut TcpStream) -> Poll<Result<(), OutError>> {
        use hyper::body::Body as _;
        loop {
            while let Some(front) = self.pieces.front_mut() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, front)).map_err(OutError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(OutError::Write(io::ErrorKind::WriteZero.into())));
                }
                front.advance(n);
                if front.is_empty() {
                    self.pieces.pop_front();
                }
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not forwarded (hyper's client did not either).
                    if let Some(data) = frame.into_data().ok().filter(|d| !d.is_empty()) {
                        if self.chunked {
                            self.pieces.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                            self.pieces.push_back(data);
                            self.pieces.push_back(Bytes::from_static(b"\r\n"));
                        } else {
                            self.pieces.push_back(data);
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(OutError::Body(e))),
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.pieces.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                }
            }
        }
    }
}

/// A request head for `parts` (origin-form URI, headers as they are: the caller has
/// already rewritten them).
pub fn encode_head(parts: &axum::http::request::Parts) -> Vec<u8> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let size = parts.method.as_str().len() + pq.len() + 12 + parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in &parts.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A parsed response head.
enum Head {
    /// A `1xx` other than `101`: skipped (hyper's client does the same).
    Informational,
    /// The answer's status and headers, and whether the connection may carry another request.
    Final(axum::http::response::Parts, bool),
}

/// Parses a response head at the start of `buf` and removes it from `buf`; `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(Error::Other(format!("response head over {MAX_HEAD} bytes"))),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Other(format!("bad response head from upstream: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Other(format!("bad status {code} from upstream")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::Other("upstream switched protocols without being asked".into()));
    }
    if status.is_informational() {
        buf.advance(len);
        return Ok(Some(Head::Informational));
    }
    // Header values are slices of the head's bytes (no copy); names are parsed once.
    let base = buf.as_ptr() as usize;
    let mut found: Vec<(HeaderName, std::ops::Range<usize>)> = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Error::Other(format!("bad header name {:?} from upstream", h.name)))?;
        let start = h.value.as_ptr() as usize - base;
        found.push((name, start..start + h.value.len()));
    }
    let http11 = resp.version == Some(1);
    let head: Bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(found.len());
    for (name, range) in found {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| Error::Other(format!("bad value of header {name} from upstream")))?;
        headers.append(name, value);
    }
    let says = |token| headers.get_all(header::CONNECTION).iter().any(|v| has_token(v, token));
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when told to.
    let mut keep_alive = !says("close") && (http11 || says("keep-alive"));
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 §6.1 and §6.3: Transfer-Encoding overrides a Content-Length, which a
        // forwarder must remove, and either conflict, or one in an HTTP/1.0 answer, makes the
        // framing suspect: the connection is closed after this answer.
        if headers.remove(header::CONTENT_LENGTH).is_some() || !http11 {
            keep_alive = false;
        }
    }
    let mut parts = axum::http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = headers;
    Ok(Some(Head::Final(parts, keep_alive)))
}

/// Whether the comma-separated header value `v` lists `token` (any case).
fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// How an answer's body is delimited (RFC 9112 §6.3).
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    /// Nothing is left.
    Done,
}

/// Where a chunked body is.
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// In the trailers, this many bytes of them seen.
    Trailers(usize),
}

/// The framing of an answer with `status` and `headers` to a request (`HEAD` or not).
fn framing(headers: &HeaderMap, status: StatusCode, head_request: bool) -> Result<Framing, Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if te.peek().is_some() {
        // Chunked only when it is the last coding; any other coding runs to the close.
        let last = te.last().and_then(|v| v.to_str().ok()).and_then(|s| s.rsplit(',').next()).map(str::trim);
        return Ok(if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) { Framing::Chunked(Chunk::Size) } else { Framing::Close });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| bad_length())?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_length());
            }
            let n: u64 = part.parse().map_err(|_| bad_length())?;
            if length.is_some_and(|l| l != n) {
                return Err(bad_length());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

fn bad_length() -> Error {
    Error::Other("bad Content-Length from upstream".into())
}

/// An answer's body, read off its connection as it is polled; once it has ended exactly
/// where its framing said, the connection goes back to its public connection's slot.
pub struct UpBody {
    conn: Option<Conn>,
    /// The part of the request body still to write.
    out: Option<Outgoing>,
    framing: Framing,
    keep_alive: bool,
    home: Option<super::OwnUpstream>,
}

impl UpBody {
    /// Sets where the connection goes back to after this body (else it is closed).
    pub fn home(&mut self, home: super::OwnUpstream) {
        self.home = Some(home);
        self.finish_if_done();
    }

    /// Hands the connection back (or closes it) once nothing is left to read.
    fn finish_if_done(&mut self) {
        if !matches!(self.framing, Framing::Done) {
            return;
        }
        let Some(mut conn) = self.conn.take() else { return };
        if self.keep_alive && self.out.is_none() && conn.buf.is_empty() {
            if let Some(home) = &self.home {
                conn.buf = BytesMut::new(); // an idle connection holds no buffer
                conn.next_read = MIN_READ;
                conn.last_used = Instant::now();
                conn.reused = true;
                home.put(conn);
            }
        }
    }

    fn fail(&mut self, why: impl Into<String>) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.out = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(io::Error::other(why.into()))))
    }

    /// The position of the first CRLF in the buffer.
    fn line_end(buf: &BytesMut) -> Option<usize> {
        buf.windows(2).position(|w| w == b"\r\n")
    }
}

/// Parses a chunk-size line without its CRLF (`1a;ext=1`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    if digits == 0 || digits > 15 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

impl hyper::body::Body for UpBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // The upstream stopped reading, or the client's body broke off: written no
            // further, and the connection is not kept.
            if Outgoing::push(&mut this.out, cx, &mut conn.io).is_some() {
                this.keep_alive = false;
            }
            // What the buffer holds: a data frame, a framing step, or a need for more bytes.
            match &mut this.framing {
                Framing::Done => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64) as usize;
                    *left -= n as u64;
                    let data = conn.buf.split_to(n).freeze();
                    if *left == 0 {
                        this.framing = Framing::Done;
                        this.finish_if_done();
                    }
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
                }
                Framing::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
                }
                Framing::Chunked(Chunk::Data(left)) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        this.framing = Framing::Chunked(Chunk::DataEnd);
                    }
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(conn.buf.split_to(n).freeze()))));
                }
                Framing::Chunked(Chunk::DataEnd) if conn.buf.len() >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        return this.fail("bad chunked body from upstream: no CRLF after a chunk");
                    }
                    conn.buf.advance(2);
                    this.framing = Framing::Chunked(Chunk::Size);
                    continue;
                }
                Framing::Chunked(Chunk::Size) => {
                    if let Some(end) = UpBody::line_end(&conn.buf) {
                        let Some(size) = chunk_size(&conn.buf[..end]) else {
                            return this.fail("bad chunk size from upstream");
                        };
                        conn.buf.advance(end + 2);
                        this.framing = Framing::Chunked(if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) });
                        continue;
                    }
                    if conn.buf.len() > MAX_CHUNK_LINE {
                        return this.fail("chunk-size line from upstream too long");
                    }
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    if let Some(end) = UpBody::line_end(&conn.buf) {
                        // Trailers are not forwarded (hyper's client dropped them too).
                        conn.buf.advance(end + 2);
                        if end == 0 {
                            this.framing = Framing::Done;
                        } else if *seen + end > MAX_TRAILERS {
                            return this.fail("trailers from upstream too long");
                        } else {
                            *seen += end + 2;
                        }
                        continue;
                    }
                    if conn.buf.len() > MAX_CHUNK_LINE {
                        return this.fail("trailer line from upstream too long");
                    }
                }
                _ => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::Close) => {
                    this.keep_alive = false;
                    this.framing = Framing::Done;
                    this.conn = None;
                    this.out = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("upstream closed the connection in the middle of a body"),
                Ok(_) => {}
                Err(e) => return this.fail(e.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.framing {
            Framing::Length(n) => hyper::body::SizeHint::with_exact(n),
            Framing::Done => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An upstream at the returned address that reads one request, writes `raw`, keeps the
    /// connection for `hold` (reading nothing more), then closes it.
    pub(in crate::proxy) async fn one_answer(raw: &'static [u8], hold: std::time::Duration) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.read(&mut [0u8; 4096]).await;
            s.write_all(raw).await.unwrap();
            tokio::time::sleep(hold).await;
        });
        addr
    }

    fn parse(raw: &str) -> Result<Option<Head>, Error> {
        parse_head(&mut BytesMut::from(raw))
    }

    #[test]
    fn heads_parse_into_status_headers_and_keep_alive() {
        let Ok(Some(Head::Final(p, keep))) = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc") else { panic!("parsed") };
        assert_eq!(p.status, 200);
        assert!(keep);
        assert_eq!(p.headers.get_all("x-a").iter().count(), 2);
        let Ok(Some(Head::Final(_, keep))) = parse("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n") else { panic!() };
        assert!(!keep, "Connection: close");
        let Ok(Some(Head::Final(_, keep))) = parse("HTTP/1.0 200 OK\r\n\r\n") else { panic!() };
        assert!(!keep, "HTTP/1.0 without keep-alive");
        assert!(matches!(parse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"), Ok(Some(Head::Informational))));
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None)), "incomplete");
        assert!(parse("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n").is_err());
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS + 1));
        assert!(parse(&many).is_err(), "too many headers");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            m
        };
        let ok = StatusCode::OK;
        assert!(matches!(framing(&h(&[("content-length", "5")]), ok, false), Ok(Framing::Length(5))));
        assert!(matches!(framing(&h(&[("content-length", "5")]), ok, true), Ok(Framing::Done)), "HEAD");
        assert!(matches!(framing(&h(&[]), StatusCode::NOT_MODIFIED, false), Ok(Framing::Done)));
        assert!(matches!(framing(&h(&[("content-length", "0")]), ok, false), Ok(Framing::Done)));
        assert!(matches!(framing(&h(&[("content-length", "5, 5")]), ok, false), Ok(Framing::Length(5))));
        assert!(framing(&h(&[("content-length", "5"), ("content-length", "6")]), ok, false).is_err());
        assert!(framing(&h(&[("content-length", "-1")]), ok, false).is_err());
        assert!(framing(&h(&[("content-length", "+5")]), ok, false).is_err());
        assert!(matches!(framing(&h(&[("transfer-encoding", "gzip, chunked"), ("content-length", "5")]), ok, false), Ok(Framing::Chunked(_))));
        assert!(matches!(framing(&h(&[("transfer-encoding", "chunked, gzip")]), ok, false), Ok(Framing::Close)));
        assert!(matches!(framing(&h(&[]), ok, false), Ok(Framing::Close)));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"10;name=value"), Some(16));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"zz"), None);
        assert_eq!(chunk_size(b"1x"), None);
        assert_eq!(chunk_size(b"ffffffffffffffff"), None, "too many digits");
    }

    /// An upstream that answers one request with `raw`, then reads on (so a kept
    /// connection stays open) until the client closes.
    async fn answering(raw: &'static [u8]) -> Conn {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b).await;
            // In pieces, so the parser sees partial heads and bodies.
            for piece in raw.chunks(7) {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let _ = s.read(&mut b).await;
        });
        Conn::new(TcpStream::connect(addr).await.unwrap(), 1, 0)
    }

    async fn body_of(raw: &'static [u8]) -> Result<(Vec<u8>, bool), String> {
        use http_body_util::BodyExt;
        let conn = answering(raw).await;
        let (_, body) = conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", None, false).await.map_err(|e| match e {
            Error::Closed(s) | Error::Other(s) => s,
        })?;
        let keep = body.keep_alive;
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((bytes.to_vec(), keep))
    }

    #[tokio::test]
    async fn bodies_are_read_by_their_framing() {
        assert_eq!(body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world").await.unwrap(), (b"hello world".to_vec(), true));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(body_of(chunked).await.unwrap(), (b"hello world".to_vec(), true));
        let informational = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(body_of(informational).await.unwrap().0, b"ok");
        assert!(body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX").await.is_err(), "no CRLF after a chunk");
        assert!(body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n").await.is_err(), "bad size");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_close_delimited_one_is_not() {
        use http_body_util::BodyExt;
        for (raw, complete) in [(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..], false), (&b"HTTP/1.1 200 OK\r\n\r\nabc"[..], true)] {
            let addr = one_answer(raw, std::time::Duration::ZERO).await;
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap(), 1, 0);
            let (_, body) = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, false).await.ok().unwrap();
            assert_eq!(body.keep_alive, !complete, "a close-delimited body never keeps its connection");
            let got = body.collect().await;
            assert_eq!(got.is_ok(), complete, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[tokio::test]
    async fn a_head_too_large_is_refused() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let raw = BIG.get_or_init(|| format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10)).into_bytes());
        assert!(body_of(raw).await.is_err());
    }

    #[tokio::test]
    async fn a_close_before_any_answer_is_told_apart() {
        // Reads the request, answers nothing, closes.
        let addr = one_answer(b"", std::time::Duration::ZERO).await;
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap(), 1, 0);
        assert!(matches!(conn.send(b"GET / HTTP/1.1\r\n\r\n", None, false).await, Err(Error::Closed(_))));
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_body_is_taken_and_the_connection_not_kept() {
        // Keeps the connection open and reads nothing more: the proxy must not wait for the body.
        let addr = one_answer(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!", std::time::Duration::from_secs(30)).await;
        // 256 MiB: far more than the socket buffers hold.
        let chunks = futures_util::stream::iter((0..4096).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 << 10]))));
        let body = Outgoing::new(axum::body::Body::from_stream(chunks), true);
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap(), 1, 0);
        let sent = conn.send(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n", Some(body), false);
        let (parts, up) = tokio::time::timeout(std::time::Duration::from_secs(10), sent).await.expect("answered without the whole body").ok().unwrap();
        assert_eq!(parts.status, 413);
        let mut up = up;
        let home = super::super::OwnUpstream::new([127, 0, 0, 1].into());
        up.home(home.clone());
        use http_body_util::BodyExt;
        assert_eq!(&up.collect().await.unwrap().to_bytes()[..], b"big!");
        assert!(!home.is_kept(), "a connection with half a request body on it is not kept");
    }

    #[tokio::test]
    async fn a_request_body_goes_on_after_an_early_answer() {
        // An upstream that answers at once and then echoes the request body (a streaming
        // echo): the body must keep flowing while the answer is read, else both wait.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const N: usize = 1 << 20;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {N}\r\n\r\n").as_bytes()).await.unwrap();
            let mut left = N;
            let mut b = vec![0u8; 64 << 10];
            while left > 0 {
                let n = s.read(&mut b[..left.min(64 << 10)]).await.unwrap();
                assert!(n > 0, "the whole body arrives");
                s.write_all(&b[..n]).await.unwrap();
                left -= n;
            }
            let _ = s.read(&mut b).await;
        });
        let chunks = futures_util::stream::iter((0..16).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; N / 16]))));
        let body = Outgoing::new(axum::body::Body::from_stream(chunks), false);
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap(), 1, 0);
        let head = format!("POST / HTTP/1.1\r\ncontent-length: {N}\r\n\r\n");
        let echoed = async {
            let (_, up) = conn.send(head.as_bytes(), Some(body), false).await.ok().unwrap();
            use http_body_util::BodyExt;
            up.collect().await.unwrap().to_bytes()
        };
        let echoed = tokio::time::timeout(std::time::Duration::from_secs(20), echoed).await.expect("no deadlock");
        assert_eq!(echoed.len(), N);
        assert!(echoed.chunks(N / 16).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)), "echoed in order");
    }

    #[test]
    fn a_transfer_encoding_drops_the_content_length_and_the_connection() {
        let Ok(Some(Head::Final(p, keep))) = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n") else { panic!() };
        assert!(!p.headers.contains_key("content-length"), "a forwarder removes it (RFC 9112 6.3)");
        assert!(!keep);
        let Ok(Some(Head::Final(_, keep))) = parse("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n") else { panic!() };
        assert!(!keep, "HTTP/1.0 with Transfer-Encoding");
        let Ok(Some(Head::Final(_, keep))) = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") else { panic!() };
        assert!(keep);
    }
}
