//! ListOffsets (earliest, latest, by timestamp) agrees with what was produced.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kpipe::client::{encode_batch, Acks, Compression, OffsetSpec, Record};

#[test]
fn earliest_latest_and_by_time() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "offsets", 2);

    let empty = cluster
        .list_offsets(&topic, &[0, 1], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(empty.iter().map(|o| o.offset).collect::<Vec<_>>(), [0, 0]);

    // Partition 0: 100 records at t = 10_000, 10_010, ... ; partition 1: untouched.
    let records: Vec<Record> = (0..100)
        .map(|i| Record {
            value: Some(Bytes::from(format!("v{i}"))),
            timestamp: 10_000 + 10 * i,
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

    // The first record at or after t = 10_250 is #25.
    let at = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Timestamp(10_250))
        .unwrap();
    assert_eq!((at[0].offset, at[0].timestamp), (25, 10_250));
    let between = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Timestamp(10_255))
        .unwrap();
    assert_eq!((between[0].offset, between[0].timestamp), (26, 10_260));
    // After the last record there is none.
    let after = cluster
        .list_offsets(&topic, &[0], OffsetSpec::Timestamp(99_999_999))
        .unwrap();
    assert_eq!(after[0].offset, -1);
}
