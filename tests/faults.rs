//! Faults a real broker will not produce on demand, from tiny fake servers on loopback:
//! refused connections, stalls, version mismatches and broken frames. Each must end in a
//! clear error within the configured bound, never a panic or a hang.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, MetadataRequest, ProduceRequest, ResponseHeader,
};
use kafka_protocol::protocol::Encodable;
use kpipe::client::{ClientConfig, Cluster, ConnectionConfig, Error, Phase};
use kpipe::unstable::Connector;

fn quick() -> ConnectionConfig {
    ConnectionConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
        ..ConnectionConfig::default()
    }
}

/// What the fake server does with the n-th request it reads.
enum Reply {
    /// Send these bytes (a whole or partial frame).
    Bytes(Vec<u8>),
    /// Send these bytes, then close the connection.
    Last(Vec<u8>),
    /// Send these bytes, then keep the socket open without a word until the client leaves.
    Stall(Vec<u8>),
    /// Close the connection.
    Close,
}

/// A fake broker: accepts one connection and answers each request with `script(n, correlation_id)`.
fn fake_broker(
    mut script: impl FnMut(usize, i32) -> Reply + Send + 'static,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for n in 0.. {
            let mut size = [0u8; 4];
            if sock.read_exact(&mut size).is_err() {
                return;
            }
            let mut req = vec![0u8; i32::from_be_bytes(size) as usize];
            if sock.read_exact(&mut req).is_err() {
                return;
            }
            let correlation_id = i32::from_be_bytes(req[4..8].try_into().unwrap());
            match script(n, correlation_id) {
                Reply::Bytes(b) => {
                    let _ = sock.write_all(&b);
                }
                Reply::Last(b) => {
                    let _ = sock.write_all(&b);
                    return;
                }
                Reply::Stall(b) => {
                    let _ = sock.write_all(&b);
                    // Hold the socket until the client gives up and closes it.
                    let _ = sock.read(&mut [0u8; 1]);
                    return;
                }
                Reply::Close => return,
            }
        }
    });
    (addr, handle)
}

fn frame(correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn api_versions(ranges: &[(ApiKey, i16, i16)], error_code: i16, version: i16) -> Vec<u8> {
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = error_code;
    for &(key, min, max) in ranges {
        let mut v = ApiVersion::default();
        v.api_key = key as i16;
        v.min_version = min;
        v.max_version = max;
        resp.api_keys.push(v);
    }
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// A broker that speaks ApiVersions (Metadata v0-12 only) and then does `then` for request 1.
fn broker_then(then: impl FnOnce(i32) -> Reply + Send + 'static) -> (String, JoinHandle<()>) {
    broker_with(
        &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)],
        then,
    )
}

/// A broker that advertises `ranges` in ApiVersions and then does `then` for request 1.
fn broker_with(
    ranges: &[(ApiKey, i16, i16)],
    then: impl FnOnce(i32) -> Reply + Send + 'static,
) -> (String, JoinHandle<()>) {
    let mut then = Some(then);
    let versions = api_versions(ranges, 0, 4);
    fake_broker(move |n, id| match n {
        0 => Reply::Bytes(frame(id, &versions)),
        1 => (then.take().unwrap())(id),
        _ => Reply::Close,
    })
}

fn metadata_error(then: impl FnOnce(i32) -> Reply + Send + 'static) -> Error {
    let (addr, server) = broker_then(then);
    let mut conn = Connector::plaintext(&quick()).connect(&addr).unwrap();
    let err = conn.request(&MetadataRequest::default()).unwrap_err();
    assert!(
        !conn.is_open(),
        "a connection that failed mid-request is closed"
    );
    assert!(matches!(
        conn.request(&MetadataRequest::default()),
        Err(Error::Closed { .. })
    ));
    drop(conn);
    server.join().unwrap();
    err
}

#[test]
fn connection_refused_names_the_address_and_the_fix() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }; // listener dropped: nothing listens there now
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
    let dead: Vec<String> = (0..2)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string()
        })
        .collect();
    let err = Cluster::connect(ClientConfig::new(&dead)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoBrokerReachable { .. }), "{text}");
    assert!(dead.iter().all(|a| text.contains(a)), "{text}");
}

#[test]
fn a_listener_that_never_answers_times_out() {
    let (addr, server) = fake_broker(|_, _| Reply::Stall(Vec::new()));
    let started = Instant::now();
    let err = Connector::plaintext(&quick()).connect(&addr).unwrap_err();
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
    server.join().unwrap();
}

#[test]
fn a_broker_that_stalls_mid_frame_times_out() {
    let err = metadata_error(|id| {
        let mut partial = frame(id, &[0; 100]);
        partial.truncate(20);
        Reply::Stall(partial)
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
    // The broker offers Produce v0-2 only: below the Kafka 4 floor of v3.
    let (addr, server) = fake_broker(|n, id| match n {
        0 => Reply::Bytes(frame(
            id,
            &api_versions(
                &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Produce, 0, 2)],
                0,
                4,
            ),
        )),
        _ => Reply::Close,
    });
    let conn = Connector::plaintext(&quick()).connect(&addr).unwrap();
    let err = conn.version::<ProduceRequest>().unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::UnsupportedVersion { api: "Produce", .. }),
        "{text}"
    );
    assert!(
        text.contains("kpipe 3..13") && text.contains("broker 0..2"),
        "{text}"
    );
    drop(conn);
    server.join().unwrap();
}

#[test]
fn api_versions_fallback_and_its_failure() {
    // A broker that knows ApiVersions up to v2 only: error 35 encoded as v0, then v2 works.
    let (addr, server) = fake_broker(|n, id| match n {
        0 => Reply::Bytes(frame(
            id,
            &api_versions(&[(ApiKey::ApiVersions, 0, 2)], 35, 0),
        )),
        1 => Reply::Bytes(frame(
            id,
            &api_versions(
                &[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 4, 9)],
                0,
                2,
            ),
        )),
        _ => Reply::Close,
    });
    let conn = Connector::plaintext(&quick()).connect(&addr).unwrap();
    assert_eq!(conn.version::<MetadataRequest>().unwrap(), 9);
    drop(conn);
    server.join().unwrap();

    // A broker whose ApiVersions range kpipe cannot meet at all.
    let (addr, server) = fake_broker(|n, id| match n {
        0 => Reply::Bytes(frame(
            id,
            &api_versions(&[(ApiKey::ApiVersions, 7, 9)], 35, 0),
        )),
        _ => Reply::Close,
    });
    let err = Connector::plaintext(&quick()).connect(&addr).unwrap_err();
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
    server.join().unwrap();
}

#[test]
fn truncated_frame_is_an_error() {
    let err = metadata_error(|id| {
        let mut f = frame(id, &[0; 100]);
        f.truncate(30);
        Reply::Last(f)
    });
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn garbage_frame_is_an_error() {
    let err = metadata_error(|id| {
        Reply::Bytes(frame(
            id,
            &[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0x7f, 9, 9],
        ))
    });
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
}

#[test]
fn oversized_length_is_refused_before_reading() {
    let err = metadata_error(|_| Reply::Bytes(i32::MAX.to_be_bytes().to_vec()));
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
    let err = metadata_error(|id| {
        let mut header = BytesMut::new();
        let mut h = ResponseHeader::default();
        h.correlation_id = id + 1000;
        h.encode(&mut header, 1).unwrap();
        let mut f = ((header.len() + 1) as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&header);
        f.push(0);
        Reply::Bytes(f)
    });
    assert!(err.to_string().contains("correlation id"), "{err}");
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 4096];
        while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
    });
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
    server.join().unwrap();
}

fn sasl_handshake_ok(mechanisms: &[&str]) -> Vec<u8> {
    let mut resp = kafka_protocol::messages::SaslHandshakeResponse::default();
    resp.mechanisms = mechanisms
        .iter()
        .map(|m| kafka_protocol::protocol::StrBytes::from_string((*m).to_owned()))
        .collect();
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, 1).unwrap();
    buf.to_vec()
}

fn sasl_broker(then: impl FnOnce(i32) -> Reply + Send + 'static) -> (String, JoinHandle<()>) {
    let mut then = Some(then);
    fake_broker(move |n, id| match n {
        0 => Reply::Bytes(frame(
            id,
            &api_versions(
                &[
                    (ApiKey::ApiVersions, 0, 4),
                    (ApiKey::Metadata, 0, 12),
                    (ApiKey::SaslHandshake, 0, 1),
                    (ApiKey::SaslAuthenticate, 0, 2),
                ],
                0,
                4,
            ),
        )),
        1 => Reply::Bytes(frame(id, &sasl_handshake_ok(&["PLAIN"]))),
        2 => (then.take().unwrap())(id),
        _ => Reply::Close,
    })
}

#[test]
fn a_stalled_sasl_exchange_times_out_naming_the_request() {
    let (addr, server) = sasl_broker(|_| Reply::Stall(Vec::new()));
    let mut c = secured(&addr, SecurityProtocol::SaslPlaintext);
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
    server.join().unwrap();
}

#[test]
fn a_mechanism_the_broker_lacks_names_the_ones_it_offers() {
    let listener_then = |id| {
        let mut resp = kafka_protocol::messages::SaslHandshakeResponse::default();
        resp.error_code = 33; // UNSUPPORTED_SASL_MECHANISM
        resp.mechanisms = vec![kafka_protocol::protocol::StrBytes::from_static_str("PLAIN")];
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, 1).unwrap();
        Reply::Last(frame(id, &buf))
    };
    let (addr, server) = broker_with(
        &[(ApiKey::ApiVersions, 0, 4), (ApiKey::SaslHandshake, 0, 1)],
        listener_then,
    );
    let mut c = secured(&addr, SecurityProtocol::SaslPlaintext);
    c.security.sasl = Some(Sasl::scram_sha256("alice", "pw"));
    let err = Cluster::connect(c).unwrap_err().to_string();
    assert!(
        err.contains("does not offer SCRAM-SHA-256") && err.contains("offers: PLAIN"),
        "{err}"
    );
    server.join().unwrap();
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(server_config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut size = [0u8; 4];
        tls.read_exact(&mut size).unwrap();
        let mut req = vec![0u8; i32::from_be_bytes(size) as usize];
        tls.read_exact(&mut req).unwrap();
        // The ApiVersions answer and, in the same TLS record, the answer to the Metadata
        // request the client has not sent yet (correlation id 1).
        let mut both = frame(
            0,
            &api_versions(
                &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)],
                0,
                4,
            ),
        );
        let mut md = BytesMut::new();
        kafka_protocol::messages::MetadataResponse::default()
            .encode(&mut md, 12)
            .unwrap();
        let mut header = BytesMut::new();
        let mut h = ResponseHeader::default();
        h.correlation_id = 1;
        h.encode(&mut header, 1).unwrap();
        both.extend(((header.len() + md.len()) as i32).to_be_bytes());
        both.extend_from_slice(&header);
        both.extend_from_slice(&md);
        tls.write_all(&both).unwrap();
        tls.flush().unwrap();
        // Hold the connection until the client has read everything and left.
        let _ = tls.read(&mut [0u8; 1]);
    });
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
    server.join().unwrap();
}
