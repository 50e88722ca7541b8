//! The record batch codec without a broker: encode and decode, per record.
//!
//! Setup printed at start; run with `cargo bench --bench codec`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpipe::client::{Compression, Header};
use kpipe::unstable::{decode_batches, BatchBuilder};

mod common;

const RECORDS: usize = 1_000;

fn payload(i: usize, size: usize) -> Vec<u8> {
    common::telemetry_json(i as u64, size, 100)
}

fn build(size: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let keys = (0..RECORDS)
        .map(|i| format!("device-{}", i % 100).into_bytes())
        .collect();
    let values = (0..RECORDS).map(|i| payload(i, size)).collect();
    (keys, values)
}

fn encode(c: &mut Criterion) {
    println!(
        "setup: kpipe {} codec, {RECORDS} records per batch, 10-byte keys, one 3-byte header, \
         rustc release profile with debug info, {} CPUs",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let headers = [Header::new("src", "gen")];
    let mut group = c.benchmark_group("encode");
    for size in [100usize, 1024] {
        let (keys, values) = build(size);
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            group.throughput(Throughput::Elements(RECORDS as u64));
            group.bench_with_input(BenchmarkId::new(codec.name(), size), &size, |b, _| {
                let mut builder = BatchBuilder::with_capacity(RECORDS * (size + 32));
                let mut out = Vec::with_capacity(RECORDS * (size + 32));
                b.iter(|| {
                    builder.clear();
                    out.clear();
                    for (k, v) in keys.iter().zip(&values) {
                        builder.push(1_700_000_000_000, Some(k), Some(v), &headers);
                    }
                    builder.finish(codec, &mut out).unwrap();
                    out.len()
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let headers = [Header::new("src", "gen")];
    let mut group = c.benchmark_group("decode");
    for size in [100usize, 1024] {
        let (keys, values) = build(size);
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut builder = BatchBuilder::default();
            for (k, v) in keys.iter().zip(&values) {
                builder.push(1_700_000_000_000, Some(k), Some(v), &headers);
            }
            let mut data = Vec::new();
            builder.finish(codec, &mut data).unwrap();
            let data = Bytes::from(data);
            group.throughput(Throughput::Elements(RECORDS as u64));
            group.bench_with_input(BenchmarkId::new(codec.name(), size), &size, |b, _| {
                let mut out = Vec::with_capacity(RECORDS);
                b.iter(|| {
                    out.clear();
                    decode_batches(&data, 0, 1 << 30, &mut out).unwrap();
                    out.len()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
