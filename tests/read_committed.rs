//! Read committed (KIP-98) against a reference transactional producer: the Java client,
//! driven by `tests/java/TxnWriter.java`, writes transactions it commits and transactions it
//! aborts, interleaved in every partition with a plain producer's records. A kpipe consumer
//! at read_committed (the default) gets exactly the committed and plain records, each once,
//! in the log's order; at read_uncommitted it gets them all; an open transaction holds
//! read_committed readers at the last stable offset until it ends. On Kafka 4.x
//! (transaction version 2) and, when `./scripts/test` started it, on the 3.9.1 broker
//! (transaction version 1).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kpipe::client::{ClientConfig, Cluster, IsolationLevel, NewTopic, OffsetSpec};
use kpipe::consumer::ConsumerPool;
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig};

/// The JVMs run one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn read_committed_gets_the_committed_and_plain_records_in_log_order() {
    let _serial = common::serial(&SERIAL);
    interleaved(&common::brokers());
}

#[test]
fn read_committed_on_the_legacy_broker() {
    let Ok(brokers) = std::env::var("KPIPE_LEGACY_BROKERS") else {
        eprintln!("KPIPE_LEGACY_BROKERS is unset (scripts/test sets it): skipped");
        return;
    };
    let _serial = common::serial(&SERIAL);
    interleaved(&brokers);
}

fn interleaved(brokers: &str) {
    let mut cluster = connect(brokers);
    let topic = common::unique_topic("txn-read");
    cluster
        .create_topic(&NewTopic::new(&topic, 3, 1), Duration::from_secs(30))
        .unwrap();
    let done = java_script(brokers, &topic, 3, 9, 60, 3, 4);
    assert_eq!(done, "DONE committed=360 aborted=180 plain=108", "{done}");

    // The log as it is, every data record (a read_uncommitted fetch).
    let log = per_partition(
        common::fetch_all(&mut cluster, &topic)
            .into_iter()
            .map(|(p, r)| {
                (
                    p,
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                )
            }),
    );
    assert_eq!(log.values().map(Vec::len).sum::<usize>(), 648);
    let committed: BTreeMap<i32, Vec<String>> = log
        .iter()
        .map(|(p, v)| {
            let kept = v.iter().filter(|s| !s.starts_with("abort-")).cloned();
            (*p, kept.collect())
        })
        .collect();

    // No transaction is open: the last stable offset is the high watermark.
    let ends = cluster
        .list_offsets(&topic, &[0, 1, 2], OffsetSpec::Latest)
        .unwrap();
    let stable = cluster
        .list_offsets_as(
            &topic,
            &[0, 1, 2],
            OffsetSpec::Latest,
            IsolationLevel::ReadCommitted,
        )
        .unwrap();
    assert_eq!(ends, stable);

    // The pull API, at the default isolation level.
    let config = consumer_config(brokers, &topic, 1);
    assert_eq!(config.isolation_level, IsolationLevel::ReadCommitted);
    let (got, mut consumer) = poll_until(config, 468);
    same(&values(&got), &committed, "read_committed, pull API");
    // Committed past the last transaction's marker, so nothing is left to read.
    consumer.commit().unwrap();
    let stats = consumer.stats();
    for o in &ends {
        let p = &stats.partitions[&(topic.clone(), o.partition)];
        assert_eq!(
            (p.position, p.end_offset, p.lag()),
            (o.offset, o.offset, 0),
            "{p:?}"
        );
        assert_eq!(consumer.committed(&topic, o.partition), Some(o.offset));
    }
    consumer.close(Duration::from_secs(30)).unwrap();

    // A pool, at the default isolation level.
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let config = consumer_config(brokers, &topic, 2);
    let pool = ConsumerPool::start_cloned(config, move |r: &ConsumedRecord| {
        seen.lock().unwrap().push(r.clone());
        Ok::<(), String>(())
    })
    .unwrap();
    common::await_condition(Duration::from_secs(60), "the pool reading 468", || {
        got.lock().unwrap().len() >= 468
    });
    let summary = pool.close(Duration::from_secs(30)).expect("close");
    assert!(summary.stopped_because.is_none(), "{summary:?}");
    for o in &ends {
        // Past each partition's last marker: the pool's handler finished everything before.
        let tp = (topic.clone(), o.partition);
        assert_eq!(summary.committed.get(&tp), Some(&o.offset), "{summary:?}");
    }
    same(
        &values(&got.lock().unwrap()),
        &committed,
        "read_committed, pool",
    );

    // Read uncommitted: everything in the log, aborted transactions included.
    let mut config = consumer_config(brokers, &topic, 1);
    config.isolation_level = IsolationLevel::ReadUncommitted;
    let (got, consumer) = poll_until(config, 648);
    consumer.close(Duration::from_secs(30)).unwrap();
    same(&values(&got), &log, "read_uncommitted");
}

#[test]
fn an_open_transaction_holds_read_committed_at_the_last_stable_offset() {
    let _serial = common::serial(&SERIAL);
    let brokers = common::brokers();
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "txn-open", 1);
    common::produce(&topic, "before-", 10);
    let mut open = JavaHold::start(&brokers, &topic, 20);
    common::produce(&topic, "after-", 10);

    let end = |c: &mut Cluster, isolation| {
        c.list_offsets_as(&topic, &[0], OffsetSpec::Latest, isolation)
            .unwrap()[0]
            .offset
    };
    assert_eq!(
        end(&mut cluster, IsolationLevel::ReadCommitted),
        10,
        "the LSO"
    );
    assert_eq!(
        end(&mut cluster, IsolationLevel::ReadUncommitted),
        40,
        "the HWM"
    );

    // read_committed stops at the open transaction's first offset.
    let (got, mut held) = poll_until(consumer_config(&brokers, &topic, 1), 10);
    let names: Vec<String> = (0..10).map(|i| format!("before-{i}")).collect();
    assert_eq!(values(&got)[&0], names);
    // Its next fetches keep returning nothing while the transaction is open.
    for _ in 0..3 {
        assert!(held.poll(Duration::from_millis(300)).unwrap().is_empty());
    }
    let p = held.stats().partitions[&(topic.clone(), 0)];
    assert_eq!((p.position, p.end_offset, p.lag()), (10, 10, 0), "{p:?}");
    assert_eq!(p.high_watermark, 40, "{p:?}");

    // read_uncommitted reads on through it.
    let mut config = consumer_config(&brokers, &topic, 1);
    config.isolation_level = IsolationLevel::ReadUncommitted;
    let (all, c) = poll_until(config, 40);
    c.close(Duration::from_secs(30)).unwrap();
    assert_eq!(values(&all)[&0].len(), 40);

    // The commit releases the rest, in log order.
    assert_eq!(open.end("commit"), "ENDED commit");
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rest.len() < 30 && Instant::now() < deadline {
        rest.extend(held.poll(Duration::from_millis(500)).unwrap());
    }
    let want: Vec<String> = (0..20)
        .map(|i| format!("open-{i}"))
        .chain((0..10).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(values(&rest)[&0], want);
    held.close(Duration::from_secs(30)).unwrap();
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn connect(brokers: &str) -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = common::config();
    config.bootstrap = ClientConfig::new([brokers]).bootstrap;
    Cluster::connect(config).unwrap_or_else(|e| panic!("no broker at {brokers}: {e}"))
}

fn consumer_config(brokers: &str, topic: &str, threads: usize) -> ConsumerConfig {
    let mut c = common::consumer_config(&common::unique_topic("group"), topic, threads);
    c.client.bootstrap = ClientConfig::new([brokers]).bootstrap;
    c
}

/// Poll a new consumer until it has `n` records (at most 60 s), then once more briefly, so
/// that records past `n` would show.
fn poll_until(config: ConsumerConfig, n: usize) -> (Vec<ConsumedRecord>, Consumer) {
    let mut consumer = Consumer::new(config).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records in 60 s",
            got.len()
        );
        got.extend(consumer.poll(Duration::from_millis(500)).unwrap());
    }
    got.extend(consumer.poll(Duration::from_millis(300)).unwrap());
    (got, consumer)
}

/// `got` equals `want`, partition by partition; the first difference is reported (the
/// whole lists would be thousands of lines).
fn same(got: &BTreeMap<i32, Vec<String>>, want: &BTreeMap<i32, Vec<String>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (p, w) in want {
        let g = &got[p];
        if let Some(i) = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)) {
            panic!(
                "{what}: partition {p} has {} records, {} wanted; first difference at {i}: got {:?}, wanted {:?}",
                g.len(),
                w.len(),
                g.get(i),
                w.get(i)
            );
        }
    }
}

fn per_partition(records: impl Iterator<Item = (i32, i64, String)>) -> BTreeMap<i32, Vec<String>> {
    let mut sorted: Vec<_> = records.collect();
    sorted.sort();
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for (p, _, v) in sorted {
        out.entry(p).or_default().push(v);
    }
    out
}

/// Values per partition in the order they were handed out (checked increasing by offset).
fn values(records: &[ConsumedRecord]) -> BTreeMap<i32, Vec<String>> {
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for r in records {
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        out.entry(r.partition).or_default().push((r.offset, v));
    }
    out.into_iter()
        .map(|(p, v)| {
            assert!(
                v.windows(2).all(|w| w[0].0 < w[1].0),
                "partition {p} handed out in offset order, once each"
            );
            (p, v.into_iter().map(|(_, s)| s).collect())
        })
        .collect()
}

/// The Java reference producer: `java --class-path <kafka jars> tests/java/TxnWriter.java`.
fn java(args: &[&str]) -> Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let out = Command::new(script).arg("classpath").output().unwrap();
    assert!(out.status.success(), "scripts/kafka classpath failed");
    let classpath = String::from_utf8(out.stdout).unwrap();
    let mut c = Command::new("java");
    c.arg("--class-path")
        .arg(classpath.trim())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/java/TxnWriter.java"
        ))
        .args(args);
    c
}

/// Run the writer's script mode; its last line (`DONE committed=… aborted=… plain=…`).
#[allow(clippy::too_many_arguments)]
fn java_script(
    brokers: &str,
    topic: &str,
    partitions: usize,
    transactions: usize,
    records: usize,
    abort_every: usize,
    plain: usize,
) -> String {
    let id = common::unique_topic("txn-id");
    let n = |x: usize| x.to_string();
    let out = java(&["script", "--bootstrap", brokers, "--topic", topic])
        .args(["--partitions", &n(partitions), "--transactional-id", &id])
        .args(["--transactions", &n(transactions), "--records", &n(records)])
        .args(["--abort-every", &n(abort_every), "--plain", &n(plain)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "TxnWriter failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().to_owned()
}

/// The writer's hold mode: a transaction left open until [`end`](Self::end).
struct JavaHold {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl JavaHold {
    fn start(brokers: &str, topic: &str, records: usize) -> JavaHold {
        let id = common::unique_topic("txn-hold");
        let mut child = java(&["hold", "--bootstrap", brokers, "--topic", topic])
            .args(["--partitions", "1", "--transactional-id", &id])
            .args(["--records", &records.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Bounded by the writer's own timeouts (max.block.ms, delivery.timeout.ms): it
        // prints OPEN or exits.
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "OPEN",
            "TxnWriter hold did not open a transaction"
        );
        JavaHold {
            child,
            stdin,
            stdout,
        }
    }

    /// Commit or abort; the writer's last line.
    fn end(&mut self, how: &str) -> String {
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "{how}").unwrap();
        drop(stdin);
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "TxnWriter hold: {status}");
        line.trim().to_owned()
    }
}

impl Drop for JavaHold {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF aborts
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
