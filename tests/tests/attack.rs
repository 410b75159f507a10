//! The public listener under attack (SPEC §5 "Limits on the public listener"): slowloris,
//! a connection flood under a low open-file limit, and the keep-alive race between the
//! upstream pool and Node's keep-alive timeout. Every stack here is on free ports.

use e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A stack whose proxied app is a real HTTP server (python's http.server) on a free port.
fn app_stack(extra: &str, opts: StackOptions) -> anyhow::Result<Stack> {
    let port = free_port();
    let cfg = format!(
        r#"
[supervisor]
proxy_service = "app"

[services.app]
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
cwd = "{{DIR}}"
port = {port}
readiness = {{ http = "http://127.0.0.1:{port}/", status = 200, period = "1s", timeout = "900ms" }}
liveness = {{ tcp = "127.0.0.1:{port}", period = "1s", timeout = "900ms", failure_threshold = 2 }}
{extra}
"#
    );
    let s = Stack::start_with(&cfg, opts)?;
    s.wait_ready(Duration::from_secs(20))?;
    Ok(s)
}

/// One `GET path` on a fresh connection (`Connection: close`): status and time taken.
fn timed_get(listen: &str, path: &str, limit: Duration) -> (u16, Duration) {
    let t = Instant::now();
    let status = (|| -> std::io::Result<u16> {
        let mut c = TcpStream::connect_timeout(&listen.parse().unwrap(), limit)?;
        c.set_read_timeout(Some(limit))?;
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf)?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned();
        Ok(head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0))
    })()
    .unwrap_or(0);
    (status, t.elapsed())
}

/// One `GET path` on an open keep-alive connection; the status (0 if the connection is gone).
fn get_on(c: &mut TcpStream, path: &str) -> u16 {
    let mut once = || -> std::io::Result<u16> {
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if c.read(&mut byte)? == 0 {
                return Ok(0);
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        c.read_exact(&mut body)?;
        Ok(head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0))
    };
    once().unwrap_or(0)
}

/// Whether the server has closed `c` (EOF or reset); never blocks.
fn closed(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let r = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    c.set_nonblocking(false).expect("blocking");
    r
}

#[test]
fn slowloris_connections_are_closed_after_the_header_timeout_while_others_are_served() -> anyhow::Result<()> {
    let s = app_stack("", StackOptions::default())?;
    // A keep-alive connection that stays idle past the header timeout must survive it.
    let mut keep = TcpStream::connect(&s.listen)?;
    assert_eq!(get_on(&mut keep, "/_supervisor/healthz"), 200);

    const N: usize = 200;
    let mut slow: Vec<(TcpStream, Instant, Option<Duration>)> = Vec::new();
    for _ in 0..N {
        let mut c = TcpStream::connect(&s.listen)?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")?;
        slow.push((c, Instant::now(), None));
    }
    let start = Instant::now();
    let (mut worst_health, mut worst_app, mut rounds) = (Duration::ZERO, Duration::ZERO, 0);
    let mut last_trickle = Instant::now();
    while slow.iter().any(|c| c.2.is_none()) && start.elapsed() < Duration::from_secs(20) {
        if last_trickle.elapsed() >= Duration::from_millis(500) {
            last_trickle = Instant::now();
            for (c, first, done) in slow.iter_mut().filter(|c| c.2.is_none()) {
                if c.write_all(b"X-Slow: 1\r\n").is_err() {
                    *done = Some(first.elapsed());
                }
            }
        }
        for (c, first, done) in slow.iter_mut().filter(|c| c.2.is_none()) {
            if closed(c) {
                *done = Some(first.elapsed());
            }
        }
        let (h, th) = timed_get(&s.listen, "/_supervisor/healthz", Duration::from_secs(3));
        let (a, ta) = timed_get(&s.listen, "/", Duration::from_secs(3));
        assert_eq!((h, a), (200, 200), "healthz and the app answer during the attack (after {:?})", start.elapsed());
        assert!(th < Duration::from_secs(1) && ta < Duration::from_secs(1), "healthz {th:?}, app {ta:?}: each under 1 s");
        worst_health = worst_health.max(th);
        worst_app = worst_app.max(ta);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let times: Vec<Duration> = slow.iter().map(|c| c.2.expect("every slow connection is closed within 20 s")).collect();
    let (min, max) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    println!("slowloris: {N} connections closed {min:?}..{max:?} after their first byte; worst healthz {worst_health:?}, app {worst_app:?} over {rounds} rounds");
    assert!(*min >= Duration::from_secs(9), "closed by the header timeout (10 s), not earlier: {min:?}");
    assert!(*max <= Duration::from_secs(12), "closed within 12 s: {max:?}");
    assert_eq!(get_on(&mut keep, "/_supervisor/healthz"), 200, "an idle keep-alive connection outlives the header timeout");
    Ok(())
}

/// The hard open-file limit of this process.
fn hard_nofile() -> u64 {
    let out = std::process::Command::new("sh").args(["-c", "ulimit -Hn"]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// `Max open files` (soft, hard) of a process.
fn nofile_of(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or("").to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f.get(3).unwrap_or(&"?").to_string(), f.get(4).unwrap_or(&"?").to_string())
}

fn rss_kib(pid: i32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    st.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

#[test]
fn a_flood_of_idle_connections_under_a_low_soft_limit_starves_nothing() -> anyhow::Result<()> {
    const N: usize = 3000;
    let hard = hard_nofile();
    anyhow::ensure!(hard >= 2 * N as u64 + 1024, "this host's hard RLIMIT_NOFILE is {hard}: the flood test needs at least {}", 2 * N + 1024);
    // This process holds the other end of every connection.
    let me = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit").args(["--pid", &me, &format!("--nofile={hard}:{hard}")]).status();
    let spawner = r#"
[services.spawner]
command = ["sleep", "infinity"]
readiness = { exec = ["true"], period = "1s", timeout = "900ms" }
liveness = { exec = ["true"], period = "1s", timeout = "900ms", failure_threshold = 1 }
"#;
    let opts = StackOptions { wrapper: vec!["prlimit".into(), format!("--nofile=1024:{hard}"), "--".into()], ..Default::default() };
    let s = app_stack(spawner, opts)?;
    let pid = s.pid();
    let (soft, hard_seen) = nofile_of(pid);
    assert_eq!(soft, hard_seen, "the supervisor raised its soft limit (started at 1024) to the hard limit");
    let before = s.status()?;
    let ready_at = |v: &serde_json::Value| -> Vec<(String, serde_json::Value, serde_json::Value)> {
        v["services"].as_array().unwrap().iter().map(|x| (x["name"].as_str().unwrap().to_string(), x["ready_at"].clone(), x["restarts"].clone())).collect()
    };
    let rss0 = rss_kib(pid);

    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        conns.push(TcpStream::connect(&s.listen).map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?);
    }
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    s.wait_for("the supervisor to hold every connection", Duration::from_secs(10), |_| Ok(fds() >= N))?;
    let held = fds();
    let start = Instant::now();
    let (mut worst, mut rounds) = (Duration::ZERO, 0);
    while start.elapsed() < Duration::from_secs(30) {
        let (code, t) = timed_get(&s.listen, "/_supervisor/healthz", Duration::from_secs(3));
        assert_eq!(code, 200, "healthz answers while {N} connections are open (after {:?})\n{}", start.elapsed(), s.log_tail(20));
        assert!(t < Duration::from_secs(1), "healthz took {t:?}");
        worst = worst.max(t);
        let st = s.status()?;
        for svc in st["services"].as_array().unwrap() {
            assert_eq!(svc["state"], "ready", "no service leaves ready during the flood: {svc}");
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ready_at(&s.status()?), ready_at(&before), "no service went unready and back, none restarted");
    let still_open = conns.iter_mut().map(closed).filter(|c| !c).count();
    assert_eq!(still_open, N, "the idle connections are held (idle limit is 630 s)");
    let rss1 = rss_kib(pid);
    println!(
        "flood: {N} idle connections held ({held} descriptors), soft limit {soft}; worst healthz {worst:?} over {rounds} rounds; RSS {rss0} -> {rss1} KiB ({:.1} KiB per connection)",
        (rss1.saturating_sub(rss0)) as f64 / N as f64
    );
    Ok(())
}

/// Node's real idle close: `keepAliveTimeout` plus Node 24's `keepAliveTimeoutBuffer`.
fn node_idle_ms() -> anyhow::Result<u64> {
    let out = std::process::Command::new("node")
        .args(["-e", "const s=require('http').createServer();console.log(s.keepAliveTimeout+(s.keepAliveTimeoutBuffer??0))"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

#[test]
fn requests_spaced_at_nodes_keep_alive_timeout_never_get_a_502() -> anyhow::Result<()> {
    let port = free_port();
    let idle = node_idle_ms()?;
    anyhow::ensure!(idle >= 4500, "Node's keep-alive is {idle} ms; the pool idle timeout (4 s) is chosen below 5 s");
    // Node is busy (60 ms of work, as Vite's transforms are) from 10 ms before its keep-alive
    // timer is due, in the check phase: the next loop turn runs that timer before it reads
    // the socket, so a request arriving in those 60 ms is reset unread (measured: every gap
    // from -6 ms to +58 ms), instead of a sub-millisecond window left to chance.
    let script = format!(
        "const h = require('http'); const srv = h.createServer((q, s) => {{ \
         setTimeout(() => setImmediate(() => {{ const t = Date.now(); while (Date.now() - t < 60); }}), srv.keepAliveTimeout + (srv.keepAliveTimeoutBuffer ?? 0) - 10); \
         s.end('ok'); }}); srv.listen({port}, '127.0.0.1');"
    );
    let cfg = format!(
        r#"
[supervisor]
proxy_service = "node"

[services.node]
command = ["node", "-e", {script:?}]
port = {port}
readiness = {{ tcp = "127.0.0.1:{port}", period = "1s" }}
"#
    );
    let s = Stack::start(&cfg)?;
    s.wait_ready(Duration::from_secs(20))?;
    let mut codes = Vec::new();
    // The first answer puts an upstream connection into the pool; then each request comes
    // just before, at, or just after the moment Node closes that idle connection.
    let (code, _) = timed_get(&s.listen, "/", Duration::from_secs(5));
    assert_eq!(code, 200);
    for gap_ms in (idle - 30..=idle + 30).step_by(6) {
        std::thread::sleep(Duration::from_millis(gap_ms));
        let (code, _) = timed_get(&s.listen, "/", Duration::from_secs(5));
        codes.push((gap_ms, code));
    }
    println!("keep-alive race (Node closes idle connections after {idle} ms): {codes:?}");
    assert!(codes.iter().all(|(_, c)| *c == 200), "every request answered by Node, no 502: {codes:?}\n{}", s.log_tail(20));
    Ok(())
}
