//! What can go wrong in the producer's own calls: building or closing it, a transactional
//! call, and [`Producer::send_and_wait`](super::Producer::send_and_wait).

use std::sync::Arc;
use std::time::Duration;

use crate::client;

use super::delivery::{DeliveryError, SendError, WaitError};
use super::stats::Summary;

/// Errors building or closing a producer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster could not be reached or refused a request.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// A configuration value is not usable.
    #[error("invalid producer config `{field}`: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// `close` was called before; the first call's summary is returned by it only.
    #[error("the producer was already closed")]
    AlreadyClosed,
    /// The writer thread panicked (a kpipe bug, or a custom [`Balance`](super::Balance)
    /// that panicked; a delivery callback's panic is caught and does not stop it). The
    /// producer stopped taking records at once
    /// ([`Producer::is_closed`](super::Producer::is_closed) turned true) and reported what
    /// it still held as at a close deadline: not attempted, or unacknowledged if it was sent.
    /// Records the panic caught in the writer's hands were never reported (their receipts
    /// end as [`WaitError::Lost`]); the summary counts them as failed, as
    /// `"lost: the writer thread panicked"`.
    #[error("the producer's writer thread panicked: {message}")]
    WriterPanicked {
        /// The panic's message.
        message: String,
        /// What became of the records it took; `None` if reporting them panicked too.
        summary: Option<Box<Summary>>,
    },
}

/// Why a transactional call did not succeed, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The call does not fit: no transaction is open, one is open already, one is being
    /// ended, or the producer has no `transactional_id`. The message says what to call.
    #[error("{0}")]
    State(String),
    /// This transaction cannot commit (a record or its offsets were refused, the group
    /// moved on without this member, ...): call
    /// [`abort_transaction`](super::Producer::abort_transaction), then go on with a new one.
    #[error("the transaction cannot commit; abort it, then begin a new one: {0}")]
    Abortable(Arc<client::Error>),
    /// The producer cannot go on: a newer producer with the same transactional id fenced
    /// it, or it is not authorised. Close it; a new producer with the id takes over.
    #[error("the transactional producer cannot go on; close it (a new producer with the same transactional id takes over): {0}")]
    Fatal(Arc<client::Error>),
    /// No outcome within the call's timeout: it is still under way. Call the same again
    /// to wait for its outcome (a commit asked again waits for the same commit).
    #[error("{what} did not finish within {after:?}; call it again to learn its outcome")]
    Timeout {
        /// The call.
        what: &'static str,
        /// Its timeout.
        after: Duration,
    },
    /// The producer is closed or closing.
    #[error("the producer is closed")]
    Closed,
}

impl TransactionError {
    /// Whether the transaction must be aborted (and the producer may then go on).
    pub fn is_abortable(&self) -> bool {
        matches!(self, TransactionError::Abortable(_))
    }

    /// Whether the producer cannot go on.
    pub fn is_fatal(&self) -> bool {
        matches!(self, TransactionError::Fatal(_))
    }
}

/// Why [`Producer::send_and_wait`](super::Producer::send_and_wait) gave no delivery.
#[derive(Debug, thiserror::Error)]
pub enum SendAndWaitError {
    /// The record was not accepted (it is inside).
    #[error(transparent)]
    Send(SendError),
    /// It was accepted but not delivered.
    #[error(transparent)]
    Delivery(DeliveryError),
    /// No outcome came in time.
    #[error(transparent)]
    Wait(WaitError),
}
