//! The reverse proxy of port 3000: HTTP/1.1 with pooled keep-alive upstream connections
//! and streamed bodies, WebSocket upgrades spliced byte for byte (subprotocol and query
//! intact), and a "starting" answer while the upstream service is not ready.

mod headers;
pub mod secrets;
mod starting;

pub use headers::strip_hop_by_hop;
/// The answer while the app is not ready: a self-refreshing page for browsers, JSON otherwise.
pub use starting::response as starting_response;

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Scheme};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;

/// How long to wait for an upstream TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for an upstream's response headers (bodies and upgraded streams are not limited).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(120);

/// Bumped to make every [`Upstream`] drop its pooled connections (after a resume).
static POOL_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes every upstream pool start afresh: idle connections from before a VM freeze may
/// be dead on the other side.
pub fn drop_idle_connections() {
    POOL_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// One upstream address with its connection pool.
pub struct Upstream {
    addr: String,
    /// `addr` parsed once (cloning it is a reference count, not a parse per request).
    authority: Option<axum::http::uri::Authority>,
    client: std::sync::Mutex<(u64, Client<HttpConnector, Body>)>,
}

fn pooled_client() -> Client<HttpConnector, Body> {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).pool_max_idle_per_host(256).build(conn)
}

/// How long an idle upstream connection is kept: below Node's 5 s `keepAliveTimeout` (Vite,
/// Playwright MCP), so the pool never writes a request onto a connection Node is closing.
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
/// looks like. (hyper-util itself retries only a request its connection closed before it
/// was written.)
fn closed_before_answer(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
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
    /// An upstream at `addr` (`HOST:PORT`) with a keep-alive pool.
    pub fn new(addr: &str) -> Self {
        let generation = POOL_GENERATION.load(std::sync::atomic::Ordering::SeqCst);
        Upstream { addr: addr.to_string(), authority: addr.parse().ok(), client: std::sync::Mutex::new((generation, pooled_client())) }
    }

    /// The pooled client, replaced (dropping its idle connections) after a resume.
    fn client(&self) -> Client<HttpConnector, Body> {
        let generation = POOL_GENERATION.load(std::sync::atomic::Ordering::SeqCst);
        let mut c = self.client.lock().expect("pool");
        if c.0 != generation {
            *c = (generation, pooled_client());
        }
        c.1.clone()
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
        let authority = self.authority.clone().ok_or_else(|| ForwardError::Other(format!("bad upstream address {}", self.addr)))?;
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(pq.clone())
            .build()
            .map_err(|e| ForwardError::Other(format!("bad uri: {e}")))?;
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::for_upstream(&mut parts.headers, client.ip());
        for h in rw.drop {
            parts.headers.remove(*h);
        }
        if let Some(host) = &rw.host {
            parts.headers.insert(header::HOST, HeaderValue::from_str(host).map_err(|e| ForwardError::Other(e.to_string()))?);
        }
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        if let (Some(proto), Some(on_client)) = (upgrade, client_upgrade) {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto);
            parts.uri = Uri::from(pq); // origin-form: conn::http1 sends the URI verbatim
            return self.forward_upgrade(hyper::Request::from_parts(parts, Body::empty()), on_client).await;
        }
        // One retry of an idempotent request whose pooled connection closed under it.
        let again = retryable(&parts, &body).then(|| {
            let mut r = hyper::Request::new(Body::empty());
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.version_mut() = parts.version;
            *r.headers_mut() = parts.headers.clone();
            r
        });
        let mut result = tokio::time::timeout(HEADER_TIMEOUT, self.client().request(hyper::Request::from_parts(parts, body))).await;
        if let (Some(req), Ok(Err(e))) = (again, &result) {
            if !e.is_connect() && closed_before_answer(e) {
                tracing::debug!(upstream = %self.addr, "pooled connection closed before the answer ({e}); retrying once");
                result = tokio::time::timeout(HEADER_TIMEOUT, self.client().request(req)).await;
            }
        }
        let resp = match result {
            Err(_) => return Err(ForwardError::Timeout(self.addr.clone())),
            Ok(Err(e)) if e.is_connect() => return Err(ForwardError::Unavailable(self.addr.clone())),
            Ok(Err(e)) => return Err(ForwardError::Other(format!("{e}"))),
            Ok(Ok(r)) => r,
        };
        Ok(downstream(resp))
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
