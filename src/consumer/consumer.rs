//! One group member driven by the caller's thread: [`Consumer`]. The pool runs one of these
//! per thread.
//!
//! ```text
//!  caller ─poll─▶ events (assigned / revoked / lost ─▶ listener) ─▶ records from the buffer
//!                 ─▶ or: receive the prefetched fetch, send the next ─▶ records
//!  caller ─commit / seek / pause / resume─▶ this member's partitions
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::client::{
    self, Backoff, Batches, Cluster, FetchInFlight, FetchTarget, FetchedRecord, GroupMetadata,
    IsolationLevel, KafkaCode, OffsetSpec, TopicPartition,
};
use crate::sync::Locked;

use super::config::{ConsumerConfig, OffsetReset};
use super::group::{names, Event, GroupHandle, MemberStatus};
use super::{ConsumedRecord, ConsumerStats, Error, PartitionProgress, Shared};

/// Told of rebalances, on the caller's thread, from inside [`Consumer::poll`] (or a pool's
/// loop). Each method gets the consumer, to look at positions, seek or commit.
///
/// When partitions are revoked, `on_revoked` runs before the consumer commits them (with
/// [`ConsumerConfig::auto_commit`]) and before they are given back, so it can finish work
/// and commit; nothing of theirs is handed out after it. `on_lost` runs when they are gone
/// already (the member was fenced, or stalled past `max_poll_interval`): committing them
/// then fails. By default `on_lost` calls `on_revoked`, as in the Java client.
pub trait RebalanceListener: Send {
    /// These partitions are now this member's; positions are set (committed offset, or the
    /// reset policy), and `seek` may move them.
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }
    /// These partitions are being given back.
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }
    /// These partitions were lost without a chance to commit.
    fn on_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.on_revoked(consumer, partitions);
    }
}

/// Who decides which records are finished (and so committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The caller: what one `poll` handed out is finished when `poll` is called again (or at
    /// `commit`).
    Pull,
    /// A pool's handler, record by record.
    Pool,
}

/// One assigned partition.
#[derive(Debug)]
struct Part {
    topic: Arc<str>,
    /// Next offset to fetch; -1 until the reset policy has given one.
    position: i64,
    /// Next offset to hand out.
    handed: i64,
    /// Next offset the caller or handler finished: what a commit commits.
    done: i64,
    /// Last offset the coordinator confirmed committed, -1 if none.
    committed: i64,
    /// Last offset asked to commit (confirmed or in flight), -1 if none.
    requested: i64,
    /// Offsets skipped with nothing to hand out (markers, aborted transactions) while
    /// records before them were still being handled: once `done` reaches the start, it
    /// moves to the end.
    skipped: Option<(i64, i64)>,
    paused: bool,
}

/// One partition's records from one fetch, not yet decoded.
#[derive(Debug)]
struct Fetched {
    tp: TopicPartition,
    topic: Arc<str>,
    batches: Batches,
}

/// An interval commit in flight: its answer, and what it asked.
type PendingCommit = (Receiver<Result<(), Error>>, BTreeMap<TopicPartition, i64>);

/// The records of the batch being handed out.
#[derive(Debug)]
struct Current {
    tp: TopicPartition,
    topic: Arc<str>,
    records: std::vec::IntoIter<FetchedRecord>,
}

/// A Kafka consumer group member driven by the caller's thread, the way the Go design's
/// `kafka.Reader`, the Java client's `KafkaConsumer` and librdkafka's consumer are: call
/// [`poll`](Self::poll) in a loop, process what it returns, and commit.
///
/// ```no_run
/// use std::time::Duration;
/// use kpipe::{Consumer, ConsumerConfig};
///
/// let mut config = ConsumerConfig::new("localhost:9092", "readers", &["events"]);
/// config.offset_reset = kpipe::consumer::OffsetReset::Earliest;
/// let mut consumer = Consumer::new(config)?;
/// for _ in 0..10 {
///     for record in consumer.poll(Duration::from_millis(500))? {
///         println!("{}-{}@{}", record.topic, record.partition, record.offset);
///     }
/// }
/// consumer.close(Duration::from_secs(30))?; // commits what was handed out, leaves the group
/// # Ok::<(), kpipe::consumer::Error>(())
/// ```
///
/// Group membership (joins, heartbeats, rebalances) runs on a thread of the consumer's own
/// (`kpipe-group-N`), so the caller may take as long as `max_poll_interval` between polls.
/// Rebalances are acted on inside `poll`, where the [`RebalanceListener`] is called.
pub struct Consumer {
    idx: usize,
    config: ConsumerConfig,
    mode: Mode,
    cluster: Cluster,
    group: GroupHandle,
    shared: Arc<Shared>,
    parts: BTreeMap<TopicPartition, Part>,
    /// Fetched partitions' data, in the order it came.
    buffer: VecDeque<Fetched>,
    current: Option<Current>,
    decoded: Vec<FetchedRecord>,
    prefetched: Option<FetchInFlight>,
    fetch_backoff: Backoff,
    retry_fetch_at: Instant,
    listener: Option<Box<dyn RebalanceListener>>,
    in_listener: bool,
    last_commit: Instant,
    /// The interval commit in flight.
    pending_commit: Option<PendingCommit>,
    /// Bumped whenever the assignment changes.
    revision: u64,
    /// Why the member stopped, once it has.
    stopped: Option<String>,
    started: Instant,
    closed: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.config.group)
            .field("assignment", &self.parts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Join `config.group` as one member reading `config.topics`. Fails at once if the
    /// brokers cannot be reached, a topic does not exist, or the group protocol asked for is
    /// not offered; the group is joined in the background (the first `poll` calls see the
    /// assignment arrive).
    pub fn new(config: ConsumerConfig) -> Result<Consumer, Error> {
        Self::build(config, None)
    }

    /// [`new`](Self::new), with a listener told of every rebalance.
    pub fn with_listener(
        config: ConsumerConfig,
        listener: impl RebalanceListener + 'static,
    ) -> Result<Consumer, Error> {
        Self::build(config, Some(Box::new(listener)))
    }

    fn build(
        config: ConsumerConfig,
        listener: Option<Box<dyn RebalanceListener>>,
    ) -> Result<Consumer, Error> {
        config.validate()?;
        let cluster = connect_checked(&config)?;
        let shared = Arc::new(Shared::new(config.shutdown.clone()));
        let instance_id = config.group_instance_id.clone();
        let mut consumer = Consumer::member(0, config, instance_id, cluster, shared, Mode::Pull)?;
        consumer.listener = listener;
        Ok(consumer)
    }

    /// Member `idx` of a pool (or the one member of a `Consumer`), on `cluster`; its group
    /// thread gets connections of its own.
    pub(crate) fn member(
        idx: usize,
        mut config: ConsumerConfig,
        instance_id: Option<String>,
        cluster: Cluster,
        shared: Arc<Shared>,
        mode: Mode,
    ) -> Result<Consumer, Error> {
        // Batches are expanded one at a time, as they are handed out.
        config.fetch.decode_lazily = true;
        config.fetch.isolation = config.isolation_level;
        let group_cluster =
            Cluster::connect_with(config.client.clone(), cluster.connector().clone())?;
        let group = GroupHandle::start(idx, &config, instance_id, group_cluster, shared.clone())?;
        shared.assignments.locked().insert(idx, Vec::new());
        let now = Instant::now();
        Ok(Consumer {
            idx,
            fetch_backoff: config.client.backoff(),
            config,
            mode,
            cluster,
            group,
            shared,
            parts: BTreeMap::new(),
            buffer: VecDeque::new(),
            current: None,
            decoded: Vec::new(),
            prefetched: None,
            retry_fetch_at: now,
            listener: None,
            in_listener: false,
            last_commit: now,
            pending_commit: None,
            revision: 0,
            stopped: None,
            started: now,
            closed: false,
        })
    }

    /// Records, up to `max_poll_records`, waiting at most `timeout` for some to arrive
    /// (an empty result means none did). Rebalances are acted on here (the listener is called
    /// from here), and with `auto_commit` what earlier polls handed out is committed every
    /// `commit_interval`: calling `poll` again says those records are finished.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, Error> {
        if self.in_listener {
            return Err(Error::Misuse(
                "poll cannot be called from inside a rebalance listener",
            ));
        }
        if self.mode == Mode::Pull {
            for p in self.parts.values_mut() {
                p.done = p.handed;
            }
        }
        let mut out = Vec::new();
        self.fill(&mut out, self.config.max_poll_records, timeout)?;
        self.shared.handled.add(out.len() as u64);
        Ok(out)
    }

    /// Commit every record handed out so far (calling this says they are processed), and
    /// wait for the coordinator's answer.
    pub fn commit(&mut self) -> Result<(), Error> {
        let offsets: BTreeMap<TopicPartition, i64> = self
            .parts
            .iter()
            .filter(|(_, p)| p.position >= 0 && p.handed != p.committed)
            .map(|(tp, p)| (tp.clone(), p.handed))
            .collect();
        for p in self.parts.values_mut() {
            p.done = p.handed;
        }
        self.commit_sync(offsets)
    }

    /// Commit these offsets (the next offset to read, per partition) and wait for the
    /// coordinator's answer. Partitions not assigned to this member are refused.
    pub fn commit_offsets(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), Error> {
        for (t, p) in offsets.keys() {
            self.part(t, *p)?;
        }
        self.commit_sync(offsets.clone())
    }

    /// Read `topic`-`partition` from `offset` on: records already fetched past it are
    /// dropped, and the next `poll` fetches from there.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), Error> {
        if offset < 0 {
            return Err(Error::Config {
                field: "offset",
                reason: format!("seek to {offset}: offsets are 0 or more"),
            });
        }
        let tp = self.part(topic, partition)?;
        self.forget_data(std::slice::from_ref(&tp));
        let p = self.parts.get_mut(&tp).expect("checked by part()");
        (p.position, p.handed, p.done) = (offset, offset, offset);
        p.skipped = None;
        self.publish_position(&tp);
        Ok(())
    }

    /// Stop fetching these partitions (they stay assigned; records already fetched for them
    /// are dropped and fetched again after [`resume`](Self::resume)).
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        for (t, p) in partitions {
            self.part(t, *p)?;
        }
        self.forget_data(partitions);
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = true;
                p.position = p.handed;
            }
        }
        Ok(())
    }

    /// Fetch these paused partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        for (t, p) in partitions {
            self.part(t, *p)?;
        }
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = false;
            }
        }
        Ok(())
    }

    /// The partitions paused now.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, p)| p.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The partitions assigned to this member now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// The next offset `poll` hands out for `topic`-`partition`, if it is assigned (and its
    /// start is known).
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts
            .get(&(topic.to_owned(), partition))
            .filter(|p| p.position >= 0)
            .map(|p| p.handed)
    }

    /// The offset last committed by this member for `topic`-`partition` (or found committed
    /// when it was assigned).
    pub fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts
            .get(&(topic.to_owned(), partition))
            .map(|p| p.committed)
            .filter(|&c| c >= 0)
    }

    /// This member's standing in its group (state, member id, generation or epoch).
    pub fn member_status(&self) -> MemberStatus {
        self.shared
            .members
            .locked()
            .get(&self.idx)
            .cloned()
            .unwrap_or_default()
    }

    /// This member's group metadata for
    /// [`Producer::send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction):
    /// the group, the generation (classic protocol) or member epoch (KIP-848), the member
    /// id and the static instance id. Read it just before sending offsets: the group
    /// coordinator refuses offsets from a member it has moved on from (KIP-447), so a
    /// member that lost its partitions cannot commit them in a transaction.
    pub fn group_metadata(&self) -> GroupMetadata {
        let status = self.member_status();
        GroupMetadata {
            group_id: self.config.group.clone(),
            generation_id: status.generation,
            member_id: status.member_id,
            group_instance_id: status.instance_id,
        }
    }

    /// Counters and per-partition progress (`handled` counts records handed out).
    pub fn stats(&self) -> ConsumerStats {
        self.shared.snapshot(self.started.elapsed())
    }

    /// Give the partitions up (the listener's `on_revoked`, then, with `auto_commit`, a
    /// commit of what was handed out), leave the group, and stop, within `timeout`.
    pub fn close(mut self, timeout: Duration) -> Result<(), Error> {
        self.shutdown(Instant::now() + timeout)
    }

    // -----------------------------------------------------------------------------------
    // For the pool
    // -----------------------------------------------------------------------------------

    /// Set the rebalance listener (a pool member's own).
    pub(crate) fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// These offsets were committed by a transaction (an exactly-once member's): the
    /// books and the stats take them as committed.
    pub(crate) fn committed_by_transaction(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        self.record_commit(offsets, true);
        for (tp, &o) in offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                p.done = p.done.max(o);
            }
        }
        let mut committed = self.shared.committed.locked();
        let mut progress = self.shared.progress.locked();
        for (tp, &o) in offsets {
            committed.insert(tp.clone(), o);
            if let Some(p) = progress.get_mut(tp) {
                p.committed = o;
            }
        }
    }

    /// Note progress for the `max_poll_interval` watchdog (a record handled).
    pub(crate) fn note_progress(&mut self) {
        self.group.progress();
    }

    /// Whether [`service`](Self::service) has something to do (group events, a commit):
    /// one atomic load, for between records.
    pub(crate) fn service_due(&self) -> bool {
        self.group.poked()
    }

    /// Changes whenever the assignment does.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether `topic`-`partition` is assigned to this member.
    pub(crate) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.parts
            .keys()
            .any(|(t, p)| *p == partition && t == topic)
    }

    /// Records of `topic`-`partition` below `next` are finished (the pool's handler).
    pub(crate) fn finished(&mut self, topic: &str, partition: i32, next: i64) {
        if let Some(p) = self.parts.get_mut(&(topic.to_owned(), partition)) {
            p.done = p.done.max(next);
            if let Some((from, to)) = p.skipped {
                if p.done >= from {
                    p.done = p.done.max(to);
                    p.skipped = None;
                }
            }
        }
    }

    /// Records for the caller: at least one unless `timeout` passes first.
    pub(crate) fn fill(
        &mut self,
        out: &mut Vec<ConsumedRecord>,
        max: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            self.group.progress();
            self.service()?;
            self.take_records(out, max);
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(());
            }
            // Wait in slices, so rebalances are acted on while nothing arrives.
            self.fetch(deadline.min(now + Duration::from_millis(100)))?;
        }
    }

    /// Act on group events and commit on the interval.
    pub(crate) fn service(&mut self) -> Result<(), Error> {
        if let Some(why) = &self.stopped {
            return Err(Error::Stopped(why.clone()));
        }
        while let Some(event) = self.group.try_event() {
            match event {
                Event::Assigned {
                    partitions,
                    committed,
                } => self.assigned(partitions, committed)?,
                Event::Revoke(partitions) => self.revoke(partitions),
                Event::Lost(partitions) => self.lose(partitions),
                Event::Failed(e) => {
                    self.stopped = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        self.reset_unpositioned()?;
        self.settle_pending_commit();
        if self.auto_commits() && self.last_commit.elapsed() >= self.config.commit_interval {
            self.commit_async();
        }
        Ok(())
    }

    /// Stop within `deadline`: give the partitions up, commit, leave.
    pub(crate) fn shutdown(&mut self, deadline: Instant) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.prefetched = None; // its connections are dropped with the cluster
        let all = self.assignment();
        let mut result = Ok(());
        if self.stopped.is_none() {
            if !all.is_empty() {
                self.notify(|l, c| l.on_revoked(c, &all));
            }
            if self.auto_commits() {
                if self.mode == Mode::Pull {
                    for p in self.parts.values_mut() {
                        p.done = p.handed;
                    }
                }
                let offsets = self.uncommitted(|p| p.committed);
                let left = deadline.saturating_duration_since(Instant::now());
                result = self.commit_within(offsets, left);
            }
        }
        if !self.group.close(self.config.leave_group_on_close, deadline) {
            log::warn!(
                "consumer {}: the group thread did not finish by the close deadline",
                self.idx
            );
        }
        self.drop_parts(&all);
        result
    }

    // -----------------------------------------------------------------------------------
    // Records
    // -----------------------------------------------------------------------------------

    /// Hand out buffered records, up to `max` in `out`.
    fn take_records(&mut self, out: &mut Vec<ConsumedRecord>, max: usize) {
        while out.len() < max {
            let Some(current) = self.current.as_mut() else {
                if !self.decode_next() {
                    return;
                }
                continue;
            };
            let mut next = None;
            for rec in current.records.by_ref() {
                next = Some(rec.offset + 1);
                out.push(ConsumedRecord {
                    topic: current.topic.clone(),
                    partition: current.tp.1,
                    offset: rec.offset,
                    timestamp: rec.timestamp,
                    key: rec.key,
                    value: rec.value,
                    headers: rec.headers,
                });
                if out.len() >= max {
                    break;
                }
            }
            let tp = current.tp.clone();
            if current.records.len() == 0 {
                self.current = None;
            }
            if let Some(next) = next {
                if let Some(p) = self.parts.get_mut(&tp) {
                    p.handed = p.handed.max(next);
                }
                self.publish_position(&tp);
            }
        }
    }

    /// Decode the next batch of the buffer into `current`; false when the buffer is empty.
    fn decode_next(&mut self) -> bool {
        loop {
            let Some(front) = self.buffer.front_mut() else {
                return false;
            };
            self.decoded.clear();
            match front.batches.next_batch(&mut self.decoded) {
                Ok(Some(next)) => {
                    if self.decoded.is_empty() {
                        // A control batch, an aborted transaction's, or records below the
                        // position: nothing to hand out, but the position moves past it (as
                        // the Java consumer's does), so that a commit after the last record
                        // of a transaction lands past its marker and lag can reach 0.
                        let tp = front.tp.clone();
                        self.skip_to(&tp, next);
                        continue;
                    }
                    let records = std::mem::take(&mut self.decoded).into_iter();
                    self.current = Some(Current {
                        tp: front.tp.clone(),
                        topic: front.topic.clone(),
                        records,
                    });
                    return true;
                }
                Ok(None) => {
                    self.buffer.pop_front();
                }
                Err(e) => {
                    // A corrupt batch: fetch the partition again from what was handed out,
                    // after a pause.
                    let tp = front.tp.clone();
                    self.shared.fetch_errors.add(1);
                    self.forget_data(std::slice::from_ref(&tp));
                    if let Some(p) = self.parts.get_mut(&tp) {
                        log::warn!(
                            "consumer {}: {}-{}: {e}; fetching again from {}",
                            self.idx,
                            tp.0,
                            tp.1,
                            p.handed
                        );
                        p.position = p.handed;
                    }
                    self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
                }
            }
        }
    }

    /// Nothing to hand out of `tp` below `next`: move past it. What was finished before
    /// stays finished past it too (nothing in between needs handling).
    fn skip_to(&mut self, tp: &TopicPartition, next: i64) {
        let Some(p) = self.parts.get_mut(tp) else {
            return;
        };
        if next <= p.handed {
            return;
        }
        if p.done == p.handed {
            p.done = next;
        } else {
            p.skipped = match p.skipped {
                Some((from, to)) if to == p.handed => Some((from, next)),
                _ => Some((p.handed, next)),
            };
        }
        p.handed = next;
        self.publish_position(tp);
    }

    /// Drop fetched data of `partitions` (revoked, paused, sought); a fetch in flight for
    /// them is ignored when it arrives (its offsets no longer match).
    fn forget_data(&mut self, partitions: &[TopicPartition]) {
        self.buffer.retain(|f| !partitions.contains(&f.tp));
        if self
            .current
            .as_ref()
            .is_some_and(|c| partitions.contains(&c.tp))
        {
            self.current = None;
        }
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.position = p.handed;
            }
        }
    }

    /// Wait for fetched data until `deadline`: the prefetched request's, or a new one's.
    fn fetch(&mut self, deadline: Instant) -> Result<(), Error> {
        let now = Instant::now();
        if now < self.retry_fetch_at {
            std::thread::sleep(self.retry_fetch_at.min(deadline) - now);
            return Ok(());
        }
        let inflight = match self.prefetched.take() {
            Some(f) => f,
            None => {
                let targets = self.targets();
                if targets.is_empty() {
                    // Nothing to fetch (nothing assigned yet, or all paused): wait for the
                    // group thread's news, so an assignment is taken up as it comes.
                    self.group.wait_event(deadline);
                    return Ok(());
                }
                match self.cluster.send_fetch(&self.config.fetch, &targets) {
                    Ok(f) => f,
                    Err(e) => {
                        self.fetch_failed(&e);
                        return Ok(());
                    }
                }
            }
        };
        if !self.cluster.fetch_ready(&inflight, deadline) {
            self.prefetched = Some(inflight);
            return Ok(());
        }
        let asked: HashMap<TopicPartition, i64> = inflight
            .targets()
            .map(|t| ((t.topic.clone(), t.partition), t.offset))
            .collect();
        let results = match self.cluster.receive_fetch(&self.config.fetch, inflight) {
            Ok(r) => r,
            Err(e) => {
                self.fetch_failed(&e);
                return Ok(());
            }
        };
        self.fetch_backoff = self.config.client.backoff();
        let mut errors = 0;
        for r in results {
            let tp = (r.topic, r.partition);
            // Skip what no longer matches: revoked or paused partitions, moved positions.
            let Some(part) = self.parts.get_mut(&tp) else {
                continue;
            };
            if part.paused || asked.get(&tp) != Some(&part.position) {
                continue;
            }
            match r.result {
                Ok(data) => {
                    part.position = data.next_offset.max(part.position);
                    let topic = part.topic.clone();
                    if let Some(p) = self.shared.progress.locked().get_mut(&tp) {
                        p.high_watermark = data.high_watermark;
                        p.end_offset = match self.config.isolation_level {
                            IsolationLevel::ReadCommitted if data.last_stable_offset >= 0 => {
                                data.last_stable_offset
                            }
                            _ => data.high_watermark,
                        };
                    }
                    if !data.batches.is_empty() {
                        self.buffer.push_back(Fetched {
                            tp,
                            topic,
                            batches: data.batches,
                        });
                    }
                }
                Err(e) if e.kafka_code() == Some(KafkaCode::OffsetOutOfRange) => {
                    log::warn!(
                        "consumer {}: {}-{} offset {} out of range; applying {:?}",
                        self.idx,
                        tp.0,
                        tp.1,
                        part.position,
                        self.config.offset_reset
                    );
                    part.position = -1;
                    self.reset_unpositioned()?;
                }
                Err(e) => {
                    errors += 1;
                    log::debug!("consumer {}: fetch {}-{}: {e}", self.idx, tp.0, tp.1);
                }
            }
        }
        if errors > 0 && self.buffer.is_empty() {
            self.shared.fetch_errors.add(1);
            self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
        } else if !self.shared.stopping() {
            // The brokers work on the next fetch while the caller works on this one.
            let targets = self.targets();
            if !targets.is_empty() {
                self.prefetched = self.cluster.send_fetch(&self.config.fetch, &targets).ok();
            }
        }
        Ok(())
    }

    fn fetch_failed(&mut self, e: &client::Error) {
        log::debug!("consumer {}: fetch: {e}", self.idx);
        self.shared.fetch_errors.add(1);
        self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
    }

    /// What to fetch: assigned, positioned, unpaused partitions, each from its position.
    fn targets(&mut self) -> Vec<FetchTarget> {
        let mut targets = Vec::with_capacity(self.parts.len());
        for (tp, p) in &self.parts {
            if p.paused || p.position < 0 {
                continue;
            }
            match self.cluster.topic(&tp.0) {
                Ok(info) => targets.push(FetchTarget {
                    topic: tp.0.clone(),
                    topic_id: info.id,
                    partition: tp.1,
                    offset: p.position,
                }),
                Err(e) => log::debug!("consumer {}: metadata for {}: {e}", self.idx, tp.0),
            }
        }
        targets
    }

    // -----------------------------------------------------------------------------------
    // Rebalances
    // -----------------------------------------------------------------------------------

    fn assigned(
        &mut self,
        partitions: Vec<TopicPartition>,
        committed: BTreeMap<TopicPartition, i64>,
    ) -> Result<(), Error> {
        for tp in &partitions {
            let at = committed.get(tp).copied().unwrap_or(-1);
            let topic: Arc<str> = match self.parts.values().find(|p| *p.topic == *tp.0) {
                Some(p) => p.topic.clone(),
                None => Arc::from(tp.0.as_str()),
            };
            self.parts.insert(
                tp.clone(),
                Part {
                    topic,
                    position: at,
                    handed: at,
                    done: at,
                    committed: at,
                    requested: at,
                    skipped: None,
                    paused: false,
                },
            );
            // Shown in the stats once its position is known (here, or after the reset
            // policy): callers wait on that to know the member is ready for new records.
            self.publish_position(tp);
        }
        self.revision += 1;
        self.publish_assignment();
        self.reset_unpositioned()?;
        log::debug!("consumer {}: assigned {}", self.idx, names(&partitions));
        self.notify(|l, c| l.on_assigned(c, &partitions));
        Ok(())
    }

    fn revoke(&mut self, partitions: Vec<TopicPartition>) {
        let mine: Vec<TopicPartition> = partitions
            .into_iter()
            .filter(|tp| self.parts.contains_key(tp))
            .collect();
        self.forget_data(&mine);
        self.notify(|l, c| l.on_revoked(c, &mine));
        if self.auto_commits() {
            // Sent before `Released`, so the group thread commits first.
            let offsets = self.uncommitted(|p| p.committed);
            let offsets: BTreeMap<_, _> = offsets
                .into_iter()
                .filter(|(tp, _)| mine.contains(tp))
                .collect();
            if !offsets.is_empty() {
                drop(self.group.commit(offsets));
            }
        }
        self.drop_parts(&mine);
        log::debug!("consumer {}: gave back {}", self.idx, names(&mine));
        self.group.released(mine);
    }

    fn lose(&mut self, partitions: Vec<TopicPartition>) {
        let mine: Vec<TopicPartition> = partitions
            .into_iter()
            .filter(|tp| self.parts.contains_key(tp))
            .collect();
        self.forget_data(&mine);
        self.notify(|l, c| l.on_lost(c, &mine));
        self.drop_parts(&mine);
        log::info!(
            "consumer {}: lost {} (not committed: handled again by their next owner)",
            self.idx,
            names(&mine)
        );
    }

    fn drop_parts(&mut self, partitions: &[TopicPartition]) {
        {
            let mut progress = self.shared.progress.locked();
            for tp in partitions {
                self.parts.remove(tp);
                progress.remove(tp);
            }
        }
        self.revision += 1;
        self.publish_assignment();
    }

    /// Give partitions without a position one, from the reset policy.
    fn reset_unpositioned(&mut self) -> Result<(), Error> {
        let waiting: Vec<&TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| p.position < 0)
            .map(|(tp, _)| tp)
            .collect();
        if waiting.is_empty() || Instant::now() < self.retry_fetch_at {
            return Ok(());
        }
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in &waiting {
            by_topic.entry(t.clone()).or_default().push(*p);
        }
        let spec = match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                let why = format!(
                    "{} have no valid committed offset and offset_reset is Error",
                    names(waiting)
                );
                self.stopped = Some(why.clone());
                return Err(Error::Config {
                    field: "offset_reset",
                    reason: why,
                });
            }
        };
        for (topic, partitions) in by_topic {
            let isolation = self.config.isolation_level;
            match (self.cluster).list_offsets_as(&topic, &partitions, spec, isolation) {
                Ok(listed) => {
                    for o in listed {
                        let tp = (topic.clone(), o.partition);
                        if let Some(p) = self.parts.get_mut(&tp) {
                            (p.position, p.handed, p.done) = (o.offset, o.offset, o.offset);
                            p.skipped = None;
                        }
                        self.publish_position(&tp);
                    }
                }
                Err(e) => {
                    log::debug!("consumer {}: offsets of {topic}: {e}", self.idx);
                    self.shared.fetch_errors.add(1);
                    self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
                }
            }
        }
        Ok(())
    }

    /// Call the listener, if any, with this consumer.
    fn notify(&mut self, call: impl FnOnce(&mut dyn RebalanceListener, &mut Consumer)) {
        if let Some(mut listener) = self.listener.take() {
            self.in_listener = true;
            call(listener.as_mut(), self);
            self.in_listener = false;
            self.listener = Some(listener);
        }
    }

    // -----------------------------------------------------------------------------------
    // Commits
    // -----------------------------------------------------------------------------------

    fn auto_commits(&self) -> bool {
        self.mode == Mode::Pool || self.config.auto_commit
    }

    /// Finished offsets that differ from `than(part)`.
    fn uncommitted(&self, than: impl Fn(&Part) -> i64) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .filter(|(_, p)| p.done >= 0 && p.done != than(p))
            .map(|(tp, p)| (tp.clone(), p.done))
            .collect()
    }

    /// Start a commit of what is finished, unless one is in flight.
    fn commit_async(&mut self) {
        self.last_commit = Instant::now();
        if self.pending_commit.is_some() {
            return;
        }
        let offsets = self.uncommitted(|p| p.requested);
        if offsets.is_empty() {
            return;
        }
        for (tp, o) in &offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                p.requested = *o;
            }
        }
        let answer = self.group.commit(offsets.clone());
        self.pending_commit = Some((answer, offsets));
    }

    /// Take the answer to the interval commit, if it came.
    fn settle_pending_commit(&mut self) {
        let Some((answer, offsets)) = &self.pending_commit else {
            return;
        };
        let result = match answer.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err(Error::Stopped("the group thread ended".into())),
        };
        let offsets = offsets.clone();
        self.pending_commit = None;
        self.record_commit(&offsets, result.is_ok());
    }

    fn record_commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>, ok: bool) {
        for (tp, o) in offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                if ok {
                    p.committed = *o;
                    p.requested = p.requested.max(*o);
                } else {
                    // Asked again at the next interval.
                    p.requested = p.committed;
                }
            }
        }
    }

    fn commit_sync(&mut self, offsets: BTreeMap<TopicPartition, i64>) -> Result<(), Error> {
        let timeout = self.config.client.connection.request_timeout;
        self.commit_within(offsets, timeout)
    }

    fn commit_within(
        &mut self,
        offsets: BTreeMap<TopicPartition, i64>,
        timeout: Duration,
    ) -> Result<(), Error> {
        if offsets.is_empty() {
            return Ok(());
        }
        let answer = self.group.commit(offsets.clone());
        let result = match answer.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout {
                what: "the commit",
                after: timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Stopped(
                self.stopped
                    .clone()
                    .unwrap_or_else(|| "its group thread ended".into()),
            )),
        };
        self.record_commit(&offsets, result.is_ok());
        result
    }

    // -----------------------------------------------------------------------------------
    // Small things
    // -----------------------------------------------------------------------------------

    fn part(&self, topic: &str, partition: i32) -> Result<TopicPartition, Error> {
        let tp = (topic.to_owned(), partition);
        if self.parts.contains_key(&tp) {
            Ok(tp)
        } else {
            Err(Error::NotAssigned {
                topic: topic.to_owned(),
                partition,
                assigned: if self.parts.is_empty() {
                    "none".to_owned()
                } else {
                    names(self.parts.keys())
                },
            })
        }
    }

    /// Show `tp`'s position in the stats, once it has one.
    fn publish_position(&self, tp: &TopicPartition) {
        let Some(p) = self.parts.get(tp).filter(|p| p.position >= 0) else {
            return;
        };
        let mut all = self.shared.progress.locked();
        let progress = all.entry(tp.clone()).or_insert(PartitionProgress {
            high_watermark: p.handed,
            end_offset: p.handed,
            position: p.handed,
            committed: p.committed,
        });
        progress.position = p.handed;
        progress.high_watermark = progress.high_watermark.max(p.handed);
        progress.end_offset = progress.end_offset.max(p.handed);
    }

    fn publish_assignment(&self) {
        self.shared
            .assignments
            .locked()
            .insert(self.idx, self.parts.keys().cloned().collect());
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.closed {
            let bound = Duration::from_secs(5);
            if let Err(e) = self.shutdown(Instant::now() + bound) {
                log::warn!("consumer {} dropped without close: {e}", self.idx);
            }
        }
    }
}

/// Connect to the cluster and check that the topics exist: the errors a caller should see
/// at once.
pub(crate) fn connect_checked(config: &ConsumerConfig) -> Result<Cluster, Error> {
    let mut cluster = Cluster::connect(config.client.clone())?;
    for t in &config.topics {
        cluster.topic(t)?;
    }
    Ok(cluster)
}
