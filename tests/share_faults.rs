//! Share groups (KIP-932) through faults: a member killed (-9) while it holds records, and
//! (on the three-node cluster) the group's coordinator killed while a pool consumes. What a
//! share group promises is checked on every delivery the surviving members saw: a record
//! comes again only with a higher delivery count, and in the end the group's coordinator
//! reports every record acknowledged (lag 0 on every partition).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nodes::{kafka, Session};
use common::share::{self, Deliveries, Delivery, Lines};
use kpipe::client::{ClientConfig, Cluster, NewTopic};
use kpipe::consumer::{ConsumerPool, ConsumerStats, MemberState, ShareAcquireMode, ShareConsumer};
use kpipe::producer::DeliveryResult;
use kpipe::{Producer, ProducerRecord};

/// The tests on the three-node cluster act on shared nodes: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The child member's orders, `brokers;group;topic;max_poll_records`, in its environment.
const CHILD_ENV: &str = "KPIPE_SHARE_CHILD";

/// The child member: joins the share group, polls until it gets records, prints them
/// (`ACQUIRED p:offset:count,...`) and then stalls, never acknowledging them, until it is
/// killed. Run only by the tests built on [`Stalled`], which start this test binary again
/// with `--exact share_child_member --ignored`.
#[test]
#[ignore = "a child process: the tests of this file that kill a member start it"]
fn share_child_member() {
    let spec = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!(
            "share_child_member is a child process, not a test: the tests of share_faults.rs \
             that kill a member start it with {CHILD_ENV} set"
        )
    });
    let parts: Vec<&str> = spec.split(';').collect();
    let [brokers, group, topic, max] = parts[..] else {
        panic!("{CHILD_ENV}={spec:?}: want brokers;group;topic;max_poll_records");
    };
    let mut config = share::config(brokers, group, topic);
    config.max_poll_records = max.parse().unwrap();
    config.share_acquire_mode = ShareAcquireMode::RecordLimit;
    let mut consumer = ShareConsumer::new(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "the child acquired nothing in 60 s"
        );
        let got = consumer.poll(Duration::from_millis(200)).unwrap();
        if !got.is_empty() {
            break got;
        }
    };
    let list: Vec<String> = got
        .iter()
        .map(|r| format!("{}:{}:{}", r.partition, r.offset, r.delivery_count.unwrap()))
        .collect();
    println!("ACQUIRED {}", list.join(","));
    // Stall: hold the records, never acknowledge them, heartbeat on (the group thread),
    // until the parent kills this process. Bounded, should the parent die first.
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the child member was not killed within 120 s");
}

/// A child process killed (SIGKILL) when dropped, whatever path the test takes.
struct ChildMember(Child);

impl ChildMember {
    fn start(brokers: &str, group: &str, topic: &str, max: usize) -> ChildMember {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .args(["--exact", "share_child_member", "--nocapture", "--ignored"])
            .env(CHILD_ENV, format!("{brokers};{group};{topic};{max}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the test binary again as the child member");
        ChildMember(child)
    }

    /// SIGKILL, by pid; returns once the process is gone.
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL the child member");
        let status = self.0.wait().unwrap();
        assert!(
            !status.success(),
            "the child member ended by itself: {status}"
        );
    }
}

impl Drop for ChildMember {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ACQUIRED p:o:c,...` as (partition, offset, delivery count).
fn parse_acquired(line: &str) -> Vec<(i32, i64, u16)> {
    line.trim_start_matches("ACQUIRED ")
        .split(',')
        .map(|item| {
            let f: Vec<&str> = item.split(':').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// A share group with a member in another process that holds records it acquired and
/// never acknowledges them (it stalls), beside two kpipe members (the survivors) reading the
/// rest of a one-partition topic, so that every member shares the partition.
struct Stalled {
    cluster: kpipe::client::Cluster,
    topic: String,
    group: String,
    /// When the child was started: it acquired its records after this.
    spawned: Instant,
    /// When the child printed what it acquired, since `spawned`.
    child_said: Duration,
    child: ChildMember,
    /// (partition, offset) of the records the child acquired.
    held: BTreeSet<(i32, i64)>,
    deliveries: Deliveries,
    pool: ConsumerPool,
}

impl Stalled {
    /// `n` records produced, then the child started (it acquires 100 of them, the group
    /// starting at the earliest record), then the survivors, once the child has its records.
    fn start(prefix: &str, configs: &[(&str, &str)], n: usize) -> Stalled {
        let mut cluster = common::cluster();
        let topic = common::new_topic(&mut cluster, prefix, 1);
        let group = common::unique_topic(&format!("{prefix}-group"));
        let mut all = vec![("share.auto.offset.reset", "earliest")];
        all.extend_from_slice(configs);
        share::group_configs(&mut cluster, &group, &all);
        common::produce(&topic, "v", n);

        let spawned = Instant::now();
        let mut child = ChildMember::start(&common::brokers(), &group, &topic, 100);
        let mut lines = Lines::read(child.0.stdout.take().unwrap(), "the child member");
        let acquired = parse_acquired(&lines.until("ACQUIRED ", Duration::from_secs(60)));
        let child_said = spawned.elapsed();
        assert!(
            !acquired.is_empty() && acquired.iter().all(|&(_, _, c)| c == 1),
            "the child got first deliveries: {acquired:?}"
        );
        let held = acquired.iter().map(|&(p, o, _)| (p, o)).collect();

        // Small acquisitions and a little work per record.
        let deliveries = Deliveries::default();
        let mut config = share::config(&common::brokers(), &group, &topic);
        config.threads = 2;
        config.max_poll_records = 20;
        config.share_acquire_mode = ShareAcquireMode::RecordLimit;
        let pool = deliveries.pool(config, Duration::from_millis(2));
        Stalled {
            cluster,
            topic,
            group,
            spawned,
            child_said,
            child,
            held,
            deliveries,
            pool,
        }
    }

    /// The survivors' deliveries of the records the child held.
    fn held_back(&self) -> Vec<Delivery> {
        let held = &self.held;
        self.deliveries
            .all()
            .into_iter()
            .filter(|d| held.contains(&(d.partition, d.offset)))
            .collect()
    }

    /// Since the child was started.
    fn since(&self, at: Instant) -> Duration {
        at.duration_since(self.spawned)
    }

    /// Wait until the survivors got all `n` records and the group has every record
    /// acknowledged, close the pool and check what the survivors saw: each record came
    /// first to them on its first delivery, except the child's, which came on their
    /// second; nothing came again without a higher count; the pool accepted each once.
    /// Prints `test`'s line; returns the survivors' first deliveries of the child's records.
    fn finish(mut self, test: &str, n: usize, killed: Duration) -> Vec<Delivery> {
        let deliveries = self.deliveries.clone();
        common::await_condition(
            Duration::from_secs(60),
            "every record delivered to the survivors",
            || {
                deliveries
                    .all()
                    .iter()
                    .map(|d| (d.partition, d.offset))
                    .collect::<BTreeSet<_>>()
                    .len()
                    == n
            },
        );
        let offsets = share::await_all_acknowledged(
            &mut self.cluster,
            &self.group,
            1,
            Duration::from_secs(30),
        );
        let summary = self.pool.close(Duration::from_secs(20)).expect("close");
        let all = deliveries.all();
        let again = share::check_deliveries(test, &all);
        let mut first: BTreeMap<(i32, i64), &Delivery> = BTreeMap::new();
        for d in &all {
            let f = first.entry((d.partition, d.offset)).or_insert(d);
            if d.at < f.at {
                *f = d;
            }
        }
        let back: Vec<Delivery> = self.held.iter().map(|k| first[k].clone()).collect();
        let spawned = self.spawned;
        let times: Vec<Duration> = back.iter().map(|d| d.at.duration_since(spawned)).collect();
        println!(
            "{test}: the child acquired {} records of {} (offsets {}..={}), said so {:?} after \
             its start; killed at {killed:?}; its records came back to the survivors from \
             {:?} to {:?}; the survivors saw {} deliveries, {again} records more than once; \
             {summary:?}; group offsets {offsets:?}",
            self.held.len(),
            self.topic,
            self.held.first().unwrap().1,
            self.held.last().unwrap().1,
            self.child_said,
            times.iter().min().unwrap(),
            times.iter().max().unwrap(),
            all.len()
        );
        let counts = back.iter().fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d.count).or_insert(0) += 1;
            m
        });
        assert_eq!(
            counts,
            BTreeMap::from([(2u16, self.held.len())]),
            "{test}: the child's records came to the survivors on their second delivery"
        );
        let others: Vec<&&Delivery> = first
            .iter()
            .filter(|(k, d)| !self.held.contains(k) && d.count != 1)
            .map(|(_, d)| d)
            .collect();
        assert!(
            others.is_empty(),
            "{test}: the records the child did not hold came first to the survivors: {others:?}"
        );
        assert!(summary.stopped_because.is_none(), "{test}: {summary:?}");
        assert_eq!(
            (
                summary.acknowledged,
                summary.redelivered,
                summary.acknowledge_failures
            ),
            (n as u64, self.held.len() as u64, 0),
            "{test}: the survivors accepted every record once, the child's on a redelivery: \
             {summary:?}"
        );
        back
    }
}

/// The child is killed (-9) while it holds its records, long before their acquisition lock
/// (the broker's 30 s) runs out. Its records must not reach the survivors before the kill
/// and must reach them, on their second delivery, soon after it: the broker releases what
/// a member holds when the member's connection closes (Kafka 4.x's share session cache
/// listens for disconnects), not when the lock runs out.
#[test]
fn a_member_killed_while_holding_records_has_them_delivered_again_at_once() {
    let test = "killed while holding";
    let n = 600;
    let mut run = Stalled::start("share-kill", &[], n);
    let deliveries = run.deliveries.clone();
    common::await_condition(Duration::from_secs(30), "the survivors at work", || {
        deliveries.len() >= 50
    });
    let early = run.held_back();
    let killed_at = Instant::now();
    run.child.kill();
    let killed = run.since(killed_at);
    assert!(
        early.is_empty(),
        "{test}: records the child held reached the survivors before it died: {early:?}"
    );
    let back = run.finish(test, n, killed);
    let latest = back.iter().map(|d| d.at).max().unwrap();
    // Released on the disconnect: well inside the 30 s lock (a generous bound for a busy
    // machine; measured: within 0.2 s of the kill).
    assert!(
        latest.duration_since(killed_at) < Duration::from_secs(10),
        "{test}: the child's records came back {:?} after the kill",
        latest.duration_since(killed_at)
    );
}

/// The child stalls, alive and heartbeating, its connection open, while its records' 3 s
/// acquisition lock runs out: they must reach the survivors, on their second delivery, no
/// sooner than 3 s after the child started (it acquired them after that). Then the child is
/// killed (-9) mid-run, holding nothing, and the group reads on without it: records
/// produced after the kill are all read, and every record ends acknowledged.
#[test]
fn a_stalled_member_s_records_come_back_when_their_lock_runs_out_and_it_is_killed() {
    let test = "stalled past its lock, then killed";
    let lock = Duration::from_secs(3);
    let n = 600;
    let mut run = Stalled::start(
        "share-stall",
        &[("share.record.lock.duration.ms", "3000")],
        n,
    );
    let held = run.held.len();
    let deliveries = run.deliveries.clone();
    let run_ref = &run;
    common::await_condition(Duration::from_secs(30), "the child's records back", || {
        run_ref.held_back().len() == held
    });
    let first_back = run.held_back().iter().map(|d| d.at).min().unwrap();
    assert!(
        run.since(first_back) >= lock,
        "{test}: the child's records came back {:?} after it started, before their {lock:?} \
         lock could run out",
        run.since(first_back)
    );
    let alive = run.child.0.try_wait().unwrap();
    assert!(
        alive.is_none(),
        "{test}: the child ended by itself: {alive:?}"
    );
    let killed_at = Instant::now();
    run.child.kill();
    let killed = run.since(killed_at);
    // The group reads on: what is produced after the kill comes too.
    common::produce(&run.topic, "w", 200);
    let after = deliveries.clone();
    common::await_condition(
        Duration::from_secs(30),
        "records produced after the kill",
        || (0..200).all(|i| after.has_value(&format!("w{i}"))),
    );
    run.finish(test, n + 200, killed);
}

/// The three-node cluster (`scripts/kafka up --nodes 3`).
fn cluster_brokers() -> String {
    std::env::var("KPIPE_CLUSTER_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096".to_owned())
}

fn cluster_config() -> ClientConfig {
    let mut c = ClientConfig::new(cluster_brokers().split(','));
    c.connection.client_id = "kpipe-share-faults".into();
    c.connection.connect_timeout = Duration::from_secs(5);
    c.connection.request_timeout = Duration::from_secs(10);
    c
}

fn connect_cluster() -> Cluster {
    Cluster::connect(cluster_config()).unwrap_or_else(|e| {
        panic!(
            "this test needs the three-node cluster at {}: {e}\n\
             start it with ./scripts/kafka up --nodes 3 (./scripts/test does this for you)",
            cluster_brokers()
        )
    })
}

/// A look-up of scripts/kafka (`coordinator GROUP`, `leader TOPIC P`: its own requests,
/// not kpipe's) as it answers now; `None` while it has no answer (no coordinator available,
/// no leader).
fn look_up(args: &[&str]) -> Option<String> {
    let script = std::env::var("KPIPE_KAFKA_SCRIPT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka").to_owned());
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("run scripts/kafka");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A producer sending `c0`, `c1`... at `rate` a second until finished, noting when each
/// was acknowledged.
struct Feed {
    acked: Arc<Mutex<HashMap<u64, Instant>>>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    producer: Producer,
}

impl Feed {
    fn start(topic: &str, rate: u64) -> Feed {
        let mut config = kpipe::ProducerConfig::new(&cluster_brokers()).topic(topic);
        config.client = cluster_config();
        // Far beyond the 10-12 s acks=all stalls while a killed node is fenced.
        config.delivery_timeout = Duration::from_secs(90);
        let producer = Producer::new(config).unwrap();
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (p, acked, sent, stop) =
                (producer.clone(), acked.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait); // the pace, not a synchronisation
                    }
                    let acked = acked.clone();
                    let record = ProducerRecord::new(format!("c{i}")).key(format!("k{}", i % 30));
                    let r = p.send_with_callback(record, move |r: DeliveryResult| {
                        if r.is_ok() {
                            acked.lock().unwrap().insert(i, Instant::now());
                        }
                    });
                    if r.is_ok() {
                        i += 1;
                        sent.store(i, Ordering::Relaxed);
                    }
                }
            })
        };
        Feed {
            acked,
            sent,
            stop,
            thread: Some(thread),
            producer,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stop, close the producer; every record sent and the producer's summary.
    fn finish(mut self) -> (u64, kpipe::producer::Summary, HashMap<u64, Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let summary = self.producer.close(Duration::from_secs(90)).unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (self.sent(), summary, acked)
    }
}

/// Both members of a two-member share pool are in the group (stable, with an epoch) and
/// have partitions.
fn settled(stats: &ConsumerStats) -> bool {
    stats.members.len() == 2
        && stats
            .members
            .values()
            .all(|m| m.state == MemberState::Stable && m.generation > 0)
        && stats.assignments.len() == 2
        && stats.assignments.values().all(|a| !a.is_empty())
}

/// A share pool of two members reads a replicated topic (3 partitions, RF 3, min ISR 2)
/// while a producer writes to it; the share group's coordinator (the leader of its
/// `__consumer_offsets` partition, found by scripts/kafka's FindCoordinator) is killed (-9),
/// and the producer goes on. The members must find the new coordinator and go on
/// heartbeating there: once the group has moved, a record produced after that is read,
/// both members are stable again with the member id, epoch and partitions they had (no
/// member fenced). Nothing may be lost: every record produced is handled, none rejected,
/// none delivered as often as the broker's delivery limit (5, after which it would be
/// archived unaccepted), and the group ends with lag 0 on every partition. Records come
/// again only with a higher delivery count, but for one case the broker allows: a record
/// the killed node (when it led a partition) delivered, acquired and unacknowledged when it
/// died, comes from the new leader with the same count. Prints what came again, and when.
#[test]
fn a_killed_share_group_coordinator_is_found_again_and_nothing_is_lost() {
    let test = "share group coordinator kill -9";
    let _s = Session::begin(&SERIAL);
    let mut cluster = connect_cluster();
    let topic = common::unique_topic("share-coord");
    let t = NewTopic::new(&topic, 3, 3).config("min.insync.replicas", "2");
    cluster.create_topic(&t, Duration::from_secs(60)).unwrap();
    let group = common::unique_topic("share-coord-group");
    share::group_configs(
        &mut cluster,
        &group,
        &[
            ("share.auto.offset.reset", "earliest"),
            // Acknowledgements lost with a dead leader are redelivered within 5 s.
            ("share.record.lock.duration.ms", "5000"),
        ],
    );

    let deliveries = Deliveries::default();
    let mut config = share::config(&cluster_brokers(), &group, &topic);
    config.client = cluster_config();
    config.threads = 2;
    let pool = deliveries.pool(config, Duration::from_millis(1));
    common::await_condition(Duration::from_secs(60), "both members settled", || {
        settled(&pool.stats())
    });
    let feed = Feed::start(&topic, 300);
    common::await_condition(Duration::from_secs(60), "records flowing", || {
        deliveries.len() >= 500
    });

    let coordinator = kafka(&["coordinator", &group]);
    assert_eq!(
        cluster.find_coordinator(&group).unwrap().to_string(),
        coordinator,
        "{test}: kpipe's FindCoordinator agrees with scripts/kafka's"
    );
    let led: Vec<i32> = (0..3)
        .filter(|p| kafka(&["leader", &topic, &p.to_string()]) == coordinator)
        .collect();
    let at_kill = pool.stats();
    assert!(
        settled(&at_kill),
        "{test}: settled at the kill: {at_kill:?}"
    );
    let killed_at = Instant::now();
    let sent_at_kill = feed.sent();
    kafka(&["kill", &coordinator]);

    let mut moved_to = None;
    common::await_condition(
        Duration::from_secs(90),
        "the group on another coordinator",
        || {
            moved_to = look_up(&["coordinator", &group]).filter(|c| *c != coordinator);
            moved_to.is_some()
        },
    );
    let moved = killed_at.elapsed();
    common::await_condition(Duration::from_secs(60), "new leaders", || {
        led.iter()
            .all(|p| look_up(&["leader", &topic, &p.to_string()]).is_some_and(|l| l != coordinator))
    });
    let failover = killed_at.elapsed();
    // A record sent once the group moved is read: the members fetch on.
    let mark = feed.sent();
    let probe = format!("c{mark}");
    common::await_condition(
        Duration::from_secs(60),
        "a record produced after the move read",
        || deliveries.has_value(&probe),
    );
    let probe_read = killed_at.elapsed();
    // And the members heartbeat on at the new coordinator.
    common::await_condition(Duration::from_secs(60), "both members stable again", || {
        settled(&pool.stats())
    });
    let (sent, produced, acked) = feed.finish();
    assert_eq!(
        (produced.delivered, produced.failed, acked.len() as u64),
        (sent, 0, sent),
        "{test}: the producer delivered everything it sent: {produced:?}"
    );
    common::await_condition(
        Duration::from_secs(120),
        "every record produced read",
        || deliveries.distinct_values() as u64 == sent,
    );
    let offsets = share::await_all_acknowledged(&mut cluster, &group, 3, Duration::from_secs(60));
    let stats = pool.stats();
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    kafka(&["start", &coordinator]);
    kafka(&["wait-in-sync", &topic, "120"]);

    let all = deliveries.all();
    let max_count = all.iter().map(|d| d.count).max().unwrap_or(0);
    let after_kill = all.iter().filter(|d| d.at >= killed_at).count();
    let records = share::by_record(&all);
    let again = records.values().filter(|ds| ds.len() > 1).count();
    // A delivery's count and time since the kill (negative: before it), for messages.
    let when = |d: &Delivery| {
        let (sign, t) = match d.at.checked_duration_since(killed_at) {
            Some(t) => ('+', t),
            None => ('-', killed_at - d.at),
        };
        format!("#{} {} {sign}{:.1}s", d.count, d.member, t.as_secs_f64())
    };
    let repeated: Vec<String> = records
        .iter()
        .filter(|(_, ds)| ds.len() > 1)
        .map(|((p, o), ds)| format!("{p}@{o}: {:?}", ds.iter().map(when).collect::<Vec<_>>()))
        .collect();
    // A record of a partition the killed node led, delivered by it and again by the new
    // leader, may come with the same count: the new leader knows only the delivery counts
    // the old one had written to the group's state, and an acquisition is not written.
    // Any other repeat without a higher count breaks the promise. The old leader's last
    // records are handled within a second of the kill; the new leader serves once the
    // dead node is fenced (broker.session.timeout.ms, 9 s): 5 s tells them apart.
    let cut = killed_at + Duration::from_secs(5);
    let (excused, broken): (Vec<_>, Vec<_>) =
        share::broken_promises(&all).into_iter().partition(|ds| {
            led.contains(&ds[0].partition)
                && ds
                    .windows(2)
                    .all(|w| w[0].count < w[1].count || (w[0].at < cut && w[1].at >= cut))
        });
    let show = |v: &[Vec<Delivery>]| -> Vec<String> {
        v.iter()
            .map(|ds| {
                format!(
                    "{}@{}: {:?}",
                    ds[0].partition,
                    ds[0].offset,
                    ds.iter().map(when).collect::<Vec<_>>()
                )
            })
            .collect()
    };
    println!(
        "{test}: node {coordinator} (leader of partitions {led:?}) killed with {sent_at_kill} \
         records sent, the group moved to node {} {moved:?} later; record {mark} (sent after \
         the move) read {probe_read:?} after the kill; {sent} records sent, {} deliveries \
         ({after_kill} after the kill), {again} records delivered more than once, highest \
         delivery count {max_count}; {summary:?}; fetch errors {}; group offsets {offsets:?}",
        moved_to.as_deref().unwrap_or("?"),
        all.len(),
        stats.fetch_errors,
    );
    println!("{test}: new leaders for {led:?} seen {failover:?} after the kill");
    println!("{test}: delivered more than once: {repeated:?}");
    let standing = |st: &ConsumerStats, m: usize| match st.members.get(&m) {
        Some(s) => format!(
            "{:?} {} epoch {} partitions {:?}",
            s.state,
            s.member_id,
            s.generation,
            st.assignments
                .get(&m)
                .map(|a| a.iter().map(|(_, p)| *p).collect::<Vec<_>>())
        ),
        None => "absent".to_owned(),
    };
    println!(
        "{test}: delivered again with the same count after the leader died: {:?}",
        show(&excused)
    );
    for m in 0..2 {
        println!(
            "{test}: member {m} at the kill: {}; at the end: {}",
            standing(&at_kill, m),
            standing(&stats, m)
        );
    }
    assert!(
        broken.is_empty(),
        "{test}: delivered again without a higher delivery count: {:?}",
        show(&broken)
    );
    assert!(
        excused.is_empty() || failover >= Duration::from_secs(5),
        "{test}: new leaders {failover:?} after the kill: 5 s does not tell the old \
         leader's deliveries from the new one's"
    );
    let values: BTreeSet<&str> = all.iter().map(|d| d.value.as_str()).collect();
    let lost: Vec<u64> = (0..sent)
        .filter(|i| !values.contains(format!("c{i}").as_str()))
        .collect();
    assert!(lost.is_empty(), "{test}: never read: {lost:?}");
    assert!(
        max_count < 5,
        "{test}: a record delivered {max_count} times may have been archived unaccepted"
    );
    assert!(summary.stopped_because.is_none(), "{test}: {summary:?}");
    assert_eq!(summary.rejected, 0, "{test}: {summary:?}");
    assert_eq!(
        summary.acknowledged + summary.acknowledge_failures,
        summary.handled,
        "{test}: every acceptance settled, taken or not: {summary:?}"
    );
    assert_eq!(summary.fenced_members, 0, "{test}: {summary:?}");
    for m in 0..2 {
        let (before, after) = (&at_kill.members[&m], &stats.members[&m]);
        assert_eq!(
            (&before.member_id, before.generation),
            (&after.member_id, after.generation),
            "{test}: member {m} keeps its member id and epoch"
        );
        assert_eq!(
            at_kill.assignments.get(&m),
            stats.assignments.get(&m),
            "{test}: member {m} keeps its partitions"
        );
    }
}
