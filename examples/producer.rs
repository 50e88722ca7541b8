//! The Go design's thread-safe concurrent producer, in kpipe: one producer shared by
//! several threads (the Go design's one `kafka.Writer` shared by goroutines), each
//! publishing keyed telemetry events.
//!
//! ```text
//! cargo run --example producer                        # 1,000 events to telemetry-events
//! cargo run --example producer -- --count 100000 --threads 8 --topic t
//! ```
//!
//! Flags: `--brokers` (default `$KPIPE_BROKERS`, else `localhost:9092`), `--topic`
//! (`telemetry-events`, created with 6 partitions if missing), `--threads` (4), `--count`
//! (1,000 events in all, spread over the threads). Ctrl-C stops the threads early.
//!
//! It ends on its own once every event was sent and the producer closed, and prints the
//! close summary. The exit code is 0 only if every event sent was delivered (acknowledged
//! by all in-sync replicas): where the Go design's asynchronous writer loses a failed write
//! without a word, `Producer::close` accounts for every record.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use kpipe::producer::{SendError, TopicDefaults};
use kpipe::{Producer, ProducerConfig, ProducerRecord, Shutdown};

/// The Go design's `EventProducer`: a handle any thread may clone.
#[derive(Clone)]
struct EventProducer {
    producer: Producer,
}

impl EventProducer {
    /// `NewProducer(brokerURL, topic)`: the writer's settings are kpipe's defaults, which
    /// already are the Go design's choices or safer ones (least-bytes balancing for unkeyed
    /// records, a 10 s write timeout, acks from all in-sync replicas, idempotence).
    fn new(brokers: &str, topic: &str) -> Result<EventProducer, kpipe::producer::Error> {
        let mut config = ProducerConfig::new(brokers).topic(topic);
        config.create_topics = Some(TopicDefaults {
            partitions: 6,
            replication_factor: 1,
        });
        Ok(EventProducer {
            producer: Producer::new(config)?,
        })
    }

    /// `PublishEvent(ctx, key, val)`: queue the event and return; the writer thread
    /// batches, sends and retries. A full queue blocks for at most the write timeout and
    /// then hands the event back inside the error.
    fn publish_event(&self, key: String, value: String) -> Result<(), SendError> {
        let record = ProducerRecord::new(value).key(key);
        self.producer.send(record).inspect_err(|e| {
            eprintln!("failed to dispatch message to event pipeline: {e}");
        })
    }
}

struct Args {
    brokers: String,
    topic: String,
    threads: u64,
    count: u64,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("producer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Send `args.count` events from `args.threads` threads; whether all were delivered.
fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?;
    let events = EventProducer::new(&args.brokers, &args.topic)?; // fails fast without a broker
    let started = Instant::now();

    let workers: Vec<_> = (0..args.threads)
        .map(|t| {
            let events = events.clone();
            let shutdown = shutdown.clone();
            let (threads, count) = (args.threads, args.count);
            thread::Builder::new().name(format!("publisher-{t}")).spawn(
                move || -> Result<u64, SendError> {
                    let mut sent = 0;
                    for seq in (t..count).step_by(threads as usize) {
                        if shutdown.is_triggered() {
                            break;
                        }
                        let device = format!("device-{}", 100 + t);
                        let value =
                            format!(r#"{{"device":"{device}","seq":{seq},"status":"healthy"}}"#);
                        events.publish_event(device, value)?;
                        sent += 1;
                    }
                    Ok(sent)
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let mut sent = 0;
    for worker in workers {
        sent += worker.join().expect("a publisher thread panicked")?;
    }

    // The Go design's `defer writer.Close()`: stop intake, flush, wait for every
    // acknowledgement, and say what became of each record, within a deadline.
    let summary = events.producer.close(Duration::from_secs(30))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} events to {} from {} threads in {secs:.2} s: delivered {}, failed {}, \
         not attempted {}",
        args.topic, args.threads, summary.delivered, summary.failed, summary.not_attempted
    );
    for (reason, n) in &summary.failures {
        println!("  {n} failed: {reason}");
    }
    Ok(summary.delivered == sent && summary.accepted == sent)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        brokers: std::env::var("KPIPE_BROKERS").unwrap_or_else(|_| "localhost:9092".into()),
        topic: "telemetry-events".into(),
        threads: 4,
        count: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--brokers" => args.brokers = value()?,
            "--topic" => args.topic = value()?,
            "--threads" => args.threads = number(&flag, &value()?)?,
            "--count" => args.count = number(&flag, &value()?)?,
            "-h" | "--help" => {
                println!("usage: producer [--brokers B] [--topic T] [--threads N] [--count N]");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag} (try --help)")),
        }
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    Ok(args)
}

fn number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
}
