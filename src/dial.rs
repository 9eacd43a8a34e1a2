//! Socket rules of this crate's TCP connections: the check every dialer (peer links, the client,
//! `quorumkv-cli status`) makes on the socket it connected, and the keepalive every accepted
//! connection gets.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::SockRef;

/// Fails, resetting `socket`, when the dial connected it to itself.
///
/// Dialling a port of this host that nothing listens on, the kernel may pick that same port as
/// the local one, and the two ends meet (TCP's simultaneous open): every request written comes
/// back as its own reply. Ports in the kernel's ephemeral range (32768-60999 on Linux by default)
/// are the ones at risk, such as a stopped server that had been given port 0. The socket is reset
/// rather than closed: a plain close would hold the port in TIME_WAIT for a minute, refusing its
/// owner's restart. The error is `ConnectionRefused`, as if the dial had found nobody.
pub fn refuse_self_connection(socket: &impl AsFd) -> io::Result<()> {
    let socket = SockRef::from(socket);
    if socket.local_addr()?.as_socket() != socket.peer_addr()?.as_socket() {
        return Ok(());
    }
    let _ = socket.set_linger(Some(Duration::ZERO));
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "connected to itself: nothing listens on that port of this host",
    ))
}

/// Idle time before the first keepalive probe of an accepted connection, then the time between
/// probes and how many may go unanswered: an idle connection whose host vanished (power lost, a
/// NAT entry dropped) is found gone in about two minutes, not never, so what it held is let go.
/// (One with replies unacknowledged is ended by TCP's retransmission limit instead, about 15
/// minutes with Linux's defaults.)
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// Turns TCP keepalive on for `socket` ([`KEEPALIVE_IDLE`]); a connection whose other end stays
/// silent to the probes is then closed by the kernel, and its reader sees an error.
pub fn keep_alive(socket: &impl AsFd) -> io::Result<()> {
    let params = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    SockRef::from(socket).set_tcp_keepalive(&params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    #[test]
    fn a_connection_to_itself_is_refused_and_its_port_freed_at_once() {
        // Bound to a free port and dialling that same address: the kernel's simultaneous open
        // joins the socket to itself, as a dial of a stopped server on this host may.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind");
        let own = socket.local_addr().expect("address").as_socket().expect("an IP address");
        socket.connect(&own.into()).expect("connected to itself");
        let looped = TcpStream::from(socket);
        let refused = refuse_self_connection(&looped).expect_err("a connection to itself is refused");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        drop(looped);
        // Reset, not closed into TIME_WAIT: the server that owns the port can listen on it now.
        TcpListener::bind(own).expect("the port is free again");

        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let ours = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (_theirs, _) = listener.accept().expect("accept");
        assert!(refuse_self_connection(&ours).is_ok(), "a connection to a listener is kept");
    }

    #[test]
    fn keepalive_is_set_with_its_timings() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let _ours = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        let socket = SockRef::from(&theirs);
        assert!(!socket.keepalive().expect("read"), "off by default");
        keep_alive(&theirs).expect("set");
        assert!(socket.keepalive().expect("read"));
        assert_eq!(socket.tcp_keepalive_time().expect("read"), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_retries().expect("read"), KEEPALIVE_PROBES);
    }
}
