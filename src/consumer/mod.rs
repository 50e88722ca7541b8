//! The consumer pool: N threads, each a member of one Kafka consumer group, each running the
//! handler on the records of the partitions the group gave it.
//!
//! ```text
//!                  ┌─ member thread 0: join/sync ─▶ fetch ─▶ handler ─▶ commit ─┐
//!  group coordinator ─ member thread 1: (own sockets, own heartbeats)           ├─▶ offsets
//!                  └─ member thread N: ...                                      ┘
//! ```
//!
//! Offsets are committed only up to records the handler finished (at least once): on an
//! interval, before partitions are given up in a rebalance, and on close. Heartbeats are
//! sent by the member thread itself between records, so no other thread touches its sockets;
//! a single handler call must therefore stay well under the session timeout.

mod member;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{self, Assignor, ClientConfig, Cluster, FetchParams, Header, TopicPartition};
use crate::shutdown::Shutdown;
use crate::stats::Counter;
use crate::sync::Locked;

/// Where to start reading a partition the group has no committed offset for (or whose
/// committed offset is out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The first offset still in the log.
    Earliest,
    /// The end of the log: only new records (the Java client's default).
    #[default]
    Latest,
    /// Stop the member with an error.
    Error,
}

/// What to do when the handler returns an error for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHandlerError {
    /// Call the handler again on the same record, after `backoff` doubling up to `max_backoff`,
    /// until it succeeds or the pool stops. Later records of that partition wait.
    Retry {
        /// First delay.
        backoff: Duration,
        /// Longest delay.
        max_backoff: Duration,
    },
    /// Log and count the failure, then go on: the record counts as done and is committed past.
    Skip,
    /// Stop the whole pool; the failed record is not committed past.
    Stop,
}

impl Default for OnHandlerError {
    /// Retry from 100 ms up to 10 s: nothing is committed past a record that failed.
    fn default() -> Self {
        OnHandlerError::Retry {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Settings of a [`ConsumerPool`]; the Java consumer's defaults unless noted.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Brokers and connection settings.
    pub client: ClientConfig,
    /// The consumer group.
    pub group: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Member threads in the pool. Default 1.
    pub threads: usize,
    /// The coordinator drops a member silent this long. Default 45 s.
    pub session_timeout: Duration,
    /// Heartbeat period. Default 3 s.
    pub heartbeat_interval: Duration,
    /// A member that takes longer than this between fetches (its handler is too slow)
    /// commits, leaves the group and rejoins. Also the rebalance timeout. Default 300 s.
    pub max_poll_interval: Duration,
    /// Where to start without a committed offset. Default [`OffsetReset::Latest`].
    pub offset_reset: OffsetReset,
    /// How often finished records are committed. Default 5 s.
    pub commit_interval: Duration,
    /// Fetch settings: `min_bytes` 1, `max_bytes` 50 MiB, `max_wait` 500 ms, 1 MiB per
    /// partition.
    pub fetch: FetchParams,
    /// The assignor this pool's members offer. Default [`Assignor::Range`].
    pub assignor: Assignor,
    /// Handler error policy. Default: retry with backoff.
    pub on_error: OnHandlerError,
    /// Leave the group on close, so partitions move at once. Default true; false behaves like
    /// a crash (partitions move after the session timeout).
    pub leave_group_on_close: bool,
    /// A shared shutdown flag; when set, the pool finishes the record in hand, commits,
    /// leaves and stops, as [`ConsumerPool::close`] does. Default none.
    pub shutdown: Option<Shutdown>,
}

impl ConsumerConfig {
    /// Defaults for `group` reading `topics` from `brokers`.
    pub fn new(brokers: &str, group: &str, topics: &[&str]) -> Self {
        ConsumerConfig {
            client: ClientConfig::new([brokers]),
            group: group.to_owned(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            threads: 1,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            offset_reset: OffsetReset::Latest,
            commit_interval: Duration::from_secs(5),
            fetch: FetchParams::default(),
            assignor: Assignor::Range,
            on_error: OnHandlerError::default(),
            leave_group_on_close: true,
            shutdown: None,
        }
    }

    /// Check every field; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.client.validate().map_err(Error::Client)?;
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.group.is_empty() {
            return bad("group", "the group id must not be empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return bad("topics", "give at least one topic, none empty".into());
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1".into());
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return bad(
                "heartbeat_interval",
                format!(
                    "must be above zero and below session_timeout ({:?})",
                    self.session_timeout
                ),
            );
        }
        if self.max_poll_interval < self.session_timeout {
            return bad(
                "max_poll_interval",
                "must be at least session_timeout".into(),
            );
        }
        if self.fetch.max_wait >= self.client.connection.request_timeout {
            return bad("fetch.max_wait", "must be below the request timeout".into());
        }
        if self.fetch.min_bytes < 0
            || self.fetch.max_bytes <= 0
            || self.fetch.partition_max_bytes <= 0
        {
            return bad("fetch", "byte limits must be positive".into());
        }
        if self.commit_interval.is_zero() {
            return bad("commit_interval", "must be above zero".into());
        }
        Ok(())
    }
}

/// A record handed to the handler.
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
}

/// Errors starting or closing a pool.
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
}

/// Per-partition progress in [`ConsumerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionProgress {
    /// The partition's high watermark at the last fetch.
    pub high_watermark: i64,
    /// The next offset this pool will hand to the handler.
    pub position: i64,
    /// The last committed offset, or -1.
    pub committed: i64,
}

impl PartitionProgress {
    /// Records not yet handled: high watermark − position.
    pub fn lag(&self) -> i64 {
        (self.high_watermark - self.position).max(0)
    }
    /// Records not yet committed: high watermark − committed.
    pub fn commit_lag(&self) -> i64 {
        (self.high_watermark - self.committed.max(0)).max(0)
    }
}

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerStats {
    /// Records the handler finished.
    pub handled: u64,
    /// Records handled per second since the pool started.
    pub records_per_sec: f64,
    /// Records the handler failed on that were skipped.
    pub skipped: u64,
    /// Handler errors (retried ones included).
    pub handler_errors: u64,
    /// Group joins completed by the members (the first join included).
    pub rebalances: u64,
    /// Commits the coordinator refused or that failed.
    pub commit_failures: u64,
    /// Fetches that failed (an unreachable or stalled leader, say) and were retried after
    /// the retry backoff.
    pub fetch_errors: u64,
    /// Progress of the partitions currently assigned.
    pub partitions: BTreeMap<TopicPartition, PartitionProgress>,
    /// The partitions each member thread holds now, by thread index.
    pub assignments: BTreeMap<usize, Vec<TopicPartition>>,
}

impl ConsumerStats {
    /// Total lag over the assigned partitions.
    pub fn lag(&self) -> i64 {
        self.partitions.values().map(PartitionProgress::lag).sum()
    }
}

/// What a pool did, from [`ConsumerPool::close`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerSummary {
    /// Records the handler finished.
    pub handled: u64,
    /// Records skipped after a handler error.
    pub skipped: u64,
    /// The last offset each member committed, per partition (the next offset to read).
    pub committed: BTreeMap<TopicPartition, i64>,
    /// Member threads that had not finished by the close deadline.
    pub unfinished_members: usize,
    /// Why the pool stopped on its own, if it did (a `Stop` policy or a fatal error).
    pub stopped_because: Option<String>,
}

pub(crate) struct PoolShared {
    pub(crate) stop: AtomicBool,
    pub(crate) external: Option<Shutdown>,
    pub(crate) handled: Counter,
    pub(crate) skipped: Counter,
    pub(crate) handler_errors: Counter,
    pub(crate) rebalances: Counter,
    pub(crate) commit_failures: Counter,
    pub(crate) fetch_errors: Counter,
    pub(crate) progress: Mutex<BTreeMap<TopicPartition, PartitionProgress>>,
    pub(crate) committed: Mutex<BTreeMap<TopicPartition, i64>>,
    pub(crate) assignments: Mutex<BTreeMap<usize, Vec<TopicPartition>>>,
    pub(crate) stopped_because: Mutex<Option<String>>,
}

impl PoolShared {
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
}

/// N consumer threads in one group.
pub struct ConsumerPool {
    shared: Arc<PoolShared>,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ConsumerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerPool")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl ConsumerPool {
    /// Start `config.threads` members, each with its own handler made by `make_handler(i)`.
    /// Fails at once if the brokers cannot be reached or a topic does not exist.
    pub fn start<F, H, E>(config: ConsumerConfig, make_handler: F) -> Result<ConsumerPool, Error>
    where
        F: Fn(usize) -> H,
        H: FnMut(&ConsumedRecord) -> Result<(), E> + Send + 'static,
        E: std::fmt::Display,
    {
        config.validate()?;
        let mut cluster = Cluster::connect(config.client.clone())?;
        for t in &config.topics {
            cluster.topic(t)?;
        }
        let shared = Arc::new(PoolShared {
            stop: AtomicBool::new(false),
            external: config.shutdown.clone(),
            handled: Counter::default(),
            skipped: Counter::default(),
            handler_errors: Counter::default(),
            rebalances: Counter::default(),
            commit_failures: Counter::default(),
            fetch_errors: Counter::default(),
            progress: Mutex::new(BTreeMap::new()),
            committed: Mutex::new(BTreeMap::new()),
            assignments: Mutex::new(BTreeMap::new()),
            stopped_because: Mutex::new(None),
        });
        let mut threads = Vec::with_capacity(config.threads);
        let connector = cluster.connector().clone();
        let mut first = Some(cluster);
        for i in 0..config.threads {
            let handler = make_handler(i);
            let (config, member_shared) = (config.clone(), shared.clone());
            // The first member takes the pool's cluster; the others connect their own
            // through the same connector.
            let cluster = first.take().ok_or_else(|| connector.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("kpipe-consumer-{i}"))
                .spawn(move || member::run(i, config, cluster, member_shared, handler));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    return Err(Error::Config {
                        field: "threads",
                        reason: format!("cannot start thread {i}: {e}"),
                    });
                }
            }
        }
        Ok(ConsumerPool {
            shared,
            started: Instant::now(),
            threads,
        })
    }

    /// Start a pool whose members share clones of one handler.
    pub fn start_cloned<H, E>(config: ConsumerConfig, handler: H) -> Result<ConsumerPool, Error>
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E> + Clone + Send + 'static,
        E: std::fmt::Display,
    {
        Self::start(config, move |_| handler.clone())
    }

    /// A snapshot of the counters and per-partition progress.
    pub fn stats(&self) -> ConsumerStats {
        let s = &*self.shared;
        let handled = s.handled.get();
        ConsumerStats {
            handled,
            records_per_sec: handled as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
            skipped: s.skipped.get(),
            handler_errors: s.handler_errors.get(),
            rebalances: s.rebalances.get(),
            commit_failures: s.commit_failures.get(),
            fetch_errors: s.fetch_errors.get(),
            partitions: s.progress.locked().clone(),
            assignments: s.assignments.locked().clone(),
        }
    }

    /// Whether every member thread has ended (after a `Stop` policy, say).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Stop fetching, let each member finish its record in hand, commit, leave the group and
    /// end, all within `timeout`; then report.
    pub fn close(self, timeout: Duration) -> ConsumerSummary {
        self.shared.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let mut unfinished = 0;
        for h in self.threads {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                if h.join().is_err() {
                    self.shared.stop_pool("a member thread panicked".into());
                }
            } else {
                unfinished += 1; // detached: it ends on its own when its current call returns
            }
        }
        let s = &*self.shared;
        ConsumerSummary {
            handled: s.handled.get(),
            skipped: s.skipped.get(),
            committed: s.committed.locked().clone(),
            unfinished_members: unfinished,
            stopped_because: s.stopped_because.locked().clone(),
        }
    }
}
