//! Running a short helper command (e.g. `nft`) to completion through the reaper, which
//! must see every child of ours: `std::process::Command::output` would race it.

use super::reaper::Reaper;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `argv` with `stdin` fed in; Ok on exit 0, else Err with its stderr (trimmed).
pub async fn run(reaper: &Reaper, argv: &[&str], stdin: Option<&str>, limit: Duration) -> Result<(), String> {
    output(reaper, argv, stdin, limit).await.map(|_| ())
}

/// Like [`run`], returning the command's standard output (so its answer can be checked).
pub async fn output(reaper: &Reaper, argv: &[&str], stdin: Option<&str>, limit: Duration) -> Result<String, String> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if let (Some(text), Some(pipe)) = (stdin, child.stdin.take()) {
        let mut w = tokio::net::unix::pipe::Sender::from_owned_fd(pipe.into()).map_err(|e| e.to_string())?;
        w.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let read = |pipe: Option<std::os::fd::OwnedFd>| async move {
        let mut text = String::new();
        if let Some(p) = pipe {
            if let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(p) {
                let _ = r.read_to_string(&mut text).await;
            }
        }
        text
    };
    let (out, err) = (child.stdout.take().map(Into::into), child.stderr.take().map(Into::into));
    let both = async { tokio::join!(read(out), read(err)) };
    let (out, err) = tokio::time::timeout(limit, both).await.unwrap_or_default();
    match tokio::time::timeout(limit, exit).await {
        Ok(Ok(info)) if info.success() => Ok(out),
        Ok(Ok(info)) => Err(format!("{} failed ({info}): {}", argv[0], err.trim())),
        _ => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
            Err(format!("{} did not finish within {limit:?}", argv[0]))
        }
    }
}
