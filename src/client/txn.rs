//! Kafka transactions (KIP-98, KIP-447, KIP-890) as blocking one-try primitives, for the
//! transactional producer to drive: which transaction protocol the cluster speaks, the
//! coordinator requests of a transaction, the versions each may be sent at, and what each
//! request's error codes mean. No retries here: every call is one request, and its error
//! goes back to the caller, who asks [`TxnErrorClass::of`] what to do about it.
//!
//! ```text
//!                 transaction version 1                transaction version 2 (KIP-890)
//! start           FindCoordinator(key type 1), InitProducerId(transactional id)
//! each partition  AddPartitionsToTxn v<=3, then        Produce v12+ (the leader adds the
//!                 Produce v<=11                        partition to the transaction)
//! offsets         AddOffsetsToTxn, then                TxnOffsetCommit v5+ (adds the group)
//!                 TxnOffsetCommit v<=4 (group coordinator, with the consumer's generation)
//! end             EndTxn v<=4                          EndTxn v5+: every commit and abort
//!                                                      bumps the epoch and returns it
//! ```
//!
//! The broker infers a transaction's protocol from the request versions, so the version caps
//! are part of the protocol, not a negotiation detail: [`TransactionVersion::version_for`].
//! Requests to a coordinator go on its dedicated connection ([`Cluster::dedicated`]), so
//! they never queue behind the produce requests pipelined on the data connection.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProduceRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Message, Request, StrBytes, VersionRange};

use super::cluster::Cluster;
use super::connection::{api_key, Connection};
use super::error::{Error, KafkaCode, Location, Result};
use super::group::{at, by_topic, group_id, s, CoordinatorKind, GroupMember, TopicPartition};
use super::produce::{transactional_produce_request, Acks, PartitionBatch, ProduceAck};
use super::versions::{api_name, client_range, BrokerVersions};

/// The transaction protocol a cluster speaks: its finalized feature `transaction.version`,
/// where the brokers also offer the request versions that protocol needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransactionVersion {
    /// The original protocol (KIP-98): partitions and groups join a transaction through
    /// AddPartitionsToTxn and AddOffsetsToTxn before their writes, and the producer keeps
    /// its epoch from one transaction to the next.
    V1,
    /// KIP-890 part 2 (Kafka 4.0+): Produce v12+ and TxnOffsetCommit v5+ add partitions and
    /// the group themselves, and every EndTxn (v5+) bumps the producer's epoch and returns
    /// it, so a late write of an ended transaction can never join the next one.
    V2,
}

impl TransactionVersion {
    /// The version a broker's ApiVersions answer implies (franz-go's rule): V2 only when
    /// `transaction.version` is 2 or more **and** both sides can use Produce v12+, EndTxn v5+
    /// and TxnOffsetCommit v5+; without those versions the implicit adds would not happen
    /// and the broker would refuse the writes (TRANSACTION_ABORTABLE from Kafka 4.4 and
    /// 3.9.1, as `tests/txn_client.rs` shows).
    pub(crate) fn from_broker(versions: &BrokerVersions) -> TransactionVersion {
        let offers = |key: ApiKey, encodable: VersionRange, at_least: i16| {
            versions
                .choose(key, client_range(key, encodable))
                .is_ok_and(|v| v >= at_least)
        };
        let v2 = versions.feature("transaction.version").unwrap_or(0) >= 2
            && offers(ApiKey::Produce, ProduceRequest::VERSIONS, 12)
            && offers(ApiKey::EndTxn, EndTxnRequest::VERSIONS, 5)
            && offers(ApiKey::TxnOffsetCommit, TxnOffsetCommitRequest::VERSIONS, 5);
        if v2 {
            TransactionVersion::V2
        } else {
            TransactionVersion::V1
        }
    }

    /// The versions of `key` a transaction of this version may be sent at, out of `ours`.
    /// Under V1: Produce <= 11, TxnOffsetCommit <= 4, EndTxn <= 4 (a higher version would
    /// tell the broker it is a V2 transaction). Under V2: Produce >= 12, TxnOffsetCommit
    /// >= 5, EndTxn >= 5. Always AddPartitionsToTxn <= 3 (v4+ is the brokers' own form).
    fn allowed(self, key: ApiKey, ours: VersionRange) -> VersionRange {
        use TransactionVersion::{V1, V2};
        let (min, max) = match (self, key) {
            (_, ApiKey::AddPartitionsToTxn) => (i16::MIN, 3),
            (V1, ApiKey::Produce) => (i16::MIN, 11),
            (V1, ApiKey::TxnOffsetCommit | ApiKey::EndTxn) => (i16::MIN, 4),
            (V2, ApiKey::Produce) => (12, i16::MAX),
            (V2, ApiKey::TxnOffsetCommit | ApiKey::EndTxn) => (5, i16::MAX),
            _ => (i16::MIN, i16::MAX),
        };
        VersionRange {
            min: ours.min.max(min),
            max: ours.max.min(max),
        }
    }

    /// The version to send request `R` at on `conn` in a transaction of this version: the
    /// version the connection negotiated, capped (or refused) as
    /// [`TransactionVersion`]'s rules say. Send with [`Connection::send_versioned`].
    pub(crate) fn version_for<R: Request>(self, conn: &Connection) -> Result<i16> {
        pick_version::<R>(conn, Some(self), 0)
    }
}

/// The version to send `R` at on `conn`: the highest both sides support, within what
/// transaction version `txn` allows, and at least `min` (for fields a call needs).
fn pick_version<R: Request>(
    conn: &Connection,
    txn: Option<TransactionVersion>,
    min: i16,
) -> Result<i16> {
    let key = api_key::<R>();
    choose(conn.broker_versions(), key, R::VERSIONS, txn, min).map_err(|(ours, theirs)| {
        Error::UnsupportedVersion {
            broker: conn.broker().to_owned(),
            api: api_name(key),
            ours,
            theirs,
        }
    })
}

/// [`pick_version`] without the connection: `Err((ours, theirs))` describes the gap.
fn choose(
    versions: &BrokerVersions,
    key: ApiKey,
    encodable: VersionRange,
    txn: Option<TransactionVersion>,
    min: i16,
) -> std::result::Result<i16, (String, String)> {
    let mut ours = client_range(key, encodable);
    if let Some(tv) = txn {
        ours = tv.allowed(key, ours);
    }
    ours.min = ours.min.max(min);
    versions.choose(key, ours)
}

/// A transactional producer as the coordinator knows it: its transactional id, and the
/// producer id and epoch that InitProducerId (or, under transaction version 2, the last
/// EndTxn) gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnProducer {
    /// The `transactional.id`: stable across restarts, so a new instance fences the old.
    pub transactional_id: String,
    /// Producer id.
    pub id: i64,
    /// Producer epoch.
    pub epoch: i16,
}

impl TxnProducer {
    fn wire_id(&self) -> TransactionalId {
        TransactionalId(s(&self.transactional_id))
    }
}

// ---------------------------------------------------------------------------------------
// What an error means
// ---------------------------------------------------------------------------------------

/// A request of a transaction, for [`TxnErrorClass::of`]: one error code means different
/// things to different requests (INVALID_PRODUCER_EPOCH is fatal from a coordinator but
/// abortable from a partition leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnApi {
    /// FindCoordinator for the transactional id or the group.
    FindCoordinator,
    /// InitProducerId with a transactional id.
    InitProducerId,
    /// AddPartitionsToTxn (transaction version 1).
    AddPartitionsToTxn,
    /// AddOffsetsToTxn (transaction version 1).
    AddOffsetsToTxn,
    /// TxnOffsetCommit, to the group coordinator.
    TxnOffsetCommit,
    /// EndTxn, committing or aborting.
    EndTxn {
        /// Whether it commits (an abort that fails with TRANSACTION_ABORTABLE is fatal,
        /// so a producer cannot loop aborting).
        commit: bool,
    },
    /// Produce of a transactional batch.
    Produce,
}

/// What a transactional producer does about an error: the Java client's
/// `TransactionManager` handlers (Kafka 4.1), request by request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnErrorClass {
    /// Send the same request again after a backoff, to the same broker
    /// (CONCURRENT_TRANSACTIONS while the previous transaction's markers are written,
    /// COORDINATOR_LOAD_IN_PROGRESS, a leader moving under a Produce, ...).
    Retriable,
    /// The coordinator moved or cannot be reached: look it up again with FindCoordinator,
    /// then send the same request (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, a broken
    /// connection; REQUEST_TIMED_OUT too for TxnOffsetCommit).
    Refind,
    /// This transaction cannot commit: abort it, and the producer goes on with the next.
    /// From InitProducerId (authorization), the producer stays uninitialized and may try
    /// again once the cause is fixed.
    Abortable,
    /// The producer cannot go on (fenced by a newer instance, not authorized, a protocol
    /// mismatch): drop it; only a new InitProducerId makes a usable producer.
    Fatal,
}

impl TxnErrorClass {
    /// What `err` from `api` means for the transaction. Broker errors go by their code
    /// ([`of_code`](Self::of_code)); a broken connection or a timeout is [`Refind`](Self::Refind)
    /// for a coordinator request (the Java client looks the coordinator up again) and
    /// [`Retriable`](Self::Retriable) for FindCoordinator and Produce. A timed-out EndTxn has
    /// an unknown outcome: send the same EndTxn again, never the opposite one.
    pub fn of(api: TxnApi, err: &Error) -> TxnErrorClass {
        match err {
            Error::Broker { code, .. } => TxnErrorClass::of_code(api, *code),
            e if e.is_retriable() => match api {
                TxnApi::FindCoordinator | TxnApi::Produce => TxnErrorClass::Retriable,
                _ => TxnErrorClass::Refind,
            },
            // A batch that cannot be written fails the transaction, not the producer.
            Error::UnknownTopic { .. }
            | Error::UnknownPartition { .. }
            | Error::Records(_)
            | Error::FrameTooLarge { .. }
                if api == TxnApi::Produce =>
            {
                TxnErrorClass::Abortable
            }
            // Versions, credentials, certificates, garbage from the broker, misuse.
            _ => TxnErrorClass::Fatal,
        }
    }

    /// What Kafka error `code` from `api` means (design brief, section 2).
    ///
    /// "Retriable" is the Java client's sense, which also covers CONCURRENT_TRANSACTIONS
    /// (51), unlike [`KafkaCode::is_retriable`]. UNKNOWN_PRODUCER_ID (59), which the Java
    /// client makes abortable only where the coordinator can bump the epoch
    /// (InitProducerId v3+), is abortable here: every broker kpipe speaks to (Kafka 3.x,
    /// 4.x) can. A Produce answered DUPLICATE_SEQUENCE_NUMBER (46) was written already; the
    /// producer takes it as a success before it asks this.
    pub fn of_code(api: TxnApi, code: KafkaCode) -> TxnErrorClass {
        use KafkaCode as K;
        use TxnErrorClass::{Abortable, Fatal, Refind, Retriable};
        let moved = matches!(code, K::NotCoordinator | K::CoordinatorNotAvailable);
        let retriable = code.is_retriable() || code == K::ConcurrentTransactions;
        // Another instance with the same transactional id took over (or, before KIP-588,
        // the same said with 47).
        let fenced = matches!(code, K::ProducerFenced | K::InvalidProducerEpoch);
        let doomed = fenced
            || matches!(
                code,
                K::TransactionalIdAuthorizationFailed
                    | K::InvalidTxnState
                    | K::InvalidProducerIdMapping
            );
        match api {
            TxnApi::FindCoordinator => match code {
                _ if retriable => Retriable,
                K::GroupAuthorizationFailed | K::TransactionAbortable => Abortable,
                _ => Fatal,
            },
            TxnApi::InitProducerId => match code {
                _ if moved => Refind,
                _ if retriable => Retriable,
                K::TransactionalIdAuthorizationFailed
                | K::ClusterAuthorizationFailed
                | K::TransactionAbortable => Abortable,
                // Fenced, INVALID_TRANSACTION_TIMEOUT (over the broker's
                // transaction.max.timeout.ms), UNSUPPORTED_VERSION, ...
                _ => Fatal,
            },
            TxnApi::AddPartitionsToTxn => match code {
                _ if moved => Refind,
                _ if retriable => Retriable,
                _ if doomed => Fatal,
                // TOPIC_AUTHORIZATION_FAILED, OPERATION_NOT_ATTEMPTED (another partition
                // of the request failed), UNKNOWN_PRODUCER_ID, TRANSACTION_ABORTABLE and any
                // other partition error.
                _ => Abortable,
            },
            TxnApi::AddOffsetsToTxn => match code {
                _ if moved => Refind,
                _ if retriable => Retriable,
                K::UnknownProducerId | K::GroupAuthorizationFailed | K::TransactionAbortable => {
                    Abortable
                }
                _ => Fatal,
            },
            TxnApi::TxnOffsetCommit => match code {
                _ if moved || code == K::RequestTimedOut => Refind,
                _ if retriable => Retriable,
                // KIP-447: the group moved on without this member (ILLEGAL_GENERATION,
                // UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, and what newer coordinators say
                // for the same), so its offsets must not commit with this transaction.
                K::IllegalGeneration
                | K::UnknownMemberId
                | K::FencedInstanceId
                | K::StaleMemberEpoch
                | K::GroupIdNotFound
                | K::RebalanceInProgress
                | K::GroupAuthorizationFailed
                | K::TransactionAbortable => Abortable,
                // Fenced, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                // UNSUPPORTED_FOR_MESSAGE_FORMAT, OFFSET_METADATA_TOO_LARGE, ...
                _ => Fatal,
            },
            TxnApi::EndTxn { commit } => match code {
                _ if moved => Refind,
                _ if retriable => Retriable,
                K::UnknownProducerId => Abortable,
                K::TransactionAbortable if commit => Abortable,
                // Including TRANSACTION_ABORTABLE on an abort (KAFKA-19250).
                _ => Fatal,
            },
            TxnApi::Produce => match code {
                K::ProducerFenced
                | K::TransactionalIdAuthorizationFailed
                | K::ClusterAuthorizationFailed
                | K::InvalidProducerIdMapping
                | K::UnsupportedVersion => Fatal,
                // Leaders moving, too few replicas, and (v12+) CONCURRENT_TRANSACTIONS
                // from the leader's implicit add while the previous transaction ends.
                _ if retriable => Retriable,
                // INVALID_PRODUCER_EPOCH (KIP-588: the coordinator's PRODUCER_FENCED comes
                // back from a leader as 47, and the EndTxn that follows is then fatal),
                // INVALID_TXN_STATE, UNKNOWN_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE_NUMBER,
                // TRANSACTION_ABORTABLE, record errors, ...
                _ => Abortable,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests and answers, without I/O
// ---------------------------------------------------------------------------------------

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Build an InitProducerId request for `transactional_id`. `current`, the producer id and
/// epoch held now (v3+, KIP-360), asks the coordinator to bump that epoch rather than hand
/// out a fresh one, and is refused with PRODUCER_FENCED when another instance moved on.
pub(crate) fn init_transactional_request(
    transactional_id: &str,
    transaction_timeout: Duration,
    current: Option<(i64, i16)>,
) -> InitProducerIdRequest {
    let (id, epoch) = current.unwrap_or((-1, -1));
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = Some(TransactionalId(s(transactional_id)));
    req.transaction_timeout_ms = ms(transaction_timeout);
    req.producer_id = ProducerId(id);
    req.producer_epoch = epoch;
    // Two-phase commit (KIP-939, v6+) is not used.
    req.enable_2_pc = false;
    req.keep_prepared_txn = false;
    req
}

/// Read an InitProducerId response: the producer id and epoch.
pub(crate) fn read_init_transactional(
    resp: &InitProducerIdResponse,
    broker: &str,
) -> Result<(i64, i16)> {
    Error::check(resp.error_code, at(broker, "InitProducerId"), None)?;
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// Build an AddPartitionsToTxn request (the client form, v3 and below).
pub(crate) fn add_partitions_request(
    producer: &TxnProducer,
    partitions: &[TopicPartition],
) -> AddPartitionsToTxnRequest {
    let mut req = AddPartitionsToTxnRequest::default();
    req.v3_and_below_transactional_id = producer.wire_id();
    req.v3_and_below_producer_id = ProducerId(producer.id);
    req.v3_and_below_producer_epoch = producer.epoch;
    req.v3_and_below_topics = by_topic(partitions.iter().map(|tp| (tp, ())))
        .into_iter()
        .map(|(t, ps)| {
            let mut x = AddPartitionsToTxnTopic::default();
            x.name = TopicName(s(t));
            x.partitions = ps.into_iter().map(|(p, ())| p).collect();
            x
        })
        .collect();
    req
}

fn partition_at(broker: &str, api: &'static str, topic: &str, partition: i32) -> Location {
    Location {
        broker: broker.to_owned(),
        api,
        topic: Some(topic.to_owned()),
        partition: Some(partition),
    }
}

/// Read an AddPartitionsToTxn response: one result per partition.
pub(crate) fn read_add_partitions(
    resp: &AddPartitionsToTxnResponse,
    broker: &str,
) -> Result<Vec<(TopicPartition, Result<()>)>> {
    // Only v4+ has a top-level code; below it is 0.
    Error::check(resp.error_code, at(broker, "AddPartitionsToTxn"), None)?;
    let mut out = Vec::new();
    for t in &resp.results_by_topic_v3_and_below {
        for p in &t.results_by_partition {
            let r = Error::check(
                p.partition_error_code,
                || partition_at(broker, "AddPartitionsToTxn", &t.name.0, p.partition_index),
                None,
            );
            out.push(((t.name.0.to_string(), p.partition_index), r));
        }
    }
    Ok(out)
}

/// Build an AddOffsetsToTxn request: `group`'s offsets will be committed with the
/// transaction.
pub(crate) fn add_offsets_request(producer: &TxnProducer, group: &str) -> AddOffsetsToTxnRequest {
    let mut req = AddOffsetsToTxnRequest::default();
    req.transactional_id = producer.wire_id();
    req.producer_id = ProducerId(producer.id);
    req.producer_epoch = producer.epoch;
    req.group_id = group_id(group);
    req
}

/// Read an AddOffsetsToTxn response.
pub(crate) fn read_add_offsets(resp: &AddOffsetsToTxnResponse, broker: &str) -> Result<()> {
    Error::check(resp.error_code, at(broker, "AddOffsetsToTxn"), None)
}

/// Build a TxnOffsetCommit request for `offsets` (the next offset to read, per partition)
/// of `group`. `member` is the consumer's group metadata (KIP-447, v3+), by which the group
/// coordinator fences a member the group has moved on from; `None` is a producer outside
/// group management (generation -1, no member id). Below v3 the metadata is left out.
pub(crate) fn txn_offset_commit_request(
    producer: &TxnProducer,
    group: &str,
    member: Option<&GroupMember>,
    offsets: &BTreeMap<TopicPartition, i64>,
    version: i16,
) -> TxnOffsetCommitRequest {
    let mut req = TxnOffsetCommitRequest::default();
    req.transactional_id = producer.wire_id();
    req.group_id = group_id(group);
    req.producer_id = ProducerId(producer.id);
    req.producer_epoch = producer.epoch;
    req.generation_id = -1;
    req.member_id = StrBytes::default();
    req.group_instance_id = None;
    if let Some(m) = member.filter(|_| version >= 3) {
        req.generation_id = m.generation;
        req.member_id = s(&m.member_id);
        req.group_instance_id = m.instance_id.as_deref().map(s);
    }
    req.topics = by_topic(offsets.iter().map(|(tp, o)| (tp, *o)))
        .into_iter()
        .map(|(t, ps)| {
            let mut x = TxnOffsetCommitRequestTopic::default();
            x.name = TopicName(s(t));
            x.partitions = ps
                .into_iter()
                .map(|(p, o)| {
                    let mut y = TxnOffsetCommitRequestPartition::default();
                    y.partition_index = p;
                    y.committed_offset = o;
                    y.committed_leader_epoch = -1;
                    y.committed_metadata = Some(StrBytes::default());
                    y
                })
                .collect();
            x
        })
        .collect();
    req
}

/// Read a TxnOffsetCommit response: one result per partition.
pub(crate) fn read_txn_offset_commit(
    resp: &TxnOffsetCommitResponse,
    broker: &str,
) -> Vec<(TopicPartition, Result<()>)> {
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            let r = Error::check(
                p.error_code,
                || partition_at(broker, "TxnOffsetCommit", &t.name.0, p.partition_index),
                None,
            );
            out.push(((t.name.0.to_string(), p.partition_index), r));
        }
    }
    out
}

/// Build an EndTxn request: commit (`true`) or abort.
pub(crate) fn end_txn_request(producer: &TxnProducer, commit: bool) -> EndTxnRequest {
    let mut req = EndTxnRequest::default();
    req.transactional_id = producer.wire_id();
    req.producer_id = ProducerId(producer.id);
    req.producer_epoch = producer.epoch;
    req.committed = commit;
    req
}

/// Read an EndTxn response sent at `version`: the producer id and epoch for the next
/// transaction when the coordinator gave them (v5+, transaction version 2), else `None`.
pub(crate) fn read_end_txn(
    resp: &EndTxnResponse,
    version: i16,
    broker: &str,
) -> Result<Option<(i64, i16)>> {
    Error::check(resp.error_code, at(broker, "EndTxn"), None)?;
    Ok((version >= 5 && resp.producer_id.0 >= 0)
        .then_some((resp.producer_id.0, resp.producer_epoch)))
}

// ---------------------------------------------------------------------------------------
// The calls
// ---------------------------------------------------------------------------------------

impl Cluster {
    /// The transaction protocol of the cluster, as a broker it talks to reports it (the
    /// feature is cluster-wide). Read it when a transaction starts and keep it until the
    /// transaction ends: a transaction ends with the protocol it began with.
    pub fn transaction_version(&mut self) -> Result<TransactionVersion> {
        let (_, versions) = self.some_broker_versions()?;
        Ok(TransactionVersion::from_broker(&versions))
    }

    /// Find the transaction coordinator of `transactional_id` (FindCoordinator, key type 1)
    /// and return its broker id. One try.
    pub fn find_transaction_coordinator(&mut self, transactional_id: &str) -> Result<i32> {
        self.find_coordinator_of(CoordinatorKind::Transaction, transactional_id)
    }

    /// InitProducerId for `transactional_id` at its `coordinator`: the producer id and epoch
    /// to stamp on the transaction's batches. Any earlier instance with the same id is
    /// fenced, and a transaction it left open is aborted (the coordinator answers
    /// CONCURRENT_TRANSACTIONS until that abort is written: retry). `current` (v3+), the id
    /// and epoch held now, bumps that epoch instead (after an abortable error under
    /// transaction version 1). `transaction_timeout` must not exceed the broker's
    /// `transaction.max.timeout.ms` (15 min by default): INVALID_TRANSACTION_TIMEOUT.
    /// One try; the caller retries as [`TxnErrorClass::of`] says.
    pub fn init_transactional_id(
        &mut self,
        coordinator: i32,
        transactional_id: &str,
        transaction_timeout: Duration,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        let min = if current.is_some() { 3 } else { 0 };
        let (broker, _, resp) = self.coordinator_request(coordinator, None, min, |_| {
            init_transactional_request(transactional_id, transaction_timeout, current)
        })?;
        read_init_transactional(&resp, &broker)
    }

    /// AddPartitionsToTxn (transaction version 1 only; sent at v3 or below): `partitions`
    /// join the producer's transaction, before any batch is produced to them. One result
    /// per partition; the error is for a request that got no answer.
    pub fn add_partitions_to_txn(
        &mut self,
        coordinator: i32,
        producer: &TxnProducer,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let (broker, _, resp) =
            self.coordinator_request(coordinator, Some(TransactionVersion::V1), 0, |_| {
                add_partitions_request(producer, partitions)
            })?;
        read_add_partitions(&resp, &broker)
    }

    /// AddOffsetsToTxn (transaction version 1 only): the transaction will carry offsets of
    /// `group`; send [`txn_offset_commit`](Self::txn_offset_commit) next. One try.
    pub fn add_offsets_to_txn(
        &mut self,
        coordinator: i32,
        producer: &TxnProducer,
        group: &str,
    ) -> Result<()> {
        let (broker, _, resp) = self.coordinator_request(coordinator, None, 0, |_| {
            add_offsets_request(producer, group)
        })?;
        read_add_offsets(&resp, &broker)
    }

    /// TxnOffsetCommit to `group`'s coordinator (found with
    /// [`find_coordinator`](Self::find_coordinator)): `offsets` (the next offset to read)
    /// commit when the transaction does. `member` is the consumer's group metadata
    /// (generation or member epoch, member id, instance id; read just before this call),
    /// `None` outside group management. Sent at the version `version` allows (v5+, which
    /// also adds the group to the transaction, under V2; v4 or below under V1, after
    /// [`add_offsets_to_txn`](Self::add_offsets_to_txn)). One result per partition.
    pub fn txn_offset_commit(
        &mut self,
        group_coordinator: i32,
        producer: &TxnProducer,
        version: TransactionVersion,
        group: &str,
        member: Option<&GroupMember>,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        // The group metadata exists from v3 (KIP-447): without it a zombie could commit.
        let min = if member.is_some() { 3 } else { 0 };
        let (broker, _, resp) =
            self.coordinator_request(group_coordinator, Some(version), min, |v| {
                txn_offset_commit_request(producer, group, member, offsets, v)
            })?;
        Ok(read_txn_offset_commit(&resp, &broker))
    }

    /// EndTxn: commit (`commit` true) or abort the producer's transaction. Send it only
    /// once every batch of the transaction has been answered. Sent at the version
    /// `version` allows; under V2 (v5+) the answer carries the producer id and epoch for the
    /// next transaction, which the producer must adopt (its sequences restart at 0), else
    /// `None`. One try.
    pub fn end_txn(
        &mut self,
        coordinator: i32,
        producer: &TxnProducer,
        version: TransactionVersion,
        commit: bool,
    ) -> Result<Option<(i64, i16)>> {
        let (broker, sent_at, resp) =
            self.coordinator_request(coordinator, Some(version), 0, |_| {
                end_txn_request(producer, commit)
            })?;
        read_end_txn(&resp, sent_at, &broker)
    }

    /// Produce one encoded batch to one partition inside the transaction of
    /// `transactional_id`, with acks=all, at the Produce version transaction version
    /// `version` allows, and wait for the acknowledgement. The batch must be transactional
    /// ([`BatchBuilder::set_transactional`](super::BatchBuilder::set_transactional)) and
    /// stamped with the producer's id, epoch and sequence; under V1 its partition must
    /// have been added with [`add_partitions_to_txn`](Self::add_partitions_to_txn). One
    /// try: a building block for tests and tools; the producer pipelines these.
    pub fn produce_transactional(
        &mut self,
        transactional_id: &str,
        version: TransactionVersion,
        topic: &str,
        partition: i32,
        records: Bytes,
        timeout: Duration,
    ) -> Result<ProduceAck> {
        let batch = PartitionBatch {
            topic: topic.to_owned(),
            topic_id: self.topic(topic)?.id,
            partition,
            records,
        };
        let req = transactional_produce_request(
            transactional_id,
            Acks::All,
            timeout,
            std::slice::from_ref(&batch),
        );
        self.produce_to_leader(batch, &req, Some(version))
    }

    /// Send one request to a coordinator on its dedicated connection, at the version
    /// [`pick_version`] gives, and wait for the answer: the broker's address, the version
    /// sent and the response.
    fn coordinator_request<R: Request>(
        &mut self,
        coordinator: i32,
        txn: Option<TransactionVersion>,
        min: i16,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(String, i16, R::Response)> {
        let conn = self.dedicated(coordinator)?;
        let version = pick_version::<R>(conn, txn, min)?;
        let req = build(version);
        let pending = conn.send_versioned(&req, version, true)?;
        let resp = conn.receive::<R>(pending)?;
        Ok((conn.broker().to_owned(), version, resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::connection::tests::api_versions;
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    use kafka_protocol::messages::api_versions_response::FinalizedFeatureKey;
    use kafka_protocol::protocol::Encodable;
    use TxnErrorClass::{Abortable, Fatal, Refind, Retriable};

    fn producer() -> TxnProducer {
        TxnProducer {
            transactional_id: "tx-1".into(),
            id: 4000,
            epoch: 7,
        }
    }

    /// A broker's ApiVersions answer with the transaction APIs at these maxima.
    fn broker(feature: Option<i16>, produce: i16, end_txn: i16, offsets: i16) -> BrokerVersions {
        let mut resp = api_versions(&[
            (ApiKey::Produce, 3, produce),
            (ApiKey::InitProducerId, 0, 5),
            (ApiKey::AddPartitionsToTxn, 0, 5),
            (ApiKey::AddOffsetsToTxn, 0, 4),
            (ApiKey::EndTxn, 0, end_txn),
            (ApiKey::TxnOffsetCommit, 0, offsets),
        ]);
        if let Some(level) = feature {
            let mut f = FinalizedFeatureKey::default();
            f.name = StrBytes::from_static_str("transaction.version");
            f.min_version_level = level;
            f.max_version_level = level;
            resp.finalized_features.push(f);
        }
        BrokerVersions::from_response(&resp)
    }

    #[test]
    fn version_2_needs_the_feature_and_every_request_version() {
        use TransactionVersion::{V1, V2};
        let cases = [
            // Kafka 4.4 as `scripts/kafka up` runs it.
            (broker(Some(2), 13, 5, 6), V2),
            (broker(Some(3), 12, 5, 5), V2),
            // Kafka 3.9.1: transaction.version 1 (or none reported).
            (broker(Some(1), 11, 4, 4), V1),
            (broker(Some(0), 13, 5, 5), V1),
            (broker(None, 13, 5, 5), V1),
            // The feature without the versions it needs.
            (broker(Some(2), 11, 5, 5), V1),
            (broker(Some(2), 13, 4, 5), V1),
            (broker(Some(2), 13, 5, 4), V1),
        ];
        for (i, (versions, want)) in cases.iter().enumerate() {
            assert_eq!(TransactionVersion::from_broker(versions), *want, "case {i}");
        }
    }

    #[test]
    fn versions_are_capped_by_the_transaction_version() {
        use TransactionVersion::{V1, V2};
        let b = broker(Some(2), 13, 5, 5);
        let pick = |key, encodable, txn, min| choose(&b, key, encodable, txn, min);
        let produce = ProduceRequest::VERSIONS;
        let end = EndTxnRequest::VERSIONS;
        let offsets = TxnOffsetCommitRequest::VERSIONS;
        let add = AddPartitionsToTxnRequest::VERSIONS;
        let init = InitProducerIdRequest::VERSIONS;
        assert_eq!(pick(ApiKey::Produce, produce, None, 0), Ok(13));
        assert_eq!(pick(ApiKey::Produce, produce, Some(V1), 0), Ok(11));
        assert_eq!(pick(ApiKey::Produce, produce, Some(V2), 0), Ok(13));
        assert_eq!(pick(ApiKey::EndTxn, end, Some(V1), 0), Ok(4));
        assert_eq!(pick(ApiKey::EndTxn, end, Some(V2), 0), Ok(5));
        assert_eq!(pick(ApiKey::TxnOffsetCommit, offsets, Some(V1), 0), Ok(4));
        assert_eq!(pick(ApiKey::TxnOffsetCommit, offsets, Some(V2), 0), Ok(5));
        assert_eq!(pick(ApiKey::AddPartitionsToTxn, add, Some(V1), 0), Ok(3));
        assert_eq!(pick(ApiKey::AddPartitionsToTxn, add, Some(V2), 0), Ok(3));
        assert_eq!(pick(ApiKey::InitProducerId, init, Some(V1), 0), Ok(5));
        assert_eq!(pick(ApiKey::InitProducerId, init, None, 3), Ok(5));

        // A V2 transaction cannot go to a broker without the V2 versions.
        let old = broker(Some(1), 11, 4, 4);
        assert_eq!(
            choose(&old, ApiKey::EndTxn, end, Some(V2), 0),
            Err(("5..5".into(), "0..4".into()))
        );
        assert_eq!(
            choose(&old, ApiKey::Produce, produce, Some(V2), 0),
            Err(("12..13".into(), "3..11".into()))
        );
        assert_eq!(choose(&old, ApiKey::Produce, produce, Some(V1), 0), Ok(11));
        // Nor a call needing v3 fields to a broker without v3.
        let ancient =
            BrokerVersions::from_response(&api_versions(&[(ApiKey::InitProducerId, 0, 2)]));
        assert!(choose(&ancient, ApiKey::InitProducerId, init, None, 3).is_err());
        assert_eq!(
            choose(&ancient, ApiKey::InitProducerId, init, None, 0),
            Ok(2)
        );
    }

    #[test]
    fn errors_are_classified_per_request() {
        use KafkaCode as K;
        use TxnApi::*;
        let abort = EndTxn { commit: false };
        let commit = EndTxn { commit: true };
        #[rustfmt::skip]
        let table: &[(TxnApi, KafkaCode, TxnErrorClass)] = &[
            // FindCoordinator
            (FindCoordinator, K::CoordinatorNotAvailable, Retriable),
            (FindCoordinator, K::CoordinatorLoadInProgress, Retriable),
            (FindCoordinator, K::TransactionalIdAuthorizationFailed, Fatal),
            (FindCoordinator, K::GroupAuthorizationFailed, Abortable),
            (FindCoordinator, K::TransactionAbortable, Abortable),
            (FindCoordinator, K::InvalidRequest, Fatal),
            // InitProducerId
            (InitProducerId, K::NotCoordinator, Refind),
            (InitProducerId, K::CoordinatorNotAvailable, Refind),
            (InitProducerId, K::ConcurrentTransactions, Retriable),
            (InitProducerId, K::CoordinatorLoadInProgress, Retriable),
            (InitProducerId, K::TransactionalIdAuthorizationFailed, Abortable),
            (InitProducerId, K::ClusterAuthorizationFailed, Abortable),
            (InitProducerId, K::TransactionAbortable, Abortable),
            (InitProducerId, K::ProducerFenced, Fatal),
            (InitProducerId, K::InvalidProducerEpoch, Fatal),
            (InitProducerId, K::InvalidTransactionTimeout, Fatal),
            (InitProducerId, K::UnsupportedVersion, Fatal),
            // AddPartitionsToTxn
            (AddPartitionsToTxn, K::NotCoordinator, Refind),
            (AddPartitionsToTxn, K::CoordinatorNotAvailable, Refind),
            (AddPartitionsToTxn, K::ConcurrentTransactions, Retriable),
            (AddPartitionsToTxn, K::UnknownTopicOrPartition, Retriable),
            (AddPartitionsToTxn, K::ProducerFenced, Fatal),
            (AddPartitionsToTxn, K::InvalidProducerEpoch, Fatal),
            (AddPartitionsToTxn, K::TransactionalIdAuthorizationFailed, Fatal),
            (AddPartitionsToTxn, K::InvalidTxnState, Fatal),
            (AddPartitionsToTxn, K::InvalidProducerIdMapping, Fatal),
            (AddPartitionsToTxn, K::TopicAuthorizationFailed, Abortable),
            (AddPartitionsToTxn, K::OperationNotAttempted, Abortable),
            (AddPartitionsToTxn, K::UnknownProducerId, Abortable),
            (AddPartitionsToTxn, K::TransactionAbortable, Abortable),
            // AddOffsetsToTxn
            (AddOffsetsToTxn, K::NotCoordinator, Refind),
            (AddOffsetsToTxn, K::ConcurrentTransactions, Retriable),
            (AddOffsetsToTxn, K::CoordinatorLoadInProgress, Retriable),
            (AddOffsetsToTxn, K::UnknownProducerId, Abortable),
            (AddOffsetsToTxn, K::GroupAuthorizationFailed, Abortable),
            (AddOffsetsToTxn, K::TransactionAbortable, Abortable),
            (AddOffsetsToTxn, K::ProducerFenced, Fatal),
            (AddOffsetsToTxn, K::InvalidProducerEpoch, Fatal),
            (AddOffsetsToTxn, K::TransactionalIdAuthorizationFailed, Fatal),
            (AddOffsetsToTxn, K::InvalidTxnState, Fatal),
            (AddOffsetsToTxn, K::InvalidProducerIdMapping, Fatal),
            (AddOffsetsToTxn, K::UnknownServerError, Fatal),
            // TxnOffsetCommit (to the group coordinator)
            (TxnOffsetCommit, K::NotCoordinator, Refind),
            (TxnOffsetCommit, K::CoordinatorNotAvailable, Refind),
            (TxnOffsetCommit, K::RequestTimedOut, Refind),
            (TxnOffsetCommit, K::CoordinatorLoadInProgress, Retriable),
            (TxnOffsetCommit, K::UnknownTopicOrPartition, Retriable),
            (TxnOffsetCommit, K::ConcurrentTransactions, Retriable),
            (TxnOffsetCommit, K::IllegalGeneration, Abortable),
            (TxnOffsetCommit, K::UnknownMemberId, Abortable),
            (TxnOffsetCommit, K::FencedInstanceId, Abortable),
            (TxnOffsetCommit, K::StaleMemberEpoch, Abortable),
            (TxnOffsetCommit, K::GroupAuthorizationFailed, Abortable),
            (TxnOffsetCommit, K::TransactionAbortable, Abortable),
            (TxnOffsetCommit, K::ProducerFenced, Fatal),
            (TxnOffsetCommit, K::InvalidProducerEpoch, Fatal),
            (TxnOffsetCommit, K::TransactionalIdAuthorizationFailed, Fatal),
            (TxnOffsetCommit, K::UnsupportedForMessageFormat, Fatal),
            (TxnOffsetCommit, K::OffsetMetadataTooLarge, Fatal),
            // EndTxn
            (commit, K::NotCoordinator, Refind),
            (abort, K::CoordinatorNotAvailable, Refind),
            (commit, K::ConcurrentTransactions, Retriable),
            (abort, K::ConcurrentTransactions, Retriable),
            (commit, K::CoordinatorLoadInProgress, Retriable),
            (commit, K::ProducerFenced, Fatal),
            (abort, K::InvalidProducerEpoch, Fatal),
            (commit, K::TransactionalIdAuthorizationFailed, Fatal),
            (commit, K::InvalidTxnState, Fatal),
            (abort, K::InvalidProducerIdMapping, Fatal),
            (commit, K::UnknownProducerId, Abortable),
            (commit, K::TransactionAbortable, Abortable),
            (abort, K::TransactionAbortable, Fatal),
            (commit, K::UnknownServerError, Fatal),
            // Produce inside a transaction
            (Produce, K::NotLeaderOrFollower, Retriable),
            (Produce, K::NotEnoughReplicas, Retriable),
            (Produce, K::RequestTimedOut, Retriable),
            (Produce, K::ConcurrentTransactions, Retriable),
            (Produce, K::InvalidProducerEpoch, Abortable),
            (Produce, K::InvalidTxnState, Abortable),
            (Produce, K::UnknownProducerId, Abortable),
            (Produce, K::OutOfOrderSequenceNumber, Abortable),
            (Produce, K::TransactionAbortable, Abortable),
            (Produce, K::TopicAuthorizationFailed, Abortable),
            (Produce, K::MessageTooLarge, Abortable),
            (Produce, K::ProducerFenced, Fatal),
            (Produce, K::TransactionalIdAuthorizationFailed, Fatal),
            (Produce, K::ClusterAuthorizationFailed, Fatal),
            (Produce, K::InvalidProducerIdMapping, Fatal),
            (Produce, K::UnsupportedVersion, Fatal),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(api, code, want)| TxnErrorClass::of_code(*api, *code) != *want)
            .map(|(api, code, want)| {
                format!(
                    "{api:?} {code:?} ({}): {:?}, wanted {want:?}",
                    code.code(),
                    TxnErrorClass::of_code(*api, *code)
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn errors_without_a_code_are_classified_too() {
        let broken = Error::Io {
            broker: "b".into(),
            api: "EndTxn",
            source: std::io::Error::other("reset"),
        };
        assert_eq!(
            TxnErrorClass::of(TxnApi::EndTxn { commit: true }, &broken),
            Refind
        );
        assert_eq!(TxnErrorClass::of(TxnApi::TxnOffsetCommit, &broken), Refind);
        assert_eq!(TxnErrorClass::of(TxnApi::Produce, &broken), Retriable);
        assert_eq!(
            TxnErrorClass::of(TxnApi::FindCoordinator, &broken),
            Retriable
        );
        let unsupported = Error::UnsupportedVersion {
            broker: "b".into(),
            api: "EndTxn",
            ours: "5..5".into(),
            theirs: "0..4".into(),
        };
        assert_eq!(
            TxnErrorClass::of(TxnApi::EndTxn { commit: true }, &unsupported),
            Fatal
        );
        assert_eq!(TxnErrorClass::of(TxnApi::Produce, &unsupported), Fatal);
        let gone = Error::UnknownTopic { topic: "t".into() };
        assert_eq!(TxnErrorClass::of(TxnApi::Produce, &gone), Abortable);
        let fenced = Error::Broker {
            code: KafkaCode::InvalidProducerEpoch,
            at: Location::default(),
            message: None,
        };
        assert_eq!(TxnErrorClass::of(TxnApi::Produce, &fenced), Abortable);
        assert_eq!(
            TxnErrorClass::of(TxnApi::EndTxn { commit: false }, &fenced),
            Fatal
        );
    }

    /// `req` encodes at `version` and decodes back to itself.
    fn round_trips<R: Request + PartialEq + std::fmt::Debug>(req: &R, version: i16) {
        let mut buf = bytes::BytesMut::new();
        req.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        let back = R::decode(&mut buf.freeze(), version).unwrap();
        assert_eq!(&back, req, "v{version}");
    }

    #[test]
    fn init_sets_every_field() {
        let fresh = init_transactional_request("tx", Duration::from_secs(60), None);
        assert_eq!(
            fresh.transactional_id.as_deref().map(|t| t.as_str()),
            Some("tx")
        );
        assert_eq!(fresh.transaction_timeout_ms, 60_000);
        assert_eq!((fresh.producer_id.0, fresh.producer_epoch), (-1, -1));
        for v in 0..=5 {
            round_trips(&fresh, v);
        }
        let bump = init_transactional_request("tx", Duration::from_secs(60), Some((9, 3)));
        assert_eq!((bump.producer_id.0, bump.producer_epoch), (9, 3));
        round_trips(&bump, 3);
        assert!(bump.encode(&mut bytes::BytesMut::new(), 2).is_err());
    }

    #[test]
    fn add_partitions_uses_the_client_form_and_reads_each_partition() {
        let parts = [
            ("b".to_string(), 1),
            ("a".to_string(), 0),
            ("b".to_string(), 0),
        ];
        let req = add_partitions_request(&producer(), &parts);
        assert_eq!(req.v3_and_below_transactional_id.0.as_str(), "tx-1");
        assert_eq!(
            (
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch
            ),
            (4000, 7)
        );
        let topics: Vec<(&str, &[i32])> = req
            .v3_and_below_topics
            .iter()
            .map(|t| (t.name.0.as_str(), t.partitions.as_slice()))
            .collect();
        assert_eq!(topics, [("a", &[0][..]), ("b", &[1, 0][..])]);
        for v in 0..=3 {
            round_trips(&req, v);
        }

        let mut resp = AddPartitionsToTxnResponse::default();
        let mut t = AddPartitionsToTxnTopicResult::default();
        t.name = TopicName(s("a"));
        for (p, code) in [(0, 0), (1, KafkaCode::ProducerFenced.code())] {
            let mut r = AddPartitionsToTxnPartitionResult::default();
            r.partition_index = p;
            r.partition_error_code = code;
            t.results_by_partition.push(r);
        }
        resp.results_by_topic_v3_and_below.push(t);
        let got = read_add_partitions(&resp, "b:9092").unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].1.is_ok());
        let err = got[1].1.as_ref().unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::ProducerFenced));
        assert!(
            err.to_string()
                .contains("AddPartitionsToTxn from b:9092 for a-1"),
            "{err}"
        );
    }

    #[test]
    fn txn_offset_commit_carries_the_group_metadata_from_v3() {
        let member = GroupMember {
            member_id: "m-1".into(),
            generation: 12,
            instance_id: Some("host-a".into()),
        };
        let offsets = BTreeMap::from([(("t".to_string(), 2), 42), (("t".to_string(), 0), 7)]);
        let v5 = txn_offset_commit_request(&producer(), "g", Some(&member), &offsets, 5);
        assert_eq!((v5.producer_id.0, v5.producer_epoch), (4000, 7));
        assert_eq!(v5.group_id.0.as_str(), "g");
        assert_eq!(v5.generation_id, 12);
        assert_eq!(v5.member_id.as_str(), "m-1");
        assert_eq!(v5.group_instance_id.as_deref(), Some("host-a"));
        let parts: Vec<(i32, i64, i32)> = v5.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                )
            })
            .collect();
        assert_eq!(parts, [(0, 7, -1), (2, 42, -1)]);
        round_trips(&v5, 5);
        round_trips(&v5, 3);
        // Below v3 the metadata does not exist: left out, so the request still encodes.
        let v2 = txn_offset_commit_request(&producer(), "g", Some(&member), &offsets, 2);
        assert_eq!((v2.generation_id, v2.member_id.as_str()), (-1, ""));
        round_trips(&v2, 2);
        // Outside group management.
        let standalone = txn_offset_commit_request(&producer(), "g", None, &offsets, 5);
        assert_eq!(
            (
                standalone.generation_id,
                standalone.member_id.as_str(),
                standalone.group_instance_id
            ),
            (-1, "", None)
        );
    }

    #[test]
    fn end_txn_returns_the_next_epoch_only_from_v5() {
        let req = end_txn_request(&producer(), true);
        assert!(req.committed);
        assert_eq!((req.producer_id.0, req.producer_epoch), (4000, 7));
        for v in 0..=5 {
            round_trips(&req, v);
        }
        let mut resp = EndTxnResponse::default();
        resp.producer_id = ProducerId(4000);
        resp.producer_epoch = 8;
        assert_eq!(read_end_txn(&resp, 5, "b").unwrap(), Some((4000, 8)));
        assert_eq!(read_end_txn(&resp, 4, "b").unwrap(), None);
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        assert_eq!(read_end_txn(&resp, 5, "b").unwrap(), None);
        resp.error_code = KafkaCode::ProducerFenced.code();
        let err = read_end_txn(&resp, 5, "b").unwrap_err();
        assert_eq!(
            TxnErrorClass::of(TxnApi::EndTxn { commit: true }, &err),
            Fatal
        );
    }
}
