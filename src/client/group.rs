//! The consumer group protocols' messages, built and read without I/O: the classic protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), the consumer protocol's
//! ConsumerGroupHeartbeat (KIP-848), and OffsetFetch / OffsetCommit for both.
//!
//! Each request is built for the version its connection negotiated (some fields exist only
//! from a version on, and the codec refuses a field set where it does not exist), and each
//! reader turns a response into our types or an [`Error`] located at the broker that
//! answered. The consumer layer's group thread sends them on its coordinator connection and
//! keeps the member's state; FindCoordinator is [`Cluster::find_coordinator`].

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedById;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::cluster::{BrokerInfo, Cluster};
use super::error::{Error, KafkaCode, Location, Result};

/// A topic-partition.
pub type TopicPartition = (String, i32);

pub(super) fn at(broker: &str, api: &'static str) -> impl Fn() -> Location {
    let broker = broker.to_owned();
    move || Location {
        broker: broker.clone(),
        api,
        topic: None,
        partition: None,
    }
}

pub(super) fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

pub(super) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Partitions by topic, for requests that list them that way.
pub(super) fn by_topic<'a, T: Copy>(
    items: impl IntoIterator<Item = (&'a TopicPartition, T)>,
) -> BTreeMap<&'a str, Vec<(i32, T)>> {
    let mut out: BTreeMap<&str, Vec<(i32, T)>> = BTreeMap::new();
    for ((t, p), v) in items {
        out.entry(t.as_str()).or_default().push((*p, v));
    }
    out
}

/// How a member names itself in OffsetCommit and OffsetFetch: its member id, its generation
/// (classic protocol) or member epoch (consumer protocol), and its static instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id the coordinator knows.
    pub member_id: String,
    /// Generation (classic) or member epoch (consumer protocol).
    pub generation: i32,
    /// Static membership id (KIP-345), if any.
    pub instance_id: Option<String>,
}

/// A consumer group member as a transaction names it (KIP-447): what
/// [`Consumer::group_metadata`](crate::Consumer::group_metadata) gives and
/// [`Producer::send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction)
/// takes. The group coordinator refuses a transaction's offsets from a member it has moved
/// on from, so a member that lost its partitions cannot commit them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The group.
    pub group_id: String,
    /// The generation (classic protocol) or member epoch (KIP-848); -1 outside group
    /// management.
    pub generation_id: i32,
    /// The member id ("" outside group management).
    pub member_id: String,
    /// The static instance id, if any.
    pub group_instance_id: Option<String>,
}

/// What a coordinator coordinates: FindCoordinator's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CoordinatorKind {
    /// A consumer group, keyed by group id.
    Group = 0,
    /// A transactional producer, keyed by transactional id.
    Transaction = 1,
}

impl Cluster {
    /// Find the group coordinator and return its broker id (its address is added to the
    /// known brokers if metadata did not list it).
    pub fn find_coordinator(&mut self, group: &str) -> Result<i32> {
        self.find_coordinator_of(CoordinatorKind::Group, group)
    }

    /// FindCoordinator for one key of `kind`: a group id, or a transactional id
    /// ([`find_transaction_coordinator`](Self::find_transaction_coordinator)).
    pub(super) fn find_coordinator_of(&mut self, kind: CoordinatorKind, key: &str) -> Result<i32> {
        let (broker, resp) = self.request_any_with(|version| {
            let mut req = FindCoordinatorRequest::default();
            req.key_type = kind as i8;
            if version >= 4 {
                req.coordinator_keys = vec![s(key)];
            } else {
                req.key = s(key);
            }
            req
        })?;
        // v4+ answers per key in `coordinators`, older versions at the top level.
        let (code, message, id, host, port) = match resp.coordinators.first() {
            Some(c) => (
                c.error_code,
                c.error_message.clone(),
                c.node_id.0,
                c.host.clone(),
                c.port,
            ),
            None => (
                resp.error_code,
                resp.error_message.clone(),
                resp.node_id.0,
                resp.host.clone(),
                resp.port,
            ),
        };
        Error::check(code, at(&broker, "FindCoordinator"), message.as_deref())?;
        let addr = format!("{}:{port}", host.as_str());
        self.add_broker(BrokerInfo {
            id,
            addr,
            rack: None,
        });
        Ok(id)
    }
}

// ---------------------------------------------------------------------------------------
// The classic protocol
// ---------------------------------------------------------------------------------------

/// JoinGroup parameters.
#[derive(Debug, Clone)]
pub(crate) struct JoinParams<'a> {
    /// The group.
    pub group: &'a str,
    /// Our member id; empty on the first join.
    pub member_id: &'a str,
    /// Static membership id, if any.
    pub instance_id: Option<&'a str>,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout (how long the coordinator waits for members to rejoin).
    pub rebalance_timeout: Duration,
    /// (assignor name, subscription metadata), in preference order.
    pub protocols: Vec<(&'static str, Bytes)>,
    /// Why the member (re)joins, for the broker's log (v8+).
    pub reason: &'a str,
}

/// What one JoinGroup round gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    /// The group generation.
    pub generation: i32,
    /// Our member id.
    pub member_id: String,
    /// The leader's member id.
    pub leader: String,
    /// The chosen protocol (assignor) name.
    pub protocol: String,
    /// Every member and its metadata (only the leader receives these).
    pub members: Vec<(String, Bytes)>,
    /// A static leader that rejoined without a rebalance must not compute a new assignment
    /// (KIP-814): it sends SyncGroup with none and gets its old one back.
    pub skip_assignment: bool,
}

impl Joined {
    /// Whether this member leads the group and must compute the assignment.
    pub(crate) fn leads(&self) -> bool {
        self.leader == self.member_id && !self.skip_assignment
    }
}

/// The answer to one JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinAnswer {
    /// In the group, with this generation.
    Joined(Joined),
    /// The coordinator wants the member to join again with this id (JoinGroup v4+,
    /// MEMBER_ID_REQUIRED).
    MemberIdRequired(String),
}

/// Build a JoinGroup request.
pub(crate) fn join_request(p: &JoinParams<'_>, version: i16) -> JoinGroupRequest {
    let mut req = JoinGroupRequest::default();
    req.group_id = group_id(p.group);
    req.session_timeout_ms = ms(p.session_timeout);
    req.rebalance_timeout_ms = ms(p.rebalance_timeout);
    req.member_id = s(p.member_id);
    req.group_instance_id = p.instance_id.filter(|_| version >= 5).map(s);
    req.protocol_type = StrBytes::from_static_str("consumer");
    req.protocols = p
        .protocols
        .iter()
        .map(|(name, meta)| {
            let mut proto = JoinGroupRequestProtocol::default();
            proto.name = StrBytes::from_static_str(name);
            proto.metadata = meta.clone();
            proto
        })
        .collect();
    req.reason = (version >= 8).then(|| s(p.reason));
    req
}

/// Read a JoinGroup response.
pub(crate) fn read_join(resp: &JoinGroupResponse, broker: &str) -> Result<JoinAnswer> {
    if resp.error_code == KafkaCode::MemberIdRequired.code() && !resp.member_id.is_empty() {
        return Ok(JoinAnswer::MemberIdRequired(resp.member_id.to_string()));
    }
    Error::check(resp.error_code, at(broker, "JoinGroup"), None)?;
    Ok(JoinAnswer::Joined(Joined {
        generation: resp.generation_id,
        member_id: resp.member_id.to_string(),
        leader: resp.leader.to_string(),
        protocol: resp
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        members: resp
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.metadata.clone()))
            .collect(),
        skip_assignment: resp.skip_assignment,
    }))
}

/// Build a SyncGroup request: our part of it (the leader sends every member's assignment).
pub(crate) fn sync_request(
    group: &str,
    joined: &Joined,
    instance_id: Option<&str>,
    assignments: Vec<(String, Bytes)>,
    version: i16,
) -> SyncGroupRequest {
    let mut req = SyncGroupRequest::default();
    req.group_id = group_id(group);
    req.generation_id = joined.generation;
    req.member_id = s(&joined.member_id);
    req.group_instance_id = instance_id.filter(|_| version >= 3).map(s);
    if version >= 5 {
        req.protocol_type = Some(StrBytes::from_static_str("consumer"));
        req.protocol_name = Some(s(&joined.protocol));
    }
    req.assignments = assignments
        .into_iter()
        .map(|(m, a)| {
            let mut x = SyncGroupRequestAssignment::default();
            x.member_id = s(&m);
            x.assignment = a;
            x
        })
        .collect();
    req
}

/// Read a SyncGroup response: the raw assignment the coordinator gives us.
pub(crate) fn read_sync(resp: &SyncGroupResponse, broker: &str) -> Result<Bytes> {
    Error::check(resp.error_code, at(broker, "SyncGroup"), None)?;
    Ok(resp.assignment.clone())
}

/// Build a Heartbeat request.
pub(crate) fn heartbeat_request(
    group: &str,
    member: &GroupMember,
    version: i16,
) -> HeartbeatRequest {
    let mut req = HeartbeatRequest::default();
    req.group_id = group_id(group);
    req.generation_id = member.generation;
    req.member_id = s(&member.member_id);
    req.group_instance_id = member
        .instance_id
        .as_deref()
        .filter(|_| version >= 3)
        .map(s);
    req
}

/// Read a Heartbeat response. REBALANCE_IN_PROGRESS and friends come back as
/// [`Error::Broker`].
pub(crate) fn read_heartbeat(resp: &HeartbeatResponse, broker: &str) -> Result<()> {
    Error::check(resp.error_code, at(broker, "Heartbeat"), None)
}

/// Build a LeaveGroup request, so the member's partitions move at once rather than after
/// the session timeout.
pub(crate) fn leave_request(
    group: &str,
    member_id: &str,
    instance_id: Option<&str>,
    version: i16,
) -> LeaveGroupRequest {
    let mut req = LeaveGroupRequest::default();
    req.group_id = group_id(group);
    if version >= 3 {
        let mut m = MemberIdentity::default();
        m.member_id = s(member_id);
        m.group_instance_id = instance_id.map(s);
        if version >= 5 {
            m.reason = Some(StrBytes::from_static_str("the consumer is closing"));
        }
        req.members = vec![m];
    } else {
        req.member_id = s(member_id);
    }
    req
}

/// Read a LeaveGroup response.
pub(crate) fn read_leave(resp: &LeaveGroupResponse, broker: &str) -> Result<()> {
    Error::check(resp.error_code, at(broker, "LeaveGroup"), None)?;
    for m in &resp.members {
        Error::check(m.error_code, at(broker, "LeaveGroup"), None)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Offsets
// ---------------------------------------------------------------------------------------

/// An offset committed for a partition, or to commit: the next offset to read, and the
/// leader epoch of the record before it when known (KIP-320), so that a reader resuming
/// there can check that the log did not diverge before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// The leader epoch of the record before `offset`.
    pub leader_epoch: Option<i32>,
}

impl CommittedOffset {
    /// An offset without a known epoch.
    pub fn at(offset: i64) -> Self {
        CommittedOffset {
            offset,
            leader_epoch: None,
        }
    }
}

/// Build an OffsetFetch request for the group's committed offsets of `partitions`, asked as
/// `member` where the version carries it (v9+; consumer-protocol groups check it).
pub(crate) fn offset_fetch_request(
    group: &str,
    partitions: &[TopicPartition],
    member: Option<&GroupMember>,
    version: i16,
) -> OffsetFetchRequest {
    let topics = by_topic(partitions.iter().map(|tp| (tp, ())));
    let mut req = OffsetFetchRequest::default();
    if version >= 8 {
        // v8+ asks per group.
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = group_id(group);
        match member.filter(|_| version >= 9) {
            Some(m) => {
                g.member_id = Some(s(&m.member_id));
                g.member_epoch = m.generation;
            }
            None => {
                g.member_id = None;
                g.member_epoch = -1;
            }
        }
        g.topics = Some(
            topics
                .iter()
                .map(|(t, ps)| {
                    let mut x = OffsetFetchRequestTopics::default();
                    x.name = TopicName(s(t));
                    x.partition_indexes = ps.iter().map(|(p, ())| *p).collect();
                    x
                })
                .collect(),
        );
        req.groups = vec![g];
    } else {
        req.group_id = group_id(group);
        req.topics = Some(
            topics
                .iter()
                .map(|(t, ps)| {
                    let mut x = OffsetFetchRequestTopic::default();
                    x.name = TopicName(s(t));
                    x.partition_indexes = ps.iter().map(|(p, ())| *p).collect();
                    x
                })
                .collect(),
        );
    }
    req.require_stable = version >= 7;
    req
}

/// Read an OffsetFetch response: the committed offsets; partitions without one are absent.
pub(crate) fn read_offset_fetch(
    resp: &OffsetFetchResponse,
    broker: &str,
) -> Result<BTreeMap<TopicPartition, CommittedOffset>> {
    let here = at(broker, "OffsetFetch");
    let mut out = BTreeMap::new();
    let mut note = |topic: &str, partition: i32, code: i16, offset: i64, epoch: i32| {
        Error::check(code, &here, None)?;
        if offset >= 0 {
            let committed = CommittedOffset {
                offset,
                leader_epoch: (epoch >= 0).then_some(epoch),
            };
            out.insert((topic.to_owned(), partition), committed);
        }
        Ok::<(), Error>(())
    };
    if let Some(g) = resp.groups.first() {
        Error::check(g.error_code, &here, None)?;
        for t in &g.topics {
            for p in &t.partitions {
                note(
                    &t.name.0,
                    p.partition_index,
                    p.error_code,
                    p.committed_offset,
                    p.committed_leader_epoch,
                )?;
            }
        }
    } else {
        Error::check(resp.error_code, &here, None)?;
        for t in &resp.topics {
            for p in &t.partitions {
                note(
                    &t.name.0,
                    p.partition_index,
                    p.error_code,
                    p.committed_offset,
                    p.committed_leader_epoch,
                )?;
            }
        }
    }
    Ok(out)
}

/// Build an OffsetCommit request for `offsets` (the next offset to read, per partition) as
/// `member`.
pub(crate) fn offset_commit_request(
    group: &str,
    member: &GroupMember,
    offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    version: i16,
) -> OffsetCommitRequest {
    let mut req = OffsetCommitRequest::default();
    req.group_id = group_id(group);
    req.generation_id_or_member_epoch = member.generation;
    req.member_id = s(&member.member_id);
    req.group_instance_id = member
        .instance_id
        .as_deref()
        .filter(|_| version >= 7)
        .map(s);
    req.retention_time_ms = -1;
    req.topics = by_topic(offsets.iter().map(|(tp, o)| (tp, *o)))
        .iter()
        .map(|(t, ps)| {
            let mut x = OffsetCommitRequestTopic::default();
            x.name = TopicName(s(t));
            x.partitions = ps
                .iter()
                .map(|&(p, o)| {
                    let mut y = OffsetCommitRequestPartition::default();
                    y.partition_index = p;
                    y.committed_offset = o.offset;
                    y.committed_leader_epoch = o.leader_epoch.unwrap_or(-1);
                    y
                })
                .collect();
            x
        })
        .collect();
    req
}

/// Read an OffsetCommit response: one result per partition; a refused commit is an error
/// there.
pub(crate) fn read_offset_commit(
    resp: &OffsetCommitResponse,
    broker: &str,
) -> Vec<(TopicPartition, Result<()>)> {
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            let topic = t.name.0.to_string();
            let r = Error::check(
                p.error_code,
                || Location {
                    broker: broker.to_owned(),
                    api: "OffsetCommit",
                    topic: Some(topic.clone()),
                    partition: Some(p.partition_index),
                },
                None,
            );
            out.push(((topic, p.partition_index), r));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The consumer protocol (KIP-848)
// ---------------------------------------------------------------------------------------

/// One ConsumerGroupHeartbeat. `None` fields are left out ("unchanged since the last
/// heartbeat"); a joining member (epoch 0) and one that had an error send them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConsumerHeartbeat {
    /// Our member id (a UUID we made, kept for the life of the member).
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves as a static member that will come back.
    pub epoch: i32,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// How long the coordinator waits for us to give up revoked partitions.
    pub rebalance_timeout: Option<Duration>,
    /// The topics we subscribe to.
    pub topics: Option<Vec<String>>,
    /// The server-side assignor to use (`uniform`, `range`); `None`: the broker's default.
    pub server_assignor: Option<String>,
    /// The partitions we own, by topic id (an acknowledgement of the assignment).
    pub owned: Option<BTreeMap<Uuid, Vec<i32>>>,
}

/// What the coordinator answered to a ConsumerGroupHeartbeat (or, the same fields, a
/// ShareGroupHeartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConsumerHeartbeatAnswer {
    /// Our member id, if the coordinator sent it.
    pub member_id: Option<String>,
    /// Our member epoch now.
    pub epoch: i32,
    /// How often to heartbeat.
    pub interval: Duration,
    /// The target assignment by topic id, or `None` when it did not change.
    pub assignment: Option<BTreeMap<Uuid, Vec<i32>>>,
}

/// Build a ConsumerGroupHeartbeat request.
pub(crate) fn consumer_heartbeat_request(
    group: &str,
    hb: &ConsumerHeartbeat,
) -> ConsumerGroupHeartbeatRequest {
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = group_id(group);
    req.member_id = s(&hb.member_id);
    req.member_epoch = hb.epoch;
    req.instance_id = hb.instance_id.as_deref().map(s);
    req.rack_id = None;
    req.rebalance_timeout_ms = hb.rebalance_timeout.map_or(-1, ms);
    req.subscribed_topic_names = hb
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| TopicName(s(t))).collect());
    req.subscribed_topic_regex = None;
    req.server_assignor = hb.server_assignor.as_deref().map(s);
    req.topic_partitions = hb.owned.as_ref().map(|owned| {
        owned
            .iter()
            .map(|(id, ps)| {
                let mut t = OwnedById::default();
                t.topic_id = *id;
                t.partitions = ps.clone();
                t
            })
            .collect()
    });
    req
}

/// An assignment by topic id as the coordinator sends it, each topic's partitions sorted
/// and once.
pub(super) fn assignment_by_id<'a>(
    topics: impl IntoIterator<Item = (Uuid, &'a [i32])>,
) -> BTreeMap<Uuid, Vec<i32>> {
    let mut out: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (id, partitions) in topics {
        out.entry(id).or_default().extend(partitions);
    }
    for ps in out.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    out
}

/// Read a ConsumerGroupHeartbeat response.
pub(crate) fn read_consumer_heartbeat(
    resp: &ConsumerGroupHeartbeatResponse,
    broker: &str,
) -> Result<ConsumerHeartbeatAnswer> {
    Error::check(
        resp.error_code,
        at(broker, "ConsumerGroupHeartbeat"),
        resp.error_message.as_deref(),
    )?;
    Ok(ConsumerHeartbeatAnswer {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_group_heartbeat_response::{
        Assignment as TargetAssignment, TopicPartitions as TargetTopic,
    };

    fn member() -> GroupMember {
        GroupMember {
            member_id: "m-1".into(),
            generation: 7,
            instance_id: Some("host-a".into()),
        }
    }

    #[test]
    fn fields_a_version_lacks_are_left_out() {
        let p = JoinParams {
            group: "g",
            member_id: "",
            instance_id: Some("host-a"),
            session_timeout: Duration::from_secs(6),
            rebalance_timeout: Duration::from_secs(10),
            protocols: vec![("range", Bytes::from_static(b"x"))],
            reason: "first join",
        };
        assert_eq!(join_request(&p, 4).group_instance_id, None);
        assert_eq!(join_request(&p, 4).reason, None);
        let v9 = join_request(&p, 9);
        assert_eq!(v9.group_instance_id.as_deref(), Some("host-a"));
        assert_eq!(v9.reason.as_deref(), Some("first join"));
        assert_eq!(
            (v9.session_timeout_ms, v9.rebalance_timeout_ms),
            (6000, 10000)
        );
        assert_eq!(heartbeat_request("g", &member(), 2).group_instance_id, None);
        assert_eq!(
            heartbeat_request("g", &member(), 4)
                .group_instance_id
                .as_deref(),
            Some("host-a")
        );
        let offsets = BTreeMap::from([(
            ("t".to_string(), 1),
            CommittedOffset {
                offset: 5,
                leader_epoch: Some(3),
            },
        )]);
        assert_eq!(
            offset_commit_request("g", &member(), &offsets, 6).group_instance_id,
            None
        );
        let commit = offset_commit_request("g", &member(), &offsets, 9);
        assert_eq!(commit.generation_id_or_member_epoch, 7);
        assert_eq!(commit.topics[0].partitions[0].committed_offset, 5);
        assert_eq!(commit.topics[0].partitions[0].committed_leader_epoch, 3);
        let fetch = offset_fetch_request("g", &[("t".into(), 1)], Some(&member()), 8);
        assert_eq!(
            (
                fetch.groups[0].member_id.clone(),
                fetch.groups[0].member_epoch
            ),
            (None, -1)
        );
        let fetch = offset_fetch_request("g", &[("t".into(), 1)], Some(&member()), 9);
        assert_eq!(fetch.groups[0].member_epoch, 7);
    }

    #[test]
    fn member_id_required_is_an_answer_not_an_error() {
        let mut resp = JoinGroupResponse::default();
        resp.error_code = KafkaCode::MemberIdRequired.code();
        resp.member_id = s("given-id");
        assert_eq!(
            read_join(&resp, "b:9092").unwrap(),
            JoinAnswer::MemberIdRequired("given-id".into())
        );
        resp.error_code = KafkaCode::RebalanceInProgress.code();
        let err = read_join(&resp, "b:9092").unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::RebalanceInProgress));
        assert!(err.to_string().contains("JoinGroup from b:9092"), "{err}");
    }

    #[test]
    fn a_static_leader_told_to_skip_assignment_does_not_lead() {
        let mut resp = JoinGroupResponse::default();
        resp.member_id = s("me");
        resp.leader = s("me");
        resp.generation_id = 3;
        let JoinAnswer::Joined(j) = read_join(&resp, "b").unwrap() else {
            panic!()
        };
        assert!(j.leads());
        resp.skip_assignment = true;
        let JoinAnswer::Joined(j) = read_join(&resp, "b").unwrap() else {
            panic!()
        };
        assert!(!j.leads());
    }

    #[test]
    fn consumer_heartbeat_leaves_out_what_did_not_change() {
        let join = ConsumerHeartbeat {
            member_id: "u".into(),
            epoch: 0,
            instance_id: None,
            rebalance_timeout: Some(Duration::from_secs(30)),
            topics: Some(vec!["t".into()]),
            server_assignor: Some("uniform".into()),
            owned: Some(BTreeMap::new()),
        };
        let req = consumer_heartbeat_request("g", &join);
        assert_eq!(req.rebalance_timeout_ms, 30_000);
        assert_eq!(
            req.topic_partitions,
            Some(vec![]),
            "a join sends [] not null"
        );
        assert_eq!(req.subscribed_topic_names.unwrap().len(), 1);
        let keepalive = ConsumerHeartbeat {
            member_id: "u".into(),
            epoch: 4,
            ..ConsumerHeartbeat::default()
        };
        let req = consumer_heartbeat_request("g", &keepalive);
        assert_eq!(req.rebalance_timeout_ms, -1);
        assert_eq!(req.topic_partitions, None);
        assert_eq!(req.subscribed_topic_names, None);
        assert_eq!(req.server_assignor, None);
    }

    #[test]
    fn consumer_heartbeat_answers_sort_the_target() {
        let id = Uuid::from_u128(42);
        let mut t = TargetTopic::default();
        t.topic_id = id;
        t.partitions = vec![3, 1, 3];
        let mut a = TargetAssignment::default();
        a.topic_partitions = vec![t];
        let mut resp = ConsumerGroupHeartbeatResponse::default();
        resp.member_epoch = 5;
        resp.heartbeat_interval_ms = 500;
        resp.assignment = Some(a);
        let answer = read_consumer_heartbeat(&resp, "b").unwrap();
        assert_eq!(answer.assignment.unwrap()[&id], [1, 3]);
        assert_eq!(answer.interval, Duration::from_millis(500));
        resp.assignment = None;
        resp.error_code = KafkaCode::FencedMemberEpoch.code();
        resp.error_message = Some(s("stale"));
        let err = read_consumer_heartbeat(&resp, "b").unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::FencedMemberEpoch));
        assert!(err.to_string().contains("stale"), "{err}");
    }
}
