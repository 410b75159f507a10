//! Property tests of the config parser (`config::resolve`): arbitrary text and arbitrary
//! TOML-ish documents never panic, every error names a key (or a line and column) and a
//! reason, and a valid config with one wrongly typed or invalid value is refused with an
//! error naming exactly that key. Case counts: `PROPTEST_CASES` (default below) each.

use proptest::prelude::*;
use std::path::Path;
use supervisor::config::{resolve, Overrides};

const CASES: u32 = 1000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn run(text: &str) -> Result<supervisor::config::Config, supervisor::config::ConfigError> {
    let ov = Overrides { app_dir: Some("/tmp/app".into()), runtime_dir: Some("/tmp/run".into()), ..Default::default() };
    resolve("test.toml", Path::new("/tmp"), text, &ov)
}

const KEYS: &[&str] = &[
    "listen", "service_user", "port_guard", "shutdown_timeout", "control_socket", "token_file", "env_file", "log_lines", "proxy_service",
    "proxy_upstream", "sandbox_id_file", "resume_grace", "command", "cwd", "env", "user", "depends_on", "restart", "backoff", "crash_loop",
    "startup", "readiness", "liveness", "stop_signal", "stop_timeout", "memory_limit", "required", "restart_with", "env_injection", "port",
    "disabled", "tcp", "http", "status", "cdp", "exec", "file", "x11", "initial_delay", "period", "timeout", "failure_threshold",
    "success_threshold", "initial", "max", "multiplier", "reset_after", "jitter", "max_restarts", "window", "bogus",
];

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec!["0", "-1", "65535", "65536", "1e400", "nan", "inf", "true", "false", "0.5", "\"\"", "\"2s\"", "\"-1s\"", "\"99999999999999999h\"", "\"1.5GB\"", "\"512MiB\"", "\"on\"", "\"off\"", "\"SIGTERM\"", "\"SIGNOPE\"", "\"always\"", "\"never\"", "\"ready\"", "\"127.0.0.1:1\"", "\"http://127.0.0.1:1/\"", "\"${APP_DIR}/x\"", "\"${NOPE}\"", "1979-05-27T07:32:00Z"]).prop_map(str::to_string),
        "\"[ -~]{0,12}\"".prop_map(|s| s.replace('\\', "\\\\")),
        "'[^'\n]{0,12}'",
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..4)
                .prop_map(|kv| format!("{{ {} }}", kv.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))),
        ]
    })
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec!["[supervisor]", "[services.a]", "[services.b]", "[services.a.readiness]", "[services.b.liveness]", "[services.a.env]", "[services.a.depends_on]", "[[services]]", "[services]", "[bogus]", "[services.\"we ird\"]", "[", "]]", "#", ""]).prop_map(str::to_string),
        5 => (prop::sample::select(KEYS.to_vec()), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,30}",
    ]
}

fn check_error(e: &supervisor::config::ConfigError) -> Result<(), TestCaseError> {
    prop_assert_eq!(&e.file, "test.toml");
    prop_assert!(!e.key.is_empty(), "no key in {}", e);
    prop_assert!(!e.reason.is_empty(), "no reason in {}", e);
    Ok(())
}

/// A valid base config (all of whose keys the next property breaks one at a time).
const BASE: &str = r#"
[supervisor]
listen = "127.0.0.1:3999"
log_lines = 100
shutdown_timeout = "5s"

[services.a]
command = ["sleep", "1"]
port = 4100
stop_timeout = "2s"
restart = "always"
readiness = { tcp = "127.0.0.1:4100", period = "1s" }

[services.b]
command = ["sleep", "2"]
depends_on = { a = "ready" }
"#;

/// (table, key, a bad value): wrong types, out of range, or failing validation.
fn broken() -> impl Strategy<Value = (&'static str, &'static str, String)> {
    let bad_int = prop_oneof![Just("\"x\"".to_string()), Just("true".to_string()), Just("[1]".to_string()), Just("-5".to_string()), Just("1.5".to_string())];
    let bad_dur = prop_oneof![Just("\"abc\"".to_string()), Just("5".to_string()), Just("\"5 parsecs\"".to_string()), Just("[]".to_string()), Just("\"-1s\"".to_string())];
    let bad_str = prop_oneof![Just("1".to_string()), Just("true".to_string()), Just("{ x = 1 }".to_string())];
    prop_oneof![
        bad_int.clone().prop_map(|v| ("services.a", "port", v)),
        prop_oneof![Just("65536".to_string()), Just("70000".to_string())].prop_map(|v| ("services.a", "port", v)),
        bad_int.prop_map(|v| ("supervisor", "log_lines", v)),
        bad_dur.clone().prop_map(|v| ("supervisor", "shutdown_timeout", v)),
        bad_dur.prop_map(|v| ("services.a", "stop_timeout", v)),
        bad_str.clone().prop_map(|v| ("services.a", "cwd", v)),
        prop_oneof![Just("\"nope\"".to_string()), Just("\"1.2.3.4\"".to_string()), Just("7".to_string())].prop_map(|v| ("supervisor", "listen", v)),
        prop_oneof![Just("\"sometimes\"".to_string()), Just("1".to_string())].prop_map(|v| ("services.a", "restart", v)),
        prop_oneof![Just("\"SIGNOPE\"".to_string()), Just("\"999\"".to_string()), Just("false".to_string())].prop_map(|v| ("services.a", "stop_signal", v)),
        prop_oneof![Just("\"lots\"".to_string()), Just("-1".to_string()), Just("\"12 parsecs\"".to_string())].prop_map(|v| ("services.a", "memory_limit", v)),
        prop_oneof![Just("\"yes\"".to_string()), Just("1".to_string())].prop_map(|v| ("services.a", "required", v)),
        bad_str.prop_map(|v| ("services.a", "nonsense_key", v)),
    ]
}

/// `BASE` with `key = value` put into `table` (replacing the key where it is set).
fn with(table: &str, key: &str, value: &str) -> String {
    let mut out = String::new();
    let mut current = "";
    let mut placed = false;
    for line in BASE.lines() {
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if current == table && !placed {
                out.push_str(&format!("{key} = {value}\n"));
                placed = true;
            }
            current = t;
        } else if current == table && line.split('=').next().is_some_and(|k| k.trim() == key) {
            out.push_str(&format!("{key} = {value}\n"));
            placed = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        if let Err(e) = run(&text) {
            check_error(&e)?;
        }
    }

    #[test]
    fn toml_ish_documents_never_panic(lines in prop::collection::vec(toml_line(), 0..30)) {
        let text = lines.join("\n");
        if let Err(e) = run(&text) {
            check_error(&e)?;
        }
    }

    #[test]
    fn one_bad_value_is_refused_naming_its_key((table, key, value) in broken()) {
        let text = with(table, key, &value);
        let e = match run(&text) {
            Ok(_) => return Err(TestCaseError::fail(format!("accepted {table}.{key} = {value}:\n{text}"))),
            Err(e) => e,
        };
        check_error(&e)?;
        let full = format!("{table}.{key}");
        prop_assert!(e.key == full || e.key.starts_with(&format!("{full}.")) || (e.key.starts_with("line ") && e.reason.contains(key)) || (e.key == table && e.reason.contains(key)),
            "{} = {} gave {}", full, value, e);
    }
}

#[test]
fn the_base_config_is_valid() {
    run(BASE).expect("BASE must be valid for the broken-key property to mean anything");
}
