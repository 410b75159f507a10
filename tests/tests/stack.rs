//! The production stack end to end (`opt/supervisor.toml`): real Xvfb, Chromium,
//! Playwright MCP and Vite on a copy of app-template, behind port 3000. The fixed ports
//! make these tests take a lock; each prints the figures it measures.

use e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(90);

struct Prod {
    stack: Stack,
    _app: tempfile::TempDir,
    boot: Duration,
}

/// Starts the production config as root without dropping users, on 127.0.0.1:3000.
fn start_prod() -> anyhow::Result<Prod> {
    let app = copy_app_template()?;
    let home = app.path().join("home");
    std::fs::create_dir_all(&home)?;
    // Resolve (and, without $SUPERVISOR_BIN, build) the binary before the clock starts.
    let _ = supervisor_bin();
    let t0 = Instant::now();
    let config = std::fs::read_to_string(repo_root().join("opt/supervisor.toml"))?;
    // ${CONFIG_DIR} must stay the repo's opt/ (its node_modules): expand it here.
    let config = config.replace("${CONFIG_DIR}", &repo_root().join("opt").to_string_lossy());
    let stack = Stack::start_with(
        &config,
        StackOptions {
            args: vec!["--listen".into(), "127.0.0.1:3000".into(), "--port-guard".into(), "off".into()],
            env: vec![("HOME".into(), home.to_string_lossy().into_owned())],
            app_dir: Some(app.path().join("app")),
            ..Default::default()
        },
    )?;
    let ready = stack.ready_cmd(BOOT.as_secs())?;
    let boot = t0.elapsed();
    anyhow::ensure!(ready.status.success(), "stack not ready in {BOOT:?}\n{}\n{}", stack.status().map(|s| s.to_string()).unwrap_or_default(), stack.log_tail(60));
    Ok(Prod { stack, _app: app, boot })
}

/// Prints each service's start-to-ready time and the critical path from `status`.
fn print_boot(p: &Prod) -> anyhow::Result<Value> {
    let st = p.stack.status()?;
    let base = st["started_at"].as_u64().unwrap_or(0);
    println!("boot: `supervisor run` -> ready in {} ms (measured by the test)", p.boot.as_millis());
    let mut last = ("", 0u64);
    for s in st["services"].as_array().unwrap() {
        let (Some(start), Some(ready)) = (s["started_at"].as_u64(), s["ready_at"].as_u64()) else {
            println!("  {:<15} {}", s["name"].as_str().unwrap(), s["state"]);
            continue;
        };
        println!(
            "  {:<15} started +{:>5} ms, ready +{:>5} ms, own start-to-ready {:>5} ms",
            s["name"].as_str().unwrap(),
            start - base,
            ready - base,
            ready - start
        );
        if ready > last.1 {
            last = (s["name"].as_str().unwrap(), ready);
        }
    }
    println!("  critical path ends with {} at +{} ms", last.0, last.1 - base);
    Ok(st)
}

#[test]
fn the_stack_boots_serves_the_app_and_hmr_reaches_browsers() -> anyhow::Result<()> {
    let _lock = fixed_ports_lock();
    let p = start_prod()?;
    let st = print_boot(&p)?;
    assert_eq!(st["ready"], true);
    for name in ["xvfb", "chromium", "playwright-mcp", "vite"] {
        let s = service_in(&st, name).unwrap();
        assert_eq!(s["state"], "ready", "{name}: {s}");
    }
    let s = &p.stack;
    let readyz = curl(&["http://127.0.0.1:3000/_supervisor/readyz"]);
    assert_eq!((readyz.status, readyz.json()["ready"].clone()), (200, Value::Bool(true)));
    let app_tsx = s.app_dir.join("src/App.tsx");
    let file = app_tsx.to_string_lossy().into_owned();

    // The stack's own Chromium (on Xvfb) opens http://localhost:3000; an edit arrives by HMR.
    let r = node_client("browser.mjs", &["--cdp", "http://127.0.0.1:9222", "--page", "http://localhost:3000/", "--file", &file])?;
    println!("in-VM chromium, http://localhost:3000: {r}");
    assert_eq!(r["before"], "Hello from the sandbox");
    assert!(r["after"].as_str().unwrap().starts_with("Edited "), "{r}");
    assert_eq!(r["reloaded"], false, "HMR must update without a reload: {r}");

    // A browser on a public-style host name (mapped to 127.0.0.1) through port 3000.
    let r = node_client("browser.mjs", &["--launch", "--map", "abcdefghijklmnop.mk0r.test", "--page", "http://abcdefghijklmnop.mk0r.test:3000/", "--file", &file])?;
    println!("public host, abcdefghijklmnop.mk0r.test:3000: {r}");
    assert_eq!(r["before"], "Hello from the sandbox");
    assert_eq!(r["reloaded"], false, "{r}");

    // CDP through /_supervisor/cdp: 401 without the token, a real CDP client with it.
    assert_eq!(curl(&["http://127.0.0.1:3000/_supervisor/cdp/json/version"]).status, 401);
    let tok = s.rotate_token();
    let v = curl(&["-H", &format!("Authorization: Bearer {tok}"), "http://127.0.0.1:3000/_supervisor/cdp/json/version"]);
    assert_eq!(v.status, 200);
    assert!(v.json()["webSocketDebuggerUrl"].as_str().unwrap().starts_with("ws://127.0.0.1:3000/_supervisor/cdp/devtools/browser/"), "{}", v.text());
    let pub_v = curl(&["-H", &format!("Authorization: Bearer {tok}"), "-H", "Host: abcdefghijklmnop.mk0r.test", "http://127.0.0.1:3000/_supervisor/cdp/json/version"]);
    assert!(pub_v.json()["webSocketDebuggerUrl"].as_str().unwrap().starts_with("wss://abcdefghijklmnop.mk0r.test/_supervisor/cdp/"), "{}", pub_v.text());
    let r = node_client("browser.mjs", &["--cdp", "http://127.0.0.1:3000/_supervisor/cdp", "--token", &tok, "--page", "http://localhost:3000/", "--file", &file])?;
    println!("CDP through /_supervisor/cdp: {r}");
    assert_eq!(r["before"], "Hello from the sandbox");
    let denied = node_client("browser.mjs", &["--cdp", "http://127.0.0.1:3000/_supervisor/cdp", "--token", "wrong", "--page", "http://localhost:3000/", "--file", &file]);
    assert!(denied.is_err(), "a wrong token must not reach CDP");
    Ok(())
}

fn mcp(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let mut args = vec!["--url", url, "--navigate", "http://localhost:3000/"];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    node_client("mcp-client.mjs", &args)
}

fn assert_mcp_sees_the_app(r: &Value) {
    let tools: Vec<&str> = r["tools"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
    assert!(tools.contains(&"browser_navigate") && tools.contains(&"browser_snapshot"), "{tools:?}");
    assert!(r["snapshot"].as_str().unwrap().contains("Hello from the sandbox"), "snapshot: {}", r["snapshot"]);
}

/// SIGKILLs the service's main process and waits until it is ready again with a new pid.
fn kill_and_recover(s: &Stack, name: &str) -> anyhow::Result<Duration> {
    let before = s.service(name)?;
    let pid = before["pid"].as_i64().unwrap() as i32;
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    s.wait_service(name, Duration::from_secs(60), "back and ready", |v| v["state"] == "ready" && v["pid"].as_i64() != Some(pid as i64))?;
    s.wait_ready(Duration::from_secs(60))?;
    Ok(t.elapsed())
}

#[test]
fn mcp_works_and_survives_killing_vite_and_chromium() -> anyhow::Result<()> {
    let _lock = fixed_ports_lock();
    let p = start_prod()?;
    let s = &p.stack;
    let direct = mcp("http://127.0.0.1:3001/mcp", None)?;
    assert_mcp_sees_the_app(&direct);
    let tok = s.rotate_token();
    assert_mcp_sees_the_app(&mcp("http://127.0.0.1:3000/_supervisor/mcp", Some(&tok))?);
    assert!(mcp("http://127.0.0.1:3000/_supervisor/mcp", Some("wrong")).is_err(), "wrong token refused");

    let vite = kill_and_recover(s, "vite")?;
    println!("recovery after SIGKILL of vite: {} ms to ready", vite.as_millis());
    let page = curl(&["-H", "Host: abcdefghijklmnop.mk0r.test", "http://127.0.0.1:3000/"]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/@vite/client"));

    let mcp_pid = s.service("playwright-mcp")?["pid"].clone();
    let chromium = kill_and_recover(s, "chromium")?;
    println!("recovery after SIGKILL of chromium: {} ms to ready (playwright-mcp restarted with it)", chromium.as_millis());
    let m = s.wait_service("playwright-mcp", Duration::from_secs(60), "restarted with chromium", |v| v["state"] == "ready" && v["pid"] != mcp_pid)?;
    assert!(m["restarts"].as_u64() >= Some(1));
    let t = Instant::now();
    assert_mcp_sees_the_app(&mcp("http://127.0.0.1:3001/mcp", None)?);
    println!("MCP navigate+snapshot after recovery: {} ms", t.elapsed().as_millis());
    Ok(())
}

#[test]
fn sigterm_stops_the_whole_stack_within_its_deadline() -> anyhow::Result<()> {
    let _lock = fixed_ports_lock();
    let mut p = start_prod()?;
    let before = p.stack.leftovers();
    assert!(before.len() >= 6, "the stack runs many processes: {before:?}");
    let (st, took) = p.stack.terminate(Duration::from_secs(30))?;
    println!("SIGTERM -> supervisor exit: {} ms", took.as_millis());
    assert!(st.success(), "{st:?}");
    assert!(took < Duration::from_secs(20), "shutdown_timeout is 20s; took {took:?}");
    let left = p.stack.leftovers();
    assert!(left.is_empty(), "processes of the stack survived: {left:?}");
    // Not even a zombie may carry the tag (leftovers() skips zombies), including
    // chrome_crashpad_handler, which leaves its service's group.
    let crashpad: Vec<i32> = all_pids()
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.windows(p.stack.tag.len()).any(|w| w == p.stack.tag.as_bytes())))
        .collect();
    assert!(crashpad.is_empty(), "{crashpad:?}");
    for port in [3000, 5173, 9222, 3001] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open");
    }
    Ok(())
}
