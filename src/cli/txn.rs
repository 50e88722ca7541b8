//! `--transactional-id`: the generators' events in transactions, one committed every
//! `--transaction-interval`, and the books of what each transaction held.
//!
//! ```text
//!  generator ─┐  read side,  ┌──────┐  write side, every interval: commit (on an abortable
//!  generator ─┼─ around each ─│ gate │─ error abort, and wind the devices back), begin the
//!  generator ─┘  send        └──────┘  next, let go                         ◀── committer
//! ```
//!
//! Generators send only while holding the gate's read side, and the committer ends a
//! transaction and begins the next while holding its write side, so every event is sent
//! inside an open transaction: none races a commit (`DeliveryError::NotInTransaction`) and
//! none is refused for want of one (`SendError::NoTransaction`). A generator keeps the read
//! side across sends until the committer asks for the gate, and lets go before it sleeps.
//!
//! A device's events are numbered and sent in order by one generator, so what one
//! transaction holds of a device is a range of its numbers: from where the device stood at
//! the transaction's begin (its mark) to where it stands at the end. The books are two
//! numbers a device, not a tag an event, and cost the writer thread nothing. When the
//! transaction commits, its ranges move to `acked` (and to the ledger); when it aborts, to
//! `aborted`, and the devices are wound back to their marks, so that the next transaction
//! sends the same events again: what read_committed consumers see of each device stays a
//! gapless prefix. A transaction whose end the command never learned (fenced, a commit past
//! its bound, the run cut short) is settled after the close from the producer's own counts
//! of commits and aborts, or counted as failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kpipe::producer::{Producer, Summary, TransactionError};
use kpipe::shutdown::Shutdown;

use super::args::UsageError;
use super::ledger::Ledger;

/// One generator thread's devices and the next number of each. The generator writes them
/// while it holds the gate; the committer reads them, and winds them back after an abort,
/// while it holds the gate's write side.
#[derive(Debug)]
pub struct Devices {
    /// The devices, by their ids.
    pub ids: Vec<u32>,
    /// The next sequence number of each (same order).
    pub next: Vec<AtomicU64>,
}

impl Devices {
    /// Devices `ids`, each at number 0.
    pub fn new(ids: Vec<u32>) -> Self {
        let next = ids.iter().map(|_| AtomicU64::new(0)).collect();
        Devices { ids, next }
    }
}

/// What generators and the committer meet at.
#[derive(Debug, Default)]
pub struct Gate {
    lock: RwLock<()>,
    /// The committer waits for the write side: generators let go after their current send.
    wanted: AtomicBool,
    /// No transaction will open any more (the last one ended, or the producer cannot go
    /// on): generators stop.
    closed: AtomicBool,
}

impl Gate {
    /// The read side: a transaction is open while it is held (unless [`is_closed`](Self::is_closed)).
    pub fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the committer waits for the gate.
    pub fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Whether no transaction will open any more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The transactions' counts so far, for the stats and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events of committed transactions.
    pub acked: u64,
    /// Events of aborted transactions.
    pub aborted: u64,
    /// Events of a transaction whose end is unknown or that could not end.
    pub failed: u64,
    /// Transactions committed (those with events).
    pub committed_txns: u64,
    /// Transactions aborted.
    pub aborted_txns: u64,
}

/// The books, shared by the committer, the watcher and the report.
#[derive(Debug, Default)]
pub struct Book {
    acked: AtomicU64,
    aborted: AtomicU64,
    failed: AtomicU64,
    committed_txns: AtomicU64,
    aborted_txns: AtomicU64,
    /// Why transactions were aborted, and how often.
    abort_reasons: Mutex<BTreeMap<String, u64>>,
    /// Why events failed (see [`Counts::failed`]), and how many.
    failures: Mutex<BTreeMap<String, u64>>,
    /// Why transactions cannot go on, once they cannot.
    stopped: Mutex<Option<String>>,
}

impl Book {
    /// The counts now. Events are counted before their transaction, so a reader that sees
    /// a transaction counted sees its events too.
    pub fn counts(&self) -> Counts {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let (committed_txns, aborted_txns) = (get(&self.committed_txns), get(&self.aborted_txns));
        Counts {
            acked: get(&self.acked),
            aborted: get(&self.aborted),
            failed: get(&self.failed),
            committed_txns,
            aborted_txns,
        }
    }

    /// Why transactions were aborted.
    pub fn abort_reasons(&self) -> BTreeMap<String, u64> {
        lock(&self.abort_reasons).clone()
    }

    /// Why events failed.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        lock(&self.failures).clone()
    }

    /// Why transactions cannot go on, if they cannot.
    pub fn stopped(&self) -> Option<String> {
        lock(&self.stopped).clone()
    }

    fn committed(&self, events: u64) {
        self.acked.fetch_add(events, Ordering::SeqCst);
        self.committed_txns.fetch_add(1, Ordering::SeqCst);
    }

    fn aborted(&self, events: u64) {
        self.aborted.fetch_add(events, Ordering::SeqCst);
        self.aborted_txns.fetch_add(1, Ordering::SeqCst);
    }

    fn failed(&self, events: u64, why: String) {
        self.failed.fetch_add(events, Ordering::SeqCst);
        *lock(&self.failures).entry(why).or_default() += events;
    }

    fn stop(&self, why: String) {
        lock(&self.stopped).get_or_insert(why);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one transaction holds of one device: numbers `lo..hi` of device `devices[g].ids[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    g: usize,
    i: usize,
    lo: u64,
    hi: u64,
}

/// The open transaction's events, found from the devices' marks.
#[derive(Debug, Default)]
struct Open {
    spans: Vec<Span>,
    events: u64,
}

/// The transactions of a run: the gate, the books, and the committer's thread.
pub struct Transactions {
    /// What the generators send through.
    pub gate: Arc<Gate>,
    /// What the transactions held and how they ended.
    pub book: Arc<Book>,
    thread: Option<JoinHandle<Committer>>,
}

impl Transactions {
    /// Begin the first transaction (before any generator sends) and start the committer,
    /// which ends one and begins the next every `interval`, each end bounded by `bound`.
    pub fn start(
        producer: &Producer,
        devices: &[Arc<Devices>],
        ledger: &Arc<Ledger>,
        interval: Duration,
        bound: Duration,
        shutdown: &Shutdown,
    ) -> Result<Transactions, UsageError> {
        let (gate, book) = (Arc::new(Gate::default()), Arc::new(Book::default()));
        producer
            .begin_transaction()
            .map_err(|e| UsageError(format!("cannot begin a transaction: {e}")))?;
        let committer = Committer {
            producer: producer.clone(),
            gate: gate.clone(),
            devices: devices.to_vec(),
            marks: devices.iter().map(|d| vec![0; d.ids.len()]).collect(),
            ledger: ledger.clone(),
            book: book.clone(),
            interval,
            bound,
            shutdown: shutdown.clone(),
            ended_ok: (0, 0),
        };
        let thread = thread::Builder::new()
            .name("kpipe-committer".into())
            .spawn(move || {
                let mut c = committer;
                c.run();
                c
            })
            .map_err(|e| UsageError(format!("cannot start the committer thread: {e}")))?;
        Ok(Transactions {
            gate,
            book,
            thread: Some(thread),
        })
    }

    /// Wait for the committer's thread, which stops once the shutdown flag is set (after the
    /// commit under way, if one is) or transactions cannot go on; hands the committer back
    /// for the last commit ([`Committer::finish`]).
    pub fn join(&mut self) -> Option<Committer> {
        match self.thread.take()?.join() {
            Ok(c) => Some(c),
            Err(_) => {
                let why = "the committer thread panicked (a kpipe bug)".to_owned();
                log::error!("{why}");
                self.book.stop(why);
                self.gate.closed.store(true, Ordering::SeqCst);
                None
            }
        }
    }
}

/// Ends transactions and begins the next, every interval, on a thread of its own.
pub struct Committer {
    producer: Producer,
    gate: Arc<Gate>,
    devices: Vec<Arc<Devices>>,
    /// Where each device stood when the open transaction began (same shape as `devices`).
    marks: Vec<Vec<u64>>,
    ledger: Arc<Ledger>,
    book: Arc<Book>,
    interval: Duration,
    /// Bound on one commit or abort.
    bound: Duration,
    shutdown: Shutdown,
    /// Commits and aborts that returned Ok, empty transactions included: the producer's
    /// summary counts those too, and the difference tells how a last transaction ended.
    ended_ok: (u64, u64),
}

impl Committer {
    /// Commit every interval until the shutdown flag is set or transactions cannot go on
    /// (then [`Book::stopped`] says why).
    fn run(&mut self) {
        let mut due = Instant::now() + self.interval;
        while !self.shutdown.is_triggered() {
            let now = Instant::now();
            if now < due {
                thread::sleep((due - now).min(Duration::from_millis(10)));
                continue;
            }
            due = (due + self.interval).max(now);
            if self.producer.is_closed() {
                // Stopped by itself (fenced while the transaction was still empty, say).
                let fatal = self.producer.stats().fatal;
                self.book
                    .stop(fatal.unwrap_or_else(|| "the producer stopped".into()));
                self.gate.closed.store(true, Ordering::SeqCst);
                return;
            }
            // A transaction with no event yet stays open: nothing of it reached a broker,
            // so its timeout has not started.
            if self.open_hint() == 0 {
                continue;
            }
            if let Err(why) = self.end(true, self.bound) {
                self.book.stop(why);
                return;
            }
        }
    }

    /// Events sent in the open transaction, read without the gate (a hint).
    fn open_hint(&self) -> u64 {
        self.devices
            .iter()
            .zip(&self.marks)
            .flat_map(|(d, m)| d.next.iter().zip(m))
            .map(|(n, &m)| n.load(Ordering::Relaxed).saturating_sub(m))
            .sum()
    }

    /// The open transaction's events (exact while the gate's write side is held).
    fn open(&self) -> Open {
        let mut open = Open::default();
        for (g, (d, marks)) in self.devices.iter().zip(&self.marks).enumerate() {
            for (i, (next, &lo)) in d.next.iter().zip(marks).enumerate() {
                let hi = next.load(Ordering::Relaxed);
                if hi > lo {
                    open.spans.push(Span { g, i, lo, hi });
                    open.events += hi - lo;
                }
            }
        }
        open
    }

    /// With the gate's write side held: end the open transaction (commit it; abort it on an
    /// abortable error) and begin the next if `next`. An empty transaction stays open when
    /// `next` (there is nothing to end). Err says why transactions cannot go on; the gate is
    /// then closed, and the open transaction's events are left for [`finish`](Self::finish).
    fn end(&mut self, next: bool, bound: Duration) -> Result<(), String> {
        let gate = self.gate.clone();
        gate.wanted.store(true, Ordering::SeqCst);
        let guard = gate.lock.write().unwrap_or_else(|p| p.into_inner());
        let open = self.open();
        let (committed, result) = if open.events == 0 && next {
            (false, Ok(()))
        } else {
            match self.commit_or_abort(&open, bound) {
                Ok(committed) => (committed, Ok(())),
                Err(why) => (false, Err(why)),
            }
        };
        let result = result.and_then(|()| match next {
            true => self
                .producer
                .begin_transaction()
                .map_err(|e| format!("cannot begin a transaction: {e}")),
            false => Ok(()),
        });
        if result.is_err() || !next {
            gate.closed.store(true, Ordering::SeqCst);
        }
        gate.wanted.store(false, Ordering::SeqCst);
        drop(guard);
        // The ledger after letting go: its work does not hold the generators up.
        if committed {
            self.settle(&open, |l, d, r| l.acked_range(d, r));
        }
        result
    }

    /// Commit; on an abortable error, abort and wind the devices back. Ok(true) when it
    /// committed, Ok(false) when it aborted.
    fn commit_or_abort(&mut self, open: &Open, bound: Duration) -> Result<bool, String> {
        let asked = Instant::now();
        match self.producer.commit_transaction(bound) {
            Ok(()) => {
                log::debug!(
                    "committed a transaction of {} events in {:?}",
                    open.events,
                    asked.elapsed()
                );
                self.ended_ok.0 += 1;
                if open.events > 0 {
                    self.book.committed(open.events);
                }
                for s in &open.spans {
                    self.marks[s.g][s.i] = s.hi;
                }
                Ok(true)
            }
            Err(e) if e.is_abortable() => {
                log::warn!("aborting a transaction of {} events: {e}", open.events);
                self.producer
                    .abort_transaction(bound)
                    .map_err(|e| format!("aborting a failed transaction: {e}"))?;
                self.ended_ok.1 += 1;
                *lock(&self.book.abort_reasons)
                    .entry(reason(&e))
                    .or_default() += 1;
                self.book.aborted(open.events);
                for s in &open.spans {
                    self.devices[s.g].next[s.i].store(s.lo, Ordering::Relaxed);
                }
                Ok(false)
            }
            Err(e) => Err(format!("committing a transaction: {e}")),
        }
    }

    fn settle(&self, open: &Open, f: impl Fn(&Ledger, u32, std::ops::Range<u64>)) {
        for s in &open.spans {
            f(&self.ledger, self.devices[s.g].ids[s.i], s.lo..s.hi);
        }
    }

    /// At shutdown, the generators stopped: commit the last transaction within `deadline`
    /// (unless transactions could not go on already). What is left undecided is settled by
    /// [`settle_after_close`](Last::settle_after_close).
    pub fn finish(mut self, deadline: Instant) -> Last {
        if self.book.stopped().is_none() {
            let bound = deadline.saturating_duration_since(Instant::now());
            if let Err(why) = self.end(false, bound) {
                self.book.stop(why);
            }
        }
        self.gate.closed.store(true, Ordering::SeqCst);
        Last {
            open: self.open(),
            committer: self,
        }
    }
}

/// The last transaction, if its end is not known yet.
pub struct Last {
    open: Open,
    committer: Committer,
}

impl Last {
    /// After the producer closed: the last transaction's events move to acked or aborted as
    /// the producer's `summary` says it ended, else to failed (fenced: the transaction is
    /// aborted by the producer that took over, or at its timeout).
    pub fn settle_after_close(self, summary: Option<&Summary>) {
        let Last { open, committer: c } = self;
        if open.events == 0 {
            return;
        }
        let (commits, aborts) = c.ended_ok;
        match summary {
            Some(s) if s.transactions_committed > commits => {
                c.book.committed(open.events);
                c.settle(&open, |l, d, r| l.acked_range(d, r));
            }
            Some(s) if s.transactions_aborted > aborts => {
                c.book.aborted(open.events);
                c.settle(&open, |l, d, r| l.failed_range(d, r));
            }
            _ => {
                let why = c
                    .book
                    .stopped()
                    .unwrap_or_else(|| "the producer closed first".into());
                c.book
                    .failed(open.events, format!("transaction not committed: {why}"));
                c.settle(&open, |l, d, r| l.failed_range(d, r));
            }
        }
    }
}

/// A transaction error, as a reason to count (the part after the advice).
fn reason(e: &TransactionError) -> String {
    match e {
        TransactionError::Abortable(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
