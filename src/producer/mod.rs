//! The event producer: many threads, one bounded channel, one writer thread that owns every
//! broker connection.
//!
//! ```text
//!  app thread ─┐                                   ┌──────────── writer thread ────────────┐
//!  app thread ─┼─ send(record) ─▶ [bounded channel] ─▶ balance ─▶ per-partition queues     │
//!  app thread ─┘   (blocks at most                 │   linger / batch_bytes ─▶ encode,     │
//!                   write_timeout when full)       │   compress ─▶ Produce requests,       │
//!                                                  │   max_in_flight per broker ─▶ acks,   │
//!                                                  │   retries ─▶ delivery reports         │
//!                                                  └───────────────────────────────────────┘
//! ```
//!
//! Per-partition order is kept and, with idempotence (the default), each record is written
//! once: batches are sealed with the producer id, epoch and sequence, up to five per
//! partition in flight, and a retry resends a batch as it was sealed (lane.rs has the
//! rules). Without idempotence a partition has one batch in flight, so a retry cannot be
//! overtaken; requests still pipeline across partitions, up to `max_in_flight` per broker.

mod balancer;
mod batch;
mod books;
mod config;
mod coordinator;
mod delivery;
mod error;
mod identity;
mod lane;
mod links;
mod msg;
mod shared;
mod stats;
mod txn;
mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};

use crate::client::{self, Cluster};
use crate::stats::{Counter, Histogram};

pub use balancer::{java_partition, murmur2, Balance, Balancer};
pub use config::{ProducerConfig, TopicDefaults};
pub use delivery::{
    Delivery, DeliveryError, DeliveryReceipt, DeliveryResult, OnDelivery, ProducerRecord,
    SendError, WaitError,
};
pub use error::{Error, SendAndWaitError, TransactionError};
pub use stats::{ProducerIdentity, ProducerStats, Summary};

use crate::sync::Locked;
use delivery::{Envelope, Report};
use links::ensure_topic;
use msg::Msg;
use shared::{Clock, Gate, Room, Shared};

/// A thread-safe producer handle: clone it into every thread that sends.
///
/// All clones share one channel and one writer thread. The producer closes when
/// [`close`](Self::close) is called on any clone, when the shutdown flag from the config is
/// set, or when the last clone is dropped (then within `close_timeout`, logging what could
/// not be delivered).
///
/// ```no_run
/// use std::time::Duration;
/// use kpipe::{Producer, ProducerConfig, ProducerRecord};
///
/// let producer = Producer::new(ProducerConfig::new("localhost:9092").topic("events"))?;
/// let sender = {
///     let producer = producer.clone(); // one handle per thread
///     std::thread::spawn(move || {
///         for i in 0..100 {
///             producer.send(ProducerRecord::new(format!("event {i}")).key("device-1"))?;
///         }
///         Ok::<_, kpipe::producer::SendError>(())
///     })
/// };
/// sender.join().expect("the sender panicked")?;
/// // Wait for one record's partition and offset:
/// let at = producer.send_and_wait(ProducerRecord::new("last").key("device-1"))?;
/// println!("written to {}-{} at offset {}", at.topic, at.partition, at.offset);
/// // Flush and wait for every acknowledgement, then say what became of each record.
/// let summary = producer.close(Duration::from_secs(30))?;
/// assert_eq!(summary.delivered + summary.failed + summary.not_attempted, summary.accepted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    default_topic: Option<Arc<str>>,
    write_timeout: Duration,
    wait_bound: Duration,
    max_record_bytes: usize,
    close_timeout: Duration,
    /// Whether `on_delivery` is set (`send_tagged` is refused without it).
    tagged: bool,
    /// Whether the producer has a `transactional_id`.
    transactional: bool,
    /// Bound on a transactional call that takes no timeout of its own.
    txn_call_bound: Duration,
    writer: Mutex<Option<JoinHandle<Result<Summary, Error>>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("default_topic", &self.inner.default_topic)
            .field("queue_depth", &self.inner.tx.len())
            .finish()
    }
}

impl Producer {
    /// Validate `config`, connect to the cluster (an unreachable broker is an error within
    /// the connect timeout), check the default topic, ask for a producer id (with
    /// idempotence; if the cluster cannot give one yet, the writer keeps asking), and start
    /// the writer thread.
    pub fn new(config: ProducerConfig) -> Result<Producer, Error> {
        config.validate()?;
        let mut cluster = Cluster::connect(config.client.clone())?;
        if let Some(topic) = &config.topic {
            ensure_topic(&mut cluster, topic, config.create_topics)?;
        }
        let transactions = match &config.transactional_id {
            Some(id) => Some(coordinator::Transactions::start(&mut cluster, id, &config)?),
            None => None,
        };
        let producer = if let Some(t) = &transactions {
            writer::Start::Known(t.identity())
        } else if config.idempotent() {
            match cluster.init_producer_id_once() {
                Ok((id, epoch)) => writer::Start::Known(ProducerIdentity { id, epoch }),
                // The cluster cannot give one yet (a coordinator loading, a broker away):
                // the writer keeps asking, and records wait for it within their timeout.
                Err(e) if e.is_retriable() => {
                    log::info!("no producer id yet ({e}); asking again in the background");
                    writer::Start::Later
                }
                // Not asked for explicitly, and this principal may not write idempotently
                // (the cluster's IdempotentWrite ACL): go on without, as said in the log.
                Err(e)
                    if config.idempotence.is_none()
                        && e.kafka_code()
                            == Some(client::KafkaCode::ClusterAuthorizationFailed) =>
                {
                    log::warn!("idempotence off: the cluster refused a producer id ({e})");
                    writer::Start::Off
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            writer::Start::Off
        };
        let shared = Arc::new(Shared {
            gate: Gate {
                sending: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
            },
            room: Room::default(),
            clock: Clock::new(),
            accepted: AtomicU64::new(0),
            close_deadline: Mutex::new(None),
            delivered: Counter::default(),
            failed: Counter::default(),
            bytes_delivered: Counter::default(),
            batches: Counter::default(),
            batch_records: Counter::default(),
            batch_bytes: Counter::default(),
            in_flight: Counter::default(),
            retries: Counter::default(),
            throttled_ms: Counter::default(),
            producer_id: AtomicI64::new(-1),
            producer_epoch: AtomicI64::new(-1),
            epoch_bumps: Counter::default(),
            txn_open: AtomicBool::new(false),
            txn_committed: Counter::default(),
            txn_aborted: Counter::default(),
            fatal: Mutex::new(None),
            panicked: Mutex::new(None),
            callback_panics: Counter::default(),
            errors: Mutex::new(BTreeMap::new()),
            latency: Histogram::default(),
        });
        if let writer::Start::Known(p) = producer {
            shared.set_producer(Some(p));
        }
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let inner = Inner {
            tx,
            shared: shared.clone(),
            default_topic: config.topic.as_deref().map(Arc::from),
            write_timeout: config.write_timeout,
            wait_bound: config.delivery_timeout + config.close_timeout + config.write_timeout,
            max_record_bytes: config.max_request_bytes - 200,
            close_timeout: config.close_timeout,
            tagged: config.on_delivery.is_some(),
            transactional: config.transactional_id.is_some(),
            txn_call_bound: config.client.connection.request_timeout + config.write_timeout,
            writer: Mutex::new(None),
        };
        let known: Vec<client::TopicInfo> = match &config.topic {
            Some(t) => vec![cluster.topic(t)?.clone()],
            None => Vec::new(),
        };
        let transactions = match transactions {
            Some(t) => Some(t.connect(&cluster, inner.tx.clone())?),
            None => None,
        };
        let links =
            links::Links::start(cluster, known, inner.tx.clone()).map_err(|e| Error::Config {
                field: "threads",
                reason: format!("cannot start the metadata thread: {e}"),
            })?;
        let writer = writer::Writer::new(config, producer, transactions, links, rx, shared);
        let handle = std::thread::Builder::new()
            .name("kpipe-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::Config {
                field: "threads",
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        *inner.writer.lock().expect("fresh mutex") = Some(handle);
        Ok(Producer {
            inner: Arc::new(inner),
        })
    }

    /// Send a record, fire and forget: blocks while the queue is full, at most
    /// `write_timeout`, then hands the record back in [`SendError::QueueFull`]. Failures
    /// after acceptance show in [`stats`](Self::stats) and the close [`Summary`].
    pub fn send(&self, record: ProducerRecord) -> Result<(), SendError> {
        self.enqueue(record, Report::None, Some(self.inner.write_timeout))
    }

    /// Like [`send`](Self::send), but never blocks: a full queue hands the record back at once.
    pub fn try_send(&self, record: ProducerRecord) -> Result<(), SendError> {
        self.enqueue(record, Report::None, None)
    }

    /// Send, and get a receipt to wait on for the partition and offset (or the error).
    pub fn send_tracked(&self, record: ProducerRecord) -> Result<DeliveryReceipt, SendError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.enqueue(record, Report::Wait(tx), Some(self.inner.write_timeout))?;
        Ok(DeliveryReceipt {
            rx,
            bound: self.inner.wait_bound,
        })
    }

    /// Send and wait for the outcome.
    pub fn send_and_wait(&self, record: ProducerRecord) -> Result<Delivery, SendAndWaitError> {
        let receipt = self.send_tracked(record).map_err(SendAndWaitError::Send)?;
        match receipt.wait() {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(SendAndWaitError::Delivery(e)),
            Err(e) => Err(SendAndWaitError::Wait(e)),
        }
    }

    /// Send, and have `callback` called with the outcome. It runs on the writer thread:
    /// keep it short and never block in it.
    ///
    /// A callback that panics does not stop the producer: the panic is caught, logged at
    /// error level with the record (`topic-partition@offset`) and the panic's message, and
    /// counted in [`callback_panics`](Summary::callback_panics); the record counts as
    /// delivered (or failed) all the same, and every other record is sent and reported as
    /// usual. The panic hook still runs (by default it prints the panic), and with
    /// `panic = "abort"` the process aborts, as for any panic.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(DeliveryResult) + Send + 'static,
    ) -> Result<(), SendError> {
        self.enqueue(
            record,
            Report::Callback(Box::new(callback)),
            Some(self.inner.write_timeout),
        )
    }

    /// Send, and have the producer's [`OnDelivery`] handler
    /// ([`ProducerConfig::on_delivery`]) called with `tag` and the outcome, on the writer
    /// thread. Blocks on a full queue as [`send`](Self::send) does. A producer without a
    /// handler refuses the record ([`SendError::Invalid`]): its outcome would go nowhere.
    pub fn send_tagged(&self, record: ProducerRecord, tag: u64) -> Result<(), SendError> {
        if !self.inner.tagged {
            return Err(SendError::Invalid {
                record: Box::new(record),
                reason: "send_tagged needs ProducerConfig::on_delivery, the handler that takes \
                         the tags and outcomes; set it, or use send_with_callback"
                    .into(),
            });
        }
        self.enqueue(record, Report::Tag(tag), Some(self.inner.write_timeout))
    }

    fn enqueue(
        &self,
        mut record: ProducerRecord,
        report: Report,
        wait: Option<Duration>,
    ) -> Result<(), SendError> {
        let inner = &*self.inner;
        // A record without a topic stays without one: the writer knows the default, and
        // not cloning it here spares every send an atomic on a shared reference count.
        if record.topic.is_none() && inner.default_topic.is_none() {
            return Err(SendError::Invalid {
                record: Box::new(record),
                reason: "it names no topic and the producer has no default topic".into(),
            });
        }
        let size = record.encoded_size();
        if size > inner.max_record_bytes {
            return Err(SendError::Invalid {
                record: Box::new(record),
                reason: format!(
                    "it takes {size} bytes, more than max_request_bytes allows ({}); \
                     raise max_request_bytes (and the topic's max.message.bytes)",
                    inner.max_record_bytes
                ),
            });
        }
        let shared = &*inner.shared;
        let enqueued = Instant::now();
        if record.timestamp.is_none() {
            record.timestamp = Some(shared.clock.wall_ms(enqueued));
        }
        // The writer stops only when `closing` is set and no sender is between the check
        // below and its enqueue, so an accepted record is always drained.
        let gate = &shared.gate;
        gate.sending.fetch_add(1, Ordering::SeqCst);
        if gate.closing.load(Ordering::SeqCst) {
            gate.sending.fetch_sub(1, Ordering::SeqCst);
            return Err(SendError::Closed(Box::new(record)));
        }
        // After the closing check: a stopped (fenced) producer says closed, not "begin".
        if inner.transactional && !shared.txn_open.load(Ordering::SeqCst) {
            gate.sending.fetch_sub(1, Ordering::SeqCst);
            return Err(SendError::NoTransaction(Box::new(record)));
        }
        let msg = Msg::Record(Envelope {
            record,
            enqueued,
            report,
            size,
        });
        // Try without waiting first: a timed send reads the clock for its deadline, which
        // a channel with room never needs.
        let sent = match (inner.tx.try_send(msg), wait) {
            (Ok(()), _) => Ok(()),
            // A timeout too long to add to the clock is as good as none.
            (Err(TrySendError::Full(m)), Some(t)) => {
                shared
                    .room
                    .send(&inner.tx, m, Instant::now().checked_add(t))
            }
            (Err(TrySendError::Full(m)), None) => Err((m, false)),
            (Err(TrySendError::Disconnected(m)), _) => Err((m, true)),
        };
        gate.sending.fetch_sub(1, Ordering::SeqCst);
        match sent {
            Ok(()) => Ok(()),
            Err((Msg::Record(env), disconnected)) => Err(if disconnected {
                SendError::Closed(Box::new(env.record))
            } else {
                SendError::QueueFull(Box::new(env.record))
            }),
            Err((Msg::Wake | Msg::Txn(_), _)) => unreachable!("only records are sent here"),
        }
    }

    /// Open a transaction: the records sent from now until
    /// [`commit_transaction`](Self::commit_transaction) or
    /// [`abort_transaction`](Self::abort_transaction), by any thread holding a clone of this
    /// producer, are in it. A transactional producer refuses records while no transaction
    /// is open ([`SendError::NoTransaction`]).
    ///
    /// One transaction at a time per producer, shared by its clones: every thread's sends
    /// between the begin and the commit go into it, so threads that send must be done
    /// before the commit is asked for (a record racing the commit is refused: see
    /// [`DeliveryError::NotInTransaction`]).
    pub fn begin_transaction(&self) -> Result<(), TransactionError> {
        let bound = self.inner.txn_call_bound;
        self.call_writer("begin_transaction", bound, txn::TxnCall::Begin)?;
        self.inner.shared.txn_open.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Add a consumer's offsets to the open transaction: they commit if and only if it
    /// does (a consume-transform-produce loop's exactly once). `offsets` are the next
    /// offsets to read, per partition; `group` is the consumer's
    /// [`group_metadata`](crate::Consumer::group_metadata), read just before, so that a
    /// member the group has moved on from cannot commit (KIP-447: the transaction then
    /// fails as [`TransactionError::Abortable`]). Waits for the group coordinator's answer.
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<client::TopicPartition, i64>,
        group: &client::GroupMetadata,
    ) -> Result<(), TransactionError> {
        let bound = self.inner.txn_call_bound;
        self.call_writer("send_offsets_to_transaction", bound, |reply| {
            txn::TxnCall::Offsets {
                offsets: offsets.clone(),
                group: group.clone(),
                reply,
            }
        })
    }

    /// Commit the open transaction: send what is queued, wait for every record's
    /// acknowledgement, then end the transaction at the coordinator, all within `timeout`.
    /// On [`TransactionError::Abortable`] (a record failed, say) nothing of it commits:
    /// call [`abort_transaction`](Self::abort_transaction). On
    /// [`TransactionError::Timeout`] the commit goes on: call this again to learn how it
    /// ended.
    pub fn commit_transaction(&self, timeout: Duration) -> Result<(), TransactionError> {
        self.inner.shared.txn_open.store(false, Ordering::SeqCst);
        self.call_writer("commit_transaction", timeout, txn::TxnCall::Commit)
    }

    /// Abort the open (or failed) transaction: records not sent yet are dropped (they fail
    /// with [`DeliveryError::TransactionAborted`]), those in flight are awaited, and the
    /// coordinator writes the abort, all within `timeout`; read_committed consumers never
    /// see any of it. With no transaction open, nothing to do.
    pub fn abort_transaction(&self, timeout: Duration) -> Result<(), TransactionError> {
        self.inner.shared.txn_open.store(false, Ordering::SeqCst);
        self.call_writer("abort_transaction", timeout, |reply| {
            txn::TxnCall::Abort(reply)
        })
    }

    /// Hand a transactional call to the writer, in order with the records, and wait at
    /// most `timeout` for its outcome.
    fn call_writer(
        &self,
        what: &'static str,
        timeout: Duration,
        call: impl FnOnce(txn::TxnReply) -> txn::TxnCall,
    ) -> Result<(), TransactionError> {
        let inner = &*self.inner;
        if !inner.transactional {
            return Err(TransactionError::State(format!(
                "{what}: this producer has no transactional_id; set ProducerConfig::transactional_id"
            )));
        }
        let deadline = Instant::now().checked_add(timeout);
        let (reply, answer) = crossbeam_channel::bounded(1);
        let gate = &inner.shared.gate;
        gate.sending.fetch_add(1, Ordering::SeqCst);
        if gate.closing.load(Ordering::SeqCst) {
            gate.sending.fetch_sub(1, Ordering::SeqCst);
            // Stopped because it was fenced (or refused): say so, not just "closed".
            return Err(match inner.shared.fatal.locked().clone() {
                Some(e) => TransactionError::Fatal(e),
                None => TransactionError::Closed,
            });
        }
        let sent = inner
            .shared
            .room
            .send(&inner.tx, Msg::Txn(call(reply)), deadline);
        gate.sending.fetch_sub(1, Ordering::SeqCst);
        match sent {
            Ok(()) => {}
            Err((_, true)) => return Err(TransactionError::Closed),
            Err((_, false)) => {
                return Err(TransactionError::Timeout {
                    what,
                    after: timeout,
                })
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let outcome = match left {
            Some(left) => answer.recv_timeout(left),
            None => answer.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match outcome {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(TransactionError::Timeout {
                what,
                after: timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(TransactionError::Closed),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProducerStats {
        let s = &*self.inner.shared;
        let batches = s.batches.get();
        ProducerStats {
            // Taken by the writer, plus waiting for it.
            accepted: s.accepted.load(Ordering::Relaxed) + self.inner.tx.len() as u64,
            delivered: s.delivered.get(),
            failed: s.failed.get(),
            bytes_delivered: s.bytes_delivered.get(),
            batches,
            avg_batch_records: if batches == 0 {
                0.0
            } else {
                s.batch_records.get() as f64 / batches as f64
            },
            avg_batch_bytes: if batches == 0 {
                0.0
            } else {
                s.batch_bytes.get() as f64 / batches as f64
            },
            requests_in_flight: s.in_flight.get(),
            retries: s.retries.get(),
            producer: s.producer(),
            epoch_bumps: s.epoch_bumps.get(),
            fatal: match (&*s.fatal.locked(), &*s.panicked.locked()) {
                (Some(e), _) => Some(e.to_string()),
                (None, Some(panic)) => Some(format!("the writer thread panicked: {panic}")),
                (None, None) => None,
            },
            callback_panics: s.callback_panics.get(),
            throttled_ms: s.throttled_ms.get(),
            errors: s.errors.locked().clone(),
            queue_depth: self.inner.tx.len(),
            latency: s.latency.percentiles(),
            latency_histogram: s.latency.snapshot(),
        }
    }

    /// Stop intake, send everything queued, wait for acknowledgements, and report, all
    /// within `timeout`. Records still unsent at the deadline count as not attempted.
    /// Closes the producer for every clone; a second call returns [`Error::AlreadyClosed`].
    pub fn close(&self, timeout: Duration) -> Result<Summary, Error> {
        self.inner.close(timeout)
    }

    /// Cut a drain short (a second Ctrl-C, say): stop intake if it was not stopped yet, and
    /// make the writer give up now. A [`close`](Self::close) running on another thread then
    /// returns at once, reporting what was left as not attempted (or, if already sent,
    /// unacknowledged).
    pub fn abort(&self) {
        let shared = &*self.inner.shared;
        *shared.close_deadline.locked() = Some(Instant::now());
        shared.gate.closing.store(true, Ordering::SeqCst);
        let _ = self.inner.tx.try_send(Msg::Wake);
    }

    /// Whether the producer stopped taking records.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.gate.closing.load(Ordering::SeqCst)
    }
}

impl Inner {
    fn close(&self, timeout: Duration) -> Result<Summary, Error> {
        let handle = self.writer.locked().take().ok_or(Error::AlreadyClosed)?;
        {
            let mut d = self.shared.close_deadline.locked();
            let deadline = Instant::now() + timeout;
            *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        }
        self.shared.gate.closing.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Msg::Wake);
        // The writer gives up at the deadline and returns right after; the join is bounded.
        // It catches its own panics; one that escaped it anyway ends here.
        handle.join().unwrap_or_else(|payload| {
            Err(Error::WriterPanicked {
                message: delivery::panic_message(&*payload),
                summary: None,
            })
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.writer.locked().is_none() {
            return;
        }
        match self.close(self.close_timeout) {
            Ok(s) if s.failed == 0 && s.not_attempted == 0 => {
                log::debug!("producer dropped: {} records delivered", s.delivered)
            }
            Ok(s) => log::warn!(
                "producer dropped: {} delivered, {} failed ({:?}), {} not attempted",
                s.delivered,
                s.failed,
                s.failures,
                s.not_attempted
            ),
            Err(e) => log::error!("producer dropped: {e}"),
        }
    }
}
