//! The port guard (SPEC §7): nftables rules that drop non-loopback TCP traffic to the
//! internal service ports (every service's `port`), installed before the services start
//! and removed at shutdown. Needs root and `nft`; its state shows in `status`.

use crate::engine::command;
use crate::engine::reaper::Reaper;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// The nftables table the guard owns.
pub const TABLE: &str = "supervisor_guard";

/// What `status` reports about the guard.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GuardStatus {
    /// `--port-guard on` was asked for.
    pub enabled: bool,
    /// The rules are installed.
    pub active: bool,
    /// The guarded ports.
    pub ports: Vec<u16>,
    /// Why it is not active although enabled.
    pub error: Option<String>,
}

/// The guard and its state.
#[derive(Default)]
pub struct PortGuard {
    status: Mutex<GuardStatus>,
}

/// The nft script: (re)create the table with one input chain.
pub fn rules(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    iifname \"lo\" accept\n    tcp dport {{ {} }} drop\n  }}\n}}\n",
        list.join(", ")
    )
}

impl PortGuard {
    /// The current state.
    pub fn status(&self) -> GuardStatus {
        self.status.lock().expect("guard").clone()
    }

    /// Installs the rules for `ports` (nothing to do when there are none).
    pub async fn install(&self, reaper: &Reaper, ports: Vec<u16>) {
        let mut st = GuardStatus { enabled: true, active: false, ports: ports.clone(), error: None };
        if ports.is_empty() {
            st.error = Some("no service declares a port".into());
        } else {
            match command::run(reaper, &["nft", "-f", "-"], Some(&rules(&ports)), Duration::from_secs(10)).await {
                Ok(()) => {
                    st.active = true;
                    tracing::info!(?ports, "port guard active: non-loopback traffic to these ports is dropped");
                }
                Err(e) => {
                    tracing::error!("port guard NOT active: {e}");
                    st.error = Some(e);
                }
            }
        }
        *self.status.lock().expect("guard") = st;
    }

    /// Removes the rules if they were installed.
    pub async fn remove(&self, reaper: &Reaper) {
        if !self.status().active {
            return;
        }
        match command::run(reaper, &["nft", "delete", "table", "inet", TABLE], None, Duration::from_secs(10)).await {
            Ok(()) => tracing::info!("port guard removed"),
            Err(e) => tracing::error!("cannot remove the port guard: {e}"),
        }
        self.status.lock().expect("guard").active = false;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rules_drop_only_non_loopback_traffic_to_the_ports() {
        let r = super::rules(&[5173, 9222]);
        assert!(r.contains("iifname \"lo\" accept"));
        assert!(r.contains("tcp dport { 5173, 9222 } drop"));
        assert!(r.starts_with("add table inet supervisor_guard\ndelete table inet supervisor_guard\n"), "idempotent replace");
    }
}
