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

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, EndTxnRequest, ProduceRequest, TxnOffsetCommitRequest};
use kafka_protocol::protocol::{Message, Request, VersionRange};

use super::cluster::Cluster;
use super::connection::{api_key, Connection};
use super::error::{Error, KafkaCode, Result};
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::connection::tests::api_versions;
    use crate::client::error::Location;
    use kafka_protocol::messages::api_versions_response::FinalizedFeatureKey;
    use kafka_protocol::messages::{AddPartitionsToTxnRequest, InitProducerIdRequest};
    use kafka_protocol::protocol::StrBytes;
    use TxnErrorClass::{Abortable, Fatal, Refind, Retriable};

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
}
