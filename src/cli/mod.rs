//! The `kpipe` command: flags → configs → run → summary and exit code.
//!
//! `kpipe run` (the default) is the Go design's `main.go` done with threads: `--threads`
//! producer threads generate telemetry events through one shared [`Producer`], a pool of
//! `--consumers` threads reads them back in a consumer group and checks them, and one
//! [`Shutdown`] flag (Ctrl-C, SIGTERM, `--duration` or `--count`) drains everything.
//!
//! The parts: this file runs a subcommand and turns its report into the exit code; [`args`]
//! has the flags and their checks; [`run`] the stages of a run
//! (set-up, consumers, generators, watcher, drain, report); [`event`] the event on the
//! wire; [`ledger`] the loss / duplicate / gap accounting; [`txn`] the transactions of
//! `--transactional-id` (the gate the generators send through, the committer, the books);
//! [`report`] what is printed; [`copy`] `kpipe copy`, topic to topic, at least once or
//! exactly once; [`describe`] `kpipe describe --share-group`, a share group's offsets;
//! [`metrics`] the `/metrics` endpoint of `--metrics-addr`.
//!
//! `kpipe` with no subcommand is `kpipe run`: run's flags are flattened at the top as well.
//!
//! [`Producer`]: kpipe::Producer
//! [`Shutdown`]: kpipe::shutdown::Shutdown

mod args;
mod copy;
mod describe;
mod event;
mod ledger;
mod metrics;
mod report;
mod run;
mod txn;

pub use args::Cli;
use args::{Command, Mode, UsageError};

/// Run the command; returns the process exit code (see [`args::EXIT_CODES`]).
pub fn main(cli: Cli) -> u8 {
    let (mode, job) = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Copy(a) => return copy::main(&a),
        Command::Describe(a) => return describe::main(&a),
        Command::Run(a) => (Mode::Run, run::Job::run(a)),
        Command::Produce(a) => (Mode::Produce, run::Job::produce(a)),
        Command::Consume(a) => (Mode::Consume, run::Job::consume(a)),
    };
    let report = match job.validate().and_then(|()| run::run(mode, &job)) {
        Ok(report) => report,
        Err(UsageError(msg)) => {
            eprintln!("kpipe: {msg}");
            return 2;
        }
    };
    let ok = report.missing == 0
        && report.failed == 0
        && report.transactions_aborted == 0
        && report.transaction_error.is_none();
    if let Some(path) = &job.control.summary_json {
        if let Err(e) = report::write_json(path, &report) {
            eprintln!("kpipe: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    report::print(&report);
    if ok {
        0
    } else {
        1
    }
}
