//! The group thread ([`Driver`]), and the member thread's handle on it ([`GroupHandle`]):
//! commands one way, events the other, progress and pokes through the [`Beacon`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::client::{self, Backoff, Cluster, CommittedOffset, KafkaCode, TopicPartition};
use crate::sync::Locked;

use super::super::config::{ConsumerConfig, GroupProtocol};
use super::super::error::Error;
use super::super::shared::Shared;
use super::beacon::Beacon;
use super::coordinator::{Coordinator, GroupIo};
use super::membership::{names, MemberState, Membership};
use super::ownership::{Event, FirstSeen, Ownership};
use super::{classic, kip848, share};

/// The longest the group thread sleeps before looking at its watchdog and due work.
const IDLE: Duration = Duration::from_millis(100);

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
