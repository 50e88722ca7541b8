//! Records per second through the whole producer into the local broker
//! (`./scripts/kafka up` first), and the no-broker path alone.
//!
//! Run: `cargo bench --bench producer`. Every group prints its setup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpipe::client::{Acks, ClientConfig, Cluster, Compression, NewTopic};
use kpipe::producer::java_partition;
use kpipe::unstable::BatchBuilder;
use kpipe::{Producer, ProducerConfig, ProducerRecord};

fn brokers() -> String {
    std::env::var("KPIPE_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn payload(size: usize, i: u64) -> Bytes {
    Bytes::from(common::telemetry_json(i, size, 1000))
}

/// Produce `n` records of `size` bytes from `threads` threads; returns the elapsed time.
fn run(
    threads: usize,
    n: u64,
    size: usize,
    acks: Acks,
    codec: Compression,
    topic: &str,
) -> Duration {
    let mut config = ProducerConfig::new(&brokers()).topic(topic);
    config.acks = acks;
    config.compression = codec;
    config.batch_bytes = 256 * 1024;
    config.linger = Duration::from_millis(5);
    let producer = Producer::new(config).expect("broker up? run ./scripts/kafka up");
    let values: Arc<Vec<Bytes>> = Arc::new((0..1024).map(|i| payload(size, i)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (p, values, next) = (producer.clone(), values.clone(), next.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let key = Bytes::from(format!("device-{}", i % 1000));
                p.send(ProducerRecord::new(values[(i % 1024) as usize].clone()).key(key))
                    .unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let summary = producer.close(Duration::from_secs(120)).unwrap();
    assert_eq!(summary.delivered, n, "{summary:?}");
    start.elapsed()
}

fn through_broker(c: &mut Criterion) {
    let mut cluster = Cluster::connect(ClientConfig::new([brokers()]))
        .expect("broker up? run ./scripts/kafka up");
    let topic = format!("kpipe-bench-{}", std::process::id());
    cluster
        .create_topic(&NewTopic::new(&topic, 6, 1), Duration::from_secs(30))
        .unwrap();
    let versions = cluster.brokers().len();
    println!(
        "setup: kpipe {} producer -> local Kafka ({} broker, topic of 6 partitions, replication 1), \
         batch_bytes 256 KiB, linger 5 ms, keyed records (1000 keys, murmur2), {} CPUs",
        env!("CARGO_PKG_VERSION"),
        versions,
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut group = c.benchmark_group("producer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (size, n) in [(100usize, 200_000u64), (1024, 50_000)] {
        for acks in [Acks::Leader, Acks::All] {
            for codec in [Compression::None, Compression::Lz4] {
                for threads in [1usize, 8] {
                    group.throughput(Throughput::Elements(n));
                    let id = format!("{size}B/acks={acks}/{codec}/{threads}t");
                    group.bench_function(BenchmarkId::from_parameter(id), |b| {
                        b.iter_custom(|iters| {
                            (0..iters)
                                .map(|_| run(threads, n, size, acks, codec, &topic))
                                .sum()
                        })
                    });
                }
            }
        }
    }
    group.finish();
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}

/// The writer's per-record work without a broker: channel hand-off, murmur2 partitioning and
/// batch encoding, with the same crates and types the producer uses.
fn no_broker(c: &mut Criterion) {
    println!("setup: no broker; 1 sender thread -> bounded(10000) crossbeam channel -> 1 thread that partitions (murmur2, 6 partitions) and encodes 1000-record batches, 100-byte values");
    let records: Vec<ProducerRecord> = (0..1000)
        .map(|i| {
            ProducerRecord::new(payload(100, i))
                .key(format!("device-{}", i % 1000))
                .timestamp(1)
        })
        .collect();
    let mut group = c.benchmark_group("no_broker");
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("handoff+partition+encode/100B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = crossbeam_channel::bounded::<ProducerRecord>(10_000);
                let recs = records.clone();
                let start = Instant::now();
                let sender = thread::spawn(move || {
                    for i in 0..100_000usize {
                        tx.send(recs[i % 1000].clone()).unwrap();
                    }
                });
                let mut builders: Vec<BatchBuilder> = (0..6)
                    .map(|_| BatchBuilder::with_capacity(256 * 1024))
                    .collect();
                let mut out = Vec::with_capacity(512 * 1024);
                while let Ok(r) = rx.recv() {
                    let p = java_partition(r.key.as_deref().unwrap(), 6);
                    let b = &mut builders[p];
                    b.push(
                        r.timestamp.unwrap(),
                        r.key.as_deref(),
                        r.value.as_deref(),
                        &r.headers,
                    );
                    if b.len() == 1000 {
                        out.clear();
                        b.finish(Compression::None, &mut out).unwrap();
                        b.clear();
                    }
                }
                sender.join().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, no_broker, through_broker);
criterion_main!(benches);
