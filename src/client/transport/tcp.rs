//! The first step of a connection: a TCP socket to the broker, within the connect timeout
//! (the name resolved on a thread of its own, every address it resolves to tried).

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::client::error::{Error, Phase, Result};

/// Wait at most `timeout` (zero: do not wait) until a read of `sock` would not block,
/// without consuming anything; `Ok(true)` also when the peer closed or the socket failed,
/// so that the next read reports it.
pub(super) fn wait_readable(sock: &mut TcpStream, timeout: Duration) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    let peeked = if timeout.is_zero() {
        // SO_RCVTIMEO rounds up to a scheduler tick: poll without blocking instead.
        sock.set_nonblocking(true)?;
        let r = sock.peek(&mut probe);
        sock.set_nonblocking(false)?;
        r
    } else {
        sock.set_read_timeout(Some(timeout))?;
        sock.peek(&mut probe)
    };
    match peeked {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(_) => Ok(true),
    }
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

/// Open a TCP connection to `addr` (`host:port`) within `timeout`, with Nagle off.
pub(crate) fn connect(addr: &str, timeout: Duration) -> Result<TcpStream> {
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
}
