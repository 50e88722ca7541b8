//! Producer faults a real broker will not produce on demand: the broker vanishing
//! mid-stream. A tiny fake broker on loopback answers just enough (ApiVersions, Metadata,
//! InitProducerId, Produce) and then dies; the producer must retry, then fail each record
//! definitely at its delivery timeout, with memory bounded by the queue.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kpipe::producer::{DeliveryError, SendError};
use kpipe::{Producer, ProducerConfig, ProducerRecord};

struct FakeBroker {
    port: u16,
    dead: Arc<AtomicBool>,
}

impl FakeBroker {
    fn start() -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let dead = Arc::new(AtomicBool::new(false));
        let offsets = Arc::new(AtomicI64::new(0));
        let d = dead.clone();
        thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (d, offsets) = (d.clone(), offsets.clone());
                        thread::spawn(move || serve(sock, port, &d, &offsets));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener: new connections are refused from now on.
        });
        FakeBroker { port, dead }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }
}

fn respond<R: Request>(
    sock: &mut TcpStream,
    correlation_id: i32,
    version: i16,
    body: &R::Response,
) {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, R::Response::header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    let _ = sock.write_all(&frame);
}

fn serve(mut sock: TcpStream, port: u16, dead: &AtomicBool, offsets: &AtomicI64) {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    loop {
        if dead.load(Ordering::SeqCst) {
            return; // closes the socket mid-stream
        }
        let mut size = [0u8; 4];
        match sock.read_exact(&mut size) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        if sock.read_exact(&mut frame).is_err() {
            return;
        }
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        if dead.load(Ordering::SeqCst) {
            return; // the request is swallowed: the client sees the connection die
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
        let mut body = Bytes::from(frame);
        match key {
            18 => {
                let mut resp = ApiVersionsResponse::default();
                for (k, min, max) in [(18, 0, 3), (3, 4, 8), (0, 3, 8), (22, 0, 4)] {
                    let mut v = ApiVersion::default();
                    v.api_key = k;
                    v.min_version = min;
                    v.max_version = max;
                    resp.api_keys.push(v);
                }
                respond::<ApiVersionsRequest>(&mut sock, id, version.min(3), &resp);
            }
            3 => {
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
                respond::<MetadataRequest>(&mut sock, id, version, &resp);
            }
            22 => {
                // The producer is idempotent by default: it asks for an id first.
                let mut resp = InitProducerIdResponse::default();
                resp.producer_id = ProducerId(1000);
                resp.producer_epoch = 0;
                respond::<InitProducerIdRequest>(&mut sock, id, version, &resp);
            }
            0 => {
                let _ = RequestHeader::decode(&mut body, ProduceRequest::header_version(version))
                    .unwrap();
                let req = ProduceRequest::decode(&mut body, version).unwrap();
                let mut resp = ProduceResponse::default();
                for t in &req.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    tr.name = t.name.clone();
                    for p in &t.partition_data {
                        let n = kpipe::unstable::decode_batches(
                            p.records.as_ref().unwrap(),
                            0,
                            1 << 30,
                            &mut Vec::new(),
                        )
                        .map(|_| ())
                        .ok();
                        assert!(n.is_some(), "the producer sent a valid batch");
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = p.index;
                        pr.base_offset = offsets.fetch_add(1, Ordering::SeqCst);
                        tr.partition_responses.push(pr);
                    }
                    resp.responses.push(tr);
                }
                respond::<ProduceRequest>(&mut sock, id, version, &resp);
            }
            _ => return,
        }
    }
}

#[test]
fn broker_lost_mid_stream_fails_records_at_the_delivery_timeout() {
    let broker = FakeBroker::start();
    let mut config = ProducerConfig::new(&format!("127.0.0.1:{}", broker.port)).topic("t");
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
}
