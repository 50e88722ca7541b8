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
