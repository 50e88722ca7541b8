//! API version negotiation: what the broker advertises, what kpipe can encode, and the floors
//! below which Kafka 4 no longer answers (KIP-896), whatever a broker advertises.

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

/// The lowest version of an API that kpipe will ever send.
///
/// Kafka 4.0 removed old versions (KIP-896) yet 4.0.0 still advertises Produce v0-2 and
/// rejects them; 4.0.0 also rejected JoinGroup v0-1. Every floor here is also supported by
/// Kafka 3.x, so one table serves both.
pub fn floor(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets => 1,
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
        _ => 0,
    }
}

/// A short human name for an API key, e.g. `"Produce"`.
pub fn api_name(key: ApiKey) -> &'static str {
    // ApiKey's Debug output is the variant name; keep a static copy for error messages.
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
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
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        _ => "other API",
    }
}

/// The range kpipe can send for an API: the crate's encodable range, raised to the floor.
pub fn client_range(key: ApiKey, encodable: VersionRange) -> VersionRange {
    VersionRange {
        min: encodable.min.max(floor(key)),
        max: encodable.max,
    }
}

/// The version ranges one broker advertised in ApiVersions.
#[derive(Debug, Clone, Default)]
pub struct BrokerVersions {
    ranges: Vec<(i16, VersionRange)>,
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
        BrokerVersions { ranges }
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
    fn missing_api_is_reported_as_none() {
        let b = broker(&[]);
        let (_, t) = b
            .choose(ApiKey::Metadata, VersionRange { min: 4, max: 13 })
            .unwrap_err();
        assert_eq!(t, "none");
    }
}
