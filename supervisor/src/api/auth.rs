//! Token auth of the public control routes: `Authorization: Bearer TOKEN` (or `?token=`
//! on WebSocket upgrades only), compared in constant time with the content of the token
//! file, re-read whenever the file changes. No file or an empty one: every token route
//! answers 401 (fail closed).

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Identity of the token file's current version (inode, size, mtime in ns).
type FileStamp = (u64, u64, i64);

/// The token file and a cache of its trimmed content.
pub struct TokenAuth {
    path: PathBuf,
    cache: Mutex<Option<(FileStamp, Option<String>)>>,
}

impl TokenAuth {
    /// Auth backed by the token file at `path`.
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(TokenAuth { path, cache: Mutex::new(None) })
    }

    /// The current token, or None when the file is missing, unreadable or empty.
    pub fn current(&self) -> Option<String> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let stamp = (meta.ino(), meta.size(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
        let mut cache = self.cache.lock().expect("token cache");
        if let Some((s, tok)) = cache.as_ref() {
            if *s == stamp {
                return tok.clone();
            }
        }
        let tok = std::fs::read_to_string(&self.path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        *cache = Some((stamp, tok.clone()));
        tok
    }

    /// Whether `presented` is the current token (constant time in its content).
    pub fn accepts(&self, presented: &str) -> bool {
        match self.current() {
            Some(tok) => bool::from(tok.as_bytes().ct_eq(presented.as_bytes())),
            None => false,
        }
    }

    /// The token a request presents: the bearer header, or `?token=` on an upgrade.
    pub fn presented(req: &Request) -> Option<String> {
        if let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let mut parts = h.trim().splitn(2, ' ');
            if parts.next().is_some_and(|s| s.eq_ignore_ascii_case("bearer")) {
                return parts.next().map(|t| t.trim().to_string());
            }
        }
        if is_upgrade(req) {
            return query_param(req.uri().query().unwrap_or(""), "token");
        }
        None
    }
}

/// Whether the request asks for a protocol upgrade (WebSocket).
pub fn is_upgrade(req: &Request) -> bool {
    req.headers().contains_key(axum::http::header::UPGRADE)
        && req
            .headers()
            .get_all(axum::http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// The percent-decoded value of `name` in a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Middleware: 401 unless the request presents the current token.
pub async fn require_token(State(auth): State<Arc<TokenAuth>>, req: Request, next: Next) -> Result<Response, ApiError> {
    match TokenAuth::presented(&req) {
        Some(t) if auth.accepts(&t) => Ok(next.run(req).await),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let auth = TokenAuth::new(path.clone());
        assert!(!auth.accepts(""), "no file: nothing is accepted");
        std::fs::write(&path, "  \n").unwrap();
        assert!(!auth.accepts(""), "empty file: nothing is accepted");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        assert!(auth.accepts("s3cret-token"));
        assert!(!auth.accepts("s3cret-toke"), "truncated");
        assert!(!auth.accepts("s3cret-token2"));
        std::fs::write(&path, "other-token-of-another-length").unwrap();
        assert!(auth.accepts("other-token-of-another-length"), "re-read on change");
        assert!(!auth.accepts("s3cret-token"));
    }

    #[test]
    fn query_token_is_decoded() {
        assert_eq!(query_param("a=1&token=x%2By+z", "token").as_deref(), Some("x+y z"));
        assert_eq!(query_param("token=%zz", "token").as_deref(), Some("%zz"));
        assert_eq!(query_param("a=1", "token"), None);
    }
}
