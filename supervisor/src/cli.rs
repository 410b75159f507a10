//! The command line (SPEC §3). Every flag of `run` also reads an env var.

use crate::logging::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The sandbox supervisor.
#[derive(Debug, Parser)]
#[command(name = "supervisor", version, about = "Starts, probes, restarts and serves the services of an app-builder VM")]
pub struct Cli {
    /// Format of the supervisor's own log (stderr); filter with RUST_LOG.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "SUPERVISOR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the stack in the foreground.
    Run(StackArgs),
    /// Validate the config and print the start plan.
    Check(StackArgs),
    /// Exit 0 once the running supervisor reports every required service ready.
    Ready {
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Where the control socket lives.
        #[arg(long, env = "SUPERVISOR_RUNTIME_DIR", default_value = "/run/supervisor")]
        runtime_dir: PathBuf,
    },
    /// Talk to the running supervisor over its control socket.
    Ctl(CtlArgs),
    /// Serve a stdio ACP agent over ACP's HTTP/WebSocket transport at /acp.
    Acp {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:3002")]
        listen: String,
        /// The agent's working directory (default: the current one).
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// The agent command, after `--`.
        #[arg(last = true, required = true)]
        agent: Vec<String>,
    },
}

/// Where the config is and what overrides it.
#[derive(Debug, Args, Clone)]
pub struct StackArgs {
    /// Config file (default /opt/supervisor/supervisor.toml if present, else the embedded default).
    #[arg(long, env = "SUPERVISOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// The app directory: Vite's cwd, holds .env.
    #[arg(long, env = "SUPERVISOR_APP_DIR")]
    pub app_dir: Option<PathBuf>,
    /// Holds the control socket and the token file.
    #[arg(long, env = "SUPERVISOR_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Public listener address.
    #[arg(long, env = "SUPERVISOR_LISTEN")]
    pub listen: Option<String>,
    /// Account services drop to when root; replaces every service's `user` (empty: don't switch).
    #[arg(long, env = "SUPERVISOR_SERVICE_USER")]
    pub service_user: Option<String>,
    /// Firewall guard of the internal ports: off, on or required (not ready without it).
    #[arg(long, env = "SUPERVISOR_PORT_GUARD", value_parser = crate::config::GuardMode::parse)]
    pub port_guard: Option<crate::config::GuardMode>,
}

impl StackArgs {
    /// The overrides these flags make.
    pub fn overrides(&self) -> crate::config::Overrides {
        crate::config::Overrides {
            app_dir: self.app_dir.clone(),
            runtime_dir: self.runtime_dir.clone(),
            listen: self.listen.clone(),
            service_user: self.service_user.clone(),
            port_guard: self.port_guard,
        }
    }
}

/// `ctl` options and subcommand.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Where the control socket lives.
    #[arg(long, global = true, env = "SUPERVISOR_RUNTIME_DIR", default_value = "/run/supervisor")]
    pub runtime_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// `ctl env` only: which env file, `app` (the app's `.env`, the default) or `services`
    /// (root-only, for secrets only the services see).
    #[arg(long, global = true, value_parser = ["app", "services"])]
    pub scope: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every service's state.
    Status,
    /// Start a stopped or failed service.
    Start {
        /// Service name.
        name: String,
    },
    /// Stop a service and keep it stopped.
    Stop {
        /// Service name.
        name: String,
    },
    /// Restart a service.
    Restart {
        /// Service name.
        name: String,
    },
    /// A service's recent output.
    Logs {
        /// Service name.
        name: String,
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many past lines.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// A screenshot of the app as served on the public port (the browser sensor).
    Screenshot {
        /// Path of the app to load.
        #[arg(default_value = "/")]
        path: String,
        /// Where to write the image.
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// Viewport width (clamped to 100..3840).
        #[arg(long)]
        width: Option<u32>,
        /// Viewport height (clamped to 100..2160).
        #[arg(long)]
        height: Option<u32>,
        /// The whole page, not only the viewport.
        #[arg(long)]
        full_page: bool,
        /// `png` (default) or `jpeg`.
        #[arg(long)]
        format: Option<String>,
        /// JPEG quality 1..100.
        #[arg(long)]
        quality: Option<u32>,
    },
    /// Whether the app renders: document status, console errors, exceptions, failed
    /// requests, Vite's error overlay (exit 1 when not ok).
    Check {
        /// Path of the app to load.
        #[arg(default_value = "/")]
        path: String,
    },
    /// The env files of injected secrets (`--scope app|services`).
    #[command(subcommand)]
    Env(EnvCommand),
    /// The API token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Join a `tty = true` service's terminal (Ctrl-] detaches, the service keeps running).
    Attach {
        /// Service name.
        name: String,
    },
    /// Re-read the config file and apply the difference (as SIGHUP does).
    Reload,
    /// The Prometheus metrics page.
    Metrics,
}

/// `ctl env` subcommands.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set variables: `K=V ...` (restarts services with env_injection). `K=-` reads that
    /// value from standard input (one per call; one trailing newline is stripped).
    Set {
        /// `KEY=VALUE` pairs; `KEY=-` takes the value from standard input.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Remove variables.
    Unset {
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List the keys (never the values).
    Keys,
}

/// `ctl token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a fresh random token to the token file (prints the file, not the token).
    Rotate,
}
