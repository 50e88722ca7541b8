//! What a group protocol is to the group thread: a [`Membership`], reporting a
//! [`MemberStatus`]; and what the protocols share: [`TopicIds`] for those that assign by
//! topic id, and [`names`] for their messages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::client::{GroupMember, KafkaCode, TopicPartition};

use super::super::error::Error;
use super::coordinator::GroupIo;
use super::ownership::Ownership;

/// How long unresolved topic ids wait before metadata is asked again.
const RESOLVE_EVERY: Duration = Duration::from_millis(500);

/// The names of the subscribed topics' ids, for coordinators that assign by topic id
/// (KIP-848, share groups); ids not in metadata yet are asked for again now and then.
#[derive(Debug)]
pub(super) struct TopicIds {
    names: HashMap<Uuid, String>,
    ids: HashMap<String, Uuid>,
    /// When metadata may be asked again for unknown ids.
    pub(super) next_resolve: Instant,
}

impl TopicIds {
    pub(super) fn new() -> Self {
        TopicIds {
            names: HashMap::new(),
            ids: HashMap::new(),
            next_resolve: Instant::now(),
        }
    }

    /// `target`'s partitions by name, and how many of its topic ids are not known yet.
    pub(super) fn resolve(
        &mut self,
        io: &mut dyn GroupIo,
        topics: &[String],
        target: &BTreeMap<Uuid, Vec<i32>>,
    ) -> (BTreeSet<TopicPartition>, usize) {
        if target.keys().any(|id| !self.names.contains_key(id))
            && Instant::now() >= self.next_resolve
        {
            self.next_resolve = Instant::now() + RESOLVE_EVERY;
            for (t, id) in io.topic_ids(topics) {
                self.names.insert(id, t.clone());
                self.ids.insert(t, id);
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

    /// The id of topic `name`, once resolved.
    pub(super) fn id(&self, name: &str) -> Option<Uuid> {
        self.ids.get(name).copied()
    }
}

/// Where a member stands in its group, as [`ConsumerStats::members`](crate::consumer::ConsumerStats)
/// shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberState {
    /// Not in the group yet, or rejoining after losing its place.
    #[default]
    Joining,
    /// Giving back partitions the group moved elsewhere, before acknowledging or rejoining.
    Reconciling,
    /// In the group with a settled assignment.
    Stable,
    /// Out of the group because it made no progress for `max_poll_interval`; it rejoins
    /// at its next poll.
    Stalled,
    /// Left (closed).
    Left,
    /// Stopped by an error it cannot recover from.
    Failed,
}

/// One member's standing, for stats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberStatus {
    /// Where it stands.
    pub state: MemberState,
    /// Its member id ("" before the first join).
    pub member_id: String,
    /// The generation (classic) or member epoch (consumer protocol), -1 when none.
    pub generation: i32,
    /// Its static instance id, if any.
    pub instance_id: Option<String>,
}

/// One group protocol, driven by the group thread. Implementations decide; `Ownership`
/// turns their decisions into events; the `Coordinator` does the I/O.
pub(super) trait Membership: Send {
    /// Where the member stands, for stats.
    fn status(&self) -> MemberStatus;

    /// When [`tick`](Self::tick) next has something to do (a heartbeat, a join).
    fn due(&self) -> Instant;

    /// Do what is due now: join, heartbeat, reconcile, acknowledge. An error is fatal.
    fn tick(&mut self, io: &mut dyn GroupIo, own: &mut Ownership) -> Result<(), Error>;

    /// How the member names itself in OffsetCommit / OffsetFetch; `None` while it has no
    /// generation or epoch to commit under.
    fn member(&self) -> Option<GroupMember>;

    /// Whether the group keeps committed offsets for the member's partitions (fetched
    /// before they are announced). A share group keeps its own state per partition.
    fn commits(&self) -> bool {
        true
    }

    /// Heartbeat at the next tick (a commit found the member's epoch stale).
    fn heartbeat_now(&mut self);

    /// A commit was refused in a way that says the member lost its place (`code`).
    fn refused(&mut self, code: KafkaCode, own: &mut Ownership);

    /// The member made no progress for `max_poll_interval`: leave, lose the partitions.
    fn stall(&mut self, io: &mut dyn GroupIo, own: &mut Ownership);

    /// The member made progress again after [`stall`](Self::stall): rejoin.
    fn resume(&mut self);

    /// Leave the group for good (`leave` false: as if crashed).
    fn leave(&mut self, io: &mut dyn GroupIo, own: &mut Ownership, leave: bool);
}

/// `t-0, t-1` for log and error messages.
pub(in crate::consumer) fn names<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> String {
    tps.into_iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}
