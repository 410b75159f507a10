//! Restart pacing: capped exponential backoff with jitter that resets after a stable run,
//! and the crash-loop window that gives up on a service.

use crate::config::{BackoffSpec, CrashLoopSpec};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive-failure counter that yields the next restart delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    spec: BackoffSpec,
    attempt: u32,
    /// The last run was stable: the next restart is at once (a crash after a long healthy
    /// run is not a loop; every millisecond of waiting is downtime of a service in use).
    after_stable: bool,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(spec: BackoffSpec) -> Self {
        Backoff { spec, attempt: 0, after_stable: false }
    }

    /// The delay before the next restart, `initial * multiplier^attempt` capped at `max`,
    /// spread by ±`jitter`; `unit` in [0, 1) picks the point in that spread.
    /// The first delay after a stable run is only ever jittered downwards, so it never
    /// exceeds `initial` (the 100 ms promise of SPEC §4); the first after a stable run
    /// (see [`Backoff::run_ended`]) is zero, and leaves the schedule where it was.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        if std::mem::take(&mut self.after_stable) {
            return Duration::ZERO;
        }
        let base = self.base_delay();
        let first = self.attempt == 0;
        self.attempt = self.attempt.saturating_add(1);
        let toward = if first { -unit } else { 2.0 * unit - 1.0 };
        let spread = base.as_secs_f64() * self.spec.jitter * toward;
        Duration::from_secs_f64((base.as_secs_f64() + spread).max(0.0)).min(self.spec.max)
    }

    /// The un-jittered delay the next restart would get.
    pub fn base_delay(&self) -> Duration {
        let exp = self.spec.multiplier.powi(self.attempt.min(64) as i32);
        let secs = (self.spec.initial.as_secs_f64() * exp).min(self.spec.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// Called when a run ends: a run longer than `reset_after` resets the backoff.
    pub fn run_ended(&mut self, ran_for: Duration) {
        self.after_stable = ran_for >= self.spec.reset_after;
        if self.after_stable {
            self.attempt = 0;
        }
    }

    /// Forgets all failures (a manual start or restart).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.after_stable = false;
    }
}

/// Remembers recent unexpected exits; too many within the window is a crash loop.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    spec: CrashLoopSpec,
    exits: VecDeque<Instant>,
}

impl CrashLoop {
    /// An empty window.
    pub fn new(spec: CrashLoopSpec) -> Self {
        CrashLoop { spec, exits: VecDeque::new() }
    }

    /// Records an exit at `now`; true when it makes more than `max_restarts` exits
    /// within the window (the service should then be given up on).
    pub fn record(&mut self, now: Instant) -> bool {
        while self.exits.front().is_some_and(|t| now.duration_since(*t) > self.spec.window) {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        self.exits.len() as u32 > self.spec.max_restarts
    }

    /// How many exits are in the window.
    pub fn count(&self) -> usize {
        self.exits.len()
    }

    /// Forgets all exits.
    pub fn reset(&mut self) {
        self.exits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BackoffSpec {
        BackoffSpec {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            reset_after: Duration::from_secs(10),
            jitter: 0.0,
        }
    }

    #[test]
    fn grows_caps_and_resets_after_stable_run() {
        let mut b = Backoff::new(spec());
        let d: Vec<u128> = (0..6).map(|_| b.next_delay(0.5).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        b.run_ended(Duration::from_secs(3));
        assert_eq!(b.base_delay().as_millis(), 1000, "a short run keeps the backoff");
        b.run_ended(Duration::from_secs(10));
        assert_eq!(b.next_delay(0.5), Duration::ZERO, "after a stable run: at once");
        assert_eq!(b.next_delay(0.5).as_millis(), 100, "a stable run resets it");
        b.run_ended(Duration::from_secs(3));
        assert_eq!(b.next_delay(0.5).as_millis(), 200, "a short run after it backs off again");
    }

    #[test]
    fn jitter_stays_within_spread() {
        let mut s = spec();
        s.jitter = 0.2;
        let second = |unit: f64| {
            let mut b = Backoff::new(s);
            b.next_delay(0.5);
            b.next_delay(unit).as_millis()
        };
        assert_eq!(second(0.0), 160, "±20% of 200 ms");
        assert!((239..=240).contains(&second(0.999)), "{}", second(0.999));
        assert_eq!(Backoff::new(s).next_delay(0.0).as_millis(), 100, "the first is never above initial");
        assert!((80..=81).contains(&Backoff::new(s).next_delay(0.999).as_millis()), "but jittered downwards");
    }

    #[test]
    fn default_first_restart_is_fast_and_crash_loops_are_retried() {
        let cfg = crate::config::resolve("t.toml", std::path::Path::new("/tmp"), "[services.a]\ncommand = [\"true\"]\n", &Default::default()).unwrap();
        let s = &cfg.services[0];
        let mut b = Backoff::new(s.backoff);
        let first = b.next_delay(0.999);
        assert!(first <= Duration::from_millis(100), "first restart after a stable run waits at most 100 ms: {first:?}");
        assert!(b.next_delay(0.5) > first, "later restarts back off");
        assert_eq!(s.crash_loop.retry_after, Some(Duration::from_secs(60)), "a crash loop is retried every 60 s by default");
        let never = crate::config::resolve(
            "t.toml",
            std::path::Path::new("/tmp"),
            "[services.a]\ncommand = [\"true\"]\ncrash_loop = { retry_after = \"never\" }\n",
            &Default::default(),
        )
        .unwrap();
        assert_eq!(never.services[0].crash_loop.retry_after, None);
        let bad = crate::config::resolve("t.toml", std::path::Path::new("/tmp"), "[services.a]\ncommand = [\"true\"]\ncrash_loop = { retry_after = \"soon\" }\n", &Default::default());
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("services.a.crash_loop.retry_after") && e.contains("never"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn crash_loop_counts_only_the_window() {
        let mut c = CrashLoop::new(CrashLoopSpec { max_restarts: 2, window: Duration::from_secs(10), retry_after: None });
        assert!(!c.record(Instant::now()));
        assert!(!c.record(Instant::now()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!c.record(Instant::now()), "old exits fell out of the window");
        assert!(!c.record(Instant::now()));
        assert!(c.record(Instant::now()), "third exit within the window");
    }
}
