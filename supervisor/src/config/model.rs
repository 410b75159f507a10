//! The TOML shape of `supervisor.toml`, exactly as operators write it (SPEC §4).
//! These types are only parsed; [`super::resolve`] turns them into checked settings.

use super::duration::Dur;
use indexmap::IndexMap;
use serde::Deserialize;

/// The whole file: stack-wide settings plus one table per service.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The `[supervisor]` table.
    #[serde(default)]
    pub supervisor: SupervisorSection,
    /// `[services.NAME]` tables, in file order.
    #[serde(default)]
    pub services: IndexMap<String, ServiceSection>,
}

/// `[supervisor]`: stack-wide settings, each overridable by its CLI flag.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    /// Public listener, default `0.0.0.0:3000`.
    pub listen: Option<String>,
    /// Account services drop to when the supervisor is root; replaces every service's `user`.
    pub service_user: Option<String>,
    /// Firewall guard of the internal ports: `off`, `on` or `required` (booleans too).
    pub port_guard: Option<GuardMode>,
    /// Ports besides the listen port that outside traffic may reach (default `[49983]`, E2B's envd).
    pub port_guard_allow: Option<Vec<u16>>,
    /// Deadline for stopping the whole stack.
    pub shutdown_timeout: Option<Dur>,
    /// Control socket path, default `${RUNTIME_DIR}/control.sock`.
    pub control_socket: Option<String>,
    /// Token file path, default `${RUNTIME_DIR}/token`.
    pub token_file: Option<String>,
    /// The app's env file, default `${APP_DIR}/.env`.
    pub env_file: Option<String>,
    /// Lines kept per service in its log ring buffer.
    pub log_lines: Option<usize>,
    /// Bytes kept per service in its log ring buffer (`"1MiB"`).
    pub log_bytes: Option<ByteSize>,
    /// The services-scope env file (secrets only the services see), default
    /// `${RUNTIME_DIR}/services.env`; never under the app dir.
    pub services_env_file: Option<String>,
    /// The service whose readiness gates the proxy (default `vite`).
    pub proxy_service: Option<String>,
    /// Where the proxy forwards to (default `127.0.0.1:<port of proxy_service>`, else `127.0.0.1:5173`).
    pub proxy_upstream: Option<String>,
    /// E2B's sandbox id file; a change means the VM was resumed as a new sandbox.
    pub sandbox_id_file: Option<String>,
    /// After a resume, liveness and startup failures do not restart services for this long.
    pub resume_grace: Option<Dur>,
    /// How long a terminal session outlives its last client (default 10 min).
    pub pty_idle: Option<Dur>,
    /// Status changes kept for `/_supervisor/events` replay (`Last-Event-ID`), default 1024.
    pub event_ring: Option<usize>,
}

/// The port guard's mode (SPEC §7): `required` also keeps `/readyz` at 503 while the
/// guard is not active, so a sandbox is never snapshotted with its internal ports exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// No firewall rules.
    #[default]
    Off,
    /// Install the rules; report a failure in `status`.
    On,
    /// Install the rules; not ready while they are not active.
    Required,
}

impl<'de> Deserialize<'de> for GuardMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(b) => Ok(if b { GuardMode::On } else { GuardMode::Off }),
            Raw::S(s) => GuardMode::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl GuardMode {
    /// Parses `off`/`on`/`required` (and the booleans `true`/`false`/`yes`/`no`/`1`/`0`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("required") {
            return Ok(GuardMode::Required);
        }
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(GuardMode::On),
            "off" | "false" | "0" | "no" => Ok(GuardMode::Off),
            _ => Err(format!("expected \"off\", \"on\" or \"required\", got {s:?}")),
        }
    }
}

/// When a dependency counts as satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DependsCondition {
    /// The dependency's process has been spawned (and passed its startup probe).
    Started,
    /// The dependency is ready (its readiness probe passed).
    Ready,
}

impl DependsCondition {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DependsCondition::Started => "started",
            DependsCondition::Ready => "ready",
        }
    }
}

/// What to do when a service's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart on any exit.
    #[default]
    Always,
    /// Restart on a non-zero exit or a signal.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// A `[services.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// argv; the first element is looked up in `PATH`.
    pub command: Vec<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Extra environment (on top of the supervisor's own).
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// User to drop to when the supervisor runs as root.
    pub user: Option<String>,
    /// Dependencies and the condition each must reach first.
    #[serde(default)]
    pub depends_on: IndexMap<String, DependsCondition>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Capped exponential backoff between restarts.
    #[serde(default)]
    pub backoff: BackoffSection,
    /// How many restarts within a window make a crash loop.
    #[serde(default)]
    pub crash_loop: CrashLoopSection,
    /// Gates the other probes until it first succeeds.
    pub startup: Option<ProbeSection>,
    /// Gates dependents and `/readyz`.
    pub readiness: Option<ProbeSection>,
    /// Restarts the service past its failure threshold.
    pub liveness: Option<ProbeSection>,
    /// Signal sent to the process group on stop (`SIGTERM`, `TERM`, `INT`, ...).
    pub stop_signal: Option<String>,
    /// How long to wait after the stop signal before SIGKILL to the group.
    pub stop_timeout: Option<Dur>,
    /// Restart when the group's resident memory exceeds this (`"512MiB"`, `"2GB"`, or bytes).
    pub memory_limit: Option<ByteSize>,
    /// Whether the service counts for readiness.
    pub required: Option<bool>,
    /// Restart this service whenever one of these restarts.
    #[serde(default)]
    pub restart_with: Vec<String>,
    /// Give the service the injected env and restart it when that changes.
    #[serde(default)]
    pub env_injection: bool,
    /// The TCP port the service listens on (documentation, duplicate check, port guard).
    pub port: Option<u16>,
    /// Keep the slot but never start it.
    #[serde(default)]
    pub disabled: bool,
    /// Run it under a pseudo-terminal (`ctl attach` joins it).
    #[serde(default)]
    pub tty: bool,
    /// Also append the service's output to this file, rotated by size (off by default).
    pub log_file: Option<LogFileSection>,
}

/// `log_file = { path, max_size, keep }`: a service's output on disk, for post-mortems
/// that outlive the ring buffer. `path.1` … `path.<keep>` are the rotated files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFileSection {
    /// The file (`${RUNTIME_DIR}` etc. expand).
    pub path: String,
    /// Rotate when it would pass this size (default `"10MiB"`).
    pub max_size: Option<ByteSize>,
    /// Rotated files kept (default 3; 0 = truncate instead).
    pub keep: Option<u32>,
}

/// `backoff = { initial, max, multiplier, reset_after, jitter }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackoffSection {
    /// First delay.
    pub initial: Option<Dur>,
    /// Cap.
    pub max: Option<Dur>,
    /// Growth factor per consecutive failure.
    pub multiplier: Option<f64>,
    /// Running this long without exiting resets the backoff.
    pub reset_after: Option<Dur>,
    /// Random spread, as a fraction of the delay (0.0 - 1.0).
    pub jitter: Option<f64>,
}

/// `crash_loop = { max_restarts, window }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CrashLoopSection {
    /// Exits within `window` that move the service to `failed`.
    pub max_restarts: Option<u32>,
    /// The window.
    pub window: Option<Dur>,
    /// How long a crash-looped (`failed`) service rests before it is tried again;
    /// `"never"` keeps it failed until a `start`.
    pub retry_after: Option<DurOrNever>,
}

/// A duration, or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurOrNever(pub Option<std::time::Duration>);

impl<'de> Deserialize<'de> for DurOrNever {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().eq_ignore_ascii_case("never") {
            return Ok(DurOrNever(None));
        }
        humantime::parse_duration(s.trim())
            .map(|d| DurOrNever(Some(d)))
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e} (write e.g. \"60s\", or \"never\")")))
    }
}

/// A probe: exactly one kind key plus timing.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// `HOST:PORT` accepts a TCP connection.
    pub tcp: Option<String>,
    /// URL answers with `status` (default any 2xx/3xx).
    pub http: Option<String>,
    /// Expected HTTP status.
    pub status: Option<u16>,
    /// Request headers for the http probe.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Chromium DevTools endpoint answers `Browser.getVersion`.
    pub cdp: Option<String>,
    /// Command exits 0.
    pub exec: Option<Vec<String>>,
    /// Path exists.
    pub file: Option<String>,
    /// X display (`":99"`) answers an X11 connection setup.
    pub x11: Option<String>,
    /// A line of the service's own output since its start matches this regex.
    pub log: Option<String>,
    /// Wait before the first run.
    pub initial_delay: Option<Dur>,
    /// Interval once the probe has succeeded.
    pub period: Option<Dur>,
    /// Per-attempt timeout.
    pub timeout: Option<Dur>,
    /// Consecutive failures that count as failed.
    pub failure_threshold: Option<u32>,
    /// Consecutive successes that count as passed.
    pub success_threshold: Option<u32>,
}

/// A byte count written as `"512MiB"`, `"1.5GB"`, `"300M"` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl ByteSize {
    /// Parses `"512MiB"`, `"2G"`, `"1000"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("bad size {s:?} (write e.g. \"512MiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            u => return Err(format!("bad size unit {u:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}
