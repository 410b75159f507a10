//! Service states and the status record each service publishes.

use super::reaper::ExitInfo;
use serde::Serialize;

/// Where a service is in its life (SPEC §5 `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its dependencies.
    Pending,
    /// Spawned; the startup probe has not passed yet.
    Starting,
    /// Started, not (yet) ready.
    Running,
    /// Ready.
    Ready,
    /// Was ready; its readiness probe now fails.
    Unhealthy,
    /// Waiting before a restart.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Not running, by request or by policy.
    Stopped,
    /// Given up on (crash loop, or a failure with restart = never); `start` revives it.
    Failed,
}

/// What one service publishes about itself.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Current state.
    pub state: State,
    /// Leader pid while a process exists.
    pub pid: Option<i32>,
    /// Ready (readiness passed and not lost).
    pub ready: bool,
    /// Times it was started again after its first start.
    pub restarts: u32,
    /// How the last process ended.
    pub last_exit: Option<ExitInfo>,
    /// When the current (or last) process was spawned, Unix ms.
    pub started_at: Option<u64>,
    /// When it last became ready, Unix ms.
    pub ready_at: Option<u64>,
    /// Why it is in this state, when that is worth saying (failed, backoff, unhealthy).
    pub message: Option<String>,
    /// Counts for `/readyz`.
    pub required: bool,
    /// Processes spawned so far (internal: drives `restart_with`).
    #[serde(skip)]
    pub spawns: u64,
}

impl ServiceStatus {
    /// The initial status of a service.
    pub fn new(name: &str, required: bool) -> Self {
        ServiceStatus {
            name: name.into(),
            state: State::Pending,
            pid: None,
            ready: false,
            restarts: 0,
            last_exit: None,
            started_at: None,
            ready_at: None,
            message: None,
            required,
            spawns: 0,
        }
    }

    /// No process and none coming without a command.
    pub fn is_down(&self) -> bool {
        self.pid.is_none() && matches!(self.state, State::Stopped | State::Failed)
    }

    /// Spawned and past its startup probe.
    pub fn is_started(&self) -> bool {
        self.pid.is_some() && matches!(self.state, State::Running | State::Ready | State::Unhealthy)
    }
}
