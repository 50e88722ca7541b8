//! The `kpipe` command: a telemetry load generator and consumer pool over one shared
//! producer, with live stats and a lossless shutdown. See `kpipe --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The command's allocator. Every event is allocated on a generator thread and freed on the
/// writer thread; glibc's malloc takes the slow, locked path for each such pair (about a
/// third of the command's cycles went to malloc and free), mimalloc frees across threads
/// without a lock. The library leaves the choice to the application.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Usage errors (unknown flags, bad values) exit with 2 from clap itself.
    let args = cli::Cli::parse();
    ExitCode::from(cli::main(args))
}
