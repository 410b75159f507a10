//! Header rules of the proxy: hop-by-hop headers (RFC 9110 §7.6.1) removed, headers the
//! edge adds for itself dropped, `X-Forwarded-*` set.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that never cross a proxy.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

/// Headers of the E2B edge that must not reach the app.
const EDGE_ONLY: &[&str] = &["e2b-traffic-access-token"];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Prepares request headers for the upstream: hop-by-hop and edge headers removed,
/// `X-Forwarded-For` appended, `-Proto` and `-Host` set unless the edge set them.
pub fn for_upstream(h: &mut HeaderMap, client: IpAddr) {
    let host = h.get(header::HOST).cloned();
    strip_hop_by_hop(h);
    for n in EDGE_ONLY {
        h.remove(*n);
    }
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let (false, Some(host)) = (h.contains_key("x-forwarded-host"), host) {
        h.insert("x-forwarded-host", host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_and_forwards() {
        let mut h = HeaderMap::new();
        h.insert("host", "abc.mk0r.com".parse().unwrap());
        h.insert("connection", "keep-alive, x-custom-hop".parse().unwrap());
        h.insert("x-custom-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("e2b-traffic-access-token", "secret".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.insert("accept", "text/html".parse().unwrap());
        for_upstream(&mut h, "127.0.0.1".parse().unwrap());
        for gone in ["connection", "x-custom-hop", "keep-alive", "te", "e2b-traffic-access-token"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "abc.mk0r.com");
        assert_eq!(h["host"], "abc.mk0r.com");
        assert_eq!(h["accept"], "text/html");
    }
}
