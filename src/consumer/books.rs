//! A member's position books: for each assigned partition, where fetching stands, what was
//! handed out, what the caller or handler finished, and what the coordinator confirmed
//! committed. The consumer's counterpart of `producer/lane.rs`.
//!
//! Bookkeeping only, no I/O: the engine fetches and commits, and the tests at the bottom
//! drive the books without a broker.
//!
//! ```text
//!   committed ≤ done ≤ handed ≤ fetch position
//!   ─────────────┬──────────┬───────────┬────────────────▶ offsets
//!            committed    done       handed     fetch (next offset asked of the leader)
//! ```
//!
//! - `fetch` is where the next fetch starts. Data fetched beyond `handed` waits in the
//!   engine's buffer; when it is dropped (a seek, a pause, a revoke, a corrupt batch) the
//!   fetch position falls back to `handed`, and an answer to a fetch asked from anywhere
//!   else than the current fetch position is stale and ignored.
//! - `handed` moves as records are handed out, and past what has nothing to hand out
//!   (transaction markers, aborted transactions: as the Java consumer does, so a commit after
//!   a transaction's last record lands past its marker and lag can reach 0).
//! - `done` moves as records are finished: a pull consumer's caller finishes what one `poll`
//!   handed out by calling `poll` again; a pool's handler record by record. Offsets skipped
//!   while records before them were unfinished are remembered, and `done` jumps over them
//!   once it reaches them.
//! - A commit sends `done`; `requested` is what was last asked (answered or in flight), so
//!   an interval commit asks only what changed; `committed` what the coordinator confirmed.
//!
//! Leader epochs (KIP-320). Each record batch carries the epoch of the leader that wrote
//! it; the books keep the epochs of what was handed out, so a position is an offset *and*
//! the epoch of the record before it, and commits carry it. After a leader change, and
//! before reading from a committed offset that has an epoch, the position is *validated*:
//! the leader says where that epoch ends in its log, and if that is before the position,
//! the log diverged (an unclean leader election, a leader that lost what it acknowledged):
//! reading resumes at the divergence point, the first offset whose records differ from what
//! was read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use uuid::Uuid;

use crate::client::{CommittedOffset, TopicPartition};

/// Where fetching of one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// No usable position (none committed, or out of range): the reset policy gives one.
    Reset,
    /// The position (the next offset to hand out, with the epoch of the record before it)
    /// is to be checked against the leader's log before fetching. `out_of_range`: the
    /// leader refused it as out of range; if it did not diverge, the reset policy applies.
    Validate {
        position: CommittedOffset,
        out_of_range: bool,
    },
    /// The log diverged before the position and no reset policy applies: nothing is
    /// fetched until the caller seeks.
    Diverged {
        position: i64,
        divergence: Option<i64>,
    },
    /// The records at `offset` came corrupt from the leader, twice: nothing is fetched
    /// until the caller seeks (past them: `next`, the offset after their batch, when its
    /// header says).
    Corrupt { offset: i64, next: Option<i64> },
    /// The next fetch asks from this offset.
    At(i64),
}

/// Why a partition waits for the caller to seek it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Its log diverged before `position`, and no reset policy applies.
    Diverged {
        position: i64,
        divergence: Option<i64>,
    },
    /// Its records at `offset` are corrupt.
    Corrupt { offset: i64, next: Option<i64> },
}

/// What validating a position found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validated {
    /// The log did not diverge before it: fetching goes on from there.
    Valid,
    /// It diverged: reading resumes at `divergence` (first offset whose records differ),
    /// or, when the leader knows nothing that old (`None`), where the reset policy says.
    Truncated {
        position: i64,
        divergence: Option<i64>,
    },
    /// The leader refused it as out of range and it did not diverge: the reset policy
    /// gives a new one.
    OutOfRange,
    /// The answer is stale (the partition was revoked, sought or validated meanwhile).
    Stale,
}

/// The leader epochs of a partition's records from one offset on: (first offset, epoch)
/// marks, ascending, each valid up to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Epochs(VecDeque<(i64, i32)>);

impl Epochs {
    fn from(position: CommittedOffset) -> Epochs {
        let mut e = Epochs::default();
        if let Some(epoch) = position.leader_epoch {
            e.0.push_back((position.offset - 1, epoch));
        }
        e
    }

    /// Records from `first` on have `epoch`.
    fn note(&mut self, first: i64, epoch: i32) {
        while self.0.back().is_some_and(|&(f, _)| f >= first) {
            self.0.pop_back();
        }
        if self.0.back().map(|&(_, e)| e) != Some(epoch) {
            self.0.push_back((first, epoch));
        }
    }

    /// The epoch of the record at `offset`, if known.
    fn at(&self, offset: i64) -> Option<i32> {
        self.0
            .iter()
            .rev()
            .find(|&&(f, _)| f <= offset)
            .map(|&(_, e)| e)
    }

    /// Forget marks no offset from `offset` on needs.
    fn forget_below(&mut self, offset: i64) {
        while self.0.get(1).is_some_and(|&(f, _)| f <= offset) {
            self.0.pop_front();
        }
    }
}

/// What was handed out and finished, once the partition has a position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    /// The next offset to hand out.
    handed: i64,
    /// The next offset not yet finished: what a commit commits.
    done: i64,
    /// Offsets with nothing to hand out, skipped while records before them were
    /// unfinished: once `done` reaches the start, it moves to the end.
    skipped: Option<(i64, i64)>,
    /// Epochs of the records from `done - 1` on.
    epochs: Epochs,
}

impl Read {
    fn at(position: CommittedOffset) -> Read {
        Read {
            handed: position.offset,
            done: position.offset,
            skipped: None,
            epochs: Epochs::from(position),
        }
    }

    /// Records below `next` are finished: never beyond what was handed out (a handler
    /// finishing a record of a log since truncated does not finish its replacement).
    fn finish(&mut self, next: i64) {
        self.done = self.done.max(next.min(self.handed));
        if let Some((from, to)) = self.skipped {
            if self.done >= from {
                self.done = self.done.max(to);
                self.skipped = None;
            }
        }
        self.epochs.forget_below(self.done - 1);
    }

    fn handed_position(&self) -> CommittedOffset {
        CommittedOffset {
            offset: self.handed,
            leader_epoch: self.epochs.at(self.handed - 1),
        }
    }

    fn done_position(&self) -> CommittedOffset {
        CommittedOffset {
            offset: self.done,
            leader_epoch: self.epochs.at(self.done - 1),
        }
    }
}

/// One assigned partition.
#[derive(Debug)]
struct Book {
    topic: Arc<str>,
    fetch: Fetch,
    /// None until the partition has a position.
    read: Option<Read>,
    /// What the coordinator confirmed committed (or what was found committed at assignment).
    committed: Option<i64>,
    /// What was last asked to commit, confirmed or in flight.
    requested: Option<i64>,
    paused: bool,
    /// The leader epoch (from metadata) the position was last fetched or validated under.
    leader_epoch: Option<i32>,
    /// The id of the topic (from metadata) the position was read in.
    topic_id: Option<Uuid>,
    /// Waiting for a position, to start at the earliest offset whatever the reset policy:
    /// the partition came into being while the member ran.
    from_earliest: bool,
}

/// Which commit mark [`Books::uncommitted`] compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// What the coordinator confirmed: everything not known to be committed.
    Confirmed,
    /// What was last asked: only what changed since the last request.
    Requested,
}

/// Offsets to commit (or committed), per partition.
pub(crate) type Offsets = BTreeMap<TopicPartition, CommittedOffset>;

/// The books of every partition assigned to one member.
#[derive(Debug, Default)]
pub(crate) struct Books {
    parts: BTreeMap<TopicPartition, Book>,
}

impl Books {
    /// `tp` is now assigned, with the offset found committed for it, if any. One committed
    /// with an epoch is validated before it is fetched from.
    pub(crate) fn assign(&mut self, tp: &TopicPartition, committed: Option<CommittedOffset>) {
        let topic = match self.parts.values().find(|b| *b.topic == *tp.0) {
            Some(b) => b.topic.clone(),
            None => Arc::from(tp.0.as_str()),
        };
        let fetch = match committed {
            None => Fetch::Reset,
            Some(c) if c.leader_epoch.is_some() => Fetch::Validate {
                position: c,
                out_of_range: false,
            },
            Some(c) => Fetch::At(c.offset),
        };
        let book = Book {
            topic,
            fetch,
            read: committed.map(Read::at),
            committed: committed.map(|c| c.offset),
            requested: committed.map(|c| c.offset),
            paused: false,
            leader_epoch: None,
            topic_id: None,
            from_earliest: false,
        };
        self.parts.insert(tp.clone(), book);
    }

    /// `tp` is no longer assigned.
    pub(crate) fn remove(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Whether `tp` is assigned.
    pub(crate) fn contains(&self, tp: &TopicPartition) -> bool {
        self.parts.contains_key(tp)
    }

    /// Whether `topic`-`partition` is assigned (without building a key).
    pub(crate) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.parts
            .keys()
            .any(|(t, p)| *p == partition && t == topic)
    }

    /// The assigned partitions, in order.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.parts.keys()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The topic name of `tp`, shared by the records handed out.
    pub(crate) fn topic(&self, tp: &TopicPartition) -> Option<Arc<str>> {
        self.parts.get(tp).map(|b| b.topic.clone())
    }

    // ---------------------------------------------------------------------------------
    // Fetching
    // ---------------------------------------------------------------------------------

    /// What to fetch: each unpaused partition with a position, from it.
    pub(crate) fn fetchable(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.parts.iter().filter_map(|(tp, b)| match b.fetch {
            Fetch::At(offset) if !b.paused => Some((tp, offset)),
            _ => None,
        })
    }

    /// Whether an answer to a fetch of `tp` asked from `asked` is current: the partition is
    /// still assigned and unpaused, and its fetch position has not moved since.
    pub(crate) fn is_current(&self, tp: &TopicPartition, asked: i64) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|b| !b.paused && b.fetch == Fetch::At(asked))
    }

    /// A fetch of `tp` returned data up to `next`: the next fetch asks from there.
    pub(crate) fn fetched(&mut self, tp: &TopicPartition, next: i64) {
        if let Some(b) = self.parts.get_mut(tp) {
            if let Fetch::At(at) = b.fetch {
                b.fetch = Fetch::At(at.max(next));
            }
        }
    }

    /// Data fetched for `tp` beyond what was handed out was dropped: fetch it again.
    pub(crate) fn refetch(&mut self, tp: &TopicPartition) {
        if let Some(b) = self.parts.get_mut(tp) {
            if let (Fetch::At(_), Some(read)) = (b.fetch, &b.read) {
                b.fetch = Fetch::At(read.handed);
            }
        }
    }

    /// The leader refused `tp`'s position (out of range). If the epoch of the position is
    /// known, it is validated first (the log may have diverged before it); else, or if it
    /// did not diverge, the reset policy gives a new one. What was handed out and finished
    /// stays as it was until then. True when it goes to the reset policy at once.
    pub(crate) fn out_of_range(&mut self, tp: &TopicPartition) -> bool {
        let Some(b) = self.parts.get_mut(tp) else {
            return false;
        };
        let position = b.read.as_ref().map(|r| r.handed_position());
        b.fetch = match position {
            Some(p) if p.leader_epoch.is_some() => Fetch::Validate {
                position: p,
                out_of_range: true,
            },
            _ => Fetch::Reset,
        };
        b.fetch == Fetch::Reset
    }

    /// The leader of `tp` is now at `leader_epoch` (metadata). A change from the epoch the
    /// position was fetched under sends a position whose epoch is known to validation;
    /// true if it did (data fetched for it should be dropped).
    pub(crate) fn leader_is(&mut self, tp: &TopicPartition, leader_epoch: i32) -> bool {
        let Some(b) = self.parts.get_mut(tp) else {
            return false;
        };
        match b.leader_epoch {
            // Older metadata, or none seen before: nothing changed that the position knows.
            Some(e) if e >= leader_epoch => return false,
            None => {
                b.leader_epoch = Some(leader_epoch);
                return false;
            }
            Some(_) => b.leader_epoch = Some(leader_epoch),
        }
        let Fetch::At(_) = b.fetch else {
            return false;
        };
        match b.read.as_ref().map(|r| r.handed_position()) {
            Some(position) if position.leader_epoch.is_some() => {
                b.fetch = Fetch::Validate {
                    position,
                    out_of_range: false,
                };
                true
            }
            _ => false,
        }
    }

    /// The topic of `tp` has id `id` now (metadata). Another id than the position was read
    /// in: the topic was deleted and created again, and the position means nothing in the
    /// new one; true if so (fetched data should be dropped, and the partition positioned
    /// anew).
    pub(crate) fn topic_id_is(&mut self, tp: &TopicPartition, id: Uuid) -> bool {
        let Some(b) = self.parts.get_mut(tp) else {
            return false;
        };
        match b.topic_id {
            _ if id.is_nil() => false,
            Some(known) if known == id => false,
            None => {
                b.topic_id = Some(id);
                false
            }
            Some(_) => {
                b.topic_id = Some(id);
                b.leader_epoch = None;
                b.fetch = Fetch::Reset;
                true
            }
        }
    }

    /// `tp`, waiting for a position, starts at its earliest offset whatever the reset
    /// policy (it came into being while the member ran). A partition with a position is
    /// left as it is.
    pub(crate) fn start_at_earliest(&mut self, tp: &TopicPartition) {
        if let Some(b) = self.parts.get_mut(tp) {
            b.from_earliest = b.fetch == Fetch::Reset;
        }
    }

    /// Whether `tp` waits to start at its earliest offset (see
    /// [`start_at_earliest`](Self::start_at_earliest)).
    pub(crate) fn resets_to_earliest(&self, tp: &TopicPartition) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|b| b.from_earliest && b.fetch == Fetch::Reset)
    }

    /// The positions to validate.
    pub(crate) fn awaiting_validation(&self) -> Vec<(TopicPartition, CommittedOffset)> {
        self.parts
            .iter()
            .filter_map(|(tp, b)| match b.fetch {
                Fetch::Validate { position, .. } => Some((tp.clone(), position)),
                _ => None,
            })
            .collect()
    }

    /// The leader says `position` of `tp` was validated with this answer: its epoch ends
    /// at `end` (`None`: the leader's log holds nothing of it).
    pub(crate) fn validated(
        &mut self,
        tp: &TopicPartition,
        position: CommittedOffset,
        end: Option<CommittedOffset>,
    ) -> Validated {
        let Some(b) = self.parts.get_mut(tp) else {
            return Validated::Stale;
        };
        let Fetch::Validate {
            position: asked,
            out_of_range,
        } = b.fetch
        else {
            return Validated::Stale;
        };
        if asked != position {
            return Validated::Stale;
        }
        match end {
            Some(end) if end.offset >= position.offset => {
                if out_of_range {
                    b.fetch = Fetch::Reset;
                    Validated::OutOfRange
                } else {
                    b.fetch = Fetch::At(position.offset);
                    Validated::Valid
                }
            }
            Some(end) => {
                b.fetch = Fetch::At(end.offset);
                if let Some(read) = &mut b.read {
                    read.handed = end.offset;
                    read.done = read.done.min(end.offset);
                    if read.skipped.is_some_and(|(_, to)| to > end.offset) {
                        read.skipped = None;
                    }
                    if let Some(epoch) = end.leader_epoch {
                        read.epochs.note(end.offset - 1, epoch);
                    }
                }
                Validated::Truncated {
                    position: position.offset,
                    divergence: Some(end.offset),
                }
            }
            None => {
                b.fetch = Fetch::Reset;
                Validated::Truncated {
                    position: position.offset,
                    divergence: None,
                }
            }
        }
    }

    /// Truncated, and no reset policy applies: `tp` is not fetched until the caller
    /// seeks. What was handed out and finished stays as it was.
    pub(crate) fn diverged(&mut self, tp: &TopicPartition, position: i64, divergence: Option<i64>) {
        if let Some(b) = self.parts.get_mut(tp) {
            b.fetch = Fetch::Diverged {
                position,
                divergence,
            };
        }
    }

    /// The records of `tp` at `offset` are corrupt: nothing is fetched until the caller
    /// seeks.
    pub(crate) fn corrupt(&mut self, tp: &TopicPartition, offset: i64, next: Option<i64>) {
        if let Some(b) = self.parts.get_mut(tp) {
            b.fetch = Fetch::Corrupt { offset, next };
        }
    }

    /// The partitions held for the caller to seek (diverged, or corrupt), with why.
    pub(crate) fn held(&self) -> Vec<(TopicPartition, Held)> {
        self.parts
            .iter()
            .filter_map(|(tp, b)| {
                let held = match b.fetch {
                    Fetch::Diverged {
                        position,
                        divergence,
                    } => Held::Diverged {
                        position,
                        divergence,
                    },
                    Fetch::Corrupt { offset, next } => Held::Corrupt { offset, next },
                    _ => return None,
                };
                Some((tp.clone(), held))
            })
            .collect()
    }

    /// The partitions waiting for the reset policy.
    pub(crate) fn awaiting_reset(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, b)| b.fetch == Fetch::Reset)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Read `tp` from `position` on (a seek, or the reset policy's answer, with the epoch
    /// of the record before it if known): fetched, handed out and finished all start there.
    pub(crate) fn position_at(&mut self, tp: &TopicPartition, position: CommittedOffset) {
        if let Some(b) = self.parts.get_mut(tp) {
            b.fetch = Fetch::At(position.offset);
            b.read = Some(Read::at(position));
            b.from_earliest = false;
        }
    }

    // ---------------------------------------------------------------------------------
    // Handing out and finishing
    // ---------------------------------------------------------------------------------

    /// Records of `tp` below `next` were handed out.
    pub(crate) fn handed(&mut self, tp: &TopicPartition, next: i64) {
        if let Some(read) = self.read_mut(tp) {
            read.handed = read.handed.max(next);
        }
    }

    /// Records of `tp` from `first` on were written under leader `epoch` (their batch's).
    pub(crate) fn note_epoch(&mut self, tp: &TopicPartition, first: i64, epoch: i32) {
        if let Some(read) = self.read_mut(tp) {
            read.epochs.note(first, epoch);
        }
    }

    /// Nothing of `tp` below `next` is to be handed out (markers, aborted transactions):
    /// move past it. What was finished before stays finished past it too. False if that
    /// moved nothing.
    pub(crate) fn skip_to(&mut self, tp: &TopicPartition, next: i64) -> bool {
        let Some(read) = self.read_mut(tp) else {
            return false;
        };
        if next <= read.handed {
            return false;
        }
        if read.done == read.handed {
            read.done = next;
        } else {
            read.skipped = match read.skipped {
                Some((from, to)) if to == read.handed => Some((from, next)),
                _ => Some((read.handed, next)),
            };
        }
        read.handed = next;
        true
    }

    /// Records of `tp` below `next` are finished (a pool's handler).
    pub(crate) fn finished(&mut self, tp: &TopicPartition, next: i64) {
        if let Some(read) = self.read_mut(tp) {
            read.finish(next);
        }
    }

    /// Everything handed out is finished (a pull consumer's caller, at `poll` or `commit`).
    pub(crate) fn finish_handed(&mut self) {
        for b in self.parts.values_mut() {
            if let Some(read) = &mut b.read {
                read.finish(read.handed);
            }
        }
    }

    /// The next offset to hand out of `tp`, once it has a position.
    pub(crate) fn position(&self, tp: &TopicPartition) -> Option<i64> {
        let b = self.parts.get(tp)?;
        match b.fetch {
            Fetch::Reset => None,
            _ => b.read.as_ref().map(|r| r.handed),
        }
    }

    /// [`position`](Self::position) with the leader epoch of the record before it.
    #[cfg(test)]
    pub(crate) fn position_with_epoch(&self, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.position(tp)?;
        self.parts
            .get(tp)?
            .read
            .as_ref()
            .map(|r| r.handed_position())
    }

    // ---------------------------------------------------------------------------------
    // Pausing
    // ---------------------------------------------------------------------------------

    /// Stop or restart fetching `tp` (paused, it falls back to what was handed out).
    pub(crate) fn set_paused(&mut self, tp: &TopicPartition, paused: bool) {
        if paused {
            self.refetch(tp);
        }
        if let Some(b) = self.parts.get_mut(tp) {
            b.paused = paused;
        }
    }

    /// The paused partitions.
    pub(crate) fn paused(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, b)| b.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    // ---------------------------------------------------------------------------------
    // Commits
    // ---------------------------------------------------------------------------------

    /// The finished offsets that differ from the mark `since`, per partition, with the
    /// epoch of the record before each.
    pub(crate) fn uncommitted(&self, since: Since) -> Offsets {
        self.parts
            .iter()
            .filter_map(|(tp, b)| {
                let done = b.read.as_ref()?.done_position();
                let mark = match since {
                    Since::Confirmed => b.committed,
                    Since::Requested => b.requested,
                };
                (mark != Some(done.offset)).then(|| (tp.clone(), done))
            })
            .collect()
    }

    /// These offsets were asked to commit (the answer is awaited).
    pub(crate) fn requested(&mut self, offsets: &Offsets) {
        for (tp, o) in offsets {
            if let Some(b) = self.parts.get_mut(tp) {
                b.requested = Some(o.offset);
            }
        }
    }

    /// The coordinator answered a commit of `offsets`: confirmed (`ok`), or refused (they
    /// are asked again at the next interval).
    pub(crate) fn commit_answered(&mut self, offsets: &Offsets, ok: bool) {
        for (tp, o) in offsets {
            let o = o.offset;
            if let Some(b) = self.parts.get_mut(tp) {
                if ok {
                    b.committed = Some(o);
                    b.requested = Some(b.requested.map_or(o, |r| r.max(o)));
                } else {
                    b.requested = b.committed;
                }
            }
        }
    }

    /// These offsets were committed by a transaction: committed, and finished.
    pub(crate) fn committed_by_transaction(&mut self, offsets: &Offsets) {
        self.commit_answered(offsets, true);
        for (tp, o) in offsets {
            self.finished(tp, o.offset);
        }
    }

    /// What the coordinator confirmed committed for `tp`.
    pub(crate) fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp)?.committed
    }

    fn read_mut(&mut self, tp: &TopicPartition) -> Option<&mut Read> {
        self.parts.get_mut(tp)?.read.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    fn at(offset: i64) -> CommittedOffset {
        CommittedOffset::at(offset)
    }

    fn books_at(offset: Option<i64>) -> Books {
        let mut books = Books::default();
        books.assign(&tp(0), offset.map(at));
        books
    }

    /// The offsets of `uncommitted`, without epochs.
    fn plain(offsets: Offsets) -> BTreeMap<TopicPartition, i64> {
        offsets.into_iter().map(|(tp, o)| (tp, o.offset)).collect()
    }

    #[test]
    fn assigned_with_a_committed_offset_fetches_from_it() {
        let books = books_at(Some(42));
        assert_eq!(books.fetchable().collect::<Vec<_>>(), vec![(&tp(0), 42)]);
        assert_eq!(books.position(&tp(0)), Some(42));
        assert_eq!(books.committed(&tp(0)), Some(42));
        assert!(books.uncommitted(Since::Confirmed).is_empty());
        assert!(books.awaiting_reset().is_empty());
    }

    #[test]
    fn assigned_without_one_waits_for_the_reset_policy() {
        let mut books = books_at(None);
        assert_eq!(books.fetchable().count(), 0);
        assert_eq!(books.position(&tp(0)), None);
        assert_eq!(books.awaiting_reset(), vec![tp(0)]);
        // Nothing to commit before a position exists.
        assert!(books.uncommitted(Since::Confirmed).is_empty());
        books.position_at(&tp(0), at(7));
        assert_eq!(books.position(&tp(0)), Some(7));
        assert!(books.awaiting_reset().is_empty());
        // The reset's position is committed (as the Java consumer does): the group's
        // position is then known even before a record arrives.
        assert_eq!(
            plain(books.uncommitted(Since::Confirmed)),
            BTreeMap::from([(tp(0), 7)])
        );
    }

    #[test]
    fn fetch_answers_count_only_when_asked_from_the_current_position() {
        let mut books = books_at(Some(10));
        assert!(books.is_current(&tp(0), 10));
        books.fetched(&tp(0), 20);
        assert!(!books.is_current(&tp(0), 10), "the next fetch asks from 20");
        assert!(books.is_current(&tp(0), 20));
        // A stale answer never moves the position back.
        books.fetched(&tp(0), 15);
        assert!(books.is_current(&tp(0), 20));
        // Dropping fetched data falls back to what was handed out.
        books.handed(&tp(0), 12);
        books.refetch(&tp(0));
        assert!(books.is_current(&tp(0), 12));
        assert!(!books.is_current(&tp(1), 12), "not assigned");
    }

    #[test]
    fn paused_partitions_are_not_fetched_and_resume_from_what_was_handed_out() {
        let mut books = books_at(Some(0));
        books.fetched(&tp(0), 100);
        books.handed(&tp(0), 30);
        books.set_paused(&tp(0), true);
        assert_eq!(books.paused(), vec![tp(0)]);
        assert_eq!(books.fetchable().count(), 0);
        assert!(
            !books.is_current(&tp(0), 30),
            "answers for a paused partition are stale"
        );
        books.set_paused(&tp(0), false);
        assert_eq!(books.fetchable().collect::<Vec<_>>(), vec![(&tp(0), 30)]);
    }

    #[test]
    fn commits_send_what_is_finished_not_what_is_handed_out() {
        let mut books = books_at(Some(0));
        books.fetched(&tp(0), 100);
        books.handed(&tp(0), 50);
        assert!(books.uncommitted(Since::Confirmed).is_empty());
        books.finished(&tp(0), 20);
        let offsets = books.uncommitted(Since::Requested);
        assert_eq!(plain(offsets.clone()), BTreeMap::from([(tp(0), 20)]));
        books.requested(&offsets);
        assert!(
            books.uncommitted(Since::Requested).is_empty(),
            "asked already"
        );
        assert_eq!(
            books.uncommitted(Since::Confirmed),
            offsets,
            "not confirmed"
        );
        books.commit_answered(&offsets, true);
        assert!(books.uncommitted(Since::Confirmed).is_empty());
        assert_eq!(books.committed(&tp(0)), Some(20));
    }

    #[test]
    fn a_refused_commit_is_asked_again() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 5);
        books.finish_handed();
        let offsets = books.uncommitted(Since::Requested);
        books.requested(&offsets);
        books.commit_answered(&offsets, false);
        assert_eq!(books.uncommitted(Since::Requested), offsets);
        assert_eq!(books.committed(&tp(0)), Some(0));
    }

    #[test]
    fn skipped_offsets_are_finished_once_the_records_before_them_are() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 10);
        // A marker at 10 while 0..10 are still with the handler.
        assert!(books.skip_to(&tp(0), 11));
        assert!(!books.skip_to(&tp(0), 11), "nothing more to skip");
        books.finished(&tp(0), 5);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)].offset, 5);
        books.finished(&tp(0), 10);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)].offset, 11);
    }

    #[test]
    fn skipping_with_nothing_unfinished_moves_the_finished_mark_too() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 10);
        books.finished(&tp(0), 10);
        books.skip_to(&tp(0), 12);
        assert_eq!(books.position(&tp(0)), Some(12));
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)].offset, 12);
    }

    #[test]
    fn adjacent_skips_join() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 3);
        books.skip_to(&tp(0), 5);
        books.skip_to(&tp(0), 8);
        books.finished(&tp(0), 3);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)].offset, 8);
    }

    #[test]
    fn an_out_of_range_position_keeps_what_was_finished_until_the_reset() {
        let mut books = books_at(Some(0));
        books.fetched(&tp(0), 40);
        books.handed(&tp(0), 40);
        books.finished(&tp(0), 30);
        books.out_of_range(&tp(0));
        assert_eq!(books.fetchable().count(), 0);
        assert_eq!(books.awaiting_reset(), vec![tp(0)]);
        assert_eq!(books.position(&tp(0)), None);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)].offset, 30);
        // A refetch does not give it a position back.
        books.refetch(&tp(0));
        assert_eq!(books.fetchable().count(), 0);
        books.position_at(&tp(0), at(100));
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)].offset, 100);
    }

    #[test]
    fn a_transaction_commit_finishes_and_commits() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 9);
        let offsets = BTreeMap::from([(tp(0), at(9))]);
        books.committed_by_transaction(&offsets);
        assert_eq!(books.committed(&tp(0)), Some(9));
        assert!(books.uncommitted(Since::Confirmed).is_empty());
        assert!(books.uncommitted(Since::Requested).is_empty());
    }

    #[test]
    fn partitions_of_one_topic_share_its_name() {
        let mut books = Books::default();
        books.assign(&tp(0), None);
        books.assign(&tp(1), None);
        let (a, b) = (books.topic(&tp(0)).unwrap(), books.topic(&tp(1)).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(books.owns("t", 1));
        assert!(!books.owns("t", 2));
        books.remove(&tp(1));
        assert!(!books.contains(&tp(1)));
    }

    fn with_epoch(offset: i64, epoch: i32) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: Some(epoch),
        }
    }

    #[test]
    fn commits_carry_the_epoch_of_the_record_before_the_offset() {
        let mut books = books_at(Some(0));
        books.note_epoch(&tp(0), 0, 3);
        books.handed(&tp(0), 10);
        books.note_epoch(&tp(0), 10, 5);
        books.handed(&tp(0), 20);
        books.finished(&tp(0), 10);
        assert_eq!(
            books.uncommitted(Since::Confirmed)[&tp(0)],
            with_epoch(10, 3)
        );
        books.finished(&tp(0), 11);
        assert_eq!(
            books.uncommitted(Since::Confirmed)[&tp(0)],
            with_epoch(11, 5)
        );
        assert_eq!(books.position_with_epoch(&tp(0)), Some(with_epoch(20, 5)));
        // A committed offset's epoch is kept until something newer is handed out.
        let mut books = Books::default();
        books.assign(&tp(0), Some(with_epoch(50, 2)));
        assert_eq!(books.position_with_epoch(&tp(0)), Some(with_epoch(50, 2)));
    }

    #[test]
    fn a_committed_offset_with_an_epoch_is_validated_before_it_is_fetched_from() {
        let mut books = Books::default();
        books.assign(&tp(0), Some(with_epoch(2000, 0)));
        assert_eq!(
            books.fetchable().count(),
            0,
            "not fetched before it is validated"
        );
        assert_eq!(books.position(&tp(0)), Some(2000));
        assert_eq!(
            books.awaiting_validation(),
            vec![(tp(0), with_epoch(2000, 0))]
        );
        // The leader's log ends epoch 0 at 2500: nothing diverged.
        let verdict = books.validated(&tp(0), with_epoch(2000, 0), Some(with_epoch(2500, 0)));
        assert_eq!(verdict, Validated::Valid);
        assert_eq!(books.fetchable().collect::<Vec<_>>(), vec![(&tp(0), 2000)]);
        // One without an epoch is not.
        let mut books = Books::default();
        books.assign(&tp(0), Some(at(2000)));
        assert!(books.awaiting_validation().is_empty());
        assert_eq!(books.fetchable().count(), 1);
    }

    #[test]
    fn a_log_that_diverged_before_the_position_resumes_at_the_divergence_point() {
        // The unclean election of issue 20: committed 2000 under epoch 0; the new leader's
        // log holds epoch 0 only up to 1000.
        let mut books = Books::default();
        books.assign(&tp(0), Some(with_epoch(2000, 0)));
        let verdict = books.validated(&tp(0), with_epoch(2000, 0), Some(with_epoch(1000, 0)));
        assert_eq!(
            verdict,
            Validated::Truncated {
                position: 2000,
                divergence: Some(1000)
            }
        );
        assert_eq!(books.fetchable().collect::<Vec<_>>(), vec![(&tp(0), 1000)]);
        assert_eq!(books.position_with_epoch(&tp(0)), Some(with_epoch(1000, 0)));
        // The group's offset goes back to the divergence point.
        assert_eq!(
            books.uncommitted(Since::Confirmed)[&tp(0)],
            with_epoch(1000, 0)
        );
    }

    #[test]
    fn records_in_flight_from_a_truncated_log_do_not_finish_their_replacements() {
        let mut books = books_at(Some(0));
        books.note_epoch(&tp(0), 0, 1);
        books.handed(&tp(0), 100);
        books.finished(&tp(0), 20);
        books.leader_is(&tp(0), 1);
        assert!(books.leader_is(&tp(0), 2), "a new leader: validate");
        let position = books.awaiting_validation()[0].1;
        assert_eq!(position, with_epoch(100, 1));
        books.validated(&tp(0), position, Some(with_epoch(60, 1)));
        // The handler finishes a record it had from the old log, past the divergence.
        books.finished(&tp(0), 90);
        assert_eq!(
            books.uncommitted(Since::Confirmed)[&tp(0)].offset,
            60,
            "never past what is handed out of the new log"
        );
    }

    #[test]
    fn leader_changes_validate_only_positions_with_an_epoch_and_only_forward() {
        let mut books = books_at(Some(0));
        assert!(
            !books.leader_is(&tp(0), 4),
            "the first epoch seen is just noted"
        );
        assert!(
            !books.leader_is(&tp(0), 5),
            "no epoch known for the position yet"
        );
        books.note_epoch(&tp(0), 0, 5);
        books.handed(&tp(0), 10);
        assert!(
            !books.leader_is(&tp(0), 3),
            "older metadata changes nothing"
        );
        assert!(!books.leader_is(&tp(0), 5), "same leader");
        assert!(books.leader_is(&tp(0), 6));
        assert!(!books.leader_is(&tp(0), 7), "already validating");
        assert_eq!(books.fetchable().count(), 0);
        let position = books.awaiting_validation()[0].1;
        // A stale answer (for another position) changes nothing.
        assert_eq!(
            books.validated(&tp(0), with_epoch(5, 5), Some(with_epoch(5, 5))),
            Validated::Stale
        );
        assert_eq!(
            books.validated(&tp(0), position, Some(with_epoch(10, 5))),
            Validated::Valid
        );
        assert_eq!(
            books.validated(&tp(0), position, Some(with_epoch(10, 5))),
            Validated::Stale,
            "answered once"
        );
    }

    #[test]
    fn an_epoch_the_leader_knows_nothing_of_goes_to_the_reset_policy() {
        let mut books = Books::default();
        books.assign(&tp(0), Some(with_epoch(30, 9)));
        assert_eq!(
            books.validated(&tp(0), with_epoch(30, 9), None),
            Validated::Truncated {
                position: 30,
                divergence: None
            }
        );
        assert_eq!(books.awaiting_reset(), vec![tp(0)]);
    }

    #[test]
    fn out_of_range_validates_first_when_the_epoch_is_known() {
        let mut books = books_at(Some(0));
        books.out_of_range(&tp(0));
        assert_eq!(
            books.awaiting_reset(),
            vec![tp(0)],
            "no epoch: reset at once"
        );
        let mut books = books_at(Some(0));
        books.note_epoch(&tp(0), 0, 2);
        books.handed(&tp(0), 40);
        books.out_of_range(&tp(0));
        let position = books.awaiting_validation()[0].1;
        assert_eq!(
            books.validated(&tp(0), position, Some(with_epoch(40, 2))),
            Validated::OutOfRange,
            "not diverged: the reset policy applies"
        );
        assert_eq!(books.awaiting_reset(), vec![tp(0)]);
    }

    #[test]
    fn a_divergence_without_a_reset_policy_waits_for_a_seek() {
        let mut books = books_at(Some(0));
        books.diverged(&tp(0), 2000, Some(1000));
        assert_eq!(books.fetchable().count(), 0);
        assert_eq!(
            books.held(),
            vec![(
                tp(0),
                Held::Diverged {
                    position: 2000,
                    divergence: Some(1000)
                }
            )]
        );
        books.position_at(&tp(0), at(1000));
        assert!(books.held().is_empty());
        assert_eq!(books.fetchable().count(), 1);
    }

    #[test]
    fn corrupt_records_hold_the_partition_until_a_seek() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 7);
        books.corrupt(&tp(0), 7, Some(12));
        assert_eq!(books.fetchable().count(), 0);
        assert_eq!(books.position(&tp(0)), Some(7));
        books.refetch(&tp(0));
        assert_eq!(
            books.fetchable().count(),
            0,
            "a refetch does not release it"
        );
        books.position_at(&tp(0), at(12));
        assert_eq!(books.fetchable().collect::<Vec<_>>(), vec![(&tp(0), 12)]);
    }

    #[test]
    fn epoch_marks_keep_what_the_unfinished_offsets_need() {
        let mut e = Epochs::default();
        e.note(0, 1);
        e.note(5, 1);
        e.note(10, 2);
        e.note(20, 3);
        assert_eq!(
            (e.at(-1), e.at(0), e.at(9), e.at(10), e.at(25)),
            (None, Some(1), Some(1), Some(2), Some(3))
        );
        e.forget_below(15);
        assert_eq!(e.0, VecDeque::from([(10, 2), (20, 3)]));
        // A rewrite from an earlier offset replaces what followed.
        e.note(12, 4);
        assert_eq!(e.0, VecDeque::from([(10, 2), (12, 4)]));
    }

    #[test]
    fn a_topic_created_again_is_read_from_the_earliest_offset_of_the_new_one() {
        let mut b = books_at(Some(5));
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert!(!b.topic_id_is(&tp(0), old), "the first id seen");
        assert!(!b.topic_id_is(&tp(0), old));
        assert!(!b.topic_id_is(&tp(0), Uuid::nil()), "a broker without ids");
        assert_eq!(b.fetchable().count(), 1);
        assert!(b.topic_id_is(&tp(0), new));
        assert_eq!(b.awaiting_reset(), [tp(0)]);
        assert!(!b.resets_to_earliest(&tp(0)), "the engine says so");
        b.start_at_earliest(&tp(0));
        assert!(b.resets_to_earliest(&tp(0)));
        b.position_at(&tp(0), at(0));
        assert!(!b.resets_to_earliest(&tp(0)));
        assert!(b.awaiting_reset().is_empty());
        // The new position is committed over the old topic's.
        assert_eq!(b.uncommitted(Since::Confirmed)[&tp(0)].offset, 0);
        assert!(!b.topic_id_is(&tp(0), new));
    }

    #[test]
    fn only_a_partition_without_a_position_starts_at_the_earliest_offset() {
        let mut b = books_at(Some(5));
        b.start_at_earliest(&tp(0));
        assert!(!b.resets_to_earliest(&tp(0)), "it has a committed offset");
        let mut b = books_at(None);
        b.start_at_earliest(&tp(0));
        assert!(b.resets_to_earliest(&tp(0)));
    }
}
