//! Topic administration, metadata, group configs and share group offsets against the real
//! broker; Kafka's own tools (ConfigCommand, the console share consumer, the share group
//! command) read and make what kpipe reads and sets.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::java::{console_share_consumer, run_class};
use kpipe::client::{Error, KafkaCode, NewTopic, OffsetSpec, ShareGroupOffset};

const T: Duration = Duration::from_secs(30);

#[test]
fn create_grow_and_delete_a_topic() {
    let mut cluster = common::cluster();
    let name = common::unique_topic("admin");

    cluster
        .create_topic(
            &NewTopic::new(&name, 2, 1).config("retention.ms", "3600000"),
            T,
        )
        .unwrap();
    let info = cluster.topic(&name).unwrap().clone();
    assert_eq!(info.partitions.len(), 2);
    assert!(info.all_led());
    assert!(!info.id.is_nil(), "Kafka 3+ assigns topic ids");
    assert!(cluster.brokers().contains_key(&info.partitions[0].leader));

    // Creating it again is a distinguishable error.
    let again = cluster
        .create_topic(&NewTopic::new(&name, 2, 1), T)
        .unwrap_err();
    assert!(again.is_already_exists(), "{again}");
    assert!(again.to_string().contains(&name), "{again}");

    cluster.create_partitions(&name, 5, T).unwrap();
    cluster.invalidate(Some(&name));
    let grown = cluster.topic(&name).unwrap();
    assert_eq!(grown.partitions.len(), 5);
    assert_eq!(grown.id, info.id, "growing keeps the topic id");

    cluster.delete_topic(&name, T).unwrap();
    cluster.invalidate(None);
    let gone = cluster.topic(&name).unwrap_err();
    assert!(matches!(gone, Error::UnknownTopic { .. }), "{gone}");
}

#[test]
fn bad_topic_requests_are_clear_errors() {
    let mut cluster = common::cluster();
    let err = cluster
        .create_topic(&NewTopic::new(common::unique_topic("bad"), 1, 3), T)
        .unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::InvalidReplicationFactor),
        "{err}"
    );

    let err = cluster
        .create_topic(&NewTopic::new("bad name!", 1, 1), T)
        .unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::InvalidTopicException),
        "{err}"
    );

    let missing = common::unique_topic("missing");
    let err = cluster.delete_topic(&missing, T).unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::UnknownTopicOrPartition),
        "{err}"
    );

    let name = common::new_topic(&mut cluster, "shrink", 3);
    let err = cluster.create_partitions(&name, 2, T).unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::InvalidPartitions),
        "{err}"
    );
}

#[test]
fn metadata_lists_the_broker_and_cluster() {
    let mut cluster = common::cluster();
    assert!(!cluster.brokers().is_empty());
    assert!(cluster.cluster_id().is_some_and(|id| !id.is_empty()));
    let b = cluster.brokers().values().next().unwrap().clone();
    // A second connection opens lazily and negotiates versions of its own.
    let conn = cluster.broker(b.id).unwrap();
    assert!(conn.is_open());
    assert!(
        conn.broker_versions().range(0).is_some(),
        "Produce advertised"
    );
}

// ---------------------------------------------------------------------------------------
// Group configs and share groups (KIP-932)
// ---------------------------------------------------------------------------------------

const CONFIG_COMMAND: &str = "org.apache.kafka.tools.ConfigCommand";
const SHARE_GROUP_COMMAND: &str = "org.apache.kafka.tools.consumer.group.ShareGroupCommand";
/// Bound on one JVM tool run (start-up alone takes 1-3 s on two busy cores).
const JAVA: Duration = Duration::from_secs(90);

/// The dynamic configs of group `group`, as Java's `kafka-configs.sh --describe` prints them.
fn java_group_configs(group: &str) -> BTreeMap<String, String> {
    let out = run_class(
        CONFIG_COMMAND,
        &[
            "--bootstrap-server",
            &common::brokers(),
            "--describe",
            "--entity-type",
            "groups",
            "--entity-name",
            group,
        ],
        JAVA,
    );
    // "Dynamic configs for group G are:" then "  key=value sensitive=false synonyms={...}".
    out.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split(' ').next()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn group_configs_set_by_kpipe_are_what_java_reads_back() {
    let mut cluster = common::cluster();
    let group = common::unique_topic("share-config");
    // The group need not exist; each call changes only the keys it names.
    cluster
        .alter_group_config(&group, &[("share.auto.offset.reset", "earliest")], T)
        .unwrap();
    cluster
        .alter_group_config(
            &group,
            &[
                ("share.record.lock.duration.ms", "15000"),
                ("share.delivery.count.limit", "3"),
            ],
            T,
        )
        .unwrap();
    let expected: BTreeMap<String, String> = [
        ("share.auto.offset.reset", "earliest"),
        ("share.delivery.count.limit", "3"),
        ("share.record.lock.duration.ms", "15000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(java_group_configs(&group), expected);
}

#[test]
fn refused_group_configs_are_clear_errors_naming_the_key() {
    let mut cluster = common::cluster();
    let group = common::unique_topic("share-bad-config");
    for (key, value, says) in [
        ("share.no.such.config", "1", "Unknown group config name"),
        ("share.auto.offset.reset", "sometimes", "earliest"),
        ("share.record.lock.duration.ms", "soon", "Not a number"),
    ] {
        let err = cluster
            .alter_group_config(&group, &[(key, value)], T)
            .unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::InvalidConfig), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("setting {key}={value} of group {group:?}"))
                && text.contains(says),
            "{key}: {text}"
        );
    }
    // What no broker would take is refused before asking one.
    let err = cluster.alter_group_config(&group, &[], T).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("nothing to set"), "{err}");
}

#[test]
fn an_unknown_share_group_is_a_clear_error() {
    let mut cluster = common::cluster();
    let group = common::unique_topic("share-missing");
    let started = Instant::now();
    let err = cluster.share_group_offsets(&group, T).unwrap_err();
    assert!(matches!(err, Error::UnknownShareGroup { .. }), "{err}");
    assert_eq!(err.kafka_code(), Some(KafkaCode::GroupIdNotFound));
    let text = err.to_string();
    assert!(
        text.contains(&format!("share group {group:?} does not exist")),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried: {:?}",
        started.elapsed()
    );
}

/// `count[p]` records into partition `p` of `topic`, acknowledged.
fn produce_per_partition(topic: &str, count: &[usize]) {
    let producer = kpipe::Producer::new(common::producer_config(topic)).unwrap();
    for (p, &n) in count.iter().enumerate() {
        for i in 0..n {
            producer
                .send(kpipe::ProducerRecord::new(format!("p{p}-{i}")).partition(p as i32))
                .unwrap();
        }
    }
    let summary = producer.close(T).unwrap();
    assert_eq!(summary.delivered, count.iter().sum::<usize>() as u64);
}

/// The records Java's console share consumer printed: `Partition:P<TAB>Offset:O<TAB>value`.
fn printed_offsets(stdout: &str) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let partition = fields.next().and_then(|f| f.strip_prefix("Partition:"));
        let offset = fields.next().and_then(|f| f.strip_prefix("Offset:"));
        if let (Some(p), Some(o)) = (partition, offset) {
            out.entry(p.parse().unwrap())
                .or_default()
                .push(o.parse().unwrap());
        }
    }
    out
}

/// Java's `kafka-share-groups.sh --describe --offsets --verbose` rows for `group`:
/// (topic, partition, leader epoch, start offset, lag), `-` where unknown.
fn java_share_offsets(group: &str) -> Vec<[String; 5]> {
    let out = run_class(
        SHARE_GROUP_COMMAND,
        &[
            "--bootstrap-server",
            &common::brokers(),
            "--describe",
            "--offsets",
            "--verbose",
            "--group",
            group,
        ],
        JAVA,
    );
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 6 && f[0] == group)
        .map(|f| [1, 2, 3, 4, 5].map(|i| f[i].to_owned()))
        .collect()
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[test]
fn share_group_offsets_match_what_a_java_share_consumer_acknowledged() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "share", 2);
    let group = common::unique_topic("share-group");
    let produced = [30, 20];
    produce_per_partition(&topic, &produced);
    // Share groups start at the latest offset unless told otherwise.
    cluster
        .alter_group_config(&group, &[("share.auto.offset.reset", "earliest")], T)
        .unwrap();

    // Java reads (and acknowledges) 15 of the 50 records, then closes, releasing any
    // it had acquired beyond them.
    let consumed = 15;
    let java_started = Instant::now();
    let stdout = console_share_consumer(&topic, &group, consumed, JAVA);
    let java_took = java_started.elapsed();
    let read = printed_offsets(&stdout);
    assert_eq!(
        read.values().map(Vec::len).sum::<usize>(),
        consumed,
        "{stdout}"
    );

    let ends = cluster
        .list_offsets(&topic, &[0, 1], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(
        ends.iter().map(|e| e.offset).collect::<Vec<_>>(),
        produced.map(|n| n as i64)
    );
    // Each partition's acknowledged records are a prefix of it (one consumer reads each
    // partition in order): the start offset moves past them, and the lag is the rest.
    let expected: Vec<(i64, i64)> = (0..2)
        .map(|p| {
            let offsets = read.get(&p).cloned().unwrap_or_default();
            let start = offsets.len() as i64;
            assert_eq!(offsets, (0..start).collect::<Vec<_>>(), "partition {p}");
            (start, produced[p as usize] as i64 - start)
        })
        .collect();
    let mut last: Vec<ShareGroupOffset> = Vec::new();
    let settled = |rows: &[ShareGroupOffset]| {
        rows.len() == 2
            && rows.iter().all(|r| {
                let (start, lag) = expected[r.partition as usize];
                r.topic == topic
                    // A partition the consumer never fetched from has no state yet.
                    && (r.start_offset == Some(start) || (start == 0 && r.start_offset.is_none()))
                    && (r.start_offset.is_none() || r.lag == Some(lag))
                    && r.start_offset.is_some() == r.leader_epoch.is_some()
            })
    };
    common::await_condition(
        Duration::from_secs(30),
        "the share group's state to hold what Java acknowledged",
        || {
            last = cluster.share_group_offsets(&group, T).unwrap();
            settled(&last)
        },
    );
    println!(
        "Java read {read:?} in {java_took:?}; the group's state ({:?} later): {last:?}",
        java_started.elapsed() - java_took
    );
    assert!(
        last.iter().any(|r| r.start_offset.is_some()),
        "the consumer fetched somewhere: {last:?}"
    );
    assert_eq!(
        last.iter().map(|r| r.partition).collect::<Vec<_>>(),
        [0, 1],
        "{last:?}"
    );

    // Java's share group tool prints the same rows.
    let ours: Vec<[String; 5]> = last
        .iter()
        .map(|r| {
            [
                r.topic.clone(),
                r.partition.to_string(),
                dash(r.leader_epoch),
                dash(r.start_offset),
                dash(r.lag),
            ]
        })
        .collect();
    assert_eq!(java_share_offsets(&group), ours);
}
