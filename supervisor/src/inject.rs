//! The injected environment: what `env_injection` services get on top of their own env.
//! Both env scopes overlaid (`services` wins on a clash), then held to what Linux lets a
//! process start with: `execve` refuses a single `KEY=VALUE` string of 128 KiB or more
//! (`MAX_ARG_STRLEN`, with its NUL) with `E2BIG`, and a service whose environment cannot be
//! exec'ed would never start again. So a POST that would inject such a value is refused
//! before anything is written, and an env file that is already too large at start has
//! the offending keys left out (named in `status`) instead of bricking the service.

use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// Longest `KEY=VALUE` string a process environment may hold (without its NUL).
pub const MAX_ENTRY: usize = 128 * 1024 - 1;
/// Largest injected environment, all `KEY=VALUE\0` strings together.
pub const MAX_TOTAL: usize = 1 << 20;

/// Which env file a variable comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The app's `.env` (Vite reads it too).
    App,
    /// The root-only services file in the runtime dir.
    Services,
}

impl Scope {
    /// Parses `app` / `services`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "app" => Some(Scope::App),
            "services" => Some(Scope::Services),
            _ => None,
        }
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::App => "app",
            Scope::Services => "services",
        }
    }
}

/// A variable left out of the injected environment, and why (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// The key.
    pub key: String,
    /// The scope it came from.
    pub scope: Scope,
    /// Why it was left out.
    pub reason: String,
}

/// The environment given to `env_injection` services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injected {
    /// The variables, sorted by key.
    pub vars: Vec<(String, String)>,
    /// What was left out to stay within Linux's limits.
    pub dropped: Vec<Dropped>,
}

impl Injected {
    /// Overlays `services` on `app` and applies the limits.
    pub fn build(app: Vec<(String, String)>, services: Vec<(String, String)>) -> Injected {
        let mut all: BTreeMap<String, (Scope, String)> = BTreeMap::new();
        for (k, v) in app {
            all.insert(k, (Scope::App, v));
        }
        for (k, v) in services {
            all.insert(k, (Scope::Services, v));
        }
        let mut dropped = Vec::new();
        all.retain(|k, (scope, v)| {
            let len = k.len() + 1 + v.len();
            if len > MAX_ENTRY {
                dropped.push(Dropped {
                    key: k.clone(),
                    scope: *scope,
                    reason: format!("{k}=VALUE is {len} bytes; Linux refuses to start a process with one over {MAX_ENTRY}"),
                });
            }
            len <= MAX_ENTRY
        });
        let mut total: usize = all.iter().map(|(k, (_, v))| k.len() + v.len() + 2).sum();
        if total > MAX_TOTAL {
            // Leave out the largest until the rest fits: the fewest variables lost. One
            // sort, not a scan per variable: the file is the agent's and may hold a lot.
            let mut by_size: Vec<(usize, String)> = all.iter().map(|(k, (_, v))| (k.len() + v.len() + 2, k.clone())).collect();
            by_size.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (size, k) in by_size {
                if total <= MAX_TOTAL {
                    break;
                }
                let (scope, _) = all.remove(&k).expect("present");
                total -= size;
                dropped.push(Dropped { key: k, scope, reason: format!("the injected environment would pass {MAX_TOTAL} bytes") });
            }
        }
        Injected { vars: all.into_iter().map(|(k, (_, v))| (k, v)).collect(), dropped }
    }

    /// The reason `key` of `scope` is left out, if it is.
    pub fn dropped_reason(&self, key: &str, scope: Scope) -> Option<&str> {
        self.dropped.iter().find(|d| d.key == key && d.scope == scope).map(|d| d.reason.as_str())
    }

    /// A fingerprint of the variables: equal fingerprints, same environment.
    pub fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.vars.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, n: usize) -> (String, String) {
        (k.to_string(), "v".repeat(n))
    }

    #[test]
    fn services_win_and_limits_hold() {
        let i = Injected::build(vec![kv("A", 1), kv("B", 1)], vec![("B".into(), "svc".into())]);
        assert_eq!(i.vars, vec![("A".into(), "v".into()), ("B".into(), "svc".into())]);
        assert!(i.dropped.is_empty());

        let edge = MAX_ENTRY - 2; // "K=" + value = MAX_ENTRY exactly
        let i = Injected::build(vec![kv("K", edge), kv("L", edge + 1)], vec![]);
        assert_eq!(i.vars.len(), 1, "K fits exactly, L is one byte over");
        assert_eq!(i.dropped[0].key, "L");
        assert!(i.dropped_reason("L", Scope::App).is_some());
        assert!(!i.dropped[0].reason.contains("vvv"), "never the value");

        let many: Vec<_> = (0..10).map(|n| kv(&format!("K{n}"), 120 * 1024)).collect();
        let i = Injected::build(many, vec![]);
        let total: usize = i.vars.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        assert!(total <= MAX_TOTAL && i.vars.len() == 8, "{total} bytes, {} vars", i.vars.len());
        assert_eq!(i.dropped.len(), 2);
    }

    #[test]
    fn a_huge_file_of_small_variables_is_cut_in_one_pass() {
        let many: Vec<_> = (0..400_000).map(|n| kv(&format!("K{n:07}"), 4)).collect();
        let t = std::time::Instant::now();
        let i = Injected::build(many, vec![]);
        let total: usize = i.vars.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        assert!(total <= MAX_TOTAL && total > MAX_TOTAL - 64, "{total}");
        // A ceiling, not a speed goal: a pass per dropped variable (quadratic) over 400,000
        // variables takes hours; one pass takes well under a second even in a debug build.
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "took {:?}", t.elapsed());
    }

    #[test]
    fn fingerprint_tells_changes() {
        let a = Injected::build(vec![kv("A", 1)], vec![]);
        let b = Injected::build(vec![kv("A", 2)], vec![]);
        assert_eq!(a.fingerprint(), Injected::build(vec![kv("A", 1)], vec![]).fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
