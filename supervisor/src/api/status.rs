//! The `status` document (SPEC §5), shared by `GET /_supervisor/status` and `ctl status --json`.

use crate::engine::procs;
use crate::engine::{ServiceStatus, Supervisor};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One service in the status document.
#[derive(Debug, Serialize)]
pub struct ServiceReport {
    /// Status fields (name, state, pid, ready, restarts, last_exit, started_at, ready_at, message, required).
    #[serde(flatten)]
    pub status: ServiceStatus,
    /// Resident memory of the whole process group.
    pub rss_bytes: u64,
    /// CPU use of the group since the previous status read (or since start), in percent of one core.
    pub cpu_percent: f64,
}

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Supervisor version.
    pub version: &'static str,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Every required service is ready (and a `required` port guard is active), as `/readyz`.
    pub ready: bool,
    /// When the supervisor started (Unix ms), the base of `started_at`/`ready_at`.
    pub started_at: u64,
    /// The firewall guard of the internal ports.
    pub port_guard: crate::guard::GuardStatus,
    /// When the last pause/resume was seen (Unix ms), if ever.
    pub resumed_at: Option<u64>,
    /// A resume grace period is running (no restarts on liveness failures).
    pub resume_grace: bool,
    /// Variables left out of the injected environment (too large for a process), with
    /// the reason: names only, never values.
    pub env_dropped: Vec<crate::inject::Dropped>,
    /// Services in start order.
    pub services: Vec<ServiceReport>,
    /// The machine: memory, disk free of the app dir, load, CPUs.
    pub system: crate::sysstats::SystemStats,
}

/// Remembers the last CPU sample per service so `cpu_percent` is a recent rate.
#[derive(Default)]
pub struct CpuSampler {
    last: Mutex<HashMap<i32, (u64, Instant)>>,
}

impl CpuSampler {
    fn percent(&self, pgid: i32, ticks: u64, started_at_ms: Option<u64>) -> f64 {
        let now = Instant::now();
        let hz = procs::ticks_per_sec() as f64;
        let mut last = self.last.lock().expect("cpu lock");
        let pct = match last.get(&pgid) {
            Some((t0, at)) if now.duration_since(*at).as_secs_f64() > 0.05 && ticks >= *t0 => {
                (ticks - t0) as f64 / hz / now.duration_since(*at).as_secs_f64() * 100.0
            }
            _ => {
                let age = started_at_ms.map(|s| crate::engine::reaper::now_ms().saturating_sub(s)).unwrap_or(0) as f64 / 1000.0;
                if age > 0.0 { ticks as f64 / hz / age * 100.0 } else { 0.0 }
            }
        };
        last.insert(pgid, (ticks, now));
        (pct * 10.0).round() / 10.0
    }
}

/// Builds the status document, reading `/proc` on a blocking thread.
pub async fn report_async(st: &super::ApiState) -> StatusReport {
    let (all, system) = tokio::join!(procs::live_async(), crate::sysstats::sample_async(st.sup.app_dir()));
    report(&st.sup, &st.cpu, &st.guard, &all, system)
}

/// Builds the status document from the processes `all` seen in `/proc`.
pub fn report(sup: &Supervisor, cpu: &CpuSampler, guard: &crate::guard::PortGuard, all: &[procs::ProcStat], system: crate::sysstats::SystemStats) -> StatusReport {
    let services = sup
        .statuses()
        .into_iter()
        .map(|status| {
            let (rss, pct) = match status.pid {
                Some(pgid) => {
                    let members = all.iter().filter(|p| p.pgid == pgid);
                    let (rss, ticks) = members.fold((0, 0), |(r, t), p| (r + p.rss_bytes, t + p.cpu_ticks));
                    (rss, cpu.percent(pgid, ticks, status.started_at))
                }
                None => (0, 0.0),
            };
            ServiceReport { status, rss_bytes: rss, cpu_percent: pct }
        })
        .collect();
    StatusReport {
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: sup.uptime_ms(),
        ready: sup.ready() && guard.not_ready_reason().is_none(),
        started_at: sup.started_ms(),
        port_guard: guard.status(),
        resumed_at: crate::resume::last_resume_ms(),
        resume_grace: sup.in_grace(),
        env_dropped: sup.injected_dropped(),
        services,
        system,
    }
}
