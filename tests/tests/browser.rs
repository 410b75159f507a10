//! The browser sensor (SPEC §9) against the production stack: real Xvfb, Chromium,
//! Playwright MCP and Vite on a copy of app-template, the supervisor as root with every
//! service dropped to the test user, each stack in a network namespace of its own (so
//! the fixed ports and display names never collide; no fixed-ports lock needed).

use e2e::*;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
/// Ceiling for an edit of the app to show in a check (file watcher + HMR + a fresh load).
const EDIT: Duration = Duration::from_secs(60);

struct Prod {
    stack: Stack,
    ns: NetNs,
    _app: tempfile::TempDir,
    token: String,
}

/// The production stack (see [`start_production`]) with a fresh token.
fn start_prod() -> anyhow::Result<Prod> {
    let p = start_production("sensor", BOOT)?;
    let token = p.stack.rotate_token();
    Ok(Prod { stack: p.stack, ns: p.ns, _app: p.app, token })
}

impl Prod {
    fn get(&self, path: &str) -> Reply {
        self.ns.curl(&["--max-time", "90", "-H", &format!("Authorization: Bearer {}", self.token), &format!("http://127.0.0.1:3000{path}")])
    }
    fn check(&self) -> Value {
        let r = self.get("/_supervisor/browser/check?path=/");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
    /// Polls `check` until `cond` holds (the edit reached Vite), with a ceiling.
    fn check_until(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let v = self.check();
            if cond(&v) {
                println!("{what}: after {} ms: {v}", t.elapsed().as_millis());
                return v;
            }
            assert!(t.elapsed() < EDIT, "{what}: not seen within {EDIT:?}; last check: {v}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    fn app_tsx(&self) -> std::path::PathBuf {
        self.stack.app_dir.join("src/App.tsx")
    }
    /// Page targets of the supervised Chromium: (id, url), sorted.
    fn pages(&self) -> Vec<(String, String)> {
        let r = self.ns.curl(&["http://127.0.0.1:9222/json/list"]);
        let mut v: Vec<(String, String)> = r
            .json()
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["type"] == "page")
            .map(|t| (t["id"].as_str().unwrap_or("").to_string(), t["url"].as_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v
    }
}

fn png_of(bytes: &[u8]) -> (u32, u32, Vec<u8>, png::ColorType) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size().expect("size")];
    let info = r.next_frame(&mut buf).expect("a frame");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf, info.color_type)
}

fn pixel(img: &(u32, u32, Vec<u8>, png::ColorType), x: u32, y: u32) -> (u8, u8, u8) {
    let n = match img.3 {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        c => panic!("unexpected colour type {c:?}"),
    };
    let i = ((y * img.0 + x) as usize) * n;
    (img.2[i], img.2[i + 1], img.2[i + 2])
}

#[test]
fn screenshots_show_the_app_at_the_requested_size_and_refuse_other_origins() -> anyhow::Result<()> {
    let p = start_prod()?;
    // No token: 401, nothing captured.
    let r = p.ns.curl(&["http://127.0.0.1:3000/_supervisor/browser/screenshot"]);
    assert_eq!(r.status, 401, "{}", r.text());

    let r = p.get("/_supervisor/browser/screenshot?path=/&width=1024&height=640");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/png"));
    let img = png_of(&r.body);
    assert_eq!((img.0, img.1), (1024, 640));
    // The app's <main> is bg-slate-950 over the whole viewport (a blank page is white),
    // and its heading's light text sits in the middle band.
    let (r0, g0, b0) = pixel(&img, 5, 5);
    assert!(r0 < 30 && g0 < 30 && b0 < 50 && b0 > r0, "the corner shows the app's slate-950 background: {:?}", (r0, g0, b0));
    let light = (0..img.0).flat_map(|x| (img.1 / 2 - 60..img.1 / 2 + 20).map(move |y| (x, y))).filter(|&(x, y)| pixel(&img, x, y).0 > 200).count();
    assert!(light > 200, "the heading's light text is drawn in the middle band ({light} light pixels)");

    // Clamped sizes.
    let r = p.get("/_supervisor/browser/screenshot?width=10&height=99999");
    assert_eq!(r.status, 200, "{}", r.text());
    let img = png_of(&r.body);
    assert_eq!((img.0, img.1), (100, 2160));

    // JPEG with quality: a real JPEG, and the quality shows in the size.
    let lo = p.get("/_supervisor/browser/screenshot?format=jpeg&quality=5");
    let hi = p.get("/_supervisor/browser/screenshot?format=jpeg&quality=95");
    for j in [&lo, &hi] {
        assert_eq!(j.status, 200, "{}", j.text());
        assert_eq!(j.header("content-type"), Some("image/jpeg"));
        assert_eq!(&j.body[..3], &[0xff, 0xd8, 0xff], "JPEG magic");
    }
    assert!(lo.body.len() * 2 < hi.body.len(), "quality 5 ({}) is much smaller than 95 ({})", lo.body.len(), hi.body.len());

    // Only paths of the app: another origin is refused before anything loads.
    for evil in ["//evil.example/", "http://evil.example/", "https%3A%2F%2Fevil.example%2F", "%2F%2Fevil.example%2F", "/%5Cevil.example"] {
        let r = p.get(&format!("/_supervisor/browser/screenshot?path={evil}"));
        assert_eq!(r.status, 400, "{evil}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "bad_request", "{evil}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("path"), "{}", r.text());
    }
    let r = p.get("/_supervisor/browser/screenshot?format=gif");
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, Value::from("bad_request")), "{}", r.text());

    // ctl screenshot over the socket writes the file.
    let out = p.stack.app_dir.parent().unwrap().join("shot.png");
    let o = p.stack.ctl(&["screenshot", "/", "-o", &out.to_string_lossy(), "--width", "640", "--height", "480"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = png_of(&std::fs::read(&out)?);
    assert_eq!((img.0, img.1), (640, 480));

    // Warm latency, 1280x800 (printed for the closing note).
    let mut ms = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let r = p.get("/_supervisor/browser/screenshot?width=1280&height=800");
        assert_eq!(r.status, 200);
        ms.push(t.elapsed().as_millis());
    }
    ms.sort();
    println!("screenshot 1280x800 warm (curl in the namespace, 10 runs): p50 {} ms, max {} ms", ms[ms.len() / 2], ms[ms.len() - 1]);
    Ok(())
}

/// Replaces `App.tsx`, keeping the file's owner (Vite runs as the test user).
fn write_app(p: &Prod, text: &str) {
    std::fs::write(p.app_tsx(), text).unwrap();
}

#[test]
fn checks_follow_edits_of_the_app_and_recover_after_each_revert() -> anyhow::Result<()> {
    let p = start_prod()?;
    let original = std::fs::read_to_string(p.app_tsx())?;
    let v = p.check();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["title"], "App", "{v}");
    assert!(v["exceptions"].as_array().unwrap().is_empty() && v["vite_error"].is_null(), "{v}");
    assert!(v["load_ms"].as_u64().is_some(), "{v}");

    let ok = |v: &Value| v["ok"] == true;
    let cases: [(&str, String, Box<dyn Fn(&Value) -> bool>); 4] = [
        (
            "a render that throws",
            "export default function App() {\n  throw new Error(\"sensor-boom\");\n}\n".to_string(),
            Box::new(|v: &Value| {
                v["ok"] == false && v["exceptions"].as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap_or("").contains("sensor-boom"))
            }),
        ),
        (
            "a syntax error",
            "export default function App() {\n  return <main>unclosed;\n}\n".to_string(),
            Box::new(|v: &Value| v["ok"] == false && v["vite_error"]["file"].as_str().unwrap_or("").contains("App.tsx")),
        ),
        (
            "console.error",
            original.replacen("export default function App() {", "export default function App() {\n  console.error(\"sensor-console-marker\");", 1),
            Box::new(|v: &Value| {
                v["ok"] == false
                    && v["console"].as_array().unwrap().iter().any(|c| c["level"] == "error" && c["text"].as_str().unwrap_or("").contains("sensor-console-marker"))
            }),
        ),
        (
            "a fetch to a missing route",
            format!(
                "import {{ useEffect }} from \"react\";\n{}",
                original.replacen(
                    "export default function App() {",
                    "export default function App() {\n  useEffect(() => { fetch(\"/sensor-missing-route\", { headers: { Accept: \"application/json\" } }); }, []);",
                    1
                )
            ),
            Box::new(|v: &Value| {
                v["failed_requests"].as_array().unwrap().iter().any(|f| f["url"].as_str().unwrap_or("").ends_with("/sensor-missing-route") && f["status"] == 404)
            }),
        ),
    ];
    for (what, text, cond) in cases {
        write_app(&p, &text);
        let v = p.check_until(what, cond);
        if what == "a syntax error" {
            assert!(!v["vite_error"]["message"].as_str().unwrap_or("").is_empty(), "{v}");
            // The table form names it too, and `ctl check` exits 1.
            let o = p.stack.ctl(&["check", "/"]);
            assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
            assert!(String::from_utf8_lossy(&o.stdout).contains("App.tsx"), "{}", String::from_utf8_lossy(&o.stdout));
        }
        write_app(&p, &original);
        p.check_until(&format!("{what}, reverted"), ok);
    }
    let o = p.stack.ctl(&["check", "/", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["ok"], true, "{v}");
    let o = p.stack.ctl(&["check"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok: true"), "{}", String::from_utf8_lossy(&o.stdout));

    let mut ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(p.check()["ok"], true);
        ms.push(t.elapsed().as_millis());
    }
    ms.sort();
    println!("check warm (5 runs): p50 {} ms, max {} ms", ms[2], ms[4]);
    Ok(())
}

/// The agent's Playwright MCP session, driven line by line (tests/js/mcp-agent.mjs).
struct Agent {
    child: ChildGuard,
    out: std::io::BufReader<std::process::ChildStdout>,
    /// Its stderr: a file of its own, never the runner's. Node turns an inherited pipe
    /// non-blocking and, killed, leaves it so for every later test binary on that pipe.
    err: std::fs::File,
}

impl Agent {
    fn start(p: &Prod) -> anyhow::Result<Agent> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &p.ns.name, "node"]).arg(repo_root().join("tests/js/mcp-agent.mjs")).args(["--url", "http://127.0.0.1:3001/mcp"]);
        let err = tempfile::tempfile()?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err.try_clone()?);
        let mut child = ChildGuard::spawn(&mut cmd)?;
        let out = std::io::BufReader::new(child.child().stdout.take().unwrap());
        let mut a = Agent { child, out, err };
        let first = a.line()?;
        anyhow::ensure!(first["ready"] == true, "{first}");
        Ok(a)
    }
    fn line(&mut self) -> anyhow::Result<Value> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        if l.is_empty() {
            anyhow::bail!("mcp-agent.mjs ended; its stderr:\n{}", String::from_utf8_lossy(&read_back(&mut self.err)));
        }
        Ok(serde_json::from_str(&l)?)
    }
    fn call(&mut self, tool: &str, args: Value) -> anyhow::Result<String> {
        let stdin = self.child.child().stdin.as_mut().unwrap();
        writeln!(stdin, "{}", serde_json::json!({"tool": tool, "args": args}))?;
        stdin.flush()?;
        let r = self.line()?;
        anyhow::ensure!(r["ok"] == true, "{tool}: {r}");
        Ok(r["text"].as_str().unwrap_or("").to_string())
    }
}

/// The tab list of a `browser_tabs` answer, without the "### Events" section MCP appends
/// when the page logged something since the last call (the console entries themselves).
fn tab_list(answer: &str) -> &str {
    if let Some(i) = answer.find("### Events") {
        let events = &answer[i..];
        println!("MCP reported page events: {events}");
        for f in events.split_whitespace().filter(|w| w.contains("console-")) {
            let path = f.split('#').next().unwrap_or(f);
            println!("{path}: {:?}", std::fs::read_to_string(path.trim_start_matches("../../../..")));
        }
        return answer[..i].trim_end();
    }
    answer.trim_end()
}

#[test]
fn the_agents_page_is_untouched_and_its_console_reaches_the_event_stream() -> anyhow::Result<()> {
    let output_flags = runner_output_flags();
    let p = start_prod()?;
    let mut agent = Agent::start(&p)?;
    agent.call("browser_navigate", serde_json::json!({"url": "http://localhost:3000/?agent=1"}))?;
    let tabs_before = agent.call("browser_tabs", serde_json::json!({"action": "list"}))?;
    let pages_before = p.pages();
    assert!(pages_before.iter().any(|(_, u)| u == "http://localhost:3000/?agent=1"), "{pages_before:?}");

    // The event stream (from the host, through the namespace's veth and the guard).
    let ip = p.ns.ns_ip.clone().unwrap();
    let mut sse = SseClient::open(&format!("http://{ip}:3000/_supervisor/browser/events"), &p.token)?;

    for _ in 0..2 {
        assert_eq!(p.get("/_supervisor/browser/screenshot?path=/").status, 200);
        assert_eq!(p.check()["ok"], true);
    }
    // While checks run, the agent's MCP never lists the sensor's page (a hidden target).
    let seen = std::thread::scope(|sc| -> anyhow::Result<Vec<String>> {
        let checks = sc.spawn(|| (0..3).map(|_| p.check()["ok"] == true).all(|ok| ok));
        let mut seen = Vec::new();
        while !checks.is_finished() {
            seen.push(tab_list(&agent.call("browser_tabs", serde_json::json!({"action": "list"}))?).to_string());
        }
        assert!(checks.join().unwrap(), "the checks passed");
        Ok(seen)
    })?;
    assert!(seen.len() >= 3, "the tab list was read during the checks ({} times)", seen.len());
    for t in &seen {
        assert_eq!(t, tab_list(&tabs_before), "the agent's MCP saw another tab during a check");
    }
    // The agent's view: same tab list, its page where it was; Chromium's pages: the same
    // set once the sensor's own (closed after use) are gone.
    let tabs_after = agent.call("browser_tabs", serde_json::json!({"action": "list"}))?;
    assert_eq!(tab_list(&tabs_after), tab_list(&tabs_before), "the agent's tabs changed");
    let href = agent.call("browser_evaluate", serde_json::json!({"function": "() => location.href"}))?;
    assert!(href.contains("http://localhost:3000/?agent=1"), "{href}");
    let t = Instant::now();
    while p.pages() != pages_before {
        assert!(t.elapsed() < Duration::from_secs(20), "non-sensor pages changed: {pages_before:?} -> {:?}", p.pages());
        std::thread::sleep(Duration::from_millis(200));
    }

    // A console.log of the agent's page arrives on /browser/events, with an id.
    agent.call("browser_evaluate", serde_json::json!({"function": "() => { console.log('agent-marker-7f3a'); return 1; }"}))?;
    let until = Instant::now() + Duration::from_secs(30);
    let marker = loop {
        let e = sse.next(until.saturating_duration_since(Instant::now()))?.expect("the agent's console.log on the event stream");
        if e.event == "console" && e.data.contains("agent-marker-7f3a") {
            break e;
        }
    };
    let d: Value = serde_json::from_str(&marker.data)?;
    assert_eq!(d["level"], "log", "{d}");
    assert!(d["target"].as_str().is_some_and(|t| !t.is_empty()) && d.get("sensor").is_none(), "{d}");
    let id: u64 = marker.id.clone().expect("an id").parse()?;
    // Reconnecting with Last-Event-ID replays from the ring, starting after that id.
    let mut again = SseClient::open_with(
        &format!("http://{ip}:3000/_supervisor/browser/events"),
        &[&format!("Authorization: Bearer {}", p.token), &format!("Last-Event-ID: {}", id - 1)],
    )?;
    let first = again.next(Duration::from_secs(10))?.expect("a replayed event");
    assert_eq!(first.id.as_deref(), Some(id.to_string().as_str()), "{first:?}");
    assert!(first.data.contains("agent-marker-7f3a"));
    // The agent (Node, killed by its guard) left the runner's own output as it found it.
    drop(agent);
    assert_eq!(runner_output_flags(), output_flags, "the test runner's stdout or stderr status flags changed");
    Ok(())
}

#[test]
fn the_sensor_follows_chromium_restarts_without_a_supervisor_restart() -> anyhow::Result<()> {
    let p = start_prod()?;
    assert_eq!(p.check()["ok"], true);
    let before = p.stack.service("chromium")?;
    let pid = before["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    // A check during the restart waits, then works or answers 503 with a reason.
    let t = Instant::now();
    let r = p.get("/_supervisor/browser/check?path=/");
    println!("check during the chromium restart: {} after {} ms: {}", r.status, t.elapsed().as_millis(), r.text());
    match r.status {
        200 => assert_eq!(r.json()["ok"], true, "{}", r.text()),
        503 => {
            assert_eq!(r.json()["error"]["code"], "browser_unavailable", "{}", r.text());
            assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
        }
        s => panic!("unexpected {s}: {}", r.text()),
    }
    p.stack.wait_service("chromium", Duration::from_secs(60), "back", |v| v["state"] == "ready" && v["pid"].as_i64() != Some(pid as i64))?;
    assert!(!p.stack.exited(), "the supervisor kept running");
    let v = p.check();
    assert_eq!(v["ok"], true, "after the restart: {v}");
    let r = p.get("/_supervisor/browser/screenshot");
    assert_eq!(r.status, 200, "{}", r.text());
    Ok(())
}
