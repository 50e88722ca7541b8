//! The run's ledger: which events the brokers acknowledged and which the consumers saw, per
//! device, in memory that does not grow with the run.
//!
//! Each device's events are numbered 0, 1, 2… by the one generator thread that owns the
//! device. The ledger keeps, per device, a watermark below which every event is settled
//! (acknowledged and seen, or failed) and a window of two bits per event above it, so its
//! size follows the events in flight, not the events sent. Arrivals are classified as they
//! come:
//!
//! - seen for the first time: counted, and a **gap** when the device's event before it has
//!   not been seen (it is late, out of order, or lost);
//! - seen again (in the window, or below the watermark): a **duplicate**;
//! - acknowledged and never seen by the end: **missing** (kept as a running count, so the
//!   drain can wait for it to reach 0 without a scan).
//!
//! A window has room for a bounded number of events ([`WINDOW_SLOTS`] shared by the
//! devices). An event that would need more pushes the oldest out: those still unsettled are
//! counted in **outside_window** (their outcome can no longer be matched), except an event
//! acknowledged and not yet seen, which is remembered by number (a bounded set, also used for
//! failed events) so that seeing it later is neither a duplicate nor missing. Nothing is
//! dropped without being counted.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kpipe::stats::Histogram;

use super::event::Event;

/// Events the windows of all devices may cover together: 2 bits each, so 4 MiB.
pub const WINDOW_SLOTS: u64 = 1 << 24;
/// Events remembered by number after leaving a window unseen (failed, or pushed out while
/// acknowledged): about 48 bytes each.
pub const REMEMBERED: usize = 1 << 16;
/// `consume` mode: (run, device) pairs tracked at once; past that the oldest run is forgotten.
pub const OTHER_TRACKS: usize = 4096;
/// `consume` mode: the window of each (run, device) pair.
const OTHER_WINDOW_SLOTS: u64 = 1024;

const SLOTS_PER_WORD: u64 = 32;
const ACKED: u64 = 0b01;
const SEEN: u64 = 0b10;
const SETTLED: u64 = ACKED | SEEN;

/// What settles an event, by mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `run`: acknowledged and seen (or failed).
    Both,
    /// `produce`: acknowledged (or failed).
    Acked,
    /// `consume`: seen; events of any run, tracked per (run, device).
    Seen,
}

/// Counts of one run; all of them only grow, except `missing`.
#[derive(Debug, Default)]
struct Counts {
    consumed: AtomicU64,
    foreign: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    missing: AtomicU64,
    outside_window: AtomicU64,
}

/// A snapshot of the ledger's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records read, ours or not.
    pub consumed: u64,
    /// Records that were not this run's events (in `consume` mode: not events at all).
    pub foreign: u64,
    /// Events seen more than once.
    pub duplicates: u64,
    /// Events seen before the event preceding them on their device (late, out of order, lost).
    pub gaps: u64,
    /// Events acknowledged and not seen (yet).
    pub missing: u64,
    /// Events whose outcome could not be matched for lack of room (see the module doc).
    pub outside_window: u64,
}

/// Two bits per event from `base` on, in 64-bit words; everything below `base` is settled.
#[derive(Debug)]
struct Window {
    base: u64,
    words: VecDeque<u64>,
    cap_words: usize,
}

/// Where an event stands relative to a window.
enum Place {
    Below,
    At(usize, u32),
}

impl Window {
    fn new(slots: u64) -> Self {
        Window {
            base: 0,
            words: VecDeque::new(),
            cap_words: slots.div_ceil(SLOTS_PER_WORD).max(1) as usize,
        }
    }

    /// The event's place, making room for it. Unsettled events that had to leave go to
    /// `pushed_out` with their bits; the number of events skipped over by a jump past words
    /// never written (events with no news at all) is returned beside the place.
    fn place(&mut self, seq: u64, pushed_out: &mut Vec<(u64, u64)>) -> (Place, u64) {
        if seq < self.base {
            return (Place::Below, 0);
        }
        let mut skipped = 0;
        let (word, _) = self.offset(seq);
        if word >= self.cap_words {
            let drop = word + 1 - self.cap_words;
            for _ in 0..drop.min(self.words.len()) {
                let w = self.words.pop_front().expect("counted");
                for i in 0..SLOTS_PER_WORD {
                    let bits = (w >> (2 * i)) & SETTLED;
                    if bits != SETTLED {
                        pushed_out.push((self.base + i, bits));
                    }
                }
                self.base += SLOTS_PER_WORD;
            }
            let target = (seq / SLOTS_PER_WORD + 1 - self.cap_words as u64) * SLOTS_PER_WORD;
            skipped = target.saturating_sub(self.base);
            self.base = self.base.max(target);
        }
        let (word, shift) = self.offset(seq);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        (Place::At(word, shift), skipped)
    }

    /// The word and bit shift of event `seq` (at or above the base).
    fn offset(&self, seq: u64) -> (usize, u32) {
        let i = seq - self.base;
        (
            (i / SLOTS_PER_WORD) as usize,
            (2 * (i % SLOTS_PER_WORD)) as u32,
        )
    }

    /// Whether the event was seen (or settled without being seen: failed, pushed out).
    fn seen_or_settled(&self, seq: u64) -> bool {
        if seq < self.base {
            return true;
        }
        let (word, shift) = self.offset(seq);
        self.words
            .get(word)
            .is_some_and(|w| (w >> shift) & SEEN != 0)
    }

    fn bits(&self, word: usize, shift: u32) -> u64 {
        (self.words[word] >> shift) & SETTLED
    }

    /// Set bits of an event, then move the base past every fully settled word.
    fn set(&mut self, word: usize, shift: u32, bits: u64) {
        self.words[word] |= bits << shift;
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += SLOTS_PER_WORD;
        }
    }
}

/// One device's (or, in `consume` mode, one run and device's) events.
#[derive(Debug)]
struct Track {
    window: Window,
    /// Events settled without being seen, by number: acknowledged (`true`, still missing)
    /// or failed (`false`). Seeing one later is not a duplicate.
    unseen: HashMap<u64, bool>,
}

impl Track {
    fn new(slots: u64) -> Self {
        Track {
            window: Window::new(slots),
            unseen: HashMap::new(),
        }
    }
}

/// Events of other runs, `consume` mode.
#[derive(Debug, Default)]
struct Others {
    tracks: HashMap<(u64, u32), Track>,
    /// Runs up to this one were forgotten to make room; their events count outside the window.
    forgotten_upto: Option<u64>,
}

impl Others {
    /// The track of `key`, made if new: room is made by forgetting the oldest run, and a
    /// run forgotten that way has none (`None`).
    fn track(&mut self, key: (u64, u32)) -> Option<&mut Track> {
        if !self.tracks.contains_key(&key) {
            if self.forgotten_upto.is_some_and(|r| key.0 <= r) {
                return None;
            }
            if self.tracks.len() >= OTHER_TRACKS {
                let oldest = self.tracks.keys().map(|k| k.0).min().expect("full");
                self.tracks.retain(|k, _| k.0 != oldest);
                self.forgotten_upto = Some(self.forgotten_upto.map_or(oldest, |r| r.max(oldest)));
            }
        }
        Some(
            self.tracks
                .entry(key)
                .or_insert_with(|| Track::new(OTHER_WINDOW_SLOTS)),
        )
    }
}

/// The shared accounting of one run.
#[derive(Debug)]
pub struct Ledger {
    run: u64,
    check: Check,
    devices: Vec<Mutex<Track>>,
    others: Mutex<Others>,
    counts: Counts,
    remembered: AtomicUsize,
    remember_cap: usize,
    latency: Histogram,
    /// Events sent before this (µs since the epoch) are left out of `latency` (--warmup).
    latency_from_us: u64,
}

impl Ledger {
    /// A ledger for run `run` of `devices` devices.
    pub fn new(run: u64, devices: u32, check: Check, latency_from_us: u64) -> Self {
        Self::with_room(
            run,
            devices,
            check,
            latency_from_us,
            WINDOW_SLOTS,
            REMEMBERED,
        )
    }

    /// As [`new`](Self::new), with windows of `window_slots` shared by the devices, and room
    /// to remember `remember` events by number (small values for tests).
    pub fn with_room(
        run: u64,
        devices: u32,
        check: Check,
        latency_from_us: u64,
        window_slots: u64,
        remember: usize,
    ) -> Self {
        let per_device = (window_slots / u64::from(devices.max(1))).max(SLOTS_PER_WORD);
        let tracked = if check == Check::Seen { 0 } else { devices };
        Ledger {
            run,
            check,
            devices: (0..tracked)
                .map(|_| Mutex::new(Track::new(per_device)))
                .collect(),
            others: Mutex::new(Others::default()),
            counts: Counts::default(),
            remembered: AtomicUsize::new(0),
            remember_cap: remember,
            latency: Histogram::default(),
            latency_from_us,
        }
    }

    /// The run's id, as written in its events.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The end-to-end latency of the events seen (send to consume).
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Tally {
            consumed: get(&c.consumed),
            foreign: get(&c.foreign),
            duplicates: get(&c.duplicates),
            gaps: get(&c.gaps),
            missing: get(&c.missing),
            outside_window: get(&c.outside_window),
        }
    }

    /// Events acknowledged and not seen yet (`run` mode; 0 otherwise).
    pub fn missing(&self) -> u64 {
        self.counts.missing.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn track(&self, device: u32) -> std::sync::MutexGuard<'_, Track> {
        self.devices[device as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Remember an event by number; false when there is no room left.
    fn remember(&self, track: &mut Track, seq: u64, acked: bool) -> bool {
        if self.remembered.fetch_add(1, Ordering::Relaxed) >= self.remember_cap {
            self.remembered.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        track.unseen.insert(seq, acked);
        true
    }

    /// Place `seq` in `track`'s window, accounting the unsettled events it pushed out.
    fn place(&self, track: &mut Track, seq: u64) -> Place {
        let mut out = Vec::new();
        let (place, skipped) = track.window.place(seq, &mut out);
        // Holes among the events seen (`consume` mode) are not counted: the sighting after
        // a hole counted the gap already.
        if self.check == Check::Seen {
            return place;
        }
        let mut lost = skipped;
        for (seq, bits) in out {
            // Acknowledged and not seen yet: remembered, so that a late sighting is told
            // from a duplicate and takes it off the missing count.
            let kept =
                self.check == Check::Both && bits == ACKED && self.remember(track, seq, true);
            if !kept {
                lost += 1;
            }
        }
        Self::add(&self.counts.outside_window, lost);
        place
    }

    /// The broker acknowledged event `seq` of `device`.
    pub fn acked(&self, device: u32, seq: u64) {
        self.acked_range(device, seq..seq + 1);
    }

    /// The events `seqs` of `device` are acknowledged (a transaction of them committed).
    pub fn acked_range(&self, device: u32, seqs: Range<u64>) {
        if self.check == Check::Seen {
            return;
        }
        let mut t = self.track(device);
        for seq in seqs {
            self.acked_in(&mut t, seq);
        }
    }

    fn acked_in(&self, t: &mut Track, seq: u64) {
        match self.place(t, seq) {
            // Pushed out before its answer came: counted then.
            Place::Below => {}
            Place::At(w, s) => {
                let bits = t.window.bits(w, s);
                if bits & ACKED != 0 {
                    return;
                }
                let set = if self.check == Check::Acked {
                    SETTLED
                } else {
                    if bits & SEEN == 0 {
                        Self::add(&self.counts.missing, 1);
                    }
                    ACKED
                };
                t.window.set(w, s, set);
            }
        }
    }

    /// Event `seq` of `device` failed: it will not be acknowledged (it may still have been
    /// written, and seeing it later is then not a duplicate).
    pub fn failed(&self, device: u32, seq: u64) {
        self.failed_range(device, seq..seq + 1);
    }

    /// The events `seqs` of `device` failed (their transaction did not commit).
    pub fn failed_range(&self, device: u32, seqs: Range<u64>) {
        if self.check == Check::Seen {
            return;
        }
        let mut t = self.track(device);
        for seq in seqs {
            if let Place::At(w, s) = self.place(&mut t, seq) {
                let bits = t.window.bits(w, s);
                if self.check == Check::Both
                    && bits & SEEN == 0
                    && !self.remember(&mut t, seq, false)
                {
                    Self::add(&self.counts.outside_window, 1);
                }
                t.window.set(w, s, SETTLED);
            }
        }
    }

    /// Account one consumed record at `now_us` (µs since the epoch).
    pub fn consumed(&self, value: Option<&[u8]>, now_us: u64) {
        Self::add(&self.counts.consumed, 1);
        let Some(event) = value.and_then(Event::decode) else {
            Self::add(&self.counts.foreign, 1);
            return;
        };
        if self.check == Check::Seen {
            let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
            match others.track((event.run, event.device)) {
                Some(track) => self.seen(track, event, now_us),
                None => Self::add(&self.counts.outside_window, 1),
            }
            return;
        }
        if event.run != self.run || event.device as usize >= self.devices.len() {
            Self::add(&self.counts.foreign, 1);
            return;
        }
        let mut t = self.track(event.device);
        self.seen(&mut t, event, now_us);
    }

    fn seen(&self, t: &mut Track, event: Event, now_us: u64) {
        if event.sent_at_us >= self.latency_from_us {
            self.latency.record(Duration::from_micros(
                now_us.saturating_sub(event.sent_at_us),
            ));
        }
        let seq = event.seq;
        let first = match self.place(t, seq) {
            Place::Below => false,
            Place::At(w, s) => {
                let bits = t.window.bits(w, s);
                if bits & SEEN == 0 {
                    let set = if self.check == Check::Seen {
                        SETTLED
                    } else {
                        SEEN
                    };
                    if bits & ACKED != 0 {
                        self.counts.missing.fetch_sub(1, Ordering::Relaxed);
                    }
                    t.window.set(w, s, set);
                    true
                } else {
                    false
                }
            }
        };
        let late = !first && self.forget(t, seq);
        if !first && !late {
            Self::add(&self.counts.duplicates, 1);
            return;
        }
        // A gap: the event before this one has not been seen (nor settled otherwise).
        if seq > 0 && !t.window.seen_or_settled(seq - 1) {
            Self::add(&self.counts.gaps, 1);
        }
    }

    /// A remembered event was seen at last: forget it (it is no longer missing).
    fn forget(&self, t: &mut Track, seq: u64) -> bool {
        match t.unseen.remove(&seq) {
            Some(acked) => {
                self.remembered.fetch_sub(1, Ordering::Relaxed);
                if acked {
                    self.counts.missing.fetch_sub(1, Ordering::Relaxed);
                }
                true
            }
            None => false,
        }
    }

    /// Events the windows cover now, summed (to show that memory stays bounded).
    #[cfg(test)]
    fn window_words(&self) -> usize {
        self.devices
            .iter()
            .map(|d| d.lock().unwrap().window.words.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: u64 = 1000;

    fn value(device: u32, seq: u64) -> Vec<u8> {
        Event {
            run: RUN,
            device,
            seq,
            sent_at_us: 1,
        }
        .encode(0)
        .to_vec()
    }

    fn see(l: &Ledger, device: u32, seq: u64) {
        l.consumed(Some(&value(device, seq)), 2);
    }

    fn run_ledger(devices: u32) -> Ledger {
        Ledger::new(RUN, devices, Check::Both, 0)
    }

    #[test]
    fn in_order_events_settle_and_the_window_stays_small() {
        let l = run_ledger(2);
        for seq in 0..100_000 {
            for d in 0..2 {
                l.acked(d, seq);
                see(&l, d, seq);
            }
        }
        let t = l.tally();
        assert_eq!(
            (t.consumed, t.duplicates, t.gaps, t.missing),
            (200_000, 0, 0, 0)
        );
        assert_eq!(t.outside_window, 0);
        assert!(l.window_words() <= 2, "{} words kept", l.window_words());
    }

    #[test]
    fn seen_before_acknowledged_is_not_missing() {
        let l = run_ledger(1);
        see(&l, 0, 0);
        assert_eq!(l.missing(), 0);
        l.acked(0, 0);
        assert_eq!(l.tally().missing, 0);
        l.acked(0, 1);
        assert_eq!(l.missing(), 1, "acknowledged, not yet seen");
        see(&l, 0, 1);
        assert_eq!(l.missing(), 0);
    }

    #[test]
    fn out_of_order_within_the_window_is_a_gap_not_a_loss() {
        let l = run_ledger(1);
        for seq in 0..10 {
            l.acked(0, seq);
        }
        for seq in [0, 1, 5, 2, 3, 4, 6, 7, 8, 9] {
            see(&l, 0, seq);
        }
        let t = l.tally();
        assert_eq!((t.missing, t.duplicates, t.outside_window), (0, 0, 0));
        assert_eq!(t.gaps, 1, "5 came before 2, 3 and 4");
    }

    #[test]
    fn duplicates_are_counted_in_the_window_and_below_it() {
        let l = run_ledger(1);
        for seq in 0..200 {
            l.acked(0, seq);
            see(&l, 0, seq);
        }
        // A rebalance replays from the last commit: 150..200 again, now below the window.
        for seq in 150..200 {
            see(&l, 0, seq);
        }
        see(&l, 0, 3);
        let t = l.tally();
        assert_eq!(t.duplicates, 51);
        assert_eq!((t.gaps, t.missing, t.outside_window), (0, 0, 0));
    }

    #[test]
    fn gaps_and_losses_show_in_the_counts() {
        let l = run_ledger(1);
        for seq in 0..10 {
            l.acked(0, seq);
        }
        for seq in [0, 1, 2, 6, 7, 8, 9] {
            see(&l, 0, seq);
        }
        let t = l.tally();
        assert_eq!(t.gaps, 1);
        assert_eq!(t.missing, 3, "3, 4 and 5 were acknowledged and never seen");
    }

    #[test]
    fn a_failed_event_is_not_missing_and_seeing_it_anyway_is_not_a_duplicate() {
        let l = run_ledger(1);
        l.acked(0, 0);
        l.failed(0, 1);
        l.acked(0, 2);
        see(&l, 0, 0);
        see(&l, 0, 2);
        assert_eq!(l.missing(), 0);
        see(&l, 0, 1); // written after all (a timeout is not a refusal)
        let t = l.tally();
        assert_eq!((t.duplicates, t.missing, t.outside_window), (0, 0, 0));
        see(&l, 0, 1);
        assert_eq!(l.tally().duplicates, 1, "the second sighting is one");
    }

    #[test]
    fn beyond_the_window_nothing_is_dropped_uncounted() {
        // 64 events of room for the device, 2 remembered.
        let l = Ledger::with_room(RUN, 1, Check::Both, 0, 64, 2);
        for seq in 0..64 {
            l.acked(0, seq);
        }
        // Only 3 of the first 32 are ever acknowledged-and-seen in time.
        for seq in [0, 1, 2] {
            see(&l, 0, seq);
        }
        assert_eq!(l.missing(), 61);
        // Event 64 needs a third word: the first 32 leave the window, 29 of them unseen.
        l.acked(0, 64);
        let t = l.tally();
        assert_eq!(t.missing, 62, "still missing, wherever they are kept");
        assert_eq!(t.outside_window, 27, "2 remembered, 27 without room");
        assert!(l.window_words() <= 2);
        // The two remembered ones (3 and 4) arrive late: neither duplicates nor missing.
        see(&l, 0, 3);
        see(&l, 0, 4);
        let t = l.tally();
        assert_eq!((t.missing, t.duplicates), (60, 0));
        // An event the ledger had no room for is not told apart from a duplicate; the
        // outside-window count says the checks were incomplete.
        see(&l, 0, 5);
        assert_eq!(l.tally().duplicates, 1);
    }

    #[test]
    fn a_jump_far_ahead_counts_every_event_skipped_without_walking_them() {
        let l = Ledger::with_room(RUN, 1, Check::Acked, 0, 64, 0);
        l.acked(0, 0);
        l.acked(0, 1_000_000_000);
        let t = l.tally();
        // 1 to 999,999,967: all but 0 and the 32 events of the window before 1,000,000,000.
        assert_eq!(t.outside_window, 1_000_000_000 - 1 - 32);
        assert!(l.window_words() <= 2);
    }

    #[test]
    fn a_committed_transaction_settles_its_range_and_an_aborted_one_is_sent_again() {
        let l = run_ledger(2);
        // Device 0: events 0..50 commit. Device 1: 0..30 abort (nothing is booked), then
        // the same 0..30 are sent again and commit.
        l.acked_range(0, 0..50);
        l.acked_range(1, 0..30);
        assert_eq!(l.missing(), 80);
        for seq in 0..50 {
            see(&l, 0, seq);
        }
        for seq in 0..30 {
            see(&l, 1, seq);
        }
        let t = l.tally();
        assert_eq!((t.missing, t.duplicates, t.gaps), (0, 0, 0));
        // A last transaction that did not commit: a late sighting (read_uncommitted) is
        // neither missing nor a duplicate.
        l.failed_range(0, 50..60);
        see(&l, 0, 50);
        let t = l.tally();
        assert_eq!((t.missing, t.duplicates, t.outside_window), (0, 0, 0));
    }

    #[test]
    fn produce_mode_settles_on_the_acknowledgement() {
        let l = Ledger::new(RUN, 3, Check::Acked, 0);
        for seq in 0..10_000 {
            for d in 0..3 {
                l.acked(d, seq);
            }
        }
        assert_eq!(l.tally(), Tally::default());
        assert!(l.window_words() <= 3);
    }

    #[test]
    fn consume_mode_tracks_every_run_in_bounded_room() {
        let l = Ledger::new(RUN, 10, Check::Seen, 0);
        let event = |run: u64, device: u32, seq: u64| {
            Event {
                run,
                device,
                seq,
                sent_at_us: 1,
            }
            .encode(0)
        };
        for run in 0..3u64 {
            for seq in 0..100 {
                l.consumed(Some(&event(run, 7, seq)), 2);
            }
        }
        l.consumed(Some(&event(1, 7, 50)), 2);
        l.consumed(Some(b"not an event"), 2);
        let t = l.tally();
        assert_eq!(
            (t.consumed, t.foreign, t.duplicates, t.gaps),
            (302, 1, 1, 0)
        );
        // More (run, device) pairs than there is room for: the oldest run is forgotten,
        // and its events counted outside the window from then on.
        for device in 0..OTHER_TRACKS as u32 {
            l.consumed(Some(&event(10, device, 0)), 2);
        }
        assert!(l.others.lock().unwrap().tracks.len() <= OTHER_TRACKS);
        l.consumed(Some(&event(0, 7, 100)), 2);
        assert_eq!(l.tally().outside_window, 1);
    }

    #[test]
    fn records_of_other_runs_or_unknown_devices_are_foreign_in_run_mode() {
        let l = run_ledger(2);
        let other = Event {
            run: RUN + 1,
            device: 0,
            seq: 0,
            sent_at_us: 1,
        }
        .encode(0);
        l.consumed(Some(&other), 2);
        l.consumed(Some(&value(5, 0)), 2);
        l.consumed(None, 2);
        let t = l.tally();
        assert_eq!((t.consumed, t.foreign, t.gaps, t.duplicates), (3, 3, 0, 0));
    }

    #[test]
    fn warmup_events_count_but_stay_out_of_the_latency() {
        let l = Ledger::new(RUN, 1, Check::Both, 100);
        l.acked(0, 0);
        l.consumed(Some(&value(0, 0)), 500); // sent at 1 µs, before the warm-up ended
        assert_eq!(l.tally().consumed, 1);
        assert_eq!(l.latency().percentiles().p50, Duration::ZERO);
    }
}
