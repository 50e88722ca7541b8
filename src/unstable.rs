//! Building blocks under the client, for tests, benchmarks and tools: one connection to one
//! broker and the steps that open it, the record batch codec, raw produce and fetch results,
//! and the transaction coordinator's requests one by one.
//!
//! **Outside the stability promise**: anything here may change or go in any release,
//! without a major version. Applications use [`Producer`](crate::Producer), the consumers
//! and [`Cluster`](crate::client::Cluster)'s admin methods instead.

pub use crate::client::connect::Connector;
pub use crate::client::connection::{Connection, Pending};
pub use crate::client::fetch::{FetchInFlight, FetchParams, FetchTarget, FetchedPartition};
pub use crate::client::produce::{PartitionBatch, PartitionResult, ProduceAck};
pub use crate::client::records::{
    decode_batches, encode_batch, AbortedTxn, BatchBuilder, BatchHeader, Batches, DecodeInfo,
    FetchedRecord, ProducerStamp, Record,
};
pub use crate::client::transport::{Stream, Transport};
pub use crate::client::txn::{TransactionVersion, TxnApi, TxnErrorClass, TxnProducer};
