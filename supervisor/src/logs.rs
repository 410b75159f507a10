//! Service output: a per-service ring buffer of lines with a live feed, and an echo of
//! every line to the supervisor's stdout as `[name] line` that never blocks the caller.

use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// Longest line kept; longer output is split.
pub const MAX_LINE: usize = 16 * 1024;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The child's stdout.
    Stdout,
    /// The child's stderr.
    Stderr,
}

/// One line of service output.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Increasing number within the service.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Source pipe.
    pub stream: Stream,
    /// The text, without the newline (lossy UTF-8).
    pub line: String,
}

/// The ring buffer and live feed of one service's output.
pub struct LogBuffer {
    name: String,
    cap: usize,
    lines: Mutex<VecDeque<LogLine>>,
    seq: AtomicU64,
    feed: broadcast::Sender<LogLine>,
}

impl LogBuffer {
    /// A buffer keeping the last `cap` lines of service `name`.
    pub fn new(name: &str, cap: usize) -> Arc<Self> {
        let (feed, _) = broadcast::channel(256);
        Arc::new(LogBuffer { name: name.to_string(), cap, lines: Mutex::new(VecDeque::new()), seq: AtomicU64::new(0), feed })
    }

    /// Appends a line: to the ring, the live feed and the stdout echo.
    pub fn push(&self, stream: Stream, text: &str) {
        let line = LogLine {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at_ms: crate::engine::reaper::now_ms(),
            stream,
            line: text.to_string(),
        };
        echo(&self.name, text);
        {
            let mut l = self.lines.lock().expect("log lock");
            if l.len() == self.cap {
                l.pop_front();
            }
            l.push_back(line.clone());
        }
        let _ = self.feed.send(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        last_n(&self.lines.lock().expect("log lock"), n)
    }

    /// The last `n` lines plus a receiver of every later line (no gap, no duplicate).
    pub fn tail_and_follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let l = self.lines.lock().expect("log lock");
        let rx = self.feed.subscribe();
        (last_n(&l, n), rx)
    }

    /// Reads a child's pipe to its end, one entry per line (split at [`MAX_LINE`]).
    pub async fn drain<R: tokio::io::AsyncRead + Unpin>(self: Arc<Self>, stream: Stream, mut r: R) {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            let n = match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let rest = buf.split_off(pos + 1);
                buf.pop();
                self.push_bytes(stream, &buf);
                buf = rest;
            }
            while buf.len() >= MAX_LINE {
                let rest = buf.split_off(MAX_LINE);
                self.push_bytes(stream, &buf);
                buf = rest;
            }
        }
        if !buf.is_empty() {
            self.push_bytes(stream, &buf);
        }
    }

    fn push_bytes(&self, stream: Stream, b: &[u8]) {
        let b = b.strip_suffix(b"\r").unwrap_or(b);
        self.push(stream, &String::from_utf8_lossy(b));
    }
}

/// The last `n` entries of `lines`, oldest first.
fn last_n(lines: &VecDeque<LogLine>, n: usize) -> Vec<LogLine> {
    lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
}

/// The stdout echo: a bounded queue drained by one thread; lines are dropped (and
/// counted) rather than ever blocking a service's pipe reader on a slow stdout.
struct Echo {
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

static ECHO: OnceLock<Echo> = OnceLock::new();

fn echo(name: &str, text: &str) {
    let e = ECHO.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(8192);
        std::thread::Builder::new()
            .name("stdout-echo".into())
            .spawn(move || {
                let out = std::io::stdout();
                for line in rx {
                    let mut o = out.lock();
                    let _ = o.write_all(line.as_bytes());
                    let _ = o.flush();
                }
            })
            .expect("spawn echo thread");
        Echo { tx, dropped: AtomicU64::new(0) }
    });
    let dropped = e.dropped.load(Ordering::Relaxed);
    if dropped > 0 && e.tx.try_send(format!("[supervisor] {dropped} output lines dropped: stdout is slow\n")).is_ok() {
        e.dropped.fetch_sub(dropped, Ordering::Relaxed);
    }
    match e.tx.try_send(format!("[{name}] {text}\n")) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            e.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_last_lines() {
        let b = LogBuffer::new("t", 3);
        for i in 0..5 {
            b.push(Stream::Stdout, &format!("l{i}"));
        }
        let t: Vec<String> = b.tail(10).into_iter().map(|l| l.line).collect();
        assert_eq!(t, vec!["l2", "l3", "l4"]);
        assert_eq!(b.tail(1)[0].line, "l4");
    }

    #[tokio::test]
    async fn drain_splits_lines_and_long_runs() {
        let b = LogBuffer::new("t", 100);
        let mut input = b"a\r\nb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 5));
        b.clone().drain(Stream::Stderr, &input[..]).await;
        let t = b.tail(10);
        assert_eq!(t[0].line, "a");
        assert_eq!(t[1].line, "b");
        assert_eq!(t[2].line.len(), MAX_LINE);
        assert_eq!(t[3].line, "xxxxx");
        assert_eq!(t[3].stream, Stream::Stderr);
    }
}
