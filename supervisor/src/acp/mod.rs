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
    if std::env::var_os("NODE_COMPILE_CACHE").is_none() {
        if let Some(dir) = warm_compile_cache(std::env::var_os("HOME").map(PathBuf::from)) {
            cmd.env("NODE_COMPILE_CACHE", dir);
        }
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

/// Node's compile cache for the agent, `$HOME/.cache/node-compile-cache`, but only when it
/// is already warm: a real directory (not a symlink) of our own uid, not writable by group
/// or others, holding a cache file (image/Dockerfile warms it: image/warm-agent-cache.sh).
/// Node keeps its files one level down (`<version>-<arch>-…/`) and makes that directory
/// as it starts, so only a non-empty regular file there says the cache was ever written.
/// Left alone when the service's env sets `NODE_COMPILE_CACHE` itself. The agent's own
/// children (its tools: npm, node, vite) inherit the variable, and so share the cache.
///
/// Why: the agent's start alone is 864 → 644 ms with the cache warm (bench/node-start.py),
/// and it restarts on the path of the first prompt after each resume (the API key
/// arrives). Why only when warm: Node writes the cache only when a process exits cleanly,
/// and an agent that crashed or was killed never does; a cache that is set but empty makes
/// every start pay for producing it (SIGKILL → ready 830–906 → 946–1,022 ms through the
/// stack, bench/NOTES.md). Why not a shared /tmp name: another uid could plant code there.
fn warm_compile_cache(home: Option<PathBuf>) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = home?.join(".cache/node-compile-cache");
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let ours = meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0;
    (ours && has_a_cache_file(&dir)).then_some(dir)
}

/// Whether some `dir/*/*` is a regular file with content.
fn has_a_cache_file(dir: &std::path::Path) -> bool {
    let Ok(tags) = std::fs::read_dir(dir) else { return false };
    tags.flatten().filter_map(|t| std::fs::read_dir(t.path()).ok()).any(|files| {
        files.flatten().any(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
    })
}

#[cfg(test)]
mod tests {
    use super::warm_compile_cache;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_agent_gets_only_a_warm_compile_cache_of_its_own() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().to_path_buf();
        let dir = home.join(".cache/node-compile-cache");
        assert_eq!(warm_compile_cache(Some(home.clone())), None, "no cache directory");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(warm_compile_cache(Some(home.clone())), None, "an empty one: it would only cost");
        std::fs::create_dir(dir.join("v24-x64")).unwrap();
        assert_eq!(warm_compile_cache(Some(home.clone())), None, "only the directory Node makes at start");
        std::fs::write(dir.join("v24-x64/0a1b"), "").unwrap();
        assert_eq!(warm_compile_cache(Some(home.clone())), None, "an empty file");
        std::fs::write(dir.join("v24-x64/0a1b"), "code").unwrap();
        assert_eq!(warm_compile_cache(Some(home.clone())), Some(dir.clone()), "a warm one");
        assert_eq!(warm_compile_cache(None), None, "no HOME");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(warm_compile_cache(Some(home.clone())), None, "one anyone may write");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(other.path().join(".cache")).unwrap();
        std::os::unix::fs::symlink(&dir, other.path().join(".cache/node-compile-cache")).unwrap();
        assert_eq!(warm_compile_cache(Some(other.path().to_path_buf())), None, "a symlink to one");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            assert_eq!(warm_compile_cache(Some(home)), None, "another uid's");
        }
    }
}
