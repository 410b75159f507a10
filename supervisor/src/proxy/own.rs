//! A public connection's own upstream connection. HTTP/1 carries one request at a time, so
//! each client connection can keep one upstream connection for itself, driven by the client
//! connection's own task ([`OwnUpstream::drive`]): a request then goes out and its answer
//! comes back without crossing to another task or through a shared pool (callgrind:
//! hyper-util's pool checkout, its spawned connection task and the hops between the two
//! were about a sixth of the proxy's instructions per request; bench/NOTES.md).
//!
//! A one-off connection is used when this connection's own upstream is busy (a pipelined
//! request while the previous answer is still being read). A kept connection is dropped,
//! and a fresh one made, when it was idle longer than [`super::POOL_IDLE`] (Node closes idle
//! connections after 5 s), when the upstream closed it, or after a resume
//! ([`super::drop_idle_connections`]).

use axum::body::Body;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The connection future of an upstream connection.
pub(super) type Driver = Connection<TokioIo<TcpStream>, Body>;

/// The slot of one public connection (cloned into each of its requests' extensions), with
/// the client's address as a header value (`X-Forwarded-For`), made once per connection.
#[derive(Clone)]
pub struct OwnUpstream(Arc<Inner>);

struct Inner {
    slot: Mutex<Option<Kept>>,
    peer: Option<axum::http::HeaderValue>,
}

/// One kept upstream connection: its sender, and the connection future this public
/// connection's task polls.
struct Kept {
    /// Which [`super::Upstream`] it goes to.
    upstream: u64,
    /// [`super::POOL_GENERATION`] when it was made.
    generation: u64,
    sender: SendRequest<Body>,
    driver: Pin<Box<Driver>>,
    last_used: Instant,
}

/// Why [`OwnUpstream::checkout`] did not send the request.
pub(super) enum Miss {
    /// The kept connection is busy (or kept for another upstream): use another one.
    Busy,
    /// None is kept, or the kept one is no longer fit: make one.
    None,
}

/// The answer of a request sent on an upstream connection.
pub(super) type Sent = Result<hyper::Response<hyper::body::Incoming>, hyper::client::conn::TrySendError<hyper::Request<Body>>>;

impl OwnUpstream {
    /// The slot of a connection from `peer`.
    pub fn new(peer: std::net::IpAddr) -> Self {
        OwnUpstream(Arc::new(Inner { slot: Mutex::new(None), peer: super::headers::ip_value(peer).ok() }))
    }

    /// The kept connection's slot (a panic while it was held leaves nothing half-done in it).
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.0.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's address as a header value.
    pub(super) fn peer_value(&self) -> Option<&axum::http::HeaderValue> {
        self.0.peer.as_ref()
    }

    /// Runs `conn` (the public connection) and, in the same task, the kept upstream connection.
    pub async fn drive<F: Future>(&self, conn: F) -> F::Output {
        let mut conn = std::pin::pin!(conn);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = conn.as_mut().poll(cx) {
                // Nothing polls the kept connection once the public one has ended: close it now.
                *self.slot() = None;
                return Poll::Ready(v);
            }
            self.poll_upstream(cx);
            Poll::Pending
        })
        .await
    }

    /// Polls the kept connection; forgets it once it has ended (closed by either side).
    fn poll_upstream(&self, cx: &mut Context<'_>) {
        let mut slot = self.slot();
        if let Some(k) = slot.as_mut() {
            if let Poll::Ready(r) = k.driver.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!("own upstream connection ended: {e}");
                }
                *slot = None;
            }
        }
    }

    /// Sends `req` on the kept connection to `upstream` if it is fit and ready.
    pub(super) fn checkout(&self, upstream: u64, generation: u64, req: hyper::Request<Body>) -> Result<impl Future<Output = Sent> + Send, (Miss, hyper::Request<Body>)> {
        let mut slot = self.slot();
        let Some(k) = slot.as_mut() else { return Err((Miss::None, req)) };
        if k.upstream != upstream {
            // Kept for another upstream (a pass-through route): replaced if idle.
            if !k.sender.is_ready() {
                return Err((Miss::Busy, req));
            }
            *slot = None;
            return Err((Miss::None, req));
        }
        if k.generation != generation || k.last_used.elapsed() >= super::POOL_IDLE || k.sender.is_closed() {
            *slot = None;
            return Err((Miss::None, req));
        }
        if !k.sender.is_ready() {
            return Err((Miss::Busy, req));
        }
        k.last_used = Instant::now();
        Ok(k.sender.try_send_request(req))
    }

    /// Keeps a new connection (replacing any other) and sends `req` on it.
    pub(super) fn install(
        &self,
        upstream: u64,
        generation: u64,
        mut sender: SendRequest<Body>,
        driver: Driver,
        req: hyper::Request<Body>,
    ) -> impl Future<Output = Sent> + Send {
        let fut = sender.try_send_request(req);
        let kept = Kept { upstream, generation, sender, driver: Box::pin(driver), last_used: Instant::now() };
        *self.slot() = Some(kept);
        fut
    }

    /// Forgets the kept connection to `upstream` (it failed a request).
    pub(super) fn discard(&self, upstream: u64) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|k| k.upstream == upstream) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{drop_idle_connections, Rewrite, Upstream};
    use super::*;
    use http_body_util::BodyExt;

    /// An upstream answering every request with the port of the connection it came on;
    /// it closes a connection after answering when the request says `x-close: 1`, and the
    /// first request saying `x-drop: 1` gets no answer: its connection is closed (a
    /// keep-alive close racing the request).
    async fn upstream() -> std::net::SocketAddr {
        upstream_reporting_ends().await.0
    }

    /// [`upstream`], also sending `()` each time one of its connections has ended.
    async fn upstream_reporting_ends() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = l.accept().await.unwrap();
                let dropped = dropped.clone();
                let ended_tx = ended_tx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let first_drop = req.headers().contains_key("x-drop") && !dropped.swap(true, std::sync::atomic::Ordering::SeqCst);
                        async move {
                        if first_drop {
                            return Err("dropped");
                        }
                        let mut r = hyper::Response::new(Body::from(peer.port().to_string()));
                        if req.headers().contains_key("x-close") {
                            r.headers_mut().insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, &str>(r)
                    }});
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                    let _ = ended_tx.send(());
                });
            }
        });
        (addr, ended)
    }

    async fn get(up: &Upstream, own: &OwnUpstream, close: bool) -> String {
        get_with(up, own, if close { "x-close" } else { "x-none" }).await
    }

    async fn get_with(up: &Upstream, own: &OwnUpstream, header: &'static str) -> String {
        let mut req = axum::extract::Request::new(Body::empty());
        *req.uri_mut() = "/x".parse().unwrap();
        req.headers_mut().insert("host", "app".parse().unwrap());
        req.headers_mut().insert(header, "1".parse().unwrap());
        req.extensions_mut().insert(own.clone());
        let resp = up.forward(req, "127.0.0.1:9".parse().unwrap(), &Rewrite::default()).await.unwrap();
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_keeps_its_upstream_until_it_closes_or_a_resume() {
        let addr = upstream().await;
        let up = Upstream::new(&addr.to_string());
        let own = OwnUpstream::new([127, 0, 0, 1].into());
        own.clone()
            .drive(async {
                let first = get(&up, &own, false).await;
                for _ in 0..5 {
                    assert_eq!(get(&up, &own, false).await, first, "the same upstream connection");
                }
                // The upstream closes it after this answer: the next request gets a new one.
                assert_eq!(get(&up, &own, true).await, first);
                let second = get(&up, &own, false).await;
                assert_ne!(second, first, "a new connection after the upstream closed the kept one");
                // A resume: the kept connection is not used again.
                drop_idle_connections();
                let third = get(&up, &own, false).await;
                assert_ne!(third, second, "a new connection after a resume");
                assert_eq!(get(&up, &own, false).await, third);
            })
            .await;
    }

    #[tokio::test]
    async fn a_get_whose_kept_connection_closes_unanswered_is_retried_on_a_fresh_one() {
        let addr = upstream().await;
        let up = Upstream::new(&addr.to_string());
        let own = OwnUpstream::new([127, 0, 0, 1].into());
        own.clone()
            .drive(async {
                let first = get(&up, &own, false).await;
                let again = get_with(&up, &own, "x-drop").await;
                assert_ne!(again, first, "answered on a fresh connection");
                assert_eq!(get(&up, &own, false).await, again, "which is kept");
            })
            .await;
    }

    #[tokio::test]
    async fn the_kept_connection_closes_when_its_public_connection_ends() {
        let (addr, mut ended) = upstream_reporting_ends().await;
        let up = Upstream::new(&addr.to_string());
        // Held on to after the public connection ends, as a request's extensions may be.
        let own = OwnUpstream::new([127, 0, 0, 1].into());
        own.clone().drive(async { get(&up, &own, false).await }).await;
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), ended.recv()).await;
        assert!(matches!(closed, Ok(Some(()))), "the upstream connection was closed once the public connection ended");
    }

    #[tokio::test]
    async fn an_idle_kept_connection_is_not_reused() {
        let addr = upstream().await;
        let up = Upstream::new(&addr.to_string());
        let own = OwnUpstream::new([127, 0, 0, 1].into());
        own.clone()
            .drive(async {
                let first = get(&up, &own, false).await;
                tokio::time::pause();
                tokio::time::advance(super::super::POOL_IDLE).await;
                tokio::time::resume();
                assert_ne!(get(&up, &own, false).await, first, "idle for the pool's idle timeout: a fresh connection");
            })
            .await;
    }
}
