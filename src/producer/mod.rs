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
mod identity;
mod lane;
mod links;
mod txn;
mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};

use crate::client::{self, Cluster, NewTopic};
use crate::stats::{Counter, Histogram, HistogramSnapshot, Percentiles};

pub use balancer::{java_partition, murmur2, Balance, Balancer};
pub use config::{ProducerConfig, TopicDefaults};
pub use delivery::{
    Delivery, DeliveryError, DeliveryReceipt, DeliveryResult, OnDelivery, ProducerRecord,
    SendError, WaitError,
};

use crate::sync::Locked;
use delivery::{Envelope, Report};

/// Errors building or closing a producer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster could not be reached or refused a request.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// A configuration value is not usable.
    #[error("invalid producer config `{field}`: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// `close` was called before; the first call's summary is returned by it only.
    #[error("the producer was already closed")]
    AlreadyClosed,
    /// The writer thread panicked (a kpipe bug, or a custom [`Balance`] that panicked; a
    /// delivery callback's panic is caught and does not stop it). The producer stopped
    /// taking records at once ([`Producer::is_closed`] turned true) and reported what it
    /// still held as at a close deadline: not attempted, or unacknowledged if it was sent.
    /// Records the panic caught in the writer's hands were never reported (their receipts
    /// end as [`WaitError::Lost`]); the summary counts them as failed, as
    /// `"lost: the writer thread panicked"`.
    #[error("the producer's writer thread panicked: {message}")]
    WriterPanicked {
        /// The panic's message.
        message: String,
        /// What became of the records it took; `None` if reporting them panicked too.
        summary: Option<Box<Summary>>,
    },
}

/// Why a transactional call did not succeed, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The call does not fit: no transaction is open, one is open already, one is being
    /// ended, or the producer has no `transactional_id`. The message says what to call.
    #[error("{0}")]
    State(String),
    /// This transaction cannot commit (a record or its offsets were refused, the group
    /// moved on without this member, ...): call
    /// [`abort_transaction`](Producer::abort_transaction), then go on with a new one.
    #[error("the transaction cannot commit; abort it, then begin a new one: {0}")]
    Abortable(Arc<client::Error>),
    /// The producer cannot go on: a newer producer with the same transactional id fenced
    /// it, or it is not authorised. Close it; a new producer with the id takes over.
    #[error("the transactional producer cannot go on; close it (a new producer with the same transactional id takes over): {0}")]
    Fatal(Arc<client::Error>),
    /// No outcome within the call's timeout: it is still under way. Call the same again
    /// to wait for its outcome (a commit asked again waits for the same commit).
    #[error("{what} did not finish within {after:?}; call it again to learn its outcome")]
    Timeout {
        /// The call.
        what: &'static str,
        /// Its timeout.
        after: Duration,
    },
    /// The producer is closed or closing.
    #[error("the producer is closed")]
    Closed,
}

impl TransactionError {
    /// Whether the transaction must be aborted (and the producer may then go on).
    pub fn is_abortable(&self) -> bool {
        matches!(self, TransactionError::Abortable(_))
    }

    /// Whether the producer cannot go on.
    pub fn is_fatal(&self) -> bool {
        matches!(self, TransactionError::Fatal(_))
    }
}

/// What became of every accepted record, from [`Producer::close`].
/// `delivered + failed + not_attempted == accepted`, always.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records the producer took from senders.
    pub accepted: u64,
    /// Records the brokers acknowledged (or sent, with acks=0).
    pub delivered: u64,
    /// Records that failed, with how many failed for each reason.
    pub failed: u64,
    /// Failure reasons and their counts.
    pub failures: BTreeMap<String, u64>,
    /// Records never sent because the close deadline came first.
    pub not_attempted: u64,
    /// The producer id and epoch its last batches carried; `None` without idempotence.
    pub producer: Option<ProducerIdentity>,
    /// Times a partition's sequences started again under a new epoch (the broker had lost
    /// track of them, KIP-360).
    pub epoch_bumps: u64,
    /// Batches sent again after a retriable error (the same records, the same sequence).
    pub resent_batches: u64,
    /// Transactions committed (a transactional producer).
    pub transactions_committed: u64,
    /// Transactions aborted (a transactional producer).
    pub transactions_aborted: u64,
    /// Delivery reports that panicked: a [`send_with_callback`](Producer::send_with_callback)
    /// callback, or the [`on_delivery`](ProducerConfig::on_delivery) handler. Each was
    /// caught and logged; its record counts as delivered or failed all the same.
    pub callback_panics: u64,
}

/// The producer id and epoch an idempotent producer stamps on its batches (KIP-98).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    /// The id the cluster gave this producer.
    pub id: i64,
    /// Its epoch, raised when a partition's sequences start again.
    pub epoch: i16,
}

impl std::fmt::Display for ProducerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} epoch {}", self.id, self.epoch)
    }
}

/// A snapshot of the producer's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProducerStats {
    /// Records accepted from senders: those the writer took plus those queued for it.
    pub accepted: u64,
    /// Records acknowledged.
    pub delivered: u64,
    /// Records failed.
    pub failed: u64,
    /// Record bytes (uncompressed, as encoded) acknowledged.
    pub bytes_delivered: u64,
    /// Produce batches sent.
    pub batches: u64,
    /// Mean records per batch.
    pub avg_batch_records: f64,
    /// Mean encoded (compressed) bytes per batch.
    pub avg_batch_bytes: f64,
    /// Produce requests awaiting a response.
    pub requests_in_flight: u64,
    /// Batches sent again after a retriable error (the same records, the same sequence).
    pub retries: u64,
    /// The producer id and epoch; `None` without idempotence.
    pub producer: Option<ProducerIdentity>,
    /// Times a partition's sequences started again under a new epoch.
    pub epoch_bumps: u64,
    /// Why the producer stopped by itself, if it did (it was fenced, say, or its writer
    /// thread panicked).
    pub fatal: Option<String>,
    /// Delivery reports that panicked (caught and logged; see [`Summary::callback_panics`]).
    pub callback_panics: u64,
    /// Milliseconds the brokers asked this producer to hold off (their quotas, KIP-219),
    /// added up over responses.
    pub throttled_ms: u64,
    /// Errors seen, by kind (retried ones included).
    pub errors: BTreeMap<String, u64>,
    /// Records waiting in the channel.
    pub queue_depth: usize,
    /// Time from `send` to acknowledgement.
    pub latency: Percentiles,
    /// The same times, as counts by bucket (for [`crate::metrics::Prometheus`]).
    pub latency_histogram: HistogramSnapshot,
}

/// State shared by the handles and the writer.
pub(crate) struct Shared {
    /// What every send touches, apart from what the writer updates.
    pub(crate) gate: Gate,
    /// Senders waiting for room in a full channel.
    pub(crate) room: Room,
    pub(crate) clock: Clock,
    /// Records the writer took from the channel (it alone counts them: a send pays for no
    /// counter of its own).
    pub(crate) accepted: AtomicU64,
    pub(crate) close_deadline: Mutex<Option<Instant>>,
    pub(crate) delivered: Counter,
    pub(crate) failed: Counter,
    pub(crate) bytes_delivered: Counter,
    pub(crate) batches: Counter,
    pub(crate) batch_records: Counter,
    pub(crate) batch_bytes: Counter,
    pub(crate) in_flight: Counter,
    pub(crate) retries: Counter,
    pub(crate) throttled_ms: Counter,
    /// Producer id and epoch, -1 without idempotence.
    pub(crate) producer_id: AtomicI64,
    pub(crate) producer_epoch: AtomicI64,
    pub(crate) epoch_bumps: Counter,
    /// A transaction is open (records may be sent); only a transactional producer sets it.
    pub(crate) txn_open: AtomicBool,
    pub(crate) txn_committed: Counter,
    pub(crate) txn_aborted: Counter,
    pub(crate) fatal: Mutex<Option<Arc<client::Error>>>,
    /// The message of the panic that stopped the writer thread, if one did.
    pub(crate) panicked: Mutex<Option<String>>,
    /// Delivery callbacks (and `on_delivery` calls) that panicked.
    pub(crate) callback_panics: Counter,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
    pub(crate) latency: Histogram,
}

/// The two atomics every send touches, on a cache line of their own: the writer updates
/// its counters many times a batch, and sharing a line with them would make each send wait
/// for that line.
#[repr(align(128))]
pub(crate) struct Gate {
    /// Senders between their closing check and their enqueue (see `Producer::enqueue`).
    pub(crate) sending: AtomicUsize,
    pub(crate) closing: AtomicBool,
}

/// Where senders wait for room in a full channel. Waiting inside the channel would have the
/// writer wake one sender per record it takes (a futex call each, and a context switch on
/// two cores), while the channel stays full; here the writer wakes them all at once, when
/// the channel is half empty, and a send that finds room pays one atomic load for it.
#[derive(Default)]
pub(crate) struct Room {
    waiting: AtomicUsize,
    lock: Mutex<()>,
    freed: std::sync::Condvar,
}

impl Room {
    /// Longest wait between two tries: bounds what a missed wake-up could cost.
    const RETRY: Duration = Duration::from_millis(10);

    /// Send `msg`, waiting until `deadline` (none: for as long as it takes) for room; hands
    /// it back on timeout (`false`) or when the writer is gone (`true`). The message comes
    /// back by value, as from the channel's own `try_send`: boxing it would cost an
    /// allocation where none is needed.
    #[allow(clippy::result_large_err)]
    fn send(
        &self,
        tx: &Sender<Msg>,
        mut msg: Msg,
        deadline: Option<Instant>,
    ) -> Result<(), (Msg, bool)> {
        // Counted before the first try, and each try is made under the lock the writer
        // takes to wake us: a writer that made room after a try finds us counted and
        // waiting.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let sent = loop {
            let guard = self.lock.locked();
            msg = match tx.try_send(msg) {
                Ok(()) => break Ok(()),
                Err(TrySendError::Disconnected(m)) => break Err((m, true)),
                Err(TrySendError::Full(m)) => m,
            };
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(Self::RETRY),
                    _ => break Err((msg, false)),
                },
                None => Self::RETRY,
            };
            drop(self.freed.wait_timeout(guard, wait));
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        sent
    }

    /// The writer took records: wake every waiting sender if the channel is at most half
    /// full (`len`, `capacity`).
    pub(crate) fn taken(&self, len: usize, capacity: usize) {
        if len <= capacity / 2 {
            self.wake_all();
        }
    }

    /// Wake every waiting sender (also when the producer is closing).
    pub(crate) fn wake_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.locked();
            self.freed.notify_all();
        }
    }
}

/// Wall-clock milliseconds from a monotonic clock read. A send needs both an `Instant`
/// (linger, delivery timeout, latency) and a wall-clock timestamp; this derives the second
/// from the first, saving a system clock read per record. The writer re-reads the wall
/// clock once a second ([`Clock::resync`]), so a stepped system clock shows within a second.
pub(crate) struct Clock {
    origin: Instant,
    /// Wall-clock milliseconds at `origin`, as of the last resync.
    offset_ms: AtomicI64,
}

impl Clock {
    fn new() -> Clock {
        let c = Clock {
            origin: Instant::now(),
            offset_ms: AtomicI64::new(0),
        };
        c.resync();
        c
    }

    /// Milliseconds since the Unix epoch at `now`.
    pub(crate) fn wall_ms(&self, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.origin).as_millis() as i64;
        self.offset_ms.load(Ordering::Relaxed) + since
    }

    /// Re-read the wall clock.
    pub(crate) fn resync(&self) {
        let since = self.origin.elapsed().as_millis() as i64;
        self.offset_ms.store(now_ms() - since, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn count_error(&self, kind: String) {
        *self.errors.locked().entry(kind).or_default() += 1;
    }

    pub(crate) fn set_producer(&self, who: Option<ProducerIdentity>) {
        let (id, epoch) = who.map_or((-1, -1), |w| (w.id, w.epoch as i64));
        self.producer_id.store(id, Ordering::Relaxed);
        self.producer_epoch.store(epoch, Ordering::Relaxed);
    }

    pub(crate) fn producer(&self) -> Option<ProducerIdentity> {
        let id = self.producer_id.load(Ordering::Relaxed);
        (id >= 0).then(|| ProducerIdentity {
            id,
            epoch: self.producer_epoch.load(Ordering::Relaxed) as i16,
        })
    }
}

pub(crate) enum Msg {
    Record(Envelope),
    /// A transactional call, in order with the records.
    Txn(txn::TxnCall),
    /// Wakes the writer (close was called).
    Wake,
}

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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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

/// Why [`Producer::send_and_wait`] gave no delivery.
#[derive(Debug, thiserror::Error)]
pub enum SendAndWaitError {
    /// The record was not accepted (it is inside).
    #[error(transparent)]
    Send(SendError),
    /// It was accepted but not delivered.
    #[error(transparent)]
    Delivery(DeliveryError),
    /// No outcome came in time.
    #[error(transparent)]
    Wait(WaitError),
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

/// Make sure `topic` exists, creating it if `create` says how.
pub(crate) fn ensure_topic(
    cluster: &mut Cluster,
    topic: &str,
    create: Option<TopicDefaults>,
) -> Result<(), client::Error> {
    let new = create.map(|d| NewTopic::new(topic, d.partitions, d.replication_factor));
    cluster.ensure_topic(topic, new.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_derives_wall_time_from_instants() {
        let clock = Clock::new();
        let before = now_ms();
        let derived = clock.wall_ms(Instant::now());
        let after = now_ms();
        // Two truncations to whole milliseconds: at most 1 ms off either way.
        assert!(
            before - 1 <= derived && derived <= after + 1,
            "{before} {derived} {after}"
        );
        // Later instants give later (never earlier) times, at the instants' own spacing.
        let t = Instant::now();
        let (a, b) = (
            clock.wall_ms(t),
            clock.wall_ms(t + Duration::from_millis(1500)),
        );
        assert!((1499..=1501).contains(&(b - a)), "{a} {b}");
        // An instant before the clock's origin is not a panic.
        let early = clock.origin.checked_sub(Duration::from_secs(1));
        if let Some(early) = early {
            assert!(clock.wall_ms(early) <= a);
        }
        // A resync keeps the reading within the same bounds.
        clock.resync();
        let derived = clock.wall_ms(Instant::now());
        assert!((derived - now_ms()).abs() <= 1, "{derived}");
    }
}
