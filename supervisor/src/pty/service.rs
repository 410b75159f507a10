//! `tty = true` services: the engine spawns them on a pseudo-terminal (see
//! [`crate::engine::spawn`]); their output goes to the log ring and stdout as lines
//! (control sequences stripped) and, raw, to the terminals attached with `ctl attach`.
//! The slot holds the terminal of the service's current process (a restart replaces it).

use super::hub::{Hub, Size};
use super::term::{self, Owner};
use crate::engine::reaper::{ExitInfo, Reaper};
use crate::logs::LogBuffer;
use std::process::Command;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The terminal of a `tty` service's current process, if it runs.
#[derive(Default)]
pub struct TtySlot {
    current: Mutex<Option<Arc<Hub>>>,
}

impl TtySlot {
    /// The running process's terminal.
    pub fn hub(&self) -> Option<Arc<Hub>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Spawns `cmd` (already set up as the service) on a new terminal owned by `owner`
    /// (uid, gid); returns its pid and exit receiver for the engine.
    pub fn spawn(&self, cmd: &mut Command, owner: Option<(u32, u32)>, reaper: &Reaper, logs: &Arc<LogBuffer>) -> std::io::Result<(i32, oneshot::Receiver<ExitInfo>)> {
        // The size the last client set survives a restart.
        let size = self.hub().map(|h| h.size()).unwrap_or(Size { cols: 80, rows: 24 });
        let owner = owner.map(|(uid, gid)| Owner { uid, gid });
        let t = term::spawn(cmd, size, owner, reaper, Some(super::strip::log_sink(logs.clone())))?;
        let hub = t.hub.clone();
        let old = self.current.lock().unwrap_or_else(|e| e.into_inner()).replace(hub.clone());
        if let Some(old) = old {
            old.finish(None);
        }
        let output_done = t.output_done;
        tokio::spawn(async move {
            let _ = output_done.await;
            hub.finish(None);
        });
        Ok((t.pid, t.exit))
    }

}
