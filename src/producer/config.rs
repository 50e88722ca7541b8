//! Producer settings, with the Java client's 4.x defaults unless noted.

use std::time::Duration;

use crate::client::{Acks, ClientConfig, Compression};
use crate::shutdown::Shutdown;

use super::balancer::Balancer;
use super::delivery::OnDelivery;
use super::error::Error;
use super::lane::MAX_IDEMPOTENT_IN_FLIGHT;

/// How to create topics the producer writes to but the cluster lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic.
    pub replication_factor: i16,
}

/// Everything a [`Producer`](super::Producer) needs. Build with [`ProducerConfig::new`], adjust
/// fields, then pass to [`Producer::new`](super::Producer::new), which validates it.
///
/// ```
/// use std::time::Duration;
/// use kpipe::client::{Acks, Compression};
/// use kpipe::producer::TopicDefaults;
/// use kpipe::ProducerConfig;
///
/// let mut config = ProducerConfig::new("broker-1:9092,broker-2:9092").topic("telemetry-events");
/// config.compression = Compression::Lz4;
/// config.linger = Duration::from_millis(10); // bigger batches, a little more latency
/// config.acks = Acks::All; // the default; with it, idempotence is on
/// config.create_topics = Some(TopicDefaults { partitions: 6, replication_factor: 3 });
/// config.validate()?; // Producer::new does this too
/// assert!(config.idempotent());
/// # Ok::<(), kpipe::producer::Error>(())
/// ```
#[derive(Debug)]
pub struct ProducerConfig {
    /// Brokers and connection settings.
    pub client: ClientConfig,
    /// Topic for records that name none. Default none: every record must name its topic.
    pub topic: Option<String>,
    /// Capacity of the channel between senders and the writer thread, in records.
    /// When full, `send` blocks (backpressure). Default 10,000.
    pub queue_capacity: usize,
    /// Bytes of records the writer holds in its partition queues (not yet sent) before it
    /// stops taking more from the channel; with the channel's capacity this bounds memory.
    /// Default 32 MiB (Java `buffer.memory`).
    pub buffer_bytes: usize,
    /// How long `send` may block on a full channel before it hands the record back.
    /// Default 10 s (the Go design's `WriteTimeout`).
    pub write_timeout: Duration,
    /// How long a partition's batch may wait for more records before it is sent.
    /// Default 5 ms (Java 4.x `linger.ms`).
    pub linger: Duration,
    /// A partition's batch is sent once it holds this many bytes. Default 16 KiB
    /// (Java `batch.size`).
    pub batch_bytes: usize,
    /// Largest produce request, and so largest record, in bytes. Default 1 MiB
    /// (Java `max.request.size`).
    pub max_request_bytes: usize,
    /// Produce requests in flight per broker connection, and batches in flight per
    /// partition with idempotence (without it a partition has one, so that a retry cannot
    /// reorder it). Default 5 (Java `max.in.flight.requests.per.connection`).
    pub max_in_flight: usize,
    /// Acknowledgement level. Default [`Acks::All`].
    pub acks: Acks,
    /// Idempotent writes (KIP-98): the broker writes each batch once and in order, whatever
    /// the retries, leader changes and reconnects. `None`, the default, means on unless
    /// `acks` is not [`Acks::All`] or `max_in_flight` is above 5, which it cannot keep (then
    /// off, as in the Java client). `Some(true)` insists: [`validate`](Self::validate) refuses
    /// settings it cannot keep. `Some(false)` turns it off.
    pub idempotence: Option<bool>,
    /// Batch compression. Default none.
    pub compression: Compression,
    /// How long a record may take from `send` to acknowledgement, retries included, before
    /// it fails. Default 120 s (Java `delivery.timeout.ms`). Must be at least
    /// `linger + request_timeout`.
    pub delivery_timeout: Duration,
    /// Partition choice. Default [`Balancer::LeastBytes`] (keyed records always hash).
    ///
    /// Keyed records hash over the topic's partition count as the producer's metadata last
    /// showed it (refreshed every `client.metadata_max_age`): after partitions are added, a
    /// key's records go to its new partition, as with the Java producer, and records of one
    /// key written before and after the change may be in different partitions. Order per
    /// key holds within each partition only.
    pub balancer: Balancer,
    /// Create missing topics with these settings. Default none: a missing topic is an error.
    pub create_topics: Option<TopicDefaults>,
    /// A shared shutdown flag; when it is set the producer stops intake and drains, as
    /// [`close`](super::Producer::close) does. Default none.
    pub shutdown: Option<Shutdown>,
    /// Bound on the drain when the shutdown flag is set or the last handle is dropped.
    /// Default 30 s.
    pub close_timeout: Duration,
    /// The handler of the records sent with
    /// [`send_tagged`](super::Producer::send_tagged). Default none. A call that panics is
    /// caught, logged and counted, and the producer goes on (see [`OnDelivery`]).
    pub on_delivery: Option<OnDelivery>,
    /// Makes the producer transactional (KIP-98): records go into transactions that
    /// [`begin_transaction`](super::Producer::begin_transaction) opens and
    /// [`commit_transaction`](super::Producer::commit_transaction) or
    /// [`abort_transaction`](super::Producer::abort_transaction) ends, with the consumer's
    /// offsets if [`send_offsets_to_transaction`](super::Producer::send_offsets_to_transaction)
    /// adds them. The id names one producer instance across restarts: a new producer with
    /// the same id fences the old one and aborts what it left open. Needs idempotence (on
    /// by default). Default none (Java `transactional.id`).
    pub transactional_id: Option<String>,
    /// How long a transaction may stay open before the coordinator aborts it; at most the
    /// broker's `transaction.max.timeout.ms` (15 min by default). Default 60 s (Java
    /// `transaction.timeout.ms`).
    pub transaction_timeout: Duration,
}

impl ProducerConfig {
    /// Defaults, talking to `brokers` (comma-separated `host:port` list).
    pub fn new(brokers: &str) -> Self {
        ProducerConfig {
            client: ClientConfig::new([brokers]),
            topic: None,
            queue_capacity: 10_000,
            buffer_bytes: 32 << 20,
            write_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            batch_bytes: 16 * 1024,
            max_request_bytes: 1024 * 1024,
            max_in_flight: 5,
            acks: Acks::All,
            idempotence: None,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            balancer: Balancer::default(),
            create_topics: None,
            shutdown: None,
            close_timeout: Duration::from_secs(30),
            on_delivery: None,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }

    /// Set the default topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Whether the producer will be idempotent with these settings (see
    /// [`idempotence`](Self::idempotence)).
    pub fn idempotent(&self) -> bool {
        self.idempotence.unwrap_or(
            self.transactional_id.is_some()
                || (self.acks == Acks::All && self.max_in_flight <= MAX_IDEMPOTENT_IN_FLIGHT),
        )
    }

    /// Check every field; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.client.validate().map_err(Error::Client)?;
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1 record".into());
        }
        if let Some(reason) = self.compression.unavailable() {
            return bad("compression", reason);
        }
        if self.buffer_bytes < self.batch_bytes {
            return bad(
                "buffer_bytes",
                format!(
                    "{} is below batch_bytes ({})",
                    self.buffer_bytes, self.batch_bytes
                ),
            );
        }
        if self.batch_bytes == 0 {
            return bad("batch_bytes", "must be at least 1 byte".into());
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > i32::MAX as usize {
            return bad(
                "max_request_bytes",
                format!("{} is outside 1 KiB..2 GiB", self.max_request_bytes),
            );
        }
        if self.batch_bytes > self.max_request_bytes {
            return bad(
                "batch_bytes",
                format!(
                    "{} exceeds max_request_bytes ({})",
                    self.batch_bytes, self.max_request_bytes
                ),
            );
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1".into());
        }
        if let Some(id) = &self.transactional_id {
            let fix = "a transactional producer is idempotent: set acks to all, \
                       max_in_flight to 5 or less, and idempotence to None or Some(true)";
            if id.trim().is_empty() {
                return bad(
                    "transactional_id",
                    "must not be empty; use None for a producer without transactions".into(),
                );
            }
            if self.idempotence == Some(false)
                || self.acks != Acks::All
                || self.max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT
            {
                return bad("transactional_id", fix.into());
            }
            if self.transaction_timeout < Duration::from_millis(1)
                || self.transaction_timeout > Duration::from_millis(i32::MAX as u64)
            {
                return bad(
                    "transaction_timeout",
                    "must be between 1 ms and 24 days (and within the broker's \
                     transaction.max.timeout.ms, 15 min by default)"
                        .into(),
                );
            }
        }
        if self.idempotence == Some(true) && self.acks != Acks::All {
            return bad(
                "idempotence",
                format!(
                    "needs acks=all, and acks is {}; set acks to all, or idempotence to \
                     Some(false) (or None, which turns it off with other acks)",
                    self.acks
                ),
            );
        }
        if self.idempotence == Some(true) && self.max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT {
            return bad(
                "idempotence",
                format!(
                    "allows at most {MAX_IDEMPOTENT_IN_FLIGHT} batches in flight (the broker \
                     remembers that many), and max_in_flight is {}; lower it, or set \
                     idempotence to Some(false)",
                    self.max_in_flight
                ),
            );
        }
        if self.write_timeout.is_zero() {
            return bad(
                "write_timeout",
                "must be greater than zero (use try_send not to block)".into(),
            );
        }
        let request_timeout = self.client.connection.request_timeout;
        if self.linger > self.delivery_timeout {
            return bad(
                "linger",
                format!(
                    "{:?} exceeds delivery_timeout ({:?})",
                    self.linger, self.delivery_timeout
                ),
            );
        }
        if self.delivery_timeout < self.linger + request_timeout {
            return bad(
                "delivery_timeout",
                format!(
                    "{:?} is shorter than linger + request_timeout ({:?}); raise it or lower those",
                    self.delivery_timeout,
                    self.linger + request_timeout
                ),
            );
        }
        if let Some(t) = &self.topic {
            if t.is_empty() || t.len() > 249 {
                return bad(
                    "topic",
                    format!("{t:?} is not a valid topic name (1 to 249 characters)"),
                );
            }
        }
        if let Some(d) = self.create_topics {
            if d.partitions < 1 || d.replication_factor < 1 {
                return bad(
                    "create_topics",
                    "partitions and replication_factor must be at least 1".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: ProducerConfig) -> String {
        match c.validate() {
            Err(Error::Config { field, .. }) => field.to_string(),
            Err(Error::Client(e)) => e.to_string(),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        ProducerConfig::new("localhost:9092").validate().unwrap();
    }

    #[test]
    fn idempotence_is_on_by_default_and_quietly_off_where_it_cannot_hold() {
        let base = || ProducerConfig::new("localhost:9092");
        assert!(base().idempotent());
        for (acks, on) in [
            (Acks::All, true),
            (Acks::Leader, false),
            (Acks::None, false),
        ] {
            let c = ProducerConfig { acks, ..base() };
            assert_eq!(c.idempotent(), on, "{acks}");
            c.validate().unwrap();
        }
        let many = ProducerConfig {
            max_in_flight: 10,
            ..base()
        };
        assert!(!many.idempotent());
        let off = ProducerConfig {
            idempotence: Some(false),
            ..base()
        };
        assert!(!off.idempotent());
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = || ProducerConfig::new("localhost:9092");
        assert_eq!(
            field_of(ProducerConfig {
                queue_capacity: 0,
                ..base()
            }),
            "queue_capacity"
        );
        assert_eq!(
            field_of(ProducerConfig {
                max_in_flight: 0,
                ..base()
            }),
            "max_in_flight"
        );
        assert_eq!(
            field_of(ProducerConfig {
                batch_bytes: 2 << 20,
                ..base()
            }),
            "batch_bytes"
        );
        assert_eq!(
            field_of(ProducerConfig {
                linger: Duration::from_secs(200),
                ..base()
            }),
            "linger"
        );
        assert_eq!(
            field_of(ProducerConfig {
                delivery_timeout: Duration::from_secs(1),
                ..base()
            }),
            "delivery_timeout"
        );
        assert!(field_of(ProducerConfig::new("")).contains("`bootstrap`"));
        // Asked for explicitly, idempotence refuses what it cannot keep...
        for c in [
            ProducerConfig {
                idempotence: Some(true),
                acks: Acks::Leader,
                ..base()
            },
            ProducerConfig {
                idempotence: Some(true),
                max_in_flight: 6,
                ..base()
            },
        ] {
            assert_eq!(field_of(c), "idempotence");
        }
        assert_eq!(field_of(base().topic("")), "topic");
    }
}
