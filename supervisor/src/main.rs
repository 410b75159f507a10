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
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
                    eprintln!("error: {e:#}");
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
