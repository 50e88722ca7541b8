//! A transactional producer's transactions, as one state machine (the states of the Java
//! client's `TransactionManager`): what each call of the application does in each state,
//! which coordinator request comes next (one at a time), and what each answer means.
//!
//! ```text
//!            begin                commit / abort          EndTxn answered
//!   Ready ─────────▶ Open ───────────────────▶ Ending ─────────────────────▶ Ready
//!                     │  a send or request        ▲ abort
//!                     └──fails────▶ Abortable ────┘
//!   fenced, not authorised, or an abort refused: ──────────────────────────▶ Fatal
//! ```
//!
//! Under transaction version 1 a partition joins the transaction through
//! AddPartitionsToTxn before its first batch (the writer holds its batches until then) and
//! a group through AddOffsetsToTxn before TxnOffsetCommit; under version 2 the Produce and
//! TxnOffsetCommit requests add them themselves, and every EndTxn hands back a new epoch.
//! Ending waits until nothing of the transaction is queued or in flight (commit flushes
//! it; abort drops what was not sent and waits for the rest), then sends EndTxn, unless
//! nothing reached the brokers. Under version 1 an abort also bumps the epoch
//! (InitProducerId with the current id and epoch, KIP-360), as sequences of dropped
//! batches are then unknown to the broker.
//!
//! Bookkeeping only: the writer sends (through the coordinator thread) and reports back.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::client::{self, GroupMetadata, TopicPartition, TransactionVersion};

use super::error::TransactionError;
use super::lane::Identity;

/// Where the caller of a transactional call hears the outcome.
pub(crate) type TxnReply = Sender<Result<(), TransactionError>>;

/// What the application asked, through the producer's channel, in order with its records:
/// a record sent before `commit_transaction` was called is in the transaction it commits.
pub(crate) enum TxnCall {
    Begin(TxnReply),
    Offsets {
        offsets: BTreeMap<TopicPartition, i64>,
        group: GroupMetadata,
        reply: TxnReply,
    },
    Commit(TxnReply),
    Abort(TxnReply),
}

/// A coordinator request the transaction needs (the coordinator thread sends it, looking
/// the coordinator up and retrying what is retriable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Version 1: these partitions join the transaction before their first batch.
    AddPartitions(Vec<TopicPartition>),
    /// Version 1: the group joins the transaction before its offsets.
    AddOffsets(String),
    /// The consumer's offsets commit with the transaction (KIP-447 group metadata).
    CommitOffsets {
        group: GroupMetadata,
        offsets: BTreeMap<TopicPartition, i64>,
    },
    /// EndTxn.
    End { commit: bool },
    /// Version 1, after an abort: InitProducerId with the current id and epoch.
    Bump,
}

/// What became of an [`Op`], as the coordinator thread classified it.
#[derive(Debug, Clone)]
pub(crate) enum OpResult {
    /// Done; a new producer id and epoch to adopt (EndTxn v5+, a bump) if one came.
    Done(Option<Identity>),
    /// This transaction cannot commit (the partition or group was refused, the group moved
    /// on, ...): it must be aborted.
    Abortable(Arc<client::Error>),
    /// The producer cannot go on.
    Fatal(Arc<client::Error>),
}

/// Where the transaction stands.
#[derive(Debug, Clone)]
enum Phase {
    /// No transaction open.
    Ready,
    /// Open: records and offsets go into it.
    Open,
    /// Being committed or aborted.
    Ending { commit: bool },
    /// Something in it failed: it can only be aborted.
    Abortable(Arc<client::Error>),
    /// The producer cannot go on.
    Fatal(Arc<client::Error>),
}

/// What the writer must do after an answer or a call.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    /// Nothing beyond the bookkeeping.
    None,
    /// The transaction just became abortable or is being aborted: fail every record not
    /// sent yet (they would be dropped by the abort anyway).
    DropUnsent,
    /// A transaction ended; stamp batches from now on with this identity (sequences from
    /// 0), if one is given.
    Ended(Option<Identity>),
    /// The producer is fenced or refused: stop it, then tell the transaction
    /// ([`Txn::fenced`]), which answers whoever waits.
    Stop(Arc<client::Error>),
}

impl PartialEq for Effect {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Effect::None, Effect::None) | (Effect::DropUnsent, Effect::DropUnsent) => true,
            (Effect::Ended(a), Effect::Ended(b)) => a == b,
            (Effect::Stop(a), Effect::Stop(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

/// The transactions of one producer.
pub(crate) struct Txn {
    version: TransactionVersion,
    phase: Phase,
    /// Version 1: partitions added to the open transaction, and those waiting to be.
    added: HashSet<TopicPartition>,
    to_add: BTreeSet<TopicPartition>,
    /// Version 1: groups added to it.
    groups: HashSet<String>,
    /// Something reached the brokers for this transaction: EndTxn is owed.
    started: bool,
    /// `send_offsets_to_transaction` calls, oldest first (the front one may be in flight).
    offsets: VecDeque<(BTreeMap<TopicPartition, i64>, GroupMetadata, TxnReply)>,
    /// The request in flight, if one is.
    in_flight: Option<Op>,
    /// Version 1: the abort is done but the epoch bump is owed.
    bump: bool,
    /// Who waits for the transaction's end.
    ending: Option<TxnReply>,
    committed: u64,
    aborted: u64,
}

fn reply(to: Option<TxnReply>, result: Result<(), TransactionError>) {
    if let Some(to) = to {
        // A caller that timed out has gone: nobody to tell.
        let _ = to.send(result);
    }
}

impl Txn {
    pub(crate) fn new(version: TransactionVersion) -> Self {
        Txn {
            version,
            phase: Phase::Ready,
            added: HashSet::new(),
            to_add: BTreeSet::new(),
            groups: HashSet::new(),
            started: false,
            offsets: VecDeque::new(),
            in_flight: None,
            bump: false,
            ending: None,
            committed: 0,
            aborted: 0,
        }
    }

    pub(crate) fn version(&self) -> TransactionVersion {
        self.version
    }

    /// Transactions committed and aborted so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.committed, self.aborted)
    }

    /// Whether a commit is flushing what was sent (everything queued is due now).
    pub(crate) fn is_committing(&self) -> bool {
        matches!(self.phase, Phase::Ending { commit: true })
    }

    /// Nothing left to do: no transaction open or ending, no request in flight.
    pub(crate) fn is_settled(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::Fatal(_)) && self.in_flight.is_none()
    }

    /// Why the producer cannot go on, once it cannot.
    #[cfg(test)]
    pub(crate) fn fatal(&self) -> Option<&Arc<client::Error>> {
        match &self.phase {
            Phase::Fatal(e) => Some(e),
            _ => None,
        }
    }

    /// The error the caller gets for a call the state does not allow.
    fn refusal(&self, call: &str) -> TransactionError {
        match &self.phase {
            Phase::Fatal(e) => TransactionError::Fatal(e.clone()),
            Phase::Abortable(e) => TransactionError::Abortable(e.clone()),
            Phase::Ready => TransactionError::State(format!(
                "{call}: no transaction is open; call begin_transaction first"
            )),
            Phase::Open => TransactionError::State(format!(
                "{call}: a transaction is open already; commit or abort it first"
            )),
            Phase::Ending { commit } => TransactionError::State(format!(
                "{call}: the transaction is being {}; wait for that to finish",
                if *commit { "committed" } else { "aborted" }
            )),
        }
    }

    /// `begin_transaction`.
    pub(crate) fn begin(&mut self, to: TxnReply) {
        let result = match self.phase {
            Phase::Ready => {
                self.phase = Phase::Open;
                Ok(())
            }
            _ => Err(self.refusal("begin_transaction")),
        };
        reply(Some(to), result);
    }

    /// Whether a record may join now; else why not.
    pub(crate) fn admit(&self) -> Result<(), TransactionError> {
        match self.phase {
            Phase::Open => Ok(()),
            _ => Err(self.refusal("send")),
        }
    }

    /// Whether the partition's batches may go to the broker now. Under version 1 a
    /// partition not yet added waits, and is added by the next request.
    pub(crate) fn may_send(&mut self, tp: &TopicPartition) -> bool {
        if !matches!(self.phase, Phase::Open | Phase::Ending { commit: true }) {
            return false;
        }
        if self.version == TransactionVersion::V2 || self.added.contains(tp) {
            return true;
        }
        let adding = matches!(&self.in_flight, Some(Op::AddPartitions(p)) if p.contains(tp));
        if !adding {
            self.to_add.insert(tp.clone());
        }
        false
    }

    /// A Produce of the transaction went out.
    pub(crate) fn produced(&mut self) {
        self.started = true;
    }

    /// A record or request of the transaction failed with `err` (abortable).
    pub(crate) fn failed(&mut self, err: Arc<client::Error>) -> Effect {
        match self.phase {
            Phase::Open => {
                self.phase = Phase::Abortable(err);
                self.fail_offsets();
                Effect::DropUnsent
            }
            Phase::Ending { commit: true } => {
                self.phase = Phase::Abortable(err.clone());
                self.fail_offsets();
                reply(self.ending.take(), Err(TransactionError::Abortable(err)));
                Effect::DropUnsent
            }
            _ => Effect::None,
        }
    }

    /// The producer is fenced or refused for good: answer whoever waits.
    pub(crate) fn fenced(&mut self, err: Arc<client::Error>) {
        if matches!(self.phase, Phase::Fatal(_)) {
            return;
        }
        self.phase = Phase::Fatal(err.clone());
        reply(
            self.ending.take(),
            Err(TransactionError::Fatal(err.clone())),
        );
        for (_, _, to) in self.offsets.drain(..) {
            reply(Some(to), Err(TransactionError::Fatal(err.clone())));
        }
    }

    fn fail_offsets(&mut self) {
        let err = self.refusal("send_offsets_to_transaction");
        // The one in flight is answered when its answer comes.
        let keep = usize::from(matches!(self.in_flight, Some(Op::CommitOffsets { .. })));
        for (_, _, to) in self.offsets.drain(keep..) {
            reply(Some(to), Err(err.clone()));
        }
    }

    /// `send_offsets_to_transaction`.
    pub(crate) fn offsets(
        &mut self,
        offsets: BTreeMap<TopicPartition, i64>,
        group: GroupMetadata,
        to: TxnReply,
    ) {
        match self.phase {
            Phase::Open if offsets.is_empty() => reply(Some(to), Ok(())),
            Phase::Open => self.offsets.push_back((offsets, group, to)),
            _ => reply(Some(to), Err(self.refusal("send_offsets_to_transaction"))),
        }
    }

    /// `commit_transaction`. A commit asked again while one is under way (its caller
    /// timed out) waits for the same outcome.
    pub(crate) fn commit(&mut self, to: TxnReply) {
        match self.phase {
            Phase::Open => {
                self.phase = Phase::Ending { commit: true };
                self.ending = Some(to);
            }
            Phase::Ending { commit: true } => self.ending = Some(to),
            _ => reply(Some(to), Err(self.refusal("commit_transaction"))),
        }
    }

    /// `abort_transaction` (or the producer closing with a transaction open: `to` None).
    /// With no transaction open there is nothing to abort: done at once.
    pub(crate) fn abort(&mut self, to: Option<TxnReply>) -> Effect {
        match self.phase {
            Phase::Open | Phase::Abortable(_) => {
                self.phase = Phase::Ending { commit: false };
                self.ending = to;
                self.fail_offsets_aborted();
                Effect::DropUnsent
            }
            Phase::Ending { commit: false } => {
                if to.is_some() {
                    self.ending = to;
                }
                Effect::None
            }
            Phase::Ready => {
                reply(to, Ok(()));
                Effect::None
            }
            _ => {
                reply(to, Err(self.refusal("abort_transaction")));
                Effect::None
            }
        }
    }

    fn fail_offsets_aborted(&mut self) {
        let keep = usize::from(matches!(self.in_flight, Some(Op::CommitOffsets { .. })));
        for (_, _, to) in self.offsets.drain(keep..) {
            reply(
                Some(to),
                Err(TransactionError::State(
                    "send_offsets_to_transaction: the transaction was aborted".into(),
                )),
            );
        }
    }

    /// Whether [`next_op`](Self::next_op) would give a request now (`idle` as there),
    /// without marking it in flight.
    pub(crate) fn has_next_op(&self, idle: bool) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        match self.phase {
            Phase::Open | Phase::Ending { commit: true } => {
                !self.to_add.is_empty()
                    || !self.offsets.is_empty()
                    || (self.is_committing() && idle)
            }
            Phase::Ending { commit: false } => idle,
            _ => false,
        }
    }

    /// The request to send now, if any: `idle` says nothing of the transaction is queued
    /// or in flight at the brokers. Marks it in flight.
    pub(crate) fn next_op(&mut self, idle: bool) -> Option<Op> {
        if self.in_flight.is_some() {
            return None;
        }
        let op = match self.phase {
            Phase::Open | Phase::Ending { commit: true } => {
                if !self.to_add.is_empty() {
                    Some(Op::AddPartitions(
                        std::mem::take(&mut self.to_add).into_iter().collect(),
                    ))
                } else if let Some((offsets, group, _)) = self.offsets.front() {
                    let added = self.groups.contains(&group.group_id);
                    Some(if self.version == TransactionVersion::V1 && !added {
                        Op::AddOffsets(group.group_id.clone())
                    } else {
                        Op::CommitOffsets {
                            group: group.clone(),
                            offsets: offsets.clone(),
                        }
                    })
                } else if self.is_committing() && idle {
                    self.end_or_finish(true)
                } else {
                    None
                }
            }
            Phase::Ending { commit: false } if idle => {
                if self.bump {
                    Some(Op::Bump)
                } else {
                    self.end_or_finish(false)
                }
            }
            _ => None,
        };
        // Under version 2 a TxnOffsetCommit adds the group to the transaction as it is sent,
        // whatever its answer: the transaction is then owed an EndTxn (as a Produce is).
        if self.version == TransactionVersion::V2 && matches!(op, Some(Op::CommitOffsets { .. })) {
            self.started = true;
        }
        self.in_flight = op.clone();
        op
    }

    /// EndTxn if anything reached the brokers; else the transaction ends here.
    fn end_or_finish(&mut self, commit: bool) -> Option<Op> {
        if self.started {
            return Some(Op::End { commit });
        }
        self.finish(commit);
        None
    }

    fn finish(&mut self, commit: bool) {
        if commit {
            self.committed += 1;
        } else {
            self.aborted += 1;
        }
        self.phase = Phase::Ready;
        self.added.clear();
        self.to_add.clear();
        self.groups.clear();
        self.started = false;
        self.bump = false;
        reply(self.ending.take(), Ok(()));
    }

    /// Take in the answer to the request in flight.
    pub(crate) fn answered(&mut self, result: OpResult) -> Effect {
        let Some(op) = self.in_flight.take() else {
            return Effect::None;
        };
        let err = match result {
            OpResult::Fatal(e) => return Effect::Stop(e),
            OpResult::Abortable(e) => e,
            OpResult::Done(identity) => return self.done(op, identity),
        };
        match &op {
            // Partitions refused stay out: their batches fail with the abort.
            Op::AddPartitions(_) => {}
            Op::CommitOffsets { .. } => {
                if let Some((_, _, to)) = self.offsets.pop_front() {
                    reply(Some(to), Err(TransactionError::Abortable(err.clone())));
                }
            }
            Op::AddOffsets(_) => {
                if let Some((_, _, to)) = self.offsets.pop_front() {
                    reply(Some(to), Err(TransactionError::Abortable(err.clone())));
                }
            }
            // An abort refused as abortable cannot be ended otherwise: the classes make it
            // fatal before it gets here; a commit refused so must be aborted.
            Op::End { .. } | Op::Bump => {}
        }
        if let Phase::Ending { commit: false } = self.phase {
            // Failing while aborting: only the end of the abort matters.
            return match op {
                Op::End { .. } | Op::Bump => Effect::Stop(err),
                _ => Effect::None,
            };
        }
        self.failed(err)
    }

    fn done(&mut self, op: Op, identity: Option<Identity>) -> Effect {
        match op {
            Op::AddPartitions(parts) => {
                self.started = true;
                self.added.extend(parts);
                Effect::None
            }
            Op::AddOffsets(group) => {
                self.started = true;
                self.groups.insert(group);
                Effect::None
            }
            Op::CommitOffsets { .. } => {
                self.started = true;
                if let Some((_, _, to)) = self.offsets.pop_front() {
                    reply(Some(to), Ok(()));
                }
                Effect::None
            }
            Op::End { commit: true } => {
                self.finish(true);
                Effect::Ended(identity)
            }
            Op::End { commit: false } if self.version == TransactionVersion::V1 => {
                // The abort is written; the epoch bump comes next, then the caller hears.
                self.bump = true;
                Effect::None
            }
            Op::End { commit: false } | Op::Bump => {
                self.finish(false);
                Effect::Ended(identity)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{unbounded, Receiver};

    fn call() -> (TxnReply, Receiver<Result<(), TransactionError>>) {
        unbounded()
    }

    fn err(code: client::KafkaCode) -> Arc<client::Error> {
        Arc::new(client::Error::Broker {
            code,
            at: client::Location {
                broker: "b".into(),
                api: "EndTxn",
                topic: None,
                partition: None,
            },
            message: None,
        })
    }

    fn tp(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    fn group() -> GroupMetadata {
        GroupMetadata {
            group_id: "g".into(),
            generation_id: 3,
            member_id: "m".into(),
            group_instance_id: None,
        }
    }

    fn open(version: TransactionVersion) -> Txn {
        let mut t = Txn::new(version);
        let (to, rx) = call();
        t.begin(to);
        assert!(rx.recv().unwrap().is_ok());
        t
    }

    #[test]
    fn a_v2_commit_flushes_then_ends_and_adopts_the_new_epoch() {
        let mut t = open(TransactionVersion::V2);
        assert!(
            t.admit().is_ok() && t.may_send(&tp(0)),
            "v2 adds implicitly"
        );
        t.produced();
        let (to, rx) = call();
        t.commit(to);
        assert!(t.is_committing() && t.admit().is_err());
        assert_eq!(t.next_op(false), None, "not before the flush");
        assert!(!t.has_next_op(false) && t.has_next_op(true));
        assert_eq!(t.next_op(true), Some(Op::End { commit: true }));
        assert_eq!(t.next_op(true), None, "one request at a time");
        assert!(!t.has_next_op(true), "the EndTxn is in flight");
        let next = Identity { id: 5, epoch: 8 };
        assert_eq!(
            t.answered(OpResult::Done(Some(next))),
            Effect::Ended(Some(next))
        );
        assert!(rx.recv().unwrap().is_ok());
        assert!(t.is_settled() && t.admit().is_err());
        assert_eq!(t.counts(), (1, 0));
    }

    #[test]
    fn v1_adds_partitions_and_groups_before_their_data() {
        let mut t = open(TransactionVersion::V1);
        assert!(!t.may_send(&tp(0)) && !t.may_send(&tp(1)));
        assert_eq!(
            t.next_op(false),
            Some(Op::AddPartitions(vec![tp(0), tp(1)]))
        );
        assert!(!t.may_send(&tp(0)), "not until answered");
        assert_eq!(t.answered(OpResult::Done(None)), Effect::None);
        assert!(t.may_send(&tp(0)) && t.may_send(&tp(1)));
        let (to, offsets_rx) = call();
        t.offsets(BTreeMap::from([(tp(0), 10)]), group(), to);
        assert_eq!(t.next_op(false), Some(Op::AddOffsets("g".into())));
        t.answered(OpResult::Done(None));
        assert!(matches!(t.next_op(false), Some(Op::CommitOffsets { .. })));
        t.answered(OpResult::Done(None));
        assert!(offsets_rx.recv().unwrap().is_ok());
        let (to, rx) = call();
        t.commit(to);
        assert_eq!(t.next_op(true), Some(Op::End { commit: true }));
        assert_eq!(t.answered(OpResult::Done(None)), Effect::Ended(None));
        assert!(rx.recv().unwrap().is_ok());
        // The next transaction adds its partitions again.
        let (to, _) = call();
        t.begin(to);
        assert!(!t.may_send(&tp(0)));
    }

    #[test]
    fn a_v1_abort_bumps_the_epoch_before_it_answers() {
        let mut t = open(TransactionVersion::V1);
        t.may_send(&tp(0));
        t.next_op(false);
        t.answered(OpResult::Done(None));
        let (to, rx) = call();
        assert_eq!(t.abort(Some(to)), Effect::DropUnsent);
        assert!(!t.has_next_op(false) && t.has_next_op(true));
        assert_eq!(t.next_op(false), None, "in-flight batches come back first");
        assert_eq!(t.next_op(true), Some(Op::End { commit: false }));
        assert_eq!(t.answered(OpResult::Done(None)), Effect::None);
        assert!(rx.try_recv().is_err(), "not yet");
        assert_eq!(t.next_op(true), Some(Op::Bump));
        let bumped = Identity { id: 1, epoch: 2 };
        assert_eq!(
            t.answered(OpResult::Done(Some(bumped))),
            Effect::Ended(Some(bumped))
        );
        assert!(rx.recv().unwrap().is_ok());
        assert_eq!(t.counts(), (0, 1));
    }

    #[test]
    fn a_failure_makes_commit_refuse_until_aborted() {
        let mut t = open(TransactionVersion::V2);
        t.produced();
        let e = err(client::KafkaCode::NotEnoughReplicas);
        assert_eq!(t.failed(e.clone()), Effect::DropUnsent);
        assert!(matches!(t.admit(), Err(TransactionError::Abortable(_))));
        let (to, rx) = call();
        t.commit(to);
        assert!(matches!(
            rx.recv().unwrap(),
            Err(TransactionError::Abortable(_))
        ));
        let (to, rx) = call();
        t.begin(to);
        assert!(matches!(
            rx.recv().unwrap(),
            Err(TransactionError::Abortable(_))
        ));
        let (to, rx) = call();
        t.abort(Some(to));
        assert_eq!(t.next_op(true), Some(Op::End { commit: false }));
        assert!(matches!(
            t.answered(OpResult::Done(None)),
            Effect::Ended(None)
        ));
        assert!(rx.recv().unwrap().is_ok());
        let (to, rx) = call();
        t.begin(to);
        assert!(rx.recv().unwrap().is_ok(), "the producer goes on");
    }

    #[test]
    fn a_failure_during_a_commit_answers_the_committer() {
        let mut t = open(TransactionVersion::V2);
        t.produced();
        let (to, rx) = call();
        t.commit(to);
        t.failed(err(client::KafkaCode::InvalidProducerEpoch));
        assert!(matches!(
            rx.recv().unwrap(),
            Err(TransactionError::Abortable(_))
        ));
        assert_eq!(t.next_op(true), None, "no EndTxn for a failed commit");
    }

    #[test]
    fn an_empty_transaction_ends_without_a_request() {
        let mut t = open(TransactionVersion::V2);
        let (to, rx) = call();
        t.commit(to);
        assert_eq!(t.next_op(true), None);
        assert!(rx.recv().unwrap().is_ok());
        assert_eq!(t.counts(), (1, 0));
        // Abort with nothing open: nothing to do.
        let (to, rx) = call();
        assert_eq!(t.abort(Some(to)), Effect::None);
        assert!(rx.recv().unwrap().is_ok());
    }

    #[test]
    fn fencing_answers_everyone_and_stops() {
        let mut t = open(TransactionVersion::V2);
        t.produced();
        let (offsets_to, offsets_rx) = call();
        t.offsets(BTreeMap::from([(tp(0), 1)]), group(), offsets_to);
        assert!(matches!(t.next_op(false), Some(Op::CommitOffsets { .. })));
        let fenced = err(client::KafkaCode::ProducerFenced);
        let effect = t.answered(OpResult::Fatal(fenced.clone()));
        assert_eq!(effect, Effect::Stop(fenced.clone()));
        t.fenced(fenced);
        assert!(matches!(
            offsets_rx.recv().unwrap(),
            Err(TransactionError::Fatal(_))
        ));
        assert!(t.fatal().is_some() && t.is_settled());
        let (to, rx) = call();
        t.begin(to);
        assert!(matches!(
            rx.recv().unwrap(),
            Err(TransactionError::Fatal(_))
        ));
    }

    #[test]
    fn the_group_moving_on_makes_the_transaction_abortable() {
        let mut t = open(TransactionVersion::V2);
        t.produced();
        let (to, rx) = call();
        t.offsets(BTreeMap::from([(tp(0), 1)]), group(), to);
        t.next_op(false);
        let moved = err(client::KafkaCode::IllegalGeneration);
        assert_eq!(t.answered(OpResult::Abortable(moved)), Effect::DropUnsent);
        assert!(matches!(
            rx.recv().unwrap(),
            Err(TransactionError::Abortable(_))
        ));
        // An abort refused while aborting is the end of the producer.
        t.abort(None);
        assert_eq!(t.next_op(true), Some(Op::End { commit: false }));
        let e = err(client::KafkaCode::TransactionAbortable);
        assert_eq!(t.answered(OpResult::Abortable(e.clone())), Effect::Stop(e));
    }

    #[test]
    fn calls_out_of_turn_say_what_to_do() {
        let mut t = Txn::new(TransactionVersion::V2);
        let (to, rx) = call();
        t.commit(to);
        let e = rx.recv().unwrap().unwrap_err().to_string();
        assert!(e.contains("begin_transaction"), "{e}");
        let (to, rx) = call();
        t.offsets(BTreeMap::from([(tp(0), 1)]), group(), to);
        assert!(rx.recv().unwrap().is_err());
        assert!(t.admit().is_err());
        let mut t = open(TransactionVersion::V2);
        let (to, rx) = call();
        t.begin(to);
        let e = rx.recv().unwrap().unwrap_err().to_string();
        assert!(e.contains("open already"), "{e}");
        // A commit asked again while one runs waits for the same outcome.
        t.produced();
        let (first, first_rx) = call();
        t.commit(first);
        let (again, again_rx) = call();
        t.commit(again);
        t.next_op(true);
        t.answered(OpResult::Done(None));
        assert!(again_rx.recv().unwrap().is_ok());
        assert!(
            first_rx.try_recv().is_err(),
            "the first caller gave up waiting"
        );
    }
}
