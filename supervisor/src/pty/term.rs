//! Starting a process on a new pseudo-terminal, and moving its bytes.
//!
//! `portable-pty` opens the pty pair at its initial size and resizes it later. The child
//! is NOT spawned with `SlavePty::spawn_command`: that calls `Command::spawn` itself and
//! its `Child` would have to be waited on, racing the supervisor's one reaper
//! ([`crate::engine::reaper`], `waitpid(-1)`), and it cannot drop privileges. Instead the
//! caller's `std::process::Command` (argv, env, cwd, user — built like every service's) gets
//! the slave as its stdio plus `setsid` + `TIOCSCTTY` (a session and process group of its
//! own, with the pty as controlling terminal), and is spawned through
//! [`Reaper::spawn`], so its exit status arrives where every other child's does. The
//! master's I/O runs on the Tokio reactor (a non-blocking dup of its fd): no thread per
//! terminal, and a stuck terminal blocks nothing.

use super::hub::{Hub, Size};
use crate::engine::reaper::{ExitInfo, Reaper};
use bytes::Bytes;
use portable_pty::{MasterPty, PtySize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

/// Largest chunk read from the terminal at once.
const READ_CHUNK: usize = 64 << 10;

/// A process running on its own terminal.
pub struct Terminal {
    /// Its pid, which is also its session and process group id.
    pub pid: i32,
    /// Resolves when the reaper reaps it.
    pub exit: oneshot::Receiver<ExitInfo>,
    /// The fan-out of its output.
    pub hub: Arc<Hub>,
    /// Resolves when its output has ended (every holder of the slave closed it).
    pub output_done: oneshot::Receiver<()>,
    /// The output pump (aborted when the terminal is torn down).
    pub pump: tokio::task::JoinHandle<()>,
}

/// Where output goes besides the hub (a `tty` service's log lines).
pub type Sink = Box<dyn FnMut(&[u8]) + Send>;

/// Who the terminal's slave device should belong to (the account the child runs as).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// Opens a pty of `size`, spawns `cmd` on it (see the module doc) and starts moving its
/// bytes: output to the hub (and `sink`), the hub's input to the terminal.
pub fn spawn(cmd: &mut Command, size: Size, owner: Option<Owner>, reaper: &Reaper, mut sink: Option<Sink>) -> std::io::Result<Terminal> {
    let io_err = |e: anyhow::Error| std::io::Error::other(e.to_string());
    let pair = portable_pty::native_pty_system()
        .openpty(PtySize { rows: size.rows, cols: size.cols, pixel_width: 0, pixel_height: 0 })
        .map_err(io_err)?;
    let master = pair.master;
    let name = master.tty_name().ok_or_else(|| std::io::Error::other("the pty has no device name"))?;
    // Our own handle on the slave, for the child's stdio (portable-pty keeps its fd private).
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {}: {e}", name.display())))?
        .into();
    drop(pair.slave);
    if let Some(o) = owner {
        // Like login(1): the user's terminal is theirs (tools that reopen it by name work).
        // SAFETY: plain syscalls on a valid fd.
        unsafe {
            libc::fchown(slave.as_raw_fd(), o.uid, o.gid);
            libc::fchmod(slave.as_raw_fd(), 0o620);
        }
    }
    cmd.stdin(Stdio::from(slave.try_clone()?)).stdout(Stdio::from(slave.try_clone()?)).stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: only async-signal-safe calls (setsid, ioctl) in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child, exit) = reaper.spawn(cmd)?;
    let pid = child.id() as i32;
    // The parent's copies of the slave: closed, so the output ends when the child's do.
    drop(child);
    drop(slave);

    let raw = master.as_raw_fd().ok_or_else(|| std::io::Error::other("the pty master has no fd"))?;
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own (or -1).
    let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    set_nonblocking(&fd)?;
    // SAFETY: the OwnedFd stays open and the same for the AsyncFd's whole life.
    let fd = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(|e| std::io::Error::other(e.to_string()))?);
    let master: Mutex<Box<dyn MasterPty + Send>> = Mutex::new(master);
    let resizer = Box::new(move |s: Size| {
        let m = master.lock().unwrap_or_else(|e| e.into_inner());
        m.resize(PtySize { rows: s.rows, cols: s.cols, pixel_width: 0, pixel_height: 0 }).map_err(|e| e.to_string())
    });
    let (hub, input) = Hub::new(size, resizer);
    tokio::spawn(feed(fd.clone(), input));
    let (done_tx, output_done) = oneshot::channel();
    let h = hub.clone();
    let pump = tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            h.room().await;
            let Ok(mut ready) = fd.readable().await else { break };
            // SAFETY: reading into our own buffer from a valid fd.
            match ready.try_io(|f| {
                let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
            }) {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    h.publish(&buf[..n]);
                    if let Some(s) = sink.as_mut() {
                        s(&buf[..n]);
                    }
                }
                // EIO: every holder of the slave closed it.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => break,
                Err(_would_block) => {}
            }
        }
        let _ = done_tx.send(());
    });
    Ok(Terminal { pid, exit, hub, output_done, pump })
}

/// Writes the hub's input to the terminal, in order, waiting while the terminal's input
/// buffer is full (the client that sent it waits, nobody else).
async fn feed(fd: Arc<AsyncFd<OwnedFd>>, mut input: mpsc::Receiver<Bytes>) {
    while let Some(data) = input.recv().await {
        let mut at = 0;
        while at < data.len() {
            let Ok(mut ready) = fd.writable().await else { return };
            // SAFETY: writing from a live buffer to a valid fd.
            match ready.try_io(|f| {
                let n = unsafe { libc::write(f.as_raw_fd(), data[at..].as_ptr().cast(), data.len() - at) };
                if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
            }) {
                Ok(Ok(n)) => at += n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return,
                Err(_would_block) => {}
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a valid fd.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;
