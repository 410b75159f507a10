//! The sensor's CDP client: chromiumoxide's [`Connection`] (the WebSocket, call ids, the
//! framing of commands and answers) and its typed command parameters, driven by one task
//! that hands each answer to its caller and every event to the subscribers.
//!
//! Why not chromiumoxide's `Browser`/`Page`/`Handler`: the handler parses every event of
//! every protocol domain into one generated enum (that alone made the binary 7 MB larger,
//! past the 10 MiB limit) and attaches to targets on its own terms. The sensor needs a
//! handful of events and one flat session per page, which this file and [`super::watch`]
//! give in a few hundred lines.

use chromiumoxide::cdp::browser_protocol::target::SessionId;
use chromiumoxide::types::{CallId, Command, EventMessage, Message, Method, MethodId};
use chromiumoxide::Connection;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Longest wait for the answer to one command.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered per subscriber of a long-lived connection; one that falls further
/// behind loses the oldest.
pub const EVENT_BUFFER: usize = 4096;
/// Timed-out calls whose answer never came are swept from the books past this many.
const PENDING_SWEEP: usize = 256;

/// One CDP event as it came: its method, the flat session it belongs to (none for the
/// browser's own), and its parameters, parsed on demand by whoever reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEvent {
    /// E.g. `Runtime.consoleAPICalled`.
    pub method: MethodId,
    /// The page session it came from (`None`: the browser session).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The event's parameters.
    #[serde(default)]
    pub params: Value,
}

impl Method for RawEvent {
    fn identifier(&self) -> MethodId {
        self.method.clone()
    }
}

impl EventMessage for RawEvent {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

/// Why a command got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CdpError {
    /// The WebSocket closed (Chromium exited or restarted).
    #[error("the CDP connection closed")]
    Closed,
    /// No answer within [`CALL_TIMEOUT`].
    #[error("{0}: no answer within {CALL_TIMEOUT:?}")]
    Timeout(MethodId),
    /// Chromium answered with an error, or with something that does not parse.
    #[error("{0}")]
    Protocol(String),
}

struct Call {
    method: MethodId,
    session: Option<String>,
    params: Value,
    reply: oneshot::Sender<Result<Value, CdpError>>,
}

/// A connection to Chromium's browser endpoint. Dropping the last handle closes it.
pub struct Cdp {
    calls: mpsc::Sender<Call>,
    /// Weak, so the event streams end (`RecvError::Closed`) when the driver does: a
    /// load then learns at once that the connection went, instead of timing out.
    events: broadcast::WeakSender<Arc<RawEvent>>,
    alive: Arc<AtomicBool>,
}

impl Cdp {
    /// Connects to `ws_url` (the `webSocketDebuggerUrl` of `/json/version`), buffering
    /// `event_buffer` events per subscriber.
    pub async fn connect(ws_url: &str, event_buffer: usize) -> Result<Arc<Cdp>, String> {
        let conn = Connection::<RawEvent>::connect(ws_url).await.map_err(|e| format!("CDP connect: {e}"))?;
        let (calls, rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(event_buffer.max(1));
        let alive = Arc::new(AtomicBool::new(true));
        let weak = events.downgrade();
        tokio::spawn(drive(conn, rx, events, alive.clone()));
        Ok(Arc::new(Cdp { calls, events: weak, alive }))
    }

    /// Whether the WebSocket is still up.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Every event from now on, of every session (a stream that is already closed when
    /// the connection is gone).
    pub fn events(&self) -> broadcast::Receiver<Arc<RawEvent>> {
        match self.events.upgrade() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Sends `cmd` (to `session`, or the browser) and parses its typed answer.
    pub async fn send<C: Command>(&self, session: Option<&str>, cmd: C) -> Result<C::Response, CdpError> {
        let method = cmd.identifier();
        let v = self.request(session, cmd).await?;
        C::response_from_value(v).map_err(|e| CdpError::Protocol(format!("{method}: unexpected answer: {e}")))
    }

    /// Sends `cmd` and gives its answer as JSON (for answers read only in part).
    pub async fn request<C: Command>(&self, session: Option<&str>, cmd: C) -> Result<Value, CdpError> {
        let method = cmd.identifier();
        let params = serde_json::to_value(&cmd).map_err(|e| CdpError::Protocol(format!("{method}: {e}")))?;
        let (reply, answer) = oneshot::channel();
        let call = Call { method: method.clone(), session: session.map(str::to_string), params, reply };
        self.calls.send(call).await.map_err(|_| CdpError::Closed)?;
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CdpError::Closed),
            Err(_) => Err(CdpError::Timeout(method)),
        }
    }
}

/// The browser's WebSocket address, from `/json/version` of the DevTools endpoint at
/// `base` (e.g. `http://127.0.0.1:9222`).
pub async fn browser_ws(base: &str) -> Result<String, String> {
    let version = crate::probe::http::get(&format!("{}/json/version", base.trim_end_matches('/')), &[], true).await.map_err(|e| format!("{base}: {e}"))?;
    if version.status != 200 {
        return Err(format!("{base}/json/version answered {}", version.status));
    }
    let v: Value = serde_json::from_slice(&version.body).map_err(|e| format!("/json/version: {e}"))?;
    v["webSocketDebuggerUrl"].as_str().map(str::to_string).ok_or_else(|| "/json/version has no webSocketDebuggerUrl".to_string())
}

/// Clears the `alive` flag however the driver ends (close, error, panic).
struct Down(Arc<AtomicBool>);

impl Drop for Down {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The one task that owns the WebSocket: queues commands, matches answers by call id,
/// broadcasts events. Ends when the socket closes or every [`Cdp`] handle is gone; the
/// callers still waiting then get [`CdpError::Closed`] (their reply senders drop).
async fn drive(mut conn: Connection<RawEvent>, mut calls: mpsc::Receiver<Call>, events: broadcast::Sender<Arc<RawEvent>>, alive: Arc<AtomicBool>) {
    let _down = Down(alive);
    let mut pending: HashMap<CallId, (MethodId, oneshot::Sender<Result<Value, CdpError>>)> = HashMap::new();
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(c) = call else { break };
                match conn.submit_command(c.method.clone(), c.session.map(SessionId::from), c.params) {
                    Ok(id) => {
                        if pending.len() >= PENDING_SWEEP {
                            // Callers that gave up (timeout, dropped request) wait no more.
                            pending.retain(|_, (_, reply)| !reply.is_closed());
                        }
                        pending.insert(id, (c.method, c.reply));
                    }
                    Err(e) => {
                        let _ = c.reply.send(Err(CdpError::Protocol(format!("{}: {e}", c.method))));
                    }
                }
            }
            msg = conn.next() => match msg {
                Some(Ok(Message::Response(r))) => {
                    if let Some((method, reply)) = pending.remove(&r.id) {
                        let answer = match (r.result, r.error) {
                            (_, Some(e)) => Err(CdpError::Protocol(format!("{method}: {} ({})", e.message, e.code))),
                            (v, None) => Ok(v.unwrap_or(Value::Null)),
                        };
                        let _ = reply.send(answer);
                    }
                }
                Some(Ok(Message::Event(e))) => {
                    let _ = events.send(Arc::new(e));
                }
                Some(Err(chromiumoxide::error::CdpError::Ws(e))) => {
                    tracing::info!("browser sensor: CDP connection ended: {e}");
                    break;
                }
                Some(Err(e)) => tracing::debug!("browser sensor: CDP message skipped: {e}"),
                None => {
                    tracing::info!("browser sensor: CDP connection closed");
                    break;
                }
            }
        }
    }
}
