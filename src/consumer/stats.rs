//! What consumers report of themselves: [`ConsumerStats`], with each partition's
//! [`PartitionProgress`], and the [`Truncation`]s of logs that diverged under a member.

use std::collections::BTreeMap;

use crate::client::TopicPartition;

use super::group::MemberStatus;

/// A partition's log that diverged before a member's position (KIP-320), told to
/// [`RebalanceListener::on_truncated`](super::RebalanceListener::on_truncated) and counted in [`ConsumerStats::truncations`].
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
    /// [`IsolationLevel::ReadCommitted`](super::IsolationLevel::ReadCommitted) the
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
    /// Records finished: the handler returned `Ok` (a pool), or, for a consumer or share
    /// consumer driven by `poll`, records handed out before a later `poll`, `commit` or
    /// `close` (which say they are processed).
    pub handled: u64,
    /// Records handed out: returned by `poll`, or given to a handler.
    pub handed_out: u64,
    /// Records handled per second since the start.
    pub records_per_sec: f64,
    /// Records the handler failed on that were skipped.
    pub skipped: u64,
    /// Handler errors (retried ones included), panics included.
    pub handler_errors: u64,
    /// Handler panics: each is caught, counted here and as a handler error, and the
    /// record is retried, skipped or stops the pool by [`OnHandlerError`](super::OnHandlerError), as an error is.
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
