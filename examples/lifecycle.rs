//! The Go design's lifecycle, in kpipe: producer threads and a consumer pool tied to one
//! `Shutdown` flag that Ctrl-C or SIGTERM sets, and then a staged drain in place of the Go
//! design's `time.Sleep(1s)` "for wrap-ups":
//!
//! ```text
//!  Ctrl-C / SIGTERM (or --count / --duration) ─▶ Shutdown flag
//!   1. producer threads see the flag and stop sending
//!   2. producer.close: flush, wait for every acknowledgement   ─▶ what was delivered
//!   3. the pool keeps reading until it has seen all of that   (a second Ctrl-C cuts it short)
//!   4. pool.close: finish the record in hand, commit, leave the group
//!   5. print what was produced, delivered, consumed, and missing
//! ```
//!
//! The consumers do not watch the flag (their `ConsumerConfig::shutdown` stays `None`):
//! stopping them with the producers would leave delivered records unread until the next
//! run. Only the producer threads watch it, and the drain closes the rest in order.
//!
//! ```text
//! cargo run --example lifecycle                        # 2 events/s per thread until Ctrl-C
//! cargo run --example lifecycle -- --count 2000 --rate 0 --topic t
//! ```
//!
//! Flags: `--brokers` (default `$KPIPE_BROKERS`, else `localhost:9092`), `--topic`
//! (`telemetry-events`, created with 6 partitions if missing), `--group`
//! (`analytics-service-group`), `--threads` (producer threads, 2), `--consumers` (pool
//! members, 2), `--rate` (events/s per producer thread, 2 as the Go design's 500 ms ticker;
//! 0 is as fast as possible), `--count N` (stop after N events in all), `--duration` (stop
//! after `30s`, say), `--drain-timeout` (`30s`, for each drain stage).
//!
//! It ends on its own with `--count` or `--duration`. Each event carries this run's id, so
//! records of earlier runs still in the topic are told apart. The exit code is 0 only if
//! every event sent was delivered and every delivered event was consumed.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kpipe::consumer::OffsetReset;
use kpipe::producer::{OnDelivery, TopicDefaults};
use kpipe::{ConsumedRecord, ConsumerConfig, ConsumerPool, Producer, ProducerConfig};
use kpipe::{ProducerRecord, Shutdown};

struct Args {
    brokers: String,
    topic: String,
    group: String,
    threads: u64,
    consumers: usize,
    rate: u64,
    count: Option<u64>,
    duration: Option<Duration>,
    drain_timeout: Duration,
}

/// An event's identity: producer thread and sequence number, in one tag.
fn tag(thread: u64, seq: u64) -> u64 {
    (thread << 40) | seq
}

/// What both sides record, by tag: the producer's delivery reports and the pool's handler.
#[derive(Default)]
struct Books {
    delivered: HashSet<u64>,
    failed: u64,
    consumed: HashSet<u64>,
    duplicates: u64,
    foreign: u64,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("lifecycle: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lifecycle: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    // signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?;
    let run_id = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );
    let books = Arc::new(Mutex::new(Books::default()));

    // The producer, with one delivery handler for every event (sent with `send_tagged`).
    let mut config = ProducerConfig::new(&args.brokers).topic(&args.topic);
    config.create_topics = Some(TopicDefaults {
        partitions: 6,
        replication_factor: 1,
    });
    let reports = books.clone();
    config.on_delivery = Some(OnDelivery::new(move |tag, outcome| {
        let mut books = reports.lock().unwrap();
        match outcome {
            Ok(_) => drop(books.delivered.insert(tag)),
            Err(_) => books.failed += 1,
        }
    }));
    let producer = Producer::new(config)?; // creates the topic if missing

    // The consumer pool: not tied to the flag, the drain closes it.
    let mut config = ConsumerConfig::new(&args.brokers, &args.group, &[args.topic.as_str()]);
    config.threads = args.consumers;
    config.offset_reset = OffsetReset::Earliest;
    let seen = books.clone();
    let marker = format!(r#""run":"{run_id}""#);
    let pool = ConsumerPool::start_cloned(config, move |record: &ConsumedRecord| {
        let value = record.value.as_deref().unwrap_or_default();
        let mut books = seen.lock().unwrap();
        match event_tag(value, &marker) {
            Some(tag) if !books.consumed.insert(tag) => books.duplicates += 1,
            Some(_) => {}
            None => books.foreign += 1, // an earlier run's, or another writer's
        }
        Ok::<(), std::convert::Infallible>(())
    })?;
    eprintln!(
        "lifecycle: run {run_id}: {} producer threads -> {} -> {} consumers in {}; Ctrl-C drains",
        args.threads, args.topic, args.consumers, args.group
    );

    // The load generators: one event per tick until the flag is set.
    let started = Instant::now();
    let generators: Vec<_> = (0..args.threads)
        .map(|t| {
            let (producer, shutdown) = (producer.clone(), shutdown.clone());
            let (threads, rate, count, run_id) = (args.threads, args.rate, args.count, run_id.clone());
            thread::Builder::new()
                .name(format!("generator-{t}"))
                .spawn(move || {
                    let device = format!("device-{}", 101 + t);
                    let mut seq = 0;
                    while !shutdown.is_triggered() {
                        if count.is_some_and(|c| seq * threads + t >= c) {
                            break;
                        }
                        if rate > 0 {
                            // Scheduled sends: the next one at start + seq / rate.
                            let at = started + Duration::from_secs_f64(seq as f64 / rate as f64);
                            if shutdown.wait(at.saturating_duration_since(Instant::now())) {
                                break;
                            }
                        }
                        let value = format!(
                            r#"{{"run":"{run_id}","device":"{device}","seq":{seq},"status":"healthy"}}"#
                        );
                        let record = ProducerRecord::new(value).key(device.clone());
                        if let Err(e) = producer.send_tagged(record, tag(t, seq)) {
                            eprintln!("lifecycle: {device}: {e}");
                            break;
                        }
                        seq += 1;
                    }
                    seq
                })
        })
        .collect::<Result<_, _>>()?;

    // <-ctx.Done(): a signal, or the run's own end.
    let mut generators_done = false;
    while !shutdown.wait(Duration::from_millis(100)) {
        if args.duration.is_some_and(|d| started.elapsed() >= d)
            || generators
                .iter()
                .all(|g: &thread::JoinHandle<u64>| g.is_finished())
        {
            generators_done = true;
            shutdown.trigger();
        }
    }
    if !generators_done {
        eprintln!("lifecycle: signal received; draining (Ctrl-C again to stop waiting)");
    }

    // 1. Stop producing.
    let sent: u64 = generators
        .into_iter()
        .map(|g| g.join().expect("a generator thread panicked"))
        .sum();
    // 2. Close the producer: everything sent is delivered or failed when this returns.
    let summary = producer.close(args.drain_timeout)?;
    // 3. Let the consumers catch up to what was delivered.
    let deadline = Instant::now() + args.drain_timeout;
    let caught_up = loop {
        let missing = {
            let books = books.lock().unwrap();
            books.delivered.difference(&books.consumed).count()
        };
        if missing == 0 {
            break true;
        }
        if Instant::now() >= deadline || shutdown.signal_count() >= 2 {
            eprintln!("lifecycle: stopped waiting with {missing} delivered events unread");
            break false;
        }
        thread::sleep(Duration::from_millis(50));
    };
    // 4. Close the consumers: finish, commit, leave the group.
    let pool_summary = pool.close(args.drain_timeout)?;

    // 5. Report.
    let books = books.lock().unwrap();
    let missing = books.delivered.difference(&books.consumed).count();
    println!(
        "sent {sent}, delivered {}, failed {}, not attempted {}; consumed {} (duplicates {}, \
         other runs' {}), missing {missing}; committed {} partitions{}",
        books.delivered.len(),
        books.failed,
        summary.not_attempted,
        books.consumed.len(),
        books.duplicates,
        books.foreign,
        pool_summary.committed.len(),
        if caught_up {
            ""
        } else {
            " (consumers did not catch up)"
        },
    );
    if let Some(why) = &pool_summary.stopped_because {
        println!("the pool stopped on its own: {why}");
    }
    let all_delivered = books.delivered.len() as u64 == sent && summary.delivered == sent;
    Ok(all_delivered && missing == 0 && pool_summary.stopped_because.is_none())
}

/// The tag of one of this run's events, from its JSON value; `None` for any other record.
fn event_tag(value: &[u8], run_marker: &str) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    if !text.contains(run_marker) {
        return None;
    }
    let number_after = |field: &str| -> Option<u64> {
        let start = text.find(field)? + field.len();
        let digits = text[start..].split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    };
    let device = number_after(r#""device":"device-"#)?;
    Some(tag(device.checked_sub(101)?, number_after(r#""seq":"#)?))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        brokers: std::env::var("KPIPE_BROKERS").unwrap_or_else(|_| "localhost:9092".into()),
        topic: "telemetry-events".into(),
        group: "analytics-service-group".into(),
        threads: 2,
        consumers: 2,
        rate: 2,
        count: None,
        duration: None,
        drain_timeout: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--brokers" => args.brokers = value()?,
            "--topic" => args.topic = value()?,
            "--group" => args.group = value()?,
            "--threads" => args.threads = number(&flag, &value()?)?,
            "--consumers" => args.consumers = number(&flag, &value()?)? as usize,
            "--rate" => args.rate = number(&flag, &value()?)?,
            "--count" => args.count = Some(number(&flag, &value()?)?),
            "--duration" => args.duration = Some(duration(&value()?)?),
            "--drain-timeout" => args.drain_timeout = duration(&value()?)?,
            "-h" | "--help" => {
                println!(
                    "usage: lifecycle [--brokers B] [--topic T] [--group G] [--threads N] \
                     [--consumers N] [--rate R] [--count N] [--duration 30s] \
                     [--drain-timeout 30s]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag} (try --help)")),
        }
    }
    if args.threads == 0 || args.consumers == 0 {
        return Err("--threads and --consumers must be at least 1".into());
    }
    Ok(args)
}

fn number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
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
