//! Env injection (SPEC §5): `GET /_supervisor/env` lists the keys of one scope's env file;
//! `POST /_supervisor/env` validates everything first (keys, values, what Vite can read
//! back, what Linux lets a process start with), merges, writes the file atomically, and
//! schedules restarts of the `env_injection` services whose environment really changed.
//! Two scopes: `app` (the app's `.env`, which Vite reads) and `services` (a root-only
//! file in the runtime dir for secrets only the services need). Values are never logged
//! or echoed.

use super::{ApiError, ApiState};
use crate::engine::Supervisor;
use crate::envfile;
use crate::inject::{Injected, Scope};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::Json;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Largest accepted request body.
pub const MAX_BODY: usize = 256 * 1024;
/// Most keys in `set` and `unset` together.
pub const MAX_KEYS: usize = 512;
/// Largest env file read (the app's lives in a directory the agent owns).
pub const MAX_FILE: u64 = 8 << 20;

/// One env file and the account it is written for.
struct EnvFile {
    path: PathBuf,
    owner: Option<(u32, u32)>,
}

/// Both env files, and the lock that serializes writers.
pub struct EnvStore {
    app: EnvFile,
    services: EnvFile,
    lock: tokio::sync::Mutex<()>,
}

impl EnvStore {
    /// The app's env file at `app` (written as `owner` (uid, gid) when set) and the
    /// services-scope file at `services` (written as ourselves, 0600).
    pub fn new(app: PathBuf, owner: Option<(u32, u32)>, services: PathBuf) -> Self {
        EnvStore { app: EnvFile { path: app, owner }, services: EnvFile { path: services, owner: None }, lock: tokio::sync::Mutex::new(()) }
    }

    fn file(&self, scope: Scope) -> &EnvFile {
        match scope {
            Scope::App => &self.app,
            Scope::Services => &self.services,
        }
    }

    /// The text of one scope's file ("" when it does not exist). Never blocks the event
    /// loop, never follows a symlink, never opens a FIFO or device for reading.
    async fn read(&self, scope: Scope) -> Result<String, ApiError> {
        let path = self.file(scope).path.clone();
        match crate::untrusted::read_regular_async(path.clone(), MAX_FILE).await {
            Ok(t) => Ok(t.unwrap_or_default()),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    /// The injected environment as the files are now. An unreadable file counts as
    /// empty (logged), so a broken `.env` never stops the services from starting.
    pub async fn injected(&self) -> Injected {
        let mut parts = Vec::new();
        for scope in [Scope::App, Scope::Services] {
            parts.push(match self.read(scope).await {
                Ok(t) => envfile::values(&t),
                Err(e) => {
                    tracing::error!("env injection: {}", e.message);
                    Vec::new()
                }
            });
        }
        let services = parts.pop().unwrap_or_default();
        Injected::build(parts.pop().unwrap_or_default(), services)
    }

    /// Applies a validated change to `scope` under the lock, hands the injected
    /// environment after it to the engine (still under the lock, so concurrent writers
    /// publish in order) and returns the services that will restart. With `limit`, a
    /// change after which a variable would be left out of the injection that was not
    /// before (a value too large for a process environment, or a total past 1 MiB)
    /// refuses the whole change, file untouched.
    async fn apply(&self, sup: &Supervisor, scope: Scope, set: &[(String, String)], unset: &[String]) -> Result<Vec<String>, ApiError> {
        let _guard = self.lock.lock().await;
        let existing = self.read(scope).await?;
        // The other scope only feeds the limit check: unreadable counts as empty (as at start).
        let other_scope = if scope == Scope::App { Scope::Services } else { Scope::App };
        let other = self.read(other_scope).await.unwrap_or_else(|e| {
            tracing::error!("env injection: {}", e.message);
            String::new()
        });
        let merged = envfile::merge(&existing, set, unset).map_err(env_error)?;
        let build = |target: &str| match scope {
            Scope::App => Injected::build(envfile::values(target), envfile::values(&other)),
            Scope::Services => Injected::build(envfile::values(&other), envfile::values(target)),
        };
        let (before, injected) = (build(&existing), build(&merged));
        if sup.has_env_injection() {
            if let Some(d) = injected.dropped.iter().find(|d| !before.dropped.contains(d)) {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "env_too_large", format!("{} cannot be injected: {}", d.key, d.reason)));
            }
        }
        if merged != existing {
            let file = self.file(scope);
            let (path, owner) = (file.path.clone(), file.owner);
            tokio::task::spawn_blocking(move || envfile::write_atomic(&path, &merged, owner))
                .await
                .map_err(|e| io_error("write", &file.path, std::io::Error::other(e.to_string())))?
                .map_err(|e| io_error("write", &file.path, e))?;
        }
        sup.set_injected_env(injected);
        Ok(sup.env_changed())
    }
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "env_file_error", format!("cannot {what} {}: {e}", path.display()))
}

fn env_error(e: envfile::EnvError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}

fn scope_of(s: Option<&str>) -> Result<Scope, ApiError> {
    match s {
        None => Ok(Scope::App),
        Some(s) => Scope::parse(s)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_scope", format!("unknown scope {:?}; use \"app\" or \"services\"", s.chars().take(32).collect::<String>()))),
    }
}

/// The body of `POST /_supervisor/env`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// `GET /_supervisor/env[?scope=services]`: `{"keys":[...]}`, names only.
pub async fn get_env(State(st): State<ApiState>, uri: Uri) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = scope_of(crate::api::auth::query_param(uri.query().unwrap_or(""), "scope").as_deref())?;
    let text = st.env.read(scope).await?;
    Ok(Json(serde_json::json!({"keys": envfile::keys(&text), "scope": scope.as_str()})))
}

/// `POST /_supervisor/env`.
pub async fn post_env(st: State<ApiState>, headers: HeaderMap, body: Body) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let r = post_env_inner(st, headers, body).await;
    crate::metrics::env_write(match &r {
        Ok(_) => "ok",
        Err(e) => e.code,
    });
    r
}

/// Past [`MAX_BODY`], what is still read and thrown away before the 413 goes out.
const DRAIN_BYTES: usize = 4 << 20;
/// …and for how long at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The body, or `None` past [`MAX_BODY`] (after [`drain`]); nothing past the limit is kept.
async fn read_bounded(mut body: Body) -> Option<bytes::Bytes> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else { continue };
        if buf.len() + data.len() > MAX_BODY {
            drain(body).await;
            return None;
        }
        buf.extend_from_slice(&data);
    }
    Some(buf.freeze())
}

/// Reads and throws away a bounded amount more of a refused body before the 413 goes out
/// (nginx's lingering close): closing a socket that still holds unread data resets it, and
/// the reset can destroy the 413 before the client reads it.
async fn drain(mut body: Body) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(f)) = body.frame().await {
            seen += f.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

async fn post_env_inner(State(st): State<ApiState>, headers: HeaderMap, body: Body) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json"));
    }
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body must be at most {MAX_BODY} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES as u64) {
            drain(body).await;
        }
        return Err(too_large());
    }
    let bytes = read_bounded(body).await.ok_or_else(too_large)?;
    let change: EnvChange = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json messages quote the offending token only for type errors on keys/structure;
        // report position and category, never the text.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "the body must be {{\"set\":{{\"KEY\":\"value\"}},\"unset\":[\"KEY\"],\"scope\":\"app\"}} ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    let scope = scope_of(change.scope.as_deref())?;
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
    let restarted = st.env.apply(&st.sup, scope, &set, &change.unset).await?;
    tracing::info!(scope = scope.as_str(), set = set.len(), unset = change.unset.len(), "env file updated");
    let set_keys: Vec<&String> = set.iter().map(|(k, _)| k).collect();
    Ok((StatusCode::OK, Json(serde_json::json!({"set": set_keys, "unset": change.unset, "restarted": restarted}))))
}
