//! The authenticated pass-through routes (`/_supervisor/cdp/...`, `/_supervisor/mcp`,
//! `/_supervisor/acp`) against the echo upstream (tests/fixtures/echo.py) standing in for
//! Chromium, Playwright MCP and the ACP service: the supervisor's token — header or
//! `?token=` — never reaches them, everything else of the request does. The routes'
//! targets follow the `port` of the services named `chromium`, `playwright-mcp` and
//! `acp`, so these run on free ports (no fixed-ports lock).

use e2e::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn stack() -> anyhow::Result<Stack> {
    let echo = fixture("echo.py");
    let mut cfg = String::new();
    for name in ["chromium", "playwright-mcp", "acp"] {
        let port = free_port();
        cfg += &format!(
            "[services.{name}]\ncommand = [\"python3\", \"{echo}\", \"{port}\", \"{{DIR}}/release\"]\nport = {port}\nreadiness = {{ tcp = \"127.0.0.1:{port}\", period = \"2s\" }}\n"
        );
    }
    let s = Stack::start(&cfg)?;
    s.wait_ready(T)?;
    Ok(s)
}

fn echoed(j: &Value, name: &str) -> Vec<String> {
    j["headers"].as_array().map(|a| a.iter().filter(|h| h[0] == name).map(|h| h[1].as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// The routes with the upstream path each maps a request path to.
const ROUTES: &[(&str, &str)] = &[
    ("/_supervisor/cdp/echo/x", "/echo/x"),
    ("/_supervisor/mcp", "/mcp"),
    ("/_supervisor/acp", "/acp"),
];

#[test]
fn the_token_header_never_reaches_a_pass_through_upstream() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = s.rotate_token();
    for (route, upstream) in ROUTES {
        for method in ["GET", "POST"] {
            let url = s.url(&format!("{route}?a=1&token={tok}&b=%2F"));
            let r = curl(&[
                "-X", method, "-H", &format!("Authorization: Bearer {tok}"), "-H", "Cookie: c=1", "-H", "X-End-To-End: kept",
                "-H", "e2b-traffic-access-token: edge-secret", "-H", "Content-Type: application/json", "--data-binary", "{}", &url,
            ]);
            assert_eq!(r.status, 200, "{method} {route}: {}", r.text());
            let j = r.json();
            assert_eq!(j["method"], method, "{j}");
            assert_eq!(j["path"], format!("{upstream}?a=1&b=%2F"), "{method} {route}: the query without token=: {j}");
            assert!(echoed(&j, "authorization").is_empty(), "{method} {route}: the supervisor's token went upstream: {j}");
            assert!(echoed(&j, "e2b-traffic-access-token").is_empty(), "{j}");
            assert!(!r.text().contains(&tok), "{method} {route}: the token appears upstream: {j}");
            assert_eq!(echoed(&j, "cookie"), vec!["c=1"], "other headers pass: {j}");
            assert_eq!(echoed(&j, "x-end-to-end"), vec!["kept"], "{j}");
            assert_eq!(j["body_len"], 2, "{j}");
        }
    }
    Ok(())
}

#[test]
fn the_query_token_of_an_upgrade_never_reaches_a_pass_through_upstream() -> anyhow::Result<()> {
    let s = stack()?;
    let tok = s.rotate_token();
    for (route, upstream) in ROUTES {
        // A WebSocket upgrade authenticated only by ?token= (what browsers can send).
        let url = s.url(&format!("{route}?token={tok}&x=1"));
        let r = curl(&[
            "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
            "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", &url,
        ]);
        assert_eq!(r.status, 200, "{route}: the echo answers upgrades with JSON: {}", r.text());
        let j = r.json();
        assert_eq!(j["path"], format!("{upstream}?x=1"), "{route}: {j}");
        assert!(!r.text().contains(&tok), "{route}: the token went upstream: {j}");
        assert_eq!(echoed(&j, "upgrade"), vec!["websocket"], "{j}");
        // The same without a token, or with a wrong one: 401, nothing forwarded.
        for q in ["?x=1".to_string(), "?token=wrong&x=1".to_string()] {
            let r = curl(&["-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", &s.url(&format!("{route}{q}"))]);
            assert_eq!(r.status, 401, "{route}{q}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "unauthorized");
        }
    }
    Ok(())
}
