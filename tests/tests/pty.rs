//! Terminals (SPEC §8): shell sessions over a WebSocket on the public listener, driven by a
//! real terminal emulator (`@xterm/headless` in tests/js/pty-client.mjs), their lifetime
//! (idle, DELETE, shutdown, cap), auth, the account they run as, and `ctl attach` to a
//! `tty = true` service from a real pseudo-terminal (tests/fixtures/ctl-attach.py).
//! Everything runs on free ports.

use e2e::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "pty-test-token-0123456789";

/// A stack with one idle service (terminal tests need no real one), `extra` added to the
/// `[supervisor]` table, and the token written.
fn stack_with(extra: &str, opts: StackOptions) -> anyhow::Result<Stack> {
    let cfg = format!("[supervisor]\n{extra}\n[services.idle]\ncommand = [\"sleep\", \"infinity\"]\n");
    let s = Stack::start_with(&cfg, opts)?;
    std::fs::write(s.runtime_dir.join("token"), TOKEN)?;
    s.wait_ready(T)?;
    Ok(s)
}

fn stack() -> anyhow::Result<Stack> {
    stack_with("", StackOptions::default())
}

fn base(s: &Stack) -> String {
    s.url("")
}

fn client(s: &Stack, scenario: &str, arg: Option<&str>) -> anyhow::Result<Value> {
    let b = base(s);
    let mut args = vec![scenario, b.as_str(), TOKEN];
    args.extend(arg);
    node_client("pty-client.mjs", &args)
}

/// `POST /_supervisor/pty` with `body`; the new session's id.
fn create(s: &Stack, body: &str) -> anyhow::Result<String> {
    let r = s.api(TOKEN, "POST", "/_supervisor/pty", Some(body));
    anyhow::ensure!(r.status == 201, "POST /_supervisor/pty: {} {}", r.status, r.text());
    Ok(r.json()["id"].as_str().expect("id").to_string())
}

fn sessions(s: &Stack) -> Vec<Value> {
    let r = s.api(TOKEN, "GET", "/_supervisor/pty", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["sessions"].as_array().cloned().unwrap_or_default()
}

fn session(s: &Stack, id: &str) -> Option<Value> {
    sessions(s).into_iter().find(|v| v["id"] == id)
}

fn alive(pid: i32) -> bool {
    pid_exists(pid) && !is_zombie(pid)
}

/// Polls until none of `pids` is alive, failing after `limit`.
fn wait_gone(pids: &[i32], limit: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    while pids.iter().any(|p| alive(*p)) {
        anyhow::ensure!(t.elapsed() < limit, "still alive after {limit:?}: {:?}", pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn a_terminal_emulator_sees_the_size_resizes_colors_and_the_exit_code() -> anyhow::Result<()> {
    let s = stack()?;
    let v = client(&s, "terminal", None)?;
    assert_eq!(v["size1"], "30 100", "stty size shows the size the session was opened with: {v}");
    assert_eq!(v["size2"], "40 120", "and the size of the last resize: {v}");
    // \e[1;31m: bold, palette red (1); \e[38;2;10;20;30m: true color #0a141e; then default.
    assert_eq!(v["red"]["char"], "R");
    assert_eq!((v["red"]["bold"].as_bool(), v["red"]["fgPalette"].as_bool(), v["red"]["fg"].as_i64()), (Some(true), Some(true), Some(1)), "{v}");
    assert_eq!(v["tru"]["char"], "T");
    assert_eq!((v["tru"]["fgRGB"].as_bool(), v["tru"]["fg"].as_i64(), v["tru"]["bold"].as_bool()), (Some(true), Some(0x0a141e), Some(false)), "{v}");
    assert_eq!((v["plain"]["char"].as_str(), v["plain"]["fgDefault"].as_bool()), (Some("p"), Some(true)), "{v}");
    assert_eq!(v["exit"]["type"], "exit");
    assert_eq!(v["exit"]["code"], 3, "exit 3 is reported: {v}");
    assert_eq!(v["close"]["code"], 1000, "{v}");
    // Listed as exited with that code, with the last size.
    assert_eq!(v["listed"]["exited"]["code"], 3, "{v}");
    assert_eq!((v["listed"]["cols"].as_u64(), v["listed"]["rows"].as_u64()), (Some(120), Some(40)), "{v}");
    Ok(())
}

#[test]
fn output_while_detached_is_replayed_and_two_clients_share_one_session() -> anyhow::Result<()> {
    let s = stack()?;
    let flag = s.path().join("detached-output-done");
    let v = client(&s, "reattach", Some(&flag.to_string_lossy()))?;
    assert_eq!(v["sawBeforeDetach"], false, "the output came after the client left: {v}");
    assert_eq!(v["replayed"], true, "{v}");
    assert_eq!(v["both"], true, "{v}");
    assert_eq!(v["deleteStatus"], 200, "{v}");
    // DELETE hung the shell up: both clients are told it ended (SIGHUP = 128 + 1).
    assert_eq!(v["controls"][0]["type"], "exit", "{v}");
    assert_eq!(v["controls"][0]["signal"], 1, "{v}");
    assert_eq!(v["controls"][0]["code"], 129, "{v}");
    for c in v["closes"].as_array().unwrap() {
        assert_eq!(c["code"], 1000, "{v}");
    }
    assert!(session(&s, v["id"].as_str().unwrap()).is_none(), "a deleted session is no longer listed");
    Ok(())
}

#[test]
fn a_slow_client_neither_delays_another_nor_the_shell_and_is_cut_off_with_a_reason() -> anyhow::Result<()> {
    let s = stack()?;
    let v = client(&s, "slow", None)?;
    let flood = v["floodBytes"].as_u64().unwrap();
    assert!(v["fastBytes"].as_u64().unwrap() >= flood, "the live client got the whole flood while the other stalled: {v}");
    let max = v["maxDelay"].as_i64().unwrap();
    assert_eq!(v["marks"].as_array().unwrap().len(), 5, "{v}");
    assert!(max <= 100, "output reached the live client within 100 ms of being printed (max {max} ms): {v}");
    assert_eq!(v["slowClosedWhilePaused"], Value::Null, "{v}");
    assert_eq!(v["slowClose"]["code"], 1013, "the stalled client is closed with 1013 (try again later): {v}");
    assert!(v["slowClose"]["reason"].as_str().unwrap().contains("too slow"), "with the reason: {v}");
    assert!(v["slowBytes"].as_u64().unwrap() < flood, "it was cut off before the end: {v}");
    assert_eq!(v["fastOpen"], true, "{v}");
    Ok(())
}

#[test]
fn an_abandoned_session_ends_after_pty_idle_with_its_whole_process_group() -> anyhow::Result<()> {
    // 6 s: the second session's client (a Node process) must attach before its idle ends.
    let s = stack_with("pty_idle = \"6s\"", StackOptions::default())?;
    let pidfile = s.path().join("bg.pid");
    let id = create(&s, &serde_json::json!({"command": ["sh", "-c", format!("sleep 1000 & echo $! > {}; wait", pidfile.display())]}).to_string())?;
    let t = Instant::now();
    let bg = read_pid_file(&pidfile, T)?;
    let leader = session(&s, &id).expect("listed")["pid"].as_i64().unwrap() as i32;
    assert_eq!(proc_stat_field(bg, 5).and_then(|g| g.parse().ok()), Some(leader), "the background job is in the shell's group");
    // A second session that had a client, which then left.
    let id2 = create(&s, "{}")?;
    let leader2 = session(&s, &id2).expect("listed")["pid"].as_i64().unwrap() as i32;
    client(&s, "attach-detach", Some(&id2))?;
    s.wait_for("both sessions to end", T, |s| Ok(session(s, &id).is_none() && session(s, &id2).is_none()))?;
    assert!(t.elapsed() >= Duration::from_millis(5800), "not before pty_idle: {:?}", t.elapsed());
    wait_gone(&[leader, bg, leader2], Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn delete_and_shutdown_leave_no_process_behind() -> anyhow::Result<()> {
    let mut s = stack()?;
    let dir = s.path().to_path_buf();
    let (f1, f2) = (dir.join("hupless.pid"), dir.join("escaped.pid"));
    // Ignores the hangup (so only SIGKILL ends it), and starts one that leaves the session.
    let script = format!("trap '' HUP; sleep 1000 & echo $! > {}; setsid sleep 1000 & echo $! > {}; wait", f1.display(), f2.display());
    let id = create(&s, &serde_json::json!({"command": ["sh", "-c", script]}).to_string())?;
    let (p1, p2) = (read_pid_file(&f1, T)?, read_pid_file(&f2, T)?);
    let leader = session(&s, &id).unwrap()["pid"].as_i64().unwrap() as i32;
    let t = Instant::now();
    let r = s.api(TOKEN, "DELETE", &format!("/_supervisor/pty/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    for p in [leader, p1, p2] {
        assert!(!alive(p), "{p} is gone when DELETE answers");
    }
    let r = s.api(TOKEN, "DELETE", &format!("/_supervisor/pty/{id}"), None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("unknown_session")), "{}", r.text());

    // Shutdown ends every session, however it was left.
    let mut pids = vec![];
    for i in 0..3 {
        let f = dir.join(format!("s{i}.pid"));
        let script = format!("trap '' HUP; sleep 1000 & echo $! > {}; wait", f.display());
        let id = create(&s, &serde_json::json!({"command": ["sh", "-c", script]}).to_string())?;
        pids.push(read_pid_file(&f, T)?);
        pids.push(session(&s, &id).unwrap()["pid"].as_i64().unwrap() as i32);
    }
    let _default_shell = create(&s, "{}")?;
    s.terminate(Duration::from_secs(40))?;
    for p in &pids {
        assert!(!alive(*p), "{p} outlived the supervisor");
    }
    assert_eq!(s.leftovers(), Vec::<i32>::new(), "nothing of the stack is left");
    Ok(())
}

#[test]
fn every_terminal_route_needs_the_token_and_bad_input_is_refused() -> anyhow::Result<()> {
    let s = stack()?;
    let id = create(&s, "")?;
    let u = |p: &str| s.url(p);
    let ws_headers = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="];
    let bad = "Authorization: Bearer wrong-token";
    let attach = format!("/_supervisor/pty/{id}");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("list, no token", vec![u("/_supervisor/pty")]),
        ("list, wrong token", vec!["-H".into(), bad.into(), u("/_supervisor/pty")]),
        ("list, ?token= without an upgrade", vec![u(&format!("/_supervisor/pty?token={TOKEN}"))]),
        ("session, ?token= without an upgrade", vec![u(&format!("{attach}?token={TOKEN}"))]),
        ("create, no token", vec!["-X".into(), "POST".into(), u("/_supervisor/pty")]),
        ("create, wrong token", vec!["-X".into(), "POST".into(), "-H".into(), bad.into(), u("/_supervisor/pty")]),
        ("delete, wrong token", vec!["-X".into(), "DELETE".into(), "-H".into(), bad.into(), u(&attach)]),
        ("upgrade, no token", ws_headers.iter().map(|h| h.to_string()).chain([u(&attach)]).collect()),
        ("upgrade, wrong ?token=", ws_headers.iter().map(|h| h.to_string()).chain([u(&format!("{attach}?token=wrong"))]).collect()),
        ("tty service, no token", ws_headers.iter().map(|h| h.to_string()).chain([u("/_supervisor/services/idle/tty")]).collect()),
    ];
    for (what, args) in &cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = curl(&argv);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unauthorized", "{what}");
    }
    assert!(session(&s, &id).is_some(), "nothing above touched the session");
    let r = s.api(TOKEN, "GET", &attach, None);
    assert_eq!((r.status, r.json()["id"].as_str()), (200, Some(id.as_str())), "a plain GET with the token answers the session");

    let refused = [
        (r#"{"cols": 0}"#, 400, "invalid_body"),
        (r#"{"cols": 80, "rows": 100000}"#, 400, "invalid_body"),
        (r#"{"command": []}"#, 400, "invalid_body"),
        (r#"{"command": "sh"}"#, 400, "invalid_body"),
        (r#"{"shell": "sh"}"#, 400, "invalid_body"),
        (r#"{"env": {"BAD KEY": "x"}}"#, 400, "invalid_body"),
        (r#"{"command": ["/no/such/program"]}"#, 400, "spawn_failed"),
        (r#"{"cwd": "/no/such/dir"}"#, 400, "spawn_failed"),
        ("not json", 400, "invalid_body"),
    ];
    for (body, status, code) in refused {
        let r = s.api(TOKEN, "POST", "/_supervisor/pty", Some(body));
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (status, Some(code)), "{body}: {}", r.text());
    }
    let r = curl(&["-X", "POST", "-H", &format!("Authorization: Bearer {TOKEN}"), "-H", "Content-Type: text/plain", "--data", "{}", &u("/_supervisor/pty")]);
    assert_eq!(r.status, 415, "{}", r.text());
    let r = s.api(TOKEN, "GET", "/_supervisor/pty/0123456789abcdef", None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("unknown_session")), "{}", r.text());
    let r = s.api(TOKEN, "GET", "/_supervisor/services/idle/tty", None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (409, Some("not_a_tty")), "{}", r.text());

    // The cap: 32 sessions at once, then 429.
    let mut n = sessions(&s).len();
    while n < 32 {
        create(&s, r#"{"command": ["sleep", "1000"]}"#)?;
        n += 1;
    }
    let r = s.api(TOKEN, "POST", "/_supervisor/pty", Some(r#"{"command": ["sleep", "1000"]}"#));
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (429, Some("too_many_sessions")), "{}", r.text());
    let r = s.api(TOKEN, "DELETE", &format!("/_supervisor/pty/{id}"), None);
    assert_eq!(r.status, 200);
    create(&s, r#"{"command": ["sleep", "1000"]}"#)?;
    Ok(())
}

/// `(real, effective)` uid of `pid`.
fn uids(pid: i32) -> Vec<u32> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    st.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect()
}

#[test]
fn the_shell_runs_as_the_service_user_in_the_app_dir_when_the_supervisor_is_root() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "this test needs root");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (uid, gid) = test_user()?;
    let app = tempfile::Builder::new().prefix("sup-pty-app-").tempdir()?;
    std::fs::set_permissions(app.path(), std::fs::Permissions::from_mode(0o755))?;
    chown_tree(app.path(), uid, gid)?;
    let s = stack_with("", StackOptions { args: vec!["--service-user".into(), TEST_USER.into()], app_dir: Some(app.path().to_path_buf()), ..Default::default() })?;
    let id = create(&s, "{}")?;
    let pid = session(&s, &id).unwrap()["pid"].as_i64().unwrap() as i32;
    assert_eq!(uids(pid)[..2], [uid, uid], "the shell runs as {TEST_USER}, not root");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd"))?, app.path().canonicalize()?, "in the app dir");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    assert_eq!(cmdline.first(), Some(&b'-'), "a login shell: {:?}", String::from_utf8_lossy(&cmdline));
    let env = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ"))?).into_owned();
    let env: Vec<&str> = env.split('\0').collect();
    for want in ["TERM=xterm-256color", "COLORTERM=truecolor", &format!("USER={TEST_USER}"), &format!("HOME=/home/{TEST_USER}")] {
        assert!(env.contains(&want), "{want} in {env:?}");
    }
    // Its terminal is its own.
    let tty = std::fs::read_link(format!("/proc/{pid}/fd/0"))?;
    assert!(tty.starts_with("/dev/pts/"), "{}", tty.display());
    assert_eq!(std::fs::metadata(&tty)?.uid(), uid, "{} belongs to {TEST_USER}", tty.display());
    let r = s.api(TOKEN, "DELETE", &format!("/_supervisor/pty/{id}"), None);
    assert_eq!(r.status, 200);
    Ok(())
}

#[test]
fn ctl_attach_joins_a_tty_service_and_ctrl_close_bracket_detaches_leaving_it_running() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.py]
command = ["/usr/bin/python3", "-i", "-q"]
tty = true
"#,
    )?;
    let before = s.wait_state("py", "ready", T)?["pid"].as_i64().unwrap();
    let script = fixture("ctl-attach.py");
    let bin = supervisor_bin();
    let rt = s.runtime_dir.to_string_lossy().into_owned();
    let out = run_with_timeout(Command::new("/usr/bin/python3").arg(&script).arg(&bin).args(["ctl", "--runtime-dir", &rt, "attach", "py"]), Duration::from_secs(90))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or("")).map_err(|e| anyhow::anyhow!("{e}: {text}"))?;
    assert!(out.status.success(), "{v}");
    assert_eq!(v["size1"], "100x30", "the window size was passed on: {v}");
    assert_eq!(v["size2"], "120x40", "and updated on SIGWINCH: {v}");
    assert_eq!(v["answer"], "42", "input reached the service, its answer came back: {v}");
    assert_eq!(v["exit_code"], 0, "Ctrl-] ended ctl attach: {v}");
    assert!(v["tail"].as_str().unwrap().contains("detached"), "{v}");
    let now = s.service("py")?;
    assert_eq!((now["state"].as_str(), now["pid"].as_i64()), (Some("ready"), Some(before)), "the service still runs, the same process: {now}");
    assert!(alive(before as i32));
    // Its output reached the log as lines, without the control sequences.
    let logs = s.logs("py", 50);
    assert!(logs.lines().any(|l| l == "42"), "{logs}");
    assert!(logs.contains("os.terminal_size(columns=120, lines=40)") && !logs.contains('\x1b'), "{logs:?}");
    // Stop and restart work as for any service, and the group goes with it.
    let out = s.ctl(&["stop", "py"]);
    assert!(out.status.success());
    s.wait_state("py", "stopped", T)?;
    wait_gone(&[before as i32], T)?;
    let out = s.ctl(&["restart", "py"]);
    assert!(out.status.success());
    let again = s.wait_state("py", "ready", T)?["pid"].as_i64().unwrap();
    assert_ne!(again, before);
    // Attaching to a service that is not a tty is a clear error.
    let out = s.ctl(&["attach", "nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no service"), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
