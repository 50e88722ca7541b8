//! rust-rdkafka (librdkafka) with its synchronous BaseProducer / BaseConsumer: produce or
//! consume a fixed number of records with the settings scripts/bench-peers equalises, and
//! print one JSON line of what was measured.
//!
//! `--mode latency` measures end-to-end latency at a fixed rate, as every peer program does:
//! a BaseConsumer (group, offset reset earliest) polls the topic in its own thread, then the
//! BaseProducer sends record i at its scheduled time t0 + i / rate (at once when behind, never
//! skipping), with that time (ns since the Unix epoch, big-endian u64) in the value's first 8
//! bytes; the consumer takes now - scheduled for every record scheduled after the warm-up.
//!
//! Security, for a secured listener (every client the run creates gets them):
//! `--security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username U
//! --ssl-ca-location ca.pem`, and the password from the environment, `BENCH_SASL_PASSWORD`
//! (kept off the command line). They map one to one onto librdkafka's `security.protocol`,
//! `sasl.mechanisms`, `sasl.username`, `sasl.password` and `ssl.ca.location`.
//!
//! `--idempotence on|off` (default off) sets the producer's `enable.idempotence`; with it on,
//! librdkafka requires what the other settings already are (acks=all, at most 5 in flight).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext,
};
use rdkafka::types::RDKafkaErrorCode;

fn opt(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn arg(name: &str, default: &str) -> String {
    opt(name).unwrap_or_else(|| default.to_owned())
}

/// The bootstrap list and the security flags (see the crate docs), for every client.
fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (flag, key) in [
        ("--security-protocol", "security.protocol"),
        ("--sasl-mechanism", "sasl.mechanisms"),
        ("--sasl-username", "sasl.username"),
        ("--ssl-ca-location", "ssl.ca.location"),
    ] {
        if let Some(v) = opt(flag) {
            c.set(key, v);
        }
    }
    if let Ok(password) = std::env::var("BENCH_SASL_PASSWORD") {
        c.set("sasl.password", password);
    }
    c
}

fn payload(size: usize) -> Vec<u8> {
    // Random uppercase letters, one payload for every record, as ProducerPerformance does.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

fn producer<C: ProducerContext>(brokers: &str, default_acks: &str, context: C) -> BaseProducer<C> {
    base_config(brokers)
        .set("acks", arg("--acks", default_acks))
        .set("compression.type", arg("--compression", "none"))
        .set("linger.ms", arg("--linger-ms", "5"))
        .set("batch.size", arg("--batch-bytes", "1048576"))
        .set("enable.idempotence", idempotence())
        .set("max.in.flight.requests.per.connection", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.max.bytes", "2097152")
        .create_with_context(context)
        .expect("create the producer")
}

/// `--idempotence on|off` (default off) as librdkafka's `enable.idempotence`.
fn idempotence() -> &'static str {
    match arg("--idempotence", "off").as_str() {
        "on" => "true",
        "off" => "false",
        other => fail(format!("--idempotence {other}: on or off")),
    }
}

fn consumer(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = base_config(brokers)
        .set("group.id", format!("{topic}-rdkafka"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "500")
        .set("fetch.min.bytes", "1")
        .create()
        .expect("create the consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn main() {
    let mode = arg("--mode", "produce");
    let brokers = arg("--brokers", "127.0.0.1:9092");
    let topic = arg("--topic", "");
    if mode == "latency" {
        return latency(&brokers, &topic);
    }
    let n: u64 = arg("--records", "0").parse().expect("--records");
    let size: usize = arg("--size", "100").parse().expect("--size");
    let start = Instant::now();
    let done = if mode == "produce" {
        let producer = producer(&brokers, "1", DefaultProducerContext);
        let value = payload(size);
        let mut sent = 0u64;
        while sent < n {
            match producer.send(BaseRecord::<(), [u8]>::to(&topic).payload(&value[..])) {
                Ok(()) => sent += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
            if sent.is_multiple_of(1024) {
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(300)).expect("flush");
        sent
    } else {
        let consumer = consumer(&brokers, &topic);
        let mut got = 0u64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while got < n && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                m.expect("consume");
                got += 1;
            }
        }
        got
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "client": "rdkafka", "mode": mode, "records": done, "size": size, "secs": secs,
            "records_per_sec": done as f64 / secs, "mb_per_sec": done as f64 * size as f64 / 1e6 / secs,
        })
    );
}

/// Nanoseconds since the Unix epoch, from the wall clock.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Nearest-rank quantile of sorted values, `q` in thousandths (exact integer ranks: 990 is
/// p99).
fn quantile(sorted: &[u64], q: usize) -> u64 {
    sorted[(sorted.len() * q).div_ceil(1000).max(1) - 1]
}

/// Counts delivery reports (latency), so a failed record fails the run at once.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let n = if result.is_ok() {
            &self.acked
        } else {
            &self.failed
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

fn fail(msg: String) -> ! {
    eprintln!("rdkafka-peer: {msg}");
    std::process::exit(1)
}

fn latency(brokers: &str, topic: &str) {
    let rate: u64 = arg("--rate", "20000").parse().expect("--rate");
    let seconds: u64 = arg("--seconds", "10").parse().expect("--seconds");
    let warmup: u64 = arg("--warmup", "3").parse().expect("--warmup");
    let size: usize = arg("--size", "100").parse().expect("--size");
    assert!(
        size >= 8 && rate > 0 && seconds > 0,
        "--size >= 8, --rate and --seconds > 0"
    );

    // The consumer, in its own thread: each record's scheduled and arrival time.
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer_thread = {
        let (count, stop) = (count.clone(), stop.clone());
        let consumer = consumer(brokers, topic);
        std::thread::spawn(move || {
            let mut seen = Vec::<(u64, u64)>::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                    let now = wall_ns();
                    let m = m.unwrap_or_else(|e| fail(format!("consume: {e}")));
                    let v = m
                        .payload()
                        .and_then(|v| v.get(..8))
                        .expect("a value of 8+ bytes");
                    seen.push((u64::from_be_bytes(v.try_into().unwrap()), now));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen
        })
    };

    // The producer: record i at t0 + i / rate, never skipping; polled after every send so
    // delivery reports are served as they come.
    let producer = producer(brokers, "all", Deliveries::default());
    let base = payload(size);
    let total = rate * (warmup + seconds);
    let t0 = wall_ns();
    let measured_from = t0 + warmup * 1_000_000_000;
    let mut value = base.clone();
    for i in 0..total {
        let scheduled = t0 + i * 1_000_000_000 / rate;
        let now = wall_ns();
        if scheduled > now {
            std::thread::sleep(Duration::from_nanos(scheduled - now));
        }
        value[..8].copy_from_slice(&scheduled.to_be_bytes());
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(&value[..])) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => fail(format!("send: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
    }
    let sent_end = wall_ns();
    producer
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|e| fail(format!("flush: {e}")));
    let d = producer.context();
    let (acked, failed) = (
        d.acked.load(Ordering::Relaxed),
        d.failed.load(Ordering::Relaxed),
    );
    if failed > 0 || acked != total {
        fail(format!("acked {acked}, failed {failed} of {total}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            fail(format!(
                "{} of {total} records arrived within 60 s of the producer's end",
                count.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = consumer_thread.join().expect("the consumer thread");
    // When the consumer got going: a first record after the warm-up means start-up backlog
    // is in the figures (the harness warns).
    let first = seen.iter().map(|(_, got)| *got).min().unwrap_or(t0) - t0;

    let mut lat: Vec<u64> = seen
        .iter()
        .filter(|(scheduled, _)| *scheduled >= measured_from)
        .map(|(scheduled, got)| got.saturating_sub(*scheduled))
        .collect();
    lat.sort_unstable();
    if lat.is_empty() {
        fail("no measured records".into());
    }
    let measured_sent = total - rate * warmup;
    let window = sent_end.max(t0 + (warmup + seconds) * 1_000_000_000) - measured_from;
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "client": "rdkafka", "mode": "latency", "rate": rate, "records": lat.len(),
            "p50_ms": ms(quantile(&lat, 500)), "p99_ms": ms(quantile(&lat, 990)),
            "p999_ms": ms(quantile(&lat, 999)), "max_ms": ms(*lat.last().unwrap()),
            "sent_rate": measured_sent as f64 / (window as f64 / 1e9),
            "first_ms": ms(first),
        })
    );
}
