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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::client::{self, Backoff, ConsumerHeartbeat, GroupMember, KafkaCode, TopicPartition};

use super::super::config::ConsumerConfig;
use super::super::error::Error;
use super::super::shared::Shared;
use super::coordinator::GroupIo;
use super::membership::{names, MemberState, MemberStatus, Membership, TopicIds};
use super::ownership::Ownership;

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
    /// Whether working toward the target changed what the member owns (a rebalance, for
    /// the stats).
    moved: bool,
    ids: TopicIds,
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
            moved: false,
            ids: TopicIds::new(),
            retry: config.client.backoff(),
            retry_template: config.client.backoff(),
            shared,
        }
    }

    fn heartbeat(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
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
        let answer = io.consumer_heartbeat(&hb);
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
                "consumer {} joined {:?} at epoch {}",
                self.member_id,
                io.group(),
                a.epoch
            );
            self.state = State::Stable;
        }
        self.epoch = a.epoch;
        if !a.interval.is_zero() {
            self.interval = a.interval;
        }
        self.next_heartbeat = now + self.interval;
        // The newest target replaces any still being worked toward, even one equal to what
        // the member owns (the coordinator changed its mind): it sends each only once.
        if let Some(target) = a.assignment {
            self.target = Some(target);
        }
        Ok(())
    }

    fn failed(
        &mut self,
        e: client::Error,
        io: &mut dyn GroupIo,
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
    fn reconcile(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) {
        let Some(target) = self.target.clone() else {
            return;
        };
        if !own.is_settled() {
            self.state = State::Reconciling;
            return;
        }
        let (resolved, unresolved) = self.ids.resolve(io, &self.topics, &target);
        let gone: Vec<TopicPartition> = own.owned().difference(&resolved).cloned().collect();
        if !gone.is_empty() {
            log::info!("consumer {}: giving back {}", self.member_id, names(&gone));
            self.moved = true;
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
            self.moved = true;
        }
        if unresolved == 0 {
            self.target = None;
            if std::mem::take(&mut self.moved) {
                self.shared.rebalances.add(1);
            }
        }
        self.state = State::Stable;
    }

    fn by_id(&self, partitions: &BTreeSet<TopicPartition>) -> BTreeMap<Uuid, Vec<i32>> {
        let mut out: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            if let Some(id) = self.ids.id(t) {
                out.entry(id).or_default().push(*p);
            }
        }
        out
    }

    /// Leave with epoch -1, or -2 for a static member (its partitions wait for it).
    fn send_leave(&mut self, io: &mut dyn GroupIo) {
        if self.epoch <= 0 {
            return;
        }
        let hb = ConsumerHeartbeat {
            member_id: self.member_id.clone(),
            epoch: if self.instance_id.is_some() { -2 } else { -1 },
            instance_id: self.instance_id.clone(),
            ..ConsumerHeartbeat::default()
        };
        match io.consumer_heartbeat(&hb) {
            Ok(_) => log::debug!("consumer {} left {:?}", self.member_id, io.group()),
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

    fn tick(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
        if matches!(self.state, State::Stalled | State::Left) {
            return Ok(());
        }
        // At most the heartbeat that was due, then the acknowledgement its answer made due.
        for _ in 0..2 {
            self.reconcile(io, own);
            let acknowledge = self.epoch > 0
                && own.is_settled()
                && self.reported.as_ref().is_some_and(|r| r != own.owned());
            if !acknowledge && Instant::now() < self.next_heartbeat {
                break;
            }
            self.heartbeat(io, own)?;
        }
        self.reconcile(io, own);
        Ok(())
    }

    fn member(&self) -> Option<GroupMember> {
        (self.epoch > 0).then(|| GroupMember {
            member_id: self.member_id.clone(),
            generation: self.epoch,
            instance_id: self.instance_id.clone(),
        })
    }

    fn heartbeat_now(&mut self) {
        self.next_heartbeat = Instant::now();
    }

    fn refused(&mut self, code: KafkaCode, own: &mut Ownership) {
        if matches!(
            code,
            KafkaCode::FencedMemberEpoch | KafkaCode::UnknownMemberId
        ) {
            self.fenced(&format!("{code:?}"), own);
        }
    }

    fn stall(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) {
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

    fn leave(&mut self, io: &mut dyn GroupIo, own: &mut Ownership, leave: bool) {
        if leave {
            self.send_leave(io);
        }
        own.lose_all();
        self.state = State::Left;
    }
}

#[cfg(test)]
mod tests {
    use super::super::script::{answer, events, refusal, tp, Script};
    use super::*;

    const T: Uuid = Uuid::from_u128(7);

    fn member(instance: Option<&str>) -> (Kip848, Script, Ownership) {
        let config = ConsumerConfig::new("b:9092", "g", &["t"]);
        let m = Kip848::new(
            &config,
            instance.map(str::to_owned),
            Arc::new(Shared::default()),
        );
        let script = Script {
            ids: BTreeMap::from([("t".to_string(), T)]),
            ..Script::default()
        };
        (m, script, Ownership::default())
    }

    fn target(ps: &[i32]) -> Option<BTreeMap<Uuid, Vec<i32>>> {
        Some(BTreeMap::from([(T, ps.to_vec())]))
    }

    /// Join and take up `ps`, acknowledged.
    fn joined(ps: &[i32]) -> (Kip848, Script, Ownership) {
        let (mut m, mut io, mut own) = member(None);
        io.consumer.push_back(Ok(answer(1, target(ps))));
        io.consumer.push_back(Ok(answer(1, None)));
        m.tick(&mut io, &mut own).unwrap();
        events(&mut own);
        (m, io, own)
    }

    impl Kip848 {
        fn hurry(&mut self) {
            self.next_heartbeat = Instant::now();
        }
    }

    fn owned(own: &Ownership) -> Vec<TopicPartition> {
        own.owned().iter().cloned().collect()
    }

    #[test]
    fn joins_with_every_field_then_acknowledges_what_it_took_up() {
        let (mut m, mut io, mut own) = member(None);
        io.consumer.push_back(Ok(answer(1, target(&[0, 1]))));
        io.consumer.push_back(Ok(answer(1, None)));
        m.tick(&mut io, &mut own).unwrap();
        let join = &io.sent_consumer[0];
        assert_eq!(join.epoch, 0);
        assert_eq!(join.topics.as_deref(), Some(&["t".to_string()][..]));
        assert_eq!(
            join.owned,
            Some(BTreeMap::new()),
            "a join sends [] owned, not null"
        );
        assert!(join.rebalance_timeout.is_some());
        assert_eq!(events(&mut own), ["assigned t0 t1"]);
        let ack = &io.sent_consumer[1];
        assert_eq!(
            (ack.epoch, ack.topics.clone()),
            (1, None),
            "not a full heartbeat"
        );
        assert_eq!(ack.owned, target(&[0, 1]), "the acknowledgement, at once");
        assert_eq!(m.member().unwrap().generation, 1);
        assert_eq!(m.status().state, MemberState::Stable);
    }

    #[test]
    fn gives_back_what_moved_before_taking_up_the_rest_and_then_acknowledges() {
        let (mut m, mut io, mut own) = joined(&[0, 1]);
        m.hurry();
        io.consumer.push_back(Ok(answer(2, target(&[0, 2]))));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["revoke t1"]);
        assert_eq!(
            owned(&own),
            [tp("t", 0), tp("t", 1)],
            "t2 waits for t1 to go"
        );
        assert_eq!(m.status().state, MemberState::Reconciling);
        // Until t1 is released, heartbeats only keep the member alive.
        m.hurry();
        io.consumer.push_back(Ok(answer(2, None)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_consumer.last().unwrap().owned, None);
        own.released(&[tp("t", 1)]);
        io.consumer.push_back(Ok(answer(2, None)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["assigned t2"]);
        assert_eq!(io.sent_consumer.last().unwrap().owned, target(&[0, 2]));
        assert_eq!(m.status().state, MemberState::Stable);
    }

    #[test]
    fn a_newer_target_replaces_one_still_being_worked_toward() {
        let (mut m, mut io, mut own) = joined(&[0, 1]);
        m.hurry();
        io.consumer.push_back(Ok(answer(2, target(&[0]))));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["revoke t1"]);
        // The coordinator changes its mind before t1 is released: back to what the member
        // owns. t1 is on its way out already; it must come back, not be left out.
        m.hurry();
        io.consumer.push_back(Ok(answer(3, target(&[0, 1]))));
        m.tick(&mut io, &mut own).unwrap();
        own.released(&[tp("t", 1)]);
        io.consumer.push_back(Ok(answer(3, None)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["assigned t1"]);
        // The same target again changes nothing.
        m.hurry();
        io.consumer.push_back(Ok(answer(3, target(&[0, 1]))));
        m.tick(&mut io, &mut own).unwrap();
        assert!(events(&mut own).is_empty());
        assert_eq!(m.status().state, MemberState::Stable);
    }

    #[test]
    fn a_fenced_member_loses_its_partitions_and_rejoins_at_epoch_zero() {
        let (mut m, mut io, mut own) = joined(&[0, 1]);
        m.hurry();
        io.consumer
            .push_back(Err(refusal(KafkaCode::FencedMemberEpoch)));
        io.consumer.push_back(Ok(answer(5, target(&[1]))));
        io.consumer.push_back(Ok(answer(5, None)));
        m.tick(&mut io, &mut own).unwrap();
        // Rejoined at once, in the same tick.
        assert_eq!(events(&mut own), ["lost t0 t1", "assigned t1"]);
        let rejoin = io.sent_consumer.last().unwrap();
        assert_eq!(
            (rejoin.epoch, rejoin.owned.clone()),
            (0, Some(BTreeMap::new()))
        );
        assert!(rejoin.topics.is_some(), "every field again");
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_consumer.last().unwrap().owned, target(&[1]));
        assert_eq!(m.member().unwrap().generation, 5);
    }

    #[test]
    fn commits_refused_as_fenced_lose_the_partitions_too() {
        let (mut m, _io, mut own) = joined(&[0]);
        m.refused(KafkaCode::StaleMemberEpoch, &mut own);
        assert!(events(&mut own).is_empty(), "stale is retried, not fatal");
        m.refused(KafkaCode::UnknownMemberId, &mut own);
        assert_eq!(events(&mut own), ["lost t0"]);
    }

    #[test]
    fn a_topic_id_not_yet_in_metadata_waits_and_then_is_taken_up() {
        let (mut m, mut io, mut own) = member(None);
        let other = Uuid::from_u128(99);
        io.ids.clear();
        io.consumer
            .push_back(Ok(answer(1, Some(BTreeMap::from([(other, vec![0])])))));
        m.tick(&mut io, &mut own).unwrap();
        assert!(events(&mut own).is_empty(), "nothing taken up blindly");
        assert!(own.owned().is_empty());
        io.ids = BTreeMap::from([("t".to_string(), other)]);
        m.ids.next_resolve = Instant::now();
        io.consumer.push_back(Ok(answer(1, None)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["assigned t0"]);
    }

    #[test]
    fn a_cluster_without_the_protocol_is_a_clear_error() {
        let (mut m, mut io, mut own) = member(None);
        io.consumer
            .push_back(Err(refusal(KafkaCode::UnsupportedVersion)));
        let err = m.tick(&mut io, &mut own).unwrap_err();
        assert!(err.to_string().contains("Kafka 3.9"), "{err}");
        let (mut m, mut io, mut own) = member(None);
        io.consumer
            .push_back(Err(refusal(KafkaCode::UnreleasedInstanceId)));
        let err = m.tick(&mut io, &mut own).unwrap_err();
        assert!(matches!(err, Error::GroupRefused { .. }), "{err}");
    }

    #[test]
    fn transient_errors_retry_with_every_field() {
        let (mut m, mut io, mut own) = joined(&[0]);
        m.hurry();
        io.consumer
            .push_back(Err(refusal(KafkaCode::CoordinatorLoadInProgress)));
        m.tick(&mut io, &mut own).unwrap();
        assert!(events(&mut own).is_empty(), "the partitions stay");
        assert!(m.due() > Instant::now(), "after a backoff");
        m.hurry();
        io.consumer.push_back(Ok(answer(1, None)));
        m.tick(&mut io, &mut own).unwrap();
        let again = io.sent_consumer.last().unwrap();
        assert_eq!((again.epoch, again.owned.clone()), (1, target(&[0])));
        assert!(again.topics.is_some());
    }

    #[test]
    fn leaving_sends_epoch_minus_one_or_minus_two_for_a_static_member() {
        let (mut m, mut io, mut own) = joined(&[0]);
        m.leave(&mut io, &mut own, true);
        assert_eq!(io.sent_consumer.last().unwrap().epoch, -1);
        let (mut m, mut io, mut own) = member(Some("host-a"));
        io.consumer.push_back(Ok(answer(1, None)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_consumer[0].instance_id.as_deref(), Some("host-a"));
        m.leave(&mut io, &mut own, true);
        let leave = io.sent_consumer.last().unwrap();
        assert_eq!(
            (leave.epoch, leave.instance_id.as_deref()),
            (-2, Some("host-a"))
        );
        let (mut m, mut io, mut own) = joined(&[0]);
        let sent = io.sent_consumer.len();
        m.leave(&mut io, &mut own, false);
        assert_eq!(
            io.sent_consumer.len(),
            sent,
            "leave_group_on_close false: like a crash"
        );
    }
}
