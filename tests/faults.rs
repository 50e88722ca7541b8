//! Faults a real broker will not produce on demand, from tiny fake servers on loopback:
//! refused connections, stalls, version mismatches and broken frames. Each must end in a
//! clear error within the configured bound, never a panic or a hang.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::fake::{self, FakeBroker, Reply, Request, Serve};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, ProduceRequest, ResponseHeader,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, Message, StrBytes};
use kpipe::client::{ClientConfig, Cluster, ConnectionConfig, Error, MetadataRecovery, Phase};

fn quick() -> ConnectionConfig {
    ConnectionConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
        ..ConnectionConfig::default()
    }
}

/// A client config for `addr` with short timeouts that keeps to the brokers it knows (one
/// failure is the answer, not a walk back to the bootstrap servers).
fn client(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new([addr]);
    c.connection = quick();
    c.metadata_recovery = MetadataRecovery::None;
    c
}

/// A fake broker whose first connection is answered by `script` (the others are closed at
/// once).
fn fake_broker(script: impl FnMut(&Request) -> Reply + Send + 'static) -> FakeBroker {
    fake_with(
        &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)],
        script,
    )
}

/// [`fake_broker`] advertising `ranges` in its default ApiVersions answer.
fn fake_with(
    ranges: &[(ApiKey, i16, i16)],
    script: impl FnMut(&Request) -> Reply + Send + 'static,
) -> FakeBroker {
    let mut script = Some(script);
    FakeBroker::builder()
        .versions(ranges)
        .bind()
        .serve_each(move |_| match script.take() {
            Some(s) => Serve::With(Box::new(s)),
            None => Serve::Close,
        })
}

/// A broker that speaks ApiVersions (Metadata v0-12 only) and then does `then` for request 1.
fn broker_then(then: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeBroker {
    broker_with(
        &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)],
        then,
    )
}

/// A broker that advertises `ranges` in ApiVersions and then does `then` for request 1,
/// on every connection.
fn broker_with(
    ranges: &[(ApiKey, i16, i16)],
    then: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> FakeBroker {
    FakeBroker::builder()
        .versions(ranges)
        .bind()
        .serve(move |req| match req.n {
            0 => Reply::Default,
            1 => then(req),
            _ => Reply::Close,
        })
}

/// What connecting reports when the answer to its Metadata request (request 1) is `then`.
fn metadata_error(then: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Error {
    let fake = broker_then(then);
    let err = Cluster::connect(client(&fake.addr)).unwrap_err();
    for conn in 1..=fake.connections() {
        let keys: Vec<i16> = fake
            .requests()
            .iter()
            .filter(|r| r.conn == conn)
            .map(|r| r.api_key)
            .collect();
        assert_eq!(
            keys,
            [ApiKey::ApiVersions as i16, ApiKey::Metadata as i16],
            "nothing more is sent on a connection that failed mid-request (conn {conn})"
        );
    }
    err
}

/// A Metadata answer naming the fake at `addr` as broker 0.
fn metadata_naming(addr: &str) -> MetadataResponse {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut b = MetadataResponseBroker::default();
    b.node_id = 0.into();
    b.host = StrBytes::from_string(host.to_owned());
    b.port = port.parse().unwrap();
    let mut resp = MetadataResponse::default();
    resp.brokers.push(b);
    resp
}

#[test]
fn connection_refused_names_the_address_and_the_fix() {
    let addr = fake::dead_addr();
    let started = Instant::now();
    let err = Cluster::connect(ClientConfig::new([&addr])).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(
        text.contains(&addr) && text.contains("./scripts/kafka up"),
        "{text}"
    );
}

#[test]
fn every_bootstrap_address_is_tried_and_listed() {
    let dead: Vec<String> = (0..2).map(|_| fake::dead_addr()).collect();
    let err = Cluster::connect(ClientConfig::new(&dead)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoBrokerReachable { .. }), "{text}");
    assert!(dead.iter().all(|a| text.contains(a)), "{text}");
}

#[test]
fn a_listener_that_never_answers_times_out() {
    let fake = fake_broker(|_| Reply::stall());
    let started = Instant::now();
    let err = Cluster::connect(client(&fake.addr)).unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Read,
                api: Some("ApiVersions"),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fake.keys(), [ApiKey::ApiVersions as i16]);
}

#[test]
fn a_broker_that_stalls_mid_frame_times_out() {
    let err = metadata_error(|req| {
        let mut partial = req.raw_response(&[0; 100]);
        partial.truncate(20);
        Reply::SendThenStall(partial)
    });
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Read,
                api: Some("Metadata"),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn no_common_version_is_unsupported_version_naming_the_api() {
    // The broker offers Produce v0-2 only: below the Kafka 4 floor of v3. It leads the one
    // partition of topic `t`.
    let bound = FakeBroker::builder()
        .versions(&[
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::Produce, 0, 2),
        ])
        .bind();
    let mut metadata = metadata_naming(&bound.addr);
    let mut t = kafka_protocol::messages::metadata_response::MetadataResponseTopic::default();
    t.name = Some(kafka_protocol::messages::TopicName(
        StrBytes::from_static_str("t"),
    ));
    let mut p = kafka_protocol::messages::metadata_response::MetadataResponsePartition::default();
    p.leader_id = 0.into();
    t.partitions.push(p);
    metadata.topics.push(t);
    let fake = bound.serve(move |req| {
        if req.is::<MetadataRequest>() {
            req.respond::<MetadataRequest>(&metadata)
        } else {
            Reply::Default
        }
    });
    let mut config = kpipe::ProducerConfig::new(&fake.addr).topic("t");
    config.client.connection = quick();
    config.idempotence = Some(false);
    config.delivery_timeout = Duration::from_secs(2);
    let producer = kpipe::Producer::new(config).unwrap();
    let outcome = producer.send_and_wait(kpipe::ProducerRecord::new("x"));
    let text = match outcome {
        Err(e) => e.to_string(),
        Ok(d) => panic!("delivered {d:?} to a broker without a common Produce version"),
    };
    assert!(
        text.contains("Produce") && text.contains("kpipe 3..13") && text.contains("broker 0..2"),
        "{text}"
    );
    assert!(
        !fake.requests().iter().any(|r| r.is::<ProduceRequest>()),
        "no Produce request is sent at a version the broker does not speak"
    );
    let _ = producer.close(Duration::from_secs(5));
}

#[test]
fn api_versions_fallback_and_its_failure() {
    // A broker that knows ApiVersions up to v2 only: it answers a newer one with error 35
    // encoded as v0 (as Kafka does), then v2 works.
    let fake = fake_with(
        &[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 4, 9)],
        |req| {
            if req.is::<MetadataRequest>() {
                req.respond::<MetadataRequest>(&MetadataResponse::default())
            } else {
                Reply::Default
            }
        },
    );
    Cluster::connect(client(&fake.addr)).unwrap();
    let seen: Vec<(i16, i16)> = fake
        .requests()
        .iter()
        .map(|r| (r.api_key, r.version))
        .collect();
    let newest = ApiVersionsRequest::VERSIONS.max;
    assert!(newest > 2);
    assert_eq!(
        seen,
        [
            (ApiKey::ApiVersions as i16, newest),
            (ApiKey::ApiVersions as i16, 2),
            (ApiKey::Metadata as i16, 9),
        ],
        "asked again at the broker's newest ApiVersions, then Metadata at the highest common version"
    );
    fake.assert_sane();

    // A broker whose ApiVersions range kpipe cannot meet at all.
    let fake = fake_with(&[(ApiKey::ApiVersions, 7, 9)], |_| Reply::Default);
    let err = Cluster::connect(client(&fake.addr)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                api: "ApiVersions",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_frame_is_an_error() {
    let err = metadata_error(|req| {
        let mut f = req.raw_response(&[0; 100]);
        f.truncate(30);
        Reply::SendThenClose(f)
    });
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn garbage_frame_is_an_error() {
    let err = metadata_error(|req| {
        Reply::Send(req.raw_response(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0x7f, 9, 9]))
    });
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
}

#[test]
fn oversized_length_is_refused_before_reading() {
    let err = metadata_error(|_| Reply::Send(i32::MAX.to_be_bytes().to_vec()));
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                actual: 2147483647,
                limit: 104857600,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_correlation_id_is_an_error() {
    let err = metadata_error(|req| {
        let mut header = BytesMut::new();
        let mut h = ResponseHeader::default();
        h.correlation_id = req.correlation_id + 1000;
        h.encode(&mut header, 1).unwrap();
        let mut f = ((header.len() + 1) as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&header);
        f.push(0);
        Reply::Send(f)
    });
    assert!(err.to_string().contains("correlation id"), "{err}");
}

#[test]
fn a_connection_that_failed_mid_request_is_not_used_again() {
    // Broker 0 is the fake itself. On the first connection, the second Metadata request
    // gets `fault`; every other request is answered.
    type Fault = fn(&Request) -> Reply;
    let garbage: Fault = |req| Reply::Send(req.raw_response(&[0xde, 0xad, 0xbe, 0xef, 9]));
    let stall: Fault = |req| {
        let mut partial = req.raw_response(&[0; 100]);
        partial.truncate(20);
        Reply::SendThenStall(partial)
    };
    for (fault, fails) in [(garbage, true), (stall, false)] {
        let bound = FakeBroker::builder().bind();
        let metadata = metadata_naming(&bound.addr);
        let fake = bound.serve(move |req| match (req.conn, req.n) {
            (1, 2) => fault(req),
            _ if req.is::<MetadataRequest>() => req.respond::<MetadataRequest>(&metadata),
            _ => Reply::Default,
        });
        let mut cluster = Cluster::connect(client(&fake.addr)).unwrap();
        let first = cluster.fetch_metadata(Some(&[]));
        if fails {
            // A response that does not decode is not worth asking another broker for.
            assert!(matches!(first, Err(Error::Protocol { .. })), "{first:?}");
        } else {
            // A timeout is: broker 0 answers on a connection of its own.
            first.unwrap();
        }
        cluster.fetch_metadata(Some(&[])).unwrap();
        let on = |conn| {
            fake.requests()
                .iter()
                .filter(|r| r.conn == conn)
                .map(|r| r.api_key)
                .collect::<Vec<_>>()
        };
        let (versions, metadata) = (ApiKey::ApiVersions as i16, ApiKey::Metadata as i16);
        assert_eq!(
            on(1),
            [versions, metadata, metadata],
            "nothing more on the connection that failed"
        );
        let again = if fails { 1 } else { 2 };
        assert_eq!(on(2), [vec![versions], vec![metadata; again]].concat());
        assert_eq!(fake.connections(), 2);
        fake.assert_sane();
    }
}

// --- TLS and SASL -------------------------------------------------------------------------

use kpipe::client::{Pem, Sasl, SecurityProtocol, TlsVerify};

fn secured(addr: &str, protocol: SecurityProtocol) -> ClientConfig {
    let mut c = ClientConfig::new([addr]);
    c.connection = quick();
    c.security.protocol = protocol;
    c
}

#[test]
fn a_tls_handshake_that_stalls_times_out_naming_the_step() {
    // Accepts TCP, then says nothing: the ClientHello is never answered.
    let fake = FakeBroker::builder().bind().serve_each(|_| Serve::Hold);
    let addr = fake.addr.clone();
    let mut c = secured(&addr, SecurityProtocol::Ssl);
    c.security.tls.verify = TlsVerify::Insecure;
    let started = Instant::now();
    let err = Cluster::connect(c).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::TlsHandshake,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("TLS handshake timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the connect timeout"
    );
    assert_eq!(fake.connections(), 1);
}

fn sasl_handshake_ok(req: &Request, mechanisms: &[&str]) -> Reply {
    let mut resp = SaslHandshakeResponse::default();
    resp.mechanisms = mechanisms
        .iter()
        .map(|m| StrBytes::from_string((*m).to_owned()))
        .collect();
    req.respond::<SaslHandshakeRequest>(&resp)
}

fn sasl_broker(then: impl FnOnce(&Request) -> Reply + Send + 'static) -> FakeBroker {
    let mut then = Some(then);
    fake_with(
        &[
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::SaslHandshake, 0, 1),
            (ApiKey::SaslAuthenticate, 0, 2),
        ],
        move |req| match req.n {
            0 => Reply::Default,
            1 => sasl_handshake_ok(req, &["PLAIN"]),
            2 => (then.take().unwrap())(req),
            _ => Reply::Close,
        },
    )
}

#[test]
fn a_stalled_sasl_exchange_times_out_naming_the_request() {
    let fake = sasl_broker(|_| Reply::stall());
    let mut c = secured(&fake.addr, SecurityProtocol::SaslPlaintext);
    c.security.sasl = Some(Sasl::plain("alice", "pw"));
    let started = Instant::now();
    let err = Cluster::connect(c).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Read,
                api: Some("SaslAuthenticate"),
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        fake.keys(),
        [
            ApiKey::ApiVersions as i16,
            ApiKey::SaslHandshake as i16,
            ApiKey::SaslAuthenticate as i16
        ]
    );
}

#[test]
fn a_mechanism_the_broker_lacks_names_the_ones_it_offers() {
    let listener_then = |req: &Request| {
        let mut resp = SaslHandshakeResponse::default();
        resp.error_code = 33; // UNSUPPORTED_SASL_MECHANISM
        resp.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
        Reply::SendThenClose(req.response::<SaslHandshakeRequest>(&resp))
    };
    let fake = broker_with(
        &[(ApiKey::ApiVersions, 0, 4), (ApiKey::SaslHandshake, 0, 1)],
        listener_then,
    );
    let mut c = secured(&fake.addr, SecurityProtocol::SaslPlaintext);
    c.security.sasl = Some(Sasl::scram_sha256("alice", "pw"));
    let err = Cluster::connect(c).unwrap_err().to_string();
    assert!(
        err.contains("does not offer SCRAM-SHA-256") && err.contains("offers: PLAIN"),
        "{err}"
    );
    fake.assert_sane();
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM: (ca, chain, key).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[test]
fn tls_readiness_sees_responses_already_decrypted() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (ca, chain, key) = test_pki();
    let server_config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    let fake = FakeBroker::builder()
        .tls(server_config)
        .bind()
        .serve(|req| match req.n {
            // The ApiVersions answer and, in the same TLS record, the answer to the Metadata
            // request the client has not sent yet (correlation id 1).
            0 => {
                let mut both = req.response::<ApiVersionsRequest>(&fake::api_versions(&[
                    (ApiKey::ApiVersions, 0, 4),
                    (ApiKey::Metadata, 0, 12),
                ]));
                both.extend(fake::response_frame(1, 12, &MetadataResponse::default()));
                Reply::Send(both)
            }
            // Answered already.
            _ => Reply::Nothing,
        });
    let addr = fake.addr.clone();
    let mut c = secured(&addr, SecurityProtocol::Ssl);
    c.security.tls.ca = Some(Pem::Inline(ca.into()));
    let connector = kpipe::unstable::Connector::new(&c).unwrap();
    let mut conn = connector.connect(&addr).unwrap();
    let pending = conn.send(&MetadataRequest::default()).unwrap();
    // The socket holds nothing more, yet the response is there: readiness must say so
    // without waiting.
    assert!(
        conn.poll_response(Duration::ZERO),
        "a response buffered inside the TLS session counts as ready"
    );
    let md = conn.receive::<MetadataRequest>(pending).unwrap();
    assert_eq!(md.brokers.len(), 0);
    drop(conn);
    common::await_condition(
        Duration::from_secs(5),
        "the fake to read both requests",
        || fake.keys().len() == 2,
    );
    assert_eq!(
        fake.keys(),
        [ApiKey::ApiVersions as i16, ApiKey::Metadata as i16]
    );
}
