//! Any bytes fed to the response decoders and the batch decoder give a value or an error:
//! never a panic, an abort, or a huge allocation.
//!
//! A counting allocator records the largest single allocation while decoding; inputs are at
//! most a few KiB, so anything near the limit means a size was taken off the wire on trust.

// The only unsafe code in the project: a counting wrapper around the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message};
use kpipe::client::{Compression, Header};
use kpipe::unstable::{decode_batches, encode_batch, Record};
use proptest::prelude::*;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Far above what a few KiB of input can legitimately need, far below what a count read
/// off the wire on trust asks for.
const LIMIT: usize = 16 << 20;

fn each_version<T: Decodable + Message>(input: &[u8]) {
    for v in T::VERSIONS.min..=T::VERSIONS.max {
        let mut b = Bytes::copy_from_slice(input);
        let _ = T::decode(&mut b, v);
    }
}

fn decode_everything(input: &[u8]) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    each_version::<ApiVersionsResponse>(input);
    each_version::<MetadataResponse>(input);
    each_version::<ProduceResponse>(input);
    each_version::<FetchResponse>(input);
    each_version::<ListOffsetsResponse>(input);
    each_version::<CreateTopicsResponse>(input);
    each_version::<DeleteTopicsResponse>(input);
    each_version::<CreatePartitionsResponse>(input);
    each_version::<FindCoordinatorResponse>(input);
    each_version::<JoinGroupResponse>(input);
    each_version::<SyncGroupResponse>(input);
    each_version::<HeartbeatResponse>(input);
    each_version::<LeaveGroupResponse>(input);
    each_version::<OffsetCommitResponse>(input);
    each_version::<OffsetFetchResponse>(input);
    let mut out = Vec::new();
    let _ = decode_batches(&Bytes::copy_from_slice(input), 0, 1 << 20, &mut out);
    LARGEST.load(Ordering::Relaxed)
}

/// Valid encodings to mutate, so that fuzzing reaches past the first fields.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut md = MetadataResponse::default();
    let mut t = metadata_response::MetadataResponseTopic::default();
    t.name = Some(TopicName("events".into()));
    t.partitions = vec![Default::default(); 3];
    md.topics.push(t);
    md.brokers.push(Default::default());
    for v in [4, 9, 12] {
        let mut b = BytesMut::new();
        md.encode(&mut b, v).unwrap();
        seeds.push(b.to_vec());
    }
    let mut fr = FetchResponse::default();
    let mut ft = fetch_response::FetchableTopicResponse::default();
    let mut p = fetch_response::PartitionData::default();
    let records = vec![
        Record {
            key: Some("k".into()),
            value: Some("v".into()),
            headers: vec![Header::new("h", "x")],
            timestamp: 5,
        };
        4
    ];
    p.records = Some(encode_batch(&records, Compression::None).unwrap());
    ft.partitions.push(p);
    fr.responses.push(ft);
    for v in [4, 11, 12, 16] {
        let mut b = BytesMut::new();
        fr.encode(&mut b, v).unwrap();
        seeds.push(b.to_vec());
    }
    for codec in Compression::ALL {
        seeds.push(encode_batch(&records, codec).unwrap().to_vec());
    }
    seeds
}

#[test]
fn hostile_counts_do_not_allocate() {
    // An ApiVersions v0 body: error 0, then an array count of 2^31-1 with nothing behind it.
    let largest = decode_everything(&[0, 0, 0x7f, 0xff, 0xff, 0xff]);
    assert!(largest < LIMIT, "largest allocation {largest} bytes");
    // The same as a compact array (flexible versions): varint 0xffffffff.
    let largest = decode_everything(&[0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(largest < LIMIT, "largest allocation {largest} bytes");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let largest = decode_everything(&input);
        prop_assert!(largest < LIMIT, "largest allocation {} bytes", largest);
    }

    #[test]
    fn mutated_valid_frames(
        seed in 0usize..64,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let seeds = seeds();
        let mut input = seeds[seed % seeds.len()].clone();
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        let keep = cut.index(input.len() + 1).max(input.len() / 2);
        input.truncate(keep);
        let largest = decode_everything(&input);
        prop_assert!(largest < LIMIT, "largest allocation {} bytes", largest);
    }
}
