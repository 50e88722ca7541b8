//! The `kpipe` command: flags → configs → run → summary and exit code.
//!
//! `kpipe run` (the default) is the Go design's `main.go` done with threads: `--threads`
//! producer threads generate telemetry events through one shared [`Producer`], a pool of
//! `--consumers` threads reads them back in a consumer group and checks them, and one
//! [`Shutdown`] flag (Ctrl-C, SIGTERM, `--duration` or `--count`) drains everything.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use kpipe::client::{self, Acks, Cluster, Compression, NewTopic};
use kpipe::consumer::{self, ConsumerConfig, ConsumerPool, OffsetReset, OnHandlerError};
use kpipe::producer::{self, Balancer, Producer, ProducerConfig, ProducerRecord};
use kpipe::shutdown::Shutdown;
use kpipe::stats::Histogram;

/// A thread-based Kafka telemetry pipeline: producer threads, one writer, a consumer pool.
#[derive(Debug, Parser)]
#[command(
    name = "kpipe",
    version,
    about,
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    /// What to run (default: run).
    #[command(subcommand)]
    pub mode: Option<Mode>,
    /// Settings shared by every mode.
    #[command(flatten)]
    pub opts: Opts,
}

/// The modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Mode {
    /// Produce telemetry events and consume them back, checking each (the default).
    Run,
    /// Only produce telemetry events.
    Produce,
    /// Only consume, in the consumer group.
    Consume,
}

/// Every flag, with its default.
#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Bootstrap brokers, host:port, comma-separated [default: bootstrap.servers of
    /// --config, else localhost:9092].
    #[arg(long, global = true, env = "KPIPE_BROKERS")]
    pub brokers: Option<String>,
    /// A Java client properties file (bootstrap.servers, security.protocol, sasl.mechanism,
    /// sasl.jaas.config, ssl.* with PEM stores, client.id), as the Java tools take with
    /// --command-config. Flags given as well override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: that of
    /// --config, else PLAINTEXT].
    #[arg(long, global = true, value_name = "PROTOCOL")]
    pub security_protocol: Option<client::SecurityProtocol>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    #[arg(long, global = true, value_name = "MECHANISM")]
    pub sasl_mechanism: Option<client::SaslMechanism>,
    /// SASL user (PLAIN, SCRAM). The password is read from the environment variable
    /// KPIPE_SASL_PASSWORD or from --sasl-password-file, never from a flag (flags show in ps).
    #[arg(long, global = true, value_name = "USER")]
    pub sasl_username: Option<String>,
    /// A file holding the SASL password (its first line).
    #[arg(long, global = true, value_name = "FILE")]
    pub sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: a file holding the token, read again at every (re)authentication. The
    /// token may also come from the environment variable KPIPE_SASL_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub sasl_token_file: Option<PathBuf>,
    /// TLS: the CA certificate(s) to trust, PEM [default: the system's roots].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: the client certificate chain, PEM.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: the client certificate's private key, PEM (unencrypted).
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// TLS: how the broker's certificate is checked: full (chain and host name),
    /// no-hostname, or off (accept anything; for experiments only) [default: full, or
    /// as --config says].
    #[arg(long, global = true, value_name = "CHECK")]
    pub tls_verify: Option<TlsVerifyArg>,
    /// Topic to produce to and consume from.
    #[arg(long, global = true, default_value = "telemetry-events")]
    pub topic: String,
    /// Partitions of the topic when kpipe creates it.
    #[arg(long, global = true, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of the topic when kpipe creates it.
    #[arg(long, global = true, default_value_t = 1)]
    pub replication: i16,
    /// Do not create the topic when it is missing (a missing topic is then an error).
    #[arg(long, global = true)]
    pub no_create_topic: bool,
    /// Consumer group.
    #[arg(long, global = true, default_value = "analytics-service-group")]
    pub group: String,
    /// Group protocol: classic (JoinGroup/SyncGroup, the default) or consumer (KIP-848,
    /// Kafka 4.0+: the coordinator assigns, and only moved partitions stop).
    #[arg(long, global = true, value_enum, default_value = "classic")]
    pub group_protocol: GroupProtocolArg,
    /// Assignor of the classic protocol: range, roundrobin, or cooperative-sticky (members
    /// keep what they own through a rebalance).
    #[arg(long, global = true, value_enum, default_value = "range")]
    pub assignor: AssignorArg,
    /// Static membership: consumer thread i joins as ID-i, and gets its partitions back
    /// without a rebalance when restarted within the session timeout.
    #[arg(long, global = true, value_name = "ID")]
    pub group_instance_id: Option<String>,
    /// Producer threads.
    #[arg(long, global = true, default_value_t = 4)]
    pub threads: usize,
    /// Consumer threads (members of the group).
    #[arg(long, global = true, default_value_t = 2)]
    pub consumers: usize,
    /// Events per second per producer thread; 0 = as fast as possible.
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,
    /// Distinct devices (record keys).
    #[arg(long, global = true, default_value_t = 1000)]
    pub devices: u32,
    /// Pad each event to at least this many bytes.
    #[arg(long, global = true, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Acks: 0, 1 or all.
    #[arg(long, global = true, default_value = "all")]
    pub acks: Acks,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, global = true, default_value = "none")]
    pub compression: Compression,
    /// Idempotent writes (each event written once, in order, whatever the retries): on or
    /// off. Default: on with --acks all, else off.
    #[arg(long, global = true, value_enum)]
    pub idempotence: Option<OnOff>,
    /// How long a batch waits for more events, e.g. 5ms.
    #[arg(long, global = true, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// A partition's batch is sent once this many bytes are queued.
    #[arg(long, global = true, default_value_t = 16 * 1024)]
    pub batch_bytes: usize,
    /// Partition choice for unkeyed records: least-bytes, round-robin, hash (keyed events always hash).
    #[arg(long, global = true, default_value = "least-bytes")]
    pub balancer: String,
    /// Stop after this long, e.g. 30s; without it (and --count) run until Ctrl-C.
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after N events produced (run, produce) or N records consumed (consume).
    #[arg(long, global = true)]
    pub count: Option<u64>,
    /// Bound on the drain after stopping, e.g. 30s.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Leave events sent in the first DURATION of the run (start-up, the group join) out of
    /// the latency figures, e.g. 3s. Every event still counts for loss and duplicates.
    #[arg(long, global = true, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bound on connecting to the brokers, e.g. 5s.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Write one JSON stats snapshot per second to this file (JSON lines).
    #[arg(long, global = true)]
    pub stats_json: Option<PathBuf>,
    /// Write the final summary as one JSON object to this file.
    #[arg(long, global = true)]
    pub summary_json: Option<PathBuf>,
}

/// `--group-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocolArg {
    /// The classic protocol.
    Classic,
    /// The consumer protocol of KIP-848.
    Consumer,
}

/// `--assignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AssignorArg {
    /// Contiguous ranges per topic.
    Range,
    /// Partitions dealt in turn.
    Roundrobin,
    /// Sticky and cooperative (KIP-429).
    CooperativeSticky,
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `--tls-verify` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVerifyArg {
    /// The chain up to a trusted CA, and the host name.
    Full,
    /// The chain, not the host name.
    NoHostname,
    /// Nothing.
    Off,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write durations like 5ms, 2s or 1m"))
}

/// One telemetry event, as JSON on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The run that produced it (so runs sharing a topic do not mix).
    pub run: u64,
    /// Device id; also the record key.
    pub device: String,
    /// Device status.
    pub status: String,
    /// Per-device sequence number, from 0.
    pub seq: u64,
    /// Send time, microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Padding to reach --payload-bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// The final report (also written by --summary-json).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// The mode that ran.
    pub mode: String,
    /// Events produced (accepted by the producer).
    pub produced: u64,
    /// Events acknowledged by the brokers.
    pub acked: u64,
    /// Events that failed.
    pub failed: u64,
    /// Failure reasons and counts.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Events never sent because the drain deadline came first.
    pub not_attempted: u64,
    /// The idempotent producer's id and last epoch (absent without idempotence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<i64>,
    /// Its epoch at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer_epoch: Option<i16>,
    /// Times a partition's sequences restarted under a new epoch.
    pub epoch_bumps: u64,
    /// Batches sent again after a retriable error.
    pub resent_batches: u64,
    /// Records read, ours or not.
    pub consumed: u64,
    /// Records that were not this run's events.
    pub foreign: u64,
    /// This run's events read more than once.
    pub duplicates: u64,
    /// Acked events never consumed (0 when the mode does not consume).
    pub missing: u64,
    /// Events seen with a sequence gap before them (per device, out of order or lost).
    pub sequence_gaps: u64,
    /// Records not yet consumed at the end (high watermark − position, summed).
    pub lag: i64,
    /// End-to-end latency, send to consume, in ms.
    pub latency_ms: Latency,
    /// Events (or records, for consume) per second over the run.
    pub records_per_sec: f64,
    /// Seconds the run took.
    pub elapsed_secs: f64,
    /// Why the run stopped.
    pub stopped_by: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// A user error: exit code 2, one line naming the problem and the fix.
#[derive(Debug)]
pub struct UsageError(pub String);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Which events were acked (producer side) and seen (consumer side), per device.
#[derive(Default)]
struct Device {
    acked: Vec<u64>,
    seen: Vec<u64>,
    next_seq: u64,
    last_seen: Option<u64>,
}

fn set_bit(bits: &mut Vec<u64>, i: u64) -> bool {
    let (w, b) = ((i / 64) as usize, i % 64);
    if bits.len() <= w {
        bits.resize(w + 1, 0);
    }
    let was = bits[w] & (1 << b) != 0;
    bits[w] |= 1 << b;
    was
}

/// Shared accounting of one run.
struct Ledger {
    run: u64,
    devices: Vec<Mutex<Device>>,
    consumed: AtomicU64,
    foreign: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    ours: AtomicU64,
    latency: Histogram,
    /// Events sent before this (µs since the epoch) are left out of `latency` (--warmup).
    latency_from_us: u64,
    /// consume mode: events of any run, by (run, device): seen bits.
    other_runs: Mutex<HashMap<(u64, String), Vec<u64>>>,
}

impl Ledger {
    fn new(run: u64, devices: u32, latency_from_us: u64) -> Self {
        Ledger {
            latency_from_us,
            run,
            devices: (0..devices)
                .map(|_| Mutex::new(Device::default()))
                .collect(),
            consumed: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            ours: AtomicU64::new(0),
            latency: Histogram::default(),
            other_runs: Mutex::new(HashMap::new()),
        }
    }

    fn record_latency(&self, now_us: u64, sent_at_us: u64) {
        if sent_at_us >= self.latency_from_us {
            self.latency
                .record(Duration::from_micros(now_us.saturating_sub(sent_at_us)));
        }
    }

    fn device_index(name: &str) -> Option<u32> {
        name.strip_prefix("device-")?.parse().ok()
    }

    /// Account one consumed record. `any_run`: count every run's events as ours (consume mode).
    fn consume(&self, value: Option<&[u8]>, any_run: bool) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
        let event: Option<Event> = value.and_then(|v| serde_json::from_slice(v).ok());
        let Some(event) = event else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = now_us();
        if event.run != self.run
            || Self::device_index(&event.device).is_none_or(|d| d as usize >= self.devices.len())
        {
            if !any_run {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.ours.fetch_add(1, Ordering::Relaxed);
            self.record_latency(now, event.sent_at_us);
            let mut runs = self.other_runs.lock().unwrap_or_else(|p| p.into_inner());
            if set_bit(
                runs.entry((event.run, event.device)).or_default(),
                event.seq,
            ) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.ours.fetch_add(1, Ordering::Relaxed);
        self.record_latency(now, event.sent_at_us);
        let idx = Self::device_index(&event.device).expect("checked") as usize;
        let mut d = self.devices[idx].lock().unwrap_or_else(|p| p.into_inner());
        if set_bit(&mut d.seen, event.seq) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else if d
            .last_seen
            .map_or(event.seq != 0, |last| event.seq != last + 1)
        {
            self.gaps.fetch_add(1, Ordering::Relaxed);
        }
        d.last_seen = Some(event.seq);
    }

    fn missing(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| {
                let d = d.lock().unwrap_or_else(|p| p.into_inner());
                d.acked
                    .iter()
                    .enumerate()
                    .map(|(w, bits)| {
                        let seen = d.seen.get(w).copied().unwrap_or(0);
                        (bits & !seen).count_ones() as u64
                    })
                    .sum::<u64>()
            })
            .sum()
    }
}

/// Run the command; returns the process exit code.
pub fn main(cli: Cli) -> u8 {
    let mode = cli.mode.unwrap_or(Mode::Run);
    match run(mode, &cli.opts) {
        Ok(report) => {
            let ok = report.missing == 0 && report.failed == 0;
            if let Some(path) = &cli.opts.summary_json {
                if let Err(e) = write_json(path, &report) {
                    eprintln!("kpipe: cannot write {}: {e}", path.display());
                    return 1;
                }
            }
            print_report(&report);
            if ok {
                0
            } else {
                1
            }
        }
        Err(UsageError(msg)) => {
            eprintln!("kpipe: {msg}");
            2
        }
    }
}

fn write_json<T: Serialize>(path: &PathBuf, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

fn print_report(r: &Report) {
    if std::io::stderr().is_terminal() {
        eprintln!(); // end the live status line
    }
    eprintln!(
        "kpipe {}: produced {} acked {} failed {} not-attempted {} | consumed {} (foreign {}, duplicates {}, gaps {}) missing {} lag {} | e2e p50 {:.1} ms p99 {:.1} ms p999 {:.1} ms | {:.0} records/s over {:.1} s ({})",
        r.mode, r.produced, r.acked, r.failed, r.not_attempted, r.consumed, r.foreign, r.duplicates, r.sequence_gaps,
        r.missing, r.lag, r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999, r.records_per_sec, r.elapsed_secs, r.stopped_by
    );
    if let (Some(id), Some(epoch)) = (r.producer_id, r.producer_epoch) {
        eprintln!(
            "kpipe: idempotent producer {id} epoch {epoch}: {} epoch bumps, {} batches resent",
            r.epoch_bumps, r.resent_batches
        );
    } else if r.resent_batches > 0 {
        eprintln!(
            "kpipe: {} batches resent without idempotence (duplicates possible)",
            r.resent_batches
        );
    }
    if !r.failures.is_empty() {
        eprintln!("kpipe: failures: {:?}", r.failures);
    }
}

fn validate(mode: Mode, o: &Opts) -> Result<(), UsageError> {
    let bad = |m: String| Err(UsageError(m));
    if matches!(mode, Mode::Run | Mode::Produce) && o.threads == 0 {
        return bad("--threads must be at least 1 (producer threads)".into());
    }
    if matches!(mode, Mode::Run | Mode::Consume) && o.consumers == 0 {
        return bad("--consumers must be at least 1".into());
    }
    if o.devices == 0 {
        return bad("--devices must be at least 1".into());
    }
    if o.partitions < 1 || o.replication < 1 {
        return bad("--partitions and --replication must be at least 1".into());
    }
    if o.count == Some(0) {
        return bad("--count must be at least 1".into());
    }
    if let Err(e) = o.balancer.parse::<Balancer>() {
        return bad(format!("--balancer: {e}"));
    }
    Ok(())
}

/// The client config from --config, then the flags over it, then secrets from the
/// environment or files; validated.
fn client_config(o: &Opts) -> Result<client::ClientConfig, UsageError> {
    let bad = |m: String| UsageError(m);
    let mut c = match &o.config {
        Some(path) => {
            let mut c = client::ClientConfig::from_properties(path)
                .map_err(|e| bad(format!("--config: {e}")))?;
            if c.connection.client_id == client::ConnectionConfig::default().client_id {
                c.connection.client_id = "kpipe-cli".into();
            }
            c
        }
        None => {
            let mut c = client::ClientConfig::new(["localhost:9092"]);
            c.connection.client_id = "kpipe-cli".into();
            c
        }
    };
    if let Some(brokers) = &o.brokers {
        c.bootstrap = client::ClientConfig::new([brokers]).bootstrap;
    }
    c.connection.connect_timeout = o.connect_timeout;
    let sec = &mut c.security;
    if let Some(p) = o.security_protocol {
        sec.protocol = p;
    }
    let file = |p: &PathBuf| client::Pem::File(p.clone());
    if let Some(ca) = &o.tls_ca {
        sec.tls.ca = Some(file(ca));
    }
    if let Some(cert) = &o.tls_cert {
        sec.tls.client_cert = Some(file(cert));
    }
    if let Some(key) = &o.tls_key {
        sec.tls.client_key = Some(file(key));
    }
    if let Some(v) = o.tls_verify {
        sec.tls.verify = match v {
            TlsVerifyArg::Full => client::TlsVerify::Full,
            TlsVerifyArg::NoHostname => client::TlsVerify::NoHostname,
            TlsVerifyArg::Off => client::TlsVerify::Insecure,
        };
    }
    let mechanism = o
        .sasl_mechanism
        .or_else(|| sec.sasl.as_ref().map(client::Sasl::mechanism));
    let flags_give_sasl = o.sasl_mechanism.is_some()
        || o.sasl_username.is_some()
        || o.sasl_password_file.is_some()
        || o.sasl_token_file.is_some();
    if flags_give_sasl {
        let Some(mechanism) = mechanism else {
            return Err(bad("--sasl-username and the other SASL flags need --sasl-mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)".into()));
        };
        sec.sasl = Some(sasl_from_flags(o, mechanism, sec.sasl.take())?);
    }
    if let Err(e) = c.validate() {
        return Err(bad(match e {
            client::Error::Config {
                field: "bootstrap", ..
            } => format!("--brokers: {e}"),
            other => other.to_string(),
        }));
    }
    Ok(c)
}

/// SASL credentials from the flags, the environment and secret files, filling in from
/// `from_file` (the --config file's) what the flags leave out.
fn sasl_from_flags(
    o: &Opts,
    mechanism: client::SaslMechanism,
    from_file: Option<client::Sasl>,
) -> Result<client::Sasl, UsageError> {
    let bad = |m: String| UsageError(m);
    let read_secret = |path: &PathBuf, what: &str| -> Result<client::Secret, UsageError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ))
        })?;
        let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if first.is_empty() {
            return Err(bad(format!("the {what} file {} is empty", path.display())));
        }
        Ok(client::Secret::new(first))
    };
    if mechanism == client::SaslMechanism::OAuthBearer {
        if let Some(path) = &o.sasl_token_file {
            return Ok(client::Sasl::oauthbearer(client::TokenFile(path.clone())));
        }
        if let Ok(token) = std::env::var("KPIPE_SASL_TOKEN") {
            if !token.trim().is_empty() {
                let token = client::Secret::new(token.trim());
                return Ok(client::Sasl::oauthbearer(move || Ok(token.clone())));
            }
        }
        return match from_file {
            Some(s) if s.mechanism() == mechanism => Ok(s),
            _ => Err(bad("OAUTHBEARER needs a token: --sasl-token-file FILE, or the environment variable KPIPE_SASL_TOKEN".into())),
        };
    }
    let (file_user, file_password) = match &from_file {
        Some(client::Sasl::Plain { username, password })
        | Some(client::Sasl::Scram {
            username, password, ..
        }) => (Some(username.clone()), Some(password.clone())),
        _ => (None, None),
    };
    let Some(username) = o.sasl_username.clone().or(file_user) else {
        return Err(bad(format!(
            "{mechanism} needs a user: --sasl-username USER"
        )));
    };
    let password = match (&o.sasl_password_file, std::env::var("KPIPE_SASL_PASSWORD")) {
        (Some(path), _) => read_secret(path, "password")?,
        (None, Ok(p)) if !p.is_empty() => client::Secret::new(p),
        _ => match file_password {
            Some(p) => p,
            None => {
                return Err(bad(format!(
                    "{mechanism} for user {username:?} needs a password: set the environment variable KPIPE_SASL_PASSWORD or give --sasl-password-file FILE"
                )))
            }
        },
    };
    client::Sasl::with_password(mechanism, username, password).map_err(bad)
}

fn usage_from_client(e: client::Error) -> UsageError {
    match e {
        client::Error::Connect { .. }
        | client::Error::NoBrokerReachable { .. }
        | client::Error::Timeout { .. } => UsageError(format!("{e}")),
        other => UsageError(format!("{other}")),
    }
}

fn run(mode: Mode, o: &Opts) -> Result<Report, UsageError> {
    validate(mode, o)?;
    let client = client_config(o)?;
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        log::warn!("cannot catch Ctrl-C/SIGTERM: {e}");
    }
    // Connect, and make sure the topic exists (or say how to get it).
    let mut cluster = Cluster::connect(client.clone()).map_err(usage_from_client)?;
    match cluster.topic(&o.topic) {
        Ok(_) => {}
        Err(client::Error::UnknownTopic { .. }) if o.no_create_topic || mode == Mode::Consume => {
            return Err(UsageError(format!(
                "topic {:?} does not exist; create it (drop --no-create-topic, or run `kpipe produce` first)",
                o.topic
            )))
        }
        Err(client::Error::UnknownTopic { .. }) => {
            let t = NewTopic::new(&o.topic, o.partitions, o.replication);
            match cluster.create_topic(&t, Duration::from_secs(30)) {
                Ok(()) => log::info!("created topic {} ({} partitions)", o.topic, o.partitions),
                Err(e) if client::is_already_exists(&e) => {}
                Err(e) => return Err(UsageError(format!("cannot create topic {:?}: {e}", o.topic))),
            }
        }
        Err(e) => return Err(usage_from_client(e)),
    }
    let partitions = cluster
        .topic(&o.topic)
        .map_err(usage_from_client)?
        .partitions
        .len();
    drop(cluster);

    let run_id = now_us();
    let ledger = Arc::new(Ledger::new(
        run_id,
        o.devices,
        run_id + o.warmup.as_micros() as u64,
    ));
    let started = Instant::now();

    // Consumers first, so that they are in place before the first event.
    let pool = if matches!(mode, Mode::Run | Mode::Consume) {
        let mut c = ConsumerConfig::new("localhost:9092", &o.group, &[o.topic.as_str()]);
        c.client = client.clone();
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
        c.offset_reset = if mode == Mode::Consume {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        };
        c.on_error = OnHandlerError::Skip;
        c.heartbeat_interval = Duration::from_secs(1);
        c.session_timeout = Duration::from_secs(10);
        c.max_poll_interval = Duration::from_secs(30);
        c.commit_interval = Duration::from_secs(1);
        let any_run = mode == Mode::Consume;
        let l = ledger.clone();
        let pool = ConsumerPool::start_cloned(c, move |r: &consumer::ConsumedRecord| {
            l.consume(r.value.as_deref(), any_run);
            Ok::<(), String>(())
        })
        .map_err(|e| match e {
            consumer::Error::Client(c) => usage_from_client(c),
            other => UsageError(other.to_string()),
        })?;
        if mode == Mode::Run {
            // Wait until every partition has an owner and a position, so no event is missed.
            let deadline = Instant::now() + Duration::from_secs(60);
            while pool.stats().partitions.len() < partitions {
                if Instant::now() > deadline || shutdown.is_triggered() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Some(pool)
    } else {
        None
    };

    let producer = if matches!(mode, Mode::Run | Mode::Produce) {
        let mut c = ProducerConfig::new("localhost:9092").topic(&o.topic);
        c.client = client.clone();
        c.acks = o.acks;
        c.idempotence = o.idempotence.map(|v| v == OnOff::On);
        c.compression = o.compression;
        c.linger = o.linger;
        c.batch_bytes = o.batch_bytes.max(1);
        c.max_request_bytes = c.max_request_bytes.max(c.batch_bytes);
        c.buffer_bytes = c.buffer_bytes.max(c.batch_bytes);
        c.balancer = o.balancer.parse().expect("validated");
        c.close_timeout = o.drain_timeout;
        Some(Producer::new(c).map_err(|e| match e {
            producer::Error::Client(c) => usage_from_client(c),
            other => UsageError(other.to_string()),
        })?)
    } else {
        None
    };

    // Producer threads.
    let produced = Arc::new(AtomicU64::new(0));
    let generators: Vec<_> = match &producer {
        Some(p) => (0..o.threads)
            .map(|t| {
                let (p, shutdown, produced, ledger, o) = (
                    p.clone(),
                    shutdown.clone(),
                    produced.clone(),
                    ledger.clone(),
                    o.clone(),
                );
                thread::Builder::new()
                    .name(format!("kpipe-gen-{t}"))
                    .spawn(move || generate(t, &o, &p, &shutdown, &produced, &ledger))
                    .expect("spawn a producer thread")
            })
            .collect(),
        None => Vec::new(),
    };

    // Watch: stats once a second, stop on the flag, --duration or --count.
    let stopped_by = watch(
        mode,
        o,
        &shutdown,
        started,
        &produced,
        &ledger,
        producer.as_ref(),
        pool.as_ref(),
    );
    shutdown.trigger();
    for g in generators {
        let _ = g.join();
    }

    // Drain: the producer flushes, then consumers catch up to what was acked.
    let mut report = Report {
        mode: format!("{mode:?}").to_lowercase(),
        stopped_by,
        ..Default::default()
    };
    if let Some(p) = producer {
        // A second Ctrl-C cuts the drain short; what is left is reported, not waited for.
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (p, shutdown, drained) = (p.clone(), shutdown.clone(), drained.clone());
            thread::spawn(move || {
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
        let closed = p.close(o.drain_timeout);
        drained.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        match closed {
            Ok(s) => {
                report.produced = s.accepted;
                report.acked = s.delivered;
                report.failed = s.failed;
                report.failures = s.failures;
                report.not_attempted = s.not_attempted;
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
    if let Some(pool) = pool {
        if mode == Mode::Run {
            let deadline = Instant::now() + o.drain_timeout;
            while ledger.missing() > 0 && Instant::now() < deadline && shutdown.signal_count() < 2 {
                thread::sleep(Duration::from_millis(20));
            }
        }
        report.lag = pool.stats().lag();
        pool.close(o.drain_timeout);
    }
    let elapsed = started.elapsed().as_secs_f64();
    report.consumed = ledger.consumed.load(Ordering::Relaxed);
    report.foreign = ledger.foreign.load(Ordering::Relaxed);
    report.duplicates = ledger.duplicates.load(Ordering::Relaxed);
    report.sequence_gaps = ledger.gaps.load(Ordering::Relaxed);
    report.missing = if mode == Mode::Run {
        ledger.missing()
    } else {
        0
    };
    let p = ledger.latency.percentiles();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    report.latency_ms = Latency {
        p50: ms(p.p50),
        p99: ms(p.p99),
        p999: ms(p.p999),
    };
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
    Ok(report)
}

/// One producer thread: its own devices (device d belongs to thread d % threads), so each
/// device's sequence comes from one thread, in order.
fn generate(
    t: usize,
    o: &Opts,
    p: &Producer,
    shutdown: &Shutdown,
    produced: &AtomicU64,
    ledger: &Arc<Ledger>,
) {
    let mine: Vec<u32> = (0..o.devices)
        .filter(|d| *d as usize % o.threads == t)
        .collect();
    if mine.is_empty() {
        return;
    }
    let interval = (o.rate > 0).then(|| Duration::from_secs_f64(1.0 / o.rate as f64));
    let start = Instant::now();
    let start_us = now_us();
    let mut n: u64 = 0;
    let statuses = ["healthy", "degraded", "healthy", "healthy", "offline"];
    while !shutdown.is_triggered() {
        if let Some(limit) = o.count {
            if produced.fetch_add(1, Ordering::SeqCst) >= limit {
                break;
            }
        }
        if let Some(every) = interval {
            // Scheduled send time: no coordinated omission when we fall behind.
            let due = start + every.mul_f64(n as f64);
            let now = Instant::now();
            if due > now {
                thread::sleep((due - now).min(Duration::from_millis(100)));
                if Instant::now() < due {
                    continue;
                }
            }
        }
        let device = mine[(n as usize) % mine.len()];
        let seq = {
            let mut d = ledger.devices[device as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let s = d.next_seq;
            d.next_seq += 1;
            s
        };
        let mut event = Event {
            run: ledger.run,
            device: format!("device-{device}"),
            status: statuses[(seq % 5) as usize].into(),
            seq,
            // With --rate, latency counts from the scheduled send time, so a producer that
            // falls behind shows up in the latency instead of hiding it (no coordinated
            // omission). Without a rate, a send is due the moment it happens.
            sent_at_us: match interval {
                Some(every) => start_us + (every.as_secs_f64() * 1e6 * n as f64) as u64,
                None => now_us(),
            },
            pad: String::new(),
        };
        let mut json = serde_json::to_vec(&event).expect("events serialize");
        if json.len() < o.payload_bytes {
            event.pad = "x".repeat(o.payload_bytes - json.len() - 9);
            json = serde_json::to_vec(&event).expect("events serialize");
        }
        let record = ProducerRecord::new(json).key(event.device.clone());
        let l = ledger.clone();
        let sent = p.send_with_callback(record, move |r| {
            if r.is_ok() {
                let mut d = l.devices[device as usize]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                set_bit(&mut d.acked, seq);
            }
        });
        match sent {
            Ok(()) => {
                if o.count.is_none() {
                    produced.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            Err(producer::SendError::QueueFull(_)) => {
                // Backpressure: the same sequence number is retried, so none is skipped.
                let mut d = ledger.devices[device as usize]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                d.next_seq -= 1;
                if o.count.is_some() {
                    produced.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(_) => break, // closed
        }
    }
}

/// Print stats once a second until something stops the run; returns what stopped it.
#[allow(clippy::too_many_arguments)]
fn watch(
    mode: Mode,
    o: &Opts,
    shutdown: &Shutdown,
    started: Instant,
    produced: &AtomicU64,
    ledger: &Ledger,
    producer: Option<&Producer>,
    pool: Option<&ConsumerPool>,
) -> String {
    let tty = std::io::stderr().is_terminal();
    let mut stats_file = o
        .stats_json
        .as_ref()
        .and_then(|p| match std::fs::File::create(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("kpipe: cannot write {}: {e}", p.display());
                None
            }
        });
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
        if o.duration.is_some_and(|d| started.elapsed() >= d) {
            return "--duration".into();
        }
        if let Some(limit) = o.count {
            let reached = match mode {
                Mode::Consume => ledger.consumed.load(Ordering::Relaxed) >= limit,
                _ => produced.load(Ordering::SeqCst) >= limit,
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
            let ps = producer.map(Producer::stats).unwrap_or_default();
            let cs = pool.map(ConsumerPool::stats).unwrap_or_default();
            let consumed = ledger.consumed.load(Ordering::Relaxed);
            let (t0, p0, c0) = last;
            let dt = t0.elapsed().as_secs_f64().max(1e-3);
            let snap = serde_json::json!({
                "elapsed_secs": started.elapsed().as_secs_f64(),
                "produced": ps.accepted,
                "acked": ps.delivered,
                "failed": ps.failed,
                "consumed": consumed,
                "produced_per_sec": (ps.delivered - p0) as f64 / dt,
                "consumed_per_sec": (consumed - c0) as f64 / dt,
                "lag": cs.lag(),
                "queue_depth": ps.queue_depth,
                "rebalances": cs.rebalances,
                "assigned_partitions": cs.partitions.len(),
                "e2e_p50_ms": ledger.latency.quantile(0.5).as_secs_f64() * 1000.0,
                "e2e_p99_ms": ledger.latency.quantile(0.99).as_secs_f64() * 1000.0,
                "errors": ps.errors.values().sum::<u64>() + cs.commit_failures,
                "producer_epoch": ps.producer.map(|p| p.epoch),
                "epoch_bumps": ps.epoch_bumps,
                "resent_batches": ps.retries,
            });
            last = (Instant::now(), ps.delivered, consumed);
            if let Some(f) = stats_file.as_mut() {
                let _ = writeln!(f, "{snap}");
                let _ = f.flush();
            }
            if tty {
                eprint!(
                    "\r{:>6.0}/s produced {:>6.0}/s consumed  e2e p50 {:.1} ms p99 {:.1} ms  lag {}  queue {}  errors {}   ",
                    snap["produced_per_sec"].as_f64().unwrap_or(0.0),
                    snap["consumed_per_sec"].as_f64().unwrap_or(0.0),
                    snap["e2e_p50_ms"].as_f64().unwrap_or(0.0),
                    snap["e2e_p99_ms"].as_f64().unwrap_or(0.0),
                    cs.lag(),
                    ps.queue_depth,
                    snap["errors"]
                );
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}
