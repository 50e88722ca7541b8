//! A kpipe member and a Java consumer (Kafka's own console consumer, from the jars
//! scripts/kafka fetched) share one group under each group protocol: classic with the eager
//! `range` assignor, classic with `cooperative-sticky` (KIP-429) on both sides, and the
//! consumer protocol of KIP-848 on both sides; and whichever of them joins first (under the
//! classic protocol the first member leads, so both kpipe's and Java's assignor run). The
//! partitions are split between them, together they read every record, and kpipe reads none
//! twice. Under the incremental protocols the first member keeps what it keeps through the
//! rebalance: kpipe, when first, never gives those partitions up, and keeps handling them
//! while the others move.

mod common;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::Protocol;
use kpipe::consumer::{ConsumerPool, ConsumerStats, MemberState};
use kpipe::ConsumedRecord;

#[test]
fn a_java_consumer_joins_a_group_led_by_kpipe() {
    share_a_group(Protocol::Eager, First::Kpipe);
}

#[test]
fn kpipe_joins_a_group_led_by_a_java_consumer() {
    share_a_group(Protocol::Eager, First::Java);
}

#[test]
fn a_cooperative_java_consumer_joins_a_group_led_by_kpipe() {
    share_a_group(Protocol::Cooperative, First::Kpipe);
}

#[test]
fn kpipe_joins_a_cooperative_group_led_by_a_java_consumer() {
    share_a_group(Protocol::Cooperative, First::Java);
}

#[test]
fn a_kip848_java_consumer_joins_kpipe_in_a_consumer_protocol_group() {
    share_a_group(Protocol::Consumer, First::Kpipe);
}

#[test]
fn kpipe_joins_a_kip848_java_consumer_in_a_consumer_protocol_group() {
    share_a_group(Protocol::Consumer, First::Java);
}

/// The tests run one at a time: each starts a JVM (beside a kpipe member) on a small
/// machine, and the timings they print are then their own.
static SERIAL: Mutex<()> = Mutex::new(());

/// The Java consumer's settings for `protocol`: Java offers its default list (`range`
/// first) for eager, `CooperativeStickyAssignor` for cooperative, `group.protocol=consumer`
/// for KIP-848. Under the consumer protocol Java refuses the session timeout, heartbeat
/// interval and assignor: the group's settings on the broker apply.
fn java_properties(protocol: Protocol) -> &'static [&'static str] {
    const CLASSIC: [&str; 3] = [
        "auto.offset.reset=earliest",
        "heartbeat.interval.ms=300",
        "session.timeout.ms=6000",
    ];
    match protocol {
        Protocol::Eager => &CLASSIC,
        Protocol::Cooperative => &[
            CLASSIC[0],
            CLASSIC[1],
            CLASSIC[2],
            "partition.assignment.strategy=org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
        ],
        Protocol::Consumer => &["auto.offset.reset=earliest", "group.protocol=consumer"],
    }
}

/// Which side joins the group first and takes all the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    Kpipe,
    Java,
}

/// One record read, by either side, and when our side of the test saw it (for Java: when
/// its line reached us).
#[derive(Debug, Clone)]
struct Read {
    partition: i32,
    offset: i64,
    value: String,
    at: Instant,
}

type Reads = Arc<Mutex<Vec<Read>>>;

fn start_pool(protocol: Protocol, group: &str, topic: &str, ours: &Reads) -> Arc<ConsumerPool> {
    let seen = ours.clone();
    let pool =
        ConsumerPool::start_cloned(protocol.config(group, topic), move |r: &ConsumedRecord| {
            let value = String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap();
            seen.lock().unwrap().push(Read {
                partition: r.partition,
                offset: r.offset,
                value,
                at: Instant::now(),
            });
            Ok::<(), String>(())
        })
        .unwrap();
    Arc::new(pool)
}

/// The partitions the pool's one member holds now.
fn held(pool: &ConsumerPool) -> BTreeSet<i32> {
    held_in(&pool.stats())
}

/// Kafka's console consumer as a member of the group, run through `scripts/kafka
/// run-class` (which execs the JVM, so the child is the JVM). It prints each record as
/// `Partition:P<TAB>Offset:O<TAB>value`. Dropping it kills the JVM, on every path, panics
/// included (and then shows the end of its log). `--timeout-ms` is not used: with a classic
/// consumer it overshoots; the test decides when Java stops.
struct JavaConsumer {
    child: Child,
    reads: Reads,
    log_tail: Arc<Mutex<VecDeque<String>>>,
    pipes: Vec<JoinHandle<()>>,
}

impl JavaConsumer {
    fn start(protocol: Protocol, group: &str, topic: &str) -> JavaConsumer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
        let mut command = Command::new(script);
        command
            .args([
                "run-class",
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
            ])
            .args([
                "--bootstrap-server",
                &common::brokers(),
                "--topic",
                topic,
                "--group",
                group,
            ])
            .args(["--formatter-property", "print.partition=true"])
            .args(["--formatter-property", "print.offset=true"]);
        for property in java_properties(protocol) {
            command.args(["--command-property", property]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the Java console consumer through scripts/kafka");
        let reads = Reads::default();
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = {
            let reads = reads.clone();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // Only records: the tool may print notices on stdout too.
                    if let Some(read) = parse_java_record(&line, Instant::now()) {
                        reads.lock().unwrap().push(read);
                    }
                }
            })
        };
        let err = {
            let log_tail = log_tail.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut tail = log_tail.lock().unwrap();
                    if tail.len() == 40 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
        };
        JavaConsumer {
            child,
            reads,
            log_tail,
            pipes: vec![out, err],
        }
    }

    /// The records Java printed so far.
    fn reads(&self) -> Vec<Read> {
        self.reads.lock().unwrap().clone()
    }

    /// The partitions Java printed records of since `since`.
    fn partitions_read_since(&self, since: Instant) -> BTreeSet<i32> {
        partitions_read_since(&self.reads.lock().unwrap(), since)
    }

    /// Kill the JVM (SIGKILL: it neither commits nor leaves the group) and wait for it and
    /// for what it printed. Safe to call twice.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pipe in self.pipes.drain(..) {
            let _ = pipe.join();
        }
    }
}

impl Drop for JavaConsumer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("the Java consumer's log, last lines:");
            for line in self
                .log_tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                eprintln!("  {line}");
            }
        }
    }
}

/// A record line of the console consumer, `Partition:P<TAB>Offset:O<TAB>value`.
fn parse_java_record(line: &str, at: Instant) -> Option<Read> {
    let mut fields = line.splitn(3, '\t');
    let partition = fields.next()?.strip_prefix("Partition:")?.parse().ok()?;
    let offset = fields.next()?.strip_prefix("Offset:")?.parse().ok()?;
    let value = fields.next()?.to_owned();
    Some(Read {
        partition,
        offset,
        value,
        at,
    })
}

fn partitions_read_since(reads: &[Read], since: Instant) -> BTreeSet<i32> {
    reads
        .iter()
        .filter(|r| r.at > since)
        .map(|r| r.partition)
        .collect()
}

/// Records `y0`, `y1`, ... produced at a steady rate on a thread of their own until
/// stopped, so that records flow all through a rebalance. Stops when dropped.
struct Flow {
    stop: Arc<AtomicBool>,
    producer: Option<JoinHandle<usize>>,
}

impl Flow {
    fn start(topic: &str, per_sec: u32) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let producer = kpipe::Producer::new(common::producer_config(topic)).unwrap();
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                let start = Instant::now();
                let mut sent = 0;
                while !stop.load(Ordering::SeqCst) {
                    producer
                        .send(
                            kpipe::ProducerRecord::new(format!("y{sent}"))
                                .key(format!("k{}", sent % 100)),
                        )
                        .unwrap();
                    sent += 1;
                    if sent % 10 == 0 {
                        let due = start + Duration::from_secs_f64(sent as f64 / per_sec as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                    }
                }
                let summary = producer.close(Duration::from_secs(60)).unwrap();
                assert_eq!(summary.delivered, sent as u64, "{summary:?}");
                sent
            })
        };
        Flow {
            stop,
            producer: Some(handle),
        }
    }

    /// Stop, and say how many records were produced (every one acknowledged).
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.producer.take().unwrap().join().unwrap()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

/// What the pool's member showed at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    held: BTreeSet<i32>,
    state: Option<MemberState>,
    generation: i32,
    rebalances: u64,
}

impl Sample {
    /// The sample, timed from `t0`.
    fn show(&self, t0: Instant) -> String {
        format!(
            "at {:?}: held {:?}, {:?}, generation {}, rebalances {}",
            self.at.saturating_duration_since(t0),
            self.held,
            self.state,
            self.generation,
            self.rebalances
        )
    }
}

/// `pool.stats()` polled every 2 ms on a thread of its own, to see what the member held all
/// through a rebalance. Stops when dropped.
struct Watch {
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<Vec<Sample>>>,
}

impl Watch {
    fn start(pool: &Arc<ConsumerPool>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (stop, pool) = (stop.clone(), pool.clone());
            thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let stats = pool.stats();
                    let member = stats.members.get(&0);
                    samples.push(Sample {
                        at: Instant::now(),
                        held: held_in(&stats),
                        state: member.map(|m| m.state),
                        generation: member.map_or(-1, |m| m.generation),
                        rebalances: stats.rebalances,
                    });
                    thread::sleep(Duration::from_millis(2));
                }
                samples
            })
        };
        Watch {
            stop,
            sampler: Some(sampler),
        }
    }

    /// Stop, and hand back the samples (the sampler's hold on the pool ends with it).
    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.sampler.take().unwrap().join().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// The longest stretch within `[from, to]` in which none of `reads` of `partitions` arrived.
fn longest_gap(reads: &[Read], partitions: &BTreeSet<i32>, from: Instant, to: Instant) -> Duration {
    let mut edges = vec![from];
    edges.extend(
        reads
            .iter()
            .filter(|r| partitions.contains(&r.partition) && r.at > from && r.at < to)
            .map(|r| r.at),
    );
    edges.push(to);
    edges.sort();
    edges
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn share_a_group(protocol: Protocol, first: First) {
    let _serial = common::serial(&SERIAL);
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "interop", 4);
    let group = common::unique_topic("interop-group");
    common::produce(&topic, "x", 2_000);
    let all_four: BTreeSet<i32> = (0..4).collect();

    // The first member takes all four partitions; then records flow while the second joins.
    // (Dropped in reverse order on a panic: the flow stops, the sampler, Java is killed,
    // the pool closes.)
    let ours = Reads::default();
    let pool: Arc<ConsumerPool>;
    let mut java: JavaConsumer;
    let watch: Watch;
    let flow: Flow;
    let second_joins: Instant;
    let mut rebalances_before = 0;
    match first {
        First::Kpipe => {
            pool = start_pool(protocol, &group, &topic, &ours);
            common::await_condition(
                Duration::from_secs(60),
                "kpipe to own all four partitions first",
                || held(&pool).len() == 4,
            );
            watch = Watch::start(&pool);
            flow = Flow::start(&topic, 1_000);
            rebalances_before = pool.stats().rebalances;
            second_joins = Instant::now();
            java = JavaConsumer::start(protocol, &group, &topic);
        }
        First::Java => {
            let start = Instant::now();
            java = JavaConsumer::start(protocol, &group, &topic);
            common::await_condition(
                Duration::from_secs(90),
                "the Java consumer reading all four partitions first",
                || java.partitions_read_since(start) == all_four,
            );
            flow = Flow::start(&topic, 1_000);
            second_joins = Instant::now();
            pool = start_pool(protocol, &group, &topic, &ours);
            watch = Watch::start(&pool);
        }
    }

    // The split: kpipe holds two partitions, and then each side reads new records of its two.
    common::await_condition(
        Duration::from_secs(90),
        "kpipe to hold two of the four partitions",
        || held(&pool).len() == 2,
    );
    let settled = Instant::now();
    let kept = held(&pool);
    let theirs_now: BTreeSet<i32> = all_four.difference(&kept).copied().collect();
    common::await_condition(
        Duration::from_secs(60),
        "kpipe reading its two partitions and Java the other two",
        || {
            partitions_read_since(&ours.lock().unwrap(), settled).is_superset(&kept)
                && java.partitions_read_since(settled).is_superset(&theirs_now)
        },
    );
    let produced = flow.finish();
    common::await_condition(
        Duration::from_secs(90),
        "every record read by one side or the other",
        || {
            let mut all: HashSet<String> = ours
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.value.clone())
                .collect();
            all.extend(java.reads().into_iter().map(|r| r.value));
            (0..2_000).all(|i| all.contains(&format!("x{i}")))
                && (0..produced).all(|i| all.contains(&format!("y{i}")))
        },
    );

    // What each side read, taken before Java is killed (its partitions would come back to
    // kpipe after the session timeout, uncommitted records and all).
    let samples = watch.finish();
    let stats = pool.stats();
    let ours = ours.lock().unwrap().clone();
    let theirs = java.reads();
    java.kill();
    let summary = Arc::into_inner(pool)
        .expect("the sampler let go of the pool")
        .close(Duration::from_secs(30));
    assert_eq!(summary.stopped_because, None, "{summary:?}");

    let mut ours_once = HashSet::new();
    let twice: Vec<&Read> = ours
        .iter()
        .filter(|r| !ours_once.insert((r.partition, r.offset)))
        .collect();
    let read_by_java: HashSet<(i32, i64)> =
        theirs.iter().map(|r| (r.partition, r.offset)).collect();
    let both: Vec<&Read> = theirs
        .iter()
        .filter(|r| ours_once.contains(&(r.partition, r.offset)))
        .collect();
    let fewest_held = samples.iter().map(|s| s.held.len()).min().unwrap_or(0);
    let gap_of_first = match first {
        First::Kpipe => longest_gap(&ours, &kept, second_joins, settled),
        First::Java => longest_gap(&theirs, &theirs_now, second_joins, settled),
    };
    println!(
        "{protocol:?}, {first:?} first: kpipe holds {kept:?} {:?} after the second member \
         started; kpipe read {} records, Java {} ({} both); {produced} produced while the group \
         changed; kpipe held at least {fewest_held} partition(s) in {} samples, rebalances \
         {rebalances_before} -> {}; the first member's longest pause on the partitions it \
         ended with: {gap_of_first:?}",
        settled - second_joins,
        ours.len(),
        read_by_java.len(),
        both.len(),
        samples.len(),
        stats.rebalances,
    );

    assert_eq!(
        held_in(&stats),
        kept,
        "kpipe ended with the two partitions it held at the split: {stats:?}"
    );
    assert!(
        twice.is_empty(),
        "kpipe read {} records twice, the first {:?}",
        twice.len(),
        twice.first()
    );
    match first {
        First::Kpipe => {
            let strays: Vec<&Read> = theirs
                .iter()
                .filter(|r| !theirs_now.contains(&r.partition))
                .collect();
            assert!(
                strays.is_empty(),
                "Java read {} records of kpipe's partitions {kept:?}, the first {:?}",
                strays.len(),
                strays.first()
            );
            // kpipe commits what it handled before it gives a partition up, and Java starts
            // from the committed offset.
            assert!(
                both.is_empty(),
                "{} records read by both sides, the first {:?}",
                both.len(),
                both.first()
            );
            assert!(
                stats.rebalances > rebalances_before,
                "kpipe took part in the rebalance Java's joining caused: {stats:?}"
            );
        }
        First::Java => {
            // Java commits what it has read when a rebalance begins (classic: before it
            // rejoins; KIP-848: before it acknowledges a revocation) and kpipe starts from the
            // committed offsets. The classic Java consumer goes on fetching while the group
            // rebalances and does not commit the partitions it then gives up, so kpipe may
            // re-read the records Java read meanwhile (a few dozen, under cooperative-sticky),
            // but never one Java read before kpipe joined.
            let early: Vec<&&Read> = both.iter().filter(|r| r.at < second_joins).collect();
            assert!(
                early.is_empty(),
                "kpipe re-read {} records Java had read before kpipe joined, the first {:?}: \
                 it did not start from the group's committed offsets",
                early.len(),
                early.first()
            );
            // The partitions kpipe took were free when it took them: it never held one it
            // then had to give back.
            let extra: Vec<&Sample> = samples
                .iter()
                .filter(|s| !s.held.is_subset(&kept))
                .collect();
            assert!(
                extra.is_empty(),
                "kpipe held partitions beyond its final {kept:?}: {:?}",
                extra.first().map(|s| s.show(second_joins))
            );
        }
    }
    if !protocol.incremental() {
        return;
    }
    match first {
        First::Kpipe => {
            // kpipe never gave up the partitions it keeps, not for a moment...
            let dropped: Vec<&Sample> = samples
                .iter()
                .filter(|s| !kept.is_subset(&s.held))
                .collect();
            assert!(
                dropped.is_empty(),
                "kpipe let go of {kept:?}, which it kept, in {} of {} samples, the first {:?}",
                dropped.len(),
                samples.len(),
                dropped.first().map(|s| s.show(second_joins))
            );
            // ...and kept handling them between giving up the others and Java's taking them.
            let gave_up = ours
                .iter()
                .filter(|r| !kept.contains(&r.partition))
                .map(|r| r.at)
                .max()
                .expect("kpipe read the partitions it later gave up");
            let java_took = theirs
                .iter()
                .map(|r| r.at)
                .min()
                .expect("Java read records");
            let meanwhile = ours
                .iter()
                .filter(|r| kept.contains(&r.partition) && r.at > gave_up && r.at < java_took)
                .count();
            println!(
                "{protocol:?}: kpipe handed its last record of the moved partitions {:?} after \
                 Java started, Java printed its first {:?} later; kpipe handled {meanwhile} \
                 records of {kept:?} in between",
                gave_up - second_joins,
                java_took.saturating_duration_since(gave_up),
            );
            assert!(
                meanwhile > 0,
                "kpipe handled its kept partitions {kept:?} while the others moved to Java"
            );
            if protocol == Protocol::Cooperative {
                // Two rebalances for one join: in the first kpipe (leading) took the moved
                // partitions away from itself, in the second gave them to Java.
                assert!(
                    stats.rebalances >= rebalances_before + 2,
                    "a cooperative hand-over takes two rebalances: {rebalances_before} -> {}",
                    stats.rebalances
                );
            }
        }
        First::Java if protocol == Protocol::Cooperative => {
            // Java, leading, ran the cooperative assignor: the generation kpipe's join
            // started gave it nothing (the partitions were still Java's), the next gave it
            // what Java freed. kpipe usually takes part in both (two rebalances), but its
            // first JoinGroup can be answered only in the second, after Java revoked: then
            // it holds partitions after one. What the hand-over must keep (the partitions
            // kpipe ends with, nothing read twice by kpipe) is checked above.
            let first_held = samples
                .iter()
                .find(|s| !s.held.is_empty())
                .expect("kpipe held partitions");
            assert!(
                first_held.rebalances >= 1,
                "kpipe had partitions before it joined: {}",
                first_held.show(second_joins)
            );
        }
        First::Java => {}
    }
}

/// The partitions a pool's members hold, by the stats.
fn held_in(stats: &ConsumerStats) -> BTreeSet<i32> {
    stats
        .assignments
        .values()
        .flatten()
        .map(|(_, p)| *p)
        .collect()
}

/// What kpipe writes idempotently, Kafka's own console consumer reads back byte for byte,
/// in order; and the batches on the broker carry kpipe's producer id with sequences that
/// run from 0 without a gap.
#[test]
fn the_java_console_consumer_reads_back_idempotent_batches_byte_exact() {
    use kpipe::unstable::{FetchParams, FetchTarget};
    use kpipe::{Producer, ProducerRecord};

    let _serial = common::serial(&SERIAL);
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "idem-interop", 1);
    let mut config = common::producer_config(&topic);
    config.idempotence = Some(true);
    config.batch_bytes = 2048; // many batches, several in flight
    let producer = Producer::new(config).unwrap();
    let who = producer
        .stats()
        .producer
        .expect("an idempotent producer has an id");
    // Keys and values with multi-byte UTF-8 and separators the tool must pass through.
    let sent: Vec<(String, String)> = (0..3_000)
        .map(|i| {
            let key = format!("k{}-é", i % 17);
            let value = format!("v{i}:{}|✓ {}", "αβγ".repeat(i % 5), "x".repeat(i % 300));
            (key, value)
        })
        .collect();
    for (k, v) in &sent {
        producer
            .send(ProducerRecord::new(v.clone()).key(k.clone()))
            .unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, 3_000, "{summary:?}");
    assert_eq!(summary.producer, Some(who), "{summary:?}");

    // The batch headers, read raw from the broker.
    let info = cluster.topic(&topic).unwrap().clone();
    let params = FetchParams {
        max_wait: Duration::from_millis(50),
        partition_max_bytes: 8 << 20,
        decode_lazily: true,
        ..FetchParams::default()
    };
    let (mut offset, mut next_seq, mut batches) = (0i64, 0i32, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while offset < 3_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "fetching back took over 60 s"
        );
        let target = FetchTarget {
            topic: topic.clone(),
            topic_id: info.id,
            partition: 0,
            offset,
            current_leader_epoch: None,
            replica: None,
        };
        for r in cluster.fetch(&params, &[target]).unwrap() {
            for h in r.result.unwrap().batches.headers().unwrap() {
                if h.base_offset < offset {
                    continue;
                }
                assert_eq!(
                    (h.producer.id, h.producer.epoch),
                    (who.id, who.epoch),
                    "{h:?}"
                );
                assert_eq!(
                    h.producer.base_sequence, next_seq,
                    "a gap or a repeat: {h:?}"
                );
                next_seq += h.records;
                offset = h.base_offset + h.records as i64;
                batches += 1;
            }
        }
    }
    assert_eq!(next_seq, 3_000);
    assert!(batches > 5, "only {batches} batches: the test meant many");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let out = Command::new(script)
        .args([
            "run-class",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
        ])
        .args(["--bootstrap-server", &common::brokers(), "--topic", &topic])
        .args([
            "--from-beginning",
            "--max-messages",
            "3000",
            "--timeout-ms",
            "60000",
        ])
        .args([
            "--property",
            "print.key=true",
            "--property",
            "key.separator=\t",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run the Java console consumer through scripts/kafka");
    let text = String::from_utf8(out.stdout).expect("the tool printed UTF-8");
    let got: Vec<&str> = text.lines().filter(|l| l.starts_with('k')).collect();
    let want: Vec<String> = sent.iter().map(|(k, v)| format!("{k}\t{v}")).collect();
    assert_eq!(got.len(), want.len(), "records read by the Java consumer");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "record {i} differs");
    }
}
