//! The second step, with the `tls` feature: a TLS session over the TCP socket (rustls on
//! ring), its certificates loaded once per client and shared by every connection.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConnection, DigitallySignedStruct};

use super::tcp;
use crate::client::error::{Error, Phase, Result};
use crate::client::security::{Pem, TlsConfig, TlsVerify};

/// The TLS settings of a client, loaded: the rustls config (trusted roots, verifier, client
/// certificate), shared by every connection.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<rustls::ClientConfig>,
    verify: TlsVerify,
    server_name: Option<String>,
    client_auth: bool,
}

impl Tls {
    /// Load `tls`: reads the CA and client certificate files now, so that a missing or
    /// malformed file is reported before any connection is tried.
    pub(crate) fn new(tls: &TlsConfig) -> Result<Self> {
        Ok(Tls {
            config: Arc::new(tls_client_config(tls)?),
            verify: tls.verify,
            server_name: tls.server_name.clone(),
            client_auth: tls.client_cert.is_some(),
        })
    }

    /// Run the TLS handshake over `sock` (connected to `addr`) within `timeout`.
    pub(crate) fn handshake(
        &self,
        sock: TcpStream,
        addr: &str,
        host: &str,
        timeout: Duration,
    ) -> Result<TlsStream> {
        match self.verify {
            TlsVerify::Full => {}
            TlsVerify::NoHostname => log::warn!(
                "TLS to {addr}: the broker's host name is not checked (ssl.endpoint.identification.algorithm is empty)"
            ),
            TlsVerify::Insecure => log::warn!(
                "TLS to {addr}: certificate verification is OFF; anyone on the path can read and change this traffic"
            ),
        }
        let host = self.server_name.as_deref().unwrap_or(host);
        tls_handshake(
            sock,
            self.config.clone(),
            host,
            addr,
            timeout,
            self.client_auth,
        )
    }
}

/// A client TLS session over a TCP socket, driven with blocking reads and writes.
pub(crate) struct TlsStream {
    tls: ClientConnection,
    sock: BufferedSocket,
    /// Whether a client certificate was configured (to explain the broker's refusal).
    client_auth: bool,
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
    /// Bound the next socket reads (applied when a read reaches the socket).
    pub(super) fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.sock.read_timeout = timeout;
    }

    /// Bound the next socket writes.
    pub(super) fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.sock.set_write_timeout(timeout)
    }

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
    pub(super) fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
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
                if !tcp::wait_readable(&mut self.sock.sock, left)? {
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

fn read_certs(pem: &Pem, field: &'static str) -> Result<Vec<CertificateDer<'static>>> {
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

fn read_key(pem: &Pem) -> Result<PrivateKeyDer<'static>> {
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
    use crate::client::security::Pem;

    #[test]
    fn tls_files_are_checked_before_connecting() {
        let mut c = TlsConfig {
            ca: Some(Pem::File("/nonexistent/ca.pem".into())),
            ..TlsConfig::default()
        };
        let err = Tls::new(&c).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        c.ca = Some(Pem::Inline("not a certificate".into()));
        let err = Tls::new(&c).err().unwrap().to_string();
        assert!(err.contains("no certificate"), "{err}");
        // Insecure needs no roots, so these reach the client certificate and key.
        c.ca = None;
        c.verify = TlsVerify::Insecure;
        c.client_cert = Some(Pem::Inline("x".into()));
        c.client_key = Some(Pem::Inline(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        ));
        let err = Tls::new(&c).err().unwrap().to_string();
        assert!(
            err.contains("tls.client_cert") && err.contains("no certificate"),
            "{err}"
        );
        c.client_cert = Some(Pem::Inline(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        ));
        let err = Tls::new(&c).err().unwrap().to_string();
        assert!(
            err.contains("encrypted private keys are not supported"),
            "{err}"
        );
        assert!(err.contains("openssl pkcs8"), "{err}");
    }
}
