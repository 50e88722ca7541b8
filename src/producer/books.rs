//! The writer's books: per topic and partition, the records waiting for a batch (the
//! queue), the batches sealed from them (the lane), and the bytes each holds, which the
//! balancer (load per partition) and the buffer bound (`buffer_bytes`) read. Bookkeeping
//! only; the writer does the I/O.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use crate::client;

use super::delivery::{DeliveryError, Envelope};
use super::lane::{Lane, Stamp};

/// Room a batch must leave in a request beside its records: its 61-byte v2 header and its
/// topic and partition entry.
pub(super) const BATCH_ROOM: usize = 100;

/// A sealed batch's contents, kept until the broker has them.
pub(super) struct Body {
    pub(super) records: Vec<Envelope>,
    /// Record bytes (`Envelope::size` summed), for the buffer and the balancer.
    pub(super) bytes: u64,
    pub(super) encoded: Bytes,
    /// What `encoded` carries; the lane's stamp differs after a renumbering.
    pub(super) stamp: Stamp,
}

/// One partition: records not yet in a batch, and the lane of sealed ones.
pub(super) struct Part {
    pub(super) queue: VecDeque<Envelope>,
    pub(super) queued_bytes: u64,
    pub(super) lane: Lane<Body>,
    /// Bytes in the lane's batches.
    pub(super) sealed_bytes: u64,
    /// Nothing new is sent before this (a leader or connection on its way, a backoff).
    pub(super) retry_at: Option<Instant>,
    pub(super) backoff: client::Backoff,
    /// When the batches that failed last may go again: batches failing together (a broken
    /// connection answers all five at once) share one step of the backoff.
    pub(super) resend_at: Option<Instant>,
    pub(super) last_error: Option<Arc<client::Error>>,
}

impl Part {
    /// Take the records of the next batch from the queue: up to `batch_bytes` (at least
    /// one), leaving [`BATCH_ROOM`] of `budget` (the request's room) for what the batch
    /// needs beside its records. `None` when not even one record fits.
    pub(super) fn cut(
        &mut self,
        batch_bytes: usize,
        budget: usize,
    ) -> Option<(Vec<Envelope>, u64)> {
        let mut count = 0;
        let mut bytes = 0usize;
        for env in &self.queue {
            let next = bytes + env.size;
            if (count > 0 && next > batch_bytes) || next + BATCH_ROOM > budget {
                break;
            }
            bytes = next;
            count += 1;
        }
        if count == 0 {
            return None;
        }
        self.queued_bytes -= bytes as u64;
        Some((self.queue.drain(..count).collect(), bytes as u64))
    }

    /// When batches that failed now may go again: those failing together share one step.
    pub(super) fn resend_time(&mut self, now: Instant) -> Instant {
        match self.resend_at {
            Some(at) if at > now => at,
            _ => {
                let at = now + self.backoff.next_delay();
                self.resend_at = Some(at);
                at
            }
        }
    }
}

pub(super) struct TopicState {
    pub(super) id: Uuid,
    pub(super) parts: Vec<Part>,
    /// Bytes queued or in flight per partition, for the balancer.
    pub(super) load: Vec<u64>,
}

impl TopicState {
    /// The topic has `n` partitions now, more than before (partitions were added): the new
    /// ones start empty, each with a part from `part`. Keyed records are hashed over all `n`
    /// from now on. Fewer is ignored: a topic never loses partitions, only a topic created
    /// again under the same name has fewer (another id, another state).
    pub(super) fn grow(&mut self, n: usize, mut part: impl FnMut() -> Part) -> bool {
        if n <= self.parts.len() {
            return false;
        }
        while self.parts.len() < n {
            self.parts.push(part());
            self.load.push(0);
        }
        true
    }

    /// Every record held, queued or in a batch (in flight too): the topic they were bound
    /// for is gone, and so is this state.
    pub(super) fn into_records(self) -> Vec<Envelope> {
        let mut records = Vec::new();
        for mut p in self.parts {
            records.extend(p.queue);
            for b in p.lane.take_all() {
                records.extend(b.body.records);
            }
        }
        records
    }

    /// Queue a record on partition `p`.
    pub(super) fn push(&mut self, p: usize, env: Envelope) {
        self.load[p] += env.size as u64;
        let part = &mut self.parts[p];
        part.queued_bytes += env.size as u64;
        part.queue.push_back(env);
    }
}

pub(super) enum Topic {
    Ready(TopicState),
    /// Metadata could not be loaded yet (say, the broker is down): records wait here.
    Unresolved {
        held: VecDeque<Envelope>,
        retry_at: Instant,
        backoff: client::Backoff,
        last_error: Option<Arc<client::Error>>,
    },
}

/// The topics records were sent to, looked up once per record. Records mostly come in runs
/// for one topic, so the last one found is compared first, before any hashing.
#[derive(Default)]
pub(super) struct Topics {
    pub(super) entries: Vec<(Arc<str>, Topic)>,
    pub(super) index: FxHashMap<Arc<str>, usize>,
    pub(super) last: usize,
}

impl Topics {
    pub(super) fn position(&mut self, name: &str) -> Option<usize> {
        if let Some((last, _)) = self.entries.get(self.last) {
            if **last == *name {
                return Some(self.last);
            }
        }
        let i = *self.index.get(name)?;
        self.last = i;
        Some(i)
    }

    pub(super) fn get(&self, name: &str) -> Option<&Topic> {
        self.index.get(name).map(|i| &self.entries[*i].1)
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Topic> {
        self.position(name).map(|i| &mut self.entries[i].1)
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Add or replace; returns what was replaced.
    pub(super) fn insert(&mut self, name: Arc<str>, topic: Topic) -> Option<Topic> {
        match self.index.get(&name) {
            Some(i) => Some(std::mem::replace(&mut self.entries[*i].1, topic)),
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, topic));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<Topic> {
        let i = self.index.remove(name)?;
        let (_, topic) = self.entries.swap_remove(i);
        if let Some((moved, _)) = self.entries.get(i) {
            self.index.insert(moved.clone(), i);
        }
        self.last = 0;
        Some(topic)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Topic)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Topic> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Topic> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Take out the records whose delivery timeout has passed at `now`: queued ones,
    /// held ones, and those of sealed batches waiting for a retry (a batch in flight is
    /// bounded by the request timeout and ends first). Each comes with the last error its
    /// partition (or topic) saw, else `fallback`.
    pub(super) fn expired(
        &mut self,
        now: Instant,
        timeout: Duration,
        fallback: Option<Arc<client::Error>>,
    ) -> Vec<(Envelope, Option<Arc<client::Error>>)> {
        let mut expired = Vec::new();
        for t in self.values_mut() {
            match t {
                Topic::Ready(state) => {
                    for (i, part) in state.parts.iter_mut().enumerate() {
                        while part
                            .queue
                            .front()
                            .is_some_and(|e| e.enqueued + timeout <= now)
                        {
                            let env = part.queue.pop_front().expect("checked");
                            part.queued_bytes -= env.size as u64;
                            state.load[i] -= env.size as u64;
                            expired.push((env, part.last_error.clone().or(fallback.clone())));
                        }
                        let late: Vec<u64> = part
                            .lane
                            .batches()
                            .filter(|b| {
                                !b.in_flight() && b.body.records[0].enqueued + timeout <= now
                            })
                            .map(|b| b.id)
                            .collect();
                        for id in late {
                            let Some(b) = part.lane.give_up(id) else {
                                continue;
                            };
                            part.sealed_bytes -= b.body.bytes;
                            state.load[i] -= b.body.bytes;
                            let last = part.last_error.clone();
                            expired.extend(b.body.records.into_iter().map(|e| (e, last.clone())));
                        }
                    }
                }
                Topic::Unresolved {
                    held, last_error, ..
                } => {
                    while held.front().is_some_and(|e| e.enqueued + timeout <= now) {
                        expired.push((held.pop_front().expect("checked"), last_error.clone()));
                    }
                }
            }
        }
        expired
    }

    /// Take out every record not in flight: queued, held, and in batches waiting for a
    /// retry (the producer stops; what is in flight still gets its answer).
    pub(super) fn unsent(&mut self) -> Vec<Envelope> {
        let mut left = Vec::new();
        for t in self.values_mut() {
            match t {
                Topic::Ready(state) => {
                    for (i, part) in state.parts.iter_mut().enumerate() {
                        left.extend(part.queue.drain(..));
                        state.load[i] -= part.queued_bytes;
                        part.queued_bytes = 0;
                        let waiting: Vec<u64> = part
                            .lane
                            .batches()
                            .filter(|b| !b.in_flight())
                            .map(|b| b.id)
                            .collect();
                        for id in waiting {
                            if let Some(b) = part.lane.give_up(id) {
                                part.sealed_bytes -= b.body.bytes;
                                state.load[i] -= b.body.bytes;
                                left.extend(b.body.records);
                            }
                        }
                    }
                }
                Topic::Unresolved { held, .. } => left.extend(held.drain(..)),
            }
        }
        left
    }

    /// Empty the books at the close deadline: every record with what became of it (never
    /// sent; sent and not answered; waiting for a retry past `timeout`).
    pub(super) fn abandon(&mut self, timeout: Duration) -> Vec<(Envelope, DeliveryError)> {
        let mut left = Vec::new();
        for (_, t) in self.drain() {
            match t {
                Topic::Ready(state) => {
                    for mut p in state.parts {
                        left.extend(
                            p.queue
                                .into_iter()
                                .map(|e| (e, DeliveryError::NotAttempted)),
                        );
                        for b in p.lane.take_all() {
                            let err = if b.in_flight() {
                                DeliveryError::Unacknowledged
                            } else {
                                DeliveryError::TimedOut {
                                    after: timeout,
                                    last_error: p.last_error.clone(),
                                }
                            };
                            left.extend(b.body.records.into_iter().map(|e| (e, err.clone())));
                        }
                    }
                }
                Topic::Unresolved { held, .. } => {
                    left.extend(held.into_iter().map(|e| (e, DeliveryError::NotAttempted)))
                }
            }
        }
        left
    }

    fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, Topic)> + '_ {
        self.index.clear();
        self.last = 0;
        self.entries.drain(..)
    }
}

pub(super) fn new_part(backoff: client::Backoff, lane: Lane<Body>) -> Part {
    Part {
        queue: VecDeque::new(),
        queued_bytes: 0,
        lane,
        sealed_bytes: 0,
        retry_at: None,
        backoff,
        resend_at: None,
        last_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(n: usize) -> Topic {
        Topic::Unresolved {
            held: VecDeque::with_capacity(n),
            retry_at: Instant::now(),
            backoff: client::Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            last_error: None,
        }
    }

    fn capacity<T: std::ops::Deref<Target = Topic>>(t: Option<T>) -> Option<usize> {
        match t.as_deref() {
            Some(Topic::Unresolved { held, .. }) => Some(held.capacity()),
            _ => None,
        }
    }

    #[test]
    fn topics_find_by_name_after_removals_and_through_the_last_hit() {
        let mut t = Topics::default();
        for (name, n) in [("a", 10), ("b", 20), ("c", 30)] {
            assert!(t.insert(name.into(), held(n)).is_none());
        }
        // A fresh allocation with the same name finds the entry: names, not pointers, count.
        let b: Arc<str> = "b".into();
        assert!(capacity(t.get_mut(&b)).unwrap() >= 20);
        assert!(capacity(t.get_mut("b")).unwrap() >= 20, "the last hit");
        assert!(t.get_mut("bb").is_none() && t.get_mut("").is_none());
        // Removing the first moves the last into its place; every name still finds its own.
        assert!(capacity(t.remove("a").as_ref()).unwrap() >= 10);
        assert!(t.remove("a").is_none());
        assert!(!t.contains_key("a") && t.get_mut("a").is_none());
        assert!(capacity(t.get_mut("c")).unwrap() >= 30);
        assert!(capacity(t.get("b")).unwrap() >= 20);
        assert!(capacity(t.get_mut("b")).unwrap() >= 20);
        // Replacing keeps one entry.
        assert!(t.insert("c".into(), held(40)).is_some());
        assert_eq!(t.keys().count(), 2);
        assert!(capacity(t.get_mut("c")).unwrap() >= 40);
        assert_eq!(t.drain().count(), 2);
        assert!(t.get_mut("b").is_none() && t.values().count() == 0);
    }

    fn env(size: usize, enqueued: Instant) -> Envelope {
        Envelope {
            record: super::super::delivery::ProducerRecord::new(vec![0u8; size]),
            enqueued,
            report: super::super::delivery::Report::None,
            size,
        }
    }

    /// One topic of two partitions: partition 0 with three queued records, partition 1
    /// with one sealed batch of two and one queued record.
    fn books(old: Instant, new: Instant) -> Topics {
        let backoff = client::Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let mut state = TopicState {
            id: Uuid::nil(),
            parts: (0..2)
                .map(|_| new_part(backoff.clone(), Lane::new(None, 1)))
                .collect(),
            load: vec![0; 2],
        };
        state.push(0, env(10, old));
        state.push(0, env(20, old));
        state.push(0, env(30, new));
        state.push(1, env(5, old));
        state.push(1, env(6, old));
        state.push(1, env(7, new));
        let part = &mut state.parts[1];
        let (taken, bytes) = part.cut(11, 1 << 20).unwrap();
        assert_eq!((taken.len(), bytes), (2, 11), "up to batch_bytes");
        part.sealed_bytes += bytes;
        let body = Body {
            records: taken,
            bytes,
            encoded: Bytes::new(),
            stamp: part.lane.next_stamp(),
        };
        part.lane.seal(2, body);
        let mut topics = Topics::default();
        topics.insert("t".into(), Topic::Ready(state));
        topics
    }

    fn counts(topics: &Topics) -> Vec<(u64, u64, u64)> {
        let Some(Topic::Ready(s)) = topics.get("t") else {
            panic!("no topic")
        };
        (0..2)
            .map(|i| (s.parts[i].queued_bytes, s.parts[i].sealed_bytes, s.load[i]))
            .collect()
    }

    #[test]
    fn a_cut_takes_whole_records_within_the_batch_size_and_the_request_room() {
        let now = Instant::now();
        let mut t = books(now, now);
        let Some(Topic::Ready(s)) = t.get_mut("t") else {
            panic!()
        };
        let part = &mut s.parts[0];
        // At least one record, even over batch_bytes; none when the request has no room.
        assert!(part.cut(1, 10 + BATCH_ROOM - 1).is_none());
        let (one, bytes) = part.cut(1, 1 << 20).unwrap();
        assert_eq!((one.len(), bytes, part.queued_bytes), (1, 10, 50));
    }

    #[test]
    fn expiry_takes_what_is_too_old_and_keeps_the_counts() {
        let now = Instant::now();
        let old = now - Duration::from_secs(10);
        let mut t = books(old, now);
        assert_eq!(counts(&t), [(60, 0, 60), (7, 11, 18)]);
        let expired = t.expired(now, Duration::from_secs(5), None);
        let sizes: Vec<usize> = expired.iter().map(|(e, _)| e.size).collect();
        assert_eq!(
            sizes,
            [10, 20, 5, 6],
            "queued and sealed, oldest first per partition"
        );
        assert_eq!(counts(&t), [(30, 0, 30), (7, 0, 7)]);
        assert!(t.expired(now, Duration::from_secs(5), None).is_empty());
    }

    #[test]
    fn stopping_takes_every_record_not_in_flight() {
        let now = Instant::now();
        let mut t = books(now, now);
        let left = t.unsent();
        assert_eq!(left.len(), 6);
        assert_eq!(counts(&t), [(0, 0, 0), (0, 0, 0)]);
        let mut t = books(now, now);
        let abandoned = t.abandon(Duration::from_secs(1));
        let not_attempted = abandoned
            .iter()
            .filter(|(_, e)| matches!(e, DeliveryError::NotAttempted))
            .count();
        let timed_out = abandoned
            .iter()
            .filter(|(_, e)| matches!(e, DeliveryError::TimedOut { .. }))
            .count();
        assert_eq!(
            (not_attempted, timed_out),
            (4, 2),
            "the sealed batch was never sent"
        );
        assert!(t.get("t").is_none());
    }

    #[test]
    fn added_partitions_start_empty_and_a_topic_never_shrinks() {
        let now = Instant::now();
        let mut t = books(now, now);
        let Some(Topic::Ready(s)) = t.get_mut("t") else {
            panic!()
        };
        let backoff = client::Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let part = || new_part(backoff.clone(), Lane::new(None, 1));
        assert!(!s.grow(2, part) && !s.grow(1, part), "not more");
        assert!(s.grow(4, part));
        assert_eq!((s.parts.len(), s.load.len()), (4, 4));
        assert_eq!(
            counts(&t)[..],
            [(60, 0, 60), (7, 11, 18)],
            "the old ones unchanged"
        );
    }

    #[test]
    fn a_topic_gone_gives_back_every_record_in_flight_or_not() {
        let now = Instant::now();
        let mut t = books(now, now);
        let Some(Topic::Ready(s)) = t.get_mut("t") else {
            panic!()
        };
        let lane = &mut s.parts[1].lane;
        lane.sent(0, 1);
        assert_eq!(lane.in_flight(), 1);
        let Some(Topic::Ready(s)) = t.remove("t") else {
            panic!()
        };
        let sizes: Vec<usize> = s.into_records().iter().map(|e| e.size).collect();
        assert_eq!(sizes, [10, 20, 30, 7, 5, 6], "queued, then batched");
    }
}
