//! kpipe's side of `scripts/bench-peers`: produce or consume a fixed number of records and
//! print one line of JSON with what was measured. The harness runs it under `/usr/bin/time`
//! for CPU and memory, exactly as it runs the peer clients.
//!
//! `latency` measures end-to-end latency at a fixed rate, the way every peer program does:
//! a consumer (group, offset reset earliest) starts on the topic, then the producer sends
//! record i at its scheduled time t0 + i / rate (at once when behind, never skipping), with
//! that scheduled time (ns since the Unix epoch, big-endian u64) in the value's first 8
//! bytes. The consumer's handler takes now - scheduled for every record whose scheduled time
//! is past the warm-up, so a stall delays the records behind it and counts against them (no
//! coordinated omission).
//!
//! `--config FILE` reads a Java client properties file (`ClientConfig::from_properties`:
//! `bootstrap.servers`, `security.protocol`, `sasl.*`, `ssl.*` with PEM stores) into the
//! client config of everything the run builds, the `create` and `delete` admin calls
//! included; `--brokers`, when given, still replaces its `bootstrap.servers`. Without
//! either, the broker is 127.0.0.1:9092 over PLAINTEXT.
//!
//! `--idempotence on|off` sets `ProducerConfig::idempotence` (`Some(true)` / `Some(false)`)
//! for the producer of `produce` and `latency`; without it the library's default (`None`:
//! on with acks=all and at most 5 in flight, else off). Their JSON line says whether the
//! producer was idempotent (`"idempotent"`: it had a producer id, `ProducerStats::producer`).
//!
//! `consume --api pool|pull` picks the consumer API: `pool` (the default) is a `ConsumerPool`
//! of `--threads` members whose handler counts records; `pull` is `Consumer::poll` in a loop,
//! on the main thread for `--threads 1`, else one `Consumer` on each of `--threads` threads,
//! all in one group. Its JSON line says which (`"api"`).
//!
//! ```text
//! cargo run --release --example perf -- produce --topic t --records 1000000 --size 100 --acks 1 --compression lz4
//! cargo run --release --example perf -- consume --topic t --records 1000000 --threads 1
//! cargo run --release --example perf -- consume --topic t --records 1000000 --threads 4 --api pull
//! cargo run --release --example perf -- latency --topic t --rate 20000 --seconds 10 --warmup 3
//! cargo run --release --example perf -- produce --config .kafka/secure/client-sasl-ssl-scram-sha-512.properties --topic t --records 1000000
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use kpipe::client::{Acks, ClientConfig, Compression};
use kpipe::consumer::{ConsumerPool, OffsetReset};
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// The consumer API `consume` reads through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    /// `ConsumerPool`: member threads running a handler.
    Pool,
    /// `Consumer::poll` in a loop, one `Consumer` per thread.
    Pull,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Create the topic (6 partitions unless --partitions), replacing an existing one.
    Create,
    /// Delete the topic (a missing one is fine).
    Delete,
    Produce,
    Consume,
    /// End-to-end latency at a fixed rate (--rate, --seconds, --warmup).
    Latency,
}

/// Produce or consume a fixed number of records and report the rate as JSON.
#[derive(Debug, Parser)]
struct Args {
    mode: Mode,
    /// Bootstrap brokers, host:port, comma-separated [default: bootstrap.servers of
    /// --config, else 127.0.0.1:9092].
    #[arg(long)]
    brokers: Option<String>,
    /// A Java client properties file (security.protocol, sasl.mechanism, sasl.jaas.config,
    /// ssl.* with PEM stores, bootstrap.servers), for every client this run builds.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 0)]
    records: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Default 1 (produce), all (latency).
    #[arg(long)]
    acks: Option<Acks>,
    #[arg(long, default_value = "none")]
    compression: Compression,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Idempotent writes (produce, latency) [default: the library's, on with acks=all].
    #[arg(long)]
    idempotence: Option<OnOff>,
    /// Sending threads (produce) or member threads (consume).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Consumer API (consume).
    #[arg(long, value_enum, default_value_t = Api::Pool)]
    api: Api,
    /// Consumer group (consume); default: a fresh one.
    #[arg(long)]
    group: Option<String>,
    /// Partitions (create).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// A topic setting, KEY=VALUE (create; repeatable), e.g. retention.bytes=1073741824.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_configs: Vec<String>,
    /// Records per second (latency).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Measured seconds, after the warm-up (latency).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds, sent but left out of the figures (latency).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
}

fn main() {
    let a = Args::parse();
    let client = client_config(&a);
    let (secs, n, idempotent) = match a.mode {
        Mode::Create => return create(&a, client),
        Mode::Delete => return delete(&a, client),
        Mode::Produce => produce(&a, client),
        Mode::Consume => consume(&a, client),
        Mode::Latency => return latency(&a, client),
    };
    let mb = n as f64 * a.size as f64 / 1e6;
    let mut line = serde_json::json!({
        "client": "kpipe",
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "records": n,
        "size": a.size,
        "secs": secs,
        "records_per_sec": n as f64 / secs,
        "mb_per_sec": mb / secs,
    });
    if let Some(idempotent) = idempotent {
        line["idempotent"] = idempotent.into();
    }
    if let Mode::Consume = a.mode {
        line["api"] = format!("{:?}", a.api).to_lowercase().into();
    }
    println!("{line}");
}

/// The client config every Cluster, Producer and Consumer of the run gets: --config's
/// file, if any, with --brokers over its bootstrap list.
fn client_config(a: &Args) -> ClientConfig {
    let mut c = match &a.config {
        Some(path) => ClientConfig::from_properties(path).unwrap_or_else(|e| {
            eprintln!("perf: --config: {e}");
            std::process::exit(2)
        }),
        None => ClientConfig::new(["127.0.0.1:9092"]),
    };
    if let Some(brokers) = &a.brokers {
        c.bootstrap = ClientConfig::new([brokers]).bootstrap;
    }
    c
}

fn create(a: &Args, client: ClientConfig) {
    use kpipe::client::{Cluster, NewTopic};
    let fail = |e: kpipe::client::Error| -> ! {
        eprintln!("perf: {e}");
        std::process::exit(1)
    };
    let mut cluster = Cluster::connect(client).unwrap_or_else(|e| fail(e));
    let mut t = NewTopic::new(&a.topic, a.partitions, 1);
    for kv in &a.topic_configs {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!(
                "perf: --topic-config {kv:?}: write KEY=VALUE, e.g. retention.bytes=1073741824"
            );
            std::process::exit(2)
        };
        t = t.config(k, v);
    }
    match cluster.create_topic(&t, Duration::from_secs(60)) {
        Ok(()) => {}
        Err(e) if e.is_already_exists() => {
            cluster
                .delete_topic(&a.topic, Duration::from_secs(60))
                .unwrap_or_else(|e| fail(e));
            cluster
                .create_topic(&t, Duration::from_secs(60))
                .unwrap_or_else(|e| fail(e));
        }
        Err(e) => fail(e),
    }
}

fn delete(a: &Args, client: ClientConfig) {
    use kpipe::client::{Cluster, Error, KafkaCode};
    let fail = |e: Error| -> ! {
        eprintln!("perf: {e}");
        std::process::exit(1)
    };
    let mut cluster = Cluster::connect(client).unwrap_or_else(|e| fail(e));
    match cluster.delete_topic(&a.topic, Duration::from_secs(60)) {
        Err(e) if e.kafka_code() != Some(KafkaCode::UnknownTopicOrPartition) => fail(e),
        _ => {}
    }
}

fn producer_config(a: &Args, client: ClientConfig, default_acks: Acks) -> ProducerConfig {
    // The config's defaults, then the whole client config (security included) over them.
    let mut c = ProducerConfig::new(&client.bootstrap.join(",")).topic(&a.topic);
    c.client = client;
    c.acks = a.acks.unwrap_or(default_acks);
    c.compression = a.compression;
    c.linger = Duration::from_millis(a.linger_ms);
    c.batch_bytes = a.batch_bytes;
    c.max_request_bytes = c.max_request_bytes.max(a.batch_bytes * 2);
    c.buffer_bytes = c.buffer_bytes.max(a.batch_bytes * 4);
    if let Some(i) = a.idempotence {
        c.idempotence = Some(i == OnOff::On);
    }
    c
}

/// As Kafka's ProducerPerformance does: one payload of random uppercase letters, sent for
/// every record (so compression sees the same data for every client).
fn payload(size: usize) -> Vec<u8> {
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

/// Seconds, records delivered, and whether the producer was idempotent (had a producer id).
fn produce(a: &Args, client: ClientConfig) -> (f64, u64, Option<bool>) {
    let c = producer_config(a, client, Acks::Leader);
    let start = Instant::now();
    let producer = Producer::new(c).expect("start the producer (is the broker up?)");
    let value: Bytes = payload(a.size).into();
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..a.threads)
        .map(|_| {
            let (p, value, next, n) = (producer.clone(), value.clone(), next.clone(), a.records);
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    p.send(ProducerRecord::new(value.clone())).expect("send");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let idempotent = producer.stats().producer.is_some();
    let s = producer.close(Duration::from_secs(300)).expect("close");
    assert_eq!(s.delivered, a.records, "{s:?}");
    (start.elapsed().as_secs_f64(), s.delivered, Some(idempotent))
}

fn consumer_config(a: &Args, client: ClientConfig) -> ConsumerConfig {
    let group = a
        .group
        .clone()
        .unwrap_or_else(|| format!("perf-{}", std::process::id()));
    let mut c = ConsumerConfig::new(&client.bootstrap.join(","), &group, &[a.topic.as_str()]);
    c.client = client;
    c.threads = a.threads;
    c.offset_reset = OffsetReset::Earliest;
    c.heartbeat_interval = Duration::from_millis(500);
    c.session_timeout = Duration::from_secs(10);
    c
}

fn consume(a: &Args, client: ClientConfig) -> (f64, u64, Option<bool>) {
    match a.api {
        Api::Pool => consume_pool(a, client),
        Api::Pull => consume_pull(a, client),
    }
}

fn consume_pool(a: &Args, client: ClientConfig) -> (f64, u64, Option<bool>) {
    let c = consumer_config(a, client);
    let count = Arc::new(AtomicU64::new(0));
    let k = count.clone();
    let start = Instant::now();
    let pool = ConsumerPool::start_cloned(c, move |_: &ConsumedRecord| {
        k.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .expect("start the pool (is the broker up?)");
    let deadline = Instant::now() + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) < a.records {
        assert!(Instant::now() < deadline, "consuming took over 600 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    pool.close(Duration::from_secs(30));
    (secs, count.load(Ordering::Relaxed), None)
}

/// `Consumer::poll` until `--records` have come: on this thread for `--threads 1` (the time
/// taken as the last record arrives), else on that many threads in one group (the time
/// taken as the pool's is, waking every 1 ms).
fn consume_pull(a: &Args, client: ClientConfig) -> (f64, u64, Option<bool>) {
    let c = consumer_config(a, client);
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(600);
    let start = Instant::now();
    if a.threads == 1 {
        let end = read_pull(c, &count, a.records, deadline);
        let secs = (end - start).as_secs_f64();
        return (secs, count.load(Ordering::Relaxed), None);
    }
    let readers: Vec<_> = (0..a.threads)
        .map(|i| {
            let (c, k, n) = (c.clone(), count.clone(), a.records);
            std::thread::Builder::new()
                .name(format!("perf-pull-{i}"))
                .spawn(move || {
                    read_pull(c, &k, n, deadline);
                })
                .expect("spawn a reader")
        })
        .collect();
    while count.load(Ordering::Relaxed) < a.records {
        assert!(Instant::now() < deadline, "consuming took over 600 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    for r in readers {
        r.join().expect("a reader panicked");
    }
    (secs, count.load(Ordering::Relaxed), None)
}

/// One `Consumer` polling until `count` reaches `records`, then closing; returns when the
/// count was seen complete (before the close).
fn read_pull(c: ConsumerConfig, count: &AtomicU64, records: u64, deadline: Instant) -> Instant {
    let mut consumer = Consumer::new(c).expect("start the consumer (is the broker up?)");
    while count.load(Ordering::Relaxed) < records {
        assert!(Instant::now() < deadline, "consuming took over 600 s");
        let n = consumer
            .poll(Duration::from_millis(100))
            .expect("poll")
            .len();
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    let end = Instant::now();
    consumer.close(Duration::from_secs(30)).expect("close");
    end
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

fn latency(a: &Args, client: ClientConfig) {
    assert!(
        a.size >= 8,
        "--size must be at least 8 (the scheduled time)"
    );
    assert!(
        a.rate > 0 && a.seconds > 0,
        "--rate and --seconds must be positive"
    );
    let fail = |msg: String| -> ! {
        eprintln!("perf: {msg}");
        std::process::exit(1)
    };
    // The consumer: every record's (scheduled, received) pair, taken in the handler.
    let seen = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let count = Arc::new(AtomicU64::new(0));
    let (sn, k) = (seen.clone(), count.clone());
    let mut cc = consumer_config(a, client.clone());
    cc.fetch.max_wait = Duration::from_millis(500);
    cc.fetch.min_bytes = 1;
    let pool = ConsumerPool::start_cloned(cc, move |r: &ConsumedRecord| {
        let now = wall_ns();
        let v = r.value.as_deref().and_then(|v| v.get(..8));
        let scheduled = u64::from_be_bytes(v.expect("a value of 8+ bytes").try_into().unwrap());
        sn.lock().unwrap().push((scheduled, now));
        k.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .expect("start the pool (is the broker up?)");

    // The producer: record i at t0 + i / rate, never skipping.
    let producer = Producer::new(producer_config(a, client, Acks::All))
        .expect("start the producer (is the broker up?)");
    let base = payload(a.size);
    let total = a.rate * (a.warmup + a.seconds);
    let t0 = wall_ns();
    let measured_from = t0 + a.warmup * 1_000_000_000;
    for i in 0..total {
        let scheduled = t0 + i * 1_000_000_000 / a.rate;
        let now = wall_ns();
        if scheduled > now {
            std::thread::sleep(Duration::from_nanos(scheduled - now));
        }
        let mut value = base.clone();
        value[..8].copy_from_slice(&scheduled.to_be_bytes());
        producer
            .send(ProducerRecord::new(value))
            .unwrap_or_else(|e| fail(format!("send: {e}")));
    }
    let sent_end = wall_ns();
    let idempotent = producer.stats().producer.is_some();
    let s = producer
        .close(Duration::from_secs(60))
        .unwrap_or_else(|e| fail(format!("close: {e}")));
    if s.delivered != total {
        fail(format!(
            "{} of {total} records delivered: {s:?}",
            s.delivered
        ));
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
    pool.close(Duration::from_secs(30));

    let seen = seen.lock().unwrap();
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
    let measured_sent = total - (a.rate * a.warmup);
    let window = sent_end.max(t0 + (a.warmup + a.seconds) * 1_000_000_000) - measured_from;
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "client": "kpipe",
            "mode": "latency",
            "rate": a.rate,
            "records": lat.len(),
            "p50_ms": ms(quantile(&lat, 500)),
            "p99_ms": ms(quantile(&lat, 990)),
            "p999_ms": ms(quantile(&lat, 999)),
            "max_ms": ms(*lat.last().unwrap()),
            "sent_rate": measured_sent as f64 / (window as f64 / 1e9),
            "first_ms": ms(first),
            "idempotent": idempotent,
        })
    );
}
