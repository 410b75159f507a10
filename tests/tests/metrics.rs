//! `GET /_supervisor/metrics` (SPEC §5): the page parses with the official Prometheus
//! Python parser, and its numbers agree with `status` and with what the test did
//! (restarts after a kill, readiness, one proxied request counted once in its class).

use anyhow::Context;
use e2e::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Parses `page` with `prometheus_client.parser` (fails the test on any parse error).
fn parse(page: &str) -> anyhow::Result<Value> {
    let mut py = Command::new("/usr/bin/python3")
        .arg(repo_root().join("tests/tools/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 (scripts/setup.sh installs python3-prometheus-client)")?;
    py.stdin.take().context("stdin")?.write_all(page.as_bytes())?;
    let out = py.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the page does not parse: {}\n{page}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parsed["samples"].as_array()?.iter().find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))?["value"].as_f64()
}

fn scrape(s: &Stack, tok: &str) -> anyhow::Result<(String, Value)> {
    let r = s.api(tok, "GET", "/_supervisor/metrics", None);
    anyhow::ensure!(r.status == 200, "metrics: {} {}", r.status, r.text());
    let ct = r.header("content-type").unwrap_or("").to_string();
    anyhow::ensure!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct}");
    let page = r.text();
    let parsed = parse(&page)?;
    Ok((page, parsed))
}

fn config(web: u16) -> String {
    format!(
        r#"
[supervisor]
proxy_service = "web"

[services.web]
command = ["python3", "-m", "http.server", "{web}", "--bind", "127.0.0.1"]
cwd = "{{DIR}}"
port = {web}
readiness = {{ http = "http://127.0.0.1:{web}/", status = 200, period = "1s" }}

[services.idle]
command = ["sleep", "infinity"]
"#
    )
}

#[test]
fn the_page_parses_and_agrees_with_status_and_with_what_happened() -> anyhow::Result<()> {
    let web = free_port();
    let s = Stack::start(&config(web))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    assert_eq!(curl(&["-s", &s.url("/_supervisor/metrics")]).status, 401, "the token is needed");

    let (page, m) = scrape(&s, &tok)?;
    for name in ["supervisor_service_state", "supervisor_service_ready", "supervisor_service_rss_bytes", "supervisor_probe_duration_seconds", "supervisor_proxy_requests", "supervisor_proxy_request_duration_seconds", "supervisor_system_memory_total_bytes", "supervisor_uptime_seconds", "supervisor_open_fds"] {
        assert!(m["families"].as_array().unwrap().iter().any(|f| f["name"] == name), "{name} missing:\n{page}");
    }
    let status = s.status()?;
    for svc in ["web", "idle"] {
        assert_eq!(sample(&m, "supervisor_service_ready", &[("service", svc)]), Some(1.0), "{svc} ready");
        assert_eq!(sample(&m, "supervisor_service_state", &[("service", svc), ("state", "ready")]), Some(1.0), "{svc} state one-hot");
        let hot: f64 = m["samples"].as_array().unwrap().iter().filter(|x| x["name"] == "supervisor_service_state" && x["labels"]["service"] == svc).map(|x| x["value"].as_f64().unwrap()).sum();
        assert_eq!(hot, 1.0, "exactly one state of {svc} is 1");
        assert!(sample(&m, "supervisor_service_rss_bytes", &[("service", svc)]).unwrap_or(0.0) > 0.0, "{svc} rss");
    }
    let probes = sample(&m, "supervisor_probe_duration_seconds_count", &[("service", "web"), ("kind", "http"), ("result", "success")]).unwrap_or(0.0);
    assert!(probes >= 1.0, "web's http probe passed at least once:\n{page}");
    assert_eq!(sample(&m, "supervisor_system_memory_total_bytes", &[]), status["system"]["mem_total"].as_f64(), "the same machine figure as status");
    assert_eq!(sample(&m, "supervisor_system_cpus", &[]), status["system"]["cpus"].as_f64());
    assert!(status["system"]["disk_free"].as_u64().unwrap_or(0) > 0 && status["system"]["load1"].is_number(), "{}", status["system"]);

    // A kill: one restart, by crash, in both status and metrics.
    let pid = service_in(&status, "idle").context("idle")?["pid"].as_i64().context("pid")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)?;
    let after = s.wait_service("idle", T, "restarted and ready", |v| v["restarts"] == 1 && v["ready"] == true)?;
    // A proxied request, counted once as app 2xx.
    let (_, before) = scrape(&s, &tok)?;
    let app_ok = sample(&before, "supervisor_proxy_requests_total", &[("route", "app"), ("code", "2xx")]).unwrap_or(0.0);
    let r = curl(&["-s", &s.url("/")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let (page, m) = scrape(&s, &tok)?;
    assert_eq!(sample(&m, "supervisor_service_restarts_total", &[("service", "idle"), ("cause", "crash")]), after["restarts"].as_f64(), "restarts agree:\n{page}");
    assert_eq!(sample(&m, "supervisor_proxy_requests_total", &[("route", "app"), ("code", "2xx")]), Some(app_ok + 1.0), "one app request, counted once");
    assert!(sample(&m, "supervisor_proxy_requests_total", &[("route", "control"), ("code", "2xx")]).unwrap_or(0.0) >= 2.0, "the scrapes are control requests");
    assert!(sample(&m, "supervisor_proxy_request_duration_seconds_count", &[("route", "app")]).unwrap_or(0.0) >= 1.0);

    // Env writes by result.
    let ok = s.api(&tok, "POST", "/_supervisor/env", Some(r#"{"set":{"A":"1"}}"#));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(s.api(&tok, "POST", "/_supervisor/env", Some(r#"{"set":{"1BAD":"x"}}"#)).status, 400);
    let (page, m) = scrape(&s, &tok)?;
    assert_eq!(sample(&m, "supervisor_env_writes_total", &[("result", "ok")]), Some(1.0), "{page}");
    let bad: f64 = m["samples"].as_array().unwrap().iter().filter(|x| x["name"] == "supervisor_env_writes_total" && x["labels"]["result"] != "ok").map(|x| x["value"].as_f64().unwrap()).sum();
    assert_eq!(bad, 1.0, "one refused write:\n{page}");

    // The control socket serves the same page.
    let out = s.ctl(&["metrics"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = parse(&String::from_utf8_lossy(&out.stdout))?;
    assert_eq!(sample(&m, "supervisor_service_ready", &[("service", "web")]), Some(1.0));
    Ok(())
}

#[test]
fn labels_stay_bounded_whatever_paths_clients_ask_for() -> anyhow::Result<()> {
    let web = free_port();
    let s = Stack::start(&config(web))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    for i in 0..20 {
        curl(&["-s", &s.url(&format!("/nope-{i}?q={i}"))]);
        curl(&["-s", &s.url(&format!("/_supervisor/unknown-{i}"))]);
    }
    let (page, _) = scrape(&s, &tok)?;
    assert!(!page.contains("nope-") && !page.contains("unknown-"), "no path in a label:\n{page}");
    let series = page.lines().filter(|l| l.starts_with("supervisor_proxy_requests_total")).count();
    assert_eq!(series, 15, "3 routes x 5 code classes, pre-registered:\n{page}");
    Ok(())
}
