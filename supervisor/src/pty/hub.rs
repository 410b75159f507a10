//! The fan-out of one terminal: the recent output (a ring replayed on attach), the attached
//! clients, the shared input and the window size.
//!
//! The output pump calls [`Hub::publish`], which never waits: each client has its own queue,
//! bounded in bytes, and a client whose queue passes [`CLIENT_BACKLOG`] is cut off (it is
//! told why and may reattach to get the replay) instead of slowing the terminal or the
//! other clients down. Before reading more, the pump calls [`Hub::room`]: the terminal is
//! paced to its *fastest* live client (so a flood does not outrun a client that keeps
//! reading), and a client that has made no progress for [`STALL`] no longer counts.

use crate::engine::reaper::ExitInfo;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Bytes of recent output kept per terminal and replayed to a client on attach.
pub const RING_BYTES: usize = 256 << 10;
/// Output bytes a client may have queued and unsent before it is cut off.
pub const CLIENT_BACKLOG: usize = 1 << 20;
/// Backlog of the fastest live client above which the pump waits.
pub const PACE_BACKLOG: usize = 256 << 10;
/// A client that sent nothing for this long while it had output queued stops pacing the terminal.
pub const STALL: std::time::Duration = std::time::Duration::from_millis(1000);
/// Input chunks queued for the terminal before senders wait (back-pressure per client).
const INPUT_QUEUE: usize = 64;

/// What a client is sent, in order.
#[derive(Debug, Clone)]
pub enum Out {
    /// Terminal output.
    Data(Bytes),
    /// The terminal ended (None: how is not known, e.g. a `tty` service's terminal closed).
    Exit(Option<ExitInfo>),
}

/// The window size, as a client last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Size {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Largest accepted number of columns or rows.
pub const MAX_DIM: u16 = 1000;

impl Size {
    /// A size with both sides in `1..=MAX_DIM`, or why not.
    pub fn checked(cols: u64, rows: u64) -> Result<Size, String> {
        let ok = |v: u64| (1..=MAX_DIM as u64).contains(&v);
        if ok(cols) && ok(rows) {
            Ok(Size { cols: cols as u16, rows: rows as u16 })
        } else {
            Err(format!("cols and rows must be between 1 and {MAX_DIM} (got {cols}x{rows})"))
        }
    }
}

/// Resizes the terminal (the pty master, through `portable-pty`).
pub type Resizer = Box<dyn Fn(Size) -> Result<(), String> + Send + Sync>;

struct ClientSlot {
    tx: mpsc::UnboundedSender<Out>,
    progress: Arc<Progress>,
    kick: watch::Sender<Option<String>>,
}

/// How far behind a client is.
#[derive(Default)]
struct Progress {
    /// Queued bytes not yet handed to the connection.
    pending: AtomicUsize,
    /// When it last sent something (ms since the hub's epoch).
    last_ms: std::sync::atomic::AtomicU64,
}

struct Inner {
    ring: VecDeque<u8>,
    clients: HashMap<u64, ClientSlot>,
    next: u64,
    size: Size,
    ended: Option<Option<ExitInfo>>,
}

/// One terminal's hub. Shared by the output pump, the input feeder and every client.
pub struct Hub {
    inner: Mutex<Inner>,
    input: mpsc::Sender<Bytes>,
    resizer: Resizer,
    attached: watch::Sender<usize>,
    epoch: std::time::Instant,
    room: tokio::sync::Notify,
}

impl Hub {
    /// A hub for a terminal of `size`; input goes to the returned receiver (the feeder).
    pub fn new(size: Size, resizer: Resizer) -> (Arc<Hub>, mpsc::Receiver<Bytes>) {
        let (input, rx) = mpsc::channel(INPUT_QUEUE);
        let inner = Inner { ring: VecDeque::new(), clients: HashMap::new(), next: 0, size, ended: None };
        let hub = Hub { inner: Mutex::new(inner), input, resizer, attached: watch::Sender::new(0), epoch: std::time::Instant::now(), room: Default::default() };
        (Arc::new(hub), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fans `data` out to the ring and every client; never waits. Clients past their
    /// backlog are cut off.
    pub fn publish(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut g = self.lock();
        g.ring.extend(data);
        let over = g.ring.len().saturating_sub(RING_BYTES);
        g.ring.drain(..over);
        let chunk = Bytes::copy_from_slice(data);
        let mut cut = Vec::new();
        for (id, c) in &g.clients {
            let queued = c.progress.pending.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len();
            if queued > CLIENT_BACKLOG || c.tx.send(Out::Data(chunk.clone())).is_err() {
                cut.push(*id);
            }
        }
        for id in cut {
            if let Some(c) = g.clients.remove(&id) {
                let why = format!("too slow: over {} KiB of output unread; reconnect to get the replay", CLIENT_BACKLOG >> 10);
                let _ = c.kick.send(Some(why));
                tracing::info!(client = id, "terminal client cut off: it does not read its output");
            }
        }
        let n = g.clients.len();
        drop(g);
        self.attached.send_if_modified(|v| std::mem::replace(v, n) != n);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Waits while every live client (one that has little queued, or made progress within
    /// [`STALL`]) has more than [`PACE_BACKLOG`] queued. Returns at once with no client.
    pub async fn room(&self) {
        loop {
            let full = {
                let g = self.lock();
                let now = self.now_ms();
                let live = g.clients.values().map(|c| &c.progress).filter(|p| {
                    p.pending.load(Ordering::SeqCst) <= PACE_BACKLOG || now.saturating_sub(p.last_ms.load(Ordering::SeqCst)) < STALL.as_millis() as u64
                });
                live.map(|p| p.pending.load(Ordering::SeqCst)).min().is_some_and(|m| m > PACE_BACKLOG)
            };
            if !full {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), self.room.notified()).await;
        }
    }

    /// The terminal's output has ended: every client gets [`Out::Exit`], and so does every
    /// later attach (after the replay).
    pub fn finish(&self, exit: Option<ExitInfo>) {
        let mut g = self.lock();
        if g.ended.is_some() {
            return;
        }
        g.ended = Some(exit);
        for c in g.clients.values() {
            let _ = c.tx.send(Out::Exit(exit));
        }
    }

    /// Whether [`Hub::finish`] was called, and with what.
    pub fn ended(&self) -> Option<Option<ExitInfo>> {
        self.lock().ended
    }

    /// Attaches a client: the replay of recent output and, with no gap or duplicate, a
    /// queue of everything after it.
    pub fn attach(self: &Arc<Self>) -> Client {
        let mut g = self.lock();
        let (a, b) = g.ring.as_slices();
        let mut replay = Vec::with_capacity(a.len() + b.len());
        replay.extend_from_slice(a);
        replay.extend_from_slice(b);
        // Do not start in the middle of a UTF-8 character.
        let skip = replay.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
        replay.drain(..skip);
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        progress.last_ms.store(self.now_ms(), Ordering::SeqCst);
        let (kick, kick_rx) = watch::channel(None);
        if let Some(exit) = g.ended {
            let _ = tx.send(Out::Exit(exit));
        }
        let id = g.next;
        g.next += 1;
        g.clients.insert(id, ClientSlot { tx, progress: progress.clone(), kick });
        let n = g.clients.len();
        drop(g);
        self.attached.send_replace(n);
        Client { id, hub: self.clone(), replay: Bytes::from(replay), rx, progress, kicked: kick_rx }
    }

    fn detach(&self, id: u64) {
        let mut g = self.lock();
        g.clients.remove(&id);
        let n = g.clients.len();
        drop(g);
        self.attached.send_if_modified(|v| std::mem::replace(v, n) != n);
        self.room.notify_one();
    }

    /// Sends input to the terminal; waits while its input queue is full.
    pub async fn input(&self, data: Bytes) -> Result<(), ()> {
        self.input.send(data).await.map_err(|_| ())
    }

    /// Sets the window size (the last resize from any client wins).
    pub fn resize(&self, size: Size) -> Result<(), String> {
        let mut g = self.lock();
        (self.resizer)(size)?;
        g.size = size;
        Ok(())
    }

    /// The current window size.
    pub fn size(&self) -> Size {
        self.lock().size
    }

    /// How many clients are attached.
    pub fn attached(&self) -> usize {
        *self.attached.borrow()
    }

    /// A feed of the number of attached clients (for the idle timer).
    pub fn watch_attached(&self) -> watch::Receiver<usize> {
        self.attached.subscribe()
    }
}

/// One attached client. Dropping it detaches.
pub struct Client {
    id: u64,
    hub: Arc<Hub>,
    /// The recent output to show first.
    pub replay: Bytes,
    /// Everything after the replay.
    pub rx: mpsc::UnboundedReceiver<Out>,
    progress: Arc<Progress>,
    /// Becomes `Some(reason)` when the hub cut this client off.
    pub kicked: watch::Receiver<Option<String>>,
}

impl Client {
    /// The hub this client is attached to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Marks `n` queued bytes as sent.
    pub fn sent(&self, n: usize) {
        self.progress.pending.fetch_sub(n, Ordering::SeqCst);
        self.progress.last_ms.store(self.hub.now_ms(), Ordering::SeqCst);
        self.hub.room.notify_one();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.hub.detach(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        Hub::new(Size { cols: 80, rows: 24 }, Box::new(|_| Ok(()))).0
    }

    #[test]
    fn replay_then_live_without_gap_and_ring_is_bounded() {
        let h = hub();
        h.publish(b"before ");
        let mut c = h.attach();
        h.publish(b"after");
        assert_eq!(&c.replay[..], b"before ");
        match c.rx.try_recv() {
            Ok(Out::Data(d)) => assert_eq!(&d[..], b"after"),
            o => panic!("{o:?}"),
        }
        h.publish(&vec![b'x'; RING_BYTES + 100]);
        let c2 = h.attach();
        assert_eq!(c2.replay.len(), RING_BYTES);
        assert_eq!(h.attached(), 2);
        drop(c2);
        assert_eq!(h.attached(), 1);
    }

    #[test]
    fn a_client_that_does_not_read_is_cut_off_and_others_are_not() {
        let h = hub();
        let slow = h.attach();
        let mut fast = h.attach();
        let chunk = vec![b'y'; 64 << 10];
        for _ in 0..(CLIENT_BACKLOG / chunk.len() + 2) {
            h.publish(&chunk);
            // The fast client keeps up.
            while let Ok(Out::Data(d)) = fast.rx.try_recv() {
                fast.sent(d.len());
            }
        }
        assert!(slow.kicked.borrow().as_deref().is_some_and(|r| r.contains("too slow")), "{:?}", slow.kicked.borrow());
        assert!(fast.kicked.borrow().is_none());
        assert_eq!(h.attached(), 1);
    }

    #[tokio::test]
    async fn the_terminal_is_paced_to_a_reading_client_but_not_to_a_stalled_one() {
        use std::time::{Duration, Instant};
        let h = hub();
        tokio::time::timeout(Duration::from_millis(100), h.room()).await.expect("no client: no wait");
        let mut c = h.attach();
        h.publish(&vec![b'z'; PACE_BACKLOG + 1]);
        // The only client is behind: the pump waits...
        assert!(tokio::time::timeout(Duration::from_millis(300), h.room()).await.is_err());
        // ...until it catches up.
        let waiter = { let h = h.clone(); tokio::spawn(async move { h.room().await }) };
        while let Ok(Out::Data(d)) = c.rx.try_recv() {
            c.sent(d.len());
        }
        tokio::time::timeout(Duration::from_millis(500), waiter).await.expect("room after progress").unwrap();
        // A client that makes no progress stops pacing after STALL.
        h.publish(&vec![b'z'; PACE_BACKLOG + 1]);
        let t = Instant::now();
        tokio::time::timeout(STALL * 3, h.room()).await.expect("a stalled client does not hold the terminal");
        assert!(t.elapsed() >= STALL / 2, "{:?}", t.elapsed());
    }

    #[test]
    fn late_attach_after_the_end_gets_the_replay_and_the_exit() {
        let h = hub();
        h.publish(b"bye");
        h.finish(Some(ExitInfo { code: Some(3), signal: None, at_ms: 1 }));
        let mut c = h.attach();
        assert_eq!(&c.replay[..], b"bye");
        assert!(matches!(c.rx.try_recv(), Ok(Out::Exit(Some(e))) if e.code == Some(3)));
        assert!(Size::checked(0, 10).is_err() && Size::checked(80, 24).is_ok() && Size::checked(1001, 5).is_err());
    }
}
