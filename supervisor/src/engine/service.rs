//! One task per service that owns its whole life: wait for dependencies, spawn, run the
//! probes, react to exits and commands, restart with backoff, give up on a crash loop.

use super::backoff::{Backoff, CrashLoop};
use super::kill::stop_group;
use super::procs;
use super::reaper::{now_ms, ExitInfo};
use super::spawn::{spawn, RunAs, Spawned};
use super::state::{ServiceStatus, State};
use super::Shared;
use crate::config::{DependsCondition, RestartPolicy, ServiceSpec};
use crate::logs::{LogBuffer, Stream};
use crate::probe::{self, Verdict};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A command to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start it if it is not running (also revives `failed`).
    Start,
    /// Stop it and keep it stopped.
    Stop,
    /// Stop it (if running) and start it again at once.
    Restart,
    /// The injected environment changed: restart if the process runs with an older one
    /// (never counted toward the crash loop); revive it if `failed`.
    EnvChanged,
}

/// Why a process's run ended.
enum Ended {
    /// A `stop` command.
    Stopped,
    /// A `restart` command, a `restart_with` trigger or an env change (the cause, for metrics).
    Restart(&'static str),
    /// The process exited by itself.
    Exited(ExitInfo),
    /// We killed it: failed probe or memory limit (the cause, for metrics).
    Killed(String, Option<ExitInfo>, &'static str),
    /// It could not be spawned.
    SpawnFailed(String),
}

/// Why a service is not running, which decides what brings it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// Stopped by request, disabled, or a clean exit its policy does not restart:
    /// only `start`/`restart` bring it back.
    Stopped,
    /// Failed with `restart = never`: `start`, `restart` or an env change.
    Failed,
    /// A crash loop: also retried after `crash_loop.retry_after`.
    CrashLoop,
}

/// What a service that is down does next.
enum Next {
    /// Start it.
    Start,
    /// Stay down as it is.
    Wait,
    /// Stay down, now as stopped by request.
    Stopped,
}

/// What woke a service that is down.
enum Wake {
    Cmd(Option<Control>),
    Retry,
}

/// The runner of one service.
pub(super) struct Runner {
    pub spec: ServiceSpec,
    pub run_as: Option<RunAs>,
    pub shared: Arc<Shared>,
    pub logs: Arc<LogBuffer>,
    pub tty: Option<Arc<crate::pty::TtySlot>>,
    pub status: watch::Sender<ServiceStatus>,
    pub ctl: mpsc::Receiver<Control>,
    /// Why the next spawn is a restart (`supervisor_service_restarts_total{cause}`).
    cause: &'static str,
}

/// Runs a service's runner, and runs it again if it panics: a bug in one service's
/// task is logged, its process group is killed (the runner lost track of it), and the
/// service comes back, rather than the service silently never restarting again.
pub(super) async fn run_guarded(mut runner: Runner) {
    use futures_util::FutureExt;
    loop {
        match std::panic::AssertUnwindSafe(runner.run()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let what = crate::panic_message(&*panic);
                tracing::error!(service = %runner.spec.name, "internal error in the service's task: {what}; restarting it");
                runner.recover().await;
            }
        }
    }
}

impl Runner {
    /// A runner that has not started its service yet.
    pub fn new(spec: ServiceSpec, run_as: Option<RunAs>, shared: Arc<Shared>, logs: Arc<LogBuffer>, tty: Option<Arc<crate::pty::TtySlot>>, status: watch::Sender<ServiceStatus>, ctl: mpsc::Receiver<Control>) -> Self {
        Runner { spec, run_as, shared, logs, tty, status, ctl, cause: "crash" }
    }

    /// Marks the first spawn as a restart for this cause (a reload's relaunch).
    pub fn restarted_by(&mut self, cause: &'static str) {
        self.cause = cause;
    }

    /// Updates the status and tells everyone who watches.
    fn set(&self, f: impl FnOnce(&mut ServiceStatus)) {
        self.status.send_modify(f);
        self.shared.changed(self.status.borrow().clone());
    }

    fn note(&self, text: &str) {
        self.logs.push(Stream::Stderr, &format!("[supervisor] {text}"));
    }

    /// After a panic: kill whatever the lost run left behind and pause briefly.
    async fn recover(&mut self) {
        if let Some(pid) = self.status.borrow().pid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        super::kill::kill_escapees_async(&self.spec.name).await;
        self.set(|s| {
            s.pid = None;
            s.ready = false;
            s.state = State::Backoff;
            s.message = Some("internal error in the supervisor's task for this service; restarting it".into());
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// Waits, while the service is down, for what changes that: `None` when the channel
    /// closed, else what to do next.
    async fn wait_while_down(&mut self, down: Down) -> Option<Next> {
        let retry = if down == Down::CrashLoop { self.spec.crash_loop.retry_after } else { None };
        let wake = match retry {
            Some(rest) => tokio::select! {
                c = self.ctl.recv() => Wake::Cmd(c),
                _ = tokio::time::sleep(rest) => Wake::Retry,
            },
            None => Wake::Cmd(self.ctl.recv().await),
        };
        if self.shared.is_shutting_down() {
            return if matches!(wake, Wake::Cmd(None)) { None } else { Some(Next::Wait) };
        }
        match wake {
            Wake::Cmd(None) => None,
            Wake::Cmd(Some(Control::Start | Control::Restart)) => {
                self.cause = "manual";
                Some(Next::Start)
            }
            // A stop of a failed service keeps it down for good: no retry, no env revival.
            Wake::Cmd(Some(Control::Stop)) if down != Down::Stopped => {
                self.set(|s| {
                    s.state = State::Stopped;
                    s.message = Some("stopped by request".into());
                });
                Some(Next::Stopped)
            }
            Wake::Cmd(Some(Control::EnvChanged)) if down != Down::Stopped => {
                self.note("the injected environment changed: trying again");
                self.cause = "env";
                Some(Next::Start)
            }
            Wake::Cmd(Some(_)) => Some(Next::Wait),
            Wake::Retry => {
                tracing::info!(service = %self.spec.name, "retrying after a crash loop");
                self.note("retrying after the crash loop's rest");
                self.cause = "crash";
                Some(Next::Start)
            }
        }
    }

    /// The service's life, until the supervisor drops the control channel.
    pub async fn run(&mut self) {
        let mut backoff = Backoff::new(self.spec.backoff);
        let mut crashes = CrashLoop::new(self.spec.crash_loop);
        let mut down = self.spec.disabled.then_some(Down::Stopped);
        if self.spec.disabled {
            self.set(|s| {
                s.state = State::Stopped;
                s.message = Some("disabled in the config".into());
            });
        }
        loop {
            if let Some(d) = down {
                match self.wait_while_down(d).await {
                    None => return,
                    Some(Next::Wait) => continue,
                    Some(Next::Stopped) => {
                        down = Some(Down::Stopped);
                        continue;
                    }
                    Some(Next::Start) => {
                        down = None;
                        backoff.reset();
                        crashes.reset();
                    }
                }
            }
            // Once shutdown has begun nothing is (re)spawned.
            if self.shared.is_shutting_down() {
                self.set(|s| s.state = State::Stopped);
                down = Some(Down::Stopped);
                continue;
            }
            self.set(|s| {
                s.state = State::Pending;
                s.message = None;
            });
            match self.wait_dependencies().await {
                Some(Control::Stop) => {
                    self.set(|s| s.state = State::Stopped);
                    down = Some(Down::Stopped);
                    continue;
                }
                None => return,
                _ => {}
            }
            if self.shared.is_shutting_down() {
                continue;
            }
            let began = Instant::now();
            let ended = self.run_once().await;
            let ran_for = began.elapsed();
            backoff.run_ended(ran_for);
            if self.shared.is_shutting_down() {
                self.set(|s| s.state = State::Stopped);
                down = Some(Down::Stopped);
                continue;
            }
            let why = match ended {
                Ended::Stopped => {
                    self.set(|s| s.state = State::Stopped);
                    down = Some(Down::Stopped);
                    continue;
                }
                Ended::Restart(cause) => {
                    self.cause = cause;
                    backoff.reset();
                    continue;
                }
                Ended::Exited(info) => {
                    self.cause = "crash";
                    let restart = match self.spec.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => !info.success(),
                        RestartPolicy::Never => false,
                    };
                    if !restart {
                        let failed = !info.success();
                        self.set(|s| {
                            s.state = if failed { State::Failed } else { State::Stopped };
                            s.message = Some(format!("exited with {info} (restart = {})", self.spec.restart.as_str()));
                        });
                        down = Some(if failed { Down::Failed } else { Down::Stopped });
                        continue;
                    }
                    format!("exited with {info}")
                }
                Ended::Killed(why, _, cause) => {
                    self.cause = cause;
                    why
                }
                Ended::SpawnFailed(why) => {
                    self.cause = "crash";
                    why
                }
            };
            if self.spec.restart == RestartPolicy::Never {
                self.set(|s| {
                    s.state = State::Failed;
                    s.message = Some(format!("{why} (restart = never)"));
                });
                down = Some(Down::Failed);
                continue;
            }
            if crashes.record(Instant::now()) {
                let retry = match self.spec.crash_loop.retry_after {
                    Some(d) => format!("; trying again in {}", humantime::format_duration(d)),
                    None => "; not retried (retry_after = never): `start` it".to_string(),
                };
                let msg = format!(
                    "crash loop: {} exits within {} (limit {}); last: {why}{retry}",
                    crashes.count(),
                    humantime::format_duration(self.spec.crash_loop.window),
                    self.spec.crash_loop.max_restarts
                );
                tracing::error!(service = %self.spec.name, "{msg}");
                self.note(&msg);
                self.set(|s| {
                    s.state = State::Failed;
                    s.message = Some(msg);
                });
                down = Some(Down::CrashLoop);
                continue;
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::warn!(service = %self.spec.name, "{why}; restarting in {delay:?}");
            self.set(|s| {
                s.state = State::Backoff;
                s.message = Some(format!("{why}; restarting in {} ms", delay.as_millis()));
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                c = self.ctl.recv() => match c {
                    None => return,
                    Some(Control::Stop) => {
                        self.set(|s| s.state = State::Stopped);
                        down = Some(Down::Stopped);
                    }
                    Some(c) => {
                        self.cause = if c == Control::EnvChanged { "env" } else { "manual" };
                        backoff.reset()
                    }
                }
            }
        }
    }

    /// Waits until every dependency meets its condition. Returns the command that
    /// interrupted the wait (`Stop`), `None` when the channel closed, `Start` when met.
    async fn wait_dependencies(&mut self) -> Option<Control> {
        let mut tick = self.shared.tick.subscribe();
        loop {
            let unmet: Vec<String> = self
                .spec
                .depends_on
                .iter()
                .filter(|(dep, cond)| {
                    let st = self.shared.status_of(dep);
                    !match cond {
                        DependsCondition::Started => st.is_started(),
                        DependsCondition::Ready => st.ready,
                    }
                })
                .map(|(d, c)| format!("{d} {}", c.as_str()))
                .collect();
            if unmet.is_empty() {
                return Some(Control::Start);
            }
            let msg = format!("waiting for {}", unmet.join(", "));
            if self.status.borrow().message.as_deref() != Some(msg.as_str()) {
                self.set(|s| s.message = Some(msg));
            }
            tokio::select! {
                r = tick.changed() => if r.is_err() { return None },
                c = self.ctl.recv() => match c {
                    None => return None,
                    Some(Control::Stop) => return Some(Control::Stop),
                    Some(_) => {}
                }
            }
        }
    }

    /// Spawns one process and runs it until it ends for any reason.
    async fn run_once(&mut self) -> Ended {
        let env = if self.spec.env_injection { self.shared.injected_env_for(&self.spec.name) } else { Vec::new() };
        // A `log` probe matches lines from here on: this process's output only.
        let log_start = self.logs.next_seq();
        let Spawned { pid, mut exit } = match spawn(&self.spec, self.run_as.as_ref(), &env, &self.shared.reaper, &self.logs, self.tty.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                let errno = e.raw_os_error().map(|n| format!(", {}", nix::errno::Errno::from_raw(n))).unwrap_or_default();
                let why = format!("cannot start {:?}: {e}{errno}", self.spec.command[0]);
                self.note(&why);
                return Ended::SpawnFailed(why);
            }
        };
        tracing::info!(service = %self.spec.name, pid, "started");
        let first = self.status.borrow().spawns == 0;
        if !first {
            crate::metrics::restarted(&self.spec.name, self.cause);
        }
        self.cause = "crash";
        let has_startup = self.spec.startup.is_some();
        self.set(|s| {
            s.pid = Some(pid);
            s.ready = false;
            s.started_at = Some(now_ms());
            s.spawns += 1;
            if !first {
                s.restarts += 1;
            }
            s.state = if has_startup { State::Starting } else { State::Running };
            s.message = None;
        });

        let (startup_tx, mut startup_rx) = mpsc::channel(4);
        let (ready_tx, mut ready_rx) = mpsc::channel(4);
        let (live_tx, mut live_rx) = mpsc::channel(4);
        let mut probes = tokio::task::JoinSet::new();
        match &self.spec.startup {
            Some(p) => self.spawn_probe(&mut probes, p, startup_tx, false, log_start),
            None => self.start_main_probes(&mut probes, ready_tx.clone(), live_tx.clone(), log_start),
        }
        let mut mem_tick = tokio::time::interval(Duration::from_secs(1));
        mem_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = self.shared.tick.subscribe();
        let watched: Vec<(String, u64)> =
            self.spec.restart_with.iter().map(|n| (n.clone(), self.shared.status_of(n).spawns)).collect();

        let ended = loop {
            tokio::select! {
                r = &mut exit => {
                    let info = r.unwrap_or(ExitInfo { code: None, signal: None, at_ms: now_ms() });
                    tracing::warn!(service = %self.spec.name, pid, "exited with {info}");
                    self.note(&format!("process {pid} exited with {info}"));
                    probes.abort_all();
                    // Whatever the leader left in its group goes too.
                    stop_group(&self.shared.reaper, &self.spec.name, pid, self.spec.stop_signal, self.spec.stop_timeout, None).await;
                    self.set(|s| { s.pid = None; s.ready = false; s.last_exit = Some(info); });
                    break Ended::Exited(info);
                }
                c = self.ctl.recv() => match c {
                    Some(Control::Start) => {}
                    Some(Control::Stop) | None => break self.stop(pid, &mut exit, &mut probes, Ended::Stopped, "stop requested").await,
                    Some(Control::Restart) => break self.stop(pid, &mut exit, &mut probes, Ended::Restart("manual"), "restart requested").await,
                    Some(Control::EnvChanged) => if self.shared.env_stale(&self.spec.name) {
                        break self.stop(pid, &mut exit, &mut probes, Ended::Restart("env"), "the injected environment changed").await;
                    },
                },
                Some(v) = startup_rx.recv() => match v {
                    Verdict::Pass => {
                        self.set(|s| if s.state == State::Starting { s.state = State::Running });
                        self.start_main_probes(&mut probes, ready_tx.clone(), live_tx.clone(), log_start);
                    }
                    Verdict::Fail if self.shared.in_grace() => {
                        tracing::info!(service = %self.spec.name, "startup probe failing during the resume grace period; not restarting yet");
                    }
                    Verdict::Fail => {
                        let why = "startup probe failed".to_string();
                        break self.stop(pid, &mut exit, &mut probes, Ended::Killed(why.clone(), None, "liveness"), &why).await;
                    }
                },
                Some(v) = ready_rx.recv() => match v {
                    Verdict::Pass => {
                        tracing::info!(service = %self.spec.name, "ready");
                        self.set(|s| { s.state = State::Ready; s.ready = true; s.ready_at = Some(now_ms()); s.message = None; });
                    }
                    Verdict::Fail => {
                        if self.status.borrow().ready {
                            tracing::warn!(service = %self.spec.name, "readiness probe failing: not ready");
                            self.set(|s| { s.state = State::Unhealthy; s.ready = false; s.message = Some("readiness probe failing".into()); });
                        }
                    }
                },
                Some(v) = live_rx.recv() => {
                    if v == Verdict::Fail && self.shared.in_grace() {
                        tracing::info!(service = %self.spec.name, "liveness probe failing during the resume grace period; not restarting yet");
                    } else if v == Verdict::Fail {
                        let why = "liveness probe failed".to_string();
                        break self.stop(pid, &mut exit, &mut probes, Ended::Killed(why.clone(), None, "liveness"), &why).await;
                    }
                }
                _ = mem_tick.tick(), if self.spec.memory_limit.is_some() => {
                    let limit = self.spec.memory_limit.unwrap_or(u64::MAX);
                    let used: u64 = procs::group_async(pid).await.iter().map(|p| p.rss_bytes).sum();
                    if used > limit {
                        let why = format!("memory limit exceeded: {} MiB > {} MiB", used >> 20, limit >> 20);
                        break self.stop(pid, &mut exit, &mut probes, Ended::Killed(why.clone(), None, "memory"), &why).await;
                    }
                }
                r = tick.changed(), if !watched.is_empty() => {
                    if r.is_ok() {
                        let again = watched.iter().find(|(n, seen)| self.shared.status_of(n).spawns > *seen).map(|(n, _)| n.clone());
                        if let Some(other) = again {
                            let why = format!("restart_with: {other} restarted");
                            break self.stop(pid, &mut exit, &mut probes, Ended::Restart("restart_with"), &why).await;
                        }
                    }
                }
            }
        };
        if let Ended::Killed(why, Some(info), _) = &ended {
            tracing::debug!(service = %self.spec.name, "{why}: {info}");
        }
        ended
    }

    /// Starts readiness and liveness probes (after startup passed, or at once).
    fn start_main_probes(&self, probes: &mut tokio::task::JoinSet<()>, ready_tx: mpsc::Sender<Verdict>, live_tx: mpsc::Sender<Verdict>, log_start: u64) {
        match &self.spec.readiness {
            Some(p) => self.spawn_probe(probes, p, ready_tx, false, log_start),
            None => {
                // No readiness probe: ready once started (Kubernetes semantics).
                let _ = ready_tx.try_send(Verdict::Pass);
            }
        }
        if let Some(p) = &self.spec.liveness {
            self.spawn_probe(probes, p, live_tx, true, log_start);
        }
    }

    /// Runs probe `p` as a task: a `log` probe watches this service's output from
    /// `log_start` on; every other kind polls.
    fn spawn_probe(&self, probes: &mut tokio::task::JoinSet<()>, p: &crate::config::ProbeSpec, tx: mpsc::Sender<Verdict>, passed_first: bool, log_start: u64) {
        match &p.kind {
            crate::config::ProbeKind::Log(re) => {
                probes.spawn(probe::log::watch(p.clone(), re.clone(), self.logs.clone(), log_start, tx));
            }
            _ => {
                probes.spawn(probe::run(p.clone(), self.shared.reaper.clone(), tx, passed_first, self.spec.name.clone()));
            }
        }
    }

    /// Stops the running process group and records how it ended.
    async fn stop(
        &mut self,
        pid: i32,
        exit: &mut tokio::sync::oneshot::Receiver<ExitInfo>,
        probes: &mut tokio::task::JoinSet<()>,
        outcome: Ended,
        why: &str,
    ) -> Ended {
        tracing::info!(service = %self.spec.name, pid, "stopping: {why}");
        self.note(&format!("stopping process {pid}: {why}"));
        probes.abort_all();
        self.set(|s| {
            s.state = State::Stopping;
            s.ready = false;
            s.message = Some(why.to_string());
        });
        let info = stop_group(&self.shared.reaper, &self.spec.name, pid, self.spec.stop_signal, self.spec.stop_timeout, Some(exit)).await;
        self.set(|s| {
            s.pid = None;
            if info.is_some() {
                s.last_exit = info;
            }
        });
        match outcome {
            Ended::Killed(w, _, cause) => Ended::Killed(w, info, cause),
            o => o,
        }
    }
}
