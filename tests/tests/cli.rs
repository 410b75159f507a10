//! The binary's command line: `check` on good and broken configs, a real stack driven
//! only through `supervisor ctl`, `ready`, and the static build.

use e2e::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Runs `supervisor check` on `config_text`; returns exit code, stdout, stderr and the
/// file's path as shown (the temp dir is gone by then).
fn check(config_text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(supervisor_bin()).arg("check").arg("--config").arg(&path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn check_rejects_broken_configs_naming_file_key_and_reason() {
    let cases = [
        ("[services.a]\ncommand = [\"x\"]\ndepends_on = { b = \"ready\" }\n[services.b]\ncommand = [\"x\"]\ndepends_on = { a = \"ready\" }\n", "services.a.depends_on", "dependency cycle: a -> b -> a"),
        ("[services.a]\ncommand = [\"x\"]\ndepends_on = { ghost = \"ready\" }\n", "services.a.depends_on.ghost", "unknown service \"ghost\""),
        ("[services.a]\ncommand = [\"x\"]\nport = 5173\n[services.b]\ncommand = [\"y\"]\nport = 5173\n", "services.b.port", "port 5173 is already used by service \"a\""),
        ("[services.a]\ncommand = []\n", "services.a.command", "the command is empty"),
        ("[services.a]\ncommand = [\"x\"]\nstop_timeout = \"fast\"\n", "services.a.stop_timeout", "bad duration \"fast\""),
        ("[services.a]\ncommand = [\"x\"]\nbogus = 1\n", "services.a", "unknown field `bogus`"),
    ];
    for (text, key, reason) in cases {
        let (code, out, err, path) = check(text);
        assert_ne!(code, 0, "check should fail for {key}: {out}");
        assert!(err.contains(&path), "error names the file: {err}");
        assert!(err.contains(key), "error names the key {key}: {err}");
        assert!(err.contains(reason), "error gives the reason {reason}: {err}");
    }
}

#[test]
fn check_accepts_the_production_config_and_prints_the_plan() {
    let out = Command::new(supervisor_bin())
        .arg("check")
        .arg("--config")
        .arg(repo_root().join("opt/supervisor.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for name in ["xvfb", "chromium", "playwright-mcp", "acp", "vite"] {
        assert!(text.contains(&format!("    {name} [")), "plan lists {name}:\n{text}");
    }
    // chromium waits for xvfb to be ready, playwright-mcp for chromium to have started
    // (it connects to CDP only when used): three waves.
    assert!(text.contains("wave 2:") && text.contains("after:   xvfb ready") && text.contains("after:   chromium started"), "{text}");
}

/// A real HTTP server (serving the app dir) and a dependent, as in SPEC §4's example.
fn web_stack() -> anyhow::Result<(Stack, u16)> {
    let port = free_port();
    let s = Stack::start(&format!(
        r#"
[services.web]
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
cwd = "${{APP_DIR}}"
env = {{ PYTHONUNBUFFERED = "1" }}
restart = "always"
readiness = {{ http = "http://127.0.0.1:{port}/", status = 200, period = "1s", timeout = "500ms" }}
liveness = {{ tcp = "127.0.0.1:{port}", period = "5s", failure_threshold = 3 }}
stop_timeout = "5s"

[services.worker]
command = ["sleep", "infinity"]
depends_on = {{ web = "ready" }}
restart = "on-failure"
"#
    ))?;
    std::fs::write(s.app_dir.join("hello.txt"), "hi")?;
    Ok((s, port))
}

#[test]
fn ready_returns_once_both_are_ready_and_status_has_every_field() -> anyhow::Result<()> {
    let (s, _) = web_stack()?;
    let ready = s.ready_cmd(30)?;
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));
    let st: Value = s.status()?;
    assert_eq!(st["ready"], true);
    let web = &st["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["state"], "ready");
    assert!(web["rss_bytes"].as_u64().unwrap() > 1_000_000, "rss of python: {web}");
    for key in ["version", "uptime_ms"] {
        assert!(st.get(key).is_some(), "status has {key}");
    }
    for key in ["pid", "restarts", "last_exit", "started_at", "ready_at", "cpu_percent"] {
        assert!(web.get(key).is_some(), "service status has {key}: {web}");
    }
    // The human table.
    let table = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(table.contains("web") && table.contains("ready") && table.contains("worker"), "{table}");
    Ok(())
}

#[test]
fn ctl_restarts_stops_and_starts_services_and_refuses_unknown_names() -> anyhow::Result<()> {
    let (s, _) = web_stack()?;
    s.wait_ready(T)?;
    // Restart through ctl: new pid, restarts = 1, ready again.
    let pid0 = s.service("web")?["pid"].clone();
    assert!(s.ctl(&["restart", "web"]).status.success());
    let w = s.wait_service("web", T, "restarted and ready", |v| v["restarts"] == 1 && v["state"] == "ready")?;
    assert_ne!(w["pid"], pid0);
    // Stop and start the dependent.
    assert!(s.ctl(&["stop", "worker"]).status.success());
    s.wait_service("worker", T, "stopped", |v| v["state"] == "stopped" && v["pid"].is_null())?;
    assert_eq!(s.status()?["ready"], false, "a stopped required service makes the stack not ready");
    assert!(s.ctl(&["start", "worker"]).status.success());
    s.wait_state("worker", "ready", T)?;
    // Unknown names are errors.
    let out = s.ctl(&["restart", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nope\""));
    Ok(())
}

#[test]
fn ctl_logs_shows_and_follows_a_services_output() -> anyhow::Result<()> {
    let (s, port) = web_stack()?;
    s.wait_state("web", "ready", T)?;
    // The server really serves the app dir; its access log reaches `ctl logs`.
    let body = curl(&[&format!("http://127.0.0.1:{port}/hello.txt")]);
    assert_eq!((body.status, body.text().as_str()), (200, "hi"));
    s.wait_for("access log line", T, |s| Ok(s.logs("web", 20).contains("GET /hello.txt")))?;
    // `logs -f` streams new lines.
    let mut follow = s.ctl_spawn(&["logs", "web", "-f", "--tail", "0"])?;
    let stdout = follow.child().stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("GET /followed.txt")).is_some()
    });
    // Fetch until the follower has seen a line (it may subscribe after the first request).
    let deadline = std::time::Instant::now() + T;
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        let _ = curl(&["-o", "/dev/null", &format!("http://127.0.0.1:{port}/followed.txt")]);
        std::thread::sleep(Duration::from_millis(100));
    }
    follow.kill();
    assert!(reader.join().unwrap(), "ctl logs -f printed the new line");
    Ok(())
}

#[test]
fn sigterm_stops_the_stack_and_leaves_nothing() -> anyhow::Result<()> {
    let mut s = Stack::start(
        r#"
[services.a]
command = ["sh", "-c", "sleep infinity & sleep infinity & wait"]
[services.b]
command = ["sleep", "infinity"]
depends_on = { a = "started" }
"#,
    )?;
    s.wait_ready(T)?;
    assert!(s.leftovers().len() >= 4, "services are running: {:?}", s.leftovers());
    let (st, took) = s.terminate(Duration::from_secs(20))?;
    assert!(st.success(), "{st:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(s.leftovers().is_empty(), "leftovers: {:?}", s.leftovers());
    assert!(!s.runtime_dir.join("control.sock").exists(), "socket removed");
    Ok(())
}

#[test]
fn control_socket_is_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let s = Stack::start("[services.a]\ncommand = [\"sleep\", \"infinity\"]\n")?;
    let mode = std::fs::metadata(s.runtime_dir.join("control.sock"))?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second supervisor on the same runtime dir refuses to start.
    let out = Command::new(supervisor_bin())
        .args(["run", "--config"])
        .arg(s.path().join("supervisor.toml"))
        .arg("--runtime-dir")
        .arg(&s.runtime_dir)
        .args(["--service-user", "", "--listen", &format!("127.0.0.1:{}", free_port())])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Needs the release build of image/build-binary.sh, so a plain `cargo test` reports it
/// as ignored (never as passed); scripts/test.sh builds the binary and runs it.
#[test]
#[ignore = "needs image/build-binary.sh first; scripts/test.sh runs it with --ignored"]
fn the_release_binary_is_static() {
    let bin = repo_root().join("target/x86_64-unknown-linux-musl/release/supervisor");
    assert!(bin.exists(), "run image/build-binary.sh first");
    let out = Command::new("file").arg(&bin).output().expect("file(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("statically linked") || text.contains("static-pie linked"), "{text}");
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("supervisor "));
}
