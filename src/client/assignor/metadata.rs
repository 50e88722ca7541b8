//! The consumer protocol's member metadata and assignments: a member's [`Subscription`] as
//! JoinGroup carries it, and the [`Assignment`] SyncGroup hands back, each with its codec.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::classic::Assignor;

/// Partitions by topic.
pub(crate) type Assignment = BTreeMap<String, Vec<i32>>;

/// A member's subscription as carried in JoinGroup metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topics the member reads.
    pub topics: Vec<String>,
    /// Partitions the member owns now (cooperative protocols send them; eager ones leave it
    /// empty).
    pub owned: Assignment,
    /// The generation in which it owned them, -1 when unknown.
    pub generation: i32,
}

impl Default for Subscription {
    /// No topics, nothing owned, generation -1 (unknown), as a member that never joined.
    fn default() -> Self {
        Subscription {
            topics: Vec::new(),
            owned: Assignment::new(),
            generation: -1,
        }
    }
}

/// The consumer protocol subscription version kpipe writes (the newest, with owned
/// partitions, generation and rack).
const SUBSCRIPTION_VERSION: i16 = 3;

/// Encode member metadata for JoinGroup: ConsumerProtocolSubscription v3 with the leading
/// version the Java client expects (the crate leaves it out). Topics sorted, owned
/// partitions sorted, no rack. For cooperative-sticky the user data also carries the
/// generation as a 4-byte big-endian int, as Java's `CooperativeStickyAssignor` writes it
/// for leaders that read subscriptions older than v2.
pub(crate) fn encode_subscription(sub: &Subscription, assignor: Assignor) -> Bytes {
    let mut topics = sub.topics.clone();
    topics.sort_unstable();
    topics.dedup();
    let mut wire = ConsumerProtocolSubscription::default();
    wire.topics = topics.into_iter().map(StrBytes::from_string).collect();
    wire.owned_partitions = sub
        .owned
        .iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| {
            let mut ps = ps.clone();
            ps.sort_unstable();
            ps.dedup();
            let mut o = OwnedTopic::default();
            o.topic = TopicName(StrBytes::from_string(t.clone()));
            o.partitions = ps;
            o
        })
        .collect();
    wire.generation_id = sub.generation;
    wire.rack_id = None;
    if assignor.is_cooperative() {
        wire.user_data = Some(Bytes::copy_from_slice(&sub.generation.to_be_bytes()));
    }
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    wire.encode(&mut buf, SUBSCRIPTION_VERSION)
        .expect("a subscription always encodes");
    buf.freeze()
}

/// Decode a member's subscription, any version (a version above 3 is read as 3, as the
/// Java client does). The generation is the v2+ field when it is set (>= 0), else the one
/// in a 4-byte user data (cooperative-sticky members up to v1), else -1.
pub(crate) fn decode_subscription(metadata: &Bytes) -> Result<Subscription, String> {
    let (version, mut body) = split_version(metadata)?;
    let wire = ConsumerProtocolSubscription::decode(&mut body, version.min(3))
        .map_err(|e| format!("bad subscription: {e}"))?;
    let mut owned = Assignment::new();
    for tp in wire.owned_partitions {
        owned
            .entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    for ps in owned.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    let from_user_data = wire
        .user_data
        .as_deref()
        .and_then(|d| <[u8; 4]>::try_from(d).ok())
        .map(i32::from_be_bytes);
    let generation = match (wire.generation_id, from_user_data) {
        (g, _) if g >= 0 => g,
        (_, Some(g)) => g,
        _ => -1,
    };
    Ok(Subscription {
        topics: wire.topics.iter().map(|t| t.to_string()).collect(),
        owned,
        generation,
    })
}

/// Encode an assignment for SyncGroup, with its leading version.
pub(crate) fn encode_assignment(assignment: &Assignment) -> Bytes {
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
pub(crate) fn decode_assignment(bytes: &Bytes) -> Result<Assignment, String> {
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

    fn subscribed(topics: &[&str]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Subscription::default()
        }
    }

    /// A subscription as any client writes it at `version`, with its version prefix.
    fn wire(
        version: i16,
        topics: &[&str],
        owned: &[(&str, &[i32])],
        generation_id: i32,
        user_data: Option<&[u8]>,
    ) -> Bytes {
        let mut w = ConsumerProtocolSubscription::default();
        w.topics = topics
            .iter()
            .map(|t| StrBytes::from(t.to_string()))
            .collect();
        w.user_data = user_data.map(Bytes::copy_from_slice);
        w.owned_partitions = owned
            .iter()
            .map(|(t, ps)| {
                let mut o = OwnedTopic::default();
                o.topic = TopicName(StrBytes::from(t.to_string()));
                o.partitions = ps.to_vec();
                o
            })
            .collect();
        w.generation_id = generation_id;
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        w.encode(&mut buf, version.min(3)).unwrap();
        buf.freeze()
    }

    #[test]
    fn subscription_round_trips_as_v3() {
        let sub = Subscription {
            topics: vec!["u".into(), "t".into(), "u".into()],
            owned: Assignment::from([("t".to_string(), vec![2, 1, 2]), ("u".to_string(), vec![])]),
            generation: 7,
        };
        let want = Subscription {
            topics: vec!["t".into(), "u".into()],
            owned: Assignment::from([("t".to_string(), vec![1, 2])]),
            generation: 7,
        };
        for assignor in [Assignor::Range, Assignor::CooperativeSticky] {
            let bytes = encode_subscription(&sub, assignor);
            assert_eq!(&bytes[..2], &[0, 3], "leading version");
            assert_eq!(decode_subscription(&bytes).unwrap(), want, "{assignor:?}");
        }
        let fresh = encode_subscription(&Subscription::default(), Assignor::CooperativeSticky);
        assert_eq!(
            decode_subscription(&fresh).unwrap(),
            Subscription::default()
        );
    }

    #[test]
    fn older_versions_decode() {
        // v0: topics and user data only.
        let v0 = decode_subscription(&wire(0, &["t", "u"], &[], -1, None)).unwrap();
        assert_eq!(v0, subscribed(&["t", "u"]));
        // v1 from a cooperative-sticky member: the generation is in the user data.
        let gen5 = 5i32.to_be_bytes();
        let v1 = decode_subscription(&wire(1, &["t"], &[("t", &[3, 0])], -1, Some(&gen5)));
        let want = Subscription {
            topics: vec!["t".into()],
            owned: Assignment::from([("t".to_string(), vec![0, 3])]),
            generation: 5,
        };
        assert_eq!(v1.unwrap(), want);
        // v1 without user data: generation unknown.
        let v1 = decode_subscription(&wire(1, &["t"], &[("t", &[1])], -1, None)).unwrap();
        assert_eq!(v1.generation, -1);
    }

    #[test]
    fn the_generation_field_wins_over_the_user_data() {
        let gen5 = 5i32.to_be_bytes();
        let v3 = wire(3, &["t"], &[("t", &[0])], 9, Some(&gen5));
        assert_eq!(decode_subscription(&v3).unwrap().generation, 9);
        let unset = wire(2, &["t"], &[("t", &[0])], -1, Some(&gen5));
        assert_eq!(decode_subscription(&unset).unwrap().generation, 5);
        // User data in another format (not 4 bytes) says nothing about the generation.
        for data in [&[0u8, 0, 5][..], &[0, 0, 0, 1, 0, 0, 0, 5][..], &[][..]] {
            let other = wire(1, &["t"], &[], -1, Some(data));
            assert_eq!(decode_subscription(&other).unwrap().generation, -1);
        }
    }

    #[test]
    fn newer_versions_decode_as_v3_and_garbage_is_an_error() {
        let v4 = wire(4, &["t"], &[("t", &[2])], 3, None);
        let sub = decode_subscription(&v4).unwrap();
        assert_eq!((sub.topics, sub.generation), (vec!["t".to_string()], 3));
        for bad in [
            &[][..],
            &[0][..],
            &[0xff, 0xff][..],
            &[0, 3, 0, 0, 0, 1][..],
        ] {
            let bad = Bytes::copy_from_slice(bad);
            assert!(decode_subscription(&bad).is_err(), "{bad:?}");
        }
    }

    /// The JoinGroup metadata a Java 4.x consumer with `cooperative-sticky`, subscribed to
    /// `events`, owning partitions 0 and 2 in generation 5, and no `client.rack`, sends.
    /// Built by hand from apache/kafka: `ConsumerProtocolSubscription.json` (the fields
    /// and their versions), `ConsumerProtocol.serializeSubscription` (int16 version prefix,
    /// sorted topics and partitions, version 3), `ConsumerCoordinator.metadata()` (owned
    /// partitions, `generation().generationId`, an absent rack as null) and
    /// `CooperativeStickyAssignor.subscriptionUserData` (a struct of one INT32 generation).
    const JAVA_COOPERATIVE_STICKY: &[u8] = &[
        0, 3, // version 3
        0, 0, 0, 1, 0, 6, b'e', b'v', b'e', b'n', b't', b's', // topics: ["events"]
        0, 0, 0, 4, 0, 0, 0, 5, // user data: 4 bytes, generation 5
        0, 0, 0, 1, 0, 6, b'e', b'v', b'e', b'n', b't', b's', // owned: events
        0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // partitions [0, 2]
        0, 0, 0, 5, // generation id 5
        0xff, 0xff, // rack id: null
    ];

    #[test]
    fn cooperative_sticky_metadata_matches_the_java_client_byte_for_byte() {
        let sub = Subscription {
            topics: vec!["events".into()],
            owned: Assignment::from([("events".to_string(), vec![2, 0])]),
            generation: 5,
        };
        let bytes = encode_subscription(&sub, Assignor::CooperativeSticky);
        assert_eq!(&bytes[..], JAVA_COOPERATIVE_STICKY);
        let java = Bytes::from_static(JAVA_COOPERATIVE_STICKY);
        let decoded = decode_subscription(&java).unwrap();
        assert_eq!(decoded.owned["events"], [0, 2]);
        assert_eq!(decoded.generation, 5);
    }

    #[test]
    fn assignments_round_trip_with_their_version_prefix() {
        let a = Assignment::from([("t".to_string(), vec![3, 0])]);
        let bytes = encode_assignment(&a);
        assert_eq!(&bytes[..2], &[0, 1], "leading version");
        assert_eq!(decode_assignment(&bytes).unwrap()["t"], [0, 3]);
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
        assert!(decode_assignment(&Bytes::from_static(&[0])).is_err());
    }
}
