//! The sandbox supervisor: one binary that starts, probes, restarts and stops the
//! services of an app-builder VM, and serves its control API.
//!
//! Modules, one concern each:
//! - [`config`]: the TOML config, its defaults and validation;
//! - [`engine`]: spawning, reaping, restarting and stopping services;
//! - [`probe`]: tcp/http/cdp/exec/file probes;
//! - [`logs`]: per-service output buffers; [`logfile`]: their optional rotated files;
//! - [`sse`]: replayable event streams (ids, `Last-Event-ID`, heartbeat);
//! - [`metrics`]: the Prometheus page; [`sysstats`]: the machine figures;
//! - [`reload`]: re-reading the config file into the running stack;
//! - [`api`]: the `/_supervisor/` control routes, token auth and env injection;
//! - [`proxy`], [`server`]: the port-3000 reverse proxy and public listener;
//! - [`envfile`]: the app's `.env` file;
//! - [`inject`]: the injected environment (both env scopes, Linux's limits);
//! - [`untrusted`]: reading files in directories the agent controls;
//! - [`guard`]: the firewall guard of the internal ports;
//! - [`resume`]: pause/resume detection and its grace period;
//! - [`pty`]: terminals: shell sessions over WebSocket, `tty` services, `ctl attach`;
//! - [`browser`]: the browser sensor (screenshots, checks, page events over CDP);
//! - [`acp`]: `supervisor acp`, the agent behind ACP's HTTP/WebSocket transport;
//! - [`cli`], [`run`], [`ctl`], [`client`], [`logging`]: the binary's commands.

pub mod acp;
pub mod api;
pub mod browser;
pub mod cli;
pub mod client;
pub mod config;
pub mod ctl;
pub mod engine;
pub mod envfile;
pub mod inject;
pub mod guard;
pub mod logfile;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod proxy;
pub mod pty;
pub mod resume;
pub mod run;
pub mod server;
pub mod sse;
pub mod stdio;
pub mod sysstats;
pub mod untrusted;

/// The text of a caught panic's payload, for the log.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
