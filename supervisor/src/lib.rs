//! The sandbox supervisor: one binary that starts, probes, restarts and stops the
//! services of an app-builder VM, and serves its control API.

pub mod envfile;
