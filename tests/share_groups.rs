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

#[test]
fn eight_pool_workers_on_two_partitions_all_handle_records() {
    let _ = env_logger::builder().is_test(true).try_init();
    use std::sync::{Arc, Mutex};
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share-pool", 2);
    let group = common::unique_topic("share-pool-group");
    let mut config = share_config(&group, &topic);
    config.threads = 8;
    // Small fetches, so that records spread over the workers rather than going 500 at a
    // time to the first ones to ask.
    config.max_poll_records = 20;
    config.share_acquire_mode = kpipe::consumer::ShareAcquireMode::RecordLimit;
    let by_worker = Arc::new(Mutex::new(vec![0u64; 8]));
    let counts = by_worker.clone();
    let pool = kpipe::consumer::ConsumerPool::start(config, move |i| {
        let counts = counts.clone();
        move |_r: &kpipe::ConsumedRecord| -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(2));
            counts.lock().unwrap()[i] += 1;
            Ok(())
        }
    })
    .unwrap();
    common::await_condition(Duration::from_secs(30), "every worker assigned", || {
        let s = pool.stats();
        s.assignments.len() == 8 && s.assignments.values().all(|a| !a.is_empty())
    });
    common::produce(&topic, "v", 2000);
    common::await_condition(Duration::from_secs(60), "2000 handled", || {
        pool.stats().handled >= 2000
    });
    let summary = pool.close(Duration::from_secs(20));
    let counts = by_worker.lock().unwrap().clone();
    eprintln!("per worker {counts:?} {summary:?}");
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 2000);
}
