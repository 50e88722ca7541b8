//! The group protocols against the real broker: eager (classic `range`), cooperative
//! (classic `cooperative-sticky`) and KIP-848 (`GroupProtocol::Consumer`). A group is scaled
//! 1 → 3 → 1 members while records flow; each test prints what was lost and repeated and
//! the stop-the-world time (the longest stretch in which no member handled a record) of each
//! rebalance, and asserts what each protocol promises. Static members restart without a
//! rebalance, and a handler slower than the session timeout keeps its partitions.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Protocol;
use kpipe::consumer::{ConsumerPool, MemberState};
use kpipe::ConsumedRecord;

/// Heavy tests run one at a time, so that their timings are their own.
static SERIAL: Mutex<()> = Mutex::new(());

/// One handled record: which member, where, and when.
#[derive(Debug, Clone)]
struct Handled {
    member: usize,
    partition: i32,
    offset: i64,
    at: Instant,
}

type Log = Arc<Mutex<Vec<Handled>>>;

fn member(protocol: Protocol, group: &str, topic: &str, idx: usize, log: &Log) -> ConsumerPool {
    let log = log.clone();
    ConsumerPool::start_cloned(
        protocol.config(group, topic),
        move |r: &ConsumedRecord| -> Result<(), String> {
            log.lock().unwrap().push(Handled {
                member: idx,
                partition: r.partition,
                offset: r.offset,
                at: Instant::now(),
            });
            Ok(())
        },
    )
    .unwrap()
}

fn partitions_of(pool: &ConsumerPool) -> BTreeSet<i32> {
    pool.stats()
        .assignments
        .values()
        .flatten()
        .map(|(_, p)| *p)
        .collect()
}

/// The longest stretch within `[from, to]` in which no record was handled.
fn stop_the_world(log: &[Handled], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = log
        .iter()
        .map(|h| h.at)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.sort();
    let mut edges = vec![from];
    edges.extend(times);
    edges.push(to);
    edges
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Produce `n` keyed records at a steady rate on a thread of its own.
fn steady_producer(topic: &str, n: usize, per_sec: usize) -> thread::JoinHandle<u64> {
    let mut config = common::producer_config(topic);
    config.linger = Duration::from_millis(1);
    let producer = kpipe::Producer::new(config).unwrap();
    thread::spawn(move || {
        let start = Instant::now();
        for i in 0..n {
            producer
                .send(kpipe::ProducerRecord::new(format!("v{i}")).key(format!("k{}", i % 600)))
                .unwrap();
            // In steps of 2 ms, so that gaps in handling longer than that are the consumers'.
            if i % 10 == 9 {
                let due = start + Duration::from_secs_f64((i + 1) as f64 / per_sec as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
        }
        producer.close(Duration::from_secs(60)).unwrap().delivered
    })
}

fn scale_one_three_one(protocol: Protocol) {
    let _serial = common::serial(&SERIAL);
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "scale", 6);
    let group = common::unique_topic("scale-g");
    let log: Log = Arc::default();
    let n = 100_000;
    let a = member(protocol, &group, &topic, 0, &log);
    common::await_condition(Duration::from_secs(60), "member A owning all six", || {
        partitions_of(&a).len() == 6
    });
    let producer = steady_producer(&topic, n, 5_000);
    common::await_condition(Duration::from_secs(60), "A handling records", || {
        log.lock().unwrap().len() > 2_000
    });

    // 1 → 3
    let up = Instant::now();
    let b = member(protocol, &group, &topic, 1, &log);
    let c = member(protocol, &group, &topic, 2, &log);
    common::await_condition(Duration::from_secs(60), "two partitions each", || {
        [&a, &b, &c].iter().all(|m| partitions_of(m).len() == 2)
    });
    let up_settled = Instant::now();
    let kept = partitions_of(&a);
    common::await_condition(Duration::from_secs(60), "B and C handling records", || {
        let log = log.lock().unwrap();
        [1, 2].iter().all(|m| log.iter().any(|h| h.member == *m))
    });
    thread::sleep(Duration::from_secs(1)); // the three of them at work for a while

    // 3 → 1
    let down = Instant::now();
    let b_summary = b.close(Duration::from_secs(30)).expect("close");
    let c_summary = c.close(Duration::from_secs(30)).expect("close");
    common::await_condition(Duration::from_secs(60), "A owning all six again", || {
        partitions_of(&a).len() == 6
    });
    let down_settled = Instant::now();
    let delivered = producer.join().unwrap();
    assert_eq!(delivered, n as u64);
    common::await_condition(Duration::from_secs(120), "every record handled", || {
        let log = log.lock().unwrap();
        log.iter()
            .map(|h| (h.partition, h.offset))
            .collect::<HashSet<_>>()
            .len()
            >= n
    });
    let a_stats = a.stats();
    let a_summary = a.close(Duration::from_secs(30)).expect("close");

    let log = log.lock().unwrap().clone();
    let mut copies: HashMap<(i32, i64), usize> = HashMap::new();
    for h in &log {
        *copies.entry((h.partition, h.offset)).or_default() += 1;
    }
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    let lost = n - copies.len();
    let stw_up = stop_the_world(&log, up, up_settled + Duration::from_millis(500));
    let stw_down = stop_the_world(&log, down, down_settled + Duration::from_millis(500));
    println!(
        "{protocol:?} 1→3→1 over {n} records: lost {lost}, duplicates {duplicates}; \
         stop-the-world 1→3 {stw_up:?} (settled in {:?}), 3→1 {stw_down:?} (settled in {:?}); \
         A rebalances {}, commit failures {}",
        up_settled - up,
        down_settled - down,
        a_stats.rebalances,
        a_stats.commit_failures,
    );
    assert_eq!(lost, 0, "every record handled");
    assert_eq!(
        duplicates, 0,
        "graceful moves commit before giving partitions up, so nothing is handled twice"
    );
    for s in [&a_summary, &b_summary, &c_summary] {
        assert_eq!(s.stopped_because, None, "{s:?}");
        assert_eq!(s.unfinished_members, 0, "{s:?}");
    }
    if protocol.incremental() {
        // A kept two partitions and handed them out all through the rebalance: after it
        // gave the other four up, and before B and C had theirs.
        let gave_up = log
            .iter()
            .filter(|h| {
                h.member == 0 && h.at > up && h.at < up_settled && !kept.contains(&h.partition)
            })
            .map(|h| h.at)
            .max()
            .expect("A handled the moved partitions before moving them");
        let newcomers = log
            .iter()
            .filter(|h| h.member != 0)
            .map(|h| h.at)
            .min()
            .expect("B or C handled records");
        let kept_flowing = log.iter().any(|h| {
            h.member == 0 && kept.contains(&h.partition) && h.at > gave_up && h.at < newcomers
        });
        println!(
            "{protocol:?}: A gave up its last moved partition {:?} after B and C started, and they began {:?} after that",
            gave_up - up,
            newcomers.saturating_duration_since(gave_up)
        );
        assert!(
            kept_flowing,
            "A handled its kept partitions {kept:?} while the others moved"
        );
    }
}

#[test]
fn eager_group_scales_one_three_one_losing_nothing() {
    scale_one_three_one(Protocol::Eager);
}

#[test]
fn cooperative_group_scales_one_three_one_keeping_unmoved_partitions_flowing() {
    scale_one_three_one(Protocol::Cooperative);
}

#[test]
fn consumer_protocol_group_scales_one_three_one_keeping_unmoved_partitions_flowing() {
    scale_one_three_one(Protocol::Consumer);
}

fn static_member_restart(protocol: Protocol) {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "static", 4);
    let group = common::unique_topic("static-g");
    common::produce(&topic, "a", 2_000);
    let log: Log = Arc::default();
    let start = |instance: &str, idx: usize| {
        let mut c = protocol.config(&group, &topic);
        c.group_instance_id = Some(instance.to_owned());
        let log = log.clone();
        ConsumerPool::start_cloned(c, move |r: &ConsumedRecord| -> Result<(), String> {
            log.lock().unwrap().push(Handled {
                member: idx,
                partition: r.partition,
                offset: r.offset,
                at: Instant::now(),
            });
            Ok(())
        })
        .unwrap()
    };
    let a = start("host-a", 0);
    let b = start("host-b", 1);
    common::await_condition(
        Duration::from_secs(60),
        "two partitions each, all handled",
        || {
            partitions_of(&a).len() == 2
                && partitions_of(&b).len() == 2
                && log.lock().unwrap().len() >= 2_000
        },
    );
    let a_parts = partitions_of(&a);
    let b_status = b.stats().members[&0].clone();
    let b_rebalances = b.stats().rebalances;
    a.close(Duration::from_secs(30)).expect("close");
    common::produce(&topic, "b", 2_000);
    let a = start("host-a", 2);
    common::await_condition(
        Duration::from_secs(60),
        "the restarted A owning partitions",
        || !partitions_of(&a).is_empty(),
    );
    assert_eq!(partitions_of(&a), a_parts, "the same partitions back");
    common::await_condition(Duration::from_secs(60), "every record handled", || {
        let log = log.lock().unwrap();
        log.iter()
            .map(|h| (h.partition, h.offset))
            .collect::<HashSet<_>>()
            .len()
            >= 4_000
    });
    let b_after = b.stats();
    a.close(Duration::from_secs(30)).expect("close");
    b.close(Duration::from_secs(30)).expect("close");
    println!(
        "{protocol:?} static restart: B {b_status:?} before, {:?} after; B rebalances {b_rebalances} → {}",
        b_after.members[&0], b_after.rebalances
    );
    assert_eq!(b_after.rebalances, b_rebalances, "B saw no rebalance");
    assert_eq!(
        b_after.members[&0].generation, b_status.generation,
        "B's generation or epoch did not move"
    );
    let log = log.lock().unwrap();
    let mut copies: HashMap<(i32, i64), usize> = HashMap::new();
    for h in log.iter() {
        *copies.entry((h.partition, h.offset)).or_default() += 1;
    }
    assert_eq!(copies.len(), 4_000, "nothing skipped");
    assert!(copies.values().all(|&c| c == 1), "nothing handled twice");
    assert!(
        log.iter()
            .all(|h| h.member != 2 || a_parts.contains(&h.partition)),
        "the restarted A handled only its own partitions"
    );
}

#[test]
fn a_static_member_restarted_gets_its_partitions_back_without_a_rebalance_classic() {
    static_member_restart(Protocol::Cooperative);
}

#[test]
fn a_static_member_restarted_gets_its_partitions_back_without_a_rebalance_consumer_protocol() {
    static_member_restart(Protocol::Consumer);
}

fn slow_handler(protocol: Protocol) {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "slow-hb", 2);
    let group = common::unique_topic("slow-hb-g");
    // Twice the session timeout: 6 s for the classic tests; the consumer protocol's is the
    // broker's group.consumer.session.timeout.ms, 6 s on the test brokers too.
    let session = Duration::from_secs(6);
    let nap = session * 2;
    // Armed once the group is settled: the next record the slow member gets takes `nap`.
    let armed = Arc::new(AtomicBool::new(false));
    let napped = Arc::new(Mutex::new(None::<Duration>));
    let mut c = protocol.config(&group, &topic);
    c.session_timeout = session;
    c.max_poll_interval = Duration::from_secs(60);
    let (arm, took) = (armed.clone(), napped.clone());
    let slow = ConsumerPool::start_cloned(c, move |_: &ConsumedRecord| -> Result<(), String> {
        if arm.swap(false, Ordering::SeqCst) {
            let started = Instant::now();
            thread::sleep(nap);
            *took.lock().unwrap() = Some(started.elapsed());
        }
        Ok(())
    })
    .unwrap();
    let other_log: Log = Arc::default();
    let other = member(protocol, &group, &topic, 1, &other_log);
    common::await_condition(Duration::from_secs(60), "one partition each", || {
        partitions_of(&slow).len() == 1 && partitions_of(&other).len() == 1
    });
    let before = (slow.stats(), other.stats());
    armed.store(true, Ordering::SeqCst);
    common::produce(&topic, "s", 200); // both partitions: the slow member gets some
    common::await_condition(nap + Duration::from_secs(30), "the slow call done", || {
        napped.lock().unwrap().is_some()
    });
    let slept_for = napped.lock().unwrap().unwrap();
    common::await_condition(
        Duration::from_secs(30),
        "the other's records handled",
        || !other_log.lock().unwrap().is_empty(),
    );
    let after = (slow.stats(), other.stats());
    slow.close(Duration::from_secs(30)).expect("close");
    other.close(Duration::from_secs(30)).expect("close");
    println!(
        "{protocol:?}: one handler call of {slept_for:?} (session timeout {session:?}); rebalances {} → {}, {} → {}; slow member {:?}",
        before.0.rebalances, after.0.rebalances, before.1.rebalances, after.1.rebalances, after.0.members[&0]
    );
    assert!(
        slept_for > session,
        "the call outlasted the session timeout"
    );
    assert_eq!(
        after.0.rebalances, before.0.rebalances,
        "no rebalance for the slow member"
    );
    assert_eq!(
        after.1.rebalances, before.1.rebalances,
        "no rebalance for the other"
    );
    assert_eq!(after.0.members[&0].state, MemberState::Stable);
    assert_eq!(
        after.0.members[&0].generation, before.0.members[&0].generation,
        "same generation or epoch"
    );
    assert_eq!(
        after.0.assignments, before.0.assignments,
        "the slow member kept its partition"
    );
}

#[test]
fn a_handler_twice_as_slow_as_the_session_timeout_keeps_its_partitions_classic() {
    slow_handler(Protocol::Eager);
}

#[test]
fn a_handler_twice_as_slow_as_the_session_timeout_keeps_its_partitions_consumer_protocol() {
    slow_handler(Protocol::Consumer);
}
