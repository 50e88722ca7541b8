//! `ConsumerPool::start_exactly_once` against a real broker: a copy stage (input topic to
//! output topic) whose output, read at read_committed, holds each input record once, in
//! per-key order, through handler errors, a second pool joining the group mid-run (a
//! rebalance with transactions open), and a second pool taking the first one's
//! transactional ids (the first one's members are fenced and leave).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpipe::client::{IsolationLevel, OffsetSpec};
use kpipe::consumer::{ExactlyOnce, OnHandlerError, Output};
use kpipe::{ConsumedRecord, Consumer, ConsumerPool, ProducerRecord};

const END: Duration = Duration::from_secs(30);
const N: usize = 3_000;

#[test]
fn a_copy_stage_writes_each_record_once() {
    let (input, output) = topics("eos-plain");
    fill(&input, N);
    let group = common::unique_topic("eos-group");
    let pool = copier(
        &group,
        &input,
        &output,
        &common::unique_topic("copy"),
        2,
        None,
    );
    await_output(&output, N);
    let summary = pool.close(END).expect("close");
    assert!(summary.stopped_because.is_none(), "{summary:?}");
    assert!(summary.transactions_committed > 0, "{summary:?}");
    check_once(&input, &output, N);
    // The offsets committed with the transactions: the whole input.
    let mut cluster = common::cluster();
    let ends = cluster
        .list_offsets(&input, &[0, 1, 2], OffsetSpec::Latest)
        .unwrap();
    for e in ends {
        let tp = (input.clone(), e.partition);
        assert_eq!(summary.committed.get(&tp), Some(&e.offset), "{summary:?}");
    }
}

#[test]
fn a_handler_error_aborts_and_the_records_come_again() {
    let (input, output) = topics("eos-error");
    fill(&input, N);
    let group = common::unique_topic("eos-group");
    // Fail once on one record: its whole transaction is aborted and handed again.
    let failed = Arc::new(AtomicBool::new(false));
    let pool = copier(
        &group,
        &input,
        &output,
        &common::unique_topic("copy"),
        1,
        Some(failed.clone()),
    );
    await_output(&output, N);
    let summary = pool.close(END).expect("close");
    assert!(failed.load(Ordering::SeqCst), "the handler failed once");
    assert!(summary.transactions_aborted >= 1, "{summary:?}");
    check_once(&input, &output, N);
}

#[test]
fn a_rebalance_mid_run_keeps_each_record_once() {
    let (input, output) = topics("eos-rebalance");
    let group = common::unique_topic("eos-group");
    let first = copier(
        &group,
        &input,
        &output,
        &common::unique_topic("copy-a"),
        1,
        None,
    );
    // Records keep coming while the second pool joins and takes partitions.
    let writer = std::thread::spawn({
        let input = input.clone();
        move || {
            for step in 0..10 {
                fill_from(&input, step * 300, 300);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let second = copier(
        &group,
        &input,
        &output,
        &common::unique_topic("copy-b"),
        1,
        None,
    );
    writer.join().unwrap();
    await_output(&output, N);
    let (a, b) = (
        first.close(END).expect("close"),
        second.close(END).expect("close"),
    );
    assert!(a.stopped_because.is_none() && b.stopped_because.is_none());
    check_once(&input, &output, N);
}

#[test]
fn a_new_instance_with_the_same_ids_fences_the_old_one() {
    let (input, output) = topics("eos-fence");
    fill(&input, N / 2);
    let group = common::unique_topic("eos-group");
    let prefix = common::unique_topic("copy");
    let old = copier(&group, &input, &output, &prefix, 1, None);
    await_output(&output, N / 2);
    // The same prefix again: its member takes the old member's transactional id. The old
    // one learns it at its next transaction, when records come for its partitions.
    let new = copier(&group, &input, &output, &prefix, 1, None);
    fill_from(&input, N / 2, N / 2);
    common::await_condition(Duration::from_secs(60), "the old member fenced", || {
        old.is_finished()
    });
    await_output(&output, N);
    let old_summary = old.close(END).expect("close");
    assert_eq!(old_summary.fenced_members, 1, "{old_summary:?}");
    assert!(
        old_summary
            .stopped_because
            .as_deref()
            .is_some_and(|w| w.contains("fenced")),
        "{old_summary:?}"
    );
    let new_summary = new.close(END).expect("close");
    assert!(new_summary.stopped_because.is_none(), "{new_summary:?}");
    check_once(&input, &output, N);
}

#[test]
fn skipping_records_is_refused_in_exactly_once_mode() {
    let (input, output) = topics("eos-skip");
    let mut config = common::consumer_config(&common::unique_topic("g"), &input, 1);
    config.on_error = OnHandlerError::Skip;
    let eos = ExactlyOnce::new(common::unique_topic("copy"), move || {
        common::producer_config(&output)
    });
    let e = ConsumerPool::start_exactly_once(config, eos, |_| {
        |_: &[ConsumedRecord], _: &Output<'_>| Ok::<(), String>(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("Retry or Stop"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn topics(prefix: &str) -> (String, String) {
    let mut cluster = common::cluster();
    (
        common::new_topic(&mut cluster, &format!("{prefix}-in"), 3),
        common::new_topic(&mut cluster, &format!("{prefix}-out"), 3),
    )
}

fn fill(topic: &str, n: usize) {
    fill_from(topic, 0, n);
}

/// Records `from..from + n`, value `v{i}`, key `k{i % 20}`.
fn fill_from(topic: &str, from: usize, n: usize) {
    let producer = kpipe::Producer::new(common::producer_config(topic)).unwrap();
    for i in from..from + n {
        producer
            .send(ProducerRecord::new(format!("v{i}")).key(format!("k{}", i % 20)))
            .unwrap();
    }
    assert_eq!(producer.close(END).unwrap().delivered, n as u64);
}

/// An exactly-once pool copying the group's input to `output`, with transactional ids
/// `{prefix}-i`; with `fail_once`, the handler fails once on the first batch holding
/// `v100` (after sending part of it: an aborted transaction's output, in the log or
/// dropped unsent, is never read at read_committed).
fn copier(
    group: &str,
    input: &str,
    output: &str,
    prefix: &str,
    threads: usize,
    fail_once: Option<Arc<AtomicBool>>,
) -> ConsumerPool {
    let mut config = common::consumer_config(group, input, threads);
    config.on_error = OnHandlerError::Retry {
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    };
    let out = output.to_owned();
    let eos = ExactlyOnce::new(prefix, move || common::producer_config(&out))
        .transaction_interval(Duration::from_millis(50));
    let handled = Arc::new(AtomicU64::new(0));
    ConsumerPool::start_exactly_once(config, eos, move |_| {
        let fail_once = fail_once.clone();
        let handled = handled.clone();
        move |records: &[ConsumedRecord], out: &Output<'_>| {
            if let Some(flag) = &fail_once {
                let hit = records.iter().any(|r| r.value.as_deref() == Some(b"v100"));
                if hit && !flag.swap(true, Ordering::SeqCst) {
                    // Write some of it first: that output must vanish with the abort.
                    for r in records.iter().take(5) {
                        out.send(copy(r)).map_err(|e| e.to_string())?;
                    }
                    return Err("injected failure".to_string());
                }
            }
            for r in records {
                out.send(copy(r)).map_err(|e| e.to_string())?;
            }
            handled.fetch_add(records.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    })
    .unwrap()
}

fn copy(r: &ConsumedRecord) -> ProducerRecord {
    let mut out = ProducerRecord::new(r.value.clone().unwrap_or_default());
    out.key = r.key.clone();
    out
}

/// Wait (at most 90 s) until `output` holds `n` records at read_committed.
fn await_output(output: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut cluster = common::cluster();
    loop {
        let ends = cluster
            .list_offsets_as(
                output,
                &[0, 1, 2],
                OffsetSpec::Latest,
                IsolationLevel::ReadCommitted,
            )
            .unwrap();
        // Markers take offsets too: the LSO passes n before n records are visible, so
        // count what a read_committed reader gets once the LSO suggests enough.
        let stable: i64 = ends.iter().map(|e| e.offset).sum();
        if stable >= n as i64 && read(output, IsolationLevel::ReadCommitted, n).len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "output did not reach {n} records in 90 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every record of `topic` at `isolation` (reading until `n` came, at most 60 s).
fn read(topic: &str, isolation: IsolationLevel, n: usize) -> Vec<ConsumedRecord> {
    let mut c = common::consumer_config(&common::unique_topic("reader"), topic, 1);
    c.isolation_level = isolation;
    let mut consumer = Consumer::new(c).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < deadline {
        got.extend(consumer.poll(Duration::from_millis(300)).unwrap());
    }
    got.extend(consumer.poll(Duration::from_millis(300)).unwrap());
    consumer.close(END).unwrap();
    got
}

/// The output at read_committed holds each input value once, and per key in input order.
fn check_once(input: &str, output: &str, n: usize) {
    let inputs = read(input, IsolationLevel::ReadCommitted, n);
    assert_eq!(inputs.len(), n, "the input");
    let outputs = read(output, IsolationLevel::ReadCommitted, inputs.len());
    let value = |r: &ConsumedRecord| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
    let mut want: Vec<String> = inputs.iter().map(value).collect();
    let mut got: Vec<String> = outputs.iter().map(value).collect();
    want.sort();
    got.sort();
    let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
    let lost = want
        .iter()
        .filter(|v| got.binary_search(v).is_err())
        .count();
    assert_eq!(
        (lost, dups, got.len()),
        (0, 0, want.len()),
        "lost, duplicated, total"
    );
    // Per key, in the order of the input (keys hash to the same partition on both).
    let mut by_key: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for r in &outputs {
        let n: u64 = value(r)[1..].parse().unwrap();
        by_key
            .entry(r.key.clone().unwrap().to_vec())
            .or_default()
            .push(n);
    }
    for (k, ns) in by_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "key {k:?} out of order");
    }
}
