//! Byte streams for connections, the first two steps of the chain in
//! [`connect`](super::connect): a TCP socket ([`tcp`]), then, with the `tls` feature, a TLS
//! session over it ([`tls`]). Nothing here speaks Kafka.

mod stream;
mod tcp;
#[cfg(feature = "tls")]
mod tls;

use std::io;

pub use stream::{Stream, Transport};
pub(crate) use tcp::connect as tcp_connect;
#[cfg(feature = "tls")]
pub(crate) use tls::Tls;

/// Without the `tls` feature there are no TLS settings to load: `SecurityConfig::validate`
/// refuses a TLS protocol first, naming the feature.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub(crate) enum Tls {}

#[cfg(not(feature = "tls"))]
impl Tls {
    pub(crate) fn new(_: &crate::client::TlsConfig) -> crate::client::Result<Self> {
        Err(crate::client::Error::Config {
            field: "security.protocol",
            reason: "TLS is not built in: enable kpipe's `tls` cargo feature".into(),
        })
    }
}

/// Whether an I/O error carries a TLS error (an alert, a bad record).
pub(crate) fn is_tls_failure(source: &io::Error) -> bool {
    #[cfg(feature = "tls")]
    return tls::is_tls_failure(source);
    #[cfg(not(feature = "tls"))]
    {
        let _ = source;
        false
    }
}

/// A failure during or after the TLS handshake, as an error naming the cause and what to
/// change.
#[cfg(feature = "tls")]
pub(crate) use tls::tls_error;
