//! rust-rdkafka (librdkafka) with its synchronous BaseProducer / BaseConsumer: produce or
//! consume a fixed number of records with the settings scripts/bench-peers equalises, and
//! print one JSON line of what was measured.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn payload(size: usize) -> Vec<u8> {
    // Random uppercase letters, one payload for every record, as ProducerPerformance does.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

fn main() {
    let mode = arg("--mode", "produce");
    let brokers = arg("--brokers", "127.0.0.1:9092");
    let topic = arg("--topic", "");
    let n: u64 = arg("--records", "0").parse().expect("--records");
    let size: usize = arg("--size", "100").parse().expect("--size");
    let start = Instant::now();
    let done = if mode == "produce" {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", arg("--acks", "1"))
            .set("compression.type", arg("--compression", "none"))
            .set("linger.ms", arg("--linger-ms", "5"))
            .set("batch.size", arg("--batch-bytes", "1048576"))
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.max.bytes", "2097152")
            .create()
            .expect("create the producer");
        let value = payload(size);
        let mut sent = 0u64;
        while sent < n {
            match producer.send(BaseRecord::<(), [u8]>::to(&topic).payload(&value[..])) {
                Ok(()) => sent += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
            if sent % 1024 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(300)).expect("flush");
        sent
    } else {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("{topic}-rdkafka"))
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "500")
            .create()
            .expect("create the consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut got = 0u64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while got < n && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                m.expect("consume");
                got += 1;
            }
        }
        got
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "client": "rdkafka", "mode": mode, "records": done, "size": size, "secs": secs,
            "records_per_sec": done as f64 / secs, "mb_per_sec": done as f64 * size as f64 / 1e6 / secs,
        })
    );
}
