//! Topic administration and offset look-ups.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest,
    OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::backoff::Backoff;
use super::cluster::Cluster;
use super::connection::Connection;
use super::error::{Error, KafkaCode, Location, Phase, Result};
use super::fetch::IsolationLevel;
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
pub struct EpochQuery {
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
pub struct EpochEnd {
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
                    Err(e) if is_already_exists(&e) => self.topic(name).map(|_| ()),
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

/// Whether `err` says the topic already exists.
pub fn is_already_exists(err: &Error) -> bool {
    err.kafka_code() == Some(KafkaCode::TopicAlreadyExists)
}
