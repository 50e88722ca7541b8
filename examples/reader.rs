//! The Go design's consumer-group worker loop, in kpipe: one member of a consumer group,
//! driven by this thread (`Consumer::poll`, the Go design's `ReadMessage` loop), that stops
//! cleanly on Ctrl-C or SIGTERM: it commits what it printed and leaves the group, so its
//! partitions move to the other members at once.
//!
//! ```text
//! cargo run --example reader                          # until Ctrl-C
//! cargo run --example reader -- --count 1000 --topic t --group g --quiet
//! ```
//!
//! Flags: `--brokers` (default `$KPIPE_BROKERS`, else `localhost:9092`), `--topic`
//! (`telemetry-events`; it must exist: run the producer example first), `--group`
//! (`analytics-service-group`), `--count N` (stop after N records), `--timeout` (with
//! `--count`: how long to wait for them, `60s`), `--quiet` (no line per record).
//!
//! A new group starts at the earliest record, as a kafka-go reader does. With `--count`
//! it ends on its own, and the exit code is 0 only if N distinct records arrived within the
//! timeout; without it, it reads until Ctrl-C and exits 0 after a clean close.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kpipe::consumer::{Error, OffsetReset};
use kpipe::{Consumer, ConsumerConfig, Shutdown};

/// The Go design's `EventConsumer`.
struct EventConsumer {
    reader: Consumer,
}

impl EventConsumer {
    /// `NewConsumer(brokers, groupID, topic)`, with the Go design's fetch sizes: at least
    /// 10 KB per fetch (or whatever came within `max_wait`, 500 ms), at most 10 MB.
    fn new(brokers: &str, group: &str, topic: &str) -> Result<EventConsumer, Error> {
        let mut config = ConsumerConfig::new(brokers, group, &[topic]);
        config.offset_reset = OffsetReset::Earliest;
        config.fetch.min_bytes = 10_000;
        config.fetch.max_bytes = 10_000_000;
        Ok(EventConsumer {
            reader: Consumer::new(config)?,
        })
    }

    /// `StartWorkerLoop(ctx)`: read until the flag is set or `until` says stop, then close.
    /// Returns the distinct records read. Errors `poll` can go on from are logged and the
    /// loop goes on; the others end it (see the terminal errors on `Consumer::poll`).
    fn start_worker_loop(
        mut self,
        shutdown: &Shutdown,
        quiet: bool,
        mut until: impl FnMut(usize) -> bool,
    ) -> Result<usize, Error> {
        eprintln!("event subscriber worker loop spinning up...");
        let mut seen = HashSet::new();
        while !shutdown.is_triggered() && !until(seen.len()) {
            // Waits at most 500 ms, so the flag is looked at twice a second.
            match self.reader.poll(Duration::from_millis(500)) {
                Ok(records) => {
                    for m in records {
                        if !quiet {
                            let value =
                                String::from_utf8_lossy(m.value.as_deref().unwrap_or_default());
                            println!(
                                "message from partition {} [offset {}]: {value}",
                                m.partition, m.offset
                            );
                        }
                        seen.insert((m.partition, m.offset));
                    }
                }
                // The records at `offset` are corrupt: skip their batch, as the Java
                // consumer asks its caller to.
                Err(Error::CorruptRecords {
                    topic,
                    partition,
                    offset,
                    next,
                    ..
                }) => {
                    eprintln!("{topic}-{partition}: corrupt records at {offset}, skipped");
                    self.reader
                        .seek(&topic, partition, next.unwrap_or(offset + 1))?;
                }
                // Not terminal: a fetch error retrying cannot mend yet (the fetch is
                // retried, so a grant takes effect), or a log truncation with
                // `offset_reset: Error` (not the case here).
                Err(e @ (Error::Client(_) | Error::LogTruncated { .. })) => {
                    eprintln!("non-fatal stream error: {e}");
                }
                // Terminal: the member cannot go on (refused by the coordinator, stopped...).
                Err(e) => return Err(e),
            }
        }
        eprintln!("graceful stream termination: committing and leaving the group");
        // The Go design's `defer reader.Close()`: commit what was handed out, leave.
        self.reader.close(Duration::from_secs(30))?;
        Ok(seen.len())
    }
}

struct Args {
    brokers: String,
    topic: String,
    group: String,
    count: Option<usize>,
    timeout: Duration,
    quiet: bool,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("reader: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("reader: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?; // Ctrl-C / SIGTERM set the flag
    let consumer = EventConsumer::new(&args.brokers, &args.group, &args.topic)?;
    let deadline = Instant::now() + args.timeout;
    let read = consumer.start_worker_loop(&shutdown, args.quiet, |read| match args.count {
        Some(count) => read >= count || Instant::now() >= deadline,
        None => false,
    })?;
    match args.count {
        Some(count) if read < count => {
            println!(
                "read {read} of {count} records of {} in group {} within {:?}: {} missing",
                args.topic,
                args.group,
                args.timeout,
                count - read
            );
            Ok(shutdown.is_triggered()) // stopped by hand: not a loss
        }
        _ => {
            println!(
                "read {read} records of {} in group {}",
                args.topic, args.group
            );
            Ok(true)
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        brokers: std::env::var("KPIPE_BROKERS").unwrap_or_else(|_| "localhost:9092".into()),
        topic: "telemetry-events".into(),
        group: "analytics-service-group".into(),
        count: None,
        timeout: Duration::from_secs(60),
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--brokers" => args.brokers = value()?,
            "--topic" => args.topic = value()?,
            "--group" => args.group = value()?,
            "--count" => {
                let v = value()?;
                let n = v
                    .parse()
                    .map_err(|_| format!("--count takes a number, not {v:?}"))?;
                args.count = Some(n);
            }
            "--timeout" => args.timeout = duration(&value()?)?,
            "--quiet" => args.quiet = true,
            "-h" | "--help" => {
                println!(
                    "usage: reader [--brokers B] [--topic T] [--group G] [--count N] \
                     [--timeout 60s] [--quiet]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag} (try --help)")),
        }
    }
    Ok(args)
}

/// `500ms`, `30s` or `2m`.
fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {text:?}: use 500ms, 30s or 2m")),
    }
}
