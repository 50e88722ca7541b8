//! The command's flags, in groups ([`Connection`], [`Topic`], [`Creation`], [`Group`],
//! [`Reading`], [`Producing`], [`Transactional`], [`Generating`], [`Warmup`], [`Control`]),
//! each a `#[derive(Args)]` struct that checks its own values; a subcommand flattens the
//! groups it uses, so that it takes, and its `--help` lists, only its own flags. Also the
//! client settings the connection flags make, and [`UsageError`] (exit code 2).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use kpipe::client::{self, Acks, Compression};
use kpipe::producer::Balancer;

use super::event;

/// What the exit code means, for `--help`.
const EXIT_CODES: &str = "Exit codes:
  0  the run ended, nothing failed, and (run) every acknowledged event was consumed
  1  a failure after the start: events failed or missing, a transaction aborted or unable
     to go on (fenced), a file that cannot be written
  2  bad input, found before anything ran: a flag or --config, a broker unreachable at the
     start, a missing topic that kpipe may not create, a share group that does not exist,
     a --metrics-addr that cannot be bound";

/// The largest --payload-bytes: an event must fit the producer's 1 MiB request limit.
const MAX_PAYLOAD_BYTES: usize = 1_000_000;
/// The largest --batch-bytes: a batch must fit a 1 MiB request (and the broker's
/// message.max.bytes, about 1 MiB by default).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// The consumer group of run and consume when --group is not given.
const DEFAULT_GROUP: &str = "analytics-service-group";

/// A thread-based Kafka telemetry pipeline: producer threads, one writer, a consumer pool.
#[derive(Debug, Parser)]
#[command(
    name = "kpipe",
    version,
    about,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `run`, for `kpipe` with no subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands, each with its own flags.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce telemetry events and consume them back, checking each (the default).
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Only produce telemetry events.
    #[command(after_help = EXIT_CODES)]
    Produce(ProduceArgs),
    /// Only consume, in the consumer group (or the share group --share-group).
    #[command(after_help = EXIT_CODES)]
    Consume(ConsumeArgs),
    /// Copy --input-topic to --output-topic in the consumer group --group: at least once,
    /// or exactly once with --transactional-id.
    #[command(after_help = EXIT_CODES)]
    Copy(CopyArgs),
    /// Describe the share group --share-group: its start offset, leader epoch and lag in
    /// each partition, as kafka-share-groups.sh --describe --offsets prints them.
    #[command(after_help = EXIT_CODES)]
    Describe(DescribeArgs),
}

/// What a run does, for the code shared by run, produce and consume (and the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `kpipe run`.
    Run,
    /// `kpipe produce`.
    Produce,
    /// `kpipe consume`.
    Consume,
}

/// `kpipe run`: produce and consume back.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub topic: Topic,
    #[command(flatten)]
    pub creation: Creation,
    #[command(flatten)]
    pub generating: Generating,
    #[command(flatten)]
    pub producing: Producing,
    #[command(flatten)]
    pub transactions: Transactional,
    #[command(flatten)]
    pub group: Group,
    #[command(flatten)]
    pub reading: Reading,
    #[command(flatten)]
    pub warmup: Warmup,
    #[command(flatten)]
    pub control: Control,
}

/// `kpipe produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub topic: Topic,
    #[command(flatten)]
    pub creation: Creation,
    #[command(flatten)]
    pub generating: Generating,
    #[command(flatten)]
    pub producing: Producing,
    #[command(flatten)]
    pub transactions: Transactional,
    #[command(flatten)]
    pub warmup: Warmup,
    #[command(flatten)]
    pub control: Control,
}

/// `kpipe consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub topic: Topic,
    #[command(flatten)]
    pub group: Group,
    #[command(flatten)]
    pub reading: Reading,
    #[command(flatten)]
    pub warmup: Warmup,
    #[command(flatten)]
    pub control: Control,
}

/// `kpipe copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The topic to read.
    #[arg(long, value_name = "TOPIC")]
    pub input_topic: Option<String>,
    /// The topic to write (created with the input's partition count and replication
    /// factor when missing, unless --no-create-topic).
    #[arg(long, value_name = "TOPIC")]
    pub output_topic: Option<String>,
    /// Do not create the output topic when it is missing (a missing topic is then an error).
    #[arg(long)]
    pub no_create_topic: bool,
    /// Records per second per consumer; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[command(flatten)]
    pub group: Group,
    #[command(flatten)]
    pub producing: Producing,
    #[command(flatten)]
    pub transactions: Transactional,
    #[command(flatten)]
    pub control: Control,
}

/// `kpipe describe`.
#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The share group to describe (KIP-932, Kafka 4.2+).
    #[arg(long, value_name = "NAME")]
    pub share_group: Option<String>,
    /// Write what was found as one JSON object to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// Where the brokers are and how to reach them: every subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// Bootstrap brokers, host:port, comma-separated [default: bootstrap.servers of
    /// --config, else localhost:9092].
    #[arg(long, env = "KPIPE_BROKERS")]
    pub brokers: Option<String>,
    /// A Java client properties file (bootstrap.servers, security.protocol, sasl.mechanism,
    /// sasl.jaas.config, ssl.* with PEM stores, client.id), as the Java tools take with
    /// --command-config. Flags given as well override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: that of
    /// --config, else PLAINTEXT].
    #[arg(long, value_name = "PROTOCOL")]
    pub security_protocol: Option<client::SecurityProtocol>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    #[arg(long, value_name = "MECHANISM")]
    pub sasl_mechanism: Option<client::SaslMechanism>,
    /// SASL user (PLAIN, SCRAM). The password is read from the environment variable
    /// KPIPE_SASL_PASSWORD or from --sasl-password-file, never from a flag (flags show in ps).
    #[arg(long, value_name = "USER")]
    pub sasl_username: Option<String>,
    /// A file holding the SASL password (its first line).
    #[arg(long, value_name = "FILE")]
    pub sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: a file holding the token, read again at every (re)authentication. The
    /// token may also come from the environment variable KPIPE_SASL_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub sasl_token_file: Option<PathBuf>,
    /// TLS: the CA certificate(s) to trust, PEM [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: the client certificate chain, PEM.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: the client certificate's private key, PEM (unencrypted).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// TLS: how the broker's certificate is checked: full (chain and host name),
    /// no-hostname, or off (accept anything; for experiments only) [default: full, or
    /// as --config says].
    #[arg(long, value_name = "CHECK")]
    pub tls_verify: Option<TlsVerifyArg>,
    /// Bound on connecting to the brokers, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// The topic of run, produce and consume.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Topic")]
pub struct Topic {
    /// Topic to produce to and consume from.
    #[arg(long, default_value = "telemetry-events")]
    pub topic: String,
}

/// How run and produce create the topic when it is missing.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Topic")]
pub struct Creation {
    /// Partitions of the topic when kpipe creates it.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of the topic when kpipe creates it.
    #[arg(long, default_value_t = 1)]
    pub replication: i16,
    /// Do not create the topic when it is missing (a missing topic is then an error).
    #[arg(long)]
    pub no_create_topic: bool,
}

/// The consumer group and its members: run, consume and copy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Consumer group")]
pub struct Group {
    /// Consumer group (copy needs it given) [default: analytics-service-group].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Consumer threads (members of the group).
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Classic group protocol: a member that sends no heartbeat for this long is dropped
    /// from the group and its partitions move (the broker allows 6s to 30m by default).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Group protocol: classic (JoinGroup/SyncGroup, the default) or consumer (KIP-848,
    /// Kafka 4.0+: the coordinator assigns, and only moved partitions stop).
    #[arg(long, value_enum, default_value = "classic")]
    pub group_protocol: GroupProtocolArg,
    /// Assignor of the classic protocol: range, roundrobin, or cooperative-sticky (members
    /// keep what they own through a rebalance).
    #[arg(long, value_enum, default_value = "range")]
    pub assignor: AssignorArg,
    /// Static membership: consumer thread i joins as ID-i, and gets its partitions back
    /// without a rebalance when restarted within the session timeout.
    #[arg(long, value_name = "ID")]
    pub group_instance_id: Option<String>,
    /// What consumers read of transactions: read_committed (only committed transactions'
    /// records, up to the last stable offset) or read_uncommitted (everything, aborted
    /// transactions included) [default: isolation.level of --config, else read_committed].
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub isolation_level: Option<IsolationArg>,
}

/// What run and consume do with what they read: a share group instead of the consumer
/// group, and simulated work.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Consumer group")]
pub struct Reading {
    /// Share group (KIP-932, Kafka 4.2+): read in this share group instead of the consumer
    /// group --group, so the --consumers threads all get records whatever the partition
    /// count, each record acknowledged on its own.
    #[arg(long, value_name = "NAME")]
    pub share_group: Option<String>,
    /// With --share-group: where the share group starts reading a partition it has no state
    /// for yet, set on the group (its share.auto.offset.reset config): earliest or latest.
    /// A new share group otherwise starts at the latest record (Kafka's default), so it
    /// sees nothing written before it [default: earliest for consume, as consume reads a
    /// consumer group from the earliest record; for run, the group's own setting].
    #[arg(long, value_enum, value_name = "WHERE")]
    pub share_auto_offset_reset: Option<ResetArg>,
    /// Simulated handler time per record, e.g. 2ms (each consumer thread sleeps this long
    /// on every record), to see how a consumer group and a share group spread slow work
    /// over --consumers threads.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub work: Duration,
}

/// The producer's settings: run, produce and copy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Producer")]
pub struct Producing {
    /// Acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: Compression,
    /// Idempotent writes (each event written once, in order, whatever the retries): on or
    /// off. Default: on with --acks all, else off.
    #[arg(long, value_enum)]
    pub idempotence: Option<OnOff>,
    /// How long a batch waits for more events, e.g. 5ms.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// A partition's batch is sent once this many bytes are queued.
    #[arg(long, default_value_t = 16 * 1024)]
    pub batch_bytes: usize,
    /// Partition choice for unkeyed records: least-bytes, round-robin, hash (keyed events always hash).
    #[arg(long, default_value = "least-bytes")]
    pub balancer: String,
}

/// Transactions: run, produce and copy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Producer")]
pub struct Transactional {
    /// Send the events in transactions under this transactional id (produce, run): one is
    /// committed every --transaction-interval, and `acked` counts the events of committed
    /// transactions. A restart with the same id aborts what the last process left open.
    /// Needs --acks all (a transactional producer is idempotent). copy: copy exactly once,
    /// consumer i writing as ID-i; the id names one copier instance (a restart under it
    /// fences what its predecessor left open; copiers running at once take different ids).
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// With --transactional-id: how often the open transaction is committed (and the next
    /// begun), e.g. 100ms. Shorter means less for read_committed consumers to wait for,
    /// longer means fewer commits.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub transaction_interval: Duration,
    /// With --transactional-id: the coordinator aborts a transaction left open this long
    /// (Java's transaction.timeout.ms; the broker caps it at transaction.max.timeout.ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub transaction_timeout: Duration,
}

/// The event generators: run and produce.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Events")]
pub struct Generating {
    /// Producer threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Events per second per producer thread; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Distinct devices (record keys).
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Pad each event to at least this many bytes.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
}

/// The latency figures of run, produce and consume.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Events")]
pub struct Warmup {
    /// Leave events sent in the first DURATION of the run (start-up, the group join) out of
    /// the latency figures, e.g. 3s. Every event still counts for loss and duplicates.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// When a run stops, and what it writes: run, produce, consume and copy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Run control and output")]
pub struct Control {
    /// Stop after this long, e.g. 30s; without it (and --count) run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after N events produced (run, produce), N records consumed (consume), or at
    /// least N records copied (copy: the poll in hand is finished).
    #[arg(long)]
    pub count: Option<u64>,
    /// Bound on the drain after stopping, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Write one JSON stats snapshot per second to this file (JSON lines).
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Write the final summary as one JSON object to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Serve the producer and consumer statistics at http://ADDR/metrics in the Prometheus
    /// text format while the run lasts, e.g. 127.0.0.1:9464 (see README, "Metrics").
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
}

/// `--share-auto-offset-reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResetArg {
    /// The earliest record still in the partition.
    Earliest,
    /// Records written from now on.
    Latest,
}

/// `--isolation-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// Only records of committed transactions (and of non-transactional producers).
    #[value(name = "read_committed")]
    ReadCommitted,
    /// Every record, those of aborted and open transactions included.
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
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

/// A user error: exit code 2, one line naming the problem and the fix.
#[derive(Debug)]
pub struct UsageError(pub String);

type Checked = Result<(), UsageError>;

fn bad(m: impl Into<String>) -> Checked {
    Err(UsageError(m.into()))
}

// Each group of flags checks its own values, naming the flag and what it takes.

impl Creation {
    pub(super) fn validate(&self) -> Checked {
        if self.partitions < 1 || self.replication < 1 {
            return bad("--partitions and --replication must be at least 1");
        }
        Ok(())
    }
}

impl Group {
    /// The consumer group: --group, else the default of run and consume.
    pub fn name(&self) -> &str {
        self.group.as_deref().unwrap_or(DEFAULT_GROUP)
    }

    pub(super) fn validate(&self) -> Checked {
        if self.session_timeout < Duration::from_secs(1) {
            return bad("--session-timeout must be at least 1s");
        }
        if self.consumers == 0 {
            return bad("--consumers must be at least 1");
        }
        Ok(())
    }
}

impl Reading {
    pub(super) fn validate(&self, group: &Group) -> Checked {
        if self.share_group.as_deref() == Some("") {
            return bad("--share-group must not be empty");
        }
        if self.share_group.is_some() && group.group.is_some() {
            return bad("--group and --share-group name two kinds of group to read in; give one");
        }
        if self.share_auto_offset_reset.is_some() && self.share_group.is_none() {
            return bad("--share-auto-offset-reset sets where a share group starts: it needs --share-group (a consumer group's start is earliest for consume, latest for run)");
        }
        Ok(())
    }
}

impl Producing {
    pub(super) fn validate(&self) -> Checked {
        if self.batch_bytes == 0 || self.batch_bytes > MAX_BATCH_BYTES {
            return bad(format!(
                "--batch-bytes {} is out of range: 1 to {MAX_BATCH_BYTES} (a batch must fit a 1 MiB request)",
                self.batch_bytes
            ));
        }
        if let Err(e) = self.balancer.parse::<Balancer>() {
            return bad(format!("--balancer: {e}"));
        }
        Ok(())
    }
}

impl Transactional {
    pub(super) fn validate(&self, producing: &Producing) -> Checked {
        let Some(id) = &self.transactional_id else {
            return Ok(());
        };
        if id.is_empty() {
            return bad("--transactional-id must not be empty");
        }
        if producing.acks != Acks::All || producing.idempotence == Some(OnOff::Off) {
            return bad("--transactional-id needs --acks all and idempotence (a transactional producer is idempotent): drop --acks and --idempotence off");
        }
        if self.transaction_timeout < Duration::from_secs(1) {
            return bad("--transaction-timeout must be at least 1s");
        }
        if self.transaction_interval.is_zero()
            || self.transaction_interval >= self.transaction_timeout
        {
            return bad(format!(
                "--transaction-interval must be above 0 and below the transaction timeout, {:?} (--transaction-timeout: the coordinator aborts a transaction open longer)",
                self.transaction_timeout
            ));
        }
        Ok(())
    }
}

impl Generating {
    pub(super) fn validate(&self) -> Checked {
        if self.threads == 0 {
            return bad("--threads must be at least 1 (producer threads)");
        }
        if self.devices == 0 || self.devices > event::MAX_DEVICES {
            return bad(format!("--devices must be 1 to {}", event::MAX_DEVICES));
        }
        if (self.devices as usize) < self.threads {
            return bad(format!(
                "--devices {} is fewer than --threads {}: each producer thread sends for devices of its own; give at least as many devices as threads",
                self.devices, self.threads
            ));
        }
        if self.payload_bytes > MAX_PAYLOAD_BYTES {
            return bad(format!(
                "--payload-bytes {} is above {MAX_PAYLOAD_BYTES}: an event must fit one 1 MiB produce request",
                self.payload_bytes
            ));
        }
        Ok(())
    }
}

impl Control {
    pub(super) fn validate(&self) -> Checked {
        if self.count == Some(0) {
            return bad("--count must be at least 1");
        }
        if self.duration == Some(Duration::ZERO) {
            return bad("--duration must be above 0 (leave it out to run until Ctrl-C)");
        }
        Ok(())
    }
}

impl CopyArgs {
    pub(super) fn validate(&self) -> Checked {
        let (Some(input), Some(output)) = (&self.input_topic, &self.output_topic) else {
            return bad("copy needs --input-topic IN and --output-topic OUT");
        };
        if input.is_empty() || output.is_empty() || input == output {
            return bad(format!(
                "copy needs two different topics: --input-topic {input:?} --output-topic {output:?}"
            ));
        }
        if self.group.group.as_deref().is_none_or(str::is_empty) {
            return bad("copy needs --group GROUP: the copier's consumer group, where its progress is committed");
        }
        self.group.validate()?;
        self.producing.validate()?;
        self.transactions.validate(&self.producing)?;
        self.control.validate()
    }
}

impl DescribeArgs {
    pub(super) fn validate(&self) -> Checked {
        match self.share_group.as_deref() {
            None => bad("describe needs --share-group NAME: the share group to describe"),
            Some("") => bad("--share-group must not be empty"),
            Some(_) => Ok(()),
        }
    }
}

/// The client config from --config, then the flags over it, then secrets from the
/// environment or files; validated.
pub(super) fn client_config(o: &Connection) -> Result<client::ClientConfig, UsageError> {
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
    o: &Connection,
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

impl From<client::Error> for UsageError {
    fn from(e: client::Error) -> Self {
        UsageError(e.to_string())
    }
}
