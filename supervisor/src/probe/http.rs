//! A minimal one-shot HTTP/1.1 GET over a fresh connection, for probes.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Response status and body of a GET.
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Body (only read when asked).
    pub body: Bytes,
}

/// GETs `url` (http only) with `headers`; reads the body when `want_body`.
pub async fn get(url: &str, headers: &[(String, String)], want_body: bool) -> Result<Answer, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("url has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = hyper::Request::get(path).header("host", uri.authority().map(|a| a.as_str()).unwrap_or(&host));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = if want_body {
        resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes()
    } else {
        Bytes::new()
    };
    Ok(Answer { status, body })
}
