//! Retry with exponential backoff and a deadline: the one place retries are decided.

use std::time::{Duration, Instant};

use super::error::{Error, Result};

/// Exponential backoff with jitter, as the Java client's `retry.backoff.ms` /
/// `retry.backoff.max.ms`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// Start at `initial`, double each time, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() as u64 | 1);
        Backoff {
            next: initial,
            max: max.max(initial),
            seed,
        }
    }

    /// The next delay: the current step with ±20% jitter, then the step doubles.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift: cheap jitter so that clients retrying together spread out.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + (self.seed % 401) as f64 / 1000.0;
        let delay = self.next.mul_f64(jitter).min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 1 s (the Java client's defaults).
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// Run `op` on `state` until it succeeds, fails with a non-retriable error, or `deadline`
/// passes. `on_error` sees every retriable error first (to mark metadata stale, say). The
/// state is threaded through both closures so that they may share mutable access to it.
pub(crate) fn retry<S, T>(
    state: &mut S,
    deadline: Instant,
    backoff: &mut Backoff,
    mut on_error: impl FnMut(&mut S, &Error),
    mut op: impl FnMut(&mut S) -> Result<T>,
) -> Result<T> {
    loop {
        match op(state) {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(e) => {
                on_error(state, &e);
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    return Err(e);
                }
                log::debug!("retrying in {delay:?} after: {e}");
                std::thread::sleep(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert!((80..=120).contains(&d[0]), "{d:?}");
        assert!((160..=240).contains(&d[1]), "{d:?}");
        assert!(d[3] <= 400 && d[4] <= 400 && d[4] >= 320, "{d:?}");
    }

    #[test]
    fn retry_stops_on_permanent_errors_and_at_the_deadline() {
        let mut calls = 0;
        let permanent = retry(
            &mut calls,
            Instant::now() + Duration::from_secs(5),
            &mut Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
            |_, _| {},
            |calls| -> Result<()> {
                *calls += 1;
                Err(Error::Records("bad".into()))
            },
        );
        assert!(permanent.is_err());
        assert_eq!(calls, 1);

        let mut seen = 0;
        let transient = retry(
            &mut seen,
            Instant::now() + Duration::from_millis(50),
            &mut Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            |seen, _| *seen += 1,
            |_| -> Result<()> {
                Err(Error::Closed {
                    broker: "b:1".into(),
                })
            },
        );
        assert!(matches!(transient, Err(Error::Closed { .. })));
        assert!(seen >= 2, "retried {seen} times");

        let mut n = 0;
        let ok = retry(
            &mut n,
            Instant::now() + Duration::from_secs(5),
            &mut Backoff::default(),
            |_, _| {},
            |n| {
                *n += 1;
                if *n < 2 {
                    Err(Error::Closed {
                        broker: "b:1".into(),
                    })
                } else {
                    Ok(*n)
                }
            },
        );
        assert_eq!(ok.unwrap(), 2);
    }
}
