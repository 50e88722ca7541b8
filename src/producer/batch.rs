//! Encoding sealed batches: a batch's records into one v2 record batch carrying the
//! lane's stamp, a renumbered batch restamped, a batch too large for the broker split in
//! two.

use bytes::Bytes;

use crate::client::{self, BatchBuilder, Compression, ProducerStamp};

use super::books::Body;
use super::delivery::Envelope;
use super::lane::{Lane, Sealed, Stamp};

pub(super) fn producer_stamp(stamp: Stamp) -> ProducerStamp {
    match stamp.identity {
        Some(i) => ProducerStamp {
            id: i.id,
            epoch: i.epoch,
            base_sequence: stamp.base,
        },
        None => ProducerStamp::NONE,
    }
}

/// Encode `records` as one batch carrying `stamp`.
pub(super) fn encode(
    builder: &mut BatchBuilder,
    records: &[Envelope],
    codec: Compression,
    stamp: Stamp,
    transactional: bool,
) -> std::io::Result<Bytes> {
    builder.clear();
    builder.set_transactional(transactional);
    for env in records {
        let r = &env.record;
        builder.push(
            r.timestamp.unwrap_or_default(),
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    let mut buf = Vec::with_capacity(builder.size());
    builder.finish_as(codec, producer_stamp(stamp), &mut buf)?;
    Ok(Bytes::from(buf))
}

/// Make a batch's encoding carry the stamp the lane gave it (after a renumbering).
pub(super) fn stamp_body(b: &mut Sealed<Body>) -> Result<(), String> {
    if b.body.stamp == b.stamp {
        return Ok(());
    }
    let mut buf = b.body.encoded.to_vec();
    client::restamp(&mut buf, producer_stamp(b.stamp))?;
    b.body.encoded = Bytes::from(buf);
    b.body.stamp = b.stamp;
    Ok(())
}

/// Replace a batch the broker refused as too large with two halves covering its
/// sequences. They are encoded unstamped; the send renumbers them to what the lane says.
pub(super) fn split_batch(lane: &mut Lane<Body>, id: u64, codec: Compression, transactional: bool) {
    let Some(i) = lane.batches().position(|b| b.id == id && !b.in_flight()) else {
        return;
    };
    let mut first = std::mem::take(&mut lane.get_mut(i).body.records);
    let second = first.split_off(first.len() / 2);
    let mut builder = BatchBuilder::default();
    let mut parts = Vec::new();
    let unstamped = Stamp {
        identity: None,
        base: super::lane::NO_SEQUENCE,
    };
    for records in [first, second] {
        let bytes = records.iter().map(|e| e.size as u64).sum();
        let encoded = match encode(&mut builder, &records, codec, unstamped, transactional) {
            Ok(e) => e,
            Err(e) => {
                log::error!("kpipe bug: cannot re-encode half a batch: {e}");
                return;
            }
        };
        parts.push((
            records.len() as i32,
            Body {
                records,
                bytes,
                encoded,
                stamp: unstamped,
            },
        ));
    }
    if let Err(parts) = lane.split(id, parts) {
        // Cannot happen (checked above); keep the records whole rather than lose them.
        log::error!("kpipe bug: a batch could not be split");
        let body = &mut lane.get_mut(i).body;
        body.records = parts.into_iter().flat_map(|(_, b)| b.records).collect();
    }
}
