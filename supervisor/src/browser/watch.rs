//! The event watcher: every page of the supervised Chromium — the agent's included, found
//! as the browser-level auto-attach reports them — feeds its console messages, uncaught
//! exceptions and failed requests into the `/browser/events` ring. The sensor's own pages
//! are left out: what they report is in the check's answer, and frequent checks would
//! otherwise push the agent's events out of the ring.

use super::cdp::{Cdp, RawEvent};
use super::events::{BrowserEvent, PageEvent, Requests};
use crate::sse::Ring;
use chromiumoxide::cdp::browser_protocol::{log, network, target};
use chromiumoxide::cdp::js_protocol::runtime;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast::error::RecvError;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct TargetInfo {
    target_id: String,
    r#type: String,
    browser_context_id: Option<String>,
}

/// `Target.attachedToTarget`, as far as the watcher reads it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Attach {
    session_id: String,
    target_info: TargetInfo,
}

impl Attach {
    /// A page attached to the browser session, or `None` for any other event.
    fn of(ev: &RawEvent) -> Option<Attach> {
        if ev.session_id.is_some() || ev.method != "Target.attachedToTarget" {
            return None;
        }
        Attach::deserialize(&ev.params).ok().filter(|a| a.target_info.r#type == "page")
    }
}

struct Watched {
    target: String,
    requests: Requests,
}

/// Starts the watcher of `cdp`'s pages (all but those of the sensor's `own_context`),
/// then turns on auto-attach so every current and future page reports to it.
pub(super) async fn start(cdp: &Arc<Cdp>, ring: Arc<Ring<BrowserEvent>>, own_context: String) -> Result<(), String> {
    // Subscribed before auto-attach is on, so no page's attach is missed.
    let rx = cdp.events();
    tokio::spawn(run(rx, Arc::downgrade(cdp), ring, own_context));
    let mut auto = target::SetAutoAttachParams::new(true, false);
    auto.flatten = Some(true);
    let pages = target::FilterEntry { r#type: Some("page".into()), ..Default::default() };
    auto.filter = Some(target::TargetFilter::new(vec![pages]));
    cdp.send(None, auto).await.map(|_| ()).map_err(|e| format!("Target.setAutoAttach: {e}"))
}

/// Turns on the domains whose events the sensor reads, in the page's session.
pub(super) async fn enable(cdp: &Cdp, session: &str) -> Result<(), super::cdp::CdpError> {
    let s = Some(session);
    let (r, n, l) = tokio::join!(
        cdp.send(s, runtime::EnableParams::default()),
        cdp.send(s, network::EnableParams::default()),
        cdp.send(s, log::EnableParams::default()),
    );
    r.and(n).and(l).map(|_| ())
}

async fn run(mut rx: tokio::sync::broadcast::Receiver<Arc<RawEvent>>, cdp: Weak<Cdp>, ring: Arc<Ring<BrowserEvent>>, own_context: String) {
    let mut pages: HashMap<String, Watched> = HashMap::new();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!("browser sensor: watcher fell {n} events behind");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        if let Some(a) = Attach::of(&ev) {
            if a.target_info.browser_context_id.as_deref() == Some(own_context.as_str()) {
                continue;
            }
            if let Some(cdp) = cdp.upgrade() {
                let session = a.session_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = enable(&cdp, &session).await {
                        tracing::debug!("browser sensor: page events not enabled: {e}");
                    }
                });
            }
            pages.insert(a.session_id, Watched { target: a.target_info.target_id, requests: Requests::default() });
            continue;
        }
        let Some(session) = ev.session_id.as_deref() else {
            if ev.method == "Target.detachedFromTarget" {
                if let Some(s) = ev.params["sessionId"].as_str() {
                    pages.remove(s);
                }
            }
            continue;
        };
        let Some(page) = pages.get_mut(session) else { continue };
        let Some(pe) = PageEvent::from_raw(&ev) else { continue };
        let (kind, mut v) = match pe {
            PageEvent::Console(v) => ("console", v),
            PageEvent::Exception(v) => ("exception", v),
            other => match page.requests.on(&other) {
                Some(v) => ("failed_request", v),
                None => continue,
            },
        };
        v["target"] = page.target.clone().into();
        ring.push(BrowserEvent { kind, data: Arc::from(v.to_string()) });
    }
}
