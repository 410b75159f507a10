//! Loading the app in a page of the sensor's own browser context: the viewport, the
//! navigation, a bounded network-quiet settle, and what the page reported meanwhile
//! (document status, console, exceptions, failed requests, Vite's error overlay).

use super::cdp::{Cdp, CdpError, RawEvent};
use super::events::{clip, PageEvent, Requests};
use super::Session;
use chromiumoxide::cdp::browser_protocol::{emulation, page, target};
use chromiumoxide::cdp::js_protocol::runtime;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};

/// Longest wait for the page's `load` event.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// The network counts as quiet after this long without a request in flight.
pub const QUIET: Duration = Duration::from_millis(500);
/// Longest settle after `load` (a page that polls forever is captured anyway).
pub const SETTLE_MAX: Duration = Duration::from_secs(3);
/// Longest wait for a new page to be attached and set up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a failed module load may take to show Vite's overlay.
const OVERLAY_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for one evaluation in the page (the overlay, the title).
const EVAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries kept per list in a check answer.
const MAX_ENTRIES: usize = 100;

/// Why a load failed: the connection went (worth one retry on a new one), or something else.
#[derive(Debug)]
pub enum LoadError {
    /// The CDP connection closed under the load (Chromium exited).
    Closed,
    /// Anything else, with the reason.
    Other(String),
}

impl LoadError {
    fn at(what: &str, e: CdpError) -> LoadError {
        match e {
            CdpError::Closed => LoadError::Closed,
            e => LoadError::Other(format!("{what}: {e}")),
        }
    }
}

/// A page of the sensor's context; closed (in the background) however the request ends.
pub struct OwnPage {
    cdp: Arc<Cdp>,
    target: String,
    /// The page's flat session.
    pub session: String,
}

impl OwnPage {
    /// Sends `cmd` to the page.
    pub async fn send<C: chromiumoxide::types::Command>(&self, cmd: C) -> Result<C::Response, CdpError> {
        self.cdp.send(Some(&self.session), cmd).await
    }

    /// Evaluates `js` in the page; its value if it returned a string within
    /// [`EVAL_TIMEOUT`] (a page stuck in a loop answers nothing).
    pub async fn eval_string(&self, js: &str) -> Option<String> {
        let mut p = runtime::EvaluateParams::new(js);
        p.return_by_value = Some(true);
        let v = tokio::time::timeout(EVAL_TIMEOUT, self.cdp.request(Some(&self.session), p)).await.ok()?.ok()?;
        v["result"]["value"].as_str().map(str::to_string)
    }
}

impl Drop for OwnPage {
    fn drop(&mut self) {
        let (cdp, id) = (self.cdp.clone(), self.target.clone());
        tokio::spawn(async move {
            let _ = cdp.send(None, target::CloseTargetParams::new(id)).await;
        });
    }
}

/// What loading the app showed.
pub struct Loaded {
    /// The page, still open (for a screenshot).
    pub page: OwnPage,
    /// HTTP status of the main document.
    pub status: Option<i64>,
    /// From navigation start to `load`.
    pub load_ms: u64,
    /// Why the navigation failed, if it did (network error, timeout).
    pub error: Option<String>,
    /// `console.*` calls and browser log entries.
    pub console: Vec<Value>,
    /// Uncaught exceptions.
    pub exceptions: Vec<Value>,
    /// Network errors and responses ≥ 400.
    pub failed_requests: Vec<Value>,
}

/// The page's events from `rx`, until `until`; `None` when the time is up.
async fn next_of(rx: &mut broadcast::Receiver<Arc<RawEvent>>, session: &str, until: tokio::time::Instant) -> Result<Option<PageEvent>, LoadError> {
    loop {
        let ev = match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => return Ok(None),
            Ok(Ok(ev)) => ev,
            Ok(Err(RecvError::Lagged(n))) => {
                tracing::debug!("browser sensor: a load fell {n} events behind");
                continue;
            }
            Ok(Err(RecvError::Closed)) => return Err(LoadError::Closed),
        };
        if ev.session_id.as_deref() == Some(session) {
            if let Some(pe) = PageEvent::from_raw(&ev) {
                return Ok(Some(pe));
            }
        }
    }
}

/// Creates a blank page of the sensor's context. Run as a task of its own, so a request
/// dropped while Chromium creates the page (a timeout, a client gone) still closes it.
async fn create(sess: &Session, hidden: bool) -> Result<OwnPage, LoadError> {
    let mut p = target::CreateTargetParams::new("about:blank");
    p.browser_context_id = Some(sess.context.clone().into());
    p.background = Some(true);
    // Hidden: a page with no tab, which other CDP clients (the agent's Playwright MCP,
    // whose `connectOverCDP` adopts every page of a context it does not know) never see.
    // It cannot paint, so screenshots use a background tab, seen by them while it lives.
    p.hidden = Some(hidden);
    // No width/height here: Chromium refuses a size for a tab that joins an existing window
    // ("Target position can only be set for new windows"); the viewport is emulated.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cdp = sess.cdp.clone();
    tokio::spawn(async move {
        let r = cdp.send(None, p).await.map(|t| OwnPage { cdp: cdp.clone(), target: t.target_id.inner().clone(), session: String::new() });
        // When nobody waits any more the page comes back here and is dropped: closed.
        let _ = tx.send(r);
    });
    match rx.await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => Err(LoadError::at("Target.createTarget", e)),
        Err(_) => Err(LoadError::Closed),
    }
}

/// Opens a blank page of the sensor's context with a `width`×`height` viewport, attached
/// in a flat session of its own with the events the load reads turned on.
async fn open(sess: &Session, width: u32, height: u32, hidden: bool) -> Result<OwnPage, LoadError> {
    let mut page = create(sess, hidden).await?;
    let attach = target::AttachToTargetParams { target_id: page.target.clone().into(), flatten: Some(true) };
    page.session = sess.cdp.send(None, attach).await.map_err(|e| LoadError::at("Target.attachToTarget", e))?.session_id.inner().clone();
    let s = Some(page.session.as_str());
    let metrics = emulation::SetDeviceMetricsOverrideParams::new(width as i64, height as i64, 1.0, false);
    let (a, b, c, d) = tokio::join!(
        super::watch::enable(&sess.cdp, &page.session),
        sess.cdp.send(s, page::EnableParams::default()),
        sess.cdp.send(s, page::SetLifecycleEventsEnabledParams::new(true)),
        sess.cdp.send(s, metrics),
    );
    a.map_err(|e| LoadError::at("enabling the page's events", e))?;
    b.map_err(|e| LoadError::at("Page.enable", e))?;
    c.map_err(|e| LoadError::at("Page.setLifecycleEventsEnabled", e))?;
    d.map_err(|e| LoadError::at("setting the viewport", e))?;
    Ok(page)
}

/// Opens a page of the sensor's context with a `width`×`height` viewport (`hidden`: one
/// no other CDP client sees, which cannot be captured), loads `url`, waits for `load` and
/// a quiet network (bounded), collecting what the page reports.
pub async fn load(sess: &Session, url: &str, width: u32, height: u32, hidden: bool) -> Result<Loaded, LoadError> {
    // Subscribed first: every event of the page's session, from its attach on, is read.
    let mut rx = sess.cdp.events();
    let page = tokio::time::timeout(OPEN_TIMEOUT, open(sess, width, height, hidden))
        .await
        .map_err(|_| LoadError::Other("opening a page timed out".into()))??;
    let session = page.session.clone();
    let mut l = Loaded { page, status: None, load_ms: 0, error: None, console: vec![], exceptions: vec![], failed_requests: vec![] };
    let mut req = Requests::default();
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
    // Events that arrive while the navigation is sent are kept in `rx` and read below.
    let nav = match tokio::time::timeout_at(deadline, l.page.send(page::NavigateParams::new(url))).await {
        Err(_) => return Ok(l.failed(t0, format!("no answer to the navigation within {LOAD_TIMEOUT:?}"))),
        Ok(r) => r.map_err(|e| LoadError::at("Page.navigate", e))?,
    };
    if let Some(e) = nav.error_text.filter(|e| !e.is_empty()) {
        return Ok(l.failed(t0, format!("navigation failed: {e}")));
    }
    let (frame, loader) = (nav.frame_id.inner().clone(), nav.loader_id.map(|l| l.inner().clone()));
    // Until the navigation's `load`: events of the page, the document's status among them.
    let mut loaded = false;
    while !loaded {
        let Some(ev) = next_of(&mut rx, &session, deadline).await? else {
            l.error = Some(format!("no load event within {LOAD_TIMEOUT:?}"));
            break;
        };
        match &ev {
            PageEvent::Lifecycle { loader: id, name } => loaded = name == "load" && loader.as_ref().is_none_or(|l| l == id),
            PageEvent::Response { status, document: Some(f), .. } if *f == frame && l.status.is_none() => l.status = Some(*status),
            _ => {}
        }
        l.add(&mut req, ev);
    }
    l.load_ms = t0.elapsed().as_millis() as u64;
    // Then until the network has been quiet for a moment (bounded).
    let settle_end = tokio::time::Instant::now() + SETTLE_MAX;
    let mut quiet_since: Option<tokio::time::Instant> = None;
    if loaded {
        loop {
            let now = tokio::time::Instant::now();
            quiet_since = if req.quiet() { Some(quiet_since.unwrap_or(now)) } else { None };
            let until = quiet_since.map_or(settle_end, |q| (q + QUIET).min(settle_end));
            match next_of(&mut rx, &session, until).await? {
                Some(ev) => l.add(&mut req, ev),
                None => break,
            }
        }
    }
    Ok(l)
}

impl Loaded {
    fn failed(mut self, t0: Instant, why: String) -> Loaded {
        self.load_ms = t0.elapsed().as_millis() as u64;
        self.error = Some(why);
        self
    }

    fn add(&mut self, req: &mut Requests, ev: PageEvent) {
        if let PageEvent::Dialog(_) = &ev {
            // A dialog blocks the page (no `load`, no answer to an evaluation): accept it.
            let (cdp, session) = (self.page.cdp.clone(), self.page.session.clone());
            tokio::spawn(async move {
                let _ = cdp.send(Some(&session), page::HandleJavaScriptDialogParams::new(true)).await;
            });
        }
        let favicon = |v: &Value| v["url"].as_str().is_some_and(|u| u.split(['?', '#']).next().is_some_and(|p| p.ends_with("/favicon.ico")));
        let (list, v) = match ev {
            PageEvent::Console(v) | PageEvent::Dialog(v) => (&mut self.console, v),
            PageEvent::Exception(v) => (&mut self.exceptions, v),
            other => match req.on(&other) {
                Some(v) => (&mut self.failed_requests, v),
                None => return,
            },
        };
        // The browser asks for /favicon.ico by itself; an app without one still renders.
        if favicon(&v) {
            return;
        }
        if list.len() < MAX_ENTRIES {
            list.push(v);
        }
    }

    /// Vite's error overlay (`vite-error-overlay`): `{"message","file"}`, or null. A module
    /// that failed to load gets a moment for the overlay to arrive over the HMR socket.
    pub async fn vite_error(&self) -> Value {
        const JS: &str = r#"(() => { const o = document.querySelector('vite-error-overlay'); if (!o) return null;
            const r = o.shadowRoot; const t = (s) => { const e = r && r.querySelector(s); return e ? e.textContent.trim() : ''; };
            return JSON.stringify({ message: t('.message-body') || t('.message'), file: t('.file') }); })()"#;
        let module_failed = self.failed_requests.iter().any(|f| f["status"].as_i64().is_some_and(|s| s >= 500));
        let end = Instant::now() + if module_failed { OVERLAY_WAIT } else { Duration::ZERO };
        loop {
            if let Some(s) = self.page.eval_string(JS).await {
                let mut o: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
                if let Some(m) = o.get("message").and_then(Value::as_str).map(clip) {
                    o["message"] = Value::String(m);
                }
                return o;
            }
            if Instant::now() >= end {
                return Value::Null;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The document's title.
    pub async fn title(&self) -> String {
        self.page.eval_string("document.title").await.map(|t| clip(&t)).unwrap_or_default()
    }
}
