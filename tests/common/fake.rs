//! One fake Kafka broker for the fault tests: faults a real broker will not make on demand
//! (garbage or partial frames, version mismatches, stalls, chosen error codes, dropped
//! connections), on the same codecs kpipe uses (`kafka_protocol`).
//!
//! ```text
//!  client ──TCP/TLS──▶ accept thread ──▶ one thread per connection
//!                                         ├─ reader: frame ─▶ Request (header decoded),
//!                                         │          logged, `on_read` hook
//!                                         └─ answerer: handler(&Request) ─▶ Reply
//! ```
//!
//! A test answers each request with a handler: a typed response ([`Request::respond`]), raw
//! bytes, nothing, a stall or a close ([`Reply`]). [`Reply::Default`] is the fake's own answer:
//! ApiVersions from the advertised ranges (UNSUPPORTED_VERSION in v0 for a version it does not
//! speak, as Kafka does), and for any other request a problem noted and the connection closed.
//! The reader takes requests off the socket as soon as they come, so a client may pipeline
//! and a test sees how many are outstanding; answers go out in order. The fake keeps every
//! request it read ([`FakeBroker::requests`]) and stops (accept loop, connections, threads,
//! each joined within a bound) when dropped.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// Largest request frame the fake reads; a bigger one is a problem and ends the connection.
const FRAME_LIMIT: usize = 64 << 20;
/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// How long dropping the fake waits for its threads.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// What the fake advertises unless told otherwise: enough to connect and ask for metadata.
pub const DEFAULT_VERSIONS: &[(ApiKey, i16, i16)] =
    &[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)];

/// An address where nothing listens: connections to it are refused.
pub fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().to_string()
}

/// A request as the fake read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The connection it came on: 1 for the first the fake accepted, and so on.
    pub conn: u64,
    /// Its place on that connection, from 0.
    pub n: usize,
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    /// The header, when the API key is one the codecs know.
    pub header: Option<RequestHeader>,
    /// The body after the header (empty when the header could not be decoded).
    pub body: Bytes,
    /// The whole frame after its size, header included.
    pub frame: Bytes,
    /// When it was read.
    pub at: Instant,
}

impl Request {
    fn parse(conn: u64, n: usize, frame: Bytes) -> Request {
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
        let mut body = frame.clone();
        let header = ApiKey::try_from(api_key).ok().and_then(|key| {
            RequestHeader::decode(&mut body, key.request_header_version(version)).ok()
        });
        if header.is_none() {
            body = Bytes::new();
        }
        Request {
            conn,
            n,
            api_key,
            version,
            correlation_id,
            header,
            body,
            frame,
            at: Instant::now(),
        }
    }

    /// The API, when the codecs know its key.
    pub fn key(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }

    /// Whether this is a request of type `R`.
    pub fn is<R: kafka_protocol::protocol::Request>(&self) -> bool {
        self.api_key == R::KEY
    }

    /// The client id the header names.
    pub fn client_id(&self) -> Option<String> {
        self.header
            .as_ref()
            .and_then(|h| h.client_id.as_ref().map(|c| c.to_string()))
    }

    /// The body decoded as `R`, all of it.
    pub fn decode<R: kafka_protocol::protocol::Request>(&self) -> Result<R, String> {
        let name = std::any::type_name::<R>();
        if self.api_key != R::KEY {
            return Err(format!("{name} expected, API key {} read", self.api_key));
        }
        if self.header.is_none() {
            return Err(format!("{name}: the request header does not decode"));
        }
        let mut body = self.body.clone();
        let req = R::decode(&mut body, self.version).map_err(|e| format!("{name}: {e}"))?;
        if body.has_remaining() {
            return Err(format!("{name}: {} bytes after the body", body.remaining()));
        }
        Ok(req)
    }

    /// The answer `body` to this request (a request of type `R`), framed at its version.
    pub fn response<R: kafka_protocol::protocol::Request>(&self, body: &R::Response) -> Vec<u8> {
        response_frame(self.correlation_id, self.version, body)
    }

    /// [`response`](Self::response) as a reply.
    pub fn respond<R: kafka_protocol::protocol::Request>(&self, body: &R::Response) -> Reply {
        Reply::Send(self.response::<R>(body))
    }

    /// A frame of `body` (raw bytes) after a response header v0 with this correlation id.
    pub fn raw_response(&self, body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&self.correlation_id.to_be_bytes());
        out.extend_from_slice(body);
        out
    }
}

/// The frame of the answer `body` to the request `correlation_id` sent at `version`.
pub fn response_frame<M: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &M,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, M::header_version(version))
        .expect("encode a response header");
    body.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encode {} v{version}: {e}", std::any::type_name::<M>()));
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// An ApiVersions answer advertising `ranges` (key, min, max).
pub fn api_versions(ranges: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    for &(key, min, max) in ranges {
        let mut v = ApiVersion::default();
        v.api_key = key as i16;
        v.min_version = min;
        v.max_version = max;
        resp.api_keys.push(v);
    }
    resp
}

/// `resp` with these finalized features (name, level), epoch 1 (ApiVersions v3+).
pub fn with_features(
    mut resp: ApiVersionsResponse,
    features: &[(&str, i16)],
) -> ApiVersionsResponse {
    resp.finalized_features_epoch = 1;
    for &(name, level) in features {
        let mut f = FinalizedFeatureKey::default();
        f.name = StrBytes::from_string(name.to_owned());
        f.min_version_level = level;
        f.max_version_level = level;
        resp.finalized_features.push(f);
    }
    resp
}

/// What the fake does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Write these bytes as they are (one frame, several, or part of one) and read on.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendThenClose(Vec<u8>),
    /// Write these bytes, then say nothing more: later requests are read and never
    /// answered, until the client leaves.
    SendThenStall(Vec<u8>),
    /// No answer to this request; read on and answer the next.
    Nothing,
    /// Close the connection without an answer.
    Close,
    /// The fake's own answer: ApiVersions from the advertised ranges; anything else is
    /// noted as a problem and the connection closed.
    Default,
}

impl Reply {
    /// Say nothing more on this connection until the client leaves.
    pub fn stall() -> Reply {
        Reply::SendThenStall(Vec::new())
    }
}

/// A handler for the requests of one connection.
pub type Handler = Box<dyn FnMut(&Request) -> Reply + Send>;

/// How the fake serves one connection.
pub enum Serve {
    /// Answer its requests with this handler.
    With(Handler),
    /// Copy bytes both ways between the client and this address (a relay, or the real
    /// broker standing behind the fake's address).
    Forward(String),
    /// Read and discard whatever comes, answer nothing, until the client leaves.
    Hold,
    /// Close it at once.
    Close,
}

type OnRead = Arc<dyn Fn(&Request) -> Result<(), String> + Send + Sync>;

/// How a fake broker is set up before it listens.
pub struct Builder {
    versions: ApiVersionsResponse,
    on_read: Option<OnRead>,
    tls: Option<Arc<rustls::ServerConfig>>,
    name: String,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            versions: api_versions(DEFAULT_VERSIONS),
            on_read: None,
            tls: None,
            name: "fake".into(),
        }
    }
}

impl Builder {
    /// Advertise these ranges (key, min, max) in the default ApiVersions answer.
    pub fn versions(self, ranges: &[(ApiKey, i16, i16)]) -> Builder {
        self.api_versions(api_versions(ranges))
    }

    /// The default ApiVersions answer, whole (ranges, finalized features...).
    pub fn api_versions(mut self, resp: ApiVersionsResponse) -> Builder {
        self.versions = resp;
        self
    }

    /// Call `hook` on every request as soon as it is read, before it waits for its turn to
    /// be answered; an `Err` is noted as a problem and ends the connection.
    pub fn on_read(
        mut self,
        hook: impl Fn(&Request) -> Result<(), String> + Send + Sync + 'static,
    ) -> Builder {
        self.on_read = Some(Arc::new(hook));
        self
    }

    /// Speak TLS with this server config (one thread per connection, requests read one at
    /// a time).
    pub fn tls(mut self, config: rustls::ServerConfig) -> Builder {
        self.tls = Some(Arc::new(config));
        self
    }

    /// Name its threads `{name}-...` (for traces).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = name.into();
        self
    }

    /// Listen on 127.0.0.1 (any free port); connections wait until it serves.
    pub fn bind(self) -> Bound {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap().to_string();
        Bound {
            builder: self,
            listener,
            addr,
        }
    }
}

/// A fake broker listening but not serving yet (its address can go into what it answers).
pub struct Bound {
    builder: Builder,
    listener: TcpListener,
    /// `127.0.0.1:port`.
    pub addr: String,
}

impl Bound {
    pub fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Answer the requests of every connection with `handler`.
    pub fn serve(self, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeBroker {
        let handler = Arc::new(handler);
        self.serve_each(move |_| {
            let handler = handler.clone();
            Serve::With(Box::new(move |req| handler(req)))
        })
    }

    /// Serve the `n`-th connection (from 1) as `plan(n)` says.
    pub fn serve_each(self, plan: impl FnMut(u64) -> Serve + Send + 'static) -> FakeBroker {
        let shared = Arc::new(Shared {
            versions: self.builder.versions,
            on_read: self.builder.on_read,
            tls: self.builder.tls,
            name: self.builder.name,
            stop: AtomicBool::new(false),
            accepting: AtomicBool::new(true),
            accepted: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
        });
        let listener = self.listener;
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("{}-accept", shared.name))
            .spawn(move || accept_loop(listener, &s, plan))
            .expect("spawn the accept thread");
        FakeBroker {
            addr: self.addr,
            shared,
            accept: Some(accept),
        }
    }
}

/// A fake broker serving on 127.0.0.1; dropping it stops it.
pub struct FakeBroker {
    /// `127.0.0.1:port`.
    pub addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    versions: ApiVersionsResponse,
    on_read: Option<OnRead>,
    tls: Option<Arc<rustls::ServerConfig>>,
    name: String,
    stop: AtomicBool,
    accepting: AtomicBool,
    accepted: AtomicU64,
    requests: Mutex<Vec<Request>>,
    problems: Mutex<Vec<String>>,
    /// Every socket of every connection (a forwarded one has two), and its thread.
    conns: Mutex<Vec<(Vec<TcpStream>, JoinHandle<()>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn problem(&self, what: String) {
        log::debug!(target: "fake", "{}: problem: {what}", self.name);
        lock(&self.problems).push(what);
    }
}

impl FakeBroker {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A fake broker with the default setup answering every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeBroker {
        Builder::default().bind().serve(handler)
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// Every request read so far, in the order read.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// The API keys of the requests read so far, in order.
    pub fn keys(&self) -> Vec<i16> {
        lock(&self.shared.requests)
            .iter()
            .map(|r| r.api_key)
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// What the fake found wrong: requests that do not decode, answers it was not told.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.shared.problems).clone()
    }

    /// Note a problem (from a handler that found the request wrong).
    pub fn problem(&self, what: String) {
        self.shared.problem(what);
    }

    /// The fake found nothing wrong.
    pub fn assert_sane(&self) {
        let problems = self.problems();
        assert!(problems.is_empty(), "the fake broker found: {problems:#?}");
    }

    /// End every open connection (the fake still accepts new ones).
    pub fn close_connections(&self) {
        for (socks, _) in lock(&self.shared.conns).iter() {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// The broker dies: new connections are refused and open ones end.
    pub fn kill(&mut self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            join_by(
                accept,
                Instant::now() + STOP_BOUND,
                "the fake's accept loop",
            );
        }
        self.close_connections();
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        let deadline = Instant::now() + STOP_BOUND;
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.accepting.store(false, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            join_by(accept, deadline, "the fake's accept loop");
        }
        // Nothing is accepted any more: end the connections open, whoever holds the other end.
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for (socks, _) in &conns {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for (_, handle) in conns {
            join_by(handle, deadline, "a fake connection");
        }
    }
}

/// Wait for `handle` at most until `deadline`; a thread that panicked or outlived its bound
/// fails the test (unless it is failing already).
fn join_by(handle: JoinHandle<()>, deadline: Instant, what: &str) {
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if handle.is_finished() {
        if handle.join().is_err() && !thread::panicking() {
            panic!("{what} panicked");
        }
    } else if !thread::panicking() {
        panic!("{what} did not stop within {STOP_BOUND:?}");
    }
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>, mut plan: impl FnMut(u64) -> Serve) {
    // Polled, so that the loop sees `accepting` turn off and drops the listener at once.
    while shared.accepting.load(Ordering::SeqCst) {
        let sock = match listener.accept() {
            Ok((sock, _)) => sock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let _ = sock.set_nonblocking(false);
        let _ = sock.set_nodelay(true);
        let conn = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let Ok(twin) = sock.try_clone() else { continue };
        let serve = plan(conn);
        let mut socks = vec![twin];
        let s = shared.clone();
        let name = format!("{}-conn-{conn}", shared.name);
        let handle = match serve {
            Serve::Forward(to) => {
                let Ok(upstream) = TcpStream::connect(&to) else {
                    let _ = sock.shutdown(Shutdown::Both);
                    continue;
                };
                socks.push(upstream.try_clone().expect("clone a socket"));
                thread::Builder::new()
                    .name(name)
                    .spawn(move || forward(sock, upstream))
            }
            Serve::Hold => thread::Builder::new().name(name).spawn(move || hold(sock)),
            Serve::Close => {
                let _ = sock.shutdown(Shutdown::Both);
                continue;
            }
            Serve::With(handler) => match shared.tls.clone() {
                Some(tls) => thread::Builder::new()
                    .name(name)
                    .spawn(move || serve_tls(sock, tls, conn, &s, handler)),
                None => thread::Builder::new()
                    .name(name)
                    .spawn(move || serve_tcp(sock, conn, &s, handler)),
            },
        }
        .expect("spawn a connection thread");
        lock(&shared.conns).push((socks, handle));
    }
}

/// Read one size-prefixed frame (a request or an answer); `Ok(None)` at a clean end of the
/// connection.
pub fn read_frame(from: &mut impl Read) -> io::Result<Option<Bytes>> {
    let mut size = [0u8; 4];
    match from.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = i32::from_be_bytes(size);
    if !(0..=FRAME_LIMIT as i32).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a request frame of {size} bytes"),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    from.read_exact(&mut buf)?;
    Ok(Some(Bytes::from(buf)))
}

/// Write `body` as one size-prefixed frame.
pub fn write_frame(to: &mut impl Write, body: &[u8]) -> io::Result<()> {
    to.write_all(&(body.len() as i32).to_be_bytes())?;
    to.write_all(body)
}

/// Read, log and hook one request; `None` when the connection ends or must end.
fn take(from: &mut impl Read, conn: u64, n: usize, shared: &Shared) -> Option<Request> {
    let frame = match read_frame(from) {
        Ok(Some(frame)) => frame,
        Ok(None) => return None,
        Err(e) => {
            if e.kind() == io::ErrorKind::InvalidData {
                shared.problem(format!("conn {conn}: {e}"));
            }
            return None;
        }
    };
    if frame.len() < 8 {
        shared.problem(format!(
            "conn {conn}: a request frame of {} bytes",
            frame.len()
        ));
        return None;
    }
    let req = Request::parse(conn, n, frame);
    log::trace!(target: "fake", "{} conn {conn}: read {:?} v{} #{}", shared.name, req.key(), req.version, req.correlation_id);
    lock(&shared.requests).push(req.clone());
    if let Some(hook) = &shared.on_read {
        if let Err(problem) = hook(&req) {
            shared.problem(problem);
            return None;
        }
    }
    Some(req)
}

/// What to do after a reply.
enum Then {
    ReadOn,
    Stall,
    Close,
}

/// Carry out `reply` to `req` on `out`.
fn reply(req: &Request, reply: Reply, out: &mut impl Write, shared: &Shared) -> Then {
    let (bytes, then) = match reply {
        Reply::Send(b) => (b, Then::ReadOn),
        Reply::SendThenClose(b) => (b, Then::Close),
        Reply::SendThenStall(b) => (b, Then::Stall),
        Reply::Nothing => (Vec::new(), Then::ReadOn),
        Reply::Close => return Then::Close,
        Reply::Default => match default_answer(req, shared) {
            Some(b) => (b, Then::ReadOn),
            None => return Then::Close,
        },
    };
    if !bytes.is_empty() && out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
        return Then::Close;
    }
    then
}

/// The fake's own answer to `req`, `None` to close the connection.
fn default_answer(req: &Request, shared: &Shared) -> Option<Vec<u8>> {
    if !req.is::<ApiVersionsRequest>() {
        shared.problem(format!(
            "conn {}: unexpected {:?} (key {}) v{}",
            req.conn,
            req.key(),
            req.api_key,
            req.version
        ));
        return None;
    }
    let ours = shared
        .versions
        .api_keys
        .iter()
        .find(|v| v.api_key == ApiKey::ApiVersions as i16)
        .map_or((0, 0), |v| (v.min_version, v.max_version));
    if req.version < ours.0 || req.version > ours.1 {
        // As Kafka: UNSUPPORTED_VERSION, in v0, with the range of ApiVersions only.
        let mut resp = api_versions(&[(ApiKey::ApiVersions, ours.0, ours.1)]);
        resp.error_code = UNSUPPORTED_VERSION;
        return Some(response_frame(req.correlation_id, 0, &resp));
    }
    Some(req.response::<ApiVersionsRequest>(&shared.versions))
}

/// One plain connection: a reader takes requests off the socket as they come, this thread
/// answers them in order.
fn serve_tcp(mut sock: TcpStream, conn: u64, shared: &Arc<Shared>, mut handler: Handler) {
    let (tx, rx) = mpsc::channel::<Request>();
    let mut reader = sock.try_clone().expect("clone a socket");
    let s = shared.clone();
    let read = thread::Builder::new()
        .name(format!("{}-read-{conn}", shared.name))
        .spawn(move || {
            for n in 0.. {
                let Some(req) = take(&mut reader, conn, n, &s) else {
                    // The answers already queued still go out; then the connection ends.
                    return;
                };
                if tx.send(req).is_err() {
                    return;
                }
            }
        })
        .expect("spawn a reader thread");
    let mut then = Then::ReadOn;
    for req in rx.iter() {
        then = reply(&req, handler(&req), &mut sock, shared);
        if !matches!(then, Then::ReadOn) {
            break;
        }
    }
    if let Then::Stall = then {
        // Hold the connection, answering nothing, until the client (or the fake's drop)
        // ends it.
        rx.into_iter().for_each(drop);
    }
    let _ = sock.shutdown(Shutdown::Both);
    let _ = read.join();
}

/// One TLS connection, a request at a time.
fn serve_tls(
    sock: TcpStream,
    config: Arc<rustls::ServerConfig>,
    conn: u64,
    shared: &Shared,
    mut handler: Handler,
) {
    let Ok(session) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(session, sock);
    for n in 0.. {
        let Some(req) = take(&mut tls, conn, n, shared) else {
            break;
        };
        match reply(&req, handler(&req), &mut tls, shared) {
            Then::ReadOn => continue,
            Then::Close => break,
            Then::Stall => {
                while matches!(tls.read(&mut [0u8; 1024]), Ok(n) if n > 0) {}
                break;
            }
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Both);
}

/// Read and drop whatever the client sends until it leaves.
fn hold(mut sock: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
    let _ = sock.shutdown(Shutdown::Both);
}

/// Copy bytes both ways between `client` and `upstream` until either side closes.
fn forward(client: TcpStream, upstream: TcpStream) {
    let pipe = |mut from: TcpStream, mut into: TcpStream| {
        let _ = io::copy(&mut from, &mut into);
        let _ = from.shutdown(Shutdown::Both);
        let _ = into.shutdown(Shutdown::Both);
    };
    let (c2, u2) = (
        client.try_clone().expect("clone a socket"),
        upstream.try_clone().expect("clone a socket"),
    );
    let up = thread::spawn(move || pipe(c2, u2));
    pipe(upstream, client);
    let _ = up.join();
}
