//! Secret paths the proxy refuses itself (SPEC §5): the dev server is on the public
//! internet and Vite's own `server.fs.deny` has had public bypasses (CVE-2025-30208,
//! -31125, -31486, -32395), so a request naming a secret file never reaches Vite.
//!
//! The path (never the query: `?raw`, `?import` and friends only change how Vite serves
//! a file, not which one) is percent-decoded again and again until it stops changing, so
//! `%2e`, `%252e`, `%25252e` all count; `\` is a separator too and `;params` are cut off
//! each segment. Refused: a segment `.env`, `.env.*`, `.git`, `.npmrc` or `.ssh` (any
//! case); a `..` that climbs above the root; a `/@fs/` path that, after `.` and `..` are
//! resolved, lies outside the app dir (and Vite's own client dir); a path or `/@id/` id
//! naming an existing file outside the app by its absolute path; and the configured env
//! file by any name. Vite's
//! own paths (`/node_modules/.vite/...`, `/@vite/client`, `/@react-refresh`, `/@id/...`)
//! name none of these and pass.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Dot names whose segment is refused (compared ASCII case-insensitively).
const SECRET_NAMES: &[&str] = &[".env", ".git", ".npmrc", ".ssh"];
/// More decoding rounds than any real client needs: a path still changing after this is refused.
const MAX_DECODE_ROUNDS: usize = 8;
/// Refusals logged one by one before only every [`LOG_EVERY`]th is (a scan must not flood the log).
const LOG_FIRST: u64 = 100;
/// See [`LOG_FIRST`].
const LOG_EVERY: u64 = 100;

/// Why a path was refused (for the log; the client only ever sees a 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A segment names a dotfile that holds secrets (`.env`, `.git`, ...).
    SecretName,
    /// A `..` climbs above the root.
    AboveRoot,
    /// A `/@fs/` path outside the app dir.
    OutsideApp,
    /// The configured env file, under another spelling.
    EnvFile,
    /// Still changing after [`MAX_DECODE_ROUNDS`] rounds of percent-decoding.
    OverEncoded,
}

impl Refusal {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SecretName => "secret_name",
            Refusal::AboveRoot => "above_root",
            Refusal::OutsideApp => "fs_outside_app",
            Refusal::EnvFile => "env_file",
            Refusal::OverEncoded => "over_encoded",
        }
    }
}

/// The rules for one app: its dir (for `/@fs/`) and its env file; counts refusals.
pub struct SecretPaths {
    app_dir: PathBuf,
    env_file: PathBuf,
    refused: AtomicU64,
}

impl SecretPaths {
    /// Rules for the app in `app_dir` whose env file is `env_file` (both absolute).
    pub fn new(app_dir: &Path, env_file: &Path) -> Self {
        SecretPaths { app_dir: lexical(app_dir), env_file: lexical(env_file), refused: AtomicU64::new(0) }
    }

    /// How many requests were refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Why the request path `path` (without its query) must not be forwarded, if it must not.
    pub fn check(&self, path: &str) -> Option<Refusal> {
        let Some(decoded) = decode_fully(path.as_bytes()) else { return Some(Refusal::OverEncoded) };
        let segments: Vec<&[u8]> = decoded.split(|b| matches!(b, b'/' | b'\\')).map(|s| s.split(|b| *b == b';').next().unwrap_or(s)).collect();
        if segments.iter().any(|s| is_secret_name(s)) {
            return Some(Refusal::SecretName);
        }
        let name = |s: &&[u8]| String::from_utf8_lossy(s).into_owned();
        let mut meaningful = segments.iter().filter(|s| !s.is_empty() && **s != b".");
        if segments.iter().any(|s| s.eq_ignore_ascii_case(b"@fs")) {
            // Only `/@fs/<absolute path>` is Vite's; `..` may not climb over the `@fs`
            // itself (`/@fs/app/../../etc`), nor may `@fs` turn up anywhere else.
            if !meaningful.next().is_some_and(|s| s.eq_ignore_ascii_case(b"@fs")) {
                return Some(Refusal::OutsideApp);
            }
            let stack = match normalise(meaningful) {
                Ok(stack) => stack,
                Err(r) => return Some(r),
            };
            let fs: PathBuf = std::iter::once("/".to_string()).chain(stack.iter().map(name)).collect();
            if fs == self.env_file {
                return Some(Refusal::EnvFile);
            }
            return (!self.fs_roots().iter().any(|root| fs.starts_with(root))).then_some(Refusal::OutsideApp);
        }
        let stack = match normalise(meaningful) {
            Ok(stack) => stack,
            Err(r) => return Some(r),
        };
        let under_app: PathBuf = stack.iter().fold(self.app_dir.clone(), |p, s| p.join(name(s)));
        if under_app == self.env_file {
            return Some(Refusal::EnvFile);
        }
        // Vite also takes a URL (or an `/@id/` id) that is not a file under the app for an
        // absolute file system path (`/etc/passwd?raw` reaches its `fs.allow` check), so an
        // existing file outside the app is refused here too. Directories pass (`/home` can
        // be an app route); a file the app itself has at that path passes.
        let id = if stack.first().is_some_and(|s| s.eq_ignore_ascii_case(b"@id")) { &stack[1..] } else { &stack[..] };
        let abs: PathBuf = std::iter::once("/".to_string()).chain(id.iter().map(name)).collect();
        // Cheapest first: most paths are no file at `/`, one stat.
        if !id.is_empty() && abs.is_file() && !under_app.exists() && !self.fs_roots().iter().any(|root| abs.starts_with(root)) {
            return Some(if abs == self.env_file { Refusal::EnvFile } else { Refusal::OutsideApp });
        }
        None
    }

    /// Where `/@fs/` may point: the app dir (as configured and as resolved), and the
    /// directory of Vite's own browser client, which Vite serves through `/@fs/` when its
    /// package resolves outside the app (a linked or hoisted `node_modules`). Resolved
    /// afresh each time (only `/@fs/` requests ask), so an `npm install` is followed.
    fn fs_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.app_dir.clone()];
        roots.extend(std::fs::canonicalize(&self.app_dir).ok());
        roots.extend(std::fs::canonicalize(self.app_dir.join("node_modules/vite/dist/client")).ok());
        roots
    }

    /// [`SecretPaths::check`], counting and logging each refusal (the path only, cut
    /// short; never the query, which may carry a token).
    pub fn refuse(&self, path: &str) -> Option<Refusal> {
        let why = self.check(path)?;
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= LOG_FIRST || n % LOG_EVERY == 0 {
            let shown: String = path.chars().take(200).collect();
            tracing::warn!(path = %shown, reason = why.as_str(), refused_total = n, "refused a secret path without forwarding it");
        }
        Some(why)
    }
}

/// Resolves `..` segments (`""` and `.` are already filtered out); climbing above the
/// root is refused.
fn normalise<'a>(segments: impl Iterator<Item = &'a &'a [u8]>) -> Result<Vec<&'a [u8]>, Refusal> {
    let mut stack = Vec::new();
    for s in segments {
        if *s == b".." {
            stack.pop().ok_or(Refusal::AboveRoot)?;
        } else {
            stack.push(*s);
        }
    }
    Ok(stack)
}

/// Whether a segment is a secret dot name: `.env`, `.env.*`, `.git`, `.npmrc`, `.ssh`.
fn is_secret_name(seg: &[u8]) -> bool {
    SECRET_NAMES.iter().any(|n| seg.eq_ignore_ascii_case(n.as_bytes())) || (seg.len() > 5 && seg[..5].eq_ignore_ascii_case(b".env."))
}

/// Percent-decodes until nothing changes; None when it still changes after [`MAX_DECODE_ROUNDS`].
fn decode_fully(s: &[u8]) -> Option<Vec<u8>> {
    let mut cur = s.to_vec();
    for _ in 0..MAX_DECODE_ROUNDS {
        let next = decode_once(&cur);
        if next == cur {
            return Some(cur);
        }
        cur = next;
    }
    None
}

/// One round of `%XX` decoding (a `%` not followed by two hex digits stays as it is).
fn decode_once(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `p` with `.` and `..` resolved lexically (no file system access).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> SecretPaths {
        SecretPaths::new(Path::new("/app"), Path::new("/app/.env"))
    }

    #[test]
    fn secret_names_are_refused_however_encoded() {
        let r = rules();
        for p in [
            "/.env",
            "/.ENV",
            "/.env.local",
            "/.Env.production.local",
            "/%2eenv",
            "/%2Eenv",
            "/%252eenv",
            "/%25252e%2565nv",
            "//.env",
            "/src/%2e%2e/.env",
            "/src/..%2f.env",
            "/src/..%5c.env",
            "/src\\..\\.env",
            "/.env;x=1",
            "/.git/config",
            "/.git",
            "/a/b/.git/HEAD",
            "/.npmrc",
            "/.ssh/id_rsa",
            "/%2essh/id_rsa",
            "/@fs/app/.env",
            "/@fs/app/.env.local",
            "/@id/__x00__/app/.env",
            "/node_modules/.git/x",
        ] {
            assert_eq!(r.check(p), Some(Refusal::SecretName), "{p}");
        }
    }

    #[test]
    fn fs_paths_outside_the_app_and_climbs_are_refused() {
        let r = rules();
        for p in ["/@fs/etc/passwd", "/@fs/app/../etc/passwd", "/src/../@fs/app/../../etc", "/x/@fs/app/a", "/@fs/app/%2e%2e/run/supervisor/token", "/@fs/application/x", "/@fs/", "/%40fs/etc/passwd", "/src/../@fs/etc/passwd", "/@FS/etc/passwd"] {
            assert_eq!(r.check(p), Some(Refusal::OutsideApp), "{p}");
        }
        for p in ["/..", "/../etc/passwd", "/src/../../etc/passwd", "/%2e%2e/x", "/@fs/app/../../../x", "/@fs/..", "/@fs/app/../../etc/passwd", "/@fs/app/%2e%2e/%2e%2e/etc/passwd"] {
            assert_eq!(r.check(p), Some(Refusal::AboveRoot), "{p}");
        }
        assert_eq!(r.check(&format!("/%{}2eenv", "25".repeat(12))), Some(Refusal::OverEncoded));
        assert_eq!(r.check(&format!("/%{}2eenv", "25".repeat(5))), Some(Refusal::SecretName));
    }

    #[test]
    fn vites_own_client_is_allowed_where_it_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let (app, pkg) = (dir.path().join("app"), dir.path().join("store/vite"));
        std::fs::create_dir_all(pkg.join("dist/client")).unwrap();
        std::fs::create_dir_all(app.join("node_modules")).unwrap();
        std::os::unix::fs::symlink(&pkg, app.join("node_modules/vite")).unwrap();
        let r = SecretPaths::new(&app, &app.join(".env"));
        let client = std::fs::canonicalize(pkg.join("dist/client")).unwrap();
        assert_eq!(r.check(&format!("/@fs{}/env.mjs", client.display())), None);
        assert_eq!(r.check(&format!("/@fs{}/../package.json", client.display())), Some(Refusal::OutsideApp));
        assert_eq!(r.check(&format!("/@fs{}/x", pkg.display())), Some(Refusal::OutsideApp));
    }

    #[test]
    fn files_outside_the_app_are_refused_by_their_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(app.join("src")).unwrap();
        std::fs::write(app.join("src/main.tsx"), "").unwrap();
        let secret = dir.path().join("run/token");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, "t").unwrap();
        let r = SecretPaths::new(&app, &app.join(".env"));
        for p in ["/etc/passwd".to_string(), "/etc/passwd?raw".replace("?raw", ""), format!("{}", secret.display()), format!("/@id/{}", secret.display()), "/@id//etc/passwd".into(), "/@id/%2Fetc%2Fpasswd".into(), "/proc/self/environ".into()] {
            assert_eq!(r.check(&p), Some(Refusal::OutsideApp), "{p}");
        }
        for p in ["/src/main.tsx", "/home", "/usr/", "/does/not/exist", "/@id/react", "/@vite/client", "/"] {
            assert_eq!(r.check(p), None, "{p}");
        }
        // The app's own file at the same path wins: it is what Vite serves.
        std::fs::create_dir_all(app.join("etc")).unwrap();
        std::fs::write(app.join("etc/passwd"), "").unwrap();
        assert_eq!(r.check("/etc/passwd"), None);
    }

    #[test]
    fn the_env_file_is_refused_under_any_name() {
        let r = SecretPaths::new(Path::new("/app"), Path::new("/app/config/secrets.txt"));
        assert_eq!(r.check("/config/secrets.txt"), Some(Refusal::EnvFile));
        assert_eq!(r.check("/config/./x/../secrets.txt"), Some(Refusal::EnvFile));
        assert_eq!(r.check("/@fs/app/config/secrets.txt"), Some(Refusal::EnvFile));
        assert_eq!(r.check("/config/other.txt"), None);
    }

    #[test]
    fn vite_and_app_paths_pass() {
        let r = rules();
        for p in [
            "/",
            "/index.html",
            "/@vite/client",
            "/@vite/env",
            "/@react-refresh",
            "/@id/react",
            "/@id/__x00__react/jsx-dev-runtime",
            "/node_modules/.vite/deps/react.js",
            "/node_modules/.vite/deps/react-dom_client.js",
            "/src/main.tsx",
            "/src/App.tsx",
            "/src/index.css",
            "/@fs/app/src/main.tsx",
            "/@fs/app/node_modules/vite/dist/client/env.mjs",
            "/environment",
            "/.envoy",
            "/env/.well-known/x",
            "/.gitignore",
            "/a%20b",
            "/src/./App.tsx",
            "/src/x/../App.tsx",
            "/100%",
            "/%zz",
        ] {
            assert_eq!(r.check(p), None, "{p}");
        }
    }

    #[test]
    fn refusals_are_counted() {
        let r = rules();
        assert_eq!(r.refuse("/.env"), Some(Refusal::SecretName));
        assert_eq!(r.refuse("/ok"), None);
        assert_eq!(r.refuse("/.git/config"), Some(Refusal::SecretName));
        assert_eq!(r.refused(), 2);
    }
}
