//! The one way a socket becomes a Kafka connection, a chain of steps, one file each:
//!
//! ```text
//!   Connector::connect(addr)
//!     1. TCP connect ───────── within connect_timeout        transport/tcp.rs
//!     2. TLS handshake ─────── within connect_timeout        transport/tls.rs (`tls` feature)
//!     3. ApiVersions ───────── within request_timeout        api_versions.rs
//!     4. SaslHandshake + SaslAuthenticate rounds,            sasl.rs (mechanisms.rs, scram.rs)
//!        each within request_timeout
//! ```
//!
//! ApiVersions comes before SASL (as in the Java client: brokers answer it unauthenticated),
//! so the SASL requests go out at negotiated versions. Every [`Cluster`](super::Cluster)
//! connection, whether to bootstrap, a partition leader or a group coordinator, goes
//! through [`Connector::connect`]. The steps below the connection (1, 2) only move bytes;
//! the ones above it (3, 4) speak Kafka over a [`Connection`] and never the other way round:
//! the connection runs step 4 again for re-authentication through the function it was
//! handed, not by knowing this module.

mod api_versions;
mod mechanisms;
mod sasl;
#[cfg(feature = "tls")]
mod scram;

use super::config::{ClientConfig, ConnectionConfig};
use super::connection::Connection;
use super::error::Result;
use super::security::{Sasl, SecurityProtocol};
use super::transport::{tcp_connect, Stream, Tls};

pub(crate) use api_versions::negotiate;

/// Builds connections as the config says: the TLS settings are loaded once (CA and client
/// certificate files read, the rustls config made), then shared by every connection.
#[derive(Clone)]
pub struct Connector {
    connection: ConnectionConfig,
    protocol: SecurityProtocol,
    tls: Option<Tls>,
    sasl: Option<Sasl>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
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
            Some(Tls::new(&security.tls)?)
        } else {
            None
        };
        Ok(Connector {
            connection: config.connection.clone(),
            protocol: security.protocol,
            tls,
            sasl: security.sasl.clone(),
        })
    }

    /// A connector for plain TCP, no authentication.
    pub fn plaintext(connection: &ConnectionConfig) -> Self {
        Connector {
            connection: connection.clone(),
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            sasl: None,
        }
    }

    /// Open a connection to `addr` (`host:port`): TCP, TLS, ApiVersions, SASL.
    pub fn connect(&self, addr: &str) -> Result<Connection> {
        let timeout = self.connection.connect_timeout;
        let sock = tcp_connect(addr, timeout)?;
        let stream = match &self.tls {
            None => Stream::tcp(sock),
            #[cfg(feature = "tls")]
            Some(tls) => Stream::tls(tls.handshake(sock, addr, host_of(addr), timeout)?),
            #[cfg(not(feature = "tls"))]
            Some(tls) => match *tls {},
        };
        let mut conn = Connection::new(stream, addr, self.connection.clone())?;
        negotiate(&mut conn)?;
        if let Some(sasl) = &self.sasl {
            sasl::authenticate(&mut conn, sasl.clone())?;
        }
        Ok(conn)
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_addresses() {
        assert_eq!(host_of("localhost:9093"), "localhost");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }

    #[test]
    fn tls_without_the_feature_is_refused_naming_it() {
        let mut c = ClientConfig::new(["127.0.0.1:1"]);
        c.security.protocol = SecurityProtocol::Ssl;
        let made = Connector::new(&c);
        if cfg!(feature = "tls") {
            assert!(made.is_ok());
        } else {
            let err = made.unwrap_err().to_string();
            assert!(err.contains("`tls` cargo feature"), "{err}");
        }
    }
}
