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
mod error;
mod exactly_once;
mod group;
mod pool;
mod pull;
mod record;
mod share;
mod shared;
mod stats;

pub use crate::client::assignor::Assignor;
pub use crate::client::IsolationLevel;
pub use config::{
    ConsumerConfig, GroupProtocol, OffsetReset, OnHandlerError, OnShareError, ServerAssignor,
    ShareAcquireMode,
};
pub use error::Error;
pub use exactly_once::{ExactlyOnce, Output};
pub use group::{MemberState, MemberStatus};
pub use pool::{ConsumerPool, ConsumerSummary};
pub use pull::{Consumer, RebalanceListener};
pub use record::ConsumedRecord;
pub use share::{AckOutcome, Acknowledge, ShareConsumer};
pub use stats::{ConsumerStats, PartitionProgress, Truncation};
