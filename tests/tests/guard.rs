//! The port guard (SPEC §7), default-deny, tested only inside network namespaces this test
//! creates, never on the host's own tables. The "VM" namespace runs the supervisor, stand-ins
//! for the stack's loopback listeners (5173, 9222, 3001, 3002), an undeclared listener on
//! 9229 (`node --inspect`) and E2B's envd simulated exactly as envd does it: a
//! `socat TCP4-LISTEN:<port>,bind=<outward address>,fork TCP:localhost:<port>` per loopback
//! listener, plus a dual-stack listener on all interfaces (`vite preview`). A second
//! "client" namespace, joined by a veth pair (IPv4 and IPv6), plays the internet.

use e2e::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The VM's outward address (E2B: 169.254.0.21) and the client's.
const VM_IP: &str = "10.231.0.1";
const CLIENT_IP: &str = "10.231.0.2";
/// The same two over IPv6 (the guard's `ip6` table).
const VM_IP6: &str = "fd00:231::1";
const CLIENT_IP6: &str = "fd00:231::2";
/// A dual-stack listener on all interfaces the agent might start (`vite preview`).
const PREVIEW: u16 = 4173;
/// The loopback listeners envd would forward: the stack's internal ports and an undeclared one.
const INTERNAL: [u16; 5] = [5173, 9222, 3001, 3002, 9229];

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Two network namespaces joined by a veth pair (the addresses are private to them); deleted on drop.
struct NetPair {
    vm: String,
    client: String,
}

impl NetPair {
    fn create() -> anyhow::Result<NetPair> {
        let id = format!("{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let pair = NetPair { vm: format!("supg-vm-{id}"), client: format!("supg-cl-{id}") };
        let (vm_if, cl_if) = (format!("gv{id}"), format!("gc{id}"));
        sh(&["ip", "netns", "add", &pair.vm])?;
        sh(&["ip", "netns", "add", &pair.client])?;
        sh(&["ip", "link", "add", &vm_if, "netns", &pair.vm, "type", "veth", "peer", "name", &cl_if, "netns", &pair.client])?;
        for (ns, dev, ip, ip6) in [(&pair.vm, &vm_if, VM_IP, VM_IP6), (&pair.client, &cl_if, CLIENT_IP, CLIENT_IP6)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/30"), "dev", dev])?;
            sh(&["ip", "-n", ns, "-6", "addr", "add", &format!("{ip6}/64"), "dev", dev, "nodad"])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// `ip netns exec NS` as a command prefix.
    fn exec(ns: &str) -> Vec<String> {
        ["/usr/sbin/ip", "netns", "exec", ns].map(String::from).to_vec()
    }

    /// The nftables tables in the VM namespace.
    fn vm_tables(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.vm, "nft", "list", "tables"]).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `http://VM_IP:port/` answers (any HTTP status) from the client namespace.
    fn answers_from_outside(&self, port: u16) -> bool {
        self.curl_from(&self.client, &format!("http://{VM_IP}:{port}/")) != "000"
    }

    /// Whether `http://[VM_IP6]:port/` answers from the client namespace.
    fn answers_from_outside_v6(&self, port: u16) -> bool {
        self.curl_from(&self.client, &format!("http://[{VM_IP6}]:{port}/")) != "000"
    }

    /// The HTTP status curl gets from inside namespace `ns` ("000": no connection).
    fn curl_from(&self, ns: &str, url: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "--connect-timeout", "1", "-m", "3", "-w", "%{http_code}", url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace ends its veth pair too.
        let _ = Command::new("ip").args(["netns", "del", &self.vm]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.client]).output();
    }
}

/// Processes started here (envd's forwarders, listeners), killed on drop.
struct Procs(Vec<Child>);

impl Procs {
    fn spawn(&mut self, ns: &str, argv: &[&str]) -> anyhow::Result<()> {
        let child = Command::new("ip").args(["netns", "exec", ns]).args(argv).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        self.0.push(child);
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The stack inside the VM namespace: stand-ins on the internal ports (loopback only, as the
/// real ones are), one of them undeclared, and `vite`'s stand-in proxied on 3000.
fn config() -> String {
    let mut cfg = String::new();
    for (name, port) in [("vite", 5173), ("chromium", 9222), ("playwright-mcp", 3001), ("acp", 3002), ("inspector", 9229)] {
        let declared = if name == "inspector" { String::new() } else { format!("port = {port}\n") };
        cfg.push_str(&format!(
            "[services.{name}]\ncommand = [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\ncwd = \"{{DIR}}\"\n{declared}readiness = {{ tcp = \"127.0.0.1:{port}\", period = \"500ms\" }}\n\n"
        ));
    }
    cfg
}

fn start_in(net: &NetPair, guard: &str, env: Vec<(String, String)>) -> anyhow::Result<Stack> {
    Stack::start_with(
        &config(),
        StackOptions {
            args: vec!["--listen".into(), "0.0.0.0:3000".into(), "--port-guard".into(), guard.into()],
            wrapper: NetPair::exec(&net.vm),
            env,
            ..Default::default()
        },
    )
}

/// envd: a forwarder on the outward address for each loopback listener.
fn envd(net: &NetPair, procs: &mut Procs) -> anyhow::Result<()> {
    for port in INTERNAL {
        let listen = format!("TCP4-LISTEN:{port},bind={VM_IP},fork,reuseaddr");
        procs.spawn(&net.vm, &["socat", &listen, &format!("TCP:localhost:{port}")])?;
    }
    // envd itself listens on all interfaces; so does a `vite preview` the agent started.
    procs.spawn(&net.vm, &["python3", "-m", "http.server", "49983", "--bind", "::"])?;
    procs.spawn(&net.vm, &["python3", "-m", "http.server", &PREVIEW.to_string(), "--bind", "::"])?;
    Ok(())
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t = Instant::now();
    while !cond() {
        anyhow::ensure!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn the_guard_lets_only_the_public_port_and_envd_through_and_fails_closed() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "the port-guard test needs root (ip netns, nft)");
    let host_tables_before = String::from_utf8_lossy(&Command::new("nft").args(["list", "tables"]).output()?.stdout).into_owned();
    let net = NetPair::create()?;
    let mut procs = Procs(Vec::new());
    envd(&net, &mut procs)?;

    // Without the guard, envd forwards every loopback listener: CDP answers from outside.
    let mut s = start_in(&net, "off", vec![])?;
    s.wait_ready(Duration::from_secs(20))?;
    wait_until("envd's forwarder of 9222", Duration::from_secs(10), || net.answers_from_outside(9222))?;
    assert!(net.answers_from_outside(9229), "control: the undeclared listener is exposed too");
    wait_until("the preview server over IPv6", Duration::from_secs(10), || net.answers_from_outside_v6(PREVIEW))?;
    assert!(net.answers_from_outside(PREVIEW), "control: and over IPv4");
    assert_eq!(s.status()?["port_guard"]["mode"], "off");
    s.terminate(Duration::from_secs(20))?;

    // With the guard: only 3000 and envd's 49983 answer from outside.
    let mut s = start_in(&net, "required", vec![])?;
    s.wait_ready(Duration::from_secs(20))?;
    let g = s.status()?["port_guard"].clone();
    assert_eq!((g["mode"].as_str(), g["active"].as_bool()), (Some("required"), Some(true)), "{g}");
    assert_eq!(g["allow"], serde_json::json!([3000, 49983]), "{g}");
    let tables = net.vm_tables();
    assert!(tables.contains("table ip supervisor_guard") && tables.contains("table ip6 supervisor_guard"), "{tables}");
    assert!(!tables.contains("inet"), "no inet table (E2B's kernel has no NF_TABLES_INET): {tables}");
    assert_eq!(net.curl_from(&net.client, &format!("http://{VM_IP}:3000/_supervisor/readyz")), "200", "the public port answers, ready");
    assert_eq!(net.curl_from(&net.client, &format!("http://{VM_IP}:3000/")), "200", "and proxies the app");
    assert!(net.answers_from_outside(49983), "envd stays reachable");
    let blocked: Vec<(u16, bool)> = INTERNAL.iter().map(|p| (*p, net.answers_from_outside(*p))).collect();
    assert!(blocked.iter().all(|(_, open)| !open), "internal and undeclared ports dropped from outside: {blocked:?}");
    assert!(!net.answers_from_outside(PREVIEW) && !net.answers_from_outside_v6(PREVIEW), "a listener on all interfaces is dropped over IPv4 and IPv6");
    assert!(net.answers_from_outside_v6(49983), "envd stays reachable over IPv6");
    for port in INTERNAL {
        assert_eq!(net.curl_from(&net.vm, &format!("http://127.0.0.1:{port}/")), "200", "loopback inside the VM still works ({port})");
    }
    // The VM's own outbound connections still get their answers (established/related).
    procs.spawn(&net.client, &["python3", "-m", "http.server", "8080", "--bind", CLIENT_IP])?;
    wait_until("an outbound connection from the VM", Duration::from_secs(10), || net.curl_from(&net.vm, &format!("http://{CLIENT_IP}:8080/")) == "200")?;
    let table = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(table.contains("port guard: active"), "{table}");
    let host_tables = String::from_utf8_lossy(&Command::new("nft").args(["list", "tables"]).output()?.stdout).into_owned();
    assert_eq!(host_tables, host_tables_before, "the host's own tables are untouched");
    let (st, _) = s.terminate(Duration::from_secs(20))?;
    assert!(st.success());
    let tables = net.vm_tables();
    assert!(!tables.contains("supervisor_guard"), "both tables removed at shutdown: {tables}");
    // Nothing left behind: a listener on 9222 is forwarded from outside again.
    procs.spawn(&net.vm, &["python3", "-m", "http.server", "9222", "--bind", "127.0.0.1"])?;
    wait_until("9222 forwarded again after shutdown", Duration::from_secs(10), || net.answers_from_outside(9222))?;

    // Without nft, `required` fails closed: not ready, with the reason, everywhere.
    let bin = tempfile::tempdir()?; // a PATH with python3 (the services) and no nft
    let py = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output()?;
    std::os::unix::fs::symlink(String::from_utf8_lossy(&py.stdout).trim(), bin.path().join("python3"))?;
    procs.0.pop().map(|mut c| (c.kill(), c.wait())); // free 9222 for the stand-in again
    let mut s = start_in(&net, "required", vec![("PATH".into(), bin.path().display().to_string())])?;
    s.wait_for("every service ready", Duration::from_secs(20), |s| {
        Ok(s.status()?["services"].as_array().unwrap().iter().all(|v| v["state"] == "ready"))
    })?;
    let st = s.status()?;
    assert_eq!(st["ready"], false, "status.ready follows readyz");
    let g = &st["port_guard"];
    assert_eq!((g["mode"].as_str(), g["active"].as_bool()), (Some("required"), Some(false)), "{g}");
    assert!(g["error"].as_str().unwrap_or("").contains("nft"), "{g}");
    let readyz = Command::new("ip")
        .args(["netns", "exec", &net.client, "curl", "-s", "-m", "3", "-w", "\n%{http_code}", &format!("http://{VM_IP}:3000/_supervisor/readyz")])
        .output()?;
    let readyz = String::from_utf8_lossy(&readyz.stdout).into_owned();
    let (body, code) = readyz.rsplit_once('\n').unwrap();
    assert_eq!(code, "503", "{readyz}");
    let v: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(v["ready"], false);
    assert!(v["reason"].as_str().unwrap_or("").starts_with("port guard not active: cannot run nft"), "{v}");
    let ready = Command::new(supervisor_bin()).args(["ready", "--timeout", "2", "--runtime-dir"]).arg(&s.runtime_dir).output()?;
    let err = String::from_utf8_lossy(&ready.stderr);
    assert!(!ready.status.success() && err.contains("port guard not active"), "supervisor ready fails naming the reason: {err}");
    s.terminate(Duration::from_secs(20))?;
    Ok(())
}
