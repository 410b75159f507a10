//! Terminals (SPEC §8), built on `portable-pty`: shell sessions served as WebSockets on
//! `/_supervisor/pty`, `tty = true` services, and `ctl attach`.
//!
//! - [`term`]: a process on a new pty, spawned through the engine's one reaper;
//! - [`hub`]: one terminal's fan-out (replay ring, clients, back-pressure, size);
//! - [`ws`]: one WebSocket client of a hub;
//! - [`session`]: shell sessions, their idle timer and cap;
//! - [`kill`]: ending a session's processes;
//! - [`service`]: the terminal slot of a `tty` service;
//! - [`strip`]: a `tty` service's output as log lines;
//! - [`attach`]: the `ctl attach` client.

pub mod attach;
pub mod hub;
pub mod kill;
pub mod service;
pub mod session;
pub mod strip;
pub mod term;
pub mod ws;

pub use service::TtySlot;
