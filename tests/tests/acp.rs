//! The ACP agent service (SPEC §6): `supervisor acp` serving a real offline ACP agent
//! (built on the official TypeScript SDK, tests/js/acp-agent.mjs) to an official ACP
//! client (the SDK's HTTP and WebSocket transports, tests/js/acp-client.mjs), directly
//! and through `/_supervisor/acp`; env injection; the agent dying; claude-agent-acp.

use e2e::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn acp_stack(agent: &[&str], extra: &str) -> anyhow::Result<(Stack, u16)> {
    let port = free_port();
    let argv: Vec<String> = agent.iter().map(|a| format!("{a:?}")).collect();
    let s = Stack::start(&format!(
        r#"
[services.acp]
command = ["${{SUPERVISOR}}", "acp", "--listen", "127.0.0.1:{port}", "--cwd", "${{APP_DIR}}", "--", {argv}]
env_injection = true
port = {port}
readiness = {{ http = "http://127.0.0.1:{port}/health", status = 200, period = "2s" }}
backoff = {{ initial = "50ms" }}
{extra}
"#,
        argv = argv.join(", ")
    ))?;
    s.wait_state("acp", "ready", T)?;
    Ok((s, port))
}

fn fake_agent() -> String {
    repo_root().join("tests/js/acp-agent.mjs").to_string_lossy().into_owned()
}

fn client(url: &str, mode: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let mut args = vec!["--url", url, "--mode", mode];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    node_client("acp-client.mjs", &args)
}

fn assert_full_turn(r: &Value) {
    assert_eq!(r["agent"], "e2e-agent", "{r}");
    assert_eq!(r["stop"], "end_turn", "{r}");
    assert_eq!(r["chunks"], serde_json::json!(["chunk 1", "chunk 2", "chunk 3", "permission:allow_once"]), "every update, in order: {r}");
    assert_eq!(r["permission_asked"], true);
    assert_eq!(r["non_json_messages"], 0, "the agent's non-JSON stdout line must be dropped: {r}");
}

#[test]
fn official_clients_complete_turns_over_http_and_websocket_directly_and_through_port_3000() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let health = curl(&[&format!("http://127.0.0.1:{port}/health")]);
    assert_eq!(health.status, 200);
    assert!(health.json()["agent_pid"].as_i64().unwrap() > 0);
    for base in [format!("http://127.0.0.1:{port}/acp"), format!("ws://127.0.0.1:{port}/acp")] {
        assert_full_turn(&client(&base, "normal", None)?);
        let c = client(&base, "cancel", None)?;
        assert_eq!(c["stop"], "cancelled", "session/cancel stops the turn: {c}");
        assert!(c["chunk_count"].as_u64().unwrap() < 10, "{c}");
    }
    // The same agent process serves every connection.
    let p1 = client(&format!("http://127.0.0.1:{port}/acp"), "pid", None)?;
    let p2 = client(&format!("ws://127.0.0.1:{port}/acp"), "pid", None)?;
    assert_eq!(p1["chunks"], p2["chunks"]);
    // The agent's cwd is the app dir.
    let env = client(&format!("http://127.0.0.1:{port}/acp"), "env", None)?;
    let text = env["chunks"][0].as_str().unwrap();
    assert!(text.contains(&format!("CWD:{}", s.app_dir.display())), "{text}");
    assert!(text.contains("ENV:(unset)"), "{text}");
    // Through port 3000, with the token (header for HTTP; ?token= for the WebSocket).
    let tok = s.rotate_token();
    let http = format!("http://{}/_supervisor/acp", s.listen);
    assert_full_turn(&client(&http, "normal", Some(&tok))?);
    let ws = format!("ws://{}/_supervisor/acp?token={tok}", s.listen);
    assert_full_turn(&client(&ws, "normal", None)?);
    assert!(client(&http, "normal", None).is_err(), "no token: refused");
    assert!(client(&http, "normal", Some("wrong")).is_err(), "wrong token: refused");
    assert!(client(&format!("ws://{}/_supervisor/acp?token=wrong", s.listen), "normal", None).is_err());
    // The agent's stderr reaches the service log; its non-JSON stdout line is logged as dropped.
    let logs = s.logs("acp", 500);
    assert!(logs.contains("e2e-agent ready"), "agent stderr in the service log:\n{logs}");
    assert!(logs.contains("dropping a non-JSON line"), "{logs}");
    Ok(())
}

#[test]
fn injected_env_restarts_the_service_and_reaches_the_agent() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let tok = s.rotate_token();
    let pid0 = s.service("acp")?["pid"].clone();
    let r = curl(&[
        "-X", "POST", "-H", &format!("Authorization: Bearer {tok}"), "-H", "Content-Type: application/json",
        "--data-binary", r#"{"set":{"E2E_ACP_VAR":"injected-after-snapshot"}}"#, &s.url("/_supervisor/env"),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["restarted"], serde_json::json!(["acp"]));
    s.wait_service("acp", T, "restarted and ready", |v| v["state"] == "ready" && v["pid"] != pid0)?;
    let env = client(&format!("http://127.0.0.1:{port}/acp"), "env", None)?;
    assert!(env["chunks"][0].as_str().unwrap().contains("ENV:injected-after-snapshot"), "{env}");
    Ok(())
}

#[test]
fn killing_the_agent_fails_pending_requests_and_the_service_comes_back() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let url = format!("http://127.0.0.1:{port}/acp");
    let pid: i32 = client(&url, "pid", None)?["chunks"][0].as_str().unwrap().trim_start_matches("PID:").parse()?;
    // A slow turn is under way when the agent dies.
    let slow = std::process::Command::new("node")
        .arg(repo_root().join("tests/js/acp-client.mjs"))
        .args(["--url", &url, "--prompt", "slow please", "--mode", "normal"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    s.wait_for("the slow turn streaming", T, |s| {
        Ok(s.logs("acp", 50).contains("text=\"slow please\""))
    })?;
    let restarts0 = s.service("acp")?["restarts"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    let out = slow.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the pending prompt must fail");
    assert!(err.contains("agent process exited"), "a JSON-RPC error says why: {err}");
    // The service reports it and comes back; a reconnecting client gets a working agent.
    let v = s.wait_service("acp", T, "restarted", |v| v["restarts"].as_u64() > Some(restarts0) && v["state"] == "ready")?;
    assert_eq!(v["last_exit"]["code"], 1, "{v}");
    let r = client(&url, "normal", None)?;
    assert_full_turn(&r);
    let pid2: i32 = client(&url, "pid", None)?["chunks"][0].as_str().unwrap().trim_start_matches("PID:").parse()?;
    assert_ne!(pid, pid2);
    Ok(())
}

/// The agent's `NODE_COMPILE_CACHE`, if any (from /proc/PID/environ).
fn agent_compile_cache(url: &str) -> anyhow::Result<Option<String>> {
    let pid: i32 = client(url, "pid", None)?["chunks"][0].as_str().unwrap().trim_start_matches("PID:").parse()?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(environ.split(|&b| b == 0).find_map(|v| String::from_utf8_lossy(v).strip_prefix("NODE_COMPILE_CACHE=").map(str::to_string)))
}

#[test]
fn the_agent_gets_its_compile_cache_only_once_it_is_warm() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], r#"env = { HOME = "{DIR}/home" }"#)?;
    let url = format!("http://127.0.0.1:{port}/acp");
    // {DIR}/home does not exist yet: no cache, so none is handed over (an empty one only costs).
    assert_eq!(agent_compile_cache(&url)?, None);
    let cache = s.path().join("home/.cache/node-compile-cache");
    std::fs::create_dir_all(&cache)?;
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    assert!(s.ctl(&["restart", "acp"]).status.success());
    s.wait_service("acp", T, "restarted", |v| v["restarts"] == 1 && v["state"] == "ready")?;
    assert_eq!(agent_compile_cache(&url)?, None, "an empty cache directory is not handed over");
    // What Node makes at start alone (its versioned directory) is not warm either.
    std::fs::create_dir(cache.join("v24-x64-warm"))?;
    assert!(s.ctl(&["restart", "acp"]).status.success());
    s.wait_service("acp", T, "restarted", |v| v["restarts"] == 2 && v["state"] == "ready")?;
    assert_eq!(agent_compile_cache(&url)?, None, "a cache directory without a cache file is not handed over");
    std::fs::write(cache.join("v24-x64-warm/0a1b"), "compiled")?;
    assert!(s.ctl(&["restart", "acp"]).status.success());
    s.wait_service("acp", T, "restarted", |v| v["restarts"] == 3 && v["state"] == "ready")?;
    assert_eq!(agent_compile_cache(&url)?.as_deref(), Some(cache.to_str().unwrap()), "a warm one is");
    Ok(())
}

#[test]
fn claude_agent_acp_starts_and_answers_initialize_offline() -> anyhow::Result<()> {
    let bin = repo_root().join("opt/node_modules/.bin/claude-agent-acp");
    anyhow::ensure!(bin.exists(), "opt/node_modules is missing: run scripts/setup.sh");
    let home = tempfile::tempdir()?;
    let (s, port) = acp_stack(&[&bin.to_string_lossy()], &format!("env = {{ HOME = \"{}\" }}", home.path().display()))?;
    // Ready means /health is 200: the agent answered the bridge's own initialize.
    let r = client(&format!("http://127.0.0.1:{port}/acp"), "init", None)?;
    println!("claude-agent-acp initialize through supervisor acp: {r}");
    assert_eq!(r["protocol_version"], 1, "{r}");
    assert!(r["agent"].as_str().unwrap_or("").contains("claude"), "{r}");
    assert_eq!(s.service("acp")?["restarts"], 0);
    Ok(())
}

/// A running `acp-client.mjs`, killed if the test ends first.
struct ClientProc(Option<std::process::Child>);

impl ClientProc {
    fn spawn(args: &[&str]) -> anyhow::Result<ClientProc> {
        let child = std::process::Command::new("node")
            .arg(repo_root().join("tests/js/acp-client.mjs"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        Ok(ClientProc(Some(child)))
    }

    /// Its JSON result; an error if it failed.
    fn finish(mut self) -> anyhow::Result<Value> {
        let out = self.0.take().unwrap().wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "acp-client failed ({}): {} {}", out.status, text, String::from_utf8_lossy(&out.stderr));
        let line = text.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| anyhow::anyhow!("no JSON: {text}"))?;
        Ok(serde_json::from_str(line)?)
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn echo(url: &str, tag: &str, count: usize, delay_ms: u64, extra: &[&str]) -> anyhow::Result<ClientProc> {
    let (count, delay) = (count.to_string(), delay_ms.to_string());
    let mut args = vec!["--url", url, "--mode", "echo", "--tag", tag, "--count", &count, "--delay-ms", &delay];
    args.extend(extra);
    ClientProc::spawn(&args)
}

fn assert_own_answers(r: &Value, tag: &str, count: usize) {
    let want: Vec<String> = (0..count).map(|i| format!("{tag}-{i}")).collect();
    assert_eq!(r["echo_tags"], serde_json::json!(want), "every answer is the client's own: {r}");
    assert_eq!(r["echo_mismatch"], 0, "{r}");
}

#[test]
fn clients_with_colliding_ids_in_turn_and_at_once_each_get_only_their_own_answers() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let arrived = |tag: &str, n: usize| {
        let want: Vec<String> = (0..n).map(|i| format!("echo {tag}-{i}")).collect();
        s.wait_for(&format!("{tag}'s requests at the agent"), T, move |s| {
            let logs = s.logs("acp", 400);
            Ok(want.iter().all(|w| logs.contains(w.as_str())))
        })
    };
    for scheme in ["ws", "http"] {
        let url = format!("{scheme}://127.0.0.1:{port}/acp");
        // In turn: A's requests are under way when B attaches; B's (same ids: both SDK
        // clients number from the same start) are still pending when A's answers come.
        let (a_tag, b_tag) = (format!("{scheme}-turn-a"), format!("{scheme}-turn-b"));
        let a = echo(&url, &a_tag, 5, 2500, &[])?;
        arrived(&a_tag, 5)?;
        let b = echo(&url, &b_tag, 5, 4000, &[])?;
        arrived(&b_tag, 5)?;
        assert_own_answers(&a.finish().map_err(|e| e.context(a_tag.clone()))?, &a_tag, 5);
        assert_own_answers(&b.finish().map_err(|e| e.context(b_tag.clone()))?, &b_tag, 5);
        // At once.
        let (a_tag, b_tag) = (format!("{scheme}-once-a"), format!("{scheme}-once-b"));
        let a = echo(&url, &a_tag, 10, 1000, &[])?;
        let b = echo(&url, &b_tag, 10, 1000, &[])?;
        assert_own_answers(&a.finish().map_err(|e| e.context(a_tag.clone()))?, &a_tag, 10);
        assert_own_answers(&b.finish().map_err(|e| e.context(b_tag.clone()))?, &b_tag, 10);
        // A drops its connection before its answers; B, attached with the same ids, gets
        // none of them (they are dropped, not handed to the newer connection).
        let (a_tag, b_tag) = (format!("{scheme}-gone-a"), format!("{scheme}-gone-b"));
        let a = echo(&url, &a_tag, 5, 3000, &["--abandon-after-ms", "1000"])?;
        arrived(&a_tag, 5)?;
        assert_eq!(a.finish().map_err(|e| e.context(a_tag.clone()))?["abandoned"], true);
        let b = echo(&url, &b_tag, 5, 4000, &[])?;
        assert_own_answers(&b.finish().map_err(|e| e.context(b_tag.clone()))?, &b_tag, 5);
    }
    assert_eq!(s.service("acp")?["restarts"], 0);
    Ok(())
}

#[test]
fn a_browser_style_websocket_upgrade_with_origin_works_through_port_3000() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let tok = s.rotate_token();
    let origin = "https://3000-sandbox1234.e2b.app";
    let ws = format!("ws://{}/_supervisor/acp?token={tok}", s.listen);
    let r = client_with(&ws, "init", &["--origin", origin])?;
    assert_eq!(r["agent"], "e2e-agent", "initialize answered: {r}");
    assert_full_turn(&client_with(&ws, "normal", &["--origin", origin])?);
    let http = format!("http://{}/_supervisor/acp", s.listen);
    assert_full_turn(&client_with(&http, "normal", &["--origin", origin, "--token", &tok])?);
    // The ACP server itself refuses a browser origin on 3002 (no CORS configured): a page
    // in the VM's own Chromium cannot drive the agent without the token.
    let direct = client_with(&format!("ws://127.0.0.1:{port}/acp"), "init", &["--origin", origin]);
    let err = direct.expect_err("a browser origin straight to 3002 is refused").to_string();
    assert!(err.contains("403"), "{err}");
    Ok(())
}

fn client_with(url: &str, mode: &str, extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec!["--url", url, "--mode", mode];
    args.extend(extra);
    node_client("acp-client.mjs", &args)
}

/// Kills a pid on drop (a process the agent started, outside the harness's view if leaked).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn an_agent_that_died_is_not_ready_even_if_a_grandchild_holds_its_stdout() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], r#"env = { E2E_ACP_GRANDCHILD = "1" }"#)?;
    let url = format!("http://127.0.0.1:{port}/acp");
    let pid: i32 = client(&url, "pid", None)?["chunks"][0].as_str().unwrap().trim_start_matches("PID:").parse()?;
    let logs = s.logs("acp", 200);
    let grandchild: i32 = logs.split("grandchild pid=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("no grandchild pid in:\n{logs}"))?;
    let _guard = KillOnDrop(grandchild);
    assert!(pid_exists(grandchild) && !is_zombie(grandchild));
    let v0 = s.service("acp")?;
    let t0 = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    // The probe period is 2 s; the service must see the death without waiting for the
    // grandchild (which would keep stdout open for 300 s).
    let v = s.wait_service("acp", Duration::from_secs(20), "the agent's death noticed", |v| v["restarts"].as_u64() > v0["restarts"].as_u64())?;
    let noticed = t0.elapsed();
    println!("agent death (grandchild holding stdout) noticed in {noticed:?}");
    assert!(noticed < Duration::from_secs(5), "noticed after {noticed:?}, not within a probe period");
    assert_eq!(v["last_exit"]["code"], 1, "{v}");
    s.wait_for("the grandchild gone with the agent's group", Duration::from_secs(10), |_| Ok(!pid_exists(grandchild) || is_zombie(grandchild)))?;
    s.wait_state("acp", "ready", T)?;
    let pid2: i32 = client(&url, "pid", None)?["chunks"][0].as_str().unwrap().trim_start_matches("PID:").parse()?;
    assert_ne!(pid, pid2);
    Ok(())
}

#[test]
fn an_oversized_frame_from_the_agent_is_dropped_and_the_bridge_keeps_serving() -> anyhow::Result<()> {
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let ws = format!("ws://127.0.0.1:{port}/acp");
    // Control: a 1 MiB line is delivered.
    let r = client_with(&ws, "big", &["--bytes", "1048576"])?;
    assert_eq!((r["big_ok"].clone(), r["big_notes"].clone(), r["small_notes"].clone()), (true.into(), 1.into(), 1.into()), "{r}");
    // A 17 MiB line (over the 16 MiB limit) is not; what follows it still is.
    let r = client_with(&ws, "big", &["--bytes", &(17 << 20).to_string()])?;
    assert_eq!((r["big_ok"].clone(), r["big_notes"].clone(), r["small_notes"].clone()), (true.into(), 0.into(), 1.into()), "{r}");
    let logs = s.logs("acp", 200);
    assert!(logs.contains("dropping an oversize line"), "{logs}");
    // A client frame over the limit never reaches the agent (the transport closes a WebSocket
    // whose frame is over 16 MiB; a bigger message in smaller fragments is answered with an
    // error by the bridge: unit test `oversize_and_malformed_client_frames_...`).
    let err = client_with(&ws, "bigsend", &["--bytes", &(17 << 20).to_string()]).expect_err("a 17 MiB frame is refused").to_string();
    assert!(err.contains("closed"), "{err}");
    let logs = s.logs("acp", 200);
    assert!(!logs.contains("echo xxxxxxxx"), "the big request reached the agent");
    assert_full_turn(&client(&ws, "normal", None)?);
    assert_eq!(s.service("acp")?["restarts"], 0, "the bridge did not crash");
    Ok(())
}

#[test]
fn ctl_env_set_reads_a_dash_value_from_stdin_never_from_argv() -> anyhow::Result<()> {
    use std::io::Write;
    let agent = fake_agent();
    let (s, port) = acp_stack(&["node", &agent], "")?;
    let secret = format!("s3cr3t-{}", std::process::id());
    let mut ctl = std::process::Command::new(supervisor_bin())
        .args(["ctl", "--runtime-dir"])
        .arg(&s.runtime_dir)
        .args(["env", "set", "E2E_ACP_VAR=-", "E2E_PLAIN=visible"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let ctl_pid = ctl.id();
    // It waits for standard input: the process is there, and the value is not in its argv.
    let cmdline = || String::from_utf8_lossy(&std::fs::read(format!("/proc/{ctl_pid}/cmdline")).unwrap_or_default()).into_owned();
    s.wait_for("ctl exec'd", Duration::from_secs(10), |_| Ok(cmdline().contains("E2E_ACP_VAR=-")))?;
    assert!(!cmdline().contains(&secret));
    assert!(ctl.try_wait()?.is_none(), "ctl must wait for standard input");
    ctl.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes())?;
    let out = ctl.wait_with_output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret), "the value is never printed: {stdout} {stderr}");
    // Written (one trailing newline stripped), listed by key, and it reaches the agent.
    let env = std::fs::read_to_string(s.app_dir.join(".env"))?;
    assert!(env.lines().any(|l| l == format!("E2E_ACP_VAR='{secret}'")), "{env}");
    assert!(env.lines().any(|l| l == "E2E_PLAIN='visible'"), "{env}");
    let tok = s.rotate_token();
    let keys = curl(&["-H", &format!("Authorization: Bearer {tok}"), &s.url("/_supervisor/env")]);
    assert_eq!(keys.status, 200);
    let keys = keys.json()["keys"].clone();
    assert!(keys.as_array().unwrap().iter().any(|k| k == "E2E_ACP_VAR"), "{keys}");
    assert!(!keys.to_string().contains(&secret));
    s.wait_state("acp", "ready", T)?;
    let r = s.wait_for("the agent restarted with the value", T, |_| {
        Ok(client(&format!("http://127.0.0.1:{port}/acp"), "env", None).map(|r| r["chunks"][0].as_str().unwrap_or("").contains(&format!("ENV:{secret}\n"))).unwrap_or(false))
    });
    r?;
    // Only one KEY=- per call.
    let two = std::process::Command::new(supervisor_bin())
        .args(["ctl", "--runtime-dir"])
        .arg(&s.runtime_dir)
        .args(["env", "set", "A=-", "B=-"])
        .stdin(std::process::Stdio::piped())
        .output()?;
    assert_eq!(two.status.code(), Some(2), "{}", String::from_utf8_lossy(&two.stderr));
    assert!(String::from_utf8_lossy(&two.stderr).contains("only one"));
    Ok(())
}
