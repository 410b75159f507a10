//! Reading `/proc`: the members of a process group, their memory and CPU time, and the
//! processes a service left behind outside its group (found by the env marker).

use std::fs;

/// What `/proc/PID/stat` says about one process.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User + system CPU time in clock ticks.
    pub cpu_ticks: u64,
    /// Zombie (exited, not reaped).
    pub zombie: bool,
}

/// Parses `/proc/PID/stat`.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    Some(ProcStat {
        pid,
        ppid: num(4)? as i32,
        pgid: num(5)? as i32,
        cpu_ticks: (num(14)? + num(15)?) as u64,
        rss_bytes: num(24)?.max(0) as u64 * page_size(),
        zombie: f.first() == Some(&"Z"),
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Clock ticks per second (for CPU percentages).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Every live pid on the machine.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Every process on the machine, zombies excluded.
pub fn live() -> impl Iterator<Item = ProcStat> {
    all_pids().into_iter().filter_map(stat).filter(|p| !p.zombie)
}

/// The processes of group `pgid`, zombies excluded.
pub fn group(pgid: i32) -> Vec<ProcStat> {
    live().filter(|p| p.pgid == pgid).collect()
}

/// [`group`] on a blocking thread: a `/proc` scan reads hundreds of files, which must
/// not stall the event loop that serves port 3000.
pub async fn group_async(pgid: i32) -> Vec<ProcStat> {
    tokio::task::spawn_blocking(move || group(pgid)).await.unwrap_or_default()
}

/// [`live`] collected on a blocking thread.
pub async fn live_async() -> Vec<ProcStat> {
    tokio::task::spawn_blocking(|| live().collect()).await.unwrap_or_default()
}

/// Pids whose environment holds `service_key=service` and `sup_key=sup` (a service's
/// processes, wherever they moved), zombies excluded.
pub fn marked(service_key: &str, service: &str, sup_key: &str, sup: &str) -> Vec<i32> {
    let a = format!("{service_key}={service}");
    let b = format!("{sup_key}={sup}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else { return false };
            let mut has_a = false;
            let mut has_b = false;
            for var in env.split(|c| *c == 0) {
                has_a |= var == a.as_bytes();
                has_b |= var == b.as_bytes();
            }
            has_a && has_b && stat(*pid).is_some_and(|s| !s.zombie)
        })
        .collect()
}

/// Children of `parent` (e.g. orphans reparented to the supervisor), zombies excluded.
pub fn children_of(parent: i32) -> Vec<i32> {
    live().filter(|p| p.ppid == parent).map(|p| p.pid).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_stat() {
        let me = std::process::id() as i32;
        let s = super::stat(me).expect("own stat");
        assert_eq!(s.pid, me);
        assert!(s.rss_bytes > 0);
        assert!(!s.zombie);
        assert!(super::group(s.pgid).iter().any(|p| p.pid == me));
    }
}
