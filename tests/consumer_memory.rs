//! The consumer expands compressed batches one at a time, as its handler reaches them, so
//! a fetch of very compressible data does not hold the whole response expanded in memory.
//!
//! A counting allocator tracks the bytes live in this process; the test produces about
//! 100 MiB (uncompressed) of lz4 records that compress to well under 1 MiB, so one fetch
//! carries all of them, and checks the consumer's peak stays far below that.

// A counting wrapper around the system allocator, as in tests/decode_fuzz.rs.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kpipe::client::Compression;
use kpipe::{ConsumedRecord, ConsumerPool, Producer, ProducerRecord};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const RECORDS: u64 = 100_000;
const VALUE: usize = 1024;

#[test]
fn a_fetch_of_compressible_data_is_expanded_one_batch_at_a_time() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "memory", 1);
    let mut c = common::producer_config(&topic);
    c.compression = Compression::Lz4;
    c.batch_bytes = 1 << 20;
    let producer = Producer::new(c).unwrap();
    let value = bytes::Bytes::from(vec![b'A'; VALUE]);
    for _ in 0..RECORDS {
        producer.send(ProducerRecord::new(value.clone())).unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, RECORDS, "{summary:?}");
    drop(value);

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let count = Arc::new(AtomicU64::new(0));
    let k = count.clone();
    let pool = ConsumerPool::start_cloned(
        common::consumer_config(&common::unique_topic("memory-group"), &topic, 1),
        move |r: &ConsumedRecord| {
            assert_eq!(r.value.as_ref().map(|v| v.len()), Some(VALUE));
            k.fetch_add(1, Ordering::Relaxed);
            Ok::<(), String>(())
        },
    )
    .unwrap();
    common::await_condition(Duration::from_secs(60), "every record consumed", || {
        count.load(Ordering::Relaxed) >= RECORDS
    });
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    pool.close(Duration::from_secs(30)).expect("close");
    assert_eq!(count.load(Ordering::Relaxed), RECORDS);

    let expanded = RECORDS as usize * VALUE;
    // Decoding the whole response at once would hold all of it: about 100 MiB. One batch
    // is at most 1 MiB expanded; allow for the response, a prefetched one and buffers.
    assert!(
        peak < 24 << 20,
        "the consumer's peak was {} MiB above the baseline for {} MiB of expanded records",
        peak >> 20,
        expanded >> 20
    );
}
