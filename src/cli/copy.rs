//! `kpipe copy`: the records of --input-topic into --output-topic (key, value, headers,
//! timestamp), read in the consumer group --group.
//!
//! ```text
//!  exactly once (--transactional-id ID): the library's exactly-once pool
//!    kpipe-consumer-i: poll ─▶ send copies into its transaction (producer ID-i) ─▶ every
//!                      --transaction-interval: commit the copies with the input offsets
//!  at least once (the baseline):
//!    kpipe-copy-i: poll ─▶ send copies (one shared producer) ─▶ every second: wait until
//!                  this member's copies are delivered, then commit the input offsets
//! ```
//!
//! At least once commits an input offset only after the copies of the records before it
//! were acknowledged, so a crash at any point copies some records twice and loses none.
//! (The pool's per-record handler is not used for it: the pool commits what its handler
//! returned from, and a send returns once the record is queued, not delivered.)
//!
//! Partitions: when both topics have as many partitions, a copy goes to its input
//! record's partition number (so a key stays with its partition, however the input was
//! partitioned). Otherwise a keyed record goes where the Java client's hash puts its key,
//! and an unkeyed one by --balancer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use kpipe::client::{self, Cluster, NewTopic, TopicPartition};
use kpipe::consumer::{
    ConsumedRecord, Consumer, ConsumerConfig, ConsumerPool, ConsumerStats, ConsumerSummary,
    ExactlyOnce, OffsetReset, Output, RebalanceListener,
};
use kpipe::metrics::Prometheus;
use kpipe::producer::{OnDelivery, Producer, ProducerRecord, SendError};
use kpipe::shutdown::Shutdown;

use super::args::{client_config, CopyArgs, UsageError};
use super::metrics::Endpoint;
use super::report;
use super::run::{consumer_config, new_producer, pool_error, producer_config};

/// How often an at-least-once member commits (after its copies were delivered).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// `kpipe copy`: validate, run, report; returns the exit code.
pub fn main(o: &CopyArgs) -> u8 {
    let report = match o.validate().and_then(|()| run(o)) {
        Ok(r) => r,
        Err(UsageError(msg)) => {
            eprintln!("kpipe: {msg}");
            return 2;
        }
    };
    if let Some(path) = &o.control.summary_json {
        if let Err(e) = report::write_json(path, &report) {
            eprintln!("kpipe: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    print(&report);
    if report.ok() {
        0
    } else {
        1
    }
}

/// What `kpipe copy` did (also written by --summary-json).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CopyReport {
    /// Always "copy".
    pub mode: String,
    /// The topic read.
    pub input_topic: String,
    /// The topic written.
    pub output_topic: String,
    /// The consumer group.
    pub group: String,
    /// The transactional id prefix, when copying exactly once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// "exactly_once" or "at_least_once".
    pub guarantee: String,
    /// Input records copied, each counted once even when an aborted transaction (or a
    /// rebalance) had it sent again. Exactly once: those of a transaction open when its
    /// member was fenced count too, though that transaction did not commit.
    pub copied: u64,
    /// Copies whose delivery failed (at least once; their offsets were not committed).
    pub failed: u64,
    /// Transactions committed (exactly once).
    pub transactions_committed: u64,
    /// Transactions aborted (exactly once): their records were copied again.
    pub transactions_aborted: u64,
    /// Members whose producer was fenced and that left the group (exactly once).
    pub fenced_members: usize,
    /// Consumer members.
    pub consumers: usize,
    /// Why the copier stopped: --count, --duration, signal, or "consumers stopped".
    pub stopped_by: String,
    /// Why the consumers stopped on their own (every member fenced, an error), if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_because: Option<String>,
    /// Input records not yet copied at the end (summed over the partitions held then).
    pub lag: i64,
    /// Seconds the run took, start-up included.
    pub elapsed_secs: f64,
    /// Records copied per second over the run.
    pub records_per_sec: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
    /// Its peak, MiB.
    pub peak_rss_mib: f64,
}

impl CopyReport {
    /// Exit 0: nothing failed and the consumers did not stop on their own (every member
    /// fenced, or an error).
    fn ok(&self) -> bool {
        self.failed == 0 && self.stopped_because.is_none()
    }
}

/// One second of a copy (a line of --stats-json, and the live line).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CopySnapshot {
    /// Seconds since the start.
    pub elapsed_secs: f64,
    /// Records copied so far.
    pub copied: u64,
    /// Records copied per second over the last interval.
    pub copied_per_sec: f64,
    /// Transactions committed so far.
    pub transactions_committed: u64,
    /// Transactions aborted so far.
    pub transactions_aborted: u64,
    /// Input records not yet copied (summed over the partitions held).
    pub lag: i64,
    /// Rebalances the members went through.
    pub rebalances: u64,
    /// Partitions held.
    pub assigned_partitions: usize,
    /// Copies whose delivery failed, and failed commits.
    pub errors: u64,
    /// Resident memory now, MiB.
    pub rss_mib: f64,
}

impl report::Live for CopySnapshot {
    fn live_line(&self) -> String {
        let txns = if self.transactions_committed + self.transactions_aborted > 0 {
            format!(
                "  txns {} ({} aborted)",
                self.transactions_committed, self.transactions_aborted
            )
        } else {
            String::new()
        };
        format!(
            "{:>7.0}/s copied  total {}  lag {}  partitions {}{txns}  errors {}  rss {:.0} MiB",
            self.copied_per_sec,
            self.copied,
            self.lag,
            self.assigned_partitions,
            self.errors,
            self.rss_mib
        )
    }
}

fn print(r: &CopyReport) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!(); // end the live line
    }
    eprintln!(
        "kpipe copy ({}): copied {} from {} to {} | transactions committed {} aborted {} | fenced members {} of {} | failed {} lag {} | {:.0} records/s over {:.1} s ({}) | rss {:.0} MiB, peak {:.0} MiB",
        r.guarantee.replace('_', " "), r.copied, r.input_topic, r.output_topic, r.transactions_committed,
        r.transactions_aborted, r.fenced_members, r.consumers, r.failed, r.lag, r.records_per_sec,
        r.elapsed_secs, r.stopped_by, r.rss_mib, r.peak_rss_mib
    );
    if let Some(why) = &r.stopped_because {
        eprintln!("kpipe copy: the consumers stopped: {why}");
    }
}

/// The copy of one input record: key, value, headers and timestamp, and with
/// `keep_partition` its partition number (else the producer chooses; see the module docs).
fn copy_of(r: &ConsumedRecord, keep_partition: bool) -> ProducerRecord {
    ProducerRecord {
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r.headers.clone(),
        timestamp: (r.timestamp >= 0).then_some(r.timestamp),
        partition: keep_partition.then_some(r.partition),
        ..Default::default()
    }
}

/// Records copied, each input record once: a record read again (after an aborted
/// transaction, a rebalance) is not counted again.
#[derive(Debug, Default)]
struct Tally {
    copied: AtomicU64,
    /// The next offset not yet counted, per partition.
    next: Mutex<HashMap<TopicPartition, i64>>,
}

impl Tally {
    fn count(&self, records: &[ConsumedRecord]) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = 0;
        let same = |a: &ConsumedRecord, b: &ConsumedRecord| {
            a.partition == b.partition && a.topic == b.topic
        };
        for run in records.chunk_by(same) {
            let n = next
                .entry((run[0].topic.to_string(), run[0].partition))
                .or_insert(0);
            for r in run {
                if r.offset >= *n {
                    *n = r.offset + 1;
                    new += 1;
                }
            }
        }
        self.copied.fetch_add(new, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }
}

/// Holds a member to --rate records a second (none without it).
struct Pace {
    every: Option<Duration>,
    start: Instant,
    done: u64,
    shutdown: Shutdown,
}

impl Pace {
    fn new(rate: u64, shutdown: Shutdown) -> Self {
        Pace {
            every: (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64)),
            start: Instant::now(),
            done: 0,
            shutdown,
        }
    }

    /// `n` more records were copied: sleep until they were due.
    fn after(&mut self, n: usize) {
        let Some(every) = self.every else { return };
        self.done += n as u64;
        let due = self.start + every.mul_f64(self.done as f64);
        while !self.shutdown.is_triggered() {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Run the copy with the (validated) flags.
fn run(o: &CopyArgs) -> Result<CopyReport, UsageError> {
    let client = client_config(&o.connection)?;
    // --metrics-addr: listening before anything runs, so that a taken port is bad input.
    let metrics = o
        .control
        .metrics_addr
        .as_deref()
        .map(Endpoint::start)
        .transpose()?;
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        log::warn!("cannot catch Ctrl-C/SIGTERM: {e}");
    }
    let input = o.input_topic.clone().expect("validated");
    let output = o.output_topic.clone().expect("validated");
    let keep_partition = prepare_topics(o, &client, &input, &output)?;
    let dest = Destination {
        topic: &output,
        keep_partition,
    };
    let mut config = consumer_config(&o.connection, &o.group, &client, &input)?;
    // A new group copies the input from its beginning.
    config.offset_reset = OffsetReset::Earliest;
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let copier = match &o.transactions.transactional_id {
        Some(id) => Copier::ExactlyOnce(start_exactly_once(
            o, config, &client, id, dest, &tally, &shutdown,
        )?),
        None => Copier::AtLeastOnce(AtLeastOnce::start(
            o, config, client, dest, &tally, &shutdown,
        )?),
    };
    if let Some(m) = &metrics {
        m.publish(copier.exposition());
    }
    let stopped_by = watch(o, &shutdown, started, &tally, &copier, metrics.as_ref());
    shutdown.trigger();
    let mut report = CopyReport {
        mode: "copy".into(),
        input_topic: input,
        output_topic: output,
        group: o.group.name().to_owned(),
        transactional_id: o.transactions.transactional_id.clone(),
        guarantee: match o.transactions.transactional_id {
            Some(_) => "exactly_once".into(),
            None => "at_least_once".into(),
        },
        consumers: o.group.consumers,
        stopped_by,
        ..Default::default()
    };
    copier.finish(o, &mut report, metrics.as_ref());
    report.copied = tally.get();
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.records_per_sec = report.copied as f64 / report.elapsed_secs.max(1e-9);
    (report.rss_mib, report.peak_rss_mib) = report::rss_mib();
    Ok(report)
}

/// The input must exist; the output is created like it (its partition count and
/// replication factor) when missing, unless --no-create-topic. Whether both have as many
/// partitions (copies then keep their partition number).
fn prepare_topics(
    o: &CopyArgs,
    client: &client::ClientConfig,
    input: &str,
    output: &str,
) -> Result<bool, UsageError> {
    let mut cluster = Cluster::connect(client.clone())?;
    let info = match cluster.topic(input) {
        Ok(t) => t.clone(),
        Err(client::Error::UnknownTopic { .. }) => {
            return Err(UsageError(format!(
                "the input topic {input:?} does not exist"
            )))
        }
        Err(e) => return Err(UsageError(format!("topic {input:?}: {e}"))),
    };
    let partitions = info.partitions.len() as i32;
    let replication = info
        .partitions
        .first()
        .map_or(1, |p| p.replicas.len().max(1)) as i16;
    let create = (!o.no_create_topic).then(|| NewTopic::new(output, partitions, replication));
    match cluster.ensure_topic(output, create.as_ref()) {
        Ok(()) => {}
        Err(client::Error::UnknownTopic { .. }) => {
            return Err(UsageError(format!(
                "the output topic {output:?} does not exist; create it, or drop --no-create-topic"
            )))
        }
        Err(e) => return Err(UsageError(format!("topic {output:?}: {e}"))),
    }
    let out = cluster.topic(output)?.partitions.len() as i32;
    if out != partitions {
        eprintln!(
            "kpipe copy: {input} has {partitions} partitions and {output} {out}: keyed records go by their key's hash, not to the partition number they had"
        );
    }
    Ok(out == partitions)
}

/// Where copies go: the output topic, and whether they keep their input partition
/// number (both topics have as many partitions).
#[derive(Clone, Copy)]
struct Destination<'a> {
    topic: &'a str,
    keep_partition: bool,
}

/// The two ways of copying.
enum Copier {
    ExactlyOnce(ConsumerPool),
    AtLeastOnce(AtLeastOnce),
}

impl Copier {
    /// Stats now: (transactions committed, aborted, lag, rebalances, partitions, errors).
    fn snapshot(&self) -> (u64, u64, i64, u64, usize, u64) {
        match self {
            Copier::ExactlyOnce(pool) => {
                let s = pool.stats();
                (
                    s.transactions_committed,
                    s.transactions_aborted,
                    s.lag(),
                    s.rebalances,
                    s.partitions.len(),
                    s.commit_failures,
                )
            }
            Copier::AtLeastOnce(a) => {
                let s = &a.shared;
                let sum =
                    |v: &[AtomicU64]| v.iter().map(|x| x.load(Ordering::Relaxed)).sum::<u64>();
                (
                    0,
                    0,
                    sum(&s.lag) as i64,
                    sum(&s.rebalances),
                    sum(&s.partitions) as usize,
                    sum(&s.failed) + s.commit_failures.load(Ordering::Relaxed),
                )
            }
        }
    }

    /// The metrics text: the exactly-once pool's stats (its members' producers are its
    /// own), or the shared producer's and each at-least-once member's, labelled `member`.
    fn exposition(&self) -> String {
        match self {
            Copier::ExactlyOnce(pool) => Prometheus::new().consumer(&pool.stats()).render(),
            Copier::AtLeastOnce(a) => a.exposition(),
        }
    }

    /// Whether the consumers stopped on their own.
    fn is_finished(&self) -> bool {
        match self {
            Copier::ExactlyOnce(pool) => pool.is_finished(),
            Copier::AtLeastOnce(a) => a.members.iter().all(JoinHandle::is_finished),
        }
    }

    /// Stop (the shutdown flag is set): the last transaction commits, or the last copies
    /// are delivered and their offsets committed; the members leave; all within
    /// --drain-timeout.
    /// The last metrics are published to `metrics`: the pool's stats before it closes, the
    /// producer's after.
    fn finish(self, o: &CopyArgs, report: &mut CopyReport, metrics: Option<&Endpoint>) {
        report.lag = self.snapshot().2;
        match self {
            Copier::ExactlyOnce(pool) => {
                if let Some(m) = metrics {
                    m.publish(Prometheus::new().consumer(&pool.stats()).render());
                }
                let s = pool
                    .close(o.control.drain_timeout)
                    .unwrap_or_else(|e| ConsumerSummary {
                        stopped_because: Some(e.to_string()),
                        ..Default::default()
                    });
                report.transactions_committed = s.transactions_committed;
                report.transactions_aborted = s.transactions_aborted;
                report.fenced_members = s.fenced_members;
                report.stopped_because = s.stopped_because;
                if s.unfinished_members > 0 {
                    report.stopped_because.get_or_insert(format!(
                        "{} member(s) had not finished within --drain-timeout {:?}",
                        s.unfinished_members, o.control.drain_timeout
                    ));
                }
            }
            Copier::AtLeastOnce(a) => {
                let producer = a.producer.clone();
                let shared = a.shared.clone();
                a.finish(o, report);
                if let Some(m) = metrics {
                    m.publish(exposition(&producer, &shared));
                }
            }
        }
    }
}

/// Exactly once: the library's exactly-once pool, member i writing as `{id}-{i}`.
fn start_exactly_once(
    o: &CopyArgs,
    config: ConsumerConfig,
    client: &client::ClientConfig,
    id: &str,
    dest: Destination<'_>,
    tally: &Arc<Tally>,
    shutdown: &Shutdown,
) -> Result<ConsumerPool, UsageError> {
    let (output, keep) = (dest.topic, dest.keep_partition);
    let (producing, transactions) = (o.producing.clone(), o.transactions.clone());
    let (drain, client, topic) = (o.control.drain_timeout, client.clone(), output.to_owned());
    let eos = ExactlyOnce::new(id, move || {
        producer_config(&producing, &transactions, drain, client.clone(), &topic)
    })
    .transaction_interval(o.transactions.transaction_interval);
    ConsumerPool::start_exactly_once(config, eos, |_| {
        let tally = tally.clone();
        let mut pace = Pace::new(o.rate, shutdown.clone());
        move |records: &[ConsumedRecord], out: &Output<'_>| -> Result<(), SendError> {
            for r in records {
                out.send(copy_of(r, keep))?;
            }
            tally.count(records);
            pace.after(records.len());
            Ok(())
        }
    })
    .map_err(pool_error)
}

/// What the at-least-once members and the producer's delivery handler share.
#[derive(Debug)]
struct Shared {
    /// Copies sent, per member.
    sent: Vec<AtomicU64>,
    /// Copies whose delivery ended (acknowledged or failed), per member.
    ended: Vec<AtomicU64>,
    /// Copies whose delivery failed, per member.
    failed: Vec<AtomicU64>,
    /// Why the first delivery failed.
    failure: Mutex<Option<String>>,
    /// Per member, from its consumer's stats once a second.
    lag: Vec<AtomicU64>,
    rebalances: Vec<AtomicU64>,
    partitions: Vec<AtomicU64>,
    /// Each member's consumer stats, as of the same second (for --metrics-addr).
    stats: Vec<Mutex<Option<ConsumerStats>>>,
    commit_failures: AtomicU64,
    /// Members that must not commit any more (a copy was not sent or not delivered).
    poisoned: Vec<std::sync::atomic::AtomicBool>,
    /// Why a member stopped on its own, the first one.
    stopped_because: Mutex<Option<String>>,
    /// Bound on waiting for a member's copies to be delivered.
    delivery_bound: Duration,
}

impl Shared {
    fn new(members: usize, delivery_bound: Duration) -> Self {
        let zeros = || (0..members).map(|_| AtomicU64::new(0)).collect();
        Shared {
            sent: zeros(),
            ended: zeros(),
            failed: zeros(),
            failure: Mutex::new(None),
            lag: zeros(),
            rebalances: zeros(),
            partitions: zeros(),
            stats: (0..members).map(|_| Mutex::new(None)).collect(),
            commit_failures: AtomicU64::new(0),
            poisoned: (0..members)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            stopped_because: Mutex::new(None),
            delivery_bound,
        }
    }

    /// Wait until every copy member `i` sent was delivered; Err if one failed or the
    /// bound ran out (the member then commits nothing more).
    fn await_delivered(&self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + self.delivery_bound;
        let sent = self.sent[i].load(Ordering::SeqCst);
        while self.ended[i].load(Ordering::SeqCst) < sent {
            if Instant::now() >= deadline {
                return Err(format!(
                    "copies not delivered within {:?}",
                    self.delivery_bound
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
        if self.failed[i].load(Ordering::SeqCst) > 0 {
            let why = lock(&self.failure).clone().unwrap_or_default();
            return Err(format!("a copy could not be delivered: {why}"));
        }
        Ok(())
    }

    fn stop(&self, i: usize, why: String) {
        self.poisoned[i].store(true, Ordering::SeqCst);
        log::error!("copy member {i}: {why}");
        lock(&self.stopped_because).get_or_insert(format!("member {i}: {why}"));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// At least once: members on threads of their own, one shared producer.
struct AtLeastOnce {
    producer: Producer,
    members: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// The metrics text of at least once: the shared producer, and each member's consumer
/// (labelled `member`) as of its last second.
fn exposition(producer: &Producer, shared: &Shared) -> String {
    let ps = producer.stats();
    let members: Vec<Option<ConsumerStats>> =
        shared.stats.iter().map(|s| lock(s).clone()).collect();
    let labels: Vec<String> = (0..members.len()).map(|i| i.to_string()).collect();
    let mut p = Prometheus::new().producer(&ps);
    for (cs, i) in members.iter().zip(&labels) {
        if let Some(cs) = cs {
            p = p.label("member", i).consumer(cs);
        }
    }
    p.render()
}

impl AtLeastOnce {
    fn exposition(&self) -> String {
        exposition(&self.producer, &self.shared)
    }

    fn start(
        o: &CopyArgs,
        config: ConsumerConfig,
        client: client::ClientConfig,
        dest: Destination<'_>,
        tally: &Arc<Tally>,
        shutdown: &Shutdown,
    ) -> Result<Self, UsageError> {
        let (output, keep) = (dest.topic, dest.keep_partition);
        let drain = o.control.drain_timeout;
        let mut pc = producer_config(&o.producing, &o.transactions, drain, client, output);
        let consumers_n = o.group.consumers;
        let shared = Arc::new(Shared::new(consumers_n, pc.delivery_timeout + drain));
        let s = shared.clone();
        // Each copy is tagged with its member's index.
        pc.on_delivery = Some(OnDelivery::new(move |member, outcome| {
            let i = member as usize;
            if let Err(e) = outcome {
                lock(&s.failure).get_or_insert_with(|| e.to_string());
                s.failed[i].fetch_add(1, Ordering::SeqCst);
            }
            s.ended[i].fetch_add(1, Ordering::SeqCst);
        }));
        let producer = new_producer(pc)?;
        // Every consumer joins here, so that a refused start is bad input (exit 2).
        let mut consumers = Vec::with_capacity(consumers_n);
        for i in 0..consumers_n {
            let mut c = config.clone();
            c.auto_commit = false;
            c.group_instance_id = config
                .group_instance_id
                .as_ref()
                .map(|id| format!("{id}-{i}"));
            let listener = CommitOnRevoke {
                member: i,
                shared: shared.clone(),
            };
            match Consumer::with_listener(c, listener) {
                Ok(c) => consumers.push(c),
                Err(e) => {
                    let _ = producer.close(Duration::from_secs(1));
                    return Err(pool_error(e));
                }
            }
        }
        let mut members = Vec::with_capacity(consumers_n);
        for (i, consumer) in consumers.into_iter().enumerate() {
            let m = Member {
                idx: i,
                consumer,
                producer: producer.clone(),
                shared: shared.clone(),
                tally: tally.clone(),
                pace: Pace::new(o.rate, shutdown.clone()),
                shutdown: shutdown.clone(),
                drain,
                keep,
            };
            let spawned = thread::Builder::new()
                .name(format!("kpipe-copy-{i}"))
                .spawn(move || m.run());
            match spawned {
                Ok(h) => members.push(h),
                Err(e) => {
                    shutdown.trigger();
                    return Err(UsageError(format!("cannot start a copy thread: {e}")));
                }
            }
        }
        Ok(AtLeastOnce {
            producer,
            members,
            shared,
        })
    }

    /// The members deliver, commit and leave; then the producer closes.
    fn finish(self, o: &CopyArgs, report: &mut CopyReport) {
        let deadline = Instant::now() + o.control.drain_timeout;
        let mut unfinished = 0;
        for h in self.members {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                if h.join().is_err() {
                    lock(&self.shared.stopped_because)
                        .get_or_insert("a copy thread panicked (a kpipe bug)".into());
                }
            } else {
                unfinished += 1;
            }
        }
        if unfinished > 0 {
            lock(&self.shared.stopped_because).get_or_insert(format!(
                "{unfinished} member(s) had not finished within --drain-timeout {:?}",
                o.control.drain_timeout
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.producer.close(left.max(Duration::from_secs(1))) {
            lock(&self.shared.stopped_because).get_or_insert(format!("closing the producer: {e}"));
        }
        report.failed = self
            .shared
            .failed
            .iter()
            .map(|f| f.load(Ordering::SeqCst))
            .sum();
        report.stopped_because = lock(&self.shared.stopped_because).clone();
    }
}

/// Before partitions are given back: wait for this member's copies, then commit what it
/// read (unless it must not commit any more).
struct CommitOnRevoke {
    member: usize,
    shared: Arc<Shared>,
}

impl RebalanceListener for CommitOnRevoke {
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let s = &self.shared;
        if partitions.is_empty() || s.poisoned[self.member].load(Ordering::SeqCst) {
            return;
        }
        match s.await_delivered(self.member) {
            Ok(()) => {
                if let Err(e) = consumer.commit() {
                    log::warn!(
                        "copy member {}: committing at a rebalance: {e}",
                        self.member
                    );
                    s.commit_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(why) => s.stop(self.member, why),
        }
    }

    /// Lost partitions cannot be committed: their next owner copies them again.
    fn on_lost(&mut self, _: &mut Consumer, _: &[TopicPartition]) {}
}

/// One at-least-once member.
struct Member {
    idx: usize,
    consumer: Consumer,
    producer: Producer,
    shared: Arc<Shared>,
    tally: Arc<Tally>,
    pace: Pace,
    shutdown: Shutdown,
    drain: Duration,
    /// Copies keep their input partition number.
    keep: bool,
}

impl Member {
    fn run(mut self) {
        let i = self.idx;
        if let Err(why) = self.work() {
            self.shared.stop(i, why);
            // The others finish what they have and stop too.
            self.shutdown.trigger();
        }
        if let Err(e) = self.consumer.close(self.drain) {
            log::warn!("copy member {i}: leaving the group: {e}");
        }
    }

    fn work(&mut self) -> Result<(), String> {
        let (i, s) = (self.idx, self.shared.clone());
        let mut last_commit = Instant::now();
        let mut last_stats = Instant::now();
        while !self.shutdown.is_triggered() {
            let records = self
                .consumer
                .poll(Duration::from_millis(100))
                .map_err(|e| e.to_string())?;
            for r in &records {
                self.send(copy_of(r, self.keep))?;
            }
            self.tally.count(&records);
            self.pace.after(records.len());
            if s.failed[i].load(Ordering::Relaxed) > 0 {
                s.await_delivered(i)?;
            }
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit()?;
                last_commit = Instant::now();
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                let st = self.consumer.stats();
                s.lag[i].store(st.lag().max(0) as u64, Ordering::Relaxed);
                s.rebalances[i].store(st.rebalances, Ordering::Relaxed);
                s.partitions[i].store(st.partitions.len() as u64, Ordering::Relaxed);
                *lock(&s.stats[i]) = Some(st);
                last_stats = Instant::now();
            }
        }
        self.commit()
    }

    /// Wait for this member's copies, then commit the offsets of what it read.
    fn commit(&mut self) -> Result<(), String> {
        self.shared.await_delivered(self.idx)?;
        if let Err(e) = self.consumer.commit() {
            // Not fatal: the next commit carries these offsets too.
            log::warn!("copy member {}: commit: {e}", self.idx);
            self.shared.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Send one copy, tagged with the member, waiting out a full queue (a second Ctrl-C
    /// gives up: nothing more is committed, so the record is copied by the next run).
    fn send(&mut self, mut record: ProducerRecord) -> Result<(), String> {
        let tag = self.idx as u64;
        loop {
            match self.producer.send_tagged(record, tag) {
                Ok(()) => {
                    self.shared.sent[self.idx].fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Err(SendError::QueueFull(r)) if self.shutdown.signal_count() < 2 => record = *r,
                Err(e) => return Err(format!("a copy could not be sent: {e}")),
            }
        }
    }
}

/// Show stats once a second until something stops the copy; returns what stopped it.
fn watch(
    o: &CopyArgs,
    shutdown: &Shutdown,
    started: Instant,
    tally: &Tally,
    copier: &Copier,
    metrics: Option<&Endpoint>,
) -> String {
    let o = &o.control;
    let mut out = report::Output::new(o.stats_json.as_deref());
    let mut last = (Instant::now(), 0u64);
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    loop {
        if shutdown.is_triggered() {
            return if shutdown.signal_count() > 0 {
                "signal".into()
            } else {
                "consumers stopped".into()
            };
        }
        if o.duration.is_some_and(|d| started.elapsed() >= d) {
            return "--duration".into();
        }
        if o.count.is_some_and(|n| tally.get() >= n) {
            return "--count".into();
        }
        if copier.is_finished() {
            return "consumers stopped".into();
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let (committed, aborted, lag, rebalances, partitions, errors) = copier.snapshot();
            if let Some(m) = metrics {
                m.publish(copier.exposition());
            }
            let copied = tally.get();
            let dt = last.0.elapsed().as_secs_f64().max(1e-3);
            out.show(&CopySnapshot {
                elapsed_secs: started.elapsed().as_secs_f64(),
                copied,
                copied_per_sec: copied.saturating_sub(last.1) as f64 / dt,
                transactions_committed: committed,
                transactions_aborted: aborted,
                lag,
                rebalances,
                assigned_partitions: partitions,
                errors,
                rss_mib: report::rss_mib().0,
            });
            last = (Instant::now(), copied);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(partition: i32, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            delivery_count: None,
            topic: "in".into(),
            partition,
            offset,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![client::Header::new("h", Bytes::from_static(b"1"))],
        }
    }

    #[test]
    fn a_copy_keeps_key_value_headers_timestamp_and_the_partition_when_asked() {
        let r = rec(3, 7);
        let c = copy_of(&r, false);
        assert_eq!(
            (c.key, c.value, c.headers),
            (r.key.clone(), r.value.clone(), r.headers.clone())
        );
        assert_eq!(c.timestamp, Some(1_700_000_000_000));
        assert_eq!((c.topic, c.partition), (None, None));
        assert_eq!(copy_of(&r, true).partition, Some(r.partition));
        let mut no_time = rec(0, 0);
        no_time.timestamp = -1;
        assert_eq!(copy_of(&no_time, false).timestamp, None);
    }

    #[test]
    fn records_read_again_are_counted_once() {
        let t = Tally::default();
        t.count(&[rec(0, 0), rec(0, 1), rec(1, 0)]);
        // An aborted transaction's records, handed again, and one new.
        t.count(&[rec(0, 0), rec(0, 1), rec(0, 2)]);
        t.count(&[rec(1, 0), rec(1, 1)]);
        assert_eq!(t.get(), 5);
    }
}
