//! The consumer group protocol of KIP-848 (Kafka 4.0+): one RPC, ConsumerGroupHeartbeat.
//!
//! ```text
//!  Joining ──epoch 0, every field──▶ Stable ◀──────────── acknowledged (owned sent)
//!     ▲                                │ target ≠ owned            ▲
//!     │ FENCED_MEMBER_EPOCH,           ▼                           │
//!     │ UNKNOWN_MEMBER_ID:         Reconciling: give back what moved (the member commits
//!     └── partitions lost          first), then take up what was added ───────────────┘
//! ```
//!
//! The member makes its own id (a UUID, kept for its life) and joins with epoch 0, sending
//! its subscription and `[]` owned partitions. The coordinator runs the assignor and answers
//! heartbeats with the member's target assignment, by topic id, whenever it changes. The
//! member resolves the ids through metadata, gives back what is no longer its own, takes up
//! what is new, and acknowledges by sending the partitions it owns; until then it sends
//! only keep-alives (`null` fields), so the coordinator does not hand a partition to its next
//! owner before this one committed it. Other members are not disturbed: each reconciles on
//! its own. Leaving sends epoch -1, or -2 for a static member that will come back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::client::{
    self, consumer_heartbeat_request, read_consumer_heartbeat, Backoff, ConsumerHeartbeat,
    GroupMember, KafkaCode, TopicPartition,
};

use super::super::config::ConsumerConfig;
use super::super::{Error, Shared};
use super::{names, Coordinator, MemberState, MemberStatus, Membership, Ownership};

/// How long unresolved topic ids wait before metadata is asked again.
const RESOLVE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Epoch 0: joining (or rejoining after being fenced).
    Joining,
    Stable,
    /// Giving back partitions before taking up the rest of the target.
    Reconciling,
    Stalled,
    Left,
}

pub(super) struct Kip848 {
    topics: Vec<String>,
    instance_id: Option<String>,
    server_assignor: Option<&'static str>,
    rebalance_timeout: Duration,
    member_id: String,
    epoch: i32,
    state: State,
    interval: Duration,
    next_heartbeat: Instant,
    /// Send every field next time (a join, or after an error).
    full: bool,
    /// The partitions the coordinator last heard we own.
    reported: Option<BTreeSet<TopicPartition>>,
    /// The latest target the coordinator gave, by topic id, until fully taken up.
    target: Option<BTreeMap<Uuid, Vec<i32>>>,
    ids: HashMap<String, Uuid>,
    names: HashMap<Uuid, String>,
    next_resolve: Instant,
    retry: Backoff,
    retry_template: Backoff,
    shared: Arc<Shared>,
}

impl Kip848 {
    pub(super) fn new(
        config: &ConsumerConfig,
        instance_id: Option<String>,
        shared: Arc<Shared>,
    ) -> Self {
        let now = Instant::now();
        Kip848 {
            topics: config.topics.clone(),
            instance_id,
            server_assignor: config.server_assignor.map(|a| a.name()),
            rebalance_timeout: config.max_poll_interval,
            member_id: Uuid::new_v4().to_string(),
            epoch: 0,
            state: State::Joining,
            interval: config.heartbeat_interval,
            next_heartbeat: now,
            full: true,
            reported: None,
            target: None,
            ids: HashMap::new(),
            names: HashMap::new(),
            next_resolve: now,
            retry: config.client.backoff(),
            retry_template: config.client.backoff(),
            shared,
        }
    }

    fn heartbeat(&mut self, io: &mut Coordinator, own: &mut Ownership) -> Result<(), Error> {
        let full = self.full || self.epoch == 0;
        // Acknowledge only a settled assignment: while partitions are being given back, the
        // coordinator must go on thinking we own them.
        // Acknowledge only a settled assignment: while partitions are being given back, the
        // coordinator must go on thinking we own them (it hands them on when we stop saying so).
        let acknowledge = own.is_settled() && self.reported.as_ref() != Some(own.owned());
        let report = (full || acknowledge).then(|| own.owned().clone());
        let hb = ConsumerHeartbeat {
            member_id: self.member_id.clone(),
            epoch: self.epoch,
            instance_id: self.instance_id.clone().filter(|_| full),
            rebalance_timeout: full.then_some(self.rebalance_timeout),
            topics: full.then(|| self.topics.clone()),
            server_assignor: self.server_assignor.filter(|_| full).map(str::to_owned),
            owned: report.as_ref().map(|r| self.by_id(r)),
        };
        let group = io.group().to_owned();
        let answer = io.call(
            |_| consumer_heartbeat_request(&group, &hb),
            None,
            read_consumer_heartbeat,
        );
        let now = Instant::now();
        let a = match answer {
            Ok(a) => a,
            Err(e) => return self.failed(e, io, own),
        };
        self.full = false;
        self.retry = self.retry_template.clone();
        if report.is_some() {
            self.reported = report;
        }
        if let Some(id) = a.member_id.filter(|id| !id.is_empty()) {
            self.member_id = id;
        }
        if self.state == State::Joining {
            log::info!(
                "consumer {} joined {group:?} at epoch {}",
                self.member_id,
                a.epoch
            );
            self.state = State::Stable;
        }
        self.epoch = a.epoch;
        if !a.interval.is_zero() {
            self.interval = a.interval;
        }
        self.next_heartbeat = now + self.interval;
        if let Some(target) = a.assignment {
            if self.target.as_ref() != Some(&target) && self.by_id(own.owned()) != target {
                self.target = Some(target);
            }
        }
        Ok(())
    }

    fn failed(
        &mut self,
        e: client::Error,
        io: &mut Coordinator,
        own: &mut Ownership,
    ) -> Result<(), Error> {
        let now = Instant::now();
        self.full = true;
        self.reported = None;
        match e.kafka_code() {
            Some(KafkaCode::FencedMemberEpoch | KafkaCode::UnknownMemberId) => {
                self.fenced(&e.to_string(), own);
                Ok(())
            }
            Some(KafkaCode::UnsupportedVersion) => Err(io.unsupported()),
            None if matches!(e, client::Error::UnsupportedVersion { .. }) => Err(io.unsupported()),
            Some(
                KafkaCode::GroupAuthorizationFailed
                | KafkaCode::TopicAuthorizationFailed
                | KafkaCode::InvalidRequest
                | KafkaCode::GroupMaxSizeReached
                | KafkaCode::UnsupportedAssignor
                | KafkaCode::UnreleasedInstanceId
                | KafkaCode::FencedInstanceId
                | KafkaCode::InconsistentGroupProtocol,
            ) => Err(Error::GroupRefused { cause: e }),
            _ => {
                log::debug!("consumer {}: heartbeat: {e}", self.member_id);
                self.next_heartbeat = now + self.retry.next_delay();
                Ok(())
            }
        }
    }

    /// The coordinator fenced us: the partitions are someone else's now; rejoin at once.
    fn fenced(&mut self, why: &str, own: &mut Ownership) {
        if own.lose_all() {
            log::warn!(
                "consumer {}: lost its partitions ({why}); rejoining",
                self.member_id
            );
        }
        self.epoch = 0;
        self.target = None;
        self.full = true;
        self.reported = None;
        self.state = State::Joining;
        self.next_heartbeat = Instant::now();
    }

    /// Move toward the target: give back what left it first, then take up the rest.
    fn reconcile(&mut self, io: &mut Coordinator, own: &mut Ownership) {
        let Some(target) = self.target.clone() else {
            return;
        };
        if !own.is_settled() {
            self.state = State::Reconciling;
            return;
        }
        let (resolved, unresolved) = self.resolve(io, &target);
        let gone: Vec<TopicPartition> = own.owned().difference(&resolved).cloned().collect();
        if !gone.is_empty() {
            log::info!("consumer {}: giving back {}", self.member_id, names(&gone));
            own.revoke(gone);
            if !own.is_settled() {
                self.state = State::Reconciling;
                return;
            }
        }
        let added: Vec<TopicPartition> = resolved
            .iter()
            .filter(|tp| !own.owned().contains(*tp))
            .cloned()
            .collect();
        if !added.is_empty() {
            log::info!(
                "consumer {}: taking up {} (epoch {})",
                self.member_id,
                names(&added),
                self.epoch
            );
            own.assign(added);
        }
        if unresolved == 0 {
            self.target = None;
            self.shared.rebalances.add(1);
        }
        self.state = State::Stable;
    }

    /// The target's partitions by name, and how many topic ids are not known yet (metadata is
    /// asked again for them now and then).
    fn resolve(
        &mut self,
        io: &mut Coordinator,
        target: &BTreeMap<Uuid, Vec<i32>>,
    ) -> (BTreeSet<TopicPartition>, usize) {
        if target.keys().any(|id| !self.names.contains_key(id))
            && Instant::now() >= self.next_resolve
        {
            self.next_resolve = Instant::now() + RESOLVE_EVERY;
            let cluster = io.cluster();
            for t in &self.topics {
                cluster.invalidate(Some(t));
                match cluster.topic(t) {
                    Ok(info) => {
                        self.ids.insert(t.clone(), info.id);
                        self.names.insert(info.id, t.clone());
                    }
                    Err(e) => log::debug!("consumer: metadata for {t}: {e}"),
                }
            }
        }
        let mut resolved = BTreeSet::new();
        let mut unresolved = 0;
        for (id, ps) in target {
            match self.names.get(id) {
                Some(t) => resolved.extend(ps.iter().map(|p| (t.clone(), *p))),
                None => unresolved += 1,
            }
        }
        (resolved, unresolved)
    }

    fn by_id(&self, partitions: &BTreeSet<TopicPartition>) -> BTreeMap<Uuid, Vec<i32>> {
        let mut out: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            if let Some(id) = self.ids.get(t) {
                out.entry(*id).or_default().push(*p);
            }
        }
        out
    }

    /// Leave with epoch -1, or -2 for a static member (its partitions wait for it).
    fn send_leave(&mut self, io: &mut Coordinator) {
        if self.epoch <= 0 {
            return;
        }
        let hb = ConsumerHeartbeat {
            member_id: self.member_id.clone(),
            epoch: if self.instance_id.is_some() { -2 } else { -1 },
            instance_id: self.instance_id.clone(),
            ..ConsumerHeartbeat::default()
        };
        let group = io.group().to_owned();
        match io.call(
            |_| consumer_heartbeat_request(&group, &hb),
            None,
            read_consumer_heartbeat,
        ) {
            Ok(_) => log::debug!("consumer {} left {group:?}", self.member_id),
            Err(e) => log::debug!("consumer {}: leaving: {e}", self.member_id),
        }
        self.epoch = 0;
    }
}

impl Membership for Kip848 {
    fn status(&self) -> MemberStatus {
        MemberStatus {
            state: match self.state {
                State::Joining => MemberState::Joining,
                State::Stable => MemberState::Stable,
                State::Reconciling => MemberState::Reconciling,
                State::Stalled => MemberState::Stalled,
                State::Left => MemberState::Left,
            },
            member_id: self.member_id.clone(),
            generation: self.epoch,
            instance_id: self.instance_id.clone(),
        }
    }

    fn due(&self) -> Instant {
        match self.state {
            State::Stalled | State::Left => Instant::now() + Duration::from_secs(3600),
            _ => self.next_heartbeat,
        }
    }

    fn tick(&mut self, io: &mut Coordinator, own: &mut Ownership) -> Result<(), Error> {
        if matches!(self.state, State::Stalled | State::Left) {
            return Ok(());
        }
        self.reconcile(io, own);
        let acknowledge = self.epoch > 0
            && own.is_settled()
            && self.reported.as_ref().is_some_and(|r| r != own.owned());
        if acknowledge || Instant::now() >= self.next_heartbeat {
            self.heartbeat(io, own)?;
            self.reconcile(io, own);
        }
        Ok(())
    }

    fn member(&self) -> Option<GroupMember> {
        (self.epoch > 0).then(|| GroupMember {
            member_id: self.member_id.clone(),
            generation: self.epoch,
            instance_id: self.instance_id.clone(),
        })
    }

    fn refused(&mut self, code: KafkaCode, own: &mut Ownership) {
        if matches!(
            code,
            KafkaCode::FencedMemberEpoch | KafkaCode::UnknownMemberId
        ) {
            self.fenced(&format!("{code:?}"), own);
        }
    }

    fn stall(&mut self, io: &mut Coordinator, own: &mut Ownership) {
        self.send_leave(io);
        own.lose_all();
        self.target = None;
        self.full = true;
        self.reported = None;
        self.state = State::Stalled;
    }

    fn resume(&mut self) {
        self.state = State::Joining;
        self.next_heartbeat = Instant::now();
    }

    fn leave(&mut self, io: &mut Coordinator, own: &mut Ownership, leave: bool) {
        if leave {
            self.send_leave(io);
        }
        own.lose_all();
        self.state = State::Left;
    }
}
