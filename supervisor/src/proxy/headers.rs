//! Header rules of the proxy: hop-by-hop headers (RFC 9110 §7.6.1) removed, headers the
//! edge adds for itself dropped, `X-Forwarded-*` set.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that never cross a proxy (as `HeaderName`s: a lookup by `&str` parses the name
/// every time, which showed in the profile, twice per request).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers of the E2B edge that must not reach the app.
const EDGE_ONLY: [HeaderName; 1] = [HeaderName::from_static("e2b-traffic-access-token")];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
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
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// Prepares request headers for the upstream: hop-by-hop and edge headers removed,
/// `X-Forwarded-For` appended, `-Proto` and `-Host` set unless the edge set them.
pub fn for_upstream(h: &mut HeaderMap, client: IpAddr) {
    let host = h.get(header::HOST).cloned();
    strip_hop_by_hop(h);
    for n in &EDGE_ONLY {
        h.remove(n);
    }
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => HeaderValue::from_str(&format!("{prev}, {client}")),
        _ => ip_value(client),
    };
    if let Ok(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let (false, Some(host)) = (h.contains_key(&X_FORWARDED_HOST), host) {
        h.insert(X_FORWARDED_HOST, host);
    }
}

/// The client's address as a header value, formatted on the stack (one allocation, not three).
fn ip_value(ip: IpAddr) -> Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 64]; // an IPv6 address is at most 45 bytes
    let mut w = &mut buf[..];
    if write!(w, "{ip}").is_err() {
        return HeaderValue::from_str(&ip.to_string());
    }
    let n = 64 - w.len();
    HeaderValue::from_bytes(&buf[..n])
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
        let mut h = HeaderMap::new();
        for_upstream(&mut h, "2001:db8::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
