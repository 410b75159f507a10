//! Applying a changed config to the running stack (`reload`, SIGHUP): added services
//! start, removed ones stop, changed ones (any key) restart, the rest keep their process.

use super::{resolve_users, ServiceHandle, Supervisor};
use crate::config::{Config, ServiceSpec};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a reload did, by service name (the API's answer).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// New services, started.
    pub started: Vec<String>,
    /// Services no longer in the file, stopped.
    pub stopped: Vec<String>,
    /// Services whose config changed, restarted with the new one.
    pub restarted: Vec<String>,
    /// Services left running as they were (same process).
    pub unchanged: Vec<String>,
    /// `[supervisor]` settings that changed but only take effect when the supervisor
    /// itself restarts (the running ones are kept).
    pub needs_restart: Vec<String>,
}

/// How a service compares between two configs: the whole checked spec, every key.
fn fingerprint(s: &ServiceSpec) -> String {
    format!("{s:?}")
}

/// Extra wait past a service's `stop_timeout` for its runner to report it down.
const RETIRE_SLACK: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Applies `new` (already validated): stops what is gone or changed, then starts what
    /// is new or changed in `new`'s order (each runner waits for its dependencies, so
    /// they come up in dependency order). Errors — before anything changed — when a
    /// named user does not exist. One reload runs at a time.
    pub async fn apply(&self, new: Config) -> Result<ReloadReport, String> {
        let _one = self.reloading.lock().await;
        if self.shared.is_shutting_down() {
            return Err("the supervisor is shutting down".into());
        }
        let users = resolve_users(&new.services)?;
        let old = self.config();
        let before: HashMap<&str, String> = old.services.iter().map(|s| (s.name.as_str(), fingerprint(s))).collect();
        let mut report = ReloadReport { needs_restart: crate::config::settings_needing_restart(&old.settings, &new.settings), ..Default::default() };
        for s in &old.services {
            if !new.services.iter().any(|n| n.name == s.name) {
                report.stopped.push(s.name.clone());
            }
        }
        for s in &new.services {
            match before.get(s.name.as_str()) {
                None => report.started.push(s.name.clone()),
                Some(f) if *f != fingerprint(s) => report.restarted.push(s.name.clone()),
                Some(_) => report.unchanged.push(s.name.clone()),
            }
        }
        let going: Vec<Arc<ServiceHandle>> =
            report.stopped.iter().chain(&report.restarted).filter_map(|n| self.handle(n)).collect();
        let prior: HashMap<String, super::ServiceStatus> = going.iter().map(|h| (h.spec.name.clone(), self.shared.status_of(&h.spec.name))).collect();
        futures_util::future::join_all(going.iter().map(|h| self.retire(h))).await;
        let kept_logs: HashMap<String, Arc<crate::logs::LogBuffer>> = going.iter().map(|h| (h.spec.name.clone(), h.logs.clone())).collect();
        for (spec, run_as) in new.services.iter().zip(users) {
            if report.started.contains(&spec.name) || report.restarted.contains(&spec.name) {
                self.launch_with(spec.clone(), run_as, &old.settings, kept_logs.get(&spec.name).cloned(), prior.get(&spec.name));
            }
        }
        self.reorder(&new.services);
        for n in &report.stopped {
            self.shared.spawned_env.lock().expect("spawned env").remove(n);
        }
        // The running settings stay: those that need a restart are reported again next time.
        *self.config.lock().expect("config") = Config { source: new.source, settings: old.settings, services: new.services };
        self.shared.tick.send_modify(|t| *t += 1);
        tracing::info!(
            started = ?report.started, stopped = ?report.stopped, restarted = ?report.restarted,
            needs_restart = ?report.needs_restart, "config reloaded"
        );
        Ok(report)
    }

    /// Stops a service for good and removes it from the board (its runner ends when its
    /// command channel is dropped).
    async fn retire(&self, h: &ServiceHandle) {
        let name = &h.spec.name;
        let mut tick = self.shared.tick.subscribe();
        let _ = h.ctl.send(super::Control::Stop).await;
        let down = async {
            while !self.shared.status_of(name).is_down() {
                if tick.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(h.spec.stop_timeout + RETIRE_SLACK, down).await.is_err() {
            tracing::error!(service = %name, "did not stop in time for the reload; killing its group");
            if let Some(pid) = self.shared.status_of(name).pid {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.services.write().expect("services").shift_remove(name);
        self.shared.statuses.write().expect("statuses").shift_remove(name);
    }

    /// Puts the board in the order of `specs` (the new config's start order).
    fn reorder(&self, specs: &[ServiceSpec]) {
        let pos: HashMap<&str, usize> = specs.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let key = |n: &String| pos.get(n.as_str()).copied().unwrap_or(usize::MAX);
        self.services.write().expect("services").sort_by(|a, _, b, _| key(a).cmp(&key(b)));
        self.shared.statuses.write().expect("statuses").sort_by(|a, _, b, _| key(a).cmp(&key(b)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, Overrides};
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        resolve("t.toml", Path::new("/tmp"), text, &Overrides::default()).expect("valid")
    }

    #[test]
    fn any_key_of_a_service_changes_its_fingerprint_and_settings_diffs_are_named() {
        let a = cfg("[services.a]\ncommand = [\"sleep\", \"1\"]\n");
        let same = cfg("[services.a]\ncommand = [\"sleep\", \"1\"]\n");
        let env = cfg("[services.a]\ncommand = [\"sleep\", \"1\"]\nenv = { X = \"1\" }\n");
        let probe = cfg("[services.a]\ncommand = [\"sleep\", \"1\"]\nreadiness = { log = \"up\" }\n");
        assert_eq!(fingerprint(&a.services[0]), fingerprint(&same.services[0]));
        assert_ne!(fingerprint(&a.services[0]), fingerprint(&env.services[0]));
        assert_ne!(fingerprint(&a.services[0]), fingerprint(&probe.services[0]));
        let moved = cfg("[supervisor]\nlisten = \"127.0.0.1:4000\"\nlog_lines = 5\n[services.a]\ncommand = [\"sleep\", \"1\"]\n");
        assert_eq!(crate::config::settings_needing_restart(&a.settings, &moved.settings), ["listen", "log_lines"]);
        assert!(crate::config::settings_needing_restart(&a.settings, &same.settings).is_empty());
    }
}
