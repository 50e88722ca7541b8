//! User code that panics on the producer's writer thread: a delivery callback, the
//! `on_delivery` handler, a custom balancer. Nothing the producer accepted may vanish from
//! the accounting, and a producer that cannot go on must say so and why.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpipe::producer::{Balance, Balancer, DeliveryError, Error, OnDelivery, SendError, WaitError};
use kpipe::{Producer, ProducerRecord};

const RECORDS: u64 = 1_000;
/// The record whose report panics.
const POISON: u64 = 400;

/// Wait until `flag` is set: the panicking report has run.
fn await_flag(flag: &AtomicBool, what: &str) {
    common::await_condition(Duration::from_secs(30), what, || {
        flag.load(Ordering::SeqCst)
    });
}

#[test]
fn a_callback_that_panics_costs_only_its_own_report() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "callback-panic", 3);
    let producer = Producer::new(common::producer_config(&topic)).unwrap();
    let reported = Arc::new(AtomicU64::new(0));
    let panicked = Arc::new(AtomicBool::new(false));
    for i in 0..RECORDS {
        let (reported, panicked) = (reported.clone(), panicked.clone());
        producer
            .send_with_callback(ProducerRecord::new(i.to_string()), move |r| {
                if i == POISON {
                    panicked.store(true, Ordering::SeqCst);
                    panic!("callback of record {i} panics on purpose");
                }
                r.expect("delivered");
                reported.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    await_flag(&panicked, "the poisoned callback to run");

    // The writer goes on: a record sent after the panic is delivered and reported.
    let after = producer.send_and_wait(ProducerRecord::new("after"));
    assert!(after.is_ok(), "a send after the panic: {after:?}");
    assert!(
        !producer.is_closed(),
        "a callback's panic does not stop the producer"
    );
    assert_eq!(producer.stats().callback_panics, 1);

    let summary = producer
        .close(Duration::from_secs(30))
        .expect("close sums up after a callback panicked");
    assert_eq!(summary.accepted, RECORDS + 1, "{summary:?}");
    // The poisoned record was delivered: its callback's panic does not change that.
    assert_eq!(summary.delivered, RECORDS + 1, "{summary:?}");
    assert_eq!(summary.callback_panics, 1, "{summary:?}");
    assert_eq!(
        reported.load(Ordering::SeqCst),
        RECORDS - 1,
        "every other callback ran once"
    );
    assert_eq!(
        common::fetch_all(&mut cluster, &topic).len() as u64,
        RECORDS + 1
    );
}

#[test]
fn an_on_delivery_handler_that_panics_costs_only_that_report() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "handler-panic", 3);
    let tags = Arc::new(Mutex::new(Vec::new()));
    let panicked = Arc::new(AtomicBool::new(false));
    let mut config = common::producer_config(&topic);
    let (seen, flag) = (tags.clone(), panicked.clone());
    config.on_delivery = Some(OnDelivery::new(move |tag, r| {
        if tag == POISON {
            flag.store(true, Ordering::SeqCst);
            panic!("handler panics on purpose for tag {tag}");
        }
        // A failed record would show as a missing tag below.
        if r.is_ok() {
            seen.lock().unwrap().push(tag);
        }
    }));
    let producer = Producer::new(config).unwrap();
    for tag in 0..RECORDS {
        producer
            .send_tagged(ProducerRecord::new(tag.to_string()), tag)
            .unwrap();
    }
    await_flag(&panicked, "the handler to panic");
    producer
        .send_tagged(ProducerRecord::new("after"), RECORDS)
        .expect("the producer still takes records");
    let summary = producer
        .close(Duration::from_secs(30))
        .expect("close sums up after the handler panicked");
    assert_eq!(summary.delivered, RECORDS + 1, "{summary:?}");
    assert_eq!(summary.callback_panics, 1, "{summary:?}");
    let mut tags = tags.lock().unwrap().clone();
    tags.sort_unstable();
    let expected: Vec<u64> = (0..=RECORDS).filter(|&t| t != POISON).collect();
    assert_eq!(
        tags, expected,
        "every other tag reported once, the one after the panic too"
    );
}

/// A custom balancer that panics on the record keyed `boom`: user code on the writer thread
/// outside any report, so the writer itself goes down.
struct Exploding;

impl Balance for Exploding {
    fn partition(&mut self, _: &str, key: Option<&[u8]>, _: &[u64]) -> usize {
        if key == Some(b"boom") {
            panic!("the balancer explodes on purpose");
        }
        0
    }
}

#[test]
fn a_writer_that_dies_closes_the_producer_and_says_why() {
    let mut cluster = common::cluster();
    let topic = common::new_topic(&mut cluster, "writer-panic", 1);
    let mut config = common::producer_config(&topic);
    config.balancer = Balancer::Custom(Box::new(Exploding));
    // Nothing is due before the panic: what was sent sits in the writer's queues.
    config.linger = Duration::from_secs(30);
    let producer = Producer::new(config).unwrap();
    let before: Vec<_> = (0..100)
        .map(|i| {
            producer
                .send_tracked(ProducerRecord::new(format!("{i}")))
                .unwrap()
        })
        .collect();
    let boom = producer
        .send_tracked(ProducerRecord::new("x").key("boom"))
        .unwrap();

    // The producer says it stopped, without anyone calling close.
    common::await_condition(
        Duration::from_secs(10),
        "is_closed() after the panic",
        || producer.is_closed(),
    );
    let late = producer.send(ProducerRecord::new("late"));
    assert!(matches!(late, Err(SendError::Closed(_))), "{late:?}");

    let stats = producer.stats();
    assert!(
        stats
            .fatal
            .as_deref()
            .is_some_and(|f| f.contains("the balancer explodes")),
        "{stats:?}"
    );

    // Every record it held gets an outcome: none is lost without a word.
    for receipt in before {
        match receipt.wait_timeout(Duration::from_secs(10)) {
            Ok(Err(DeliveryError::NotAttempted)) => {}
            other => panic!("a record queued when the writer panicked: {other:?}"),
        }
    }
    // The record in the balancer's hands went down with the panic: its receipt says so at
    // once (no wait for its bound), and the summary counts it.
    match boom.wait_timeout(Duration::from_secs(10)) {
        Err(WaitError::Lost) => {}
        other => panic!("the record the panic took: {other:?}"),
    }

    // close says the writer panicked, why, and what became of every record.
    let err = producer.close(Duration::from_secs(10)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("writer thread panicked") && text.contains("the balancer explodes"),
        "{text}"
    );
    let Error::WriterPanicked {
        summary: Some(summary),
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(summary.accepted, 101, "{summary:?}");
    assert_eq!(
        (summary.delivered, summary.not_attempted, summary.failed),
        (0, 100, 1),
        "{summary:?}"
    );
    assert_eq!(
        summary.failures.get("lost: the writer thread panicked"),
        Some(&1),
        "{summary:?}"
    );
    assert_eq!(common::fetch_all(&mut cluster, &topic).len(), 0);
}
