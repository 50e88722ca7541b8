//! API version negotiation: what the broker advertises, what kpipe can encode, and the floors
//! below which Kafka 4 no longer answers (KIP-896), whatever a broker advertises.

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

/// The lowest version of an API that kpipe will ever send.
///
/// Kafka 4.0 removed old versions (KIP-896) yet 4.0.0 still advertises Produce v0-2 and
/// rejects them; 4.0.0 also rejected JoinGroup v0-1. Every floor here is also supported by
/// Kafka 3.x, so one table serves both.
pub(crate) fn floor(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets => 1,
        // v3 is the first a consumer may send (replica id -1), as the Java consumer does.
        ApiKey::OffsetForLeaderEpoch => 3,
        ApiKey::Metadata => 4,
        ApiKey::OffsetCommit => 2,
        ApiKey::OffsetFetch => 1,
        ApiKey::FindCoordinator => 1,
        ApiKey::JoinGroup => 2,
        ApiKey::SyncGroup => 1,
        ApiKey::Heartbeat => 1,
        ApiKey::LeaveGroup => 1,
        ApiKey::CreateTopics => 2,
        ApiKey::DeleteTopics => 1,
        ApiKey::CreatePartitions => 0,
        // v0 carried raw tokens outside Kafka framing; v1 wraps them in SaslAuthenticate.
        ApiKey::SaslHandshake => 1,
        // v0 was the preview of Kafka 3.7-3.9 (the broker chose member ids); v1 is the
        // generally available protocol of Kafka 4.0, where the member makes its own id.
        ApiKey::ConsumerGroupHeartbeat => 1,
        // v0 of the share APIs was Kafka 4.0's early access, removed in 4.1 (KIP-932).
        ApiKey::ShareGroupHeartbeat | ApiKey::ShareFetch | ApiKey::ShareAcknowledge => 1,
        _ => 0,
    }
}

/// A short human name for an API key, e.g. `"Produce"`.
pub(crate) fn api_name(key: ApiKey) -> &'static str {
    // ApiKey's Debug output is the variant name; keep a static copy for error messages.
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ShareGroupHeartbeat => "ShareGroupHeartbeat",
        ApiKey::ShareFetch => "ShareFetch",
        ApiKey::ShareAcknowledge => "ShareAcknowledge",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::ShareGroupDescribe => "ShareGroupDescribe",
        ApiKey::DescribeShareGroupOffsets => "DescribeShareGroupOffsets",
        _ => "other API",
    }
}

/// The range kpipe can send for an API: the crate's encodable range, raised to the floor.
pub(crate) fn client_range(key: ApiKey, encodable: VersionRange) -> VersionRange {
    VersionRange {
        min: encodable.min.max(floor(key)),
        max: encodable.max,
    }
}

/// The version ranges one broker advertised in ApiVersions, and its finalized features.
#[derive(Debug, Clone, Default)]
pub struct BrokerVersions {
    ranges: Vec<(i16, VersionRange)>,
    /// Finalized feature levels (ApiVersions v3+), e.g. `metadata.version`.
    features: Vec<(String, i16)>,
}

impl BrokerVersions {
    /// Build from an ApiVersions response.
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        let ranges = resp
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        let features = resp
            .finalized_features
            .iter()
            .map(|f| (f.name.to_string(), f.max_version_level))
            .collect();
        BrokerVersions { ranges, features }
    }

    /// The finalized level of feature `name` (`metadata.version`, `group.version`, ...), if
    /// the broker reported it (Kafka 3.x KRaft brokers and 4.x do).
    pub fn feature(&self, name: &str) -> Option<i16> {
        self.features
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, level)| *level)
    }

    /// The Kafka release the broker's cluster runs at, as far as its `metadata.version`
    /// tells, for error messages: `"Kafka 3.9 (metadata.version 21)"`.
    pub fn release(&self) -> Option<String> {
        self.feature("metadata.version")
            .map(release_of_metadata_version)
    }

    /// The range the broker advertised for `key`, if any.
    pub fn range(&self, key: i16) -> Option<VersionRange> {
        self.ranges
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, range)| *range)
    }

    /// The highest version both sides support, or `Err((ours, theirs))` describing the gap.
    pub fn choose(&self, key: ApiKey, ours: VersionRange) -> Result<i16, (String, String)> {
        let theirs = self.range(key as i16);
        match theirs.map(|t| t.intersect(&ours)) {
            Some(common) if !common.is_empty() => Ok(common.max),
            _ => Err((
                ours.to_string(),
                theirs.map_or_else(|| "none".to_owned(), |t| t.to_string()),
            )),
        }
    }
}

/// The Kafka release whose `metadata.version` feature level is `level` (Kafka's
/// `MetadataVersion`: 3.9-IV0 is 21, 4.0-IV0..IV3 are 22-25, 4.4-IV2 is 33), as
/// `"Kafka 3.9 (metadata.version 21)"`. The level says what the cluster runs at, which
/// after an upgrade may be older than the brokers' binaries.
pub(crate) fn release_of_metadata_version(level: i16) -> String {
    // The first level of each release, in order (from Kafka 4.4's MetadataVersion).
    const RELEASES: &[(i16, &str)] = &[
        (1, "3.0"),
        (2, "3.1"),
        (3, "3.2"),
        (4, "3.3"),
        (8, "3.4"),
        (9, "3.5"),
        (12, "3.6"),
        (15, "3.7"),
        (20, "3.8"),
        (21, "3.9"),
        (22, "4.0"),
        (26, "4.1"),
        (28, "4.2"),
        (30, "4.3"),
        (31, "4.4"),
        (34, "4.5"),
    ];
    const NEWEST_KNOWN: i16 = 34;
    match RELEASES.iter().rev().find(|(first, _)| level >= *first) {
        Some(_) if level > NEWEST_KNOWN => {
            format!("Kafka 4.5 or newer (metadata.version {level})")
        }
        Some((_, release)) => format!("Kafka {release} (metadata.version {level})"),
        None => format!("metadata.version {level}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::connection::tests::api_versions;

    fn broker(ranges: &[(ApiKey, i16, i16)]) -> BrokerVersions {
        BrokerVersions::from_response(&api_versions(ranges))
    }

    #[test]
    fn picks_the_highest_common_version() {
        let b = broker(&[(ApiKey::Fetch, 4, 17)]);
        let ours = client_range(ApiKey::Fetch, VersionRange { min: 0, max: 18 });
        assert_eq!(b.choose(ApiKey::Fetch, ours), Ok(17));
        let b = broker(&[(ApiKey::Fetch, 4, 20)]);
        assert_eq!(b.choose(ApiKey::Fetch, ours), Ok(18));
    }

    #[test]
    fn never_goes_below_the_floor_even_if_advertised() {
        // Kafka 4.0.0 advertises Produce v0-2 but rejects them.
        let b = broker(&[(ApiKey::Produce, 0, 2)]);
        let ours = client_range(ApiKey::Produce, VersionRange { min: 0, max: 13 });
        assert_eq!(ours.min, 3);
        let (o, t) = b.choose(ApiKey::Produce, ours).unwrap_err();
        assert_eq!(o, "3..13");
        assert_eq!(t, "0..2");
    }

    #[test]
    fn metadata_versions_name_their_release() {
        assert_eq!(
            release_of_metadata_version(21),
            "Kafka 3.9 (metadata.version 21)"
        );
        assert_eq!(
            release_of_metadata_version(25),
            "Kafka 4.0 (metadata.version 25)"
        );
        assert_eq!(
            release_of_metadata_version(33),
            "Kafka 4.4 (metadata.version 33)"
        );
        assert_eq!(
            release_of_metadata_version(7),
            "Kafka 3.3 (metadata.version 7)"
        );
        assert!(release_of_metadata_version(40).contains("4.5 or newer"));
        assert_eq!(release_of_metadata_version(0), "metadata.version 0");
    }

    #[test]
    fn missing_api_is_reported_as_none() {
        let b = broker(&[]);
        let (_, t) = b
            .choose(ApiKey::Metadata, VersionRange { min: 4, max: 13 })
            .unwrap_err();
        assert_eq!(t, "none");
    }
}
