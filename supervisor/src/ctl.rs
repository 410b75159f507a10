//! `supervisor ctl` and `supervisor ready`: clients of the control socket.

use crate::cli::{CtlArgs, CtlCommand, EnvCommand, TokenCommand};
use crate::client;
use http_body_util::BodyExt;
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// Runs a `ctl` command; returns the process exit code.
pub async fn ctl(args: CtlArgs) -> anyhow::Result<i32> {
    let sock = args.runtime_dir.join("control.sock");
    let mut body = None;
    let (method, path) = match &args.command {
        CtlCommand::Env(EnvCommand::Keys) => ("GET", "/_supervisor/env".to_string()),
        CtlCommand::Env(EnvCommand::Set { pairs }) => {
            let mut set = serde_json::Map::new();
            if pairs.iter().filter(|p| p.split_once('=').is_some_and(|(_, v)| v == "-")).count() > 1 {
                eprintln!("error: only one KEY=- (value from standard input) per call");
                return Ok(2);
            }
            for p in pairs {
                let Some((k, v)) = p.split_once('=') else {
                    // Name only the key part: the argument may be a secret typed without '='.
                    eprintln!("error: expected KEY=VALUE (an argument has no '=')");
                    return Ok(2);
                };
                let v = if v == "-" {
                    match value_from_stdin(tokio::io::stdin()).await {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("error: {k}=-: {e}");
                            return Ok(2);
                        }
                    }
                } else {
                    v.to_string()
                };
                set.insert(k.to_string(), Value::String(v));
            }
            body = Some(serde_json::json!({ "set": set }));
            ("POST", "/_supervisor/env".to_string())
        }
        CtlCommand::Env(EnvCommand::Unset { keys }) => {
            body = Some(serde_json::json!({ "unset": keys }));
            ("POST", "/_supervisor/env".to_string())
        }
        CtlCommand::Token(TokenCommand::Rotate) => ("POST", "/_supervisor/token/rotate".to_string()),
        CtlCommand::Status => ("GET", "/_supervisor/status".to_string()),
        CtlCommand::Reload => ("POST", "/_supervisor/reload".to_string()),
        CtlCommand::Metrics => {
            let (status, page) = client::request(&sock, "GET", "/_supervisor/metrics", None).await?;
            if status != 200 {
                let v: Value = serde_json::from_slice(&page).unwrap_or(Value::Null);
                eprintln!("error: {}", error_message(&v));
                return Ok(1);
            }
            print!("{}", String::from_utf8_lossy(&page));
            return Ok(0);
        }
        CtlCommand::Start { name } => ("POST", format!("/_supervisor/services/{name}/start")),
        CtlCommand::Stop { name } => ("POST", format!("/_supervisor/services/{name}/stop")),
        CtlCommand::Restart { name } => ("POST", format!("/_supervisor/services/{name}/restart")),
        CtlCommand::Logs { name, follow: true, tail } => return follow_logs(&sock, name, *tail).await,
        CtlCommand::Logs { name, tail, .. } => ("GET", format!("/_supervisor/logs/{name}?tail={tail}")),
        CtlCommand::Attach { name } => return crate::pty::attach::attach(&sock, name).await,
        CtlCommand::Screenshot { path, out, width, height, full_page, format, quality } => {
            let mut q = format!("/_supervisor/browser/screenshot?path={}", query_escape(path));
            for (k, v) in [("width", width), ("height", height), ("quality", quality)] {
                if let Some(v) = v {
                    let _ = write!(q, "&{k}={v}");
                }
            }
            if *full_page {
                q.push_str("&full_page=1");
            }
            if let Some(f) = format {
                let _ = write!(q, "&format={}", query_escape(f));
            }
            return screenshot(&sock, &q, out).await;
        }
        CtlCommand::Check { path } => ("GET", format!("/_supervisor/browser/check?path={}", query_escape(path))),
    };
    let (path, body) = match (&args.scope, &args.command) {
        (None, _) => (path, body),
        (Some(scope), CtlCommand::Env(EnvCommand::Keys)) => (format!("{path}?scope={scope}"), body),
        (Some(scope), CtlCommand::Env(_)) => (path, body.map(|mut b| {
            b["scope"] = Value::String(scope.clone());
            b
        })),
        (Some(_), _) => {
            eprintln!("error: --scope applies only to `ctl env`");
            return Ok(2);
        }
    };
    let (status, answer) = client::request(&sock, method, &path, body).await?;
    let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        if args.json {
            println!("{v}");
        } else {
            eprintln!("error: {}", error_message(&v));
        }
        return Ok(1);
    }
    let code = match &args.command {
        CtlCommand::Check { .. } if v["ok"] != true => 1,
        _ => 0,
    };
    if args.json {
        println!("{v}");
        return Ok(code);
    }
    match &args.command {
        CtlCommand::Check { .. } => print!("{}", check_table(&v)),
        CtlCommand::Status => print!("{}", status_table(&v)),
        CtlCommand::Logs { .. } => {
            for l in v["lines"].as_array().into_iter().flatten() {
                println!("{}", l["line"].as_str().unwrap_or(""));
            }
        }
        CtlCommand::Env(EnvCommand::Keys) => {
            for k in v["keys"].as_array().into_iter().flatten() {
                println!("{}", k.as_str().unwrap_or(""));
            }
        }
        CtlCommand::Env(_) => {
            let list = |k: &str| v[k].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ");
            println!("set: {}\nunset: {}\nrestarted: {}", list("set"), list("unset"), list("restarted"));
        }
        CtlCommand::Token(_) => println!("new token written to {}", v["token_file"].as_str().unwrap_or("?")),
        CtlCommand::Reload => {
            let list = |k: &str| v[k].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ");
            println!("started: {}\nstopped: {}\nrestarted: {}\nunchanged: {}", list("started"), list("stopped"), list("restarted"), list("unchanged"));
            if !list("needs_restart").is_empty() {
                println!("needs a supervisor restart: {}", list("needs_restart"));
            }
        }
        _ => println!("{}: {}", v["name"].as_str().unwrap_or(""), v["state"].as_str().unwrap_or("")),
    }
    Ok(code)
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `ctl screenshot`: the image goes to `out` (written whole, then renamed into place).
async fn screenshot(sock: &Path, path: &str, out: &Path) -> anyhow::Result<i32> {
    let (status, body) = client::request(sock, "GET", path, None).await?;
    if status != 200 {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        eprintln!("error: {}", error_message(&v));
        return Ok(1);
    }
    crate::envfile::write_atomic(out, &body, None).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!("{} ({} bytes)", out.display(), body.len());
    Ok(0)
}

/// The human form of `ctl check`.
pub fn check_table(v: &Value) -> String {
    let mut out = String::new();
    let s = |x: &Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
    let _ = writeln!(out, "ok: {}   status: {}   load: {} ms   title: {}", v["ok"], s(&v["status"]), v["load_ms"], s(&v["title"]));
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(out, "error: {e}");
    }
    if !v["vite_error"].is_null() {
        let _ = writeln!(out, "vite error in {}: {}", s(&v["vite_error"]["file"]), s(&v["vite_error"]["message"]));
    }
    let _ = writeln!(out, "{:<10} {:<8} WHAT", "KIND", "LEVEL");
    for e in v["exceptions"].as_array().into_iter().flatten() {
        let at = &e["stack_top"];
        let at = if at.is_null() { String::new() } else { format!(" (at {}:{})", s(&at["url"]), at["line"]) };
        let _ = writeln!(out, "{:<10} {:<8} {}{at}", "exception", "error", s(&e["message"]));
    }
    for c in v["console"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{:<10} {:<8} {}", "console", s(&c["level"]), s(&c["text"]).replace('\n', " "));
    }
    for f in v["failed_requests"].as_array().into_iter().flatten() {
        let why = if f["status"].is_null() { s(&f["error"]) } else { f["status"].to_string() };
        let _ = writeln!(out, "{:<10} {:<8} {} {}", "request", "failed", why, s(&f["url"]));
    }
    out
}

/// The value of `KEY=-`: all of standard input (so a secret never sits in argv or sudo's
/// log), UTF-8, at most the API's body limit, minus ONE trailing `\n` (what `echo` and a
/// heredoc add; a value that really ends in a newline needs two).
pub async fn value_from_stdin(input: impl tokio::io::AsyncRead + Unpin) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let max = crate::api::env::MAX_BODY;
    let mut buf = Vec::new();
    input.take(max as u64 + 1).read_to_end(&mut buf).await.map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
    anyhow::ensure!(buf.len() <= max, "standard input is longer than {max} bytes");
    let mut v = String::from_utf8(buf).map_err(|_| anyhow::anyhow!("standard input is not UTF-8"))?;
    if v.ends_with('\n') {
        v.pop();
    }
    Ok(v)
}

async fn follow_logs(sock: &Path, name: &str, tail: usize) -> anyhow::Result<i32> {
    let resp = client::send(sock, "GET", &format!("/_supervisor/logs/{name}?tail={tail}&follow=1"), None).await?;
    if !resp.status().is_success() {
        let body = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        eprintln!("error: {}", error_message(&v));
        return Ok(1);
    }
    let mut body = resp.into_body();
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            pending.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(l) = serde_json::from_str::<Value>(data.trim_start()) {
                        match l["line"].as_str() {
                            Some(line) => println!("{line}"),
                            None if l["lost"].is_u64() => eprintln!("[{} lines lost: too slow to follow]", l["lost"]),
                            None => {}
                        }
                    }
                }
            }
        }
    }
    Ok(0)
}

/// The message of an API error body (`{"error":{"code","message"}}`).
fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("unexpected answer")
}

/// The human table of `ctl status`.
pub fn status_table(v: &Value) -> String {
    let mut out = String::new();
    let now = crate::engine::reaper::now_ms();
    let g = &v["port_guard"];
    let guard = match (g["enabled"].as_bool(), g["active"].as_bool()) {
        (Some(true), Some(true)) => "active".to_string(),
        (Some(true), _) => format!("NOT ACTIVE ({})", g["error"].as_str().unwrap_or("?")),
        _ => "off".to_string(),
    };
    let _ = writeln!(out, "ready: {}   uptime: {}s   port guard: {guard}", v["ready"], v["uptime_ms"].as_u64().unwrap_or(0) / 1000);
    let _ = writeln!(out, "{:<16} {:<10} {:>8} {:>5} {:>8} {:>9} {:>6}  {}", "SERVICE", "STATE", "PID", "READY", "RESTARTS", "RSS", "CPU%", "INFO");
    for s in v["services"].as_array().into_iter().flatten() {
        let pid = s["pid"].as_i64().map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let rss = s["rss_bytes"].as_u64().unwrap_or(0);
        let mut info = s["message"].as_str().unwrap_or("").to_string();
        if info.is_empty() {
            if let Some(t) = s["started_at"].as_u64() {
                info = format!("up {}s", now.saturating_sub(t) / 1000);
            }
        }
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:>8} {:>5} {:>8} {:>8.1}M {:>6.1}  {}",
            s["name"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            pid,
            if s["ready"].as_bool() == Some(true) { "yes" } else { "no" },
            s["restarts"].as_u64().unwrap_or(0),
            rss as f64 / 1048576.0,
            s["cpu_percent"].as_f64().unwrap_or(0.0),
            info
        );
    }
    out
}

/// `supervisor ready`: polls `/readyz` on the socket until 200 or the timeout.
pub async fn ready(runtime_dir: &Path, timeout: Duration) -> i32 {
    let sock = runtime_dir.join("control.sock");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last;
    loop {
        match client::request(&sock, "GET", "/_supervisor/readyz", None).await {
            Ok((200, _)) => return 0,
            Ok((code, body)) => {
                let reason = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["reason"].as_str().map(str::to_string));
                last = match reason {
                    Some(r) => format!("not ready (HTTP {code}): {r}"),
                    None => format!("not ready (HTTP {code})"),
                };
            }
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("supervisor not ready after {timeout:?}: {last}");
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::value_from_stdin;

    #[tokio::test]
    async fn stdin_value_strips_exactly_one_trailing_newline_and_is_bounded() {
        assert_eq!(value_from_stdin(&b"s3cr=t\n"[..]).await.unwrap(), "s3cr=t");
        assert_eq!(value_from_stdin(&b"two\n\n"[..]).await.unwrap(), "two\n");
        assert_eq!(value_from_stdin(&b"none"[..]).await.unwrap(), "none");
        assert_eq!(value_from_stdin(&b""[..]).await.unwrap(), "");
        assert_eq!(value_from_stdin(&b"crlf\r\n"[..]).await.unwrap(), "crlf\r");
        let max = crate::api::env::MAX_BODY;
        assert_eq!(value_from_stdin(&vec![b'a'; max][..]).await.unwrap().len(), max);
        assert!(value_from_stdin(&vec![b'a'; max + 1][..]).await.unwrap_err().to_string().contains("longer than"));
        assert!(value_from_stdin(&[0xff, 0xfe][..]).await.unwrap_err().to_string().contains("UTF-8"));
    }
}
