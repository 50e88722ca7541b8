//! Share groups (KIP-932) on the real broker.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kpipe::consumer::{Acknowledge, GroupProtocol, ShareConsumer};

fn share_config(group: &str, topic: &str) -> kpipe::ConsumerConfig {
    let mut c = common::consumer_config(group, topic, 1);
    c.group_protocol = GroupProtocol::Share;
    c
}

#[test]
fn smoke_a_share_consumer_reads_what_is_produced_after_it_joined() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share-smoke", 2);
    let group = common::unique_topic("share-group");
    let mut consumer = ShareConsumer::new(share_config(&group, &topic)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < deadline, "no assignment");
        consumer.poll(Duration::from_millis(100)).unwrap();
    }
    common::produce(&topic, "v", 200);
    let mut seen = BTreeSet::new();
    while seen.len() < 200 {
        assert!(Instant::now() < deadline, "only {} of 200", seen.len());
        for r in consumer.poll(Duration::from_millis(500)).unwrap() {
            assert_eq!(r.delivery_count, Some(1));
            if r.offset % 10 == 0 {
                consumer.acknowledge(&r, Acknowledge::Accept).unwrap();
            }
            seen.insert((r.partition, r.offset));
        }
    }
    let outcomes = consumer.commit().unwrap();
    eprintln!("outcomes {outcomes:?}");
    eprintln!("stats {:?}", consumer.stats());
    consumer.close(Duration::from_secs(10)).unwrap();
}
