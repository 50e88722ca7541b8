//! The transactional producer (`ProducerConfig::transactional_id`) against real brokers:
//! what it commits is read at read_committed, by kpipe and by the Java console consumer,
//! and what it aborts is not; a second producer with the same transactional id fences the
//! first, whose open transaction is aborted at once and whose commit then fails for good;
//! a consume-transform-produce loop commits the consumer's offsets in its transactions; and
//! misuse (sends outside a transaction, commits without one) is refused with a message
//! saying what to call. On Kafka 4.x (transaction version 2) and, when `./scripts/test`
//! started it, Kafka 3.9.1 (version 1).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kpipe::client::{ClientConfig, Cluster, IsolationLevel, NewTopic, TopicPartition};
use kpipe::producer::{DeliveryError, SendError, TransactionError};
use kpipe::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

const END: Duration = Duration::from_secs(30);

/// The Java console consumer runs one JVM at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn commits_are_read_and_aborts_are_not_on_kafka_4() {
    commits_and_aborts(&common::brokers());
}

#[test]
fn commits_are_read_and_aborts_are_not_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    commits_and_aborts(&brokers);
}

#[test]
fn a_new_instance_fences_the_old_and_aborts_its_transaction_on_kafka_4() {
    fencing(&common::brokers());
}

#[test]
fn a_new_instance_fences_the_old_and_aborts_its_transaction_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    fencing(&brokers);
}

#[test]
fn consume_transform_produce_commits_offsets_with_the_output_on_kafka_4() {
    copy_loop(&common::brokers());
}

#[test]
fn consume_transform_produce_commits_offsets_with_the_output_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    copy_loop(&brokers);
}

#[test]
fn calls_out_of_turn_are_refused_with_what_to_do() {
    let brokers = common::brokers();
    let mut cluster = connect(&brokers);
    let topic = new_topic(&mut cluster, "txn-misuse", 1);
    let producer = Producer::new(config(&brokers, &topic, &common::unique_topic("tx"))).unwrap();
    // No transaction open: records are handed back, commits refused.
    match producer.send(ProducerRecord::new("x")) {
        Err(e @ SendError::NoTransaction(_)) => {
            assert!(e.to_string().contains("begin_transaction"), "{e}")
        }
        other => panic!("a send outside a transaction: {other:?}"),
    }
    let e = producer.commit_transaction(END).unwrap_err();
    assert!(
        matches!(&e, TransactionError::State(m) if m.contains("begin_transaction")),
        "{e}"
    );
    // Aborting nothing is nothing to do.
    producer.abort_transaction(END).unwrap();
    producer.begin_transaction().unwrap();
    let e = producer.begin_transaction().unwrap_err();
    assert!(e.to_string().contains("open already"), "{e}");
    producer.commit_transaction(END).unwrap();
    // A producer without a transactional id has no transactions.
    let mut plain = config(&brokers, &topic, "unused");
    plain.transactional_id = None;
    let plain = Producer::new(plain).unwrap();
    let e = plain.begin_transaction().unwrap_err();
    assert!(e.to_string().contains("transactional_id"), "{e}");
    // A transactional producer must be idempotent: refused before it connects.
    let mut bad = config(&brokers, &topic, "tx-bad");
    bad.idempotence = Some(false);
    let e = Producer::new(bad).unwrap_err();
    assert!(e.to_string().contains("transactional_id"), "{e}");
    let summary = producer.close(END).unwrap();
    assert_eq!(summary.transactions_committed, 1);
}

/// Six transactions of 60 records on three partitions, every third aborted.
fn commits_and_aborts(brokers: &str) {
    let mut cluster = connect(brokers);
    let topic = new_topic(&mut cluster, "txn-produce", 3);
    let producer = Producer::new(config(brokers, &topic, &common::unique_topic("tx"))).unwrap();
    let mut committed = Vec::new();
    for t in 0..6 {
        let commit = (t + 1) % 3 != 0;
        producer.begin_transaction().unwrap();
        let receipts: Vec<_> = (0..60)
            .map(|i| {
                let value = format!("{}-{t}-{i}", if commit { "commit" } else { "abort" });
                let record = ProducerRecord::new(value.clone()).key(format!("k{}", i % 7));
                (value, producer.send_tracked(record).unwrap())
            })
            .collect();
        if commit {
            producer.commit_transaction(END).unwrap();
            for (value, receipt) in receipts {
                // Every record of a committed transaction was acknowledged.
                receipt.wait().unwrap().unwrap();
                committed.push(value);
            }
        } else {
            producer.abort_transaction(END).unwrap();
            for (_, receipt) in receipts {
                // Sent and acknowledged, or dropped unsent: nothing else.
                match receipt.wait().unwrap() {
                    Ok(_) | Err(DeliveryError::TransactionAborted) => {}
                    Err(e) => panic!("an aborted transaction's record: {e}"),
                }
            }
        }
    }
    let summary = producer.close(END).unwrap();
    assert_eq!(
        (summary.transactions_committed, summary.transactions_aborted),
        (4, 2),
        "{summary:?}"
    );
    // kpipe at read_committed: exactly the committed records, once each, in order per key.
    let got = read_all(
        brokers,
        &topic,
        IsolationLevel::ReadCommitted,
        committed.len(),
    );
    let mut want = committed.clone();
    want.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, want, "read_committed");
    // Per key, the order sent (values carry their transaction and index).
    let mut last: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for v in &got {
        let parts: Vec<&str> = v.split('-').collect();
        let (t, i): (u32, u32) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        let key = format!("k{}", i % 7);
        if let Some(prev) = last.insert(key, (t, i)) {
            assert!(prev < (t, i), "per-key order: {prev:?} then {:?}", (t, i));
        }
    }
    // The Java consumer at read_committed agrees.
    let java = java_read_committed(brokers, &topic, committed.len());
    let mut java_sorted = java.clone();
    java_sorted.sort();
    assert_eq!(java_sorted, want, "Java at read_committed");
}

/// A producer left with an open transaction is fenced by a new one with its id: the open
/// transaction is aborted when the new one starts (not at its timeout), and the old one's
/// commit fails for good.
fn fencing(brokers: &str) {
    let mut cluster = connect(brokers);
    let topic = new_topic(&mut cluster, "txn-fence", 2);
    let id = common::unique_topic("tx-fence");
    let mut long = config(brokers, &topic, &id);
    // Long enough that only fencing, not the timeout, can end it within the test.
    long.transaction_timeout = Duration::from_secs(600);
    let old = Producer::new(long).unwrap();
    old.begin_transaction().unwrap();
    for i in 0..20 {
        old.send(ProducerRecord::new(format!("zombie-{i}")))
            .unwrap();
    }
    // Acknowledged (in the log, not committed).
    common::await_condition(Duration::from_secs(30), "the old records acked", || {
        old.stats().delivered == 20
    });
    let started = Instant::now();
    let new = Producer::new(config(brokers, &topic, &id)).unwrap();
    new.begin_transaction().unwrap();
    for i in 0..10 {
        new.send(ProducerRecord::new(format!("new-{i}"))).unwrap();
    }
    new.commit_transaction(END).unwrap();
    let took = started.elapsed();
    // The old one is fenced: its commit fails for good, and so does what it sends next.
    let e = old.commit_transaction(END).unwrap_err();
    assert!(e.is_fatal() || e.is_abortable(), "{e}");
    if e.is_abortable() {
        let e = old.abort_transaction(END).unwrap_err();
        assert!(e.is_fatal(), "{e}");
    }
    let e = old.begin_transaction().unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
    let old_summary = old.close(END).unwrap();
    assert_eq!(old_summary.transactions_committed, 0);
    // Read committed sees the new records only, and at once: nothing holds the LSO back.
    let got = read_all(brokers, &topic, IsolationLevel::ReadCommitted, 10);
    assert!(got.iter().all(|v| v.starts_with("new-")), "{got:?}");
    assert_eq!(got.len(), 10);
    assert!(took < Duration::from_secs(60), "the fence took {took:?}");
    let everything = read_all(brokers, &topic, IsolationLevel::ReadUncommitted, 30);
    assert_eq!(
        everything.len(),
        30,
        "the zombie's records are in the log, aborted"
    );
    new.close(END).unwrap();
}

/// Copy `input` to `output` in transactions that carry the consumer's offsets: the output
/// at read_committed equals the input, and the group's committed offsets are the ends.
fn copy_loop(brokers: &str) {
    let mut cluster = connect(brokers);
    let input = new_topic(&mut cluster, "txn-in", 2);
    let output = new_topic(&mut cluster, "txn-out", 2);
    let mut pc = common::producer_config(&input);
    pc.client.bootstrap = ClientConfig::new([brokers]).bootstrap;
    let source = Producer::new(pc).unwrap();
    for i in 0..300 {
        source
            .send(ProducerRecord::new(format!("v{i}")).key(format!("k{}", i % 10)))
            .unwrap();
    }
    assert_eq!(source.close(END).unwrap().delivered, 300);

    let group = common::unique_topic("copy-group");
    let mut cc = consumer_config(brokers, &group, &input);
    cc.auto_commit = false;
    let mut consumer = Consumer::new(cc).unwrap();
    let producer = Producer::new(config(brokers, &output, &common::unique_topic("tx"))).unwrap();
    let mut copied = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while copied < 300 {
        assert!(Instant::now() < deadline, "copied {copied} of 300 in 60 s");
        let records = consumer.poll(Duration::from_millis(500)).unwrap();
        if records.is_empty() {
            continue;
        }
        producer.begin_transaction().unwrap();
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in &records {
            let mut out = ProducerRecord::new(r.value.clone().unwrap());
            out.key = r.key.clone();
            producer.send(out).unwrap();
            next.insert((r.topic.to_string(), r.partition), r.offset + 1);
        }
        producer
            .send_offsets_to_transaction(&next, &consumer.group_metadata())
            .unwrap();
        producer.commit_transaction(END).unwrap();
        copied += records.len();
    }
    let summary = producer.close(END).unwrap();
    assert!(summary.transactions_committed >= 1, "{summary:?}");
    // The offsets committed with the transactions, not by the consumer.
    for p in 0..2 {
        let end = cluster
            .list_offsets(&input, &[p], kpipe::client::OffsetSpec::Latest)
            .unwrap()[0]
            .offset;
        assert_eq!(
            committed(brokers, &group, &input, p),
            Some(end),
            "partition {p}"
        );
    }
    consumer.close(END).unwrap();
    let mut got = read_all(brokers, &output, IsolationLevel::ReadCommitted, 300);
    got.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn legacy() -> Option<String> {
    match std::env::var("KPIPE_LEGACY_BROKERS") {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("KPIPE_LEGACY_BROKERS is unset (scripts/test sets it): skipped");
            None
        }
    }
}

fn connect(brokers: &str) -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = common::config();
    config.bootstrap = ClientConfig::new([brokers]).bootstrap;
    Cluster::connect(config).unwrap_or_else(|e| panic!("no broker at {brokers}: {e}"))
}

fn new_topic(cluster: &mut Cluster, prefix: &str, partitions: i32) -> String {
    let name = common::unique_topic(prefix);
    cluster
        .create_topic(&NewTopic::new(&name, partitions, 1), END)
        .unwrap();
    name
}

fn config(brokers: &str, topic: &str, transactional_id: &str) -> ProducerConfig {
    let mut c = common::producer_config(topic);
    c.client.bootstrap = ClientConfig::new([brokers]).bootstrap;
    c.transactional_id = Some(transactional_id.to_owned());
    c
}

fn consumer_config(brokers: &str, group: &str, topic: &str) -> ConsumerConfig {
    let mut c = common::consumer_config(group, topic, 1);
    c.client.bootstrap = ClientConfig::new([brokers]).bootstrap;
    c
}

/// Read `topic` from the start with a new group at `isolation` until `n` records came
/// (at most 60 s), then a little longer, so that records past `n` would show.
fn read_all(brokers: &str, topic: &str, isolation: IsolationLevel, n: usize) -> Vec<String> {
    let mut c = consumer_config(brokers, &common::unique_topic("reader"), topic);
    c.isolation_level = isolation;
    let mut consumer = Consumer::new(c).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < deadline {
        got.extend(consumer.poll(Duration::from_millis(500)).unwrap());
    }
    got.extend(consumer.poll(Duration::from_millis(500)).unwrap());
    consumer.close(END).unwrap();
    got.into_iter()
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

/// The group's committed offset of `topic`-`partition`, as a new member of it sees it.
fn committed(brokers: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let mut c = consumer_config(brokers, group, topic);
    c.auto_commit = false;
    let mut consumer = Consumer::new(c).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().len() < 2 && Instant::now() < deadline {
        consumer.poll(Duration::from_millis(200)).unwrap();
    }
    let offset = consumer.committed(topic, partition);
    consumer.close(END).unwrap();
    offset
}

/// The Java console consumer at read_committed: the values of the first `n` records.
fn java_read_committed(brokers: &str, topic: &str, n: usize) -> Vec<String> {
    let _serial = common::serial(&SERIAL);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let out = Command::new(script)
        .args([
            "run-class",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
        ])
        .args(["--bootstrap-server", brokers, "--topic", topic])
        .args(["--from-beginning", "--max-messages", &n.to_string()])
        .args(["--timeout-ms", "60000"])
        .args(["--command-property", "isolation.level=read_committed"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console consumer: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with("commit-") || l.starts_with("abort-"))
        .map(str::to_owned)
        .collect()
}
