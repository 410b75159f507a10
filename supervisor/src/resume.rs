//! Pause/resume (SPEC §7): a frozen VM is not a failure. A wall-clock jump (the wall
//! clock moved much further than the monotonic clock), a stall of our own once-a-second
//! tick (the process was frozen: SIGSTOP, a cgroup freezer, a VM whose monotonic clock
//! kept running) or a change of E2B's sandbox id file starts a grace period in which probes re-run before any restart, and drops the
//! proxy's idle upstream connections.

use crate::engine::reaper::now_ms;
use crate::engine::Supervisor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A wall-clock jump larger than this (beyond monotonic time) counts as a resume.
pub const JUMP: Duration = Duration::from_secs(5);

/// When the last resume was seen (Unix ms, 0 = never).
static LAST_RESUME_MS: AtomicU64 = AtomicU64::new(0);

/// When the last resume was seen, if ever (Unix ms).
pub fn last_resume_ms() -> Option<u64> {
    Some(LAST_RESUME_MS.load(Ordering::Relaxed)).filter(|t| *t > 0)
}

fn read_id(path: &PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Watches for resumes once a second, forever.
pub async fn watch(sup: Arc<Supervisor>, id_file: PathBuf, grace: Duration) {
    let mut last_id = read_id(&id_file);
    if last_id.is_some() {
        tracing::info!(file = %id_file.display(), "sandbox id seen");
    }
    let (mut mono, mut wall) = (Instant::now(), SystemTime::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // After a freeze, one tick (not a burst of missed ones) that sees the whole gap.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (m, w) = (Instant::now(), SystemTime::now());
        let mono_d = m.duration_since(mono);
        let wall_d = w.duration_since(wall).unwrap_or_default();
        (mono, wall) = (m, w);
        let id = read_id(&id_file);
        let why = if wall_d > mono_d + JUMP {
            Some(format!("the wall clock jumped {:?} ahead", wall_d - mono_d))
        } else if mono_d > Duration::from_secs(1) + JUMP {
            Some(format!("this process was frozen for about {:?}", mono_d - Duration::from_secs(1)))
        } else if id != last_id && id.is_some() && last_id.is_some() {
            Some("the sandbox id changed".to_string())
        } else {
            None
        };
        if id.is_some() {
            if last_id.is_none() {
                tracing::info!(file = %id_file.display(), "sandbox id seen");
            }
            last_id = id;
        }
        if let Some(why) = why {
            tracing::info!("resumed ({why}): grace period of {grace:?}; idle upstream connections dropped");
            LAST_RESUME_MS.store(now_ms(), Ordering::Relaxed);
            sup.begin_grace(grace);
            crate::metrics::resumed();
            crate::proxy::drop_idle_connections();
        }
    }
}
