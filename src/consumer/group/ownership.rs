//! The books of the partitions a member holds: [`Ownership`], and the [`Event`]s it turns
//! the protocols' decisions into for the member thread.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::client::{CommittedOffset, TopicPartition};

use super::super::error::Error;

/// What a member's group thread tells it.
#[derive(Debug)]
pub(crate) enum Event {
    /// Partitions to take up, with the group's committed offsets (absent: none committed).
    /// `discovered`: those without one that did not exist when the member first looked at
    /// its topics (added since, or of a topic created since): read from their earliest
    /// offset, whatever the reset policy, so that nothing written to them is skipped.
    Assigned {
        partitions: Vec<TopicPartition>,
        committed: BTreeMap<TopicPartition, CommittedOffset>,
        discovered: BTreeSet<TopicPartition>,
    },
    /// Give these back: stop handing them out, commit what is finished, then send
    /// [`Command::Released`](super::driver::Command::Released).
    Revoke(Vec<TopicPartition>),
    /// These are gone already (the member was fenced or stalled): drop them, commit nothing.
    Lost(Vec<TopicPartition>),
    /// The member cannot go on.
    Failed(Error),
}

/// The partitions a member holds, and the events that tell the member thread about changes.
/// Both protocols decide; this keeps the books, so that a partition is never announced
/// twice, revoked before it was announced, or committed after it was lost.
#[derive(Debug, Default)]
pub(super) struct Ownership {
    /// Partitions given to the member thread, or about to be (see `unannounced`).
    owned: BTreeSet<TopicPartition>,
    /// Owned partitions asked back and not yet released.
    revoking: BTreeSet<TopicPartition>,
    /// Owned partitions whose `Assigned` event waits for their committed offsets.
    unannounced: BTreeSet<TopicPartition>,
    outbox: VecDeque<Event>,
}

impl Ownership {
    /// What the member holds (including what it is giving back).
    pub(super) fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }

    /// No partition is waiting to be released.
    pub(super) fn is_settled(&self) -> bool {
        self.revoking.is_empty()
    }

    /// Take up `partitions` (those not owned already); returns how many were new.
    pub(super) fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> usize {
        let mut added = 0;
        for tp in partitions {
            if self.owned.insert(tp.clone()) {
                self.unannounced.insert(tp);
                added += 1;
            }
        }
        added
    }

    /// Ask for `partitions` back. One the member thread never heard of is dropped at once.
    pub(super) fn revoke(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let mut asked = Vec::new();
        for tp in partitions {
            if !self.owned.contains(&tp) || self.revoking.contains(&tp) {
                continue;
            }
            if self.unannounced.remove(&tp) {
                self.owned.remove(&tp);
            } else {
                self.revoking.insert(tp.clone());
                asked.push(tp);
            }
        }
        if !asked.is_empty() {
            self.outbox.push_back(Event::Revoke(asked));
        }
    }

    /// Ask for everything back (eager rebalancing, leaving).
    pub(super) fn revoke_all(&mut self) {
        let all: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        self.revoke(all);
    }

    /// Everything is gone already: tell the member thread to drop it without committing.
    /// Returns whether anything was held.
    pub(super) fn lose_all(&mut self) -> bool {
        let lost: Vec<TopicPartition> = self.owned.difference(&self.unannounced).cloned().collect();
        let held = !self.owned.is_empty();
        self.owned.clear();
        self.revoking.clear();
        self.unannounced.clear();
        if !lost.is_empty() {
            self.outbox.push_back(Event::Lost(lost));
        }
        held
    }

    /// The member thread released `partitions`.
    pub(super) fn released(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if self.revoking.remove(tp) {
                self.owned.remove(tp);
            }
        }
    }

    /// Partitions owned but not yet announced (their committed offsets are wanted).
    pub(super) fn unannounced(&self) -> Vec<TopicPartition> {
        self.unannounced.iter().cloned().collect()
    }

    /// Announce those of `partitions` still waiting, with their committed offsets; of
    /// those without one, the partitions `first_seen` did not have are `discovered`.
    pub(super) fn announce(
        &mut self,
        partitions: &[TopicPartition],
        committed: BTreeMap<TopicPartition, CommittedOffset>,
        first_seen: Option<&FirstSeen>,
    ) {
        let ready: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| self.unannounced.remove(*tp))
            .cloned()
            .collect();
        if !ready.is_empty() {
            let discovered = ready
                .iter()
                .filter(|tp| !committed.contains_key(*tp))
                .filter(|tp| first_seen.is_some_and(|seen| seen.is_new(tp)))
                .cloned()
                .collect();
            self.outbox.push_back(Event::Assigned {
                partitions: ready,
                committed,
                discovered,
            });
        }
    }

    /// Tell the member thread it cannot go on.
    pub(super) fn fail(&mut self, err: Error) {
        self.outbox.push_back(Event::Failed(err));
    }

    pub(super) fn take_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.outbox.drain(..)
    }
}

/// The partition counts of the subscribed topics when the member first looked (a topic
/// absent: it did not exist). A partition beyond them was added, or its topic created,
/// while the member ran: nobody in the group can have meant to skip what was written to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FirstSeen(pub(super) BTreeMap<String, i32>);

impl FirstSeen {
    /// Whether `tp` did not exist at the first look.
    fn is_new(&self, tp: &TopicPartition) -> bool {
        self.0.get(&tp.0).is_none_or(|&count| tp.1 >= count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    fn events(own: &mut Ownership) -> Vec<String> {
        own.take_events()
            .map(|e| match e {
                Event::Assigned { partitions, .. } => format!("assigned {partitions:?}"),
                Event::Revoke(p) => format!("revoke {p:?}"),
                Event::Lost(p) => format!("lost {p:?}"),
                Event::Failed(e) => format!("failed {e}"),
            })
            .collect()
    }

    #[test]
    fn partitions_are_announced_once_with_their_offsets() {
        let mut own = Ownership::default();
        assert_eq!(own.assign([tp(0), tp(1)]), 2);
        assert_eq!(own.assign([tp(1)]), 0, "owned already");
        assert!(
            events(&mut own).is_empty(),
            "nothing before the offsets are known"
        );
        own.announce(
            &[tp(0), tp(1)],
            BTreeMap::from([(tp(0), CommittedOffset::at(7))]),
            None,
        );
        own.announce(&[tp(0)], BTreeMap::new(), None);
        assert_eq!(events(&mut own), [r#"assigned [("t", 0), ("t", 1)]"#]);
        assert!(own.unannounced().is_empty());
    }

    #[test]
    fn revoking_what_was_never_announced_needs_no_release() {
        let mut own = Ownership::default();
        own.assign([tp(0), tp(1)]);
        own.announce(&[tp(0)], BTreeMap::new(), None);
        events(&mut own);
        own.revoke([tp(0), tp(1), tp(9)]);
        assert_eq!(events(&mut own), [r#"revoke [("t", 0)]"#]);
        assert!(!own.is_settled());
        assert!(!own.owned().contains(&tp(1)), "dropped at once");
        own.revoke([tp(0)]);
        assert!(events(&mut own).is_empty(), "asked once");
        own.released(&[tp(0)]);
        assert!(own.is_settled() && own.owned().is_empty());
    }

    #[test]
    fn lost_partitions_are_dropped_and_never_released() {
        let mut own = Ownership::default();
        own.assign([tp(0), tp(1), tp(2)]);
        own.announce(&[tp(0), tp(1)], BTreeMap::new(), None);
        own.revoke([tp(1)]);
        events(&mut own);
        assert!(own.lose_all());
        assert_eq!(events(&mut own), [r#"lost [("t", 0), ("t", 1)]"#]);
        assert!(own.is_settled() && own.owned().is_empty());
        own.released(&[tp(1)]);
        assert!(own.owned().is_empty(), "a late release changes nothing");
        assert!(!own.lose_all(), "nothing held");
        assert!(events(&mut own).is_empty());
    }

    #[test]
    fn partitions_that_did_not_exist_at_the_first_look_are_discovered() {
        let seen = FirstSeen(BTreeMap::from([("t".to_string(), 2)]));
        let mut own = Ownership::default();
        let u = ("u".to_string(), 0);
        own.assign([tp(1), tp(2), tp(3), u.clone()]);
        let committed = BTreeMap::from([(tp(3), CommittedOffset::at(5))]);
        own.announce(&[tp(1), tp(2), tp(3), u.clone()], committed, Some(&seen));
        let Some(Event::Assigned { discovered, .. }) = own.take_events().next() else {
            panic!("no assignment")
        };
        // t-1 existed; t-3 was added but the group committed an offset for it; topic u
        // was created after the first look.
        assert_eq!(discovered, BTreeSet::from([tp(2), u]));
    }
}
