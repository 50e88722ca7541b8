//! The Fetch primitive: one request per leader, records decoded batch by batch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::cluster::Cluster;
use super::connection::Pending;
use super::error::{Error, Location, Result};
use super::produce::PartitionResult;
use super::records::{AbortedTxn, Batches, FetchedRecord};

/// Which records a reader sees of transactional producers' writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Every record in the log, those of aborted and still open transactions included
    /// (Fetch isolation level 0; the Java consumer's default).
    ReadUncommitted,
    /// Only records of committed transactions and of non-transactional producers: reading
    /// stops at the last stable offset (the first offset of the oldest open transaction),
    /// and records of aborted transactions are dropped (Fetch isolation level 1; the
    /// default of [`ConsumerConfig`](crate::consumer::ConsumerConfig), as in librdkafka).
    #[default]
    ReadCommitted,
}

impl IsolationLevel {
    /// The wire value: 0 read uncommitted, 1 read committed.
    pub fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }

    /// The name the Java client's `isolation.level` uses.
    pub fn name(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "read_uncommitted",
            IsolationLevel::ReadCommitted => "read_committed",
        }
    }
}

impl std::fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for IsolationLevel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "read_committed" => Ok(IsolationLevel::ReadCommitted),
            "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
            _ => Err(format!(
                "unknown isolation level {s:?}; use read_committed or read_uncommitted"
            )),
        }
    }
}

/// Request-wide fetch settings (the Go design's MinBytes / MaxBytes / MaxWait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchParams {
    /// How long the broker may hold the request waiting for `min_bytes`. Default 500 ms.
    pub max_wait: Duration,
    /// Bytes the broker should gather before answering early. Default 1.
    pub min_bytes: i32,
    /// Cap on the whole response (the broker still returns at least one batch). Default 50 MiB.
    pub max_bytes: i32,
    /// Cap on one partition's data in a response. Default 1 MiB.
    pub partition_max_bytes: i32,
    /// Largest size one compressed batch may expand to. Default 256 MiB.
    pub max_decompressed: usize,
    /// Leave the records in [`FetchedPartition::batches`], for the caller to decode a batch
    /// at a time, instead of decoding them all into [`FetchedPartition::records`]: memory
    /// then holds one expanded batch, not a whole response's. Default false.
    pub decode_lazily: bool,
    /// Which records of transactions to return. Default
    /// [`IsolationLevel::ReadUncommitted`] for this low-level primitive (everything in the
    /// log); a consumer sets it from [`ConsumerConfig::isolation_level`](crate::consumer::ConsumerConfig::isolation_level).
    pub isolation: IsolationLevel,
    /// The rack the reader is in (Java `client.rack`, Fetch v11+). When the brokers run a
    /// rack-aware replica selector, a partition's leader names a replica in this rack to
    /// fetch from instead ([`FetchedPartition::preferred_read_replica`], KIP-392): reads
    /// stay in the rack (a zone, say) and off the leader. Default none: the leader.
    pub rack: Option<String>,
}

impl Default for FetchParams {
    /// The Java consumer's defaults.
    fn default() -> Self {
        FetchParams {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            max_decompressed: 256 << 20,
            decode_lazily: false,
            isolation: IsolationLevel::ReadUncommitted,
            rack: None,
        }
    }
}

/// One partition to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTarget {
    /// Topic name.
    pub topic: String,
    /// Topic id (needed from Fetch v13 on).
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
    /// The leader epoch the partition's leader is known by (from metadata), checked by the
    /// broker (KIP-320): a leader not at it answers `FENCED_LEADER_EPOCH` (the asker's
    /// metadata is behind) or `UNKNOWN_LEADER_EPOCH` (the broker's is). `None`: no check.
    pub current_leader_epoch: Option<i32>,
    /// Fetch from this replica (a broker id) instead of the leader: the one the leader
    /// named ([`FetchedPartition::preferred_read_replica`]). `None`: the leader.
    pub replica: Option<i32>,
}

/// What one partition returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Records at or after the requested offset, in order (none if decoding lazily).
    pub records: Vec<FetchedRecord>,
    /// With [`FetchParams::decode_lazily`], the batches those records are in, undecoded
    /// (their headers were read, their checksums and contents not yet); else empty.
    pub batches: Batches,
    /// Where the next fetch should start (past control batches and the last record).
    pub next_offset: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// The partition's last stable offset (the first offset of its oldest open
    /// transaction, or the high watermark when none is open); -1 if the broker did not say.
    /// A read_committed fetch returns nothing at or past it.
    pub last_stable_offset: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// The data ended with an incomplete batch (a byte limit cut it).
    pub truncated: bool,
    /// The replica the leader would have this reader fetch the partition from (Fetch v11+
    /// with [`FetchParams::rack`], KIP-392), when it names one.
    pub preferred_read_replica: Option<i32>,
}

/// Build a Fetch request for `targets` (all led by the same broker).
pub(crate) fn fetch_request(params: &FetchParams, targets: &[FetchTarget]) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.replica_state.replica_id = (-1).into();
    req.max_wait_ms = params.max_wait.as_millis().min(i32::MAX as u128) as i32;
    req.min_bytes = params.min_bytes;
    req.max_bytes = params.max_bytes;
    req.isolation_level = params.isolation.wire();
    if let Some(rack) = &params.rack {
        req.rack_id = StrBytes::from_string(rack.clone());
    }
    req.session_id = 0;
    req.session_epoch = -1; // no fetch session: every request is a full fetch
    for t in targets {
        let idx = match req
            .topics
            .iter()
            .position(|x| x.topic.0.as_str() == t.topic)
        {
            Some(i) => i,
            None => {
                let mut ft = FetchTopic::default();
                ft.topic = TopicName(StrBytes::from_string(t.topic.clone()));
                ft.topic_id = t.topic_id;
                req.topics.push(ft);
                req.topics.len() - 1
            }
        };
        let mut p = FetchPartition::default();
        p.partition = t.partition;
        p.fetch_offset = t.offset;
        p.current_leader_epoch = t.current_leader_epoch.unwrap_or(-1);
        p.last_fetched_epoch = -1;
        p.log_start_offset = -1;
        p.partition_max_bytes = params.partition_max_bytes;
        req.topics[idx].partitions.push(p);
    }
    req
}

/// Turn a Fetch response into one result per partition, decoding the records.
pub(crate) fn fetch_results(
    resp: &FetchResponse,
    targets: &[FetchTarget],
    params: &FetchParams,
    broker: &str,
) -> Vec<PartitionResult<FetchedPartition>> {
    let mut out = Vec::new();
    for t in &resp.responses {
        let name = if t.topic.0.is_empty() {
            targets
                .iter()
                .find(|x| x.topic_id == t.topic_id)
                .map(|x| x.topic.clone())
                .unwrap_or_else(|| t.topic_id.to_string())
        } else {
            t.topic.0.to_string()
        };
        for p in &t.partitions {
            let at = || Location {
                broker: broker.to_owned(),
                api: "Fetch",
                topic: Some(name.clone()),
                partition: Some(p.partition_index),
            };
            let requested = targets
                .iter()
                .find(|x| x.topic == name && x.partition == p.partition_index)
                .map_or(0, |x| x.offset);
            let result = Error::check(p.error_code, at, None).and_then(|()| {
                let corrupt = |detail: String| Error::Protocol {
                    broker: broker.to_owned(),
                    detail: format!("{name}-{}: {detail}", p.partition_index),
                };
                let data = p.records.clone().unwrap_or_default();
                let mut batches = Batches::new(data, requested, params.max_decompressed);
                if params.isolation == IsolationLevel::ReadCommitted {
                    let aborted = p.aborted_transactions.iter().flatten().map(|t| AbortedTxn {
                        producer_id: t.producer_id.0,
                        first_offset: t.first_offset,
                    });
                    batches = batches.dropping_aborted(aborted.collect());
                }
                let info = batches.scan().map_err(corrupt)?;
                let mut records = Vec::new();
                if !params.decode_lazily {
                    while batches.next_batch(&mut records).map_err(corrupt)?.is_some() {}
                }
                Ok(FetchedPartition {
                    records,
                    batches,
                    next_offset: info.next_offset.unwrap_or(requested).max(requested),
                    high_watermark: p.high_watermark,
                    last_stable_offset: p.last_stable_offset,
                    log_start_offset: p.log_start_offset,
                    truncated: info.truncated,
                    preferred_read_replica: (p.preferred_read_replica.0 >= 0)
                        .then_some(p.preferred_read_replica.0),
                })
            });
            out.push(PartitionResult {
                topic: name.clone(),
                partition: p.partition_index,
                result,
            });
        }
    }
    out
}

/// Fetch requests sent and not yet read, from [`Cluster::send_fetch`]. Hand it back to
/// [`Cluster::receive_fetch`]: until then the connections owe responses.
#[derive(Debug)]
#[must_use = "fetch responses must be received, or the connections fall out of step"]
pub struct FetchInFlight {
    sent: Vec<(i32, Vec<FetchTarget>, Pending)>,
    /// Targets that could not be asked (no leader known, a broker that cannot be reached),
    /// with their error.
    unsent: Vec<(FetchTarget, Error)>,
}

impl FetchInFlight {
    /// The partitions asked for (or that could not be), with the offsets asked from.
    pub fn targets(&self) -> impl Iterator<Item = &FetchTarget> {
        let sent = self.sent.iter().flat_map(|(_, t, _)| t);
        sent.chain(self.unsent.iter().map(|(t, _)| t))
    }
}

/// `e` for the first of `targets`, and for the others the connection's closing (one error
/// cannot be in two places).
fn failed_all(
    targets: Vec<FetchTarget>,
    e: Error,
    broker: &str,
) -> impl Iterator<Item = (FetchTarget, Error)> {
    let mut first = Some(e);
    let broker = broker.to_owned();
    targets.into_iter().map(move |t| {
        let e = first.take().unwrap_or_else(|| Error::Closed {
            broker: broker.clone(),
        });
        (t, e)
    })
}

fn unsent_result((t, e): (FetchTarget, Error)) -> PartitionResult<FetchedPartition> {
    PartitionResult {
        topic: t.topic,
        partition: t.partition,
        result: Err(e),
    }
}

impl Cluster {
    /// Fetch `targets` from their leaders: one request per leader, all sent before any
    /// response is read, so the brokers work in parallel.
    pub fn fetch(
        &mut self,
        params: &FetchParams,
        targets: &[FetchTarget],
    ) -> Result<Vec<PartitionResult<FetchedPartition>>> {
        let inflight = self.send_fetch(params, targets)?;
        self.receive_fetch(params, inflight)
    }

    /// Send the fetch requests for `targets` (one per leader) without waiting: the caller
    /// can work while the brokers answer, then call [`receive_fetch`](Self::receive_fetch).
    /// A target without a known leader, or whose leader cannot be reached, does not hold
    /// the others back: it is answered with its error.
    pub fn send_fetch(
        &mut self,
        params: &FetchParams,
        targets: &[FetchTarget],
    ) -> Result<FetchInFlight> {
        let mut unsent = Vec::new();
        let mut by_leader: BTreeMap<i32, Vec<FetchTarget>> = BTreeMap::new();
        for t in targets {
            let from = match t.replica {
                Some(replica) => Ok(replica),
                None => self.leader(&t.topic, t.partition),
            };
            match from {
                Ok(node) => by_leader.entry(node).or_default().push(t.clone()),
                Err(e) => unsent.push((t.clone(), e)),
            }
        }
        let mut sent = Vec::new();
        for (leader, group) in by_leader {
            let req = fetch_request(params, &group);
            match self.broker(leader).and_then(|c| c.send(&req)) {
                Ok(pending) => sent.push((leader, group, pending)),
                Err(e) => {
                    self.note_error(&e, None);
                    let broker = format!("node {leader}");
                    unsent.extend(failed_all(group, e, &broker));
                }
            }
        }
        Ok(FetchInFlight { sent, unsent })
    }

    /// Wait until every response of `inflight` has begun to arrive (or its connection
    /// failed), or `deadline` passes; true when [`receive_fetch`](Self::receive_fetch) will
    /// not wait long. Lets a caller bound its wait below the fetch's own `max_wait`.
    pub(crate) fn fetch_ready(&mut self, inflight: &FetchInFlight, deadline: Instant) -> bool {
        for (leader, _, _) in &inflight.sent {
            let Some(conn) = self.existing(*leader) else {
                continue; // closed: receiving reports it at once
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !conn.poll_response(left) {
                return false;
            }
        }
        true
    }

    /// Read the responses to [`send_fetch`](Self::send_fetch): one result per target. Every
    /// connection is read even if one fails; the partitions of a failed one (or of one that
    /// could not be asked) get its error.
    pub fn receive_fetch(
        &mut self,
        params: &FetchParams,
        inflight: FetchInFlight,
    ) -> Result<Vec<PartitionResult<FetchedPartition>>> {
        let mut out: Vec<_> = inflight.unsent.into_iter().map(unsent_result).collect();
        for (leader, group, pending) in inflight.sent {
            let received = match self.existing(leader) {
                Some(conn) => {
                    let broker = conn.broker().to_owned();
                    conn.receive::<FetchRequest>(pending).map(|resp| {
                        conn.throttle(resp.throttle_time_ms);
                        (broker, resp)
                    })
                }
                None => Err(Error::Closed {
                    broker: format!("node {leader}"),
                }),
            };
            match received {
                Ok((broker, resp)) => {
                    let results = fetch_results(&resp, &group, params, &broker);
                    for r in &results {
                        if let Err(e) = &r.result {
                            self.note_error(e, Some(&r.topic));
                        }
                    }
                    out.extend(results);
                }
                Err(e) => {
                    // This connection is closed now; others still owe responses.
                    self.note_error(&e, None);
                    let failed = failed_all(group, e, &format!("node {leader}"));
                    out.extend(failed.map(unsent_result));
                }
            }
        }
        Ok(out)
    }
}
