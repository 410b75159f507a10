//! `/_supervisor/browser/{screenshot,check,events}` (SPEC §9): the browser sensor's routes.
//! Every input is hostile: `path` must be a path of the app (never another origin),
//! sizes are clamped, captures are limited (two at once, a short queue, then 429).

use super::{ApiError, ApiState};
use crate::browser::load::{self, LoadError, Loaded};
use crate::browser::{Sensor, WAIT_FOR_BROWSER};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{CaptureScreenshotFormat, CaptureScreenshotParams, GetLayoutMetricsParams};
use crate::browser::events::BrowserEvent;
use axum::response::sse::Event;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Viewport bounds (CSS pixels); requested sizes are clamped into them.
pub const WIDTH: (u32, u32) = (100, 3840);
/// See [`WIDTH`].
pub const HEIGHT: (u32, u32) = (100, 2160);
/// A full-page capture is cut at this height...
pub const FULL_PAGE_MAX: u32 = 10_000;
/// ...and at this many pixels (so a 3840-wide one stops at 4,166 px): an image is held
/// three times (CDP's base64 message, its parse, the PNG) while it passes through.
pub const FULL_PAGE_PIXELS: u32 = 16_000_000;
/// Longest `path` accepted.
const MAX_PATH: usize = 2048;
/// Longest a whole capture may take (queue wait excluded).
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(60);

/// The sensor's routes (merged into the token routes).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/_supervisor/browser/screenshot", get(screenshot))
        .route("/_supervisor/browser/check", get(check))
        .route("/_supervisor/browser/events", get(events_route))
}

/// The query of `screenshot` (and the `path` of `check`), as text: parsed here so every
/// mistake gets a JSON 400 naming the parameter.
#[derive(Deserialize, Default)]
pub struct CaptureQuery {
    path: Option<String>,
    width: Option<String>,
    height: Option<String>,
    full_page: Option<String>,
    format: Option<String>,
    quality: Option<String>,
}

fn bad(param: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{param}: {why}"))
}

/// Checks that `path` is a path of the app (`/...`): no scheme, no host (`//host`), no
/// backslash (browsers read `/\host` as `//host`), no control characters; returns the URL
/// to load, proven to be on the sensor's origin.
pub fn app_url(origin: &str, path: Option<&str>) -> Result<String, ApiError> {
    let p = path.unwrap_or("/");
    if p.len() > MAX_PATH {
        return Err(bad("path", format!("longer than {MAX_PATH} bytes")));
    }
    if !p.starts_with('/') {
        return Err(bad("path", "must be a path of the app starting with '/' (no scheme or host)"));
    }
    if p.starts_with("//") || p.contains('\\') {
        return Err(bad("path", "must not name a host ('//' or '\\')"));
    }
    if p.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("path", "must not hold spaces or control characters (percent-encode them)"));
    }
    let url = format!("{origin}{p}");
    // Belt and braces: what a parser makes of it (fragment aside) has the origin's host.
    let authority = |u: &str| u.split('#').next().and_then(|u| u.parse::<axum::http::Uri>().ok()).and_then(|u| Some((u.scheme_str()?.to_string(), u.authority()?.clone())));
    match (authority(&url), authority(origin)) {
        (Some(u), Some(o)) if u == o => Ok(url),
        _ => Err(bad("path", "does not stay on the app's origin")),
    }
}

fn number(param: &str, v: &Option<String>, default: u32) -> Result<u32, ApiError> {
    match v.as_deref() {
        None | Some("") => Ok(default),
        Some(s) => s.parse::<u32>().map_err(|_| bad(param, format!("{s:?} is not a whole number"))),
    }
}

fn flag(param: &str, v: &Option<String>) -> Result<bool, ApiError> {
    match v.as_deref() {
        None | Some("") | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(s) => Err(bad(param, format!("{s:?} is not 0/1/true/false"))),
    }
}

/// A parsed screenshot request.
#[derive(Debug, PartialEq)]
pub struct Shot {
    /// The URL to load.
    pub url: String,
    /// Viewport width (clamped).
    pub width: u32,
    /// Viewport height (clamped).
    pub height: u32,
    /// The whole page, not only the viewport.
    pub full_page: bool,
    /// `Some(quality)` for JPEG, `None` for PNG.
    pub jpeg: Option<u8>,
}

impl Shot {
    /// Parses and bounds the query.
    pub fn parse(origin: &str, q: &CaptureQuery) -> Result<Shot, ApiError> {
        let url = app_url(origin, q.path.as_deref())?;
        let width = number("width", &q.width, 1280)?.clamp(WIDTH.0, WIDTH.1);
        let height = number("height", &q.height, 800)?.clamp(HEIGHT.0, HEIGHT.1);
        let full_page = flag("full_page", &q.full_page)?;
        let jpeg = match q.format.as_deref() {
            None | Some("") | Some("png") => None,
            Some("jpeg" | "jpg") => Some(number("quality", &q.quality, 80)?.clamp(1, 100) as u8),
            Some(f) => return Err(bad("format", format!("{f:?}: use png or jpeg"))),
        };
        Ok(Shot { url, width, height, full_page, jpeg })
    }
}

fn unavailable(reason: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "browser_unavailable", reason)
}

/// Runs `f` on a loaded page (`hidden`: invisible to other CDP clients, not capturable):
/// a capture slot (or 429), the session (or 503), the load, all within [`CAPTURE_TIMEOUT`].
async fn with_page<T>(
    sensor: &Arc<Sensor>,
    url: &str,
    (width, height): (u32, u32),
    hidden: bool,
    f: impl AsyncFnOnce(Loaded) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let Some(_slot) = sensor.slot().await else {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_captures", "too many screenshots/checks running and queued; retry shortly"));
    };
    let run = async {
        // A connection that closes under the load (Chromium killed a moment ago, before the
        // sensor saw it go) is retried on a new one, within the same wait for the browser.
        let deadline = tokio::time::Instant::now() + WAIT_FOR_BROWSER;
        let loaded = loop {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let sess = sensor.session(wait).await.map_err(|e| unavailable(e.0))?;
            match load::load(&sess, url, width, height, hidden).await {
                Ok(l) => break l,
                Err(LoadError::Closed) if tokio::time::Instant::now() < deadline => continue,
                Err(LoadError::Closed) => return Err(unavailable("the CDP connection closed during the load".into())),
                Err(LoadError::Other(e)) => return Err(unavailable(e)),
            }
        };
        f(loaded).await
    };
    match tokio::time::timeout(CAPTURE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "capture_timeout", format!("the capture took longer than {CAPTURE_TIMEOUT:?}"))),
    }
}

/// `GET /_supervisor/browser/screenshot`: `image/png` (or `image/jpeg`) of the app.
async fn screenshot(State(st): State<ApiState>, Query(q): Query<CaptureQuery>) -> Result<Response, ApiError> {
    let shot = Shot::parse(&st.browser.origin, &q)?;
    let bytes = with_page(&st.browser, &shot.url, (shot.width, shot.height), false, async |l: Loaded| {
        let page = &l.page;
        let fail = |what: &str, e: crate::browser::cdp::CdpError| unavailable(format!("{what}: {e}"));
        if shot.full_page {
            let m = page.send(GetLayoutMetricsParams::default()).await.map_err(|e| fail("Page.getLayoutMetrics", e))?;
            let h = (m.css_content_size.height.ceil() as u32).clamp(shot.height, FULL_PAGE_MAX.min(FULL_PAGE_PIXELS / shot.width).max(shot.height));
            page.send(SetDeviceMetricsOverrideParams::new(shot.width as i64, h as i64, 1.0, false)).await.map_err(|e| fail("resizing", e))?;
        }
        let mut p = CaptureScreenshotParams::default();
        match shot.jpeg {
            Some(q) => {
                p.format = Some(CaptureScreenshotFormat::Jpeg);
                p.quality = Some(q as i64);
            }
            None => p.format = Some(CaptureScreenshotFormat::Png),
        }
        let r = page.send(p).await.map_err(|e| fail("Page.captureScreenshot", e))?;
        let data: &str = r.data.as_ref();
        base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| unavailable(format!("screenshot data: {e}")))
    })
    .await?;
    let ctype = if shot.jpeg.is_some() { "image/jpeg" } else { "image/png" };
    Ok(([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-store")], bytes).into_response())
}

/// `GET /_supervisor/browser/check`: does the app render, and why not.
async fn check(State(st): State<ApiState>, Query(q): Query<CaptureQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let url = app_url(&st.browser.origin, q.path.as_deref())?;
    let v = with_page(&st.browser, &url, (1280, 800), true, async |l: Loaded| {
        let vite_error = l.vite_error().await;
        let title = l.title().await;
        let console_error = l.console.iter().any(|c| c["level"] == "error");
        let ok = l.error.is_none() && l.status.is_some_and(|s| (200..300).contains(&s)) && l.exceptions.is_empty() && vite_error.is_null() && !console_error;
        let mut v = json!({
            "ok": ok, "url": url, "status": l.status, "title": title, "load_ms": l.load_ms,
            "console": l.console, "exceptions": l.exceptions, "failed_requests": l.failed_requests, "vite_error": vite_error,
        });
        if let Some(e) = &l.error {
            v["error"] = json!(e);
        }
        Ok(v)
    })
    .await?;
    Ok(Json(v))
}

/// `GET /_supervisor/browser/events`: SSE of every page's console messages, exceptions
/// and failed requests; `Last-Event-ID` replays from the ring. Answers even while Chromium
/// is down (the ring still holds what came before); the follower keeps the session open,
/// and this asks for one too in case none is being followed.
async fn events_route(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let sensor = st.browser.clone();
    tokio::spawn(async move {
        let _ = sensor.session(WAIT_FOR_BROWSER).await;
    });
    let render = |n: &crate::sse::Numbered<BrowserEvent>| Event::default().event(n.item.kind).data(&*n.item.data);
    let after = crate::sse::last_event_id(&headers).unwrap_or(0);
    Ok(crate::sse::stream(st.browser.events.clone(), vec![], after, render).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: &str = "http://localhost:3000";

    #[test]
    fn only_paths_of_the_app_are_loaded() {
        assert_eq!(app_url(O, None).unwrap(), "http://localhost:3000/");
        assert_eq!(app_url(O, Some("/a/b?x=1#h")).unwrap(), "http://localhost:3000/a/b?x=1#h");
        for evil in ["//evil.example/", "http://evil.example/", "evil.example", "/\\evil.example", "\\\\evil", "", "/a b", "/\n", "@evil.example", "javascript:alert(1)"] {
            let e = app_url(O, Some(evil)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{evil:?}");
        }
        assert!(app_url(O, Some(&format!("/{}", "a".repeat(3000)))).is_err());
    }

    #[test]
    fn sizes_are_clamped_and_bad_values_named() {
        let q = |w: &str, h: &str| CaptureQuery { width: Some(w.into()), height: Some(h.into()), ..Default::default() };
        let s = Shot::parse(O, &q("1", "99999")).unwrap();
        assert_eq!((s.width, s.height), (WIDTH.0, HEIGHT.1));
        let s = Shot::parse(O, &CaptureQuery::default()).unwrap();
        assert_eq!((s.width, s.height, s.full_page, s.jpeg), (1280, 800, false, None));
        assert!(Shot::parse(O, &q("-5", "10")).unwrap_err().message.starts_with("width"));
        let j = CaptureQuery { format: Some("jpeg".into()), quality: Some("500".into()), ..Default::default() };
        assert_eq!(Shot::parse(O, &j).unwrap().jpeg, Some(100));
        let g = CaptureQuery { format: Some("gif".into()), ..Default::default() };
        assert!(Shot::parse(O, &g).unwrap_err().message.starts_with("format"));
        let f = CaptureQuery { full_page: Some("maybe".into()), ..Default::default() };
        assert!(Shot::parse(O, &f).unwrap_err().message.starts_with("full_page"));
    }
}
