#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod client;
pub mod consumer;
pub mod metrics;
pub mod producer;
pub mod shutdown;
pub mod stats;
mod sync;
pub mod unstable;

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, ConsumerPool};
pub use producer::{Producer, ProducerConfig, ProducerRecord};
pub use shutdown::Shutdown;

/// The guide's pages (`docs/guide/`), compiled by `cargo test --doc` so their examples
/// cannot drift from the API. Only built for doctests: the guide is read on its own.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../docs/guide/README.md")]
    struct Index;
    #[doc = include_str!("../docs/guide/producing.md")]
    struct Producing;
    #[doc = include_str!("../docs/guide/consuming.md")]
    struct Consuming;
    #[doc = include_str!("../docs/guide/groups.md")]
    struct Groups;
    #[doc = include_str!("../docs/guide/security.md")]
    struct Security;
    #[doc = include_str!("../docs/guide/transactions.md")]
    struct Transactions;
    #[doc = include_str!("../docs/guide/share-groups.md")]
    struct ShareGroups;
    #[doc = include_str!("../docs/guide/operating.md")]
    struct Operating;
    #[doc = include_str!("../docs/guide/command.md")]
    struct Command;
    #[doc = include_str!("../docs/guide/internals.md")]
    struct Internals;
    #[doc = include_str!("../docs/guide/development.md")]
    struct Development;
}
