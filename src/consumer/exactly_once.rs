//! A [`ConsumerPool`] in exactly-once mode: each member owns a transactional producer and
//! commits what its handler wrote together with the offsets of what it read, in one
//! transaction (KIP-98, KIP-447). A read_committed reader of the output sees each input
//! record's output once, whatever crashes, restarts and rebalances happen.
//!
//! ```text
//!  kpipe-consumer-i: poll ─▶ begin ─▶ handler(records, output) ─▶ ... ─▶ every interval:
//!                    send_offsets(positions, group metadata) ─▶ commit
//!     handler error, commit refused, partitions revoked mid-transaction: abort, and read
//!     the transaction's records again from its first offsets
//!  member i's producer: transactional id "{prefix}-{i}"; fenced (a newer instance took the
//!     id, or the group moved on without the member: KIP-447): the member stops and leaves
//!     the group, so its partitions move
//! ```
//!
//! What exactly once covers: the output records and the consumer offsets, both in Kafka.
//! A handler's other side effects (a database write, an HTTP call) happen again when a
//! transaction is aborted and its records are handled again.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::connect::Connector;
use crate::client::TopicPartition;
use crate::producer::{Producer, ProducerConfig, ProducerRecord, SendError, TransactionError};

use super::config::{ConsumerConfig, GroupProtocol, OnHandlerError};
use super::engine::Engine;
use super::error::Error;
use super::pool::{guarded, ConsumerPool, Member};
use super::pull::{Consumer, RebalanceListener};
use super::record::ConsumedRecord;

/// How a pool's members write exactly once: their producers and transactions.
pub struct ExactlyOnce {
    prefix: String,
    producer: Arc<dyn Fn() -> ProducerConfig + Send + Sync>,
    interval: Duration,
}

impl std::fmt::Debug for ExactlyOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnce")
            .field("transactional_id_prefix", &self.prefix)
            .field("transaction_interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl ExactlyOnce {
    /// Members write through producers made by `producer` (its settings: brokers,
    /// compression, the output topic as default topic...), member `i` with the
    /// transactional id `"{transactional_id_prefix}-{i}"`. The prefix names one instance
    /// of the pipeline: restarted under the same prefix, its members fence whatever their
    /// predecessors left open; two instances running at once need different prefixes
    /// (the group keeps them apart). Transactions commit every 100 ms.
    pub fn new(
        transactional_id_prefix: impl Into<String>,
        producer: impl Fn() -> ProducerConfig + Send + Sync + 'static,
    ) -> Self {
        ExactlyOnce {
            prefix: transactional_id_prefix.into(),
            producer: Arc::new(producer),
            interval: Duration::from_millis(100),
        }
    }

    /// Commit a member's transaction this often (and when the pool closes). Shorter
    /// makes output visible sooner to read_committed readers; longer costs fewer
    /// commits. Default 100 ms.
    pub fn transaction_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    fn producer_config(&self, member: usize) -> ProducerConfig {
        let mut c = (self.producer)();
        c.transactional_id = Some(format!("{}-{member}", self.prefix));
        c
    }
}

/// Where an exactly-once handler sends its output: into its member's open transaction.
pub struct Output<'a> {
    producer: &'a Producer,
}

impl Output<'_> {
    /// Send `record` in the transaction; it becomes visible to read_committed readers
    /// when the transaction commits, and never if it aborts. Blocks while the producer's
    /// queue is full, as [`Producer::send`] does.
    pub fn send(&self, record: ProducerRecord) -> Result<(), SendError> {
        self.producer.send(record)
    }
}

impl ConsumerPool {
    /// Start `config.threads` members in exactly-once mode (see [`ExactlyOnce`]): each
    /// hands its records, a poll at a time, to its handler `make_handler(i)` with an
    /// [`Output`] to write to; every `transaction_interval` the member commits the
    /// transaction with the offsets of what it read. A handler error aborts the
    /// transaction and its records are handed again (after the `Retry` policy's backoff;
    /// `Stop` stops the pool; `Skip` is refused: it would commit offsets without their
    /// output). Offsets are never committed outside a transaction.
    ///
    /// Fails at once if the brokers cannot be reached, a topic does not exist, or member
    /// 0's producer cannot start (its transactional id refused, say).
    pub fn start_exactly_once<F, H, E>(
        mut config: ConsumerConfig,
        eos: ExactlyOnce,
        make_handler: F,
    ) -> Result<ConsumerPool, Error>
    where
        F: Fn(usize) -> H,
        H: FnMut(&[ConsumedRecord], &Output<'_>) -> Result<(), E> + Send + 'static,
        E: Display,
    {
        config.validate()?;
        if config.group_protocol == GroupProtocol::Share {
            return Err(Error::Config {
                field: "group_protocol",
                reason: "exactly once needs a consumer group (Classic or Consumer): a share group has no offsets to commit in a transaction".into(),
            });
        }
        if config.on_error == OnHandlerError::Skip {
            return Err(Error::Config {
                field: "on_error",
                reason: "exactly once cannot skip records: their offsets would commit without \
                         their output; use Retry or Stop"
                    .into(),
            });
        }
        // Offsets commit only inside transactions.
        config.auto_commit = false;
        let eos = Arc::new(eos);
        // Member 0's producer here, so that a refused transactional id is an error now.
        let first = Producer::new(eos.producer_config(0)).map_err(|e| Error::Config {
            field: "producer",
            reason: format!("member 0's transactional producer: {e}"),
        })?;
        let mut first = Some(first);
        ConsumerPool::launch(config, |i| {
            let mut handler = make_handler(i);
            let producer = first.take();
            let eos = eos.clone();
            move |member: Member, start: Result<Engine, Connector>| {
                run(member, start, &eos, producer, &mut handler)
            }
        })
    }
}

/// What a member's transaction holds: where its records started, per partition, and the
/// group generation (or member epoch) it was read in.
struct Open {
    since: Instant,
    first: BTreeMap<TopicPartition, i64>,
    generation: i32,
}

/// Aborts the member's open transaction when partitions are taken away mid-transaction
/// (before they are given back), and tells the member to read its records again.
struct AbortOnRevoke {
    producer: Producer,
    open: Arc<AtomicBool>,
    aborted: Arc<AtomicBool>,
    /// Partitions were lost (the group moved on without the member) with a transaction
    /// open, or right after one failed to commit: the member was a zombie.
    zombie: Arc<AtomicBool>,
    /// The last transaction failed to commit (its abort may have come before the news of
    /// the loss that caused it).
    failed: Arc<AtomicBool>,
    timeout: Duration,
}

impl AbortOnRevoke {
    /// Abort the open transaction, if any; whether there was one.
    fn abort(&mut self, partitions: &[TopicPartition]) -> bool {
        if partitions.is_empty() || !self.open.swap(false, Ordering::SeqCst) {
            return false;
        }
        if let Err(e) = self.producer.abort_transaction(self.timeout) {
            log::warn!("aborting the transaction at a rebalance: {e}");
        }
        self.aborted.store(true, Ordering::SeqCst);
        true
    }
}

impl RebalanceListener for AbortOnRevoke {
    fn on_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.abort(partitions);
    }
    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        let was_open = self.abort(partitions);
        if was_open || self.failed.load(Ordering::SeqCst) {
            self.zombie.store(true, Ordering::SeqCst);
            self.aborted.store(true, Ordering::SeqCst);
        }
    }
}

/// Why a member stops.
enum Stop {
    /// The pool closes.
    Closing,
    /// The member's producer is fenced or refused, or the group moved on without it in
    /// the middle of a transaction (a zombie): it leaves the group. Why, in words.
    Fenced(String),
    /// The consumer failed (a fatal group error), or the Stop policy.
    Failed(String),
}

/// One exactly-once member thread.
fn run<H, E>(
    member: Member,
    start: Result<Engine, Connector>,
    eos: &ExactlyOnce,
    producer: Option<Producer>,
    handler: &mut H,
) where
    H: FnMut(&[ConsumedRecord], &Output<'_>) -> Result<(), E>,
    E: Display,
{
    let Some(engine) = member.engine(start) else {
        return;
    };
    let mut consumer = Consumer::on(engine);
    let producer = match producer.map_or_else(|| Producer::new(eos.producer_config(member.idx)), Ok)
    {
        Ok(p) => p,
        Err(e) => {
            member.shared.stop_pool(format!(
                "consumer {}: its transactional producer: {e}",
                member.idx
            ));
            member.close(&mut consumer);
            return;
        }
    };
    let timeout = member.config.client.connection.request_timeout * 2;
    let open_flag = Arc::new(AtomicBool::new(false));
    let aborted = Arc::new(AtomicBool::new(false));
    let zombie = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    consumer.set_listener(Box::new(AbortOnRevoke {
        producer: producer.clone(),
        open: open_flag.clone(),
        aborted: aborted.clone(),
        zombie: zombie.clone(),
        failed: failed.clone(),
        timeout,
    }));
    let mut m = EosMember {
        member: &member,
        consumer: &mut consumer,
        producer: &producer,
        open: None,
        open_flag,
        aborted,
        zombie,
        failed,
        interval: eos.interval,
        timeout,
    };
    let stop = m.work(handler);
    match &stop {
        Stop::Closing => {}
        Stop::Fenced(e) => {
            log::error!(
                "consumer {}: {e}; it stops and leaves the group",
                member.idx
            );
            member.shared.fenced.add(1);
            if member.shared.fenced.get() as usize >= member.config.threads {
                member
                    .shared
                    .stop_pool(format!("every member's producer was fenced (last: {e})"));
            }
        }
        Stop::Failed(why) => {
            log::error!("consumer {}: {why}", member.idx);
            member.shared.stop_pool(why.clone());
        }
    }
    // The consumer leaves first, so that its partitions move while the producer closes.
    member.close(&mut consumer);
    let left = member
        .close_deadline()
        .saturating_duration_since(Instant::now());
    if let Err(e) = producer.close(left) {
        log::warn!("consumer {}: closing its producer: {e}", member.idx);
    }
}

struct EosMember<'a> {
    member: &'a Member,
    consumer: &'a mut Consumer,
    producer: &'a Producer,
    open: Option<Open>,
    /// A transaction is open (the listener aborts it at a revocation).
    open_flag: Arc<AtomicBool>,
    /// The listener aborted it.
    aborted: Arc<AtomicBool>,
    /// The listener aborted it because the partitions were lost.
    zombie: Arc<AtomicBool>,
    /// The last transaction failed to commit.
    failed: Arc<AtomicBool>,
    interval: Duration,
    timeout: Duration,
}

impl EosMember<'_> {
    fn work<H, E>(&mut self, handler: &mut H) -> Stop
    where
        H: FnMut(&[ConsumedRecord], &Output<'_>) -> Result<(), E>,
        E: Display,
    {
        let shared = self.member.shared.clone();
        let mut backoff: Option<crate::client::Backoff> = None;
        loop {
            if shared.stopping() {
                // Finish: what was handled commits with its offsets.
                return match self.commit() {
                    Ok(()) | Err(Stop::Closing) => Stop::Closing,
                    Err(stop) => stop,
                };
            }
            let wait = match &self.open {
                Some(o) => (o.since + self.interval)
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            let records = match self.consumer.poll(wait) {
                Ok(r) => r,
                Err(e) => return Stop::Failed(e.to_string()),
            };
            if self.aborted.swap(false, Ordering::SeqCst) {
                // Partitions were taken away mid-transaction: it was aborted; what is
                // still ours is read again from where the transaction began.
                if self.open.is_some() {
                    shared.txn_aborted.add(1);
                }
                if self.zombie.swap(false, Ordering::SeqCst) {
                    // Lost, not given back: the group moved on without this member while
                    // it held a transaction open, or just after one failed (it stalled).
                    // A zombie stops.
                    self.open = None;
                    return Stop::Fenced(
                        "the group moved on without this member in the middle of a \
                         transaction (it stalled past its session timeout); the transaction \
                         was aborted"
                            .into(),
                    );
                }
                self.rewind(&records);
                continue;
            }
            if self.moved_on() {
                // A new generation began mid-transaction: its offsets would commit under
                // a generation that did not read them. Abort; read again under the new one.
                if let Err(stop) = self.abort(&records) {
                    return stop;
                }
                continue;
            }
            if !records.is_empty() {
                if let Err(stop) = self.begin() {
                    return stop;
                }
                let open = self.open.as_mut().expect("begun above");
                for r in &records {
                    let tp = (r.topic.to_string(), r.partition);
                    open.first.entry(tp).or_insert(r.offset);
                }
                let output = Output {
                    producer: self.producer,
                };
                if let Err(e) = guarded(&shared, || handler(&records, &output)) {
                    shared.handler_errors.add(1);
                    let at = records
                        .first()
                        .map(|r| format!("{}-{}@{}", r.topic, r.partition, r.offset))
                        .unwrap_or_default();
                    if let OnHandlerError::Stop = self.member.config.on_error {
                        // Nothing of the transaction commits; the pool stops either way.
                        if let Err(Stop::Fenced(f)) = self.abort(&[]) {
                            return Stop::Fenced(f);
                        }
                        return Stop::Failed(format!("the handler failed on {at}: {e}"));
                    }
                    let delay = match self.member.config.on_error {
                        OnHandlerError::Retry {
                            backoff: first,
                            max_backoff,
                        } => backoff
                            .get_or_insert_with(|| crate::client::Backoff::new(first, max_backoff))
                            .next_delay(),
                        _ => Duration::ZERO,
                    };
                    log::warn!(
                        "consumer {}: handler failed on {at}; the transaction is aborted and \
                         its records handed again in {delay:?}: {e}",
                        self.member.idx
                    );
                    if let Err(stop) = self.abort(&records) {
                        return stop;
                    }
                    self.pause(delay);
                    continue;
                }
                backoff = None;
            }
            let due = self
                .open
                .as_ref()
                .is_some_and(|o| o.since.elapsed() >= self.interval);
            if due {
                if let Err(stop) = self.commit() {
                    return stop;
                }
            }
        }
    }

    /// Whether the group generation (member epoch) changed since the open transaction
    /// began.
    fn moved_on(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| self.consumer.group_metadata().generation_id != o.generation)
    }

    fn begin(&mut self) -> Result<(), Stop> {
        if self.open.is_some() {
            return Ok(());
        }
        match self.producer.begin_transaction() {
            Ok(()) => {
                self.open = Some(Open {
                    since: Instant::now(),
                    first: BTreeMap::new(),
                    generation: self.consumer.group_metadata().generation_id,
                });
                self.open_flag.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(stop_for(e)),
        }
    }

    /// Commit the open transaction with the consumer's positions of the partitions it
    /// read; a refused commit is aborted and its records read again.
    fn commit(&mut self) -> Result<(), Stop> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        self.open_flag.store(false, Ordering::SeqCst);
        if self.consumer.group_metadata().generation_id != open.generation {
            self.open = Some(open);
            return self.abort(&[]);
        }
        let offsets: BTreeMap<TopicPartition, i64> = open
            .first
            .keys()
            .filter_map(|(t, p)| {
                let at = self.consumer.position(t, *p)?;
                Some(((t.clone(), *p), at))
            })
            .collect();
        // The generation the records were read in (KIP-447): a member the group has moved
        // on from is refused.
        let mut group = self.consumer.group_metadata();
        group.generation_id = open.generation;
        let result = self
            .producer
            .send_offsets_to_transaction(&offsets, &group)
            .and_then(|()| self.commit_waiting());
        match result {
            Ok(()) => {
                self.consumer
                    .engine_mut()
                    .committed_by_transaction(&offsets);
                self.member.shared.txn_committed.add(1);
                self.failed.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(e) if e.is_abortable() => {
                self.failed.store(true, Ordering::SeqCst);
                log::info!(
                    "consumer {}: the transaction cannot commit, aborting it: {e}",
                    self.member.idx
                );
                self.open = Some(open);
                self.abort(&[])?;
                // The group moved on without this member, though the member saw no new
                // generation (it stalled past its session, say): a zombie, whose
                // partitions are someone else's now. It stops.
                if group_moved_on(&e) {
                    return Err(Stop::Fenced(format!(
                        "the group moved on without this member: {e}"
                    )));
                }
                Ok(())
            }
            Err(e) => Err(stop_for(e)),
        }
    }

    /// Commit, asking again while the answer is late (a commit asked again waits for the
    /// same commit), for up to four timeouts.
    fn commit_waiting(&self) -> Result<(), TransactionError> {
        let mut tries = 0;
        loop {
            match self.producer.commit_transaction(self.timeout) {
                Err(TransactionError::Timeout { .. }) if tries < 3 => tries += 1,
                other => return other,
            }
        }
    }

    /// Abort the open transaction and read its records (and `also`, handed but not part
    /// of it) again.
    fn abort(&mut self, also: &[ConsumedRecord]) -> Result<(), Stop> {
        self.open_flag.store(false, Ordering::SeqCst);
        if let Err(e) = self.producer.abort_transaction(self.timeout) {
            return Err(stop_for(e));
        }
        self.member.shared.txn_aborted.add(1);
        self.rewind(also);
        Ok(())
    }

    /// Seek every partition the open transaction (or `also`) read back to its first
    /// offset there, if it is still this member's.
    fn rewind(&mut self, also: &[ConsumedRecord]) {
        let mut first = self.open.take().map(|o| o.first).unwrap_or_default();
        for r in also {
            let tp = (r.topic.to_string(), r.partition);
            let at = first.entry(tp).or_insert(r.offset);
            *at = (*at).min(r.offset);
        }
        for ((t, p), offset) in first {
            if self.consumer.assignment().contains(&(t.clone(), p)) {
                if let Err(e) = self.consumer.seek(&t, p, offset) {
                    log::warn!("consumer {}: rewinding {t}-{p}: {e}", self.member.idx);
                }
            }
        }
    }

    /// Wait `delay` before handing records again, acting on group events meanwhile.
    fn pause(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.member.shared.stopping() {
            self.consumer.engine_mut().note_progress();
            if self.consumer.service().is_err() {
                return;
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
    }
}

/// Whether the group coordinator refused the transaction's offsets because the group has
/// moved on without this member (KIP-447).
fn group_moved_on(e: &TransactionError) -> bool {
    use crate::client::KafkaCode as K;
    let TransactionError::Abortable(cause) = e else {
        return false;
    };
    matches!(
        cause.kafka_code(),
        Some(K::IllegalGeneration | K::UnknownMemberId | K::FencedInstanceId | K::StaleMemberEpoch)
    )
}

/// What a transactional error means for the member.
fn stop_for(e: TransactionError) -> Stop {
    match e {
        TransactionError::Closed => Stop::Closing,
        TransactionError::Fatal(_) => Stop::Fenced(format!("its producer was fenced: {e}")),
        other => Stop::Failed(format!("the transaction: {other}")),
    }
}
