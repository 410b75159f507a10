//! The reverse proxy of port 3000: HTTP/1.1 with keep-alive upstream connections (each
//! public connection keeps its own, [`OwnUpstream`]) and streamed bodies, WebSocket upgrades spliced byte for byte (subprotocol and query
//! intact), and a "starting" answer while the upstream service is not ready.

mod headers;
mod own;
pub mod secrets;
mod starting;

pub use headers::strip_hop_by_hop;
pub use own::OwnUpstream;
/// The answer while the app is not ready: a self-refreshing page for browsers, JSON otherwise.
pub use starting::response as starting_response;

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// How long to wait for an upstream TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for an upstream's response headers (bodies and upgraded streams are not limited).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(120);

/// Bumped to make every kept upstream connection be dropped instead of used again (after a resume).
static POOL_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes every kept upstream connection be replaced by a fresh one: idle connections from
/// before a VM freeze may be dead on the other side.
pub fn drop_idle_connections() {
    POOL_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// One upstream address.
pub struct Upstream {
    addr: String,
    /// `addr` parsed once (cloning it is a reference count, not a parse per request).
    authority: Option<axum::http::uri::Authority>,
    /// Tells its connections apart from other upstreams' in an [`OwnUpstream`].
    id: u64,
}

/// Hands out [`Upstream::id`]s.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How long an idle upstream connection is kept: below Node's 5 s `keepAliveTimeout` (Vite,
/// Playwright MCP), so a request is never written onto a connection Node is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// Whether `req` may be sent twice: GET, HEAD or OPTIONS without a body.
fn retryable(parts: &axum::http::request::Parts, body: &Body) -> bool {
    use axum::http::Method;
    let bodyless = hyper::body::Body::is_end_stream(body)
        && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
    matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) && bodyless
}

/// The error of a connection the upstream closed or reset before any answer (hyper's
/// `IncompleteMessage`, a reset, a broken pipe): what a keep-alive close racing our request
/// looks like.
fn closed_before_answer(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | BrokenPipe | UnexpectedEof | ConnectionAborted) {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// TCP keepalive (probes after 30 s idle, every 10 s, 3 tries): a spliced WebSocket whose
/// peer vanished (a VM paused and resumed, a client gone off the network) is closed within
/// about a minute instead of holding its descriptors for ever.
pub fn set_keepalive(tcp: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10)).with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
}

/// Why sending a request upstream failed.
enum Failure {
    /// No connection could be made.
    Connect,
    /// The upstream closed or reset the connection before any answer (retryable).
    Closed(String),
    /// Anything else.
    Other(String),
}

impl Failure {
    fn of(e: &hyper::Error) -> Self {
        if closed_before_answer(e) {
            Failure::Closed(e.to_string())
        } else {
            Failure::Other(e.to_string())
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream refused or did not accept the connection.
    #[error("upstream {0} is not accepting connections")]
    Unavailable(String),
    /// The upstream took longer than [`HEADER_TIMEOUT`] to answer.
    #[error("upstream {0} did not answer within {HEADER_TIMEOUT:?}")]
    Timeout(String),
    /// Anything else (bad request, broken connection).
    #[error("proxy error: {0}")]
    Other(String),
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            ForwardError::Unavailable(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            ForwardError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ForwardError::Other(_) => (StatusCode::BAD_GATEWAY, "proxy_error"),
        };
        crate::api::ApiError::new(status, code, self.to_string()).into_response()
    }
}

/// Adjustments for one forwarded request.
#[derive(Default, Clone)]
pub struct Rewrite {
    /// Replace the path (and query) sent upstream.
    pub path_and_query: Option<String>,
    /// Replace the `Host` header.
    pub host: Option<String>,
    /// Remove these request headers too (e.g. `origin`, `authorization`).
    pub drop: &'static [&'static str],
}

impl Upstream {
    /// An upstream at `addr` (`HOST:PORT`).
    pub fn new(addr: &str) -> Self {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Upstream { addr: addr.to_string(), authority: addr.parse().ok(), id }
    }

    /// The `HOST:PORT` it forwards to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Forwards `req` (from `client`) and returns the upstream's answer, streaming.
    pub async fn forward(&self, mut req: Request, client: SocketAddr, rw: &Rewrite) -> Result<Response, ForwardError> {
        let upgrade = crate::api::auth::is_upgrade(&req).then(|| req.headers().get(header::UPGRADE).cloned()).flatten();
        let pq: PathAndQuery = match &rw.path_and_query {
            Some(p) if p.starts_with('/') => p.parse().map_err(|e| ForwardError::Other(format!("bad uri: {e}")))?,
            Some(p) => return Err(ForwardError::Other(format!("bad uri: path {p:?} is not absolute"))),
            None => req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Taken out, not cloned: a request queued on the kept connection must not hold the
        // slot that holds that connection (a cycle that would outlive the public connection).
        let own = parts.extensions.remove::<OwnUpstream>();
        let peer_value = own.as_ref().and_then(|o| o.peer_value().cloned());
        headers::for_upstream(&mut parts.headers, client.ip(), peer_value.as_ref());
        for h in rw.drop {
            parts.headers.remove(*h);
        }
        if let Some(host) = &rw.host {
            parts.headers.insert(header::HOST, HeaderValue::from_str(host).map_err(|e| ForwardError::Other(e.to_string()))?);
        }
        if !parts.headers.contains_key(header::HOST) {
            // An HTTP/1.0 client may send none; HTTP/1.1 upstreams want one.
            let host = self.authority.as_ref().ok_or_else(|| ForwardError::Other(format!("bad upstream address {}", self.addr)))?;
            parts.headers.insert(header::HOST, HeaderValue::from_str(host.as_str()).map_err(|e| ForwardError::Other(e.to_string()))?);
        }
        parts.uri = Uri::from(pq); // origin-form: conn::http1 sends the URI verbatim
        parts.version = axum::http::Version::HTTP_11;
        if let (Some(proto), Some(on_client)) = (upgrade, client_upgrade) {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto);
            return self.forward_upgrade(hyper::Request::from_parts(parts, Body::empty()), on_client).await;
        }
        // One retry of an idempotent request whose kept-alive connection closed under it.
        let again = retryable(&parts, &body).then(|| {
            let mut r = hyper::Request::new(Body::empty());
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.version_mut() = parts.version;
            *r.headers_mut() = parts.headers.clone();
            r
        });
        let req = hyper::Request::from_parts(parts, body);
        let mut result = tokio::time::timeout(HEADER_TIMEOUT, self.send(req, own.as_ref())).await;
        if let (Some(req), Ok(Err(Failure::Closed(e)))) = (again, &result) {
            tracing::debug!(upstream = %self.addr, "kept-alive connection closed before the answer ({e}); retrying once");
            result = tokio::time::timeout(HEADER_TIMEOUT, self.send(req, own.as_ref())).await;
        }
        match result {
            Err(_) => Err(ForwardError::Timeout(self.addr.clone())),
            Ok(Err(Failure::Connect)) => Err(ForwardError::Unavailable(self.addr.clone())),
            Ok(Err(Failure::Closed(e) | Failure::Other(e))) => Err(ForwardError::Other(e)),
            Ok(Ok(r)) => Ok(downstream(r)),
        }
    }

    /// Sends `req` (origin-form URI) on the public connection's own upstream connection
    /// when it has a ready one (or none yet: then one is made and kept), else on a one-off
    /// connection (the kept one is busy: a pipelined request).
    async fn send(&self, req: hyper::Request<Body>, own: Option<&OwnUpstream>) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let Some(own) = own else { return self.one_off(req).await };
        let generation = POOL_GENERATION.load(std::sync::atomic::Ordering::Relaxed);
        let req = match own.checkout(self.id, generation, req) {
            Ok(sent) => match sent.await {
                Ok(r) => return Ok(r),
                // Never written (the connection had closed): it may go on a fresh one.
                Err(mut e) => match e.take_message() {
                    Some(req) => {
                        own.discard(self.id);
                        req
                    }
                    None => {
                        own.discard(self.id);
                        return Err(Failure::of(e.error()));
                    }
                },
            },
            // Only a failure on the kept connection forgets it: a one-off's does not touch
            // the kept one, which may still be carrying the previous answer.
            Err((own::Miss::Busy, req)) => return self.one_off(req).await,
            Err((own::Miss::None, req)) => req,
        };
        let (sender, driver) = self.connect().await?;
        own.install(self.id, generation, sender, driver, req).await.map_err(|e| {
            own.discard(self.id);
            Failure::of(e.error())
        })
    }

    /// A new HTTP/1 connection to the upstream.
    async fn connect(&self) -> Result<(hyper::client::conn::http1::SendRequest<Body>, own::Driver), Failure> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr)).await {
            Ok(Ok(s)) => s,
            _ => return Err(Failure::Connect),
        };
        let _ = stream.set_nodelay(true);
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| Failure::Other(e.to_string()))
    }

    /// Sends `req` on a connection of its own, driven by a task of its own, closed after the answer.
    async fn one_off(&self, req: hyper::Request<Body>) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let (mut sender, driver) = self.connect().await?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!("one-off upstream connection ended: {e}");
            }
        });
        let answer = sender.send_request(req).await.map_err(|e| Failure::of(&e));
        drop(sender); // the connection closes once the answer is read
        answer
    }

    /// A WebSocket (or other) upgrade: its own upstream connection; after `101` both
    /// sides are spliced byte for byte until either closes.
    async fn forward_upgrade(&self, req: hyper::Request<Body>, on_client: hyper::upgrade::OnUpgrade) -> Result<Response, ForwardError> {
        let revocation = req.extensions().get::<crate::api::auth::Revocation>().cloned();
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr)).await {
            Ok(Ok(s)) => s,
            _ => return Err(ForwardError::Unavailable(self.addr.clone())),
        };
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream); // the client side has it from the listener
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ForwardError::Other(e.to_string()))?;
        tokio::spawn(conn.with_upgrades());
        let mut resp = match tokio::time::timeout(HEADER_TIMEOUT, sender.send_request(req)).await {
            Err(_) => return Err(ForwardError::Timeout(self.addr.clone())),
            Ok(Err(e)) => return Err(ForwardError::Other(e.to_string())),
            Ok(Ok(r)) => r,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(downstream(resp));
        }
        let on_upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(on_client, on_upstream) {
                Ok((c, u)) => {
                    let _open = crate::metrics::websocket_opened();
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    let splice = tokio::io::copy_bidirectional(&mut c, &mut u);
                    match revocation {
                        // Authorised by a token that has since changed: end it (both sides dropped).
                        Some(r) => tokio::select! {
                            _ = splice => {}
                            _ = r.revoked() => tracing::info!("token changed: closed a WebSocket it had authorised"),
                        },
                        None => {
                            let _ = splice.await;
                        }
                    }
                }
                Err(e) => tracing::debug!("upgrade failed: {e}"),
            }
        });
        let (parts, _) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::empty()))
    }
}

/// An upstream answer made fit for our client: hop-by-hop headers removed, HTTP/1.1.
fn downstream(resp: hyper::Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = axum::http::Version::HTTP_11;
    Response::from_parts(parts, Body::new(body))
}
