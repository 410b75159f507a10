//! Machine figures for `status.system` and the metrics page, read with `sysinfo` on demand
//! (a scrape or a status call), never by a background sampler.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The VM's memory, disk, load and CPU count (SPEC §5 `status.system`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SystemStats {
    /// Physical memory, bytes.
    pub mem_total: u64,
    /// Memory available to new work without swapping, bytes.
    pub mem_available: u64,
    /// Free space of the filesystem holding the app dir (available to unprivileged users), bytes.
    pub disk_free: u64,
    /// One-minute load average.
    pub load1: f64,
    /// Five-minute load average (metrics only).
    #[serde(skip)]
    pub load5: f64,
    /// Fifteen-minute load average (metrics only).
    #[serde(skip)]
    pub load15: f64,
    /// Logical CPUs.
    pub cpus: usize,
}

/// Reads the figures now (blocking: `/proc` and one `statvfs` of the app dir).
pub fn sample(app_dir: &Path) -> SystemStats {
    let mut st = SystemStats::default();
    if let Ok(mut sys) = sysinfo::System::new() {
        sys.refresh_memory();
        st.mem_total = sys.total_memory();
        st.mem_available = sys.available_memory();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        st.cpus = sys.cpus().len();
    }
    if let Ok(l) = sysinfo::System::load_average() {
        (st.load1, st.load5, st.load15) = (l.one, l.five, l.fifteen);
    }
    // One statvfs of the app dir itself: listing every mount would stat each of them, and
    // one hung network or FUSE mount would pin a blocking thread per request.
    if let Ok(fs) = nix::sys::statvfs::statvfs(app_dir) {
        st.disk_free = (fs.blocks_available() as u64).saturating_mul(fs.fragment_size() as u64);
    }
    st
}

/// [`sample`] on a blocking thread.
pub async fn sample_async(app_dir: PathBuf) -> SystemStats {
    tokio::task::spawn_blocking(move || sample(&app_dir)).await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_are_plausible() {
        let s = super::sample(std::path::Path::new("/"));
        assert!(s.mem_total > 0 && s.mem_available > 0 && s.mem_available <= s.mem_total, "{s:?}");
        assert!(s.cpus >= 1, "{s:?}");
        assert!(s.disk_free > 0, "{s:?}");
        assert!(s.load1 >= 0.0, "{s:?}");
    }
}
