//! What can go wrong in a consumer, a share consumer or a pool.

use crate::client;

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
    /// [`GroupProtocol::Consumer`](super::GroupProtocol::Consumer) was asked of a cluster that does not offer it.
    #[error("the consumer group protocol (KIP-848, group_protocol = Consumer) needs Kafka 4.0 or newer with the feature group.version 1, but the cluster of {broker} runs {release} and does not offer it; use GroupProtocol::Classic with this cluster (or upgrade it and enable group.version)")]
    ProtocolUnsupported {
        /// A broker of the cluster, the one asked.
        broker: String,
        /// The release it runs, as far as its features tell.
        release: String,
    },
    /// A share group ([`GroupProtocol::Share`](super::GroupProtocol::Share)) was asked of a cluster that does not offer
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
    /// is not read until [`Consumer::seek`](super::Consumer::seek) gives it one; `poll` returns this error until
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
    /// partition is not read until [`Consumer::seek`](super::Consumer::seek) moves past them (as the Java
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
