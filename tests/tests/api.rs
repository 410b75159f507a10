//! The control API on the public listener: token auth (fail closed), env injection with
//! every rule of SPEC §5 (validated against Vite's own `loadEnv`), and `ctl env|token`.

use anyhow::Context;
use e2e::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A stack with one env-injection service that reports whether it sees SECRET_X.
fn stack() -> anyhow::Result<Stack> {
    Stack::start(&fixture_text("api-agent.toml"))
}

fn with_token(s: &Stack) -> String {
    let tok = s.rotate_token();
    assert_eq!(tok.len(), 64, "a 256-bit hex token");
    assert!(tok.bytes().all(|b| b.is_ascii_hexdigit()));
    tok
}

fn post_env(s: &Stack, tok: &str, body: &str) -> Reply {
    s.api(tok, "POST", "/_supervisor/env", Some(body))
}

/// Vite's own `loadEnv` on a directory, through app-template's vite.
fn vite_load_env(dir: &std::path::Path) -> Value {
    let script = repo_root().join("supervisor/tests/envfile_node/roundtrip.mjs");
    let vite = repo_root().join("app-template/node_modules/vite");
    assert!(vite.exists(), "app-template/node_modules is missing: run scripts/setup.sh");
    let out = Command::new("node").arg(&script).arg("--vite").arg(&vite).arg(dir).output().expect("node");
    assert!(out.status.success(), "roundtrip.mjs: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).expect("json from loadEnv")
}

/// Every token route, with the status it answers when the token is right.
const TOKEN_ROUTES: &[(&str, &str, u16)] = &[
    ("GET", "/_supervisor/status", 200),
    ("GET", "/_supervisor/events", 200),
    ("GET", "/_supervisor/logs/agent?tail=5", 200),
    ("POST", "/_supervisor/services/plain/restart", 202),
    ("GET", "/_supervisor/env", 200),
    ("POST", "/_supervisor/env", 200),
    ("GET", "/_supervisor/nonexistent", 404),
];

fn call(s: &Stack, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let mut args = vec!["-X", method, "--max-time", "2"];
    let h;
    if let Some(a) = auth {
        h = format!("Authorization: {a}");
        args.extend(["-H", &h]);
    }
    if method == "POST" {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", "{}"]);
    }
    let url = s.url(path);
    args.push(&url);
    curl(&args)
}

#[test]
fn without_a_token_file_or_with_an_empty_one_every_token_route_answers_401() -> anyhow::Result<()> {
    let s = stack()?;
    s.wait_ready(T)?;
    // No token file at all: even a "token" is refused.
    for (m, p, _) in TOKEN_ROUTES {
        let r = call(&s, m, p, Some("Bearer anything"));
        assert_eq!(r.status, 401, "{m} {p} without a token file: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unauthorized");
    }
    // An empty token file: an empty bearer is refused too.
    std::fs::write(s.runtime_dir.join("token"), "\n")?;
    for (m, p, _) in TOKEN_ROUTES {
        assert_eq!(call(&s, m, p, Some("Bearer ")).status, 401, "{m} {p} with an empty token file");
        assert_eq!(call(&s, m, p, None).status, 401);
    }
    Ok(())
}

#[test]
fn wrong_tokens_answer_401_and_the_token_answers_each_routes_own_code() -> anyhow::Result<()> {
    let s = stack()?;
    s.wait_ready(T)?;
    let tok = with_token(&s);
    let wrong = format!("{}x", &tok[..63]);
    let truncated = &tok[..32];
    for (m, p, want) in TOKEN_ROUTES {
        for bad in [None, Some("Bearer nope".to_string()), Some(format!("Bearer {wrong}")), Some(format!("Bearer {truncated}")), Some(format!("Basic {tok}"))] {
            let r = call(&s, m, p, bad.as_deref());
            assert_eq!(r.status, 401, "{m} {p} with {bad:?}");
            assert_eq!(r.json()["error"]["code"], "unauthorized", "{m} {p} with {bad:?}: {}", r.text());
        }
        // ?token= counts only on WebSocket upgrades.
        let sep = if p.contains('?') { '&' } else { '?' };
        assert_eq!(call(&s, m, &format!("{p}{sep}token={tok}"), None).status, 401, "{m} {p} with ?token= and no upgrade");
        let r = call(&s, m, p, Some(&format!("Bearer {tok}")));
        assert_eq!(r.status, *want, "{m} {p} with the token: {}", r.text());
    }
    assert_eq!(call(&s, "GET", "/_supervisor/nonexistent", Some(&format!("bearer {tok}"))).status, 404, "scheme is case-insensitive");
    Ok(())
}

#[test]
fn open_routes_need_no_token() -> anyhow::Result<()> {
    let s = stack()?;
    s.wait_ready(T)?;
    assert_eq!(call(&s, "GET", "/_supervisor/healthz", None).json(), json!({"status": "ok"}));
    assert_eq!(call(&s, "GET", "/_supervisor/readyz", None).json(), json!({"ready": true}));
    Ok(())
}

#[test]
fn rotation_replaces_the_token_at_once_and_never_prints_it() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = with_token(&s);
    // `rotate` prints the file, never the token.
    let out = s.ctl(&["token", "rotate"]);
    assert!(out.status.success());
    let tok_now = std::fs::read_to_string(s.runtime_dir.join("token"))?.trim().to_string();
    assert_ne!(tok_now, tok);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&tok_now), "rotate never prints the token");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&tok_now), "rotate never prints the token");
    // Rotation: the old token stops working at once (the file is re-read on change).
    let tok2 = with_token(&s);
    assert_ne!(tok_now, tok2);
    for old in [&tok, &tok_now] {
        assert_eq!(s.api(old, "GET", "/_supervisor/status", None).status, 401);
    }
    assert_eq!(s.api(&tok2, "GET", "/_supervisor/status", None).status, 200);
    let mode = std::fs::metadata(s.runtime_dir.join("token"))?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    Ok(())
}

#[test]
fn status_over_http_is_the_same_document_as_ctl_status() -> anyhow::Result<()> {
    let s = stack()?;
    s.wait_ready(T)?;
    let tok = with_token(&s);
    let http = s.api(&tok, "GET", "/_supervisor/status", None);
    assert_eq!(http.status, 200);
    let sock = s.status()?;
    assert_eq!(without_moving_parts(http.json()), without_moving_parts(sock.clone()), "HTTP and socket status differ");
    assert!(sock["services"].as_array().is_some_and(|a| a.len() == 2), "{sock}");
    Ok(())
}

#[test]
fn service_actions_answer_202_with_the_new_state_and_404_for_an_unknown_name() -> anyhow::Result<()> {
    let s = stack()?;
    s.wait_ready(T)?;
    let tok = with_token(&s);
    let pid0 = s.service("plain")?["pid"].clone();
    let r = s.api(&tok, "POST", "/_supervisor/services/plain/restart", None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["name"], "plain");
    assert!(r.json()["state"].is_string());
    s.wait_service("plain", T, "restarted", |v| v["state"] == "ready" && v["pid"] != pid0)?;
    let r = s.api(&tok, "POST", "/_supervisor/services/plain/stop", None);
    assert_eq!(r.status, 202, "{}", r.text());
    s.wait_state("plain", "stopped", T)?;
    let r = s.api(&tok, "POST", "/_supervisor/services/plain/start", None);
    assert_eq!(r.status, 202, "{}", r.text());
    s.wait_state("plain", "ready", T)?;
    let r = s.api(&tok, "POST", "/_supervisor/services/ghost/stop", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_service");
    let r = s.api(&tok, "POST", "/_supervisor/services/plain/explode", None);
    assert!(r.status == 400 || r.status == 404, "an unknown action is refused: {} {}", r.status, r.text());
    assert!(r.json()["error"]["code"].is_string(), "{}", r.text());
    Ok(())
}

/// A status document without the figures that change between two reads (uptime, CPU,
/// memory, load, disk), so two reads of the same state compare equal.
fn without_moving_parts(mut v: Value) -> Value {
    v.as_object_mut().map(|o| o.remove("uptime_ms"));
    for k in ["mem_available", "disk_free", "load1"] {
        v["system"].as_object_mut().map(|o| o.remove(k));
    }
    if let Some(services) = v["services"].as_array_mut() {
        for s in services {
            for k in ["rss_bytes", "cpu_percent"] {
                s.as_object_mut().map(|o| o.remove(k));
            }
        }
    }
    v
}

/// Values that are hard to write so that Vite reads them back exactly.
fn tricky_values() -> Vec<(String, String)> {
    let v = [
        "plain",
        "",
        "with spaces inside",
        "  leading and trailing  ",
        "tab\there",
        "it's",
        "say \"hi\"",
        "back`tick",
        "'single' and \"double\"",
        "'single' and `back`",
        "\"double\" and `back`",
        "multi\nline\nvalue",
        "quote ' and newline\nhere",
        "hash # not a comment",
        "#starts with hash",
        "$HOME",
        "${HOME}",
        "pa$$word$1",
        "\\$escaped",
        "back\\slash\\",
        "literal \\n two chars",
        "\"\\n\" in quotes",
        "ünïcödé ✓ 🚀",
        "a=b=c",
        "ends with quote'",
        "postgres://u:p@host:5432/db?sslmode=require",
        "\nINJECTED=1",
    ];
    v.iter().enumerate().map(|(i, v)| (format!("TRICKY_{i}"), v.to_string())).collect()
}

#[test]
fn injected_values_read_back_exactly_through_vites_load_env() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = with_token(&s);
    let env_path = s.app_dir.join(".env");
    std::fs::write(&env_path, "# hand-written\nEXISTING=keep me # comment\n\nOTHER='x'\n")?;
    let values = tricky_values();
    let set: serde_json::Map<String, Value> = values.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let r = post_env(&s, &tok, &json!({"set": set}).to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let loaded = vite_load_env(&s.app_dir);
    for (k, v) in &values {
        assert_eq!(loaded[k].as_str(), Some(v.as_str()), "{k} did not read back exactly: file:\n{}", std::fs::read_to_string(&env_path)?);
    }
    assert_eq!(loaded["EXISTING"], "keep me");
    assert_eq!(loaded["OTHER"], "x");
    assert!(loaded.get("INJECTED").is_none(), "a newline in a value must not create a key");
    let text = std::fs::read_to_string(&env_path)?;
    assert!(text.starts_with("# hand-written\nEXISTING=keep me # comment\n\nOTHER='x'\n"), "other lines kept:\n{text}");
    let meta = std::fs::metadata(&env_path)?;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No value ever reached the supervisor's output.
    let log = std::fs::read_to_string(&s.log_path)?;
    for (_, v) in values.iter().filter(|(_, v)| v.len() > 6) {
        assert!(!log.contains(v.as_str()), "a value leaked into the log: {v:?}");
    }
    Ok(())
}

#[test]
fn get_env_lists_names_only_and_one_post_replaces_and_unsets() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = with_token(&s);
    let env_path = s.app_dir.join(".env");
    std::fs::write(&env_path, "# hand-written\nEXISTING=keep me # comment\n\nOTHER='x'\n")?;
    let r = post_env(&s, &tok, &json!({"set": {"TRICKY_0": "plain", "TRICKY_11": "multi\nline\nvalue", "TRICKY_12": "quote ' and newline\nhere", "TRICKY_26": "\nINJECTED=1"}}).to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    // GET lists names only.
    let keys = s.api(&tok, "GET", "/_supervisor/env", None);
    let list: Vec<String> = keys.json()["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    assert!(list.contains(&"TRICKY_0".to_string()) && list.contains(&"EXISTING".to_string()));
    assert!(!list.contains(&"INJECTED".to_string()));
    assert!(!keys.text().contains("keep me"), "values never listed");
    // Replace and unset in one go.
    let r = post_env(&s, &tok, r#"{"set":{"TRICKY_11":"now one line"},"unset":["TRICKY_0","OTHER"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["set"], json!(["TRICKY_11"]));
    assert_eq!(r.json()["unset"], json!(["TRICKY_0", "OTHER"]));
    let loaded = vite_load_env(&s.app_dir);
    assert_eq!(loaded["TRICKY_11"], "now one line");
    assert!(loaded.get("TRICKY_0").is_none() && loaded.get("OTHER").is_none());
    assert_eq!(loaded["TRICKY_12"], "quote ' and newline\nhere");
    assert_eq!(loaded["EXISTING"], "keep me");
    Ok(())
}

#[test]
fn bad_input_is_refused_and_leaves_the_file_byte_identical() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = with_token(&s);
    let env_path = s.app_dir.join(".env");
    let original = "KEEP=1\n# note\nB='two'\n";
    std::fs::write(&env_path, original)?;
    let secret = "s3cr3t-value-never-echoed";
    let big_value = "x".repeat(300 * 1024);
    let many: serde_json::Map<String, Value> = (0..513).map(|i| (format!("K{i}"), Value::String("v".into()))).collect();
    let cases: Vec<(u16, &str, String)> = vec![
        (400, "invalid_key", json!({"set": {"GOOD": secret, "1BAD": secret}}).to_string()),
        (400, "invalid_key", json!({"set": {"GOOD": secret, "BAD-KEY": secret}}).to_string()),
        (400, "invalid_key", json!({"unset": ["no spaces"]}).to_string()),
        (400, "invalid_value", json!({"set": {"GOOD": secret, "NUL": format!("a\u{0}{secret}")}}).to_string()),
        (400, "unrepresentable_value", json!({"set": {"GOOD": secret, "QUOTES": format!("'\"`\n{secret}")}}).to_string()),
        (400, "unrepresentable_value", json!({"set": {"CR": format!("a\r{secret}")}}).to_string()),
        (400, "duplicate_key", json!({"set": {"A": secret}, "unset": ["A"]}).to_string()),
        (400, "too_many_keys", json!({"set": many}).to_string()),
        (400, "invalid_json", json!({"set": {"A": 5}}).to_string()),
        (400, "invalid_json", json!({"set": {"A": secret}, "extra": 1}).to_string()),
        (400, "invalid_json", format!("{{\"set\":{{\"A\":\"{secret}\"")),
        (413, "payload_too_large", json!({"set": {"BIG": big_value}}).to_string()),
    ];
    for (want, code, body) in &cases {
        let r = post_env(&s, &tok, body);
        assert_eq!(r.status, *want, "{code}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], *code, "{}", r.text());
        assert!(!r.text().contains(secret), "the error echoes a value: {}", r.text());
        assert_eq!(std::fs::read_to_string(&env_path)?, original, "file changed by a refused request ({code})");
    }
    // Wrong content type.
    let r = curl(&["-X", "POST", "-H", &format!("Authorization: Bearer {tok}"), "-H", "Content-Type: text/plain", "--data-binary", r#"{"set":{"A":"1"}}"#, &s.url("/_supervisor/env")]);
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"]["code"], "unsupported_media_type");
    // A huge body with no Content-Length (chunked) is cut off at the limit.
    let big_file = s.path().join("big.json");
    std::fs::write(&big_file, json!({"set": {"BIG": "y".repeat(2 << 20)}}).to_string())?;
    let r = curl(&["-X", "POST", "-H", &format!("Authorization: Bearer {tok}"), "-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked", "--data-binary", &format!("@{}", big_file.display()), &s.url("/_supervisor/env")]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(std::fs::read_to_string(&env_path)?, original);
    let log = std::fs::read_to_string(&s.log_path)?;
    assert!(!log.contains(secret), "a value reached the log");
    // The same request without the bad entry goes through.
    let r = post_env(&s, &tok, &json!({"set": {"GOOD": secret}}).to_string());
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(secret));
    Ok(())
}

#[test]
fn concurrent_posts_all_land() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = with_token(&s);
    std::fs::write(s.app_dir.join(".env"), "BASE=1\n")?;
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let url = s.url("/_supervisor/env");
            let tok = tok.clone();
            std::thread::spawn(move || {
                let body = json!({"set": {format!("KEY_{i}"): format!("value {i} with 'quote'")}}).to_string();
                curl(&["-X", "POST", "-H", &format!("Authorization: Bearer {tok}"), "-H", "Content-Type: application/json", "--data-binary", &body, &url]).status
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let loaded = vite_load_env(&s.app_dir);
    for i in 0..64 {
        assert_eq!(loaded[format!("KEY_{i}")].as_str(), Some(format!("value {i} with 'quote'").as_str()), "KEY_{i} lost");
    }
    assert_eq!(loaded["BASE"], "1");
    Ok(())
}

#[test]
fn injection_restarts_env_injection_services_which_see_the_variable() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = with_token(&s);
    s.wait_for("agent up", T, |s| Ok(s.logs("agent", 100).contains("no-secret-x")))?;
    let plain0 = s.service("plain")?["pid"].clone();
    let r = post_env(&s, &tok, r#"{"set":{"SECRET_X":"sk-abc"}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["restarted"], json!(["agent"]));
    s.wait_for("agent sees SECRET_X", T, |s| Ok(s.logs("agent", 100).contains("has-secret-x")))?;
    assert_eq!(s.service("agent")?["restarts"], 1);
    assert_eq!(s.service("plain")?["pid"], plain0, "services without env_injection are left alone");
    // ctl env shares the code: set, keys, unset.
    let out = s.ctl(&["env", "set", "FROM_CTL=one two", "ALSO=x"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("one two"), "ctl never prints values");
    let keys = String::from_utf8_lossy(&s.ctl(&["env", "keys"]).stdout).into_owned();
    assert_eq!(keys.lines().collect::<Vec<_>>(), vec!["SECRET_X", "ALSO", "FROM_CTL"]);
    assert!(s.ctl(&["env", "unset", "SECRET_X"]).status.success());
    s.wait_for("agent restarted without SECRET_X", T, |s| {
        let logs = s.logs("agent", 100);
        Ok(logs.matches("no-secret-x").count() >= 2)
    })?;
    let bad = s.ctl(&["env", "set", "1BAD=x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid key"));
    assert_eq!(vite_load_env(&s.app_dir)["FROM_CTL"], "one two");
    Ok(())
}

#[test]
fn the_env_file_belongs_to_the_app_dirs_unprivileged_owner() -> anyhow::Result<()> {
    // The app dir belongs to a real unprivileged user, so the supervisor (root) must chown.
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "this test needs root (the supervisor chowns the file)");
    let (uid, gid) = test_user()?;
    let app = tempfile::Builder::new().prefix("sup-app-owner-").tempdir()?;
    std::fs::set_permissions(app.path(), std::fs::Permissions::from_mode(0o755))?;
    chown_tree(app.path(), uid, gid)?;
    let s = Stack::start_with("[services.plain]\ncommand = [\"sleep\", \"infinity\"]\n", StackOptions { app_dir: Some(app.path().to_path_buf()), ..Default::default() })?;
    let tok = with_token(&s);
    for body in [r#"{"set":{"FIRST":"1"}}"#, r#"{"set":{"SECOND":"2"}}"#] {
        // The second write replaces a file that already exists (a new temp file, renamed).
        let r = post_env(&s, &tok, body);
        assert_eq!(r.status, 200, "{}", r.text());
        let meta = std::fs::metadata(app.path().join(".env"))?;
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "the .env file belongs to the app's user, not root");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(app.path())?.filter_map(|e| e.ok()).map(|e| e.file_name()).filter(|n| n != ".env").collect();
    assert!(leftovers.is_empty(), "no temp file left in the app dir: {leftovers:?}");
    Ok(())
}

#[test]
fn readyz_answers_503_with_a_json_body_until_every_required_service_is_ready() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.gated]
command = ["sleep", "infinity"]
readiness = { file = "{DIR}/go", period = "100ms" }
[services.optional]
command = ["sh", "-c", "exit 1"]
restart = "never"
required = false
"#,
    )?;
    s.wait_state("gated", "running", T)?;
    let r = curl(&[&s.url("/_supervisor/readyz")]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", r.headers);
    assert_eq!(r.json(), json!({"ready": false}));
    std::fs::write(s.path().join("go"), "")?;
    s.wait_state("gated", "ready", T)?;
    let r = curl(&[&s.url("/_supervisor/readyz")]);
    assert_eq!((r.status, r.json()), (200, json!({"ready": true})), "an optional failed service does not count");
    Ok(())
}

#[test]
fn logs_answer_the_last_lines_as_json_and_follow_streams_them() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.talker]
command = ["sh", "-c", "for i in 1 2 3 4 5; do echo out-$i; done; echo err-line >&2; touch {DIR}/said; exec sleep infinity"]
"#,
    )?;
    let tok = with_token(&s);
    s.wait_for("the lines", T, |s| Ok(s.logs("talker", 10).contains("err-line")))?;
    let r = s.api(&tok, "GET", "/_supervisor/logs/talker?tail=3", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["name"], "talker", "{j}");
    let lines = j["lines"].as_array().expect("lines");
    // The last three of what it printed (stdout and stderr interleave in arrival order).
    let texts: Vec<&str> = lines.iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 3, "{j}");
    assert!(texts.contains(&"err-line") && texts.contains(&"out-5"), "{j}");
    let err = lines.iter().find(|l| l["line"] == "err-line").unwrap();
    assert_eq!(err["stream"], "stderr", "{j}");
    assert_eq!(lines.iter().find(|l| l["line"] == "out-5").unwrap()["stream"], "stdout", "{j}");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "seq increases: {j}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    for l in lines {
        let at = l["at_ms"].as_u64().expect("at_ms");
        assert!(at <= now && now - at < 120_000, "at_ms is the time of the line: {l}");
    }
    // tail=1: exactly the last line; an unknown service: 404 in the error shape.
    let one = s.api(&tok, "GET", "/_supervisor/logs/talker?tail=1", None).json();
    assert_eq!(one["lines"].as_array().map(|a| a.len()), Some(1), "{one}");
    assert_eq!(one["lines"][0], *lines.last().unwrap());
    let r = s.api(&tok, "GET", "/_supervisor/logs/ghost?tail=1", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_service");
    // follow=1: SSE `line` events, the tail first, then what comes next.
    let mut sse = SseClient::open(&s.url("/_supervisor/logs/talker?tail=2&follow=1"), &tok)?;
    let mut got = vec![];
    while got.len() < 2 {
        let e = sse.next(T)?.context("no event")?;
        assert_eq!(e.event, "line", "{e:?}");
        got.push(serde_json::from_str::<Value>(&e.data)?);
    }
    assert_eq!(got[1], *lines.last().unwrap(), "the tail comes first, in order");
    Ok(())
}

#[test]
fn events_send_a_snapshot_then_each_state_change_of_a_restart_in_order() -> anyhow::Result<()> {
    let s = stack()?;
    s.wait_ready(T)?;
    let tok = with_token(&s);
    let pid0 = s.service("plain")?["pid"].clone();
    let mut sse = SseClient::open(&s.url("/_supervisor/events"), &tok)?;
    let first = sse.next(T)?.context("no snapshot")?;
    assert_eq!(first.event, "snapshot", "{first:?}");
    let snap: Value = serde_json::from_str(&first.data)?;
    assert_eq!(snap["ready"], true, "{snap}");
    assert_eq!(service_in(&snap, "plain").map(|p| p["pid"].clone()), Some(pid0.clone()), "the snapshot is the status: {snap}");
    assert!(s.ctl(&["restart", "plain"]).status.success());
    // Collect plain's states until it is ready again with a new pid.
    let mut states: Vec<String> = vec![];
    let last = loop {
        let e = sse.next(T)?.with_context(|| format!("events stopped; states so far {states:?}"))?;
        assert_eq!(e.event, "service", "{e:?}");
        let v: Value = serde_json::from_str(&e.data)?;
        if v["name"] != "plain" {
            continue;
        }
        let st = v["state"].as_str().unwrap().to_string();
        if states.last() != Some(&st) {
            states.push(st);
        }
        if v["state"] == "ready" && v["pid"] != pid0 {
            break v;
        }
    };
    assert_eq!(states.first().map(String::as_str), Some("stopping"), "{states:?}");
    let pos = |name: &str| states.iter().position(|s| s == name);
    assert!(pos("stopping") < pos("running") && pos("running") < pos("ready"), "order of a restart: {states:?}");
    assert!(!states.contains(&"failed".to_string()) && !states.contains(&"backoff".to_string()), "{states:?}");
    assert_eq!(last["restarts"], 1, "{last}");
    assert_eq!(last["ready"], true, "{last}");
    Ok(())
}
