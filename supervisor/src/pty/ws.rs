//! One WebSocket client of a terminal (SPEC §8): binary frames are terminal bytes both
//! ways, text frames JSON control — `{"type":"resize","cols","rows"}` in,
//! `{"type":"exit","code"}` out. The replay comes first, then live output.
//!
//! Output is sent by its own task, so a client that stops reading never holds up the
//! terminal: its queue grows to the hub's bound and then it is closed with a close frame
//! (1013, "try again later") that says why. A client that sends nothing, not even a pong,
//! for [`SILENCE`] is taken for gone (a network drop without a FIN).

use super::hub::{Client, Hub, Out, Size};
use crate::api::auth::Revocation;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// Largest frame accepted from a client.
pub const MAX_IN_FRAME: usize = 64 << 10;
/// Largest output frame: queued chunks are joined up to this (small enough that a slow but
/// reading link makes progress well within the hub's stall time).
const MAX_OUT_FRAME: usize = 64 << 10;
/// Server pings this often.
const PING_EVERY: Duration = Duration::from_secs(20);
/// No frame at all from the client for this long: it is gone.
const SILENCE: Duration = Duration::from_secs(75);
/// How long a close frame may take to reach a client that is not reading.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Serves `socket` as a client of `hub` until either side ends (or `revoked` resolves).
pub async fn serve(socket: WebSocket, hub: Arc<Hub>, revoked: Option<Revocation>) {
    let client = hub.attach();
    let (mut tx, mut rx) = socket.split();
    let last_in = Arc::new(std::sync::Mutex::new(Instant::now()));
    let seen = last_in.clone();
    let input = async move {
        while let Some(Ok(msg)) = rx.next().await {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            match msg {
                Message::Binary(b) => {
                    if hub.input(b).await.is_err() {
                        break;
                    }
                }
                Message::Text(t) => control(&hub, t.as_str()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        None
    };
    let output = send_output(&mut tx, client, last_in);
    let revoked = async {
        match revoked {
            Some(r) => r.revoked().await,
            None => std::future::pending().await,
        }
    };
    let close: Option<(u16, String)> = tokio::select! {
        c = output => c,
        c = input => c,
        _ = revoked => Some((1008, "the token changed".to_string())),
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
        let _ = timeout(CLOSE_GRACE, tx.send(Message::Close(Some(frame)))).await;
    }
}

/// Applies one JSON control message (unknown or malformed ones are ignored, logged at debug).
fn control(hub: &Hub, text: &str) {
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return tracing::debug!("terminal control frame is not JSON"),
    };
    if v["type"] == "resize" {
        match (v["cols"].as_u64(), v["rows"].as_u64()) {
            (Some(c), Some(r)) => match Size::checked(c, r).and_then(|s| hub.resize(s)) {
                Ok(()) => {}
                Err(e) => tracing::debug!("terminal resize refused: {e}"),
            },
            _ => tracing::debug!("resize without numeric cols and rows"),
        }
    }
}

/// Sends the replay, then output as it comes (joined into frames of at most
/// [`MAX_OUT_FRAME`]), then the exit. Returns the close frame to end with.
async fn send_output(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    mut client: Client,
    last_in: Arc<std::sync::Mutex<Instant>>,
) -> Option<(u16, String)> {
    let mut kicked = client.kicked.clone();
    let cut = |why: &Option<String>| why.clone().map(|w| (1013u16, w));
    if !client.replay.is_empty() {
        let replay = std::mem::take(&mut client.replay);
        tokio::select! {
            r = tx.send(Message::Binary(replay)) => if r.is_err() { return None },
            _ = kicked.changed() => return cut(&kicked.borrow()),
        }
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let first = tokio::select! {
            m = client.rx.recv() => m,
            _ = kicked.changed() => return cut(&kicked.borrow()),
            _ = ping.tick() => {
                if last_in.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > SILENCE {
                    return None;
                }
                if tx.send(Message::Ping(Bytes::new())).await.is_err() { return None }
                continue;
            }
        };
        let mut frame = BytesMut::new();
        let mut exit = None;
        match first {
            None => return None,
            Some(Out::Exit(e)) => exit = Some(e),
            Some(Out::Data(d)) => {
                frame.extend_from_slice(&d);
                while frame.len() < MAX_OUT_FRAME {
                    match client.rx.try_recv() {
                        Ok(Out::Data(d)) => frame.extend_from_slice(&d),
                        Ok(Out::Exit(e)) => {
                            exit = Some(e);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        if !frame.is_empty() {
            let n = frame.len();
            tokio::select! {
                r = tx.send(Message::Binary(frame.freeze())) => if r.is_err() { return None },
                _ = kicked.changed() => return cut(&kicked.borrow()),
            }
            client.sent(n);
        }
        if let Some(e) = exit {
            let msg = exit_message(e);
            if tx.send(Message::Text(Utf8Bytes::from(msg))).await.is_err() {
                return None;
            }
            return Some((1000, "the terminal ended".into()));
        }
    }
}

/// `{"type":"exit","code":N}`: the exit code, or 128 + the signal number for a signal (as a
/// shell reports it), with `signal` set then; `code` is null when it is not known.
pub fn exit_message(e: Option<crate::engine::reaper::ExitInfo>) -> String {
    let (code, signal) = match e {
        Some(e) => (e.code.or(e.signal.map(|s| 128 + s)), e.signal),
        None => (None, None),
    };
    serde_json::json!({"type": "exit", "code": code, "signal": signal}).to_string()
}
