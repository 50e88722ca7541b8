//! Counters and latency histograms shared between the threads that update them and the
//! threads that read snapshots. Updates are single relaxed atomic operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: values are kept to within 1/16 (about 6%).
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Enough powers of two for microseconds up to about 2^40 µs (12 days).
const GROUPS: usize = 40;

/// A concurrent log-linear histogram of durations, in microseconds, with about 6% precision.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..GROUPS * SUB).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let group = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = group - SUB_BITS;
    let sub = ((us >> shift) as usize) & (SUB - 1);
    let idx = ((group - SUB_BITS + 1) as usize) * SUB + sub;
    idx.min(GROUPS * SUB - 1)
}

/// The largest value that lands in bucket `idx` (so percentiles never under-report).
fn bucket_high(idx: usize) -> u64 {
    if idx < SUB {
        return idx as u64;
    }
    let group = (idx / SUB) as u32 - 1 + SUB_BITS;
    let sub = (idx % SUB) as u64;
    let shift = group - SUB_BITS;
    ((SUB as u64 + sub + 1) << shift) - 1
}

impl Histogram {
    /// Record one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Record many durations at once. Neighbouring values that share a bucket (the records
    /// of one batch, say) cost one atomic add between them, not three each.
    pub fn record_all(&self, ds: impl IntoIterator<Item = Duration>) {
        let (mut run_bucket, mut run_len) = (0usize, 0u64);
        let (mut n, mut max) = (0u64, 0u64);
        for d in ds {
            let us = d.as_micros().min(u64::MAX as u128) as u64;
            let b = bucket_of(us);
            if run_len > 0 && b != run_bucket {
                self.buckets[run_bucket].fetch_add(run_len, Ordering::Relaxed);
                run_len = 0;
            }
            run_bucket = b;
            run_len += 1;
            n += 1;
            max = max.max(us);
        }
        if n == 0 {
            return;
        }
        self.buckets[run_bucket].fetch_add(run_len, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.max.fetch_max(max, Ordering::Relaxed);
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0.0 to 1.0), or zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let max = self.max.load(Ordering::Relaxed);
                return Duration::from_micros(bucket_high(i).min(max));
            }
        }
        Duration::from_micros(self.max.load(Ordering::Relaxed))
    }

    /// p50, p99 and p99.9 at once.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: Duration::from_micros(self.max.load(Ordering::Relaxed)),
        }
    }
}

/// Latency percentiles from a [`Histogram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest value seen.
    pub max: Duration,
}

/// A relaxed atomic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Subtract `n` (for gauges).
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Set it to `n` (for a count kept elsewhere and published here).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, 1 << 39]) {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            let high = bucket_high(b);
            assert!(high >= us, "{us} -> {b} -> {high}");
            assert!(high as f64 <= us as f64 * 1.07 + 1.0, "{us} -> {high}");
        }
    }

    #[test]
    fn record_all_matches_recording_one_by_one() {
        // Runs of one bucket, bucket changes, a lone value at the end.
        let values: Vec<Duration> = [5u64, 5, 5, 700, 700, 3, 90_000, 90_000, 12]
            .iter()
            .map(|us| Duration::from_micros(*us))
            .collect();
        let (one, all) = (Histogram::default(), Histogram::default());
        for d in &values {
            one.record(*d);
        }
        all.record_all(values.iter().copied());
        all.record_all(std::iter::empty());
        assert_eq!(all.count(), one.count());
        for q in [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0] {
            assert_eq!(all.quantile(q), one.quantile(q), "q {q}");
        }
        assert_eq!(all.percentiles(), one.percentiles());
    }

    #[test]
    fn percentiles_of_a_known_spread() {
        let h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        let within = |d: Duration, ms: u64| {
            let v = d.as_secs_f64() * 1000.0;
            v >= ms as f64 && v <= ms as f64 * 1.07
        };
        assert!(within(p.p50, 500), "{p:?}");
        assert!(within(p.p99, 990), "{p:?}");
        assert!(within(p.p999, 999), "{p:?}");
        assert_eq!(p.max, Duration::from_millis(1000));
        assert_eq!(h.count(), 1000);
        assert_eq!(Histogram::default().quantile(0.5), Duration::ZERO);
    }
}
