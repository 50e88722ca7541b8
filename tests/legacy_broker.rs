//! Against Kafka 3.9.1 (`./scripts/kafka up --legacy`, which `./scripts/test` starts): the
//! classic group protocol works, and asking for the consumer protocol (KIP-848, generally
//! available from 4.0) is a clear error naming the broker and its release, at start; so are
//! share groups (KIP-932, from 4.2: a share member, and the admin calls) and group configs
//! (from 4.0).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpipe::client::{ClientConfig, Cluster, NewTopic};
use kpipe::consumer::Assignor;
use kpipe::consumer::{ConsumerPool, Error, GroupProtocol};
use kpipe::{ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerRecord};

/// The legacy broker's address, or `None` when the run opted out (KPIPE_TEST_LEGACY=0).
fn legacy() -> Option<String> {
    if std::env::var("KPIPE_TEST_LEGACY").as_deref() == Ok("0") {
        println!("skipped: KPIPE_TEST_LEGACY=0");
        return None;
    }
    Some(std::env::var("KPIPE_LEGACY_BROKERS").unwrap_or_else(|_| "127.0.0.1:9292".to_owned()))
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new([brokers]);
    c.connection.client_id = "kpipe-legacy-tests".into();
    c.connection.connect_timeout = Duration::from_secs(5);
    c.connection.request_timeout = Duration::from_secs(20);
    c
}

/// A cluster handle on the legacy broker, failing loudly when it is not there.
fn cluster(brokers: &str) -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    Cluster::connect(client(brokers)).unwrap_or_else(|e| {
        panic!(
            "these tests need the Kafka 3.9.1 broker at {brokers}: {e}\n\
             start it with ./scripts/kafka up --legacy (./scripts/test does this for you)"
        )
    })
}

fn topic(brokers: &str, partitions: i32) -> String {
    let mut cluster = cluster(brokers);
    let name = common::unique_topic("legacy");
    cluster
        .create_topic(
            &NewTopic::new(&name, partitions, 1),
            Duration::from_secs(30),
        )
        .unwrap();
    name
}

/// The legacy broker's release as kpipe names it, e.g. "3.9".
fn legacy_release() -> String {
    let version = std::env::var("KPIPE_LEGACY_VERSION").unwrap_or_else(|_| "3.9.1".into());
    version
        .rsplit_once('.')
        .map_or(version.as_str(), |(major_minor, _)| major_minor)
        .to_owned()
}

fn consumer_config(brokers: &str, topic: &str) -> ConsumerConfig {
    let mut c = common::consumer_config(&common::unique_topic("legacy-g"), topic, 2);
    c.client = client(brokers);
    c
}

#[test]
fn the_classic_protocol_works_on_kafka_3_9() {
    let Some(brokers) = legacy() else { return };
    let topic = topic(&brokers, 4);
    let mut pc = kpipe::ProducerConfig::new(&brokers).topic(&topic);
    pc.client = client(&brokers);
    let producer = Producer::new(pc).unwrap();
    for i in 0..2_000 {
        producer
            .send(ProducerRecord::new(format!("v{i}")).key(format!("k{}", i % 50)))
            .unwrap();
    }
    assert_eq!(
        producer.close(Duration::from_secs(60)).unwrap().delivered,
        2_000
    );
    for assignor in [Assignor::Range, Assignor::CooperativeSticky] {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let s = seen.clone();
        let mut config = consumer_config(&brokers, &topic);
        config.assignor = assignor;
        let pool = ConsumerPool::start_cloned(config, move |r: &ConsumedRecord| {
            s.lock().unwrap().insert((r.partition, r.offset));
            Ok::<(), String>(())
        })
        .unwrap();
        common::await_condition(Duration::from_secs(60), "every record handled", || {
            seen.lock().unwrap().len() == 2_000
        });
        common::await_condition(Duration::from_secs(30), "two partitions each", || {
            let a = pool.stats().assignments;
            a.len() == 2 && a.values().all(|ps| ps.len() == 2)
        });
        let summary = pool.close(Duration::from_secs(30));
        assert_eq!(
            summary.committed.values().sum::<i64>(),
            2_000,
            "{assignor:?}"
        );
        assert_eq!(summary.stopped_because, None);
    }
    // The pull API too.
    let mut config = consumer_config(&brokers, &topic);
    config.threads = 1;
    let mut consumer = Consumer::new(config).unwrap();
    let mut got = 0;
    common::await_condition(Duration::from_secs(60), "every record polled", || {
        got += consumer.poll(Duration::from_millis(100)).unwrap().len();
        got == 2_000
    });
    consumer.close(Duration::from_secs(30)).unwrap();
}

#[test]
fn asking_kafka_3_9_for_the_consumer_protocol_is_a_clear_error_at_start() {
    let Some(brokers) = legacy() else { return };
    let topic = topic(&brokers, 1);
    let mut config = consumer_config(&brokers, &topic);
    config.group_protocol = GroupProtocol::Consumer;
    let release = legacy_release();
    let check = |err: Error| {
        assert!(matches!(err, Error::ProtocolUnsupported { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("Kafka {release}")),
            "names the release: {text}"
        );
        assert!(text.contains(&brokers), "names the broker: {text}");
        assert!(
            text.contains("GroupProtocol::Classic"),
            "says what to do: {text}"
        );
    };
    check(Consumer::new(config.clone()).unwrap_err());
    check(
        ConsumerPool::start_cloned(config, |_: &ConsumedRecord| Ok::<(), String>(())).unwrap_err(),
    );
}

#[test]
fn asking_kafka_3_9_for_a_share_group_is_a_clear_error_at_start() {
    let Some(brokers) = legacy() else { return };
    let topic = topic(&brokers, 1);
    let mut config = consumer_config(&brokers, &topic);
    config.group_protocol = GroupProtocol::Share;
    let version = std::env::var("KPIPE_LEGACY_VERSION").unwrap_or_else(|_| "3.9.1".into());
    let release = version
        .rsplit_once('.')
        .map_or(version.as_str(), |(major_minor, _)| major_minor)
        .to_owned();
    let check = |err: Error| {
        assert!(
            matches!(err, Error::ShareGroupsUnsupported { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("Kafka {release}")), "{text}");
        assert!(text.contains(&brokers), "names the broker: {text}");
        assert!(text.contains("share.version"), "says what to do: {text}");
    };
    check(kpipe::consumer::ShareConsumer::new(config.clone()).unwrap_err());
    check(
        ConsumerPool::start_cloned(config, |_: &ConsumedRecord| Ok::<(), String>(())).unwrap_err(),
    );
}

#[test]
fn share_groups_and_group_configs_are_clear_errors_on_kafka_3_9() {
    let Some(brokers) = legacy() else { return };
    let mut cluster = cluster(&brokers);
    let release = format!("Kafka {}", legacy_release());
    let t = Duration::from_secs(10);

    let err = cluster
        .share_group_offsets("some-share-group", t)
        .unwrap_err();
    assert!(
        matches!(err, kpipe::client::Error::ShareGroupsUnsupported { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    for needle in ["Kafka 4.2 or newer", &release, &brokers] {
        assert!(text.contains(needle), "{needle}: {text}");
    }

    let err = cluster
        .alter_group_config(
            "some-share-group",
            &[("share.auto.offset.reset", "earliest")],
            t,
        )
        .unwrap_err();
    let text = err.to_string();
    for needle in [
        "share.auto.offset.reset=earliest",
        "group configs need Kafka 4.0 or newer",
        &release,
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}
