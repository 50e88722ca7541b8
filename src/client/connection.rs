//! One blocking connection to one broker, and the one generic request path.
//!
//! ```text
//!   send::<R>(req) ──frame──▶ [size i32][header][body] ──▶ broker
//!   receive::<R>(pending) ◀── [size i32][header: correlation id][body] ◀── broker
//! ```
//!
//! Requests may be pipelined: `send` several, then `receive` each in the order sent (Kafka
//! answers in request order on one connection). Every wait is bounded by a deadline, and a
//! connection that failed mid-request is closed and refuses further use.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::config::ConnectionConfig;
use super::error::{Error, Phase, Result};
use super::security::Sasl;
use super::transport::{is_tls_failure, Stream, Transport};
use super::versions::{api_name, client_range, BrokerVersions};

/// A request that was sent and whose response has not been read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a sent request must be received, or the connection falls out of step"]
pub struct Pending {
    correlation_id: i32,
    api_key: i16,
    version: i16,
    sent_at: Instant,
    /// When the response must have arrived.
    deadline: Instant,
}

/// The SASL step, run again when the broker's session is due to end (KIP-368).
pub(crate) type Reauthenticate<S> = fn(&mut Connection<S>, Sasl) -> Result<()>;

/// One connection to one broker. Not thread-safe by design: one thread owns it.
pub struct Connection<S: Transport = Stream> {
    stream: Option<S>,
    broker: String,
    config: ConnectionConfig,
    versions: BrokerVersions,
    next_correlation_id: i32,
    pending: VecDeque<Pending>,
    /// Response frames already read for the oldest `pending` requests (read ahead so that a
    /// re-authentication can run with nothing in flight), oldest first.
    read_ahead: VecDeque<Vec<u8>>,
    write_buf: BytesMut,
    /// The SASL credentials this connection authenticated with, and the step that runs the
    /// exchange again (re-authentication).
    sasl: Option<(Sasl, Reauthenticate<S>)>,
    /// When to re-authenticate (KIP-368), if the broker limits the session's lifetime.
    reauth_at: Option<Instant>,
    /// No request past the handshake has been answered yet (for error hints).
    fresh: bool,
    /// The broker asked (throttle_time_ms, KIP-219) that nothing be sent before this.
    throttled_until: Option<Instant>,
}

impl<S: Transport> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("broker", &self.broker)
            .field("open", &self.stream.is_some())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<S: Transport> Connection<S> {
    /// Wrap an open stream; the steps of [`connect`](super::connect) negotiate versions and
    /// authenticate over it before anything else is sent.
    pub(crate) fn new(mut stream: S, broker: &str, config: ConnectionConfig) -> Result<Self> {
        stream
            .set_write_timeout(Some(config.request_timeout))
            .map_err(|source| Error::Io {
                broker: broker.to_owned(),
                api: "ApiVersions",
                source,
            })?;
        let conn = Connection {
            stream: Some(stream),
            broker: broker.to_owned(),
            config,
            versions: BrokerVersions::default(),
            next_correlation_id: 0,
            pending: VecDeque::new(),
            read_ahead: VecDeque::new(),
            write_buf: BytesMut::with_capacity(1024),
            sasl: None,
            reauth_at: None,
            fresh: true,
            throttled_until: None,
        };
        Ok(conn)
    }

    /// Take the API version ranges the broker advertised (the ApiVersions step).
    pub(crate) fn set_versions(&mut self, versions: BrokerVersions) {
        self.versions = versions;
    }

    /// Note a completed SASL exchange (the SASL step): the connection runs `again` with the
    /// same credentials before sending anything after `reauth_at` (KIP-368).
    pub(crate) fn set_authenticated(
        &mut self,
        sasl: Sasl,
        reauth_at: Option<Instant>,
        again: Reauthenticate<S>,
    ) {
        self.sasl = Some((sasl, again));
        self.reauth_at = reauth_at;
    }

    /// Re-authenticate if the session is due to end (KIP-368): responses still owed are
    /// read ahead first, so nothing in flight is lost, then the SASL exchange runs again.
    fn reauthenticate_if_due(&mut self) -> Result<()> {
        if self.reauth_at.is_none_or(|at| Instant::now() < at) {
            return Ok(());
        }
        let Some((sasl, again)) = self.sasl.clone() else {
            return Ok(());
        };
        self.read_ahead_all()?;
        log::debug!("re-authenticating to {} (KIP-368)", self.broker);
        self.reauth_at = None;
        again(self, sasl)
    }

    /// Read every owed response frame into `read_ahead`, each within its own deadline.
    fn read_ahead_all(&mut self) -> Result<()> {
        let limit = self.config.max_response_bytes;
        while self.read_ahead.len() < self.pending.len() {
            let p = self.pending[self.read_ahead.len()];
            let stream = self.stream.as_mut().expect("checked by the caller");
            match read_frame(stream, p.deadline, limit) {
                Ok(frame) => self.read_ahead.push_back(frame),
                Err(e) => {
                    let err = self.frame_error(e, &p);
                    return Err(self.poison(err));
                }
            }
        }
        Ok(())
    }

    /// Note a response's `throttle_time_ms` (KIP-219: the broker answered at once and asks
    /// the client to send nothing more for that long, or its quota is exceeded).
    pub fn throttle(&mut self, throttle_time_ms: i32) {
        if throttle_time_ms > 0 {
            let until = Instant::now() + Duration::from_millis(throttle_time_ms as u64);
            self.throttled_until = Some(self.throttled_until.map_or(until, |t| t.max(until)));
            log::debug!(
                "{} throttles this client for {throttle_time_ms} ms",
                self.broker
            );
        }
    }

    /// Until when the broker asked for quiet, if that is still ahead. [`send`](Self::send)
    /// waits for it (at most the request timeout); a caller that must not wait checks this
    /// first.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until.filter(|t| *t > Instant::now())
    }

    /// When the connection will re-authenticate, if the broker limits its session.
    pub fn reauthentication_due(&self) -> Option<Instant> {
        self.reauth_at
    }

    /// Add the likely cause to a failure of the very first exchange: a plaintext client at
    /// a TLS listener reads a TLS record (0x15 0x03 ..) where a frame size should be, or
    /// sees the connection closed.
    pub(crate) fn hint_security(&self, err: Error) -> Error {
        let is_tls = self.stream.as_ref().is_some_and(|s| s.is_tls());
        match err {
            Error::FrameTooLarge { broker, actual, .. }
                if !is_tls && matches!((actual >> 24) & 0xff, 0x14..=0x17) && (actual >> 16) & 0xff == 3 =>
            {
                Error::Tls {
                    broker,
                    cause: "the broker answered with TLS: this listener expects TLS; use security.protocol=SSL or SASL_SSL".into(),
                }
            }
            Error::Io { broker, api, source }
                if !is_tls
                    && matches!(
                        source.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
            {
                Error::Protocol {
                    broker,
                    detail: format!("the broker closed the connection during {api} ({source}); if this listener expects TLS, use security.protocol=SSL or SASL_SSL"),
                }
            }
            other => other,
        }
    }

    /// The broker this connection talks to, `host:port`.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// How long a request waits for its response unless told otherwise.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Whether the connection is still usable (it has not failed).
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Requests sent and not yet received.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The API version ranges the broker advertised.
    pub fn broker_versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// The version that will be used for requests of type `R`: the highest both sides support,
    /// never below the Kafka 4 floor.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let key = api_key::<R>();
        let ours = client_range(key, R::VERSIONS);
        self.versions
            .choose(key, ours)
            .map_err(|(ours, theirs)| Error::UnsupportedVersion {
                broker: self.broker.clone(),
                api: api_name(key),
                ours,
                theirs,
            })
    }

    /// Wait at most `timeout` (zero: just look) for the oldest in-flight response to start
    /// arriving. `true` means [`receive`](Self::receive) will not wait long (or will report
    /// a failure); `false` with requests in flight means nothing has arrived yet.
    pub fn poll_response(&mut self, timeout: Duration) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        if !self.read_ahead.is_empty() {
            return true;
        }
        match self.stream.as_mut() {
            None => true,
            Some(s) => s.wait_readable(timeout).unwrap_or(true),
        }
    }

    /// When the oldest request in flight must have been answered.
    pub fn oldest_deadline(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.deadline)
    }

    /// Like [`request`](Self::request), but waiting up to `timeout` for the response instead
    /// of the configured request timeout (JoinGroup is held by the broker for a whole
    /// rebalance, for instance).
    pub fn request_within<R: Request>(
        &mut self,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response> {
        let version = self.version::<R>()?;
        let pending = self.send_within(req, version, timeout)?;
        self.receive::<R>(pending)
    }

    /// Send at `version`, allowing `timeout` for the response instead of the configured
    /// request timeout (for requests the broker holds, such as JoinGroup).
    pub fn send_within<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Pending> {
        let mut pending = self.send_versioned(req, version, true)?;
        pending.deadline = pending.sent_at + timeout;
        if let Some(p) = self.pending.back_mut() {
            p.deadline = pending.deadline;
        }
        Ok(pending)
    }

    /// Give the connection up: what is in flight is never read, and every later request
    /// fails with [`Error::Closed`] (for a caller that stops waiting on a held request).
    pub fn abandon(&mut self, why: &str) {
        if self.stream.take().is_some() {
            log::debug!("abandoning connection to {}: {why}", self.broker);
        }
        self.pending.clear();
        self.read_ahead.clear();
    }

    /// Send one request and wait for its response.
    pub fn request<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let pending = self.send(req)?;
        self.receive::<R>(pending)
    }

    /// Send one request at the negotiated version without waiting for the response.
    pub fn send<R: Request>(&mut self, req: &R) -> Result<Pending> {
        let version = self.version::<R>()?;
        self.send_versioned(req, version, true)
    }

    /// Send a request the broker will not answer (Produce with acks=0).
    pub fn send_without_response<R: Request>(&mut self, req: &R) -> Result<()> {
        let version = self.version::<R>()?;
        self.send_versioned(req, version, false).map(|_| ())
    }

    /// Send at an explicit version. `expect_response` false means the broker sends nothing back.
    pub fn send_versioned<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        expect_response: bool,
    ) -> Result<Pending> {
        let api = api_name(api_key::<R>());
        if self.stream.is_none() {
            return Err(Error::Closed {
                broker: self.broker.clone(),
            });
        }
        if let Some(until) = self.throttled_until.take() {
            let wait = until
                .saturating_duration_since(Instant::now())
                .min(self.config.request_timeout);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        if self.reauth_at.is_some()
            && R::KEY != ApiKey::SaslHandshake as i16
            && R::KEY != ApiKey::SaslAuthenticate as i16
        {
            self.reauthenticate_if_due()?;
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.write_buf.clear();
        if let Err(e) = encode_request(
            &mut self.write_buf,
            req,
            version,
            correlation_id,
            &self.config.client_id,
        ) {
            // Nothing was written: the connection is still in step.
            return Err(Error::Misuse(format!(
                "cannot encode {api} v{version} for {}: {e}",
                self.broker
            )));
        }
        let stream = self.stream.as_mut().expect("checked above");
        if let Err(source) = stream
            .write_all(&self.write_buf)
            .and_then(|()| stream.flush())
        {
            let err = io_error(
                source,
                &self.broker,
                api,
                Phase::Write,
                self.config.request_timeout,
            );
            return Err(self.poison(err));
        }
        let pending = Pending {
            correlation_id,
            api_key: R::KEY,
            version,
            sent_at: Instant::now(),
            deadline: Instant::now() + self.config.request_timeout,
        };
        if expect_response {
            self.pending.push_back(pending);
        }
        Ok(pending)
    }

    /// Read and decode the response to `pending`, which must be the oldest request in flight.
    pub fn receive<R: Request>(&mut self, pending: Pending) -> Result<R::Response> {
        let header_version = <R::Response as HeaderVersion>::header_version(pending.version);
        let mut body = self.receive_body(pending, header_version)?;
        self.decode(&mut body, pending.version, api_name(api_key::<R>()))
    }

    pub(crate) fn decode<T: Decodable>(
        &mut self,
        body: &mut Bytes,
        version: i16,
        api: &str,
    ) -> Result<T> {
        match decode_exact::<T>(body, version) {
            Ok(v) => Ok(v),
            Err(detail) => {
                let err = Error::Protocol {
                    broker: self.broker.clone(),
                    detail: format!("cannot decode {api} v{version} response: {detail}"),
                };
                Err(self.poison(err))
            }
        }
    }

    /// Read one response frame for `pending` and return its body (after the header).
    pub(crate) fn receive_body(&mut self, pending: Pending, header_version: i16) -> Result<Bytes> {
        let api = ApiKey::try_from(pending.api_key).map_or("request", api_name);
        if self.stream.is_none() {
            return Err(Error::Closed {
                broker: self.broker.clone(),
            });
        }
        match self.pending.front() {
            Some(front) if front.correlation_id == pending.correlation_id => {}
            _ => {
                return Err(Error::Misuse(format!(
                    "{api} response to {} awaited out of order (responses arrive in request order)",
                    self.broker
                )))
            }
        }
        let frame = match self.read_ahead.pop_front() {
            Some(frame) => frame,
            None => {
                let limit = self.config.max_response_bytes;
                let stream = self.stream.as_mut().expect("checked above");
                // A response read after its deadline (a prefetched fetch whose records took
                // the caller long) was still in time if it is already arriving: only
                // waiting for one that has not begun is a timeout.
                let mut deadline = pending.deadline;
                let now = Instant::now();
                if now >= deadline && stream.wait_readable(Duration::ZERO).unwrap_or(false) {
                    deadline = now + self.config.request_timeout;
                }
                match read_frame(stream, deadline, limit) {
                    Ok(frame) => frame,
                    Err(e) => {
                        let err = self.frame_error(e, &pending);
                        return Err(self.poison(err));
                    }
                }
            }
        };
        self.pending.pop_front();
        if pending.api_key != ApiKey::ApiVersions as i16 {
            self.fresh = false;
        }
        let mut frame = Bytes::from(frame);
        let header = match ResponseHeader::decode(&mut frame, header_version) {
            Ok(h) => h,
            Err(e) => {
                let err = Error::Protocol {
                    broker: self.broker.clone(),
                    detail: format!("cannot decode {api} response header: {e}"),
                };
                return Err(self.poison(err));
            }
        };
        if header.correlation_id != pending.correlation_id {
            let err = Error::Protocol {
                broker: self.broker.clone(),
                detail: format!(
                    "{api} response has correlation id {}, expected {}",
                    header.correlation_id, pending.correlation_id
                ),
            };
            return Err(self.poison(err));
        }
        Ok(frame)
    }

    fn frame_error(&self, e: FrameError, pending: &Pending) -> Error {
        let api = ApiKey::try_from(pending.api_key).map_or("request", api_name);
        match e {
            FrameError::Io(source)
                if self.fresh
                    && self.sasl.is_none()
                    && pending.api_key != ApiKey::ApiVersions as i16
                    && pending.api_key != ApiKey::SaslHandshake as i16
                    && (closed_before_answer(&source)
                        || source.kind() == io::ErrorKind::ConnectionReset) =>
            {
                Error::Protocol {
                    broker: self.broker.clone(),
                    detail: format!("the broker closed the connection at the first {api} request ({source}); if this listener requires SASL, use security.protocol=SASL_PLAINTEXT or SASL_SSL with credentials"),
                }
            }
            FrameError::Io(source) => io_error(
                source,
                &self.broker,
                api,
                Phase::Read,
                pending.deadline.saturating_duration_since(pending.sent_at),
            ),
            FrameError::TooLarge(actual) => Error::FrameTooLarge {
                broker: self.broker.clone(),
                limit: self.config.max_response_bytes,
                actual,
            },
        }
    }

    /// Close the connection after a failure; it is never reused.
    pub(crate) fn poison(&mut self, err: Error) -> Error {
        if self.stream.take().is_some() {
            log::debug!("closing connection to {}: {err}", self.broker);
        }
        self.pending.clear();
        self.read_ahead.clear();
        err
    }
}

/// When to re-authenticate a session of `lifetime_ms` that started at `started`: after 85 to
/// 95% of it, spread so that connections opened together do not all renew at once (the
/// Java client does the same).
pub(crate) fn reauth_time(started: Instant, lifetime_ms: i64) -> Instant {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let share = 0.85 + 0.10 * f64::from(nanos % 1000) / 1000.0;
    started + Duration::from_millis((lifetime_ms as f64 * share) as u64)
}

pub(super) fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("every Request type has a known key")
}

/// Map an I/O error to a timeout (naming the phase) or a broken connection.
fn io_error(
    source: io::Error,
    broker: &str,
    api: &'static str,
    phase: Phase,
    after: Duration,
) -> Error {
    if is_tls_failure(&source) {
        #[cfg(feature = "tls")]
        return super::transport::tls_error(broker, broker, &source);
    }
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
            phase,
            broker: broker.to_owned(),
            api: Some(api),
            after,
        },
        _ => Error::Io {
            broker: broker.to_owned(),
            api,
            source,
        },
    }
}

/// Encode `[size][request header][body]` into `buf`.
pub(crate) fn encode_request<R: Request>(
    buf: &mut BytesMut,
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> std::result::Result<(), String> {
    let start = buf.len();
    buf.put_i32(0);
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_owned()));
    header
        .encode(buf, R::header_version(version))
        .map_err(|e| e.to_string())?;
    req.encode(buf, version).map_err(|e| e.to_string())?;
    let size = buf.len() - start - 4;
    let size = i32::try_from(size).map_err(|_| format!("request of {size} bytes is too large"))?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Decode a whole body, rejecting trailing bytes.
pub(crate) fn decode_exact<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    let value = T::decode(body, version).map_err(|e| e.to_string())?;
    if body.has_remaining() {
        return Err(format!(
            "{} trailing bytes after the body",
            body.remaining()
        ));
    }
    Ok(value)
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream failed, timed out or ended early.
    Io(io::Error),
    /// The announced size is negative or over the limit (the size is given).
    TooLarge(i64),
}

/// Read one `[size i32][payload]` frame, every read bounded by `deadline`.
pub(crate) fn read_frame<S: Transport + ?Sized>(
    stream: &mut S,
    deadline: Instant,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut size = [0u8; 4];
    read_exact_by(stream, &mut size, deadline, true).map_err(FrameError::Io)?;
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > limit {
        return Err(FrameError::TooLarge(size.into()));
    }
    let mut frame = vec![0u8; size as usize];
    read_exact_by(stream, &mut frame, deadline, false).map_err(FrameError::Io)?;
    Ok(frame)
}

/// The peer closed the connection where a response should start (carried inside an
/// `UnexpectedEof` I/O error, to tell it from a frame cut short).
#[derive(Debug)]
struct ClosedBeforeAnswer;

impl std::fmt::Display for ClosedBeforeAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the broker closed the connection without answering")
    }
}

impl std::error::Error for ClosedBeforeAnswer {}

fn closed_before_answer(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<ClosedBeforeAnswer>())
}

/// Fill `buf` by `deadline`. `frame_start`: `buf` begins a frame, so an end of stream before
/// its first byte is [`ClosedBeforeAnswer`].
fn read_exact_by<S: Transport + ?Sized>(
    stream: &mut S,
    mut buf: &mut [u8],
    deadline: Instant,
    frame_start: bool,
) -> io::Result<()> {
    let total = buf.len();
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) if frame_start && buf.len() == total => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    ClosedBeforeAnswer,
                ))
            }
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection mid-frame",
                ))
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{
        ApiVersionsResponse, MetadataRequest, MetadataResponse, ResponseHeader,
    };
    use std::io::{Cursor, Read, Write};

    /// An in-memory transport: reads come from `input`, writes go to `output`.
    pub(crate) struct Memory {
        pub input: Cursor<Vec<u8>>,
        pub output: Vec<u8>,
    }

    impl Read for Memory {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Transport for Memory {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn wait_readable(&mut self, _: Duration) -> io::Result<bool> {
            Ok(self.input.position() < self.input.get_ref().len() as u64)
        }
        fn set_write_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    pub(crate) fn frame<T: Encodable + HeaderVersion>(
        correlation_id: i32,
        body: &T,
        version: i16,
    ) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header.encode(&mut buf, T::header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        let mut out = (buf.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub(crate) fn api_versions(ranges: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
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

    fn connect_with(after_handshake: &[u8]) -> Result<Connection<Memory>> {
        let resp = api_versions(&[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)]);
        let mut input = frame(0, &resp, 4);
        input.extend_from_slice(after_handshake);
        let mem = Memory {
            input: Cursor::new(input),
            output: Vec::new(),
        };
        let mut conn = Connection::new(mem, "mem:1", ConnectionConfig::default())?;
        crate::client::connect::negotiate(&mut conn)?;
        Ok(conn)
    }

    #[test]
    fn handshake_negotiates_and_requests_round_trip() {
        let mut md = MetadataResponse::default();
        md.controller_id = 7.into();
        let conn = connect_with(&frame(1, &md, 12)).unwrap();
        let mut conn = conn;
        assert_eq!(conn.version::<MetadataRequest>().unwrap(), 12);
        let got = conn.request(&MetadataRequest::default()).unwrap();
        assert_eq!(got.controller_id.0, 7);
        assert!(conn.is_open());
        // Two frames written, each starting with its size.
        let out = &conn.stream.as_ref().unwrap().output;
        let first = i32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        let second = i32::from_be_bytes(out[4 + first..8 + first].try_into().unwrap()) as usize;
        assert_eq!(out.len(), 8 + first + second);
    }

    #[test]
    fn a_response_read_after_its_deadline_counts_if_it_had_arrived() {
        let mut md = MetadataResponse::default();
        md.controller_id = 3.into();
        let mut conn = connect_with(&frame(1, &md, 12)).unwrap();
        // Sent with a deadline long gone (a prefetch whose records took the caller long).
        let pending = conn
            .send_within(&MetadataRequest::default(), 12, Duration::ZERO)
            .unwrap();
        let got = conn.receive::<MetadataRequest>(pending).unwrap();
        assert_eq!(got.controller_id.0, 3);
        // One that never came is still a timeout.
        let pending = conn
            .send_within(&MetadataRequest::default(), 12, Duration::ZERO)
            .unwrap();
        let err = conn.receive::<MetadataRequest>(pending).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }

    #[test]
    fn falls_back_when_broker_answers_unsupported_version() {
        let mut old = api_versions(&[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 0, 9)]);
        old.error_code = 35;
        let mut input = frame(0, &old, 0);
        let mut ok = api_versions(&[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 0, 9)]);
        ok.error_code = 0;
        input.extend(frame(1, &ok, 2));
        let mem = Memory {
            input: Cursor::new(input),
            output: Vec::new(),
        };
        let mut conn = Connection::new(mem, "mem:1", ConnectionConfig::default()).unwrap();
        crate::client::connect::negotiate(&mut conn).unwrap();
        assert_eq!(conn.version::<MetadataRequest>().unwrap(), 9);
    }

    #[test]
    fn no_common_version_names_the_api_and_both_ranges() {
        let conn = connect_with(&[]).unwrap();
        let err = conn
            .version::<kafka_protocol::messages::ProduceRequest>()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::UnsupportedVersion { api: "Produce", .. }),
            "{text}"
        );
        assert!(text.contains("3..13") && text.contains("none"), "{text}");
    }

    #[test]
    fn wrong_correlation_id_poisons_the_connection() {
        let md = MetadataResponse::default();
        let mut conn = connect_with(&frame(99, &md, 12)).unwrap();
        let err = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(err.to_string().contains("correlation id 99"), "{err}");
        assert!(!conn.is_open());
        let again = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(matches!(again, Error::Closed { .. }), "{again}");
    }

    #[test]
    fn truncated_oversized_and_garbage_frames_are_errors() {
        // Truncated: announces 100 bytes, sends 3.
        let mut conn = connect_with(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
        let err = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        // Oversized: announces 2 GiB.
        let mut conn = connect_with(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
        let err = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    actual: 2147483647,
                    ..
                }
            ),
            "{err}"
        );
        // Negative size.
        let mut conn = connect_with(&[0xff, 0xff, 0xff, 0xfe]).unwrap();
        let err = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { actual: -2, .. }),
            "{err}"
        );
        // Garbage body with the right correlation id.
        let mut conn = connect_with(&[0, 0, 0, 6, 0, 0, 0, 1, 0xff, 0xff]).unwrap();
        let err = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(!conn.is_open());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let md = MetadataResponse::default();
        let mut f = frame(1, &md, 12);
        f.push(0);
        let size = i32::from_be_bytes(f[..4].try_into().unwrap()) + 1;
        f[..4].copy_from_slice(&size.to_be_bytes());
        let mut conn = connect_with(&f).unwrap();
        let err = conn.request(&MetadataRequest::default()).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn a_throttled_connection_sends_nothing_before_the_time_is_up() {
        let md = MetadataResponse::default();
        let mut conn = connect_with(&frame(1, &md, 12)).unwrap();
        assert!(conn.throttled_until().is_none());
        conn.throttle(0);
        assert!(conn.throttled_until().is_none(), "zero is no throttle");
        conn.throttle(60);
        let until = conn.throttled_until().expect("throttled");
        let pending = conn.send(&MetadataRequest::default()).unwrap();
        assert!(
            Instant::now() >= until,
            "the request went out only after the broker's throttle time"
        );
        assert!(conn.throttled_until().is_none());
        conn.receive::<MetadataRequest>(pending).unwrap();
    }

    #[test]
    fn pipelined_responses_must_be_read_in_order() {
        let md = MetadataResponse::default();
        let mut input = frame(1, &md, 12);
        input.extend(frame(2, &md, 12));
        let mut conn = connect_with(&input).unwrap();
        let first = conn.send(&MetadataRequest::default()).unwrap();
        let second = conn.send(&MetadataRequest::default()).unwrap();
        assert_eq!(conn.in_flight(), 2);
        assert!(conn.receive::<MetadataRequest>(second).is_err());
        assert!(
            conn.is_open(),
            "asking out of order is a caller error, not a broken stream"
        );
        conn.receive::<MetadataRequest>(first).unwrap();
        conn.receive::<MetadataRequest>(second).unwrap();
        assert_eq!(conn.in_flight(), 0);
    }
}
