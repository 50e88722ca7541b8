//! Producer settings, with the Java client's 4.x defaults unless noted.

use std::time::Duration;

use crate::client::{Acks, ClientConfig, Compression};
use crate::shutdown::Shutdown;

use super::balancer::Balancer;
use super::Error;

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
    /// Produce requests in flight per broker connection. Default 5
    /// (Java `max.in.flight.requests.per.connection`).
    pub max_in_flight: usize,
    /// Acknowledgement level. Default [`Acks::All`].
    pub acks: Acks,
    /// Batch compression. Default none.
    pub compression: Compression,
    /// How long a record may take from `send` to acknowledgement, retries included, before
    /// it fails. Default 120 s (Java `delivery.timeout.ms`). Must be at least
    /// `linger + request_timeout`.
    pub delivery_timeout: Duration,
    /// Partition choice. Default [`Balancer::LeastBytes`] (keyed records always hash).
    pub balancer: Balancer,
    /// Create missing topics with these settings. Default none: a missing topic is an error.
    pub create_topics: Option<TopicDefaults>,
    /// A shared shutdown flag; when it is set the producer stops intake and drains, as
    /// [`close`](super::Producer::close) does. Default none.
    pub shutdown: Option<Shutdown>,
    /// Bound on the drain when the shutdown flag is set or the last handle is dropped.
    /// Default 30 s.
    pub close_timeout: Duration,
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
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            balancer: Balancer::default(),
            create_topics: None,
            shutdown: None,
            close_timeout: Duration::from_secs(30),
        }
    }

    /// Set the default topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Check every field; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.client.validate().map_err(Error::Client)?;
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1 record".into());
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
        assert_eq!(field_of(base().topic("")), "topic");
    }
}
