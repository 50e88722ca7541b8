//! The client layer's transaction primitives (`src/client/txn.rs`) against real brokers:
//! which transaction version a cluster speaks; InitProducerId fencing an earlier instance of
//! the same transactional id; whole transactions, committed and aborted, with their offsets,
//! under transaction version 2 on Kafka 4.x and version 1 on Kafka 3.9.1 (and version 1
//! pinned on Kafka 4.x, which still serves older clients), read back at read_committed;
//! under version 1, writes and offsets refused until their partition or group is added
//! (which shows the version caps at work); and KIP-447's fence on the offsets of a member
//! the group does not know. The legacy tests need `KPIPE_LEGACY_BROKERS` (`./scripts/test`
//! sets it; `eval "$(scripts/kafka legacy-env)"` after `scripts/kafka up --legacy` does
//! too) and say so when it is unset.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kpipe::client::{
    ClientConfig, Cluster, Compression, Error, GroupMember, IsolationLevel, KafkaCode, NewTopic,
    OffsetSpec, Result, TopicPartition,
};
use kpipe::unstable::{
    BatchBuilder, FetchParams, FetchTarget, ProducerStamp, TransactionVersion, TxnApi,
    TxnErrorClass, TxnProducer,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn kafka_4_speaks_transaction_version_2() {
    let mut cluster = common::cluster();
    assert_eq!(
        cluster.transaction_version().unwrap(),
        TransactionVersion::V2
    );
}

#[test]
fn the_legacy_broker_speaks_transaction_version_1() {
    let Some(brokers) = legacy() else { return };
    let mut cluster = connect(&brokers);
    assert_eq!(
        cluster.transaction_version().unwrap(),
        TransactionVersion::V1
    );
}

#[test]
fn a_second_init_fences_the_first_on_kafka_4() {
    fencing(&common::brokers());
}

#[test]
fn a_second_init_fences_the_first_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    fencing(&brokers);
}

#[test]
fn transactions_under_version_2_on_kafka_4() {
    rounds(&common::brokers(), TransactionVersion::V2);
}

#[test]
fn transactions_under_version_1_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    rounds(&brokers, TransactionVersion::V1);
}

/// Kafka 4.x still serves version 1 clients; the version caps are what makes ours one
/// (EndTxn then goes at v4, whose answer has no epoch).
#[test]
fn transactions_under_version_1_pinned_on_kafka_4() {
    rounds(&common::brokers(), TransactionVersion::V1);
}

/// Under version 1 a write to a partition not added to the transaction is refused: the
/// Produce goes at v11 or below, where the leader checks the partition was added (KIP-890
/// part 1) instead of adding it (v12+); the same for TxnOffsetCommit at v4 or below.
#[test]
fn under_version_1_writes_need_their_partition_added_on_kafka_4() {
    unadded(&common::brokers());
}

#[test]
fn under_version_1_writes_need_their_partition_added_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    unadded(&brokers);
}

#[test]
fn offsets_of_a_member_the_group_does_not_know_are_refused_on_kafka_4() {
    zombie_offsets(&common::brokers(), TransactionVersion::V2);
}

#[test]
fn offsets_of_a_member_the_group_does_not_know_are_refused_on_the_legacy_broker() {
    let Some(brokers) = legacy() else { return };
    zombie_offsets(&brokers, TransactionVersion::V1);
}

// ---------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------

/// A second InitProducerId for the same transactional id bumps the epoch, and the first
/// instance's coordinator requests are refused as fenced, which is fatal for it.
fn fencing(brokers: &str) {
    let mut cluster = connect(brokers);
    let id = common::unique_topic("txn-fence");
    let (pid, epoch) = init(&mut cluster, &id, None).0;
    assert!(pid >= 0 && epoch >= 0, "({pid}, {epoch})");
    let (pid2, epoch2) = init(&mut cluster, &id, None).0;
    assert_eq!(
        (pid2, epoch2),
        (pid, epoch + 1),
        "the same producer id, the next epoch"
    );

    let first = TxnProducer {
        transactional_id: id.clone(),
        id: pid,
        epoch,
    };
    let topic = new_topic(&mut cluster, "txn-fence");
    let coordinator = cluster.find_transaction_coordinator(&id).unwrap();
    let added = cluster
        .add_partitions_to_txn(coordinator, &first, &[(topic.clone(), 0)])
        .unwrap();
    assert_eq!(added.len(), 1);
    assert_fenced(TxnApi::AddPartitionsToTxn, added[0].1.as_ref().unwrap_err());
    let version = cluster.transaction_version().unwrap();
    let ended = cluster.end_txn(coordinator, &first, version, false);
    assert_fenced(TxnApi::EndTxn { commit: false }, &ended.unwrap_err());
    // Asking to bump the epoch it held is refused too: it is no longer the current one.
    let bumped = cluster.init_transactional_id(coordinator, &id, TIMEOUT, Some((pid, epoch)));
    assert_fenced(TxnApi::InitProducerId, &bumped.unwrap_err());

    // The second instance is the one that works.
    let second = TxnProducer {
        transactional_id: id.clone(),
        id: pid2,
        epoch: epoch2,
    };
    if version == TransactionVersion::V1 {
        let added = cluster
            .add_partitions_to_txn(coordinator, &second, &[(topic.clone(), 0)])
            .unwrap();
        assert!(added[0].1.is_ok(), "{added:?}");
        assert_eq!(
            cluster
                .end_txn(coordinator, &second, version, false)
                .unwrap(),
            None
        );
    }
}

/// Four transactions of one producer in a one-partition topic, under transaction version
/// `version`: committed, aborted, committed, and one left open that a new instance of the
/// same transactional id aborts by fencing. A read_committed reader gets exactly the
/// committed records in order; the group's committed offset is the last committed
/// transaction's.
fn rounds(brokers: &str, version: TransactionVersion) {
    let mut cluster = connect(brokers);
    let topic = new_topic(&mut cluster, "txn-rounds");
    let group = common::unique_topic("txn-group");
    let id = common::unique_topic("txn-rounds");
    let mut txn = Txn::start(&mut cluster, &id, version);

    let c1 = values("c1-", 5);
    txn.round(&mut cluster, &topic, &c1, Some((&group, 5)));
    txn.end(&mut cluster, true);
    assert_eq!(committed_offset(&mut cluster, &group, &topic), Some(5));

    let aborted = values("ab-", 3);
    txn.round(&mut cluster, &topic, &aborted, Some((&group, 99)));
    txn.end(&mut cluster, false);
    assert_eq!(committed_offset(&mut cluster, &group, &topic), Some(5));

    let c2 = values("c2-", 4);
    txn.round(&mut cluster, &topic, &c2, Some((&group, 10)));
    txn.end(&mut cluster, true);
    assert_eq!(committed_offset(&mut cluster, &group, &topic), Some(10));

    // A transaction left open, then a new instance: the coordinator aborts the open one
    // (answering CONCURRENT_TRANSACTIONS until its markers are written) and fences the old
    // instance.
    let zombie = values("z-", 2);
    txn.round(&mut cluster, &topic, &zombie, Some((&group, 77)));
    let ((pid, epoch), retried) = init(&mut cluster, &id, None);
    println!("{version:?}: the new instance's InitProducerId was retried on {retried:?}");
    assert!(
        retried
            .iter()
            .all(|c| *c == KafkaCode::ConcurrentTransactions),
        "{retried:?}"
    );
    assert!(
        pid != txn.producer.id || epoch > txn.producer.epoch,
        "({pid}, {epoch}) after {:?}",
        txn.producer
    );
    // The old instance's next write is refused, abortable from a partition leader...
    let late = txn.produce(&mut cluster, &topic, &values("late-", 1));
    let err = late.unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::InvalidProducerEpoch),
        "{err}"
    );
    assert_eq!(
        TxnErrorClass::of(TxnApi::Produce, &err),
        TxnErrorClass::Abortable
    );
    // ... and its abort is refused as fenced, fatal from the coordinator.
    let coordinator = cluster.find_transaction_coordinator(&id).unwrap();
    let ended = cluster.end_txn(coordinator, &txn.producer, version, false);
    assert_fenced(TxnApi::EndTxn { commit: false }, &ended.unwrap_err());

    let committed: Vec<String> = c1.iter().chain(&c2).cloned().collect();
    assert_eq!(
        read(&mut cluster, &topic, IsolationLevel::ReadCommitted),
        committed
    );
    let everything: Vec<String> = [&c1, &aborted, &c2, &zombie]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    assert_eq!(
        read(&mut cluster, &topic, IsolationLevel::ReadUncommitted),
        everything
    );
    assert_eq!(committed_offset(&mut cluster, &group, &topic), Some(10));
}

/// A version 1 transaction producing to a partition it did not add, and committing
/// offsets of a group it did not add: both refused with TRANSACTION_ABORTABLE, by Kafka
/// 4.4 and 3.9.1 alike.
fn unadded(brokers: &str) {
    let mut cluster = connect(brokers);
    let topic = new_topic(&mut cluster, "txn-unadded");
    let id = common::unique_topic("txn-unadded");
    let txn = Txn::start(&mut cluster, &id, TransactionVersion::V1);
    // Past the retriable errors of a new topic (its leader settling), the leader's check
    // refuses the write: abortable.
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let err = txn
            .produce(&mut cluster, &topic, &values("u-", 2))
            .unwrap_err();
        if TxnErrorClass::of(TxnApi::Produce, &err) != TxnErrorClass::Retriable {
            break err;
        }
        assert!(Instant::now() < deadline, "still {err} after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("{brokers}: a write to a partition not added: {err}");
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::TransactionAbortable),
        "{err}"
    );
    assert_eq!(
        TxnErrorClass::of(TxnApi::Produce, &err),
        TxnErrorClass::Abortable
    );
    let group = common::unique_topic("txn-group");
    let group_coordinator = retrying(
        &mut cluster,
        TxnApi::FindCoordinator,
        "FindCoordinator",
        |c| c.find_coordinator(&group),
    )
    .0;
    let offsets = BTreeMap::from([((topic.clone(), 0), 1)]);
    let results = cluster.txn_offset_commit(
        group_coordinator,
        &txn.producer,
        TransactionVersion::V1,
        &group,
        None,
        &offsets,
    );
    let results = results.unwrap();
    println!("{brokers}: offsets of a group not added: {results:?}");
    let err = results[0].1.as_ref().unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::TransactionAbortable),
        "{err}"
    );
    assert_eq!(
        TxnErrorClass::of(TxnApi::TxnOffsetCommit, err),
        TxnErrorClass::Abortable
    );
    assert_eq!(committed_offset(&mut cluster, &group, &topic), None);
    assert_eq!(
        read(&mut cluster, &topic, IsolationLevel::ReadUncommitted),
        Vec::<String>::new()
    );
}

/// KIP-447: TxnOffsetCommit carrying a member and generation the group does not know is
/// refused by the group coordinator, and that only aborts the transaction.
fn zombie_offsets(brokers: &str, version: TransactionVersion) {
    let mut cluster = connect(brokers);
    let topic = new_topic(&mut cluster, "txn-zombie");
    let group = common::unique_topic("txn-group");
    let id = common::unique_topic("txn-zombie");
    let mut txn = Txn::start(&mut cluster, &id, version);
    txn.round(&mut cluster, &topic, &values("x-", 2), None);
    let ghost = GroupMember {
        member_id: "ghost".into(),
        generation: 5,
        instance_id: None,
    };
    let offsets = BTreeMap::from([((topic.clone(), 0), 2)]);
    if version == TransactionVersion::V1 {
        let coordinator = cluster.find_transaction_coordinator(&id).unwrap();
        cluster
            .add_offsets_to_txn(coordinator, &txn.producer, &group)
            .unwrap();
    }
    // The first group of a fresh broker waits for __consumer_offsets to be created.
    let group_coordinator = retrying(
        &mut cluster,
        TxnApi::FindCoordinator,
        "FindCoordinator",
        |c| c.find_coordinator(&group),
    )
    .0;
    let results = cluster
        .txn_offset_commit(
            group_coordinator,
            &txn.producer,
            version,
            &group,
            Some(&ghost),
            &offsets,
        )
        .unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let err = results[0].1.as_ref().unwrap_err();
    println!("{version:?}: a ghost member's TxnOffsetCommit: {err}");
    assert!(
        matches!(
            err.kafka_code(),
            Some(KafkaCode::IllegalGeneration | KafkaCode::UnknownMemberId)
        ),
        "{err}"
    );
    assert_eq!(
        TxnErrorClass::of(TxnApi::TxnOffsetCommit, err),
        TxnErrorClass::Abortable
    );
    // Abortable: the producer aborts and goes on.
    txn.end(&mut cluster, false);
    let again = values("y-", 2);
    txn.round(&mut cluster, &topic, &again, None);
    txn.end(&mut cluster, true);
    assert_eq!(
        read(&mut cluster, &topic, IsolationLevel::ReadCommitted),
        again
    );
    assert_eq!(committed_offset(&mut cluster, &group, &topic), None);
}

// ---------------------------------------------------------------------------------------
// A transactional producer made of the primitives
// ---------------------------------------------------------------------------------------

/// The state a transactional producer keeps, driven one request at a time.
struct Txn {
    producer: TxnProducer,
    version: TransactionVersion,
    /// The next sequence number of partition 0 (the only one the tests write).
    sequence: i32,
    /// Partitions added to the open transaction (transaction version 1).
    added: bool,
}

impl Txn {
    fn start(cluster: &mut Cluster, id: &str, version: TransactionVersion) -> Txn {
        let (pid, epoch) = init(cluster, id, None).0;
        Txn {
            producer: TxnProducer {
                transactional_id: id.to_owned(),
                id: pid,
                epoch,
            },
            version,
            sequence: 0,
            added: false,
        }
    }

    /// Write `records` to partition 0 of `topic` in the transaction and, with `offsets`,
    /// commit `(group, offset)` with it.
    fn round(
        &mut self,
        cluster: &mut Cluster,
        topic: &str,
        records: &[String],
        offsets: Option<(&str, i64)>,
    ) {
        let tp: TopicPartition = (topic.to_owned(), 0);
        if self.version == TransactionVersion::V1 && !self.added {
            // The first add after a commit meets CONCURRENT_TRANSACTIONS while the markers
            // of the last transaction are being written.
            let producer = &self.producer;
            retrying(
                cluster,
                TxnApi::AddPartitionsToTxn,
                "AddPartitionsToTxn",
                |c| {
                    let coordinator = c.find_transaction_coordinator(&producer.transactional_id)?;
                    all_ok(c.add_partitions_to_txn(
                        coordinator,
                        producer,
                        std::slice::from_ref(&tp),
                    ))
                },
            );
            self.added = true;
        }
        retrying(cluster, TxnApi::Produce, "Produce", |c| {
            self.produce(c, topic, records)
        });
        self.sequence += records.len() as i32;
        let Some((group, offset)) = offsets else {
            return;
        };
        let producer = &self.producer;
        if self.version == TransactionVersion::V1 {
            retrying(cluster, TxnApi::AddOffsetsToTxn, "AddOffsetsToTxn", |c| {
                let coordinator = c.find_transaction_coordinator(&producer.transactional_id)?;
                c.add_offsets_to_txn(coordinator, producer, group)
            });
        }
        let offsets = BTreeMap::from([(tp, offset)]);
        let version = self.version;
        retrying(cluster, TxnApi::TxnOffsetCommit, "TxnOffsetCommit", |c| {
            let coordinator = c.find_coordinator(group)?;
            all_ok(c.txn_offset_commit(coordinator, producer, version, group, None, &offsets))
        });
    }

    /// One transactional batch of `records` at the next sequence, one try.
    fn produce(&self, cluster: &mut Cluster, topic: &str, records: &[String]) -> Result<()> {
        let stamp = ProducerStamp {
            id: self.producer.id,
            epoch: self.producer.epoch,
            base_sequence: self.sequence,
        };
        cluster
            .produce_transactional(
                &self.producer.transactional_id,
                self.version,
                topic,
                0,
                batch(stamp, records),
                Duration::from_secs(20),
            )
            .map(|_| ())
    }

    /// Commit or abort. Under version 2 the coordinator hands back the next epoch of the
    /// same producer id, and sequences restart; under version 1 nothing changes.
    fn end(&mut self, cluster: &mut Cluster, commit: bool) {
        let (producer, version) = (&self.producer, self.version);
        let next = retrying(cluster, TxnApi::EndTxn { commit }, "EndTxn", |c| {
            let coordinator = c.find_transaction_coordinator(&producer.transactional_id)?;
            c.end_txn(coordinator, producer, version, commit)
        })
        .0;
        match version {
            TransactionVersion::V2 => {
                let want = (self.producer.id, self.producer.epoch + 1);
                assert_eq!(next, Some(want), "EndTxn v5 bumps the epoch");
                (self.producer.id, self.producer.epoch) = want;
                self.sequence = 0;
            }
            TransactionVersion::V1 => assert_eq!(next, None, "EndTxn v4 or below"),
        }
        self.added = false;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn legacy() -> Option<String> {
    let brokers = std::env::var("KPIPE_LEGACY_BROKERS").ok();
    if brokers.is_none() {
        eprintln!(
            "KPIPE_LEGACY_BROKERS is unset (scripts/test sets it; or scripts/kafka up \
             --legacy and eval \"$(scripts/kafka legacy-env)\"): skipped"
        );
    }
    brokers
}

fn connect(brokers: &str) -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = common::config();
    config.bootstrap = ClientConfig::new([brokers]).bootstrap;
    Cluster::connect(config).unwrap_or_else(|e| {
        panic!("no broker at {brokers}: {e}; start one with ./scripts/kafka up")
    })
}

fn new_topic(cluster: &mut Cluster, prefix: &str) -> String {
    let name = common::unique_topic(prefix);
    cluster
        .create_topic(&NewTopic::new(&name, 1, 1), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
    name
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// One transactional batch of `records`, stamped.
fn batch(stamp: ProducerStamp, records: &[String]) -> Bytes {
    // Now: records older than the topic's retention would be deleted at once.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut builder = BatchBuilder::default();
    builder.set_transactional(true);
    for r in records {
        builder.push(now, None, Some(r.as_bytes()), &[]);
    }
    let mut out = Vec::new();
    builder
        .finish_as(Compression::None, stamp, &mut out)
        .unwrap();
    Bytes::from(out)
}

/// Run `op` until it succeeds, for at most 30 s, retrying while its error is one `api`
/// retries ([`TxnErrorClass::Retriable`], or [`TxnErrorClass::Refind`]: `op` looks the
/// coordinator up each time). Any other error fails the test. Returns the codes retried.
fn retrying<T>(
    cluster: &mut Cluster,
    api: TxnApi,
    what: &str,
    mut op: impl FnMut(&mut Cluster) -> Result<T>,
) -> (T, Vec<KafkaCode>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut retried = Vec::new();
    loop {
        match op(cluster) {
            Ok(v) => return (v, retried),
            Err(e) => {
                let class = TxnErrorClass::of(api, &e);
                assert!(
                    matches!(class, TxnErrorClass::Retriable | TxnErrorClass::Refind),
                    "{what}: {e} ({class:?})"
                );
                assert!(Instant::now() < deadline, "{what}: still {e} after 30 s");
                retried.extend(e.kafka_code());
                // A backoff between tries, as a producer would.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// InitProducerId for `id` at its coordinator, retried as a producer would.
fn init(
    cluster: &mut Cluster,
    id: &str,
    current: Option<(i64, i16)>,
) -> ((i64, i16), Vec<KafkaCode>) {
    retrying(cluster, TxnApi::InitProducerId, "InitProducerId", |c| {
        let coordinator = c.find_transaction_coordinator(id)?;
        c.init_transactional_id(coordinator, id, TIMEOUT, current)
    })
}

/// The first error of per-partition results.
fn all_ok(results: Result<Vec<(TopicPartition, Result<()>)>>) -> Result<()> {
    for (_, r) in results? {
        r?;
    }
    Ok(())
}

/// `err` says the producer was fenced (PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH from an
/// older coordinator), and that is fatal for it.
fn assert_fenced(api: TxnApi, err: &Error) {
    println!("{api:?} as the fenced instance: {err}");
    assert!(
        matches!(
            err.kafka_code(),
            Some(KafkaCode::ProducerFenced | KafkaCode::InvalidProducerEpoch)
        ),
        "{api:?}: {err}"
    );
    assert_eq!(
        TxnErrorClass::of(api, err),
        TxnErrorClass::Fatal,
        "{api:?}: {err}"
    );
}

/// The values of partition 0 of `topic` as a reader at `isolation` sees them, once every
/// transaction has ended (the last stable offset has caught up with the high watermark:
/// the markers EndTxn leads to are written after it returns).
fn read(cluster: &mut Cluster, topic: &str, isolation: IsolationLevel) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = loop {
        let stable = cluster
            .list_offsets_as(
                topic,
                &[0],
                OffsetSpec::Latest,
                IsolationLevel::ReadCommitted,
            )
            .unwrap()[0]
            .offset;
        let high = cluster
            .list_offsets(topic, &[0], OffsetSpec::Latest)
            .unwrap()[0]
            .offset;
        if stable == high {
            break high;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: the last stable offset stayed at {stable}, below {high}, for 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let params = FetchParams {
        max_wait: Duration::from_millis(100),
        isolation,
        ..FetchParams::default()
    };
    let topic_id = cluster.topic(topic).unwrap().id;
    let mut offset = 0;
    let mut out = Vec::new();
    while offset < end {
        assert!(Instant::now() < deadline, "{topic}: reading took over 30 s");
        let target = FetchTarget {
            topic: topic.to_owned(),
            topic_id,
            partition: 0,
            offset,
            current_leader_epoch: None,
            replica: None,
        };
        for r in cluster.fetch(&params, &[target]).unwrap() {
            let part = r.result.unwrap();
            offset = part.next_offset;
            out.extend(
                part.records
                    .into_iter()
                    .map(|rec| String::from_utf8(rec.value.unwrap().to_vec()).unwrap()),
            );
        }
    }
    out
}

/// The offset `group` committed for partition 0 of `topic`, once no transaction holds one
/// pending (OffsetFetch with RequireStable answers UNSTABLE_OFFSET_COMMIT until then).
fn committed_offset(cluster: &mut Cluster, group: &str, topic: &str) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let coordinator = retrying(cluster, TxnApi::FindCoordinator, "FindCoordinator", |c| {
            c.find_coordinator(group)
        })
        .0;
        let conn = cluster.broker(coordinator).unwrap();
        let version = conn.version::<OffsetFetchRequest>().unwrap();
        assert!(version >= 8, "OffsetFetch v{version}: no groups form");
        let mut t = OffsetFetchRequestTopics::default();
        t.name = TopicName(StrBytes::from_string(topic.to_owned()));
        t.partition_indexes = vec![0];
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = GroupId(StrBytes::from_string(group.to_owned()));
        g.member_id = None;
        g.member_epoch = -1;
        g.topics = Some(vec![t]);
        let mut req = OffsetFetchRequest::default();
        req.groups = vec![g];
        req.require_stable = true;
        let resp = conn.request(&req).unwrap();
        let g = &resp.groups[0];
        let p = &g.topics[0].partitions[0];
        let code = if g.error_code != 0 {
            g.error_code
        } else {
            p.error_code
        };
        if code == 0 {
            return (p.committed_offset >= 0).then_some(p.committed_offset);
        }
        assert_eq!(
            code,
            KafkaCode::UnstableOffsetCommit.code(),
            "OffsetFetch of {group}"
        );
        assert!(
            Instant::now() < deadline,
            "{group}: offsets still pending after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
