//! The share member's answers to each class of share-session and share-group fault
//! (KIP-932), driven through [`ShareConsumer`] against a fake broker, because a real one will
//! not give these on demand: a session the broker lost (SHARE_SESSION_NOT_FOUND,
//! INVALID_SHARE_SESSION_EPOCH), one partition's acknowledgements refused
//! (INVALID_RECORD_STATE), a fenced member (FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID), a
//! coordinator or a leader that moved (NOT_COORDINATOR, NOT_LEADER_OR_FOLLOWER), a
//! connection dropped under a ShareFetch, acquired offsets without a record, and close.
//!
//! The fake is two nodes on 127.0.0.1 (one thread per connection, the `kafka-protocol`
//! codecs) that advertise Kafka 4.4.0's ranges of the APIs a share member uses
//! (ShareGroupHeartbeat v1, ShareFetch and ShareAcknowledge v1-v2) and the finalized features
//! `share.version` 1 and `metadata.version` 33. It *models* one share group on topic `t`
//! (two partitions, node 0 leading both at first):
//!
//! - the coordinator (node 0 unless a test moves it; the other node answers NOT_COORDINATOR)
//!   takes a member in at epoch 0 with the next group epoch and the whole assignment (by
//!   topic id, the one Metadata gives), keeps it at that epoch, lets it leave at -1;
//! - each leader keeps one share session: epoch 0 opens it with the partitions named (and
//!   must carry no acknowledgement), each later request must carry the next epoch and adds
//!   the partitions it names and drops those it forgets, a ShareAcknowledge at -1 closes it;
//! - records a test queues for a partition are handed out, one delivery per fetch, to the
//!   session of the partition's leader; the offsets they cover are acquired until
//!   acknowledged; a session partition this node does not lead is answered
//!   NOT_LEADER_OR_FOLLOWER at every fetch until it is forgotten, as Kafka's session does;
//! - a fetch with nothing to answer is held up to its `max_wait_ms`, as a broker holds it.
//!
//! What breaks those rules (a wrong epoch, acknowledgements at epoch 0, an offset
//! acknowledged that was not acquired, a member id that is not the one that joined) is noted
//! as a problem and fails the test. On top of the model each test scripts faults
//! ([`Fake::once`]) and checks what the consumer returned and counted against the requests
//! the fake recorded.
//!
//! The fake's framing, threads and teardown are those of `tests/txn_faults.rs`; what it
//! answers is its own. `RUST_LOG=kpipe=debug,fake=debug` traces both sides.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::share_acknowledge_response::{
    PartitionData as AckPartition, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, PartitionData as FetchPartition, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kpipe::client::{Compression, KafkaCode};
use kpipe::consumer::{AckOutcome, Acknowledge, GroupProtocol, ShareConsumer};
use kpipe::unstable::{encode_batch, Record};
use kpipe::{ConsumedRecord, ConsumerConfig};
use uuid::Uuid;

/// The share group every test's consumer joins.
const GROUP: &str = "share-faults";
/// The fake's topic, its id, and its partitions.
const TOPIC: &str = "t";
const TOPIC_ID: Uuid = Uuid::from_u128(0x6b70_6970_6573_6861_7265_6661_756c_7401);
const PARTITIONS: i32 = 2;
/// The heartbeat interval the coordinator names.
const HEARTBEAT_MS: i32 = 100;
/// The acquisition lock the leaders name.
const LOCK_MS: i32 = 30_000;
/// Bound on every wait in the tests.
const END: Duration = Duration::from_secs(10);
/// How long one `poll` of a test waits.
const POLL: Duration = Duration::from_millis(50);

/// The API version ranges (key, min, max) of Kafka 4.4.0 for the APIs a share member uses:
/// ApiVersions, Metadata, FindCoordinator, ShareGroupHeartbeat, ShareFetch, ShareAcknowledge.
const KAFKA_4_4: &[(i16, i16, i16)] = &[
    (18, 0, 4),
    (3, 0, 13),
    (10, 0, 6),
    (76, 1, 1),
    (78, 1, 2),
    (79, 1, 2),
];

fn code(k: KafkaCode) -> i16 {
    k.code()
}

// ---------------------------------------------------------------------------------------
// The fake broker
// ---------------------------------------------------------------------------------------

/// A ShareFetch or ShareAcknowledge as the fake received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ShareReq {
    member: String,
    epoch: i32,
    /// The partitions named (with acknowledgements or without), ascending.
    partitions: Vec<i32>,
    /// Acknowledgement batches by partition: first offset, last offset, types.
    acks: BTreeMap<i32, Vec<(i64, i64, Vec<i8>)>>,
    /// Partitions forgotten (ShareFetch), ascending.
    forgotten: Vec<i32>,
    /// ShareFetch: how long the fetch may be held.
    max_wait_ms: i32,
}

/// A request the fake took up (ApiVersions is answered but not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Metadata,
    FindCoordinator {
        key: String,
    },
    Heartbeat {
        member: String,
        epoch: i32,
        topics: Option<Vec<String>>,
    },
    Fetch(ShareReq),
    Acknowledge(ShareReq),
}

impl Req {
    fn share(&self) -> Option<&ShareReq> {
        match self {
            Req::Fetch(s) | Req::Acknowledge(s) => Some(s),
            _ => None,
        }
    }

    fn fetch_with_acks(&self) -> bool {
        matches!(self, Req::Fetch(s) if !s.acks.is_empty())
    }
}

/// How the fake answered a request.
#[derive(Debug, Clone, Default)]
struct Answer {
    /// Whether the answer is final (a fetch may still be held).
    done: bool,
    /// The connection was dropped instead.
    dropped: bool,
    /// The top-level error code.
    code: i16,
    /// Per partition: the fetch error code and the acknowledgement error code.
    parts: BTreeMap<i32, (i16, i16)>,
    /// The offsets of the records handed over, by partition.
    records: BTreeMap<i32, Vec<i64>>,
    /// Heartbeat: the member epoch given.
    epoch: i32,
}

/// A request in the fake's log: where and when it came, on which connection, and its answer.
#[derive(Debug, Clone)]
struct Seen {
    node: i32,
    conn: u64,
    at: Instant,
    req: Req,
    answer: Answer,
}

/// What a rule makes the fake answer instead of the model.
#[derive(Debug, Clone)]
enum Reply {
    /// A top-level error code.
    Code(i16),
    /// These acknowledgement error codes for these partitions; the rest as the model says.
    AckCodes(Vec<(i32, i16)>),
    /// Close the connection without an answer (the request is not processed).
    Drop,
}

/// Records for one partition, handed out by one fetch.
#[derive(Debug, Clone)]
struct Delivery {
    /// The acquired ranges: first, last, delivery count.
    acquired: Vec<(i64, i64, i16)>,
    /// The record batches.
    batches: Bytes,
}

/// One leader's share session.
#[derive(Debug, Clone)]
struct Session {
    member: String,
    /// The epoch the next request must carry.
    next: i32,
    partitions: BTreeSet<i32>,
}

/// The fake's model of one share group on topic `t`.
struct Model {
    ports: [u16; 2],
    /// The leader of each partition.
    leaders: Vec<i32>,
    coordinator: i32,
    group_epoch: i32,
    /// The member the coordinator has: its id and epoch.
    member: Option<(String, i32)>,
    /// The member ids that joined, in order.
    joined: Vec<String>,
    /// The partitions the coordinator assigns.
    assignment: Vec<i32>,
    /// Each leader's share session.
    sessions: BTreeMap<i32, Session>,
    /// Records waiting to be acquired, by partition.
    pending: BTreeMap<i32, VecDeque<Delivery>>,
    /// Offsets acquired and not acknowledged, by partition.
    acquired: BTreeMap<i32, BTreeSet<i64>>,
    /// What the fake found wrong; a test fails if any.
    problems: Vec<String>,
}

impl Model {
    fn new(ports: [u16; 2]) -> Model {
        Model {
            ports,
            leaders: vec![0; PARTITIONS as usize],
            coordinator: 0,
            group_epoch: 0,
            member: None,
            joined: Vec::new(),
            assignment: (0..PARTITIONS).collect(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            acquired: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, what: String) {
        log::warn!(target: "fake", "problem: {what}");
        self.problems.push(what);
    }

    /// Queue `delivery` for partition `p`.
    fn push(&mut self, p: i32, delivery: Delivery) {
        self.pending.entry(p).or_default().push_back(delivery);
    }

    /// A ShareGroupHeartbeat received by `node`: the error code and the epoch given, and
    /// the assignment when it is sent.
    fn heartbeat(
        &mut self,
        node: i32,
        member: &str,
        epoch: i32,
        topics: &Option<Vec<String>>,
        scripted: Option<i16>,
    ) -> (i16, i32, Option<Vec<i32>>) {
        if let Some(c) = scripted {
            if c == code(KafkaCode::FencedMemberEpoch) || c == code(KafkaCode::UnknownMemberId) {
                self.member = None;
            }
            return (c, 0, None);
        }
        if node != self.coordinator {
            return (code(KafkaCode::NotCoordinator), 0, None);
        }
        match epoch {
            0 => {
                if topics.as_deref() != Some(&[TOPIC.to_owned()][..]) {
                    self.problem(format!("a join subscribed to {topics:?}"));
                }
                if member.is_empty() {
                    self.problem("a join without a member id (v1: the member names itself)".into());
                }
                self.group_epoch += 1;
                self.member = Some((member.to_owned(), self.group_epoch));
                self.joined.push(member.to_owned());
                (0, self.group_epoch, Some(self.assignment.clone()))
            }
            -1 => {
                if self.member.as_ref().map(|(m, _)| m.as_str()) != Some(member) {
                    self.problem(format!("{member} left, not being a member"));
                }
                self.member = None;
                (0, -1, None)
            }
            e => match &self.member {
                Some((m, now)) if m == member && *now == e => (0, e, None),
                known => {
                    let known = known.clone();
                    self.problem(format!(
                        "a heartbeat from {member} at epoch {e}; the coordinator has {known:?}"
                    ));
                    (code(KafkaCode::FencedMemberEpoch), 0, None)
                }
            },
        }
    }

    /// The session checks of a ShareFetch (`fetch`) or ShareAcknowledge received by `node`;
    /// moves the session on. `Err`: the top-level error to answer.
    fn session(&mut self, node: i32, r: &ShareReq, fetch: bool) -> Result<(), i16> {
        let api = if fetch {
            "ShareFetch"
        } else {
            "ShareAcknowledge"
        };
        if self.member.as_ref().map(|(m, _)| m.as_str()) != Some(r.member.as_str())
            && !self.joined.contains(&r.member)
        {
            self.problem(format!(
                "{api} from member {:?}, which never joined ({:?} did)",
                r.member, self.joined
            ));
        }
        match r.epoch {
            0 if !fetch => {
                self.problem("a ShareAcknowledge at epoch 0 (it cannot open a session)".into());
                Err(code(KafkaCode::InvalidShareSessionEpoch))
            }
            0 => {
                if !r.acks.is_empty() {
                    self.problem(format!("acknowledgements at epoch 0: {:?}", r.acks));
                    return Err(code(KafkaCode::InvalidRequest));
                }
                if !r.forgotten.is_empty() {
                    self.problem(format!(
                        "partitions forgotten at epoch 0: {:?}",
                        r.forgotten
                    ));
                }
                self.sessions.insert(
                    node,
                    Session {
                        member: r.member.clone(),
                        next: 1,
                        partitions: r.partitions.iter().copied().collect(),
                    },
                );
                Ok(())
            }
            -1 if !fetch => match self.sessions.remove(&node) {
                Some(s) if s.member == r.member => {
                    // Closing the session releases what its member still holds.
                    self.acquired.clear();
                    Ok(())
                }
                other => {
                    self.problem(format!(
                        "a session closed on node {node} that was {other:?}"
                    ));
                    Err(code(KafkaCode::ShareSessionNotFound))
                }
            },
            e => {
                let Some(s) = self.sessions.get_mut(&node) else {
                    self.problem(format!(
                        "{api} at epoch {e} on node {node}, with no session"
                    ));
                    return Err(code(KafkaCode::ShareSessionNotFound));
                };
                if s.member != r.member || s.next != e {
                    let (member, next) = (s.member.clone(), s.next);
                    self.problem(format!(
                        "{api} at epoch {e} from {}; node {node}'s session is {member}'s at {next}",
                        r.member
                    ));
                    return Err(code(KafkaCode::InvalidShareSessionEpoch));
                }
                s.next = if e == i32::MAX { 1 } else { e + 1 };
                if fetch {
                    s.partitions.extend(r.partitions.iter().copied());
                    let strays: Vec<i32> = r
                        .forgotten
                        .iter()
                        .copied()
                        .filter(|p| !s.partitions.remove(p))
                        .collect();
                    for p in strays {
                        self.problem(format!("partition {p} forgotten, not in the session"));
                    }
                }
                Ok(())
            }
        }
    }

    /// Take the acknowledgements of `r`: the acknowledgement error code per partition
    /// (`refused` ones answered as given, the offsets kept acquired).
    fn acknowledge(&mut self, r: &ShareReq, refused: &[(i32, i16)]) -> BTreeMap<i32, i16> {
        let mut codes = BTreeMap::new();
        for (&p, batches) in &r.acks {
            if let Some(&(_, c)) = refused.iter().find(|(rp, _)| *rp == p) {
                codes.insert(p, c);
                continue;
            }
            let mut c = 0;
            for (first, last, types) in batches {
                let span = last - first + 1;
                if span < 1 || (types.len() != 1 && types.len() as i64 != span) {
                    self.problem(format!(
                        "batch {first}..={last} of p{p} with types {types:?}"
                    ));
                    c = code(KafkaCode::InvalidRequest);
                    continue;
                }
                for o in *first..=*last {
                    let t = types[if types.len() == 1 {
                        0
                    } else {
                        (o - first) as usize
                    }];
                    if !(0..=3).contains(&t) {
                        self.problem(format!("p{p}@{o} acknowledged with type {t}"));
                    }
                    let held = self.acquired.get_mut(&p).is_some_and(|a| a.remove(&o));
                    if !held {
                        self.problem(format!("p{p}@{o} acknowledged ({t}), not acquired"));
                        c = code(KafkaCode::InvalidRecordState);
                    }
                }
            }
            codes.insert(p, c);
        }
        codes
    }

    /// Whether a fetch to `node` has something to answer now: records, or a partition the
    /// node does not lead.
    fn has_data(&self, node: i32) -> bool {
        self.sessions.get(&node).is_some_and(|s| {
            s.partitions.iter().any(|&p| {
                self.leaders[p as usize] != node
                    || self.pending.get(&p).is_some_and(|q| !q.is_empty())
            })
        })
    }

    /// What a fetch to `node` gets: per session partition, an error or one delivery.
    fn take_data(&mut self, node: i32) -> BTreeMap<i32, Result<Delivery, i16>> {
        let mut out = BTreeMap::new();
        let parts: Vec<i32> = match self.sessions.get(&node) {
            Some(s) => s.partitions.iter().copied().collect(),
            None => return out,
        };
        for p in parts {
            if self.leaders[p as usize] != node {
                out.insert(p, Err(code(KafkaCode::NotLeaderOrFollower)));
            } else if let Some(d) = self.pending.get_mut(&p).and_then(VecDeque::pop_front) {
                let held = self.acquired.entry(p).or_default();
                for &(first, last, _) in &d.acquired {
                    held.extend(first..=last);
                }
                out.insert(p, Ok(d));
            }
        }
        out
    }
}

/// A rule may answer a request in the model's place, and may change the model.
type Rule = Box<dyn FnMut(&Req, i32, &mut Model) -> Option<Reply> + Send>;

struct State {
    model: Model,
    rules: Vec<Rule>,
    log: Vec<Seen>,
    /// Connections accepted so far (their serials).
    conns: u64,
}

/// What the fake's threads share.
struct Inner {
    state: Mutex<State>,
    /// Notified at every change: a request logged or answered, the model changed, stop.
    changed: Condvar,
    stop: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Conns = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// The fake cluster: two nodes, their listener threads and their connections' threads, all
/// stopped and joined (within a bound) when it is dropped.
struct Fake {
    addrs: Vec<String>,
    inner: Arc<Inner>,
    listeners: Vec<JoinHandle<()>>,
    conns: Conns,
}

impl Fake {
    fn start() -> Fake {
        logging();
        let sockets = [0, 1].map(|_| TcpListener::bind("127.0.0.1:0").unwrap());
        let ports = [0, 1].map(|i| sockets[i].local_addr().unwrap().port());
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                model: Model::new(ports),
                rules: Vec::new(),
                log: Vec::new(),
                conns: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let conns: Conns = Arc::new(Mutex::new(Vec::new()));
        let listeners = sockets
            .into_iter()
            .enumerate()
            .map(|(node, listener)| {
                let (inner, conns) = (inner.clone(), conns.clone());
                thread::Builder::new()
                    .name(format!("fake-node-{node}"))
                    .spawn(move || accept(listener, node as i32, inner, conns))
                    .unwrap()
            })
            .collect();
        Fake {
            addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            inner,
            listeners,
            conns,
        }
    }

    /// Change the model (and wake held fetches).
    fn model<T>(&self, change: impl FnOnce(&mut Model) -> T) -> T {
        let out = change(&mut self.inner.lock().model);
        self.inner.changed.notify_all();
        out
    }

    /// Queue records at `offsets` of partition `p`, acquired as `first..=last` (delivery
    /// count 1).
    fn records(&self, p: i32, offsets: &[i64], acquired: (i64, i64)) {
        let d = delivery(p, offsets, acquired);
        self.model(|m| m.push(p, d));
    }

    /// Answer the first request `which` matches with `reply` (from now on).
    fn once(&self, which: fn(&Req) -> bool, reply: Reply) {
        let mut reply = Some(reply);
        self.inner.lock().rules.push(Box::new(
            move |req, _, _| {
                if which(req) {
                    reply.take()
                } else {
                    None
                }
            },
        ));
    }

    fn seen(&self) -> Vec<Seen> {
        self.inner.lock().log.clone()
    }

    fn heartbeats(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| matches!(s.req, Req::Heartbeat { .. }))
            .collect()
    }

    /// The fake found nothing wrong with what it received.
    fn assert_sane(&self) {
        let st = self.inner.lock();
        assert!(
            st.model.problems.is_empty(),
            "the fake broker found: {:#?}\nit received: {:#?}",
            st.model.problems,
            st.log
        );
    }

    /// The log, for assertion messages (its first 60 and last 20 requests when longer).
    fn dump(&self) -> String {
        let log = self.seen();
        let mut out = String::new();
        for (i, s) in log.iter().enumerate() {
            if i == 60 && log.len() > 80 {
                out.push_str(&format!("\n  ... {} more", log.len() - 80));
            }
            if i >= 60 && i + 20 < log.len() {
                continue;
            }
            out.push_str(&format!(
                "\n  #{i} node {} conn {}: {:?} -> {:?}",
                s.node, s.conn, s.req, s.answer
            ));
        }
        out
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
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
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

fn accept(listener: TcpListener, node: i32, inner: Arc<Inner>, conns: Conns) {
    for sock in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let Ok(twin) = sock.try_clone() else { continue };
        let conn = {
            let mut st = inner.lock();
            st.conns += 1;
            st.conns
        };
        let inner = inner.clone();
        let handle = thread::Builder::new()
            .name(format!("fake-conn-{node}-{conn}"))
            .spawn(move || serve(sock, node, conn, &inner))
            .unwrap();
        conns.lock().unwrap().push((twin, handle));
    }
}

/// One connection: read a request, answer it, until the client (or the fake's drop or a
/// rule) ends the connection.
fn serve(mut sock: TcpStream, node: i32, conn: u64, inner: &Inner) {
    loop {
        let mut size = [0u8; 4];
        if sock.read_exact(&mut size).is_err() {
            return;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(size).clamp(0, 64 << 20) as usize];
        if buf.len() < 8 || sock.read_exact(&mut buf).is_err() {
            return;
        }
        let frame = Frame {
            key: i16::from_be_bytes([buf[0], buf[1]]),
            version: i16::from_be_bytes([buf[2], buf[3]]),
            correlation_id: i32::from_be_bytes(buf[4..8].try_into().unwrap()),
            body: Bytes::from(buf),
        };
        match respond(&frame, node, conn, inner) {
            Ok(Some(out)) => {
                if sock.write_all(&out).is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            Err(problem) => {
                inner.lock().model.problem(problem);
                return;
            }
        }
    }
}

/// A request as read: its key, version, correlation id, and all its bytes (header
/// included).
struct Frame {
    key: i16,
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

/// The response to the request in `frame` received by `node` on connection `conn`; `None`
/// to drop the connection instead.
fn respond(frame: &Frame, node: i32, conn: u64, inner: &Inner) -> Result<Option<Vec<u8>>, String> {
    let req = match frame.key {
        18 => return Ok(Some(api_versions(frame))),
        3 => {
            let _: MetadataRequest = frame.decode()?;
            Req::Metadata
        }
        10 => {
            let r: FindCoordinatorRequest = frame.decode()?;
            let key = match r.coordinator_keys.first() {
                Some(k) if frame.version >= 4 => k.to_string(),
                _ => r.key.to_string(),
            };
            Req::FindCoordinator { key }
        }
        76 => {
            let r: ShareGroupHeartbeatRequest = frame.decode()?;
            if r.group_id.0.as_str() != GROUP {
                return Err(format!("a heartbeat for group {:?}", r.group_id.0));
            }
            Req::Heartbeat {
                member: r.member_id.to_string(),
                epoch: r.member_epoch,
                topics: r
                    .subscribed_topic_names
                    .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
            }
        }
        78 => {
            let r: ShareFetchRequest = frame.decode()?;
            Req::Fetch(share_fetch(&r)?)
        }
        79 => {
            let r: ShareAcknowledgeRequest = frame.decode()?;
            Req::Acknowledge(share_acknowledge(&r)?)
        }
        key => return Err(format!("unexpected API key {key} v{}", frame.version)),
    };
    let mut st = inner.lock();
    let idx = st.log.len();
    st.log.push(Seen {
        node,
        conn,
        at: Instant::now(),
        req: req.clone(),
        answer: Answer::default(),
    });
    let scripted = {
        let State { model, rules, .. } = &mut *st;
        rules.iter_mut().find_map(|rule| rule(&req, node, model))
    };
    inner.changed.notify_all();
    log::debug!(target: "fake", "node {node} #{idx}: {req:?} (scripted: {scripted:?})");
    let mut answer = Answer {
        done: true,
        ..Answer::default()
    };
    if let Some(Reply::Drop) = scripted {
        answer.dropped = true;
        st.log[idx].answer = answer;
        inner.changed.notify_all();
        return Ok(None);
    }
    let top = match scripted {
        Some(Reply::Code(c)) => Some(c),
        _ => None,
    };
    let refused = match &scripted {
        Some(Reply::AckCodes(codes)) => codes.clone(),
        _ => Vec::new(),
    };
    let out = match &req {
        Req::Metadata => frame.encode::<MetadataRequest>(&metadata(&st.model)),
        Req::FindCoordinator { key } => {
            let mut resp = FindCoordinatorResponse::default();
            let c = top.unwrap_or(0);
            let id = st.model.coordinator;
            let port = st.model.ports[id as usize] as i32;
            answer.code = c;
            if frame.version >= 4 {
                let mut co = Coordinator::default();
                co.key = s(key);
                co.error_code = c;
                co.node_id = id.into();
                co.host = s("127.0.0.1");
                co.port = port;
                resp.coordinators.push(co);
            } else {
                resp.error_code = c;
                resp.node_id = id.into();
                resp.host = s("127.0.0.1");
                resp.port = port;
            }
            frame.encode::<FindCoordinatorRequest>(&resp)
        }
        Req::Heartbeat {
            member,
            epoch,
            topics,
        } => {
            let (c, given, assignment) = st.model.heartbeat(node, member, *epoch, topics, top);
            answer.code = c;
            answer.epoch = given;
            let mut resp = ShareGroupHeartbeatResponse::default();
            resp.error_code = c;
            if c == 0 {
                resp.member_id = Some(s(member));
                resp.member_epoch = given;
                resp.heartbeat_interval_ms = HEARTBEAT_MS;
                resp.assignment = assignment.map(|ps| {
                    let mut tp = TopicPartitions::default();
                    tp.topic_id = TOPIC_ID;
                    tp.partitions = ps;
                    let mut a = Assignment::default();
                    a.topic_partitions.push(tp);
                    a
                });
            }
            frame.encode::<ShareGroupHeartbeatRequest>(&resp)
        }
        Req::Fetch(r) => {
            let mut resp = ShareFetchResponse::default();
            let checked = match top {
                Some(c) => Err(c),
                None => st.model.session(node, r, true),
            };
            match checked {
                Err(c) => {
                    if c == code(KafkaCode::ShareSessionNotFound)
                        || c == code(KafkaCode::InvalidShareSessionEpoch)
                    {
                        st.model.sessions.remove(&node);
                    }
                    answer.code = c;
                    resp.error_code = c;
                }
                Ok(()) => {
                    let acked = st.model.acknowledge(r, &refused);
                    // Nothing to give: held, as a broker holds it, until records come or
                    // the wait runs out.
                    let wait = Duration::from_millis(r.max_wait_ms.clamp(0, 1000) as u64);
                    let until = Instant::now() + wait;
                    loop {
                        let now = Instant::now();
                        if st.model.has_data(node)
                            || now >= until
                            || inner.stop.load(Ordering::SeqCst)
                        {
                            break;
                        }
                        st = inner
                            .changed
                            .wait_timeout(st, until - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    let data = st.model.take_data(node);
                    resp.acquisition_lock_timeout_ms = LOCK_MS;
                    let mut t = ShareFetchableTopicResponse::default();
                    t.topic_id = TOPIC_ID;
                    let parts: BTreeSet<i32> = acked.keys().chain(data.keys()).copied().collect();
                    for p in parts {
                        let mut pd = FetchPartition::default();
                        pd.partition_index = p;
                        pd.acknowledge_error_code = acked.get(&p).copied().unwrap_or(0);
                        pd.current_leader.leader_id = st.model.leaders[p as usize];
                        pd.current_leader.leader_epoch = 0;
                        match data.get(&p) {
                            Some(Err(c)) => pd.error_code = *c,
                            Some(Ok(d)) => {
                                pd.records = Some(d.batches.clone());
                                for &(first, last, count) in &d.acquired {
                                    let mut a = AcquiredRecords::default();
                                    a.first_offset = first;
                                    a.last_offset = last;
                                    a.delivery_count = count;
                                    pd.acquired_records.push(a);
                                }
                                answer.records.insert(p, offsets_in(&d.batches));
                            }
                            None => {}
                        }
                        answer
                            .parts
                            .insert(p, (pd.error_code, pd.acknowledge_error_code));
                        t.partitions.push(pd);
                    }
                    if !t.partitions.is_empty() {
                        resp.responses.push(t);
                    }
                }
            }
            frame.encode::<ShareFetchRequest>(&resp)
        }
        Req::Acknowledge(r) => {
            let mut resp = ShareAcknowledgeResponse::default();
            let checked = match top {
                Some(c) => Err(c),
                None => st.model.session(node, r, false),
            };
            match checked {
                Err(c) => {
                    if c == code(KafkaCode::ShareSessionNotFound)
                        || c == code(KafkaCode::InvalidShareSessionEpoch)
                    {
                        st.model.sessions.remove(&node);
                    }
                    answer.code = c;
                    resp.error_code = c;
                }
                Ok(()) => {
                    let acked = st.model.acknowledge(r, &refused);
                    resp.acquisition_lock_timeout_ms = LOCK_MS;
                    let mut t = ShareAcknowledgeTopicResponse::default();
                    t.topic_id = TOPIC_ID;
                    for (p, c) in acked {
                        let mut pd = AckPartition::default();
                        pd.partition_index = p;
                        pd.error_code = c;
                        pd.current_leader.leader_id = st.model.leaders[p as usize];
                        answer.parts.insert(p, (0, c));
                        t.partitions.push(pd);
                    }
                    if !t.partitions.is_empty() {
                        resp.responses.push(t);
                    }
                }
            }
            frame.encode::<ShareAcknowledgeRequest>(&resp)
        }
    };
    log::debug!(target: "fake", "node {node} #{idx}: answered {answer:?}");
    st.log[idx].answer = answer;
    inner.changed.notify_all();
    Ok(Some(out))
}

/// The partitions of a share request's topics, checked to be topic `t`'s.
fn our_partitions<'a, T: 'a>(
    topics: impl IntoIterator<Item = (&'a Uuid, &'a [T])>,
) -> Result<Vec<&'a T>, String> {
    let mut out = Vec::new();
    for (id, parts) in topics {
        if *id != TOPIC_ID {
            return Err(format!("a share request for topic id {id}"));
        }
        out.extend(parts);
    }
    Ok(out)
}

fn share_fetch(r: &ShareFetchRequest) -> Result<ShareReq, String> {
    if r.group_id.as_ref().map(|g| g.0.as_str()) != Some(GROUP) {
        return Err(format!("a ShareFetch for group {:?}", r.group_id));
    }
    let mut out = ShareReq {
        member: r
            .member_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        epoch: r.share_session_epoch,
        max_wait_ms: r.max_wait_ms,
        ..ShareReq::default()
    };
    let parts = our_partitions(
        r.topics
            .iter()
            .map(|t| (&t.topic_id, t.partitions.as_slice())),
    )?;
    for p in parts {
        out.partitions.push(p.partition_index);
        if !p.acknowledgement_batches.is_empty() {
            out.acks.insert(
                p.partition_index,
                p.acknowledgement_batches
                    .iter()
                    .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                    .collect(),
            );
        }
    }
    let forgotten = our_partitions(
        r.forgotten_topics_data
            .iter()
            .map(|t| (&t.topic_id, t.partitions.as_slice())),
    )?;
    out.forgotten = forgotten.into_iter().copied().collect();
    out.partitions.sort_unstable();
    out.forgotten.sort_unstable();
    Ok(out)
}

fn share_acknowledge(r: &ShareAcknowledgeRequest) -> Result<ShareReq, String> {
    if r.group_id.as_ref().map(|g| g.0.as_str()) != Some(GROUP) {
        return Err(format!("a ShareAcknowledge for group {:?}", r.group_id));
    }
    let mut out = ShareReq {
        member: r
            .member_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        epoch: r.share_session_epoch,
        ..ShareReq::default()
    };
    let parts = our_partitions(
        r.topics
            .iter()
            .map(|t| (&t.topic_id, t.partitions.as_slice())),
    )?;
    for p in parts {
        out.partitions.push(p.partition_index);
        out.acks.insert(
            p.partition_index,
            p.acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect(),
        );
    }
    out.partitions.sort_unstable();
    Ok(out)
}

/// Kafka 4.4.0's ranges of the share member's APIs, and the finalized features
/// `share.version` 1 and `metadata.version` 33 (ApiVersions v3+ carries them in tagged
/// fields).
fn api_versions(frame: &Frame) -> Vec<u8> {
    let mut resp = ApiVersionsResponse::default();
    for &(key, min, max) in KAFKA_4_4 {
        let mut v = ApiVersion::default();
        v.api_key = key;
        v.min_version = min;
        v.max_version = max;
        resp.api_keys.push(v);
    }
    resp.finalized_features_epoch = 1;
    for (name, level) in [("metadata.version", 33), ("share.version", 1)] {
        let mut f = FinalizedFeatureKey::default();
        f.name = s(name);
        f.min_version_level = level;
        f.max_version_level = level;
        resp.finalized_features.push(f);
    }
    frame.encode::<ApiVersionsRequest>(&resp)
}

/// Both nodes, and topic `t` with its id and leaders.
fn metadata(model: &Model) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    for (node, port) in model.ports.iter().enumerate() {
        let mut b = MetadataResponseBroker::default();
        b.node_id = (node as i32).into();
        b.host = s("127.0.0.1");
        b.port = *port as i32;
        resp.brokers.push(b);
    }
    resp.cluster_id = Some(s("fake-share-cluster"));
    resp.controller_id = 0.into();
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(s(TOPIC)));
    t.topic_id = TOPIC_ID;
    for (i, &leader) in model.leaders.iter().enumerate() {
        let mut p = MetadataResponsePartition::default();
        p.partition_index = i as i32;
        p.leader_id = leader.into();
        p.leader_epoch = 0;
        p.replica_nodes = vec![leader.into()];
        p.isr_nodes = vec![leader.into()];
        t.partitions.push(p);
    }
    resp.topics.push(t);
    resp
}

/// Records of partition `p` at `offsets` (one batch per run of consecutive offsets, made by
/// kpipe's own encoder), acquired as `first..=last` for the first time.
fn delivery(p: i32, offsets: &[i64], (first, last): (i64, i64)) -> Delivery {
    let mut runs: Vec<Vec<i64>> = Vec::new();
    for &o in offsets {
        match runs.last_mut() {
            Some(run) if run.last() == Some(&(o - 1)) => run.push(o),
            _ => runs.push(vec![o]),
        }
    }
    let mut batches = BytesMut::new();
    for run in runs {
        let records: Vec<Record> = run
            .iter()
            .map(|o| Record {
                value: Some(Bytes::from(format!("p{p}-{o}"))),
                timestamp: 1_700_000_000_000 + o,
                ..Record::default()
            })
            .collect();
        let batch = encode_batch(&records, Compression::None).unwrap();
        let mut batch = BytesMut::from(&batch[..]);
        // The encoder writes base offset 0 (a broker assigns offsets); the base offset is
        // outside the checksum.
        batch[0..8].copy_from_slice(&run[0].to_be_bytes());
        batches.extend_from_slice(&batch);
    }
    Delivery {
        acquired: vec![(first, last, 1)],
        batches: batches.freeze(),
    }
}

/// The offsets of the records in `batches`.
fn offsets_in(batches: &Bytes) -> Vec<i64> {
    let mut records = Vec::new();
    kpipe::unstable::decode_batches(batches, 0, 1 << 20, &mut records).unwrap();
    records.iter().map(|r| r.offset).collect()
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

/// A share consumer's config for `fake`, with short bounds.
fn config(fake: &Fake) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&fake.addrs[0], GROUP, &[TOPIC]);
    c.group_protocol = GroupProtocol::Share;
    c.client.connection.request_timeout = Duration::from_secs(3);
    c.client.connection.connect_timeout = Duration::from_secs(1);
    c.client.retry_backoff = Duration::from_millis(10);
    c.client.retry_backoff_max = Duration::from_millis(100);
    c.fetch.max_wait = Duration::from_millis(100);
    c
}

fn start(config: ConsumerConfig) -> ShareConsumer {
    ShareConsumer::new(config).unwrap_or_else(|e| panic!("the share consumer did not start: {e}"))
}

/// Poll `consumer` until `done` (given the consumer, the records handed out so far, and the
/// fake's log) says so, within [`END`]; returns the records handed out meanwhile. `done` is
/// asked right after each poll, so outcomes a poll collected are still there for `commit`.
fn drive(
    consumer: &mut ShareConsumer,
    fake: &Fake,
    what: &str,
    mut done: impl FnMut(&ShareConsumer, &[ConsumedRecord], &[Seen]) -> bool,
) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + END;
    let mut got = Vec::new();
    loop {
        got.extend(
            consumer
                .poll(POLL)
                .unwrap_or_else(|e| panic!("poll, waiting for {what}: {e}")),
        );
        if done(consumer, &got, &fake.seen()) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {END:?}; handed out {:?}; stats {:?}; the fake received:{}",
            where_(&got),
            consumer.stats(),
            fake.dump()
        );
    }
}

/// Records as (partition, offset).
fn where_(records: &[ConsumedRecord]) -> Vec<(i32, i64)> {
    records.iter().map(|r| (r.partition, r.offset)).collect()
}

/// The share requests of a log, with their positions in it.
fn shares_of(log: &[Seen]) -> Vec<(usize, &ShareReq, &Seen)> {
    log.iter()
        .enumerate()
        .filter_map(|(i, s)| s.req.share().map(|r| (i, r, s)))
        .collect()
}

/// `(first, last, [type])` acknowledgement batches in one line.
fn acks(batches: &[(i64, i64, i8)]) -> Vec<(i64, i64, Vec<i8>)> {
    batches.iter().map(|&(f, l, t)| (f, l, vec![t])).collect()
}

fn accepted(offsets: std::ops::RangeInclusive<i64>) -> Vec<(i64, Acknowledge)> {
    offsets.map(|o| (o, Acknowledge::Accept)).collect()
}

/// The member id the consumer joined with (its first heartbeat's).
fn member_id(fake: &Fake) -> String {
    match fake.heartbeats().first().map(|s| s.req.clone()) {
        Some(Req::Heartbeat { member, .. }) => member,
        _ => panic!("no heartbeat; the fake received:{}", fake.dump()),
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// Epoch 0 opens the session naming every assigned partition and carries no
/// acknowledgement; the next request is epoch 1, carries the implicit acceptance (type 1)
/// of what the first poll handed out, and names only the partition acknowledged.
#[test]
fn a_session_opens_with_every_partition_then_carries_the_last_polls_acceptances() {
    let fake = Fake::start();
    fake.records(0, &[0, 1, 2], (0, 2));
    let mut consumer = start(config(&fake));
    let got = drive(&mut consumer, &fake, "records", |_, got, _| !got.is_empty());
    assert_eq!(where_(&got), [(0, 0), (0, 1), (0, 2)]);
    assert!(got.iter().all(|r| r.delivery_count == Some(1)));
    assert_eq!(got[1].value.as_deref(), Some(&b"p0-1"[..]));
    // The next polls accept them (implicitly) with the next fetch.
    drive(&mut consumer, &fake, "the acceptances taken", |c, _, _| {
        c.stats().acknowledged == 3
    });
    let log = fake.seen();
    let shares = shares_of(&log);
    let (_, open, _) = shares[0];
    assert_eq!(
        (open.epoch, open.partitions.as_slice()),
        (0, &[0, 1][..]),
        "{}",
        fake.dump()
    );
    assert!(open.acks.is_empty() && open.forgotten.is_empty());
    let (_, next, seen) = shares[1];
    assert!(matches!(seen.req, Req::Fetch(_)), "{}", fake.dump());
    assert_eq!(next.epoch, 1);
    assert_eq!(
        next.partitions,
        [0],
        "only the partition acknowledged is named"
    );
    assert_eq!(next.acks, BTreeMap::from([(0, acks(&[(0, 2, 1)]))]));
    assert_eq!(seen.answer.parts.get(&0), Some(&(0, 0)));
    // Each answer moves the epoch on by one, and later fetches name nothing new.
    for (n, (_, r, _)) in shares.iter().enumerate() {
        assert_eq!(r.epoch, n as i32, "{}", fake.dump());
        if n >= 2 {
            assert!(r.partitions.is_empty() && r.acks.is_empty(), "{r:?}");
        }
    }
    let stats = consumer.stats();
    assert_eq!((stats.handled, stats.acknowledge_failures), (3, 0));
    consumer.close(END).unwrap();
    fake.assert_sane();
}

/// A ShareFetch carrying acknowledgements answered with a session error: they fail
/// (counted, and in `commit`'s outcomes), and the very next request opens a new session
/// at epoch 0 naming every partition, with no acknowledgement and no backoff.
fn a_lost_session_fails_its_acknowledgements_and_reopens_at_once(error: KafkaCode) {
    let fake = Fake::start();
    fake.records(0, &[0, 1, 2], (0, 2));
    fake.once(Req::fetch_with_acks, Reply::Code(code(error)));
    let mut config = config(&fake);
    // A backoff would show: the reopening would come seconds later.
    config.client.retry_backoff = Duration::from_secs(3);
    config.client.retry_backoff_max = Duration::from_secs(3);
    let mut consumer = start(config);
    let got = drive(&mut consumer, &fake, "records", |_, got, _| !got.is_empty());
    assert_eq!(where_(&got), [(0, 0), (0, 1), (0, 2)]);
    drive(
        &mut consumer,
        &fake,
        "the acknowledgements failed",
        |c, _, _| c.stats().acknowledge_failures > 0,
    );
    let outcomes = consumer.commit().unwrap();
    drive(&mut consumer, &fake, "a new session", |_, _, log| {
        shares_of(log).len() >= 3
    });
    let log = fake.seen();
    let shares = shares_of(&log);
    let (_, failed, failed_seen) = shares[1];
    assert_eq!(failed.epoch, 1, "{}", fake.dump());
    assert_eq!(failed.acks, BTreeMap::from([(0, acks(&[(0, 2, 1)]))]));
    assert_eq!(failed_seen.answer.code, code(error));
    let (_, reopen, reopen_seen) = shares[2];
    assert!(matches!(reopen_seen.req, Req::Fetch(_)), "{}", fake.dump());
    assert_eq!(reopen.epoch, 0, "{}", fake.dump());
    assert_eq!(reopen.partitions, [0, 1], "every partition named again");
    assert!(reopen.acks.is_empty() && reopen.forgotten.is_empty());
    let gap = reopen_seen.at - failed_seen.at;
    assert!(
        gap < Duration::from_millis(1500),
        "the session reopened {gap:?} after the error: it backed off"
    );
    let stats = consumer.stats();
    assert_eq!((stats.acknowledge_failures, stats.acknowledged), (3, 0));
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let AckOutcome {
        topic,
        partition,
        acknowledged,
        error: why,
    } = &outcomes[0];
    assert_eq!((topic.as_str(), *partition), (TOPIC, 0));
    assert_eq!(acknowledged, &accepted(0..=2));
    let why = why.as_deref().expect("a failed outcome");
    assert!(
        why.contains(&format!("Kafka error {}", code(error))),
        "{why}"
    );
    // The new session works: more records come, and are accepted at its epoch 1.
    fake.records(0, &[3], (3, 3));
    let got = drive(
        &mut consumer,
        &fake,
        "a record of the new session",
        |_, got, _| !got.is_empty(),
    );
    assert_eq!(where_(&got), [(0, 3)]);
    drive(&mut consumer, &fake, "its acceptance", |c, _, _| {
        c.stats().acknowledged == 1
    });
    let log = fake.seen();
    let accept = shares_of(&log)
        .into_iter()
        .skip(2)
        .find(|(_, r, _)| !r.acks.is_empty())
        .map(|(_, r, _)| r.clone())
        .unwrap();
    assert_eq!(accept.acks, BTreeMap::from([(0, acks(&[(3, 3, 1)]))]));
    assert!(accept.epoch >= 1, "{accept:?}");
    consumer.close(END).unwrap();
    fake.assert_sane();
}

#[test]
fn share_session_not_found_fails_the_acknowledgements_and_reopens_at_once() {
    a_lost_session_fails_its_acknowledgements_and_reopens_at_once(KafkaCode::ShareSessionNotFound);
}

#[test]
fn invalid_share_session_epoch_fails_the_acknowledgements_and_reopens_at_once() {
    a_lost_session_fails_its_acknowledgements_and_reopens_at_once(
        KafkaCode::InvalidShareSessionEpoch,
    );
}

/// INVALID_RECORD_STATE for one partition's acknowledgements in a ShareFetch answer: only
/// they fail; the other partition's count as acknowledged, and the session goes on.
#[test]
fn a_refused_acknowledgement_fails_only_its_partition() {
    let fake = Fake::start();
    fake.records(0, &[0, 1], (0, 1));
    fake.records(1, &[0, 1, 2], (0, 2));
    fake.once(
        Req::fetch_with_acks,
        Reply::AckCodes(vec![(1, code(KafkaCode::InvalidRecordState))]),
    );
    let mut consumer = start(config(&fake));
    let got = drive(&mut consumer, &fake, "records", |_, got, _| got.len() >= 5);
    assert_eq!(where_(&got), [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]);
    drive(
        &mut consumer,
        &fake,
        "the acknowledgements settled",
        |c, _, _| {
            let s = c.stats();
            s.acknowledged + s.acknowledge_failures == 5
        },
    );
    let mut outcomes = consumer.commit().unwrap();
    let stats = consumer.stats();
    assert_eq!((stats.acknowledged, stats.acknowledge_failures), (2, 3));
    outcomes.sort_by_key(|o| o.partition);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        (
            outcomes[0].partition,
            &outcomes[0].acknowledged,
            &outcomes[0].error
        ),
        (0, &accepted(0..=1), &None)
    );
    assert_eq!(
        (outcomes[1].partition, &outcomes[1].acknowledged),
        (1, &accepted(0..=2))
    );
    let why = outcomes[1].error.as_deref().expect("partition 1 refused");
    assert!(why.contains("Kafka error 121"), "{why}");
    // One request carried both; the session went on (no new epoch 0).
    let log = fake.seen();
    let shares = shares_of(&log);
    let (_, both, seen) = shares[1];
    assert_eq!(both.epoch, 1);
    assert_eq!(
        both.acks,
        BTreeMap::from([(0, acks(&[(0, 1, 1)])), (1, acks(&[(0, 2, 1)]))])
    );
    assert_eq!(seen.answer.parts.get(&1), Some(&(0, 121)));
    drive(&mut consumer, &fake, "another fetch", |_, _, log| {
        shares_of(log).len() >= 3
    });
    let log = fake.seen();
    for (n, (_, r, _)) in shares_of(&log).iter().enumerate() {
        assert_eq!(r.epoch, n as i32, "{}", fake.dump());
    }
    consumer.close(END).unwrap();
    fake.assert_sane();
}

/// FENCED_MEMBER_EPOCH or UNKNOWN_MEMBER_ID on a heartbeat: the member rejoins at epoch 0
/// with the same member id, takes up its assignment again and goes on reading; every share
/// request carries that id.
fn a_fenced_member_rejoins_with_its_id(error: KafkaCode) {
    let fake = Fake::start();
    fake.records(0, &[0, 1], (0, 1));
    let mut consumer = start(config(&fake));
    let got = drive(&mut consumer, &fake, "records", |_, got, _| !got.is_empty());
    assert_eq!(where_(&got), [(0, 0), (0, 1)]);
    let id = member_id(&fake);
    fake.once(
        |r| matches!(r, Req::Heartbeat { epoch, .. } if *epoch > 0),
        Reply::Code(code(error)),
    );
    drive(&mut consumer, &fake, "a rejoin", |c, _, log| {
        let fenced = log
            .iter()
            .position(|s| matches!(s.req, Req::Heartbeat { .. }) && s.answer.code != 0);
        fenced.is_some_and(|f| {
            log[f..]
                .iter()
                .any(|s| matches!(s.req, Req::Heartbeat { epoch: 0, .. }) && s.answer.epoch > 1)
        }) && !c.assignment().is_empty()
    });
    fake.records(0, &[2, 3], (2, 3));
    let got = drive(
        &mut consumer,
        &fake,
        "records after the rejoin",
        |_, got, _| !got.is_empty(),
    );
    assert_eq!(where_(&got), [(0, 2), (0, 3)]);
    drive(&mut consumer, &fake, "every acceptance taken", |c, _, _| {
        c.stats().acknowledged == 4
    });
    let heartbeats = fake.heartbeats();
    let fenced = heartbeats
        .iter()
        .position(|s| s.answer.code != 0)
        .expect("a fenced heartbeat");
    assert_eq!(heartbeats[fenced].answer.code, code(error));
    let Req::Heartbeat {
        member,
        epoch,
        topics,
    } = &heartbeats[fenced + 1].req
    else {
        unreachable!()
    };
    assert_eq!(
        (member.as_str(), *epoch),
        (id.as_str(), 0),
        "the next heartbeat rejoins with the same id; the fake received:{}",
        fake.dump()
    );
    assert_eq!(topics.as_deref(), Some(&[TOPIC.to_owned()][..]));
    assert_eq!(heartbeats[fenced + 1].answer.epoch, 2, "a new group epoch");
    for hb in &heartbeats[fenced + 2..] {
        assert!(
            matches!(&hb.req, Req::Heartbeat { member, epoch: 2, .. } if *member == id),
            "{:?}",
            hb.req
        );
    }
    let joined = fake.model(|m| m.joined.clone());
    assert_eq!(joined, [id.clone(), id.clone()]);
    for (_, r, _) in shares_of(&fake.seen()) {
        assert_eq!(r.member, id, "a share request from another member id");
    }
    assert_eq!(consumer.stats().acknowledge_failures, 0);
    consumer.close(END).unwrap();
    fake.assert_sane();
}

#[test]
fn fenced_member_epoch_rejoins_at_epoch_zero_with_the_same_member_id() {
    a_fenced_member_rejoins_with_its_id(KafkaCode::FencedMemberEpoch);
}

#[test]
fn unknown_member_id_rejoins_at_epoch_zero_with_the_same_member_id() {
    a_fenced_member_rejoins_with_its_id(KafkaCode::UnknownMemberId);
}

/// NOT_COORDINATOR on a heartbeat (the coordinator moved to node 1): FindCoordinator is
/// asked again, and the member heartbeats to node 1 at the epoch it had (no rejoin).
#[test]
fn not_coordinator_finds_the_coordinator_again() {
    let fake = Fake::start();
    let mut consumer = start(config(&fake));
    drive(&mut consumer, &fake, "an assignment", |c, _, _| {
        !c.assignment().is_empty()
    });
    let before = fake.seen();
    let finds = |log: &[Seen]| {
        log.iter()
            .filter(|s| matches!(s.req, Req::FindCoordinator { .. }))
            .count()
    };
    assert_eq!(finds(&before), 1, "{}", fake.dump());
    fake.model(|m| m.coordinator = 1);
    drive(
        &mut consumer,
        &fake,
        "a heartbeat to node 1",
        |_, _, log| {
            log.iter()
                .any(|s| matches!(s.req, Req::Heartbeat { .. }) && s.node == 1 && s.answer.done)
        },
    );
    let log = fake.seen();
    let refused = log
        .iter()
        .position(|s| s.answer.code == code(KafkaCode::NotCoordinator))
        .unwrap_or_else(|| panic!("no NOT_COORDINATOR; the fake received:{}", fake.dump()));
    assert_eq!(log[refused].node, 0);
    let found = log[refused..]
        .iter()
        .position(|s| matches!(&s.req, Req::FindCoordinator { key } if key == GROUP))
        .map(|i| refused + i)
        .unwrap_or_else(|| panic!("FindCoordinator not asked again:{}", fake.dump()));
    let moved = log[found..]
        .iter()
        .find(|s| matches!(s.req, Req::Heartbeat { .. }))
        .unwrap();
    assert_eq!(moved.node, 1, "{}", fake.dump());
    assert!(
        matches!(moved.req, Req::Heartbeat { epoch: 1, .. }),
        "the member keeps its epoch: {:?}",
        moved.req
    );
    assert_eq!((moved.answer.code, moved.answer.epoch), (0, 1));
    assert_eq!(finds(&log), 2, "{}", fake.dump());
    consumer.close(END).unwrap();
    let log = fake.seen();
    let last = log.last().unwrap();
    assert!(
        matches!(last.req, Req::Heartbeat { epoch: -1, .. }) && last.node == 1,
        "left through the new coordinator: {:?}",
        last
    );
    fake.assert_sane();
}

/// NOT_LEADER_OR_FOLLOWER for a partition of a ShareFetch (its leader moved to node 1):
/// metadata is asked again, node 1 gets a session of its own for the partition, and node
/// 0's session forgets it (a broker answers the error at every fetch until it is forgotten).
#[test]
fn not_leader_or_follower_refreshes_metadata_and_moves_the_partition() {
    let fake = Fake::start();
    fake.records(0, &[0], (0, 0));
    fake.records(1, &[0], (0, 0));
    let mut consumer = start(config(&fake));
    let got = drive(&mut consumer, &fake, "records", |_, got, _| got.len() >= 2);
    assert_eq!(where_(&got), [(0, 0), (1, 0)]);
    // Accepted by node 0 while it still leads both.
    drive(&mut consumer, &fake, "the acceptances taken", |c, _, _| {
        c.stats().acknowledged == 2
    });
    fake.model(|m| {
        m.leaders[1] = 1;
        m.push(1, delivery(1, &[1], (1, 1)));
    });
    let got = drive(&mut consumer, &fake, "a record from node 1", |_, got, _| {
        !got.is_empty()
    });
    assert_eq!(where_(&got), [(1, 1)]);
    // Some more fetches on node 0, to see its session settle.
    drive(&mut consumer, &fake, "node 0 fetching on", |c, _, log| {
        let error = log
            .iter()
            .position(|s| s.answer.parts.get(&1).is_some_and(|p| p.0 != 0));
        c.stats().acknowledged == 3
            && error.is_some_and(|e| {
                log[e + 1..]
                    .iter()
                    .filter(|s| s.node == 0 && matches!(s.req, Req::Fetch(_)))
                    .count()
                    >= 3
            })
    });
    let log = fake.seen();
    let errors: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].answer.parts.get(&1).is_some_and(|p| p.0 != 0))
        .collect();
    let first = errors[0];
    assert_eq!(log[first].node, 0);
    assert_eq!(
        log[first].answer.parts[&1].0,
        code(KafkaCode::NotLeaderOrFollower)
    );
    assert!(
        log[first..].iter().any(|s| s.req == Req::Metadata),
        "metadata not asked again:{}",
        fake.dump()
    );
    let node1: Vec<&ShareReq> = shares_of(&log)
        .into_iter()
        .filter(|(_, _, s)| s.node == 1)
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(
        (node1[0].epoch, node1[0].partitions.as_slice()),
        (0, &[1][..]),
        "node 1's session opens with partition 1 only:{}",
        fake.dump()
    );
    assert_eq!(node1[1].acks, BTreeMap::from([(1, acks(&[(1, 1, 1)]))]));
    let forgot = log[first..]
        .iter()
        .filter(|s| s.node == 0)
        .filter_map(|s| s.req.share())
        .any(|r| r.forgotten == [1]);
    assert!(
        forgot && errors.len() == 1,
        "node 0's session should forget partition 1 once it moved, as the Java client's \
         ShareSessionHandler does; it answered NOT_LEADER_OR_FOLLOWER {} time(s):{}",
        errors.len(),
        fake.dump()
    );
    let stats = consumer.stats();
    assert_eq!((stats.acknowledged, stats.acknowledge_failures), (3, 0));
    consumer.close(END).unwrap();
    fake.assert_sane();
}

/// The connection dropped under a ShareFetch carrying acknowledgements: they fail (their
/// fate is unknown), and a new session opens at epoch 0 on a new connection.
#[test]
fn a_connection_dropped_mid_fetch_fails_its_acknowledgements_and_reopens() {
    let fake = Fake::start();
    fake.records(0, &[0, 1, 2], (0, 2));
    fake.once(Req::fetch_with_acks, Reply::Drop);
    let mut consumer = start(config(&fake));
    let got = drive(&mut consumer, &fake, "records", |_, got, _| !got.is_empty());
    assert_eq!(where_(&got), [(0, 0), (0, 1), (0, 2)]);
    drive(
        &mut consumer,
        &fake,
        "the acknowledgements failed",
        |c, _, _| c.stats().acknowledge_failures > 0,
    );
    let outcomes = consumer.commit().unwrap();
    drive(&mut consumer, &fake, "a new session", |_, _, log| {
        shares_of(log).len() >= 3
    });
    let log = fake.seen();
    let shares = shares_of(&log);
    let (_, lost, lost_seen) = shares[1];
    assert!(lost_seen.answer.dropped, "{}", fake.dump());
    assert_eq!(
        (lost.epoch, &lost.acks),
        (1, &BTreeMap::from([(0, acks(&[(0, 2, 1)]))]))
    );
    let (_, reopen, reopen_seen) = shares[2];
    assert!(matches!(reopen_seen.req, Req::Fetch(_)));
    assert_eq!(
        (reopen.epoch, reopen.partitions.as_slice()),
        (0, &[0, 1][..])
    );
    assert!(reopen.acks.is_empty());
    assert_ne!(reopen_seen.conn, lost_seen.conn, "a new connection");
    let stats = consumer.stats();
    assert_eq!((stats.acknowledge_failures, stats.acknowledged), (3, 0));
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].acknowledged, accepted(0..=2));
    assert!(outcomes[0].error.is_some());
    consumer.close(END).unwrap();
    fake.assert_sane();
}

/// Offsets 0..=9 acquired, the batches holding 0..=7 and 9: offset 8 is never handed out,
/// and the next request acknowledges it as a gap (type 0) beside the acceptances.
#[test]
fn an_acquired_offset_without_a_record_is_acknowledged_as_a_gap() {
    let fake = Fake::start();
    let offsets: Vec<i64> = (0..=7).chain([9]).collect();
    fake.records(0, &offsets, (0, 9));
    let mut consumer = start(config(&fake));
    let got = drive(&mut consumer, &fake, "records", |_, got, _| !got.is_empty());
    let handed: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(handed, offsets, "offset 8 is not handed out");
    drive(
        &mut consumer,
        &fake,
        "the acknowledgements taken",
        |c, _, _| c.stats().acknowledged == 9,
    );
    let log = fake.seen();
    let (_, next, seen) = shares_of(&log)[1];
    assert_eq!(next.epoch, 1);
    assert_eq!(
        next.acks,
        BTreeMap::from([(0, acks(&[(0, 7, 1), (8, 8, 0), (9, 9, 1)]))])
    );
    assert_eq!(seen.answer.parts.get(&0), Some(&(0, 0)));
    assert!(fake.model(|m| m.acquired[&0].is_empty()), "all settled");
    assert_eq!(consumer.stats().acknowledge_failures, 0);
    consumer.close(END).unwrap();
    fake.assert_sane();
}

/// close(): the acknowledgements (what was handed out accepted unless acknowledged
/// otherwise, what was fetched and not handed out released) go in a ShareAcknowledge, then
/// a ShareAcknowledge at epoch -1 closes the session, then a heartbeat at epoch -1 leaves.
#[test]
fn close_acknowledges_then_closes_the_session_then_leaves() {
    let fake = Fake::start();
    fake.records(0, &[0, 1, 2], (0, 2));
    let mut config = config(&fake);
    config.max_poll_records = 2;
    let mut consumer = start(config);
    let got = drive(&mut consumer, &fake, "records", |_, got, _| !got.is_empty());
    assert_eq!(where_(&got), [(0, 0), (0, 1)], "two of three handed out");
    consumer.acknowledge(&got[1], Acknowledge::Release).unwrap();
    let id = member_id(&fake);
    let before = fake.seen().len();
    consumer.close(END).unwrap();
    let log = fake.seen();
    let tail: Vec<&Seen> = log[before..]
        .iter()
        .filter(|s| !matches!(s.req, Req::Heartbeat { epoch, .. } if epoch > 0))
        .filter(|s| !matches!(s.req, Req::Metadata | Req::FindCoordinator { .. }))
        .collect();
    let want = [
        Req::Acknowledge(ShareReq {
            member: id.clone(),
            epoch: 1,
            partitions: vec![0],
            acks: BTreeMap::from([(0, acks(&[(0, 0, 1), (1, 2, 2)]))]),
            ..ShareReq::default()
        }),
        Req::Acknowledge(ShareReq {
            member: id.clone(),
            epoch: -1,
            ..ShareReq::default()
        }),
        Req::Heartbeat {
            member: id.clone(),
            epoch: -1,
            topics: None,
        },
    ];
    let reqs: Vec<&Req> = tail.iter().map(|s| &s.req).collect();
    assert_eq!(reqs, want.iter().collect::<Vec<_>>(), "{}", fake.dump());
    assert!(tail.iter().all(|s| s.answer.code == 0 && s.answer.done));
    assert_eq!(tail[0].answer.parts.get(&0), Some(&(0, 0)));
    assert!(
        matches!(log.last().unwrap().req, Req::Heartbeat { epoch: -1, .. }),
        "leaving is the last request"
    );
    let (sessions, member, acquired) =
        fake.model(|m| (m.sessions.len(), m.member.clone(), m.acquired.clone()));
    assert_eq!((sessions, member), (0, None));
    assert!(acquired.values().all(BTreeSet::is_empty), "{acquired:?}");
    fake.assert_sane();
}
