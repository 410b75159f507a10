//! Reloading the config file into the running stack (`POST /_supervisor/reload`,
//! `ctl reload`, SIGHUP): re-read it with the same command-line overrides, validate it
//! whole, and only then apply the difference ([`crate::engine::Supervisor::apply`]).

use crate::config::{ConfigError, Overrides};
use crate::engine::{ReloadReport, Supervisor};
use std::path::PathBuf;

/// Where the running config came from, to read it again the same way.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not read or validate (names file, key and reason).
    #[error("{0}")]
    Invalid(ConfigError),
    /// It validated but cannot be applied (a user that does not exist, shutting down).
    #[error("{0}")]
    Refused(String),
}

impl Reloader {
    /// Reads `path` (or the default/embedded config when `None`) with `overrides`, as at start.
    pub fn new(path: Option<PathBuf>, overrides: Overrides) -> Self {
        Reloader { path, overrides }
    }

    /// Re-reads and applies the config; nothing changes unless it is entirely valid.
    pub async fn reload(&self, sup: &Supervisor) -> Result<ReloadReport, ReloadError> {
        let (path, ov) = (self.path.clone(), self.overrides.clone());
        let loaded = tokio::task::spawn_blocking(move || crate::config::load(path.as_deref(), &ov))
            .await
            .map_err(|e| ReloadError::Refused(format!("internal error reading the config: {e}")))?;
        let result = match loaded {
            Err(e) => Err(ReloadError::Invalid(e)),
            Ok(cfg) => sup.apply(cfg).await.map_err(ReloadError::Refused),
        };
        crate::metrics::reload(match &result {
            Ok(_) => "ok",
            Err(ReloadError::Invalid(_)) => "invalid",
            Err(ReloadError::Refused(_)) => "refused",
        });
        if let Err(e) = &result {
            tracing::error!("reload refused, nothing changed: {e}");
        }
        result
    }
}
