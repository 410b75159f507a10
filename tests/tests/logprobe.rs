//! The `log = "REGEX"` probe (SPEC §4): ready once a line of the service's own output
//! since its start matches; it gates dependents; a service that never prints it stays
//! not ready.

use e2e::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[services.slow]
command = ["sh", "-c", "echo booting; while [ ! -e {DIR}/go ]; do sleep 0.02; done; echo 'server READY on port 4242'; exec sleep infinity"]
readiness = { log = 'READY on port \d+' }
stop_timeout = "2s"

[services.dependent]
command = ["sleep", "infinity"]
depends_on = { slow = "ready" }
stop_timeout = "2s"

[services.mute]
command = ["sh", "-c", "echo 'READY is not what it says'; echo 'ready on port 1' >&2; exec sleep infinity"]
readiness = { log = '^server READY on port \d+$' }
required = false
stop_timeout = "2s"
"#;

#[test]
fn a_log_probe_gates_the_dependent_until_the_line_appears_and_never_printed_stays_not_ready() -> anyhow::Result<()> {
    let s = Stack::start(CONFIG)?;
    // slow has started and printed its first line: the probe has seen output, not the line.
    s.wait_for("slow's first line", T, |s| Ok(s.logs("slow", 10).contains("booting")))?;
    let slow = s.wait_state("slow", "running", T)?;
    assert_eq!(slow["ready"], false, "{slow}");
    let dep = s.service("dependent")?;
    assert_eq!(dep["state"], "pending", "gated by slow's readiness: {dep}");
    assert!(dep["pid"].is_null(), "{dep}");
    assert_eq!(s.status()?["ready"], false);

    std::fs::write(s.path().join("go"), "")?;
    let dep = s.wait_state("dependent", "ready", T)?;
    let slow = s.service("slow")?;
    assert_eq!(slow["ready"], true, "{slow}");
    assert!(dep["started_at"].as_u64().expect("dependent started") >= slow["ready_at"].as_u64().expect("slow ready"), "the dependent started after the line: {dep} {slow}");

    // mute printed similar lines (other case, other stream) but never the pattern.
    s.wait_for("mute's output", T, |s| Ok(s.logs("mute", 10).contains("ready on port 1")))?;
    let mute = s.service("mute")?;
    assert_eq!((mute["state"].as_str(), mute["ready"].as_bool()), (Some("running"), Some(false)), "{mute}");
    assert_eq!(s.status()?["ready"], true, "mute is not required");

    // After a restart, only the new process's output counts: slow prints the line again at once.
    assert!(s.ctl(&["restart", "slow"]).status.success());
    let again = s.wait_service("slow", T, "ready again", |v| v["restarts"] == 1 && v["ready"] == true)?;
    assert!(again["ready_at"].as_u64().expect("ready again") >= again["started_at"].as_u64().expect("started again"), "{again}");
    Ok(())
}

#[test]
fn a_log_probe_is_refused_for_liveness_and_a_bad_regex_names_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (toml, key) in [
        ("[services.a]\ncommand = [\"true\"]\nliveness = { log = \"x\" }\n", "services.a.liveness.log"),
        ("[services.a]\ncommand = [\"true\"]\nreadiness = { log = \"(unclosed\" }\n", "services.a.readiness.log"),
        ("[services.a]\ncommand = [\"true\"]\nstartup = { log = \"x\", tcp = \"127.0.0.1:1\" }\n", "services.a.startup"),
    ] {
        let f = dir.path().join("s.toml");
        std::fs::write(&f, toml)?;
        let out = run_with_timeout(std::process::Command::new(supervisor_bin()).arg("check").arg("--config").arg(&f), T)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert!(err.contains(key), "{key} in: {err}");
    }
    Ok(())
}
