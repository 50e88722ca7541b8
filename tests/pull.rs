//! The pull API, `kpipe::Consumer`, against the real broker: poll and commit, seek, pause and
//! resume, the rebalance listener's calls and their order, and close.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Protocol;
use kpipe::client::TopicPartition;
use kpipe::consumer::{Error, RebalanceListener};
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig};

fn config(group: &str, topic: &str) -> ConsumerConfig {
    common::consumer_config(group, topic, 1)
}

/// Poll until `n` records came (or panic after a minute).
fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumedRecord> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records in 60 s",
            got.len()
        );
        got.extend(consumer.poll(Duration::from_millis(200)).unwrap());
    }
    got
}

/// Poll for `d`, returning what came.
fn poll_for(consumer: &mut Consumer, d: Duration) -> Vec<ConsumedRecord> {
    let until = Instant::now() + d;
    let mut got = Vec::new();
    while Instant::now() < until {
        got.extend(consumer.poll(Duration::from_millis(100)).unwrap());
    }
    got
}

fn value(r: &ConsumedRecord) -> String {
    String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap()
}

#[test]
fn poll_hands_out_records_and_commit_makes_the_next_member_start_after_them() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "pull", 2);
    let group = common::unique_topic("pull-g");
    common::produce(&topic, "a", 1_000);
    let mut c = config(&group, &topic);
    c.auto_commit = false;
    c.max_poll_records = 100;
    let mut consumer = Consumer::new(c.clone()).unwrap();
    let got = poll_n(&mut consumer, 1_000);
    assert_eq!(got.len(), 1_000, "exactly the records produced");
    let values: BTreeSet<String> = got.iter().map(value).collect();
    assert_eq!(values.len(), 1_000);
    assert_eq!(consumer.assignment().len(), 2);
    assert_eq!(consumer.committed(&topic, 0), None, "nothing committed yet");
    consumer.commit().unwrap();
    let ends: i64 = [0, 1]
        .iter()
        .map(|&p| consumer.committed(&topic, p).unwrap())
        .sum();
    assert_eq!(ends, 1_000, "committed up to what was handed out");
    // commit says what was handed out is processed: all of it is finished.
    let stats = consumer.stats();
    assert_eq!((stats.handled, stats.handed_out), (1_000, 1_000));
    let summary = consumer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(summary.handled, 1_000);
    let committed: i64 = summary.committed.values().sum();
    assert_eq!(
        committed, 1_000,
        "the summary reports the offsets committed"
    );

    common::produce(&topic, "b", 10);
    let mut next = Consumer::new(c).unwrap();
    let got = poll_n(&mut next, 10);
    thread::sleep(Duration::from_millis(300));
    let more = next.poll(Duration::from_millis(300)).unwrap();
    next.close(Duration::from_secs(30)).unwrap();
    assert!(more.is_empty(), "nothing after the 10: {more:?}");
    assert!(
        got.iter().all(|r| value(r).starts_with('b')),
        "only the new records"
    );
}

#[test]
fn auto_commit_commits_what_earlier_polls_handed_out_and_close_commits_the_rest() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "pull-auto", 1);
    let group = common::unique_topic("pull-auto-g");
    common::produce(&topic, "a", 300);
    let mut c = config(&group, &topic);
    c.max_poll_records = 100;
    c.commit_interval = Duration::from_millis(200);
    let mut consumer = Consumer::new(c).unwrap();
    let first = poll_n(&mut consumer, 100);
    assert_eq!(first.len(), 100);
    // The next polls say the first hundred are finished; the interval commit takes them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.committed(&topic, 0) != Some(100) {
        assert!(Instant::now() < deadline, "the first 100 committed");
        // Poll nothing new: pause, so the position stays at 100.
        consumer.pause(&[(topic.clone(), 0)]).unwrap();
        assert!(consumer.poll(Duration::from_millis(50)).unwrap().is_empty());
    }
    consumer.resume(&[(topic.clone(), 0)]).unwrap();
    let rest = poll_n(&mut consumer, 200);
    assert_eq!(rest.len(), 200);
    assert_eq!(rest[0].offset, 100, "resumed where it paused");
    consumer.close(Duration::from_secs(30)).unwrap();
    let mut cluster = common::cluster();
    let committed = committed_offsets(&mut cluster, &group, &topic, 1);
    assert_eq!(committed, [300], "close committed what was handed out");
}

#[test]
fn a_consumer_dropped_without_close_commits_only_what_earlier_polls_handed_out() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "pull-drop", 1);
    let group = common::unique_topic("pull-drop-g");
    common::produce(&topic, "a", 300);
    let mut c = config(&group, &topic);
    c.max_poll_records = 100;
    // No interval commit during the test: only the drop commits.
    c.commit_interval = Duration::from_secs(3600);
    let run = |consumer: &mut Consumer| -> Result<(), String> {
        poll_n(consumer, 100); // processed: the next poll says so
        let second = poll_n(consumer, 100);
        // Processing the second poll's records fails: an early return, as `?` would.
        Err(format!("failed at offset {}", second[0].offset))
    };
    let mut consumer = Consumer::new(c).unwrap();
    assert_eq!(run(&mut consumer), Err("failed at offset 100".into()));
    assert_eq!(consumer.position(&topic, 0), Some(200));
    drop(consumer);
    let committed = committed_offsets(&mut cluster, &group, &topic, 1);
    assert_eq!(
        committed,
        [100],
        "the drop commits the first poll's records, not the second's (being processed)"
    );
}

/// The group's committed offsets, read by a fresh consumer of the group (without polling
/// records).
fn committed_offsets(
    _cluster: &mut kpipe::client::Cluster,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<i64> {
    let mut c = config(group, topic);
    c.auto_commit = false;
    c.offset_reset = kpipe::consumer::OffsetReset::Latest;
    let mut reader = Consumer::new(c).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.assignment().len() < partitions as usize {
        assert!(Instant::now() < deadline, "assignment in 30 s");
        reader.poll(Duration::from_millis(100)).unwrap();
    }
    let out = (0..partitions)
        .map(|p| reader.committed(topic, p).unwrap_or(-1))
        .collect();
    reader.close(Duration::from_secs(30)).unwrap();
    out
}

#[test]
fn seek_pause_and_resume_move_what_poll_hands_out() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "pull-seek", 2);
    let group = common::unique_topic("pull-seek-g");
    common::produce(&topic, "a", 400);
    let mut consumer = Consumer::new(config(&group, &topic)).unwrap();
    let got = poll_n(&mut consumer, 400);
    let per_partition =
        |rs: &[ConsumedRecord], p: i32| rs.iter().filter(|r| r.partition == p).count();
    let on_zero = per_partition(&got, 0);
    assert!(on_zero > 10, "keys spread over both partitions");
    assert_eq!(consumer.position(&topic, 0), Some(on_zero as i64));

    consumer.seek(&topic, 0, 5).unwrap();
    assert_eq!(consumer.position(&topic, 0), Some(5));
    let again = poll_n(&mut consumer, on_zero - 5);
    assert!(
        again.iter().all(|r| r.partition == 0),
        "only partition 0 is behind"
    );
    assert_eq!(
        again.first().map(|r| r.offset),
        Some(5),
        "from the offset sought"
    );
    assert_eq!(again.last().map(|r| r.offset), Some(on_zero as i64 - 1));

    consumer.pause(&[(topic.clone(), 0)]).unwrap();
    assert_eq!(consumer.paused(), [(topic.clone(), 0)]);
    common::produce(&topic, "b", 400);
    let while_paused = poll_n(&mut consumer, 400 - on_zero.min(399));
    let more = poll_for(&mut consumer, Duration::from_millis(500));
    assert!(
        while_paused.iter().chain(&more).all(|r| r.partition == 1),
        "nothing of the paused partition"
    );
    consumer.resume(&[(topic.clone(), 0)]).unwrap();
    assert!(consumer.paused().is_empty());
    let resumed = poll_for(&mut consumer, Duration::from_secs(2));
    assert!(
        resumed.iter().any(|r| r.partition == 0),
        "partition 0 flows again"
    );

    let err = consumer.seek(&topic, 7, 0).unwrap_err();
    assert!(
        matches!(err, Error::NotAssigned { partition: 7, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not assigned"), "{err}");
    let err = consumer
        .commit_offsets(&BTreeMap::from([((topic.clone(), 9), 1)]))
        .unwrap_err();
    assert!(matches!(err, Error::NotAssigned { .. }), "{err}");
    consumer.close(Duration::from_secs(30)).unwrap();
}

/// Listener calls: ("assigned" | "revoked" | "lost", partitions).
type Calls = Arc<Mutex<Vec<(String, Vec<i32>)>>>;

/// Notes every call, and commits what was handed out when partitions are revoked.
#[derive(Clone, Default)]
struct Recorder {
    calls: Calls,
    commit_on_revoke: bool,
    try_poll: bool,
    poll_refused: Arc<AtomicBool>,
}

impl Recorder {
    fn note(&self, what: &str, partitions: &[TopicPartition]) {
        let mut ps: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        ps.sort();
        self.calls.lock().unwrap().push((what.to_owned(), ps));
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.note("assigned", partitions);
        for (t, p) in partitions {
            assert!(
                consumer.position(t, *p).is_some(),
                "positions are set before on_assigned"
            );
        }
        if self.try_poll {
            let refused = matches!(consumer.poll(Duration::ZERO), Err(Error::Misuse(_)));
            self.poll_refused.store(refused, Ordering::SeqCst);
        }
    }
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.note("revoked", partitions);
        if self.commit_on_revoke && !partitions.is_empty() {
            consumer.commit().unwrap();
        }
    }
    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.note("lost", partitions);
    }
}

/// A consumer polling on a thread of its own, recording values, until told to stop.
struct Runner {
    stop: Arc<AtomicBool>,
    values: Arc<Mutex<Vec<String>>>,
    thread: thread::JoinHandle<Consumer>,
}

impl Runner {
    fn start(mut consumer: Consumer) -> Runner {
        let stop = Arc::new(AtomicBool::new(false));
        let values = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), values.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let got = consumer.poll(Duration::from_millis(50)).unwrap();
                v.lock().unwrap().extend(got.iter().map(value));
            }
            consumer
        });
        Runner {
            stop,
            values,
            thread,
        }
    }

    fn finish(self) -> (Consumer, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let consumer = self.thread.join().unwrap();
        let values = self.values.lock().unwrap().clone();
        (consumer, values)
    }
}

fn listener_order(protocol: Protocol) {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "pull-listen", 4);
    let group = common::unique_topic("pull-listen-g");
    common::produce(&topic, "a", 2_000);
    let mut c = config(&group, &topic);
    c.auto_commit = false;
    protocol.apply(&mut c);
    let first = Recorder {
        commit_on_revoke: true,
        try_poll: true,
        ..Recorder::default()
    };
    let a = Runner::start(Consumer::with_listener(c.clone(), first.clone()).unwrap());
    common::await_condition(Duration::from_secs(60), "A reading", || {
        a.values.lock().unwrap().len() >= 500
    });
    let second = Recorder {
        commit_on_revoke: true,
        ..Recorder::default()
    };
    let b = Runner::start(Consumer::with_listener(c.clone(), second.clone()).unwrap());
    common::await_condition(Duration::from_secs(60), "B given partitions", || {
        second
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|(what, _)| what == "assigned")
    });
    common::produce(&topic, "b", 2_000);
    common::await_condition(
        Duration::from_secs(60),
        "every record read once by A or B",
        || {
            let mut all: BTreeSet<String> = a.values.lock().unwrap().iter().cloned().collect();
            all.extend(b.values.lock().unwrap().iter().cloned());
            all.len() == 4_000
        },
    );
    let (a, a_values) = a.finish();
    let (b, b_values) = b.finish();
    a.close(Duration::from_secs(30)).unwrap();
    b.close(Duration::from_secs(30)).unwrap();
    let a_calls = first.calls.lock().unwrap().clone();
    let b_calls = second.calls.lock().unwrap().clone();
    println!("{protocol:?}: A {a_calls:?}\n{protocol:?}: B {b_calls:?}");
    assert!(
        first.poll_refused.load(Ordering::SeqCst),
        "poll inside a listener is refused"
    );
    assert_eq!(
        a_calls[0],
        ("assigned".into(), vec![0, 1, 2, 3]),
        "A got everything first"
    );
    // Then A gave up what B took, before B got it; what A kept it never gave up
    // (cooperative, consumer protocol) or gave up and got back (eager).
    let b_got: Vec<i32> = b_calls
        .iter()
        .filter(|(what, _)| what == "assigned")
        .flat_map(|(_, ps)| ps.clone())
        .collect();
    assert_eq!(b_got.len(), 2, "B got two partitions: {b_calls:?}");
    // Between the first assignment and the close (which gives the rest back).
    let revoked: Vec<i32> = a_calls[1..a_calls.len() - 1]
        .iter()
        .filter(|(what, _)| what == "revoked")
        .flat_map(|(_, ps)| ps.clone())
        .collect();
    if protocol == Protocol::Eager {
        assert_eq!(
            a_calls[1],
            ("revoked".into(), vec![0, 1, 2, 3]),
            "eager: everything given back first"
        );
        assert_eq!(a_calls[2].0, "assigned");
        assert_eq!(a_calls[2].1.len(), 2);
    } else {
        assert_eq!(
            a_calls[1],
            ("revoked".into(), b_got.clone()),
            "{protocol:?}: only what moves is given back"
        );
        assert!(revoked.iter().all(|p| b_got.contains(p)));
    }
    assert!(
        a_calls.iter().all(|(what, _)| what != "lost"),
        "nothing lost in a graceful rebalance"
    );
    // Committed in on_revoked, so B started where A stopped: nothing read twice.
    let total = a_values.len() + b_values.len();
    assert_eq!(total, 4_000, "no record read twice");
    // Closing gives everything back through on_revoked.
    assert_eq!(a_calls.last().unwrap().0, "revoked");
}

#[test]
fn the_listener_hears_an_eager_rebalance_as_everything_revoked_then_assigned() {
    listener_order(Protocol::Eager);
}

#[test]
fn the_listener_hears_a_cooperative_rebalance_as_only_the_moved_partitions_revoked() {
    listener_order(Protocol::Cooperative);
}

#[test]
fn the_listener_hears_a_consumer_protocol_rebalance_as_only_the_moved_partitions_revoked() {
    listener_order(Protocol::Consumer);
}
