//! The classic group protocol: JoinGroup, SyncGroup (the leader, one of the members, runs the
//! assignor), Heartbeat, LeaveGroup; eager or cooperative (KIP-429), dynamic or static
//! (KIP-345).
//!
//! ```text
//!  Joining ──JoinGroup+SyncGroup──▶ Stable ──heartbeat: REBALANCE_IN_PROGRESS──▶ Rejoining
//!     ▲                               │                                            │
//!     │  UNKNOWN_MEMBER_ID,           │ cooperative: the new assignment            │ eager: every
//!     │  ILLEGAL_GENERATION:          │ took partitions away ──▶ Rejoining         │ partition given
//!     └── partitions lost ◀───────────┘                                            │ back first
//!                                          Rejoining ──released──▶ JoinGroup ◀─────┘
//! ```
//!
//! Eager (`range`, `roundrobin`): every member gives back everything before it rejoins, so
//! nobody handles records until the rebalance completes. Cooperative (`cooperative-sticky`):
//! members keep what they own through the JoinGroup; the leader withholds the partitions
//! that change owner; a member that lost some gives them back (committing first) and joins
//! again, and the second round hands them to their new owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{
    self, decode_assignment, decode_subscription, encode_assignment, encode_subscription,
    Assignment, Assignor, Backoff, GroupMember, JoinAnswer, JoinParams, Joined, KafkaCode,
    Subscription, TopicPartition,
};

use super::super::config::ConsumerConfig;
use super::super::error::Error;
use super::super::shared::Shared;
use super::coordinator::GroupIo;
use super::membership::{names, MemberState, MemberStatus, Membership};
use super::ownership::Ownership;

/// Where a classic member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not in a generation: join at `next_join`.
    Joining,
    /// In a generation, heartbeating.
    Stable,
    /// Still in its generation (heartbeating), but to join again once the partitions it
    /// was asked to give back are released.
    Rejoining,
    /// Out of the group after a stall, until the member thread moves again.
    Stalled,
    Left,
}

pub(super) struct Classic {
    topics: Vec<String>,
    assignor: Assignor,
    instance_id: Option<String>,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    rebalance_timeout: Duration,
    member_id: String,
    /// The generation the member is in, -1 if none.
    generation: i32,
    state: State,
    next_heartbeat: Instant,
    next_join: Instant,
    /// Why the member joins next, for the broker's log.
    reason: &'static str,
    retry: Backoff,
    retry_template: Backoff,
    shared: Arc<Shared>,
    /// How often a member in a generation looks at the subscribed topics' partition counts
    /// (`metadata_max_age`), and when next.
    check_every: Duration,
    next_check: Instant,
    /// The counts the generation's assignment was made from, as far as this member knows
    /// (the leader: those it assigned; the others: those seen just before joining). A
    /// change means partitions the assignment leaves out (or no longer has): join again.
    counts: Option<BTreeMap<String, i32>>,
}

impl Classic {
    pub(super) fn new(
        config: &ConsumerConfig,
        instance_id: Option<String>,
        shared: Arc<Shared>,
    ) -> Self {
        let now = Instant::now();
        Classic {
            topics: config.topics.clone(),
            assignor: config.assignor,
            instance_id,
            session_timeout: config.session_timeout,
            heartbeat_interval: config.heartbeat_interval,
            rebalance_timeout: config.max_poll_interval,
            member_id: String::new(),
            generation: -1,
            state: State::Joining,
            next_heartbeat: now,
            next_join: now,
            reason: "the member starts",
            retry: config.client.backoff(),
            retry_template: config.client.backoff(),
            shared,
            check_every: config.client.metadata_max_age,
            next_check: now,
            counts: None,
        }
    }

    /// Join the group when the member is ready to: eager members give everything back first.
    fn join(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
        if !self.assignor.is_cooperative() && !own.owned().is_empty() {
            own.revoke_all();
            self.state = State::Rejoining;
            return Ok(());
        }
        if !own.is_settled() {
            self.state = State::Rejoining;
            return Ok(());
        }
        match self.join_and_sync(io, own) {
            Ok(()) => {
                self.retry = self.retry_template.clone();
                Ok(())
            }
            Err(e) => self.join_failed(e, own),
        }
    }

    fn join_and_sync(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> client::Result<()> {
        let owned: Assignment = if self.assignor.is_cooperative() {
            to_assignment(own.owned())
        } else {
            Assignment::new()
        };
        let subscription = Subscription {
            topics: self.topics.clone(),
            owned,
            generation: self.generation,
        };
        let metadata = encode_subscription(&subscription, self.assignor);
        let topics: BTreeSet<String> = self.topics.iter().cloned().collect();
        let mut counts = io.partition_counts(&topics).ok();
        // The coordinator holds JoinGroup until every member has joined (up to the rebalance
        // timeout), then SyncGroup until the leader has assigned.
        let held = self.rebalance_timeout + Duration::from_secs(5);
        let group = io.group().to_owned();
        let mut joined = None;
        for _ in 0..2 {
            let params = JoinParams {
                group: &group,
                member_id: &self.member_id,
                instance_id: self.instance_id.as_deref(),
                session_timeout: self.session_timeout,
                rebalance_timeout: self.rebalance_timeout,
                protocols: vec![(self.assignor.name(), metadata.clone())],
                reason: self.reason,
            };
            match io.join(&params, held)? {
                JoinAnswer::MemberIdRequired(id) => self.member_id = id,
                JoinAnswer::Joined(j) => {
                    joined = Some(j);
                    break;
                }
            }
        }
        let Some(joined) = joined else {
            return Err(client::Error::Protocol {
                broker: "the coordinator".into(),
                detail: "JoinGroup asked for a member id twice".into(),
            });
        };
        self.member_id = joined.member_id.clone();
        let plan = if joined.leads() {
            let (plan, assigned_from) = self.lead(io, &joined)?;
            // Only the subscribed topics: other members may subscribe to more.
            counts = Some(
                assigned_from
                    .into_iter()
                    .filter(|(t, _)| topics.contains(t))
                    .collect(),
            );
            plan
        } else {
            Vec::new()
        };
        let raw = io.sync(&joined, self.instance_id.as_deref(), plan, held)?;
        let assignment = decode_assignment(&raw).map_err(|detail| client::Error::Protocol {
            broker: "the coordinator".into(),
            detail,
        })?;
        self.take_up(&joined, assignment, own);
        self.counts = counts;
        self.next_check = Instant::now() + self.check_every;
        Ok(())
    }

    /// In a generation: if the subscribed topics' partition counts changed since the
    /// assignment (partitions added, a topic created or deleted), join again, so that the
    /// leader assigns what exists now (the Java consumer does so on its metadata refresh).
    fn check_counts(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) {
        self.next_check = Instant::now() + self.check_every;
        let topics: BTreeSet<String> = self.topics.iter().cloned().collect();
        let now = match io.partition_counts(&topics) {
            Ok(now) => now,
            Err(e) => {
                log::debug!("consumer: partition counts: {e}");
                return;
            }
        };
        let Some(before) = &self.counts else {
            self.counts = Some(now);
            return;
        };
        if *before == now {
            return;
        }
        let changes: Vec<String> = topics
            .iter()
            .filter(|t| before.get(*t) != now.get(*t))
            .map(|t| {
                let count = |c: Option<&i32>| c.map_or("none".to_owned(), |n| n.to_string());
                format!("{t} {} -> {}", count(before.get(t)), count(now.get(t)))
            })
            .collect();
        log::info!(
            "consumer: partitions of subscribed topics changed ({}); joining again",
            changes.join(", ")
        );
        self.counts = Some(now);
        self.reason = "the partitions of a subscribed topic changed";
        self.rejoin(own);
    }

    /// Act on a new generation's assignment.
    fn take_up(&mut self, joined: &Joined, assignment: Assignment, own: &mut Ownership) {
        self.generation = joined.generation;
        self.shared.rebalances.add(1);
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        let target: BTreeSet<TopicPartition> = assignment
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect();
        let moved: Vec<TopicPartition> = own.owned().difference(&target).cloned().collect();
        own.revoke(moved.iter().cloned());
        own.assign(target.iter().cloned());
        log::info!(
            "consumer joined {:?} generation {} as {} ({}): {}{}",
            joined.member_id,
            joined.generation,
            if joined.leader == joined.member_id {
                "leader"
            } else {
                "follower"
            },
            joined.protocol,
            if target.is_empty() {
                "no partitions".to_owned()
            } else {
                names(&target)
            },
            if moved.is_empty() {
                String::new()
            } else {
                format!("; giving back {}", names(&moved))
            },
        );
        // KIP-429: partitions taken away are given back, then the member joins again so
        // that the next round hands them to their new owner.
        if moved.is_empty() {
            self.state = State::Stable;
        } else {
            self.state = State::Rejoining;
            self.reason = "gave back partitions moved to another member";
        }
    }

    /// As leader: every member's assignment, and the partition counts it was made from.
    fn lead(
        &mut self,
        io: &mut dyn GroupIo,
        joined: &Joined,
    ) -> client::Result<(Plan, BTreeMap<String, i32>)> {
        let assignor = Assignor::from_name(&joined.protocol).unwrap_or(self.assignor);
        let mut subscriptions = BTreeMap::new();
        let mut topics = BTreeSet::new();
        for (id, meta) in &joined.members {
            let sub = decode_subscription(meta).map_err(|detail| client::Error::Protocol {
                broker: "the coordinator".into(),
                detail: format!("member {id}: {detail}"),
            })?;
            topics.extend(sub.topics.iter().cloned());
            subscriptions.insert(id.clone(), sub);
        }
        let counts = io.partition_counts(&topics)?;
        let plan = assignor.assign(&subscriptions, &counts);
        let plan = plan
            .iter()
            .map(|(m, a)| (m.clone(), encode_assignment(a)))
            .collect();
        Ok((plan, counts))
    }

    fn join_failed(&mut self, e: client::Error, own: &mut Ownership) -> Result<(), Error> {
        let now = Instant::now();
        self.state = State::Joining;
        match e.kafka_code() {
            // Our generation is gone: so are the partitions we held through the join.
            Some(KafkaCode::UnknownMemberId) | Some(KafkaCode::IllegalGeneration) => {
                if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                    self.member_id.clear();
                }
                self.generation = -1;
                if own.lose_all() {
                    log::warn!("consumer: lost its partitions ({e}); rejoining");
                }
                self.next_join = now;
            }
            Some(KafkaCode::RebalanceInProgress) => self.next_join = now,
            Some(
                KafkaCode::InconsistentGroupProtocol
                | KafkaCode::GroupAuthorizationFailed
                | KafkaCode::TopicAuthorizationFailed
                | KafkaCode::InvalidSessionTimeout
                | KafkaCode::InvalidGroupId
                | KafkaCode::GroupMaxSizeReached
                | KafkaCode::FencedInstanceId,
            ) => return Err(Error::GroupRefused { cause: e }),
            _ => {
                log::debug!("consumer: join: {e}");
                self.next_join = now + self.retry.next_delay();
            }
        }
        Ok(())
    }

    fn heartbeat(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        let Some(member) = self.member() else {
            return Ok(());
        };
        let Err(e) = io.heartbeat(&member) else {
            return Ok(());
        };
        match e.kafka_code() {
            Some(KafkaCode::RebalanceInProgress) => {
                if self.state == State::Stable {
                    log::debug!("consumer: the group is rebalancing; rejoining");
                    self.reason = "the group is rebalancing";
                    self.rejoin(own);
                }
            }
            Some(KafkaCode::UnknownMemberId | KafkaCode::IllegalGeneration) => {
                self.refused(e.kafka_code().expect("matched"), own);
            }
            Some(KafkaCode::FencedInstanceId) => return Err(Error::GroupRefused { cause: e }),
            _ => log::debug!("consumer: heartbeat: {e}"),
        }
        Ok(())
    }

    /// Join again: eager members give everything back first.
    fn rejoin(&mut self, own: &mut Ownership) {
        if !self.assignor.is_cooperative() {
            own.revoke_all();
        }
        self.state = State::Rejoining;
    }
}

impl Membership for Classic {
    fn status(&self) -> MemberStatus {
        MemberStatus {
            state: match self.state {
                State::Joining => MemberState::Joining,
                State::Stable => MemberState::Stable,
                State::Rejoining => MemberState::Reconciling,
                State::Stalled => MemberState::Stalled,
                State::Left => MemberState::Left,
            },
            member_id: self.member_id.clone(),
            generation: self.generation,
            instance_id: self.instance_id.clone(),
        }
    }

    fn due(&self) -> Instant {
        match self.state {
            State::Joining => self.next_join,
            State::Stable => self.next_heartbeat.min(self.next_check),
            State::Rejoining => self.next_heartbeat,
            State::Stalled | State::Left => Instant::now() + Duration::from_secs(3600),
        }
    }

    fn tick(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
        let now = Instant::now();
        if matches!(self.state, State::Stable | State::Rejoining) && now >= self.next_heartbeat {
            // Also while rejoining: the session lasts while the member finishes what it
            // gives back.
            self.heartbeat(io, own)?;
        }
        if self.state == State::Stable && Instant::now() >= self.next_check {
            self.check_counts(io, own);
        }
        let ready = match self.state {
            State::Joining => Instant::now() >= self.next_join,
            State::Rejoining => own.is_settled(),
            _ => false,
        };
        if ready {
            self.join(io, own)?;
        }
        Ok(())
    }

    fn member(&self) -> Option<GroupMember> {
        (self.generation >= 0 && !self.member_id.is_empty()).then(|| GroupMember {
            member_id: self.member_id.clone(),
            generation: self.generation,
            instance_id: self.instance_id.clone(),
        })
    }

    fn heartbeat_now(&mut self) {
        self.next_heartbeat = Instant::now();
    }

    fn refused(&mut self, code: KafkaCode, own: &mut Ownership) {
        match code {
            KafkaCode::UnknownMemberId | KafkaCode::IllegalGeneration => {
                if own.lose_all() {
                    log::warn!("consumer: lost its partitions ({code:?}); rejoining");
                }
                if code == KafkaCode::UnknownMemberId {
                    self.member_id.clear();
                }
                self.generation = -1;
                self.state = State::Joining;
                self.next_join = Instant::now();
                self.reason = "the coordinator no longer knew the member";
            }
            KafkaCode::RebalanceInProgress if self.state == State::Stable => {
                self.reason = "the group is rebalancing";
                self.rejoin(own);
            }
            _ => {}
        }
    }

    fn stall(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) {
        // A static member keeps its place: its partitions wait for it for the session
        // timeout, and it gets them back if it moves again by then.
        if self.instance_id.is_none() && !self.member_id.is_empty() {
            if let Err(e) = io.leave(&self.member_id) {
                log::debug!("consumer: leaving after a stall: {e}");
            }
            self.member_id.clear();
        }
        own.lose_all();
        self.generation = -1;
        self.state = State::Stalled;
    }

    fn resume(&mut self) {
        self.state = State::Joining;
        self.next_join = Instant::now();
        self.reason = "the member moves again after a stall";
    }

    fn leave(&mut self, io: &mut dyn GroupIo, own: &mut Ownership, leave: bool) {
        // Static members never send LeaveGroup (as in the Java client): their partitions
        // wait for them for the session timeout, so a restart causes no rebalance.
        if leave && self.instance_id.is_none() && !self.member_id.is_empty() {
            match io.leave(&self.member_id) {
                Ok(()) => log::debug!("consumer {} left {:?}", self.member_id, io.group()),
                Err(e) => log::debug!("consumer: leaving: {e}"),
            }
        }
        own.lose_all();
        self.state = State::Left;
    }
}

/// Each member's assignment, encoded for SyncGroup.
type Plan = Vec<(String, Bytes)>;

fn to_assignment(partitions: &BTreeSet<TopicPartition>) -> Assignment {
    let mut out = Assignment::new();
    for (t, p) in partitions {
        out.entry(t.clone()).or_default().push(*p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::script::{events, refusal, tp, Script};
    use super::*;

    fn member(assignor: Assignor, instance: Option<&str>) -> (Classic, Script, Ownership) {
        let mut config = ConsumerConfig::new("b:9092", "g", &["t"]);
        config.assignor = assignor;
        let m = Classic::new(
            &config,
            instance.map(str::to_owned),
            Arc::new(Shared::default()),
        );
        let script = Script {
            counts: BTreeMap::from([("t".to_string(), 4)]),
            ..Script::default()
        };
        (m, script, Ownership::default())
    }

    impl Classic {
        fn hurry(&mut self) {
            self.next_heartbeat = Instant::now();
            self.next_join = Instant::now();
        }
    }

    /// Script one JoinGroup + SyncGroup round giving `ps` of topic t, as a follower.
    fn round(io: &mut Script, generation: i32, ps: &[i32]) {
        io.joins.push_back(Ok(JoinAnswer::Joined(Joined {
            generation,
            member_id: "me".into(),
            leader: "someone-else".into(),
            protocol: "range".into(),
            members: Vec::new(),
            skip_assignment: false,
        })));
        let a = Assignment::from([("t".to_string(), ps.to_vec())]);
        io.syncs.push_back(Ok(encode_assignment(&a)));
    }

    fn owned_in_join(io: &Script, n: usize) -> Vec<i32> {
        io.sent_joins[n]
            .1
            .owned
            .get("t")
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn eager_members_give_everything_back_before_joining_again() {
        let (mut m, mut io, mut own) = member(Assignor::Range, None);
        round(&mut io, 1, &[0, 1]);
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["assigned t0 t1"]);
        assert_eq!(m.member().unwrap().generation, 1);
        m.hurry();
        io.heartbeats
            .push_back(Err(refusal(KafkaCode::RebalanceInProgress)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["revoke t0 t1"]);
        assert_eq!(
            io.sent_joins.len(),
            1,
            "no JoinGroup before the partitions are back"
        );
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_joins.len(), 1);
        own.released(&[tp("t", 0), tp("t", 1)]);
        round(&mut io, 2, &[2, 3]);
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_joins.len(), 2);
        assert!(
            owned_in_join(&io, 1).is_empty(),
            "eager members own nothing when they join"
        );
        assert_eq!(io.sent_joins[1].0, "me", "with the member id it had");
        assert_eq!(events(&mut own), ["assigned t2 t3"]);
        assert_eq!(m.status().state, MemberState::Stable);
    }

    #[test]
    fn cooperative_members_keep_what_stays_and_join_again_after_giving_back_what_moved() {
        let (mut m, mut io, mut own) = member(Assignor::CooperativeSticky, None);
        round(&mut io, 1, &[0, 1, 2, 3]);
        m.tick(&mut io, &mut own).unwrap();
        events(&mut own);
        m.hurry();
        io.heartbeats
            .push_back(Err(refusal(KafkaCode::RebalanceInProgress)));
        round(&mut io, 2, &[0, 1]);
        m.tick(&mut io, &mut own).unwrap();
        // Joined at once, owning everything, and the leader took two away.
        assert_eq!(owned_in_join(&io, 1), [0, 1, 2, 3]);
        assert_eq!(
            io.sent_joins[1].1.generation, 1,
            "with the generation it owns them in"
        );
        assert_eq!(events(&mut own), ["revoke t2 t3"], "t0 and t1 never stop");
        assert_eq!(m.status().state, MemberState::Reconciling);
        own.released(&[tp("t", 2), tp("t", 3)]);
        round(&mut io, 3, &[0, 1]);
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(owned_in_join(&io, 2), [0, 1], "the second round");
        assert!(events(&mut own).is_empty(), "nothing more moves");
        assert_eq!(m.status().state, MemberState::Stable);
        assert_eq!(m.member().unwrap().generation, 3);
    }

    #[test]
    fn the_leader_assigns_every_member_from_their_subscriptions() {
        let (mut m, mut io, mut own) = member(Assignor::Range, None);
        let sub = |topics: &[&str]| {
            encode_subscription(
                &Subscription {
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                    ..Subscription::default()
                },
                Assignor::Range,
            )
        };
        io.joins.push_back(Ok(JoinAnswer::Joined(Joined {
            generation: 1,
            member_id: "a".into(),
            leader: "a".into(),
            protocol: "range".into(),
            members: vec![("a".into(), sub(&["t"])), ("b".into(), sub(&["t"]))],
            skip_assignment: false,
        })));
        io.syncs.push_back(Ok(encode_assignment(&Assignment::from([(
            "t".to_string(),
            vec![0, 1],
        )]))));
        m.tick(&mut io, &mut own).unwrap();
        let plan: BTreeMap<String, Assignment> = io.sent_plans[0]
            .iter()
            .map(|(m, a)| (m.clone(), decode_assignment(a).unwrap()))
            .collect();
        assert_eq!(plan["a"]["t"], [0, 1]);
        assert_eq!(plan["b"]["t"], [2, 3]);
        assert_eq!(events(&mut own), ["assigned t0 t1"]);
    }

    #[test]
    fn a_static_leader_told_to_skip_assignment_sends_no_plan() {
        let (mut m, mut io, mut own) = member(Assignor::Range, Some("host-a"));
        io.joins.push_back(Ok(JoinAnswer::Joined(Joined {
            generation: 4,
            member_id: "a".into(),
            leader: "a".into(),
            protocol: "range".into(),
            members: vec![("a".into(), Bytes::from_static(b"not read"))],
            skip_assignment: true,
        })));
        io.syncs.push_back(Ok(encode_assignment(&Assignment::from([(
            "t".to_string(),
            vec![3],
        )]))));
        m.tick(&mut io, &mut own).unwrap();
        assert!(io.sent_plans[0].is_empty());
        assert_eq!(events(&mut own), ["assigned t3"]);
    }

    #[test]
    fn an_unknown_member_loses_its_partitions_and_joins_afresh() {
        let (mut m, mut io, mut own) = member(Assignor::CooperativeSticky, None);
        round(&mut io, 1, &[0, 1]);
        m.tick(&mut io, &mut own).unwrap();
        events(&mut own);
        m.hurry();
        io.heartbeats
            .push_back(Err(refusal(KafkaCode::UnknownMemberId)));
        io.joins
            .push_back(Ok(JoinAnswer::MemberIdRequired("new-id".into())));
        round(&mut io, 7, &[1]);
        m.tick(&mut io, &mut own).unwrap();
        // Lost first (nothing to commit: not ours any more), then joined afresh at once.
        assert_eq!(events(&mut own), ["lost t0 t1", "assigned t1"]);
        assert_eq!(
            io.sent_joins[1].0, "",
            "an unknown member starts without an id"
        );
        assert_eq!(
            io.sent_joins[2].0, "new-id",
            "then takes the id it is given"
        );
        assert!(owned_in_join(&io, 1).is_empty());
        assert_eq!(m.member().unwrap().generation, 7);
    }

    #[test]
    fn fatal_join_errors_stop_the_member_and_others_are_retried() {
        let (mut m, mut io, mut own) = member(Assignor::Range, Some("host-a"));
        io.joins
            .push_back(Err(refusal(KafkaCode::CoordinatorLoadInProgress)));
        m.tick(&mut io, &mut own).unwrap();
        assert!(m.due() > Instant::now(), "retried after a backoff");
        m.hurry();
        io.joins
            .push_back(Err(refusal(KafkaCode::FencedInstanceId)));
        let err = m.tick(&mut io, &mut own).unwrap_err();
        assert!(matches!(err, Error::GroupRefused { .. }), "{err}");
        assert!(err.to_string().contains("FencedInstanceId"), "{err}");
    }

    #[test]
    fn a_member_joins_again_when_a_subscribed_topic_gains_partitions() {
        let (mut m, mut io, mut own) = member(Assignor::CooperativeSticky, None);
        round(&mut io, 1, &[0, 1, 2, 3]);
        m.tick(&mut io, &mut own).unwrap();
        events(&mut own);
        m.next_check = Instant::now();
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_joins.len(), 1, "nothing changed");
        assert!(m.due() > Instant::now(), "checked again later");
        io.counts.insert("t".into(), 6);
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_joins.len(), 1, "not before the next check");
        m.next_check = Instant::now();
        round(&mut io, 2, &[0, 1, 2, 3, 4, 5]);
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_joins.len(), 2, "joined again");
        assert_eq!(owned_in_join(&io, 1), [0, 1, 2, 3], "keeping what it owns");
        assert_eq!(events(&mut own), ["assigned t4 t5"]);
        assert_eq!(m.status().state, MemberState::Stable);
    }

    #[test]
    fn static_members_never_send_leave_group() {
        let (mut m, mut io, mut own) = member(Assignor::Range, Some("host-a"));
        round(&mut io, 1, &[0]);
        m.tick(&mut io, &mut own).unwrap();
        m.leave(&mut io, &mut own, true);
        assert!(io.left.is_empty());
        let (mut m, mut io, mut own) = member(Assignor::Range, None);
        round(&mut io, 1, &[0]);
        m.tick(&mut io, &mut own).unwrap();
        m.leave(&mut io, &mut own, true);
        assert_eq!(io.left, ["me"]);
    }
}
