//! The classic consumer group protocol, one request at a time: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetFetch, OffsetCommit. Retries and the member's
//! state machine live in the consumer layer.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
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
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{BrokerInfo, Cluster};
use super::connection::Connection;
use super::error::{Error, Location, Result};

/// A topic-partition.
pub type TopicPartition = (String, i32);

fn at(conn: &Connection, api: &'static str) -> impl Fn() -> Location {
    let broker = conn.broker().to_owned();
    move || Location {
        broker: broker.clone(),
        api,
        topic: None,
        partition: None,
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// What one JoinGroup round gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
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
}

/// JoinGroup parameters.
#[derive(Debug, Clone)]
pub struct JoinParams<'a> {
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
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

impl Cluster {
    /// Find the group coordinator and return its broker id (its address is added to the
    /// known brokers if metadata did not list it).
    pub fn find_coordinator(&mut self, group: &str) -> Result<i32> {
        let (broker, resp) = self.request_any_with(|version| {
            let mut req = FindCoordinatorRequest::default();
            req.key_type = 0;
            if version >= 4 {
                req.coordinator_keys = vec![s(group)];
            } else {
                req.key = s(group);
            }
            req
        })?;
        let here = || Location {
            broker: broker.clone(),
            api: "FindCoordinator",
            topic: None,
            partition: None,
        };
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
        Error::check(code, here, message.as_deref())?;
        let addr = format!("{}:{port}", host.as_str());
        self.add_broker(BrokerInfo {
            id,
            addr,
            rack: None,
        });
        Ok(id)
    }
}

/// Join (or rejoin) the group. The broker holds the answer until the rebalance completes,
/// so this waits up to the rebalance timeout (plus a margin). MEMBER_ID_REQUIRED comes back
/// as an error whose message is the member id to rejoin with; [`join_group`] handles it.
pub fn join_group(conn: &mut Connection, p: &JoinParams<'_>) -> Result<Joined> {
    let mut member_id = p.member_id.to_owned();
    for _ in 0..2 {
        let mut req = JoinGroupRequest::default();
        req.group_id = group_id(p.group);
        req.session_timeout_ms = ms(p.session_timeout);
        req.rebalance_timeout_ms = ms(p.rebalance_timeout);
        req.member_id = s(&member_id);
        req.group_instance_id = p.instance_id.map(s);
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
        req.reason = None;
        let wait = p.rebalance_timeout + Duration::from_secs(5);
        let resp = conn.request_within(&req, wait)?;
        conn.throttle(resp.throttle_time_ms);
        // v4+: the first join is refused with MEMBER_ID_REQUIRED and an id to use.
        if resp.error_code == 79 && member_id.is_empty() {
            member_id = resp.member_id.to_string();
            continue;
        }
        Error::check(resp.error_code, at(conn, "JoinGroup"), None)?;
        return Ok(Joined {
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
        });
    }
    Err(Error::Protocol {
        broker: conn.broker().to_owned(),
        detail: "JoinGroup asked for a member id twice".into(),
    })
}

/// Send our part of SyncGroup (the leader sends every member's assignment) and return the
/// raw assignment the coordinator gives us.
pub fn sync_group(
    conn: &mut Connection,
    group: &str,
    joined: &Joined,
    instance_id: Option<&str>,
    assignments: Vec<(String, Bytes)>,
    timeout: Duration,
) -> Result<Bytes> {
    let version = conn.version::<SyncGroupRequest>()?;
    let mut req = SyncGroupRequest::default();
    req.group_id = group_id(group);
    req.generation_id = joined.generation;
    req.member_id = s(&joined.member_id);
    req.group_instance_id = instance_id.map(s);
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
    let resp = conn.request_within(&req, timeout)?;
    conn.throttle(resp.throttle_time_ms);
    Error::check(resp.error_code, at(conn, "SyncGroup"), None)?;
    Ok(resp.assignment)
}

/// One heartbeat. REBALANCE_IN_PROGRESS and friends come back as [`Error::Broker`].
pub fn heartbeat(
    conn: &mut Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<()> {
    let mut req = HeartbeatRequest::default();
    req.group_id = group_id(group);
    req.generation_id = generation;
    req.member_id = s(member_id);
    req.group_instance_id = instance_id.map(s);
    let resp = conn.request(&req)?;
    conn.throttle(resp.throttle_time_ms);
    Error::check(resp.error_code, at(conn, "Heartbeat"), None)
}

/// Leave the group so that its partitions move at once rather than after the session timeout.
pub fn leave_group(
    conn: &mut Connection,
    group: &str,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<()> {
    let version = conn.version::<LeaveGroupRequest>()?;
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
    let resp = conn.request(&req)?;
    conn.throttle(resp.throttle_time_ms);
    Error::check(resp.error_code, at(conn, "LeaveGroup"), None)?;
    for m in &resp.members {
        Error::check(m.error_code, at(conn, "LeaveGroup"), None)?;
    }
    Ok(())
}

/// The group's committed offsets for `partitions`; partitions without one are absent.
pub fn offset_fetch(
    conn: &mut Connection,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let version = conn.version::<OffsetFetchRequest>()?;
    let mut req = OffsetFetchRequest::default();
    if version >= 8 {
        // v8+ asks per group.
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = group_id(group);
        g.member_id = None;
        g.member_epoch = -1;
        g.topics = Some(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    let mut x = OffsetFetchRequestTopics::default();
                    x.name = TopicName(s(t));
                    x.partition_indexes = ps.clone();
                    x
                })
                .collect(),
        );
        req.groups = vec![g];
    } else {
        req.group_id = group_id(group);
        req.topics = Some(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    let mut x = OffsetFetchRequestTopic::default();
                    x.name = TopicName(s(t));
                    x.partition_indexes = ps.clone();
                    x
                })
                .collect(),
        );
    }
    req.require_stable = version >= 7;
    let resp = conn.request(&req)?;
    conn.throttle(resp.throttle_time_ms);
    let mut out = BTreeMap::new();
    let here = at(conn, "OffsetFetch");
    if let Some(g) = resp.groups.first() {
        Error::check(g.error_code, &here, None)?;
        for t in &g.topics {
            for p in &t.partitions {
                Error::check(p.error_code, &here, None)?;
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
    } else {
        Error::check(resp.error_code, &here, None)?;
        for t in &resp.topics {
            for p in &t.partitions {
                Error::check(p.error_code, &here, None)?;
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Commit `offsets` (the next offset to read, per partition) as member `member_id` of
/// `generation`. Returns one result per partition; a rejected commit is an error there.
pub fn offset_commit(
    conn: &mut Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<Vec<(TopicPartition, Result<()>)>> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t).or_default().push((*p, *o));
    }
    let mut req = OffsetCommitRequest::default();
    req.group_id = group_id(group);
    req.generation_id_or_member_epoch = generation;
    req.member_id = s(member_id);
    req.group_instance_id = instance_id.map(s);
    req.retention_time_ms = -1;
    req.topics = by_topic
        .iter()
        .map(|(t, ps)| {
            let mut x = OffsetCommitRequestTopic::default();
            x.name = TopicName(s(t));
            x.partitions = ps
                .iter()
                .map(|&(p, o)| {
                    let mut y = OffsetCommitRequestPartition::default();
                    y.partition_index = p;
                    y.committed_offset = o;
                    y.committed_leader_epoch = -1;
                    y
                })
                .collect();
            x
        })
        .collect();
    let resp = conn.request(&req)?;
    conn.throttle(resp.throttle_time_ms);
    let broker = conn.broker().to_owned();
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            let topic = t.name.0.to_string();
            let r = Error::check(
                p.error_code,
                || Location {
                    broker: broker.clone(),
                    api: "OffsetCommit",
                    topic: Some(topic.clone()),
                    partition: Some(p.partition_index),
                },
                None,
            );
            out.push(((topic, p.partition_index), r));
        }
    }
    Ok(out)
}
