//! What the producer reports of itself: the [`Summary`] of a close, the [`ProducerStats`]
//! snapshot, and the [`ProducerIdentity`] both carry.

use std::collections::BTreeMap;

use crate::stats::{HistogramSnapshot, Percentiles};

/// What became of every accepted record, from [`Producer::close`](super::Producer::close).
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
    /// Delivery reports that panicked: a
    /// [`send_with_callback`](super::Producer::send_with_callback) callback, or the
    /// [`on_delivery`](super::ProducerConfig::on_delivery) handler. Each was
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
