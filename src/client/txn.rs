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

use super::error::{Error, KafkaCode};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::error::Location;
    use TxnErrorClass::{Abortable, Fatal, Refind, Retriable};

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
