//! Authenticated pass-through of the internal services on the public port:
//! `/_supervisor/cdp/...` → Chromium's DevTools (9222), `/_supervisor/mcp` → Playwright MCP
//! (3001), `/_supervisor/acp` → the ACP service (3002). HTTP and WebSocket.
//!
//! For CDP, `Host` becomes the upstream address (Chrome only answers loopback hosts),
//! `Origin` is dropped (Chrome rejects unknown origins on its WebSocket), and the
//! `webSocketDebuggerUrl`s of `/json/*` answers are rewritten to come back through
//! this route. The supervisor's token (`Authorization`, `?token=`) never goes upstream.

use crate::proxy::{ForwardError, Rewrite, Upstream};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest `/json/*` answer that is rewritten (they are a few KiB).
const MAX_JSON: usize = 8 << 20;

/// One pass-through: the public prefix, the upstream, and the upstream path prefix.
pub struct PassThrough {
    /// Public prefix, e.g. `/_supervisor/cdp`.
    pub prefix: &'static str,
    /// Upstream path the prefix maps to, e.g. `` (cdp) or `/mcp`.
    pub upstream_path: &'static str,
    /// Where it goes.
    pub upstream: Upstream,
    /// Whether this is CDP (Origin dropped, `/json` answers rewritten).
    pub cdp: bool,
}

/// Forwards a request under `pt.prefix`.
pub async fn forward(State(pt): State<Arc<PassThrough>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let rest = req.uri().path().strip_prefix(pt.prefix).unwrap_or("");
    let mut path = format!("{}{}", pt.upstream_path, rest);
    if path.is_empty() {
        path.push('/');
    }
    if let Some(q) = req.uri().query().map(strip_token).filter(|q| !q.is_empty()) {
        path = format!("{path}?{q}");
    }
    let json = pt.cdp && rest.starts_with("/json");
    let public = PublicOrigin::of(req.headers());
    let rw = Rewrite {
        path_and_query: Some(path),
        host: Some(pt.upstream.addr().to_string()),
        // Origin never goes upstream: the token authorised this request, and CDP and ACP refuse browser origins.
        drop: &["authorization", "origin"],
    };
    let resp = match pt.upstream.forward(req, peer, &rw).await {
        Ok(r) => r,
        Err(e) => {
            crate::metrics::upstream_error(crate::metrics::Route::Passthrough);
            return match e {
                ForwardError::Unavailable(_) => {
                    crate::api::ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", e.to_string()).into_response()
                }
                e => e.into_response(),
            };
        }
    };
    if json {
        rewrite_json(resp, &public, pt.prefix).await
    } else {
        resp
    }
}

/// Removes `token=` from a query string.
fn strip_token(q: &str) -> String {
    q.split('&').filter(|kv| !kv.starts_with("token=") && *kv != "token").collect::<Vec<_>>().join("&")
}

/// How a client reached us: the scheme and host to put in URLs we hand back.
pub struct PublicOrigin {
    /// `ws` or `wss`.
    pub ws_scheme: &'static str,
    /// The request's `Host`.
    pub host: String,
}

impl PublicOrigin {
    /// `wss` unless the Host is a loopback name or IP (and no `X-Forwarded-Proto: https`).
    pub fn of(h: &HeaderMap) -> Self {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost").to_string();
        let https = h.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let ws_scheme = if https || !is_loopback_host(&host) { "wss" } else { "ws" };
        PublicOrigin { ws_scheme, host }
    }
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host })
    };
    let name = name.to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Rewrites `webSocketDebuggerUrl` / `devtoolsFrontendUrl` in a `/json/*` answer.
async fn rewrite_json(resp: Response, public: &PublicOrigin, prefix: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_JSON).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return crate::api::ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "proxy_error", "DevTools answer too large").into_response(),
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    rewrite_urls(&mut v, public, prefix);
    let out = serde_json::to_vec(&v).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

fn rewrite_urls(v: &mut serde_json::Value, public: &PublicOrigin, prefix: &str) {
    match v {
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rewrite_urls(x, public, prefix)),
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::String(u)) = o.get_mut("webSocketDebuggerUrl") {
                if let Some(pos) = u.find("/devtools/") {
                    *u = format!("{}://{}{}{}", public.ws_scheme, public.host, prefix, &u[pos..]);
                }
            }
            if let Some(serde_json::Value::String(u)) = o.get_mut("devtoolsFrontendUrl") {
                if let (Some(start), Some(pos)) = (u.find("ws=").or_else(|| u.find("wss=")), u.find("/devtools/page/")) {
                    if start < pos {
                        let key = if public.ws_scheme == "wss" { "wss=" } else { "ws=" };
                        *u = format!("{}{key}{}{}{}", &u[..start], public.host, prefix, &u[pos..]);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:3000", "127.0.0.1:3000", "127.9.9.9", "[::1]:3000", "app.localhost:3000"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["abc.mk0r.com", "3000-abc.e2b.app:443", "10.0.0.1:3000", "[2001:db8::1]:3000"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn debugger_urls_come_back_through_the_route() {
        let mut v = serde_json::json!([{
            "webSocketDebuggerUrl": "ws://127.0.0.1:9222/devtools/page/ABC",
            "devtoolsFrontendUrl": "/devtools/inspector.html?ws=127.0.0.1:9222/devtools/page/ABC"
        }]);
        let public = PublicOrigin { ws_scheme: "wss", host: "abc.mk0r.com".into() };
        rewrite_urls(&mut v, &public, "/_supervisor/cdp");
        assert_eq!(v[0]["webSocketDebuggerUrl"], "wss://abc.mk0r.com/_supervisor/cdp/devtools/page/ABC");
        assert_eq!(v[0]["devtoolsFrontendUrl"], "/devtools/inspector.html?wss=abc.mk0r.com/_supervisor/cdp/devtools/page/ABC");
        assert_eq!(strip_token("a=1&token=xyz&b=2"), "a=1&b=2");
    }
}
