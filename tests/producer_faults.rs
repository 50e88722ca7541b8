//! Producer faults a real broker will not produce on demand: the broker vanishing
//! mid-stream. A tiny fake broker on loopback answers just enough (ApiVersions, Metadata,
//! InitProducerId, Produce) and then dies; the producer must retry, then fail each record
//! definitely at its delivery timeout, with memory bounded by the queue.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::fake::{FakeBroker, Reply, Request};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kpipe::producer::{DeliveryError, SendError};
use kpipe::{Producer, ProducerConfig, ProducerRecord};

/// A fake broker (node 0) leading the one partition of topic `t`: it answers ApiVersions,
/// Metadata, InitProducerId and Produce, until the test kills it.
fn start() -> FakeBroker {
    let bound = FakeBroker::builder()
        .versions(&[
            (ApiKey::ApiVersions, 0, 3),
            (ApiKey::Metadata, 4, 8),
            (ApiKey::Produce, 3, 8),
            (ApiKey::InitProducerId, 0, 4),
        ])
        .bind();
    let port = bound.port();
    let offsets = AtomicI64::new(0);
    bound.serve(move |req| answer(req, port, &offsets))
}

fn answer(req: &Request, port: u16, offsets: &AtomicI64) -> Reply {
    if req.is::<MetadataRequest>() {
        let mut resp = MetadataResponse::default();
        let mut b = MetadataResponseBroker::default();
        b.node_id = 0.into();
        b.host = StrBytes::from_static_str("127.0.0.1");
        b.port = port as i32;
        resp.brokers.push(b);
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_static_str("t")));
        let mut p = MetadataResponsePartition::default();
        p.leader_id = 0.into();
        t.partitions.push(p);
        resp.topics.push(t);
        req.respond::<MetadataRequest>(&resp)
    } else if req.is::<InitProducerIdRequest>() {
        // The producer is idempotent by default: it asks for an id first.
        let mut resp = InitProducerIdResponse::default();
        resp.producer_id = ProducerId(1000);
        resp.producer_epoch = 0;
        req.respond::<InitProducerIdRequest>(&resp)
    } else if req.is::<ProduceRequest>() {
        let produce: ProduceRequest = req.decode().unwrap();
        let mut resp = ProduceResponse::default();
        for t in &produce.topic_data {
            let mut tr = TopicProduceResponse::default();
            tr.name = t.name.clone();
            for p in &t.partition_data {
                let mut records = p.records.clone().unwrap();
                assert!(
                    RecordBatchDecoder::decode_all(&mut records).is_ok(),
                    "the producer sent a valid batch"
                );
                let mut pr = PartitionProduceResponse::default();
                pr.index = p.index;
                pr.base_offset = offsets.fetch_add(1, Ordering::SeqCst);
                tr.partition_responses.push(pr);
            }
            resp.responses.push(tr);
        }
        req.respond::<ProduceRequest>(&resp)
    } else {
        Reply::Default
    }
}

#[test]
fn broker_lost_mid_stream_fails_records_at_the_delivery_timeout() {
    let mut broker = start();
    let mut config = ProducerConfig::new(&broker.addr).topic("t");
    config.client.connection.request_timeout = Duration::from_millis(500);
    config.client.connection.connect_timeout = Duration::from_millis(500);
    config.delivery_timeout = Duration::from_secs(2);
    config.linger = Duration::ZERO;
    config.queue_capacity = 100;
    config.batch_bytes = 1024;
    config.buffer_bytes = 4096;
    config.write_timeout = Duration::from_millis(100);
    config.client.retry_backoff = Duration::from_millis(20);
    config.client.retry_backoff_max = Duration::from_millis(100);
    let producer = Producer::new(config).unwrap();

    let before = producer
        .send_and_wait(ProducerRecord::new("before"))
        .unwrap();
    assert_eq!((&*before.topic, before.partition), ("t", 0));

    broker.kill();
    let started = Instant::now();
    let receipts: Vec<_> = (0..20)
        .map(|i| {
            producer
                .send_tracked(ProducerRecord::new(format!("after-{i}")))
                .unwrap()
        })
        .collect();
    // The writer holds at most the queue's capacity: a sender is pushed back, not buffered
    // without bound.
    let mut refused = 0;
    for _ in 0..300 {
        match producer.send(ProducerRecord::new("flood")) {
            Ok(()) => {}
            Err(SendError::QueueFull(_)) => {
                refused += 1;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 1, "a full queue pushes back");
    for r in receipts {
        match r.wait().unwrap() {
            Err(DeliveryError::TimedOut { after, last_error }) => {
                assert_eq!(after, Duration::from_secs(2));
                assert!(last_error.is_some(), "the timeout says what went wrong");
            }
            other => panic!("expected a delivery timeout, got {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let summary = producer.close(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.delivered, 1, "{summary:?}");
    assert_eq!(
        summary.failed + summary.not_attempted,
        summary.accepted - 1,
        "{summary:?}"
    );
    assert!(
        summary.failures.contains_key("delivery timeout"),
        "{summary:?}"
    );
    assert!(producer.stats().retries > 0 || producer.stats().errors.values().sum::<u64>() > 0);
    broker.assert_sane();
}
