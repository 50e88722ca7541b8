//! Consumers in a Kafka consumer group: [`Consumer`], one member driven by the caller's
//! thread (`poll`, `commit`, `seek`, `pause`), and [`ConsumerPool`], N members on threads of
//! their own, each running a handler on its records.
//!
//! ```text
//!             ┌─ member 0: fetch (next one prefetched) ─▶ poll / handler ─▶ commit ─┐
//!  brokers ───┼─ member 1: its own fetch connections                                 ├─▶ offsets
//!             └─ member N: ...                                                        ┘
//!  coordinator ◀─▶ group thread of each member: join, heartbeats, reconciliation, commits
//! ```
//!
//! Each member has a group thread beside it that owns its connection to the group
//! coordinator and speaks the group protocol, classic (eager or cooperative) or the
//! consumer protocol of KIP-848 ([`GroupProtocol`]). Heartbeats therefore go on while a
//! handler works on a record; only a member that makes no progress for `max_poll_interval`
//! gives its partitions up. Offsets are committed only up to records the caller or handler
//! finished (at least once): on an interval, before partitions are given back in a rebalance,
//! and on close.

mod books;
mod config;
mod engine;
mod exactly_once;
mod group;
mod pool;
mod pull;
mod share;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::client::{self, Header, TopicPartition};
use crate::shutdown::Shutdown;
use crate::stats::Counter;
use crate::sync::Locked;

pub use crate::client::assignor::Assignor;
pub use crate::client::IsolationLevel;
pub use config::{
    ConsumerConfig, GroupProtocol, OffsetReset, OnHandlerError, OnShareError, ServerAssignor,
    ShareAcquireMode,
};
pub use exactly_once::{ExactlyOnce, Output};
pub use group::{MemberState, MemberStatus};
pub use pool::{ConsumerPool, ConsumerSummary};
pub use pull::{Consumer, RebalanceListener};
pub use share::{AckOutcome, Acknowledge, ShareConsumer};

/// A record handed to the caller or the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// How many times a share group delivered the record, this time included (2 and more:
    /// it was released, or its acquisition lock ran out, before); `None` in a consumer
    /// group, which has no such count.
    pub delivery_count: Option<u16>,
}

/// Errors of consumers and pools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster could not be reached or refused a request.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// A configuration value is not usable.
    #[error("invalid consumer config `{field}`: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// [`GroupProtocol::Consumer`] was asked of a cluster that does not offer it.
    #[error("the consumer group protocol (KIP-848, group_protocol = Consumer) needs Kafka 4.0 or newer with the feature group.version 1, but the cluster of {broker} runs {release} and does not offer it; use GroupProtocol::Classic with this cluster (or upgrade it and enable group.version)")]
    ProtocolUnsupported {
        /// A broker of the cluster, the one asked.
        broker: String,
        /// The release it runs, as far as its features tell.
        release: String,
    },
    /// A share group ([`GroupProtocol::Share`]) was asked of a cluster that does not offer
    /// share groups.
    #[error("share groups (KIP-932, group_protocol = Share) need Kafka 4.1 or newer with the feature share.version 1 (on by default from Kafka 4.2), but the cluster of {broker} runs {release} and does not offer them; use a consumer group with this cluster (or upgrade it and enable share.version)")]
    ShareGroupsUnsupported {
        /// A broker of the cluster, the one asked.
        broker: String,
        /// The release it runs, as far as its features tell.
        release: String,
    },
    /// The group coordinator refused this member for good (authorization, an instance id
    /// in use, an unknown assignor, a full group...).
    #[error("the group coordinator refused the member: {cause}")]
    GroupRefused {
        /// The coordinator's answer.
        cause: client::Error,
    },
    /// A commit did not happen; the records stay uncommitted and are handed out again to
    /// whoever owns their partitions next.
    #[error("commit failed: {reason}")]
    CommitFailed {
        /// Why.
        reason: String,
    },
    /// A bounded wait ran out.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The bound.
        after: std::time::Duration,
    },
    /// A partition this member is not assigned.
    #[error("{topic}-{partition} is not assigned to this consumer (its assignment: {assigned})")]
    NotAssigned {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What it is assigned.
        assigned: String,
    },
    /// A share consumer was asked to acknowledge a record it does not hold.
    #[error("cannot acknowledge {topic}-{partition}@{offset}: {why}")]
    NotAcquired {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Why not.
        why: String,
    },
    /// A call made where it cannot work (`poll` from inside a rebalance listener, say).
    #[error("{0}")]
    Misuse(&'static str),
    /// The member stopped earlier (an error it reported, or close).
    #[error("the consumer has stopped: {0}")]
    Stopped(String),
    /// The partition's log diverged before this member's position (an unclean leader
    /// election, or a leader that lost records it had acknowledged: KIP-320), and
    /// `offset_reset` is `Error`, so no position is chosen for the caller. The partition
    /// is not read until [`Consumer::seek`] gives it one; `poll` returns this error until
    /// then.
    #[error("log truncation on {topic}-{partition}: the leader's log diverged before position {position}{}; offset_reset is Error, so seek it to where reading should resume", match divergence { Some(d) => format!(" (the records from offset {d} on differ from what was read)"), None => " (the leader holds nothing that old)".to_owned() })]
    LogTruncated {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Where the member was: the next offset it would have read.
        position: i64,
        /// The first offset whose records differ from what was read, when the leader
        /// knows it.
        divergence: Option<i64>,
    },
    /// The leader sent the partition's records at `offset` corrupt (a checksum, a length
    /// or a compressed block that does not decode), and again when fetched once more: the
    /// partition is not read until [`Consumer::seek`] moves past them (as the Java
    /// consumer asks); `poll` returns this error until then. A pool stops with it.
    #[error("{topic}-{partition}: the records at offset {offset} are corrupt ({detail}), fetched twice; {}", corrupt_message(*offset, next))]
    CorruptRecords {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Where reading stopped.
        offset: i64,
        /// The offset after the corrupt batch, when its header says.
        next: Option<i64>,
        /// What was wrong.
        detail: String,
    },
}

/// Why a partition is held until the caller seeks it.
fn corrupt_message(offset: i64, next: &Option<i64>) -> String {
    match next {
        Some(n) => format!("seek past them (to {n}, the offset after their batch) to go on"),
        None => format!("seek past offset {offset} to go on"),
    }
}

/// A partition's log that diverged before a member's position (KIP-320), told to
/// [`RebalanceListener::on_truncated`] and counted in [`ConsumerStats::truncations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Where the member was: the next offset it would have read. Records it read from the
    /// divergence up to here no longer exist in the partition; other records took their
    /// offsets.
    pub position: i64,
    /// The first offset whose records differ from what was read, where reading resumes;
    /// `None` when the leader holds nothing that old, and `offset_reset` applies.
    pub divergence: Option<i64>,
}

/// Per-partition progress in [`ConsumerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionProgress {
    /// The partition's high watermark at the last fetch.
    pub high_watermark: i64,
    /// Where reading ends at the last fetch: the high watermark, or under
    /// [`IsolationLevel::ReadCommitted`] the
    /// last stable offset (as the Java consumer measures lag).
    pub end_offset: i64,
    /// The next offset to be handed out.
    pub position: i64,
    /// The last committed offset, or -1.
    pub committed: i64,
    /// The replica the partition is read from instead of its leader, when its leader named
    /// one for this reader's rack (`fetch.rack`, KIP-392).
    pub read_replica: Option<i32>,
}

impl PartitionProgress {
    /// Records not yet handed out: end offset − position.
    pub fn lag(&self) -> i64 {
        (self.end_offset - self.position).max(0)
    }
    /// Records not yet committed: end offset − committed.
    pub fn commit_lag(&self) -> i64 {
        (self.end_offset - self.committed.max(0)).max(0)
    }
}

/// A snapshot of a pool's (or one consumer's) counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerStats {
    /// Records the handler finished (a pool), or records handed out by `poll` (a consumer).
    pub handled: u64,
    /// Records handled per second since the start.
    pub records_per_sec: f64,
    /// Records the handler failed on that were skipped.
    pub skipped: u64,
    /// Handler errors (retried ones included), panics included.
    pub handler_errors: u64,
    /// Handler panics: each is caught, counted here and as a handler error, and the
    /// record is retried, skipped or stops the pool by [`OnHandlerError`], as an error is.
    pub handler_panics: u64,
    /// Group joins (classic protocol), or assignment changes taken up (consumer protocol),
    /// by all members.
    pub rebalances: u64,
    /// Commits the coordinator refused or that failed.
    pub commit_failures: u64,
    /// Fetches that failed (an unreachable or stalled leader, say) and were retried after
    /// the retry backoff.
    pub fetch_errors: u64,
    /// Positions found past a divergence in their partition's log (KIP-320: an unclean
    /// leader election, a leader that lost records): each went back to the divergence
    /// point (see [`Truncation`]).
    pub truncations: u64,
    /// Positions the leader refused as out of range (reset by `offset_reset` unless the
    /// log diverged before them).
    pub out_of_range: u64,
    /// Share groups: records acknowledged as accepted (processed).
    pub acknowledged: u64,
    /// Share groups: records released (to be delivered again, to any member).
    pub released: u64,
    /// Share groups: records rejected (archived as poison, never delivered again).
    pub rejected: u64,
    /// Share groups: records handed out with a delivery count above 1 (released, or their
    /// acquisition lock ran out, before).
    pub redelivered: u64,
    /// Share groups: acquisition locks renewed (KIP-1222) for records a slow handler held.
    pub renewed: u64,
    /// Share groups: acknowledgements not known to be taken: refused by the broker (most
    /// often because the record's acquisition lock had run out and it went back to the
    /// group), never sent (no session with the partition's leader), or sent on a request
    /// that failed before its answer (a broker that died), which the broker may have taken
    /// all the same. A record whose acknowledgement the broker did not take is delivered
    /// again. A refused renewal is not counted here: the record is still held, and its
    /// final acknowledgement counts when it is settled.
    pub acknowledge_failures: u64,
    /// Transactions committed by an exactly-once pool's members (0 otherwise).
    pub transactions_committed: u64,
    /// Transactions aborted by an exactly-once pool's members: a handler error, a
    /// rebalance mid-transaction, or a refused commit; their records were handled again.
    pub transactions_aborted: u64,
    /// Progress of the partitions currently assigned.
    pub partitions: BTreeMap<TopicPartition, PartitionProgress>,
    /// The partitions each member holds now, by member (thread) index.
    pub assignments: BTreeMap<usize, Vec<TopicPartition>>,
    /// Each member's standing in its group, by member index.
    pub members: BTreeMap<usize, MemberStatus>,
}

impl ConsumerStats {
    /// Total lag over the assigned partitions.
    pub fn lag(&self) -> i64 {
        self.partitions.values().map(PartitionProgress::lag).sum()
    }
}

/// Counters and maps the members of a pool (or one consumer) and their group threads update.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) external: Option<Shutdown>,
    pub(crate) handled: Counter,
    pub(crate) skipped: Counter,
    pub(crate) handler_errors: Counter,
    pub(crate) handler_panics: Counter,
    pub(crate) rebalances: Counter,
    pub(crate) commit_failures: Counter,
    pub(crate) fetch_errors: Counter,
    pub(crate) truncations: Counter,
    pub(crate) out_of_range: Counter,
    /// Share groups.
    pub(crate) acknowledged: Counter,
    pub(crate) released: Counter,
    pub(crate) rejected: Counter,
    pub(crate) redelivered: Counter,
    pub(crate) renewed: Counter,
    pub(crate) ack_failures: Counter,
    /// Exactly-once pools: transactions committed and aborted, members fenced.
    pub(crate) txn_committed: Counter,
    pub(crate) txn_aborted: Counter,
    pub(crate) fenced: Counter,
    pub(crate) progress: Mutex<BTreeMap<TopicPartition, PartitionProgress>>,
    pub(crate) committed: Mutex<BTreeMap<TopicPartition, i64>>,
    pub(crate) assignments: Mutex<BTreeMap<usize, Vec<TopicPartition>>>,
    pub(crate) members: Mutex<BTreeMap<usize, MemberStatus>>,
    pub(crate) stopped_because: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(external: Option<Shutdown>) -> Self {
        Shared {
            external,
            ..Shared::default()
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || self.external.as_ref().is_some_and(Shutdown::is_triggered)
    }

    pub(crate) fn stop_pool(&self, why: String) {
        let mut reason = self.stopped_because.locked();
        if reason.is_none() {
            *reason = Some(why);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    pub(crate) fn snapshot(&self, elapsed: std::time::Duration) -> ConsumerStats {
        let handled = self.handled.get();
        ConsumerStats {
            handled,
            records_per_sec: handled as f64 / elapsed.as_secs_f64().max(1e-9),
            skipped: self.skipped.get(),
            handler_errors: self.handler_errors.get(),
            handler_panics: self.handler_panics.get(),
            rebalances: self.rebalances.get(),
            commit_failures: self.commit_failures.get(),
            fetch_errors: self.fetch_errors.get(),
            truncations: self.truncations.get(),
            out_of_range: self.out_of_range.get(),
            acknowledged: self.acknowledged.get(),
            released: self.released.get(),
            rejected: self.rejected.get(),
            redelivered: self.redelivered.get(),
            renewed: self.renewed.get(),
            acknowledge_failures: self.ack_failures.get(),
            transactions_committed: self.txn_committed.get(),
            transactions_aborted: self.txn_aborted.get(),
            partitions: self.progress.locked().clone(),
            assignments: self.assignments.locked().clone(),
            members: self.members.locked().clone(),
        }
    }
}
