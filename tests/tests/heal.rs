//! Never silently dead (issue "Never silently dead"): env injection that cannot brick a
//! service (Linux's environment limits, scopes, restarts only on a real change, once per
//! burst), crash loops that heal by themselves, a `.env` FIFO that cannot block the
//! supervisor, bounded log rings, a final shutdown, and a frozen stack that restarts
//! nothing. The env tests run the real `supervisor acp` with the official-SDK test agent.

use e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// A stack whose `acp` service (env_injection) runs `supervisor acp` with the test agent
/// on a free port; `extra` is appended to the config.
fn acp_stack(extra: &str) -> anyhow::Result<Stack> {
    let port = free_port();
    let agent = repo_root().join("tests/js/acp-agent.mjs");
    let s = Stack::start(&format!(
        r#"
[services.acp]
command = ["${{SUPERVISOR}}", "acp", "--listen", "127.0.0.1:{port}", "--cwd", "${{APP_DIR}}", "--", "node", "{agent}"]
env_injection = true
port = {port}
readiness = {{ http = "http://127.0.0.1:{port}/health", status = 200, period = "2s" }}
{extra}
"#,
        agent = agent.display()
    ))?;
    s.wait_state("acp", "ready", T)?;
    Ok(s)
}

fn token(s: &Stack) -> String {
    s.rotate_token()
}

fn post_env(s: &Stack, tok: &str, body: &Value) -> Reply {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("body.json");
    std::fs::write(&f, body.to_string()).expect("write body");
    curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {tok}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", f.display()),
        &s.url("/_supervisor/env"),
    ])
}

fn get(s: &Stack, tok: &str, path: &str) -> Reply {
    curl(&["-H", &format!("Authorization: Bearer {tok}"), &s.url(path)])
}

/// The environment of the service's main process, as `KEY=VALUE` strings.
fn environ(pid: i64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| b.split(|c| *c == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect())
        .unwrap_or_default()
}

/// Waits until `acp` is ready with a process whose environment satisfies `pred`.
fn wait_acp_env(s: &Stack, what: &str, pred: impl Fn(&[String]) -> bool) -> anyhow::Result<Value> {
    s.wait_service("acp", T, what, |v| v["state"] == "ready" && v["pid"].as_i64().is_some_and(|p| pred(&environ(p))))
}

#[test]
fn values_too_large_for_a_process_are_refused_and_one_that_fits_reaches_the_agent() -> anyhow::Result<()> {
    let s = acp_stack("")?;
    let tok = token(&s);
    let env_path = s.app_dir.join(".env");
    std::fs::write(&env_path, "KEEP=1\n")?;
    for kib in [240, 130] {
        let r = post_env(&s, &tok, &json!({"set": {"BIG": "x".repeat(kib * 1024)}}));
        assert_eq!(r.status, 400, "{kib} KiB: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "env_too_large", "{}", r.text());
        assert!(r.text().contains("BIG") && !r.text().contains("xxxx"), "names the key, never the value: {}", r.text());
        assert_eq!(std::fs::read_to_string(&env_path)?, "KEEP=1\n", "file untouched after a refused {kib} KiB value");
    }
    let before = s.service("acp")?["pid"].as_i64().unwrap();
    let value = "y".repeat(100 * 1024);
    let r = post_env(&s, &tok, &json!({"set": {"BIG": value}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["restarted"], json!(["acp"]));
    let needle = format!("BIG={value}");
    let v = wait_acp_env(&s, "restarted with BIG", |env| env.iter().any(|e| *e == needle))?;
    assert_ne!(v["pid"].as_i64(), Some(before), "a new process got the value");
    Ok(())
}

#[test]
fn an_env_file_too_large_at_start_is_left_out_and_named_in_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app)?;
    let huge = "h".repeat(200 * 1024);
    std::fs::write(app.join(".env"), format!("SMALL=1\nHUGE={huge}\n"))?;
    let port = free_port();
    let agent = repo_root().join("tests/js/acp-agent.mjs");
    let s = Stack::start_with(
        &format!(
            r#"
[services.acp]
command = ["${{SUPERVISOR}}", "acp", "--listen", "127.0.0.1:{port}", "--", "node", "{agent}"]
env_injection = true
readiness = {{ http = "http://127.0.0.1:{port}/health", status = 200, period = "2s" }}
"#,
            agent = agent.display()
        ),
        StackOptions { app_dir: Some(app), ..Default::default() },
    )?;
    s.wait_ready(T)?;
    let st = s.status()?;
    assert_eq!(st["env_dropped"][0]["key"], "HUGE", "{}", st["env_dropped"]);
    assert_eq!(st["env_dropped"][0]["scope"], "app");
    assert!(!st.to_string().contains("hhhh"), "status never holds the value");
    let env = environ(s.service("acp")?["pid"].as_i64().unwrap());
    assert!(env.iter().any(|e| e == "SMALL=1"), "the rest is injected");
    assert!(!env.iter().any(|e| e.starts_with("HUGE=")), "the oversized key is left out");
    Ok(())
}

#[test]
fn a_burst_of_writes_restarts_the_agent_at_most_twice_and_a_no_op_restarts_nothing() -> anyhow::Result<()> {
    let s = acp_stack("")?;
    let tok = token(&s);
    let r0 = s.service("acp")?["restarts"].as_u64().unwrap();
    let answers: Vec<Reply> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64).map(|i| {
            let (s, tok) = (&s, &tok);
            sc.spawn(move || post_env(s, tok, &json!({"set": {format!("K{i}"): format!("v{i}")}})))
        }).collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let keys = get(&s, &tok, "/_supervisor/env").json();
    for i in 0..64 {
        assert!(keys["keys"].as_array().unwrap().contains(&json!(format!("K{i}"))), "K{i} lost: {keys}");
    }
    // The last restart has happened once a process sees all 64 keys.
    let v = wait_acp_env(&s, "all 64 keys injected", |env| (0..64).all(|i| env.contains(&format!("K{i}=v{i}"))))?;
    let restarts = v["restarts"].as_u64().unwrap() - r0;
    assert!((1..=2).contains(&restarts), "64 writes in a burst restarted acp {restarts} times");

    let pid = v["pid"].clone();
    let r = post_env(&s, &tok, &json!({"set": {"K1": "v1"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["restarted"], json!([]), "a write that changes nothing restarts nothing");
    // An unrelated change to another service's world would show as a new pid: none.
    let r = post_env(&s, &tok, &json!({"unset": ["NOT_THERE"]}));
    assert_eq!(r.json()["restarted"], json!([]));
    assert_eq!(s.service("acp")?["pid"], pid);
    assert!(v["state"] == "ready" && s.service("acp")?["restarts"].as_u64().unwrap() - r0 == restarts, "no restart after the no-op writes");
    Ok(())
}

#[test]
fn services_scope_secrets_reach_the_services_and_never_the_app_dir() -> anyhow::Result<()> {
    let s = acp_stack("")?;
    let tok = token(&s);
    let secret = "sk-services-only-7f3a9c";
    let r = post_env(&s, &tok, &json!({"set": {"ANTHROPIC_API_KEY": secret}, "scope": "services"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["restarted"], json!(["acp"]));
    let r = post_env(&s, &tok, &json!({"set": {"ANTHROPIC_API_KEY": "app-value", "VITE_X": "1"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_acp_env(&s, "the services-scope secret, winning over the app's", |env| {
        env.contains(&format!("ANTHROPIC_API_KEY={secret}")) && env.contains(&"VITE_X=1".to_string())
    })?;
    // Nowhere under the app dir.
    let mut stack = vec![s.app_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert!(!std::fs::read(&p)?.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds the secret", p.display());
            }
        }
    }
    let file = s.runtime_dir.join("services.env");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    let app_keys = get(&s, &tok, "/_supervisor/env").json();
    assert_eq!(app_keys["keys"], json!(["ANTHROPIC_API_KEY", "VITE_X"]), "the app's own keys only");
    let svc_keys = get(&s, &tok, "/_supervisor/env?scope=services").json();
    assert_eq!(svc_keys["keys"], json!(["ANTHROPIC_API_KEY"]));
    assert_eq!(get(&s, &tok, "/_supervisor/env?scope=nope").status, 400);
    // ctl speaks both scopes.
    let out = s.ctl(&["env", "set", "--scope", "services", "FROM_CTL=1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = String::from_utf8_lossy(&s.ctl(&["env", "keys", "--scope", "services"]).stdout).into_owned();
    assert_eq!(keys.lines().collect::<Vec<_>>(), ["ANTHROPIC_API_KEY", "FROM_CTL"]);
    Ok(())
}

#[test]
fn a_crash_looped_service_comes_back_by_itself_once_its_fault_is_gone() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.flaky]
command = ["sh", "-c", "test -f {DIR}/fixed || exit 1; exec sleep infinity"]
backoff = { initial = "10ms", max = "20ms" }
crash_loop = { max_restarts = 2, window = "60s", retry_after = "3s" }
"#,
    )?;
    let v = s.wait_state("flaky", "failed", T)?;
    let msg = v["message"].as_str().unwrap_or("");
    assert!(msg.contains("crash loop") && msg.contains("trying again in 3s"), "{msg}");
    std::fs::write(s.path().join("fixed"), "")?;
    let t = Instant::now();
    s.wait_state("flaky", "ready", Duration::from_secs(15))?;
    println!("crash-looped service ready again {} ms after its fault was fixed (retry_after 3s)", t.elapsed().as_millis());
    Ok(())
}

#[test]
fn a_spawn_error_says_what_went_wrong() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.missing]
command = ["/nonexistent/tool"]
restart = "never"
"#,
    )?;
    let v = s.wait_state("missing", "failed", T)?;
    let msg = v["message"].as_str().unwrap_or("");
    assert!(msg.contains("/nonexistent/tool") && msg.contains("ENOENT"), "{msg}");
    let table = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(table.contains("ENOENT"), "ctl status shows it: {table}");
    Ok(())
}

#[test]
fn a_fifo_in_place_of_the_env_file_cannot_block_the_supervisor() -> anyhow::Result<()> {
    let s = Stack::start("[services.idle]\ncommand = [\"sleep\", \"infinity\"]\nenv_injection = true\n")?;
    s.wait_ready(T)?;
    let tok = token(&s);
    let env_path = s.app_dir.join(".env");
    nix::unistd::mkfifo(&env_path, nix::sys::stat::Mode::from_bits_truncate(0o644))?;
    for path in ["/_supervisor/healthz", "/_supervisor/status"] {
        let t = Instant::now();
        // A blocked loop would never answer: the ceiling only has to be finite and generous.
        let r = curl(&["--max-time", "10", "-H", &format!("Authorization: Bearer {tok}"), &s.url(path)]);
        assert_eq!(r.status, 200, "{path} must answer while .env is a FIFO");
        assert!(t.elapsed() < Duration::from_secs(10), "{path} took {:?}", t.elapsed());
    }
    let r = curl(&["--max-time", "2", "-H", &format!("Authorization: Bearer {tok}"), &s.url("/_supervisor/env")]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "env_file_error");
    assert!(r.text().contains("FIFO"), "names the problem: {}", r.text());
    let r = post_env(&s, &tok, &json!({"set": {"A": "1"}}));
    assert_eq!(r.status, 500, "a write refuses too, without hanging: {}", r.text());
    std::fs::remove_file(&env_path)?;
    std::fs::write(&env_path, "RESTORED=1\n")?;
    let r = get(&s, &tok, "/_supervisor/env");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["keys"], json!(["RESTORED"]));
    Ok(())
}

#[test]
fn a_service_printing_megabytes_keeps_the_log_ring_bounded_in_bytes() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[supervisor]
log_bytes = "1MiB"
[services.noisy]
command = ["sh", "-c", "head -c 30000000 /dev/urandom; touch {DIR}/done; exec sleep infinity"]
readiness = { file = "{DIR}/done" }
"#,
    )?;
    s.wait_state("noisy", "ready", T)?;
    let r = curl(&["-H", &format!("Authorization: Bearer {}", token(&s)), &s.url("/_supervisor/logs/noisy?tail=100000")]);
    let kept: usize = r.json()["lines"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap_or("").len()).sum();
    // Lossy UTF-8 may make kept text up to 3x the raw bytes; the bound is on kept text.
    assert!(kept <= 1 << 20, "the ring keeps {kept} bytes, more than log_bytes");
    assert!(kept > 256 << 10, "the ring still holds the recent output: {kept} bytes");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", s.pid()))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    println!("supervisor RSS after 30 MB of binary output: {rss_kib} KiB, ring {kept} bytes");
    assert!(rss_kib < 48 * 1024, "supervisor RSS {rss_kib} KiB");
    Ok(())
}

#[test]
fn shutdown_while_a_service_crash_loops_respawns_nothing_and_leaves_nothing() -> anyhow::Result<()> {
    let mut s = Stack::start(
        r#"
[services.crashy]
command = ["sh", "-c", "echo $$ >> {DIR}/pids; sleep 0.05; exit 1"]
backoff = { initial = "1ms", max = "5ms", jitter = 0.0 }
crash_loop = { max_restarts = 100000, window = "1s" }
[services.after]
command = ["sleep", "infinity"]
depends_on = { crashy = "started" }
stop_timeout = "2s"
"#,
    )?;
    s.wait_service("crashy", T, "a few restarts", |v| v["restarts"].as_u64() > Some(5))?;
    let (st, _) = s.terminate(Duration::from_secs(30))?;
    assert!(st.success(), "{st:?}");
    assert!(s.leftovers().is_empty(), "left behind: {:?}", s.leftovers());
    for pid in std::fs::read_to_string(s.path().join("pids"))?.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        assert!(!pid_exists(pid) || is_zombie(pid), "crashy process {pid} survived the shutdown");
    }
    let log = std::fs::read_to_string(&s.log_path)?;
    let stop_at = log.find("stopping the stack").expect("the shutdown is logged");
    let respawned: Vec<&str> = log[stop_at..].lines().filter(|l| l.contains("started") && l.contains("crashy")).collect();
    assert!(respawned.is_empty(), "spawned after shutdown began: {respawned:?}");
    Ok(())
}

/// Starts `opt/supervisor.toml` as root without dropping users on 127.0.0.1:3000 and
/// waits until `supervisor ready` says so.
fn start_production() -> anyhow::Result<(Stack, tempfile::TempDir)> {
    let app = copy_app_template()?;
    let home = app.path().join("home");
    std::fs::create_dir_all(&home)?;
    let config = std::fs::read_to_string(repo_root().join("opt/supervisor.toml"))?.replace("${CONFIG_DIR}", &repo_root().join("opt").to_string_lossy());
    let stack = Stack::start_with(
        &config,
        StackOptions {
            args: vec!["--listen".into(), "127.0.0.1:3000".into(), "--port-guard".into(), "off".into()],
            env: vec![("HOME".into(), home.to_string_lossy().into_owned())],
            app_dir: Some(app.path().join("app")),
            ..Default::default()
        },
    )?;
    stack.wait_ready(Duration::from_secs(120))?;
    Ok((stack, app))
}

#[test]
fn freezing_the_whole_stack_past_every_liveness_window_restarts_nothing() -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _lock = fixed_ports_lock();
    let (s, _app) = start_production()?;
    let before = s.status()?;
    let restarts = |st: &Value| -> Vec<(String, u64)> {
        st["services"].as_array().unwrap().iter().map(|v| (v["name"].as_str().unwrap().to_string(), v["restarts"].as_u64().unwrap())).collect()
    };
    let mut pids = tagged_pids(&s.tag);
    pids.push(s.pid());
    // Resume them all even if an assertion below fails.
    struct Thaw(Vec<i32>);
    impl Drop for Thaw {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = kill(Pid::from_raw(*p), Signal::SIGCONT);
            }
        }
    }
    let thaw = Thaw(pids.clone());
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGSTOP);
    }
    // Longer than every liveness window of opt/supervisor.toml (3 x 10 s).
    std::thread::sleep(Duration::from_secs(40));
    drop(thaw);
    let t = Instant::now();
    s.wait_ready(Duration::from_secs(30))?;
    println!("whole stack ready again {} ms after SIGCONT", t.elapsed().as_millis());
    // The freeze is noticed; once its grace period is over the probes have decided.
    s.wait_for("the freeze noticed", Duration::from_secs(10), |s| Ok(s.status()?["resumed_at"].is_u64()))?;
    s.wait_for("the grace period over", Duration::from_secs(60), |s| Ok(s.status()?["resume_grace"] == false))?;
    let after = s.status()?;
    assert_eq!(restarts(&after), restarts(&before), "no service restarted after the freeze");
    assert_eq!(after["ready"], true);
    Ok(())
}
