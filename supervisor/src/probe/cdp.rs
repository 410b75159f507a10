//! The `cdp` probe: find the browser's WebSocket through `/json/version`, then ask
//! `Browser.getVersion` over it. Proves the DevTools protocol answers, not just the port.
//! It uses the sensor's CDP client ([`crate::browser::cdp`], the one CDP client of the
//! codebase) for one command and closes it: a probe every few seconds must not attach to
//! pages as the sensor's long-lived session does.

use crate::browser::cdp::{browser_ws, Cdp};
use chromiumoxide::cdp::browser_protocol::browser::GetVersionParams;

/// Checks the DevTools endpoint at `base` (e.g. `http://127.0.0.1:9222`).
pub async fn check(base: &str) -> Result<(), String> {
    let ws = browser_ws(base).await?;
    // No events are read: a one-slot buffer.
    let cdp = Cdp::connect(&ws, 1).await?;
    cdp.send(None, GetVersionParams::default()).await.map(|_| ()).map_err(|e| format!("Browser.getVersion: {e}"))
}
