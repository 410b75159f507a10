//! The port guard (SPEC §7), default-deny: nftables rules that drop every inbound
//! non-loopback TCP connection except to the public listen port and `port_guard_allow`
//! (E2B's envd, 49983), for IPv4 and IPv6, so an undeclared listener an agent starts
//! (`vite preview`, `node --inspect`) is not forwarded to the internet by envd either.
//!
//! Built for the kernel it meets: E2B's Firecracker kernel has `NF_TABLES` with the `ip` and
//! `ip6` families and conntrack, but no `NF_TABLES_INET`, so the rules live in one `ip` and
//! one `ip6` table (never `inet`), and after `nft -f` the tables are listed back: the guard
//! counts as active only when the kernel shows them. Installed before the services start,
//! retried while it is not active, removed at shutdown; its state shows in `status`.

use crate::config::GuardMode;
use crate::engine::command;
use crate::engine::reaper::Reaper;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// The name of the nftables tables the guard owns (one per family).
pub const TABLE: &str = "supervisor_guard";
/// How long one `nft` call may take.
const NFT_LIMIT: Duration = Duration::from_secs(10);
/// How often a guard that is not active is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// What `status` reports about the guard.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GuardStatus {
    /// `off`, `on` or `required`.
    pub mode: GuardMode,
    /// The mode is not `off`.
    pub enabled: bool,
    /// The rules are installed and the kernel shows them.
    pub active: bool,
    /// The only TCP ports outside traffic can reach (listen port + `port_guard_allow`).
    pub allow: Vec<u16>,
    /// The families guarded (`ip`, and `ip6` when the kernel has IPv6).
    pub families: Vec<&'static str>,
    /// Why it is not active although enabled.
    pub error: Option<String>,
}

/// The guard and its state.
pub struct PortGuard {
    status: Mutex<GuardStatus>,
    /// Serializes install and remove, so a retry in flight cannot re-add rules after shutdown.
    op: tokio::sync::Mutex<()>,
    /// Set by [`PortGuard::remove`]: never install again.
    closed: std::sync::atomic::AtomicBool,
}

/// The families to guard: `ip`, plus `ip6` unless the kernel has no IPv6 at all (then no
/// IPv6 traffic can arrive, and an `ip6` table could not be created).
pub fn families() -> Vec<&'static str> {
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        vec!["ip", "ip6"]
    } else {
        vec!["ip"]
    }
}

/// The nft script: (re)create one table per family, each with an input chain that lets
/// loopback, replies to the VM's own connections and the allowed ports through and drops
/// every other TCP connection. One `nft -f` transaction: all of it or nothing.
pub fn rules(allow: &[u16], families: &[&str]) -> String {
    let list: Vec<String> = allow.iter().map(u16::to_string).collect();
    let mut out = String::new();
    for f in families {
        out.push_str(&format!(
            "add table {f} {TABLE}\ndelete table {f} {TABLE}\ntable {f} {TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    iifname \"lo\" accept\n    ct state established,related accept\n    tcp dport {{ {} }} accept\n    meta l4proto tcp drop\n  }}\n}}\n",
            list.join(", ")
        ));
    }
    out
}

/// The nft script removing the tables (idempotent: `add` first, so a missing one is fine).
pub fn removal(families: &[&str]) -> String {
    families.iter().map(|f| format!("add table {f} {TABLE}\ndelete table {f} {TABLE}\n")).collect()
}

/// Checks what `nft list table FAMILY supervisor_guard` printed: the input hook and the drop.
/// Without `/etc/protocols` (a slim image has no `netbase`) nft prints the protocol as its
/// number, `meta l4proto 6 drop`: both forms count (seen in the image smoke test).
fn verify(family: &str, listing: &str) -> Result<(), String> {
    let drops = listing.contains("l4proto tcp drop") || listing.contains("l4proto 6 drop");
    if listing.contains("hook input") && drops && listing.contains("established,related accept") {
        Ok(())
    } else {
        Err(format!("the kernel does not show the {family} rules after nft -f"))
    }
}

impl PortGuard {
    /// A guard in `mode`, not installed yet.
    pub fn new(mode: GuardMode) -> Self {
        let st = GuardStatus { mode, enabled: mode != GuardMode::Off, ..Default::default() };
        PortGuard { status: Mutex::new(st), op: tokio::sync::Mutex::new(()), closed: Default::default() }
    }

    /// The current state.
    pub fn status(&self) -> GuardStatus {
        self.status.lock().expect("guard").clone()
    }

    /// Why the stack must not count as ready: `required` and the guard not active.
    pub fn not_ready_reason(&self) -> Option<String> {
        let st = self.status();
        (st.mode == GuardMode::Required && !st.active)
            .then(|| format!("port guard not active: {}", st.error.as_deref().unwrap_or("not installed yet")))
    }

    /// Installs the rules allowing only `allow`; the result shows in [`Self::status`].
    pub async fn install(&self, reaper: &Reaper, allow: &[u16]) {
        let _op = self.op.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let fams = families();
        let result = async {
            command::run(reaper, &["nft", "-f", "-"], Some(&rules(allow, &fams)), NFT_LIMIT).await?;
            for f in &fams {
                let listing = command::output(reaper, &["nft", "list", "table", f, TABLE], None, NFT_LIMIT).await?;
                verify(f, &listing)?;
            }
            Ok::<(), String>(())
        }
        .await;
        let mut st = self.status.lock().expect("guard");
        st.allow = allow.to_vec();
        st.families = fams;
        match result {
            Ok(()) => {
                if !st.active {
                    tracing::info!(allow = ?allow, families = ?st.families, "port guard active: other inbound TCP is dropped");
                }
                st.active = true;
                st.error = None;
            }
            Err(e) => {
                if st.error.as_ref() != Some(&e) {
                    tracing::error!("port guard NOT active: {e}");
                }
                st.active = false;
                st.error = Some(e);
            }
        }
    }

    /// After a first [`Self::install`]: retries every [`RETRY`] while the rules are not active.
    pub async fn keep_installed(self: std::sync::Arc<Self>, reaper: std::sync::Arc<Reaper>, allow: Vec<u16>) {
        loop {
            tokio::time::sleep(RETRY).await;
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if !self.status().active {
                self.install(&reaper, &allow).await;
            }
        }
    }

    /// Removes the rules (both tables) if the guard is enabled.
    pub async fn remove(&self, reaper: &Reaper) {
        let _op = self.op.lock().await;
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let st = self.status();
        if !st.enabled || st.families.is_empty() {
            return;
        }
        match command::run(reaper, &["nft", "-f", "-"], Some(&removal(&st.families)), NFT_LIMIT).await {
            Ok(()) => tracing::info!("port guard removed"),
            Err(e) => tracing::error!("cannot remove the port guard: {e}"),
        }
        self.status.lock().expect("guard").active = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_default_deny_for_tcp_with_loopback_replies_and_the_allow_list() {
        let r = rules(&[3000, 49983], &["ip", "ip6"]);
        for f in ["ip", "ip6"] {
            assert!(r.contains(&format!("add table {f} supervisor_guard\ndelete table {f} supervisor_guard\ntable {f} supervisor_guard {{")), "idempotent replace of {f}: {r}");
        }
        let chain = r.split("table ip6").next().unwrap();
        let lines: Vec<&str> = chain.lines().map(str::trim).collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("{l:?} missing in {r}"));
        let (lo, est, allow, drop) =
            (at("iifname \"lo\" accept"), at("ct state established,related accept"), at("tcp dport { 3000, 49983 } accept"), at("meta l4proto tcp drop"));
        assert!(lo < drop && est < drop && allow < drop, "accepts come before the drop: {r}");
        assert!(at("type filter hook input priority -10; policy accept;") < lo, "an input hook; non-TCP traffic untouched");
    }

    #[test]
    fn no_inet_family_anywhere() {
        // E2B's Firecracker kernel has no NF_TABLES_INET: an `inet` table would be refused there.
        for script in [rules(&[3000], &["ip", "ip6"]), removal(&["ip", "ip6"]), rules(&[3000], &families())] {
            assert!(!script.contains("inet"), "{script}");
            for line in script.lines().filter(|l| l.contains("table")) {
                let family = line.split_whitespace().nth(if line.starts_with("table") { 1 } else { 2 }).unwrap();
                assert!(family == "ip" || family == "ip6", "family {family:?} in {line:?}");
            }
        }
    }

    #[test]
    fn removal_deletes_both_tables_even_if_absent() {
        assert_eq!(removal(&["ip", "ip6"]), "add table ip supervisor_guard\ndelete table ip supervisor_guard\nadd table ip6 supervisor_guard\ndelete table ip6 supervisor_guard\n");
    }

    #[test]
    fn verify_wants_the_hook_and_the_drop_listed_back() {
        let listed = "table ip supervisor_guard {\n\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n\t\tiifname \"lo\" accept\n\t\tct state established,related accept\n\t\ttcp dport { 3000, 49983 } accept\n\t\tmeta l4proto tcp drop\n\t}\n}\n";
        assert!(verify("ip", listed).is_ok());
        assert!(verify("ip", &listed.replace("l4proto tcp", "l4proto 6")).is_ok(), "numeric, as without /etc/protocols");
        assert!(verify("ip", "table ip supervisor_guard {\n}\n").is_err());
        assert!(verify("ip", "").is_err());
    }

    #[test]
    fn required_without_the_guard_is_not_ready_with_the_reason() {
        let g = PortGuard::new(GuardMode::Required);
        assert_eq!(g.not_ready_reason().unwrap(), "port guard not active: not installed yet");
        g.status.lock().unwrap().error = Some("cannot run nft: No such file or directory".into());
        assert!(g.not_ready_reason().unwrap().contains("cannot run nft"));
        g.status.lock().unwrap().active = true;
        assert_eq!(g.not_ready_reason(), None);
        assert_eq!(PortGuard::new(GuardMode::On).not_ready_reason(), None, "on: reported, not gating");
        assert!(!PortGuard::new(GuardMode::Off).status().enabled);
    }
}
