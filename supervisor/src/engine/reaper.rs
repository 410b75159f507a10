//! The one reaper: the supervisor is a child subreaper; a single task waits for SIGCHLD,
//! reaps every exited child with `waitpid(-1)`, and hands each status to whoever spawned
//! that pid. Orphans reparented to us are reaped too (and logged at debug level).

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;
use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, Notify};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// When it was reaped (Unix ms).
    #[serde(rename = "at")]
    pub at_ms: u64,
}

impl ExitInfo {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (_, Some(s)) => {
                let name = nix::sys::signal::Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?");
                write!(f, "signal {s} ({name})")
            }
            _ => write!(f, "unknown exit"),
        }
    }
}

/// Dispatches exit statuses by pid. Create one per process with [`Reaper::install`].
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitInfo>>>,
    /// Woken after every pass that reaped anything, orphans included.
    reaped: Notify,
}

impl Reaper {
    /// Becomes a child subreaper, listens for SIGCHLD and starts the reaping task.
    /// Must be called inside a Tokio runtime, before any child is spawned.
    pub fn install() -> std::io::Result<Arc<Reaper>> {
        // SAFETY: prctl with these arguments has no memory effects.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!("PR_SET_CHILD_SUBREAPER failed: {}", std::io::Error::last_os_error());
        }
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper { waiting: Mutex::new(HashMap::new()), reaped: Notify::new() });
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                // A coalesced or missed signal is covered by the periodic sweep.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sigchld.recv()).await;
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and registers its pid, atomically with respect to reaping, so an
    /// exit that happens at once is never lost. The receiver yields the exit status.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<ExitInfo>)> {
        let mut waiting = self.waiting.lock().expect("reaper lock");
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Resolves once the reaper has next reaped a process, any process: the members of a
    /// group whose leader died are reparented to us, so their exits arrive here, and a
    /// wait for the group to be gone can look again at once instead of on its next poll.
    /// Registered when called (before it is first polled), so no reap after the call is missed.
    pub fn reaped(&self) -> Notified<'_> {
        self.reaped.notified()
    }

    /// Reaps every child that has exited, then wakes whoever waits on [`Reaper::reaped`].
    fn reap_all(&self) {
        let mut any = false;
        while self.reap_one() {
            any = true;
        }
        if any {
            self.reaped.notify_waiters();
        }
    }

    /// Reaps one exited child and hands its status on; false when none is left to reap.
    fn reap_one(&self) -> bool {
        loop {
            let mut waiting = self.waiting.lock().expect("reaper lock");
            let (pid, info) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitInfo { code: Some(code), signal: None, at_ms: now_ms() }),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, ExitInfo { code: None, signal: Some(sig as i32), at_ms: now_ms() })
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return false,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    return false;
                }
            };
            match waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(info);
                }
                None => tracing::debug!(pid = pid.as_raw(), "reaped orphan: {info}"),
            }
            return true;
        }
    }
}

/// Now as Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
