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

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::fake::{self, FakeBroker, Handler, Reply, Serve};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
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
    fake: FakeBroker,
}

impl Bootstrap {
    /// The `n`-th connection (from 0) is served as `plan(n)` says.
    fn start(plan: impl FnMut(usize) -> Behind + Send + 'static) -> Bootstrap {
        let plan: Arc<Mutex<Plan>> = Arc::new(Mutex::new(Box::new(plan)));
        let current = plan.clone();
        let fake = FakeBroker::builder()
            .name("fake-bootstrap")
            .versions(&[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 13)])
            .bind()
            .serve_each(move |conn| {
                let behind = (current.lock().unwrap())(conn as usize - 1);
                match behind {
                    Behind::Old(meta) => Serve::With(serve_old(meta)),
                    Behind::New(to) => Serve::Forward(to),
                }
            });
        Bootstrap {
            addr: fake.addr.clone(),
            plan,
            fake,
        }
    }

    /// The cluster behind the name is replaced: every connection to the old one ends, and
    /// new connections are served as `plan` says.
    fn replace(&self, plan: impl FnMut(usize) -> Behind + Send + 'static) {
        *self.plan.lock().unwrap() = Box::new(plan);
        self.fake.close_connections();
    }

    fn accepted(&self) -> usize {
        self.fake.connections() as usize
    }
}

/// A listener that takes connections and never says a word.
fn stalled() -> FakeBroker {
    FakeBroker::builder().bind().serve_each(|_| Serve::Hold)
}

/// A broker of the old cluster: ApiVersions, and Metadata as `meta` says; any other
/// request closes the connection (the old cluster is only ever asked for metadata here).
fn serve_old(meta: Arc<dyn Fn(usize) -> Meta + Send + Sync>) -> Handler {
    let mut metadata_requests = 0;
    Box::new(move |req| {
        if req.is::<ApiVersionsRequest>() {
            return Reply::Default;
        }
        if !req.is::<MetadataRequest>() {
            return Reply::Close;
        }
        metadata_requests += 1;
        match meta(metadata_requests - 1) {
            Meta::Silence => Reply::Nothing,
            Meta::Answer {
                brokers,
                topic,
                error,
            } => req.respond::<MetadataRequest>(&metadata(brokers, topic, error)),
        }
    })
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
    let dead = fake::dead_addr();
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
    let stalls: Vec<FakeBroker> = (0..12).map(|_| stalled()).collect();
    let known: Vec<(i32, String)> = stalls
        .iter()
        .enumerate()
        .map(|(i, f)| (i as i32 + 1, f.addr.clone()))
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
    let dead = fake::dead_addr();
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
