//! The `kpipe` command: a telemetry load generator and consumer pool over one shared
//! producer, with live stats and a lossless shutdown. See `kpipe --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Usage errors (unknown flags, bad values) exit with 2 from clap itself.
    let args = cli::Cli::parse();
    ExitCode::from(cli::main(args))
}
