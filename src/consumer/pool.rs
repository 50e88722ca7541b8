//! [`ConsumerPool`]: N member threads, each driving a member [`Engine`] in the pool's group,
//! each running a handler on its records and committing what the handler finished.
//!
//! ```text
//!  kpipe-consumer-i: fill (poll) ─▶ handler, record by record ─▶ finished ─▶ commit (interval)
//!       │  between records: group events (revoke: finish, commit, give back), commits due
//!  kpipe-group-i:   join, heartbeats (also while the handler runs), reconcile, commits
//! ```

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::connect::Connector;
use crate::client::{Backoff, Cluster, TopicPartition};
use crate::sync::Locked;

use super::config::{ConsumerConfig, GroupProtocol, OnHandlerError};
use super::engine::{self, connect_checked, Engine};
use super::error::Error;
use super::record::ConsumedRecord;
use super::shared::Shared;
use super::stats::ConsumerStats;

/// What a pool or a consumer did, from [`ConsumerPool::close`], [`Consumer::close`] and
/// [`ShareConsumer::close`]: the same shape for all three, with the fields that do not
/// apply left at zero.
///
/// [`Consumer::close`]: super::Consumer::close
/// [`ShareConsumer::close`]: super::ShareConsumer::close
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerSummary {
    /// Records finished (see [`ConsumerStats::handled`](super::ConsumerStats::handled)).
    pub handled: u64,
    /// Records handed out to the caller or a handler.
    pub handed_out: u64,
    /// Records skipped after a handler error.
    pub skipped: u64,
    /// The last offset committed, per partition (the next offset to read).
    pub committed: BTreeMap<TopicPartition, i64>,
    /// Member threads that had not finished by the close deadline (pools only).
    pub unfinished_members: usize,
    /// Why the pool stopped on its own, if it did (a `Stop` policy or a fatal error).
    pub stopped_because: Option<String>,
    /// Share groups: records accepted, released, rejected, handed out again (delivery
    /// count above 1), and acknowledgements the broker did not take (see
    /// [`ConsumerStats`](super::ConsumerStats)).
    pub acknowledged: u64,
    /// Share groups: records released.
    pub released: u64,
    /// Share groups: records rejected.
    pub rejected: u64,
    /// Share groups: records handed out with a delivery count above 1.
    pub redelivered: u64,
    /// Share groups: acknowledgements not known to be taken (refused, never sent, or sent
    /// on a request that failed before its answer: see
    /// [`ConsumerStats::acknowledge_failures`](super::ConsumerStats::acknowledge_failures)).
    pub acknowledge_failures: u64,
    /// Exactly-once pools: transactions committed.
    pub transactions_committed: u64,
    /// Exactly-once pools: transactions aborted (their records were handled again).
    pub transactions_aborted: u64,
    /// Exactly-once pools: members whose producer was fenced (a newer instance took its
    /// transactional id) and that left the group.
    pub fenced_members: usize,
}

/// N consumer threads in one group, each handing its records to a handler.
///
/// Each member commits only what its handler finished (returned `Ok`), on an interval,
/// before partitions are given back in a rebalance, and at close. A handler's error acts by
/// [`ConsumerConfig::on_error`] (retry, skip, or stop the pool); a panic is caught and
/// counted as an error.
///
/// ```no_run
/// use std::time::Duration;
/// use kpipe::consumer::OffsetReset;
/// use kpipe::{ConsumedRecord, ConsumerConfig, ConsumerPool, Shutdown};
///
/// let shutdown = Shutdown::new();
/// shutdown.install_signal_handler()?; // Ctrl-C / SIGTERM
/// let mut config = ConsumerConfig::new("localhost:9092", "analytics", &["events"]);
/// config.threads = 4;
/// config.offset_reset = OffsetReset::Earliest;
/// config.shutdown = Some(shutdown.clone()); // the flag stops the pool too
/// // `make_handler(i)` builds member i's handler, which may keep state of its own.
/// let pool = ConsumerPool::start(config, |member| {
///     let mut seen = 0u64;
///     move |record: &ConsumedRecord| -> Result<(), String> {
///         seen += 1;
///         println!("member {member} ({seen}): {}@{}", record.partition, record.offset);
///         Ok(())
///     }
/// })?;
/// while !shutdown.wait(Duration::from_secs(1)) {
///     eprintln!("lag {}", pool.stats().lag());
/// }
/// let summary = pool.close(Duration::from_secs(30))?; // finish, commit, leave
/// println!("handled {}", summary.handled);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`start_cloned`](Self::start_cloned) shares clones of one handler instead.
pub struct ConsumerPool {
    shared: Arc<Shared>,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
    close_deadline: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Why a member thread ended in a panic, for `close`.
    panicked: Option<String>,
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
    /// Fails at once if the brokers cannot be reached, a topic does not exist, or the group
    /// protocol asked for is not offered.
    pub fn start<F, H, E>(config: ConsumerConfig, make_handler: F) -> Result<ConsumerPool, Error>
    where
        F: Fn(usize) -> H,
        H: FnMut(&ConsumedRecord) -> Result<(), E> + Send + 'static,
        E: Display,
    {
        config.validate()?;
        if config.group_protocol == GroupProtocol::Share {
            return super::share::pool::launch(config, make_handler);
        }
        // A pool commits what its handler finished, always.
        let mut config = config;
        config.auto_commit = true;
        Self::launch(config, |i| {
            let mut handler = make_handler(i);
            move |member: Member, start| member.run(start, &mut handler)
        })
    }

    /// Start `config.threads` members: member 0 joins here (so that a cluster
    /// without the group protocol asked for is an error now), the others connect on their
    /// own threads; `body(i)` is what thread `i` runs.
    pub(super) fn launch<B, R>(config: ConsumerConfig, mut body: B) -> Result<ConsumerPool, Error>
    where
        B: FnMut(usize) -> R,
        R: FnOnce(Member, Result<Engine, Connector>) + Send + 'static,
    {
        let cluster = connect_checked(&config)?;
        let connector = cluster.connector().clone();
        let shared = Arc::new(Shared::new(config.shutdown.clone()));
        let close_deadline = Arc::new(std::sync::Mutex::new(None));
        let first = Engine::start(
            0,
            config.clone(),
            config.instance_id_of(0),
            cluster,
            shared.clone(),
        )?;
        let mut first = Some(first);
        let mut threads = Vec::with_capacity(config.threads);
        for i in 0..config.threads {
            let run = body(i);
            let member = Member {
                idx: i,
                config: config.clone(),
                shared: shared.clone(),
                close_deadline: close_deadline.clone(),
            };
            let start = first.take().ok_or_else(|| connector.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("kpipe-consumer-{i}"))
                .spawn(move || run(member, start));
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
            close_deadline,
            panicked: None,
        })
    }

    /// Start `threads` threads, thread `i` running what `body(i, close_deadline)` returns.
    pub(super) fn assemble<B, R>(
        shared: Arc<Shared>,
        threads: usize,
        mut body: B,
    ) -> Result<ConsumerPool, Error>
    where
        B: FnMut(usize, Arc<std::sync::Mutex<Option<Instant>>>) -> R,
        R: FnOnce() + Send + 'static,
    {
        let close_deadline = Arc::new(std::sync::Mutex::new(None));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let run = body(i, close_deadline.clone());
            match std::thread::Builder::new()
                .name(format!("kpipe-consumer-{i}"))
                .spawn(run)
            {
                Ok(h) => handles.push(h),
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
            threads: handles,
            close_deadline,
            panicked: None,
        })
    }

    /// Start a pool whose members share clones of one handler.
    pub fn start_cloned<H, E>(config: ConsumerConfig, handler: H) -> Result<ConsumerPool, Error>
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E> + Clone + Send + 'static,
        E: Display,
    {
        Self::start(config, move |_| handler.clone())
    }

    /// A snapshot of the counters, per-partition progress and members.
    pub fn stats(&self) -> ConsumerStats {
        self.shared.snapshot(self.started.elapsed())
    }

    /// Whether every member thread has ended (after a `Stop` policy, say).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Stop fetching, let each member finish its record in hand, commit, leave the group and
    /// end, all within `timeout`; then report what the pool did.
    ///
    /// As for every `close` in kpipe, the summary says what happened, a pool that stopped
    /// on its own included (its reason is in
    /// [`stopped_because`](ConsumerSummary::stopped_because)); an error means the close
    /// itself could not be done: here, a member thread ended in a panic outside the
    /// handler (a bug of kpipe's), whose records may be handed out again.
    pub fn close(mut self, timeout: Duration) -> Result<ConsumerSummary, Error> {
        let summary = self.stop_within(timeout);
        match self.panicked.take() {
            Some(message) => Err(Error::Stopped(message)),
            None => Ok(summary),
        }
    }

    fn stop_within(&mut self, timeout: Duration) -> ConsumerSummary {
        let deadline = Instant::now() + timeout;
        *self.close_deadline.locked() = Some(deadline);
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut unfinished = 0;
        for h in std::mem::take(&mut self.threads) {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                if h.join().is_err() {
                    let why = "a member thread panicked".to_owned();
                    self.shared.stop_pool(why.clone());
                    self.panicked = Some(why);
                }
            } else {
                unfinished += 1; // detached: it ends on its own when its current call returns
            }
        }
        summary(&self.shared, unfinished)
    }
}

impl Drop for ConsumerPool {
    /// A pool dropped without [`close`](ConsumerPool::close) closes the same way, within
    /// 30 s, and logs what it could not finish.
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        let summary = self.stop_within(Duration::from_secs(30));
        if summary.unfinished_members > 0 {
            log::warn!(
                "consumer pool dropped without close: {} member(s) still busy after 30 s",
                summary.unfinished_members
            );
        }
    }
}

/// The outcome of handing one record to the handler.
enum Handled {
    Done,
    Skipped,
    /// Stop requested while retrying, or the Stop policy: the record is not done.
    Interrupted,
    /// Its partition was taken away while retrying: the record is left to the next owner.
    Abandoned,
}

/// One member thread.
pub(super) struct Member {
    pub(super) idx: usize,
    pub(super) config: ConsumerConfig,
    pub(super) shared: Arc<Shared>,
    close_deadline: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Member {
    fn run<H, E>(self, start: Result<Engine, Connector>, handler: &mut H)
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        let Some(mut engine) = self.engine(start) else {
            return;
        };
        if let Err(e) = self.work(&mut engine, handler) {
            log::error!("consumer {}: {e}", self.idx);
            self.shared.stop_pool(e.to_string());
        }
        self.close(&mut engine);
    }

    /// The member's engine: the one made for it, or one it connects itself.
    pub(super) fn engine(&self, start: Result<Engine, Connector>) -> Option<Engine> {
        match start {
            Ok(c) => Some(c),
            Err(connector) => self.connect(connector),
        }
    }

    /// Give the partitions up (committing, in a mode that commits), leave, within the
    /// pool's close deadline.
    pub(super) fn close(&self, host: &mut impl engine::Host) {
        let deadline = self.close_deadline();
        if let Err(e) = engine::shutdown(host, deadline) {
            log::warn!("consumer {}: closing: {e}", self.idx);
        }
    }

    /// When the pool's close must be done by (30 s from now if none was set).
    pub(super) fn close_deadline(&self) -> Instant {
        self.close_deadline
            .locked()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30))
    }

    /// A member of its own: connect (retrying what may pass) and join.
    fn connect(&self, connector: Connector) -> Option<Engine> {
        let mut backoff = self.config.client.backoff();
        loop {
            let attempt = Cluster::connect_with(self.config.client.clone(), connector.clone())
                .map_err(Error::from)
                .and_then(|cluster| {
                    Engine::start(
                        self.idx,
                        self.config.clone(),
                        self.config.instance_id_of(self.idx),
                        cluster,
                        self.shared.clone(),
                    )
                });
            match attempt {
                Ok(c) => return Some(c),
                Err(Error::Client(e)) if e.is_retriable() => {
                    log::warn!("consumer {}: connecting: {e}", self.idx);
                    if self.shared.stopping() {
                        return None;
                    }
                    std::thread::sleep(backoff.next_delay());
                }
                // Refused credentials or certificates, or a bad setting: retrying cannot help.
                Err(e) => {
                    self.shared
                        .stop_pool(format!("consumer {}: connecting: {e}", self.idx));
                    return None;
                }
            }
        }
    }

    /// Fetch and handle until the pool stops.
    fn work<H, E>(&self, engine: &mut Engine, handler: &mut H) -> Result<(), Error>
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        let mut records = Vec::with_capacity(self.config.max_poll_records);
        while !self.shared.stopping() {
            records.clear();
            engine::fill(
                engine,
                &mut records,
                self.config.max_poll_records,
                Duration::from_millis(100),
            )?;
            let revision = engine.revision();
            let mut run = Run::default();
            for rec in records.drain(..) {
                if engine.service_due() {
                    run.flush(engine, &self.shared);
                    engine::service(engine)?;
                }
                if engine.revision() != revision && !engine.books.owns(&rec.topic, rec.partition) {
                    continue; // given back meanwhile: the next owner handles it
                }
                if !run.continues(&rec) {
                    run.flush(engine, &self.shared);
                }
                run.handed_out += 1;
                match self.handle(engine, &rec, handler, &mut run)? {
                    Handled::Done => run.handled += 1,
                    Handled::Skipped => self.shared.skipped.add(1),
                    Handled::Abandoned => continue,
                    Handled::Interrupted => {
                        run.flush(engine, &self.shared);
                        return Ok(());
                    }
                }
                engine.note_progress();
                run.next = Some((rec.topic.clone(), rec.partition, rec.offset + 1));
            }
            run.flush(engine, &self.shared);
        }
        Ok(())
    }

    fn handle<H, E>(
        &self,
        engine: &mut Engine,
        rec: &ConsumedRecord,
        handler: &mut H,
        run: &mut Run,
    ) -> Result<Handled, Error>
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        if self.shared.stopping() {
            return Ok(Handled::Interrupted);
        }
        let mut backoff: Option<Backoff> = None;
        loop {
            let err = match guarded(&self.shared, || handler(rec)) {
                Ok(()) => return Ok(Handled::Done),
                Err(e) => e,
            };
            self.shared.handler_errors.add(1);
            let at = format!("{}-{}@{}", rec.topic, rec.partition, rec.offset);
            match self.config.on_error {
                OnHandlerError::Skip => {
                    log::warn!(
                        "consumer {}: handler failed on {at}, skipped: {err}",
                        self.idx
                    );
                    return Ok(Handled::Skipped);
                }
                OnHandlerError::Stop => {
                    self.shared
                        .stop_pool(format!("the handler failed on {at}: {err}"));
                    return Ok(Handled::Interrupted);
                }
                OnHandlerError::Retry {
                    backoff: first,
                    max_backoff,
                } => {
                    let delay = backoff
                        .get_or_insert_with(|| Backoff::new(first, max_backoff))
                        .next_delay();
                    log::warn!(
                        "consumer {}: handler failed on {at}, retrying in {delay:?}: {err}",
                        self.idx
                    );
                    // What was handled before this record is finished: a revoke or an
                    // interval commit while waiting commits it.
                    run.flush(engine, &self.shared);
                    // Waiting on purpose is progress: the watchdog leaves the member be.
                    engine.note_progress();
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if self.shared.stopping() {
                            return Ok(Handled::Interrupted);
                        }
                        engine::service(engine)?;
                        if !engine.books.owns(&rec.topic, rec.partition) {
                            return Ok(Handled::Abandoned);
                        }
                        std::thread::sleep(
                            until
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(50)),
                        );
                    }
                }
            }
        }
    }
}

/// Call a handler, a panic caught and counted, and turned into an error that says so.
///
/// The handler is then called again (a retry, the next record): one whose state a panic
/// can leave broken should ask for [`OnHandlerError::Stop`].
pub(super) fn guarded<T, E: Display>(
    shared: &Shared,
    call: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => {
            shared.handler_panics.add(1);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            Err(format!("the handler panicked: {message}"))
        }
    }
}

/// Records finished in a row of one partition, noted in the books at once (a map look-up
/// per record would cost more than a small handler), and the count of them.
#[derive(Default)]
struct Run {
    /// The partition and the offset after the last finished record.
    next: Option<(Arc<str>, i32, i64)>,
    handled: u64,
    handed_out: u64,
}

impl Run {
    /// Whether `rec` is of the run's partition (or the run is empty).
    fn continues(&self, rec: &ConsumedRecord) -> bool {
        self.next
            .as_ref()
            .is_none_or(|(t, p, _)| *p == rec.partition && **t == *rec.topic)
    }

    /// Note the run in the books and the stats, and start a new one.
    fn flush(&mut self, engine: &mut Engine, shared: &Shared) {
        if let Some((topic, partition, next)) = self.next.take() {
            engine.books.finished(&(topic.to_string(), partition), next);
        }
        if self.handled > 0 {
            shared.handled.add(std::mem::take(&mut self.handled));
        }
        if self.handed_out > 0 {
            shared.handed_out.add(std::mem::take(&mut self.handed_out));
        }
    }
}

/// What the members sharing `shared` did, as a close reports it.
pub(super) fn summary(shared: &Shared, unfinished_members: usize) -> ConsumerSummary {
    let s = shared;
    ConsumerSummary {
        handled: s.handled.get(),
        handed_out: s.handed_out.get(),
        skipped: s.skipped.get(),
        committed: s.committed.locked().clone(),
        unfinished_members,
        stopped_because: s.stopped_because.locked().clone(),
        acknowledged: s.acknowledged.get(),
        released: s.released.get(),
        rejected: s.rejected.get(),
        redelivered: s.redelivered.get(),
        acknowledge_failures: s.ack_failures.get(),
        transactions_committed: s.txn_committed.get(),
        transactions_aborted: s.txn_aborted.get(),
        fenced_members: s.fenced.get() as usize,
    }
}
