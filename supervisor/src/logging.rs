//! The supervisor's own log: `tracing` to stderr through a non-blocking writer (a
//! thread that writes to [`crate::stdio::stderr`], which waits out a full pipe),
//! filtered by `RUST_LOG` (default `info`), as text or JSON.

use tracing_subscriber::EnvFilter;

/// Output format of the supervisor's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Lines the writer thread may have queued before new ones are dropped (and counted by
/// tracing-appender). Its default, 128,000, is a channel allocated and touched in full at
/// start: 4 MiB of the supervisor's idle RSS of 12 (BENCHMARKS.md). A supervisor writes a
/// few lines a second; a burst beyond this is a flood that must not block it.
pub const LOG_QUEUE_LINES: usize = 4096;

/// Installs the global subscriber. Keep the returned guard alive to flush on exit.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(crate::stdio::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Pretty => b.init(),
        LogFormat::Json => b.json().init(),
    }
    guard
}
