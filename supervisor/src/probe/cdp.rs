//! The `cdp` probe: find the browser's WebSocket through `/json/version`, then ask
//! `Browser.getVersion` over it. Proves the DevTools protocol answers, not just the port.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Checks the DevTools endpoint at `base` (e.g. `http://127.0.0.1:9222`).
pub async fn check(base: &str) -> Result<(), String> {
    let version = super::http::get(&format!("{}/json/version", base.trim_end_matches('/')), &[], true).await?;
    if version.status != 200 {
        return Err(format!("/json/version answered {}", version.status));
    }
    let v: serde_json::Value = serde_json::from_slice(&version.body).map_err(|e| format!("/json/version: {e}"))?;
    let ws = v["webSocketDebuggerUrl"].as_str().ok_or("/json/version has no webSocketDebuggerUrl")?;
    let (mut sock, _) = tokio_tungstenite::connect_async(ws).await.map_err(|e| format!("websocket: {e}"))?;
    sock.send(Message::text(r#"{"id":1,"method":"Browser.getVersion"}"#)).await.map_err(|e| e.to_string())?;
    while let Some(msg) = sock.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        if let Message::Text(t) = msg {
            let r: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            if r["id"] == 1 {
                let _ = sock.close(None).await;
                return match r["result"]["product"].as_str() {
                    Some(_) => Ok(()),
                    None => Err(format!("Browser.getVersion failed: {}", r["error"])),
                };
            }
        }
    }
    Err("websocket closed before the answer".into())
}
