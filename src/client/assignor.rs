//! The consumer protocol's member metadata and assignments, and the classic assignors the
//! group leader runs: range, round-robin and cooperative-sticky, named as the Java client
//! names them so that kpipe and Java members share one group whichever of them leads it.

mod classic;
mod metadata;
mod sticky;

pub use classic::Assignor;
pub(crate) use metadata::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Assignment,
    Subscription,
};
