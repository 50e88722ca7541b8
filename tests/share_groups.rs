//! Share groups (KIP-932) on the real broker.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kpipe::consumer::{Acknowledge, ShareConsumer};

fn share_config(group: &str, topic: &str) -> kpipe::ConsumerConfig {
    common::share::config(&common::brokers(), group, topic)
}

#[test]
fn a_share_consumer_reads_what_is_produced_after_it_joined_once_each() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share-smoke", 2);
    let group = common::unique_topic("share-group");
    let mut consumer = joined(&group, &topic);
    common::produce(&topic, "v", 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = BTreeSet::new();
    while seen.len() < 200 {
        assert!(Instant::now() < deadline, "only {} of 200", seen.len());
        for r in consumer.poll(Duration::from_millis(500)).unwrap() {
            assert_eq!(r.delivery_count, Some(1));
            if r.offset % 10 == 0 {
                consumer.acknowledge(&r, Acknowledge::Accept).unwrap();
            }
            assert!(seen.insert((r.partition, r.offset)), "{r:?} twice");
        }
    }
    // commit sends the explicit accepts of the last poll's records and reports them, with
    // the implicit accepts that rode on the fetch of that poll.
    let outcomes = consumer.commit().unwrap();
    assert!(!outcomes.is_empty());
    for o in &outcomes {
        assert_eq!(o.error, None, "{o:?}");
        assert!(
            o.acknowledged
                .iter()
                .all(|&(_, kind)| kind == Acknowledge::Accept),
            "{o:?}"
        );
    }
    // The last poll's records are handed out, and finished only when the caller moves on:
    // here, at close.
    let stats = consumer.stats();
    assert_eq!(stats.handed_out, 200);
    assert!(
        stats.handled < 200,
        "{} finished before close",
        stats.handled
    );
    let summary = consumer.close(Duration::from_secs(10)).unwrap();
    assert_eq!((summary.handled, summary.handed_out), (200, 200));
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
    let summary = pool.close(Duration::from_secs(20)).expect("close");
    let counts = by_worker.lock().unwrap().clone();
    eprintln!("per worker {counts:?} {summary:?}");
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 2000);
}

/// Join `group` and wait for an assignment (a new share group starts at the latest record,
/// so what is produced after this is read).
fn joined(group: &str, topic: &str) -> ShareConsumer {
    let mut consumer = ShareConsumer::new(share_config(group, topic)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < deadline, "no assignment within 30 s");
        assert!(consumer
            .poll(Duration::from_millis(100))
            .unwrap()
            .is_empty());
    }
    consumer
}

#[test]
fn a_released_record_comes_back_with_delivery_count_two_and_a_rejected_one_never() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share-ack", 1);
    let group = common::unique_topic("share-ack-group");
    let mut consumer = joined(&group, &topic);
    common::produce(&topic, "v", 10);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = Vec::new();
    while first.len() < 10 {
        assert!(Instant::now() < deadline, "{} of 10", first.len());
        first.extend(consumer.poll(Duration::from_millis(500)).unwrap());
    }
    for r in &first {
        let kind = match r.offset {
            3 => Acknowledge::Release,
            5 => Acknowledge::Reject,
            _ => Acknowledge::Accept,
        };
        consumer.acknowledge(r, kind).unwrap();
    }
    let outcomes = consumer.commit().unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    let acked: usize = outcomes.iter().map(|o| o.acknowledged.len()).sum();
    assert_eq!(acked, 10);
    let err = consumer
        .acknowledge(&first[0], Acknowledge::Accept)
        .unwrap_err();
    assert!(err.to_string().contains("not held"), "{err}");
    // Offset 3 comes back, its second delivery; nothing else does.
    let again = loop {
        assert!(
            Instant::now() < deadline,
            "the released record did not come back"
        );
        let got = consumer.poll(Duration::from_millis(500)).unwrap();
        if !got.is_empty() {
            break got;
        }
    };
    let back: Vec<(i64, Option<u16>)> =
        again.iter().map(|r| (r.offset, r.delivery_count)).collect();
    assert_eq!(back, [(3, Some(2))]);
    let stats = consumer.stats();
    assert_eq!(
        (stats.released, stats.rejected, stats.acknowledged),
        (1, 1, 8)
    );
    assert_eq!(stats.redelivered, 1);
    consumer.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_record_that_always_fails_is_archived_after_the_delivery_limit_and_the_rest_flow() {
    let _ = env_logger::builder().is_test(true).try_init();
    use std::sync::{Arc, Mutex};
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share-poison", 1);
    let group = common::unique_topic("share-poison-group");
    let mut config = share_config(&group, &topic);
    config.threads = 2;
    let poison_deliveries = Arc::new(Mutex::new(Vec::new()));
    let seen = poison_deliveries.clone();
    let pool = kpipe::consumer::ConsumerPool::start(config, move |_| {
        let seen = seen.clone();
        move |r: &kpipe::ConsumedRecord| -> Result<(), String> {
            if r.value.as_deref() == Some(&b"v7"[..]) {
                seen.lock().unwrap().push(r.delivery_count);
                return Err("poison".into());
            }
            Ok(())
        }
    })
    .unwrap();
    common::await_condition(Duration::from_secs(30), "assigned", || {
        pool.stats().assignments.values().all(|a| !a.is_empty())
    });
    common::produce(&topic, "v", 100);
    // The broker's group.share.delivery.count.limit is 5.
    common::await_condition(
        Duration::from_secs(60),
        "99 handled, poison 5 times",
        || {
            let s = pool.stats();
            s.handled == 99 && s.handler_errors == 5
        },
    );
    let summary = pool.close(Duration::from_secs(20)).expect("close");
    assert_eq!(summary.handled, 99);
    let deliveries = poison_deliveries.lock().unwrap().clone();
    assert_eq!(
        deliveries,
        [1, 2, 3, 4, 5].map(Some),
        "delivered again until the limit"
    );
    assert_eq!(
        (summary.acknowledged, summary.released),
        (99, 5),
        "{summary:?}"
    );
    assert_eq!(summary.redelivered, 4);
}

/// A pool of one member whose handler takes `work` per record, on `records` records
/// fetched at once, under a 2 s acquisition lock; returns its summary once every record
/// was accepted.
fn slow_pool(
    name: &str,
    configs: &[(&str, &str)],
    records: usize,
    work: impl Fn(&kpipe::ConsumedRecord) -> Duration + Send + Clone + 'static,
) -> kpipe::consumer::ConsumerSummary {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, name, 1);
    let group = common::unique_topic(&format!("{name}-group"));
    let mut all = vec![("share.record.lock.duration.ms", "2000")];
    all.extend_from_slice(configs);
    common::share::group_configs(&mut cluster, &group, &all);
    let mut config = share_config(&group, &topic);
    config.max_poll_records = records;
    let pool =
        kpipe::consumer::ConsumerPool::start_cloned(config, move |r: &kpipe::ConsumedRecord| {
            std::thread::sleep(work(r));
            Ok::<(), String>(())
        })
        .unwrap();
    common::await_condition(Duration::from_secs(30), "assigned", || {
        pool.stats().assignments.values().all(|a| !a.is_empty())
    });
    common::produce(&topic, "v", records);
    common::await_condition(Duration::from_secs(60), "every record accepted", || {
        pool.stats().acknowledged >= records as u64
    });
    pool.close(Duration::from_secs(20)).expect("close")
}

#[test]
fn a_handler_slower_than_the_lock_keeps_its_records_by_renewing_them() {
    // Six records at 700 ms each: 4.2 s of work on records locked for 2 s.
    let summary = slow_pool("share-renew", &[], 6, |_| Duration::from_millis(700));
    assert_eq!(summary.handled, 6, "{summary:?}");
    assert_eq!(
        (summary.redelivered, summary.acknowledge_failures),
        (0, 0),
        "renewed, not delivered again: {summary:?}"
    );
}

#[test]
fn where_the_lock_cannot_be_renewed_the_redelivery_is_counted_and_reported() {
    // The group refuses renewals; the one record's first handling outlasts its lock.
    let summary = slow_pool(
        "share-norenew",
        &[("share.renew.acknowledge.enable", "false")],
        1,
        |r| {
            if r.delivery_count == Some(1) {
                Duration::from_millis(3500)
            } else {
                Duration::ZERO
            }
        },
    );
    assert_eq!(summary.handled, 2, "handled twice: {summary:?}");
    assert_eq!(summary.redelivered, 1, "{summary:?}");
    assert_eq!(summary.acknowledge_failures, 1, "{summary:?}");
    assert_eq!(summary.acknowledged, 1, "{summary:?}");
}
