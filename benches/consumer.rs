//! Records per second through a consumer pool reading a pre-filled topic from the local
//! broker (`./scripts/kafka up` first). Run: `cargo bench --bench consumer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpipe::client::{ClientConfig, Cluster, NewTopic};
use kpipe::consumer::{ConsumerPool, OffsetReset};
use kpipe::{ConsumedRecord, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

const RECORDS: u64 = 500_000;
const SIZE: usize = 100;

fn brokers() -> String {
    std::env::var("KPIPE_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn fill(topic: &str) {
    let mut config = ProducerConfig::new(&brokers()).topic(topic);
    config.batch_bytes = 256 * 1024;
    let producer = Producer::new(config).expect("broker up? run ./scripts/kafka up");
    let value = Bytes::from(vec![b'x'; SIZE]);
    for i in 0..RECORDS {
        producer
            .send(ProducerRecord::new(value.clone()).key(format!("device-{}", i % 1000)))
            .unwrap();
    }
    let s = producer.close(Duration::from_secs(120)).unwrap();
    assert_eq!(s.delivered, RECORDS);
}

fn consume_all(topic: &str, threads: usize, round: u64) -> Duration {
    let mut config = ConsumerConfig::new(
        &brokers(),
        &format!("{topic}-bench-{threads}-{round}"),
        &[topic],
    );
    config.threads = threads;
    config.offset_reset = OffsetReset::Earliest;
    config.heartbeat_interval = Duration::from_millis(500);
    config.session_timeout = Duration::from_secs(10);
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let start = Instant::now();
    let pool = ConsumerPool::start_cloned(config, move |_: &ConsumedRecord| {
        c.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::Relaxed) < RECORDS {
        assert!(Instant::now() < deadline, "consuming took over 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    pool.close(Duration::from_secs(30));
    elapsed
}

fn consume(c: &mut Criterion) {
    let mut cluster = Cluster::connect(ClientConfig::new([brokers()]))
        .expect("broker up? run ./scripts/kafka up");
    let topic = format!("kpipe-bench-consume-{}", std::process::id());
    cluster
        .create_topic(&NewTopic::new(&topic, 6, 1), Duration::from_secs(30))
        .unwrap();
    fill(&topic);
    println!(
        "setup: kpipe {} consumer pool reading {RECORDS} records of {SIZE} B (uncompressed, 6 partitions, \
         replication 1) from the local broker, a fresh group each run (offset reset earliest), \
         handler counts records; fetch defaults (min 1 B, max 50 MiB, 1 MiB per partition, max wait 500 ms); \
         time from start to the last record handled, group join included; {} CPUs",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut group = c.benchmark_group("consumer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(RECORDS));
    let mut round = 0;
    for threads in [1usize, 4] {
        group.bench_function(BenchmarkId::new("pool", format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        round += 1;
                        consume_all(&topic, threads, round)
                    })
                    .sum()
            })
        });
    }
    group.finish();
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}

criterion_group!(benches, consume);
criterion_main!(benches);
