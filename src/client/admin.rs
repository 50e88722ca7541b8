//! Topic administration, offset look-ups, group configs and share group offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    OffsetForLeaderEpochRequest, ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::backoff::{retry, Backoff};
use super::cluster::Cluster;
use super::connection::Connection;
use super::error::{Error, KafkaCode, Location, Phase, Result};
use super::fetch::IsolationLevel;
use super::group::{group_id, s};
use super::produce::PartitionResult;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partition count (at least 1).
    pub partitions: i32,
    /// Replication factor (at least 1, at most the number of brokers).
    pub replication_factor: i16,
    /// Topic configs such as `("retention.ms", "3600000")`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and `replication_factor` replicas, default configs.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Add a topic config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// Which offset ListOffsets should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log.
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch
    /// (or the latest offset if there is none).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// One answer of [`Cluster::list_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The partition.
    pub partition: i32,
    /// The offset, or -1 if a timestamp look-up found none (see [`OffsetSpec::Timestamp`]).
    pub offset: i64,
    /// The timestamp of the record at `offset`, -1 when not a timestamp look-up.
    pub timestamp: i64,
    /// The leader epoch of the record before `offset` (ListOffsets v4+), when the broker
    /// says: where a reader starting at `offset` stands in the log's history (KIP-320).
    pub leader_epoch: Option<i32>,
}

/// A question for a partition's leader about its log's history (KIP-320): where does
/// `leader_epoch` end?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochQuery {
    /// The partition.
    pub partition: i32,
    /// The leader epoch the asker knows the partition's leader by (from metadata): a
    /// leader that is not at it answers `FENCED_LEADER_EPOCH` (the asker is behind) or
    /// `UNKNOWN_LEADER_EPOCH` (the broker is). `None`: no check.
    pub current_leader_epoch: Option<i32>,
    /// The epoch asked about: that of the record before the asker's position.
    pub leader_epoch: i32,
}

/// A leader's answer to an [`EpochQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEnd {
    /// The largest epoch of the leader's log at or below the one asked (an epoch the
    /// leader never had is answered with the one before it), or `None` when its log holds
    /// nothing that old.
    pub leader_epoch: Option<i32>,
    /// Where that epoch ends in the leader's log: the first offset of the next epoch, or
    /// the log end offset for the current one. `None` with `leader_epoch`.
    pub end_offset: Option<i64>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn timeout_ms(timeout: Duration) -> i32 {
    timeout.as_millis().min(i32::MAX as u128) as i32
}

impl Cluster {
    /// Make sure the topic exists: when the cluster lacks it and `create` is given, create
    /// it (waiting at most `request_timeout`); another client creating it meanwhile is fine.
    /// Without `create`, a missing topic is [`Error::UnknownTopic`].
    pub fn ensure_topic(&mut self, name: &str, create: Option<&NewTopic>) -> Result<()> {
        match (self.topic(name), create) {
            (Ok(_), _) => Ok(()),
            (Err(Error::UnknownTopic { .. }), Some(t)) => {
                let timeout = self.config().connection.request_timeout;
                match self.create_topic(t, timeout) {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_already_exists() => self.topic(name).map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Create a topic and wait (at most `timeout`) until every partition has a leader.
    ///
    /// A topic that exists already is `Err(Error::Broker { code: TopicAlreadyExists, .. })`;
    /// test for it with [`Error::kafka_code`].
    pub fn create_topic(&mut self, topic: &NewTopic, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut req = CreateTopicsRequest::default();
        let mut t = CreatableTopic::default();
        t.name = topic_name(&topic.name);
        t.num_partitions = topic.partitions;
        t.replication_factor = topic.replication_factor;
        t.configs = topic
            .configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.clone());
                c.value = Some(StrBytes::from_string(v.clone()));
                c
            })
            .collect();
        req.topics.push(t);
        req.timeout_ms = timeout_ms(timeout);
        req.validate_only = false;
        let (broker, resp) = self.request_any(&req)?;
        for r in &resp.topics {
            Error::check(
                r.error_code,
                || Location {
                    broker: broker.clone(),
                    api: "CreateTopics",
                    topic: Some(topic.name.clone()),
                    partition: None,
                },
                r.error_message.as_deref(),
            )?;
        }
        let expected = topic.partitions;
        self.await_topic(&topic.name, (deadline, timeout), "to be created", |t| {
            t.is_some_and(|t| t.all_led() && t.partitions.len() == expected as usize)
        })
    }

    /// Delete a topic and wait (at most `timeout`) until metadata no longer lists it.
    pub fn delete_topic(&mut self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let build = |version: i16| {
            let mut req = DeleteTopicsRequest::default();
            // v6+ names topics in `topics`, older versions in `topic_names`.
            if version >= 6 {
                let mut state = DeleteTopicState::default();
                state.name = Some(topic_name(name));
                req.topics.push(state);
            } else {
                req.topic_names.push(topic_name(name));
            }
            req.timeout_ms = timeout_ms(timeout);
            req
        };
        let (broker, resp) = self.request_any_with(build)?;
        for r in &resp.responses {
            Error::check(
                r.error_code,
                || Location {
                    broker: broker.clone(),
                    api: "DeleteTopics",
                    topic: Some(name.to_owned()),
                    partition: None,
                },
                r.error_message.as_deref(),
            )?;
        }
        self.await_topic(name, (deadline, timeout), "to disappear", |t| t.is_none())
    }

    /// Grow a topic to `total` partitions and wait (at most `timeout`) until all have leaders.
    pub fn create_partitions(&mut self, name: &str, total: i32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut req = CreatePartitionsRequest::default();
        let mut t = CreatePartitionsTopic::default();
        t.name = topic_name(name);
        t.count = total;
        t.assignments = None;
        req.topics.push(t);
        req.timeout_ms = timeout_ms(timeout);
        req.validate_only = false;
        let (broker, resp) = self.request_any(&req)?;
        for r in &resp.results {
            Error::check(
                r.error_code,
                || Location {
                    broker: broker.clone(),
                    api: "CreatePartitions",
                    topic: Some(name.to_owned()),
                    partition: None,
                },
                r.error_message.as_deref(),
            )?;
        }
        self.await_topic(name, (deadline, timeout), "to grow", |t| {
            t.is_some_and(|t| t.all_led() && t.partitions.len() == total as usize)
        })
    }

    /// Poll metadata until `done` holds for the topic, or the deadline passes.
    /// Poll metadata until `done` holds, by `limit.0`; a timeout reports `limit.1`, the
    /// whole bound the caller was given.
    fn await_topic(
        &mut self,
        name: &str,
        limit: (Instant, Duration),
        what: &str,
        done: impl Fn(Option<&super::cluster::TopicInfo>) -> bool,
    ) -> Result<()> {
        let (deadline, timeout) = limit;
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(250));
        loop {
            self.invalidate(Some(name));
            let state = match self.topic(name) {
                Ok(t) => Some(t.clone()),
                Err(Error::UnknownTopic { .. }) => None,
                Err(e) if e.is_retriable() => None,
                Err(e) => return Err(e),
            };
            if done(state.as_ref()) {
                return Ok(());
            }
            let delay = backoff.next_delay();
            if Instant::now() + delay > deadline {
                return Err(Error::Timeout {
                    phase: Phase::Read,
                    broker: format!("metadata (waiting for topic {name} {what})"),
                    api: Some("Metadata"),
                    after: timeout,
                });
            }
            std::thread::sleep(delay);
        }
    }

    /// Look up offsets of `partitions` of `topic` (each asked of its leader), retrying
    /// retriable errors such as a leader that is still being elected. `Latest` is the high
    /// watermark (read uncommitted).
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>> {
        self.list_offsets_as(topic, partitions, spec, IsolationLevel::ReadUncommitted)
    }

    /// [`list_offsets`](Self::list_offsets) as a reader at `isolation` sees the log: under
    /// read_committed, `Latest` is the last stable offset (where such a reader's end is).
    pub fn list_offsets_as(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<Vec<ListedOffset>> {
        self.retrying(Some(topic), |c| {
            c.list_offsets_once(topic, partitions, spec, isolation)
        })
    }

    fn list_offsets_once(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<Vec<ListedOffset>> {
        let (answers, failed) = self.list_offsets_each(topic, partitions, spec, isolation);
        if let Some(e) = failed {
            return Err(e);
        }
        let mut out = answers
            .into_iter()
            .map(|a| a.result)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|o| o.partition);
        Ok(out)
    }

    /// [`list_offsets_as`](Self::list_offsets_as) asked once, each partition on its own:
    /// a partition without a leader, or whose leader refuses or cannot be reached, does
    /// not hold the others back. Partitions whose leader's request failed are absent from
    /// the answers; that failure, if any, comes back beside them. Retrying is the caller's
    /// (stale metadata is dropped here).
    pub(crate) fn list_offsets_each(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> (Vec<PartitionResult<ListedOffset>>, Option<Error>) {
        self.per_leader(topic, partitions, |c, leader, parts| {
            c.list_offsets_of(leader, topic, parts, spec, isolation)
        })
    }

    /// Ask `leader` the offsets of `partitions`: one result per partition.
    fn list_offsets_of(
        &mut self,
        leader: i32,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<Vec<PartitionResult<ListedOffset>>> {
        let mut req = ListOffsetsRequest::default();
        req.replica_id = (-1).into();
        req.isolation_level = isolation.wire();
        req.timeout_ms = timeout_ms(self.config().connection.request_timeout);
        let mut t = ListOffsetsTopic::default();
        t.name = topic_name(topic);
        t.partitions = partitions
            .iter()
            .map(|&p| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = p;
                lp.current_leader_epoch = -1;
                lp.timestamp = spec.wire();
                lp
            })
            .collect();
        req.topics.push(t);
        let conn = self.quiet(leader)?;
        let broker = conn.broker().to_owned();
        let resp = conn.request(&req)?;
        let mut out = Vec::with_capacity(partitions.len());
        for t in &resp.topics {
            for p in &t.partitions {
                let at = || Location {
                    broker: broker.clone(),
                    api: "ListOffsets",
                    topic: Some(topic.to_owned()),
                    partition: Some(p.partition_index),
                };
                let result = Error::check(p.error_code, at, None).map(|()| ListedOffset {
                    partition: p.partition_index,
                    offset: p.offset,
                    timestamp: p.timestamp,
                    leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
                });
                out.push(PartitionResult {
                    topic: topic.to_owned(),
                    partition: p.partition_index,
                    result,
                });
            }
        }
        Ok(out)
    }

    /// Ask the leaders of `topic`'s partitions where leader epochs end in their logs
    /// (OffsetForLeaderEpoch, KIP-320): a reader checks with it that the log it read from
    /// did not diverge since (an unclean leader election, a leader that lost data). Asked
    /// once, each leader on its own, as [`list_offsets_each`](Self::list_offsets_each): a
    /// refused partition (a leader that moved, an epoch the leader is not at) has an error
    /// in its result, and partitions whose leader's request failed are absent.
    pub(crate) fn epoch_ends(
        &mut self,
        topic: &str,
        queries: &[EpochQuery],
    ) -> (Vec<PartitionResult<EpochEnd>>, Option<Error>) {
        let partitions: Vec<i32> = queries.iter().map(|q| q.partition).collect();
        self.per_leader(topic, &partitions, |c, leader, parts| {
            let asked: Vec<EpochQuery> = queries
                .iter()
                .filter(|q| parts.contains(&q.partition))
                .copied()
                .collect();
            c.epoch_ends_of(leader, topic, &asked)
        })
    }

    /// Group `partitions` by leader and `ask` each leader once: the answers, and the first
    /// failed request's error (its partitions are absent). A partition without a leader
    /// is answered with that error; stale metadata is dropped.
    fn per_leader<T>(
        &mut self,
        topic: &str,
        partitions: &[i32],
        mut ask: impl FnMut(&mut Self, i32, &[i32]) -> Result<Vec<PartitionResult<T>>>,
    ) -> (Vec<PartitionResult<T>>, Option<Error>) {
        let mut out = Vec::with_capacity(partitions.len());
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            match self.leader(topic, p) {
                Ok(leader) => by_leader.entry(leader).or_default().push(p),
                Err(e) => out.push(PartitionResult {
                    topic: topic.to_owned(),
                    partition: p,
                    result: Err(e),
                }),
            }
        }
        let mut failed = None;
        for (leader, parts) in by_leader {
            match ask(self, leader, &parts) {
                Ok(answers) => out.extend(answers),
                Err(e) => {
                    self.note_error(&e, Some(topic));
                    failed.get_or_insert(e);
                }
            }
        }
        let stale = out
            .iter()
            .any(|a| a.result.as_ref().is_err_and(|e| e.invalidates_metadata()));
        if stale {
            self.invalidate(Some(topic));
        }
        (out, failed)
    }

    fn epoch_ends_of(
        &mut self,
        leader: i32,
        topic: &str,
        queries: &[EpochQuery],
    ) -> Result<Vec<PartitionResult<EpochEnd>>> {
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = (-1).into(); // a consumer
        let mut t = OffsetForLeaderTopic::default();
        t.topic = topic_name(topic);
        t.partitions = queries
            .iter()
            .map(|q| {
                let mut p = OffsetForLeaderPartition::default();
                p.partition = q.partition;
                p.current_leader_epoch = q.current_leader_epoch.unwrap_or(-1);
                p.leader_epoch = q.leader_epoch;
                p
            })
            .collect();
        req.topics.push(t);
        let conn = self.quiet(leader)?;
        let broker = conn.broker().to_owned();
        let resp = conn.request(&req)?;
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let answer = resp
                .topics
                .iter()
                .filter(|t| t.topic.0.as_str() == topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition == q.partition);
            let at = || Location {
                broker: broker.clone(),
                api: "OffsetForLeaderEpoch",
                topic: Some(topic.to_owned()),
                partition: Some(q.partition),
            };
            let result = match answer {
                None => Err(Error::Protocol {
                    broker: broker.clone(),
                    detail: format!(
                        "OffsetForLeaderEpoch answered nothing for {topic}-{}",
                        q.partition
                    ),
                }),
                Some(p) => Error::check(p.error_code, at, None).map(|()| {
                    let known = p.leader_epoch >= 0 && p.end_offset >= 0;
                    EpochEnd {
                        leader_epoch: known.then_some(p.leader_epoch),
                        end_offset: known.then_some(p.end_offset),
                    }
                }),
            };
            out.push(PartitionResult {
                topic: topic.to_owned(),
                partition: q.partition,
                result,
            });
        }
        Ok(out)
    }

    /// A connection to `leader` with nothing owed on it: one with fetches in flight owes
    /// their answers first (asking on it would read a fetch's answer as this one's), so
    /// then one of its own.
    fn quiet(&mut self, leader: i32) -> Result<&mut Connection> {
        let busy = self.existing(leader).is_some_and(|c| c.in_flight() > 0);
        if busy {
            self.dedicated(leader)
        } else {
            self.broker(leader)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Groups: configs, and share group offsets (KIP-932)
// ---------------------------------------------------------------------------------------

/// One partition of a share group (KIP-932), as [`Cluster::share_group_offsets`] reports
/// it: a row of Java's `kafka-share-groups.sh --describe --offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The share-partition start offset: the earliest offset whose records the group is
    /// still delivering (some records above it may be done with already). `None` while the
    /// group has no state for the partition (no member has fetched from it yet).
    pub start_offset: Option<i64>,
    /// The partition's leader epoch when the group's state for it was last written, when
    /// known.
    pub leader_epoch: Option<i32>,
    /// Records of the partition the group has still to deliver and have acknowledged
    /// (KIP-1226: from the start offset to the high watermark, less those above the start
    /// offset already done with). `None` when unknown: no state yet, or a broker that
    /// answers only DescribeShareGroupOffsets v0, which has no lag.
    pub lag: Option<i64>,
}

/// The config resource type of a group (KIP-848 group configs, also those of share groups).
const RESOURCE_GROUP: i8 = 32;
/// IncrementalAlterConfigs' operation SET.
const OP_SET: i8 = 0;

/// ShareGroupDescribe of `group`, asked only to learn whether it is a share group: the
/// offsets answer does not tell (it is empty for a group that does not exist).
pub(crate) fn share_describe_request(group: &str) -> ShareGroupDescribeRequest {
    let mut req = ShareGroupDescribeRequest::default();
    req.group_ids.push(group_id(group));
    req.include_authorized_operations = false;
    req
}

/// Read a ShareGroupDescribe answer about `group`: `Ok` when it is a share group.
pub(crate) fn read_share_describe(
    resp: &ShareGroupDescribeResponse,
    group: &str,
    broker: &str,
) -> Result<()> {
    let Some(g) = resp.groups.iter().find(|g| g.group_id.as_str() == group) else {
        return Err(Error::Protocol {
            broker: broker.to_owned(),
            detail: format!("ShareGroupDescribe answered nothing about group {group:?}"),
        });
    };
    match KafkaCode::try_from_code(g.error_code) {
        None => Ok(()),
        Some(code) => Err(group_error(
            code,
            "ShareGroupDescribe",
            group,
            broker,
            g.error_message.as_deref(),
        )),
    }
}

/// DescribeShareGroupOffsets for every topic-partition of `group` (no topics named: all of
/// them).
pub(crate) fn share_offsets_request(group: &str) -> DescribeShareGroupOffsetsRequest {
    let mut g = DescribeShareGroupOffsetsRequestGroup::default();
    g.group_id = group_id(group);
    g.topics = None;
    let mut req = DescribeShareGroupOffsetsRequest::default();
    req.groups.push(g);
    req
}

/// Read a DescribeShareGroupOffsets answer about `group`: its partitions sorted by topic and
/// partition, or the first error (the group's, else a partition's), located at `broker`.
pub(crate) fn read_share_offsets(
    resp: &DescribeShareGroupOffsetsResponse,
    group: &str,
    broker: &str,
) -> Result<Vec<ShareGroupOffset>> {
    const API: &str = "DescribeShareGroupOffsets";
    let Some(g) = resp.groups.iter().find(|g| g.group_id.as_str() == group) else {
        return Err(Error::Protocol {
            broker: broker.to_owned(),
            detail: format!("{API} answered nothing about group {group:?}"),
        });
    };
    if let Some(code) = KafkaCode::try_from_code(g.error_code) {
        return Err(group_error(
            code,
            API,
            group,
            broker,
            g.error_message.as_deref(),
        ));
    }
    let mut out = Vec::new();
    for t in &g.topics {
        let topic = t.topic_name.0.as_str();
        for p in &t.partitions {
            let at = || Location {
                broker: broker.to_owned(),
                api: API,
                topic: Some(topic.to_owned()),
                partition: Some(p.partition_index),
            };
            Error::check(p.error_code, at, p.error_message.as_deref())?;
            let known = p.start_offset >= 0;
            out.push(ShareGroupOffset {
                topic: topic.to_owned(),
                partition: p.partition_index,
                start_offset: known.then_some(p.start_offset),
                leader_epoch: (known && p.leader_epoch >= 0).then_some(p.leader_epoch),
                lag: (known && p.lag >= 0).then_some(p.lag),
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// The error for a group-level error code of a share group answer of `api`: an unknown
/// group is said in so many words (the broker gives the same code for a group that exists
/// but is not a share group).
fn group_error(
    code: KafkaCode,
    api: &'static str,
    group: &str,
    broker: &str,
    message: Option<&str>,
) -> Error {
    if code == KafkaCode::GroupIdNotFound {
        return Error::UnknownShareGroup {
            group: group.to_owned(),
            broker: broker.to_owned(),
            message: message
                .filter(|m| !m.is_empty())
                .unwrap_or("GROUP_ID_NOT_FOUND")
                .to_owned(),
        };
    }
    Error::Broker {
        code,
        at: Location {
            broker: broker.to_owned(),
            api,
            topic: None,
            partition: None,
        },
        message: Some(match message.filter(|m| !m.is_empty()) {
            Some(m) => format!("group {group:?}: {m}"),
            None => format!("group {group:?}"),
        }),
    }
}

/// IncrementalAlterConfigs setting `configs` of group `group`.
pub(crate) fn group_config_request(
    group: &str,
    configs: &[(&str, &str)],
) -> IncrementalAlterConfigsRequest {
    let mut r = AlterConfigsResource::default();
    r.resource_type = RESOURCE_GROUP;
    r.resource_name = s(group);
    r.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = AlterableConfig::default();
            c.name = s(k);
            c.config_operation = OP_SET;
            c.value = Some(s(v));
            c
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources.push(r);
    req.validate_only = false;
    req
}

/// Read an IncrementalAlterConfigs answer about group `group`: a refusal names the group and
/// carries the broker's reason (which names the config it refused).
pub(crate) fn read_group_config(
    resp: &IncrementalAlterConfigsResponse,
    group: &str,
    configs: &[(&str, &str)],
    broker: &str,
) -> Result<()> {
    let Some(r) = resp
        .responses
        .iter()
        .find(|r| r.resource_type == RESOURCE_GROUP && r.resource_name.as_str() == group)
    else {
        return Err(Error::Protocol {
            broker: broker.to_owned(),
            detail: format!("IncrementalAlterConfigs answered nothing about group {group:?}"),
        });
    };
    let Some(code) = KafkaCode::try_from_code(r.error_code) else {
        return Ok(());
    };
    let asked = configs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let reason = r.error_message.as_deref().filter(|m| !m.is_empty());
    Err(Error::Broker {
        code,
        at: Location {
            broker: broker.to_owned(),
            api: "IncrementalAlterConfigs",
            topic: None,
            partition: None,
        },
        message: Some(match reason {
            Some(m) => format!("setting {asked} of group {group:?}: {m}"),
            None => format!("setting {asked} of group {group:?}"),
        }),
    })
}

/// Refuse what no broker would take: an empty group name, nothing to set, an empty or
/// repeated key.
fn check_group_configs(group: &str, configs: &[(&str, &str)]) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::Config {
            field: "group config",
            reason,
        })
    };
    if group.is_empty() {
        return bad("the group name is empty; name the group whose config to set".into());
    }
    if configs.is_empty() {
        return bad(format!(
            "nothing to set for group {group:?}; give at least one (key, value), e.g. (\"share.auto.offset.reset\", \"earliest\")"
        ));
    }
    for (i, (key, _)) in configs.iter().enumerate() {
        if key.trim().is_empty() {
            return bad(format!(
                "config {} of group {group:?} has an empty key",
                i + 1
            ));
        }
        if configs[..i].iter().any(|(k, _)| k == key) {
            return bad(format!(
                "{key} is given twice for group {group:?}; give each key once"
            ));
        }
    }
    Ok(())
}

impl Cluster {
    /// Where share group `group` (KIP-932) stands in each partition of the topics its members
    /// subscribed to, sorted by topic and partition: the share-partition start offset, the
    /// leader epoch and, from brokers that tell (DescribeShareGroupOffsets v1, KIP-1226), the
    /// lag; a partition no member has fetched from yet comes with `None`s. Asked of the
    /// group's coordinator; retriable errors (a coordinator that moved or is loading) are
    /// retried until `timeout`. The requests to the coordinator wait no longer than what is
    /// left of it; finding the coordinator, at most the connection's request timeout.
    ///
    /// A group that does not exist, or is not a share group, is
    /// [`Error::UnknownShareGroup`]; a cluster without share groups (before Kafka 4.2) is
    /// [`Error::ShareGroupsUnsupported`], naming the release it runs. A partition the
    /// broker refuses fails the call with that partition's error.
    pub fn share_group_offsets(
        &mut self,
        group: &str,
        timeout: Duration,
    ) -> Result<Vec<ShareGroupOffset>> {
        if group.is_empty() {
            return Err(Error::Config {
                field: "share group",
                reason: "the group name is empty; name the share group to describe".into(),
            });
        }
        let deadline = Instant::now() + timeout;
        let mut backoff = self.config().backoff();
        retry(
            self,
            deadline,
            &mut backoff,
            |c, e| c.note_error(e, None),
            |c| c.share_group_offsets_once(group, deadline),
        )
    }

    fn share_group_offsets_once(
        &mut self,
        group: &str,
        deadline: Instant,
    ) -> Result<Vec<ShareGroupOffset>> {
        let coordinator = self.find_coordinator(group)?;
        let conn = self.quiet(coordinator)?;
        let broker = conn.broker().to_owned();
        // Both before either is sent: a broker without share groups is said so at once.
        let version = share_api_version::<DescribeShareGroupOffsetsRequest>(conn)?;
        let describe_version = share_api_version::<ShareGroupDescribeRequest>(conn)?;
        let bound = |conn: &Connection| {
            deadline
                .saturating_duration_since(Instant::now())
                .min(conn.request_timeout())
        };
        let pending = conn.send_within(
            &share_describe_request(group),
            describe_version,
            bound(conn),
        )?;
        let resp = conn.receive::<ShareGroupDescribeRequest>(pending)?;
        conn.throttle(resp.throttle_time_ms);
        read_share_describe(&resp, group, &broker)?;
        let pending = conn.send_within(&share_offsets_request(group), version, bound(conn))?;
        let resp = conn.receive::<DescribeShareGroupOffsetsRequest>(pending)?;
        conn.throttle(resp.throttle_time_ms);
        read_share_offsets(&resp, group, &broker)
    }

    /// Set configs of group `group` (IncrementalAlterConfigs, resource type GROUP, operation
    /// SET; other keys keep their values), e.g. `("share.auto.offset.reset", "earliest")` for
    /// a share group, or `("consumer.session.timeout.ms", "30000")` for a consumer group
    /// (KIP-848). The group need not exist yet. Asked of any broker (the controller
    /// applies it); retriable errors are retried until `timeout`.
    ///
    /// A key the broker does not know, or a value it refuses, is [`Error::Broker`]
    /// (`INVALID_CONFIG`) with the broker's reason, which names the key; an empty group
    /// name, an empty or repeated key, or nothing to set is [`Error::Config`]. A cluster
    /// before Kafka 4.0 has no group configs: `INVALID_REQUEST`, naming its release.
    pub fn alter_group_config(
        &mut self,
        group: &str,
        configs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<()> {
        check_group_configs(group, configs)?;
        let deadline = Instant::now() + timeout;
        let mut backoff = self.config().backoff();
        let req = group_config_request(group, configs);
        retry(
            self,
            deadline,
            &mut backoff,
            |c, e| c.note_error(e, None),
            |c| {
                let (broker, resp) = c.request_any(&req)?;
                read_group_config(&resp, group, configs, &broker).map_err(|e| {
                    match e.kafka_code() {
                        Some(KafkaCode::InvalidRequest) => match c.some_broker_versions() {
                            Ok((_, versions)) => explain_old_release(e, &versions),
                            Err(_) => e,
                        },
                        _ => e,
                    }
                })
            },
        )
    }
}

/// The first `metadata.version` of Kafka 4.0, the first release with group configs.
const KAFKA_4_0: i16 = 22;

/// A broker before Kafka 4.0 refuses a GROUP config resource as an invalid request
/// ("Unknown resource type 32"): say why, naming the release the cluster runs.
fn explain_old_release(err: Error, versions: &super::versions::BrokerVersions) -> Error {
    let old = versions
        .feature("metadata.version")
        .is_some_and(|level| level < KAFKA_4_0);
    match (err, versions.release()) {
        (
            Error::Broker {
                code,
                at,
                message: Some(m),
            },
            Some(release),
        ) if old => Error::Broker {
            code,
            at,
            message: Some(format!(
                "{m}; group configs need Kafka 4.0 or newer, and this cluster runs {release}"
            )),
        },
        (err, _) => err,
    }
}

/// The version of share group API `R` to send on `conn`: the highest both sides speak, or
/// [`Error::ShareGroupsUnsupported`] (naming the broker and the release its features tell)
/// when its broker has none.
fn share_api_version<R: Request>(conn: &Connection) -> Result<i16> {
    conn.version::<R>().map_err(|e| match e {
        Error::UnsupportedVersion { broker, api, .. } => {
            share_groups_unsupported(broker, conn.broker_versions(), api)
        }
        other => other,
    })
}

/// The error for a cluster without share groups: `broker`, which advertised `versions`,
/// lacks `api`.
fn share_groups_unsupported(
    broker: String,
    versions: &super::versions::BrokerVersions,
    api: &'static str,
) -> Error {
    Error::ShareGroupsUnsupported {
        broker,
        release: versions
            .release()
            .unwrap_or_else(|| "a release without share groups".to_owned()),
        api,
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::FinalizedFeatureKey;
    use kafka_protocol::messages::describe_share_group_offsets_response::{
        DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
        DescribeShareGroupOffsetsResponseTopic,
    };
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    use kafka_protocol::messages::share_group_describe_response::DescribedGroup;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable, Message, VersionRange};

    use super::*;
    use crate::client::connection::tests::api_versions;
    use crate::client::versions::{client_range, BrokerVersions};

    fn encoded<T: Encodable>(msg: &T, version: i16) -> bytes::Bytes {
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(buf.len(), msg.compute_size(version).unwrap(), "v{version}");
        buf.freeze()
    }

    fn partition(
        index: i32,
        start: i64,
        epoch: i32,
        lag: i64,
    ) -> DescribeShareGroupOffsetsResponsePartition {
        let mut p = DescribeShareGroupOffsetsResponsePartition::default();
        p.partition_index = index;
        p.start_offset = start;
        p.leader_epoch = epoch;
        p.lag = lag;
        p
    }

    /// An answer about `group` with `topics`, each with its partitions.
    fn offsets_answer(
        group: &str,
        topics: Vec<(&str, Vec<DescribeShareGroupOffsetsResponsePartition>)>,
    ) -> DescribeShareGroupOffsetsResponse {
        let mut g = DescribeShareGroupOffsetsResponseGroup::default();
        g.group_id = group_id(group);
        g.topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = DescribeShareGroupOffsetsResponseTopic::default();
                t.topic_name = topic_name(name);
                t.topic_id = uuid::Uuid::from_u128(7);
                t.partitions = partitions;
                t
            })
            .collect();
        let mut resp = DescribeShareGroupOffsetsResponse::default();
        resp.groups.push(g);
        resp
    }

    #[test]
    fn describe_share_group_offsets_v1_carries_the_lag_and_v0_does_not() {
        assert_eq!(
            DescribeShareGroupOffsetsRequest::VERSIONS,
            VersionRange { min: 0, max: 1 }
        );
        assert_eq!(
            ApiKey::DescribeShareGroupOffsets.valid_versions(),
            VersionRange { min: 0, max: 1 }
        );
        // The request is the same at both versions.
        let req = share_offsets_request("g");
        assert_eq!(encoded(&req, 0), encoded(&req, 1));
        let back = DescribeShareGroupOffsetsRequest::decode(&mut encoded(&req, 1), 1).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.groups[0].topics, None, "all topics");

        let v1 = offsets_answer("g", vec![("t", vec![partition(0, 10, 3, 2)])]);
        let bytes = encoded(&v1, 1);
        assert_eq!(
            DescribeShareGroupOffsetsResponse::decode(&mut bytes.clone(), 1).unwrap(),
            v1
        );
        // v1 holds 8 more bytes per partition: the lag, after the leader epoch.
        let v0 = offsets_answer("g", vec![("t", vec![partition(0, 10, 3, -1)])]);
        let bytes0 = encoded(&v0, 0);
        assert_eq!(bytes.len(), bytes0.len() + 8);
        let back0 = DescribeShareGroupOffsetsResponse::decode(&mut bytes0.clone(), 0).unwrap();
        assert_eq!(back0, v0);
        assert_eq!(
            back0.groups[0].topics[0].partitions[0].lag, -1,
            "unknown below v1"
        );
        // A lag set where v0 has no room for it is refused, not dropped.
        let mut buf = bytes::BytesMut::new();
        assert!(v1.encode(&mut buf, 0).is_err());
        assert!(v1.encode(&mut buf, 2).is_err(), "no v2");
    }

    #[test]
    fn the_highest_version_both_sides_speak_is_chosen() {
        let ours = client_range(
            ApiKey::DescribeShareGroupOffsets,
            DescribeShareGroupOffsetsRequest::VERSIONS,
        );
        let kafka = |max| {
            BrokerVersions::from_response(&api_versions(&[(
                ApiKey::DescribeShareGroupOffsets,
                0,
                max,
            )]))
        };
        assert_eq!(
            kafka(0).choose(ApiKey::DescribeShareGroupOffsets, ours),
            Ok(0)
        );
        assert_eq!(
            kafka(1).choose(ApiKey::DescribeShareGroupOffsets, ours),
            Ok(1)
        );
        assert_eq!(
            kafka(2).choose(ApiKey::DescribeShareGroupOffsets, ours),
            Ok(1)
        );
    }

    #[test]
    fn share_offsets_say_unknown_as_none_and_come_sorted() {
        let resp = offsets_answer(
            "g",
            vec![
                ("b", vec![partition(1, 5, 0, 0), partition(0, -1, -1, -1)]),
                ("a", vec![partition(0, 40, 2, -1)]),
            ],
        );
        let rows = read_share_offsets(&resp, "g", "b:1").unwrap();
        let expected = [
            ("a", 0, Some(40), Some(2), None),
            ("b", 0, None, None, None),
            ("b", 1, Some(5), Some(0), Some(0)),
        ];
        assert_eq!(rows.len(), expected.len());
        for (row, (topic, partition, start, epoch, lag)) in rows.iter().zip(expected) {
            assert_eq!(
                (
                    row.topic.as_str(),
                    row.partition,
                    row.start_offset,
                    row.leader_epoch,
                    row.lag
                ),
                (topic, partition, start, epoch, lag)
            );
        }
    }

    #[test]
    fn share_offset_errors_say_where() {
        let mut bad = partition(3, -1, -1, -1);
        bad.error_code = KafkaCode::TopicAuthorizationFailed.code();
        let resp = offsets_answer("g", vec![("t", vec![partition(0, 1, 0, 0), bad])]);
        let err = read_share_offsets(&resp, "g", "b:1").unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::TopicAuthorizationFailed));
        let text = err.to_string();
        assert!(
            text.contains("DescribeShareGroupOffsets from b:1 for t-3"),
            "{text}"
        );

        let mut resp = offsets_answer("g", vec![]);
        resp.groups[0].error_code = KafkaCode::GroupAuthorizationFailed.code();
        resp.groups[0].error_message = Some(s("not allowed"));
        let text = read_share_offsets(&resp, "g", "b:1")
            .unwrap_err()
            .to_string();
        assert!(text.contains("group \"g\": not allowed"), "{text}");

        let other = offsets_answer("h", vec![]);
        let err = read_share_offsets(&other, "g", "b:1").unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
    }

    #[test]
    fn a_group_that_is_not_a_share_group_is_said_so() {
        let mut g = DescribedGroup::default();
        g.group_id = group_id("orders");
        g.error_code = KafkaCode::GroupIdNotFound.code();
        g.error_message = Some(s("Group orders is not a share group."));
        let mut resp = ShareGroupDescribeResponse::default();
        resp.groups.push(g);
        let err = read_share_describe(&resp, "orders", "b:1").unwrap_err();
        assert!(matches!(err, Error::UnknownShareGroup { .. }), "{err}");
        assert_eq!(err.kafka_code(), Some(KafkaCode::GroupIdNotFound));
        assert!(!err.is_retriable());
        let text = err.to_string();
        assert!(
            text.contains("share group \"orders\" does not exist, or is not a share group")
                && text.contains("is not a share group.)"),
            "{text}"
        );
        resp.groups[0].error_code = 0;
        assert!(read_share_describe(&resp, "orders", "b:1").is_ok());
    }

    /// A broker's versions at `metadata.version` `level`, without share groups.
    fn release(level: i16) -> BrokerVersions {
        let mut resp = api_versions(&[(ApiKey::Fetch, 4, 17)]);
        let mut f = FinalizedFeatureKey::default();
        f.name = StrBytes::from_static_str("metadata.version");
        f.min_version_level = level;
        f.max_version_level = level;
        resp.finalized_features.push(f);
        BrokerVersions::from_response(&resp)
    }

    #[test]
    fn a_cluster_without_share_groups_is_named_with_its_release() {
        let kafka_3_9 = release(21);
        let text =
            share_groups_unsupported("b:9292".into(), &kafka_3_9, "DescribeShareGroupOffsets")
                .to_string();
        for needle in [
            "Kafka 4.2 or newer",
            "b:9292",
            "Kafka 3.9 (metadata.version 21)",
            "DescribeShareGroupOffsets",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn group_configs_are_set_on_the_group_resource() {
        let configs = [
            ("share.auto.offset.reset", "earliest"),
            ("share.record.lock.duration.ms", "15000"),
        ];
        let req = group_config_request("g", &configs);
        assert_eq!(req.resources.len(), 1);
        let r = &req.resources[0];
        assert_eq!((r.resource_type, r.resource_name.as_str()), (32, "g"));
        let sent: Vec<(&str, i8, Option<&str>)> = r
            .configs
            .iter()
            .map(|c| (c.name.as_str(), c.config_operation, c.value.as_deref()))
            .collect();
        assert_eq!(
            sent,
            [
                ("share.auto.offset.reset", 0, Some("earliest")),
                ("share.record.lock.duration.ms", 0, Some("15000")),
            ]
        );
        assert!(!req.validate_only);
        for v in 0..=1 {
            let back = IncrementalAlterConfigsRequest::decode(&mut encoded(&req, v), v).unwrap();
            assert_eq!(back, req);
        }
    }

    #[test]
    fn refused_group_configs_name_the_key_and_the_group() {
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = 32;
        r.resource_name = s("g");
        r.error_code = KafkaCode::InvalidConfig.code();
        r.error_message = Some(s("Unknown group config name: share.bogus"));
        let mut resp = IncrementalAlterConfigsResponse::default();
        resp.responses.push(r);
        let err = read_group_config(&resp, "g", &[("share.bogus", "1")], "b:1").unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::InvalidConfig));
        let text = err.to_string();
        assert!(
            text.contains("setting share.bogus=1 of group \"g\"")
                && text.contains("Unknown group config name: share.bogus"),
            "{text}"
        );
        resp.responses[0].error_code = 0;
        assert!(read_group_config(&resp, "g", &[("share.bogus", "1")], "b:1").is_ok());
    }

    #[test]
    fn a_cluster_before_kafka_4_is_named_when_it_refuses_group_configs() {
        let refused = || {
            let mut r = AlterConfigsResourceResponse::default();
            r.resource_type = 32;
            r.resource_name = s("g");
            r.error_code = KafkaCode::InvalidRequest.code();
            r.error_message = Some(s("Unknown resource type 32"));
            let mut resp = IncrementalAlterConfigsResponse::default();
            resp.responses.push(r);
            read_group_config(&resp, "g", &[("a", "1")], "b:1").unwrap_err()
        };
        let text = explain_old_release(refused(), &release(21)).to_string();
        assert!(
            text.contains("Unknown resource type 32; group configs need Kafka 4.0 or newer, and this cluster runs Kafka 3.9 (metadata.version 21)"),
            "{text}"
        );
        let text = explain_old_release(refused(), &release(33)).to_string();
        assert!(!text.contains("need Kafka 4.0"), "{text}");
    }

    #[test]
    fn group_configs_no_broker_would_take_are_refused_here() {
        let ok = [("share.auto.offset.reset", "earliest")];
        assert!(check_group_configs("g", &ok).is_ok());
        for (group, configs, needle) in [
            ("", &ok[..], "group name is empty"),
            ("g", &[][..], "nothing to set"),
            ("g", &[(" ", "x")][..], "empty key"),
            ("g", &[("a", "1"), ("a", "2")][..], "a is given twice"),
        ] {
            let err = check_group_configs(group, configs).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}
