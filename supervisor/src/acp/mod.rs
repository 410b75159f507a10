//! `supervisor acp`: the ACP agent service (SPEC §6). Spawns the coding agent as an ACP
//! stdio peer in its own process group and serves it with ACP's official
//! Streamable-HTTP/WebSocket transport (`agent-client-protocol-http`) at `/acp`, plus
//! `GET /health` (200 once the agent is up and answered `initialize`).

mod bridge;
mod connection;
mod lines;

use bridge::Bridge;
use lines::{Line, LineReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};

/// Lines queued for the agent's stdin.
const AGENT_QUEUE: usize = 64;

/// Options of `supervisor acp`.
#[derive(Debug, Clone)]
pub struct AcpOptions {
    /// Listen address, e.g. `127.0.0.1:3002`.
    pub listen: String,
    /// The agent's working directory (default: ours).
    pub cwd: Option<PathBuf>,
    /// The agent's argv.
    pub agent: Vec<String>,
}

/// Runs the service until the agent exits (exit code 1) or a stop signal (0).
pub async fn run(opts: AcpOptions) -> anyhow::Result<i32> {
    let listener = tokio::net::TcpListener::bind(&opts.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.listen))?;
    let mut cmd = tokio::process::Command::new(&opts.agent[0]);
    cmd.args(&opts.agent[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0).kill_on_drop(true);
    if let Some(dir) = &opts.cwd {
        cmd.current_dir(dir);
    }
    if nix::unistd::geteuid().is_root() {
        // claude-agent-acp refuses its bypass-permissions mode as root unless told it is sandboxed.
        cmd.env("IS_SANDBOX", "1");
    }
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start the agent {:?}: {e}", opts.agent[0]))?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("the agent exited before it could be watched"))? as i32;
    tracing::info!(pid, agent = %opts.agent[0], "agent started");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");

    // Bounded both ways: a full stdin queue holds clients back; the reader waits for slow
    // connections (see bridge.rs), which holds the agent's stdout back.
    let (to_agent, mut agent_rx) = tokio::sync::mpsc::channel::<String>(AGENT_QUEUE);
    let bridge = Arc::new(Bridge::new(to_agent, pid));
    tokio::spawn(async move {
        while let Some(line) = agent_rx.recv().await {
            if stdin.write_all(format!("{line}\n").as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            let mut lines = LineReader::new(BufReader::new(stdout), bridge::MAX_FRAME);
            loop {
                match lines.next().await {
                    Ok(Some(Line::Text(l))) => bridge.from_agent(&l).await,
                    Ok(Some(Line::Oversize(n))) => tracing::warn!(bytes = n, "dropping an oversize line from the agent's stdout (over {} bytes)", bridge::MAX_FRAME),
                    Ok(None) | Err(_) => break,
                }
            }
            tracing::debug!("the agent's stdout closed");
        });
    }
    bridge.send_health_initialize();

    let router = connection::router(bridge.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("acp listener stopped: {e}");
        }
    });
    tracing::info!(listen = %opts.listen, "serving ACP at /acp");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        // The agent's death is its process exiting, not its stdout closing: a grandchild
        // may hold that open for ever.
        status = child.wait() => {
            let why = match status {
                Ok(s) => format!("the agent process exited ({s})"),
                Err(e) => format!("the agent process was lost ({e})"),
            };
            let n = bridge.agent_exited(&why);
            tracing::error!(failed_requests = n, "{why}");
            // Whatever the agent left in its process group goes with it.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            // Let the transport deliver those errors before the process ends.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(1)
        }
        _ = term.recv() => { stop_agent(pid, &mut child).await; Ok(0) }
        _ = int.recv() => { stop_agent(pid, &mut child).await; Ok(0) }
    }
}

/// SIGTERM to the agent's group, then SIGKILL after 3 s.
async fn stop_agent(pgid: i32, child: &mut tokio::process::Child) {
    use nix::sys::signal::{killpg, Signal};
    let g = nix::unistd::Pid::from_raw(pgid);
    let _ = killpg(g, Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
        let _ = killpg(g, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    let _ = killpg(g, Signal::SIGKILL);
}
