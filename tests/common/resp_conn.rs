//! A raw RESP connection for tests that need to send exact bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use quorumkv::protocol::resp::{encode_request, parse_reply, Reply};

/// A blocking RESP connection.
pub struct RespConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RespConn {
    /// Connects to `addr` with a read timeout of `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> RespConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        RespConn { stream, buf: Vec::new() }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one multibulk command.
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = Vec::new();
        encode_request(args, &mut out);
        self.send_raw(&out);
    }

    /// Reads one reply; None if the server closed the connection first.
    pub fn read(&mut self) -> Option<Reply> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf).expect("well-formed reply") {
                self.buf.drain(..used);
                return Some(reply);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends a command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.send(args);
        self.read().expect("a reply")
    }

    /// True if the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
