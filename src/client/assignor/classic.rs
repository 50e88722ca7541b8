//! The classic assignors the group leader runs: [`Assignor`] names the choice; range and
//! round-robin are here, cooperative-sticky's plan in `sticky.rs`.

use std::collections::BTreeMap;

use super::metadata::{Assignment, Subscription};
use super::sticky;

/// Which assignor the leader runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions to members in sorted order (Java's
    /// `RangeAssignor`, protocol name `range`). The default.
    #[default]
    Range,
    /// All partitions of all topics dealt to members in turn (Java's
    /// `RoundRobinAssignor`, protocol name `roundrobin`).
    RoundRobin,
    /// Balanced, and sticky: members keep what they own unless balance needs it elsewhere,
    /// and a partition that moves is handed over in two rebalances, first revoked by its
    /// owner, then given to its new member (KIP-429; Java's `CooperativeStickyAssignor`,
    /// protocol name `cooperative-sticky`). See [`Assignor::assign`] for its guarantees.
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name sent in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor with this protocol name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            "cooperative-sticky" => Some(Assignor::CooperativeSticky),
            _ => None,
        }
    }

    /// Whether members keep what they own through a rebalance (KIP-429) rather than giving
    /// everything up first.
    pub fn is_cooperative(self) -> bool {
        matches!(self, Assignor::CooperativeSticky)
    }

    /// Assign `partitions` (count per topic) among `members` (member id → subscription).
    /// Every member gets an entry, possibly empty; only subscribers of a topic get its
    /// partitions. Range and round-robin ignore what members own.
    ///
    /// Cooperative-sticky promises, for any input (and never panics):
    /// - **Balance.** No member could take a partition off a member holding two or more
    ///   partitions more than it, directly or along a chain of members each passing one
    ///   partition to the next subscriber of its topic. When all members subscribe to the
    ///   same topics, counts therefore differ by at most one; with unequal subscriptions
    ///   the counts are as even as the subscriptions allow (no assignment has a smaller
    ///   largest count, or a smaller sum of squared counts).
    /// - **Stickiness.** A member keeps every partition it validly owns unless balance
    ///   needs it elsewhere; partitions nobody owns are moved before owned ones. With equal
    ///   subscriptions, as few owned partitions move as balance allows. A claim counts when
    ///   the member still subscribes to the topic and the partition exists; of the claims
    ///   on one partition that count, the one from the highest generation is valid, and a
    ///   tie at the highest generation leaves it to nobody (as Java since 3.5, KAFKA-14639).
    /// - **Cooperation.** A partition given to a member that does not validly own it,
    ///   while another member still claims it, is withheld this round: the claimant revokes
    ///   it on seeing it missing, rejoins, and the next round hands it over. So no partition
    ///   is handed to a member while another still holds it, and once membership stops
    ///   changing the group settles within two rounds (the second withholds nothing).
    pub fn assign(
        self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Range => range(members, partitions),
            Assignor::RoundRobin => round_robin(members, partitions),
            Assignor::CooperativeSticky => sticky::plan(members, partitions).given,
        }
    }
}

/// An empty assignment for every member.
fn empty_for(members: &BTreeMap<String, Subscription>) -> BTreeMap<String, Assignment> {
    members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect()
}

/// Per topic, contiguous runs to its subscribers in id order, the first ones one longer.
fn range(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_for(members);
    for (topic, &count) in partitions {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, sub)| sub.topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribers.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            if take > 0 {
                if let Some(entry) = out.get_mut(m) {
                    entry.insert(topic.clone(), (next..next + take).collect());
                }
            }
            next += take;
        }
    }
    out
}

/// Every partition of every topic, in turn, to the next member (in id order) subscribed.
fn round_robin(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_for(members);
    let ids: Vec<&String> = members.keys().collect();
    let mut turn = 0usize;
    for (topic, &count) in partitions {
        for p in 0..count {
            // The next member (in turn) that subscribes to this topic.
            for _ in 0..ids.len() {
                let m = ids[turn % ids.len()];
                turn += 1;
                if members[m].topics.contains(topic) {
                    if let Some(entry) = out.get_mut(m) {
                        entry.entry(topic.clone()).or_default().push(p);
                    }
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribed(topics: &[&str]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Subscription::default()
        }
    }

    fn members(n: usize, topics: &[&str]) -> BTreeMap<String, Subscription> {
        (0..n)
            .map(|i| (format!("m{i}"), subscribed(topics)))
            .collect()
    }

    #[test]
    fn range_gives_contiguous_runs_with_the_extra_to_the_first() {
        let parts = BTreeMap::from([("t".to_string(), 7)]);
        let a = Assignor::Range.assign(&members(3, &["t"]), &parts);
        assert_eq!(a["m0"]["t"], [0, 1, 2]);
        assert_eq!(a["m1"]["t"], [3, 4]);
        assert_eq!(a["m2"]["t"], [5, 6]);
    }

    #[test]
    fn six_partitions_three_members_two_each() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&members(3, &["t"]), &parts);
            assert!(a.values().all(|x| x["t"].len() == 2), "{assignor:?}: {a:?}");
        }
    }

    #[test]
    fn more_members_than_partitions_leaves_some_empty() {
        let parts = BTreeMap::from([("t".to_string(), 2)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&members(4, &["t"]), &parts);
            assert_eq!(a.len(), 4);
            let total: usize = a
                .values()
                .map(|x| x.values().map(Vec::len).sum::<usize>())
                .sum();
            assert_eq!(total, 2, "{assignor:?}");
            assert_eq!(a.values().filter(|x| x.is_empty()).count(), 2);
        }
    }

    #[test]
    fn round_robin_deals_across_topics() {
        let parts = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 3)]);
        let a = Assignor::RoundRobin.assign(&members(2, &["a", "b"]), &parts);
        assert_eq!(a["m0"]["a"], [0, 2]);
        assert_eq!(a["m1"]["a"], [1]);
        assert_eq!(a["m0"]["b"], [1]);
        assert_eq!(a["m1"]["b"], [0, 2]);
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let mut m = members(2, &["a"]);
        m.insert("m2".into(), subscribed(&["b"]));
        let parts = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let a = assignor.assign(&m, &parts);
            assert_eq!(a["m2"].keys().collect::<Vec<_>>(), ["b"], "{assignor:?}");
            assert_eq!(a["m2"]["b"], [0, 1]);
            assert!(!a["m0"].contains_key("b"));
        }
    }

    #[test]
    fn names_round_trip_and_only_sticky_cooperates() {
        for a in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
            assert_eq!(a.is_cooperative(), a == Assignor::CooperativeSticky);
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }

    #[test]
    fn range_and_round_robin_ignore_what_members_own() {
        let mut m = members(2, &["t"]);
        if let Some(sub) = m.get_mut("m1") {
            sub.owned = Assignment::from([("t".to_string(), vec![0, 1, 2, 3])]);
            sub.generation = 4;
        }
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        assert_eq!(
            Assignor::Range.assign(&m, &parts),
            Assignor::Range.assign(&members(2, &["t"]), &parts)
        );
        assert_eq!(
            Assignor::RoundRobin.assign(&m, &parts),
            Assignor::RoundRobin.assign(&members(2, &["t"]), &parts)
        );
    }
}
