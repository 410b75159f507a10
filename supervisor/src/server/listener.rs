//! The accept loop of the public listener (SPEC §5 "Limits on the public listener"): port
//! 3000 is on the internet for the VM's whole life, so every connection is bounded.
//!
//! - Request headers must arrive within [`HEADER_TIMEOUT`] of their first byte (slowloris),
//!   else the connection is closed.
//! - A connection with no request under way is kept [`IDLE_TIMEOUT`], longer than E2B's
//!   edge keeps its idle connections (620 s), then closed. hyper's own header timeout also
//!   runs while a keep-alive connection waits for its next request, which would close it
//!   after 10 s and make the edge write requests onto closing connections; [`ConnTimer`]
//!   therefore starts the 10 s only once a byte of the next request has arrived.
//! - At most [`connection_cap`] connections at once, below the open-file limit (raised to the
//!   hard limit by [`raise_nofile`]) with a reserve, so probes, spawns and the control socket
//!   keep working while the listener is flooded; at the cap it stops accepting, and on
//!   `EMFILE`/`ENFILE` it backs off instead of spinning.

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request headers must be complete this long after their first byte.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection waiting for its (next) request is closed after this long: more than E2B's
/// edge idle timeout (620 s), so the edge always closes first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(630);
/// Never more public connections than this, whatever the open-file limit (memory bound).
pub const MAX_CONNECTIONS: usize = 16384;
/// Descriptors always kept back for probes, spawns, logs and the control socket.
pub const MIN_RESERVE: u64 = 256;
/// Pause after an accept failed for lack of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// How many public connections may be open at once under an open-file limit of `nofile`:
/// each may hold two descriptors (the client and an upstream), after a reserve of an eighth
/// (at least [`MIN_RESERVE`]), and never more than [`MAX_CONNECTIONS`].
pub fn connection_cap(nofile: u64) -> usize {
    let reserve = (nofile / 8).max(MIN_RESERVE);
    ((nofile.saturating_sub(reserve) / 2) as usize).clamp(16, MAX_CONNECTIONS)
}

/// Serves `public` on `listener` with at most `cap` connections at once, until the process ends.
pub async fn serve(listener: TcpListener, public: super::Public, cap: usize) {
    let permits = Arc::new(Semaphore::new(cap));
    let mut warned: Option<Instant> = None;
    let mut warn = |what: String| {
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!("public listener: {what}");
            warned = Some(Instant::now());
        }
    };
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                warn(format!("{cap} connections open (the cap): not accepting until one closes"));
                permits.clone().acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(connection(tcp, peer, public.clone(), permit));
            }
            Err(e) => {
                let starved = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                if starved {
                    warn(format!("accept failed ({e}); backing off"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// Serves one connection; its `permit` lives as long as the socket, upgrades included.
async fn connection(tcp: TcpStream, peer: SocketAddr, public: super::Public, permit: OwnedSemaphorePermit) {
    let _ = tcp.set_nodelay(true);
    crate::proxy::set_keepalive(&tcp);
    let reads = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Counted { tcp, reads: reads.clone(), _permit: permit });
    // This connection's own upstream connection, driven by this task (crate::proxy::OwnUpstream).
    let own = crate::proxy::OwnUpstream::new(peer.ip());
    let slot = own.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(slot.clone());
        let public = public.clone();
        async move { Ok::<_, std::convert::Infallible>(public.call(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(ConnTimer { reads })
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc)
        .with_upgrades();
    if let Err(e) = own.drive(conn).await {
        tracing::debug!(%peer, "public connection closed: {e}");
    }
}

/// The TCP stream, counting the bytes read (for [`ConnTimer`]) and holding the connection's
/// permit until the socket is dropped.
struct Counted {
    tcp: TcpStream,
    reads: Arc<AtomicU64>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.reads.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// hyper's timer for one connection. hyper arms its header-read timeout whenever it waits
/// for a request head, the idle time between keep-alive requests included; the sleeps made
/// here last [`IDLE_TIMEOUT`] while no byte arrives, and the header timeout from the first byte.
struct ConnTimer {
    reads: Arc<AtomicU64>,
}

impl ConnTimer {
    fn head_sleep(&self, header: Duration) -> HeadSleep {
        let now = tokio::time::Instant::now();
        HeadSleep {
            sleep: Box::pin(tokio::time::sleep_until(now + IDLE_TIMEOUT)),
            reads: self.reads.clone(),
            reads_at_arm: self.reads.load(Ordering::Relaxed),
            header,
            started: false,
        }
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.head_sleep(duration))
    }
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.head_sleep(deadline.saturating_duration_since(self.now())))
    }
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A header-read deadline: [`IDLE_TIMEOUT`] after arming, or `header` after the first byte
/// read since arming, whichever comes first to apply.
struct HeadSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    reads: Arc<AtomicU64>,
    reads_at_arm: u64,
    header: Duration,
    started: bool,
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this right after every read that did not complete the head.
        if !self.started && self.reads.load(Ordering::Relaxed) != self.reads_at_arm {
            self.started = true;
            let deadline = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[test]
    fn the_cap_keeps_a_reserve_of_descriptors() {
        assert_eq!(connection_cap(1024), 384, "(1024 - 256) / 2");
        assert_eq!(connection_cap(20000), 8750, "(20000 - 2500) / 2");
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
        for n in [1024, 4096, 20000, 65536] {
            assert!(connection_cap(n) as u64 * 2 + (n / 8).max(MIN_RESERVE) <= n, "{n}: two descriptors a connection, plus the reserve");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_waits_the_idle_timeout() {
        let t = ConnTimer { reads: Arc::default() };
        let start = tokio::time::Instant::now();
        let s = t.sleep_until(t.now() + HEADER_TIMEOUT);
        s.await;
        assert_eq!(start.elapsed(), IDLE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_timeout_runs_from_the_first_byte() {
        let reads = Arc::new(AtomicU64::new(500)); // an earlier request on this connection
        let t = ConnTimer { reads: reads.clone() };
        let start = tokio::time::Instant::now();
        let mut s = t.sleep_until(t.now() + HEADER_TIMEOUT);
        // Idle for 100 s: not fired, it is a keep-alive wait.
        assert!(tokio::time::timeout(Duration::from_secs(100), &mut s).await.is_err());
        reads.fetch_add(3, Ordering::Relaxed); // "GET" arrives; hyper polls the sleep
        assert!(futures_util::poll!(&mut s).is_pending());
        s.await;
        assert_eq!(start.elapsed(), Duration::from_secs(100) + HEADER_TIMEOUT);
    }
}
