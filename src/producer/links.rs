//! The writer's links to the cluster: the produce connections it owns, and the metadata it
//! routes by, kept so that no one broker can hold the writer up.
//!
//! ```text
//!   writer thread ── Links ─┬─ connections to leaders (owned and used by the writer alone)
//!                           ├─ dials: one short-lived thread per new connection, handing
//!                           │  the open connection back (TCP, TLS, SASL take their time)
//!                           └─ kpipe-metadata thread: its own Cluster, loads and refreshes
//!                              topics; the writer routes by what it last heard meanwhile
//! ```
//!
//! Every call here returns at once: what is not known yet is [`Poll::Pending`], asked for in
//! the background, and the writer is woken (a `Msg::Wake`) when the answer arrives. A
//! stalled broker therefore delays only the partitions it leads.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::client::connect::Connector;
use crate::client::{self, BrokerInfo, Cluster, Connection, KafkaCode, NewTopic, TopicInfo};

use super::config::TopicDefaults;
use super::msg::Msg;

/// What the writer asks of the metadata thread.
enum Ask {
    /// Make sure the topic exists (creating it if `create` says how) and load it.
    Load {
        topic: Arc<str>,
        create: Option<TopicDefaults>,
    },
    /// Load the topic's metadata afresh.
    Refresh { topic: Arc<str> },
    /// Get a producer id and epoch (InitProducerId).
    ProducerId,
}

/// What it answers.
enum Answer {
    /// A topic's metadata, with the broker list as it now knows it.
    Topic {
        topic: Arc<str>,
        result: Result<TopicInfo, client::Error>,
        brokers: HashMap<i32, BrokerInfo>,
    },
    ProducerId(Result<(i64, i16), client::Error>),
}

/// Where the ask for a producer id stands.
enum IdAsk {
    Idle,
    Asked,
    Answered(Result<(i64, i16), client::Error>),
}

enum Entry {
    /// Known (and used; `stale` asks for a refresh).
    Known(Known),
    /// Asked for, no answer yet.
    Loading,
    /// The last load failed; the error is handed out once.
    Failed(client::Error),
}

struct Known {
    info: TopicInfo,
    /// When it was loaded.
    at: Instant,
    /// An error said the leaders may be out of date: a refresh is due.
    stale: bool,
    /// A refresh was asked for and not answered yet.
    refreshing: bool,
    /// Refreshes that fail back off (the cluster may be down): not asked before this.
    ask_after: Instant,
    backoff: client::Backoff,
}

impl Known {
    fn new(info: TopicInfo) -> Self {
        let now = Instant::now();
        Known {
            info,
            at: now,
            stale: false,
            refreshing: false,
            ask_after: now,
            backoff: refresh_backoff(),
        }
    }
}

fn refresh_backoff() -> client::Backoff {
    client::Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}

/// Dials that finish are joined in [`poll`](Links::poll); one still running when the writer
/// exits is left to end on its own (within its connect and request timeouts), as is the
/// metadata thread, so that a close never waits for a stalled broker.
pub(crate) struct Links {
    connector: Connector,
    max_age: Duration,
    connections: HashMap<i32, Connection>,
    /// Which connection to a broker is the current one: a request sent on an earlier one
    /// must never read its answer from a later one.
    generations: HashMap<i32, u64>,
    next_generation: u64,
    dials: HashMap<i32, JoinHandle<Result<Connection, client::Error>>>,
    dial_errors: HashMap<i32, client::Error>,
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<Arc<str>, Entry>,
    asks: Sender<Ask>,
    answers: Receiver<Answer>,
    producer_id: IdAsk,
    /// Topics whose shape (partition count, id) changed since the writer last looked.
    reshaped: Vec<TopicInfo>,
    /// Wakes the writer when an answer or a connection arrives.
    wake: Sender<Msg>,
}

impl Links {
    /// Take over `cluster` (connected and validated) for metadata, on a thread of its own.
    /// `known`: topics already loaded (the default topic), so the first records need not wait.
    pub(crate) fn start(
        cluster: Cluster,
        known: Vec<TopicInfo>,
        wake: Sender<Msg>,
    ) -> std::io::Result<Links> {
        let connector = cluster.connector().clone();
        let max_age = cluster.config().metadata_max_age;
        let brokers = cluster.brokers().clone();
        let (asks, ask_rx) = crossbeam_channel::unbounded();
        let (answer_tx, answers) = crossbeam_channel::unbounded();
        let worker_wake = wake.clone();
        // Not joined: it ends by itself once the writer drops `asks`, after the request in
        // hand (bounded by the request timeout), and a close must not wait for that.
        std::thread::Builder::new()
            .name("kpipe-metadata".into())
            .spawn(move || serve_metadata(cluster, ask_rx, answer_tx, worker_wake))?;
        let topics = known
            .into_iter()
            .map(|info| {
                (
                    Arc::from(info.name.as_str()),
                    Entry::Known(Known::new(info)),
                )
            })
            .collect();
        Ok(Links {
            connector,
            max_age,
            connections: HashMap::new(),
            generations: HashMap::new(),
            next_generation: 0,
            dials: HashMap::new(),
            dial_errors: HashMap::new(),
            brokers,
            topics,
            asks,
            answers,
            producer_id: IdAsk::Idle,
            reshaped: Vec::new(),
            wake,
        })
    }

    /// Take in what arrived: metadata answers and finished dials.
    pub(crate) fn poll(&mut self) {
        while let Ok(a) = self.answers.try_recv() {
            let (topic, result, brokers) = match a {
                Answer::ProducerId(result) => {
                    self.producer_id = IdAsk::Answered(result);
                    continue;
                }
                Answer::Topic {
                    topic,
                    result,
                    brokers,
                } => (topic, result, brokers),
            };
            if !brokers.is_empty() {
                self.brokers = brokers;
                // Connections to brokers that left or moved are dropped.
                let brokers = &self.brokers;
                self.connections
                    .retain(|id, c| brokers.get(id).is_some_and(|b| b.addr == c.broker()));
            }
            let entry = match result {
                Ok(info) => {
                    // Partitions added, or the topic created again (another id): the writer
                    // routes by its own copy of the topic's shape, and takes the new one.
                    if let Some(Entry::Known(k)) = self.topics.get(&topic) {
                        if k.info.id != info.id || k.info.partitions.len() != info.partitions.len()
                        {
                            self.reshaped.push(info.clone());
                        }
                    }
                    Entry::Known(Known::new(info))
                }
                Err(e) => match self.topics.remove(&topic) {
                    // A failed refresh keeps what was known, still stale: it is asked again
                    // after a backoff. Whatever the error: a cluster coming back may say
                    // for a moment that it does not know the topic, and a topic the writer
                    // routes by must never become unknown to it (its partitions would wait
                    // for metadata forever); records fail at their delivery timeout instead.
                    Some(Entry::Known(mut k)) => {
                        log::debug!("refreshing {topic} failed: {e}");
                        k.stale = true;
                        k.refreshing = false;
                        k.ask_after = Instant::now() + k.backoff.next_delay();
                        Entry::Known(k)
                    }
                    _ => Entry::Failed(e),
                },
            };
            self.topics.insert(topic, entry);
        }
        if self.dials.values().any(|d| d.is_finished()) {
            let done: Vec<i32> = self
                .dials
                .iter()
                .filter(|(_, d)| d.is_finished())
                .map(|(id, _)| *id)
                .collect();
            for id in done {
                let handle = self.dials.remove(&id).expect("listed above");
                match handle.join() {
                    Ok(Ok(conn)) => {
                        self.next_generation += 1;
                        self.generations.insert(id, self.next_generation);
                        self.connections.insert(id, conn);
                    }
                    Ok(Err(e)) => {
                        self.dial_errors.insert(id, e);
                    }
                    Err(_) => {
                        self.dial_errors.insert(
                            id,
                            client::Error::Misuse(format!("the dial to node {id} panicked")),
                        );
                    }
                }
            }
        }
    }

    /// Topics whose metadata, since the last call, shows partitions added or another topic
    /// id (deleted and created again), as it now is.
    pub(crate) fn reshaped(&mut self) -> Vec<TopicInfo> {
        std::mem::take(&mut self.reshaped)
    }

    /// The topic's metadata, creating the topic first if `create` says how. Pending while
    /// it is being loaded; an error is reported once, and the next call asks again.
    pub(crate) fn topic(
        &mut self,
        topic: &Arc<str>,
        create: Option<TopicDefaults>,
    ) -> Poll<Result<TopicInfo, client::Error>> {
        match self.topics.get(topic) {
            Some(Entry::Known(k)) => return Poll::Ready(Ok(k.info.clone())),
            Some(Entry::Loading) => return Poll::Pending,
            Some(Entry::Failed(_)) => {
                let Some(Entry::Failed(e)) = self.topics.remove(topic) else {
                    unreachable!("matched above")
                };
                return Poll::Ready(Err(e));
            }
            None => {}
        }
        self.topics.insert(topic.clone(), Entry::Loading);
        let _ = self.asks.send(Ask::Load {
            topic: topic.clone(),
            create,
        });
        Poll::Pending
    }

    /// A producer id and epoch from the cluster, asked for in the background (retried
    /// there for up to the request timeout). An answer is handed out once; the next call
    /// asks again.
    pub(crate) fn producer_id(&mut self) -> Poll<Result<(i64, i16), client::Error>> {
        match std::mem::replace(&mut self.producer_id, IdAsk::Idle) {
            IdAsk::Answered(result) => Poll::Ready(result),
            IdAsk::Asked => {
                self.producer_id = IdAsk::Asked;
                Poll::Pending
            }
            IdAsk::Idle => {
                self.producer_id = IdAsk::Asked;
                let _ = self.asks.send(Ask::ProducerId);
                Poll::Pending
            }
        }
    }

    /// Whether a load of `topic` is waiting for its answer.
    pub(crate) fn loading(&self, topic: &str) -> bool {
        matches!(self.topics.get(topic), Some(Entry::Loading))
    }

    /// The leader of `topic`/`partition` as last heard: metadata that is stale (an error said
    /// so) or old is refreshed in the background and used meanwhile. Pending only while the
    /// topic itself is not known yet.
    pub(crate) fn leader(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
    ) -> Poll<Result<i32, client::Error>> {
        let max_age = self.max_age;
        let Some(Entry::Known(k)) = self.topics.get_mut(topic) else {
            return Poll::Pending;
        };
        let leader = k
            .info
            .partitions
            .get(partition as usize)
            .map(|p| p.leader)
            .filter(|&l| l >= 0);
        let must_refresh = k.stale || k.at.elapsed() >= max_age || leader.is_none();
        if must_refresh && !k.refreshing && Instant::now() >= k.ask_after {
            k.refreshing = true;
            let _ = self.asks.send(Ask::Refresh {
                topic: topic.clone(),
            });
        }
        // Stale or not, route by the leaders last heard until the refresh answers (as the
        // Java client does): a failed partition retries after its backoff, and the others
        // must not wait for a refresh that a stalled broker may hold up.
        match leader {
            Some(l) => Poll::Ready(Ok(l)),
            None if (partition as usize) < k.info.partitions.len() => {
                Poll::Ready(Err(client::Error::Broker {
                    code: KafkaCode::LeaderNotAvailable,
                    at: client::Location {
                        broker: "metadata".into(),
                        api: "Metadata",
                        topic: Some(topic.to_string()),
                        partition: Some(partition),
                    },
                    message: None,
                }))
            }
            None => Poll::Pending,
        }
    }

    /// The connection to broker `id`: opened in the background on first use (Pending until
    /// then), reopened after a failure. A failed dial is reported once.
    pub(crate) fn connection(&mut self, id: i32) -> Poll<Result<&mut Connection, client::Error>> {
        if self.connections.get(&id).is_some_and(|c| !c.is_open()) {
            self.connections.remove(&id);
        }
        if self.connections.contains_key(&id) {
            return Poll::Ready(Ok(self.connections.get_mut(&id).expect("checked")));
        }
        if let Some(e) = self.dial_errors.remove(&id) {
            return Poll::Ready(Err(e));
        }
        if self.dials.contains_key(&id) {
            return Poll::Pending;
        }
        let Some(addr) = self.brokers.get(&id).map(|b| b.addr.clone()) else {
            return Poll::Ready(Err(client::Error::Protocol {
                broker: format!("node {id}"),
                detail: format!("broker {id} is not in the cluster metadata"),
            }));
        };
        let connector = self.connector.clone();
        let wake = self.wake.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kpipe-dial-{id}"))
            .spawn(move || {
                let conn = connector.connect(&addr);
                let _ = wake.try_send(Msg::Wake);
                conn
            });
        match spawned {
            Ok(handle) => {
                self.dials.insert(id, handle);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(client::Error::Misuse(format!(
                "cannot start a thread to connect to node {id}: {e}"
            )))),
        }
    }

    /// Which connection to broker `id` is open now (see `generations`), if one is.
    pub(crate) fn generation(&self, id: i32) -> Option<u64> {
        self.connections
            .get(&id)
            .filter(|c| c.is_open())
            .and_then(|_| self.generations.get(&id).copied())
    }

    /// The open connection to broker `id`, if there is one (never dials).
    pub(crate) fn existing(&mut self, id: i32) -> Option<&mut Connection> {
        self.connections.get_mut(&id).filter(|c| c.is_open())
    }

    /// React to an error: metadata it says is stale is marked so (and refreshed on next use).
    pub(crate) fn note_error(&mut self, err: &client::Error, topic: Option<&str>) {
        if !err.invalidates_metadata() {
            return;
        }
        for (name, entry) in self.topics.iter_mut() {
            if topic.is_some_and(|t| t != &**name) {
                continue;
            }
            if let Entry::Known(k) = entry {
                k.stale = true;
            }
        }
    }

    /// `host:port` of broker `id`, or `node N` when unknown.
    pub(crate) fn broker_addr(&self, id: i32) -> String {
        self.brokers
            .get(&id)
            .map_or_else(|| format!("node {id}"), |b| b.addr.clone())
    }
}

/// The metadata thread: answers each ask with its own cluster connection(s), which may take
/// as long as a stalled broker makes them; only this thread waits.
fn serve_metadata(
    mut cluster: Cluster,
    asks: Receiver<Ask>,
    answers: Sender<Answer>,
    wake: Sender<Msg>,
) {
    loop {
        let ask = match asks.recv_timeout(Duration::from_secs(1)) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let (topic, result) = match ask {
            Ask::ProducerId => {
                let result = cluster.init_producer_id();
                if answers.send(Answer::ProducerId(result)).is_err() {
                    return;
                }
                let _ = wake.try_send(Msg::Wake);
                continue;
            }
            Ask::Load { topic, create } => {
                let result = ensure_topic(&mut cluster, &topic, create)
                    .and_then(|()| cluster.topic(&topic).cloned());
                (topic, result)
            }
            Ask::Refresh { topic } => {
                cluster.invalidate(Some(&topic));
                let result = cluster.topic(&topic).cloned();
                (topic, result)
            }
        };
        if answers
            .send(Answer::Topic {
                topic,
                result,
                brokers: cluster.brokers().clone(),
            })
            .is_err()
        {
            return;
        }
        let _ = wake.try_send(Msg::Wake);
    }
}

/// Make sure `topic` exists, creating it if `create` says how.
pub(crate) fn ensure_topic(
    cluster: &mut Cluster,
    topic: &str,
    create: Option<TopicDefaults>,
) -> Result<(), client::Error> {
    let new = create.map(|d| NewTopic::new(topic, d.partitions, d.replication_factor));
    cluster.ensure_topic(topic, new.as_ref())
}
