//! One partition's pipeline: the batches sealed for it and not yet finished, the sequence
//! numbers an idempotent producer gives them (KIP-98), which of them may be sent now, and
//! what each broker answer means for them.
//!
//! Bookkeeping only, no I/O: the writer sends and reads, and the model test at the bottom
//! drives a lane with random answers against a broker that enforces sequences.
//!
//! The rules, from the broker's side of the contract:
//! - A batch is sealed once, with a base sequence that follows the previous batch's last.
//!   A retry sends the same records with the same sequence, so a broker that wrote it
//!   already answers with the original offset (or `DUPLICATE_SEQUENCE_NUMBER`).
//! - Up to `max_in_flight` batches (at most 5, the broker remembers that many) are in
//!   flight, all to one broker, sent in sequence order, once the broker has written one of
//!   the lane's batches under its producer id and epoch. Before that, one at a time: a
//!   broker that does not know a producer takes any first sequence (KIP-360), so a second
//!   batch could be written while the first, refused (NOT_LEADER, say), waits for a retry.
//!   After a failure nothing is sent until every batch behind the failed one is back, then
//!   the lane resends from the oldest.
//! - The broker writes a batch only if its sequence follows the last one it wrote. So when a
//!   batch is known not to be written (rejected, or expired after a definite refusal), no later
//!   batch can be either, and the later ones are renumbered down to close the gap.
//! - `OUT_OF_ORDER_SEQUENCE_NUMBER` or `UNKNOWN_PRODUCER_ID` for the oldest batch, when its
//!   sequence is current, means the broker lost (or never had) what the lane assumes: the lane
//!   asks for a new epoch and, once nothing is in flight, numbers its batches from 0 under it
//!   (KIP-360). For a later batch, or for an answer to a sequence since renumbered, it is only
//!   the echo of an earlier failure: the batch is resent in turn.
//! - Without idempotence the lane keeps one batch in flight, so order holds all the same.
//!
//! Room for transactions, the next step: the identity then comes from InitProducerId with a
//! transactional id, and a new epoch from the coordinator (InitProducerId with the current
//! id and epoch) instead of the local bump in `Writer::renew_epoch`; a lane's first batch of
//! a transaction waits for AddPartitionsToTxn as a lane without an identity waits today
//! ([`Lane::awaiting_identity`]); fencing already stops the producer for good; and EndTxn
//! needs every lane empty, which `Writer::is_idle` already answers.

use std::collections::VecDeque;
use std::time::Instant;

use crate::client::{self, KafkaCode};

/// The base sequence of a batch sent without idempotence.
pub(crate) const NO_SEQUENCE: i32 = -1;

/// Kafka's limit on batches in flight per partition for an idempotent producer.
pub(crate) const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

/// The producer id and epoch that sequences belong to.
pub(crate) use super::stats::ProducerIdentity as Identity;

/// `seq + n`, wrapping from `i32::MAX` to 0 as the broker does.
pub(crate) fn seq_add(seq: i32, n: i32) -> i32 {
    if seq > i32::MAX - n {
        n - (i32::MAX - seq) - 1
    } else {
        seq + n
    }
}

/// `seq - n`, the inverse of [`seq_add`].
fn seq_sub(seq: i32, n: i32) -> i32 {
    if seq < n {
        i32::MAX - (n - seq) + 1
    } else {
        seq - n
    }
}

/// What the lane stamped on a batch: an encoding must carry exactly this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) identity: Option<Identity>,
    pub(crate) base: i32,
}

/// A batch sealed for the partition.
#[derive(Debug)]
pub(crate) struct Sealed<B> {
    /// Unique within the lane, so answers find their batch whatever was renumbered.
    pub(crate) id: u64,
    pub(crate) records: i32,
    pub(crate) stamp: Stamp,
    /// The stamp of the attempt in flight, if one is.
    attempt: Option<(i32, Stamp)>,
    /// An attempt ended without an answer (a broken connection, a timeout) or with one that
    /// says the leader appended it: the batch may be in the log.
    pub(crate) maybe_written: bool,
    /// Not to be sent before this (a retry backoff).
    pub(crate) retry_at: Option<Instant>,
    /// Times sent.
    pub(crate) sends: u32,
    pub(crate) body: B,
}

impl<B> Sealed<B> {
    pub(crate) fn in_flight(&self) -> bool {
        self.attempt.is_some()
    }
}

/// What the lane allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send (again) the sealed batch at this index.
    Resend(usize),
    /// Seal a new batch from the partition's queue and send it.
    Seal,
    /// Nothing may be sent before an answer comes or this time passes (`None`: an answer).
    Wait(Option<Instant>),
}

/// A broker's answer (or its absence) for one batch, as the lane needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Written (or a duplicate of what was written).
    Written,
    /// Worth retrying; `maybe_written` when the batch may have reached the log (no answer, a
    /// broker timeout after the append).
    Retriable { maybe_written: bool, at: Instant },
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER` or `UNKNOWN_PRODUCER_ID`.
    OutOfSequence,
    /// Refused for good and not written (too large, invalid, not authorised).
    Rejected,
    /// `INVALID_PRODUCER_EPOCH` / `PRODUCER_FENCED`: the producer may not go on.
    Fenced,
}

/// What a Produce error says about the batch, before any timing (the writer adds the time
/// of a retry to make it a [`Reply`]). One place for what each error code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written before: the broker recognised a retry (`DUPLICATE_SEQUENCE_NUMBER`).
    Written,
    /// Worth another try. `maybe_written`: the batch may be in the log (no answer, an
    /// answer that could not be read, or one saying the leader appended it). `split`: the
    /// broker refused it whole as too large, so it goes again as two halves.
    Retry { maybe_written: bool, split: bool },
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER` or `UNKNOWN_PRODUCER_ID`, to an idempotent producer.
    OutOfSequence,
    /// Refused for good, written nowhere.
    Rejected,
    /// `INVALID_PRODUCER_EPOCH` or `PRODUCER_FENCED`: a newer producer took over.
    Fenced,
}

/// What the Produce error `err` means for a batch of `records` records.
pub(crate) fn verdict(err: &client::Error, idempotent: bool, records: i32) -> Verdict {
    match err.kafka_code() {
        Some(KafkaCode::DuplicateSequenceNumber) => Verdict::Written,
        Some(KafkaCode::OutOfOrderSequenceNumber | KafkaCode::UnknownProducerId) if idempotent => {
            Verdict::OutOfSequence
        }
        Some(KafkaCode::InvalidProducerEpoch | KafkaCode::ProducerFenced) => Verdict::Fenced,
        // A leader whose implicit add to a transaction (Produce v12+) met the previous
        // transaction still ending: not written, and worth another try (the Java client's
        // `RetriableException`; the crate does not count it retriable).
        Some(KafkaCode::ConcurrentTransactions) => Verdict::Retry {
            maybe_written: false,
            split: false,
        },
        Some(KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge) if records > 1 => {
            Verdict::Retry {
                maybe_written: false,
                split: true,
            }
        }
        code if err.is_retriable() || unreadable(err) => Verdict::Retry {
            maybe_written: matches!(
                code,
                None | Some(KafkaCode::RequestTimedOut | KafkaCode::NotEnoughReplicasAfterAppend)
            ),
            split: false,
        },
        _ => Verdict::Rejected,
    }
}

/// An answer the client could not read (garbled, out of turn): whether the broker wrote
/// the batch is unknown.
fn unreadable(e: &client::Error) -> bool {
    matches!(
        e,
        client::Error::Protocol { .. }
            | client::Error::FrameTooLarge { .. }
            | client::Error::Misuse(_)
    )
}

/// What became of the batch answered.
#[derive(Debug)]
pub(crate) enum Outcome<B> {
    /// Written: report it delivered.
    Done(Sealed<B>),
    /// Kept, to be resent when the lane allows.
    Kept,
    /// Removed, written nowhere: report it failed.
    Failed(Sealed<B>),
    /// Removed: the producer is fenced.
    Fenced(Sealed<B>),
    /// No batch in flight has this id (a kpipe bug if it ever shows).
    Unknown,
}

/// One partition's sealed batches, oldest first.
#[derive(Debug)]
pub(crate) struct Lane<B> {
    batches: VecDeque<Sealed<B>>,
    in_flight: usize,
    max_in_flight: usize,
    /// `None` without idempotence.
    identity: Option<Identity>,
    next_seq: i32,
    /// The broker lost track of this lane's sequences: start again under a new epoch.
    needs_epoch: bool,
    /// The broker has written a batch of this lane under its current identity, so it knows
    /// the lane's sequences and refuses one out of turn. Until then it takes any first
    /// sequence (KIP-360: it cannot tell a new producer from one whose state expired), so a
    /// later batch could be written before an earlier one that failed: one batch at a time.
    confirmed: bool,
    next_id: u64,
}

impl<B> Lane<B> {
    /// A lane with sequences under `identity`, or without them (then one batch in flight).
    pub(crate) fn new(identity: Option<Identity>, max_in_flight: usize) -> Self {
        let max_in_flight = match identity {
            Some(_) => max_in_flight.clamp(1, MAX_IDEMPOTENT_IN_FLIGHT),
            None => 1,
        };
        Lane {
            batches: VecDeque::new(),
            in_flight: 0,
            max_in_flight,
            identity,
            next_seq: 0,
            needs_epoch: false,
            confirmed: false,
            next_id: 0,
        }
    }

    /// An idempotent lane whose producer id is not known yet: it sends nothing before
    /// [`restart`](Self::restart) gives it one.
    pub(crate) fn awaiting_identity(max_in_flight: usize) -> Self {
        Lane {
            max_in_flight: max_in_flight.clamp(1, MAX_IDEMPOTENT_IN_FLIGHT),
            needs_epoch: true,
            ..Lane::new(None, max_in_flight)
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Whether the lane waits for a new epoch (see [`restart`](Self::restart)).
    pub(crate) fn needs_epoch(&self) -> bool {
        self.needs_epoch
    }

    pub(crate) fn batches(&self) -> impl Iterator<Item = &Sealed<B>> {
        self.batches.iter()
    }

    pub(crate) fn get(&self, index: usize) -> &Sealed<B> {
        &self.batches[index]
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> &mut Sealed<B> {
        &mut self.batches[index]
    }

    /// What may be sent now to `leader`, the partition's leader.
    pub(crate) fn next(&self, now: Instant, leader: i32) -> Next {
        let limit = if self.confirmed {
            self.max_in_flight
        } else {
            1
        };
        if self.needs_epoch || self.in_flight >= limit {
            return Next::Wait(None);
        }
        // Batches in flight to a former leader must come back first: a new leader could
        // otherwise write a later batch before an earlier one resolves.
        if let Some((broker, _)) = self.batches.front().and_then(|b| b.attempt) {
            if broker != leader {
                return Next::Wait(None);
            }
        }
        // Batches in flight are a prefix; the first one after it goes next.
        let Some(i) = self.batches.iter().position(|b| !b.in_flight()) else {
            // A batch that may be in the log is settled before anything new goes: later
            // batches could otherwise push it out of the five the broker remembers, and its
            // resend would no longer be recognised as a duplicate.
            if self.batches.iter().any(|b| b.maybe_written) {
                return Next::Wait(None);
            }
            return Next::Seal;
        };
        if self.batches.iter().skip(i).any(Sealed::in_flight) {
            return Next::Wait(None); // after a failure: the later ones come back first
        }
        match self.batches[i].retry_at {
            Some(at) if at > now => Next::Wait(Some(at)),
            _ => Next::Resend(i),
        }
    }

    /// The stamp the next sealed batch gets.
    pub(crate) fn next_stamp(&self) -> Stamp {
        Stamp {
            identity: self.identity,
            base: if self.identity.is_some() {
                self.next_seq
            } else {
                NO_SEQUENCE
            },
        }
    }

    /// The batch with this id.
    pub(crate) fn find(&self, id: u64) -> Option<&Sealed<B>> {
        self.batches.iter().find(|b| b.id == id)
    }

    /// Every batch, the lane left empty (the producer gives up at its close deadline).
    pub(crate) fn take_all(&mut self) -> VecDeque<Sealed<B>> {
        self.in_flight = 0;
        std::mem::take(&mut self.batches)
    }

    /// Seal a batch of `records` records: the next sequence is its.
    pub(crate) fn seal(&mut self, records: i32, body: B) -> usize {
        let base = match self.identity {
            Some(_) => {
                let base = self.next_seq;
                self.next_seq = seq_add(base, records);
                base
            }
            None => NO_SEQUENCE,
        };
        self.next_id += 1;
        self.batches.push_back(Sealed {
            id: self.next_id,
            records,
            stamp: Stamp {
                identity: self.identity,
                base,
            },
            attempt: None,
            maybe_written: false,
            retry_at: None,
            sends: 0,
            body,
        });
        self.batches.len() - 1
    }

    /// The batch at `index` was sent to `broker` with its current stamp.
    pub(crate) fn sent(&mut self, index: usize, broker: i32) {
        let b = &mut self.batches[index];
        debug_assert!(b.attempt.is_none(), "sent twice");
        b.attempt = Some((broker, b.stamp));
        b.sends += 1;
        b.retry_at = None;
        self.in_flight += 1;
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.batches.iter().position(|b| b.id == id)
    }

    /// Take in the answer for the attempt in flight of batch `id`.
    pub(crate) fn answer(&mut self, id: u64, reply: Reply) -> Outcome<B> {
        let Some(i) = self.position(id) else {
            return Outcome::Unknown;
        };
        let Some((_, sent)) = self.batches[i].attempt.take() else {
            return Outcome::Unknown;
        };
        self.in_flight -= 1;
        // Renumbered while in flight: the answer is for sequences no longer the batch's,
        // and they were never written (renumbering follows a gap below them).
        let stale = sent != self.batches[i].stamp;
        match reply {
            Reply::Written => {
                self.confirmed = true;
                Outcome::Done(self.remove(i))
            }
            Reply::Retriable { maybe_written, at } => {
                let b = &mut self.batches[i];
                b.maybe_written |= maybe_written && !stale;
                b.retry_at = Some(at);
                Outcome::Kept
            }
            Reply::OutOfSequence => {
                // The oldest batch, sent with its current sequence: the broker really lacks
                // what comes before it.
                if !stale && i == 0 && self.identity.is_some() {
                    self.needs_epoch = true;
                }
                Outcome::Kept
            }
            Reply::Rejected => Outcome::Failed(self.drop_at(i)),
            Reply::Fenced => Outcome::Fenced(self.remove(i)),
        }
    }

    /// Give up on a batch not in flight (its delivery timeout passed); returns it, to be
    /// reported failed. `None` if it is in flight or unknown.
    pub(crate) fn give_up(&mut self, id: u64) -> Option<Sealed<B>> {
        let i = self.position(id)?;
        if self.batches[i].in_flight() {
            return None;
        }
        Some(self.drop_at(i))
    }

    /// Replace the batch `id` (not in flight, never written: the broker refused it as too
    /// large) with `parts` in its place, each `(records, body)`, covering the same sequences.
    /// Hands `parts` back if the batch is unknown, in flight, or the counts differ.
    pub(crate) fn split(&mut self, id: u64, parts: Vec<(i32, B)>) -> Result<(), Vec<(i32, B)>> {
        let Some(i) = self.position(id) else {
            return Err(parts);
        };
        let old = &self.batches[i];
        if old.in_flight() || parts.iter().map(|p| p.0).sum::<i32>() != old.records {
            return Err(parts);
        }
        let old = self.batches.remove(i).expect("found above");
        let mut base = old.stamp.base;
        for (k, (records, body)) in parts.into_iter().enumerate() {
            self.next_id += 1;
            let stamp = Stamp {
                identity: old.stamp.identity,
                base,
            };
            if base != NO_SEQUENCE {
                base = seq_add(base, records);
            }
            self.batches.insert(
                i + k,
                Sealed {
                    id: self.next_id,
                    records,
                    stamp,
                    attempt: None,
                    maybe_written: false,
                    retry_at: None,
                    sends: old.sends,
                    body,
                },
            );
        }
        Ok(())
    }

    /// Start the lane's sequences again from 0 under `identity` (a new epoch), once nothing
    /// is in flight. Returns false (and changes nothing) while something is.
    pub(crate) fn restart(&mut self, identity: Identity) -> bool {
        if self.in_flight > 0 {
            return false;
        }
        self.identity = Some(identity);
        let mut seq = 0;
        for b in &mut self.batches {
            b.stamp = Stamp {
                identity: Some(identity),
                base: seq,
            };
            seq = seq_add(seq, b.records);
            // The broker had none of them: nothing resent from here can be a duplicate.
            b.maybe_written = false;
            b.retry_at = None;
        }
        self.next_seq = seq;
        self.needs_epoch = false;
        self.confirmed = false;
        true
    }

    fn remove(&mut self, i: usize) -> Sealed<B> {
        self.batches.remove(i).expect("index checked")
    }

    /// Remove a batch that will not be written. If it cannot be in the log, neither can any
    /// later one, so they move down to close the gap; if it may be there, they keep their
    /// sequences, and the broker's answer to the next says which it is.
    fn drop_at(&mut self, i: usize) -> Sealed<B> {
        let gone = self.remove(i);
        if gone.stamp.base != NO_SEQUENCE && !gone.maybe_written {
            for b in self.batches.iter_mut().skip(i) {
                b.stamp.base = seq_sub(b.stamp.base, gone.records);
            }
            self.next_seq = seq_sub(self.next_seq, gone.records);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn broker(code: KafkaCode) -> client::Error {
        client::Error::Broker {
            code,
            at: client::Location {
                broker: "b".into(),
                api: "Produce",
                topic: Some("t".into()),
                partition: Some(0),
            },
            message: None,
        }
    }

    #[test]
    fn each_produce_error_has_one_meaning() {
        use super::Verdict as Meaning;
        use KafkaCode as K;
        let retry = |maybe_written| Meaning::Retry {
            maybe_written,
            split: false,
        };
        let cases = [
            (K::DuplicateSequenceNumber, true, 3, Meaning::Written),
            (K::OutOfOrderSequenceNumber, true, 3, Meaning::OutOfSequence),
            (K::UnknownProducerId, true, 3, Meaning::OutOfSequence),
            (K::InvalidProducerEpoch, true, 3, Meaning::Fenced),
            (K::ProducerFenced, true, 3, Meaning::Fenced),
            (
                K::MessageTooLarge,
                false,
                3,
                Meaning::Retry {
                    maybe_written: false,
                    split: true,
                },
            ),
            (
                K::RecordListTooLarge,
                true,
                2,
                Meaning::Retry {
                    maybe_written: false,
                    split: true,
                },
            ),
            // One record too large cannot be split: refused for good.
            (K::MessageTooLarge, true, 1, Meaning::Rejected),
            (K::NotLeaderOrFollower, true, 3, retry(false)),
            (K::RequestTimedOut, true, 3, retry(true)),
            (K::NotEnoughReplicasAfterAppend, true, 3, retry(true)),
            (K::NotEnoughReplicas, true, 3, retry(false)),
            (K::CorruptMessage, true, 3, retry(false)),
            (K::TopicAuthorizationFailed, true, 3, Meaning::Rejected),
            (K::ConcurrentTransactions, true, 3, retry(false)),
            (K::InvalidRecord, true, 3, Meaning::Rejected),
        ];
        for (code, idempotent, records, want) in cases {
            assert_eq!(
                verdict(&broker(code), idempotent, records),
                want,
                "{code:?}"
            );
        }
        // Without idempotence, sequence errors are not ours to act on.
        assert_eq!(
            verdict(&broker(K::OutOfOrderSequenceNumber), false, 3),
            Meaning::Rejected
        );
        // No answer at all, or one that could not be read: the batch may be in the log.
        let closed = client::Error::Closed { broker: "b".into() };
        assert_eq!(verdict(&closed, true, 3), retry(true));
        let garbled = client::Error::Protocol {
            broker: "b".into(),
            detail: "x".into(),
        };
        assert_eq!(verdict(&garbled, true, 3), retry(true));
    }

    #[test]
    fn sequences_wrap_as_the_broker_wraps_them() {
        assert_eq!(seq_add(5, 3), 8);
        assert_eq!(seq_add(i32::MAX, 1), 0);
        assert_eq!(seq_add(i32::MAX - 1, 3), 1);
        for (s, n) in [(0, 1), (7, 7), (i32::MAX, 1), (3, 10), (i32::MAX - 2, 5)] {
            assert_eq!(seq_sub(seq_add(s, n), n), s, "{s} {n}");
        }
    }

    /// An idempotent lane whose producer the broker knows already (it wrote a batch).
    fn idem() -> Lane<u32> {
        let mut lane = Lane::new(Some(Identity { id: 7, epoch: 0 }), 5);
        lane.confirmed = true;
        lane
    }

    /// Seal and send a batch of `n` records (tagged `tag`) to broker 1.
    fn push(lane: &mut Lane<u32>, n: i32, tag: u32) -> u64 {
        assert_eq!(lane.next(Instant::now(), 1), Next::Seal);
        let i = lane.seal(n, tag);
        lane.sent(i, 1);
        lane.get(i).id
    }

    #[test]
    fn five_in_flight_then_wait() {
        let mut lane = idem();
        let ids: Vec<u64> = (0..5).map(|t| push(&mut lane, 10, t)).collect();
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None));
        let bases: Vec<i32> = lane.batches().map(|b| b.stamp.base).collect();
        assert_eq!(bases, [0, 10, 20, 30, 40]);
        assert!(matches!(lane.answer(ids[0], Reply::Written), Outcome::Done(b) if b.body == 0));
        assert_eq!(lane.next(Instant::now(), 1), Next::Seal);
        // A new leader: nothing goes until the batches sent to the old one are back.
        assert_eq!(lane.next(Instant::now(), 2), Next::Wait(None));
    }

    #[test]
    fn one_batch_at_a_time_until_the_broker_has_written_one_under_the_identity() {
        let mut lane: Lane<u32> = Lane::new(Some(Identity { id: 7, epoch: 0 }), 5);
        let a = push(&mut lane, 10, 0);
        assert_eq!(
            lane.next(Instant::now(), 1),
            Next::Wait(None),
            "the broker takes any first sequence: a second batch could overtake a refused first"
        );
        let refused = Reply::Retriable {
            maybe_written: false,
            at: Instant::now(),
        };
        assert!(matches!(lane.answer(a, refused), Outcome::Kept));
        assert_eq!(lane.next(Instant::now(), 1), Next::Resend(0));
        lane.sent(0, 1);
        assert!(matches!(lane.answer(a, Reply::Written), Outcome::Done(_)));
        for t in 1..6 {
            push(&mut lane, 10, t);
        }
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None), "five now");
        // Under a new epoch the broker's check starts over: one at a time again.
        let mut lane = idem();
        let a = push(&mut lane, 1, 0);
        assert!(matches!(
            lane.answer(a, Reply::OutOfSequence),
            Outcome::Kept
        ));
        assert!(lane.restart(Identity { id: 7, epoch: 1 }));
        assert_eq!(lane.next(Instant::now(), 1), Next::Resend(0));
        lane.sent(0, 1);
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None));
    }

    #[test]
    fn a_rejected_batch_closes_its_gap_and_answers_to_old_numbers_are_echoes() {
        let mut lane = idem();
        let a = push(&mut lane, 10, 0);
        let b = push(&mut lane, 10, 1);
        let c = push(&mut lane, 10, 2);
        assert!(matches!(lane.answer(a, Reply::Written), Outcome::Done(_)));
        assert!(matches!(
            lane.answer(b, Reply::Rejected),
            Outcome::Failed(_)
        ));
        assert_eq!(lane.get(0).stamp.base, 10, "c moves down into b's place");
        // c was in flight with its old sequence: the broker refuses it, and that says nothing.
        assert!(matches!(
            lane.answer(c, Reply::OutOfSequence),
            Outcome::Kept
        ));
        assert!(!lane.needs_epoch());
        assert_eq!(lane.next(Instant::now(), 1), Next::Resend(0));
        // Sent again with its new sequence, refused again: now it is a real gap.
        lane.sent(0, 1);
        assert!(matches!(
            lane.answer(c, Reply::OutOfSequence),
            Outcome::Kept
        ));
        assert!(lane.needs_epoch());
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None));
        assert!(lane.restart(Identity { id: 7, epoch: 1 }));
        assert_eq!(lane.get(0).stamp.base, 0);
        assert_eq!(lane.next(Instant::now(), 1), Next::Resend(0));
    }

    #[test]
    fn a_retry_waits_for_its_backoff_and_for_the_later_batches() {
        let mut lane = idem();
        let a = push(&mut lane, 1, 0);
        let b = push(&mut lane, 1, 1);
        let later = Instant::now() + Duration::from_secs(60);
        let retry = Reply::Retriable {
            maybe_written: true,
            at: later,
        };
        assert!(matches!(lane.answer(a, retry), Outcome::Kept));
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None), "b is out");
        assert!(matches!(
            lane.answer(b, Reply::OutOfSequence),
            Outcome::Kept
        ));
        assert!(!lane.needs_epoch(), "a is older and unresolved");
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(Some(later)));
        assert_eq!(lane.next(later, 1), Next::Resend(0));
        // a may be in the log: giving up on it keeps b's sequence.
        let gone = lane.give_up(a).unwrap();
        assert!(gone.maybe_written);
        assert_eq!(lane.get(0).stamp.base, 1);
    }

    #[test]
    fn a_lane_waiting_for_its_producer_id_sends_nothing_until_it_comes() {
        let mut lane: Lane<u32> = Lane::awaiting_identity(5);
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None));
        assert!(lane.needs_epoch());
        assert!(lane.restart(Identity { id: 3, epoch: 0 }));
        let first = push(&mut lane, 2, 0);
        assert!(matches!(
            lane.answer(first, Reply::Written),
            Outcome::Done(_)
        ));
        for t in 1..6 {
            push(&mut lane, 2, t);
        }
        assert_eq!(lane.get(4).stamp.base, 10);
        assert_eq!(
            lane.next(Instant::now(), 1),
            Next::Wait(None),
            "five in flight"
        );
    }

    #[test]
    fn without_idempotence_one_batch_flies_and_nothing_is_numbered() {
        let mut lane: Lane<u32> = Lane::new(None, 5);
        let a = push(&mut lane, 3, 0);
        assert_eq!(lane.next(Instant::now(), 1), Next::Wait(None));
        assert_eq!(lane.get(0).stamp.base, NO_SEQUENCE);
        assert!(matches!(
            lane.answer(a, Reply::OutOfSequence),
            Outcome::Kept
        ));
        assert!(!lane.needs_epoch());
    }

    #[test]
    fn a_split_covers_the_same_sequences() {
        let mut lane = idem();
        let a = push(&mut lane, 10, 0);
        let b = push(&mut lane, 4, 1);
        let retry = Reply::Retriable {
            maybe_written: false,
            at: Instant::now(),
        };
        assert!(matches!(lane.answer(a, retry), Outcome::Kept));
        assert!(
            lane.split(a, vec![(5, 10), (4, 11)]).is_err(),
            "counts must add up"
        );
        assert!(lane.split(a, vec![(5, 10), (5, 11)]).is_ok());
        let got: Vec<(i32, u32)> = lane.batches().map(|s| (s.stamp.base, s.body)).collect();
        assert_eq!(got, [(0, 10), (5, 11), (10, 1)]);
        assert!(matches!(
            lane.answer(b, Reply::OutOfSequence),
            Outcome::Kept
        ));
    }

    // ---- The model: a lane against a broker that enforces sequences ----

    /// What the broker does with a request, as the test's dice decide.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        /// Processed and answered.
        Answer,
        /// Processed, answer lost (connection broken after the write).
        LoseAnswer,
        /// Never reached the broker.
        Drop,
        /// Refused with a retriable error before any append (NOT_LEADER, say).
        Refuse,
        /// The broker forgets this producer (UNKNOWN_PRODUCER_ID from now on).
        Forget,
        /// Refused as too large (the batch fails alone).
        TooLarge,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            10 => Just(Fate::Answer),
            2 => Just(Fate::LoseAnswer),
            2 => Just(Fate::Drop),
            2 => Just(Fate::Refuse),
            1 => Just(Fate::Forget),
            1 => Just(Fate::TooLarge),
        ]
    }

    /// The broker's idempotence check for one partition, as Kafka does it: per producer id,
    /// the epoch and the last 5 batches written.
    #[derive(Default)]
    struct Broker {
        epoch: Option<(i64, i16)>,
        /// (first seq, last seq) of the last batches written.
        recent: VecDeque<(i32, i32)>,
        log: Vec<u32>,
    }

    enum Verdict {
        Appended,
        Duplicate,
        OutOfOrder,
        Fenced,
    }

    impl Broker {
        fn append(&mut self, stamp: Stamp, records: i32, tags: &[u32]) -> Verdict {
            let who = stamp.identity.expect("idempotent");
            let last = seq_add(stamp.base, records - 1);
            match self.epoch {
                Some((id, e)) if id == who.id && who.epoch < e => return Verdict::Fenced,
                Some((id, e)) if id == who.id && who.epoch == e => {
                    if self.recent.contains(&(stamp.base, last)) {
                        return Verdict::Duplicate;
                    }
                    let next = seq_add(self.recent.back().expect("nonempty").1, 1);
                    if stamp.base != next {
                        return Verdict::OutOfOrder;
                    }
                }
                // A new epoch of a producer it knows: only sequence 0.
                Some(_) if stamp.base != 0 => return Verdict::OutOfOrder,
                // A producer it does not know (new here, or forgotten): any sequence, as
                // Kafka since KIP-360 accepts, its state may have expired.
                _ => self.recent.clear(),
            }
            self.epoch = Some((who.id, who.epoch));
            self.recent.push_back((stamp.base, last));
            if self.recent.len() > 5 {
                self.recent.pop_front();
            }
            self.log.extend_from_slice(tags);
            Verdict::Appended
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Whatever the network and the broker do, the log holds each record that was
        /// reported delivered exactly once, in the order sent, and nothing else: no
        /// duplicates, no reordering, failures only for batches refused as too large.
        #[test]
        fn the_log_is_the_sent_sequence_once_in_order(
            sizes in proptest::collection::vec(1i32..4, 1..40),
            fates in proptest::collection::vec(fate(), 400),
            bursts in proptest::collection::vec(1usize..6, 400),
            expiries in proptest::collection::vec(proptest::bool::weighted(0.05), 400),
        ) {
            let mut lane: Lane<Vec<u32>> = Lane::new(Some(Identity { id: 1, epoch: 0 }), 5);
            let mut broker = Broker::default();
            let mut epoch = 0i16;
            // Records 0.. in batches of `sizes`, sealed as the lane allows.
            let mut next_tag = 0u32;
            let mut to_seal = sizes.clone().into_iter();
            let mut delivered: Vec<u32> = Vec::new();
            let mut failed: Vec<u32> = Vec::new();
            // Given up on (the delivery timeout) while perhaps written: either way is right.
            let mut doubtful: Vec<u32> = Vec::new();
            let mut expiries = expiries.into_iter().cycle();
            // Requests on the wire, in order: (batch id, its stamp, records, its answer).
            let mut wire: VecDeque<(u64, Reply)> = VecDeque::new();
            let mut fates = fates.into_iter().cycle();
            let mut bursts = bursts.into_iter().cycle();
            let now = Instant::now();
            for _round in 0..2_000 {
                // Send what the lane allows, a few at a time.
                for _ in 0..bursts.next().unwrap() {
                    if lane.needs_epoch() && lane.in_flight() == 0 {
                        epoch += 1;
                        let restarted = lane.restart(Identity { id: 1, epoch });
                        prop_assert!(restarted);
                    }
                    let i = match lane.next(now, 1) {
                        Next::Resend(i) => i,
                        Next::Seal => match to_seal.next() {
                            Some(n) => {
                                let tags: Vec<u32> = (next_tag..next_tag + n as u32).collect();
                                next_tag += n as u32;
                                lane.seal(n, tags)
                            }
                            None => break,
                        },
                        Next::Wait(_) => break,
                    };
                    let (stamp, records, id) = {
                        let b = lane.get(i);
                        (b.stamp, b.records, b.id)
                    };
                    lane.sent(i, 1);
                    let tags = lane.get(i).body.clone();
                    let retry = Reply::Retriable { maybe_written: true, at: now };
                    // Too large is what a batch is, from its first send on; a later
                    // attempt meets it already judged.
                    let first_send = lane.get(i).sends == 1;
                    let reply = match fates.next().unwrap() {
                        Fate::TooLarge if !first_send => match broker.append(stamp, records, &tags) {
                            Verdict::Appended | Verdict::Duplicate => Reply::Written,
                            Verdict::OutOfOrder => Reply::OutOfSequence,
                            Verdict::Fenced => Reply::Fenced,
                        },
                        Fate::Drop => Reply::Retriable { maybe_written: true, at: now },
                        Fate::Refuse => Reply::Retriable { maybe_written: false, at: now },
                        Fate::TooLarge => Reply::Rejected,
                        f => {
                            // A broker forgets producers long idle (or whose batches
                            // retention removed), never one with a write in doubt or in
                            // flight: that would lose what idempotence can know.
                            let idle = lane.in_flight() == 1
                                && !lane.batches().any(|b| b.maybe_written);
                            if matches!(f, Fate::Forget) && idle {
                                broker.epoch = None;
                                broker.recent.clear();
                            }
                            let verdict = broker.append(stamp, records, &tags);
                            match (f, verdict) {
                                (Fate::LoseAnswer, _) => retry,
                                (_, Verdict::Appended | Verdict::Duplicate) => Reply::Written,
                                (_, Verdict::OutOfOrder) => Reply::OutOfSequence,
                                (_, Verdict::Fenced) => Reply::Fenced,
                            }
                        }
                    };
                    wire.push_back((id, reply));
                }
                // Answers come back in order, some of them now.
                for _ in 0..bursts.next().unwrap() {
                    let Some((id, reply)) = wire.pop_front() else { break };
                    match lane.answer(id, reply) {
                        Outcome::Done(b) => delivered.extend(b.body),
                        Outcome::Failed(b) => failed.extend(b.body),
                        Outcome::Kept => {
                            // Now and then its delivery timeout passes: give up on it.
                            if expiries.next().unwrap() {
                                if let Some(b) = lane.give_up(id) {
                                    if b.maybe_written { doubtful.extend(b.body) } else { failed.extend(b.body) }
                                }
                            }
                        }
                        Outcome::Fenced(_) => prop_assert!(false, "a single producer is never fenced"),
                        Outcome::Unknown => prop_assert!(false, "an answer found no batch"),
                    }
                }
                if lane.is_empty() && to_seal.len() == 0 && wire.is_empty() {
                    break;
                }
            }
            prop_assert!(lane.is_empty() && wire.is_empty(), "the lane did not finish");
            // The log is what was delivered (and perhaps some of what was given up on in
            // doubt), once each, in the order records were sent.
            prop_assert!(broker.log.windows(2).all(|w| w[0] < w[1]), "duplicated or reordered: {:?}", broker.log);
            let mut expected = delivered.clone();
            expected.extend(broker.log.iter().filter(|t| doubtful.contains(t)));
            expected.sort_unstable();
            prop_assert_eq!(&broker.log, &expected, "log vs delivered");
            let mut all = delivered.clone();
            all.extend(&failed);
            all.extend(&doubtful);
            all.sort_unstable();
            prop_assert_eq!(all, (0..next_tag).collect::<Vec<_>>(), "every record reported once");
        }
    }
}
