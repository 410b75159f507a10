//! The `x11` probe: the display answers an X11 connection setup (not just a socket file).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects to display `display` (e.g. `:99`) over its unix socket and checks that the
/// server accepts the connection setup (reply byte 1 = Success).
pub async fn check(display: &str) -> Result<(), String> {
    let num = display.trim_start_matches(':').split('.').next().unwrap_or("");
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("bad display {display:?}"));
    }
    let path = format!("/tmp/.X11-unix/X{num}");
    let mut s = tokio::net::UnixStream::connect(&path).await.map_err(|e| format!("{path}: {e}"))?;
    // Little-endian setup request, protocol 11.0, no authorization.
    let req: [u8; 12] = [b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.map_err(|e| format!("no setup reply: {e}"))?;
    match first[0] {
        1 => Ok(()),
        0 => Err("X server refused the connection".into()),
        n => Err(format!("X server wants authentication (reply {n})")),
    }
}
