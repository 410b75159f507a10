//! Harness of the end-to-end suite: runs the built `supervisor` binary against real
//! children in a private temp dir, and guarantees that every process a test started —
//! the supervisor and anything it spawned, wherever it moved — is killed afterwards,
//! even when the test fails (each stack is tagged with a unique env var).
//!
//! Nothing the harness starts can hang a run or outlive it: every client call has a
//! timeout (the child is killed at it), every child gets a parent-death signal, helper
//! children live in [`ChildGuard`]s, and the first stack of a run sweeps the processes
//! left tagged by an earlier run whose test runner is dead.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long a `ctl` call may take before the harness kills it and fails the test.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a Node client (`tests/js/*.mjs`) may take before it is killed.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// Env var carrying the per-stack tag into every process of the stack.
pub const TAG_VAR: &str = "SUPERVISOR_E2E_TAG";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// A file of `tests/fixtures/` (configs, the echo upstream), as a path string.
pub fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    assert!(p.exists(), "no fixture {}", p.display());
    p.to_string_lossy().into_owned()
}

/// The text of a file of `tests/fixtures/` (e.g. a config for [`Stack::start`]).
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
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

/// The machine-wide lock file of the fixed ports: every agent and test binary on this
/// machine that binds 3000, 5173, 9222, 3001 or 3002 takes an `flock` on it.
pub const FIXED_PORTS_LOCK_FILE: &str = "/tmp/sup-fixed-ports.lock";

/// Held while a test uses the fixed ports: the in-process mutex (tests of one binary) and
/// an `flock` on [`FIXED_PORTS_LOCK_FILE`] (other test binaries and other agents).
pub struct FixedPortsLock {
    _flock: Option<nix::fcntl::Flock<std::fs::File>>,
    _guard: MutexGuard<'static, ()>,
}

/// Serializes tests that use the fixed ports (3000, 5173, 9222, 3001, 3002), across
/// threads and processes. When the run already executes under
/// `flock /tmp/sup-fixed-ports.lock cargo test ...` (the lock fd is inherited), the
/// ancestor holds the file lock for us and only the mutex is taken (a second flock on a
/// new open file would wait for ourselves forever).
pub fn fixed_ports_lock() -> FixedPortsLock {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if inherited_fd_of(Path::new(FIXED_PORTS_LOCK_FILE)) {
        return FixedPortsLock { _flock: None, _guard: guard };
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(FIXED_PORTS_LOCK_FILE)
        .expect("open the fixed-ports lock file");
    let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => return FixedPortsLock { _flock: Some(l), _guard: guard },
        Err((f, _)) => f,
    };
    eprintln!("waiting for {FIXED_PORTS_LOCK_FILE} (another run uses the fixed ports)");
    let l = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock the fixed-ports lock");
    FixedPortsLock { _flock: Some(l), _guard: guard }
}

/// Whether one of this process's open fds is `path` (e.g. inherited from `flock(1)`).
fn inherited_fd_of(path: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return false };
    dir.filter_map(|e| e.ok()).any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
}

/// Makes `cmd`'s child die (SIGKILL) when the harness dies, so a killed or crashed test
/// runner leaves nothing behind. Linux ties the signal to the spawning *thread*: spawn
/// from the test's own thread (which outlives what it starts).
pub fn die_with_runner(cmd: &mut Command) -> &mut Command {
    let runner = nix::unistd::getpid();
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The runner may have died between fork and prctl.
            if nix::unistd::getppid() != runner {
                return Err(std::io::Error::other("the test runner is gone"));
            }
            Ok(())
        })
    }
}

/// Runs `cmd` (in its own process group, dying with the runner) with its output captured,
/// killing the whole group at `limit`. Fails on the timeout, with what it printed.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    cmd.stdout(out.try_clone()?).stderr(err.try_clone()?);
    cmd.process_group(0);
    let mut child = die_with_runner(cmd).spawn().with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let status = wait_child(&mut child, limit)?;
    match status {
        Some(status) => Ok(Output { status, stdout: read_back(&mut out), stderr: read_back(&mut err) }),
        None => {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{:?} {:?} did not finish within {limit:?} (killed)\nstdout:\n{}\nstderr:\n{}",
                cmd.get_program(),
                cmd.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&read_back(&mut out)),
                String::from_utf8_lossy(&read_back(&mut err))
            )
        }
    }
}

/// Everything written to `f` (a child's output file) so far, from its start.
pub fn read_back(f: &mut std::fs::File) -> Vec<u8> {
    let mut v = vec![];
    let _ = f.rewind();
    let _ = f.read_to_end(&mut v);
    v
}

/// A helper child of a test (a follower, a slow client...): its process group is killed
/// and the child reaped when the guard drops, however the test ends.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd` in its own process group, dying with the runner.
    pub fn spawn(cmd: &mut Command) -> Result<ChildGuard> {
        sweep_stale_runs();
        cmd.process_group(0);
        let child = die_with_runner(cmd).spawn().with_context(|| format!("spawn {:?}", cmd.get_program()))?;
        Ok(ChildGuard { child: Some(child) })
    }

    /// The child (e.g. to take its stdout).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child")
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits up to `limit` for it to exit on its own (None: still running).
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
        Ok(wait_child(self.child(), limit)?)
    }

    /// Waits up to `limit` for it to exit and returns what it printed on its piped
    /// stdout/stderr; at the timeout it is killed and this fails.
    pub fn wait_output(mut self, limit: Duration) -> Result<Output> {
        let child = self.child();
        let mut so = child.stdout.take();
        let mut se = child.stderr.take();
        let ro = std::thread::spawn(move || {
            let mut v = vec![];
            if let Some(s) = so.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        let re = std::thread::spawn(move || {
            let mut v = vec![];
            if let Some(s) = se.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        let status = wait_child(self.child(), limit)?;
        self.kill();
        let (stdout, stderr) = (ro.join().unwrap_or_default(), re.join().unwrap_or_default());
        match status {
            Some(status) => Ok(Output { status, stdout, stderr }),
            None => bail!("child did not exit within {limit:?} (killed)\nstderr:\n{}", String::from_utf8_lossy(&stderr)),
        }
    }

    /// Kills its process group now and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The start time (field 22 of `/proc/PID/stat`) of `pid`, which tells a live runner
/// from an unrelated process that got its pid later.
fn start_time(pid: i32) -> Option<String> {
    proc_stat_field(pid, 22)
}

/// This runner's part of every tag: `PID.STARTTIME`.
fn runner_id() -> String {
    let me = std::process::id() as i32;
    format!("{me}.{}", start_time(me).unwrap_or_default())
}

/// Once per run: SIGKILLs every process carrying a stack tag of an earlier run whose
/// test runner no longer exists (a runner that was killed, or crashed, before its
/// `Drop`s ran), and deletes the network namespaces such runs left.
pub fn sweep_stale_runs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        sweep_stale_runs_now();
    });
}

/// The sweep of [`sweep_stale_runs`], run now (whether or not it ran before); returns the
/// pids it killed.
pub fn sweep_stale_runs_now() -> Vec<i32> {
    let mut killed = vec![];
    {
        let prefix = format!("{TAG_VAR}=");
        for pid in all_pids() {
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            let Some(tag) = env.split(|b| *b == 0).find_map(|v| v.strip_prefix(prefix.as_bytes())) else { continue };
            let tag = String::from_utf8_lossy(tag);
            if !runner_alive(&tag) {
                eprintln!("harness: killing {pid}, left by the dead test run {tag}");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                killed.push(pid);
            }
        }
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if let Some(rest) = name.strip_prefix(NETNS_PREFIX) {
                    let runner: i32 = rest.split('-').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    if runner > 0 && !pid_exists(runner) {
                        let _ = Command::new("ip").args(["netns", "del", name]).output();
                    }
                }
            }
        }
    }
    killed
}

/// Whether the runner named in `tag` (`PID.STARTTIME-...`, or the older `PID-...`) lives.
fn runner_alive(tag: &str) -> bool {
    let id = tag.split('-').next().unwrap_or("");
    let (pid, start) = match id.split_once('.') {
        Some((p, s)) => (p, Some(s)),
        None => (id, None),
    };
    let Ok(pid) = pid.parse::<i32>() else { return true };
    match start {
        Some(s) => start_time(pid).as_deref() == Some(s),
        None => pid_exists(pid),
    }
}

/// The status flags of this test binary's stdout and stderr (O_NONBLOCK among them). A
/// child that shares such a pipe can change them for everyone on it: Node makes an
/// inherited pipe non-blocking and leaves it so when killed, and libtest then dies mid-run
/// (exit 101, nothing printed) on the first EAGAIN of a later test binary that writes a lot.
pub fn runner_output_flags() -> [nix::fcntl::OFlag; 2] {
    use std::os::fd::AsFd;
    let flags = |fd: std::os::fd::BorrowedFd| {
        nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL"))
    };
    [flags(std::io::stdout().as_fd()), flags(std::io::stderr().as_fd())]
}

/// A free TCP port on 127.0.0.1 (for test services that need one), never one this test
/// process handed out before: the kernel may give a just-released ephemeral port again, and
/// a test's service port must not come back as its stack's listen port.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
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
    /// The read end of the unread output pipe ([`StackOptions::unread_output`]).
    _unread: Option<std::os::fd::OwnedFd>,
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
    /// Pass the config, runtime dir, app dir, listen address and service user as their
    /// `SUPERVISOR_*` env vars instead of flags (tests of the env-var forms).
    pub env_only: bool,
    /// Send the supervisor's stdout and stderr into a pipe nobody reads (held open by the
    /// stack) instead of the log file: the "never blocks on its own stdout" promise.
    pub unread_output: bool,
}

impl Stack {
    /// Writes `config` (with `{DIR}` replaced by the temp dir) and starts the supervisor.
    pub fn start(config: &str) -> Result<Stack> {
        Self::start_with(config, StackOptions::default())
    }

    /// Like [`Stack::start`] with extra options.
    pub fn start_with(config: &str, opts: StackOptions) -> Result<Stack> {
        sweep_stale_runs();
        let dir = tempfile::Builder::new().prefix("sup-e2e-").tempdir()?;
        let tag = format!("{}-{}", runner_id(), dir.path().file_name().unwrap().to_string_lossy());
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
        // Flags, or (env_only) the same settings as env vars.
        let mut deferred: Vec<(&str, &str, std::ffi::OsString)> = vec![
            ("--config", "SUPERVISOR_CONFIG", cfg.clone().into_os_string()),
            ("--runtime-dir", "SUPERVISOR_RUNTIME_DIR", runtime_dir.clone().into_os_string()),
            ("--app-dir", "SUPERVISOR_APP_DIR", app_dir.clone().into_os_string()),
        ];
        let listen = match opts.args.iter().position(|a| a == "--listen") {
            Some(i) => opts.args.get(i + 1).cloned().unwrap_or_default(),
            None => {
                let l = format!("127.0.0.1:{}", free_port());
                deferred.push(("--listen", "SUPERVISOR_LISTEN", l.clone().into()));
                l
            }
        };
        if !opts.args.iter().any(|a| a == "--service-user") && !opts.env.iter().any(|(k, _)| k == "SUPERVISOR_SERVICE_USER") {
            deferred.push(("--service-user", "SUPERVISOR_SERVICE_USER", "".into()));
        }
        cmd.arg("run");
        for (flag, var, value) in &deferred {
            if opts.env_only {
                cmd.env(var, value);
            } else {
                cmd.arg(flag).arg(value);
            }
        }
        let mut unread = None;
        let (out, err): (Stdio, Stdio) = if opts.unread_output {
            let (r, w) = nix::unistd::pipe()?;
            unread = Some(r);
            (w.try_clone()?.into(), w.into())
        } else {
            (log.try_clone()?.into(), log.into())
        };
        cmd.args(&opts.args)
            .env(TAG_VAR, &tag)
            // Hermetic: the supervisor decides which service gets a compile cache.
            .env_remove("NODE_COMPILE_CACHE")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let in_other_netns = !opts.wrapper.is_empty();
        let child = die_with_runner(&mut cmd).spawn().context("spawn supervisor")?;
        let stack = Stack { dir, child: Some(child), tag, runtime_dir, app_dir, log_path, listen, _unread: unread };
        stack.wait_for("the control socket", Duration::from_secs(20), |s| Ok(s.runtime_dir.join("control.sock").exists()))?;
        // The public listener binds after the control socket. Through a wrapper (a network
        // namespace of its own) it is looked up in the supervisor's own /proc/PID/net.
        stack.wait_for("the public listener", Duration::from_secs(20), |s| {
            Ok(if in_other_netns { listening_in_netns_of(s.pid(), &s.listen) } else { accepts(&s.listen) })
        })?;
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

    /// Runs `supervisor ctl --runtime-dir … ARGS`; panics (failing the test) when it
    /// takes longer than [`CTL_TIMEOUT`] (it is killed then).
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_timeout(args, CTL_TIMEOUT).unwrap_or_else(|e| panic!("ctl {args:?}: {e:#}\nlog:\n{}", self.log_tail(40)))
    }

    /// `ctl ARGS` killed at `limit`.
    pub fn ctl_timeout(&self, args: &[&str], limit: Duration) -> Result<Output> {
        run_with_timeout(Command::new(supervisor_bin()).arg("ctl").arg("--runtime-dir").arg(&self.runtime_dir).args(args).stdin(Stdio::null()), limit)
    }

    /// A helper child running `supervisor ctl --runtime-dir … ARGS` with piped stdout
    /// (e.g. `logs NAME -f`), killed when the guard drops.
    pub fn ctl_spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        ChildGuard::spawn(
            Command::new(supervisor_bin())
                .arg("ctl")
                .arg("--runtime-dir")
                .arg(&self.runtime_dir)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// `supervisor ready --timeout SECS` against this stack (killed a little after its own timeout).
    pub fn ready_cmd(&self, secs: u64) -> Result<Output> {
        run_with_timeout(
            Command::new(supervisor_bin()).args(["ready", "--timeout", &secs.to_string(), "--runtime-dir"]).arg(&self.runtime_dir),
            Duration::from_secs(secs + 15),
        )
    }

    /// A token-authenticated call of the control API over HTTP: `METHOD PATH` with
    /// `Authorization: Bearer TOKEN` and, when `body` is given, that JSON body.
    pub fn api(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = format!("Authorization: Bearer {token}");
        let url = self.url(path);
        match body {
            None => curl(&["-X", method, "-H", &auth, &url]),
            Some(b) => {
                let f = tempfile::NamedTempFile::new().expect("temp body");
                std::fs::write(f.path(), b).expect("write body");
                let data = format!("@{}", f.path().display());
                curl(&["-X", method, "-H", &auth, "-H", "Content-Type: application/json", "--data-binary", &data, &url])
            }
        }
    }

    /// Whether the supervisor process has exited (it is our child: a zombie until reaped).
    pub fn exited(&self) -> bool {
        let pid = self.pid();
        pid > 0 && (is_zombie(pid) || !pid_exists(pid))
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
            if self.exited() {
                bail!("the supervisor exited while waiting for {what} ({last_err})\nlog:\n{}", self.log_tail(60));
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
    let out = run_with_timeout(
        Command::new("curl").args(["-s", "--max-time", "20", "-D"]).arg(&hdr).arg("-o").arg(&body).args(["-w", "%{http_code}"]).args(args).stdin(Stdio::null()),
        Duration::from_secs(90),
    )
    .expect("run curl");
    reply_from(&out, &hdr, &body)
}

/// A private copy of `app-template/` at `<dir>/app`, so tests can edit `src/` freely:
/// sources copied; `node_modules/` a real directory of symlinks to the template's entries
/// except `.vite` and `.vite-temp`, so each copy has its own dep-optimizer cache (Vite
/// writes it to `<root>/node_modules/.vite`) and config bundle (`.vite-temp`): parallel
/// tests never share them, and one made by root never locks out a test user's Vite.
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
        if name != ".vite" && name != ".vite-temp" {
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

/// Runs `node tests/js/SCRIPT args...` and returns its one JSON line (fails with stderr);
/// killed (and failing) after [`NODE_TIMEOUT`].
pub fn node_client(script: &str, args: &[&str]) -> Result<Value> {
    node_client_timeout(script, args, NODE_TIMEOUT)
}

/// `node tests/js/SCRIPT args...` as it ended (exit status, stdout, stderr), killed at
/// `limit`: for checks of *how* a client fails (e.g. its stderr names HTTP 401).
pub fn node_run(script: &str, args: &[&str], limit: Duration) -> Result<Output> {
    let js = repo_root().join("tests/js");
    anyhow::ensure!(js.join("node_modules").exists(), "tests/js/node_modules is missing: run scripts/setup.sh");
    run_with_timeout(Command::new("node").arg(js.join(script)).args(args).stdin(Stdio::null()), limit)
}

/// [`node_run`] through a wrapper (e.g. [`NetNs::exec`], to reach a namespace's ports).
pub fn node_run_in(wrapper: &[String], script: &str, args: &[&str], limit: Duration) -> Result<Output> {
    let js = repo_root().join("tests/js");
    anyhow::ensure!(js.join("node_modules").exists(), "tests/js/node_modules is missing: run scripts/setup.sh");
    let Some((first, rest)) = wrapper.split_first() else { return node_run(script, args, limit) };
    run_with_timeout(Command::new(first).args(rest).arg("node").arg(js.join(script)).args(args).stdin(Stdio::null()), limit)
}

/// [`node_client`] through a wrapper: its one JSON line.
pub fn node_client_in(wrapper: &[String], script: &str, args: &[&str]) -> Result<Value> {
    json_line_of(script, node_run_in(wrapper, script, args, NODE_TIMEOUT)?)
}

/// [`node_client`] with its own timeout.
pub fn node_client_timeout(script: &str, args: &[&str], limit: Duration) -> Result<Value> {
    json_line_of(script, node_run(script, args, limit)?)
}

fn json_line_of(script: &str, out: Output) -> Result<Value> {
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).with_context(|| format!("{script} printed no JSON: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Whether a TCP connection to `addr` is accepted now (`0.0.0.0`/`[::]` mean loopback).
pub fn accepts(addr: &str) -> bool {
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "[::1]:");
    let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&addr) else { return false };
    addrs.next().is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Whether a TCP socket listens on `listen`'s port in the network namespace of `pid`
/// (read from `/proc/PID/net/tcp{,6}`, so it works for a namespace the test cannot reach).
pub fn listening_in_netns_of(pid: i32, listen: &str) -> bool {
    let Some(port) = listen.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else { return false };
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
        })
    })
}

/// Prefix of the network namespaces the harness creates: `sup-e2e-<runner pid>-<n>`
/// (the sweep deletes those of dead runners).
pub const NETNS_PREFIX: &str = "sup-e2e-";

/// A network namespace of the test's own, with loopback up and, when asked, a veth pair
/// to the host (`10.<a>.<b>.1` host side, `.2` inside). Uniquely named from the runner's
/// pid and a counter; deleted (with its veth) on drop. Needs root.
pub struct NetNs {
    /// `ip netns` name.
    pub name: String,
    /// Host end of the veth pair, when there is one.
    pub host_if: Option<String>,
    /// The namespace's address as seen from the host (with a veth).
    pub ns_ip: Option<String>,
}

impl NetNs {
    /// A namespace with only loopback (its own ports: no fixed-ports lock needed).
    pub fn create() -> Result<NetNs> {
        Self::create_inner(false)
    }

    /// A namespace joined to the host by a veth pair.
    pub fn create_with_veth() -> Result<NetNs> {
        Self::create_inner(true)
    }

    fn create_inner(veth: bool) -> Result<NetNs> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        anyhow::ensure!(nix::unistd::geteuid().is_root(), "network namespaces need root");
        sweep_stale_runs();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("{NETNS_PREFIX}{pid}-{n}");
        let sh = |args: &[&str]| -> Result<()> {
            let out = run_with_timeout(Command::new(args[0]).args(&args[1..]), Duration::from_secs(20))?;
            anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        };
        sh(&["ip", "netns", "add", &name])?;
        let mut ns = NetNs { name: name.clone(), host_if: None, ns_ip: None };
        sh(&["ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        if veth {
            // Interface names are at most 15 bytes; the addresses come from a hash of the name.
            let h = (pid.wrapping_mul(2654435761) ^ n.wrapping_mul(40503)) % 16000;
            let (a, b) = (64 + h / 250, h % 250 + 1);
            let (host_if, ns_if) = (format!("se{:x}h", h + (n << 14)), format!("se{:x}n", h + (n << 14)));
            let (host_ip, ns_ip) = (format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2"));
            sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
            ns.host_if = Some(host_if.clone());
            sh(&["ip", "link", "set", &ns_if, "netns", &name])?;
            sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
            sh(&["ip", "link", "set", &host_if, "up"])?;
            sh(&["ip", "netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
            sh(&["ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
            ns.ns_ip = Some(ns_ip);
        }
        Ok(ns)
    }

    /// The wrapper that runs a command inside: `ip netns exec NAME`.
    pub fn exec(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone()]
    }

    /// Runs `args` inside the namespace (killed at `limit`).
    pub fn run(&self, args: &[&str], limit: Duration) -> Result<Output> {
        run_with_timeout(Command::new("ip").args(["netns", "exec", &self.name]).args(args), limit)
    }

    /// `curl` from inside the namespace (e.g. to its own 127.0.0.1:3000).
    pub fn curl(&self, args: &[&str]) -> Reply {
        let dir = tempfile::tempdir().expect("tempdir");
        let (hdr, body) = (dir.path().join("h"), dir.path().join("b"));
        let (h, b) = (hdr.to_string_lossy().into_owned(), body.to_string_lossy().into_owned());
        let mut argv = vec!["curl", "-s", "--max-time", "20", "-D", &h, "-o", &b, "-w", "%{http_code}"];
        argv.extend_from_slice(args);
        let out = self.run(&argv, Duration::from_secs(90)).expect("curl in the namespace");
        reply_from(&out, &hdr, &body)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        if let Some(h) = &self.host_if {
            let _ = Command::new("ip").args(["link", "del", h]).output();
        }
    }
}

fn reply_from(out: &Output, hdr: &Path, body: &Path) -> Reply {
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(hdr)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    Reply { status, headers, body: std::fs::read(body).unwrap_or_default() }
}

/// The unprivileged account the suite drops services to (created by `scripts/setup.sh`).
pub const TEST_USER: &str = "supervisor-test";

/// `(uid, gid)` of [`TEST_USER`]; fails with a hint when setup has not created it.
pub fn test_user() -> Result<(u32, u32)> {
    let u = nix::unistd::User::from_name(TEST_USER)?.with_context(|| format!("user {TEST_USER} is missing: run scripts/setup.sh"))?;
    Ok((u.uid.as_raw(), u.gid.as_raw()))
}

/// Hands `path` and everything under it to `uid:gid` (symlinks themselves, not their targets).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let out = Command::new("chown").args(["-R", "-h", &format!("{uid}:{gid}")]).arg(path).output()?;
    anyhow::ensure!(out.status.success(), "chown {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The real uid of `pid` (from `/proc/PID/status`).
pub fn proc_uid(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `event:` (empty when the server sent none).
    pub event: String,
    /// `id:`, when sent.
    pub id: Option<String>,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

/// A streaming SSE reader (`curl -N` in a [`ChildGuard`]), for `/events` and `logs?follow=1`.
pub struct SseClient {
    _curl: ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SseClient {
    /// GETs `url` with `Authorization: Bearer TOKEN` and starts reading events.
    pub fn open(url: &str, token: &str) -> Result<SseClient> {
        Self::open_with(url, &[&format!("Authorization: Bearer {token}")])
    }

    /// GETs `url` with these request headers.
    pub fn open_with(url: &str, headers: &[&str]) -> Result<SseClient> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "--max-time", "300"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut curl = ChildGuard::spawn(&mut cmd)?;
        let out = curl.child().stdout.take().context("curl stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Ok(SseClient { _curl: curl, lines })
    }

    /// The next event within `limit` (None: the time passed or the stream ended).
    pub fn next(&mut self, limit: Duration) -> Result<Option<SseEvent>> {
        let until = Instant::now() + limit;
        let mut e = SseEvent::default();
        let mut any = false;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => return Ok(None),
            };
            if line.is_empty() {
                if any {
                    return Ok(Some(e));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((&line, ""));
            any = true;
            match field {
                "event" => e.event = value.to_string(),
                "id" => e.id = Some(value.to_string()),
                "data" => {
                    if !e.data.is_empty() {
                        e.data.push('\n');
                    }
                    e.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

/// The `[services.vite]` table of a test stack: the app dir's own Vite on `port`, ready
/// once it answers Vite's ping, unless `readiness` (a probe's inline table) replaces that.
pub fn vite_service(port: u16, readiness: Option<&str>) -> String {
    let ping = format!(r#"{{ http = "http://127.0.0.1:{port}/", headers = {{ Accept = "text/x-vite-ping" }}, status = 204, period = "2s" }}"#);
    format!(
        r#"
[services.vite]
command = ["${{APP_DIR}}/node_modules/.bin/vite", "--host", "127.0.0.1", "--port", "{port}", "--strictPort"]
cwd = "${{APP_DIR}}"
port = {port}
readiness = {}
"#,
        readiness.unwrap_or(&ping)
    )
}

/// A display number no X server on this machine uses (lock files are machine-wide).
pub fn free_display() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    loop {
        let d = 200 + (std::process::id() * 7 + N.fetch_add(1, Ordering::SeqCst) * 13) % 700;
        if !Path::new(&format!("/tmp/.X{d}-lock")).exists() && !Path::new(&format!("/tmp/.X11-unix/X{d}")).exists() {
            return d;
        }
    }
}

/// The production stack, ready: `opt/supervisor.toml` with the supervisor as root,
/// `--port-guard on`, every service as [`TEST_USER`], on 0.0.0.0:3000 of a network
/// namespace of its own, on a copy of app-template.
pub struct Production {
    /// The supervisor.
    pub stack: Stack,
    /// Its namespace (with a veth to the host).
    pub ns: NetNs,
    /// The app copy (removed on drop).
    pub app: tempfile::TempDir,
    /// From just before `supervisor run` to `ready`.
    pub boot: Duration,
}

/// Starts [`Production`]: the machine-wide names the config uses (X display :99, the MCP
/// output dir, Chromium's profile in the service user's shared home, named after `label`)
/// get per-test values, so stacks never collide and need no fixed-ports lock. Fails with
/// the status and the log's tail when not ready within `boot`.
pub fn start_production(label: &str, boot: Duration) -> Result<Production> {
    use std::os::unix::fs::PermissionsExt;
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "the production combination needs root");
    let (uid, gid) = test_user()?;
    let ns = NetNs::create_with_veth()?;
    let app = copy_app_template()?;
    std::fs::set_permissions(app.path(), std::fs::Permissions::from_mode(0o755))?;
    let mcp_out = app.path().join("mcp-output");
    std::fs::create_dir_all(&mcp_out)?;
    chown_tree(&app.path().join("app"), uid, gid)?;
    chown_tree(&mcp_out, uid, gid)?;
    // Resolve (and, without $SUPERVISOR_BIN, build) the binary before the clock starts.
    let _ = supervisor_bin();
    let t0 = Instant::now();
    let display = free_display();
    let profile = format!("supervisor-chromium-{label}-{display}");
    let config = std::fs::read_to_string(repo_root().join("opt/supervisor.toml"))?
        // ${CONFIG_DIR} must stay the repo's opt/ (its node_modules): expand it here.
        .replace("${CONFIG_DIR}", &repo_root().join("opt").to_string_lossy())
        .replace(":99", &format!(":{display}"))
        .replace("X99", &format!("X{display}"))
        .replace("/tmp/playwright-mcp-output", &mcp_out.to_string_lossy())
        // The profile lives in the service user's (shared) home: one per test, or a second
        // Chromium finds the first's singleton socket, "opens in the existing session", exits 0.
        .replace("CHROMIUM_PROFILE_NAME = \"supervisor-chromium\"", &format!("CHROMIUM_PROFILE_NAME = \"{profile}\""));
    anyhow::ensure!(config.contains(&profile), "the profile name was not made per-test");
    let stack = Stack::start_with(
        &config,
        StackOptions {
            args: vec!["--listen".into(), "0.0.0.0:3000".into(), "--port-guard".into(), "on".into(), "--service-user".into(), TEST_USER.into()],
            app_dir: Some(app.path().join("app")),
            wrapper: ns.exec(),
            ..Default::default()
        },
    )?;
    let ready = stack.ready_cmd(boot.as_secs())?;
    let took = t0.elapsed();
    anyhow::ensure!(
        ready.status.success(),
        "stack not ready in {boot:?}\n{}\n{}",
        stack.status().map(|s| s.to_string()).unwrap_or_default(),
        stack.log_tail(60)
    );
    Ok(Production { stack, ns, app, boot: took })
}
