//! Harness of the end-to-end suite: runs the built `supervisor` binary against real
//! children in a private temp dir, and guarantees that every process a test started —
//! the supervisor and anything it spawned, wherever it moved — is killed afterwards,
//! even when the test fails (each stack is tagged with a unique env var).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Env var carrying the per-stack tag into every process of the stack.
pub const TAG_VAR: &str = "SUPERVISOR_E2E_TAG";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The binary under test: `$SUPERVISOR_BIN`, else a fresh `cargo build` of the debug binary.
pub fn supervisor_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SUPERVISOR_BIN") {
            let p = PathBuf::from(p);
            let p = if p.is_relative() { repo_root().join(p) } else { p };
            assert!(p.exists(), "SUPERVISOR_BIN={} does not exist", p.display());
            return std::fs::canonicalize(p).expect("canonical bin");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "supervisor", "--bin", "supervisor"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build of the supervisor failed");
        repo_root().join("target/debug/supervisor")
    })
    .clone()
}

/// Serializes tests that use the fixed ports (3000, 5173, 9222, 3001, 3002).
pub fn fixed_ports_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free TCP port on 127.0.0.1 (for test services that need one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One running `supervisor run` with its own dirs.
pub struct Stack {
    /// Temp dir holding config, runtime dir and app dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// The supervisor process.
    pub child: Option<Child>,
    /// The unique tag of this stack.
    pub tag: String,
    /// `--runtime-dir`.
    pub runtime_dir: PathBuf,
    /// `--app-dir`.
    pub app_dir: PathBuf,
    /// Where the supervisor's stdout+stderr go.
    pub log_path: PathBuf,
    /// The public listener (`--listen`), e.g. `127.0.0.1:41234`.
    pub listen: String,
}

/// Options of [`Stack::start_with`].
#[derive(Default)]
pub struct StackOptions {
    /// Extra CLI args of `run`.
    pub args: Vec<String>,
    /// Extra env of the supervisor.
    pub env: Vec<(String, String)>,
    /// Use this app dir instead of an empty temp one.
    pub app_dir: Option<PathBuf>,
    /// Run the supervisor through this prefix (e.g. `ip netns exec NS`, which execs it).
    pub wrapper: Vec<String>,
}

impl Stack {
    /// Writes `config` (with `{DIR}` replaced by the temp dir) and starts the supervisor.
    pub fn start(config: &str) -> Result<Stack> {
        Self::start_with(config, StackOptions::default())
    }

    /// Like [`Stack::start`] with extra options.
    pub fn start_with(config: &str, opts: StackOptions) -> Result<Stack> {
        let dir = tempfile::Builder::new().prefix("sup-e2e-").tempdir()?;
        let tag = format!("{}-{}", std::process::id(), dir.path().file_name().unwrap().to_string_lossy());
        let runtime_dir = dir.path().join("run");
        let app_dir = opts.app_dir.clone().unwrap_or_else(|| dir.path().join("app"));
        std::fs::create_dir_all(&app_dir)?;
        let cfg = dir.path().join("supervisor.toml");
        std::fs::write(&cfg, config.replace("{DIR}", &dir.path().to_string_lossy()))?;
        let log_path = dir.path().join("supervisor.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = match opts.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(supervisor_bin());
                c
            }
            None => Command::new(supervisor_bin()),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--runtime-dir")
            .arg(&runtime_dir)
            .arg("--app-dir")
            .arg(&app_dir)
            .args(&opts.args)
            .env(TAG_VAR, &tag)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let listen = match opts.args.iter().position(|a| a == "--listen") {
            Some(i) => opts.args.get(i + 1).cloned().unwrap_or_default(),
            None => {
                let l = format!("127.0.0.1:{}", free_port());
                cmd.arg("--listen").arg(&l);
                l
            }
        };
        if !opts.args.iter().any(|a| a == "--service-user") {
            cmd.arg("--service-user").arg("");
        }
        let child = cmd.spawn().context("spawn supervisor")?;
        let stack = Stack { dir, child: Some(child), tag, runtime_dir, app_dir, log_path, listen };
        stack.wait_for("the control socket", Duration::from_secs(20), |s| Ok(s.runtime_dir.join("control.sock").exists()))?;
        Ok(stack)
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `http://<listen>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Runs `supervisor ctl --runtime-dir … ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(supervisor_bin())
            .arg("ctl")
            .arg("--runtime-dir")
            .arg(&self.runtime_dir)
            .args(args)
            .output()
            .expect("run ctl")
    }

    /// `ctl logs NAME --tail N`: the service's last `tail` lines.
    pub fn logs(&self, name: &str, tail: usize) -> String {
        String::from_utf8_lossy(&self.ctl(&["logs", name, "--tail", &tail.to_string()]).stdout).into_owned()
    }

    /// `ctl token rotate`, then the new token read from the token file.
    pub fn rotate_token(&self) -> String {
        let out = self.ctl(&["token", "rotate"]);
        assert!(out.status.success(), "token rotate: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(self.runtime_dir.join("token")).expect("token file").trim().to_string()
    }

    /// `ctl --json status`, parsed.
    pub fn status(&self) -> Result<Value> {
        let out = self.ctl(&["--json", "status"]);
        if !out.status.success() {
            bail!("ctl status failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// One service's entry of the status.
    pub fn service(&self, name: &str) -> Result<Value> {
        service_in(&self.status()?, name).cloned().with_context(|| format!("no service {name} in status"))
    }

    /// Polls `cond` every 20 ms until it holds, or fails after `limit` with the status and log.
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Stack) -> Result<bool>) -> Result<()> {
        let start = Instant::now();
        let mut last_err = String::new();
        loop {
            match cond(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = format!("{e:#}"),
            }
            if start.elapsed() > limit {
                bail!(
                    "timed out after {limit:?} waiting for {what} ({last_err})\nstatus: {}\nlog:\n{}",
                    self.status().map(|v| v.to_string()).unwrap_or_default(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until service `name` satisfies `pred` on its status entry.
    pub fn wait_service(&self, name: &str, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut seen = Value::Null;
        self.wait_for(&format!("{name}: {what}"), limit, |s| {
            seen = s.service(name)?;
            Ok(pred(&seen))
        })?;
        Ok(seen)
    }

    /// Waits until service `name` is in `state`; returns its status entry.
    pub fn wait_state(&self, name: &str, state: &str, limit: Duration) -> Result<Value> {
        self.wait_service(name, limit, state, |v| v["state"] == state)
    }

    /// Waits until the whole stack reports ready.
    pub fn wait_ready(&self, limit: Duration) -> Result<()> {
        self.wait_for("the stack ready", limit, |s| Ok(s.status()?["ready"] == true))
    }

    /// The last `n` lines of the supervisor's output.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM and waits for the supervisor to exit; returns its exit status and time taken.
    pub fn terminate(&mut self, limit: Duration) -> Result<(std::process::ExitStatus, Duration)> {
        let mut child = self.child.take().context("already stopped")?;
        let t = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
        match wait_child(&mut child, limit)? {
            Some(st) => Ok((st, t.elapsed())),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("supervisor did not exit within {limit:?}\n{}", self.log_tail(40));
            }
        }
    }

    /// Pids (other than the supervisor) still carrying this stack's tag.
    pub fn leftovers(&self) -> Vec<i32> {
        tagged_pids(&self.tag).into_iter().filter(|p| *p != self.pid()).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = wait_child(&mut c, Duration::from_secs(10));
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in tagged_pids(&self.tag) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Polls `child` until it exits (its status) or `limit` passes (None).
pub fn wait_child(child: &mut Child, limit: Duration) -> std::io::Result<Option<std::process::ExitStatus>> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if t.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One service's entry in a status document already read.
pub fn service_in<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["services"].as_array()?.iter().find(|s| s["name"] == name)
}

/// Every pid in `/proc` (zombies included).
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).collect()
}

/// Live (non-zombie) pids whose environment holds `TAG_VAR=tag`.
pub fn tagged_pids(tag: &str) -> Vec<i32> {
    let needle = format!("{TAG_VAR}={tag}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
                .unwrap_or(false)
                && !is_zombie(*pid)
        })
        .collect()
}

/// Whether `pid` is a zombie (exited, not yet reaped). False when it is gone.
pub fn is_zombie(pid: i32) -> bool {
    proc_stat_field(pid, 3).is_some_and(|s| s == "Z")
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
pub fn proc_stat_field(pid: i32, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// Whether a process with this pid exists (zombie or not).
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Reads a pid written by a test service into a file, waiting for it to appear.
pub fn read_pid_file(path: &Path, limit: Duration) -> Result<i32> {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse() {
                return Ok(p);
            }
        }
        if t.elapsed() > limit {
            bail!("no pid in {} after {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HTTP answer as seen by curl.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code (0 when curl could not connect).
    pub status: u16,
    /// Response headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Runs curl (`-s`, 20 s max) with `args` (method, headers, data, URL) and parses the answer.
pub fn curl(args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().expect("tempdir");
    let hdr = dir.path().join("h");
    let body = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&hdr)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    Reply { status, headers, body: std::fs::read(&body).unwrap_or_default() }
}

/// A private copy of `app-template/` at `<dir>/app`, so tests can edit `src/` freely:
/// sources copied; `node_modules/` a real directory of symlinks to the template's entries
/// except `.vite`, so each copy has its own dep-optimizer cache (Vite writes it to
/// `<root>/node_modules/.vite`) and parallel tests never share it.
pub fn copy_app_template() -> Result<tempfile::TempDir> {
    let src = repo_root().join("app-template");
    let nm = src.join("node_modules");
    anyhow::ensure!(nm.join(".bin/vite").exists(), "app-template/node_modules is missing: run scripts/setup.sh");
    let dir = tempfile::Builder::new().prefix("sup-app-").tempdir()?;
    let dst = dir.path().join("app");
    copy_tree(&src, &dst)?;
    let own_nm = dst.join("node_modules");
    std::fs::create_dir(&own_nm)?;
    for e in std::fs::read_dir(&nm)? {
        let name = e?.file_name();
        if name != ".vite" {
            std::os::unix::fs::symlink(nm.join(&name), own_nm.join(&name))?;
        }
    }
    Ok(dir)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let name = e.file_name();
        if name == "node_modules" || name == "dist" || name == ".env" {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Runs `node tests/js/SCRIPT args...` and returns its one JSON line (fails with stderr).
pub fn node_client(script: &str, args: &[&str]) -> Result<Value> {
    let js = repo_root().join("tests/js");
    anyhow::ensure!(js.join("node_modules").exists(), "tests/js/node_modules is missing: run scripts/setup.sh");
    let out = Command::new("node").arg(js.join(script)).args(args).output()?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).with_context(|| format!("{script} printed no JSON: {text}"))?;
    Ok(serde_json::from_str(line)?)
}
