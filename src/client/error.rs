//! The client layer's error type: what failed, where, and what to do about it.

use std::fmt;
use std::io;
use std::time::Duration;

pub use kafka_protocol::ResponseError as KafkaCode;

/// A result with the client layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The phase of a request that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking up the broker's host name.
    Resolve,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    TlsHandshake,
    /// Writing a request.
    Write,
    /// Waiting for (or reading) a response.
    Read,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Resolve => "name lookup",
            Phase::Connect => "connect",
            Phase::TlsHandshake => "TLS handshake",
            Phase::Write => "write",
            Phase::Read => "read",
        })
    }
}

/// Where a broker error happened: the API and, when known, the topic and partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The broker that answered, `host:port`.
    pub broker: String,
    /// The API that was called, e.g. `Produce`.
    pub api: &'static str,
    /// The topic concerned, if any.
    pub topic: Option<String>,
    /// The partition concerned, if any.
    pub partition: Option<i32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", self.api, self.broker)?;
        match (&self.topic, self.partition) {
            (Some(t), Some(p)) => write!(f, " for {t}-{p}"),
            (Some(t), None) => write!(f, " for topic {t}"),
            _ => Ok(()),
        }
    }
}

/// Everything that can go wrong in the client layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be opened.
    #[error("cannot connect to Kafka at {addr}: {source}; is a broker running there? (start a local one with ./scripts/kafka up)")]
    Connect {
        /// The address that was tried.
        addr: String,
        /// What the operating system said.
        source: io::Error,
    },

    /// None of the bootstrap addresses answered.
    #[error("no bootstrap broker reachable (tried {}); check the broker list or start a local broker with ./scripts/kafka up", .tried.join("; "))]
    NoBrokerReachable {
        /// Each address with the reason it failed.
        tried: Vec<String>,
    },

    /// A bounded wait ran out.
    #[error("{phase} timed out after {after:?} talking to {broker}{}; the broker is slow, stalled or not a Kafka broker", api.map(|a| format!(" ({a})")).unwrap_or_default())]
    Timeout {
        /// The phase that ran out of time.
        phase: Phase,
        /// The broker, `host:port`.
        broker: String,
        /// The API in flight, if any.
        api: Option<&'static str>,
        /// The bound that was exceeded.
        after: Duration,
    },

    /// The connection broke while a request was in flight; it has been closed.
    #[error("connection to {broker} failed during {api}: {source}")]
    Io {
        /// The broker, `host:port`.
        broker: String,
        /// The API in flight.
        api: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// The broker sent bytes that are not a valid Kafka response.
    #[error("protocol error from {broker}: {detail}; the connection was closed")]
    Protocol {
        /// The broker, `host:port`.
        broker: String,
        /// What was wrong with the bytes.
        detail: String,
    },

    /// TLS failed: the broker's certificate was refused, the broker refused ours, or the
    /// other side does not speak TLS. Not retried: the settings must change.
    #[error("TLS with {broker} failed: {cause}")]
    Tls {
        /// The broker, `host:port`.
        broker: String,
        /// What went wrong and what to change.
        cause: String,
    },

    /// SASL authentication failed. Not retried: the credentials must change.
    #[error("SASL {mechanism} authentication{} to {broker} failed: {message}", user.as_ref().map(|u| format!(" of user {u:?}")).unwrap_or_default())]
    Auth {
        /// The broker, `host:port`.
        broker: String,
        /// The mechanism, e.g. `SCRAM-SHA-512`.
        mechanism: &'static str,
        /// The user, where the mechanism has one (never the password).
        user: Option<String>,
        /// What the broker (or the mechanism's check) said.
        message: String,
    },

    /// A response frame was larger than the configured limit.
    #[error("response frame from {broker} is {actual} bytes, over the {limit}-byte limit (raise max_response_bytes if this is expected)")]
    FrameTooLarge {
        /// The broker, `host:port`.
        broker: String,
        /// The configured limit.
        limit: usize,
        /// The size announced by the frame.
        actual: i64,
    },

    /// A connection that failed earlier was used again.
    #[error("connection to {broker} is closed after an earlier failure; open a new one")]
    Closed {
        /// The broker, `host:port`.
        broker: String,
    },

    /// Client and broker share no version of an API.
    #[error("{broker} does not support {api} in a version kpipe speaks: kpipe {ours}, broker {theirs}; use a Kafka broker of version 3.x or 4.x")]
    UnsupportedVersion {
        /// The broker, `host:port`.
        broker: String,
        /// The API, e.g. `Fetch`.
        api: &'static str,
        /// The range kpipe can use, `min..max`.
        ours: String,
        /// The range the broker advertised, or `none`.
        theirs: String,
    },

    /// The broker answered with a Kafka error code.
    #[error("{code} (Kafka error {}) in {at}{}{}", code.code(), message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(), hint(*code))]
    Broker {
        /// The Kafka error code.
        code: KafkaCode,
        /// Where it happened.
        at: Location,
        /// The broker's message, if it sent one.
        message: Option<String>,
    },

    /// A topic the cluster does not know.
    #[error("topic {topic:?} does not exist; create it first (or enable topic creation)")]
    UnknownTopic {
        /// The topic's name.
        topic: String,
    },

    /// A partition index the topic does not have (checked against fresh metadata).
    #[error("topic {topic:?} has {count} partitions, so partition {partition} does not exist")]
    UnknownPartition {
        /// The topic's name.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        count: usize,
    },

    /// A share group the coordinator does not know as one: no such group, or a group of
    /// another type (a consumer group) by that name.
    #[error("share group {group:?} does not exist, or is not a share group ({broker} says: {message}); check the name: a share group exists once a share consumer has joined it, and a consumer group by that name is not one")]
    UnknownShareGroup {
        /// The group asked about.
        group: String,
        /// The coordinator that answered, `host:port`.
        broker: String,
        /// The coordinator's message (`GROUP_ID_NOT_FOUND`).
        message: String,
    },

    /// The cluster does not offer share groups (KIP-932, generally available from Kafka
    /// 4.2): its brokers lack the share group APIs.
    #[error("share groups (KIP-932) need Kafka 4.2 or newer, but the cluster of {broker} runs {release} and does not offer {api}; use a consumer group with this cluster, or upgrade it")]
    ShareGroupsUnsupported {
        /// A broker of the cluster, the one asked.
        broker: String,
        /// The release it runs, as far as its features tell.
        release: String,
        /// The share group API it lacks, e.g. `DescribeShareGroupOffsets`.
        api: &'static str,
    },

    /// A record batch could not be encoded or decoded.
    #[error("record batch {0}")]
    Records(String),

    /// The client layer was called in a way it does not support (a kpipe bug if it comes
    /// from kpipe's own threads).
    #[error("client misuse: {0}")]
    Misuse(String),

    /// A properties file has a value kpipe cannot use.
    #[error("{file}:{line}: {key}: {reason}")]
    Properties {
        /// The file, as given.
        file: String,
        /// The line the entry starts on, from 1.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong and what would be valid.
        reason: String,
    },

    /// A configuration value is not usable.
    #[error("invalid config `{field}`: {reason}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// What is wrong and what would be valid.
        reason: String,
    },
}

fn hint(code: KafkaCode) -> &'static str {
    match code {
        KafkaCode::TopicAlreadyExists => "; use the existing topic or delete it first",
        KafkaCode::UnknownTopicOrPartition | KafkaCode::UnknownTopicId => {
            "; check the topic name and partition count"
        }
        KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge => {
            "; shrink the record or raise the topic's max.message.bytes"
        }
        KafkaCode::TopicAuthorizationFailed | KafkaCode::ClusterAuthorizationFailed => {
            "; grant this client the ACLs it needs"
        }
        _ => "",
    }
}

impl Error {
    /// Whether the same request may succeed if retried (after a metadata refresh or a reconnect).
    ///
    /// This is the one place that decides it: network failures, timeouts and the Kafka error
    /// codes the protocol marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::NoBrokerReachable { .. }
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::Closed { .. } => true,
            Error::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether this error means the client's view of leaders or the connection is stale,
    /// so metadata should be refreshed before retrying.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::Closed { .. }
            | Error::Protocol { .. } => true,
            Error::Broker { code, .. } => matches!(
                code,
                KafkaCode::NotLeaderOrFollower
                    | KafkaCode::LeaderNotAvailable
                    | KafkaCode::UnknownTopicOrPartition
                    | KafkaCode::UnknownTopicId
                    | KafkaCode::FencedLeaderEpoch
                    | KafkaCode::UnknownLeaderEpoch
                    | KafkaCode::NotCoordinator
                    | KafkaCode::BrokerNotAvailable
                    | KafkaCode::ReplicaNotAvailable
                    | KafkaCode::KafkaStorageError
                    | KafkaCode::InconsistentTopicId
            ),
            _ => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            Error::UnknownShareGroup { .. } => Some(KafkaCode::GroupIdNotFound),
            _ => None,
        }
    }

    /// Whether this is the broker's TOPIC_ALREADY_EXISTS (a create that lost a race, or ran
    /// twice), which a caller that only needs the topic to exist may ignore.
    ///
    /// ```no_run
    /// # fn main() -> kpipe::client::Result<()> {
    /// use std::time::Duration;
    /// use kpipe::client::{ClientConfig, Cluster, NewTopic};
    ///
    /// let mut cluster = Cluster::connect(ClientConfig::new(["localhost:9092"]))?;
    /// match cluster.create_topic(&NewTopic::new("events", 6, 1), Duration::from_secs(30)) {
    ///     Err(e) if e.is_already_exists() => {} // made before: fine
    ///     other => other?,
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_already_exists(&self) -> bool {
        self.kafka_code() == Some(KafkaCode::TopicAlreadyExists)
    }

    /// Turn a Kafka error code into `Ok(())` or an [`Error::Broker`] located at `at`.
    pub fn check(code: i16, at: impl FnOnce() -> Location, message: Option<&str>) -> Result<()> {
        match KafkaCode::try_from_code(code) {
            None => Ok(()),
            Some(code) => Err(Error::Broker {
                code,
                at: at(),
                message: message.filter(|m| !m.is_empty()).map(str::to_owned),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_say_where_and_what_to_do() {
        let err = Error::check(
            10,
            || Location {
                broker: "127.0.0.1:9092".into(),
                api: "Produce",
                topic: Some("t".into()),
                partition: Some(3),
            },
            Some("too big"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("MessageTooLarge"), "{text}");
        assert!(
            text.contains("Produce from 127.0.0.1:9092 for t-3"),
            "{text}"
        );
        assert!(text.contains("max.message.bytes"), "{text}");
        assert!(!err.is_retriable());
        assert!(Error::check(0, Location::default, None).is_ok());
    }

    #[test]
    fn retriable_and_stale_metadata_are_decided_in_one_place() {
        let leader = Error::Broker {
            code: KafkaCode::NotLeaderOrFollower,
            at: Location::default(),
            message: None,
        };
        assert!(leader.is_retriable());
        assert!(leader.invalidates_metadata());
        let exists = Error::Broker {
            code: KafkaCode::TopicAlreadyExists,
            at: Location::default(),
            message: None,
        };
        assert!(!exists.is_retriable());
        assert!(!exists.invalidates_metadata());
        assert_eq!(exists.kafka_code(), Some(KafkaCode::TopicAlreadyExists));
    }
}
