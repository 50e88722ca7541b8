//! Group membership, on a thread of its own beside each member.
//!
//! ```text
//!  member thread (Consumer::poll, or a pool's loop)         group thread (kpipe-group-N)
//!   fetch ─▶ records ─▶ caller / handler                     owns the coordinator connection
//!        ◀── Event: Assigned / Revoke / Lost / Failed ───     join, heartbeat, reconcile
//!        ─── Command: Commit / Released / Close ────────▶     commit, acknowledge, leave
//!   progress counter (a poll, a record handled) ─────────▶   max_poll_interval watchdog
//! ```
//!
//! The group thread speaks one of two protocols, each a [`Membership`]: the classic one
//! ([`classic`], eager or cooperative) and the consumer protocol of KIP-848 ([`kip848`]).
//! Both keep the partitions the member holds in one [`Ownership`], which turns their
//! decisions into events for the member thread: partitions to take up (with the group's
//! committed offsets, fetched here), partitions to give back (the member commits what it
//! finished, then says `Released`), and partitions already lost (nothing to commit). So the
//! handler may take as long as `max_poll_interval` on one record: heartbeats never wait for it.

mod beacon;
mod classic;
mod coordinator;
mod driver;
mod kip848;
mod membership;
mod ownership;
#[cfg(test)]
mod script;
mod share;

pub(crate) use driver::GroupHandle;
pub(super) use membership::names;
pub use membership::{MemberState, MemberStatus};
pub(crate) use ownership::Event;
