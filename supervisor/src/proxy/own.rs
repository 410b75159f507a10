//! A public connection's own upstream connection. HTTP/1 carries one request at a time, so
//! each client connection keeps one upstream connection for itself ([`super::h1::Conn`]),
//! used only from the client connection's own task: a request goes out and its answer comes
//! back without crossing to another task or through a shared pool (callgrind: hyper-util's
//! pool checkout, its spawned connection task and the hops between the two were about a
//! sixth of the proxy's instructions per request; bench/NOTES.md).
//!
//! The connection is out of the slot while an answer's body is read off it and goes back
//! when that body has ended cleanly ([`super::h1::UpBody`]). A kept connection is dropped,
//! and a fresh one made, when it was idle longer than [`super::POOL_IDLE`] (Node closes idle
//! connections after 5 s), when the upstream closed it (noticed by [`OwnUpstream::drive`]
//! as it happens), or after a resume ([`super::drop_idle_connections`]).

use super::h1::Conn;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// The slot of one public connection (cloned into each of its requests' extensions), with
/// the client's address as a header value (`X-Forwarded-For`), made once per connection.
#[derive(Clone)]
pub struct OwnUpstream(Arc<Inner>);

struct Inner {
    slot: Mutex<Option<Conn>>,
    peer: Option<axum::http::HeaderValue>,
}

impl OwnUpstream {
    /// The slot of a connection from `peer`.
    pub fn new(peer: std::net::IpAddr) -> Self {
        OwnUpstream(Arc::new(Inner { slot: Mutex::new(None), peer: super::headers::ip_value(peer).ok() }))
    }

    /// The kept connection's slot (a panic while it was held leaves nothing half-done in it).
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.0.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's address as a header value.
    pub(super) fn peer_value(&self) -> Option<&axum::http::HeaderValue> {
        self.0.peer.as_ref()
    }

    /// Runs `conn` (the public connection); while it waits, a kept upstream connection that
    /// the upstream closes is closed too (its task is woken for that), and once `conn` has
    /// ended the kept one is closed at once.
    pub async fn drive<F: Future>(&self, conn: F) -> F::Output {
        let mut conn = std::pin::pin!(conn);
        std::future::poll_fn(|cx| {
            let done = conn.as_mut().poll(cx);
            let mut slot = self.slot();
            if done.is_ready() || slot.as_mut().is_some_and(|k| !k.still_open(cx)) {
                *slot = None;
            }
            done
        })
        .await
    }

    /// Takes the kept connection if it goes to `upstream`, is of this `generation`, has not
    /// been idle too long and is still open; any other kept connection is closed.
    pub(super) fn take(&self, upstream: u64, generation: u64) -> Option<Conn> {
        let mut k = self.slot().take()?;
        let fit = k.upstream == upstream && k.generation == generation && k.last_used.elapsed() < super::POOL_IDLE;
        (fit && k.is_open()).then_some(k)
    }

    /// Whether a connection is kept.
    #[cfg(test)]
    pub(super) fn is_kept(&self) -> bool {
        self.slot().is_some()
    }

    /// Keeps `conn` for the next request (unless one is kept already).
    pub(super) fn put(&self, conn: Conn) {
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = Some(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{drop_idle_connections, Rewrite, Upstream};
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;

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

    #[tokio::test]
    async fn a_body_goes_upstream_with_its_length_whatever_headers_the_client_stripped() {
        // `Connection: content-length` makes the hop-by-hop rule remove Content-Length: the
        // body must still go with its length, or the upstream reads it as a second request.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let cl = req.headers().get("content-length").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, hyper::Error>(hyper::Response::new(Body::from(format!("{cl}:{}", String::from_utf8_lossy(&body)))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
        });
        let up = Upstream::new(&addr.to_string());
        let own = OwnUpstream::new([127, 0, 0, 1].into());
        own.clone()
            .drive(async {
                let smuggled = "GET /@fs/etc/passwd HTTP/1.1\r\nhost: x\r\n\r\n";
                let mut req = axum::extract::Request::new(Body::from(smuggled));
                *req.method_mut() = axum::http::Method::POST;
                *req.uri_mut() = "/x".parse().unwrap();
                req.headers_mut().insert("host", "app".parse().unwrap());
                req.headers_mut().insert("connection", "content-length".parse().unwrap());
                req.extensions_mut().insert(own.clone());
                let resp = up.forward(req, "127.0.0.1:9".parse().unwrap(), &Rewrite::default()).await.unwrap();
                let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
                assert_eq!(text, format!("{}:{smuggled}", smuggled.len()), "one request upstream, its body with its length");
            })
            .await;
    }

    #[tokio::test]
    async fn a_kept_connection_the_upstream_closes_while_idle_is_closed_too() {
        // An upstream that answers one request, keeps the connection a moment, then closes it.
        let addr = super::super::h1::tests::one_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", std::time::Duration::from_millis(100)).await;
        let up = Upstream::new(&addr.to_string());
        let own = OwnUpstream::new([127, 0, 0, 1].into());
        own.clone()
            .drive(async {
                assert_eq!(get(&up, &own, false).await, "ok");
                assert!(own.is_kept(), "kept after a clean answer");
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while own.is_kept() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                assert!(!own.is_kept(), "closed (not kept for the next request) once the upstream closed it");
            })
            .await;
    }
}
