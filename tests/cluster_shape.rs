//! The cluster's shape changing under running clients: partitions added to a topic, a topic
//! deleted and created again. The producer and the consumer follow both.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kpipe::client::NewTopic;
use kpipe::producer::{murmur2, DeliveryError};
use kpipe::{Producer, ProducerRecord};

/// A key whose Java-compatible partition is `p` of `n` partitions.
fn key_for(p: i32, n: i32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| (murmur2(k.as_bytes()) & 0x7fff_ffff) % n == p)
        .expect("some key hashes there")
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
