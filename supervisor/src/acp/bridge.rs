//! The bridge between one long-lived agent process (ACP over stdio, one JSON-RPC message
//! per line) and any number of transport connections attached at once (SPEC §6).
//!
//! Routing, so that no connection ever sees another's traffic:
//! - Every request a client sends gets a fresh bridge id (a `u64` counter) before it goes
//!   to the agent; the bridge remembers `bridge id → (connection, original id)`. The agent
//!   therefore only ever sees ids the bridge allocated, so ids of different connections
//!   cannot collide and no client can forge the id of the bridge's own `initialize`.
//!   The answer gets its original id back and goes to that connection only; if the
//!   connection is gone, it is dropped. `$/cancel_request` is translated the same way.
//! - Requests and notifications from the agent (`session/update`,
//!   `session/request_permission`, `fs/*`, ...) go to the connection that owns the
//!   session named in `params.sessionId`, else to the most recently attached connection.
//!   A connection owns a session once it created or loaded it, or sent any request naming
//!   it (a client that reconnects takes its session with it). The agent's ids are kept;
//!   the answer is accepted only from the connection the request went to.
//! - Several connections may be attached at once (at most [`MAX_CONNECTIONS`]); a new
//!   one does not end an older one.
//!
//! Bounds: frames are at most [`MAX_FRAME`] bytes both ways; at most
//! [`MAX_PENDING_PER_CONNECTION`] unanswered requests per connection; each connection's
//! queue holds [`CONNECTION_QUEUE`] frames. When it is full the agent's stdout reader waits
//! (back-pressure up to the agent) for at most [`SLOW_CLIENT_TIMEOUT`], then that
//! connection is dropped: one slow client can stall the others for that long, never longer.

use agent_client_protocol::TransportFrame;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// The largest JSON-RPC frame the bridge passes, either way (the official transport caps
/// an HTTP POST body at the same size).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Connections attached at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Unanswered requests per connection; beyond, requests are refused with an error.
pub const MAX_PENDING_PER_CONNECTION: usize = 1024;
/// Frames queued from the agent to one connection.
pub const CONNECTION_QUEUE: usize = 64;
/// How long the agent's output may wait for one connection's full queue.
pub const SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions whose owner is remembered.
const MAX_SESSIONS: usize = 4096;
/// Methods whose success makes the sender the owner of the session.
const SESSION_OPENERS: &[&str] = &["session/new", "session/load", "session/resume", "session/fork"];

/// Who is waiting for the agent's answer to a bridge id.
struct Pending {
    /// `None`: the bridge's own `initialize`.
    conn: Option<u64>,
    id: Value,
    method: String,
    session: Option<String>,
}

#[derive(Default)]
struct State {
    /// Attached connections in attach order (the last is the most recent).
    conns: BTreeMap<u64, mpsc::Sender<TransportFrame>>,
    next_conn: u64,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Agent request id (as JSON text) → the connection it went to.
    agent_requests: HashMap<String, u64>,
    sessions: HashMap<String, u64>,
}

/// Shared state of the bridge.
pub struct Bridge {
    to_agent: mpsc::Sender<String>,
    state: Mutex<State>,
    healthy: AtomicBool,
    exited: AtomicBool,
    /// The agent's pid.
    pub agent_pid: i32,
}

fn error_frame(id: Value, code: i64, message: &str) -> TransportFrame {
    TransportFrame::parse_json(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string())
}

fn session_of(v: &Value) -> Option<String> {
    v["params"]["sessionId"].as_str().map(str::to_string)
}

impl Bridge {
    /// A bridge writing agent-bound lines to `to_agent`.
    pub fn new(to_agent: mpsc::Sender<String>, agent_pid: i32) -> Self {
        Bridge { to_agent, state: Mutex::new(State { next_conn: 1, next_id: 1, ..State::default() }), healthy: AtomicBool::new(false), exited: AtomicBool::new(false), agent_pid }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the agent answered the bridge's `initialize` and its process still runs.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst) && !self.exited.load(Ordering::SeqCst)
    }

    /// Whether the agent process has exited.
    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }

    /// Sends the bridge's own `initialize` (the health check) under a bridge id.
    pub fn send_health_initialize(&self) {
        let id = {
            let mut s = self.state();
            let id = s.next_id;
            s.next_id += 1;
            s.pending.insert(id, Pending { conn: None, id: Value::Null, method: "initialize".into(), session: None });
            id
        };
        let msg = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {"protocolVersion": 1, "clientCapabilities": {}, "clientInfo": {"name": "supervisor", "version": env!("CARGO_PKG_VERSION")}}
        });
        let _ = self.to_agent.try_send(msg.to_string());
    }

    /// Attaches a connection; the agent's frames for it go to `tx`. `None` when
    /// [`MAX_CONNECTIONS`] are attached or the agent has exited.
    pub fn attach(&self, tx: mpsc::Sender<TransportFrame>) -> Option<u64> {
        let mut s = self.state();
        if s.conns.len() >= MAX_CONNECTIONS || self.exited.load(Ordering::SeqCst) {
            return None;
        }
        let id = s.next_conn;
        s.next_conn += 1;
        s.conns.insert(id, tx);
        Some(id)
    }

    /// Detaches connection `conn`: its pending answers will be dropped, its sessions fall
    /// back to the most recent connection, and the agent's requests to it get an error.
    pub fn detach(&self, conn: u64) {
        let orphaned: Vec<String> = {
            let mut s = self.state();
            s.conns.remove(&conn);
            s.pending.retain(|_, p| p.conn != Some(conn));
            // Its sessions stay known, as orphans, until a client claims them again.
            let ids: Vec<String> = s.agent_requests.iter().filter(|(_, c)| **c == conn).map(|(id, _)| id.clone()).collect();
            for id in &ids {
                s.agent_requests.remove(id);
            }
            ids
        };
        for id in orphaned {
            let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
            let err = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "the client connection closed"}});
            if self.to_agent.try_send(err.to_string()).is_err() {
                tracing::warn!(connection = conn, "could not tell the agent that a connection with its request closed");
            }
        }
    }

    /// Forwards a frame from connection `conn` to the agent (waiting while the agent's
    /// stdin queue is full). `Err` when the agent's stdin is closed.
    pub async fn from_client(&self, conn: u64, frame: TransportFrame) -> Result<(), String> {
        let line = match frame.to_json() {
            Ok(l) => l,
            Err(e) => return self.reply(conn, error_frame(Value::Null, -32600, &format!("invalid request: {e}"))).await,
        };
        let v = match serde_json::from_str::<Value>(&line) {
            Ok(v @ Value::Object(_)) if matches!(frame, TransportFrame::Single(_)) => v,
            Ok(v) => return self.reply(conn, error_frame(v.get("id").cloned().unwrap_or(Value::Null), -32600, "invalid request")).await,
            Err(_) => return self.reply(conn, error_frame(Value::Null, -32700, "parse error")).await,
        };
        if line.len() > MAX_FRAME {
            tracing::warn!(connection = conn, bytes = line.len(), "refusing a client frame larger than {MAX_FRAME} bytes");
            if v.get("method").is_some() && v.get("id").is_some_and(|id| !id.is_null()) {
                return self.reply(conn, error_frame(v["id"].clone(), -32600, &format!("request larger than {MAX_FRAME} bytes"))).await;
            }
            return Ok(());
        }
        let Some(out) = self.translate_from_client(conn, v) else { return Ok(()) };
        self.to_agent.send(out).await.map_err(|_| "the agent's stdin is closed".to_string())
    }

    /// Rewrites a client message for the agent; `None`: nothing to forward.
    fn translate_from_client(&self, conn: u64, mut v: Value) -> Option<String> {
        let mut s = self.state();
        let method = v.get("method").and_then(Value::as_str).map(str::to_string);
        let id = v.get("id").cloned().filter(|id| !id.is_null());
        match (method, id) {
            (Some(method), Some(id)) => {
                if s.pending.values().filter(|p| p.conn == Some(conn)).count() >= MAX_PENDING_PER_CONNECTION {
                    drop(s);
                    self.reply_now(conn, error_frame(id, -32603, &format!("more than {MAX_PENDING_PER_CONNECTION} requests in flight")));
                    return None;
                }
                let session = session_of(&v);
                if let Some(sid) = &session {
                    claim(&mut s, sid, conn);
                }
                let bid = s.next_id;
                s.next_id += 1;
                s.pending.insert(bid, Pending { conn: Some(conn), id, method, session });
                v["id"] = json!(bid);
            }
            (Some(method), None) => {
                if method == "$/cancel_request" {
                    let target = v["params"]["requestId"].clone();
                    let bid = s.pending.iter().find(|(_, p)| p.conn == Some(conn) && p.id == target).map(|(b, _)| *b)?;
                    v["params"]["requestId"] = json!(bid);
                }
            }
            (None, Some(id)) => {
                // An answer to one of the agent's requests: only from the connection it went to.
                let key = id.to_string();
                if s.agent_requests.get(&key) != Some(&conn) {
                    tracing::warn!(connection = conn, "dropping an answer to an agent request this connection was not sent");
                    return None;
                }
                s.agent_requests.remove(&key);
            }
            (None, None) => return None,
        }
        Some(v.to_string())
    }

    /// Routes one line of the agent's stdout (waits while the target's queue is full).
    pub async fn from_agent(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(line) else {
            let shown: String = line.chars().take(120).collect();
            tracing::warn!("dropping a non-JSON line from the agent's stdout: {shown:?}");
            return;
        };
        let target = {
            let mut s = self.state();
            if v.get("method").is_none() {
                let Some(p) = v.get("id").and_then(Value::as_u64).and_then(|bid| s.pending.remove(&bid)) else {
                    tracing::debug!("dropping an answer whose request is gone (or was never sent)");
                    return;
                };
                let Some(conn) = p.conn else {
                    drop(s);
                    self.health_answer(&v);
                    return;
                };
                if v.get("result").is_some() && SESSION_OPENERS.contains(&p.method.as_str()) {
                    if let Some(sid) = v["result"]["sessionId"].as_str().map(str::to_string).or(p.session) {
                        claim(&mut s, &sid, conn);
                    }
                }
                v["id"] = p.id;
                s.conns.get(&conn).map(|tx| (conn, tx.clone()))
            } else {
                let cancel_of = (v["method"] == "$/cancel_request").then(|| s.agent_requests.get(&v["params"]["requestId"].to_string()).copied()).flatten();
                let known = session_of(&v).and_then(|sid| s.sessions.get(&sid).copied());
                let owner = cancel_of.or(known).filter(|c| s.conns.contains_key(c));
                // A session whose owner has gone is nobody else's: its traffic is not handed
                // to another client (that would leak one client's agent output to another).
                let target = match (cancel_of, known) {
                    (None, Some(_)) => owner,
                    _ => owner.or_else(|| s.conns.keys().next_back().copied()),
                };
                let id = v.get("id").cloned().filter(|id| !id.is_null());
                match (target, id) {
                    (Some(conn), Some(id)) => {
                        s.agent_requests.insert(id.to_string(), conn);
                    }
                    (None, Some(id)) => {
                        drop(s);
                        let err = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "no client is connected"}});
                        let _ = self.to_agent.try_send(err.to_string());
                        return;
                    }
                    _ => {}
                }
                target.and_then(|c| s.conns.get(&c).map(|tx| (c, tx.clone())))
            }
        };
        let Some((conn, tx)) = target else {
            tracing::debug!("no client for a message from the agent; dropped");
            return;
        };
        let frame = TransportFrame::parse_json(&v.to_string());
        match tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(frame)) => {
                if tx.send_timeout(frame, SLOW_CLIENT_TIMEOUT).await.is_err() {
                    tracing::warn!(connection = conn, "a client did not read for {SLOW_CLIENT_TIMEOUT:?}: dropping its connection");
                    self.detach(conn);
                }
            }
        }
    }

    fn health_answer(&self, v: &Value) {
        if v.get("result").is_some() {
            tracing::info!(pid = self.agent_pid, "agent answered initialize: healthy");
            self.healthy.store(true, Ordering::SeqCst);
        } else {
            tracing::error!("agent refused initialize: {}", v["error"]);
        }
    }

    /// An answer of the bridge itself to connection `conn`.
    async fn reply(&self, conn: u64, frame: TransportFrame) -> Result<(), String> {
        let tx = self.state().conns.get(&conn).cloned();
        if let Some(tx) = tx {
            let _ = tx.send_timeout(frame, SLOW_CLIENT_TIMEOUT).await;
        }
        Ok(())
    }

    fn reply_now(&self, conn: u64, frame: TransportFrame) {
        if let Some(tx) = self.state().conns.get(&conn) {
            let _ = tx.try_send(frame);
        }
    }

    /// The agent process exited: not healthy from now on; every unanswered request of an
    /// attached connection gets a JSON-RPC error. Returns how many.
    pub fn agent_exited(&self, why: &str) -> usize {
        self.exited.store(true, Ordering::SeqCst);
        let mut s = self.state();
        let pending: Vec<Pending> = s.pending.drain().map(|(_, p)| p).collect();
        let mut n = 0;
        for p in pending {
            if let Some(tx) = p.conn.and_then(|c| s.conns.get(&c)) {
                if tx.try_send(error_frame(p.id, -32603, why)).is_ok() {
                    n += 1;
                }
            }
        }
        s.agent_requests.clear();
        n
    }

    /// How many connections are attached.
    pub fn connections(&self) -> usize {
        self.state().conns.len()
    }
}

/// `conn` owns `sid` from now on (bounded: beyond [`MAX_SESSIONS`], new sessions are not
/// remembered and their messages go to the most recent connection).
fn claim(s: &mut State, sid: &str, conn: u64) {
    if s.sessions.len() >= MAX_SESSIONS && !s.sessions.contains_key(sid) {
        let conns = &s.conns;
        s.sessions.retain(|_, c| conns.contains_key(c));
    }
    if s.sessions.len() < MAX_SESSIONS || s.sessions.contains_key(sid) {
        s.sessions.insert(sid.to_string(), conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: Value) -> TransportFrame {
        TransportFrame::parse_json(&v.to_string())
    }

    fn val(f: TransportFrame) -> Value {
        serde_json::from_str(&f.to_json().unwrap()).unwrap()
    }

    struct T {
        b: Bridge,
        agent: mpsc::Receiver<String>,
    }

    impl T {
        fn new() -> T {
            let (tx, agent) = mpsc::channel(64);
            T { b: Bridge::new(tx, 1), agent }
        }
        fn conn(&self) -> (u64, mpsc::Receiver<TransportFrame>) {
            let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
            (self.b.attach(tx).unwrap(), rx)
        }
        fn sent(&mut self) -> Value {
            serde_json::from_str(&self.agent.try_recv().unwrap()).unwrap()
        }
    }

    #[tokio::test]
    async fn colliding_ids_of_two_connections_are_rewritten_and_answered_to_their_sender() {
        let mut t = T::new();
        t.b.send_health_initialize();
        let health = t.sent();
        let (a, mut ra) = t.conn();
        let (b, mut rb) = t.conn();
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": 1, "method": "x/a"}))).await.unwrap();
        t.b.from_client(b, frame(json!({"jsonrpc": "2.0", "id": 1, "method": "x/b"}))).await.unwrap();
        // A client sending the id the bridge used for its own initialize does not reach it.
        t.b.from_client(b, frame(json!({"jsonrpc": "2.0", "id": health["id"], "method": "x/forged"}))).await.unwrap();
        let (fa, fb, forged) = (t.sent(), t.sent(), t.sent());
        let ids = [&health["id"], &fa["id"], &fb["id"], &forged["id"]];
        for (i, x) in ids.iter().enumerate() {
            for y in &ids[i + 1..] {
                assert_ne!(x, y, "every id the agent sees is unique");
            }
        }
        // Answer B first, then A, then the forged one: each goes to its sender, with its id.
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": fb["id"], "result": {"who": "b"}}).to_string()).await;
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": fa["id"], "result": {"who": "a"}}).to_string()).await;
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": forged["id"], "result": {"who": "forged"}}).to_string()).await;
        assert_eq!(val(ra.try_recv().unwrap()), json!({"jsonrpc": "2.0", "id": 1, "result": {"who": "a"}}));
        assert_eq!(val(rb.try_recv().unwrap()), json!({"jsonrpc": "2.0", "id": 1, "result": {"who": "b"}}));
        assert_eq!(val(rb.try_recv().unwrap())["result"]["who"], "forged");
        assert!(ra.try_recv().is_err() && rb.try_recv().is_err());
        assert!(!t.b.healthy(), "the forged id's answer is not the health answer");
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": health["id"], "result": {}}).to_string()).await;
        assert!(t.b.healthy());
        assert!(ra.try_recv().is_err() && rb.try_recv().is_err(), "the health answer reaches no client");
    }

    #[tokio::test]
    async fn answers_for_a_closed_connection_are_dropped_not_given_to_a_newer_one() {
        let mut t = T::new();
        let (a, _ra) = t.conn();
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": 7, "method": "x"}))).await.unwrap();
        let fa = t.sent();
        t.b.detach(a);
        let (b, mut rb) = t.conn();
        t.b.from_client(b, frame(json!({"jsonrpc": "2.0", "id": 7, "method": "x"}))).await.unwrap();
        let fb = t.sent();
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": fa["id"], "result": "old"}).to_string()).await;
        assert!(rb.try_recv().is_err(), "the old connection's answer must not reach the new one");
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": fb["id"], "result": "new"}).to_string()).await;
        assert_eq!(val(rb.try_recv().unwrap())["result"], "new");
    }

    #[tokio::test]
    async fn agent_messages_follow_the_session_owner_and_answers_only_come_from_it() {
        let mut t = T::new();
        let (a, mut ra) = t.conn();
        let (b, mut rb) = t.conn();
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": 1, "method": "session/new", "params": {"cwd": "/"}}))).await.unwrap();
        let f = t.sent();
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": f["id"], "result": {"sessionId": "S"}}).to_string()).await;
        assert_eq!(val(ra.try_recv().unwrap())["result"]["sessionId"], "S");
        // An update and a permission request for S go to A, although B attached later.
        t.b.from_agent(&json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "S"}}).to_string()).await;
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": 0, "method": "session/request_permission", "params": {"sessionId": "S"}}).to_string()).await;
        assert_eq!(val(ra.try_recv().unwrap())["method"], "session/update");
        assert_eq!(val(ra.try_recv().unwrap())["id"], 0);
        assert!(rb.try_recv().is_err());
        // Without a known session: the most recent connection.
        t.b.from_agent(&json!({"jsonrpc": "2.0", "method": "x/note", "params": {}}).to_string()).await;
        assert_eq!(val(rb.try_recv().unwrap())["method"], "x/note");
        // B cannot answer A's permission request; A can, with the agent's id.
        t.b.from_client(b, frame(json!({"jsonrpc": "2.0", "id": 0, "result": {"outcome": "b"}}))).await.unwrap();
        assert!(t.agent.try_recv().is_err());
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": 0, "result": {"outcome": "a"}}))).await.unwrap();
        assert_eq!(t.sent(), json!({"jsonrpc": "2.0", "id": 0, "result": {"outcome": "a"}}));
        // A detaching with an agent request outstanding: the agent gets an error for it.
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": 5, "method": "fs/read_text_file", "params": {"sessionId": "S"}}).to_string()).await;
        t.b.detach(a);
        assert_eq!(t.sent()["error"]["message"], "the client connection closed");
        // S's owner is gone: its traffic is not handed to B, and a request of it is refused.
        t.b.from_agent(&json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "S"}}).to_string()).await;
        assert!(rb.try_recv().is_err(), "another client's session output must not reach B");
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": 6, "method": "fs/read_text_file", "params": {"sessionId": "S"}}).to_string()).await;
        assert_eq!(t.sent()["error"]["message"], "no client is connected");
        // Until B claims S (e.g. session/load): then it is B's.
        t.b.from_client(b, frame(json!({"jsonrpc": "2.0", "id": 7, "method": "session/prompt", "params": {"sessionId": "S"}}))).await.unwrap();
        let _ = t.sent();
        t.b.from_agent(&json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "S"}}).to_string()).await;
        assert_eq!(val(rb.try_recv().unwrap())["params"]["sessionId"], "S");
    }

    #[tokio::test]
    async fn cancel_request_is_translated_to_the_bridge_id() {
        let mut t = T::new();
        let (a, _ra) = t.conn();
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": "p", "method": "session/prompt", "params": {"sessionId": "S"}}))).await.unwrap();
        let f = t.sent();
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "method": "$/cancel_request", "params": {"requestId": "p"}}))).await.unwrap();
        assert_eq!(t.sent()["params"]["requestId"], f["id"]);
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "method": "$/cancel_request", "params": {"requestId": "unknown"}}))).await.unwrap();
        assert!(t.agent.try_recv().is_err(), "cancelling an id this connection never sent is dropped");
    }

    #[tokio::test]
    async fn agent_exit_fails_pending_requests_and_health() {
        let mut t = T::new();
        t.b.send_health_initialize();
        let h = t.sent();
        t.b.from_agent(&json!({"jsonrpc": "2.0", "id": h["id"], "result": {}}).to_string()).await;
        assert!(t.b.healthy());
        let (a, mut ra) = t.conn();
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": 3, "method": "session/prompt"}))).await.unwrap();
        assert_eq!(t.b.agent_exited("the agent process exited"), 1);
        assert!(!t.b.healthy());
        let e = val(ra.try_recv().unwrap());
        assert_eq!((e["id"].clone(), e["error"]["message"].clone()), (json!(3), json!("the agent process exited")));
    }

    #[tokio::test]
    async fn oversize_and_malformed_client_frames_are_answered_not_forwarded() {
        let mut t = T::new();
        let (a, mut ra) = t.conn();
        let big = "x".repeat(MAX_FRAME);
        t.b.from_client(a, frame(json!({"jsonrpc": "2.0", "id": 9, "method": "x", "params": {"big": big}}))).await.unwrap();
        assert!(t.agent.try_recv().is_err());
        let e = val(ra.try_recv().unwrap());
        assert_eq!(e["id"], 9);
        assert!(e["error"]["message"].as_str().unwrap().contains("larger than"));
        t.b.from_client(a, TransportFrame::parse_json("{not json")).await.unwrap();
        assert!(t.agent.try_recv().is_err());
        assert_eq!(val(ra.try_recv().unwrap())["error"]["code"], -32700);
    }

    #[tokio::test]
    async fn a_connection_that_does_not_read_is_dropped_after_the_timeout() {
        tokio::time::pause();
        let t = T::new();
        let (_a, ra) = t.conn();
        let (_b, mut rb) = t.conn();
        for i in 0..CONNECTION_QUEUE {
            t.b.from_agent(&json!({"jsonrpc": "2.0", "method": "x", "params": {"i": i}}).to_string()).await;
        }
        // B is the most recent: its queue is full now. The next message waits, then B is dropped.
        let start = tokio::time::Instant::now();
        t.b.from_agent(&json!({"jsonrpc": "2.0", "method": "x", "params": {"i": "more"}}).to_string()).await;
        assert!(start.elapsed() >= SLOW_CLIENT_TIMEOUT);
        assert_eq!(t.b.connections(), 1, "the slow connection was dropped");
        while rb.try_recv().is_ok() {}
        drop(ra);
    }

    #[tokio::test]
    async fn connections_are_capped() {
        let t = T::new();
        let keep: Vec<_> = (0..MAX_CONNECTIONS).map(|_| t.conn()).collect();
        let (tx, _rx) = mpsc::channel(1);
        assert!(t.b.attach(tx).is_none());
        drop(keep);
    }
}
