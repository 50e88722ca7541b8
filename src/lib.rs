#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod producer;
pub mod shutdown;
pub mod stats;

pub use producer::{Producer, ProducerConfig, ProducerRecord};
pub use shutdown::Shutdown;
