//! A broker answering ApiVersions with an array that claims four billion entries in a few
//! bytes. kafka-protocol 0.18.0 as published pre-allocates arrays from lengths read off the
//! wire, so that answer asks for tens of gigabytes and aborts the process (an allocation
//! failure is an abort in Rust, not a panic). kpipe's patched copy bounds the pre-allocation
//! by the bytes left; this crate depends on kpipe as any application does, so it passes
//! only if the patch reached it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use kpipe::client::{ClientConfig, Cluster, Error};

/// Serve one connection: read the ApiVersions request, answer it with the hostile frame.
fn hostile_broker() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("kpipe connects");
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut size = [0u8; 4];
        sock.read_exact(&mut size).unwrap();
        let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
        sock.read_exact(&mut request).unwrap();
        // Request header: api_key i16, api_version i16, correlation_id i32.
        let version = i16::from_be_bytes([request[2], request[3]]);
        let correlation_id = &request[4..8];
        // Response header v0 (ApiVersions always), error_code 0, then the api_keys array's
        // length: a compact (varint, length + 1) array from v3 on, an int32 before.
        let mut body = correlation_id.to_vec();
        body.extend_from_slice(&0i16.to_be_bytes());
        if version >= 3 {
            body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        } else {
            body.extend_from_slice(&i32::MAX.to_be_bytes());
        }
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        sock.write_all(&frame).unwrap();
        // Keep the socket open until kpipe gives up on it.
        let _ = sock.read(&mut [0u8; 64]);
    });
    addr
}

#[test]
fn a_hostile_api_versions_answer_is_an_error_not_an_abort() {
    let addr = hostile_broker();
    let mut config = ClientConfig::new([addr.as_str()]);
    config.connection.request_timeout = Duration::from_secs(5);
    let err = Cluster::connect(config).expect_err("a frame that cannot decode fails the connect");
    let text = err.to_string();
    // Reached only if decoding returned: the process did not abort on the allocation.
    assert!(matches!(err, Error::NoBrokerReachable { .. } | Error::Protocol { .. }), "{err:?}");
    assert!(text.contains("ApiVersions"), "the error names the answer it could not read: {text}");
}
