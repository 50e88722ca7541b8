//! What a run tells: the live line and the JSON snapshot once a second, and the summary at
//! the end. Both are typed and `Serialize`d, so the JSON files and the printed lines read
//! the same fields.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use kpipe::stats::Histogram;

/// The final report (also written by --summary-json).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// The mode that ran.
    pub mode: String,
    /// Events produced (accepted by the producer).
    pub produced: u64,
    /// Events acknowledged by the brokers (with --transactional-id: events whose
    /// transaction committed).
    pub acked: u64,
    /// Events that failed (with --transactional-id: events of a transaction that neither
    /// committed nor aborted as far as the command could learn; `failures` says why).
    pub failed: u64,
    /// Failure reasons and counts.
    pub failures: BTreeMap<String, u64>,
    /// Events never sent because the drain deadline came first (with --transactional-id
    /// they count in `failed`: their transaction did not commit).
    pub not_attempted: u64,
    /// With --transactional-id: events of aborted transactions (sent again in the next
    /// one, so that each device's committed events stay gapless).
    pub aborted: u64,
    /// Transactions committed (those with events).
    pub transactions_committed: u64,
    /// Transactions aborted.
    pub transactions_aborted: u64,
    /// Why transactions were aborted, and how often.
    pub abort_reasons: BTreeMap<String, u64>,
    /// Why transactions could not go on (a newer producer with the same transactional id
    /// fenced this one, a commit did not finish within --drain-timeout), if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_error: Option<String>,
    /// The --transactional-id, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
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
    /// Events seen before the event preceding them on their device (late, out of order,
    /// or lost).
    pub sequence_gaps: u64,
    /// Events the ledger could not match for lack of room (its window per device, its
    /// memory of late events): the loss and duplicate checks are incomplete when not 0.
    pub outside_window: u64,
    /// Records not yet consumed at the end (high watermark − position, summed; a share
    /// group: records it has still to deliver and have acknowledged, as the broker counts).
    pub lag: i64,
    /// The share group read in (--share-group), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_group: Option<String>,
    /// Share group: records acknowledged as accepted.
    pub acknowledged: u64,
    /// Share group: records released (delivered again).
    pub released: u64,
    /// Share group: records rejected (archived).
    pub rejected: u64,
    /// Share group: records handed out with a delivery count above 1.
    pub redelivered: u64,
    /// End-to-end latency, send to consume, in ms.
    pub latency_ms: Latency,
    /// Events (or records, for consume) per second over the run.
    pub records_per_sec: f64,
    /// Seconds the run took.
    pub elapsed_secs: f64,
    /// Resident memory of the process at the end, MiB.
    pub rss_mib: f64,
    /// Its peak over the run, MiB.
    pub peak_rss_mib: f64,
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

impl Latency {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram) -> Self {
        let p = h.percentiles();
        Latency {
            p50: ms(p.p50),
            p99: ms(p.p99),
            p999: ms(p.p999),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One second of a run (a line of --stats-json, and the live line).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Snapshot {
    /// Seconds since the start.
    pub elapsed_secs: f64,
    /// Events accepted by the producer so far.
    pub produced: u64,
    /// Events acknowledged so far (with --transactional-id: of committed transactions).
    pub acked: u64,
    /// Events failed so far.
    pub failed: u64,
    /// Events of aborted transactions so far.
    pub aborted: u64,
    /// Transactions committed so far.
    pub transactions_committed: u64,
    /// Transactions aborted so far.
    pub transactions_aborted: u64,
    /// Records consumed so far.
    pub consumed: u64,
    /// Acknowledgements per second over the last interval.
    pub produced_per_sec: f64,
    /// Records consumed per second over the last interval.
    pub consumed_per_sec: f64,
    /// Records not yet consumed (summed over the partitions).
    pub lag: i64,
    /// Share group: records acknowledged as accepted so far.
    pub acknowledged: u64,
    /// Share group: records released so far.
    pub released: u64,
    /// Share group: records rejected so far.
    pub rejected: u64,
    /// Share group: records handed out with a delivery count above 1 so far.
    pub redelivered: u64,
    /// Whether the consumers read in a share group (the live line then shows its counts).
    #[serde(skip)]
    pub share: bool,
    /// Records in the producer's channel.
    pub queue_depth: usize,
    /// Rebalances the consumers went through.
    pub rebalances: u64,
    /// Partitions with an owner and a position.
    pub assigned_partitions: usize,
    /// End-to-end latency median so far, ms.
    pub e2e_p50_ms: f64,
    /// Its 99th percentile, ms.
    pub e2e_p99_ms: f64,
    /// Producer errors and failed commits so far.
    pub errors: u64,
    /// The idempotent producer's epoch.
    pub producer_epoch: Option<i16>,
    /// Epoch bumps so far.
    pub epoch_bumps: u64,
    /// Batches resent so far.
    pub resent_batches: u64,
    /// Resident memory now, MiB.
    pub rss_mib: f64,
}

/// A snapshot [`Output`] shows: a JSON line, and a live status line on a terminal.
pub trait Live: Serialize {
    /// The live status line (rewritten in place on a terminal).
    fn live_line(&self) -> String;
}

impl Live for Snapshot {
    fn live_line(&self) -> String {
        let txns = if self.transactions_committed + self.transactions_aborted > 0 {
            format!(
                "  txns {} ({} aborted)",
                self.transactions_committed, self.transactions_aborted
            )
        } else {
            String::new()
        };
        let share = if self.share {
            format!(
                "  acked {} released {} rejected {} redelivered {}",
                self.acknowledged, self.released, self.rejected, self.redelivered
            )
        } else {
            String::new()
        };
        format!(
            "{:>7.0}/s produced {:>7.0}/s consumed  e2e p50 {:.1} ms p99 {:.1} ms  lag {}{share}  queue {}{txns}  errors {}  rss {:.0} MiB",
            self.produced_per_sec,
            self.consumed_per_sec,
            self.e2e_p50_ms,
            self.e2e_p99_ms,
            self.lag,
            self.queue_depth,
            self.errors,
            self.rss_mib
        )
    }
}

/// The process's resident memory now and at its peak, MiB (0 where /proc is missing).
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Write `value` as one line of JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Where the snapshots go: the live line on a terminal, JSON lines to --stats-json.
pub struct Output {
    tty: bool,
    file: Option<std::fs::File>,
}

impl Output {
    /// Writes to `stats_json` if given (a file that cannot be created is said, and skipped).
    pub fn new(stats_json: Option<&Path>) -> Self {
        let file = stats_json.and_then(|p| match std::fs::File::create(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("kpipe: cannot write {}: {e}", p.display());
                None
            }
        });
        Output {
            tty: std::io::stderr().is_terminal(),
            file,
        }
    }

    /// Show one snapshot.
    pub fn show(&mut self, snap: &impl Live) {
        if let Some(f) = self.file.as_mut() {
            if let Ok(line) = serde_json::to_string(snap) {
                let _ = writeln!(f, "{line}");
                let _ = f.flush();
            }
        }
        if self.tty {
            eprint!("\r{}   ", snap.live_line());
        }
    }
}

/// Print the summary to stderr.
pub fn print(r: &Report) {
    if std::io::stderr().is_terminal() {
        eprintln!(); // end the live status line
    }
    eprintln!(
        "kpipe {}: produced {} acked {} failed {} not-attempted {} | consumed {} (foreign {}, duplicates {}, gaps {}) missing {} lag {} | e2e p50 {:.1} ms p99 {:.1} ms p999 {:.1} ms | {:.0} records/s over {:.1} s ({}) | rss {:.0} MiB, peak {:.0} MiB",
        r.mode, r.produced, r.acked, r.failed, r.not_attempted, r.consumed, r.foreign, r.duplicates, r.sequence_gaps,
        r.missing, r.lag, r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999, r.records_per_sec, r.elapsed_secs, r.stopped_by,
        r.rss_mib, r.peak_rss_mib
    );
    if let Some(group) = &r.share_group {
        eprintln!(
            "kpipe share group {group}: acknowledged {} released {} rejected {} redelivered {} lag {}",
            r.acknowledged, r.released, r.rejected, r.redelivered, r.lag
        );
    }
    if r.outside_window > 0 {
        eprintln!(
            "kpipe: {} events could not be matched for lack of room in the ledger (consumers far behind?): the loss and duplicate counts are incomplete",
            r.outside_window
        );
    }
    if let Some(id) = &r.transactional_id {
        eprintln!(
            "kpipe: transactional id {id:?}: {} transactions committed, {} aborted ({} events){}",
            r.transactions_committed,
            r.transactions_aborted,
            r.aborted,
            if r.abort_reasons.is_empty() {
                String::new()
            } else {
                format!("; aborted because: {:?}", r.abort_reasons)
            }
        );
    }
    if let Some(why) = &r.transaction_error {
        eprintln!("kpipe: transactions could not go on: {why}");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_a_peak_at_least_as_large() {
        let (now, peak) = rss_mib();
        assert!(now > 0.0, "VmRSS read as {now}");
        assert!(peak >= now, "peak {peak} < now {now}");
    }

    #[test]
    fn the_snapshot_serialises_the_fields_the_stats_file_promises() {
        let v = serde_json::to_value(Snapshot::default()).unwrap();
        for key in [
            "elapsed_secs",
            "produced",
            "acked",
            "consumed",
            "produced_per_sec",
            "consumed_per_sec",
            "lag",
            "assigned_partitions",
            "e2e_p99_ms",
            "rss_mib",
            "aborted",
            "transactions_committed",
            "transactions_aborted",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
    }
}
