//! Probes with Kubernetes semantics, through the real binary with small shell services:
//! the startup probe gates the others and restarts after `failure_threshold × period`;
//! exec probes; a hung probe is cut off at its timeout; `initial_delay`;
//! `success_threshold`; `disabled` services.

use e2e::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn the_startup_probe_gates_readiness_and_liveness_until_it_passes() -> anyhow::Result<()> {
    // Readiness would pass at once and liveness would fail at once: neither may run
    // while the startup probe has not passed.
    let s = Stack::start(
        r#"
[services.slow]
command = ["sleep", "infinity"]
startup = { file = "{DIR}/started", period = "100ms", failure_threshold = 1000 }
readiness = { file = "{DIR}/ready", period = "100ms" }
liveness = { file = "{DIR}/alive", period = "100ms", failure_threshold = 1 }
backoff = { initial = "10ms" }
"#,
    )?;
    std::fs::write(s.path().join("ready"), "")?;
    let v = s.wait_state("slow", "starting", T)?;
    // 10 × the liveness threshold (1 × 100 ms): a liveness probe running now would
    // have restarted it; a readiness probe would have made it ready.
    std::thread::sleep(Duration::from_millis(1000));
    let v2 = s.service("slow")?;
    assert_eq!((v2["state"].as_str(), v2["ready"].as_bool(), v2["restarts"].as_u64()), (Some("starting"), Some(false), Some(0)), "{v2}");
    assert_eq!(v2["pid"], v["pid"]);
    assert_eq!(s.status()?["ready"], false);
    // Startup passes: readiness runs (ready), then liveness runs (and restarts it).
    std::fs::write(s.path().join("started"), "")?;
    s.wait_service("slow", T, "ready after startup", |v| v["ready"] == true || v["restarts"].as_u64() >= Some(1))?;
    let r = s.wait_service("slow", T, "restarted by liveness", |v| v["restarts"].as_u64() >= Some(1))?;
    assert!(s.logs("slow", 100).contains("liveness probe failed"), "{r}\n{}", s.logs("slow", 100));
    Ok(())
}

#[test]
fn a_failing_startup_probe_restarts_after_failure_threshold_times_period() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.never]
command = ["sleep", "infinity"]
startup = { file = "{DIR}/never", period = "300ms", failure_threshold = 3 }
backoff = { initial = "10ms" }
"#,
    )?;
    let v0 = s.wait_service("never", T, "started", |v| v["started_at"].is_u64())?;
    let t0 = v0["started_at"].as_u64().unwrap();
    let v1 = s.wait_service("never", T, "restarted", |v| v["restarts"].as_u64() >= Some(1))?;
    let t1 = v1["started_at"].as_u64().unwrap();
    // Kubernetes counts the first failure at once, so the third failure is two periods
    // later (600 ms); fast retries (every 5 ms for a file probe) must not count more.
    assert!(t1 - t0 >= 600, "restarted only after 3 failures one period apart: {} ms", t1 - t0);
    assert!(t1 - t0 < 10_000, "restarted within a generous bound: {} ms", t1 - t0);
    assert_ne!(v1["pid"], v0["pid"]);
    assert!(s.logs("never", 100).contains("startup probe failed"), "{}", s.logs("never", 100));
    Ok(())
}

#[test]
fn an_exec_probe_decides_readiness_by_exit_code() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.svc]
command = ["sleep", "infinity"]
readiness = { exec = ["sh", "-c", "test -f {DIR}/ok"], period = "100ms", failure_threshold = 1 }
"#,
    )?;
    s.wait_state("svc", "running", T)?;
    assert_eq!(s.service("svc")?["ready"], false);
    std::fs::write(s.path().join("ok"), "")?;
    s.wait_state("svc", "ready", T)?;
    std::fs::remove_file(s.path().join("ok"))?;
    let v = s.wait_state("svc", "unhealthy", T)?;
    assert_eq!(v["restarts"], 0, "readiness never restarts: {v}");
    Ok(())
}

#[test]
fn a_hung_probe_is_cut_off_at_its_timeout_and_counts_as_a_failure() -> anyhow::Result<()> {
    // The liveness command hangs; each attempt records its pid. At the 300 ms timeout it
    // is killed (its whole group), and two such failures restart the service.
    let s = Stack::start(
        r#"
[services.svc]
command = ["sleep", "infinity"]
liveness = { exec = ["sh", "-c", "echo $$ >> {DIR}/probes; exec sleep 100"], period = "300ms", timeout = "300ms", failure_threshold = 2 }
backoff = { initial = "10ms" }
"#,
    )?;
    let v0 = s.wait_service("svc", T, "started", |v| v["started_at"].is_u64())?;
    let v = s.wait_service("svc", T, "restarted by the hung liveness probe", |v| v["restarts"].as_u64() >= Some(1))?;
    let took = v["started_at"].as_u64().unwrap() - v0["started_at"].as_u64().unwrap();
    assert!(took >= 600, "two timed-out attempts take at least 2 × 300 ms: {took} ms");
    let pids: Vec<i32> = std::fs::read_to_string(s.path().join("probes"))?.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(pids.len() >= 2, "{pids:?} {v}");
    // Every attempt but possibly the one running right now is gone.
    s.wait_for("timed-out probes killed", T, |_| Ok(pids[..pids.len() - 1].iter().all(|p| !pid_exists(*p) || is_zombie(*p))))?;
    Ok(())
}

#[test]
fn initial_delay_holds_the_first_attempt_back() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.svc]
command = ["sleep", "infinity"]
readiness = { file = "/", initial_delay = "1500ms", period = "100ms" }
"#,
    )?;
    let v = s.wait_state("svc", "ready", T)?;
    let waited = v["ready_at"].as_u64().unwrap() - v["started_at"].as_u64().unwrap();
    assert!(waited >= 1500, "ready only after the initial delay: {waited} ms");
    assert!(waited < 10_000, "{waited} ms");
    Ok(())
}

#[test]
fn success_threshold_needs_that_many_passes_in_a_row() -> anyhow::Result<()> {
    // The probe passes on every attempt but the second: S F S S S. With
    // success_threshold = 3 the service is ready after the 5th attempt, not the 1st;
    // once ready the probe runs only every 30 s, so the count stays put.
    let s = Stack::start(
        r#"
[services.svc]
command = ["sleep", "infinity"]
readiness = { exec = ["sh", "-c", "n=$(cat {DIR}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {DIR}/n.tmp; mv {DIR}/n.tmp {DIR}/n; [ $n -ne 2 ]"], period = "30s", success_threshold = 3 }
"#,
    )?;
    s.wait_state("svc", "ready", T)?;
    let n: u32 = std::fs::read_to_string(s.path().join("n"))?.trim().parse()?;
    assert_eq!(n, 5, "ready after S F S S S, i.e. the 5th attempt");
    assert_eq!(lines(&s.path().join("n")), 1);
    Ok(())
}

#[test]
fn a_disabled_service_is_never_started_and_does_not_count() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.on]
command = ["sleep", "infinity"]
[services.off]
command = ["sh", "-c", "touch {DIR}/off-ran; exec sleep infinity"]
disabled = true
"#,
    )?;
    s.wait_ready(T)?;
    let v = s.service("off")?;
    assert_eq!(v["state"], "stopped", "{v}");
    assert!(v["pid"].is_null(), "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("disabled"), "{v}");
    assert_eq!(s.status()?["ready"], true, "a disabled service does not hold readiness back");
    assert!(!s.path().join("off-ran").exists(), "the disabled command never ran");
    Ok(())
}
