//! Records going in, and what becomes of them: delivery reports, errors, receipts.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::client::{self, Header};

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic; `None` uses the producer's default topic.
    pub topic: Option<Arc<str>>,
    /// Key: records with the same key go to the same partition.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order (duplicate keys allowed).
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` means the moment of sending.
    pub timestamp: Option<i64>,
    /// The partition to write to; `None` (the default) lets the producer choose: by the
    /// key's hash for a keyed record, by the balancer otherwise. A partition the topic
    /// does not have fails the record (`DeliveryError::Rejected`, unknown partition).
    pub partition: Option<i32>,
}

impl ProducerRecord {
    /// A record with this value, for the default topic.
    pub fn new(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// Set the topic.
    pub fn topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Set the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Add a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Set the timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Write to this partition, whatever the key and the balancer say.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Bytes this record takes in a batch, at most (used for size limits and balancing).
    pub fn encoded_size(&self) -> usize {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len) + 5;
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + 5 + len(&h.value))
            .sum();
        // length, attributes, timestamp delta, offset delta, header count: at most 21 bytes.
        21 + len(&self.key) + len(&self.value) + headers
    }
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition; -1 with acks=0, where the broker says nothing.
    pub offset: i64,
    /// Timestamp of the record (create time, or log-append time if the topic uses it).
    pub timestamp: i64,
}

/// Why a record was not delivered. Cheap to clone: one failure often concerns many records.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The broker refused the record for good (too large, invalid, not authorised...).
    #[error("rejected by the broker: {0}")]
    Rejected(Arc<client::Error>),
    /// Retries did not succeed within `delivery_timeout`.
    #[error("not acknowledged within the delivery timeout of {after:?}{}", last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    TimedOut {
        /// The delivery timeout.
        after: Duration,
        /// The last error seen, if any.
        last_error: Option<Arc<client::Error>>,
    },
    /// The topic does not exist and topic creation is off.
    #[error("topic {0:?} does not exist; create it first or set create_topics")]
    UnknownTopic(Arc<str>),
    /// The producer closed before the record was sent (its deadline passed first).
    #[error("the producer closed before this record was sent")]
    NotAttempted,
    /// The record was sent, but the producer closed before the broker answered: it may or
    /// may not have been written.
    #[error("the producer closed while this record awaited its acknowledgement (it may have been written)")]
    Unacknowledged,
    /// A transactional producer took the record when no transaction could take it (it
    /// raced a commit or an abort, or the transaction had failed); the reason says which.
    #[error("not in a transaction: {0}")]
    NotInTransaction(String),
    /// Its transaction was aborted (by the caller, or because something in it failed)
    /// before the record was sent.
    #[error("its transaction was aborted before it was sent")]
    TransactionAborted,
    /// The topic was deleted and created again (metadata shows another topic id) while the
    /// producer held this record for the old one: it was not written to the new topic (if
    /// it was in flight, it may have been written to the old one before its deletion).
    /// Records sent after the producer noticed go to the new topic; send this one again to
    /// write it there.
    #[error("topic {topic:?} was deleted and created again (topic id {old_id}, now {new_id}); this record was accepted for the old topic and was not written to the new one")]
    TopicRecreated {
        /// The topic's name.
        topic: Arc<str>,
        /// The id of the topic the record was bound for.
        old_id: uuid::Uuid,
        /// The id of the topic now under that name.
        new_id: uuid::Uuid,
    },
}

/// The outcome of one record.
pub type DeliveryResult = Result<Delivery, DeliveryError>;

/// One handler for the outcomes of every record sent with
/// [`Producer::send_tagged`](super::Producer::send_tagged), set in
/// [`ProducerConfig::on_delivery`](super::ProducerConfig::on_delivery): called on the writer
/// thread with the record's tag and its outcome. It is librdkafka's delivery report callback
/// with its per-message opaque: a send costs no allocation for its report, where
/// [`send_with_callback`](super::Producer::send_with_callback) boxes a closure per record.
/// Keep it short and never block in it.
///
/// A call that panics does not stop the producer: the panic is caught, logged at error level
/// with the record and the panic's message, and counted (`callback_panics` in the producer's
/// stats and summary); the record counts as delivered (or failed) all the same, and the
/// handler is called as before for every other record. State it shares with the code that
/// panicked (a poisoned `Mutex`, say) is the handler's to deal with.
#[derive(Clone)]
pub struct OnDelivery(Arc<dyn Fn(u64, DeliveryResult) + Send + Sync>);

impl OnDelivery {
    /// A handler calling `f(tag, outcome)`.
    pub fn new(f: impl Fn(u64, DeliveryResult) + Send + Sync + 'static) -> Self {
        OnDelivery(Arc::new(f))
    }
}

impl std::fmt::Debug for OnDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDelivery(..)")
    }
}

/// How the writer reports one record's outcome. `None` costs nothing.
pub(crate) enum Report {
    None,
    Wait(Sender<DeliveryResult>),
    Callback(Box<dyn FnOnce(DeliveryResult) + Send>),
    /// For the producer's [`OnDelivery`] handler.
    Tag(u64),
}

impl Report {
    /// Hand `result` to whoever asked. A callback or handler that panics does not unwind
    /// into the writer: its panic message comes back, for the writer to log and count.
    pub(crate) fn deliver(
        self,
        result: DeliveryResult,
        handler: Option<&OnDelivery>,
    ) -> Result<(), String> {
        match self {
            Report::None => Ok(()),
            // The receipt may have been dropped: nobody is waiting then.
            Report::Wait(tx) => {
                let _ = tx.send(result);
                Ok(())
            }
            Report::Callback(f) => caught(move || f(result)),
            // `send_tagged` refuses records when there is no handler.
            Report::Tag(tag) => match handler {
                Some(h) => caught(|| (h.0)(tag, result)),
                None => Ok(()),
            },
        }
    }
}

/// Run user code, turning a panic into its message. The writer owns no state the user's
/// code can reach, so nothing of the writer's is left half-changed by the unwinding.
fn caught(f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// What a panic said: its message when it was a string (as `panic!` makes), else a note
/// that it was not.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

/// A handle on one record's delivery, from [`Producer::send_tracked`](super::Producer::send_tracked).
#[derive(Debug)]
pub struct DeliveryReceipt {
    pub(crate) rx: Receiver<DeliveryResult>,
    pub(crate) bound: Duration,
}

/// Waiting on a [`DeliveryReceipt`] did not give an outcome.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WaitError {
    /// No outcome within the wait's bound.
    #[error("no delivery outcome within {0:?}")]
    Timeout(Duration),
    /// The writer thread is gone without reporting: it panicked with this record in hand
    /// (see [`Error::WriterPanicked`](super::Error::WriterPanicked); it reports every
    /// other record).
    #[error("the producer's writer thread ended without reporting this record")]
    Lost,
}

impl DeliveryReceipt {
    /// Wait for the outcome, at most the producer's delivery timeout plus its close timeout
    /// (the writer always reports by then).
    pub fn wait(self) -> Result<DeliveryResult, WaitError> {
        let bound = self.bound;
        self.wait_timeout(bound)
    }

    /// Wait for the outcome at most `timeout`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<DeliveryResult, WaitError> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(WaitError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(WaitError::Lost),
        }
    }

    /// The outcome if it is already known.
    pub fn try_result(&self) -> Option<DeliveryResult> {
        self.rx.try_recv().ok()
    }
}

/// A record on its way from a sender to the writer.
pub(crate) struct Envelope {
    pub(crate) record: ProducerRecord,
    pub(crate) enqueued: Instant,
    pub(crate) report: Report,
    /// `record.encoded_size()`, computed once.
    pub(crate) size: usize,
}

/// Why a record was handed back instead of accepted. Nothing is dropped: every variant
/// carries the record (boxed, so that the accepted path returns a small value).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The queue stayed full for the whole `write_timeout` (or, for `try_send`, was full).
    #[error("the producer queue is full (backpressure: the brokers are slower than the senders)")]
    QueueFull(Box<ProducerRecord>),
    /// The producer is closing or closed.
    #[error("the producer is closed")]
    Closed(Box<ProducerRecord>),
    /// The record can never be sent as it is.
    #[error("invalid record: {reason}")]
    Invalid {
        /// The record.
        record: Box<ProducerRecord>,
        /// What is wrong with it.
        reason: String,
    },
    /// A transactional producer takes records only while a transaction is open.
    #[error("no transaction is open: call begin_transaction before sending")]
    NoTransaction(Box<ProducerRecord>),
}

impl SendError {
    /// Take the record back.
    pub fn into_record(self) -> ProducerRecord {
        match self {
            SendError::QueueFull(r)
            | SendError::Closed(r)
            | SendError::NoTransaction(r)
            | SendError::Invalid { record: r, .. } => *r,
        }
    }
}
