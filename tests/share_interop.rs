//! kpipe and Kafka's own Java client as members of one share group (KIP-932): the Java
//! member is `tests/java/ShareReader.java` (a `KafkaShareConsumer` with explicit
//! acknowledgement), printing each record it gets with its delivery count.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::java::JavaProgram;
use common::share::{self, Deliveries, Delivery};
use kpipe::consumer::ShareAcquireMode;

/// The JVMs run one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The Java member of `group`: 10 records a poll (record_limit), `work_ms` per record.
fn java_member(topic: &str, group: &str, work_ms: u32) -> JavaProgram {
    let work = work_ms.to_string();
    JavaProgram::start(
        "ShareReader.java",
        &[
            "--bootstrap",
            &common::brokers(),
            "--topic",
            topic,
            "--group",
            group,
            "--max-poll-records",
            "10",
            "--acquire-mode",
            "record_limit",
            "--work-ms",
            &work,
            "--max-ms",
            "120000",
        ],
    )
}

/// Take up the Java member's lines so far: its deliveries, and any refused acknowledgement.
fn take_java_lines(java: &mut JavaProgram, into: &Deliveries, failures: &mut Vec<String>) {
    for line in java.lines.ready() {
        if let Some(rest) = line.strip_prefix("R ") {
            let f: Vec<&str> = rest.splitn(4, ' ').collect();
            let [p, o, c, v] = f[..] else {
                panic!("ShareReader printed {line:?}");
            };
            into.push(Delivery {
                member: "java".into(),
                partition: p.parse().unwrap(),
                offset: o.parse().unwrap(),
                count: c
                    .parse()
                    .unwrap_or_else(|_| panic!("no delivery count: {line:?}")),
                value: v.to_owned(),
                at: Instant::now(),
            });
        } else if line.starts_with("F ") {
            failures.push(line);
        }
    }
}

/// A kpipe pool member and a Java `KafkaShareConsumer` share one partition of a share
/// group, both acquiring 10 records at a time and working a little on each. Both must get
/// records, together every record; no delivery (offset and delivery count) may go to both,
/// and no member may see a record again without a higher delivery count; every
/// acknowledgement, kpipe's and Java's, is taken, and the group ends with lag 0.
#[test]
fn kpipe_and_a_java_share_consumer_split_one_share_group_and_miss_nothing() {
    together("kpipe and Java", None);
}

/// As above, but the Java member leaves (closes) once it has read 500 records: kpipe must
/// read all the rest, alone, and a record Java held (acquired, not handed out, released by
/// its close) may come to kpipe only with a higher delivery count. (Measured: in
/// record_limit mode Java held none when it closed, so kpipe saw no redelivery.)
#[test]
fn when_the_java_member_leaves_mid_run_kpipe_reads_the_rest() {
    together("Java leaving", Some(500));
}

/// The two members of the tests above; with `java_leaves_after`, the Java member is told to
/// stop once it has read that many records.
fn together(test: &str, java_leaves_after: Option<usize>) {
    let _serial = common::serial(&SERIAL);
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share-java", 1);
    let group = common::unique_topic("share-java-group");
    share::group_configs(
        &mut cluster,
        &group,
        &[("share.auto.offset.reset", "earliest")],
    );
    let n = 3000;
    common::produce(&topic, "v", n);
    let started = Instant::now();

    // Java first, its JVM being slow to start; kpipe joins once Java reads, while most of
    // the records are still to be read.
    let deliveries = Deliveries::default();
    let mut failures = Vec::new();
    let mut java = java_member(&topic, &group, 2);
    common::await_condition(Duration::from_secs(60), "the Java member reading", || {
        take_java_lines(&mut java, &deliveries, &mut failures);
        deliveries.len() > 0
    });
    let java_first = started.elapsed();

    let mut config = share::config(&common::brokers(), &group, &topic);
    config.max_poll_records = 10;
    config.share_acquire_mode = ShareAcquireMode::RecordLimit;
    let pool = deliveries.pool(config, Duration::from_millis(2));

    let java_read = |d: &Deliveries| d.all().iter().filter(|d| d.member == "java").count();
    let mut java = Some(java);
    let mut java_end = None;
    let mut stop_java = |java: &mut Option<JavaProgram>, failures: &mut Vec<String>| {
        let mut j = java.take().expect("the Java member runs");
        j.say("stop");
        let closed = j.lines.until("CLOSED", Duration::from_secs(30));
        take_java_lines(&mut j, &deliveries, failures);
        let (status, stderr) = j.wait(Duration::from_secs(30));
        assert!(
            status.success(),
            "{test}: ShareReader: {status} {closed}\n{stderr}"
        );
        java_end = Some(started.elapsed());
    };
    if let Some(k) = java_leaves_after {
        common::await_condition(Duration::from_secs(60), "the Java member's share", || {
            take_java_lines(java.as_mut().unwrap(), &deliveries, &mut failures);
            java_read(&deliveries) >= k
        });
        stop_java(&mut java, &mut failures);
    }
    common::await_condition(Duration::from_secs(90), "every record delivered", || {
        if let Some(j) = java.as_mut() {
            take_java_lines(j, &deliveries, &mut failures);
        }
        deliveries.distinct_values() == n
    });
    let read_all = started.elapsed();
    let offsets = share::await_all_acknowledged(&mut cluster, &group, 1, Duration::from_secs(30));
    if java.is_some() {
        stop_java(&mut java, &mut failures);
    }
    let summary = pool.close(Duration::from_secs(20)).expect("close");

    let all = deliveries.all();
    let by = |who: &str| all.iter().filter(|d| d.member.starts_with(who)).count();
    let (kpipe, java) = (by("kpipe"), by("java"));
    let kpipe_again = all
        .iter()
        .filter(|d| d.member.starts_with("kpipe") && d.count > 1)
        .count();
    let again = share::check_deliveries(test, &all);
    println!(
        "{test}: kpipe {kpipe} deliveries ({kpipe_again} redeliveries), Java {java} (its first \
         {java_first:?} after the start, its close done {java_end:?} after it), {again} \
         records delivered more than once; all read {read_all:?} after the start; kpipe \
         {summary:?}; group offsets {offsets:?}"
    );
    assert!(
        kpipe > 0 && java > 0,
        "{test}: both members got records: kpipe {kpipe}, Java {java}"
    );
    let values: BTreeSet<&str> = all.iter().map(|d| d.value.as_str()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|v| !values.contains(v.as_str()))
        .collect();
    assert!(missing.is_empty(), "{test}: never delivered: {missing:?}");
    assert_eq!(
        values.len(),
        n,
        "{test}: values outside those produced: {values:?}"
    );
    assert!(
        failures.is_empty(),
        "{test}: Java's acknowledgements refused: {failures:?}"
    );
    assert!(summary.stopped_because.is_none(), "{test}: {summary:?}");
    assert_eq!(
        (
            summary.handled,
            summary.acknowledged,
            summary.acknowledge_failures
        ),
        (kpipe as u64, kpipe as u64, 0),
        "{test}: kpipe accepted every record it got: {summary:?}"
    );
}
