//! Share groups (KIP-932, Kafka 4.2+): [`ShareConsumer`], one member driven by the caller's
//! thread, and [`ConsumerPool`](super::ConsumerPool) with
//! [`GroupProtocol::Share`](super::GroupProtocol::Share), N members on threads of their own.
//!
//! ```text
//!  partition 0 ─┬─▶ member 0: acquires records 0-499, then 1000-1499 ─▶ accept / release / reject
//!               ├─▶ member 1: acquires records 500-999 ...
//!  partition 1 ─┴─▶ member 2 ...            (each record's lock runs out unless acknowledged)
//! ```
//!
//! A consumer group gives each partition to one member; a share group lets many members read
//! one partition, record by record. Each record a member fetches is *acquired* for a time
//! (the group's `share.record.lock.duration.ms`, 30 s by default), then acknowledged: accepted
//! (done), released (delivered again, to any member, its delivery count one higher) or
//! rejected (poison: archived). A record whose lock runs out (a crashed member, a handler
//! too slow) is delivered again; one delivered `share.delivery.count.limit` times (5) is
//! archived. There are no offsets to commit: the group keeps each partition's state.

mod ack;
mod books;
mod engine;
pub(super) mod pool;

use std::time::{Duration, Instant};

use crate::client::AckKind;

use super::config::{ConsumerConfig, GroupProtocol};
use super::error::Error;
use super::pool::{summary, ConsumerSummary};
use super::record::ConsumedRecord;
use super::shared::Shared;
use super::stats::ConsumerStats;
pub use ack::{AckOutcome, Acknowledge};
use engine::ShareEngine;

/// One member of a share group, driven by the caller's thread: `poll` hands out records
/// acquired for this member, each to be acknowledged.
///
/// Records handed out by a `poll` and not acknowledged by the next `poll` are accepted
/// then (implicit acknowledgement). [`acknowledge`](Self::acknowledge) says otherwise for a
/// record, or says it sooner; acknowledgements travel with the next fetch, or at once with
/// [`commit`](Self::commit). Heartbeats go on from a thread of the consumer's own.
///
/// ```no_run
/// use std::time::Duration;
/// use kpipe::consumer::{Acknowledge, ConsumerConfig, GroupProtocol, ShareConsumer};
///
/// let mut config = ConsumerConfig::new("localhost:9092", "workers", &["jobs"]);
/// config.group_protocol = GroupProtocol::Share;
/// let mut consumer = ShareConsumer::new(config)?;
/// for _ in 0..10 {
///     for record in consumer.poll(Duration::from_millis(500))? {
///         let ok = record.value.as_deref().is_some_and(|v| !v.is_empty());
///         let verdict = if ok { Acknowledge::Accept } else { Acknowledge::Reject };
///         consumer.acknowledge(&record, verdict)?;
///     }
/// }
/// consumer.close(Duration::from_secs(10))?;
/// # Ok::<(), kpipe::consumer::Error>(())
/// ```
#[derive(Debug)]
pub struct ShareConsumer {
    engine: ShareEngine,
    shared: std::sync::Arc<Shared>,
    started: Instant,
    records: Vec<ConsumedRecord>,
    /// Records the last `poll` handed out, finished by the next poll or the close.
    handed: u64,
}

impl ShareConsumer {
    /// Join `config.group` as a share member (`config.group_protocol` must be
    /// [`GroupProtocol::Share`]). Fails at once if the brokers cannot be reached, a topic
    /// does not exist, or the cluster does not offer share groups (Kafka 4.1 and older).
    ///
    /// A new share group starts at the latest record (the broker's
    /// `share.auto.offset.reset`); set [`ConsumerConfig::share_auto_offset_reset`] to start
    /// it elsewhere.
    pub fn new(config: ConsumerConfig) -> Result<ShareConsumer, Error> {
        if config.group_protocol != GroupProtocol::Share {
            return Err(Error::Config {
                field: "group_protocol",
                reason:
                    "a ShareConsumer needs GroupProtocol::Share (use Consumer for a consumer group)"
                        .into(),
            });
        }
        config.validate()?;
        let shared = std::sync::Arc::new(Shared::new(config.shutdown.clone()));
        let cluster = pool::prepare(&config)?;
        let mut engine = ShareEngine::start(0, config, cluster, shared.clone())?;
        engine.keep_outcomes = true;
        Ok(ShareConsumer {
            engine,
            shared,
            started: Instant::now(),
            records: Vec::new(),
            handed: 0,
        })
    }

    /// Accept what the last poll handed out and was not acknowledged, send queued
    /// acknowledgements, and return the records acquired within `timeout` (at most
    /// `max_poll_records`), each with its delivery count. Empty when none came in time.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, Error> {
        self.engine.acknowledge_all(AckKind::Accept, false);
        self.finish_handed();
        self.engine.clear_outcomes();
        let mut out = std::mem::take(&mut self.records);
        out.clear();
        let max = self.engine.config.max_poll_records;
        self.engine.poll_into(&mut out, max, timeout)?;
        self.handed = out.len() as u64;
        self.shared.handed_out.add(self.handed);
        Ok(out)
    }

    /// Acknowledge a record this consumer handed out; it is sent with the next `poll` or
    /// `commit`. Acknowledging again before then replaces the earlier kind. An error names
    /// a record this consumer does not hold (or whose acknowledgement was sent already).
    pub fn acknowledge(&mut self, record: &ConsumedRecord, kind: Acknowledge) -> Result<(), Error> {
        self.engine
            .acknowledge(&record.topic, record.partition, record.offset, kind.kind())
    }

    /// Send the acknowledgements given so far now (not waiting for the next poll) and wait
    /// for the brokers' answers, up to the request timeout; returns what became of each,
    /// those that rode on fetches since the last poll included. Records handed out and not
    /// acknowledged are left as they are.
    pub fn commit(&mut self) -> Result<Vec<AckOutcome>, Error> {
        let deadline = Instant::now() + self.engine.config.client.connection.request_timeout;
        self.engine.flush(deadline)?;
        Ok(self.engine.take_outcomes())
    }

    /// The partitions the coordinator assigned this member (other members may share them).
    pub fn assignment(&self) -> Vec<crate::client::TopicPartition> {
        self.engine.assignment()
    }

    /// Counters: records handed out and finished, acknowledged, released, rejected,
    /// redelivered.
    pub fn stats(&self) -> ConsumerStats {
        self.shared.snapshot(self.started.elapsed())
    }

    /// Accept what was handed out and not acknowledged (the caller is done with it),
    /// release what was acquired and not handed out, send every acknowledgement, close the
    /// share sessions and leave the group, within `timeout`; then report what this consumer
    /// did. An error means the close could not be done in full (acknowledgements or the
    /// leave not sent): records not acknowledged go back to the group when their locks run
    /// out.
    pub fn close(mut self, timeout: Duration) -> Result<ConsumerSummary, Error> {
        self.finish_handed();
        self.engine
            .close(AckKind::Accept, Instant::now() + timeout)?;
        Ok(summary(&self.shared, 0))
    }

    /// What the last poll handed out is done with (acknowledged, or accepted as the caller
    /// moved on).
    fn finish_handed(&mut self) {
        self.shared.handled.add(std::mem::take(&mut self.handed));
    }
}

impl Drop for ShareConsumer {
    /// Dropped without [`close`](ShareConsumer::close): what the last poll handed out and
    /// was not acknowledged is released (it may not have been processed), acknowledgements
    /// given are sent, and the member leaves, within 30 s.
    fn drop(&mut self) {
        if let Err(e) = self
            .engine
            .close(AckKind::Release, Instant::now() + Duration::from_secs(30))
        {
            log::warn!("share consumer dropped without close: {e}");
        }
    }
}
