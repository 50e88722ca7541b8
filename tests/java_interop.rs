//! A kpipe member and a Java consumer (Kafka's own console consumer, from the jars
//! scripts/kafka fetched) share one group: the partitions are split between them and
//! together they read every record.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpipe::consumer::ConsumerPool;
use kpipe::ConsumedRecord;

#[test]
fn a_java_consumer_joins_a_group_led_by_kpipe() {
    share_a_group(true);
}

#[test]
fn kpipe_joins_a_group_led_by_a_java_consumer() {
    share_a_group(false);
}

fn start_pool(group: &str, topic: &str, ours: &Arc<Mutex<Vec<String>>>) -> ConsumerPool {
    let seen = ours.clone();
    ConsumerPool::start_cloned(
        common::consumer_config(group, topic, 1),
        move |r: &ConsumedRecord| {
            seen.lock()
                .unwrap()
                .push(String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap());
            Ok::<(), String>(())
        },
    )
    .unwrap()
}

fn is_record(line: &str) -> bool {
    let mut chars = line.chars();
    matches!(chars.next(), Some('x' | 'y'))
        && !line[1..].is_empty()
        && line[1..].chars().all(|c| c.is_ascii_digit())
}

fn share_a_group(kpipe_first: bool) {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "interop", 4);
    let group = common::unique_topic("interop-group");
    common::produce(&topic, "x", 2_000);

    let ours = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut pool = None;
    if kpipe_first {
        let p = start_pool(&group, &topic, &ours);
        common::await_condition(
            Duration::from_secs(60),
            "kpipe to own all four partitions first",
            || p.stats().assignments.get(&0).is_some_and(|a| a.len() == 4),
        );
        pool = Some(p);
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let mut java = Command::new(script)
        .args([
            "run-class",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
        ])
        .args([
            "--bootstrap-server",
            &common::brokers(),
            "--topic",
            &topic,
            "--group",
            &group,
        ])
        .args(["--consumer-property", "auto.offset.reset=earliest"])
        .args(["--consumer-property", "heartbeat.interval.ms=300"])
        .args(["--consumer-property", "session.timeout.ms=6000"])
        .args(["--timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the Java console consumer through scripts/kafka");
    let theirs = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let theirs = theirs.clone();
        let out = java.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    // Only records: the tool may print notices on stdout too.
                    Ok(l) if is_record(&l) => theirs.lock().unwrap().push(l),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
    };

    if pool.is_none() {
        common::await_condition(
            Duration::from_secs(90),
            "the Java consumer reading first",
            || !theirs.lock().unwrap().is_empty(),
        );
        pool = Some(start_pool(&group, &topic, &ours));
    }
    let pool = pool.unwrap();
    let split = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::await_condition(
            Duration::from_secs(90),
            "the Java member to take two partitions",
            || {
                pool.stats()
                    .assignments
                    .get(&0)
                    .is_some_and(|p| p.len() == 2)
            },
        );
        common::produce(&topic, "y", 2_000);
        common::await_condition(
            Duration::from_secs(90),
            "every record read by one side or the other",
            || {
                let mut all: HashSet<String> = ours.lock().unwrap().iter().cloned().collect();
                all.extend(theirs.lock().unwrap().iter().cloned());
                (0..2_000).all(|i| all.contains(&format!("x{i}")) && all.contains(&format!("y{i}")))
            },
        );
    }));
    let _ = java.kill();
    let _ = java.wait();
    let _ = reader.join();
    let stats = pool.stats();
    pool.close(Duration::from_secs(30));
    if let Err(panic) = split {
        std::panic::resume_unwind(panic);
    }
    let ys_ours = ours
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v.starts_with('y'))
        .count();
    let ys_theirs = theirs
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v.starts_with('y'))
        .count();
    assert!(
        ys_ours > 0 && ys_theirs > 0,
        "both sides read new records: kpipe {ys_ours}, Java {ys_theirs}"
    );
    if kpipe_first {
        assert!(
            stats.rebalances >= 2,
            "kpipe rejoined when Java joined: {stats:?}"
        );
    }
}

/// What kpipe writes idempotently, Kafka's own console consumer reads back byte for byte,
/// in order; and the batches on the broker carry kpipe's producer id with sequences that
/// run from 0 without a gap.
#[test]
fn the_java_console_consumer_reads_back_idempotent_batches_byte_exact() {
    use kpipe::client::{FetchParams, FetchTarget};
    use kpipe::{Producer, ProducerRecord};

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
