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
/// One pass over the headers present (a request has a handful) rather than a hashed lookup
/// per hop-by-hop name; nothing is allocated unless `Connection` names another header.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut hop = [false; 9]; // HOP_BY_HOP.len()
    let mut named: Vec<HeaderName> = Vec::new();
    for (k, v) in h.iter() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            hop[i] = true;
        }
        if k == header::CONNECTION {
            let tokens = v.to_str().ok().into_iter().flat_map(|v| v.split(',')).map(str::trim);
            for t in tokens.filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|n| t.eq_ignore_ascii_case(n.as_str()))) {
                if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                    named.push(n);
                }
            }
        }
    }
    for n in named {
        h.remove(n);
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if hop[i] {
            h.remove(n);
        }
    }
}

/// Prepares request headers for the upstream: hop-by-hop and edge headers removed,
/// `X-Forwarded-For` appended, `-Proto` and `-Host` set unless the edge set them.
/// `client_value` is `client` as a header value when the caller has it already (made once per
/// connection: formatting the address showed in the profile).
pub fn for_upstream(h: &mut HeaderMap, client: IpAddr, client_value: Option<&HeaderValue>) {
    let host = h.get(header::HOST).cloned();
    strip_hop_by_hop(h);
    for n in &EDGE_ONLY {
        h.remove(n);
    }
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => HeaderValue::from_str(&format!("{prev}, {client}")),
        _ => client_value.cloned().map_or_else(|| ip_value(client), Ok),
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
pub(super) fn ip_value(ip: IpAddr) -> Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
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
        h.insert("connection", "keep-alive, x-custom-hop, Upgrade".parse().unwrap());
        h.append("connection", "x-other-hop".parse().unwrap());
        h.insert("x-other-hop", "1".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-custom-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("e2b-traffic-access-token", "secret".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.insert("accept", "text/html".parse().unwrap());
        for_upstream(&mut h, "127.0.0.1".parse().unwrap(), None);
        for gone in ["connection", "x-custom-hop", "x-other-hop", "upgrade", "keep-alive", "te", "e2b-traffic-access-token"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "abc.mk0r.com");
        assert_eq!(h["host"], "abc.mk0r.com");
        assert_eq!(h["accept"], "text/html");
        let mut h = HeaderMap::new();
        for_upstream(&mut h, "2001:db8::1".parse().unwrap(), None);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert!(!h.contains_key("x-forwarded-host"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        for_upstream(&mut h, "10.0.0.1".parse().unwrap(), Some(&HeaderValue::from_static("10.0.0.1")));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        let mut h = HeaderMap::new();
        for_upstream(&mut h, "10.0.0.1".parse().unwrap(), Some(&HeaderValue::from_static("10.0.0.1")));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
    }
}
