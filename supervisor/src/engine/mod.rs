//! The process engine: a [`Supervisor`] owns one runner task per service, the shared
//! status board they publish on, and the stack-wide shutdown.

pub mod backoff;
pub mod command;
pub mod kill;
pub mod procs;
pub mod reaper;
mod service;
pub mod spawn;
pub mod state;

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
    statuses: IndexMap<String, watch::Receiver<ServiceStatus>>,
    tick: watch::Sender<u64>,
    events: broadcast::Sender<ServiceStatus>,
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
        self.statuses.get(name).map(|r| r.borrow().clone()).unwrap_or_else(|| ServiceStatus::new(name, false))
    }

    fn changed(&self, st: ServiceStatus) {
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
async fn env_restarts(shared: Arc<Shared>, services: Vec<(String, mpsc::Sender<Control>)>) {
    if services.is_empty() {
        return;
    }
    loop {
        shared.env_changed.notified().await;
        let burst = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ENV_COALESCE) => break,
                _ = shared.env_changed.notified() => if burst.elapsed() >= ENV_COALESCE_MAX { break },
            }
        }
        for (name, ctl) in &services {
            if shared.env_stale(name) {
                let _ = ctl.send(Control::EnvChanged).await;
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
    ctl: mpsc::Sender<Control>,
}

/// The running stack.
pub struct Supervisor {
    shared: Arc<Shared>,
    services: IndexMap<String, ServiceHandle>,
    started_ms: u64,
    started: std::time::Instant,
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
        let mut senders = Vec::new();
        let mut statuses = IndexMap::new();
        for s in &cfg.services {
            let run_as = match &s.user {
                Some(u) => RunAs::lookup(u).map_err(|e| format!("services.{}.user: {e}", s.name))?,
                None => None,
            };
            let (tx, rx) = watch::channel(ServiceStatus::new(&s.name, s.required && !s.disabled));
            statuses.insert(s.name.clone(), rx);
            senders.push((s.clone(), run_as, tx));
        }
        let (tick, _) = watch::channel(0u64);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            reaper,
            statuses,
            tick,
            events,
            injected: RwLock::new(injected),
            spawned_env: Mutex::new(HashMap::new()),
            env_changed: tokio::sync::Notify::new(),
            shutting_down: AtomicBool::new(false),
            grace_until: std::sync::Mutex::new(None),
        });
        let mut services = IndexMap::new();
        for (spec, run_as, status) in senders {
            let logs = LogBuffer::new(&spec.name, cfg.settings.log_lines, cfg.settings.log_bytes);
            let (ctl_tx, ctl_rx) = mpsc::channel(16);
            let runner = Runner { spec: spec.clone(), run_as, shared: shared.clone(), logs: logs.clone(), status, ctl: ctl_rx };
            tokio::spawn(service::run_guarded(runner));
            services.insert(spec.name.clone(), ServiceHandle { spec, logs, ctl: ctl_tx });
        }
        let injecting: Vec<(String, mpsc::Sender<Control>)> =
            services.values().filter(|h| h.spec.env_injection && !h.spec.disabled).map(|h| (h.spec.name.clone(), h.ctl.clone())).collect();
        tokio::spawn(env_restarts(shared.clone(), injecting));
        Ok(Arc::new(Supervisor { shared, services, started_ms, started }))
    }

    /// Every service's status, in start order.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.shared.statuses.values().map(|r| r.borrow().clone()).collect()
    }

    /// One service's status.
    pub fn status(&self, name: &str) -> Option<ServiceStatus> {
        self.shared.statuses.get(name).map(|r| r.borrow().clone())
    }

    /// Whether one service is ready (`None`: no such service), without copying its status:
    /// the proxy asks on every request.
    pub fn is_ready(&self, name: &str) -> Option<bool> {
        self.shared.statuses.get(name).map(|r| r.borrow().ready)
    }

    /// Every required, enabled service is ready.
    pub fn ready(&self) -> bool {
        self.shared.statuses.values().all(|r| {
            let s = r.borrow();
            !s.required || s.ready
        })
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

    /// The service handles, in start order.
    pub fn services(&self) -> &IndexMap<String, ServiceHandle> {
        &self.services
    }

    /// Sends `cmd` to service `name`.
    pub async fn control(&self, name: &str, cmd: Control) -> Result<(), UnknownService> {
        let h = self.services.get(name).ok_or_else(|| UnknownService(name.to_string()))?;
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
        self.services.values().any(|h| h.spec.env_injection && !h.spec.disabled)
    }

    /// Call after [`Supervisor::set_injected_env`]: the `env_injection` services whose
    /// process runs with another environment than now are restarted once the burst of
    /// writes is over (or revived, when `failed`). Returns their names.
    pub fn env_changed(&self) -> Vec<String> {
        let due: Vec<String> = self
            .services
            .values()
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
            for (name, h) in &self.services {
                let dependents: Vec<String> = self
                    .services
                    .values()
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
