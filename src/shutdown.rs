//! The one shutdown flag every part of a pipeline watches.
//!
//! Setting it (from Ctrl-C/SIGTERM through [`Shutdown::install_signal_handler`], or from the
//! embedding application through [`Shutdown::trigger`]) makes producers stop intake and
//! drain, and consumers finish, commit and leave. Cloning shares the flag.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shared, clonable shutdown flag.
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
