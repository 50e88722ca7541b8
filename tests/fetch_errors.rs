//! Fetch errors a consumer cannot retry its way out of, against the real broker through a
//! fault-injecting proxy (`tests/common/proxy.rs`: the broker cannot corrupt records or
//! refuse a partition on demand): corrupt records hold their partition until the caller
//! seeks past them; a refusal such as TOPIC_AUTHORIZATION_FAILED comes out of `poll` (and
//! stops a pool) instead of being retried silently.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use kafka_protocol::messages::FetchResponse;
use kpipe::client::KafkaCode;
use kpipe::consumer::{ConsumerPool, Error};
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig};

/// Flip a byte inside the first record batch of partition 0's data, when that batch starts
/// at `base`: its checksum no longer matches. Counts the answers it corrupted.
fn corrupt_batch_at(base: i64, times: Arc<AtomicU32>, limit: u32) -> common::proxy::FetchRewrite {
    Box::new(move |f: &mut FetchResponse| {
        let mut changed = false;
        for t in &mut f.responses {
            for p in &mut t.partitions {
                let Some(records) = p.records.as_mut() else {
                    continue;
                };
                if p.partition_index != 0
                    || records.len() < 70
                    || times.load(Ordering::SeqCst) >= limit
                {
                    continue;
                }
                if i64::from_be_bytes(records[..8].try_into().unwrap()) != base {
                    continue;
                }
                let mut bytes = records.to_vec();
                bytes[65] ^= 0xff; // past the CRC field: in what it covers
                *records = bytes.into();
                times.fetch_add(1, Ordering::SeqCst);
                changed = true;
            }
        }
        changed
    })
}

fn config_via(proxy: &Proxy, topic: &str) -> ConsumerConfig {
    let mut c = common::consumer_config(&common::unique_topic("fetch-errors-g"), topic, 1);
    c.client.bootstrap = vec![proxy.addr.clone()];
    c.auto_commit = false;
    c
}

/// Two batches in partition 0: offsets 0..50 and 50..100.
fn two_batches() -> String {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "fetch-errors", 1);
    common::produce(&topic, "a", 50);
    common::produce(&topic, "b", 50);
    topic
}

#[test]
fn corrupt_records_fetched_twice_hold_the_partition_until_a_seek_past_them() {
    let topic = two_batches();
    let corrupted = Arc::new(AtomicU32::new(0));
    let proxy = Proxy::start(
        &common::brokers(),
        corrupt_batch_at(0, corrupted.clone(), u32::MAX),
    );
    let mut consumer = Consumer::new(config_via(&proxy, &topic)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        assert!(
            Instant::now() < deadline,
            "no error from poll in 30 s ({} corrupt answers): corrupt records retried silently",
            corrupted.load(Ordering::SeqCst)
        );
        match consumer.poll(Duration::from_millis(200)) {
            Ok(records) => assert!(
                records.is_empty(),
                "records handed out from a corrupt batch"
            ),
            Err(e) => break e,
        }
    };
    let Error::CorruptRecords {
        partition: 0,
        offset: 0,
        next: Some(50),
        ..
    } = &refused
    else {
        panic!("not the corrupt-records error: {refused}");
    };
    assert!(
        corrupted.load(Ordering::SeqCst) >= 2,
        "fetched again before giving up"
    );
    assert!(
        refused.to_string().contains("seek past them (to 50"),
        "{refused}"
    );
    assert!(
        consumer.poll(Duration::from_millis(100)).is_err(),
        "held until a seek"
    );
    consumer.seek(&topic, 0, 50).unwrap();
    let mut got: Vec<ConsumedRecord> = Vec::new();
    common::await_condition(Duration::from_secs(30), "the second batch", || {
        got.extend(consumer.poll(Duration::from_millis(100)).unwrap());
        got.len() >= 50
    });
    assert_eq!(got.first().map(|r| r.offset), Some(50));
    assert_eq!(got.len(), 50);
    consumer.close(Duration::from_secs(30)).unwrap();
}

#[test]
fn records_corrupted_once_on_the_way_are_fetched_again_and_read() {
    let topic = two_batches();
    let corrupted = Arc::new(AtomicU32::new(0));
    let proxy = Proxy::start(
        &common::brokers(),
        corrupt_batch_at(0, corrupted.clone(), 1),
    );
    let mut consumer = Consumer::new(config_via(&proxy, &topic)).unwrap();
    let mut got: Vec<ConsumedRecord> = Vec::new();
    common::await_condition(Duration::from_secs(30), "all 100 records", || {
        got.extend(consumer.poll(Duration::from_millis(100)).unwrap());
        got.len() >= 100
    });
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    assert_eq!(corrupted.load(Ordering::SeqCst), 1);
    assert!(consumer.stats().fetch_errors >= 1);
    consumer.close(Duration::from_secs(30)).unwrap();
}

/// Answer every Fetch of partition 0 with TOPIC_AUTHORIZATION_FAILED.
fn refuse_authorization() -> common::proxy::FetchRewrite {
    Box::new(|f: &mut FetchResponse| {
        for t in &mut f.responses {
            for p in &mut t.partitions {
                p.error_code = KafkaCode::TopicAuthorizationFailed.code();
                p.records = None;
                p.high_watermark = -1;
            }
        }
        true
    })
}

#[test]
fn a_fetch_refused_for_authorization_comes_out_of_poll_and_stops_a_pool() {
    let topic = two_batches();
    let proxy = Proxy::start(&common::brokers(), refuse_authorization());
    let mut consumer = Consumer::new(config_via(&proxy, &topic)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        assert!(Instant::now() < deadline, "no error from poll in 30 s");
        match consumer.poll(Duration::from_millis(200)) {
            Ok(records) => assert!(records.is_empty()),
            Err(e) => break e,
        }
    };
    match &refused {
        Error::Client(e) if e.kafka_code() == Some(KafkaCode::TopicAuthorizationFailed) => {}
        other => panic!("not the authorization error: {other}"),
    }
    drop(consumer);

    let pool = ConsumerPool::start(config_via(&proxy, &topic), |_| {
        |_: &ConsumedRecord| -> Result<(), String> { Ok(()) }
    })
    .unwrap();
    common::await_condition(Duration::from_secs(30), "the pool to stop", || {
        pool.is_finished()
    });
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    let why = summary.stopped_because.unwrap_or_default();
    assert!(
        why.contains("TOPIC_AUTHORIZATION_FAILED") || why.to_lowercase().contains("authoriz"),
        "{why}"
    );
}
