//! The cooperative-sticky assignor (KIP-429; Java's `CooperativeStickyAssignor`), as the
//! group leader runs it. Four steps:
//!
//! 1. **Claims.** A member's claim on a partition it owns counts when the member still
//!    subscribes to the topic and the partition exists. Of the claims that count on one
//!    partition, the one from the highest generation is valid; a tie at the highest
//!    generation leaves the partition to nobody (as Java since 3.5, KAFKA-14639).
//! 2. **Keep and fill.** Every member keeps what it validly owns; every other partition goes
//!    to the subscriber of its topic that holds the fewest (topics with fewer subscribers
//!    first).
//! 3. **Balance.** While a member holds two or more partitions more than a member it can
//!    hand work to, directly or along a chain of members each passing one partition to the
//!    next subscriber of its topic, one partition moves along such a chain. Chains that
//!    pass on only partitions their holders did not keep come first; otherwise the chain
//!    passing on the fewest kept ones. Every chain lowers the sum of squared loads, so this
//!    ends.
//! 4. **Cooperative adjustment.** A partition going to a member that does not validly own it,
//!    while another member still claims it, is withheld this round: the claimant revokes it on
//!    seeing it missing and rejoins, and the next round hands it over.
//!
//! When no chain is left, the loads are as even as the subscriptions allow (a semi-matching
//! without a cost-reducing path is optimal: Harvey, Ladner, Lovász and Tamir, "Semi-matchings
//! for bipartite graphs and load balancing", 2003). Why the group settles in the round after
//! one that withheld: members then own last round's target minus what was withheld, so that
//! target is a balanced assignment keeping everything owned; while the board is less even
//! than it, a chain passing on only withheld (now free) partitions exists, and chains of
//! free partitions come first, so nothing owned moves and nothing is withheld again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::metadata::{Assignment, Subscription};

/// A partition on the board: (topic index, partition number).
type Tp = (usize, i32);

/// One step of a chain: the member giving a partition, the one taking it, and the topic.
type Hop = (usize, usize, usize);

/// What a search found: each member's cost, and from whom through which topic it was
/// reached.
struct Reached {
    cost: Vec<Option<usize>>,
    via: Vec<Option<(usize, usize)>>,
}

/// The leader's answer for one rebalance.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// What each member (every one of them) gets now.
    pub(super) given: BTreeMap<String, Assignment>,
    /// What each member is meant to get once the current claimants have revoked it.
    pub(super) withheld: BTreeMap<String, Assignment>,
}

/// Run the cooperative-sticky assignor.
pub(super) fn plan(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, i32>,
) -> Plan {
    let mut board = Board::new(members, partitions);
    let claims = board.claims(members);
    board.keep_valid(&claims);
    board.fill();
    board.balance();
    board.into_plan(&claims)
}

/// The partitions one member holds in one topic.
#[derive(Debug, Default)]
struct Held {
    /// Those it validly owned before this rebalance.
    kept: BTreeSet<i32>,
    /// The others: free ones, and ones moved to it.
    moved: BTreeSet<i32>,
}

/// The assignment being built.
struct Board<'a> {
    /// Member ids, sorted; members are referred to by index.
    ids: Vec<&'a str>,
    /// Topics that exist and have a subscriber, sorted; referred to by index.
    topics: Vec<&'a str>,
    /// Partition count per topic.
    counts: Vec<i32>,
    /// Per topic, its subscribers' indexes, ascending.
    subscribers: Vec<Vec<usize>>,
    /// The member whose claim on a partition is valid.
    owner: BTreeMap<Tp, usize>,
    /// What each member holds, by topic (no empty entries).
    held: Vec<BTreeMap<usize, Held>>,
    /// How many partitions each member holds.
    load: Vec<usize>,
}

impl<'a> Board<'a> {
    fn new(
        members: &'a BTreeMap<String, Subscription>,
        partitions: &'a BTreeMap<String, i32>,
    ) -> Self {
        let mut board = Board {
            ids: members.keys().map(String::as_str).collect(),
            topics: Vec::new(),
            counts: Vec::new(),
            subscribers: Vec::new(),
            owner: BTreeMap::new(),
            held: (0..members.len()).map(|_| BTreeMap::new()).collect(),
            load: vec![0; members.len()],
        };
        for (topic, &count) in partitions {
            let subscribers: Vec<usize> = members
                .values()
                .enumerate()
                .filter(|(_, sub)| sub.topics.contains(topic))
                .map(|(m, _)| m)
                .collect();
            if !subscribers.is_empty() {
                board.topics.push(topic);
                board.counts.push(count.max(0));
                board.subscribers.push(subscribers);
            }
        }
        board
    }

    fn subscribes(&self, member: usize, topic: usize) -> bool {
        self.subscribers[topic].binary_search(&member).is_ok()
    }

    /// Every claim on a partition that exists, valid or not: (generation, member) by
    /// partition.
    fn claims(
        &self,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<Tp, BTreeSet<(i32, usize)>> {
        let mut claims: BTreeMap<Tp, BTreeSet<(i32, usize)>> = BTreeMap::new();
        for (m, sub) in members.values().enumerate() {
            for (name, ps) in &sub.owned {
                let Ok(t) = self.topics.binary_search(&name.as_str()) else {
                    continue;
                };
                for &p in ps.iter().filter(|&&p| (0..self.counts[t]).contains(&p)) {
                    claims
                        .entry((t, p))
                        .or_default()
                        .insert((sub.generation, m));
                }
            }
        }
        claims
    }

    /// Step 1 and the first half of step 2: every valid claim stays with its member.
    fn keep_valid(&mut self, claims: &BTreeMap<Tp, BTreeSet<(i32, usize)>>) {
        for (&(t, p), claimants) in claims {
            let mut valid = claimants
                .iter()
                .rev()
                .filter(|&&(_, m)| self.subscribes(m, t));
            let Some(&(generation, m)) = valid.next() else {
                continue;
            };
            if valid.next().is_some_and(|&(g, _)| g == generation) {
                continue; // a tie at the highest generation: nobody's
            }
            self.owner.insert((t, p), m);
            self.place(m, t, p);
        }
    }

    /// The second half of step 2: each partition nobody kept to the subscriber holding the
    /// fewest, topics with the fewest subscribers first.
    fn fill(&mut self) {
        let mut order: Vec<usize> = (0..self.topics.len()).collect();
        order.sort_by_key(|&t| (self.subscribers[t].len(), t));
        for t in order {
            for p in 0..self.counts[t] {
                if self.owner.contains_key(&(t, p)) {
                    continue;
                }
                let lightest = self.subscribers[t]
                    .iter()
                    .copied()
                    .min_by_key(|&m| (self.load[m], m));
                if let Some(m) = lightest {
                    self.place(m, t, p);
                }
            }
        }
    }

    /// Step 3: move partitions along chains until no chain evens the loads any further.
    fn balance(&mut self) {
        // Each chain lowers the sum of squared loads by at least 2, so the bound is never hit.
        let squares = self
            .load
            .iter()
            .fold(0usize, |sum, &l| sum.saturating_add(l.saturating_mul(l)));
        for _ in 0..=squares / 2 {
            let Some(chain) = self.find_chain(false).or_else(|| self.find_chain(true)) else {
                return;
            };
            for (from, to, topic) in chain {
                self.pass_one(from, to, topic);
            }
        }
    }

    /// A chain from a member holding `L` partitions to one holding at most `L - 2`, trying
    /// the heaviest members first; with `through_kept` false, one that moves only partitions
    /// their holders did not keep.
    fn find_chain(&self, through_kept: bool) -> Option<Vec<Hop>> {
        let lightest = *self.load.iter().min()?;
        let levels: BTreeSet<usize> = self.load.iter().copied().collect();
        levels
            .into_iter()
            .rev()
            .take_while(|&level| level >= lightest + 2)
            .find_map(|level| self.search(level, through_kept))
    }

    /// The cheapest chain from a member holding `level` partitions to the lightest member
    /// holding at most `level - 2`, source first.
    fn search(&self, level: usize, through_kept: bool) -> Option<Vec<Hop>> {
        let Reached { cost, via } = self.reach(level, through_kept);
        let (_, _, target) = (0..self.ids.len())
            .filter(|&m| self.load[m] + 2 <= level)
            .filter_map(|m| cost[m].map(|c| (c, self.load[m], m)))
            .min()?;
        let mut chain = Vec::new();
        let mut at = target;
        while let Some((from, topic)) = via[at] {
            chain.push((from, at, topic));
            at = from;
            if chain.len() > self.ids.len() {
                return None; // cannot happen: `via` always points to a member reached earlier
            }
        }
        chain.reverse();
        Some(chain)
    }

    /// A 0-1 breadth-first search from every member holding `level` partitions: passing on a
    /// partition its holder did not keep costs 0, one it kept costs 1 (and is not allowed
    /// without `through_kept`).
    fn reach(&self, level: usize, through_kept: bool) -> Reached {
        let n = self.ids.len();
        let mut cost: Vec<Option<usize>> = vec![None; n];
        let mut via: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut done = vec![false; n];
        // A topic's subscribers need reaching only once through a partition passed on free
        // and once through a kept one: members leave the queue cheapest first.
        let mut expanded = vec![[false; 2]; self.topics.len()];
        let mut queue: VecDeque<usize> = (0..n).filter(|&m| self.load[m] == level).collect();
        for &m in &queue {
            cost[m] = Some(0);
        }
        while let Some(u) = queue.pop_front() {
            let Some(base) = cost[u] else { continue };
            if std::mem::replace(&mut done[u], true) {
                continue;
            }
            for (&t, held) in &self.held[u] {
                let step = match (held.moved.is_empty(), held.kept.is_empty()) {
                    (false, _) => 0,
                    (true, false) if through_kept => 1,
                    _ => continue,
                };
                if std::mem::replace(&mut expanded[t][step], true) {
                    continue;
                }
                for &v in &self.subscribers[t] {
                    if cost[v].is_none_or(|c| base + step < c) {
                        cost[v] = Some(base + step);
                        via[v] = Some((u, t));
                        if step == 0 {
                            queue.push_front(v);
                        } else {
                            queue.push_back(v);
                        }
                    }
                }
            }
        }
        Reached { cost, via }
    }

    /// Move one partition of `topic` from `from` to `to`: one that goes back to its owner if
    /// there is one, else the highest one `from` did not keep, else the highest it kept.
    fn pass_one(&mut self, from: usize, to: usize, topic: usize) {
        let Some(held) = self.held[from].get(&topic) else {
            return;
        };
        let home = held
            .moved
            .iter()
            .copied()
            .find(|&p| self.owner.get(&(topic, p)) == Some(&to));
        let pick = home
            .or_else(|| held.moved.last().copied())
            .or_else(|| held.kept.last().copied());
        if let Some(p) = pick {
            self.take(from, topic, p);
            self.place(to, topic, p);
        }
    }

    fn place(&mut self, m: usize, t: usize, p: i32) {
        let held = self.held[m].entry(t).or_default();
        let fresh = if self.owner.get(&(t, p)) == Some(&m) {
            held.kept.insert(p)
        } else {
            held.moved.insert(p)
        };
        if fresh {
            self.load[m] += 1;
        }
    }

    fn take(&mut self, m: usize, t: usize, p: i32) {
        let Some(held) = self.held[m].get_mut(&t) else {
            return;
        };
        if held.kept.remove(&p) || held.moved.remove(&p) {
            self.load[m] = self.load[m].saturating_sub(1);
        }
        if held.kept.is_empty() && held.moved.is_empty() {
            self.held[m].remove(&t);
        }
    }

    /// Step 4: what each member gets now, and what waits for its claimants to revoke it.
    fn into_plan(self, claims: &BTreeMap<Tp, BTreeSet<(i32, usize)>>) -> Plan {
        let mut plan = Plan::default();
        for (m, id) in self.ids.iter().enumerate() {
            let mut given = Assignment::new();
            let mut withheld = Assignment::new();
            for (&t, held) in &self.held[m] {
                let all: BTreeSet<i32> = held.kept.union(&held.moved).copied().collect();
                for p in all {
                    let claimed_by_another = claims
                        .get(&(t, p))
                        .is_some_and(|c| c.iter().any(|&(_, other)| other != m));
                    let wait = claimed_by_another && !held.kept.contains(&p);
                    let dest = if wait { &mut withheld } else { &mut given };
                    dest.entry(self.topics[t].to_string()).or_default().push(p);
                }
            }
            plan.given.insert(id.to_string(), given);
            if !withheld.is_empty() {
                plan.withheld.insert(id.to_string(), withheld);
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Assignor;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn parts(counts: &[(&str, i32)]) -> BTreeMap<String, i32> {
        counts.iter().map(|&(t, n)| (t.to_string(), n)).collect()
    }

    fn sub(topics: &[&str], owned: &[(&str, &[i32])], generation: i32) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned
                .iter()
                .map(|&(t, ps)| (t.to_string(), ps.to_vec()))
                .collect(),
            generation,
        }
    }

    fn group<const N: usize>(members: [(&str, Subscription); N]) -> BTreeMap<String, Subscription> {
        members
            .into_iter()
            .map(|(id, s)| (id.to_string(), s))
            .collect()
    }

    fn flat(a: &Assignment) -> BTreeSet<(String, i32)> {
        a.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
            .collect()
    }

    fn given(plan: &Plan, id: &str) -> BTreeSet<(String, i32)> {
        plan.given.get(id).map(flat).unwrap_or_default()
    }

    fn withheld(plan: &Plan, id: &str) -> BTreeSet<(String, i32)> {
        plan.withheld.get(id).map(flat).unwrap_or_default()
    }

    /// What each member is meant to hold once the round settles: given and withheld.
    fn target(plan: &Plan, id: &str) -> BTreeSet<(String, i32)> {
        &given(plan, id) | &withheld(plan, id)
    }

    fn tps(topic: &str, ps: &[i32]) -> BTreeSet<(String, i32)> {
        ps.iter().map(|&p| (topic.to_string(), p)).collect()
    }

    /// Every member now owns what it was given, in `generation`.
    fn apply(members: &mut BTreeMap<String, Subscription>, plan: &Plan, generation: i32) {
        for (id, sub) in members.iter_mut() {
            sub.owned = plan.given.get(id).cloned().unwrap_or_default();
            sub.generation = generation;
        }
    }

    #[test]
    fn one_member_to_three_hands_over_in_two_rounds() {
        let p = parts(&[("t", 6)]);
        let mut g = group([
            ("m0", sub(&["t"], &[("t", &[0, 1, 2, 3, 4, 5])], 1)),
            ("m1", sub(&["t"], &[], -1)),
            ("m2", sub(&["t"], &[], -1)),
        ]);
        let first = plan(&g, &p);
        assert_eq!(Assignor::CooperativeSticky.assign(&g, &p), first.given);
        // m0 keeps 2 of its 6 and, seeing 4 gone, revokes them; the others wait.
        assert_eq!(given(&first, "m0").len(), 2);
        assert!(given(&first, "m0").is_subset(&tps("t", &[0, 1, 2, 3, 4, 5])));
        assert!(given(&first, "m1").is_empty() && given(&first, "m2").is_empty());
        assert_eq!(
            (withheld(&first, "m1").len(), withheld(&first, "m2").len()),
            (2, 2)
        );

        apply(&mut g, &first, 2);
        let second = plan(&g, &p);
        assert!(second.withheld.is_empty(), "{second:?}");
        assert_eq!(given(&second, "m0"), given(&first, "m0"));
        assert_eq!(
            (given(&second, "m1").len(), given(&second, "m2").len()),
            (2, 2)
        );
        let all: BTreeSet<_> = ["m0", "m1", "m2"]
            .iter()
            .flat_map(|m| given(&second, m))
            .collect();
        assert_eq!(all, tps("t", &[0, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn the_heaviest_member_gives_to_the_lightest() {
        // Balance needs one move: m0's third partition to m2, not to m1 (which would then
        // have to pass one on as well).
        let p = parts(&[("t", 4)]);
        let g = group([
            ("m0", sub(&["t"], &[("t", &[0, 1, 2])], 1)),
            ("m1", sub(&["t"], &[("t", &[3])], 1)),
            ("m2", sub(&["t"], &[], -1)),
        ]);
        let plan = plan(&g, &p);
        assert_eq!(given(&plan, "m0"), tps("t", &[0, 1]));
        assert_eq!(given(&plan, "m1"), tps("t", &[3]));
        assert_eq!(withheld(&plan, "m2"), tps("t", &[2]));
    }

    #[test]
    fn three_members_to_one_takes_everything_at_once() {
        let p = parts(&[("t", 6)]);
        let g = group([("m0", sub(&["t"], &[("t", &[0, 1])], 3))]);
        let plan = plan(&g, &p);
        assert_eq!(given(&plan, "m0"), tps("t", &[0, 1, 2, 3, 4, 5]));
        assert!(plan.withheld.is_empty());
    }

    #[test]
    fn a_leaving_members_partitions_go_to_the_others_at_once() {
        let p = parts(&[("t", 6)]);
        let g = group([
            ("m0", sub(&["t"], &[("t", &[0, 1])], 3)),
            ("m2", sub(&["t"], &[("t", &[4, 5])], 3)),
        ]);
        let plan = plan(&g, &p);
        assert!(plan.withheld.is_empty());
        for (m, own) in [("m0", [0, 1]), ("m2", [4, 5])] {
            assert!(given(&plan, m).is_superset(&tps("t", &own)));
            assert_eq!(given(&plan, m).len(), 3);
        }
    }

    #[test]
    fn the_higher_generation_wins_a_contested_partition() {
        let p = parts(&[("t", 2)]);
        let g = group([
            ("m0", sub(&["t"], &[("t", &[0])], 5)),
            ("m1", sub(&["t"], &[("t", &[0, 1])], 4)),
        ]);
        let plan = plan(&g, &p);
        // m0 keeps t-0; m1's stale claim on it loses, its uncontested t-1 stands.
        assert_eq!(given(&plan, "m0"), tps("t", &[0]));
        assert_eq!(given(&plan, "m1"), tps("t", &[1]));
        assert!(plan.withheld.is_empty());
    }

    #[test]
    fn a_tie_at_the_highest_generation_leaves_the_partition_to_nobody_yet() {
        let p = parts(&[("t", 2)]);
        let g = group([
            ("m0", sub(&["t"], &[("t", &[0])], 5)),
            ("m1", sub(&["t"], &[("t", &[0])], 5)),
        ]);
        let plan = plan(&g, &p);
        // Both claims are void, so t-0 is not given to either before both revoke it.
        let (m0, m1) = (given(&plan, "m0"), given(&plan, "m1"));
        assert!(!m0.contains(&("t".into(), 0)) && !m1.contains(&("t".into(), 0)));
        assert_eq!(
            &withheld(&plan, "m0") | &withheld(&plan, "m1"),
            tps("t", &[0])
        );
        assert_eq!(&m0 | &m1, tps("t", &[1]));
    }

    #[test]
    fn an_older_generation_keeps_what_nobody_else_claims() {
        // Java since 3.5 (KAFKA-14639): a member that missed a rebalance keeps its
        // partitions unless a newer claim contests them.
        let p = parts(&[("t", 4)]);
        let g = group([
            ("m0", sub(&["t"], &[("t", &[0, 1])], 2)),
            ("m1", sub(&["t"], &[("t", &[2, 3])], 7)),
        ]);
        let plan = plan(&g, &p);
        assert_eq!(given(&plan, "m0"), tps("t", &[0, 1]));
        assert_eq!(given(&plan, "m1"), tps("t", &[2, 3]));
        assert!(plan.withheld.is_empty());
    }

    #[test]
    fn claims_on_unsubscribed_topics_or_missing_partitions_are_dropped() {
        let p = parts(&[("a", 1), ("b", 2)]);
        let g = group([
            (
                "m0",
                sub(&["b"], &[("a", &[0]), ("b", &[9, -1]), ("gone", &[0])], 3),
            ),
            ("m1", sub(&["a", "b"], &[], 3)),
        ]);
        let plan = plan(&g, &p);
        assert_eq!(given(&plan, "m0"), tps("b", &[0, 1]));
        // a-0 is m1's, but m0 still holds it: it waits for m0 to revoke it.
        assert!(given(&plan, "m1").is_empty());
        assert_eq!(withheld(&plan, "m1"), tps("a", &[0]));
    }

    #[test]
    fn unequal_subscriptions_are_as_even_as_they_allow() {
        let p = parts(&[("a", 4), ("b", 2)]);
        let g = group([
            ("m0", sub(&["a"], &[], -1)),
            ("m1", sub(&["a", "b"], &[("b", &[0, 1])], 1)),
            ("m2", sub(&["b"], &[], -1)),
        ]);
        let first = plan(&g, &p);
        for m in ["m0", "m1", "m2"] {
            assert_eq!(target(&first, m).len(), 2, "{m}: {first:?}");
        }
        // m2 reads only b, so both b partitions are its share: m1 gives them up for two of
        // a, and m2 gets them once m1 has revoked them.
        assert_eq!(withheld(&first, "m2"), tps("b", &[0, 1]));
        assert!(given(&first, "m1").iter().all(|(t, _)| t == "a"));
        let p = parts(&[("a", 2), ("b", 2)]);
        let g = group([
            ("m0", sub(&["a"], &[], -1)),
            ("m1", sub(&["a", "b"], &[], -1)),
        ]);
        let plan = plan(&g, &p);
        assert_eq!(given(&plan, "m0"), tps("a", &[0, 1]));
        assert_eq!(given(&plan, "m1"), tps("b", &[0, 1]));
    }

    #[test]
    fn odd_inputs_give_sensible_answers() {
        let p = parts(&[("t", 3), ("neg", -4), ("zero", 0)]);
        assert_eq!(plan(&BTreeMap::new(), &p), Plan::default());
        let g = group([
            ("idle", sub(&[], &[("t", &[0])], 9)),
            (
                "m",
                sub(
                    &["t", "t", "neg", "zero", "none"],
                    &[("t", &[2, 2, 7, -3])],
                    1,
                ),
            ),
        ]);
        let plan = plan(&g, &p);
        assert!(given(&plan, "idle").is_empty());
        // t-0 is claimed by the idle member (which no longer subscribes to t), so it waits.
        assert_eq!(given(&plan, "m"), tps("t", &[1, 2]));
        assert_eq!(withheld(&plan, "m"), tps("t", &[0]));
        let none = super::plan(&g, &BTreeMap::new());
        assert!(none.given.values().all(BTreeMap::is_empty) && none.withheld.is_empty());
    }

    #[test]
    fn a_large_scale_up_is_quick_and_exact() {
        let p = parts(&[("t", 1000)]);
        let all: Vec<i32> = (0..1000).collect();
        let mut g: BTreeMap<String, Subscription> = (1..200)
            .map(|i| (format!("m{i:03}"), sub(&["t"], &[], -1)))
            .collect();
        g.insert("m000".into(), sub(&["t"], &[("t", &all)], 1));
        let plan = plan(&g, &p);
        assert_eq!(given(&plan, "m000").len(), 5);
        assert!(g.keys().all(|m| target(&plan, m).len() == 5));
    }

    // ---- The round simulation -------------------------------------------------------

    /// The valid owner of each partition, worked out the plain way.
    fn valid_owners(
        members: &BTreeMap<String, Subscription>,
        parts: &BTreeMap<String, i32>,
    ) -> BTreeMap<(String, i32), String> {
        let mut claims: BTreeMap<(String, i32), BTreeMap<&String, i32>> = BTreeMap::new();
        for (id, s) in members {
            for (t, ps) in s.owned.iter().filter(|(t, _)| s.topics.contains(t)) {
                let n = parts.get(t).copied().unwrap_or(0);
                for &p in ps.iter().filter(|&&p| 0 <= p && p < n) {
                    claims
                        .entry((t.clone(), p))
                        .or_default()
                        .insert(id, s.generation);
                }
            }
        }
        let mut owners = BTreeMap::new();
        for (tp, by) in claims {
            let top = by.values().copied().max().unwrap_or(-1);
            let at_top: Vec<&&String> = by
                .iter()
                .filter(|(_, &g)| g == top)
                .map(|(m, _)| m)
                .collect();
            if let [only] = at_top[..] {
                owners.insert(tp, only.to_string());
            }
        }
        owners
    }

    fn claimed(sub: &Subscription) -> BTreeSet<(String, i32)> {
        flat(&sub.owned)
    }

    /// Whether no partition is in two of these sets.
    fn disjoint(sets: impl IntoIterator<Item = BTreeSet<(String, i32)>>) -> bool {
        let mut seen = BTreeSet::new();
        sets.into_iter()
            .all(|set| set.into_iter().all(|tp| seen.insert(tp)))
    }

    /// Run one round and check every promise; returns the plan.
    fn check_round(
        members: &BTreeMap<String, Subscription>,
        parts: &BTreeMap<String, i32>,
    ) -> Plan {
        let plan = plan(members, parts);
        assert_eq!(plan, super::plan(members, parts), "deterministic");
        assert!(plan.given.keys().eq(members.keys()), "an entry per member");
        assert!(plan.withheld.keys().all(|m| members.contains_key(m)));
        for m in members.keys() {
            assert!(given(&plan, m).is_disjoint(&withheld(&plan, m)));
        }
        check_coverage(members, parts, &plan);
        check_balance(members, &plan);
        check_stickiness(members, parts, &plan);
        check_handover(members, parts, &plan);
        plan
    }

    /// 1. Every partition of a subscribed topic goes to exactly one subscriber; nothing else.
    fn check_coverage(
        members: &BTreeMap<String, Subscription>,
        parts: &BTreeMap<String, i32>,
        plan: &Plan,
    ) {
        let mut seen = BTreeSet::new();
        for (m, s) in members {
            for tp in target(plan, m) {
                assert!(s.topics.contains(&tp.0), "{m} got {tp:?} unsubscribed");
                assert!(seen.insert(tp.clone()), "{tp:?} twice");
            }
        }
        let want: BTreeSet<(String, i32)> = parts
            .iter()
            .filter(|(t, _)| members.values().any(|s| s.topics.contains(t)))
            .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
            .collect();
        assert_eq!(seen, want);
    }

    /// 2. No member could take work off one holding two more, directly or along a chain;
    ///    with equal subscriptions, counts within one.
    fn check_balance(members: &BTreeMap<String, Subscription>, plan: &Plan) {
        let load = |m: &String| target(plan, m).len();
        let topic_sets: BTreeSet<BTreeSet<&String>> = members
            .values()
            .map(|s| s.topics.iter().collect())
            .collect();
        if topic_sets.len() == 1 {
            let loads: Vec<usize> = members.keys().map(load).collect();
            let (lo, hi) = (loads.iter().min(), loads.iter().max());
            assert!(hi.zip(lo).is_none_or(|(h, l)| h - l <= 1), "{loads:?}");
        }
        for x in members.keys() {
            let mut reached = BTreeSet::from([x]);
            let mut stack = vec![x];
            while let Some(u) = stack.pop() {
                for (t, _) in target(plan, u) {
                    for (v, s) in members {
                        if s.topics.contains(&t) && reached.insert(v) {
                            stack.push(v);
                        }
                    }
                }
            }
            for y in reached {
                assert!(
                    load(y) + 2 > load(x),
                    "{x} ({}) could pass work to {y} ({})",
                    load(x),
                    load(y)
                );
            }
        }
    }

    /// 3. With equal subscriptions, as few owned partitions move as balance allows, and a
    ///    member that loses one gains nothing new.
    fn check_stickiness(
        members: &BTreeMap<String, Subscription>,
        parts: &BTreeMap<String, i32>,
        plan: &Plan,
    ) {
        let owners = valid_owners(members, parts);
        let topic_sets: BTreeSet<BTreeSet<&String>> = members
            .values()
            .map(|s| s.topics.iter().collect())
            .collect();
        if topic_sets.len() != 1 {
            return;
        }
        let total: usize = members.keys().map(|m| target(plan, m).len()).sum();
        let n = members.len();
        let mut kept: Vec<usize> = members
            .keys()
            .map(|m| owners.values().filter(|o| *o == m).count())
            .collect();
        kept.sort_unstable_by(|a, b| b.cmp(a));
        let fewest: usize = kept
            .iter()
            .enumerate()
            .map(|(i, &k)| k.saturating_sub(total / n + usize::from(i < total % n)))
            .sum();
        let moved = owners
            .iter()
            .filter(|(tp, m)| !target(plan, m).contains(tp))
            .count();
        assert_eq!(moved, fewest, "owned partitions moved");
        for m in members.keys() {
            let own: BTreeSet<_> = owners
                .iter()
                .filter(|(_, o)| *o == m)
                .map(|(tp, _)| tp.clone())
                .collect();
            if !own.is_subset(&target(plan, m)) {
                assert!(target(plan, m).is_subset(&own), "{m} lost and gained");
            }
        }
    }

    /// 4. Nothing is given to a member while another claims it, unless the member's own
    ///    claim is the valid one; what moves off a valid owner is withheld. So when no
    ///    partition had two owners before the round, none has two at any moment of it, each
    ///    member holding at most what it owned plus what it was given.
    fn check_handover(
        members: &BTreeMap<String, Subscription>,
        parts: &BTreeMap<String, i32>,
        plan: &Plan,
    ) {
        let owners = valid_owners(members, parts);
        for b in members.keys() {
            for tp in given(plan, b)
                .into_iter()
                .filter(|tp| owners.get(tp) != Some(b))
            {
                for (a, sub) in members.iter().filter(|(a, _)| *a != b) {
                    assert!(
                        !claimed(sub).contains(&tp),
                        "{tp:?} to {b} while {a} holds it"
                    );
                }
            }
            for tp in target(plan, b) {
                if owners.get(&tp).is_some_and(|a| a != b) {
                    assert!(
                        withheld(plan, b).contains(&tp),
                        "{tp:?} moved to {b} at once"
                    );
                }
            }
        }
        if disjoint(members.values().map(claimed)) {
            let during = members.iter().map(|(m, s)| &claimed(s) | &given(plan, m));
            assert!(disjoint(during), "a partition with two owners");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// One round from disjoint ownership, the common case: every promise holds, and
        /// the round after it withholds nothing.
        #[test]
        fn one_round_from_disjoint_ownership(
            counts in vec(0i32..12, 1..4),
            n in 1usize..8,
            owners in vec(0usize..10, 36),
            masks in vec(1u8..8, 8),
            uniform in any::<bool>(),
        ) {
            let parts: BTreeMap<String, i32> =
                counts.iter().enumerate().map(|(i, &c)| (format!("t{i}"), c)).collect();
            let mut members: BTreeMap<String, Subscription> = (0..n)
                .map(|m| {
                    let topics = parts
                        .keys()
                        .enumerate()
                        .filter(|&(i, _)| uniform || masks[m] & (1 << i) != 0)
                        .map(|(_, t)| t.clone())
                        .collect();
                    (format!("m{m}"), Subscription { topics, generation: 3, ..Subscription::default() })
                })
                .collect();
            let all = parts.iter().flat_map(|(t, &c)| (0..c).map(move |p| (t.clone(), p)));
            for ((t, p), &o) in all.zip(owners.iter().cycle()) {
                if let Some(sub) = members.get_mut(&format!("m{o}")) {
                    sub.owned.entry(t).or_default().push(p);
                }
            }
            let first = check_round(&members, &parts);
            apply(&mut members, &first, 4);
            let second = check_round(&members, &parts);
            prop_assert!(second.withheld.is_empty(), "still withheld: {:?}", second.withheld);
        }

        /// From any ownership, through members joining and leaving, every round keeps the
        /// promises, and once membership is steady the group settles within two rounds.
        #[test]
        fn rounds_keep_every_promise_and_settle(
            counts in vec(0i32..7, 1..4),
            uniform in any::<bool>(),
            start in vec((0u8..16, vec((0usize..4, -1i32..8), 0..10), -1i32..4), 0..6),
            events in vec((0u8..3, 0usize..8, 0u8..16), 0..6),
        ) {
            let names: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
            let parts: BTreeMap<String, i32> =
                counts.iter().enumerate().map(|(i, &n)| (names[i].clone(), n)).collect();
            let topics_of = |mask: u8| -> Vec<String> {
                if uniform {
                    parts.keys().cloned().collect()
                } else {
                    (0..4).filter(|i| mask & (1 << i) != 0).map(|i| names[i].clone()).collect()
                }
            };
            let mut members: BTreeMap<String, Subscription> = BTreeMap::new();
            for (i, (mask, claims, generation)) in start.iter().enumerate() {
                let mut owned = Assignment::new();
                for &(t, p) in claims {
                    owned.entry(names[t].clone()).or_default().push(p);
                }
                let sub = Subscription { topics: topics_of(*mask), owned, generation: *generation };
                members.insert(format!("m{i}"), sub);
            }
            let mut generation = 4;
            let mut joined = members.len();
            for &(kind, pick, mask) in &events {
                let plan = check_round(&members, &parts);
                apply(&mut members, &plan, generation);
                generation += 1;
                match kind {
                    0 => {
                        let sub = Subscription { topics: topics_of(mask), ..Subscription::default() };
                        members.insert(format!("m{joined}"), sub);
                        joined += 1;
                    }
                    1 => {
                        let leaving = members.keys().nth(pick % members.len().max(1)).cloned();
                        if let Some(id) = leaving {
                            members.remove(&id);
                        }
                    }
                    _ => {}
                }
            }
            // Membership is steady: the first round may withhold, the second must not.
            let first = check_round(&members, &parts);
            apply(&mut members, &first, generation);
            let second = check_round(&members, &parts);
            prop_assert!(second.withheld.is_empty(), "still withheld: {:?}", second.withheld);
            for (id, sub) in &members {
                prop_assert!(claimed(sub).is_subset(&given(&second, id)), "{id} revokes");
            }
            apply(&mut members, &second, generation + 1);
            let third = check_round(&members, &parts);
            prop_assert_eq!(third.given, second.given);
        }
    }
}
