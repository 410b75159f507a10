//! The harness itself: client calls time out (the child killed), helper children die with
//! their guard, a killed test runner takes its supervisor with it (parent-death signal),
//! and what a dead run left behind is swept by the next one.

use e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// Tests that sweep take this, so one's sweep cannot kill what the other means to find.
static SWEEPING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sweeping() -> std::sync::MutexGuard<'static, ()> {
    SWEEPING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_client_call_past_its_timeout_is_killed_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let t = Instant::now();
    let r = run_with_timeout(Command::new("sh").arg("-c").arg(format!("echo $$ > {}; echo partial; exec sleep 60", pidfile.display())), Duration::from_millis(500));
    let took = t.elapsed();
    let err = format!("{:#}", r.expect_err("a hung command must fail"));
    assert!(err.contains("did not finish within 500ms") && err.contains("partial"), "says why, with its output: {err}");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(10), "{took:?}");
    let pid = read_pid_file(&pidfile, T).unwrap();
    assert!(!pid_exists(pid), "the hung child was killed and reaped");
}

#[test]
fn a_helper_child_and_its_group_die_with_the_guard() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pidfile = dir.path().join("gc");
    let mut g = ChildGuard::spawn(Command::new("sh").arg("-c").arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display())))?;
    let gc = read_pid_file(&pidfile, T)?;
    let leader = g.id() as i32;
    assert!(g.wait_timeout(Duration::from_millis(100))?.is_none(), "still running");
    drop(g);
    let t = Instant::now();
    while (pid_exists(gc) && !is_zombie(gc)) && t.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_exists(leader), "the leader was reaped");
    assert!(!pid_exists(gc) || is_zombie(gc), "the grandchild in its group was killed");
    Ok(())
}

/// Run only as the child of the next test (it ignores itself otherwise): starts a stack,
/// writes its pids, then waits to be killed.
#[test]
#[ignore = "helper of a_killed_runner_takes_its_supervisor_along_and_the_next_run_sweeps_the_rest"]
fn helper_runner_that_gets_killed() -> anyhow::Result<()> {
    let Ok(out) = std::env::var("HARNESS_HELPER_OUT") else { return Ok(()) };
    let s = Stack::start("[services.a]\ncommand = [\"sleep\", \"infinity\"]\n")?;
    let svc = s.wait_service("a", T, "running", |v| v["pid"].is_i64())?["pid"].as_i64().unwrap();
    std::fs::write(format!("{out}.tmp"), format!("{} {svc}", s.pid()))?;
    std::fs::rename(format!("{out}.tmp"), &out)?;
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

#[test]
fn a_killed_runner_takes_its_supervisor_along_and_the_next_run_sweeps_the_rest() -> anyhow::Result<()> {
    let _one = sweeping();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("pids");
    let _ = supervisor_bin(); // built before the helper needs it
    let mut runner = ChildGuard::spawn(
        Command::new(std::env::current_exe()?)
            .args(["--exact", "helper_runner_that_gets_killed", "--ignored", "--nocapture"])
            .env("HARNESS_HELPER_OUT", &out)
            .env("SUPERVISOR_BIN", supervisor_bin())
            .stdout(std::process::Stdio::null()),
    )?;
    let t = Instant::now();
    while !out.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "the helper runner never started its stack");
        assert!(runner.wait_timeout(Duration::from_millis(50))?.is_none(), "the helper runner exited early");
    }
    let text = std::fs::read_to_string(&out)?;
    let (sup, svc) = text.split_once(' ').map(|(a, b)| (a.parse::<i32>().unwrap(), b.trim().parse::<i32>().unwrap())).unwrap();
    assert!(pid_exists(sup) && pid_exists(svc));
    // SIGKILL: no Drop runs in the runner.
    runner.kill();
    let t = Instant::now();
    while pid_exists(sup) && !is_zombie(sup) && t.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_exists(sup) || is_zombie(sup), "the supervisor died with its runner (parent-death signal)");
    assert!(pid_exists(svc) && !is_zombie(svc), "its service outlived it (orphaned), for the sweep to end");
    // Its service was orphaned (SIGKILL gave the supervisor no chance): the sweep ends it.
    let killed = sweep_stale_runs_now();
    assert!(killed.contains(&svc), "the sweep killed the orphaned service {svc}: {killed:?}");
    let t = Instant::now();
    while pid_exists(svc) && !is_zombie(svc) && t.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_exists(svc) || is_zombie(svc), "orphaned service {svc} still alive");
    Ok(())
}

#[test]
fn the_sweep_spares_live_runs() -> anyhow::Result<()> {
    let _one = sweeping();
    let s = Stack::start("[services.a]\ncommand = [\"sleep\", \"infinity\"]\n")?;
    s.wait_state("a", "ready", T)?;
    let mine = s.leftovers();
    assert!(!mine.is_empty());
    let killed = sweep_stale_runs_now();
    assert!(mine.iter().all(|p| !killed.contains(p)), "the sweep killed a live run's process: {killed:?}");
    assert!(!s.exited());
    assert_eq!(s.service("a")?["state"], "ready");
    Ok(())
}

#[test]
fn start_fails_fast_with_the_log_when_the_supervisor_exits() {
    let t = Instant::now();
    let err = match Stack::start("[services.a]\ncommand = []\n") {
        Ok(_) => panic!("a broken config must not start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}: not the whole timeout", t.elapsed());
    assert!(err.contains("exited") && err.contains("the command is empty"), "the log says why: {err}");
}

#[test]
fn start_returns_only_once_the_public_listener_accepts() -> anyhow::Result<()> {
    for _ in 0..3 {
        let s = Stack::start("[services.a]\ncommand = [\"sleep\", \"infinity\"]\n")?;
        let r = curl(&["--max-time", "5", &s.url("/_supervisor/healthz")]);
        assert_eq!(r.status, 200, "healthz right after start: {r:?}");
    }
    Ok(())
}

#[test]
fn the_fixed_ports_lock_is_an_flock_other_processes_see() -> anyhow::Result<()> {
    let held = fixed_ports_lock();
    // Under `flock FILE cargo test`, the ancestor holds it: then the file is locked anyway.
    let probe = run_with_timeout(Command::new("flock").args(["-n", FIXED_PORTS_LOCK_FILE, "true"]), T)?;
    assert!(!probe.status.success(), "another process could take {FIXED_PORTS_LOCK_FILE} while the lock is held");
    drop(held);
    Ok(())
}
