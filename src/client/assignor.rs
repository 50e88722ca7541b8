//! The consumer protocol's member metadata and assignments, and the classic assignors the
//! group leader runs (range and round-robin, named as the Java client names them so that
//! kpipe and Java members share one group).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Partitions by topic.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// Which assignor the leader runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions to members in sorted order (Java's
    /// `RangeAssignor`, protocol name `range`). The default.
    #[default]
    Range,
    /// All partitions of all topics dealt to members in turn (Java's
    /// `RoundRobinAssignor`, protocol name `roundrobin`).
    RoundRobin,
}

impl Assignor {
    /// The protocol name sent in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor with this protocol name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Assign `partitions` (count per topic) among `members` (member id → subscribed topics).
    /// Every member gets an entry, possibly empty.
    pub fn assign(
        self,
        members: &BTreeMap<String, Vec<String>>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Assignment> {
        let mut out: BTreeMap<String, Assignment> = members
            .keys()
            .map(|m| (m.clone(), Assignment::new()))
            .collect();
        match self {
            Assignor::Range => {
                for (topic, &count) in partitions {
                    let subscribers: Vec<&String> = members
                        .iter()
                        .filter(|(_, topics)| topics.contains(topic))
                        .map(|(m, _)| m)
                        .collect();
                    if subscribers.is_empty() {
                        continue;
                    }
                    let n = subscribers.len() as i32;
                    let (per, extra) = (count / n, count % n);
                    let mut next = 0;
                    for (i, m) in subscribers.into_iter().enumerate() {
                        let take = per + i32::from((i as i32) < extra);
                        if take > 0 {
                            let entry = out.get_mut(m).expect("every member has an entry");
                            entry.insert(topic.clone(), (next..next + take).collect());
                        }
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let ids: Vec<&String> = members.keys().collect();
                let mut turn = 0usize;
                for (topic, &count) in partitions {
                    for p in 0..count {
                        // The next member (in turn) that subscribes to this topic.
                        for _ in 0..ids.len() {
                            let m = ids[turn % ids.len()];
                            turn += 1;
                            if members[m].contains(topic) {
                                out.get_mut(m)
                                    .expect("every member has an entry")
                                    .entry(topic.clone())
                                    .or_default()
                                    .push(p);
                                break;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// Encode member metadata for JoinGroup: the consumer protocol's subscription, with the
/// leading version the Java client expects (the crate leaves it out).
pub fn encode_subscription(topics: &[String], owned: &Assignment) -> Bytes {
    const VERSION: i16 = 1;
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    sub.owned_partitions = owned
        .iter()
        .map(|(t, ps)| {
            let mut o = OwnedTopic::default();
            o.topic = TopicName(StrBytes::from_string(t.clone()));
            o.partitions = ps.clone();
            o
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i16(VERSION);
    sub.encode(&mut buf, VERSION)
        .expect("a subscription always encodes");
    buf.freeze()
}

/// Decode a member's subscription (any version 0-3) into its topics.
pub fn decode_subscription(metadata: &Bytes) -> Result<Vec<String>, String> {
    let (version, mut body) = split_version(metadata)?;
    let sub = ConsumerProtocolSubscription::decode(&mut body, version.min(3))
        .map_err(|e| format!("bad subscription: {e}"))?;
    Ok(sub.topics.iter().map(|t| t.to_string()).collect())
}

/// Encode an assignment for SyncGroup, with its leading version.
pub fn encode_assignment(assignment: &Assignment) -> Bytes {
    const VERSION: i16 = 1;
    let mut a = ConsumerProtocolAssignment::default();
    a.assigned_partitions = assignment
        .iter()
        .map(|(t, ps)| {
            let mut tp = AssignedTopic::default();
            tp.topic = TopicName(StrBytes::from_string(t.clone()));
            tp.partitions = ps.clone();
            tp
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i16(VERSION);
    a.encode(&mut buf, VERSION)
        .expect("an assignment always encodes");
    buf.freeze()
}

/// Decode the assignment SyncGroup returned (empty bytes: nothing assigned).
pub fn decode_assignment(bytes: &Bytes) -> Result<Assignment, String> {
    if bytes.is_empty() {
        return Ok(Assignment::new());
    }
    let (version, mut body) = split_version(bytes)?;
    let a = ConsumerProtocolAssignment::decode(&mut body, version.min(3))
        .map_err(|e| format!("bad assignment: {e}"))?;
    let mut out = Assignment::new();
    for tp in a.assigned_partitions {
        let mut ps = tp.partitions;
        ps.sort_unstable();
        out.entry(tp.topic.0.to_string()).or_default().extend(ps);
    }
    Ok(out)
}

fn split_version(bytes: &Bytes) -> Result<(i16, Bytes), String> {
    if bytes.len() < 2 {
        return Err("consumer protocol data shorter than its version".into());
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version < 0 {
        return Err(format!("consumer protocol version {version}"));
    }
    Ok((version, bytes.slice(2..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, topics: &[&str]) -> BTreeMap<String, Vec<String>> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn range_gives_contiguous_runs_with_the_extra_to_the_first() {
        let parts = BTreeMap::from([("t".to_string(), 7)]);
        let a = Assignor::Range.assign(&members(3, &["t"]), &parts);
        assert_eq!(a["m0"]["t"], [0, 1, 2]);
        assert_eq!(a["m1"]["t"], [3, 4]);
        assert_eq!(a["m2"]["t"], [5, 6]);
    }

    #[test]
    fn six_partitions_three_members_two_each() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&members(3, &["t"]), &parts);
            assert!(a.values().all(|x| x["t"].len() == 2), "{assignor:?}: {a:?}");
        }
    }

    #[test]
    fn more_members_than_partitions_leaves_some_empty() {
        let parts = BTreeMap::from([("t".to_string(), 2)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&members(4, &["t"]), &parts);
            assert_eq!(a.len(), 4);
            let total: usize = a
                .values()
                .map(|x| x.values().map(Vec::len).sum::<usize>())
                .sum();
            assert_eq!(total, 2, "{assignor:?}");
            assert_eq!(a.values().filter(|x| x.is_empty()).count(), 2);
        }
    }

    #[test]
    fn round_robin_deals_across_topics() {
        let parts = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 3)]);
        let a = Assignor::RoundRobin.assign(&members(2, &["a", "b"]), &parts);
        assert_eq!(a["m0"]["a"], [0, 2]);
        assert_eq!(a["m1"]["a"], [1]);
        assert_eq!(a["m0"]["b"], [1]);
        assert_eq!(a["m1"]["b"], [0, 2]);
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let mut m = members(2, &["a"]);
        m.insert("m2".into(), vec!["b".into()]);
        let parts = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&m, &parts);
            assert_eq!(a["m2"].keys().collect::<Vec<_>>(), ["b"], "{assignor:?}");
            assert_eq!(a["m2"]["b"], [0, 1]);
            assert!(!a["m0"].contains_key("b"));
        }
    }

    #[test]
    fn protocol_data_round_trips_with_its_version_prefix() {
        let owned = Assignment::from([("t".to_string(), vec![1, 2])]);
        let sub = encode_subscription(&["t".into(), "u".into()], &owned);
        assert_eq!(&sub[..2], &[0, 1], "leading version");
        assert_eq!(decode_subscription(&sub).unwrap(), ["t", "u"]);
        let a = Assignment::from([("t".to_string(), vec![3, 0])]);
        let bytes = encode_assignment(&a);
        assert_eq!(decode_assignment(&bytes).unwrap()["t"], [0, 3]);
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
        assert!(decode_assignment(&Bytes::from_static(&[0])).is_err());
    }
}
