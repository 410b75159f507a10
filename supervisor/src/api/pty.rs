//! The terminal routes (SPEC §8): `POST/GET /_supervisor/pty`, `GET` (WebSocket) and
//! `DELETE /_supervisor/pty/ID`, and `GET /_supervisor/services/NAME/tty` (WebSocket) to
//! join a `tty` service's terminal (what `ctl attach` uses over the socket).

use super::{ApiError, ApiState};
use crate::api::auth::Revocation;
use crate::pty::session::{NewSession, StartError};
use crate::pty::ws::{self, MAX_IN_FRAME};
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

/// Largest `POST /_supervisor/pty` body.
pub const MAX_BODY: usize = 64 << 10;

/// The terminal routes (token routes: behind the token on the public listener).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/_supervisor/pty", get(list).post(create).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .route("/_supervisor/pty/{id}", get(attach).delete(delete))
        .route("/_supervisor/services/{name}/tty", get(attach_service))
}

async fn list(State(st): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"sessions": st.ptys.list()}))
}

/// `POST /_supervisor/pty`: an empty body or a JSON object (`command`, `cwd`, `cols`,
/// `rows`, `env`, all optional) → 201 `{"id"}`.
async fn create(State(st): State<ApiState>, headers: axum::http::HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let req: NewSession = if body.iter().all(u8::is_ascii_whitespace) {
        NewSession::default()
    } else {
        let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.trim_start().to_ascii_lowercase().starts_with("application/json") {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"));
        }
        serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("bad session request: {e}")))?
    };
    match st.ptys.create(req) {
        Ok(id) => Ok((StatusCode::CREATED, Json(serde_json::json!({"id": id}))).into_response()),
        Err(StartError::Invalid(m)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m)),
        Err(StartError::Spawn(m)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "spawn_failed", m)),
        Err(StartError::TooMany) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!("at most {} terminal sessions at once; DELETE one first", crate::pty::session::MAX_SESSIONS),
        )),
        Err(StartError::ShuttingDown) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the supervisor is shutting down")),
    }
}

fn no_session(id: &str) -> ApiError {
    // The id is echoed only when it looks like one (it is attacker-controlled text).
    let shown = if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) { id } else { "(malformed)" };
    ApiError::new(StatusCode::NOT_FOUND, "unknown_session", format!("no terminal session {shown:?}"))
}

/// `GET /_supervisor/pty/ID`: a WebSocket upgrade attaches; a plain GET answers the
/// session as listed.
async fn attach(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    revoked: Option<Extension<Revocation>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let session = st.ptys.get(&id).ok_or_else(|| no_session(&id))?;
    match upgrade {
        Ok(up) => {
            let hub = session.hub.clone();
            let revoked = revoked.map(|Extension(r)| r);
            Ok(up.max_message_size(MAX_IN_FRAME).max_frame_size(MAX_IN_FRAME).on_upgrade(move |socket| ws::serve(socket, hub, revoked)))
        }
        Err(_) => Ok(Json(st.ptys.info(&id).ok_or_else(|| no_session(&id))?).into_response()),
    }
}

/// `DELETE /_supervisor/pty/ID`: hangs the session up (SIGHUP, then SIGKILL after a
/// timeout) and answers once nothing of it is left.
async fn delete(State(st): State<ApiState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let ptys = st.ptys.clone();
    let id2 = id.clone();
    // On a task of its own: a client that hangs up mid-way must not cancel the teardown.
    let found = tokio::spawn(async move { ptys.delete(&id2).await }).await.unwrap_or(false);
    if !found {
        return Err(no_session(&id));
    }
    Ok(Json(serde_json::json!({"id": id, "ended": true})))
}

/// `GET /_supervisor/services/NAME/tty` (WebSocket): joins a `tty` service's terminal.
async fn attach_service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    revoked: Option<Extension<Revocation>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let h = st.sup.handle(&name).ok_or_else(|| ApiError::unknown_service(&name))?;
    let slot = h.tty.as_ref().ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "not_a_tty", format!("service {name:?} does not run under a terminal (set tty = true)")))?;
    let hub = slot.hub().ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "not_running", format!("service {name:?} has not started yet")))?;
    let up = upgrade.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "websocket_required", "this route is a WebSocket"))?;
    let revoked = revoked.map(|Extension(r)| r);
    Ok(up.max_message_size(MAX_IN_FRAME).max_frame_size(MAX_IN_FRAME).on_upgrade(move |socket| ws::serve(socket, hub, revoked)))
}
