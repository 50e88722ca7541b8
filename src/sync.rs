//! Small synchronisation helpers shared by the thread layers.

use std::sync::{Mutex, MutexGuard};

/// Locking that survives a poisoned mutex: the data behind kpipe's mutexes (counters,
/// maps of progress) stays valid even if a thread panicked while holding the lock.
pub(crate) trait Locked<T> {
    /// Lock, taking over the data of a poisoned lock.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}
