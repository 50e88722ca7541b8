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

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::client::TopicPartition;

/// Where fetching of one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// No usable position (none committed, or out of range): the reset policy gives one.
    Reset,
    /// The next fetch asks from this offset.
    At(i64),
}

/// What was handed out and finished, once the partition has a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Read {
    /// The next offset to hand out.
    handed: i64,
    /// The next offset not yet finished: what a commit commits.
    done: i64,
    /// Offsets with nothing to hand out, skipped while records before them were
    /// unfinished: once `done` reaches the start, it moves to the end.
    skipped: Option<(i64, i64)>,
}

impl Read {
    fn at(offset: i64) -> Read {
        Read {
            handed: offset,
            done: offset,
            skipped: None,
        }
    }

    fn finish(&mut self, next: i64) {
        self.done = self.done.max(next);
        if let Some((from, to)) = self.skipped {
            if self.done >= from {
                self.done = self.done.max(to);
                self.skipped = None;
            }
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
}

/// Which commit mark [`Books::uncommitted`] compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// What the coordinator confirmed: everything not known to be committed.
    Confirmed,
    /// What was last asked: only what changed since the last request.
    Requested,
}

/// The books of every partition assigned to one member.
#[derive(Debug, Default)]
pub(crate) struct Books {
    parts: BTreeMap<TopicPartition, Book>,
}

impl Books {
    /// `tp` is now assigned, with the offset found committed for it, if any.
    pub(crate) fn assign(&mut self, tp: &TopicPartition, committed: Option<i64>) {
        let topic = match self.parts.values().find(|b| *b.topic == *tp.0) {
            Some(b) => b.topic.clone(),
            None => Arc::from(tp.0.as_str()),
        };
        let book = Book {
            topic,
            fetch: committed.map_or(Fetch::Reset, Fetch::At),
            read: committed.map(Read::at),
            committed,
            requested: committed,
            paused: false,
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
            if let (Fetch::At(_), Some(read)) = (b.fetch, b.read) {
                b.fetch = Fetch::At(read.handed);
            }
        }
    }

    /// The leader refused `tp`'s position (out of range): the reset policy gives a new one.
    /// What was handed out and finished stays as it was until then.
    pub(crate) fn lost_position(&mut self, tp: &TopicPartition) {
        if let Some(b) = self.parts.get_mut(tp) {
            b.fetch = Fetch::Reset;
        }
    }

    /// The partitions waiting for the reset policy.
    pub(crate) fn awaiting_reset(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, b)| b.fetch == Fetch::Reset)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Read `tp` from `offset` on (a seek, or the reset policy's answer): fetched, handed
    /// out and finished all start there.
    pub(crate) fn position_at(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(b) = self.parts.get_mut(tp) {
            b.fetch = Fetch::At(offset);
            b.read = Some(Read::at(offset));
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
            Fetch::At(_) => b.read.map(|r| r.handed),
        }
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

    /// The finished offsets that differ from the mark `since`, per partition.
    pub(crate) fn uncommitted(&self, since: Since) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .filter_map(|(tp, b)| {
                let done = b.read?.done;
                let mark = match since {
                    Since::Confirmed => b.committed,
                    Since::Requested => b.requested,
                };
                (mark != Some(done)).then(|| (tp.clone(), done))
            })
            .collect()
    }

    /// These offsets were asked to commit (the answer is awaited).
    pub(crate) fn requested(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        for (tp, &o) in offsets {
            if let Some(b) = self.parts.get_mut(tp) {
                b.requested = Some(o);
            }
        }
    }

    /// The coordinator answered a commit of `offsets`: confirmed (`ok`), or refused (they
    /// are asked again at the next interval).
    pub(crate) fn commit_answered(&mut self, offsets: &BTreeMap<TopicPartition, i64>, ok: bool) {
        for (tp, &o) in offsets {
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
    pub(crate) fn committed_by_transaction(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        self.commit_answered(offsets, true);
        for (tp, &o) in offsets {
            self.finished(tp, o);
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

    fn books_at(offset: Option<i64>) -> Books {
        let mut books = Books::default();
        books.assign(&tp(0), offset);
        books
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
        books.position_at(&tp(0), 7);
        assert_eq!(books.position(&tp(0)), Some(7));
        assert!(books.awaiting_reset().is_empty());
        // The reset's position is committed (as the Java consumer does): the group's
        // position is then known even before a record arrives.
        assert_eq!(
            books.uncommitted(Since::Confirmed),
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
        assert_eq!(offsets, BTreeMap::from([(tp(0), 20)]));
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
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)], 5);
        books.finished(&tp(0), 10);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)], 11);
    }

    #[test]
    fn skipping_with_nothing_unfinished_moves_the_finished_mark_too() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 10);
        books.finished(&tp(0), 10);
        books.skip_to(&tp(0), 12);
        assert_eq!(books.position(&tp(0)), Some(12));
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)], 12);
    }

    #[test]
    fn adjacent_skips_join() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 3);
        books.skip_to(&tp(0), 5);
        books.skip_to(&tp(0), 8);
        books.finished(&tp(0), 3);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)], 8);
    }

    #[test]
    fn a_lost_position_keeps_what_was_finished_until_the_reset() {
        let mut books = books_at(Some(0));
        books.fetched(&tp(0), 40);
        books.handed(&tp(0), 40);
        books.finished(&tp(0), 30);
        books.lost_position(&tp(0));
        assert_eq!(books.fetchable().count(), 0);
        assert_eq!(books.awaiting_reset(), vec![tp(0)]);
        assert_eq!(books.position(&tp(0)), None);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)], 30);
        // A refetch does not give it a position back.
        books.refetch(&tp(0));
        assert_eq!(books.fetchable().count(), 0);
        books.position_at(&tp(0), 100);
        assert_eq!(books.uncommitted(Since::Confirmed)[&tp(0)], 100);
    }

    #[test]
    fn a_transaction_commit_finishes_and_commits() {
        let mut books = books_at(Some(0));
        books.handed(&tp(0), 9);
        let offsets = BTreeMap::from([(tp(0), 9)]);
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
}
