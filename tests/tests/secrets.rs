//! The public port's secrets (SPEC §5), through the real binary: with the real Vite on a
//! copy of the real app-template and a secret written through `POST /_supervisor/env`, no
//! spelling of a secret path returns it (the proxy answers 404 itself, nothing forwarded),
//! while the app, a real browser and HMR keep working; `?token=` counts only on WebSocket
//! upgrades; a same-size token rewrite takes effect at once; rotating the token closes an
//! open `/_supervisor/cdp` WebSocket to a real Chromium; malformed paths and queries
//! answer JSON errors on the public listener and the control socket.
//!
//! Every port is a free one (Vite and Chromium are told theirs), so no fixed-port lock.

use anyhow::{bail, Context, Result};
use e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tokio_tungstenite::tungstenite;

const T: Duration = Duration::from_secs(60);

/// A supervisor running Vite on a private copy of app-template. Field order: the stack
/// (and so Vite) goes down before the copy is removed.
struct ViteStack {
    stack: Stack,
    app: tempfile::TempDir,
}

impl ViteStack {
    fn app_dir(&self) -> std::path::PathBuf {
        self.app.path().join("app")
    }
}

fn vite_stack() -> Result<ViteStack> {
    let app = copy_app_template()?;
    let port = free_port();
    let config = vite_service(port, None);
    let stack = Stack::start_with(&config, StackOptions { app_dir: Some(app.path().join("app")), ..Default::default() })?;
    Ok(ViteStack { stack, app })
}

fn bearer(tok: &str) -> String {
    format!("Authorization: Bearer {tok}")
}

/// A fresh random-looking marker (the pid and the clock), so no earlier run can match.
fn marker(prefix: &str) -> String {
    let ns = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{:x}{:x}", std::process::id(), ns)
}

/// Sends a raw request head on a fresh connection and returns the status and headers.
fn raw_head(addr: &str, head: &str) -> Result<(u16, Vec<(String, String)>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(head.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line.split(' ').nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("bad status line {line:?}"))?;
    let mut headers = vec![];
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            break;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

// ---------------------------------------------------------------------------------------
// Secret paths

#[test]
fn no_secret_path_is_served_and_the_app_still_works() -> Result<()> {
    let v = vite_stack()?;
    let s = &v.stack;
    let app = v.app_dir();
    let app_s = app.to_string_lossy().to_string();
    s.wait_state("vite", "ready", T)?;
    let tok = s.rotate_token();

    // The secret goes in through the API, as the control plane writes it.
    let secret = marker("sk-live-");
    let body = serde_json::json!({"set": {"SECRET_API_KEY": secret, "VITE_PUBLIC_NAME": "shown"}}).to_string();
    let r = curl(&["-X", "POST", "-H", &bearer(&tok), "-H", "Content-Type: application/json", "--data-binary", &body, &s.url("/_supervisor/env")]);
    assert_eq!(r.status, 200, "env write: {}", r.text());
    assert!(std::fs::read_to_string(app.join(".env"))?.contains(&secret), "the secret is in the app's .env");
    let git_secret = marker("gitcred-");
    std::fs::create_dir_all(app.join(".git"))?;
    std::fs::write(app.join(".git/config"), format!("[remote \"origin\"]\n\turl = https://user:{git_secret}@example.invalid/repo.git\n"))?;

    let attacks = [
        "/.env".to_string(),
        "/.env?raw".into(),
        "/.env?import".into(),
        "/%2eenv".into(),
        "/%252eenv".into(),
        "/%2e%65%6e%76?raw".into(),
        "/.ENV?raw".into(),
        format!("/@fs{app_s}/.env?import&raw??"),
        format!("/@fs{app_s}/.env?raw"),
        format!("/@fs{app_s}/%2eenv?raw"),
        "/src/%2e%2e/.env?raw".into(),
        "/src/..%2f.env?raw".into(),
        "/src/..%5c.env?raw".into(),
        "//.env".into(),
        "//.env?raw".into(),
        "/.env;x?raw".into(),
        "/.git/config".into(),
        "/.git/config?raw".into(),
        "/%2egit/config?import&raw".into(),
        "/@fs/etc/passwd?raw".into(),
        format!("/@fs{app_s}/../../../../etc/passwd?raw"),
        format!("/@fs{}/token?raw", s.runtime_dir.display()),
        "/../.env".into(),
        "/etc/passwd?raw".into(),
        "/@id//etc/passwd?raw".into(),
        format!("{}/token?raw", s.runtime_dir.display()),
        format!("/@id/{}/token?raw", s.runtime_dir.display()),
    ];
    for path in &attacks {
        let r = curl(&["--path-as-is", "-H", "Host: abcdefghijklmnop.mk0r.test", &s.url(path)]);
        let text = r.text();
        assert!(!text.contains(&secret) && !text.contains(&git_secret) && !text.contains("root:x:0"), "{path} leaked: {text}");
        assert!(!(200..300).contains(&r.status), "{path}: {} {text}", r.status);
        // The proxy itself answered (Vite never answers this JSON): nothing was forwarded.
        assert_eq!(r.status, 404, "{path}: {text}");
        assert_eq!(r.json()["error"]["code"], "not_found", "{path}: {text}");
    }
    // Refusals are logged with the path, never the query (which may carry a token).
    let q = marker("querysecret");
    let r = curl(&[&s.url(&format!("/.env?token={q}"))]);
    assert_eq!(r.status, 404);
    s.wait_for("the refusal in the log", Duration::from_secs(10), |s| Ok(s.log_tail(200).contains("refused a secret path")))?;
    let log = std::fs::read_to_string(&s.log_path)?;
    assert!(!log.contains(&q), "the query reached the log");
    assert!(!log.contains(&secret), "the secret reached the log");

    // The app still loads: the page, Vite's client, a module, an optimized dependency.
    let page = curl(&["-H", "Accept: text/html", "-H", "Host: abcdefghijklmnop.mk0r.test", &s.url("/")]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("/@vite/client"), "{}", page.text());
    let client = curl(&[&s.url("/@vite/client")]);
    assert_eq!(client.status, 200, "{}", client.text());
    for p in ["/@react-refresh", "/src/main.tsx"] {
        let r = curl(&[&s.url(p)]);
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    // Vite's own dot path: the dep optimizer's output under /node_modules/.vite/.
    let main = curl(&[&s.url("/src/main.tsx")]).text();
    let dep = main.split('"').find(|p| p.starts_with("/node_modules/.vite/deps/")).with_context(|| format!("no optimized dep in main.tsx: {main}"))?.to_string();
    let r = curl(&[&s.url(&dep)]);
    assert_eq!(r.status, 200, "{dep}: {}", r.text());
    // A real browser renders the app through the proxy (no module it needs is refused).
    let refusals = || std::fs::read_to_string(&s.log_path).unwrap_or_default().matches("refused a secret path").count();
    let before = refusals();
    let dom = chromium_dump_dom(&s.url("/"))?;
    assert!(dom.contains("Hello from the sandbox"), "rendered DOM:\n{dom}\n{}", s.log_tail(40));
    assert_eq!(refusals(), before, "the browser asked for a refused path:\n{}", s.log_tail(20));

    // HMR: the page's WebSocket upgrade through the proxy still switches protocols.
    let text = client.text();
    let at = text.find("const wsToken = \"").context("no wsToken in /@vite/client")? + "const wsToken = \"".len();
    let ws_token = &text[at..at + text[at..].find('"').context("unterminated wsToken")?];
    let host = s.listen.clone();
    let (status, headers) = raw_head(
        &s.listen,
        &format!(
            "GET /?token={ws_token} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: vite-hmr\r\n\r\n"
        ),
    )?;
    assert_eq!(status, 101, "HMR upgrade: {headers:?}\n{}", s.log_tail(20));
    assert!(headers.iter().any(|(k, v)| k == "sec-websocket-protocol" && v == "vite-hmr"), "{headers:?}");
    Ok(())
}

/// Kills a process group (and reaps its leader) when dropped.
struct GroupGuard(Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Headless Chromium's `--dump-dom` of `url`.
fn chromium_dump_dom(url: &str) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new().prefix("secrets-chromium-").tempdir()?;
    let out = dir.path().join("dom.html");
    let child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawn chromium")?;
    let mut guard = GroupGuard(child);
    let status = wait_child(&mut guard.0, T)?.with_context(|| format!("chromium did not finish within {T:?}"))?;
    drop(guard);
    anyhow::ensure!(status.success(), "chromium exited with {status}");
    Ok(std::fs::read_to_string(&out)?)
}

// ---------------------------------------------------------------------------------------
// The token

#[test]
fn query_token_only_on_websocket_upgrades_and_same_size_rewrites_count_at_once() -> Result<()> {
    let s = Stack::start("[services.idle]\ncommand = [\"sleep\", \"infinity\"]\n")?;
    let token_file = s.runtime_dir.join("token");
    std::fs::write(&token_file, "tok-AAAAAAAAAAAAAAAA\n")?;
    let url = s.url("/_supervisor/status?token=tok-AAAAAAAAAAAAAAAA");
    assert_eq!(curl(&[&s.url("/_supervisor/status"), "-H", &bearer("tok-AAAAAAAAAAAAAAAA")]).status, 200, "the bearer works");
    let plain = curl(&[&url]);
    assert_eq!(plain.status, 401, "?token= without an upgrade: {}", plain.text());
    assert_eq!(plain.json()["error"]["code"], "unauthorized");
    let h2c = curl(&["-H", "Connection: Upgrade, HTTP2-Settings", "-H", "Upgrade: h2c", "-H", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", &url]);
    assert_eq!(h2c.status, 401, "?token= with Upgrade: h2c: {}", h2c.text());
    let no_conn = curl(&["-H", "Upgrade: websocket", &url]);
    assert_eq!(no_conn.status, 401, "Upgrade without Connection: upgrade: {}", no_conn.text());
    // On a real WebSocket upgrade the query token is accepted (the route is not a
    // WebSocket, so anything but 401 shows the token counted).
    let (ws, _) = raw_head(
        &s.listen,
        &format!(
            "GET /_supervisor/status?token=tok-AAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            s.listen
        ),
    )?;
    assert_ne!(ws, 401, "?token= on a WebSocket upgrade");

    // Same inode, same size, written twice within one second: the new token counts at once.
    let mut tries = 0;
    loop {
        tries += 1;
        let (a, b) = (format!("same-size-{tries:02}-aaaaaaaa"), format!("same-size-{tries:02}-bbbbbbbb"));
        std::fs::write(&token_file, &a)?;
        let m1 = std::fs::metadata(&token_file)?.modified()?;
        assert_eq!(curl(&["-H", &bearer(&a), &s.url("/_supervisor/status")]).status, 200, "first token");
        std::fs::write(&token_file, &b)?;
        // As a file system with a coarse clock records it: the very same mtime (only
        // ctime moves), which a cache keyed on (inode, size, mtime) cannot tell apart.
        let d = m1.duration_since(SystemTime::UNIX_EPOCH)?;
        let st = Command::new("touch").arg("-m").arg("-d").arg(format!("@{}.{:09}", d.as_secs(), d.subsec_nanos())).arg(&token_file).status()?;
        anyhow::ensure!(st.success(), "touch failed");
        let m2 = std::fs::metadata(&token_file)?.modified()?;
        assert_eq!(m1, m2, "same mtime");
        let old = curl(&["-H", &bearer(&a), &s.url("/_supervisor/status")]).status;
        let new = curl(&["-H", &bearer(&b), &s.url("/_supervisor/status")]).status;
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        if secs(m1) != secs(m2) && tries < 10 {
            continue; // crossed a second boundary: not the case under test, try again
        }
        assert_eq!(secs(m1), secs(m2), "could not write twice within one second");
        assert_eq!((old, new), (401, 200), "after a same-size rewrite within the second (try {tries})");
        break;
    }
    Ok(())
}

#[test]
fn rotating_the_token_closes_an_open_cdp_websocket() -> Result<()> {
    let port = free_port();
    let s = Stack::start(&format!(
        r#"
[services.chromium]
command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port={port}", "--user-data-dir={{DIR}}/chromium-profile", "about:blank"]
port = {port}
readiness = {{ cdp = "http://127.0.0.1:{port}", period = "1s", timeout = "2s" }}
"#
    ))?;
    s.wait_state("chromium", "ready", T)?;
    let tok = s.rotate_token();
    let v = curl(&["-H", &bearer(&tok), &s.url("/_supervisor/cdp/json/version")]);
    assert_eq!(v.status, 200, "{}", v.text());
    let ws_url = v.json()["webSocketDebuggerUrl"].as_str().context("no webSocketDebuggerUrl")?.to_string();
    assert!(ws_url.starts_with(&format!("ws://{}/_supervisor/cdp/devtools/browser/", s.listen)), "{ws_url}");

    // Two CDP sessions through the pass-through: one by `?token=`, one by the header.
    let mut by_query = cdp_connect(&format!("{ws_url}?token={tok}"), None)?;
    let mut by_header = cdp_connect(&ws_url, Some(&tok))?;
    for ws in [&mut by_query, &mut by_header] {
        let answer = cdp_call(ws, 1)?;
        assert!(answer["result"]["product"].as_str().is_some_and(|p| p.contains("Chrome")), "{answer}");
    }
    let new_tok = s.rotate_token();
    assert_ne!(new_tok, tok);
    let t = Instant::now();
    for (what, ws) in [("?token=", &mut by_query), ("bearer", &mut by_header)] {
        wait_closed(ws, Duration::from_secs(10)).with_context(|| format!("the {what} WebSocket after rotation"))?;
        println!("{what} WebSocket closed {} ms after the rotation", t.elapsed().as_millis());
    }
    // The watcher's period is 1 s; the ceiling is generous so a loaded machine cannot fail it.
    assert!(t.elapsed() < Duration::from_secs(8), "closed within a few seconds: {:?}", t.elapsed());
    // The new token opens a session that stays open past the watcher's period.
    let mut fresh = cdp_connect(&format!("{ws_url}?token={new_tok}"), None)?;
    std::thread::sleep(Duration::from_millis(1500)); // lower bound: it must outlive a few checks
    let answer = cdp_call(&mut fresh, 2)?;
    assert!(answer["result"]["product"].is_string(), "{answer}");
    // And the old token opens nothing.
    assert!(cdp_connect(&format!("{ws_url}?token={tok}"), None).is_err(), "old token accepted");
    Ok(())
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn cdp_connect(url: &str, bearer_token: Option<&str>) -> Result<Ws> {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    if let Some(t) = bearer_token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    let host = req.uri().authority().context("no authority")?.to_string();
    let tcp = TcpStream::connect(&host)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let (ws, resp) = tungstenite::client::client(req, tcp).map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
    anyhow::ensure!(resp.status() == 101, "status {}", resp.status());
    // Short reads from now on, so waiting loops can watch their own deadline.
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(ws)
}

fn cdp_call(ws: &mut Ws, id: u64) -> Result<Value> {
    ws.send(tungstenite::Message::text(serde_json::json!({"id": id, "method": "Browser.getVersion"}).to_string()))?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        match ws.read() {
            Ok(tungstenite::Message::Text(m)) => {
                let v: Value = serde_json::from_str(&m)?;
                if v["id"] == id {
                    return Ok(v);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => bail!("CDP read: {e}"),
        }
    }
    bail!("no CDP answer to id {id}")
}

/// Waits until the server side ends the WebSocket (close frame, EOF or reset).
fn wait_closed(ws: &mut Ws, limit: Duration) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < limit {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => return Ok(()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Ok(()),
        }
    }
    bail!("still open after {limit:?}")
}

// ---------------------------------------------------------------------------------------
// JSON errors

#[test]
fn malformed_paths_and_queries_answer_json_errors() -> Result<()> {
    let s = Stack::start("[services.idle]\ncommand = [\"sleep\", \"infinity\"]\n")?;
    let tok = s.rotate_token();
    let sock = s.runtime_dir.join("control.sock");
    let sock = sock.to_string_lossy();
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/_supervisor/logs/idle?tail=abc", 400),
        ("GET", "/_supervisor/logs/idle?tail=-1", 400),
        ("GET", "/_supervisor/logs/x?tail=99999999999999999999999", 400),
        ("GET", "/_supervisor/logs/%FF%FE", 400),
        ("GET", "/_supervisor/services/idle/restart", 405),
        ("DELETE", "/_supervisor/status", 405),
        ("GET", "/_supervisor/nope", 404),
        ("POST", "/_supervisor/healthz", 405),
    ];
    for (method, path, want) in cases {
        for (where_, r) in [
            ("public", curl(&["--path-as-is", "-X", method, "-H", &bearer(&tok), &s.url(path)])),
            ("socket", curl(&["--path-as-is", "-X", method, "--unix-socket", &sock, &format!("http://localhost{path}")])),
        ] {
            assert_eq!(r.status, *want, "{where_} {method} {path}: {}", r.text());
            assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{where_} {method} {path}: {:?} {}", r.headers, r.text());
            let e = &r.json()["error"];
            assert!(e["code"].as_str().is_some_and(|c| !c.is_empty()) && e["message"].as_str().is_some_and(|m| !m.is_empty()), "{where_} {method} {path}: {}", r.text());
        }
    }
    // Well-formed requests still answer as before.
    let ok = curl(&["-H", &bearer(&tok), &s.url("/_supervisor/logs/idle?tail=5")]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["name"], "idle");
    Ok(())
}
