//! One group member's engine: fetching (with the next fetch prefetched), handing records
//! out batch by batch, taking up the group thread's news (assignments, revocations,
//! losses), resetting positions, and committing. The pull [`Consumer`](super::Consumer)
//! and a pool's member threads each drive one; where they differ (who is told of
//! rebalances, who says what is finished) they are the engine's [`Host`].
//!
//! ```text
//!  host ─fill─▶ service: group events ─▶ Change ─▶ host.on_change (the listener) ─▶ complete
//!               take_records ◀─ buffer ◀─ fetch (prefetched) ◀─ leaders
//!  host ─finished / finish_handed─▶ books ─commit─▶ group thread ─▶ coordinator
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::client::{
    self, Backoff, Batches, Cluster, CommittedOffset, EpochEnd, EpochQuery, FetchInFlight,
    FetchTarget, FetchedRecord, IsolationLevel, KafkaCode, OffsetSpec, TopicPartition,
};
use crate::sync::Locked;

use super::books::{Books, Held, Offsets, Since, Validated};
use super::config::{ConsumerConfig, OffsetReset};
use super::error::Error;
use super::group::{names, Event, GroupHandle};
use super::record::ConsumedRecord;
use super::shared::Shared;
use super::stats::{PartitionProgress, Truncation};

/// A change of the assignment, for the host to tell its listener of between
/// [`Engine::next_change`] and [`Engine::complete`].
#[derive(Debug)]
pub(crate) enum Change {
    /// These partitions are now the member's, positioned.
    Assigned(Vec<TopicPartition>),
    /// These are being given back: their data is dropped; the commit and the release
    /// follow in `complete`.
    Revoking(Vec<TopicPartition>),
    /// These are gone already.
    Lost(Vec<TopicPartition>),
    /// The logs of these partitions diverged before the member's positions (KIP-320).
    Truncated(Vec<Truncation>),
}

/// What drives an engine: a pull consumer (with its listener) or a pool member.
pub(crate) trait Host {
    fn engine(&mut self) -> &mut Engine;
    /// Called for each change, after the engine's first half of it and before the second.
    fn on_change(&mut self, change: &Change);
}

/// A host with no one to tell.
impl Host for Engine {
    fn engine(&mut self) -> &mut Engine {
        self
    }
    fn on_change(&mut self, _: &Change) {}
}

/// One partition's records from one fetch, not yet decoded.
#[derive(Debug)]
struct Fetched {
    tp: TopicPartition,
    topic: Arc<str>,
    batches: Batches,
}

/// The records of the batch being handed out.
#[derive(Debug)]
struct Current {
    tp: TopicPartition,
    topic: Arc<str>,
    records: std::vec::IntoIter<FetchedRecord>,
}

/// What metadata says of an assigned partition, for its next fetch.
#[derive(Debug)]
struct Led {
    topic_id: uuid::Uuid,
    /// -1 when the metadata has none.
    leader_epoch: i32,
    /// The replica the leader named to read from, while it is one and not stale.
    replica: Option<i32>,
}

/// An interval commit in flight: its answer, and what it asked.
type PendingCommit = (Receiver<Result<(), Error>>, Offsets);

/// One group member: its group thread's handle, its fetch connections, its books.
pub(crate) struct Engine {
    pub(crate) idx: usize,
    pub(crate) config: ConsumerConfig,
    cluster: Cluster,
    group: GroupHandle,
    pub(crate) shared: Arc<Shared>,
    pub(crate) books: Books,
    /// Fetched partitions' data, in the order it came.
    buffer: VecDeque<Fetched>,
    current: Option<Current>,
    decoded: Vec<FetchedRecord>,
    prefetched: Option<FetchInFlight>,
    fetch_backoff: Backoff,
    retry_fetch_at: Instant,
    /// The replica each partition is read from instead of its leader (KIP-392), and until
    /// when.
    read_replicas: HashMap<TopicPartition, (i32, Instant)>,
    /// Partitions whose last fetch failed wait apart, each its own backoff.
    partition_retry: HashMap<TopicPartition, (Backoff, Instant)>,
    /// Offset resets and validations that failed wait apart from fetches: a leaderless
    /// partition's does not hold back the others' fetches.
    positions_backoff: Backoff,
    retry_positions_at: Instant,
    last_commit: Instant,
    pending_commit: Option<PendingCommit>,
    /// Bumped whenever the assignment changes.
    revision: u64,
    /// Truncations found, for the host to tell.
    truncations: Vec<Truncation>,
    /// Fetch errors retrying cannot mend (authorization, say), for the host to see.
    failures: Vec<client::Error>,
    /// A partition and position whose records came corrupt once (a second time holds it),
    /// and what the decoder said of the ones held.
    corrupt_once: Option<(TopicPartition, i64)>,
    corrupt: BTreeMap<TopicPartition, String>,
    /// Why the member stopped, once it has.
    stopped: Option<String>,
    pub(crate) started: Instant,
    closed: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("idx", &self.idx)
            .field("group", &self.config.group)
            .field("books", &self.books)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Member `idx` of a pool (or the one member of a `Consumer`), on `cluster`; its group
    /// thread gets connections of its own. With `config.auto_commit` it commits what is
    /// finished on the interval, before giving partitions back, and on close.
    pub(crate) fn start(
        idx: usize,
        mut config: ConsumerConfig,
        instance_id: Option<String>,
        cluster: Cluster,
        shared: Arc<Shared>,
    ) -> Result<Engine, Error> {
        // Batches are expanded one at a time, as they are handed out.
        config.fetch.decode_lazily = true;
        config.fetch.isolation = config.isolation_level;
        let group_cluster =
            Cluster::connect_with(config.client.clone(), cluster.connector().clone())?;
        let group = GroupHandle::start(idx, &config, instance_id, group_cluster, shared.clone())?;
        shared.assignments.locked().insert(idx, Vec::new());
        let now = Instant::now();
        Ok(Engine {
            idx,
            fetch_backoff: config.client.backoff(),
            positions_backoff: config.client.backoff(),
            config,
            cluster,
            group,
            shared,
            books: Books::default(),
            buffer: VecDeque::new(),
            current: None,
            decoded: Vec::new(),
            prefetched: None,
            retry_fetch_at: now,
            partition_retry: HashMap::new(),
            read_replicas: HashMap::new(),
            retry_positions_at: now,
            last_commit: now,
            pending_commit: None,
            revision: 0,
            truncations: Vec::new(),
            failures: Vec::new(),
            corrupt_once: None,
            corrupt: BTreeMap::new(),
            stopped: None,
            started: now,
            closed: false,
        })
    }

    /// Note progress for the `max_poll_interval` watchdog.
    pub(crate) fn note_progress(&mut self) {
        self.group.progress();
    }

    /// Whether [`service`] has something to do (group events, a commit): one atomic load,
    /// for between records.
    pub(crate) fn service_due(&self) -> bool {
        self.group.poked()
    }

    /// Changes whenever the assignment does.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The partitions assigned now.
    pub(crate) fn assignment(&self) -> Vec<TopicPartition> {
        self.books.partitions().cloned().collect()
    }

    /// `tp`, if it is assigned; else the error that names the assignment.
    pub(crate) fn assigned_part(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<TopicPartition, Error> {
        let tp = (topic.to_owned(), partition);
        if self.books.contains(&tp) {
            return Ok(tp);
        }
        Err(Error::NotAssigned {
            topic: topic.to_owned(),
            partition,
            assigned: if self.books.is_empty() {
                "none".to_owned()
            } else {
                names(self.books.partitions())
            },
        })
    }

    /// Read `tp` from `offset` on: data fetched for it is dropped.
    pub(crate) fn seek(&mut self, tp: &TopicPartition, offset: i64) {
        self.forget_data(std::slice::from_ref(tp));
        self.books.position_at(tp, CommittedOffset::at(offset));
        self.publish_position(tp);
    }

    /// Stop or restart fetching these partitions (data fetched for them is dropped).
    pub(crate) fn set_paused(&mut self, partitions: &[TopicPartition], paused: bool) {
        if paused {
            self.forget_data(partitions);
        }
        for tp in partitions {
            self.books.set_paused(tp, paused);
        }
    }

    /// These offsets were committed by a transaction (an exactly-once member's): the
    /// books and the stats take them as committed.
    pub(crate) fn committed_by_transaction(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        let with_epochs: Offsets = offsets
            .iter()
            .map(|(tp, &o)| (tp.clone(), CommittedOffset::at(o)))
            .collect();
        self.books.committed_by_transaction(&with_epochs);
        let mut committed = self.shared.committed.locked();
        let mut progress = self.shared.progress.locked();
        for (tp, &o) in offsets {
            committed.insert(tp.clone(), o);
            if let Some(p) = progress.get_mut(tp) {
                p.committed = o;
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Group events
    // -----------------------------------------------------------------------------------

    /// Take up the group thread's next event: the first half of a change (the host tells
    /// its listener, then calls [`complete`](Self::complete)). `None` when there is none.
    pub(crate) fn next_change(&mut self) -> Result<Option<Change>, Error> {
        if let Some(why) = &self.stopped {
            return Err(Error::Stopped(why.clone()));
        }
        let Some(event) = self.group.try_event() else {
            return Ok(None);
        };
        Ok(Some(match event {
            Event::Assigned {
                partitions,
                committed,
                discovered,
            } => {
                for tp in &partitions {
                    self.books.assign(tp, committed.get(tp).copied());
                    if discovered.contains(tp) {
                        self.books.start_at_earliest(tp);
                    }
                    // Shown in the stats once its position is known (here, or after the
                    // reset policy): callers wait on that to know the member is ready.
                    self.publish_position(tp);
                }
                self.revision += 1;
                self.publish_assignment();
                self.reset_unpositioned()?;
                log::debug!("consumer {}: assigned {}", self.idx, names(&partitions));
                Change::Assigned(partitions)
            }
            Event::Revoke(partitions) => Change::Revoking(self.let_go(partitions)),
            Event::Lost(partitions) => Change::Lost(self.let_go(partitions)),
            Event::Failed(e) => {
                self.stopped = Some(e.to_string());
                return Err(e);
            }
        }))
    }

    /// The second half of a change, once the listener was told.
    pub(crate) fn complete(&mut self, change: Change) {
        match change {
            Change::Assigned(_) | Change::Truncated(_) => {}
            Change::Revoking(mine) => {
                if self.config.auto_commit {
                    // Sent before `Released`, so the group thread commits first.
                    let offsets: BTreeMap<_, _> = self
                        .books
                        .uncommitted(Since::Confirmed)
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
            Change::Lost(mine) => {
                self.drop_parts(&mine);
                log::info!(
                    "consumer {}: lost {} (not committed: handled again by their next owner)",
                    self.idx,
                    names(&mine)
                );
            }
        }
    }

    /// Of `partitions`, those assigned, with their fetched data dropped.
    fn let_go(&mut self, partitions: Vec<TopicPartition>) -> Vec<TopicPartition> {
        let mine: Vec<TopicPartition> = partitions
            .into_iter()
            .filter(|tp| self.books.contains(tp))
            .collect();
        self.forget_data(&mine);
        mine
    }

    /// Validate and reset positions, settle commits: what `service` does after the events.
    fn housekeep(&mut self) -> Result<(), Error> {
        self.validate_positions();
        self.reset_unpositioned()?;
        self.settle_pending_commit();
        if self.config.auto_commit && self.last_commit.elapsed() >= self.config.commit_interval {
            self.commit_async();
        }
        Ok(())
    }

    fn drop_parts(&mut self, partitions: &[TopicPartition]) {
        {
            let mut progress = self.shared.progress.locked();
            for tp in partitions {
                self.books.remove(tp);
                progress.remove(tp);
            }
        }
        self.revision += 1;
        self.publish_assignment();
    }

    // -----------------------------------------------------------------------------------
    // Records
    // -----------------------------------------------------------------------------------

    /// Hand out buffered records, up to `max` in `out`.
    #[inline]
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
                    delivery_count: None,
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
                self.books.handed(&tp, next);
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
                    let epoch = front.batches.last_leader_epoch();
                    if self.decoded.is_empty() {
                        // A control batch, an aborted transaction's, or records below the
                        // position: nothing to hand out, but the position moves past it.
                        let tp = front.tp.clone();
                        if let (Some(epoch), Some(at)) = (epoch, self.books.position(&tp)) {
                            if at < next {
                                self.books.note_epoch(&tp, at, epoch);
                            }
                        }
                        if self.books.skip_to(&tp, next) {
                            self.publish_position(&tp);
                        }
                        continue;
                    }
                    if let Some(epoch) = epoch {
                        self.books
                            .note_epoch(&front.tp, self.decoded[0].offset, epoch);
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
                    // after a pause (a fault on the way); corrupt again at the same place,
                    // it is held for the caller to seek past.
                    let tp = front.tp.clone();
                    let next = front.batches.last_batch_end();
                    self.shared.fetch_errors.add(1);
                    self.forget_data(std::slice::from_ref(&tp));
                    let Some(at) = self.books.position(&tp) else {
                        continue;
                    };
                    if self.corrupt_once.as_ref() == Some(&(tp.clone(), at)) {
                        log::error!(
                            "consumer {}: {}-{}: the records at offset {at} are corrupt \
                             again ({e}); the partition waits for a seek past them",
                            self.idx,
                            tp.0,
                            tp.1,
                        );
                        self.corrupt_once = None;
                        self.books.corrupt(&tp, at, next);
                        self.corrupt.insert(tp, e);
                    } else {
                        log::warn!(
                            "consumer {}: {}-{}: corrupt records at offset {at} ({e}); \
                             fetching them again",
                            self.idx,
                            tp.0,
                            tp.1,
                        );
                        self.corrupt_once = Some((tp, at));
                        self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
                    }
                }
            }
        }
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
            self.books.refetch(tp);
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
        let asked: HashMap<TopicPartition, (i64, Option<i32>)> = inflight
            .targets()
            .map(|t| ((t.topic.clone(), t.partition), (t.offset, t.replica)))
            .collect();
        let results = match self.cluster.receive_fetch(&self.config.fetch, inflight) {
            Ok(r) => r,
            Err(e) => {
                self.fetch_failed(&e);
                return Ok(());
            }
        };
        let (mut errors, total) = (0, results.len());
        for r in results {
            let tp = (r.topic, r.partition);
            // Skip what no longer matches: revoked or paused partitions, moved positions.
            let Some(&(at, replica)) = asked
                .get(&tp)
                .filter(|&&(at, _)| self.books.is_current(&tp, at))
            else {
                continue;
            };
            let data = match r.result {
                Ok(data) => data,
                Err(e) => {
                    if let Some(replica) = replica {
                        self.leave_replica(&tp, replica);
                    }
                    if e.kafka_code() == Some(KafkaCode::OffsetOutOfRange) {
                        // From a follower: it is behind the leader, no reason to reset.
                        if replica.is_none() {
                            self.out_of_range(&tp, at);
                        }
                        continue;
                    }
                    // This partition waits; the others of the fetch go on.
                    errors += 1;
                    self.back_off_partition(&tp);
                    if e.is_retriable() {
                        log::debug!("consumer {}: fetch {}-{}: {e}", self.idx, tp.0, tp.1);
                    } else {
                        // Retried too (an authorization may be granted), but the caller is
                        // told: `poll` returns it, and a pool stops with it.
                        log::warn!("consumer {}: fetch {}-{}: {e}", self.idx, tp.0, tp.1);
                        self.failures.push(e);
                    }
                    continue;
                }
            };
            self.partition_retry.remove(&tp);
            self.note_read_replica(&tp, replica, data.preferred_read_replica);
            self.books.fetched(&tp, data.next_offset);
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
                let topic = self.books.topic(&tp).expect("checked by is_current");
                self.buffer.push_back(Fetched {
                    tp,
                    topic,
                    batches: data.batches,
                });
            }
        }
        if errors > 0 {
            self.shared.fetch_errors.add(1);
        }
        if errors > 0 && errors == total {
            self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
        } else {
            self.fetch_backoff = self.config.client.backoff();
        }
        if Instant::now() >= self.retry_fetch_at && !self.shared.stopping() {
            // The brokers work on the next fetch while the caller works on this one.
            let targets = self.targets();
            if !targets.is_empty() {
                self.prefetched = self.cluster.send_fetch(&self.config.fetch, &targets).ok();
            }
        }
        Ok(())
    }

    /// The leader refused `tp`'s position `at` as out of range: validated first when its
    /// epoch is known, else reset by the policy.
    fn out_of_range(&mut self, tp: &TopicPartition, at: i64) {
        self.shared.out_of_range.add(1);
        let then = if self.books.out_of_range(tp) {
            format!("applying {:?}", self.config.offset_reset)
        } else {
            "checking the leader's log for a divergence first".to_owned()
        };
        log::warn!(
            "consumer {}: {}-{} offset {at} out of range; {then}",
            self.idx,
            tp.0,
            tp.1,
        );
    }

    /// `tp`'s fetch failed: it waits out its own backoff.
    fn back_off_partition(&mut self, tp: &TopicPartition) {
        let base = self.config.client.backoff();
        let (backoff, at) = self
            .partition_retry
            .entry(tp.clone())
            .or_insert_with(|| (base, Instant::now()));
        *at = Instant::now() + backoff.next_delay();
    }

    /// The replica the leader named for `tp` failed us (gone, behind, no longer one): back
    /// to the leader, which may name another.
    fn leave_replica(&mut self, tp: &TopicPartition, replica: i32) {
        log::debug!(
            "consumer {}: {}-{} from replica {replica} failed; back to the leader",
            self.idx,
            tp.0,
            tp.1
        );
        self.read_replicas.remove(tp);
        if let Some(p) = self.shared.progress.locked().get_mut(tp) {
            p.read_replica = None;
        }
    }

    /// A fetch of `tp` from `from` (a replica, or the leader) named `preferred`: read from
    /// it from now on, for up to `metadata_max_age` (KIP-392, as the Java consumer does).
    fn note_read_replica(
        &mut self,
        tp: &TopicPartition,
        from: Option<i32>,
        preferred: Option<i32>,
    ) {
        let Some(preferred) = preferred.filter(|&p| Some(p) != from) else {
            return;
        };
        log::debug!(
            "consumer {}: {}-{}: reading from replica {preferred}, as its leader says",
            self.idx,
            tp.0,
            tp.1
        );
        let until = Instant::now() + self.config.client.metadata_max_age;
        self.read_replicas.insert(tp.clone(), (preferred, until));
        if let Some(p) = self.shared.progress.locked().get_mut(tp) {
            p.read_replica = Some(preferred);
        }
    }

    fn fetch_failed(&mut self, e: &client::Error) {
        log::debug!("consumer {}: fetch: {e}", self.idx);
        self.shared.fetch_errors.add(1);
        self.retry_fetch_at = Instant::now() + self.fetch_backoff.next_delay();
    }

    /// What to fetch: assigned, positioned, unpaused partitions, each from its position,
    /// with the leader epoch they are asked of. A partition whose leader changed since its
    /// position was read is validated first (KIP-320), not fetched.
    fn targets(&mut self) -> Vec<FetchTarget> {
        let mut leaders: BTreeMap<TopicPartition, Led> = BTreeMap::new();
        for tp in self.books.partitions() {
            match self.cluster.topic(&tp.0) {
                Ok(info) => {
                    if let Some(p) = info.partitions.get(tp.1 as usize) {
                        // The replica the leader named, while it is one and not stale.
                        let replica = self
                            .read_replicas
                            .get(tp)
                            .filter(|(r, until)| {
                                *until > Instant::now() && p.replicas.contains(r) && *r != p.leader
                            })
                            .map(|(r, _)| *r);
                        let led = Led {
                            topic_id: info.id,
                            leader_epoch: p.leader_epoch,
                            replica,
                        };
                        leaders.insert(tp.clone(), led);
                    }
                }
                Err(e) => log::debug!("consumer {}: metadata for {}: {e}", self.idx, tp.0),
            }
        }
        self.recreated(&leaders);
        let mut moved = Vec::new();
        for (tp, led) in &leaders {
            if led.leader_epoch >= 0 && self.books.leader_is(tp, led.leader_epoch) {
                moved.push(tp.clone());
            }
        }
        if !moved.is_empty() {
            log::debug!(
                "consumer {}: new leaders for {}; validating positions",
                self.idx,
                names(&moved)
            );
            self.forget_data(&moved);
        }
        let mut targets = Vec::new();
        let now = Instant::now();
        self.partition_retry
            .retain(|tp, (_, at)| *at > now && self.books.contains(tp));
        for (tp, offset) in self.books.fetchable() {
            if self.partition_retry.contains_key(tp) {
                continue; // failed lately: it waits out its backoff
            }
            if let Some(led) = leaders.get(tp) {
                targets.push(FetchTarget {
                    topic: tp.0.clone(),
                    topic_id: led.topic_id,
                    partition: tp.1,
                    offset,
                    current_leader_epoch: (led.leader_epoch >= 0).then_some(led.leader_epoch),
                    replica: led.replica,
                });
            }
        }
        targets
    }

    /// Partitions whose topic has another id than their positions were read under (it was
    /// deleted and created again) are read from the new topic's earliest offset.
    fn recreated(&mut self, leaders: &BTreeMap<TopicPartition, Led>) {
        let renewed: Vec<TopicPartition> = leaders
            .iter()
            .filter(|(tp, led)| self.books.topic_id_is(tp, led.topic_id))
            .map(|(tp, _)| tp.clone())
            .collect();
        if renewed.is_empty() {
            return;
        }
        log::warn!(
            "consumer {}: the topic of {} was deleted and created again; its positions were \
             the old topic's: reading the new one from its earliest offset",
            self.idx,
            names(&renewed)
        );
        self.forget_data(&renewed);
        for tp in &renewed {
            self.books.start_at_earliest(tp);
        }
    }

    /// Validate positions waiting for it with their leaders (OffsetForLeaderEpoch): a log
    /// that diverged before a position moves it to the divergence point (or stops the
    /// partition for the caller to seek, without a reset policy).
    fn validate_positions(&mut self) {
        let waiting = self.books.awaiting_validation();
        if waiting.is_empty() || Instant::now() < self.retry_positions_at {
            return;
        }
        let mut failed = false;
        for (topic, positions) in by_topic(waiting) {
            let current = match self.cluster.topic(&topic) {
                Ok(info) => info.partitions.clone(),
                Err(e) => {
                    log::debug!("consumer {}: metadata for {topic}: {e}", self.idx);
                    failed = true;
                    continue;
                }
            };
            let queries: Vec<EpochQuery> = positions
                .iter()
                .map(|&(p, position)| EpochQuery {
                    partition: p,
                    current_leader_epoch: current
                        .get(p as usize)
                        .map(|i| i.leader_epoch)
                        .filter(|&e| e >= 0),
                    leader_epoch: position.leader_epoch.unwrap_or(-1),
                })
                .collect();
            let (answers, request_failed) = self.cluster.epoch_ends(&topic, &queries);
            if let Some(e) = request_failed {
                log::debug!("consumer {}: validating {topic}: {e}", self.idx);
                failed = true;
            }
            for answer in answers {
                let tp = (topic.clone(), answer.partition);
                let Some(&(_, position)) = positions.iter().find(|(p, _)| *p == answer.partition)
                else {
                    continue;
                };
                // The leader is the one the position is now read under.
                if let Some(Some(epoch)) = queries
                    .iter()
                    .find(|q| q.partition == answer.partition)
                    .map(|q| q.current_leader_epoch)
                {
                    self.books.leader_is(&tp, epoch);
                }
                match answer.result {
                    Ok(end) => self.take_validation(&tp, position, end),
                    Err(e) => {
                        // A leader that moved or is not at the epoch yet: asked again with
                        // fresh metadata after the backoff.
                        log::debug!("consumer {}: validating {}-{}: {e}", self.idx, tp.0, tp.1);
                        failed = true;
                    }
                }
            }
        }
        if failed {
            self.positions_failed();
        }
    }

    fn take_validation(&mut self, tp: &TopicPartition, position: CommittedOffset, end: EpochEnd) {
        let end = end.end_offset.map(|offset| CommittedOffset {
            offset,
            leader_epoch: end.leader_epoch,
        });
        match self.books.validated(tp, position, end) {
            Validated::Valid | Validated::Stale => {}
            Validated::OutOfRange => log::warn!(
                "consumer {}: {}-{} offset {} out of range, and the log did not diverge \
                 before it; applying {:?}",
                self.idx,
                tp.0,
                tp.1,
                position.offset,
                self.config.offset_reset
            ),
            Validated::Truncated {
                position,
                divergence,
            } => {
                self.shared.truncations.add(1);
                let no_reset = self.config.offset_reset == OffsetReset::Error;
                if no_reset {
                    self.books.diverged(tp, position, divergence);
                }
                let then = match (divergence, no_reset) {
                    (_, true) => "offset_reset is Error: it waits for a seek".to_owned(),
                    (Some(d), false) => format!(
                        "reading resumes at the divergence point {d} (the records from there \
                         on were replaced on the new leader)"
                    ),
                    (None, false) => format!(
                        "the leader's log holds nothing that old; applying {:?}",
                        self.config.offset_reset
                    ),
                };
                log::warn!(
                    "consumer {}: log truncation on {}-{}: the leader's log diverged before \
                     position {position} (an unclean leader election, or a leader that lost \
                     acknowledged records); {then}",
                    self.idx,
                    tp.0,
                    tp.1,
                );
                self.truncations.push(Truncation {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    position,
                    divergence,
                });
                self.publish_position(tp);
            }
        }
    }

    /// The truncations found since last asked.
    fn take_truncations(&mut self) -> Option<Vec<Truncation>> {
        (!self.truncations.is_empty()).then(|| std::mem::take(&mut self.truncations))
    }

    /// The error the caller must see: a fetch error retrying cannot mend, or a partition
    /// held for a seek (its log diverged with no reset policy, its records are corrupt).
    fn check_held(&mut self) -> Result<(), Error> {
        if let Some(e) = self.failures.drain(..).next() {
            return Err(Error::Client(e));
        }
        let Some(((topic, partition), why)) = self.books.held().into_iter().next() else {
            return Ok(());
        };
        Err(match why {
            Held::Corrupt { offset, next } => Error::CorruptRecords {
                detail: self
                    .corrupt
                    .get(&(topic.clone(), partition))
                    .cloned()
                    .unwrap_or_default(),
                topic,
                partition,
                offset,
                next,
            },
            Held::Diverged {
                position,
                divergence,
            } => Error::LogTruncated {
                topic,
                partition,
                position,
                divergence,
            },
        })
    }

    /// Give partitions without a position one, from the reset policy.
    fn reset_unpositioned(&mut self) -> Result<(), Error> {
        let waiting = self.books.awaiting_reset();
        if waiting.is_empty() || Instant::now() < self.retry_positions_at {
            return Ok(());
        }
        // Partitions that came into being while the member ran start at their beginning.
        let (earliest, waiting): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|tp| self.books.resets_to_earliest(tp));
        self.reset_to(earliest, OffsetSpec::Earliest);
        if waiting.is_empty() {
            return Ok(());
        }
        let spec = match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                let why = format!(
                    "{} have no valid committed offset and offset_reset is Error",
                    names(&waiting)
                );
                self.stopped = Some(why.clone());
                return Err(Error::Config {
                    field: "offset_reset",
                    reason: why,
                });
            }
        };
        self.reset_to(waiting, spec);
        Ok(())
    }

    /// A reset or validation round failed for some partition: they are asked again after
    /// the positions' backoff (apart from fetches).
    fn positions_failed(&mut self) {
        self.shared.fetch_errors.add(1);
        self.retry_positions_at = Instant::now() + self.positions_backoff.next_delay();
    }

    /// Position `waiting` where `spec` says (ListOffsets, a request per topic).
    fn reset_to(&mut self, waiting: Vec<TopicPartition>, spec: OffsetSpec) {
        let mut failed = false;
        for (topic, partitions) in by_topic(waiting.into_iter().map(|tp| (tp, ()))) {
            let partitions: Vec<i32> = partitions.into_iter().map(|(p, ())| p).collect();
            let isolation = self.config.isolation_level;
            let (listed, request_failed) =
                (self.cluster).list_offsets_each(&topic, &partitions, spec, isolation);
            if let Some(e) = request_failed {
                log::debug!("consumer {}: offsets of {topic}: {e}", self.idx);
                failed = true;
            }
            for answer in listed {
                let tp = (topic.clone(), answer.partition);
                match answer.result {
                    Ok(o) => {
                        let position = CommittedOffset {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                        };
                        self.books.position_at(&tp, position);
                        self.publish_position(&tp);
                    }
                    Err(e) => {
                        // Leaderless, say: the others go on, this one is asked again.
                        log::debug!("consumer {}: offsets of {}-{}: {e}", self.idx, tp.0, tp.1);
                        failed = true;
                    }
                }
            }
        }
        if failed {
            self.positions_failed();
        }
    }

    // -----------------------------------------------------------------------------------
    // Commits
    // -----------------------------------------------------------------------------------

    /// Start a commit of what is finished, unless one is in flight.
    fn commit_async(&mut self) {
        self.last_commit = Instant::now();
        if self.pending_commit.is_some() {
            return;
        }
        let offsets = self.books.uncommitted(Since::Requested);
        if offsets.is_empty() {
            return;
        }
        self.books.requested(&offsets);
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
        self.books.commit_answered(&offsets, result.is_ok());
    }

    /// Commit these offsets and wait for the answer, at most a request timeout.
    pub(crate) fn commit_sync(&mut self, offsets: Offsets) -> Result<(), Error> {
        let timeout = self.config.client.connection.request_timeout;
        self.commit_within(offsets, timeout)
    }

    fn commit_within(&mut self, offsets: Offsets, timeout: Duration) -> Result<(), Error> {
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
        self.books.commit_answered(&offsets, result.is_ok());
        result
    }

    // -----------------------------------------------------------------------------------
    // Stats
    // -----------------------------------------------------------------------------------

    /// Show `tp`'s position in the stats, once it has one.
    fn publish_position(&self, tp: &TopicPartition) {
        let Some(position) = self.books.position(tp) else {
            return;
        };
        let committed = self.books.committed(tp).unwrap_or(-1);
        let mut all = self.shared.progress.locked();
        let progress = all.entry(tp.clone()).or_insert(PartitionProgress {
            high_watermark: position,
            end_offset: position,
            position,
            committed,
            read_replica: None,
        });
        progress.position = position;
        progress.high_watermark = progress.high_watermark.max(position);
        progress.end_offset = progress.end_offset.max(position);
    }

    fn publish_assignment(&self) {
        self.shared
            .assignments
            .locked()
            .insert(self.idx, self.assignment());
    }
}

/// Act on group events (telling the host of each change), validate and reset positions
/// (telling it of truncations), and commit on the interval. A partition whose log diverged
/// with no reset policy to apply is an error until the caller seeks it.
pub(crate) fn service(host: &mut impl Host) -> Result<(), Error> {
    while let Some(change) = host.engine().next_change()? {
        host.on_change(&change);
        host.engine().complete(change);
    }
    host.engine().housekeep()?;
    if let Some(truncations) = host.engine().take_truncations() {
        host.on_change(&Change::Truncated(truncations));
    }
    host.engine().check_held()
}

/// Records for the host: at least one unless `timeout` passes first.
pub(crate) fn fill(
    host: &mut impl Host,
    out: &mut Vec<ConsumedRecord>,
    max: usize,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        host.engine().group.progress();
        service(host)?;
        host.engine().take_records(out, max);
        let now = Instant::now();
        if !out.is_empty() || now >= deadline {
            return Ok(());
        }
        // Wait in slices, so rebalances are acted on while nothing arrives.
        host.engine()
            .fetch(deadline.min(now + Duration::from_millis(100)))?;
    }
}

/// Stop within `deadline`: give the partitions up (telling the host), commit what is
/// finished (with `auto_commit`), leave the group.
pub(crate) fn shutdown(host: &mut impl Host, deadline: Instant) -> Result<(), Error> {
    let engine = host.engine();
    if engine.closed {
        return Ok(());
    }
    engine.closed = true;
    engine.prefetched = None; // its connections are dropped with the cluster
    let all = engine.assignment();
    let healthy = engine.stopped.is_none();
    if healthy && !all.is_empty() {
        host.on_change(&Change::Revoking(all.clone()));
    }
    let engine = host.engine();
    let mut result = Ok(());
    if healthy && engine.config.auto_commit {
        let offsets = engine.books.uncommitted(Since::Confirmed);
        let left = deadline.saturating_duration_since(Instant::now());
        result = engine.commit_within(offsets, left);
    }
    if !engine
        .group
        .close(engine.config.leave_group_on_close, deadline)
    {
        log::warn!(
            "consumer {}: the group thread did not finish by the close deadline",
            engine.idx
        );
    }
    engine.drop_parts(&all);
    result
}

/// `(partition, value)` pairs grouped by topic, topics in order.
fn by_topic<T>(
    items: impl IntoIterator<Item = (TopicPartition, T)>,
) -> BTreeMap<String, Vec<(i32, T)>> {
    let mut out: BTreeMap<String, Vec<(i32, T)>> = BTreeMap::new();
    for ((t, p), v) in items {
        out.entry(t).or_default().push((p, v));
    }
    out
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
