//! The consumer pool against the real broker: assignment, rebalances, crashes, restarts,
//! handler error policies and at-least-once commits.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kpipe::consumer::{ConsumerPool, OnHandlerError};
use kpipe::ConsumedRecord;

type Seen = Arc<Mutex<Vec<(usize, String, i32, i64)>>>;

/// A pool whose handler notes (thread, value, partition, offset) of every record.
fn recording_pool(config: kpipe::ConsumerConfig, seen: &Seen) -> ConsumerPool {
    let seen = seen.clone();
    ConsumerPool::start(config, move |i| {
        let seen = seen.clone();
        move |r: &ConsumedRecord| -> Result<(), String> {
            let v = String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap();
            seen.lock().unwrap().push((i, v, r.partition, r.offset));
            Ok(())
        }
    })
    .unwrap()
}

fn values(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap().iter().map(|s| s.1.clone()).collect()
}

fn group() -> String {
    common::unique_topic("group")
}

#[test]
fn six_partitions_three_threads_two_each_and_everything_handled() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "pool", 6);
    common::produce(&topic, "r", 6_000);
    let seen: Seen = Arc::default();
    let pool = recording_pool(common::consumer_config(&group(), &topic, 3), &seen);
    common::await_condition(Duration::from_secs(60), "6,000 records handled", || {
        pool.stats().handled >= 6_000
    });
    common::await_condition(
        Duration::from_secs(30),
        "three members with two partitions each",
        || {
            let a = pool.stats().assignments;
            a.len() == 3 && a.values().all(|ps| ps.len() == 2)
        },
    );
    assert!(pool.stats().records_per_sec > 0.0);
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    let got: HashSet<String> = values(&seen).into_iter().collect();
    assert_eq!(got.len(), 6_000);
    assert_eq!(summary.unfinished_members, 0);
    assert_eq!(summary.committed.len(), 6, "{summary:?}");
    assert_eq!(
        summary.committed.values().sum::<i64>(),
        6_000,
        "committed up to the end"
    );
}

#[test]
fn a_second_pool_joins_while_records_flow_and_nothing_is_lost_or_repeated() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "rebalance", 4);
    let group = group();
    let producer = kpipe::Producer::new(common::producer_config(&topic)).unwrap();
    let seen_a: Seen = Arc::default();
    let seen_b: Seen = Arc::default();
    let a = recording_pool(common::consumer_config(&group, &topic, 2), &seen_a);
    // Keep records flowing while pool B joins.
    let sender = {
        let producer = producer.clone();
        thread::spawn(move || {
            for i in 0..8_000 {
                producer
                    .send(kpipe::ProducerRecord::new(format!("f{i}")).key(format!("k{}", i % 64)))
                    .unwrap();
                if i % 200 == 0 {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    common::await_condition(Duration::from_secs(30), "pool A consuming", || {
        a.stats().handled > 500
    });
    let b = recording_pool(common::consumer_config(&group, &topic, 2), &seen_b);
    common::await_condition(Duration::from_secs(60), "pool B given partitions", || {
        !b.stats().assignments.is_empty()
    });
    sender.join().unwrap();
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(summary.delivered, 8_000);
    common::await_condition(Duration::from_secs(60), "all 8,000 handled", || {
        let mut all: HashSet<String> = values(&seen_a).into_iter().collect();
        all.extend(values(&seen_b));
        all.len() == 8_000
    });
    assert!(b.stats().handled > 0, "pool B took over some partitions");
    let total = values(&seen_a).len() + values(&seen_b).len();
    a.close(Duration::from_secs(30)).expect("close");
    b.close(Duration::from_secs(30)).expect("close");
    assert_eq!(
        total, 8_000,
        "no duplicates: offsets are committed before partitions move"
    );
}

#[test]
fn a_member_that_vanishes_without_leaving_loses_its_partitions_after_the_session_timeout() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "crash", 4);
    let group = group();
    common::produce(&topic, "a", 400);
    let seen: Seen = Arc::default();
    let mut crashing = common::consumer_config(&group, &topic, 1);
    crashing.leave_group_on_close = false;
    let doomed = recording_pool(crashing, &seen);
    let survivor = recording_pool(common::consumer_config(&group, &topic, 1), &seen);
    common::await_condition(
        Duration::from_secs(60),
        "two members with two partitions each",
        || {
            doomed
                .stats()
                .assignments
                .get(&0)
                .is_some_and(|p| p.len() == 2)
                && survivor
                    .stats()
                    .assignments
                    .get(&0)
                    .is_some_and(|p| p.len() == 2)
        },
    );
    doomed.close(Duration::from_secs(30)).expect("close"); // no LeaveGroup: like a crash
    common::produce(&topic, "b", 400);
    common::await_condition(
        Duration::from_secs(60),
        "the survivor owning all four partitions",
        || {
            survivor
                .stats()
                .assignments
                .get(&0)
                .is_some_and(|p| p.len() == 4)
        },
    );
    common::await_condition(Duration::from_secs(60), "every record handled", || {
        let got: HashSet<String> = values(&seen).into_iter().collect();
        (0..400).all(|i| got.contains(&format!("a{i}")) && got.contains(&format!("b{i}")))
    });
    survivor.close(Duration::from_secs(30)).expect("close");
}

#[test]
fn a_restarted_pool_resumes_from_committed_offsets() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "restart", 3);
    let group = group();
    common::produce(&topic, "first", 900);
    let seen: Seen = Arc::default();
    let pool = recording_pool(common::consumer_config(&group, &topic, 2), &seen);
    common::await_condition(Duration::from_secs(60), "900 handled", || {
        pool.stats().handled >= 900
    });
    let first = pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(first.committed.values().sum::<i64>(), 900, "{first:?}");

    common::produce(&topic, "second", 300);
    let seen2: Seen = Arc::default();
    let pool = recording_pool(common::consumer_config(&group, &topic, 2), &seen2);
    common::await_condition(Duration::from_secs(60), "300 more handled", || {
        pool.stats().handled >= 300
    });
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    let got = values(&seen2);
    assert_eq!(
        got.len(),
        300,
        "only the new records, none of the committed ones"
    );
    assert!(got.iter().all(|v| v.starts_with("second")), "{got:?}");
    assert_eq!(summary.committed.values().sum::<i64>(), 1_200);
}

fn poisoned_pool(
    topic: &str,
    policy: OnHandlerError,
    fail_times: u32,
) -> (ConsumerPool, Seen, Arc<Mutex<u32>>) {
    let seen: Seen = Arc::default();
    let failures = Arc::new(Mutex::new(0u32));
    let mut config = common::consumer_config(&group(), topic, 1);
    config.on_error = policy;
    let (s, f) = (seen.clone(), failures.clone());
    let pool = ConsumerPool::start(config, move |_| {
        let (s, f) = (s.clone(), f.clone());
        move |r: &ConsumedRecord| -> Result<(), String> {
            let v = String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap();
            if v == "p50" {
                let mut n = f.lock().unwrap();
                if *n < fail_times {
                    *n += 1;
                    return Err(format!("cannot handle {v}"));
                }
            }
            s.lock().unwrap().push((0, v, r.partition, r.offset));
            Ok(())
        }
    })
    .unwrap();
    (pool, seen, failures)
}

#[test]
fn retry_policy_handles_the_record_once_it_succeeds() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "retry", 1);
    common::produce(&topic, "p", 100);
    let policy = OnHandlerError::Retry {
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let (pool, seen, failures) = poisoned_pool(&topic, policy, 3);
    common::await_condition(Duration::from_secs(60), "100 handled", || {
        pool.stats().handled >= 100
    });
    let stats = pool.stats();
    assert_eq!((stats.handler_errors, stats.skipped), (3, 0));
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(*failures.lock().unwrap(), 3);
    let got = values(&seen);
    assert_eq!(got.len(), 100);
    let order: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    assert_eq!(got, order, "the partition waited for the retried record");
    assert_eq!(summary.committed[&(topic.clone(), 0)], 100);
}

#[test]
fn skip_policy_counts_and_commits_past_the_failure() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "skip", 1);
    common::produce(&topic, "p", 100);
    let (pool, seen, _) = poisoned_pool(&topic, OnHandlerError::Skip, u32::MAX);
    common::await_condition(Duration::from_secs(60), "99 handled", || {
        pool.stats().handled >= 99
    });
    common::await_condition(Duration::from_secs(10), "the skip counted", || {
        pool.stats().skipped == 1
    });
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(values(&seen).len(), 99);
    assert_eq!((summary.handled, summary.skipped), (99, 1));
    assert_eq!(summary.committed[&(topic.clone(), 0)], 100);
}

#[test]
fn stop_policy_stops_the_pool_without_committing_past_the_failure() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "stop", 1);
    common::produce(&topic, "p", 100);
    let (pool, seen, _) = poisoned_pool(&topic, OnHandlerError::Stop, u32::MAX);
    common::await_condition(Duration::from_secs(60), "the pool to stop itself", || {
        pool.is_finished()
    });
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(values(&seen).len(), 50);
    assert_eq!(
        summary.committed[&(topic.clone(), 0)],
        50,
        "p50 (offset 50) is not committed"
    );
    let why = summary.stopped_because.unwrap();
    assert!(
        why.contains("cannot handle p50") && why.contains("@50"),
        "{why}"
    );
}

#[test]
fn a_handler_panic_is_a_handler_error_under_the_pool_policy() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "panic", 1);
    common::produce(&topic, "p", 100);
    let seen: Seen = Arc::default();
    let mut config = common::consumer_config(&group(), &topic, 1);
    config.on_error = OnHandlerError::Skip;
    let s = seen.clone();
    let pool = ConsumerPool::start(config, move |_| {
        let s = s.clone();
        move |r: &ConsumedRecord| -> Result<(), String> {
            let v = String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap();
            assert_ne!(v, "p50", "a poison record");
            s.lock().unwrap().push((0, v, r.partition, r.offset));
            Ok(())
        }
    })
    .unwrap();
    common::await_condition(Duration::from_secs(30), "99 handled", || {
        pool.stats().handled >= 99
    });
    let stats = pool.stats();
    assert_eq!(
        (stats.handler_panics, stats.handler_errors, stats.skipped),
        (1, 1, 1),
        "the panic is counted and skipped by the policy"
    );
    assert!(!pool.is_finished(), "the pool goes on");
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(values(&seen).len(), 99);
    assert_eq!(summary.committed[&(topic.clone(), 0)], 100);
}

#[test]
fn a_revoke_during_a_handler_retry_commits_the_records_handled_before_it() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "retry-revoke", 1);
    common::produce(&topic, "p", 100);
    let group = group();
    let tp = (topic.clone(), 0);
    // Every member fails on p50 for good: whoever holds the partition stays there.
    let (seen, failures): (Seen, Arc<Mutex<u32>>) = Default::default();
    let start = |i0: usize| {
        let mut config = common::consumer_config(&group, &topic, 1);
        config.on_error = OnHandlerError::Retry {
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
        };
        // Only the rebalance commits: the interval commit would hide what it leaves out.
        config.commit_interval = Duration::from_secs(3600);
        let (s, f) = (seen.clone(), failures.clone());
        ConsumerPool::start(config, move |i| {
            let (s, f) = (s.clone(), f.clone());
            move |r: &ConsumedRecord| -> Result<(), String> {
                let v = String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap();
                if v == "p50" {
                    *f.lock().unwrap() += 1;
                    return Err("p50 cannot be handled yet".into());
                }
                s.lock().unwrap().push((i0 + i, v, r.partition, r.offset));
                Ok(())
            }
        })
        .unwrap()
    };
    let a = start(0);
    common::await_condition(Duration::from_secs(30), "a retrying p50", || {
        *failures.lock().unwrap() >= 3
    });
    // A second member joins: the partition is revoked from the first in the middle of
    // its retry (eager protocol), and committed as it is given back.
    let b = start(1);
    let committed = |pool: &ConsumerPool| pool.stats().partitions.get(&tp).map(|p| p.committed);
    common::await_condition(
        Duration::from_secs(30),
        "the partition reassigned, with p0..p49 committed",
        || b.stats().rebalances >= 1 && (committed(&a) == Some(50) || committed(&b) == Some(50)),
    );
    let handled: Vec<i64> = seen.lock().unwrap().iter().map(|s| s.3).collect();
    let unique: HashSet<i64> = handled.iter().copied().collect();
    assert_eq!(
        handled.len(),
        unique.len(),
        "records handled before the retry were handled again by the next owner: {handled:?}"
    );
    a.close(Duration::from_secs(30)).expect("close");
    b.close(Duration::from_secs(30)).expect("close");
}

#[test]
fn more_threads_than_partitions_leaves_the_extras_idle() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "idle", 2);
    common::produce(&topic, "r", 500);
    let seen: Seen = Arc::default();
    let pool = recording_pool(common::consumer_config(&group(), &topic, 4), &seen);
    common::await_condition(Duration::from_secs(60), "500 handled", || {
        pool.stats().handled >= 500
    });
    common::await_condition(
        Duration::from_secs(30),
        "2 busy members and 2 idle ones",
        || {
            let a = pool.stats().assignments;
            a.len() == 4 && a.values().filter(|p| p.is_empty()).count() == 2
        },
    );
    let stats = pool.stats();
    assert_eq!(stats.commit_failures, 0, "{stats:?}");
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(summary.stopped_because, None);
    let handlers: HashSet<usize> = seen.lock().unwrap().iter().map(|s| s.0).collect();
    assert!(handlers.len() <= 4);
}

#[test]
fn a_handler_slower_than_max_poll_interval_rejoins_once_and_does_not_loop() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "slow", 1);
    common::produce(&topic, "s", 20);
    let seen: Seen = Arc::default();
    let mut config = common::consumer_config(&group(), &topic, 1);
    config.max_poll_interval = Duration::from_secs(6);
    let slept = Arc::new(Mutex::new(false));
    let (s, once) = (seen.clone(), slept.clone());
    let pool = ConsumerPool::start(config, move |_| {
        let (s, once) = (s.clone(), once.clone());
        move |r: &ConsumedRecord| -> Result<(), String> {
            let mut slept = once.lock().unwrap();
            if !*slept {
                *slept = true;
                thread::sleep(Duration::from_secs(7));
            }
            s.lock()
                .unwrap()
                .push((0, String::new(), r.partition, r.offset));
            Ok(())
        }
    })
    .unwrap();
    common::await_condition(Duration::from_secs(60), "every record handled", || {
        let offsets: HashSet<i64> = seen.lock().unwrap().iter().map(|s| s.3).collect();
        offsets.len() == 20
    });
    common::await_condition(
        Duration::from_secs(30),
        "the member back in the group",
        || {
            pool.stats()
                .assignments
                .get(&0)
                .is_some_and(|p| p.len() == 1)
        },
    );
    let rebalances = pool.stats().rebalances;
    assert!(rebalances >= 2, "it left and rejoined ({rebalances} joins)");
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        assert_eq!(pool.stats().rebalances, rebalances, "no rejoin loop");
        thread::sleep(Duration::from_millis(100));
    }
    pool.close(Duration::from_secs(30)).expect("close");
    let per_offset: BTreeMap<i64, usize> =
        seen.lock()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.3).or_default() += 1;
                m
            });
    let repeated: HashMap<i64, usize> = per_offset.into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        repeated.len() <= 1,
        "only the slow record may be handled twice: {repeated:?}"
    );
}

#[test]
fn bad_configs_and_missing_topics_are_clear_errors() {
    let mut config = common::consumer_config("g", "t", 0);
    config.threads = 0;
    let err =
        ConsumerPool::start_cloned(config, |_: &ConsumedRecord| Ok::<(), String>(())).unwrap_err();
    assert!(err.to_string().contains("threads"), "{err}");
    let missing = common::unique_topic("absent");
    let err = ConsumerPool::start_cloned(
        common::consumer_config("g", &missing, 1),
        |_: &ConsumedRecord| Ok::<(), String>(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn a_pool_dropped_without_close_commits_and_leaves_as_close_would() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "drop", 2);
    let group = group();
    common::produce(&topic, "a", 500);
    let seen: Seen = Arc::default();
    let pool = recording_pool(common::consumer_config(&group, &topic, 1), &seen);
    common::await_condition(Duration::from_secs(60), "500 handled", || {
        pool.stats().handled >= 500
    });
    drop(pool);
    common::produce(&topic, "b", 100);
    let again: Seen = Arc::default();
    let pool = recording_pool(common::consumer_config(&group, &topic, 1), &again);
    common::await_condition(Duration::from_secs(60), "the new records handled", || {
        values(&again).len() >= 100
    });
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    let got = values(&again);
    assert_eq!(got.len(), 100, "nothing handled again: the drop committed");
    assert!(got.iter().all(|v| v.starts_with('b')), "{got:?}");
    assert_eq!(summary.committed.values().sum::<i64>(), 600);
}
