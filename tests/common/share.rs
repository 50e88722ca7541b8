//! Share groups (KIP-932) in tests: member configs, a log of the deliveries members saw
//! (checked for what a share group promises), the group's lag as its coordinator reports it,
//! and the stdout lines of child processes (other members), read with a deadline.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kpipe::client::{Cluster, ShareGroupOffset};
use kpipe::consumer::GroupProtocol;
use kpipe::{ConsumedRecord, ConsumerConfig};

/// [`super::consumer_config`] for one share member of `group` on `brokers`.
pub fn config(brokers: &str, group: &str, topic: &str) -> ConsumerConfig {
    let mut c = super::consumer_config(group, topic, 1);
    c.client.bootstrap = brokers.split(',').map(str::to_owned).collect();
    c.group_protocol = GroupProtocol::Share;
    c
}

/// Set share group configs (`share.auto.offset.reset`, `share.record.lock.duration.ms`...)
/// before any member joins: a group need not exist for its configs to be set.
pub fn group_configs(cluster: &mut Cluster, group: &str, configs: &[(&str, &str)]) {
    cluster
        .alter_group_config(group, configs, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("setting {configs:?} on share group {group}: {e}"));
}

/// One delivery of a record to a member, as that member saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who got it: `"kpipe-0"`, `"java"`, `"child"`...
    pub member: String,
    pub partition: i32,
    pub offset: i64,
    /// The broker's delivery count (1 on the first delivery).
    pub count: u16,
    pub value: String,
    pub at: Instant,
}

impl Delivery {
    /// A record a kpipe member got.
    pub fn of(member: &str, r: &ConsumedRecord) -> Delivery {
        Delivery {
            member: member.to_owned(),
            partition: r.partition,
            offset: r.offset,
            count: r
                .delivery_count
                .unwrap_or_else(|| panic!("a share delivery without a delivery count: {r:?}")),
            value: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            at: Instant::now(),
        }
    }
}

/// Every delivery members reported, shared between threads.
#[derive(Debug, Clone, Default)]
pub struct Deliveries(Arc<Mutex<Vec<Delivery>>>);

impl Deliveries {
    /// A pool of share members (`config`) whose handler, member `i` named `kpipe-{i}`,
    /// notes each delivery here and then works `work` on it.
    pub fn pool(&self, config: ConsumerConfig, work: Duration) -> kpipe::ConsumerPool {
        let seen = self.clone();
        kpipe::ConsumerPool::start(config, move |i| {
            let seen = seen.clone();
            let me = format!("kpipe-{i}");
            move |r: &ConsumedRecord| {
                seen.push(Delivery::of(&me, r));
                std::thread::sleep(work);
                Ok::<(), String>(())
            }
        })
        .unwrap()
    }

    pub fn push(&self, d: Delivery) {
        self.0.lock().unwrap().push(d);
    }

    /// A copy of what was reported so far.
    pub fn all(&self) -> Vec<Delivery> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// How many distinct values were delivered.
    pub fn distinct_values(&self) -> usize {
        let all = self.0.lock().unwrap();
        all.iter()
            .map(|d| d.value.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Whether some delivery carried `value`.
    pub fn has_value(&self, value: &str) -> bool {
        self.0.lock().unwrap().iter().any(|d| d.value == value)
    }
}

/// What a share group promises about deliveries, whoever the members are: each delivery
/// of a record (its partition, offset and delivery count) goes to one member only, and a
/// record comes again only with a higher count. The records whose deliveries break it,
/// each with its deliveries in the order seen.
pub fn broken_promises(deliveries: &[Delivery]) -> Vec<Vec<Delivery>> {
    by_record(deliveries)
        .into_values()
        .filter(|ds| ds.windows(2).any(|w| w[0].count >= w[1].count))
        .collect()
}

/// Every record's deliveries, in the order seen, by (partition, offset); panics if one
/// record came with different values.
pub fn by_record(deliveries: &[Delivery]) -> BTreeMap<(i32, i64), Vec<Delivery>> {
    let mut out: BTreeMap<(i32, i64), Vec<Delivery>> = BTreeMap::new();
    for d in deliveries {
        out.entry((d.partition, d.offset))
            .or_default()
            .push(d.clone());
    }
    for ((p, o), ds) in &mut out {
        ds.sort_by_key(|d| d.at);
        assert!(
            ds.iter().all(|d| d.value == ds[0].value),
            "partition {p} offset {o} came with different values: {ds:?}"
        );
    }
    out
}

/// `(count, member)` of each delivery, for messages.
pub fn counts(ds: &[Delivery]) -> Vec<(u16, &str)> {
    ds.iter().map(|d| (d.count, d.member.as_str())).collect()
}

/// Panics, naming `what` and the records, unless `deliveries` keep to what a share group
/// promises ([`broken_promises`]); returns how many records were delivered more than once.
pub fn check_deliveries(what: &str, deliveries: &[Delivery]) -> usize {
    let broken = broken_promises(deliveries);
    let shown: Vec<String> = broken
        .iter()
        .map(|ds| {
            format!(
                "partition {} offset {}: {:?}",
                ds[0].partition,
                ds[0].offset,
                counts(ds)
            )
        })
        .collect();
    assert!(
        broken.is_empty(),
        "{what}: records delivered again without a higher delivery count (count, member, in \
         the order seen): {shown:?}"
    );
    by_record(deliveries)
        .values()
        .filter(|ds| ds.len() > 1)
        .count()
}

/// The group's offsets once its coordinator reports lag 0 on every partition (every record
/// acknowledged: accepted, rejected or archived), within `limit`; panics with the last
/// answer otherwise.
pub fn await_all_acknowledged(
    cluster: &mut Cluster,
    group: &str,
    partitions: usize,
    limit: Duration,
) -> Vec<ShareGroupOffset> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match cluster.share_group_offsets(group, Duration::from_secs(10)) {
            Ok(offsets) => {
                let done = offsets.len() == partitions && offsets.iter().all(|o| o.lag == Some(0));
                if done {
                    return offsets;
                }
                format!("{offsets:?}")
            }
            Err(e) => format!("error: {e}"),
        };
        assert!(
            Instant::now() < deadline,
            "share group {group}: lag not 0 on all {partitions} partitions within {limit:?}; \
             last answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stdout lines of a child process, read on a thread of their own, so that waiting
/// for one is bounded.
pub struct Lines {
    rx: Receiver<String>,
    what: String,
    /// Lines [`until`](Self::until) went past, not yet taken.
    pending: VecDeque<String>,
    /// Every line that came, for panic messages.
    seen: Vec<String>,
}

impl Lines {
    /// Read `out` (a child's stdout) line by line; `what` names the child in panics.
    pub fn read(out: impl Read + Send + 'static, what: &str) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            what: what.to_owned(),
            pending: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    /// The next line, waiting at most `limit`; `None` once the child closed its stdout.
    /// Panics when no line comes in time.
    pub fn next(&mut self, limit: Duration) -> Option<String> {
        match self.pending.pop_front() {
            Some(line) => Some(line),
            None => self.receive(limit),
        }
    }

    fn receive(&mut self, limit: Duration) -> Option<String> {
        match self.rx.recv_timeout(limit) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no line within {limit:?}; it printed so far:\n{}",
                self.what,
                self.seen.join("\n")
            ),
        }
    }

    /// The lines that came so far and were not taken, without waiting.
    pub fn ready(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self.pending.drain(..).collect();
        let new: Vec<String> = self.rx.try_iter().collect();
        self.seen.extend(new.iter().cloned());
        out.extend(new);
        out
    }

    /// The first line starting with `prefix`, waiting at most `limit`. The lines before it
    /// stay to be taken ([`next`](Self::next), [`ready`](Self::ready)). Panics if the child
    /// closes its stdout first, or time runs out.
    pub fn until(&mut self, prefix: &str, limit: Duration) -> String {
        if let Some(i) = self.pending.iter().position(|l| l.starts_with(prefix)) {
            return self.pending.remove(i).expect("found");
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receive(left) {
                Some(line) if line.starts_with(prefix) => return line,
                Some(line) => self.pending.push_back(line),
                None => panic!(
                    "{}: ended without a line starting {prefix:?}; it printed:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }
}
