//! Reload (SPEC §3 `ctl reload`, §5 `POST /_supervisor/reload`, SIGHUP): re-read the
//! config file and apply the difference; an invalid file changes nothing and says why.

use anyhow::Context;
use e2e::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn svc(name: &str, extra: &str) -> String {
    format!("[services.{name}]\ncommand = [\"sleep\", \"infinity\"]\nstop_timeout = \"2s\"\n{extra}\n")
}

fn base() -> String {
    [svc("keep1", ""), svc("keep2", "depends_on = { keep1 = \"ready\" }"), svc("gone", ""), svc("change", "env = { MODE = \"one\" }")].concat()
}

fn pids(s: &Stack) -> anyhow::Result<Vec<(String, Option<i64>)>> {
    Ok(s.status()?["services"].as_array().context("services")?.iter().map(|v| (v["name"].as_str().unwrap().to_string(), v["pid"].as_i64())).collect())
}

fn pid_of(s: &Stack, name: &str) -> anyhow::Result<i64> {
    s.service(name)?["pid"].as_i64().with_context(|| format!("{name} has no pid"))
}

fn names(v: &Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v[key].as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    n.sort();
    n
}

fn write_config(s: &Stack, text: &str) -> anyhow::Result<()> {
    Ok(std::fs::write(s.path().join("supervisor.toml"), text)?)
}

fn environ(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/environ")).map(|b| String::from_utf8_lossy(&b).replace('\0', "\n")).unwrap_or_default()
}

#[test]
fn reload_adds_removes_restarts_the_changed_and_keeps_the_rest() -> anyhow::Result<()> {
    let s = Stack::start(&base())?;
    s.wait_ready(T)?;
    let (k1, k2, ch) = (pid_of(&s, "keep1")?, pid_of(&s, "keep2")?, pid_of(&s, "change")?);
    assert!(environ(ch).contains("MODE=one"));
    let new = [svc("added", "depends_on = { keep2 = \"ready\" }"), svc("keep1", ""), svc("keep2", "depends_on = { keep1 = \"ready\" }"), svc("change", "env = { MODE = \"two\" }")].concat();
    write_config(&s, &new)?;
    let out = s.ctl(&["--json", "reload"]);
    assert!(out.status.success(), "reload: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(names(&r, "started"), ["added"], "{r}");
    assert_eq!(names(&r, "stopped"), ["gone"], "{r}");
    assert_eq!(names(&r, "restarted"), ["change"], "{r}");
    assert_eq!(names(&r, "unchanged"), ["keep1", "keep2"], "{r}");
    assert_eq!(names(&r, "needs_restart"), Vec::<String>::new(), "{r}");
    s.wait_ready(T)?;
    let now = pids(&s)?;
    let order: Vec<&str> = now.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["change", "keep1", "keep2", "added"], "status lists the new config in its start order (the waves of `check`)");
    assert_eq!(pid_of(&s, "keep1")?, k1, "untouched keep their process");
    assert_eq!(pid_of(&s, "keep2")?, k2, "untouched keep their process");
    let ch2 = pid_of(&s, "change")?;
    assert_ne!(ch2, ch, "the changed one was restarted");
    assert!(environ(ch2).contains("MODE=two"), "with the new env");
    assert!(!pid_exists(ch as i32) || is_zombie(ch as i32), "the old process is gone");
    let gone_status = s.status()?;
    assert!(service_in(&gone_status, "gone").is_none(), "removed from status");
    let added = s.service("added")?;
    let keep2 = s.service("keep2")?;
    assert!(added["started_at"].as_u64().expect("added started") >= keep2["ready_at"].as_u64().expect("keep2 ready"), "added started after its dependency was ready");

    // A changed [supervisor] setting is reported, not silently ignored.
    write_config(&s, &format!("[supervisor]\nlog_lines = 77\n\n{new}"))?;
    let r: Value = serde_json::from_slice(&s.ctl(&["--json", "reload"]).stdout)?;
    assert_eq!(names(&r, "needs_restart"), ["log_lines"], "{r}");
    assert_eq!(names(&r, "unchanged").len(), 4, "{r}");
    Ok(())
}

#[test]
fn an_invalid_config_or_a_cycle_changes_nothing_and_says_why() -> anyhow::Result<()> {
    let s = Stack::start(&base())?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    assert_eq!(curl(&["-s", "-X", "POST", &s.url("/_supervisor/reload")]).status, 401, "the token is needed");
    let before = pids(&s)?;
    let cycle = [svc("keep1", "depends_on = { gone = \"started\" }"), svc("gone", "depends_on = { keep1 = \"started\" }")].concat();
    write_config(&s, &cycle)?;
    let r = s.api(&tok, "POST", "/_supervisor/reload", Some("{}"));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["code"], "invalid_config", "{e}");
    assert!(e["error"]["reason"].as_str().unwrap_or("").contains("cycle"), "{e}");
    assert!(e["error"]["file"].as_str().unwrap_or("").ends_with("supervisor.toml"), "names the file: {e}");
    assert!(e["error"]["key"].as_str().unwrap_or("").starts_with("services."), "names the key: {e}");
    assert!(e["error"]["message"].as_str().unwrap_or("").contains("nothing was changed"), "{e}");
    // A key that does not exist.
    write_config(&s, &format!("{}\n[services.keep1.bogus]\n", base()))?;
    let out = s.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("supervisor.toml"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pids(&s)?, before, "nothing changed");
    assert!(s.status()?["ready"] == true);
    Ok(())
}

#[test]
fn sighup_does_what_ctl_reload_does_and_logs_an_invalid_file() -> anyhow::Result<()> {
    let s = Stack::start(&base())?;
    s.wait_ready(T)?;
    let (k1, k2) = (pid_of(&s, "keep1")?, pid_of(&s, "keep2")?);
    let sup = nix::unistd::Pid::from_raw(s.pid());
    // Invalid first: logged with the reason, nothing changes.
    write_config(&s, &[svc("keep1", "depends_on = { keep2 = \"ready\" }"), svc("keep2", "depends_on = { keep1 = \"ready\" }")].concat())?;
    let before = pids(&s)?;
    nix::sys::signal::kill(sup, nix::sys::signal::Signal::SIGHUP)?;
    s.wait_for("the refused reload in the log", T, |s| Ok(s.log_tail(50).contains("reload refused")))?;
    assert!(s.log_tail(50).contains("cycle"), "{}", s.log_tail(50));
    assert_eq!(pids(&s)?, before);
    assert!(!s.exited(), "SIGHUP does not end the supervisor");
    // Then valid: the same difference as ctl reload.
    write_config(&s, &[svc("keep1", ""), svc("keep2", "depends_on = { keep1 = \"ready\" }"), svc("change", "env = { MODE = \"two\" }"), svc("fresh", "")].concat())?;
    nix::sys::signal::kill(sup, nix::sys::signal::Signal::SIGHUP)?;
    s.wait_for("gone removed, fresh ready", T, |s| {
        let st = s.status()?;
        Ok(service_in(&st, "gone").is_none() && service_in(&st, "fresh").is_some_and(|f| f["ready"] == true) && st["ready"] == true)
    })?;
    assert_eq!((pid_of(&s, "keep1")?, pid_of(&s, "keep2")?), (k1, k2));
    assert!(environ(pid_of(&s, "change")?).contains("MODE=two"));
    Ok(())
}
