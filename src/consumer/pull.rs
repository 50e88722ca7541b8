//! The pull API: [`Consumer`], one group member driven by the caller's thread, and the
//! [`RebalanceListener`] it tells of rebalances. The member's work is its
//! [`Engine`](super::engine::Engine); this file is what the caller sees of it.
//!
//! ```text
//!  caller ─poll─▶ engine: events (assigned / revoked / lost ─▶ listener) ─▶ records
//!  caller ─commit / seek / pause / resume─▶ this member's partitions
//!  caller ─close─▶ revoke (listener), commit what was handed out, leave
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::client::{CommittedOffset, GroupMetadata, TopicPartition};
use crate::sync::Locked;

use super::books::Since;
use super::config::{ConsumerConfig, GroupProtocol};
use super::engine::{self, connect_checked, Change, Engine, Host};
use super::error::Error;
use super::group::MemberStatus;
use super::pool::{self, ConsumerSummary};
use super::record::ConsumedRecord;
use super::shared::Shared;
use super::stats::{ConsumerStats, Truncation};

/// Told of rebalances, on the caller's thread, from inside [`Consumer::poll`] (or a pool's
/// loop). Each method gets the consumer, to look at positions, seek or commit.
///
/// When partitions are revoked, `on_revoked` runs before the consumer commits them (with
/// [`ConsumerConfig::auto_commit`]) and before they are given back, so it can finish work
/// and commit; nothing of theirs is handed out after it. `on_lost` runs when they are gone
/// already (the member was fenced, or stalled past `max_poll_interval`): committing them
/// then fails. By default `on_lost` calls `on_revoked`, as in the Java client.
pub trait RebalanceListener: Send {
    /// These partitions are now this member's; positions are set (committed offset, or the
    /// reset policy), and `seek` may move them.
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }
    /// These partitions are being given back.
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }
    /// These partitions were lost without a chance to commit.
    fn on_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.on_revoked(consumer, partitions);
    }
    /// The logs of these partitions diverged before the consumer's positions (an unclean
    /// leader election, a leader that lost records: KIP-320). Each position went back to
    /// the divergence point (or, without one, where `offset_reset` says), so records from
    /// there on are read again: the log now holds other records at those offsets. With
    /// `offset_reset` `Error`, the positions stay, and `poll` fails until they are sought.
    fn on_truncated(&mut self, consumer: &mut Consumer, truncations: &[Truncation]) {
        let _ = (consumer, truncations);
    }
}

/// A Kafka consumer group member driven by the caller's thread, the way the Go design's
/// `kafka.Reader`, the Java client's `KafkaConsumer` and librdkafka's consumer are: call
/// [`poll`](Self::poll) in a loop, process what it returns, and commit.
///
/// ```no_run
/// use std::time::Duration;
/// use kpipe::{Consumer, ConsumerConfig};
///
/// let mut config = ConsumerConfig::new("localhost:9092", "readers", &["events"]);
/// config.offset_reset = kpipe::consumer::OffsetReset::Earliest;
/// let mut consumer = Consumer::new(config)?;
/// for _ in 0..10 {
///     for record in consumer.poll(Duration::from_millis(500))? {
///         println!("{}-{}@{}", record.topic, record.partition, record.offset);
///     }
/// }
/// consumer.close(Duration::from_secs(30))?; // commits what was handed out, leaves the group
/// # Ok::<(), kpipe::consumer::Error>(())
/// ```
///
/// Group membership (joins, heartbeats, rebalances) runs on a thread of the consumer's own
/// (`kpipe-group-N`), so the caller may take as long as `max_poll_interval` between polls.
/// Rebalances are acted on inside `poll`, where the [`RebalanceListener`] is called.
///
/// **What is committed.** With [`ConsumerConfig::auto_commit`], calling `poll` says that
/// what the previous `poll` handed out is processed: that is committed every
/// `commit_interval`, when partitions are given back, and at [`close`](Self::close), which
/// also takes the last `poll`'s records as processed. A consumer *dropped* without `close`
/// (an early `?`, a panic while processing) commits only what earlier polls handed out,
/// never the last `poll`'s records: those are handed out again to the partitions' next
/// owner. [`commit`](Self::commit) commits everything handed out so far, at once.
///
/// **Errors.** Which errors of [`poll`](Self::poll) end the consumer and which it goes on
/// from is listed there.
pub struct Consumer {
    engine: Engine,
    listener: Option<Box<dyn RebalanceListener>>,
    in_listener: bool,
    /// Records the last `poll` handed out, finished by the next poll, commit or close.
    handed: u64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.engine.config.group)
            .field("assignment", &self.engine.assignment())
            .finish_non_exhaustive()
    }
}

impl Host for Consumer {
    fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    fn on_change(&mut self, change: &Change) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        self.in_listener = true;
        match change {
            Change::Assigned(partitions) => listener.on_assigned(self, partitions),
            Change::Revoking(partitions) => listener.on_revoked(self, partitions),
            Change::Lost(partitions) => listener.on_lost(self, partitions),
            Change::Truncated(truncations) => listener.on_truncated(self, truncations),
        }
        self.in_listener = false;
        self.listener = Some(listener);
    }
}

impl Consumer {
    /// Join `config.group` as one member reading `config.topics`. Fails at once if the
    /// brokers cannot be reached, a topic does not exist, or the group protocol asked for is
    /// not offered; the group is joined in the background (the first `poll` calls see the
    /// assignment arrive).
    pub fn new(config: ConsumerConfig) -> Result<Consumer, Error> {
        Self::build(config, None)
    }

    /// [`new`](Self::new), with a listener told of every rebalance.
    pub fn with_listener(
        config: ConsumerConfig,
        listener: impl RebalanceListener + 'static,
    ) -> Result<Consumer, Error> {
        Self::build(config, Some(Box::new(listener)))
    }

    fn build(
        config: ConsumerConfig,
        listener: Option<Box<dyn RebalanceListener>>,
    ) -> Result<Consumer, Error> {
        config.validate()?;
        if config.group_protocol == GroupProtocol::Share {
            return Err(Error::Config {
                field: "group_protocol",
                reason:
                    "a share group is read with ShareConsumer (or a ConsumerPool), not Consumer"
                        .into(),
            });
        }
        let cluster = connect_checked(&config)?;
        let shared = std::sync::Arc::new(Shared::new(config.shutdown.clone()));
        let instance_id = config.group_instance_id.clone();
        let engine = Engine::start(0, config, instance_id, cluster, shared)?;
        let mut consumer = Consumer::on(engine);
        consumer.listener = listener;
        Ok(consumer)
    }

    /// The pull API over a pool member's engine (an exactly-once member's).
    pub(crate) fn on(engine: Engine) -> Consumer {
        Consumer {
            engine,
            listener: None,
            in_listener: false,
            handed: 0,
        }
    }

    /// Records, up to `max_poll_records`, waiting at most `timeout` for some to arrive
    /// (an empty result means none did). Rebalances are acted on here (the listener is called
    /// from here), and with `auto_commit` what earlier polls handed out is committed every
    /// `commit_interval`: calling `poll` again says those records are finished.
    ///
    /// # Errors
    ///
    /// **Terminal**: the member cannot go on, and every later call returns
    /// [`Error::Stopped`]; [`close`](Self::close) it (nothing is committed) and start a new
    /// consumer if the cause is mended.
    /// - [`Error::Stopped`]: the member stopped earlier (one of these errors, or its group
    ///   thread ended).
    /// - [`Error::GroupRefused`]: the coordinator refused the member for good (not
    ///   authorised for the group, an instance id in use, no common assignor, a full group).
    /// - [`Error::ProtocolUnsupported`]: the KIP-848 protocol was asked of a cluster without it.
    /// - [`Error::Config`]: `offset_reset` is [`OffsetReset::Error`](super::OffsetReset::Error)
    ///   and a partition has no valid committed offset.
    ///
    /// **Not terminal**: the consumer stays usable; `poll` again (after a `seek` where said).
    /// - [`Error::Client`]: a fetch error retrying cannot mend yet (not authorised for a
    ///   topic, say); the fetch is retried, so a grant takes effect. Errors that pass (a
    ///   leader moving, a broker restarting) are retried inside `poll` and never returned.
    /// - [`Error::LogTruncated`]: the log diverged before the position and `offset_reset`
    ///   is `Error`; returned until the partition is sought.
    /// - [`Error::CorruptRecords`]: returned until the partition is sought past the batch.
    /// - [`Error::Misuse`]: `poll` was called from inside a rebalance listener.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use kpipe::{Consumer, ConsumerConfig};
    /// use kpipe::consumer::Error;
    ///
    /// # let mut consumer = Consumer::new(ConsumerConfig::new("localhost:9092", "g", &["t"]))?;
    /// loop {
    ///     match consumer.poll(Duration::from_millis(500)) {
    ///         Ok(records) => records.iter().for_each(|r| println!("{}", r.offset)),
    ///         Err(Error::CorruptRecords { topic, partition, offset, next, .. }) => {
    ///             consumer.seek(&topic, partition, next.unwrap_or(offset + 1))?;
    ///         }
    ///         Err(e @ (Error::Client(_) | Error::LogTruncated { .. })) => eprintln!("{e}"),
    ///         Err(e) => return Err(e), // terminal
    ///     }
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, Error> {
        if self.in_listener {
            return Err(Error::Misuse(
                "poll cannot be called from inside a rebalance listener",
            ));
        }
        self.finish_handed();
        let mut out = Vec::new();
        let max = self.engine.config.max_poll_records;
        engine::fill(self, &mut out, max, timeout)?;
        self.handed = out.len() as u64;
        self.engine.shared.handed_out.add(self.handed);
        Ok(out)
    }

    /// Commit every record handed out so far (calling this says they are processed), and
    /// wait for the coordinator's answer.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.finish_handed();
        let offsets = self.engine.books.uncommitted(Since::Confirmed);
        self.engine.commit_sync(offsets)
    }

    /// Commit these offsets (the next offset to read, per partition) and wait for the
    /// coordinator's answer. Partitions not assigned to this member are refused.
    pub fn commit_offsets(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), Error> {
        for (t, p) in offsets.keys() {
            self.engine.assigned_part(t, *p)?;
        }
        let offsets = offsets
            .iter()
            .map(|(tp, &o)| (tp.clone(), CommittedOffset::at(o)))
            .collect();
        self.engine.commit_sync(offsets)
    }

    /// Read `topic`-`partition` from `offset` on: records already fetched past it are
    /// dropped, and the next `poll` fetches from there.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), Error> {
        if offset < 0 {
            return Err(Error::Config {
                field: "offset",
                reason: format!("seek to {offset}: offsets are 0 or more"),
            });
        }
        let tp = self.engine.assigned_part(topic, partition)?;
        self.engine.seek(&tp, offset);
        Ok(())
    }

    /// Stop fetching these partitions (they stay assigned; records already fetched for them
    /// are dropped and fetched again after [`resume`](Self::resume)).
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        self.check_assigned(partitions)?;
        self.engine.set_paused(partitions, true);
        Ok(())
    }

    /// Fetch these paused partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        self.check_assigned(partitions)?;
        self.engine.set_paused(partitions, false);
        Ok(())
    }

    /// The partitions paused now.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.engine.books.paused()
    }

    /// The partitions assigned to this member now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.engine.assignment()
    }

    /// The next offset `poll` hands out for `topic`-`partition`, if it is assigned (and its
    /// start is known).
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.engine.books.position(&(topic.to_owned(), partition))
    }

    /// The offset last committed by this member for `topic`-`partition` (or found committed
    /// when it was assigned).
    pub fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.engine.books.committed(&(topic.to_owned(), partition))
    }

    /// This member's standing in its group (state, member id, generation or epoch).
    pub fn member_status(&self) -> MemberStatus {
        self.engine
            .shared
            .members
            .locked()
            .get(&self.engine.idx)
            .cloned()
            .unwrap_or_default()
    }

    /// This member's group metadata for
    /// [`Producer::send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction):
    /// the group, the generation (classic protocol) or member epoch (KIP-848), the member
    /// id and the static instance id. Read it just before sending offsets: the group
    /// coordinator refuses offsets from a member it has moved on from (KIP-447), so a
    /// member that lost its partitions cannot commit them in a transaction.
    pub fn group_metadata(&self) -> GroupMetadata {
        let status = self.member_status();
        GroupMetadata {
            group_id: self.engine.config.group.clone(),
            generation_id: status.generation,
            member_id: status.member_id,
            group_instance_id: status.instance_id,
        }
    }

    /// Counters and per-partition progress.
    pub fn stats(&self) -> ConsumerStats {
        self.engine.shared.snapshot(self.engine.started.elapsed())
    }

    /// Give the partitions up (the listener's `on_revoked`, then, with `auto_commit`, a
    /// commit of what was handed out), leave the group, and stop, within `timeout`; then
    /// report what this consumer did. An error means the close could not be done in full
    /// (the last commit or the leave failed): records after the last commit are then handed
    /// out again to the partitions' next owner.
    pub fn close(mut self, timeout: Duration) -> Result<ConsumerSummary, Error> {
        self.finish_handed();
        engine::shutdown(&mut self, Instant::now() + timeout)?;
        Ok(pool::summary(&self.engine.shared, 0))
    }

    /// What the last poll handed out is processed (the caller moved on).
    fn finish_handed(&mut self) {
        self.engine.books.finish_handed();
        self.engine
            .shared
            .handled
            .add(std::mem::take(&mut self.handed));
    }

    fn check_assigned(&self, partitions: &[TopicPartition]) -> Result<(), Error> {
        for (t, p) in partitions {
            self.engine.assigned_part(t, *p)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // For an exactly-once pool member
    // -----------------------------------------------------------------------------------

    /// Set the rebalance listener.
    pub(crate) fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The engine under the API.
    pub(crate) fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Act on group events and commit on the interval, without handing records out.
    pub(crate) fn service(&mut self) -> Result<(), Error> {
        engine::service(self)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Not `finish_handed`: what the last poll handed out may not be processed (an
        // early return, a panic); it is handed out again to the next owner.
        let bound = Duration::from_secs(5);
        if let Err(e) = engine::shutdown(self, Instant::now() + bound) {
            log::warn!("consumer {} dropped without close: {e}", self.engine.idx);
        }
    }
}
