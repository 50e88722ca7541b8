//! The synchronous Kafka client core: what an application needs beside the producer and the
//! consumers: the client settings ([`ClientConfig`], [`SecurityConfig`]), the admin handle
//! ([`Cluster`]: topics, offsets, groups), the errors, and the vocabulary the configs share
//! ([`Compression`], [`Acks`], [`IsolationLevel`], [`Header`]). No threads are started here;
//! the producer and consumer layers own the threads and call into this one.
//!
//! The layers under it (connections, the wire codecs, raw produce and fetch) are the crate's
//! own; the few that tests, benchmarks and tools reach for are in [`crate::unstable`],
//! outside the stability promise.

mod admin;
pub(crate) mod assignor;
pub(crate) mod backoff;
mod cluster;
pub(crate) mod compression;
mod config;
pub(crate) mod connect;
pub(crate) mod connection;
mod error;
pub(crate) mod fetch;
pub(crate) mod group;
pub(crate) mod produce;
pub(crate) mod properties;
pub(crate) mod records;
mod recovery;
mod security;
pub(crate) mod share;
pub(crate) mod transport;
pub(crate) mod txn;
pub(crate) mod versions;

pub(crate) use admin::{EpochEnd, EpochQuery};
pub use admin::{ListedOffset, NewTopic, OffsetSpec, ShareGroupOffset};
pub(crate) use assignor::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Assignment,
    Assignor, Subscription,
};
pub(crate) use backoff::Backoff;
pub use cluster::{BrokerInfo, Cluster, PartitionInfo, TopicInfo};
pub use compression::Compression;
pub use config::{ClientConfig, ConnectionConfig, MetadataRecovery};
pub(crate) use connection::{Connection, Pending};
pub use error::{Error, KafkaCode, Location, Phase, Result};
pub use fetch::IsolationLevel;
pub(crate) use fetch::{FetchInFlight, FetchParams, FetchTarget};
pub(crate) use group::{
    consumer_heartbeat_request, heartbeat_request, join_request, leave_request,
    offset_commit_request, offset_fetch_request, read_consumer_heartbeat, read_heartbeat,
    read_join, read_leave, read_offset_commit, read_offset_fetch, read_sync, sync_request,
    ConsumerHeartbeat, ConsumerHeartbeatAnswer, JoinAnswer, JoinParams, Joined,
};
pub use group::{CommittedOffset, GroupMember, GroupMetadata, TopicPartition};
pub use produce::Acks;
pub(crate) use produce::{
    produce_request, produce_results, transactional_produce_request, PartitionBatch, ProduceAck,
};
pub use records::Header;
pub(crate) use records::{restamp, BatchBuilder, Batches, FetchedRecord, ProducerStamp};
pub use security::{
    Pem, Sasl, SaslMechanism, Secret, SecurityConfig, SecurityProtocol, TlsConfig, TlsVerify,
    TokenFile, TokenProvider, UnsecuredToken,
};
pub(crate) use share::{
    ack_ranges, read_share_acknowledge, read_share_fetch, read_share_heartbeat,
    share_acknowledge_request, share_fetch_request, share_heartbeat_request, AckKind, AckRanges,
    IdPartition, ShareAnswer, ShareFetchSpec, ShareHeartbeat, ShareHeartbeatAnswer,
};
pub(crate) use txn::{TransactionVersion, TxnApi, TxnErrorClass, TxnProducer};
pub(crate) use versions::{floor, BrokerVersions};
