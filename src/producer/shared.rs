//! State the producer's handles share with the writer thread: counters, the gate every send
//! passes, the room senders wait in when the channel is full, and the clock they stamp by.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};

use crate::client;
use crate::stats::{Counter, Histogram};
use crate::sync::Locked;

use super::msg::Msg;
use super::stats::ProducerIdentity;

/// State shared by the handles and the writer.
pub(crate) struct Shared {
    /// What every send touches, apart from what the writer updates.
    pub(crate) gate: Gate,
    /// Senders waiting for room in a full channel.
    pub(crate) room: Room,
    pub(crate) clock: Clock,
    /// Records the writer took from the channel (it alone counts them: a send pays for no
    /// counter of its own).
    pub(crate) accepted: AtomicU64,
    pub(crate) close_deadline: Mutex<Option<Instant>>,
    pub(crate) delivered: Counter,
    pub(crate) failed: Counter,
    pub(crate) bytes_delivered: Counter,
    pub(crate) batches: Counter,
    pub(crate) batch_records: Counter,
    pub(crate) batch_bytes: Counter,
    pub(crate) in_flight: Counter,
    pub(crate) retries: Counter,
    pub(crate) throttled_ms: Counter,
    /// Producer id and epoch, -1 without idempotence.
    pub(crate) producer_id: AtomicI64,
    pub(crate) producer_epoch: AtomicI64,
    pub(crate) epoch_bumps: Counter,
    /// A transaction is open (records may be sent); only a transactional producer sets it.
    pub(crate) txn_open: AtomicBool,
    pub(crate) txn_committed: Counter,
    pub(crate) txn_aborted: Counter,
    pub(crate) fatal: Mutex<Option<Arc<client::Error>>>,
    /// The message of the panic that stopped the writer thread, if one did.
    pub(crate) panicked: Mutex<Option<String>>,
    /// Delivery callbacks (and `on_delivery` calls) that panicked.
    pub(crate) callback_panics: Counter,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
    pub(crate) latency: Histogram,
}

/// The two atomics every send touches, on a cache line of their own: the writer updates
/// its counters many times a batch, and sharing a line with them would make each send wait
/// for that line.
#[repr(align(128))]
pub(crate) struct Gate {
    /// Senders between their closing check and their enqueue (see `Producer::enqueue`).
    pub(crate) sending: AtomicUsize,
    pub(crate) closing: AtomicBool,
}

/// Where senders wait for room in a full channel. Waiting inside the channel would have the
/// writer wake one sender per record it takes (a futex call each, and a context switch on
/// two cores), while the channel stays full; here the writer wakes them all at once, when
/// the channel is half empty, and a send that finds room pays one atomic load for it.
#[derive(Default)]
pub(crate) struct Room {
    waiting: AtomicUsize,
    lock: Mutex<()>,
    freed: std::sync::Condvar,
}

impl Room {
    /// Longest wait between two tries: bounds what a missed wake-up could cost.
    const RETRY: Duration = Duration::from_millis(10);

    /// Send `msg`, waiting until `deadline` (none: for as long as it takes) for room; hands
    /// it back on timeout (`false`) or when the writer is gone (`true`). The message comes
    /// back by value, as from the channel's own `try_send`: boxing it would cost an
    /// allocation where none is needed.
    #[allow(clippy::result_large_err)]
    pub(super) fn send(
        &self,
        tx: &Sender<Msg>,
        mut msg: Msg,
        deadline: Option<Instant>,
    ) -> Result<(), (Msg, bool)> {
        // Counted before the first try, and each try is made under the lock the writer
        // takes to wake us: a writer that made room after a try finds us counted and
        // waiting.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let sent = loop {
            let guard = self.lock.locked();
            msg = match tx.try_send(msg) {
                Ok(()) => break Ok(()),
                Err(TrySendError::Disconnected(m)) => break Err((m, true)),
                Err(TrySendError::Full(m)) => m,
            };
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(Self::RETRY),
                    _ => break Err((msg, false)),
                },
                None => Self::RETRY,
            };
            drop(self.freed.wait_timeout(guard, wait));
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        sent
    }

    /// The writer took records: wake every waiting sender if the channel is at most half
    /// full (`len`, `capacity`).
    pub(crate) fn taken(&self, len: usize, capacity: usize) {
        if len <= capacity / 2 {
            self.wake_all();
        }
    }

    /// Wake every waiting sender (also when the producer is closing).
    pub(crate) fn wake_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.locked();
            self.freed.notify_all();
        }
    }
}

/// Wall-clock milliseconds from a monotonic clock read. A send needs both an `Instant`
/// (linger, delivery timeout, latency) and a wall-clock timestamp; this derives the second
/// from the first, saving a system clock read per record. The writer re-reads the wall
/// clock once a second ([`Clock::resync`]), so a stepped system clock shows within a second.
pub(crate) struct Clock {
    origin: Instant,
    /// Wall-clock milliseconds at `origin`, as of the last resync.
    offset_ms: AtomicI64,
}

impl Clock {
    pub(super) fn new() -> Clock {
        let c = Clock {
            origin: Instant::now(),
            offset_ms: AtomicI64::new(0),
        };
        c.resync();
        c
    }

    /// Milliseconds since the Unix epoch at `now`.
    pub(crate) fn wall_ms(&self, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.origin).as_millis() as i64;
        self.offset_ms.load(Ordering::Relaxed) + since
    }

    /// Re-read the wall clock.
    pub(crate) fn resync(&self) {
        let since = self.origin.elapsed().as_millis() as i64;
        self.offset_ms.store(now_ms() - since, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn count_error(&self, kind: String) {
        *self.errors.locked().entry(kind).or_default() += 1;
    }

    pub(crate) fn set_producer(&self, who: Option<ProducerIdentity>) {
        let (id, epoch) = who.map_or((-1, -1), |w| (w.id, w.epoch as i64));
        self.producer_id.store(id, Ordering::Relaxed);
        self.producer_epoch.store(epoch, Ordering::Relaxed);
    }

    pub(crate) fn producer(&self) -> Option<ProducerIdentity> {
        let id = self.producer_id.load(Ordering::Relaxed);
        (id >= 0).then(|| ProducerIdentity {
            id,
            epoch: self.producer_epoch.load(Ordering::Relaxed) as i16,
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_derives_wall_time_from_instants() {
        let clock = Clock::new();
        let before = now_ms();
        let derived = clock.wall_ms(Instant::now());
        let after = now_ms();
        // Two truncations to whole milliseconds: at most 1 ms off either way.
        assert!(
            before - 1 <= derived && derived <= after + 1,
            "{before} {derived} {after}"
        );
        // Later instants give later (never earlier) times, at the instants' own spacing.
        let t = Instant::now();
        let (a, b) = (
            clock.wall_ms(t),
            clock.wall_ms(t + Duration::from_millis(1500)),
        );
        assert!((1499..=1501).contains(&(b - a)), "{a} {b}");
        // An instant before the clock's origin is not a panic.
        let early = clock.origin.checked_sub(Duration::from_secs(1));
        if let Some(early) = early {
            assert!(clock.wall_ms(early) <= a);
        }
        // A resync keeps the reading within the same bounds.
        clock.resync();
        let derived = clock.wall_ms(Instant::now());
        assert!((derived - now_ms()).abs() <= 1, "{derived}");
    }
}
