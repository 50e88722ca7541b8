//! The producer against the real broker: many threads, one writer, every record accounted for.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpipe::client::{Compression, KafkaCode, NewTopic};
use kpipe::producer::{Balancer, DeliveryError, OnDelivery, SendError, TopicDefaults};
use kpipe::{Producer, ProducerRecord};

#[test]
fn eight_threads_fifty_thousand_each_arrive_exactly_once() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 50_000;
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "many", 6);
    let mut config = common::producer_config(&topic);
    config.balancer = Balancer::Hash;
    let producer = Producer::new(config).unwrap();
    let acked = Arc::new(AtomicU64::new(0));

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (producer, acked) = (producer.clone(), acked.clone());
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let id = t * PER_THREAD + i;
                    let record = ProducerRecord::new(format!("value-{id}"))
                        .key(format!("key-{}", id % 1000))
                        .header("id", id.to_string())
                        .header("thread", t.to_string());
                    let acked = acked.clone();
                    producer
                        .send_with_callback(record, move |r| {
                            r.expect("delivered");
                            acked.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(summary.accepted, total);
    assert_eq!(summary.delivered, total, "{summary:?}");
    assert_eq!(
        (summary.failed, summary.not_attempted),
        (0, 0),
        "{summary:?}"
    );
    assert_eq!(
        acked.load(Ordering::Relaxed),
        total,
        "each callback ran once"
    );

    let got = common::fetch_all(&mut cluster, &topic);
    assert_eq!(
        got.len() as u64,
        total,
        "the topic holds exactly the acked records"
    );
    let mut seen = vec![false; total as usize];
    for (partition, r) in got {
        let id: usize = std::str::from_utf8(r.headers[0].value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(!std::mem::replace(&mut seen[id], true), "record {id} twice");
        assert_eq!(r.value.as_deref(), Some(format!("value-{id}").as_bytes()));
        let key = format!("key-{}", id % 1000);
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(
            partition as usize,
            kpipe::producer::java_partition(key.as_bytes(), 6)
        );
        assert_eq!(r.headers[1].key, "thread");
        assert_eq!(
            r.headers[1].value.as_deref(),
            Some((id / PER_THREAD).to_string().as_bytes())
        );
    }
    let stats = producer.stats();
    assert_eq!(stats.delivered, total);
    assert!(
        stats.batches > 0 && stats.avg_batch_records >= 1.0,
        "{stats:?}"
    );
    assert!(
        stats.latency.p50 > Duration::ZERO && stats.latency.p99 >= stats.latency.p50,
        "{stats:?}"
    );
}

#[test]
fn per_key_order_holds_across_threads_and_partitions() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "order", 4);
    let producer = Producer::new(common::producer_config(&topic)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            thread::spawn(move || {
                for seq in 0..5_000u32 {
                    let key = format!("device-{}", seq % 50);
                    let value = format!("{t}:{seq}");
                    producer.send(ProducerRecord::new(value).key(key)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, 20_000, "{summary:?}");
    let mut last: HashMap<(String, u32), i64> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for (p, r) in common::fetch_all(&mut cluster, &topic) {
        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(p),
            p,
            "{key} moved partitions"
        );
        let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
        let (t, seq) = value.split_once(':').unwrap();
        let (t, seq): (u32, i64) = (t.parse().unwrap(), seq.parse().unwrap());
        let prev = last.insert((key.clone(), t), seq).unwrap_or(-1);
        assert!(seq > prev, "{key} from thread {t}: {seq} after {prev}");
    }
    assert_eq!(partition_of.len(), 50);
}

#[test]
fn round_robin_cycles_and_least_bytes_spreads() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "balance", 3);
    let mut config = common::producer_config(&topic);
    config.balancer = Balancer::RoundRobin;
    let producer = Producer::new(config).unwrap();
    let receipts: Vec<_> = (0..30)
        .map(|i| {
            producer
                .send_tracked(ProducerRecord::new(format!("{i}")))
                .unwrap()
        })
        .collect();
    let partitions: Vec<i32> = receipts
        .into_iter()
        .map(|r| r.wait().unwrap().unwrap().partition)
        .collect();
    let first = partitions[0];
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(*p, (first + i as i32) % 3, "{partitions:?}");
    }
    producer.close(Duration::from_secs(30)).unwrap();

    let mut config = common::producer_config(&topic);
    config.balancer = Balancer::LeastBytes;
    let producer = Producer::new(config).unwrap();
    let counts = Arc::new(Mutex::new([0u32; 3]));
    for i in 0..3_000 {
        let counts = counts.clone();
        let record = ProducerRecord::new(vec![b'x'; 10 + (i % 7) * 100]);
        producer
            .send_with_callback(record, move |r| {
                counts.lock().unwrap()[r.unwrap().partition as usize] += 1
            })
            .unwrap();
    }
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(summary.delivered, 3_000);
    let counts = *counts.lock().unwrap();
    assert!(
        counts.iter().all(|&c| c >= 300),
        "LeastBytes left a partition starved: {counts:?}"
    );
}

#[test]
fn an_oversize_record_fails_alone() {
    let mut cluster = common::cluster();
    let topic = common::unique_topic("oversize");
    cluster
        .create_topic(
            &NewTopic::new(&topic, 1, 1).config("max.message.bytes", "20000"),
            Duration::from_secs(30),
        )
        .unwrap();
    let mut config = common::producer_config(&topic);
    // One big batch, so the broker rejects it whole and the producer must split it.
    config.batch_bytes = 512 * 1024;
    config.linger = Duration::from_millis(200);
    let producer = Producer::new(config).unwrap();
    let receipts: Vec<_> = (0..11)
        .map(|i| {
            let size = if i == 5 { 50_000 } else { 100 };
            producer
                .send_tracked(ProducerRecord::new(vec![i as u8; size]))
                .unwrap()
        })
        .collect();
    let outcomes: Vec<_> = receipts.into_iter().map(|r| r.wait().unwrap()).collect();
    for (i, o) in outcomes.iter().enumerate() {
        if i == 5 {
            match o {
                Err(DeliveryError::Rejected(e)) => assert!(
                    matches!(
                        e.kafka_code(),
                        Some(KafkaCode::MessageTooLarge) | Some(KafkaCode::RecordListTooLarge)
                    ),
                    "{e}"
                ),
                other => panic!("the big record should be rejected, got {other:?}"),
            }
        } else {
            assert!(o.is_ok(), "record {i}: {o:?}");
        }
    }
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!((summary.delivered, summary.failed), (10, 1), "{summary:?}");
    let got = common::fetch_all(&mut cluster, &topic);
    let firsts: Vec<u8> = got
        .iter()
        .map(|(_, r)| r.value.as_ref().unwrap()[0])
        .collect();
    assert_eq!(
        firsts,
        [0, 1, 2, 3, 4, 6, 7, 8, 9, 10],
        "order kept around the failure"
    );
}

#[test]
fn a_full_queue_hands_the_record_back_within_write_timeout() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "full", 1);
    let mut config = common::producer_config(&topic);
    config.queue_capacity = 2;
    config.write_timeout = Duration::from_millis(300);
    config.linger = Duration::ZERO;
    let producer = Producer::new(config).unwrap();
    // A callback that blocks the writer thread until released: the queue behind it fills.
    let (release, released) = crossbeam_channel::bounded::<()>(1);
    let (entered, blocked) = crossbeam_channel::bounded::<()>(1);
    producer
        .send_with_callback(ProducerRecord::new("first"), move |_| {
            entered.send(()).unwrap();
            released.recv_timeout(Duration::from_secs(30)).unwrap();
        })
        .unwrap();
    blocked
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer ran the callback");
    producer.send(ProducerRecord::new("a")).unwrap();
    producer.send(ProducerRecord::new("b")).unwrap();
    let started = Instant::now();
    let err = producer.send(ProducerRecord::new("c")).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, SendError::QueueFull(_)), "{err}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        err.into_record().value.as_deref(),
        Some(&b"c"[..]),
        "the record comes back"
    );
    let err = producer.try_send(ProducerRecord::new("d")).unwrap_err();
    assert!(matches!(err, SendError::QueueFull(_)), "{err}");
    release.send(()).unwrap();
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!((summary.accepted, summary.delivered), (3, 3), "{summary:?}");
}

#[test]
fn senders_blocked_on_a_full_queue_all_get_through_and_nothing_is_lost() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "room", 3);
    let mut config = common::producer_config(&topic);
    // A queue of 8 records for 8 threads: nearly every send waits for room, and the
    // writer wakes the waiting senders only once the queue is half empty.
    config.queue_capacity = 8;
    config.write_timeout = Duration::from_secs(60);
    let producer = Producer::new(config).unwrap();
    let per_thread = 5_000u64;
    let senders: Vec<_> = (0..8u64)
        .map(|t| {
            let p = producer.clone();
            thread::spawn(move || {
                for i in 0..per_thread {
                    let value = format!("{t}-{i}");
                    p.send(ProducerRecord::new(value)).expect("room comes");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.accepted, 8 * per_thread, "{summary:?}");
    assert_eq!(summary.delivered, 8 * per_thread, "{summary:?}");
    let read = common::fetch_all(&mut cluster, &topic);
    assert_eq!(
        read.len(),
        8 * per_thread as usize,
        "nothing more in the topic"
    );
    let distinct: HashSet<_> = read.iter().map(|(_, r)| r.value.clone()).collect();
    assert_eq!(distinct.len(), 8 * per_thread as usize, "every record once");
}

#[test]
fn tagged_sends_report_every_tag_once_to_the_one_handler() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "tagged", 3);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut config = common::producer_config(&topic);
    let seen = outcomes.clone();
    config.on_delivery = Some(OnDelivery::new(move |tag, r| {
        seen.lock().unwrap().push((tag, r.map(|d| d.offset)));
    }));
    let producer = Producer::new(config).unwrap();
    for tag in 0..3000u64 {
        producer
            .send_tagged(ProducerRecord::new(tag.to_string()), tag)
            .unwrap();
    }
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(summary.delivered, 3000, "{summary:?}");
    let outcomes = outcomes.lock().unwrap();
    let tags: HashSet<u64> = outcomes.iter().map(|(t, _)| *t).collect();
    assert_eq!((outcomes.len(), tags.len()), (3000, 3000), "each tag once");
    assert!(outcomes.iter().all(|(_, r)| matches!(r, Ok(o) if *o >= 0)));

    // Without a handler the outcome would go nowhere: refused, saying what to set.
    let producer = Producer::new(common::producer_config(&topic)).unwrap();
    let err = producer
        .send_tagged(ProducerRecord::new("x"), 1)
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Invalid { reason, .. } if reason.contains("on_delivery")),
        "{err}"
    );
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(summary.accepted, 0);
}

#[test]
fn an_unreachable_broker_fails_at_start_in_time() {
    let addr = common::fake::dead_addr();
    let started = Instant::now();
    let err = Producer::new(kpipe::ProducerConfig::new(&addr).topic("t")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(
        text.contains(&addr) && text.contains("./scripts/kafka up"),
        "{text}"
    );
}

#[test]
fn invalid_configs_name_the_field() {
    let mut config = common::producer_config("t");
    config.queue_capacity = 0;
    let err = Producer::new(config).unwrap_err();
    assert!(err.to_string().contains("queue_capacity"), "{err}");
}

#[test]
fn close_mid_stream_accounts_for_every_record() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "close", 3);
    let producer = Producer::new(common::producer_config(&topic)).unwrap();
    let delivered = Arc::new(Mutex::new(HashSet::new()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (producer, delivered) = (producer.clone(), delivered.clone());
            thread::spawn(move || {
                let mut rejected = 0u64;
                for i in 0u64.. {
                    let id = t * 1_000_000_000 + i;
                    let delivered = delivered.clone();
                    let r = producer.send_with_callback(
                        ProducerRecord::new(id.to_string()),
                        move |r| {
                            if r.is_ok() {
                                delivered.lock().unwrap().insert(id);
                            }
                        },
                    );
                    if let Err(e) = r {
                        assert!(matches!(e, SendError::Closed(_)), "{e}");
                        rejected += 1;
                        break;
                    }
                }
                rejected
            })
        })
        .collect();
    common::await_condition(Duration::from_secs(30), "20,000 records delivered", || {
        producer.stats().delivered >= 20_000
    });
    let summary = producer.close(Duration::from_millis(200)).unwrap();
    for h in handles {
        assert_eq!(
            h.join().unwrap(),
            1,
            "each sender stopped at its first refusal"
        );
    }
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        summary.accepted,
        "{summary:?}"
    );
    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len() as u64, summary.delivered);
    let in_topic: HashSet<u64> = common::fetch_all(&mut cluster, &topic)
        .into_iter()
        .map(|(_, r)| {
            std::str::from_utf8(r.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        delivered.is_subset(&in_topic),
        "a delivered record is missing from the topic"
    );
    assert!(
        producer.send(ProducerRecord::new("late")).is_err(),
        "closed for every clone"
    );
    assert!(matches!(
        producer.close(Duration::from_secs(1)),
        Err(kpipe::producer::Error::AlreadyClosed)
    ));
}

#[test]
fn every_codec_end_to_end() {
    let mut cluster = common::cluster();
    for codec in Compression::ALL {
        let topic = common::new_topic(&mut cluster, codec.name(), 2);
        let mut config = common::producer_config(&topic);
        config.compression = codec;
        let producer = Producer::new(config).unwrap();
        for i in 0..2_000 {
            producer
                .send(
                    ProducerRecord::new(format!("{codec}-{i}-{}", "x".repeat(i % 50)))
                        .key(format!("k{}", i % 10)),
                )
                .unwrap();
        }
        let summary = producer.close(Duration::from_secs(30)).unwrap();
        assert_eq!(summary.delivered, 2_000, "{codec}: {summary:?}");
        let got = common::fetch_all(&mut cluster, &topic);
        let values: HashSet<Bytes> = got.into_iter().map(|(_, r)| r.value.unwrap()).collect();
        assert_eq!(values.len(), 2_000, "{codec}");
        assert!(values.contains(&Bytes::from(format!("{codec}-7-{}", "x".repeat(7)))));
    }
}

#[test]
fn unknown_topics_fail_unless_creation_is_on() {
    let mut cluster = common::cluster();
    let existing = common::new_topic(&mut cluster, "known", 1);
    let producer = Producer::new(common::producer_config(&existing)).unwrap();
    let missing = common::unique_topic("missing");
    let r = producer
        .send_tracked(ProducerRecord::new("x").topic(missing.as_str()))
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        matches!(&r, Err(DeliveryError::UnknownTopic(t)) if **t == *missing),
        "{r:?}"
    );
    producer.close(Duration::from_secs(10)).unwrap();

    // A missing default topic is an error at build time.
    let err = Producer::new(common::producer_config(&missing)).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    let mut config = common::producer_config(&missing);
    config.create_topics = Some(TopicDefaults {
        partitions: 2,
        replication_factor: 1,
    });
    let producer = Producer::new(config).unwrap();
    let d = producer.send_and_wait(ProducerRecord::new("made")).unwrap();
    assert_eq!((d.offset, &*d.topic), (0, missing.as_str()));
    producer.close(Duration::from_secs(10)).unwrap();
    assert_eq!(cluster.topic(&missing).unwrap().partitions.len(), 2);
}

#[test]
fn records_without_a_topic_are_refused_at_send() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "notopic", 1);
    let mut config = common::producer_config(&topic);
    config.topic = None;
    let producer = Producer::new(config).unwrap();
    let err = producer.send(ProducerRecord::new("x")).unwrap_err();
    assert!(err.to_string().contains("names no topic"), "{err}");
    let err = producer
        .send(ProducerRecord::new(vec![0u8; 2 << 20]).topic(topic.as_str()))
        .unwrap_err();
    assert!(err.to_string().contains("max_request_bytes"), "{err}");
}

#[test]
fn the_shutdown_flag_drains_like_close() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "flag", 2);
    let flag = kpipe::Shutdown::new();
    let mut config = common::producer_config(&topic);
    config.shutdown = Some(flag.clone());
    config.linger = Duration::from_secs(1); // only the drain will send these
    let producer = Producer::new(config).unwrap();
    for i in 0..500 {
        producer.send(ProducerRecord::new(format!("{i}"))).unwrap();
    }
    flag.trigger();
    common::await_condition(Duration::from_secs(10), "the producer to close", || {
        producer.is_closed()
    });
    let err = producer.send(ProducerRecord::new("late")).unwrap_err();
    assert!(matches!(err, SendError::Closed(_)), "{err}");
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!(
        (summary.accepted, summary.delivered),
        (500, 500),
        "{summary:?}"
    );
    assert_eq!(common::fetch_all(&mut cluster, &topic).len(), 500);
}

#[test]
fn dropping_the_last_handle_flushes_what_was_queued() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "drop", 1);
    let mut config = common::producer_config(&topic);
    config.linger = Duration::from_secs(5);
    let producer = Producer::new(config).unwrap();
    let clone = producer.clone();
    for i in 0..300 {
        clone.send(ProducerRecord::new(format!("{i}"))).unwrap();
    }
    drop(clone);
    assert!(!producer.is_closed(), "dropping a clone does not close");
    drop(producer);
    assert_eq!(common::fetch_all(&mut cluster, &topic).len(), 300);
}

#[test]
fn abort_cuts_a_drain_short_and_still_accounts_for_everything() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "abort", 1);
    let mut config = common::producer_config(&topic);
    config.linger = Duration::from_secs(30); // nothing is due before the drain
    config.delivery_timeout = Duration::from_secs(60);
    let producer = Producer::new(config).unwrap();
    for i in 0..1_000 {
        producer.send(ProducerRecord::new(format!("{i}"))).unwrap();
    }
    let closer = {
        let p = producer.clone();
        thread::spawn(move || p.close(Duration::from_secs(60)).unwrap())
    };
    producer.abort();
    let summary = closer.join().unwrap();
    assert_eq!(summary.accepted, 1_000);
    assert_eq!(
        summary.delivered + summary.failed + summary.not_attempted,
        1_000,
        "{summary:?}"
    );
    assert!(producer.send(ProducerRecord::new("late")).is_err());
}

#[test]
fn a_record_naming_its_partition_goes_there_and_a_missing_one_fails() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "explicit-partition", 3);
    let producer = kpipe::Producer::new(common::producer_config(&topic)).unwrap();
    // Keyed or not, the named partition wins over the hash and the balancer.
    let receipts: Vec<_> = (0..30)
        .map(|i| {
            let r = ProducerRecord::new(format!("v{i}")).key(format!("k{i}"));
            producer.send_tracked(r.partition(i % 3)).unwrap()
        })
        .collect();
    for (i, receipt) in receipts.into_iter().enumerate() {
        let d = receipt.wait().unwrap().unwrap();
        assert_eq!(d.partition, i as i32 % 3);
    }
    let missing = producer
        .send_tracked(ProducerRecord::new("x").partition(7))
        .unwrap();
    match missing.wait().unwrap() {
        Err(kpipe::producer::DeliveryError::Rejected(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("partition 7") && text.contains("3 partitions"),
                "{text}"
            );
        }
        other => panic!("a partition the topic lacks: {other:?}"),
    }
    let summary = producer.close(Duration::from_secs(30)).unwrap();
    assert_eq!((summary.delivered, summary.failed), (30, 1));
}
