//! What a connection reads and writes: the [`Transport`] trait and the [`Stream`] the
//! connection steps make, plain TCP or TLS over it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::tcp;
#[cfg(feature = "tls")]
use super::tls::TlsStream;

/// A byte stream a connection can run over, with settable timeouts.
///
/// Implemented for [`TcpStream`]; a TLS or SASL wrapper implements it by delegating the
/// timeouts to the socket underneath.
pub trait Transport: Read + Write + Send {
    /// Bound the next reads (`None` blocks forever; kpipe never passes `None`).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bound the next writes.
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Wait at most `timeout` (zero: do not wait) until a read would not block, without
    /// consuming anything. `Ok(true)` also when the peer closed or the stream failed, so
    /// that the next read reports it.
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool>;
    /// Whether the bytes travel inside TLS (for error hints). Default `false`.
    fn is_tls(&self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        tcp::wait_readable(self, timeout)
    }
}

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub struct Stream(Kind);

enum Kind {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Plain TCP.
    pub(crate) fn tcp(sock: TcpStream) -> Self {
        Stream(Kind::Tcp(sock))
    }

    /// TLS over TCP.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(tls: TlsStream) -> Self {
        Stream(Kind::Tls(Box::new(tls)))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Kind::Tcp(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Kind::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Kind::Tcp(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Kind::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Kind::Tcp(s) => s.flush(),
            #[cfg(feature = "tls")]
            Kind::Tls(t) => t.flush(),
        }
    }
}

impl Transport for Stream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match &mut self.0 {
            Kind::Tcp(s) => TcpStream::set_read_timeout(s, timeout),
            #[cfg(feature = "tls")]
            Kind::Tls(t) => {
                t.set_read_timeout(timeout);
                Ok(())
            }
        }
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match &mut self.0 {
            Kind::Tcp(s) => TcpStream::set_write_timeout(s, timeout),
            #[cfg(feature = "tls")]
            Kind::Tls(t) => t.set_write_timeout(timeout),
        }
    }
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        match &mut self.0 {
            Kind::Tcp(s) => tcp::wait_readable(s, timeout),
            #[cfg(feature = "tls")]
            Kind::Tls(t) => t.wait_readable(timeout),
        }
    }
    fn is_tls(&self) -> bool {
        match &self.0 {
            Kind::Tcp(_) => false,
            #[cfg(feature = "tls")]
            Kind::Tls(_) => true,
        }
    }
}
