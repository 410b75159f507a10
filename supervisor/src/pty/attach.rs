//! `supervisor ctl attach NAME`: joins a `tty` service's terminal over the control socket
//! (a WebSocket on `/_supervisor/services/NAME/tty`). The local terminal goes raw, its
//! size is sent on attach and on every SIGWINCH, keys go in, the screen comes out;
//! `Ctrl-]` detaches and leaves the service running.

use futures_util::{SinkExt, StreamExt};
use std::io::Write;
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The detach key: `Ctrl-]` (as telnet and `docker attach` use).
pub const DETACH: u8 = 0x1d;

/// The local terminal in raw mode until dropped (then restored as it was).
struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: termios calls on fd 0 with a zeroed, then filled, struct.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode { saved: None };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode { saved: Some(saved) }
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restores the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

/// The local window size (of stdin, else stdout), if it is a terminal.
fn window_size() -> Option<(u16, u16)> {
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ fills a winsize struct.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
                return Some((ws.ws_col, ws.ws_row));
            }
        }
    }
    None
}

fn resize_message() -> Option<Message> {
    window_size().map(|(c, r)| Message::Text(serde_json::json!({"type": "resize", "cols": c, "rows": r}).to_string().into()))
}

/// Reads stdin on a thread of its own (a blocked read must not hold up the runtime's exit).
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut input = std::io::stdin().lock();
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Attaches to service `name` through the control socket `sock`; returns the exit code.
pub async fn attach(sock: &Path, name: &str) -> anyhow::Result<i32> {
    let stream = tokio::net::UnixStream::connect(sock).await.map_err(|e| anyhow::anyhow!("cannot reach the supervisor at {}: {e}", sock.display()))?;
    let req = format!("ws://localhost/_supervisor/services/{name}/tty").into_client_request()?;
    let (ws, _) = match tokio_tungstenite::client_async(req, stream).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            eprintln!("error: {}", v["error"]["message"].as_str().unwrap_or("the supervisor refused to attach"));
            return Ok(1);
        }
        Err(e) => anyhow::bail!("cannot attach: {e}"),
    };
    let (mut tx, mut rx) = ws.split();
    let mut winch = signal(SignalKind::window_change())?;
    let raw = RawMode::enter();
    let mut stdin = stdin_chunks();
    eprint!("[attached to {name}; Ctrl-] detaches]\r\n");
    if let Some(m) = resize_message() {
        tx.send(m).await?;
    }
    let mut out = std::io::stdout();
    let why = loop {
        tokio::select! {
            chunk = stdin.recv() => match chunk {
                None => break "standard input closed".to_string(),
                Some(c) => {
                    let (keys, detach) = match c.iter().position(|b| *b == DETACH) {
                        Some(i) => (&c[..i], true),
                        None => (&c[..], false),
                    };
                    if !keys.is_empty() {
                        tx.send(Message::Binary(keys.to_vec().into())).await?;
                    }
                    if detach {
                        break format!("detached; {name} keeps running");
                    }
                }
            },
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    out.write_all(&b)?;
                    out.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if v["type"] == "exit" {
                        break format!("{name}'s terminal ended");
                    }
                }
                Some(Ok(Message::Close(f))) => break f.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("connection lost: {e}"),
                None => break "connection closed".into(),
            },
            _ = winch.recv() => {
                if let Some(m) = resize_message() {
                    tx.send(m).await?;
                }
            }
        }
    };
    let _ = tx.send(Message::Close(None)).await;
    drop(raw);
    eprintln!("\r\n[{why}]");
    Ok(0)
}
