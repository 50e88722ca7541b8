//! Secured listeners of the real broker (`./scripts/kafka up --secure`): TLS, mutual TLS,
//! SASL PLAIN / SCRAM / OAUTHBEARER, re-authentication, and every way of getting it wrong.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kpipe::client::{
    ClientConfig, Cluster, Error, NewTopic, Pem, Sasl, SecurityProtocol, UnsecuredToken,
};
use kpipe::unstable::Connector;
use kpipe::{ConsumedRecord, ConsumerPool, Producer, ProducerRecord};

/// The folder `scripts/kafka up --secure` writes certificates and properties files to.
fn dir() -> PathBuf {
    std::env::var_os("KPIPE_SECURE_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.kafka/secure")),
        PathBuf::from,
    )
}

/// The secure listeners, in the order scripts/kafka lays them out from KPIPE_SECURE_PORT.
#[derive(Clone, Copy)]
enum Listener {
    Ssl = 0,
    Mtls = 1,
    SaslPlaintext = 2,
    SaslSsl = 3,
    Reauth = 4,
    BadHost = 5,
}

fn addr(l: Listener) -> String {
    let base: u16 = std::env::var("KPIPE_SECURE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9192);
    format!("127.0.0.1:{}", base + l as u16)
}

fn secured(l: Listener, protocol: SecurityProtocol, sasl: Option<Sasl>) -> ClientConfig {
    let mut c = common::config();
    c.bootstrap = vec![addr(l)];
    c.security.protocol = protocol;
    if protocol.uses_tls() {
        c.security.tls.ca = Some(Pem::File(dir().join("ca.pem")));
    }
    c.security.sasl = sasl;
    c
}

fn mtls() -> ClientConfig {
    let mut c = secured(Listener::Mtls, SecurityProtocol::Ssl, None);
    c.security.tls.client_cert = Some(Pem::File(dir().join("client.pem")));
    c.security.tls.client_key = Some(Pem::File(dir().join("client-key.pem")));
    c
}

const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";

fn connect(config: &ClientConfig) -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    Cluster::connect(config.clone()).unwrap_or_else(|e| {
        panic!(
            "the secure listeners of the test broker are needed ({}): {e}\n\
             start them with ./scripts/kafka up --secure (./scripts/test does this for you)",
            config.bootstrap[0]
        )
    })
}

/// Produce records with binary keys, values and headers over `config`, read them back over
/// the same secured connection, and compare byte for byte.
fn round_trip(config: ClientConfig) {
    let mut cluster = connect(&config);
    let topic = common::unique_topic("sec");
    cluster
        .create_topic(&NewTopic::new(&topic, 2, 1), Duration::from_secs(30))
        .unwrap();
    let mut pc = common::producer_config(&topic);
    pc.client = config.clone();
    let producer = Producer::new(pc).unwrap();
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..300u32)
        .map(|i| {
            let key = format!("k{}", i % 7).into_bytes();
            let mut value = i.to_be_bytes().to_vec();
            value.extend((0..(i % 300)).map(|b| (b * 31 + i) as u8));
            (key, value)
        })
        .collect();
    for (k, v) in &records {
        let mut r = ProducerRecord::new(v.clone()).key(k.clone());
        r.headers
            .push(kpipe::client::Header::new("h", vec![0u8, 255, 1]));
        producer.send(r).unwrap();
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, records.len() as u64, "{summary:?}");

    let got = common::fetch_all(&mut cluster, &topic);
    assert_eq!(got.len(), records.len());
    let mut want = records.clone();
    let mut seen: Vec<(Vec<u8>, Vec<u8>)> = got
        .iter()
        .map(|(_, r)| {
            assert_eq!(r.headers.len(), 1);
            assert_eq!(r.headers[0].key, "h");
            assert_eq!(r.headers[0].value.as_deref(), Some(&[0u8, 255, 1][..]));
            (
                r.key.clone().unwrap().to_vec(),
                r.value.clone().unwrap().to_vec(),
            )
        })
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want, "records read back differ from those written");
    let _ = cluster.delete_topic(&topic, Duration::from_secs(30));
}

#[test]
fn round_trip_over_tls() {
    round_trip(secured(Listener::Ssl, SecurityProtocol::Ssl, None));
}

#[test]
fn round_trip_over_mutual_tls() {
    round_trip(mtls());
}

#[test]
fn round_trip_over_sasl_plaintext_plain() {
    round_trip(secured(
        Listener::SaslPlaintext,
        SecurityProtocol::SaslPlaintext,
        Some(Sasl::plain(USER, PASSWORD)),
    ));
}

#[test]
fn round_trip_over_sasl_plaintext_scram_sha256() {
    round_trip(secured(
        Listener::SaslPlaintext,
        SecurityProtocol::SaslPlaintext,
        Some(Sasl::scram_sha256(USER, PASSWORD)),
    ));
}

#[test]
fn round_trip_over_sasl_plaintext_scram_sha512() {
    round_trip(secured(
        Listener::SaslPlaintext,
        SecurityProtocol::SaslPlaintext,
        Some(Sasl::scram_sha512(USER, PASSWORD)),
    ));
}

#[test]
fn round_trip_over_sasl_plaintext_oauthbearer() {
    round_trip(secured(
        Listener::SaslPlaintext,
        SecurityProtocol::SaslPlaintext,
        Some(Sasl::oauthbearer(UnsecuredToken::new(USER))),
    ));
}

#[test]
fn round_trip_over_sasl_ssl_scram_sha512() {
    round_trip(secured(
        Listener::SaslSsl,
        SecurityProtocol::SaslSsl,
        Some(Sasl::scram_sha512(USER, PASSWORD)),
    ));
}

#[test]
fn round_trip_over_sasl_ssl_oauthbearer_with_a_token_provider() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let provider = move || {
        counted.fetch_add(1, Ordering::Relaxed);
        UnsecuredToken::new(USER).token()
    };
    round_trip(secured(
        Listener::SaslSsl,
        SecurityProtocol::SaslSsl,
        Some(Sasl::oauthbearer(provider)),
    ));
    assert!(
        calls.load(Ordering::Relaxed) >= 2,
        "the provider is asked at every authentication (bootstrap, leader, ...)"
    );
}

use kpipe::client::TokenProvider;

/// A TCP relay in front of a real listener that counts the connections made through it.
fn counting_relay(target: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            c.fetch_add(1, Ordering::Relaxed);
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (addr, count)
}

#[test]
fn a_wrong_password_names_mechanism_and_user_and_is_not_retried() {
    let (relay, connections) = counting_relay(addr(Listener::SaslSsl));
    let mut c = secured(
        Listener::SaslSsl,
        SecurityProtocol::SaslSsl,
        Some(Sasl::scram_sha512(USER, "not-the-password-42")),
    );
    c.bootstrap = vec![relay];
    // The relay's address is not in the broker's certificate: check the chain only.
    c.security.tls.verify = kpipe::client::TlsVerify::NoHostname;
    c.connection.connect_timeout = Duration::from_secs(5);
    let started = Instant::now();
    let err = Cluster::connect(c.clone()).unwrap_err();
    let elapsed = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{text}");
    assert!(
        text.contains("SCRAM-SHA-512") && text.contains("\"alice\""),
        "{text}"
    );
    assert!(!text.contains("not-the-password-42"), "{text}");
    assert!(!err.is_retriable());
    assert!(
        elapsed < c.connection.connect_timeout + c.connection.request_timeout,
        "failed only after {elapsed:?}"
    );
    assert_eq!(
        connections.load(Ordering::Relaxed),
        1,
        "one attempt, no retry storm"
    );

    // The producer gives up the same way, at once.
    let mut pc = common::producer_config("unused");
    pc.client = c;
    let Err(err) = Producer::new(pc) else {
        panic!("wrong credentials must fail")
    };
    assert!(err.to_string().contains("SCRAM-SHA-512"), "{err}");
    assert_eq!(connections.load(Ordering::Relaxed), 2);

    // PLAIN too, over SASL_PLAINTEXT.
    let c = secured(
        Listener::SaslPlaintext,
        SecurityProtocol::SaslPlaintext,
        Some(Sasl::plain(USER, "nope-nope")),
    );
    let err = Cluster::connect(c).unwrap_err().to_string();
    assert!(
        err.contains("PLAIN") && err.contains("alice") && !err.contains("nope-nope"),
        "{err}"
    );
}

fn tls_error(config: ClientConfig) -> String {
    let started = Instant::now();
    let err = Cluster::connect(config.clone()).unwrap_err();
    assert!(
        started.elapsed() < config.connection.connect_timeout + config.connection.request_timeout,
        "no hang"
    );
    let text = err.to_string();
    assert!(
        text.contains(&config.bootstrap[0]),
        "names the broker: {text}"
    );
    assert!(!err.is_retriable(), "{text}");
    text
}

#[test]
fn an_untrusted_ca_is_refused_with_the_fix() {
    let mut c = secured(Listener::Ssl, SecurityProtocol::Ssl, None);
    c.security.tls.ca = Some(Pem::File(dir().join("other-ca.pem")));
    let text = tls_error(c);
    assert!(text.contains("not signed by a CA kpipe trusts"), "{text}");
    assert!(text.contains("ssl.truststore.location"), "{text}");
}

#[test]
fn a_hostname_mismatch_is_refused_and_can_be_relaxed_explicitly() {
    let c = secured(Listener::BadHost, SecurityProtocol::Ssl, None);
    let text = tls_error(c.clone());
    assert!(
        text.contains("hostname mismatch") && text.contains("127.0.0.1"),
        "{text}"
    );
    // Checking the chain only (ssl.endpoint.identification.algorithm=) connects.
    let mut relaxed = c;
    relaxed.security.tls.verify = kpipe::client::TlsVerify::NoHostname;
    connect(&relaxed);
}

#[test]
fn mutual_tls_without_a_client_certificate_says_one_is_required() {
    let c = secured(Listener::Mtls, SecurityProtocol::Ssl, None);
    let text = tls_error(c);
    assert!(text.contains("requires a client certificate"), "{text}");
}

#[test]
fn plaintext_at_a_tls_listener_suggests_ssl() {
    let c = secured(Listener::Ssl, SecurityProtocol::Plaintext, None);
    let text = tls_error(c);
    assert!(text.contains("security.protocol=SSL"), "{text}");
    assert!(
        !text.contains("frame"),
        "not a garbage-frame message: {text}"
    );
}

#[test]
fn tls_at_a_plaintext_listener_suggests_plaintext() {
    let mut c = secured(Listener::Ssl, SecurityProtocol::Ssl, None);
    c.bootstrap = vec![common::brokers()];
    let text = tls_error(c);
    assert!(text.contains("security.protocol=PLAINTEXT"), "{text}");
}

#[test]
fn connections_reauthenticate_before_the_session_ends() {
    // The REAUTH listener has connections.max.reauth.ms=10000.
    let c = secured(
        Listener::Reauth,
        SecurityProtocol::SaslSsl,
        Some(Sasl::scram_sha512(USER, PASSWORD)),
    );
    let connector = Connector::new(&c).unwrap();
    let mut conn = connector.connect(&addr(Listener::Reauth)).unwrap();
    let first = conn
        .reauthentication_due()
        .expect("the broker announced a session lifetime");
    let mut renewals = 0;
    let mut last = first;
    let deadline = Instant::now() + Duration::from_secs(25);
    while Instant::now() < deadline {
        // Two requests in flight across the renewal: both answered.
        let req = kafka_protocol::messages::MetadataRequest::default();
        let a = conn.send(&req).unwrap();
        let b = conn.send(&req).unwrap();
        conn.receive::<kafka_protocol::messages::MetadataRequest>(a)
            .unwrap();
        conn.receive::<kafka_protocol::messages::MetadataRequest>(b)
            .unwrap();
        let due = conn.reauthentication_due().unwrap();
        if due != last {
            renewals += 1;
            last = due;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(conn.is_open(), "the same connection lived through 25 s");
    assert!(
        renewals >= 2,
        "renewed {renewals} times in 25 s of 10 s sessions"
    );

    // Idle past the end of its session, the connection renews before its next request
    // (the broker accepts a re-authentication after expiry; it closes only on other
    // requests).
    let expired = conn.reauthentication_due().unwrap() + Duration::from_secs(2);
    while Instant::now() < expired {
        std::thread::sleep(Duration::from_millis(200));
    }
    conn.request(&kafka_protocol::messages::MetadataRequest::default())
        .expect("a request after an idle expiry succeeds on the same connection");
    assert!(conn.reauthentication_due().unwrap() > Instant::now());
}

#[test]
fn a_40s_run_over_10s_sessions_loses_nothing() {
    let c = secured(
        Listener::Reauth,
        SecurityProtocol::SaslSsl,
        Some(Sasl::scram_sha512(USER, PASSWORD)),
    );
    let mut cluster = connect(&c);
    let topic = common::unique_topic("reauth");
    cluster
        .create_topic(&NewTopic::new(&topic, 2, 1), Duration::from_secs(30))
        .unwrap();
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut cc = common::consumer_config(&common::unique_topic("reauth-g"), &topic, 1);
    cc.client = c.clone();
    let s = seen.clone();
    let pool = ConsumerPool::start_cloned(cc, move |r: &ConsumedRecord| {
        s.lock()
            .unwrap()
            .insert(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        Ok::<(), String>(())
    })
    .unwrap();
    let mut pc = common::producer_config(&topic);
    pc.client = c;
    let producer = Producer::new(pc).unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(40) {
        for _ in 0..50 {
            producer
                .send(ProducerRecord::new(format!("r{sent}")).key(format!("k{}", sent % 10)))
                .unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let summary = producer.close(Duration::from_secs(60)).unwrap();
    assert_eq!(summary.delivered, sent, "{summary:?}");
    let pstats = producer.stats();
    assert_eq!(pstats.retries, 0, "no request was retried: {pstats:?}");
    assert!(pstats.errors.is_empty(), "no errors: {pstats:?}");
    common::await_condition(Duration::from_secs(60), "every record consumed", || {
        seen.lock().unwrap().len() as u64 == sent
    });
    let stats = pool.stats();
    pool.close(Duration::from_secs(30));
    assert_eq!(stats.rebalances, 1, "no member lost its session: {stats:?}");
    assert_eq!(stats.commit_failures, 0, "{stats:?}");
    println!(
        "reauth run: sent {sent}, consumed {}",
        seen.lock().unwrap().len()
    );
}

#[test]
fn properties_files_written_by_the_script_connect() {
    for name in [
        "client-ssl.properties",
        "client-mtls.properties",
        "client-sasl-ssl-scram-sha-512.properties",
        "client-sasl-plaintext-oauthbearer.properties",
    ] {
        let c = ClientConfig::from_properties(dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut cluster = connect(&c);
        cluster
            .fetch_metadata(None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn kpipe_cli() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kpipe"));
    // The properties file names the brokers; KPIPE_BROKERS would override it.
    c.env_remove("KPIPE_BROKERS")
        .env_remove("KPIPE_SASL_PASSWORD")
        .stdin(std::process::Stdio::null());
    c
}

#[test]
fn kpipe_run_over_sasl_ssl_from_a_properties_file_and_the_java_consumer_reads_it() {
    let props = dir().join("client-sasl-ssl-scram-sha-512.properties");
    let topic = common::unique_topic("cli-sasl");
    let summary = std::env::temp_dir().join(format!("{topic}.json"));
    let out = kpipe_cli()
        .args([
            "run",
            "--count",
            "100000",
            "--threads",
            "2",
            "--consumers",
            "2",
        ])
        .args(["--topic", &topic, "--group", &format!("{topic}-g")])
        .arg("--config")
        .arg(&props)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(!text.contains(PASSWORD) && !stderr.contains(PASSWORD));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["acked"], 100000, "{report}");

    // The Java console consumer, given the same file, reads every event kpipe wrote.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let java = std::process::Command::new(script)
        .args([
            "run-class",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
        ])
        .args([
            "--bootstrap-server",
            &addr(Listener::SaslSsl),
            "--topic",
            &topic,
        ])
        .arg("--consumer.config")
        .arg(&props)
        .args(["--group", &format!("{topic}-java"), "--from-beginning"])
        .args(["--max-messages", "100000", "--timeout-ms", "90000"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the Java console consumer through scripts/kafka");
    let events = String::from_utf8_lossy(&java.stdout)
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"device\""))
        .count();
    assert_eq!(
        events,
        100000,
        "Java read {events} events; its stderr: {}",
        String::from_utf8_lossy(&java.stderr)
    );
}

#[test]
fn kpipe_with_a_wrong_password_exits_2_naming_mechanism_and_user() {
    let props = dir().join("client-sasl-ssl-scram-sha-512.properties");
    let started = Instant::now();
    let out = kpipe_cli()
        .args(["produce", "--count", "10", "--connect-timeout", "5s"])
        .arg("--config")
        .arg(&props)
        .args(["--sasl-username", USER])
        .env("KPIPE_SASL_PASSWORD", "wrong-password-xyz")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SCRAM-SHA-512") && stderr.contains("\"alice\""),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-password-xyz"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");

    // Without any password the error says where one may come from.
    let out = kpipe_cli()
        .args([
            "produce",
            "--count",
            "10",
            "--security-protocol",
            "SASL_SSL",
        ])
        .args(["--sasl-mechanism", "PLAIN", "--sasl-username", USER])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("KPIPE_SASL_PASSWORD") && stderr.contains("--sasl-password-file"),
        "{stderr}"
    );
}

#[test]
fn the_readme_properties_example_connects() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```properties\n")
        .expect("README has a properties example")
        + "```properties\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let mut text = readme[start..end].to_owned();
    // The example names the CA relative to the repository; point it at the test's folder.
    text = text.replace(
        ".kafka/secure/ca.pem",
        &dir().join("ca.pem").display().to_string(),
    );
    let c = ClientConfig::from_properties_str(&text, "README.md").unwrap();
    assert_eq!(
        c.bootstrap,
        [addr(Listener::SaslSsl)],
        "the example uses the SASL_SSL port"
    );
    let mut cluster = connect(&c);
    cluster.fetch_metadata(None).unwrap();
}

#[test]
fn kpipe_refuses_bad_certificates_with_exit_2() {
    let ca = dir().join("ca.pem");
    let other = dir().join("other-ca.pem");
    let cases: [(Listener, &std::path::Path, &str); 3] = [
        (Listener::Ssl, &other, "not signed by a CA kpipe trusts"),
        (Listener::BadHost, &ca, "hostname mismatch"),
        (Listener::Mtls, &ca, "requires a client certificate"),
    ];
    for (listener, ca, needle) in cases {
        let broker = addr(listener);
        let out = kpipe_cli()
            .args(["produce", "--count", "10", "--connect-timeout", "5s"])
            .args(["--brokers", &broker, "--security-protocol", "SSL"])
            .arg("--tls-ca")
            .arg(ca)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{broker}: {stderr}");
        assert!(
            stderr.contains(&broker) && stderr.contains(needle),
            "{stderr}"
        );
    }
}

#[test]
fn kpipe_with_a_wrong_password_connects_once_per_bootstrap_address() {
    let (relay_a, count_a) = counting_relay(addr(Listener::SaslSsl));
    let (relay_b, count_b) = counting_relay(addr(Listener::SaslSsl));
    let out = kpipe_cli()
        .args(["run", "--count", "10", "--connect-timeout", "5s"])
        .args(["--brokers", &format!("{relay_a},{relay_b}")])
        .args([
            "--security-protocol",
            "SASL_SSL",
            "--tls-verify",
            "no-hostname",
        ])
        .arg("--tls-ca")
        .arg(dir().join("ca.pem"))
        .args(["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", USER])
        .env("KPIPE_SASL_PASSWORD", "bad-bad-bad")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SCRAM-SHA-256") && !stderr.contains("bad-bad-bad"),
        "{stderr}"
    );
    let (a, b) = (
        count_a.load(Ordering::Relaxed),
        count_b.load(Ordering::Relaxed),
    );
    println!("connection attempts: {a} + {b}");
    assert!(
        a <= 1 && b <= 1 && a + b >= 1,
        "attempts per address: {a}, {b}"
    );
}

#[test]
fn debug_output_of_every_config_hides_secrets() {
    let mut client = ClientConfig::new(["b:9093"]);
    client.security.protocol = SecurityProtocol::SaslSsl;
    client.security.sasl = Some(Sasl::scram_sha512(USER, "s3cret-pass"));
    let mut with_key = client.clone();
    with_key.security.tls.client_key =
        Some(Pem::Inline("-----BEGIN PRIVATE KEY-----key-bytes".into()));
    let mut producer = kpipe::ProducerConfig::new("b:9093");
    producer.client = with_key.clone();
    let mut consumer = kpipe::ConsumerConfig::new("b:9093", "g", &["t"]);
    consumer.client = with_key.clone();
    let connector = Connector::new(&client).unwrap();
    for text in [
        format!("{with_key:?}"),
        format!("{producer:?}"),
        format!("{consumer:#?}"),
        format!("{connector:?}"),
    ] {
        assert!(
            !text.contains("s3cret-pass") && !text.contains("key-bytes"),
            "{text}"
        );
    }
}
