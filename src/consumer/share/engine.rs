//! The share member engine: share sessions with each leader, ShareFetch and
//! ShareAcknowledge, and the books of what the member acquired.
//!
//! ```text
//!  poll ─▶ queued acknowledgements ride on the next ShareFetch to their leader
//!          (partitions outside its session, or no fetch wanted: a ShareAcknowledge)
//!       ◀─ acquired records (each with its delivery count), the acknowledgements' outcome
//!  group thread (kpipe-group-i): ShareGroupHeartbeat, the assignment
//! ```
//!
//! One request is in flight per leader at a time, so a session's epochs follow each
//! other: 0 opens it (naming every partition, and carrying no acknowledgement), each answer
//! moves it on by one, and later requests name only partitions new to the session or with
//! acknowledgements, and those to forget. A session the broker lost (or a request whose
//! fate is unknown) starts again at 0. Records are fetched only when none wait to be handed
//! out, so nothing is acquired that cannot be worked on before its lock runs out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareFetchRequest};
use uuid::Uuid;

use crate::client::{
    self, ack_ranges, read_share_acknowledge, read_share_fetch, share_acknowledge_request,
    share_fetch_request, AckKind, AckRanges, Backoff, Cluster, KafkaCode, Pending, ShareAnswer,
    ShareFetchSpec, TopicPartition,
};
use crate::sync::Locked;

use super::super::config::{ConsumerConfig, ShareAcquireMode};
use super::super::error::Error;
use super::super::group::{Event, GroupHandle};
use super::super::record::ConsumedRecord;
use super::super::shared::Shared;
use super::ack::{AckOutcome, Acknowledge};
use super::books::{Books, Refusal, Taken};

/// A partition, by topic name (shared) and index.
type Part = (Arc<str>, i32);

/// The broker's default acquisition lock, until it names its own.
const DEFAULT_LOCK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fetch,
    Acknowledge,
}

#[derive(Debug)]
struct Flight {
    pending: Pending,
    kind: Kind,
    acks: Taken,
    /// When it was sent: the broker acquired its records after this, so their locks run
    /// out no later than this plus the lock (an answer that comes late does not extend it).
    sent: Instant,
}

/// Why acknowledgements were not settled as taken. They count alike in
/// `acknowledge_failures`, but say different things about the records.
#[derive(Debug)]
enum NotTaken {
    /// The broker answered no: its error, and the code it named.
    Refused(String, Option<KafkaCode>),
    /// No request carried them (no session open with the leader, or the request could not
    /// be sent): the broker never saw them.
    Unsent(String),
    /// The request carrying them was sent and failed before its answer came (a broker that
    /// died, a connection cut): the broker may have taken them or not.
    Unanswered(String),
}

impl NotTaken {
    /// What the request's failure `e` says of the acknowledgements it carried; `sent`:
    /// whether it went out.
    fn of(e: &client::Error, sent: bool) -> NotTaken {
        match e.kafka_code() {
            Some(code) => NotTaken::Refused(e.to_string(), Some(code)),
            None if sent => NotTaken::Unanswered(e.to_string()),
            None => NotTaken::Unsent(e.to_string()),
        }
    }

    /// For [`AckOutcome::error`].
    fn outcome(&self) -> String {
        match self {
            NotTaken::Refused(e, _) => e.clone(),
            NotTaken::Unsent(why) => format!("not sent: {why}"),
            NotTaken::Unanswered(e) => format!(
                "unknown: the request carrying them failed before its answer ({e}); the broker may have taken them"
            ),
        }
    }
}

/// The member's share session with one leader.
#[derive(Debug)]
struct Session {
    /// The epoch of the next request: 0 opens the session.
    epoch: i32,
    /// The partitions the broker's session holds (as of the requests sent).
    partitions: BTreeSet<Part>,
    flight: Option<Flight>,
    backoff: Backoff,
    retry_at: Instant,
}

/// One share member: its group thread, its connections to the leaders, its books.
pub(crate) struct ShareEngine {
    pub(crate) idx: usize,
    pub(crate) config: ConsumerConfig,
    cluster: Cluster,
    group: GroupHandle,
    pub(crate) shared: Arc<Shared>,
    member_id: String,
    books: Books,
    /// The assigned partitions and their topic ids.
    assigned: BTreeMap<Part, Uuid>,
    names: HashMap<Uuid, Arc<str>>,
    sessions: BTreeMap<i32, Session>,
    ready: VecDeque<ConsumedRecord>,
    /// Acknowledgement outcomes not yet collected by `take_outcomes`, when kept (a pull
    /// consumer reports them from `commit`; a pool only counts them).
    outcomes: Vec<AckOutcome>,
    pub(crate) keep_outcomes: bool,
    /// The acquisition lock the brokers last named.
    lock: Duration,
    stopped: Option<String>,
    closed: bool,
}

impl std::fmt::Debug for ShareEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareEngine")
            .field("idx", &self.idx)
            .field("group", &self.config.group)
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl ShareEngine {
    /// Share member `idx` on `cluster`; its group thread gets connections of its own.
    pub(crate) fn start(
        idx: usize,
        config: ConsumerConfig,
        cluster: Cluster,
        shared: Arc<Shared>,
    ) -> Result<ShareEngine, Error> {
        let member_id = Uuid::new_v4().to_string();
        let group_cluster =
            Cluster::connect_with(config.client.clone(), cluster.connector().clone())?;
        let group = GroupHandle::start_share(
            idx,
            &config,
            member_id.clone(),
            group_cluster,
            shared.clone(),
        )?;
        shared.assignments.locked().insert(idx, Vec::new());
        Ok(ShareEngine {
            idx,
            config,
            cluster,
            group,
            shared,
            member_id,
            books: Books::default(),
            assigned: BTreeMap::new(),
            names: HashMap::new(),
            sessions: BTreeMap::new(),
            ready: VecDeque::new(),
            outcomes: Vec::new(),
            keep_outcomes: false,
            lock: DEFAULT_LOCK,
            stopped: None,
            closed: false,
        })
    }

    /// Note progress for the `max_poll_interval` watchdog.
    pub(crate) fn note_progress(&mut self) {
        self.group.progress();
    }

    /// The partitions the coordinator assigned this member.
    pub(crate) fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned
            .keys()
            .map(|(t, p)| (t.to_string(), *p))
            .collect()
    }

    /// Take up the group thread's events.
    pub(crate) fn service(&mut self) -> Result<(), Error> {
        if let Some(why) = &self.stopped {
            return Err(Error::Stopped(why.clone()));
        }
        while let Some(event) = self.group.try_event() {
            match event {
                Event::Assigned { partitions, .. } => {
                    for (topic, p) in partitions {
                        match self.cluster.topic(&topic) {
                            Ok(info) => {
                                let id = info.id;
                                let name: Arc<str> = topic.as_str().into();
                                self.names.insert(id, name.clone());
                                self.assigned.insert((name, p), id);
                            }
                            Err(e) => log::warn!(
                                "share member {}: {topic}-{p} assigned but not in metadata: {e}",
                                self.idx
                            ),
                        }
                    }
                    self.publish_assignment();
                }
                Event::Revoke(partitions) => {
                    self.unassign(&partitions);
                    self.group.released(partitions);
                }
                Event::Lost(partitions) => self.unassign(&partitions),
                Event::Failed(e) => {
                    self.stopped = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn unassign(&mut self, partitions: &[TopicPartition]) {
        for (t, p) in partitions {
            self.assigned
                .retain(|(at, ap), _| !(**at == **t && ap == p));
        }
        self.publish_assignment();
    }

    fn publish_assignment(&self) {
        self.shared
            .assignments
            .locked()
            .insert(self.idx, self.assignment());
    }

    /// Hand out up to `max` records into `out`, fetching (and sending queued
    /// acknowledgements) as needed, waiting at most `timeout` for some to come.
    pub(crate) fn poll_into(
        &mut self,
        out: &mut Vec<ConsumedRecord>,
        max: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.note_progress();
        let deadline = Instant::now() + timeout;
        loop {
            self.service()?;
            if !self.ready.is_empty() {
                self.hand_out(out, max);
                return Ok(());
            }
            let busy = self.pump(deadline, true)?;
            if !self.ready.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline || self.shared.stopping() {
                return Ok(());
            }
            if !busy {
                // Nothing assigned, or every leader backing off: wait for the group.
                let until = deadline.min(now + Duration::from_millis(50));
                self.group.wait_event(until);
            }
        }
    }

    fn hand_out(&mut self, out: &mut Vec<ConsumedRecord>, max: usize) {
        let mut redelivered = 0;
        while out.len() < max {
            let Some(rec) = self.ready.pop_front() else {
                break;
            };
            self.books.handed(&rec.topic, rec.partition, rec.offset);
            if rec.delivery_count.is_some_and(|c| c > 1) {
                redelivered += 1;
            }
            out.push(rec);
        }
        if redelivered > 0 {
            self.shared.redelivered.add(redelivered);
        }
    }

    /// Acknowledge a record handed out; sent with the next request to its leader.
    pub(crate) fn acknowledge(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        kind: AckKind,
    ) -> Result<(), Error> {
        self.books
            .acknowledge(topic, partition, offset, kind)
            .map_err(|refusal| Error::NotAcquired {
                topic: topic.to_owned(),
                partition,
                offset,
                why: match refusal {
                    Refusal::NotHeld => "it is not held by this member: not handed out by poll, acknowledged and settled already, or released when the member closed".to_owned(),
                    Refusal::Sent(k) => format!("its acknowledgement ({k:?}) was sent already"),
                },
            })
    }

    /// Acknowledge as `kind` every record handed out and not acknowledged (and, with
    /// `buffered`, those not handed out yet). Returns how many.
    pub(crate) fn acknowledge_all(&mut self, kind: AckKind, buffered: bool) -> usize {
        if buffered {
            self.ready.clear();
        }
        self.books.acknowledge_all(kind, buffered)
    }

    /// When the first lock of a record handed out and not acknowledged runs out.
    pub(crate) fn first_deadline(&self) -> Option<Instant> {
        self.books.first_deadline()
    }

    /// The acquisition lock the brokers name.
    pub(crate) fn lock(&self) -> Duration {
        self.lock
    }

    /// Whether every leader of the member's sessions can renew locks (ShareAcknowledge v2,
    /// Kafka 4.2+).
    pub(crate) fn can_renew(&mut self) -> bool {
        let leaders: Vec<i32> = self.sessions.keys().copied().collect();
        !leaders.is_empty()
            && leaders.into_iter().all(|l| {
                self.cluster
                    .existing(l)
                    .and_then(|c| c.version::<ShareAcknowledgeRequest>().ok())
                    .is_some_and(|v| v >= 2)
            })
    }

    /// The outcomes of acknowledgements settled since the last call.
    pub(crate) fn take_outcomes(&mut self) -> Vec<AckOutcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// Forget outcomes nobody collected (they were counted and logged).
    pub(crate) fn clear_outcomes(&mut self) {
        self.outcomes.clear();
    }

    /// Send what is queued now, without fetching, and wait up to `deadline` for every
    /// answer (a fetch in flight is answered first; its records wait to be handed out).
    pub(crate) fn flush(&mut self, deadline: Instant) -> Result<(), Error> {
        loop {
            while self.in_flight() {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: "acknowledging",
                        after: Duration::ZERO,
                    });
                }
                self.wait(deadline);
            }
            if !self.books.has_queued() {
                return Ok(());
            }
            self.send_all(false);
            if !self.in_flight() {
                // Queued acknowledgements whose leader has no open session: nothing can
                // carry them (the records come back when their locks run out).
                self.fail_unsendable();
                return Ok(());
            }
        }
    }

    /// Release what is not processed (`handed`: what to make of records handed out and not
    /// acknowledged), send every acknowledgement, close the share sessions, leave the
    /// group; all by `deadline`.
    pub(crate) fn close(&mut self, handed: AckKind, deadline: Instant) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.books.acknowledge_all(handed, false);
        let mut result = Ok(());
        for _ in 0..2 {
            // A fetch answered meanwhile brings records nobody will see: released.
            self.acknowledge_all(AckKind::Release, true);
            if let Err(e) = self.flush(deadline) {
                result = Err(e);
                break;
            }
        }
        self.close_sessions(deadline);
        self.shared
            .assignments
            .locked()
            .insert(self.idx, Vec::new());
        let leave = self.config.leave_group_on_close;
        if !self.group.close(leave, deadline) {
            log::warn!(
                "share member {}: the group thread did not end by the close deadline",
                self.idx
            );
        }
        result
    }

    /// ShareAcknowledge with epoch -1 to every leader with an open session: the broker
    /// drops the session (and releases anything still acquired in it).
    fn close_sessions(&mut self, deadline: Instant) {
        let group = self.config.group.clone();
        let open: Vec<i32> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.epoch > 0 && s.flight.is_none())
            .map(|(l, _)| *l)
            .collect();
        for leader in open {
            let Some(conn) = self.cluster.existing(leader) else {
                continue;
            };
            let Ok(version) = conn.version::<ShareAcknowledgeRequest>() else {
                continue;
            };
            let req =
                share_acknowledge_request(&group, &self.member_id, -1, &BTreeMap::new(), version);
            let wait = deadline.saturating_duration_since(Instant::now());
            match conn.request_within(&req, wait.max(Duration::from_millis(1))) {
                Ok(resp) if resp.error_code != 0 => log::debug!(
                    "share member {}: closing the session with node {leader}: error {}",
                    self.idx,
                    resp.error_code
                ),
                Ok(_) => {}
                Err(e) => log::debug!(
                    "share member {}: closing the session with node {leader}: {e}",
                    self.idx
                ),
            }
        }
        self.sessions.clear();
    }

    fn in_flight(&self) -> bool {
        self.sessions.values().any(|s| s.flight.is_some())
    }

    /// Send to every leader what is due, then wait until an answer comes or `deadline`
    /// passes, and read the answers that came. Returns whether anything was in flight.
    fn pump(&mut self, deadline: Instant, fetch: bool) -> Result<bool, Error> {
        self.send_all(fetch);
        if !self.in_flight() {
            return Ok(false);
        }
        self.wait(deadline);
        Ok(true)
    }

    /// The leader of each assigned partition (those without one are left out, and their
    /// metadata refreshed).
    fn wanted(&mut self) -> BTreeMap<i32, BTreeSet<Part>> {
        let mut out: BTreeMap<i32, BTreeSet<Part>> = BTreeMap::new();
        let parts: Vec<Part> = self.assigned.keys().cloned().collect();
        for (t, p) in parts {
            match self.cluster.leader(&t, p) {
                Ok(l) => {
                    out.entry(l).or_default().insert((t, p));
                }
                Err(e) => log::debug!("share member {}: leader of {t}-{p}: {e}", self.idx),
            }
        }
        out
    }

    /// Send a request to each leader that has none in flight and something to say.
    fn send_all(&mut self, fetch: bool) {
        let wanted = self.wanted();
        let mut leaders: BTreeSet<i32> = wanted.keys().copied().collect();
        leaders.extend(
            self.sessions
                .iter()
                .filter(|(_, s)| !s.partitions.is_empty())
                .map(|(l, _)| *l),
        );
        // Where each partition with queued acknowledgements is led now.
        let mut ack_leaders: HashMap<Part, i32> = HashMap::new();
        for (t, p) in self.books.partitions() {
            if let Ok(l) = self.cluster.leader(&t, p) {
                leaders.insert(l);
                ack_leaders.insert((t, p), l);
            }
        }
        let now = Instant::now();
        let fetch = fetch && self.ready.is_empty();
        for leader in leaders {
            let s = self.sessions.entry(leader).or_insert_with(|| Session {
                epoch: 0,
                partitions: BTreeSet::new(),
                flight: None,
                backoff: self.config.client.backoff(),
                retry_at: now,
            });
            if s.flight.is_some() || now < s.retry_at {
                continue;
            }
            let open = s.epoch > 0;
            let want = wanted.get(&leader).cloned().unwrap_or_default();
            let acks = if open {
                self.books
                    .take_queued(|t, p| ack_leaders.get(&(t.clone(), p)) == Some(&leader))
            } else {
                Taken::new()
            };
            // Acknowledgements of a partition leaving the session (or never in it) go alone,
            // before the fetch that forgets it: a fetch that named it would also fetch it.
            let outside = acks.keys().any(|tp| !want.contains(tp));
            let forget: Vec<Part> = s.partitions.difference(&want).cloned().collect();
            let wants_fetch = fetch && (!want.is_empty() || !forget.is_empty());
            let kind = if !acks.is_empty() && (outside || !wants_fetch) {
                Kind::Acknowledge
            } else if wants_fetch {
                Kind::Fetch
            } else {
                continue;
            };
            self.send(leader, kind, acks, want, forget);
        }
    }

    fn send(
        &mut self,
        leader: i32,
        kind: Kind,
        acks: Taken,
        want: BTreeSet<Part>,
        forget: Vec<Part>,
    ) {
        let group = self.config.group.clone();
        let s = self.sessions.get_mut(&leader).expect("made by send_all");
        let ranges: BTreeMap<client::IdPartition, AckRanges> = acks
            .iter()
            .map(|((_, p), (id, list))| ((*id, *p), ack_ranges(list)))
            .collect();
        let sent = self.cluster.broker(leader).and_then(|conn| match kind {
            Kind::Acknowledge => {
                let version = conn.version::<ShareAcknowledgeRequest>()?;
                let req =
                    share_acknowledge_request(&group, &self.member_id, s.epoch, &ranges, version);
                conn.send_versioned(&req, version, true)
            }
            Kind::Fetch => {
                let version = conn.version::<ShareFetchRequest>()?;
                let id_of = |tp: &Part| self.assigned.get(tp).copied();
                let mut partitions: Vec<client::IdPartition> = if s.epoch == 0 {
                    want.iter()
                        .filter_map(|tp| Some((id_of(tp)?, tp.1)))
                        .collect()
                } else {
                    want.iter()
                        .filter(|tp| !s.partitions.contains(*tp))
                        .filter_map(|tp| Some((id_of(tp)?, tp.1)))
                        .collect()
                };
                for &(id, p) in ranges.keys() {
                    if !partitions.contains(&(id, p)) {
                        partitions.push((id, p));
                    }
                }
                let forget_ids: Vec<client::IdPartition> = forget
                    .iter()
                    .filter_map(|tp| {
                        let id = self.names.iter().find(|(_, n)| **n == tp.0)?.0;
                        Some((*id, tp.1))
                    })
                    .collect();
                let spec = ShareFetchSpec {
                    member_id: self.member_id.clone(),
                    epoch: s.epoch,
                    max_wait: self.config.fetch.max_wait,
                    min_bytes: self.config.fetch.min_bytes,
                    max_bytes: self.config.fetch.max_bytes,
                    max_records: self.config.max_poll_records.min(i32::MAX as usize) as i32,
                    record_limit: self.config.share_acquire_mode == ShareAcquireMode::RecordLimit,
                    partitions,
                    acks: ranges.clone(),
                    forget: if s.epoch == 0 { Vec::new() } else { forget_ids },
                };
                conn.send_versioned(&share_fetch_request(&group, &spec, version), version, true)
            }
        });
        match sent {
            Ok(pending) => {
                if kind == Kind::Fetch {
                    s.partitions = want;
                }
                s.flight = Some(Flight {
                    pending,
                    kind,
                    acks,
                    sent: Instant::now(),
                });
            }
            Err(e) => {
                self.cluster.note_error(&e, None);
                let s = self.sessions.get_mut(&leader).expect("made by send_all");
                Self::reset(s, &e);
                self.failed_acks(acks, || NotTaken::of(&e, false));
                self.shared.fetch_errors.add(1);
                log::debug!("share member {}: sending to node {leader}: {e}", self.idx);
            }
        }
    }

    /// The session is lost (or its state unknown): open a new one, after a backoff unless
    /// the broker just said so.
    fn reset(s: &mut Session, e: &client::Error) {
        s.epoch = 0;
        s.partitions.clear();
        let session_error = matches!(
            e.kafka_code(),
            Some(KafkaCode::ShareSessionNotFound | KafkaCode::InvalidShareSessionEpoch)
        );
        s.retry_at = if session_error {
            Instant::now()
        } else {
            Instant::now() + s.backoff.next_delay()
        };
    }

    /// Wait until an answer comes or `deadline` passes; read those that came.
    fn wait(&mut self, deadline: Instant) {
        loop {
            let flying: Vec<i32> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.flight.is_some())
                .map(|(l, _)| *l)
                .collect();
            if flying.is_empty() {
                return;
            }
            let mut any = false;
            for &leader in &flying {
                let ready = self
                    .cluster
                    .existing(leader)
                    .is_none_or(|c| c.poll_response(Duration::ZERO));
                if ready {
                    self.receive(leader);
                    any = true;
                }
            }
            let now = Instant::now();
            if any || now >= deadline {
                return;
            }
            let left = deadline - now;
            let slice = if flying.len() == 1 {
                left
            } else {
                left.min(Duration::from_millis(2))
            };
            if let Some(c) = self.cluster.existing(flying[0]) {
                c.poll_response(slice);
            }
        }
    }

    /// Read leader `leader`'s answer.
    fn receive(&mut self, leader: i32) {
        let Some(s) = self.sessions.get_mut(&leader) else {
            return;
        };
        let Some(flight) = s.flight.take() else {
            return;
        };
        let max_decompressed = self.config.fetch.max_decompressed;
        let answer: client::Result<ShareAnswer> = match self.cluster.existing(leader) {
            None => Err(client::Error::Closed {
                broker: format!("node {leader}"),
            }),
            Some(conn) => {
                let broker = conn.broker().to_owned();
                match flight.kind {
                    Kind::Fetch => {
                        conn.receive::<ShareFetchRequest>(flight.pending)
                            .and_then(|resp| {
                                conn.throttle(resp.throttle_time_ms);
                                read_share_fetch(&resp, &broker, max_decompressed)
                            })
                    }
                    Kind::Acknowledge => conn
                        .receive::<ShareAcknowledgeRequest>(flight.pending)
                        .and_then(|resp| {
                            conn.throttle(resp.throttle_time_ms);
                            read_share_acknowledge(&resp, &broker)
                        }),
                }
            }
        };
        match answer {
            Ok(answer) => {
                let s = self.sessions.get_mut(&leader).expect("looked up above");
                s.epoch = next_epoch(s.epoch);
                s.backoff = self.config.client.backoff();
                self.answered(leader, flight.acks, flight.sent, answer);
            }
            Err(e) => {
                let s = self.sessions.get_mut(&leader).expect("looked up above");
                Self::reset(s, &e);
                self.cluster.note_error(&e, None);
                self.shared.fetch_errors.add(1);
                if e.is_retriable() {
                    log::debug!("share member {}: node {leader}: {e}", self.idx);
                } else {
                    log::warn!("share member {}: node {leader}: {e}", self.idx);
                }
                self.failed_acks(flight.acks, || NotTaken::of(&e, true));
            }
        }
    }

    fn answered(&mut self, leader: i32, acks: Taken, sent: Instant, answer: ShareAnswer) {
        if let Some(lock) = answer.lock {
            self.lock = lock;
        }
        let deadline = sent + self.lock;
        let mut by_id: HashMap<(Uuid, i32), client::Result<()>> = HashMap::new();
        let mut fetched = Vec::new();
        for p in answer.partitions {
            by_id.insert(p.partition, p.acked);
            fetched.push((p.partition, p.fetched));
        }
        for ((topic, partition), (id, list)) in acks {
            let result = by_id
                .remove(&(id, partition))
                .unwrap_or(Ok(()))
                .map_err(|e| NotTaken::Refused(e.to_string(), e.kafka_code()));
            self.settled(&topic, partition, list, result, deadline);
        }
        for ((id, partition), result) in fetched {
            let Some(topic) = self.names.get(&id).cloned() else {
                log::debug!(
                    "share member {}: an answer for unknown topic id {id}",
                    self.idx
                );
                continue;
            };
            match result {
                Ok(acquired) => {
                    for off in acquired.gaps {
                        self.books
                            .acquired(&topic, partition, id, off, deadline, true);
                    }
                    for (rec, count) in acquired.records {
                        let delivery = count.max(1) as u16;
                        self.books
                            .acquired(&topic, partition, id, rec.offset, deadline, false);
                        self.ready.push_back(ConsumedRecord {
                            topic: topic.clone(),
                            partition,
                            offset: rec.offset,
                            timestamp: rec.timestamp,
                            key: rec.key,
                            value: rec.value,
                            headers: rec.headers,
                            delivery_count: Some(delivery),
                        });
                    }
                }
                Err(e) => {
                    self.shared.fetch_errors.add(1);
                    if e.invalidates_metadata() {
                        // The partition stays in the session, as it stays in the broker's:
                        // if its leader moved, the next request to this one forgets it (the
                        // broker answers the error at every fetch until then); if not,
                        // nothing changes.
                        self.cluster.note_error(&e, Some(&topic));
                        log::debug!("share member {}: {topic}-{partition}: {e}", self.idx);
                        // Not again before a retry backoff: metadata that still names this
                        // leader would otherwise make a loop of fetches and metadata requests.
                        if let Some(s) = self.sessions.get_mut(&leader) {
                            s.retry_at = Instant::now() + s.backoff.next_delay();
                        }
                    } else if e.is_retriable() {
                        log::debug!("share member {}: {topic}-{partition}: {e}", self.idx);
                    } else {
                        log::error!("share member {}: {topic}-{partition}: {e}", self.idx);
                        self.stopped = Some(e.to_string());
                    }
                }
            }
        }
    }

    /// Note the outcome of acknowledgements of one partition.
    fn settled(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        list: Vec<(i64, AckKind)>,
        result: Result<(), NotTaken>,
        renewed_to: Instant,
    ) {
        let ok = result.is_ok();
        // Only what the answer settled counts: an acknowledgement given again after a
        // renewal was sent is still to come.
        let list = self.books.settle(topic, partition, &list, ok, renewed_to);
        if list.is_empty() {
            return;
        }
        let s = &self.shared;
        if ok {
            for &(_, kind) in &list {
                match kind {
                    AckKind::Accept => s.acknowledged.add(1),
                    AckKind::Release => s.released.add(1),
                    AckKind::Reject => s.rejected.add(1),
                    AckKind::Renew => s.renewed.add(1),
                    AckKind::Gap => {}
                }
            }
        } else {
            // A refused renewal is not counted: its record is still held, and its final
            // acknowledgement, taken or not, counts when it is settled.
            let records = list
                .iter()
                .filter(|(_, k)| !matches!(k, AckKind::Gap | AckKind::Renew))
                .count() as u64;
            s.ack_failures.add(records);
            let (n, idx) = (list.len(), self.idx);
            match &result {
                Ok(()) => {}
                Err(NotTaken::Refused(e, Some(KafkaCode::InvalidRecordState))) => log::warn!(
                    "share member {idx}: {n} acknowledgement(s) of {topic}-{partition} not taken: {e}; most likely their acquisition lock ran out first (a handler slower than the group's share.record.lock.duration.ms, or a fetch the broker answered late, as while another broker of the cluster is down), and they are delivered again"
                ),
                Err(NotTaken::Refused(e, _)) => log::warn!(
                    "share member {idx}: {n} acknowledgement(s) of {topic}-{partition} not taken: {e}; they are delivered again when their acquisition lock runs out"
                ),
                Err(NotTaken::Unsent(why)) => log::warn!(
                    "share member {idx}: {n} acknowledgement(s) of {topic}-{partition} not sent: {why}; they are delivered again when their acquisition lock runs out"
                ),
                Err(NotTaken::Unanswered(e)) => log::warn!(
                    "share member {idx}: {n} acknowledgement(s) of {topic}-{partition} may or may not have been taken: the request carrying them failed before its answer ({e}); those the broker did not take are delivered again"
                ),
            }
        }
        if self.keep_outcomes {
            self.outcomes.push(AckOutcome {
                topic: topic.to_string(),
                partition,
                acknowledged: list
                    .into_iter()
                    .filter(|(_, k)| *k != AckKind::Gap)
                    .filter_map(|(o, k)| Some((o, Acknowledge::from_kind(k)?)))
                    .collect(),
                error: result.err().map(|e| e.outcome()),
            });
        }
    }

    /// Acknowledgements a request did not settle, each partition's as `why` says.
    fn failed_acks(&mut self, acks: Taken, why: impl Fn() -> NotTaken) {
        let now = Instant::now();
        for ((topic, partition), (_, list)) in acks {
            self.settled(&topic, partition, list, Err(why()), now);
        }
    }

    /// Queued acknowledgements that no open session can carry: settled as failed.
    fn fail_unsendable(&mut self) {
        let taken = self.books.take_queued(|_, _| true);
        self.failed_acks(taken, || {
            NotTaken::Unsent(
                "no share session is open with the partition's leader to send them on".into(),
            )
        });
        self.books.tidy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_failed_before_its_answer_leaves_its_acknowledgements_unknown() {
        let closed = || client::Error::Closed {
            broker: "node 1".into(),
        };
        assert!(matches!(
            NotTaken::of(&closed(), false),
            NotTaken::Unsent(_)
        ));
        let unknown = NotTaken::of(&closed(), true);
        assert!(matches!(unknown, NotTaken::Unanswered(_)));
        assert!(unknown.outcome().starts_with("unknown:"), "{unknown:?}");
        // An answer with an error code is a refusal, sent or not.
        let refused = client::Error::Broker {
            code: KafkaCode::InvalidRecordState,
            at: client::Location::default(),
            message: None,
        };
        assert!(matches!(
            NotTaken::of(&refused, true),
            NotTaken::Refused(_, Some(KafkaCode::InvalidRecordState))
        ));
    }
}
