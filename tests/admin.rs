//! Topic administration and metadata against the real broker.

mod common;

use std::time::Duration;

use kpipe::client::{is_already_exists, Error, KafkaCode, NewTopic};

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
    assert!(is_already_exists(&again), "{again}");
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
