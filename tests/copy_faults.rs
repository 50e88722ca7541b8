//! `kpipe copy --transactional-id` (the real binary) through faults: killed with SIGKILL
//! and restarted, stopped with SIGTERM and restarted, a stalled copier whose group moved
//! on to a second copier (it must be fenced), and on the three-node cluster its
//! transaction coordinator killed mid-run.
//!
//! Each test fills a fresh input topic with N keyed records (keys k0..k99, values
//! `k{key}:{seq}` with a per-key sequence, a header and a timestamp of their own), copies
//! it, reads the output at read_committed, and prints and checks
//! `input N, output M, lost L, duplicated D, out of order O` (per key, by the sequence):
//! L = D = O = 0 and M = N. Every wait has a deadline; signals go to the pids of the
//! children spawned here only.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kpipe::client::{ClientConfig, Cluster, IsolationLevel, NewTopic, OffsetSpec};
use kpipe::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

/// Records in each input.
const N: usize = 20_000;
const KEYS: usize = 100;
const PARTITIONS: i32 = 6;

/// Where a test runs: the single broker, or the three-node cluster.
#[derive(Clone)]
struct Target {
    brokers: String,
    replication: i16,
}

impl Target {
    fn single() -> Target {
        let _ = common::cluster(); // fails loudly without a broker
        Target {
            brokers: common::brokers(),
            replication: 1,
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new([self.brokers.clone()]);
        c.connection.client_id = "kpipe-copy-tests".into();
        c.connection.connect_timeout = Duration::from_secs(5);
        c.connection.request_timeout = Duration::from_secs(20);
        c
    }

    fn cluster(&self) -> Cluster {
        Cluster::connect(self.client()).unwrap_or_else(|e| panic!("{}: {e}", self.brokers))
    }

    /// A fresh input topic of N keyed records.
    fn input(&self, prefix: &str) -> String {
        let topic = common::unique_topic(prefix);
        let mut t = NewTopic::new(&topic, PARTITIONS, self.replication);
        if self.replication > 1 {
            t.configs.push(("min.insync.replicas".into(), "2".into()));
        }
        self.cluster()
            .create_topic(&t, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
        let mut c = ProducerConfig::new(&self.brokers).topic(&topic);
        c.client = self.client();
        c.delivery_timeout = Duration::from_secs(60);
        let producer = Producer::new(c).unwrap();
        for i in 0..N {
            let (key, seq) = (i % KEYS, i / KEYS);
            let r = ProducerRecord::new(format!("k{key}:{seq}"))
                .key(format!("k{key}"))
                .header("seq", seq.to_string())
                .timestamp(stamp(i));
            producer.send(r).unwrap();
        }
        let s = producer.close(Duration::from_secs(60)).unwrap();
        assert_eq!(s.delivered, N as u64, "{s:?}");
        topic
    }

    /// Records of `topic` a read_committed reader sees: the sum of the last stable
    /// offsets (control records take offsets too, so this runs ahead of the count).
    fn stable_end(&self, topic: &str) -> i64 {
        let mut cluster = self.cluster();
        let Ok(info) = cluster.topic(topic).cloned() else {
            return 0;
        };
        let parts: Vec<i32> = info.partitions.iter().map(|p| p.id).collect();
        cluster
            .list_offsets_as(
                topic,
                &parts,
                OffsetSpec::Latest,
                IsolationLevel::ReadCommitted,
            )
            .map(|ends| ends.iter().map(|e| e.offset).sum())
            .unwrap_or(0)
    }

    /// Every record of `topic` at read_committed, read from a fresh group until `n` came
    /// and a further second brought nothing (at most 90 s).
    fn read_committed(&self, topic: &str, n: usize) -> Vec<kpipe::ConsumedRecord> {
        let mut c = ConsumerConfig::new(&self.brokers, &common::unique_topic("reader"), &[topic]);
        c.client = self.client();
        c.offset_reset = kpipe::consumer::OffsetReset::Earliest;
        c.isolation_level = IsolationLevel::ReadCommitted;
        c.auto_commit = false;
        let mut consumer = Consumer::new(c).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            let batch = consumer.poll(Duration::from_millis(200)).unwrap();
            if !batch.is_empty() {
                quiet_since = Instant::now();
            }
            got.extend(batch);
            if got.len() >= n && quiet_since.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        consumer.close(Duration::from_secs(30)).unwrap();
        got
    }

    /// Records a read_committed reader finds in `topic` now (reading stops at `n`).
    fn count_committed(&self, topic: &str, n: usize) -> usize {
        let mut c = ConsumerConfig::new(&self.brokers, &common::unique_topic("counter"), &[topic]);
        c.client = self.client();
        c.offset_reset = kpipe::consumer::OffsetReset::Earliest;
        c.isolation_level = IsolationLevel::ReadCommitted;
        c.auto_commit = false;
        let mut consumer = Consumer::new(c).unwrap();
        let (mut got, deadline) = (0, Instant::now() + Duration::from_secs(30));
        let mut quiet_since = Instant::now();
        while got < n && Instant::now() < deadline {
            let batch = consumer.poll(Duration::from_millis(200)).unwrap();
            if !batch.is_empty() {
                quiet_since = Instant::now();
            } else if got > 0 && quiet_since.elapsed() > Duration::from_secs(1) {
                break;
            }
            got += batch.len();
        }
        let _ = consumer.close(Duration::from_secs(10));
        got
    }

    /// Wait (at most `limit`) until `topic` holds `n` records at read_committed.
    fn await_output(&self, topic: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            // Aborted records and markers take offsets too: the stable end passes n
            // before n records are readable, so count them once it does.
            if self.stable_end(topic) >= n as i64 && self.count_committed(topic, n) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: {} of {n} at read_committed after {limit:?}",
                self.stable_end(topic)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Read the output and check it against the input: printed, then asserted.
    fn check(&self, output: &str) {
        let records = self.read_committed(output, N);
        let mut seen: HashMap<(usize, usize), u32> = HashMap::new();
        let mut last: HashMap<usize, usize> = HashMap::new();
        let mut out_of_order = 0;
        let mut bad_copies = 0;
        let mut partition_of_key: HashMap<usize, i32> = HashMap::new();
        for r in &records {
            let value = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap();
            let (k, s) = value[1..].split_once(':').unwrap();
            let (key, seq): (usize, usize) = (k.parse().unwrap(), s.parse().unwrap());
            *seen.entry((key, seq)).or_default() += 1;
            if last.get(&key).is_some_and(|&l| seq <= l) {
                out_of_order += 1;
            }
            last.insert(key, seq);
            // Key, header and timestamp copied; one partition a key.
            let i = seq * KEYS + key;
            let header_ok = r.headers.len() == 1
                && r.headers[0].key == "seq"
                && r.headers[0].value.as_deref() == Some(seq.to_string().as_bytes());
            if r.key.as_deref() != Some(format!("k{key}").as_bytes())
                || !header_ok
                || r.timestamp != stamp(i)
                || *partition_of_key.entry(key).or_insert(r.partition) != r.partition
            {
                bad_copies += 1;
            }
        }
        let lost = (0..N)
            .filter(|i| !seen.contains_key(&(i % KEYS, i / KEYS)))
            .count();
        let duplicated: u32 = seen.values().map(|&c| c - 1).sum();
        println!(
            "input {N}, output {}, lost {lost}, duplicated {duplicated}, out of order {out_of_order}",
            records.len()
        );
        assert_eq!(
            (lost, duplicated, out_of_order, records.len(), bad_copies),
            (0, 0, 0, N, 0),
            "lost, duplicated, out of order, output, copies with a wrong key/header/timestamp/partition"
        );
    }
}

/// The input timestamp of record `i`: an hour before this test process started, plus
/// i ms, so that a copy stamped "now" would show. (Not older: the topics' time retention
/// of 7 days would delete records stamped long ago while the test reads them.)
fn stamp(i: usize) -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_millis() as i64 - 3_600_000
    });
    base + i as i64
}

/// A running `kpipe copy`, its stderr in a file.
struct Copier {
    child: Child,
    stderr: PathBuf,
    summary: PathBuf,
    stats: PathBuf,
    name: String,
}

impl Copier {
    fn start(target: &Target, input: &str, output: &str, group: &str, extra: &[&str]) -> Copier {
        let name = common::unique_topic("copier");
        let dir = std::env::temp_dir();
        let stderr = dir.join(format!("{name}.stderr"));
        let summary = dir.join(format!("{name}.json"));
        let stats = dir.join(format!("{name}.stats.jsonl"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpipe"));
        cmd.args([
            "copy",
            "--brokers",
            &target.brokers,
            "--input-topic",
            input,
            "--output-topic",
            output,
            "--group",
            group,
            "--summary-json",
            summary.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
        ])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("KPIPE_COPY_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
        Copier {
            child: cmd.spawn().expect("start kpipe copy"),
            stderr,
            summary,
            stats,
            name,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {}", self.child.id());
    }

    /// Wait for the exit (at most `limit`, then SIGKILL and fail); its code.
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and expect exit 0.
    fn stop(&mut self) {
        self.signal("TERM");
        let code = self.wait(Duration::from_secs(60));
        assert_eq!(code, 0, "{} after SIGTERM:\n{}", self.name, self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.summary)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.summary.display(), self.stderr()));
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Copier {
    /// Ends the child if it still runs; a failing test shows its stderr.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.stderr();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- {} stderr (last 60 lines) ---", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
            let stats = std::fs::read_to_string(&self.stats).unwrap_or_default();
            eprintln!("last stats: {}", stats.lines().last().unwrap_or("none"));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.signal_quietly("CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr);
        let _ = std::fs::remove_file(&self.summary);
        let _ = std::fs::remove_file(&self.stats);
    }
}

impl Copier {
    fn signal_quietly(&self, sig: &str) -> std::io::Result<std::process::ExitStatus> {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
    }
}

/// Run a copier with the same id until the output holds every record, then SIGTERM it.
fn finish(target: &Target, input: &str, output: &str, group: &str, id: &str) -> serde_json::Value {
    let mut c = Copier::start(
        target,
        input,
        output,
        group,
        &["--transactional-id", id, "--consumers", "2"],
    );
    target.await_output(output, N, Duration::from_secs(120));
    c.stop();
    c.summary()
}

/// Wait until the copier has committed some output but not all (at most 60 s).
fn await_midway(target: &Target, output: &str, copier: &Copier) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = target.stable_end(output);
        if done >= 2_000 {
            assert!(
                done < N as i64,
                "the copy finished before the fault ({done}); slow it down (--rate)"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no committed output within 60 s; stderr:\n{}",
            copier.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copy at 1,500 records/s per member: about 7 s for the whole input with two members.
const SLOW: &[&str] = &["--rate", "1500"];

#[test]
fn killed_with_sigkill_and_restarted_under_the_same_id_copies_each_record_once() {
    let target = Target::single();
    let input = target.input("copy-kill9");
    let (output, group, id) = (
        format!("{input}-out"),
        format!("{input}-g"),
        format!("{input}-tx"),
    );
    let mut args = vec!["--transactional-id", id.as_str(), "--consumers", "2"];
    args.extend_from_slice(SLOW);
    let mut first = Copier::start(&target, &input, &output, &group, &args);
    await_midway(&target, &output, &first);
    first.kill9();
    // Again, killed again mid-way, then to the end.
    let mut second = Copier::start(&target, &input, &output, &group, &args);
    // Killed once it is in the group (its join logged), before it can finish.
    common::await_condition(Duration::from_secs(30), "the second copier joined", || {
        second.stderr().contains("joined")
    });
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "{}",
        second.stderr()
    );
    second.kill9();
    let summary = finish(&target, &input, &output, &group, &id);
    assert_eq!(summary["fenced_members"], 0, "{summary}");
    target.check(&output);
}

#[test]
fn sigterm_commits_exits_0_and_a_restart_finishes() {
    let target = Target::single();
    let input = target.input("copy-term");
    let (output, group, id) = (
        format!("{input}-out"),
        format!("{input}-g"),
        format!("{input}-tx"),
    );
    let mut args = vec!["--transactional-id", id.as_str(), "--consumers", "2"];
    args.extend_from_slice(SLOW);
    let mut first = Copier::start(&target, &input, &output, &group, &args);
    await_midway(&target, &output, &first);
    first.stop();
    let s = first.summary();
    assert_eq!(s["stopped_by"], "signal", "{s}");
    assert!(s["transactions_committed"].as_u64().unwrap() > 0, "{s}");
    let copied = s["copied"].as_u64().unwrap();
    assert!(copied > 0 && copied < N as u64, "{s}");
    // What the summary says was copied is what a read_committed reader finds: the open
    // transaction was committed before the exit.
    assert!(target.stable_end(&output) as u64 >= copied, "{s}");
    finish(&target, &input, &output, &group, &id);
    target.check(&output);
}

#[test]
fn a_stalled_copier_is_fenced_once_the_group_moved_on_to_another() {
    let target = Target::single();
    let input = target.input("copy-zombie");
    let (output, group) = (format!("{input}-out"), format!("{input}-g"));
    let (id_a, id_b) = (format!("{input}-a"), format!("{input}-b"));
    // A: one member, slow; short session and transaction timeouts so the test is quick.
    let quick = ["--session-timeout", "6s", "--transaction-timeout", "10s"];
    let mut args_a = vec![
        "--transactional-id",
        id_a.as_str(),
        "--consumers",
        "1",
        "--rate",
        "1500",
    ];
    args_a.extend_from_slice(&quick);
    let mut a = Copier::start(&target, &input, &output, &group, &args_a);
    await_midway(&target, &output, &a);
    a.signal("STOP");
    let stopped = Instant::now();
    // B: another id, the same group. It gets A's partitions once A's session expired,
    // and A's open transaction is aborted at its timeout, so B's output becomes readable.
    let mut args_b = vec!["--transactional-id", id_b.as_str(), "--consumers", "1"];
    args_b.extend_from_slice(&quick);
    let mut b = Copier::start(&target, &input, &output, &group, &args_b);
    target.await_output(&output, N, Duration::from_secs(120));
    b.stop();
    println!("B: {}", b.summary());
    println!("B finished {:?} after A was stopped", stopped.elapsed());
    // A wakes up: its transaction is refused (the group moved on, or its producer was
    // fenced when the coordinator aborted it), it stops and says why.
    a.signal("CONT");
    let code = a.wait(Duration::from_secs(60));
    let stderr = a.stderr();
    println!("A exited {code}; stderr:\n{stderr}");
    assert_eq!(code, 1, "A must stop with exit 1:\n{stderr}");
    let s = a.summary();
    assert_eq!(s["fenced_members"], 1, "{s}");
    let why = s["stopped_because"].as_str().unwrap_or_default();
    assert!(why.contains("every member's producer was fenced"), "{s}");
    assert!(stderr.contains("fenced"), "{stderr}");
    target.check(&output);
}

#[test]
fn the_transaction_coordinator_killed_mid_run_on_the_cluster() {
    let (Ok(brokers), Ok(script)) = (
        std::env::var("KPIPE_CLUSTER_BROKERS"),
        std::env::var("KPIPE_KAFKA_SCRIPT"),
    ) else {
        println!(
            "skipped: KPIPE_CLUSTER_BROKERS and KPIPE_KAFKA_SCRIPT are not set (start the \
             cluster with ./scripts/kafka up --nodes 3 and eval \"$(scripts/kafka cluster-env)\")"
        );
        return;
    };
    let kafka = |args: &[&str]| {
        let out = Command::new(&script)
            .args(args)
            .output()
            .expect("scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kafka(&["up", "--nodes", "3"]);
    let target = Target {
        brokers,
        replication: 3,
    };
    let input = target.input("copy-coord");
    let (output, group, id) = (
        format!("{input}-out"),
        format!("{input}-g"),
        format!("{input}-tx"),
    );
    let mut args = vec!["--transactional-id", id.as_str(), "--consumers", "1"];
    args.extend_from_slice(&["--rate", "2000"]);
    let mut copier = Copier::start(&target, &input, &output, &group, &args);
    await_midway(&target, &output, &copier);
    let member0 = format!("{id}-0");
    let victim = target
        .cluster()
        .find_transaction_coordinator(&member0)
        .unwrap();
    println!("killing node {victim}, the transaction coordinator of {member0}");
    kafka(&["kill", &victim.to_string()]);
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        copier.child.try_wait().unwrap().is_none(),
        "the copier gave up with the coordinator down:\n{}",
        copier.stderr()
    );
    kafka(&["start", &victim.to_string()]);
    println!("node {victim} back after {:?}", killed.elapsed());
    target.await_output(&output, N, Duration::from_secs(180));
    copier.stop();
    let s = copier.summary();
    println!("summary: {s}");
    target.check(&output);
}
