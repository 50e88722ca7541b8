//! The cluster's shape changing under running clients: partitions added to a topic, a topic
//! deleted and created again. The producer and the consumer follow both.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Protocol;
use kpipe::client::NewTopic;
use kpipe::consumer::OffsetReset;
use kpipe::producer::{murmur2, DeliveryError};
use kpipe::{ConsumedRecord, Consumer, Producer, ProducerRecord};

/// A key whose Java-compatible partition is `p` of `n` partitions.
fn key_for(p: i32, n: i32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| (murmur2(k.as_bytes()) & 0x7fff_ffff) % n == p)
        .expect("some key hashes there")
}

/// Poll until every value of `expected` came (or panic after 40 s); what came.
fn poll_until_all(
    consumer: &mut Consumer,
    expected: &BTreeSet<String>,
    what: &str,
) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    common::await_condition(Duration::from_secs(40), what, || {
        got.extend(
            consumer
                .poll(Duration::from_millis(200))
                .unwrap()
                .iter()
                .map(value),
        );
        got.is_superset(expected)
    });
    got
}

fn value(r: &ConsumedRecord) -> String {
    String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap()
}

/// Delete `topic` and create it again with `partitions`, once the broker lets it (a topic
/// being deleted cannot be created for a moment).
fn recreate(cluster: &mut kpipe::client::Cluster, topic: &str, partitions: i32) {
    cluster
        .delete_topic(topic, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("deleting {topic}: {e}"));
    let new = NewTopic::new(topic, partitions, 1);
    common::await_condition(
        Duration::from_secs(30),
        "the topic to be created again",
        || cluster.create_topic(&new, Duration::from_secs(30)).is_ok(),
    );
}

#[test]
fn the_producer_writes_keyed_records_to_partitions_added_while_it_runs() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "grow-producer", 2);
    let mut config = common::producer_config(&topic);
    config.client.metadata_max_age = Duration::from_millis(500);
    let producer = Producer::new(config).unwrap();
    let key = key_for(3, 4);
    let send = || {
        producer
            .send_and_wait(ProducerRecord::new("v").key(key.clone()))
            .unwrap()
            .partition
    };
    assert_eq!(send(), 1, "with two partitions");
    cluster
        .create_partitions(&topic, 4, Duration::from_secs(30))
        .unwrap();
    // As the Java producer does once its metadata is refreshed (metadata_max_age).
    common::await_condition(
        Duration::from_secs(30),
        "the key to move to partition 3 of 4",
        || send() == 3,
    );
    producer.close(Duration::from_secs(30)).unwrap();
}

#[test]
fn the_producer_fails_what_was_bound_for_a_deleted_topic_and_writes_to_the_new_one() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "recreate-producer", 2);
    let producer = Producer::new(common::producer_config(&topic)).unwrap();
    producer.send_and_wait(ProducerRecord::new("old")).unwrap();
    let old_id = cluster.topic(&topic).unwrap().id;
    recreate(&mut cluster, &topic, 3);
    let new_id = cluster.topic(&topic).unwrap().id;
    assert_ne!(old_id, new_id);

    // Each record ends well within its delivery timeout (60 s): failed, saying why, or
    // written to the new topic, and once one is written, so is every later one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    let mut delivered = BTreeSet::new();
    for i in 0.. {
        assert!(Instant::now() < deadline, "no record reached the new topic");
        let receipt = producer
            .send_tracked(ProducerRecord::new(format!("new-{i}")))
            .unwrap();
        match receipt.wait_timeout(Duration::from_secs(20)) {
            Ok(Ok(d)) => {
                delivered.insert(format!("new-{i}"));
                if delivered.len() == 20 {
                    break;
                }
                let _ = d;
            }
            Ok(Err(e @ DeliveryError::TopicRecreated { .. })) => {
                assert!(delivered.is_empty(), "failed after one was written: {e}");
                let text = e.to_string();
                assert!(text.contains(&topic), "{text}");
                assert!(text.contains(&old_id.to_string()), "{text}");
                assert!(text.contains(&new_id.to_string()), "{text}");
                failed += 1;
            }
            Ok(Err(e)) => panic!("record {i}: {e}"),
            Err(e) => panic!("record {i} had no outcome in 20 s: {e:?}"),
        }
    }
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(summary.failed, failed, "{summary:?}");
    let written: BTreeSet<String> = common::fetch_all(&mut cluster, &topic)
        .iter()
        .map(|(_, r)| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(written, delivered, "the new topic holds what was delivered");
}

/// A group (default offset reset: latest) is told of partitions added while it runs, and
/// reads them from their start: what was written to them before the group took them up
/// is not skipped.
fn group_reads_added_partitions_from_their_start(protocol: Protocol) {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "grow-group", 1);
    let group = common::unique_topic("grow-g");
    let mut config = protocol.config(&group, &topic);
    config.offset_reset = OffsetReset::Latest;
    config.client.metadata_max_age = Duration::from_secs(1);
    let mut consumer = Consumer::new(config).unwrap();
    common::await_condition(Duration::from_secs(30), "the assignment", || {
        consumer.poll(Duration::from_millis(100)).unwrap();
        consumer.position(&topic, 0).is_some()
    });
    cluster
        .create_partitions(&topic, 3, Duration::from_secs(30))
        .unwrap();
    // Written at once, before the group can know of the new partitions.
    let mut config = common::producer_config(&topic);
    config.client.metadata_max_age = Duration::from_millis(100);
    let producer = Producer::new(config).unwrap();
    let mut expected = BTreeSet::new();
    for p in [1, 2] {
        for i in 0..5 {
            let v = format!("p{p}-{i}");
            common::await_condition(Duration::from_secs(10), "the producer to see it", || {
                producer
                    .send_and_wait(ProducerRecord::new(v.clone()).partition(p))
                    .is_ok()
            });
            expected.insert(v);
        }
    }
    producer.close(Duration::from_secs(30)).unwrap();
    poll_until_all(
        &mut consumer,
        &expected,
        "every record written to the new partitions",
    );
    let mut assigned = consumer.assignment();
    assigned.sort();
    assert_eq!(assigned.len(), 3, "{assigned:?}");
    consumer.close(Duration::from_secs(30)).unwrap();
}

#[test]
fn an_eager_group_reads_added_partitions_from_their_start() {
    group_reads_added_partitions_from_their_start(Protocol::Eager);
}

#[test]
fn a_cooperative_group_reads_added_partitions_from_their_start() {
    group_reads_added_partitions_from_their_start(Protocol::Cooperative);
}

#[test]
fn a_kip848_group_reads_added_partitions_from_their_start() {
    group_reads_added_partitions_from_their_start(Protocol::Consumer);
}

/// A member reading a topic that is deleted and created again reads the new topic from its
/// start (its positions were the old topic's), and neither stalls nor skips.
#[test]
fn a_consumer_reads_a_recreated_topic_from_its_start() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "recreate-group", 1);
    let group = common::unique_topic("recreate-g");
    common::produce(&topic, "old-", 5);
    let mut config = Protocol::Eager.config(&group, &topic);
    config.offset_reset = OffsetReset::Earliest;
    let mut consumer = Consumer::new(config).unwrap();
    let mut got = BTreeSet::new();
    common::await_condition(Duration::from_secs(30), "the old records", || {
        got.extend(
            consumer
                .poll(Duration::from_millis(100))
                .unwrap()
                .iter()
                .map(value),
        );
        got.len() == 5
    });
    consumer.commit().unwrap();
    recreate(&mut cluster, &topic, 1);
    // More records than the old position (5): a member fetching the new topic from its old
    // position would skip the first five.
    common::produce(&topic, "new-", 8);
    let expected: BTreeSet<String> = (0..8).map(|i| format!("new-{i}")).collect();
    let got = poll_until_all(&mut consumer, &expected, "every record of the new topic");
    assert!(got.iter().all(|v| v.starts_with("new-")), "{got:?}");
    consumer.commit().unwrap();
    assert_eq!(
        consumer.committed(&topic, 0),
        Some(8),
        "the new topic's offsets"
    );
    consumer.close(Duration::from_secs(30)).unwrap();
}
