//! The transactional producer's answers to each class of coordinator and leader error
//! (design brief section 2, after the Java client's `TransactionManager`), driven through the
//! public API against a fake broker, because a real one will not give these errors on
//! demand: CONCURRENT_TRANSACTIONS while markers are written, a coordinator loading or moving,
//! TRANSACTION_ABORTABLE, a group that moved on, PRODUCER_FENCED, a refused transactional id.
//!
//! The fake is two nodes on 127.0.0.1 (one thread per connection, the `kafka-protocol`
//! codecs) that advertise Kafka 4.4.0's API versions, with `transaction.version` 2 or 1 as
//! the test asks. Node 0 leads every partition of topic `t`; either node may be the
//! transaction (and group) coordinator, and the other answers coordinator requests with
//! NOT_COORDINATOR, as a real broker does. It *models* one transactional id: InitProducerId
//! gives a producer id and epoch (bumped when the current ones are named, KIP-360); EndTxn v5+
//! bumps the epoch and returns it (a new producer id once the epoch runs out); a partition
//! joins the transaction through AddPartitionsToTxn, or implicitly by Produce v12+, and a
//! Produce to a partition not in the transaction is refused with TRANSACTION_ABORTABLE; a
//! group joins through AddOffsetsToTxn, or implicitly by TxnOffsetCommit v5+ (before the
//! group's own checks, as Kafka's group coordinator does); batches must carry the current id
//! and epoch, the transactional bit, and sequences that follow on (from 0 under a new epoch).
//! What breaks those rules, or the version caps of the cluster's transaction version, is
//! noted as a problem and fails the test. On top of the model each test scripts answers
//! ([`Fake::answer`], [`Fake::on`]), and checks what the caller saw (the
//! [`TransactionError`] class, delivery outcomes, the [`Summary`](kpipe::producer::Summary))
//! against what the fake received and what it committed.
//!
//! `RUST_LOG=kpipe=debug` traces the producer's side.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kpipe::client::{GroupMetadata, KafkaCode, TopicPartition};
use kpipe::producer::{
    java_partition, Delivery, DeliveryError, DeliveryReceipt, ProducerIdentity, SendError,
    TransactionError,
};
use kpipe::unstable::{decode_batches, TransactionVersion};
use kpipe::{Producer, ProducerConfig, ProducerRecord};
use uuid::Uuid;

/// The transactional id every test's producer uses.
const TXN_ID: &str = "txn-faults";
/// The fake's topic, and its id (Produce v13 names topics by id).
const TOPIC: &str = "t";
const TOPIC_ID: Uuid = Uuid::from_u128(0x6b70_6970_6574_786e_6661_756c_7473_0001);
/// The first producer id the fake hands out.
const PRODUCER_ID: i64 = 4000;
/// Bound on every transactional call and every wait in the tests.
const END: Duration = Duration::from_secs(10);

/// The API version ranges (key, min, max) a Kafka 4.4.0 broker advertises: ApiVersions v3
/// read from `./scripts/kafka up`.
const KAFKA_4_4: &[(i16, i16, i16)] = &[
    (0, 0, 13),
    (1, 4, 18),
    (2, 1, 11),
    (3, 0, 13),
    (8, 2, 10),
    (9, 1, 10),
    (10, 0, 6),
    (11, 0, 9),
    (12, 0, 4),
    (13, 0, 5),
    (14, 0, 5),
    (15, 0, 6),
    (16, 0, 5),
    (17, 0, 1),
    (18, 0, 5),
    (19, 2, 7),
    (20, 1, 6),
    (21, 0, 2),
    (22, 0, 5),
    (23, 2, 4),
    (24, 0, 5),
    (25, 0, 4),
    (26, 0, 5),
    (27, 1, 2),
    (28, 0, 6),
    (29, 1, 3),
    (30, 1, 3),
    (31, 1, 3),
    (32, 1, 4),
    (33, 0, 2),
    (34, 1, 2),
    (35, 1, 5),
    (36, 0, 2),
    (37, 0, 3),
    (38, 1, 3),
    (39, 1, 2),
    (40, 1, 2),
    (41, 1, 3),
    (42, 0, 3),
    (43, 0, 2),
    (44, 0, 1),
    (45, 0, 1),
    (46, 0, 0),
    (47, 0, 0),
    (48, 0, 1),
    (49, 0, 1),
    (50, 0, 0),
    (51, 0, 0),
    (55, 0, 2),
    (57, 0, 2),
    (60, 0, 2),
    (61, 0, 0),
    (64, 0, 0),
    (65, 0, 0),
    (66, 0, 2),
    (68, 0, 1),
    (69, 0, 1),
    (74, 0, 1),
    (75, 0, 0),
    (76, 1, 1),
    (77, 1, 1),
    (78, 1, 2),
    (79, 1, 2),
    (80, 0, 1),
    (81, 0, 0),
    (83, 0, 0),
    (84, 0, 0),
    (85, 0, 1),
    (86, 0, 0),
    (87, 0, 1),
    (88, 0, 1),
    (89, 0, 1),
    (90, 0, 1),
    (91, 0, 0),
    (92, 0, 0),
    (93, 0, 0),
    (94, 0, 0),
];

/// Kafka error codes, as the fake answers them.
fn code(k: KafkaCode) -> i16 {
    k.code()
}

// ---------------------------------------------------------------------------------------
// The fake broker
// ---------------------------------------------------------------------------------------

/// A request the fake took up (ApiVersions and Metadata are answered but not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    FindCoordinator {
        key_type: i8,
        key: String,
    },
    InitProducerId {
        id: i64,
        epoch: i16,
    },
    Produce(Vec<SeenBatch>),
    AddPartitions {
        id: i64,
        epoch: i16,
        partitions: Vec<i32>,
    },
    AddOffsets {
        id: i64,
        epoch: i16,
        group: String,
    },
    TxnOffsetCommit {
        id: i64,
        epoch: i16,
        group: String,
        generation: i32,
        offsets: Vec<(i32, i64)>,
    },
    EndTxn {
        id: i64,
        epoch: i16,
        commit: bool,
    },
}

/// One batch of a Produce request: its v2 header's producer fields and attributes, and
/// its records' values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenBatch {
    partition: i32,
    id: i64,
    epoch: i16,
    base_seq: i32,
    /// The attributes' transactional bit (0x10).
    transactional: bool,
    values: Vec<String>,
}

/// A request as the fake received it: on which node, at which version, what.
#[derive(Debug, Clone)]
struct Call {
    node: i32,
    version: i16,
    req: Req,
}

/// A request taken up, in the fake's log, with the (first non-zero) error code it answered.
#[derive(Debug, Clone)]
struct Seen {
    node: i32,
    version: i16,
    req: Req,
    code: i16,
}

/// What the fake answers to a request.
#[derive(Debug, Default)]
struct Answer {
    /// The request's error code (the first non-zero partition code for per-partition ones).
    code: i16,
    /// InitProducerId, EndTxn v5+: the producer id and epoch to hand back.
    producer: Option<(i64, i16)>,
    /// FindCoordinator: the node.
    node: i32,
    /// Per partition: code and base offset.
    parts: Vec<(i32, i16, i64)>,
}

impl Answer {
    fn code(code: i16) -> Answer {
        Answer {
            code,
            ..Answer::default()
        }
    }
}

/// The open transaction as the coordinator and the partition leader know it.
#[derive(Debug, Default)]
struct Open {
    partitions: BTreeSet<i32>,
    groups: BTreeSet<String>,
    /// Records written in it: partition, value.
    records: Vec<(i32, String)>,
    /// Offsets sent in it: group, partition, offset.
    offsets: Vec<(String, i32, i64)>,
}

impl Open {
    fn is_empty(&self) -> bool {
        self.partitions.is_empty() && self.groups.is_empty()
    }
}

/// The fake's model of one transactional id on a one-topic cluster.
struct Model {
    /// The cluster's `transaction.version`.
    version: TransactionVersion,
    ports: [u16; 2],
    /// Partitions of `t`, all led by node 0.
    partitions: usize,
    /// The node that coordinates the transactional id and every group.
    coordinator: i32,
    /// The epoch the first producer id comes with.
    first_epoch: i16,
    /// Producer ids handed out: the next is `PRODUCER_ID + ids_given`.
    ids_given: i64,
    /// The producer id and epoch of the transactional id now.
    producer: Option<(i64, i16)>,
    open: Open,
    /// Per partition: the producer id, epoch and next sequence it expects.
    sequences: Vec<Option<(i64, i16, i32)>>,
    /// Per partition: its log's next offset.
    next_offset: Vec<i64>,
    committed: Vec<(i32, String)>,
    aborted: Vec<(i32, String)>,
    committed_offsets: Vec<(String, i32, i64)>,
    /// What the fake found wrong with the requests; a test fails if any.
    problems: Vec<String>,
}

impl Model {
    fn new(version: TransactionVersion, ports: [u16; 2], partitions: usize) -> Model {
        Model {
            version,
            ports,
            partitions,
            coordinator: 0,
            first_epoch: 0,
            ids_given: 0,
            producer: None,
            open: Open::default(),
            sequences: vec![None; partitions],
            next_offset: vec![0; partitions],
            committed: Vec::new(),
            aborted: Vec::new(),
            committed_offsets: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, what: String) {
        log::warn!(target: "fake", "problem: {what}");
        self.problems.push(what);
    }

    fn v2(&self) -> bool {
        self.version == TransactionVersion::V2
    }

    /// The next producer id and epoch after `(id, epoch)`: the epoch + 1, or a fresh id
    /// once the epoch runs out (as Kafka's coordinator does).
    fn bump(&mut self, (id, epoch): (i64, i16)) -> (i64, i16) {
        if epoch >= i16::MAX - 1 {
            self.fresh_id()
        } else {
            (id, epoch + 1)
        }
    }

    fn fresh_id(&mut self) -> (i64, i16) {
        let id = PRODUCER_ID + self.ids_given;
        self.ids_given += 1;
        (id, 0)
    }

    /// 0 if `(id, epoch)` is the transactional id's producer now, else what a coordinator
    /// answers (and a problem: no test makes the producer send a stale identity).
    fn check_producer(&mut self, api: &str, id: i64, epoch: i16) -> i16 {
        match self.producer {
            Some(now) if now == (id, epoch) => 0,
            Some((now, _)) if now == id => {
                self.problem(format!(
                    "{api} with epoch {epoch}; the producer's is {:?}",
                    self.producer
                ));
                code(KafkaCode::ProducerFenced)
            }
            _ => {
                self.problem(format!(
                    "{api} from producer {id} epoch {epoch}; the transactional id has {:?}",
                    self.producer
                ));
                code(KafkaCode::InvalidProducerIdMapping)
            }
        }
    }

    /// End the open transaction.
    fn end(&mut self, commit: bool) {
        let open = std::mem::take(&mut self.open);
        if commit {
            self.committed.extend(open.records);
            self.committed_offsets.extend(open.offsets);
        } else {
            self.aborted.extend(open.records);
        }
    }

    /// The answer to `call`: `scripted`, if a rule gave one, else what the model says.
    fn answer(&mut self, call: &Call, scripted: Option<i16>) -> Answer {
        let coordinator_api = !matches!(call.req, Req::FindCoordinator { .. } | Req::Produce(_));
        if coordinator_api && scripted.is_none() && call.node != self.coordinator {
            return Answer::code(code(KafkaCode::NotCoordinator));
        }
        match &call.req {
            Req::FindCoordinator { .. } => match scripted {
                Some(c) => Answer::code(c),
                None => Answer {
                    node: self.coordinator,
                    ..Answer::default()
                },
            },
            Req::InitProducerId { id, epoch } => {
                if let Some(c) = scripted {
                    return Answer::code(c);
                }
                let next = match (self.producer, *id) {
                    // A new instance: the transactional id's next epoch (what it left open
                    // is aborted), or a fresh producer id.
                    (Some(now), -1) => self.bump(now),
                    (None, -1) => {
                        let (id, _) = self.fresh_id();
                        (id, self.first_epoch)
                    }
                    // KIP-360: the current producer asks for its next epoch.
                    (Some(now), _) if now == (*id, *epoch) => self.bump(now),
                    _ => {
                        let c = self.check_producer("InitProducerId", *id, *epoch);
                        return Answer::code(if c == 0 {
                            code(KafkaCode::ProducerFenced)
                        } else {
                            c
                        });
                    }
                };
                if !self.open.is_empty() {
                    self.end(false);
                }
                self.producer = Some(next);
                Answer {
                    producer: Some(next),
                    ..Answer::default()
                }
            }
            Req::AddPartitions {
                id,
                epoch,
                partitions,
            } => {
                if self.v2() {
                    self.problem("AddPartitionsToTxn under transaction version 2".into());
                }
                if call.version > 3 {
                    self.problem(format!(
                        "AddPartitionsToTxn v{} (the brokers' form)",
                        call.version
                    ));
                }
                let c = match scripted {
                    Some(c) => c,
                    None => self.check_producer("AddPartitionsToTxn", *id, *epoch),
                };
                if c == 0 {
                    self.open.partitions.extend(partitions.iter().copied());
                }
                Answer {
                    code: c,
                    parts: partitions.iter().map(|&p| (p, c, -1)).collect(),
                    ..Answer::default()
                }
            }
            Req::AddOffsets { id, epoch, group } => {
                if self.v2() {
                    self.problem("AddOffsetsToTxn under transaction version 2".into());
                }
                let c = match scripted {
                    Some(c) => c,
                    None => self.check_producer("AddOffsetsToTxn", *id, *epoch),
                };
                if c == 0 {
                    self.open.groups.insert(group.clone());
                }
                Answer::code(c)
            }
            Req::TxnOffsetCommit {
                id,
                epoch,
                group,
                offsets,
                ..
            } => {
                let parts = |c: i16| offsets.iter().map(|&(p, _)| (p, c, -1)).collect();
                let mut c = self.check_producer("TxnOffsetCommit", *id, *epoch);
                let implicit = call.version >= 5;
                if implicit != self.v2() {
                    self.problem(format!(
                        "TxnOffsetCommit v{} under transaction version {:?}",
                        call.version, self.version
                    ));
                }
                // The group joins the transaction before the group coordinator checks the
                // member (Kafka's transaction verification comes first).
                if c == 0 && implicit {
                    self.open.groups.insert(group.clone());
                }
                if c == 0 && !self.open.groups.contains(group) {
                    self.problem(format!(
                        "TxnOffsetCommit for group {group} not in the transaction"
                    ));
                    c = code(KafkaCode::TransactionAbortable);
                }
                let c = scripted.unwrap_or(c);
                if c == 0 {
                    self.open
                        .offsets
                        .extend(offsets.iter().map(|&(p, o)| (group.clone(), p, o)));
                }
                Answer {
                    code: c,
                    parts: parts(c),
                    ..Answer::default()
                }
            }
            Req::EndTxn { id, epoch, commit } => {
                if let Some(c) = scripted {
                    return Answer::code(c);
                }
                if (call.version >= 5) != self.v2() {
                    self.problem(format!(
                        "EndTxn v{} under transaction version {:?}",
                        call.version, self.version
                    ));
                }
                let c = self.check_producer("EndTxn", *id, *epoch);
                if c != 0 {
                    return Answer::code(c);
                }
                self.end(*commit);
                // Version 2: every transaction ends with a new epoch.
                let next = (call.version >= 5).then(|| self.bump((*id, *epoch)));
                if let Some(next) = next {
                    self.producer = Some(next);
                }
                Answer {
                    producer: next,
                    ..Answer::default()
                }
            }
            Req::Produce(batches) => {
                let mut answer = Answer::default();
                for b in batches {
                    let (c, offset) = match scripted {
                        Some(c) => (c, -1),
                        None => self.append(call.version, b),
                    };
                    if answer.code == 0 {
                        answer.code = c;
                    }
                    answer.parts.push((b.partition, c, offset));
                }
                answer
            }
        }
    }

    /// A partition leader's checks, then the append: the code and base offset.
    fn append(&mut self, version: i16, b: &SeenBatch) -> (i16, i64) {
        let p = b.partition;
        if !b.transactional {
            self.problem(format!(
                "a batch for {TOPIC}-{p} without the transactional bit"
            ));
        }
        let implicit = version >= 12;
        if implicit != self.v2() {
            self.problem(format!(
                "Produce v{version} under transaction version {:?}",
                self.version
            ));
        }
        match self.producer {
            Some(now) if now == (b.id, b.epoch) => {}
            Some((id, epoch)) if id == b.id && b.epoch < epoch => {
                self.problem(format!(
                    "a batch for {TOPIC}-{p} with stale epoch {}",
                    b.epoch
                ));
                return (code(KafkaCode::InvalidProducerEpoch), -1);
            }
            now => {
                self.problem(format!(
                    "a batch for {TOPIC}-{p} from producer {} epoch {}; the transactional id has {now:?}",
                    b.id, b.epoch
                ));
                return (code(KafkaCode::InvalidProducerEpoch), -1);
            }
        }
        if implicit {
            self.open.partitions.insert(p);
        } else if !self.open.partitions.contains(&p) {
            self.problem(format!("a batch for {TOPIC}-{p} before AddPartitionsToTxn"));
            return (code(KafkaCode::TransactionAbortable), -1);
        }
        let expected = match self.sequences[p as usize] {
            Some((id, epoch, next)) if (id, epoch) == (b.id, b.epoch) => next,
            _ => 0,
        };
        if b.base_seq != expected {
            self.problem(format!(
                "a batch for {TOPIC}-{p} with sequence {}, expected {expected}",
                b.base_seq
            ));
            return (code(KafkaCode::OutOfOrderSequenceNumber), -1);
        }
        let n = b.values.len();
        self.sequences[p as usize] = Some((b.id, b.epoch, b.base_seq + n as i32));
        let offset = self.next_offset[p as usize];
        self.next_offset[p as usize] += n as i64;
        self.open
            .records
            .extend(b.values.iter().map(|v| (p, v.clone())));
        (0, offset)
    }
}

/// A rule may answer a request in the model's place (`Some(code)`), and may change the
/// model (move the coordinator, say).
type Rule = Box<dyn FnMut(&Call, &mut Model) -> Option<i16> + Send>;

struct State {
    model: Model,
    rules: Vec<Rule>,
    log: Vec<Seen>,
}

type Conns = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// The fake cluster: two nodes, their listener threads and their connections' threads, all
/// stopped and joined (within a bound) when it is dropped.
struct Fake {
    addrs: Vec<String>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    listeners: Vec<JoinHandle<()>>,
    conns: Conns,
}

impl Fake {
    /// A fake cluster with `transaction.version` `version` and topic `t` of `partitions`.
    fn start(version: TransactionVersion, partitions: usize) -> Fake {
        logging();
        let sockets = [0, 1].map(|_| TcpListener::bind("127.0.0.1:0").unwrap());
        let ports = [0, 1].map(|i| sockets[i].local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State {
            model: Model::new(version, ports, partitions),
            rules: Vec::new(),
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::new(Mutex::new(Vec::new()));
        let listeners = sockets
            .into_iter()
            .enumerate()
            .map(|(node, listener)| {
                let (state, stop, conns) = (state.clone(), stop.clone(), conns.clone());
                thread::Builder::new()
                    .name(format!("fake-node-{node}"))
                    .spawn(move || accept(listener, node as i32, state, stop, conns))
                    .unwrap()
            })
            .collect();
        Fake {
            addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            state,
            stop,
            listeners,
            conns,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Apply `rule` to every request from now on (the first rule with an answer wins).
    fn on(&self, rule: impl FnMut(&Call, &mut Model) -> Option<i16> + Send + 'static) {
        self.state().rules.push(Box::new(rule));
    }

    /// Answer the next requests that `which` matches with `codes`, one each, in turn (0:
    /// as the model says); later ones as the model says.
    fn answer(&self, which: fn(&Req) -> bool, codes: &[i16]) {
        let mut codes: VecDeque<i16> = codes.iter().copied().collect();
        self.on(move |call, _| {
            if which(&call.req) {
                codes.pop_front().filter(|&c| c != 0)
            } else {
                None
            }
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.state().log.clone()
    }

    /// The requests `which` matches, in the order the fake took them up.
    fn seen_where(&self, which: fn(&Req) -> bool) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| which(&s.req)).collect()
    }

    /// Every batch produced, with the version of its request and the code it got.
    fn batches(&self) -> Vec<(i16, SeenBatch, i16)> {
        let mut out = Vec::new();
        for s in self.seen() {
            if let Req::Produce(batches) = s.req {
                out.extend(batches.into_iter().map(|b| (s.version, b, s.code)));
            }
        }
        out
    }

    fn committed(&self) -> Vec<String> {
        let st = self.state();
        st.model.committed.iter().map(|(_, v)| v.clone()).collect()
    }

    fn aborted(&self) -> Vec<String> {
        let st = self.state();
        st.model.aborted.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The fake found nothing wrong with what it received.
    fn assert_sane(&self) {
        let st = self.state();
        assert!(
            st.model.problems.is_empty(),
            "the fake broker found: {:#?}\nit received: {:#?}",
            st.model.problems,
            st.log
        );
    }
}

/// Wait for `handle` at most until `deadline`.
fn join_by(handle: JoinHandle<()>, deadline: Instant, what: &str) {
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if handle.is_finished() {
        if handle.join().is_err() && !thread::panicking() {
            panic!("{what} panicked");
        }
    } else if !thread::panicking() {
        panic!("{what} did not stop within its bound");
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        self.stop.store(true, Ordering::SeqCst);
        // Wake the listeners out of `accept`.
        for addr in &self.addrs {
            let _ = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1));
        }
        for (node, l) in self.listeners.drain(..).enumerate() {
            join_by(l, deadline, &format!("the listener of fake node {node}"));
        }
        // No connection is accepted any more: end those open, whoever holds the other end.
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        for (sock, _) in &conns {
            let _ = sock.shutdown(Shutdown::Both);
        }
        for (_, handle) in conns {
            join_by(handle, deadline, "a fake connection");
        }
    }
}

fn accept(
    listener: TcpListener,
    node: i32,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    conns: Conns,
) {
    for sock in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let Ok(twin) = sock.try_clone() else { continue };
        let state = state.clone();
        let handle = thread::Builder::new()
            .name(format!("fake-conn-{node}"))
            .spawn(move || serve(sock, node, &state))
            .unwrap();
        conns.lock().unwrap().push((twin, handle));
    }
}

/// One connection: read a request, answer it, until the client (or the fake's drop) ends
/// the connection.
fn serve(mut sock: TcpStream, node: i32, state: &Mutex<State>) {
    loop {
        let mut size = [0u8; 4];
        if sock.read_exact(&mut size).is_err() {
            return;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(size).clamp(0, 64 << 20) as usize];
        if buf.len() < 8 || sock.read_exact(&mut buf).is_err() {
            return;
        }
        let key = i16::from_be_bytes([buf[0], buf[1]]);
        let version = i16::from_be_bytes([buf[2], buf[3]]);
        let correlation_id = i32::from_be_bytes(buf[4..8].try_into().unwrap());
        let frame = Frame {
            version,
            correlation_id,
            body: Bytes::from(buf),
        };
        match respond(&frame, key, node, state) {
            Ok(out) => {
                if sock.write_all(&out).is_err() {
                    return;
                }
            }
            Err(problem) => {
                state.lock().unwrap().model.problem(problem);
                return;
            }
        }
    }
}

/// A request as read: its version, correlation id, and all its bytes (header included).
struct Frame {
    version: i16,
    correlation_id: i32,
    body: Bytes,
}

impl Frame {
    /// Decode the request (after its header).
    fn decode<R: Request + Decodable>(&self) -> Result<R, String> {
        let mut body = self.body.clone();
        RequestHeader::decode(&mut body, R::header_version(self.version))
            .and_then(|_| R::decode(&mut body, self.version))
            .map_err(|e| format!("{}: {e}", std::any::type_name::<R>()))
    }

    /// The response frame for `body`.
    fn encode<R: Request>(&self, body: &R::Response) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = self.correlation_id;
        header
            .encode(&mut buf, R::Response::header_version(self.version))
            .unwrap();
        body.encode(&mut buf, self.version).unwrap();
        let mut out = (buf.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// The response to the request in `frame` (API `key`) received by `node`.
fn respond(frame: &Frame, key: i16, node: i32, state: &Mutex<State>) -> Result<Vec<u8>, String> {
    let v = frame.version;
    let req = match key {
        18 => return Ok(api_versions(frame, state)),
        3 => return metadata(frame, state),
        10 => {
            let r: FindCoordinatorRequest = frame.decode()?;
            let key = match r.coordinator_keys.first() {
                Some(k) if v >= 4 => k.to_string(),
                _ => r.key.to_string(),
            };
            Req::FindCoordinator {
                key_type: r.key_type,
                key,
            }
        }
        22 => {
            let r: InitProducerIdRequest = frame.decode()?;
            if r.transactional_id.as_deref().map(|t| t.as_str()) != Some(TXN_ID) {
                return Err(format!("InitProducerId for {:?}", r.transactional_id));
            }
            Req::InitProducerId {
                id: r.producer_id.0,
                epoch: r.producer_epoch,
            }
        }
        0 => Req::Produce(produce_batches(frame)?),
        24 => {
            let r: AddPartitionsToTxnRequest = frame.decode()?;
            let mut partitions = Vec::new();
            for t in &r.v3_and_below_topics {
                if t.name.0.as_str() != TOPIC {
                    return Err(format!("AddPartitionsToTxn for topic {:?}", t.name.0));
                }
                partitions.extend(t.partitions.iter().copied());
            }
            Req::AddPartitions {
                id: r.v3_and_below_producer_id.0,
                epoch: r.v3_and_below_producer_epoch,
                partitions,
            }
        }
        25 => {
            let r: AddOffsetsToTxnRequest = frame.decode()?;
            Req::AddOffsets {
                id: r.producer_id.0,
                epoch: r.producer_epoch,
                group: r.group_id.0.to_string(),
            }
        }
        28 => {
            let r: TxnOffsetCommitRequest = frame.decode()?;
            let mut offsets = Vec::new();
            for t in &r.topics {
                offsets.extend(
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.committed_offset)),
                );
            }
            Req::TxnOffsetCommit {
                id: r.producer_id.0,
                epoch: r.producer_epoch,
                group: r.group_id.0.to_string(),
                generation: r.generation_id,
                offsets,
            }
        }
        26 => {
            let r: EndTxnRequest = frame.decode()?;
            Req::EndTxn {
                id: r.producer_id.0,
                epoch: r.producer_epoch,
                commit: r.committed,
            }
        }
        key => return Err(format!("unexpected API key {key} v{v}")),
    };
    let call = Call {
        node,
        version: v,
        req,
    };
    let (answer, ports) = {
        let mut st = state.lock().unwrap();
        let State { model, rules, log } = &mut *st;
        let scripted = rules.iter_mut().find_map(|rule| rule(&call, model));
        let answer = model.answer(&call, scripted);
        log::debug!(target: "fake", "node {node}: {:?} v{v} -> {answer:?}", call.req);
        log.push(Seen {
            node,
            version: v,
            req: call.req.clone(),
            code: answer.code,
        });
        (answer, model.ports)
    };
    let no_producer = (-1, -1);
    Ok(match &call.req {
        Req::FindCoordinator { key, .. } => {
            let mut resp = FindCoordinatorResponse::default();
            let port = ports[answer.node as usize] as i32;
            if v >= 4 {
                let mut c = Coordinator::default();
                c.key = s(key);
                c.error_code = answer.code;
                c.node_id = answer.node.into();
                c.host = s("127.0.0.1");
                c.port = port;
                resp.coordinators.push(c);
            } else {
                resp.error_code = answer.code;
                resp.node_id = answer.node.into();
                resp.host = s("127.0.0.1");
                resp.port = port;
            }
            frame.encode::<FindCoordinatorRequest>(&resp)
        }
        Req::InitProducerId { .. } => {
            let mut resp = InitProducerIdResponse::default();
            let (id, epoch) = answer.producer.unwrap_or(no_producer);
            resp.error_code = answer.code;
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
            resp.ongoing_txn_producer_id = ProducerId(-1);
            resp.ongoing_txn_producer_epoch = -1;
            frame.encode::<InitProducerIdRequest>(&resp)
        }
        Req::Produce(_) => {
            let mut resp = ProduceResponse::default();
            let mut t = TopicProduceResponse::default();
            t.name = TopicName(s(TOPIC));
            t.topic_id = TOPIC_ID;
            for (index, code, offset) in answer.parts {
                let mut p = PartitionProduceResponse::default();
                p.index = index;
                p.error_code = code;
                p.base_offset = offset;
                p.log_append_time_ms = -1;
                p.log_start_offset = 0;
                t.partition_responses.push(p);
            }
            resp.responses.push(t);
            frame.encode::<ProduceRequest>(&resp)
        }
        Req::AddPartitions { .. } => {
            let mut resp = AddPartitionsToTxnResponse::default();
            let mut t = AddPartitionsToTxnTopicResult::default();
            t.name = TopicName(s(TOPIC));
            for (index, code, _) in answer.parts {
                let mut p = AddPartitionsToTxnPartitionResult::default();
                p.partition_index = index;
                p.partition_error_code = code;
                t.results_by_partition.push(p);
            }
            resp.results_by_topic_v3_and_below.push(t);
            frame.encode::<AddPartitionsToTxnRequest>(&resp)
        }
        Req::AddOffsets { .. } => {
            let mut resp = AddOffsetsToTxnResponse::default();
            resp.error_code = answer.code;
            frame.encode::<AddOffsetsToTxnRequest>(&resp)
        }
        Req::TxnOffsetCommit { .. } => {
            let mut resp = TxnOffsetCommitResponse::default();
            let mut t = TxnOffsetCommitResponseTopic::default();
            t.name = TopicName(s(TOPIC));
            for (index, code, _) in answer.parts {
                let mut p = TxnOffsetCommitResponsePartition::default();
                p.partition_index = index;
                p.error_code = code;
                t.partitions.push(p);
            }
            resp.topics.push(t);
            frame.encode::<TxnOffsetCommitRequest>(&resp)
        }
        Req::EndTxn { .. } => {
            let mut resp = EndTxnResponse::default();
            let (id, epoch) = answer.producer.unwrap_or(no_producer);
            resp.error_code = answer.code;
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
            frame.encode::<EndTxnRequest>(&resp)
        }
    })
}

/// Kafka 4.4.0's ranges, and its finalized features with `transaction.version` at the
/// fake's level (ApiVersions v3+ carries them in tagged fields).
fn api_versions(frame: &Frame, state: &Mutex<State>) -> Vec<u8> {
    let mut resp = ApiVersionsResponse::default();
    for &(key, min, max) in KAFKA_4_4 {
        let mut v = ApiVersion::default();
        v.api_key = key;
        v.min_version = min;
        v.max_version = max;
        resp.api_keys.push(v);
    }
    let level = match state.lock().unwrap().model.version {
        TransactionVersion::V1 => 1,
        TransactionVersion::V2 => 2,
    };
    resp.finalized_features_epoch = 1;
    for (name, level) in [("metadata.version", 33), ("transaction.version", level)] {
        let mut f = FinalizedFeatureKey::default();
        f.name = s(name);
        f.min_version_level = level;
        f.max_version_level = level;
        resp.finalized_features.push(f);
    }
    frame.encode::<ApiVersionsRequest>(&resp)
}

/// Both nodes, and topic `t` (led by node 0) if asked for.
fn metadata(frame: &Frame, state: &Mutex<State>) -> Result<Vec<u8>, String> {
    let req: MetadataRequest = frame.decode()?;
    let (ports, partitions) = {
        let st = state.lock().unwrap();
        (st.model.ports, st.model.partitions)
    };
    let mut resp = MetadataResponse::default();
    for (node, port) in ports.iter().enumerate() {
        let mut b = MetadataResponseBroker::default();
        b.node_id = (node as i32).into();
        b.host = s("127.0.0.1");
        b.port = *port as i32;
        resp.brokers.push(b);
    }
    resp.cluster_id = Some(s("fake-txn-cluster"));
    resp.controller_id = 0.into();
    let wanted: Vec<(Option<String>, Uuid)> = match &req.topics {
        None => vec![(Some(TOPIC.to_owned()), TOPIC_ID)],
        Some(ts) => ts
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect(),
    };
    for (name, id) in wanted {
        let mut t = MetadataResponseTopic::default();
        let ours = name.as_deref() == Some(TOPIC) || (name.is_none() && id == TOPIC_ID);
        t.name = Some(TopicName(s(name.as_deref().unwrap_or(TOPIC))));
        if ours {
            t.topic_id = TOPIC_ID;
            for i in 0..partitions {
                let mut p = MetadataResponsePartition::default();
                p.partition_index = i as i32;
                p.leader_id = 0.into();
                p.leader_epoch = 0;
                p.replica_nodes = vec![0.into()];
                p.isr_nodes = vec![0.into()];
                t.partitions.push(p);
            }
        } else {
            t.error_code = code(KafkaCode::UnknownTopicOrPartition);
        }
        resp.topics.push(t);
    }
    Ok(frame.encode::<MetadataRequest>(&resp))
}

/// The batches of a Produce request (one v2 batch per partition of `t`), checked.
fn produce_batches(frame: &Frame) -> Result<Vec<SeenBatch>, String> {
    let req: ProduceRequest = frame.decode()?;
    if req.transactional_id.as_deref().map(|t| t.as_str()) != Some(TXN_ID) {
        return Err(format!(
            "a Produce with transactional id {:?}",
            req.transactional_id
        ));
    }
    if req.acks != -1 {
        return Err(format!("a transactional Produce with acks {}", req.acks));
    }
    let mut out = Vec::new();
    for t in &req.topic_data {
        let ours = if frame.version >= 13 {
            t.topic_id == TOPIC_ID
        } else {
            t.name.0.as_str() == TOPIC
        };
        if !ours {
            return Err(format!("a batch for topic {:?} ({})", t.name.0, t.topic_id));
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
            // The v2 batch header: attributes at 21, producer id at 43, epoch at 51, base
            // sequence at 53.
            let attributes = i16::from_be_bytes([data[21], data[22]]);
            out.push(SeenBatch {
                partition: p.index,
                id: i64::from_be_bytes(data[43..51].try_into().unwrap()),
                epoch: i16::from_be_bytes([data[51], data[52]]),
                base_seq: i32::from_be_bytes(data[53..57].try_into().unwrap()),
                transactional: attributes & 0x10 != 0,
                values: records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into())
                    .collect(),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn logging() {
    let _ = env_logger::builder()
        .is_test(true)
        .format_timestamp_micros()
        .try_init();
}

/// A transactional producer for `fake`, with short bounds.
fn config(fake: &Fake) -> ProducerConfig {
    let mut c = ProducerConfig::new(&fake.addrs[0]).topic(TOPIC);
    c.transactional_id = Some(TXN_ID.into());
    c.transaction_timeout = Duration::from_secs(10);
    c.client.connection.request_timeout = Duration::from_secs(3);
    c.client.connection.connect_timeout = Duration::from_secs(1);
    c.client.retry_backoff = Duration::from_millis(10);
    c.client.retry_backoff_max = Duration::from_millis(100);
    c.write_timeout = Duration::from_secs(2);
    c.delivery_timeout = Duration::from_secs(8);
    c.close_timeout = Duration::from_secs(4);
    c.linger = Duration::from_millis(2);
    c
}

fn start(fake: &Fake) -> Producer {
    Producer::new(config(fake)).unwrap_or_else(|e| panic!("the producer did not start: {e}"))
}

fn send(producer: &Producer, record: ProducerRecord) -> DeliveryReceipt {
    producer
        .send_tracked(record)
        .unwrap_or_else(|e| panic!("send: {e}"))
}

fn outcome(receipt: DeliveryReceipt) -> Result<Delivery, DeliveryError> {
    receipt
        .wait_timeout(END)
        .expect("an outcome within the bound")
}

/// Send `value` and wait until it is acknowledged.
fn deliver(producer: &Producer, value: &str) -> Delivery {
    outcome(send(producer, ProducerRecord::new(value.to_owned())))
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// One transaction of `values`, each acknowledged before the commit.
fn commit(producer: &Producer, values: &[&str]) {
    producer.begin_transaction().expect("begin");
    for v in values {
        deliver(producer, v);
    }
    producer.commit_transaction(END).expect("commit");
}

fn close(producer: Producer) -> kpipe::producer::Summary {
    let summary = producer.close(END).expect("close");
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        summary.accepted,
        "{summary:?}"
    );
    summary
}

fn rejected_with(outcome: &Result<Delivery, DeliveryError>, code: KafkaCode) -> bool {
    matches!(outcome, Err(DeliveryError::Rejected(e)) if e.kafka_code() == Some(code))
}

fn abortable(r: Result<(), TransactionError>, what: &str) -> TransactionError {
    match r {
        Err(e) if e.is_abortable() && !e.is_fatal() => e,
        other => panic!("{what}: wanted an abortable error, got {other:?}"),
    }
}

fn fatal(r: Result<(), TransactionError>, what: &str) -> TransactionError {
    match r {
        Err(e) if e.is_fatal() && !e.is_abortable() => e,
        other => panic!("{what}: wanted a fatal error, got {other:?}"),
    }
}

/// The code inside a transactional error.
fn code_of(e: &TransactionError) -> Option<KafkaCode> {
    match e {
        TransactionError::Abortable(e) | TransactionError::Fatal(e) => e.kafka_code(),
        _ => None,
    }
}

fn is_end(r: &Req) -> bool {
    matches!(r, Req::EndTxn { .. })
}

fn is_commit(r: &Req) -> bool {
    matches!(r, Req::EndTxn { commit: true, .. })
}

fn is_abort(r: &Req) -> bool {
    matches!(r, Req::EndTxn { commit: false, .. })
}

fn is_init(r: &Req) -> bool {
    matches!(r, Req::InitProducerId { .. })
}

fn is_produce(r: &Req) -> bool {
    matches!(r, Req::Produce(_))
}

fn is_offsets(r: &Req) -> bool {
    matches!(r, Req::TxnOffsetCommit { .. })
}

fn is_txn_lookup(r: &Req) -> bool {
    matches!(r, Req::FindCoordinator { key_type: 1, .. })
}

/// The EndTxn requests received: (commit, producer id, epoch, code).
fn end_txns(fake: &Fake) -> Vec<(bool, i64, i16, i16)> {
    fake.seen_where(is_end)
        .into_iter()
        .map(|s| match s.req {
            Req::EndTxn { id, epoch, commit } => (commit, id, epoch, s.code),
            _ => unreachable!(),
        })
        .collect()
}

fn group() -> GroupMetadata {
    GroupMetadata {
        group_id: "g".into(),
        generation_id: 3,
        member_id: "member-1".into(),
        group_instance_id: None,
    }
}

fn offsets(offset: i64) -> BTreeMap<TopicPartition, i64> {
    BTreeMap::from([(("in".to_string(), 0), offset)])
}

// ---------------------------------------------------------------------------------------
// Retriable
// ---------------------------------------------------------------------------------------

#[test]
fn end_txn_answered_concurrent_transactions_is_sent_again_until_the_commit_is_written() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    let concurrent = code(KafkaCode::ConcurrentTransactions);
    fake.answer(is_end, &[concurrent, concurrent]);
    commit(&producer, &["a", "b"]);
    let ends = end_txns(&fake);
    assert_eq!(
        ends,
        [
            (true, PRODUCER_ID, 0, concurrent),
            (true, PRODUCER_ID, 0, concurrent),
            (true, PRODUCER_ID, 0, 0),
        ],
        "the same EndTxn (commit, same epoch) until it is written"
    );
    assert_eq!(fake.committed(), ["a", "b"]);
    let summary = close(producer);
    assert_eq!((summary.transactions_committed, summary.delivered), (1, 2));
    fake.assert_sane();
}

#[test]
fn a_coordinator_loading_at_start_is_waited_out() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    fake.answer(is_init, &[code(KafkaCode::CoordinatorLoadInProgress)]);
    let producer = start(&fake);
    let inits: Vec<(Req, i16)> = fake
        .seen_where(is_init)
        .into_iter()
        .map(|s| (s.req, s.code))
        .collect();
    let fresh = Req::InitProducerId { id: -1, epoch: -1 };
    assert_eq!(
        inits,
        [
            (fresh.clone(), code(KafkaCode::CoordinatorLoadInProgress)),
            (fresh, 0)
        ]
    );
    assert_eq!(
        producer.stats().producer,
        Some(ProducerIdentity {
            id: PRODUCER_ID,
            epoch: 0
        })
    );
    // And the producer works.
    commit(&producer, &["a"]);
    assert_eq!(fake.committed(), ["a"]);
    assert_eq!(close(producer).transactions_committed, 1);
    fake.assert_sane();
}

#[test]
fn a_produce_answered_concurrent_transactions_is_sent_again() {
    // Under version 2 the leader adds the partition to the transaction itself, and answers
    // CONCURRENT_TRANSACTIONS while the previous transaction's markers are still being
    // written (Produce v12+): the Java client retries it (design brief, section 2).
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    commit(&producer, &["first"]);
    fake.answer(is_produce, &[code(KafkaCode::ConcurrentTransactions)]);
    producer.begin_transaction().unwrap();
    let receipt = send(&producer, ProducerRecord::new("second"));
    let delivered = outcome(receipt);
    assert!(delivered.is_ok(), "{delivered:?}");
    producer.commit_transaction(END).unwrap();
    assert_eq!(fake.committed(), ["first", "second"]);
    let produces = fake.seen_where(is_produce);
    assert_eq!(produces.len(), 3, "{produces:#?}");
    assert_eq!(close(producer).transactions_committed, 2);
    fake.assert_sane();
}

// ---------------------------------------------------------------------------------------
// The coordinator moved
// ---------------------------------------------------------------------------------------

#[test]
fn a_coordinator_that_moved_is_found_again_and_the_end_txn_goes_there() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    // The coordinator moves to node 1 just as the EndTxn reaches node 0, which then answers
    // NOT_COORDINATOR.
    let mut moved = false;
    fake.on(move |call, model| {
        if is_end(&call.req) && !moved {
            moved = true;
            model.coordinator = 1;
        }
        None
    });
    commit(&producer, &["a"]);
    let seen = fake.seen();
    let first_end = seen.iter().position(|s| is_end(&s.req)).unwrap();
    let after: Vec<(i32, &Req, i16)> = seen[first_end..]
        .iter()
        .filter(|s| is_end(&s.req) || is_txn_lookup(&s.req))
        .map(|s| (s.node, &s.req, s.code))
        .collect();
    let end = Req::EndTxn {
        id: PRODUCER_ID,
        epoch: 0,
        commit: true,
    };
    let lookup = Req::FindCoordinator {
        key_type: 1,
        key: TXN_ID.into(),
    };
    assert!(
        matches!(
            after.as_slice(),
            [(0, e1, 16), (_, l, 0), (1, e2, 0)] if **e1 == end && **l == lookup && **e2 == end
        ),
        "EndTxn at node 0 (NOT_COORDINATOR), FindCoordinator, EndTxn at node 1: {after:#?}"
    );
    assert_eq!(fake.committed(), ["a"]);
    assert_eq!(close(producer).transactions_committed, 1);
    fake.assert_sane();
}

// ---------------------------------------------------------------------------------------
// Abortable
// ---------------------------------------------------------------------------------------

/// A Produce of the transaction refused with `refusal`: the record fails, the commit is
/// refused as abortable without an EndTxn, the abort ends the transaction, and the next one
/// commits.
fn a_refused_produce_makes_the_transaction_abortable(refusal: KafkaCode) {
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    fake.answer(is_produce, &[code(refusal)]);
    producer.begin_transaction().unwrap();
    let refused = outcome(send(&producer, ProducerRecord::new("refused")));
    assert!(rejected_with(&refused, refusal), "{refused:?}");
    let e = abortable(producer.commit_transaction(END), "commit");
    assert_eq!(code_of(&e), Some(refusal), "{e}");
    assert!(
        fake.seen_where(is_commit).is_empty(),
        "no EndTxn(commit) for a transaction that cannot commit"
    );
    // Nothing goes into it any more; a begin is refused until it is aborted.
    let e = abortable(producer.begin_transaction(), "begin before the abort");
    assert_eq!(code_of(&e), Some(refusal));
    producer.abort_transaction(END).expect("abort");
    assert_eq!(
        end_txns(&fake),
        [(false, PRODUCER_ID, 0, 0)],
        "one EndTxn(abort), at the epoch of the transaction"
    );
    // The producer goes on, at the epoch the abort returned.
    commit(&producer, &["next"]);
    assert_eq!(
        end_txns(&fake),
        [(false, PRODUCER_ID, 0, 0), (true, PRODUCER_ID, 1, 0)]
    );
    assert_eq!(fake.committed(), ["next"]);
    let summary = close(producer);
    assert_eq!(
        (
            summary.transactions_committed,
            summary.transactions_aborted,
            summary.delivered,
            summary.failed
        ),
        (1, 1, 1, 1),
        "{summary:?}"
    );
    fake.assert_sane();
}

#[test]
fn a_produce_answered_transaction_abortable_makes_the_commit_abortable() {
    a_refused_produce_makes_the_transaction_abortable(KafkaCode::TransactionAbortable);
}

#[test]
fn a_produce_answered_invalid_producer_epoch_is_abortable_not_fatal() {
    // KIP-588: from a partition leader (which, under version 2, says so for a coordinator's
    // PRODUCER_FENCED), INVALID_PRODUCER_EPOCH fails the transaction; the EndTxn that
    // follows says whether the producer was fenced.
    a_refused_produce_makes_the_transaction_abortable(KafkaCode::InvalidProducerEpoch);
}

#[test]
fn a_group_that_moved_on_makes_send_offsets_abortable_and_the_abort_works() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    let generation = code(KafkaCode::IllegalGeneration);
    fake.answer(is_offsets, &[generation]);
    producer.begin_transaction().unwrap();
    deliver(&producer, "output");
    let e = abortable(
        producer.send_offsets_to_transaction(&offsets(42), &group()),
        "send_offsets_to_transaction",
    );
    assert_eq!(code_of(&e), Some(KafkaCode::IllegalGeneration), "{e}");
    let sent: Vec<(i16, Req)> = fake
        .seen_where(is_offsets)
        .into_iter()
        .map(|s| (s.version, s.req))
        .collect();
    assert_eq!(
        sent,
        [(
            5,
            Req::TxnOffsetCommit {
                id: PRODUCER_ID,
                epoch: 0,
                group: "g".into(),
                generation: 3,
                offsets: vec![(0, 42)],
            }
        )],
        "one TxnOffsetCommit v5 (version 2 adds the group itself), with the generation"
    );
    abortable(producer.commit_transaction(END), "commit");
    producer.abort_transaction(END).expect("abort");
    assert_eq!(end_txns(&fake), [(false, PRODUCER_ID, 0, 0)]);
    assert_eq!(fake.aborted(), ["output"]);
    // The next transaction, offsets and all, commits.
    producer.begin_transaction().unwrap();
    deliver(&producer, "output-2");
    producer
        .send_offsets_to_transaction(&offsets(43), &group())
        .expect("offsets");
    producer.commit_transaction(END).expect("commit");
    assert_eq!(fake.committed(), ["output-2"]);
    assert_eq!(
        fake.state().model.committed_offsets,
        [("g".to_string(), 0, 43)]
    );
    let summary = close(producer);
    assert_eq!(
        (summary.transactions_committed, summary.transactions_aborted),
        (1, 1)
    );
    fake.assert_sane();
}

#[test]
fn an_abort_after_only_offsets_failed_still_ends_the_transaction_at_the_coordinator() {
    // TxnOffsetCommit v5 adds the group's offsets partition to the transaction before the
    // group coordinator checks the member (Kafka's transaction verification), so the
    // transaction is open at the coordinator even though the offsets were refused. The Java
    // client marks the transaction started when it sends the offsets under version 2 and so
    // ends it with EndTxn(abort); without that the coordinator keeps it open until the
    // transaction timeout, then aborts it and bumps the epoch, fencing this producer.
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    fake.answer(is_offsets, &[code(KafkaCode::IllegalGeneration)]);
    producer.begin_transaction().unwrap();
    abortable(
        producer.send_offsets_to_transaction(&offsets(42), &group()),
        "send_offsets_to_transaction",
    );
    assert!(
        fake.state().model.open.groups.contains("g"),
        "the fake added the group to the transaction"
    );
    producer.abort_transaction(END).expect("abort");
    assert_eq!(
        end_txns(&fake),
        [(false, PRODUCER_ID, 0, 0)],
        "the transaction open at the coordinator is aborted there"
    );
    assert!(fake.state().model.open.is_empty());
    close(producer);
    fake.assert_sane();
}

#[test]
fn an_end_txn_commit_answered_transaction_abortable_is_abortable_and_can_be_aborted() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    fake.answer(is_commit, &[code(KafkaCode::TransactionAbortable)]);
    producer.begin_transaction().unwrap();
    deliver(&producer, "a");
    let e = abortable(producer.commit_transaction(END), "commit");
    assert_eq!(code_of(&e), Some(KafkaCode::TransactionAbortable), "{e}");
    producer.abort_transaction(END).expect("abort");
    assert_eq!(
        end_txns(&fake),
        [
            (true, PRODUCER_ID, 0, code(KafkaCode::TransactionAbortable)),
            (false, PRODUCER_ID, 0, 0)
        ]
    );
    assert_eq!(fake.aborted(), ["a"]);
    commit(&producer, &["b"]);
    assert_eq!(fake.committed(), ["b"]);
    let summary = close(producer);
    assert_eq!(
        (summary.transactions_committed, summary.transactions_aborted),
        (1, 1)
    );
    fake.assert_sane();
}

#[test]
fn an_abort_answered_transaction_abortable_is_fatal_and_not_sent_again() {
    // KAFKA-19250: an abort refused as abortable cannot be ended otherwise; aborting again
    // would loop.
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    fake.on(|call, _| is_abort(&call.req).then_some(code(KafkaCode::TransactionAbortable)));
    producer.begin_transaction().unwrap();
    deliver(&producer, "a");
    let e = fatal(producer.abort_transaction(END), "abort");
    assert_eq!(code_of(&e), Some(KafkaCode::TransactionAbortable), "{e}");
    let e = fatal(producer.begin_transaction(), "begin after a fatal error");
    assert_eq!(code_of(&e), Some(KafkaCode::TransactionAbortable), "{e}");
    fatal(producer.abort_transaction(END), "abort again");
    let summary = close(producer);
    assert_eq!(
        end_txns(&fake),
        [(false, PRODUCER_ID, 0, code(KafkaCode::TransactionAbortable))],
        "one EndTxn(abort), never repeated"
    );
    assert_eq!(
        (summary.transactions_committed, summary.transactions_aborted),
        (0, 0)
    );
    fake.assert_sane();
}

// ---------------------------------------------------------------------------------------
// Fatal
// ---------------------------------------------------------------------------------------

#[test]
fn an_end_txn_answered_producer_fenced_is_fatal_and_the_producer_stops() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    let producer = start(&fake);
    fake.answer(is_end, &[code(KafkaCode::ProducerFenced)]);
    producer.begin_transaction().unwrap();
    deliver(&producer, "a");
    let e = fatal(producer.commit_transaction(END), "commit");
    assert_eq!(code_of(&e), Some(KafkaCode::ProducerFenced), "{e}");
    let e = fatal(producer.begin_transaction(), "begin after being fenced");
    assert_eq!(code_of(&e), Some(KafkaCode::ProducerFenced), "{e}");
    fatal(producer.abort_transaction(END), "abort after being fenced");
    // Refused, the record handed back (as NoTransaction: the commit closed the
    // transaction before the fence closed the producer).
    match producer.send(ProducerRecord::new("late")) {
        Err(SendError::Closed(_) | SendError::NoTransaction(_)) => {}
        other => panic!("a send after being fenced: {other:?}"),
    }
    assert!(producer.stats().fatal.is_some());
    let summary = close(producer);
    assert_eq!(
        end_txns(&fake),
        [(true, PRODUCER_ID, 0, code(KafkaCode::ProducerFenced))],
        "no EndTxn after the fence"
    );
    assert!(fake.committed().is_empty() && fake.aborted().is_empty());
    assert_eq!(
        (summary.transactions_committed, summary.transactions_aborted),
        (0, 0)
    );
    fake.assert_sane();
}

/// InitProducerId answered `refusal`: `Producer::new` fails at once, naming the code.
fn a_refused_init_fails_the_start(refusal: KafkaCode) {
    let fake = Fake::start(TransactionVersion::V2, 1);
    fake.answer(is_init, &[code(refusal)]);
    let started = Instant::now();
    let e = match Producer::new(config(&fake)) {
        Err(e) => e,
        Ok(_) => panic!("the producer started though InitProducerId was refused"),
    };
    let text = e.to_string();
    assert!(
        text.contains(&format!("Kafka error {}", refusal.code()))
            && text.contains("InitProducerId"),
        "{text}"
    );
    match &e {
        kpipe::producer::Error::Client(c) => assert_eq!(c.kafka_code(), Some(refusal)),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen_where(is_init).len(), 1, "not retried");
    assert!(started.elapsed() < Duration::from_secs(3), "at once");
    fake.assert_sane();
}

#[test]
fn init_producer_id_answered_transactional_id_authorization_failed_fails_the_start() {
    a_refused_init_fails_the_start(KafkaCode::TransactionalIdAuthorizationFailed);
}

#[test]
fn init_producer_id_answered_invalid_transaction_timeout_fails_the_start() {
    a_refused_init_fails_the_start(KafkaCode::InvalidTransactionTimeout);
}

// ---------------------------------------------------------------------------------------
// Transaction version 2: every transaction at the epoch the last EndTxn returned
// ---------------------------------------------------------------------------------------

#[test]
fn under_version_2_each_transaction_produces_at_the_epoch_the_last_end_txn_returned() {
    let fake = Fake::start(TransactionVersion::V2, 1);
    // Two epochs short of the end: the second EndTxn hands out a new producer id.
    fake.state().model.first_epoch = i16::MAX - 2;
    let producer = start(&fake);
    let identities = [
        (PRODUCER_ID, i16::MAX - 2),
        (PRODUCER_ID, i16::MAX - 1),
        (PRODUCER_ID + 1, 0),
    ];
    for t in 0..identities.len() {
        producer.begin_transaction().unwrap();
        // Two rounds, so that each transaction has at least two batches.
        for round in 0..2 {
            let receipts: Vec<_> = (0..3)
                .map(|i| send(&producer, ProducerRecord::new(format!("{t}-{round}-{i}"))))
                .collect();
            for r in receipts {
                outcome(r).expect("delivered");
            }
        }
        producer.commit_transaction(END).expect("commit");
    }
    let ends: Vec<(i16, bool, i64, i16)> = fake
        .seen_where(is_end)
        .into_iter()
        .map(|s| match s.req {
            Req::EndTxn { id, epoch, commit } => (s.version, commit, id, epoch),
            _ => unreachable!(),
        })
        .collect();
    let want: Vec<_> = identities.iter().map(|&(id, e)| (5, true, id, e)).collect();
    assert_eq!(
        ends, want,
        "EndTxn v5, each at the identity the one before returned"
    );
    let batches = fake.batches();
    for (t, &(id, epoch)) in identities.iter().enumerate() {
        let of_t: Vec<&(i16, SeenBatch, i16)> = batches
            .iter()
            .filter(|(_, b, _)| b.values[0].starts_with(&format!("{t}-")))
            .collect();
        assert!(of_t.len() >= 2, "transaction {t}: {of_t:#?}");
        let mut next_seq = 0;
        for (version, b, code) in of_t {
            assert_eq!(*code, 0, "{b:?}");
            assert!(
                *version >= 12,
                "Produce v{version} in a version 2 transaction"
            );
            assert!(b.transactional, "the transactional bit: {b:?}");
            assert_eq!(
                (b.id, b.epoch, b.base_seq),
                (id, epoch, next_seq),
                "transaction {t}: sequences from 0 at the new identity"
            );
            next_seq += b.values.len() as i32;
        }
    }
    assert!(
        fake.seen()
            .iter()
            .all(|s| !matches!(s.req, Req::AddPartitions { .. } | Req::AddOffsets { .. })),
        "version 2 adds partitions and groups implicitly"
    );
    assert_eq!(fake.committed().len(), 18);
    let summary = close(producer);
    assert_eq!((summary.transactions_committed, summary.delivered), (3, 18));
    fake.assert_sane();
}

// ---------------------------------------------------------------------------------------
// Transaction version 1
// ---------------------------------------------------------------------------------------

/// A key that the Java partitioner puts on `partition` of 2.
fn key_for(partition: usize) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| java_partition(k.as_bytes(), 2) == partition)
        .unwrap()
}

/// Send `value` keyed to `partition` (of 2) and wait for its acknowledgement.
fn deliver_to(producer: &Producer, partition: usize, value: &str) {
    let record = ProducerRecord::new(value.to_owned()).key(key_for(partition));
    let d = outcome(send(producer, record)).unwrap_or_else(|e| panic!("{value}: {e}"));
    assert_eq!(d.partition, partition as i32);
}

#[test]
fn under_version_1_partitions_and_groups_join_first_versions_are_capped_and_an_abort_bumps_the_epoch(
) {
    let fake = Fake::start(TransactionVersion::V1, 2);
    let producer = start(&fake);
    // 1: both partitions, committed.
    producer.begin_transaction().unwrap();
    deliver_to(&producer, 0, "1-p0");
    deliver_to(&producer, 1, "1-p1");
    producer.commit_transaction(END).expect("commit 1");
    // 2: partition 0 and the consumer's offsets, aborted.
    producer.begin_transaction().unwrap();
    deliver_to(&producer, 0, "2-p0");
    producer
        .send_offsets_to_transaction(&offsets(7), &group())
        .expect("offsets");
    producer.abort_transaction(END).expect("abort 2");
    // 3: both partitions again, committed at the bumped epoch.
    producer.begin_transaction().unwrap();
    deliver_to(&producer, 1, "3-p1");
    deliver_to(&producer, 0, "3-p0");
    producer.commit_transaction(END).expect("commit 3");

    let seen = fake.seen();
    // Every partition joins each transaction before its first batch there: the fake
    // refuses (and notes) a batch for a partition not added.
    fake.assert_sane();
    let adds: Vec<(i16, Vec<i32>)> = seen
        .iter()
        .filter_map(|s| match &s.req {
            Req::AddPartitions { partitions, .. } => Some((s.version, partitions.clone())),
            _ => None,
        })
        .collect();
    let mut added: Vec<i32> = adds.iter().flat_map(|(_, p)| p.clone()).collect();
    added.sort_unstable();
    assert_eq!(
        added,
        [0, 0, 0, 1, 1],
        "each partition once per transaction: {adds:?}"
    );
    assert!(
        adds.iter().all(|(v, _)| *v <= 3),
        "AddPartitionsToTxn v3 or below: {adds:?}"
    );
    // The version caps of version 1.
    for s in &seen {
        let cap = match s.req {
            Req::Produce(_) => 11,
            Req::EndTxn { .. } | Req::TxnOffsetCommit { .. } => 4,
            _ => continue,
        };
        assert!(
            s.version <= cap,
            "{:?} at v{} (at most v{cap} under version 1)",
            s.req,
            s.version
        );
    }
    // The group joins before its offsets.
    let group_reqs: Vec<&Req> = seen
        .iter()
        .map(|s| &s.req)
        .filter(|r| matches!(r, Req::AddOffsets { .. } | Req::TxnOffsetCommit { .. }))
        .collect();
    assert!(
        matches!(
            group_reqs.as_slice(),
            [Req::AddOffsets { group: g1, .. }, Req::TxnOffsetCommit { group: g2, generation: 3, .. }]
                if g1 == "g" && g2 == "g"
        ),
        "{group_reqs:#?}"
    );
    // The ends: commit and abort at epoch 0, then the abort's epoch bump (InitProducerId
    // naming the current id and epoch), then the commit at epoch 1.
    let ends_and_inits: Vec<&Req> = seen
        .iter()
        .map(|s| &s.req)
        .filter(|r| is_end(r) || is_init(r))
        .collect();
    let end = |epoch, commit| Req::EndTxn {
        id: PRODUCER_ID,
        epoch,
        commit,
    };
    assert_eq!(
        ends_and_inits,
        [
            &Req::InitProducerId { id: -1, epoch: -1 },
            &end(0, true),
            &end(0, false),
            &Req::InitProducerId {
                id: PRODUCER_ID,
                epoch: 0
            },
            &end(1, true),
        ]
    );
    // Batches: epoch 0 (sequences going on across the commit) until the abort, then epoch 1
    // from sequence 0.
    let batches: Vec<(i32, i16, i32, String)> = fake
        .batches()
        .into_iter()
        .map(|(_, b, _)| (b.partition, b.epoch, b.base_seq, b.values[0].clone()))
        .collect();
    let mut sorted = batches.clone();
    sorted.sort_by_key(|b| b.3.clone());
    assert_eq!(
        sorted,
        [
            (0, 0, 0, "1-p0".to_string()),
            (1, 0, 0, "1-p1".to_string()),
            (0, 0, 1, "2-p0".to_string()),
            (0, 1, 0, "3-p0".to_string()),
            (1, 1, 0, "3-p1".to_string()),
        ],
        "{batches:?}"
    );
    assert!(fake.batches().iter().all(|(_, b, _)| b.transactional));
    let mut committed = fake.committed();
    committed.sort();
    assert_eq!(committed, ["1-p0", "1-p1", "3-p0", "3-p1"]);
    assert_eq!(fake.aborted(), ["2-p0"]);
    assert!(fake.state().model.committed_offsets.is_empty());
    let summary = close(producer);
    assert_eq!(
        (
            summary.transactions_committed,
            summary.transactions_aborted,
            summary.delivered
        ),
        (2, 1, 5)
    );
    fake.assert_sane();
}
