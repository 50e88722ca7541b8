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
