//! The production stack end to end (`opt/supervisor.toml`) in its production combination:
//! the supervisor as root with `--port-guard on`, every service dropped to a real
//! unprivileged user (`supervisor-test`, created by scripts/setup.sh), real Xvfb,
//! Chromium, Playwright MCP, the ACP service and Vite on a copy of app-template, behind
//! port 3000 — each stack inside a network namespace of its own (with a veth to the host,
//! so the guard is seen working from outside). Namespaces have their own ports, and the
//! machine-wide names the config uses (X display :99, the MCP output dir, Chromium's
//! profile in the shared home of the service user) are given per-test values, so these tests need no fixed-ports lock. Each prints its figures.

use e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const PUBLIC: &str = "abcdefghijklmnop.mk0r.test";

struct Prod {
    stack: Stack,
    ns: NetNs,
    _app: tempfile::TempDir,
    boot: Duration,
}

impl Prod {
    /// `curl` from inside the namespace.
    fn curl(&self, args: &[&str]) -> Reply {
        self.ns.curl(args)
    }
    fn node(&self, script: &str, args: &[&str]) -> anyhow::Result<Value> {
        node_client_in(&self.ns.exec(), script, args)
    }
    fn node_run(&self, script: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        node_run_in(&self.ns.exec(), script, args, NODE_TIMEOUT)
    }
}

/// Starts the production config: root, `--port-guard on`, `--service-user supervisor-test`,
/// on 0.0.0.0:3000 of a network namespace of its own.
fn start_prod() -> anyhow::Result<Prod> {
    let p = start_production("e2e", BOOT)?;
    Ok(Prod { stack: p.stack, ns: p.ns, _app: p.app, boot: p.boot })
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

/// Whether `addr` accepts a TCP connection from the host (through the veth).
fn reachable_from_host(addr: &str) -> bool {
    let a: std::net::SocketAddr = addr.parse().unwrap();
    std::net::TcpStream::connect_timeout(&a, Duration::from_millis(1500)).is_ok()
}

#[test]
fn the_production_combination_runs_every_service_as_the_user_behind_the_guard() -> anyhow::Result<()> {
    let p = start_prod()?;
    let st = print_boot(&p)?;
    assert_eq!(st["ready"], true);
    let (uid, _) = test_user()?;
    for name in ["xvfb", "chromium", "playwright-mcp", "acp", "vite"] {
        let s = service_in(&st, name).unwrap();
        assert_eq!(s["state"], "ready", "{name}: {s}");
        let pid = s["pid"].as_i64().unwrap() as i32;
        assert_eq!(proc_uid(pid), Some(uid), "{name} runs as {TEST_USER}");
    }
    assert_eq!(proc_uid(p.stack.pid()), Some(0), "the supervisor itself is root");
    // No process of the stack but the supervisor runs as root.
    let root_owned: Vec<i32> = p.stack.leftovers().into_iter().filter(|pid| proc_uid(*pid) == Some(0)).collect();
    assert!(root_owned.is_empty(), "processes of the stack left running as root: {root_owned:?}");
    // The guard: active on the internal ports; from outside the namespace only 3000 answers.
    let g = &st["port_guard"];
    assert_eq!(g["active"], true, "{g}");
    // Default-deny: only the listen port and the allow list (envd) get in from outside.
    assert_eq!(g["allow"], serde_json::json!([3000, 49983]), "{g}");
    assert_eq!(g["mode"], "on", "{g}");
    let ns_ip = p.ns.ns_ip.clone().unwrap();
    assert!(reachable_from_host(&format!("{ns_ip}:3000")), "the public port answers from outside");
    let readyz = curl(&[&format!("http://{ns_ip}:3000/_supervisor/readyz")]);
    assert_eq!((readyz.status, readyz.json()), (200, serde_json::json!({"ready": true})), "readyz from outside");
    // Vite listens on 127.0.0.1 only; 9222 likewise. The guard's rules are checked by
    // guard.rs against a 0.0.0.0 listener; here: nothing internal answers from outside.
    for port in [5173, 9222, 3001, 3002] {
        assert!(!reachable_from_host(&format!("{ns_ip}:{port}")), "internal port {port} answers from outside the namespace");
    }
    // The app through port 3000, with a public Host, from outside.
    let page = curl(&["-H", &format!("Host: {PUBLIC}"), &format!("http://{ns_ip}:3000/")]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("/@vite/client"));
    Ok(())
}

#[test]
fn the_stack_serves_the_app_and_hmr_reaches_browsers() -> anyhow::Result<()> {
    let p = start_prod()?;
    let s = &p.stack;
    let readyz = p.curl(&["http://127.0.0.1:3000/_supervisor/readyz"]);
    assert_eq!((readyz.status, readyz.json()["ready"].clone()), (200, Value::Bool(true)));
    let app_tsx = s.app_dir.join("src/App.tsx");
    let file = app_tsx.to_string_lossy().into_owned();

    // The stack's own Chromium (on Xvfb) opens http://localhost:3000; an edit arrives by HMR.
    let r = p.node("browser.mjs", &["--cdp", "http://127.0.0.1:9222", "--page", "http://localhost:3000/", "--file", &file])?;
    println!("in-VM chromium, http://localhost:3000: {r}");
    assert_eq!(r["before"], "Hello from the sandbox");
    assert!(r["after"].as_str().unwrap().starts_with("Edited "), "{r}");
    assert_eq!(r["reloaded"], false, "HMR must update without a reload: {r}");

    // A browser on a public-style host name (mapped to 127.0.0.1) through port 3000.
    let r = p.node("browser.mjs", &["--launch", "--map", PUBLIC, "--page", &format!("http://{PUBLIC}:3000/"), "--file", &file])?;
    println!("public host, {PUBLIC}:3000: {r}");
    assert_eq!(r["before"], "Hello from the sandbox");
    assert_eq!(r["reloaded"], false, "{r}");
    Ok(())
}

#[test]
fn cdp_through_the_control_route_needs_the_token() -> anyhow::Result<()> {
    let p = start_prod()?;
    let s = &p.stack;
    let file = s.app_dir.join("src/App.tsx").to_string_lossy().into_owned();
    let r = p.curl(&["http://127.0.0.1:3000/_supervisor/cdp/json/version"]);
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (401, Value::from("unauthorized")), "{}", r.text());
    let tok = s.rotate_token();
    let auth = format!("Authorization: Bearer {tok}");
    let v = p.curl(&["-H", &auth, "http://127.0.0.1:3000/_supervisor/cdp/json/version"]);
    assert_eq!(v.status, 200);
    assert!(v.json()["webSocketDebuggerUrl"].as_str().unwrap().starts_with("ws://127.0.0.1:3000/_supervisor/cdp/devtools/browser/"), "{}", v.text());
    let pub_v = p.curl(&["-H", &auth, "-H", &format!("Host: {PUBLIC}"), "http://127.0.0.1:3000/_supervisor/cdp/json/version"]);
    assert!(pub_v.json()["webSocketDebuggerUrl"].as_str().unwrap().starts_with(&format!("wss://{PUBLIC}/_supervisor/cdp/")), "{}", pub_v.text());
    let r = p.node("browser.mjs", &["--cdp", "http://127.0.0.1:3000/_supervisor/cdp", "--token", &tok, "--page", "http://localhost:3000/", "--file", &file])?;
    println!("CDP through /_supervisor/cdp: {r}");
    assert_eq!(r["before"], "Hello from the sandbox");
    // A wrong token: the real CDP client is refused with 401 (not any failure).
    let w = p.curl(&["-H", "Authorization: Bearer wrong", "http://127.0.0.1:3000/_supervisor/cdp/json/version/"]);
    assert_eq!(w.status, 401, "{}", w.text());
    let denied = p.node_run("browser.mjs", &["--cdp", "http://127.0.0.1:3000/_supervisor/cdp", "--token", "wrong", "--page", "http://localhost:3000/", "--file", &file])?;
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success(), "a wrong token must not reach CDP");
    assert!(err.contains("401"), "refused with 401: {err}");
    Ok(())
}

fn mcp(p: &Prod, url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let mut args = vec!["--url", url, "--navigate", "http://localhost:3000/"];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    p.node("mcp-client.mjs", &args)
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
    let p = start_prod()?;
    let s = &p.stack;
    assert_mcp_sees_the_app(&mcp(&p, "http://127.0.0.1:3001/mcp", None)?);
    let tok = s.rotate_token();
    assert_mcp_sees_the_app(&mcp(&p, "http://127.0.0.1:3000/_supervisor/mcp", Some(&tok))?);
    let denied = p.node_run("mcp-client.mjs", &["--url", "http://127.0.0.1:3000/_supervisor/mcp", "--token", "wrong", "--navigate", "http://localhost:3000/"])?;
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success(), "a wrong token must not reach MCP");
    assert!(err.contains("HTTP status 401"), "refused with 401: {err}");

    let vite = kill_and_recover(s, "vite")?;
    println!("recovery after SIGKILL of vite: {} ms to ready", vite.as_millis());
    let page = p.curl(&["-H", &format!("Host: {PUBLIC}"), "http://127.0.0.1:3000/"]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/@vite/client"));

    let mcp_pid = s.service("playwright-mcp")?["pid"].clone();
    let chromium = kill_and_recover(s, "chromium")?;
    println!("recovery after SIGKILL of chromium: {} ms to ready (playwright-mcp restarted with it)", chromium.as_millis());
    let m = s.wait_service("playwright-mcp", Duration::from_secs(60), "restarted with chromium", |v| v["state"] == "ready" && v["pid"] != mcp_pid)?;
    assert!(m["restarts"].as_u64() >= Some(1));
    let t = Instant::now();
    assert_mcp_sees_the_app(&mcp(&p, "http://127.0.0.1:3001/mcp", None)?);
    println!("MCP navigate+snapshot after recovery: {} ms", t.elapsed().as_millis());
    Ok(())
}

#[test]
fn sigterm_stops_the_whole_stack_within_its_deadline() -> anyhow::Result<()> {
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
    for port in [3000, 5173, 9222, 3001, 3002] {
        let r = p.curl(&["--max-time", "3", &format!("http://127.0.0.1:{port}/")]);
        assert_eq!(r.status, 0, "port {port} still open in the namespace");
    }
    let tables = p.ns.run(&["nft", "list", "tables"], Duration::from_secs(10))?;
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("supervisor_guard"), "the guard's rules removed at shutdown");
    Ok(())
}
