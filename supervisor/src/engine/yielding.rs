//! While the stack boots, services that are already ready yield the CPU to the ones still
//! starting.
//!
//! Why: on the VM's two cores the boot is CPU-bound (the five services need more CPU until
//! ready than the cores have in that time), and a service keeps working after its readiness
//! passes: Chromium goes on starting its GPU, network and renderer processes for about a
//! second after CDP answers, work nothing waits for while the agent and Playwright MCP are
//! still loading. So a ready service's threads run under `SCHED_IDLE` until every required
//! service is ready (or [`LIMIT`] passes), and then go back to `SCHED_OTHER`.
//!
//! Why `SCHED_IDLE` and not a niceness: a thread's nice value survives the switch to
//! `SCHED_IDLE` and back, so the priorities a service gives its own threads (Chromium sets
//! some to nice 10, others lower) are kept, and "yielded" is a state that can be read back
//! from every thread (its policy), not remembered; a thread the service started while
//! yielding inherits the policy and is put back with the rest.
//!
//! A service that another still-starting service waits for to be *ready* does not yield
//! (Xvfb while Chromium starts: Chromium's start waits on the X server's answers). Only as
//! root: leaving `SCHED_IDLE` needs `CAP_SYS_NICE`, and a yield that could not be undone
//! would leave the service slow for good.

use super::procs;
use super::spawn::{SERVICE_MARKER, SUPERVISOR_MARKER};
use super::{ServiceStatus, Shared, State};
use crate::config::DependsCondition;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The longest a boot yields: past it every service runs at its own priority again, the
/// stack ready or not (a service that never gets ready must not keep the others idle).
pub const LIMIT: Duration = Duration::from_secs(30);
/// Passes of the put-back over a service's threads: a thread started by a still-idle
/// thread during a pass is caught by the next one.
const RESTORE_PASSES: usize = 5;

/// A thread's scheduling policy, as the kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`, the default.
    Other,
    /// `SCHED_IDLE`: runs only when nothing else wants the CPU.
    Idle,
}

impl Policy {
    fn raw(self) -> libc::c_int {
        match self {
            Policy::Other => libc::SCHED_OTHER,
            Policy::Idle => libc::SCHED_IDLE,
        }
    }
}

/// Sets thread `tid`'s policy. A raw system call: musl's `sched_setscheduler` is a stub
/// that fails with `ENOSYS` (the call is per thread, POSIX's per process).
fn set_policy(tid: i32, policy: Policy) -> std::io::Result<()> {
    // The kernel's `struct sched_param` is one int, the priority (0 for both policies);
    // musl's type has more fields, so the kernel's layout is passed as it is.
    let priority: libc::c_int = 0;
    // SAFETY: `priority` outlives the call; the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_sched_setscheduler, tid, policy.raw(), &priority as *const libc::c_int) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Thread `tid`'s policy (None if it is gone or has another one).
pub fn policy_of(tid: i32) -> Option<Policy> {
    // SAFETY: no pointers; a plain query.
    let r = unsafe { libc::syscall(libc::SYS_sched_getscheduler, tid) };
    [Policy::Other, Policy::Idle].into_iter().find(|p| r == libc::c_long::from(p.raw()))
}

/// Every thread of the processes `pids`.
fn threads(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten())
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Puts every thread of group `pgid` that has policy `from` under `to`; returns how many.
fn switch_group(pgid: i32, from: Policy, to: Policy, extra: &[i32]) -> usize {
    let mut pids: Vec<i32> = procs::group(pgid).into_iter().map(|p| p.pid).collect();
    pids.extend_from_slice(extra);
    threads(&pids).into_iter().filter(|t| policy_of(*t) == Some(from) && set_policy(*t, to).is_ok()).count()
}

/// Makes every thread of group `pgid` yield (blocking: reads `/proc`).
pub fn yield_group(pgid: i32) -> usize {
    switch_group(pgid, Policy::Other, Policy::Idle, &[])
}

/// Puts every yielded thread of group `pgid`, and of `service`'s processes that left it,
/// back under `SCHED_OTHER`, pass after pass until one finds none (blocking).
pub fn restore_group(pgid: i32, service: &str) -> usize {
    let me = std::process::id().to_string();
    let escaped = procs::marked(SERVICE_MARKER, service, SUPERVISOR_MARKER, &me);
    let mut total = 0;
    for _ in 0..RESTORE_PASSES {
        let n = switch_group(pgid, Policy::Idle, Policy::Other, &escaped);
        total += n;
        if n == 0 {
            break;
        }
    }
    total
}

/// Whether this process may undo a yield (leaving `SCHED_IDLE` needs `CAP_SYS_NICE`).
fn can_restore() -> bool {
    // SAFETY: no arguments, no memory effects.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the boot's yielding: from the supervisor's start until every required service is
/// ready, the stack shuts down, or [`LIMIT`] passes; then puts every yielded service back.
pub(crate) async fn while_booting(shared: Arc<Shared>, waits_for_ready: HashMap<String, Vec<String>>) {
    if !can_restore() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut tick = shared.tick.subscribe();
    // Service name -> the pid (group) that was made to yield.
    let mut yielded: HashMap<String, i32> = HashMap::new();
    loop {
        let statuses: Vec<ServiceStatus> = shared.statuses.read().expect("statuses").values().map(|r| r.borrow().clone()).collect();
        if shared.is_shutting_down() || statuses.iter().all(|s| !s.required || s.ready) {
            break;
        }
        for (name, pid) in to_yield(&statuses, &waits_for_ready, &yielded) {
            yielded.insert(name.clone(), pid);
            let n = tokio::task::spawn_blocking(move || yield_group(pid)).await.unwrap_or(0);
            tracing::debug!(service = %name, threads = n, "ready while the stack boots: yielding the CPU to the services still starting");
        }
        tokio::select! {
            r = tick.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    for (name, pid) in yielded {
        let service = name.clone();
        let n = tokio::task::spawn_blocking(move || restore_group(pid, &service)).await.unwrap_or(0);
        tracing::debug!(service = %name, threads = n, "the boot is over: back to its own priority");
    }
}

/// The services to make yield now, with their pids: ready, not yielded already in this
/// process, and not waited for to be ready by a service still starting.
fn to_yield(statuses: &[ServiceStatus], waits_for_ready: &HashMap<String, Vec<String>>, yielded: &HashMap<String, i32>) -> Vec<(String, i32)> {
    let starting = |name: &str| statuses.iter().any(|s| s.name == name && !s.ready && matches!(s.state, State::Pending | State::Starting | State::Running | State::Backoff));
    statuses
        .iter()
        .filter_map(|s| Some((s, s.pid.filter(|_| s.ready)?)))
        .filter(|(s, pid)| yielded.get(&s.name) != Some(pid))
        .filter(|(s, _)| !waits_for_ready.get(&s.name).is_some_and(|ds| ds.iter().any(|d| starting(d))))
        .map(|(s, pid)| (s.name.clone(), pid))
        .collect()
}

/// For each service, the services that wait for it to be ready (`depends_on = "ready"`).
pub fn ready_dependents(services: &[crate::config::ServiceSpec]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for s in services {
        for (dep, cond) in &s.depends_on {
            if *cond == DependsCondition::Ready {
                out.entry(dep.clone()).or_default().push(s.name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Policy of every thread of group `pgid`.
    fn policies(pgid: i32) -> Vec<Option<Policy>> {
        threads(&procs::group(pgid).into_iter().map(|p| p.pid).collect::<Vec<_>>()).into_iter().map(policy_of).collect()
    }

    #[test]
    fn a_yielded_group_and_what_it_starts_meanwhile_are_all_put_back() {
        if !can_restore() {
            eprintln!("skipped: needs root (CAP_SYS_NICE) to leave SCHED_IDLE");
            return;
        }
        use std::os::unix::process::CommandExt;
        // A group whose leader starts a second process only once told to (a file appears).
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let script = format!("sleep 30 & while [ ! -e {0} ]; do sleep 0.01; done; sleep 30 & echo started > {0}.done; wait", go.display());
        let mut child = Command::new("sh").arg("-c").arg(&script).stdin(Stdio::null()).process_group(0).spawn().unwrap();
        let pgid = child.id() as i32;
        let guard = scopeguard(pgid);
        while procs::group(pgid).len() < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(yield_group(pgid) >= 2);
        assert!(policies(pgid).iter().all(|p| *p == Some(Policy::Idle)), "{:?}", policies(pgid));
        // Started while yielded: inherits SCHED_IDLE.
        std::fs::write(&go, "").unwrap();
        while !dir.path().join("go.done").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(procs::group(pgid).len(), 3);
        assert!(policies(pgid).iter().all(|p| *p == Some(Policy::Idle)), "the new process inherits the yield: {:?}", policies(pgid));
        assert_eq!(restore_group(pgid, "no-such-service"), 3);
        assert!(policies(pgid).iter().all(|p| *p == Some(Policy::Other)), "{:?}", policies(pgid));
        drop(guard);
        let _ = child.wait();
    }

    #[test]
    fn a_service_waited_for_to_be_ready_is_known() {
        let text = "[services.x]\ncommand=[\"true\"]\n[services.c]\ncommand=[\"true\"]\ndepends_on={x=\"ready\"}\n[services.m]\ncommand=[\"true\"]\ndepends_on={c=\"started\"}\n";
        let cfg = crate::config::resolve("t.toml", std::path::Path::new("/"), text, &Default::default()).unwrap();
        let deps = ready_dependents(&cfg.services);
        assert_eq!(deps.get("x"), Some(&vec!["c".to_string()]));
        assert_eq!(deps.get("c"), None, "a `started` dependency does not hold back the yield");
    }

    fn status(name: &str, pid: Option<i32>, ready: bool) -> ServiceStatus {
        ServiceStatus { pid, ready, state: if ready { State::Ready } else { State::Running }, ..ServiceStatus::new(name, true) }
    }

    #[test]
    fn only_ready_services_nobody_starting_waits_for_yield_and_each_process_once() {
        let waits: HashMap<String, Vec<String>> = [("xvfb".to_string(), vec!["chromium".to_string()])].into();
        let names = |v: Vec<(String, i32)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        // Xvfb ready, Chromium starting: Xvfb is needed, Vite not ready yet.
        let board = [status("xvfb", Some(1), true), status("chromium", Some(2), false), status("vite", Some(3), false)];
        assert!(to_yield(&board, &waits, &HashMap::new()).is_empty());
        // Chromium ready: both yield; Vite still starting.
        let board = [status("xvfb", Some(1), true), status("chromium", Some(2), true), status("vite", Some(3), false)];
        assert_eq!(names(to_yield(&board, &waits, &HashMap::new())), ["xvfb", "chromium"]);
        // Already yielded: not again; restarted under a new pid: yields again.
        let done: HashMap<String, i32> = [("xvfb".to_string(), 1), ("chromium".to_string(), 9)].into();
        assert_eq!(to_yield(&board, &waits, &done), [("chromium".to_string(), 2)]);
    }

    /// SIGKILLs group `pgid` when dropped (also when an assertion fails).
    fn scopeguard(pgid: i32) -> impl Drop {
        struct G(i32);
        impl Drop for G {
            fn drop(&mut self) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
            }
        }
        G(pgid)
    }
}
