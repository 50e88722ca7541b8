//! The Produce primitive: requests around pre-encoded batches, and per-partition results.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::cluster::Cluster;
use super::error::{Error, Location, Result};
use super::txn::TransactionVersion;

/// How many replicas must have a batch before the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Fire and forget: the broker sends no response (and kpipe cannot report failures).
    None,
    /// The leader wrote it.
    Leader,
    /// Every in-sync replica has it (the default, as in the Java client).
    #[default]
    All,
}

impl Acks {
    /// The value sent on the wire.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "0" | "none" => Ok(Acks::None),
            "1" | "leader" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("unknown acks {other:?}; use 0, 1 or all")),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// Encoded record batches for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// Topic name.
    pub topic: String,
    /// Topic id from metadata (needed from Produce v13 on).
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// One or more complete v2 batches.
    pub records: Bytes,
}

/// What the broker said of one partition's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the first record of the batch.
    pub base_offset: i64,
    /// Log-append time if the topic uses it, else -1.
    pub log_append_time: i64,
}

/// One partition's outcome in a produce response.
#[derive(Debug)]
pub struct PartitionResult<T> {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The outcome.
    pub result: Result<T>,
}

/// Build a Produce request carrying `batches`.
pub(crate) fn produce_request(
    acks: Acks,
    timeout: Duration,
    batches: &[PartitionBatch],
) -> ProduceRequest {
    let mut req = ProduceRequest::default();
    req.acks = acks.wire();
    req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    req.transactional_id = None;
    for b in batches {
        let idx = match req
            .topic_data
            .iter()
            .position(|t| t.name.0.as_str() == b.topic)
        {
            Some(i) => i,
            None => {
                let mut t = TopicProduceData::default();
                // Both: v13+ encodes only the id, older versions only the name.
                t.name = TopicName(StrBytes::from_string(b.topic.clone()));
                t.topic_id = b.topic_id;
                req.topic_data.push(t);
                req.topic_data.len() - 1
            }
        };
        let mut p = PartitionProduceData::default();
        p.index = b.partition;
        p.records = Some(b.records.clone());
        req.topic_data[idx].partition_data.push(p);
    }
    req
}

/// Build a Produce request carrying `batches` for the transactional producer
/// `transactional_id`: the broker checks that the batches' producer id and epoch are the
/// ones this transactional id holds (and, from Produce v12 under transaction version 2,
/// adds the partitions to the transaction itself). The batches must be marked
/// transactional ([`BatchBuilder::set_transactional`](super::BatchBuilder::set_transactional)).
pub(crate) fn transactional_produce_request(
    transactional_id: &str,
    acks: Acks,
    timeout: Duration,
    batches: &[PartitionBatch],
) -> ProduceRequest {
    let mut req = produce_request(acks, timeout, batches);
    req.transactional_id = Some(TransactionalId(StrBytes::from_string(
        transactional_id.to_owned(),
    )));
    req
}

/// Turn a Produce response into one result per partition. Topics are matched by name, or by
/// id (v13+ responses carry only the id) against the batches that were sent.
pub(crate) fn produce_results(
    resp: &ProduceResponse,
    sent: &[PartitionBatch],
    broker: &str,
) -> Vec<PartitionResult<ProduceAck>> {
    let mut out = Vec::new();
    for t in &resp.responses {
        let name = if t.name.0.is_empty() {
            sent.iter()
                .find(|b| b.topic_id == t.topic_id)
                .map(|b| b.topic.clone())
                .unwrap_or_else(|| t.topic_id.to_string())
        } else {
            t.name.0.to_string()
        };
        for p in &t.partition_responses {
            let detail = p
                .record_errors
                .iter()
                .filter_map(|e| {
                    e.batch_index_error_message
                        .as_ref()
                        .map(|m| format!("record {}: {m}", e.batch_index))
                })
                .chain(p.error_message.as_ref().map(|m| m.to_string()))
                .collect::<Vec<_>>()
                .join("; ");
            let result = Error::check(
                p.error_code,
                || Location {
                    broker: broker.to_owned(),
                    api: "Produce",
                    topic: Some(name.clone()),
                    partition: Some(p.index),
                },
                Some(&detail),
            )
            .map(|()| ProduceAck {
                base_offset: p.base_offset,
                log_append_time: p.log_append_time_ms,
            });
            out.push(PartitionResult {
                topic: name.clone(),
                partition: p.index,
                result,
            });
        }
    }
    out
}

impl Cluster {
    /// Ask a broker for a producer id and epoch (KIP-98), which an idempotent producer
    /// stamps on every batch. Retriable errors are retried for up to the request timeout.
    pub(crate) fn init_producer_id(&mut self) -> Result<(i64, i16)> {
        self.retrying(None, Cluster::init_producer_id_once)
    }

    /// One try of [`init_producer_id`](Self::init_producer_id), without retries.
    pub(crate) fn init_producer_id_once(&mut self) -> Result<(i64, i16)> {
        {
            let (broker, resp) = self.request_any_with(|_| {
                let mut req = InitProducerIdRequest::default();
                req.transactional_id = None;
                // Java's transaction.timeout.ms default; unused without a transactional id.
                req.transaction_timeout_ms = 60_000;
                req.producer_id = ProducerId(-1);
                req.producer_epoch = -1;
                req
            })?;
            Error::check(
                resp.error_code,
                || Location {
                    broker,
                    api: "InitProducerId",
                    topic: None,
                    partition: None,
                },
                None,
            )?;
            Ok((resp.producer_id.0, resp.producer_epoch))
        }
    }

    /// Produce one encoded batch to one partition and wait for the acknowledgement,
    /// retrying retriable errors (leader moves, broken connections) for up to the request
    /// timeout.
    ///
    /// A building block for tests and tools; the producer pipelines many of these.
    /// With [`Acks::None`] nothing comes back and the offset is reported as -1.
    /// Without idempotence a retry after a lost response may write the batch twice.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<ProduceAck> {
        self.retrying(Some(topic), |c| {
            c.produce_once(topic, partition, records.clone(), acks, timeout)
        })
    }

    fn produce_once(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<ProduceAck> {
        let batch = PartitionBatch {
            topic: topic.to_owned(),
            topic_id: self.topic(topic)?.id,
            partition,
            records,
        };
        let req = produce_request(acks, timeout, std::slice::from_ref(&batch));
        self.produce_to_leader(batch, &req, None)
    }

    /// Send `req`, which carries just `batch`, to the partition's leader and wait for its
    /// answer (none with acks=0): at the negotiated version, or under transaction version
    /// `txn` at the version that transaction version allows.
    pub(super) fn produce_to_leader(
        &mut self,
        batch: PartitionBatch,
        req: &ProduceRequest,
        txn: Option<TransactionVersion>,
    ) -> Result<ProduceAck> {
        let leader = self.leader(&batch.topic, batch.partition)?;
        let conn = self.broker(leader)?;
        let broker = conn.broker().to_owned();
        let version = match txn {
            Some(tv) => tv.version_for::<ProduceRequest>(conn),
            None => conn.version::<ProduceRequest>(),
        }?;
        if req.acks == Acks::None.wire() {
            // No answer comes back: nothing is pending.
            conn.send_versioned(req, version, false).map(|_| ())?;
            return Ok(ProduceAck {
                base_offset: -1,
                log_append_time: -1,
            });
        }
        let (topic, partition) = (batch.topic.as_str(), batch.partition);
        let outcome = conn
            .send_versioned(req, version, true)
            .and_then(|pending| conn.receive::<ProduceRequest>(pending))
            .and_then(|resp| {
                produce_results(&resp, std::slice::from_ref(&batch), &broker)
                    .into_iter()
                    .find(|r| r.topic == topic && r.partition == partition)
                    .map(|r| r.result)
                    .unwrap_or_else(|| {
                        Err(Error::Protocol {
                            broker: broker.clone(),
                            detail: format!(
                                "Produce response has no result for {topic}-{partition}"
                            ),
                        })
                    })
            });
        if let Err(e) = &outcome {
            self.note_error(e, Some(topic));
        }
        outcome
    }
}
