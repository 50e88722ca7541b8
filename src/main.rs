//! The `kpipe` command. Until the producer, consumer pool and full CLI land, it runs a real
//! round trip through the client core: create a topic, produce from N threads, fetch every
//! record back, and check each one.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kpipe::client::{
    is_already_exists, Acks, BatchBuilder, ClientConfig, Cluster, Compression, FetchParams,
    FetchTarget, Header, NewTopic, OffsetSpec,
};

/// Round trip through a real Kafka broker: create a topic, produce, fetch back, verify.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Bootstrap brokers, host:port, comma-separated.
    #[arg(long, env = "KPIPE_BROKERS", default_value = "localhost:9092")]
    brokers: String,
    /// Topic to use (created if missing).
    #[arg(long, default_value = "telemetry-events")]
    topic: String,
    /// Partitions for a newly created topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Producing threads, each with its own connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Records to produce in all.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: Acks,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("kpipe: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Check(msg)) => {
            eprintln!("kpipe: round trip FAILED: {msg}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    /// Bad input or an unreachable broker: the user can fix it.
    Usage(String),
    /// The round trip itself went wrong.
    Check(String),
}

impl From<kpipe::client::Error> for Failure {
    fn from(e: kpipe::client::Error) -> Self {
        Failure::Check(e.to_string())
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    if args.threads == 0 || args.count == 0 || args.batch == 0 || args.partitions <= 0 {
        return Err(Failure::Usage(
            "--threads, --count, --batch and --partitions must be at least 1".into(),
        ));
    }
    let config = ClientConfig::new([&args.brokers]);
    config
        .validate()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let mut cluster =
        Cluster::connect(config.clone()).map_err(|e| Failure::Usage(e.to_string()))?;
    println!(
        "connected to {} (cluster {})",
        args.brokers,
        cluster.cluster_id().unwrap_or("?")
    );

    match cluster.create_topic(
        &NewTopic::new(&args.topic, args.partitions, 1),
        Duration::from_secs(30),
    ) {
        Ok(()) => println!(
            "created topic {} with {} partitions",
            args.topic, args.partitions
        ),
        Err(e) if is_already_exists(&e) => println!("using existing topic {}", args.topic),
        Err(e) => return Err(e.into()),
    }
    let info = cluster.topic(&args.topic)?.clone();
    let partitions: Vec<i32> = info.partitions.iter().map(|p| p.id).collect();
    let start = cluster.list_offsets(&args.topic, &partitions, OffsetSpec::Latest)?;

    // Produce: each thread owns its own Cluster (and so its own sockets).
    let began = Instant::now();
    let per_thread = args.count.div_ceil(args.threads);
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let (config, topic, parts) = (config.clone(), args.topic.clone(), partitions.clone());
            let (batch, codec, acks) = (args.batch, args.compression, args.acks);
            let range = (t * per_thread)..((t + 1) * per_thread).min(args.count);
            thread::Builder::new()
                .name(format!("kpipe-demo-producer-{t}"))
                .spawn(move || produce_range(config, &topic, &parts, range, batch, codec, acks))
                .expect("spawn producer thread")
        })
        .collect();
    let mut produced = 0;
    for h in handles {
        produced += h
            .join()
            .map_err(|_| Failure::Check("a producer thread panicked".into()))??;
    }
    let produce_secs = began.elapsed().as_secs_f64();
    println!(
        "produced {produced} records from {} threads in {produce_secs:.2}s ({:.0} records/s, {}, acks={})",
        args.threads,
        produced as f64 / produce_secs,
        args.compression,
        args.acks
    );

    // Fetch back everything written after `start`, and check every record.
    let began = Instant::now();
    let mut offsets: Vec<i64> = start.iter().map(|o| o.offset).collect();
    let end = cluster.list_offsets(&args.topic, &partitions, OffsetSpec::Latest)?;
    let mut seen = vec![false; args.count];
    let mut fetched = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while offsets.iter().zip(&end).any(|(o, e)| *o < e.offset) {
        if Instant::now() > deadline {
            return Err(Failure::Check(
                "fetching back did not finish within 120 s".into(),
            ));
        }
        let targets: Vec<FetchTarget> = partitions
            .iter()
            .map(|&p| FetchTarget {
                topic: args.topic.clone(),
                topic_id: info.id,
                partition: p,
                offset: offsets[p as usize],
            })
            .collect();
        for r in cluster.fetch(&FetchParams::default(), &targets)? {
            let part = r.result?;
            offsets[r.partition as usize] = part.next_offset;
            for rec in part.records {
                if rec.offset >= end[r.partition as usize].offset {
                    continue; // written by someone else after we looked
                }
                let seq = rec.headers.iter().find(|h| h.key == "seq").and_then(|h| {
                    std::str::from_utf8(h.value.as_deref()?)
                        .ok()?
                        .parse::<usize>()
                        .ok()
                });
                match seq {
                    Some(i)
                        if i < args.count
                            && rec.value.as_deref() == Some(payload(i).as_slice()) =>
                    {
                        if std::mem::replace(&mut seen[i], true) {
                            return Err(Failure::Check(format!("record {i} came back twice")));
                        }
                        fetched += 1;
                    }
                    _ => {} // not ours: another writer shares the topic
                }
            }
        }
    }
    let missing = seen.iter().filter(|s| !**s).count();
    println!(
        "fetched {fetched} records back in {:.2}s, each checked byte for byte",
        began.elapsed().as_secs_f64()
    );
    if missing > 0 {
        return Err(Failure::Check(format!(
            "{missing} produced records were not found"
        )));
    }
    println!("round trip OK: {produced} produced = {fetched} fetched, 0 missing, 0 duplicates");
    Ok(())
}

fn payload(i: usize) -> Vec<u8> {
    format!(
        "{{\"device\":\"device-{}\",\"status\":\"healthy\",\"seq\":{i}}}",
        i % 100
    )
    .into_bytes()
}

fn produce_range(
    config: ClientConfig,
    topic: &str,
    partitions: &[i32],
    range: std::ops::Range<usize>,
    batch: usize,
    codec: Compression,
    acks: Acks,
) -> Result<usize, Failure> {
    let mut cluster = Cluster::connect(config)?;
    let mut n = 0;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let ids: Vec<usize> = range.collect();
    for (c, chunk) in ids.chunks(batch).enumerate() {
        let partition = partitions[c % partitions.len()];
        let mut b = BatchBuilder::with_capacity(chunk.len() * 128);
        for &i in chunk {
            let key = format!("device-{}", i % 100);
            b.push(
                now(),
                Some(key.as_bytes()),
                Some(&payload(i)),
                &[Header::new("seq", i.to_string())],
            );
        }
        let mut buf = Vec::with_capacity(b.size());
        b.finish(codec, &mut buf)
            .map_err(|e| Failure::Check(format!("encoding a batch: {e}")))?;
        cluster.produce(
            topic,
            partition,
            Bytes::from(buf),
            acks,
            Duration::from_secs(30),
        )?;
        n += chunk.len();
    }
    Ok(n)
}
