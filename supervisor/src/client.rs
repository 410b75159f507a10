//! A small HTTP/1.1 client for the control socket, used by `ctl` and `ready`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::path::Path;

/// Sends one request to the supervisor's unix socket and returns status + body.
pub async fn request(socket: &Path, method: &str, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<(u16, Bytes)> {
    let resp = send(socket, method, path, body).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// Sends one request and returns the response with its body still streaming (for follow).
pub async fn send(socket: &Path, method: &str, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<hyper::Response<Incoming>> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the supervisor at {}: {e}", socket.display()))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Full::new(Bytes::from(serde_json::to_vec(&v)?))
        }
        None => Full::new(Bytes::new()),
    };
    Ok(tx.send_request(req.body(body)?).await?)
}
