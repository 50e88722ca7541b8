//! The broker's client quotas (KIP-219): a throttled client is told `throttle_time_ms` and
//! must hold off for that long. kpipe's producer and consumer honour it and still deliver.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kpipe::{ConsumedRecord, ConsumerPool, Producer, ProducerRecord};

/// Set (or with `None` remove) a byte-rate quota for `client_id` with Kafka's own tool.
fn set_quota(client_id: &str, config: Option<&str>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let mut last = String::new();
    // Kafka 4 moved the tool to org.apache.kafka.tools; 3.9 has it in kafka.admin.
    for class in [
        "org.apache.kafka.tools.ConfigCommand",
        "kafka.admin.ConfigCommand",
    ] {
        let mut c = Command::new(script);
        c.args(["run-class", class, "--bootstrap-server", &common::brokers()])
            .args([
                "--entity-type",
                "clients",
                "--entity-name",
                client_id,
                "--alter",
            ]);
        match config {
            Some(cfg) => c.args(["--add-config", cfg]),
            None => c.args(["--delete-config", "producer_byte_rate,consumer_byte_rate"]),
        };
        let out = c
            .output()
            .expect("run Kafka's ConfigCommand through scripts/kafka");
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    panic!("setting a client quota failed: {last}");
}

#[test]
fn a_throttled_producer_and_consumer_hold_off_and_deliver_everything() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "quota", 2);
    let client_id = common::unique_topic("quota-client");
    // About 1.2 MB through 100 KB/s quotas: several throttled responses each way.
    set_quota(
        &client_id,
        Some("producer_byte_rate=102400,consumer_byte_rate=102400"),
    );
    let n = 6_000u64;
    let mut pc = common::producer_config(&topic);
    pc.client.connection.client_id = client_id.clone();
    pc.batch_bytes = 64 << 10;
    let producer = Producer::new(pc).unwrap();
    let value = vec![b'q'; 200];
    for i in 0..n {
        producer
            .send(ProducerRecord::new(value.clone()).key(format!("k{}", i % 10)))
            .unwrap();
    }
    let summary = producer.close(Duration::from_secs(120)).unwrap();
    let stats = producer.stats();
    println!("producer: {summary:?}, throttled {} ms", stats.throttled_ms);
    assert_eq!(summary.delivered, n, "{summary:?}");
    assert!(
        stats.throttled_ms > 0,
        "the broker throttled the producer: {stats:?}"
    );
    assert!(
        stats.errors.is_empty(),
        "throttling is not an error: {stats:?}"
    );

    let handled = Arc::new(AtomicU64::new(0));
    let mut cc = common::consumer_config(&common::unique_topic("quota-g"), &topic, 1);
    cc.client.connection.client_id = client_id.clone();
    let h = handled.clone();
    let pool = ConsumerPool::start_cloned(cc, move |_: &ConsumedRecord| {
        h.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .unwrap();
    common::await_condition(Duration::from_secs(120), "every record consumed", || {
        handled.load(Ordering::Relaxed) >= n
    });
    let stats = pool.stats();
    pool.close(Duration::from_secs(30)).expect("close");
    set_quota(&client_id, None);
    assert_eq!(handled.load(Ordering::Relaxed), n);
    assert_eq!(
        stats.rebalances, 1,
        "no session lost while held off: {stats:?}"
    );
}
