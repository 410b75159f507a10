//! Env injection (SPEC §5): `GET /_supervisor/env` lists the keys of the app's `.env`;
//! `POST /_supervisor/env` validates everything first, merges, writes the file atomically,
//! then restarts the services with `env_injection`. Values are never logged or echoed.

use super::{ApiError, ApiState};
use crate::engine::{Control, State as SvcState};
use crate::envfile;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Largest accepted request body.
pub const MAX_BODY: usize = 256 * 1024;
/// Most keys in `set` and `unset` together.
pub const MAX_KEYS: usize = 512;

/// The env file, its owner, and the lock that serializes writers.
pub struct EnvStore {
    path: PathBuf,
    owner: Option<(u32, u32)>,
    lock: tokio::sync::Mutex<()>,
}

impl EnvStore {
    /// The env file at `path`, written as `owner` (uid, gid) when set.
    pub fn new(path: PathBuf, owner: Option<(u32, u32)>) -> Self {
        EnvStore { path, owner, lock: tokio::sync::Mutex::new(()) }
    }

    fn read(&self) -> Result<String, ApiError> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io_error("read", &self.path, e)),
        }
    }

    /// The variables the file defines, as the app would read them.
    pub fn values(&self) -> Vec<(String, String)> {
        self.read().map(|t| envfile::values(&t)).unwrap_or_default()
    }

    /// Applies a validated change under the lock; returns the file's new variables.
    pub async fn apply(&self, set: &[(String, String)], unset: &[String]) -> Result<Vec<(String, String)>, ApiError> {
        let _guard = self.lock.lock().await;
        let existing = self.read()?;
        let merged = envfile::merge(&existing, set, unset).map_err(env_error)?;
        if merged != existing {
            envfile::write_atomic(&self.path, &merged, self.owner).map_err(|e| io_error("write", &self.path, e))?;
        }
        Ok(envfile::values(&merged))
    }
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "env_file_error", format!("cannot {what} {}: {e}", path.display()))
}

fn env_error(e: envfile::EnvError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}

/// The body of `POST /_supervisor/env`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
}

/// `GET /_supervisor/env`: `{"keys":[...]}`, names only.
pub async fn get_env(State(st): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let text = st.env.read()?;
    Ok(Json(serde_json::json!({"keys": envfile::keys(&text)})))
}

/// `POST /_supervisor/env`.
pub async fn post_env(State(st): State<ApiState>, headers: HeaderMap, body: Body) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json"));
    }
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body must be at most {MAX_BODY} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes = http_body_util::Limited::new(body, MAX_BODY).collect().await.map_err(|_| too_large())?.to_bytes();
    let change: EnvChange = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json messages quote the offending token only for type errors on keys/structure;
        // report position and category, never the text.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body must be {{\"set\":{{\"KEY\":\"value\"}},\"unset\":[\"KEY\"]}} ({:?} error at line {}, column {})", e.classify(), e.line(), e.column()),
        )
    })?;
    if change.set.len() + change.unset.len() > MAX_KEYS {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "too_many_keys", format!("at most {MAX_KEYS} keys in set and unset together")));
    }
    let set: Vec<(String, String)> = change.set.into_iter().collect();
    // Validate everything before touching the file (merge validates again, all or nothing).
    for (k, v) in &set {
        envfile::validate_key(k).map_err(env_error)?;
        if v.contains('\0') {
            return Err(env_error(envfile::EnvError::InvalidValue { key: k.clone() }));
        }
    }
    for k in &change.unset {
        envfile::validate_key(k).map_err(env_error)?;
    }
    let values = st.env.apply(&set, &change.unset).await?;
    tracing::info!(set = set.len(), unset = change.unset.len(), "env file updated");
    st.sup.set_injected_env(values);
    let mut restarted = Vec::new();
    for (name, h) in st.sup.services() {
        if !h.spec.env_injection || h.spec.disabled {
            continue;
        }
        let running = st.sup.status(name).is_some_and(|s| !matches!(s.state, SvcState::Stopped | SvcState::Failed));
        if running {
            let _ = st.sup.control(name, Control::Restart).await;
            restarted.push(name.clone());
        }
    }
    let set_keys: Vec<&String> = set.iter().map(|(k, _)| k).collect();
    Ok((StatusCode::OK, Json(serde_json::json!({"set": set_keys, "unset": change.unset, "restarted": restarted}))))
}
