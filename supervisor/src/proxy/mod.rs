//! The reverse proxy of port 3000: HTTP/1.1 with keep-alive upstream connections (each
//! public connection keeps its own, [`OwnUpstream`], spoken to by the proxy's own
//! HTTP/1.1 client, [`h1`]) and streamed bodies, WebSocket upgrades spliced byte for byte
//! through hyper's client (subprotocol and query intact), and a "starting" answer while
//! the upstream service is not ready.

mod h1;
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

/// Whether the request has no body (no bytes, and no `Content-Length` but 0; it is asked
/// after the hop-by-hop headers, `Transfer-Encoding` among them, are gone): it is sent as
/// its head alone, and may be sent twice (see [`idempotent`]).
fn bodyless(parts: &axum::http::request::Parts, body: &Body) -> bool {
    hyper::body::Body::is_end_stream(body) && parts.headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
}

/// Whether a request may be sent twice: GET, HEAD or OPTIONS (and it has no body).
fn idempotent(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
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
    /// Anything else.
    Other(String),
}

impl From<h1::Error> for Failure {
    fn from(e: h1::Error) -> Self {
        match e {
            h1::Error::Closed(e) | h1::Error::Other(e) => Failure::Other(e),
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
        // Taken out, not cloned: the request's extensions go upstream with it (an upgrade)
        // and must not keep the public connection's slot alive.
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
        parts.uri = Uri::from(pq); // origin-form, sent verbatim
        parts.version = axum::http::Version::HTTP_11;
        if let (Some(proto), Some(on_client)) = (upgrade, client_upgrade) {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto);
            return self.forward_upgrade(hyper::Request::from_parts(parts, Body::empty()), on_client).await;
        }
        // Framed as hyper read it from the client, whatever headers are left: with its
        // length, or chunked. (A client's `Connection: content-length` strips the header as
        // hop-by-hop; a body sent upstream without it would be read there as a second request.)
        let bodyless = bodyless(&parts, &body);
        let outgoing = (!bodyless).then(|| {
            let length = hyper::body::Body::size_hint(&body).exact();
            match length {
                Some(n) => {
                    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
                None => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                }
            }
            h1::Outgoing::new(body, length.is_none())
        });
        let head = h1::encode_head(&parts);
        let sent = self.send(&head, outgoing, &parts.method, own.as_ref());
        let result = tokio::time::timeout(HEADER_TIMEOUT, sent).await.map(|r| r.map(|(parts, body)| downstream(hyper::Response::from_parts(parts, body))));
        match result {
            Err(_) => Err(ForwardError::Timeout(self.addr.clone())),
            Ok(Err(Failure::Connect)) => Err(ForwardError::Unavailable(self.addr.clone())),
            Ok(Err(Failure::Other(e))) => Err(ForwardError::Other(e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends a request (its encoded `head` and its body) on the public connection's own
    /// upstream connection if it has a fit one, else on a fresh one that it then keeps.
    /// An idempotent request without a body whose kept connection closes before any answer
    /// (a keep-alive close racing it) is sent once more, on a fresh connection.
    async fn send(&self, head: &[u8], body: Option<h1::Outgoing>, method: &axum::http::Method, own: Option<&OwnUpstream>) -> Result<(axum::http::response::Parts, h1::UpBody), Failure> {
        let generation = POOL_GENERATION.load(std::sync::atomic::Ordering::Relaxed);
        let head_request = *method == axum::http::Method::HEAD;
        let conn = match own.and_then(|o| o.take(self.id, generation)) {
            Some(kept) => kept,
            None => h1::Conn::new(self.connect_tcp().await?, self.id, generation),
        };
        let again = conn.reused && body.is_none() && idempotent(method);
        let (parts, mut body) = match conn.send(head, body, head_request).await {
            Err(h1::Error::Closed(e)) if again => {
                tracing::debug!(upstream = %self.addr, "kept-alive connection closed before the answer ({e}); retrying once");
                h1::Conn::new(self.connect_tcp().await?, self.id, generation).send(head, None, head_request).await?
            }
            answer => answer?,
        };
        if let Some(own) = own {
            body.home(own.clone());
        }
        Ok((parts, body))
    }

    /// A new TCP connection to the upstream (no delay: heads go out as soon as written).
    async fn connect_tcp(&self) -> Result<tokio::net::TcpStream, Failure> {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            _ => Err(Failure::Connect),
        }
    }

    /// A WebSocket (or other) upgrade: its own upstream connection; after `101` both
    /// sides are spliced byte for byte until either closes.
    async fn forward_upgrade(&self, req: hyper::Request<Body>, on_client: hyper::upgrade::OnUpgrade) -> Result<Response, ForwardError> {
        let revocation = req.extensions().get::<crate::api::auth::Revocation>().cloned();
        let stream = self.connect_tcp().await.map_err(|_| ForwardError::Unavailable(self.addr.clone()))?;
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
fn downstream<B>(resp: hyper::Response<B>) -> Response
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = axum::http::Version::HTTP_11;
    Response::from_parts(parts, Body::new(body))
}
