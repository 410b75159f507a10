//! The 503 "starting" answer shown while the app's dev server is not ready.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="1">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Starting…</title>
<style>body{font-family:system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;color:#444}</style>
</head><body><p>The app is starting… this page reloads by itself.</p></body></html>
"#;

/// 503 with a self-refreshing HTML page when `accept` holds `text/html`, else JSON.
pub fn response(accept: Option<&str>) -> Response {
    let html = accept.is_some_and(|a| a.contains("text/html"));
    let mut r = if html {
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
    } else {
        crate::api::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the app is starting; retry shortly").into_response()
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
