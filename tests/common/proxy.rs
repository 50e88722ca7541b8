//! A fault-injecting proxy in front of the real broker, for faults the broker cannot make
//! on demand (records corrupted on the way, a partition error in a Fetch answer). Every
//! request and answer passes through unchanged except: Metadata answers name the proxy
//! instead of the broker (so clients keep talking through it), and Fetch answers go
//! through the test's rewrite first. Group coordinator traffic goes to the broker directly
//! (FindCoordinator answers are left alone).

use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{FetchResponse, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// A rewrite of Fetch answers; it returns whether it changed the answer.
pub type FetchRewrite = Box<dyn FnMut(&mut FetchResponse) -> bool + Send>;

/// The proxy; it stops accepting when dropped (open connections end with the test).
pub struct Proxy {
    /// `127.0.0.1:port` to bootstrap from.
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`host:port` of the one broker), rewriting Fetch
    /// answers with `rewrite`.
    pub fn start(upstream: &str, rewrite: FetchRewrite) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let stop = Arc::new(AtomicBool::new(false));
        let rewrite = Arc::new(Mutex::new(rewrite));
        let upstream = upstream.to_owned();
        let stopping = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let asked = Arc::new(Mutex::new(HashMap::new()));
                let (c2, s2, asked2) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    asked.clone(),
                );
                thread::spawn(move || requests(c2, s2, asked2));
                let rewrite = rewrite.clone();
                thread::spawn(move || answers(server, client, asked, port, rewrite));
            }
        });
        Proxy { addr, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn read_frame(from: &mut TcpStream) -> Option<Bytes> {
    super::fake::read_frame(from).ok().flatten()
}

fn write_frame(to: &mut TcpStream, body: &[u8]) -> bool {
    super::fake::write_frame(to, body).is_ok()
}

/// Client to broker: note each request's API and version by correlation id.
fn requests(
    mut client: TcpStream,
    mut server: TcpStream,
    asked: Arc<Mutex<HashMap<i32, (i16, i16)>>>,
) {
    while let Some(frame) = read_frame(&mut client) {
        if frame.len() >= 8 {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            asked.lock().unwrap().insert(correlation, (key, version));
        }
        if !write_frame(&mut server, &frame) {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
}

/// Broker to client: rewrite Metadata and Fetch answers.
fn answers(
    mut server: TcpStream,
    mut client: TcpStream,
    asked: Arc<Mutex<HashMap<i32, (i16, i16)>>>,
    port: u16,
    rewrite: Arc<Mutex<FetchRewrite>>,
) {
    const FETCH: i16 = 1;
    const METADATA: i16 = 3;
    while let Some(frame) = read_frame(&mut server) {
        let correlation = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let api = asked.lock().unwrap().remove(&correlation);
        let out = match api {
            Some((METADATA, v)) => reencode::<MetadataResponse>(&frame, v, |m| {
                for b in &mut m.brokers {
                    b.host = StrBytes::from_string("127.0.0.1".to_owned());
                    b.port = port as i32;
                }
                true
            }),
            Some((FETCH, v)) => {
                let mut rewrite = rewrite.lock().unwrap();
                reencode::<FetchResponse>(&frame, v, |f| rewrite(f))
            }
            _ => None,
        };
        if !write_frame(&mut client, out.as_deref().unwrap_or(&frame)) {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Decode an answer, let `change` edit it, and encode it again if it did.
fn reencode<M: Decodable + Encodable + HeaderVersion>(
    frame: &[u8],
    version: i16,
    change: impl FnOnce(&mut M) -> bool,
) -> Option<Vec<u8>> {
    let header_version = M::header_version(version);
    let mut buf = BytesMut::from(frame);
    let header = ResponseHeader::decode(&mut buf, header_version).ok()?;
    let mut body = M::decode(&mut buf, version).ok()?;
    if buf.has_remaining() || !change(&mut body) {
        return None;
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version).ok()?;
    body.encode(&mut out, version).ok()?;
    Some(out.to_vec())
}
