//! A share member's books: the records it acquired, and where each one's acknowledgement
//! stands. Not one position per partition, as a consumer group member keeps, but one lease
//! per record, from its acquisition until the broker took its acknowledgement.
//!
//! ```text
//!  acquired ─▶ Buffered ─poll─▶ Handed ─acknowledge─▶ Queued(kind) ─sent─▶ Sent(kind) ─answer─▶ gone
//!                                  ▲                                        │ Renew: the lock
//!                                  └────────────────────────────────────────┘ starts again
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::client::AckKind;

/// Acknowledgements taken to send, by partition: its topic id, and each offset's kind.
pub(super) type Taken = BTreeMap<(Arc<str>, i32), (Uuid, Vec<(i64, AckKind)>)>;

/// Where one acquired record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Acquired, not handed out yet.
    Buffered,
    /// Handed out, not acknowledged yet.
    Handed,
    /// Acknowledged, waiting to be sent.
    Queued(AckKind),
    /// Sent; the answer will settle it.
    Sent(AckKind),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    /// When the broker's acquisition lock runs out.
    pub(super) deadline: Instant,
    pub(super) state: State,
}

/// One partition's leases.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) id: Uuid,
    pub(super) leases: BTreeMap<i64, Lease>,
}

/// Why an acknowledgement was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The record is not one this member holds (never handed out, or settled already).
    NotHeld,
    /// Its acknowledgement was sent already.
    Sent(AckKind),
}

/// Every partition's leases, by topic then partition (looked up by `&str`, no allocation).
#[derive(Debug, Default)]
pub(super) struct Books {
    parts: HashMap<Arc<str>, HashMap<i32, Part>>,
}

impl Books {
    fn part(&mut self, topic: &Arc<str>, partition: i32, id: Uuid) -> &mut Part {
        self.parts
            .entry(topic.clone())
            .or_default()
            .entry(partition)
            .or_insert_with(|| Part {
                id,
                leases: BTreeMap::new(),
            })
    }

    fn lease(&mut self, topic: &str, partition: i32, offset: i64) -> Option<&mut Lease> {
        self.parts
            .get_mut(topic)?
            .get_mut(&partition)?
            .leases
            .get_mut(&offset)
    }

    /// A record acquired (or, `gap`, an acquired offset without one: acknowledged as a gap
    /// at once).
    pub(super) fn acquired(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        id: Uuid,
        offset: i64,
        deadline: Instant,
        gap: bool,
    ) {
        let state = if gap {
            State::Queued(AckKind::Gap)
        } else {
            State::Buffered
        };
        self.part(topic, partition, id)
            .leases
            .insert(offset, Lease { deadline, state });
    }

    /// A buffered record handed out.
    pub(super) fn handed(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(l) = self.lease(topic, partition, offset) {
            if l.state == State::Buffered {
                l.state = State::Handed;
            }
        }
    }

    /// Acknowledge a record handed out: queued for the next request to its leader. A kind
    /// given before the last one was sent replaces it; a record whose renewal is on its way
    /// may be acknowledged (the renewal then changes nothing).
    pub(super) fn acknowledge(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        kind: AckKind,
    ) -> Result<(), Refusal> {
        let Some(l) = self.lease(topic, partition, offset) else {
            return Err(Refusal::NotHeld);
        };
        match l.state {
            State::Buffered => Err(Refusal::NotHeld),
            State::Sent(k) if k != AckKind::Renew => Err(Refusal::Sent(k)),
            _ => {
                l.state = State::Queued(kind);
                Ok(())
            }
        }
    }

    /// Every record handed out and not acknowledged: acknowledged as `kind` (implicit
    /// acceptance at the next poll, release on close). Also `Buffered` ones when `buffered`.
    pub(super) fn acknowledge_all(&mut self, kind: AckKind, buffered: bool) -> usize {
        let mut n = 0;
        for leases in self.parts.values_mut().flat_map(|ps| ps.values_mut()) {
            for l in leases.leases.values_mut() {
                if l.state == State::Handed || (buffered && l.state == State::Buffered) {
                    l.state = State::Queued(kind);
                    n += 1;
                }
            }
        }
        n
    }

    /// When the first lock of a record handed out and not acknowledged runs out.
    pub(super) fn first_deadline(&self) -> Option<Instant> {
        self.parts
            .values()
            .flat_map(|ps| ps.values())
            .flat_map(|p| p.leases.values())
            .filter(|l| l.state == State::Handed)
            .map(|l| l.deadline)
            .min()
    }

    /// The partitions with acknowledgements waiting to be sent.
    pub(super) fn partitions(&self) -> Vec<(Arc<str>, i32)> {
        let mut out = Vec::new();
        for (topic, ps) in &self.parts {
            for (&partition, part) in ps {
                if part
                    .leases
                    .values()
                    .any(|l| matches!(l.state, State::Queued(_)))
                {
                    out.push((topic.clone(), partition));
                }
            }
        }
        out
    }

    /// Whether any acknowledgement waits to be sent.
    pub(super) fn has_queued(&self) -> bool {
        self.parts
            .values()
            .flat_map(|ps| ps.values())
            .flat_map(|p| p.leases.values())
            .any(|l| matches!(l.state, State::Queued(_)))
    }

    /// Take the queued acknowledgements of the partitions `pick` chooses (they become
    /// `Sent`), by partition.
    pub(super) fn take_queued(&mut self, mut pick: impl FnMut(&Arc<str>, i32) -> bool) -> Taken {
        let mut out = BTreeMap::new();
        for (topic, ps) in &mut self.parts {
            for (&partition, part) in ps.iter_mut() {
                let mut acks = Vec::new();
                for (&offset, l) in part.leases.iter_mut() {
                    if let State::Queued(kind) = l.state {
                        acks.push((offset, kind));
                    }
                }
                if acks.is_empty() || !pick(topic, partition) {
                    continue;
                }
                for (offset, kind) in &acks {
                    if let Some(l) = part.leases.get_mut(offset) {
                        l.state = State::Sent(*kind);
                    }
                }
                out.insert((topic.clone(), partition), (part.id, acks));
            }
        }
        out
    }

    /// The broker answered acknowledgements sent: taken (`ok`), or not. Either way they are
    /// settled (a refused one comes back to some member when its lock runs out), except a
    /// renewal, whose record is handed out again with its lock started anew (`renewed_to`)
    /// or, refused, as it was. Returns the acknowledgements the answer settled (those
    /// given again since a renewal was sent stay queued).
    pub(super) fn settle(
        &mut self,
        topic: &str,
        partition: i32,
        acks: &[(i64, AckKind)],
        ok: bool,
        renewed_to: Instant,
    ) -> Vec<(i64, AckKind)> {
        let Some(part) = self
            .parts
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(&partition))
        else {
            return Vec::new();
        };
        let mut settled = Vec::with_capacity(acks.len());
        for &(offset, kind) in acks {
            let Some(l) = part.leases.get_mut(&offset) else {
                continue;
            };
            if l.state != State::Sent(kind) {
                continue; // acknowledged again since (after a renewal): still to send
            }
            settled.push((offset, kind));
            if kind == AckKind::Renew {
                l.state = State::Handed;
                if ok {
                    l.deadline = renewed_to;
                }
            } else {
                part.leases.remove(&offset);
            }
        }
        settled
    }

    /// Drop partitions that hold nothing.
    pub(super) fn tidy(&mut self) {
        for ps in self.parts.values_mut() {
            ps.retain(|_, p| !p.leases.is_empty());
        }
        self.parts.retain(|_, ps| !ps.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn books() -> (Books, Arc<str>, Instant) {
        let mut b = Books::default();
        let t: Arc<str> = "t".into();
        let lock = Instant::now() + Duration::from_secs(30);
        for offset in 0..4 {
            b.acquired(&t, 0, Uuid::nil(), offset, lock, offset == 3);
        }
        (b, t, lock)
    }

    #[test]
    fn a_record_is_acknowledged_once_it_was_handed_out_and_settled_by_the_answer() {
        let (mut b, t, lock) = books();
        assert_eq!(
            b.acknowledge("t", 0, 0, AckKind::Accept),
            Err(Refusal::NotHeld)
        );
        b.handed("t", 0, 0);
        b.handed("t", 0, 1);
        b.acknowledge("t", 0, 0, AckKind::Accept).unwrap();
        b.acknowledge("t", 0, 0, AckKind::Release).unwrap(); // changed before it was sent
        let sent = b.take_queued(|_, _| true);
        let acks = &sent[&(t.clone(), 0)].1;
        assert_eq!(acks, &[(0, AckKind::Release), (3, AckKind::Gap)]);
        assert_eq!(
            b.acknowledge("t", 0, 0, AckKind::Accept),
            Err(Refusal::Sent(AckKind::Release))
        );
        assert!(!b.has_queued());
        assert_eq!(b.settle("t", 0, acks, true, lock).len(), 2);
        assert_eq!(b.acknowledge_all(AckKind::Accept, false), 1);
        assert_eq!(b.acknowledge_all(AckKind::Release, true), 1);
        let sent = b.take_queued(|_, _| true);
        assert_eq!(
            sent[&(t, 0)].1,
            [(1, AckKind::Accept), (2, AckKind::Release)]
        );
    }

    #[test]
    fn a_renewal_hands_the_record_out_again_with_a_new_lock() {
        let (mut b, t, lock) = books();
        b.handed("t", 0, 1);
        assert_eq!(b.first_deadline(), Some(lock));
        b.acknowledge("t", 0, 1, AckKind::Renew).unwrap();
        let sent = b.take_queued(|_, _| true);
        let later = lock + Duration::from_secs(30);
        b.settle("t", 0, &sent[&(t.clone(), 0)].1, true, later);
        assert_eq!(b.first_deadline(), Some(later), "renewed");
        // Acknowledged while a renewal is on its way: the renewal's answer leaves it queued.
        b.acknowledge("t", 0, 1, AckKind::Renew).unwrap();
        let sent = b.take_queued(|_, _| true);
        b.acknowledge("t", 0, 1, AckKind::Accept).unwrap();
        assert!(b.settle("t", 0, &sent[&(t, 0)].1, true, later).is_empty());
        assert!(b.has_queued());
    }

    #[test]
    fn only_the_partitions_picked_are_taken() {
        let (mut b, t, lock) = books();
        b.acquired(&t, 1, Uuid::nil(), 9, lock, true);
        let sent = b.take_queued(|_, p| p == 1);
        assert_eq!(sent.len(), 1);
        assert!(b.has_queued(), "partition 0's gap waits");
        assert_eq!(b.partitions(), [(t, 0)]);
    }
}
