//! ListOffsets (earliest, latest, by timestamp) agrees with what was produced.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kpipe::client::{Acks, Compression, OffsetSpec};
use kpipe::unstable::{encode_batch, Record};

#[test]
fn earliest_latest_and_by_time() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "offsets", 2);

    let empty = cluster
        .list_offsets(&topic, &[0, 1], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(empty.iter().map(|o| o.offset).collect::<Vec<_>>(), [0, 0]);

    // Partition 0: 100 records at t = T, T + 10, ... ; partition 1: untouched. T is now:
    // records stamped in the past are past the broker's retention, and its retention
    // check may delete them (active segment and all) before they are looked up.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<Record> = (0..100)
        .map(|i| Record {
            value: Some(Bytes::from(format!("v{i}"))),
            timestamp: t + 10 * i,
            ..Default::default()
        })
        .collect();
    for chunk in records.chunks(30) {
        let batch = encode_batch(chunk, Compression::Lz4).unwrap();
        cluster
            .produce(&topic, 0, batch, Acks::All, Duration::from_secs(10))
            .unwrap();
    }

    let earliest = cluster
        .list_offsets(&topic, &[0, 1], OffsetSpec::Earliest)
        .unwrap();
    assert_eq!(
        earliest
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect::<Vec<_>>(),
        [(0, 0), (1, 0)]
    );
    let latest = cluster
        .list_offsets(&topic, &[0, 1], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect::<Vec<_>>(),
        [(0, 100), (1, 0)]
    );

    // The first record at or after T + 250 is #25.
    let at = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Timestamp(t + 250))
        .unwrap();
    assert_eq!((at[0].offset, at[0].timestamp), (25, t + 250));
    let between = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Timestamp(t + 255))
        .unwrap();
    assert_eq!((between[0].offset, between[0].timestamp), (26, t + 260));
    // After the last record there is none.
    let after = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Timestamp(t + 99_999_999))
        .unwrap();
    assert_eq!(after[0].offset, -1);
}

/// A consumer asks for offsets (a partition newly assigned without a committed offset)
/// while its next fetch is already in flight to the same broker: the answer must not be
/// taken from the fetch's, and the fetch must still be read in turn.
#[test]
fn list_offsets_while_a_fetch_is_in_flight_to_the_same_broker() {
    use kpipe::unstable::{FetchParams, FetchTarget};
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "offsets-busy", 1);
    // One record, acknowledged: the partition has a settled leader.
    common::produce(&topic, "v", 1);
    let id = cluster.topic(&topic).unwrap().id;
    // The broker holds this fetch (nothing to read) for up to a second.
    let params = FetchParams {
        max_wait: Duration::from_secs(1),
        min_bytes: 1 << 20,
        ..FetchParams::default()
    };
    let target = FetchTarget {
        topic: topic.clone(),
        topic_id: id,
        partition: 0,
        offset: 1,
        current_leader_epoch: None,
        replica: None,
    };
    let inflight = cluster.send_fetch(&params, &[target]).unwrap();
    let listed = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(listed[0].offset, 1);
    let fetched = cluster.receive_fetch(&params, inflight).unwrap();
    assert_eq!(fetched.len(), 1);
    let part = fetched.into_iter().next().unwrap().result.unwrap();
    assert!(part.records.is_empty() && part.high_watermark == 1);
}
