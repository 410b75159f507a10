//! The bridge between one long-lived agent process (ACP over stdio, one JSON-RPC message
//! per line) and the connection currently attached through the HTTP/WebSocket transport.
//!
//! - The agent's stdout is read line by line; a line that is not JSON is logged and
//!   dropped, never fatal. Everything else goes to the attached connection.
//! - The bridge sends its own `initialize` first: the agent is healthy once it answers.
//! - Requests from the client are remembered until answered; if the agent exits, each
//!   gets a JSON-RPC error, then the process exits so the supervisor restarts the service.
//! - One connection is attached at a time; a new one replaces the old (a client that
//!   reconnects without closing its old connection still gets the agent).

use agent_client_protocol::TransportFrame;
use futures_channel::mpsc as fmpsc;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// The id of the bridge's own `initialize` (never forwarded to clients).
const HEALTH_ID: &str = "supervisor-acp-health";

/// Shared state of the bridge.
pub struct Bridge {
    to_agent: mpsc::UnboundedSender<String>,
    attached: Mutex<Option<(u64, fmpsc::UnboundedSender<TransportFrame>)>>,
    pending: Mutex<HashMap<String, (u64, Value)>>,
    next_conn: AtomicU64,
    healthy: AtomicBool,
    /// The agent's pid.
    pub agent_pid: i32,
}

impl Bridge {
    /// A bridge writing agent-bound lines to `to_agent`.
    pub fn new(to_agent: mpsc::UnboundedSender<String>, agent_pid: i32) -> Self {
        Bridge {
            to_agent,
            attached: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            healthy: AtomicBool::new(false),
            agent_pid,
        }
    }

    /// Whether the agent answered the bridge's `initialize`.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Sends the bridge's own `initialize` (the health check).
    pub fn send_health_initialize(&self) {
        let msg = serde_json::json!({
            "jsonrpc": "2.0", "id": HEALTH_ID, "method": "initialize",
            "params": {"protocolVersion": 1, "clientCapabilities": {}, "clientInfo": {"name": "supervisor", "version": env!("CARGO_PKG_VERSION")}}
        });
        let _ = self.to_agent.send(msg.to_string());
    }

    /// Attaches a connection; frames from the agent go to `tx` from now on. Replaces
    /// (and so ends) any previously attached connection.
    pub fn attach(&self, tx: fmpsc::UnboundedSender<TransportFrame>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Some((old, _)) = self.attached.lock().expect("attached").replace((id, tx)) {
            tracing::info!(old, new = id, "a new connection replaces the attached one");
        }
        id
    }

    /// Detaches connection `id` if it is still the attached one.
    pub fn detach(&self, id: u64) {
        let mut a = self.attached.lock().expect("attached");
        if a.as_ref().is_some_and(|(cur, _)| *cur == id) {
            *a = None;
        }
        self.pending.lock().expect("pending").retain(|_, (c, _)| *c != id);
    }

    /// Forwards a frame from connection `conn` to the agent.
    pub fn from_client(&self, conn: u64, frame: TransportFrame) -> Result<(), String> {
        let line = frame.to_json().map_err(|e| e.to_string())?;
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v.get("method").is_some() && v.get("id").is_some_and(|id| !id.is_null()) {
                self.pending.lock().expect("pending").insert(v["id"].to_string(), (conn, v["id"].clone()));
            }
        }
        self.to_agent.send(line).map_err(|_| "the agent's stdin is closed".to_string())
    }

    /// Routes one line of the agent's stdout.
    pub fn from_agent(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            let shown: String = line.chars().take(120).collect();
            tracing::warn!("dropping a non-JSON line from the agent's stdout: {shown:?}");
            return;
        };
        let is_response = v.get("method").is_none();
        if is_response {
            if v["id"] == HEALTH_ID {
                if v.get("result").is_some() {
                    tracing::info!(pid = self.agent_pid, "agent answered initialize: healthy");
                    self.healthy.store(true, Ordering::SeqCst);
                } else {
                    tracing::error!("agent refused initialize: {}", v["error"]);
                }
                return;
            }
            self.pending.lock().expect("pending").remove(&v["id"].to_string());
        }
        self.to_attached(TransportFrame::parse_json(line));
    }

    fn to_attached(&self, frame: TransportFrame) {
        let a = self.attached.lock().expect("attached");
        match a.as_ref() {
            Some((_, tx)) => {
                let _ = tx.unbounded_send(frame);
            }
            None => tracing::debug!("no client attached; dropping a message from the agent"),
        }
    }

    /// The agent exited: every unanswered request of the attached connection gets an
    /// error. Returns how many.
    pub fn fail_pending(&self, why: &str) -> usize {
        let pending: Vec<(u64, Value)> = self.pending.lock().expect("pending").drain().map(|(_, v)| v).collect();
        let current = self.attached.lock().expect("attached").as_ref().map(|(id, _)| *id);
        let mut n = 0;
        for (conn, id) in pending {
            if Some(conn) != current {
                continue;
            }
            let err = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": why}});
            self.to_attached(TransportFrame::parse_json(&err.to_string()));
            n += 1;
        }
        n
    }
}
