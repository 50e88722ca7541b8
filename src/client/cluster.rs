//! The cluster as one thread sees it: bootstrap, metadata, and one lazily opened connection
//! per broker.

use std::collections::HashMap;
use std::time::Instant;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use uuid::Uuid;

use super::backoff::retry;
use super::config::ClientConfig;
use super::connect::Connector;
use super::connection::Connection;
use super::error::{Error, KafkaCode, Location, Result};
use super::recovery::{Recovery, Why};
use super::versions::BrokerVersions;

/// A broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// `host:port` to connect to.
    pub addr: String,
    /// Rack, if configured.
    pub rack: Option<String>,
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub id: i32,
    /// Leader broker id, or -1 while there is none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
}

/// A topic and its partitions, sorted by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (nil on brokers that predate topic ids).
    pub id: Uuid,
    /// Partitions, index `i` at position `i`.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Whether every partition has a leader.
    pub fn all_led(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.iter().all(|p| p.leader >= 0)
    }
}

/// A client's connections to one cluster and what it knows of the cluster's layout.
///
/// Single-threaded by design: the thread that owns a `Cluster` owns its sockets.
#[derive(Debug)]
pub struct Cluster {
    config: ClientConfig,
    /// How every connection of this cluster is opened (TCP, TLS, SASL).
    connector: Connector,
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, (TopicInfo, Instant)>,
    /// The newest metadata seen of each topic, kept through invalidation: a lagging
    /// broker's older leader epochs do not replace it.
    newest: HashMap<String, TopicInfo>,
    connections: HashMap<i32, Connection>,
    /// Connections of their own for group coordination, so heartbeats never queue behind
    /// a fetch held by the broker for up to its max wait (the Java client does the same).
    dedicated: HashMap<i32, Connection>,
    /// The connection made while bootstrapping, used until broker ids are known.
    bootstrap: Option<Connection>,
    /// Brokers (by address) whose last request from [`request_any`](Self::request_any)
    /// failed, and when: asked last for a while, so a stalled broker is not asked first
    /// again and again.
    failed: HashMap<String, Instant>,
    /// When to give up on the known brokers and go back to the bootstrap servers.
    recovery: Recovery,
    cluster_id: Option<String>,
    controller: i32,
}

/// Keep `known`'s partition metadata where `fresh` (of the same topic: same id) has an
/// older leader epoch: metadata from a broker that lags behind the controller (Java's
/// `Metadata.updateLatestMetadata`). A recreated topic (another id) is taken as it is.
/// Returns how many partitions were kept.
fn keep_newer(fresh: &mut TopicInfo, known: &TopicInfo) -> usize {
    if fresh.id != known.id {
        return 0;
    }
    let mut kept = 0;
    for p in &mut fresh.partitions {
        if let Some(k) = known.partitions.get(p.id as usize) {
            if k.leader_epoch > p.leader_epoch {
                *p = k.clone();
                kept += 1;
            }
        }
    }
    kept
}

impl Cluster {
    /// Validate `config`, connect to the first reachable bootstrap broker (all are tried, in
    /// order) and load the broker list.
    pub fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let connector = Connector::new(&config)?;
        Cluster::connect_with(config, connector)
    }

    /// [`connect`](Self::connect) with a connector already made from `config` (its TLS
    /// files read once, shared by the threads of one producer or pool).
    pub(crate) fn connect_with(config: ClientConfig, connector: Connector) -> Result<Self> {
        let mut failures = Vec::new();
        let mut bootstrap = None;
        for addr in &config.bootstrap {
            match connector.connect(addr) {
                Ok(conn) => {
                    bootstrap = Some(conn);
                    break;
                }
                // Refused credentials or certificates would be refused by every broker:
                // say so now rather than try them all.
                Err(e @ (Error::Auth { .. } | Error::Tls { .. })) => return Err(e),
                Err(e) => {
                    log::debug!("bootstrap {addr}: {e}");
                    failures.push((addr, e));
                }
            }
        }
        let Some(bootstrap) = bootstrap else {
            // One address: its own error says most. Several: list each with its reason.
            if failures.len() == 1 {
                return Err(failures.pop().expect("one failure").1);
            }
            let tried = failures
                .iter()
                .map(|(addr, e)| format!("{addr}: {}", short_reason(e)))
                .collect();
            return Err(Error::NoBrokerReachable { tried });
        };
        let recovery = Recovery::new(config.metadata_recovery, config.rebootstrap_trigger);
        let mut cluster = Cluster {
            config,
            connector,
            brokers: HashMap::new(),
            topics: HashMap::new(),
            newest: HashMap::new(),
            connections: HashMap::new(),
            dedicated: HashMap::new(),
            bootstrap: Some(bootstrap),
            failed: HashMap::new(),
            recovery,
            cluster_id: None,
            controller: -1,
        };
        cluster.fetch_metadata(Some(&[]))?;
        Ok(cluster)
    }

    /// The configuration this cluster was opened with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// How this cluster opens connections (for opening more of them elsewhere, e.g. on
    /// another thread).
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The address and advertised versions and features of a broker this cluster talks to
    /// (an open connection if there is one, else a new one): for what is the same on every
    /// broker of a cluster, such as its finalized features.
    pub(crate) fn some_broker_versions(&mut self) -> Result<(String, BrokerVersions)> {
        let open = self
            .bootstrap
            .iter()
            .chain(self.connections.values())
            .chain(self.dedicated.values())
            .find(|c| c.is_open());
        if let Some(c) = open {
            return Ok((c.broker().to_owned(), c.broker_versions().clone()));
        }
        let mut ids: Vec<i32> = self.brokers.keys().copied().collect();
        ids.sort_unstable();
        let mut last = None;
        for id in ids {
            match self.broker(id) {
                Ok(c) => return Ok((c.broker().to_owned(), c.broker_versions().clone())),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoBrokerReachable { tried: Vec::new() }))
    }

    /// Known brokers by id.
    pub fn brokers(&self) -> &HashMap<i32, BrokerInfo> {
        &self.brokers
    }

    /// Remember a broker learnt outside metadata (a group coordinator, say).
    pub(crate) fn add_broker(&mut self, info: BrokerInfo) {
        if self
            .brokers
            .get(&info.id)
            .is_some_and(|b| b.addr != info.addr)
        {
            // Coordinator requests go on the dedicated connection: drop that one too.
            self.connections.remove(&info.id);
            self.dedicated.remove(&info.id);
        }
        self.brokers.insert(info.id, info);
    }

    /// The cluster id the brokers reported.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The topic's metadata, loading or refreshing it when unknown or older than
    /// `metadata_max_age`. A topic the cluster does not have is [`Error::UnknownTopic`].
    pub fn topic(&mut self, name: &str) -> Result<&TopicInfo> {
        let fresh = self
            .topics
            .get(name)
            .is_some_and(|(_, at)| at.elapsed() < self.config.metadata_max_age);
        if !fresh {
            self.fetch_metadata(Some(&[name]))?;
        }
        match self.topics.get(name) {
            Some((info, _)) => Ok(info),
            None => Err(Error::UnknownTopic {
                topic: name.to_owned(),
            }),
        }
    }

    /// Forget what is known of `topic` (or of every topic), so the next use reloads it.
    /// Call this when an error says the map is stale (see [`Error::invalidates_metadata`]).
    pub fn invalidate(&mut self, topic: Option<&str>) {
        match topic {
            Some(t) => {
                self.topics.remove(t);
            }
            None => self.topics.clear(),
        }
    }

    /// React to an error from a request: stale metadata is dropped, and a broken
    /// connection was already closed by the connection itself.
    pub(crate) fn note_error(&mut self, err: &Error, topic: Option<&str>) {
        if err.invalidates_metadata() {
            self.invalidate(topic);
        }
        if err.kafka_code() == Some(KafkaCode::RebootstrapRequired) && self.recovery.require() {
            // The next request to any broker starts from the bootstrap servers.
            self.invalidate(None);
        }
    }

    /// Fetch metadata for `topics` (`None`: all topics) and merge it into the map.
    pub fn fetch_metadata(&mut self, topics: Option<&[&str]>) -> Result<()> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string((*t).to_owned())));
                    mt
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let (broker, resp) = self.request_any(&req)?;
        if resp.error_code == KafkaCode::RebootstrapRequired.code() && self.recovery.require() {
            // KIP-1102: this broker's view is not to be trusted; ask the bootstrap servers.
            self.drop_connections_to(&broker);
            let (broker, resp) = self.request_any(&req)?;
            return self.apply_metadata(&broker, resp);
        }
        self.apply_metadata(&broker, resp)
    }

    /// Close every connection to `addr`.
    fn drop_connections_to(&mut self, addr: &str) {
        if self.bootstrap.as_ref().is_some_and(|c| c.broker() == addr) {
            self.bootstrap = None;
        }
        self.connections.retain(|_, c| c.broker() != addr);
        self.dedicated.retain(|_, c| c.broker() != addr);
    }

    fn apply_metadata(&mut self, broker: &str, resp: MetadataResponse) -> Result<()> {
        let now = Instant::now();
        // Metadata v13's top-level error (REBOOTSTRAP_REQUIRED, say): nothing here is valid.
        Error::check(
            resp.error_code,
            || Location {
                broker: broker.to_owned(),
                api: "Metadata",
                topic: None,
                partition: None,
            },
            None,
        )?;
        if !resp.brokers.is_empty() {
            self.brokers = resp
                .brokers
                .iter()
                .map(|b| {
                    let info = BrokerInfo {
                        id: b.node_id.0,
                        addr: format!("{}:{}", b.host.as_str(), b.port),
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    };
                    (info.id, info)
                })
                .collect();
            // Drop connections to brokers that left or moved.
            let brokers = &self.brokers;
            let current = |id: &i32, c: &mut Connection| {
                brokers.get(id).is_some_and(|b| b.addr == c.broker())
            };
            self.connections.retain(current);
            self.dedicated.retain(current);
        }
        self.cluster_id = resp.cluster_id.as_ref().map(|c| c.to_string());
        self.controller = resp.controller_id.0;
        for t in resp.topics {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            match KafkaCode::try_from_code(t.error_code) {
                None => {}
                Some(KafkaCode::UnknownTopicOrPartition) => {
                    self.topics.remove(&name);
                    continue;
                }
                // Leaders are being elected: keep what we know and let callers retry.
                Some(code) if code.is_retriable() => {
                    self.topics.remove(&name);
                    continue;
                }
                Some(code) => {
                    return Err(Error::Broker {
                        code,
                        at: Location {
                            broker: broker.to_owned(),
                            api: "Metadata",
                            topic: Some(name),
                            partition: None,
                        },
                        message: None,
                    })
                }
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    id: p.partition_index,
                    leader: if p.error_code == 0
                        || p.error_code == KafkaCode::ReplicaNotAvailable.code()
                    {
                        p.leader_id.0
                    } else {
                        -1
                    },
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            let contiguous = partitions.iter().enumerate().all(|(i, p)| p.id == i as i32);
            if !contiguous {
                return Err(Error::Protocol {
                    broker: broker.to_owned(),
                    detail: format!("metadata for {name} lists partitions with gaps"),
                });
            }
            let mut info = TopicInfo {
                name: name.clone(),
                id: t.topic_id,
                partitions,
            };
            if let Some(known) = self.newest.get(&name) {
                let kept = keep_newer(&mut info, known);
                if kept > 0 {
                    log::debug!(
                        "metadata from {broker} for {name}: {kept} partition(s) with an older                          leader epoch than known; keeping the newer"
                    );
                }
            }
            self.newest.insert(name.clone(), info.clone());
            self.topics.insert(name, (info, now));
        }
        Ok(())
    }

    fn broker_addr(&self, id: i32) -> Result<String> {
        match self.brokers.get(&id) {
            Some(info) => Ok(info.addr.clone()),
            None => Err(Error::Protocol {
                broker: format!("node {id}"),
                detail: format!("broker {id} is not in the cluster metadata"),
            }),
        }
    }

    /// The connection to broker `id`, opened on first use and reopened after a failure.
    pub fn broker(&mut self, id: i32) -> Result<&mut Connection> {
        if self.connections.get(&id).is_some_and(|c| !c.is_open()) {
            self.connections.remove(&id);
        }
        if !self.connections.contains_key(&id) {
            let addr = self.broker_addr(id)?;
            let conn = match self.bootstrap.take() {
                // Reuse the bootstrap connection if it is this broker's.
                Some(b) if b.is_open() && b.broker() == addr => b,
                other => {
                    self.bootstrap = other;
                    self.connector.connect(&addr)?
                }
            };
            self.connections.insert(id, conn);
        }
        Ok(self.connections.get_mut(&id).expect("inserted above"))
    }

    /// A second connection to broker `id`, apart from the one data requests use: for the
    /// group coordinator, whose requests must not wait behind pipelined fetches.
    pub(crate) fn dedicated(&mut self, id: i32) -> Result<&mut Connection> {
        if self.dedicated.get(&id).is_some_and(|c| !c.is_open()) {
            self.dedicated.remove(&id);
        }
        if !self.dedicated.contains_key(&id) {
            let conn = self.connector.connect(&self.broker_addr(id)?)?;
            self.dedicated.insert(id, conn);
        }
        Ok(self.dedicated.get_mut(&id).expect("inserted above"))
    }

    /// The open connection to broker `id`, if there is one. Unlike [`broker`](Self::broker)
    /// this never connects, so responses owed on a connection are never awaited on another.
    pub(crate) fn existing(&mut self, id: i32) -> Option<&mut Connection> {
        self.connections.get_mut(&id).filter(|c| c.is_open())
    }

    /// The leader of `topic`/`partition`, as a broker id.
    pub fn leader(&mut self, topic: &str, partition: i32) -> Result<i32> {
        let mut info = self.topic(topic)?;
        if info.partitions.get(partition as usize).is_none() {
            // Maybe the topic grew since we looked: check fresh metadata before refusing.
            self.invalidate(Some(topic));
            info = self.topic(topic)?;
        }
        let Some(p) = info.partitions.get(partition as usize) else {
            return Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                count: info.partitions.len(),
            });
        };
        if p.leader < 0 {
            let err = Error::Broker {
                code: KafkaCode::LeaderNotAvailable,
                at: Location {
                    broker: "metadata".into(),
                    api: "Metadata",
                    topic: Some(topic.to_owned()),
                    partition: Some(partition),
                },
                message: None,
            };
            self.invalidate(Some(topic));
            return Err(err);
        }
        Ok(p.leader)
    }

    /// Send `req` to any broker that answers (an open connection first, then known brokers,
    /// then the bootstrap list) and return the broker's address with the response.
    pub(crate) fn request_any<R: Request + Clone>(
        &mut self,
        req: &R,
    ) -> Result<(String, R::Response)> {
        self.request_any_with(|_| req.clone())
    }

    /// Like [`request_any`](Self::request_any), for requests whose fields depend on the
    /// negotiated version: `build` gets the version the chosen connection will use.
    ///
    /// When every known broker fails, when none has answered for the rebootstrap trigger,
    /// or after REBOOTSTRAP_REQUIRED, the bootstrap servers are resolved and asked again
    /// (with [`MetadataRecovery::Rebootstrap`](super::MetadataRecovery), the default).
    pub(crate) fn request_any_with<R: Request>(
        &mut self,
        build: impl Fn(i16) -> R,
    ) -> Result<(String, R::Response)> {
        let call = |c: &mut Connection| -> Result<(String, R::Response)> {
            let req = build(c.version::<R>()?);
            Ok((c.broker().to_owned(), c.request(&req)?))
        };
        self.recovery.begin(Instant::now());
        let result = self.request_any_known(&call);
        match &result {
            // A broker answered, even if only to refuse.
            Ok(_) | Err(Error::Broker { .. }) => self.recovery.answered(),
            Err(_) => {}
        }
        result
    }

    /// Ask the known brokers in turn (see [`request_any`](Self::request_any)), going back to
    /// the bootstrap servers when [`Recovery`] says so.
    fn request_any_known<T>(
        &mut self,
        call: &impl Fn(&mut Connection) -> Result<(String, T)>,
    ) -> Result<(String, T)> {
        if let Some(why) = self.recovery.due(Instant::now()) {
            return self.rebootstrap(why, call);
        }
        let memory = self.config.connection.request_timeout;
        self.failed.retain(|_, at| at.elapsed() < memory);
        let mut last = None;
        if let Some(conn) = self
            .bootstrap
            .as_mut()
            .filter(|c| c.is_open() && c.in_flight() == 0 && !self.failed.contains_key(c.broker()))
        {
            match call(conn) {
                Err(e) if e.is_retriable() => {
                    self.failed.insert(conn.broker().to_owned(), Instant::now());
                    last = Some(e);
                }
                other => return other,
            }
        }
        // Connections with pipelined requests in flight owe those responses first: skip them.
        let busy: Vec<i32> = self
            .connections
            .iter()
            .filter(|(_, c)| c.in_flight() > 0)
            .map(|(id, _)| *id)
            .collect();
        let mut ids: Vec<i32> = self
            .connections
            .keys()
            .copied()
            .filter(|id| !busy.contains(id))
            .collect();
        ids.extend(
            self.brokers
                .keys()
                .filter(|id| !self.connections.contains_key(id)),
        );
        // Those that failed lately go last (a stable sort keeps the order otherwise).
        let failed_lately = |c: &Cluster, id: &i32| {
            c.brokers
                .get(id)
                .is_some_and(|b| c.failed.contains_key(&b.addr))
        };
        ids.sort_by_key(|id| failed_lately(self, id));
        for id in ids {
            // Brokers that each stall for a request timeout can add up to long past the
            // trigger: stop walking them once it has passed.
            if let Some(why) = self.recovery.due(Instant::now()) {
                return self.rebootstrap(why, call);
            }
            match self.broker(id).and_then(call) {
                Ok(v) => {
                    self.failed.remove(&v.0);
                    return Ok(v);
                }
                Err(e) if e.is_retriable() => {
                    if let Some(b) = self.brokers.get(&id) {
                        self.failed.insert(b.addr.clone(), Instant::now());
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // A busy broker is still worth a connection of its own when nothing else is left.
        for id in busy {
            if let Some(why) = self.recovery.due(Instant::now()) {
                return self.rebootstrap(why, call);
            }
            if let Ok(c) = self.dedicated(id) {
                if c.in_flight() == 0 {
                    if let Ok(v) = call(c) {
                        return Ok(v);
                    }
                }
            }
        }
        // Everything known failed.
        match self.recovery.all_failed(Instant::now(), self.brokers.len()) {
            Some(why) => self.rebootstrap(why, call),
            None => Err(last.unwrap_or_else(|| Error::NoBrokerReachable {
                tried: self.brokers.values().map(|b| b.addr.clone()).collect(),
            })),
        }
    }

    /// Go back to the bootstrap servers: resolve each name again and connect (as a
    /// replaced cluster may stand behind the same names), reload the broker list from the
    /// first that answers, forget every topic's layout, and send `call` there.
    fn rebootstrap<T>(
        &mut self,
        why: Why,
        call: &impl Fn(&mut Connection) -> Result<(String, T)>,
    ) -> Result<(String, T)> {
        let servers = self.config.bootstrap.join(",");
        if self.recovery.rebootstrapping(why) {
            log::warn!("{why}; resolving the bootstrap servers again: {servers}");
        } else {
            log::debug!("{why}; resolving the bootstrap servers again: {servers}");
        }
        self.bootstrap = None;
        self.topics.clear();
        let mut tried = Vec::new();
        for addr in self.config.bootstrap.clone() {
            // A fresh connection: the name is looked up again (no address is cached).
            let mut conn = match self.connector.connect(&addr) {
                Ok(conn) => conn,
                Err(e @ (Error::Auth { .. } | Error::Tls { .. })) => return Err(e),
                Err(e) => {
                    log::debug!("bootstrap {addr}: {e}");
                    tried.push((addr, e));
                    continue;
                }
            };
            // The broker list first, so that what follows is routed in the cluster now
            // behind these names rather than the one before.
            let mut brokers = MetadataRequest::default();
            brokers.topics = Some(Vec::new());
            brokers.allow_auto_topic_creation = false;
            let answer = conn
                .request(&brokers)
                .and_then(|resp| self.apply_metadata(&addr, resp));
            if let Err(e) = answer {
                if e.kafka_code().is_some() || !e.is_retriable() {
                    return Err(e);
                }
                tried.push((addr, e));
                continue;
            }
            let result = call(&mut conn);
            self.bootstrap = Some(conn);
            return result;
        }
        if tried.len() == 1 {
            return Err(tried.pop().expect("one failure").1);
        }
        Err(Error::NoBrokerReachable {
            tried: tried
                .iter()
                .map(|(addr, e)| format!("{addr}: {}", short_reason(e)))
                .collect(),
        })
    }

    /// Run `op` again while it fails with a retriable error, for at most the request timeout:
    /// stale metadata is dropped between tries, with exponential backoff. Leadership settles
    /// a moment after a topic is created or a broker moves, and this absorbs that.
    pub(crate) fn retrying<T>(
        &mut self,
        topic: Option<&str>,
        op: impl FnMut(&mut Cluster) -> Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.config.connection.request_timeout;
        let mut backoff = self.config.backoff();
        retry(
            self,
            deadline,
            &mut backoff,
            |c, e| c.note_error(e, topic),
            op,
        )
    }
}

fn short_reason(e: &Error) -> String {
    match e {
        Error::Connect { source, .. } => source.to_string(),
        Error::Timeout { phase, after, .. } => format!("{phase} timed out after {after:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(id: u128, epochs: &[i32]) -> TopicInfo {
        TopicInfo {
            name: "t".into(),
            id: Uuid::from_u128(id),
            partitions: epochs
                .iter()
                .enumerate()
                .map(|(i, &e)| PartitionInfo {
                    id: i as i32,
                    leader: e,
                    leader_epoch: e,
                    replicas: vec![],
                    isr: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn metadata_with_older_leader_epochs_keeps_the_newer_partitions() {
        let known = topic(1, &[5, 7]);
        let mut fresh = topic(1, &[6, 3]);
        assert_eq!(keep_newer(&mut fresh, &known), 1);
        let epochs: Vec<i32> = fresh.partitions.iter().map(|p| p.leader_epoch).collect();
        assert_eq!(
            epochs,
            [6, 7],
            "partition 0 moved on, partition 1 came from a laggard"
        );
        assert_eq!(
            fresh.partitions[1].leader, 7,
            "the whole partition entry is kept"
        );
    }

    #[test]
    fn a_recreated_topic_takes_its_metadata_as_it_is() {
        let known = topic(1, &[9]);
        let mut fresh = topic(2, &[0, 0]);
        assert_eq!(keep_newer(&mut fresh, &known), 0);
        assert_eq!(fresh, topic(2, &[0, 0]));
    }
}
