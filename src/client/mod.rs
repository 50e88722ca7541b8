//! The synchronous Kafka client core: blocking connections, metadata, admin, produce and
//! fetch primitives, and the record batch codec. No threads are started here; the producer
//! and consumer layers own the threads and call into this one.

mod admin;
mod assignor;
mod backoff;
mod cluster;
mod compression;
mod config;
mod connection;
mod error;
mod fetch;
mod group;
mod produce;
pub(crate) mod properties;
mod records;
mod recovery;
mod sasl;
mod security;
mod share;
mod transport;
mod txn;
mod versions;

pub use admin::{is_already_exists, ListedOffset, NewTopic, OffsetSpec, ShareGroupOffset};
pub(crate) use admin::{EpochEnd, EpochQuery};
pub use assignor::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Assignment,
    Assignor, Subscription,
};
pub use backoff::{retry, Backoff};
pub use cluster::{BrokerInfo, Cluster, PartitionInfo, TopicInfo};
pub use compression::Compression;
pub use config::{validate_addr, ClientConfig, ConnectionConfig, MetadataRecovery};
pub use connection::{
    decode_exact, encode_request, read_frame, Connection, FrameError, Pending, Transport,
};
pub use error::{Error, KafkaCode, Location, Phase, Result};
pub use fetch::{
    fetch_request, fetch_results, FetchInFlight, FetchParams, FetchTarget, FetchedPartition,
    IsolationLevel,
};
pub(crate) use group::{
    consumer_heartbeat_request, heartbeat_request, join_request, leave_request,
    offset_commit_request, offset_fetch_request, read_consumer_heartbeat, read_heartbeat,
    read_join, read_leave, read_offset_commit, read_offset_fetch, read_sync, sync_request,
    ConsumerHeartbeat, ConsumerHeartbeatAnswer, JoinAnswer, JoinParams, Joined,
};
pub use group::{CommittedOffset, GroupMember, GroupMetadata, TopicPartition};
pub(crate) use produce::transactional_produce_request;
pub use produce::{
    produce_request, produce_results, Acks, PartitionBatch, PartitionResult, ProduceAck,
};
pub use records::{
    decode_batches, encode_batch, restamp, AbortedTxn, BatchBuilder, BatchHeader, Batches,
    DecodeInfo, FetchedRecord, Header, ProducerStamp, Record,
};
pub use security::{
    Pem, Sasl, SaslMechanism, Secret, SecurityConfig, SecurityProtocol, TlsConfig, TlsVerify,
    TokenFile, TokenProvider, UnsecuredToken,
};
pub(crate) use share::{
    ack_ranges, read_share_acknowledge, read_share_fetch, read_share_heartbeat,
    share_acknowledge_request, share_fetch_request, share_heartbeat_request, AckKind, AckRanges,
    IdPartition, ShareAnswer, ShareFetchSpec, ShareHeartbeat, ShareHeartbeatAnswer,
};
pub use transport::{Connector, Stream, TlsStream};
pub use txn::{TransactionVersion, TxnApi, TxnErrorClass, TxnProducer};
pub use versions::{api_name, client_range, floor, release_of_metadata_version, BrokerVersions};
