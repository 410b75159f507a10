//! The reverse proxy of the public listener (SPEC §5 "Proxy"), through the real binary:
//! a real Vite app rendered by headless Chromium through a public Host, HMR over the
//! proxied WebSocket (subprotocol and `?token=` intact), the "starting" answers while Vite
//! is not ready, and header hygiene / streaming / keep-alive against a small echo upstream.
//!
//! Every Vite runs from a private copy of `app-template/` ([`copy_app_template`]).

use anyhow::{bail, Context, Result};
use e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
/// The public Host a browser on the edge would send.
const PUBLIC_HOST: &str = "abcdefghijklmnop.mk0r.test";

// ---------------------------------------------------------------------------------------
// Vite stacks

/// A supervisor running Vite from a private copy of app-template. Field order matters:
/// the stack (and so Vite) goes down before the copy is removed.
struct ViteStack {
    stack: Stack,
    app: tempfile::TempDir,
    vite_port: u16,
}

impl ViteStack {
    /// Host header value for the public name on the proxy's port.
    fn public_host(&self) -> String {
        format!("{PUBLIC_HOST}:{}", self.proxy_port())
    }
    fn proxy_port(&self) -> u16 {
        self.stack.listen.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// Starts a supervisor with the `vite` service (plus `extra` TOML) on free ports.
fn vite_stack(extra: &str, vite_extra: &str) -> Result<ViteStack> {
    let app = copy_app_template()?;
    let vite_port = free_port();
    let vite = vite_service(vite_port, None);
    let config = format!(
        r#"
{vite}
{vite_extra}
{extra}
"#
    );
    let stack = Stack::start_with(
        &config,
        StackOptions { app_dir: Some(app.path().join("app")), ..Default::default() },
    )?;
    Ok(ViteStack { stack, app, vite_port })
}

// ---------------------------------------------------------------------------------------
// Small HTTP/1.1 client over one TcpStream (for keep-alive, streaming and exact headers)

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn> {
        let w = TcpStream::connect(addr)?;
        w.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn { r: BufReader::new(w.try_clone()?), w })
    }
    fn send(&mut self, head: &str, body: &[u8]) -> Result<()> {
        self.w.write_all(head.as_bytes())?;
        self.w.write_all(body)?;
        Ok(())
    }
    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            bail!("connection closed by the server");
        }
        Ok(l.trim_end_matches(['\r', '\n']).to_string())
    }
    fn head(&mut self) -> Result<(u16, Vec<(String, String)>)> {
        let status_line = self.line()?;
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("bad status line {status_line:?}"))?;
        let mut headers = vec![];
        loop {
            let l = self.line()?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').with_context(|| format!("bad header line {l:?}"))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        Ok((status, headers))
    }
    /// One chunk of a chunked body (None at the last chunk).
    fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let size = usize::from_str_radix(self.line()?.split(';').next().unwrap().trim(), 16)?;
        if size == 0 {
            while !self.line()?.is_empty() {}
            return Ok(None);
        }
        let mut buf = vec![0; size];
        self.r.read_exact(&mut buf)?;
        self.line()?;
        Ok(Some(buf))
    }
    fn response(&mut self) -> Result<Reply> {
        let (status, headers) = self.head()?;
        let mut reply = Reply { status, headers, body: vec![] };
        if reply.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            while let Some(c) = self.chunk()? {
                reply.body.extend(c);
            }
        } else if let Some(n) = reply.header("content-length") {
            reply.body.resize(n.parse()?, 0);
            self.r.read_exact(&mut reply.body)?;
        } else if status != 204 && status != 304 {
            self.r.read_to_end(&mut reply.body)?;
        }
        Ok(reply)
    }
}

// ---------------------------------------------------------------------------------------
// Chromium

/// Kills a process group (and reaps its leader) when dropped.
struct GroupGuard(Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
        // Chromium's helpers are orphaned to init, which reaps them a bit later: wait for
        // the group to be gone entirely so nothing of it outlives the test.
        let group = pgid.as_raw().to_string();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) && group_members(&group) > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Processes (zombies included) whose process group is `pgid`.
fn group_members(pgid: &str) -> usize {
    all_pids().into_iter().filter(|p| proc_stat_field(*p, 5).as_deref() == Some(pgid)).count()
}

/// Headless Chromium `--dump-dom` of `url`, resolving PUBLIC_HOST to 127.0.0.1.
fn chromium_dump_dom(url: &str) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new().prefix("proxy-chromium-").tempdir()?;
    let out_path = dir.path().join("dom.html");
    let err_path = dir.path().join("stderr.txt");
    let mut cmd = Command::new("chromium");
    let child = die_with_runner(&mut cmd)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("--host-resolver-rules=MAP {PUBLIC_HOST} 127.0.0.1"))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .process_group(0)
        .spawn()
        .context("spawn chromium")?;
    let mut guard = GroupGuard(child);
    let Some(status) = wait_child(&mut guard.0, T)? else {
        bail!("chromium did not finish within {T:?}; stderr:\n{}", std::fs::read_to_string(&err_path).unwrap_or_default());
    };
    drop(guard); // whatever it left in its group
    let dom = std::fs::read_to_string(&out_path)?;
    if !status.success() {
        bail!("chromium exited with {status}; stderr:\n{}\ndom:\n{dom}", std::fs::read_to_string(&err_path).unwrap_or_default());
    }
    Ok(dom)
}

// ---------------------------------------------------------------------------------------
// 1. A page through the proxy with a public Host renders.

#[test]
fn page_with_a_public_host_renders_through_the_proxy() -> Result<()> {
    let v = vite_stack("", "")?;
    v.stack.wait_state("vite", "ready", T)?;
    // (a) The HTML itself, through the proxy, with the public Host.
    let r = curl(&["-H", &format!("Host: {PUBLIC_HOST}"), "-H", "Accept: text/html", &v.stack.url("/")]);
    assert_eq!(r.status, 200, "GET / with Host {PUBLIC_HOST}: {}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{:?}", r.headers);
    assert!(r.text().contains("/@vite/client"), "the dev HTML: {}", r.text());
    assert!(r.text().contains(r#"<div id="root">"#), "{}", r.text());
    let direct = curl(&["-H", &format!("Host: {PUBLIC_HOST}"), "-H", "Accept: text/html", &format!("http://127.0.0.1:{}/", v.vite_port)]);
    assert_eq!(r.body, direct.body, "the proxy relays Vite's page byte for byte");
    // (b) A real browser on the public URL runs the app's modules and renders it.
    let url = format!("http://{}/", v.public_host());
    let dom = chromium_dump_dom(&url)?;
    assert!(dom.contains("Hello from the sandbox"), "rendered DOM of {url}:\n{dom}\nsupervisor log:\n{}", v.stack.log_tail(40));
    assert!(dom.contains("<h1"), "{dom}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. HMR through the proxy.

fn ws_token(v: &ViteStack) -> Result<String> {
    let r = curl(&["-H", &format!("Host: {}", v.public_host()), &v.stack.url("/@vite/client")]);
    assert_eq!(r.status, 200, "/@vite/client: {}", r.text());
    let text = r.text();
    let at = text.find("const wsToken = \"").context("no wsToken in /@vite/client")? + "const wsToken = \"".len();
    let len = text[at..].find('"').context("unterminated wsToken")?;
    Ok(text[at..at + len].to_string())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;
type WsResponse = tokio_tungstenite::tungstenite::handshake::client::Response;

/// A `vite-hmr` WebSocket through the proxy, as the page's HMR client opens it.
/// `host` is both the Host and the Origin's authority (the page's own origin).
async fn hmr_connect(v: &ViteStack, host: &str, query: &str) -> Result<std::result::Result<(Ws, WsResponse), tokio_tungstenite::tungstenite::Error>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://{}/{query}", v.stack.listen).into_client_request()?;
    let h = req.headers_mut();
    h.insert("host", HeaderValue::from_str(host)?);
    h.insert("origin", HeaderValue::from_str(&format!("http://{host}"))?);
    h.insert("sec-websocket-protocol", HeaderValue::from_static("vite-hmr"));
    let tcp = tokio::net::TcpStream::connect(&v.stack.listen).await?;
    tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::client_async(req, tcp)).await.context("WebSocket handshake timed out")
}

/// The next text message (parsed), or None when `until` passes first.
async fn next_json(ws: &mut Ws, until: Instant) -> Result<Option<Value>> {
    use futures_util::StreamExt;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("the HMR socket closed"),
            Ok(Some(m)) => m?,
        };
        if msg.is_text() {
            return Ok(Some(serde_json::from_str(msg.to_text()?)?));
        }
    }
}

#[test]
fn hmr_websocket_works_through_the_proxy() -> Result<()> {
    let v = vite_stack("", "")?;
    v.stack.wait_state("vite", "ready", T)?;
    let token = ws_token(&v)?;
    assert!(!token.is_empty());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // With an Origin and no token Vite refuses the upgrade (400): so it is the query
        // the proxy passes through that makes the next one work.
        let public = v.public_host();
        match hmr_connect(&v, &public, "").await? {
            Ok(_) => bail!("an HMR upgrade with Origin and without ?token= was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 400, "Vite's refusal, relayed: {resp:?}")
            }
            Err(e) => bail!("expected an HTTP refusal, got {e}"),
        }
        let bad = hmr_connect(&v, &public, "?token=not-the-token").await?;
        assert!(matches!(bad, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 400), "wrong token: {bad:?}");

        // The in-VM Chromium's page on http://localhost:<port> connects too.
        let local = format!("localhost:{}", v.proxy_port());
        let (mut ws_local, resp) = hmr_connect(&v, &local, &format!("?token={token}")).await?.context("HMR upgrade from localhost")?;
        assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("vite-hmr"), "{resp:?}");
        assert_eq!(next_json(&mut ws_local, Instant::now() + Duration::from_secs(20)).await?, Some(serde_json::json!({"type": "connected"})));
        drop(ws_local);

        let (mut ws, resp) = hmr_connect(&v, &public, &format!("?token={token}")).await?.context("HMR upgrade with the token")?;
        assert_eq!(resp.status().as_u16(), 101);
        assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("vite-hmr"), "{resp:?}");
        let first = next_json(&mut ws, Instant::now() + Duration::from_secs(20)).await?;
        assert_eq!(first, Some(serde_json::json!({"type": "connected"})));

        // Vite only sends updates for modules it has served: load App.tsx through the proxy.
        for p in ["/src/main.tsx", "/src/App.tsx"] {
            let r = curl(&["-H", &format!("Host: {}", v.public_host()), &v.stack.url(p)]);
            assert_eq!(r.status, 200, "{p}: {}", r.text());
        }
        // Edit the copy's App.tsx (again every 5 s in case the watcher was not armed yet).
        let app_tsx = v.app.path().join("app/src/App.tsx");
        let original = std::fs::read_to_string(&app_tsx)?;
        assert!(original.contains("Hello from the sandbox"));
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut seen = vec![];
        let mut round = 0;
        let update = 'outer: loop {
            round += 1;
            std::fs::write(&app_tsx, original.replace("Hello from the sandbox", &format!("Hello after edit {round}")))?;
            let until = deadline.min(Instant::now() + Duration::from_secs(5));
            while let Some(m) = next_json(&mut ws, until).await? {
                let is_update = m["type"] == "update"
                    && m["updates"].as_array().is_some_and(|u| u.iter().any(|u| u["path"] == "/src/App.tsx" || u["acceptedPath"] == "/src/App.tsx"));
                if is_update {
                    break 'outer m;
                }
                seen.push(m);
            }
            if Instant::now() >= deadline {
                bail!("no HMR update for /src/App.tsx within 40 s; messages: {seen:?}\nlog:\n{}", v.stack.log_tail(40));
            }
        };
        assert_eq!(update["updates"][0]["type"], "js-update", "{update}");
        // The splice carries frames both ways: a WebSocket ping reaches Vite, its pong comes back.
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Ping(b"p".to_vec().into())).await?;
        let pong = tokio::time::timeout(Duration::from_secs(10), async {
            use futures_util::StreamExt;
            while let Some(m) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Pong(p) = m? {
                    return Ok::<_, anyhow::Error>(p.to_vec());
                }
            }
            bail!("closed before the pong")
        })
        .await??;
        assert_eq!(pong, b"p");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// 3. "Starting" answers while Vite is not ready; never a hang.

#[test]
fn starting_page_while_vite_is_not_ready_and_never_a_hang() -> Result<()> {
    // Vite waits for a gate the test opens, so "before Vite is ever ready" is certain.
    let v = vite_stack(
        r#"
[services.gate]
command = ["sleep", "infinity"]
readiness = { file = "{DIR}/go", period = "1s" }
"#,
        r#"depends_on = { gate = "ready" }"#,
    )?;
    let s = &v.stack;
    let check_starting = |when: &str| -> Result<()> {
        let t = Instant::now();
        // Never a hang: a generous ceiling, not a speed goal.
        let html = curl(&["--max-time", "10", "-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8", "-H", &format!("Host: {PUBLIC_HOST}"), &s.url("/")]);
        assert!(t.elapsed() < Duration::from_secs(10), "{when}: the starting page took {:?}", t.elapsed());
        assert_eq!(html.status, 503, "{when}: {}", html.text());
        assert!(html.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{when}: {:?}", html.headers);
        assert!(html.text().contains(r#"http-equiv="refresh""#), "{when}: {}", html.text());
        assert!(html.header("retry-after").is_some(), "{when}: {:?}", html.headers);
        // Not a browser: JSON (curl's `-H "Accept:"` sends no Accept at all).
        for accept in ["Accept: application/json", "Accept: */*", "Accept:"] {
            let url = s.url("/src/App.tsx?import");
            let j = curl(&["--max-time", "3", "-H", accept, &url]);
            assert_eq!(j.status, 503, "{when}, Accept {accept:?}: {}", j.text());
            assert!(j.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", j.headers);
            assert_eq!(j.json()["error"]["code"], "starting", "{when}: {}", j.text());
            assert!(j.json()["error"]["message"].is_string());
            assert!(j.header("retry-after").is_some());
        }
        Ok(())
    };
    // Before Vite ever started.
    s.wait_state("vite", "pending", T)?;
    check_starting("vite pending")?;
    // A WebSocket upgrade is answered too (not left hanging).
    let up = curl(&["--max-time", "3", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "-H", "Sec-WebSocket-Protocol: vite-hmr", &s.url("/?token=x")]);
    assert_eq!(up.status, 503, "upgrade while starting: {up:?}");
    // Open the gate; while Vite boots every request gets an answer quickly: 503 or 200.
    std::fs::write(s.path().join("go"), "")?;
    let t = Instant::now();
    let mut saw = vec![];
    loop {
        let r = curl(&["--max-time", "3", "-H", "Accept: text/html", &s.url("/")]);
        assert!(r.status == 503 || r.status == 200, "while Vite starts: {} {}", r.status, r.text());
        saw.push(r.status);
        if r.status == 200 {
            assert!(r.text().contains("/@vite/client"));
            break;
        }
        if t.elapsed() > T {
            bail!("Vite never answered through the proxy: {saw:?}\n{}", s.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // (That the 200 comes only once Vite is *ready*, not merely serving, is
    // the_proxy_holds_back_a_serving_vite_until_its_readiness_passes.)
    // Stopped: the starting answers again.
    let out = s.ctl(&["stop", "vite"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_state("vite", "stopped", T)?;
    check_starting("vite stopped")?;
    // Started again: the app again.
    let out = s.ctl(&["start", "vite"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    v.stack.wait_state("vite", "ready", T)?;
    let r = curl(&["-H", "Accept: text/html", "-H", &format!("Host: {PUBLIC_HOST}"), &s.url("/")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("/@vite/client"));
    // Control routes are never proxied, even while Vite is up.
    let r = curl(&[&s.url("/_supervisor/healthz")]);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    Ok(())
}

#[test]
fn the_proxy_holds_back_a_serving_vite_until_its_readiness_passes() -> Result<()> {
    // Vite serves, but its readiness also needs a gate file: the proxy must answer
    // "starting" while Vite itself already answers 200 directly, and the app once ready.
    let app = copy_app_template()?;
    let port = free_port();
    let gate = format!(r#"{{ exec = ["sh", "-c", "test -f {{DIR}}/gate && curl -sf -o /dev/null -H 'Accept: text/x-vite-ping' http://127.0.0.1:{port}/"], period = "300ms" }}"#);
    let config = vite_service(port, Some(&gate));
    let s = Stack::start_with(&config, StackOptions { app_dir: Some(app.path().join("app")), ..Default::default() })?;
    let direct = format!("http://127.0.0.1:{port}/");
    s.wait_for("vite serving directly", T, |_| Ok(curl(&["--max-time", "3", "-H", "Accept: text/html", &direct]).status == 200))?;
    assert_ne!(s.service("vite")?["state"], "ready", "the gate is closed");
    for _ in 0..3 {
        let r = curl(&["--max-time", "3", "-H", "Accept: text/html", "-H", &format!("Host: {PUBLIC_HOST}"), &s.url("/")]);
        assert_eq!(r.status, 503, "vite serves but is not ready: the proxy must hold back ({})", r.text());
        assert!(r.text().contains(r#"http-equiv="refresh""#), "{}", r.text());
    }
    std::fs::write(s.path().join("gate"), "")?;
    s.wait_state("vite", "ready", T)?;
    let r = curl(&["--max-time", "10", "-H", "Accept: text/html", "-H", &format!("Host: {PUBLIC_HOST}"), &s.url("/")]);
    assert_eq!(r.status, 200, "ready: the app ({})", r.text());
    assert!(r.text().contains("/@vite/client"));
    Ok(())
}

#[test]
fn an_upstream_refusing_connections_gets_the_starting_answer() -> Result<()> {
    // `vite` counts as ready (no probe) but nothing listens on its port.
    let port = free_port();
    let s = Stack::start(&format!("[services.vite]\ncommand = [\"sleep\", \"infinity\"]\nport = {port}\n"))?;
    s.wait_state("vite", "ready", T)?;
    let t = Instant::now();
    let html = curl(&["--max-time", "5", "-H", "Accept: text/html", &s.url("/")]);
    assert_eq!(html.status, 503, "{html:?}");
    assert!(html.text().contains(r#"http-equiv="refresh""#));
    let j = curl(&["--max-time", "5", &s.url("/api/x")]);
    assert_eq!(j.status, 503, "{j:?}");
    assert_eq!(j.json()["error"]["code"], "starting");
    let up = curl(&["--max-time", "5", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", &s.url("/?token=x")]);
    assert_eq!(up.status, 503, "an upgrade to a refusing upstream: {up:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "answers are quick: {:?}", t.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Header hygiene, streaming and keep-alive, against an echo upstream named `vite`.


/// A stack whose `vite` is the echo upstream; returns it with its own dir (script, flag).
fn echo_stack() -> Result<(Stack, tempfile::TempDir)> {
    // The upstream is tests/fixtures/echo.py.
    let dir = tempfile::Builder::new().prefix("proxy-echo-").tempdir()?;
    let port = free_port();
    let echo = fixture("echo.py");
    let s = Stack::start_with(
        &format!(
            r#"
[services.vite]
command = ["python3", "{echo}", "{port}", "${{APP_DIR}}/release"]
port = {port}
readiness = {{ tcp = "127.0.0.1:{port}", period = "2s" }}
"#
        ),
        StackOptions { app_dir: Some(dir.path().to_path_buf()), ..Default::default() },
    )?;
    s.wait_state("vite", "ready", T)?;
    Ok((s, dir))
}

fn echoed(j: &Value, name: &str) -> Vec<String> {
    j["headers"].as_array().unwrap().iter().filter(|h| h[0] == name).map(|h| h[1].as_str().unwrap().to_string()).collect()
}

/// Pseudo-random bytes (an LCG), so a truncation or a reordering changes the digest.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn request_headers_are_cleaned_and_forwarded() -> Result<()> {
    let (s, _dir) = echo_stack()?;
    let mut c = Conn::open(&s.listen)?;
    c.send(
        &format!(
            "GET /echo/a%20b?x=1&token=abc&y=%2F HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\n\
             Connection: keep-alive, X-Hop-Custom\r\nX-Hop-Custom: must-go\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
             Proxy-Connection: keep-alive\r\n\
             e2b-traffic-access-token: edge-secret\r\nX-Forwarded-For: 203.0.113.9\r\n\
             Authorization: Bearer app-token\r\nCookie: a=1; b=2\r\nX-End-To-End: kept\r\nAccept: application/json\r\n\r\n"
        ),
        b"",
    )?;
    let r = c.response()?;
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/echo/a%20b?x=1&token=abc&y=%2F", "path and query intact");
    assert_eq!(echoed(&j, "host"), vec![PUBLIC_HOST], "Host preserved: {j}");
    for gone in ["e2b-traffic-access-token", "x-hop-custom", "keep-alive", "te", "proxy-connection", "upgrade", "trailer"] {
        assert!(echoed(&j, gone).is_empty(), "{gone} must not reach the app: {j}");
    }
    // Connection itself is hop-by-hop: what the proxy's own client sends is its business,
    // but nothing the client put in it survives.
    for v in echoed(&j, "connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop-custom"), "client's Connection forwarded: {j}");
    }
    assert_eq!(echoed(&j, "x-forwarded-for"), vec!["203.0.113.9, 127.0.0.1"], "appended: {j}");
    assert_eq!(echoed(&j, "x-forwarded-proto"), vec!["http"], "{j}");
    assert_eq!(echoed(&j, "x-forwarded-host"), vec![PUBLIC_HOST], "{j}");
    assert_eq!(echoed(&j, "authorization"), vec!["Bearer app-token"], "end-to-end headers untouched: {j}");
    assert_eq!(echoed(&j, "cookie"), vec!["a=1; b=2"]);
    assert_eq!(echoed(&j, "x-end-to-end"), vec!["kept"]);
    // Response side: the upstream's hop-by-hop headers are not relayed, the rest is.
    assert_eq!(r.header("x-up-end"), Some("kept"), "{:?}", r.headers);
    for gone in ["x-up-hop", "keep-alive"] {
        assert!(r.header(gone).is_none(), "upstream's {gone} relayed: {:?}", r.headers);
    }
    assert!(!r.header("connection").unwrap_or("").to_ascii_lowercase().contains("x-up-hop"), "{:?}", r.headers);
    Ok(())
}

#[test]
fn the_edges_forwarded_headers_are_kept_and_the_peer_is_added() -> Result<()> {
    let (s, _dir) = echo_stack()?;
    let mut c = Conn::open(&s.listen)?;
    // No X-Forwarded-For from the client → just the peer; the edge's X-Forwarded-Proto
    // and -Host are kept.
    c.send(&format!("GET /echo/2 HTTP/1.1\r\nHost: {PUBLIC_HOST}:443\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: edge.example\r\n\r\n"), b"")?;
    let r2 = c.response()?;
    let j2 = r2.json();
    assert_eq!(j2["path"], "/echo/2");
    assert_eq!(echoed(&j2, "x-forwarded-for"), vec!["127.0.0.1"], "{j2}");
    assert_eq!(echoed(&j2, "x-forwarded-proto"), vec!["https"], "{j2}");
    assert_eq!(echoed(&j2, "x-forwarded-host"), vec!["edge.example"], "{j2}");
    assert_eq!(echoed(&j2, "host"), vec![format!("{PUBLIC_HOST}:443")], "{j2}");
    Ok(())
}

#[test]
fn an_upgrade_request_gets_the_same_header_hygiene() -> Result<()> {
    let (s, _dir) = echo_stack()?;
    // An upgrade request (the path that splices WebSockets) gets the same hygiene, an
    // origin-form request line with the query intact, and its own Upgrade/Connection.
    let mut u = Conn::open(&s.listen)?;
    u.send(
        &format!(
            "GET /ws/hmr?token=abc%3D&x=1 HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nConnection: Upgrade, X-Hop-Custom\r\nX-Hop-Custom: must-go\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: vite-hmr\r\nOrigin: http://{PUBLIC_HOST}\r\ne2b-traffic-access-token: edge-secret\r\nTE: trailers\r\n\r\n"
        ),
        b"",
    )?;
    let r3 = u.response()?;
    assert_eq!(r3.status, 200, "the echo upstream answers upgrades with plain JSON: {r3:?}");
    let j3 = r3.json();
    assert_eq!(j3["path"], "/ws/hmr?token=abc%3D&x=1", "origin-form, query intact: {j3}");
    assert_eq!(echoed(&j3, "host"), vec![PUBLIC_HOST], "{j3}");
    assert_eq!(echoed(&j3, "upgrade"), vec!["websocket"], "{j3}");
    assert_eq!(echoed(&j3, "connection").iter().map(|v| v.to_ascii_lowercase()).collect::<Vec<_>>(), vec!["upgrade"], "{j3}");
    assert_eq!(echoed(&j3, "sec-websocket-protocol"), vec!["vite-hmr"], "{j3}");
    assert_eq!(echoed(&j3, "sec-websocket-key"), vec!["dGhlIHNhbXBsZSBub25jZQ=="], "{j3}");
    assert_eq!(echoed(&j3, "origin"), vec![format!("http://{PUBLIC_HOST}")], "{j3}");
    for gone in ["e2b-traffic-access-token", "x-hop-custom", "te"] {
        assert!(echoed(&j3, gone).is_empty(), "{gone} must not reach the app on an upgrade: {j3}");
    }
    assert_eq!(echoed(&j3, "x-forwarded-for"), vec!["127.0.0.1"], "{j3}");
    assert_eq!(echoed(&j3, "x-forwarded-host"), vec![PUBLIC_HOST], "{j3}");
    Ok(())
}

#[test]
fn keep_alive_reuses_the_client_and_the_upstream_connection() -> Result<()> {
    let (s, _dir) = echo_stack()?;
    let mut c = Conn::open(&s.listen)?;
    let mut upstream_ports = vec![];
    for i in 0..10 {
        let body = format!("body {i}");
        c.send(&format!("POST /echo/{i} HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len()), body.as_bytes())?;
        let r = c.response().with_context(|| format!("request {i} on the same client connection"))?;
        assert_eq!(r.status, 200);
        assert!(!r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "the proxy closes keep-alive: {:?}", r.headers);
        let j = r.json();
        assert_eq!(j["path"], format!("/echo/{i}"));
        assert_eq!(j["body_len"], body.len());
        upstream_ports.push(j["peer_port"].as_u64().unwrap());
    }
    // Two requests written back to back (pipelined) are both answered, in order.
    c.send(&format!("GET /echo/p1 HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\n\r\nGET /echo/p2 HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\n\r\n"), b"")?;
    assert_eq!(c.response()?.json()["path"], "/echo/p1");
    assert_eq!(c.response()?.json()["path"], "/echo/p2");
    // Sequential requests ride pooled upstream connections, not one connection each (a
    // request may race the previous connection's return to the pool and open a second).
    eprintln!("upstream peer ports of 10 sequential requests: {upstream_ports:?}");
    let mut distinct = upstream_ports.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() <= 3, "upstream connections are not reused: peer ports {upstream_ports:?}");
    Ok(())
}

#[test]
fn large_bodies_stream_through_intact() -> Result<()> {
    let (s, dir) = echo_stack()?;
    let n = 5 * 1024 * 1024 + 7;
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, noise(n))?;
    let want = sha256_file(&file);
    let data = format!("@{}", file.display());
    let url = s.url("/echo/upload");
    // Request bodies, with Content-Length and chunked.
    for chunked in [false, true] {
        let mut args = vec!["-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", &data];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        args.push(&url);
        let r = curl(&args);
        assert_eq!(r.status, 200, "chunked={chunked}: {}", r.text());
        let j = r.json();
        assert_eq!(j["body_len"], n, "chunked={chunked}: {j}");
        assert_eq!(j["body_sha256"], want.as_str(), "chunked={chunked}");
    }
    // A large response body.
    let m = 6 * 1024 * 1024 + 3;
    let r = curl(&[&s.url(&format!("/big?n={m}"))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), m);
    assert!(r.body.iter().enumerate().all(|(i, b)| *b as usize == i % 251), "response body corrupted");
    // Streaming, not buffering: the first chunk arrives while the upstream is still
    // holding back the rest (it waits for the flag file this test creates).
    let mut c = Conn::open(&s.listen)?;
    c.send(&format!("GET /stream HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\n\r\n"), b"")?;
    let (status, headers) = c.head()?;
    assert_eq!(status, 200, "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")), "{headers:?}");
    let t = Instant::now();
    let first = c.chunk()?.context("no first chunk")?;
    assert_eq!(first, b"first\n", "first chunk before the upstream finished");
    assert!(t.elapsed() < Duration::from_secs(10));
    std::fs::write(dir.path().join("release"), "")?;
    let mut rest = vec![];
    while let Some(ch) = c.chunk()? {
        rest.extend(ch);
    }
    assert_eq!(rest, b"second\n");
    Ok(())
}
