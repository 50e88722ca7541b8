//! The writer's books: per topic and partition, the records waiting for a batch (the
//! queue), the batches sealed from them (the lane), and the bytes each holds, which the
//! balancer (load per partition) and the buffer bound (`buffer_bytes`) read. Bookkeeping
//! only; the writer does the I/O.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use crate::client;

use super::delivery::Envelope;
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

    pub(super) fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, Topic)> + '_ {
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
    use std::time::Duration;

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
}
