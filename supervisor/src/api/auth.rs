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

/// Identity of the token file's current version (inode, size, mtime and ctime in ns).
/// ctime changes on every write even when a same-size rewrite keeps the mtime tick.
type FileStamp = (u64, u64, i64, i64);

/// A stamp younger than this is not trusted: two writes within one timestamp tick of
/// the file system (coarse clocks tick every few ms, some every second) look alike.
const YOUNG: std::time::Duration = std::time::Duration::from_secs(2);
/// How often open token-authorised WebSockets have the token file checked for a change.
const WATCH_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// The token file and a cache of its trimmed content.
pub struct TokenAuth {
    path: PathBuf,
    cache: Mutex<Option<(FileStamp, Option<String>)>>,
    /// Bumped whenever the token changes; WebSockets authorised before a bump end.
    generation: tokio::sync::watch::Sender<u64>,
    watching: std::sync::atomic::AtomicBool,
}

impl TokenAuth {
    /// Auth backed by the token file at `path`.
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(TokenAuth { path, cache: Mutex::new(None), generation: tokio::sync::watch::Sender::new(0), watching: false.into() })
    }

    /// The current token, or None when the file is missing, unreadable or empty.
    pub fn current(&self) -> Option<String> {
        self.current_at().0
    }

    /// The current token and the generation it belongs to (read under one lock).
    fn current_at(&self) -> (Option<String>, u64) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        let stamp = std::fs::metadata(&self.path).ok().map(|m| {
            let (mtime, ctime) = (m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ctime() * 1_000_000_000 + m.ctime_nsec());
            let young = now - mtime.max(ctime) < YOUNG.as_nanos() as i64;
            ((m.ino(), m.size(), mtime, ctime), young)
        });
        let mut cache = self.cache.lock().expect("token cache");
        if let (Some((s, tok)), Some((stamp, false))) = (cache.as_ref(), stamp) {
            if *s == stamp {
                return (tok.clone(), *self.generation.borrow());
            }
        }
        let tok = stamp.and_then(|_| std::fs::read_to_string(&self.path).ok()).map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        let before = cache.as_ref().map(|(_, t)| t.clone());
        if before.as_ref() != Some(&tok) {
            self.generation.send_modify(|g| *g += 1);
        }
        *cache = Some((stamp.map_or((0, 0, 0, 0), |(s, _)| s), tok.clone()));
        (tok, *self.generation.borrow())
    }

    /// Whether `presented` is the current token (constant time in its content).
    pub fn accepts(&self, presented: &str) -> bool {
        self.accepted_at(presented).is_some()
    }

    /// The token generation at which `presented` was accepted, if it was.
    fn accepted_at(&self, presented: &str) -> Option<u64> {
        match self.current_at() {
            (Some(tok), at) => bool::from(tok.as_bytes().ct_eq(presented.as_bytes())).then_some(at),
            (None, _) => None,
        }
    }

    /// The token a request presents: the bearer header, or `?token=` on a WebSocket upgrade.
    pub fn presented(req: &Request) -> Option<String> {
        if let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let mut parts = h.trim().splitn(2, ' ');
            if parts.next().is_some_and(|s| s.eq_ignore_ascii_case("bearer")) {
                return parts.next().map(|t| t.trim().to_string());
            }
        }
        if is_websocket_upgrade(req) {
            return query_param(req.uri().query().unwrap_or(""), "token");
        }
        None
    }

    /// A handle that resolves once the token is no longer the one accepted at generation
    /// `at`; starts the watcher that notices a change even when no request comes in.
    fn revocation(self: &Arc<Self>, at: u64) -> Revocation {
        if !self.watching.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(WATCH_PERIOD);
                while let Some(auth) = weak.upgrade() {
                    if auth.generation.receiver_count() > 0 {
                        auth.current();
                    }
                    drop(auth);
                    tick.tick().await;
                }
            });
        }
        Revocation { rx: self.generation.subscribe(), at }
    }
}

/// Attached to an authorised WebSocket upgrade: the proxy ends the spliced connection
/// when [`Revocation::revoked`] resolves (the token changed since it was accepted).
#[derive(Clone)]
pub struct Revocation {
    rx: tokio::sync::watch::Receiver<u64>,
    at: u64,
}

impl Revocation {
    /// Resolves when the token has changed since the upgrade was authorised.
    pub async fn revoked(mut self) {
        let at = self.at;
        let _ = self.rx.wait_for(|g| *g != at).await;
    }
}

/// Whether the request is a WebSocket upgrade: `Upgrade: websocket` (case-insensitive,
/// among the listed protocols) and `Connection: upgrade`. Only then may `?token=` count.
pub fn is_websocket_upgrade(req: &Request) -> bool {
    is_upgrade(req)
        && req
            .headers()
            .get_all(axum::http::header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
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

/// Middleware: 401 unless the request presents the current token. A WebSocket upgrade
/// carries a [`Revocation`] so that rotating the token ends it.
pub async fn require_token(State(auth): State<Arc<TokenAuth>>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    match TokenAuth::presented(&req).and_then(|t| auth.accepted_at(&t)) {
        Some(at) => {
            if is_websocket_upgrade(&req) {
                let r = auth.revocation(at);
                req.extensions_mut().insert(r);
            }
            Ok(next.run(req).await)
        }
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

    /// Sets a file's mtime (the coarse clock of some file systems, made certain).
    fn set_mtime(path: &std::path::Path, secs: i64) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let t = [libc::timespec { tv_sec: secs, tv_nsec: 0 }, libc::timespec { tv_sec: secs, tv_nsec: 0 }];
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) }, 0);
    }

    #[test]
    fn a_same_size_rewrite_within_one_mtime_tick_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let auth = TokenAuth::new(path.clone());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        // Same inode, same size, same mtime: only ctime (or the young-stamp rule) tells.
        for (i, mtime) in [now, now - 3600].into_iter().enumerate() {
            let (a, b) = (format!("token-aaaa-{i}"), format!("token-bbbb-{i}"));
            std::fs::write(&path, &a).unwrap();
            set_mtime(&path, mtime);
            assert!(auth.accepts(&a));
            std::fs::write(&path, &b).unwrap();
            set_mtime(&path, mtime);
            assert!(auth.accepts(&b), "the new token counts at once (mtime {mtime})");
            assert!(!auth.accepts(&a), "the old token is refused at once (mtime {mtime})");
        }
    }

    fn request(headers: &[(&str, &str)], uri: &str) -> Request {
        let mut b = axum::http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn query_token_counts_only_on_websocket_upgrades() {
        let uri = "/_supervisor/status?token=t0k";
        let none: &[&[(&str, &str)]] = &[
            &[],
            &[("upgrade", "h2c"), ("connection", "upgrade")],
            &[("upgrade", "websocket")],
            &[("connection", "upgrade")],
            &[("upgrade", "websocketx"), ("connection", "Upgrade")],
        ];
        for h in none {
            assert_eq!(TokenAuth::presented(&request(h, uri)), None, "{h:?}");
        }
        let some: &[&[(&str, &str)]] =
            &[&[("upgrade", "websocket"), ("connection", "upgrade")], &[("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade")], &[("upgrade", "h2c, websocket"), ("connection", "upgrade")]];
        for h in some {
            assert_eq!(TokenAuth::presented(&request(h, uri)).as_deref(), Some("t0k"), "{h:?}");
        }
        assert_eq!(TokenAuth::presented(&request(&[("authorization", "Bearer abc")], uri)).as_deref(), Some("abc"));
    }

    #[tokio::test]
    async fn a_token_change_revokes_what_it_authorised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token").unwrap();
        let auth = TokenAuth::new(path.clone());
        let at = auth.accepted_at("first-token").expect("accepted");
        let r = auth.revocation(at);
        let same = auth.revocation(auth.accepted_at("first-token").unwrap());
        // Not revoked while the token stays (a rewrite with the same content is no change).
        std::fs::write(&path, "first-token").unwrap();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(1200), r.clone().revoked()).await.is_err(), "revoked without a change");
        // Changed with no request coming in: the watcher notices within a period or two.
        std::fs::write(&path, "second-token").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), r.revoked()).await.expect("revoked after the change");
        tokio::time::timeout(std::time::Duration::from_secs(5), same.revoked()).await.expect("every handle of the old token");
        let fresh = auth.revocation(auth.accepted_at("second-token").unwrap());
        assert!(tokio::time::timeout(std::time::Duration::from_millis(1200), fresh.clone().revoked()).await.is_err(), "a handle of the new token stays");
        // Removing the file (fail closed) revokes too.
        std::fs::remove_file(&path).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), fresh.revoked()).await.expect("revoked when the file is gone");
        assert!(!auth.accepts("second-token"));
    }

    #[test]
    fn query_token_is_decoded() {
        assert_eq!(query_param("a=1&token=x%2By+z", "token").as_deref(), Some("x+y z"));
        assert_eq!(query_param("token=%zz", "token").as_deref(), Some("%zz"));
        assert_eq!(query_param("a=1", "token"), None);
    }
}
