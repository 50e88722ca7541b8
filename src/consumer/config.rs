//! Consumer settings: [`ConsumerConfig`] and its policies.

use std::time::Duration;

use crate::client::{Assignor, ClientConfig, FetchParams, IsolationLevel};
use crate::shutdown::Shutdown;

use super::error::Error;

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

/// What the pool does when its handler returns an error for a record.
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

/// What a share-group pool does with a record its handler failed (or panicked) on. The
/// handler's `Ok` accepts the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnShareError {
    /// Release it: it is delivered again, to any member, until it was delivered the group's
    /// `share.delivery.count.limit` times (5 by default), when the broker archives it.
    #[default]
    Release,
    /// Release it until it was delivered this many times, then reject it: a record that
    /// fails that often is poison.
    RejectAfter(u16),
    /// Reject it at once: archived, never delivered again.
    Reject,
    /// Release it and stop the pool.
    Stop,
}

/// How many records one share fetch acquires (the Java client's `share.acquire.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareAcquireMode {
    /// About `max_poll_records`, rounded up to whole record batches as the producer wrote
    /// them: the cheapest, but one member may take a batch of hundreds of records that
    /// others could have shared.
    #[default]
    BatchOptimized,
    /// At most `max_poll_records`, batches split where needed (Kafka 4.2+; older brokers
    /// acquire as with `BatchOptimized`): with a slow handler and a small
    /// `max_poll_records`, work spreads evenly over the members.
    RecordLimit,
}

/// Which consumer group protocol the members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol (JoinGroup / SyncGroup / Heartbeat): the group leader, one of the
    /// members, runs the [`Assignor`]. Works with every Kafka broker. The default, as in the
    /// Java client.
    #[default]
    Classic,
    /// The consumer protocol of KIP-848 (Kafka 4.0+): one ConsumerGroupHeartbeat RPC, the
    /// coordinator computes the assignment ([`ServerAssignor`]), and each member gives up
    /// only the partitions that move, one member at a time. The session timeout and
    /// heartbeat interval are the group's, set on the broker
    /// (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`).
    Consumer,
    /// A share group (KIP-932, Kafka 4.2+; 4.1 with `share.version` enabled): no partition
    /// belongs to one member; each record is acquired by whichever member fetched it and
    /// acknowledged one by one, so more members than partitions all work. Read with a
    /// [`ShareConsumer`](super::ShareConsumer) or a [`ConsumerPool`](super::ConsumerPool)
    /// (its handler's `Ok` accepts a record, an error acts by
    /// [`on_share_error`](ConsumerConfig::on_share_error)). There are no offsets to commit,
    /// and `offset_reset`, `assignor`, `server_assignor`, `group_instance_id`,
    /// `session_timeout`, `isolation_level` and `auto_commit` do not apply: the group's
    /// own configs (`share.auto.offset.reset`, `share.isolation.level`,
    /// `share.record.lock.duration.ms`, `share.delivery.count.limit`...) rule.
    Share,
}

impl GroupProtocol {
    /// The name the Java client's `group.protocol` uses: `classic` or `consumer`.
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
            GroupProtocol::Share => "share",
        }
    }
}

/// The assignor the coordinator runs for a [`GroupProtocol::Consumer`] group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAssignor {
    /// Spreads partitions evenly and moves as few as it can (`uniform`, the broker's
    /// default).
    Uniform,
    /// Contiguous ranges per topic, co-partitioned topics together (`range`).
    Range,
}

impl ServerAssignor {
    /// The name sent in ConsumerGroupHeartbeat.
    pub fn name(self) -> &'static str {
        match self {
            ServerAssignor::Uniform => "uniform",
            ServerAssignor::Range => "range",
        }
    }
}

/// Settings of a [`Consumer`](super::Consumer) or [`ConsumerPool`](super::ConsumerPool);
/// the Java consumer's defaults unless noted.
///
/// ```
/// use std::time::Duration;
/// use kpipe::consumer::{Assignor, OffsetReset, OnHandlerError};
/// use kpipe::ConsumerConfig;
///
/// let mut config = ConsumerConfig::new("localhost:9092", "analytics", &["clicks", "views"]);
/// config.threads = 4; // a pool's members
/// config.offset_reset = OffsetReset::Earliest; // a new group reads from the start
/// config.assignor = Assignor::CooperativeSticky;
/// config.on_error = OnHandlerError::Skip; // a pool: log, count and commit past a failure
/// config.commit_interval = Duration::from_secs(1);
/// config.validate()?; // Consumer::new and ConsumerPool::start do this too
/// # Ok::<(), kpipe::consumer::Error>(())
/// ```
///
/// Or from a Java consumer properties file: [`from_properties`](Self::from_properties).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Brokers and connection settings.
    pub client: ClientConfig,
    /// The consumer group.
    pub group: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Member threads in a pool. Default 1. (A [`Consumer`](super::Consumer) is one member.)
    pub threads: usize,
    /// The group protocol. Default [`GroupProtocol::Classic`].
    pub group_protocol: GroupProtocol,
    /// The assignor this member offers under the classic protocol. Default
    /// [`Assignor::Range`]; [`Assignor::CooperativeSticky`] keeps partitions where they are
    /// through a rebalance.
    pub assignor: Assignor,
    /// The coordinator's assignor under the consumer protocol; `None` (the default) leaves
    /// the choice to the broker (`uniform` unless configured otherwise).
    pub server_assignor: Option<ServerAssignor>,
    /// Static membership (KIP-345): a member that comes back under the same id within the
    /// session timeout gets its partitions back without a rebalance. A pool gives its thread
    /// `i` the id `"{id}-{i}"`. Default none (a dynamic member).
    pub group_instance_id: Option<String>,
    /// Classic protocol: the coordinator drops a member silent this long. Default 45 s.
    /// (The consumer protocol uses the group's setting on the broker.)
    pub session_timeout: Duration,
    /// Classic protocol: heartbeat period. Default 3 s. (The consumer protocol uses the
    /// interval the coordinator gives.)
    pub heartbeat_interval: Duration,
    /// The longest a member may go without progress (a pool: between records; a
    /// [`Consumer`](super::Consumer): between calls of `poll`) before it gives up its
    /// partitions and leaves the group, to rejoin when it is back. Heartbeats go on from
    /// their own thread meanwhile. Also the rebalance timeout. Default 300 s.
    pub max_poll_interval: Duration,
    /// Where to start without a committed offset. Default [`OffsetReset::Latest`].
    ///
    /// Not applied to a partition that came into being while the member ran (added to a
    /// topic, or of a subscribed topic created, after the member first looked; or of a topic
    /// deleted and created again): without a committed offset, such a partition is read from
    /// its earliest offset, so that nothing written to it before the group took it up is
    /// skipped. Under the classic protocol, members notice added partitions (and join again)
    /// within `client.metadata_max_age`.
    pub offset_reset: OffsetReset,
    /// What a member reads of transactional producers' writes. Default
    /// [`IsolationLevel::ReadCommitted`]: records of aborted transactions are dropped and
    /// reading stops at the last stable offset, so a reader sees only what a transaction
    /// committed (librdkafka's default; the Java consumer's is read_uncommitted). Lag and
    /// the `Latest` reset are then measured against the last stable offset. Records of
    /// non-transactional producers are unaffected either way.
    pub isolation_level: IsolationLevel,
    /// A [`Consumer`](super::Consumer) commits, every `commit_interval`, the records its
    /// caller has finished (those handed out before the latest `poll`). Default true. A pool
    /// always commits what its handler finished.
    pub auto_commit: bool,
    /// How often finished records are committed. Default 5 s.
    pub commit_interval: Duration,
    /// Most records one [`Consumer::poll`](super::Consumer::poll) returns. Default 500.
    pub max_poll_records: usize,
    /// Fetch settings: `min_bytes` 1, `max_bytes` 50 MiB, `max_wait` 500 ms, 1 MiB per
    /// partition.
    pub fetch: FetchParams,
    /// Handler error policy of a pool in a consumer group. Default: retry with backoff.
    pub on_error: OnHandlerError,
    /// Handler error policy of a pool in a share group ([`GroupProtocol::Share`]).
    /// Default [`OnShareError::Release`].
    pub on_share_error: OnShareError,
    /// Share groups: where the group starts reading a partition it has no state for yet,
    /// set on the group (its `share.auto.offset.reset` config, through
    /// IncrementalAlterConfigs) when a member starts. `None` (the default) leaves the
    /// group's setting alone: the broker's default is the latest record, so a new share
    /// group does not see what was written before it. [`OffsetReset::Error`] is not a
    /// share group setting.
    pub share_auto_offset_reset: Option<OffsetReset>,
    /// Share groups: how many records one fetch acquires. Default
    /// [`ShareAcquireMode::BatchOptimized`].
    pub share_acquire_mode: ShareAcquireMode,
    /// Leave the group on close, so partitions move at once. Default true; false behaves like
    /// a crash (partitions move after the session timeout). A static member
    /// ([`group_instance_id`](Self::group_instance_id)) under the classic protocol never
    /// leaves (as in the Java client), and under the consumer protocol leaves as a member
    /// that will come back (epoch -2), so its partitions wait for it for the session timeout.
    pub leave_group_on_close: bool,
    /// A shared shutdown flag; when set, a pool finishes the record in hand, commits,
    /// leaves and stops, as [`ConsumerPool::close`](super::ConsumerPool::close) does.
    /// Default none.
    pub shutdown: Option<Shutdown>,
}

impl ConsumerConfig {
    /// Defaults for `group` reading `topics` from `brokers` (`host:port`, comma-separated,
    /// as for [`ProducerConfig::new`](crate::ProducerConfig::new)). `topics` is any list of
    /// names: `["events"]`, `&["a", "b"]`, a `Vec<String>`.
    pub fn new<I>(brokers: &str, group: &str, topics: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        ConsumerConfig {
            client: ClientConfig::new([brokers]),
            group: group.to_owned(),
            topics: topics.into_iter().map(|t| t.as_ref().to_owned()).collect(),
            threads: 1,
            group_protocol: GroupProtocol::Classic,
            assignor: Assignor::Range,
            server_assignor: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            offset_reset: OffsetReset::Latest,
            isolation_level: IsolationLevel::ReadCommitted,
            auto_commit: true,
            commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
            fetch: FetchParams::default(),
            on_error: OnHandlerError::default(),
            on_share_error: OnShareError::Release,
            share_auto_offset_reset: None,
            share_acquire_mode: ShareAcquireMode::BatchOptimized,
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
        if self
            .group_instance_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return bad(
                "group_instance_id",
                "must not be empty; use None for a dynamic member".into(),
            );
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
        if self.max_poll_records == 0 {
            return bad("max_poll_records", "must be at least 1".into());
        }
        if self.share_auto_offset_reset == Some(OffsetReset::Error) {
            return bad(
                "share_auto_offset_reset",
                "a share group starts at Earliest or Latest (share.auto.offset.reset); Error is not one of them".into(),
            );
        }
        if self.on_share_error == OnShareError::RejectAfter(0) {
            return bad(
                "on_share_error",
                "RejectAfter needs at least 1 delivery; use Reject to reject at once".into(),
            );
        }
        Ok(())
    }

    /// A consumer config from a Java consumer properties file: the client keys that
    /// [`ClientConfig::from_properties`] reads, and `group.id`, `group.instance.id`,
    /// `group.protocol`, `isolation.level`, `auto.offset.reset`, `enable.auto.commit`,
    /// `auto.commit.interval.ms`, `max.poll.records`, `session.timeout.ms`,
    /// `heartbeat.interval.ms`, `max.poll.interval.ms`, `fetch.min.bytes`, `fetch.max.bytes`,
    /// `fetch.max.wait.ms`, `max.partition.fetch.bytes` and `client.rack`. Unset fields keep
    /// kpipe's defaults (so `isolation.level` is read_committed unless the file says
    /// otherwise); a bad value is an error naming the file, the line and the key; the result is
    /// validated.
    pub fn from_properties(
        path: impl AsRef<std::path::Path>,
        topics: &[&str],
    ) -> Result<ConsumerConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            field: "properties",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::from_properties_str(&text, &path.display().to_string(), topics)
    }

    /// [`from_properties`](Self::from_properties) for text already read; `origin` names it
    /// in errors.
    pub fn from_properties_str(
        text: &str,
        origin: &str,
        topics: &[&str],
    ) -> Result<ConsumerConfig, Error> {
        let client = ClientConfig::from_properties_str(text, origin)?;
        let mut c = ConsumerConfig::new("localhost:9092", "", topics);
        c.client = client;
        c.apply_properties_str(text, origin)?;
        if c.group.is_empty() {
            return Err(Error::Config {
                field: "group",
                reason: format!("{origin} has no group.id; add group.id=NAME"),
            });
        }
        c.validate()?;
        Ok(c)
    }

    /// Set the consumer keys of a properties file's text (those
    /// [`from_properties`](Self::from_properties) lists, not the client's) over this
    /// config; `origin` names the file in errors. Nothing is validated here.
    pub fn apply_properties_str(&mut self, text: &str, origin: &str) -> Result<(), Error> {
        use crate::client::properties::{millis, parse_properties};
        let c = self;
        for p in &parse_properties(text) {
            let v = p.value.trim();
            let err = |reason: String| {
                Error::Client(crate::client::Error::Properties {
                    file: origin.to_owned(),
                    line: p.line,
                    key: p.key.clone(),
                    reason,
                })
            };
            let number = || {
                v.parse::<i64>()
                    .map_err(|_| err(format!("{v:?} is not a whole number")))
            };
            let ms = || millis(p).map_err(err);
            let bytes = || {
                number()
                    .and_then(|n| i32::try_from(n).map_err(|_| err(format!("{n} is out of range"))))
            };
            // Later entries win, as in java.util.Properties: applied in order.
            match p.key.as_str() {
                "group.id" => c.group = v.to_owned(),
                "group.instance.id" => c.group_instance_id = (!v.is_empty()).then(|| v.to_owned()),
                "group.protocol" => {
                    c.group_protocol = match v.to_ascii_lowercase().as_str() {
                        "classic" => GroupProtocol::Classic,
                        "consumer" => GroupProtocol::Consumer,
                        "share" => GroupProtocol::Share,
                        _ => return Err(err(format!("{v:?}: use classic or consumer"))),
                    }
                }
                "isolation.level" => c.isolation_level = v.parse().map_err(err)?,
                "client.rack" => c.fetch.rack = (!v.is_empty()).then(|| v.to_owned()),
                "auto.offset.reset" => {
                    c.offset_reset = match v.to_ascii_lowercase().as_str() {
                        "earliest" => OffsetReset::Earliest,
                        "latest" => OffsetReset::Latest,
                        "none" => OffsetReset::Error,
                        _ => return Err(err(format!("{v:?}: use earliest, latest or none"))),
                    }
                }
                "enable.auto.commit" => {
                    c.auto_commit = match v.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err(format!("{v:?}: use true or false"))),
                    }
                }
                "auto.commit.interval.ms" => c.commit_interval = ms()?,
                "max.poll.records" => {
                    c.max_poll_records = usize::try_from(number()?)
                        .map_err(|_| err(format!("{v:?} must not be negative")))?
                }
                "session.timeout.ms" => c.session_timeout = ms()?,
                "heartbeat.interval.ms" => c.heartbeat_interval = ms()?,
                "max.poll.interval.ms" => c.max_poll_interval = ms()?,
                "fetch.min.bytes" => c.fetch.min_bytes = bytes()?,
                "fetch.max.bytes" => c.fetch.max_bytes = bytes()?,
                "fetch.max.wait.ms" => c.fetch.max_wait = ms()?,
                "max.partition.fetch.bytes" => c.fetch.partition_max_bytes = bytes()?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The static instance id of pool member `thread`, if the pool has one.
    pub(crate) fn instance_id_of(&self, thread: usize) -> Option<String> {
        self.group_instance_id
            .as_ref()
            .map(|id| format!("{id}-{thread}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_committed_unless_the_file_says_otherwise() {
        let c = ConsumerConfig::from_properties_str(
            "bootstrap.servers=k1:9092\ngroup.id=g\n",
            "a.properties",
            &["t"],
        )
        .unwrap();
        assert_eq!(c.isolation_level, IsolationLevel::ReadCommitted);
        assert_eq!(c.group, "g");
        let c = ConsumerConfig::from_properties_str(
            "group.id=g\nisolation.level=read_uncommitted\nauto.offset.reset=earliest\n\
             enable.auto.commit=false\nmax.poll.records=7\nfetch.max.wait.ms=250\n\
             group.protocol=consumer\n",
            "b.properties",
            &["t"],
        )
        .unwrap();
        assert_eq!(c.isolation_level, IsolationLevel::ReadUncommitted);
        assert_eq!(c.offset_reset, OffsetReset::Earliest);
        assert!(!c.auto_commit);
        assert_eq!(c.max_poll_records, 7);
        assert_eq!(c.fetch.max_wait, Duration::from_millis(250));
        assert_eq!(c.group_protocol, GroupProtocol::Consumer);
    }

    #[test]
    fn bad_consumer_values_name_the_file_line_and_key() {
        let err = ConsumerConfig::from_properties_str(
            "group.id=g\n\nisolation.level=committed\n",
            "c.properties",
            &["t"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("c.properties"), "{err}");
        assert!(err.contains("isolation.level"), "{err}");
        assert!(err.contains('3'), "{err}");
        assert!(err.contains("read_committed or read_uncommitted"), "{err}");
        let err =
            ConsumerConfig::from_properties_str("isolation.level=read_committed\n", "d", &["t"])
                .unwrap_err()
                .to_string();
        assert!(err.contains("group.id"), "{err}");
    }
}
