//! Share group membership (KIP-932): one RPC, ShareGroupHeartbeat.
//!
//! ```text
//!  Joining ──epoch 0, subscription──▶ Stable ──assignment changed──▶ take up / give back
//!     ▲                                 │
//!     └── FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID: everything lost, rejoin at epoch 0
//! ```
//!
//! Simpler than the consumer protocol: a share member does not own its partitions (the
//! coordinator may give one partition to many members, and each record is acquired by
//! whichever fetches it), so there is nothing to hand over and nothing to acknowledge. The
//! coordinator's assignment, sent whole whenever it changes, is taken as it comes: partitions
//! that left it are given back at once (the member thread acknowledges what it holds of
//! them and stops fetching them), new ones are taken up. The member makes its own id (a
//! UUID kept for its life), and leaves with epoch -1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::client::{self, Backoff, GroupMember, KafkaCode, ShareHeartbeat, TopicPartition};

use super::super::config::ConsumerConfig;
use super::super::error::Error;
use super::super::shared::Shared;
use super::coordinator::GroupIo;
use super::membership::{names, MemberState, MemberStatus, Membership, TopicIds};
use super::ownership::Ownership;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Joining,
    Stable,
    Stalled,
    Left,
}

pub(super) struct Share {
    topics: Vec<String>,
    rack: Option<String>,
    member_id: String,
    epoch: i32,
    state: State,
    interval: Duration,
    next_heartbeat: Instant,
    /// Send the subscription next time (a join, or after an error).
    full: bool,
    /// The latest assignment, by topic id, until every id is resolved.
    target: Option<BTreeMap<Uuid, Vec<i32>>>,
    ids: TopicIds,
    retry: Backoff,
    retry_template: Backoff,
    shared: Arc<Shared>,
}

impl Share {
    pub(super) fn new(config: &ConsumerConfig, member_id: String, shared: Arc<Shared>) -> Self {
        let now = Instant::now();
        Share {
            topics: config.topics.clone(),
            rack: config.fetch.rack.clone(),
            member_id,
            epoch: 0,
            state: State::Joining,
            interval: config.heartbeat_interval,
            next_heartbeat: now,
            full: true,
            target: None,
            ids: TopicIds::new(),
            retry: config.client.backoff(),
            retry_template: config.client.backoff(),
            shared,
        }
    }

    fn heartbeat(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
        let full = self.full || self.epoch == 0;
        let hb = ShareHeartbeat {
            member_id: self.member_id.clone(),
            epoch: self.epoch,
            rack: self.rack.clone().filter(|_| full),
            topics: full.then(|| self.topics.clone()),
        };
        let a = match io.share_heartbeat(&hb) {
            Ok(a) => a,
            Err(e) => return self.failed(e, io, own),
        };
        self.full = false;
        self.retry = self.retry_template.clone();
        if let Some(id) = a
            .member_id
            .filter(|id| !id.is_empty() && *id != self.member_id)
        {
            // Not on v1, where the member names itself; its fetches carry our id.
            log::warn!(
                "share member {}: the coordinator calls it {id}",
                self.member_id
            );
        }
        if self.state == State::Joining {
            log::info!(
                "share member {} joined {:?} at epoch {}",
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
        self.next_heartbeat = Instant::now() + self.interval;
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
        self.full = true;
        match e.kafka_code() {
            Some(KafkaCode::FencedMemberEpoch | KafkaCode::UnknownMemberId) => {
                self.fenced(&e.to_string(), own);
                Ok(())
            }
            Some(KafkaCode::UnsupportedVersion) => Err(io.share_unsupported()),
            None if matches!(e, client::Error::UnsupportedVersion { .. }) => {
                Err(io.share_unsupported())
            }
            Some(
                KafkaCode::GroupAuthorizationFailed
                | KafkaCode::TopicAuthorizationFailed
                | KafkaCode::InvalidRequest
                | KafkaCode::GroupMaxSizeReached
                | KafkaCode::GroupIdNotFound
                | KafkaCode::InconsistentGroupProtocol,
            ) => Err(Error::GroupRefused { cause: e }),
            _ => {
                log::debug!("share member {}: heartbeat: {e}", self.member_id);
                self.next_heartbeat = Instant::now() + self.retry.next_delay();
                Ok(())
            }
        }
    }

    /// The coordinator fenced us: rejoin at once, with nothing assigned meanwhile.
    fn fenced(&mut self, why: &str, own: &mut Ownership) {
        if own.lose_all() {
            log::warn!(
                "share member {}: lost its assignment ({why}); rejoining",
                self.member_id
            );
        }
        self.epoch = 0;
        self.target = None;
        self.full = true;
        self.state = State::Joining;
        self.next_heartbeat = Instant::now();
    }

    /// Take the latest assignment as it is: give back what left it, take up what is new.
    fn reconcile(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let (resolved, unresolved) = self.ids.resolve(io, &self.topics, &target);
        let gone: Vec<TopicPartition> = own.owned().difference(&resolved).cloned().collect();
        let added: Vec<TopicPartition> = resolved.difference(own.owned()).cloned().collect();
        if !gone.is_empty() {
            log::info!(
                "share member {}: giving back {}",
                self.member_id,
                names(&gone)
            );
            own.revoke(gone);
        }
        if !added.is_empty() {
            log::info!(
                "share member {}: taking up {} (epoch {})",
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
    }

    fn send_leave(&mut self, io: &mut dyn GroupIo) {
        if self.epoch <= 0 {
            return;
        }
        let hb = ShareHeartbeat {
            member_id: self.member_id.clone(),
            epoch: -1,
            ..ShareHeartbeat::default()
        };
        match io.share_heartbeat(&hb) {
            Ok(_) => log::debug!("share member {} left {:?}", self.member_id, io.group()),
            Err(e) => log::debug!("share member {}: leaving: {e}", self.member_id),
        }
        self.epoch = 0;
    }
}

impl Membership for Share {
    fn status(&self) -> MemberStatus {
        MemberStatus {
            state: match self.state {
                State::Joining => MemberState::Joining,
                State::Stable => MemberState::Stable,
                State::Stalled => MemberState::Stalled,
                State::Left => MemberState::Left,
            },
            member_id: self.member_id.clone(),
            generation: self.epoch,
            instance_id: None,
        }
    }

    fn due(&self) -> Instant {
        match self.state {
            State::Stalled | State::Left => Instant::now() + Duration::from_secs(3600),
            _ if self.target.is_some() => self.next_heartbeat.min(self.ids.next_resolve),
            _ => self.next_heartbeat,
        }
    }

    fn tick(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error> {
        if matches!(self.state, State::Stalled | State::Left) {
            return Ok(());
        }
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat(io, own)?;
        }
        self.reconcile(io, own);
        Ok(())
    }

    fn commits(&self) -> bool {
        false
    }

    fn member(&self) -> Option<GroupMember> {
        (self.epoch > 0).then(|| GroupMember {
            member_id: self.member_id.clone(),
            generation: self.epoch,
            instance_id: None,
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
    use super::super::script::{events, refusal, tp, Script};
    use super::*;
    use crate::client::ShareHeartbeatAnswer;

    const T: Uuid = Uuid::from_u128(7);

    fn member() -> (Share, Script, Ownership) {
        let config = ConsumerConfig::new("b:9092", "g", &["t"]);
        let m = Share::new(&config, "m-1".into(), Arc::new(Shared::default()));
        let script = Script {
            ids: BTreeMap::from([("t".to_string(), T)]),
            ..Script::default()
        };
        (m, script, Ownership::default())
    }

    fn answer(epoch: i32, ps: Option<&[i32]>) -> ShareHeartbeatAnswer {
        ShareHeartbeatAnswer {
            member_id: None,
            epoch,
            interval: Duration::from_millis(500),
            assignment: ps.map(|ps| BTreeMap::from([(T, ps.to_vec())])),
        }
    }

    #[test]
    fn joins_with_its_subscription_and_takes_up_what_it_is_given() {
        let (mut m, mut io, mut own) = member();
        io.share.push_back(Ok(answer(1, Some(&[0, 1]))));
        m.tick(&mut io, &mut own).unwrap();
        let join = &io.sent_share[0];
        assert_eq!(join.epoch, 0);
        assert_eq!(join.topics.as_deref(), Some(&["t".to_string()][..]));
        assert_eq!(events(&mut own), ["assigned t0 t1"]);
        assert_eq!(m.status().state, MemberState::Stable);
        assert!(m.member().is_some() && !m.commits());
        // The next heartbeat leaves the subscription out; a changed assignment is taken
        // as it comes, with no acknowledgement.
        m.next_heartbeat = Instant::now();
        io.share.push_back(Ok(answer(2, Some(&[1, 2]))));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(io.sent_share[1].topics, None);
        assert_eq!(events(&mut own), ["revoke t0", "assigned t2"]);
        own.released(&[tp("t", 0)]);
        assert_eq!(own.owned().len(), 2);
    }

    #[test]
    fn a_fenced_member_rejoins_at_epoch_zero_with_the_same_id() {
        let (mut m, mut io, mut own) = member();
        io.share.push_back(Ok(answer(3, Some(&[0]))));
        m.tick(&mut io, &mut own).unwrap();
        events(&mut own);
        let id = m.member_id.clone();
        m.next_heartbeat = Instant::now();
        io.share
            .push_back(Err(refusal(KafkaCode::FencedMemberEpoch)));
        m.tick(&mut io, &mut own).unwrap();
        assert_eq!(events(&mut own), ["lost t0"]);
        io.share.push_back(Ok(answer(5, Some(&[0]))));
        m.tick(&mut io, &mut own).unwrap();
        let rejoin = io.sent_share.last().unwrap();
        assert_eq!((rejoin.epoch, rejoin.member_id.as_str()), (0, id.as_str()));
        assert!(rejoin.topics.is_some());
        assert_eq!(events(&mut own), ["assigned t0"]);
    }

    #[test]
    fn refusals_for_good_and_transient_errors_are_told_apart() {
        let (mut m, mut io, mut own) = member();
        io.share
            .push_back(Err(refusal(KafkaCode::CoordinatorLoadInProgress)));
        m.tick(&mut io, &mut own).unwrap();
        assert!(m.due() > Instant::now(), "retried after a backoff");
        let (mut m, mut io, mut own) = member();
        io.share
            .push_back(Err(refusal(KafkaCode::GroupAuthorizationFailed)));
        assert!(matches!(
            m.tick(&mut io, &mut own),
            Err(Error::GroupRefused { .. })
        ));
        let (mut m, mut io, mut own) = member();
        io.share
            .push_back(Err(refusal(KafkaCode::UnsupportedVersion)));
        let err = m.tick(&mut io, &mut own).unwrap_err().to_string();
        assert!(err.contains("share"), "{err}");
    }

    #[test]
    fn leaving_sends_epoch_minus_one() {
        let (mut m, mut io, mut own) = member();
        io.share.push_back(Ok(answer(1, Some(&[0]))));
        m.tick(&mut io, &mut own).unwrap();
        m.leave(&mut io, &mut own, true);
        assert_eq!(io.sent_share.last().unwrap().epoch, -1);
        assert_eq!(m.status().state, MemberState::Left);
    }
}
