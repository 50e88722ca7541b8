//! The counters and maps a pool's members (or one consumer) and their group threads share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::client::TopicPartition;
use crate::shutdown::Shutdown;
use crate::stats::Counter;
use crate::sync::Locked;

use super::group::MemberStatus;
use super::stats::{ConsumerStats, PartitionProgress};

/// Counters and maps the members of a pool (or one consumer) and their group threads update.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) external: Option<Shutdown>,
    pub(crate) handled: Counter,
    pub(crate) handed_out: Counter,
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
            handed_out: self.handed_out.get(),
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
