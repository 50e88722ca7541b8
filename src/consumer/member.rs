//! One member thread: join, sync, fetch, hand records to the handler, heartbeat between
//! records, commit what was finished, and leave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{
    self, decode_assignment, decode_subscription, encode_assignment, encode_subscription,
    heartbeat, join_group, leave_group, offset_commit, offset_fetch, sync_group, Assignment,
    Assignor, Backoff, Batches, Cluster, Connector, FetchInFlight, FetchTarget, JoinParams,
    KafkaCode, OffsetSpec, Subscription, TopicPartition,
};

use super::{
    ConsumedRecord, ConsumerConfig, OffsetReset, OnHandlerError, PartitionProgress, PoolShared,
};
use crate::sync::Locked;

/// Why the member loop ended early.
enum Exit {
    /// Stop requested (close, shutdown flag, or the Stop policy).
    Stopping,
    /// Something the member cannot recover from; the pool stops with this reason.
    Fatal(String),
}

/// The outcome of handing one record to the handler.
enum Handled {
    Done,
    Skipped,
    /// Stop requested while retrying, or the Stop policy: the record is not done.
    Interrupted,
    /// A rebalance began while retrying: the record is left to the partition's next owner.
    Abandoned,
}

struct Member {
    idx: usize,
    config: ConsumerConfig,
    shared: Arc<PoolShared>,
    cluster: Cluster,
    coordinator: Option<i32>,
    member_id: String,
    generation: i32,
    /// Set when the group is rebalancing and this member must rejoin.
    rejoin: bool,
    assignment: Vec<TopicPartition>,
    topic_names: HashMap<String, Arc<str>>,
    /// Next offset to fetch, per assigned partition.
    positions: BTreeMap<TopicPartition, i64>,
    /// Next offset to commit: one past the last record finished.
    done: BTreeMap<TopicPartition, i64>,
    committed: BTreeMap<TopicPartition, i64>,
    /// The next fetch, sent before the handler works through the current batch.
    prefetched: Option<FetchInFlight>,
    /// Delay before the next fetch after a failed one: grows while fetches fail, starts
    /// over after one succeeds.
    fetch_backoff: Backoff,
    last_heartbeat: Instant,
    last_commit: Instant,
    last_poll: Instant,
}

/// One partition's share of a fetch response, its batches not yet decoded.
struct Fetched {
    tp: TopicPartition,
    topic: Arc<str>,
    batches: Batches,
    /// Where the next fetch starts.
    next: i64,
}

pub(crate) fn run<H, E>(
    idx: usize,
    mut config: ConsumerConfig,
    cluster: Result<Cluster, Connector>,
    shared: Arc<PoolShared>,
    mut handler: H,
) where
    H: FnMut(&ConsumedRecord) -> Result<(), E>,
    E: Display,
{
    // A member expands one batch at a time, as the handler gets to it.
    config.fetch.decode_lazily = true;
    let cluster = match cluster {
        Ok(c) => c,
        Err(connector) => match connect(&config, connector, &shared) {
            Some(c) => c,
            None => return,
        },
    };
    let now = Instant::now();
    let fetch_backoff = config.client.backoff();
    let mut m = Member {
        idx,
        config,
        shared,
        cluster,
        coordinator: None,
        member_id: String::new(),
        generation: -1,
        rejoin: true,
        assignment: Vec::new(),
        topic_names: HashMap::new(),
        positions: BTreeMap::new(),
        done: BTreeMap::new(),
        committed: BTreeMap::new(),
        prefetched: None,
        fetch_backoff,
        last_heartbeat: now,
        last_commit: now,
        last_poll: now,
    };
    if let Exit::Fatal(why) = m.main_loop(&mut handler) {
        log::error!("consumer {idx}: {why}");
        m.shared.stop_pool(why);
    }
    m.finish();
}

fn connect(config: &ConsumerConfig, connector: Connector, shared: &PoolShared) -> Option<Cluster> {
    let mut backoff = config.client.backoff();
    loop {
        match Cluster::connect_with(config.client.clone(), connector.clone()) {
            Ok(c) => return Some(c),
            // Refused credentials or certificates, or a bad setting: retrying cannot help.
            Err(e) if !e.is_retriable() => {
                shared.stop_pool(format!("consumer: connecting: {e}"));
                return None;
            }
            Err(e) => {
                log::warn!("consumer: connecting: {e}");
                if shared.stopping() {
                    return None;
                }
                std::thread::sleep(backoff.next_delay());
            }
        }
    }
}

impl Member {
    fn main_loop<H, E>(&mut self, handler: &mut H) -> Exit
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        loop {
            if self.shared.stopping() {
                return Exit::Stopping;
            }
            if self.rejoin {
                if let Err(exit) = self.join() {
                    return exit;
                }
                continue;
            }
            if let Err(exit) = self.maintain() {
                return exit;
            }
            if self.rejoin {
                continue;
            }
            if self.assignment.is_empty() {
                // An idle member (more threads than partitions) just keeps its session.
                std::thread::sleep(Duration::from_millis(50).min(self.config.heartbeat_interval));
                continue;
            }
            self.last_poll = Instant::now();
            let batch = match self.fetch() {
                Ok(b) => b,
                Err(exit) => return exit,
            };
            if let Err(exit) = self.process(batch, handler) {
                return exit;
            }
        }
    }

    /// (group, generation, member id), as group requests name the member.
    fn identity(&self) -> (String, i32, String) {
        (
            self.config.group.clone(),
            self.generation,
            self.member_id.clone(),
        )
    }

    /// A fresh backoff of the client's retry policy.
    fn backoff(&self) -> Backoff {
        self.config.client.backoff()
    }

    /// Pause for the retry backoff before fetching again, keeping heartbeats going. The
    /// delay grows with each failure in a row, and starts over after a fetch succeeds.
    fn pause_to_retry(&mut self) -> Result<(), Exit> {
        let delay = self.fetch_backoff.next_delay();
        if self.pause(delay) {
            Ok(())
        } else {
            Err(Exit::Stopping)
        }
    }

    /// Sleep up to `d`, in slices, keeping heartbeats going. Returns false if stopping.
    fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.shared.stopping() {
                return false;
            }
            let _ = self.maintain();
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        !self.shared.stopping()
    }

    fn coordinator_conn(&mut self) -> client::Result<&mut client::Connection> {
        let id = match self.coordinator {
            Some(id) => id,
            None => {
                let id = self.cluster.find_coordinator(&self.config.group)?;
                self.coordinator = Some(id);
                id
            }
        };
        match self.cluster.dedicated(id) {
            Ok(c) => Ok(c),
            Err(e) => {
                self.coordinator = None;
                Err(e)
            }
        }
    }

    fn coordinator_error(&mut self, e: &client::Error) {
        let moved = matches!(
            e.kafka_code(),
            Some(KafkaCode::NotCoordinator) | Some(KafkaCode::CoordinatorNotAvailable)
        );
        if moved || e.kafka_code().is_none() {
            self.coordinator = None;
        }
    }

    /// Join the group and take up the assignment, retrying until it works or we stop.
    fn join(&mut self) -> Result<(), Exit> {
        // Eager rebalancing: everything is given up first, committed up to what is done.
        if !self.assignment.is_empty() {
            self.commit();
            self.revoke_all();
        }
        let mut backoff = self.backoff();
        loop {
            if self.shared.stopping() {
                return Err(Exit::Stopping);
            }
            match self.try_join() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let code = e.kafka_code();
                    match code {
                        Some(KafkaCode::UnknownMemberId) => self.member_id.clear(),
                        Some(KafkaCode::InconsistentGroupProtocol)
                        | Some(KafkaCode::GroupAuthorizationFailed)
                        | Some(KafkaCode::InvalidSessionTimeout)
                        | Some(KafkaCode::InvalidGroupId)
                        | Some(KafkaCode::GroupMaxSizeReached)
                        | Some(KafkaCode::FencedInstanceId)
                        | Some(KafkaCode::TopicAuthorizationFailed) => {
                            return Err(Exit::Fatal(format!(
                                "cannot join group {:?}: {e}",
                                self.config.group
                            )))
                        }
                        _ => self.coordinator_error(&e),
                    }
                    if matches!(
                        code,
                        Some(KafkaCode::RebalanceInProgress)
                            | Some(KafkaCode::IllegalGeneration)
                            | Some(KafkaCode::UnknownMemberId)
                    ) {
                        continue; // rejoin at once
                    }
                    log::debug!("consumer {}: join: {e}", self.idx);
                    let delay = backoff.next_delay();
                    if !self.pause(delay) {
                        return Err(Exit::Stopping);
                    }
                }
            }
        }
    }

    fn try_join(&mut self) -> client::Result<()> {
        let subscription = Subscription {
            topics: self.config.topics.clone(),
            ..Subscription::default()
        };
        let metadata = encode_subscription(&subscription, self.config.assignor);
        let (group, member_id) = (self.config.group.clone(), self.member_id.clone());
        let params = JoinParams {
            group: &group,
            member_id: &member_id,
            instance_id: None,
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.max_poll_interval,
            protocols: vec![(self.config.assignor.name(), metadata)],
        };
        let joined = join_group(self.coordinator_conn()?, &params)?;
        self.member_id = joined.member_id.clone();
        let assignments = if joined.leader == joined.member_id {
            self.lead(&joined.protocol, &joined.members)?
        } else {
            Vec::new()
        };
        let timeout = self.config.max_poll_interval + Duration::from_secs(5);
        let raw = sync_group(
            self.coordinator_conn()?,
            &group,
            &joined,
            None,
            assignments,
            timeout,
        )?;
        let assignment = decode_assignment(&raw).map_err(|detail| client::Error::Protocol {
            broker: "coordinator".into(),
            detail,
        })?;
        self.generation = joined.generation;
        self.rejoin = false;
        self.shared.rebalances.add(1);
        let now = Instant::now();
        self.last_heartbeat = now;
        self.last_commit = now;
        self.last_poll = now;
        log::info!(
            "consumer {} joined {:?} generation {} as {}: {:?}",
            self.idx,
            self.config.group,
            joined.generation,
            if joined.leader == joined.member_id {
                "leader"
            } else {
                "follower"
            },
            assignment
        );
        self.take_up(assignment)
    }

    /// As leader: compute every member's assignment.
    fn lead(
        &mut self,
        protocol: &str,
        members: &[(String, bytes::Bytes)],
    ) -> client::Result<Vec<(String, bytes::Bytes)>> {
        let assignor = Assignor::from_name(protocol).unwrap_or(self.config.assignor);
        let mut subscriptions = BTreeMap::new();
        let mut topics = BTreeSet::new();
        for (id, meta) in members {
            let subscribed =
                decode_subscription(meta).map_err(|detail| client::Error::Protocol {
                    broker: "coordinator".into(),
                    detail: format!("member {id}: {detail}"),
                })?;
            topics.extend(subscribed.topics.iter().cloned());
            subscriptions.insert(id.clone(), subscribed);
        }
        let mut counts = BTreeMap::new();
        for t in topics {
            self.cluster.invalidate(Some(&t));
            match self.cluster.topic(&t) {
                Ok(info) => {
                    counts.insert(t, info.partitions.len() as i32);
                }
                Err(client::Error::UnknownTopic { .. }) => {
                    log::warn!("consumer {}: subscribed topic {t} does not exist", self.idx)
                }
                Err(e) => return Err(e),
            }
        }
        let plan = assignor.assign(&subscriptions, &counts);
        Ok(plan
            .iter()
            .map(|(m, a)| (m.clone(), encode_assignment(a)))
            .collect())
    }

    /// Start on a new assignment: committed offsets, or the reset policy.
    fn take_up(&mut self, assignment: Assignment) -> client::Result<()> {
        self.assignment = assignment
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        for t in assignment.keys() {
            self.topic_names
                .entry(t.clone())
                .or_insert_with(|| Arc::from(t.as_str()));
        }
        let group = self.config.group.clone();
        let parts = self.assignment.clone();
        let committed = offset_fetch(self.coordinator_conn()?, &group, &parts)?;
        self.committed = committed.clone();
        self.positions.clear();
        for (t, ps) in &assignment {
            let missing: Vec<i32> = ps
                .iter()
                .copied()
                .filter(|p| !committed.contains_key(&(t.clone(), *p)))
                .collect();
            if !missing.is_empty() {
                for (p, o) in self.reset_offsets(t, &missing)? {
                    self.positions.insert((t.clone(), p), o);
                }
            }
            for p in ps {
                if let Some(&o) = committed.get(&(t.clone(), *p)) {
                    self.positions.insert((t.clone(), *p), o);
                }
            }
        }
        self.done = self.positions.clone();
        self.shared
            .assignments
            .locked()
            .insert(self.idx, self.assignment.clone());
        let mut progress = self.shared.progress.locked();
        for tp in &self.assignment {
            progress.insert(
                tp.clone(),
                PartitionProgress {
                    high_watermark: self.positions[tp],
                    position: self.positions[tp],
                    committed: committed.get(tp).copied().unwrap_or(-1),
                },
            );
        }
        Ok(())
    }

    fn reset_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> client::Result<Vec<(i32, i64)>> {
        let spec = match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                return Err(client::Error::Config {
                    field: "offset_reset",
                    reason: format!(
                        "{topic} partitions {partitions:?} have no valid committed offset and the policy is Error"
                    ),
                })
            }
        };
        Ok(self
            .cluster
            .list_offsets(topic, partitions, spec)?
            .into_iter()
            .map(|o| (o.partition, o.offset))
            .collect())
    }

    fn revoke_all(&mut self) {
        self.drop_prefetch();
        let mut progress = self.shared.progress.locked();
        for tp in &self.assignment {
            progress.remove(tp);
        }
        drop(progress);
        self.shared.assignments.locked().remove(&self.idx);
        self.assignment.clear();
        self.positions.clear();
        self.done.clear();
    }

    /// Heartbeat and commit when due; notice rebalances and poll-interval overruns.
    fn maintain(&mut self) -> Result<(), Exit> {
        let now = Instant::now();
        if self.generation >= 0
            && !self.rejoin
            && now - self.last_heartbeat >= self.config.heartbeat_interval
        {
            self.last_heartbeat = now;
            let (group, generation, member) = self.identity();
            let result = self
                .coordinator_conn()
                .and_then(|c| heartbeat(c, &group, generation, &member, None));
            if let Err(e) = result {
                match e.kafka_code() {
                    Some(KafkaCode::RebalanceInProgress) => {
                        // Commit while the generation is still ours, then rejoin.
                        self.commit();
                        self.rejoin = true;
                    }
                    Some(KafkaCode::UnknownMemberId) | Some(KafkaCode::IllegalGeneration) => {
                        // We were dropped: what is not committed is no longer ours to commit.
                        log::warn!(
                            "consumer {}: lost its partitions ({e}); rejoining",
                            self.idx
                        );
                        if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                            self.member_id.clear();
                        }
                        self.revoke_all();
                        self.generation = -1;
                        self.rejoin = true;
                    }
                    Some(KafkaCode::FencedInstanceId) => {
                        return Err(Exit::Fatal(format!(
                            "fenced by another member with our instance id: {e}"
                        )))
                    }
                    _ => {
                        log::debug!("consumer {}: heartbeat: {e}", self.idx);
                        self.coordinator_error(&e);
                    }
                }
            }
        }
        if !self.rejoin && now - self.last_commit >= self.config.commit_interval {
            self.commit();
        }
        if !self.rejoin
            && !self.assignment.is_empty()
            && self.last_poll.elapsed() > self.config.max_poll_interval
        {
            log::warn!(
                "consumer {}: {:?} between fetches exceeds max_poll_interval ({:?}); leaving the group to rejoin (the handler is too slow)",
                self.idx,
                self.last_poll.elapsed(),
                self.config.max_poll_interval
            );
            self.commit();
            self.leave();
            self.revoke_all();
            self.generation = -1;
            self.rejoin = true;
        }
        Ok(())
    }

    /// Commit every partition whose finished offset moved. Returns whether all succeeded.
    fn commit(&mut self) -> bool {
        self.last_commit = Instant::now();
        let pending: BTreeMap<TopicPartition, i64> = self
            .done
            .iter()
            .filter(|(tp, o)| self.committed.get(*tp) != Some(*o))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        if pending.is_empty() || self.generation < 0 {
            return true;
        }
        let (group, generation, member) = self.identity();
        let result = self
            .coordinator_conn()
            .and_then(|c| offset_commit(c, &group, generation, &member, None, &pending));
        match result {
            Ok(results) => {
                let mut all = true;
                let mut shared = self.shared.committed.locked();
                let mut progress = self.shared.progress.locked();
                for (tp, r) in results {
                    match r {
                        Ok(()) => {
                            let o = pending[&tp];
                            self.committed.insert(tp.clone(), o);
                            shared.insert(tp.clone(), o);
                            if let Some(p) = progress.get_mut(&tp) {
                                p.committed = o;
                            }
                        }
                        Err(e) => {
                            all = false;
                            self.shared.commit_failures.add(1);
                            log::warn!(
                                "consumer {}: commit of {}-{} refused: {e}",
                                self.idx,
                                tp.0,
                                tp.1
                            );
                        }
                    }
                }
                all
            }
            Err(e) => {
                self.shared.commit_failures.add(1);
                log::warn!("consumer {}: commit failed: {e}", self.idx);
                self.coordinator_error(&e);
                false
            }
        }
    }

    fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        let (group, member) = (
            self.config.group.clone(),
            std::mem::take(&mut self.member_id),
        );
        if let Err(e) = self
            .coordinator_conn()
            .and_then(|c| leave_group(c, &group, &member, None))
        {
            log::debug!("consumer {}: leaving: {e}", self.idx);
        }
    }

    /// Fetch targets for the assigned partitions, from `offset(tp)`.
    fn targets(&mut self, offset: impl Fn(&TopicPartition) -> i64) -> Vec<FetchTarget> {
        let mut targets = Vec::with_capacity(self.assignment.len());
        for tp in &self.assignment {
            let id = match self.cluster.topic(&tp.0) {
                Ok(info) => info.id,
                Err(e) => {
                    log::debug!("consumer {}: metadata for {}: {e}", self.idx, tp.0);
                    continue;
                }
            };
            targets.push(FetchTarget {
                topic: tp.0.clone(),
                topic_id: id,
                partition: tp.1,
                offset: offset(tp),
            });
        }
        targets
    }

    /// Read a prefetch nobody will use (the assignment or positions changed), so the
    /// connections stay in step.
    fn drop_prefetch(&mut self) {
        if let Some(f) = self.prefetched.take() {
            let _ = self.cluster.receive_fetch(&self.config.fetch, f);
        }
    }

    /// Fetch the assigned partitions once (the response to the prefetch, if one was sent),
    /// then send the next fetch so the brokers work while the handler does.
    fn fetch(&mut self) -> Result<Vec<Fetched>, Exit> {
        let (asked, results) = match self.prefetched.take() {
            Some(f) => {
                let asked: BTreeMap<TopicPartition, i64> = f
                    .targets()
                    .map(|t| ((t.topic.clone(), t.partition), t.offset))
                    .collect();
                (asked, self.cluster.receive_fetch(&self.config.fetch, f))
            }
            None => {
                let positions = self.positions.clone();
                let targets = self.targets(|tp| positions[tp]);
                let asked = targets
                    .iter()
                    .map(|t| ((t.topic.clone(), t.partition), t.offset))
                    .collect();
                (asked, self.cluster.fetch(&self.config.fetch, &targets))
            }
        };
        let results = match results {
            Ok(r) => {
                self.fetch_backoff = self.backoff();
                r
            }
            Err(e) => {
                log::debug!("consumer {}: fetch: {e}", self.idx);
                self.shared.fetch_errors.add(1);
                self.pause_to_retry()?;
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        let mut errors = 0;
        for r in results {
            let tp = (r.topic.clone(), r.partition);
            // Skip what no longer matches: revoked partitions, or positions that moved.
            if self.positions.get(&tp) != asked.get(&tp) {
                continue;
            }
            match r.result {
                Ok(part) => {
                    let topic = self
                        .topic_names
                        .get(&r.topic)
                        .cloned()
                        .unwrap_or_else(|| Arc::from(r.topic.as_str()));
                    if let Some(p) = self.shared.progress.locked().get_mut(&tp) {
                        p.high_watermark = part.high_watermark;
                    }
                    out.push(Fetched {
                        tp,
                        topic,
                        batches: part.batches,
                        next: part.next_offset,
                    });
                }
                Err(e) if e.kafka_code() == Some(KafkaCode::OffsetOutOfRange) => {
                    log::warn!(
                        "consumer {}: {}-{} offset out of range; applying {:?}",
                        self.idx,
                        tp.0,
                        tp.1,
                        self.config.offset_reset
                    );
                    match self.reset_offsets(&tp.0, &[tp.1]) {
                        Ok(v) => {
                            for (p, o) in v {
                                self.positions.insert((tp.0.clone(), p), o);
                                self.done.insert((tp.0.clone(), p), o);
                            }
                        }
                        Err(e) => return Err(Exit::Fatal(e.to_string())),
                    }
                }
                Err(e) => {
                    errors += 1;
                    log::debug!("consumer {}: fetch {}-{}: {e}", self.idx, tp.0, tp.1);
                }
            }
        }
        if errors > 0 && out.iter().all(|f| f.batches.is_empty()) {
            self.pause_to_retry()?;
        } else if !self.shared.stopping() && !self.rejoin {
            let next: BTreeMap<TopicPartition, i64> =
                out.iter().map(|f| (f.tp.clone(), f.next)).collect();
            let positions = self.positions.clone();
            let targets = self.targets(|tp| next.get(tp).copied().unwrap_or(positions[tp]));
            self.prefetched = self.cluster.send_fetch(&self.config.fetch, &targets).ok();
        }
        Ok(out)
    }

    /// Hand a fetched batch to the handler, record by record.
    fn process<H, E>(&mut self, batch: Vec<Fetched>, handler: &mut H) -> Result<(), Exit>
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        let mut decoded = Vec::new();
        for Fetched {
            tp,
            topic,
            mut batches,
            next,
        } in batch
        {
            // What was finished is noted in `done` (and the shared progress) only before
            // maintenance, which may commit it, and when the partition's records end: per
            // record, a map insert, a key clone and a lock cost more than a small handler.
            let mut finished: Option<i64> = None;
            let mut handled = 0u64;
            let mut any = false;
            loop {
                decoded.clear();
                match batches.next_batch(&mut decoded) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        // A corrupt batch: what came before it is done; fetch it again
                        // from there after a pause (the prefetch, from further on, is
                        // dropped because the position no longer matches it).
                        self.note_finished(&tp, finished, handled);
                        // `positions` still holds where this fetch started.
                        let resume = finished.or(self.positions.get(&tp).copied());
                        log::warn!(
                            "consumer {}: {}-{}: {e}; fetching again from {:?}",
                            self.idx,
                            tp.0,
                            tp.1,
                            resume
                        );
                        if let Some(at) = resume {
                            self.positions.insert(tp.clone(), at);
                        }
                        return self.pause_to_retry();
                    }
                }
                for fetched in decoded.drain(..) {
                    any = true;
                    let rec = ConsumedRecord {
                        topic: topic.clone(),
                        partition: tp.1,
                        offset: fetched.offset,
                        timestamp: fetched.timestamp,
                        key: fetched.key,
                        value: fetched.value,
                        headers: fetched.headers,
                    };
                    let outcome = if self.shared.stopping() {
                        Handled::Interrupted
                    } else {
                        self.handle(&rec, handler)
                    };
                    match outcome {
                        Handled::Done => handled += 1,
                        Handled::Skipped => self.shared.skipped.add(1),
                        Handled::Interrupted | Handled::Abandoned => {
                            self.note_finished(&tp, finished, handled);
                            return match outcome {
                                Handled::Abandoned => Ok(()),
                                _ => Err(Exit::Stopping),
                            };
                        }
                    }
                    finished = Some(rec.offset + 1);
                    if self.maintenance_due(Instant::now()) {
                        self.note_finished(&tp, finished, std::mem::take(&mut handled));
                        self.maintain()?;
                        if self.rejoin {
                            return Ok(()); // the rest goes to whoever owns it next
                        }
                    }
                }
            }
            self.note_finished(&tp, finished, handled);
            self.positions.insert(tp.clone(), next);
            if let Some(p) = self.shared.progress.locked().get_mut(&tp) {
                p.position = next;
            }
            if !any {
                self.done
                    .entry(tp.clone())
                    .and_modify(|d| *d = (*d).max(next));
            }
        }
        Ok(())
    }

    /// Note records of `tp` as finished up to `next` (exclusive), `handled` of them new.
    fn note_finished(&mut self, tp: &TopicPartition, next: Option<i64>, handled: u64) {
        if handled > 0 {
            self.shared.handled.add(handled);
        }
        let Some(next) = next else { return };
        match self.done.get_mut(tp) {
            Some(d) => *d = next,
            None => {
                self.done.insert(tp.clone(), next);
            }
        }
        if let Some(p) = self.shared.progress.locked().get_mut(tp) {
            p.position = next;
        }
    }

    /// Whether [`maintain`](Self::maintain) has anything to do: a heartbeat or commit is
    /// due, or the poll interval ran out. Cheap enough to ask after every record.
    fn maintenance_due(&self, now: Instant) -> bool {
        now - self.last_heartbeat >= self.config.heartbeat_interval
            || now - self.last_commit >= self.config.commit_interval
            || now - self.last_poll > self.config.max_poll_interval
    }

    fn handle<H, E>(&mut self, rec: &ConsumedRecord, handler: &mut H) -> Handled
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        let mut backoff: Option<Backoff> = None;
        loop {
            let err = match handler(rec) {
                Ok(()) => return Handled::Done,
                Err(e) => e,
            };
            self.shared.handler_errors.add(1);
            let at = format!("{}-{}@{}", rec.topic, rec.partition, rec.offset);
            match self.config.on_error {
                OnHandlerError::Skip => {
                    log::warn!(
                        "consumer {}: handler failed on {at}, skipped: {err}",
                        self.idx
                    );
                    return Handled::Skipped;
                }
                OnHandlerError::Stop => {
                    self.shared
                        .stop_pool(format!("the handler failed on {at}: {err}"));
                    return Handled::Interrupted;
                }
                OnHandlerError::Retry {
                    backoff: first,
                    max_backoff,
                } => {
                    let b = backoff.get_or_insert_with(|| Backoff::new(first, max_backoff));
                    let delay = b.next_delay();
                    log::warn!(
                        "consumer {}: handler failed on {at}, retrying in {delay:?}: {err}",
                        self.idx
                    );
                    if !self.pause(delay) {
                        return Handled::Interrupted;
                    }
                    if self.rejoin {
                        return Handled::Abandoned;
                    }
                }
            }
        }
    }

    /// Commit what is done, leave the group, and clear this member's partitions.
    fn finish(&mut self) {
        // Even mid-rebalance the current generation may still take the commit.
        if self.generation >= 0 {
            self.commit();
        }
        if self.config.leave_group_on_close {
            self.leave();
        }
        self.revoke_all();
    }
}
