//! Ending a shell session's processes: SIGHUP (what a terminal hangup sends) to its process
//! group and to every process carrying the session's marker (job-control pipelines run in
//! groups of their own, `setsid` leaves the session), then SIGKILL to all of them after a
//! timeout.

use crate::engine::procs;
use crate::engine::spawn::SUPERVISOR_MARKER;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Env var naming the session in every process it starts.
pub const PTY_MARKER: &str = "SUPERVISOR_PTY";
/// How long the processes get after SIGHUP before SIGKILL.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Live processes of session `id`: its group `pgid` and every marked process.
async fn members(id: &str, pgid: i32) -> Vec<i32> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        let me = std::process::id().to_string();
        let mut pids = procs::marked(PTY_MARKER, &id, SUPERVISOR_MARKER, &me);
        for p in procs::group(pgid) {
            if !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
        pids
    })
    .await
    .unwrap_or_default()
}

/// Hangs up session `id` (leader `pgid`), then kills what is left after [`HANGUP_GRACE`].
/// Returns once nothing of it is alive (or SIGKILL was sent and 2 s more have passed).
pub async fn end_session(id: &str, pgid: i32) {
    let signal_all = |pids: &[i32], sig: Signal| {
        let _ = killpg(Pid::from_raw(pgid), sig);
        for p in pids {
            let _ = kill(Pid::from_raw(*p), sig);
        }
    };
    let pids = members(id, pgid).await;
    signal_all(&pids, Signal::SIGHUP);
    // Stopped jobs act on the hangup only once continued.
    signal_all(&pids, Signal::SIGCONT);
    let deadline = Instant::now() + HANGUP_GRACE;
    let mut left = members(id, pgid).await;
    while !left.is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(25)).await;
        left = members(id, pgid).await;
    }
    if left.is_empty() {
        return;
    }
    tracing::info!(session = id, left = left.len(), "terminal session processes ignored the hangup; killing them");
    signal_all(&left, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !members(id, pgid).await.is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(25)).await;
    }
}
