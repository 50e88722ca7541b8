//! How a share consumer acknowledges a record ([`Acknowledge`]), and what became of the
//! acknowledgements it sent ([`AckOutcome`]).

use crate::client::AckKind;

/// How a share consumer acknowledges a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acknowledge {
    /// Processed: done for good.
    Accept,
    /// Not processed: delivered again (to any member of the group), its delivery count one
    /// higher; archived once delivered `share.delivery.count.limit` times.
    Release,
    /// Poison: archived at once, never delivered again.
    Reject,
    /// Still working on it: its acquisition lock starts again (KIP-1222, Kafka 4.2+), and it
    /// must still be acknowledged later. On older brokers the request is refused and counted
    /// in [`ConsumerStats::acknowledge_failures`](crate::consumer::ConsumerStats::acknowledge_failures).
    Renew,
}

impl Acknowledge {
    pub(super) fn kind(self) -> AckKind {
        match self {
            Acknowledge::Accept => AckKind::Accept,
            Acknowledge::Release => AckKind::Release,
            Acknowledge::Reject => AckKind::Reject,
            Acknowledge::Renew => AckKind::Renew,
        }
    }

    pub(super) fn from_kind(kind: AckKind) -> Option<Acknowledge> {
        match kind {
            AckKind::Accept => Some(Acknowledge::Accept),
            AckKind::Release => Some(Acknowledge::Release),
            AckKind::Reject => Some(Acknowledge::Reject),
            AckKind::Renew => Some(Acknowledge::Renew),
            AckKind::Gap => None,
        }
    }
}

/// What became of the acknowledgements of one partition sent in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOutcome {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The records, by offset, and how they were acknowledged.
    pub acknowledged: Vec<(i64, Acknowledge)>,
    /// `None`: the broker took them. Otherwise why not (most often an acquisition lock that
    /// ran out first; such records are delivered again), or, starting `unknown:`, why it is
    /// not known: the request carrying them failed before its answer, and the broker may
    /// have taken them (those it did not take are delivered again).
    pub error: Option<String>,
}
