//! One run, in its stages: set-up (configs, the topic), consumers, generators, the watcher
//! (stats once a second, and what stops the run), the drain, and the report.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLockReadGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use kpipe::client::{self, Cluster, NewTopic};
use kpipe::consumer::{
    self, ConsumerConfig, ConsumerPool, ConsumerStats, OffsetReset, OnHandlerError,
};
use kpipe::metrics::Prometheus;
use kpipe::producer::{
    self, OnDelivery, Producer, ProducerConfig, ProducerRecord, ProducerStats, SendError,
};
use kpipe::shutdown::Shutdown;

use super::args::{
    client_config, AssignorArg, Connection, ConsumeArgs, Control, Creation, Generating, Group,
    GroupProtocolArg, IsolationArg, Mode, OnOff, ProduceArgs, Producing, Reading, ResetArg,
    RunArgs, Topic, Transactional, UsageError,
};
use super::event::{self, tag, untag, Event};
use super::ledger::{Check, Ledger};
use super::metrics::Endpoint;
use super::report::{self, Latency, Output, Report, Snapshot};
use super::txn::{Book, Committer, Devices, Gate, Transactions};

// The command's memory budget. With every generator sending as fast as it can, the
// producer's queues are always full and the consumers' fetches always answered in full, so
// these bound what the run holds, whatever its length: `kpipe run` at its defaults peaked
// at 76-79 MiB in three 20 s runs (with 4 MiB of queues, 89-100 MiB; with the library's
// defaults, 10,000 records, 32 MiB and 1 MiB per partition, over 200 MiB). 2 MiB of queues
// is about ten milliseconds of sending at a million events a second, twice the linger.
/// Records in the channel between the generators and the writer thread.
const QUEUE_RECORDS: usize = 2048;
/// Bytes of records the writer holds in its partition queues.
const BUFFER_BYTES: usize = 2 << 20;
/// Bytes one partition may bring in one fetch answer (a larger batch still comes whole).
const FETCH_PARTITION_BYTES: i32 = 256 << 10;
/// Bytes one fetch answer may bring in all.
const FETCH_BYTES: i32 = 8 << 20;
/// With --share-group and --work: records one share fetch acquires (a thread holds them
/// until each is handled: 20 × 2 ms = 40 ms of work, well inside a 30 s lock).
const SHARE_WORK_POLL_RECORDS: usize = 20;

/// Events a generator takes from the --count budget at a time (one shared counter touched
/// per event would cost every thread a contended atomic).
const COUNT_CHUNK: u64 = 1024;

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Distinct devices a consume run's ledger is sized for (consume sends nothing, and takes no
/// --devices: the default of run and produce).
const CONSUME_DEVICES: u32 = 1000;

/// What run, produce and consume are given: the groups of flags each takes.
pub struct Job {
    pub connection: Connection,
    pub topic: Topic,
    /// How a missing topic is created; `None` for consume, which never creates it.
    pub creation: Option<Creation>,
    /// The producer side: run and produce.
    pub sending: Option<Sending>,
    /// The consumer side: run and consume.
    pub receiving: Option<Receiving>,
    /// --warmup.
    pub warmup: Duration,
    pub control: Control,
}

/// The producer side of a run: the generators, the producer and its transactions.
pub struct Sending {
    pub generating: Generating,
    pub producing: Producing,
    pub transactions: Transactional,
}

/// The consumer side of a run: the group and what is done with what is read.
pub struct Receiving {
    pub group: Group,
    pub reading: Reading,
}

impl Job {
    pub fn run(a: RunArgs) -> Job {
        Job {
            connection: a.connection,
            topic: a.topic,
            creation: Some(a.creation),
            sending: Some(Sending {
                generating: a.generating,
                producing: a.producing,
                transactions: a.transactions,
            }),
            receiving: Some(Receiving {
                group: a.group,
                reading: a.reading,
            }),
            warmup: a.warmup.warmup,
            control: a.control,
        }
    }

    pub fn produce(a: ProduceArgs) -> Job {
        Job {
            connection: a.connection,
            topic: a.topic,
            creation: Some(a.creation),
            sending: Some(Sending {
                generating: a.generating,
                producing: a.producing,
                transactions: a.transactions,
            }),
            receiving: None,
            warmup: a.warmup.warmup,
            control: a.control,
        }
    }

    pub fn consume(a: ConsumeArgs) -> Job {
        Job {
            connection: a.connection,
            topic: a.topic,
            creation: None,
            sending: None,
            receiving: Some(Receiving {
                group: a.group,
                reading: a.reading,
            }),
            warmup: a.warmup.warmup,
            control: a.control,
        }
    }

    /// Refuse flags out of range, naming the flag and what it takes.
    pub fn validate(&self) -> Result<(), UsageError> {
        if let Some(r) = &self.receiving {
            r.group.validate()?;
            r.reading.validate(&r.group)?;
        }
        if let Some(c) = &self.creation {
            c.validate()?;
        }
        if let Some(s) = &self.sending {
            s.generating.validate()?;
            s.producing.validate()?;
            s.transactions.validate(&s.producing)?;
        }
        self.control.validate()
    }

    /// --share-group, on the consumer side.
    fn share_group(&self) -> Option<&str> {
        self.receiving.as_ref()?.reading.share_group.as_deref()
    }
}

/// Run `mode` (run, produce or consume: copy has a module of its own) with the
/// (validated) flags of `job`.
pub fn run(mode: Mode, job: &Job) -> Result<Report, UsageError> {
    let o = &job.control;
    // Set-up: configs, the signal handler, the topic.
    let client = client_config(&job.connection)?;
    // --metrics-addr: listening before anything runs, so that a taken port is bad input.
    let metrics = o.metrics_addr.as_deref().map(Endpoint::start).transpose()?;
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        log::warn!("cannot catch Ctrl-C/SIGTERM: {e}");
    }
    let partitions = prepare_topic(&job.topic.topic, job.creation.as_ref(), &client)?;
    let client_for_lag = client.clone();
    let run_id = now_us();
    let check = match mode {
        Mode::Run => Check::Both,
        Mode::Produce => Check::Acked,
        Mode::Consume => Check::Seen,
    };
    let devices = job
        .sending
        .as_ref()
        .map_or(CONSUME_DEVICES, |s| s.generating.devices);
    let ledger = Arc::new(Ledger::new(
        run_id,
        devices,
        check,
        run_id + job.warmup.as_micros() as u64,
    ));
    let started = Instant::now();

    // Consumers first, so that they are in place before the first event.
    let pool = match &job.receiving {
        Some(r) => Some(start_consumers(mode, job, r, &client, &ledger)?),
        None => None,
    };
    if let (Mode::Run, Some(pool)) = (mode, &pool) {
        await_assignment(
            pool,
            partitions,
            &shutdown,
            &job.topic.topic,
            job.share_group(),
            &client_for_lag,
        );
    }
    let producer = match &job.sending {
        Some(s) => Some(start_producer(s, job, client, &ledger)?),
        None => None,
    };
    // Each producer thread's devices (device d belongs to thread d % threads).
    let devices: Vec<Arc<Devices>> = match &job.sending {
        Some(s) => {
            let g = &s.generating;
            (0..g.threads)
                .map(|t| {
                    Arc::new(Devices::new(
                        (t as u32..g.devices).step_by(g.threads).collect(),
                    ))
                })
                .collect()
        }
        None => Vec::new(),
    };
    // With --transactional-id: the first transaction begins before the first event.
    let transactional_id = job
        .sending
        .as_ref()
        .and_then(|s| s.transactions.transactional_id.clone());
    let txn = match (&producer, &job.sending) {
        (Some(p), Some(s)) if transactional_id.is_some() => Some(Transactions::start(
            p,
            &devices,
            &ledger,
            s.transactions.transaction_interval,
            o.drain_timeout,
            &shutdown,
        )?),
        _ => None,
    };
    if let Some(m) = &metrics {
        m.publish(exposition(
            producer.as_ref().map(Producer::stats).as_ref(),
            pool.as_ref().map(ConsumerPool::stats).as_ref(),
        ));
    }
    let generators = match (&producer, &job.sending) {
        (Some(p), Some(s)) => {
            let gate = txn.as_ref().map(|t| t.gate.clone());
            Generators::start(
                &s.generating,
                o.count,
                p,
                &devices,
                gate,
                ledger.run(),
                &shutdown,
            )
        }
        _ => Generators::default(),
    };

    let stopped_by = watch(
        mode,
        o,
        &shutdown,
        started,
        &ledger,
        producer.as_ref(),
        txn.as_ref().map(|t| &*t.book),
        pool.as_ref(),
        &generators,
        ShareLag::new(job.share_group(), &client_for_lag),
        metrics.as_ref(),
    );
    shutdown.trigger();
    generators.join();
    let (committer, book) = match txn {
        Some(mut t) => (t.join(), Some(t.book)),
        None => (None, None),
    };

    let mut report = Report {
        mode: format!("{mode:?}").to_lowercase(),
        stopped_by,
        ..Default::default()
    };
    // For the last metrics: the producer's stats after its close.
    let last_producer = producer.clone();
    let mut last_pool = None;
    if let Some(p) = producer {
        drain_producer(
            p,
            committer,
            book.as_deref(),
            o.drain_timeout,
            transactional_id,
            &shutdown,
            &mut report,
        );
    }
    if let Some(pool) = pool {
        if mode == Mode::Run {
            // Consumers catch up to what was acknowledged (a second Ctrl-C stops waiting).
            let deadline = Instant::now() + o.drain_timeout;
            while ledger.missing() > 0 && Instant::now() < deadline && shutdown.signal_count() < 2 {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let last = pool.stats();
        let summary_lag = last.lag();
        last_pool = Some(last);
        let summary = pool.close(o.drain_timeout).unwrap_or_else(|e| {
            // Only a member thread that died outside its handler: the ledger still counts
            // what was consumed, and any event missing fails the run.
            log::error!("closing the consumers: {e}");
            Default::default()
        });
        report.lag = match ShareLag::new(job.share_group(), &client_for_lag) {
            Some(mut share) => share.get(),
            None => summary_lag,
        };
        report.share_group = job.share_group().map(str::to_owned);
        report.acknowledged = summary.acknowledged;
        report.released = summary.released;
        report.rejected = summary.rejected;
        report.redelivered = summary.redelivered;
    }
    if let Some(m) = &metrics {
        let last = last_producer.as_ref().map(Producer::stats);
        m.publish(exposition(last.as_ref(), last_pool.as_ref()));
    }
    finish(&mut report, mode, &ledger, started);
    Ok(report)
}

/// The metrics text of the producer and the pool, those the run has.
pub(super) fn exposition(producer: Option<&ProducerStats>, pool: Option<&ConsumerStats>) -> String {
    let mut p = Prometheus::new();
    if let Some(s) = producer {
        p = p.producer(s);
    }
    if let Some(s) = pool {
        p = p.consumer(s);
    }
    p.render()
}

/// Make sure the topic exists (creating it as `creation` says, unless told not to; consume
/// has none and never creates it); returns its partition count.
fn prepare_topic(
    topic: &str,
    creation: Option<&Creation>,
    client: &client::ClientConfig,
) -> Result<usize, UsageError> {
    let mut cluster = Cluster::connect(client.clone())?;
    let create = creation
        .filter(|c| !c.no_create_topic)
        .map(|c| NewTopic::new(topic, c.partitions, c.replication));
    match cluster.ensure_topic(topic, create.as_ref()) {
        Ok(()) => {}
        Err(client::Error::UnknownTopic { .. }) => {
            return Err(UsageError(format!(
                "topic {topic:?} does not exist; create it (drop --no-create-topic, or run `kpipe produce` first)"
            )))
        }
        Err(e) => return Err(UsageError(format!("topic {topic:?}: {e}"))),
    }
    Ok(cluster.topic(topic)?.partitions.len())
}

fn start_consumers(
    mode: Mode,
    job: &Job,
    r: &Receiving,
    client: &client::ClientConfig,
    ledger: &Arc<Ledger>,
) -> Result<ConsumerPool, UsageError> {
    let o = &r.reading;
    let mut c = consumer_config(&job.connection, &r.group, client, &job.topic.topic)?;
    c.offset_reset = if mode == Mode::Consume {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    c.on_error = OnHandlerError::Skip;
    if let Some(group) = &o.share_group {
        c.group = group.clone();
        c.group_protocol = consumer::GroupProtocol::Share;
        c.share_auto_offset_reset = match (o.share_auto_offset_reset, mode) {
            (Some(ResetArg::Earliest), _) | (None, Mode::Consume) => Some(OffsetReset::Earliest),
            (Some(ResetArg::Latest), _) => Some(OffsetReset::Latest),
            (None, _) => None,
        };
        if !o.work.is_zero() {
            // Slow work: fetches of the poll size, so that records spread over the threads
            // rather than going a producer batch (hundreds) at a time to the first to ask.
            c.share_acquire_mode = consumer::ShareAcquireMode::RecordLimit;
            c.max_poll_records = SHARE_WORK_POLL_RECORDS;
        }
    }
    let ledger = ledger.clone();
    let work = o.work;
    ConsumerPool::start_cloned(c, move |r: &consumer::ConsumedRecord| {
        if !work.is_zero() {
            thread::sleep(work);
        }
        ledger.consumed(r.value.as_deref(), now_us());
        Ok::<(), String>(())
    })
    .map_err(pool_error)
}

/// A consumer error at the start, as a usage error (exit 2).
pub(super) fn pool_error(e: consumer::Error) -> UsageError {
    match e {
        consumer::Error::Client(c) => c.into(),
        other => UsageError(other.to_string()),
    }
}

/// The consumer settings of the flags (and of --config's consumer keys), reading `topic`.
pub(super) fn consumer_config(
    connection: &Connection,
    o: &Group,
    client: &client::ClientConfig,
    topic: &str,
) -> Result<ConsumerConfig, UsageError> {
    let group = o.name();
    let mut c = ConsumerConfig::new("localhost:9092", group, &[topic]);
    if let Some(path) = &connection.config {
        // The consumer keys of --config (isolation.level); the flags below override.
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--config: cannot read {}: {e}", path.display())))?;
        c.apply_properties_str(&text, &path.display().to_string())
            .map_err(|e| UsageError(format!("--config: {e}")))?;
    }
    c.group = group.to_owned();
    c.client = client.clone();
    c.isolation_level = match o.isolation_level {
        Some(IsolationArg::ReadCommitted) => consumer::IsolationLevel::ReadCommitted,
        Some(IsolationArg::ReadUncommitted) => consumer::IsolationLevel::ReadUncommitted,
        None => c.isolation_level,
    };
    c.threads = o.consumers;
    c.group_protocol = match o.group_protocol {
        GroupProtocolArg::Classic => consumer::GroupProtocol::Classic,
        GroupProtocolArg::Consumer => consumer::GroupProtocol::Consumer,
    };
    c.assignor = match o.assignor {
        AssignorArg::Range => consumer::Assignor::Range,
        AssignorArg::Roundrobin => consumer::Assignor::RoundRobin,
        AssignorArg::CooperativeSticky => consumer::Assignor::CooperativeSticky,
    };
    c.group_instance_id = o.group_instance_id.clone();
    c.heartbeat_interval = Duration::from_secs(1).min(o.session_timeout / 3);
    c.session_timeout = o.session_timeout;
    c.max_poll_interval = Duration::from_secs(30);
    c.commit_interval = Duration::from_secs(1);
    c.fetch.partition_max_bytes = FETCH_PARTITION_BYTES;
    c.fetch.max_bytes = FETCH_BYTES;
    Ok(c)
}

/// Wait (at most 60 s) until every partition has an owner and a position, so that no
/// event of the run is sent before a consumer would read it. A share group has no
/// positions in its members: its state for a partition (the start offset, taken at the
/// first fetch from it) is asked of the broker until every partition has one.
fn await_assignment(
    pool: &ConsumerPool,
    partitions: usize,
    shutdown: &Shutdown,
    topic: &str,
    share_group: Option<&str>,
    client: &client::ClientConfig,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut share = share_group.map(|g| (g.to_owned(), Cluster::connect(client.clone()).ok()));
    let mut ready = || match &mut share {
        None => pool.stats().partitions.len() >= partitions,
        Some((group, Some(cluster))) => cluster
            .share_group_offsets(group, Duration::from_secs(2))
            .is_ok_and(|rows| {
                rows.iter()
                    .filter(|r| r.topic == topic && r.start_offset.is_some())
                    .count()
                    >= partitions
            }),
        Some((_, None)) => false,
    };
    while !ready() {
        if Instant::now() > deadline || shutdown.is_triggered() {
            log::warn!("not every partition was assigned within 60 s; starting anyway");
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A share group's lag as the broker counts it (DescribeShareGroupOffsets: records it has
/// still to deliver and have acknowledged), asked at most once a second.
pub(super) struct ShareLag {
    cluster: Option<Cluster>,
    client: client::ClientConfig,
    group: String,
    last: i64,
}

impl ShareLag {
    /// For --share-group, else `None`.
    fn new(share_group: Option<&str>, client: &client::ClientConfig) -> Option<ShareLag> {
        let group = share_group?.to_owned();
        Some(ShareLag {
            cluster: None,
            client: client.clone(),
            group,
            last: 0,
        })
    }

    /// The summed lag of the partitions the group has state for (the last known value
    /// when the broker cannot be asked now).
    fn get(&mut self) -> i64 {
        if self.cluster.is_none() {
            self.cluster = Cluster::connect(self.client.clone()).ok();
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return self.last;
        };
        match cluster.share_group_offsets(&self.group, Duration::from_secs(2)) {
            Ok(rows) => self.last = rows.iter().filter_map(|r| r.lag).sum(),
            Err(e) => log::debug!("share group {}: lag: {e}", self.group),
        }
        self.last
    }
}

fn start_producer(
    s: &Sending,
    job: &Job,
    client: client::ClientConfig,
    ledger: &Arc<Ledger>,
) -> Result<Producer, UsageError> {
    let mut c = producer_config(
        &s.producing,
        &s.transactions,
        job.control.drain_timeout,
        client,
        &job.topic.topic,
    );
    if s.transactions.transactional_id.is_some() {
        // A transaction's events are accounted when it ends (txn.rs): no handler.
        return new_producer(c);
    }
    // Every event's outcome goes to the ledger through one handler, by tag: no closure is
    // boxed per event (that, and its call, were a fifth of the writer thread's time).
    let ledger = ledger.clone();
    c.on_delivery = Some(OnDelivery::new(move |tag, outcome| {
        let (device, seq) = untag(tag);
        match outcome {
            Ok(_) => ledger.acked(device, seq),
            Err(_) => ledger.failed(device, seq),
        }
    }));
    new_producer(c)
}

/// The producer settings of the flags, writing to `topic` (with --transactional-id, under
/// that id), closing within `drain_timeout`.
pub(super) fn producer_config(
    o: &Producing,
    t: &Transactional,
    drain_timeout: Duration,
    client: client::ClientConfig,
    topic: &str,
) -> ProducerConfig {
    let mut c = ProducerConfig::new("localhost:9092").topic(topic);
    c.client = client;
    c.acks = o.acks;
    c.idempotence = o.idempotence.map(|v| v == OnOff::On);
    c.compression = o.compression;
    c.linger = o.linger;
    c.batch_bytes = o.batch_bytes;
    c.balancer = o.balancer.parse().expect("validated");
    c.close_timeout = drain_timeout;
    c.queue_capacity = QUEUE_RECORDS;
    c.buffer_bytes = BUFFER_BYTES;
    c.transactional_id = t.transactional_id.clone();
    c.transaction_timeout = t.transaction_timeout;
    c
}

pub(super) fn new_producer(c: ProducerConfig) -> Result<Producer, UsageError> {
    Producer::new(c).map_err(|e| match e {
        producer::Error::Client(c) => c.into(),
        other => UsageError(other.to_string()),
    })
}

/// The producer threads.
#[derive(Default)]
struct Generators {
    threads: Vec<JoinHandle<()>>,
    /// Threads that have stopped (the --count budget spent, the flag, the producer closed).
    finished: Arc<AtomicUsize>,
}

impl Generators {
    /// One thread per `devices` entry, sending through `gate` if the run is transactional.
    fn start(
        o: &Generating,
        count: Option<u64>,
        p: &Producer,
        devices: &[Arc<Devices>],
        gate: Option<Arc<Gate>>,
        run: u64,
        shutdown: &Shutdown,
    ) -> Self {
        let keys: Arc<[Bytes]> = event::device_keys(o.devices).into();
        let budget = Arc::new(AtomicU64::new(count.unwrap_or(u64::MAX)));
        let finished = Arc::new(AtomicUsize::new(0));
        let threads = devices
            .iter()
            .enumerate()
            .map(|(t, mine)| {
                let g = Generator {
                    mine: mine.clone(),
                    keys: keys.clone(),
                    producer: p.clone(),
                    gate: gate.clone(),
                    shutdown: shutdown.clone(),
                    run,
                    budget: budget.clone(),
                    rate: o.rate,
                    payload_bytes: o.payload_bytes,
                };
                let finished = finished.clone();
                thread::Builder::new()
                    .name(format!("kpipe-gen-{t}"))
                    .spawn(move || {
                        g.run();
                        finished.fetch_add(1, Ordering::SeqCst);
                    })
                    .expect("spawn a producer thread")
            })
            .collect();
        Generators { threads, finished }
    }

    /// Whether every thread has stopped.
    fn all_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst) == self.threads.len()
    }

    fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One producer thread: its own devices (device d belongs to thread d % threads), so each
/// device's sequence comes from one thread, in order.
struct Generator {
    mine: Arc<Devices>,
    keys: Arc<[Bytes]>,
    producer: Producer,
    /// With --transactional-id: held (read side) around each send, so that every event is
    /// sent inside an open transaction (see txn.rs).
    gate: Option<Arc<Gate>>,
    shutdown: Shutdown,
    /// The run's id, written in its events.
    run: u64,
    /// Events left to send under --count (`u64::MAX` without it).
    budget: Arc<AtomicU64>,
    rate: u64,
    payload_bytes: usize,
}

/// What became of one send.
enum Sent {
    /// The producer took it.
    Yes,
    /// Not taken, and the committer waits for the gate: let go of it, then build the event
    /// again (an abort may have wound the device back).
    Again,
    /// Not taken, and no more will be: the producer closed or the run is stopping.
    Stop,
}

impl Generator {
    /// Take up to [`COUNT_CHUNK`] events from the budget; 0 when it is spent.
    fn claim(&self) -> u64 {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left.saturating_sub(COUNT_CHUNK))
            })
            .map_or(0, |left| left.min(COUNT_CHUNK))
    }

    fn run(self) {
        let interval = (self.rate > 0).then(|| Duration::from_secs_f64(1.0 / self.rate as f64));
        let (start, start_us) = (Instant::now(), now_us());
        let mine = &*self.mine;
        let mut chunk = BytesMut::new();
        let (mut n, mut allowed) = (0u64, 0u64);
        let run = self.run;
        // The gate's read side, kept across sends until the committer wants it.
        let mut held: Option<RwLockReadGuard<'_, ()>> = None;
        while !self.shutdown.is_triggered() {
            if allowed == 0 {
                allowed = self.claim();
                if allowed == 0 {
                    return;
                }
            }
            if let Some(every) = interval {
                // Scheduled send time: no coordinated omission when we fall behind.
                let due = start + every.mul_f64(n as f64);
                let now = Instant::now();
                if due > now {
                    held = None; // never sleep holding up a commit
                    thread::sleep((due - now).min(Duration::from_millis(100)));
                    if Instant::now() < due {
                        continue;
                    }
                }
            }
            if let Some(gate) = &self.gate {
                if held.is_none() {
                    held = Some(gate.enter());
                }
                if gate.is_closed() {
                    return;
                }
            }
            let i = (n % mine.ids.len() as u64) as usize;
            // Read under the gate: an abort winds the device back.
            let (device, seq) = (mine.ids[i], mine.next[i].load(Ordering::Relaxed));
            let event = Event {
                run,
                device,
                seq,
                // With --rate, latency counts from the scheduled send time, so a producer
                // that falls behind shows up in the latency instead of hiding it. Without a
                // rate, a send is due the moment it happens.
                sent_at_us: match interval {
                    Some(every) => start_us + (every.as_secs_f64() * 1e6 * n as f64) as u64,
                    None => now_us(),
                },
            };
            let mut record = ProducerRecord::new(event.encode_into(self.payload_bytes, &mut chunk));
            record.key = Some(self.keys[device as usize].clone());
            match self.send(record, device, seq) {
                Sent::Yes => {
                    mine.next[i].store(seq + 1, Ordering::Relaxed);
                    n += 1;
                    allowed -= 1;
                }
                Sent::Again => {}
                Sent::Stop => return,
            }
            if self.gate.as_ref().is_some_and(|g| g.is_wanted()) {
                held = None;
            }
        }
    }

    /// Send one event, waiting out a full queue (backpressure: the same event is offered
    /// again, so no sequence number is skipped).
    fn send(&self, mut record: ProducerRecord, device: u32, seq: u64) -> Sent {
        loop {
            // A transaction's events are accounted by range (txn.rs), not one by one.
            let sent = match self.gate {
                Some(_) => self.producer.send(record),
                None => self.producer.send_tagged(record, tag(device, seq)),
            };
            match sent {
                Ok(()) => return Sent::Yes,
                Err(SendError::QueueFull(_))
                    if self.gate.as_ref().is_some_and(|g| g.is_wanted()) =>
                {
                    return Sent::Again
                }
                Err(SendError::QueueFull(r)) if !self.shutdown.is_triggered() => record = *r,
                Err(SendError::QueueFull(_)) | Err(SendError::Closed(_)) => return Sent::Stop,
                Err(e) => {
                    // NoTransaction cannot happen under the gate; if it did, the event was
                    // not taken and its number is not used: nothing is lost, but say so.
                    log::error!("an event cannot be sent: {e}");
                    return Sent::Stop;
                }
            }
        }
    }
}

/// Show stats once a second until something stops the run; returns what stopped it.
#[allow(clippy::too_many_arguments)]
fn watch(
    mode: Mode,
    o: &Control,
    shutdown: &Shutdown,
    started: Instant,
    ledger: &Ledger,
    producer: Option<&Producer>,
    txn: Option<&Book>,
    pool: Option<&ConsumerPool>,
    generators: &Generators,
    mut share_lag: Option<ShareLag>,
    metrics: Option<&Endpoint>,
) -> String {
    let mut out = Output::new(o.stats_json.as_deref());
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    loop {
        if shutdown.is_triggered() {
            return if shutdown.signal_count() > 0 {
                "signal".into()
            } else {
                "shutdown flag".into()
            };
        }
        if let Some(why) = txn.and_then(Book::stopped) {
            eprintln!("kpipe: transactions cannot go on: {why}");
            return "transaction error".into();
        }
        if o.duration.is_some_and(|d| started.elapsed() >= d) {
            return "--duration".into();
        }
        if let Some(limit) = o.count {
            let reached = match mode {
                Mode::Consume => ledger.tally().consumed >= limit,
                _ => generators.all_finished(),
            };
            if reached {
                return "--count".into();
            }
        }
        if pool.is_some_and(ConsumerPool::is_finished) {
            return "consumer pool stopped".into();
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let ps = producer.map(Producer::stats);
            let cs = pool.map(ConsumerPool::stats);
            if let Some(m) = metrics {
                m.publish(exposition(ps.as_ref(), cs.as_ref()));
            }
            let (ps, cs) = (ps.unwrap_or_default(), cs.unwrap_or_default());
            let consumed = ledger.tally().consumed;
            let (t0, acked0, consumed0) = last;
            let dt = t0.elapsed().as_secs_f64().max(1e-3);
            let latency = ledger.latency();
            // Transactional: acked when its transaction committed.
            let t = txn.map(Book::counts);
            let acked = t.map_or(ps.delivered, |t| t.acked);
            let snap = Snapshot {
                elapsed_secs: started.elapsed().as_secs_f64(),
                produced: ps.accepted,
                acked,
                failed: t.map_or(ps.failed, |t| t.failed),
                aborted: t.map_or(0, |t| t.aborted),
                transactions_committed: t.map_or(0, |t| t.committed_txns),
                transactions_aborted: t.map_or(0, |t| t.aborted_txns),
                consumed,
                produced_per_sec: acked.saturating_sub(acked0) as f64 / dt,
                consumed_per_sec: (consumed - consumed0) as f64 / dt,
                lag: share_lag.as_mut().map_or(cs.lag(), ShareLag::get),
                acknowledged: cs.acknowledged,
                released: cs.released,
                rejected: cs.rejected,
                redelivered: cs.redelivered,
                share: share_lag.is_some(),
                queue_depth: ps.queue_depth,
                rebalances: cs.rebalances,
                assigned_partitions: cs.partitions.len(),
                e2e_p50_ms: latency.quantile(0.5).as_secs_f64() * 1000.0,
                e2e_p99_ms: latency.quantile(0.99).as_secs_f64() * 1000.0,
                errors: ps.errors.values().sum::<u64>() + cs.commit_failures,
                producer_epoch: ps.producer.map(|p| p.epoch),
                epoch_bumps: ps.epoch_bumps,
                resent_batches: ps.retries,
                rss_mib: report::rss_mib().0,
            };
            last = (Instant::now(), acked, consumed);
            out.show(&snap);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Commit the last transaction (with --transactional-id) and close the producer, together
/// within --drain-timeout (a second Ctrl-C abandons what is left), and put its summary in
/// the report.
fn drain_producer(
    p: Producer,
    committer: Option<Committer>,
    book: Option<&Book>,
    drain_timeout: Duration,
    transactional_id: Option<String>,
    shutdown: &Shutdown,
    report: &mut Report,
) {
    let drained = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (p, shutdown, drained) = (p.clone(), shutdown.clone(), drained.clone());
        thread::Builder::new()
            .name("kpipe-drain-watch".into())
            .spawn(move || {
                while !drained.load(Ordering::SeqCst) {
                    if shutdown.signal_count() >= 2 {
                        eprintln!("kpipe: second signal: abandoning the drain");
                        p.abort();
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
    };
    let deadline = Instant::now() + drain_timeout;
    let last = committer.map(|c| c.finish(deadline));
    let closed = p.close(deadline.saturating_duration_since(Instant::now()));
    drained.store(true, Ordering::SeqCst);
    match watcher {
        Ok(w) => {
            let _ = w.join();
        }
        Err(e) => log::warn!("no drain watcher (a second Ctrl-C will not cut the drain): {e}"),
    }
    if let Some(last) = last {
        last.settle_after_close(closed.as_ref().ok());
    }
    if let Some(book) = book {
        // Events count by how their transaction ended, not by their acknowledgements: an
        // event acknowledged in a transaction that aborted was not written.
        let t = book.counts();
        report.acked = t.acked;
        report.aborted = t.aborted;
        report.failed = t.failed;
        report.failures = book.failures();
        report.transactions_committed = t.committed_txns;
        report.transactions_aborted = t.aborted_txns;
        report.abort_reasons = book.abort_reasons();
        report.transaction_error = book.stopped();
        report.transactional_id = transactional_id;
    }
    match closed {
        Ok(s) => {
            report.produced = s.accepted;
            if book.is_none() {
                report.acked = s.delivered;
                report.failed = s.failed;
                report.failures = s.failures;
                report.not_attempted = s.not_attempted;
            }
            report.producer_id = s.producer.map(|p| p.id);
            report.producer_epoch = s.producer.map(|p| p.epoch);
            report.epoch_bumps = s.epoch_bumps;
            report.resent_batches = s.resent_batches;
        }
        Err(e) => {
            report.failures.insert(e.to_string(), 1);
            report.failed += 1;
        }
    }
}

/// The ledger's counts, the latency, the rate and the memory into the report.
fn finish(report: &mut Report, mode: Mode, ledger: &Ledger, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    let t = ledger.tally();
    report.consumed = t.consumed;
    report.foreign = t.foreign;
    report.duplicates = t.duplicates;
    report.sequence_gaps = t.gaps;
    report.outside_window = t.outside_window;
    report.missing = t.missing;
    report.latency_ms = Latency::of(ledger.latency());
    report.elapsed_secs = elapsed;
    let count = if mode == Mode::Consume {
        report.consumed
    } else {
        report.acked
    };
    report.records_per_sec = if elapsed > 0.0 {
        count as f64 / elapsed
    } else {
        0.0
    };
    (report.rss_mib, report.peak_rss_mib) = report::rss_mib();
}
