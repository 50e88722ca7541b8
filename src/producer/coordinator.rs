//! A transactional producer's line to its coordinators: a thread of its own
//! (`kpipe-txn`), with a cluster connection of its own, that sends the transaction's
//! requests one at a time, finds the transaction coordinator (and a group's, for
//! TxnOffsetCommit) and looks again when one moves, and retries what is retriable, so that
//! the writer never waits on a coordinator.
//!
//! ```text
//!   writer ── Op (AddPartitions, AddOffsets, CommitOffsets, End, Bump) ──▶ kpipe-txn
//!   writer ◀── OpResult (Done, Abortable, Fatal) + Msg::Wake ───────────── kpipe-txn
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::client::{
    self, Backoff, Cluster, GroupMember, TransactionVersion, TxnApi, TxnErrorClass, TxnProducer,
};

use super::lane::Identity;
use super::msg::Msg;
use super::txn::{Op, OpResult};

/// One request for the thread: the op, and who sends it.
struct Ask {
    op: Op,
    identity: Identity,
    version: TransactionVersion,
}

/// The writer's end of the line.
pub(crate) struct Coordinator {
    asks: Sender<Ask>,
    answers: Receiver<OpResult>,
}

impl Coordinator {
    /// Start the thread on `cluster` for `transactional_id`; it retries a request for up
    /// to `retry_for` and wakes the writer through `wake` when an answer is ready.
    pub(crate) fn start(
        cluster: Cluster,
        transactional_id: String,
        transaction_timeout: Duration,
        retry_for: Duration,
        wake: Sender<Msg>,
    ) -> std::io::Result<Coordinator> {
        let (asks, ask_rx) = crossbeam_channel::unbounded();
        let (answer_tx, answers) = crossbeam_channel::unbounded();
        let mut line = Line {
            cluster,
            transactional_id,
            transaction_timeout,
            retry_for,
            coordinator: None,
            groups: HashMap::new(),
        };
        // Not joined: it ends once the writer drops `asks`, after the request in hand.
        std::thread::Builder::new()
            .name("kpipe-txn".into())
            .spawn(move || {
                while let Ok(ask) = ask_rx.recv() {
                    let result = line.run(&ask);
                    if answer_tx.send(result).is_err() {
                        break;
                    }
                    let _ = wake.send(Msg::Wake);
                }
            })?;
        Ok(Coordinator { asks, answers })
    }

    /// Send `op` as `identity`, in a transaction of `version`.
    pub(crate) fn send(&self, op: Op, identity: Identity, version: TransactionVersion) {
        let _ = self.asks.send(Ask {
            op,
            identity,
            version,
        });
    }

    /// The answer to the request sent, once it came.
    pub(crate) fn answer(&self) -> Option<OpResult> {
        self.answers.try_recv().ok()
    }
}

/// The thread's state: its cluster and the coordinators it found.
struct Line {
    cluster: Cluster,
    transactional_id: String,
    transaction_timeout: Duration,
    retry_for: Duration,
    coordinator: Option<i32>,
    groups: HashMap<String, i32>,
}

impl Line {
    /// Send the ask's request until it is answered for good, or `retry_for` has passed.
    fn run(&mut self, ask: &Ask) -> OpResult {
        let api = match &ask.op {
            Op::AddPartitions(_) => TxnApi::AddPartitionsToTxn,
            Op::AddOffsets(_) => TxnApi::AddOffsetsToTxn,
            Op::CommitOffsets { .. } => TxnApi::TxnOffsetCommit,
            Op::End { commit } => TxnApi::EndTxn { commit: *commit },
            Op::Bump => TxnApi::InitProducerId,
        };
        let deadline = Instant::now() + self.retry_for;
        // Short first steps: CONCURRENT_TRANSACTIONS right after an EndTxn clears in ms.
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            let err = match self.attempt(ask) {
                Ok(identity) => return OpResult::Done(identity),
                Err(e) => e,
            };
            let class = TxnErrorClass::of(api, &err);
            log::debug!(
                "transaction {}: {api:?}: {err} ({class:?})",
                self.transactional_id
            );
            match class {
                TxnErrorClass::Abortable => return OpResult::Abortable(Arc::new(err)),
                TxnErrorClass::Fatal => return OpResult::Fatal(Arc::new(err)),
                TxnErrorClass::Refind => {
                    if matches!(ask.op, Op::CommitOffsets { .. }) {
                        self.groups.clear();
                    } else {
                        self.coordinator = None;
                    }
                }
                TxnErrorClass::Retriable => {}
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "transaction {}: {api:?} still failing after {:?}: {err}",
                    self.transactional_id,
                    self.retry_for
                );
                // An abort whose end is unknown leaves the producer unsure of its own state:
                // only a new InitProducerId (a new producer) settles it.
                return match ask.op {
                    Op::End { commit: false } | Op::Bump => OpResult::Fatal(Arc::new(err)),
                    _ => OpResult::Abortable(Arc::new(err)),
                };
            }
            std::thread::sleep(backoff.next_delay().min(deadline - Instant::now()));
        }
    }

    /// One try of the ask's request (finding the coordinator first if needed).
    fn attempt(&mut self, ask: &Ask) -> client::Result<Option<Identity>> {
        let producer = TxnProducer {
            transactional_id: self.transactional_id.clone(),
            id: ask.identity.id,
            epoch: ask.identity.epoch,
        };
        // TxnOffsetCommit goes to the group's coordinator, the rest to the transaction's.
        let coordinator = match &ask.op {
            Op::CommitOffsets { group, .. } => match self.groups.get(&group.group_id) {
                Some(c) => *c,
                None => {
                    let c = self.cluster.find_coordinator(&group.group_id)?;
                    self.groups.insert(group.group_id.clone(), c);
                    c
                }
            },
            _ => match self.coordinator {
                Some(c) => c,
                None => {
                    let c = self
                        .cluster
                        .find_transaction_coordinator(&self.transactional_id)?;
                    self.coordinator = Some(c);
                    c
                }
            },
        };
        let c = &mut self.cluster;
        match &ask.op {
            Op::AddPartitions(parts) => {
                first_error(c.add_partitions_to_txn(coordinator, &producer, parts)?).map(|()| None)
            }
            Op::AddOffsets(group) => c
                .add_offsets_to_txn(coordinator, &producer, group)
                .map(|()| None),
            Op::End { commit } => c
                .end_txn(coordinator, &producer, ask.version, *commit)
                .map(|next| next.map(|(id, epoch)| Identity { id, epoch })),
            Op::Bump => c
                .init_transactional_id(
                    coordinator,
                    &self.transactional_id,
                    self.transaction_timeout,
                    Some((producer.id, producer.epoch)),
                )
                .map(|(id, epoch)| Some(Identity { id, epoch })),
            Op::CommitOffsets { group, offsets } => {
                let member = GroupMember {
                    member_id: group.member_id.clone(),
                    generation: group.generation_id,
                    instance_id: group.group_instance_id.clone(),
                };
                let member =
                    (group.generation_id >= 0 || !group.member_id.is_empty()).then_some(member);
                let results = c.txn_offset_commit(
                    coordinator,
                    &producer,
                    ask.version,
                    &group.group_id,
                    member.as_ref(),
                    offsets,
                )?;
                first_error(results).map(|()| None)
            }
        }
    }
}

/// The first partition error of a per-partition answer, if any.
fn first_error<T>(results: Vec<(T, client::Result<()>)>) -> client::Result<()> {
    results.into_iter().try_for_each(|(_, r)| r)
}

/// A transactional producer being set up: InitProducerId done on the caller's thread (so
/// that `Producer::new` fails at once when the id is refused), the coordinator thread
/// still to start.
pub(crate) struct Transactions {
    transactional_id: String,
    version: TransactionVersion,
    identity: Identity,
    transaction_timeout: Duration,
    retry_for: Duration,
}

/// A transactional producer's state in the writer: its transactions and its line.
pub(crate) struct Transactional {
    pub(crate) transactional_id: Arc<str>,
    pub(crate) txn: super::txn::Txn,
    pub(crate) line: Coordinator,
}

impl Transactions {
    /// Learn the cluster's transaction version and get the producer id and epoch for
    /// `transactional_id` (fencing any earlier instance and aborting what it left open;
    /// the coordinator answers CONCURRENT_TRANSACTIONS until that abort is written),
    /// retrying for up to the request timeout.
    pub(crate) fn start(
        cluster: &mut Cluster,
        transactional_id: &str,
        config: &super::config::ProducerConfig,
    ) -> client::Result<Transactions> {
        let version = cluster.transaction_version()?;
        let timeout = config.transaction_timeout;
        let deadline = Instant::now() + config.client.connection.request_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let mut coordinator = None;
        loop {
            let (api, attempt) = match coordinator {
                None => (
                    TxnApi::FindCoordinator,
                    cluster
                        .find_transaction_coordinator(transactional_id)
                        .map(|c| {
                            coordinator = Some(c);
                            None
                        }),
                ),
                Some(c) => (
                    TxnApi::InitProducerId,
                    cluster
                        .init_transactional_id(c, transactional_id, timeout, None)
                        .map(Some),
                ),
            };
            let err = match attempt {
                Ok(Some((id, epoch))) => {
                    let identity = Identity { id, epoch };
                    log::info!(
                        "transactional id {transactional_id:?}: producer {identity}, \
                         transaction version {version:?}"
                    );
                    return Ok(Transactions {
                        transactional_id: transactional_id.to_owned(),
                        version,
                        identity,
                        transaction_timeout: timeout,
                        retry_for: timeout.max(config.client.connection.request_timeout),
                    });
                }
                Ok(None) => continue,
                Err(e) => e,
            };
            match TxnErrorClass::of(api, &err) {
                TxnErrorClass::Refind => coordinator = None,
                TxnErrorClass::Retriable => {}
                _ => return Err(err),
            }
            if Instant::now() >= deadline {
                return Err(err);
            }
            log::debug!("transactional id {transactional_id:?}: {api:?}: {err}; retrying");
            std::thread::sleep(backoff.next_delay().min(deadline - Instant::now()));
        }
    }

    /// The producer id and epoch InitProducerId gave.
    pub(crate) fn identity(&self) -> Identity {
        self.identity
    }

    /// Start the coordinator thread, on a cluster connection of its own made like
    /// `cluster`'s; it wakes the writer through `wake`.
    pub(crate) fn connect(
        self,
        cluster: &Cluster,
        wake: Sender<Msg>,
    ) -> Result<Transactional, super::error::Error> {
        let own = Cluster::connect_with(cluster.config().clone(), cluster.connector().clone())?;
        let line = Coordinator::start(
            own,
            self.transactional_id.clone(),
            self.transaction_timeout,
            self.retry_for,
            wake,
        )
        .map_err(|e| super::error::Error::Config {
            field: "threads",
            reason: format!("cannot start the transaction thread: {e}"),
        })?;
        Ok(Transactional {
            transactional_id: Arc::from(self.transactional_id.as_str()),
            txn: super::txn::Txn::new(self.version),
            line,
        })
    }
}
