//! `kpipe describe --share-group NAME`: where a share group (KIP-932) stands in each
//! partition, one row per partition as Java's `kafka-share-groups.sh --describe --offsets
//! --verbose` prints it, `-` where the broker does not know:
//!
//! ```text
//! GROUP    TOPIC   PARTITION  LEADER-EPOCH  START-OFFSET  LAG
//! orders   events  0          0             1200          35
//! orders   events  1          -             -             -
//! ```
//!
//! With `--summary-json FILE`, the same as one JSON object.

use std::time::Instant;

use serde::Serialize;

use kpipe::client::{self, Cluster, ShareGroupOffset};

use super::args::{client_config, DescribeArgs, UsageError};
use super::report;

/// What `kpipe describe` found (also written by --summary-json).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DescribeReport {
    /// Always "describe".
    pub mode: String,
    /// The share group.
    pub share_group: String,
    /// One entry per partition the group reads, sorted by topic and partition.
    pub partitions: Vec<PartitionRow>,
    /// The sum of the lags the broker reported (`None` when it reported none).
    pub total_lag: Option<i64>,
    /// Seconds the look-up took, connecting included.
    pub elapsed_secs: f64,
}

/// One partition of the group: `None` (JSON null, `-` in the table) where unknown.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionRow {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch of the group's state for the partition.
    pub leader_epoch: Option<i32>,
    /// The share-partition start offset.
    pub start_offset: Option<i64>,
    /// Records still to deliver and acknowledge (Kafka brokers with KIP-1226).
    pub lag: Option<i64>,
}

impl From<ShareGroupOffset> for PartitionRow {
    fn from(o: ShareGroupOffset) -> Self {
        PartitionRow {
            topic: o.topic,
            partition: o.partition,
            leader_epoch: o.leader_epoch,
            start_offset: o.start_offset,
            lag: o.lag,
        }
    }
}

/// Run `kpipe describe`; returns the exit code.
pub fn main(o: &DescribeArgs) -> u8 {
    let outcome = o.validate().map_err(Failed::Usage).and_then(|()| run(o));
    let report = match outcome {
        Ok(r) => r,
        Err(Failed::Usage(UsageError(msg))) => {
            eprintln!("kpipe: {msg}");
            return 2;
        }
        Err(Failed::Later(msg)) => {
            eprintln!("kpipe: {msg}");
            return 1;
        }
    };
    if let Some(path) = &o.summary_json {
        if let Err(e) = report::write_json(path, &report) {
            eprintln!("kpipe: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    if report.partitions.is_empty() {
        eprintln!(
            "kpipe: share group {:?} reads no partitions yet (no member has subscribed to a topic)",
            report.share_group
        );
    }
    print!("{}", table(&report));
    0
}

/// Why describing failed: bad input (exit 2: a flag, a broker unreachable, a group that is
/// not a share group, a cluster without share groups) or a failure after the start (exit 1).
enum Failed {
    Usage(UsageError),
    Later(String),
}

impl From<UsageError> for Failed {
    fn from(e: UsageError) -> Self {
        Failed::Usage(e)
    }
}

fn run(o: &DescribeArgs) -> Result<DescribeReport, Failed> {
    let started = Instant::now();
    let group = o.share_group.clone().unwrap_or_default();
    let config = client_config(&o.connection)?;
    let timeout = config.connection.request_timeout;
    let mut cluster = Cluster::connect(config).map_err(UsageError::from)?;
    let offsets = cluster
        .share_group_offsets(&group, timeout)
        .map_err(|e| match e {
            client::Error::UnknownShareGroup { .. }
            | client::Error::ShareGroupsUnsupported { .. }
            | client::Error::Config { .. } => Failed::Usage(UsageError(e.to_string())),
            other => Failed::Later(format!("describing share group {group:?}: {other}")),
        })?;
    let partitions: Vec<PartitionRow> = offsets.into_iter().map(PartitionRow::from).collect();
    let lags: Vec<i64> = partitions.iter().filter_map(|p| p.lag).collect();
    Ok(DescribeReport {
        mode: "describe".into(),
        share_group: group,
        total_lag: (!lags.is_empty()).then(|| lags.iter().sum()),
        partitions,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// The table, columns as wide as their widest cell, two spaces apart.
fn table(r: &DescribeReport) -> String {
    fn dash<T: ToString>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_owned(), |v| v.to_string())
    }
    let header = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "LEADER-EPOCH",
        "START-OFFSET",
        "LAG",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 6]> = std::iter::once(header)
        .chain(r.partitions.iter().map(|p| {
            [
                r.share_group.clone(),
                p.topic.clone(),
                p.partition.to_string(),
                dash(p.leader_epoch),
                dash(p.start_offset),
                dash(p.lag),
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_dashes_what_is_unknown() {
        let report = DescribeReport {
            mode: "describe".into(),
            share_group: "orders".into(),
            partitions: vec![
                PartitionRow {
                    topic: "events".into(),
                    partition: 0,
                    leader_epoch: Some(0),
                    start_offset: Some(1200),
                    lag: Some(35),
                },
                PartitionRow {
                    topic: "events".into(),
                    partition: 1,
                    leader_epoch: None,
                    start_offset: None,
                    lag: None,
                },
            ],
            total_lag: Some(35),
            elapsed_secs: 0.1,
        };
        assert_eq!(
            table(&report),
            "GROUP   TOPIC   PARTITION  LEADER-EPOCH  START-OFFSET  LAG\n\
             orders  events  0          0             1200          35\n\
             orders  events  1          -             -             -\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["partitions"][1]["start_offset"],
            serde_json::Value::Null
        );
        assert_eq!(json["partitions"][0]["lag"], 35);
        assert_eq!(json["total_lag"], 35);
    }
}
