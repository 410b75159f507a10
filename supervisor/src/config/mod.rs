//! Configuration: parse `supervisor.toml` (or the embedded default), apply CLI overrides,
//! expand `${APP_DIR}`/`${RUNTIME_DIR}`/`${CONFIG_DIR}`, and validate into a [`Config`].
//! Every error names the file, the key and the reason.

pub mod duration;
pub mod model;
mod plan;
mod resolve;

pub use model::{DependsCondition, GuardMode, RestartPolicy};
pub use plan::start_plan;
pub use resolve::resolve;

use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The production stack, compiled into the binary (same text as `opt/supervisor.toml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../opt/supervisor.toml");
/// Where the image puts the production config.
pub const DEFAULT_CONFIG_PATH: &str = "/opt/supervisor/supervisor.toml";
/// The name shown for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// A configuration error: which file, which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// The config file (or `<embedded default>`).
    pub file: String,
    /// Dotted key path, e.g. `services.web.readiness.period`, or `line L, column C`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Values from the command line / environment that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--app-dir`.
    pub app_dir: Option<PathBuf>,
    /// `--runtime-dir`.
    pub runtime_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--service-user` (Some("") = don't switch users).
    pub service_user: Option<String>,
    /// `--port-guard`.
    pub port_guard: Option<GuardMode>,
}

/// The checked configuration of a whole stack.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (path or `<embedded default>`).
    pub source: String,
    /// Stack-wide settings.
    pub settings: Settings,
    /// Services in a valid start order (dependencies first, else file order).
    pub services: Vec<ServiceSpec>,
}

/// Stack-wide settings after overrides.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Public listener address.
    pub listen: String,
    /// The app directory (Vite's cwd, holds `.env`).
    pub app_dir: PathBuf,
    /// Holds the control socket and token.
    pub runtime_dir: PathBuf,
    /// The directory of the config file (`${CONFIG_DIR}`).
    pub config_dir: PathBuf,
    /// The account services drop to: `None` = each service's own `user`, `Some("")` = none.
    pub service_user: Option<String>,
    /// Whether to install the firewall guard, and whether readiness waits for it.
    pub port_guard: GuardMode,
    /// Ports besides the listen port that the guard lets outside traffic reach.
    pub port_guard_allow: Vec<u16>,
    /// Deadline for stopping the whole stack.
    pub shutdown_timeout: Duration,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Token file path.
    pub token_file: PathBuf,
    /// The app's env file.
    pub env_file: PathBuf,
    /// Lines kept per service log ring buffer.
    pub log_lines: usize,
    /// Bytes kept per service log ring buffer.
    pub log_bytes: usize,
    /// The services-scope env file (root-only, outside the app dir).
    pub services_env_file: PathBuf,
    /// The service whose readiness gates the proxy.
    pub proxy_service: String,
    /// `HOST:PORT` the proxy forwards to.
    pub proxy_upstream: String,
    /// E2B's sandbox id file, watched for changes.
    pub sandbox_id_file: PathBuf,
    /// Grace period after a resume.
    pub resume_grace: Duration,
    /// How long a terminal session outlives its last client.
    pub pty_idle: Duration,
    /// Status changes kept for event replay.
    pub event_ring: usize,
}

/// The `[supervisor]` keys whose value differs between `old` and `new`: the running
/// supervisor keeps its listener, socket, files and limits, so a reload reports these as
/// needing a restart of the supervisor rather than silently ignoring them.
pub fn settings_needing_restart(old: &Settings, new: &Settings) -> Vec<String> {
    let pairs: [(&str, String, String); 17] = [
        ("listen", old.listen.clone(), new.listen.clone()),
        ("port_guard", format!("{:?}", old.port_guard), format!("{:?}", new.port_guard)),
        ("port_guard_allow", format!("{:?}", old.port_guard_allow), format!("{:?}", new.port_guard_allow)),
        ("shutdown_timeout", format!("{:?}", old.shutdown_timeout), format!("{:?}", new.shutdown_timeout)),
        ("control_socket", format!("{:?}", old.control_socket), format!("{:?}", new.control_socket)),
        ("token_file", format!("{:?}", old.token_file), format!("{:?}", new.token_file)),
        ("env_file", format!("{:?}", old.env_file), format!("{:?}", new.env_file)),
        ("log_lines", old.log_lines.to_string(), new.log_lines.to_string()),
        ("log_bytes", old.log_bytes.to_string(), new.log_bytes.to_string()),
        ("services_env_file", format!("{:?}", old.services_env_file), format!("{:?}", new.services_env_file)),
        ("proxy_service", old.proxy_service.clone(), new.proxy_service.clone()),
        ("proxy_upstream", old.proxy_upstream.clone(), new.proxy_upstream.clone()),
        ("sandbox_id_file", format!("{:?}", old.sandbox_id_file), format!("{:?}", new.sandbox_id_file)),
        ("resume_grace", format!("{:?}", old.resume_grace), format!("{:?}", new.resume_grace)),
        ("event_ring", old.event_ring.to_string(), new.event_ring.to_string()),
        ("pty_idle", format!("{:?}", old.pty_idle), format!("{:?}", new.pty_idle)),
        ("app_dir", format!("{:?}", old.app_dir), format!("{:?}", new.app_dir)),
    ];
    pairs.into_iter().filter(|(_, a, b)| a != b).map(|(k, _, _)| k.to_string()).collect()
}

/// One checked service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Its name (the `[services.NAME]` key).
    pub name: String,
    /// argv.
    pub command: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// User to drop to when root (after `service_user` override).
    pub user: Option<String>,
    /// Dependencies.
    pub depends_on: Vec<(String, DependsCondition)>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Backoff between restarts.
    pub backoff: BackoffSpec,
    /// Crash-loop limit.
    pub crash_loop: CrashLoopSpec,
    /// Startup probe.
    pub startup: Option<ProbeSpec>,
    /// Readiness probe.
    pub readiness: Option<ProbeSpec>,
    /// Liveness probe.
    pub liveness: Option<ProbeSpec>,
    /// Stop signal.
    pub stop_signal: Signal,
    /// Grace before SIGKILL.
    pub stop_timeout: Duration,
    /// Resident-memory cap of the process group, in bytes.
    pub memory_limit: Option<u64>,
    /// Counts for readiness.
    pub required: bool,
    /// Restart together with these services.
    pub restart_with: Vec<String>,
    /// Receives injected env and restarts on change.
    pub env_injection: bool,
    /// Declared listening port.
    pub port: Option<u16>,
    /// Never started.
    pub disabled: bool,
    /// Runs under a pseudo-terminal.
    pub tty: bool,
    /// Output also written to a size-rotated file.
    pub log_file: Option<LogFileSpec>,
}

/// A checked `log_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileSpec {
    /// The file.
    pub path: PathBuf,
    /// Rotate past this size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// Capped exponential backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffSpec {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// Growth factor.
    pub multiplier: f64,
    /// Stable run time that resets the backoff.
    pub reset_after: Duration,
    /// Random spread fraction.
    pub jitter: f64,
}

/// Crash-loop limit: `max_restarts` exits within `window` → `failed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrashLoopSpec {
    /// Exits allowed within the window.
    pub max_restarts: u32,
    /// The window.
    pub window: Duration,
    /// Rest before a `failed` (crash-looped) service is tried again; None = never.
    pub retry_after: Option<Duration>,
}

/// A checked probe.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// What it checks.
    pub kind: ProbeKind,
    /// Wait before the first attempt.
    pub initial_delay: Duration,
    /// Interval once passed.
    pub period: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Consecutive failures that count.
    pub failure_threshold: u32,
    /// Consecutive successes that count.
    pub success_threshold: u32,
}

/// The kinds of probe.
#[derive(Debug, Clone)]
pub enum ProbeKind {
    /// TCP connect to `HOST:PORT`.
    Tcp(String),
    /// HTTP GET with an expected status (None = 200..400).
    Http {
        /// URL (http only).
        url: String,
        /// Expected status.
        status: Option<u16>,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// `Browser.getVersion` over the CDP WebSocket of this DevTools HTTP endpoint.
    Cdp(String),
    /// Command exits 0.
    Exec(Vec<String>),
    /// Path exists.
    File(PathBuf),
    /// The X display (e.g. `:99`) completes an X11 connection setup.
    X11(String),
    /// A line of the service's own output since its start matches.
    Log(regex::Regex),
}

impl ProbeKind {
    /// Short human description, for plans and logs.
    pub fn describe(&self) -> String {
        match self {
            ProbeKind::Tcp(a) => format!("tcp {a}"),
            ProbeKind::Http { url, status, .. } => match status {
                Some(s) => format!("http {url} -> {s}"),
                None => format!("http {url}"),
            },
            ProbeKind::Cdp(u) => format!("cdp {u}"),
            ProbeKind::Exec(argv) => format!("exec {}", argv.join(" ")),
            ProbeKind::File(p) => format!("file {}", p.display()),
            ProbeKind::X11(d) => format!("x11 {d}"),
            ProbeKind::Log(r) => format!("log /{}/", r.as_str()),
        }
    }

    /// The kind's name, a bounded metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            ProbeKind::Tcp(_) => "tcp",
            ProbeKind::Http { .. } => "http",
            ProbeKind::Cdp(_) => "cdp",
            ProbeKind::Exec(_) => "exec",
            ProbeKind::File(_) => "file",
            ProbeKind::X11(_) => "x11",
            ProbeKind::Log(_) => "log",
        }
    }
}

/// Chooses and reads the config: an explicit path, else `/opt/supervisor/supervisor.toml`
/// if present, else the embedded default. Returns `(source name, config dir, text)`.
pub fn read_source(explicit: Option<&Path>) -> Result<(String, PathBuf, String), ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Some(PathBuf::from(DEFAULT_CONFIG_PATH)),
        None => None,
    };
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|e| ConfigError {
                file: p.display().to_string(),
                key: "(file)".into(),
                reason: format!("cannot read: {e}"),
            })?;
            let abs = std::path::absolute(&p).unwrap_or_else(|_| p.clone());
            let dir = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
            Ok((p.display().to_string(), dir, text))
        }
        None => Ok((EMBEDDED_NAME.into(), PathBuf::from("/opt/supervisor"), EMBEDDED_DEFAULT.into())),
    }
}

/// Reads, parses and validates the config in one step.
pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let (source, dir, text) = read_source(explicit)?;
    resolve(&source, &dir, &text, overrides)
}
