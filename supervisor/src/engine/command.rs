//! Running a short helper command (e.g. `nft`) to completion through the reaper, which
//! must see every child of ours: `std::process::Command::output` would race it.

use super::reaper::Reaper;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `argv` with `stdin` fed in; Ok on exit 0, else Err with its stderr (trimmed).
pub async fn run(reaper: &Reaper, argv: &[&str], stdin: Option<&str>, limit: Duration) -> Result<(), String> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::null()).stderr(Stdio::piped());
    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if let (Some(text), Some(pipe)) = (stdin, child.stdin.take()) {
        let mut w = tokio::net::unix::pipe::Sender::from_owned_fd(pipe.into()).map_err(|e| e.to_string())?;
        w.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let mut err = String::new();
    if let Some(pipe) = child.stderr.take() {
        let mut r = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe.into()).map_err(|e| e.to_string())?;
        let _ = tokio::time::timeout(limit, r.read_to_string(&mut err)).await;
    }
    match tokio::time::timeout(limit, exit).await {
        Ok(Ok(info)) if info.success() => Ok(()),
        Ok(Ok(info)) => Err(format!("{} failed ({info}): {}", argv[0], err.trim())),
        _ => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
            Err(format!("{} did not finish within {limit:?}", argv[0]))
        }
    }
}
