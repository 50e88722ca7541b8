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
    /// The sum of the values, µs (for [`HistogramSnapshot::sum`]).
    sum: AtomicU64,
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
            sum: AtomicU64::new(0),
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
        self.sum.fetch_add(us, Ordering::Relaxed);
    }

    /// Record many durations at once. Neighbouring values that share a bucket (the records
    /// of one batch, say) cost one atomic add between them, not three each.
    pub fn record_all(&self, ds: impl IntoIterator<Item = Duration>) {
        let (mut run_bucket, mut run_len) = (0usize, 0u64);
        let (mut n, mut max, mut sum) = (0u64, 0u64, 0u64);
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
            sum = sum.saturating_add(us);
        }
        if n == 0 {
            return;
        }
        self.buckets[run_bucket].fetch_add(run_len, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.max.fetch_max(max, Ordering::Relaxed);
        self.sum.fetch_add(sum, Ordering::Relaxed);
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

    /// The counts now, to export (see [`crate::metrics`]). Each bucket is read once, so the
    /// snapshot is consistent with itself (its count is the sum of its buckets) while
    /// values are still being recorded; only its sum may be a few values ahead or behind.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then(|| (bucket_high(i), n))
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_us: self.sum.load(Ordering::Relaxed),
        }
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

/// A [`Histogram`]'s counts at one moment, as [`Histogram::snapshot`] takes them: what a
/// monitoring system's histogram is made of (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// The non-empty buckets, ascending: (the largest value it holds in µs, its count).
    buckets: Vec<(u64, u64)>,
    sum_us: u64,
}

impl HistogramSnapshot {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|&(_, n)| n).sum()
    }

    /// The sum of the values recorded (each to the microsecond below).
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }

    /// Values known to be at most `bound`: those of the buckets that hold nothing above
    /// it. Buckets are 1/16 of their value wide, so a value up to about 6% under `bound`
    /// may be counted only at a larger bound (never the other way round); rises with
    /// `bound`, and reaches [`count`](Self::count) at [`Duration::MAX`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use kpipe::stats::Histogram;
    ///
    /// let h = Histogram::default();
    /// h.record(Duration::from_millis(3));
    /// h.record(Duration::from_millis(40));
    /// let s = h.snapshot();
    /// assert_eq!(s.count_at_most(Duration::from_millis(1)), 0);
    /// assert_eq!(s.count_at_most(Duration::from_millis(10)), 1);
    /// assert_eq!(s.count_at_most(Duration::MAX), s.count());
    /// assert_eq!(s.sum(), Duration::from_millis(43));
    /// ```
    pub fn count_at_most(&self, bound: Duration) -> u64 {
        // A value recorded as `us` was under `us + 1` µs: a bucket is wholly at most
        // `bound` when its largest value plus one is, that is when its largest value is
        // under it.
        let bound_us = bound.as_micros();
        self.buckets
            .iter()
            .take_while(|&&(high, _)| u128::from(high) < bound_us)
            .map(|&(_, n)| n)
            .sum()
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
    fn a_snapshot_counts_each_value_once_and_never_below_its_bound() {
        let h = Histogram::default();
        let values: Vec<u64> = (0..5000u64).map(|i| i * i % 70_001).collect();
        for &us in &values {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), values.len() as u64);
        assert_eq!(s.sum(), Duration::from_micros(values.iter().sum()));
        let mut last = 0;
        for bound_us in [
            0u64, 1, 2, 15, 16, 17, 100, 1000, 1024, 5000, 65_536, 70_000, 80_000,
        ] {
            let at_most = s.count_at_most(Duration::from_micros(bound_us));
            assert!(at_most >= last, "cumulative at {bound_us}");
            last = at_most;
            // Never counts a value above the bound; misses at most those within 1/16 under it.
            let exact = values.iter().filter(|&&v| v < bound_us).count() as u64;
            let near = values
                .iter()
                .filter(|&&v| (v as f64) < bound_us as f64 * (1.0 - 1.0 / 16.0) - 1.0)
                .count() as u64;
            assert!(
                at_most <= exact && at_most >= near,
                "{bound_us}: {near} <= {at_most} <= {exact}"
            );
        }
        assert_eq!(s.count_at_most(Duration::MAX), s.count());
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
