//! Idempotent producer faults (KIP-98) that a real broker cannot produce on demand.
//!
//! A real broker loses a response after the write, forgets a producer's state, or stalls
//! with a batch in hand only by accident (a crash at the wrong moment, retention, an unclean
//! election). So the tests here run against a tiny fake broker on 127.0.0.1 that *models the
//! broker's idempotence check* for topic `t`: per partition it keeps the producer id and epoch
//! it knows, the last five batches written (first and last sequence, base offset) and the log.
//! It appends a batch whose sequence follows the last one written, or one that starts at 0
//! under a higher epoch or from a producer it does not know; it answers a batch equal to one of
//! the last five with that batch's original offset; an older epoch gets
//! INVALID_PRODUCER_EPOCH, any other gap OUT_OF_ORDER_SEQUENCE_NUMBER, and a non-zero sequence
//! from a producer it does not know UNKNOWN_PRODUCER_ID. On top of that, each test scripts
//! faults through the fake's shared state: an error code instead of processing, a response
//! lost after the write, a stall until the client gives up, the producer state forgotten, a
//! size limit. Each test checks the producer's reports and the fake's log alike: every record
//! delivered is in the log exactly once, in the order sent, and nothing else is.
//!
//! `RUST_LOG=kpipe=debug,fake=debug` traces what the fake did with each batch.

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
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
use kpipe::client::KafkaCode;
use kpipe::producer::{Delivery, DeliveryError, ProducerIdentity, SendError};
use kpipe::unstable::decode_batches;
use kpipe::{Producer, ProducerConfig, ProducerRecord};

const MESSAGE_TOO_LARGE: i16 = 10;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const PRODUCER_FENCED: i16 = 90;

/// The producer id the fake hands out.
const PRODUCER_ID: i64 = 1000;

// ---- The fake broker ----

/// What the fake does with a produce request instead of its ordinary work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer this error code for the batch's partition without looking at the batch.
    Answer(i16),
    /// Process the request, then drop the connection instead of answering.
    LoseResponse,
    /// Process the request and answer this code instead of the outcome (a broker timing out
    /// on its replicas after the append, say).
    WriteThenAnswer(i16),
    /// Process this request and every later one on the connection, but answer none: the
    /// responses are lost until the client gives up and closes the connection.
    WriteThenStall,
    /// Neither process nor answer it (nor anything after it on the connection): hold the
    /// connection until the client gives up and closes it.
    Stall,
    /// Forget every producer's state, then process the request: from now on a non-zero
    /// sequence from a producer the fake does not know is answered with this code.
    Forget(i16),
}

/// One batch as it reached the fake (the v2 header's producer fields and the records).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    partition: i32,
    /// 1 for the first produce request the fake took up for this partition, and so on.
    nth: usize,
    producer_id: i64,
    epoch: i16,
    base_seq: i32,
    values: Vec<String>,
    bytes: usize,
}

impl Batch {
    fn last_seq(&self) -> i32 {
        self.base_seq + self.values.len() as i32 - 1
    }

    /// For the trace (`RUST_LOG=fake=debug`).
    fn brief(&self) -> String {
        let (first, last) = (&self.values[0], &self.values[self.values.len() - 1]);
        let (first, last) = (&first[..first.len().min(3)], &last[..last.len().min(3)]);
        format!(
            "epoch {} seq {}..={} ({} records {first}..{last}, {} bytes)",
            self.epoch,
            self.base_seq,
            self.last_seq(),
            self.values.len(),
            self.bytes
        )
    }
}

type Rule = Box<dyn FnMut(&Batch) -> Option<Fault> + Send>;

#[derive(Default)]
struct Partition {
    /// The producer id and epoch this partition knows.
    producer: Option<(i64, i16)>,
    /// The last five batches written: first sequence, last sequence, base offset.
    recent: VecDeque<(i32, i32, i64)>,
    log: Vec<String>,
    /// The batches appended, in log order.
    written: Vec<Batch>,
    /// Produce requests taken up.
    taken: usize,
    /// The most produce requests for this partition read from one connection and not yet
    /// answered.
    max_outstanding: usize,
}

struct State {
    parts: Vec<Partition>,
    /// Every batch taken up, with the code the fake decided on (`None`: stalled).
    seen: Vec<(Batch, Option<i16>)>,
    rules: Vec<Rule>,
    /// Batches larger than this are refused with MESSAGE_TOO_LARGE.
    limit: usize,
    /// The answer to a non-zero sequence from a producer the partition does not know.
    unknown_producer: i16,
    /// How long each produce request waits before it is taken up.
    delay: Duration,
    /// Resends recognised as duplicates of a batch written.
    duplicates: usize,
    /// Batches accepted on a connection that answered nothing any more (WriteThenStall).
    unanswered: usize,
    init_producer_ids: usize,
    /// InitProducerId requests still to be refused with COORDINATOR_NOT_AVAILABLE.
    init_refusals: usize,
    /// Metadata requests still to be answered with UNKNOWN_TOPIC_OR_PARTITION for `t` (as a
    /// cluster coming back may answer for a moment).
    unknown_topic: usize,
    /// Metadata requests answered.
    metadata_requests: usize,
    /// The epoch the first producer id comes with (later ones come with 0).
    first_epoch: Option<i16>,
    /// Fresh producer ids handed out: the nth is PRODUCER_ID + n - 1.
    ids_given: i64,
    /// What the fake found wrong with the requests (a test fails if any).
    problems: Vec<String>,
}

impl State {
    /// The broker's idempotence check, then the append: the code and base offset to answer.
    fn append(&mut self, b: &Batch) -> (i16, i64) {
        if b.bytes > self.limit {
            return (MESSAGE_TOO_LARGE, -1);
        }
        let unknown = self.unknown_producer;
        let p = &mut self.parts[b.partition as usize];
        let last = b.last_seq();
        if b.producer_id >= 0 {
            match p.producer {
                Some((id, epoch)) if id == b.producer_id && b.epoch < epoch => {
                    return (INVALID_PRODUCER_EPOCH, -1)
                }
                Some((id, epoch)) if id == b.producer_id && b.epoch == epoch => {
                    if let Some(&(_, _, offset)) =
                        p.recent.iter().find(|r| (r.0, r.1) == (b.base_seq, last))
                    {
                        self.duplicates += 1;
                        return (0, offset);
                    }
                    let next = p.recent.back().map_or(0, |r| r.1 + 1);
                    if b.base_seq != next {
                        return (OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
                    }
                }
                // A higher epoch starts at 0.
                Some((id, _)) if id == b.producer_id => {
                    if b.base_seq != 0 {
                        return (OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
                    }
                    p.recent.clear();
                }
                // A producer this partition does not know.
                _ => {
                    if b.base_seq != 0 {
                        return (unknown, -1);
                    }
                    p.recent.clear();
                }
            }
            p.producer = Some((b.producer_id, b.epoch));
        }
        let offset = p.log.len() as i64;
        p.recent.push_back((b.base_seq, last, offset));
        if p.recent.len() > 5 {
            p.recent.pop_front();
        }
        p.log.extend(b.values.iter().cloned());
        p.written.push(b.clone());
        (0, offset)
    }

    /// Forget every producer's state; a non-zero sequence from a producer the fake does not
    /// know is answered with `answer` from then on.
    fn forget(&mut self, answer: i16) {
        self.unknown_producer = answer;
        for p in &mut self.parts {
            p.producer = None;
            p.recent.clear();
        }
    }

    /// Take up the batches of one produce request: the answer for each partition
    /// (partition, code, base offset), and what to do with the response.
    fn produce(&mut self, batches: &mut [Batch]) -> (Vec<(i32, i16, i64)>, Option<Fault>) {
        let mut faults = Vec::new();
        for b in batches.iter_mut() {
            let p = &mut self.parts[b.partition as usize];
            p.taken += 1;
            b.nth = p.taken;
            faults.push(self.rules.iter_mut().find_map(|rule| rule(b)));
        }
        let then = [Fault::Stall, Fault::WriteThenStall, Fault::LoseResponse]
            .into_iter()
            .find(|f| faults.contains(&Some(*f)));
        if then == Some(Fault::Stall) {
            for b in batches.iter() {
                log::debug!(target: "fake", "{}-{} stalled: {}", b.partition, b.nth, b.brief());
            }
            self.seen.extend(batches.iter().map(|b| (b.clone(), None)));
            return (Vec::new(), Some(Fault::Stall));
        }
        let mut answers = Vec::new();
        for (b, fault) in batches.iter().zip(&faults) {
            let (code, offset) = match fault {
                Some(Fault::Answer(code)) => (*code, -1),
                Some(Fault::WriteThenAnswer(code)) => match self.append(b) {
                    (0, _) => (*code, -1),
                    refused => refused,
                },
                Some(Fault::Forget(code)) => {
                    self.forget(*code);
                    self.append(b)
                }
                _ => self.append(b),
            };
            let (p, n, brief) = (b.partition, b.nth, b.brief());
            log::debug!(target: "fake", "{p}-{n} {fault:?} -> {code} @{offset}: {brief}");
            self.seen.push((b.clone(), Some(code)));
            answers.push((b.partition, code, offset));
        }
        (answers, then)
    }
}

#[derive(Clone)]
struct Fake {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    /// A fake broker (node 0) leading every partition of topic `t`.
    fn start(partitions: usize) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            parts: (0..partitions).map(|_| Partition::default()).collect(),
            seen: Vec::new(),
            rules: Vec::new(),
            limit: usize::MAX,
            unknown_producer: UNKNOWN_PRODUCER_ID,
            delay: Duration::ZERO,
            duplicates: 0,
            unanswered: 0,
            init_producer_ids: 0,
            init_refusals: 0,
            unknown_topic: 0,
            metadata_requests: 0,
            first_epoch: None,
            ids_given: 0,
            problems: Vec::new(),
        }));
        let shared = state.clone();
        thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || serve(sock, port, state));
            }
        });
        Fake {
            addr: format!("127.0.0.1:{port}"),
            state,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Apply `rule` to every batch taken up from now on (the first rule with a fault wins).
    fn on(&self, rule: impl FnMut(&Batch) -> Option<Fault> + Send + 'static) {
        self.state().rules.push(Box::new(rule));
    }

    /// `fault` for the `nth` produce request for `partition`.
    fn at(&self, partition: i32, nth: usize, fault: Fault) {
        self.on(move |b| (b.partition == partition && b.nth == nth).then_some(fault));
    }

    fn log(&self, partition: usize) -> Vec<String> {
        self.state().parts[partition].log.clone()
    }

    fn written(&self, partition: usize) -> Vec<Batch> {
        self.state().parts[partition].written.clone()
    }

    fn seen(&self) -> Vec<(Batch, Option<i16>)> {
        self.state().seen.clone()
    }

    fn assert_sane(&self) {
        let st = self.state();
        assert!(
            st.problems.is_empty(),
            "the fake broker found: {:?}",
            st.problems
        );
    }
}

/// A request read from a connection.
struct Frame {
    key: i16,
    version: i16,
    correlation_id: i32,
    /// The whole request, header included.
    body: Bytes,
    /// The batches of a produce request.
    batches: Vec<Batch>,
}

/// Produce requests read from one connection and not yet answered, per partition.
type Outstanding = Arc<Mutex<Vec<usize>>>;

/// One connection: a reader thread takes requests off the socket as soon as they come (so the
/// fake sees how many are outstanding), this thread answers them in order.
fn serve(mut sock: TcpStream, port: u16, state: Arc<Mutex<State>>) {
    let (tx, rx) = mpsc::channel::<Frame>();
    let mut reader = sock.try_clone().unwrap();
    let outstanding: Outstanding = Arc::new(Mutex::new(vec![0; state.lock().unwrap().parts.len()]));
    let (st, out) = (state.clone(), outstanding.clone());
    thread::spawn(move || {
        while let Some(frame) = read_frame(&mut reader, &st, &out) {
            if tx.send(frame).is_err() {
                return;
            }
        }
    });
    // Whatever is left on a connection given up is never answered.
    let ended = |rx: mpsc::Receiver<Frame>| rx.into_iter().for_each(drop);
    // Requests are still taken up, but nothing is answered any more (WriteThenStall).
    let mut silent = false;
    while let Ok(mut frame) = rx.recv() {
        let body = match frame.key {
            18 => {
                let mut resp = ApiVersionsResponse::default();
                for (key, min, max) in [(18, 0, 3), (3, 4, 8), (0, 3, 8), (22, 0, 4)] {
                    let mut v = ApiVersion::default();
                    v.api_key = key;
                    v.min_version = min;
                    v.max_version = max;
                    resp.api_keys.push(v);
                }
                encode::<ApiVersionsRequest>(&frame, frame.version.min(3), &resp)
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
                let unknown = {
                    let mut st = state.lock().unwrap();
                    st.metadata_requests += 1;
                    let unknown = st.unknown_topic > 0;
                    st.unknown_topic = st.unknown_topic.saturating_sub(1);
                    unknown
                };
                if unknown {
                    t.error_code = 3; // UNKNOWN_TOPIC_OR_PARTITION
                }
                let partitions = if unknown {
                    0
                } else {
                    state.lock().unwrap().parts.len()
                };
                for i in 0..partitions {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = i as i32;
                    p.leader_id = 0.into();
                    p.replica_nodes = vec![0.into()];
                    p.isr_nodes = vec![0.into()];
                    t.partitions.push(p);
                }
                resp.topics.push(t);
                encode::<MetadataRequest>(&frame, frame.version, &resp)
            }
            22 => {
                // A new producer gets a fresh id (epoch 0, or `first_epoch` for the first);
                // one that names itself gets its next epoch (KIP-360).
                let mut body = frame.body.clone();
                let header = InitProducerIdRequest::header_version(frame.version);
                let _ = RequestHeader::decode(&mut body, header).unwrap();
                let req = InitProducerIdRequest::decode(&mut body, frame.version).unwrap();
                let mut resp = InitProducerIdResponse::default();
                let refuse = {
                    let mut st = state.lock().unwrap();
                    st.init_producer_ids += 1;
                    let refuse = st.init_refusals > 0;
                    st.init_refusals = st.init_refusals.saturating_sub(1);
                    let named = req.producer_id.0 >= PRODUCER_ID && req.producer_epoch >= 0;
                    if named {
                        resp.producer_id = req.producer_id;
                        resp.producer_epoch = req.producer_epoch + 1;
                    } else if !refuse {
                        resp.producer_id = ProducerId(PRODUCER_ID + st.ids_given);
                        resp.producer_epoch = st.first_epoch.take().unwrap_or(0);
                        st.ids_given += 1;
                    }
                    refuse
                };
                if refuse {
                    resp = InitProducerIdResponse::default();
                    resp.error_code = COORDINATOR_NOT_AVAILABLE;
                    resp.producer_id = ProducerId(-1);
                    resp.producer_epoch = -1;
                }
                encode::<InitProducerIdRequest>(&frame, frame.version, &resp)
            }
            0 => {
                let delay = state.lock().unwrap().delay;
                if !delay.is_zero() {
                    thread::sleep(delay);
                }
                let (answers, fault) = {
                    let mut st = state.lock().unwrap();
                    let (answers, fault) = st.produce(&mut frame.batches);
                    if silent || fault == Some(Fault::WriteThenStall) {
                        st.unanswered += answers.iter().filter(|a| a.1 == 0).count();
                    }
                    (answers, fault)
                };
                match fault {
                    // Until the client closes the connection.
                    Some(Fault::Stall) => return ended(rx),
                    Some(Fault::LoseResponse) => {
                        let _ = sock.shutdown(Shutdown::Both);
                        return ended(rx);
                    }
                    Some(Fault::WriteThenStall) => silent = true,
                    _ => {}
                }
                let mut resp = ProduceResponse::default();
                let mut t = TopicProduceResponse::default();
                t.name = TopicName(StrBytes::from_static_str("t"));
                for (index, code, offset) in answers {
                    let mut p = PartitionProduceResponse::default();
                    p.index = index;
                    p.error_code = code;
                    p.base_offset = offset;
                    p.log_append_time_ms = -1;
                    t.partition_responses.push(p);
                }
                resp.responses.push(t);
                encode::<ProduceRequest>(&frame, frame.version, &resp)
            }
            key => {
                state
                    .lock()
                    .unwrap()
                    .problems
                    .push(format!("unexpected API key {key}"));
                return;
            }
        };
        if silent {
            continue;
        }
        // Answered once the answer is on its way: the client may send the next at once.
        let mut out = outstanding.lock().unwrap();
        for b in &frame.batches {
            out[b.partition as usize] -= 1;
        }
        drop(out);
        if sock.write_all(&body).is_err() {
            return ended(rx);
        }
    }
}

/// Read one request; `None` when the connection ends (or the request makes no sense, which
/// is noted as a problem).
fn read_frame(sock: &mut TcpStream, state: &Mutex<State>, out: &Outstanding) -> Option<Frame> {
    let mut size = [0u8; 4];
    sock.read_exact(&mut size).ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(size).clamp(0, 64 << 20) as usize];
    sock.read_exact(&mut buf).ok()?;
    let key = i16::from_be_bytes([buf[0], buf[1]]);
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    let correlation_id = i32::from_be_bytes(buf[4..8].try_into().unwrap());
    let mut frame = Frame {
        key,
        version,
        correlation_id,
        body: Bytes::from(buf),
        batches: Vec::new(),
    };
    if key == 0 {
        match produce_batches(frame.body.clone(), version) {
            Ok(batches) => frame.batches = batches,
            Err(problem) => {
                state.lock().unwrap().problems.push(problem);
                return None;
            }
        }
        let mut st = state.lock().unwrap();
        let mut out = out.lock().unwrap();
        for b in &frame.batches {
            let n = &mut out[b.partition as usize];
            *n += 1;
            log::trace!(target: "fake", "read a batch for {}: {n} outstanding", b.partition);
            let p = &mut st.parts[b.partition as usize];
            p.max_outstanding = p.max_outstanding.max(*n);
        }
    }
    Some(frame)
}

/// The batches of a produce request, checked: one v2 batch per partition, records and
/// count agreeing, for a partition of `t` that exists.
fn produce_batches(mut body: Bytes, version: i16) -> Result<Vec<Batch>, String> {
    RequestHeader::decode(&mut body, ProduceRequest::header_version(version))
        .map_err(|e| e.to_string())?;
    let req = ProduceRequest::decode(&mut body, version).map_err(|e| e.to_string())?;
    let mut out: Vec<Batch> = Vec::new();
    for t in &req.topic_data {
        if &*t.name.0 != "t" {
            return Err(format!("a batch for topic {:?}", &*t.name.0));
        }
        for p in &t.partition_data {
            let data = p.records.clone().unwrap_or_default();
            if data.len() < 61 {
                return Err(format!("a {}-byte batch", data.len()));
            }
            let mut records = Vec::new();
            let info = decode_batches(&data, 0, 1 << 30, &mut records)?;
            let count = i32::from_be_bytes(data[57..61].try_into().unwrap());
            if info.batches != 1 || count as usize != records.len() {
                return Err(format!(
                    "{} batches, {} records for a count of {count}",
                    info.batches,
                    records.len()
                ));
            }
            if out.iter().any(|b| b.partition == p.index) || p.index < 0 {
                return Err(format!("partition {} twice in one request", p.index));
            }
            out.push(Batch {
                partition: p.index,
                nth: 0,
                producer_id: i64::from_be_bytes(data[43..51].try_into().unwrap()),
                epoch: i16::from_be_bytes(data[51..53].try_into().unwrap()),
                base_seq: i32::from_be_bytes(data[53..57].try_into().unwrap()),
                values: records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into())
                    .collect(),
                bytes: data.len(),
            });
        }
    }
    Ok(out)
}

fn encode<R: Request>(frame: &Frame, version: i16, body: &R::Response) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = frame.correlation_id;
    header
        .encode(&mut buf, R::Response::header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

// ---- Helpers ----

fn logging() {
    let _ = env_logger::builder()
        .is_test(true)
        .format_timestamp_micros()
        .try_init();
}

/// Settings for a quick test: short backoffs and bounds, a little linger.
fn config(fake: &Fake) -> ProducerConfig {
    let mut c = ProducerConfig::new(&fake.addr).topic("t");
    c.client.connection.request_timeout = Duration::from_secs(2);
    c.client.connection.connect_timeout = Duration::from_secs(1);
    c.client.retry_backoff = Duration::from_millis(10);
    c.client.retry_backoff_max = Duration::from_millis(100);
    c.delivery_timeout = Duration::from_secs(8);
    c.close_timeout = Duration::from_secs(4);
    c.linger = Duration::from_millis(2);
    c
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

type Outcome = Result<Delivery, DeliveryError>;

/// Send every value, then wait for each outcome.
fn send_all(producer: &Producer, values: &[String]) -> Vec<Outcome> {
    let receipts: Vec<_> = values
        .iter()
        .map(|v| {
            producer
                .send_tracked(ProducerRecord::new(v.clone()))
                .unwrap()
        })
        .collect();
    receipts
        .into_iter()
        .map(|r| r.wait().expect("an outcome within the bound"))
        .collect()
}

/// The fake saw nothing wrong, every record was delivered, and the log holds each once, in
/// the order sent.
fn assert_once_in_order(fake: &Fake, sent: &[String], outcomes: &[Outcome]) {
    fake.assert_sane();
    assert_delivered(sent, outcomes);
    check_log(fake, sent, outcomes);
}

fn assert_delivered(sent: &[String], outcomes: &[Outcome]) {
    for (v, o) in sent.iter().zip(outcomes) {
        assert!(o.is_ok(), "record {v:?}: {o:?}");
    }
}

/// Each partition's log is exactly the records delivered to it, once each, in the order
/// sent, and each delivery's offset (if it has one) points at its own record.
fn check_log(fake: &Fake, sent: &[String], outcomes: &[Outcome]) {
    assert_eq!(sent.len(), outcomes.len());
    let partitions = fake.state().parts.len();
    for p in 0..partitions {
        let log = fake.log(p);
        let expected: Vec<String> = sent
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| matches!(o, Ok(d) if d.partition == p as i32))
            .map(|(v, _)| v.clone())
            .collect();
        assert_eq!(
            log, expected,
            "partition {p}: the log vs the records delivered there"
        );
        for (v, o) in sent.iter().zip(outcomes) {
            if let Ok(d) = o {
                if d.partition == p as i32 && d.offset >= 0 {
                    assert_eq!(
                        log.get(d.offset as usize),
                        Some(v),
                        "record {v:?} delivered at {}-{}",
                        d.partition,
                        d.offset
                    );
                }
            }
        }
    }
}

fn assert_adds_up(summary: &kpipe::producer::Summary) {
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        summary.accepted,
        "{summary:?}"
    );
}

fn rejected_with(outcome: &Outcome, code: KafkaCode) -> bool {
    matches!(outcome, Err(DeliveryError::Rejected(e)) if e.kafka_code() == Some(code))
}

// ---- Tests ----

#[test]
fn a_lost_response_is_recognised_as_a_duplicate() {
    logging();
    let fake = Fake::start(1);
    // The third request is written, but its answer never comes: the connection drops, with
    // the requests behind it unread.
    fake.at(0, 3, Fault::LoseResponse);
    fake.state().delay = Duration::from_millis(3); // several batches in flight at once
    let mut c = config(&fake);
    c.batch_bytes = 100;
    let producer = Producer::new(c).unwrap();
    let sent = values(0..30);
    let outcomes = send_all(&producer, &sent);
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    assert!(summary.resent_batches >= 1, "{summary:?}");
    assert!(
        fake.state().duplicates >= 1,
        "the resend was taken for a duplicate"
    );
    assert_eq!((summary.delivered, summary.failed), (30, 0), "{summary:?}");
    assert_eq!(summary.epoch_bumps, 0, "{summary:?}");
    assert_eq!(
        fake.state().init_producer_ids,
        1,
        "one producer id, asked for once"
    );
}

#[test]
fn a_duplicate_sequence_answer_to_a_resend_counts_as_delivered() {
    logging();
    let fake = Fake::start(1);
    fake.at(0, 2, Fault::LoseResponse);
    fake.at(0, 3, Fault::Answer(DUPLICATE_SEQUENCE_NUMBER));
    let producer = Producer::new(config(&fake)).unwrap();
    let sent = values(0..10);
    let mut outcomes = send_all(&producer, &sent[..1]);
    outcomes.extend(send_all(&producer, &sent[1..2]));
    outcomes.extend(send_all(&producer, &sent[2..]));
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    fake.assert_sane();
    let seen = fake.seen();
    let (lost, dup) = (&seen[1].0, &seen[2].0);
    assert_eq!((lost.nth, dup.nth), (2, 3));
    assert_eq!(
        (dup.epoch, dup.base_seq, &dup.values),
        (lost.epoch, lost.base_seq, &lost.values),
        "the third request resends the second"
    );
    assert_delivered(&sent, &outcomes);
    check_log(&fake, &sent, &outcomes);
    assert_eq!((summary.delivered, summary.failed), (10, 0), "{summary:?}");
    assert!(summary.resent_batches >= 1, "{summary:?}");
}

#[test]
fn five_batches_written_whose_responses_were_all_lost_are_each_recognised_as_duplicates() {
    logging();
    let fake = Fake::start(1);
    // From the second request on the fake writes but answers nothing, until the client
    // gives up on the connection (its request timeout).
    fake.at(0, 2, Fault::WriteThenStall);
    fake.state().delay = Duration::from_millis(3); // several batches in flight at once
    let mut c = config(&fake);
    c.batch_bytes = 100;
    c.client.connection.request_timeout = Duration::from_secs(1);
    let producer = Producer::new(c).unwrap();
    let sent = values(0..60);
    let outcomes = send_all(&producer, &sent);
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    // Every batch written without an answer came again, and was taken for a duplicate.
    let (unanswered, duplicates) = {
        let st = fake.state();
        (st.unanswered, st.duplicates)
    };
    assert!(
        unanswered > 1,
        "several batches were in flight: {unanswered}"
    );
    assert_eq!(duplicates, unanswered);
    assert!(summary.resent_batches as usize >= duplicates, "{summary:?}");
    assert_eq!(
        (summary.delivered, summary.epoch_bumps),
        (60, 0),
        "{summary:?}"
    );
}

/// A refresh answered "unknown topic" for a topic the producer writes to (a cluster coming
/// back says so for a moment) leaves the producer routing by what it knew, asking again:
/// the records go out once the topic is known again, in order and once each.
#[test]
fn a_refresh_that_finds_the_topic_unknown_for_a_moment_stalls_nothing_for_good() {
    logging();
    let fake = Fake::start(1);
    // NOT_LEADER_OR_FOLLOWER makes the producer refresh its metadata.
    fake.at(0, 2, Fault::Answer(6));
    let producer = Producer::new(config(&fake)).unwrap();
    let before = fake.state().metadata_requests;
    fake.state().unknown_topic = 1;
    let sent = values(0..6);
    let mut outcomes = Vec::new();
    for v in sent.chunks(1) {
        outcomes.extend(send_all(&producer, v)); // a request each
    }
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    fake.assert_sane();
    let st = fake.state();
    assert!(
        st.unknown_topic == 0 && st.metadata_requests > before,
        "a refresh met the unknown topic: {} metadata requests",
        st.metadata_requests - before
    );
    drop(st);
    assert_delivered(&sent, &outcomes);
    check_log(&fake, &sent, &outcomes);
    assert_eq!((summary.delivered, summary.failed), (6, 0), "{summary:?}");
}

#[test]
fn retriable_errors_before_and_after_the_write_resend_the_same_sequence() {
    logging();
    let fake = Fake::start(1);
    // NOT_LEADER_OR_FOLLOWER: refused before the append. REQUEST_TIMED_OUT: appended, but the
    // replicas did not confirm in time.
    fake.at(0, 2, Fault::Answer(6));
    fake.at(0, 4, Fault::WriteThenAnswer(7));
    let producer = Producer::new(config(&fake)).unwrap();
    let sent = values(0..6);
    let mut outcomes = Vec::new();
    for v in sent.chunks(1) {
        outcomes.extend(send_all(&producer, v)); // a request each
    }
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    let seen = fake.seen();
    // The n-th request's batch, as stamped.
    let stamp = |n: usize| {
        let b = &seen[n - 1].0;
        assert_eq!(b.nth, n);
        (b.epoch, b.base_seq, b.values.clone())
    };
    assert_eq!(stamp(3), stamp(2), "the refused batch came again as it was");
    assert_eq!(
        stamp(5),
        stamp(4),
        "the batch timed out came again as it was"
    );
    assert_eq!(fake.state().duplicates, 1, "the resend after the timeout");
    assert_eq!(
        (summary.resent_batches, summary.epoch_bumps),
        (2, 0),
        "{summary:?}"
    );
}

#[test]
fn a_broker_that_lost_every_partition_s_state_costs_one_epoch_bump() {
    logging();
    let fake = Fake::start(3);
    fake.state().delay = Duration::from_millis(3);
    // A broker restart that lost the producer state of all three partitions at once.
    fake.at(1, 4, Fault::Forget(UNKNOWN_PRODUCER_ID));
    let mut c = config(&fake);
    c.batch_bytes = 100;
    let producer = Producer::new(c).unwrap();
    let sent = values(0..300);
    let outcomes = send_all(&producer, &sent);
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    assert_eq!(summary.epoch_bumps, 1, "{summary:?}");
    assert_eq!(
        summary.producer,
        Some(ProducerIdentity {
            id: PRODUCER_ID,
            epoch: 1
        })
    );
    for p in 0..3 {
        let written = fake.written(p);
        let before = written.iter().take_while(|b| b.epoch == 0).count();
        if let Some(first) = written.get(before) {
            assert_eq!(
                (first.epoch, first.base_seq),
                (1, 0),
                "partition {p}: {written:?}"
            );
        }
        assert!(
            written[before..].iter().all(|b| b.epoch == 1),
            "partition {p}: {written:?}"
        );
    }
}

/// The fake forgets the producer at its fourth request while records keep flowing: that
/// batch and those in flight behind it are answered with `code`. The producer must start its
/// sequences again under a new epoch.
fn a_broker_that_lost_the_producer_state(code: i16) {
    logging();
    let fake = Fake::start(1);
    fake.state().delay = Duration::from_millis(3); // several batches in flight at once
    fake.at(0, 4, Fault::Forget(code));
    let mut c = config(&fake);
    c.batch_bytes = 100;
    let producer = Producer::new(c).unwrap();
    let sent = values(0..60);
    let outcomes = send_all(&producer, &sent);
    let stats = producer.stats();
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    assert!(
        fake.seen().iter().any(|(_, c)| *c == Some(code)),
        "the fake answered {code}"
    );
    assert!(stats.epoch_bumps >= 1, "{stats:?}");
    let epoch = summary.epoch_bumps as i16;
    assert!(summary.epoch_bumps >= 1, "{summary:?}");
    assert_eq!(
        summary.producer,
        Some(ProducerIdentity {
            id: PRODUCER_ID,
            epoch
        })
    );
    let written = fake.written(0);
    let before = written.iter().take_while(|b| b.epoch == 0).count();
    assert_eq!(before, 3, "written before the fake forgot: {written:?}");
    let after = &written[before..];
    assert_eq!(
        (after[0].epoch, after[0].base_seq),
        (1, 0),
        "{:?}",
        after[0]
    );
    assert!(after.iter().all(|b| b.epoch >= 1), "{after:?}");
    assert_eq!((summary.delivered, summary.failed), (60, 0), "{summary:?}");
}

/// A producer id whose epochs are used up (the fake hands out the last one) cannot be
/// bumped: when the broker loses the producer, the producer asks for a new id, and the
/// partition starts again under it from sequence 0, nothing lost, repeated or reordered.
#[test]
fn a_producer_out_of_epochs_gets_a_new_producer_id() {
    logging();
    let fake = Fake::start(1);
    fake.state().first_epoch = Some(i16::MAX);
    fake.state().delay = Duration::from_millis(3);
    fake.at(0, 4, Fault::Forget(UNKNOWN_PRODUCER_ID));
    let mut c = config(&fake);
    c.batch_bytes = 100;
    let producer = Producer::new(c).unwrap();
    let last = ProducerIdentity {
        id: PRODUCER_ID,
        epoch: i16::MAX,
    };
    assert_eq!(producer.stats().producer, Some(last));
    let sent = values(0..60);
    let outcomes = send_all(&producer, &sent);
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    assert_eq!(fake.state().init_producer_ids, 2, "a second InitProducerId");
    let next = ProducerIdentity {
        id: PRODUCER_ID + 1,
        epoch: 0,
    };
    assert_eq!(summary.producer, Some(next), "{summary:?}");
    assert_eq!(summary.epoch_bumps, 0, "no epoch to bump: {summary:?}");
    let written = fake.written(0);
    let switch = written
        .iter()
        .position(|b| b.producer_id == next.id)
        .expect("batches under the new id");
    assert!(written[..switch]
        .iter()
        .all(|b| b.producer_id == PRODUCER_ID));
    assert_eq!(written[switch].base_seq, 0, "{:?}", written[switch]);
    assert!(written[switch..].iter().all(|b| b.producer_id == next.id));
    assert_eq!((summary.delivered, summary.failed), (60, 0), "{summary:?}");
}

#[test]
fn out_of_order_sequence_after_the_broker_lost_its_state_bumps_the_epoch() {
    a_broker_that_lost_the_producer_state(OUT_OF_ORDER_SEQUENCE_NUMBER);
}

#[test]
fn unknown_producer_id_bumps_the_epoch() {
    a_broker_that_lost_the_producer_state(UNKNOWN_PRODUCER_ID);
}

/// The second request is answered with `code`: the producer stops for good.
fn a_fencing_error_stops_the_producer(code: i16, kafka_code: KafkaCode) {
    logging();
    let fake = Fake::start(1);
    fake.at(0, 2, Fault::Answer(code));
    fake.state().delay = Duration::from_millis(20); // a few batches in flight behind it
    let mut c = config(&fake);
    c.batch_bytes = 30;
    let producer = Producer::new(c).unwrap();
    let sent = values(0..10);
    let mut outcomes = send_all(&producer, &sent[..1]);
    outcomes.extend(send_all(&producer, &sent[1..]));
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(rejected_with(&outcomes[1], kafka_code), "{:?}", outcomes[1]);
    for (v, o) in sent.iter().zip(&outcomes).skip(1) {
        assert!(matches!(o, Err(DeliveryError::Rejected(_))), "{v:?}: {o:?}");
    }
    common::await_condition(Duration::from_secs(5), "the producer to stop", || {
        producer.stats().fatal.is_some()
    });
    let fatal = producer.stats().fatal.unwrap();
    assert!(
        fatal.contains(&format!("Kafka error {code}")),
        "the reason names the error: {fatal}"
    );
    assert!(matches!(
        producer.send(ProducerRecord::new("late")),
        Err(SendError::Closed(_))
    ));
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    fake.assert_sane();
    assert_adds_up(&summary);
    assert_eq!((summary.delivered, summary.failed), (1, 9), "{summary:?}");
    assert_eq!(
        summary.failures.get(&format!("rejected: {kafka_code:?}")),
        Some(&9),
        "{summary:?}"
    );
    check_log(&fake, &sent, &outcomes);
}

#[test]
fn an_invalid_producer_epoch_stops_the_producer_for_good() {
    a_fencing_error_stops_the_producer(INVALID_PRODUCER_EPOCH, KafkaCode::InvalidProducerEpoch);
}

#[test]
fn a_fenced_producer_stops_for_good() {
    a_fencing_error_stops_the_producer(PRODUCER_FENCED, KafkaCode::ProducerFenced);
}

#[test]
fn a_batch_that_expires_in_flight_fails_and_the_next_go_on_under_a_new_epoch() {
    logging();
    let fake = Fake::start(1);
    // The batch holding "1" is never written nor answered, however often it comes.
    fake.on(|b| b.values.iter().any(|v| v == "1").then_some(Fault::Stall));
    let mut c = config(&fake);
    c.client.connection.request_timeout = Duration::from_secs(1);
    c.linger = Duration::from_millis(5);
    c.delivery_timeout = Duration::from_millis(1500);
    let producer = Producer::new(c).unwrap();
    let sent = values(0..10);
    let mut outcomes = send_all(&producer, &sent[..1]);
    let started = Instant::now();
    outcomes.extend(send_all(&producer, &sent[1..2]));
    let took = started.elapsed();
    match &outcomes[1] {
        Err(DeliveryError::TimedOut { after, last_error }) => {
            assert_eq!(*after, Duration::from_millis(1500));
            assert!(last_error.is_some(), "the timeout says what went wrong");
        }
        other => panic!("expected a delivery timeout, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    // Its sequence is missing at the fake: the next batch is out of order, and the
    // producer starts again under a new epoch.
    outcomes.extend(send_all(&producer, &sent[2..]));
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    fake.assert_sane();
    assert_delivered(&sent[2..], &outcomes[2..]);
    check_log(&fake, &sent, &outcomes);
    assert!(
        fake.seen()
            .iter()
            .any(|(b, c)| b.epoch == 0 && *c == Some(OUT_OF_ORDER_SEQUENCE_NUMBER)),
        "{:?}",
        fake.seen()
    );
    assert!(summary.epoch_bumps >= 1, "{summary:?}");
    let written = fake.written(0);
    assert_eq!(written[0].values, ["0"]);
    assert_eq!(
        (written[1].epoch, written[1].base_seq),
        (1, 0),
        "{written:?}"
    );
    assert_eq!((summary.delivered, summary.failed), (9, 1), "{summary:?}");
    assert_adds_up(&summary);
}

#[test]
fn a_batch_too_large_for_the_broker_is_split_and_an_oversize_record_fails_alone() {
    logging();
    let fake = Fake::start(1);
    fake.state().limit = 1000;
    let mut c = config(&fake);
    c.linger = Duration::from_millis(50); // the 30 records go as one batch
    let producer = Producer::new(c).unwrap();
    let padded = |i: usize, n: usize| format!("{i:03}:{}", "x".repeat(n));
    // A lone oversize record; then 30 of 100 bytes with an oversize one among them.
    let sent: Vec<String> = (0..31)
        .map(|i| padded(i, if i == 0 || i == 16 { 2000 } else { 100 }))
        .collect();
    let mut outcomes = send_all(&producer, &sent[..1]);
    outcomes.extend(send_all(&producer, &sent[1..]));
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    fake.assert_sane();
    for (i, o) in outcomes.iter().enumerate() {
        if i == 0 || i == 16 {
            assert!(rejected_with(o, KafkaCode::MessageTooLarge), "{i}: {o:?}");
        } else {
            assert!(o.is_ok(), "{i}: {o:?}");
        }
    }
    check_log(&fake, &sent, &outcomes);
    let seen = fake.seen();
    assert!(
        seen.iter()
            .any(|(b, c)| b.values.len() > 1 && *c == Some(MESSAGE_TOO_LARGE)),
        "a batch of several records was refused, and split: {seen:?}"
    );
    assert!(fake.written(0).iter().all(|b| b.bytes <= 1000));
    assert_eq!((summary.delivered, summary.failed), (29, 2), "{summary:?}");
    assert_eq!(summary.epoch_bumps, 0, "{summary:?}");
}

#[test]
fn up_to_five_batches_fly_per_partition_and_the_log_keeps_their_order() {
    logging();
    let fake = Fake::start(3);
    fake.state().delay = Duration::from_millis(5); // answers lag, so requests pile up
    let mut c = config(&fake);
    c.linger = Duration::from_millis(1);
    c.batch_bytes = 256;
    let producer = Producer::new(c).unwrap();
    let sent = values(0..3000);
    let outcomes = send_all(&producer, &sent);
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    let most: Vec<usize> = fake
        .state()
        .parts
        .iter()
        .map(|p| p.max_outstanding)
        .collect();
    assert!(most.iter().any(|m| *m > 1), "batches piled up: {most:?}");
    assert!(
        most.iter().all(|m| *m <= 5),
        "at most five in flight: {most:?}"
    );
    assert!(
        (0..3).all(|p| !fake.log(p).is_empty()),
        "every partition used"
    );
    assert_eq!(summary.delivered, 3000, "{summary:?}");
}

#[test]
fn without_idempotence_batches_carry_no_producer_id_and_no_sequence() {
    logging();
    let fake = Fake::start(1);
    let mut c = config(&fake);
    c.idempotence = Some(false);
    c.batch_bytes = 50;
    let producer = Producer::new(c).unwrap();
    let sent = values(0..20);
    let outcomes = send_all(&producer, &sent);
    let stats = producer.stats();
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    assert_eq!(fake.state().init_producer_ids, 0, "no InitProducerId");
    let seen = fake.seen();
    assert!(seen.len() > 1, "{seen:?}");
    for (b, _) in &seen {
        assert_eq!((b.producer_id, b.epoch, b.base_seq), (-1, -1, -1), "{b:?}");
    }
    assert_eq!((stats.producer, summary.producer), (None, None));
    assert_eq!(summary.epoch_bumps, 0);
}

#[test]
fn records_wait_for_a_producer_id_that_comes_late() {
    logging();
    let fake = Fake::start(1);
    fake.state().init_refusals = 3; // Producer::new's ask and two more
    let producer = Producer::new(config(&fake)).unwrap();
    let sent = values(0..20);
    let outcomes = send_all(&producer, &sent);
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    assert_once_in_order(&fake, &sent, &outcomes);
    assert_eq!(fake.state().init_producer_ids, 4);
    for (b, _) in fake.seen() {
        assert_eq!((b.producer_id, b.epoch), (PRODUCER_ID, 0), "{b:?}");
    }
    assert_eq!(
        summary.producer,
        Some(ProducerIdentity {
            id: PRODUCER_ID,
            epoch: 0
        })
    );
}

#[test]
fn without_a_producer_id_records_fail_at_their_delivery_timeout_and_none_is_sent() {
    logging();
    let fake = Fake::start(1);
    fake.state().init_refusals = usize::MAX;
    let mut c = config(&fake);
    c.client.connection.request_timeout = Duration::from_secs(1);
    c.delivery_timeout = Duration::from_millis(1500);
    let producer = Producer::new(c).unwrap();
    let started = Instant::now();
    let outcomes = send_all(&producer, &values(0..5));
    let took = started.elapsed();
    for o in &outcomes {
        match o {
            Err(DeliveryError::TimedOut { last_error, .. }) => {
                let e = last_error
                    .as_ref()
                    .expect("the timeout names the last error");
                assert_eq!(
                    e.kafka_code(),
                    Some(KafkaCode::CoordinatorNotAvailable),
                    "{e}"
                );
            }
            other => panic!("expected a delivery timeout, got {other:?}"),
        }
    }
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    let summary = producer.close(Duration::from_secs(5)).unwrap();
    fake.assert_sane();
    assert!(fake.seen().is_empty(), "nothing sent without an id");
    assert!(fake.state().init_producer_ids > 1, "asked again");
    assert_eq!((summary.failed, summary.producer), (5, None), "{summary:?}");
    assert_adds_up(&summary);
}
