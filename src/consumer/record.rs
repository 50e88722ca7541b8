//! The record a consumer hands to its caller or handler.

use std::sync::Arc;

use bytes::Bytes;

use crate::client::Header;

/// A record handed to the caller or the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// How many times a share group delivered the record, this time included (2 and more:
    /// it was released, or its acquisition lock ran out, before); `None` in a consumer
    /// group, which has no such count.
    pub delivery_count: Option<u16>,
}
