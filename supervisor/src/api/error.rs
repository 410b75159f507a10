//! API errors: JSON `{"error":{"code","message"}}` with an HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the control API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// Human explanation (never holds a secret value).
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// 404 for an unknown service.
    pub fn unknown_service(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_service", format!("no service named {name:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// Largest rejection text carried over into the JSON message.
const MAX_REJECTION_TEXT: usize = 1024;

/// Response mapper for the control routes: axum's own rejections (a path segment or query
/// that does not parse, a wrong method, a bad body) answer in plain text or with an empty
/// body; this turns every such error into the JSON shape with the same status. Answers
/// that already are JSON, and successes, pass unchanged. Never applied to proxied answers.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    use http_body_util::BodyExt;
    let text = match http_body_util::Limited::new(resp.into_body(), MAX_REJECTION_TEXT).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    ApiError::new(status, code, message).into_response()
}
