//! How the binary runs: the flags' env-var forms, `--log-format json`, running as PID 1
//! of a PID namespace, dropping services to a real unprivileged user as root, a clear
//! startup error for an unknown user, and never blocking on a stdout nobody reads.

use e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn need_root() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "this test needs root");
    Ok(())
}

/// An app dir the test user owns, under a world-traversable temp dir.
fn user_app_dir() -> anyhow::Result<tempfile::TempDir> {
    let (uid, gid) = test_user()?;
    let d = tempfile::Builder::new().prefix("sup-user-app-").tempdir()?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    chown_tree(d.path(), uid, gid)?;
    Ok(d)
}

/// `Uid:` and `Gid:` lines of /proc/PID/status: (real, effective, saved, fs) each.
fn ids(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> Vec<u32> {
        s.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect()
    };
    (field("Uid:"), field("Gid:"))
}

fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default().split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

#[test]
fn services_drop_to_the_service_user_when_the_supervisor_is_root() -> anyhow::Result<()> {
    need_root()?;
    let (uid, gid) = test_user()?;
    let app = user_app_dir()?;
    let s = Stack::start_with(
        r#"
[services.dropped]
command = ["sh", "-c", "sleep infinity & exec sleep infinity"]
cwd = "${APP_DIR}"
"#,
        StackOptions { args: vec!["--service-user".into(), TEST_USER.into()], app_dir: Some(app.path().to_path_buf()), ..Default::default() },
    )?;
    let v = s.wait_state("dropped", "ready", T)?;
    let pid = v["pid"].as_i64().unwrap() as i32;
    assert_eq!(ids(pid), (vec![uid; 4], vec![gid; 4]), "the service runs as {TEST_USER} (real, effective, saved, fs)");
    let env = environ(pid);
    assert!(env.contains(&format!("USER={TEST_USER}")) && env.iter().any(|e| e.starts_with("HOME=/home/")), "{env:?}");
    // Its children too, and the supervisor itself stays root.
    let children: Vec<i32> = all_pids().into_iter().filter(|p| proc_stat_field(*p, 5) == Some(pid.to_string()) && *p != pid).collect();
    assert!(!children.is_empty());
    for c in children {
        assert_eq!(proc_uid(c), Some(uid), "child {c} of the service");
    }
    assert_eq!(proc_uid(s.pid()), Some(0), "the supervisor keeps root");
    Ok(())
}

#[test]
fn an_unknown_service_user_is_a_clear_startup_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("s.toml");
    std::fs::write(&cfg, "[services.a]\ncommand = [\"sleep\", \"infinity\"]\nuser = \"no-such-user-e2e\"\n")?;
    let run = |extra: &[&str]| -> anyhow::Result<std::process::Output> {
        run_with_timeout(
            Command::new(supervisor_bin())
                .args(["run", "--config"])
                .arg(&cfg)
                .arg("--runtime-dir")
                .arg(dir.path().join("run"))
                .arg("--app-dir")
                .arg(dir.path().join("app"))
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .args(extra),
            T,
        )
    };
    // From the config's `user`, and from --service-user.
    for (extra, names) in [(&[][..], "services.a.user"), (&["--service-user", "ghost-e2e-user"][..], "ghost-e2e-user")] {
        let out = run(extra)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "starts with an unknown user ({extra:?}): {err}");
        assert!(err.contains(names) && err.contains("does not exist"), "names the key and the user ({extra:?}): {err}");
    }
    // It exited (run_with_timeout returned); a socket file it left is dead.
    assert!(std::os::unix::net::UnixStream::connect(dir.path().join("run/control.sock")).is_err(), "nothing left serving");
    Ok(())
}

#[test]
fn every_flag_has_an_env_var_form() -> anyhow::Result<()> {
    need_root()?;
    let (uid, _) = test_user()?;
    let app = user_app_dir()?;
    // Inside a namespace of its own, so SUPERVISOR_PORT_GUARD=on touches no host table.
    let ns = NetNs::create()?;
    let s = Stack::start_with(
        r#"
[services.web]
command = ["sleep", "infinity"]
cwd = "${APP_DIR}"
port = 47999
"#,
        StackOptions {
            env_only: true,
            env: vec![
                ("SUPERVISOR_SERVICE_USER".into(), TEST_USER.into()),
                ("SUPERVISOR_PORT_GUARD".into(), "on".into()),
                ("SUPERVISOR_LOG_FORMAT".into(), "json".into()),
            ],
            app_dir: Some(app.path().to_path_buf()),
            wrapper: ns.exec(),
            ..Default::default()
        },
    )?;
    // Config, runtime dir and listen address from the env: the stack came up on them.
    let v = s.wait_state("web", "ready", T)?;
    let pid = v["pid"].as_i64().unwrap() as i32;
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd"))?, app.path(), "SUPERVISOR_APP_DIR is ${{APP_DIR}}");
    assert_eq!(proc_uid(pid), Some(uid), "SUPERVISOR_SERVICE_USER");
    let g = s.status()?["port_guard"].clone();
    assert_eq!((g["enabled"].as_bool(), g["active"].as_bool()), (Some(true), Some(true)), "SUPERVISOR_PORT_GUARD=on: {g}");
    let log = std::fs::read_to_string(&s.log_path)?;
    let first = log.lines().find(|l| !l.starts_with('[')).unwrap_or("");
    assert!(serde_json::from_str::<serde_json::Value>(first).is_ok(), "SUPERVISOR_LOG_FORMAT=json: {first}");
    // ctl and ready find the socket through SUPERVISOR_RUNTIME_DIR alone.
    let env_ctl = |args: &[&str]| run_with_timeout(Command::new(supervisor_bin()).args(args).env("SUPERVISOR_RUNTIME_DIR", &s.runtime_dir), T);
    let out = env_ctl(&["ctl", "--json", "status"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(service_in(&st, "web").map(|w| w["pid"].clone()), Some(v["pid"].clone()));
    assert!(env_ctl(&["ready", "--timeout", "10"])?.status.success());
    Ok(())
}

#[test]
fn log_format_json_prints_one_json_object_per_line() -> anyhow::Result<()> {
    let s = Stack::start_with(
        "[services.a]\ncommand = [\"sh\", \"-c\", \"echo hello-from-a; exec sleep infinity\"]\n",
        StackOptions { args: vec!["--log-format".into(), "json".into()], ..Default::default() },
    )?;
    s.wait_ready(T)?;
    s.wait_for("the ready line", T, |s| Ok(std::fs::read_to_string(&s.log_path)?.contains("stack ready")))?;
    let log = std::fs::read_to_string(&s.log_path)?;
    let mut own = 0;
    for line in log.lines().filter(|l| !l.is_empty()) {
        // Service output is echoed as `[name] line`; everything else is the supervisor's own.
        if line.starts_with("[a] ") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON ({e}): {line}"))?;
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        own += 1;
    }
    assert!(own >= 3, "the supervisor's own lines: {log}");
    assert!(log.lines().any(|l| l.contains("\"stack ready\"")), "{log}");
    assert!(log.contains("[a] hello-from-a"), "service output keeps its prefix: {log}");
    Ok(())
}

/// The pid of `parent`'s one child.
fn only_child(parent: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?.split_whitespace().next()?.parse().ok()
}

#[test]
fn as_pid_1_of_a_pid_namespace_it_reaps_orphans_and_stops_cleanly() -> anyhow::Result<()> {
    need_root()?;
    let s = Stack::start_with(
        r#"
[services.forker]
command = ["sh", "-c", "sh -c 'sleep 0.5 & echo $! > {DIR}/orphan.pid'; exec sleep infinity"]
"#,
        StackOptions { wrapper: vec!["unshare".into(), "--pid".into(), "--fork".into(), "--mount-proc".into(), "--kill-child".into()], ..Default::default() },
    )?;
    let sup = only_child(s.pid()).expect("unshare's child");
    let nspid = std::fs::read_to_string(format!("/proc/{sup}/status"))?.lines().find_map(|l| l.strip_prefix("NSpid:").map(str::to_string)).unwrap_or_default();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "the supervisor is PID 1 inside: NSpid {nspid}");
    s.wait_ready(T)?;
    assert!(std::fs::read_to_string(&s.log_path)?.len() > 0);
    // The orphan's pid is as seen inside; find it from outside by its parent (the supervisor).
    s.wait_for("the orphan reaped", T, |_| {
        let kids: Vec<i32> = all_pids().into_iter().filter(|p| proc_stat_field(*p, 4) == Some(sup.to_string())).collect();
        // Only the service's leader (sleep infinity) is left as a child; no zombie.
        Ok(kids.iter().all(|k| !is_zombie(*k)) && kids.len() == 1)
    })?;
    // SIGTERM to PID 1 (it handles it): a clean stop, the exit status passed out by unshare.
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), nix::sys::signal::Signal::SIGTERM)?;
    let mut s = s;
    let mut child = s.child.take().unwrap();
    let st = wait_child(&mut child, T)?.expect("unshare exits with its child");
    assert!(st.success(), "{st:?}\n{}", s.log_tail(20));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    Ok(())
}

#[test]
fn a_stdout_nobody_reads_never_blocks_the_supervisor() -> anyhow::Result<()> {
    // The supervisor's stdout and stderr are a pipe nobody reads (64 KiB fill it); the
    // service prints ~20 MB. Its log ring, /healthz and the control socket keep working.
    let s = Stack::start_with(
        r#"
[services.chatty]
command = ["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' 'x' | fold -w 100; echo last-line-marker; exec sleep infinity"]
"#,
        StackOptions { unread_output: true, ..Default::default() },
    )?;
    s.wait_for("the whole output drained into the ring", Duration::from_secs(120), |s| Ok(s.logs("chatty", 1).contains("last-line-marker")))?;
    for _ in 0..3 {
        let t = Instant::now();
        let r = curl(&["--max-time", "5", &s.url("/_supervisor/healthz")]);
        assert_eq!(r.status, 200, "healthz with a full stdout: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    // The engine still acts (and logs about it) with its stdout full.
    let pid0 = s.service("chatty")?["pid"].clone();
    assert!(s.ctl(&["restart", "chatty"]).status.success());
    s.wait_service("chatty", Duration::from_secs(120), "restarted", |v| v["pid"] != pid0 && v["pid"].is_i64())?;
    assert_eq!(curl(&["--max-time", "5", &s.url("/_supervisor/healthz")]).status, 200);
    Ok(())
}
