//! Who the producer is to the brokers, as one state machine: without idempotence, nobody;
//! with it, a producer id and epoch from the cluster (asked for in the background until it
//! comes), a new epoch when a partition's sequences must start again (KIP-360), a new id
//! when the epochs run out; and once fenced, or refused for good, the end.
//!
//! ```text
//!   Off ───────────────────────────────────────────────▶ Fatal (never left)
//!   Asking ──answer──▶ Known ──epoch exhausted──▶ Asking
//!     │  └─retriable─▶ Asking (backoff)   │
//!     └──refused────────────────────────────┴──fenced──▶ Fatal
//! ```
//!
//! Bookkeeping only: the writer asks (through its links) and acts on what this says.

use std::sync::Arc;
use std::time::Instant;

use crate::client::{self, Backoff};

use super::lane::Identity;

/// Where the producer's identity stands.
#[derive(Debug)]
enum State {
    /// No idempotence: batches carry no producer id.
    Off,
    /// Waiting for a producer id: asked (again) at `retry_at`; `last_error` says why the
    /// last ask failed, for records that expire meanwhile.
    Asking {
        retry_at: Instant,
        backoff: Backoff,
        last_error: Option<Arc<client::Error>>,
    },
    /// Batches carry this id and epoch (the newest; lanes may still use an older epoch).
    Known(Identity),
    /// The producer cannot go on: fenced by a newer one, or refused an id for good.
    Fatal(Arc<client::Error>),
}

/// What an answer to an ask for a producer id did.
#[derive(Debug, Clone)]
pub(crate) enum Answered {
    /// The producer now has this identity.
    Known(Identity),
    /// A retriable failure: asked again after a backoff.
    Retry(Arc<client::Error>),
    /// Refused for good: the producer stops.
    Fatal(Arc<client::Error>),
}

/// What a lane that must start its sequences again gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// The producer's newest epoch, which the lane has not used yet.
    Use(Identity),
    /// A new epoch, made now for this lane (the broker takes a higher epoch from sequence
    /// 0, KIP-360).
    Bumped(Identity),
    /// Every epoch of this id is used: a new producer id is being asked for, and the lane
    /// waits for it.
    Wait,
}

/// The producer's identity and what has happened to it.
#[derive(Debug)]
pub(crate) struct ProducerId {
    state: State,
    /// A transactional producer: its epoch comes from the coordinator (InitProducerId,
    /// EndTxn), never from a local bump.
    transactional: bool,
    /// The last identity known, for the summary once the producer has stopped.
    last: Option<Identity>,
    epoch_bumps: u64,
}

impl ProducerId {
    /// Without idempotence.
    pub(crate) fn off() -> Self {
        ProducerId {
            state: State::Off,
            last: None,
            epoch_bumps: 0,
            transactional: false,
        }
    }

    /// Idempotent, with an id the cluster gave already.
    pub(crate) fn known(identity: Identity) -> Self {
        ProducerId {
            state: State::Known(identity),
            last: Some(identity),
            epoch_bumps: 0,
            transactional: false,
        }
    }

    /// The same, for a transactional producer: epochs come from the coordinator only.
    pub(crate) fn transactional(mut self) -> Self {
        self.transactional = true;
        self
    }

    /// A new identity from the coordinator (an EndTxn of transaction version 2, an epoch
    /// bump): batches carry it from now on. Ignored once stopped.
    pub(crate) fn adopt(&mut self, identity: Identity) {
        if matches!(self.state, State::Known(_)) {
            self.state = State::Known(identity);
            self.last = Some(identity);
        }
    }

    /// Idempotent, the id still to be asked for (first at once, then after `backoff`).
    pub(crate) fn asking(backoff: Backoff) -> Self {
        ProducerId {
            state: State::Asking {
                retry_at: Instant::now(),
                backoff,
                last_error: None,
            },
            last: None,
            epoch_bumps: 0,
            transactional: false,
        }
    }

    /// Whether batches are numbered (idempotence on), whatever the state now.
    pub(crate) fn idempotent(&self) -> bool {
        match &self.state {
            State::Off => false,
            State::Fatal(_) => self.last.is_some(),
            State::Asking { .. } | State::Known(_) => true,
        }
    }

    /// The identity new batches carry; `None` without idempotence, while asking, or stopped.
    pub(crate) fn current(&self) -> Option<Identity> {
        match self.state {
            State::Known(i) => Some(i),
            _ => None,
        }
    }

    /// The last identity known, also after the producer stopped.
    pub(crate) fn last(&self) -> Option<Identity> {
        self.last
    }

    /// Idempotent but without an id now: nothing can be sent.
    pub(crate) fn waiting(&self) -> bool {
        matches!(self.state, State::Asking { .. })
    }

    /// When the next ask is due, while asking.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        match &self.state {
            State::Asking { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    /// Why the last ask failed, while asking.
    pub(crate) fn last_error(&self) -> Option<Arc<client::Error>> {
        match &self.state {
            State::Asking { last_error, .. } => last_error.clone(),
            _ => None,
        }
    }

    /// Why the producer stopped, once it has.
    pub(crate) fn fatal(&self) -> Option<&Arc<client::Error>> {
        match &self.state {
            State::Fatal(e) => Some(e),
            _ => None,
        }
    }

    /// Times a lane's sequences started again under a new epoch.
    pub(crate) fn epoch_bumps(&self) -> u64 {
        self.epoch_bumps
    }

    /// Take in the cluster's answer to an ask (InitProducerId). Ignored unless asking.
    pub(crate) fn answered(
        &mut self,
        result: Result<(i64, i16), client::Error>,
        now: Instant,
    ) -> Option<Answered> {
        let State::Asking {
            backoff,
            last_error,
            retry_at,
        } = &mut self.state
        else {
            return None;
        };
        Some(match result {
            Ok((id, epoch)) => {
                let identity = Identity { id, epoch };
                self.state = State::Known(identity);
                self.last = Some(identity);
                Answered::Known(identity)
            }
            Err(e) if e.is_retriable() => {
                let e = Arc::new(e);
                *retry_at = now + backoff.next_delay();
                *last_error = Some(e.clone());
                Answered::Retry(e)
            }
            Err(e) => {
                let e = Arc::new(e);
                self.state = State::Fatal(e.clone());
                Answered::Fatal(e)
            }
        })
    }

    /// A lane under `lane` (its identity) must start its sequences again: with the
    /// producer's newest epoch if the lane has not used it, else a new one. `None` when
    /// the producer has no identity to give (not idempotent, asking, stopped).
    pub(crate) fn renew(&mut self, lane: Option<Identity>, backoff: Backoff) -> Option<Renewal> {
        let current = self.current()?;
        if self.transactional {
            // The transaction fails instead, and its end brings the new epoch.
            return None;
        }
        if lane != Some(current) {
            return Some(Renewal::Use(current));
        }
        if current.epoch == i16::MAX {
            // Out of epochs for this id: a new id, which every lane that needs one adopts;
            // the others go on under the old one meanwhile.
            self.state = State::Asking {
                retry_at: Instant::now(),
                backoff,
                last_error: None,
            };
            return Some(Renewal::Wait);
        }
        let bumped = Identity {
            id: current.id,
            epoch: current.epoch + 1,
        };
        self.state = State::Known(bumped);
        self.last = Some(bumped);
        self.epoch_bumps += 1;
        Some(Renewal::Bumped(bumped))
    }

    /// The producer cannot go on (`err`: fenced, refused). True the first time.
    pub(crate) fn stop(&mut self, err: Arc<client::Error>) -> bool {
        if self.fatal().is_some() {
            return false;
        }
        self.state = State::Fatal(err);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
    }

    fn broker(code: client::KafkaCode) -> client::Error {
        client::Error::Broker {
            code,
            at: client::Location {
                broker: "b".into(),
                api: "InitProducerId",
                topic: None,
                partition: None,
            },
            message: None,
        }
    }

    #[test]
    fn asking_retries_retriable_failures_then_knows() {
        let mut p = ProducerId::asking(backoff());
        assert!(p.idempotent() && p.waiting() && p.current().is_none());
        let now = Instant::now();
        assert!(p.retry_at().unwrap() <= now);
        let load = broker(client::KafkaCode::CoordinatorLoadInProgress);
        assert!(matches!(
            p.answered(Err(load), now),
            Some(Answered::Retry(_))
        ));
        assert!(p.retry_at().unwrap() > now, "a backoff before the next ask");
        assert!(p.last_error().is_some());
        let known = p.answered(Ok((7, 3)), now);
        let id = Identity { id: 7, epoch: 3 };
        assert!(matches!(known, Some(Answered::Known(i)) if i == id));
        assert_eq!(
            (p.current(), p.last(), p.waiting()),
            (Some(id), Some(id), false)
        );
        assert!(p.last_error().is_none() && p.retry_at().is_none());
        // Answers come only to asks.
        assert!(p.answered(Ok((8, 0)), now).is_none());
        assert_eq!(p.current(), Some(id));
    }

    #[test]
    fn a_refusal_stops_the_producer_for_good() {
        let mut p = ProducerId::asking(backoff());
        let denied = broker(client::KafkaCode::ClusterAuthorizationFailed);
        assert!(matches!(
            p.answered(Err(denied), Instant::now()),
            Some(Answered::Fatal(_))
        ));
        assert!(p.fatal().is_some() && p.current().is_none() && !p.waiting());
        assert_eq!(p.renew(None, backoff()), None);
    }

    #[test]
    fn renewal_uses_the_newest_epoch_once_then_bumps() {
        let id = Identity { id: 7, epoch: 3 };
        let mut p = ProducerId::known(id);
        // A lane still on an older epoch takes the newest without a bump.
        let older = Identity { id: 7, epoch: 2 };
        assert_eq!(p.renew(Some(older), backoff()), Some(Renewal::Use(id)));
        assert_eq!(p.epoch_bumps(), 0);
        // A lane on the newest epoch needs a new one.
        let next = Identity { id: 7, epoch: 4 };
        assert_eq!(p.renew(Some(id), backoff()), Some(Renewal::Bumped(next)));
        assert_eq!((p.current(), p.epoch_bumps()), (Some(next), 1));
        // A lane without an identity yet takes the current one.
        assert_eq!(p.renew(None, backoff()), Some(Renewal::Use(next)));
    }

    #[test]
    fn an_exhausted_epoch_asks_for_a_new_id() {
        let last = Identity {
            id: 7,
            epoch: i16::MAX,
        };
        let mut p = ProducerId::known(last);
        assert_eq!(p.renew(Some(last), backoff()), Some(Renewal::Wait));
        assert!(p.waiting() && p.current().is_none());
        assert_eq!(p.last(), Some(last));
        let new = Identity { id: 9, epoch: 0 };
        assert!(
            matches!(p.answered(Ok((9, 0)), Instant::now()), Some(Answered::Known(i)) if i == new)
        );
    }

    #[test]
    fn stopping_is_once_and_final() {
        let id = Identity { id: 1, epoch: 0 };
        let mut p = ProducerId::known(id);
        let fenced = Arc::new(broker(client::KafkaCode::ProducerFenced));
        assert!(p.stop(fenced.clone()));
        assert!(!p.stop(fenced));
        assert!(p.current().is_none() && p.idempotent());
        assert_eq!(p.last(), Some(id), "still reported in the summary");
        let off = ProducerId::off();
        assert!(!off.idempotent() && off.current().is_none() && !off.waiting());
    }
}
