//! A scripted [`GroupIo`] for unit tests of the protocols: answers queued by the test,
//! requests recorded for it to check. An unscripted request fails the test with its name.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use crate::client::{
    self, decode_subscription, ConsumerHeartbeat, ConsumerHeartbeatAnswer, GroupMember, JoinAnswer,
    JoinParams, Joined, KafkaCode, Location, ShareHeartbeat, ShareHeartbeatAnswer, Subscription,
    TopicPartition,
};

use super::super::error::Error;
use super::coordinator::GroupIo;
use super::ownership::{Event, Ownership};

#[derive(Default)]
pub(super) struct Script {
    pub joins: VecDeque<client::Result<JoinAnswer>>,
    pub syncs: VecDeque<client::Result<Bytes>>,
    /// Classic heartbeats: `Ok` when none is queued.
    pub heartbeats: VecDeque<client::Result<()>>,
    pub consumer: VecDeque<client::Result<ConsumerHeartbeatAnswer>>,
    pub counts: BTreeMap<String, i32>,
    pub ids: BTreeMap<String, Uuid>,
    /// (member id, subscription) of each JoinGroup sent.
    pub sent_joins: Vec<(String, Subscription)>,
    /// The plan each SyncGroup carried.
    pub sent_plans: Vec<Vec<(String, Bytes)>>,
    pub sent_heartbeats: Vec<GroupMember>,
    pub sent_consumer: Vec<ConsumerHeartbeat>,
    pub share: VecDeque<client::Result<ShareHeartbeatAnswer>>,
    pub sent_share: Vec<ShareHeartbeat>,
    pub left: Vec<String>,
}

impl GroupIo for Script {
    fn group(&self) -> &str {
        "g"
    }

    fn join(&mut self, params: &JoinParams<'_>, _: Duration) -> client::Result<JoinAnswer> {
        let sub = decode_subscription(&params.protocols[0].1).expect("our own subscription");
        self.sent_joins.push((params.member_id.to_owned(), sub));
        self.joins.pop_front().expect("an unscripted JoinGroup")
    }

    fn sync(
        &mut self,
        _: &Joined,
        _: Option<&str>,
        plan: Vec<(String, Bytes)>,
        _: Duration,
    ) -> client::Result<Bytes> {
        self.sent_plans.push(plan);
        self.syncs.pop_front().expect("an unscripted SyncGroup")
    }

    fn heartbeat(&mut self, member: &GroupMember) -> client::Result<()> {
        self.sent_heartbeats.push(member.clone());
        self.heartbeats.pop_front().unwrap_or(Ok(()))
    }

    fn leave(&mut self, member_id: &str) -> client::Result<()> {
        self.left.push(member_id.to_owned());
        Ok(())
    }

    fn consumer_heartbeat(
        &mut self,
        hb: &ConsumerHeartbeat,
    ) -> client::Result<ConsumerHeartbeatAnswer> {
        self.sent_consumer.push(hb.clone());
        if hb.epoch < 0 {
            return Ok(answer(hb.epoch, None));
        }
        self.consumer
            .pop_front()
            .expect("an unscripted ConsumerGroupHeartbeat")
    }

    fn partition_counts(
        &mut self,
        topics: &BTreeSet<String>,
    ) -> client::Result<BTreeMap<String, i32>> {
        Ok(self
            .counts
            .iter()
            .filter(|(t, _)| topics.contains(*t))
            .map(|(t, c)| (t.clone(), *c))
            .collect())
    }

    fn topic_ids(&mut self, topics: &[String]) -> BTreeMap<String, Uuid> {
        self.ids
            .iter()
            .filter(|(t, _)| topics.contains(t))
            .map(|(t, id)| (t.clone(), *id))
            .collect()
    }

    fn unsupported(&mut self) -> Error {
        Error::ProtocolUnsupported {
            broker: "b:9092".into(),
            release: "Kafka 3.9 (metadata.version 21)".into(),
        }
    }

    fn share_heartbeat(&mut self, hb: &ShareHeartbeat) -> client::Result<ShareHeartbeatAnswer> {
        self.sent_share.push(hb.clone());
        if hb.epoch < 0 {
            return Ok(ShareHeartbeatAnswer {
                epoch: hb.epoch,
                ..ShareHeartbeatAnswer::default()
            });
        }
        self.share
            .pop_front()
            .expect("an unscripted ShareGroupHeartbeat")
    }

    fn share_unsupported(&mut self) -> Error {
        Error::ShareGroupsUnsupported {
            broker: "b:9092".into(),
            release: "Kafka 3.9 (metadata.version 21)".into(),
        }
    }
}

/// A broker error with `code`.
pub(super) fn refusal(code: KafkaCode) -> client::Error {
    client::Error::Broker {
        code,
        at: Location::default(),
        message: None,
    }
}

/// A ConsumerGroupHeartbeat answer.
pub(super) fn answer(
    epoch: i32,
    target: Option<BTreeMap<Uuid, Vec<i32>>>,
) -> ConsumerHeartbeatAnswer {
    ConsumerHeartbeatAnswer {
        member_id: None,
        epoch,
        interval: Duration::from_millis(500),
        assignment: target,
    }
}

pub(super) fn tp(topic: &str, p: i32) -> TopicPartition {
    (topic.to_owned(), p)
}

/// The events the member thread would get, as text; partitions waiting for their offsets
/// are announced first, as the group thread does.
pub(super) fn events(own: &mut Ownership) -> Vec<String> {
    let waiting = own.unannounced();
    own.announce(&waiting, BTreeMap::new(), None);
    own.take_events()
        .map(|e| match e {
            Event::Assigned { partitions, .. } => format!("assigned {}", short(&partitions)),
            Event::Revoke(p) => format!("revoke {}", short(&p)),
            Event::Lost(p) => format!("lost {}", short(&p)),
            Event::Failed(e) => format!("failed: {e}"),
        })
        .collect()
}

/// `t0 t1` for [("t", 0), ("t", 1)].
pub(super) fn short(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(|(t, p)| format!("{t}{p}"))
        .collect::<Vec<_>>()
        .join(" ")
}
