//! The statistics of producers, consumers and pools in the Prometheus text exposition
//! format (version 0.0.4), for a monitoring system to scrape. The library serves nothing:
//! an application answers `GET /metrics` with [`Prometheus::render`] from the HTTP server
//! it already has (the `kpipe` command's `--metrics-addr` does it with a small one).
//!
//! ```text
//!  producer.stats() ─┐
//!  pool.stats() ─────┼─▶ Prometheus::new().producer(..).consumer(..).render() ─▶ text
//!  consumer.stats() ─┘
//! ```
//!
//! Taking the stats never blocks the producer's writer thread or a consumer member: they
//! are atomic counters, and maps held under a lock only while an entry is updated.
//!
//! Names are prefixed `kpipe_`, in base units (seconds, bytes), counters end in `_total`.
//! The producer's (kind "producer"):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `kpipe_producer_records_accepted_total` | counter | records accepted from senders |
//! | `kpipe_producer_records_delivered_total` | counter | records acknowledged |
//! | `kpipe_producer_records_failed_total` | counter | records failed |
//! | `kpipe_producer_delivered_bytes_total` | counter | record bytes acknowledged (uncompressed) |
//! | `kpipe_producer_batches_total` | counter | produce batches sent |
//! | `kpipe_producer_batch_retries_total` | counter | batches sent again after a retriable error |
//! | `kpipe_producer_errors_total{kind}` | counter | errors seen, by kind, retried ones included |
//! | `kpipe_producer_epoch_bumps_total` | counter | sequences started again under a new epoch |
//! | `kpipe_producer_callback_panics_total` | counter | delivery reports that panicked |
//! | `kpipe_producer_throttle_seconds_total` | counter | time the brokers' quotas asked to hold off |
//! | `kpipe_producer_requests_in_flight` | gauge | produce requests awaiting an answer |
//! | `kpipe_producer_queued_records` | gauge | records waiting in the channel |
//! | `kpipe_producer_stopped` | gauge | 1 once the producer stopped by itself (fenced, say) |
//! | `kpipe_producer_delivery_latency_seconds` | histogram | time from `send` to acknowledgement |
//!
//! A consumer's or a pool's:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `kpipe_consumer_records_handled_total` | counter | records finished: the handler returned `Ok` (pool), or a later `poll`, `commit` or `close` came (consumer) |
//! | `kpipe_consumer_records_handed_out_total` | counter | records handed out by `poll` or to a handler |
//! | `kpipe_consumer_records_skipped_total` | counter | records skipped after a handler error |
//! | `kpipe_consumer_handler_errors_total` | counter | handler errors, panics included |
//! | `kpipe_consumer_handler_panics_total` | counter | handler panics |
//! | `kpipe_consumer_rebalances_total` | counter | joins or assignment changes taken up |
//! | `kpipe_consumer_commit_failures_total` | counter | commits refused or failed |
//! | `kpipe_consumer_fetch_errors_total` | counter | fetches that failed and were retried |
//! | `kpipe_consumer_truncations_total` | counter | positions found past a log divergence |
//! | `kpipe_consumer_offsets_out_of_range_total` | counter | positions refused as out of range |
//! | `kpipe_consumer_transactions_committed_total` | counter | exactly-once pools: transactions committed |
//! | `kpipe_consumer_transactions_aborted_total` | counter | exactly-once pools: transactions aborted |
//! | `kpipe_consumer_share_records_acknowledged_total` | counter | share groups: records accepted |
//! | `kpipe_consumer_share_records_released_total` | counter | share groups: records released |
//! | `kpipe_consumer_share_records_rejected_total` | counter | share groups: records rejected |
//! | `kpipe_consumer_share_records_redelivered_total` | counter | share groups: records delivered again |
//! | `kpipe_consumer_share_lock_renewals_total` | counter | share groups: acquisition locks renewed |
//! | `kpipe_consumer_share_acknowledge_failures_total` | counter | share groups: acknowledgements not known taken |
//! | `kpipe_consumer_assigned_partitions` | gauge | partitions assigned now |
//! | `kpipe_consumer_partition_lag{topic,partition}` | gauge | records not yet handed out: end offset − position |
//! | `kpipe_consumer_partition_position{topic,partition}` | gauge | the next offset to hand out |
//! | `kpipe_consumer_partition_end_offset{topic,partition}` | gauge | high watermark, or last stable offset under read_committed |
//! | `kpipe_consumer_partition_committed_offset{topic,partition}` | gauge | the last committed offset (absent before the first) |

use std::fmt::Write as _;
use std::time::Duration;

use crate::consumer::ConsumerStats;
use crate::producer::ProducerStats;

/// Bounds (µs) of the delivery-latency histogram's buckets, `+Inf` aside: from half a
/// millisecond to the two minutes of the default delivery timeout.
const LATENCY_BOUNDS_US: [u64; 17] = [
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
];

/// Label names kpipe gives samples itself; a caller's label of one of these names is
/// renamed `exported_<name>`, as Prometheus renames a target's labels that clash.
const OWN_LABELS: [&str; 4] = ["kind", "topic", "partition", "le"];

/// A metric of one value per source: its name, its help, how it is read off the stats.
type Metric<S> = (&'static str, &'static str, fn(&S) -> u64);

/// One exposition in the Prometheus text format: the stats of the producers and consumers
/// added, each with the labels set before it was added.
///
/// ```
/// use kpipe::consumer::ConsumerStats;
/// use kpipe::metrics::Prometheus;
/// use kpipe::producer::ProducerStats;
///
/// // In an application: `producer.stats()` and `pool.stats()`.
/// let (producer, pool) = (ProducerStats::default(), ConsumerStats::default());
/// let text = Prometheus::new()
///     .label("client", "billing")
///     .producer(&producer)
///     .consumer(&pool)
///     .render();
/// assert!(text.contains("# TYPE kpipe_producer_records_delivered_total counter\n"));
/// assert!(text.contains("kpipe_producer_records_delivered_total{client=\"billing\"} 0\n"));
/// assert!(text.contains("kpipe_producer_delivery_latency_seconds_bucket{client=\"billing\",le=\"+Inf\"} 0\n"));
/// ```
///
/// Two producers (or two consumers) in one exposition need a label that tells them apart,
/// set before each is added: `.label("client", "a").producer(&a).label("client",
/// "b").producer(&b)`. A label name given again takes the new value for what is added
/// after it; names are made valid (characters other than ASCII letters, digits and `_`
/// become `_`).
#[derive(Debug, Clone, Default)]
pub struct Prometheus<'a> {
    labels: Vec<(String, String)>,
    producers: Vec<(&'a ProducerStats, String)>,
    consumers: Vec<(&'a ConsumerStats, String)>,
}

impl<'a> Prometheus<'a> {
    /// An exposition with nothing in it yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set label `name` to `value` on the samples of the producers and consumers added
    /// from now on.
    pub fn label(mut self, name: &str, value: &str) -> Self {
        let name = label_name(name);
        match self.labels.iter_mut().find(|(n, _)| *n == name) {
            Some(l) => l.1 = value.to_owned(),
            None => self.labels.push((name, value.to_owned())),
        }
        self
    }

    /// Add a producer's stats ([`Producer::stats`](crate::Producer::stats)).
    pub fn producer(mut self, stats: &'a ProducerStats) -> Self {
        let labels = self.rendered_labels();
        self.producers.push((stats, labels));
        self
    }

    /// Add a consumer's or a pool's stats ([`ConsumerPool::stats`](crate::ConsumerPool::stats),
    /// [`Consumer::stats`](crate::Consumer::stats)).
    pub fn consumer(mut self, stats: &'a ConsumerStats) -> Self {
        let labels = self.rendered_labels();
        self.consumers.push((stats, labels));
        self
    }

    /// The text: each metric's `# HELP` and `# TYPE` lines, then its samples.
    pub fn render(&self) -> String {
        let mut out = Text(String::with_capacity(4096));
        self.render_producers(&mut out);
        self.render_consumers(&mut out);
        out.0
    }

    fn rendered_labels(&self) -> String {
        let mut s = String::new();
        for (name, value) in &self.labels {
            push_label(&mut s, name, value);
        }
        s
    }

    fn render_producers(&self, out: &mut Text) {
        let ps = &self.producers;
        if ps.is_empty() {
            return;
        }
        let counters: [Metric<ProducerStats>; 9] = [
            (
                "kpipe_producer_records_accepted_total",
                "Records accepted from senders (taken by the writer thread or queued for it).",
                |s| s.accepted,
            ),
            (
                "kpipe_producer_records_delivered_total",
                "Records acknowledged by the brokers.",
                |s| s.delivered,
            ),
            (
                "kpipe_producer_records_failed_total",
                "Records whose delivery failed.",
                |s| s.failed,
            ),
            (
                "kpipe_producer_delivered_bytes_total",
                "Record bytes (uncompressed, as encoded) acknowledged.",
                |s| s.bytes_delivered,
            ),
            (
                "kpipe_producer_batches_total",
                "Produce batches sent.",
                |s| s.batches,
            ),
            (
                "kpipe_producer_batch_retries_total",
                "Batches sent again after a retriable error.",
                |s| s.retries,
            ),
            (
                "kpipe_producer_epoch_bumps_total",
                "Times a partition's sequences started again under a new producer epoch.",
                |s| s.epoch_bumps,
            ),
            (
                "kpipe_producer_callback_panics_total",
                "Delivery reports that panicked.",
                |s| s.callback_panics,
            ),
            (
                "kpipe_producer_requests_in_flight",
                "Produce requests awaiting an answer.",
                |s| s.requests_in_flight,
            ),
        ];
        out.families(&counters, ps);
        let name = "kpipe_producer_errors_total";
        out.family(
            name,
            "counter",
            "Errors seen, by kind (retried ones included).",
        );
        for (s, labels) in ps {
            for (kind, n) in &s.errors {
                out.sample(name, labels, &[("kind", kind)], *n);
            }
        }
        let name = "kpipe_producer_throttle_seconds_total";
        out.family(name, "counter", "Time the brokers asked this producer to hold off (their quotas), added up over answers.");
        for (s, labels) in ps {
            out.sample(name, labels, &[], s.throttled_ms as f64 / 1000.0);
        }
        let name = "kpipe_producer_queued_records";
        out.family(
            name,
            "gauge",
            "Records waiting in the channel to the writer thread.",
        );
        for (s, labels) in ps {
            out.sample(name, labels, &[], s.queue_depth as u64);
        }
        let name = "kpipe_producer_stopped";
        out.family(name, "gauge", "1 once the producer stopped by itself (fenced, or its writer thread panicked), else 0.");
        for (s, labels) in ps {
            out.sample(name, labels, &[], u64::from(s.fatal.is_some()));
        }
        let name = "kpipe_producer_delivery_latency_seconds";
        out.family(name, "histogram", "Time from send to acknowledgement (buckets count the records known to be within their bound: about 6% precision).");
        let bucket = format!("{name}_bucket");
        for (s, labels) in ps {
            let h = &s.latency_histogram;
            let count = h.count();
            for us in LATENCY_BOUNDS_US {
                let n = h.count_at_most(Duration::from_micros(us));
                let le = (us as f64 / 1e6).to_string();
                out.sample(&bucket, labels, &[("le", &le)], n);
            }
            out.sample(&bucket, labels, &[("le", "+Inf")], count);
            out.sample(&format!("{name}_sum"), labels, &[], h.sum().as_secs_f64());
            out.sample(&format!("{name}_count"), labels, &[], count);
        }
    }

    fn render_consumers(&self, out: &mut Text) {
        let cs = &self.consumers;
        if cs.is_empty() {
            return;
        }
        let counters: [Metric<ConsumerStats>; 19] = [
            ("kpipe_consumer_records_handled_total", "Records finished: the handler returned Ok (a pool), or a later poll, commit or close came (a consumer).", |s| s.handled),
            ("kpipe_consumer_records_handed_out_total", "Records handed out by poll or to a handler.", |s| s.handed_out),
            ("kpipe_consumer_records_skipped_total", "Records the handler failed on that were skipped.", |s| s.skipped),
            ("kpipe_consumer_handler_errors_total", "Handler errors (retried ones included), panics included.", |s| s.handler_errors),
            ("kpipe_consumer_handler_panics_total", "Handler panics.", |s| s.handler_panics),
            ("kpipe_consumer_rebalances_total", "Group joins (classic protocol) or assignment changes taken up (consumer protocol), by all members.", |s| s.rebalances),
            ("kpipe_consumer_commit_failures_total", "Commits the coordinator refused or that failed.", |s| s.commit_failures),
            ("kpipe_consumer_fetch_errors_total", "Fetches that failed and were retried.", |s| s.fetch_errors),
            ("kpipe_consumer_truncations_total", "Positions found past a divergence in their partition's log (KIP-320).", |s| s.truncations),
            ("kpipe_consumer_offsets_out_of_range_total", "Positions the leader refused as out of range.", |s| s.out_of_range),
            ("kpipe_consumer_transactions_committed_total", "Transactions committed by an exactly-once pool's members.", |s| s.transactions_committed),
            ("kpipe_consumer_transactions_aborted_total", "Transactions aborted by an exactly-once pool's members.", |s| s.transactions_aborted),
            ("kpipe_consumer_share_records_acknowledged_total", "Share groups: records acknowledged as accepted.", |s| s.acknowledged),
            ("kpipe_consumer_share_records_released_total", "Share groups: records released, to be delivered again.", |s| s.released),
            ("kpipe_consumer_share_records_rejected_total", "Share groups: records rejected (archived, never delivered again).", |s| s.rejected),
            ("kpipe_consumer_share_records_redelivered_total", "Share groups: records handed out with a delivery count above 1.", |s| s.redelivered),
            ("kpipe_consumer_share_lock_renewals_total", "Share groups: acquisition locks renewed for records a slow handler held.", |s| s.renewed),
            ("kpipe_consumer_share_acknowledge_failures_total", "Share groups: acknowledgements not known to be taken by the broker.", |s| s.acknowledge_failures),
            ("kpipe_consumer_assigned_partitions", "Partitions assigned now.", |s| s.partitions.len() as u64),
        ];
        out.families(&counters, cs);
        type Of = fn(&crate::consumer::PartitionProgress) -> Option<i64>;
        let partition: [(&str, &str, Of); 4] = [
            ("kpipe_consumer_partition_lag", "Records not yet handed out: end offset - position.", |p| Some(p.lag())),
            ("kpipe_consumer_partition_position", "The next offset to hand out.", |p| Some(p.position)),
            ("kpipe_consumer_partition_end_offset", "Where reading ends at the last fetch: the high watermark, or the last stable offset under read_committed.", |p| Some(p.end_offset)),
            ("kpipe_consumer_partition_committed_offset", "The last committed offset (absent before the first commit).", |p| (p.committed >= 0).then_some(p.committed)),
        ];
        for (name, help, value) in partition {
            out.family(name, "gauge", help);
            for (s, labels) in cs {
                for ((topic, part), progress) in &s.partitions {
                    if let Some(v) = value(progress) {
                        let part = part.to_string();
                        out.sample(name, labels, &[("topic", topic), ("partition", &part)], v);
                    }
                }
            }
        }
    }
}

/// The text being written.
struct Text(String);

impl Text {
    /// A family per metric of `metrics` (a counter when its name ends in `_total`, else a
    /// gauge), with a sample of each source in it.
    fn families<S>(&mut self, metrics: &[Metric<S>], sources: &[(&S, String)]) {
        for (name, help, value) in metrics {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            self.family(name, kind, help);
            for (s, labels) in sources {
                self.sample(name, labels, &[], value(s));
            }
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `labels` (rendered, the caller's) and `extra` (kpipe's own) in braces.
    fn sample(&mut self, name: &str, labels: &str, extra: &[(&str, &str)], value: impl Value) {
        self.0.push_str(name);
        if !labels.is_empty() || !extra.is_empty() {
            self.0.push('{');
            self.0.push_str(labels);
            for (n, v) in extra {
                push_label(&mut self.0, n, v);
            }
            self.0.push('}');
        }
        self.0.push(' ');
        value.write(&mut self.0);
        self.0.push('\n');
    }
}

/// A sample's value, as the text format writes it.
trait Value {
    fn write(self, out: &mut String);
}

impl Value for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for i64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// `name="value"`, after a comma unless it is the first of its braces (`out` is empty or
/// ends with `{`), the value escaped.
fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() && !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A valid label name for `name`, clear of kpipe's own.
fn label_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if OWN_LABELS.contains(&s.as_str()) {
        s.insert_str(0, "exported_");
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::consumer::PartitionProgress;
    use crate::stats::Histogram;

    fn producer() -> ProducerStats {
        let h = Histogram::default();
        for us in [300, 300, 300, 1_500, 1_500, 7_000_000] {
            h.record(Duration::from_micros(us));
        }
        ProducerStats {
            accepted: 7,
            delivered: 6,
            failed: 1,
            bytes_delivered: 600,
            throttled_ms: 1_500,
            errors: BTreeMap::from([("NOT_LEADER_OR_FOLLOWER".to_owned(), 2)]),
            latency_histogram: h.snapshot(),
            ..Default::default()
        }
    }

    fn consumer() -> ConsumerStats {
        let progress = |end, position, committed| PartitionProgress {
            high_watermark: end,
            end_offset: end,
            position,
            committed,
            read_replica: None,
        };
        ConsumerStats {
            handled: 42,
            handed_out: 43,
            acknowledged: 3,
            partitions: BTreeMap::from([
                (("events".to_owned(), 0), progress(100, 95, 90)),
                (("events".to_owned(), 1), progress(10, 10, -1)),
            ]),
            ..Default::default()
        }
    }

    /// The value of the one sample written `series` (name and labels as in the text).
    fn value(text: &str, series: &str) -> f64 {
        let found: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .collect();
        assert_eq!(found.len(), 1, "{series} in {text}");
        found[0].parse().unwrap()
    }

    #[test]
    fn every_family_has_help_and_type_once_then_only_its_own_samples() {
        let (p, c) = (producer(), consumer());
        let text = Prometheus::new().producer(&p).consumer(&c).render();
        assert!(text.ends_with('\n'));
        let (mut family, mut kind) = (String::new(), String::new());
        let mut seen = HashSet::new();
        let mut series = HashSet::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_owned()), "{name} declared twice");
                assert!(name.starts_with("kpipe_"), "{name}");
                let typed = lines[i + 1].strip_prefix("# TYPE ").unwrap();
                let (n, k) = typed.split_once(' ').unwrap();
                assert_eq!(n, name);
                assert!(["counter", "gauge", "histogram"].contains(&k), "{typed}");
                assert_eq!(k == "counter", name.ends_with("_total"), "{name} is a {k}");
                (family, kind) = (n.to_owned(), k.to_owned());
            } else if !line.starts_with('#') {
                let (name_labels, v) = line.rsplit_once(' ').unwrap();
                assert!(v == "+Inf" || v.parse::<f64>().is_ok(), "{line}");
                assert!(series.insert(name_labels.to_owned()), "{name_labels} twice");
                let name = name_labels.split('{').next().unwrap();
                let own = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(&family)),
                    _ => name == family,
                };
                assert!(own, "{line} under {family}");
            }
        }
        assert!(seen.contains("kpipe_consumer_partition_lag"));
        assert!(seen.contains("kpipe_producer_delivery_latency_seconds"));
        assert!(seen.contains("kpipe_consumer_share_records_acknowledged_total"));
    }

    #[test]
    fn values_are_in_base_units_and_lag_is_per_partition() {
        let (p, c) = (producer(), consumer());
        let text = Prometheus::new().producer(&p).consumer(&c).render();
        assert_eq!(value(&text, "kpipe_producer_records_delivered_total"), 6.0);
        assert_eq!(value(&text, "kpipe_producer_delivered_bytes_total"), 600.0);
        assert_eq!(value(&text, "kpipe_producer_throttle_seconds_total"), 1.5);
        assert_eq!(
            value(
                &text,
                "kpipe_producer_errors_total{kind=\"NOT_LEADER_OR_FOLLOWER\"}"
            ),
            2.0
        );
        assert_eq!(value(&text, "kpipe_consumer_records_handled_total"), 42.0);
        assert_eq!(
            value(&text, "kpipe_consumer_records_handed_out_total"),
            43.0
        );
        assert_eq!(
            value(&text, "kpipe_consumer_share_records_acknowledged_total"),
            3.0
        );
        assert_eq!(value(&text, "kpipe_consumer_assigned_partitions"), 2.0);
        let p0 = "{topic=\"events\",partition=\"0\"}";
        let p1 = "{topic=\"events\",partition=\"1\"}";
        assert_eq!(
            value(&text, &format!("kpipe_consumer_partition_lag{p0}")),
            5.0
        );
        assert_eq!(
            value(&text, &format!("kpipe_consumer_partition_lag{p1}")),
            0.0
        );
        assert_eq!(
            value(&text, &format!("kpipe_consumer_partition_position{p0}")),
            95.0
        );
        assert_eq!(
            value(&text, &format!("kpipe_consumer_partition_end_offset{p0}")),
            100.0
        );
        assert_eq!(
            value(
                &text,
                &format!("kpipe_consumer_partition_committed_offset{p0}")
            ),
            90.0
        );
        // Never committed: no sample rather than -1.
        assert!(!text.contains(&format!("kpipe_consumer_partition_committed_offset{p1}")));
    }

    #[test]
    fn the_latency_histogram_is_cumulative_and_ends_at_its_count() {
        let p = producer();
        let text = Prometheus::new().producer(&p).render();
        let name = "kpipe_producer_delivery_latency_seconds";
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
            .map(|l| {
                let (le, rest) = l.split_once("\"} ").unwrap();
                (le.to_owned(), rest.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_US.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        let bounds: Vec<f64> = buckets
            .iter()
            .filter_map(|(le, _)| le.parse().ok())
            .collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        let at = |le: &str| buckets.iter().find(|(l, _)| l == le).unwrap().1;
        assert_eq!(at("0.0005"), 3.0);
        assert_eq!(at("0.001"), 3.0);
        assert_eq!(at("0.002"), 5.0);
        assert_eq!(at("5"), 5.0);
        assert_eq!(at("10"), 6.0);
        assert_eq!(at("+Inf"), 6.0);
        assert_eq!(buckets.last().unwrap().0, "+Inf");
        assert_eq!(value(&text, &format!("{name}_count")), 6.0);
        let sum = value(&text, &format!("{name}_sum"));
        assert!((sum - 7.0039).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn labels_are_escaped_named_validly_and_set_per_source() {
        let mut c = ConsumerStats::default();
        c.partitions.insert(
            ("we\"ird\\topic\n".to_owned(), 3),
            PartitionProgress::default(),
        );
        let (a, b) = (ProducerStats::default(), ProducerStats::default());
        let text = Prometheus::new()
            .label("client-id", "a \"quoted\" \\ name\nnext")
            .label("topic", "mine")
            .producer(&a)
            .label("client-id", "b")
            .producer(&b)
            .consumer(&c)
            .render();
        let first = "client_id=\"a \\\"quoted\\\" \\\\ name\\nnext\",exported_topic=\"mine\"";
        assert!(
            text.contains(&format!(
                "kpipe_producer_records_failed_total{{{first}}} 0\n"
            )),
            "{text}"
        );
        assert!(text.contains(
            "kpipe_producer_records_failed_total{client_id=\"b\",exported_topic=\"mine\"} 0\n"
        ));
        assert!(text.contains(
            "kpipe_consumer_partition_lag{client_id=\"b\",exported_topic=\"mine\",topic=\"we\\\"ird\\\\topic\\n\",partition=\"3\"} 0\n"
        ), "{text}");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(label_name(""), "_");
        // One family each, with both producers' samples under it.
        assert_eq!(
            text.matches("# TYPE kpipe_producer_records_failed_total ")
                .count(),
            1
        );
        assert_eq!(
            text.matches("kpipe_producer_records_failed_total{").count(),
            2
        );
    }

    #[test]
    fn nothing_added_renders_nothing() {
        assert_eq!(Prometheus::new().label("a", "b").render(), "");
    }
}
