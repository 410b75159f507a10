//! The browser sensor (SPEC §9): one CDP connection to the supervised Chromium
//! (chromiumoxide's `Connection`, see [`cdp`]), opened once Chromium is ready and
//! re-opened after each of its restarts; screenshots and checks of the app in a browser context of its own;
//! console, exceptions and failed requests of every page into a ring served as SSE.

pub mod cdp;
pub mod events;
pub mod load;
mod watch;

use crate::engine::Supervisor;
use crate::sse::Ring;
use cdp::Cdp;
use chromiumoxide::cdp::browser_protocol::target::CreateBrowserContextParams;
use events::BrowserEvent;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a request waits for Chromium (e.g. while it restarts) before a 503.
pub const WAIT_FOR_BROWSER: Duration = Duration::from_secs(20);
/// Events kept for `/browser/events` replay.
pub const RING: usize = 1000;
/// Captures (screenshots and checks) running at once.
pub const PARALLEL: usize = 2;
/// Captures waiting for a slot; one more is refused with 429.
pub const QUEUE: usize = 8;
/// How often the follower looks at the session between Chromium's status changes.
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

/// Why the sensor cannot answer now (a 503 with this reason).
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// A live CDP connection with the sensor's own browser context.
pub struct Session {
    /// The connection.
    pub cdp: Arc<Cdp>,
    /// The sensor's browser context: its pages share nothing with the agent's.
    pub context: String,
    /// Chromium's pid when this session was opened: a new pid means a new browser.
    pid: Option<i32>,
}

impl Session {
    fn usable(&self, pid: Option<i32>) -> bool {
        self.cdp.alive() && self.pid == pid
    }
}

/// The sensor: where Chromium and the app are, its session, its event ring, its limits.
pub struct Sensor {
    /// DevTools HTTP endpoint, e.g. `http://127.0.0.1:9222` (from the chromium service's config).
    cdp: String,
    /// The app as the browser sees it, e.g. `http://localhost:3000`.
    pub origin: String,
    /// The service running Chromium (whose readiness and pid the session follows).
    service: String,
    sup: Arc<Supervisor>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Console messages, exceptions and failed requests of every page.
    pub events: Arc<Ring<BrowserEvent>>,
    slots: Slots,
}

/// The capture limit: `parallel` at once, `queue` more waiting, then refusal.
pub struct Slots {
    running: Arc<tokio::sync::Semaphore>,
    queued: AtomicUsize,
    queue: usize,
}

/// A slot for one capture; dropping it frees the slot.
pub struct Slot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Slots {
    /// `parallel` captures at once, `queue` more may wait.
    pub fn new(parallel: usize, queue: usize) -> Self {
        Slots { running: Arc::new(tokio::sync::Semaphore::new(parallel)), queued: AtomicUsize::new(0), queue }
    }

    /// A slot now, or after waiting in the queue; `None` when the queue is full.
    pub async fn take(&self) -> Option<Slot> {
        if let Ok(p) = self.running.clone().try_acquire_owned() {
            return Some(Slot(p));
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        // Leaves the queue however the wait ends (a slot, or the request dropped).
        struct Dequeue<'a>(&'a AtomicUsize);
        impl Drop for Dequeue<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _d = Dequeue(&self.queued);
        self.running.clone().acquire_owned().await.ok().map(Slot)
    }
}

impl Sensor {
    /// A sensor for the Chromium of `service` at `cdp`, looking at the app at `origin`.
    pub fn new(sup: Arc<Supervisor>, service: &str, cdp: &str, origin: &str) -> Arc<Self> {
        Arc::new(Sensor {
            cdp: cdp.trim_end_matches('/').to_string(),
            origin: origin.trim_end_matches('/').to_string(),
            service: service.to_string(),
            sup,
            session: tokio::sync::Mutex::new(None),
            events: Arc::new(Ring::new(RING)),
            slots: Slots::new(PARALLEL, QUEUE),
        })
    }

    /// The DevTools address of the `chromium` service: its cdp probe's URL if it has one,
    /// else `http://127.0.0.1:<port>` (default 9222).
    pub fn cdp_of(services: &[crate::config::ServiceSpec], name: &str) -> String {
        use crate::config::ProbeKind;
        let Some(s) = services.iter().find(|s| s.name == name) else { return "http://127.0.0.1:9222".into() };
        for p in [&s.readiness, &s.liveness, &s.startup].into_iter().flatten() {
            if let ProbeKind::Cdp(url) = &p.kind {
                return url.clone();
            }
        }
        format!("http://127.0.0.1:{}", s.port.unwrap_or(9222))
    }

    /// A capture slot: at most [`PARALLEL`] at once, [`QUEUE`] more wait; `None` = refuse (429).
    pub async fn slot(&self) -> Option<Slot> {
        self.slots.take().await
    }

    /// Keeps the session open whenever Chromium is ready — opened at boot, re-opened after
    /// each Chromium restart — so `/browser/events` holds what every page reported since
    /// then, not only since the first request. Reacts to the service's status changes,
    /// and looks again every few seconds in case the connection dropped on its own.
    pub fn follow(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let (_, mut changes) = me.sup.event_ring().subscribe();
            loop {
                let (ready, pid) = me.chromium();
                // A busy lock means a request is connecting right now: nothing to do.
                let usable = me.session.try_lock().map(|g| g.as_ref().is_some_and(|s| s.usable(pid)));
                if ready && matches!(usable, Ok(false)) {
                    if let Err(e) = me.session(WAIT_FOR_BROWSER).await {
                        tracing::debug!("browser sensor: {}", e.0);
                    }
                }
                tokio::select! {
                    c = changes.recv() => if let Err(tokio::sync::broadcast::error::RecvError::Closed) = c {
                        return;
                    },
                    _ = tokio::time::sleep(FOLLOW_RECHECK) => {}
                }
            }
        });
    }

    fn chromium(&self) -> (bool, Option<i32>) {
        match self.sup.status(&self.service) {
            Some(s) => (s.ready, s.pid),
            // No such service (a config without Chromium): try the address anyway.
            None => (true, None),
        }
    }

    /// The live session, opening one if needed; waits up to `wait` for Chromium (e.g.
    /// during a restart), then gives the reason.
    pub async fn session(&self, wait: Duration) -> Result<Arc<Session>, Unavailable> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut guard = match tokio::time::timeout_at(deadline, self.session.lock()).await {
            Ok(g) => g,
            Err(_) => return Err(Unavailable(format!("another request is connecting to Chromium; gave up after {wait:?}"))),
        };
        let mut last;
        loop {
            let (ready, pid) = self.chromium();
            // A live connection to the same Chromium is kept even while a readiness probe
            // fails (a slow answer under load): only a new pid or a closed socket ends it.
            if let Some(s) = guard.as_ref() {
                if s.usable(pid) {
                    return Ok(s.clone());
                }
            }
            if guard.take().is_some() {
                tracing::info!(service = %self.service, "browser sensor: Chromium went away; reconnecting when it is ready");
            }
            if !ready {
                last = format!("the {} service is not ready (restarting?)", self.service);
            } else {
                match tokio::time::timeout_at(deadline, self.connect(pid)).await {
                    Ok(Ok(s)) => {
                        let s = Arc::new(s);
                        *guard = Some(s.clone());
                        return Ok(s);
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = "connecting to Chromium timed out".into(),
                }
            }
            if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
                return Err(Unavailable(format!("browser unavailable after waiting {wait:?}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Opens the CDP session: the browser WebSocket from `/json/version`, the sensor's
    /// browser context (disposed by Chromium when the connection goes) and the watcher.
    async fn connect(&self, pid: Option<i32>) -> Result<Session, String> {
        let ws = cdp::browser_ws(&self.cdp).await?;
        let cdp = Cdp::connect(&ws, cdp::EVENT_BUFFER).await?;
        let p = CreateBrowserContextParams { dispose_on_detach: Some(true), ..Default::default() };
        let context = cdp.send(None, p).await.map_err(|e| format!("Target.createBrowserContext: {e}"))?.browser_context_id.inner().clone();
        watch::start(&cdp, self.events.clone(), context.clone()).await?;
        tracing::info!(cdp = %self.cdp, "browser sensor: connected, own browser context created");
        Ok(Session { cdp, context, pid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_captures_run_eight_wait_and_the_next_is_refused_until_a_slot_frees() {
        let slots = Arc::new(Slots::new(PARALLEL, QUEUE));
        let running: Vec<Slot> = futures_util::future::join_all((0..PARALLEL).map(|_| slots.take())).await.into_iter().map(Option::unwrap).collect();
        let mut waiting = Vec::new();
        for _ in 0..QUEUE {
            let s = slots.clone();
            waiting.push(tokio::spawn(async move { s.take().await.is_some() }));
        }
        // Every waiter is queued before the next one is refused.
        while slots.queued.load(Ordering::SeqCst) < QUEUE {
            tokio::task::yield_now().await;
        }
        assert!(slots.take().await.is_none(), "the 11th capture is refused");
        drop(running);
        for w in waiting {
            assert!(w.await.unwrap(), "a queued capture gets its slot once the running ones end");
        }
        assert_eq!(slots.queued.load(Ordering::SeqCst), 0);
        assert!(slots.take().await.is_some());
    }
}
