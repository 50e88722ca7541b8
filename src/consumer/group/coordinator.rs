//! The group thread's line to the group coordinator: finding it, one dedicated connection,
//! and one way to send a request that notices when the coordinator moved, and gives up a
//! held request (JoinGroup waits a whole rebalance) when the member closes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatResponse, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, ShareGroupHeartbeatResponse, SyncGroupResponse,
};
use kafka_protocol::protocol::Request;

use crate::client::{
    self, consumer_heartbeat_request, heartbeat_request, join_request, leave_request,
    offset_commit_request, offset_fetch_request, read_consumer_heartbeat, read_heartbeat,
    read_join, read_leave, read_offset_commit, read_offset_fetch, read_share_heartbeat, read_sync,
    share_heartbeat_request, sync_request, BrokerVersions, Cluster, CommittedOffset,
    ConsumerHeartbeat, ConsumerHeartbeatAnswer, GroupMember, JoinAnswer, JoinParams, Joined,
    KafkaCode, ShareHeartbeat, ShareHeartbeatAnswer, TopicPartition,
};

use super::super::error::Error;
use super::beacon::Beacon;

/// Responses that carry the broker's throttle time (KIP-219).
pub(crate) trait Throttled {
    fn throttle_ms(&self) -> i32;
}

macro_rules! throttled {
    ($($t:ty),*) => {$(
        impl Throttled for $t {
            fn throttle_ms(&self) -> i32 {
                self.throttle_time_ms
            }
        }
    )*};
}

throttled!(
    ConsumerGroupHeartbeatResponse,
    HeartbeatResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    ShareGroupHeartbeatResponse,
    SyncGroupResponse
);

/// What a [`Membership`](super::Membership) asks of its group coordinator and cluster: the
/// group thread's [`Coordinator`] does it over the wire; unit tests script the answers.
pub(crate) trait GroupIo {
    /// The group's id.
    fn group(&self) -> &str;
    /// One JoinGroup, held by the coordinator for up to `wait`.
    fn join(&mut self, params: &JoinParams<'_>, wait: Duration) -> client::Result<JoinAnswer>;
    /// One SyncGroup: our assignment, raw.
    fn sync(
        &mut self,
        joined: &Joined,
        instance_id: Option<&str>,
        plan: Vec<(String, Bytes)>,
        wait: Duration,
    ) -> client::Result<Bytes>;
    /// One classic Heartbeat.
    fn heartbeat(&mut self, member: &GroupMember) -> client::Result<()>;
    /// LeaveGroup for a dynamic member.
    fn leave(&mut self, member_id: &str) -> client::Result<()>;
    /// One ConsumerGroupHeartbeat.
    fn consumer_heartbeat(
        &mut self,
        hb: &ConsumerHeartbeat,
    ) -> client::Result<ConsumerHeartbeatAnswer>;
    /// Partition counts of `topics`, from fresh metadata; a topic that does not exist is
    /// absent.
    fn partition_counts(
        &mut self,
        topics: &BTreeSet<String>,
    ) -> client::Result<BTreeMap<String, i32>>;
    /// Topic ids of `topics`, from fresh metadata; unknown ones are absent.
    fn topic_ids(&mut self, topics: &[String]) -> BTreeMap<String, Uuid>;
    /// The error for a cluster that does not offer the consumer group protocol.
    fn unsupported(&mut self) -> Error;
    /// One ShareGroupHeartbeat.
    fn share_heartbeat(&mut self, hb: &ShareHeartbeat) -> client::Result<ShareHeartbeatAnswer>;
    /// The error for a cluster that does not offer share groups.
    fn share_unsupported(&mut self) -> Error;
}

impl GroupIo for Coordinator {
    fn group(&self) -> &str {
        &self.group
    }

    fn join(&mut self, params: &JoinParams<'_>, wait: Duration) -> client::Result<JoinAnswer> {
        self.call(|v| join_request(params, v), Some(wait), read_join)
    }

    fn sync(
        &mut self,
        joined: &Joined,
        instance_id: Option<&str>,
        plan: Vec<(String, Bytes)>,
        wait: Duration,
    ) -> client::Result<Bytes> {
        let group = self.group.clone();
        self.call(
            |v| sync_request(&group, joined, instance_id, plan, v),
            Some(wait),
            read_sync,
        )
    }

    fn heartbeat(&mut self, member: &GroupMember) -> client::Result<()> {
        let group = self.group.clone();
        self.call(
            |v| heartbeat_request(&group, member, v),
            None,
            read_heartbeat,
        )
    }

    fn leave(&mut self, member_id: &str) -> client::Result<()> {
        let group = self.group.clone();
        self.call(
            |v| leave_request(&group, member_id, None, v),
            None,
            read_leave,
        )
    }

    fn consumer_heartbeat(
        &mut self,
        hb: &ConsumerHeartbeat,
    ) -> client::Result<ConsumerHeartbeatAnswer> {
        let group = self.group.clone();
        self.call(
            |_| consumer_heartbeat_request(&group, hb),
            None,
            read_consumer_heartbeat,
        )
    }

    fn partition_counts(
        &mut self,
        topics: &BTreeSet<String>,
    ) -> client::Result<BTreeMap<String, i32>> {
        let mut counts = BTreeMap::new();
        for t in topics {
            self.cluster.invalidate(Some(t));
            match self.cluster.topic(t) {
                Ok(info) => {
                    counts.insert(t.clone(), info.partitions.len() as i32);
                }
                Err(client::Error::UnknownTopic { .. }) => {
                    log::warn!("consumer: subscribed topic {t} does not exist")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(counts)
    }

    fn topic_ids(&mut self, topics: &[String]) -> BTreeMap<String, Uuid> {
        let mut ids = BTreeMap::new();
        for t in topics {
            self.cluster.invalidate(Some(t));
            match self.cluster.topic(t) {
                Ok(info) => {
                    ids.insert(t.clone(), info.id);
                }
                Err(e) => log::debug!("consumer: metadata for {t}: {e}"),
            }
        }
        ids
    }

    fn unsupported(&mut self) -> Error {
        Coordinator::unsupported(self)
    }

    fn share_heartbeat(&mut self, hb: &ShareHeartbeat) -> client::Result<ShareHeartbeatAnswer> {
        let group = self.group.clone();
        self.call(
            |_| share_heartbeat_request(&group, hb),
            None,
            read_share_heartbeat,
        )
    }

    fn share_unsupported(&mut self) -> Error {
        match self.cluster.some_broker_versions() {
            Ok((broker, versions)) => share_unsupported_by(broker, &versions),
            Err(_) => share_unsupported_by("the cluster".into(), &BrokerVersions::default()),
        }
    }
}

/// How often a held request looks at the abort flag.
const ABORT_CHECK: Duration = Duration::from_millis(50);

/// The coordinator of one group, as one group thread sees it.
#[derive(Debug)]
pub(crate) struct Coordinator {
    cluster: Cluster,
    group: String,
    node: Option<i32>,
    beacon: Arc<Beacon>,
}

impl Coordinator {
    pub(super) fn new(cluster: Cluster, group: &str, beacon: Arc<Beacon>) -> Self {
        Coordinator {
            cluster,
            group: group.to_owned(),
            node: None,
            beacon,
        }
    }

    /// Send the request `build` makes for the negotiated version, wait up to `wait` (the
    /// request timeout if `None`) for the answer, and read it with `read`. A transport
    /// failure, NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE makes the next call find the
    /// coordinator again.
    fn call<R, T>(
        &mut self,
        build: impl FnOnce(i16) -> R,
        wait: Option<Duration>,
        read: impl FnOnce(&R::Response, &str) -> client::Result<T>,
    ) -> client::Result<T>
    where
        R: Request,
        R::Response: Throttled,
    {
        let result = self.exchange(build, wait, read);
        if let Err(e) = &result {
            self.forget_if_moved(e);
        }
        result
    }

    fn exchange<R, T>(
        &mut self,
        build: impl FnOnce(i16) -> R,
        wait: Option<Duration>,
        read: impl FnOnce(&R::Response, &str) -> client::Result<T>,
    ) -> client::Result<T>
    where
        R: Request,
        R::Response: Throttled,
    {
        let id = self.node()?;
        let beacon = self.beacon.clone();
        let conn = self.cluster.dedicated(id)?;
        let version = conn.version::<R>()?;
        let broker = conn.broker().to_owned();
        let wait = wait.unwrap_or(conn.request_timeout());
        let pending = conn.send_within(&build(version), version, wait)?;
        let deadline = Instant::now() + wait;
        // Wait in slices so that a closing member need not sit out a whole rebalance.
        while !conn.poll_response(ABORT_CHECK) && Instant::now() < deadline {
            if beacon.aborted() {
                conn.abandon("the consumer is closing");
                return Err(client::Error::Closed { broker });
            }
        }
        let resp = conn.receive::<R>(pending)?;
        conn.throttle(resp.throttle_ms());
        read(&resp, &broker)
    }

    fn node(&mut self) -> client::Result<i32> {
        match self.node {
            Some(id) => Ok(id),
            None => {
                let id = self.cluster.find_coordinator(&self.group)?;
                log::debug!("group {:?}: coordinator is node {id}", self.group);
                self.node = Some(id);
                Ok(id)
            }
        }
    }

    /// After an error: find the coordinator again if it moved or the connection broke.
    fn forget_if_moved(&mut self, e: &client::Error) {
        let moved = matches!(
            e.kafka_code(),
            Some(KafkaCode::NotCoordinator) | Some(KafkaCode::CoordinatorNotAvailable)
        );
        let transport = e.kafka_code().is_none()
            && !matches!(
                e,
                client::Error::UnsupportedVersion { .. } | client::Error::Misuse(_)
            );
        if moved || transport {
            self.node = None;
        }
    }

    /// Fail now, with the reason, if the cluster does not offer the consumer group protocol
    /// (KIP-848: Kafka 4.0+ with group.version 1). Any broker can tell: the features are the
    /// cluster's. A cluster that cannot be asked yet is given the benefit of the doubt: the
    /// first heartbeat will tell.
    pub(super) fn check_consumer_protocol(&mut self) -> Result<(), Error> {
        let (broker, versions) = match self.cluster.some_broker_versions() {
            Ok(v) => v,
            Err(e) if e.is_retriable() => return Ok(()),
            Err(e) => return Err(Error::Client(e)),
        };
        if offers_consumer_protocol(&versions) {
            Ok(())
        } else {
            Err(unsupported_by(broker, &versions))
        }
    }

    /// Fail now, with the reason, if the cluster does not offer share groups (KIP-932:
    /// Kafka 4.1+ with the feature share.version 1, on by default from 4.2). As for the
    /// consumer protocol, a cluster that cannot be asked yet is given the benefit of the doubt.
    pub(super) fn check_share_protocol(&mut self) -> Result<(), Error> {
        let (broker, versions) = match self.cluster.some_broker_versions() {
            Ok(v) => v,
            Err(e) if e.is_retriable() => return Ok(()),
            Err(e) => return Err(Error::Client(e)),
        };
        if offers_share_groups(&versions) {
            Ok(())
        } else {
            Err(share_unsupported_by(broker, &versions))
        }
    }

    /// The error for a cluster without the consumer group protocol, naming a broker of it and
    /// the release it runs.
    pub(super) fn unsupported(&mut self) -> Error {
        match self.cluster.some_broker_versions() {
            Ok((broker, versions)) => unsupported_by(broker, &versions),
            Err(_) => unsupported_by("the cluster".into(), &BrokerVersions::default()),
        }
    }

    /// Commit `offsets` as `member`: one result per partition.
    pub(super) fn commit(
        &mut self,
        member: &GroupMember,
        offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    ) -> client::Result<Vec<(TopicPartition, client::Result<()>)>> {
        let group = self.group.clone();
        let results = self.call(
            |v| -> OffsetCommitRequest { offset_commit_request(&group, member, offsets, v) },
            None,
            |resp, broker| Ok(read_offset_commit(resp, broker)),
        )?;
        // OffsetCommit says NOT_COORDINATOR per partition: find the coordinator again too.
        if let Some(Err(e)) = results.iter().map(|(_, r)| r).find(|r| r.is_err()) {
            self.forget_if_moved(e);
        }
        Ok(results)
    }

    /// The group's committed offsets of `partitions` (absent: none), asked as `member`.
    pub(super) fn committed(
        &mut self,
        member: Option<&GroupMember>,
        partitions: &[TopicPartition],
    ) -> client::Result<BTreeMap<TopicPartition, CommittedOffset>> {
        let group = self.group.clone();
        self.call(
            |v| -> OffsetFetchRequest { offset_fetch_request(&group, partitions, member, v) },
            None,
            read_offset_fetch,
        )
    }
}

/// Whether a broker that advertised `versions` offers the consumer group protocol. Kafka
/// 3.7-3.9 list ConsumerGroupHeartbeat v0 (a preview, off by default); a 4.x cluster still
/// at group.version 0 lists v1 but refuses it.
fn offers_consumer_protocol(versions: &BrokerVersions) -> bool {
    let listed = versions
        .range(ApiKey::ConsumerGroupHeartbeat as i16)
        .is_some_and(|r| r.max >= client::floor(ApiKey::ConsumerGroupHeartbeat));
    let enabled = versions.feature("group.version").is_some_and(|v| v >= 1)
        || versions.feature("metadata.version").is_none();
    listed && enabled
}

/// Whether a broker that advertised `versions` offers share groups: the three share APIs
/// at v1 or later (4.0's early-access v0 is gone), and share.version 1 finalized.
fn offers_share_groups(versions: &BrokerVersions) -> bool {
    let listed = [
        ApiKey::ShareGroupHeartbeat,
        ApiKey::ShareFetch,
        ApiKey::ShareAcknowledge,
    ]
    .into_iter()
    .all(|key| {
        versions
            .range(key as i16)
            .is_some_and(|r| r.max >= client::floor(key))
    });
    let enabled = versions.feature("share.version").is_some_and(|v| v >= 1)
        || versions.feature("metadata.version").is_none();
    listed && enabled
}

fn share_unsupported_by(broker: String, versions: &BrokerVersions) -> Error {
    Error::ShareGroupsUnsupported {
        broker,
        release: versions
            .release()
            .unwrap_or_else(|| "a cluster without share.version 1".to_owned()),
    }
}

fn unsupported_by(broker: String, versions: &BrokerVersions) -> Error {
    Error::ProtocolUnsupported {
        broker,
        release: versions
            .release()
            .unwrap_or_else(|| "a cluster without group.version 1".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn broker(heartbeat: Option<(i16, i16)>, features: &[(&'static str, i16)]) -> BrokerVersions {
        let mut resp = ApiVersionsResponse::default();
        if let Some((min, max)) = heartbeat {
            let mut v = ApiVersion::default();
            v.api_key = ApiKey::ConsumerGroupHeartbeat as i16;
            v.min_version = min;
            v.max_version = max;
            resp.api_keys.push(v);
        }
        for &(name, level) in features {
            let mut f = FinalizedFeatureKey::default();
            f.name = StrBytes::from_static_str(name);
            f.max_version_level = level;
            f.min_version_level = level;
            resp.finalized_features.push(f);
        }
        BrokerVersions::from_response(&resp)
    }

    #[test]
    fn the_consumer_protocol_needs_heartbeat_v1_and_group_version_1() {
        let kafka_3_9 = broker(Some((0, 0)), &[("metadata.version", 21)]);
        assert!(!offers_consumer_protocol(&kafka_3_9));
        let err = unsupported_by("b:9292".into(), &kafka_3_9).to_string();
        assert!(
            err.contains("Kafka 3.9 (metadata.version 21)") && err.contains("b:9292"),
            "{err}"
        );
        let kafka_4_4 = broker(
            Some((0, 1)),
            &[("metadata.version", 33), ("group.version", 1)],
        );
        assert!(offers_consumer_protocol(&kafka_4_4));
        let upgraded = broker(Some((0, 1)), &[("metadata.version", 33)]);
        assert!(
            !offers_consumer_protocol(&upgraded),
            "group.version still 0"
        );
        assert!(!offers_consumer_protocol(&broker(None, &[])));
        // A broker that reports no features at all is asked; its heartbeat answer decides.
        assert!(offers_consumer_protocol(&broker(Some((0, 1)), &[])));
    }
}
