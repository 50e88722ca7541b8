//! kpipe's side of `scripts/bench-peers`: produce or consume a fixed number of records and
//! print one line of JSON with what was measured. The harness runs it under `/usr/bin/time`
//! for CPU and memory, exactly as it runs the peer clients.
//!
//! ```text
//! cargo run --release --example perf -- produce --topic t --records 1000000 --size 100 --acks 1 --compression lz4
//! cargo run --release --example perf -- consume --topic t --records 1000000 --threads 1
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use kpipe::client::{Acks, Compression};
use kpipe::consumer::{ConsumerPool, OffsetReset};
use kpipe::{ConsumedRecord, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Create the topic (6 partitions unless --partitions), replacing an existing one.
    Create,
    Produce,
    Consume,
}

/// Produce or consume a fixed number of records and report the rate as JSON.
#[derive(Debug, Parser)]
struct Args {
    mode: Mode,
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 0)]
    records: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value = "1")]
    acks: Acks,
    #[arg(long, default_value = "none")]
    compression: Compression,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Sending threads (produce) or member threads (consume).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Consumer group (consume); default: a fresh one.
    #[arg(long)]
    group: Option<String>,
    /// Partitions (create).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
}

fn main() {
    let a = Args::parse();
    let (secs, n) = match a.mode {
        Mode::Create => return create(&a),
        Mode::Produce => produce(&a),
        Mode::Consume => consume(&a),
    };
    let mb = n as f64 * a.size as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "client": "kpipe",
            "mode": format!("{:?}", a.mode).to_lowercase(),
            "records": n,
            "size": a.size,
            "secs": secs,
            "records_per_sec": n as f64 / secs,
            "mb_per_sec": mb / secs,
        })
    );
}

fn create(a: &Args) {
    use kpipe::client::{is_already_exists, ClientConfig, Cluster, NewTopic};
    let fail = |e: kpipe::client::Error| -> ! {
        eprintln!("perf: {e}");
        std::process::exit(1)
    };
    let mut cluster = Cluster::connect(ClientConfig::new([&a.brokers])).unwrap_or_else(|e| fail(e));
    let t = NewTopic::new(&a.topic, a.partitions, 1);
    match cluster.create_topic(&t, Duration::from_secs(60)) {
        Ok(()) => {}
        Err(e) if is_already_exists(&e) => {
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

fn produce(a: &Args) -> (f64, u64) {
    let mut c = ProducerConfig::new(&a.brokers).topic(&a.topic);
    c.acks = a.acks;
    c.compression = a.compression;
    c.linger = Duration::from_millis(a.linger_ms);
    c.batch_bytes = a.batch_bytes;
    c.max_request_bytes = c.max_request_bytes.max(a.batch_bytes * 2);
    c.buffer_bytes = c.buffer_bytes.max(a.batch_bytes * 4);
    let start = Instant::now();
    let producer = Producer::new(c).expect("start the producer (is the broker up?)");
    // As Kafka's ProducerPerformance does: one payload of random uppercase letters, sent
    // for every record (so compression sees the same data for every client).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let value: Bytes = (0..a.size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into();
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
    let s = producer.close(Duration::from_secs(300)).expect("close");
    assert_eq!(s.delivered, a.records, "{s:?}");
    (start.elapsed().as_secs_f64(), s.delivered)
}

fn consume(a: &Args) -> (f64, u64) {
    let group = a
        .group
        .clone()
        .unwrap_or_else(|| format!("perf-{}", std::process::id()));
    let mut c = ConsumerConfig::new(&a.brokers, &group, &[a.topic.as_str()]);
    c.threads = a.threads;
    c.offset_reset = OffsetReset::Earliest;
    c.heartbeat_interval = Duration::from_millis(500);
    c.session_timeout = Duration::from_secs(10);
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
    (secs, count.load(Ordering::Relaxed))
}
