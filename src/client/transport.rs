//! The one way a socket becomes a Kafka connection: TCP, then TLS if configured, then
//! ApiVersions, then SASL if configured.
//!
//! ```text
//!   Connector::connect(addr)
//!     TCP connect ─────────── within connect_timeout        Stream::Tcp
//!     TLS handshake ───────── within connect_timeout        Stream::Tls (rustls, ring)
//!     ApiVersions ─────────── within request_timeout        Connection
//!     SaslHandshake + SaslAuthenticate rounds, each within request_timeout
//! ```
//!
//! ApiVersions comes before SASL (as in the Java client: brokers answer it unauthenticated),
//! so the SASL requests go out at negotiated versions. Every [`Cluster`](super::Cluster)
//! connection, whether to bootstrap, a partition leader or a group coordinator, goes
//! through [`Connector::connect`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConnection, DigitallySignedStruct};

use super::config::{ClientConfig, ConnectionConfig};
use super::connection::{Connection, Transport};
use super::error::{Error, Phase, Result};
use super::security::{Sasl, SecurityProtocol, TlsConfig, TlsVerify};

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

/// A client TLS session over a TCP socket, driven with blocking reads and writes.
pub struct TlsStream {
    tls: ClientConnection,
    sock: BufferedSocket,
    /// Whether a client certificate was configured (to explain the broker's refusal).
    client_auth: bool,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

impl Transport for Stream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Tls(t) => {
                t.sock.read_timeout = timeout;
                Ok(())
            }
        }
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Tls(t) => t.sock.sock.set_write_timeout(timeout),
        }
    }
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        match self {
            Stream::Tcp(s) => Transport::wait_readable(s, timeout),
            Stream::Tls(t) => t.wait_readable(timeout),
        }
    }
    fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // No plaintext buffered yet: read more records below.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let n = self.tls.read_tls(&mut self.sock)?;
            self.process()?;
            if n == 0 {
                // The peer closed: whatever is buffered, then EOF (or an error if it did
                // not say close_notify).
                return match self.tls.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tls.writer().write(buf)?;
        self.write_pending()?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tls.writer().flush()?;
        self.write_pending()
    }
}

impl TlsStream {
    fn write_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// Decrypt what was read; a TLS error (an alert from the broker, say) becomes an I/O
    /// error carrying the rustls error, after our own alert went out.
    fn process(&mut self) -> io::Result<rustls::IoState> {
        match self.tls.process_new_packets() {
            Ok(state) => {
                // Post-handshake messages (key updates) may need an answer.
                self.write_pending()?;
                Ok(state)
            }
            Err(e) => {
                let _ = self.write_pending();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    explain_refusal(e, self.client_auth),
                ))
            }
        }
    }

    /// Readiness from the TLS session, not the socket: decrypted bytes may already be
    /// buffered with nothing left on the socket, and socket bytes may be records (session
    /// tickets) that carry no response.
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = match self.process() {
                Ok(s) => s,
                Err(_) => return Ok(true), // the next read reports it
            };
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                return Ok(true);
            }
            // Nothing decrypted yet: wait for the socket (unless bytes read earlier are
            // waiting), then take what it has without blocking, and look again. A partial
            // record waits for its rest, within the bound.
            if !self.sock.has_buffered() {
                let left = deadline.saturating_duration_since(Instant::now());
                if !Transport::wait_readable(&mut self.sock.sock, left)? {
                    return Ok(false);
                }
            }
            let read = self.sock.read_nonblocking(&mut self.tls);
            match read {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(true),
            }
        }
    }
}

/// The TCP socket under a TLS session, with a read buffer: rustls asks for about 4 KiB per
/// read, so a large fetch response would cost a system call (and a timeout update) per
/// 4 KiB; this reads up to 64 KiB at a time and applies a new read timeout only when it
/// actually reads from the socket.
struct BufferedSocket {
    sock: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The timeout the next socket read must have.
    read_timeout: Option<Duration>,
    /// The timeout last set on the socket.
    applied: Option<Option<Duration>>,
}

const SOCKET_READ_BUFFER: usize = 64 << 10;

impl BufferedSocket {
    fn new(sock: TcpStream) -> Self {
        BufferedSocket {
            sock,
            buf: vec![0; SOCKET_READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            read_timeout: None,
            applied: None,
        }
    }

    fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Feed `tls` what is buffered or what the socket has now, without blocking.
    fn read_nonblocking(&mut self, tls: &mut ClientConnection) -> io::Result<usize> {
        if self.has_buffered() {
            return tls.read_tls(self);
        }
        self.sock.set_nonblocking(true)?;
        let read = tls.read_tls(self);
        self.sock.set_nonblocking(false)?;
        read
    }
}

impl Read for BufferedSocket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.has_buffered() {
            if self.applied != Some(self.read_timeout) {
                self.sock.set_read_timeout(self.read_timeout)?;
                self.applied = Some(self.read_timeout);
            }
            self.end = self.sock.read(&mut self.buf)?;
            self.start = 0;
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl Write for BufferedSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Builds connections as the config says: the TLS settings are loaded once (CA and client
/// certificate files read, the rustls config made), then shared by every connection.
#[derive(Clone)]
pub struct Connector {
    connection: ConnectionConfig,
    protocol: SecurityProtocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    tls_verify: TlsVerify,
    server_name: Option<String>,
    client_auth: bool,
    sasl: Option<Sasl>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("protocol", &self.protocol)
            .field("tls_verify", &self.tls_verify)
            .field("sasl", &self.sasl.as_ref().map(Sasl::mechanism))
            .finish()
    }
}

impl Connector {
    /// Prepare connections for `config` (validated): reads the TLS files now, so a missing or
    /// malformed file is reported before any connection is tried.
    pub fn new(config: &ClientConfig) -> Result<Self> {
        let security = &config.security;
        security.validate()?;
        let tls = if security.protocol.uses_tls() {
            Some(Arc::new(tls_client_config(&security.tls)?))
        } else {
            None
        };
        Ok(Connector {
            connection: config.connection.clone(),
            protocol: security.protocol,
            tls,
            tls_verify: security.tls.verify,
            server_name: security.tls.server_name.clone(),
            client_auth: security.tls.client_cert.is_some(),
            sasl: security.sasl.clone(),
        })
    }

    /// A connector for plain TCP, no authentication.
    pub fn plaintext(connection: &ConnectionConfig) -> Self {
        Connector {
            connection: connection.clone(),
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            tls_verify: TlsVerify::Full,
            server_name: None,
            client_auth: false,
            sasl: None,
        }
    }

    /// The per-connection settings.
    pub fn connection_config(&self) -> &ConnectionConfig {
        &self.connection
    }

    /// Open a connection to `addr` (`host:port`): TCP, TLS, ApiVersions, SASL.
    pub fn connect(&self, addr: &str) -> Result<Connection> {
        let timeout = self.connection.connect_timeout;
        let sock = tcp_connect(addr, timeout)?;
        let stream = match &self.tls {
            None => Stream::Tcp(sock),
            Some(tls) => {
                match self.tls_verify {
                    TlsVerify::Full => {}
                    TlsVerify::NoHostname => log::warn!(
                        "TLS to {addr}: the broker's host name is not checked (ssl.endpoint.identification.algorithm is empty)"
                    ),
                    TlsVerify::Insecure => log::warn!(
                        "TLS to {addr}: certificate verification is OFF; anyone on the path can read and change this traffic"
                    ),
                }
                let host = self
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host_of(addr).to_owned());
                Stream::Tls(Box::new(tls_handshake(
                    sock,
                    tls.clone(),
                    &host,
                    addr,
                    timeout,
                    self.client_auth,
                )?))
            }
        };
        let mut conn = Connection::handshake(stream, addr, self.connection.clone())?;
        if let Some(sasl) = &self.sasl {
            conn.authenticate(sasl.clone())?;
        }
        Ok(conn)
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

enum Resolve {
    Failed(io::Error),
    TimedOut,
}

/// The addresses `addr` names, within `timeout`. An IP address needs no lookup; a name is
/// looked up on a thread of its own, as getaddrinfo has no timeout: one that hangs (a DNS
/// server that does not answer) is left to finish on its own, and the connect fails in time.
fn resolve(addr: &str, timeout: Duration) -> std::result::Result<Vec<SocketAddr>, Resolve> {
    if let Ok(sock) = addr.parse::<SocketAddr>() {
        return Ok(vec![sock]);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let name = addr.to_owned();
    std::thread::Builder::new()
        .name("kpipe-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(Resolve::Failed)?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(Resolve::Failed(e)),
        Err(_) => Err(Resolve::TimedOut),
    }
}

pub(crate) fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let connect_err = |source| Error::Connect {
        addr: addr.to_owned(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let addrs = resolve(addr, timeout).map_err(|e| match e {
        Resolve::Failed(source) => connect_err(source),
        Resolve::TimedOut => Error::Timeout {
            phase: Phase::Resolve,
            broker: addr.to_owned(),
            api: None,
            after: timeout,
        },
    })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    // Try every address the name resolves to (localhost may be ::1 first), all within one
    // connect timeout.
    for sock in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&sock, left) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(connect_err)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    if matches!(
        last.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) || Instant::now() >= deadline
    {
        return Err(Error::Timeout {
            phase: Phase::Connect,
            broker: addr.to_owned(),
            api: None,
            after: timeout,
        });
    }
    Err(connect_err(last))
}

fn tls_handshake(
    mut sock: TcpStream,
    config: Arc<rustls::ClientConfig>,
    host: &str,
    addr: &str,
    timeout: Duration,
    client_auth: bool,
) -> Result<TlsStream> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| Error::Config {
        field: "tls.server_name",
        reason: format!("{host:?} is neither a DNS name nor an IP address"),
    })?;
    let mut tls = ClientConnection::new(config, name).map_err(|e| Error::Tls {
        broker: addr.to_owned(),
        cause: e.to_string(),
    })?;
    // Records are encrypted as whole requests; the socket write bounds what is queued.
    tls.set_buffer_limit(None);
    let deadline = Instant::now() + timeout;
    while tls.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = Error::Timeout {
            phase: Phase::TlsHandshake,
            broker: addr.to_owned(),
            api: None,
            after: timeout,
        };
        if left.is_zero() {
            return Err(timed_out);
        }
        let set = sock
            .set_read_timeout(Some(left))
            .and_then(|()| sock.set_write_timeout(Some(left)));
        if let Err(source) = set.and_then(|()| tls.complete_io(&mut sock).map(|_| ())) {
            let kind = source.kind();
            if matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                return Err(timed_out);
            }
            let source = match source.into_inner().map(|e| e.downcast::<rustls::Error>()) {
                Some(Ok(e)) => {
                    io::Error::new(io::ErrorKind::InvalidData, explain_refusal(*e, client_auth))
                }
                Some(Err(other)) => io::Error::other(other),
                None => io::Error::from(kind),
            };
            return Err(tls_error(addr, host, &source));
        }
    }
    Ok(TlsStream {
        tls,
        sock: BufferedSocket::new(sock),
        client_auth,
    })
}

/// Turn a failure during or after the TLS handshake into an error that names the cause and
/// what to change.
pub(crate) fn tls_error(addr: &str, host: &str, source: &io::Error) -> Error {
    let cause = match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(e) => describe_tls(e, host),
        None if source.kind() == io::ErrorKind::UnexpectedEof => {
            "the broker closed the connection during the TLS handshake; is this a plaintext listener? then use security.protocol=PLAINTEXT or SASL_PLAINTEXT".to_owned()
        }
        None if source.kind() == io::ErrorKind::ConnectionReset => {
            "the broker reset the connection during the TLS handshake; is this a plaintext listener? then use security.protocol=PLAINTEXT or SASL_PLAINTEXT".to_owned()
        }
        None => source.to_string(),
    };
    Error::Tls {
        broker: addr.to_owned(),
        cause,
    }
}

/// With TLS 1.3 a broker that requires a client certificate refuses a client without one
/// only after the handshake, with a generic alert: name the likely cause.
fn explain_refusal(e: rustls::Error, client_auth: bool) -> rustls::Error {
    match e {
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::HandshakeFailure,
        ) if !client_auth => rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        other => other,
    }
}

/// Whether an I/O error carries a TLS error (an alert, a bad record).
pub(crate) fn is_tls_failure(source: &io::Error) -> bool {
    source
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
}

fn describe_tls(e: &rustls::Error, host: &str) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => "the broker's certificate is not signed by a CA kpipe trusts; set ssl.truststore.location (--tls-ca) to the CA that signed it".to_owned(),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the broker's certificate is not valid for {host:?} (hostname mismatch); connect by a name the certificate holds, or set tls.server_name to one"),
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the broker's certificate has expired".to_owned(),
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the broker's certificate is not valid yet (check the clocks)".to_owned(),
        E::InvalidCertificate(other) => format!("the broker's certificate is invalid: {other:?}"),
        E::AlertReceived(AlertDescription::CertificateRequired) => "the broker requires a client certificate (mutual TLS); set ssl.keystore.location, or --tls-cert and --tls-key".to_owned(),
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) => "the broker rejected the client certificate (not signed by a CA it trusts, or not for client authentication)".to_owned(),
        E::AlertReceived(AlertDescription::HandshakeFailure) => "the broker refused the TLS handshake (no common cipher suite or protocol version, or a client certificate it requires is missing)".to_owned(),
        E::AlertReceived(a) => format!("the broker sent the TLS alert {a:?}"),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the broker did not answer in TLS; is this a plaintext listener? then use security.protocol=PLAINTEXT or SASL_PLAINTEXT".to_owned()
        }
        other => other.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `tls`: trusted roots, the verifier, the client certificate.
fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            field: "tls",
            reason: e.to_string(),
        })?;
    // Insecure checks no chain, so it needs no trusted roots (nor loads the system's).
    let chain = match tls.verify {
        TlsVerify::Insecure => None,
        TlsVerify::Full | TlsVerify::NoHostname => {
            let roots = Arc::new(root_store(tls)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Config {
                    field: "tls.ca",
                    reason: format!("cannot use the trusted certificates: {e}"),
                })?;
            Some(webpki)
        }
    };
    let builder = match (tls.verify, chain) {
        (TlsVerify::Full, Some(webpki)) => builder.with_webpki_verifier(webpki),
        (_, chain) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                chain,
                provider: provider.clone(),
            })),
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, "tls.client_cert")?;
            let key = read_key(key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::Config {
                    field: "tls.client_key",
                    reason: format!(
                        "the client certificate and key do not make a usable pair: {e}"
                    ),
                })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn root_store(tls: &TlsConfig) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(pem) => {
            for cert in read_certs(pem, "tls.ca")? {
                roots.add(cert).map_err(|e| Error::Config {
                    field: "tls.ca",
                    reason: format!("{}: a certificate is unusable as a CA: {e}", pem.origin()),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::Config {
                    field: "tls.ca",
                    reason: "no CA given and no system root certificates found; set ssl.truststore.location (--tls-ca) to the CA that signed the brokers' certificates".into(),
                });
            }
        }
    }
    Ok(roots)
}

fn read_certs(
    pem: &super::security::Pem,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = pem.read(field)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config {
            field,
            reason: format!("{}: not valid PEM: {e:?}", pem.origin()),
        })?;
    if certs.is_empty() {
        return Err(Error::Config {
            field,
            reason: format!(
                "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                pem.origin()
            ),
        });
    }
    Ok(certs)
}

fn read_key(pem: &super::security::Pem) -> Result<PrivateKeyDer<'static>> {
    let field = "tls.client_key";
    let bytes = pem.read(field)?;
    if bytes
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(Error::Config {
            field,
            reason: format!("{}: encrypted private keys are not supported; decrypt it with `openssl pkcs8 -in KEY.pem -out key-plain.pem` and keep that file private", pem.origin()),
        });
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::Config {
        field,
        reason: format!(
            "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM expected): {e:?}",
            pem.origin()
        ),
    })
}

/// A verifier that skips the host name check (with `chain`) or everything (without), while still
/// checking the handshake signatures.
#[derive(Debug)]
struct Relaxed {
    /// Checks the chain (and the host name, whose failure is forgiven); `None`: no check.
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_within_a_bound_and_addresses_need_no_lookup() {
        let direct = resolve("127.0.0.1:9092", Duration::ZERO).ok().unwrap();
        assert_eq!(direct, ["127.0.0.1:9092".parse().unwrap()]);
        let named = resolve("localhost:9092", Duration::from_secs(5))
            .ok()
            .unwrap();
        assert!(named.iter().all(|a| a.ip().is_loopback()), "{named:?}");
        assert!(matches!(
            resolve("no-port-here", Duration::from_secs(5)),
            Err(Resolve::Failed(_))
        ));
    }

    #[test]
    fn hosts_come_from_addresses() {
        assert_eq!(host_of("localhost:9093"), "localhost");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }

    #[test]
    fn tls_files_are_checked_before_connecting() {
        let mut c = ClientConfig::new(["127.0.0.1:1"]);
        c.security.protocol = SecurityProtocol::Ssl;
        c.security.tls.ca = Some(super::super::security::Pem::File(
            "/nonexistent/ca.pem".into(),
        ));
        let err = Connector::new(&c).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        c.security.tls.ca = Some(super::super::security::Pem::Inline(
            "not a certificate".into(),
        ));
        let err = Connector::new(&c).unwrap_err().to_string();
        assert!(err.contains("no certificate"), "{err}");
        // Insecure needs no roots, so these reach the client certificate and key.
        c.security.tls.ca = None;
        c.security.tls.verify = TlsVerify::Insecure;
        c.security.tls.client_cert = Some(super::super::security::Pem::Inline("x".into()));
        c.security.tls.client_key = Some(super::super::security::Pem::Inline(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        ));
        let err = Connector::new(&c).unwrap_err().to_string();
        assert!(
            err.contains("tls.client_cert") && err.contains("no certificate"),
            "{err}"
        );
        c.security.tls.client_cert = Some(super::super::security::Pem::Inline(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        ));
        let err = Connector::new(&c).unwrap_err().to_string();
        assert!(
            err.contains("encrypted private keys are not supported"),
            "{err}"
        );
        assert!(err.contains("openssl pkcs8"), "{err}");
    }
}
