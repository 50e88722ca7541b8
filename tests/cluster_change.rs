//! What a consumer reads when the three-node cluster (`./scripts/kafka up --nodes 3`)
//! changes under it: log truncation, where a group's committed offset lies past the
//! divergence point of a new leader's log (KIP-320); a partition left without a leader
//! while the group starts (the others are read); and a consumer reading from the follower
//! in its rack (KIP-392; the cluster's nodes are in racks `rack-N`) that falls back to the
//! leader when that follower goes.
//!
//! The first test's scenario:
//!
//! The scenario (issue 20, "Leader epochs and truncation"): a one-partition topic, RF 2, min
//! ISR 1 and `unclean.leader.election.enable=true`. Both replicas take records 0–999; the
//! follower is stopped; the leader takes 1000–1999; a group reads all 2,000 and commits 2000.
//! The leader is killed and the stale follower started again: the controller (Kafka 4.4,
//! KRaft) elects it uncleanly by itself, about 9 s after the kill, when it fences the dead
//! leader. Its log ends at 1000, so the 1,500 records written next take offsets 1000–2499:
//! offsets 1000–1999 now hold other records than the ones the group read. The group,
//! restarted, must read every one of the 1,500 (the Java consumer does: it validates the
//! committed offset's leader epoch with OffsetForLeaderEpoch, finds the divergence at 1000 and
//! goes there; with `auto.offset.reset=none` it throws `LogTruncationException` instead).
//!
//! The nodes are shared, so the test holds `SERIAL`, starts from a whole cluster and mends it
//! when it ends, passed or not. Skipped (with a line on stderr) when `KPIPE_CLUSTER_BROKERS` is
//! unset: `./scripts/test` exports it, or `eval "$(scripts/kafka cluster-env)"`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nodes::{kafka, Session};
use kpipe::client::{ClientConfig, Cluster, NewTopic, OffsetSpec};
use kpipe::consumer::{OffsetReset, RebalanceListener, Truncation};
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

static SERIAL: Mutex<()> = Mutex::new(());

/// Records both replicas hold.
const SHARED: i64 = 1_000;
/// Records only the old leader got (and the group read): offsets SHARED..READ.
const READ: i64 = 2_000;
/// Records written to the new leader after the unclean election.
const NEW: i64 = 1_500;

/// The cluster's bootstrap list and a session on it (one test at a time, nodes mended at
/// the end) with a client connected, or `None` (a line on stderr) when the cluster is not
/// there: `./scripts/test` exports `KPIPE_CLUSTER_BROKERS`, or `eval "$(scripts/kafka
/// cluster-env)"`.
fn begin() -> Option<(String, Session, Cluster)> {
    let Ok(brokers) = std::env::var("KPIPE_CLUSTER_BROKERS") else {
        eprintln!(
            "skipped: KPIPE_CLUSTER_BROKERS is unset (needs ./scripts/kafka up --nodes 3; \
             ./scripts/test exports it)"
        );
        return None;
    };
    let session = Session::begin(&SERIAL);
    let cluster = Cluster::connect(config(&brokers)).expect("connect to the cluster");
    Some((brokers, session, cluster))
}

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new([brokers.to_owned()]);
    c.connection.client_id = "kpipe-truncation-test".into();
    c.connection.connect_timeout = Duration::from_secs(5);
    c.connection.request_timeout = Duration::from_secs(10);
    c
}

/// `describe`'s "partition=0 leader=L replicas=R1,R2 isr=..." as (leader, replicas).
fn leader_and_replicas(topic: &str) -> (i32, Vec<i32>) {
    let line = kafka(&["describe", topic]);
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    let leader = field("leader=").parse().unwrap();
    let replicas = field("replicas=")
        .split(',')
        .map(|r| r.parse().unwrap())
        .collect();
    (leader, replicas)
}

/// Write `values` with acks=all (the ISR is whoever is left, min ISR 1) and wait for all.
fn produce(brokers: &str, topic: &str, values: impl Iterator<Item = String>) {
    let mut c = ProducerConfig::new(brokers).topic(topic);
    c.client = config(brokers);
    c.delivery_timeout = Duration::from_secs(60);
    let producer = Producer::new(c).unwrap();
    let mut n = 0;
    for v in values {
        producer
            .send(ProducerRecord::new(v.clone()).key(v))
            .unwrap();
        n += 1;
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, n, "{summary:?}");
}

fn end_offset(cluster: &mut Cluster, topic: &str) -> i64 {
    cluster.invalidate(Some(topic));
    cluster
        .list_offsets(topic, &[0], OffsetSpec::Latest)
        .unwrap()[0]
        .offset
}

fn consumer_config(brokers: &str, group: &str, topic: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(brokers, group, &[topic]);
    c.client = config(brokers);
    c.session_timeout = Duration::from_secs(6);
    c.heartbeat_interval = Duration::from_millis(300);
    c.auto_commit = false;
    c.offset_reset = OffsetReset::Earliest;
    c.fetch.max_wait = Duration::from_millis(200);
    c
}

/// Poll until the member's position on partition 0 reaches `end` (everything there is has
/// been handed out), or panic after a minute.
fn poll_to(consumer: &mut Consumer, topic: &str, end: i64) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while consumer.position(topic, 0) != Some(end) {
        assert!(
            Instant::now() < deadline,
            "position {:?}, not {end}, after 60 s ({} records read)",
            consumer.position(topic, 0),
            got.len()
        );
        got.extend(consumer.poll(Duration::from_millis(200)).unwrap());
    }
    got
}

/// A listener that notes the truncations it is told of.
struct Told(Arc<Mutex<Vec<Truncation>>>);

impl RebalanceListener for Told {
    fn on_truncated(&mut self, _: &mut Consumer, truncations: &[Truncation]) {
        self.0.lock().unwrap().extend_from_slice(truncations);
    }
}

fn value(r: &ConsumedRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

#[test]
fn a_group_reads_every_record_written_after_an_unclean_election_from_the_divergence_point() {
    let Some((brokers, _session, mut cluster)) = begin() else {
        return;
    };
    let started = Instant::now();

    // RF 2 leaves the third node out: with the follower stopped and the leader killed, it
    // and the restarted follower are the controller majority.
    let topic = common::unique_topic("truncation");
    let group = common::unique_topic("truncation-g");
    let t = NewTopic::new(&topic, 1, 2)
        .config("min.insync.replicas", "1")
        .config("unclean.leader.election.enable", "true");
    cluster.create_topic(&t, Duration::from_secs(60)).unwrap();
    kafka(&["wait-in-sync", &topic, "60"]);
    let (old_leader, replicas) = leader_and_replicas(&topic);
    let follower = *replicas.iter().find(|&&r| r != old_leader).unwrap();
    let (old_leader_s, follower_s) = (old_leader.to_string(), follower.to_string());

    // 0..1000 on both replicas (acks=all with both in the ISR).
    produce(&brokers, &topic, (0..SHARED).map(|i| format!("old-{i}")));
    kafka(&["stop", &follower_s]);
    common::await_condition(
        Duration::from_secs(30),
        "the ISR without the follower",
        || kafka(&["isr", &topic, "0"]) == old_leader_s,
    );
    // 1000..2000 on the leader only.
    produce(&brokers, &topic, (SHARED..READ).map(|i| format!("old-{i}")));
    assert_eq!(end_offset(&mut cluster, &topic), READ);

    // The group reads all 2,000 and commits 2000.
    let config = consumer_config(&brokers, &group, &topic);
    let mut consumer = Consumer::new(config.clone()).unwrap();
    let first = poll_to(&mut consumer, &topic, READ);
    assert_eq!(first.len() as i64, READ);
    consumer.commit().unwrap();
    assert_eq!(consumer.committed(&topic, 0), Some(READ));
    consumer.close(Duration::from_secs(30)).unwrap();

    // The leader dies; the stale follower comes back and is elected uncleanly.
    kafka(&["kill", &old_leader_s]);
    let killed = Instant::now();
    kafka(&["start", &follower_s]);
    common::await_condition(
        Duration::from_secs(60),
        "the stale follower elected leader",
        || kafka(&["leader", &topic, "0"]) == follower_s,
    );
    let elected_after = killed.elapsed();
    let truncated_end = end_offset(&mut cluster, &topic);
    assert_eq!(
        truncated_end, SHARED,
        "the new leader's log ends where the follower stopped"
    );

    // 1,500 new records: offsets 1000..2500.
    produce(&brokers, &topic, (0..NEW).map(|i| format!("new-{i}")));
    let end = end_offset(&mut cluster, &topic);
    assert_eq!(end, SHARED + NEW);

    // Without a reset policy, the member does not choose: poll fails until a seek.
    let mut strict = config.clone();
    strict.offset_reset = OffsetReset::Error;
    let mut consumer = Consumer::new(strict).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        assert!(Instant::now() < deadline, "no truncation error in 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            Ok(records) => assert!(records.is_empty(), "records read past a divergence"),
            Err(e) => break e,
        }
    };
    match &refused {
        kpipe::consumer::Error::LogTruncated {
            partition: 0,
            position: READ,
            divergence: Some(SHARED),
            ..
        } => {}
        other => panic!("not the truncation error: {other}"),
    }
    assert!(
        consumer.poll(Duration::from_millis(100)).is_err(),
        "still refused before a seek"
    );
    drop(consumer);

    // The group again: it must read every new record, starting from the divergence point.
    let told = Arc::new(Mutex::new(Vec::new()));
    let listener = Told(told.clone());
    let mut consumer = Consumer::with_listener(config, listener).unwrap();
    let after = poll_to(&mut consumer, &topic, end);
    let stats = consumer.stats();
    consumer.close(Duration::from_secs(30)).unwrap();
    let new_read = after
        .iter()
        .filter(|r| value(r).starts_with("new-"))
        .count() as i64;
    let old_read = after.len() as i64 - new_read;
    let first_offset = after.first().map(|r| r.offset);
    eprintln!(
        "truncation: leader {old_leader} killed, follower {follower} elected uncleanly \
         {:.1} s later; log end {READ} -> {truncated_end} -> {end}; committed {READ}; \
         after the restart the group read {new_read} of {NEW} new records \
         ({old_read} old ones), first offset {first_offset:?}; fetch_errors {}; \
         {:.1} s in all",
        elected_after.as_secs_f64(),
        stats.fetch_errors,
        started.elapsed().as_secs_f64(),
    );
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
    eprintln!("truncation: refused without a reset policy: {refused}");
    assert_eq!(stats.truncations, 1, "counted: {stats:?}");
    assert_eq!(
        *told.lock().unwrap(),
        [Truncation {
            topic: topic.clone(),
            partition: 0,
            position: READ,
            divergence: Some(SHARED),
        }],
        "the listener is told"
    );
    assert_eq!(
        new_read, NEW,
        "read {new_read} of {NEW} new records: the group resumed at its committed {READ} \
         (first offset {first_offset:?}) instead of the divergence point {SHARED}"
    );
    assert_eq!(
        old_read, 0,
        "records of the old log read again: the position went below the divergence point"
    );
    assert_eq!(first_offset, Some(SHARED));
}

#[test]
fn a_leaderless_partition_does_not_hold_back_the_others_of_its_topic() {
    let Some((brokers, _session, mut cluster)) = begin() else {
        return;
    };
    let topic = common::unique_topic("leaderless");
    // RF 1: a partition whose one broker stops has no leader.
    let t = NewTopic::new(&topic, 3, 1);
    cluster.create_topic(&t, Duration::from_secs(60)).unwrap();
    kafka(&["wait-in-sync", &topic, "60"]);
    let leaders: Vec<String> = (0..3)
        .map(|p| kafka(&["leader", &topic, &p.to_string()]))
        .collect();
    let mut c = ProducerConfig::new(&brokers).topic(&topic);
    c.client = config(&brokers);
    let producer = Producer::new(c).unwrap();
    for p in 0..3 {
        for i in 0..10 {
            producer
                .send(ProducerRecord::new(format!("p{p}-{i}")).partition(p))
                .unwrap();
        }
    }
    assert_eq!(
        producer.close(Duration::from_secs(60)).unwrap().delivered,
        30
    );
    // Stop the leader of partition 2; the partitions it does not lead keep theirs.
    let stopped = leaders[2].clone();
    kafka(&["stop", &stopped]);
    let led: Vec<i32> = (0..3).filter(|&p| leaders[p as usize] != stopped).collect();
    assert!(!led.is_empty(), "every partition on one node: {leaders:?}");

    // A new group (reset to earliest) reads the led partitions while one has no leader.
    let config = consumer_config(&brokers, &common::unique_topic("leaderless-g"), &topic);
    let mut consumer = Consumer::new(config).unwrap();
    let mut got = Vec::new();
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < led.len() * 10 {
        assert!(
            Instant::now() < deadline,
            "{} of {} records of the led partitions {led:?} in 60 s: the leaderless partition \
             held the others back",
            got.len(),
            led.len() * 10
        );
        let asked = Instant::now();
        got.extend(consumer.poll(Duration::from_millis(200)).unwrap());
        slowest = slowest.max(asked.elapsed());
    }
    consumer.close(Duration::from_secs(30)).unwrap();
    eprintln!(
        "leaderless: node {stopped} stopped, partitions {led:?} read; the slowest poll(200 ms) \
         took {slowest:?}"
    );
    assert!(got.iter().all(|r| led.contains(&r.partition)));
    // Bounded by one request to the cluster, never a retry loop of a request timeout (10 s).
    assert!(
        slowest < Duration::from_secs(10),
        "poll(200 ms) took {slowest:?}"
    );
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}

#[test]
fn a_consumer_reads_from_the_follower_in_its_rack_and_from_the_leader_when_it_goes() {
    let Some((brokers, _session, mut cluster)) = begin() else {
        return;
    };
    let topic = common::unique_topic("rack");
    cluster
        .create_topic(&NewTopic::new(&topic, 1, 3), Duration::from_secs(60))
        .unwrap();
    kafka(&["wait-in-sync", &topic, "60"]);
    let (leader, replicas) = leader_and_replicas(&topic);
    let follower = *replicas.iter().find(|&&r| r != leader).unwrap();
    produce(&brokers, &topic, (0..100).map(|i| format!("a-{i}")));

    let mut c = consumer_config(&brokers, &common::unique_topic("rack-g"), &topic);
    c.fetch.rack = Some(format!("rack-{follower}"));
    let mut consumer = Consumer::new(c).unwrap();
    let read_replica = |c: &Consumer| {
        c.stats()
            .partitions
            .get(&(topic.clone(), 0))
            .and_then(|p| p.read_replica)
    };
    let mut got = poll_to(&mut consumer, &topic, 100);
    assert_eq!(
        read_replica(&consumer),
        Some(follower),
        "the leader ({leader}) sent the reader in rack-{follower} to its follower"
    );

    // The follower goes: the reader falls back to the leader and goes on.
    kafka(&["stop", &follower.to_string()]);
    produce(&brokers, &topic, (0..100).map(|i| format!("b-{i}")));
    got.extend(poll_to(&mut consumer, &topic, 200));
    let fell_back = read_replica(&consumer);
    consumer.close(Duration::from_secs(30)).unwrap();
    eprintln!(
        "rack: leader {leader}, the reader's follower {follower} (rack-{follower}); after it \
         stopped the reader read from {fell_back:?} (None: the leader)"
    );
    assert_ne!(fell_back, Some(follower));
    let values: Vec<String> = got.iter().map(value).collect();
    let expected: Vec<String> = (0..100)
        .map(|i| format!("a-{i}"))
        .chain((0..100).map(|i| format!("b-{i}")))
        .collect();
    assert_eq!(values, expected, "every record once, in order");
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}
