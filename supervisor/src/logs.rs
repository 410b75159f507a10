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
    /// Increasing number within the service, from 1 (the SSE `id:` of the line).
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Source pipe.
    pub stream: Stream,
    /// The text, without the newline (lossy UTF-8).
    pub line: String,
}

/// The ring buffer and live feed of one service's output, bounded by lines and by bytes
/// (a service printing megabytes of binary must not grow the supervisor).
pub struct LogBuffer {
    name: String,
    cap: usize,
    cap_bytes: usize,
    lines: Mutex<Ring>,
    seq: AtomicU64,
    feed: broadcast::Sender<LogLine>,
    /// The optional `log_file` copy.
    file: Mutex<Option<crate::logfile::LogFile>>,
}

impl LogBuffer {
    /// A buffer keeping the last `cap` lines, and at most `cap_bytes` bytes of text, of
    /// service `name`.
    pub fn new(name: &str, cap: usize, cap_bytes: usize) -> Arc<Self> {
        let (feed, _) = broadcast::channel(256);
        Arc::new(LogBuffer { name: name.to_string(), cap, cap_bytes, lines: Mutex::new(Ring::default()), seq: AtomicU64::new(1), feed, file: Mutex::new(None) })
    }

    /// The service it belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets (or removes) the file every later line is also written to.
    pub fn set_file(&self, file: Option<crate::logfile::LogFile>) {
        *self.file.lock().expect("log file lock") = file;
    }

    /// Appends a line: to the ring, the live feed and the stdout echo.
    pub fn push(&self, stream: Stream, text: &str) {
        echo(&self.name, text);
        if let Some(f) = self.file.lock().expect("log file lock").as_ref() {
            f.write(crate::engine::reaper::now_ms(), if stream == Stream::Stdout { "stdout" } else { "stderr" }, text);
        }
        let mut r = self.lines.lock().expect("log lock");
        // Numbered and sent under the lock: ids follow ring order, and a replay
        // ([`crate::sse::Feed::since`]) never misses or repeats a line.
        let line = LogLine { seq: self.seq.fetch_add(1, Ordering::Relaxed), at_ms: crate::engine::reaper::now_ms(), stream, line: text.to_string() };
        r.bytes += line.line.len();
        r.lines.push_back(line.clone());
        while r.lines.len() > self.cap || (r.bytes > self.cap_bytes && r.lines.len() > 1) {
            let old = r.lines.pop_front().expect("non-empty");
            r.bytes -= old.line.len();
        }
        let _ = self.feed.send(line);
    }

    /// The id the next line will get (lines "since a start" are those at or above it).
    pub fn next_seq(&self) -> u64 {
        let _r = self.lines.lock().expect("log lock");
        self.seq.load(Ordering::Relaxed)
    }

    /// The id just before the last `n` held lines (what a follow that starts with a tail
    /// of `n` replays after).
    pub fn tail_start(&self, n: usize) -> u64 {
        let r = self.lines.lock().expect("log lock");
        let next = self.seq.load(Ordering::Relaxed);
        match r.lines.len().checked_sub(n.min(r.lines.len())).and_then(|i| r.lines.get(i)) {
            Some(l) => l.seq - 1,
            None => next - 1,
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        last_n(&self.lines.lock().expect("log lock").lines, n)
    }

    /// The last `n` lines plus a receiver of every later line (no gap, no duplicate).
    pub fn tail_and_follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let l = self.lines.lock().expect("log lock");
        let rx = self.feed.subscribe();
        (last_n(&l.lines, n), rx)
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

impl crate::sse::Feed for LogBuffer {
    type Item = LogLine;
    fn id_of(item: &LogLine) -> u64 {
        item.seq
    }
    fn since(&self, after: u64) -> (Vec<LogLine>, u64, broadcast::Receiver<LogLine>) {
        let r = self.lines.lock().expect("log lock");
        let next = self.seq.load(Ordering::Relaxed);
        let after = crate::sse::effective_after(after, next);
        let oldest = r.lines.front().map(|l| l.seq).unwrap_or(next);
        let lines = r.lines.iter().filter(|l| l.seq > after).cloned().collect();
        (lines, crate::sse::lost_between(after, oldest, next), self.feed.subscribe())
    }
    fn next_id(&self) -> u64 {
        self.next_seq()
    }
}

/// The kept lines and their total text size.
#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
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
    /// Bytes queued and not yet written: bounded by [`ECHO_MAX_BYTES`].
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// Most bytes of output waiting for a slow stdout before lines are dropped.
const ECHO_MAX_BYTES: usize = 4 << 20;

static ECHO: OnceLock<Echo> = OnceLock::new();

fn echo(name: &str, text: &str) {
    let e = ECHO.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(8192);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let q = queued.clone();
        std::thread::Builder::new()
            .name("stdout-echo".into())
            .spawn(move || {
                // Not std's stdout: see crate::stdio for why a write must wait out EAGAIN.
                let mut out = crate::stdio::stdout();
                for line in rx {
                    let _ = out.write_all(line.as_bytes());
                    q.fetch_sub(line.len(), Ordering::Relaxed);
                }
            })
            .expect("spawn echo thread");
        Echo { tx, dropped: AtomicU64::new(0), queued }
    });
    let dropped = e.dropped.load(Ordering::Relaxed);
    if dropped > 0 && e.send(format!("[supervisor] {dropped} output lines dropped: stdout is slow\n")) {
        e.dropped.fetch_sub(dropped, Ordering::Relaxed);
    }
    if !e.send(format!("[{name}] {text}\n")) {
        e.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Echo {
    /// Queues `line` unless that would pass the byte bound or the queue is full.
    fn send(&self, line: String) -> bool {
        let len = line.len();
        // Counted before sending, so the writer thread never subtracts what was not added.
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > ECHO_MAX_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_last_lines() {
        let b = LogBuffer::new("t", 3, 1 << 20);
        for i in 0..5 {
            b.push(Stream::Stdout, &format!("l{i}"));
        }
        let t: Vec<String> = b.tail(10).into_iter().map(|l| l.line).collect();
        assert_eq!(t, vec!["l2", "l3", "l4"]);
        assert_eq!(b.tail(1)[0].line, "l4");
    }

    #[test]
    fn ring_is_bounded_in_bytes() {
        let b = LogBuffer::new("t", 1000, 64 << 10);
        let big = "x".repeat(MAX_LINE);
        for _ in 0..100 {
            b.push(Stream::Stdout, &big);
        }
        let kept: usize = b.tail(1000).iter().map(|l| l.line.len()).sum();
        assert!(kept <= 64 << 10, "kept {kept} bytes");
        assert_eq!(b.tail(1000).len(), 4, "the newest lines that fit");
        b.push(Stream::Stdout, "small");
        assert_eq!(b.tail(1)[0].line, "small");
    }

    #[tokio::test]
    async fn drain_splits_lines_and_long_runs() {
        let b = LogBuffer::new("t", 100, 1 << 20);
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
