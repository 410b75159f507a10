//! `supervisor run`: load the config, start the engine, serve the control socket, reload
//! the config on SIGHUP, and shut everything down on SIGTERM/SIGINT (a second signal
//! forces it).

use crate::api::auth::TokenAuth;
use crate::api::env::EnvStore;
use crate::api::{self, ApiState};
use crate::proxy::Upstream;
use crate::server::{self, AppProxy};
use crate::config::Config;
use crate::engine::reaper::Reaper;
use crate::engine::Supervisor;
use crate::guard::PortGuard;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the stack until a stop signal; returns the exit code. `reloader` reads the config
/// again on SIGHUP and `reload`.
pub async fn run(cfg: Config, reloader: crate::reload::Reloader) -> anyhow::Result<i32> {
    install_panic_hook();
    let reaper = Reaper::install()?;
    let nofile = server::listener::raise_nofile();
    let cap = server::listener::connection_cap(nofile);
    let settings = cfg.settings.clone();
    let targets = server::PassThroughTargets::from_services(&cfg.services);
    let cfg_services = cfg.services.clone();
    std::fs::create_dir_all(&settings.runtime_dir)
        .map_err(|e| anyhow::anyhow!("cannot create runtime dir {}: {e}", settings.runtime_dir.display()))?;
    let socket = bind_socket(&settings.control_socket).await?;
    let public = server::bind(&settings.listen).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // SIGHUP through signal-hook (tokio's own handlers above share its registry, so both coexist).
    let hup = signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP])?;

    let guard = Arc::new(PortGuard::new(settings.port_guard));
    if guard.status().enabled {
        // Default-deny: only the listen port and the allow list (envd) are reachable from outside.
        let mut allow = vec![public.local_addr()?.port()];
        for p in &settings.port_guard_allow {
            if !allow.contains(p) {
                allow.push(*p);
            }
        }
        guard.install(&reaper, &allow).await;
        tokio::spawn(guard.clone().keep_installed(reaper.clone(), allow));
    }
    tracing::info!(config = %cfg.source, services = cfg.services.len(), "starting");
    let env = Arc::new(EnvStore::new(settings.env_file.clone(), app_owner(&settings.app_dir), settings.services_env_file.clone()));
    // Read before any service starts, so the first spawn already gets it.
    let injected = env.injected().await;
    let sup = Supervisor::start(cfg, reaper.clone(), injected).map_err(|e| anyhow::anyhow!(e))?;
    // The sensor loads the app the way the in-VM browser sees it: localhost on the listen port.
    let origin = format!("http://localhost:{}", public.local_addr()?.port());
    let browser = crate::browser::Sensor::new(sup.clone(), "chromium", &crate::browser::Sensor::cdp_of(&cfg_services, "chromium"), &origin);
    if cfg_services.iter().any(|s| s.name == "chromium") {
        browser.follow();
    }
    let pty_user = settings.service_user.clone().or_else(|| sup.handle(&settings.proxy_service).and_then(|h| h.spec.user.clone()));
    let pty_defaults = crate::pty::session::SessionDefaults::new(settings.app_dir.clone(), pty_user.as_deref(), settings.pty_idle).map_err(|e| anyhow::anyhow!("terminal sessions: {e}"))?;
    let ptys = crate::pty::session::Manager::new(reaper.clone(), sup.clone(), pty_defaults);
    let reloader = Arc::new(reloader);
    let state = ApiState { sup: sup.clone(), cpu: Arc::default(), env, token_file: settings.token_file.clone(), guard: guard.clone(), ptys: ptys.clone(), reload: reloader.clone(), browser };
    let app = Arc::new(AppProxy {
        upstream: Upstream::new(&settings.proxy_upstream),
        service: settings.proxy_service.clone(),
        sup: sup.clone(),
        secrets: crate::proxy::secrets::SecretPaths::new(&settings.app_dir, &settings.env_file),
    });
    let auth = TokenAuth::new(settings.token_file.clone());
    let router = server::public_router(state.clone(), auth, app.clone(), &targets);
    tokio::spawn(server::serve(public, server::Public { router, app }, cap));
    tracing::info!(listen = %settings.listen, max_connections = cap, open_files = nofile, "public listener up");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(socket, api::socket_router(state)).await {
            tracing::error!("control socket stopped: {e}");
        }
    });
    tokio::spawn(log_when_ready(sup.clone()));
    tokio::spawn(reload_on_hangup(hup, reloader, sup.clone()));
    tokio::spawn(crate::resume::watch(sup.clone(), settings.sandbox_id_file.clone(), settings.resume_grace));

    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let deadline = settings.shutdown_timeout;
    tracing::info!("{which}: stopping the stack (deadline {deadline:?}; a second signal forces)");
    tokio::select! {
        _ = async { tokio::join!(sup.shutdown(deadline), ptys.shutdown()) } => tracing::info!("all services and terminal sessions stopped"),
        _ = term.recv() => { tracing::warn!("second signal: killing everything"); sup.kill_everything(); }
        _ = int.recv() => { tracing::warn!("second signal: killing everything"); sup.kill_everything(); }
    }
    guard.remove(&reaper).await;
    let _ = std::fs::remove_file(&settings.control_socket);
    Ok(0)
}

/// Logs every panic through `tracing` (with where it happened) before it unwinds: the
/// task or request it ends is recovered from, but it must never pass silently.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = crate::panic_message(info.payload());
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(at = %at, "panic: {what}");
    }));
}

/// Binds the control socket with mode 0600, replacing a stale one but never a live one.
async fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("another supervisor is already running on {}", path.display());
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Reloads the config on every SIGHUP (one at a time; the outcome is logged, an invalid
/// file with its file, key and reason).
async fn reload_on_hangup(mut hup: signal_hook_tokio::Signals, reloader: Arc<crate::reload::Reloader>, sup: Arc<Supervisor>) {
    use futures_util::StreamExt;
    while hup.next().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        if let Ok(r) = reloader.reload(&sup).await {
            tracing::info!(started = ?r.started, stopped = ?r.stopped, restarted = ?r.restarted, unchanged = ?r.unchanged, needs_restart = ?r.needs_restart, "SIGHUP reload applied");
        }
    }
}

/// Logs once when the whole stack is first ready, with the boot time and the last service.
async fn log_when_ready(sup: Arc<Supervisor>) {
    let mut rx = sup.subscribe();
    loop {
        if sup.ready() {
            let last = sup.statuses().into_iter().filter(|s| s.required).max_by_key(|s| s.ready_at.unwrap_or(0));
            let last = last.map(|s| s.name).unwrap_or_default();
            tracing::info!(boot_ms = sup.uptime_ms(), last = %last, "stack ready");
            return;
        }
        if rx.recv().await.is_err() {
            return;
        }
    }
}


/// The owner (uid, gid) of the app dir: the account the `.env` file is written for.
fn app_owner(app_dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(app_dir).ok().map(|m| (m.uid(), m.gid()))
}
