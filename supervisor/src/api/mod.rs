//! The control API under `/_supervisor/` (SPEC §5), one router served on the unix
//! control socket and, behind token auth, on the public listener.

pub mod auth;
pub mod browser;
pub mod env;
pub mod pty;
mod error;
pub mod status;

pub use error::{json_errors, ApiError};

use crate::engine::{Control, Supervisor};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// State behind every control route.
#[derive(Clone)]
pub struct ApiState {
    /// The running stack.
    pub sup: Arc<Supervisor>,
    /// CPU sampler for `status`.
    pub cpu: Arc<status::CpuSampler>,
    /// The app's env file.
    pub env: Arc<env::EnvStore>,
    /// The token file (rotated over the socket only).
    pub token_file: std::path::PathBuf,
    /// The port guard.
    pub guard: Arc<crate::guard::PortGuard>,
    /// Terminal sessions.
    pub ptys: Arc<crate::pty::session::Manager>,
    /// Reads the config file again for `reload`.
    pub reload: Arc<crate::reload::Reloader>,
    /// The browser sensor (SPEC §9).
    pub browser: Arc<crate::browser::Sensor>,
}

/// The routes that need no token: liveness and readiness of the supervisor.
pub fn open_routes() -> Router<ApiState> {
    Router::new().route("/_supervisor/healthz", get(healthz)).route("/_supervisor/readyz", get(readyz))
}

/// The routes that need the token on the public listener.
pub fn token_routes() -> Router<ApiState> {
    Router::new()
        .route("/_supervisor/status", get(status_route))
        .route("/_supervisor/events", get(events))
        .route("/_supervisor/logs/{name}", get(logs))
        .route("/_supervisor/services/{name}/{action}", post(service_action))
        .route("/_supervisor/env", get(env::get_env).post(env::post_env))
        .merge(pty::routes())
        .route("/_supervisor/metrics", get(metrics))
        .route("/_supervisor/reload", post(reload))
        .merge(browser::routes())
}

/// Routes only the unix socket serves (root's tools).
fn socket_only_routes() -> Router<ApiState> {
    Router::new().route("/_supervisor/token/rotate", post(rotate_token))
}

/// The router served on the unix socket: every route, no token (the socket is 0600).
pub fn socket_router(state: ApiState) -> Router {
    open_routes().merge(token_routes()).merge(socket_only_routes()).fallback(not_found).layer(axum::middleware::map_response(json_errors)).with_state(state).layer(catch_panic())
}

/// A layer that turns a panic in a handler into a JSON 500 for that one request (the
/// panic hook has logged it); the process and every other connection carry on.
pub fn catch_panic() -> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send + 'static>) -> Response> {
    fn answer(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the supervisor hit an internal error serving this request (logged)").into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> _)
}

/// JSON 404 for routes that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// 200 `{"ready":true}`, else 503 `{"ready":false}` (with `reason` when a `required`
/// port guard is not active: the sandbox must not be snapshotted with its ports exposed).
async fn readyz(State(st): State<ApiState>) -> Response {
    if let Some(reason) = st.guard.not_ready_reason() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ready": false, "reason": reason}))).into_response();
    }
    let ready = st.sup.ready();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(serde_json::json!({"ready": ready}))).into_response()
}

async fn status_route(State(st): State<ApiState>) -> Json<status::StatusReport> {
    Json(status::report_async(&st).await)
}

/// SSE: a `snapshot` event with the whole status, then a `service` event per change, each
/// with an `id:`; a reconnect with `Last-Event-ID` gets what it missed instead of a snapshot.
async fn events(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let ring = st.sup.event_ring();
    let render = |n: &crate::sse::Numbered<crate::engine::ServiceStatus>| Event::default().event("service").json_data(&n.item).expect("json");
    if let Some(after) = crate::sse::last_event_id(&headers) {
        return crate::sse::stream(ring, vec![], after, render).into_response();
    }
    // The snapshot is read after the id: a change in between is in both, never in neither.
    let after = ring.last_id();
    let snapshot = status::report_async(&st).await;
    let first = Event::default().event("snapshot").id(after.to_string()).json_data(snapshot).expect("json");
    crate::sse::stream(ring, vec![first], after, render).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    tail: Option<usize>,
    follow: Option<String>,
}

/// The last `tail` lines as JSON `{"name","lines":[...]}`; with `follow=1`, SSE `line`
/// events with `id:` (the line's `seq`), replayed after `Last-Event-ID` on a reconnect.
async fn logs(State(st): State<ApiState>, Path(name): Path<String>, Query(q): Query<LogQuery>, headers: HeaderMap) -> Result<Response, ApiError> {
    let h = st.sup.handle(&name).ok_or_else(|| ApiError::unknown_service(&name))?;
    let n = q.tail.unwrap_or(100);
    let follow = matches!(q.follow.as_deref(), Some("1" | "true" | "yes"));
    if !follow {
        return Ok(Json(serde_json::json!({"name": name, "lines": h.logs.tail(n)})).into_response());
    }
    let after = crate::sse::last_event_id(&headers).unwrap_or_else(|| h.logs.tail_start(n));
    let render = |l: &crate::logs::LogLine| Event::default().event("line").json_data(l).expect("json");
    Ok(crate::sse::stream(h.logs.clone(), vec![], after, render).into_response())
}

/// `POST /_supervisor/services/NAME/{start,stop,restart}` → 202 with the state after the command.
async fn service_action(State(st): State<ApiState>, Path((name, action)): Path<(String, String)>) -> Result<Response, ApiError> {
    let cmd = match action.as_str() {
        "start" => Control::Start,
        "stop" => Control::Stop,
        "restart" => Control::Restart,
        other => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_action", format!("no action {other:?}; use start, stop or restart")))
        }
    };
    let before = st.sup.status(&name).ok_or_else(|| ApiError::unknown_service(&name))?;
    let mut rx = st.sup.subscribe();
    st.sup.control(&name, cmd).await.map_err(|_| ApiError::unknown_service(&name))?;
    // Give the runner a moment to act, so the answer shows the new state.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(s) = rx.recv().await {
            if s.name == name && s.state != before.state {
                break;
            }
        }
    })
    .await;
    let now = st.sup.status(&name).unwrap_or(before);
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"name": name, "action": action, "state": now.state, "pid": now.pid}))).into_response())
}

/// `GET /_supervisor/metrics`: the Prometheus text page, built off the event loop.
async fn metrics(State(st): State<ApiState>) -> Response {
    let sup = st.sup.clone();
    match tokio::task::spawn_blocking(move || crate::metrics::render(&sup)).await {
        Ok(page) => ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], page).into_response(),
        Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the metrics page could not be built (logged)").into_response(),
    }
}

/// `POST /_supervisor/reload`: 200 `{"started","stopped","restarted","unchanged","needs_restart"}`;
/// 400 `invalid_config` with `file`, `key` and `reason` when the file is not valid (nothing changed).
async fn reload(State(st): State<ApiState>) -> Response {
    use crate::reload::ReloadError;
    match st.reload.reload(&st.sup).await {
        Ok(report) => Json(report).into_response(),
        Err(ReloadError::Invalid(e)) => {
            let body = serde_json::json!({"error": {"code": "invalid_config", "message": format!("{e}; nothing was changed"), "file": e.file, "key": e.key, "reason": e.reason}});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(ReloadError::Refused(why)) => ApiError::new(StatusCode::CONFLICT, "reload_refused", format!("{why}; nothing was changed")).into_response(),
    }
}

/// `POST /_supervisor/token/rotate` (socket only): writes a fresh random token to the
/// token file (0600, atomically); answers with the path, never the token.
async fn rotate_token(State(st): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::envfile::write_atomic(&st.token_file, &format!("{token}\n"), None).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token_write_failed", format!("cannot write {}: {e}", st.token_file.display()))
    })?;
    tracing::info!(path = %st.token_file.display(), "token rotated");
    Ok(Json(serde_json::json!({"token_file": st.token_file})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn fetch(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_panicking_handler_ends_only_its_own_request() {
        async fn boom() -> &'static str {
            panic!("a bug in one handler")
        }
        let app: Router = Router::new().route("/boom", get(boom)).route("/_supervisor/healthz", get(healthz)).layer(catch_panic());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        for _ in 0..3 {
            let r = fetch(addr, "/boom").await;
            assert!(r.starts_with("HTTP/1.1 500"), "{r}");
            assert!(r.contains(r#""code":"internal_error""#), "{r}");
            let ok = fetch(addr, "/_supervisor/healthz").await;
            assert!(ok.starts_with("HTTP/1.1 200") && ok.contains(r#""status":"ok""#), "the server keeps serving: {ok}");
        }
    }
}
