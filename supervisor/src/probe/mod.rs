//! Probes: one attempt of each kind ([`attempt`]) and the loop that runs a probe with
//! Kubernetes semantics and reports transitions ([`run`]).
//!
//! Timing: until a probe has passed (and again after it fails), it is retried quickly
//! (every [`fast_interval`]) so readiness is seen within milliseconds of a port opening;
//! once passed it runs every `period`. Failures are counted per `period`, so fast retries
//! never make a threshold trip sooner than `failure_threshold × period`.

mod cdp;
pub mod http;
pub mod log;
mod x11;

use crate::config::{ProbeKind, ProbeSpec};
use crate::engine::reaper::Reaper;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

/// What a probe loop reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed `success_threshold` times in a row.
    Pass,
    /// Failed for `failure_threshold` periods in a row.
    Fail,
}

/// The retry interval while a probe has not (yet, or any more) passed.
pub fn fast_interval(spec: &ProbeSpec) -> Duration {
    let fast = match spec.kind {
        ProbeKind::Tcp(_) | ProbeKind::File(_) | ProbeKind::X11(_) => Duration::from_millis(5),
        ProbeKind::Http { .. } | ProbeKind::Cdp(_) => Duration::from_millis(10),
        ProbeKind::Exec(_) => Duration::from_millis(50),
        // Event-driven (see [`log::watch`]); never polled.
        ProbeKind::Log(_) => Duration::from_millis(50),
    };
    fast.min(spec.period)
}

/// Runs one attempt of `spec` within its timeout.
pub async fn attempt(spec: &ProbeSpec, reaper: &Reaper) -> Result<(), String> {
    match timeout(spec.timeout, attempt_inner(&spec.kind, reaper, spec.timeout)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", spec.timeout)),
    }
}

async fn attempt_inner(kind: &ProbeKind, reaper: &Reaper, limit: Duration) -> Result<(), String> {
    match kind {
        ProbeKind::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str()).await.map(drop).map_err(|e| e.to_string()),
        ProbeKind::Http { url, status, headers } => {
            let a = http::get(url, headers, false).await?;
            let ok = match status {
                Some(s) => a.status == *s,
                None => (200..400).contains(&a.status),
            };
            if ok {
                Ok(())
            } else {
                Err(format!("status {}", a.status))
            }
        }
        ProbeKind::Cdp(base) => cdp::check(base).await,
        ProbeKind::X11(display) => x11::check(display).await,
        ProbeKind::File(p) => {
            if tokio::fs::try_exists(p).await.unwrap_or(false) {
                Ok(())
            } else {
                Err(format!("{} does not exist", p.display()))
            }
        }
        ProbeKind::Exec(argv) => exec(argv, reaper, limit).await,
        ProbeKind::Log(_) => Err("a log probe watches the service's output; it is not polled".into()),
    }
}

/// Runs a command in its own process group; success is exit 0. Killed at the timeout.
async fn exec(argv: &[String], reaper: &Reaper, limit: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    let (child, rx) = reaper.spawn(&mut cmd).map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Whatever happens to this future (exit, timeout, cancellation), the group dies.
    struct KillOnDrop(nix::unistd::Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _guard = KillOnDrop(pgid);
    match timeout(limit, rx).await {
        Ok(Ok(info)) => {
            if info.success() {
                Ok(())
            } else {
                Err(format!("{} ended with {info}", argv[0]))
            }
        }
        _ => Err(format!("timed out after {limit:?}")),
    }
}

/// Runs `spec` forever (until the receiver of `tx` is gone), sending `Pass` when it
/// passes (after not passing) and `Fail` after every `failure_threshold` periods of
/// failures. `passed_first` is whether the probe starts out as passed (liveness does).
/// Every attempt's duration goes to `supervisor_probe_duration_seconds` of `service`.
pub async fn run(spec: ProbeSpec, reaper: Arc<Reaper>, tx: mpsc::Sender<Verdict>, passed_first: bool, service: String) {
    let timers = crate::metrics::probe_timers(&service, spec.kind.name());
    sleep(spec.initial_delay).await;
    let mut passed = passed_first;
    let mut successes = 0u32;
    let mut failing_since: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = attempt(&spec, &reaper).await;
        timers.observe(result.is_ok(), started.elapsed());
        match result {
            Ok(()) => {
                failing_since = None;
                failures = 0;
                successes += 1;
                if !passed && successes >= spec.success_threshold {
                    passed = true;
                    if tx.send(Verdict::Pass).await.is_err() {
                        return;
                    }
                }
            }
            Err(why) => {
                successes = 0;
                // Count at most one failure per period.
                let since = *failing_since.get_or_insert(started);
                let periods = (started.duration_since(since).as_millis() / spec.period.as_millis().max(1)) as u32 + 1;
                if periods > failures {
                    failures = periods;
                    tracing::debug!(probe = %spec.kind.describe(), failures, "probe failed: {why}");
                }
                if failures >= spec.failure_threshold {
                    // Reported again after every further threshold of failures, so a
                    // verdict ignored (e.g. during a resume grace period) comes back.
                    failing_since = None;
                    failures = 0;
                    passed = false;
                    if tx.send(Verdict::Fail).await.is_err() {
                        return;
                    }
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        let wait = if passed && failing_since.is_none() { spec.period } else { fast_interval(&spec) };
        sleep(wait.saturating_sub(started.elapsed().min(wait))).await;
    }
}
