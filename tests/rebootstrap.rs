//! Rebootstrap (KIP-899, KIP-1102): a client whose known brokers are all gone, silent, or
//! say REBOOTSTRAP_REQUIRED goes back to its bootstrap servers and resolves them again.
//!
//! The bootstrap address is a small fake on loopback standing for a DNS name or a load
//! balancer: what it leads to can change, as it does when a cluster is replaced behind the
//! same name. Before the change it answers ApiVersions and Metadata as the old cluster
//! would (naming brokers that are dead or stalled); after it, it forwards every byte to the
//! real broker (`./scripts/kafka up`), which is the new cluster. That change is the only
//! fault it injects.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request, StrBytes};
use kpipe::client::{ClientConfig, Cluster, KafkaCode, MetadataRecovery};
use uuid::Uuid;

/// What the old cluster answers to a Metadata request.
#[derive(Clone)]
enum Meta {
    /// These brokers (id, `host:port`), topic `t` led by `leader` if given, and this
    /// top-level error code (Metadata v13).
    Answer {
        brokers: Vec<(i32, String)>,
        topic: Option<(String, Uuid, i32)>,
        error: i16,
    },
    /// No answer at all: the request is read and left to time out.
    Silence,
}

impl Meta {
    fn brokers(brokers: Vec<(i32, String)>) -> Meta {
        Meta::Answer {
            brokers,
            topic: None,
            error: 0,
        }
    }
}

/// What stands behind the bootstrap address for one connection.
#[derive(Clone)]
enum Behind {
    /// A broker of the old cluster: the `n`-th Metadata request on the connection is
    /// answered with `meta(n)`.
    Old(Arc<dyn Fn(usize) -> Meta + Send + Sync>),
    /// The new cluster, at this address: bytes are forwarded both ways.
    New(String),
}

fn old(meta: impl Fn(usize) -> Meta + Send + Sync + 'static) -> Behind {
    Behind::Old(Arc::new(meta))
}

type Plan = Box<dyn FnMut(usize) -> Behind + Send>;

/// The fake bootstrap address.
struct Bootstrap {
    addr: String,
    plan: Arc<Mutex<Plan>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Every socket opened for a client, to end them when the cluster is replaced.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Bootstrap {
    /// The `n`-th connection (from 0) is served as `plan(n)` says.
    fn start(plan: impl FnMut(usize) -> Behind + Send + 'static) -> Bootstrap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fake = Bootstrap {
            addr: listener.local_addr().unwrap().to_string(),
            plan: Arc::new(Mutex::new(Box::new(plan))),
            accepted: Arc::new(AtomicUsize::new(0)),
            sockets: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (plan, accepted, sockets, stop) = (
            fake.plan.clone(),
            fake.accepted.clone(),
            fake.sockets.clone(),
            fake.stop.clone(),
        );
        thread::Builder::new()
            .name("fake-bootstrap".into())
            .spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(sock) = sock else { continue };
                    let n = accepted.fetch_add(1, Ordering::SeqCst);
                    let behind = (plan.lock().unwrap())(n);
                    sockets.lock().unwrap().push(sock.try_clone().unwrap());
                    let sockets = sockets.clone();
                    thread::Builder::new()
                        .name(format!("fake-conn-{n}"))
                        .spawn(move || match behind {
                            Behind::Old(meta) => serve_old(sock, &*meta),
                            Behind::New(to) => forward(sock, &to, &sockets),
                        })
                        .unwrap();
                }
            })
            .unwrap();
        fake
    }

    /// The cluster behind the name is replaced: every connection to the old one ends, and
    /// new connections are served as `plan` says.
    fn replace(&self, plan: impl FnMut(usize) -> Behind + Send + 'static) {
        *self.plan.lock().unwrap() = Box::new(plan);
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// An address where nothing listens (connections are refused).
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A listener that takes connections (the kernel completes them) and never says a word.
fn stalled() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn serve_old(mut sock: TcpStream, meta: &(dyn Fn(usize) -> Meta + Send + Sync)) {
    let mut metadata_requests = 0;
    loop {
        let mut size = [0u8; 4];
        if sock.read_exact(&mut size).is_err() {
            return;
        }
        let mut req = vec![0u8; i32::from_be_bytes(size).clamp(8, 1 << 20) as usize];
        if sock.read_exact(&mut req).is_err() {
            return;
        }
        let key = i16::from_be_bytes([req[0], req[1]]);
        let version = i16::from_be_bytes([req[2], req[3]]);
        let correlation_id = i32::from_be_bytes(req[4..8].try_into().unwrap());
        let out = if key == ApiKey::ApiVersions as i16 {
            let mut resp = ApiVersionsResponse::default();
            for (k, min, max) in [(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 13)] {
                let mut v = ApiVersion::default();
                v.api_key = k as i16;
                v.min_version = min;
                v.max_version = max;
                resp.api_keys.push(v);
            }
            encode::<ApiVersionsRequest>(correlation_id, version, &resp)
        } else if key == ApiKey::Metadata as i16 {
            metadata_requests += 1;
            match meta(metadata_requests - 1) {
                Meta::Silence => continue,
                Meta::Answer {
                    brokers,
                    topic,
                    error,
                } => encode::<MetadataRequest>(
                    correlation_id,
                    version,
                    &metadata(brokers, topic, error),
                ),
            }
        } else {
            // The old cluster is only ever asked for metadata here.
            return;
        };
        if sock.write_all(&out).is_err() {
            return;
        }
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn metadata(
    brokers: Vec<(i32, String)>,
    topic: Option<(String, Uuid, i32)>,
    error: i16,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    for (id, addr) in brokers {
        let (host, port) = addr.rsplit_once(':').unwrap();
        let mut b = MetadataResponseBroker::default();
        b.node_id = id.into();
        b.host = s(host);
        b.port = port.parse().unwrap();
        resp.brokers.push(b);
    }
    resp.cluster_id = Some(s("old-cluster"));
    resp.controller_id = (-1).into();
    resp.error_code = error;
    if let Some((name, id, leader)) = topic {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(s(&name)));
        t.topic_id = id;
        let mut p = MetadataResponsePartition::default();
        p.partition_index = 0;
        p.leader_id = leader.into();
        p.leader_epoch = 0;
        p.replica_nodes = vec![leader.into()];
        p.isr_nodes = vec![leader.into()];
        t.partitions.push(p);
        resp.topics.push(t);
    }
    resp
}

fn encode<R: Request>(correlation_id: i32, version: i16, body: &R::Response) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, R::Response::header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Copy bytes both ways between the client and `to` until either side closes.
fn forward(client: TcpStream, to: &str, sockets: &Mutex<Vec<TcpStream>>) {
    let Ok(server) = TcpStream::connect(to) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    sockets.lock().unwrap().push(server.try_clone().unwrap());
    let pipe = |mut from: TcpStream, mut into: TcpStream| {
        let _ = std::io::copy(&mut from, &mut into);
        let _ = from.shutdown(Shutdown::Both);
        let _ = into.shutdown(Shutdown::Both);
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn(move || pipe(c2, s2));
    pipe(server, client);
    let _ = up.join();
}

fn config(bootstrap: &Bootstrap) -> ClientConfig {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut c = ClientConfig::new([&bootstrap.addr]);
    c.connection.connect_timeout = Duration::from_secs(1);
    c.connection.request_timeout = Duration::from_secs(1);
    c
}

const TOPIC_ID: Uuid = Uuid::from_u128(0x5eed);

/// The old cluster names broker 5 and then, asked again, says REBOOTSTRAP_REQUIRED; a new
/// connection to the bootstrap address finds the topic on broker 6.
fn rebootstrap_required() -> Bootstrap {
    let port_of = Arc::new(Mutex::new(String::new()));
    let here = port_of.clone();
    let fake = Bootstrap::start(move |n| {
        let me = here.lock().unwrap().clone();
        if n == 0 {
            old(move |m| match m {
                0 => Meta::brokers(vec![(5, me.clone())]),
                _ => Meta::Answer {
                    brokers: vec![],
                    topic: None,
                    error: KafkaCode::RebootstrapRequired.code(),
                },
            })
        } else {
            old(move |_| Meta::Answer {
                brokers: vec![(6, me.clone())],
                topic: Some(("t".into(), TOPIC_ID, 6)),
                error: 0,
            })
        }
    });
    *port_of.lock().unwrap() = fake.addr.clone();
    fake
}

#[test]
fn rebootstrap_required_sends_the_client_back_to_the_bootstrap_servers() {
    let fake = rebootstrap_required();
    let mut cluster = Cluster::connect(config(&fake)).unwrap();
    let topic = cluster
        .topic("t")
        .expect("metadata from a fresh bootstrap connection")
        .clone();
    assert_eq!(topic.partitions[0].leader, 6, "{topic:?}");
    assert_eq!(
        fake.accepted(),
        2,
        "the broker that said REBOOTSTRAP_REQUIRED is not asked again"
    );
    assert_eq!(
        cluster.brokers().keys().copied().collect::<Vec<_>>(),
        [6],
        "the brokers learnt before are forgotten"
    );
}

#[test]
fn rebootstrap_required_is_an_error_without_metadata_recovery() {
    let fake = rebootstrap_required();
    let mut c = config(&fake);
    c.metadata_recovery = MetadataRecovery::None;
    let mut cluster = Cluster::connect(c).unwrap();
    let err = cluster.topic("t").unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::RebootstrapRequired),
        "{err}"
    );
    assert_eq!(fake.accepted(), 1);
}

/// The old cluster names a broker that is dead; once replaced, the name leads to a new
/// cluster (fake) where topic `t` is led by broker 8.
fn replaced(policy: MetadataRecovery) -> (Bootstrap, Cluster) {
    let dead = dead_addr();
    let fake = Bootstrap::start(move |_| {
        let dead = dead.clone();
        old(move |_| Meta::brokers(vec![(7, dead.clone())]))
    });
    let mut c = config(&fake);
    c.metadata_recovery = policy;
    let cluster = Cluster::connect(c).unwrap();
    let me = fake.addr.clone();
    fake.replace(move |_| {
        let me = me.clone();
        old(move |_| Meta::Answer {
            brokers: vec![(8, me.clone())],
            topic: Some(("t".into(), TOPIC_ID, 8)),
            error: 0,
        })
    });
    (fake, cluster)
}

#[test]
fn every_known_broker_gone_resolves_the_bootstrap_servers_again() {
    let (fake, mut cluster) = replaced(MetadataRecovery::Rebootstrap);
    let topic = cluster.topic("t").unwrap().clone();
    assert_eq!(topic.partitions[0].leader, 8);
    assert_eq!(fake.accepted(), 2);
    assert_eq!(cluster.brokers().keys().copied().collect::<Vec<_>>(), [8]);
}

#[test]
fn without_metadata_recovery_the_known_brokers_are_all_there_is() {
    let (fake, mut cluster) = replaced(MetadataRecovery::None);
    let err = cluster.topic("t").unwrap_err();
    assert!(err.is_retriable(), "a dead broker is worth retrying: {err}");
    assert_eq!(
        fake.accepted(),
        1,
        "the bootstrap servers are not used again"
    );
}

#[test]
fn brokers_that_stall_are_given_up_after_the_rebootstrap_trigger() {
    // Twelve known brokers that take connections and never answer, each costing a request
    // timeout (1 s): walking them all would take 12 s.
    let stalls: Vec<(TcpListener, String)> = (0..12).map(|_| stalled()).collect();
    let known: Vec<(i32, String)> = stalls
        .iter()
        .enumerate()
        .map(|(i, (_, a))| (i as i32 + 1, a.clone()))
        .collect();
    let port_of = Arc::new(Mutex::new(String::new()));
    let here = port_of.clone();
    let fake = Bootstrap::start(move |n| {
        let known = known.clone();
        let me = here.lock().unwrap().clone();
        if n == 0 {
            // The old bootstrap broker goes silent after its first answer.
            old(move |m| match m {
                0 => Meta::brokers(known.clone()),
                _ => Meta::Silence,
            })
        } else {
            old(move |_| Meta::Answer {
                brokers: vec![(20, me.clone())],
                topic: Some(("t".into(), TOPIC_ID, 20)),
                error: 0,
            })
        }
    });
    *port_of.lock().unwrap() = fake.addr.clone();
    let mut c = config(&fake);
    c.rebootstrap_trigger = Duration::from_secs(2);
    let mut cluster = Cluster::connect(c).unwrap();
    let start = Instant::now();
    let topic = cluster.topic("t").unwrap().clone();
    let took = start.elapsed();
    assert_eq!(topic.partitions[0].leader, 20);
    assert!(
        took < Duration::from_secs(7),
        "metadata took {took:?}: the stalled brokers were walked past the 2 s trigger"
    );
    drop(stalls);
}

/// The whole way through a producer: the old cluster's broker is dead, the bootstrap name
/// then leads to the real broker, and a record sent meanwhile is delivered there.
#[test]
fn a_producer_finds_a_cluster_replaced_behind_its_bootstrap_name() {
    let mut real = common::cluster();
    let topic = common::new_topic(&mut real, "reboot", 1);
    let topic_id = real.topic(&topic).unwrap().id;
    let dead = dead_addr();
    let name = topic.clone();
    let fake = Bootstrap::start(move |_| {
        let (dead, name) = (dead.clone(), name.clone());
        old(move |_| Meta::Answer {
            brokers: vec![(100, dead.clone())],
            topic: Some((name.clone(), topic_id, 100)),
            error: 0,
        })
    });
    let mut config = common::producer_config(&topic);
    config.client.bootstrap = vec![fake.addr.clone()];
    config.client.connection.connect_timeout = Duration::from_secs(1);
    config.client.connection.request_timeout = Duration::from_secs(5);
    config.idempotence = Some(false); // the old cluster is not asked for a producer id
    config.delivery_timeout = Duration::from_secs(40);
    let producer = kpipe::Producer::new(config).unwrap();
    let receipt = producer
        .send_tracked(kpipe::ProducerRecord::new("after the move"))
        .unwrap();
    // Let the writer try the dead broker a while before the cluster is replaced.
    thread::sleep(Duration::from_secs(1));
    let real_addr = common::brokers();
    fake.replace(move |_| Behind::New(real_addr.clone()));
    let delivered = receipt
        .wait_timeout(Duration::from_secs(30))
        .expect("an answer within 30 s")
        .expect("delivered to the new cluster");
    assert_eq!(delivered.partition, 0);
    producer.close(Duration::from_secs(10)).unwrap();
    let records = common::fetch_all(&mut real, &topic);
    assert_eq!(records.len(), 1);
}
