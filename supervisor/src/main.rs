//! The `supervisor` binary: parses the command line and dispatches.

use clap::Parser;
use supervisor::cli::{Cli, Command};
use supervisor::{config, ctl, logging, run};

/// mimalloc instead of musl's allocator: musl's maps and unmaps small groups of pages as
/// they fill and empty, several times per proxied request under load (bench/run.sh,
/// BENCHMARKS.md: a fifth of the supervisor's CPU per request went to malloc, free and
/// mmap/munmap). Built without transparent huge pages (.cargo/config.toml): with them its
/// 2 MiB pages doubled the idle RSS.
#[global_allocator]
static ALLOC: Mimalloc = Mimalloc;

/// mimalloc, called the way its fast path wants. The `mimalloc` crate passes every
/// allocation to `mi_malloc_aligned`, whose fast path only covers blocks up to 1 KiB: a
/// larger one (hyper's read and write buffers, a request's boxed future) took the generic
/// aligned path, about 7 times and 3 % of the instructions per proxied request
/// (callgrind, bench/NOTES.md). Like Rust's own `System`, plain `mi_malloc` serves what
/// its guaranteed 16-byte alignment covers.
struct Mimalloc;

/// The alignment every `mi_malloc` block has (`MI_MAX_ALIGN_SIZE` on x86_64).
const MI_MIN_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` is aligned enough for `align` (a block smaller than 16 bytes
/// is only aligned to its own size class, hence `align <= size`).
fn plain(align: usize, size: usize) -> bool {
    align <= MI_MIN_ALIGN && align <= size
}

// SAFETY: every pointer comes from mimalloc and goes back to it; mimalloc is thread-safe,
// `mi_free` takes blocks of either entry point, and the aligned calls get the alignment
// whenever the plain ones would not guarantee it.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if plain(l.align(), l.size()) { mi::mi_malloc(l.size()) } else { mi::mi_malloc_aligned(l.size(), l.align()) }.cast()
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if plain(l.align(), l.size()) { mi::mi_zalloc(l.size()) } else { mi::mi_zalloc_aligned(l.size(), l.align()) }.cast()
    }
    unsafe fn dealloc(&self, p: *mut u8, _l: std::alloc::Layout) {
        libmimalloc_sys::mi_free(p.cast());
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        if plain(l.align(), new_size) { mi::mi_realloc(p.cast(), new_size) } else { mi::mi_realloc_aligned(p.cast(), new_size, l.align()) }.cast()
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => match config::load(args.config.as_deref(), &args.overrides()) {
            Ok(cfg) => {
                print!("{}", config::start_plan(&cfg));
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        Command::Run(args) => {
            let cfg = match config::load(args.config.as_deref(), &args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            };
            let _guard = logging::init(cli.log_format);
            let reloader = supervisor::reload::Reloader::new(args.config.clone(), args.overrides());
            single_thread_runtime().block_on(async {
                run::run(cfg, reloader).await.unwrap_or_else(|e| {
                    tracing::error!("{e:#}");
                    // One write, as the log thread's are (not eprintln!'s several, which
                    // could interleave with its line and panic on a non-blocking stderr).
                    let _ = std::io::Write::write_all(&mut supervisor::stdio::stderr(), format!("error: {e:#}\n").as_bytes());
                    1
                })
            })
        }
        Command::Ready { timeout, runtime_dir } => {
            runtime().block_on(ctl::ready(&runtime_dir, std::time::Duration::from_secs(timeout)))
        }
        Command::Acp { listen, cwd, agent } => {
            let _guard = logging::init(cli.log_format);
            runtime().block_on(async {
                supervisor::acp::run(supervisor::acp::AcpOptions { listen, cwd, agent }).await.unwrap_or_else(|e| {
                    tracing::error!("{e:#}");
                    1
                })
            })
        }
        Command::Ctl(args) => runtime().block_on(async {
            ctl::ctl(args).await.unwrap_or_else(|e| {
                eprintln!("error: {e:#}");
                1
            })
        }),
    };
    std::process::exit(code);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

/// `run` uses one thread: the supervisor needs a fraction of a core, and on the VM's two
/// cores (shared with Vite, Chromium and the agent) cross-thread wakeups cost more than
/// they give (measured with bench/proxy.sh).
fn single_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}
