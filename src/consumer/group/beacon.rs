//! The state a member thread and its group thread both see, without a message between them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// State both threads of a member see.
#[derive(Debug, Default)]
pub(crate) struct Beacon {
    /// Bumped by the member thread whenever it makes progress (a poll, a record handled).
    pub(super) progress: AtomicU64,
    /// Set by the group thread when the member thread should look up from its records:
    /// events wait, or a commit interval went by. One load per record to check.
    pub(super) poke: AtomicBool,
    /// Set when closing: a request the coordinator holds (JoinGroup) is given up.
    pub(super) abort: AtomicBool,
}

impl Beacon {
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
}
