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
