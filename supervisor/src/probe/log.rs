//! The `log` probe: passes once a line of the service's own output, since its current
//! process started, matches a regex (process-compose's `process_log_ready`). Event-driven:
//! it reads the ring once, then each new line as it arrives; nothing is polled.

use super::Verdict;
use crate::config::ProbeSpec;
use crate::logs::LogBuffer;
use crate::sse::Feed;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{sleep_until, Instant};

/// Watches `logs` from line id `start` on. Sends `Pass` at the first matching line (after
/// `initial_delay`, and only once: a printed line stays printed). Without a match, sends
/// `Fail` after `initial_delay + failure_threshold × period` (what makes a startup probe
/// give up), then keeps watching; a readiness probe that never matches stays not ready.
pub async fn watch(spec: ProbeSpec, re: regex::Regex, logs: Arc<LogBuffer>, start: u64, tx: mpsc::Sender<Verdict>) {
    let timers = crate::metrics::probe_timers(logs.name(), "log");
    let began = Instant::now();
    let (held, _, mut rx) = logs.since(start.saturating_sub(1));
    let mut matched = held.iter().any(|l| re.is_match(&l.line));
    let mut deadline = began + spec.initial_delay + spec.period * spec.failure_threshold;
    loop {
        if matched {
            tokio::time::sleep_until(began + spec.initial_delay).await;
            timers.observe(true, began.elapsed());
            let _ = tx.send(Verdict::Pass).await;
            // Keep the channel open (the runner reads a closed probe as gone).
            tx.closed().await;
            return;
        }
        tokio::select! {
            line = rx.recv() => match line {
                Ok(l) => matched = l.seq >= start && re.is_match(&l.line),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Lines went by faster than we read them: look at what the ring holds.
                    let (held, _, again) = logs.since(start.saturating_sub(1));
                    matched = held.iter().any(|l| re.is_match(&l.line));
                    rx = again;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = sleep_until(deadline) => {
                timers.observe(false, began.elapsed());
                if tx.send(Verdict::Fail).await.is_err() {
                    return;
                }
                deadline = Instant::now() + spec.period * spec.failure_threshold;
            }
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeKind;
    use crate::logs::Stream;
    use std::time::Duration;

    fn spec(re: &str, period_ms: u64) -> (ProbeSpec, regex::Regex) {
        let r = regex::Regex::new(re).unwrap();
        let s = ProbeSpec {
            kind: ProbeKind::Log(r.clone()),
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(period_ms),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
        };
        (s, r)
    }

    #[tokio::test]
    async fn passes_on_a_matching_line_of_this_start_only() {
        let logs = LogBuffer::new("t", 100, 1 << 20);
        logs.push(Stream::Stdout, "listening on 1 (the previous process)");
        let start = logs.next_seq();
        let (s, r) = spec(r"listening on \d+", 10_000);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(watch(s, r, logs.clone(), start, tx));
        logs.push(Stream::Stdout, "booting");
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "an old line does not count");
        logs.push(Stream::Stderr, "now listening on 8080");
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap(), Some(Verdict::Pass));
    }

    #[tokio::test]
    async fn a_line_printed_before_the_watch_began_counts() {
        let logs = LogBuffer::new("t", 100, 1 << 20);
        let start = logs.next_seq();
        logs.push(Stream::Stdout, "READY");
        let (s, r) = spec("^READY$", 10_000);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(watch(s, r, logs.clone(), start, tx));
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap(), Some(Verdict::Pass));
    }

    #[tokio::test]
    async fn never_matching_fails_after_the_threshold() {
        let logs = LogBuffer::new("t", 100, 1 << 20);
        let (s, r) = spec("never", 20);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(watch(s, r, logs.clone(), logs.next_seq(), tx));
        logs.push(Stream::Stdout, "something else");
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap(), Some(Verdict::Fail));
    }
}
