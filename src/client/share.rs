//! The wire side of share groups (KIP-932): ShareGroupHeartbeat to the group coordinator,
//! ShareFetch and ShareAcknowledge to partition leaders.
//!
//! A share member does not own partitions: the records of a partition are *acquired* by
//! whichever member fetched them, for the lock duration the broker names, and each is then
//! acknowledged one by one (accept, release for another delivery, reject as poison, or a gap
//! where an acquired offset holds no record). Acknowledgements ride on the member's next
//! ShareFetch to that leader, or go alone in a ShareAcknowledge. Both requests belong to a
//! *share session* per leader: epoch 0 opens it with the full partition list, each answer
//! moves the epoch on by one, and later requests name only what changed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatchA,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch as AckBatchF, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};
use uuid::Uuid;

use super::error::{Error, Location, Result};
use super::group::{assignment_by_id, at, group_id, s, ConsumerHeartbeatAnswer};
use super::records::{Batches, FetchedRecord};

/// A partition by topic id, as the share APIs name them.
pub(crate) type IdPartition = (Uuid, i32);

/// How a record is acknowledged, with its wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum AckKind {
    /// An acquired offset that holds no record (a control record, a compacted one).
    Gap = 0,
    /// Processed: done for good.
    Accept = 1,
    /// Give it back: it is delivered again (to any member), its delivery count one higher.
    Release = 2,
    /// Poison: archived, never delivered again.
    Reject = 3,
    /// Keep it: the acquisition lock starts again (KIP-1222, ShareFetch and
    /// ShareAcknowledge v2).
    Renew = 4,
}

/// One ShareGroupHeartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShareHeartbeat {
    /// Our member id (a UUID we made, kept for the member's life).
    pub member_id: String,
    /// 0 joins, -1 leaves, else the epoch the coordinator gave.
    pub epoch: i32,
    /// The rack the member is in.
    pub rack: Option<String>,
    /// The topics subscribed (`None`: unchanged since the last heartbeat).
    pub topics: Option<Vec<String>>,
}

/// The coordinator's answer to a ShareGroupHeartbeat: the fields of a consumer group's,
/// the assignment being the member's whole one, when it changed.
pub(crate) type ShareHeartbeatAnswer = ConsumerHeartbeatAnswer;

pub(crate) fn share_heartbeat_request(
    group: &str,
    hb: &ShareHeartbeat,
) -> ShareGroupHeartbeatRequest {
    let mut req = ShareGroupHeartbeatRequest::default();
    req.group_id = group_id(group);
    req.member_id = s(&hb.member_id);
    req.member_epoch = hb.epoch;
    req.rack_id = hb.rack.as_deref().map(s);
    req.subscribed_topic_names = hb
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| TopicName(s(t))).collect());
    req
}

pub(crate) fn read_share_heartbeat(
    resp: &ShareGroupHeartbeatResponse,
    broker: &str,
) -> Result<ShareHeartbeatAnswer> {
    Error::check(
        resp.error_code,
        at(broker, "ShareGroupHeartbeat"),
        resp.error_message.as_deref(),
    )?;
    Ok(ShareHeartbeatAnswer {
        member_id: resp.member_id.as_ref().map(|m| m.to_string()),
        epoch: resp.member_epoch,
        interval: Duration::from_millis(resp.heartbeat_interval_ms.max(0) as u64),
        assignment: resp.assignment.as_ref().map(|a| {
            assignment_by_id(
                a.topic_partitions
                    .iter()
                    .map(|t| (t.topic_id, &t.partitions[..])),
            )
        }),
    })
}

/// Acknowledgements of one partition as the wire wants them: ranges of offsets, each with
/// one type for the whole range, or one type per offset.
pub(crate) type AckRanges = Vec<(i64, i64, Vec<i8>)>;

/// `acks` (any order, one per offset) as ranges: consecutive offsets of one type share a
/// range with a single type.
pub(crate) fn ack_ranges(acks: &[(i64, AckKind)]) -> AckRanges {
    let mut sorted = acks.to_vec();
    sorted.sort_unstable_by_key(|&(offset, _)| offset);
    sorted.dedup_by_key(|&mut (offset, _)| offset);
    let mut out: AckRanges = Vec::new();
    for (offset, kind) in sorted {
        match out.last_mut() {
            Some((_, last, types)) if *last + 1 == offset && types == &[kind as i8] => {
                *last = offset;
            }
            _ => out.push((offset, offset, vec![kind as i8])),
        }
    }
    out
}

/// Whether `acks` hold a renewal (v2 requests say so in `IsRenewAck`).
fn renews(acks: &BTreeMap<IdPartition, AckRanges>) -> bool {
    acks.values()
        .flatten()
        .any(|(_, _, types)| types.contains(&(AckKind::Renew as i8)))
}

/// What one ShareFetch asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShareFetchSpec {
    pub member_id: String,
    /// 0 opens the session, -1 closes it.
    pub epoch: i32,
    pub max_wait: Duration,
    pub min_bytes: i32,
    pub max_bytes: i32,
    /// The most records to acquire (the broker may go past it to end on a batch boundary,
    /// unless `record_limit`).
    pub max_records: i32,
    /// Acquire at most `max_records`, splitting batches (ShareFetch v2, KIP-1206).
    pub record_limit: bool,
    /// Partitions to name: all of them on a session's first request, then those new to it
    /// or with acknowledgements.
    pub partitions: Vec<IdPartition>,
    /// Acknowledgements to send, by partition (each of them also in `partitions`).
    pub acks: BTreeMap<IdPartition, AckRanges>,
    /// Partitions to take out of the session.
    pub forget: Vec<IdPartition>,
}

pub(crate) fn share_fetch_request(
    group: &str,
    spec: &ShareFetchSpec,
    version: i16,
) -> ShareFetchRequest {
    let mut req = ShareFetchRequest::default();
    req.group_id = Some(group_id(group));
    req.member_id = Some(s(&spec.member_id));
    req.share_session_epoch = spec.epoch;
    req.max_wait_ms = spec.max_wait.as_millis().min(i32::MAX as u128) as i32;
    req.min_bytes = spec.min_bytes;
    req.max_bytes = spec.max_bytes;
    req.max_records = spec.max_records;
    req.batch_size = spec.max_records;
    if version >= 2 {
        req.share_acquire_mode = i8::from(spec.record_limit);
        req.is_renew_ack = renews(&spec.acks);
    }
    let mut topics: BTreeMap<Uuid, FetchTopic> = BTreeMap::new();
    for &(id, partition) in &spec.partitions {
        let mut p = FetchPartition::default();
        p.partition_index = partition;
        p.acknowledgement_batches = spec
            .acks
            .get(&(id, partition))
            .into_iter()
            .flatten()
            .map(|(first, last, types)| {
                let mut b = AckBatchF::default();
                b.first_offset = *first;
                b.last_offset = *last;
                b.acknowledge_types = types.clone();
                b
            })
            .collect();
        let t = topics.entry(id).or_insert_with(|| {
            let mut t = FetchTopic::default();
            t.topic_id = id;
            t
        });
        t.partitions.push(p);
    }
    req.topics = topics.into_values().collect();
    let mut forget: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for &(id, p) in &spec.forget {
        forget.entry(id).or_default().push(p);
    }
    req.forgotten_topics_data = forget
        .into_iter()
        .map(|(id, partitions)| {
            let mut f = ForgottenTopic::default();
            f.topic_id = id;
            f.partitions = partitions;
            f
        })
        .collect();
    req
}

/// What one partition of a ShareFetch answer holds.
#[derive(Debug)]
pub(crate) struct SharePartition {
    pub partition: IdPartition,
    /// The records acquired, or the fetch error.
    pub fetched: Result<Acquired>,
    /// Whether the acknowledgements sent for the partition were taken (`Ok` also when none
    /// were sent).
    pub acked: Result<()>,
}

/// Records acquired from one partition.
#[derive(Debug, Default)]
pub(crate) struct Acquired {
    /// The records, in offset order, each with its delivery count.
    pub records: Vec<(FetchedRecord, i16)>,
    /// Acquired offsets that hold no record (control records, say): acknowledged as gaps.
    pub gaps: Vec<i64>,
}

/// A ShareFetch or ShareAcknowledge answer, per partition.
#[derive(Debug, Default)]
pub(crate) struct ShareAnswer {
    /// How long the acquired records stay locked, when the broker said.
    pub lock: Option<Duration>,
    pub partitions: Vec<SharePartition>,
}

fn lock_of(ms: i32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

fn location<'a>(broker: &'a str, api: &'static str, partition: i32) -> impl Fn() -> Location + 'a {
    move || Location {
        broker: broker.to_owned(),
        api,
        topic: None,
        partition: Some(partition),
    }
}

/// Read a ShareFetch answer; a top-level error (the session, the group) is the `Err`.
pub(crate) fn read_share_fetch(
    resp: &ShareFetchResponse,
    broker: &str,
    max_decompressed: usize,
) -> Result<ShareAnswer> {
    Error::check(
        resp.error_code,
        at(broker, "ShareFetch"),
        resp.error_message.as_deref(),
    )?;
    let mut out = ShareAnswer {
        lock: lock_of(resp.acquisition_lock_timeout_ms),
        partitions: Vec::new(),
    };
    for t in &resp.responses {
        for p in &t.partitions {
            let idx = p.partition_index;
            let acked = Error::check(
                p.acknowledge_error_code,
                location(broker, "ShareAcknowledge", idx),
                p.acknowledge_error_message.as_deref(),
            );
            let fetched = Error::check(
                p.error_code,
                location(broker, "ShareFetch", idx),
                p.error_message.as_deref(),
            )
            .and_then(|()| {
                let ranges: Vec<(i64, i64, i16)> = p
                    .acquired_records
                    .iter()
                    .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
                    .collect();
                acquired(
                    p.records.clone().unwrap_or_default(),
                    &ranges,
                    max_decompressed,
                )
                .map_err(|detail| Error::Protocol {
                    broker: broker.to_owned(),
                    detail: format!("share fetch of partition {idx}: {detail}"),
                })
            });
            out.partitions.push(SharePartition {
                partition: (t.topic_id, idx),
                fetched,
                acked,
            });
        }
    }
    Ok(out)
}

/// The records of `data` that fall in the acquired `ranges` (first, last, delivery count),
/// and the acquired offsets without a record.
pub(crate) fn acquired(
    data: Bytes,
    ranges: &[(i64, i64, i16)],
    max_decompressed: usize,
) -> std::result::Result<Acquired, String> {
    let mut out = Acquired::default();
    let Some(first) = ranges.iter().map(|r| r.0).min() else {
        return Ok(out);
    };
    let mut batches = Batches::new(data, first, max_decompressed);
    let mut records = Vec::new();
    while batches.next_batch(&mut records)?.is_some() {}
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut it = records.into_iter().peekable();
    for (lo, hi, count) in sorted {
        let mut next = lo;
        while let Some(r) = it.peek() {
            if r.offset > hi {
                break;
            }
            let r = it.next().expect("peeked");
            if r.offset < next {
                continue; // before this range (not acquired by us), or a duplicate
            }
            out.gaps.extend(next..r.offset);
            next = r.offset + 1;
            out.records.push((r, count));
        }
        if next <= hi {
            out.gaps.extend(next..=hi);
        }
    }
    Ok(out)
}

pub(crate) fn share_acknowledge_request(
    group: &str,
    member_id: &str,
    epoch: i32,
    acks: &BTreeMap<IdPartition, AckRanges>,
    version: i16,
) -> ShareAcknowledgeRequest {
    let mut req = ShareAcknowledgeRequest::default();
    req.group_id = Some(group_id(group));
    req.member_id = Some(s(member_id));
    req.share_session_epoch = epoch;
    if version >= 2 {
        req.is_renew_ack = renews(acks);
    }
    let mut topics: BTreeMap<Uuid, AcknowledgeTopic> = BTreeMap::new();
    for (&(id, partition), ranges) in acks {
        let mut p = AcknowledgePartition::default();
        p.partition_index = partition;
        p.acknowledgement_batches = ranges
            .iter()
            .map(|(first, last, types)| {
                let mut b = AckBatchA::default();
                b.first_offset = *first;
                b.last_offset = *last;
                b.acknowledge_types = types.clone();
                b
            })
            .collect();
        topics
            .entry(id)
            .or_insert_with(|| {
                let mut t = AcknowledgeTopic::default();
                t.topic_id = id;
                t
            })
            .partitions
            .push(p);
    }
    req.topics = topics.into_values().collect();
    req
}

/// Read a ShareAcknowledge answer; a top-level error is the `Err`.
pub(crate) fn read_share_acknowledge(
    resp: &ShareAcknowledgeResponse,
    broker: &str,
) -> Result<ShareAnswer> {
    Error::check(
        resp.error_code,
        at(broker, "ShareAcknowledge"),
        resp.error_message.as_deref(),
    )?;
    let mut out = ShareAnswer {
        lock: lock_of(resp.acquisition_lock_timeout_ms),
        partitions: Vec::new(),
    };
    for t in &resp.responses {
        for p in &t.partitions {
            out.partitions.push(SharePartition {
                partition: (t.topic_id, p.partition_index),
                fetched: Ok(Acquired::default()),
                acked: Error::check(
                    p.error_code,
                    location(broker, "ShareAcknowledge", p.partition_index),
                    p.error_message.as_deref(),
                ),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;
    use crate::client::records::{encode_batch, Record};
    use crate::client::Compression;

    #[test]
    fn acks_become_ranges_of_one_type() {
        use AckKind::*;
        let acks = [
            (5, Accept),
            (3, Accept),
            (4, Accept),
            (6, Release),
            (7, Release),
            (9, Accept),
            (9, Reject),
        ];
        assert_eq!(
            ack_ranges(&acks),
            vec![(3, 5, vec![1]), (6, 7, vec![2]), (9, 9, vec![1])]
        );
        assert!(ack_ranges(&[]).is_empty());
    }

    fn batch(base: i64, n: usize) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                value: Some(Bytes::from(format!("v{i}"))),
                ..Record::default()
            })
            .collect();
        let mut b = encode_batch(&records, Compression::None).unwrap().to_vec();
        b[0..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn only_acquired_offsets_are_handed_out_and_holes_are_gaps() {
        // Offsets 10..20 in the batch; this member acquired 12..=13 (2nd delivery) and
        // 16..=21, of which 20 and 21 hold no record.
        let got = acquired(batch(10, 10), &[(16, 21, 1), (12, 13, 2)], 1 << 20).unwrap();
        let offsets: Vec<(i64, i16)> = got.records.iter().map(|(r, c)| (r.offset, *c)).collect();
        assert_eq!(
            offsets,
            [(12, 2), (13, 2), (16, 1), (17, 1), (18, 1), (19, 1)]
        );
        assert_eq!(got.gaps, [20, 21]);
        let none = acquired(batch(10, 10), &[], 1 << 20).unwrap();
        assert!(none.records.is_empty() && none.gaps.is_empty());
    }

    /// The v2 fields sit where Kafka 4.4's ShareFetchRequestData and
    /// ShareAcknowledgeRequestData put them (the vendored crate is patched for them).
    #[test]
    fn version_two_carries_the_renew_flag_and_acquire_mode() {
        let mut acks = BTreeMap::new();
        let id = Uuid::from_u128(1);
        acks.insert((id, 3), ack_ranges(&[(10, AckKind::Renew)]));
        let spec = ShareFetchSpec {
            member_id: "m".into(),
            epoch: 4,
            max_records: 500,
            partitions: vec![(id, 3)],
            acks: acks.clone(),
            ..ShareFetchSpec::default()
        };
        let req = share_fetch_request("g", &spec, 2);
        assert!(req.is_renew_ack);
        let mut v2 = bytes::BytesMut::new();
        req.encode(&mut v2, 2).unwrap();
        let mut v1 = bytes::BytesMut::new();
        let mut plain = req.clone();
        plain.is_renew_ack = false;
        plain.encode(&mut v1, 1).unwrap();
        assert_eq!(v2.len(), v1.len() + 2, "one int8 and one bool more");
        // After group "g", member "m", epoch, wait, min, max, max records, batch size.
        let fixed = 2 + 2 + 4 * 6;
        assert_eq!(&v2[fixed..fixed + 2], &[0, 1], "acquire mode 0, renew true");
        let back = ShareFetchRequest::decode(&mut v2.freeze(), 2).unwrap();
        assert_eq!(back, req);
        assert!(
            req.encode(&mut bytes::BytesMut::new(), 1).is_err(),
            "v1 cannot renew"
        );

        let ack = share_acknowledge_request("g", "m", 5, &acks, 2);
        let mut b = bytes::BytesMut::new();
        ack.encode(&mut b, 2).unwrap();
        assert_eq!(b[2 + 2 + 4], 1, "renew flag after the session epoch");
        let ack1 = share_acknowledge_request("g", "m", 5, &acks, 1);
        assert!(!ack1.is_renew_ack);
    }
}
