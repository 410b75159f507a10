//! Stopping a process group: the stop signal, a grace period, then SIGKILL to the whole
//! group; the group is watched after its leader exits, and processes of the service that
//! escaped the group (new session, reparented to us) are killed at the end.

use super::procs;
use super::reaper::{ExitInfo, Reaper};
use super::spawn::{SERVICE_MARKER, SUPERVISOR_MARKER};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

/// How often a group that is not gone yet is looked at again, at the latest: members the
/// supervisor reaps itself (a dead leader's, reparented to it) wake the wait sooner.
const POLL: Duration = Duration::from_millis(20);

/// Whether any process of group `pgid` is alive (zombies don't count); the `/proc` scan
/// runs on a blocking thread.
async fn group_alive_async(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(_) => false,
        Ok(()) => !procs::group_async(pgid).await.is_empty(),
    }
}

/// Stops group `pgid` whose leader's exit arrives on `exit` (None if already reaped).
/// Sends `signal`, waits up to `grace` for the leader and the whole group, then SIGKILLs
/// the group, and finally kills processes of `service` that left the group.
/// Returns the leader's exit status if it was still pending.
pub async fn stop_group(
    reaper: &Reaper,
    service: &str,
    pgid: i32,
    signal: Signal,
    grace: Duration,
    exit: Option<&mut oneshot::Receiver<ExitInfo>>,
) -> Option<ExitInfo> {
    let _ = killpg(Pid::from_raw(pgid), signal);
    let deadline = Instant::now() + grace;
    let mut status = None;
    let mut exit = exit;
    // Wait for the leader.
    if let Some(rx) = exit.as_deref_mut() {
        if let Ok(Ok(info)) = timeout(grace, rx).await {
            status = Some(info);
        }
    }
    // Then for the rest of the group, until the same deadline.
    wait_group_gone(reaper, pgid, deadline).await;
    if group_alive_async(pgid).await || (status.is_none() && exit.is_some()) {
        tracing::warn!(service, pgid, "did not stop within {grace:?}; sending SIGKILL to the group");
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        if status.is_none() {
            if let Some(rx) = exit.as_deref_mut() {
                if let Ok(Ok(info)) = timeout(Duration::from_secs(5), rx).await {
                    status = Some(info);
                }
            }
        }
        wait_group_gone(reaper, pgid, Instant::now() + Duration::from_secs(2)).await;
    }
    kill_escapees_async(service).await;
    status
}

/// Waits until no process of group `pgid` is alive or `deadline` passes, looking again
/// after each reap and at least every [`POLL`]. Once a leader is dead its own children are
/// the supervisor's (it is their subreaper), so their ends are reaps and a restart waits for
/// the last one's exit, not for the next poll after it; a member whose own parent is still
/// alive is reaped by that parent, and the poll covers it.
async fn wait_group_gone(reaper: &Reaper, pgid: i32, deadline: Instant) {
    loop {
        // Registered before the look, so a reap during it is not missed.
        let reaped = reaper.reaped();
        if !group_alive_async(pgid).await || Instant::now() >= deadline {
            return;
        }
        let _ = timeout(POLL.min(deadline.saturating_duration_since(Instant::now())), reaped).await;
    }
}

/// [`kill_escapees`] on a blocking thread (it scans every process's environment).
pub async fn kill_escapees_async(service: &str) {
    let service = service.to_string();
    let _ = tokio::task::spawn_blocking(move || kill_escapees(&service)).await;
}

/// SIGKILLs every process still carrying `service`'s marker from this supervisor.
pub fn kill_escapees(service: &str) {
    let me = std::process::id().to_string();
    let pids = procs::marked(SERVICE_MARKER, service, SUPERVISOR_MARKER, &me);
    for pid in &pids {
        tracing::info!(service, pid, "killing a process of the service that left its group");
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}
