//! The port guard (`--port-guard on`), tested only inside a network namespace this test
//! creates (with a veth pair to the host), never on the host's own tables: a service
//! listening on all interfaces is reachable from outside the namespace without the guard,
//! unreachable with it, while the public listener and loopback stay reachable; the rules
//! are gone after shutdown.

use e2e::*;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// A network namespace joined to the host by a veth pair; deleted on drop.
struct NetNs {
    name: String,
    host_if: String,
    /// The namespace's address, as seen from the host.
    ns_ip: String,
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

impl NetNs {
    fn create() -> anyhow::Result<NetNs> {
        let id = std::process::id() % 200 + 20;
        let name = format!("supg{id}");
        let (host_if, ns_if) = (format!("vsh{id}"), format!("vsn{id}"));
        let (host_ip, ns_ip) = (format!("10.231.{id}.1"), format!("10.231.{id}.2"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let ns = NetNs { name: name.clone(), host_if: host_if.clone(), ns_ip: ns_ip.clone() };
        sh(&["ip", "netns", "add", &name])?;
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        sh(&["ip", "link", "set", &ns_if, "netns", &name])?;
        sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        sh(&["ip", "netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        sh(&["ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
        sh(&["ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone()]
    }

    fn nft_tables(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name, "nft", "list", "tables"]).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

fn reachable(addr: &str) -> bool {
    let a: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&a, Duration::from_millis(700)).is_ok()
}

fn config(port: u16) -> String {
    format!(
        r#"
[services.internal]
command = ["python3", "-m", "http.server", "{port}", "--bind", "0.0.0.0"]
port = {port}
readiness = {{ tcp = "127.0.0.1:{port}" }}
"#
    )
}

fn start_in(ns: &NetNs, port: u16, public: u16, guard: &str) -> anyhow::Result<Stack> {
    let s = Stack::start_with(
        &config(port),
        StackOptions {
            args: vec!["--listen".into(), format!("0.0.0.0:{public}"), "--port-guard".into(), guard.into()],
            wrapper: ns.exec(),
            ..Default::default()
        },
    )?;
    s.wait_ready(Duration::from_secs(20))?;
    Ok(s)
}

#[test]
fn the_guard_drops_outside_traffic_to_internal_ports_only_inside_its_namespace() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("the port-guard test needs root (ip netns, nft)");
    }
    let host_tables_before = String::from_utf8_lossy(&Command::new("nft").args(["list", "tables"]).output()?.stdout).into_owned();
    let ns = NetNs::create()?;
    let (port, public) = (free_port(), free_port());
    let internal = format!("{}:{port}", ns.ns_ip);
    let front = format!("{}:{public}", ns.ns_ip);

    // Without the guard the internal port is exposed: what the guard is for.
    let mut s = start_in(&ns, port, public, "off")?;
    assert!(reachable(&internal), "control: without the guard the port answers from outside");
    assert_eq!(s.status()?["port_guard"]["enabled"], false);
    s.terminate(Duration::from_secs(20))?;

    let mut s = start_in(&ns, port, public, "on")?;
    let g = s.status()?["port_guard"].clone();
    assert_eq!(g["active"], true, "{g}");
    assert_eq!(g["ports"], serde_json::json!([port]));
    assert!(ns.nft_tables().contains("supervisor_guard"), "rules installed in the namespace");
    assert!(!reachable(&internal), "the guard must drop outside traffic to {internal}");
    assert!(reachable(&front), "the public listener stays reachable from outside");
    let inside = Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}/")])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&inside.stdout), "200", "loopback inside the VM still works");
    let table = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(table.contains("port guard: active"), "{table}");
    let host_tables = String::from_utf8_lossy(&Command::new("nft").args(["list", "tables"]).output()?.stdout).into_owned();
    assert_eq!(host_tables, host_tables_before, "the host's own tables are untouched");

    let (st, _) = s.terminate(Duration::from_secs(20))?;
    assert!(st.success());
    assert!(!ns.nft_tables().contains("supervisor_guard"), "rules removed at shutdown");
    Ok(())
}
