//! The process engine: a [`Supervisor`] owns one runner task per service, the shared
//! status board they publish on, and the stack-wide shutdown.

pub mod backoff;
pub mod command;
pub mod kill;
pub mod procs;
pub mod reaper;
mod reload;
mod service;
pub mod spawn;
pub mod state;
pub mod yielding;

pub use reload::ReloadReport;
pub use service::Control;
pub use state::{ServiceStatus, State};

use crate::config::{Config, ServiceSpec};
use crate::inject::{Dropped, Injected};
use crate::logs::LogBuffer;
use indexmap::IndexMap;
use reaper::{now_ms, Reaper};
use service::Runner;
use spawn::RunAs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// What the runners share: the reaper, every service's status, change notifications.
pub(crate) struct Shared {
    reaper: Arc<Reaper>,
    statuses: RwLock<IndexMap<String, watch::Receiver<ServiceStatus>>>,
    tick: watch::Sender<u64>,
    events: broadcast::Sender<ServiceStatus>,
    /// Every change, numbered, for `/_supervisor/events` with `Last-Event-ID` replay.
    event_ring: Arc<crate::sse::Ring<ServiceStatus>>,
    injected: RwLock<Injected>,
    /// The injected environment's fingerprint each service's current process got.
    spawned_env: Mutex<HashMap<String, u64>>,
    /// Wakes the env-restart coalescer.
    env_changed: tokio::sync::Notify,
    shutting_down: AtomicBool,
    grace_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    fn status_of(&self, name: &str) -> ServiceStatus {
        // A service no longer on the board (retired by a reload) is down: a shutdown that
        // took its list before the reload must not wait its whole deadline for it.
        self.statuses.read().expect("statuses").get(name).map(|r| r.borrow().clone()).unwrap_or_else(|| ServiceStatus { state: State::Stopped, ..ServiceStatus::new(name, false) })
    }

    /// Every service's status now, in start order.
    fn snapshot(&self) -> Vec<ServiceStatus> {
        self.statuses.read().expect("statuses").values().map(|r| r.borrow().clone()).collect()
    }

    /// Every required, enabled service is ready.
    fn all_ready(&self) -> bool {
        self.statuses.read().expect("statuses").values().all(|r| {
            let s = r.borrow();
            !s.required || s.ready
        })
    }

    fn changed(&self, st: ServiceStatus) {
        self.event_ring.push(st.clone());
        let _ = self.events.send(st);
        self.tick.send_modify(|t| *t += 1);
    }

    /// The injected environment now, recorded as what `service` is being started with.
    fn injected_env_for(&self, service: &str) -> Vec<(String, String)> {
        let inj = self.injected.read().expect("env lock");
        self.spawned_env.lock().expect("spawned env").insert(service.to_string(), inj.fingerprint());
        inj.vars.clone()
    }

    /// Whether `service`'s process was started with another injected environment than now.
    fn env_stale(&self, service: &str) -> bool {
        let now = self.injected.read().expect("env lock").fingerprint();
        self.spawned_env.lock().expect("spawned env").get(service).is_some_and(|f| *f != now)
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Within the grace period after a resume.
    fn in_grace(&self) -> bool {
        self.grace_until.lock().expect("grace").is_some_and(|t| tokio::time::Instant::now() < t)
    }
}

/// Env writes closer together than this are one change: one restart per burst.
pub const ENV_COALESCE: Duration = Duration::from_millis(250);
/// A burst longer than this still restarts (writes that never pause must not starve it).
pub const ENV_COALESCE_MAX: Duration = Duration::from_secs(2);

/// Restarts `env_injection` services after env changes, once per burst of writes.
async fn env_restarts(sup: std::sync::Weak<Supervisor>, shared: Arc<Shared>) {
    loop {
        shared.env_changed.notified().await;
        let burst = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ENV_COALESCE) => break,
                _ = shared.env_changed.notified() => if burst.elapsed() >= ENV_COALESCE_MAX { break },
            }
        }
        let Some(sup) = sup.upgrade() else { return };
        for h in sup.handles() {
            if h.spec.env_injection && !h.spec.disabled && shared.env_stale(&h.spec.name) {
                let _ = h.ctl.send(Control::EnvChanged).await;
            }
        }
    }
}

/// A service as the API sees it: its spec, its command channel, its logs.
pub struct ServiceHandle {
    /// The checked config of the service.
    pub spec: ServiceSpec,
    /// Its output.
    pub logs: Arc<LogBuffer>,
    /// The terminal of a `tty` service.
    pub tty: Option<Arc<crate::pty::TtySlot>>,
    ctl: mpsc::Sender<Control>,
}

/// The running stack.
pub struct Supervisor {
    shared: Arc<Shared>,
    services: RwLock<IndexMap<String, Arc<ServiceHandle>>>,
    /// The config the running services came from (what a reload compares against).
    config: Mutex<Config>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    started_ms: u64,
    started: std::time::Instant,
}

/// Looks up every service's `user` (the account it drops to when we are root).
fn resolve_users(services: &[ServiceSpec]) -> Result<Vec<Option<RunAs>>, String> {
    services
        .iter()
        .map(|s| match &s.user {
            Some(u) => RunAs::lookup(u).map_err(|e| format!("services.{}.user: {e}", s.name)),
            None => Ok(None),
        })
        .collect()
}

/// Error of a command naming a service that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("no service named {0:?}")]
pub struct UnknownService(pub String);

impl Supervisor {
    /// Resolves service users and starts every service's runner, `env_injection`
    /// services with `injected`. Errors when a named user does not exist.
    pub fn start(cfg: Config, reaper: Arc<Reaper>, injected: Injected) -> Result<Arc<Supervisor>, String> {
        let (started_ms, started) = (now_ms(), std::time::Instant::now());
        for d in &injected.dropped {
            tracing::warn!(key = %d.key, scope = d.scope.as_str(), "left out of the injected environment: {}", d.reason);
        }
        let users = resolve_users(&cfg.services)?;
        let (tick, _) = watch::channel(0u64);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            reaper,
            statuses: RwLock::new(IndexMap::new()),
            tick,
            events,
            event_ring: Arc::new(crate::sse::Ring::new(cfg.settings.event_ring)),
            injected: RwLock::new(injected),
            spawned_env: Mutex::new(HashMap::new()),
            env_changed: tokio::sync::Notify::new(),
            shutting_down: AtomicBool::new(false),
            grace_until: std::sync::Mutex::new(None),
        });
        let sup = Arc::new(Supervisor {
            shared: shared.clone(),
            services: RwLock::new(IndexMap::new()),
            config: Mutex::new(cfg.clone()),
            reloading: tokio::sync::Mutex::new(()),
            started_ms,
            started,
        });
        for (spec, run_as) in cfg.services.iter().zip(users) {
            sup.launch_with(spec.clone(), run_as, &cfg.settings, None, None);
        }
        tokio::spawn(env_restarts(Arc::downgrade(&sup), shared.clone()));
        tokio::spawn(yielding::while_booting(shared, yielding::ready_dependents(&cfg.services)));
        Ok(sup)
    }

    /// Starts the runner of one service (its status and handle join the board), with
    /// `logs` when it carries on an earlier one's output (a reload's restart).
    ///
    /// `prior` is the status of the runner it replaces: its spawn and restart counts carry
    /// on, so `restart_with` watchers (Playwright MCP on Chromium) see the relaunch as a
    /// restart, and `restarts` never goes backwards.
    fn launch_with(&self, spec: ServiceSpec, run_as: Option<RunAs>, settings: &crate::config::Settings, logs: Option<Arc<LogBuffer>>, prior: Option<&ServiceStatus>) {
        let mut initial = ServiceStatus::new(&spec.name, spec.required && !spec.disabled);
        if let Some(p) = prior {
            (initial.spawns, initial.restarts) = (p.spawns, p.restarts);
        }
        let (status, rx) = watch::channel(initial);
        self.shared.statuses.write().expect("statuses").insert(spec.name.clone(), rx);
        let logs = logs.unwrap_or_else(|| LogBuffer::new(&spec.name, settings.log_lines, settings.log_bytes));
        logs.set_file(spec.log_file.as_ref().map(|f| crate::logfile::LogFile::new(f.path.clone(), f.max_bytes, f.keep)));
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        let tty = spec.tty.then(|| Arc::new(crate::pty::TtySlot::default()));
        let mut runner = Runner::new(spec.clone(), run_as, self.shared.clone(), logs.clone(), tty.clone(), status, ctl_rx);
        if prior.is_some() {
            runner.restarted_by("manual");
        }
        tokio::spawn(service::run_guarded(runner));
        self.services.write().expect("services").insert(spec.name.clone(), Arc::new(ServiceHandle { spec, logs, tty, ctl: ctl_tx }));
    }

    /// Every service handle, in start order (a snapshot: a reload may change the set).
    pub fn handles(&self) -> Vec<Arc<ServiceHandle>> {
        self.services.read().expect("services").values().cloned().collect()
    }

    /// One service's handle.
    pub fn handle(&self, name: &str) -> Option<Arc<ServiceHandle>> {
        self.services.read().expect("services").get(name).cloned()
    }

    /// The numbered feed of every status change (SSE replay).
    pub fn event_ring(&self) -> Arc<crate::sse::Ring<ServiceStatus>> {
        self.shared.event_ring.clone()
    }

    /// The config the running services came from.
    pub fn config(&self) -> Config {
        self.config.lock().expect("config").clone()
    }

    /// The app dir (a reload keeps the running settings, so it never changes), without
    /// copying the whole config as [`Supervisor::config`] does.
    pub fn app_dir(&self) -> std::path::PathBuf {
        self.config.lock().expect("config").settings.app_dir.clone()
    }

    /// Every service's status, in start order.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.shared.snapshot()
    }

    /// One service's status.
    pub fn status(&self, name: &str) -> Option<ServiceStatus> {
        self.shared.statuses.read().expect("statuses").get(name).map(|r| r.borrow().clone())
    }

    /// Whether one service is ready (`None`: no such service), without copying its status:
    /// the proxy asks on every request.
    pub fn is_ready(&self, name: &str) -> Option<bool> {
        self.shared.statuses.read().expect("statuses").get(name).map(|r| r.borrow().ready)
    }

    /// Every required, enabled service is ready.
    pub fn ready(&self) -> bool {
        self.shared.all_ready()
    }

    /// Milliseconds since the supervisor started.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// When the supervisor started, Unix ms.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// A feed of every status change.
    pub fn subscribe(&self) -> broadcast::Receiver<ServiceStatus> {
        self.shared.events.subscribe()
    }

    /// Sends `cmd` to service `name`.
    pub async fn control(&self, name: &str, cmd: Control) -> Result<(), UnknownService> {
        let h = self.handle(name).ok_or_else(|| UnknownService(name.to_string()))?;
        let _ = h.ctl.send(cmd).await;
        Ok(())
    }

    /// Starts a grace period (after a pause/resume): liveness and startup failures do not
    /// restart services until it ends; the probes keep running and decide afterwards.
    pub fn begin_grace(&self, grace: Duration) {
        *self.shared.grace_until.lock().expect("grace") = Some(tokio::time::Instant::now() + grace);
    }

    /// Whether a resume grace period is running.
    pub fn in_grace(&self) -> bool {
        self.shared.in_grace()
    }

    /// Replaces the injected environment given to `env_injection` services (from their
    /// next start on; [`Supervisor::env_changed`] schedules the restarts).
    pub fn set_injected_env(&self, env: Injected) {
        for d in &env.dropped {
            tracing::warn!(key = %d.key, scope = d.scope.as_str(), "left out of the injected environment: {}", d.reason);
        }
        *self.shared.injected.write().expect("env lock") = env;
    }

    /// The variables left out of the injected environment (names and reasons only).
    pub fn injected_dropped(&self) -> Vec<Dropped> {
        self.shared.injected.read().expect("env lock").dropped.clone()
    }

    /// Whether any enabled service gets the injected environment.
    pub fn has_env_injection(&self) -> bool {
        self.handles().iter().any(|h| h.spec.env_injection && !h.spec.disabled)
    }

    /// Call after [`Supervisor::set_injected_env`]: the `env_injection` services whose
    /// process runs with another environment than now are restarted once the burst of
    /// writes is over (or revived, when `failed`). Returns their names.
    pub fn env_changed(&self) -> Vec<String> {
        let due: Vec<String> = self
            .handles()
            .iter()
            .filter(|h| h.spec.env_injection && !h.spec.disabled && self.shared.env_stale(&h.spec.name))
            .filter(|h| self.shared.status_of(&h.spec.name).state != State::Stopped)
            .map(|h| h.spec.name.clone())
            .collect();
        if !due.is_empty() {
            self.shared.env_changed.notify_one();
        }
        due
    }

    /// Stops every service in reverse dependency order (a service stops once all its
    /// dependents are down), each with its own signal and timeout, all within `deadline`;
    /// past it, everything left is SIGKILLed. Orphans reparented to us are killed last.
    pub async fn shutdown(&self, deadline: Duration) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let orderly = async {
            let mut tasks = tokio::task::JoinSet::new();
            let handles = self.handles();
            for h in &handles {
                let name = &h.spec.name;
                let dependents: Vec<String> = handles
                    .iter()
                    .filter(|o| o.spec.depends_on.iter().any(|(d, _)| d == name))
                    .map(|o| o.spec.name.clone())
                    .collect();
                let shared = self.shared.clone();
                let ctl = h.ctl.clone();
                let name = name.clone();
                tasks.spawn(async move {
                    let mut tick = shared.tick.subscribe();
                    while !dependents.iter().all(|d| shared.status_of(d).is_down()) {
                        if tick.changed().await.is_err() {
                            return;
                        }
                    }
                    let _ = ctl.send(Control::Stop).await;
                    while !shared.status_of(&name).is_down() {
                        if tick.changed().await.is_err() {
                            return;
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        };
        if tokio::time::timeout(deadline, orderly).await.is_err() {
            tracing::error!("shutdown deadline of {deadline:?} passed; killing what is left");
        }
        self.kill_everything();
    }

    /// SIGKILLs every service group, every escaped service process and every child of ours.
    pub fn kill_everything(&self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        for s in self.statuses() {
            if let Some(pid) = s.pid {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            kill::kill_escapees(&s.name);
        }
        for pid in procs::children_of(std::process::id() as i32) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
