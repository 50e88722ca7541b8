//! Group membership, on a thread of its own beside each member.
//!
//! ```text
//!  member thread (Consumer::poll, or a pool's loop)         group thread (kpipe-group-N)
//!   fetch ─▶ records ─▶ caller / handler                     owns the coordinator connection
//!        ◀── Event: Assigned / Revoke / Lost / Failed ───     join, heartbeat, reconcile
//!        ─── Command: Commit / Released / Close ────────▶     commit, acknowledge, leave
//!   progress counter (a poll, a record handled) ─────────▶   max_poll_interval watchdog
//! ```
//!
//! The group thread speaks one of two protocols, each a [`Membership`]: the classic one
//! ([`classic`], eager or cooperative) and the consumer protocol of KIP-848 ([`kip848`]).
//! Both keep the partitions the member holds in one [`Ownership`], which turns their
//! decisions into events for the member thread: partitions to take up (with the group's
//! committed offsets, fetched here), partitions to give back (the member commits what it
//! finished, then says `Released`), and partitions already lost (nothing to commit). So the
//! handler may take as long as `max_poll_interval` on one record: heartbeats never wait for it.

mod classic;
mod coordinator;
mod kip848;
#[cfg(test)]
mod script;
mod share;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use uuid::Uuid;

use crate::client::{
    self, Backoff, Cluster, CommittedOffset, GroupMember, KafkaCode, TopicPartition,
};
use crate::sync::Locked;

use super::config::{ConsumerConfig, GroupProtocol};
use super::error::Error;
use super::shared::Shared;

pub(crate) use coordinator::Coordinator;
use coordinator::GroupIo;

/// The longest the group thread sleeps before looking at its watchdog and due work.
const IDLE: Duration = Duration::from_millis(100);
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

/// What a member's group thread tells it.
#[derive(Debug)]
pub(crate) enum Event {
    /// Partitions to take up, with the group's committed offsets (absent: none committed).
    /// `discovered`: those without one that did not exist when the member first looked at
    /// its topics (added since, or of a topic created since): read from their earliest
    /// offset, whatever the reset policy, so that nothing written to them is skipped.
    Assigned {
        partitions: Vec<TopicPartition>,
        committed: BTreeMap<TopicPartition, CommittedOffset>,
        discovered: BTreeSet<TopicPartition>,
    },
    /// Give these back: stop handing them out, commit what is finished, then send
    /// [`Command::Released`].
    Revoke(Vec<TopicPartition>),
    /// These are gone already (the member was fenced or stalled): drop them, commit nothing.
    Lost(Vec<TopicPartition>),
    /// The member cannot go on.
    Failed(Error),
}

/// What a member tells its group thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Commit these offsets (the next offset to read, per partition); answer on `reply`.
    Commit {
        offsets: BTreeMap<TopicPartition, CommittedOffset>,
        reply: Sender<Result<(), Error>>,
    },
    /// The member gave these revoked partitions up (after committing them).
    Released(Vec<TopicPartition>),
    /// Leave the group (if `leave`) and end.
    Close { leave: bool },
}

/// Where a member stands in its group, as [`ConsumerStats::members`](super::ConsumerStats)
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

/// The partitions a member holds, and the events that tell the member thread about changes.
/// Both protocols decide; this keeps the books, so that a partition is never announced
/// twice, revoked before it was announced, or committed after it was lost.
#[derive(Debug, Default)]
pub(super) struct Ownership {
    /// Partitions given to the member thread, or about to be (see `unannounced`).
    owned: BTreeSet<TopicPartition>,
    /// Owned partitions asked back and not yet released.
    revoking: BTreeSet<TopicPartition>,
    /// Owned partitions whose `Assigned` event waits for their committed offsets.
    unannounced: BTreeSet<TopicPartition>,
    outbox: VecDeque<Event>,
}

impl Ownership {
    /// What the member holds (including what it is giving back).
    pub(super) fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }

    /// No partition is waiting to be released.
    pub(super) fn is_settled(&self) -> bool {
        self.revoking.is_empty()
    }

    /// Take up `partitions` (those not owned already); returns how many were new.
    pub(super) fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> usize {
        let mut added = 0;
        for tp in partitions {
            if self.owned.insert(tp.clone()) {
                self.unannounced.insert(tp);
                added += 1;
            }
        }
        added
    }

    /// Ask for `partitions` back. One the member thread never heard of is dropped at once.
    pub(super) fn revoke(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let mut asked = Vec::new();
        for tp in partitions {
            if !self.owned.contains(&tp) || self.revoking.contains(&tp) {
                continue;
            }
            if self.unannounced.remove(&tp) {
                self.owned.remove(&tp);
            } else {
                self.revoking.insert(tp.clone());
                asked.push(tp);
            }
        }
        if !asked.is_empty() {
            self.outbox.push_back(Event::Revoke(asked));
        }
    }

    /// Ask for everything back (eager rebalancing, leaving).
    pub(super) fn revoke_all(&mut self) {
        let all: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        self.revoke(all);
    }

    /// Everything is gone already: tell the member thread to drop it without committing.
    /// Returns whether anything was held.
    pub(super) fn lose_all(&mut self) -> bool {
        let lost: Vec<TopicPartition> = self.owned.difference(&self.unannounced).cloned().collect();
        let held = !self.owned.is_empty();
        self.owned.clear();
        self.revoking.clear();
        self.unannounced.clear();
        if !lost.is_empty() {
            self.outbox.push_back(Event::Lost(lost));
        }
        held
    }

    /// The member thread released `partitions`.
    pub(super) fn released(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if self.revoking.remove(tp) {
                self.owned.remove(tp);
            }
        }
    }

    /// Partitions owned but not yet announced (their committed offsets are wanted).
    fn unannounced(&self) -> Vec<TopicPartition> {
        self.unannounced.iter().cloned().collect()
    }

    /// Announce those of `partitions` still waiting, with their committed offsets; of
    /// those without one, the partitions `first_seen` did not have are `discovered`.
    fn announce(
        &mut self,
        partitions: &[TopicPartition],
        committed: BTreeMap<TopicPartition, CommittedOffset>,
        first_seen: Option<&FirstSeen>,
    ) {
        let ready: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| self.unannounced.remove(*tp))
            .cloned()
            .collect();
        if !ready.is_empty() {
            let discovered = ready
                .iter()
                .filter(|tp| !committed.contains_key(*tp))
                .filter(|tp| first_seen.is_some_and(|seen| seen.is_new(tp)))
                .cloned()
                .collect();
            self.outbox.push_back(Event::Assigned {
                partitions: ready,
                committed,
                discovered,
            });
        }
    }

    /// Tell the member thread it cannot go on.
    fn fail(&mut self, err: Error) {
        self.outbox.push_back(Event::Failed(err));
    }

    fn take_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.outbox.drain(..)
    }
}

/// The partition counts of the subscribed topics when the member first looked (a topic
/// absent: it did not exist). A partition beyond them was added, or its topic created,
/// while the member ran: nobody in the group can have meant to skip what was written to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FirstSeen(BTreeMap<String, i32>);

impl FirstSeen {
    /// Whether `tp` did not exist at the first look.
    fn is_new(&self, tp: &TopicPartition) -> bool {
        self.0.get(&tp.0).is_none_or(|&count| tp.1 >= count)
    }
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

/// State both threads of a member see.
#[derive(Debug, Default)]
pub(crate) struct Beacon {
    /// Bumped by the member thread whenever it makes progress (a poll, a record handled).
    progress: AtomicU64,
    /// Set by the group thread when the member thread should look up from its records:
    /// events wait, or a commit interval went by. One load per record to check.
    poke: AtomicBool,
    /// Set when closing: a request the coordinator holds (JoinGroup) is given up.
    abort: AtomicBool,
}

impl Beacon {
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
}

/// The member thread's end of its group thread.
pub(crate) struct GroupHandle {
    commands: Sender<Command>,
    events: Receiver<Event>,
    beacon: Arc<Beacon>,
    thread: Option<JoinHandle<()>>,
    /// Progress noted so far (mirrored in the beacon).
    progress: u64,
    /// An event [`wait_event`](Self::wait_event) took off the channel.
    waiting: Option<Event>,
}

impl std::fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupHandle").finish_non_exhaustive()
    }
}

impl GroupHandle {
    /// Start member `idx`'s group thread on `cluster` (its own connections). Under the
    /// consumer protocol, a cluster that lacks it is an error now, not at the first heartbeat.
    pub(crate) fn start(
        idx: usize,
        config: &ConsumerConfig,
        instance_id: Option<String>,
        cluster: Cluster,
        shared: Arc<Shared>,
    ) -> Result<GroupHandle, Error> {
        let beacon = Arc::new(Beacon::default());
        let mut io = Coordinator::new(cluster, &config.group, beacon.clone());
        let member: Box<dyn Membership> = match config.group_protocol {
            GroupProtocol::Classic => {
                Box::new(classic::Classic::new(config, instance_id, shared.clone()))
            }
            GroupProtocol::Consumer => {
                io.check_consumer_protocol()?;
                Box::new(kip848::Kip848::new(config, instance_id, shared.clone()))
            }
            GroupProtocol::Share => {
                return Err(Error::Misuse(
                    "a share group member is started with GroupHandle::start_share",
                ))
            }
        };
        Self::spawn(idx, config, member, io, beacon, shared)
    }

    /// Start share member `idx`'s group thread, as `member_id` (the id its ShareFetch
    /// requests carry too). A cluster without share groups is an error now.
    pub(crate) fn start_share(
        idx: usize,
        config: &ConsumerConfig,
        member_id: String,
        cluster: Cluster,
        shared: Arc<Shared>,
    ) -> Result<GroupHandle, Error> {
        let beacon = Arc::new(Beacon::default());
        let mut io = Coordinator::new(cluster, &config.group, beacon.clone());
        io.check_share_protocol()?;
        let member = Box::new(share::Share::new(config, member_id, shared.clone()));
        Self::spawn(idx, config, member, io, beacon, shared)
    }

    fn spawn(
        idx: usize,
        config: &ConsumerConfig,
        member: Box<dyn Membership>,
        io: Coordinator,
        beacon: Arc<Beacon>,
        shared: Arc<Shared>,
    ) -> Result<GroupHandle, Error> {
        let (commands, commands_rx) = crossbeam_channel::unbounded();
        let (events_tx, events) = crossbeam_channel::unbounded();
        let mut driver = Driver {
            idx,
            member,
            io,
            own: Ownership::default(),
            commands: commands_rx,
            events: events_tx,
            beacon: beacon.clone(),
            shared,
            max_poll_interval: config.max_poll_interval,
            commit_interval: config.commit_interval,
            next_poke: Instant::now() + config.commit_interval,
            seen: (0, Instant::now()),
            stalled: false,
            failed: false,
            offsets_backoff: config.client.backoff(),
            retry_offsets_at: Instant::now(),
            backoff_template: config.client.backoff(),
            topics: config.topics.iter().cloned().collect(),
            first_seen: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("kpipe-group-{idx}"))
            .spawn(move || driver.run())
            .map_err(|e| Error::Config {
                field: "threads",
                reason: format!("cannot start the group thread of member {idx}: {e}"),
            })?;
        Ok(GroupHandle {
            commands,
            events,
            beacon,
            thread: Some(thread),
            progress: 0,
            waiting: None,
        })
    }

    /// Note progress (a poll, a record handled), for the `max_poll_interval` watchdog: a
    /// plain store, this thread being the only writer.
    pub(crate) fn progress(&mut self) {
        self.progress += 1;
        self.beacon.progress.store(self.progress, Ordering::Relaxed);
    }

    /// Whether the group thread asked the member to look up from its records (events
    /// wait, or a commit is due); cheap enough to ask after every record. Clears the flag.
    pub(crate) fn poked(&self) -> bool {
        self.beacon.poke.load(Ordering::Relaxed) && self.beacon.poke.swap(false, Ordering::Relaxed)
    }

    /// Wait until an event comes or `deadline` passes (a member with nothing to fetch waits
    /// for its assignment this way, not a fixed sleep). The event is kept for
    /// [`try_event`](Self::try_event).
    pub(crate) fn wait_event(&mut self, deadline: Instant) {
        if self.waiting.is_some() {
            return;
        }
        match self.events.recv_deadline(deadline) {
            Ok(event) => self.waiting = Some(event),
            Err(RecvTimeoutError::Timeout) => {}
            // The group thread is gone (it reported why, or panicked): nothing will come.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()))
            }
        }
    }

    /// The next event, if one waits.
    pub(crate) fn try_event(&mut self) -> Option<Event> {
        self.waiting.take().or_else(|| self.events.try_recv().ok())
    }

    /// Start a commit; the answer comes on the returned channel.
    pub(crate) fn commit(
        &self,
        offsets: BTreeMap<TopicPartition, CommittedOffset>,
    ) -> Receiver<Result<(), Error>> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self
            .commands
            .send(Command::Commit { offsets, reply })
            .is_err()
        {
            // The group thread is gone; the receiver reports it as disconnected.
        }
        answer
    }

    /// Say that revoked partitions were given up.
    pub(crate) fn released(&self, partitions: Vec<TopicPartition>) {
        let _ = self.commands.send(Command::Released(partitions));
    }

    /// Leave the group (if `leave`) and wait up to `deadline` for the group thread to end.
    /// Returns whether it ended in time (if not, it ends on its own once its request
    /// returns).
    pub(crate) fn close(&mut self, leave: bool, deadline: Instant) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        self.beacon.abort.store(true, Ordering::Relaxed);
        let _ = self.commands.send(Command::Close { leave });
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if thread.is_finished() {
            if thread.join().is_err() {
                log::error!("a consumer group thread panicked");
            }
            true
        } else {
            false
        }
    }
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        // Best effort: the thread sees the channel close and leaves on its own.
        self.beacon.abort.store(true, Ordering::Relaxed);
    }
}

/// The group thread.
struct Driver {
    idx: usize,
    member: Box<dyn Membership>,
    io: Coordinator,
    own: Ownership,
    commands: Receiver<Command>,
    events: Sender<Event>,
    beacon: Arc<Beacon>,
    shared: Arc<Shared>,
    max_poll_interval: Duration,
    commit_interval: Duration,
    /// When the member is next poked to commit.
    next_poke: Instant,
    /// The progress count last seen, and when it last changed.
    seen: (u64, Instant),
    stalled: bool,
    failed: bool,
    /// Retry policy for committed-offset look-ups that fail.
    offsets_backoff: Backoff,
    retry_offsets_at: Instant,
    backoff_template: Backoff,
    /// The subscribed topics.
    topics: BTreeSet<String>,
    /// Their shape at the member's first look (taken at the start, else at the first
    /// announcement that can).
    first_seen: Option<FirstSeen>,
}

impl Driver {
    fn run(&mut self) {
        self.first_look();
        loop {
            let now = Instant::now();
            let mut wait = IDLE;
            if !self.failed && !self.stalled {
                wait = wait.min(self.member.due().saturating_duration_since(now));
            }
            match self.commands.recv_timeout(wait) {
                Ok(cmd) => {
                    if !self.command(cmd) {
                        return;
                    }
                    while let Ok(cmd) = self.commands.try_recv() {
                        if !self.command(cmd) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // The member is gone without closing (dropped): leave, as a close would.
                    self.member.leave(&mut self.io, &mut self.own, true);
                    self.publish();
                    return;
                }
            }
            if self.failed {
                continue;
            }
            self.watchdog();
            if !self.stalled {
                if let Err(e) = self.member.tick(&mut self.io, &mut self.own) {
                    log::error!("consumer {}: {e}", self.idx);
                    self.failed = true;
                    self.own.fail(e);
                }
                self.announce();
            }
            self.flush();
        }
    }

    /// Handle one command; false when the thread should end.
    fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Commit { offsets, reply } => {
                let result = self.commit(offsets);
                let _ = reply.send(result);
            }
            Command::Released(partitions) => self.own.released(&partitions),
            Command::Close { leave } => {
                self.member.leave(&mut self.io, &mut self.own, leave);
                self.publish();
                return false;
            }
        }
        self.flush();
        true
    }

    /// The `max_poll_interval` watchdog: a member thread that stopped making progress loses
    /// its partitions (so they move to members that work), and rejoins when it moves again.
    fn watchdog(&mut self) {
        let count = self.beacon.progress.load(Ordering::Relaxed);
        let now = Instant::now();
        if count != self.seen.0 {
            self.seen = (count, now);
            if self.stalled {
                log::info!("consumer {}: making progress again; rejoining", self.idx);
                self.stalled = false;
                self.member.resume();
            }
            return;
        }
        let quiet = now - self.seen.1;
        if !self.stalled && quiet > self.max_poll_interval {
            log::warn!(
                "consumer {}: no progress for {quiet:?}, over max_poll_interval ({:?}): leaving the group so its partitions move (the handler is too slow, or poll is not called); it rejoins when it moves again",
                self.idx,
                self.max_poll_interval
            );
            self.stalled = true;
            self.member.stall(&mut self.io, &mut self.own);
        }
    }

    /// Note the subscribed topics' partition counts, once (see [`FirstSeen`]).
    fn first_look(&mut self) {
        if self.first_seen.is_some() {
            return;
        }
        match self.io.partition_counts(&self.topics) {
            Ok(counts) => self.first_seen = Some(FirstSeen(counts)),
            Err(e) => log::debug!("consumer {}: partition counts: {e}", self.idx),
        }
    }

    /// Fetch the committed offsets of newly assigned partitions and announce them.
    fn announce(&mut self) {
        let waiting = self.own.unannounced();
        if waiting.is_empty() || Instant::now() < self.retry_offsets_at {
            return;
        }
        if !self.member.commits() {
            self.own.announce(&waiting, BTreeMap::new(), None);
            return;
        }
        let Some(member) = self.member.member() else {
            return;
        };
        match self.io.committed(Some(&member), &waiting) {
            Ok(committed) => {
                self.offsets_backoff = self.backoff_template.clone();
                // Not known yet (the cluster did not answer at the start): what is assigned
                // now is taken as what existed.
                self.first_look();
                self.own
                    .announce(&waiting, committed, self.first_seen.as_ref());
            }
            Err(e) => {
                log::debug!("consumer {}: committed offsets: {e}", self.idx);
                if let Some(code) = e.kafka_code() {
                    self.member.refused(code, &mut self.own);
                }
                self.retry_offsets_at = Instant::now() + self.offsets_backoff.next_delay();
            }
        }
    }

    /// Commit `offsets` for the partitions this member still owns.
    fn commit(&mut self, offsets: BTreeMap<TopicPartition, CommittedOffset>) -> Result<(), Error> {
        let (mine, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = offsets
            .into_iter()
            .partition(|(tp, _)| self.own.owned().contains(tp));
        let mut result = Ok(());
        if !gone.is_empty() {
            result = Err(Error::CommitFailed {
                reason: format!(
                    "{} are no longer assigned to this member; their next owner handles the records again",
                    names(gone.keys())
                ),
            });
        }
        if mine.is_empty() {
            return result;
        }
        let outcome = self.try_commit(&mine).or_else(|e| match e.kafka_code() {
            // The coordinator moved our epoch on since we last heard: heartbeat, then retry.
            Some(KafkaCode::StaleMemberEpoch) => {
                self.member.heartbeat_now();
                let _ = self.member.tick(&mut self.io, &mut self.own);
                self.try_commit(&mine)
            }
            _ => Err(e),
        });
        match outcome {
            Ok(()) => result,
            Err(e) => {
                self.shared.commit_failures.add(1);
                // A coordinator moving fails commits until it is found again: not news.
                if e.is_retriable() {
                    log::debug!("consumer {}: commit failed: {e}", self.idx);
                } else {
                    log::warn!("consumer {}: commit failed: {e}", self.idx);
                }
                if let Some(code) = e.kafka_code() {
                    self.member.refused(code, &mut self.own);
                }
                Err(Error::CommitFailed {
                    reason: e.to_string(),
                })
            }
        }
    }

    /// One OffsetCommit; any refused partition fails it (the others are recorded).
    fn try_commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    ) -> client::Result<()> {
        let Some(member) = self.member.member() else {
            return Err(client::Error::Misuse(
                "the member is between generations (joining or rebalancing); the commit waits for the next one".into(),
            ));
        };
        let results = self.io.commit(&member, offsets)?;
        let mut first_error = None;
        let mut committed = self.shared.committed.locked();
        let mut progress = self.shared.progress.locked();
        for (tp, r) in results {
            match r {
                Ok(()) => {
                    if let Some(&o) = offsets.get(&tp) {
                        committed.insert(tp.clone(), o.offset);
                        if let Some(p) = progress.get_mut(&tp) {
                            p.committed = o.offset;
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Send what the protocol decided to the member thread, and publish the member's status.
    fn flush(&mut self) {
        let mut sent = false;
        for event in self.own.take_events() {
            sent = true;
            if self.events.send(event).is_err() {
                break; // the member is gone; the next recv notices
            }
        }
        let now = Instant::now();
        if now >= self.next_poke {
            self.next_poke = now + self.commit_interval;
            sent = true;
        }
        if sent {
            self.beacon.poke.store(true, Ordering::Relaxed);
        }
        self.publish();
    }

    fn publish(&mut self) {
        let mut status = self.member.status();
        if self.stalled {
            status.state = MemberState::Stalled;
        }
        if self.failed {
            status.state = MemberState::Failed;
        }
        self.shared.members.locked().insert(self.idx, status);
    }
}

/// `t-0, t-1` for log and error messages.
pub(super) fn names<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> String {
    tps.into_iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    fn events(own: &mut Ownership) -> Vec<String> {
        own.take_events()
            .map(|e| match e {
                Event::Assigned { partitions, .. } => format!("assigned {partitions:?}"),
                Event::Revoke(p) => format!("revoke {p:?}"),
                Event::Lost(p) => format!("lost {p:?}"),
                Event::Failed(e) => format!("failed {e}"),
            })
            .collect()
    }

    #[test]
    fn partitions_are_announced_once_with_their_offsets() {
        let mut own = Ownership::default();
        assert_eq!(own.assign([tp(0), tp(1)]), 2);
        assert_eq!(own.assign([tp(1)]), 0, "owned already");
        assert!(
            events(&mut own).is_empty(),
            "nothing before the offsets are known"
        );
        own.announce(
            &[tp(0), tp(1)],
            BTreeMap::from([(tp(0), CommittedOffset::at(7))]),
            None,
        );
        own.announce(&[tp(0)], BTreeMap::new(), None);
        assert_eq!(events(&mut own), [r#"assigned [("t", 0), ("t", 1)]"#]);
        assert!(own.unannounced().is_empty());
    }

    #[test]
    fn revoking_what_was_never_announced_needs_no_release() {
        let mut own = Ownership::default();
        own.assign([tp(0), tp(1)]);
        own.announce(&[tp(0)], BTreeMap::new(), None);
        events(&mut own);
        own.revoke([tp(0), tp(1), tp(9)]);
        assert_eq!(events(&mut own), [r#"revoke [("t", 0)]"#]);
        assert!(!own.is_settled());
        assert!(!own.owned().contains(&tp(1)), "dropped at once");
        own.revoke([tp(0)]);
        assert!(events(&mut own).is_empty(), "asked once");
        own.released(&[tp(0)]);
        assert!(own.is_settled() && own.owned().is_empty());
    }

    #[test]
    fn lost_partitions_are_dropped_and_never_released() {
        let mut own = Ownership::default();
        own.assign([tp(0), tp(1), tp(2)]);
        own.announce(&[tp(0), tp(1)], BTreeMap::new(), None);
        own.revoke([tp(1)]);
        events(&mut own);
        assert!(own.lose_all());
        assert_eq!(events(&mut own), [r#"lost [("t", 0), ("t", 1)]"#]);
        assert!(own.is_settled() && own.owned().is_empty());
        own.released(&[tp(1)]);
        assert!(own.owned().is_empty(), "a late release changes nothing");
        assert!(!own.lose_all(), "nothing held");
        assert!(events(&mut own).is_empty());
    }

    #[test]
    fn partitions_that_did_not_exist_at_the_first_look_are_discovered() {
        let seen = FirstSeen(BTreeMap::from([("t".to_string(), 2)]));
        let mut own = Ownership::default();
        let u = ("u".to_string(), 0);
        own.assign([tp(1), tp(2), tp(3), u.clone()]);
        let committed = BTreeMap::from([(tp(3), CommittedOffset::at(5))]);
        own.announce(&[tp(1), tp(2), tp(3), u.clone()], committed, Some(&seen));
        let Some(Event::Assigned { discovered, .. }) = own.take_events().next() else {
            panic!("no assignment")
        };
        // t-1 existed; t-3 was added but the group committed an offset for it; topic u
        // was created after the first look.
        assert_eq!(discovered, BTreeSet::from([tp(2), u]));
    }
}
