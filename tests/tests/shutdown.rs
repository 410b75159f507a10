//! Stopping and shutdown through the real binary: the stack-wide `shutdown_timeout`
//! ends in SIGKILL, a second signal forces at once, SIGINT works like SIGTERM, a custom
//! `stop_signal` is the one sent, a process that left the group (`setsid`) is killed
//! too, and when a main process exits the rest of its group is stopped.

use e2e::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A service that ignores SIGTERM (and writes its pid).
const STUBBORN: &str = r#"
[services.stubborn]
command = ["sh", "-c", "trap '' TERM; echo $$ > {DIR}/stubborn.pid; while :; do sleep 0.05; done"]
stop_timeout = "60s"
"#;

fn gone(pid: i32) -> bool {
    !pid_exists(pid) || is_zombie(pid)
}

#[test]
fn shutdown_timeout_ends_in_sigkill_of_what_ignores_sigterm() -> anyhow::Result<()> {
    let mut s = Stack::start(&format!("[supervisor]\nshutdown_timeout = \"1500ms\"\n{STUBBORN}"))?;
    let pid = read_pid_file(&s.path().join("stubborn.pid"), T)?;
    s.wait_state("stubborn", "ready", T)?;
    let (st, took) = s.terminate(T)?;
    assert!(st.success(), "{st:?}");
    assert!(took >= Duration::from_millis(1400), "it waited for the deadline first: {took:?}");
    assert!(took < Duration::from_secs(15), "the 1.5 s deadline, not the 60 s stop_timeout: {took:?}");
    assert!(gone(pid), "the service ignoring SIGTERM was killed");
    assert!(std::fs::read_to_string(&s.log_path)?.contains("shutdown deadline"), "{}", s.log_tail(20));
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    Ok(())
}

#[test]
fn a_second_signal_kills_everything_at_once() -> anyhow::Result<()> {
    let mut s = Stack::start(&format!("[supervisor]\nshutdown_timeout = \"60s\"\n{STUBBORN}"))?;
    let pid = read_pid_file(&s.path().join("stubborn.pid"), T)?;
    s.wait_state("stubborn", "ready", T)?;
    let sup = Pid::from_raw(s.pid());
    kill(sup, Signal::SIGTERM)?;
    s.wait_state("stubborn", "stopping", T)?;
    assert!(!gone(pid), "still waiting for the stubborn service");
    let t = Instant::now();
    kill(sup, Signal::SIGINT)?;
    let mut child = s.child.take().unwrap();
    let st = wait_child(&mut child, T)?.expect("the supervisor exits after a second signal");
    assert!(t.elapsed() < Duration::from_secs(10), "forced, not the 60 s deadline: {:?}", t.elapsed());
    assert!(st.success(), "{st:?}");
    assert!(gone(pid), "killed by the forced stop");
    assert!(std::fs::read_to_string(&s.log_path)?.contains("second signal"), "{}", s.log_tail(20));
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    Ok(())
}

#[test]
fn sigint_stops_the_stack_like_sigterm() -> anyhow::Result<()> {
    let mut s = Stack::start(
        r#"
[services.a]
command = ["sh", "-c", "trap 'echo a >> {DIR}/stopped; exit 0' TERM; while :; do sleep 0.05; done"]
"#,
    )?;
    s.wait_state("a", "ready", T)?;
    let mut child = s.child.take().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
    let st = wait_child(&mut child, T)?.expect("exit after SIGINT");
    assert!(st.success(), "{st:?}");
    assert_eq!(std::fs::read_to_string(s.path().join("stopped"))?, "a\n", "the service got its stop signal");
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    Ok(())
}

#[test]
fn a_custom_stop_signal_is_the_one_sent() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.usr]
command = ["sh", "-c", "trap 'echo TERM >> {DIR}/got' TERM; trap 'echo USR1 >> {DIR}/got; exit 0' USR1; while :; do sleep 0.05; done"]
stop_signal = "SIGUSR1"
stop_timeout = "10s"
[services.int]
command = ["sh", "-c", "trap 'echo TERM >> {DIR}/got-int' TERM; trap 'echo INT >> {DIR}/got-int; exit 0' INT; while :; do sleep 0.05; done"]
stop_signal = "INT"
stop_timeout = "10s"
"#,
    )?;
    s.wait_ready(T)?;
    let t = Instant::now();
    assert!(s.ctl(&["stop", "usr"]).status.success());
    assert!(s.ctl(&["stop", "int"]).status.success());
    let v = s.wait_state("usr", "stopped", T)?;
    s.wait_state("int", "stopped", T)?;
    assert!(t.elapsed() < Duration::from_secs(8), "stopped by the signal, not the 10 s SIGKILL: {:?}", t.elapsed());
    assert_eq!(std::fs::read_to_string(s.path().join("got"))?, "USR1\n", "{v}");
    assert_eq!(std::fs::read_to_string(s.path().join("got-int"))?, "INT\n");
    Ok(())
}

#[test]
fn a_process_that_left_the_group_is_killed_on_stop() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.escaper]
command = ["sh", "-c", "setsid sh -c 'echo $$ > {DIR}/escaped.pid; exec sleep infinity' & exec sleep infinity"]
stop_timeout = "2s"
"#,
    )?;
    let escaped = read_pid_file(&s.path().join("escaped.pid"), T)?;
    let leader = s.wait_service("escaper", T, "running", |v| v["pid"].is_i64())?["pid"].as_i64().unwrap() as i32;
    s.wait_for("the escapee's own session", T, |_| Ok(proc_stat_field(escaped, 6) == Some(escaped.to_string())))?;
    assert_ne!(proc_stat_field(escaped, 5), Some(leader.to_string()), "it left the service's group");
    assert!(s.ctl(&["stop", "escaper"]).status.success());
    s.wait_state("escaper", "stopped", T)?;
    s.wait_for("the escapee killed", T, |_| Ok(gone(escaped)))?;
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    Ok(())
}

#[test]
fn when_the_main_process_exits_the_rest_of_its_group_is_stopped() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.parent]
command = ["sh", "-c", "sleep infinity & echo $! > {DIR}/bg.pid; while [ ! -f {DIR}/exit ]; do sleep 0.05; done; exit 1"]
restart = "never"
required = false
"#,
    )?;
    let bg = read_pid_file(&s.path().join("bg.pid"), T)?;
    let leader = s.wait_service("parent", T, "running", |v| v["pid"].is_i64())?["pid"].as_i64().unwrap() as i32;
    assert_eq!(proc_stat_field(bg, 5), Some(leader.to_string()), "the background child is in the group");
    std::fs::write(s.path().join("exit"), "")?;
    let v = s.wait_state("parent", "failed", T)?;
    assert_eq!(v["last_exit"]["code"], 1, "{v}");
    s.wait_for("the rest of the group stopped", T, |_| Ok(gone(bg)))?;
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    Ok(())
}
