//! The one shutdown flag every part of a pipeline watches.
//!
//! Setting it (from Ctrl-C/SIGTERM through [`Shutdown::install_signal_handler`], or from the
//! embedding application through [`Shutdown::trigger`]) makes producers stop intake and
//! drain, and consumers finish, commit and leave. Cloning shares the flag.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shared, clonable shutdown flag.
///
/// Hand clones to everything that should stop together: threads of your own look at
/// [`is_triggered`](Self::is_triggered) or sleep in [`wait`](Self::wait);
/// [`ProducerConfig::shutdown`](crate::ProducerConfig::shutdown) and
/// [`ConsumerConfig::shutdown`](crate::ConsumerConfig::shutdown) make a producer drain and a
/// pool finish, commit and leave when it is set.
///
/// ```
/// use std::time::Duration;
/// use kpipe::Shutdown;
///
/// let shutdown = Shutdown::new();
/// // In a program: shutdown.install_signal_handler()?; Ctrl-C and SIGTERM then set it.
/// let worker = {
///     let shutdown = shutdown.clone();
///     std::thread::spawn(move || {
///         let mut ticks = 0;
///         while !shutdown.wait(Duration::from_millis(10)) {
///             ticks += 1; // one unit of work
///         }
///         ticks
///     })
/// };
/// std::thread::sleep(Duration::from_millis(50));
/// shutdown.trigger(); // what a signal does
/// let _ticks = worker.join().unwrap();
/// assert!(shutdown.is_triggered());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Flag>,
}

#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    signals: AtomicU32,
}

impl Shutdown {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the flag: everything watching it starts draining.
    pub fn trigger(&self) {
        self.inner.set.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_triggered(&self) -> bool {
        self.inner.set.load(Ordering::SeqCst)
    }

    /// How many times a signal arrived (a second Ctrl-C usually means "stop draining now").
    pub fn signal_count(&self) -> u32 {
        self.inner.signals.load(Ordering::SeqCst)
    }

    /// Set this flag on Ctrl-C and SIGTERM. A process has one such handler: calling this
    /// twice is an error from `ctrlc`.
    pub fn install_signal_handler(&self) -> Result<(), ctrlc::Error> {
        let flag = self.inner.clone();
        ctrlc::set_handler(move || {
            flag.signals.fetch_add(1, Ordering::SeqCst);
            flag.set.store(true, Ordering::SeqCst);
        })
    }

    /// Sleep until the flag is set or `timeout` passes; returns whether it is set.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_triggered() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_triggered());
        assert!(!b.wait(Duration::from_millis(1)));
        a.trigger();
        assert!(b.is_triggered());
        assert!(b.wait(Duration::from_secs(5)));
    }
}
