//! While the stack boots, services that are already ready yield the CPU to the ones still
//! starting.
//!
//! Why: on the VM's two cores the boot is CPU-bound (the five services need more CPU until
//! ready than the cores have in that time), and a service keeps working after its readiness
//! passes (Chromium spends about half a CPU-second in the seconds after CDP answers:
//! `bench/chromium-start.py`), work nothing waits for while the agent and Playwright MCP
//! are still loading. So a ready service's threads run under `SCHED_IDLE` until every
//! required service is ready (or [`LIMIT`] passes), and then go back to `SCHED_OTHER`.
//!
//! Why `SCHED_IDLE` and not a niceness: a thread's nice value survives the switch to
//! `SCHED_IDLE` and back, so the priorities a service gives its own threads (Chromium sets
//! some to nice 10, others lower) are kept; and a thread the service starts while yielding
//! inherits the policy, so "yielded" can be read back from every thread and none is missed
//! when the service is put back. Threads that were idle before the yield (the service's
//! own choice) stay so; one the service makes idle during it is put back with the rest.
//!
//! A service that a still-starting service waits for to be *ready* does not yield (Xvfb
//! while Chromium starts: Chromium's start waits on the X server's answers), and a yielded
//! one is put back at once when it stops being ready or such a service starts again.
//! Only where a thread can leave `SCHED_IDLE` again (`CAP_SYS_NICE` or a high enough
//! `RLIMIT_NICE`, checked by trying):
//! a yield that could not be undone would leave the service slow for good.

use super::procs;
use super::spawn::{SERVICE_MARKER, SUPERVISOR_MARKER};
use super::{ServiceStatus, Shared, State};
use crate::config::DependsCondition;
use std::collections::{HashMap, HashSet};
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

/// The processes of `service` started by this supervisor: its group `pgid`, and those that
/// left it but carry its marker (the ACP agent runs in a group of its own under
/// `supervisor acp`; Chromium's crash handler starts a session of its own). Blocking.
fn service_pids(pgid: i32, service: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = procs::group(pgid).into_iter().map(|p| p.pid).collect();
    let me = std::process::id().to_string();
    pids.extend(procs::marked(SERVICE_MARKER, service, SUPERVISOR_MARKER, &me).into_iter().filter(|p| !pids.contains(p)).collect::<Vec<_>>());
    pids
}

/// Makes every thread of `service` (group `pgid`) yield. Returns the threads that were
/// idle already (the service's own choice, left as they are when it is put back), and how
/// many were switched. Blocking: reads `/proc`.
pub fn yield_service(pgid: i32, service: &str) -> (HashSet<i32>, usize) {
    let mut already = HashSet::new();
    let mut switched = 0;
    for t in threads(&service_pids(pgid, service)) {
        match policy_of(t) {
            Some(Policy::Idle) => {
                already.insert(t);
            }
            Some(Policy::Other) if set_policy(t, Policy::Idle).is_ok() => switched += 1,
            _ => {}
        }
    }
    (already, switched)
}

/// Puts every idle thread of `service` (group `pgid`, and its processes that left it) back
/// under `SCHED_OTHER`, but those in `keep`, pass after pass until one finds none: a thread
/// or process started by a still-idle one during a pass is caught by the next. Returns
/// how many were put back and how many are still idle (could not be put back, or still
/// turning up after the last pass). Blocking.
pub fn restore_service(pgid: i32, service: &str, keep: &HashSet<i32>) -> (usize, usize) {
    let idle_now = || -> Vec<i32> { threads(&service_pids(pgid, service)).into_iter().filter(|t| !keep.contains(t) && policy_of(*t) == Some(Policy::Idle)).collect() };
    let mut restored = 0;
    for _ in 0..RESTORE_PASSES {
        let idle = idle_now();
        if idle.is_empty() {
            return (restored, 0);
        }
        restored += idle.into_iter().filter(|t| set_policy(*t, Policy::Other).is_ok()).count();
    }
    (restored, idle_now().len())
}

/// Whether yielding can be undone here: this thread runs under `SCHED_OTHER` (a supervisor
/// started idle gives its services that policy, which is not ours to change), and a thread
/// of ours can go to `SCHED_IDLE` and back. Root alone is not enough: leaving `SCHED_IDLE`
/// needs `CAP_SYS_NICE` in the initial user namespace, which a container or a user
/// namespace may not grant.
fn can_yield() -> bool {
    // SAFETY: no arguments; gettid cannot fail.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    if policy_of(me) != Some(Policy::Other) {
        return false;
    }
    std::thread::spawn(|| {
        // SAFETY: as above.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        set_policy(tid, Policy::Idle).is_ok() && set_policy(tid, Policy::Other).is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// One service made to yield: the pid (group) it was, and its threads that were idle
/// before (left idle when it is put back).
struct Yielded {
    pid: i32,
    keep: HashSet<i32>,
}

/// Runs the boot's yielding: from the supervisor's start until every required service is
/// ready, the stack shuts down, or [`LIMIT`] passes; then puts every yielded service back.
/// A yielded service that stops being ready, or that a service starting again waits for,
/// is put back at once.
pub(crate) async fn while_booting(shared: Arc<Shared>, waits_for_ready: HashMap<String, Vec<String>>) {
    if !tokio::task::spawn_blocking(can_yield).await.unwrap_or(false) {
        tracing::debug!("the boot does not yield the CPU: leaving SCHED_IDLE is not allowed here (CAP_SYS_NICE)");
        return;
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut tick = shared.tick.subscribe();
    let mut yielded: HashMap<String, Yielded> = HashMap::new();
    loop {
        if shared.is_shutting_down() || shared.all_ready() {
            break;
        }
        let should = should_yield(&shared.snapshot(), &waits_for_ready);
        let stale: Vec<String> = yielded.iter().filter(|(n, y)| should.get(*n) != Some(&y.pid)).map(|(n, _)| n.clone()).collect();
        for name in stale {
            let y = yielded.remove(&name).expect("listed");
            put_back(name, y, "no longer ready, or needed by a service starting again").await;
        }
        for (name, pid) in should {
            if yielded.contains_key(&name) {
                continue;
            }
            let service = name.clone();
            let (keep, n) = tokio::task::spawn_blocking(move || yield_service(pid, &service)).await.unwrap_or_default();
            tracing::debug!(service = %name, threads = n, "ready while the stack boots: yielding the CPU to the services still starting");
            yielded.insert(name, Yielded { pid, keep });
        }
        tokio::select! {
            r = tick.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    for (name, y) in yielded {
        put_back(name, y, "the boot is over").await;
    }
}

/// [`restore_service`] off the event loop, logged; a thread that could not be put back is
/// a warning (it would stay slow).
async fn put_back(name: String, y: Yielded, why: &'static str) {
    let service = name.clone();
    let (restored, failed) = tokio::task::spawn_blocking(move || restore_service(y.pid, &service, &y.keep)).await.unwrap_or((0, 1));
    if failed > 0 {
        tracing::warn!(service = %name, threads = failed, "could not put threads back from SCHED_IDLE: they stay idle");
    } else {
        tracing::debug!(service = %name, threads = restored, "{why}: back to its own priority");
    }
}

/// The services that should be yielding now, with their pids: ready, and not waited for
/// to be ready by a service still starting.
fn should_yield(statuses: &[ServiceStatus], waits_for_ready: &HashMap<String, Vec<String>>) -> HashMap<String, i32> {
    // These states are never ready (only `Ready` is).
    let starting = |name: &str| statuses.iter().any(|s| s.name == name && matches!(s.state, State::Pending | State::Starting | State::Running | State::Backoff));
    statuses
        .iter()
        .filter_map(|s| Some((s, s.pid.filter(|_| s.state == State::Ready)?)))
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
    fn a_yielded_service_and_what_it_starts_meanwhile_are_all_put_back_but_its_own_idle_threads() {
        if !can_yield() {
            eprintln!("skipped: leaving SCHED_IDLE is not allowed here (CAP_SYS_NICE)");
            return;
        }
        use std::os::unix::process::CommandExt;
        // A group of a shell, a `sleep` and a second shell that put itself under SCHED_IDLE
        // (its own choice); the first shell starts one more `sleep` when a line arrives on
        // its stdin (nothing is forked until then: no process escapes a scan).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("sleep 30 & chrt -i 0 sleep 30 & read go; sleep 30 & echo started; wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let _guard = KillGroup(pgid);
        while procs::group(pgid).len() < 3 || !policies(pgid).contains(&Some(Policy::Idle)) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (keep, switched) = yield_service(pgid, "no-such-service");
        assert_eq!((keep.len(), switched), (1, 2), "one thread idle by its own choice, two switched");
        assert!(policies(pgid).iter().all(|p| *p == Some(Policy::Idle)), "{:?}", policies(pgid));
        // Started while yielded: inherits SCHED_IDLE.
        use std::io::{BufRead, Write};
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "started\n");
        assert_eq!(procs::group(pgid).len(), 4);
        assert!(policies(pgid).iter().all(|p| *p == Some(Policy::Idle)), "the new process inherits the yield: {:?}", policies(pgid));
        assert_eq!(restore_service(pgid, "no-such-service", &keep), (3, 0));
        let after = policies(pgid);
        assert_eq!(after.iter().filter(|p| **p == Some(Policy::Other)).count(), 3, "{after:?}");
        assert_eq!(after.iter().filter(|p| **p == Some(Policy::Idle)).count(), 1, "the thread idle by its own choice stays so: {after:?}");
        drop(_guard);
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

    fn status(name: &str, pid: Option<i32>, state: State) -> ServiceStatus {
        ServiceStatus { pid, ready: state == State::Ready, state, ..ServiceStatus::new(name, true) }
    }

    #[test]
    fn only_ready_services_that_no_starting_service_waits_for_should_yield() {
        let waits: HashMap<String, Vec<String>> = [("xvfb".to_string(), vec!["chromium".to_string()])].into();
        let names = |m: HashMap<String, i32>| {
            let mut v: Vec<String> = m.into_keys().collect();
            v.sort();
            v
        };
        // Xvfb ready, Chromium starting: Xvfb is needed; Vite is not ready yet.
        let board = [status("xvfb", Some(1), State::Ready), status("chromium", Some(2), State::Running), status("vite", Some(3), State::Running)];
        assert!(should_yield(&board, &waits).is_empty());
        // Chromium ready: both; Vite still starting.
        let board = [status("xvfb", Some(1), State::Ready), status("chromium", Some(2), State::Ready), status("vite", Some(3), State::Running)];
        assert_eq!(names(should_yield(&board, &waits)), ["chromium", "xvfb"]);
        // Chromium restarting: Xvfb is needed again; a failed Chromium does not hold it.
        let board = [status("xvfb", Some(1), State::Ready), status("chromium", None, State::Backoff)];
        assert!(should_yield(&board, &waits).is_empty());
        let board = [status("xvfb", Some(1), State::Ready), status("chromium", None, State::Failed)];
        assert_eq!(names(should_yield(&board, &waits)), ["xvfb"]);
        // A yielded service that turns unhealthy is no longer one that should yield.
        let board = [status("vite", Some(3), State::Unhealthy)];
        assert!(should_yield(&board, &waits).is_empty());
    }

    /// SIGKILLs group `pgid` when dropped (also when an assertion fails).
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
