//! Shell sessions (`/_supervisor/pty`): start, list, end; each outlives its clients for
//! `pty_idle` after the last one detached, and all end at shutdown.
//!
//! Timers use Tokio's monotonic clock, so a wall-clock jump (a VM resume) times nothing
//! out; and an idle deadline that falls inside a resume grace period is pushed back, so a
//! client that reconnects after the resume still finds its session.

use super::hub::{Hub, Size};
use super::kill::{end_session, PTY_MARKER};
use super::term::{self, Owner};
use crate::engine::reaper::{now_ms, ExitInfo, Reaper};
use crate::engine::spawn::{RunAs, SUPERVISOR_MARKER};
use crate::engine::Supervisor;
use indexmap::IndexMap;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Most sessions at once (exited ones included until they are removed).
pub const MAX_SESSIONS: usize = 32;
/// How long to wait for a shell's last output after it exited.
const DRAIN: Duration = Duration::from_millis(500);
/// Longest wait for a session to end (hangup, kill, drain: about 5 s in the worst case).
const END_LIMIT: Duration = Duration::from_secs(15);

/// What a new session runs: everything optional (SPEC §8).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// argv; default the user's login shell.
    pub command: Option<Vec<String>>,
    /// Working directory; default the app dir; relative paths are under it.
    pub cwd: Option<String>,
    /// Initial columns (default 80).
    pub cols: Option<u64>,
    /// Initial rows (default 24).
    pub rows: Option<u64>,
    /// Extra environment.
    pub env: Option<IndexMap<String, String>>,
}

/// Why a session could not be started.
#[derive(Debug)]
pub enum StartError {
    /// Bad input (400).
    Invalid(String),
    /// The cap is reached (429).
    TooMany,
    /// The supervisor is shutting down (503).
    ShuttingDown,
    /// The process could not be spawned (400: the command or cwd is wrong).
    Spawn(String),
}

/// A session as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Its id.
    pub id: String,
    /// What it runs.
    pub command: Vec<String>,
    /// The shell's pid (its session and process group id).
    pub pid: i32,
    /// Window columns.
    pub cols: u16,
    /// Window rows.
    pub rows: u16,
    /// When it started (Unix ms).
    pub created_at: u64,
    /// Clients attached now.
    pub attached: usize,
    /// How the shell ended, once it has.
    pub exited: Option<ExitInfo>,
}

/// One session.
pub struct Session {
    id: String,
    command: Vec<String>,
    pid: i32,
    created_at: u64,
    /// Its terminal's fan-out.
    pub hub: Arc<Hub>,
    exited: Mutex<Option<ExitInfo>>,
    end: Notify,
    done: watch::Sender<bool>,
}

impl Session {
    fn info(&self) -> SessionInfo {
        let size = self.hub.size();
        SessionInfo {
            id: self.id.clone(),
            command: self.command.clone(),
            pid: self.pid,
            cols: size.cols,
            rows: size.rows,
            created_at: self.created_at,
            attached: self.hub.attached(),
            exited: *self.exited.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Who sessions run as and where.
pub struct SessionDefaults {
    /// The app dir (default cwd).
    pub app_dir: PathBuf,
    /// The account to switch to (when the supervisor is root and a service user is set).
    pub run_as: Option<RunAs>,
    /// That account's (or our own) login shell, home and name.
    pub shell: String,
    /// Home directory.
    pub home: String,
    /// Account name.
    pub user: String,
    /// How long a session outlives its last client.
    pub idle: Duration,
}

impl SessionDefaults {
    /// The defaults for `service_user` (None or empty: the supervisor's own account).
    pub fn new(app_dir: PathBuf, service_user: Option<&str>, idle: Duration) -> Result<Self, String> {
        let run_as = match service_user.filter(|u| !u.is_empty()) {
            Some(u) => RunAs::lookup(u)?,
            None => None,
        };
        let account = match &run_as {
            Some(r) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(r.uid())),
            None => nix::unistd::User::from_uid(nix::unistd::geteuid()),
        }
        .ok()
        .flatten();
        let shell = account
            .as_ref()
            .map(|a| a.shell.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty() && !s.ends_with("/nologin") && !s.ends_with("/false") && std::path::Path::new(s).exists())
            .unwrap_or_else(|| "/bin/sh".into());
        let home = account.as_ref().map(|a| a.dir.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into());
        let user = account.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        Ok(SessionDefaults { app_dir, run_as, shell, home, user, idle })
    }
}

/// Every shell session.
pub struct Manager {
    sessions: Mutex<IndexMap<String, Arc<Session>>>,
    reaper: Arc<Reaper>,
    sup: Arc<Supervisor>,
    defaults: SessionDefaults,
    shutting_down: std::sync::atomic::AtomicBool,
}

/// Largest argv, env and path parts accepted.
const MAX_ARGS: usize = 256;
const MAX_ARG: usize = 8 << 10;
const MAX_ENV: usize = 128;

impl Manager {
    /// A manager spawning through `reaper`.
    pub fn new(reaper: Arc<Reaper>, sup: Arc<Supervisor>, defaults: SessionDefaults) -> Arc<Manager> {
        Arc::new(Manager { sessions: Mutex::default(), reaper, sup, defaults, shutting_down: false.into() })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, IndexMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.map().values().map(|s| s.info()).collect()
    }

    /// One session.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// One session as listed.
    pub fn info(&self, id: &str) -> Option<SessionInfo> {
        self.get(id).map(|s| s.info())
    }

    /// Starts a session; returns its id.
    pub fn create(self: &Arc<Self>, req: NewSession) -> Result<String, StartError> {
        use std::sync::atomic::Ordering;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(StartError::ShuttingDown);
        }
        let size = Size::checked(req.cols.unwrap_or(80), req.rows.unwrap_or(24)).map_err(StartError::Invalid)?;
        let d = &self.defaults;
        let cwd = match &req.cwd {
            None => d.app_dir.clone(),
            Some(c) if c.is_empty() || c.len() > 4096 || c.contains('\0') => return Err(StartError::Invalid("cwd must be a path".into())),
            Some(c) => d.app_dir.join(c),
        };
        let (mut cmd, shown) = match &req.command {
            Some(argv) => {
                if argv.is_empty() || argv.len() > MAX_ARGS || argv.iter().any(|a| a.len() > MAX_ARG || a.contains('\0')) || argv[0].is_empty() {
                    return Err(StartError::Invalid(format!("command must be a non-empty argv list of at most {MAX_ARGS} strings without NUL")));
                }
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                (c, argv.clone())
            }
            None => {
                let mut c = Command::new(&d.shell);
                let base = d.shell.rsplit('/').next().unwrap_or("sh");
                c.arg0(format!("-{base}"));
                (c, vec![d.shell.clone()])
            }
        };
        let env = req.env.unwrap_or_default();
        if env.len() > MAX_ENV {
            return Err(StartError::Invalid(format!("at most {MAX_ENV} env entries")));
        }
        for (k, v) in &env {
            let key_ok = !k.is_empty() && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok || v.contains('\0') || v.len() > MAX_ARG {
                return Err(StartError::Invalid(format!("env key {k:?}: keys match [A-Za-z_][A-Za-z0-9_]*, values hold no NUL and at most {MAX_ARG} bytes")));
            }
            // The supervisor's own markers find a session's processes when it ends: a client
            // must not be able to disguise a shell as a service (or as no session at all).
            if k.starts_with("SUPERVISOR_") {
                return Err(StartError::Invalid(format!("env key {k:?}: SUPERVISOR_* names are the supervisor's own")));
            }
        }
        let id = new_id();
        // A clean environment: whatever the VM gave the supervisor (and its own settings)
        // stays out of the shell; only the locale, time zone and PATH carry over.
        cmd.env_clear();
        for (k, v) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name == "PATH" || name == "LANG" || name == "TZ" || name.starts_with("LC_") {
                cmd.env(&k, &v);
            }
        }
        cmd.current_dir(&cwd)
            .env("HOME", &d.home)
            .env("USER", &d.user)
            .env("LOGNAME", &d.user)
            .env("SHELL", &d.shell)
            .env("TERM", "xterm-256color")
            .env("COLORTERM", "truecolor")
            .envs(env.iter())
            .env(PTY_MARKER, &id)
            .env(SUPERVISOR_MARKER, std::process::id().to_string());
        let owner = d.run_as.as_ref().map(|r| {
            r.apply(&mut cmd);
            Owner { uid: r.uid(), gid: r.gid() }
        });
        {
            let mut map = self.map();
            if map.len() >= MAX_SESSIONS {
                // Make room by forgetting ended sessions nobody watches.
                let gone: Vec<String> = map.values().filter(|s| s.hub.ended().is_some() && s.hub.attached() == 0).map(|s| s.id.clone()).collect();
                for g in gone {
                    if let Some(s) = map.shift_remove(&g) {
                        s.end.notify_one();
                    }
                }
                if map.len() >= MAX_SESSIONS {
                    return Err(StartError::TooMany);
                }
            }
            let t = term::spawn(&mut cmd, size, owner, &self.reaper, None).map_err(|e| StartError::Spawn(format!("cannot start {:?} in {}: {e}", shown[0], cwd.display())))?;
            let session = Arc::new(Session {
                id: id.clone(),
                command: shown,
                pid: t.pid,
                created_at: now_ms(),
                hub: t.hub.clone(),
                exited: Mutex::new(None),
                end: Notify::new(),
                done: watch::Sender::new(false),
            });
            map.insert(id.clone(), session.clone());
            tracing::info!(session = %id, pid = t.pid, "terminal session started");
            tokio::spawn(self.clone().watch(session, t));
        }
        Ok(id)
    }

    /// Ends session `id` and waits until its processes are gone. False if there is none.
    pub async fn delete(&self, id: &str) -> bool {
        let Some(s) = self.get(id) else { return false };
        s.end.notify_one();
        wait_done(&s).await;
        true
    }

    /// Ends every session (at shutdown) and refuses new ones.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let all: Vec<Arc<Session>> = self.map().values().cloned().collect();
        let waits = all.into_iter().map(|s| async move {
            s.end.notify_one();
            wait_done(&s).await;
        });
        futures_util::future::join_all(waits).await;
    }

    /// The life of one session: its exit, the idle timer, an end request.
    async fn watch(self: Arc<Self>, s: Arc<Session>, t: term::Terminal) {
        let term::Terminal { pid, mut exit, hub, mut output_done, pump } = t;
        let mut attached = hub.watch_attached();
        let mut idle_since = Some(Instant::now());
        let mut exited: Option<ExitInfo> = None;
        let mut drained = false;
        let idle = self.defaults.idle;
        loop {
            let deadline = idle_since.map(|t| t + idle);
            tokio::select! {
                r = &mut exit, if exited.is_none() => {
                    let info = r.unwrap_or(ExitInfo { code: None, signal: None, at_ms: now_ms() });
                    tracing::info!(session = %s.id, pid, "terminal session's shell exited with {info}");
                    exited = Some(info);
                    *s.exited.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
                    // Its last output first, then what it left behind goes.
                    if !drain(&mut output_done, &mut drained).await {
                        end_session(&s.id, pid).await;
                        drain(&mut output_done, &mut drained).await;
                    }
                    hub.finish(Some(info));
                }
                _ = s.end.notified() => break,
                r = attached.changed() => {
                    if r.is_err() { break }
                    let n = *attached.borrow();
                    idle_since = if n == 0 { Some(Instant::now()) } else { None };
                }
                _ = sleep_until(deadline) => {
                    if self.sup.in_grace() {
                        idle_since = Some(Instant::now());
                        continue;
                    }
                    tracing::info!(session = %s.id, "terminal session idle for {idle:?} with no client; ending it");
                    break;
                }
            }
        }
        end_session(&s.id, pid).await;
        if exited.is_none() {
            if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), &mut exit).await {
                *s.exited.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
                exited = Some(info);
            }
        }
        drain(&mut output_done, &mut drained).await;
        pump.abort();
        hub.finish(exited);
        self.map().shift_remove(&s.id);
        s.done.send_replace(true);
        tracing::info!(session = %s.id, "terminal session ended");
    }
}

/// Waits until session `s` has ended, at most [`END_LIMIT`] (a bug in its task must not
/// hang a DELETE or the shutdown; the processes are still SIGKILLed at shutdown).
async fn wait_done(s: &Session) {
    let mut done = s.done.subscribe();
    if tokio::time::timeout(END_LIMIT, done.wait_for(|d| *d)).await.is_err() {
        tracing::error!(session = %s.id, "terminal session did not end within {END_LIMIT:?}");
    }
}

/// Waits up to [`DRAIN`] for the end of the output (once); whether it has ended.
async fn drain(rx: &mut tokio::sync::oneshot::Receiver<()>, drained: &mut bool) -> bool {
    if !*drained && tokio::time::timeout(DRAIN, rx).await.is_ok() {
        *drained = true;
    }
    *drained
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A fresh random session id (128 bits, hex).
fn new_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

use std::os::unix::process::CommandExt;
