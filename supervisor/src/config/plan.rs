//! The human-readable start plan that `supervisor check` prints.

use super::Config;
use std::collections::HashMap;
use std::fmt::Write;

/// Renders the start plan: services grouped in waves that start in parallel,
/// each with its dependencies, command and probes.
pub fn start_plan(cfg: &Config) -> String {
    let mut wave: HashMap<&str, usize> = HashMap::new();
    for s in &cfg.services {
        let w = s.depends_on.iter().map(|(d, _)| wave.get(d.as_str()).map_or(0, |w| w + 1)).max().unwrap_or(0);
        wave.insert(&s.name, w);
    }
    let st = &cfg.settings;
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", cfg.source);
    let _ = writeln!(out, "listen: {}   app dir: {}   runtime dir: {}", st.listen, st.app_dir.display(), st.runtime_dir.display());
    let _ = writeln!(out, "control socket: {}   token: {}   env file: {}", st.control_socket.display(), st.token_file.display(), st.env_file.display());
    let mode = serde_json::to_value(st.port_guard).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let _ = writeln!(out, "port guard: {mode} (inbound TCP only to the listen port and {:?})   shutdown timeout: {:?}", st.port_guard_allow, st.shutdown_timeout);
    let _ = writeln!(out, "start plan ({} services):", cfg.services.len());
    let max = wave.values().copied().max().unwrap_or(0);
    for w in 0..=max {
        let _ = writeln!(out, "  wave {w}:");
        for s in cfg.services.iter().filter(|s| wave[s.name.as_str()] == w) {
            let deps: Vec<String> = s
                .depends_on
                .iter()
                .map(|(d, c)| format!("{d} {}", c.as_str()))
                .collect();
            let mut flags = vec![format!("restart={}", s.restart.as_str())];
            if s.disabled {
                flags.push("DISABLED".into());
            }
            if !s.required {
                flags.push("optional".into());
            }
            if let Some(u) = &s.user {
                flags.push(format!("user={u}"));
            }
            if s.tty {
                flags.push("tty".into());
            }
            if s.env_injection {
                flags.push("env_injection".into());
            }
            if let Some(m) = s.memory_limit {
                flags.push(format!("memory_limit={}MiB", m >> 20));
            }
            if !s.restart_with.is_empty() {
                flags.push(format!("restart_with={}", s.restart_with.join(",")));
            }
            let _ = writeln!(out, "    {} [{}]", s.name, flags.join(" "));
            let _ = writeln!(out, "      command: {}", shell_words(&s.command));
            if !deps.is_empty() {
                let _ = writeln!(out, "      after:   {}", deps.join(", "));
            }
            for (label, p) in [("startup", &s.startup), ("ready", &s.readiness), ("live", &s.liveness)] {
                if let Some(p) = p {
                    let _ = writeln!(
                        out,
                        "      {label:<8} {} every {:?} (timeout {:?}, {} failures)",
                        p.kind.describe(),
                        p.period,
                        p.timeout,
                        p.failure_threshold
                    );
                }
            }
        }
    }
    out
}

/// argv as one line, quoting arguments with spaces or newlines.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') { format!("{a:?}") } else { a.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}
