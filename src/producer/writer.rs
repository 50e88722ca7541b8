//! The writer thread: the only thread that touches the producer's sockets.
//!
//! One loop: take records from the channel, route them to per-partition queues, send the
//! batches that are due (linger passed, `batch_bytes` reached, or closing), read whatever
//! responses have arrived, and when there is nothing else to do wait briefly on the oldest
//! response. What a partition may send, and what an answer means for it, its lane decides
//! (lane.rs): a batch is sealed once, with its sequence when the producer is idempotent, and a
//! retry resends it as it is.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kafka_protocol::messages::ProduceRequest;

use std::task::Poll;

use crate::client::{
    self, produce_request, produce_results, transactional_produce_request, Acks, BatchBuilder,
    Compression, PartitionBatch, Pending, ProduceAck,
};
use crate::shutdown::Shutdown;

use super::balancer::Chooser;
use super::batch::{encode, split_batch, stamp_body};
use super::books::{new_part, Body, Part, Topic, TopicState, Topics, BATCH_ROOM};
use super::config::{ProducerConfig, TopicDefaults};
use super::coordinator::Transactional;
use super::delivery::{panic_message, Delivery, DeliveryError, Envelope, OnDelivery, Report};
use super::error::{Error, TransactionError};
use super::identity::{Answered, ProducerId, Renewal};
use super::lane::{verdict, Identity, Lane, Next, Outcome, Reply, Verdict};
use super::links::Links;
use super::msg::Msg;
use super::shared::Shared;
use super::stats::{ProducerIdentity, Summary};
use super::txn::{Effect, TxnCall};
use crate::sync::Locked;

/// The failure reason of records a panic of the writer took with it: they were never
/// reported (their callbacks never ran, their receipts end as `WaitError::Lost`).
const LOST_IN_PANIC: &str = "lost: the writer thread panicked";
/// Records taken from the channel per intake round, so responses are read in between.
const MAX_INTAKE: usize = 16_384;
/// Longest sleep while idle, so the shutdown flag is seen promptly.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// Longest wait on a socket while records may be arriving in the channel.
const SOCKET_TICK: Duration = Duration::from_millis(2);
/// While records keep arriving, look for responses this often. A look costs three system
/// calls; every loop would make it thousands a second for nothing, as a request is answered
/// every few milliseconds at most. When the channel runs dry the writer waits on the socket
/// instead, and sees a response the moment it arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How often a partition looks again for a leader or a connection being set up in the
/// background (an answer also wakes the writer at once).
const LINK_WAIT: Duration = Duration::from_millis(10);

struct Settings {
    linger: Duration,
    buffer_bytes: u64,
    batch_bytes: usize,
    max_request_bytes: usize,
    max_in_flight: usize,
    acks: Acks,
    compression: Compression,
    delivery_timeout: Duration,
    request_timeout: Duration,
    retry_backoff: Duration,
    retry_backoff_max: Duration,
    create_topics: Option<TopicDefaults>,
    shutdown: Option<Shutdown>,
    close_timeout: Duration,
    on_delivery: Option<OnDelivery>,
}

/// How the writer starts as to idempotence.
pub(crate) enum Start {
    /// Without it.
    Off,
    /// With this producer id and epoch.
    Known(ProducerIdentity),
    /// With it, once the cluster gives a producer id (asked in the background).
    Later,
}

/// Bytes a Produce request takes beside its batches: the request and its header (client
/// id, transactional id, acks, timeout), with room to spare.
const REQUEST_OVERHEAD: usize = 100;
/// What a partition's entry adds to the request beside its encoded batch (index, record
/// set length, a share of its topic's entry).
const PARTITION_OVERHEAD: usize = 30;

/// One request in the making: the batches chosen, and records that could not be encoded.
#[derive(Default)]
struct Built {
    meta: Vec<PartitionBatch>,
    batches: Vec<Sent>,
    records: u64,
    rejected: Vec<(Envelope, DeliveryError)>,
}

/// A batch in a request: its partition and its id in that partition's lane.
struct Sent {
    topic: Arc<str>,
    partition: i32,
    id: u64,
}

struct Request {
    broker: i32,
    /// The connection it went out on (`Links::generation`).
    generation: Option<u64>,
    pending: Pending,
    meta: Vec<PartitionBatch>,
    batches: Vec<Sent>,
}

pub(crate) struct Writer {
    /// Connections and metadata; nothing there blocks on one broker (see links.rs).
    links: Links,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    cfg: Settings,
    chooser: Chooser,
    /// For records that name no topic.
    default_topic: Option<Arc<str>>,
    topics: Topics,
    in_flight: Vec<Request>,
    /// Who the producer is to the brokers (idempotence), and whether it may go on.
    id: ProducerId,
    /// A transactional producer's transactions and its line to the coordinator.
    txn: Option<Transactional>,
    resent: u64,
    builder: BatchBuilder,
    /// Records taken from the channel: the producer's `accepted`.
    taken: u64,
    clock_synced: Instant,
    /// When responses were last looked for.
    polled: Instant,
    /// Requests sent.
    sends: u64,
    /// The last intake found the buffer full.
    full: bool,
    delivered: u64,
    failed: u64,
    not_attempted: u64,
    failures: BTreeMap<String, u64>,
}

fn reason_of(err: &DeliveryError) -> String {
    match err {
        DeliveryError::Rejected(e) => match e.kafka_code() {
            Some(code) => format!("rejected: {code:?}"),
            None => format!("rejected: {e}"),
        },
        DeliveryError::TimedOut { .. } => "delivery timeout".into(),
        DeliveryError::UnknownTopic(_) => "unknown topic".into(),
        DeliveryError::NotAttempted => "not attempted".into(),
        DeliveryError::Unacknowledged => "unacknowledged at close".into(),
        DeliveryError::NotInTransaction(_) => "not in a transaction".into(),
        DeliveryError::TransactionAborted => "transaction aborted".into(),
        DeliveryError::TopicRecreated { .. } => "topic recreated".into(),
    }
}

fn error_kind(e: &client::Error) -> String {
    match e {
        client::Error::Broker { code, .. } => format!("{code:?}"),
        client::Error::Timeout { phase, .. } => format!("timeout ({phase})"),
        client::Error::Connect { .. } | client::Error::NoBrokerReachable { .. } => "connect".into(),
        client::Error::Io { .. } | client::Error::Closed { .. } => "network".into(),
        client::Error::Protocol { .. } | client::Error::FrameTooLarge { .. } => "protocol".into(),
        other => format!("{other}"),
    }
}

impl Writer {
    pub(crate) fn new(
        config: ProducerConfig,
        producer: Start,
        transactions: Option<Transactional>,
        links: Links,
        rx: Receiver<Msg>,
        shared: Arc<Shared>,
    ) -> Self {
        let id = match producer {
            Start::Off => ProducerId::off(),
            Start::Known(p) if transactions.is_some() => ProducerId::known(p).transactional(),
            Start::Known(p) => ProducerId::known(p),
            Start::Later => ProducerId::asking(client::Backoff::new(
                config.client.retry_backoff,
                config.client.retry_backoff_max,
            )),
        };
        Writer {
            cfg: Settings {
                linger: config.linger,
                buffer_bytes: config.buffer_bytes as u64,
                batch_bytes: config.batch_bytes,
                max_request_bytes: config.max_request_bytes,
                max_in_flight: config.max_in_flight,
                acks: config.acks,
                compression: config.compression,
                delivery_timeout: config.delivery_timeout,
                request_timeout: config.client.connection.request_timeout,
                retry_backoff: config.client.retry_backoff,
                retry_backoff_max: config.client.retry_backoff_max,
                create_topics: config.create_topics,
                shutdown: config.shutdown,
                close_timeout: config.close_timeout,
                on_delivery: config.on_delivery,
            },
            chooser: Chooser::new(config.balancer),
            default_topic: config.topic.as_deref().map(Arc::from),
            links,
            rx,
            shared,
            topics: Topics::default(),
            in_flight: Vec::new(),
            txn: transactions,
            id,
            resent: 0,
            builder: BatchBuilder::with_capacity(config.batch_bytes),
            taken: 0,
            clock_synced: Instant::now(),
            polled: Instant::now(),
            sends: 0,
            full: false,
            delivered: 0,
            failed: 0,
            not_attempted: 0,
            failures: BTreeMap::new(),
        }
    }

    fn backoff(&self) -> client::Backoff {
        client::Backoff::new(self.cfg.retry_backoff, self.cfg.retry_backoff_max)
    }

    /// The writer thread's body: work until closed, then sum up. A panic in the loop (a
    /// kpipe bug, or a custom balancer's) stops the producer at once and reports what is
    /// left, instead of leaving it to look open with nobody reading its channel.
    pub(crate) fn run(mut self) -> Result<Summary, Error> {
        let worked = panic::catch_unwind(AssertUnwindSafe(|| self.work()));
        let Err(payload) = worked else {
            return Ok(self.summary());
        };
        let message = panic_message(&*payload);
        // The books may be half-changed by the unwinding: report from them under a guard of
        // its own, and without a summary if even that fails.
        let summary = panic::catch_unwind(AssertUnwindSafe(|| self.stop_after_panic(&message)));
        if summary.is_err() {
            log::error!(
                "the producer's writer thread panicked ({message}), and again while reporting \
                 what it held: those records are lost"
            );
        }
        Err(Error::WriterPanicked {
            message,
            summary: summary.ok().map(Box::new),
        })
    }

    fn work(&mut self) {
        debug_assert!(self.txn.is_none() || self.id.current().is_some());
        loop {
            self.watch_shutdown_flag();
            let closing = self.shared.gate.closing.load(Ordering::SeqCst);
            if closing && Instant::now() >= self.close_deadline() {
                // Out of time (or aborted): send nothing more, report what is left.
                self.abandon();
                break;
            }
            let now = Instant::now();
            if now >= self.clock_synced + Duration::from_secs(1) {
                self.shared.clock.resync();
                self.clock_synced = now;
            }
            self.links.poll();
            for info in self.links.reshaped() {
                self.reshape(info);
            }
            let (taken, sends) = (self.taken, self.sends);
            let wait = self.intake_wait(now, closing);
            self.intake(wait);
            self.shared.accepted.store(self.taken, Ordering::Relaxed);
            let now = Instant::now();
            self.expire(now);
            self.resolve_held(now);
            self.send_due(closing);
            self.drive_txn(closing);
            // A loop that took no record and sent no request (the buffer is full, or what
            // is due must wait for the in-flight limit or a backoff) must wait, not spin.
            let stuck = self.taken == taken && self.sends == sends;
            let now = Instant::now();
            if !self.in_flight.is_empty() {
                if stuck || self.rx.is_empty() {
                    // Wait for a response, or until something is due; a batch that is due
                    // but cannot go has to wait for a response anyway.
                    let wait = self.stuck_wait(now, closing, stuck);
                    self.read_responses(wait);
                    self.polled = now;
                } else if now >= self.polled + POLL_INTERVAL {
                    self.read_responses(Duration::ZERO);
                    self.polled = now;
                }
            } else if stuck && self.full {
                // Full, with nothing in flight: what is queued waits for a retry backoff or
                // for metadata. Sleep until then.
                std::thread::sleep(self.stuck_wait(now, closing, true));
            }
            if closing {
                if self.shared.gate.sending.load(Ordering::SeqCst) == 0
                    && self.rx.is_empty()
                    && self.is_idle()
                    && self.txn.as_ref().is_none_or(|t| t.txn.is_settled())
                {
                    break;
                }
                let deadline = self.close_deadline();
                if Instant::now() >= deadline {
                    self.abandon();
                    break;
                }
            }
        }
    }

    /// What became of every record taken, once the writer has stopped.
    fn summary(&mut self) -> Summary {
        let accepted = self.taken;
        self.shared.accepted.store(accepted, Ordering::Relaxed);
        let summary = Summary {
            accepted,
            delivered: self.delivered,
            failed: self.failed,
            failures: std::mem::take(&mut self.failures),
            not_attempted: self.not_attempted,
            producer: self.id.last(),
            epoch_bumps: self.id.epoch_bumps(),
            resent_batches: self.resent,
            transactions_committed: self.shared.txn_committed.get(),
            transactions_aborted: self.shared.txn_aborted.get(),
            callback_panics: self.shared.callback_panics.get(),
        };
        if summary.delivered + summary.failed + summary.not_attempted != accepted {
            log::error!("kpipe bug: producer summary does not add up: {summary:?}");
        }
        summary
    }

    /// The loop panicked with `message`: stop intake at once (so that senders are refused
    /// and `is_closed` says so), report every record the books and the channel still hold
    /// as at a close deadline, count those the panic took with it as failed, and sum up.
    fn stop_after_panic(&mut self, message: &str) -> Summary {
        *self.shared.panicked.locked() = Some(message.to_owned());
        *self.shared.close_deadline.locked() = Some(Instant::now());
        self.shared.gate.closing.store(true, Ordering::SeqCst);
        let outcomes = |w: &Self| w.delivered + w.failed + w.not_attempted;
        let before = outcomes(self);
        self.abandon();
        let abandoned = outcomes(self) - before;
        // Records on the unwound stack (the one being routed, say) were dropped unreported.
        let lost = self.taken.saturating_sub(outcomes(self));
        if lost > 0 {
            self.failed += lost;
            self.shared.failed.add(lost);
            *self.failures.entry(LOST_IN_PANIC.into()).or_default() += lost;
        }
        log::error!(
            "the producer stops: its writer thread panicked: {message}; {} record(s) it held \
             are reported as at a close deadline, {lost} were lost with the panic \
             (counted as failed: {LOST_IN_PANIC})",
            abandoned
        );
        self.summary()
    }

    fn close_deadline(&self) -> Instant {
        self.shared
            .close_deadline
            .locked()
            .unwrap_or_else(Instant::now)
    }

    fn watch_shutdown_flag(&mut self) {
        let Some(flag) = &self.cfg.shutdown else {
            return;
        };
        if flag.is_triggered() && !self.shared.gate.closing.load(Ordering::SeqCst) {
            *self.shared.close_deadline.locked() = Some(Instant::now() + self.cfg.close_timeout);
            self.shared.gate.closing.store(true, Ordering::SeqCst);
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.topics.values().all(|t| match t {
                Topic::Ready(s) => s
                    .parts
                    .iter()
                    .all(|p| p.queue.is_empty() && p.lane.is_empty()),
                Topic::Unresolved { held, .. } => held.is_empty(),
            })
    }

    /// Bytes waiting in partition queues, sealed batches (in flight too) and held topics.
    fn buffered(&self) -> u64 {
        self.topics
            .values()
            .map(|t| match t {
                Topic::Ready(s) => s
                    .parts
                    .iter()
                    .map(|p| p.queued_bytes + p.sealed_bytes)
                    .sum::<u64>(),
                Topic::Unresolved { held, .. } => held.iter().map(|e| e.size as u64).sum(),
            })
            .sum()
    }

    /// How long intake may block: not at all when there is work, else until the next due
    /// batch, retry or expiry.
    fn intake_wait(&self, now: Instant, closing: bool) -> Duration {
        if closing || !self.in_flight.is_empty() || !self.rx.is_empty() || self.txn_due() {
            return Duration::ZERO;
        }
        self.next_event(now, closing)
    }

    /// Whether the transaction has a coordinator request to send now (the EndTxn of a
    /// commit whose last records were just acknowledged, say): the loop must come round to
    /// `drive_txn` without sleeping on the channel, which nothing may wake (every commit
    /// took a whole IDLE_TICK, 100 ms, longer than its requests).
    fn txn_due(&self) -> bool {
        self.id.current().is_some()
            && self
                .txn
                .as_ref()
                .is_some_and(|t| t.txn.has_next_op(self.is_idle()))
    }

    /// How long to wait for a response (or, with nothing in flight, to sleep): until the
    /// next due event, at most SOCKET_TICK. A loop that made no progress (`stuck`) while
    /// something is already due waits a whole tick: what is due cannot go until then.
    fn stuck_wait(&self, now: Instant, closing: bool, stuck: bool) -> Duration {
        let due = self.next_event(now, closing);
        if stuck && due.is_zero() {
            SOCKET_TICK
        } else {
            due.min(SOCKET_TICK)
        }
    }

    /// Time until something is due: a linger, a retry, an expiry.
    fn next_event(&self, now: Instant, closing: bool) -> Duration {
        let mut next = now + IDLE_TICK;
        let timeout = self.cfg.delivery_timeout;
        // Waiting for a producer id, nothing can be sent: only expiries and the next ask.
        let no_id = self.id.waiting();
        if let Some(retry_at) = self.id.retry_at() {
            next = next.min(retry_at);
        }
        for t in self.topics.values() {
            match t {
                Topic::Ready(s) => {
                    for p in &s.parts {
                        if let Some(front) = p.queue.front() {
                            let due = if no_id {
                                front.enqueued + timeout
                            } else if self.flushing(closing) {
                                now
                            } else {
                                front.enqueued + self.cfg.linger
                            };
                            next = next.min(p.retry_at.map_or(due, |r| due.max(r)));
                        }
                        for b in p.lane.batches().filter(|b| !b.in_flight()) {
                            let expiry = b.body.records[0].enqueued + timeout;
                            let retry = b.retry_at.unwrap_or(now);
                            let retry = p.retry_at.map_or(retry, |r| retry.max(r));
                            next = next.min(retry.min(expiry));
                        }
                    }
                }
                Topic::Unresolved { retry_at, .. } => next = next.min(*retry_at),
            }
        }
        next.saturating_duration_since(now)
    }
    /// Take records from the channel into partition queues, while the queues hold less
    /// than `buffer_bytes`: beyond that the channel fills and senders feel backpressure.
    fn intake(&mut self, wait: Duration) {
        let mut room = self.cfg.buffer_bytes.saturating_sub(self.buffered());
        self.full = room == 0;
        if room == 0 {
            return; // nothing can be taken: the loop waits for what is due (`stuck_wait`)
        }
        let first = if wait.is_zero() {
            self.rx.try_recv().ok()
        } else if self.is_idle() {
            // Nothing queued: the first record should wake us.
            match self.rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            }
        } else {
            // Records are lingering. Sleep instead of waiting on the channel: a waiting
            // receiver makes every send pay for a wake-up (a futex call), while a sleeping
            // one lets senders fill the channel cheaply, to be drained in bulk.
            std::thread::sleep(wait.min(SOCKET_TICK));
            self.rx.try_recv().ok()
        };
        let Some(first) = first else { return };
        room = room.saturating_sub(self.take(first));
        for _ in 1..MAX_INTAKE {
            if room == 0 {
                break;
            }
            match self.rx.try_recv() {
                Ok(m) => room = room.saturating_sub(self.take(m)),
                Err(_) => break,
            }
        }
        let capacity = self.rx.capacity().unwrap_or(usize::MAX);
        self.shared.room.taken(self.rx.len(), capacity);
    }

    /// Route one message; returns the bytes it added to the queues.
    fn take(&mut self, msg: Msg) -> u64 {
        match msg {
            Msg::Record(env) => {
                let size = env.size as u64;
                self.taken += 1;
                if let Some(Err(e)) = self.txn.as_ref().map(|t| t.txn.admit()) {
                    self.fail(env, DeliveryError::NotInTransaction(e.to_string()));
                    return 0;
                }
                self.route(env);
                size
            }
            Msg::Txn(call) => {
                self.txn_call(call);
                0
            }
            Msg::Wake => 0,
        }
    }

    /// Put a record in its partition's queue, loading the topic's metadata on first sight.
    fn route(&mut self, env: Envelope) {
        if let Some(fatal) = self.id.fatal() {
            let err = DeliveryError::Rejected(fatal.clone());
            return self.fail(env, err);
        }
        // The common case, a known topic, costs one lookup and no reference counting.
        let name = match &env.record.topic {
            Some(t) => t,
            None => self
                .default_topic
                .as_ref()
                .expect("enqueue checks for a topic"),
        };
        if let Some(Topic::Ready(state)) = self.topics.get_mut(name) {
            match partition_of(&mut self.chooser, name, state, &env) {
                Ok(p) => state.push(p, env),
                Err(err) => self.fail(env, err),
            }
            return;
        }
        let topic = name.clone();
        if !self.topics.contains_key(&topic) {
            let state = self.load_topic(&topic);
            match state {
                Poll::Ready(Ok(state)) => {
                    self.topics.insert(topic.clone(), Topic::Ready(state));
                }
                // Metadata is on its way: hold the record until it comes.
                Poll::Pending => {
                    self.topics.insert(
                        topic.clone(),
                        Topic::Unresolved {
                            held: VecDeque::new(),
                            retry_at: Instant::now() + IDLE_TICK,
                            backoff: self.backoff(),
                            last_error: None,
                        },
                    );
                }
                Poll::Ready(Err(e)) if e.is_retriable() => {
                    let mut backoff = self.backoff();
                    let retry_at = Instant::now() + backoff.next_delay();
                    self.shared.count_error(error_kind(&e));
                    self.topics.insert(
                        topic.clone(),
                        Topic::Unresolved {
                            held: VecDeque::new(),
                            retry_at,
                            backoff,
                            last_error: Some(Arc::new(e)),
                        },
                    );
                }
                Poll::Ready(Err(client::Error::UnknownTopic { .. })) => {
                    return self.fail(env, DeliveryError::UnknownTopic(topic));
                }
                Poll::Ready(Err(e)) => return self.fail(env, DeliveryError::Rejected(Arc::new(e))),
            }
        }
        match self.topics.get_mut(&topic).expect("inserted above") {
            Topic::Unresolved { held, .. } => held.push_back(env),
            Topic::Ready(state) => match partition_of(&mut self.chooser, &topic, state, &env) {
                Ok(p) => state.push(p, env),
                Err(err) => self.fail(env, err),
            },
        }
    }

    /// The topic's state, once its metadata is known (the first sight of a topic asks for
    /// it, creating the topic if configured to).
    fn load_topic(&mut self, topic: &Arc<str>) -> Poll<Result<TopicState, client::Error>> {
        let info = match self.links.topic(topic, self.cfg.create_topics) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(info)) => info,
        };
        let n = info.partitions.len();
        Poll::Ready(Ok(TopicState {
            id: info.id,
            parts: (0..n).map(|_| self.new_part()).collect(),
            load: vec![0; n],
        }))
    }

    /// A partition's books, empty, its lane under the producer's identity.
    fn new_part(&self) -> Part {
        let max = self.cfg.max_in_flight;
        let lane = match (self.id.idempotent(), self.id.current()) {
            (true, None) => Lane::awaiting_identity(max),
            (_, identity) => Lane::new(identity, max),
        };
        new_part(self.backoff(), lane)
    }

    /// Metadata shows `info.name` in a new shape. Partitions added: keyed records are hashed
    /// over all of them from now on (as the Java producer does), so a key's records before
    /// and after may be in different partitions. Another topic id: the topic was deleted
    /// and created again; every record held for the old one (queued, batched, in flight)
    /// fails with [`DeliveryError::TopicRecreated`], and the records that follow go to the
    /// new one, from fresh partition books (sequences from 0).
    fn reshape(&mut self, info: client::TopicInfo) {
        let name: Arc<str> = Arc::from(info.name.as_str());
        let Some(Topic::Ready(state)) = self.topics.get(&name) else {
            return; // not routed by yet: it is loaded as it is now
        };
        if state.id == info.id {
            let n = info.partitions.len();
            let was = state.parts.len();
            let parts: Vec<Part> = (was..n).map(|_| self.new_part()).collect();
            let mut parts = parts.into_iter();
            if let Some(Topic::Ready(state)) = self.topics.get_mut(&name) {
                if state.grow(n, || parts.next().expect("one per new partition")) {
                    log::info!("{name}: {was} partitions grew to {n}; keyed records are hashed over {n} from now on");
                }
            }
            return;
        }
        let old_id = state.id;
        let n = info.partitions.len();
        let fresh = TopicState {
            id: info.id,
            parts: (0..n).map(|_| self.new_part()).collect(),
            load: vec![0; n],
        };
        let Some(Topic::Ready(old)) = self.topics.insert(name.clone(), Topic::Ready(fresh)) else {
            return;
        };
        // Answers to requests in flight for the old topic concern nobody now.
        for r in &mut self.in_flight {
            r.batches.retain(|b| b.topic != name);
        }
        let records = old.into_records();
        log::warn!(
            "topic {name} was deleted and created again (id {old_id}, now {}): {} record(s) \
             held for the old topic fail; records sent from now on go to the new one",
            info.id,
            records.len()
        );
        let err = DeliveryError::TopicRecreated {
            topic: name,
            old_id,
            new_id: info.id,
        };
        if !records.is_empty() && self.txn.is_some() {
            self.txn_failed(Arc::new(client::Error::Misuse(err.to_string())));
        }
        for env in records {
            self.fail(env, err.clone());
        }
    }

    /// Retry metadata for topics whose records are held, and fail held records past their
    /// delivery timeout.
    fn resolve_held(&mut self, now: Instant) {
        // Due: a retry whose time came, or a load whose answer may have arrived.
        let due: Vec<Arc<str>> = self
            .topics
            .iter()
            .filter(|(name, t)| {
                matches!(t, Topic::Unresolved { retry_at, last_error, .. }
                    if *retry_at <= now || last_error.is_none())
                    && !self.links.loading(name)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            match self.load_topic(&name) {
                Poll::Pending => {
                    if let Some(Topic::Unresolved { retry_at, .. }) = self.topics.get_mut(&name) {
                        *retry_at = now + IDLE_TICK;
                    }
                }
                Poll::Ready(Ok(state)) => {
                    let Some(Topic::Unresolved { held, .. }) =
                        self.topics.insert(name.clone(), Topic::Ready(state))
                    else {
                        continue;
                    };
                    for env in held {
                        self.route(env);
                    }
                }
                Poll::Ready(Err(e)) if e.is_retriable() => {
                    self.shared.count_error(error_kind(&e));
                    if let Some(Topic::Unresolved {
                        retry_at,
                        backoff,
                        last_error,
                        ..
                    }) = self.topics.get_mut(&name)
                    {
                        *retry_at = now + backoff.next_delay();
                        *last_error = Some(Arc::new(e));
                    }
                }
                Poll::Ready(Err(e)) => {
                    let err = match e {
                        client::Error::UnknownTopic { .. } => {
                            DeliveryError::UnknownTopic(name.clone())
                        }
                        other => DeliveryError::Rejected(Arc::new(other)),
                    };
                    if let Some(Topic::Unresolved { held, .. }) = self.topics.remove(&name) {
                        for env in held {
                            self.fail(env, err.clone());
                        }
                    }
                }
            }
        }
    }

    /// Fail records whose delivery timeout has passed: queued ones, and sealed ones waiting
    /// for a retry (a batch in flight is bounded by the request timeout and ends first).
    fn expire(&mut self, now: Instant) {
        let timeout = self.cfg.delivery_timeout;
        let expired = self.topics.expired(now, timeout, self.id.last_error());
        if let (Some((_, last_error)), true) = (expired.first(), self.txn.is_some()) {
            let why = last_error.clone().unwrap_or_else(|| {
                Arc::new(client::Error::Timeout {
                    phase: client::Phase::Read,
                    broker: "the partition leader".into(),
                    api: Some("Produce"),
                    after: timeout,
                })
            });
            self.txn_failed(why);
        }
        for (env, last_error) in expired {
            self.fail(
                env,
                DeliveryError::TimedOut {
                    after: timeout,
                    last_error,
                },
            );
        }
    }

    /// Send every batch that is due, one request per broker (more while `max_in_flight`
    /// allows), each request carrying at most one batch of each partition it leads.
    fn send_due(&mut self, closing: bool) {
        if self.id.fatal().is_some() {
            return;
        }
        let now = Instant::now();
        self.ask_producer_id(now);
        // broker -> [(topic, partition, due)]
        let mut by_broker: BTreeMap<i32, Vec<(Arc<str>, usize, bool)>> = BTreeMap::new();
        let names: Vec<Arc<str>> = self.topics.keys().cloned().collect();
        for name in names {
            let Some(Topic::Ready(state)) = self.topics.get(&name) else {
                continue;
            };
            let candidates: Vec<usize> = state
                .parts
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    let work = !p.queue.is_empty() || p.lane.batches().any(|b| !b.in_flight());
                    work && p.retry_at.is_none_or(|r| r <= now)
                })
                .map(|(i, _)| i)
                .collect();
            for i in candidates {
                if let Some(t) = &mut self.txn {
                    // Version 1: a partition joins the transaction before its first batch.
                    if !t.txn.may_send(&(name.to_string(), i as i32)) {
                        continue;
                    }
                }
                match self.links.leader(&name, i as i32) {
                    Poll::Ready(Ok(leader)) => {
                        self.renew_epoch(&name, i);
                        if let Some(due) = self.due(&name, i, leader, now, closing) {
                            by_broker
                                .entry(leader)
                                .or_default()
                                .push((name.clone(), i, due));
                        }
                    }
                    Poll::Ready(Err(e)) => self.delay_partition(&name, i, Arc::new(e)),
                    // Not known yet: the partition waits, the others go on.
                    Poll::Pending => self.wait_for_link(&name, &[i]),
                }
            }
        }
        for (broker, parts) in by_broker {
            if !parts.iter().any(|(_, _, due)| *due) {
                continue;
            }
            // Due partitions first; the others ride along if there is room.
            let mut parts = parts;
            parts.sort_by_key(|(_, _, due)| !*due);
            self.send_to(broker, parts);
        }
    }

    /// Until the producer id is known: ask for it (again, after a backoff, if an ask failed).
    fn ask_producer_id(&mut self, now: Instant) {
        if self.id.retry_at().is_none_or(|at| at > now) {
            return;
        }
        let Poll::Ready(result) = self.links.producer_id() else {
            return;
        };
        match self.id.answered(result, now) {
            Some(Answered::Known(identity)) => {
                log::info!("producer id {identity}");
                self.shared.set_producer(Some(identity));
            }
            Some(Answered::Retry(e)) => self.shared.count_error(error_kind(&e)),
            // Refused for good: the identity has stopped already; now the writer does.
            Some(Answered::Fatal(e)) => self.halt(e),
            None => {}
        }
    }

    /// Whether partition `p` has something to send to `leader`, and whether it is due:
    /// `None` when its lane allows nothing now.
    fn due(&self, topic: &str, p: usize, leader: i32, now: Instant, closing: bool) -> Option<bool> {
        let Some(Topic::Ready(state)) = self.topics.get(topic) else {
            return None;
        };
        let part = &state.parts[p];
        match part.lane.next(now, leader) {
            Next::Resend(_) => Some(true),
            Next::Seal => {
                let front = part.queue.front()?;
                Some(
                    self.flushing(closing)
                        || part.queued_bytes >= self.cfg.batch_bytes as u64
                        || front.enqueued + self.cfg.linger <= now,
                )
            }
            Next::Wait(_) => None,
        }
    }

    /// A lane whose broker lost its sequences starts again under a new epoch once nothing
    /// of it is in flight: the producer's newest epoch if the lane has not used it yet, else
    /// the next one (the broker accepts a higher epoch from sequence 0, KIP-360).
    fn renew_epoch(&mut self, topic: &str, p: usize) {
        let lane_identity = match self.topics.get(topic) {
            Some(Topic::Ready(state))
                if state.parts[p].lane.needs_epoch() && state.parts[p].lane.in_flight() == 0 =>
            {
                state.parts[p].lane.identity()
            }
            _ => return,
        };
        let identity = match self.id.renew(lane_identity, self.backoff()) {
            None => return,
            Some(Renewal::Use(identity)) => identity,
            Some(Renewal::Bumped(identity)) => {
                self.shared.epoch_bumps.add(1);
                self.shared.set_producer(Some(identity));
                log::info!(
                    "{topic}-{p}: the broker lost this producer's sequences; they start again \
                     under epoch {}",
                    identity.epoch
                );
                identity
            }
            Some(Renewal::Wait) => {
                log::info!(
                    "producer {:?} has used every epoch; asking for a new producer id",
                    lane_identity
                );
                return;
            }
        };
        if let Some(Topic::Ready(state)) = self.topics.get_mut(topic) {
            state.parts[p].lane.restart(identity);
        }
    }

    /// Look at these partitions again in a moment: what they need (a leader, a connection)
    /// is on its way. Without this the loop would spin while they are due.
    fn wait_for_link(&mut self, topic: &Arc<str>, partitions: &[usize]) {
        if let Some(Topic::Ready(state)) = self.topics.get_mut(topic) {
            let at = Instant::now() + LINK_WAIT;
            for &p in partitions {
                let part = &mut state.parts[p];
                part.retry_at = Some(part.retry_at.map_or(at, |r| r.max(at)));
            }
        }
    }

    fn delay_partition(&mut self, topic: &Arc<str>, partition: usize, err: Arc<client::Error>) {
        self.shared.count_error(error_kind(&err));
        self.links.note_error(&err, Some(topic));
        if let Some(Topic::Ready(state)) = self.topics.get_mut(topic) {
            let part = &mut state.parts[partition];
            part.retry_at = Some(Instant::now() + part.backoff.next_delay());
            part.last_error = Some(err);
        }
    }

    /// Send one request to `broker` with a batch of each of `parts` that has one ready
    /// (resent or newly sealed), if its connection is up and has room in flight.
    fn send_to(&mut self, broker: i32, parts: Vec<(Arc<str>, usize, bool)>) {
        let in_flight = match self.links.connection(broker) {
            // Throttled by the broker's quota (KIP-219): its partitions wait, the others go
            // on, and no request is sent to it before the broker's time is up.
            Poll::Ready(Ok(conn)) if conn.throttled_until().is_some() => return,
            Poll::Ready(Ok(conn)) => conn.in_flight(),
            // Being opened in the background: its partitions wait, the others go on.
            Poll::Pending => {
                for (t, p, _) in &parts {
                    self.wait_for_link(t, &[*p]);
                }
                return;
            }
            Poll::Ready(Err(e)) => {
                let e = Arc::new(e);
                for (t, p, _) in &parts {
                    self.delay_partition(t, *p, e.clone());
                }
                return;
            }
        };
        if in_flight >= self.cfg.max_in_flight {
            return;
        }
        let built = self.build_request(broker, parts);
        if !built.batches.is_empty() {
            self.ship(broker, built);
        }
    }

    /// Pick, per partition, the batch to send now, within `max_request_bytes`: the lane's
    /// batch due for a resend, or a new one sealed (encoded, stamped) from the queue up to
    /// `batch_bytes`. A partition whose batch does not fit waits for the next request.
    fn build_request(&mut self, broker: i32, parts: Vec<(Arc<str>, usize, bool)>) -> Built {
        let now = Instant::now();
        let mut built = Built::default();
        let mut request_bytes = REQUEST_OVERHEAD;
        for (topic, p, _) in parts {
            let Some(Topic::Ready(state)) = self.topics.get_mut(&topic) else {
                continue;
            };
            let part = &mut state.parts[p];
            let budget = self.cfg.max_request_bytes.saturating_sub(request_bytes);
            let index = match part.lane.next(now, broker) {
                Next::Resend(i) => {
                    let b = part.lane.get_mut(i);
                    if b.body.encoded.len() + BATCH_ROOM > budget {
                        continue; // the next request takes it
                    }
                    if let Err(e) = stamp_body(b) {
                        log::error!("kpipe bug: cannot renumber a batch of {topic}-{p}: {e}");
                        continue;
                    }
                    self.resent += 1;
                    self.shared.retries.add(1);
                    i
                }
                Next::Seal if !part.queue.is_empty() => {
                    let Some((taken, bytes)) = part.cut(self.cfg.batch_bytes, budget) else {
                        break; // the request is full
                    };
                    let stamp = part.lane.next_stamp();
                    let txn = self.txn.is_some();
                    match encode(&mut self.builder, &taken, self.cfg.compression, stamp, txn) {
                        Ok(encoded) => {
                            part.sealed_bytes += bytes;
                            let count = taken.len() as i32;
                            let body = Body {
                                records: taken,
                                bytes,
                                encoded,
                                stamp,
                            };
                            part.lane.seal(count, body)
                        }
                        Err(e) => {
                            // Compression cannot fail on in-memory buffers; a rejection if so.
                            state.load[p] -= bytes;
                            let err = DeliveryError::Rejected(Arc::new(client::Error::Records(
                                e.to_string(),
                            )));
                            built
                                .rejected
                                .extend(taken.into_iter().map(|env| (env, err.clone())));
                            continue;
                        }
                    }
                }
                _ => continue,
            };
            let b = part.lane.get(index);
            request_bytes += b.body.encoded.len() + PARTITION_OVERHEAD;
            built.records += b.records as u64;
            built.meta.push(PartitionBatch {
                topic: topic.to_string(),
                topic_id: state.id,
                partition: p as i32,
                records: b.body.encoded.clone(),
            });
            built.batches.push(Sent {
                topic: topic.clone(),
                partition: p as i32,
                id: b.id,
            });
            part.lane.sent(index, broker);
        }
        built
    }

    /// Send what [`build_request`](Self::build_request) chose, count it, and track the
    /// answer it is owed (with acks=0 none comes: the batches count as delivered).
    fn ship(&mut self, broker: i32, built: Built) {
        let Built {
            meta,
            batches,
            records,
            rejected,
        } = built;
        for (env, err) in rejected {
            self.fail(env, err);
        }
        let conn = self.links.existing(broker).expect("connected above");
        let sent = match &mut self.txn {
            Some(t) => {
                t.txn.produced();
                let req = transactional_produce_request(
                    &t.transactional_id,
                    self.cfg.acks,
                    self.cfg.request_timeout,
                    &meta,
                );
                // The request's version tells the broker the transaction's protocol.
                t.txn
                    .version()
                    .version_for::<ProduceRequest>(conn)
                    .and_then(|v| conn.send_versioned(&req, v, true))
                    .map(Some)
            }
            None => {
                let req = produce_request(self.cfg.acks, self.cfg.request_timeout, &meta);
                if self.cfg.acks == Acks::None {
                    conn.send_without_response(&req).map(|()| None)
                } else {
                    conn.send(&req).map(Some)
                }
            }
        };
        self.sends += 1;
        self.shared.batches.add(batches.len() as u64);
        self.shared
            .batch_bytes
            .add(meta.iter().map(|b| b.records.len() as u64).sum());
        self.shared.batch_records.add(records);
        match sent {
            Ok(Some(pending)) => {
                self.shared.in_flight.add(1);
                self.in_flight.push(Request {
                    broker,
                    generation: self.links.generation(broker),
                    pending,
                    meta,
                    batches,
                });
            }
            Ok(None) => {
                // acks=0: the broker says nothing; sent is as good as it gets.
                for b in batches {
                    self.answer(b, Ok(NO_ACK));
                }
            }
            Err(e) => {
                self.links.note_error(&e, None);
                let e = Arc::new(e);
                for b in batches {
                    self.answer(b, Err(e.clone()));
                }
            }
        }
    }

    /// Read the responses that have arrived; wait up to `wait` on the oldest one.
    fn read_responses(&mut self, wait: Duration) -> bool {
        let mut progressed = false;
        let mut brokers: Vec<i32> = Vec::new();
        for r in &self.in_flight {
            if !brokers.contains(&r.broker) {
                brokers.push(r.broker);
            }
        }
        let mut wait = wait;
        for broker in brokers {
            let idx = self
                .in_flight
                .iter()
                .position(|r| r.broker == broker)
                .expect("broker has a request");
            let now = Instant::now();
            // Sent on a connection since closed (and perhaps replaced): its answer is lost.
            let current = self.links.generation(broker) == self.in_flight[idx].generation;
            let outcome = match self.links.existing(broker).filter(|_| current) {
                None => Some(Err(client::Error::Closed {
                    broker: self.links.broker_addr(broker),
                })),
                Some(conn) => {
                    let overdue = conn.oldest_deadline().is_some_and(|t| t <= now);
                    if overdue || conn.poll_response(wait) {
                        let pending = self.in_flight[idx].pending;
                        Some(conn.receive::<ProduceRequest>(pending))
                    } else {
                        None
                    }
                }
            };
            wait = Duration::ZERO;
            let Some(outcome) = outcome else { continue };
            let req = self.in_flight.remove(idx);
            self.shared.in_flight.sub(1);
            progressed = true;
            match outcome {
                Ok(resp) => self.handle_response(req, &resp),
                Err(e) => {
                    self.links.note_error(&e, None);
                    let e = Arc::new(e);
                    for b in req.batches {
                        self.answer(b, Err(e.clone()));
                    }
                }
            }
        }
        progressed
    }

    fn handle_response(&mut self, req: Request, resp: &kafka_protocol::messages::ProduceResponse) {
        if let Some(conn) = self.links.existing(req.broker) {
            conn.throttle(resp.throttle_time_ms);
        }
        if resp.throttle_time_ms > 0 {
            self.shared.throttled_ms.add(resp.throttle_time_ms as u64);
        }
        let broker_addr = self.links.broker_addr(req.broker);
        let mut results = produce_results(resp, &req.meta, &broker_addr);
        for batch in req.batches {
            let found = results
                .iter()
                .position(|r| r.topic == *batch.topic && r.partition == batch.partition);
            let result = match found {
                Some(i) => results.swap_remove(i).result,
                None => Err(client::Error::Protocol {
                    broker: broker_addr.clone(),
                    detail: format!("no result for {}-{}", batch.topic, batch.partition),
                }),
            };
            self.answer(batch, result.map_err(Arc::new));
        }
    }

    fn part_mut(&mut self, topic: &str, partition: i32) -> Option<(&mut Part, &mut u64)> {
        match self.topics.get_mut(topic) {
            Some(Topic::Ready(state)) => {
                let i = partition as usize;
                let load = state.load.get_mut(i)?;
                Some((state.parts.get_mut(i)?, load))
            }
            _ => None,
        }
    }

    /// Take in what became of a batch sent: the lane says what it means.
    fn answer(&mut self, sent: Sent, result: Result<ProduceAck, Arc<client::Error>>) {
        let now = Instant::now();
        if let Err(e) = &result {
            self.shared.count_error(error_kind(e));
            self.links.note_error(e, Some(&sent.topic));
        }
        let idempotent = self.id.idempotent();
        let transactional = self.txn.is_some();
        let fresh = self.backoff();
        let codec = self.cfg.compression;
        let fatal = self.id.fatal().cloned();
        let Some((part, load)) = self.part_mut(&sent.topic, sent.partition) else {
            log::error!(
                "kpipe bug: an answer for {}-{} found no partition",
                sent.topic,
                sent.partition
            );
            return;
        };
        let records = part.lane.find(sent.id).map_or(0, |b| b.records);
        let (reply, ack, split) = match &result {
            Ok(ack) => (Reply::Written, *ack, false),
            Err(e) => {
                let v = verdict(e, idempotent, records);
                let reply = match v {
                    Verdict::Written => Reply::Written,
                    Verdict::Retry {
                        maybe_written,
                        split,
                    } => Reply::Retriable {
                        maybe_written,
                        // Halves go at once: the broker has nothing of the batch.
                        at: if split { now } else { part.resend_time(now) },
                    },
                    Verdict::OutOfSequence => Reply::OutOfSequence,
                    Verdict::Rejected => Reply::Rejected,
                    // In a transaction, INVALID_PRODUCER_EPOCH from a leader fails the
                    // transaction, not the producer (KIP-588; the EndTxn that follows says
                    // whether it was fenced); PRODUCER_FENCED stops it.
                    Verdict::Fenced
                        if transactional
                            && e.kafka_code() == Some(client::KafkaCode::InvalidProducerEpoch) =>
                    {
                        Reply::Rejected
                    }
                    Verdict::Fenced => Reply::Fenced,
                };
                (
                    reply,
                    NO_ACK,
                    matches!(v, Verdict::Retry { split: true, .. }),
                )
            }
        };
        let gone = match part.lane.answer(sent.id, reply) {
            Outcome::Done(b) => {
                part.backoff = fresh;
                part.resend_at = None;
                part.last_error = None;
                part.retry_at = None;
                Some((b, None))
            }
            Outcome::Kept => {
                part.last_error = result.as_ref().err().cloned();
                if split {
                    split_batch(&mut part.lane, sent.id, codec, transactional);
                }
                None
            }
            Outcome::Failed(b) => {
                let e = result
                    .as_ref()
                    .err()
                    .cloned()
                    .expect("an error fails a batch");
                Some((b, Some(DeliveryError::Rejected(e))))
            }
            Outcome::Fenced(b) => {
                let e = result.as_ref().err().cloned().expect("an error fences");
                Some((b, Some(DeliveryError::Rejected(e))))
            }
            Outcome::Unknown => {
                log::error!(
                    "kpipe bug: an answer for {}-{} found no batch in flight",
                    sent.topic,
                    sent.partition
                );
                None
            }
        };
        // After a fatal error nothing is resent: a batch kept for a retry fails now.
        let gone = match (gone, &fatal) {
            (None, Some(fatal)) => part.lane.give_up(sent.id).map(|b| {
                let err = DeliveryError::Rejected(fatal.clone());
                (b, Some(err))
            }),
            (gone, _) => gone,
        };
        // In a transaction, a batch refused for good, or out of sequence (the broker lost
        // what came before it; only a new epoch mends that), fails the transaction.
        let txn_failure = match (&result, reply) {
            (Err(e), Reply::Rejected | Reply::OutOfSequence) if transactional => Some(e.clone()),
            _ => None,
        };
        let Some((b, failure)) = gone else {
            if let Some(e) = txn_failure {
                self.txn_failed(e);
            }
            return;
        };
        part.sealed_bytes -= b.body.bytes;
        *load -= b.body.bytes;
        if let Some(e) = txn_failure {
            self.txn_failed(e);
        }
        match failure {
            None => self.complete(&sent.topic, sent.partition, b.body, ack),
            Some(err) => {
                // Fenced: stop intake before anyone hears of it.
                if let (Reply::Fenced, DeliveryError::Rejected(e)) = (reply, &err) {
                    self.stop_for_good(e.clone());
                }
                for env in b.body.records {
                    self.fail(env, err.clone());
                }
            }
        }
    }

    /// The producer cannot go on (it was fenced): stop intake and fail everything not in
    /// flight with `err`; what is in flight still reports its answer.
    fn stop_for_good(&mut self, err: Arc<client::Error>) {
        if self.id.stop(err.clone()) {
            self.halt(err.clone());
        }
        // After the stop, so that a caller told of it finds the producer stopped.
        if let Some(t) = &mut self.txn {
            t.txn.fenced(err);
        }
    }

    // -----------------------------------------------------------------------------------
    // Transactions
    // -----------------------------------------------------------------------------------

    /// Whether everything queued is due now: closing, or a transaction committing.
    fn flushing(&self, closing: bool) -> bool {
        closing || self.txn.as_ref().is_some_and(|t| t.txn.is_committing())
    }

    /// A transactional call of the application, in its turn among the records.
    fn txn_call(&mut self, call: TxnCall) {
        let Some(t) = &mut self.txn else {
            return; // refused before it was sent
        };
        let effect = match call {
            TxnCall::Begin(reply) if self.shared.gate.closing.load(Ordering::SeqCst) => {
                let _ = reply.send(Err(TransactionError::Closed));
                Effect::None
            }
            TxnCall::Begin(reply) => {
                t.txn.begin(reply);
                Effect::None
            }
            TxnCall::Offsets {
                offsets,
                group,
                reply,
            } => {
                t.txn.offsets(offsets, group, reply);
                Effect::None
            }
            TxnCall::Commit(reply) => {
                t.txn.commit(reply);
                Effect::None
            }
            TxnCall::Abort(reply) => t.txn.abort(Some(reply)),
        };
        self.apply(effect);
    }

    /// Something in the transaction failed: it can only be aborted now.
    fn txn_failed(&mut self, err: Arc<client::Error>) {
        if let Some(t) = &mut self.txn {
            log::info!("transaction {}: cannot commit: {err}", t.transactional_id);
            let effect = t.txn.failed(err);
            self.apply(effect);
        }
    }

    /// Take the coordinator's answers, send the next request, and end an open
    /// transaction when the producer closes.
    fn drive_txn(&mut self, closing: bool) {
        let Some(t) = &mut self.txn else { return };
        if closing && !t.txn.is_settled() && !t.txn.is_committing() {
            // Closing with a transaction open: abort it, as the Java client does, so
            // read_committed readers are not held until its timeout.
            let effect = t.txn.abort(None);
            self.apply(effect);
        }
        loop {
            let Some(t) = &mut self.txn else { return };
            let Some(answer) = t.line.answer() else { break };
            let effect = t.txn.answered(answer);
            self.apply(effect);
        }
        let idle = self.is_idle();
        let identity = self.id.current();
        let Some(t) = &mut self.txn else { return };
        let Some(identity) = identity else { return };
        if let Some(op) = t.txn.next_op(idle) {
            log::debug!("transaction {}: {op:?}", t.transactional_id);
            t.line.send(op, identity, t.txn.version());
        }
        let (committed, aborted) = t.txn.counts();
        self.shared.txn_committed.set(committed);
        self.shared.txn_aborted.set(aborted);
    }

    /// Do what the transaction's state machine says.
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::DropUnsent => {
                for env in self.topics.unsent() {
                    self.fail(env, DeliveryError::TransactionAborted);
                }
            }
            Effect::Ended(next) => {
                if let Some(identity) = next {
                    self.adopt(identity);
                }
            }
            Effect::Stop(err) => self.stop_for_good(err),
        }
    }

    /// Stamp batches with `identity` from now on, every partition's sequences from 0 (a
    /// transaction ended with a new epoch; nothing is in flight).
    fn adopt(&mut self, identity: Identity) {
        self.id.adopt(identity);
        self.shared.set_producer(Some(identity));
        for t in self.topics.values_mut() {
            if let Topic::Ready(state) = t {
                for part in &mut state.parts {
                    if !part.lane.restart(identity) {
                        log::error!("kpipe bug: a batch in flight at the end of a transaction");
                    }
                }
            }
        }
    }

    /// Stop intake and fail everything not in flight with `err` (the identity has stopped).
    fn halt(&mut self, err: Arc<client::Error>) {
        log::error!("the producer stops: {err}");
        // Intake stops first, so that whoever sees the reason finds the producer closed.
        if !self.shared.gate.closing.load(Ordering::SeqCst) {
            *self.shared.close_deadline.locked() = Some(Instant::now() + self.cfg.close_timeout);
            self.shared.gate.closing.store(true, Ordering::SeqCst);
        }
        *self.shared.fatal.locked() = Some(err.clone());
        let left = self.topics.unsent();
        for env in left {
            self.fail(env, DeliveryError::Rejected(err.clone()));
        }
    }

    /// A batch was acknowledged: report each record with its offset.
    fn complete(&mut self, topic: &Arc<str>, partition: i32, body: Body, ack: ProduceAck) {
        let now = Instant::now();
        let n = body.records.len() as u64;
        self.delivered += n;
        self.shared.delivered.add(n);
        self.shared.bytes_delivered.add(body.bytes);
        self.shared
            .latency
            .record_all(body.records.iter().map(|env| now - env.enqueued));
        for (i, env) in body.records.into_iter().enumerate() {
            if matches!(env.report, Report::None) {
                continue; // nobody asked: build no report
            }
            let offset = if ack.base_offset < 0 {
                -1
            } else {
                ack.base_offset + i as i64
            };
            let timestamp = if ack.log_append_time >= 0 {
                ack.log_append_time
            } else {
                env.record.timestamp.unwrap_or_default()
            };
            let delivery = Delivery {
                topic: topic.clone(),
                partition,
                offset,
                timestamp,
            };
            if let Err(panic) = env
                .report
                .deliver(Ok(delivery), self.cfg.on_delivery.as_ref())
            {
                let record = format!("{topic}-{partition}@{offset}");
                self.report_panicked(&record, "was delivered", &panic);
            }
        }
    }

    /// Report a failure (for a record already taken out of the balancer's load).
    fn fail(&mut self, env: Envelope, err: DeliveryError) {
        let reason = reason_of(&err);
        if matches!(err, DeliveryError::NotAttempted) {
            self.not_attempted += 1;
        } else {
            self.failed += 1;
            self.shared.failed.add(1);
            *self.failures.entry(reason.clone()).or_default() += 1;
        }
        if let Err(panic) = env.report.deliver(Err(err), self.cfg.on_delivery.as_ref()) {
            // A failed record has no offset, and may have no partition yet.
            let topic = env.record.topic.as_ref().or(self.default_topic.as_ref());
            let mut record = topic.map_or_else(|| "?".to_owned(), |t| t.to_string());
            if let Some(p) = env.record.partition {
                record = format!("{record}-{p}");
            }
            self.report_panicked(&record, &format!("had failed ({reason})"), &panic);
        }
    }

    /// A record's callback (or the `on_delivery` handler) panicked: say so and count it.
    /// The record's outcome was settled and counted before its report, and nothing of the
    /// writer's was in the user's hands, so the writer goes on.
    fn report_panicked(&self, record: &str, outcome: &str, panic: &str) {
        self.shared.callback_panics.add(1);
        log::error!(
            "the delivery report of record {record} panicked: {panic}; the record {outcome} \
             (counted as such) and the producer goes on"
        );
    }

    /// The close deadline passed: report everything left.
    fn abandon(&mut self) {
        for _ in std::mem::take(&mut self.in_flight) {
            self.shared.in_flight.sub(1);
        }
        let mut left = self.topics.abandon(self.cfg.delivery_timeout);
        // Senders caught between their check and their enqueue finish soon: no new ones
        // start once `closing` is set.
        loop {
            while let Ok(msg) = self.rx.try_recv() {
                if let Msg::Record(env) = msg {
                    self.taken += 1;
                    left.push((env, DeliveryError::NotAttempted));
                }
            }
            self.shared.room.wake_all();
            if self.shared.gate.sending.load(Ordering::SeqCst) == 0 && self.rx.is_empty() {
                break;
            }
            std::thread::yield_now();
        }
        for (env, err) in left {
            self.fail(env, err);
        }
    }
}

/// The partition of `topic` for `env`: the one it names, else the chooser's. A partition
/// the topic does not have is the record's failure.
fn partition_of(
    chooser: &mut Chooser,
    topic: &str,
    state: &TopicState,
    env: &Envelope,
) -> Result<usize, DeliveryError> {
    Ok(match env.record.partition {
        Some(p) if p >= 0 && (p as usize) < state.parts.len() => p as usize,
        Some(p) => {
            let err = client::Error::UnknownPartition {
                topic: topic.to_string(),
                partition: p,
                count: state.parts.len(),
            };
            return Err(DeliveryError::Rejected(Arc::new(err)));
        }
        None => chooser.choose(topic, env.record.key.as_deref(), &state.load),
    })
}

/// What an acknowledgement without an offset says (acks=0, a duplicate).
const NO_ACK: ProduceAck = ProduceAck {
    base_offset: -1,
    log_append_time: -1,
};
