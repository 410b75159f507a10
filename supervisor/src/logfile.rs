//! Optional per-service log files (`log_file`): every output line also appended to a file,
//! rotated by size (`path` → `path.1` → … → `path.<keep>`), for post-mortems that outlive
//! the in-memory ring. Written by a thread of its own through a bounded queue, so a slow
//! disk drops lines (counted, and said in the file) rather than ever blocking a service's
//! pipe reader or the event loop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 4096;

/// The file side of one service's output.
pub struct LogFile {
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

impl LogFile {
    /// Starts the writer of `path`, rotating past `max_bytes` and keeping `keep` old files.
    pub fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new().name("log-file".into()).spawn(move || writer(&path, max_bytes, keep, rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start a log file writer: {e}");
        }
        LogFile { tx, dropped: AtomicU64::new(0) }
    }

    /// Queues one line (never blocks; drops it when the writer is behind).
    pub fn write(&self, at_ms: u64, stream: &str, text: &str) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 && self.tx.try_send(format!("[supervisor] {dropped} lines dropped: the disk is slow\n")).is_ok() {
            self.dropped.fetch_sub(dropped, Ordering::Relaxed);
        }
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
        let line = format!("{} {stream} {text}\n", humantime::format_rfc3339_millis(at));
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

/// `path` with `.n` appended.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `path.1..` up by one (dropping the oldest) and moves `path` to `path.1`.
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(path, keep));
    for i in (1..keep).rev() {
        let from = numbered(path, i);
        if from.exists() {
            std::fs::rename(&from, numbered(path, i + 1))?;
        }
    }
    std::fs::rename(path, numbered(path, 1))
}

fn writer(path: &Path, max_bytes: u64, keep: u32, rx: Receiver<String>) {
    let mut cur = match open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot open the log file: {e}");
            None
        }
    };
    for line in rx {
        let Some(len) = cur.as_ref().map(|(_, l)| *l) else { continue };
        if len > 0 && len + line.len() as u64 > max_bytes {
            cur = None; // closed before it is renamed
            if let Err(e) = rotate(path, keep) {
                tracing::warn!(path = %path.display(), "cannot rotate the log file: {e}");
            }
            match open(path) {
                Ok(n) => cur = Some(n),
                Err(e) => {
                    tracing::error!(path = %path.display(), "cannot reopen the log file: {e}");
                    continue;
                }
            }
        }
        if let Some((f, len)) = cur.as_mut() {
            if f.write_all(line.as_bytes()).is_ok() {
                *len += line.len() as u64;
            }
        }
    }
    let _ = f_sync(cur);
}

fn f_sync(cur: Option<(File, u64)>) -> std::io::Result<()> {
    match cur {
        Some((f, _)) => f.sync_data(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        {
            let f = LogFile::new(path.clone(), 4096, 2);
            for i in 0..400 {
                f.write(0, "stdout", &format!("line {i:04} {}", "x".repeat(40)));
            }
        } // dropping the sender ends the writer; wait for it below
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let last = std::fs::read_to_string(&path).unwrap_or_default();
            if last.contains("line 0399") || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        assert!(cur.contains("line 0399"), "the newest line is in the current file");
        assert!(cur.len() as u64 <= 4096, "rotated at the size: {}", cur.len());
        assert!(numbered(&path, 1).exists() && numbered(&path, 2).exists(), "two kept");
        assert!(!numbered(&path, 3).exists(), "no more than keep");
        let one = std::fs::read_to_string(numbered(&path, 1)).unwrap();
        assert!(one.contains(" stdout line "), "{one}");
    }
}
