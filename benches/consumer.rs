//! Records per second read from a pre-filled topic on the local broker
//! (`./scripts/kafka up` first), through the two consumer APIs side by side: a
//! `ConsumerPool` of 1 or 4 member threads, and `Consumer::poll` on the bench thread or on 4
//! threads of their own in one group. Run: `cargo bench --bench consumer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpipe::client::{ClientConfig, Cluster, NewTopic};
use kpipe::consumer::{ConsumerPool, OffsetReset};
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

const RECORDS: u64 = 500_000;
const SIZE: usize = 100;
/// The longest one measurement may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(120);
/// How long one `poll` waits for records.
const POLL: Duration = Duration::from_millis(100);

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

/// The consumer API a row measures.
#[derive(Debug, Clone, Copy)]
enum Api {
    /// `ConsumerPool`, its handler counting records.
    Pool,
    /// `Consumer::poll` in a loop, counting what each call returns.
    Pull,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Pool => "pool",
            Api::Pull => "pull",
        }
    }
}

/// The one setup every row shares: a fresh group per measurement, offset reset earliest,
/// the library's defaults otherwise (fetch, `max_poll_records` 500, auto commit every 5 s).
fn config(topic: &str, api: Api, threads: usize, round: u64) -> ConsumerConfig {
    let group = format!("{topic}-bench-{}-{threads}-{round}", api.name());
    let mut config = ConsumerConfig::new(&brokers(), &group, &[topic]);
    config.threads = threads;
    config.offset_reset = OffsetReset::Earliest;
    config.heartbeat_interval = Duration::from_millis(500);
    config.session_timeout = Duration::from_secs(10);
    config
}

/// Records counted across threads, and when the last of `RECORDS` was.
struct Tally {
    start: Instant,
    count: AtomicU64,
    /// Nanoseconds from `start` to the record that made `RECORDS`; 0 until then.
    done_ns: AtomicU64,
}

impl Tally {
    /// Starts the clock.
    fn start() -> Arc<Tally> {
        Arc::new(Tally {
            start: Instant::now(),
            count: AtomicU64::new(0),
            done_ns: AtomicU64::new(0),
        })
    }

    fn add(&self, n: u64) {
        let before = self.count.fetch_add(n, Ordering::Relaxed);
        if before < RECORDS && before + n >= RECORDS {
            let ns = self.start.elapsed().as_nanos().max(1) as u64;
            self.done_ns.store(ns, Ordering::Release);
        }
    }

    fn elapsed(&self) -> Option<Duration> {
        match self.done_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Panics past `LIMIT`, so a stuck group fails the bench instead of hanging it.
    fn check_limit(&self) {
        assert!(
            self.start.elapsed() < LIMIT,
            "read {} of {RECORDS} records in {LIMIT:?}",
            self.count.load(Ordering::Relaxed)
        );
    }

    /// Sleep-wait (1 ms) until the last record was counted; the time it was.
    fn wait(&self) -> Duration {
        loop {
            if let Some(d) = self.elapsed() {
                return d;
            }
            self.check_limit();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One `Consumer`, polling on this thread until the tally is complete, then closing.
fn pull(config: ConsumerConfig, tally: &Tally) {
    let mut consumer = Consumer::new(config).expect("broker up? run ./scripts/kafka up");
    while tally.elapsed().is_none() {
        tally.check_limit();
        let records = consumer.poll(POLL).expect("poll");
        tally.add(records.len() as u64);
    }
    consumer.close(Duration::from_secs(30)).expect("close");
}

/// Read the topic once through `api` on `threads` threads; the time from starting to the
/// last record (group join included; closing not).
fn consume_all(topic: &str, api: Api, threads: usize, round: u64) -> Duration {
    let config = config(topic, api, threads, round);
    let tally = Tally::start();
    match (api, threads) {
        (Api::Pool, _) => {
            let t = tally.clone();
            let pool = ConsumerPool::start_cloned(config, move |_: &ConsumedRecord| {
                t.add(1);
                Ok::<(), String>(())
            })
            .expect("broker up? run ./scripts/kafka up");
            let elapsed = tally.wait();
            pool.close(Duration::from_secs(30)).expect("close");
            elapsed
        }
        (Api::Pull, 1) => {
            pull(config, &tally);
            tally
                .elapsed()
                .expect("pull returns once every record is read")
        }
        (Api::Pull, _) => {
            let readers: Vec<_> = (0..threads)
                .map(|i| {
                    let (config, tally) = (config.clone(), tally.clone());
                    std::thread::Builder::new()
                        .name(format!("bench-pull-{i}"))
                        .spawn(move || pull(config, &tally))
                        .unwrap()
                })
                .collect();
            let elapsed = tally.wait();
            for r in readers {
                r.join().expect("a pull thread panicked");
            }
            elapsed
        }
    }
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
        "setup: kpipe {} reading {RECORDS} records of {SIZE} B (uncompressed, keyed, 6 partitions, \
         replication 1) from the local broker, a fresh group each run (offset reset earliest, \
         classic protocol, range assignor); pool: ConsumerPool of 1 or 4 member threads, the \
         handler counts records; pull: Consumer::poll({POLL:?}) in a loop counting what it \
         returns (max_poll_records 500, auto commit every 5 s), on the bench thread or on 4 \
         threads of their own in one group; fetch defaults (min 1 B, max 50 MiB, 1 MiB per \
         partition, max wait 500 ms); time from start to the last record counted, group join \
         included, close not; {} CPUs",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut group = c.benchmark_group("consumer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(RECORDS));
    let mut round = 0;
    for api in [Api::Pool, Api::Pull] {
        for threads in [1usize, 4] {
            group.bench_function(BenchmarkId::new(api.name(), format!("{threads}t")), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            round += 1;
                            consume_all(&topic, api, threads, round)
                        })
                        .sum()
                })
            });
        }
    }
    group.finish();
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}

criterion_group!(benches, consume);
criterion_main!(benches);
