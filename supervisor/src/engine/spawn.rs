//! Spawning a service: its own process group, its cwd and env, optionally another user,
//! stdout/stderr piped into its log buffer, stdin from /dev/null.

use super::reaper::{ExitInfo, Reaper};
use crate::config::ServiceSpec;
use crate::logs::{LogBuffer, Stream};
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Env var naming the service in every process it starts (used to find escapees).
pub const SERVICE_MARKER: &str = "SUPERVISOR_SERVICE";
/// Env var holding the supervisor's pid in every service process.
pub const SUPERVISOR_MARKER: &str = "SUPERVISOR_PID";

/// The account a service runs as, looked up before spawning.
#[derive(Debug, Clone)]
pub struct RunAs {
    name: CString,
    uid: u32,
    gid: u32,
    home: String,
}

impl RunAs {
    /// Looks `user` up; `None` when we are not root (nothing to drop).
    pub fn lookup(user: &str) -> Result<Option<RunAs>, String> {
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| format!("cannot look up user {user:?}: {e}"))?
            .ok_or_else(|| format!("user {user:?} does not exist"))?;
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        Ok(Some(RunAs {
            name: CString::new(user).map_err(|_| format!("bad user name {user:?}"))?,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir.to_string_lossy().into_owned(),
        }))
    }
}

impl RunAs {
    /// Its uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Its primary gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Makes `cmd` run as this account: `HOME`, `USER`, `LOGNAME`, and the switch
    /// (supplementary groups, gid, uid) in the child before exec.
    pub fn apply(&self, cmd: &mut Command) {
        let user = self.name.to_string_lossy().into_owned();
        cmd.env("HOME", &self.home).env("USER", &user).env("LOGNAME", &user);
        let (name, uid, gid) = (self.name.clone(), self.uid, self.gid);
        // SAFETY: only async-signal-safe calls (initgroups/setgid/setuid) on data prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::initgroups(name.as_ptr(), gid) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// A running service process.
pub struct Spawned {
    /// Leader pid, which is also the process group id.
    pub pid: i32,
    /// Resolves when the leader is reaped.
    pub exit: oneshot::Receiver<ExitInfo>,
}

/// Spawns `spec` with `extra_env` (injected variables) on top of its own env. A `tty`
/// service (`tty` is its slot) runs on a pseudo-terminal instead of pipes, in a session of
/// its own (so still its own process group, pgid = pid) and reaped the same way.
pub fn spawn(
    spec: &ServiceSpec,
    run_as: Option<&RunAs>,
    extra_env: &[(String, String)],
    reaper: &Reaper,
    logs: &Arc<LogBuffer>,
    tty: Option<&crate::pty::TtySlot>,
) -> std::io::Result<Spawned> {
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..]);
    if tty.is_some() {
        cmd.env("TERM", "xterm-256color");
    } else {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    if let Some(u) = run_as {
        u.apply(&mut cmd);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
    cmd.env(SERVICE_MARKER, &spec.name).env(SUPERVISOR_MARKER, std::process::id().to_string());
    if let Some(slot) = tty {
        let (pid, exit) = slot.spawn(&mut cmd, run_as.map(|r| (r.uid(), r.gid())), reaper, logs)?;
        return Ok(Spawned { pid, exit });
    }

    let (mut child, exit) = reaper.spawn(&mut cmd)?;
    let pid = child.id() as i32;
    if let Some(out) = child.stdout.take() {
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(out.into())?;
        tokio::spawn(logs.clone().drain(Stream::Stdout, rx));
    }
    if let Some(err) = child.stderr.take() {
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(err.into())?;
        tokio::spawn(logs.clone().drain(Stream::Stderr, rx));
    }
    Ok(Spawned { pid, exit })
}
