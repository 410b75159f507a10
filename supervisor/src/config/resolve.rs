//! Turns the parsed [`ConfigFile`] into a checked [`Config`]: defaults, overrides,
//! variable expansion, and validation (dependencies, cycles, ports, probes, signals).

use super::model::{ConfigFile, ProbeSection, ServiceSection};
use super::*;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// Parses and validates config text. `source` names the file in errors; `config_dir`
/// is what `${CONFIG_DIR}` expands to.
pub fn resolve(source: &str, config_dir: &Path, text: &str, ov: &Overrides) -> Result<Config, ConfigError> {
    let err = |key: &str, reason: String| ConfigError { file: source.to_string(), key: key.to_string(), reason };
    let file = parse(source, text)?;

    // Absolute, so `${APP_DIR}/...` means the same thing in every service's cwd.
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let app_dir = abs(ov.app_dir.clone().unwrap_or_else(|| PathBuf::from("/app")));
    let runtime_dir = abs(ov.runtime_dir.clone().unwrap_or_else(|| PathBuf::from("/run/supervisor")));
    let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| "supervisor".into());
    let vars = Vars { app_dir: &app_dir, runtime_dir: &runtime_dir, config_dir, exe: &exe };
    let sv = &file.supervisor;
    let path_or = |v: &Option<String>, default: PathBuf| v.as_ref().map(|s| PathBuf::from(vars.expand(s))).unwrap_or(default);
    let settings = Settings {
        listen: ov.listen.clone().or_else(|| sv.listen.clone()).unwrap_or_else(|| "0.0.0.0:3000".into()),
        service_user: ov.service_user.clone().or_else(|| sv.service_user.clone()),
        port_guard: ov.port_guard.or(sv.port_guard).unwrap_or_default(),
        port_guard_allow: sv.port_guard_allow.clone().unwrap_or_else(|| vec![49983]),
        shutdown_timeout: sv.shutdown_timeout.map(Into::into).unwrap_or(Duration::from_secs(30)),
        control_socket: path_or(&sv.control_socket, runtime_dir.join("control.sock")),
        token_file: path_or(&sv.token_file, runtime_dir.join("token")),
        env_file: path_or(&sv.env_file, app_dir.join(".env")),
        log_lines: sv.log_lines.unwrap_or(1000).max(1),
        log_bytes: sv.log_bytes.map(|b| b.0 as usize).unwrap_or(1 << 20).max(64 << 10),
        services_env_file: path_or(&sv.services_env_file, runtime_dir.join("services.env")),
        proxy_service: sv.proxy_service.clone().unwrap_or_else(|| "vite".into()),
        proxy_upstream: String::new(),
        sandbox_id_file: path_or(&sv.sandbox_id_file, PathBuf::from("/run/e2b/.E2B_SANDBOX_ID")),
        resume_grace: sv.resume_grace.map(Into::into).unwrap_or(Duration::from_secs(15)),
        pty_idle: sv.pty_idle.map(Into::into).unwrap_or(Duration::from_secs(600)),
        event_ring: sv.event_ring.unwrap_or(1024).clamp(1, 100_000),
        app_dir: app_dir.clone(),
        runtime_dir: runtime_dir.clone(),
        config_dir: config_dir.to_path_buf(),
    };
    if settings.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(err("supervisor.listen", format!("{:?} is not an IP:PORT address", settings.listen)));
    }
    if abs(settings.services_env_file.clone()).starts_with(&app_dir) {
        return Err(err("supervisor.services_env_file", format!("{} is under the app dir {}: the services' secrets must never be readable by the app", settings.services_env_file.display(), app_dir.display())));
    }
    if settings.port_guard_allow.contains(&0) {
        return Err(err("supervisor.port_guard_allow", "port 0 is not a port".into()));
    }
    if file.services.is_empty() {
        return Err(err("services", "no service is defined".into()));
    }

    let mut settings = settings;
    let mut services = Vec::new();
    for (name, s) in &file.services {
        services.push(service(name, s, &vars, &settings).map_err(|(k, r)| err(&k, r))?);
    }
    let proxied_port = services.iter().find(|s| s.name == settings.proxy_service).and_then(|s| s.port);
    settings.proxy_upstream = match &sv.proxy_upstream {
        Some(a) => {
            check_host_port(a).map_err(|r| err("supervisor.proxy_upstream", r))?;
            a.clone()
        }
        None => format!("127.0.0.1:{}", proxied_port.unwrap_or(5173)),
    };
    check_references(&services).map_err(|(k, r)| err(&k, r))?;
    check_ports(&services, &settings.listen).map_err(|(k, r)| err(&k, r))?;
    let services = topo_order(services).map_err(|(k, r)| err(&k, r))?;
    Ok(Config { source: source.to_string(), settings, services })
}

/// TOML → [`ConfigFile`], with the key path of any type error.
fn parse(source: &str, text: &str) -> Result<ConfigFile, ConfigError> {
    let located = |span: Option<std::ops::Range<usize>>| {
        span.map(|r| {
            let before = &text[..r.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
            format!("line {line}, column {col}")
        })
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
        file: source.into(),
        key: located(e.span()).unwrap_or_else(|| "(syntax)".into()),
        reason: format!("TOML syntax error: {}", e.message()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let at = located(inner.span());
        let key = if path.is_empty() || path == "." { at.clone().unwrap_or_else(|| "(top level)".into()) } else { path };
        let reason = match at {
            Some(at) if !key.starts_with("line") => format!("{} ({at})", inner.message()),
            _ => inner.message().to_string(),
        };
        ConfigError { file: source.into(), key, reason }
    })
}

/// The variables config strings may use.
struct Vars<'a> {
    app_dir: &'a Path,
    runtime_dir: &'a Path,
    config_dir: &'a Path,
    /// This binary's path (`${SUPERVISOR}`).
    exe: &'a str,
}

impl Vars<'_> {
    /// Expands `${APP_DIR}`, `${RUNTIME_DIR}`, `${CONFIG_DIR}` and `${SUPERVISOR}` (this
    /// binary's path); other text is left as is.
    fn expand(&self, s: &str) -> String {
        s.replace("${SUPERVISOR}", self.exe)
            .replace("${APP_DIR}", &self.app_dir.to_string_lossy())
            .replace("${RUNTIME_DIR}", &self.runtime_dir.to_string_lossy())
            .replace("${CONFIG_DIR}", &self.config_dir.to_string_lossy())
    }
}

type KeyErr = (String, String);

fn service(name: &str, s: &ServiceSection, vars: &Vars, settings: &Settings) -> Result<ServiceSpec, KeyErr> {
    let key = |k: &str| format!("services.{name}.{k}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err((format!("services.{name}"), "a service name may hold only letters, digits, '-' and '_'".into()));
    }
    if s.command.is_empty() || s.command[0].trim().is_empty() {
        return Err((key("command"), "the command is empty; give an argv list such as [\"sleep\", \"infinity\"]".into()));
    }
    let stop_signal = parse_signal(s.stop_signal.as_deref().unwrap_or("SIGTERM")).map_err(|r| (key("stop_signal"), r))?;
    let b = &s.backoff;
    let backoff = BackoffSpec {
        initial: b.initial.map(Into::into).unwrap_or(Duration::from_millis(100)),
        max: b.max.map(Into::into).unwrap_or(Duration::from_secs(30)),
        multiplier: b.multiplier.unwrap_or(2.0),
        reset_after: b.reset_after.map(Into::into).unwrap_or(Duration::from_secs(30)),
        jitter: b.jitter.unwrap_or(0.1),
    };
    if !(backoff.multiplier >= 1.0 && backoff.multiplier.is_finite()) {
        return Err((key("backoff.multiplier"), "must be a number >= 1".into()));
    }
    if !(0.0..=1.0).contains(&backoff.jitter) {
        return Err((key("backoff.jitter"), "must be between 0 and 1".into()));
    }
    if backoff.max < backoff.initial {
        return Err((key("backoff.max"), "must not be below backoff.initial".into()));
    }
    let crash_loop = CrashLoopSpec {
        max_restarts: s.crash_loop.max_restarts.unwrap_or(5),
        window: s.crash_loop.window.map(Into::into).unwrap_or(Duration::from_secs(60)),
        retry_after: s.crash_loop.retry_after.map(|r| r.0).unwrap_or(Some(Duration::from_secs(60))),
    };
    if crash_loop.max_restarts == 0 {
        return Err((key("crash_loop.max_restarts"), "must be at least 1".into()));
    }
    let probe = |which: &str, p: &Option<ProbeSection>| -> Result<Option<ProbeSpec>, KeyErr> {
        p.as_ref().map(|p| probe(p, vars).map_err(|(k, r)| (key(&format!("{which}{k}")), r))).transpose()
    };
    let user = match &settings.service_user {
        Some(u) if u.is_empty() => None,
        Some(u) => Some(u.clone()),
        None => s.user.clone().filter(|u| !u.is_empty()),
    };
    Ok(ServiceSpec {
        name: name.to_string(),
        command: s.command.iter().map(|a| vars.expand(a)).collect(),
        cwd: s.cwd.as_ref().map(|c| PathBuf::from(vars.expand(c))),
        env: s.env.iter().map(|(k, v)| (k.clone(), vars.expand(v))).collect(),
        user,
        depends_on: s.depends_on.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        restart: s.restart,
        backoff,
        crash_loop,
        startup: probe("startup", &s.startup)?,
        readiness: probe("readiness", &s.readiness)?,
        liveness: match probe("liveness", &s.liveness)? {
            Some(p) if matches!(p.kind, ProbeKind::Log(_)) => {
                return Err((key("liveness.log"), "a log probe can gate startup or readiness, not liveness (a line once printed stays printed)".into()))
            }
            p => p,
        },
        stop_signal,
        stop_timeout: s.stop_timeout.map(Into::into).unwrap_or(Duration::from_secs(10)),
        memory_limit: s.memory_limit.map(|b| b.0),
        required: s.required.unwrap_or(true),
        restart_with: s.restart_with.clone(),
        env_injection: s.env_injection,
        port: s.port,
        disabled: s.disabled,
        tty: s.tty,
        log_file: match &s.log_file {
            None => None,
            Some(f) => {
                if f.path.trim().is_empty() {
                    return Err((key("log_file.path"), "is empty".into()));
                }
                let max_bytes = f.max_size.map(|b| b.0).unwrap_or(10 << 20);
                if max_bytes < 4096 {
                    return Err((key("log_file.max_size"), "must be at least 4KiB".into()));
                }
                let keep = f.keep.unwrap_or(3);
                if keep > 100 {
                    return Err((key("log_file.keep"), "at most 100 rotated files".into()));
                }
                Some(LogFileSpec { path: PathBuf::from(vars.expand(&f.path)), max_bytes, keep })
            }
        },
    })
}

/// Parses `SIGTERM`, `TERM`, `term` or a number.
pub(crate) fn parse_signal(s: &str) -> Result<Signal, String> {
    let up = s.trim().to_ascii_uppercase();
    if let Ok(n) = up.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("{s:?} is not a signal number"));
    }
    let full = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    Signal::from_str(&full).map_err(|_| format!("{s:?} is not a signal name (e.g. \"SIGTERM\", \"SIGINT\")"))
}

/// Checks one probe table; errors carry a key suffix such as `.period`.
fn probe(p: &ProbeSection, vars: &Vars) -> Result<ProbeSpec, KeyErr> {
    let set = [p.tcp.is_some(), p.http.is_some(), p.cdp.is_some(), p.exec.is_some(), p.file.is_some(), p.x11.is_some(), p.log.is_some()];
    let n = set.iter().filter(|b| **b).count();
    if n != 1 {
        return Err((String::new(), format!("a probe needs exactly one of tcp, http, cdp, exec, file, x11, log (found {n})")));
    }
    if p.http.is_none() && (p.status.is_some() || !p.headers.is_empty()) {
        return Err((".status".into(), "status and headers apply only to an http probe".into()));
    }
    let kind = if let Some(a) = &p.tcp {
        let a = vars.expand(a);
        check_host_port(&a).map_err(|r| (".tcp".to_string(), r))?;
        ProbeKind::Tcp(a)
    } else if let Some(u) = &p.http {
        let url = vars.expand(u);
        check_http_url(&url).map_err(|r| (".http".to_string(), r))?;
        if let Some(s) = p.status {
            if !(100..=599).contains(&s) {
                return Err((".status".into(), format!("{s} is not an HTTP status")));
            }
        }
        ProbeKind::Http { url, status: p.status, headers: p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect() }
    } else if let Some(u) = &p.cdp {
        let url = vars.expand(u);
        check_http_url(&url).map_err(|r| (".cdp".to_string(), r))?;
        ProbeKind::Cdp(url)
    } else if let Some(argv) = &p.exec {
        if argv.is_empty() || argv[0].is_empty() {
            return Err((".exec".into(), "the command is empty".into()));
        }
        ProbeKind::Exec(argv.iter().map(|a| vars.expand(a)).collect())
    } else if let Some(d) = &p.x11 {
        if !d.starts_with(':') || d.len() < 2 {
            return Err((".x11".into(), format!("{d:?} is not a display such as \":99\"")));
        }
        ProbeKind::X11(d.clone())
    } else if let Some(re) = &p.log {
        if re.is_empty() {
            return Err((".log".into(), "the pattern is empty (it would match any line)".into()));
        }
        // Bounded: a pattern must not make the supervisor build a huge automaton.
        let r = regex::RegexBuilder::new(re).size_limit(1 << 20).dfa_size_limit(1 << 20).build().map_err(|e| (".log".to_string(), format!("not a valid regex: {e}")))?;
        ProbeKind::Log(r)
    } else {
        ProbeKind::File(PathBuf::from(vars.expand(p.file.as_deref().unwrap_or_default())))
    };
    let spec = ProbeSpec {
        kind,
        initial_delay: p.initial_delay.map(Into::into).unwrap_or_default(),
        period: p.period.map(Into::into).unwrap_or(Duration::from_secs(2)),
        timeout: p.timeout.map(Into::into).unwrap_or(Duration::from_secs(1)),
        failure_threshold: p.failure_threshold.unwrap_or(3),
        success_threshold: p.success_threshold.unwrap_or(1),
    };
    if spec.period.is_zero() {
        return Err((".period".into(), "must be greater than zero".into()));
    }
    if spec.timeout.is_zero() {
        return Err((".timeout".into(), "must be greater than zero".into()));
    }
    if spec.failure_threshold == 0 {
        return Err((".failure_threshold".into(), "must be at least 1".into()));
    }
    if spec.success_threshold == 0 {
        return Err((".success_threshold".into(), "must be at least 1".into()));
    }
    Ok(spec)
}

fn check_host_port(a: &str) -> Result<(), String> {
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{a:?} is not HOST:PORT")),
    }
}

fn check_http_url(u: &str) -> Result<(), String> {
    let uri: hyper::Uri = u.parse().map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("{u:?} must be an http:// URL with a host"));
    }
    Ok(())
}

/// Unknown and disabled dependencies, unknown `restart_with` targets.
fn check_references(services: &[ServiceSpec]) -> Result<(), KeyErr> {
    let by_name: HashMap<&str, &ServiceSpec> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in services {
        for (dep, _) in &s.depends_on {
            let k = format!("services.{}.depends_on.{dep}", s.name);
            match by_name.get(dep.as_str()) {
                None => return Err((k, format!("unknown service {dep:?}"))),
                Some(d) if d.disabled && !s.disabled => {
                    return Err((k, format!("{dep:?} is disabled, so {:?} could never start", s.name)))
                }
                _ => {}
            }
        }
        for other in &s.restart_with {
            if !by_name.contains_key(other.as_str()) || other == &s.name {
                return Err((format!("services.{}.restart_with", s.name), format!("unknown service {other:?}")));
            }
        }
    }
    Ok(())
}

/// Two services (or a service and the public listener) claiming one port.
fn check_ports(services: &[ServiceSpec], listen: &str) -> Result<(), KeyErr> {
    let mut seen: HashMap<u16, String> = HashMap::new();
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        seen.insert(addr.port(), "the supervisor's listen address".into());
    }
    for s in services {
        if let Some(p) = s.port {
            if let Some(other) = seen.insert(p, format!("service {:?}", s.name)) {
                return Err((format!("services.{}.port", s.name), format!("port {p} is already used by {other}")));
            }
        }
    }
    Ok(())
}

/// Orders services so every dependency comes first (file order otherwise); reports a cycle.
fn topo_order(services: Vec<ServiceSpec>) -> Result<Vec<ServiceSpec>, KeyErr> {
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let deps: HashMap<&str, Vec<&str>> =
        services.iter().map(|s| (s.name.as_str(), s.depends_on.iter().map(|(d, _)| d.as_str()).collect())).collect();
    let mut order: Vec<usize> = Vec::new();
    let mut done: HashSet<&str> = HashSet::new();
    while order.len() < services.len() {
        let next = names.iter().enumerate().find(|(_, n)| {
            !done.contains(n.as_str()) && deps[n.as_str()].iter().all(|d| done.contains(d))
        });
        match next {
            Some((i, n)) => {
                done.insert(n.as_str());
                order.push(i);
            }
            None => {
                let start = names.iter().find(|n| !done.contains(n.as_str())).expect("some left");
                let cycle = find_cycle(start, &deps, &done);
                let first = cycle.first().cloned().unwrap_or_default();
                return Err((
                    format!("services.{first}.depends_on"),
                    format!("dependency cycle: {}", cycle.join(" -> ")),
                ));
            }
        }
    }
    let mut slots: Vec<Option<ServiceSpec>> = services.into_iter().map(Some).collect();
    Ok(order.into_iter().map(|i| slots[i].take().expect("each once")).collect())
}

/// Walks unresolved dependencies from `start` until a name repeats.
fn find_cycle(start: &str, deps: &HashMap<&str, Vec<&str>>, done: &HashSet<&str>) -> Vec<String> {
    let mut path: Vec<&str> = vec![start];
    loop {
        let cur = *path.last().expect("non-empty");
        let next = deps[cur].iter().find(|d| !done.contains(*d)).copied().expect("a blocked service has an unresolved dep");
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut c: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            c.push(next.to_string());
            return c;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        resolve("test.toml", Path::new("/cfg"), text, &Overrides::default())
    }

    fn err(text: &str) -> ConfigError {
        check(text).expect_err("should be rejected")
    }

    #[test]
    fn the_spec_example_parses_with_expansion_and_order() {
        let c = check(
            r#"
[services.worker]
command = ["sleep", "infinity"]
depends_on = { web = "ready" }
restart = "on-failure"
[services.web]
command = ["${CONFIG_DIR}/bin/web"]
cwd = "${APP_DIR}"
env = { DIR = "${RUNTIME_DIR}/x" }
readiness = { http = "http://127.0.0.1:18080/", status = 200, period = "1s", timeout = "500ms" }
liveness = { tcp = "127.0.0.1:18080", period = "5s", failure_threshold = 3 }
stop_timeout = "5s"
memory_limit = "512MiB"
"#,
        )
        .unwrap();
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "worker"], "dependencies first");
        let web = &c.services[0];
        assert_eq!(web.command[0], "/cfg/bin/web");
        assert_eq!(web.cwd.as_deref(), Some(Path::new("/app")));
        assert_eq!(web.env[0].1, "/run/supervisor/x");
        assert_eq!(web.stop_timeout, Duration::from_secs(5));
        assert_eq!(web.memory_limit, Some(512 << 20));
        assert_eq!(web.readiness.as_ref().unwrap().timeout, Duration::from_millis(500));
        assert_eq!(c.settings.control_socket, PathBuf::from("/run/supervisor/control.sock"));
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("[services.a]\ncommand = []\n", "services.a.command", "empty"),
            ("[services.a]\ncommand = [\"x\"]\ndepends_on = { b = \"ready\" }\n", "services.a.depends_on.b", "unknown service"),
            (
                "[services.a]\ncommand = [\"x\"]\ndepends_on = { b = \"ready\" }\n[services.b]\ncommand = [\"x\"]\ndepends_on = { a = \"started\" }\n",
                "depends_on",
                "cycle: a -> b -> a",
            ),
            ("[services.a]\ncommand = [\"x\"]\nport = 80\n[services.b]\ncommand = [\"x\"]\nport = 80\n", "services.b.port", "already used"),
            ("[services.a]\ncommand = [\"x\"]\nport = 3000\n", "services.a.port", "listen"),
            ("[services.a]\ncommand = [\"x\"]\nstop_timeout = \"5 parsecs\"\n", "services.a.stop_timeout", "bad duration"),
            ("[services.a]\ncommand = [\"x\"]\nreadiness = { tcp = \"x:1\", period = \"soon\" }\n", "services.a.readiness.period", "bad duration"),
            ("[services.a]\ncommand = [\"x\"]\nrestrat = \"always\"\n", "services.a", "unknown field `restrat`"),
            ("[services.a]\ncommand = [\"x\"]\nrestart = \"sometimes\"\n", "services.a.restart", "unknown variant"),
            ("[services.a]\ncommand = [\"x\"]\nreadiness = { tcp = \"x:1\", http = \"http://x/\" }\n", "services.a.readiness", "exactly one"),
            ("[services.a]\ncommand = [\"x\"]\nliveness = { tcp = \"nope\" }\n", "services.a.liveness.tcp", "HOST:PORT"),
            ("[services.a]\ncommand = [\"x\"]\nstop_signal = \"SIGNOPE\"\n", "services.a.stop_signal", "not a signal"),
            ("[services.a]\ncommand = [\"x\"]\nrestart_with = [\"zz\"]\n", "services.a.restart_with", "unknown service"),
            ("[services.a]\ncommand = [\"x\"]\nmemory_limit = \"12 bananas\"\n", "services.a.memory_limit", "size"),
            ("[services.a\ncommand = 1\n", "line 1", "TOML syntax"),
            ("", "services", "no service"),
        ];
        for (text, key, reason) in cases {
            let e = err(text);
            assert_eq!(e.file, "test.toml");
            assert!(e.key.contains(key), "key {:?} should contain {key:?} (reason: {})", e.key, e.reason);
            assert!(e.reason.contains(reason), "reason {:?} should contain {reason:?}", e.reason);
        }
    }

    #[test]
    fn overrides_win_and_empty_service_user_means_none() {
        let ov = Overrides { service_user: Some(String::new()), listen: Some("127.0.0.1:9".into()), port_guard: Some(GuardMode::Required), ..Default::default() };
        let c = resolve("t", Path::new("/"), "[services.a]\ncommand = [\"x\"]\nuser = \"user\"\n", &ov).unwrap();
        assert_eq!(c.services[0].user, None);
        assert_eq!(c.settings.listen, "127.0.0.1:9");
        assert_eq!(c.settings.port_guard, GuardMode::Required);
        assert_eq!(c.settings.port_guard_allow, [49983], "envd by default");
        let ov = Overrides { service_user: Some("nobody".into()), ..Default::default() };
        let c = resolve("t", Path::new("/"), "[services.a]\ncommand = [\"x\"]\nuser = \"user\"\n", &ov).unwrap();
        assert_eq!(c.services[0].user.as_deref(), Some("nobody"));
    }

    #[test]
    fn port_guard_modes_and_allow_list() {
        let svc = "[services.a]\ncommand = [\"x\"]\n";
        let mode = |v: &str| resolve("t", Path::new("/"), &format!("[supervisor]\nport_guard = {v}\n{svc}"), &Overrides::default()).map(|c| c.settings.port_guard);
        assert_eq!(mode("\"required\"").unwrap(), GuardMode::Required);
        assert_eq!(mode("\"on\"").unwrap(), GuardMode::On);
        assert_eq!(mode("true").unwrap(), GuardMode::On, "booleans still work");
        assert_eq!(mode("false").unwrap(), GuardMode::Off);
        let e = mode("\"maybe\"").unwrap_err();
        assert!(e.to_string().contains("required"), "{e}");
        let c = resolve("t", Path::new("/"), &format!("[supervisor]\nport_guard_allow = [49983, 8080]\n{svc}"), &Overrides::default()).unwrap();
        assert_eq!(c.settings.port_guard_allow, [49983, 8080]);
        assert_eq!(c.settings.port_guard, GuardMode::Off, "off by default");
        let e = resolve("t", Path::new("/"), &format!("[supervisor]\nport_guard_allow = [0]\n{svc}"), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, "supervisor.port_guard_allow");
    }

    #[test]
    fn embedded_default_is_valid_and_names_the_stack() {
        let c = resolve(EMBEDDED_NAME, Path::new("/opt/supervisor"), EMBEDDED_DEFAULT, &Overrides::default()).unwrap();
        let mut names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["acp", "chromium", "playwright-mcp", "vite", "xvfb"]);
    }
}
