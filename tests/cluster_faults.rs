//! Faults of a real three-node cluster (`./scripts/kafka up --nodes 3`): leaders killed and
//! paused, brokers down, restarts. Each test writes a fresh topic (RF 3, min ISR 2 unless it
//! says otherwise), reads every partition back with the raw fetch path (not the code under
//! test), and compares by event identity (key + sequence) with what was acknowledged:
//! **lost** (acked, not in the topic), **duplicates**, **order violations per key**, printed
//! by every test.
//!
//! The tests act on shared nodes, so they run one at a time (`SERIAL`), and each starts by
//! bringing every node back up.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nodes::{kafka, Session};
use kpipe::client::{ClientConfig, Cluster, NewTopic};
use kpipe::consumer::{GroupProtocol, MemberState};
use kpipe::producer::DeliveryResult;
use kpipe::{ConsumedRecord, ConsumerPool, Producer, ProducerConfig, ProducerRecord};

static SERIAL: Mutex<()> = Mutex::new(());

fn brokers() -> String {
    std::env::var("KPIPE_CLUSTER_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096".to_owned())
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new([brokers()]);
    c.connection.client_id = "kpipe-cluster-tests".into();
    c.connection.connect_timeout = Duration::from_secs(5);
    c.connection.request_timeout = Duration::from_secs(10);
    c
}

fn connect() -> Cluster {
    Cluster::connect(config()).unwrap_or_else(|e| {
        panic!(
            "the fault tests need the three-node cluster at {}: {e}\n\
             start it with ./scripts/kafka up --nodes 3 (./scripts/test does this for you)",
            brokers()
        )
    })
}

/// A fresh topic with `partitions`, replication `rf` and min ISR `min_isr`, all led.
fn topic(cluster: &mut Cluster, prefix: &str, partitions: i32, rf: i16, min_isr: u8) -> String {
    let name = common::unique_topic(prefix);
    let t = NewTopic::new(&name, partitions, rf).config("min.insync.replicas", min_isr.to_string());
    cluster
        .create_topic(&t, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    name
}

fn leader_of(cluster: &mut Cluster, topic: &str, partition: i32) -> i32 {
    cluster.invalidate(Some(topic));
    cluster.leader(topic, partition).unwrap()
}

/// Event identity: key index and per-key sequence, written as `k{key}` / `{key}:{seq}`.
type Id = (u32, u64);

fn record(key: u32, seq: u64) -> ProducerRecord {
    ProducerRecord::new(format!("{key}:{seq}")).key(format!("k{key}"))
}

fn parse(value: &[u8]) -> Option<Id> {
    let text = std::str::from_utf8(value).ok()?;
    let (k, s) = text.split_once(':')?;
    Some((k.parse().ok()?, s.parse().ok()?))
}

#[derive(Debug, Default)]
struct Counts {
    acked: usize,
    read: usize,
    lost: usize,
    duplicates: usize,
    order_violations: usize,
}

/// Read the whole topic back (raw fetches, per partition in offset order) and compare.
/// Right after a fault a broker may still answer with an old view (a resumed node that
/// believes it leads, with its old end offsets), so a read that misses acknowledged records
/// is repeated with fresh metadata for a while before the counts stand.
fn verify(topic: &str, acked: &HashSet<Id>) -> Counts {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reads = 1;
    loop {
        let c = read_back(topic, acked);
        if c.lost == 0 || Instant::now() >= deadline {
            if reads > 1 {
                println!("(read back {reads} times before the counts settled)");
            }
            return c;
        }
        reads += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn read_back(topic: &str, acked: &HashSet<Id>) -> Counts {
    let mut cluster = connect();
    let records = common::fetch_all(&mut cluster, topic);
    let mut seen: HashMap<Id, usize> = HashMap::new();
    let mut highest: HashMap<u32, u64> = HashMap::new();
    let mut counts = Counts {
        acked: acked.len(),
        read: records.len(),
        ..Counts::default()
    };
    // fetch_all returns each partition's records in offset order.
    for (_, r) in &records {
        let Some(id) = r.value.as_deref().and_then(parse) else {
            continue;
        };
        let copies = seen.entry(id).or_insert(0);
        *copies += 1;
        if *copies > 1 {
            counts.duplicates += 1;
            continue; // a retried batch written twice: a duplicate, not a reordering
        }
        let high = highest.entry(id.0).or_insert(id.1);
        if id.1 < *high {
            counts.order_violations += 1;
        }
        *high = (*high).max(id.1);
    }
    counts.lost = acked.iter().filter(|id| !seen.contains_key(id)).count();
    counts
}

fn report(test: &str, c: &Counts) {
    println!(
        "{test}: acked {} read {} | lost {} duplicates {} order violations {}",
        c.acked, c.read, c.lost, c.duplicates, c.order_violations
    );
}

/// The producer is idempotent (the default), with five batches in flight per partition: a
/// producer that lives through a fault has written every record once and in order.
fn assert_exactly_once(test: &str, c: &Counts, s: &kpipe::producer::Summary) {
    println!(
        "{test}: producer {:?}, epoch bumps {}, resent batches {}",
        s.producer, s.epoch_bumps, s.resent_batches
    );
    assert!(s.producer.is_some(), "{test}: not idempotent: {s:?}");
    assert_eq!(c.duplicates, 0, "{test}: duplicates in the topic");
    assert_eq!(c.order_violations, 0, "{test}: order violations");
}

/// A producer fed by one thread at `rate` records/s over `keys` keys, each key's sequence
/// in order, until `stop`; acks collected per (partition, second since start).
struct Feed {
    acked: Arc<Mutex<HashSet<Id>>>,
    /// Acks per partition per whole second since the feed started.
    acks_by_second: Arc<Mutex<BTreeMap<(i32, u64), u64>>>,
    longest_send: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<u64>>,
    producer: Producer,
}

impl Feed {
    fn start(config: ProducerConfig, rate: u64, keys: u32) -> Feed {
        let producer = Producer::new(config).unwrap();
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let acks_by_second = Arc::new(Mutex::new(BTreeMap::new()));
        let failed = Arc::new(AtomicU64::new(0)); // summary.failed says it; kept for the callback
        let longest_send = Arc::new(Mutex::new(Duration::ZERO));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (p, acked, by_sec, failed, longest, stop) = (
                producer.clone(),
                acked.clone(),
                acks_by_second.clone(),
                failed.clone(),
                longest_send.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut next_seq = vec![0u64; keys as usize];
                while !stop.load(Ordering::Relaxed) {
                    let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let key = (sent % keys as u64) as u32;
                    let seq = next_seq[key as usize];
                    let (acked, by_sec, failed) = (acked.clone(), by_sec.clone(), failed.clone());
                    let t = Instant::now();
                    let r =
                        p.send_with_callback(record(key, seq), move |r: DeliveryResult| match r {
                            Ok(d) => {
                                acked.lock().unwrap().insert((key, seq));
                                let s = started.elapsed().as_secs();
                                *by_sec.lock().unwrap().entry((d.partition, s)).or_insert(0) += 1;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    let took = t.elapsed();
                    let mut l = longest.lock().unwrap();
                    *l = (*l).max(took);
                    drop(l);
                    if r.is_err() {
                        // Handed back (queue full past write_timeout): not sent, not counted.
                        continue;
                    }
                    next_seq[key as usize] += 1;
                    sent += 1;
                }
                sent
            })
        };
        Feed {
            acked,
            acks_by_second,
            longest_send,
            stop,
            started,
            thread: Some(thread),
            producer,
        }
    }

    /// Stop feeding, close the producer (within `close`), and return what was sent, the
    /// summary, and every identity acknowledged (the callbacks have all run by then).
    fn finish(mut self, close: Duration) -> (u64, kpipe::producer::Summary, HashSet<Id>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.thread.take().unwrap().join().unwrap();
        let summary = self.producer.close(close).unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (sent, summary, acked)
    }
}

/// The whole seconds of `range` in which none of `partitions` had a record acknowledged.
fn quiet_seconds(feed: &Feed, partitions: &[i32], range: std::ops::Range<u64>) -> Vec<u64> {
    let by_sec = feed.acks_by_second.lock().unwrap();
    range
        .filter(|s| {
            !partitions
                .iter()
                .any(|p| by_sec.get(&(*p, *s)).copied().unwrap_or(0) > 0)
        })
        .collect()
}

fn producer_config(topic: &str) -> ProducerConfig {
    let mut c = ProducerConfig::new(&brokers()).topic(topic);
    c.client = config();
    c.delivery_timeout = Duration::from_secs(90);
    c.write_timeout = Duration::from_secs(5);
    c
}

fn wait_in_sync(topic: &str) {
    kafka(&["wait-in-sync", topic, "120"]);
}

#[test]
fn a_killed_partition_leader_loses_nothing_and_keeps_order() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "kill-leader", 6, 3, 2);
    let feed = Feed::start(producer_config(&topic), 2_000, 60);
    common::await_condition(Duration::from_secs(30), "acks before the fault", || {
        feed.acked.lock().unwrap().len() > 2_000
    });
    let victim = leader_of(&mut cluster, &topic, 0);
    kafka(&["kill", &victim.to_string()]);
    // Keep producing through the election, then bring the node back.
    let before = feed.acked.lock().unwrap().len();
    common::await_condition(Duration::from_secs(60), "acks after the kill", || {
        feed.acked.lock().unwrap().len() > before + 4_000
    });
    kafka(&["start", &victim.to_string()]);
    let (sent, summary, acked) = feed.finish(Duration::from_secs(90));
    wait_in_sync(&topic);
    let c = verify(&topic, &acked);
    report("leader kill -9", &c);
    assert_exactly_once("leader kill -9", &c, &summary);
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_eq!(summary.delivered, sent, "{summary:?}");
    assert_eq!(c.lost, 0);
    assert_eq!(c.order_violations, 0);
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}

#[test]
fn a_paused_leader_delays_only_its_own_partitions() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    // RF 3: every partition has a replica on the paused node, so acks=all waits for it to be
    // fenced (the cluster's doing): nothing may be lost, and no send may block long.
    let replicated = topic(&mut cluster, "pause-rf3", 6, 3, 2);
    // RF 1: the paused node holds only the partitions it leads: the others must go on.
    let single = topic(&mut cluster, "pause-rf1", 6, 1, 1);
    let victim = leader_of(&mut cluster, &single, 0);
    let others: Vec<i32> = (0..6)
        .filter(|&p| leader_of(&mut cluster, &single, p) != victim)
        .collect();
    assert!(!others.is_empty(), "some partition is led elsewhere");
    let rf3 = Feed::start(producer_config(&replicated), 1_000, 60);
    let rf1 = Feed::start(producer_config(&single), 1_000, 60);
    common::await_condition(Duration::from_secs(30), "acks before the pause", || {
        rf1.acked.lock().unwrap().len() > 1_000 && rf3.acked.lock().unwrap().len() > 1_000
    });
    let paused_at = rf1.started.elapsed().as_secs() + 1;
    kafka(&["pause", &victim.to_string()]);
    std::thread::sleep(Duration::from_secs(20)); // the fault's length, not a synchronisation
    let resumed_at = rf1.started.elapsed().as_secs();
    kafka(&["resume", &victim.to_string()]);
    // Every whole second of the pause: acks for partitions led by the other brokers.
    let quiet = quiet_seconds(&rf1, &others, paused_at..resumed_at);
    let longest = *rf3.longest_send.lock().unwrap();
    let (sent3, s3, acked3) = rf3.finish(Duration::from_secs(90));
    let (sent1, s1, acked1) = rf1.finish(Duration::from_secs(90));
    wait_in_sync(&replicated);
    let c3 = verify(&replicated, &acked3);
    let c1 = verify(&single, &acked1);
    assert_eq!(
        (s3.delivered, s1.delivered),
        (sent3, sent1),
        "{s3:?} {s1:?}"
    );
    report("leader paused 20 s, RF 3", &c3);
    report("leader paused 20 s, RF 1", &c1);
    assert_exactly_once("leader paused 20 s, RF 3", &c3, &s3);
    assert_exactly_once("leader paused 20 s, RF 1", &c1, &s1);
    println!("seconds {paused_at}..{resumed_at} of the pause without acks elsewhere: {quiet:?}; longest send {longest:?}");
    assert!(
        quiet.is_empty(),
        "partitions of healthy brokers stalled in seconds {quiet:?}"
    );
    assert!(
        longest <= Duration::from_secs(5) + Duration::from_millis(500),
        "a send blocked {longest:?}"
    );
    assert_eq!((c3.lost, c1.lost), (0, 0));
    assert_eq!((s3.failed, s1.failed), (0, 0), "{s3:?} {s1:?}");
    assert_eq!(c3.order_violations + c1.order_violations, 0);
}

#[test]
fn one_broker_down_from_the_start_is_worked_around() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "one-down", 3, 3, 2);
    // Node 1 is first in the bootstrap list and down before anything starts.
    kafka(&["stop", "1"]);
    let mut pc = producer_config(&topic);
    pc.client.connection.connect_timeout = Duration::from_secs(3);
    let producer = Producer::new(pc).expect("bootstrap falls through to a live node");
    let mut all = HashSet::new();
    for i in 0..3_000u64 {
        let id = ((i % 60) as u32, i / 60);
        producer.send(record(id.0, id.1)).unwrap();
        all.insert(id);
    }
    let summary = producer.close(Duration::from_secs(90)).unwrap();
    assert_eq!(summary.delivered, 3_000, "{summary:?}");
    // Admin: list offsets and create a topic (RF 2 fits the two live nodes).
    let mut admin = connect();
    let end: i64 = admin
        .list_offsets(&topic, &[0, 1, 2], kpipe::client::OffsetSpec::Latest)
        .unwrap()
        .iter()
        .map(|o| o.offset)
        .sum();
    assert_eq!(end, 3_000);
    let extra = common::unique_topic("one-down-admin");
    admin
        .create_topic(&NewTopic::new(&extra, 1, 2), Duration::from_secs(60))
        .unwrap();
    // The consumer pool reads it all.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut cc = common::consumer_config(&common::unique_topic("one-down-g"), &topic, 2);
    cc.client = config();
    let s = seen.clone();
    let pool = ConsumerPool::start_cloned(cc, move |r: &ConsumedRecord| {
        if let Some(id) = r.value.as_deref().and_then(parse) {
            s.lock().unwrap().insert(id);
        }
        Ok::<(), String>(())
    })
    .unwrap();
    common::await_condition(Duration::from_secs(90), "every record consumed", || {
        seen.lock().unwrap().len() == 3_000
    });
    pool.close(Duration::from_secs(30)).expect("close");
    kafka(&["start", "1"]);
    wait_in_sync(&topic);
    let c = verify(&topic, &all);
    report("one broker down from the start", &c);
    assert_exactly_once("one broker down from the start", &c, &summary);
    assert_eq!(c.lost, 0);
    let _ = admin.delete_topic(&extra, Duration::from_secs(30));
}

#[test]
fn two_brokers_down_acknowledge_nothing_until_they_return() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "two-down", 3, 3, 2);
    let producer = Producer::new(producer_config(&topic)).unwrap();
    // Warm up: the writer knows the leaders.
    producer.send_and_wait(record(0, 0)).unwrap();
    kafka(&["kill", "2"]);
    kafka(&["kill", "3"]);
    let acked_while_down = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(true));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    for i in 1..=300u64 {
        let (count, down, acked) = (acked_while_down.clone(), down.clone(), acked.clone());
        producer
            .send_with_callback(record((i % 60) as u32, i / 60), move |r: DeliveryResult| {
                if r.is_ok() {
                    if down.load(Ordering::SeqCst) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    acked.lock().unwrap().insert(((i % 60) as u32, i / 60));
                }
            })
            .unwrap();
    }
    // Nothing can be replicated to two brokers now; wait a while to give it every chance.
    std::thread::sleep(Duration::from_secs(8)); // the fault's length
    down.store(false, Ordering::SeqCst);
    kafka(&["start", "2"]);
    kafka(&["start", "3"]);
    let summary = producer.close(Duration::from_secs(120)).unwrap();
    let while_down = acked_while_down.load(Ordering::Relaxed);
    println!("two brokers down: acknowledged while down {while_down}, then {summary:?}");
    assert_eq!(
        while_down, 0,
        "acks=all with min ISR 2 acknowledged unreplicated records"
    );
    assert_eq!(
        summary.delivered, 301,
        "retried until the brokers returned: {summary:?}"
    );
    wait_in_sync(&topic);
    let mut all = acked.lock().unwrap().clone();
    all.insert((0, 0));
    let c = verify(&topic, &all);
    report("two of three down, then back", &c);
    assert_exactly_once("two of three down, then back", &c, &summary);
    assert_eq!(c.lost, 0);
    assert_eq!(c.order_violations, 0);

    // Down for longer than the delivery timeout: every record fails in time, naming why.
    kafka(&["kill", "2"]);
    kafka(&["kill", "3"]);
    let mut pc = producer_config(&topic);
    pc.delivery_timeout = Duration::from_secs(12);
    let producer = Producer::new(pc).unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    for i in 0..100u64 {
        let errors = errors.clone();
        producer
            .send_with_callback(record(1_000, i), move |r: DeliveryResult| {
                if let Err(e) = r {
                    errors.lock().unwrap().push(e.to_string());
                }
            })
            .unwrap();
    }
    let started = Instant::now();
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    let errors = errors.lock().unwrap().clone();
    println!(
        "past the delivery timeout: {summary:?} after {:?}; e.g. {:?}",
        started.elapsed(),
        errors.first()
    );
    assert_eq!(summary.failed, 100, "{summary:?}");
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        summary.accepted
    );
    assert!(
        errors
            .iter()
            .all(|e| e.contains("timed out") || e.contains("timeout")),
        "{errors:?}"
    );
    assert!(
        errors
            .first()
            .is_some_and(|e| e.contains("NotEnoughReplicas") || e.contains("last error")),
        "the failure names the last broker error: {errors:?}"
    );
}

#[test]
fn all_brokers_down_fail_in_time_and_recover_without_a_new_producer() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "all-down", 3, 3, 2);
    let mut pc = producer_config(&topic);
    pc.delivery_timeout = Duration::from_secs(12);
    pc.buffer_bytes = 256 << 10;
    pc.write_timeout = Duration::from_millis(200);
    let producer = Producer::new(pc).unwrap();
    producer.send_and_wait(record(0, 0)).unwrap();
    for n in ["1", "2", "3"] {
        kafka(&["kill", n]);
    }
    // Keep offering records for longer than the delivery timeout: the buffer bounds what is
    // held, the rest is handed back, and what was taken fails in time.
    let offered = Instant::now();
    let (mut taken, mut refused) = (0u64, 0u64);
    while offered.elapsed() < Duration::from_secs(15) {
        match producer.send(ProducerRecord::new(vec![b'x'; 1_000]).key("k")) {
            Ok(()) => taken += 1,
            Err(_) => refused += 1,
        }
        let stats = producer.stats();
        assert!(
            stats.queue_depth <= 100_000,
            "the queue is bounded: {stats:?}"
        );
    }
    let stats = producer.stats();
    println!("all down: taken {taken}, handed back {refused}, {stats:?}");
    assert!(refused > 0, "backpressure once the buffer is full");
    assert!(stats.failed > 0, "records past the delivery timeout failed");
    kafka(&["up", "--nodes", "3"]);
    // The same producer works again.
    let mut back = None;
    common::await_condition(Duration::from_secs(120), "a send to succeed again", || {
        back = producer.send_and_wait(record(7, 0)).ok();
        back.is_some()
    });
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    println!("after the cluster came back: {summary:?}");
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        summary.accepted
    );
    wait_in_sync(&topic);
}

#[test]
fn a_killed_group_coordinator_is_found_again_and_commits_resume() {
    coordinator_killed_mid_consume(GroupProtocol::Classic);
}

/// KIP-848: the group's `__consumer_offsets` partition gets a new leader, which loads the
/// group (members, epochs, assignments) and gives every member a fresh session; the members
/// meet a dead connection, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or
/// COORDINATOR_LOAD_IN_PROGRESS, find the new coordinator and heartbeat on at the epoch they
/// had: no member is fenced, no partition moves.
#[test]
fn a_killed_kip848_group_coordinator_is_found_again_and_the_members_keep_their_epoch() {
    coordinator_killed_mid_consume(GroupProtocol::Consumer);
}

/// A pool of two members under `protocol` reads 40,000 records, slowly enough (1 ms each)
/// that the consume outlasts the failover (about 10 s until the dead node is fenced), and the
/// group's coordinator is killed (-9) once both members have settled and handled some.
///
/// Every record must be handled, the committed offsets must reach the end (commits resume
/// at the new coordinator), and records handled twice must stay within what was uncommitted
/// at the kill plus what was handled since. A coordinator moving is not a membership change
/// under either protocol: the new coordinator loads the group from `__consumer_offsets` and
/// starts every member's session afresh, so each member must end stable with the member id,
/// generation (classic) or epoch (KIP-848) and partitions it had at the kill, and, since no
/// partition moved, no record may be handled twice. Prints lost, duplicates, the longest the
/// pool and each member went without handling a record after the kill, and each member's
/// standing at the kill and at the end.
fn coordinator_killed_mid_consume(protocol: GroupProtocol) {
    let test = format!("coordinator kill -9 ({} protocol)", protocol.name());
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "coordinator", 6, 3, 2);
    let n = 40_000u64;
    let mut pc = producer_config(&topic);
    pc.linger = Duration::from_millis(20);
    let producer = Producer::new(pc).unwrap();
    for i in 0..n {
        producer.send(record((i % 60) as u32, i / 60)).unwrap();
    }
    assert_eq!(
        producer.close(Duration::from_secs(60)).unwrap().delivered,
        n
    );
    let group = common::unique_topic("coordinator-g");
    let handled: Arc<Mutex<HashMap<Id, u32>>> = Arc::new(Mutex::new(HashMap::new()));
    // Which member handled a record, and when.
    let times: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut cc = common::consumer_config(&group, &topic, 2);
    cc.client = config();
    cc.group_protocol = protocol;
    let pool = ConsumerPool::start(cc, |member| {
        let (h, t) = (handled.clone(), times.clone());
        move |r: &ConsumedRecord| {
            if let Some(id) = r.value.as_deref().and_then(parse) {
                *h.lock().unwrap().entry(id).or_insert(0) += 1;
            }
            t.lock().unwrap().push((member, Instant::now()));
            // Slow enough that the consume outlasts the failover.
            std::thread::sleep(Duration::from_millis(1));
            Ok::<(), String>(())
        }
    })
    .unwrap();
    // Kill once both members are settled in the group and records flow.
    common::await_condition(Duration::from_secs(60), "both members settled", || {
        settled(&pool.stats())
    });
    common::await_condition(Duration::from_secs(60), "some records handled", || {
        handled.lock().unwrap().len() > 2_000
    });
    let coordinator = kafka(&["coordinator", &group]);
    let at_kill = pool.stats();
    assert!(
        settled(&at_kill),
        "{test}: settled at the kill: {at_kill:?}"
    );
    let killed_at = Instant::now();
    kafka(&["kill", &coordinator]);
    common::await_condition(Duration::from_secs(120), "every record handled", || {
        handled.lock().unwrap().len() as u64 == n
    });
    // Commits succeed again: the group's committed offsets reach the end.
    common::await_condition(Duration::from_secs(60), "commits at the end", || {
        pool.stats()
            .partitions
            .values()
            .all(|p| p.committed >= p.high_watermark)
    });
    // Both members are back in the group, as the new coordinator sees it.
    common::await_condition(Duration::from_secs(60), "both members stable again", || {
        settled(&pool.stats())
    });
    let stats = pool.stats();
    let moved_to = kafka(&["coordinator", &group]);
    pool.close(Duration::from_secs(30)).expect("close");
    kafka(&["start", &coordinator]);
    let copies: u64 = handled.lock().unwrap().values().map(|&c| c as u64).sum();
    let lost = n - handled.lock().unwrap().len() as u64;
    let duplicates = copies - (n - lost);
    let uncommitted_at_kill: i64 = at_kill
        .partitions
        .values()
        .map(|p| p.position - p.committed.max(0))
        .sum();
    let times = times.lock().unwrap().clone();
    let pool_gap = longest_gap(times.iter().map(|(_, t)| *t), killed_at);
    let member_gaps: Vec<String> = (0..2)
        .map(|m| {
            let gap = longest_gap(
                times.iter().filter(|(w, _)| *w == m).map(|(_, t)| *t),
                killed_at,
            );
            format!("member {m} {gap:?}")
        })
        .collect();
    println!(
        "{test}: node {coordinator} killed, the group moved to node {moved_to}; handled {copies} for {n} records: lost {lost} duplicates {duplicates}; uncommitted at the kill {uncommitted_at_kill}; handled since the kill {}; commit failures {}, fetch errors {}, rebalances {} (at the kill {})",
        stats.handled - at_kill.handled,
        stats.commit_failures,
        stats.fetch_errors,
        stats.rebalances,
        at_kill.rebalances
    );
    println!(
        "{test}: longest without handling after the kill: the pool {pool_gap:?}, {}",
        member_gaps.join(", ")
    );
    let standing = |st: &kpipe::consumer::ConsumerStats, m: usize| match st.members.get(&m) {
        Some(s) => format!(
            "{:?} {} epoch/generation {} partitions {:?}",
            s.state,
            s.member_id,
            s.generation,
            st.assignments
                .get(&m)
                .map(|a| a.iter().map(|(_, p)| *p).collect::<Vec<_>>())
        ),
        None => "absent".to_owned(),
    };
    for m in 0..2 {
        println!(
            "{test}: member {m} at the kill: {}; at the end: {}",
            standing(&at_kill, m),
            standing(&stats, m)
        );
    }
    assert_eq!(lost, 0, "{test}: every record handled");
    assert!(
        duplicates as i64 <= uncommitted_at_kill + stats.handled as i64 - at_kill.handled as i64,
        "{test}: duplicates stay within what was handled since the last commit"
    );
    assert!(
        settled(&stats),
        "{test}: both members in the group: {:?}",
        stats.members
    );
    for m in 0..2 {
        let (before, after) = (&at_kill.members[&m], &stats.members[&m]);
        assert_eq!(
            (&before.member_id, before.generation),
            (&after.member_id, after.generation),
            "{test}: member {m} keeps its member id and generation or epoch"
        );
        assert_eq!(
            at_kill.assignments.get(&m),
            stats.assignments.get(&m),
            "{test}: member {m} keeps its partitions"
        );
    }
    assert_eq!(
        duplicates, 0,
        "{test}: no partition moved, so no record is handled twice"
    );
    wait_in_sync(&topic);
}

/// Both members of a two-member pool are in the group (stable, with a generation or epoch)
/// and hold a share of the topic's six partitions.
fn settled(stats: &kpipe::consumer::ConsumerStats) -> bool {
    let held: usize = stats.assignments.values().map(Vec::len).sum();
    stats.members.len() == 2
        && stats
            .members
            .values()
            .all(|m| m.state == MemberState::Stable && m.generation > 0)
        && stats.assignments.len() == 2
        && stats.assignments.values().all(|a| !a.is_empty())
        && held == 6
}

/// The longest stretch from `from` with no instant of `times` (those after the last one
/// not counted: the work was done).
fn longest_gap(times: impl Iterator<Item = Instant>, from: Instant) -> Duration {
    let mut after: Vec<Instant> = times.filter(|t| *t >= from).collect();
    after.sort();
    std::iter::once(from)
        .chain(after.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn a_rolling_restart_during_kpipe_run_loses_nothing() {
    let _s = Session::begin(&SERIAL);
    let topic = common::unique_topic("rolling");
    let summary = std::env::temp_dir().join(format!("{topic}.json"));
    let mut run = Command::new(env!("CARGO_BIN_EXE_kpipe"))
        .args(["run", "--brokers", &brokers(), "--topic", &topic])
        .args(["--group", &format!("{topic}-g"), "--replication", "3"])
        .args(["--threads", "2", "--consumers", "2", "--rate", "500"])
        .args(["--duration", "600s", "--drain-timeout", "60s"])
        .arg("--summary-json")
        .arg(&summary)
        .env_remove("KPIPE_BROKERS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut cluster = connect();
    common::await_condition(Duration::from_secs(60), "kpipe to create its topic", || {
        cluster.invalidate(Some(&topic));
        cluster.topic(&topic).is_ok()
    });
    let started = Instant::now();
    for n in ["1", "2", "3"] {
        kafka(&["stop", n]);
        kafka(&["start", n]);
        wait_in_sync(&topic);
    }
    println!("rolling restart took {:?}", started.elapsed());
    // Done: stop kpipe as an operator would (SIGTERM), so it drains and reports.
    let killed = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    let _ = run.stderr.take().unwrap().read_to_string(&mut stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    println!(
        "rolling restart: acked {} consumed {} | lost (missing) {} duplicates {} gaps {}",
        report["acked"],
        report["consumed"],
        report["missing"],
        report["duplicates"],
        report["sequence_gaps"]
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(report["missing"], 0, "{report}");
    // The topic itself holds every event once, in order per partition (the consumers may
    // still see some twice: what they handled after their last commit).
    let mut cluster = connect();
    let records = common::fetch_all(&mut cluster, &topic);
    let mut seen = HashSet::new();
    let mut last: HashMap<(i32, String), u64> = HashMap::new();
    let (mut duplicates, mut reordered) = (0, 0);
    for (p, r) in &records {
        let value = r.value.clone().unwrap_or_default();
        if !seen.insert(value.clone()) {
            duplicates += 1;
            continue;
        }
        let Ok(e) = serde_json::from_slice::<serde_json::Value>(&value) else {
            continue;
        };
        let (device, seq) = (e["device"].as_str().map(str::to_owned), e["seq"].as_u64());
        if let (Some(device), Some(seq)) = (device, seq) {
            if last
                .insert((*p, device), seq)
                .is_some_and(|before| before >= seq)
            {
                reordered += 1;
            }
        }
    }
    println!(
        "rolling restart, the topic: {} records, duplicates {duplicates}, out of order {reordered}",
        records.len()
    );
    assert!(!last.is_empty(), "events carry a device and a sequence");
    assert_eq!((duplicates, reordered), (0, 0));
}

#[test]
fn a_metadata_load_while_the_bootstrap_broker_is_paused_holds_up_no_other_partition() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let steady = topic(&mut cluster, "meta-steady", 6, 1, 1);
    let late = topic(&mut cluster, "meta-late", 6, 1, 1);
    // The producer's metadata connection is to the first bootstrap broker: pause that one.
    let first: String = brokers().split(',').next().unwrap().to_owned();
    let victim = cluster
        .brokers()
        .values()
        .find(|b| b.addr == first)
        .map(|b| b.id)
        .expect("the first bootstrap address is a broker");
    let others: Vec<i32> = (0..6)
        .filter(|&p| leader_of(&mut cluster, &steady, p) != victim)
        .collect();
    let feed = Feed::start(producer_config(&steady), 1_000, 60);
    common::await_condition(Duration::from_secs(30), "acks before the pause", || {
        feed.acked.lock().unwrap().len() > 1_000
    });
    kafka(&["pause", &victim.to_string()]);
    let paused_at = feed.started.elapsed().as_secs() + 1;
    // A topic the writer has not seen: its metadata must be loaded now, and the first try
    // goes to the paused broker (held until the request timeout, 10 s here).
    let late_acks = Arc::new(AtomicU64::new(0));
    for i in 0..600u64 {
        let a = late_acks.clone();
        feed.producer
            .send_with_callback(
                record(5_000 + (i % 60) as u32, i / 60).topic(late.as_str()),
                move |r: DeliveryResult| {
                    if r.is_ok() {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                },
            )
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(15)); // the fault's length
    let resumed_at = feed.started.elapsed().as_secs();
    let late_during = late_acks.load(Ordering::Relaxed);
    kafka(&["resume", &victim.to_string()]);
    let quiet = quiet_seconds(&feed, &others, paused_at..resumed_at);
    let (sent, summary, acked) = feed.finish(Duration::from_secs(90));
    let c = verify(&steady, &acked);
    report("metadata load with the bootstrap broker paused", &c);
    println!(
        "seconds {paused_at}..{resumed_at} without acks on other brokers' partitions: {quiet:?}; the new topic's records acked during the pause: {late_during}; {summary:?}"
    );
    assert!(
        quiet.is_empty(),
        "partitions of healthy brokers stalled in seconds {quiet:?}"
    );
    assert!(
        late_during > 0,
        "the new topic's records for healthy brokers went out during the pause"
    );
    assert_eq!(summary.delivered, sent + 600, "{summary:?}");
    assert_eq!(c.lost, 0);
    assert_exactly_once(
        "metadata load with the bootstrap broker paused",
        &c,
        &summary,
    );
}

/// The bootstrap list with `last` moved to the end (so connecting does not start with it).
fn brokers_with_last(cluster: &Cluster, last: i32) -> String {
    let addr = cluster.brokers()[&last].addr.clone();
    let mut list: Vec<String> = brokers().split(',').map(str::to_owned).collect();
    list.retain(|a| *a != addr);
    list.push(addr);
    list.join(",")
}

#[test]
fn closes_return_in_time_while_a_broker_is_paused() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "close-bound", 6, 1, 1);
    let victim = leader_of(&mut cluster, &topic, 0);
    let bootstrap = brokers_with_last(&cluster, victim);
    // A pool reading the topic, with fetches to every leader in flight.
    let mut cc = common::consumer_config(&common::unique_topic("close-bound-g"), &topic, 1);
    cc.client = ClientConfig::new([bootstrap.as_str()]);
    cc.client.connection.request_timeout = Duration::from_secs(20);
    let pool = ConsumerPool::start_cloned(cc, |_: &ConsumedRecord| Ok::<(), String>(())).unwrap();
    common::await_condition(
        Duration::from_secs(60),
        "the pool to own the partitions",
        || pool.stats().partitions.len() == 6,
    );
    kafka(&["pause", &victim.to_string()]);
    // A fresh producer must open a connection to the paused leader for its partitions:
    // TCP connects (the kernel answers), then the handshake waits for the request timeout.
    let mut pc = producer_config(&topic);
    pc.client = ClientConfig::new([bootstrap.as_str()]);
    pc.client.connection.request_timeout = Duration::from_secs(20);
    pc.delivery_timeout = Duration::from_secs(60);
    let producer = Producer::new(pc).unwrap();
    for i in 0..600u64 {
        producer.send(record((i % 60) as u32, i / 60)).unwrap();
    }
    // Give the writer time to send what it can and to start the dial. The producer id comes
    // first (idempotence), and a broker hands one out only from a block the active
    // controller gives it: if the paused node is that controller, only after the quorum
    // elects another (10-15 s here).
    let waited = Instant::now();
    common::await_condition(
        Duration::from_secs(60),
        "deliveries to healthy leaders",
        || producer.stats().delivered > 0,
    );
    println!("first deliveries after {:?}", waited.elapsed());
    let started = Instant::now();
    let summary = producer.close(Duration::from_secs(2)).unwrap();
    let producer_took = started.elapsed();
    let started = Instant::now();
    let pool_summary = pool.close(Duration::from_secs(2)).expect("close");
    let pool_took = started.elapsed();
    kafka(&["resume", &victim.to_string()]);
    println!("producer close took {producer_took:?}: {summary:?}; pool close took {pool_took:?}: {pool_summary:?}");
    assert!(
        producer_took < Duration::from_secs(3),
        "producer close took {producer_took:?}"
    );
    assert!(
        pool_took < Duration::from_secs(3),
        "pool close took {pool_took:?}"
    );
    assert!(
        summary.delivered > 0 && summary.delivered < 600,
        "{summary:?}"
    );
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        summary.accepted
    );
}

#[test]
fn a_dead_leader_is_retried_with_a_growing_backoff() {
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect();
    let topic = topic(&mut cluster, "backoff", 1, 1, 1);
    let victim = leader_of(&mut cluster, &topic, 0);
    let mut cc = common::consumer_config(&common::unique_topic("backoff-g"), &topic, 1);
    cc.client = ClientConfig::new([brokers_with_last(&cluster, victim).as_str()]);
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let pool = ConsumerPool::start_cloned(cc, move |_: &ConsumedRecord| {
        s.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .unwrap();
    common::await_condition(
        Duration::from_secs(60),
        "the pool to own the partition",
        || pool.stats().partitions.len() == 1,
    );
    // RF 1: the partition is offline while its only replica is down.
    kafka(&["kill", &victim.to_string()]);
    let before = pool.stats().fetch_errors;
    std::thread::sleep(Duration::from_secs(8)); // the outage being measured
    let during = pool.stats().fetch_errors - before;
    kafka(&["start", &victim.to_string()]);
    let producer = Producer::new(producer_config(&topic)).unwrap();
    producer.send_and_wait(record(1, 0)).unwrap();
    let _ = producer.close(Duration::from_secs(30));
    common::await_condition(
        Duration::from_secs(60),
        "a record read after the outage",
        || seen.load(Ordering::Relaxed) >= 1,
    );
    pool.close(Duration::from_secs(10)).expect("close");
    println!("fetch retries during 8 s with the leader down: {during}");
    // 100 ms doubling to 1 s: about a dozen; a fixed 50 ms would be some 160.
    assert!(during >= 1, "the outage was seen");
    assert!(
        during <= 30,
        "{during} fetch retries in 8 s: the backoff does not grow"
    );
}
