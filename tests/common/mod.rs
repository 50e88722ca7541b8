//! Helpers shared by the integration tests: the real broker, unique topics, deadlines.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kpipe::client::{ClientConfig, Cluster, NewTopic};

pub mod java;
pub mod nodes;
pub mod proxy;
pub mod share;

/// The broker the tests run against: `KPIPE_BROKERS`, or the one `./scripts/kafka up` starts.
pub fn brokers() -> String {
    std::env::var("KPIPE_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A client config for the test broker with short timeouts.
pub fn config() -> ClientConfig {
    let mut c = ClientConfig::new([brokers()]);
    c.connection.client_id = "kpipe-tests".into();
    c.connection.connect_timeout = Duration::from_secs(5);
    c.connection.request_timeout = Duration::from_secs(20);
    c
}

/// Connect to the test broker, failing loudly (never skipping) when it is not there.
pub fn cluster() -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    match Cluster::connect(config()) {
        Ok(c) => c,
        Err(e) => panic!(
            "integration tests need a real Kafka broker at {}: {e}\n\
             start one with ./scripts/kafka up (./scripts/test does this for you)",
            brokers()
        ),
    }
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "kpipe-test-{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Create a fresh topic with `partitions` partitions and return its name.
pub fn new_topic(cluster: &mut Cluster, prefix: &str, partitions: i32) -> String {
    let name = unique_topic(prefix);
    cluster
        .create_topic(
            &NewTopic::new(&name, partitions, 1),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
    name
}

/// Wait until `cond` holds, polling, or panic after `limit` with `what`.
pub fn await_condition(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every record of every partition of `topic`, read from offset 0 to the end as it is now.
pub fn fetch_all(cluster: &mut Cluster, topic: &str) -> Vec<(i32, kpipe::unstable::FetchedRecord)> {
    use kpipe::client::OffsetSpec;
    use kpipe::unstable::{FetchParams, FetchTarget};
    let info = cluster.topic(topic).unwrap().clone();
    let parts: Vec<i32> = info.partitions.iter().map(|p| p.id).collect();
    let end = cluster
        .list_offsets(topic, &parts, OffsetSpec::Latest)
        .unwrap();
    let mut offsets = vec![0i64; parts.len()];
    let mut out = Vec::new();
    let params = FetchParams {
        max_wait: Duration::from_millis(50),
        partition_max_bytes: 4 << 20,
        ..FetchParams::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets.iter().zip(&end).any(|(o, e)| *o < e.offset) {
        assert!(
            Instant::now() < deadline,
            "fetching {topic} back took over 60 s"
        );
        let targets: Vec<FetchTarget> = parts
            .iter()
            .filter(|&&p| offsets[p as usize] < end[p as usize].offset)
            .map(|&p| FetchTarget {
                topic: topic.to_owned(),
                topic_id: info.id,
                partition: p,
                offset: offsets[p as usize],
                current_leader_epoch: None,
                replica: None,
            })
            .collect();
        for r in cluster.fetch(&params, &targets).unwrap() {
            let part = r.result.unwrap();
            offsets[r.partition as usize] = part.next_offset;
            let limit = end[r.partition as usize].offset;
            out.extend(
                part.records
                    .into_iter()
                    .filter(|rec| rec.offset < limit)
                    .map(|rec| (r.partition, rec)),
            );
        }
    }
    out
}

/// A producer config for the test broker with test-sized timeouts.
pub fn producer_config(topic: &str) -> kpipe::ProducerConfig {
    let mut c = kpipe::ProducerConfig::new(&brokers()).topic(topic);
    c.client = config();
    c.delivery_timeout = Duration::from_secs(60);
    c
}

/// Produce `n` records with values `"{prefix}{i}"` and keys `"k{i % 100}"` into `topic`,
/// and wait until every one is acknowledged.
pub fn produce(topic: &str, prefix: &str, n: usize) {
    let producer = kpipe::Producer::new(producer_config(topic)).unwrap();
    for i in 0..n {
        producer
            .send(kpipe::ProducerRecord::new(format!("{prefix}{i}")).key(format!("k{}", i % 100)))
            .unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, n as u64, "{summary:?}");
}

/// A consumer config for the test broker with short group timings.
pub fn consumer_config(group: &str, topic: &str, threads: usize) -> kpipe::ConsumerConfig {
    let mut c = kpipe::ConsumerConfig::new(&brokers(), group, &[topic]);
    c.client = config();
    c.threads = threads;
    c.session_timeout = Duration::from_secs(6); // the broker's minimum
    c.heartbeat_interval = Duration::from_millis(300);
    c.max_poll_interval = Duration::from_secs(10);
    c.commit_interval = Duration::from_millis(500);
    c.offset_reset = kpipe::consumer::OffsetReset::Earliest;
    c.fetch.max_wait = Duration::from_millis(200);
    c
}

/// The three ways kpipe's consumers can form a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Classic, `range`: an eager rebalance, every member gives everything up.
    Eager,
    /// Classic, `cooperative-sticky` (KIP-429).
    Cooperative,
    /// The consumer protocol (KIP-848), the broker's `uniform` assignor.
    Consumer,
}

impl Protocol {
    /// Set `config` up for this protocol.
    pub fn apply(self, config: &mut kpipe::ConsumerConfig) {
        use kpipe::consumer::{Assignor, GroupProtocol};
        match self {
            Protocol::Eager => config.assignor = Assignor::Range,
            Protocol::Cooperative => config.assignor = Assignor::CooperativeSticky,
            Protocol::Consumer => config.group_protocol = GroupProtocol::Consumer,
        }
    }

    /// [`consumer_config`] for one member thread under this protocol.
    pub fn config(self, group: &str, topic: &str) -> kpipe::ConsumerConfig {
        let mut c = consumer_config(group, topic, 1);
        self.apply(&mut c);
        c
    }

    /// Whether members keep what they own through a rebalance (not eager).
    pub fn incremental(self) -> bool {
        self != Protocol::Eager
    }
}

/// Take `lock`, for tests that must run one at a time (their timings then are their own),
/// whatever a test that panicked holding it left behind.
pub fn serial(lock: &'static std::sync::Mutex<()>) -> std::sync::MutexGuard<'static, ()> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}
